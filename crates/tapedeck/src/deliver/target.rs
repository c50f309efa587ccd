//! A sink as the destination of a delivery: the sink plus its cursor, kept so that the
//! destination always holds exactly the tape rows `start..cursor`.
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

use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;

use crate::error::{Error, Result};
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "parquet"))]
use crate::sink::cursor::CursorRow;
use crate::sink::cursor_file::{COMPLETE, CursorFile, Found, Position, RENAME_PENDING};
use crate::sink::{Sink, SinkSpec, SinkStats};
use crate::sync::lock;
use crate::tape::reader::Unreadable;
use crate::tape::{StartAt, TapeReader};

/// The tape a delivery reads.
#[derive(Debug, Clone)]
pub struct TapeRef {
    /// Its directory.
    pub dir: PathBuf,
    /// Its id (`TAPEID`).
    pub id: String,
}

/// Takes this delivery's lock on its destination: an exclusive `flock` on a hidden lock file
/// beside a file (`.NAME.tapedeck-lock`), or on a Parquet directory itself, held as long as the
/// target lives. Two deliveries into one destination at once — a `deliver` beside a
/// recorder that already feeds that sink, say — would each resume from the same cursor and
/// write every row twice; the second is refused instead. The lock file is never renamed or
/// removed while in use, so both always lock the same inode.
fn lock_destination(name: &str, lock: &Path) -> Result<std::fs::File> {
    // A directory (a Parquet directory's parts) is locked itself; a file by a hidden file
    // beside it.
    let f = if lock.is_dir() {
        std::fs::File::open(lock).map_err(|e| Error::io("open", lock, e))?
    } else {
        open_or_create(lock)?
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
pub trait Target: Send {
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
    let refuse = |path: &Path| {
        Err(Error::FileExists {
            path: path.to_path_buf(),
            append_hint: " (a delivery continues a file only from its own cursor file)",
        })
    };
    let has_cursor = |path: &Path| hidden_beside(path, "tapedeck-cursor").exists();
    let refused: Option<&Path> = match spec {
        SinkSpec::Csv(path, crate::sink::csv::CsvOptions { file, .. })
        | SinkSpec::Jsonl(path, crate::sink::jsonl::JsonlOptions { file, .. })
        | SinkSpec::Raw(path, crate::sink::raw::RawOptions { file, .. }) => {
            (file_len(path)?.is_some_and(|l| l > 0) && !has_cursor(path) && !file.overwrite)
                .then_some(path.as_path())
        }
        SinkSpec::Ipc(path, o) => {
            (path.exists() && !has_cursor(path) && !o.file.overwrite).then_some(path.as_path())
        }
        #[cfg(feature = "parquet")]
        SinkSpec::Parquet(crate::sink::parquet::ParquetTarget::File(path), o) => {
            (path.exists() && !has_cursor(path) && !o.file.overwrite).then_some(path.as_path())
        }
        #[cfg(feature = "parquet")]
        SinkSpec::Parquet(crate::sink::parquet::ParquetTarget::Dir(dir), _) => {
            let parts = std::fs::read_dir(dir).is_ok_and(|entries| {
                entries.flatten().any(|e| {
                    crate::sink::parquet::part_number(&e.file_name().to_string_lossy()).is_some()
                })
            });
            (parts && !dir.join(".tapedeck-cursor").exists()).then_some(dir.as_path())
        }
        _ => None,
    };
    if let Some(path) = refused {
        return refuse(path);
    }
    Ok(())
}

/// Opens `spec` as a delivery target of `tape`; a destination that holds no delivery yet starts
/// at `start`.
pub fn open(spec: SinkSpec, tape: &TapeRef, start: u64) -> Result<Box<dyn Target>> {
    Ok(match spec {
        SinkSpec::Csv(path, mut o) => {
            let overwrite = o.file.overwrite;
            o.file = crate::sink::FileOptions {
                overwrite: false,
                append: true,
            };
            let name = format!("csv:{}", path.display());
            Box::new(AppendedFile::open(
                name,
                &path,
                overwrite,
                tape,
                start,
                |p| Ok(Box::new(crate::sink::csv::CsvSink::create(p, o.clone())?)),
            )?)
        }
        SinkSpec::Jsonl(path, mut o) => {
            let overwrite = o.file.overwrite;
            o.file = crate::sink::FileOptions {
                overwrite: false,
                append: true,
            };
            let name = format!("jsonl:{}", path.display());
            Box::new(AppendedFile::open(
                name,
                &path,
                overwrite,
                tape,
                start,
                |p| {
                    Ok(Box::new(crate::sink::jsonl::JsonlSink::create(
                        p,
                        o.clone(),
                    )?))
                },
            )?)
        }
        SinkSpec::Raw(path, o) => {
            let overwrite = o.file.overwrite;
            let name = format!("raw:{}", path.display());
            Box::new(AppendedFile::open(
                name,
                &path,
                overwrite,
                tape,
                start,
                |p| Ok(Box::new(crate::sink::raw::RawSink::append(p, o.clone())?)),
            )?)
        }
        SinkSpec::Ipc(path, mut o) => {
            let overwrite = o.file.overwrite;
            o.file.overwrite = true;
            let name = format!("ipc:{}", path.display());
            Box::new(WholeFile::open(
                name,
                &path,
                overwrite,
                tape,
                start,
                Box::new(move |p: &Path| {
                    Ok(Box::new(crate::sink::ipc::IpcSink::create(p, o.clone())?) as Box<dyn Sink>)
                }),
            )?)
        }
        #[cfg(feature = "parquet")]
        SinkSpec::Parquet(crate::sink::parquet::ParquetTarget::File(path), mut o) => {
            let overwrite = o.file.overwrite;
            o.file.overwrite = true;
            let name = format!("parquet:{}", path.display());
            Box::new(WholeFile::open(
                name,
                &path,
                overwrite,
                tape,
                start,
                Box::new(move |p: &Path| {
                    Ok(Box::new(crate::sink::parquet::ParquetSink::create(
                        crate::sink::parquet::ParquetTarget::File(p.to_path_buf()),
                        o.clone(),
                    )?) as Box<dyn Sink>)
                }),
            )?)
        }
        #[cfg(feature = "parquet")]
        SinkSpec::Parquet(crate::sink::parquet::ParquetTarget::Dir(dir), o) => {
            Box::new(parquet_dir::open(&dir, o, tape, start)?)
        }
        #[cfg(feature = "sqlite")]
        SinkSpec::Sqlite(path, o) => {
            let mut sink = crate::sink::sqlite::SqliteSink::open(path, o)?;
            let resume = sink.attach_cursor(&tape.id, start)?;
            Box::new(Counted {
                name: sink.name().to_string(),
                resume,
                sink,
                _lock: None,
            })
        }
        #[cfg(feature = "postgres")]
        SinkSpec::Postgres(o) => {
            let (sink, resume) =
                crate::sink::postgres::PostgresSink::open_delivery(o, &tape.id, start)?;
            Box::new(Counted {
                name: sink.name().to_string(),
                resume,
                sink,
                _lock: None,
            })
        }
        spec @ (SinkSpec::Memory | SinkSpec::Null) => {
            let sink = spec.open()?;
            Box::new(Volatile {
                name: sink.name().to_string(),
                sink,
                start,
                committed: None,
            })
        }
    })
}

use crate::sink::file::sync_parent;
pub use crate::sink::hidden_beside;

fn not_ours(name: String, path: &Path, cursor: &Path) -> Error {
    Error::Delivery {
        sink: name,
        message: format!(
            "{} exists and holds no delivery from this tape (no cursor file {}); deliver into a new file, or add `?overwrite=true` to replace it",
            path.display(),
            cursor.display()
        ),
    }
}

fn other_tape(name: &str, cursor: &Path, theirs: &str, ours: &str) -> Error {
    Error::Delivery {
        sink: name.to_string(),
        message: format!(
            "its cursor {} belongs to tape {theirs}, not to this tape ({ours}); deliver into a new destination, or delete the destination and its cursor file to start over",
            cursor.display()
        ),
    }
}

fn file_len(path: &Path) -> Result<Option<u64>> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(m.len())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

/// Opens `path` for reading and writing, creating it (and its folders) if missing, keeping
/// what it holds.
fn open_or_create(path: &Path) -> Result<std::fs::File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("create directory", parent, e))?;
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io("open", path, e))
}

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

/// The refusal for a file whose cursor cannot be read when the delivery would start it over
/// past the tape's first row (`--from end`): nothing proves which rows the file holds, and
/// starting it over at `start` would throw them away.
fn damaged_refused(
    name: &str,
    path: &Path,
    cursor: &Path,
    problem: &str,
    have: u64,
    start: u64,
) -> Error {
    Error::Delivery {
        sink: name.to_string(),
        message: format!(
            "its cursor {} is damaged ({problem}), so nothing proves which tape rows {} ({have} bytes) holds, and this delivery would start it over at tape row {start} (`--from end`), losing them; the file was not touched. Deliver from the tape's start (without `--from end`) to rebuild it from the tape's first row, or move it and its cursor file aside to deliver into a new file",
            cursor.display(),
            path.display()
        ),
    }
}

/// CSV, JSONL and raw `.dt-raw`: the file is cut back to its committed length on resume, and
/// its data is fdatasynced before any cursor that covers it is written.
struct AppendedFile {
    name: String,
    path: PathBuf,
    sink: Box<dyn Sink>,
    resume: u64,
    committer: Committer,
    /// This delivery created the file (it did not exist) and its cursor: a delivery that
    /// fails before its first commit removes both (see [`Target::abandon`]).
    created: bool,
    /// This delivery's lock on the file (see [`lock_destination`]).
    _lock: std::fs::File,
}

impl AppendedFile {
    fn open(
        name: String,
        path: &Path,
        overwrite: bool,
        tape: &TapeRef,
        start: u64,
        make: impl Fn(&Path) -> Result<Box<dyn Sink>>,
    ) -> Result<AppendedFile> {
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
                let have = existing.unwrap_or(0);
                if have > 0 && start > 0 {
                    return Err(damaged_refused(
                        &name,
                        path,
                        &cursor_path,
                        &problem,
                        have,
                        start,
                    ));
                }
                // From the tape's first row (or into an empty file): every row the file can
                // have held comes back from the tape.
                tracing::warn!(
                    "{name}: its cursor {} is damaged ({problem}); rebuilding the file from tape row {start}",
                    cursor_path.display()
                );
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
        Ok(AppendedFile {
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

impl AppendedFile {
    /// For [`Target::abandon`]: removes the file and its cursor when this delivery created
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

impl Target for AppendedFile {
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

/// A maker of the inner sink of a whole-file target, given the hidden path to write.
type MakeSink = Box<dyn Fn(&Path) -> Result<Box<dyn Sink>> + Send>;

/// Arrow IPC and single Parquet files: written whole under a hidden name, renamed at the end.
struct WholeFile {
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
    /// (Rows the delivery itself skips — `Target::skip` — all lie past `complete`, where it
    /// resumes, so the file never held them and the rebuild may go without them.)
    lost: Vec<Unreadable>,
    /// This delivery's lock on the file (see [`lock_destination`]).
    _lock: std::fs::File,
}

impl WholeFile {
    fn open(
        name: String,
        path: &Path,
        overwrite: bool,
        tape: &TapeRef,
        start: u64,
        make: MakeSink,
    ) -> Result<WholeFile> {
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
                // The rebuilt file replaces this one at the end of the delivery: from a start
                // past the tape's first row that would lose the rows it holds.
                let have = file_len(path)?.unwrap_or(0);
                if have > 0 && start > 0 {
                    return Err(damaged_refused(
                        &name,
                        path,
                        &cursor_path,
                        &problem,
                        have,
                        start,
                    ));
                }
                tracing::warn!(
                    "{name}: its cursor {} is damaged ({problem}); rebuilding the file from tape row {start}",
                    cursor_path.display()
                );
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
        Ok(WholeFile {
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

impl Target for WholeFile {
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

/// SQLite, PostgreSQL and the Parquet directory: the sink keeps the cursor itself, moving it
/// with its own transactions or finished parts.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "parquet"))]
struct Counted<S: CursorRow> {
    name: String,
    sink: S,
    resume: u64,
    /// A Parquet directory's lock (see [`lock_destination`]); databases keep their own (the
    /// cursor row moves only from the value this delivery last committed).
    _lock: Option<std::fs::File>,
}

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "parquet"))]
impl<S: CursorRow> Target for Counted<S> {
    fn name(&self) -> &str {
        &self.name
    }

    fn resume_at(&self) -> u64 {
        self.resume
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        write_tape_batch(&mut self.sink, batch)
    }

    fn commit(&mut self, _end: u64) -> Result<()> {
        self.sink.flush()
    }

    fn committed(&self) -> Option<u64> {
        self.sink.committed_cursor()
    }

    fn finish(&mut self, _end: u64) -> Result<()> {
        self.sink.close()
    }

    fn skip(&mut self, rows: u64) {
        self.sink.skip_cursor(rows);
    }

    fn stats(&self) -> SinkStats {
        self.sink.stats()
    }
}

/// `memory:` and `null:`: nothing survives the process, so nothing to resume.
struct Volatile {
    name: String,
    sink: Box<dyn Sink>,
    start: u64,
    committed: Option<u64>,
}

impl Target for Volatile {
    fn name(&self) -> &str {
        &self.name
    }

    fn resume_at(&self) -> u64 {
        self.start
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        write_tape_batch(self.sink.as_mut(), batch)
    }

    fn commit(&mut self, end: u64) -> Result<()> {
        self.sink.flush()?;
        self.committed = Some(end);
        Ok(())
    }

    fn committed(&self) -> Option<u64> {
        self.committed
    }

    fn finish(&mut self, end: u64) -> Result<()> {
        self.sink.close()?;
        self.committed = Some(end);
        Ok(())
    }

    fn stats(&self) -> SinkStats {
        self.sink.stats()
    }
}

#[cfg(feature = "parquet")]
mod parquet_dir {
    //! The rolling-parts Parquet form under a delivery.

    use std::path::{Path, PathBuf};

    use super::{Counted, TapeRef, other_tape, remove_if_exists};
    use crate::error::{Error, Result};
    use crate::sink::cursor_file::{CursorFile, Found};
    use crate::sink::parquet::{
        ParquetOptions, ParquetSink, ParquetTarget, part_name, part_number,
    };

    fn partial_number(name: &str) -> Option<u64> {
        name.strip_prefix('.')
            .and_then(|r| r.strip_suffix(".partial"))
            .and_then(part_number)
    }

    /// Opens the rolling form under a delivery: recovers the directory (see the module docs)
    /// and returns the sink with its cursor attached.
    pub(super) fn open(
        dir: &Path,
        options: ParquetOptions,
        tape: &TapeRef,
        start: u64,
    ) -> Result<Counted<ParquetSink>> {
        let name = format!("parquet:{}", dir.display());
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        let lock = super::lock_destination(&name, dir)?;
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
            let target = dir.join(part_name(n));
            if last_ready && !target.exists() {
                // Ready and recorded, not yet renamed when the process stopped.
                std::fs::rename(&partial, &target)
                    .map_err(|e| Error::io("rename into place", &target, e))?;
                super::sync_parent(&target)?;
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
        let mut sink = ParquetSink::create(ParquetTarget::Dir(dir.to_path_buf()), options)?;
        sink.deliver_parts(next, cursor, seq);
        Ok(Counted {
            name,
            sink,
            resume: seq,
            _lock: Some(lock),
        })
    }
}
