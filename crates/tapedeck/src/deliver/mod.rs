//! Delivery: from the tape to every sink, each from its own durable cursor, exactly once.
//!
//! Each sink gets a worker thread that reads the tape from the sink's committed cursor (see
//! [`destination`] and `resume/` for how each kind of sink keeps it), writes what it reads, and commits the
//! cursor with the data: after `commit_rows` rows, after `flush_interval`, and whenever it has
//! caught up with the tape. A worker reads only rows the tape has acknowledged (durable under
//! its fsync policy), so a sink never holds a row the tape could lose. A sink that is slow or
//! away never slows the tape: it falls behind, and catches up later — in this run or the next
//! (`tapedeck deliver`, or `record` again on the same tape).
//!
//! The guarantee: after any crash, the destination holds exactly the tape rows
//! `start..cursor`, and the next delivery continues at `cursor`. `docs/delivery.md` states it
//! per sink, with its limits.

pub mod destination;
mod resume;
pub mod status;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, Result};
use crate::record::time::{iso_micros, micros_since_epoch, now_micros};
use crate::sink::SinkSpec;
use crate::sync::lock;
use crate::tape::{StartAt, TapeReader, TapeWatch};

/// The cursor file moved beside the sinks that keep it; this keeps the old path working.
pub use crate::sink::cursor_file;
pub use crate::tape::id::TapeRef;
pub use destination::Destination;
pub use status::{DeliveryState, DeliveryStatus};

/// Parses every sink URI, keeping the URI as shown (credentials removed) beside its spec, and
/// refuses — before anything is created or any tape opened — two sinks writing one file or
/// table. For a delivery (`delivered`) an existing file is checked the way the delivery will
/// check it ([`destination::check_destination`]); otherwise as a sink opened directly does.
pub fn parse_sinks(uris: &[String], delivered: bool) -> Result<Vec<(String, SinkSpec)>> {
    let specs = uris
        .iter()
        .map(|uri| {
            let spec = if delivered {
                let spec = crate::sink::parse_unchecked(uri)?;
                destination::check_destination(&spec)?;
                spec
            } else {
                crate::sink::parse(uri)?
            };
            Ok((crate::uri::redact(uri), spec))
        })
        .collect::<Result<Vec<_>>>()?;
    crate::sink::check_distinct(specs.iter().map(|(_, s)| s))?;
    Ok(specs)
}

/// Where a destination that holds no delivery from this tape yet starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NewStart {
    /// The first row of the tape.
    #[default]
    Start,
    /// The end of the tape when the delivery opens (only rows recorded from now on).
    End,
}

/// How deliveries run.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// Longest time a delivered row waits before its commit.
    pub flush_interval: Duration,
    /// Commit at least every this many rows while catching up.
    pub commit_rows: u64,
    /// Where a new destination starts.
    pub new_start: NewStart,
    /// How long to keep trying to open a sink whose server cannot be reached.
    pub open_retry_for: Duration,
    /// The tape's writer, when this process holds it: damage a delivery finds in a sealed
    /// segment is quarantined through it (recorded in the manifest).
    pub quarantine: Option<TapeWatch>,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            flush_interval: Duration::from_secs(1),
            commit_rows: 65_536,
            new_start: NewStart::Start,
            open_retry_for: Duration::from_secs(300),
            quarantine: None,
        }
    }
}

/// How far the tape goes.
#[derive(Debug, Clone)]
pub enum TapeEnd {
    /// A tape being recorded: deliver what it has acknowledged, until [`Delivery::finish`].
    Live(TapeWatch),
    /// A finished tape: deliver up to this sequence number.
    Fixed(u64),
    /// A tape another process is recording (in this directory): deliver what its writer has
    /// published as acknowledged (`ACKED`); once the writer is gone, up to the last position
    /// it published, and stop.
    Published(PathBuf),
}

/// How the deliveries of one tape end, as every worker sees it: where the tape ends (once
/// known) and whether to stop at once.
struct EndSignal {
    /// Set by `finish`: the tape ends here.
    final_end: Mutex<Option<u64>>,
    /// Stop without delivering the rest (the process is going down).
    abort: AtomicBool,
}

/// Reads the deliveries' statuses while they run; see [`Delivery::status_handle`].
#[derive(Debug, Clone)]
pub struct StatusHandle(Vec<Arc<Mutex<DeliveryStatus>>>);

impl StatusHandle {
    /// Where every sink stands now.
    pub fn statuses(&self) -> Vec<DeliveryStatus> {
        self.0.iter().map(|s| lock(s).clone()).collect()
    }
}

struct Worker {
    status: Arc<Mutex<DeliveryStatus>>,
    handle: Option<JoinHandle<()>>,
}

/// Running deliveries from one tape; see the module docs.
pub struct Delivery {
    workers: Vec<Worker>,
    shared: Arc<EndSignal>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("sinks", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// Starts one worker per sink. `sinks` pairs each sink's shown URI (credentials removed)
    /// with its parsed spec.
    pub fn start(
        tape: TapeRef,
        sinks: Vec<(String, SinkSpec)>,
        end: TapeEnd,
        options: &DeliveryOptions,
    ) -> Result<Delivery> {
        let shared = Arc::new(EndSignal {
            final_end: Mutex::new(match end {
                TapeEnd::Fixed(e) => Some(e),
                TapeEnd::Live(_) | TapeEnd::Published(_) => None,
            }),
            abort: AtomicBool::new(false),
        });
        let mut workers = Vec::new();
        for (shown, spec) in sinks {
            // Whatever the caller passed, no credential reaches a status, a file or a log.
            let shown = crate::uri::redact(&shown);
            let status = Arc::new(Mutex::new(DeliveryStatus::new(shown.clone())));
            let ctx = WorkerCtx {
                tape: tape.clone(),
                spec,
                end: end.clone(),
                options: options.clone(),
                shared: shared.clone(),
                status: status.clone(),
                status_file: status::path_for(&tape.dir, &shown),
                published: Mutex::new(None),
            };
            let handle = std::thread::Builder::new()
                .name(format!("deliver {shown}"))
                .spawn(move || ctx.run())
                .map_err(|e| Error::io("start a delivery thread for", shown.as_str(), e))?;
            workers.push(Worker {
                status,
                handle: Some(handle),
            });
        }
        Ok(Delivery { workers, shared })
    }

    /// Where every sink stands now.
    pub fn statuses(&self) -> Vec<DeliveryStatus> {
        self.status_handle().statuses()
    }

    /// A handle that reads the statuses from another thread (a progress line).
    pub fn status_handle(&self) -> StatusHandle {
        StatusHandle(self.workers.iter().map(|w| w.status.clone()).collect())
    }

    /// The tape is complete at `end`: every worker delivers up to it, commits, and closes its
    /// sink. Returns the final statuses (a failed sink's carries its error).
    pub fn finish(mut self, end: u64) -> Vec<DeliveryStatus> {
        *lock(&self.shared.final_end) = Some(end);
        self.join()
    }

    /// Like [`Delivery::finish`], but stops every worker where it is (as [`Delivery::abort`])
    /// as soon as `stop()` returns true — a user's Ctrl-C or SIGTERM must end a run whose sink
    /// is away, not wait for it.
    pub fn finish_or_stop(self, end: u64, stop: &dyn Fn() -> bool) -> Vec<DeliveryStatus> {
        *lock(&self.shared.final_end) = Some(end);
        self.wait_or_stop(stop)
    }

    /// Waits for every worker to reach the end its [`TapeEnd`] gives (for
    /// [`TapeEnd::Published`]: the writer's last position once it is gone), stopping them
    /// where they are as soon as `stop()` returns true.
    pub fn wait_or_stop(mut self, stop: &dyn Fn() -> bool) -> Vec<DeliveryStatus> {
        while self
            .workers
            .iter()
            .any(|w| w.handle.as_ref().is_some_and(|h| !h.is_finished()))
        {
            if stop() {
                self.shared.abort.store(true, Ordering::SeqCst);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.join()
    }

    /// Stops every worker where it is (committed rows stay committed; the rest is delivered
    /// next time).
    pub fn abort(mut self) -> Vec<DeliveryStatus> {
        self.shared.abort.store(true, Ordering::SeqCst);
        self.join()
    }

    fn join(&mut self) -> Vec<DeliveryStatus> {
        for w in &mut self.workers {
            if let Some(h) = w.handle.take()
                && h.join().is_err()
            {
                let mut s = lock(&w.status);
                s.state = DeliveryState::Failed;
                s.error = Some("the delivery thread panicked".into());
            }
        }
        self.statuses()
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.shared.abort.store(true, Ordering::SeqCst);
        self.join();
    }
}

struct WorkerCtx {
    tape: TapeRef,
    spec: SinkSpec,
    end: TapeEnd,
    options: DeliveryOptions,
    shared: Arc<EndSignal>,
    status: Arc<Mutex<DeliveryStatus>>,
    status_file: PathBuf,
    /// The recorder's published position as last read, and when (`TapeEnd::Published`).
    published: Mutex<Option<(Instant, (u64, bool))>>,
}

impl WorkerCtx {
    fn run(self) {
        let result = self.deliver();
        let mut s = lock(&self.status);
        match result {
            Ok(()) => {
                if s.state != DeliveryState::Aborted {
                    s.state = DeliveryState::Done;
                }
            }
            Err(e) => {
                // Reported through the status (the CLI prints it once, with what to do).
                tracing::debug!(sink = %s.sink, "delivery failed: {e}");
                s.state = DeliveryState::Failed;
                s.error = Some(e.to_string());
            }
        }
        // The lag as it stands now: a delivery that failed early is as far behind as the
        // tape's end from its cursor, not "0 rows behind".
        s.tape_end = s.tape_end.max(self.limit().0);
        s.lag_rows = s.tape_end.saturating_sub(s.cursor.unwrap_or(0));
        s.updated_at = iso_micros(now_micros());
        let snapshot = s.clone();
        drop(s);
        status::write(&self.status_file, &snapshot);
    }

    /// The sequence number the tape has acknowledged up to, and whether it is final.
    fn limit(&self) -> (u64, bool) {
        if let Some(e) = *lock(&self.shared.final_end) {
            return (e, true);
        }
        match &self.end {
            TapeEnd::Live(w) => (w.durable_seq(), false),
            TapeEnd::Fixed(e) => (*e, true),
            TapeEnd::Published(dir) => {
                // Two opens, a lock attempt and a read: at most every PUBLISHED_LOOK, not per
                // batch.
                let mut seen = lock(&self.published);
                match *seen {
                    Some((at, limit)) if at.elapsed() < PUBLISHED_LOOK => limit,
                    _ => {
                        // The lock first: a position read after the writer is seen gone is
                        // its last one.
                        let running = crate::tape::acked::writer_running(dir);
                        let seq = crate::tape::acked::read(dir).ok().flatten().unwrap_or(0);
                        *seen = Some((Instant::now(), (seq, !running)));
                        (seq, !running)
                    }
                }
            }
        }
    }

    fn set(&self, f: impl FnOnce(&mut DeliveryStatus)) {
        f(&mut lock(&self.status));
    }

    fn aborted(&self) -> bool {
        self.shared.abort.load(Ordering::SeqCst)
    }

    /// Opens the sink, retrying one whose server cannot be reached for `open_retry_for`.
    fn open(&self) -> Result<Option<Box<dyn Destination>>> {
        let start = match self.options.new_start {
            // The tape's first row: 0, or where retention left it.
            NewStart::Start => crate::tape::retention::first_row(&self.tape.dir)?,
            NewStart::End => self.limit().0,
        };
        let began = Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            match destination::open(self.spec.clone(), &self.tape, start) {
                Ok(t) => return Ok(Some(t)),
                Err(e @ Error::Connect { .. }) => {
                    if began.elapsed() >= self.options.open_retry_for {
                        return Err(e);
                    }
                    self.set(|s| {
                        s.state = DeliveryState::Reconnecting;
                        s.error = Some(e.to_string());
                    });
                    let until = Instant::now() + backoff;
                    while Instant::now() < until {
                        if self.aborted() {
                            return Ok(None);
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn deliver(&self) -> Result<()> {
        let Some(mut dest) = self.open()? else {
            self.set(|s| s.state = DeliveryState::Aborted);
            return Ok(());
        };
        let result = self.deliver_into(&mut dest);
        if result.is_err() {
            dest.abandon();
        }
        result
    }

    /// Delivers into an open destination until the tape's end (or an abort).
    fn deliver_into(&self, dest: &mut Box<dyn Destination>) -> Result<()> {
        let resume = dest.resume_at();
        let (limit, _) = self.limit();
        if resume > limit {
            // The cursor is past what the tape holds: the tape lost acknowledged rows (a power
            // failure under fsync=never). New rows would reuse those sequence numbers.
            return Err(Error::Delivery {
                sink: dest.name().to_string(),
                message: format!(
                    "its cursor is {resume} but the tape ends at {limit}: the tape lost rows this sink holds (a power failure with --fsync never?); deliver into a new destination"
                ),
            });
        }
        let mut reader = TapeReader::open(&self.tape.dir, StartAt::Seq(resume))?;
        let mut pos = resume;
        let mut uncommitted = 0u64;
        let mut last_commit = Instant::now();
        let mut last_status = Instant::now() - Duration::from_secs(10);
        let mut caught_up_at = SystemTime::now();
        let mut idle = Duration::from_millis(2);
        // Since when the reader has yielded nothing while acknowledged rows lie ahead.
        let mut stalled_since: Option<Instant> = None;
        self.set(|s| {
            s.state = DeliveryState::Delivering;
            s.error = None;
            s.cursor = dest.committed().or(Some(resume));
        });
        loop {
            if self.aborted() {
                if uncommitted > 0 {
                    dest.commit(pos)?;
                }
                self.set(|s| s.state = DeliveryState::Aborted);
                self.publish(dest.as_ref(), pos, caught_up_at);
                return Ok(());
            }
            let (limit, last) = self.limit();
            reader.set_until(Some(limit));
            match reader.next_batch()? {
                Some((first, batch)) => {
                    stalled_since = None;
                    if first > pos {
                        self.skip_unreadable(dest.as_mut(), &mut reader, pos, first);
                    }
                    let n = batch.num_rows() as u64;
                    dest.write(&batch)?;
                    pos = first + n;
                    uncommitted += n;
                    idle = Duration::from_millis(2);
                    if uncommitted >= self.options.commit_rows
                        || last_commit.elapsed() >= self.options.flush_interval
                    {
                        dest.commit(pos)?;
                        uncommitted = 0;
                        last_commit = Instant::now();
                    }
                }
                None => {
                    let mut at_end = reader.position().max(pos);
                    if at_end < limit {
                        // Acknowledged rows the reader cannot reach. Once the tape is final
                        // (or they stay out of reach for long) they are damage, not rows still
                        // on their way: report them and go on, rather than wait forever.
                        let since = *stalled_since.get_or_insert_with(Instant::now);
                        let patience = if last {
                            UNREADABLE_FINAL
                        } else {
                            UNREADABLE_LIVE
                        };
                        if since.elapsed() >= patience {
                            at_end = limit;
                            stalled_since = None;
                        }
                    }
                    if at_end > pos {
                        self.skip_unreadable(dest.as_mut(), &mut reader, pos, at_end);
                        pos = at_end;
                    }
                    let behind = dest.stats().pending > 0;
                    if uncommitted > 0
                        || (behind && last_commit.elapsed() >= self.options.flush_interval)
                    {
                        dest.commit(pos)?;
                        uncommitted = 0;
                        last_commit = Instant::now();
                    }
                    if !behind {
                        caught_up_at = SystemTime::now();
                    }
                    if last && pos >= limit {
                        dest.finish(pos)?;
                        self.set(|s| s.state = DeliveryState::Done);
                        self.publish(dest.as_ref(), pos, SystemTime::now());
                        return Ok(());
                    }
                    std::thread::sleep(idle);
                    idle = (idle * 2).min(Duration::from_millis(50));
                }
            }
            if last_status.elapsed() >= Duration::from_millis(250) {
                self.publish(dest.as_ref(), pos, caught_up_at);
                last_status = Instant::now();
            }
        }
    }

    /// Moves the sink's cursor over acknowledged rows `from..to` that the tape cannot supply,
    /// saying so: an error in the log, the range in the status (`skipped`), and — through the
    /// status — in the summary and the exit code. Never silent.
    fn skip_unreadable(
        &self,
        dest: &mut dyn Destination,
        reader: &mut TapeReader,
        from: u64,
        to: u64,
    ) {
        let damaged = reader.take_unreadable();
        let mut range = crate::tape::reader::Unreadable::covering(from, to, &damaged);
        range.why.push_str("; `tapedeck verify` shows the damage");
        tracing::error!(
            "delivery to {}: acknowledged {range}; the cursor moves past them",
            dest.name()
        );
        if let Some(w) = &self.options.quarantine {
            for d in damaged.iter().filter(|d| d.from < to && d.to > from) {
                if let Err(e) = w.quarantine(d) {
                    tracing::warn!("cannot quarantine the damaged {d}: {e}");
                }
            }
        }
        dest.skip(to - from);
        self.set(|s| s.skipped.push(range));
    }

    /// Updates the in-memory status; writes the status file at most once a second.
    fn publish(&self, dest: &dyn Destination, pos: u64, caught_up_at: SystemTime) {
        let tape_end = self.limit().0.max(pos);
        let stats = dest.stats();
        let cursor = dest.committed();
        let mut s = lock(&self.status);
        s.sink = dest.name().to_string();
        s.cursor = cursor;
        s.tape_end = tape_end;
        s.lag_rows = tape_end.saturating_sub(cursor.unwrap_or(0));
        s.lag_seconds = if s.lag_rows == 0 {
            0.0
        } else {
            SystemTime::now()
                .duration_since(caught_up_at)
                .unwrap_or_default()
                .as_secs_f64()
        };
        s.caught_up_at = iso_micros(micros_since_epoch(caught_up_at));
        s.rows = stats.rows;
        s.bytes = stats.bytes;
        s.replaced_at_end = dest.replaced_at_finish();
        s.pending = stats.pending;
        if stats.pending > 0 && s.state == DeliveryState::Delivering {
            s.state = DeliveryState::Reconnecting;
        } else if stats.pending == 0 && s.state == DeliveryState::Reconnecting {
            s.state = DeliveryState::Delivering;
        }
        let due = s
            .written
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
            || s.state != DeliveryState::Delivering;
        if due {
            s.written = Some(Instant::now());
            s.updated_at = iso_micros(now_micros());
            let snapshot = s.clone();
            drop(s);
            status::write(&self.status_file, &snapshot);
        }
    }
}

/// How often a delivery beside a recorder looks at its published position.
const PUBLISHED_LOOK: Duration = Duration::from_millis(10);

/// How long a delivery of a finished tape waits for rows the reader cannot reach before it
/// reports them unreadable.
const UNREADABLE_FINAL: Duration = Duration::from_millis(200);
/// The same while the tape is being recorded (acknowledged rows are on disk, so this is long
/// only to be sure).
const UNREADABLE_LIVE: Duration = Duration::from_secs(5);
