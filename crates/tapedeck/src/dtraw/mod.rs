//! `.dt-raw` v2: dtollib's raw-counts file, written byte for byte as dtollib writes it, and read
//! back — including every complete chunk of a truncated file.
//!
//! Layout (`docs/dt-raw.md` has it byte by byte): `u32 LE header_len | header JSON | chunk*`,
//! `chunk = u32 LE chunk_header_len | chunk header JSON | payload`, the payload being the raw
//! codes, little-endian, channel-major `(n_channels, valid_samples)`. JSON is written as Python's
//! `json.dumps` writes it ([`pyjson`]), keys in dtollib's order.
//!
//! What tapedeck adds, as dtollib's design planned: per-channel `range`, `gain` and `encoding`
//! in the header's channel entries (so codes convert back to volts), a zero-payload chunk with
//! flag `final` at the end of a complete recording, and overruns without data as zero-payload
//! chunks with flag `overrun_marker`. A file without these is exactly a dtollib file.

pub mod pyjson;
pub mod reader;

pub use reader::{Chunk, DtRawReader, DtRawSource, ImportReport, Stop};

use crate::record::{Channel, Encoding, Scale};

/// The format version written and read.
pub const FORMAT_VERSION: u64 = 2;

/// Flag: the acquisition reported an overrun for this buffer.
pub const FLAG_OVERRUN: &str = "overrun_marker";
/// Flag: fewer valid samples than the buffer holds.
pub const FLAG_PARTIAL: &str = "partial";
/// Flag: the last chunk of a complete recording (zero payload).
pub const FLAG_FINAL: &str = "final";

/// Code width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// int16
    I16,
    /// int32
    I32,
}

impl Dtype {
    /// NumPy's name (`int16`, `int32`).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::I16 => "int16",
            Dtype::I32 => "int32",
        }
    }

    /// Bytes per code.
    pub fn size(self) -> usize {
        match self {
            Dtype::I16 => 2,
            Dtype::I32 => 4,
        }
    }

    /// Bits per code.
    pub fn bits(self) -> u32 {
        8 * self.size() as u32
    }

    /// From NumPy's name.
    pub fn from_name(name: &str) -> Option<Dtype> {
        match name {
            "int16" => Some(Dtype::I16),
            "int32" => Some(Dtype::I32),
            _ => None,
        }
    }
}

/// The file header.
#[derive(Debug, Clone, PartialEq)]
pub struct FileHeader {
    /// Task name.
    pub task: String,
    /// Device name.
    pub device: String,
    /// Channels (name, unit, and tapedeck's scale when known).
    pub channels: Vec<Channel>,
    /// Samples per second per channel.
    pub sample_rate_hz: f64,
    /// Sample clock period, ns.
    pub block_period_ns: i64,
    /// Code width.
    pub dtype: Dtype,
    /// Samples per channel of a full buffer.
    pub samples_per_buffer: usize,
    /// When the task started (ISO 8601 as Python's `isoformat`).
    pub task_started_at: String,
    /// Free-form metadata, as JSON text of an object (`{}` when none).
    pub metadata_json: String,
}

/// One chunk's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Sequence number (0, 1, 2, … in the file).
    pub seq: u64,
    /// `buffer_done` or `buffer_done_with_flags`.
    pub event_kind: String,
    /// Task-level index of the first sample.
    pub first_sample_index: u64,
    /// Samples per channel in the payload.
    pub valid_samples: usize,
    /// Samples per channel the buffer could hold.
    pub buffer_capacity: usize,
    /// Monotonic time of the first sample, ns.
    pub t_mono_ns: i64,
    /// UTC time of the first sample (ISO 8601 as Python's `isoformat`).
    pub t_utc: String,
    /// Flags: [`FLAG_OVERRUN`], [`FLAG_PARTIAL`], [`FLAG_FINAL`].
    pub flags: Vec<String>,
}

impl ChunkHeader {
    /// Payload bytes this chunk carries for `n_channels` channels of `dtype`; `None` when the
    /// product does not fit `usize` (a damaged header: no file holds that many bytes).
    pub fn payload_len(&self, n_channels: usize, dtype: Dtype) -> Option<usize> {
        n_channels
            .checked_mul(self.valid_samples)?
            .checked_mul(dtype.size())
    }
}

/// `datetime.isoformat()` of an aware UTC time: microseconds only when non-zero, `+00:00`.
pub fn py_isoformat(micros: i64) -> String {
    let iso = crate::record::time::iso_micros(micros); // YYYY-MM-DDTHH:MM:SS.ffffffZ
    let base = iso.trim_end_matches('Z');
    let (secs, frac) = base.split_once('.').unwrap_or((base, "000000"));
    if frac.bytes().all(|b| b == b'0') {
        format!("{secs}+00:00")
    } else {
        format!("{secs}.{frac}+00:00")
    }
}

impl FileHeader {
    /// The header JSON, as dtollib writes it (plus the scale keys in channel entries that have
    /// a scale).
    pub fn to_json(&self) -> String {
        let mut o = String::with_capacity(512);
        o.push_str("{\"format_version\": 2, \"task\": ");
        pyjson::string(&mut o, &self.task);
        o.push_str(", \"device\": ");
        pyjson::string(&mut o, &self.device);
        o.push_str(", \"channels\": [");
        for (i, c) in self.channels.iter().enumerate() {
            if i > 0 {
                o.push_str(", ");
            }
            o.push_str("{\"name\": ");
            pyjson::string(&mut o, &c.name);
            o.push_str(", \"unit\": ");
            match &c.unit {
                Some(u) => pyjson::string(&mut o, u),
                None => o.push_str("null"),
            }
            if let Some(s) = &c.scale {
                o.push_str(&format!(
                    ", \"range\": [{}, {}], \"gain\": {}, \"encoding\": ",
                    pyjson::float(s.range.0),
                    pyjson::float(s.range.1),
                    pyjson::float(s.gain)
                ));
                pyjson::string(&mut o, s.encoding.name());
            }
            o.push('}');
        }
        o.push_str(&format!(
            "], \"n_channels\": {}, \"sample_rate_hz\": {}, \"block_period_ns\": {}, \"dtype\": ",
            self.channels.len(),
            pyjson::float(self.sample_rate_hz),
            self.block_period_ns
        ));
        pyjson::string(&mut o, self.dtype.name());
        o.push_str(&format!(
            ", \"samples_per_buffer\": {}, \"task_started_at\": ",
            self.samples_per_buffer
        ));
        pyjson::string(&mut o, &self.task_started_at);
        o.push_str(", \"metadata\": ");
        o.push_str(&self.metadata_json);
        o.push('}');
        o
    }
}

impl ChunkHeader {
    /// The chunk header JSON, as dtollib writes it.
    pub fn to_json(&self) -> String {
        let mut o = String::with_capacity(256);
        o.push_str(&format!("{{\"seq\": {}, \"event_kind\": ", self.seq));
        pyjson::string(&mut o, &self.event_kind);
        o.push_str(&format!(
            ", \"first_sample_index\": {}, \"valid_samples\": {}, \"buffer_capacity\": {}, \"t_mono_ns\": {}, \"t_utc\": ",
            self.first_sample_index, self.valid_samples, self.buffer_capacity, self.t_mono_ns
        ));
        pyjson::string(&mut o, &self.t_utc);
        o.push_str(", \"flags\": [");
        for (i, f) in self.flags.iter().enumerate() {
            if i > 0 {
                o.push_str(", ");
            }
            pyjson::string(&mut o, f);
        }
        o.push_str("]}");
        o
    }
}

/// Reads a channel entry's scale keys, when all three are there.
pub(crate) fn scale_from_json(c: &serde_json::Value) -> Option<Scale> {
    let range = c.get("range")?.as_array()?;
    Some(Scale {
        range: (range.first()?.as_f64()?, range.get(1)?.as_f64()?),
        gain: c.get("gain")?.as_f64()?,
        encoding: Encoding::from_name(c.get("encoding")?.as_str()?)?,
    })
}
