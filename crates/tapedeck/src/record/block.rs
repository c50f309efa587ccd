//! DAQ blocks: `channels × samples` buffers as acquisition boards deliver them.
//!
//! A [`Block`] keeps the buffer whole — values in engineering units (f64, channel-major), the
//! optional raw int16/int32 codes, and the timing needed to put a time on every sample. It becomes
//! Arrow at the edge, in one of two layouts:
//!
//! - [`Block::to_wide_batch`]: one row per sample, one float64 column per channel (plus
//!   `<channel>_raw` columns when codes are present). Compact; the default for columnar sinks.
//! - [`Block::to_long_batch`]: one row per (channel, sample) with the columns of dtollib's
//!   `block_to_rows` (`device, task, channel, block_index, sample_index, t_mono_ns, t_utc, value,
//!   unit, error_type, error_message`). Large; only when a sink asks for it.
//!
//! Sample `k` is timed at `t_mono_ns + k·period` and `t_utc + k·period`; a block without a clock
//! period spaces its samples uniformly over its read window (`read_window_ns / samples`).

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{
    Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{
    ArrayRef, Float64Array, Int16Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema};

use super::value::timestamp_type;
use crate::error::{Error, Result};

/// One channel of a block.
#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    /// Column name of the channel (e.g. `ai0`).
    pub name: String,
    /// Engineering unit (e.g. `V`), if known.
    pub unit: Option<String>,
    /// How the channel's raw codes turn into engineering units, if known.
    pub scale: Option<Scale>,
}

impl Channel {
    /// A channel with a name and a unit, without a raw-code scale.
    pub fn new(name: impl Into<String>, unit: Option<&str>) -> Channel {
        Channel {
            name: name.into(),
            unit: unit.map(str::to_string),
            scale: None,
        }
    }
}

/// How raw converter codes are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Signed codes: the lowest code is the type's minimum (-32768 for int16).
    TwosComplement,
    /// Unsigned codes stored in the signed type, offset by half the range.
    OffsetBinary,
}

impl Encoding {
    /// The name used in `.dt-raw` headers.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::TwosComplement => "twos_complement",
            Encoding::OffsetBinary => "offset_binary",
        }
    }

    /// Parses a `.dt-raw` header name.
    pub fn from_name(name: &str) -> Option<Encoding> {
        match name {
            "twos_complement" => Some(Encoding::TwosComplement),
            "offset_binary" => Some(Encoding::OffsetBinary),
            _ => None,
        }
    }
}

/// The converter behind a channel: its input range (at gain 1), gain and code encoding. A code
/// `c` of a `bits`-bit converter reads
/// `(min + (c - c_lo) · (max - min) / (2^bits - 1)) / gain` volts, where `c_lo` is the lowest
/// code (`-2^(bits-1)` for two's complement, 0 for offset binary).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    /// Lowest and highest input, in the channel's unit.
    pub range: (f64, f64),
    /// Amplifier gain in front of the converter.
    pub gain: f64,
    /// Code layout.
    pub encoding: Encoding,
}

impl Scale {
    fn lowest(self, bits: u32) -> f64 {
        match self.encoding {
            Encoding::TwosComplement => -(2f64.powi(bits as i32 - 1)),
            Encoding::OffsetBinary => 0.0,
        }
    }

    fn step(self, bits: u32) -> f64 {
        (self.range.1 - self.range.0) / (2f64.powi(bits as i32) - 1.0)
    }

    /// The value a code stands for.
    pub fn to_units(self, code: i64, bits: u32) -> f64 {
        (self.range.0 + (code as f64 - self.lowest(bits)) * self.step(bits)) / self.gain
    }

    /// The nearest code for a value (clamped to the converter's codes).
    pub fn to_code(self, value: f64, bits: u32) -> i64 {
        let lo = self.lowest(bits);
        let hi = lo + 2f64.powi(bits as i32) - 1.0;
        (((value * self.gain - self.range.0) / self.step(bits)).round() + lo).clamp(lo, hi) as i64
    }
}

/// Raw converter codes, channel-major like [`Block::values`].
#[derive(Debug, Clone, PartialEq)]
pub enum RawCodes {
    /// 16-bit codes.
    I16(Vec<i16>),
    /// 32-bit codes.
    I32(Vec<i32>),
}

impl RawCodes {
    fn len(&self) -> usize {
        match self {
            RawCodes::I16(v) => v.len(),
            RawCodes::I32(v) => v.len(),
        }
    }
}

/// An error or overrun the acquisition reported for this block.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockError {
    /// A type name such as `overrun`.
    pub kind: String,
    /// The message.
    pub message: String,
}

/// A DAQ buffer; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// Device name.
    pub device: String,
    /// Task name.
    pub task: String,
    /// Index of this block within the task (0, 1, 2, …).
    pub block_index: u64,
    /// Task-level index of the block's first sample.
    pub first_sample_index: u64,
    /// Monotonic time of the first sample, ns.
    pub t_mono_ns: i64,
    /// UTC time of the first sample, µs since the epoch.
    pub t_utc_us: i64,
    /// Sample period in ns, when the board clocks the samples.
    pub period_ns: Option<i64>,
    /// Length of the read window in ns (used when `period_ns` is `None`).
    pub read_window_ns: i64,
    /// The channels, in order.
    pub channels: Vec<Channel>,
    /// Samples per channel.
    pub samples: usize,
    /// Values in engineering units, channel-major: `values[c * samples + k]`.
    pub values: Vec<f64>,
    /// Raw codes, same layout as `values`.
    pub raw: Option<RawCodes>,
    /// Error or overrun marker.
    pub error: Option<BlockError>,
}

/// Column names of the long layout, in order.
pub const LONG_COLUMNS: [&str; 11] = [
    "device",
    "task",
    "channel",
    "block_index",
    "sample_index",
    "t_mono_ns",
    "t_utc",
    "value",
    "unit",
    "error_type",
    "error_message",
];

/// Schema metadata key naming the layout of a batch built from DAQ blocks.
pub const LAYOUT_KEY: &str = "tapedeck.layout";
/// Its value for [`Block::to_wide_batch`].
pub const WIDE_LAYOUT: &str = "daq-block-wide";

impl Block {
    /// Checks that the buffers match `channels × samples`.
    pub fn validate(&self) -> Result<()> {
        let want = self.channels.len() * self.samples;
        let bad = |message: String| Error::InvalidBlock {
            device: self.device.clone(),
            block_index: self.block_index,
            message,
        };
        if self.channels.is_empty() {
            return Err(bad("a block needs at least one channel".into()));
        }
        if self.values.len() != want {
            return Err(bad(format!(
                "{} values for {} channels × {} samples (expected {want})",
                self.values.len(),
                self.channels.len(),
                self.samples
            )));
        }
        if let Some(raw) = &self.raw
            && raw.len() != want
        {
            return Err(bad(format!(
                "{} raw codes for {} channels × {} samples (expected {want})",
                raw.len(),
                self.channels.len(),
                self.samples
            )));
        }
        // Every sample's index and times must fit an i64 (the layouts' column types), so
        // nothing downstream can wrap around.
        let last = i64::try_from(self.samples.saturating_sub(1)).ok();
        let span = last.and_then(|k| k.checked_mul(self.effective_period_ns()));
        let fits = span.is_some_and(|span| {
            self.t_mono_ns.checked_add(span).is_some()
                && self.t_utc_us.checked_add(span.div_euclid(1000)).is_some()
        }) && i64::try_from(self.first_sample_index)
            .ok()
            .zip(last)
            .is_some_and(|(first, k)| first.checked_add(k).is_some())
            && i64::try_from(self.block_index).is_ok();
        if !fits {
            return Err(bad(format!(
                "{} samples from index {} at {} ns (period {} ns) go past what an i64 holds",
                self.samples,
                self.first_sample_index,
                self.t_mono_ns,
                self.effective_period_ns()
            )));
        }
        let mut seen = HashMap::new();
        for c in &self.channels {
            if let Some(prev) = seen.insert(c.name.to_lowercase(), &c.name) {
                return Err(Error::NameCollision {
                    first: prev.clone(),
                    second: c.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// Number of channels.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Period in ns used for per-sample times (the clock period, or the read window spread
    /// uniformly).
    pub fn effective_period_ns(&self) -> i64 {
        self.period_ns.unwrap_or_else(|| {
            self.read_window_ns / i64::try_from(self.samples.max(1)).unwrap_or(i64::MAX)
        })
    }

    fn sample_times(&self) -> (Vec<i64>, Vec<i64>) {
        let p = self.effective_period_ns();
        // Saturating: `validate` refuses a block whose times do not fit, so these never clamp
        // for a block that passed it.
        let mono = (0..self.samples as i64)
            .map(|k| self.t_mono_ns.saturating_add(k.saturating_mul(p)))
            .collect();
        let utc = (0..self.samples as i64)
            .map(|k| {
                self.t_utc_us
                    .saturating_add(k.saturating_mul(p).div_euclid(1000))
            })
            .collect();
        (mono, utc)
    }

    /// Values of channel `c`.
    pub fn channel_values(&self, c: usize) -> &[f64] {
        &self.values[c * self.samples..(c + 1) * self.samples]
    }

    /// The wide layout: `device, task, block_index, sample_index, t_mono_ns, t_utc`, one float64
    /// column per channel (unit in the field metadata under `unit`), `<channel>_raw` columns
    /// when raw codes are present, then `error_type, error_message`.
    ///
    /// ```
    /// # use tapedeck::record::{Block, Channel};
    /// let block = Block {
    ///     device: "dev1".into(), task: "t".into(), block_index: 0, first_sample_index: 0,
    ///     t_mono_ns: 0, t_utc_us: 0, period_ns: Some(100_000), read_window_ns: 0,
    ///     channels: vec![Channel::new("ai0", Some("V"))],
    ///     samples: 2, values: vec![0.5, 0.25], raw: None, error: None,
    /// };
    /// let batch = block.to_wide_batch().unwrap();
    /// assert_eq!(batch.num_rows(), 2);
    /// assert!(batch.column_by_name("ai0").is_some());
    /// ```
    pub fn to_wide_batch(&self) -> Result<RecordBatch> {
        self.validate()?;
        let n = self.samples;
        let (mono, utc) = self.sample_times();
        let mut fields = vec![
            Field::new("device", DataType::Utf8, true),
            Field::new("task", DataType::Utf8, true),
            Field::new("block_index", DataType::Int64, true),
            Field::new("sample_index", DataType::Int64, true),
            Field::new("t_mono_ns", DataType::Int64, true),
            Field::new("t_utc", timestamp_type(), true),
        ];
        let mut columns: Vec<ArrayRef> = vec![
            repeated_text(Some(self.device.as_str()), n),
            repeated_text(Some(self.task.as_str()), n),
            Arc::new(Int64Array::from(vec![self.block_index as i64; n])),
            Arc::new(Int64Array::from_iter_values((0..n as i64).map(|k| {
                i64::try_from(self.first_sample_index)
                    .unwrap_or(i64::MAX)
                    .saturating_add(k)
            }))),
            Arc::new(Int64Array::from(mono)),
            Arc::new(TimestampMicrosecondArray::from(utc).with_timezone("UTC")),
        ];
        for (c, ch) in self.channels.iter().enumerate() {
            let mut meta = HashMap::new();
            if let Some(unit) = &ch.unit {
                meta.insert("unit".to_string(), unit.clone());
            }
            if let Some(s) = &ch.scale {
                meta.insert("range_min".to_string(), s.range.0.to_string());
                meta.insert("range_max".to_string(), s.range.1.to_string());
                meta.insert("gain".to_string(), s.gain.to_string());
                meta.insert("encoding".to_string(), s.encoding.name().to_string());
            }
            fields.push(Field::new(&ch.name, DataType::Float64, true).with_metadata(meta));
            columns.push(Arc::new(Float64Array::from(
                self.channel_values(c).to_vec(),
            )));
        }
        if let Some(raw) = &self.raw {
            for (c, ch) in self.channels.iter().enumerate() {
                let range = c * n..(c + 1) * n;
                let (dt, array): (DataType, ArrayRef) = match raw {
                    RawCodes::I16(v) => (
                        DataType::Int16,
                        Arc::new(Int16Array::from(v[range].to_vec())),
                    ),
                    RawCodes::I32(v) => (
                        DataType::Int32,
                        Arc::new(Int32Array::from(v[range].to_vec())),
                    ),
                };
                fields.push(Field::new(format!("{}_raw", ch.name), dt, true));
                columns.push(array);
            }
        }
        let (et, em) = match &self.error {
            Some(e) => (Some(e.kind.as_str()), Some(e.message.as_str())),
            None => (None, None),
        };
        fields.push(Field::new("error_type", DataType::Utf8, true));
        fields.push(Field::new("error_message", DataType::Utf8, true));
        columns.push(repeated_text(et, n));
        columns.push(repeated_text(em, n));
        super::schema_lock::check_collisions(fields.iter().map(|f| f.name().as_str()))?;
        let schema = Schema::new(fields).with_metadata(std::collections::HashMap::from([(
            LAYOUT_KEY.to_string(),
            WIDE_LAYOUT.to_string(),
        )]));
        RecordBatch::try_new(Arc::new(schema), columns)
            .map_err(|e| Error::arrow("building a wide batch from a block", e))
    }

    /// True for a batch made by [`Block::to_wide_batch`] (its schema carries the layout
    /// marker): a tape stores DAQ blocks so, and a delivery hands them back to sinks as blocks —
    /// the same thing the sink got when it was written to directly.
    pub fn is_wide_block_batch(batch: &RecordBatch) -> bool {
        batch
            .schema_ref()
            .metadata()
            .get(LAYOUT_KEY)
            .is_some_and(|v| v == WIDE_LAYOUT)
    }

    /// The blocks a wide batch ([`Block::to_wide_batch`]) was made from — one per run of equal
    /// `block_index` — with values, raw codes, units, scales (from the field metadata), times
    /// and error markers; the period is read from the sample times. `Ok(None)` when the batch
    /// is not in the wide block layout.
    pub fn from_wide_batch(batch: &RecordBatch) -> Result<Option<Vec<Block>>> {
        use arrow_array::Array;
        use arrow_array::cast::AsArray;
        use arrow_array::types::{
            Float64Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType,
        };
        let schema = batch.schema();
        let col = |name: &str| batch.column_by_name(name);
        if col("channel").is_some() || col("value").is_some() {
            // The long layout: one row per channel × sample.
            return Ok(None);
        }
        let (
            Some(device),
            Some(task),
            Some(block_index),
            Some(sample_index),
            Some(mono),
            Some(utc),
        ) = (
            col("device"),
            col("task"),
            col("block_index"),
            col("sample_index"),
            col("t_mono_ns"),
            col("t_utc"),
        )
        else {
            return Ok(None);
        };
        let (
            Some(device),
            Some(task),
            Some(block_index),
            Some(sample_index),
            Some(mono),
            Some(utc),
        ) = (
            device.as_string_opt::<i32>(),
            task.as_string_opt::<i32>(),
            block_index.as_primitive_opt::<Int64Type>(),
            sample_index.as_primitive_opt::<Int64Type>(),
            mono.as_primitive_opt::<Int64Type>(),
            utc.as_primitive_opt::<TimestampMicrosecondType>(),
        )
        else {
            return Ok(None);
        };
        let fixed = [
            "device",
            "task",
            "block_index",
            "sample_index",
            "t_mono_ns",
            "t_utc",
            "error_type",
            "error_message",
        ];
        let mut channels = Vec::new();
        for (i, f) in schema.fields().iter().enumerate() {
            if fixed.contains(&f.name().as_str()) || f.data_type() != &DataType::Float64 {
                continue;
            }
            let meta = f.metadata();
            let num = |k: &str| meta.get(k).and_then(|v| v.parse::<f64>().ok());
            let scale = match (
                num("range_min"),
                num("range_max"),
                num("gain"),
                meta.get("encoding").and_then(|e| Encoding::from_name(e)),
            ) {
                (Some(lo), Some(hi), Some(gain), Some(encoding)) => Some(Scale {
                    range: (lo, hi),
                    gain,
                    encoding,
                }),
                _ => None,
            };
            let raw = batch.column_by_name(&format!("{}_raw", f.name())).cloned();
            channels.push((
                Channel {
                    name: f.name().clone(),
                    unit: meta.get("unit").cloned(),
                    scale,
                },
                i,
                raw,
            ));
        }
        if channels.is_empty() {
            return Ok(None);
        }
        let error_type = col("error_type").and_then(|c| c.as_string_opt::<i32>().cloned());
        let error_message = col("error_message").and_then(|c| c.as_string_opt::<i32>().cloned());
        let mut blocks = Vec::new();
        let mut start = 0;
        let n = batch.num_rows();
        while start < n {
            let index = block_index.value(start);
            let mut end = start + 1;
            while end < n && block_index.value(end) == index {
                end += 1;
            }
            let len = end - start;
            let mut values = Vec::with_capacity(channels.len() * len);
            for (_, i, _) in &channels {
                let a = batch.column(*i).as_primitive::<Float64Type>();
                values.extend((start..end).map(|k| a.value(k)));
            }
            let raws: Vec<Option<&ArrayRef>> =
                channels.iter().map(|(_, _, r)| r.as_ref()).collect();
            let raw = gather_codes::<Int16Type>(&raws, start..end)
                .map(RawCodes::I16)
                .or_else(|| gather_codes::<Int32Type>(&raws, start..end).map(RawCodes::I32));
            let bad = |message: String| Error::InvalidBlock {
                device: device.value(start).to_string(),
                block_index: index as u64,
                message,
            };
            let period = match len {
                0 | 1 => None,
                _ => Some(
                    mono.value(start + 1)
                        .checked_sub(mono.value(start))
                        .ok_or_else(|| {
                            bad("its sample times are too far apart for an i64".into())
                        })?,
                ),
            };
            let read_window_ns = period
                .unwrap_or(0)
                .checked_mul(len as i64)
                .ok_or_else(|| bad("its read window does not fit an i64 of nanoseconds".into()))?;
            let error = match (&error_type, &error_message) {
                (Some(t), m) if t.is_valid(start) => Some(BlockError {
                    kind: t.value(start).to_string(),
                    message: m
                        .as_ref()
                        .filter(|m| m.is_valid(start))
                        .map(|m| m.value(start).to_string())
                        .unwrap_or_default(),
                }),
                _ => None,
            };
            blocks.push(Block {
                device: device.value(start).to_string(),
                task: task.value(start).to_string(),
                block_index: index as u64,
                first_sample_index: sample_index.value(start) as u64,
                t_mono_ns: mono.value(start),
                t_utc_us: utc.value(start),
                period_ns: period,
                read_window_ns,
                channels: channels.iter().map(|(c, _, _)| c.clone()).collect(),
                samples: len,
                values,
                raw,
                error,
            });
            start = end;
        }
        Ok(Some(blocks))
    }

    /// One summary row: `device, task, block_index, first_sample_index, sample_count,
    /// channel_count, t_mono_ns, t_utc, period_ns, error_type, error_message` (what database
    /// sinks store per block unless asked for long rows). `period_ns` is the effective period.
    pub fn to_summary_batch(&self) -> Result<RecordBatch> {
        self.validate()?;
        let text = |v: Option<&str>| Arc::new(StringArray::from(vec![v])) as ArrayRef;
        let int = |v: i64| Arc::new(Int64Array::from(vec![v])) as ArrayRef;
        let fields = vec![
            Field::new("device", DataType::Utf8, true),
            Field::new("task", DataType::Utf8, true),
            Field::new("block_index", DataType::Int64, true),
            Field::new("first_sample_index", DataType::Int64, true),
            Field::new("sample_count", DataType::Int64, true),
            Field::new("channel_count", DataType::Int64, true),
            Field::new("t_mono_ns", DataType::Int64, true),
            Field::new("t_utc", timestamp_type(), true),
            Field::new("period_ns", DataType::Int64, true),
            Field::new("error_type", DataType::Utf8, true),
            Field::new("error_message", DataType::Utf8, true),
        ];
        let columns = vec![
            text(Some(&self.device)),
            text(Some(&self.task)),
            int(self.block_index as i64),
            int(self.first_sample_index as i64),
            int(self.samples as i64),
            int(self.channels.len() as i64),
            int(self.t_mono_ns),
            Arc::new(TimestampMicrosecondArray::from(vec![self.t_utc_us]).with_timezone("UTC")),
            int(self.effective_period_ns()),
            text(self.error.as_ref().map(|e| e.kind.as_str())),
            text(self.error.as_ref().map(|e| e.message.as_str())),
        ];
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| Error::arrow("building a block summary row", e))
    }

    /// The long layout ([`LONG_COLUMNS`]): one row per (channel, sample), channel-major.
    pub fn to_long_batch(&self) -> Result<RecordBatch> {
        self.validate()?;
        let n = self.samples;
        let total = n * self.channels.len();
        let (mono, utc) = self.sample_times();
        let mut device = StringBuilder::with_capacity(total, total * self.device.len());
        let mut task = StringBuilder::with_capacity(total, total * self.task.len());
        let mut channel = StringBuilder::with_capacity(total, total * 4);
        let mut block_index = Int64Builder::with_capacity(total);
        let mut sample_index = Int64Builder::with_capacity(total);
        let mut t_mono = Int64Builder::with_capacity(total);
        let mut t_utc = TimestampMicrosecondBuilder::with_capacity(total).with_timezone("UTC");
        let mut value = Float64Builder::with_capacity(total);
        let mut unit = StringBuilder::with_capacity(total, total);
        let mut error_type = StringBuilder::new();
        let mut error_message = StringBuilder::new();
        for (c, ch) in self.channels.iter().enumerate() {
            for k in 0..n {
                device.append_value(&self.device);
                task.append_value(&self.task);
                channel.append_value(&ch.name);
                block_index.append_value(self.block_index as i64);
                sample_index.append_value((self.first_sample_index + k as u64) as i64);
                t_mono.append_value(mono[k]);
                t_utc.append_value(utc[k]);
                value.append_value(self.values[c * n + k]);
                unit.append_option(ch.unit.as_deref());
                error_type.append_option(self.error.as_ref().map(|e| e.kind.as_str()));
                error_message.append_option(self.error.as_ref().map(|e| e.message.as_str()));
            }
        }
        let types = [
            DataType::Utf8,
            DataType::Utf8,
            DataType::Utf8,
            DataType::Int64,
            DataType::Int64,
            DataType::Int64,
            timestamp_type(),
            DataType::Float64,
            DataType::Utf8,
            DataType::Utf8,
            DataType::Utf8,
        ];
        let fields: Vec<Field> = LONG_COLUMNS
            .iter()
            .zip(types)
            .map(|(n, t)| Field::new(*n, t, true))
            .collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(device.finish()),
            Arc::new(task.finish()),
            Arc::new(channel.finish()),
            Arc::new(block_index.finish()),
            Arc::new(sample_index.finish()),
            Arc::new(t_mono.finish()),
            Arc::new(t_utc.finish()),
            Arc::new(value.finish()),
            Arc::new(unit.finish()),
            Arc::new(error_type.finish()),
            Arc::new(error_message.finish()),
        ];
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| Error::arrow("building long rows from a block", e))
    }
}

/// Rows `range` of every channel's raw-code column, channel-major, when all of them are of type
/// `T`.
fn gather_codes<T: arrow_array::types::ArrowPrimitiveType>(
    raws: &[Option<&ArrayRef>],
    range: std::ops::Range<usize>,
) -> Option<Vec<T::Native>> {
    use arrow_array::cast::AsArray;
    let mut out = Vec::with_capacity(raws.len() * range.len());
    for r in raws {
        let a = (*r)?.as_primitive_opt::<T>()?;
        out.extend_from_slice(&a.values()[range.clone()]);
    }
    Some(out)
}

/// A text column of `n` rows that all hold `text` (or are all null): built whole rather than
/// row by row — a wide batch has four such columns per block.
fn repeated_text(text: Option<&str>, n: usize) -> ArrayRef {
    match text {
        None => arrow_array::new_null_array(&DataType::Utf8, n),
        Some(t) => {
            let mut b =
                arrow_array::builder::StringBuilder::with_capacity(n, t.len().saturating_mul(n));
            for _ in 0..n {
                b.append_value(t);
            }
            Arc::new(b.finish())
        }
    }
}
