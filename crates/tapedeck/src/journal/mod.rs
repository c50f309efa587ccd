//! The journal: an application's state kept as a history of changes that survives crashes and
//! cannot be quietly rewritten (kanta's job, done durably).
//!
//! A [`Journal`] holds a state (any `T: Serialize + DeserializeOwned`) as a JSON value and a
//! file of records, one per committed transaction: its sequence number, wall time, action name,
//! optional author, and the change as an RFC 6902 JSON Patch. A transaction either commits —
//! one record appended, durable under the [`FsyncPolicy`] when the call returns — or leaves the
//! state and the file exactly as they were (an error or a panic in the closure rolls back).
//! Two ways to change the state:
//!
//! - [`Journal::transaction`]: a closure changes a typed copy of the state; the journal diffs
//!   before and after (cost grows with the state: fine for small states);
//! - [`Journal::set`] / [`Journal::remove`]: one change at a JSON pointer, recorded as the patch
//!   directly (cost grows with the change, not the state).
//!
//! **Durability.** `always`: a transaction returns after an `fdatasync` covering its record;
//! transactions of several threads share fsyncs (group commit, `commit.rs`). `interval:D`: an
//! fsync when at least `D` passed since the last one. `never`: records reach the OS, not the
//! disk.
//!
//! **Formats** ([`JournalFormat`], `format.rs`): CRC32C-framed JSON lines (the default, readable
//! in an editor) or CRC32C-framed MessagePack; chosen when a journal is created, detected when
//! it is opened.
//!
//! **Opening** replays the file: the first record is a snapshot of the state, each later one a
//! patch. A torn tail (a crash mid-append: an unterminated or unreadable last record) is cut off
//! and reported in [`Journal::recovery`], never an error. Damage followed by good records is an
//! error naming the record and byte offset ([`Error::JournalDamaged`]); a read-only open
//! ([`Journal::open_read_only`], no lock) reads up to it instead.
//!
//! **Snapshots and rotation.** [`Journal::snapshot`] (or `snapshot_every` records, or
//! `snapshot_bytes` bytes of them) starts a new
//! file with a snapshot of the state and keeps the history before it, readable, as
//! `NAME.<seq>-<date>` — so opening replays only the records since the last snapshot. The switch is
//! crash-safe: the new file is complete and durable under `NAME.next` before the renames, and an
//! interrupted switch is finished (or undone) by the next open.
//!
//! **History** (`history.rs`): [`Journal::records`] reads every record ever committed, one at a
//! time, across the rotated files; [`JournalFollower`] reads a journal while a writer in another
//! process appends to it and rotates it; [`key_changes`] says which top-level keys each record
//! changed.
//!
//! The byte format is in `docs/journal-format.md`. Only one writer at a time: a lock file
//! `.NAME.lock` (the holder's pid in it); a second writer is told that pid.
//!
//! ```
//! use std::collections::BTreeMap;
//! use tapedeck::journal::{Journal, JournalOptions};
//!
//! # let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("run.journal");
//! let j: Journal<BTreeMap<String, f64>> = Journal::open(&path, JournalOptions::default()).unwrap();
//! j.transaction("calibrate", |s| {
//!     s.insert("gain".into(), 2.5);
//!     Ok::<_, String>(())
//! })
//! .unwrap();
//! j.set("offset", "/offset", &0.125).unwrap();
//! // A failed transaction changes nothing.
//! assert!(j.transaction("bad", |s| { s.clear(); Err::<(), _>("no") }).is_err());
//! drop(j);
//!
//! let j: Journal<BTreeMap<String, f64>> = Journal::open(&path, JournalOptions::default()).unwrap();
//! assert_eq!(j.state().unwrap().get("gain"), Some(&2.5));
//! assert_eq!(j.state().unwrap().get("offset"), Some(&0.125));
//! let actions: Vec<String> = j.history().unwrap().into_iter().map(|r| r.action).collect();
//! assert_eq!(actions, ["open", "calibrate", "offset"]);
//! ```

mod commit;
mod files;
mod format;
mod history;

use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::durability::FsyncPolicy;
use crate::error::{Error, Result};
use crate::storage::Storage;
use crate::sync::lock;

use commit::GroupCommit;
use files::{fs_storage, next_name, rotated_name, take_lock, write_new_file};
pub use format::JournalFormat;
use format::RecordReader;
pub use history::{JournalFollower, KeyChanges, KeyTracker, Records, key_changes};

/// A change of the state's shape, run once when a journal older than it is opened for writing,
/// and recorded as a record of its own (action `migrate <name>`, its `version`).
#[derive(Debug, Clone)]
pub struct Migration {
    /// The state's version after it (1, 2, …); a new journal starts at the highest.
    pub version: u32,
    /// What it does, for the history (`nest gains by channel`).
    pub name: &'static str,
    /// The change, on the state as JSON; an error stops the opening with nothing written.
    pub apply: fn(&mut Value) -> std::result::Result<(), String>,
}

/// How a journal is kept.
#[derive(Debug, Clone, Default)]
pub struct JournalOptions {
    /// The migrations of the state, in any order (run by version).
    pub migrations: Vec<Migration>,
    /// When a committed record is on the disk (default `interval:10ms`).
    pub fsync: FsyncPolicy,
    /// Start a new file with a snapshot after this many records (`None`: only on request).
    pub snapshot_every: Option<u64>,
    /// Start a new file with a snapshot once the live file's change records (after its
    /// snapshot) pass this many bytes (`None`: no limit by size).
    pub snapshot_bytes: Option<u64>,
    /// The framing of a new journal's files (an existing journal keeps the one it has).
    pub format: JournalFormat,
    /// Recorded as the author of every transaction, unless one says otherwise.
    pub author: Option<String>,
}

/// One record of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Its sequence number: 0 for the first record ever, one more for each later one.
    pub seq: u64,
    /// Wall time of the commit, µs since the Unix epoch.
    pub time: i64,
    /// The action's name.
    pub action: String,
    /// Who did it, if said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// The change, as an RFC 6902 JSON Patch (absent in a snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<json_patch::Patch>,
    /// The whole state (a snapshot: the first record of every file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Value>,
    /// The state's version from this record on (in snapshots and migrations; absent: 0, or
    /// unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
}

impl Record {
    /// Applies this record to `state`: a snapshot replaces it, a patch changes it.
    pub fn apply_to(&self, state: &mut Value) -> std::result::Result<(), String> {
        match (&self.snapshot, &self.patch) {
            (Some(s), _) => {
                *state = s.clone();
                Ok(())
            }
            (None, Some(p)) => {
                json_patch::patch(state, p).map_err(|e| format!("its patch does not apply: {e}"))
            }
            (None, None) => Err("a record with neither patch nor snapshot".into()),
        }
    }
}

/// One top-level key changed by a record: what `tapedeck meta history` prints and the query
/// engine's `meta` table holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyChange {
    /// The record's sequence number.
    pub seq: u64,
    /// The record's wall time, µs since the epoch.
    pub time: i64,
    /// The record's action.
    pub action: String,
    /// The record's author.
    pub author: Option<String>,
    /// The key.
    pub key: String,
    /// Its value before (`None`: it was not set).
    pub old: Option<Value>,
    /// Its value after (`None`: it was removed).
    pub new: Option<Value>,
}

/// What opening found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalRecovery {
    /// A torn tail cut off: (byte offset where it began, bytes cut).
    pub torn_tail: Option<(u64, u64)>,
    /// An interrupted snapshot switch that opening finished or undid.
    pub switch_repaired: bool,
    /// Records replayed (snapshot included).
    pub records: u64,
}

struct Core {
    value: Value,
    /// The state's version (the last migration run on it).
    version: u32,
    /// The next record's sequence number.
    next_seq: u64,
    /// Records in the live file (its snapshot included).
    in_file: u64,
    /// Bytes of the live file.
    file_bytes: u64,
    /// Bytes of the live file's preamble and snapshot.
    snapshot_len: u64,
    /// The live file's first record (its snapshot).
    file_first_seq: u64,
    /// The live file's framing.
    format: JournalFormat,
    /// Records written (a count: records `0..written`).
    written: u64,
    failed: Option<String>,
    last_sync: Instant,
}

/// Crash-safe, audited state; see the module docs.
pub struct Journal<T> {
    storage: Arc<dyn Storage>,
    name: String,
    path: PathBuf,
    options: JournalOptions,
    core: Mutex<Core>,
    /// The shared fsyncs.
    commit: GroupCommit,
    /// Held for reading while the live file is fsynced by name, for writing while a snapshot
    /// renames it (lock order: `core` briefly, then `gate`; `core`, then `gate`).
    gate: std::sync::RwLock<()>,
    recovery: JournalRecovery,
    read_only: bool,
    _lock: Option<std::fs::File>,
    _state: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Journal<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

/// The state read from a live file.
struct Replayed {
    value: Value,
    version: u32,
    format: JournalFormat,
    /// Whole, good records read (the snapshot included).
    good: u64,
    /// The first and the last good record's sequence numbers.
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    /// Bytes of the preamble and the whole, good records.
    good_len: u64,
    /// Bytes of the preamble and the first record (the snapshot).
    first_end: u64,
    /// A bad record followed by good ones, or written whole: (record number, offset, problem).
    damage: Option<(u64, u64, String)>,
    /// A torn tail: (offset, bytes).
    torn: Option<(u64, u64)>,
}

/// Reads the live file `name` record by record into the state it holds.
fn replay(storage: &dyn Storage, name: &str) -> Result<Replayed> {
    let path = storage.describe(name);
    let io = |e| Error::io("read", &path, e);
    let mut out = Replayed {
        value: Value::Null,
        version: 0,
        format: JournalFormat::default(),
        good: 0,
        first_seq: None,
        last_seq: None,
        good_len: 0,
        first_end: 0,
        damage: None,
        torn: None,
    };
    let Some(mut reader) = RecordReader::open(storage, name, 0).map_err(io)? else {
        return Ok(out);
    };
    out.format = reader.format();
    if !reader.preamble_whole() {
        out.torn = Some((0, storage.len(name).map_err(io)?.unwrap_or(0)));
        return Ok(out);
    }
    out.good_len = reader.offset();
    let mut number = 0u64;
    let mut bad: Option<(u64, u64, String)> = None;
    let mut end = out.good_len;
    while let Some(item) = reader.next_item().map_err(io)? {
        end = item.end;
        match item.read {
            format::Read::Good(record) if bad.is_none() => {
                let applied = if number == 0 && record.snapshot.is_none() {
                    Err("the first record is not a snapshot".to_string())
                } else {
                    record.apply_to(&mut out.value)
                };
                if let Err(problem) = applied {
                    // The record was written whole (its CRC checks out): not a torn append,
                    // whatever follows it.
                    out.damage = Some((number, item.offset, problem));
                    break;
                }
                out.good_len = item.end;
                out.good += 1;
                if record.snapshot.is_some() {
                    out.version = record.version.unwrap_or(0);
                } else if let Some(v) = record.version {
                    out.version = v;
                }
                if out.first_seq.is_none() {
                    out.first_seq = Some(record.seq);
                    out.first_end = item.end;
                }
                out.last_seq = Some(record.seq);
            }
            format::Read::Good(_) => {
                // A good record after a bad one: the bad one is damage, not a torn tail.
                out.damage = bad.take();
                break;
            }
            format::Read::Bad { problem, whole } => {
                if whole && bad.is_none() {
                    out.damage = Some((number, item.offset, problem));
                    break;
                }
                bad.get_or_insert((number, item.offset, problem));
            }
        }
        number += 1;
    }
    if out.damage.is_none()
        && let Some((_, offset, _)) = bad
    {
        out.torn = Some((offset, reader.file_len().max(end).saturating_sub(offset)));
    }
    Ok(out)
}

/// What a look at a journal file, changing nothing, found.
pub(crate) struct ReadValue {
    /// The state after its good records (`Null` when it has none).
    pub value: Value,
    /// Where its good records end.
    pub good_len: u64,
    /// The file's length.
    pub len: u64,
}

/// Every record of the journal file `name` that checks out, in file order, the bad ones
/// skipped (salvage: what a damaged file still holds after its damage).
pub(crate) fn good_records(storage: &dyn Storage, name: &str) -> Result<Vec<Record>> {
    let io = |e| Error::io("read", storage.describe(name), e);
    let mut out = Vec::new();
    if let Some(mut reader) = RecordReader::open(storage, name, 0).map_err(io)? {
        while let Some(item) = reader.next_item().map_err(io)? {
            if let format::Read::Good(r) = item.read {
                out.push(r);
            }
        }
    }
    Ok(out)
}

/// Reads the journal file `name` up to its first bad record, changing nothing (the tape's
/// manifest is read so by `verify` and readers).
pub(crate) fn read_value(storage: &dyn Storage, name: &str) -> Result<ReadValue> {
    let r = replay(storage, name)?;
    let len = storage
        .len(name)
        .map_err(|e| Error::io("stat", storage.describe(name), e))?
        .unwrap_or(0);
    Ok(ReadValue {
        value: r.value,
        good_len: r.good_len,
        len,
    })
}

impl<T: Serialize + DeserializeOwned> Journal<T> {
    /// Opens (or creates, with `T::default()`) the journal file at `path` for writing.
    pub fn open(path: impl AsRef<Path>, options: JournalOptions) -> Result<Journal<T>>
    where
        T: Default,
    {
        Self::open_with(path, options, T::default)
    }

    /// Like [`Journal::open`], with the initial state of a new journal made by `initial`.
    pub fn open_with(
        path: impl AsRef<Path>,
        options: JournalOptions,
        initial: impl FnOnce() -> T,
    ) -> Result<Journal<T>> {
        let path = path.as_ref();
        let (storage, name) = fs_storage(path)?;
        let lock = take_lock(path)?;
        let mut j = Self::open_storage(storage, &name, options, initial)?;
        j._lock = Some(lock);
        Ok(j)
    }

    /// Opens the journal `name` in `storage` for writing (no lock: the caller owns the
    /// storage; the simulated disk in tests).
    pub fn open_storage(
        storage: Arc<dyn Storage>,
        name: &str,
        options: JournalOptions,
        initial: impl FnOnce() -> T,
    ) -> Result<Journal<T>> {
        let path = storage.describe(name);
        let io = |action, e| Error::io(action, storage.describe(name), e);
        let mut recovery = JournalRecovery::default();
        // An interrupted switch to a new file: finish it (the new file is complete and
        // durable before the renames begin) or, if the old file is still there, undo it.
        let next = next_name(name);
        let live = storage.len(name).map_err(|e| io("stat", e))?;
        if storage.len(&next).map_err(|e| io("stat", e))?.is_some() {
            if live.is_some() {
                storage.remove(&next).map_err(|e| io("remove", e))?;
            } else {
                storage.rename(&next, name).map_err(|e| io("rename", e))?;
                storage
                    .sync_dir(crate::storage::dir_of(name))
                    .map_err(|e| io("fsync the directory of", e))?;
            }
            recovery.switch_repaired = true;
        }
        // A journal is created as `NAME.new` — its first record written and fsynced — and then
        // renamed into place, so a live file always begins with a whole snapshot. A `NAME.new`
        // left over is a creation that did not finish: `open` never returned, nothing was
        // committed.
        let creating = files::creating_name(name);
        if storage.len(&creating).map_err(|e| io("stat", e))?.is_some() {
            storage.remove(&creating).map_err(|e| io("remove", e))?;
        }
        // A missing or empty file (an empty one: a creation in place by an older version that
        // did not finish) starts with the initial state; a file whose first record does not
        // check out is damage, never started over.
        let found = match storage.len(name).map_err(|e| io("stat", e))? {
            Some(n) if n > 0 => Some(replay(storage.as_ref(), name)?),
            _ => None,
        };
        // An older version created the file in place: a crash then left a first JSON line
        // without its newline (and no history). That is an unfinished creation, not damage.
        let unfinished = match &found {
            Some(r)
                if r.good == 0 && r.damage.is_none() && r.format == JournalFormat::JsonLines =>
            {
                let len = storage.len(name).map_err(|e| io("stat", e))?.unwrap_or(0);
                let mut last = [0u8; 1];
                let terminated = len > 0
                    && storage.read_at(name, len - 1, &mut last).is_ok()
                    && last[0] == b'\n';
                let history = storage
                    .list()
                    .map_err(|e| io("list", e))?
                    .iter()
                    .any(|n| files::rotated_seq(name, n).is_some());
                !terminated && !history
            }
            _ => false,
        };
        let found = if unfinished {
            recovery.torn_tail = found.as_ref().and_then(|r| r.torn);
            None
        } else {
            found
        };
        let r = match found {
            Some(r) if r.good > 0 || r.damage.is_some() => r,
            Some(r) => {
                let (offset, bytes) = r.torn.unwrap_or((0, 0));
                return Err(Error::JournalDamaged {
                    path,
                    record: 0,
                    offset,
                    message: format!(
                        "its first record (the snapshot every journal file starts with) does not check out ({bytes} bytes); the file is left as it is — restore it from a copy, or move it aside to start a new journal"
                    ),
                });
            }
            None => {
                let value =
                    serde_json::to_value(initial()).map_err(|e| Error::JournalRolledBack {
                        path: path.clone(),
                        action: "open".into(),
                        message: format!("the initial state cannot be written as JSON: {e}"),
                    })?;
                let record = Record {
                    seq: 0,
                    time: crate::record::time::now_micros(),
                    action: "open".into(),
                    author: options.author.clone(),
                    patch: None,
                    snapshot: Some(value),
                    version: options
                        .migrations
                        .iter()
                        .map(|m| m.version)
                        .max()
                        .or(Some(0)),
                };
                write_new_file(storage.as_ref(), &creating, options.format, &record)?;
                storage
                    .rename(&creating, name)
                    .map_err(|e| io("rename", e))?;
                storage
                    .sync_dir(crate::storage::dir_of(name))
                    .map_err(|e| io("fsync the directory of", e))?;
                replay(storage.as_ref(), name)?
            }
        };
        if let Some((record, offset, message)) = r.damage {
            return Err(Error::JournalDamaged {
                path,
                record,
                offset,
                message: format!(
                    "{message}; it was written whole or good records follow it, so this is damage, not a torn tail. Open the journal read-only to read up to it, or restore the file from a copy"
                ),
            });
        }
        if let Some((offset, bytes)) = r.torn {
            storage
                .truncate(name, offset)
                .map_err(|e| io("truncate", e))?;
            tracing::warn!(
                "journal {}: cut a torn tail of {bytes} bytes at byte {offset} (a crash while a record was written; it was never committed)",
                path.display()
            );
            recovery.torn_tail = Some((offset, bytes));
        }
        recovery.records = r.good;
        let journal = Journal::assemble(storage, name.to_string(), options, r, recovery, false);
        journal.migrate()?;
        Ok(journal)
    }

    /// Opens the journal at `path` to read it: no lock (a writer may be running), nothing
    /// repaired; a torn tail or damage ends what is read.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Journal<T>> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(Error::io(
                "open",
                path,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        let (storage, name) = fs_storage(path)?;
        let r = replay(storage.as_ref(), &name)?;
        Ok(Journal::assemble(
            storage,
            name,
            JournalOptions::default(),
            r,
            JournalRecovery::default(),
            true,
        ))
    }

    /// A journal over `storage` holding what `r` read from the live file `name`.
    fn assemble(
        storage: Arc<dyn Storage>,
        name: String,
        options: JournalOptions,
        r: Replayed,
        recovery: JournalRecovery,
        read_only: bool,
    ) -> Journal<T> {
        let next_seq = r.last_seq.map_or(0, |seq| seq.saturating_add(1));
        Journal {
            path: storage.describe(&name),
            storage,
            name,
            options,
            core: Mutex::new(Core {
                value: r.value,
                version: r.version,
                next_seq,
                in_file: r.good,
                file_bytes: r.good_len,
                snapshot_len: r.first_end,
                file_first_seq: r.first_seq.unwrap_or(0),
                format: r.format,
                written: next_seq,
                failed: None,
                last_sync: Instant::now(),
            }),
            // Nothing counts as synced until this process fsyncs: records replayed may still be
            // only in the page cache of a process that died.
            commit: GroupCommit::new(0),
            gate: std::sync::RwLock::new(()),
            recovery,
            read_only,
            _lock: None,
            _state: PhantomData,
        }
    }

    /// The state now.
    pub fn state(&self) -> Result<T> {
        let core = lock(&self.core);
        serde_json::from_value(core.value.clone()).map_err(|e| Error::JournalRolledBack {
            path: self.path.clone(),
            action: "read".into(),
            message: format!("the state does not read as this type: {e}"),
        })
    }

    /// The state now, as JSON.
    pub fn value(&self) -> Value {
        lock(&self.core).value.clone()
    }

    /// What opening found and repaired.
    pub fn recovery(&self) -> &JournalRecovery {
        &self.recovery
    }

    /// The sequence number the next record gets (records committed so far, ever).
    pub fn next_seq(&self) -> u64 {
        lock(&self.core).next_seq
    }

    /// Runs `change` on a copy of the state; commits the difference as one record, or — if it
    /// returns an error or panics — leaves state and file as they were
    /// ([`Error::JournalRolledBack`], with the closure's error or panic message).
    pub fn transaction<R, E: std::fmt::Display>(
        &self,
        action: &str,
        change: impl FnOnce(&mut T) -> std::result::Result<R, E>,
    ) -> Result<R> {
        let rolled_back = |message: String| Error::JournalRolledBack {
            path: self.path.clone(),
            action: action.to_string(),
            message,
        };
        let mut core = lock(&self.core);
        let mut state: T = serde_json::from_value(core.value.clone())
            .map_err(|e| rolled_back(format!("the state does not read as this type: {e}")))?;
        let result = match catch_unwind(AssertUnwindSafe(|| change(&mut state))) {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(rolled_back(e.to_string())),
            Err(panic) => {
                let message = crate::sync::panic_message(panic.as_ref())
                    .unwrap_or("the transaction panicked");
                return Err(rolled_back(format!("it panicked: {message}")));
            }
        };
        let after = serde_json::to_value(&state)
            .map_err(|e| rolled_back(format!("the new state cannot be written as JSON: {e}")))?;
        let patch = json_patch::diff(&core.value, &after);
        let seq = self.append(&mut core, action, patch, after)?;
        drop(core);
        self.make_durable(seq)?;
        Ok(result)
    }

    /// Sets the value at JSON pointer `pointer` (`/gains/ai0`; the parent must exist) and
    /// commits that as one record: the cost is the change's, not the state's.
    pub fn set(&self, action: &str, pointer: &str, value: &impl Serialize) -> Result<()> {
        let value = serde_json::to_value(value).map_err(|e| Error::JournalRolledBack {
            path: self.path.clone(),
            action: action.to_string(),
            message: format!("the value cannot be written as JSON: {e}"),
        })?;
        let op = json_patch::PatchOperation::Add(json_patch::AddOperation {
            path: self.pointer(action, pointer)?,
            value,
        });
        self.apply(action, pointer, op)
    }

    /// Removes the value at JSON pointer `pointer` and commits that as one record.
    pub fn remove(&self, action: &str, pointer: &str) -> Result<()> {
        let op = json_patch::PatchOperation::Remove(json_patch::RemoveOperation {
            path: self.pointer(action, pointer)?,
        });
        self.apply(action, pointer, op)
    }

    fn pointer(&self, action: &str, pointer: &str) -> Result<json_patch::jsonptr::PointerBuf> {
        json_patch::jsonptr::PointerBuf::parse(pointer).map_err(|e| Error::JournalRolledBack {
            path: self.path.clone(),
            action: action.to_string(),
            message: format!("`{pointer}` is not a JSON pointer (write it as `/key/sub`): {e}"),
        })
    }

    /// Applies one operation at `pointer` to the state in place and commits it; if the record
    /// cannot be written, the value that was at `pointer` is put back. Nothing here is
    /// proportional to the state.
    fn apply(&self, action: &str, pointer: &str, op: json_patch::PatchOperation) -> Result<()> {
        let rolled_back = |message: String| Error::JournalRolledBack {
            path: self.path.clone(),
            action: action.to_string(),
            message,
        };
        let mut core = lock(&self.core);
        // The operation that undoes `op`, should its record not be written: put back what was
        // at `pointer`, or take away what `op` added there (an `add` into an array inserts).
        let parent = pointer.rsplit_once('/').map_or("", |(p, _)| p);
        let parent_len = core
            .value
            .pointer(parent)
            .and_then(Value::as_array)
            .map(Vec::len);
        let inserts = matches!(op, json_patch::PatchOperation::Add(_)) && parent_len.is_some();
        // `-` (after the last element) names, once added, the element at the old length.
        let undo_pointer = match (pointer.rsplit_once('/'), parent_len) {
            (Some((p, "-")), Some(n)) => format!("{p}/{n}"),
            _ => pointer.to_string(),
        };
        let path = self.pointer(action, &undo_pointer)?;
        let undo = match core.value.pointer(pointer).cloned() {
            // The root is replaced whole, never inserted into.
            Some(value) if !inserts || pointer.is_empty() => {
                json_patch::PatchOperation::Add(json_patch::AddOperation { path, value })
            }
            _ => json_patch::PatchOperation::Remove(json_patch::RemoveOperation { path }),
        };
        // `patch` applies all of it or nothing.
        json_patch::patch(&mut core.value, std::slice::from_ref(&op))
            .map_err(|e| rolled_back(format!("the change does not apply to the state: {e}")))?;
        let seq = match self.append_record(&mut core, action, json_patch::Patch(vec![op]), None) {
            Ok(seq) => seq,
            Err(e) => {
                if json_patch::patch(&mut core.value, &[undo]).is_err() {
                    core.failed = Some("the state could not be rolled back".into());
                }
                return Err(e);
            }
        };
        self.after_append(&mut core);
        drop(core);
        self.make_durable(seq)
    }

    /// Writes the record of a change (under the core's lock); the state moves to `after` only
    /// once the bytes are written.
    fn append(
        &self,
        core: &mut Core,
        action: &str,
        patch: json_patch::Patch,
        after: Value,
    ) -> Result<u64> {
        let seq = self.append_record(core, action, patch, None)?;
        core.value = after;
        self.after_append(core);
        Ok(seq)
    }

    /// Writes the record of `patch` (already applied, or about to be, by the caller).
    fn append_record(
        &self,
        core: &mut Core,
        action: &str,
        patch: json_patch::Patch,
        version: Option<u32>,
    ) -> Result<u64> {
        if self.read_only {
            return Err(Error::JournalRolledBack {
                path: self.path.clone(),
                action: action.to_string(),
                message: "the journal is open read-only".into(),
            });
        }
        if let Some(f) = &core.failed {
            return Err(Error::JournalRolledBack {
                path: self.path.clone(),
                action: action.to_string(),
                message: format!(
                    "an earlier write failed ({f}); reopen the journal (what was committed is kept)"
                ),
            });
        }
        let seq = core.next_seq;
        let record = Record {
            seq,
            time: crate::record::time::now_micros(),
            action: action.to_string(),
            author: self.options.author.clone(),
            patch: Some(patch),
            snapshot: None,
            version,
        };
        let line = format::encode(core.format, &record).map_err(|e| Error::JournalRolledBack {
            path: self.path.clone(),
            action: action.to_string(),
            message: format!("the record cannot be written: {e}"),
        })?;
        if let Err(e) = self.storage.append(&self.name, &line) {
            // What may have reached the file is cut by the next open (a torn tail).
            core.failed = Some(e.to_string());
            return Err(Error::io("append to", &self.path, e));
        }
        core.next_seq = seq.saturating_add(1);
        core.written = core.next_seq;
        core.in_file += 1;
        core.file_bytes = core.file_bytes.saturating_add(line.len() as u64);
        Ok(seq)
    }

    /// After a record is written: a snapshot when one is due.
    fn after_append(&self, core: &mut Core) {
        let due = self
            .options
            .snapshot_every
            .is_some_and(|n| core.in_file > n.max(1))
            || self
                .options
                .snapshot_bytes
                .is_some_and(|n| core.file_bytes.saturating_sub(core.snapshot_len) > n);
        if due && let Err(e) = self.rotate(core) {
            // The record is committed (it is in the file, or in the history the next open
            // finishes switching to); only the snapshot failed. No more writes to a file
            // that may be half switched.
            tracing::warn!("journal {}: snapshot failed: {e}", self.path.display());
            core.failed = Some(format!("a snapshot failed: {e}"));
        }
    }

    /// Returns once record `seq` is durable under the policy; fsyncs of several threads are
    /// shared (the one that syncs covers every record written before it started).
    fn make_durable(&self, seq: u64) -> Result<()> {
        match self.options.fsync {
            FsyncPolicy::Never => Ok(()),
            FsyncPolicy::Interval(d) => {
                let due = lock(&self.core).last_sync.elapsed() >= d;
                if due { self.sync_to(seq) } else { Ok(()) }
            }
            FsyncPolicy::Always => self.sync_to(seq),
        }
    }

    fn sync_to(&self, seq: u64) -> Result<()> {
        self.commit.sync_to(seq, || {
            let target = {
                let core = lock(&self.core);
                // After a failed write or fsync nothing more is acknowledged: an fsync that
                // succeeds now proves nothing (Linux marked the lost pages clean).
                if let Some(f) = &core.failed {
                    return Err(Error::io(
                        "fsync",
                        &self.path,
                        std::io::Error::other(format!(
                            "an earlier write or fsync failed ({f}); reopen the journal"
                        )),
                    ));
                }
                core.written
            };
            // A snapshot switch renames the live file: not while it is being synced.
            let gate = self
                .gate
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let synced_now = self.storage.sync(&self.name);
            // Released before `core` is taken again: a snapshot holds `core` while it waits here.
            drop(gate);
            if let Err(e) = synced_now {
                // A failed fsync is never retried: what it covered may be lost.
                lock(&self.core).failed = Some(e.to_string());
                return Err(Error::io("fsync", &self.path, e));
            }
            lock(&self.core).last_sync = Instant::now();
            Ok(target)
        })
    }

    /// Runs the migrations newer than the state's version, in version order, each committed
    /// as its own record and made durable before the next runs.
    fn migrate(&self) -> Result<()> {
        let mut migrations = self.options.migrations.clone();
        migrations.sort_by_key(|m| m.version);
        for m in migrations {
            let mut core = lock(&self.core);
            if m.version <= core.version {
                continue;
            }
            let action = format!("migrate {}", m.name);
            let mut after = core.value.clone();
            (m.apply)(&mut after).map_err(|message| Error::JournalRolledBack {
                path: self.path.clone(),
                action: action.clone(),
                message: format!(
                    "migration to version {} failed: {message}; the journal was not changed",
                    m.version
                ),
            })?;
            let patch = json_patch::diff(&core.value, &after);
            let seq = self.append_record(&mut core, &action, patch, Some(m.version))?;
            core.value = after;
            core.version = m.version;
            drop(core);
            self.sync_to(seq)?;
        }
        Ok(())
    }

    /// The state's version: the last migration run on it.
    pub fn version(&self) -> u32 {
        lock(&self.core).version
    }

    /// Makes everything committed durable.
    pub fn sync(&self) -> Result<()> {
        let seq = lock(&self.core).written;
        if seq == 0 {
            return Ok(());
        }
        self.sync_to(seq - 1)
    }

    /// Starts a new file with a snapshot of the state; the history before it stays readable
    /// as `NAME.<seq>-<date>` (see the module docs).
    pub fn snapshot(&self) -> Result<()> {
        let mut core = lock(&self.core);
        let r = self.rotate(&mut core);
        if let Err(e) = &r {
            core.failed = Some(format!("a snapshot failed: {e}"));
        }
        r
    }

    fn rotate(&self, core: &mut Core) -> Result<()> {
        let io = |action, e| Error::io(action, &self.path, e);
        if let Some(f) = &core.failed {
            return Err(io(
                "snapshot",
                std::io::Error::other(format!(
                    "an earlier write or fsync failed ({f}); reopen the journal"
                )),
            ));
        }
        // No fsync of the live file runs while it is renamed (see `sync_to`).
        let _gate = self
            .gate
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let seq = core.next_seq;
        let record = Record {
            seq,
            time: crate::record::time::now_micros(),
            action: "snapshot".into(),
            author: self.options.author.clone(),
            patch: None,
            snapshot: Some(core.value.clone()),
            version: Some(core.version),
        };
        // The old file's records must be durable before it is kept as history.
        self.storage.sync(&self.name).map_err(|e| io("fsync", e))?;
        let next = next_name(&self.name);
        write_new_file(self.storage.as_ref(), &next, core.format, &record)?;
        let dir = crate::storage::dir_of(&self.name);
        self.storage
            .rename(&self.name, &rotated_name(&self.name, seq))
            .map_err(|e| io("rename", e))?;
        self.storage
            .rename(&next, &self.name)
            .map_err(|e| io("rename", e))?;
        self.storage
            .sync_dir(dir)
            .map_err(|e| io("fsync the directory of", e))?;
        core.next_seq = seq.saturating_add(1);
        core.written = core.next_seq;
        core.in_file = 1;
        core.file_first_seq = seq;
        core.file_bytes = self.storage.len(&self.name).ok().flatten().unwrap_or(0);
        core.snapshot_len = core.file_bytes;
        Ok(())
    }

    /// Every record of the live file, in order (its first is a snapshot).
    pub fn history(&self) -> Result<Vec<Record>> {
        let first = lock(&self.core).file_first_seq;
        self.records_from(first).collect()
    }

    /// Every record ever committed, oldest first: the rotated files (`NAME.<seq>-<date>`), then the
    /// live file. Each file opens with a snapshot record; the first one's action is `open`, the
    /// others' `snapshot`. Holds them all in memory: [`Journal::records`] reads one at a time.
    pub fn all_records(&self) -> Result<Vec<Record>> {
        self.records().collect()
    }

    /// Every record ever committed, oldest first, read one at a time (see
    /// [`Journal::all_records`]); a writer may go on appending meanwhile.
    pub fn records(&self) -> Records {
        self.records_from(0)
    }

    /// The records from sequence number `seq` on.
    pub fn records_from(&self, seq: u64) -> Records {
        Records::new(history::Cursor::new(self.storage.clone(), &self.name, seq))
    }

    /// The state right after the last record committed at or before `time` (µs since the
    /// epoch); `None` when `time` is before the journal's first record.
    pub fn value_as_of(&self, time: i64) -> Result<Option<Value>> {
        self.value_where(|r| r.time <= time)
    }

    /// The state right after record `seq`; `None` when there is no such record.
    pub fn value_at(&self, seq: u64) -> Result<Option<Value>> {
        if seq >= self.next_seq() {
            return Ok(None);
        }
        self.value_where(|r| r.seq <= seq)
    }

    /// The state after the records, from the first, for which `keep` holds.
    fn value_where(&self, keep: impl Fn(&Record) -> bool) -> Result<Option<Value>> {
        let mut value = None;
        for r in self.records() {
            let r = r?;
            if !keep(&r) {
                break;
            }
            let v = value.get_or_insert(Value::Null);
            r.apply_to(v).map_err(|message| Error::JournalDamaged {
                path: self.path.clone(),
                record: r.seq,
                offset: 0,
                message,
            })?;
        }
        Ok(value)
    }
}

impl<T> Drop for Journal<T> {
    /// Makes what was committed durable (under `interval:` the last records may wait for the
    /// next fsync); an error is logged — a committed record was handed to the OS either way.
    fn drop(&mut self) {
        if self.read_only || self.options.fsync == FsyncPolicy::Never {
            return;
        }
        let failed = lock(&self.core).failed.is_some();
        if !failed && let Err(e) = self.storage.sync(&self.name) {
            tracing::warn!(
                "journal {}: fsync on close failed: {e}",
                self.path.display()
            );
        }
    }
}
