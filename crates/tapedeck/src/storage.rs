//! The I/O of the tape and the journal, behind a small trait so tests can crash it at any write
//! or fsync.
//!
//! A tape (or a journal) touches its directory in few ways: list files, create a file, append to it, fsync it,
//! fsync the directory, read bytes at an offset, cut a file short, rename or remove a file.
//! [`Storage`] is exactly that; [`FsStorage`] does it on a real directory, [`MemStorage`] in
//! memory with a model of what a power loss keeps:
//!
//! - a file's bytes are durable up to its last `sync`; what was appended after it is lost, kept,
//!   or kept in part (a torn write), and with [`MemStorage::crash_zeroed`] part of what is kept
//!   reads as zeros (a file extended whose pages never reached the disk);
//! - a directory entry — a file created, renamed or removed — is durable only once its directory
//!   was synced ([`Storage::sync_dir`]); before that, a crash keeps any prefix of the directory
//!   operations since the last sync;
//! - a failed `sync` (EIO) loses what it should have covered for good, even if a later `sync`
//!   succeeds: Linux marks the pages clean after reporting the error ("fsyncgate"). A writer
//!   must therefore treat a failed fsync as fatal, never retry it.
//!
//! Faults are injected by operation: the N-th append, sync, directory sync, create or rename
//! fails with `ENOSPC` or `EIO`, or an append writes part of its bytes and then fails. Bits can
//! be flipped in bytes already on the "disk". This is the pattern redb uses to test crash
//! consistency.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::sync::lock;

/// What a tape needs from its directory.
pub trait Storage: Send + Sync {
    /// File names in the directory (not recursive).
    fn list(&self) -> io::Result<Vec<String>>;
    /// Length of a file, `None` if it does not exist.
    fn len(&self, name: &str) -> io::Result<Option<u64>>;
    /// Fills `buf` from `offset` (an error if the file is shorter).
    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Creates an empty file; an `AlreadyExists` error if the name is taken. The entry is
    /// durable only after [`Storage::sync_dir`].
    fn create_new(&self, name: &str) -> io::Result<()>;
    /// Appends to a file, creating it if needed.
    fn append(&self, name: &str, data: &[u8]) -> io::Result<()>;
    /// Makes everything appended to the file so far durable (fdatasync).
    fn sync(&self, name: &str) -> io::Result<()>;
    /// Makes the directory's entries durable (files created, renamed, removed). `dir` is `""`
    /// for the storage's own directory, or a subdirectory such as `quarantine`.
    fn sync_dir(&self, dir: &str) -> io::Result<()>;
    /// Renames a file, replacing `to` if it exists (atomic; durable after [`Storage::sync_dir`]).
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Cuts a file to `len` bytes (durably).
    fn truncate(&self, name: &str, len: u64) -> io::Result<()>;
    /// Removes a file (durably: the directory is synced).
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Where the storage lives, for messages.
    fn describe(&self, name: &str) -> PathBuf;
    /// Lets go of any handle kept open on `name`: a reader done with a segment, so that the
    /// segment's space is freed as soon as retention removes it. Default: none is kept.
    fn release(&self, _name: &str) {}
    /// Bytes the storage can still take, when it knows (a file system's free space for
    /// unprivileged users): a tape writer waits for space rather than run the disk full in the
    /// middle of sealing a segment. Default: unknown.
    fn free_space(&self) -> Option<u64> {
        None
    }
}

/// The directory part of a storage name (`""` for top-level files).
pub fn dir_of(name: &str) -> &str {
    name.rfind('/').map_or("", |i| &name[..i])
}

/// Open handles an [`FsStorage`] keeps at most. A long tape has thousands of segments; a reader
/// walks them in order and a writer only appends to the newest, so a small cache serves both
/// and the process stays far below any `ulimit -n`.
const MAX_OPEN_FILES: usize = 32;

/// A real directory.
#[derive(Debug)]
pub struct FsStorage {
    dir: PathBuf,
    /// Open handles for appending and reading, by name (at most [`MAX_OPEN_FILES`]).
    files: Mutex<HashMap<String, Arc<File>>>,
}

impl FsStorage {
    /// Storage on `dir` (created if missing).
    pub fn new(dir: impl AsRef<Path>) -> io::Result<FsStorage> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        Ok(FsStorage {
            dir,
            files: Mutex::new(HashMap::new()),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, name: &str, create: bool) -> io::Result<Arc<File>> {
        if let Some(f) = lock(&self.files).get(name) {
            return Ok(f.clone());
        }
        let path = self.dir.join(name);
        if create && let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let f = Arc::new(
            OpenOptions::new()
                .read(true)
                .append(true)
                .create(create)
                .open(path)?,
        );
        self.remember(name, &f);
        Ok(f)
    }

    fn remember(&self, name: &str, f: &Arc<File>) {
        let mut files = lock(&self.files);
        if files.len() >= MAX_OPEN_FILES {
            // Forget every cached handle: those in use elsewhere stay open through their Arc
            // and close when dropped, so the process never holds more than the cache plus
            // the few in flight.
            files.clear();
        }
        files.insert(name.to_string(), f.clone());
    }

    /// Open handles cached right now (for tests of the bound).
    pub fn cached_handles(&self) -> usize {
        lock(&self.files).len()
    }
}

impl Storage for FsStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            if e.file_type()?.is_file() {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        Ok(out)
    }

    fn len(&self, name: &str) -> io::Result<Option<u64>> {
        match std::fs::metadata(self.dir.join(name)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file(name, false)?.read_exact_at(buf, offset)
    }

    fn create_new(&self, name: &str) -> io::Result<()> {
        let path = self.dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let f = Arc::new(
            OpenOptions::new()
                .read(true)
                .append(true)
                .create_new(true)
                .open(path)?,
        );
        self.remember(name, &f);
        Ok(())
    }

    fn append(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let f = self.file(name, true)?;
        (&*f).write_all(data)
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        self.file(name, false)?.sync_data()
    }

    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        File::open(self.dir.join(dir))?.sync_all()
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        {
            let mut files = lock(&self.files);
            files.remove(from);
            files.remove(to);
        }
        std::fs::rename(self.dir.join(from), self.dir.join(to))
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let f = self.file(name, false)?;
        f.set_len(len)?;
        f.sync_all()
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        lock(&self.files).remove(name);
        std::fs::remove_file(self.dir.join(name))?;
        self.sync_dir(dir_of(name))
    }

    fn describe(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn release(&self, name: &str) {
        lock(&self.files).remove(name);
    }

    fn free_space(&self) -> Option<u64> {
        let s = rustix::fs::statvfs(&self.dir).ok()?;
        Some(s.f_bavail.saturating_mul(s.f_frsize))
    }
}

#[derive(Debug, Clone, Default)]
struct MemFile {
    data: Vec<u8>,
    /// Bytes covered by the last sync.
    synced: usize,
    /// A sync failed here: bytes from this offset on are lost at the next crash, whatever a
    /// later sync says (the kernel dropped the dirty pages when it reported the error).
    lost_from: Option<usize>,
}

/// A change to a directory, durable once its directory is synced.
#[derive(Debug, Clone)]
enum DirOp {
    Link(String, usize),
    Unlink(String),
    Rename(String, String),
}

impl DirOp {
    fn dir(&self) -> &str {
        match self {
            DirOp::Link(n, _) | DirOp::Unlink(n) | DirOp::Rename(n, _) => dir_of(n),
        }
    }

    fn apply(&self, names: &mut BTreeMap<String, usize>) {
        match self {
            DirOp::Link(n, ino) => {
                names.insert(n.clone(), *ino);
            }
            DirOp::Unlink(n) => {
                names.remove(n);
            }
            DirOp::Rename(from, to) => {
                if let Some(ino) = names.remove(from) {
                    names.insert(to.clone(), ino);
                }
            }
        }
    }
}

/// A storage operation, for fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// [`Storage::append`].
    Append,
    /// [`Storage::sync`].
    Sync,
    /// [`Storage::sync_dir`].
    SyncDir,
    /// [`Storage::create_new`].
    Create,
    /// [`Storage::rename`].
    Rename,
}

/// An injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// The operation fails with `ENOSPC` and changes nothing.
    NoSpace,
    /// An append writes part of its bytes, then fails with `ENOSPC` (other operations: as
    /// `NoSpace`).
    ShortWrite,
    /// The operation fails with `EIO`. A failed sync also loses, at the next crash, everything
    /// it should have made durable.
    Eio,
}

impl Fault {
    fn error(self) -> io::Error {
        match self {
            Fault::NoSpace | Fault::ShortWrite => io::Error::from_raw_os_error(28), // ENOSPC
            Fault::Eio => io::Error::from_raw_os_error(5),                          // EIO
        }
    }
}

#[derive(Debug, Default)]
struct MemState {
    inodes: Vec<MemFile>,
    /// The directory as the running process sees it.
    names: BTreeMap<String, usize>,
    /// The directory as the disk has it (entries covered by a directory sync).
    durable_names: BTreeMap<String, usize>,
    /// Directory operations not yet covered by a directory sync, in order.
    dir_log: Vec<DirOp>,
    /// Appended bytes left before the injected fault fires.
    fault_after: Option<(u64, Fault)>,
    /// Faults armed by operation: fires when the counter reaches 0.
    faults: Vec<(Op, u64, Fault)>,
    /// Faults that fired, in order.
    fired: Vec<(Op, Fault)>,
    /// Reads served ([`MemStorage::reads`]).
    reads: u64,
    appended: u64,
    syncs: u64,
    /// The disk's size, when it has one: bytes of the files in the directory beyond it are
    /// refused with `ENOSPC` (what fits is written, as a full disk does).
    capacity: Option<u64>,
}

impl MemState {
    fn file(&self, name: &str) -> Option<&MemFile> {
        self.names.get(name).and_then(|i| self.inodes.get(*i))
    }

    fn file_mut(&mut self, name: &str) -> Option<&mut MemFile> {
        let ino = *self.names.get(name)?;
        self.inodes.get_mut(ino)
    }

    fn create(&mut self, name: &str, file: MemFile) -> usize {
        let ino = self.inodes.len();
        self.inodes.push(file);
        self.names.insert(name.to_string(), ino);
        self.dir_log.push(DirOp::Link(name.to_string(), ino));
        ino
    }

    fn file_or_create(&mut self, name: &str) -> &mut MemFile {
        let ino = match self.names.get(name) {
            Some(i) => *i,
            None => self.create(name, MemFile::default()),
        };
        &mut self.inodes[ino]
    }

    /// The fault armed for this operation, if it fires now.
    fn fault(&mut self, op: Op) -> Option<Fault> {
        let i = self.faults.iter().position(|(o, ..)| *o == op)?;
        if self.faults[i].1 > 0 {
            self.faults[i].1 -= 1;
            return None;
        }
        let (_, _, fault) = self.faults.remove(i);
        self.fired.push((op, fault));
        Some(fault)
    }

    /// Bytes of the files the directory holds.
    fn used(&self) -> u64 {
        self.names
            .values()
            .filter_map(|i| self.inodes.get(*i))
            .map(|f| f.data.len() as u64)
            .sum()
    }

    fn sync_dir(&mut self, dir: &str) {
        let (now, later): (Vec<DirOp>, Vec<DirOp>) = std::mem::take(&mut self.dir_log)
            .into_iter()
            .partition(|op| op.dir() == dir);
        for op in &now {
            op.apply(&mut self.durable_names);
        }
        self.dir_log = later;
    }
}

/// An in-memory directory with a durability model, for crash tests.
#[derive(Debug, Clone, Default)]
pub struct MemStorage(Arc<Mutex<MemState>>);

impl MemStorage {
    /// An empty directory.
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    /// Makes the append that would pass `bytes` appended bytes in total fail with `fault`.
    pub fn fail_after(&self, bytes: u64, fault: Fault) {
        let mut s = lock(&self.0);
        let at = s.appended + bytes;
        s.fault_after = Some((at, fault));
    }

    /// Makes the operation `op` fail with `fault` after `n` more of them succeed.
    pub fn fail_nth(&self, op: Op, n: u64, fault: Fault) {
        lock(&self.0).faults.push((op, n, fault));
    }

    /// Gives the disk a size (`None`: unbounded, the default): an append that would take the
    /// directory's files past it writes what fits and fails with `ENOSPC`, and
    /// [`Storage::free_space`] says what is left. Removing files frees their space.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        lock(&self.0).capacity = bytes;
    }

    /// Reads served so far ([`Storage::read_at`] calls): tests of how often readers go to
    /// the disk.
    pub fn reads(&self) -> u64 {
        lock(&self.0).reads
    }

    /// Faults that fired so far, in order.
    pub fn fired(&self) -> Vec<(Op, Fault)> {
        lock(&self.0).fired.clone()
    }

    /// Disarms every fault not yet fired (the disk was repaired, or space freed).
    pub fn clear_faults(&self) {
        let mut s = lock(&self.0);
        s.faults.clear();
        s.fault_after = None;
    }

    /// Simulates power loss. `choose(n)` picks, for the directory operations not yet synced,
    /// how many of them (in order) reached the disk; then, for every file, how many of the `n`
    /// bytes appended after its last sync survive (a torn write).
    pub fn crash(&self, choose: impl FnMut(usize) -> usize) {
        self.crash_inner(choose, false);
    }

    /// Like [`MemStorage::crash`], and then `choose(n)` for each file picks how many of its
    /// surviving unsynced bytes hold what was written; the rest read as zeros.
    pub fn crash_zeroed(&self, choose: impl FnMut(usize) -> usize) {
        self.crash_inner(choose, true);
    }

    fn crash_inner(&self, mut choose: impl FnMut(usize) -> usize, zero: bool) {
        let mut s = lock(&self.0);
        s.fault_after = None;
        s.faults.clear();
        let log = std::mem::take(&mut s.dir_log);
        let reached = choose(log.len()).min(log.len());
        let mut names = std::mem::take(&mut s.durable_names);
        for op in &log[..reached] {
            op.apply(&mut names);
        }
        let inos: Vec<usize> = names.values().copied().collect();
        for ino in inos {
            let Some(f) = s.inodes.get_mut(ino) else {
                continue;
            };
            let unsynced = f.data.len() - f.synced;
            let mut keep = f.synced + choose(unsynced).min(unsynced);
            if let Some(lost) = f.lost_from {
                keep = keep.min(lost);
            }
            f.data.truncate(keep);
            if zero && keep > f.synced {
                let tail = keep - f.synced;
                let good = choose(tail).min(tail);
                f.data[f.synced + good..].fill(0);
            }
            f.synced = f.data.len();
            f.lost_from = None;
        }
        s.durable_names = names.clone();
        s.names = names;
    }

    /// Flips bit `bit` of byte `offset` of a file (a media error).
    pub fn flip_bit(&self, name: &str, offset: usize, bit: u8) {
        if let Some(f) = lock(&self.0).file_mut(name)
            && let Some(b) = f.data.get_mut(offset)
        {
            *b ^= 1 << (bit % 8);
        }
    }

    /// Cuts a file short without any sync bookkeeping (a truncated copy).
    pub fn cut(&self, name: &str, len: usize) {
        if let Some(f) = lock(&self.0).file_mut(name) {
            f.data.truncate(len);
            f.synced = f.synced.min(len);
        }
    }

    /// A file's bytes.
    pub fn bytes(&self, name: &str) -> Option<Vec<u8>> {
        lock(&self.0).file(name).map(|f| f.data.clone())
    }

    /// Replaces a file's bytes (treated as durable, entry included).
    pub fn put(&self, name: &str, data: Vec<u8>) {
        let synced = data.len();
        let mut s = lock(&self.0);
        let ino = s.create(
            name,
            MemFile {
                data,
                synced,
                lost_from: None,
            },
        );
        s.durable_names.insert(name.to_string(), ino);
        s.dir_log.pop();
    }

    /// Number of `sync` calls so far.
    pub fn syncs(&self) -> u64 {
        lock(&self.0).syncs
    }
}

impl Storage for MemStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(lock(&self.0)
            .names
            .keys()
            .filter(|k| !k.contains('/'))
            .cloned()
            .collect())
    }

    fn len(&self, name: &str) -> io::Result<Option<u64>> {
        Ok(lock(&self.0).file(name).map(|f| f.data.len() as u64))
    }

    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut s = lock(&self.0);
        s.reads = s.reads.saturating_add(1);
        let f = s
            .file(name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        let src = f.data.get(start..end).ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn create_new(&self, name: &str) -> io::Result<()> {
        let mut s = lock(&self.0);
        if let Some(fault) = s.fault(Op::Create) {
            return Err(fault.error());
        }
        if s.names.contains_key(name) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        s.create(name, MemFile::default());
        Ok(())
    }

    fn append(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let mut s = lock(&self.0);
        let before = s.appended;
        let mut fault = s.fault(Op::Append).map(|f| (f, 0u64));
        if fault.is_none()
            && let Some((at, f)) = s.fault_after
            && before + data.len() as u64 > at
        {
            s.fault_after = None;
            s.fired.push((Op::Append, f));
            fault = Some((f, at - before));
        }
        if fault.is_none()
            && let Some(capacity) = s.capacity
        {
            let free = capacity.saturating_sub(s.used());
            if data.len() as u64 > free {
                s.fired.push((Op::Append, Fault::ShortWrite));
                // `part == 0` means "half" below; a full disk writes what fits, maybe nothing.
                let part = usize::try_from(free).unwrap_or(usize::MAX).min(data.len());
                s.appended += part as u64;
                s.file_or_create(name).data.extend_from_slice(&data[..part]);
                return Err(Fault::NoSpace.error());
            }
        }
        if let Some((fault, part)) = fault {
            if fault == Fault::ShortWrite {
                // Part of the bytes reach the file: half of them if the fault was armed by
                // count, up to the armed byte otherwise.
                let part = if part == 0 {
                    data.len() / 2
                } else {
                    part as usize
                };
                let part = part.min(data.len());
                s.appended += part as u64;
                s.file_or_create(name).data.extend_from_slice(&data[..part]);
            }
            return Err(fault.error());
        }
        s.appended += data.len() as u64;
        s.file_or_create(name).data.extend_from_slice(data);
        Ok(())
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        let mut s = lock(&self.0);
        s.syncs += 1;
        let fault = s.fault(Op::Sync);
        let f = s
            .file_mut(name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        if let Some(fault) = fault {
            if fault == Fault::Eio {
                let from = f.synced;
                f.lost_from = Some(f.lost_from.map_or(from, |l| l.min(from)));
            }
            return Err(fault.error());
        }
        f.synced = f.data.len();
        Ok(())
    }

    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        let mut s = lock(&self.0);
        if let Some(fault) = s.fault(Op::SyncDir) {
            return Err(fault.error());
        }
        s.sync_dir(dir);
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut s = lock(&self.0);
        if let Some(fault) = s.fault(Op::Rename) {
            return Err(fault.error());
        }
        let ino = s
            .names
            .remove(from)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        s.names.insert(to.to_string(), ino);
        s.dir_log
            .push(DirOp::Rename(from.to_string(), to.to_string()));
        Ok(())
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let mut s = lock(&self.0);
        let f = s
            .file_mut(name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let len = usize::try_from(len).map_or(f.data.len(), |l| l.min(f.data.len()));
        f.data.truncate(len);
        f.synced = f.data.len();
        f.lost_from = f.lost_from.map(|l| l.min(len));
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut s = lock(&self.0);
        s.names
            .remove(name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        s.dir_log.push(DirOp::Unlink(name.to_string()));
        s.sync_dir(dir_of(name));
        Ok(())
    }

    fn describe(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("mem:{name}"))
    }

    fn free_space(&self) -> Option<u64> {
        let s = lock(&self.0);
        s.capacity.map(|c| c.saturating_sub(s.used()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_not_synced_into_its_directory_is_lost_at_a_crash() {
        let s = MemStorage::new();
        s.append("a", b"abc").ok();
        s.sync("a").ok();
        s.crash(|_| 0);
        assert_eq!(
            s.len("a").ok().flatten(),
            None,
            "file synced, directory not"
        );
        s.append("b", b"abc").ok();
        s.sync("b").ok();
        s.sync_dir("").ok();
        s.crash(|_| 0);
        assert_eq!(s.bytes("b"), Some(b"abc".to_vec()));
    }

    #[test]
    fn a_rename_is_atomic_and_durable_after_a_directory_sync() {
        let s = MemStorage::new();
        s.put("id", b"old".to_vec());
        s.append("id.tmp", b"new").ok();
        s.sync("id.tmp").ok();
        s.rename("id.tmp", "id").ok();
        s.crash(|_| 0);
        assert_eq!(
            s.bytes("id"),
            Some(b"old".to_vec()),
            "rename not yet durable"
        );
        s.append("id.tmp", b"new").ok();
        s.sync("id.tmp").ok();
        s.rename("id.tmp", "id").ok();
        s.crash(|n| n);
        assert_eq!(s.bytes("id"), Some(b"new".to_vec()));
        assert_eq!(s.len("id.tmp").ok().flatten(), None);
    }

    #[test]
    fn a_failed_fsync_loses_its_bytes_even_after_a_later_good_one() {
        let s = MemStorage::new();
        s.put("f", b"durable".to_vec());
        s.append("f", b"-lost").ok();
        s.fail_nth(Op::Sync, 0, Fault::Eio);
        assert_eq!(s.sync("f").err().and_then(|e| e.raw_os_error()), Some(5));
        s.append("f", b"-after").ok();
        assert!(s.sync("f").is_ok());
        s.crash(|n| n);
        assert_eq!(s.bytes("f"), Some(b"durable".to_vec()));
        assert_eq!(s.fired(), vec![(Op::Sync, Fault::Eio)]);
    }

    #[test]
    fn crash_zeroed_keeps_synced_bytes_and_zeroes_part_of_the_rest() {
        let s = MemStorage::new();
        s.put("f", b"sync".to_vec());
        s.append("f", b"abcdef").ok();
        s.crash_zeroed(|n| n / 2);
        assert_eq!(s.bytes("f"), Some(b"synca\0\0".to_vec()));
    }

    #[test]
    fn create_new_refuses_an_existing_name() {
        let s = MemStorage::new();
        assert!(s.create_new("x").is_ok());
        assert_eq!(
            s.create_new("x").err().map(|e| e.kind()),
            Some(io::ErrorKind::AlreadyExists)
        );
    }

    #[test]
    fn fs_storage_keeps_a_bounded_number_of_handles() {
        let dir = std::env::temp_dir().join(format!("tapedeck-fs-handles-{}", std::process::id()));
        let s = FsStorage::new(&dir).ok();
        let Some(s) = s else {
            panic!("cannot create {}", dir.display());
        };
        for i in 0..(MAX_OPEN_FILES * 3) {
            let name = format!("f{i}");
            assert!(s.append(&name, b"x").is_ok());
            let mut b = [0u8; 1];
            assert!(s.read_at(&name, 0, &mut b).is_ok());
            assert!(s.cached_handles() <= MAX_OPEN_FILES);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
