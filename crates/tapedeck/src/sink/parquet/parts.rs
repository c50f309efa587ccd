//! The rolling form's parts: their names, and how a delivery recovers a directory of them.
//!
//! A delivery into `parquet:DIR/` keeps its cursor file in the directory and commits it with
//! each finished part: a part is finished under its hidden name, the cursor records it, then it
//! is renamed into place. On resume an interrupted rename is completed, unfinished parts are
//! removed, and the rows after the last finished part are delivered again from the tape
//! ([`open_for_delivery`]). This is the sink's "cursor in the same transaction" strategy
//! (`crate::sink::resume`).

use std::path::{Path, PathBuf};

use super::{ParquetLayout, ParquetOptions, ParquetSink};
use crate::error::{Error, Result};
use crate::sink::cursor_file::{CursorFile, Found};
use crate::sink::file::{remove_if_exists, sync_parent};
use crate::sink::resume::{CursorSink, WithCursor, lock_destination, other_tape};
use crate::tape::id::TapeRef;

/// `part-NNNNNN.parquet`
pub(crate) fn part_name(n: u64) -> String {
    format!("part-{n:06}.parquet")
}

/// The number of a `part-NNNNNN.parquet` file name.
pub(crate) fn part_number(name: &str) -> Option<u64> {
    name.strip_prefix("part-")
        .and_then(|r| r.strip_suffix(".parquet"))
        .and_then(|n| n.parse().ok())
}

/// The number after the highest `part-NNNNNN.parquet` in `dir`, so a new run continues it.
pub(super) fn next_part_number(dir: &Path) -> Result<u64> {
    let mut next = 0;
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = part_number(&name) {
            next = next.max(n + 1);
        }
    }
    Ok(next)
}

/// The number of a `.part-NNNNNN.parquet.partial` file name (a part not yet renamed into place).
fn partial_number(name: &str) -> Option<u64> {
    name.strip_prefix('.')
        .and_then(|r| r.strip_suffix(".partial"))
        .and_then(part_number)
}

/// A delivery's cursor for the rolling form: committed when a part is complete and fsynced
/// under its hidden name, before it is renamed into place.
#[derive(Debug)]
pub(super) struct Ledger {
    pub(super) cursor: CursorFile,
    /// The tape rows before this are in finished parts.
    pub(super) seq: u64,
    /// Sequence numbers without rows (quarantined on the tape) since the last finished part.
    pub(super) gap: u64,
}

impl ParquetSink {
    /// Makes this rolling sink the destination of a delivery: parts are numbered from
    /// `next_part`, and each finished part commits `cursor` (finished parts hold the tape rows
    /// before `seq` now).
    fn deliver_parts(&mut self, next_part: u64, cursor: CursorFile, seq: u64) {
        self.next_part = next_part;
        self.ledger = Some(Ledger {
            cursor,
            seq,
            gap: 0,
        });
    }
}

impl CursorSink for ParquetSink {
    fn committed_cursor(&self) -> Option<u64> {
        self.ledger.as_ref().map(|l| l.seq)
    }

    fn skip_cursor(&mut self, rows: u64) {
        if let Some(l) = &mut self.ledger {
            l.gap += rows;
        }
    }
}

/// Does `dir` hold parts of no delivery (parts, and no cursor file)? A delivery refuses such a
/// directory before it creates anything.
pub(super) fn holds_foreign_parts(dir: &Path) -> bool {
    let parts = std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| part_number(&e.file_name().to_string_lossy()).is_some())
    });
    parts && !dir.join(".tapedeck-cursor").exists()
}

/// Opens the rolling form under a delivery: recovers the directory (see the module docs)
/// and returns the sink with its cursor attached.
pub(super) fn open_for_delivery(
    dir: &Path,
    options: ParquetOptions,
    tape: &TapeRef,
    start: u64,
) -> Result<WithCursor> {
    let name = format!("parquet:{}", dir.display());
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    let lock = lock_destination(&name, dir)?;
    let cursor_path = dir.join(".tapedeck-cursor");
    let mut parts = Vec::new();
    let mut partials = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let file = entry.file_name().to_string_lossy().into_owned();
        if let Some(n) = part_number(&file) {
            parts.push(n);
        } else if let Some(n) = partial_number(&file) {
            partials.push((n, dir.join(&file)));
        }
    }
    let (cursor, seq, next) = match CursorFile::open(&cursor_path, &tape.id)? {
        Found::Ours(c) => {
            let (seq, next) = c.position().map_or((c.start(), 0), |p| (p.seq, p.value));
            (c, seq, next)
        }
        Found::OtherTape(theirs) => {
            return Err(other_tape(&name, &cursor_path, &theirs, &tape.id));
        }
        Found::Damaged(problem) => {
            return Err(Error::Delivery {
                sink: name,
                message: format!(
                    "its cursor {} is damaged ({problem}); move the parts elsewhere and deliver into an empty directory",
                    cursor_path.display()
                ),
            });
        }
        Found::Missing => {
            if !parts.is_empty() {
                return Err(Error::Delivery {
                    sink: name,
                    message: format!(
                        "{} holds parts that no delivery from this tape wrote (no cursor file {}); deliver into an empty directory",
                        dir.display(),
                        cursor_path.display()
                    ),
                });
            }
            (CursorFile::create(&cursor_path, &tape.id, start)?, start, 0)
        }
    };
    for (n, partial) in partials {
        let last_ready = next > 0 && n == next - 1;
        let visible = dir.join(part_name(n));
        if last_ready && !visible.exists() {
            // Ready and recorded, not yet renamed when the process stopped.
            std::fs::rename(&partial, &visible)
                .map_err(|e| Error::io("rename into place", &visible, e))?;
            sync_parent(&visible)?;
        } else {
            remove_if_exists(&partial)?;
        }
    }
    for n in parts.into_iter().filter(|n| *n >= next) {
        // Cannot happen with parts renamed after their cursor; a stray copy would
        // duplicate rows, so it goes.
        let stray: PathBuf = dir.join(part_name(n));
        tracing::warn!(
            "{name}: removing {} — no cursor accounts for it",
            stray.display()
        );
        remove_if_exists(&stray)?;
    }
    let mut sink = ParquetSink::create(ParquetLayout::Dir(dir.to_path_buf()), options)?;
    sink.deliver_parts(next, cursor, seq);
    Ok(WithCursor {
        sink: Box::new(sink),
        resume: seq,
        lock: Some(lock),
    })
}
