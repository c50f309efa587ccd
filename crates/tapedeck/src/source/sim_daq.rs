//! `sim:daq?channels=8&rate=10000&block=1000&blocks=N&pace=real|max&raw=true` — the daq-block
//! workload.
//!
//! `channels` channels `ai0…`, each sampled at `rate` Hz (the per-channel rate the sample times
//! follow), delivered as blocks of `block` samples per channel; `blocks` bounds the stream
//! (unbounded if absent). Channel `c` carries `sin(2π·f_c·t) + noise` volts with
//! `f_c = 10·(c+1)` Hz and ±0.01 V of deterministic noise; `raw=true` adds the int16 codes of a
//! ±10 V converter. `pace=real` (default) emits each block when its last sample would have been
//! acquired, and marks a block taken more than four buffer durations late as an overrun, as a
//! board with four buffers would report; `pace=max` emits as fast as possible.
//!
//! A run bounded by a duration (`record --duration 5s`, through [`Source::end_after`]) holds
//! exactly the blocks acquired within it: with `pace=real` the stream ends after the last block
//! whose last sample falls at or before the duration — 5 s at 10 kHz in blocks of 1000 are 50
//! blocks, 50,000 samples per channel, the last one ready exactly at 5 s (a block that would end
//! past the duration is not made: blocks are not split). With `pace=max` the duration is wall
//! clock time: as many blocks as the machine makes in it.

use std::f64::consts::TAU;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::Source;
use crate::error::{Error, Result};
use crate::record::{Block, Channel, Encoding, RawCodes, Record, Scale};
use crate::uri::Uri;

/// Largest block the simulator makes, in values (channels × samples).
const MAX_BLOCK_VALUES: usize = 1 << 26;

/// Buffers the simulated board queues: with `pace=real`, a block taken later than this many
/// buffer durations after its last sample is marked as an overrun (`error_type` `overrun`).
pub const BOARD_BUFFERS: u32 = 4;

/// Full-scale range of the simulated converter, volts.
pub const RANGE_VOLTS: f64 = 10.0;

/// The simulated converter: ±10 V, gain 1, 16-bit two's complement codes.
pub const SCALE: Scale = Scale {
    range: (-RANGE_VOLTS, RANGE_VOLTS),
    gain: 1.0,
    encoding: Encoding::TwosComplement,
};

/// The daq-block simulator.
#[derive(Debug)]
pub struct DaqSim {
    name: String,
    channels: Vec<Channel>,
    rate: f64,
    block: usize,
    blocks: Option<u64>,
    real_time: bool,
    raw: bool,
    next_block: u64,
    noise: u64,
    start: Option<(Instant, i64)>,
    /// One period of sin(2π·k/rate), when the rate is a whole number of hertz (up to 10 MHz):
    /// every channel's frequency is whole, so each sample is a table lookup.
    sine: Option<Vec<f64>>,
}

impl DaqSim {
    /// A simulator with `channels` channels at `rate` Hz per channel, `block` samples per block.
    pub fn new(channels: usize, rate: f64, block: usize) -> DaqSim {
        DaqSim {
            name: "sim:daq".into(),
            channels: (0..channels)
                .map(|c| Channel {
                    name: format!("ai{c}"),
                    unit: Some("V".into()),
                    scale: Some(SCALE),
                })
                .collect(),
            rate,
            block,
            blocks: None,
            real_time: true,
            raw: false,
            next_block: 0,
            noise: 0x9E37_79B9_7F4A_7C15,
            start: None,
            sine: (rate.fract() == 0.0 && (1.0..=1e7).contains(&rate)).then(|| {
                let r = rate as usize;
                (0..r).map(|k| (TAU * k as f64 / rate).sin()).collect()
            }),
        }
    }

    /// Stops after `n` blocks.
    pub fn with_blocks(mut self, n: Option<u64>) -> DaqSim {
        self.blocks = n;
        self
    }

    /// Real-time pacing (true) or as fast as possible (false).
    pub fn with_real_time(mut self, real_time: bool) -> DaqSim {
        self.real_time = real_time;
        self
    }

    /// Adds int16 codes to each block.
    pub fn with_raw(mut self, raw: bool) -> DaqSim {
        self.raw = raw;
        self
    }

    pub(crate) fn from_uri(mut uri: Uri) -> Result<DaqSim> {
        let shown = uri.shown().to_string();
        let positive = |param: &str, value: f64| {
            if value.is_finite() && value > 0.0 {
                Ok(())
            } else {
                Err(Error::BadParam {
                    uri: shown.clone(),
                    param: param.into(),
                    value: value.to_string(),
                    expected: "a positive number".into(),
                })
            }
        };
        let channels = uri
            .params
            .parse::<usize>("channels", "a channel count")?
            .unwrap_or(8);
        let rate = uri
            .params
            .parse::<f64>("rate", "samples per second per channel")?
            .unwrap_or(10_000.0);
        let block = uri
            .params
            .parse::<usize>("block", "samples per channel per block")?
            .unwrap_or(1000);
        let blocks = uri.params.parse::<u64>("blocks", "a block count")?;
        let pace = uri
            .params
            .choice("pace", &["real", "max"])?
            .unwrap_or("real");
        let raw = uri.params.flag("raw")?;
        uri.params.finish()?;
        positive("channels", channels as f64)?;
        positive("rate", rate)?;
        positive("block", block as f64)?;
        let too_big = |param: &str, value: String, expected: &str| Error::BadParam {
            uri: shown.clone(),
            param: param.into(),
            value,
            expected: expected.into(),
        };
        if !(0.001..=1e9).contains(&rate) {
            return Err(too_big(
                "rate",
                rate.to_string(),
                "between 0.001 and 1e9 samples per second",
            ));
        }
        if channels.saturating_mul(block) > MAX_BLOCK_VALUES {
            return Err(too_big(
                "block",
                block.to_string(),
                "channels × block of at most 67,108,864 values (512 MiB of f64)",
            ));
        }
        // Sample times are i64 nanoseconds: one block, and a bounded run, must fit in them.
        let period_ns = period_ns(rate);
        let fits = |samples: Option<u64>| {
            samples
                .and_then(|n| i64::try_from(n).ok())
                .and_then(|n| n.checked_mul(period_ns))
                .is_some()
        };
        if !fits(u64::try_from(block).ok()) {
            return Err(too_big(
                "block",
                block.to_string(),
                "a block that lasts (block / rate seconds) less than the 292 years of i64 nanoseconds; raise `rate` or lower `block`",
            ));
        }
        if let Some(n) = blocks
            && !fits(u64::try_from(block).ok().and_then(|b| b.checked_mul(n)))
        {
            return Err(too_big(
                "blocks",
                n.to_string(),
                "a run (blocks × block / rate seconds) shorter than the 292 years of i64 nanoseconds; lower `blocks`, or raise `rate`",
            ));
        }
        let mut sim = DaqSim::new(channels, rate, block)
            .with_blocks(blocks)
            .with_real_time(pace == "real")
            .with_raw(raw);
        sim.name = shown;
        Ok(sim)
    }

    /// The first sample index and its `t_mono_ns` of block `index`, when every sample time of
    /// the block (its read window's end included, in ns and, from `t0_utc_us`, in µs) fits i64.
    fn block_start(&self, index: u64, t0_utc_us: i64) -> Option<(u64, i64)> {
        let period = period_ns(self.rate);
        let block = u64::try_from(self.block).ok()?;
        let first = index.checked_mul(block)?;
        let end_ns = i64::try_from(first.checked_add(block)?)
            .ok()?
            .checked_mul(period)?;
        t0_utc_us.checked_add(end_ns / 1000)?;
        Some((first, i64::try_from(first).ok()?.checked_mul(period)?))
    }

    fn noise(&mut self) -> f64 {
        // xorshift64*: deterministic, cheap, good enough for test noise.
        self.noise ^= self.noise >> 12;
        self.noise ^= self.noise << 25;
        self.noise ^= self.noise >> 27;
        let x = self.noise.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((x >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.02
    }

    /// Builds block `index`. Times past the i64 clock (292 years of nanoseconds) saturate; the
    /// source itself ends with an error before it would build such a block.
    pub fn make_block(&mut self, index: u64, t0_utc_us: i64) -> Block {
        let period_ns = period_ns(self.rate);
        let n = self.block;
        let n_i64 = i64::try_from(n).unwrap_or(i64::MAX);
        let first = index.saturating_mul(n as u64);
        let mut values = Vec::with_capacity(n.saturating_mul(self.channels.len()));
        for c in 0..self.channels.len() {
            let f = 10 * (c as u64 + 1);
            match self.sine.take() {
                // sin(2π·f·n/rate) = table[(n·f) mod rate] when the rate is whole; the index
                // steps by f mod rate from one sample to the next (two divisions per sample
                // were most of what a block cost).
                Some(table) => {
                    let len = (table.len() as u64).max(1);
                    let step = f % len;
                    let mut i = (first % len).wrapping_mul(f) % len;
                    for _ in 0..n {
                        let s = table.get(i as usize).copied().unwrap_or(0.0);
                        values.push(s + self.noise());
                        i += step;
                        if i >= len {
                            i -= len;
                        }
                    }
                    self.sine = Some(table);
                }
                None => {
                    for k in 0..n {
                        // The phase only: wrapping is harmless here.
                        let sample = first.wrapping_add(k as u64);
                        let s = (TAU * f as f64 * sample as f64 / self.rate).sin();
                        values.push(s + self.noise());
                    }
                }
            }
        }
        let raw = self.raw.then(|| {
            RawCodes::I16(
                values
                    .iter()
                    .map(|v| SCALE.to_code(*v, 16) as i16)
                    .collect(),
            )
        });
        let t_mono_ns = i64::try_from(first)
            .unwrap_or(i64::MAX)
            .saturating_mul(period_ns);
        Block {
            device: "sim-daq".into(),
            task: "ai".into(),
            block_index: index,
            first_sample_index: first,
            t_mono_ns,
            t_utc_us: t0_utc_us.saturating_add(t_mono_ns / 1000),
            period_ns: Some(period_ns),
            read_window_ns: period_ns.saturating_mul(n_i64),
            channels: self.channels.clone(),
            samples: n,
            values,
            raw,
            error: None,
        }
    }
}

/// The sample period in whole nanoseconds for `rate` Hz (saturating for rates near 0).
fn period_ns(rate: f64) -> i64 {
    (1e9 / rate).round() as i64
}

impl Source for DaqSim {
    fn name(&self) -> &str {
        &self.name
    }

    fn expected_rows(&self) -> Option<u64> {
        // Rows count samples per channel, as `pipe` does.
        self.blocks
            .and_then(|b| b.checked_mul(u64::try_from(self.block).ok()?))
    }

    fn end_after(&mut self, duration: Duration) -> bool {
        if !self.real_time {
            return false;
        }
        // Blocks whose last sample lies within `duration`. The relative tolerance keeps an
        // exact multiple (0.3 s of 0.1 s blocks) from rounding down to one block less.
        let block_secs = self.block as f64 / self.rate;
        let whole = (duration.as_secs_f64() / block_secs * (1.0 + 1e-9)).floor();
        // `as` saturates (and a NaN, impossible here, would give 0).
        let n = whole as u64;
        self.blocks = Some(self.blocks.map_or(n, |b| b.min(n)));
        true
    }

    fn next_record(&mut self) -> Result<Option<Record>> {
        if self.blocks.is_some_and(|n| self.next_block >= n) {
            return Ok(None);
        }
        let (start, t0) = *self.start.get_or_insert_with(|| {
            let utc = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
            (Instant::now(), utc)
        });
        let index = self.next_block;
        if self.block_start(index, t0).is_none() {
            return Err(Error::InvalidBlock {
                device: "sim-daq".into(),
                block_index: index,
                message: format!(
                    "{}: block {index}'s sample times ({} samples per block at {} Hz) run past the 292 years that i64 nanoseconds hold; bound the run with `blocks=`, or raise `rate`",
                    self.name, self.block, self.rate
                ),
            });
        }
        let rate = self.rate;
        let seconds =
            |samples: f64| Duration::try_from_secs_f64(samples / rate).unwrap_or(Duration::MAX);
        let mut late_by = Duration::ZERO;
        if self.real_time {
            let due = seconds((index as f64 + 1.0) * self.block as f64);
            if let Some(ready) = start.checked_add(due) {
                let now = Instant::now();
                if ready > now {
                    std::thread::sleep(ready - now);
                } else {
                    late_by = now - ready;
                }
            }
        }
        self.next_block = index.saturating_add(1);
        let mut block = self.make_block(index, t0);
        let buffer = seconds(self.block as f64);
        if late_by > buffer.saturating_mul(BOARD_BUFFERS) {
            // A board with this many buffers would have overwritten one by now.
            block.error = Some(crate::record::BlockError {
                kind: "overrun".into(),
                message: format!(
                    "block {index} taken {:.1} ms late, more than {BOARD_BUFFERS} buffers of {:.1} ms",
                    late_by.as_secs_f64() * 1e3,
                    buffer.as_secs_f64() * 1e3
                ),
            });
        }
        Ok(Some(Record::Block(block)))
    }
}
