//! The library's front door: record into sinks the way `tapedeck record` does, from a program.
//!
//! A [`Recorder`] holds the careful sequence that makes a recording with a tape exactly once —
//! every sink URI checked before anything is created, the tape opened (recovered) and locked,
//! one delivery per sink started from that sink's cursor, rows written only to the tape, and at
//! the end every delivery brought to the tape's acknowledged end — so a program embedding
//! tapedeck does not copy it. Without a tape the rows go straight to the sinks. Feed it with
//! [`Recorder::write_batch`], [`Recorder::write_block`] or [`Recorder::write_rows`], or hand it a
//! whole [`Source`] with [`Recorder::run`] (batching, the flush timer and the stop signal of
//! [`crate::pipe`]). [`Recorder::finish`] returns what happened.
//!
//! ```
//! use std::sync::Arc;
//! use arrow_array::{Int64Array, RecordBatch};
//! use arrow_schema::{DataType, Field, Schema};
//! use tapedeck::recorder::Recorder;
//!
//! let dir = std::env::temp_dir().join(format!("tapedeck-recorder-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let mut rec = Recorder::builder()
//!     .tape(dir.join("tape"))
//!     .sink(&format!("csv:{}", dir.join("a.csv").display()))
//!     .sink(&format!("jsonl:{}", dir.join("a.jsonl").display()))
//!     .open()
//!     .unwrap();
//! let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
//! for k in 0..10 {
//!     let batch = RecordBatch::try_new(
//!         schema.clone(),
//!         vec![Arc::new(Int64Array::from_iter_values(k * 100..(k + 1) * 100))],
//!     )
//!     .unwrap();
//!     rec.write_batch(&batch).unwrap();
//! }
//! let summary = rec.finish().unwrap();
//! assert_eq!(summary.tape.as_ref().map(|t| t.acknowledged), Some(1000));
//! assert!(summary.deliveries.iter().all(|d| d.state == "done" && d.cursor == Some(1000)));
//! let csv = std::fs::read_to_string(dir.join("a.csv")).unwrap();
//! assert_eq!(csv.lines().count(), 1001); // the header and every row, once
//! let jsonl = std::fs::read_to_string(dir.join("a.jsonl")).unwrap();
//! assert_eq!(jsonl.lines().count(), 1000);
//! # let _ = std::fs::remove_dir_all(&dir);
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow_array::RecordBatch;

use crate::deliver::{Delivery, DeliveryOptions, DeliveryStatus, StatusHandle, TapeEnd, TapeRef};
use crate::error::{Error, Result};
use crate::pipe::{PipeOptions, PipeReport, SinkSummary};
use crate::record::{Block, Row, RowBuilder};
use crate::sink::Sink;
use crate::sink::tape::TapeSink;
use crate::source::{Source, TapeLink};
use crate::tape::retention::Retention;
use crate::tape::{Recovery, TapeOptions, TapeWatch, TapeWriter};

/// What a [`Recorder`] is built from; see [`Recorder::builder`].
#[derive(Debug, Default)]
pub struct RecorderBuilder {
    tape: Option<(PathBuf, TapeOptions)>,
    sinks: Vec<String>,
    delivery: DeliveryOptions,
    retain: Option<Retention>,
    disk_warning: Option<f64>,
}

impl RecorderBuilder {
    /// Record onto the tape in `dir` first (created, or recovered and appended to), with the
    /// default [`TapeOptions`]; the sinks are then fed from the tape.
    pub fn tape(mut self, dir: impl Into<PathBuf>) -> Self {
        let options = self.tape.take().map(|(_, o)| o).unwrap_or_default();
        self.tape = Some((dir.into(), options));
        self
    }

    /// The tape's options (fsync policy, compression, segment size); implies nothing without
    /// [`RecorderBuilder::tape`].
    pub fn tape_options(mut self, options: TapeOptions) -> Self {
        if let Some((_, o)) = &mut self.tape {
            *o = options;
        }
        self
    }

    /// Keeps the tape to a size or an age while recording: every 100 ms the oldest sealed
    /// segments beyond it are removed, never rows a sink known to the tape (one of this
    /// recorder's, or one with a status file in the tape's `deliveries/`) has not received
    /// ([`crate::tape::retention`]).
    pub fn retain(mut self, retention: Retention) -> Self {
        self.retain = Some(retention);
        self
    }

    /// Warns (in the log) when the disk holding the tape has less than `percent` of its space
    /// free (default [`crate::tape::retention::DEFAULT_DISK_WARNING`]); with
    /// [`RecorderBuilder::retain`], the tape is then trimmed early, back to twice that level.
    pub fn disk_warning(mut self, percent: f64) -> Self {
        // A level above half the disk could never be reached again by trimming early.
        self.disk_warning = Some(if percent.is_finite() {
            percent.clamp(0.0, 50.0)
        } else {
            crate::tape::retention::DEFAULT_DISK_WARNING
        });
        self
    }

    /// Adds a sink by URI (`csv:run.csv`, `sqlite:lab.db?table=flow`, …).
    pub fn sink(mut self, uri: &str) -> Self {
        self.sinks.push(uri.to_string());
        self
    }

    /// How deliveries run (with a tape): flush interval, where a new sink starts, …
    pub fn delivery_options(mut self, options: DeliveryOptions) -> Self {
        self.delivery = options;
        self
    }

    /// Adds every sink of `uris`.
    pub fn sinks<S: AsRef<str>>(mut self, uris: impl IntoIterator<Item = S>) -> Self {
        self.sinks
            .extend(uris.into_iter().map(|u| u.as_ref().to_string()));
        self
    }

    /// Brings every sink up to the end of the tape, each from its own cursor, without
    /// recording (`tapedeck deliver`): the tape is recovered and locked as
    /// [`RecorderBuilder::open`] would, or — when a recorder holds it — the deliveries run
    /// beside that recorder as readers, up to what it publishes as acknowledged, until it
    /// stops. Needs [`RecorderBuilder::tape`]; the sinks are checked before the tape is
    /// touched.
    ///
    /// ```
    /// use tapedeck::recorder::Recorder;
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let dir = dir.path();
    /// let mut rec = Recorder::builder().tape(dir.join("tape")).open().unwrap();
    /// rec.write_rows((0..5).map(|n| tapedeck::record::Row::new().with("n", n as i64))).unwrap();
    /// rec.finish().unwrap();
    ///
    /// let csv = format!("csv:{}", dir.join("later.csv").display());
    /// let run = Recorder::builder().tape(dir.join("tape")).sink(&csv).deliver().unwrap();
    /// assert_eq!(run.beside_recorder(), None); // nobody is recording it: the tape is locked
    /// let done = run.finish().unwrap();
    /// assert_eq!(done.end_seq, 5);
    /// assert_eq!(done.deliveries[0].cursor, Some(5));
    /// assert_eq!(std::fs::read_to_string(dir.join("later.csv")).unwrap().lines().count(), 6);
    /// ```
    pub fn deliver(self) -> Result<TapeDelivery> {
        if self.sinks.is_empty() {
            return Err(Error::InvalidOption {
                option: "sink",
                message: "a delivery needs at least one sink to bring up to the tape's end".into(),
            });
        }
        let specs = crate::deliver::parse_sinks(&self.sinks, true)?;
        let Some((dir, options)) = self.tape else {
            return Err(Error::InvalidOption {
                option: "tape",
                message: "a delivery reads a tape: name its directory (`RecorderBuilder::tape`)"
                    .into(),
            });
        };
        // Same message as `verify` and `inspect` for a path that is no tape directory.
        let storage = crate::tape::verify::storage_for(&dir)?;
        // Opening the writer recovers the tape and takes its lock, so no recorder appends to
        // it (or delivers to the same sinks) meanwhile. If a recorder holds it, the delivery
        // runs beside it as a reader and ends when the recorder does.
        let (writer, id, end, recorder) = match TapeWriter::open(&dir, options) {
            Ok(w) => {
                let id = w.id().to_string();
                let end = TapeEnd::Fixed(w.next_seq());
                (Some(w), id, end, None)
            }
            Err(Error::TapeLocked { pid, .. }) => {
                let id =
                    crate::tape::id::read_or_create(storage.as_ref(), false)?.ok_or_else(|| {
                        Error::Tape {
                        path: dir.clone(),
                        message:
                            "the recorder has not written the tape's id yet; try again in a moment"
                                .into(),
                    }
                    })?;
                (None, id, TapeEnd::Published(dir.clone()), Some(pid))
            }
            Err(e) => return Err(e),
        };
        let delivery_options = DeliveryOptions {
            quarantine: writer.as_ref().map(TapeWriter::watch),
            ..self.delivery
        };
        let tape = TapeRef {
            dir: dir.clone(),
            id,
        };
        let delivery = Delivery::start(tape, specs, end, &delivery_options)?;
        Ok(TapeDelivery {
            dir,
            delivery,
            writer,
            recorder,
        })
    }

    /// Checks every sink URI as [`RecorderBuilder::open`] will, creating nothing: a program
    /// that must open something else first (a source) checks its sinks before, so a bad URI
    /// is reported first and no sink is opened for a source that cannot be.
    pub fn check(&self) -> Result<()> {
        crate::deliver::parse_sinks(&self.sinks, self.tape.is_some()).map(|_| ())
    }

    /// Checks every sink URI (before anything is created), then opens the tape and starts the
    /// deliveries, or opens the sinks.
    pub fn open(self) -> Result<Recorder> {
        // An existing file a delivery would refuse is refused now, before the tape is created
        // or recovered.
        let specs = crate::deliver::parse_sinks(&self.sinks, self.tape.is_some())?;
        match self.tape {
            Some((dir, options)) => {
                let writer = TapeWriter::open(&dir, options)?;
                let recovery = writer.recovery().clone();
                let watch = writer.watch();
                let start = writer.next_seq();
                let tape = TapeRef {
                    dir: dir.clone(),
                    id: writer.id().to_string(),
                };
                let delivery_options = DeliveryOptions {
                    quarantine: Some(watch.clone()),
                    ..self.delivery
                };
                let delivery =
                    Delivery::start(tape, specs, TapeEnd::Live(watch.clone()), &delivery_options)?;
                let sink = TapeSink::from_writer(format!("tape:{}", dir.display()), writer);
                let housekeeping = Some(HousekeepingThread::start(Housekeeping {
                    retention: self.retain,
                    disk_warning: self
                        .disk_warning
                        .unwrap_or(crate::tape::retention::DEFAULT_DISK_WARNING),
                    dir: dir.clone(),
                    watch: watch.clone(),
                    statuses: delivery.status_handle(),
                    held_back: None,
                    warned_status: false,
                    warned_disk: false,
                    early_pending: 0,
                    early_at: None,
                    held_warned_at: None,
                }));
                Ok(Recorder {
                    sinks: vec![Box::new(sink)],
                    tape: Some(TapeRun {
                        dir,
                        watch,
                        start,
                        delivery,
                        recovery,
                        housekeeping,
                    }),
                    rows: 0,
                })
            }
            None => {
                let mut sinks = Vec::new();
                for (_, spec) in specs {
                    sinks.push(spec.open()?);
                }
                Ok(Recorder {
                    sinks,
                    tape: None,
                    rows: 0,
                })
            }
        }
    }
}

/// Deliveries from a tape without a recording; see [`RecorderBuilder::deliver`].
pub struct TapeDelivery {
    dir: PathBuf,
    delivery: Delivery,
    /// The tape's writer, held for its lock (`None` beside a recorder).
    writer: Option<TapeWriter>,
    /// The pid of the recorder this delivery runs beside, as the tape's lock file says.
    recorder: Option<String>,
}

/// What a [`TapeDelivery`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeliverySummary {
    /// The tape directory.
    pub dir: PathBuf,
    /// The sequence number the deliveries ended at (the tape's end, or the recorder's last
    /// acknowledged position).
    pub end_seq: u64,
    /// Each sink's delivery, as it ended.
    pub deliveries: Vec<DeliveryStatus>,
}

impl std::fmt::Debug for TapeDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapeDelivery")
            .field("dir", &self.dir)
            .field("recorder", &self.recorder)
            .finish_non_exhaustive()
    }
}

impl TapeDelivery {
    /// The pid of the recorder holding the tape, when the deliveries run beside it.
    pub fn beside_recorder(&self) -> Option<&str> {
        self.recorder.as_deref()
    }

    /// What recovery found and did when the tape was opened; `None` beside a recorder.
    pub fn recovery(&self) -> Option<&Recovery> {
        self.writer.as_ref().map(TapeWriter::recovery)
    }

    /// A handle that reads the deliveries' statuses from another thread (a progress line).
    pub fn status_handle(&self) -> StatusHandle {
        self.delivery.status_handle()
    }

    /// Waits until every delivery reached the end, then releases the tape.
    pub fn finish(self) -> Result<DeliverySummary> {
        self.finish_with(&|| false)
    }

    /// Like [`TapeDelivery::finish`], but `stop()` ends the deliveries where they are, their
    /// cursors committed, as soon as it returns true. A delivery that failed is reported in
    /// [`DeliverySummary::deliveries`]; an error releasing the tape is returned.
    pub fn finish_with(self, stop: &dyn Fn() -> bool) -> Result<DeliverySummary> {
        let deliveries = self.delivery.wait_or_stop(stop);
        let end_seq = deliveries.iter().map(|s| s.tape_end).max().unwrap_or(0);
        if let Some(w) = self.writer {
            w.close()?;
        }
        Ok(DeliverySummary {
            dir: self.dir,
            end_seq,
            deliveries,
        })
    }
}

/// A recording onto a tape: its writer's position and the deliveries it feeds.
struct TapeRun {
    dir: PathBuf,
    watch: TapeWatch,
    start: u64,
    delivery: Delivery,
    /// What recovery did when the tape was opened.
    recovery: Recovery,
    /// Trims the tape while it records (`RecorderBuilder::retain`) and watches its disk.
    housekeeping: Option<HousekeepingThread>,
}

/// How often a recorder with [`RecorderBuilder::retain`] trims its tape.
const RETENTION_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Keeps a recording's tape within bounds while it runs: every [`RETENTION_EVERY`] applies a
/// [`Retention`] and looks at the disk's free space — below the warning level it says so
/// (once, until the space comes back) and, with a retention, trims early until twice the
/// level (at most the level plus 5 points) is free again, never rows a sink still needs, and
/// counting what it removed as freed for 30 s. Stops when dropped.
struct HousekeepingThread {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the housekeeping thread works with.
struct Housekeeping {
    retention: Option<Retention>,
    /// Warn below this share of the disk free, in percent.
    disk_warning: f64,
    dir: PathBuf,
    watch: TapeWatch,
    statuses: crate::deliver::StatusHandle,
    held_back: Option<u64>,
    warned_status: bool,
    warned_disk: bool,
    /// Bytes trimmed early whose space the file system has not shown free yet (it may free
    /// late, or a reader may still hold a removed file), and when the last early trim was.
    early_pending: u64,
    early_at: Option<std::time::Instant>,
    /// When "held back by a sink" was last said.
    held_warned_at: Option<std::time::Instant>,
}

impl Housekeeping {
    /// The oldest cursor of every sink known to the tape: this recorder's (up to date) and any
    /// other with a status file (as last written); `Some(0)` (keep everything) when a status
    /// file cannot be read.
    fn protect(&mut self) -> Option<u64> {
        let live = self.statuses.statuses();
        match crate::deliver::status::read_all_strict(&self.dir) {
            Ok(others) => live
                .iter()
                .chain(
                    others
                        .iter()
                        .filter(|o| live.iter().all(|l| l.sink != o.sink)),
                )
                .map(|s| s.cursor.unwrap_or(0))
                .min(),
            Err(why) => {
                if !self.warned_status {
                    tracing::warn!("retention: {why}; nothing is trimmed until it reads");
                    self.warned_status = true;
                }
                Some(0)
            }
        }
    }

    /// Applies a retention; returns the bytes of the segments it removed.
    fn trim(&mut self, retention: &Retention) -> u64 {
        let protect = self.protect();
        match self.watch.trim(retention, protect, true) {
            Ok(r) => {
                // Said at most once a minute, not at every look or cursor move.
                self.held_back = r.held_back.map(|(seq, _)| seq);
                if let Some(seq) = self.held_back
                    && self
                        .held_warned_at
                        .is_none_or(|t| t.elapsed() > std::time::Duration::from_secs(60))
                {
                    self.held_warned_at = Some(std::time::Instant::now());
                    tracing::warn!(
                        "retention: the tape is kept from row {seq} on, beyond {}: a sink known to the tape has not received those rows (`tapedeck inspect` shows which; an old status file in deliveries/ of a sink no longer used can be removed)",
                        retention.describe()
                    );
                }
                for s in &r.removed {
                    tracing::info!(
                        "retention: removed {} (rows {}..{}, {} bytes)",
                        s.file,
                        s.first_seq,
                        s.first_seq.saturating_add(s.rows),
                        s.bytes
                    );
                }
                r.removed
                    .iter()
                    .fold(0u64, |sum, s| sum.saturating_add(s.bytes))
            }
            Err(e) => {
                tracing::warn!("retention: {e}; trying again");
                0
            }
        }
    }

    /// Below the warning level: say so once; with a retention, trim what brings the free
    /// space back to twice the level.
    fn check_disk(&mut self) {
        let Some(space) = crate::tape::retention::disk_space(&self.dir) else {
            return;
        };
        let percent = space.free_percent();
        if percent >= self.disk_warning {
            if self.warned_disk {
                tracing::info!(
                    "the disk of tape {} has {percent:.1}% free again",
                    self.dir.display()
                );
            }
            self.warned_disk = false;
            return;
        }
        if !self.warned_disk {
            tracing::warn!(
                "the disk of tape {} has {percent:.1}% free ({} bytes), below the warning level of {}%{}",
                self.dir.display(),
                space.free,
                self.disk_warning,
                if self.retention.is_some() {
                    "; retention trims the oldest segments early"
                } else {
                    "; free space, or record with --retain SIZE|AGE, before the disk is full (the recorder then stops acknowledging rows)"
                }
            );
            self.warned_disk = true;
        }
        if let Some(r) = self.retention {
            // What an earlier early trim removed and the file system did not show free counts
            // as freed for 30 s: it is not removed a second time.
            if self
                .early_at
                .is_none_or(|t| t.elapsed() > std::time::Duration::from_secs(30))
            {
                self.early_pending = 0;
            }
            // Free enough to be back at twice the level, or the level plus 5 points of the
            // disk, whichever is less (not trimming again at every look).
            let target = (2.0 * self.disk_warning).min(self.disk_warning + 5.0);
            let want = (target / 100.0 * space.total as f64) as u64;
            let needed = want
                .saturating_sub(space.free)
                .saturating_sub(self.early_pending);
            if needed == 0 {
                return;
            }
            let Ok(now) = self.watch.trim(&Retention::default(), None, false) else {
                return;
            };
            let early = Retention {
                max_bytes: Some(now.bytes.saturating_sub(needed).max(1)),
                ..r
            };
            let before = now.bytes;
            let freed = self.trim(&early);
            if freed > 0
                && let Ok(after) = self.watch.trim(&Retention::default(), None, false)
            {
                // The part the file system does not show free yet (freed late, or a removed
                // file still open somewhere): what was removed, less what the disk shows freed
                // and what the recorder wrote meanwhile (the tape's growth besides the trim) —
                // not counting those writes as unfreed, which would stop early trimming while
                // the disk fills.
                let grown = after.bytes.saturating_add(freed).saturating_sub(before);
                let shown = crate::tape::retention::disk_space(&self.dir)
                    .map_or(0, |now| now.free.saturating_sub(space.free));
                self.early_pending = self
                    .early_pending
                    .saturating_add(freed.saturating_sub(shown.saturating_add(grown)));
                self.early_at = Some(std::time::Instant::now());
                tracing::info!("retention: trimmed {freed} bytes early (the disk is low)");
            }
        }
    }
}

impl HousekeepingThread {
    fn start(mut work: Housekeeping) -> HousekeepingThread {
        // Once now, so that a disk already low is reported however short the recording.
        work.check_disk();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("tape-housekeeping".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    if let Some(r) = work.retention {
                        work.trim(&r);
                    }
                    work.check_disk();
                    // Often enough that a small disk at a high rate is trimmed as segments are
                    // sealed; looking costs a directory listing and a footer read.
                    std::thread::sleep(RETENTION_EVERY);
                }
            })
            .ok();
        if thread.is_none() {
            tracing::warn!(
                "cannot start the tape's housekeeping thread: no retention, no free-space warning"
            );
        }
        HousekeepingThread { stop, thread }
    }
}

impl Drop for HousekeepingThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the tape did in a run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TapeSummary {
    /// The tape directory.
    pub dir: PathBuf,
    /// Sequence number of this run's first row.
    pub first_seq: u64,
    /// Sequence number after its last row.
    pub end_seq: u64,
    /// Rows of this run acknowledged (durable under the fsync policy).
    pub acknowledged: u64,
    /// Rows of this run received (more than acknowledged only after a tape failure).
    pub received: u64,
}

/// What a [`Recorder`] did: the same fields as `tapedeck record --summary-json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecordSummary {
    /// Rows written by [`Recorder::write_batch`] and friends (not those of [`Recorder::run`],
    /// which reports its own).
    pub rows: u64,
    /// Each sink written to directly (with a tape: the tape).
    pub sinks: Vec<SinkSummary>,
    /// The tape, when there is one.
    pub tape: Option<TapeSummary>,
    /// Each sink's delivery from the tape, as it ended.
    pub deliveries: Vec<DeliveryStatus>,
}

/// Records into sinks, directly or through a tape; see the module docs.
pub struct Recorder {
    /// The sinks written to: the tape's sink alone with a tape, else the user's sinks.
    sinks: Vec<Box<dyn Sink>>,
    tape: Option<TapeRun>,
    rows: u64,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("sinks", &self.sinks.len())
            .field("taped", &self.tape.is_some())
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// Starts building a recorder.
    pub fn builder() -> RecorderBuilder {
        RecorderBuilder::default()
    }

    /// Writes a batch to every sink (with a tape: onto the tape).
    pub fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        for s in &mut self.sinks {
            s.write(batch)?;
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Writes a DAQ block to every sink (a tape stores it in the marked wide layout and its
    /// deliveries hand it back as a block).
    pub fn write_block(&mut self, block: &Block) -> Result<()> {
        for s in &mut self.sinks {
            s.write_block(block)?;
        }
        self.rows += block.samples as u64;
        Ok(())
    }

    /// Writes rows (one batch, its columns inferred from the rows).
    pub fn write_rows(&mut self, rows: impl IntoIterator<Item = Row>) -> Result<()> {
        let mut builder = RowBuilder::per_batch();
        for r in rows {
            builder.push(r);
        }
        match builder.finish()? {
            Some(batch) => self.write_batch(&batch),
            None => Ok(()),
        }
    }

    /// Hands what was written to the destinations (the tape acknowledges under its fsync
    /// policy; see [`Recorder::acknowledged`]).
    pub fn flush(&mut self) -> Result<()> {
        for s in &mut self.sinks {
            s.flush()?;
        }
        Ok(())
    }

    /// Like [`Recorder::flush`], then waits until every row written so far is acknowledged:
    /// with a tape, durable under its fsync policy (under `interval:D` a sync is forced
    /// rather than waiting for the interval); without one, flushed to the sinks. Fails if the
    /// tape writer stopped after an I/O error.
    pub fn sync(&mut self) -> Result<()> {
        self.flush()?;
        if let Some(t) = &self.tape {
            t.watch.wait_durable(t.watch.next_seq())?;
        }
        Ok(())
    }

    /// Rows of this run the tape has acknowledged; `None` without a tape.
    pub fn acknowledged(&self) -> Option<u64> {
        self.tape
            .as_ref()
            .map(|t| t.watch.durable_seq().saturating_sub(t.start))
    }

    /// What recovery found and did when the tape was opened; `None` without a tape.
    pub fn recovery(&self) -> Option<&Recovery> {
        self.tape.as_ref().map(|t| &t.recovery)
    }

    /// The tape writer's positions (for a progress display) and the sequence number of this
    /// run's first row; `None` without a tape.
    pub fn tape_watch(&self) -> Option<(TapeWatch, u64)> {
        self.tape.as_ref().map(|t| (t.watch.clone(), t.start))
    }

    /// A handle that reads the deliveries' statuses from another thread (a progress line).
    pub fn status_handle(&self) -> Option<StatusHandle> {
        self.tape.as_ref().map(|t| t.delivery.status_handle())
    }

    /// The names of the sinks written to directly (with a tape: the tape).
    pub fn sink_names(&self) -> Vec<String> {
        self.sinks.iter().map(|s| s.name().to_string()).collect()
    }

    /// Where every sink's delivery stands now (cursor, lag, state); empty without a tape.
    pub fn deliveries(&self) -> Vec<DeliveryStatus> {
        self.tape
            .as_ref()
            .map(|t| t.delivery.statuses())
            .unwrap_or_default()
    }

    /// Reads `source` to its end (or `options`' limit, duration or stop signal) into the
    /// sinks, with [`crate::pipe`]'s batching and flush timer, then finishes as
    /// [`Recorder::finish`] does; `stop` ends a delivery still running at the end (a sink away)
    /// where it is. Returns the pipe's report beside the summary.
    pub fn run<S: Source + 'static>(
        mut self,
        source: S,
        options: &PipeOptions,
        stop: &dyn Fn() -> bool,
    ) -> (PipeReport, RecordSummary) {
        let report = self.pipe(source, options);
        let summary = self.finish_deliveries(stop, Vec::new());
        (report, summary)
    }

    /// The first half of [`Recorder::run`]: reads `source` into the sinks through
    /// [`crate::pipe`], which closes them (with a tape: seals it). Finish with
    /// [`Recorder::finish_with`]; in between, [`Recorder::deliveries`] says which sinks it will
    /// wait for.
    pub fn pipe<S: Source + 'static>(
        &mut self,
        mut source: S,
        options: &PipeOptions,
    ) -> PipeReport {
        let attached = match &self.tape {
            Some(t) => {
                let watch = t.watch.clone();
                source.attach_tape(TapeLink::new(t.dir.clone(), t.start, move || {
                    watch.durable_seq()
                }))
            }
            None => Ok(()),
        };
        // A source that cannot follow the tape fails the run the way a source error does.
        let source: Box<dyn Source> = match attached {
            Ok(()) => Box::new(source),
            Err(e) => Box::new(crate::source::from_iter(std::iter::once(Err(e)))),
        };
        let sinks = std::mem::take(&mut self.sinks);
        let report = crate::pipe::pipe_report(source, sinks, options);
        self.stop_housekeeping();
        report
    }

    /// Stops the tape's housekeeping (before its writer closes and lets go of the tape's lock).
    fn stop_housekeeping(&mut self) {
        if let Some(t) = &mut self.tape {
            t.housekeeping.take();
        }
    }

    /// Like [`Recorder::finish`], but `stop()` ends a delivery still running (its sink away)
    /// where it is, its cursor committed, as soon as it returns true.
    pub fn finish_with(mut self, stop: &dyn Fn() -> bool) -> Result<RecordSummary> {
        self.stop_housekeeping();
        let (sinks, first) = self.close_sinks();
        let summary = self.finish_deliveries(stop, sinks);
        match first {
            Some(e) => Err(e),
            None => Ok(summary),
        }
    }

    /// Closes every sink (with a tape: makes the tape durable and seals it), brings every
    /// delivery to the tape's acknowledged end, and says what happened. An error closing a
    /// sink (a failed tape writer: a full disk) is returned after the deliveries finished;
    /// a delivery that failed is reported in [`RecordSummary::deliveries`].
    pub fn finish(self) -> Result<RecordSummary> {
        self.finish_with(&|| false)
    }

    /// Closes the sinks still held (none after [`Recorder::pipe`]); the first error aside.
    fn close_sinks(&mut self) -> (Vec<SinkSummary>, Option<Error>) {
        let mut first: Option<Error> = None;
        let mut sinks = Vec::new();
        for mut s in std::mem::take(&mut self.sinks) {
            let closed = s.close();
            let stats = s.stats();
            sinks.push(SinkSummary {
                uri: s.name().to_string(),
                rows: stats.rows,
                bytes: stats.bytes,
                error: closed.as_ref().err().map(ToString::to_string),
            });
            if let Err(e) = closed {
                first.get_or_insert(e);
            }
        }
        (sinks, first)
    }

    fn finish_deliveries(
        mut self,
        stop: &dyn Fn() -> bool,
        sinks: Vec<SinkSummary>,
    ) -> RecordSummary {
        let mut tape = None;
        let mut deliveries = Vec::new();
        if let Some(t) = self.tape.take() {
            deliveries = t.delivery.finish_or_stop(t.watch.durable_seq(), stop);
            let end = t.watch.next_seq();
            tape = Some(TapeSummary {
                dir: t.dir,
                first_seq: t.start,
                end_seq: end,
                acknowledged: t.watch.durable_seq().saturating_sub(t.start),
                received: end.saturating_sub(t.start),
            });
        }
        RecordSummary {
            rows: self.rows,
            sinks,
            tape,
            deliveries,
        }
    }
}
