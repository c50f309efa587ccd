//! Arrow batches to frame payloads and back: encapsulated Arrow IPC messages.
//!
//! A segment header carries the IPC schema message; each frame carries one IPC record-batch
//! message, its buffers compressed with Arrow's own IPC body compression (LZ4 frame or zstd), so
//! a payload is standard Arrow IPC. [`BatchEncoder`] is one IPC stream writer per segment whose
//! output is cut at message boundaries; [`BatchDecoder`] is one IPC stream decoder primed with the
//! segment's schema message.
//!
//! **Time as differences** (frame format version 2): when a frame's buffers are compressed, each
//! column of Arrow type `Timestamp` is stored as its first value followed by the differences
//! between neighbouring values (64-bit, wrapping), and a reader restores the values by a running
//! sum. Sample times step by a nearly constant period, so the differences repeat and zstd stores
//! them in a few bytes where the values themselves take several bytes each (alicat rows: 9.6 →
//! 5.1 bytes a row, and faster to compress and decompress — BENCHMARKS.md). Uncompressed frames
//! keep the values (they are read in place, without a copy).

use std::sync::Arc;

use arrow_array::Array;
use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::CompressionType;
use arrow_ipc::reader::StreamDecoder;
use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_schema::{ArrowError, DataType, SchemaRef};

use super::columns::{self, Codec};
use super::format::{Coding, Compression};
use crate::record::time::micros_array;

fn options(compression: Compression, level: Option<i32>) -> Result<IpcWriteOptions, ArrowError> {
    let codec = match compression {
        // Coded buffers are made from the uncompressed message.
        Compression::None | Compression::CodedZstd | Compression::CodedXz => None,
        Compression::Lz4 => Some(CompressionType::LZ4_FRAME),
        Compression::Zstd => Some(CompressionType::ZSTD),
    };
    let options = IpcWriteOptions::default().try_with_compression(codec)?;
    match (compression, level) {
        // The level only changes how hard the encoder works: a reader needs nothing to know it.
        (Compression::Zstd, Some(level)) => options.try_with_compression_level(Some(level)),
        _ => Ok(options),
    }
}

/// Encodes the batches of one segment.
pub struct BatchEncoder {
    writer: StreamWriter<Vec<u8>>,
    schema_message: Vec<u8>,
    compression: Compression,
    schema: SchemaRef,
    level: Option<i32>,
}

impl std::fmt::Debug for BatchEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchEncoder")
            .field("compression", &self.compression)
            .finish_non_exhaustive()
    }
}

impl BatchEncoder {
    /// An encoder for batches of `schema`.
    pub fn new(schema: &SchemaRef, compression: Compression) -> Result<BatchEncoder, ArrowError> {
        BatchEncoder::with_level(schema, compression, None)
    }

    /// An encoder for batches of `schema` whose zstd works at `level` (1–22; `None`: zstd's
    /// default, 3), or whose xz works at preset `level` (0–9; `None`: 6). LZ4 ignores it.
    pub fn with_level(
        schema: &SchemaRef,
        compression: Compression,
        level: Option<i32>,
    ) -> Result<BatchEncoder, ArrowError> {
        let mut writer =
            StreamWriter::try_new_with_options(Vec::new(), schema, options(compression, level)?)?;
        let schema_message = std::mem::take(writer.get_mut());
        Ok(BatchEncoder {
            writer,
            schema_message,
            compression,
            schema: schema.clone(),
            level,
        })
    }

    /// The IPC schema message for the segment header.
    pub fn schema_message(&self) -> &[u8] {
        &self.schema_message
    }

    /// The compression of the payloads.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The payload of `batch`, as it is stored (see the module docs), and how it holds it.
    pub fn encode(&mut self, batch: &RecordBatch) -> Result<(Vec<u8>, Coding), ArrowError> {
        let mut payload = Vec::new();
        let coding = self.encode_into(batch, &mut payload)?;
        Ok((payload, coding))
    }

    /// Like [`BatchEncoder::encode`], appending the payload to `out` (the tape writer's
    /// pending bytes: Arrow's writer writes into them, so the payload is not copied again). On
    /// an error `out` is as it was, and the encoder starts afresh (Arrow's writer may have
    /// counted a dictionary as sent that is not on the tape). A payload is checked as a reader
    /// will check it ([`columns::check_ipc_payload`]): the writer never writes a frame readers
    /// refuse, such as one whose buffers hold more than 4 GiB.
    pub fn encode_into(
        &mut self,
        batch: &RecordBatch,
        out: &mut Vec<u8>,
    ) -> Result<Coding, ArrowError> {
        let start = out.len();
        std::mem::swap(self.writer.get_mut(), out);
        // Swapped back before a panic goes on, so `out` (the tape's pending bytes) is never
        // left inside the encoder.
        // A panic in Arrow's writer is this batch's error: the caller then takes back what it
        // reserved for the frame and marks the tape writer failed.
        let r = guarded("writer", || self.write(batch));
        std::mem::swap(self.writer.get_mut(), out);
        let r = r.and_then(|(coded, coding)| match coded {
            Some(coded) => {
                out.truncate(start);
                out.extend_from_slice(&coded);
                Ok(coding)
            }
            None => {
                columns::check_ipc_payload(&self.schema, out.get(start..).unwrap_or_default())
                    .map_err(|e| {
                        ArrowError::InvalidArgumentError(format!(
                            "this batch cannot be a tape frame ({e}); write smaller batches"
                        ))
                    })?;
                Ok(coding)
            }
        });
        if r.is_err() {
            out.truncate(start);
            // Cannot fail where construction succeeded; if it did, the batch's own error is
            // still the one to report.
            if let Ok(fresh) = BatchEncoder::with_level(&self.schema, self.compression, self.level)
            {
                self.writer = fresh.writer;
            }
        }
        r
    }

    /// Writes `batch`'s IPC message into the writer's buffer; for coded frames, returns the
    /// coded payload made from it instead (`Some`).
    fn write(&mut self, batch: &RecordBatch) -> Result<(Option<Vec<u8>>, Coding), ArrowError> {
        let codec = match self.compression {
            Compression::CodedZstd => Some(Codec::Zstd(self.level.unwrap_or(3))),
            Compression::CodedXz => Some(Codec::Xz(
                self.level.map_or(6, |l| l.clamp(0, 9).unsigned_abs()),
            )),
            _ => None,
        };
        if let Some(codec) = codec {
            let start = self.writer.get_ref().len();
            self.writer.write(batch)?;
            let message = self.writer.get_ref().get(start..).unwrap_or_default();
            return Ok((
                Some(columns::encode(&self.schema, message, codec)?),
                Coding::Coded,
            ));
        }
        let deltas = self.compression != Compression::None && has_timestamps(&batch.schema());
        if deltas {
            self.writer.write(&map_timestamps(batch, to_deltas)?)?;
        } else {
            self.writer.write(batch)?;
        }
        let coding = if deltas {
            Coding::TimeDeltas
        } else {
            Coding::Ipc
        };
        Ok((None, coding))
    }
}

fn has_timestamps(schema: &SchemaRef) -> bool {
    schema
        .fields()
        .iter()
        .any(|f| matches!(f.data_type(), DataType::Timestamp(..)))
}

/// `batch` with every timestamp column's values passed through `f` (same type, same nulls).
fn map_timestamps(
    batch: &RecordBatch,
    f: fn(&[i64]) -> Vec<i64>,
) -> Result<RecordBatch, ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .map(|c| {
            if !matches!(c.data_type(), DataType::Timestamp(..)) {
                return Ok(c.clone());
            }
            let data = c.to_data();
            let values = data
                .buffers()
                .first()
                .map(|b| b.typed_data::<i64>())
                .unwrap_or(&[]);
            let values = values
                .get(data.offset()..data.offset().saturating_add(data.len()))
                .ok_or_else(|| {
                    ArrowError::IpcError("a timestamp column is shorter than its length".into())
                })?;
            let mapped = arrow_data::ArrayData::builder(c.data_type().clone())
                .len(data.len())
                .nulls(data.nulls().cloned())
                .add_buffer(Buffer::from_vec(f(values)))
                .build()?;
            Ok(arrow_array::make_array(mapped))
        })
        .collect::<Result<Vec<_>, ArrowError>>()?;
    RecordBatch::try_new_with_options(
        batch.schema(),
        columns,
        &arrow_array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
}

/// `v[0]`, then `v[i] − v[i−1]` (wrapping).
fn to_deltas(v: &[i64]) -> Vec<i64> {
    let mut prev = 0i64;
    v.iter()
        .map(|&x| {
            let d = x.wrapping_sub(prev);
            prev = x;
            d
        })
        .collect()
}

/// The running sum that undoes [`to_deltas`].
fn from_deltas(d: &[i64]) -> Vec<i64> {
    let mut acc = 0i64;
    d.iter()
        .map(|&x| {
            acc = acc.wrapping_add(x);
            acc
        })
        .collect()
}

/// A decoded frame with its timestamp columns restored, if the frame holds differences.
pub fn restore_time(batch: RecordBatch, coding: Coding) -> Result<RecordBatch, ArrowError> {
    if coding == Coding::TimeDeltas && has_timestamps(&batch.schema()) {
        map_timestamps(&batch, from_deltas)
    } else {
        Ok(batch)
    }
}

/// Decodes the frames of one segment.
pub struct BatchDecoder {
    decoder: StreamDecoder,
    schema: SchemaRef,
    /// To start a fresh decoder after a payload that failed (the old one would hold a part of
    /// it).
    schema_message: Vec<u8>,
}

impl std::fmt::Debug for BatchDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchDecoder").finish_non_exhaustive()
    }
}

impl BatchDecoder {
    /// A decoder primed with a segment's schema message.
    pub fn new(schema_message: &[u8]) -> Result<BatchDecoder, ArrowError> {
        let schema = Arc::new(arrow_ipc::convert::try_schema_from_ipc_buffer(
            schema_message,
        )?);
        Ok(BatchDecoder {
            decoder: primed(schema_message)?,
            schema,
            schema_message: schema_message.to_vec(),
        })
    }

    /// The segment's schema.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Decodes one frame payload (`coding`: from the frame header, [`FrameHeader::coding`](super::format::FrameHeader::coding)).
    pub fn decode(&mut self, payload: &[u8], coding: Coding) -> Result<RecordBatch, ArrowError> {
        if coding == Coding::Coded {
            return columns::decode(&self.schema, payload, None);
        }
        self.decode_buffer(Buffer::from(payload), coding)
    }

    /// Like [`BatchDecoder::decode`], on a payload already in a `Buffer`: an uncompressed
    /// frame's columns then point into it (no copy, where aligned), and keep it alive.
    pub fn decode_buffer(
        &mut self,
        payload: Buffer,
        coding: Coding,
    ) -> Result<RecordBatch, ArrowError> {
        if coding == Coding::Coded {
            return columns::decode(&self.schema, &payload, None);
        }
        // What Arrow's reader asserts or trusts, checked first (a crafted message must not
        // panic).
        columns::check_ipc_payload(&self.schema, &payload)?;
        let decoder = &mut self.decoder;
        let decoded = guarded("reader", move || {
            let mut buf = payload;
            let mut out = None;
            while !buf.is_empty() {
                if let Some(b) = decoder.decode(&mut buf)? {
                    out = Some(b);
                }
            }
            out.ok_or_else(|| ArrowError::IpcError("frame payload holds no record batch".into()))
        });
        if decoded.is_err() {
            // Arrow's decoder returns to its start only after a message that decodes: after a
            // failure it would read the next frame as the rest of this one. A fresh one for the
            // next frame (dictionaries of earlier frames are lost with it; tapedeck's sources
            // write none).
            if let Ok(fresh) = primed(&self.schema_message) {
                self.decoder = fresh;
            }
        }
        restore_time(decoded?, coding)
    }
}

/// A stream decoder that has read a segment's schema message.
fn primed(schema_message: &[u8]) -> Result<StreamDecoder, ArrowError> {
    let mut decoder = StreamDecoder::new();
    // The decoder registers a schema message when the next message arrives (the schema's
    // empty body is only consumed then), so it is fed here and checked by the caller.
    let mut buf = Buffer::from(schema_message);
    while !buf.is_empty() {
        if decoder.decode(&mut buf)?.is_some() {
            return Err(ArrowError::IpcError(
                "a segment's schema message holds a batch".into(),
            ));
        }
    }
    Ok(decoder)
}

/// Runs Arrow's IPC reader on a payload that passed [`columns::check_ipc_payload`]. What that
/// check cannot see without decompressing — a compressed buffer that decompresses to fewer
/// bytes than its length prefix says — makes Arrow's reader panic where it should return an
/// error (arrow-data's `ArrayDataBuilder::build` on a short validity bitmap); that panic is
/// turned into the error it should have been, so a damaged or crafted frame never ends the
/// process.
///
/// The same guard holds Arrow's writer (`side`: "reader" or "writer"), so a panic there is the
/// batch's error and the tape writer's pending bytes are never left half-changed.
fn guarded<T>(side: &str, f: impl FnOnce() -> Result<T, ArrowError>) -> Result<T, ArrowError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let why = crate::sync::panic_message(panic.as_ref()).unwrap_or("no message");
        Err(ArrowError::IpcError(format!(
            "frame payload: Arrow's {side} refused it ({why})"
        )))
    })
}

/// Decodes only the columns `projection` names (indices into the segment's `schema`, in
/// the order wanted) of one frame payload: the buffers of the other columns are skipped,
/// not decompressed, and uncompressed buffers are used in place (no copy, where aligned). An
/// empty projection gives a batch with the frame's row count and no columns.
pub fn decode_projected(
    schema: &SchemaRef,
    payload: &Buffer,
    projection: &[usize],
    coding: Coding,
) -> Result<RecordBatch, ArrowError> {
    if coding == Coding::Coded {
        return columns::decode(schema, payload, Some(projection));
    }
    let bad = |what: &str| ArrowError::IpcError(format!("frame payload: {what}"));
    columns::check_ipc_payload(schema, payload)?;
    let (meta, rest) = columns::split_message(payload)?;
    let meta_end = payload.len() - rest.len();
    let message = arrow_ipc::root_as_message(meta)
        .map_err(|e| bad(&format!("metadata does not parse: {e}")))?;
    let batch = message
        .header_as_record_batch()
        .ok_or_else(|| bad("not a record-batch message"))?;
    columns::check_variadic(schema, &batch)?;
    let body_end = usize::try_from(message.bodyLength())
        .ok()
        .and_then(|l| l.checked_add(meta_end))
        .filter(|&e| e <= payload.len())
        .ok_or_else(|| bad("body length runs past the payload"))?;
    let body = payload.slice_with_length(meta_end, body_end - meta_end);
    let decoded = guarded("reader", || {
        arrow_ipc::reader::read_record_batch(
            &body,
            batch,
            schema.clone(),
            &std::collections::HashMap::new(),
            Some(projection),
            &message.version(),
        )
    })?;
    restore_time(decoded, coding)
}

/// The first row at or after `from` whose event time (first timestamp column) reaches `t`
/// (µs); `None` when no row from `from` on does. A batch without a timestamp column starts at
/// `from`.
pub fn first_row_at(batch: &RecordBatch, t: i64, from: usize) -> Option<usize> {
    let Some(micros) = event_times(batch) else {
        return Some(from);
    };
    (from..micros.len()).find(|&k| micros.is_valid(k) && micros.value(k) >= t)
}

/// The batch's event times: its first timestamp column, in µs (`None` without one).
pub fn event_times(batch: &RecordBatch) -> Option<arrow_array::TimestampMicrosecondArray> {
    let (i, unit) = batch
        .schema()
        .fields()
        .iter()
        .enumerate()
        .find_map(|(i, f)| match f.data_type() {
            DataType::Timestamp(unit, _) => Some((i, *unit)),
            _ => None,
        })?;
    Some(micros_array(batch.column(i), unit))
}

/// The event-time range of a batch: min and max (µs) of its first timestamp column.
pub fn time_range(batch: &RecordBatch) -> Option<(i64, i64)> {
    let micros = event_times(batch)?;
    let mut range: Option<(i64, i64)> = None;
    for v in micros.iter().flatten() {
        range = Some(match range {
            None => (v, v),
            Some((lo, hi)) => (lo.min(v), hi.max(v)),
        });
    }
    range
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_arrows_reader_becomes_an_error_naming_it() {
        let r: Result<(), ArrowError> = guarded("reader", || {
            panic!("buffer not large enough (bit_offset: 0, bit_len: 300)")
        });
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("frame payload") && e.contains("bit_len: 300"),
            "{e}"
        );
        assert!(matches!(guarded("reader", || Ok(7)), Ok(7)));
        assert!(guarded::<()>("writer", || Err(ArrowError::IpcError("plain".into()))).is_err());
    }
}
