//! A sink as the destination of a delivery: the sink plus its cursor, kept so that the
//! destination always holds exactly the tape rows `start..cursor`.
//!
//! Each sink names its strategy ([`crate::sink::ResumeBy`]); [`open`] builds the matching
//! [`Destination`] from `resume/`, one module per strategy.
//!
//! How each kind keeps the cursor with its data:
//!
//! - **SQLite, PostgreSQL** — a row in `tapedeck_cursor`, moved in the same transaction as the
//!   rows it counts.
//! - **CSV, JSONL, raw `.dt-raw`** — a cursor file (`.NAME.tapedeck-cursor`, [`crate::sink::cursor_file`]) with the
//!   committed sequence number and the file's length at that point. Each commit fdatasyncs the
//!   file before it writes the cursor (on a thread of its own, so the delivery does not wait on
//!   the disk), so a cursor never covers bytes a power failure can take back. On resume the file
//!   is cut back to that length and continued. A cursor that cannot be read is rebuilt from the
//!   tape's first row; from a later start (`--from end`) a file with bytes is refused instead.
//! - **Parquet directory** — finished parts plus the cursor file in the directory: a part is
//!   finished under its hidden name, the cursor records it, then it is renamed into place. On
//!   resume an interrupted rename is completed, unfinished parts are removed, and the rows after
//!   the last finished part are delivered again from the tape.
//! - **Arrow IPC file, single Parquet file** — the file only appears complete: it is written
//!   under a hidden name and renamed at the end of the delivery. A later delivery with new rows
//!   rebuilds the file from the tape (`start..end`) and replaces it in one rename — unless the
//!   tape can no longer supply rows the visible file holds (a damaged or quarantined range):
//!   then the rebuild is discarded, the old file is kept as it is, and the delivery fails
//!   saying which rows and what to do. A rebuild never has fewer rows than the file it replaces.
//! - **memory:, null:** — nothing to resume; they start where the delivery starts.

use std::path::Path;

use arrow_array::RecordBatch;

use super::resume;
use crate::error::{Error, Result};
use crate::sink::file::file_len;
use crate::sink::{ResumeBy, Sink, SinkSpec, SinkStats};
use crate::tape::id::TapeRef;

pub use crate::sink::hidden_beside;

/// Hands a tape batch to a sink as the direct path did: DAQ blocks (stored on the tape in the
/// wide layout, marked) as blocks — so every sink rule about blocks (a CSV refusing them
/// without `accept_blocks=true`, SQLite's summary rows, Parquet's shape lock) holds the same
/// with or without a tape — and rows as rows.
pub(crate) fn write_tape_batch(sink: &mut dyn Sink, batch: &RecordBatch) -> Result<()> {
    if crate::record::Block::is_wide_block_batch(batch)
        && let Some(blocks) = crate::record::Block::from_wide_batch(batch)?
    {
        for block in &blocks {
            sink.write_block(block)?;
        }
        return Ok(());
    }
    sink.write(batch)
}

/// A sink fed by a delivery; see the module docs.
pub trait Destination: Send {
    /// The sink's name (credentials removed).
    fn name(&self) -> &str;
    /// The first tape row the delivery must send.
    fn resume_at(&self) -> u64;
    /// Writes rows that follow the ones written before, in tape order.
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Makes what was written visible and, where the destination allows, commits the cursor
    /// `end` with it.
    fn commit(&mut self, end: u64) -> Result<()>;
    /// The cursor the destination holds now (`None` while it holds nothing committed).
    fn committed(&self) -> Option<u64>;
    /// Commits `end` and closes the sink.
    fn finish(&mut self, end: u64) -> Result<()>;
    /// The tape has no rows for the next `rows` sequence numbers (a damaged range recovery
    /// quarantined): destinations that count their cursor by rows count these too.
    fn skip(&mut self, _rows: u64) {}
    /// Rows and bytes written in this run; `pending` rows are written but not yet in the
    /// destination (a database away).
    fn stats(&self) -> SinkStats;
    /// True when the destination is rebuilt and replaced only when the delivery finishes, so
    /// its cursor stays put until then.
    fn replaced_at_finish(&self) -> bool {
        false
    }
    /// The delivery failed. A destination this delivery created and never committed a row to
    /// is removed, so the retry the error suggests starts clean; anything holding rows stays.
    fn abandon(&mut self) {}
}

/// Checks, before anything is created or any tape opened, that `spec` names no existing file
/// this delivery would refuse: a file (or a Parquet directory holding parts) with no delivery
/// cursor beside it, and no `overwrite=true`. A usage error ([`Error::FileExists`], exit 2),
/// like the same file given to a sink without a tape. A file with a cursor is checked against
/// the tape when the delivery opens.
pub fn check_destination(spec: &SinkSpec) -> Result<()> {
    let has_cursor = |path: &Path| hidden_beside(path, "tapedeck-cursor").exists();
    let refused = match spec.resume_by() {
        ResumeBy::TruncateToCursor {
            path, overwrite, ..
        } => (file_len(&path)?.is_some_and(|l| l > 0) && !has_cursor(&path) && !overwrite)
            .then_some(path),
        ResumeBy::RebuildAndRename {
            path, overwrite, ..
        } => (path.exists() && !has_cursor(&path) && !overwrite).then_some(path),
        _ => None,
    };
    if let Some(path) = refused {
        return Err(Error::FileExists {
            path,
            append_hint: " (a delivery continues a file only from its own cursor file)",
        });
    }
    spec.config().check_for_delivery()
}

/// Opens `spec` as the destination of a delivery of `tape`; a destination that holds no
/// delivery yet starts at `start`.
pub fn open(spec: SinkSpec, tape: &TapeRef, start: u64) -> Result<Box<dyn Destination>> {
    let name = spec.describe();
    Ok(match spec.resume_by() {
        ResumeBy::TruncateToCursor {
            path,
            overwrite,
            reopen,
        } => Box::new(resume::TruncateToCursor::open(
            name, &path, overwrite, tape, start, reopen,
        )?),
        ResumeBy::RebuildAndRename {
            path,
            overwrite,
            create,
        } => Box::new(resume::RebuildAndRename::open(
            name, &path, overwrite, tape, start, create,
        )?),
        ResumeBy::CursorInTransaction(open) => {
            Box::new(resume::CursorInTransaction::new(open(tape, start)?))
        }
        ResumeBy::Nothing => Box::new(resume::Nothing::new(spec.open()?, start)),
    })
}

pub(super) fn not_ours(name: String, path: &Path, cursor: &Path) -> Error {
    Error::Delivery {
        sink: name,
        message: format!(
            "{} exists and holds no delivery from this tape (no cursor file {}); deliver into a new file, or add `?overwrite=true` to replace it",
            path.display(),
            cursor.display()
        ),
    }
}

/// A file whose cursor cannot be read is started over at `start` — from the tape's first row
/// (or into an empty file) every row it can have held comes back from the tape. From a later
/// start (`--from end`) that would throw away the rows it holds, and nothing proves which they
/// are: refused, the file untouched.
pub(super) fn start_over_damaged(
    name: &str,
    path: &Path,
    cursor: &Path,
    problem: &str,
    have: u64,
    start: u64,
) -> Result<()> {
    if have > 0 && start > 0 {
        return Err(Error::Delivery {
            sink: name.to_string(),
            message: format!(
                "its cursor {} is damaged ({problem}), so nothing proves which tape rows {} ({have} bytes) holds, and this delivery would start it over at tape row {start} (`--from end`), losing them; the file was not touched. Deliver from the tape's start (without `--from end`) to rebuild it from the tape's first row, or move it and its cursor file aside to deliver into a new file",
                cursor.display(),
                path.display()
            ),
        });
    }
    tracing::warn!(
        "{name}: its cursor {} is damaged ({problem}); rebuilding the file from tape row {start}",
        cursor.display()
    );
    Ok(())
}
