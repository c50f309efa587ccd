//! Coded buffers (frame format version 3): each buffer of a record batch narrowed and compressed
//! on its own, by zstd or by xz's LZMA2.
//!
//! Arrow's IPC body compression stores every buffer as it is in memory: a column of small
//! integers takes eight bytes a value before the compressor sees it, and LZ4 and zstd are the
//! only compressors it knows. A version-3 payload keeps Arrow's layout — the record-batch
//! message's metadata is stored unchanged, and a reader rebuilds the uncompressed IPC body it
//! describes — but stores each buffer through a *transform* that makes it smaller and more
//! regular before the compressor sees it:
//!
//! - **integers** (values of integer, date, time, timestamp and duration columns; the offsets of
//!   text and binary columns): the values minus their minimum, in as few bytes as the range
//!   needs (a constant column takes none), or — when that is narrower — the differences
//!   between neighbouring values, likewise (sorted times, running ids, string offsets).
//!
//! Float columns are left as they are: their values repeat whole (a temperature of 39.02 is
//! the same eight bytes each time), which the compressor finds; grouping their bytes by
//! position (a "byte shuffle") made nycflights13's weather floats 2.4 times larger under zstd.
//!
//! A buffer is then compressed with the frame's compressor, and stored as it is when that does
//! not make it smaller. The layout byte by byte, and why each choice: `docs/tape-format.md`,
//! "Coded buffers". Everything a payload says is checked before it is used: a damaged or
//! crafted payload gives an error, never a panic or an allocation it did not justify.

use std::collections::HashMap;

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_schema::{ArrowError, DataType, SchemaRef};

/// The compressor of a version-3 payload's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// zstd at a level (1–22).
    Zstd(i32),
    /// xz's LZMA2 (raw, no container) at a preset (0–9).
    Xz(u32),
}

/// The largest uncompressed body a version-3 payload may describe (1 GiB): a writer refuses
/// more, so a reader never allocates more for one frame.
pub const MAX_BODY: usize = 1 << 30;

/// The most bytes the buffers of one version-1 or -2 frame may hold once decompressed (4 GiB −
/// 1, what an uncompressed frame's payload length allows): the writer refuses a bigger frame,
/// and a reader refuses one that claims more before Arrow's reader reserves the memory.
pub const MAX_DECODED_FRAME: usize = u32::MAX as usize;

/// Bytes of a buffer record's fixed part.
pub const RECORD_HEADER: usize = 28;

const STORED: u8 = 0;
const ZSTD: u8 = 1;
const LZMA2: u8 = 2;
/// Every byte zero, nothing stored: the buffers of a column that is all null (a pack's plain
/// frames have a column of nulls for every field).
const ZEROS: u8 = 3;

const NO_TRANSFORM: u8 = 0;
const INTEGERS: u8 = 1;

/// Buffers shorter than this are stored as they are: a compressor's own header would eat
/// what it saves.
const SMALL: usize = 64;

/// What the writer knows of a buffer from the schema: the transform that suits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hint {
    None,
    /// Little-endian signed integers of this many bytes (2, 4 or 8).
    Integers(u8),
}

fn bad(what: impl std::fmt::Display) -> ArrowError {
    ArrowError::IpcError(format!("coded frame payload: {what}"))
}

/// What a buffer must hold for a column of `rows` rows: Arrow's reader trusts it (and panics
/// on some shortfalls instead of failing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// A validity bitmap: empty when the column has no nulls, else a bit per row.
    Validity,
    /// A bit per row.
    Bits,
    /// So many bytes per row (fixed-width values, views).
    PerRow(usize),
    /// Offsets of so many bytes: one per row and one more (none for no rows).
    Offsets(usize),
    /// Anything (text and binary data).
    Any,
}

/// Each buffer of a message of a flat schema (the types tapedeck's sources and packs write):
/// its top-level column, its transform, and what it must hold. Coded frames hold flat schemas
/// only: a nested, dictionary or null column, or a buffer list that does not match the schema,
/// is an error (Arrow's reader trusts the buffer list and would panic on some mismatches).
fn buffer_map(
    schema: &SchemaRef,
    batch: &arrow_ipc::RecordBatch<'_>,
) -> Result<Vec<(usize, Hint, Need)>, ArrowError> {
    buffer_map_if_flat(schema, batch)?.map_err(|field| {
        bad(format!(
            "column {} is of type {}: coded frames hold flat columns only",
            field.name(),
            field.data_type()
        ))
    })
}

/// A buffer's top-level column, its transform, and what it must hold.
type BufferMap = Vec<(usize, Hint, Need)>;

/// [`buffer_map`] for a schema whose columns are all of the flat types it knows; for another
/// schema, the first column that is not (`Ok(Err(field))`), and nothing is checked.
fn buffer_map_if_flat<'s>(
    schema: &'s SchemaRef,
    batch: &arrow_ipc::RecordBatch<'_>,
) -> Result<Result<BufferMap, &'s arrow_schema::Field>, ArrowError> {
    let mismatch = || bad("the buffer list does not match the schema");
    let mut variadic = batch.variadicBufferCounts().map(|v| v.iter());
    let mut out = Vec::new();
    for (i, field) in schema.fields().iter().enumerate() {
        // Every field's first buffer is its validity bitmap.
        out.push((i, Hint::None, Need::Validity));
        let (hint, need) = match field.data_type() {
            DataType::Boolean => (Hint::None, Need::Bits),
            DataType::Int8 | DataType::UInt8 => (Hint::None, Need::PerRow(1)),
            DataType::Float16 => (Hint::None, Need::PerRow(2)),
            DataType::Int16 | DataType::UInt16 => (Hint::Integers(2), Need::PerRow(2)),
            DataType::Int32
            | DataType::UInt32
            | DataType::Date32
            | DataType::Time32(_)
            | DataType::Interval(arrow_schema::IntervalUnit::YearMonth) => {
                (Hint::Integers(4), Need::PerRow(4))
            }
            DataType::Int64
            | DataType::UInt64
            | DataType::Date64
            | DataType::Time64(_)
            | DataType::Timestamp(..)
            | DataType::Duration(_) => (Hint::Integers(8), Need::PerRow(8)),
            DataType::Float32 => (Hint::None, Need::PerRow(4)),
            DataType::Float64 => (Hint::None, Need::PerRow(8)),
            DataType::Utf8 | DataType::Binary => {
                out.push((i, Hint::Integers(4), Need::Offsets(4)));
                (Hint::None, Need::Any)
            }
            DataType::LargeUtf8 | DataType::LargeBinary => {
                out.push((i, Hint::Integers(8), Need::Offsets(8)));
                (Hint::None, Need::Any)
            }
            DataType::Utf8View | DataType::BinaryView => {
                out.push((i, Hint::None, Need::PerRow(16)));
                let n = variadic
                    .as_mut()
                    .and_then(Iterator::next)
                    .ok_or_else(mismatch)?;
                for _ in 1..usize::try_from(n).map_err(|_| mismatch())? {
                    out.push((i, Hint::None, Need::Any));
                }
                if n == 0 {
                    continue;
                }
                (Hint::None, Need::Any)
            }
            DataType::FixedSizeBinary(w) => (
                Hint::None,
                Need::PerRow(usize::try_from(*w).map_err(|_| mismatch())?),
            ),
            DataType::Decimal32(..) => (Hint::None, Need::PerRow(4)),
            DataType::Decimal64(..) | DataType::Interval(arrow_schema::IntervalUnit::DayTime) => {
                (Hint::None, Need::PerRow(8))
            }
            DataType::Decimal128(..)
            | DataType::Interval(arrow_schema::IntervalUnit::MonthDayNano) => {
                (Hint::None, Need::PerRow(16))
            }
            DataType::Decimal256(..) => (Hint::None, Need::PerRow(32)),
            _ => return Ok(Err(field)),
        };
        out.push((i, hint, need));
    }
    if out.len() != batch.buffers().map_or(0, |b| b.len()) {
        return Err(mismatch());
    }
    Ok(Ok(out))
}

/// Checks each buffer of a flat schema's message against its column's row and null counts.
fn check_lengths(
    batch: &arrow_ipc::RecordBatch<'_>,
    map: &[(usize, Hint, Need)],
) -> Result<(), ArrowError> {
    let Some(buffers) = batch.buffers() else {
        return Err(ipc_bad("no field nodes or buffer list"));
    };
    let lengths = buffers
        .iter()
        .map(|b| usize::try_from(b.length()).map_err(|_| ipc_bad("a negative buffer length")))
        .collect::<Result<Vec<_>, _>>()?;
    check_decoded_lengths(batch, map, &lengths)
}

/// [`check_lengths`] with each buffer's length as it is once decompressed (`lengths`).
fn check_decoded_lengths(
    batch: &arrow_ipc::RecordBatch<'_>,
    map: &[(usize, Hint, Need)],
    lengths: &[usize],
) -> Result<(), ArrowError> {
    let Some(nodes) = batch.nodes() else {
        return Err(ipc_bad("no field nodes or buffer list"));
    };
    if lengths.len() != map.len() {
        return Err(ipc_bad("the buffer list does not match the schema"));
    }
    for (k, ((col, _, need), &len)) in map.iter().zip(lengths).enumerate() {
        // `get` panics past the end: the bound first.
        let node = (*col < nodes.len())
            .then(|| nodes.get(*col))
            .ok_or_else(|| ipc_bad(&format!("no field node for column {col}")))?;
        let rows = usize::try_from(node.length()).map_err(|_| ipc_bad("a negative length"))?;
        let nulls =
            usize::try_from(node.null_count()).map_err(|_| ipc_bad("a negative null count"))?;
        let bits = rows.div_ceil(8);
        let ok = match need {
            Need::Validity => nulls <= rows && (len == 0 && nulls == 0 || len >= bits),
            Need::Bits => len >= bits,
            Need::PerRow(w) => rows.checked_mul(*w).is_some_and(|n| len >= n),
            Need::Offsets(w) => {
                rows == 0
                    || rows
                        .checked_add(1)
                        .and_then(|r| r.checked_mul(*w))
                        .is_some_and(|n| len >= n)
            }
            Need::Any => true,
        };
        if !ok {
            return Err(ipc_bad(&format!(
                "buffer {k} ({len} bytes) is too short for column {col}'s {rows} rows"
            )));
        }
    }
    Ok(())
}

fn ipc_bad(what: &str) -> ArrowError {
    ArrowError::IpcError(format!("frame payload: {what}"))
}

/// Views (`Utf8View`, `BinaryView`) anywhere in `t`: one variadic buffer count each.
fn views_in(t: &DataType) -> usize {
    match t {
        DataType::Utf8View | DataType::BinaryView => 1,
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::FixedSizeList(f, _)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::Map(f, _) => views_in(f.data_type()),
        DataType::Struct(fs) => fs.iter().map(|f| views_in(f.data_type())).sum(),
        DataType::Union(fs, _) => fs.iter().map(|(_, f)| views_in(f.data_type())).sum(),
        // A dictionary's values travel in dictionary messages: the record batch's list of
        // variadic counts has no entry for them.
        DataType::Dictionary(..) => 0,
        DataType::RunEndEncoded(_, v) => views_in(v.data_type()),
        _ => 0,
    }
}

/// Checks what Arrow's reader asserts or trusts instead of checking: one variadic buffer count
/// per view column (a damaged or crafted message with more would make it panic), none larger
/// than the message's buffer list (it would push that many buffers before failing).
pub(crate) fn check_variadic(
    schema: &SchemaRef,
    batch: &arrow_ipc::RecordBatch<'_>,
) -> Result<(), ArrowError> {
    let views: usize = schema
        .fields()
        .iter()
        .map(|f| views_in(f.data_type()))
        .sum();
    let counts = batch.variadicBufferCounts().map_or(0, |v| v.len());
    if views != counts {
        return Err(ipc_bad(&format!(
            "{counts} variadic buffer counts for {views} view columns"
        )));
    }
    let buffers = batch.buffers().map_or(0, |b| b.len());
    if let Some(v) = batch.variadicBufferCounts()
        && v.iter()
            .any(|n| usize::try_from(n).map_or(true, |n| n > buffers))
    {
        return Err(ipc_bad(
            "a variadic buffer count larger than the buffer list",
        ));
    }
    Ok(())
}

/// Checks what Arrow's reader trusts in a payload of IPC messages (frame versions 1 and 2)
/// before the reader sees it: every message's metadata parses, its body fits in the payload,
/// and every buffer it lists lies inside its body (Arrow slices them without a check and
/// panics); a record batch's variadic counts as [`check_variadic`]. A damaged or crafted
/// payload whose CRC matches is then an error, never a panic.
pub(crate) fn check_ipc_payload(schema: &SchemaRef, payload: &[u8]) -> Result<(), ArrowError> {
    let mut rest = payload;
    let mut decoded = 0usize;
    while !rest.is_empty() {
        let (meta, after) = split_message(rest)?;
        if meta.is_empty() {
            // A tapedeck frame never holds one, and it would leave the segment's decoder
            // finished, failing the next frame instead of this one.
            return Err(ipc_bad("an end-of-stream marker inside a frame"));
        }
        let message = arrow_ipc::root_as_message(meta)
            .map_err(|e| ipc_bad(&format!("metadata does not parse: {e}")))?;
        let body_len = usize::try_from(message.bodyLength())
            .ok()
            .filter(|&l| l <= after.len())
            .ok_or_else(|| ipc_bad("a message body runs past the payload"))?;
        let record = message.header_as_record_batch();
        let batch = if let Some(batch) = record {
            check_variadic(schema, &batch)?;
            Some(batch)
        } else if let Some(dict) = message.header_as_dictionary_batch() {
            dict.data()
        } else {
            return Err(ipc_bad(
                "a message that is neither a record batch nor a dictionary",
            ));
        };
        if let Some(batch) = batch {
            let body = &after[..body_len];
            let compressed = batch.compression().is_some();
            let mut lengths = Vec::new();
            for (k, b) in batch.buffers().iter().flat_map(|b| b.iter()).enumerate() {
                let range = usize::try_from(b.offset())
                    .ok()
                    .zip(usize::try_from(b.length()).ok())
                    .and_then(|(o, l)| Some(o..o.checked_add(l)?))
                    .filter(|r| r.end <= body_len)
                    .ok_or_else(|| {
                        ipc_bad(&format!(
                            "buffer {k} (offset {}, length {}) lies outside its body of \
                             {body_len} bytes",
                            b.offset(),
                            b.length()
                        ))
                    })?;
                let len = decoded_length(k, &body[range], compressed)?;
                decoded = decoded
                    .checked_add(len)
                    .filter(|&d| d <= MAX_DECODED_FRAME)
                    .ok_or_else(|| {
                        ipc_bad(&format!(
                            "buffers that decompress to more than {MAX_DECODED_FRAME} bytes \
                             in all"
                        ))
                    })?;
                lengths.push(len);
            }
            // Lengths are checked against the row counts where the layout is known (flat
            // schemas, all tapedeck's sources write); Arrow's reader checks the rest.
            if record.is_some()
                && let Ok(map) = buffer_map_if_flat(schema, &batch)?
            {
                check_decoded_lengths(&batch, &map, &lengths)?;
            }
        }
        rest = &after[body_len..];
    }
    Ok(())
}

/// The length of buffer `k` (its stored bytes `stored`) once Arrow's reader has
/// decompressed it: a compressed buffer starts with its decompressed length (i64; −1: stored
/// as it is; 0: empty). The caller bounds their sum ([`MAX_DECODED_FRAME`]), as Arrow's
/// reader reserves that much before it decompresses.
fn decoded_length(k: usize, stored: &[u8], compressed: bool) -> Result<usize, ArrowError> {
    if !compressed || stored.is_empty() {
        return Ok(stored.len());
    }
    let prefix = stored
        .get(..8)
        .and_then(|p| <[u8; 8]>::try_from(p).ok())
        .map(i64::from_le_bytes)
        .ok_or_else(|| ipc_bad(&format!("compressed buffer {k} is shorter than its length")))?;
    match prefix {
        -1 => Ok(stored.len() - 8),
        n => usize::try_from(n)
            .map_err(|_| ipc_bad(&format!("compressed buffer {k} claims {n} bytes"))),
    }
}

/// The parts of an encapsulated IPC message: its metadata flatbuffer and its body.
pub(crate) fn split_message(message: &[u8]) -> Result<(&[u8], &[u8]), ArrowError> {
    let (meta_start, meta_len) = match message {
        [0xff, 0xff, 0xff, 0xff, a, b, c, d, ..] => (8, i32::from_le_bytes([*a, *b, *c, *d])),
        [a, b, c, d, ..] => (4, i32::from_le_bytes([*a, *b, *c, *d])),
        _ => return Err(ipc_bad("shorter than a message prefix")),
    };
    let meta_end = usize::try_from(meta_len)
        .ok()
        .and_then(|l| l.checked_add(meta_start))
        .filter(|&e| e <= message.len())
        .ok_or_else(|| ipc_bad("metadata length runs past the payload"))?;
    Ok((&message[meta_start..meta_end], &message[meta_end..]))
}

/// The record-batch header of an uncompressed message's metadata.
fn uncompressed_batch(
    meta: &[u8],
) -> Result<(arrow_ipc::Message<'_>, arrow_ipc::RecordBatch<'_>), ArrowError> {
    let message = arrow_ipc::root_as_message(meta).map_err(bad)?;
    let batch = message
        .header_as_record_batch()
        .ok_or_else(|| bad("not a record-batch message"))?;
    if batch.compression().is_some() {
        return Err(bad("metadata names a body compression"));
    }
    Ok((message, batch))
}

/// Codes an uncompressed encapsulated IPC record-batch message (as Arrow's stream writer makes
/// it without compression) into a version-3 payload.
pub fn encode(schema: &SchemaRef, message: &[u8], codec: Codec) -> Result<Vec<u8>, ArrowError> {
    let (meta, body) = split_message(message)?;
    let (_, batch) = uncompressed_batch(meta)?;
    let buffers = batch.buffers().ok_or_else(|| bad("no buffer list"))?;
    if body.len() > MAX_BODY {
        return Err(bad(
            "a frame of more than 1 GiB uncompressed: cut it into smaller frames",
        ));
    }
    let hints = buffer_map(schema, &batch)?;
    let meta_len = u32::try_from(meta.len()).map_err(|_| bad("metadata of 4 GiB or more"))?;
    let mut jobs = Vec::with_capacity(buffers.len());
    for (k, b) in buffers.iter().enumerate() {
        let start = usize::try_from(b.offset()).map_err(|_| bad("negative buffer offset"))?;
        let len = usize::try_from(b.length()).map_err(|_| bad("negative buffer length"))?;
        let bytes = start
            .checked_add(len)
            .and_then(|end| body.get(start..end))
            .ok_or_else(|| bad(format!("buffer {k} runs past the body")))?;
        let hint = hints.get(k).map_or(Hint::None, |h| h.1);
        jobs.push((bytes, hint));
    }
    let records = encode_buffers(&jobs, codec)?;
    let mut out = Vec::with_capacity(4 + meta.len() + records.iter().map(Vec::len).sum::<usize>());
    out.extend_from_slice(&meta_len.to_le_bytes());
    out.extend_from_slice(meta);
    for r in &records {
        out.extend_from_slice(r);
    }
    Ok(out)
}

/// The records of `jobs` (each buffer with its hint), in their order. A frame of 1 MiB or more
/// is coded on several threads (as many as the machine has, at most 4), largest buffers first:
/// LZMA2 is slow, and a pack's frames are large.
fn encode_buffers(jobs: &[(&[u8], Hint)], codec: Codec) -> Result<Vec<Vec<u8>>, ArrowError> {
    let total: usize = jobs.iter().map(|j| j.0.len()).sum();
    let threads = if total >= 1 << 20 {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
    } else {
        1
    };
    let one = |k: usize| -> Result<Vec<u8>, ArrowError> {
        let mut rec = Vec::new();
        let (bytes, hint) = jobs[k];
        encode_buffer(bytes, hint, codec, &mut rec)?;
        Ok(rec)
    };
    if threads <= 1 || jobs.len() <= 1 {
        return (0..jobs.len()).map(one).collect();
    }
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&k| std::cmp::Reverse(jobs[k].0.len()));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut records: Vec<Option<Vec<u8>>> = vec![None; jobs.len()];
    std::thread::scope(|s| -> Result<(), ArrowError> {
        let workers: Vec<_> = (0..threads.min(jobs.len()))
            .map(|_| {
                s.spawn(|| -> Result<Vec<(usize, Vec<u8>)>, ArrowError> {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&k) = order.get(i) else {
                            return Ok(done);
                        };
                        done.push((k, one(k)?));
                    }
                })
            })
            .collect();
        for w in workers {
            let done = w
                .join()
                .map_err(|_| bad("a coding thread panicked (a bug: please report it)"))??;
            for (k, rec) in done {
                if let Some(slot) = records.get_mut(k) {
                    *slot = Some(rec);
                }
            }
        }
        Ok(())
    })?;
    records
        .into_iter()
        .map(|r| r.ok_or_else(|| bad("a buffer was not coded (a bug: please report it)")))
        .collect()
}

/// The transformed bytes of a buffer and its record's transform fields.
struct Transformed {
    transform: u8,
    width: u8,
    stored_width: u8,
    delta: bool,
    base: i64,
    first: i64,
    bytes: Vec<u8>,
}

/// The values of a buffer of `e`-byte little-endian signed integers, sign-extended.
fn read_ints(bytes: &[u8], e: usize) -> Vec<i64> {
    match e {
        2 => bytes
            .chunks_exact(2)
            .map(|c| i64::from(i16::from_le_bytes([c[0], c[1]])))
            .collect(),
        4 => bytes
            .chunks_exact(4)
            .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        _ => bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
    }
}

/// Appends each value's low `w` bytes (little-endian).
fn write_narrow(values: impl Iterator<Item = u64>, w: usize, out: &mut Vec<u8>) {
    match w {
        0 => {}
        1 => out.extend(values.map(|u| u as u8)),
        2 => values.for_each(|u| out.extend_from_slice(&(u as u16).to_le_bytes())),
        4 => values.for_each(|u| out.extend_from_slice(&(u as u32).to_le_bytes())),
        8 => values.for_each(|u| out.extend_from_slice(&u.to_le_bytes())),
        _ => values.for_each(|u| out.extend_from_slice(&u.to_le_bytes()[..w])),
    }
}

/// Bytes needed for every value of `0..=range`.
fn width_of(range: u64) -> u8 {
    ((64 - range.leading_zeros()).div_ceil(8)) as u8
}

fn transform(bytes: &[u8], hint: Hint) -> Option<Transformed> {
    match hint {
        Hint::None => None,
        Hint::Integers(e) => {
            let ew = usize::from(e);
            if !bytes.len().is_multiple_of(ew) || bytes.is_empty() {
                return None;
            }
            let values = read_ints(bytes, ew);
            let (lo, hi) = values
                .iter()
                .fold((i64::MAX, i64::MIN), |(l, h), &v| (l.min(v), h.max(v)));
            let for_range = hi.wrapping_sub(lo) as u64;
            let (mut dlo, mut dhi) = (i64::MAX, i64::MIN);
            for w in values.windows(2) {
                let d = w[1].wrapping_sub(w[0]);
                dlo = dlo.min(d);
                dhi = dhi.max(d);
            }
            let delta_range = if values.len() > 1 {
                dhi.wrapping_sub(dlo) as u64
            } else {
                u64::MAX
            };
            let (for_w, delta_w) = (width_of(for_range), width_of(delta_range));
            let delta = delta_w < for_w;
            let stored_width = for_w.min(delta_w);
            if stored_width >= e && !delta {
                return None;
            }
            let sw = usize::from(stored_width);
            let (base, first, count) = if delta {
                (dlo, values[0], values.len() - 1)
            } else {
                (lo, 0, values.len())
            };
            let mut out = Vec::with_capacity(count * sw);
            if delta {
                let d = values
                    .windows(2)
                    .map(|w| w[1].wrapping_sub(w[0]).wrapping_sub(base) as u64);
                write_narrow(d, sw, &mut out);
            } else {
                let v = values.iter().map(|&v| v.wrapping_sub(base) as u64);
                write_narrow(v, sw, &mut out);
            }
            Some(Transformed {
                transform: INTEGERS,
                width: e,
                stored_width,
                delta,
                base,
                first,
                bytes: out,
            })
        }
    }
}

fn compress(bytes: &[u8], codec: Codec) -> Result<Vec<u8>, ArrowError> {
    match codec {
        Codec::Zstd(level) => zstd::bulk::compress(bytes, level)
            .map_err(|e| ArrowError::IpcError(format!("zstd: {e}"))),
        Codec::Xz(preset) => {
            let mut options = liblzma::stream::LzmaOptions::new_preset(preset.min(9))
                .map_err(|e| ArrowError::IpcError(format!("xz: {e}")))?;
            // The dictionary needs be no larger than the buffer, and the reader sizes its own
            // by the buffer (the raw stream does not say it).
            let dict = lzma_dict(bytes.len()).min(options_dict(preset));
            options.dict_size(dict);
            let mut filters = liblzma::stream::Filters::new();
            filters.lzma2(&options);
            let mut stream = liblzma::stream::Stream::new_raw_encoder(&filters)
                .map_err(|e| ArrowError::IpcError(format!("xz: {e}")))?;
            let mut out = Vec::with_capacity(bytes.len() / 2 + 64);
            loop {
                let consumed = usize::try_from(stream.total_in()).unwrap_or(usize::MAX);
                let rest = bytes.get(consumed..).unwrap_or_default();
                if out.len() == out.capacity() {
                    out.reserve(out.capacity().max(4096));
                }
                let status = stream
                    .process_vec(rest, &mut out, liblzma::stream::Action::Finish)
                    .map_err(|e| ArrowError::IpcError(format!("xz: {e}")))?;
                if status == liblzma::stream::Status::StreamEnd {
                    return Ok(out);
                }
            }
        }
    }
}

/// The dictionary of a preset (xz's table).
fn options_dict(preset: u32) -> u32 {
    match preset {
        0 => 256 << 10,
        1 => 1 << 20,
        2 => 2 << 20,
        3 | 4 => 4 << 20,
        5 | 6 => 8 << 20,
        7 => 16 << 20,
        8 => 32 << 20,
        _ => 64 << 20,
    }
}

/// The dictionary for a buffer of `len` bytes: its length, at least LZMA2's minimum (4 KiB),
/// at most 1 GiB (no buffer of a frame is longer).
fn lzma_dict(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX).clamp(4096, 1 << 30)
}

fn encode_buffer(
    bytes: &[u8],
    hint: Hint,
    codec: Codec,
    out: &mut Vec<u8>,
) -> Result<(), ArrowError> {
    if !bytes.is_empty() && bytes.iter().all(|&b| b == 0) {
        out.extend_from_slice(&[ZEROS, NO_TRANSFORM, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&[0u8; RECORD_HEADER - 8]);
        return Ok(());
    }
    let t = if bytes.len() < SMALL {
        None
    } else {
        transform(bytes, hint)
    };
    let plain: &[u8] = t.as_ref().map_or(bytes, |t| &t.bytes);
    let packed = if plain.len() < SMALL {
        None
    } else {
        Some(compress(plain, codec)?).filter(|c| c.len() < plain.len())
    };
    let (codec_byte, data) = match &packed {
        Some(c) => (
            match codec {
                Codec::Zstd(_) => ZSTD,
                Codec::Xz(_) => LZMA2,
            },
            c.as_slice(),
        ),
        None => (STORED, plain),
    };
    let len = u32::try_from(data.len()).map_err(|_| bad("a buffer of 4 GiB or more"))?;
    out.push(codec_byte);
    match &t {
        Some(t) => {
            out.extend_from_slice(&[t.transform, t.width, t.stored_width, u8::from(t.delta)]);
            out.extend_from_slice(&[0, 0, 0]);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&t.base.to_le_bytes());
            out.extend_from_slice(&t.first.to_le_bytes());
        }
        None => {
            out.extend_from_slice(&[NO_TRANSFORM, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&[0u8; 16]);
        }
    }
    out.extend_from_slice(data);
    Ok(())
}

/// Decompresses `data` into exactly `out` (its whole length): an error if the stream holds
/// less or more.
fn decompress_into(codec: u8, data: &[u8], out: &mut [u8]) -> Result<(), ArrowError> {
    let len = out.len();
    match codec {
        STORED => {
            if data.len() != len {
                return Err(bad(format!(
                    "a stored buffer of {} bytes where {len} are due",
                    data.len()
                )));
            }
            out.copy_from_slice(data);
        }
        ZSTD => {
            let n = zstd::bulk::Decompressor::new()
                .and_then(|mut d| d.decompress_to_buffer(data, out))
                .map_err(|e| bad(format!("zstd (a buffer of {len} bytes due): {e}")))?;
            if n != len {
                return Err(bad(format!(
                    "a zstd buffer of {n} bytes where {len} are due"
                )));
            }
        }
        ZEROS => {
            if !data.is_empty() {
                return Err(bad("a buffer of zeros that stores bytes"));
            }
            out.fill(0);
        }
        LZMA2 => {
            let mut options =
                liblzma::stream::LzmaOptions::new_preset(0).map_err(|e| bad(format!("xz: {e}")))?;
            // No writer's dictionary is larger than the buffer or than preset 9's 64 MiB.
            options.dict_size(lzma_dict(len).min(64 << 20));
            let mut filters = liblzma::stream::Filters::new();
            filters.lzma2(&options);
            let mut stream = liblzma::stream::Stream::new_raw_decoder(&filters)
                .map_err(|e| bad(format!("xz: {e}")))?;
            let mut spare = [0u8; 1];
            loop {
                let (read, written) = (stream.total_in(), stream.total_out());
                let at_in = usize::try_from(read).unwrap_or(usize::MAX);
                let at_out = usize::try_from(written).unwrap_or(usize::MAX);
                let input = data.get(at_in..).unwrap_or_default();
                // Past the end of `out`, one spare byte: a stream that fills it is too long.
                let dst: &mut [u8] = match out.get_mut(at_out..) {
                    Some(rest) if !rest.is_empty() => rest,
                    _ => &mut spare,
                };
                let status = stream
                    .process(input, dst, liblzma::stream::Action::Finish)
                    .map_err(|e| bad(format!("xz: {e}")))?;
                if stream.total_out() > len as u64 {
                    return Err(bad(format!("an xz buffer longer than the {len} bytes due")));
                }
                if status == liblzma::stream::Status::StreamEnd {
                    break;
                }
                if (stream.total_in(), stream.total_out()) == (read, written) {
                    return Err(bad("an xz buffer that ends early"));
                }
            }
            if stream.total_out() != len as u64 {
                return Err(bad(format!(
                    "an xz buffer of {} bytes where {len} are due",
                    stream.total_out()
                )));
            }
            if stream.total_in() != data.len() as u64 {
                return Err(bad("bytes after the end of an xz buffer"));
            }
        }
        other => return Err(bad(format!("unknown compressor {other}"))),
    }
    Ok(())
}

/// Undoes a transform into `dst` (exactly the buffer's length).
fn untransform(head: &[u8; RECORD_HEADER], plain: &[u8], dst: &mut [u8]) -> Result<(), ArrowError> {
    let (transform, e, sw, flags) = (head[1], usize::from(head[2]), usize::from(head[3]), head[4]);
    let mut base = [0u8; 8];
    base.copy_from_slice(&head[12..20]);
    let base = i64::from_le_bytes(base);
    let mut first = [0u8; 8];
    first.copy_from_slice(&head[20..28]);
    let first = i64::from_le_bytes(first);
    match transform {
        NO_TRANSFORM => {
            if plain.len() != dst.len() {
                return Err(bad("a buffer of the wrong length"));
            }
            dst.copy_from_slice(plain);
        }
        INTEGERS => {
            if !matches!(e, 2 | 4 | 8) || sw > e || flags > 1 || !dst.len().is_multiple_of(e) {
                return Err(bad("an integer buffer with impossible widths"));
            }
            let n = dst.len() / e;
            let delta = flags == 1;
            if !delta && first != 0 {
                return Err(bad(
                    "an integer buffer with a first value but no differences",
                ));
            }
            let count = if delta { n.saturating_sub(1) } else { n };
            if n == 0 || plain.len() != count.saturating_mul(sw) {
                return Err(bad("an integer buffer of the wrong length"));
            }
            // Straight into `dst`, value by value: no buffer of 8 bytes a value beside it.
            let stored = |k: usize| -> u64 {
                match sw {
                    0 => 0,
                    1 => u64::from(plain[k]),
                    2 => u64::from(u16::from_le_bytes([plain[2 * k], plain[2 * k + 1]])),
                    4 => {
                        let c = &plain[4 * k..4 * k + 4];
                        u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    }
                    _ => {
                        let mut x = [0u8; 8];
                        x[..sw].copy_from_slice(&plain[sw * k..sw * (k + 1)]);
                        u64::from_le_bytes(x)
                    }
                }
            };
            let mut v = first;
            for (i, out) in dst.chunks_exact_mut(e).enumerate() {
                v = if !delta {
                    base.wrapping_add(stored(i) as i64)
                } else if i == 0 {
                    first
                } else {
                    v.wrapping_add(base.wrapping_add(stored(i - 1) as i64))
                };
                out.copy_from_slice(&v.to_le_bytes()[..e]);
            }
        }
        other => return Err(bad(format!("unknown transform {other}"))),
    }
    Ok(())
}

/// Bytes of a buffer's transformed form, from its record header and its length in the body.
fn transformed_len(head: &[u8; RECORD_HEADER], len: usize) -> Result<usize, ArrowError> {
    if head[1] != INTEGERS {
        return Ok(len);
    }
    let (e, sw) = (usize::from(head[2]), usize::from(head[3]));
    if !matches!(e, 2 | 4 | 8) || sw > e {
        return Err(bad("an integer buffer with impossible widths"));
    }
    let n = len / e;
    let count = if head[4] == 1 { n.saturating_sub(1) } else { n };
    Ok(count.saturating_mul(sw))
}

/// Decodes a version-3 payload: the record batch of `schema` it holds, with only the columns
/// `projection` names (indices into `schema`, in the order wanted) when given; the other
/// columns' buffers are not decompressed.
pub fn decode(
    schema: &SchemaRef,
    payload: &[u8],
    projection: Option<&[usize]>,
) -> Result<RecordBatch, ArrowError> {
    let meta_len = payload
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(|| bad("shorter than its metadata length"))?;
    let meta = payload
        .get(4..4usize.saturating_add(meta_len))
        .ok_or_else(|| bad("metadata runs past the payload"))?;
    let (message, batch) = uncompressed_batch(meta)?;
    check_variadic(schema, &batch)?;
    let buffers = batch.buffers().ok_or_else(|| bad("no buffer list"))?;
    let body_len = usize::try_from(message.bodyLength())
        .ok()
        .filter(|&l| l <= MAX_BODY)
        .ok_or_else(|| bad("a body of more than 1 GiB"))?;
    let rows = usize::try_from(batch.length()).map_err(|_| bad("a negative row count"))?;
    let map = buffer_map(schema, &batch)?;
    check_lengths(&batch, &map)?;
    let wanted: Option<Vec<bool>> =
        projection.map(|p| map.iter().map(|(col, ..)| p.contains(col)).collect());
    // Built buffer by buffer, each where the metadata puts it: Arrow's writer leaves at most
    // 63 bytes of padding between buffers, so the body grows with what is decoded, not with
    // what the metadata claims.
    let mut body: Vec<u8> = Vec::new();
    let mut at = 4 + meta_len;
    for (k, b) in buffers.iter().enumerate() {
        let head: &[u8; RECORD_HEADER] = payload
            .get(at..at.saturating_add(RECORD_HEADER))
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| bad(format!("buffer {k}'s record runs past the payload")))?;
        if head[5..8] != [0, 0, 0] {
            return Err(bad(format!("buffer {k}'s record has reserved bytes set")));
        }
        let stored = u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize;
        let data_at = at + RECORD_HEADER;
        let data = payload
            .get(data_at..data_at.saturating_add(stored))
            .ok_or_else(|| bad(format!("buffer {k} runs past the payload")))?;
        at = data_at + stored;
        let start = usize::try_from(b.offset()).map_err(|_| bad("negative buffer offset"))?;
        let len = usize::try_from(b.length()).map_err(|_| bad("negative buffer length"))?;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= body_len && start >= body.len() && start - body.len() < 64)
            .ok_or_else(|| bad(format!("buffer {k} is not where the body continues")))?;
        if wanted
            .as_ref()
            .is_some_and(|w| !w.get(k).copied().unwrap_or(true))
        {
            body.resize(end, 0);
            continue;
        }
        if head[1] == INTEGERS && head[2] > 0 && len / usize::from(head[2]) > rows.saturating_add(1)
        {
            return Err(bad(format!(
                "buffer {k} holds more values than the batch has rows"
            )));
        }
        if head[0] == ZEROS && head[1] != NO_TRANSFORM {
            return Err(bad(format!("buffer {k}: zeros with a transform")));
        }
        if head[1] == NO_TRANSFORM && (head[2..5] != [0, 0, 0] || head[12..28] != [0u8; 16]) {
            return Err(bad(format!(
                "buffer {k}: transform fields set without a transform"
            )));
        }
        body.resize(end, 0);
        let dst = &mut body[start..end];
        if head[1] == NO_TRANSFORM {
            // Straight into the body: no copy.
            decompress_into(head[0], data, dst).map_err(|e| bad(format!("buffer {k}: {e}")))?;
            continue;
        }
        let mut plain = vec![0u8; transformed_len(head, len)?];
        decompress_into(head[0], data, &mut plain).map_err(|e| bad(format!("buffer {k}: {e}")))?;
        untransform(head, &plain, dst).map_err(|e| bad(format!("buffer {k}: {e}")))?;
    }
    if at != payload.len() {
        return Err(bad("bytes after the last buffer"));
    }
    arrow_ipc::reader::read_record_batch(
        &Buffer::from_vec(body),
        batch,
        schema.clone(),
        &HashMap::new(),
        projection,
        &message.version(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_widths() {
        assert_eq!(width_of(0), 0);
        assert_eq!(width_of(255), 1);
        assert_eq!(width_of(256), 2);
        assert_eq!(width_of(u64::MAX), 8);
    }

    #[test]
    fn integers_round_trip_through_both_forms() {
        for values in [
            vec![5i64; 40],
            (0..40).map(|k| 1_700_000_000_000_000 + k * 1000).collect(),
            [i64::MIN, i64::MAX, 0, -1].repeat(10),
            [3, -7, 120, 0].repeat(10),
        ] {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let mut out = Vec::new();
            encode_buffer(&bytes, Hint::Integers(8), Codec::Zstd(3), &mut out).unwrap();
            let head: [u8; RECORD_HEADER] = out[..RECORD_HEADER].try_into().unwrap();
            let mut plain = vec![0u8; transformed_len(&head, bytes.len()).unwrap()];
            decompress_into(head[0], &out[RECORD_HEADER..], &mut plain).unwrap();
            let mut back = vec![0u8; bytes.len()];
            untransform(&head, &plain, &mut back).unwrap();
            assert_eq!(back, bytes, "{values:?}");
        }
    }
}
