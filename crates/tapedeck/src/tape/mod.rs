//! The tape: a checksummed, segmented, group-committed log of Arrow record batches.
//!
//! Layout on disk: `docs/tape-format.md`. The pieces, in the order data flows:
//! [`format`] (bytes), [`codec`] (Arrow IPC payloads), [`storage`] (I/O, with a crashable
//! in-memory double), [`writer`] (append, group commit, segment roll, recovery on open),
//! [`manifest`] (the journal), [`segment`] (scans), [`reader`] (positions, follow), [`verify`]
//! (CRCs, hash chain, summary). [`TapeSink`] puts a tape behind the [`Sink`] trait so `pipe`
//! can record onto it alongside other sinks.

pub mod acked;
pub mod codec;
pub mod format;
pub mod id;
pub mod manifest;
pub mod reader;
pub mod segment;
pub mod storage;
pub mod verify;
pub mod writer;

use arrow_array::RecordBatch;

pub use format::Compression;
pub use reader::{StartAt, TapeReader};
pub use writer::{FsyncPolicy, Recovery, TapeOptions, TapeWatch, TapeWriter};

use crate::error::Result;
use crate::sink::{Sink, SinkStats};

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
        self.writer
            .as_ref()
            .ok_or_else(|| crate::Error::SinkClosed {
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
