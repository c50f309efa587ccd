//! The byte layout of `docs/tape-format.md`: segment header, frame, footer.
//!
//! Everything here is pure: bytes in, values out (or a [`FormatError`] saying which check failed).
//! No I/O, so the layout is tested in isolation against the spec, byte by byte.

use sha2::{Digest, Sha256};

/// Segment magic.
pub const SEGMENT_MAGIC: &[u8; 8] = b"TAPESEG1";
/// Frame magic.
pub const FRAME_MAGIC: &[u8; 4] = b"TDFR";
/// Footer magic of footer version 1: a frame index of offsets and sequence numbers.
pub const FOOTER_MAGIC: &[u8; 4] = b"TDFT";
/// Footer magic of footer version 2: the frame index also holds each frame's event-time range.
pub const FOOTER_MAGIC_TIMES: &[u8; 4] = b"TDFU";
/// Trailer magic, the last 8 bytes of a sealed segment.
pub const END_MAGIC: &[u8; 8] = b"TAPEEND1";
/// Format version written and understood.
pub const VERSION: u16 = 1;
/// Fixed part of the segment header.
pub const HEADER_FIXED: usize = 64;
/// Fixed part of a frame before its payload.
pub const FRAME_HEADER: usize = 40;
/// Bytes after a frame's payload (its CRC).
pub const FRAME_TRAILER: usize = 4;
/// Largest payload accepted when reading (guards against a corrupt length).
pub const MAX_PAYLOAD: u32 = 1 << 30;

/// Why bytes are not a valid header, frame or footer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// Fewer bytes than the structure needs.
    Short,
    /// Wrong magic.
    Magic,
    /// A version this build does not read.
    Version(u16),
    /// CRC mismatch.
    Crc,
    /// A length or count out of range.
    Length,
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormatError::Short => write!(f, "truncated"),
            FormatError::Magic => write!(f, "bad magic"),
            FormatError::Version(v) => write!(
                f,
                "format version {v} is not supported (this build reads segment version {VERSION} and frame versions {VERSION} to {FRAME_VERSION_CODED})"
            ),
            FormatError::Crc => write!(f, "CRC32C mismatch"),
            FormatError::Length => write!(f, "length out of range"),
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    u64_at(b, at) as i64
}

/// Payload compression, as the frame flags encode it (with the frame format version for the
/// coded forms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Uncompressed buffers.
    None,
    /// LZ4 frame.
    Lz4,
    /// zstd (default).
    #[default]
    Zstd,
    /// Coded buffers compressed with zstd: frame version 3 ([`super::columns`]).
    CodedZstd,
    /// Coded buffers compressed with xz's LZMA2: frame version 3 ([`super::columns`]).
    CodedXz,
}

impl Compression {
    fn bits(self) -> u16 {
        match self {
            Compression::None => 0,
            Compression::Lz4 => 1,
            Compression::Zstd | Compression::CodedZstd => 2,
            Compression::CodedXz => 3,
        }
    }

    fn from_bits(b: u16, coded: bool) -> Option<Compression> {
        match (b, coded) {
            (0, false) => Some(Compression::None),
            (1, false) => Some(Compression::Lz4),
            (2, false) => Some(Compression::Zstd),
            (2, true) => Some(Compression::CodedZstd),
            (3, true) => Some(Compression::CodedXz),
            _ => None,
        }
    }

    /// Frames of this compression hold coded buffers (frame format version 3).
    pub fn is_coded(self) -> bool {
        matches!(self, Compression::CodedZstd | Compression::CodedXz)
    }
}

/// A segment header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Sequence number of the first row.
    pub first_seq: u64,
    /// Segment number.
    pub segment: u64,
    /// Chain hash of the previous segment.
    pub prev_chain: [u8; 32],
    /// Encapsulated Arrow IPC schema message.
    pub schema: Vec<u8>,
}

impl SegmentHeader {
    /// Encoded length.
    pub fn len(&self) -> usize {
        HEADER_FIXED + self.schema.len() + 4
    }

    /// Never empty (the fixed part alone is 68 bytes); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The header's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.len());
        b.extend_from_slice(SEGMENT_MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&(self.schema.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.first_seq.to_le_bytes());
        b.extend_from_slice(&self.segment.to_le_bytes());
        b.extend_from_slice(&self.prev_chain);
        b.extend_from_slice(&self.schema);
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Length of the schema message, from the fixed part (to know how much more to read).
    pub fn schema_len(fixed: &[u8]) -> Result<usize, FormatError> {
        if fixed.len() < HEADER_FIXED {
            return Err(FormatError::Short);
        }
        if &fixed[0..8] != SEGMENT_MAGIC {
            return Err(FormatError::Magic);
        }
        let s = u32_at(fixed, 12);
        if s > MAX_PAYLOAD {
            return Err(FormatError::Length);
        }
        Ok(s as usize)
    }

    /// Decodes a whole header (fixed part, schema, CRC).
    pub fn decode(b: &[u8]) -> Result<SegmentHeader, FormatError> {
        let s = SegmentHeader::schema_len(b)?;
        let version = u16_at(b, 8);
        if version != VERSION {
            return Err(FormatError::Version(version));
        }
        let end = HEADER_FIXED + s;
        if b.len() < end + 4 {
            return Err(FormatError::Short);
        }
        if crc32c::crc32c(&b[..end]) != u32_at(b, end) {
            return Err(FormatError::Crc);
        }
        let mut prev_chain = [0u8; 32];
        prev_chain.copy_from_slice(&b[32..64]);
        Ok(SegmentHeader {
            first_seq: u64_at(b, 16),
            segment: u64_at(b, 24),
            prev_chain,
            schema: b[HEADER_FIXED..end].to_vec(),
        })
    }
}

/// The fixed part of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload compression.
    pub compression: Compression,
    /// Payload length.
    pub payload_len: u32,
    /// Rows in the frame.
    pub rows: u32,
    /// Sequence number of the first row.
    pub first_seq: u64,
    /// Event-time range, if the batch has a time column with values.
    pub time: Option<(i64, i64)>,
    /// The payload's timestamp columns hold differences between neighbouring values (frame
    /// format version 2; see [`super::codec`]).
    pub time_deltas: bool,
}

/// Frame format version of a frame whose timestamp columns hold differences.
pub const FRAME_VERSION_TIME_DELTAS: u16 = 2;

/// Frame format version of a frame of coded buffers ([`super::columns`]).
pub const FRAME_VERSION_CODED: u16 = 3;

/// How a frame's payload holds its batch (what a decoder needs of the frame header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Coding {
    /// An Arrow IPC record-batch message (frame version 1).
    #[default]
    Ipc,
    /// An Arrow IPC record-batch message whose timestamp columns hold differences (version 2).
    TimeDeltas,
    /// Coded buffers (version 3, [`super::columns`]).
    Coded,
}

impl FrameHeader {
    /// How the payload holds its batch.
    pub fn coding(&self) -> Coding {
        if self.compression.is_coded() {
            Coding::Coded
        } else if self.time_deltas {
            Coding::TimeDeltas
        } else {
            Coding::Ipc
        }
    }

    /// Encoded length of the whole frame.
    pub fn frame_len(&self) -> usize {
        FRAME_HEADER + self.payload_len as usize + FRAME_TRAILER
    }

    /// Sequence number after the frame's last row.
    pub fn end_seq(&self) -> u64 {
        // Cannot wrap for a decoded header (checked in `decode`); saturating for hand-made ones.
        self.first_seq.saturating_add(u64::from(self.rows))
    }

    /// Appends the frame (header, payload, CRC) to `out`.
    pub fn encode_into(&self, payload: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + FRAME_HEADER, 0);
        out.extend_from_slice(payload);
        self.finish_in_place(out, start);
    }

    /// Completes a frame whose payload was written straight into `out` (no copy): `out[start..]`
    /// is `FRAME_HEADER` bytes reserved for this header, then the payload, whose length is
    /// taken from `out` (`payload_len` is not read). Writes the header there and appends the
    /// CRC.
    pub(crate) fn finish_in_place(&self, out: &mut Vec<u8>, start: usize) {
        let flags = u16::from(self.time.is_some()) | (self.compression.bits() << 1);
        let version = if self.compression.is_coded() {
            FRAME_VERSION_CODED
        } else if self.time_deltas {
            FRAME_VERSION_TIME_DELTAS
        } else {
            VERSION
        };
        let payload_len = out.len().saturating_sub(start + FRAME_HEADER) as u32;
        let (lo, hi) = self.time.unwrap_or((0, 0));
        let mut header = [0u8; FRAME_HEADER];
        header[0..4].copy_from_slice(FRAME_MAGIC);
        header[4..6].copy_from_slice(&version.to_le_bytes());
        header[6..8].copy_from_slice(&flags.to_le_bytes());
        header[8..12].copy_from_slice(&payload_len.to_le_bytes());
        header[12..16].copy_from_slice(&self.rows.to_le_bytes());
        header[16..24].copy_from_slice(&self.first_seq.to_le_bytes());
        header[24..32].copy_from_slice(&lo.to_le_bytes());
        header[32..40].copy_from_slice(&hi.to_le_bytes());
        if let Some(slot) = out.get_mut(start..start + FRAME_HEADER) {
            slot.copy_from_slice(&header);
        }
        let crc = crc32c::crc32c(out.get(start..).unwrap_or_default());
        out.extend_from_slice(&crc.to_le_bytes());
    }

    /// Decodes the fixed part (no CRC check yet: that needs the payload).
    pub fn decode(b: &[u8]) -> Result<FrameHeader, FormatError> {
        if b.len() < FRAME_HEADER {
            return Err(FormatError::Short);
        }
        if &b[0..4] != FRAME_MAGIC {
            return Err(FormatError::Magic);
        }
        let version = u16_at(b, 4);
        if version != VERSION
            && version != FRAME_VERSION_TIME_DELTAS
            && version != FRAME_VERSION_CODED
        {
            return Err(FormatError::Version(version));
        }
        let flags = u16_at(b, 6);
        let compression = Compression::from_bits((flags >> 1) & 3, version == FRAME_VERSION_CODED)
            .ok_or(FormatError::Length)?;
        let payload_len = u32_at(b, 8);
        let rows = u32_at(b, 12);
        // A frame's sequence range must fit in a u64 (a crafted or damaged header must not
        // make `end_seq` wrap).
        let seq_fits = u64_at(b, 16).checked_add(u64::from(rows)).is_some();
        if payload_len > MAX_PAYLOAD || rows == 0 || flags >> 3 != 0 || !seq_fits {
            return Err(FormatError::Length);
        }
        Ok(FrameHeader {
            compression,
            payload_len,
            rows,
            first_seq: u64_at(b, 16),
            time: (flags & 1 == 1).then(|| (i64_at(b, 24), i64_at(b, 32))),
            time_deltas: version == FRAME_VERSION_TIME_DELTAS,
        })
    }

    /// Checks the CRC of a whole frame (`b` = header, payload, CRC) and returns the payload.
    pub fn check<'a>(&self, b: &'a [u8]) -> Result<&'a [u8], FormatError> {
        let len = self.frame_len();
        if b.len() < len {
            return Err(FormatError::Short);
        }
        let body = FRAME_HEADER + self.payload_len as usize;
        if crc32c::crc32c(&b[..body]) != u32_at(b, body) {
            return Err(FormatError::Crc);
        }
        Ok(&b[FRAME_HEADER..body])
    }
}

/// A sealed segment's footer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    /// Rows in the segment.
    pub rows: u64,
    /// Min event time (`i64::MAX` if none).
    pub min_time: i64,
    /// Max event time (`i64::MIN` if none).
    pub max_time: i64,
    /// Per frame: byte offset and first sequence number.
    pub index: Vec<(u64, u64)>,
    /// Per frame of `index`, its event-time range as its header has it (`None`: no time).
    /// `None` for a version-1 footer, which does not hold them; written (version 2) when
    /// present and as long as `index`.
    pub times: Option<Vec<Option<(i64, i64)>>>,
    /// SHA-256 of the previous chain hash and the segment's bytes before the footer.
    pub chain: [u8; 32],
}

/// Bytes after the footer body: CRC, length, end magic.
pub const FOOTER_TAIL: usize = 4 + 8 + 8;

impl Footer {
    /// Bytes of one frame-index entry: 32 with the frame's times (version 2), 16 without.
    fn entry_len(&self) -> usize {
        if self.writes_times() { 32 } else { 16 }
    }

    fn writes_times(&self) -> bool {
        self.times
            .as_ref()
            .is_some_and(|t| t.len() == self.index.len())
    }

    /// Encoded length.
    pub fn len(&self) -> usize {
        32 + self.entry_len() * self.index.len() + 32 + FOOTER_TAIL
    }

    /// Never empty; for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The footer's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.len());
        let times = self.times.as_deref().filter(|_| self.writes_times());
        b.extend_from_slice(if times.is_some() {
            FOOTER_MAGIC_TIMES
        } else {
            FOOTER_MAGIC
        });
        b.extend_from_slice(&(self.index.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.rows.to_le_bytes());
        b.extend_from_slice(&self.min_time.to_le_bytes());
        b.extend_from_slice(&self.max_time.to_le_bytes());
        for (k, (offset, seq)) in self.index.iter().enumerate() {
            b.extend_from_slice(&offset.to_le_bytes());
            b.extend_from_slice(&seq.to_le_bytes());
            if let Some(times) = times {
                // No time range: min above max, which no real range has.
                let (lo, hi) = times
                    .get(k)
                    .copied()
                    .flatten()
                    .unwrap_or((i64::MAX, i64::MIN));
                b.extend_from_slice(&lo.to_le_bytes());
                b.extend_from_slice(&hi.to_le_bytes());
            }
        }
        b.extend_from_slice(&self.chain);
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b.extend_from_slice(&((b.len() + 16) as u64).to_le_bytes());
        b.extend_from_slice(END_MAGIC);
        b
    }

    /// The footer length from a segment's last 16 bytes, if they carry the end magic.
    pub fn len_from_tail(tail: &[u8]) -> Result<u64, FormatError> {
        if tail.len() < 16 {
            return Err(FormatError::Short);
        }
        let t = &tail[tail.len() - 16..];
        if &t[8..16] != END_MAGIC {
            return Err(FormatError::Magic);
        }
        Ok(u64_at(t, 0))
    }

    /// Whether `b` (a segment's tail of its footer length) is a whole footer of a version this
    /// build does not know: its length, CRC32C and end magic check out, its magic is not one
    /// of ours. The CRC covers the magic, so damage to a known footer does not look like this.
    pub fn is_newer_version(b: &[u8]) -> bool {
        let n = b.len();
        n >= 32 + 32 + FOOTER_TAIL
            && &b[0..4] != FOOTER_MAGIC
            && &b[0..4] != FOOTER_MAGIC_TIMES
            && &b[n - 8..] == END_MAGIC
            && u64_at(b, n - 16) == n as u64
            && crc32c::crc32c(&b[..n - FOOTER_TAIL]) == u32_at(b, n - FOOTER_TAIL)
    }

    /// Decodes a whole footer.
    pub fn decode(b: &[u8]) -> Result<Footer, FormatError> {
        if b.len() < 32 + 32 + FOOTER_TAIL {
            return Err(FormatError::Short);
        }
        let entry = match &b[0..4] {
            m if m == FOOTER_MAGIC => 16,
            m if m == FOOTER_MAGIC_TIMES => 32,
            _ => return Err(FormatError::Magic),
        };
        let frames = u32_at(b, 4) as usize;
        // The length must match the bytes given before any entry is read (a corrupt count
        // cannot make this overflow: it is at most 2³²−1 entries of 32 bytes).
        let body = frames
            .checked_mul(entry)
            .and_then(|n| n.checked_add(64))
            .ok_or(FormatError::Length)?;
        if b.len() != body + FOOTER_TAIL || u64_at(b, body + 4) != b.len() as u64 {
            return Err(FormatError::Length);
        }
        if crc32c::crc32c(&b[..body]) != u32_at(b, body) {
            return Err(FormatError::Crc);
        }
        let at = |k: usize| 32 + entry * k;
        let index = (0..frames)
            .map(|k| (u64_at(b, at(k)), u64_at(b, at(k) + 8)))
            .collect();
        let times = (entry == 32).then(|| {
            (0..frames)
                .map(|k| {
                    let (lo, hi) = (i64_at(b, at(k) + 16), i64_at(b, at(k) + 24));
                    (lo <= hi).then_some((lo, hi))
                })
                .collect()
        });
        let mut chain = [0u8; 32];
        chain.copy_from_slice(&b[body - 32..body]);
        Ok(Footer {
            rows: u64_at(b, 8),
            min_time: i64_at(b, 16),
            max_time: i64_at(b, 24),
            index,
            times,
            chain,
        })
    }
}

/// The chain hash of a segment: SHA-256 of `prev_chain ‖ body` (the bytes before the footer).
pub fn chain_hash(prev_chain: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev_chain);
    h.update(body);
    h.finalize().into()
}

/// A running chain hash, fed as bytes are written.
#[derive(Debug, Clone)]
pub struct ChainHasher(Sha256);

impl ChainHasher {
    /// Starts from the previous segment's chain hash.
    pub fn new(prev_chain: &[u8; 32]) -> ChainHasher {
        let mut h = Sha256::new();
        h.update(prev_chain);
        ChainHasher(h)
    }

    /// Adds bytes of the segment.
    pub fn update(&mut self, b: &[u8]) {
        self.0.update(b);
    }

    /// The chain hash so far.
    pub fn finish(&self) -> [u8; 32] {
        self.0.clone().finalize().into()
    }
}

/// Lower-case hex of a hash.
pub fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// A chain hash written by [`hex`] (64 hex digits); `None` if `text` is not one.
pub fn unhex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// File name of the segment whose first row is `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("seg-{first_seq:020}.tape")
}

/// File name of a segment written by compaction: `generation` (≥ 1) tells it from the
/// segment(s) it replaces that start at the same row (`docs/tape-format.md`, "Compaction").
pub fn compacted_segment_name(first_seq: u64, generation: u64) -> String {
    format!("seg-{first_seq:020}-{generation}.tape")
}

/// The first sequence number and the compaction generation (0 for a segment a writer
/// appended) in a segment file name; `None` for any other name.
pub fn parse_segment_file(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_prefix("seg-")?.strip_suffix(".tape")?;
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    match stem.split_once('-') {
        None if digits(stem) => Some((stem.parse().ok()?, 0)),
        Some((first, generation)) if digits(first) && digits(generation) => {
            let generation: u64 = generation.parse().ok()?;
            (generation >= 1).then_some((first.parse().ok()?, generation))
        }
        _ => None,
    }
}

/// The first sequence number in a segment file name (either form).
pub fn parse_segment_name(name: &str) -> Option<u64> {
    parse_segment_file(name).map(|(first, _)| first)
}
