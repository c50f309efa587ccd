//! The tape writer: one per tape, group-committed, recovering whatever a crash left.
//!
//! **Opening** takes the tape's exclusive lock (a second writer is told the holder's pid), then
//! recovers: the manifest's torn tail is cut; every segment without a valid footer is scanned; a
//! torn tail is truncated and reported; a corrupt middle is copied to `quarantine/` and recorded
//! (readers skip it); an unreadable trailing header (a crash while a segment was being created)
//! is cut to nothing; every unsealed segment is then sealed, so appending always starts a fresh
//! segment. Recovery never fails on damaged data and never asks for a directory to be deleted.
//!
//! **Appending** holds a batch in memory; what was submitted while the previous commit was in
//! flight becomes one frame when the committer next writes (or at `frame_rows` rows or
//! [`FRAME_BYTES`] held), so a recorder flushing 64 rows at a time still writes frames sized
//! for the disk — group commit at the frame level. Frames are handed to the file in large
//! writes (at 1 MiB, or when a sync is due), not one syscall per batch. [`TapeWriter::submit`]
//! returns at once with the sequence range of the batch; [`TapeWriter::append`] also waits until
//! the batch is durable under the policy. Under `fsync=always` and `interval:D` a committer
//! thread runs `fdatasync` outside the lock, so frames submitted while one runs are covered by
//! the next: group commit. Segments roll at `segment_bytes` or `segment_age`, and on a schema
//! change.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use super::codec::{BatchEncoder, time_range};
use super::format::{
    ChainHasher, Coding, Compression, FRAME_HEADER, Footer, FrameHeader, SegmentHeader, hex,
    parse_segment_name, segment_name,
};
use super::manifest::{Manifest, Record};
use super::segment::{self, Scanned};
use crate::durability::FsyncPolicy;
use crate::error::{Error, Result};
use crate::storage::Storage;
use crate::sync::lock;

/// Options of a tape writer.
#[derive(Debug, Clone)]
pub struct TapeOptions {
    /// Durability policy.
    pub fsync: FsyncPolicy,
    /// Payload compression.
    pub compression: Compression,
    /// The level of the compressor: zstd 1–22 (`None`: 3), xz presets 0–9 for
    /// [`Compression::CodedXz`] (`None`: 6). Higher levels make smaller frames
    /// more slowly; readers need nothing to read them (`tapedeck pack` uses this).
    pub zstd_level: Option<i32>,
    /// Roll to a new segment past this size.
    pub segment_bytes: u64,
    /// Roll to a new segment past this age.
    pub segment_age: Option<Duration>,
    /// Frame size in rows: batches submitted between two commits are joined into one frame,
    /// which is cut once it holds this many rows (so it may pass it by less than one batch; a
    /// batch of 512 rows or more, or a DAQ block, is a frame of its own). 1 keeps one frame
    /// per batch.
    pub frame_rows: usize,
    /// Accept a batch whose columns share nothing (but identity and time columns) with what
    /// the tape holds; by default such a batch is refused — it is almost always the wrong
    /// source or the wrong tape.
    pub allow_schema_change: bool,
    /// How long the writer waits for space when the disk is full — acknowledging nothing
    /// meanwhile, and going on by itself when space returns — before it stops with an `ENOSPC`
    /// error. `None`: as long as it takes. The default, zero, stops at once.
    pub disk_full_timeout: Option<Duration>,
}

impl Default for TapeOptions {
    fn default() -> Self {
        TapeOptions {
            fsync: FsyncPolicy::default(),
            compression: Compression::Zstd,
            zstd_level: None,
            segment_bytes: 256 << 20,
            segment_age: None,
            frame_rows: DEFAULT_FRAME_ROWS,
            allow_schema_change: false,
            disk_full_timeout: Some(Duration::ZERO),
        }
    }
}

/// What recovery found and did when the tape was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Recovery {
    /// Torn tails cut off: (segment, bytes).
    pub truncated: Vec<(String, u64)>,
    /// Corrupt middles quarantined: (segment, offset, end, rows lost).
    pub quarantined: Vec<(String, u64, u64, u64)>,
    /// Segments that had no footer and were sealed by recovery.
    pub resealed: Vec<String>,
    /// Rows on the tape after recovery.
    pub rows: u64,
}

impl Recovery {
    /// True when recovery had nothing to repair.
    pub fn is_clean(&self) -> bool {
        self.truncated.is_empty() && self.quarantined.is_empty() && self.resealed.is_empty()
    }
}

/// The segment being appended to.
struct OpenSegment {
    name: String,
    first_seq: u64,
    number: u64,
    schema: SchemaRef,
    encoder: BatchEncoder,
    /// Chain hash of the segment's bytes so far (fed as frames are encoded, while they are
    /// still in the cache; the committer only writes).
    hasher: ChainHasher,
    /// Bytes in the file plus bytes pending.
    bytes: u64,
    index: Vec<(u64, u64)>,
    /// Per frame of `index`, its event-time range (the footer keeps them: zone maps).
    times: Vec<Option<(i64, i64)>>,
    rows: u64,
    time: Option<(i64, i64)>,
    opened: Instant,
}

struct Inner {
    segment: Option<OpenSegment>,
    /// Batches submitted since the last frame was cut, with their first sequence number, rows
    /// and memory: the next frame ([`cut_frame`]).
    held: Vec<RecordBatch>,
    held_first: u64,
    held_rows: usize,
    held_bytes: usize,
    /// The payload of the one held batch, encoded by the caller ([`TapeWriter::submit_encoded`]),
    /// used when the frame is that batch alone.
    held_payload: Option<(Vec<u8>, Coding)>,
    pending: Vec<u8>,
    /// The committer's last written buffer, kept to be reused (its pages are already mapped).
    spare: Vec<u8>,
    /// Sequence number after the last submitted row.
    next_seq: u64,
    /// Rows whose bytes were handed to storage.
    written_seq: u64,
    /// Rows covered by an fdatasync.
    durable_seq: u64,
    next_segment: u64,
    prev_chain: [u8; 32],
    schema_version: u64,
    /// Schema of the last segment this writer opened (a change counts a new schema version).
    last_schema: Option<SchemaRef>,
    sync_wanted: bool,
    /// Pending bytes passed the write chunk: the committer should write them.
    write_wanted: bool,
    /// The committer is writing a buffer it took out of `pending` (without the lock).
    writing: bool,
    /// A failed write or sync: the writer refuses further work (nothing unacknowledged is
    /// reported durable).
    failed: Option<String>,
    /// The OS error number of that failure, when it was an I/O error.
    failed_os: Option<i32>,
    /// Bytes this writer added to the tape (headers, frames, footers), for summaries.
    bytes: u64,
    /// Since when the disk has been too full for the next write (the writer waits), what was
    /// free then and what was needed.
    disk_full: Option<(Instant, u64, u64)>,
    /// The disk's free space at the last look, and when that was.
    space_seen: Option<(u64, Instant)>,
    /// Bytes handed to storage since that look.
    written_since_look: u64,
    /// After a write failed with `ENOSPC`: not before this is it tried again.
    retry_at: Option<Instant>,
    /// Bytes of the open segment's file handed to storage, and covered by an fsync.
    seg_written: u64,
    seg_synced: u64,
    closing: bool,
}

struct Shared {
    storage: Arc<dyn Storage>,
    /// The tape's manifest journal.
    manifest: Manifest,
    options: TapeOptions,
    inner: Mutex<Inner>,
    /// Signalled when `durable_seq` moves or the writer fails.
    durable: Condvar,
    /// Signalled when the committer has work.
    work: Condvar,
    /// Signalled when the committer finishes a write.
    idle: Condvar,
    /// Publishes the acknowledged position to other processes (a tape on a directory).
    publisher: Mutex<Option<super::acked::Publisher>>,
    /// Held while retention trims the tape; taken by `shutdown` so that no trim runs once the
    /// writer (and with it the tape's lock) is gone.
    trimming: Mutex<()>,
    /// `Inner::durable_seq` as last published, readable without the lock: asking for the
    /// acknowledged position never waits behind a frame being compressed and hashed.
    acknowledged: AtomicU64,
}

/// Publishes `seq` as the acknowledged position: to [`TapeWatch::durable_seq`], and to readers
/// in other processes if this tape publishes one.
fn publish(shared: &Shared, seq: u64) {
    shared.acknowledged.fetch_max(seq, Ordering::Release);
    if let Some(p) = lock(&shared.publisher).as_mut() {
        p.publish(seq);
    }
}

/// The writer is waiting for space on a full disk (see [`TapeOptions::disk_full_timeout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskFull {
    /// How long it has been waiting.
    pub waited: Duration,
    /// Bytes free at the last look.
    pub free: u64,
    /// Bytes it waits for: the next write and the reserve (see [`SPACE_RESERVE`]).
    pub needed: u64,
}

/// Free space every write leaves on the disk beyond its own bytes — plus 32 bytes for each
/// frame of the open segment, its footer's index: the footer, the manifest's records of a seal
/// and of the next segment, and that segment's header fit in it, so a disk filling up stops
/// the writer between two frames — where it can wait and go on — never half way through
/// sealing a segment.
pub const SPACE_RESERVE: u64 = 64 << 10;
/// How often a writer waiting for space looks again.
const SPACE_POLL: Duration = Duration::from_millis(100);
/// Free space beyond what a write needs at which the writer trusts its last look for up to a
/// second (it counts what it wrote since); nearer to full it looks before every write.
const SPACE_MARGIN: u64 = 256 << 20;

/// Waits, the lock let go meanwhile, until the disk has room for `need` more bytes plus
/// [`SPACE_RESERVE`]; acknowledges nothing meanwhile. Fails — and stops the writer with an
/// `ENOSPC` error — once it has waited [`TapeOptions::disk_full_timeout`] (closing the writer
/// waits like any write). Storage that cannot say its free space is never waited for.
fn wait_for_space<'a>(
    shared: &'a Shared,
    mut inner: MutexGuard<'a, Inner>,
    need: u64,
    wakeup: &Condvar,
) -> (MutexGuard<'a, Inner>, Result<()>) {
    let footer = inner
        .segment
        .as_ref()
        .map_or(0, |seg| (seg.index.len() as u64).saturating_mul(32));
    let want = need.saturating_add(SPACE_RESERVE).saturating_add(footer);
    loop {
        if inner.failed.is_some() {
            let r = check_failed(shared, &inner);
            return (inner, r);
        }
        if inner.closing {
            // The writer is closed (the committer's last round): nothing is left to write.
            return (inner, Ok(()));
        }
        let retry_later = inner.retry_at.is_some_and(|t| Instant::now() < t);
        let trusted = inner.space_seen.is_some_and(|(free, at)| {
            at.elapsed() < Duration::from_secs(1)
                && free.saturating_sub(inner.written_since_look)
                    >= want.saturating_add(SPACE_MARGIN)
        });
        if trusted && !retry_later {
            return (inner, Ok(()));
        }
        let free = if retry_later {
            0
        } else {
            match shared.storage.free_space() {
                Some(free) => free,
                None => return (inner, Ok(())),
            }
        };
        if !retry_later {
            inner.space_seen = Some((free, Instant::now()));
            inner.written_since_look = 0;
            inner.retry_at = None;
        }
        if free >= want {
            // Still "full" until a write goes through ([`space_returned`]).
            return (inner, Ok(()));
        }
        let since = match inner.disk_full {
            Some((since, ..)) => since,
            None => {
                tracing::warn!(
                    "tape {}: the disk is full ({free} bytes free, {want} needed for the next write); acknowledging nothing until space returns{}",
                    shared.storage.describe("").display(),
                    match shared.options.disk_full_timeout {
                        None => String::new(),
                        Some(t) if t.is_zero() => " — not waiting: stopping".into(),
                        Some(t) => format!(" (waiting up to {:.1} s)", t.as_secs_f64()),
                    }
                );
                Instant::now()
            }
        };
        inner.disk_full = Some((since, free, want));
        let gave_up = shared
            .options
            .disk_full_timeout
            .is_some_and(|t| since.elapsed() >= t);
        // Never while the committer writes (a seal waiting here needs more room than it):
        // giving up cuts the file back, which must not race that write.
        if gave_up && !inner.writing {
            let waited = since.elapsed().as_secs_f64();
            let waited = if waited >= 0.05 {
                format!(" for {waited:.1} s")
            } else {
                String::new()
            };
            inner.failed = Some(if retry_later {
                format!(
                    "the disk stayed full{waited}: writing failed with `No space left on device`"
                )
            } else {
                format!(
                    "the disk stayed full{waited}: {free} bytes free, {want} needed for the next write and the reserve for sealing segments"
                )
            });
            inner.failed_os = Some(28); // ENOSPC
            if let Some(seg) = &inner.segment {
                // What was written and not acknowledged goes, as after any failed write.
                cut_unacknowledged(shared, &inner, &seg.name);
            }
            shared.durable.notify_all();
            shared.idle.notify_all();
            let r = check_failed(shared, &inner);
            return (inner, r);
        }
        inner = wakeup
            .wait_timeout(inner, SPACE_POLL)
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0);
    }
}

fn disk_full(shared: &Shared) -> Option<DiskFull> {
    let inner = lock(&shared.inner);
    let (since, free, needed) = inner.disk_full?;
    if inner.failed.is_some() {
        return None;
    }
    Some(DiskFull {
        waited: since.elapsed(),
        free,
        needed,
    })
}

/// A write went through: a writer that was waiting for space says it goes on.
fn space_returned(shared: &Shared, inner: &mut Inner) {
    if let Some((since, ..)) = inner.disk_full.take() {
        tracing::warn!(
            "tape {}: space on the disk again after {:.1} s; acknowledging rows again",
            shared.storage.describe("").display(),
            since.elapsed().as_secs_f64()
        );
    }
}

/// Rows per frame by default ([`TapeOptions::frame_rows`]).
pub const DEFAULT_FRAME_ROWS: usize = 65_536;
/// Memory of held batches at which a frame is cut whatever its rows (bounds a frame of wide
/// rows or DAQ blocks).
pub const FRAME_BYTES: usize = 8 << 20;
/// Rows of a batch that is written as a frame of its own rather than joined with others (its
/// frame overhead is already small; joining would only copy it).
pub const OWN_FRAME_ROWS: usize = 512;
/// Bytes gathered before they are handed to storage.
const WRITE_CHUNK: usize = 1 << 20;
/// Pending bytes at which appends wait for the committer (bounds memory).
const PENDING_LIMIT: usize = 64 << 20;
/// Under `--fsync never`, how often pending frames are handed to the OS (and acknowledged).
const NEVER_WRITE_INTERVAL: Duration = Duration::from_millis(10);

/// Appends batches to a tape; see the module docs.
pub struct TapeWriter {
    shared: Arc<Shared>,
    committer: Option<JoinHandle<()>>,
    recovery: Recovery,
    /// The tape's id (`TAPEID`).
    id: String,
    /// Keeps the directory's lock while the writer lives.
    _lock: Option<std::fs::File>,
}

impl std::fmt::Debug for TapeWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapeWriter").finish_non_exhaustive()
    }
}

/// Reads a writer's positions from another thread (progress displays).
#[derive(Clone)]
pub struct TapeWatch(Arc<Shared>);

impl std::fmt::Debug for TapeWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapeWatch").finish_non_exhaustive()
    }
}

impl TapeWatch {
    /// Removes the tape's oldest sealed segments as `retention` says, never the last one and
    /// never one holding a row at or after `protect_from` (the oldest cursor of the sinks fed
    /// from the tape); see [`super::retention`]. `apply: false` only says what would go.
    pub fn trim(
        &self,
        retention: &super::retention::Retention,
        protect_from: Option<u64>,
        apply: bool,
    ) -> Result<super::retention::TrimReport> {
        let _trimming = lock(&self.0.trimming);
        if lock(&self.0.inner).closing {
            // The writer is closing or closed: its lock may be someone else's by now.
            return Ok(super::retention::TrimReport::default());
        }
        super::retention::trim(
            self.0.storage.as_ref(),
            &self.0.manifest,
            retention,
            protect_from,
            crate::record::time::now_micros(),
            apply,
        )
    }

    /// Rewrites sealed segments into fewer segments of large frames, as `options` says; see
    /// [`super::compact`]. Runs beside appends (it never touches the open segment); each new
    /// segment is switched to while no trim runs.
    pub fn compact(
        &self,
        options: &super::compact::CompactOptions,
    ) -> Result<super::compact::CompactReport> {
        self.compact_with_progress(options, &mut |_| {})
    }

    /// [`TapeWatch::compact`], telling `progress` what is done so far after each new segment.
    pub fn compact_with_progress(
        &self,
        options: &super::compact::CompactOptions,
        progress: &mut dyn FnMut(&super::compact::CompactReport),
    ) -> Result<super::compact::CompactReport> {
        let closing = || lock(&self.0.inner).closing;
        if closing() {
            return Err(Error::Tape {
                path: self.0.storage.describe(""),
                message: "the tape's writer is closing: nothing compacted".into(),
            });
        }
        super::compact::compact(
            self.0.storage.as_ref(),
            &self.0.manifest,
            options,
            &self.0.trimming,
            &closing,
            progress,
        )
    }

    /// Rows acknowledged (durable under the policy).
    pub fn durable_seq(&self) -> u64 {
        self.0.acknowledged.load(Ordering::Acquire)
    }

    /// The writer is waiting for space on a full disk (acknowledging nothing), if it is.
    pub fn disk_full(&self) -> Option<DiskFull> {
        disk_full(&self.0)
    }

    /// Waits until every row below `seq` is durable under the fsync policy (forcing a sync
    /// rather than waiting for the interval); fails if the writer stopped after an I/O error.
    pub fn wait_durable(&self, seq: u64) -> Result<()> {
        wait_durable(&self.0, seq)
    }

    /// Sequence number the next row will get.
    pub fn next_seq(&self) -> u64 {
        lock(&self.0.inner).next_seq
    }

    /// Bytes this writer added to the tape so far (headers, frames, footers).
    pub fn bytes(&self) -> u64 {
        lock(&self.0.inner).bytes
    }

    /// How many segments the tape has had, the open one included: the next segment's number.
    pub fn segments(&self) -> u64 {
        lock(&self.0.inner).next_segment
    }

    /// Quarantines damage a reader found in a sealed segment, as recovery does for an open one:
    /// the damaged bytes are copied to `quarantine/` and a `quarantined` record (segment, bytes,
    /// sequence range, rows) goes into the manifest, so `verify` and `inspect` list it from then
    /// on. The bytes stay in the sealed segment (readers skip them by their CRC). Each range is
    /// recorded once; returns whether this call recorded it.
    pub fn quarantine(&self, damage: &super::reader::Unreadable) -> Result<bool> {
        let (Some(file), Some((offset, end))) = (&damage.segment, damage.bytes) else {
            return Ok(false);
        };
        let shared = &self.0;
        let inner = lock(&shared.inner);
        let storage = shared.storage.as_ref();
        let known = shared.manifest.with_records(|records| {
            records.iter().any(|r| {
                matches!(r, Record::Quarantined { file: f, offset: o, .. } if f == file && *o == offset)
            })
        });
        if known {
            return Ok(false);
        }
        let to = format!(
            "quarantine/{}.{offset}-{end}.bad",
            file.trim_end_matches(".tape")
        );
        quarantine_copy(storage, file, offset, end, &to)?;
        shared.manifest.append(&Record::Quarantined {
            file: file.clone(),
            offset,
            end,
            rows_from: damage.from,
            rows: damage.to.saturating_sub(damage.from),
            to,
        })?;
        drop(inner);
        Ok(true)
    }
}

/// The sequence range of an appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Sequence number of the batch's first row.
    pub first_seq: u64,
    /// Sequence number after its last row.
    pub end_seq: u64,
}

impl TapeWriter {
    /// Opens (creating if needed) the tape in directory `dir`, taking its lock and recovering it.
    pub fn open(dir: impl AsRef<std::path::Path>, options: TapeOptions) -> Result<TapeWriter> {
        let dir = dir.as_ref();
        if dir.exists() && !dir.is_dir() {
            return Err(Error::Tape {
                path: dir.to_path_buf(),
                message: "this is a file, not a tape directory; give a directory (it is created if missing), e.g. `--tape runs/tape`".into(),
            });
        }
        let storage = crate::storage::FsStorage::new(dir)
            .map_err(|e| Error::io("create directory", dir, e))?;
        let lock = take_lock(dir)?;
        let mut w = TapeWriter::open_storage(Arc::new(storage), options)?;
        w._lock = Some(lock);
        *crate::sync::lock(&w.shared.publisher) = Some(super::acked::Publisher::open(dir)?);
        publish(&w.shared, w.durable_seq());
        Ok(w)
    }

    /// Opens a tape on any storage (no directory lock; for tests and embedding).
    pub fn open_storage(storage: Arc<dyn Storage>, options: TapeOptions) -> Result<TapeWriter> {
        let manifest = Manifest::open(&storage)?;
        let (recovery, state) = recover(storage.as_ref(), &manifest)?;
        let id = super::id::read_or_create(storage.as_ref(), true)?.unwrap_or_default();
        let shared = Arc::new(Shared {
            storage,
            manifest,
            options: options.clone(),
            inner: Mutex::new(Inner {
                segment: None,
                held: Vec::new(),
                held_first: 0,
                held_rows: 0,
                held_bytes: 0,
                held_payload: None,
                pending: Vec::new(),
                spare: Vec::new(),
                next_seq: state.end_seq,
                written_seq: state.end_seq,
                durable_seq: state.end_seq,
                next_segment: state.next_segment,
                prev_chain: state.prev_chain,
                schema_version: state.schema_version,
                last_schema: state.last_schema.clone(),
                sync_wanted: false,
                write_wanted: false,
                writing: false,
                failed: None,
                failed_os: None,
                bytes: 0,
                disk_full: None,
                space_seen: None,
                written_since_look: 0,
                retry_at: None,
                seg_written: 0,
                seg_synced: 0,
                closing: false,
            }),
            durable: Condvar::new(),
            work: Condvar::new(),
            idle: Condvar::new(),
            publisher: Mutex::new(None),
            trimming: Mutex::new(()),
            acknowledged: AtomicU64::new(state.end_seq),
        });
        let committer = {
            let s = shared.clone();
            Some(
                std::thread::Builder::new()
                    .name("tape-commit".into())
                    .spawn(move || commit_loop(&s))
                    .map_err(|e| Error::io("start the commit thread for", "tape", e))?,
            )
        };
        Ok(TapeWriter {
            shared,
            committer,
            recovery,
            id,
            _lock: None,
        })
    }

    /// A handle that reads the acknowledged position while the writer is used elsewhere.
    pub fn watch(&self) -> TapeWatch {
        TapeWatch(self.shared.clone())
    }

    /// What recovery did when the tape was opened.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// The tape's id (see [`super::id`]).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Sequence number the next row will get (= rows on the tape, gaps included).
    pub fn next_seq(&self) -> u64 {
        lock(&self.shared.inner).next_seq
    }

    /// Bytes this writer added to the tape so far (headers, frames, footers).
    pub fn bytes(&self) -> u64 {
        lock(&self.shared.inner).bytes
    }

    /// Rows acknowledged so far (sequence numbers below this are durable under the policy).
    pub fn durable_seq(&self) -> u64 {
        self.shared.acknowledged.load(Ordering::Acquire)
    }

    /// The writer is waiting for space on a full disk (acknowledging nothing), if it is; see
    /// [`TapeOptions::disk_full_timeout`].
    pub fn disk_full(&self) -> Option<DiskFull> {
        disk_full(&self.shared)
    }

    /// Like [`TapeWriter::submit`], with the batch's payload already encoded by a
    /// [`BatchEncoder`](super::codec::BatchEncoder) of the tape's compression and level (as
    /// `tapedeck pack` has it after checking it): when the batch is a frame alone (as with
    /// `frame_rows` 1), that payload is written instead of encoding the batch again.
    pub(crate) fn submit_encoded(
        &self,
        batch: &RecordBatch,
        payload: Vec<u8>,
        coding: Coding,
    ) -> Result<Appended> {
        self.submit_offered(batch, Some((payload, coding)))
    }

    /// Adds a batch without waiting for durability; returns its sequence range.
    pub fn submit(&self, batch: &RecordBatch) -> Result<Appended> {
        self.submit_offered(batch, None)
    }

    /// [`TapeWriter::submit`] with the batch's payload when the caller has it: it goes down to
    /// [`hold`] with the batch, never through shared state another submitter could take it
    /// from.
    fn submit_offered(
        &self,
        batch: &RecordBatch,
        mut offered: Option<(Vec<u8>, Coding)>,
    ) -> Result<Appended> {
        if batch.num_rows() == 0 {
            let s = self.next_seq();
            return Ok(Appended {
                first_seq: s,
                end_seq: s,
            });
        }
        let shared = &self.shared;
        let inner = lock(&shared.inner);
        check_failed(shared, &inner)?;
        let (mut inner, result) = append_frame(shared, inner, batch, &mut offered);
        while inner.pending.len() > PENDING_LIMIT
            && inner.failed.is_none()
            && (inner.writing || inner.disk_full.is_some())
        {
            // The committer is behind, or waits for space: wait for it rather than grow
            // without bound.
            inner = shared
                .idle
                .wait_timeout(inner, SPACE_POLL)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        if let Err(e) = &result {
            inner.failed = Some(e.to_string());
            inner.failed_os = e.os_error();
            shared.durable.notify_all();
        }
        let appended = result?;
        match shared.options.fsync {
            // Under `always` the committer syncs as long as frames are pending, so a caller
            // that submits without waiting still gets acknowledgements, group-committed.
            FsyncPolicy::Always => {
                inner.sync_wanted = true;
                shared.work.notify_one();
            }
            FsyncPolicy::Interval(_) | FsyncPolicy::Never => shared.work.notify_one(),
        }
        Ok(appended)
    }

    /// Adds a batch and returns once it is durable under the policy.
    pub fn append(&self, batch: &RecordBatch) -> Result<Appended> {
        let a = self.submit(batch)?;
        if self.shared.options.fsync == FsyncPolicy::Always {
            self.wait_durable(a.end_seq)?;
        }
        Ok(a)
    }

    /// Waits until every row below `seq` is durable (forcing a sync).
    pub fn wait_durable(&self, seq: u64) -> Result<()> {
        wait_durable(&self.shared, seq)
    }

    /// Hands every submitted frame to the storage without waiting for an fsync (what the
    /// operating system then holds is lost by a power failure, not by a killed process).
    pub fn flush(&self) -> Result<()> {
        flush(&self.shared)
    }

    /// The error that stopped the writer, if one did (a failed write or fsync: ENOSPC, EIO).
    /// Rows submitted after [`TapeWriter::durable_seq`] were not acknowledged.
    pub fn failure(&self) -> Option<String> {
        lock(&self.shared.inner)
            .failed
            .clone()
            .filter(|m| m != ABANDONED)
    }

    /// Makes everything submitted durable, seals the open segment, and stops the committer.
    /// Fails if the writer stopped after an I/O error at any point (what was acknowledged
    /// before it stays on the tape; later rows were not acknowledged).
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    /// Stops the writer's thread without writing another byte — what a killed process leaves
    /// behind. For crash tests: abandon the writer, then crash the storage, then reopen.
    pub fn abandon(mut self) {
        {
            let mut inner = lock(&self.shared.inner);
            inner.failed = Some(ABANDONED.into());
            inner.closing = true;
            self.shared.work.notify_all();
            self.shared.durable.notify_all();
        }
        if let Some(t) = self.committer.take() {
            let _ = t.join();
        }
    }

    fn shutdown(&mut self) -> Result<()> {
        let result = {
            let shared = &self.shared;
            let inner = lock(&shared.inner);
            let (mut inner, r) = if inner.failed.is_none() {
                seal(shared, inner)
            } else {
                let r = check_failed(shared, &inner);
                (inner, r)
            };
            inner.closing = true;
            shared.work.notify_all();
            shared.durable.notify_all();
            r
        };
        if let Some(t) = self.committer.take() {
            let _ = t.join();
        }
        // A trim in flight finishes before the lock is let go; later ones see `closing`.
        drop(lock(&self.shared.trimming));
        publish(&self.shared, self.durable_seq());
        result
    }
}

impl Drop for TapeWriter {
    fn drop(&mut self) {
        if !lock(&self.shared.inner).closing {
            let _ = self.shutdown();
        }
    }
}

/// `failed` of a writer stopped on purpose by [`TapeWriter::abandon`].
const ABANDONED: &str = "abandoned";

/// Hands every submitted frame to the storage, once the committer is idle and the disk has room
/// (see [`TapeWriter::flush`]); under `never` that acknowledges them.
fn flush(shared: &Shared) -> Result<()> {
    let (mut inner, room) = idle_with_room(shared, lock(&shared.inner));
    room?;
    check_failed(shared, &inner)?;
    if let Err(e) = flush_pending(shared, &mut inner) {
        inner.failed = Some(e.to_string());
        inner.failed_os = e.os_error();
        shared.durable.notify_all();
        return Err(e);
    }
    if shared.options.fsync == FsyncPolicy::Never {
        inner.durable_seq = inner.durable_seq.max(inner.written_seq);
        publish(shared, inner.durable_seq);
        shared.durable.notify_all();
    }
    Ok(())
}

/// Waits until every row below `seq` is durable (forcing a sync); see
/// [`TapeWriter::wait_durable`].
fn wait_durable(shared: &Shared, seq: u64) -> Result<()> {
    if shared.options.fsync == FsyncPolicy::Never {
        // Written is acknowledged under `never`: hand everything to the OS now.
        return flush(shared);
    }
    let mut inner = lock(&shared.inner);
    while inner.durable_seq < seq {
        check_failed(shared, &inner)?;
        inner.sync_wanted = true;
        shared.work.notify_one();
        inner = shared
            .durable
            .wait(inner)
            .unwrap_or_else(PoisonError::into_inner);
    }
    Ok(())
}

fn check_failed(shared: &Shared, inner: &Inner) -> Result<()> {
    match &inner.failed {
        Some(msg) => Err(Error::TapeStopped {
            path: shared.storage.describe(""),
            message: format!(
                "the tape writer stopped after an I/O error ({msg}); rows up to sequence {} are on the tape, {} submitted after them were not acknowledged — free space or fix the disk, then record again (opening the tape recovers it)",
                inner.durable_seq,
                inner.next_seq.saturating_sub(inner.durable_seq)
            ),
            os_error: inner.failed_os,
        }),
        None => Ok(()),
    }
}

fn storage_err(shared: &Shared, name: &str, action: &'static str, e: std::io::Error) -> Error {
    Error::io(action, shared.storage.describe(name), e)
}

/// Waits until the committer is not writing (so the caller may write in order).
fn wait_idle<'a>(shared: &'a Shared, mut inner: MutexGuard<'a, Inner>) -> MutexGuard<'a, Inner> {
    while inner.writing {
        inner = shared
            .idle
            .wait(inner)
            .unwrap_or_else(PoisonError::into_inner);
    }
    inner
}

/// Waits until the committer is not writing and the disk has room for what is held and pending
/// (see [`wait_for_space`]): the caller may then write them itself.
fn idle_with_room<'a>(
    shared: &'a Shared,
    inner: MutexGuard<'a, Inner>,
) -> (MutexGuard<'a, Inner>, Result<()>) {
    let inner = wait_idle(shared, inner);
    let need = (inner.pending.len() as u64).saturating_add(inner.held_bytes as u64);
    let (inner, room) = wait_for_space(shared, inner, need, &shared.idle);
    // While it waited the committer may have started writing.
    (wait_idle(shared, inner), room)
}

/// Hashes and hands pending bytes to the storage, under the lock (the committer must be idle).
fn flush_pending(shared: &Shared, inner: &mut Inner) -> Result<()> {
    cut_frame(shared, inner)?;
    if inner.pending.is_empty() {
        inner.written_seq = inner.next_seq;
        return Ok(());
    }
    let Some(seg) = inner.segment.as_ref() else {
        return Ok(());
    };
    let name = seg.name.clone();
    if let Err(e) = shared.storage.append(&name, &inner.pending) {
        cut_unacknowledged(shared, inner, &name);
        return Err(storage_err(shared, &name, "write", e));
    }
    inner.seg_written += inner.pending.len() as u64;
    inner.written_since_look = inner
        .written_since_look
        .saturating_add(inner.pending.len() as u64);
    space_returned(shared, inner);
    inner.pending.clear();
    inner.written_seq = inner.next_seq;
    Ok(())
}

fn append_frame<'a>(
    shared: &'a Shared,
    inner: MutexGuard<'a, Inner>,
    batch: &RecordBatch,
    offered: &mut Option<(Vec<u8>, Coding)>,
) -> (MutexGuard<'a, Inner>, Result<Appended>) {
    let mut inner = inner;
    let r = append_frame_locked(shared, &mut inner, batch, offered);
    match r {
        Err(Roll) => {
            let (mut inner, sealed) = seal(shared, inner);
            if let Err(e) = sealed {
                return (inner, Err(e));
            }
            let r = start_and_append(shared, &mut inner, batch, offered);
            (inner, r)
        }
        Ok(r) => (inner, r),
    }
}

/// The open segment must be sealed before this batch can be appended.
struct Roll;

fn append_frame_locked(
    shared: &Shared,
    inner: &mut Inner,
    batch: &RecordBatch,
    offered: &mut Option<(Vec<u8>, Coding)>,
) -> std::result::Result<Result<Appended>, Roll> {
    let schema = batch.schema();
    let roll = match &inner.segment {
        None => true,
        Some(seg) => {
            seg.schema != schema
                || seg.bytes >= shared.options.segment_bytes
                || shared
                    .options
                    .segment_age
                    .is_some_and(|a| seg.opened.elapsed() >= a)
        }
    };
    if roll {
        // What is held belongs to the segment being sealed.
        return match cut_frame(shared, inner) {
            Ok(()) => Err(Roll),
            Err(e) => Ok(Err(e)),
        };
    }
    Ok(hold(shared, inner, batch, offered))
}

/// Starts a segment for `batch`'s schema (after a seal) and appends the batch.
fn start_and_append(
    shared: &Shared,
    inner: &mut Inner,
    batch: &RecordBatch,
    offered: &mut Option<(Vec<u8>, Coding)>,
) -> Result<Appended> {
    let schema = batch.schema();
    if let Some(held) = &inner.last_schema
        && *held != schema
        && !shared.options.allow_schema_change
        && crate::record::shared_data_columns(&schema, held).is_empty()
    {
        return Err(Error::Tape {
            path: shared.storage.describe(""),
            message: format!(
                "the tape holds rows with columns [{}]; these rows have [{}] — no data column in common, so this is probably another source or another tape. Record into a new tape, or pass --allow-schema-change to keep both on this one",
                crate::record::column_list(held),
                crate::record::column_list(&schema)
            ),
        });
    }
    if inner.last_schema.as_ref().is_some_and(|s| *s != schema) {
        inner.schema_version += 1;
    }
    inner.last_schema = Some(schema.clone());
    start_segment(shared, inner, &schema)?;
    hold(shared, inner, batch, offered)
}

/// Gives `batch` its sequence numbers and holds it for the next frame; cuts the frame when it
/// is full.
fn hold(
    shared: &Shared,
    inner: &mut Inner,
    batch: &RecordBatch,
    offered: &mut Option<(Vec<u8>, Coding)>,
) -> Result<Appended> {
    let rows = batch.num_rows();
    if u32::try_from(rows).is_err() {
        return Err(Error::InvalidOption {
            option: "batch",
            message: "a batch of more than 4,294,967,295 rows".into(),
        });
    }
    let bytes = held_size(batch);
    // A batch this big is a frame of its own: joining it would only copy it. DAQ blocks are
    // never joined: a delivery splits a frame back into blocks by `block_index` alone, and two
    // devices' blocks may share one.
    let own_frame = rows >= OWN_FRAME_ROWS || crate::record::Block::is_wide_block_batch(batch);
    let offered = offered.take();
    if own_frame {
        cut_frame(shared, inner)?;
    }
    let first_seq = inner.next_seq;
    if inner.held.is_empty() {
        inner.held_first = first_seq;
        inner.held_payload = offered;
    } else {
        // Joined with others: the frame is encoded whole.
        inner.held_payload = None;
    }
    inner.held.push(batch.clone());
    inner.held_rows = inner.held_rows.saturating_add(rows);
    inner.held_bytes = inner.held_bytes.saturating_add(bytes);
    inner.next_seq += rows as u64;
    // A frame is cut when full, and before the held rows would take the segment past its
    // size (so segments roll near `segment_bytes` however rows are flushed).
    let segment_full = inner.segment.as_ref().is_some_and(|seg| {
        seg.bytes.saturating_add(inner.held_bytes as u64) >= shared.options.segment_bytes
    });
    if own_frame
        || inner.held_rows >= shared.options.frame_rows.max(1)
        || inner.held_bytes >= FRAME_BYTES
        || segment_full
    {
        cut_frame(shared, inner)?;
    }
    Ok(Appended {
        first_seq,
        end_seq: inner.next_seq,
    })
}

/// The bytes of `batch`'s rows: what joining it copies. Not `get_array_memory_size`, which
/// counts the whole buffers a sliced batch shares (a 64-row slice of a large batch would count
/// as all of it, and frames would be cut after a few batches).
fn held_size(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            let data = c.to_data();
            data.get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .fold(0, usize::saturating_add)
}

/// Encodes the held batches as one frame of the open segment, into the pending bytes.
fn cut_frame(shared: &Shared, inner: &mut Inner) -> Result<()> {
    if inner.held.is_empty() {
        return Ok(());
    }
    let held = std::mem::take(&mut inner.held);
    let offered = inner.held_payload.take();
    let first_seq = inner.held_first;
    inner.held_rows = 0;
    inner.held_bytes = 0;
    let batch = match held.as_slice() {
        [one] => one.clone(),
        [first, ..] => arrow_select::concat::concat_batches(&first.schema(), &held)
            .map_err(|e| Error::arrow("joining batches into a tape frame", e))?,
        [] => return Ok(()),
    };
    let rows = u32::try_from(batch.num_rows()).map_err(|_| Error::InvalidOption {
        option: "batch",
        message: "a frame of more than 4,294,967,295 rows".into(),
    })?;
    let Some(seg) = inner.segment.as_mut() else {
        return Err(Error::InvalidOption {
            option: "tape",
            message: "no open segment".into(),
        });
    };
    let start = inner.pending.len();
    let time = time_range(&batch);
    let mut header = FrameHeader {
        compression: seg.encoder.compression(),
        payload_len: 0,
        rows,
        first_seq,
        time,
        time_deltas: false,
    };
    let too_large = || Error::InvalidOption {
        option: "batch",
        message: format!("a frame payload of more than {} bytes", u32::MAX),
    };
    match offered {
        Some((payload, coding)) if held.len() == 1 => {
            header.payload_len = u32::try_from(payload.len()).map_err(|_| too_large())?;
            header.time_deltas = coding == Coding::TimeDeltas;
            header.encode_into(&payload, &mut inner.pending);
        }
        _ => {
            // Arrow's writer writes the payload straight after the header's place in
            // `pending`: one copy of the frame's bytes fewer than encoding it apart.
            inner.pending.resize(start + FRAME_HEADER, 0);
            let coding = match seg.encoder.encode_into(&batch, &mut inner.pending) {
                Ok(c) => c,
                Err(e) => {
                    inner.pending.truncate(start);
                    return Err(Error::arrow("encoding a batch for the tape", e));
                }
            };
            let payload_len = inner.pending.len() - start - FRAME_HEADER;
            if u32::try_from(payload_len).is_err() {
                inner.pending.truncate(start);
                return Err(too_large());
            }
            header.time_deltas = coding == Coding::TimeDeltas;
            header.finish_in_place(&mut inner.pending, start);
        }
    }
    let frame_len = (inner.pending.len() - start) as u64;
    inner.bytes += frame_len;
    seg.hasher.update(&inner.pending[start..]);
    seg.index.push((seg.bytes, first_seq));
    seg.times.push(time);
    seg.bytes += frame_len;
    seg.rows += u64::from(rows);
    seg.time = match (seg.time, time) {
        (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
        (x, y) => x.or(y),
    };
    if inner.pending.len() >= WRITE_CHUNK {
        // The committer writes, off this thread.
        inner.write_wanted = true;
        shared.work.notify_one();
    }
    Ok(())
}

fn start_segment(shared: &Shared, inner: &mut Inner, schema: &SchemaRef) -> Result<()> {
    let encoder = BatchEncoder::with_level(
        schema,
        shared.options.compression,
        shared.options.zstd_level,
    )
    .map_err(|e| Error::arrow("encoding the tape schema", e))?;
    let header = SegmentHeader {
        first_seq: inner.next_seq,
        segment: inner.next_segment,
        prev_chain: inner.prev_chain,
        schema: encoder.schema_message().to_vec(),
    };
    let bytes = header.encode();
    let name = segment_name(inner.next_seq);
    create_segment_file(shared, &name)?;
    inner.seg_written = 0;
    inner.seg_synced = 0;
    let mut hasher = ChainHasher::new(&inner.prev_chain);
    hasher.update(&bytes);
    inner.bytes += bytes.len() as u64;
    inner.pending.extend_from_slice(&bytes);
    inner.segment = Some(OpenSegment {
        name,
        first_seq: inner.next_seq,
        number: inner.next_segment,
        schema: schema.clone(),
        encoder,
        hasher,
        bytes: bytes.len() as u64,
        index: Vec::new(),
        times: Vec::new(),
        rows: 0,
        time: None,
        opened: Instant::now(),
    });
    inner.next_segment += 1;
    Ok(())
}

/// After a failed write or fsync, cuts the open segment back to what was acknowledged (what the
/// last good fsync covered; under `never`, what was written whole). Linux reports a failed
/// writeback once and then marks the pages clean: bytes it could not write stay readable in the
/// page cache until they are evicted or the machine restarts, so a recovery in a new process
/// would otherwise seal — and acknowledge — rows that are not on the disk. Best effort: if the
/// disk refuses this too, recovery after a restart finds a torn tail instead.
fn cut_unacknowledged(shared: &Shared, inner: &Inner, name: &str) {
    let keep = if shared.options.fsync == FsyncPolicy::Never {
        inner.seg_written
    } else {
        inner.seg_synced
    };
    if let Err(e) = shared.storage.truncate(name, keep) {
        tracing::warn!(
            "{}: cannot cut the unacknowledged tail after a failed write ({e}); the next recovery will",
            shared.storage.describe(name).display()
        );
    }
}

/// Creates a segment's file — never reusing a name, so a segment is only ever appended to by
/// the writer that created it — and makes its directory entry durable before any row in it can
/// be acknowledged.
fn create_segment_file(shared: &Shared, name: &str) -> Result<()> {
    let storage = shared.storage.as_ref();
    storage.create_new(name).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::Tape {
                path: storage.describe(name),
                message: "a segment with this name exists already, so its rows would overlap the new ones; the tape's segments do not follow each other — run `tapedeck verify` on it and move the file aside".into(),
            }
        } else {
            storage_err(shared, name, "create", e)
        }
    })?;
    if shared.options.fsync != FsyncPolicy::Never {
        storage
            .sync_dir("")
            .map_err(|e| storage_err(shared, "", "fsync the directory", e))?;
    }
    Ok(())
}

/// Writes the footer of the open segment, fsyncs it, and records it in the manifest. Waits for
/// the committer first, so the footer follows every frame.
fn seal<'a>(
    shared: &'a Shared,
    inner: MutexGuard<'a, Inner>,
) -> (MutexGuard<'a, Inner>, Result<()>) {
    let (mut inner, room) = idle_with_room(shared, inner);
    if let Err(e) = room {
        return (inner, Err(e));
    }
    let r = seal_idle(shared, &mut inner);
    (inner, r)
}

fn seal_idle(shared: &Shared, inner: &mut Inner) -> Result<()> {
    if inner.segment.is_none() {
        return Ok(());
    }
    flush_pending(shared, inner)?;
    let Some(seg) = inner.segment.take() else {
        return Ok(());
    };
    let chain = seg.hasher.finish();
    let footer = Footer {
        rows: seg.rows,
        min_time: seg.time.map_or(i64::MAX, |t| t.0),
        max_time: seg.time.map_or(i64::MIN, |t| t.1),
        index: seg.index,
        times: Some(seg.times),
        chain,
    };
    let bytes = footer.encode();
    let io = |action, e| storage_err(shared, &seg.name, action, e);
    if let Err(e) = shared.storage.append(&seg.name, &bytes) {
        cut_unacknowledged(shared, inner, &seg.name);
        return Err(io("write", e));
    }
    if let Err(e) = shared.storage.sync(&seg.name) {
        cut_unacknowledged(shared, inner, &seg.name);
        return Err(io("fsync", e));
    }
    space_returned(shared, inner);
    inner.durable_seq = inner.durable_seq.max(inner.written_seq);
    publish(shared, inner.durable_seq);
    inner.bytes += bytes.len() as u64;
    shared.durable.notify_all();
    inner.prev_chain = chain;
    shared.manifest.append(&Record::Sealed {
        file: seg.name,
        segment: seg.number,
        first_seq: seg.first_seq,
        rows: seg.rows,
        bytes: seg.bytes + bytes.len() as u64,
        chain: hex(&chain),
        min_time: seg.time.map(|t| t.0),
        max_time: seg.time.map(|t| t.1),
        schema: inner.schema_version,
    })
}

fn commit_loop(shared: &Shared) {
    let interval = match shared.options.fsync {
        FsyncPolicy::Interval(d) => Some(d),
        // Under `never` frames are still handed to the OS promptly, so readers (live
        // deliveries, `tail --follow`) see them; only the fsync is left out.
        FsyncPolicy::Never => Some(NEVER_WRITE_INTERVAL),
        FsyncPolicy::Always => None,
    };
    let fsyncs = shared.options.fsync != FsyncPolicy::Never;
    let mut last_sync = Instant::now();
    let mut inner = lock(&shared.inner);
    loop {
        if inner.closing {
            return;
        }
        let unsynced = inner.durable_seq < inner.next_seq;
        let sync_due =
            inner.sync_wanted || (unsynced && interval.is_some_and(|d| last_sync.elapsed() >= d));
        if inner.failed.is_some() || !(sync_due || inner.write_wanted) {
            let wait = match interval {
                // A failed writer only waits to be closed.
                Some(d) if unsynced && inner.failed.is_none() => d
                    .saturating_sub(last_sync.elapsed())
                    .max(Duration::from_micros(100)),
                _ => Duration::from_secs(1),
            };
            inner = shared
                .work
                .wait_timeout(inner, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
            continue;
        }
        inner.write_wanted = false;
        if sync_due {
            inner.sync_wanted = false;
        }
        // What was submitted since the last round becomes one frame; then room on the disk
        // for the pending bytes, or a wait for it (acknowledging nothing meanwhile). The wait
        // lets go of the lock: rows submitted during it are cut into a frame after it, or the
        // fsync below would acknowledge them unwritten.
        let mut cut = cut_frame(shared, &mut inner);
        if cut.is_ok() && !inner.pending.is_empty() {
            let need = inner.pending.len() as u64;
            let (guard, room) = wait_for_space(shared, inner, need, &shared.work);
            inner = guard;
            if room.is_err() {
                continue;
            }
            cut = cut_frame(shared, &mut inner);
        }
        if let Err(e) = cut {
            inner.failed = Some(e.to_string());
            inner.failed_os = e.os_error();
            shared.durable.notify_all();
            continue;
        }
        // Take the pending bytes; write and fsync them without the lock, so appends go on
        // meanwhile (and are covered by the next round: group commit).
        let spare = std::mem::take(&mut inner.spare);
        let mut buf = std::mem::replace(&mut inner.pending, spare);
        let target = inner.next_seq;
        let seg = inner.segment.as_ref().map(|s| s.name.clone());
        inner.writing = true;
        drop(inner);
        let mut result: std::io::Result<()> = Ok(());
        let mut file = String::new();
        let mut written = 0u64;
        // The write itself failed (not the fsync): nothing it wrote was acknowledged.
        let mut write_failed = false;
        let seg_name = seg.clone();
        if let Some(name) = seg {
            file = shared.storage.describe(&name).display().to_string();
            if !buf.is_empty() {
                result = shared.storage.append(&name, &buf);
                if result.is_ok() {
                    written = buf.len() as u64;
                } else {
                    write_failed = true;
                }
            }
            if result.is_ok() && sync_due && fsyncs {
                result = shared.storage.sync(&name);
            }
        }
        inner = lock(&shared.inner);
        inner.writing = false;
        inner.written_since_look = inner.written_since_look.saturating_add(written);
        let waits = shared.options.disk_full_timeout != Some(Duration::ZERO);
        let no_space = waits
            && write_failed
            && result.as_ref().is_err_and(|e| {
                e.raw_os_error() == Some(28) || e.kind() == std::io::ErrorKind::StorageFull
            });
        if no_space && let Some(name) = &seg_name {
            // The disk filled up under the write (something else took the space): what the
            // write put in the file is cut off, its bytes go back in front of the pending ones
            // and wait for space like any others; nothing written before it is touched (a
            // failed write, unlike a failed fsync, leaves the page cache trustworthy).
            if let Err(e) = shared.storage.truncate(name, inner.seg_written) {
                inner.failed = Some(format!(
                    "cannot write `{file}` (the disk is full) nor cut off what the write left: {e}"
                ));
                inner.failed_os = e.raw_os_error();
                shared.durable.notify_all();
            } else {
                let mut later = std::mem::take(&mut inner.pending);
                buf.append(&mut later);
                inner.pending = buf;
                inner.spare = later;
                inner.write_wanted = true;
                if sync_due {
                    inner.sync_wanted = true;
                }
                inner.retry_at = Some(Instant::now() + SPACE_POLL);
                if inner.disk_full.is_none() {
                    let needed = (inner.pending.len() as u64).saturating_add(SPACE_RESERVE);
                    inner.disk_full = Some((Instant::now(), 0, needed));
                }
            }
            shared.idle.notify_all();
            continue;
        }
        buf.clear();
        if buf.capacity() <= PENDING_LIMIT {
            inner.spare = buf;
        }
        match result {
            Ok(()) => {
                if written > 0 {
                    space_returned(shared, &mut inner);
                }
                inner.seg_written += written;
                if sync_due && fsyncs {
                    inner.seg_synced = inner.seg_written;
                }
                inner.written_seq = inner.written_seq.max(target);
                if sync_due || !fsyncs {
                    inner.durable_seq = inner.durable_seq.max(target);
                    last_sync = Instant::now();
                }
                publish(shared, inner.durable_seq);
            }
            Err(e) => {
                inner.seg_written += written;
                if let Some(name) = &seg_name {
                    cut_unacknowledged(shared, &inner, name);
                }
                inner.failed = Some(format!("cannot write or fsync `{file}`: {e}"));
                inner.failed_os = e.raw_os_error();
            }
        }
        shared.idle.notify_all();
        shared.durable.notify_all();
    }
}

/// The tape's state after recovery.
struct Recovered {
    end_seq: u64,
    next_segment: u64,
    prev_chain: [u8; 32],
    schema_version: u64,
    /// Schema of the tape's last segment (what the tape holds now).
    last_schema: Option<SchemaRef>,
}

/// Recovers a tape; see the module docs.
fn recover(storage: &dyn Storage, manifest: &Manifest) -> Result<(Recovery, Recovered)> {
    let records = manifest.records();
    let schema_version = records
        .iter()
        .filter_map(|r| match r {
            Record::Sealed { schema, .. } => Some(*schema),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    // Segments the manifest calls trimmed that a crash left behind, and what a crash left of a
    // compaction: the files it replaced (committed) or its own (not committed).
    super::retention::finish_removals(storage, &records)?;
    super::compact::finish(storage, &records)?;
    let names = segment::list_live(storage)?;
    let mut report = Recovery::default();
    // After retention the tape goes on from the last removed segment, even if every segment
    // after it is gone (a crash before a new segment's header was durable).
    let trimmed = super::retention::trimmed_before(&records);
    let mut state = Recovered {
        end_seq: trimmed.as_ref().map_or(0, |(end, _)| *end),
        next_segment: 0,
        prev_chain: trimmed
            .as_ref()
            .and_then(|(_, chain)| super::format::unhex(chain))
            .unwrap_or([0; 32]),
        schema_version,
        last_schema: None,
    };
    // The last kept segment's schema message, decoded once at the end.
    let mut last_schema: Option<Vec<u8>> = None;
    for (i, (_, name)) in names.iter().enumerate() {
        let last = i + 1 == names.len();
        if let Some(sealed) = segment::open_indexed(storage, name)? {
            if sealed.footer.as_ref().is_some_and(|f| f.rows == 0) {
                // A sealed segment with no rows (left by an older version after a failed
                // write): the next segment would take its name, so it goes.
                remove_empty(storage, manifest, name, sealed.file_len, &mut report)?;
                state.next_segment = state.next_segment.max(sealed.header.segment + 1);
                continue;
            }
            state.end_seq = sealed.end_seq_from_footer();
            state.next_segment = sealed.header.segment + 1;
            state.prev_chain = sealed.footer.as_ref().map_or([0; 32], |f| f.chain);
            report.rows += sealed.footer.as_ref().map_or(0, |f| f.rows);
            last_schema = Some(sealed.header.schema.clone());
            continue;
        }
        let scanned = match segment::scan(storage, name)? {
            Ok(s) => s,
            Err(bad) => {
                if last && !segment::any_frame(storage, name, bad.file_len)? {
                    // A header that never made it to disk whole (cut short, or torn into
                    // zeros) and no frame after it: frames follow the header, so nothing in
                    // this file was ever acknowledged.
                    storage
                        .remove(name)
                        .map_err(|e| Error::io("remove", storage.describe(name), e))?;
                    report.truncated.push((name.clone(), bad.file_len));
                    manifest.append(&Record::Truncated {
                        file: name.clone(),
                        offset: 0,
                        bytes: bad.file_len,
                    })?;
                } else {
                    // A damaged header: the segment cannot be decoded. Its bytes are kept in
                    // quarantine and the tape goes on without it.
                    quarantine_file(storage, manifest, name, bad.file_len, &mut report)?;
                }
                continue;
            }
        };
        if !scanned.frames.is_empty() {
            last_schema = Some(scanned.header.schema.clone());
        }
        reseal(storage, manifest, &scanned, &mut report, &mut state)?;
    }
    state.last_schema = last_schema
        .and_then(|m| super::codec::BatchDecoder::new(&m).ok())
        .map(|d| d.schema());
    Ok((report, state))
}

/// Moves a whole undecodable segment into `quarantine/`.
fn quarantine_file(
    storage: &dyn Storage,
    manifest: &Manifest,
    name: &str,
    len: u64,
    report: &mut Recovery,
) -> Result<()> {
    let io = |action, e| Error::io(action, storage.describe(name), e);
    let to = format!("quarantine/{name}.bad");
    quarantine_copy(storage, name, 0, len, &to)?;
    storage.remove(name).map_err(|e| io("remove", e))?;
    manifest.append(&Record::Quarantined {
        file: name.to_string(),
        offset: 0,
        end: len,
        rows_from: parse_segment_name(name).unwrap_or(0),
        rows: 0,
        to,
    })?;
    tracing::error!(
        "segment {name}: its header is damaged; the whole file was moved to quarantine"
    );
    report.quarantined.push((name.to_string(), 0, len, 0));
    Ok(())
}

/// Copies damaged bytes into `quarantine/` durably (file and directory entry) before the
/// segment is changed.
fn quarantine_copy(storage: &dyn Storage, name: &str, from: u64, end: u64, to: &str) -> Result<()> {
    let io = |action, e| Error::io(action, storage.describe(to), e);
    if storage.len(to).map_err(|e| io("read", e))?.is_some() {
        // A copy from an earlier, interrupted recovery: start it again.
        storage.remove(to).map_err(|e| io("remove", e))?;
    }
    segment::copy_range(storage, name, from, end, to)?;
    storage.sync(to).map_err(|e| io("fsync", e))?;
    storage
        .sync_dir(crate::storage::dir_of(to))
        .map_err(|e| io("fsync the directory of", e))
}

/// Removes a segment that holds no rows, and records it in the manifest.
fn remove_empty(
    storage: &dyn Storage,
    manifest: &Manifest,
    name: &str,
    len: u64,
    report: &mut Recovery,
) -> Result<()> {
    storage
        .remove(name)
        .map_err(|e| Error::io("remove", storage.describe(name), e))?;
    manifest.append(&Record::Truncated {
        file: name.to_string(),
        offset: 0,
        bytes: len,
    })?;
    tracing::warn!(
        "segment {name}: held no rows (a crash or a full disk while it was started); removed"
    );
    report.truncated.push((name.to_string(), len));
    Ok(())
}

/// Quarantines gaps, truncates a torn tail, and writes a footer for a scanned segment.
fn reseal(
    storage: &dyn Storage,
    manifest: &Manifest,
    s: &Scanned,
    report: &mut Recovery,
    state: &mut Recovered,
) -> Result<()> {
    let name = &s.name;
    let io = |action, e| Error::io(action, storage.describe(name), e);
    for gap in &s.gaps {
        let to = format!(
            "quarantine/{}.{}-{}.bad",
            name.trim_end_matches(".tape"),
            gap.offset,
            gap.end
        );
        quarantine_copy(storage, name, gap.offset, gap.end, &to)?;
        manifest.append(&Record::Quarantined {
            file: name.clone(),
            offset: gap.offset,
            end: gap.end,
            rows_from: gap.rows_from,
            rows: gap.rows,
            to,
        })?;
        tracing::warn!(
            "segment {name}: bytes {}..{} are damaged; {} rows from sequence {} are lost and were quarantined",
            gap.offset,
            gap.end,
            gap.rows,
            gap.rows_from
        );
        report
            .quarantined
            .push((name.clone(), gap.offset, gap.end, gap.rows));
    }
    if s.file_len > s.valid_end {
        let cut = s.file_len - s.valid_end;
        storage
            .truncate(name, s.valid_end)
            .map_err(|e| io("truncate", e))?;
        manifest.append(&Record::Truncated {
            file: name.clone(),
            offset: s.valid_end,
            bytes: cut,
        })?;
        tracing::warn!(
            "segment {name}: cut a torn tail of {cut} bytes at offset {} (never acknowledged)",
            s.valid_end
        );
        report.truncated.push((name.clone(), cut));
    }
    if s.frames.is_empty() {
        // Nothing in it was ever acknowledged (frames follow the header, and there are none):
        // the file goes, so the next segment — which starts at the same sequence number and
        // so takes the same name — is created new rather than appended after this header.
        remove_empty(storage, manifest, name, s.valid_end, report)?;
        state.next_segment = state.next_segment.max(s.header.segment + 1);
        return Ok(());
    }
    // Seal: the chain covers the bytes as they are now (gaps included).
    let chain = segment::chain_hash(storage, name, &s.header.prev_chain, s.valid_end)?;
    let time = s.time_range();
    let rows = s.rows();
    let footer = Footer {
        rows: s.end_seq() - s.header.first_seq,
        min_time: time.map_or(i64::MAX, |t| t.0),
        max_time: time.map_or(i64::MIN, |t| t.1),
        index: s
            .frames
            .iter()
            .map(|f| (f.offset, f.header.first_seq))
            .collect(),
        times: Some(s.frames.iter().map(|f| f.header.time).collect()),
        chain,
    };
    let fb = footer.encode();
    storage.append(name, &fb).map_err(|e| io("write", e))?;
    storage.sync(name).map_err(|e| io("fsync", e))?;
    manifest.append(&Record::Sealed {
        file: name.clone(),
        segment: s.header.segment,
        first_seq: s.header.first_seq,
        rows,
        bytes: s.valid_end + fb.len() as u64,
        chain: hex(&chain),
        min_time: time.map(|t| t.0),
        max_time: time.map(|t| t.1),
        schema: state.schema_version,
    })?;
    report.resealed.push(name.clone());
    report.rows += rows;
    state.end_seq = s.end_seq();
    state.next_segment = s.header.segment + 1;
    state.prev_chain = chain;
    Ok(())
}

/// Takes the directory's writer lock, or says who holds it.
fn take_lock(dir: &std::path::Path) -> Result<std::fs::File> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let path = dir.join("LOCK");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    // A reader asking whether a writer runs holds a shared lock for a moment (`acked::
    // writer_running`): a refusal is retried for up to 100 ms before it means another writer.
    let mut locked = f.try_lock();
    for _ in 0..20 {
        if !matches!(locked, Err(std::fs::TryLockError::WouldBlock)) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        locked = f.try_lock();
    }
    if locked.is_err() {
        let mut holder = String::new();
        let _ = f.read_to_string(&mut holder);
        let pid = holder
            .trim()
            .strip_prefix("pid ")
            .unwrap_or("unknown")
            .to_string();
        return Err(Error::TapeLocked {
            path: dir.to_path_buf(),
            pid,
        });
    }
    let io = |e| Error::io("write", &path, e);
    f.set_len(0).map_err(io)?;
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    writeln!(f, "pid {}", std::process::id()).map_err(io)?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Int64Array};

    /// Issue 17, item 2: the acknowledged position is answered while the writer's lock is
    /// held (as while a large frame is compressed and hashed), not after.
    #[test]
    fn durable_seq_is_answered_while_the_writer_is_busy() {
        let storage = Arc::new(crate::storage::MemStorage::new());
        let w = TapeWriter::open_storage(storage, TapeOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let n: ArrayRef = Arc::new(Int64Array::from_iter_values(0..10));
        let batch = RecordBatch::try_from_iter([("n", n)]).unwrap_or_else(|e| panic!("{e}"));
        w.append(&batch).unwrap_or_else(|e| panic!("{e}"));
        w.wait_durable(10).unwrap_or_else(|e| panic!("{e}"));
        let watch = w.watch();
        let busy = lock(&w.shared.inner);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(watch.durable_seq());
        });
        let answered = rx.recv_timeout(Duration::from_secs(10));
        drop(busy);
        assert_eq!(
            answered.ok(),
            Some(10),
            "durable_seq waited for the writer's lock"
        );
        assert_eq!(w.durable_seq(), 10);
        w.close().unwrap_or_else(|e| panic!("{e}"));
    }
}
