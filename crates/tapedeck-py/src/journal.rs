//! `Journal`: tapedeck's crash-safe, audited state journal ([`tapedeck::journal`]) from
//! Python — kanta's job: a JSON document whose every change is a CRC-framed JSON Patch record
//! with its time, action and author, snapshots, and the state as of any record or time.
//!
//! Values cross as JSON text (the Python class `tapedeck.Journal` does `json.dumps` /
//! `json.loads`), so the state is exactly what `docs/journal-format.md` stores. Every call that
//! writes or reads the file runs with the GIL released.

use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::prelude::*;
use serde_json::Value;
use tapedeck::durability::FsyncPolicy;
use tapedeck::journal::{
    Journal as Core, JournalFollower as CoreFollower, JournalFormat, JournalOptions,
};
use tapedeck::{Error, Result};

use crate::errors::{named, to_py};

/// The native journal; the Python class `tapedeck.Journal` wraps it.
#[pyclass(module = "tapedeck._tapedeck", name = "Journal")]
pub struct Journal {
    core: Mutex<Option<Core<Value>>>,
    path: PathBuf,
}

fn closed(path: &std::path::Path) -> Error {
    Error::InvalidOption {
        option: "journal",
        message: format!("`{}` is closed; open it again", path.display()),
    }
}

fn bad_json(what: &str, e: serde_json::Error) -> Error {
    Error::InvalidOption {
        option: "value",
        message: format!("{what} is not JSON: {e}"),
    }
}

impl Journal {
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&Core<Value>) -> Result<T> + Send,
    ) -> PyResult<T> {
        let core = &self.core;
        let path = &self.path;
        py.detach(|| {
            let guard = core
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match guard.as_ref() {
                Some(c) => f(c),
                None => Err(closed(path)),
            }
        })
        .map_err(|e| to_py(py, e))
    }
}

#[pymethods]
impl Journal {
    #[new]
    #[pyo3(signature = (path, fsync=None, author=None, snapshot_every=None, read_only=false, format=None, snapshot_bytes=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        fsync: Option<String>,
        author: Option<String>,
        snapshot_every: Option<u64>,
        read_only: bool,
        format: Option<String>,
        snapshot_bytes: Option<u64>,
    ) -> PyResult<Journal> {
        let format = match format.as_deref() {
            None | Some("json-lines") => JournalFormat::JsonLines,
            Some("msgpack") => JournalFormat::MessagePack,
            Some(other) => {
                return Err(named(
                    py,
                    "OptionError",
                    format!("format `{other}`: use \"json-lines\" or \"msgpack\""),
                ));
            }
        };
        let mut options = JournalOptions {
            author,
            snapshot_every,
            snapshot_bytes,
            format,
            ..JournalOptions::default()
        };
        if let Some(f) = fsync {
            options.fsync = f
                .parse::<FsyncPolicy>()
                .map_err(|m| named(py, "OptionError", format!("fsync `{f}`: {m}")))?;
        }
        if snapshot_every == Some(0) {
            return Err(named(
                py,
                "OptionError",
                "snapshot_every must be at least 1",
            ));
        }
        let opened = py
            .detach(|| {
                if read_only {
                    Core::<Value>::open_read_only(&path)
                } else {
                    Core::open_with(&path, options, || Value::Object(Default::default()))
                }
            })
            .map_err(|e| to_py(py, e))?;
        Ok(Journal {
            core: Mutex::new(Some(opened)),
            path,
        })
    }

    /// The whole state, as JSON.
    fn state_json(&self, py: Python<'_>) -> PyResult<String> {
        self.with(py, |c| Ok(c.value().to_string()))
    }

    /// Sets the value (JSON) at a JSON pointer and commits it as one record.
    fn set_json(&self, py: Python<'_>, action: &str, pointer: &str, value: &str) -> PyResult<()> {
        self.with(py, |c| {
            let v: Value = serde_json::from_str(value).map_err(|e| bad_json("the value", e))?;
            c.set(action, pointer, &v)
        })
    }

    /// Removes the value at a JSON pointer and commits it as one record.
    fn remove(&self, py: Python<'_>, action: &str, pointer: &str) -> PyResult<()> {
        self.with(py, |c| c.remove(action, pointer))
    }

    /// Replaces the whole state (JSON) in one transaction: the record holds the difference.
    fn replace_json(&self, py: Python<'_>, action: &str, state: &str) -> PyResult<()> {
        self.with(py, |c| {
            let new: Value = serde_json::from_str(state).map_err(|e| bad_json("the state", e))?;
            c.transaction(action, |s| {
                *s = new;
                Ok::<(), String>(())
            })
        })
    }

    /// The records, as a JSON list: the live file's (`all=False`) or every one ever kept.
    #[pyo3(signature = (all=false))]
    fn history_json(&self, py: Python<'_>, all: bool) -> PyResult<String> {
        self.with(py, |c| {
            let records = if all { c.all_records()? } else { c.history()? };
            serde_json::to_string(&records).map_err(|e| bad_json("a record", e))
        })
    }

    /// The state right after record `seq`, as JSON; `None` past the last record.
    fn value_at_json(&self, py: Python<'_>, seq: u64) -> PyResult<Option<String>> {
        self.with(py, |c| Ok(c.value_at(seq)?.map(|v| v.to_string())))
    }

    /// The state as of `time_us` (µs since the epoch), as JSON; `None` before the first record.
    fn value_as_of_json(&self, py: Python<'_>, time_us: i64) -> PyResult<Option<String>> {
        self.with(py, |c| Ok(c.value_as_of(time_us)?.map(|v| v.to_string())))
    }

    /// Writes a snapshot now and starts a new file (the old one is kept as history).
    fn snapshot(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, Core::snapshot)
    }

    /// Waits until every committed record is on the disk.
    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, Core::sync)
    }

    /// The sequence number the next record gets.
    #[getter]
    fn next_seq(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |c| Ok(c.next_seq()))
    }

    /// The state's version (migrations).
    #[getter]
    fn version(&self, py: Python<'_>) -> PyResult<u32> {
        self.with(py, |c| Ok(c.version()))
    }

    /// Syncs and releases the journal (and its writer lock).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let core = &self.core;
        py.detach(|| {
            let taken = core
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            match taken {
                Some(c) => c.sync(),
                None => Ok(()),
            }
        })
        .map_err(|e| to_py(py, e))
    }
}

/// Reads a journal while another process (or thread) writes it; the Python class
/// `tapedeck.JournalFollower` wraps it.
#[pyclass(module = "tapedeck._tapedeck", name = "JournalFollower")]
pub struct Follower {
    inner: Mutex<CoreFollower>,
}

#[pymethods]
impl Follower {
    #[new]
    #[pyo3(signature = (path, from_seq=0))]
    fn new(py: Python<'_>, path: PathBuf, from_seq: u64) -> PyResult<Follower> {
        let inner = py
            .detach(|| CoreFollower::new(&path, from_seq))
            .map_err(|e| to_py(py, e))?;
        Ok(Follower {
            inner: Mutex::new(inner),
        })
    }

    /// The records committed since the last poll (at most `max`), as a JSON list.
    #[pyo3(signature = (max=10_000))]
    fn poll_json(&self, py: Python<'_>, max: usize) -> PyResult<String> {
        let inner = &self.inner;
        py.detach(|| {
            let records = inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .poll(max)?;
            serde_json::to_string(&records).map_err(|e| bad_json("a record", e))
        })
        .map_err(|e| to_py(py, e))
    }

    /// The sequence number of the next record a poll returns.
    #[getter]
    fn next_seq(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .next_seq()
    }
}
