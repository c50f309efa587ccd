//! Reading `.dt-raw` v2 files, salvaging truncated ones.
//!
//! [`DtRawReader`] yields chunks in order. Unlike dtollib's reader, which raises on any truncated
//! tail, it returns every complete chunk and then stops, recording in [`Stop`] the byte offset
//! where the readable part ends and why (a cut length prefix, header or payload; a chunk header
//! that is not JSON). A damaged *file* header is an error: without it no chunk can be read.
//! [`DtRawSource`] turns the chunks into [`Block`]s (`file:PATH.dt-raw`), converting codes to
//! engineering units with the channels' scales when the header has them; the `Source` trait is
//! implemented for it in `source/dtraw.rs`, one layer up, so this format module does not
//! depend on the sources that use it.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use super::{ChunkHeader, Dtype, FLAG_OVERRUN, FORMAT_VERSION, FileHeader, scale_from_json};
use crate::error::{Error, Result};
use crate::record::{Block, BlockError, Channel, RawCodes, Record};

/// Longest header (file or chunk) accepted, so a damaged length cannot ask for gigabytes.
const MAX_HEADER: u32 = 16 << 20;

/// One chunk: its header and its codes (channel-major, `n_channels × valid_samples`).
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// The chunk header.
    pub header: ChunkHeader,
    /// The codes.
    pub codes: RawCodes,
    /// Byte offset of the chunk in the file.
    pub offset: u64,
}

/// Where and why reading stopped before the end of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    /// Bytes of the file that were read as complete chunks (the header included).
    pub offset: u64,
    /// The file's length.
    pub file_len: u64,
    /// Complete chunks before it.
    pub chunks: u64,
    /// What was wrong at `offset`.
    pub reason: String,
}

/// Reads a `.dt-raw` file; see the module docs.
#[derive(Debug)]
pub struct DtRawReader {
    input: BufReader<File>,
    path: PathBuf,
    header: FileHeader,
    offset: u64,
    file_len: u64,
    chunks: u64,
    stop: Option<Stop>,
    done: bool,
}

fn bad_file(path: &Path, message: String) -> Error {
    Error::Tape {
        path: path.to_path_buf(),
        message,
    }
}

/// Reads up to `buf.len()` bytes; returns how many (fewer only at the end of the file).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn str_field(v: &serde_json::Value, key: &str) -> std::result::Result<String, String> {
    v.get(key)
        .and_then(|x| x.as_str())
        .map(str::to_string)
        .ok_or_else(|| format!("`{key}` is missing or not a string"))
}

fn u64_field(v: &serde_json::Value, key: &str) -> std::result::Result<u64, String> {
    v.get(key)
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| format!("`{key}` is missing or not a whole number"))
}

fn i64_field(v: &serde_json::Value, key: &str) -> std::result::Result<i64, String> {
    v.get(key)
        .and_then(serde_json::Value::as_i64)
        .ok_or_else(|| format!("`{key}` is missing or not a whole number"))
}

fn parse_file_header(v: &serde_json::Value) -> std::result::Result<FileHeader, String> {
    let version = u64_field(v, "format_version")?;
    if version != FORMAT_VERSION {
        return Err(format!(
            "format_version {version}; tapedeck reads version {FORMAT_VERSION}"
        ));
    }
    let dtype_name = str_field(v, "dtype")?;
    let dtype = Dtype::from_name(&dtype_name)
        .ok_or_else(|| format!("dtype `{dtype_name}`; expected int16 or int32"))?;
    let channels: Vec<Channel> = v
        .get("channels")
        .and_then(|c| c.as_array())
        .ok_or("`channels` is missing or not a list")?
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Ok(Channel {
                name: c
                    .get("name")
                    .and_then(|n| n.as_str())
                    .map_or_else(|| format!("ch{i}"), str::to_string),
                unit: c.get("unit").and_then(|u| u.as_str()).map(str::to_string),
                scale: scale_from_json(c),
            })
        })
        .collect::<std::result::Result<_, String>>()?;
    let n = u64_field(v, "n_channels")?;
    if usize::try_from(n).ok() != Some(channels.len()) || n == 0 {
        return Err(format!(
            "n_channels is {n} but `channels` lists {}",
            channels.len()
        ));
    }
    Ok(FileHeader {
        task: str_field(v, "task").unwrap_or_default(),
        device: str_field(v, "device").unwrap_or_default(),
        channels,
        sample_rate_hz: v
            .get("sample_rate_hz")
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0),
        block_period_ns: i64_field(v, "block_period_ns").unwrap_or(0),
        dtype,
        samples_per_buffer: usize::try_from(u64_field(v, "samples_per_buffer").unwrap_or(0))
            .map_err(|_| "`samples_per_buffer` does not fit this machine's usize".to_string())?,
        task_started_at: str_field(v, "task_started_at").unwrap_or_default(),
        metadata_json: v
            .get("metadata")
            .map_or_else(|| "{}".to_string(), |m| m.to_string()),
    })
}

fn usize_field(v: &serde_json::Value, key: &str) -> std::result::Result<usize, String> {
    let n = u64_field(v, key)?;
    usize::try_from(n).map_err(|_| format!("`{key}` {n} does not fit this machine's usize"))
}

fn parse_chunk_header(v: &serde_json::Value) -> std::result::Result<ChunkHeader, String> {
    Ok(ChunkHeader {
        seq: u64_field(v, "seq")?,
        event_kind: str_field(v, "event_kind")?,
        first_sample_index: u64_field(v, "first_sample_index")?,
        valid_samples: usize_field(v, "valid_samples")?,
        buffer_capacity: usize_field(v, "buffer_capacity")?,
        t_mono_ns: i64_field(v, "t_mono_ns")?,
        t_utc: str_field(v, "t_utc")?,
        flags: v
            .get("flags")
            .and_then(|f| f.as_array())
            .ok_or("`flags` is missing or not a list")?
            .iter()
            .filter_map(|f| f.as_str().map(str::to_string))
            .collect(),
    })
}

/// A chunk's numbers as a block carries them, checked: every sample's index and times fit the
/// i64 columns blocks become (`sample_index`, `t_mono_ns`, `t_utc`), and the read window fits
/// i64 nanoseconds. `Err` says which number does not fit; the chunk header is then damaged.
struct BlockNumbers {
    read_window_ns: i64,
}

fn block_numbers(
    h: &FileHeader,
    c: &ChunkHeader,
    t_utc_us: Option<i64>,
) -> std::result::Result<BlockNumbers, String> {
    let samples = c.valid_samples;
    let n = i64::try_from(samples)
        .map_err(|_| format!("valid_samples {samples} does not fit 64-bit sample indices"))?;
    let period = h.block_period_ns.max(0);
    let read_window_ns = period.checked_mul(n).ok_or_else(|| {
        format!(
            "block_period_ns {} × valid_samples {samples} overflows 64-bit nanoseconds",
            h.block_period_ns
        )
    })?;
    // The last sample: index first + n − 1, time t + (n − 1)·period.
    let last = n.saturating_sub(1);
    let span = period.saturating_mul(last);
    i64::try_from(c.first_sample_index)
        .ok()
        .and_then(|f| f.checked_add(last))
        .ok_or_else(|| {
            format!(
                "first_sample_index {} + {samples} samples passes the largest 64-bit sample index",
                c.first_sample_index
            )
        })?;
    c.t_mono_ns.checked_add(span).ok_or_else(|| {
        format!(
            "t_mono_ns {} + {samples} samples × {period} ns passes the largest 64-bit time",
            c.t_mono_ns
        )
    })?;
    if let Some(t) = t_utc_us {
        t.checked_add(span.div_euclid(1000)).ok_or_else(|| {
            format!(
                "t_utc `{}` + {samples} samples × {period} ns passes the largest 64-bit time",
                c.t_utc
            )
        })?;
    }
    i64::try_from(c.seq)
        .map_err(|_| format!("seq {} passes the largest 64-bit block index", c.seq))?;
    Ok(BlockNumbers { read_window_ns })
}

impl DtRawReader {
    /// Opens `path` and reads its file header.
    pub fn open(path: impl AsRef<Path>) -> Result<DtRawReader> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        let file_len = file
            .metadata()
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        let mut input = BufReader::with_capacity(1 << 20, file);
        let mut len = [0u8; 4];
        let io = |e| Error::io("read", path, e);
        if read_full(&mut input, &mut len).map_err(io)? < 4 {
            return Err(bad_file(
                path,
                format!("{file_len} bytes: too short for a .dt-raw header length"),
            ));
        }
        let n = u32::from_le_bytes(len);
        if n > MAX_HEADER || u64::from(n) + 4 > file_len {
            return Err(bad_file(
                path,
                format!(
                    "the header length reads {n} bytes but the file has {file_len}; not a .dt-raw file, or cut inside its header"
                ),
            ));
        }
        let header_end = 4 + u64::from(n);
        let mut buf = vec![0u8; header_len(n)];
        if read_full(&mut input, &mut buf).map_err(io)? < buf.len() {
            return Err(bad_file(
                path,
                format!(
                    "the file header (bytes 4..{header_end}) was cut while being read; the file shrank"
                ),
            ));
        }
        let header = serde_json::from_slice::<serde_json::Value>(&buf)
            .map_err(|e| e.to_string())
            .and_then(|v| parse_file_header(&v))
            .map_err(|m| bad_file(path, format!("file header (bytes 4..{header_end}): {m}; not a .dt-raw v2 file, or a damaged one")))?;
        Ok(DtRawReader {
            input,
            path: path.to_path_buf(),
            header,
            offset: header_end,
            file_len,
            chunks: 0,
            stop: None,
            done: false,
        })
    }

    /// The file header.
    pub fn header(&self) -> &FileHeader {
        &self.header
    }

    /// Where reading stopped early, once it has (`None` for a file read to its end).
    pub fn stop(&self) -> Option<&Stop> {
        self.stop.as_ref()
    }

    /// Complete chunks read so far.
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    /// The path being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn stop_here<T>(&mut self, reason: String) -> Result<Option<T>> {
        tracing::warn!(
            "{}: stopped at byte {} of {} after {} complete chunks: {reason}",
            self.path.display(),
            self.offset,
            self.file_len,
            self.chunks
        );
        self.stop = Some(Stop {
            offset: self.offset,
            file_len: self.file_len,
            chunks: self.chunks,
            reason,
        });
        self.done = true;
        Ok(None)
    }

    /// The next complete chunk; `None` at the end of the file or where a truncated or damaged
    /// chunk starts (see [`DtRawReader::stop`]).
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        let Some(next) = self.next_header()? else {
            return Ok(None);
        };
        let mut payload = vec![0u8; next.payload];
        let got = read_full(&mut self.input, &mut payload)
            .map_err(|e| Error::io("read", &self.path, e))?;
        if got < payload.len() {
            return self.stop_here(format!(
                "chunk seq {} has {got} of its {} payload bytes: the file shrank while being read",
                next.header.seq, next.payload
            ));
        }
        let codes = match self.header.dtype {
            Dtype::I16 => RawCodes::I16(
                payload
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]))
                    .collect(),
            ),
            Dtype::I32 => RawCodes::I32(
                payload
                    .chunks_exact(4)
                    .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            ),
        };
        Ok(Some(Chunk {
            header: next.header,
            codes,
            offset: self.commit(next.end),
        }))
    }

    /// The next complete chunk's header and offset, its payload skipped unread (a writer that
    /// resumes a file only needs to find its last chunk).
    pub fn next_chunk_header(&mut self) -> Result<Option<(ChunkHeader, u64)>> {
        let Some(next) = self.next_header()? else {
            return Ok(None);
        };
        // `payload` is at most the bytes left in the file, so it fits i64.
        let skip = i64::try_from(next.payload).unwrap_or(i64::MAX);
        self.input
            .seek_relative(skip)
            .map_err(|e| Error::io("seek in", &self.path, e))?;
        Ok(Some((next.header, self.commit(next.end))))
    }

    /// Counts a complete chunk ending at byte `end`; returns its offset.
    fn commit(&mut self, end: u64) -> u64 {
        let offset = self.offset;
        self.offset = end;
        self.chunks = self.chunks.saturating_add(1);
        offset
    }

    /// Reads a chunk header whose payload is complete in the file and whose numbers fit a
    /// block; leaves the input at the payload. The caller reads or skips the payload and then
    /// commits `end`.
    fn next_header(&mut self) -> Result<Option<NextChunk>> {
        if self.done {
            return Ok(None);
        }
        let path = self.path.clone();
        let io = |e| Error::io("read", &path, e);
        let mut len = [0u8; 4];
        let got = read_full(&mut self.input, &mut len).map_err(io)?;
        if got == 0 {
            self.done = true;
            return Ok(None);
        }
        if got < 4 {
            return self.stop_here(format!("a chunk header length cut after {got} of 4 bytes"));
        }
        let n = u32::from_le_bytes(len);
        let left = self.file_len.saturating_sub(self.offset.saturating_add(4));
        if n > MAX_HEADER || u64::from(n) > left {
            return self.stop_here(format!(
                "a chunk header of {n} bytes with {left} bytes left in the file"
            ));
        }
        let mut buf = vec![0u8; header_len(n)];
        if read_full(&mut self.input, &mut buf).map_err(io)? < buf.len() {
            return self.stop_here(format!(
                "a chunk header of {n} bytes cut short: the file shrank while being read"
            ));
        }
        let header = match serde_json::from_slice::<serde_json::Value>(&buf)
            .map_err(|e| e.to_string())
            .and_then(|v| parse_chunk_header(&v))
        {
            Ok(h) => h,
            Err(m) => return self.stop_here(format!("a chunk header that does not read: {m}")),
        };
        let channels = self.header.channels.len();
        let size = self.header.dtype.size();
        let left = left.saturating_sub(u64::from(n));
        let Some(need) = header
            .payload_len(channels, self.header.dtype)
            .and_then(|need| u64::try_from(need).ok())
        else {
            return self.stop_here(format!(
                "chunk seq {}: valid_samples {} × {channels} channels × {size} bytes overflows 64 bits (a damaged chunk header); {left} bytes left",
                header.seq, header.valid_samples
            ));
        };
        if need > left {
            return self.stop_here(format!(
                "chunk seq {} needs {need} payload bytes ({channels} channels × {} samples × {size}), {left} left",
                header.seq, header.valid_samples
            ));
        }
        if let Err(m) = block_numbers(&self.header, &header, None) {
            return self.stop_here(format!(
                "chunk seq {}: {m} (a damaged chunk header)",
                header.seq
            ));
        }
        // need ≤ left ≤ file_len − offset − 4 − n: the sum fits.
        let end = self
            .offset
            .saturating_add(4 + u64::from(n))
            .saturating_add(need);
        Ok(Some(NextChunk {
            payload: usize::try_from(need).unwrap_or(usize::MAX),
            header,
            end,
        }))
    }

    /// The chunk as a block: codes kept, values converted with the channels' scales (codes as
    /// numbers, unit `counts`, for channels without one). An error
    /// ([`Error::InvalidBlock`], naming the file and the chunk's byte offset) when the chunk's
    /// codes do not match its header or its numbers do not fit a block's 64-bit columns.
    pub fn to_block(&self, chunk: &Chunk) -> Result<Block> {
        let h = &self.header;
        let n = chunk.header.valid_samples;
        let bad = |message: String| Error::InvalidBlock {
            device: h.device.clone(),
            block_index: chunk.header.seq,
            message: format!(
                "{}: chunk seq {} at byte {}: {message}",
                self.path.display(),
                chunk.header.seq,
                chunk.offset
            ),
        };
        let codes_len = match &chunk.codes {
            RawCodes::I16(v) => v.len(),
            RawCodes::I32(v) => v.len(),
        };
        if h.channels.len().checked_mul(n) != Some(codes_len) {
            return Err(bad(format!(
                "{codes_len} codes for {} channels × {n} samples; the chunk does not match its header",
                h.channels.len()
            )));
        }
        let t_utc_us =
            crate::record::time::parse_timestamp(&chunk.header.t_utc).ok_or_else(|| {
                bad(format!(
                    "t_utc `{}` is not an ISO 8601 time",
                    chunk.header.t_utc
                ))
            })?;
        let numbers = block_numbers(h, &chunk.header, Some(t_utc_us))
            .map_err(|m| bad(format!("{m}; the chunk header is damaged")))?;
        let bits = h.dtype.bits();
        let mut values = Vec::with_capacity(codes_len);
        let mut channels = h.channels.clone();
        // codes_len = channels × n, so each channel has exactly n codes (none when n = 0).
        for (c, ch) in channels.iter_mut().enumerate() {
            let range = c.saturating_mul(n)..(c + 1).saturating_mul(n);
            let convert = |code: i64| match ch.scale {
                Some(s) => s.to_units(code, bits),
                None => code as f64,
            };
            match &chunk.codes {
                RawCodes::I16(v) => values.extend(
                    v.get(range)
                        .unwrap_or_default()
                        .iter()
                        .map(|&x| convert(i64::from(x))),
                ),
                RawCodes::I32(v) => values.extend(
                    v.get(range)
                        .unwrap_or_default()
                        .iter()
                        .map(|&x| convert(i64::from(x))),
                ),
            }
            if ch.scale.is_none() {
                ch.unit = Some("counts".into());
            }
        }
        let block = Block {
            device: h.device.clone(),
            task: h.task.clone(),
            block_index: chunk.header.seq,
            first_sample_index: chunk.header.first_sample_index,
            t_mono_ns: chunk.header.t_mono_ns,
            t_utc_us,
            period_ns: (h.block_period_ns > 0).then_some(h.block_period_ns),
            read_window_ns: numbers.read_window_ns,
            channels,
            samples: n,
            values,
            raw: Some(chunk.codes.clone()),
            error: chunk
                .header
                .flags
                .iter()
                .any(|f| f == FLAG_OVERRUN)
                .then(|| BlockError {
                    kind: "overrun".into(),
                    message: format!(
                        "overrun marker on chunk seq {} ({})",
                        chunk.header.seq,
                        chunk.header.flags.join(", ")
                    ),
                }),
        };
        block.validate()?;
        Ok(block)
    }
}

/// A chunk header read by [`DtRawReader::next_header`], its payload not yet consumed.
struct NextChunk {
    header: ChunkHeader,
    /// Payload bytes.
    payload: usize,
    /// Byte offset just past the payload.
    end: u64,
}

/// A header length already checked against [`MAX_HEADER`], as a buffer size.
fn header_len(n: u32) -> usize {
    usize::try_from(n.min(MAX_HEADER)).unwrap_or(0)
}

/// `file:PATH.dt-raw` — the chunks of a `.dt-raw` file as blocks (zero-payload chunks — the
/// final marker, overruns without data — are counted, not emitted).
#[derive(Debug)]
pub struct DtRawSource {
    name: String,
    reader: DtRawReader,
    markers: u64,
    report: std::sync::Arc<std::sync::Mutex<ImportReport>>,
}

/// What a [`DtRawSource`] read, readable while (or after) it runs elsewhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Complete chunks read.
    pub chunks: u64,
    /// Zero-payload chunks (final markers, overruns without data).
    pub markers: u64,
    /// Whether the file ended with a `final` marker.
    pub complete: bool,
    /// Where reading stopped early, if it did.
    pub stop: Option<Stop>,
}

impl DtRawSource {
    /// Opens the file.
    pub fn open(path: impl AsRef<Path>) -> Result<DtRawSource> {
        let reader = DtRawReader::open(path.as_ref())?;
        Ok(DtRawSource {
            name: format!("file:{}", path.as_ref().display()),
            reader,
            markers: 0,
            report: Default::default(),
        })
    }

    /// A handle on what the source has read (chunks, markers, where it stopped).
    pub fn report(&self) -> std::sync::Arc<std::sync::Mutex<ImportReport>> {
        self.report.clone()
    }

    /// The reader (header, where it stopped).
    pub fn reader(&self) -> &DtRawReader {
        &self.reader
    }

    /// Zero-payload chunks seen.
    pub fn markers(&self) -> u64 {
        self.markers
    }
}

impl DtRawSource {
    /// How the file is shown in messages (`file:PATH`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next block (zero-payload chunks counted and passed over); `Ok(None)` at the end of
    /// the readable part. The `Source` implementation (`source/dtraw.rs`) calls this.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        loop {
            let next = self.reader.next_chunk()?;
            {
                let mut r = crate::sync::lock(&self.report);
                r.chunks = self.reader.chunks();
                r.stop = self.reader.stop().cloned();
                if let Some(c) = &next {
                    r.complete = c.header.flags.iter().any(|f| f == super::FLAG_FINAL);
                    if c.header.valid_samples == 0 {
                        r.markers = r.markers.saturating_add(1);
                    }
                }
            }
            let Some(chunk) = next else {
                return Ok(None);
            };
            if chunk.header.valid_samples == 0 {
                self.markers = self.markers.saturating_add(1);
                continue;
            }
            return Ok(Some(Record::Block(self.reader.to_block(&chunk)?)));
        }
    }
}
