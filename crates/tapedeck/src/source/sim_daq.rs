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
        let mut sim = DaqSim::new(channels, rate, block)
            .with_blocks(blocks)
            .with_real_time(pace == "real")
            .with_raw(raw);
        sim.name = shown;
        Ok(sim)
    }

    fn noise(&mut self) -> f64 {
        // xorshift64*: deterministic, cheap, good enough for test noise.
        self.noise ^= self.noise >> 12;
        self.noise ^= self.noise << 25;
        self.noise ^= self.noise >> 27;
        let x = self.noise.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((x >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.02
    }

    /// Builds block `index`.
    pub fn make_block(&mut self, index: u64, t0_utc_us: i64) -> Block {
        let period_ns = (1e9 / self.rate).round() as i64;
        let first = index * self.block as u64;
        let n = self.block;
        let mut values = Vec::with_capacity(n * self.channels.len());
        for c in 0..self.channels.len() {
            let f = 10 * (c as u64 + 1);
            for k in 0..n {
                let sample = first + k as u64;
                let s = match &self.sine {
                    // sin(2π·f·n/rate) = table[(n·f) mod rate] when the rate is whole.
                    Some(table) => {
                        table[((sample % table.len() as u64) * f % table.len() as u64) as usize]
                    }
                    None => (TAU * f as f64 * sample as f64 / self.rate).sin(),
                };
                values.push(s + self.noise());
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
        let t_mono_ns = first as i64 * period_ns;
        Block {
            device: "sim-daq".into(),
            task: "ai".into(),
            block_index: index,
            first_sample_index: first,
            t_mono_ns,
            t_utc_us: t0_utc_us + t_mono_ns / 1000,
            period_ns: Some(period_ns),
            read_window_ns: period_ns * n as i64,
            channels: self.channels.clone(),
            samples: n,
            values,
            raw,
            error: None,
        }
    }
}

impl Source for DaqSim {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_record(&mut self) -> Result<Option<Record>> {
        if self.blocks.is_some_and(|n| self.next_block >= n) {
            return Ok(None);
        }
        let (start, t0) = *self.start.get_or_insert_with(|| {
            let utc = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64);
            (Instant::now(), utc)
        });
        let index = self.next_block;
        let mut late_by = Duration::ZERO;
        if self.real_time {
            let ready =
                start + Duration::from_secs_f64((index + 1) as f64 * self.block as f64 / self.rate);
            let now = Instant::now();
            if ready > now {
                std::thread::sleep(ready - now);
            } else {
                late_by = now - ready;
            }
        }
        self.next_block += 1;
        let mut block = self.make_block(index, t0);
        let buffer = Duration::from_secs_f64(self.block as f64 / self.rate);
        if late_by > buffer * BOARD_BUFFERS {
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
