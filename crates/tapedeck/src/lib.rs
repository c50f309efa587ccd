//! # tapedeck
//!
//! A crash-safe flight recorder for measurement and event streams. This crate is the library
//! every part of tapedeck is built from:
//!
//! - [`storage`] — the file I/O seam of the tape and the journal, with a crashable double;
//! - [`record`] — rows, DAQ blocks and Arrow batches, and the schema lock;
//! - [`durability`] — the fsync policy the tape, the journal and the `raw:` sink share;
//! - [`journal`] — crash-safe, audited state: JSON Patch records with CRCs, snapshots;
//! - [`tape`] — the checksummed, segmented log every record lands on first;
//! - [`dtraw`] — dtollib's raw-counts file format;
//! - [`pack`] — a text file archived losslessly as a tape, byte for byte;
//! - [`source`] — simulators, line readers, `.dt-raw` files and tapes, opened by URI;
//! - [`sink`] — the [`Sink`](sink::Sink) trait and its backends (the tape among them), opened
//!   by URI;
//! - [`deliver`] — tape to sinks, each from its own durable cursor, exactly once;
//! - [`pipe`](mod@pipe) — the direct path: batching, a real flush timer, fan-out to several sinks.
//!
//! They are listed in layer order: a module uses only modules of earlier layers
//! (`docs/architecture.md`; `tests/layering.rs` fails on a later one).
//!
//! ```
//! use tapedeck::pipe::{pipe, PipeOptions};
//! use tapedeck::record::{Record, Row};
//! use tapedeck::{sink::memory::MemorySink, source};
//!
//! let sink = MemorySink::new();
//! let rows = sink.handle();
//! let stream = source::from_iter((0..100).map(|i| Ok(Record::Row(Row::new().with("i", i as i64)))));
//! let summary = pipe(stream, vec![Box::new(sink)], &PipeOptions::default()).unwrap();
//! assert_eq!(summary.rows, 100);
//! assert_eq!(rows.rows(), 100);
//! ```

#![warn(missing_docs)]

pub mod deliver;
pub mod dtraw;
pub mod durability;
pub mod error;
pub mod journal;
#[cfg(feature = "nats")]
pub mod nats;
pub mod pack;
pub mod pipe;
pub mod record;
pub mod recorder;
pub mod sink;
pub mod source;
pub mod storage;
mod sync;
pub mod tape;
pub mod uri;

pub use error::{Error, Result};

/// The README's library example, compiled and run as a doctest so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeExample;
