//! Packs: a text file (CSV, JSON lines, a log, any lines) archived losslessly as a tape.
//!
//! [`pack`] reads its input in chunks of whole records (bounded memory, [`chunk`]), turns each
//! chunk into Arrow columns with a codec ([`csv`], [`json`], [`text`]) and writes one frame per
//! chunk on a tape, so `verify`, `inspect`, `tail` and `query` work on a pack as on any tape.
//! What it guarantees:
//!
//! - **Exact bytes.** A row whose columns do not render back to its record keeps the record in
//!   `_exact`; [`unpack`] gives back the input byte for byte (`docs/pack-format.md`).
//! - **Checked before trusted.** Each frame is encoded, decoded again and rendered, and the
//!   result compared with the chunk before the frame goes to the tape; a frame whose structured
//!   form does not give the bytes back, or is larger than the plain form by more than
//!   [`PackOptions::columns_slack`] (10%), is written in the plain form (every row in `_exact`,
//!   no values for queries).
//! - **A SHA-256 of the original.** The pack ends with a trailer (`PACK`) holding the layout,
//!   the byte and record counts and the SHA-256 of the input; [`unpack`] checks all three.
//! - **All or nothing.** A pack is written as `OUT.partial` and renamed to `OUT` once it is
//!   complete and synced; [`unpack_to_file`] writes beside the output and renames it only when
//!   every check passed.

pub mod chunk;
pub mod codec;
pub mod csv;
pub mod json;
pub mod text;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::{Schema, SchemaRef};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::tape::codec::BatchEncoder;
use crate::tape::format::Coding;
use crate::tape::{Compression, FsyncPolicy, StartAt, TapeOptions, TapeReader, TapeWriter};
use chunk::{Chunk, Chunker};
use codec::Codec;

/// The trailer file of a pack.
pub const TRAILER: &str = "PACK";
/// The schema metadata key holding a pack's layout (JSON) in every segment.
pub const LAYOUT_KEY: &str = "tapedeck.pack";
/// The largest trailer a reader accepts.
const MAX_TRAILER_BYTES: u64 = 16 << 20;
/// The version of the pack format this build writes (2: frames of coded buffers, frame format
/// version 3); it reads 1 and 2.
pub const VERSION: u32 = 2;
/// The default backend of a pack's frames: xz, whose packs of nycflights13's CSV files are
/// smaller than `xz -9` makes them (BENCHMARKS.md, "Coded buffers and the xz backend").
pub const DEFAULT_BACKEND: Backend = Backend::Xz;
/// The default zstd level of a pack's frames (`--backend zstd`).
pub const DEFAULT_LEVEL: i32 = 3;
/// The default xz preset of a pack's frames: 5, the smallest preset whose packs of
/// nycflights13's flights.csv are smaller than `xz -9`'s, at more than 5 times its speed (4: 4%
/// larger than xz -9's; 6: 4.3 times its speed) — BENCHMARKS.md, "Coded buffers and the xz
/// backend".
pub const DEFAULT_XZ_LEVEL: i32 = 5;

/// The compressor of a pack's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// zstd, levels 1–22: faster to pack and to unpack, larger (a pack of format version 1 is
    /// always zstd, and a trailer without a backend means zstd).
    Zstd,
    /// xz's LZMA2, presets 0–9 (the default backend, preset 5).
    Xz,
}

impl Backend {
    /// The levels the backend takes.
    pub fn levels(self) -> std::ops::RangeInclusive<i32> {
        match self {
            Backend::Zstd => 1..=22,
            Backend::Xz => 0..=9,
        }
    }

    /// The backend's name, as `--backend` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Zstd => "zstd",
            Backend::Xz => "xz",
        }
    }

    /// The default level of the backend.
    pub fn default_level(self) -> i32 {
        match self {
            Backend::Zstd => DEFAULT_LEVEL,
            Backend::Xz => DEFAULT_XZ_LEVEL,
        }
    }

    fn compression(self) -> Compression {
        match self {
            Backend::Zstd => Compression::CodedZstd,
            Backend::Xz => Compression::CodedXz,
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Backend, String> {
        match s {
            "zstd" => Ok(Backend::Zstd),
            "xz" => Ok(Backend::Xz),
            other => Err(format!("`{other}` is not a backend: use zstd or xz")),
        }
    }
}
/// The default records per chunk (one frame each).
pub const DEFAULT_CHUNK_LINES: usize = 200_000;
/// The largest bytes per chunk: a chunk stays under twice this, so its text fits the 32-bit
/// offsets of an Arrow column and a frame the tape's 1 GiB bound.
pub const MAX_CHUNK_BYTES: usize = 256 << 20;
/// The default bytes per chunk: a chunk is cut once it holds this many bytes.
pub const DEFAULT_CHUNK_BYTES: usize = 8 << 20;
/// How much larger than the plain form a frame's columns may be and still be kept.
pub const DEFAULT_COLUMNS_SLACK: f64 = 0.10;
/// Frames of at least this many rows are rendered in two halves at once by `unpack`.
const PARALLEL_RENDER_ROWS: usize = 16_384;
/// How much of the input `auto` looks at to choose a format.
const SNIFF_BYTES: usize = 64 << 10;

/// How a pack turns records into columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Chosen from the input's name and first lines.
    #[default]
    Auto,
    /// A header, then one column per field.
    Csv,
    /// One JSON object per line, one column per key.
    Jsonl,
    /// Lines with a leading timestamp: `time` and `line` columns.
    Log,
    /// Any lines: a `line` column.
    Lines,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Format, String> {
        match s {
            "auto" => Ok(Format::Auto),
            "csv" => Ok(Format::Csv),
            "jsonl" | "json" | "ndjson" => Ok(Format::Jsonl),
            "log" => Ok(Format::Log),
            "lines" => Ok(Format::Lines),
            _ => Err(format!(
                "unknown pack format `{s}`; valid: auto, csv, jsonl, log, lines"
            )),
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Auto => "auto",
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
            Format::Log => "log",
            Format::Lines => "lines",
        })
    }
}

/// A pack's layout: its format and what its codec needs to render rows back to bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "format", rename_all = "lowercase")]
pub enum Layout {
    /// `csv`.
    Csv(csv::CsvLayout),
    /// `jsonl`.
    Jsonl(json::JsonLayout),
    /// `log`.
    Log(text::LinesLayout),
    /// `lines`.
    Lines(text::LinesLayout),
}

impl Layout {
    /// The format of the layout.
    pub fn format(&self) -> Format {
        match self {
            Layout::Csv(_) => Format::Csv,
            Layout::Jsonl(_) => Format::Jsonl,
            Layout::Log(_) => Format::Log,
            Layout::Lines(_) => Format::Lines,
        }
    }

    fn codec(&self) -> Box<dyn Codec> {
        match self {
            Layout::Csv(l) => Box::new(csv::CsvCodec::new(l.clone())),
            Layout::Jsonl(l) => Box::new(json::JsonCodec::new(l.clone())),
            Layout::Log(l) | Layout::Lines(l) => Box::new(text::LinesCodec::new(l.clone())),
        }
    }

    /// Bytes that come before the first row (a CSV header).
    fn preamble(&self) -> Result<Vec<u8>, String> {
        match self {
            Layout::Csv(l) => from_hex(&l.header).ok_or_else(|| {
                "the layout's CSV header is not hex: the PACK file is invalid".into()
            }),
            _ => Ok(Vec::new()),
        }
    }
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Options of [`pack`].
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// The format; `Auto` chooses from `name` and the first lines.
    pub format: Format,
    /// The compressor of the frames' buffers.
    pub backend: Backend,
    /// Its level (zstd 1–22, xz 0–9; clamped to those); `None`: the backend's default.
    pub level: Option<i32>,
    /// Records per chunk.
    pub chunk_lines: usize,
    /// Bytes per chunk.
    pub chunk_bytes: usize,
    /// The input's name (a file name), for `Auto` and the trailer.
    pub name: Option<String>,
    /// A frame keeps its columns while they encode to at most this much more than the plain
    /// form (0.10: 10% more), so the pack stays queryable where columns cost a little; 0 keeps
    /// whichever form is smaller (an archive never queried).
    pub columns_slack: f64,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            format: Format::Auto,
            backend: DEFAULT_BACKEND,
            level: None,
            chunk_lines: DEFAULT_CHUNK_LINES,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            name: None,
            columns_slack: DEFAULT_COLUMNS_SLACK,
        }
    }
}

/// How far a [`pack`] has come, after each frame.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PackProgress {
    /// Input bytes read.
    pub bytes_in: u64,
    /// Bytes on the tape so far.
    pub bytes_out: u64,
    /// Records so far.
    pub records: u64,
    /// Frames so far.
    pub frames: u64,
    /// Frames written in the plain form.
    pub raw_frames: u64,
    /// Time since the start.
    #[serde(skip)]
    pub elapsed: Duration,
}

/// The trailer of a pack (the file `PACK`): what [`unpack`] checks the restored bytes against.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Trailer {
    /// The pack format version.
    pub pack: u32,
    /// The layout of every frame.
    pub layout: Layout,
    /// The input's size in bytes.
    pub bytes: u64,
    /// Records (rows, the CSV header not counted).
    pub records: u64,
    /// Frames.
    pub frames: u64,
    /// Frames in the plain form.
    pub raw_frames: u64,
    /// SHA-256 of the input, lowercase hex.
    pub sha256: String,
    /// The compressor the frames were written with (`zstd` when absent: version 1).
    #[serde(default = "version_1_backend")]
    pub backend: Backend,
    /// The level the frames were written with.
    pub level: i32,
    /// The input's name, if it had one.
    pub name: Option<String>,
}

/// The backend of a trailer that names none: a pack of format version 1, always zstd.
fn version_1_backend() -> Backend {
    Backend::Zstd
}

/// What [`pack`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PackReport {
    /// The trailer written.
    pub trailer: Trailer,
    /// Bytes of the pack on disk (its segments).
    pub bytes_out: u64,
    /// Time taken.
    pub seconds: f64,
}

fn pack_error(
    path: &Path,
    frame: Option<u64>,
    offset: Option<u64>,
    message: impl Into<String>,
) -> Error {
    Error::Pack {
        path: path.to_path_buf(),
        frame,
        offset,
        message: message.into(),
    }
}

/// The temporary name of a pack being written.
pub fn partial_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// Chooses a format from the input's name and its first bytes.
pub fn detect(name: Option<&str>, head: &[u8]) -> Format {
    let ext = name
        .and_then(|n| Path::new(n).extension())
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let head = head.strip_prefix("\u{feff}".as_bytes()).unwrap_or(head);
    // The first complete line (or all of `head` when it has no newline).
    let line = head.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // JSON lines, or a JSON array written one object per line (its first line `[`).
    let looks_json = head.split(|&b| b == b'\n').take(3).any(|l| {
        let t = String::from_utf8_lossy(l);
        let t = t.trim();
        t.starts_with('{') && t.trim_end_matches(',').ends_with('}')
    });
    let looks_log = std::str::from_utf8(line)
        .ok()
        .and_then(text::leading_time)
        .is_some();
    match ext.as_deref() {
        Some("csv" | "tsv" | "psv") => return Format::Csv,
        Some("jsonl" | "ndjson") => return Format::Jsonl,
        Some("json") if looks_json => return Format::Jsonl,
        Some("log") if looks_log => return Format::Log,
        _ => {}
    }
    if looks_json {
        return Format::Jsonl;
    }
    if looks_log {
        return Format::Log;
    }
    // CSV: the first lines split into the same number (≥ 2) of fields.
    let mut chunker = Chunker::new(head, Some(csv::sniff_delimiter(line)), 64, SNIFF_BYTES);
    if let Ok(Some(c)) = chunker.next_chunk() {
        let complete = c.records.iter().filter(|r| r.end > r.content_end).count();
        if complete >= 2
            && let Some(l) = csv::CsvLayout::detect(&c, None)
        {
            let n = l.columns.len();
            let same = (1..complete)
                .filter(|&i| {
                    let content = c.content(i);
                    memchr::memchr_iter(l.delimiter, content).count() + 1 == n
                        || memchr::memchr(b'"', content).is_some()
                })
                .count();
            if same * 10 >= (complete - 1) * 9 {
                return Format::Csv;
            }
        }
    }
    Format::Lines
}

/// Packs `input` into a new pack directory `out` (which must not exist). Calls `progress`
/// after each frame.
pub fn pack<R: Read>(
    input: R,
    out: &Path,
    options: &PackOptions,
    progress: &mut dyn FnMut(&PackProgress),
) -> Result<PackReport> {
    let started = Instant::now();
    if out.exists() {
        return Err(pack_error(
            out,
            None,
            None,
            "already exists; refusing to overwrite it: remove it or choose another name",
        ));
    }
    let temp = partial_path(out);
    if temp.exists() {
        // What an interrupted `pack` left: an empty directory, or a tape without a trailer.
        // A complete pack whose rename did not happen is the user's to keep; anything else is
        // not ours.
        let empty = std::fs::read_dir(&temp).is_ok_and(|mut d| d.next().is_none());
        if temp.join(TRAILER).exists() {
            return Err(pack_error(
                &temp,
                None,
                None,
                format!(
                    "is a complete pack whose final rename did not happen: rename it to {}, or remove it to pack again",
                    out.display()
                ),
            ));
        }
        if !empty && !temp.join("TAPEID").exists() {
            return Err(pack_error(
                &temp,
                None,
                None,
                "exists and is not an interrupted pack: move it away",
            ));
        }
        std::fs::remove_dir_all(&temp).map_err(|e| Error::io("remove", &temp, e))?;
    }
    let mut input = input;
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    (&mut input)
        .take(SNIFF_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(|e| Error::io("read", Path::new(options.name.as_deref().unwrap_or("-")), e))?;
    let format = match options.format {
        Format::Auto => detect(options.name.as_deref(), &head),
        f => f,
    };
    let reader = BufReader::with_capacity(1 << 20, std::io::Cursor::new(head).chain(input));
    let result = pack_into(reader, &temp, format, options, started, progress);
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&temp);
            // The tape writer's own words are about a recording (what was acknowledged, how
            // to go on); a pack is all or nothing, so say that instead.
            return Err(match e {
                Error::TapeStopped { os_error, .. } => pack_error(
                    out,
                    None,
                    None,
                    format!(
                        "writing the pack failed ({}); nothing is left under this name or {}: free space or fix the disk, then pack again",
                        os_error.map_or_else(
                            || "the tape writer stopped".to_string(),
                            |c| std::io::Error::from_raw_os_error(c).to_string()
                        ),
                        temp.display()
                    ),
                ),
                other => other,
            });
        }
    };
    std::fs::rename(&temp, out).map_err(|e| Error::io("rename", out, e))?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(report)
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("sync", dir, e))
}

/// A chunk's frame as it is written: the batch, whether it is the plain form, and its
/// payload, encoded and checked.
struct Chosen {
    batch: RecordBatch,
    raw: bool,
    payload: Vec<u8>,
    coding: Coding,
}

/// The chosen structured form of a chunk, its plain form, or the plain form because the
/// structured one did not give the bytes back. Under xz the two forms are compared by their
/// zstd sizes (level 3, both coded; a proxy ranking them as xz does, at a fraction of its
/// time), and only the chosen one is compressed with xz — and checked again.
fn choose(
    codec: &dyn Codec,
    schema: &SchemaRef,
    chunk: &Chunk,
    first: usize,
    compression: Compression,
    level: i32,
    slack: f64,
) -> std::result::Result<Chosen, String> {
    let expect_from = chunk
        .records
        .get(first)
        .map_or(chunk.bytes.len(), |r| r.start);
    let expect = &chunk.bytes[expect_from..];
    let (cmp, cmp_level) = match compression {
        Compression::CodedXz => (Compression::CodedZstd, 3),
        c => (c, level),
    };
    let exact = cmp == compression;
    let (structured, raw) = std::thread::scope(|s| {
        let raw = s.spawn(
            || -> std::result::Result<(RecordBatch, Vec<u8>, Coding), String> {
                let batch = codec::raw(schema, chunk, first).map_err(|e| e.to_string())?;
                let (payload, coding) = encode(schema, &batch, cmp, cmp_level)?;
                Ok((batch, payload, coding))
            },
        );
        let structured =
            (|| -> std::result::Result<(RecordBatch, Vec<u8>, Coding, bool), String> {
                let batch =
                    codec::encode(codec, schema, chunk, first).map_err(|e| e.to_string())?;
                let (payload, coding) = encode(schema, &batch, cmp, cmp_level)?;
                let same = gives_back(codec, schema, &payload, coding, expect)?;
                Ok((batch, payload, coding, same))
            })();
        (structured, raw.join())
    });
    let (raw, raw_payload, raw_coding) = raw
        .map_err(|_| "encoding the chunk's plain form panicked (a bug: please report it; --format lines avoids the columns)".to_string())??;
    if let Ok((batch, payload, coding, true)) = structured
        && payload.len() as f64 <= raw_payload.len() as f64 * (1.0 + slack.max(0.0))
    {
        if exact {
            return Ok(Chosen {
                batch,
                raw: false,
                payload,
                coding,
            });
        }
        let (payload, coding) = encode(schema, &batch, compression, level)?;
        if gives_back(codec, schema, &payload, coding, expect)? {
            return Ok(Chosen {
                batch,
                raw: false,
                payload,
                coding,
            });
        }
    }
    // Larger than the plain form, not giving the bytes back, or failing to encode at all: the
    // plain form, whose rows need no codec. It gives the bytes back by construction; it is
    // checked all the same.
    let (payload, coding) = if exact {
        (raw_payload, raw_coding)
    } else {
        encode(schema, &raw, compression, level)?
    };
    if !gives_back(codec, schema, &payload, coding, expect)? {
        return Err("the plain form of the chunk does not give its bytes back (a bug: please report it with the input; nothing was written under the pack's name)".into());
    }
    Ok(Chosen {
        batch: raw,
        raw: true,
        payload,
        coding,
    })
}

/// `batch`'s payload as the tape stores it.
fn encode(
    schema: &SchemaRef,
    batch: &RecordBatch,
    compression: Compression,
    level: i32,
) -> std::result::Result<(Vec<u8>, Coding), String> {
    BatchEncoder::with_level(schema, compression, Some(level))
        .and_then(|mut enc| enc.encode(batch))
        .map_err(|e| e.to_string())
}

/// Decodes a payload as a reader would, renders it, and says whether that gives `expect`.
fn gives_back(
    codec: &dyn Codec,
    schema: &SchemaRef,
    payload: &[u8],
    coding: Coding,
    expect: &[u8],
) -> std::result::Result<bool, String> {
    // A pack's frames are coded: decoded by the function every reader's decoder calls for them.
    if coding != Coding::Coded {
        return Err("a pack frame that is not coded (a bug: please report it)".into());
    }
    let back = crate::tape::columns::decode(schema, payload, None).map_err(|e| e.to_string())?;
    let mut bytes = Vec::with_capacity(expect.len());
    Ok(codec::render_batch(codec, &back, &mut bytes).is_ok() && bytes == expect)
}

fn pack_into<R: BufRead>(
    mut reader: R,
    temp: &Path,
    format: Format,
    options: &PackOptions,
    started: Instant,
    progress: &mut dyn FnMut(&PackProgress),
) -> Result<PackReport> {
    let input_name = PathBuf::from(options.name.as_deref().unwrap_or("-"));
    let backend = options.backend;
    let levels = backend.levels();
    let level = options
        .level
        .unwrap_or_else(|| backend.default_level())
        .clamp(*levels.start(), *levels.end());
    let compression = backend.compression();
    // A `.tsv` / `.psv` file says its delimiter; other files' headers suggest one.
    let hint = match input_name
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("tsv") => Some(b'\t'),
        Some("psv") => Some(b'|'),
        _ => None,
    };
    let delimiter = if format == Format::Csv {
        // The header's delimiter, from the first line (still in the reader's buffer).
        let peek = reader
            .fill_buf()
            .map_err(|e| Error::io("read", &input_name, e))?;
        let first = peek.split(|&b| b == b'\n').next().unwrap_or(&[]);
        let first = first.strip_prefix("\u{feff}".as_bytes()).unwrap_or(first);
        Some(hint.unwrap_or_else(|| csv::sniff_delimiter(first)))
    } else {
        None
    };
    let mut chunker = Chunker::new(
        reader,
        delimiter,
        options.chunk_lines,
        options.chunk_bytes.min(MAX_CHUNK_BYTES),
    );
    let read_err = |e: std::io::Error| Error::io("read", &input_name, e);
    let first = chunker.next_chunk().map_err(read_err)?;
    // `auto` falls back to lines where its guess does not hold for the first chunk; a format
    // asked for says why it cannot be used.
    let explicit = options.format != Format::Auto;
    let refuse = |what: &str| {
        pack_error(
            &input_name,
            Some(0),
            Some(0),
            format!("{what}: pack it with --format lines"),
        )
    };
    let lines = |c: &Chunk| Layout::Lines(text::LinesLayout::detect(c, false));
    let layout = match (&first, format) {
        (None, _) => Layout::Lines(text::LinesLayout {
            terminator: "\n".into(),
            time: false,
        }),
        (Some(c), Format::Csv) => match csv::CsvLayout::detect(c, delimiter) {
            Some(l) => Layout::Csv(l),
            None if explicit => {
                return Err(refuse(
                    "the first line is not a CSV header of two or more fields",
                ));
            }
            None => lines(c),
        },
        (Some(c), Format::Jsonl) => match json::JsonLayout::detect(c) {
            Some(l) => Layout::Jsonl(l),
            None if explicit => {
                return Err(refuse("none of the first 16 lines is a JSON object"));
            }
            None => lines(c),
        },
        (Some(c), Format::Log) => Layout::Log(text::LinesLayout::detect(c, true)),
        (Some(c), _) => lines(c),
    };
    let layout_json =
        serde_json::to_string(&layout).map_err(|e| pack_error(temp, None, None, e.to_string()))?;
    let codec = layout.codec();
    let schema = {
        let s = codec::schema_of(codec.as_ref());
        Arc::new(Schema::new_with_metadata(
            s.fields().clone(),
            HashMap::from([(LAYOUT_KEY.to_string(), layout_json)]),
        ))
    };
    std::fs::create_dir_all(temp).map_err(|e| Error::io("create", temp, e))?;
    let writer = TapeWriter::open(
        temp,
        TapeOptions {
            fsync: FsyncPolicy::Never,
            compression,
            zstd_level: Some(level),
            frame_rows: 1,
            ..TapeOptions::default()
        },
    )?;
    let mut hash = Sha256::new();
    let mut p = PackProgress::default();
    let preamble = layout
        .preamble()
        .map_err(|m| pack_error(temp, None, None, m))?;
    let mut next = first;
    let mut is_first = true;
    while let Some(chunk) = next {
        hash.update(&chunk.bytes);
        let skip = usize::from(is_first && !preamble.is_empty());
        is_first = false;
        if chunk.records.len() > skip {
            let chosen = choose(
                codec.as_ref(),
                &schema,
                &chunk,
                skip,
                compression,
                level,
                options.columns_slack,
            )
            .map_err(|m| pack_error(&input_name, Some(p.frames), Some(chunk.offset), m))?;
            let (batch, raw) = (chosen.batch, chosen.raw);
            writer.submit_encoded(&batch, chosen.payload, chosen.coding)?;
            p.frames += 1;
            p.raw_frames += u64::from(raw);
            p.records += batch.num_rows() as u64;
        }
        p.bytes_in = chunker.offset();
        p.bytes_out = writer.bytes();
        p.elapsed = started.elapsed();
        progress(&p);
        next = chunker.next_chunk().map_err(read_err)?;
    }
    let watch = writer.watch();
    // Closing seals the last segment, which fsyncs it (every segment is synced when sealed; the
    // writer syncs TAPEID and MANIFEST itself); then the trailer and the directory: all on disk
    // before the rename.
    writer.close()?;
    let trailer = Trailer {
        pack: VERSION,
        layout,
        bytes: p.bytes_in,
        records: p.records,
        frames: p.frames,
        raw_frames: p.raw_frames,
        sha256: crate::tape::format::hex(&hash.finalize()),
        backend,
        level,
        name: options.name.clone(),
    };
    write_trailer(temp, &trailer)?;
    sync_dir(temp)?;
    let bytes_out = watch.bytes();
    p.bytes_out = bytes_out;
    p.elapsed = started.elapsed();
    progress(&p);
    Ok(PackReport {
        trailer,
        bytes_out,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn field_list(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn write_trailer(dir: &Path, trailer: &Trailer) -> Result<()> {
    let path = dir.join(TRAILER);
    let json =
        serde_json::to_string(trailer).map_err(|e| pack_error(dir, None, None, e.to_string()))?;
    let text = format!("{json}\ncrc32c {:08x}\n", crc32c::crc32c(json.as_bytes()));
    if text.len() as u64 > MAX_TRAILER_BYTES {
        return Err(pack_error(
            dir,
            None,
            None,
            format!(
                "the trailer would be {} bytes, more than a reader accepts: pack the file with --format lines",
                text.len()
            ),
        ));
    }
    let mut f = std::fs::File::create(&path).map_err(|e| Error::io("create", &path, e))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("write", &path, e))
}

/// Reads the trailer of the pack `dir`.
pub fn read_trailer(dir: &Path) -> Result<Trailer> {
    let path = dir.join(TRAILER);
    // A trailer is a few KiB (its layout names the columns); refuse to read a huge file whole.
    if let Ok(m) = std::fs::metadata(&path)
        && m.len() > MAX_TRAILER_BYTES
    {
        return Err(pack_error(
            dir,
            None,
            None,
            format!(
                "`{TRAILER}` is {} bytes, more than a trailer can be: not a pack",
                m.len()
            ),
        ));
    }
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(pack_error(
                dir,
                None,
                None,
                format!(
                    "no `{TRAILER}` file: not a pack, or one whose `tapedeck pack` did not finish"
                ),
            ));
        }
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    let damaged = |why: &str| {
        pack_error(
            dir,
            None,
            None,
            format!(
                "`{TRAILER}` is damaged ({why}): the pack cannot be checked; its rows can still be read as a tape"
            ),
        )
    };
    let text = std::str::from_utf8(&text).map_err(|_| damaged("not UTF-8"))?;
    let (json, rest) = text
        .split_once('\n')
        .ok_or_else(|| damaged("no checksum line"))?;
    let crc = rest
        .strip_prefix("crc32c ")
        .and_then(|r| r.strip_suffix('\n'))
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or_else(|| damaged("no checksum line"))?;
    if crc != crc32c::crc32c(json.as_bytes()) {
        return Err(damaged("its checksum does not match"));
    }
    // The version first, so a newer pack's unknown layout is named as such, not as damage.
    let version = serde_json::from_str::<serde_json::Value>(json)
        .map_err(|e| damaged(&e.to_string()))?
        .get("pack")
        .and_then(serde_json::Value::as_u64);
    if let Some(v) = version.filter(|v| !(1..=u64::from(VERSION)).contains(v)) {
        return Err(pack_error(
            dir,
            None,
            None,
            format!(
                "pack format version {v} is not supported by this build (it reads 1 to {VERSION}): unpack it with the tapedeck that wrote it, or a newer one"
            ),
        ));
    }
    let trailer: Trailer = serde_json::from_str(json).map_err(|e| damaged(&e.to_string()))?;
    if !(1..=VERSION).contains(&trailer.pack) {
        return Err(pack_error(
            dir,
            None,
            None,
            format!(
                "pack format version {} is not supported by this build (it reads 1 to {VERSION})",
                trailer.pack
            ),
        ));
    }
    Ok(trailer)
}

/// What [`unpack`] restored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UnpackReport {
    /// Bytes written.
    pub bytes: u64,
    /// Records written.
    pub records: u64,
    /// Frames read.
    pub frames: u64,
    /// Time taken.
    pub seconds: f64,
}

/// Restores the original bytes of the pack `dir` into `out`, checking every frame's CRC, the
/// record and byte counts and the SHA-256. On an error, what was written to `out` is not the
/// original: [`unpack_to_file`] removes it.
pub fn unpack<W: Write>(dir: &Path, out: W, progress: &mut dyn FnMut(u64)) -> Result<UnpackReport> {
    unpack_named(dir, out, "the output", progress)
}

/// [`unpack`], naming the output (`out_name`) in errors.
fn unpack_named<W: Write>(
    dir: &Path,
    out: W,
    out_name: &str,
    progress: &mut dyn FnMut(u64),
) -> Result<UnpackReport> {
    let started = Instant::now();
    let trailer = read_trailer(dir)?;
    let codec = trailer.layout.codec();
    let expected = codec::schema_of(codec.as_ref());
    let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
    let out_err = |e: std::io::Error| Error::io("write", Path::new(out_name), e);
    let mut hash = Sha256::new();
    let mut written = 0u64;
    let preamble = trailer
        .layout
        .preamble()
        .map_err(|m| pack_error(dir, None, None, m))?;
    let mut buf = preamble;
    let mut reader = TapeReader::open(dir, StartAt::Start)?;
    let (mut frames, mut records) = (0u64, 0u64);
    // Two stages on two cores: a thread reads and decodes frames (CRC, zstd, IPC) while this
    // one renders, hashes and writes the one before. The channel holds two frames, so memory
    // stays a few frames whatever the pack's size.
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Option<(u64, RecordBatch)>>>(2);
        scope.spawn(move || {
            loop {
                let next = reader.next_batch();
                let skipped = reader.take_unreadable();
                let item = match (next, skipped.first()) {
                    (Err(e), _) => Err(e),
                    (Ok(_), Some(u)) => Err(pack_error(
                        dir,
                        None,
                        None,
                        format!(
                            "rows {}..{} are unreadable ({}{}: {}); the pack cannot be restored",
                            u.from,
                            u.to,
                            u.segment.as_deref().unwrap_or("no segment holds them"),
                            u.bytes
                                .map_or(String::new(), |(a, b)| format!(", bytes {a}..{b}")),
                            u.why
                        ),
                    )),
                    (Ok(n), None) => Ok(n),
                };
                let last = !matches!(item, Ok(Some(_)));
                if tx.send(item).is_err() || last {
                    return;
                }
            }
        });
        for item in rx {
            // An error names the frame and where the output had come to.
            let at = |e: Error| match e {
                Error::Pack { message, .. } => {
                    pack_error(dir, Some(frames), Some(written + buf.len() as u64), message)
                }
                other => pack_error(
                    dir,
                    Some(frames),
                    Some(written + buf.len() as u64),
                    other.to_string(),
                ),
            };
            let Some((seq, batch)) = item.map_err(at)? else {
                break;
            };
            if seq != records {
                return Err(pack_error(
                    dir,
                    Some(frames),
                    Some(written),
                    format!("rows {records}..{seq} are missing"),
                ));
            }
            let same_columns = batch.schema().fields().len() == expected.fields().len()
                && batch
                    .schema()
                    .fields()
                    .iter()
                    .zip(expected.fields())
                    .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
            if !same_columns {
                return Err(pack_error(
                    dir,
                    Some(frames),
                    Some(written),
                    format!(
                        "the frame's columns ({}) are not the trailer's layout ({}): not this pack's frame",
                        field_list(&batch.schema()),
                        field_list(&expected)
                    ),
                ));
            }
            let rows = batch.num_rows();
            let fail = |m: String| pack_error(dir, Some(frames), Some(written), m);
            if rows >= PARALLEL_RENDER_ROWS {
                // A large frame is rendered in two halves at once (rendering numbers back to
                // text is the slow part of unpacking a CSV).
                let half = rows / 2;
                let (first, second) = (batch.slice(0, half), batch.slice(half, rows - half));
                let codec = codec.as_ref();
                let (r1, r2) = std::thread::scope(|s| {
                    let other = s.spawn(move || {
                        let mut tail = Vec::new();
                        codec::render_batch(codec, &second, &mut tail).map(|()| tail)
                    });
                    (codec::render_batch(codec, &first, &mut buf), other.join())
                });
                r1.map_err(fail)?;
                let tail = r2
                    .map_err(|_| fail("rendering a frame's second half panicked".into()))?
                    .map_err(fail)?;
                buf.extend_from_slice(&tail);
            } else {
                codec::render_batch(codec.as_ref(), &batch, &mut buf).map_err(fail)?;
            }
            hash.update(&buf);
            out.write_all(&buf).map_err(out_err)?;
            written += buf.len() as u64;
            buf.clear();
            frames += 1;
            records += batch.num_rows() as u64;
            progress(written);
        }
        Ok(())
    })?;
    if !buf.is_empty() {
        hash.update(&buf);
        out.write_all(&buf).map_err(out_err)?;
        written += buf.len() as u64;
    }
    out.flush().map_err(out_err)?;
    let sha = crate::tape::format::hex(&hash.finalize());
    if records != trailer.records || written != trailer.bytes || sha != trailer.sha256 {
        return Err(pack_error(
            dir,
            None,
            Some(written),
            format!(
                "restored {records} records, {written} bytes, SHA-256 {sha}; the trailer says {} records, {} bytes, {}: the pack is damaged (or was written by a faulty build); `tapedeck verify` names what it finds",
                trailer.records, trailer.bytes, trailer.sha256
            ),
        ));
    }
    Ok(UnpackReport {
        bytes: written,
        records,
        frames,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// [`unpack`] into the file `out`: written as `OUT.partial-<pid>` beside it, synced, and
/// renamed to `out` only once every check passed; removed on any error.
pub fn unpack_to_file(
    dir: &Path,
    out: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<UnpackReport> {
    let mut s = out.as_os_str().to_owned();
    s.push(format!(".partial-{}", std::process::id()));
    let temp = PathBuf::from(s);
    if out.exists() {
        return Err(pack_error(
            dir,
            None,
            None,
            format!(
                "{} already exists; refusing to overwrite it: remove it or choose another name",
                out.display()
            ),
        ));
    }
    let file = std::fs::File::create(&temp).map_err(|e| Error::io("create", &temp, e))?;
    let name = out.display().to_string();
    let result = unpack_named(dir, &file, &name, progress).and_then(|r| {
        file.sync_all().map_err(|e| Error::io("sync", &temp, e))?;
        std::fs::rename(&temp, out).map_err(|e| Error::io("rename", out, e))?;
        Ok(r)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}
