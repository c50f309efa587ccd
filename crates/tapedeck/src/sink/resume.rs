//! How a delivery from a tape resumes a sink: what a sink says about its cursor ([`ResumeBy`]),
//! the trait of sinks that keep the cursor themselves ([`CursorSink`]), and the lock a delivery
//! takes on its destination.
//!
//! Every sink declares one of four strategies in [`super::SinkConfig::resume_by`]; the
//! deliveries (`deliver/resume/`) implement them, once each, for every sink that names them:
//!
//! - **truncate to cursor** — a file appended to, with a cursor file beside it recording the
//!   committed row and the file's length then; on resume the file is cut back to that length
//!   (CSV, JSONL, raw `.dt-raw`);
//! - **rebuild and rename** — a file that is only correct when complete, rebuilt from the tape
//!   under a hidden name and renamed over the old one at the end (Arrow IPC, one Parquet file);
//! - **cursor in the same transaction** — the sink moves the cursor itself with the data it
//!   commits (SQLite and PostgreSQL in a `tapedeck_cursor` row, a Parquet directory with each
//!   finished part) and only says where it stands;
//! - **nothing** — nothing outlives the process (`memory:`, `null:`).
//!
//! This module sits with the sinks, not in `deliver/`, so no sink imports the delivery layer
//! above it (`docs/architecture.md`).

use std::path::Path;

use super::Sink;
use crate::error::{Error, Result};
use crate::tape::id::TapeRef;

/// Makes the sink a file-based strategy writes, given the path to write: the visible file
/// (truncate to cursor, opened for appending) or a hidden copy (rebuild and rename).
pub type MakeSink = Box<dyn Fn(&Path) -> Result<Box<dyn Sink>> + Send>;

/// Opens a sink that keeps its own cursor for a delivery of `tape` that starts at the given row
/// when the destination holds no delivery yet.
pub type OpenWithCursor = Box<dyn FnOnce(&TapeRef, u64) -> Result<WithCursor> + Send>;

/// A sink that keeps its own cursor, opened for a delivery.
pub struct WithCursor {
    /// The sink, its cursor attached.
    pub sink: Box<dyn CursorSink>,
    /// The first tape row it still needs.
    pub resume: u64,
    /// The delivery's lock on the destination, when the sink has no lock of its own (a Parquet
    /// directory; a database's cursor row moves only from the value this delivery read).
    pub lock: Option<std::fs::File>,
}

/// How a delivery keeps a sink's cursor; see the module docs.
#[non_exhaustive]
pub enum ResumeBy {
    /// Cut the file back to the length its cursor file records, then append.
    TruncateToCursor {
        /// The file.
        path: std::path::PathBuf,
        /// `overwrite=true`: a file without a cursor may be started over.
        overwrite: bool,
        /// Opens the sink appending to the file at the path given.
        reopen: MakeSink,
    },
    /// Rebuild the whole file under a hidden name and rename it into place at the end.
    RebuildAndRename {
        /// The visible file.
        path: std::path::PathBuf,
        /// `overwrite=true`: a file without a cursor may be replaced.
        overwrite: bool,
        /// Creates the sink writing a new file at the (hidden) path given.
        create: MakeSink,
    },
    /// The sink moves the cursor in the transactions that commit its rows.
    CursorInTransaction(OpenWithCursor),
    /// Nothing to resume: the sink starts where the delivery starts.
    Nothing,
}

impl ResumeBy {
    /// [`ResumeBy::TruncateToCursor`] for the file at `path`, reopened for appending by
    /// `reopen`.
    pub(crate) fn truncate_to_cursor<S: Sink + 'static>(
        path: &Path,
        overwrite: bool,
        reopen: impl Fn(&Path) -> Result<S> + Send + 'static,
    ) -> ResumeBy {
        ResumeBy::TruncateToCursor {
            path: path.to_path_buf(),
            overwrite,
            reopen: Box::new(move |p| Ok(Box::new(reopen(p)?))),
        }
    }

    /// [`ResumeBy::RebuildAndRename`] for the file at `path`, each copy made by `create`.
    pub(crate) fn rebuild_and_rename<S: Sink + 'static>(
        path: &Path,
        overwrite: bool,
        create: impl Fn(&Path) -> Result<S> + Send + 'static,
    ) -> ResumeBy {
        ResumeBy::RebuildAndRename {
            path: path.to_path_buf(),
            overwrite,
            create: Box::new(move |p| Ok(Box::new(create(p)?))),
        }
    }
}

/// A sink that moves a delivery's cursor itself, with the data it commits.
pub trait CursorSink: Sink {
    /// The cursor as committed.
    fn committed_cursor(&self) -> Option<u64>;
    /// Counts `rows` sequence numbers the tape has no rows for into the cursor.
    fn skip_cursor(&mut self, rows: u64);
}

/// Takes a delivery's lock on its destination: an exclusive `flock` on a hidden lock file
/// beside a file (`.NAME.tapedeck-lock`), or on a Parquet directory itself, held as long as the
/// returned file lives. Two deliveries into one destination at once — a `deliver` beside a
/// recorder that already feeds that sink, say — would each resume from the same cursor and
/// write every row twice; the second is refused instead. The lock file is never renamed or
/// removed while in use, so both always lock the same inode.
pub(crate) fn lock_destination(name: &str, lock: &Path) -> Result<std::fs::File> {
    // A directory (a Parquet directory's parts) is locked itself; a file by a hidden file
    // beside it.
    let f = if lock.is_dir() {
        std::fs::File::open(lock).map_err(|e| Error::io("open", lock, e))?
    } else {
        super::file::open_or_create(lock)?
    };
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Delivery {
            sink: name.to_string(),
            message: format!(
                "another delivery is writing it right now (it holds {}): a recorder that already feeds this sink, or another `tapedeck deliver`. Deliver into another destination, or let the other one finish",
                lock.display()
            ),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io("lock", lock, e)),
    }
}

/// The refusal of a destination whose cursor belongs to another tape.
pub(crate) fn other_tape(name: &str, cursor: &Path, theirs: &str, ours: &str) -> Error {
    Error::Delivery {
        sink: name.to_string(),
        message: format!(
            "its cursor {} belongs to tape {theirs}, not to this tape ({ours}); deliver into a new destination, or delete the destination and its cursor file to start over",
            cursor.display()
        ),
    }
}
