//! Reading a journal's history: every record ever committed, across the rotated files and the
//! live one, one record at a time; the changes each made to the top-level keys; and following a
//! live journal while a writer appends to it (and rotates it).
//!
//! Guarantees: records come in sequence order, each once; memory is one record and a read
//! buffer, whatever the history's length. A torn tail of the live file ends what is read (a
//! writer may be in the middle of appending); damage — a bad record followed by a good one, or
//! any bad record in a rotated file — is [`Error::JournalDamaged`] naming file, record and
//! offset. A missing stretch of history (rotated files deleted) is skipped when the first record
//! after it is a snapshot (the state stays right), an error otherwise.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::format::{Read, RecordReader};
use super::{KeyChange, Record, files};
use crate::error::{Error, Result};
use crate::storage::{FsStorage, Storage};

/// Where a reader is in a journal's history.
pub(super) struct Cursor {
    storage: Arc<dyn Storage>,
    /// The live file's name.
    name: String,
    /// The next record wanted.
    next: u64,
    open: Option<OpenFile>,
    /// Where the last pass stopped: a file, the offset of its next unread record, and the
    /// sequence number of the file's first record (a live file replaced by a snapshot since
    /// has the same name but another first record).
    resume: Option<(String, u64, u64)>,
}

struct OpenFile {
    reader: RecordReader<Arc<dyn Storage>>,
    file: String,
    /// For a rotated file, the sequence number after its last record; `None`: the live file.
    rotated_end: Option<u64>,
    /// The record number in the file of the next item, when known (read from the start).
    number: Option<u64>,
    /// Offset after the last good record.
    good_end: u64,
    /// A bad record not (yet) followed by a good one: (record number, offset, problem).
    bad: Option<(Option<u64>, u64, String)>,
    /// The sequence number of the file's first record, once known.
    first_seq: Option<u64>,
}

pub(super) enum Step {
    Record(Record),
    /// Every record written so far has been read.
    CaughtUp,
}

impl Cursor {
    /// A cursor at record `next` of the journal whose live file is `name` in `storage`.
    pub fn new(storage: Arc<dyn Storage>, name: &str, next: u64) -> Cursor {
        Cursor {
            storage,
            name: name.to_string(),
            next,
            open: None,
            resume: None,
        }
    }

    /// The next record's sequence number.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Reads on a fresh view of the directory from where the last pass stopped (a follower:
    /// the live file may have grown or been rotated since).
    pub fn rewind_to_resume(&mut self, storage: Arc<dyn Storage>) {
        self.storage = storage;
        self.open = None;
    }

    fn damaged(&self, file: &str, record: Option<u64>, offset: u64, message: String) -> Error {
        Error::JournalDamaged {
            path: self.storage.describe(file),
            record: record.unwrap_or(u64::MAX),
            offset,
            message,
        }
    }

    /// The file holding record `next`: the first rotated file whose records go past it, else
    /// the live file.
    fn file_for(&self, next: u64) -> Result<(String, Option<u64>)> {
        let mut rotated: Vec<(u64, String)> = self
            .storage
            .list()
            .map_err(|e| Error::io("list", self.storage.describe(""), e))?
            .into_iter()
            .filter_map(|n| files::rotated_seq(&self.name, &n).map(|s| (s, n)))
            .collect();
        rotated.sort();
        Ok(rotated
            .into_iter()
            .find(|(end, _)| *end > next)
            .map_or((self.name.clone(), None), |(end, n)| (n, Some(end))))
    }

    /// The sequence number of the first record of `file`, if it has a good one.
    fn first_seq_of(&self, file: &str) -> Result<Option<u64>> {
        let path = self.storage.describe(file);
        let io = |e| Error::io("read", &path, e);
        let Some(mut r) = RecordReader::open(self.storage.clone(), file, 0).map_err(io)? else {
            return Ok(None);
        };
        Ok(match r.next_item().map_err(io)? {
            Some(item) => match item.read {
                Read::Good(record) => Some(record.seq),
                Read::Bad { .. } => None,
            },
            None => None,
        })
    }

    pub fn step(&mut self) -> Result<Step> {
        loop {
            if self.open.is_none() {
                let (file, rotated_end) = self.file_for(self.next)?;
                let path = self.storage.describe(&file);
                let (mut from, mut first_seq) = (0, None);
                if let Some((_, at, first)) = self.resume.take().filter(|(f, _, _)| *f == file)
                    && self.first_seq_of(&file)? == Some(first)
                {
                    (from, first_seq) = (at, Some(first));
                }
                let reader = RecordReader::open(self.storage.clone(), &file, from)
                    .map_err(|e| Error::io("read", &path, e))?;
                let Some(reader) = reader else {
                    if rotated_end.is_none() {
                        return Ok(Step::CaughtUp);
                    }
                    return Err(Error::io(
                        "open",
                        &path,
                        std::io::Error::other("the file went away while the history was read"),
                    ));
                };
                self.open = Some(OpenFile {
                    good_end: reader.offset(),
                    reader,
                    file,
                    rotated_end,
                    number: (from == 0).then_some(0),
                    bad: None,
                    first_seq,
                });
            }
            let Some(o) = self.open.as_mut() else {
                continue;
            };
            let path = self.storage.describe(&o.file);
            let item = o
                .reader
                .next_item()
                .map_err(|e| Error::io("read", &path, e))?;
            let number = o.number;
            o.number = o.number.map(|n| n.saturating_add(1));
            let Some(item) = item else {
                // The end of the file.
                let (file, good_end, rotated_end, first_seq) =
                    (o.file.clone(), o.good_end, o.rotated_end, o.first_seq);
                // A bad last record: damage in a rotated file (complete by construction), a
                // record being appended in the live one.
                if let Some((record, offset, problem)) = o.bad.take()
                    && rotated_end.is_some()
                {
                    return Err(self.damaged(&file, record, offset, problem));
                }
                self.open = None;
                match rotated_end {
                    Some(end) => {
                        if self.next < end {
                            return Err(self.damaged(
                                &file,
                                None,
                                good_end,
                                format!(
                                    "the file ends at record {} but the next file starts at {end}",
                                    self.next
                                ),
                            ));
                        }
                        continue;
                    }
                    None => {
                        self.resume = first_seq.map(|first| (file, good_end, first));
                        return Ok(Step::CaughtUp);
                    }
                }
            };
            match item.read {
                Read::Good(record) => {
                    if let Some((n, offset, problem)) = o.bad.take() {
                        let file = o.file.clone();
                        return Err(self.damaged(
                            &file,
                            n,
                            offset,
                            format!("{problem}; good records follow it"),
                        ));
                    }
                    o.good_end = item.end;
                    o.first_seq.get_or_insert(record.seq);
                    if record.seq < self.next {
                        continue;
                    }
                    let live = o.rotated_end.is_none();
                    // A live file whose snapshot is past the next record: a rotation happened
                    // between the listing and the opening; the records before the snapshot
                    // are in a rotated file now.
                    if live
                        && record.seq > self.next
                        && record.snapshot.is_some()
                        && self.file_for(self.next)?.1.is_some()
                    {
                        self.open = None;
                        continue;
                    }
                    let Some(o) = self.open.as_mut() else {
                        continue;
                    };
                    if record.seq > self.next && record.snapshot.is_none() {
                        let file = o.file.clone();
                        return Err(self.damaged(
                            &file,
                            number,
                            item.offset,
                            format!(
                                "record {} follows record {} (a part of the history is missing)",
                                record.seq,
                                self.next.saturating_sub(1)
                            ),
                        ));
                    }
                    self.next = record.seq.saturating_add(1);
                    return Ok(Step::Record(record));
                }
                Read::Bad { problem, whole } => {
                    if whole {
                        let file = o.file.clone();
                        return Err(self.damaged(&file, number, item.offset, problem));
                    }
                    o.bad.get_or_insert((number, item.offset, problem));
                }
            }
        }
    }
}

/// Every record of a journal from a sequence number on, oldest first (see the module docs).
pub struct Records {
    cursor: Cursor,
    done: bool,
}

impl Records {
    pub(super) fn new(cursor: Cursor) -> Records {
        Records {
            cursor,
            done: false,
        }
    }
}

impl Iterator for Records {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        if self.done {
            return None;
        }
        match self.cursor.step() {
            Ok(Step::Record(r)) => Some(Ok(r)),
            Ok(Step::CaughtUp) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Reads a journal as a writer (in this process or another) appends to it: each
/// [`JournalFollower::poll`] returns the records committed since the last one, across
/// snapshots and rotations. Takes no lock.
pub struct JournalFollower {
    dir: PathBuf,
    cursor: Cursor,
}

impl std::fmt::Debug for JournalFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalFollower")
            .field("dir", &self.dir)
            .field("next", &self.cursor.next)
            .finish_non_exhaustive()
    }
}

impl JournalFollower {
    /// Follows the journal at `path` from record `from` (0: the whole history).
    pub fn new(path: impl AsRef<Path>, from: u64) -> Result<JournalFollower> {
        let path = path.as_ref();
        let (storage, name) = files::fs_storage(path)?;
        let dir = storage.describe("");
        Ok(JournalFollower {
            dir,
            cursor: Cursor::new(storage, &name, from),
        })
    }

    /// The records committed since the last poll (at most `max`), oldest first; empty when
    /// none were.
    pub fn poll(&mut self, max: usize) -> Result<Vec<Record>> {
        // A fresh view of the directory: a handle opened before a rotation reads the old file.
        let storage = FsStorage::new(&self.dir).map_err(|e| Error::io("open", &self.dir, e))?;
        self.cursor.rewind_to_resume(Arc::new(storage));
        let mut out = Vec::new();
        while out.len() < max {
            match self.cursor.step()? {
                Step::Record(r) => out.push(r),
                Step::CaughtUp => break,
            }
        }
        Ok(out)
    }

    /// The sequence number of the next record a poll returns.
    pub fn next_seq(&self) -> u64 {
        self.cursor.next_seq()
    }
}

/// The changes of `records` (oldest first, as [`super::Journal::records`] gives them) to the
/// top-level keys of an object state, record by record (see [`KeyTracker`]).
pub fn key_changes<I: IntoIterator<Item = Result<Record>>>(records: I) -> KeyChanges<I::IntoIter> {
    KeyChanges {
        records: records.into_iter(),
        tracker: KeyTracker::default(),
    }
}

/// See [`key_changes`].
pub struct KeyChanges<I> {
    records: I,
    tracker: KeyTracker,
}

impl<I: Iterator<Item = Result<Record>>> Iterator for KeyChanges<I> {
    type Item = Result<(Record, Vec<KeyChange>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let r = match self.records.next()? {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        Some(self.tracker.changes_of(r))
    }
}

/// Follows the state record by record and says which top-level keys each record changed (a
/// snapshot that changed nothing: none). The cost of a change record is that of its patch,
/// not of the state.
#[derive(Debug, Clone)]
pub struct KeyTracker {
    state: Value,
}

impl Default for KeyTracker {
    fn default() -> KeyTracker {
        KeyTracker {
            state: Value::Object(serde_json::Map::new()),
        }
    }
}

impl KeyTracker {
    /// Applies `r` (the record after the last one given) and returns it with its changes.
    pub fn changes_of(&mut self, r: Record) -> Result<(Record, Vec<KeyChange>)> {
        // The top-level keys the record may change; `None`: any (a snapshot, or a patch of the
        // root).
        let touched: Option<Vec<String>> = match (&r.snapshot, &r.patch) {
            (None, Some(p)) => {
                p.0.iter()
                    .flat_map(|op| {
                        let from = match op {
                            json_patch::PatchOperation::Move(m) => Some(&m.from),
                            json_patch::PatchOperation::Copy(c) => Some(&c.from),
                            _ => None,
                        };
                        [Some(op.path()), from.map(|f| f.as_ptr())]
                    })
                    .flatten()
                    .map(|ptr| ptr.first().map(|t| t.decoded().into_owned()))
                    .collect()
            }
            _ => None,
        };
        let empty = serde_json::Map::new();
        let keys: Vec<String> = match &touched {
            Some(keys) => {
                let mut k = keys.clone();
                k.sort();
                k.dedup();
                k
            }
            None => {
                let mut k: Vec<String> = self
                    .state
                    .as_object()
                    .unwrap_or(&empty)
                    .keys()
                    .cloned()
                    .collect();
                if let Some(s) = r.snapshot.as_ref().and_then(Value::as_object) {
                    k.extend(s.keys().cloned());
                }
                if let Some(p) = &r.patch
                    && r.snapshot.is_none()
                {
                    // A patch of the root: the keys after it are known only once applied.
                    let mut after = self.state.clone();
                    let _ = json_patch::patch(&mut after, &p.0);
                    k.extend(after.as_object().unwrap_or(&empty).keys().cloned());
                }
                k.sort();
                k.dedup();
                k
            }
        };
        let get = |state: &Value, k: &str| state.as_object().and_then(|o| o.get(k)).cloned();
        let before: Vec<Option<Value>> = keys.iter().map(|k| get(&self.state, k)).collect();
        r.apply_to(&mut self.state)
            .map_err(|message| Error::JournalDamaged {
                path: PathBuf::new(),
                record: r.seq,
                offset: 0,
                message,
            })?;
        let changes = keys
            .into_iter()
            .zip(before)
            .filter_map(|(k, old)| {
                let new = get(&self.state, &k);
                (old != new).then(|| KeyChange {
                    seq: r.seq,
                    time: r.time,
                    action: r.action.clone(),
                    author: r.author.clone(),
                    key: k,
                    old,
                    new,
                })
            })
            .collect();
        Ok((r, changes))
    }
}
