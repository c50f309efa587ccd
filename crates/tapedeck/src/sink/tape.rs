//! The tape as a sink: `pipe` records onto a tape alongside other sinks through this adapter.
//!
//! It lives here, not in `tape/`, because the tape is a lower layer than the sinks: the tape
//! module is the format and its writer, and knows no `Sink` trait (see `docs/architecture.md`).

use arrow_array::RecordBatch;

use super::{Sink, SinkStats};
use crate::error::{Error, Result};
use crate::tape::{Recovery, TapeOptions, TapeWriter};

/// A tape as a sink: `write` submits the batch (acknowledged asynchronously under the fsync
/// policy), `flush` does not wait, `close` makes everything durable and seals the segment.
#[derive(Debug)]
pub struct TapeSink {
    name: String,
    writer: Option<TapeWriter>,
    start_seq: u64,
    rows: u64,
    /// Bytes added to the tape, as last seen (kept after the writer closes).
    bytes: u64,
}

impl TapeSink {
    /// Opens (creating or recovering) the tape in `dir`.
    pub fn open(dir: impl AsRef<std::path::Path>, options: TapeOptions) -> Result<TapeSink> {
        let dir = dir.as_ref();
        let writer = TapeWriter::open(dir, options)?;
        Ok(TapeSink::from_writer(
            format!("tape:{}", dir.display()),
            writer,
        ))
    }

    /// Wraps an open writer.
    pub fn from_writer(name: String, writer: TapeWriter) -> TapeSink {
        let start_seq = writer.next_seq();
        TapeSink {
            name,
            writer: Some(writer),
            start_seq,
            rows: 0,
            bytes: 0,
        }
    }

    /// What recovery did when the tape was opened.
    pub fn recovery(&self) -> Option<&Recovery> {
        self.writer.as_ref().map(TapeWriter::recovery)
    }

    /// Rows of this run acknowledged (durable under the policy) so far.
    pub fn acknowledged(&self) -> u64 {
        self.writer.as_ref().map_or(self.rows, |w| {
            w.durable_seq().saturating_sub(self.start_seq)
        })
    }

    /// A handle to read the acknowledged count while the sink runs in `pipe`.
    pub fn writer(&self) -> Option<&TapeWriter> {
        self.writer.as_ref()
    }

    fn open_writer(&self) -> Result<&TapeWriter> {
        self.writer.as_ref().ok_or_else(|| Error::SinkClosed {
            sink: self.name.clone(),
        })
    }
}

impl Sink for TapeSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let writer = self.open_writer()?;
        writer.submit(batch)?;
        self.bytes = writer.bytes();
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.open_writer().map(|_| ())
    }

    fn close(&mut self) -> Result<()> {
        match self.writer.take() {
            Some(w) => {
                let watch = w.watch();
                let closed = w.close();
                self.bytes = watch.bytes();
                closed
            }
            None => Ok(()),
        }
    }

    fn stats(&self) -> SinkStats {
        SinkStats {
            rows: self.rows,
            bytes: self.bytes,
            pending: 0,
        }
    }
}
