//! `StreamCache`: batchcorder's job — read an Arrow stream once, replay it to many independent
//! readers — with a tape as its disk tier.
//!
//! Upstream is pulled lazily, one batch at a time, by whichever reader first needs it, and
//! never twice. Batches are kept in memory (the hot tier, bounded by `memory_capacity`) and,
//! with `disk_path`, on a tape (one frame per batch, CRC-checked on every read). Because the
//! disk tier is a tape, a cache opened again on the same `disk_path` — after `close()` or after
//! the process died — replays every batch it had ingested, and continues with the new
//! upstream. Nothing is dropped to make room: a full tier is an error naming its capacity,
//! and the batch that did not fit is kept and offered again (batchcorder loses it).
//!
//! Thread safety: readers are independent and may run on any thread; ingestion is serialised
//! by one lock, and reads of batches already cached take the state lock only to look up.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arrow_array::{Array, RecordBatch, RecordBatchReader, StructArray};
use arrow_schema::{ArrowError, SchemaRef};
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyTuple};
use tapedeck::tape::{Compression, FsyncPolicy, StartAt, TapeOptions, TapeReader, TapeWriter};
use tapedeck::{Error, Result};

use crate::arrow_ffi::Batches;
use crate::errors::{named, to_py};

/// Why a read of the cache failed, beyond tapedeck's own errors.
enum CacheError {
    Tapedeck(Error),
    Closed,
    Full(String),
    Upstream(String),
}

impl From<Error> for CacheError {
    fn from(e: Error) -> Self {
        CacheError::Tapedeck(e)
    }
}

impl std::fmt::Display for CacheError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheError::Tapedeck(e) => write!(f, "{e}"),
            CacheError::Closed => write!(f, "the StreamCache has been closed"),
            CacheError::Full(m) | CacheError::Upstream(m) => write!(f, "{m}"),
        }
    }
}

fn py_err(py: Python<'_>, e: CacheError) -> PyErr {
    match e {
        CacheError::Tapedeck(e) => to_py(py, e),
        CacheError::Closed => named(py, "CacheClosedError", "the StreamCache has been closed"),
        CacheError::Full(m) => named(py, "CacheFullError", m),
        CacheError::Upstream(m) => named(py, "ArrowDataError", m),
    }
}

struct Disk {
    dir: PathBuf,
    writer: TapeWriter,
    capacity: Option<u64>,
    /// Rows before this are in the tape's files (readers can find them there).
    written: u64,
    /// Each batch durable before a reader gets it (`fsync="always"`).
    durable_first: bool,
}

struct State {
    /// Sequence number of each cached batch's first row, and its rows (on the tape).
    index: Vec<(u64, usize)>,
    /// Hot copies: `hot[i - hot_from]` is batch `i`.
    hot: std::collections::VecDeque<RecordBatch>,
    hot_from: usize,
    hot_bytes: usize,
    memory_capacity: Option<usize>,
    disk: Option<Disk>,
    exhausted: bool,
    closed: bool,
}

struct Upstream {
    batches: Option<Batches>,
    /// Why upstream failed, once it did: raised again by every later pull (the C stream is not
    /// read after an error).
    failed: Option<String>,
    /// A batch pulled but not stored (its tier was full): offered again, never lost.
    held: Option<RecordBatch>,
}

struct Shared {
    schema: SchemaRef,
    state: Mutex<State>,
    upstream: Mutex<Upstream>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn batch_bytes(b: &RecordBatch) -> usize {
    b.get_array_memory_size()
}

impl Shared {
    fn count(&self) -> usize {
        lock(&self.state).index.len()
    }

    /// Pulls one batch from upstream unless someone else did meanwhile (`seen` is the count
    /// the caller saw). Returns false at the end of upstream.
    fn ingest(&self, seen: usize) -> std::result::Result<bool, CacheError> {
        let mut up = lock(&self.upstream);
        {
            let st = lock(&self.state);
            if st.closed {
                return Err(CacheError::Closed);
            }
            if st.index.len() > seen {
                return Ok(true);
            }
            if st.exhausted {
                return Ok(false);
            }
        }
        if let Some(why) = &up.failed {
            return Err(CacheError::Upstream(why.clone()));
        }
        let batch = match up.held.take() {
            Some(b) => b,
            None => match up.batches.as_mut().and_then(Iterator::next) {
                Some(Ok(b)) => b,
                Some(Err(e)) => {
                    let why = format!("reading upstream: {e}");
                    up.failed = Some(why.clone());
                    up.batches = None;
                    return Err(CacheError::Upstream(why));
                }
                None => {
                    up.batches = None;
                    lock(&self.state).exhausted = true;
                    return Ok(false);
                }
            },
        };
        let batch = if batch.schema().fields() == self.schema.fields() {
            RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec())
                .map_err(|e| CacheError::Upstream(format!("upstream batch: {e}")))?
        } else {
            let why = format!(
                "upstream sent a batch with other columns than its schema: {:?}",
                batch.schema().fields()
            );
            // Kept, so no reader is handed the stream without it.
            up.held = Some(batch);
            return Err(CacheError::Upstream(why));
        };
        let size = batch_bytes(&batch);
        let mut st = lock(&self.state);
        match &mut st.disk {
            None => {
                if let Some(cap) = st.memory_capacity
                    && st.hot_bytes.saturating_add(size) > cap
                {
                    up.held = Some(batch);
                    return Err(CacheError::Full(format!(
                        "memory tier full: capacity {cap} bytes, {} in use, the next batch needs \
                         {size}; give a larger memory_capacity, or a disk_path and disk_capacity",
                        st.hot_bytes
                    )));
                }
                st.index.push((0, batch.num_rows()));
            }
            Some(disk) => {
                if let Some(cap) = disk.capacity
                    && disk.writer.bytes().saturating_add(size as u64) > cap
                {
                    let used = disk.writer.bytes();
                    up.held = Some(batch);
                    return Err(CacheError::Full(format!(
                        "disk tier `{}` full: capacity {cap} bytes, {used} in use, the next batch \
                         needs about {size}; give a larger disk_capacity",
                        disk.dir.display()
                    )));
                }
                // The tape's committer thread writes it, beside this one; a reader that needs
                // it from the file before that makes sure it is there (`Position::next`).
                let appended = disk.writer.submit(&batch)?;
                if disk.durable_first {
                    disk.writer.wait_durable(appended.end_seq)?;
                }
                st.index.push((appended.first_seq, batch.num_rows()));
            }
        }
        st.hot.push_back(batch);
        st.hot_bytes = st.hot_bytes.saturating_add(size);
        let mut evicted = Vec::new();
        if st.disk.is_some()
            && let Some(cap) = st.memory_capacity
        {
            // With a disk tier, the oldest hot copies go first: they are on the tape.
            while st.hot_bytes > cap && st.hot.len() > 1 {
                if let Some(old) = st.hot.pop_front() {
                    st.hot_bytes = st.hot_bytes.saturating_sub(batch_bytes(&old));
                    st.hot_from += 1;
                    evicted.push(old);
                }
            }
        }
        // Released after the locks: freeing a batch imported from Python may need the GIL.
        drop(st);
        drop(up);
        drop(evicted);
        Ok(true)
    }
}

/// One reader's position, and its own view of the tape for batches no longer hot.
struct Position {
    next: usize,
    tape: Option<(TapeReader, usize)>,
}

impl Position {
    fn next(&mut self, shared: &Shared) -> std::result::Result<Option<RecordBatch>, CacheError> {
        loop {
            let seen = {
                let mut st = lock(&shared.state);
                if st.closed {
                    return Err(CacheError::Closed);
                }
                let count = st.index.len();
                if self.next < count {
                    if self.next >= st.hot_from
                        && let Some(b) = st.hot.get(self.next - st.hot_from)
                    {
                        self.next += 1;
                        return Ok(Some(b.clone()));
                    }
                    let (first_seq, rows) = st.index[self.next];
                    let Some(disk) = st.disk.as_mut() else {
                        return Err(CacheError::Upstream(format!(
                            "batch {} is no longer held in memory",
                            self.next
                        )));
                    };
                    let end = first_seq.saturating_add(rows as u64);
                    if end > disk.written {
                        disk.writer.flush()?;
                        disk.written = disk.writer.next_seq();
                    }
                    let dir = disk.dir.clone();
                    drop(st);
                    let b = self.read_from_tape(&dir, first_seq, rows, shared)?;
                    self.next += 1;
                    return Ok(Some(b));
                }
                if st.exhausted {
                    return Ok(None);
                }
                count
            };
            if !shared.ingest(seen)? && shared.count() <= self.next {
                return Ok(None);
            }
        }
    }

    fn read_from_tape(
        &mut self,
        dir: &std::path::Path,
        first_seq: u64,
        rows: usize,
        shared: &Shared,
    ) -> std::result::Result<RecordBatch, CacheError> {
        let reusable = matches!(&self.tape, Some((_, at)) if *at == self.next);
        if !reusable {
            self.tape = Some((TapeReader::open(dir, StartAt::Seq(first_seq))?, self.next));
        }
        let Some((reader, at)) = self.tape.as_mut() else {
            return Err(CacheError::Closed);
        };
        reader.set_until(Some(first_seq.saturating_add(rows as u64)));
        let mut parts = Vec::new();
        let mut got = 0usize;
        while got < rows {
            match reader.next_batch()? {
                Some((_, b)) => {
                    got += b.num_rows();
                    parts.push(b);
                }
                None => break,
            }
        }
        let damaged = reader.take_unreadable();
        if !damaged.is_empty() || got != rows {
            let what: Vec<String> = damaged.iter().map(ToString::to_string).collect();
            return Err(CacheError::Tapedeck(Error::Tape {
                path: dir.to_path_buf(),
                message: format!(
                    "cached batch {} (rows {first_seq}..{}) could not be read back: {}",
                    self.next,
                    first_seq.saturating_add(rows as u64),
                    if what.is_empty() {
                        "rows missing".to_string()
                    } else {
                        what.join("; ")
                    }
                ),
            }));
        }
        *at = self.next + 1;
        let b = if parts.len() == 1 {
            parts
                .pop()
                .unwrap_or_else(|| RecordBatch::new_empty(shared.schema.clone()))
        } else {
            arrow_select::concat::concat_batches(&shared.schema, parts.iter())
                .map_err(|e| CacheError::Upstream(e.to_string()))?
        };
        RecordBatch::try_new(shared.schema.clone(), b.columns().to_vec())
            .map_err(|e| CacheError::Upstream(e.to_string()))
    }
}

/// The disk tier, the batches an earlier cache left on it, and their schema.
type Opened = (Option<Disk>, Vec<(u64, usize)>, Option<SchemaRef>);

/// The native `StreamCache`; the Python class `tapedeck.StreamCache` wraps it.
#[pyclass(module = "tapedeck._tapedeck", name = "StreamCache")]
pub struct StreamCache {
    shared: Arc<Shared>,
}

#[pymethods]
impl StreamCache {
    #[new]
    #[pyo3(signature = (reader=None, memory_capacity=None, disk_path=None, disk_capacity=None, fsync=None))]
    fn new(
        py: Python<'_>,
        reader: Option<&Bound<'_, PyAny>>,
        memory_capacity: Option<usize>,
        disk_path: Option<PathBuf>,
        disk_capacity: Option<u64>,
        fsync: Option<String>,
    ) -> PyResult<StreamCache> {
        if disk_capacity.is_some() && disk_path.is_none() {
            return Err(named(py, "OptionError", "disk_capacity needs a disk_path"));
        }
        let upstream = match reader {
            Some(r) => Some(crate::arrow_ffi::import(r)?),
            None => None,
        };
        let fsync = match fsync.as_deref() {
            None => FsyncPolicy::Never,
            Some(f) => f
                .parse::<FsyncPolicy>()
                .map_err(|m| named(py, "OptionError", format!("fsync `{f}`: {m}")))?,
        };
        let opened = py.detach(|| -> Result<Opened> {
            let Some(dir) = disk_path else {
                return Ok((None, Vec::new(), None));
            };
            let durable_first = fsync == FsyncPolicy::Always;
            let options = TapeOptions {
                fsync,
                compression: Compression::None,
                frame_rows: 1,
                ..TapeOptions::default()
            };
            let writer = TapeWriter::open(&dir, options)?;
            // What an earlier cache on this tape ingested: one frame per batch.
            let mut index = Vec::new();
            let mut schema = None;
            let mut r = TapeReader::open(&dir, StartAt::Start)?.until(Some(writer.next_seq()));
            while let Some((seq, b)) = r.next_batch()? {
                schema.get_or_insert_with(|| b.schema());
                index.push((seq, b.num_rows()));
            }
            let damaged = r.take_unreadable();
            if !damaged.is_empty() {
                let what: Vec<String> = damaged.iter().map(ToString::to_string).collect();
                return Err(Error::Tape {
                    path: dir.clone(),
                    message: format!(
                        "the cache's tape is damaged, its batches cannot all be replayed: {}",
                        what.join("; ")
                    ),
                });
            }
            let written = writer.next_seq();
            let disk = Disk {
                dir,
                writer,
                capacity: disk_capacity,
                written,
                durable_first,
            };
            Ok((Some(disk), index, schema))
        });
        let (disk, index, tape_schema) = opened.map_err(|e| to_py(py, e))?;
        let schema = match (&upstream, tape_schema) {
            (Some(u), Some(t)) if u.schema().fields() != t.fields() => {
                return Err(named(
                    py,
                    "SchemaError",
                    format!(
                        "the cache's tape holds batches with other columns than the new upstream \
                         (tape: {:?}); use another disk_path",
                        t.fields()
                    ),
                ));
            }
            (Some(u), _) => u.schema(),
            (None, Some(t)) => t,
            (None, None) => {
                return Err(named(
                    py,
                    "OptionError",
                    "a StreamCache needs a reader, or a disk_path holding an earlier cache",
                ));
            }
        };
        let exhausted = upstream.is_none();
        let hot_from = index.len();
        Ok(StreamCache {
            shared: Arc::new(Shared {
                schema,
                state: Mutex::new(State {
                    index,
                    hot: Default::default(),
                    hot_from,
                    hot_bytes: 0,
                    memory_capacity,
                    disk,
                    exhausted,
                    closed: false,
                }),
                upstream: Mutex::new(Upstream {
                    batches: upstream,
                    failed: None,
                    held: None,
                }),
            }),
        })
    }

    /// A new reader: from the first batch, or (`from_start=False`) from the frontier.
    #[pyo3(signature = (from_start=true))]
    fn reader(&self, py: Python<'_>, from_start: bool) -> PyResult<CacheReader> {
        let shared = &self.shared;
        // The locks of the cache are taken without the GIL throughout: an ingesting thread may
        // hold them while its Python upstream waits for the GIL.
        let next = py
            .detach(|| {
                let st = lock(&shared.state);
                if st.closed {
                    return Err(CacheError::Closed);
                }
                Ok(if from_start { 0 } else { st.index.len() })
            })
            .map_err(|e| py_err(py, e))?;
        Ok(CacheReader {
            shared: self.shared.clone(),
            position: Mutex::new(Some(Position { next, tape: None })),
        })
    }

    /// Pulls upstream to its end; returns the number of batches cached.
    fn ingest_all(&self, py: Python<'_>) -> PyResult<usize> {
        let shared = &self.shared;
        py.detach(|| -> std::result::Result<usize, CacheError> {
            loop {
                let seen = shared.count();
                if !shared.ingest(seen)? {
                    return Ok(shared.count());
                }
            }
        })
        .map_err(|e| py_err(py, e))
    }

    /// Batches pulled from upstream (and those an earlier cache on the tape had).
    #[getter]
    fn ingested_count(&self, py: Python<'_>) -> usize {
        py.detach(|| self.shared.count())
    }

    /// Whether upstream has ended.
    #[getter]
    fn upstream_exhausted(&self, py: Python<'_>) -> bool {
        py.detach(|| lock(&self.shared.state).exhausted)
    }

    /// Bytes of the hot copies held in memory.
    #[getter]
    fn memory_bytes(&self, py: Python<'_>) -> usize {
        py.detach(|| lock(&self.shared.state).hot_bytes)
    }

    /// Bytes of the disk tier (the tape), 0 without one.
    #[getter]
    fn disk_bytes(&self, py: Python<'_>) -> u64 {
        py.detach(|| {
            lock(&self.shared.state)
                .disk
                .as_ref()
                .map_or(0, |d| d.writer.bytes())
        })
    }

    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        crate::arrow_ffi::export_schema(py, &self.shared.schema)
    }

    /// Closes the cache: readers fail from now on, memory is freed, the disk tier's tape is
    /// sealed and kept (open a cache on it again to replay it).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let shared = &self.shared;
        py.detach(|| {
            let (disk, hot) = {
                let mut st = lock(&shared.state);
                if st.closed {
                    return Ok(());
                }
                st.closed = true;
                st.hot_bytes = 0;
                (st.disk.take(), std::mem::take(&mut st.hot))
            };
            drop(hot);
            let upstream = lock(&shared.upstream).batches.take();
            drop(upstream);
            match disk {
                Some(d) => d.writer.close(),
                None => Ok(()),
            }
        })
        .map_err(|e| to_py(py, e))
    }
}

/// One pass over a [`StreamCache`]; the Python class `tapedeck.StreamCacheReader` wraps it.
#[pyclass(module = "tapedeck._tapedeck", name = "CacheReader")]
pub struct CacheReader {
    shared: Arc<Shared>,
    position: Mutex<Option<Position>>,
}

struct CacheStream {
    shared: Arc<Shared>,
    position: Position,
}

impl Iterator for CacheStream {
    type Item = std::result::Result<RecordBatch, ArrowError>;
    fn next(&mut self) -> Option<Self::Item> {
        // A consumer may call this holding the GIL; the cache's locks are taken without it.
        let shared = &self.shared;
        let position = &mut self.position;
        Python::attach(|py| py.detach(|| position.next(shared)))
            .map_err(|e| ArrowError::ExternalError(e.to_string().into()))
            .transpose()
    }
}

impl RecordBatchReader for CacheStream {
    fn schema(&self) -> SchemaRef {
        self.shared.schema.clone()
    }
}

#[pymethods]
impl CacheReader {
    /// The next batch as a native `Batch` (`__arrow_c_array__`), `None` at the end.
    fn next_batch(&self, py: Python<'_>) -> PyResult<Option<Batch>> {
        let shared = &self.shared;
        let position = &self.position;
        py.detach(|| {
            let mut p = position.lock().unwrap_or_else(PoisonError::into_inner);
            match p.as_mut() {
                Some(p) => p.next(shared).map(|b| b.map(|batch| Batch { batch })),
                None => Err(CacheError::Upstream("Reader already consumed".into())),
            }
        })
        .map_err(|e| match e {
            CacheError::Upstream(m) if m == "Reader already consumed" => named(
                py,
                "ReaderConsumedError",
                "this reader was read already (a reader is read once)",
            ),
            e => py_err(py, e),
        })
    }

    /// The remaining batches as an Arrow C stream; consumes the reader.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema;
        let shared = self.shared.clone();
        crate::arrow_ffi::export_once(
            py,
            &self.position,
            |position| Box::new(CacheStream { shared, position }),
            "this reader was read already (a reader is read once)",
        )
    }

    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        crate::arrow_ffi::export_schema(py, &self.shared.schema)
    }

    /// Whether the reader was consumed by `__arrow_c_stream__`.
    #[getter]
    fn consumed(&self, py: Python<'_>) -> bool {
        py.detach(|| {
            self.position
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_none()
        })
    }
}

/// One record batch, for `pyarrow.record_batch(b)` and the like (`__arrow_c_array__`).
#[pyclass(module = "tapedeck._tapedeck", name = "Batch")]
pub struct Batch {
    batch: RecordBatch,
}

#[pymethods]
impl Batch {
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_array__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let _ = requested_schema;
        let data = StructArray::from(self.batch.clone()).into_data();
        let (array, schema) = arrow_array::ffi::to_ffi(&data).map_err(|e| {
            named(
                py,
                "ArrowDataError",
                format!("cannot export the batch: {e}"),
            )
        })?;
        let schema = PyCapsule::new_with_value(py, schema, c"arrow_schema")?;
        let array = PyCapsule::new_with_value(py, array, c"arrow_array")?;
        PyTuple::new(py, [schema.into_any(), array.into_any()])
    }

    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        crate::arrow_ffi::export_schema(py, &self.batch.schema())
    }

    /// Rows in the batch.
    #[getter]
    fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    fn __len__(&self) -> usize {
        self.batch.num_rows()
    }
}
