//! `memory:` — keeps every batch in memory; for tests and for programs that want the rows back.
//!
//! The sink holds a schema lock like a table would. [`MemorySink::handle`] returns a cheap,
//! cloneable view that stays valid after the sink is moved into `pipe` or closed.

use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;

use super::descriptor::SinkDescriptor;
use super::resume::ResumeBy;
use super::spec::SinkConfig;
use super::{Lifecycle, Sink, SinkStats};
use crate::error::Result;
use crate::record::{Block, SchemaLock};
use crate::uri::Uri;

/// `memory:`; see [`super::descriptor`].
pub const DESCRIPTOR: SinkDescriptor = SinkDescriptor {
    schemes: &["memory"],
    usage: "memory:",
    example: "memory:",
    summary: "kept in memory (tests)",
    path_example: None,
    params: &[],
    feature: None,
    compiled_in: true,
    parse: Some(parse),
};

/// What a memory sink has received.
#[derive(Debug, Default)]
struct Contents {
    batches: Vec<RecordBatch>,
    blocks: Vec<Block>,
    flushes: u64,
    closed: bool,
}

/// A shared view of a [`MemorySink`]'s contents.
#[derive(Debug, Clone, Default)]
pub struct MemoryHandle(Arc<Mutex<Contents>>);

impl MemoryHandle {
    fn with<T>(&self, f: impl FnOnce(&Contents) -> T) -> T {
        f(&crate::sync::lock(&self.0))
    }

    /// The batches written so far (after the schema lock).
    pub fn batches(&self) -> Vec<RecordBatch> {
        self.with(|c| c.batches.clone())
    }

    /// The blocks written so far.
    pub fn blocks(&self) -> Vec<Block> {
        self.with(|c| c.blocks.clone())
    }

    /// Total rows in the batches.
    pub fn rows(&self) -> usize {
        self.with(|c| c.batches.iter().map(RecordBatch::num_rows).sum())
    }

    /// Number of `flush` calls seen.
    pub fn flushes(&self) -> u64 {
        self.with(|c| c.flushes)
    }

    /// True once the sink was closed.
    pub fn is_closed(&self) -> bool {
        self.with(|c| c.closed)
    }
}

/// Keeps batches and blocks in memory.
///
/// ```
/// use tapedeck::sink::{Sink, memory::MemorySink};
/// let sink = MemorySink::new();
/// let handle = sink.handle();
/// let mut boxed: Box<dyn Sink> = Box::new(sink);
/// boxed.close().unwrap();
/// assert!(handle.is_closed());
/// ```
#[derive(Debug)]
pub struct MemorySink {
    life: Lifecycle,
    lock: SchemaLock,
    contents: MemoryHandle,
    rows: u64,
}

impl Default for MemorySink {
    fn default() -> Self {
        MemorySink::new()
    }
}

impl MemorySink {
    /// An empty memory sink.
    pub fn new() -> MemorySink {
        MemorySink {
            life: Lifecycle::new("memory:"),
            lock: SchemaLock::new("memory:"),
            contents: MemoryHandle::default(),
            rows: 0,
        }
    }

    /// A view of what the sink receives.
    pub fn handle(&self) -> MemoryHandle {
        self.contents.clone()
    }

    /// The sink's schema lock.
    pub fn schema_lock(&self) -> &SchemaLock {
        &self.lock
    }

    fn update(&self, f: impl FnOnce(&mut Contents)) {
        f(&mut crate::sync::lock(&self.contents.0));
    }
}

impl Sink for MemorySink {
    fn name(&self) -> &str {
        self.life.name()
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.life.check_open()?;
        let batch = self.lock.conform(batch)?;
        self.rows += batch.num_rows() as u64;
        self.update(|c| c.batches.push(batch));
        Ok(())
    }

    fn write_block(&mut self, block: &Block) -> Result<()> {
        self.life.check_open()?;
        block.validate()?;
        self.rows += block.samples as u64;
        self.update(|c| c.blocks.push(block.clone()));
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.life.check_open()?;
        self.update(|c| c.flushes += 1);
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        if self.life.begin_close() {
            self.update(|c| c.closed = true);
        }
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
/// `memory:` read: it has no path and no parameters.
#[derive(Debug, Clone, Copy)]
struct MemoryConfig;

/// Reads a `memory:` URI (the registry's `parse`).
fn parse(uri: &mut Uri) -> Result<Arc<dyn SinkConfig>> {
    uri.params.finish()?;
    Ok(Arc::new(MemoryConfig))
}

impl SinkConfig for MemoryConfig {
    fn describe(&self) -> String {
        "memory:".into()
    }

    fn open(&self) -> Result<Box<dyn Sink>> {
        Ok(Box::new(MemorySink::new()))
    }

    fn resume_by(&self) -> ResumeBy {
        ResumeBy::Nothing
    }
}
