//! The one error type of the library.
//!
//! Every failure a user or the disk can cause ends up here as a typed variant that names what
//! went wrong, where (path, URI, column, row, line) and, where there is one, what to do about it.
//! URIs are always shown through [`crate::uri::redact`], so a password never reaches an error
//! message or a log line.

use std::path::PathBuf;

use arrow_schema::{ArrowError, DataType};

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in tapedeck.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A URI had a scheme no compiled-in source or sink knows.
    #[error("unknown {kind} scheme `{scheme}` in `{uri}`; known schemes: {known}")]
    UnknownScheme {
        /// "sink" or "source".
        kind: &'static str,
        /// The offending scheme.
        scheme: String,
        /// The URI, credentials redacted.
        uri: String,
        /// Comma-separated list of the schemes this build knows.
        known: String,
    },
    /// A URI parameter the sink or source does not understand.
    #[error("unknown parameter `{param}` in `{uri}`; valid parameters: {valid}")]
    UnknownParam {
        /// The URI, credentials redacted.
        uri: String,
        /// The parameter name as written.
        param: String,
        /// Comma-separated list of the valid parameters.
        valid: String,
    },
    /// A URI parameter (or a CLI option) whose value does not parse.
    #[error("bad value `{value}` for `{param}` in `{uri}`: expected {expected}")]
    BadParam {
        /// The URI, credentials redacted.
        uri: String,
        /// Parameter name.
        param: String,
        /// Value as written.
        value: String,
        /// What would have been accepted.
        expected: String,
    },
    /// A URI that cannot be parsed at all (no scheme, empty path, …).
    #[error("malformed URI `{uri}`: {reason}")]
    MalformedUri {
        /// The URI, credentials redacted.
        uri: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An I/O operation failed; `path` names the file involved.
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        /// What tapedeck was doing ("create", "write", "read", …).
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A file sink would overwrite an existing file.
    #[error(
        "`{path}` already exists; refusing to overwrite it. Add `?overwrite=true` to replace it{append_hint}, or choose another path"
    )]
    FileExists {
        /// The existing file.
        path: PathBuf,
        /// Mentions `append=true` where the format allows appending.
        append_hint: &'static str,
    },
    /// A batch that shares no data column with the destination's locked columns: another
    /// source's rows, which would be all nulls here.
    #[error(
        "{owner} holds columns [{locked}]; these rows have [{got}] — no data column in common (besides identity and time columns), so they are probably another source's and would be all nulls here. Write them to another file or table"
    )]
    UnrelatedColumns {
        /// The destination.
        owner: String,
        /// Its locked column names, comma-separated.
        locked: String,
        /// The batch's column names, comma-separated.
        got: String,
    },
    /// A value whose type conflicts with the locked schema.
    #[error("column `{column}` is locked as {locked} but row {row} has {got}; {hint}")]
    SchemaConflict {
        /// Column name.
        column: String,
        /// Type the schema lock holds.
        locked: DataType,
        /// Type of the offending value.
        got: DataType,
        /// Row number (0-based, counted from the first row the lock saw).
        row: u64,
        /// What the user can do.
        hint: &'static str,
    },
    /// Under the strict policy, a column the lock does not know.
    #[error(
        "row {row} has column `{column}` that is not in the locked schema ({locked}); strict policy refuses it (drop `strict=true` to drop unknown columns with a warning)"
    )]
    UnknownColumn {
        /// Column name.
        column: String,
        /// Row number (0-based).
        row: u64,
        /// Locked column names, comma-separated.
        locked: String,
    },
    /// Two column names that differ only in case.
    #[error(
        "column names `{first}` and `{second}` collide: names are compared ignoring letter case, as SQLite and PostgreSQL do, so they would become one column. Rename one of them"
    )]
    NameCollision {
        /// The name seen first.
        first: String,
        /// The colliding name.
        second: String,
    },
    /// A column type the record model cannot carry.
    #[error(
        "column `{column}` has type {data_type}, which tapedeck does not support ({supported})"
    )]
    UnsupportedType {
        /// Column name.
        column: String,
        /// Its Arrow type.
        data_type: DataType,
        /// Human list of what is supported.
        supported: &'static str,
    },
    /// A text sink was handed a DAQ block without opting in.
    #[error(
        "{sink} refuses DAQ blocks: one long row per channel × sample makes text files huge (a 10 kHz × 8-channel run writes about a gigabyte of text per 15 minutes). Use ipc: (or another columnar sink) for blocks, or add `?accept_blocks=true` to {sink} if you really want long rows"
    )]
    BlocksRefused {
        /// The sink's name (URI, redacted).
        sink: String,
    },
    /// Writing to a sink after `close`.
    #[error("{sink} is closed; it accepts no more writes")]
    SinkClosed {
        /// The sink's name.
        sink: String,
    },
    /// A feature the format cannot do (e.g. appending to an Arrow IPC file).
    #[error("{sink}: {what}")]
    Unsupported {
        /// The sink or source.
        sink: String,
        /// What is not supported and what to do instead.
        what: String,
    },
    /// Malformed input from a line source.
    #[error("{source_name} line {line}: {message}")]
    MalformedInput {
        /// The source (file path or `stdin`).
        source_name: String,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// A message from a broker that cannot be read (neither Arrow nor a JSON object).
    #[error("{source_name}: message {seq}: {message}")]
    MalformedMessage {
        /// The source (its URI, redacted).
        source_name: String,
        /// The message's sequence number in its stream.
        seq: u64,
        /// What is wrong.
        message: String,
    },
    /// An invalid block (shape mismatch, …).
    #[error("invalid block {block_index} from {device}: {message}")]
    InvalidBlock {
        /// Device name.
        device: String,
        /// Block index.
        block_index: u64,
        /// What is wrong.
        message: String,
    },
    /// A sink's delivery from a tape cannot go on: its cursor belongs to another tape, is
    /// damaged, or its destination holds data no cursor accounts for.
    #[error("delivery to {sink}: {message}")]
    Delivery {
        /// The sink's name (URI, redacted).
        sink: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// A sink failed; wraps the sink's error with its name.
    #[error("sink {sink} failed: {source}")]
    Sink {
        /// The sink's name (URI, redacted).
        sink: String,
        /// The underlying error.
        #[source]
        source: Box<Error>,
    },
    /// An invalid option passed to `pipe` or a constructor.
    #[error("invalid option {option}: {message}")]
    InvalidOption {
        /// Option name.
        option: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A database table that should exist does not.
    #[error(
        "table `{table}` does not exist in {database}; create it first, or drop `create_table=false` to let tapedeck create it from the first batch"
    )]
    MissingTable {
        /// The database (path, or `host:port/db` — never credentials).
        database: String,
        /// The table.
        table: String,
    },
    /// A value does not fit the type of the database column it goes to.
    #[error(
        "column `{column}`: the value {value} in row {row} does not fit the table's {target} column; widen the column or convert the value"
    )]
    ValueOutOfRange {
        /// The column.
        column: String,
        /// The row, counted from the first row the sink received.
        row: u64,
        /// The value.
        value: String,
        /// The column's SQL type.
        target: &'static str,
    },
    /// A table's column has a type tapedeck cannot write.
    #[error(
        "{database}, table `{table}`: column `{column}` has type `{column_type}`, which tapedeck cannot write; supported: {supported}"
    )]
    ColumnType {
        /// The database (`host:port/db`, never credentials).
        database: String,
        /// The table (`schema.table`).
        table: String,
        /// The column.
        column: String,
        /// Its SQL type.
        column_type: String,
        /// What tapedeck writes.
        supported: &'static str,
    },
    /// A database server could not be reached (or went away and did not come back in time).
    #[error("cannot connect to {database}: {message}; {hint}")]
    Connect {
        /// The database (`host:port/db`, never credentials).
        database: String,
        /// What went wrong.
        message: String,
        /// What to check.
        hint: &'static str,
    },
    /// A database operation failed; the transaction (if any) was rolled back.
    #[error("{database}, table `{table}`: cannot {action}: {message}")]
    Database {
        /// The database (path, or `host:port/db` — never credentials).
        database: String,
        /// The table involved.
        table: String,
        /// What tapedeck was doing ("insert rows", "create the table", …).
        action: &'static str,
        /// The database's message.
        message: String,
    },
    /// A sink whose first write fixed the record shape got the other shape.
    #[error(
        "{sink} holds {locked}; it cannot also take {got} (one file has one shape). Send {got} to another sink"
    )]
    ShapeMixed {
        /// The sink.
        sink: String,
        /// The shape the first write locked ("readings" or "blocks").
        locked: &'static str,
        /// The shape that arrived.
        got: &'static str,
    },
    /// A Parquet operation failed.
    #[error("cannot {action} Parquet file `{path}`: {message}")]
    Parquet {
        /// What tapedeck was doing.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The parquet crate's message.
        message: String,
    },
    /// A backend that this build does not include.
    #[error(
        "`{scheme}:` needs the `{feature}` cargo feature, which this build of tapedeck leaves out; rebuild with `--features {feature}`"
    )]
    FeatureDisabled {
        /// The URI scheme.
        scheme: &'static str,
        /// The cargo feature that provides it.
        feature: &'static str,
    },
    /// Another process holds the tape's writer lock.
    #[error(
        "tape `{path}` is being written by process {pid}; only one writer at a time (readers — tail, replay, inspect, verify, and `deliver` into other sinks — can run alongside)"
    )]
    TapeLocked {
        /// The tape directory.
        path: PathBuf,
        /// The holder's pid, as its lock file says.
        pid: String,
    },
    /// A read from a row that retention removed from the tape.
    #[error(
        "tape `{path}`: rows before {first} were removed by retention (`record --retain`, `tapedeck trim`); reading from row {requested} is not possible — the first row on the tape is {first}"
    )]
    TapeTrimmed {
        /// The tape directory.
        path: PathBuf,
        /// The row asked for.
        requested: u64,
        /// The first row still on the tape.
        first: u64,
    },
    /// Another process holds the journal's writer lock.
    #[error(
        "journal `{path}` is being written by process {pid}; only one writer at a time (open it read-only to read it alongside)"
    )]
    JournalLocked {
        /// The journal file.
        path: PathBuf,
        /// The holder's pid, as its lock file says.
        pid: String,
    },
    /// A journal record that cannot be read or applied: where, and what.
    #[error("journal `{path}`, record {record} at byte {offset}: {message}")]
    JournalDamaged {
        /// The journal file.
        path: PathBuf,
        /// The record's number in the file (0 is its first).
        record: u64,
        /// The record's byte offset in the file.
        offset: u64,
        /// What failed (bad CRC, bad JSON, a patch that does not apply) and what to do.
        message: String,
    },
    /// A journal transaction that did not commit: the closure failed or panicked, or its
    /// state cannot be written as JSON. State and file are as before it.
    #[error("journal `{path}`: transaction `{action}` rolled back: {message}")]
    JournalRolledBack {
        /// The journal file.
        path: PathBuf,
        /// The transaction's action name.
        action: String,
        /// Why.
        message: String,
    },
    /// A tape that is damaged beyond what recovery handles, or not a tape.
    #[error("tape `{path}`: {message}")]
    Tape {
        /// The tape directory or segment.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The tape writer stopped after a write or fsync failed (a full disk, EIO): rows after
    /// the last acknowledged one were not acknowledged, and it takes no more.
    #[error("tape `{path}`: {message}")]
    TapeStopped {
        /// The tape directory.
        path: PathBuf,
        /// What failed, what is on the tape, and what to do.
        message: String,
        /// The OS error number of the failure (`ENOSPC`, `EIO`), when it was one.
        os_error: Option<i32>,
    },
    /// A pack (`tapedeck pack`, `docs/pack-format.md`) that cannot be written, read or
    /// restored: its bytes do not match what its trailer promises, a frame is damaged, or it is
    /// not a pack.
    #[error("pack `{path}`{}: {message}", at_frame(*.frame, *.offset))]
    Pack {
        /// The pack directory (or the input being packed).
        path: PathBuf,
        /// The frame involved (0-based, in tape order), when one is.
        frame: Option<u64>,
        /// The byte offset involved: in the original input while packing, in the restored
        /// output while unpacking.
        offset: Option<u64>,
        /// What is wrong and what to do.
        message: String,
    },
    /// An Arrow operation failed.
    #[error("{context}: {source}")]
    Arrow {
        /// What tapedeck was doing.
        context: String,
        /// Arrow's error.
        #[source]
        source: ArrowError,
    },
}

fn at_frame(frame: Option<u64>, offset: Option<u64>) -> String {
    match (frame, offset) {
        (Some(f), Some(o)) => format!(", frame {f}, byte {o}"),
        (Some(f), None) => format!(", frame {f}"),
        (None, Some(o)) => format!(", byte {o}"),
        (None, None) => String::new(),
    }
}

impl Error {
    /// Wraps an I/O error with the action and path involved.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// Wraps an Arrow error with what tapedeck was doing.
    pub fn arrow(context: impl Into<String>, source: ArrowError) -> Self {
        Error::Arrow {
            context: context.into(),
            source,
        }
    }

    /// The OS error number behind the error (`ENOSPC` for a full disk), when an I/O failure
    /// caused it.
    pub fn os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            Error::TapeStopped { os_error, .. } => *os_error,
            Error::Sink { source, .. } => source.os_error(),
            _ => None,
        }
    }

    /// True when the error is the user's input or configuration (a bad URI, option or value), as
    /// opposed to a failure while running. The CLI maps this to exit code 2.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::UnknownScheme { .. }
                | Error::UnknownParam { .. }
                | Error::BadParam { .. }
                | Error::MalformedUri { .. }
                | Error::FileExists { .. }
                | Error::InvalidOption { .. }
                | Error::FeatureDisabled { .. }
        )
    }
}
