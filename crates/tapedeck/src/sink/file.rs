//! What every file sink shares: opening the output without destroying an earlier run's data.
//!
//! [`FileOptions::open`] refuses an existing file unless the URI says `overwrite=true` or, for a
//! format that can grow (CSV, JSONL), `append=true`. Parent directories are created, and every
//! I/O error names the path.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::uri::Params;

/// How a file sink treats an existing file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileOptions {
    /// Replace an existing file.
    pub overwrite: bool,
    /// Append to an existing file (formats that allow it).
    pub append: bool,
}

/// An opened output file.
#[derive(Debug)]
pub(crate) struct OpenedFile {
    pub file: File,
    pub path: PathBuf,
    /// Length of the file before this run (non-zero only when appending).
    pub existing_len: u64,
    /// What opening it created (the file unless it existed, new parent directories).
    pub created: Created,
}

/// What a sink created on disk for this run: a file that did not exist before, and the parent
/// directories it had to make. A run that fails before the sink wrote any data takes them away
/// again ([`Created::remove`]), so the retry the error message suggests finds the path free
/// instead of failing with "already exists". Files that existed before (`overwrite=true`,
/// `append=true`) are never removed.
#[derive(Debug, Default)]
pub(crate) struct Created {
    file: Option<PathBuf>,
    /// Deepest first.
    dirs: Vec<PathBuf>,
}

impl Created {
    /// Directories made by [`create_parents`]; no file yet.
    pub(crate) fn dirs(dirs: Vec<PathBuf>) -> Created {
        Created { file: None, dirs }
    }

    /// Adds the file `path` (created now) and the directories `dirs` made for it.
    pub(crate) fn add(&mut self, file: Option<PathBuf>, mut dirs: Vec<PathBuf>) {
        if file.is_some() {
            self.file = file;
        }
        dirs.append(&mut self.dirs);
        self.dirs = dirs;
    }

    /// Forgets everything: what was created now holds data and stays.
    pub(crate) fn keep(&mut self) {
        self.file = None;
        self.dirs.clear();
    }

    /// True when this run created the file.
    pub(crate) fn has_file(&self) -> bool {
        self.file.is_some()
    }

    /// Removes the file (and the files named `file` + each of `companions`, e.g. SQLite's
    /// `-wal`), then each directory this run made if it is empty (a directory another sink or
    /// process put something in stays). Runs once; an error names the file.
    pub(crate) fn remove(&mut self, companions: &[&str]) -> Result<()> {
        let mut result = Ok(());
        if let Some(file) = self.file.take() {
            for suffix in std::iter::once(&"").chain(companions) {
                let mut p = file.clone().into_os_string();
                p.push(suffix);
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        if result.is_ok() {
                            result = Err(Error::io("remove the unwritten file", p, e));
                        }
                    }
                }
            }
            tracing::info!(
                "removed {}: the run failed before writing anything to it",
                file.display()
            );
        }
        for dir in std::mem::take(&mut self.dirs) {
            // Not empty (or already gone): it stays.
            let _ = std::fs::remove_dir(&dir);
        }
        result
    }
}

/// Creates the missing parent directories of `path`; returns the ones it made, deepest first.
pub(crate) fn create_parents(path: &Path) -> Result<Vec<PathBuf>> {
    let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(Vec::new());
    };
    create_dirs(parent)
}

/// Creates `dir` and its missing parents; returns the ones it made, deepest first.
pub(crate) fn create_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let missing: Vec<PathBuf> = dir
        .ancestors()
        .filter(|a| !a.as_os_str().is_empty())
        .take_while(|a| !a.exists())
        .map(Path::to_path_buf)
        .collect();
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    Ok(missing)
}

impl FileOptions {
    /// Appending to an existing file: how a delivery reopens a file it continues.
    pub(crate) const APPEND: FileOptions = FileOptions {
        overwrite: false,
        append: true,
    };

    /// Reads `overwrite` (and `append` if `can_append`) from URI parameters.
    pub(crate) fn from_params(params: &mut Params, can_append: bool) -> Result<FileOptions> {
        let overwrite = params.flag("overwrite")?;
        let append = if can_append {
            params.flag("append")?
        } else {
            false
        };
        if overwrite && append {
            return Err(Error::BadParam {
                uri: params.uri().to_string(),
                param: "append".into(),
                value: "true".into(),
                expected: "either overwrite=true or append=true, not both".into(),
            });
        }
        Ok(FileOptions { overwrite, append })
    }

    /// Checks, without creating anything, that `path` may be written under these options: a
    /// path is needed, and an existing file needs `overwrite` (or `append`).
    pub(crate) fn check_path(&self, path: &Path, can_append: bool) -> Result<()> {
        if path.as_os_str().is_empty() {
            return Err(Error::InvalidOption {
                option: "path",
                message: "a file sink needs a file path, e.g. `csv:run.csv`".into(),
            });
        }
        if !self.overwrite && !self.append && path.exists() {
            return Err(exists(path, can_append));
        }
        Ok(())
    }

    /// Opens `path` for writing under these options, recording what it creates.
    pub(crate) fn open(&self, path: &Path, can_append: bool) -> Result<OpenedFile> {
        self.check_path(path, can_append)?;
        let dirs = create_parents(path)?;
        if self.append {
            // A file appended to is the user's, whether or not this run made it: it stays.
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(path)
                .map_err(|e| Error::io("create", path, e))?;
            let existing_len = file
                .metadata()
                .map_err(|e| Error::io("stat", path, e))?
                .len();
            return Ok(OpenedFile {
                file,
                path: path.to_path_buf(),
                existing_len,
                created: Created::default(),
            });
        }
        // `create_new` first: then this run knows whether it made the file.
        let (file, new) = match OpenOptions::new().write(true).create_new(true).open(path) {
            Ok(f) => (f, true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && self.overwrite => {
                let f = OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(path)
                    .map_err(|e| Error::io("open", path, e))?;
                (f, false)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(exists(path, can_append));
            }
            Err(e) => return Err(Error::io("create", path, e)),
        };
        let mut created = Created::dirs(dirs);
        created.add(new.then(|| path.to_path_buf()), Vec::new());
        let existing_len = 0;
        Ok(OpenedFile {
            file,
            path: path.to_path_buf(),
            existing_len,
            created,
        })
    }
}

fn exists(path: &Path, can_append: bool) -> Error {
    Error::FileExists {
        path: path.to_path_buf(),
        append_hint: if can_append {
            " or `?append=true` to add to it"
        } else {
            ""
        },
    }
}

/// Bytes buffered before a text sink writes even without a flush.
const WRITE_THRESHOLD: usize = 1 << 20;

/// A text file fed from an in-memory buffer: rows are encoded into `buf` and reach the file in
/// one `write` per flush (or whenever the buffer passes 1 MiB).
#[derive(Debug)]
pub(crate) struct BufferedOutput {
    file: File,
    path: PathBuf,
    /// Encoded bytes not yet written.
    pub buf: Vec<u8>,
    /// Bytes written to the file by this run.
    pub bytes: u64,
}

impl BufferedOutput {
    pub(crate) fn new(opened: OpenedFile) -> BufferedOutput {
        BufferedOutput {
            file: opened.file,
            path: opened.path,
            buf: Vec::with_capacity(64 * 1024),
            bytes: 0,
        }
    }

    pub(crate) fn file_mut(&mut self) -> &mut File {
        &mut self.file
    }

    /// Writes the buffer to the file.
    pub(crate) fn write_out(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(&self.buf)
            .map_err(|e| Error::io("write", &self.path, e))?;
        self.bytes += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Writes the buffer if it has grown past the threshold.
    pub(crate) fn write_out_if_large(&mut self) -> Result<()> {
        if self.buf.len() >= WRITE_THRESHOLD {
            self.write_out()?;
        }
        Ok(())
    }
}

/// `.NAME.SUFFIX` beside `path`: where a file is written before it is complete (`partial`), or
/// a delivery keeps its cursor (`tapedeck-cursor`).
pub fn hidden_beside(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{suffix}"))
}

/// Makes a new name in `path`'s directory (a created file, a rename) durable: fsyncs the
/// directory. An error is returned, never ignored: the caller was about to rely on the name
/// surviving a power failure (a cursor naming a hidden Parquet part, a finished rename), and a
/// name that may not survive must not be built on.
pub(crate) fn sync_parent(path: &Path) -> Result<()> {
    let dir = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync the directory", &dir, e))
}

/// The length of `path`, `None` when it does not exist.
pub(crate) fn file_len(path: &Path) -> Result<Option<u64>> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(m.len())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

/// Removes `path`; one that is not there is fine.
pub(crate) fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

/// Opens `path` for reading and writing, creating it (and its folders) if missing, keeping
/// what it holds.
pub(crate) fn open_or_create(path: &Path) -> Result<File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("create directory", parent, e))?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io("open", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_that_cannot_be_synced_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let missing = dir.path().join("gone").join("file");
        let e = sync_parent(&missing).err().map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| e.contains("gone")),
            "expected an error naming the directory, got {e:?}"
        );
        assert!(sync_parent(&dir.path().join("file")).is_ok());
    }
}
