//! The direct path: a stream of records into one or more sinks, batched and flushed on time.
//!
//! [`pipe`] keeps the reference libraries' semantics and fixes their two holes:
//!
//! - **A real flush timer.** Rows are buffered until `batch_size` rows are held *or*
//!   `flush_interval` has passed, whichever comes first — and the interval is measured by a timer,
//!   not checked when the next record arrives, so a stream that goes silent still has what it
//!   sent flushed within one interval.
//! - **Nothing received is lost on failure.** If the source fails (or the user stops the run, or
//!   a limit is reached), everything already received is written and flushed to every healthy sink
//!   before the error is returned.
//!
//! Threads: the source runs on its own thread (so a blocking read cannot stall the timer), and
//! every sink has a worker thread fed through a bounded queue of `queue_batches` batches. A slow
//! sink therefore holds the others back only once its queue is full — by at most that bounded
//! buffer. Each flush sends the batch to every sink and then asks each to flush; a worker that
//! finds several flushes queued behind it (a sink slower than the source) writes them all and
//! flushes once, so a database commits one transaction for them. A sink that waits on a server
//! ([`Sink::prefers_own_thread`]) gets a worker even when it is the only sink, and a sink that is
//! behind (its server away) is asked to flush again every `flush_interval` even when no rows
//! arrive.
//!
//! Rows become batches through a per-batch [`RowBuilder`]; each sink applies its own schema lock,
//! so the JSONL sink can keep wider rows while the CSV sink locks its header. DAQ blocks are not
//! re-batched (a block already is one); they go to the sinks as they come, after any rows
//! received before them, and the timer keeps flushing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;

use crate::error::{Error, Result};
use crate::record::time::{iso_micros, now_micros};
use crate::record::{Block, Record, RowBuilder};
use crate::sink::{Sink, SinkStats};
use crate::source::Source;

/// Options of [`pipe`].
#[derive(Debug, Clone)]
pub struct PipeOptions {
    /// Flush when this many rows are buffered (default 64).
    pub batch_size: usize,
    /// Flush at least this often while rows are buffered (default 1 s).
    pub flush_interval: Duration,
    /// Stop after this many rows (blocks count their samples per channel and are not split).
    pub limit: Option<u64>,
    /// Stop after this much time.
    pub duration: Option<Duration>,
    /// Batches each sink's queue holds before the producer waits for it (default 16).
    pub queue_batches: usize,
    /// Set it to stop the pipe cleanly (Ctrl-C): everything received is flushed.
    pub stop: StopSignal,
    /// Live counters for a progress display.
    pub progress: Option<Arc<Progress>>,
}

impl Default for PipeOptions {
    fn default() -> Self {
        PipeOptions {
            batch_size: 64,
            flush_interval: Duration::from_secs(1),
            limit: None,
            duration: None,
            queue_batches: 16,
            stop: StopSignal::default(),
            progress: None,
        }
    }
}

impl PipeOptions {
    /// Checks the options (also done by `pipe`), so a program can refuse them before it opens
    /// anything.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::InvalidOption {
                option: "batch_size",
                message: "must be at least 1 row".into(),
            });
        }
        if self.flush_interval.is_zero() {
            return Err(Error::InvalidOption {
                option: "flush_interval",
                message: "must be longer than zero".into(),
            });
        }
        if self.queue_batches == 0 {
            return Err(Error::InvalidOption {
                option: "queue_batches",
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// A flag that asks a running pipe to stop; clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<AtomicBool>);

impl StopSignal {
    /// Asks the pipe to stop.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// True once [`StopSignal::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Live counters of a running pipe, for progress displays.
#[derive(Debug, Default)]
pub struct Progress {
    rows: AtomicU64,
    bytes: AtomicU64,
    /// Per sink: bytes written and rows it is behind by.
    sinks: std::sync::Mutex<Vec<(u64, u64)>>,
}

impl Progress {
    /// Rows received from the source so far.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// Bytes written by all sinks so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Rows each sink is behind by (accepted, not yet in its destination), in the order the
    /// sinks were given; zero for a sink that keeps up.
    pub fn sinks_behind(&self) -> Vec<u64> {
        crate::sync::lock(&self.sinks).iter().map(|s| s.1).collect()
    }

    fn set_sink(&self, index: usize, stats: SinkStats) {
        let mut v = crate::sync::lock(&self.sinks);
        if v.len() <= index {
            v.resize(index + 1, (0, 0));
        }
        v[index] = (stats.bytes, stats.pending);
        self.bytes
            .store(v.iter().map(|s| s.0).sum(), Ordering::Relaxed);
    }
}

/// What one sink received during a pipe.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SinkSummary {
    /// The sink's URI (credentials removed).
    pub uri: String,
    /// Rows written.
    pub rows: u64,
    /// Bytes written.
    pub bytes: u64,
    /// The sink's error, if it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a pipe did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Rows received from the source and handed to the sinks.
    pub rows: u64,
    /// Batches handed to the sinks (a block counts as one).
    pub batches: u64,
    /// DAQ blocks among them.
    pub blocks: u64,
    /// Malformed records the source skipped.
    pub skipped: u64,
    /// Start, ISO 8601 UTC.
    pub started_at: String,
    /// End, ISO 8601 UTC.
    pub finished_at: String,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// `rows / seconds`.
    pub rows_per_sec: f64,
    /// Why the pipe ended: `end` (source exhausted), `limit`, `duration`, `stopped`, `error`.
    pub ended_by: String,
    /// Per sink.
    pub sinks: Vec<SinkSummary>,
}

/// The result of [`pipe_report`]: the summary, and the error if the pipe failed.
#[derive(Debug)]
pub struct PipeReport {
    /// What was done, also when the pipe failed.
    pub summary: Summary,
    /// The first error (source or sink), after everything received was flushed.
    pub error: Option<Error>,
}

/// Drives `source` into `sinks`; see the module docs. Returns the summary, or the first error
/// once everything received has been flushed.
///
/// ```
/// use tapedeck::pipe::{pipe, PipeOptions};
/// use tapedeck::sink::memory::MemorySink;
/// use tapedeck::source::sim_alicat::AlicatSim;
///
/// let sink = MemorySink::new();
/// let seen = sink.handle();
/// let options = PipeOptions { batch_size: 100, ..PipeOptions::default() };
/// let summary = pipe(AlicatSim::new(Some(1000), 0.0), vec![Box::new(sink)], &options).unwrap();
/// assert_eq!(summary.rows, 1000);
/// assert_eq!(summary.sinks[0].rows, 1000);
/// assert_eq!(seen.rows(), 1000);
/// ```
pub fn pipe<S>(source: S, sinks: Vec<Box<dyn Sink>>, options: &PipeOptions) -> Result<Summary>
where
    S: Source + 'static,
{
    let report = pipe_report(source, sinks, options);
    match report.error {
        Some(e) => Err(e),
        None => Ok(report.summary),
    }
}

/// Like [`pipe`], but always returns the summary, with the error beside it.
pub fn pipe_report<S>(mut source: S, sinks: Vec<Box<dyn Sink>>, options: &PipeOptions) -> PipeReport
where
    S: Source + 'static,
{
    let started_wall = now_micros();
    let started = Instant::now();
    let names: Vec<String> = sinks.iter().map(|s| s.name().to_string()).collect();
    let empty_summary = |error: Option<Error>| PipeReport {
        summary: Summary {
            rows: 0,
            batches: 0,
            blocks: 0,
            skipped: 0,
            started_at: iso_micros(started_wall),
            finished_at: iso_micros(now_micros()),
            seconds: 0.0,
            rows_per_sec: 0.0,
            ended_by: "error".into(),
            sinks: names
                .iter()
                .map(|n| SinkSummary {
                    uri: n.clone(),
                    rows: 0,
                    bytes: 0,
                    error: None,
                })
                .collect(),
        },
        error,
    };
    if let Err(e) = options.validate() {
        return empty_summary(Some(e));
    }
    if sinks.is_empty() {
        return empty_summary(Some(Error::InvalidOption {
            option: "sinks",
            message: "at least one sink is needed".into(),
        }));
    }
    // Sources that make batches make them a few thousand rows long; `accept` slices them into
    // flushes of `batch_size`, so the hint saves hand-offs without changing what sinks see.
    let hint = if options.batch_size >= 4096 {
        options.batch_size.min(65_536)
    } else {
        4096 / options.batch_size * options.batch_size
    };
    source.set_batch_hint(hint);
    // A source that can end itself at the duration (a paced simulator) does, so the last
    // block due exactly at the end is not cut by a clock that started a moment earlier.
    let self_timed = options.duration.is_some_and(|d| source.end_after(d));
    let counters = source.counters();
    let (feed, halt, source_thread) = spawn_source(source, options.batch_size);
    let lanes: Vec<SinkLane> = if sinks.len() == 1 && !sinks[0].prefers_own_thread() {
        sinks
            .into_iter()
            .map(|sink| SinkLane::Inline {
                index: 0,
                sink,
                error: None,
            })
            .collect()
    } else {
        sinks
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                // A sink that waits on a server gets a queue of about 64 Ki rows, so the flushes
                // that pile up while it waits can be merged into few transactions.
                let queue = if s.prefers_own_thread() {
                    options
                        .queue_batches
                        .max(MERGE_ROWS / options.batch_size.max(1))
                        .min(MERGE_BATCHES)
                } else {
                    options.queue_batches
                };
                SinkLane::spawn(
                    i,
                    s,
                    queue,
                    options.flush_interval,
                    options.progress.clone(),
                )
            })
            .collect()
    };

    let mut run = Run {
        options,
        lanes,
        builder: RowBuilder::per_batch(),
        pending: Vec::new(),
        pending_rows: 0,
        dirty: false,
        rows: 0,
        batches: 0,
        blocks: 0,
        last_flush: Instant::now(),
        started,
        self_timed,
    };
    let (ended_by, mut error) = run.drive(&feed);
    halt.store(true, Ordering::SeqCst);
    // Whatever was received is flushed before anything is reported.
    if let Err(e) = run.flush() {
        error.get_or_insert(e);
    }
    // A failed run leaves nothing it created and never wrote to: each sink that took no rows
    // removes its file (the retry the error suggests then works).
    if error.is_some() || run.lanes.iter().any(SinkLane::failed) {
        for lane in &mut run.lanes {
            lane.abandon();
        }
    }
    let Run {
        lanes,
        rows,
        batches,
        blocks,
        ..
    } = run;
    drop(feed);
    let mut sink_summaries = Vec::new();
    for lane in lanes {
        let (name, stats, err) = lane.finish(options.progress.as_deref());
        let err_text = err.as_ref().map(ToString::to_string);
        if let Some(e) = err
            && error.is_none()
        {
            error = Some(Error::Sink {
                sink: name.clone(),
                source: Box::new(e),
            });
        }
        sink_summaries.push(SinkSummary {
            uri: name,
            rows: stats.rows,
            bytes: stats.bytes,
            error: err_text,
        });
    }
    // A source blocked in a read (stdin) cannot be joined; it ends when the process does.
    if source_thread.is_finished() {
        let _ = source_thread.join();
    }
    let seconds = started.elapsed().as_secs_f64();
    PipeReport {
        summary: Summary {
            rows,
            batches,
            blocks,
            skipped: counters.skipped(),
            started_at: iso_micros(started_wall),
            finished_at: iso_micros(now_micros()),
            seconds,
            rows_per_sec: if seconds > 0.0 {
                rows as f64 / seconds
            } else {
                0.0
            },
            ended_by: if error.is_some() {
                "error".into()
            } else {
                ended_by.into()
            },
            sinks: sink_summaries,
        },
        error,
    }
}

enum Feed {
    Record(Record),
    Failed(Error),
    End,
}

fn spawn_source<S: Source + 'static>(
    mut source: S,
    batch_size: usize,
) -> (Receiver<Feed>, Arc<AtomicBool>, JoinHandle<()>) {
    // Room for a few batches' worth of single rows, so row sources are not throttled per row.
    let (tx, rx) = mpsc::sync_channel(batch_size.clamp(64, 4096));
    let halt = Arc::new(AtomicBool::new(false));
    let halted = halt.clone();
    let handle = std::thread::Builder::new()
        .name("tapedeck-source".into())
        .spawn(move || {
            while !halted.load(Ordering::Relaxed) {
                let item = match source.next_record() {
                    Ok(Some(r)) => Feed::Record(r),
                    Ok(None) => Feed::End,
                    Err(e) => Feed::Failed(e),
                };
                let last = !matches!(item, Feed::Record(_));
                if tx.send(item).is_err() || last {
                    return;
                }
            }
        });
    let handle = match handle {
        Ok(h) => h,
        Err(e) => {
            // No thread: report it through the channel we still own.
            let (tx, rx) = mpsc::sync_channel(1);
            let _ = tx.send(Feed::Failed(Error::io("start a thread for", "source", e)));
            return (rx, halt, std::thread::spawn(|| {}));
        }
    };
    (rx, halt, handle)
}

enum SinkCommand {
    /// Write a batch, then flush if asked (one hand-off for the common write + flush).
    Write(RecordBatch, bool),
    Block(Arc<Block>),
    Flush,
    /// The run failed (here or elsewhere): a sink that wrote nothing removes what it created.
    Abandon,
}

fn apply(sink: &mut dyn Sink, cmd: SinkCommand) -> Result<()> {
    match cmd {
        SinkCommand::Write(b, false) => sink.write(&b),
        SinkCommand::Write(b, true) => sink.write(&b).and_then(|()| sink.flush()),
        SinkCommand::Block(b) => sink.write_block(&b),
        SinkCommand::Flush => sink.flush(),
        SinkCommand::Abandon => {
            sink.abandon();
            Ok(())
        }
    }
}

/// Rows the queue of a sink that waits on a server holds (in batches of `batch_size`)…
const MERGE_ROWS: usize = 65_536;
/// …but never more batches than this.
const MERGE_BATCHES: usize = 1024;

/// Applies `first` and the commands queued behind it (at most `limit`), flushing once at the
/// end if any of them asked for a flush: flushes that queued up behind a slow sink are merged,
/// so a database sink commits one transaction for them instead of one each. Every flush's rows
/// are still flushed — no later than they would have been one by one.
fn apply_queued(
    sink: &mut dyn Sink,
    first: SinkCommand,
    queue: &Receiver<SinkCommand>,
    limit: usize,
) -> Result<()> {
    let mut flush = false;
    let mut next = Some(first);
    let mut taken = 0;
    while let Some(cmd) = next.take() {
        match cmd {
            SinkCommand::Write(b, f) => {
                sink.write(&b)?;
                flush |= f;
            }
            SinkCommand::Block(b) => sink.write_block(&b)?,
            SinkCommand::Flush => flush = true,
            SinkCommand::Abandon => sink.abandon(),
        }
        taken += 1;
        if taken < limit {
            next = queue.try_recv().ok();
        }
    }
    if flush { sink.flush() } else { Ok(()) }
}

/// Closes a sink (also after an error, so what was written stays readable) and reports.
fn close_sink(sink: &mut dyn Sink, mut error: Option<Error>) -> (SinkStats, Option<Error>) {
    if let Err(e) = sink.close() {
        error.get_or_insert(e);
    }
    (sink.stats(), error)
}

/// One sink as the pipe drives it: on the pipe's own thread when it is the only sink (no
/// hand-off cost, and nobody to block), else on a worker thread behind a bounded queue.
enum SinkLane {
    Inline {
        index: usize,
        sink: Box<dyn Sink>,
        error: Option<Error>,
    },
    Worker {
        name: String,
        tx: Option<SyncSender<SinkCommand>>,
        handle: JoinHandle<(SinkStats, Option<Error>)>,
    },
}

impl SinkLane {
    fn spawn(
        index: usize,
        mut sink: Box<dyn Sink>,
        queue: usize,
        retry_every: Duration,
        progress: Option<Arc<Progress>>,
    ) -> SinkLane {
        let name = sink.name().to_string();
        let (tx, rx) = mpsc::sync_channel::<SinkCommand>(queue);
        let handle = std::thread::spawn(move || {
            let mut error = None;
            loop {
                let cmd = match rx.recv_timeout(retry_every) {
                    Ok(cmd) => cmd,
                    // A sink that is behind (its server away) retries on the flush timer even
                    // when no rows arrive.
                    Err(RecvTimeoutError::Timeout) if sink.stats().pending > 0 => {
                        SinkCommand::Flush
                    }
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                };
                let r = apply_queued(sink.as_mut(), cmd, &rx, queue);
                if let Some(p) = &progress {
                    p.set_sink(index, sink.stats());
                }
                if let Err(e) = r {
                    error = Some(e);
                    break;
                }
            }
            let out = close_sink(sink.as_mut(), error);
            if let Some(p) = &progress {
                p.set_sink(index, out.0);
            }
            out
        });
        SinkLane::Worker {
            name,
            tx: Some(tx),
            handle,
        }
    }

    /// Hands a command to the sink; a failed sink ignores further commands.
    fn send(&mut self, cmd: SinkCommand, progress: Option<&Progress>) {
        match self {
            SinkLane::Inline { index, sink, error } => {
                if error.is_none() {
                    if let Err(e) = apply(sink.as_mut(), cmd) {
                        *error = Some(e);
                    }
                    if let Some(p) = progress {
                        p.set_sink(*index, sink.stats());
                    }
                }
            }
            SinkLane::Worker { tx: Some(tx), .. } => {
                if let Err(TrySendError::Full(cmd)) = tx.try_send(cmd) {
                    // The bounded queue is full: wait for this sink (the only back-pressure).
                    let _ = tx.send(cmd);
                }
            }
            SinkLane::Worker { tx: None, .. } => {}
        }
    }

    /// Asks an inline sink that is behind to try again (worker lanes retry on their own).
    fn retry_if_behind(&mut self, progress: Option<&Progress>) {
        if let SinkLane::Inline { index, sink, error } = self
            && error.is_none()
            && sink.stats().pending > 0
        {
            if let Err(e) = sink.flush() {
                *error = Some(e);
            }
            if let Some(p) = progress {
                p.set_sink(*index, sink.stats());
            }
        }
    }

    /// Tells the sink the run failed (see [`Sink::abandon`]).
    fn abandon(&mut self) {
        match self {
            SinkLane::Inline { sink, .. } => sink.abandon(),
            SinkLane::Worker { tx, .. } => {
                if let Some(tx) = tx {
                    let _ = tx.send(SinkCommand::Abandon);
                }
            }
        }
    }

    fn failed(&self) -> bool {
        match self {
            SinkLane::Inline { error, .. } => error.is_some(),
            SinkLane::Worker { handle, .. } => handle.is_finished(),
        }
    }

    fn finish(self, progress: Option<&Progress>) -> (String, SinkStats, Option<Error>) {
        match self {
            SinkLane::Inline {
                index,
                mut sink,
                error,
            } => {
                let (stats, error) = close_sink(sink.as_mut(), error);
                if let Some(p) = progress {
                    p.set_sink(index, stats);
                }
                (sink.name().to_string(), stats, error)
            }
            SinkLane::Worker {
                name, tx, handle, ..
            } => {
                drop(tx);
                match handle.join() {
                    Ok((stats, err)) => (name, stats, err),
                    Err(_) => (
                        name.clone(),
                        SinkStats::default(),
                        Some(Error::Unsupported {
                            sink: name,
                            what: "the sink's thread panicked".into(),
                        }),
                    ),
                }
            }
        }
    }
}

struct Run<'a> {
    options: &'a PipeOptions,
    lanes: Vec<SinkLane>,
    builder: RowBuilder,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    /// Something was written since the last flush.
    dirty: bool,
    rows: u64,
    batches: u64,
    blocks: u64,
    last_flush: Instant,
    started: Instant,
    /// The source ends itself at the duration; the clock is only a backstop.
    self_timed: bool,
}

/// Longest wait between checks of the stop flag and the duration.
const TICK: Duration = Duration::from_millis(50);
/// How long past `--duration` the clock waits for a source that ends itself at it.
const SELF_TIMED_GRACE: Duration = Duration::from_secs(1);

impl Run<'_> {
    /// When the clock cuts the run: the duration, or a little after it for a source that ends
    /// itself there.
    fn deadline(&self) -> Option<Duration> {
        let d = self.options.duration?;
        Some(if self.self_timed {
            d.saturating_add(SELF_TIMED_GRACE)
        } else {
            d
        })
    }

    /// Why the run ended when the source did: a self-timed source ending at the duration ended
    /// the run by duration.
    fn end_reason(&self) -> &'static str {
        match self.options.duration {
            Some(d) if self.self_timed && self.started.elapsed() >= d => "duration",
            _ => "end",
        }
    }

    /// Reads until the source ends, fails, a limit is reached or a stop is asked for.
    fn drive(&mut self, feed: &Receiver<Feed>) -> (&'static str, Option<Error>) {
        loop {
            if self.options.stop.is_stopped() {
                // Take what the source already handed over, then stop.
                while let Ok(Feed::Record(r)) = feed.try_recv() {
                    if let Err(e) = self.accept(r) {
                        return ("error", Some(e));
                    }
                }
                return ("stopped", None);
            }
            if let Some(d) = self.deadline()
                && self.started.elapsed() >= d
            {
                return ("duration", None);
            }
            if self.limit_reached() {
                return ("limit", None);
            }
            if self.lanes.iter().any(SinkLane::failed) {
                // A sink failed; stop reading (its error is collected at the end).
                return ("error", None);
            }
            let flush_due = self.last_flush + self.options.flush_interval;
            let now = Instant::now();
            if now >= flush_due {
                if let Err(e) = self.flush() {
                    return ("error", Some(e));
                }
                continue;
            }
            let mut wait = (flush_due - now).min(TICK);
            if let Some(d) = self.deadline() {
                wait = wait.min(d.saturating_sub(self.started.elapsed()));
            }
            match feed.recv_timeout(wait) {
                Ok(Feed::Record(r)) => {
                    if let Err(e) = self.accept(r) {
                        return ("error", Some(e));
                    }
                }
                Ok(Feed::End) => return (self.end_reason(), None),
                Ok(Feed::Failed(e)) => return ("error", Some(e)),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return ("end", None),
            }
        }
    }

    fn limit_reached(&self) -> bool {
        self.options.limit.is_some_and(|l| self.rows >= l)
    }

    /// Rows still allowed by the limit.
    fn room(&self) -> u64 {
        self.options
            .limit
            .map_or(u64::MAX, |l| l - self.rows.min(l))
    }

    fn accept(&mut self, record: Record) -> Result<()> {
        match record {
            Record::Row(row) => {
                if self.room() == 0 {
                    return Ok(());
                }
                self.builder.push(row);
                self.rows += 1;
                self.pending_rows += 1;
                if self.pending_rows >= self.options.batch_size {
                    self.flush()?;
                }
            }
            Record::Batch(batch) => {
                self.finish_rows()?;
                // A flush carries at most `batch_size` rows, however the source chunks its
                // batches (slices are zero-copy).
                let mut offset = 0;
                let len = (batch.num_rows() as u64).min(self.room()) as usize;
                while offset < len {
                    let take = (self.options.batch_size
                        - self.pending_rows.min(self.options.batch_size))
                    .max(1)
                    .min(len - offset);
                    self.pending.push(batch.slice(offset, take));
                    offset += take;
                    self.rows += take as u64;
                    self.pending_rows += take;
                    if self.pending_rows >= self.options.batch_size {
                        self.flush()?;
                    }
                }
            }
            Record::Block(block) => {
                if self.room() == 0 {
                    return Ok(());
                }
                self.flush_pending(false)?;
                self.rows += block.samples as u64;
                self.blocks += 1;
                self.batches += 1;
                self.dirty = true;
                let block = Arc::new(block);
                self.broadcast(|| SinkCommand::Block(block.clone()));
            }
        }
        if let Some(p) = &self.options.progress {
            p.rows.store(self.rows, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Turns buffered rows into a batch. A bad row ends the run, but the rows before it are
    /// still delivered.
    fn finish_rows(&mut self) -> Result<()> {
        let buffered = self.builder.len();
        let (batch, error) = self.builder.finish_partial();
        let built = batch.as_ref().map_or(0, RecordBatch::num_rows);
        // Rows from the bad one on were never handed over: the summary does not count them.
        self.rows -= (buffered - built) as u64;
        if let Some(batch) = batch {
            self.pending.push(batch);
        }
        match error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Hands buffered rows to the sinks; with `flush`, asks them to flush after the last batch.
    fn flush_pending(&mut self, flush: bool) -> Result<()> {
        // A bad row is reported after the rows before it are handed over.
        let rows = self.finish_rows();
        let pending = std::mem::take(&mut self.pending);
        self.pending_rows = 0;
        let merged = merge_batches(pending)?;
        let last = merged.len().saturating_sub(1);
        for (i, batch) in merged.into_iter().enumerate() {
            self.batches += 1;
            let flush_now = flush && i == last;
            self.dirty = !flush_now;
            self.broadcast(|| SinkCommand::Write(batch.clone(), flush_now));
        }
        rows
    }

    /// Writes buffered rows and flushes every sink (if anything was written since the last
    /// flush).
    fn flush(&mut self) -> Result<()> {
        let written = self.flush_pending(true);
        if std::mem::take(&mut self.dirty) {
            self.broadcast(|| SinkCommand::Flush);
        } else {
            let progress = self.options.progress.as_deref();
            for lane in &mut self.lanes {
                lane.retry_if_behind(progress);
            }
        }
        self.last_flush = Instant::now();
        written
    }

    fn broadcast(&mut self, make: impl Fn() -> SinkCommand) {
        let progress = self.options.progress.as_deref();
        for lane in &mut self.lanes {
            lane.send(make(), progress);
        }
    }
}

/// Concatenates consecutive batches of one schema, so a flush writes one batch per schema run.
fn merge_batches(batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    if batches.len() <= 1 {
        return Ok(batches);
    }
    let mut out: Vec<RecordBatch> = Vec::new();
    let mut run: Vec<RecordBatch> = Vec::new();
    for b in batches {
        if run.first().is_some_and(|f| f.schema() != b.schema()) {
            out.push(concat(&run)?);
            run.clear();
        }
        run.push(b);
    }
    if !run.is_empty() {
        out.push(concat(&run)?);
    }
    Ok(out)
}

fn concat(run: &[RecordBatch]) -> Result<RecordBatch> {
    if run.len() == 1 {
        return Ok(run[0].clone());
    }
    arrow_select::concat::concat_batches(&run[0].schema(), run)
        .map_err(|e| Error::arrow("joining buffered batches", e))
}
