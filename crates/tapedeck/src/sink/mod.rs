//! Sinks: where batches go. One small trait, one module per backend, chosen by URI.
//!
//! A [`Sink`] is an arrow-style writer: [`Sink::write`] takes a batch, [`Sink::flush`] makes what
//! was written visible to readers of the destination (a `write(2)` for files, no fsync — the
//! tape owns durability), and [`Sink::close`] finishes the destination (footer, last bytes). Close
//! is idempotent; writing after close is [`Error::SinkClosed`]. DAQ blocks arrive through
//! [`Sink::write_block`], whose default writes the block's wide batch; text sinks override it to
//! refuse blocks unless asked.
//!
//! [`open`] builds a sink from a URI (`csv:PATH`, `jsonl:PATH`, `ipc:PATH`, `sqlite:PATH`,
//! `parquet:PATH` or `parquet:DIR/`, `postgres://…`, `nats://…`, `raw:PATH`, `memory:`, `null:`); SQLite,
//! Parquet, PostgreSQL and NATS are behind the cargo features of the same names, and a URI of a left-out backend
//! says which feature to enable. Each sink describes itself in a `DESCRIPTOR` (schemes,
//! summary, URI parameters and defaults, cargo feature); [`descriptors`] is the registry of them,
//! and the unknown-scheme, unknown-parameter and left-out-feature errors are made from it.
//! Every file sink refuses to replace an existing file unless the URI says `overwrite=true` (or
//! `append=true` where the format allows appending), so a second run never destroys the first
//! one's data.
//!
//! A URI is read into a [`SinkSpec`] ([`spec`]): the sink's [`SinkConfig`], which says how it is
//! named, what it claims, how it opens and how a delivery from a tape resumes it
//! ([`ResumeBy`], [`resume`]). Adding a sink is its module (a `DESCRIPTOR` whose `parse` makes
//! its config) and one line in [`descriptors`].
//!
//! Beside the backends: [`tape`] (the tape as a sink, so `pipe` can record onto it), and what a
//! sink keeps for a delivery from a tape — [`cursor_file`] (the hidden cursor file of a file
//! sink) and [`resume`] (the resume strategies a sink names, the trait of sinks that move their
//! cursor in their own transactions).
//! They live here, not in `tape/` or `deliver/`, because this module is the layer between
//! the two: it may use the tape, and the deliveries use it (`docs/architecture.md`).

pub mod csv;
pub mod cursor_file;
pub mod descriptor;
pub(crate) mod file;
pub mod ipc;
pub mod jsonl;
pub mod memory;
#[cfg(feature = "nats")]
pub mod nats;
pub mod null;
#[cfg(feature = "parquet")]
pub mod parquet;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod raw;
pub mod resume;
pub mod spec;
pub mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod tape;
pub mod text;

use arrow_array::RecordBatch;

use crate::error::{Error, Result};
use crate::record::Block;

pub use descriptor::{ParamDescriptor, SinkDescriptor, descriptors, schemes};
pub use file::{FileOptions, hidden_beside};
pub use resume::{CursorSink, ResumeBy};
pub use spec::{SinkConfig, SinkSpec, check_distinct, parse, parse_unchecked};

/// Rows and bytes a sink has written so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SinkStats {
    /// Rows accepted (a block counts its samples per channel in the wide layout, channels ×
    /// samples in the long layout).
    pub rows: u64,
    /// Bytes handed to the destination (file bytes for file sinks).
    pub bytes: u64,
    /// Rows accepted but not yet in the destination because it is away (a database server that
    /// went away): the sink is *behind* by this many rows.
    pub pending: u64,
}

/// A destination for batches; see the module docs.
///
/// ```
/// use std::sync::Arc;
/// use arrow_array::{Int64Array, RecordBatch};
/// use arrow_schema::{DataType, Field, Schema};
/// use tapedeck::sink::{self, Sink};
///
/// let mut sink = sink::open("memory:").unwrap();
/// let batch = RecordBatch::try_new(
///     Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)])),
///     vec![Arc::new(Int64Array::from(vec![1, 2, 3]))],
/// ).unwrap();
/// sink.write(&batch).unwrap();
/// sink.flush().unwrap();
/// sink.close().unwrap();
/// sink.close().unwrap(); // idempotent
/// assert_eq!(sink.stats().rows, 3);
/// assert!(sink.write(&batch).is_err()); // closed
/// ```
pub trait Sink: Send {
    /// How the sink is shown in logs, errors and summaries (its URI, credentials removed).
    fn name(&self) -> &str;

    /// Writes one batch. The first batch locks the schema of sinks that have one.
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;

    /// Writes one DAQ block. The default writes [`Block::to_wide_batch`].
    fn write_block(&mut self, block: &Block) -> Result<()> {
        self.write(&block.to_wide_batch()?)
    }

    /// Pushes everything written so far to the destination.
    fn flush(&mut self) -> Result<()>;

    /// Flushes and finishes the destination. Calling it again does nothing.
    fn close(&mut self) -> Result<()>;

    /// Rows and bytes written so far.
    fn stats(&self) -> SinkStats;

    /// Tells the sink that the run it belongs to failed — its source, another sink, or opening
    /// the next sink — so its [`Sink::close`] takes away what this sink created and never
    /// wrote data to: a file it made (and the parent directories it made for it), a database
    /// file it made and committed no row to, a delivery's cursor row it never committed. What
    /// holds data stays. A sink whose own `write`, `write_block` or `flush` failed does this
    /// without being told, and so does a sink dropped without `close`. The default does
    /// nothing (sinks that create nothing).
    fn abandon(&mut self) {}

    /// True for sinks that wait on a server (network round trips): [`crate::pipe`] then runs
    /// them on their own thread even when they are the only sink, so the source keeps going
    /// while they wait and flushes that queue up behind them are merged into one.
    fn prefers_own_thread(&self) -> bool {
        false
    }
}

/// Opens a sink from its URI: [`parse`], then [`SinkSpec::open`].
///
/// ```
/// let err = tapedeck::sink::open("xls:run.xls").err().unwrap();
/// assert!(err.to_string().contains("known schemes: csv, jsonl, ipc"));
/// ```
pub fn open(uri: &str) -> Result<Box<dyn Sink>> {
    parse(uri)?.open()
}

/// Small batches a sink collects before writing them as one (IPC record batches, Parquet
/// encoding), so a file's layout does not follow the flush cadence.
#[derive(Debug, Default)]
pub(crate) struct HeldBatches {
    batches: Vec<RecordBatch>,
    rows: usize,
}

impl HeldBatches {
    /// Holds `batch`; returns the rows now held.
    pub(crate) fn push(&mut self, batch: RecordBatch) -> usize {
        self.rows += batch.num_rows();
        self.batches.push(batch);
        self.rows
    }

    /// Everything held, as one batch (`None` when nothing is held); `owner` names the sink in
    /// errors.
    pub(crate) fn take(&mut self, owner: &str) -> Result<Option<RecordBatch>> {
        let held = std::mem::take(&mut self.batches);
        self.rows = 0;
        match held.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.clone())),
            [first, ..] => arrow_select::concat::concat_batches(&first.schema(), &held)
                .map(Some)
                .map_err(|e| Error::arrow(format!("{owner}: joining batches"), e)),
        }
    }
}

/// Tracks the open/closed state every sink needs, so "write after close" is one typed error,
/// and whether the run failed (see [`Sink::abandon`]).
#[derive(Debug)]
pub(crate) struct Lifecycle {
    name: String,
    closed: bool,
    failed: bool,
}

impl Lifecycle {
    pub(crate) fn new(name: impl Into<String>) -> Lifecycle {
        Lifecycle {
            name: name.into(),
            closed: false,
            failed: false,
        }
    }

    /// Passes `r` through, remembering a failure.
    pub(crate) fn watch<T>(&mut self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    /// The run failed (this sink or elsewhere).
    pub(crate) fn abandon(&mut self) {
        self.failed = true;
    }

    /// True once the run failed.
    pub(crate) fn failed(&self) -> bool {
        self.failed
    }

    /// For `Drop`: a sink dropped before `close` was left by a run that did not finish.
    pub(crate) fn abandon_unless_closed(&mut self) {
        if !self.closed {
            self.failed = true;
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed {
            return Err(Error::SinkClosed {
                sink: self.name.clone(),
            });
        }
        Ok(())
    }

    /// Marks the sink closed; returns false if it already was.
    pub(crate) fn begin_close(&mut self) -> bool {
        !std::mem::replace(&mut self.closed, true)
    }
}
