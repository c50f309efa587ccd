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
//!   sources ([`lines`]), with `on_error=fail|skip` for malformed lines;
//! - `file:PATH.dt-raw` — a raw-counts file, chunk by chunk as blocks (`crate::dtraw`'s
//!   `DtRawSource`, made a source in `dtraw.rs` here).
//!
//! A tape is a source too: `tape::TapeReader` implements [`Source`] (in `tape.rs` here), so
//! `replay` pipes a tape like any stream. Those two implementations live in this module, not
//! beside the formats, because the formats (`dtraw`, `tape`) are a lower layer than the sources
//! and must not import them (`docs/architecture.md`).
//!
//! A URI that is not a source URI is refused with what was given and what to write instead: a
//! bare `stdin` or file name (no scheme) is pointed at `stdin:csv` / `file:NAME`, and a sink
//! scheme (`csv:run.csv`) at the source that reads that format.

mod dtraw;
pub mod lines;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "nats")]
pub mod nats;
pub mod sim_alicat;
pub mod sim_daq;
mod tape;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::record::Record;
use crate::sync::lock;
use crate::uri::{Uri, redact};
use lines::ColumnTypes;

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

    /// A hint from `pipe` when the run is bounded by a duration (`--duration`). A source that
    /// paces its records by their own sample clock (`sim:daq` with `pace=real`) ends the
    /// stream itself after the last record whose samples lie within `duration` of its start,
    /// and returns true: its last block becomes ready exactly at the deadline, so a wall-clock
    /// cut would lose it, and the run would hold one block less than duration × rate samples.
    /// `pipe` then lets such a source end (keeping a wall-clock backstop). The default ignores
    /// the hint and returns false: the run is cut by the clock.
    fn end_after(&mut self, _duration: Duration) -> bool {
        false
    }

    /// Called by a [`crate::recorder::Recorder`] with a tape before it reads the source: the
    /// tape, where this run starts on it, and how many of the rows this source yields the tape
    /// has acknowledged (fsynced) at any moment. A source that must keep its input until it is
    /// durable — a broker's, which acknowledges messages to the broker only then — keeps the
    /// link; the default ignores it.
    fn attach_tape(&mut self, _link: TapeLink) -> Result<()> {
        Ok(())
    }

    /// How many rows the source will yield, when it knows (`sim:alicat?n=…`, `sim:daq?blocks=…`):
    /// the progress line shows a percentage and an estimate of the time left.
    fn expected_rows(&self) -> Option<u64> {
        None
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
    fn end_after(&mut self, duration: Duration) -> bool {
        (**self).end_after(duration)
    }
    fn expected_rows(&self) -> Option<u64> {
        (**self).expected_rows()
    }
    fn attach_tape(&mut self, link: TapeLink) -> Result<()> {
        (**self).attach_tape(link)
    }
}

/// The error of a broker's source run without a tape: it acknowledges messages to the broker
/// only once the tape has their rows, so it needs one.
#[cfg(any(feature = "nats", feature = "mqtt"))]
pub(crate) fn needs_a_tape(source: &str, scheme: &str) -> Error {
    Error::InvalidOption {
        option: "--tape",
        message: format!(
            "{source}: a {scheme}:// source records onto a tape (it acknowledges messages to the broker only once the tape has their rows); add --tape DIR"
        ),
    }
}

/// An Int64 column's value at a row, when it has one.
fn int_at(batch: &arrow_array::RecordBatch, column: &str, row: usize) -> Option<i64> {
    use arrow_array::Array;
    let c = batch
        .column_by_name(column)?
        .as_any()
        .downcast_ref::<arrow_array::Int64Array>()?;
    c.is_valid(row).then(|| c.value(row))
}

/// A Utf8 column's value at a row, when it has one.
fn text_at<'a>(batch: &'a arrow_array::RecordBatch, column: &str, row: usize) -> Option<&'a str> {
    use arrow_array::Array;
    let c = batch
        .column_by_name(column)?
        .as_any()
        .downcast_ref::<arrow_array::StringArray>()?;
    c.is_valid(row).then(|| c.value(row))
}

/// What a source learns of the tape it is recorded onto ([`Source::attach_tape`]).
#[derive(Clone)]
pub struct TapeLink {
    dir: std::path::PathBuf,
    start: u64,
    durable: Arc<dyn Fn() -> u64 + Send + Sync>,
}

impl std::fmt::Debug for TapeLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapeLink")
            .field("dir", &self.dir)
            .field("start", &self.start)
            .finish()
    }
}

impl TapeLink {
    /// The tape in `dir`, this run's first row `start`, and its acknowledged position
    /// (`durable()`, the tape sequence number after the last fsynced row).
    pub fn new(
        dir: impl Into<std::path::PathBuf>,
        start: u64,
        durable: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> TapeLink {
        TapeLink {
            dir: dir.into(),
            start,
            durable: Arc::new(durable),
        }
    }

    /// Rows of this run the tape has acknowledged.
    pub fn acknowledged_rows(&self) -> u64 {
        (self.durable)().saturating_sub(self.start)
    }

    /// Where a source that writes its position into its rows resumes: the value of the
    /// integer column `column` in the tape's last row before this run, and how many rows at
    /// the tape's end carry that value (a message's rows may reach the tape only in part) —
    /// when that row's `key` column says `key_value`; `None` otherwise (an empty tape, another
    /// source's rows).
    pub fn last_run(&self, column: &str, key: &str, key_value: &str) -> Result<Option<(u64, u64)>> {
        // The tape's last rows, read forward, more of them while they all carry the value;
        // never before the first row retention left.
        let first = crate::tape::retention::first_row(&self.dir)?;
        let mut window: u64 = 4096;
        loop {
            let from = self.start.saturating_sub(window).max(first);
            let mut reader =
                crate::tape::TapeReader::open(&self.dir, crate::tape::StartAt::Seq(from))?
                    .until(Some(self.start));
            let mut rows: Vec<Option<i64>> = Vec::new();
            while let Some((_, batch)) = reader.next_batch()? {
                for i in 0..batch.num_rows() {
                    let keyed = text_at(&batch, key, i) == Some(key_value);
                    rows.push(int_at(&batch, column, i).filter(|_| keyed));
                }
            }
            let Some(Some(last)) = rows.last().copied() else {
                return Ok(None);
            };
            let run = rows.iter().rev().take_while(|v| **v == Some(last)).count() as u64;
            if run < rows.len() as u64 || from <= first {
                return Ok(Some((u64::try_from(last).unwrap_or(0), run)));
            }
            window = window.saturating_mul(4);
        }
    }
}

/// Shared counters of a running source: take them ([`Source::counters`]) before the source is
/// moved into `pipe`, and read them during or after the run.
#[derive(Debug, Clone, Default)]
pub struct SourceCounters {
    skipped: Arc<AtomicU64>,
    bytes_read: Arc<AtomicU64>,
    columns: Arc<Mutex<Option<ColumnTypes>>>,
}

impl SourceCounters {
    /// Malformed records skipped under `on_error=skip`.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    pub(crate) fn add_skipped(&self) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes of input read so far, for the sources that read bytes (the line sources): with
    /// the tape's size, the compression ratio `record`'s progress line shows.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    pub(crate) fn set_bytes_read(&self, n: u64) {
        self.bytes_read.store(n, Ordering::Relaxed);
    }

    pub(crate) fn add_bytes_read(&self, n: u64) {
        self.bytes_read.fetch_add(n, Ordering::Relaxed);
    }

    /// The type each column got, for a CSV source once it read its header and inference
    /// window; its `Display` is one line for a summary (`data.csv: column types (inferred from
    /// lines 2-1001): t timestamp, flow float`).
    pub fn column_types(&self) -> Option<ColumnTypes> {
        lock(&self.columns).clone()
    }

    pub(crate) fn set_column_types(&self, types: ColumnTypes) {
        *lock(&self.columns) = Some(types);
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
pub const SCHEMES: &[&str] = &[
    "sim",
    "stdin",
    "file",
    #[cfg(feature = "nats")]
    "nats",
    #[cfg(feature = "mqtt")]
    "mqtt",
];

/// Opens a source from its URI.
///
/// ```
/// let mut src = tapedeck::source::open("sim:alicat?n=10").unwrap();
/// let first = src.next_record().unwrap().unwrap();
/// assert!(first.row_count() > 0);
/// assert!(tapedeck::source::open("sim:alicat?rows=10").is_err()); // unknown parameter
/// ```
pub fn open(uri: &str) -> Result<Box<dyn Source>> {
    if let Some(err) = not_a_source_uri(uri) {
        return Err(err);
    }
    let uri = Uri::parse(uri)?;
    match (uri.scheme.as_str(), uri.path.as_str()) {
        ("sim", "alicat") => Ok(Box::new(sim_alicat::AlicatSim::from_uri(uri)?)),
        ("sim", "daq") => Ok(Box::new(sim_daq::DaqSim::from_uri(uri)?)),
        ("sim", _) => Err(Error::MalformedUri {
            uri: uri.shown().to_string(),
            reason: if uri.path.is_empty() {
                "name the simulator: write `sim:alicat` or `sim:daq`".into()
            } else {
                format!(
                    "unknown simulator `{}`; known: sim:alicat, sim:daq",
                    uri.shown_path()
                )
            },
        }),
        ("file", path) if path.ends_with(".dt-raw") => {
            uri.params.finish()?;
            Ok(Box::new(crate::dtraw::DtRawSource::open(path)?))
        }
        ("stdin" | "file", _) => Ok(Box::new(lines::LineSource::from_uri(uri)?)),
        #[cfg(feature = "nats")]
        ("nats", _) => Ok(Box::new(nats::NatsSource::from_uri(uri)?)),
        #[cfg(feature = "mqtt")]
        ("mqtt", _) => Ok(Box::new(mqtt::MqttSource::from_uri(uri)?)),
        (other, _) => Err(match sink_scheme_hint(other, uri.shown_path()) {
            Some(hint) => Error::MalformedUri {
                uri: uri.shown().to_string(),
                reason: hint,
            },
            None => Error::UnknownScheme {
                kind: "source",
                scheme: other.to_string(),
                uri: uri.shown().to_string(),
                known: format!("{} (e.g. {EXAMPLES})", SCHEMES.join(", ")),
            },
        }),
    }
}

/// Source URIs to suggest.
const EXAMPLES: &str = "`sim:alicat`, `stdin:csv`, `file:data.csv`";

/// The error for text that has no scheme at all (`stdin`, `data.csv`), saying which source URI
/// was probably meant; `None` for anything [`Uri::parse`] should look at.
fn not_a_source_uri(text: &str) -> Option<Error> {
    if text.contains(':') {
        return None;
    }
    let shown = redact(text);
    let word = text.trim().to_ascii_lowercase();
    let reason = match word.as_str() {
        "" => format!("no source given; write a source URI such as {EXAMPLES}"),
        "stdin" | "-" | "stdin/csv" => {
            "a source URI says what stdin carries: write `stdin:csv`, `stdin:jsonl` or `stdin:lines`".into()
        }
        "csv" | "jsonl" | "ndjson" | "lines" => {
            format!("no scheme; to read {word} from standard input write `stdin:{word}`, from a file `file:data.{word}`")
        }
        "sim" => "name the simulator: write `sim:alicat` or `sim:daq`".into(),
        "alicat" | "daq" => format!("no scheme; write `sim:{word}`"),
        "file" => "`file` needs a path: write `file:data.csv`".into(),
        _ => format!(
            "no scheme; to read the file `{shown}` write `file:{shown}` (sources: {EXAMPLES})"
        ),
    };
    Some(Error::MalformedUri { uri: shown, reason })
}

/// What to write instead of a sink scheme given as a source.
fn sink_scheme_hint(scheme: &str, path: &str) -> Option<String> {
    let path = if path.is_empty() { "PATH" } else { path };
    match scheme {
        "csv" | "jsonl" | "ndjson" => {
            let (what, format) = if scheme == "csv" {
                ("a CSV file", "csv")
            } else {
                ("a JSONL file", "jsonl")
            };
            Some(format!(
                "`{scheme}:` names a sink (where records go); to read {what} as a source write `file:{path}` (the format follows the extension, or add `?format={format}`), or `stdin:{format}` for standard input"
            ))
        }
        "raw" => Some(format!(
            "`raw:` names a sink (where records go); to read a raw-counts file as a source write `file:{path}` (a path ending in .dt-raw)"
        )),
        "tape" => Some(
            "a tape is not a source URI; play it into sinks with `tapedeck replay DIR --sink …`"
                .into(),
        ),
        "ipc" | "parquet" | "sqlite" | "postgres" | "postgresql" | "memory" | "null" => {
            Some(format!(
                "`{scheme}:` names a sink (where records go); tapedeck cannot read it as a source. Sources: {} (e.g. {EXAMPLES})",
                SCHEMES.join(", ")
            ))
        }
        _ => None,
    }
}
