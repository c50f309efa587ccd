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
//! `parquet:PATH` or `parquet:DIR/`, `postgres://…`, `raw:PATH`, `memory:`, `null:`); SQLite, Parquet and
//! PostgreSQL are behind the cargo features of the same names, and a URI of a left-out backend
//! says which feature to enable. Each sink describes itself in a `DESCRIPTOR` (schemes,
//! summary, URI parameters and defaults, cargo feature); [`descriptors`] is the registry of them,
//! and the unknown-scheme, unknown-parameter and left-out-feature errors are made from it.
//! Every file sink refuses to replace an existing file unless the URI says `overwrite=true` (or
//! `append=true` where the format allows appending), so a second run never destroys the first
//! one's data.
//!
//! Beside the backends: [`tape`] (the tape as a sink, so `pipe` can record onto it), and what a
//! sink keeps for a delivery from a tape — [`cursor_file`] (the hidden cursor file of a file
//! sink) and `cursor` (the trait of sinks that move their cursor in their own transactions).
//! They live here, not in `tape/` or `deliver/`, because this module is the layer between
//! the two: it may use the tape, and the deliveries use it (`docs/architecture.md`).

pub mod csv;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "parquet"))]
pub(crate) mod cursor;
pub mod cursor_file;
pub mod descriptor;
pub(crate) mod file;
pub mod ipc;
pub mod jsonl;
pub mod memory;
pub mod null;
#[cfg(feature = "parquet")]
pub mod parquet;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod raw;
pub mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod tape;
pub mod text;

use std::path::{Component, Path, PathBuf};

use arrow_array::RecordBatch;

use crate::error::{Error, Result};
use crate::record::Block;
use crate::uri::Uri;

pub use descriptor::{ParamDescriptor, SinkDescriptor, descriptors, schemes};
pub use file::{FileOptions, hidden_beside};

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

/// A sink described by its URI, checked but not opened yet.
///
/// [`parse`] reads every parameter and checks that a file sink's path is free (or may be
/// replaced or appended to) without creating anything, so a program can check all its sink URIs
/// before the first file is created — a typo in the third `--sink` then leaves no empty file
/// behind from the first.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SinkSpec {
    /// `csv:PATH`
    Csv(PathBuf, csv::CsvOptions),
    /// `jsonl:PATH`
    Jsonl(PathBuf, jsonl::JsonlOptions),
    /// `ipc:PATH`
    Ipc(PathBuf, ipc::IpcOptions),
    /// `sqlite:PATH`
    #[cfg(feature = "sqlite")]
    Sqlite(PathBuf, sqlite::SqliteOptions),
    /// `parquet:PATH` or `parquet:DIR/`
    #[cfg(feature = "parquet")]
    Parquet(parquet::ParquetTarget, parquet::ParquetOptions),
    /// `postgres://user@host:port/db?table=T`
    #[cfg(feature = "postgres")]
    Postgres(postgres::PostgresOptions),
    /// `raw:PATH` (`.dt-raw` v2 raw codes)
    Raw(PathBuf, raw::RawOptions),
    /// `memory:`
    Memory,
    /// `null:`
    Null,
}

/// Parses and checks a sink URI; see [`SinkSpec`].
///
/// ```
/// let spec = tapedeck::sink::parse("csv:never-created.csv?overwrite=true").unwrap();
/// assert!(!std::path::Path::new("never-created.csv").exists());
/// assert!(tapedeck::sink::parse("csv:x.csv?overwrite=perhaps").is_err());
/// ```
pub fn parse(uri: &str) -> Result<SinkSpec> {
    let spec = parse_unchecked(uri)?;
    match &spec {
        SinkSpec::Csv(p, o) => o.file.check_target(p, true)?,
        SinkSpec::Jsonl(p, o) => o.file.check_target(p, true)?,
        SinkSpec::Ipc(p, o) => o.file.check_target(p, false)?,
        SinkSpec::Raw(p, o) => o.file.check_target(p, false)?,
        #[cfg(feature = "sqlite")]
        SinkSpec::Sqlite(..) => {}
        #[cfg(feature = "parquet")]
        SinkSpec::Parquet(parquet::ParquetTarget::File(p), o) => o.file.check_target(p, false)?,
        #[cfg(feature = "parquet")]
        SinkSpec::Parquet(parquet::ParquetTarget::Dir(_), _) => {}
        #[cfg(feature = "postgres")]
        SinkSpec::Postgres(_) => {}
        SinkSpec::Memory | SinkSpec::Null => {}
    }
    Ok(spec)
}

/// Parses a sink URI and reads every parameter, without looking at the destination: a
/// delivery from a tape ([`crate::deliver`]) decides itself whether an existing file is one it
/// continues.
pub fn parse_unchecked(uri: &str) -> Result<SinkSpec> {
    let mut uri = Uri::parse(uri)?;
    let Some(descriptor) = descriptor::find(&uri.scheme) else {
        return Err(Error::UnknownScheme {
            kind: "sink",
            scheme: uri.scheme.clone(),
            uri: uri.shown().to_string(),
            known: schemes().join(", "),
        });
    };
    if !descriptor.compiled_in {
        return Err(Error::FeatureDisabled {
            scheme: descriptor.scheme(),
            feature: descriptor.feature.unwrap_or(descriptor.scheme()),
        });
    }
    if uri.path.is_empty()
        && let Some(example) = descriptor.path_example
    {
        return Err(Error::MalformedUri {
            uri: uri.shown().to_string(),
            reason: format!(
                "`{}:` needs a path after the `:`; write e.g. `{}:{example}`",
                uri.scheme, uri.scheme
            ),
        });
    }
    build_spec(descriptor.scheme(), &mut uri).map_err(|e| with_listed_params(e, descriptor))
}

/// The spec of a compiled-in sink whose main scheme is `scheme`, its options read from `uri`.
fn build_spec(scheme: &str, uri: &mut Uri) -> Result<SinkSpec> {
    let path = PathBuf::from(&uri.path);
    Ok(match scheme {
        "csv" => SinkSpec::Csv(path, csv::CsvSink::options_from_uri(uri)?),
        "jsonl" => SinkSpec::Jsonl(path, jsonl::JsonlSink::options_from_uri(uri)?),
        "ipc" => SinkSpec::Ipc(path, ipc::IpcSink::options_from_uri(uri)?),
        #[cfg(feature = "sqlite")]
        "sqlite" => SinkSpec::Sqlite(path, sqlite::SqliteSink::options_from_uri(uri)?),
        #[cfg(feature = "parquet")]
        "parquet" => SinkSpec::Parquet(
            parquet::ParquetTarget::from_path(&uri.path),
            parquet::ParquetSink::options_from_uri(uri)?,
        ),
        #[cfg(feature = "postgres")]
        "postgres" => SinkSpec::Postgres(postgres::PostgresSink::options_from_uri(uri)?),
        "raw" => SinkSpec::Raw(path, raw::RawSink::options_from_uri(uri)?),
        "memory" => {
            uri.params.finish()?;
            SinkSpec::Memory
        }
        "null" => {
            uri.params.finish()?;
            SinkSpec::Null
        }
        other => unreachable!("sink `{other}` is registered and compiled in but not built"),
    })
}

/// An unknown-parameter error lists the parameters of the sink's descriptor (the same list
/// the sink read, which a debug build checks, so the descriptor cannot drift from the parsing).
fn with_listed_params(e: Error, descriptor: &SinkDescriptor) -> Error {
    match e {
        Error::UnknownParam { uri, param, valid } => {
            let listed = descriptor.param_list();
            debug_assert_eq!(
                valid,
                listed,
                "the parameters `{}:` reads differ from its descriptor's",
                descriptor.scheme()
            );
            Error::UnknownParam {
                uri,
                param,
                valid: listed,
            }
        }
        other => other,
    }
}

/// `path` as an absolute path with `.` and `..` resolved and the symbolic links of its
/// existing part followed, so two spellings of one file compare equal.
pub(crate) fn normalize_path(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map_or_else(|_| path.to_path_buf(), |d| d.join(path))
    };
    let mut lexical = PathBuf::new();
    for part in absolute.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                lexical.pop();
            }
            other => lexical.push(other),
        }
    }
    // The longest existing ancestor, with its links resolved, then the rest as written.
    let mut rest = Vec::new();
    let mut head = lexical.as_path();
    loop {
        if let Ok(real) = head.canonicalize() {
            let mut out = real;
            out.extend(rest.iter().rev());
            return out;
        }
        match (head.file_name(), head.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_os_string());
                head = parent;
            }
            _ => return lexical,
        }
    }
}

impl SinkSpec {
    /// How the sink is named in messages before it is opened: `scheme:path` as given.
    fn describe(&self) -> String {
        match self {
            SinkSpec::Csv(p, _) => format!("csv:{}", p.display()),
            SinkSpec::Jsonl(p, _) => format!("jsonl:{}", p.display()),
            SinkSpec::Ipc(p, _) => format!("ipc:{}", p.display()),
            #[cfg(feature = "sqlite")]
            SinkSpec::Sqlite(p, o) => format!("sqlite:{} (table {})", p.display(), o.table),
            #[cfg(feature = "parquet")]
            SinkSpec::Parquet(
                parquet::ParquetTarget::File(p) | parquet::ParquetTarget::Dir(p),
                _,
            ) => {
                format!("parquet:{}", p.display())
            }
            #[cfg(feature = "postgres")]
            SinkSpec::Postgres(o) => format!("postgres:{}", o.target()),
            SinkSpec::Raw(p, _) => format!("raw:{}", p.display()),
            SinkSpec::Memory => "memory:".into(),
            SinkSpec::Null => "null:".into(),
        }
    }

    /// The file the sink writes (normalized) and the tables its rows go to, each as the text
    /// that names it (two SQLite sinks may share a database file, not a table).
    fn destinations(&self) -> (Option<PathBuf>, Vec<String>) {
        match self {
            SinkSpec::Csv(p, _)
            | SinkSpec::Jsonl(p, _)
            | SinkSpec::Ipc(p, _)
            | SinkSpec::Raw(p, _) => (Some(normalize_path(p)), Vec::new()),
            #[cfg(feature = "parquet")]
            SinkSpec::Parquet(
                parquet::ParquetTarget::File(p) | parquet::ParquetTarget::Dir(p),
                _,
            ) => (Some(normalize_path(p)), Vec::new()),
            #[cfg(feature = "sqlite")]
            SinkSpec::Sqlite(p, o) => {
                let file = normalize_path(p);
                // SQLite compares table names ignoring case.
                let table = format!(
                    "table `{}` of {}",
                    o.table.to_ascii_lowercase(),
                    file.display()
                );
                (Some(file), vec![table])
            }
            #[cfg(feature = "postgres")]
            SinkSpec::Postgres(o) => (
                None,
                vec![format!(
                    "table {}:{}/{}.{}.{}",
                    o.host.to_ascii_lowercase(),
                    o.port,
                    o.dbname,
                    o.schema,
                    o.table
                )],
            ),
            SinkSpec::Memory | SinkSpec::Null => (None, Vec::new()),
        }
    }

    /// Opens the sink (creating its file).
    pub fn open(self) -> Result<Box<dyn Sink>> {
        Ok(match self {
            SinkSpec::Csv(p, o) => Box::new(csv::CsvSink::create(p, o)?),
            SinkSpec::Jsonl(p, o) => Box::new(jsonl::JsonlSink::create(p, o)?),
            SinkSpec::Ipc(p, o) => Box::new(ipc::IpcSink::create(p, o)?),
            #[cfg(feature = "sqlite")]
            SinkSpec::Sqlite(p, o) => Box::new(sqlite::SqliteSink::open(p, o)?),
            #[cfg(feature = "parquet")]
            SinkSpec::Parquet(t, o) => Box::new(parquet::ParquetSink::create(t, o)?),
            #[cfg(feature = "postgres")]
            SinkSpec::Postgres(o) => Box::new(postgres::PostgresSink::open(o)?),
            SinkSpec::Raw(p, o) => Box::new(raw::RawSink::create(p, o)?),
            SinkSpec::Memory => Box::new(memory::MemorySink::new()),
            SinkSpec::Null => Box::new(null::NullSink::new()),
        })
    }
}

/// Refuses two sinks that write the same file, the same table of one SQLite database, or the
/// same PostgreSQL table: they would interleave their rows or replace each other's file. Paths
/// are compared after making them absolute and resolving `.`, `..` and symbolic links, so
/// `csv:run.csv` and `csv:./out/../run.csv` are one file. Two SQLite sinks may share a
/// database file when their `table`s differ (SQLite compares names ignoring case). Nothing is created or opened:
/// a program calls this with every parsed sink before it opens the first one.
///
/// ```
/// use tapedeck::sink;
/// let a = sink::parse("csv:never-made.csv").unwrap();
/// let b = sink::parse("csv:./never-made.csv?overwrite=true").unwrap();
/// let e = sink::check_distinct([&a, &b]).unwrap_err().to_string();
/// assert!(e.contains("never-made.csv"), "{e}");
/// assert!(sink::check_distinct([&a, &sink::parse("jsonl:never-made.jsonl").unwrap()]).is_ok());
/// ```
pub fn check_distinct<'a>(specs: impl IntoIterator<Item = &'a SinkSpec>) -> Result<()> {
    let specs: Vec<&SinkSpec> = specs.into_iter().collect();
    let described: Vec<(String, Option<PathBuf>, Vec<String>, bool)> = specs
        .iter()
        .map(|s| {
            let (file, parts) = s.destinations();
            #[cfg(feature = "sqlite")]
            let shares = matches!(s, SinkSpec::Sqlite(..));
            #[cfg(not(feature = "sqlite"))]
            let shares = false;
            (s.describe(), file, parts, shares)
        })
        .collect();
    for (i, (first, file_a, parts_a, shares_a)) in described.iter().enumerate() {
        for (second, file_b, parts_b, shares_b) in described.iter().skip(i + 1) {
            if let (Some(a), Some(b)) = (file_a, file_b)
                && a == b
                && !(*shares_a && *shares_b)
            {
                return Err(Error::InvalidOption {
                    option: "--sink",
                    message: format!(
                        "`{first}` and `{second}` both write {}; two sinks writing one file would interleave or replace each other's rows. Give each --sink its own path",
                        a.display()
                    ),
                });
            }
            if let Some(shared) = parts_a.iter().find(|p| parts_b.contains(p)) {
                return Err(Error::InvalidOption {
                    option: "--sink",
                    message: format!(
                        "`{first}` and `{second}` both write {shared}; two sinks writing one table would write every row twice. Set another `table=` on one of them"
                    ),
                });
            }
        }
    }
    Ok(())
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
