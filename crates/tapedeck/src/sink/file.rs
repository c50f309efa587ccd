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
}

impl FileOptions {
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
    pub(crate) fn check_target(&self, path: &Path, can_append: bool) -> Result<()> {
        if path.as_os_str().is_empty() {
            return Err(Error::MalformedUri {
                uri: String::new(),
                reason: "the sink needs a file path, e.g. `csv:run.csv`".into(),
            });
        }
        if !self.overwrite && !self.append && path.exists() {
            return Err(exists(path, can_append));
        }
        Ok(())
    }

    /// Opens `path` for writing under these options.
    pub(crate) fn open(&self, path: &Path, can_append: bool) -> Result<OpenedFile> {
        self.check_target(path, can_append)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io("create directory", parent, e))?;
        }
        let mut oo = OpenOptions::new();
        if self.append {
            oo.read(true).append(true).create(true);
        } else if self.overwrite {
            oo.write(true).create(true).truncate(true);
        } else {
            oo.write(true).create_new(true);
        }
        let file = oo.open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                exists(path, can_append)
            } else {
                Error::io("create", path, e)
            }
        })?;
        let existing_len = if self.append {
            file.metadata()
                .map_err(|e| Error::io("stat", path, e))?
                .len()
        } else {
            0
        };
        Ok(OpenedFile {
            file,
            path: path.to_path_buf(),
            existing_len,
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
