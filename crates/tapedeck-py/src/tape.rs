//! Reading a tape from Python: `Reader` (an Arrow C stream over the tape, from a position,
//! optionally following a running recorder), `inspect` and `verify`.
//!
//! A reader never hands out a row the tape has not acknowledged: while a recorder holds the
//! tape (its `LOCK`), it reads only up to the position the recorder publishes in `ACKED`
//! (docs/tape-format.md), the same bound a delivery beside a recorder keeps. Damaged frames
//! are an error naming the rows, segment and bytes — or, with `skip_damage`, left out and
//! counted.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use arrow_array::{RecordBatch, RecordBatchReader};
use arrow_schema::{ArrowError, Schema, SchemaRef};
use pyo3::prelude::*;
use pyo3::types::PyCapsule;
use tapedeck::tape::acked;
use tapedeck::tape::reader::{StartAt, TapeReader};
use tapedeck::{Error, Result};

use crate::errors::{named, to_py};

/// The batches of a tape, as a `RecordBatchReader` for the C stream.
struct TapeBatches {
    reader: TapeReader,
    dir: PathBuf,
    follow: bool,
    skip_damage: bool,
    poll: Duration,
    schema: SchemaRef,
    /// The first batch, read to learn the schema.
    peeked: Option<RecordBatch>,
    done: bool,
    /// When the readable end was last looked up, and whether a writer held the tape then.
    looked: Option<(Instant, bool)>,
    /// The reader reached the end it was given; look it up again before the next read.
    caught_up: bool,
}

/// How old a look at the writer's published position may get while the reader is behind it.
const LOOK_AGAIN: Duration = Duration::from_millis(100);

impl TapeBatches {
    fn open(
        dir: PathBuf,
        start: StartAt,
        follow: bool,
        skip_damage: bool,
        poll: Duration,
    ) -> Result<TapeBatches> {
        let reader = TapeReader::open(&dir, start)?;
        let mut t = TapeBatches {
            reader,
            dir,
            follow,
            skip_damage,
            poll,
            schema: std::sync::Arc::new(Schema::empty()),
            peeked: None,
            done: false,
            looked: None,
            caught_up: false,
        };
        // The stream's schema is the first batch's: read it now (following, wait for it).
        if let Some(b) = t.next_batch()? {
            t.schema = b.schema();
            t.peeked = Some(b);
        }
        Ok(t)
    }

    /// The next batch, waiting for one while following a running recorder.
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        if let Some(b) = self.peeked.take() {
            return Ok(Some(b));
        }
        if self.done {
            return Ok(None);
        }
        loop {
            // Where the readable rows end: looked up (a lock attempt and a file read) when the
            // reader has caught up with the last look, or once it is LOOK_AGAIN old — not for
            // every frame.
            let stale = self
                .looked
                .is_none_or(|(at, _)| at.elapsed() >= LOOK_AGAIN || self.caught_up);
            if stale {
                // The lock first: a position read after the writer is seen gone is its last one.
                let running = acked::writer_running(&self.dir);
                let until = if running {
                    Some(acked::read(&self.dir)?.unwrap_or(0))
                } else {
                    None
                };
                self.reader.set_until(until);
                self.looked = Some((Instant::now(), running));
                self.caught_up = false;
            }
            let running = self.looked.is_some_and(|(_, r)| r);
            let next = self.reader.next_batch()?;
            let damaged = self.reader.take_unreadable();
            if !damaged.is_empty() && !self.skip_damage {
                let what: Vec<String> = damaged.iter().map(ToString::to_string).collect();
                return Err(Error::Tape {
                    path: self.dir.clone(),
                    message: format!(
                        "damaged: {}; read with skip_damage=True to leave those rows out",
                        what.join("; ")
                    ),
                });
            }
            match next {
                Some((_, b)) => return Ok(Some(b)),
                // Caught up with a stale look: look again before deciding.
                None if !stale => self.caught_up = true,
                None if self.follow && running => {
                    std::thread::sleep(self.poll);
                    self.caught_up = true;
                }
                None => {
                    self.done = true;
                    return Ok(None);
                }
            }
        }
    }
}

impl Iterator for TapeBatches {
    type Item = std::result::Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        let batch = match self.next_batch() {
            Ok(Some(b)) => b,
            Ok(None) => return None,
            Err(e) => {
                self.done = true;
                return Some(Err(ArrowError::ExternalError(Box::new(e))));
            }
        };
        if batch.schema().fields() == self.schema.fields() {
            // Same columns; the stream's schema (metadata aside) describes it.
            return Some(RecordBatch::try_new(
                self.schema.clone(),
                batch.columns().to_vec(),
            ));
        }
        self.done = true;
        Some(Err(ArrowError::SchemaError(format!(
            "tape `{}`: the columns change at sequence number {} (a new segment with another \
             schema); read from there with a new reader (start={})",
            self.dir.display(),
            self.reader
                .position()
                .saturating_sub(batch.num_rows() as u64),
            self.reader
                .position()
                .saturating_sub(batch.num_rows() as u64),
        ))))
    }
}

impl RecordBatchReader for TapeBatches {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// One pass over a tape; the Python class `tapedeck.TapeReader` wraps it.
#[pyclass(module = "tapedeck._tapedeck", name = "Reader")]
pub struct Reader {
    batches: Mutex<Option<TapeBatches>>,
    schema: SchemaRef,
}

#[pymethods]
impl Reader {
    #[new]
    #[pyo3(signature = (dir, start="start", follow=false, skip_damage=false, poll_interval=0.02))]
    fn new(
        py: Python<'_>,
        dir: PathBuf,
        start: &str,
        follow: bool,
        skip_damage: bool,
        poll_interval: f64,
    ) -> PyResult<Reader> {
        let start: StartAt = start
            .parse()
            .map_err(|m: String| named(py, "OptionError", format!("start: {m}")))?;
        if !(poll_interval.is_finite() && poll_interval > 0.0) {
            return Err(named(py, "OptionError", "poll_interval must be positive"));
        }
        let poll = Duration::from_secs_f64(poll_interval);
        let batches = py
            .detach(|| TapeBatches::open(dir, start, follow, skip_damage, poll))
            .map_err(|e| to_py(py, e))?;
        Ok(Reader {
            schema: batches.schema.clone(),
            batches: Mutex::new(Some(batches)),
        })
    }

    /// The Arrow C stream of the reader's batches (the PyCapsule protocol). A reader is read
    /// once; `requested_schema` is not applied (the protocol allows that).
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema;
        crate::arrow_ffi::export_once(
            py,
            &self.batches,
            |b| Box::new(b),
            "this reader was read already; a reader is read once (call tape.reader() again)",
        )
    }

    /// The Arrow C schema of the batches (the PyCapsule protocol).
    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        crate::arrow_ffi::export_schema(py, &self.schema)
    }

    /// The next sequence number the reader will hand out (before it is read: where it starts).
    #[getter]
    fn position(&self) -> Option<u64> {
        self.batches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|b| b.reader.position())
    }

    /// Whether the stream was handed out already.
    #[getter]
    fn consumed(&self) -> bool {
        self.batches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_none()
    }
}

/// `tapedeck inspect DIR --json`: schema, segments, rows, time range, bytes.
#[pyfunction]
pub fn inspect_json(py: Python<'_>, dir: PathBuf) -> PyResult<String> {
    py.detach(|| {
        let storage = tapedeck::tape::verify::storage_for(&dir)?;
        let i = tapedeck::tape::verify::inspect(storage.as_ref())?;
        Ok::<_, Error>(serde_json::to_string(&i).unwrap_or_default())
    })
    .map_err(|e| to_py(py, e))
}

/// `tapedeck verify DIR --json`: every CRC and the hash chain.
#[pyfunction]
pub fn verify_json(py: Python<'_>, dir: PathBuf) -> PyResult<String> {
    py.detach(|| {
        let storage = tapedeck::tape::verify::storage_for(&dir)?;
        let r = tapedeck::tape::verify::verify(storage.as_ref())?;
        Ok::<_, Error>(serde_json::to_string(&r).unwrap_or_default())
    })
    .map_err(|e| to_py(py, e))
}
