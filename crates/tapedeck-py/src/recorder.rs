//! `Recorder`: Python rows, Arrow data and DAQ blocks into a [`tapedeck::recorder::Recorder`].
//!
//! The library's recorder does the careful part — sinks checked before anything is created,
//! the tape recovered and locked, one exactly-once delivery per sink. This class adds what a
//! Python acquisition loop expects of alicatlib's and dtollib's `pipe`: writes are held until
//! `batch_size` rows are waiting, and whatever waits is flushed once `flush_interval` has
//! passed — by a thread of its own, so also when the stream has gone quiet, which is where the
//! reference pipes' timers (checked only when a sample arrives) fall short.
//!
//! A write call only converts its data (holding the GIL: it reads Python objects) and queues
//! it; the flusher thread hands the queue to the recorder and its sinks, without the GIL, so
//! a Python producer and the sinks run on two cores and a write never waits for a disk or a
//! database — unless the queue holds [`QUEUE_LIMIT`] rows (the sinks are slower than the
//! producer), when it waits for room, the GIL released. `flush()` and `sync()` wait for what
//! was written before them. A failure of the flusher is kept and raised by the next call; the
//! recorder takes no more writes after a failure, and `close()` still finishes the deliveries
//! of what the tape acknowledged.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use tapedeck::durability::FsyncPolicy;
use tapedeck::record::{Block, BlockError, Channel, RawCodes, RowBuilder};
use tapedeck::recorder::Recorder as Core;
use tapedeck::tape::{Compression, TapeOptions};
use tapedeck::{Error, Result};

use crate::errors::{named, to_py};
use crate::rows::KeyCache;

/// How long a recorder dropped without `close()` lets its deliveries finish.
const DROP_FINISH_FOR: Duration = Duration::from_secs(10);

/// Rows the queue holds (beyond one batch) before a write waits for the flusher.
const QUEUE_LIMIT: usize = 262_144;

/// What waits to be written, in the order it came.
enum Pending {
    Batch(RecordBatch),
    Block(Box<Block>),
}

/// Batches at least this long go to the sinks as they are; shorter ones are joined.
const JOIN_BELOW_ROWS: usize = 4096;

/// Joins runs of small batches with one schema (many small `write_rows` calls) into one batch
/// each, so a sink gets one write per flush instead of one per call; a long batch is not
/// copied.
fn joined(pending: Vec<Pending>) -> Result<Vec<Pending>> {
    let mut out: Vec<Pending> = Vec::with_capacity(pending.len());
    let mut run: Vec<RecordBatch> = Vec::new();
    let close_run = |run: &mut Vec<RecordBatch>, out: &mut Vec<Pending>| -> Result<()> {
        match run.len() {
            0 => {}
            1 => out.extend(run.drain(..).map(Pending::Batch)),
            _ => {
                let schema = run[0].schema();
                let b = arrow_select::concat::concat_batches(&schema, run.iter())
                    .map_err(|e| Error::arrow("joining the rows written", e))?;
                run.clear();
                out.push(Pending::Batch(b));
            }
        }
        Ok(())
    };
    for p in pending {
        match p {
            Pending::Batch(b) if b.num_rows() >= JOIN_BELOW_ROWS => {
                close_run(&mut run, &mut out)?;
                out.push(Pending::Batch(b));
            }
            Pending::Batch(b) => {
                if run.first().is_some_and(|f| f.schema() != b.schema()) {
                    close_run(&mut run, &mut out)?;
                }
                run.push(b);
            }
            block @ Pending::Block(_) => {
                close_run(&mut run, &mut out)?;
                out.push(block);
            }
        }
    }
    close_run(&mut run, &mut out)?;
    Ok(out)
}

/// What the write calls hand over: guarded by its own lock, never held across I/O.
struct Queue {
    pending: Vec<Pending>,
    pending_rows: usize,
    /// Rows taken by the write calls.
    received: u64,
    /// When the queue was last emptied by a flush.
    last_flush: Instant,
    /// A write asked for a flush (`batch_size` reached).
    flush_wanted: bool,
    /// A failure of the flusher thread, raised by the next call.
    failure: Option<Error>,
    /// Set once a write or flush failed: what to say to every later write.
    broken: Option<Broken>,
    /// `close()` began: no more writes; the flusher ends.
    closing: bool,
}

/// The recorder and what it did: held while writing to the sinks.
struct Sinks {
    core: Option<Core>,
    /// The summary, as JSON, once closed.
    summary: Option<String>,
}

struct Shared {
    queue: Mutex<Queue>,
    sinks: Mutex<Sinks>,
    /// The tape writer's positions and this run's first sequence number (with a tape), read
    /// without the sinks' lock, which a flush or the final delivery may hold for long.
    watch: Option<(tapedeck::tape::TapeWatch, u64)>,
    /// Each delivery's status (with a tape), likewise.
    status: Option<tapedeck::deliver::StatusHandle>,
    /// Rows handed to the recorder and flushed (without a tape, what `acknowledged` says).
    flushed: std::sync::atomic::AtomicU64,
    /// Signalled when there is work for the flusher, or room in the queue.
    wake: Condvar,
    room: Condvar,
    batch_size: usize,
    flush_interval: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves the state as it was between two operations.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn closed_error() -> Error {
    Error::InvalidOption {
        option: "recorder",
        message: "it is closed; open a new Recorder to record more".into(),
    }
}

/// The failure that stopped the recorder, kept so every later call raises it as its own
/// class (a full disk stays a `StorageError` with `ENOSPC`), not as a usage error.
struct Broken {
    message: String,
    class: &'static str,
    errno: Option<i32>,
}

impl Broken {
    fn of(e: &Error) -> Broken {
        Broken {
            message: e.to_string(),
            class: crate::errors::class_name(e),
            errno: e.os_error(),
        }
    }
}

/// The option name of the error that stands for [`Broken`] until it reaches Python
/// ([`Shared::to_py`] raises the kept class instead).
const BROKEN: &str = "recorder (failed earlier)";

fn broken_error(why: &Broken) -> Error {
    Error::InvalidOption {
        option: BROKEN,
        message: format!("it failed earlier and takes no more rows: {}", why.message),
    }
}

impl Queue {
    /// Whether writes are still taken; the flusher's failure is raised once, here.
    fn check(&mut self) -> Result<()> {
        if let Some(e) = self.failure.take() {
            return Err(e);
        }
        if let Some(why) = &self.broken {
            return Err(broken_error(why));
        }
        if self.closing {
            return Err(closed_error());
        }
        Ok(())
    }
}

impl Shared {
    /// Queues `p` (`rows` rows); asks the flusher for a flush once `batch_size` rows wait, and
    /// waits for room when the queue is full.
    fn push(&self, p: Pending, rows: usize) -> Result<()> {
        let mut q = lock(&self.queue);
        q.check()?;
        while q.pending_rows > QUEUE_LIMIT.max(self.batch_size) {
            q = self.room.wait(q).unwrap_or_else(PoisonError::into_inner);
            q.check()?;
        }
        self.queue_locked(&mut q, p, rows);
        Ok(())
    }

    /// Adds `p` to the queue (room checked by the caller) and wakes the flusher when a batch
    /// is full.
    fn queue_locked(&self, q: &mut Queue, p: Pending, rows: usize) {
        q.pending.push(p);
        q.pending_rows += rows;
        q.received += rows as u64;
        if q.pending_rows >= self.batch_size && !q.flush_wanted {
            // Once per flush: later writes find the flusher asked already.
            q.flush_wanted = true;
            self.wake.notify_one();
        }
    }

    /// [`Shared::push`] without letting go of the GIL when that costs more than it saves: the
    /// queue's lock is free and the queue has room — checked and used under one guard, so this
    /// never waits. Otherwise `Err(p)`: push with the GIL released (it may wait).
    fn try_push(&self, p: Pending, rows: usize) -> std::result::Result<Result<()>, Pending> {
        let Ok(mut q) = self.queue.try_lock() else {
            return Err(p);
        };
        if q.pending_rows > QUEUE_LIMIT.max(self.batch_size) {
            return Err(p);
        }
        if let Err(e) = q.check() {
            return Ok(Err(e));
        }
        self.queue_locked(&mut q, p, rows);
        Ok(Ok(()))
    }

    /// Queues `p`, releasing the GIL only if it has to wait.
    fn push_from(&self, py: Python<'_>, p: Pending, rows: usize) -> PyResult<()> {
        match self.try_push(p, rows) {
            Ok(r) => r.map_err(|e| self.to_py(py, e)),
            Err(p) => py
                .detach(|| self.push(p, rows))
                .map_err(|e| self.to_py(py, e)),
        }
    }

    /// `e` as a Python exception; the stand-in for an earlier failure is raised as that
    /// failure's class.
    fn to_py(&self, py: Python<'_>, e: Error) -> PyErr {
        if let Error::InvalidOption { option, message } = &e
            && *option == BROKEN
            && let Some(b) = &lock(&self.queue).broken
        {
            return crate::errors::raise(py, b.class, b.errno, message.clone());
        }
        to_py(py, e)
    }

    /// Hands everything queued to the recorder and flushes it. The sinks' lock is taken before
    /// the queue is emptied, so flushes from two threads keep the rows in order.
    fn flush(&self) -> Result<()> {
        let mut sinks = lock(&self.sinks);
        let (pending, rows) = {
            let mut q = lock(&self.queue);
            if let Some(why) = &q.broken {
                return Err(broken_error(why));
            }
            q.flush_wanted = false;
            q.last_flush = Instant::now();
            let rows = std::mem::take(&mut q.pending_rows);
            (std::mem::take(&mut q.pending), rows)
        };
        self.room.notify_all();
        let Some(core) = sinks.core.as_mut() else {
            return Err(closed_error());
        };
        // With a tape, the tape writer joins what it is handed into frames itself; joining
        // here first would copy every row once more.
        let tape = self.watch.is_some();
        let written = (|| {
            let pending = if tape { pending } else { joined(pending)? };
            for p in pending {
                match p {
                    Pending::Batch(b) => core.write_batch(&b)?,
                    Pending::Block(b) => core.write_block(&b)?,
                }
            }
            core.flush()
        })();
        match written {
            Ok(()) => {
                self.flushed
                    .fetch_add(rows as u64, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                lock(&self.queue).broken = Some(Broken::of(&e));
                self.room.notify_all();
                Err(e)
            }
        }
    }

    /// Flushes what is queued, closes the sinks and finishes the deliveries; the summary as
    /// JSON. Call after the flusher has stopped.
    fn close(&self, stop: &dyn Fn() -> bool) -> Result<String> {
        if let Some(s) = &lock(&self.sinks).summary {
            return Ok(s.clone());
        }
        let (mut first, broken, received) = {
            let mut q = lock(&self.queue);
            q.closing = true;
            (q.failure.take(), q.broken.is_some(), q.received)
        };
        self.room.notify_all();
        if !broken && let Err(e) = self.flush() {
            first.get_or_insert(e);
        }
        let mut sinks = lock(&self.sinks);
        let Some(core) = sinks.core.take() else {
            return Err(first.unwrap_or_else(closed_error));
        };
        let summary = match core.finish_with(stop) {
            Ok(s) => s,
            Err(e) => return Err(first.unwrap_or(e)),
        };
        let json = serde_json::to_string(&serde_json::json!({
            "rows": received,
            "flushed": self.flushed.load(std::sync::atomic::Ordering::Relaxed),
            "sinks": summary.sinks,
            "tape": summary.tape,
            "deliveries": summary.deliveries,
        }))
        .unwrap_or_default();
        sinks.summary = Some(json.clone());
        match first {
            Some(e) => Err(e),
            None => Ok(json),
        }
    }
}

/// The flusher: flushes when a write asks (`batch_size` reached) or when rows have waited
/// `flush_interval`; ends when `close()` begins.
fn flusher(shared: Arc<Shared>) {
    let mut q = lock(&shared.queue);
    loop {
        if q.closing {
            return;
        }
        let due = q.last_flush + shared.flush_interval;
        let now = Instant::now();
        let idle = q.broken.is_some() || q.failure.is_some();
        if !idle && q.pending_rows > 0 && (q.flush_wanted || now >= due) {
            drop(q);
            if let Err(e) = shared.flush() {
                let mut failed = lock(&shared.queue);
                failed.failure.get_or_insert(e);
            }
            q = lock(&shared.queue);
            continue;
        }
        if now >= due {
            q.last_flush = now;
            continue;
        }
        q = shared
            .wake
            .wait_timeout(q, due - now)
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0);
    }
}

/// Records rows, Arrow data and DAQ blocks into sinks, directly or through a crash-safe tape.
/// The Python class `tapedeck.Recorder` wraps this one; see its docstring.
#[pyclass(module = "tapedeck._tapedeck", name = "Recorder")]
pub struct Recorder {
    shared: Arc<Shared>,
    keys: Mutex<KeyCache>,
    timer: Mutex<Option<JoinHandle<()>>>,
}

fn parse_tape_options(
    fsync: Option<&str>,
    compression: Option<&str>,
    frame_rows: Option<usize>,
    segment_bytes: Option<u64>,
    disk_full_timeout: Option<f64>,
) -> Result<TapeOptions> {
    let mut o = TapeOptions {
        disk_full_timeout: match disk_full_timeout {
            None => None,
            Some(t) => Some(
                Duration::try_from_secs_f64(t).map_err(|_| Error::InvalidOption {
                    option: "disk_full_timeout",
                    message: format!(
                        "{t}: give seconds (0 or more), or None to wait as long as it takes"
                    ),
                })?,
            ),
        },
        ..TapeOptions::default()
    };
    if let Some(f) = fsync {
        o.fsync = f.parse::<FsyncPolicy>().map_err(|m| Error::InvalidOption {
            option: "fsync",
            message: format!("`{f}`: {m}"),
        })?;
    }
    if let Some(c) = compression {
        o.compression = match c {
            "zstd" => Compression::Zstd,
            "lz4" => Compression::Lz4,
            "none" => Compression::None,
            other => {
                return Err(Error::InvalidOption {
                    option: "compression",
                    message: format!("`{other}`: expected zstd, lz4 or none"),
                });
            }
        };
    }
    if let Some(n) = frame_rows {
        if n == 0 {
            return Err(Error::InvalidOption {
                option: "frame_rows",
                message: "must be at least 1".into(),
            });
        }
        o.frame_rows = n;
    }
    if let Some(n) = segment_bytes {
        if n < 4096 {
            return Err(Error::InvalidOption {
                option: "segment_bytes",
                message: format!("{n}: a segment of fewer than 4096 bytes holds hardly a frame"),
            });
        }
        o.segment_bytes = n;
    }
    Ok(o)
}

#[pymethods]
impl Recorder {
    #[new]
    #[allow(clippy::too_many_arguments)] // the Python constructor's keyword arguments
    #[pyo3(signature = (tape=None, sinks=Vec::new(), batch_size=64, flush_interval=1.0, fsync=None, compression=None, frame_rows=None, retain=None, segment_bytes=None, disk_full_timeout=Some(0.0)))]
    fn new(
        py: Python<'_>,
        tape: Option<PathBuf>,
        sinks: Vec<String>,
        batch_size: usize,
        flush_interval: f64,
        fsync: Option<String>,
        compression: Option<String>,
        frame_rows: Option<usize>,
        retain: Option<String>,
        segment_bytes: Option<u64>,
        disk_full_timeout: Option<f64>,
    ) -> PyResult<Recorder> {
        let retain = match retain {
            None => None,
            Some(_) if tape.is_none() => {
                return Err(named(
                    py,
                    "OptionError",
                    "retain= keeps a tape to a size or an age: give the recorder a tape",
                ));
            }
            Some(r) => Some(
                r.parse::<tapedeck::tape::retention::Retention>()
                    .map_err(|m| named(py, "OptionError", format!("retain `{r}`: {m}")))?,
            ),
        };
        if batch_size == 0 {
            return Err(named(py, "OptionError", "batch_size must be at least 1"));
        }
        if !(flush_interval.is_finite() && flush_interval > 0.0) {
            return Err(named(
                py,
                "OptionError",
                format!(
                    "flush_interval must be a positive number of seconds, got {flush_interval}"
                ),
            ));
        }
        if tape.is_none() && sinks.is_empty() {
            return Err(named(
                py,
                "OptionError",
                "a recorder needs a tape or at least one sink (sinks=['csv:run.csv'], tape='runs/tape')",
            ));
        }
        let options = parse_tape_options(
            fsync.as_deref(),
            compression.as_deref(),
            frame_rows,
            segment_bytes,
            disk_full_timeout,
        )
        .map_err(|e| to_py(py, e))?;
        let core = py
            .detach(|| {
                let mut b = Core::builder().sinks(&sinks);
                if let Some(dir) = tape {
                    b = b.tape(dir).tape_options(options);
                }
                if let Some(r) = retain {
                    b = b.retain(r);
                }
                b.open()
            })
            .map_err(|e| to_py(py, e))?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                pending: Vec::new(),
                pending_rows: 0,
                received: 0,
                last_flush: Instant::now(),
                flush_wanted: false,
                failure: None,
                broken: None,
                closing: false,
            }),
            watch: core.tape_watch(),
            status: core.status_handle(),
            flushed: std::sync::atomic::AtomicU64::new(0),
            sinks: Mutex::new(Sinks {
                core: Some(core),
                summary: None,
            }),
            wake: Condvar::new(),
            room: Condvar::new(),
            batch_size,
            flush_interval: Duration::from_secs_f64(flush_interval),
        });
        let for_timer = shared.clone();
        let timer = std::thread::Builder::new()
            .name("tapedeck-py-flush".into())
            .spawn(move || flusher(for_timer))
            .map_err(|e| {
                named(
                    py,
                    "TapedeckError",
                    format!("cannot start the flush timer: {e}"),
                )
            })?;
        Ok(Recorder {
            shared,
            keys: Mutex::new(KeyCache::default()),
            timer: Mutex::new(Some(timer)),
        })
    }

    /// Writes rows: a list (any iterable) of dicts of column name to value.
    fn write_rows(&self, py: Python<'_>, rows: &Bound<'_, PyAny>) -> PyResult<()> {
        // Lists of plain dicts of plain values (the common case) become a batch directly.
        if let Some(batch) = crate::rows::fast_batch(rows)? {
            let n = batch.num_rows();
            return self.shared.push_from(py, Pending::Batch(batch), n);
        }
        let first = lock(&self.shared.queue).received;
        // The key cache is taken out while Python runs (a generator, a mapping's methods), so
        // no Rust lock is held while another thread may need the GIL.
        let mut keys = std::mem::take(&mut *lock(&self.keys));
        let converted = crate::rows::rows(rows, &mut keys, first);
        *lock(&self.keys) = keys;
        let rows = converted?;
        let n = rows.len();
        if n == 0 {
            return Ok(());
        }
        // The batch is made now (not at the flush), so a bad row is reported by the call that
        // brought it.
        let shared = &self.shared;
        py.detach(|| {
            let mut b = RowBuilder::per_batch();
            for r in rows {
                b.push(r);
            }
            match b.finish()? {
                Some(batch) => shared.push(Pending::Batch(batch), n),
                None => Ok(()),
            }
        })
        .map_err(|e| self.shared.to_py(py, e))
    }

    /// Writes Arrow data: anything with `__arrow_c_stream__` or `__arrow_c_array__`.
    fn write_batch(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let reader = crate::arrow_ffi::import(data)?;
        let shared = &self.shared;
        py.detach(|| -> Result<()> {
            for batch in reader {
                let batch = batch.map_err(|e| Error::arrow("reading the Arrow data written", e))?;
                let n = batch.num_rows();
                if n > 0 {
                    shared.push(Pending::Batch(batch), n)?;
                }
            }
            Ok(())
        })
        .map_err(|e| self.shared.to_py(py, e))
    }

    /// Writes one DAQ block; `values` is a C-contiguous float64 buffer of channels × samples.
    #[pyo3(signature = (values, channels, units, device, task, block_index, first_sample_index, t_mono_ns, t_utc_us, period_ns=None, read_window_ns=0, raw=None, error_kind=None, error_message=None))]
    #[allow(clippy::too_many_arguments)]
    fn write_block(
        &self,
        py: Python<'_>,
        values: &Bound<'_, PyAny>,
        channels: Vec<String>,
        units: Vec<Option<String>>,
        device: String,
        task: String,
        block_index: u64,
        first_sample_index: u64,
        t_mono_ns: i64,
        t_utc_us: i64,
        period_ns: Option<i64>,
        read_window_ns: i64,
        raw: Option<&Bound<'_, PyAny>>,
        error_kind: Option<String>,
        error_message: Option<String>,
    ) -> PyResult<()> {
        let (values, shape) = buffer_f64(values)?;
        let samples = match shape.as_slice() {
            [c, s] if *c == channels.len() => *s,
            [s] if channels.len() == 1 => *s,
            _ => {
                return Err(PyValueError::new_err(format!(
                    "values has shape {shape:?}; expected (channels, samples) with {} channels",
                    channels.len()
                )));
            }
        };
        if units.len() != channels.len() {
            return Err(PyValueError::new_err(format!(
                "{} units for {} channels",
                units.len(),
                channels.len()
            )));
        }
        let raw = match raw {
            None => None,
            Some(r) => Some(raw_codes(r, values.len())?),
        };
        let block = Block {
            device,
            task,
            block_index,
            first_sample_index,
            t_mono_ns,
            t_utc_us,
            period_ns,
            read_window_ns,
            channels: channels
                .iter()
                .zip(&units)
                .map(|(n, u)| Channel::new(n.clone(), u.as_deref()))
                .collect(),
            samples,
            values,
            raw,
            error: error_kind.map(|kind| BlockError {
                kind,
                message: error_message.unwrap_or_default(),
            }),
        };
        block.validate().map_err(|e| to_py(py, e))?;
        let shared = &self.shared;
        py.detach(|| shared.push(Pending::Block(Box::new(block)), samples))
            .map_err(|e| self.shared.to_py(py, e))
    }

    /// Hands everything written so far to the sinks (with a tape: onto the tape, acknowledged
    /// under its fsync policy).
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let shared = &self.shared;
        py.detach(|| {
            lock(&shared.queue).check()?;
            shared.flush()
        })
        .map_err(|e| self.shared.to_py(py, e))
    }

    /// Flushes, then waits until every row written so far is acknowledged (with a tape:
    /// durable under its fsync policy, a sync forced rather than waiting for the interval).
    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        let shared = &self.shared;
        py.detach(|| {
            lock(&shared.queue).check()?;
            shared.flush()?;
            let synced = match lock(&shared.sinks).core.as_mut() {
                Some(core) => core.sync(),
                None => Err(closed_error()),
            };
            if let Err(e) = &synced
                && e.os_error().is_some()
            {
                // The tape writer stopped (a full disk, EIO): no more rows are taken.
                lock(&shared.queue)
                    .broken
                    .get_or_insert_with(|| Broken::of(e));
                shared.room.notify_all();
            }
            synced
        })
        .map_err(|e| self.shared.to_py(py, e))
    }

    /// Rows of this run acknowledged: by the tape (durable under its fsync policy), or without
    /// a tape, handed to the sinks and flushed. Read without waiting for a flush in progress.
    #[getter]
    fn acknowledged(&self) -> u64 {
        match &self.shared.watch {
            Some((watch, start)) => watch.durable_seq().saturating_sub(*start),
            None => self
                .shared
                .flushed
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Rows written but not yet handed to the sinks (the flusher's queue).
    #[getter]
    fn queued(&self) -> usize {
        lock(&self.shared.queue).pending_rows
    }

    /// Rows the queue holds before a write waits for room.
    #[classattr]
    const QUEUE_LIMIT: usize = QUEUE_LIMIT;

    /// Rows taken by the write calls so far.
    #[getter]
    fn received(&self) -> u64 {
        lock(&self.shared.queue).received
    }

    /// Whether `close()` has run.
    #[getter]
    fn closed(&self) -> bool {
        lock(&self.shared.queue).closing
    }

    /// Each delivery's cursor, lag and state, as JSON (empty list without a tape). Read without
    /// waiting for a flush or the final delivery in progress.
    fn progress_json(&self) -> String {
        let deliveries = self
            .shared
            .status
            .as_ref()
            .map(tapedeck::deliver::StatusHandle::statuses)
            .unwrap_or_default();
        serde_json::to_string(&deliveries).unwrap_or_default()
    }

    /// Flushes, closes the sinks (with a tape: seals it and brings every delivery to its
    /// end) and returns the summary as JSON. A second call returns the same summary.
    fn close(&self, py: Python<'_>) -> PyResult<String> {
        let timer = lock(&self.timer).take();
        let shared = &self.shared;
        // Ctrl-C while the deliveries finish (a database away) stops them at their committed
        // cursors — the rows stay on the tape for the next run — and is raised afterwards.
        let interrupt: Mutex<Option<PyErr>> = Mutex::new(None);
        let stop = || {
            Python::attach(|py| match py.check_signals() {
                Ok(()) => false,
                Err(e) => {
                    lock(&interrupt).get_or_insert(e);
                    true
                }
            })
        };
        let out = py.detach(|| finish(shared, timer, &stop));
        if let Some(e) = lock(&interrupt).take() {
            return Err(e);
        }
        out.map_err(|e| self.shared.to_py(py, e))
    }
}

/// Stops the flusher, then flushes, closes and summarises (see [`Shared::close`]).
fn finish(
    shared: &Shared,
    flusher: Option<JoinHandle<()>>,
    stop: &dyn Fn() -> bool,
) -> Result<String> {
    lock(&shared.queue).closing = true;
    shared.wake.notify_all();
    shared.room.notify_all();
    if let Some(t) = flusher {
        let _ = t.join();
    }
    shared.close(stop)
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // A recorder dropped without close() still flushes what it holds and finishes its
        // deliveries: nothing received is left behind. The GIL is let go meanwhile (a
        // delivery may wait on a database).
        let timer = lock(&self.timer).take();
        let shared = &self.shared;
        // Not interruptible here: a delivery still running (its sink away) is stopped at its
        // committed cursor after DROP_FINISH_FOR; the rows stay on the tape for the next run.
        let started = Instant::now();
        let stop = move || started.elapsed() > DROP_FINISH_FOR;
        Python::attach(|py| py.detach(|| finish(shared, timer, &stop).map(drop)).ok());
    }
}

/// The float64 values of a buffer (numpy array, `array.array('d')`, memoryview) and its shape.
fn buffer_f64(obj: &Bound<'_, PyAny>) -> PyResult<(Vec<f64>, Vec<usize>)> {
    let buf = PyBuffer::<f64>::get(obj).map_err(|_| {
        PyTypeError::new_err(
            "values must be a float64 buffer (numpy.ndarray of dtype float64, shape (channels, samples))",
        )
    })?;
    if !buf.is_c_contiguous() {
        return Err(PyValueError::new_err(
            "values must be C-contiguous (numpy.ascontiguousarray(values))",
        ));
    }
    let shape = buf.shape().to_vec();
    Ok((buf.to_vec(obj.py())?, shape))
}

/// Raw codes, int16 or int32, as many as there are values.
fn raw_codes(obj: &Bound<'_, PyAny>, n: usize) -> PyResult<RawCodes> {
    let codes = if let Ok(b) = PyBuffer::<i16>::get(obj) {
        RawCodes::I16(b.to_vec(obj.py())?)
    } else if let Ok(b) = PyBuffer::<i32>::get(obj) {
        RawCodes::I32(b.to_vec(obj.py())?)
    } else {
        return Err(PyTypeError::new_err(
            "raw must be an int16 or int32 buffer of the same shape as values",
        ));
    };
    let len = match &codes {
        RawCodes::I16(v) => v.len(),
        RawCodes::I32(v) => v.len(),
    };
    if len != n {
        return Err(PyValueError::new_err(format!(
            "raw has {len} codes for {n} values"
        )));
    }
    Ok(codes)
}
