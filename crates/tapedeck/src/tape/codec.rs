//! Arrow batches to frame payloads and back: encapsulated Arrow IPC messages.
//!
//! A segment header carries the IPC schema message; each frame carries one IPC record-batch
//! message, its buffers compressed with Arrow's own IPC body compression (LZ4 frame or zstd), so
//! a payload is standard Arrow IPC. [`BatchEncoder`] is one IPC stream writer per segment whose
//! output is cut at message boundaries; [`BatchDecoder`] is one IPC stream decoder primed with the
//! segment's schema message.

use std::sync::Arc;

use arrow_array::Array;
use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::CompressionType;
use arrow_ipc::reader::StreamDecoder;
use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_schema::{ArrowError, DataType, SchemaRef};

use super::format::Compression;
use crate::record::time::micros_array;

fn options(compression: Compression) -> Result<IpcWriteOptions, ArrowError> {
    let codec = match compression {
        Compression::None => None,
        Compression::Lz4 => Some(CompressionType::LZ4_FRAME),
        Compression::Zstd => Some(CompressionType::ZSTD),
    };
    IpcWriteOptions::default().try_with_compression(codec)
}

/// Encodes the batches of one segment.
pub struct BatchEncoder {
    writer: StreamWriter<Vec<u8>>,
    schema_message: Vec<u8>,
    compression: Compression,
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
        let mut writer =
            StreamWriter::try_new_with_options(Vec::new(), schema, options(compression)?)?;
        let schema_message = std::mem::take(writer.get_mut());
        Ok(BatchEncoder {
            writer,
            schema_message,
            compression,
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

    /// The IPC record-batch message of `batch`.
    pub fn encode(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
        self.writer.write(batch)?;
        Ok(std::mem::take(self.writer.get_mut()))
    }
}

/// Decodes the frames of one segment.
pub struct BatchDecoder {
    decoder: StreamDecoder,
    schema: SchemaRef,
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
        let mut decoder = StreamDecoder::new();
        // The decoder registers a schema message when the next message arrives (the schema's
        // empty body is only consumed then), so it is fed here and checked above.
        let mut buf = Buffer::from(schema_message);
        while !buf.is_empty() {
            if decoder.decode(&mut buf)?.is_some() {
                return Err(ArrowError::IpcError(
                    "a segment's schema message holds a batch".into(),
                ));
            }
        }
        Ok(BatchDecoder { decoder, schema })
    }

    /// The segment's schema.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Decodes one frame payload.
    pub fn decode(&mut self, payload: &[u8]) -> Result<RecordBatch, ArrowError> {
        self.decode_buffer(Buffer::from(payload))
    }

    /// Like [`BatchDecoder::decode`], on a payload already in a `Buffer`: an uncompressed
    /// frame's columns then point into it (no copy, where aligned), and keep it alive.
    pub fn decode_buffer(&mut self, payload: Buffer) -> Result<RecordBatch, ArrowError> {
        let mut buf = payload;
        let mut out = None;
        while !buf.is_empty() {
            if let Some(b) = self.decoder.decode(&mut buf)? {
                out = Some(b);
            }
        }
        out.ok_or_else(|| ArrowError::IpcError("frame payload holds no record batch".into()))
    }
}

/// Decodes only the columns `projection` names (indices into the segment's `schema`, in
/// the order wanted) of one frame payload: the buffers of the other columns are skipped,
/// not decompressed, and uncompressed buffers are used in place (no copy, where aligned). An
/// empty projection gives a batch with the frame's row count and no columns.
pub fn decode_projected(
    schema: &SchemaRef,
    payload: &Buffer,
    projection: &[usize],
) -> Result<RecordBatch, ArrowError> {
    let bad = |what: &str| ArrowError::IpcError(format!("frame payload: {what}"));
    // An encapsulated message: continuation marker, metadata length, metadata, body.
    let (meta_start, meta_len) = match payload.as_slice() {
        [0xff, 0xff, 0xff, 0xff, a, b, c, d, ..] => (8, i32::from_le_bytes([*a, *b, *c, *d])),
        [a, b, c, d, ..] => (4, i32::from_le_bytes([*a, *b, *c, *d])),
        _ => return Err(bad("shorter than a message prefix")),
    };
    let meta_end = usize::try_from(meta_len)
        .ok()
        .and_then(|l| l.checked_add(meta_start))
        .filter(|&e| e <= payload.len())
        .ok_or_else(|| bad("metadata length runs past the payload"))?;
    let message = arrow_ipc::root_as_message(&payload[meta_start..meta_end])
        .map_err(|e| bad(&format!("metadata does not parse: {e}")))?;
    let batch = message
        .header_as_record_batch()
        .ok_or_else(|| bad("not a record-batch message"))?;
    let body_end = usize::try_from(message.bodyLength())
        .ok()
        .and_then(|l| l.checked_add(meta_end))
        .filter(|&e| e <= payload.len())
        .ok_or_else(|| bad("body length runs past the payload"))?;
    let body = payload.slice_with_length(meta_end, body_end - meta_end);
    arrow_ipc::reader::read_record_batch(
        &body,
        batch,
        schema.clone(),
        &std::collections::HashMap::new(),
        Some(projection),
        &message.version(),
    )
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

/// The batch's event times: its first timestamp column, in µs.
fn event_times(batch: &RecordBatch) -> Option<arrow_array::TimestampMicrosecondArray> {
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
