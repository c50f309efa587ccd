//! Nothing to resume: `memory:` and `null:` outlive no process, so they start where the
//! delivery starts.

use arrow_array::RecordBatch;

use crate::deliver::destination::{Destination, write_tape_batch};
use crate::error::Result;
use crate::sink::{Sink, SinkStats};

/// `memory:` and `null:`: nothing survives the process, so nothing to resume.
pub(crate) struct Nothing {
    name: String,
    sink: Box<dyn Sink>,
    start: u64,
    committed: Option<u64>,
}

impl Destination for Nothing {
    fn name(&self) -> &str {
        &self.name
    }

    fn resume_at(&self) -> u64 {
        self.start
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        write_tape_batch(self.sink.as_mut(), batch)
    }

    fn commit(&mut self, end: u64) -> Result<()> {
        self.sink.flush()?;
        self.committed = Some(end);
        Ok(())
    }

    fn committed(&self) -> Option<u64> {
        self.committed
    }

    fn finish(&mut self, end: u64) -> Result<()> {
        self.sink.close()?;
        self.committed = Some(end);
        Ok(())
    }

    fn stats(&self) -> SinkStats {
        self.sink.stats()
    }
}

impl Nothing {
    pub(crate) fn new(sink: Box<dyn Sink>, start: u64) -> Nothing {
        Nothing {
            name: sink.name().to_string(),
            sink,
            start,
            committed: None,
        }
    }
}
