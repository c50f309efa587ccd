//! Truncate to cursor: CSV, JSONL and raw `.dt-raw` files. The file is appended to; a cursor
//! file beside it records the committed tape row and the file's length then. On resume the file
//! is cut back to that length and continued. Each commit fdatasyncs the file before it writes
//! the cursor (on a thread of its own, so the delivery does not wait on the disk), so a cursor
//! never covers bytes a power failure can take back. A cursor that cannot be read is rebuilt
//! from the tape's first row; from a later start (`--from end`) a file with bytes is refused.

use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;

use crate::deliver::destination::{
    Destination, hidden_beside, not_ours, start_over_damaged, write_tape_batch,
};
use crate::error::{Error, Result};
use crate::sink::cursor_file::{CursorFile, Found, Position};
use crate::sink::file::{file_len, open_or_create};
use crate::sink::resume::{MakeSink, lock_destination, other_tape};
use crate::sink::{Sink, SinkStats};
use crate::sync::lock;
use crate::tape::id::TapeRef;

/// Cuts `path` to `len` bytes (creating it empty when `len` is 0 and it does not exist). A
/// file already that long is left alone: nothing to cut, and no metadata change to make durable.
fn cut(path: &Path, len: u64) -> Result<()> {
    let f = open_or_create(path)?;
    let have = f.metadata().map_err(|e| Error::io("stat", path, e))?.len();
    if have == len {
        return Ok(());
    }
    f.set_len(len).map_err(|e| Error::io("truncate", path, e))
}

/// CSV, JSONL and raw `.dt-raw`: the file is cut back to its committed length on resume, and
/// its data is fdatasynced before any cursor that covers it is written.
pub(crate) struct TruncateToCursor {
    name: String,
    path: PathBuf,
    sink: Box<dyn Sink>,
    resume: u64,
    committer: Committer,
    /// This delivery created the file (it did not exist) and its cursor: a delivery that
    /// fails before its first commit removes both (see [`Destination::abandon`]).
    created: bool,
    /// This delivery's lock on the file (see [`lock_destination`]).
    _lock: std::fs::File,
}

impl TruncateToCursor {
    pub(crate) fn open(
        name: String,
        path: &Path,
        overwrite: bool,
        tape: &TapeRef,
        start: u64,
        make: MakeSink,
    ) -> Result<TruncateToCursor> {
        let lock = lock_destination(&name, &hidden_beside(path, "tapedeck-lock"))?;
        let cursor_path = hidden_beside(path, "tapedeck-cursor");
        let existing = file_len(path)?;
        let created = existing.is_none() && !cursor_path.exists();
        // Either the committed state is kept (file cut back to it), or the file starts over
        // from `Err(start)`.
        let kept = match CursorFile::open(&cursor_path, &tape.id)? {
            Found::Ours(c) => {
                let (seq, len) = c.position().map_or((c.start(), 0), |p| (p.seq, p.value));
                match existing {
                    Some(have) if have >= len => {
                        cut(path, len)?;
                        let committed = c.position().map(|p| p.seq);
                        Ok((c, seq, committed))
                    }
                    have => {
                        tracing::warn!(
                            "{name}: the file holds {} bytes but its cursor says {len} were committed (lost in a power failure, or changed by hand); rebuilding it from the tape",
                            have.unwrap_or(0)
                        );
                        Err(c.start())
                    }
                }
            }
            Found::OtherTape(theirs) => {
                return Err(other_tape(&name, &cursor_path, &theirs, &tape.id));
            }
            Found::Damaged(problem) => {
                // The file starts over from the tape, if that loses nothing.
                start_over_damaged(
                    &name,
                    path,
                    &cursor_path,
                    &problem,
                    existing.unwrap_or(0),
                    start,
                )?;
                Err(start)
            }
            Found::Missing => {
                if existing.is_some_and(|l| l > 0) && !overwrite {
                    return Err(not_ours(name, path, &cursor_path));
                }
                Err(start)
            }
        };
        let (cursor, resume, committed) = match kept {
            Ok(k) => k,
            Err(start) => {
                cut(path, 0)?;
                (
                    CursorFile::create(&cursor_path, &tape.id, start)?,
                    start,
                    None,
                )
            }
        };
        let sink = make(path)?;
        // A handle of our own on the data file, for fdatasync: the sink owns its writer.
        let data = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| Error::io("open", path, e))?;
        let mut cursor = cursor;
        // Opening may have cut the file below its committed length: a `.dt-raw` file loses its
        // `final` marker, which the new chunks replace. The cursor moves to the cut length
        // (same row) before anything new is written, durably, so a kill before the first
        // commit leaves a cursor that cuts the file at a chunk boundary, not inside a new chunk.
        if let Some(p) = cursor.position()
            && let Some(now) = file_len(path)?
            && now < p.value
        {
            data.sync_data()
                .map_err(|e| Error::io("fdatasync", path, e))?;
            cursor.commit(
                Position {
                    seq: p.seq,
                    value: now,
                    flags: p.flags,
                },
                true,
            )?;
        }
        let committer = Committer::start(
            &name,
            Durable {
                data,
                path: path.to_path_buf(),
                cursor,
            },
            committed,
        )?;
        Ok(TruncateToCursor {
            sink,
            name,
            path: path.to_path_buf(),
            resume,
            committer,
            created,
            _lock: lock,
        })
    }

    /// The file's length now: everything written has reached it (`write(2)`).
    fn len(&self) -> Result<u64> {
        Ok(file_len(&self.path)?.unwrap_or(0))
    }
}

impl TruncateToCursor {
    /// For [`Destination::abandon`]: removes the file and its cursor when this delivery created
    /// them and committed nothing.
    fn remove_if_untouched(&mut self) {
        if !self.created || self.committer.committed().is_some() {
            return;
        }
        let _ = self.sink.close();
        let _ = self.committer.stop(&self.name);
        let cursor = hidden_beside(&self.path, "tapedeck-cursor");
        let lock = hidden_beside(&self.path, "tapedeck-lock");
        for p in [&self.path, &cursor, &lock] {
            if let Err(e) = std::fs::remove_file(p)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(
                    "{}: cannot remove {} after the failure: {e}",
                    self.name,
                    p.display()
                );
            }
        }
        self.created = false;
    }
}

impl Destination for TruncateToCursor {
    fn abandon(&mut self) {
        self.remove_if_untouched();
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn resume_at(&self) -> u64 {
        self.resume
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        write_tape_batch(self.sink.as_mut(), batch)
    }

    fn commit(&mut self, end: u64) -> Result<()> {
        self.committer.check(&self.name)?;
        self.sink.flush()?;
        let len = self.len()?;
        self.committer.ask(Position {
            seq: end,
            value: len,
            flags: 0,
        });
        Ok(())
    }

    fn committed(&self) -> Option<u64> {
        self.committer.committed()
    }

    fn finish(&mut self, end: u64) -> Result<()> {
        self.sink.close()?;
        let mut durable = self.committer.stop(&self.name)?;
        let len = self.len()?;
        // The last commit waits for the disk: when `finish` returns, the file and its cursor
        // are durable.
        durable
            .commit(
                Position {
                    seq: end,
                    value: len,
                    flags: 0,
                },
                true,
            )
            .map_err(|f| commit_failed(&self.name, &f, self.committer.committed()))?;
        self.committer.finished(end);
        Ok(())
    }

    fn stats(&self) -> SinkStats {
        self.sink.stats()
    }
}

/// A text file's data handle and cursor: what a commit makes durable, in order.
struct Durable {
    data: std::fs::File,
    path: PathBuf,
    cursor: CursorFile,
}

impl Durable {
    /// fdatasyncs the data file, then writes the cursor `p` (fdatasynced too when `sync_cursor`).
    /// In this order a cursor never covers bytes a power failure can take back: after one, the
    /// file is at least as long as its cursor says, and the next delivery cuts it back to that.
    /// The error says what failed (the delivery's error names the sink and what to do).
    fn commit(&mut self, p: Position, sync_cursor: bool) -> std::result::Result<(), String> {
        self.data.sync_data().map_err(|e| {
            format!(
                "cannot fdatasync {} before moving its cursor to tape row {}: {e}",
                self.path.display(),
                p.seq
            )
        })?;
        self.cursor
            .commit(p, sync_cursor)
            .map_err(|e| format!("cannot move the cursor to tape row {}: {e}", p.seq))
    }
}

/// Where the committer thread stands, shared with the delivery.
#[derive(Default)]
struct CommitState {
    /// The newest position asked for and not yet taken up (commits asked for while one is
    /// syncing merge into the newest).
    wanted: Option<Position>,
    /// The cursor as written (`None` before the first commit).
    committed: Option<u64>,
    /// The first failure; from then on nothing more is committed.
    failed: Option<String>,
    /// No more commits: the thread exits once `wanted` is done.
    stop: bool,
}

struct CommitShared {
    state: std::sync::Mutex<CommitState>,
    changed: std::sync::Condvar,
}

/// Commits a text file's cursor on its own thread ([`Durable::commit`]: data fdatasynced,
/// then the cursor). The delivery never waits on the disk at a commit: a live delivery commits
/// each time it catches up with the tape, up to a hundred times a second, and waiting for each
/// fdatasync made a 1M-row CSV delivery committing every 10,000 rows about 20% slower, while on
/// this thread it costs nothing measurable. `finish` waits for the last commit.
struct Committer {
    shared: std::sync::Arc<CommitShared>,
    thread: Option<std::thread::JoinHandle<Durable>>,
}

impl Committer {
    fn start(name: &str, durable: Durable, committed: Option<u64>) -> Result<Committer> {
        let shared = std::sync::Arc::new(CommitShared {
            state: std::sync::Mutex::new(CommitState {
                committed,
                ..CommitState::default()
            }),
            changed: std::sync::Condvar::new(),
        });
        let path = durable.path.clone();
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("commit {name}"))
            .spawn(move || Committer::run(&s, durable))
            .map_err(|e| Error::io("start the cursor thread for", path, e))?;
        Ok(Committer {
            shared,
            thread: Some(thread),
        })
    }

    fn run(shared: &CommitShared, mut durable: Durable) -> Durable {
        let mut st = lock(&shared.state);
        while st.failed.is_none() {
            if let Some(p) = st.wanted.take() {
                drop(st);
                let r = durable.commit(p, false);
                st = lock(&shared.state);
                match r {
                    Ok(()) => st.committed = Some(p.seq),
                    Err(f) => st.failed = Some(f),
                }
                shared.changed.notify_all();
            } else if st.stop {
                break;
            } else {
                st = shared
                    .changed
                    .wait(st)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        }
        durable
    }

    /// The failure of an earlier commit, if there was one.
    fn check(&self, name: &str) -> Result<()> {
        let st = lock(&self.shared.state);
        match &st.failed {
            Some(f) => Err(commit_failed(name, f, st.committed)),
            None => Ok(()),
        }
    }

    fn ask(&self, p: Position) {
        lock(&self.shared.state).wanted = Some(p);
        self.shared.changed.notify_all();
    }

    fn committed(&self) -> Option<u64> {
        lock(&self.shared.state).committed
    }

    /// Lets the thread finish what was asked, stops it, and returns the handles (or the
    /// failure of a commit).
    fn stop(&mut self, name: &str) -> Result<Durable> {
        lock(&self.shared.state).stop = true;
        self.shared.changed.notify_all();
        let durable = match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(d)) => d,
            Some(Err(_)) | None => {
                return Err(Error::Delivery {
                    sink: name.to_string(),
                    message: "its cursor thread is gone (it panicked, or the delivery finished twice); the cursor stays where it was last written, and the next delivery continues from there".into(),
                });
            }
        };
        self.check(name)?;
        Ok(durable)
    }

    /// Records the final commit made after [`Committer::stop`].
    fn finished(&self, end: u64) {
        lock(&self.shared.state).committed = Some(end);
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        // A delivery that stops (abort, error) keeps the commit it asked for last.
        lock(&self.shared.state).stop = true;
        self.shared.changed.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn commit_failed(name: &str, failure: &str, committed: Option<u64>) -> Error {
    let at = committed.map_or_else(
        || "where this delivery began".to_string(),
        |c| format!("at tape row {c}"),
    );
    Error::Delivery {
        sink: name.to_string(),
        message: format!(
            "{failure}; its cursor stays {at}, and nothing written after it counts: the next delivery cuts the file back to the cursor and continues from there. Check the disk and the file system, then deliver again"
        ),
    }
}
