//! Cursor in the same transaction: SQLite, PostgreSQL and the Parquet directory keep the
//! cursor themselves, moving it with the transactions (or finished parts) that commit their
//! rows; a delivery only asks them where they stand.

use arrow_array::RecordBatch;

use crate::deliver::destination::{Destination, write_tape_batch};
use crate::error::Result;
use crate::sink::SinkStats;
use crate::sink::resume::{CursorSink, WithCursor};

/// A sink that keeps its own cursor, as a delivery's destination.
pub(crate) struct CursorInTransaction {
    name: String,
    sink: Box<dyn CursorSink>,
    resume: u64,
    /// A Parquet directory's lock (see `crate::sink::resume::lock_destination`); databases
    /// keep their own (the cursor row moves only from the value this delivery last committed).
    _lock: Option<std::fs::File>,
}

impl CursorInTransaction {
    pub(crate) fn new(opened: WithCursor) -> CursorInTransaction {
        CursorInTransaction {
            name: opened.sink.name().to_string(),
            sink: opened.sink,
            resume: opened.resume,
            _lock: opened.lock,
        }
    }
}

impl Destination for CursorInTransaction {
    fn name(&self) -> &str {
        &self.name
    }

    fn resume_at(&self) -> u64 {
        self.resume
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        write_tape_batch(self.sink.as_mut(), batch)
    }

    fn commit(&mut self, _end: u64) -> Result<()> {
        self.sink.flush()
    }

    fn committed(&self) -> Option<u64> {
        self.sink.committed_cursor()
    }

    fn finish(&mut self, _end: u64) -> Result<()> {
        self.sink.close()
    }

    fn skip(&mut self, rows: u64) {
        self.sink.skip_cursor(rows);
    }

    fn stats(&self) -> SinkStats {
        self.sink.stats()
    }
}
