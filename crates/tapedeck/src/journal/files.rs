//! The files of a journal: the live file, the rotated history files and their names, the
//! file a snapshot switch writes, and the writer's lock.
//!
//! Guarantees: a rotated file's name orders it and says which records it holds (those before
//! the sequence number in its name); a new file is durable — its bytes and its directory
//! entry — before it is used; only one process at a time holds a journal's lock.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Record;
use super::format::{self, JournalFormat};
use crate::error::{Error, Result};
use crate::storage::{FsStorage, Storage};

/// The journal file's name for the history before record `seq` (a rotated file).
/// `NAME.<seq>-<date>`: the sequence number (20 digits) orders the files, the UTC date and
/// time of the switch (`20261129T214431Z`) says when.
pub(super) fn rotated_name(name: &str, seq: u64) -> String {
    let iso = crate::record::time::iso_micros(crate::record::time::now_micros());
    let date: String = iso
        .chars()
        .take(19)
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect();
    format!("{name}.{seq:020}-{date}Z")
}

/// The sequence number in the name of a rotated history file of the journal `name` (its
/// records come before it), or `None` if `file` is not one.
pub(super) fn rotated_seq(name: &str, file: &str) -> Option<u64> {
    file.strip_prefix(name)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|rest| rest.get(..20))
        .filter(|seq| seq.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|seq| seq.parse().ok())
}

/// The name a new journal's first file is written under before it is renamed into place.
pub(super) fn creating_name(name: &str) -> String {
    format!("{name}.new")
}

/// The name a new file is written under before it replaces the live one.
pub(super) fn next_name(name: &str) -> String {
    format!("{name}.next")
}

/// The storage of the directory holding `path`, and the file's name in it.
pub(super) fn fs_storage(path: &Path) -> Result<(Arc<dyn Storage>, String)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::InvalidOption {
            option: "journal",
            message: format!("`{}` names no file", path.display()),
        })?;
    let dir = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
    let storage = FsStorage::new(&dir).map_err(|e| Error::io("open", &dir, e))?;
    Ok((Arc::new(storage), name))
}

/// Takes the writer's lock on the journal at `path` (`.NAME.lock`, the pid inside).
pub(super) fn take_lock(path: &Path) -> Result<std::fs::File> {
    use std::io::Write;
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lock_path = path.with_file_name(format!(".{file}.lock"));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| Error::io("open", &lock_path, e))?;
    match f.try_lock() {
        Ok(()) => {
            let _ = f.set_len(0);
            let _ = writeln!(f, "{}", std::process::id());
            Ok(f)
        }
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::JournalLocked {
            path: path.to_path_buf(),
            pid: std::fs::read_to_string(&lock_path)
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io("lock", &lock_path, e)),
    }
}

/// Writes a new file of `format` holding `record` alone, durably (the file and its directory
/// entry).
pub(super) fn write_new_file(
    storage: &dyn Storage,
    name: &str,
    format: JournalFormat,
    record: &Record,
) -> Result<()> {
    let path = storage.describe(name);
    let io = |action, e| Error::io(action, &path, e);
    let mut bytes = format.preamble().to_vec();
    bytes.extend(
        format::encode(format, record).map_err(|e| Error::JournalRolledBack {
            path: path.clone(),
            action: record.action.clone(),
            message: format!("the state cannot be written: {e}"),
        })?,
    );
    if storage.len(name).map_err(|e| io("stat", e))?.is_some() {
        storage.remove(name).map_err(|e| io("remove", e))?;
    }
    storage.create_new(name).map_err(|e| io("create", e))?;
    storage.append(name, &bytes).map_err(|e| io("write", e))?;
    storage.sync(name).map_err(|e| io("fsync", e))?;
    storage
        .sync_dir(crate::storage::dir_of(name))
        .map_err(|e| io("fsync the directory of", e))
}
