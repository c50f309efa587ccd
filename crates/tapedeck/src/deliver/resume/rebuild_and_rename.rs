//! Rebuild and rename: Arrow IPC files and single Parquet files, which are only readable when
//! complete. The file only appears complete: it is written under a hidden name and renamed at
//! the end of the delivery. A later delivery with new rows rebuilds the file from the tape
//! (`start..end`) and replaces it in one rename — unless the tape can no longer supply rows the
//! visible file holds (a damaged or quarantined range): then the rebuild is discarded, the old
//! file is kept as it is, and the delivery fails saying which rows and what to do. A rebuild
//! never has fewer rows than the file it replaces.

use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;

use crate::deliver::destination::{
    Destination, hidden_beside, not_ours, start_over_damaged, write_tape_batch,
};
use crate::error::{Error, Result};
use crate::sink::cursor_file::{COMPLETE, CursorFile, Found, Position, RENAME_PENDING};
use crate::sink::file::{file_len, remove_if_exists, sync_parent};
use crate::sink::resume::{MakeSink, lock_destination, other_tape};
use crate::sink::{Sink, SinkStats};
use crate::tape::id::TapeRef;
use crate::tape::reader::Unreadable;
use crate::tape::{StartAt, TapeReader};

/// Arrow IPC and single Parquet files: written whole under a hidden name, renamed at the end.
pub(crate) struct RebuildAndRename {
    name: String,
    path: PathBuf,
    partial: PathBuf,
    make: MakeSink,
    inner: Option<Box<dyn Sink>>,
    /// Stats of the copy finished by `finish`.
    finished: SinkStats,
    cursor: CursorFile,
    /// The visible file holds `start..complete`.
    complete: Option<u64>,
    tape: TapeRef,
    /// Rows of `start..complete` (the visible file's) the tape could not supply to the rebuild.
    /// Any makes the rebuild worthless: it would replace the file with one that lacks them.
    /// (Rows the delivery itself skips — `Destination::skip` — all lie past `complete`, where it
    /// resumes, so the file never held them and the rebuild may go without them.)
    lost: Vec<Unreadable>,
    /// This delivery's lock on the file (see [`lock_destination`]).
    _lock: std::fs::File,
}

impl RebuildAndRename {
    pub(crate) fn open(
        name: String,
        path: &Path,
        overwrite: bool,
        tape: &TapeRef,
        start: u64,
        make: MakeSink,
    ) -> Result<RebuildAndRename> {
        let lock = lock_destination(&name, &hidden_beside(path, "tapedeck-lock"))?;
        let cursor_path = hidden_beside(path, "tapedeck-cursor");
        let partial = hidden_beside(path, "tapedeck-partial");
        let (mut cursor, complete) = match CursorFile::open(&cursor_path, &tape.id)? {
            Found::Ours(c) => match c.position() {
                Some(p) if p.flags & RENAME_PENDING != 0 => {
                    // The hidden copy was complete and the rename may not have happened.
                    if file_len(&partial)?.is_some() {
                        std::fs::rename(&partial, path)
                            .map_err(|e| Error::io("rename into place", path, e))?;
                        sync_parent(path)?;
                    }
                    (c, Some(p))
                }
                Some(p) if p.flags & COMPLETE != 0 => (c, Some(p)),
                _ => (c, None),
            },
            Found::OtherTape(theirs) => {
                return Err(other_tape(&name, &cursor_path, &theirs, &tape.id));
            }
            Found::Damaged(problem) => {
                // The rebuilt file replaces what this one holds.
                start_over_damaged(
                    &name,
                    path,
                    &cursor_path,
                    &problem,
                    file_len(path)?.unwrap_or(0),
                    start,
                )?;
                (CursorFile::create(&cursor_path, &tape.id, start)?, None)
            }
            Found::Missing => {
                if path.exists() && !overwrite {
                    return Err(not_ours(name, path, &cursor_path));
                }
                (CursorFile::create(&cursor_path, &tape.id, start)?, None)
            }
        };
        // Whatever hidden copy is left is an unfinished rebuild.
        remove_if_exists(&partial)?;
        if let Some(p) = complete.filter(|p| p.flags & RENAME_PENDING != 0) {
            cursor.commit(
                Position {
                    seq: p.seq,
                    value: 0,
                    flags: COMPLETE,
                },
                true,
            )?;
        }
        let complete = complete.map(|p| p.seq);
        Ok(RebuildAndRename {
            name,
            path: path.to_path_buf(),
            partial,
            make,
            inner: None,
            finished: SinkStats::default(),
            complete,
            cursor,
            tape: tape.clone(),
            lost: Vec::new(),
            _lock: lock,
        })
    }

    /// Starts the hidden copy; when the visible file holds rows, copies them from the tape first.
    /// Rows of the visible file the tape cannot supply refuse the rebuild (see [`Self::refusal`]).
    fn start_copy(&mut self) -> Result<&mut Box<dyn Sink>> {
        if !self.lost.is_empty() {
            return Err(self.refuse());
        }
        if self.inner.is_none() {
            let mut inner = (self.make)(&self.partial)?;
            let start = self.cursor.start();
            if let Some(end) = self.complete.filter(|e| *e > start) {
                let mut reader =
                    TapeReader::open(&self.tape.dir, StartAt::Seq(start))?.until(Some(end));
                let mut at = start;
                while let Some((first, batch)) = reader.next_batch()? {
                    if first > at {
                        self.lose(at, first, &reader.take_unreadable());
                    }
                    at = first.saturating_add(batch.num_rows() as u64);
                    if self.lost.is_empty() {
                        write_tape_batch(inner.as_mut(), &batch)?;
                    }
                }
                if at < end {
                    self.lose(at, end, &reader.take_unreadable());
                }
            }
            self.inner = Some(inner);
            if !self.lost.is_empty() {
                return Err(self.refuse());
            }
        }
        self.inner.as_mut().ok_or_else(|| Error::SinkClosed {
            sink: self.name.clone(),
        })
    }

    /// Records rows `from..to` of the visible file as ones the tape can no longer supply,
    /// with what the reader found wrong there.
    fn lose(&mut self, from: u64, to: u64, damaged: &[Unreadable]) {
        self.lost.push(Unreadable::covering(from, to, damaged));
    }

    /// Discards the hidden rebuild (the visible file and its cursor stay as they are) and
    /// returns the error that says why.
    fn refuse(&mut self) -> Error {
        drop(self.inner.take());
        if let Err(e) = remove_if_exists(&self.partial) {
            // The next delivery removes it when it opens; the visible file is what matters.
            tracing::warn!("{}: {e}", self.name);
        }
        self.refusal()
    }

    /// The refusal to replace the visible file with a rebuild that lacks rows in `lost`.
    fn refusal(&self) -> Error {
        let start = self.cursor.start();
        let held = self.complete.unwrap_or(start);
        let rows: u64 = self
            .lost
            .iter()
            .map(|l| l.to.saturating_sub(l.from))
            .fold(0, u64::saturating_add);
        let mut ranges = self
            .lost
            .iter()
            .take(3)
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        if self.lost.len() > 3 {
            ranges.push_str(&format!("; and {} more ranges", self.lost.len() - 3));
        }
        Error::Delivery {
            sink: self.name.clone(),
            message: format!(
                "{path} holds tape rows {start}..{held}, but the tape can no longer supply {rows} of them: {ranges}. Rebuilding the file with the new rows would drop them, so {path} was kept exactly as it was (its cursor stays at {held}) and the rebuild was discarded. Deliver into a new file to get a copy without those rows and with the new ones (the old file is untouched; keep it for the rows only it still holds); `tapedeck verify` shows the damage",
                path = self.path.display(),
            ),
        }
    }
}

impl Destination for RebuildAndRename {
    fn name(&self) -> &str {
        &self.name
    }

    fn replaced_at_finish(&self) -> bool {
        true
    }

    fn resume_at(&self) -> u64 {
        self.complete.unwrap_or(self.cursor.start())
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        write_tape_batch(self.start_copy()?.as_mut(), batch)
    }

    fn commit(&mut self, _end: u64) -> Result<()> {
        if !self.lost.is_empty() {
            return Err(self.refuse());
        }
        match &mut self.inner {
            Some(s) => s.flush(),
            None => Ok(()),
        }
    }

    fn committed(&self) -> Option<u64> {
        self.complete
    }

    fn finish(&mut self, end: u64) -> Result<()> {
        if !self.lost.is_empty() {
            return Err(self.refuse());
        }
        if self.inner.is_none() && self.complete.is_some() {
            // Nothing new: the visible file is already complete.
            return Ok(());
        }
        let mut inner = match self.inner.take() {
            Some(i) => i,
            None => (self.make)(&self.partial)?,
        };
        inner.close()?;
        self.finished = inner.stats();
        std::fs::File::open(&self.partial)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io("fsync", &self.partial, e))?;
        // The cursor is about to say the hidden copy is complete; after a power failure the next
        // run renames it into place, so its name must be durable first.
        sync_parent(&self.partial)?;
        self.cursor.commit(
            Position {
                seq: end,
                value: 0,
                flags: RENAME_PENDING,
            },
            true,
        )?;
        std::fs::rename(&self.partial, &self.path)
            .map_err(|e| Error::io("rename into place", &self.path, e))?;
        sync_parent(&self.path)?;
        self.cursor.commit(
            Position {
                seq: end,
                value: 0,
                flags: COMPLETE,
            },
            true,
        )?;
        self.complete = Some(end);
        Ok(())
    }

    fn stats(&self) -> SinkStats {
        self.inner.as_ref().map_or(self.finished, |s| s.stats())
    }
}
