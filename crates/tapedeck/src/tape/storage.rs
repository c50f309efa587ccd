//! The tape's I/O, behind a small trait so tests can crash it at any write or fsync.
//!
//! A tape touches its directory in few ways: list files, append to a file, fsync it, read bytes
//! at an offset, cut a file short, write a whole small file. [`Storage`] is exactly that;
//! [`FsStorage`] does it on a real directory, [`MemStorage`] in memory with a model of what is
//! durable: every file remembers how much of it the last `sync` covered, and
//! [`MemStorage::crash`] throws away — or tears, or bit-flips — what was not. Faults can also be
//! injected: an error (`ENOSPC`) or a short write after a chosen number of appended bytes. This is
//! the pattern redb uses to test crash consistency.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// What a tape needs from its directory.
pub trait Storage: Send + Sync {
    /// File names in the directory (not recursive).
    fn list(&self) -> io::Result<Vec<String>>;
    /// Length of a file, `None` if it does not exist.
    fn len(&self, name: &str) -> io::Result<Option<u64>>;
    /// Fills `buf` from `offset` (an error if the file is shorter).
    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Appends to a file, creating it if needed.
    fn append(&self, name: &str, data: &[u8]) -> io::Result<()>;
    /// Makes everything appended to the file so far durable (fdatasync).
    fn sync(&self, name: &str) -> io::Result<()>;
    /// Cuts a file to `len` bytes (durably).
    fn truncate(&self, name: &str, len: u64) -> io::Result<()>;
    /// Removes a file (durably).
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Where the storage lives, for messages.
    fn describe(&self, name: &str) -> PathBuf;
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A real directory.
#[derive(Debug)]
pub struct FsStorage {
    dir: PathBuf,
    /// Open handles for appending and reading, by name.
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
        let mut files = lock(&self.files);
        if let Some(f) = files.get(name) {
            return Ok(f.clone());
        }
        let path = self.dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let f = Arc::new(
            OpenOptions::new()
                .read(true)
                .append(true)
                .create(create)
                .open(path)?,
        );
        files.insert(name.to_string(), f.clone());
        Ok(f)
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

    fn append(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let f = self.file(name, true)?;
        (&*f).write_all(data)
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        self.file(name, true)?.sync_data()
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let f = self.file(name, false)?;
        f.set_len(len)?;
        f.sync_all()
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        lock(&self.files).remove(name);
        std::fs::remove_file(self.dir.join(name))?;
        File::open(&self.dir)?.sync_all()
    }

    fn describe(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

#[derive(Debug, Clone, Default)]
struct MemFile {
    data: Vec<u8>,
    /// Bytes covered by the last sync.
    synced: usize,
}

#[derive(Debug, Default)]
struct MemState {
    files: HashMap<String, MemFile>,
    /// Appended bytes left before the injected fault fires.
    fault_after: Option<(u64, Fault)>,
    appended: u64,
    syncs: u64,
}

/// An injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The append fails with `ENOSPC` and writes nothing.
    NoSpace,
    /// The append writes part of its bytes, then fails.
    ShortWrite,
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

    /// Simulates power loss: every file keeps what its last sync covered, plus — chosen by
    /// `choose(unsynced_len)` — a prefix of what was appended after it (a torn write).
    pub fn crash(&self, mut choose: impl FnMut(usize) -> usize) {
        let mut s = lock(&self.0);
        s.fault_after = None;
        let mut names: Vec<String> = s.files.keys().cloned().collect();
        names.sort();
        for name in names {
            if let Some(f) = s.files.get_mut(&name) {
                let unsynced = f.data.len() - f.synced;
                let keep = f.synced + choose(unsynced).min(unsynced);
                f.data.truncate(keep);
                f.synced = keep;
            }
        }
    }

    /// Flips bit `bit` of byte `offset` of a file (a media error).
    pub fn flip_bit(&self, name: &str, offset: usize, bit: u8) {
        if let Some(f) = lock(&self.0).files.get_mut(name)
            && let Some(b) = f.data.get_mut(offset)
        {
            *b ^= 1 << (bit % 8);
        }
    }

    /// Cuts a file short without any sync bookkeeping (a truncated copy).
    pub fn cut(&self, name: &str, len: usize) {
        if let Some(f) = lock(&self.0).files.get_mut(name) {
            f.data.truncate(len);
            f.synced = f.synced.min(len);
        }
    }

    /// A file's bytes.
    pub fn bytes(&self, name: &str) -> Option<Vec<u8>> {
        lock(&self.0).files.get(name).map(|f| f.data.clone())
    }

    /// Replaces a file's bytes (treated as durable).
    pub fn put(&self, name: &str, data: Vec<u8>) {
        let synced = data.len();
        lock(&self.0)
            .files
            .insert(name.to_string(), MemFile { data, synced });
    }

    /// Number of `sync` calls so far.
    pub fn syncs(&self) -> u64 {
        lock(&self.0).syncs
    }
}

impl Storage for MemStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut v: Vec<String> = lock(&self.0)
            .files
            .keys()
            .filter(|k| !k.contains('/'))
            .cloned()
            .collect();
        v.sort();
        Ok(v)
    }

    fn len(&self, name: &str) -> io::Result<Option<u64>> {
        Ok(lock(&self.0).files.get(name).map(|f| f.data.len() as u64))
    }

    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let s = lock(&self.0);
        let f = s
            .files
            .get(name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let start = offset as usize;
        let end = start + buf.len();
        if end > f.data.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.copy_from_slice(&f.data[start..end]);
        Ok(())
    }

    fn append(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let mut s = lock(&self.0);
        let before = s.appended;
        if let Some((at, fault)) = s.fault_after
            && before + data.len() as u64 > at
        {
            s.fault_after = None;
            if fault == Fault::ShortWrite {
                let part = (at - before) as usize;
                s.appended += part as u64;
                s.files
                    .entry(name.to_string())
                    .or_default()
                    .data
                    .extend_from_slice(&data[..part]);
            }
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        s.appended += data.len() as u64;
        s.files
            .entry(name.to_string())
            .or_default()
            .data
            .extend_from_slice(data);
        Ok(())
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        let mut s = lock(&self.0);
        s.syncs += 1;
        let f = s.files.entry(name.to_string()).or_default();
        f.synced = f.data.len();
        Ok(())
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let mut s = lock(&self.0);
        let f = s
            .files
            .get_mut(name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        f.data.truncate(len as usize);
        f.synced = f.data.len();
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        lock(&self.0)
            .files
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }

    fn describe(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("mem:{name}"))
    }
}
