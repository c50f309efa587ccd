//! `null:` — accepts everything and keeps nothing; for benchmarks and dry runs.

use std::sync::Arc;

use arrow_array::RecordBatch;

use super::descriptor::SinkDescriptor;
use super::resume::ResumeBy;
use super::spec::SinkConfig;
use super::{Lifecycle, Sink, SinkStats};
use crate::error::Result;
use crate::record::Block;
use crate::uri::Uri;

/// `null:`; see [`super::descriptor`].
pub const DESCRIPTOR: SinkDescriptor = SinkDescriptor {
    schemes: &["null"],
    usage: "null:",
    example: "null:",
    summary: "discarded (benchmarks)",
    path_example: None,
    params: &[],
    feature: None,
    compiled_in: true,
    parse: Some(parse),
};

/// Discards batches, counting rows (bytes stay 0: nothing is stored).
#[derive(Debug)]
pub struct NullSink {
    life: Lifecycle,
    rows: u64,
}

impl Default for NullSink {
    fn default() -> Self {
        NullSink::new()
    }
}

impl NullSink {
    /// A new null sink.
    pub fn new() -> NullSink {
        NullSink {
            life: Lifecycle::new("null:"),
            rows: 0,
        }
    }
}

impl Sink for NullSink {
    fn name(&self) -> &str {
        self.life.name()
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.life.check_open()?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    fn write_block(&mut self, block: &Block) -> Result<()> {
        self.life.check_open()?;
        block.validate()?;
        self.rows += block.samples as u64;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.life.check_open()
    }

    fn close(&mut self) -> Result<()> {
        self.life.begin_close();
        Ok(())
    }

    fn stats(&self) -> SinkStats {
        SinkStats {
            rows: self.rows,
            bytes: 0,
            pending: 0,
        }
    }
}
/// `null:` read: it has no path and no parameters.
#[derive(Debug, Clone, Copy)]
struct NullConfig;

/// Reads a `null:` URI (the registry's `parse`).
fn parse(uri: &mut Uri) -> Result<Arc<dyn SinkConfig>> {
    uri.params.finish()?;
    Ok(Arc::new(NullConfig))
}

impl SinkConfig for NullConfig {
    fn describe(&self) -> String {
        "null:".into()
    }

    fn open(&self) -> Result<Box<dyn Sink>> {
        Ok(Box::new(NullSink::new()))
    }

    fn resume_by(&self) -> ResumeBy {
        ResumeBy::Nothing
    }
}
