//! Sources: where records come from, opened by URI.
//!
//! A [`Source`] is a blocking producer of [`Record`]s (rows, batches or DAQ blocks). `pipe` runs
//! it on a thread of its own, so a source may block on a slow device or on stdin while the flush
//! timer keeps running.
//!
//! Built in:
//! - `sim:alicat?n=N&rate=HZ` — the alicat-sample workload ([`sim_alicat`]);
//! - `sim:daq?channels=8&rate=10000&block=1000&blocks=N&pace=real|max&raw=true` — the daq-block
//!   workload ([`sim_daq`]);
//! - `stdin:csv|jsonl|lines` and `file:PATH` (format from the extension or `format=`) — line
//!   sources ([`lines`]), with `on_error=fail|skip` for malformed lines.

pub mod lines;
pub mod sim_alicat;
pub mod sim_daq;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::record::Record;
use crate::uri::Uri;

/// A producer of records; see the module docs.
pub trait Source: Send {
    /// How the source is shown in messages (its URI, credentials removed).
    fn name(&self) -> &str;

    /// The next record; `Ok(None)` at the end of the stream.
    fn next_record(&mut self) -> Result<Option<Record>>;

    /// A hint from `pipe`: sources that produce batches should make them about this many rows.
    fn set_batch_hint(&mut self, _rows: usize) {}

    /// Counters the source updates while it runs (malformed lines skipped, …).
    fn counters(&self) -> SourceCounters {
        SourceCounters::default()
    }
}

impl Source for Box<dyn Source> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn next_record(&mut self) -> Result<Option<Record>> {
        (**self).next_record()
    }
    fn set_batch_hint(&mut self, rows: usize) {
        (**self).set_batch_hint(rows);
    }
    fn counters(&self) -> SourceCounters {
        (**self).counters()
    }
}

/// Shared counters of a running source.
#[derive(Debug, Clone, Default)]
pub struct SourceCounters {
    skipped: Arc<AtomicU64>,
}

impl SourceCounters {
    /// Malformed records skipped under `on_error=skip`.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    pub(crate) fn add_skipped(&self) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
    }
}

/// A source over any iterator of records.
///
/// ```
/// use tapedeck::record::{Record, Row};
/// use tapedeck::source::{Source, from_iter};
/// let mut s = from_iter((0..3).map(|i| Ok(Record::Row(Row::new().with("i", i as i64)))));
/// assert!(s.next_record().unwrap().is_some());
/// ```
pub struct IterSource<I> {
    iter: I,
}

/// Wraps an iterator of `Result<Record>` as a [`Source`].
pub fn from_iter<I>(iter: I) -> IterSource<I::IntoIter>
where
    I: IntoIterator<Item = Result<Record>>,
    I::IntoIter: Send,
{
    IterSource {
        iter: iter.into_iter(),
    }
}

impl<I: Iterator<Item = Result<Record>> + Send> Source for IterSource<I> {
    fn name(&self) -> &str {
        "iterator"
    }

    fn next_record(&mut self) -> Result<Option<Record>> {
        self.iter.next().transpose()
    }
}

/// Source schemes this build knows.
pub const SCHEMES: &[&str] = &["sim", "stdin", "file"];

/// Opens a source from its URI.
///
/// ```
/// let mut src = tapedeck::source::open("sim:alicat?n=10").unwrap();
/// let first = src.next_record().unwrap().unwrap();
/// assert!(first.row_count() > 0);
/// assert!(tapedeck::source::open("sim:alicat?rows=10").is_err()); // unknown parameter
/// ```
pub fn open(uri: &str) -> Result<Box<dyn Source>> {
    let uri = Uri::parse(uri)?;
    match (uri.scheme.as_str(), uri.path.as_str()) {
        ("sim", "alicat") => Ok(Box::new(sim_alicat::AlicatSim::from_uri(uri)?)),
        ("sim", "daq") => Ok(Box::new(sim_daq::DaqSim::from_uri(uri)?)),
        ("sim", _) => Err(Error::MalformedUri {
            uri: uri.shown().to_string(),
            reason: format!(
                "unknown simulator `{}`; known: sim:alicat, sim:daq",
                uri.shown_path()
            ),
        }),
        ("file", path) if path.ends_with(".dt-raw") => {
            uri.params.finish()?;
            Ok(Box::new(crate::dtraw::DtRawSource::open(path)?))
        }
        ("stdin" | "file", _) => Ok(Box::new(lines::LineSource::from_uri(uri)?)),
        (other, _) => Err(Error::UnknownScheme {
            kind: "source",
            scheme: other.to_string(),
            uri: uri.shown().to_string(),
            known: SCHEMES.join(", "),
        }),
    }
}
