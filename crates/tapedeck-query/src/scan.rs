//! The tape as a DataFusion table: [`TapeTable`] plans a scan of a [`Snapshot`] — segments and
//! frames outside the filters' time and `_seq` ranges left unread, only the projected columns
//! decoded — as parallel partitions of frames.
//!
//! Every frame read has its CRC32C checked before it is decoded. A frame that fails, or rows the
//! snapshot lists as damaged inside the range a query reads, end the query with
//! [`QueryError::Damaged`] naming the segment, byte offset and sequence range — unless the
//! table was opened with `skip_damage`, when they are left out and counted in [`ScanStats`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions, UInt64Array, new_null_array};
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use tapedeck::tape::codec::decode_projected;
use tapedeck::tape::format::{FRAME_HEADER, FrameHeader};

use crate::error::{QueryError, Result};
use crate::prune::Bounds;
use crate::snapshot::{AsOf, FrameInfo, SEQ_COLUMN, Snapshot};

/// How a tape is opened as a table.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TapeTableOptions {
    /// Which state of the tape to read.
    pub as_of: AsOf,
    /// Leave damaged rows out (counted in [`ScanStats`]) instead of failing the query.
    pub skip_damage: bool,
    /// Re-check the hash chain of every segment a query reads; refuse to answer over a broken
    /// one.
    pub verify: bool,
}

impl TapeTableOptions {
    /// Reads the tape as it stood at `as_of`.
    pub fn as_of(mut self, as_of: AsOf) -> Self {
        self.as_of = as_of;
        self
    }

    /// Leaves damaged rows out instead of failing.
    pub fn skip_damage(mut self, skip: bool) -> Self {
        self.skip_damage = skip;
        self
    }

    /// Re-checks the hash chain of the segments each query reads.
    pub fn verify(mut self, verify: bool) -> Self {
        self.verify = verify;
        self
    }
}

/// What the scans of a [`TapeTable`] read, summed over its queries since it was opened (or
/// since [`TapeTable::refresh`]).
#[derive(Debug, Default)]
pub struct ScanStats {
    segments: AtomicU64,
    segments_pruned: AtomicU64,
    frames: AtomicU64,
    frames_pruned: AtomicU64,
    bytes_read: AtomicU64,
    rows_decoded: AtomicU64,
    rows_damaged: AtomicU64,
    rows_moved: AtomicU64,
}

/// A reading of [`ScanStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ScanReport {
    /// Segments in the snapshot, per scan.
    pub segments: u64,
    /// Segments left unread: outside the filters' ranges.
    pub segments_pruned: u64,
    /// Frames in the segments read.
    pub frames: u64,
    /// Frames left unread (zone maps).
    pub frames_pruned: u64,
    /// Bytes read from segment files (frame headers and frames).
    pub bytes_read: u64,
    /// Bytes of the snapshot's segment files, per scan.
    pub bytes_total: u64,
    /// Rows decoded.
    pub rows_decoded: u64,
    /// Damaged rows left out (with `skip_damage`).
    pub rows_damaged: u64,
    /// Rows read from where they are now because a compaction replaced the segment the
    /// snapshot listed while the query ran.
    pub rows_moved: u64,
}

impl ScanStats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn read(&self, bytes_total: u64, scans: u64) -> ScanReport {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ScanReport {
            segments: get(&self.segments),
            segments_pruned: get(&self.segments_pruned),
            frames: get(&self.frames),
            frames_pruned: get(&self.frames_pruned),
            bytes_read: get(&self.bytes_read),
            bytes_total: bytes_total.saturating_mul(scans.max(1)),
            rows_decoded: get(&self.rows_decoded),
            rows_damaged: get(&self.rows_damaged),
            rows_moved: get(&self.rows_moved),
        }
    }
}

struct State {
    snapshot: Arc<Snapshot>,
    stats: Arc<ScanStats>,
    scans: u64,
}

/// A tape as a DataFusion table; see the module docs.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let rt = tokio::runtime::Builder::new_current_thread().build()?;
/// # rt.block_on(async {
/// use datafusion::prelude::SessionContext;
/// use tapedeck::recorder::Recorder;
/// use tapedeck::record::Row;
///
/// let dir = tempfile::tempdir()?;
/// let tape = dir.path().join("tape");
/// let mut recorder = Recorder::builder().tape(&tape).open()?;
/// recorder.write_rows((0..100).map(|i| Row::new().with("device", "A").with("value", i as f64)))?;
/// recorder.finish()?;
///
/// let ctx = SessionContext::new();
/// tapedeck_query::register_tape(&ctx, "tape", &tape)?;
/// let batches = ctx
///     .sql("SELECT count(*) AS n, max(value) AS top FROM tape WHERE _seq >= 50")
///     .await?
///     .collect()
///     .await?;
/// let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)?.to_string();
/// assert!(text.contains("| 50 | 99.0 |"), "{text}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok(())
/// # }
/// ```
pub struct TapeTable {
    dir: std::path::PathBuf,
    /// The tape's storage when it was opened from one ([`TapeTable::open_storage`]).
    storage: Option<Arc<dyn tapedeck::tape::storage::Storage>>,
    options: TapeTableOptions,
    state: Mutex<State>,
}

impl std::fmt::Debug for TapeTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapeTable")
            .field("dir", &self.dir)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl TapeTable {
    /// Opens the tape in `dir` as a table, with a snapshot taken now.
    pub fn open(dir: impl AsRef<std::path::Path>, options: TapeTableOptions) -> Result<TapeTable> {
        let dir = dir.as_ref().to_path_buf();
        let snapshot = Arc::new(Snapshot::open(&dir, options.as_of)?);
        Ok(TapeTable {
            dir,
            storage: None,
            options,
            state: Mutex::new(State {
                snapshot,
                stats: Arc::default(),
                scans: 0,
            }),
        })
    }

    /// Opens the tape held by `storage` as a table ([`Snapshot::open_storage`]).
    pub fn open_storage(
        storage: Arc<dyn tapedeck::tape::storage::Storage>,
        options: TapeTableOptions,
    ) -> Result<TapeTable> {
        let snapshot = Arc::new(Snapshot::open_storage(storage.clone(), options.as_of)?);
        Ok(TapeTable {
            dir: storage.describe(""),
            storage: Some(storage),
            options,
            state: Mutex::new(State {
                snapshot,
                stats: Arc::default(),
                scans: 0,
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The snapshot queries read now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state().snapshot.clone()
    }

    /// Takes a new snapshot (rows acknowledged since are seen by the next query) and resets
    /// the statistics. The schema may have grown: plan queries after refreshing.
    pub fn refresh(&self) -> Result<()> {
        let snapshot = Arc::new(match &self.storage {
            Some(storage) => Snapshot::open_storage(storage.clone(), self.options.as_of)?,
            None => Snapshot::open(&self.dir, self.options.as_of)?,
        });
        let mut s = self.state();
        s.snapshot = snapshot;
        s.stats = Arc::default();
        s.scans = 0;
        Ok(())
    }

    /// What the scans since the last refresh read.
    pub fn stats(&self) -> ScanReport {
        let s = self.state();
        s.stats.read(s.snapshot.bytes(), s.scans)
    }

    /// Plans one scan: prunes, checks damage and the chain, splits frames into partitions.
    fn plan(
        &self,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
        target_partitions: usize,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (snap, stats) = {
            let mut s = self.state();
            s.scans += 1;
            (s.snapshot.clone(), s.stats.clone())
        };
        let schema = snap.schema();
        let projection: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..schema.fields().len()).collect(),
        };
        let out_schema = Arc::new(schema.project(&projection).map_err(|e| {
            QueryError::Engine(format!("projection does not fit the tape's schema: {e}"))
        })?);
        let bounds = Bounds::from_filters(filters, snap.time_column(), SEQ_COLUMN);
        // The rows to read: the filters' `_seq` range within the snapshot.
        let seq_lo = bounds
            .seq
            .lo
            .map_or(0, |l| u64::try_from(l.max(0)).unwrap_or(u64::MAX));
        let seq_end = bounds
            .seq
            .hi
            .map_or(snap.end(), |h| {
                u64::try_from(h.saturating_add(1).max(0)).unwrap_or(u64::MAX)
            })
            .min(snap.end());

        if seq_lo >= seq_end {
            // `_seq BETWEEN 10 AND 5`, or a range past the snapshot's end: nothing to read.
            return Ok(Arc::new(EmptyExec::new(out_schema)));
        }
        let mut work: Vec<(usize, FrameInfo)> = Vec::new();
        for (k, s) in snap.segments.iter().enumerate() {
            ScanStats::add(&stats.segments, 1);
            let seq_out = s.end_seq <= seq_lo || s.first_seq >= seq_end;
            let time_out = !bounds.time.is_open()
                && s.same_time_column
                && match s.time {
                    Some((a, b)) => bounds.time.excludes(i128::from(a), i128::from(b)),
                    // No event time in the segment: every row's is null, no time filter passes.
                    None => true,
                };
            if seq_out || time_out {
                ScanStats::add(&stats.segments_pruned, 1);
                continue;
            }
            if self.options.verify {
                snap.check_chain(k)?;
            }
            let frames = if !bounds.time.is_open() && s.same_time_column {
                let (frames, header_bytes) = snap.frame_times(k)?;
                ScanStats::add(&stats.bytes_read, header_bytes);
                frames
            } else {
                s.frames.clone()
            };
            ScanStats::add(&stats.frames, frames.len() as u64);
            for f in frames {
                let seq_out = f.end_seq() <= seq_lo || f.first_seq >= seq_end;
                let time_out = !bounds.time.is_open()
                    && s.same_time_column
                    && f.time
                        .is_none_or(|(a, b)| bounds.time.excludes(i128::from(a), i128::from(b)));
                if seq_out || time_out {
                    ScanStats::add(&stats.frames_pruned, 1);
                } else {
                    work.push((k, f));
                }
            }
        }
        // Damage inside the range read fails the query before anything is read.
        for d in &snap.damage {
            if d.seq_to > seq_lo && d.seq_from < seq_end {
                if self.options.skip_damage {
                    let rows = d.seq_to.min(seq_end) - d.seq_from.max(seq_lo);
                    ScanStats::add(&stats.rows_damaged, rows);
                } else {
                    return Err(QueryError::Damaged {
                        tape: snap.dir().to_path_buf(),
                        segment: d.segment.clone(),
                        offset: d.offset,
                        seq_from: d.seq_from,
                        seq_to: d.seq_to,
                        problem: d.problem.clone(),
                    });
                }
            }
        }
        if work.is_empty() {
            return Ok(Arc::new(EmptyExec::new(out_schema)));
        }
        let parts = split(work, target_partitions.max(1));
        let partitions: Vec<Arc<dyn PartitionStream>> = parts
            .into_iter()
            .map(|frames| {
                Arc::new(FramePartition {
                    snapshot: snap.clone(),
                    frames: Arc::new(frames),
                    projection: projection.clone(),
                    schema: out_schema.clone(),
                    window: (seq_lo, seq_end),
                    limit,
                    skip_damage: self.options.skip_damage,
                    stats: stats.clone(),
                }) as Arc<dyn PartitionStream>
            })
            .collect();
        let exec = StreamingTableExec::try_new(out_schema, partitions, None, [], false, limit)
            .map_err(QueryError::from_datafusion)?;
        Ok(Arc::new(exec))
    }
}

/// Splits the frames to read into at most `n` runs of about equal rows, in order.
fn split(work: Vec<(usize, FrameInfo)>, n: usize) -> Vec<Vec<(usize, FrameInfo)>> {
    let total: u64 = work.iter().map(|(_, f)| u64::from(f.rows)).sum();
    let n = n.min(work.len()).max(1);
    let per = total.div_ceil(n as u64).max(1);
    let mut parts = vec![Vec::new()];
    let mut rows = 0u64;
    for w in work {
        if rows >= per && parts.len() < n {
            parts.push(Vec::new());
            rows = 0;
        }
        rows += u64::from(w.1.rows);
        if let Some(last) = parts.last_mut() {
            last.push(w);
        }
    }
    parts
}

#[async_trait]
impl TableProvider for TapeTable {
    fn schema(&self) -> SchemaRef {
        self.snapshot().schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        let snap = self.snapshot();
        Ok(filters
            .iter()
            .map(|f| {
                if Bounds::understands(f, snap.time_column(), SEQ_COLUMN) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let partitions = state.config().target_partitions();
        Ok(self.plan(projection, filters, limit, partitions)?)
    }
}

/// One partition of a scan: a run of frames, read and decoded in order.
#[derive(Debug, Clone)]
struct FramePartition {
    snapshot: Arc<Snapshot>,
    frames: Arc<Vec<(usize, FrameInfo)>>,
    /// Columns of the snapshot's schema to produce.
    projection: Vec<usize>,
    schema: SchemaRef,
    /// Rows outside `[from, to)` are cut from the batches.
    window: (u64, u64),
    limit: Option<usize>,
    skip_damage: bool,
    stats: Arc<ScanStats>,
}

impl PartitionStream for FramePartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let reader = FrameReader {
            part: self.clone(),
            next: 0,
            rows: 0,
            chunk: None,
            slicing: None,
            pending: Vec::new(),
            pending_rows: 0,
            batch_rows: ctx.session_config().batch_size().max(1),
            done: false,
        };
        Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures_util::stream::iter(reader),
        ))
    }
}

/// Bytes read from a segment at a time: many small frames come in one `pread`.
const CHUNK_BYTES: u64 = 1 << 20;

/// Bytes of a segment read at once, and where they start.
struct Chunk {
    segment: usize,
    start: u64,
    bytes: arrow_buffer::Buffer,
}

/// Reads a partition's frames in order, a chunk of the segment at a time, and hands them to
/// the engine in batches of about the session's batch size (frames of a few dozen rows — a
/// recorder flushing often — would otherwise cost the engine its per-batch overhead each).
struct FrameReader {
    part: FramePartition,
    next: usize,
    rows: usize,
    chunk: Option<Chunk>,
    /// A batch larger than the session's batch size, and how much of it is handed out.
    slicing: Option<(RecordBatch, usize)>,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    batch_rows: usize,
    done: bool,
}

/// The header of `frame` (of segment `k`) at the start of `bytes`: `Ok(Err(_))` if it is
/// damaged, `Err` if it has a format version this build does not read — most likely written
/// by a newer tapedeck, so not skipped as damage.
fn frame_header(
    snap: &Snapshot,
    k: usize,
    frame: &FrameInfo,
    bytes: &[u8],
) -> Result<std::result::Result<FrameHeader, FrameProblem>> {
    match FrameHeader::decode(bytes) {
        Ok(h) => Ok(Ok(h)),
        Err(tapedeck::tape::format::FormatError::Version(v)) => {
            Err(snap.newer_frame(k, frame.offset, v))
        }
        Err(e) => Ok(Err(FrameProblem::Damaged(format!(
            "the frame fails its check: {e}"
        )))),
    }
}

/// Why `frame_bytes` has no frame to give.
enum FrameProblem {
    /// The bytes are damaged: what is wrong.
    Damaged(String),
    /// The segment was removed since the snapshot listed it (a compaction moved its rows).
    Gone,
}

impl FrameReader {
    /// The whole frame at `frame.offset` of segment `k` (header, payload, CRC), from the chunk
    /// in hand or a new one; `Err` with what is wrong if it does not check out.
    fn frame_bytes(
        &mut self,
        j: usize,
        k: usize,
        frame: &FrameInfo,
    ) -> Result<std::result::Result<(FrameHeader, arrow_buffer::Buffer), FrameProblem>> {
        let damaged = FrameProblem::Damaged;
        let snap = self.part.snapshot.clone();
        let seg = &snap.segments[k];
        // At most three looks: the chunk in hand; a chunk read from the frame on (which may
        // end inside a frame longer than a chunk, the segment's last one say); the whole frame.
        for attempt in 0..3 {
            let in_hand = self.chunk.as_ref().and_then(|c| {
                let at = frame.offset.checked_sub(c.start)?;
                (c.segment == k && at.saturating_add(FRAME_HEADER as u64) <= c.bytes.len() as u64)
                    .then_some((c, at as usize))
            });
            if let Some((c, at)) = in_hand {
                let header = match frame_header(&snap, k, frame, &c.bytes[at..])? {
                    Ok(h) => h,
                    Err(problem) => return Ok(Err(problem)),
                };
                let len = header.frame_len();
                if at + len <= c.bytes.len() {
                    let bytes = c.bytes.slice_with_length(at, len);
                    return Ok(match header.check(&bytes) {
                        Ok(_) => Ok((header, bytes)),
                        Err(e) => Err(damaged(format!("the frame fails its check: {e}"))),
                    });
                }
                if attempt == 2 {
                    // The whole frame was read from its start and it still does not fit: the
                    // header's length runs past what the segment holds.
                    return Ok(Err(damaged(format!(
                        "the frame fails its check: its length ({len} bytes) runs past the \
                         segment's frames"
                    ))));
                }
            }
            // Read a chunk from this frame on: at least its header, at most to the segment's
            // last frame.
            let room = seg.limit.saturating_sub(frame.offset);
            if room < FRAME_HEADER as u64 {
                return Ok(Err(damaged(
                    "the frame lies past the segment's frames".into(),
                )));
            }
            let want = match in_hand {
                // The frame is longer than a chunk: read all of it.
                Some((c, at)) => FrameHeader::decode(&c.bytes[at..])
                    .map_or(CHUNK_BYTES, |h| h.frame_len() as u64)
                    .max(CHUNK_BYTES),
                None => self.run_end(j).saturating_sub(frame.offset),
            }
            .clamp(FRAME_HEADER as u64, room);
            let want_len = want as usize;
            let mut buf = match self.reclaim() {
                Some(mut buf) => {
                    if buf.len() < want_len {
                        buf.resize(want_len, 0);
                    }
                    buf
                }
                // Fresh zeroed pages from the system, not zeroed again here.
                None => vec![0u8; want_len],
            };
            if let Err(e) = snap
                .storage
                .read_at(&seg.name, frame.offset, &mut buf[..want_len])
            {
                if e.kind() == std::io::ErrorKind::NotFound {
                    // Removed since the snapshot listed it: its rows are read where they are
                    // now (`next_frame`).
                    return Ok(Err(FrameProblem::Gone));
                }
                return Err(
                    tapedeck::Error::io("read", snap.storage.describe(&seg.name), e).into(),
                );
            }
            ScanStats::add(&self.part.stats.bytes_read, want);
            self.chunk = Some(Chunk {
                segment: k,
                start: frame.offset,
                bytes: arrow_buffer::Buffer::from_vec(buf).slice_with_length(0, want_len),
            });
        }
        Ok(Err(damaged("the frame cannot be read whole".into())))
    }

    /// Memory for the next chunk: the chunk in hand's own when no batch decoded from it is
    /// alive any more (the engine has consumed them). Reading into fresh memory costs a page
    /// fault and zeroing per 4 KiB, about as much as the read itself.
    fn reclaim(&mut self) -> Option<Vec<u8>> {
        self.chunk.take()?.bytes.into_vec::<u8>().ok()
    }

    /// Where the run of wanted frames that starts with work item `j` ends in its segment (the
    /// start of the first frame after it that is not wanted), read at most a chunk ahead: a
    /// query that wants a few frames reads those, not the frames pruned around them.
    fn run_end(&self, j: usize) -> u64 {
        let frames = &self.part.frames;
        let (k, first) = frames[j];
        let seg = &self.part.snapshot.segments[k];
        let Ok(mut p) = seg
            .frames
            .binary_search_by_key(&first.first_seq, |f| f.first_seq)
        else {
            return seg.limit.min(first.offset.saturating_add(CHUNK_BYTES));
        };
        let mut jj = j;
        loop {
            let Some(after) = seg.frames.get(p + 1) else {
                // The segment's last frame in the snapshot: its end is not known here.
                return seg.limit.min(
                    first
                        .offset
                        .saturating_add(CHUNK_BYTES)
                        .max(seg.frames[p].offset + 1),
                );
            };
            if after.offset.saturating_sub(first.offset) >= CHUNK_BYTES {
                return after.offset;
            }
            match frames.get(jj + 1) {
                Some(&(k2, f2)) if k2 == k && f2.first_seq == after.first_seq => {
                    jj += 1;
                    p += 1;
                }
                _ => return after.offset,
            }
        }
    }

    /// The next decoded frame's rows, `None` at the end of the partition.
    fn next_frame(&mut self) -> Result<Option<RecordBatch>> {
        while let Some(&(k, frame)) = self.part.frames.get(self.next) {
            let j = self.next;
            self.next += 1;
            let batch = match self.frame_bytes(j, k, &frame)? {
                Ok((header, bytes)) => self.part.decode(k, &frame, &header, &bytes)?,
                Err(FrameProblem::Gone) => self.part.decode_moved(k, &frame)?,
                Err(FrameProblem::Damaged(problem)) => self
                    .part
                    .damage(&frame, self.part.damaged(k, &frame, problem))?,
            };
            if batch.is_some() {
                return Ok(batch);
            }
        }
        Ok(None)
    }

    /// The pending frames (each smaller than the session's batch size) as one batch.
    fn flush(&mut self) -> Option<datafusion::error::Result<RecordBatch>> {
        if self.pending.is_empty() {
            return None;
        }
        let batches = std::mem::take(&mut self.pending);
        self.pending_rows = 0;
        Some(
            arrow_select::concat::concat_batches(&self.part.schema, &batches)
                .map_err(|e| DataFusionError::ArrowError(Box::new(e), None)),
        )
    }

    /// The next slice of the batch being handed out in slices, if any. The batch is let go
    /// with its last slice, so the chunk it was decoded from can be read into again.
    fn slice(&mut self) -> Option<datafusion::error::Result<RecordBatch>> {
        let (batch, at) = self.slicing.take()?;
        let len = self.batch_rows.min(batch.num_rows().saturating_sub(at));
        let piece = batch.slice(at, len);
        if at + len < batch.num_rows() {
            self.slicing = Some((batch, at + len));
        }
        Some(Ok(piece))
    }
}

impl Iterator for FrameReader {
    type Item = datafusion::error::Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.slicing.is_some() {
            return self.slice();
        }
        while !self.done {
            if self.part.limit.is_some_and(|l| self.rows >= l) {
                self.done = true;
                break;
            }
            match self.next_frame() {
                Ok(Some(batch)) if batch.num_rows() >= self.batch_rows => {
                    // A frame of at least a batch (65,536 rows, say) is not copied into a
                    // join: the frames pending go out first, then it in slices of the batch
                    // size, over which the engine's hash tables and accumulators stay in cache.
                    self.rows += batch.num_rows();
                    self.slicing = Some((batch, 0));
                    return self.flush().or_else(|| self.slice());
                }
                Ok(Some(batch)) => {
                    self.rows += batch.num_rows();
                    self.pending_rows += batch.num_rows();
                    self.pending.push(batch);
                    if self.pending_rows >= self.batch_rows {
                        return self.flush();
                    }
                }
                Ok(None) => self.done = true,
                Err(e) => {
                    // One error ends the partition (the rows before it are not handed out:
                    // the query fails).
                    self.done = true;
                    self.pending.clear();
                    return Some(Err(DataFusionError::from(e)));
                }
            }
        }
        self.flush()
    }
}

impl FramePartition {
    fn damaged(&self, k: usize, frame: &FrameInfo, problem: String) -> QueryError {
        QueryError::Damaged {
            tape: self.snapshot.dir().to_path_buf(),
            segment: self.snapshot.segments[k].name.clone(),
            offset: frame.offset,
            seq_from: frame.first_seq,
            seq_to: frame.end_seq(),
            problem,
        }
    }

    /// Decodes one checked frame (`bytes`: header, payload, CRC) into the output schema; `None`
    /// if it holds no row of the window (or is damaged and damage is skipped).
    fn decode(
        &self,
        k: usize,
        frame: &FrameInfo,
        header: &FrameHeader,
        bytes: &arrow_buffer::Buffer,
    ) -> Result<Option<RecordBatch>> {
        let snap = &self.snapshot;
        let seg = &snap.segments[k];
        if header.first_seq != frame.first_seq || header.rows != frame.rows {
            return self.damage(
                frame,
                self.damaged(
                    k,
                    frame,
                    "the frame does not match the segment's index".into(),
                ),
            );
        }
        // The frame's bytes become the batch's buffers: no copy of the payload.
        let payload = bytes.slice_with_length(FRAME_HEADER, header.payload_len as usize);
        // The segment columns to decode, in the order of the output.
        let wanted: Vec<usize> = self
            .projection
            .iter()
            .filter_map(|&c| seg.columns.get(c).copied().flatten())
            .collect();
        let decoded = match decode_projected(&seg.schema, &payload, &wanted, header.coding()) {
            Ok(b) => b,
            Err(e) => {
                return self.damage(
                    frame,
                    self.damaged(k, frame, format!("the frame does not decode: {e}")),
                );
            }
        };
        self.assemble(k, frame, decoded)
    }

    /// The rows of `frame` of segment `k` after the segment was removed under the query (a
    /// compaction replaced it — the rows are in the new segment, with the same schema — or
    /// retention trimmed it, which is an error naming the first row left): read by sequence
    /// number from wherever the tape holds them now.
    fn decode_moved(&self, k: usize, frame: &FrameInfo) -> Result<Option<RecordBatch>> {
        let snap = &self.snapshot;
        let seg = &snap.segments[k];
        let end = frame.first_seq.saturating_add(u64::from(frame.rows));
        let reader = tapedeck::tape::TapeReader::open_storage(
            snap.storage.clone(),
            tapedeck::tape::StartAt::Seq(frame.first_seq),
        )?
        .until(Some(end));
        let mut batches = Vec::new();
        let mut next = frame.first_seq;
        for item in reader {
            let (first, batch) = item?;
            if first != next {
                break;
            }
            next = first.saturating_add(batch.num_rows() as u64);
            batches.push(batch);
        }
        let gone = |what: String| {
            QueryError::from(tapedeck::Error::Tape {
                path: snap.storage.describe(&seg.name),
                message: format!(
                    "the segment was removed while the query read it, and {what}: run the query again"
                ),
            })
        };
        if next != end {
            return Err(gone(format!(
                "rows {next}..{end} are not on the tape any more"
            )));
        }
        let Some(first) = batches.first() else {
            return Err(gone("its rows were not found".into()));
        };
        let whole = arrow_select::concat::concat_batches(&first.schema(), &batches)
            .map_err(|e| gone(format!("its rows do not join: {e}")))?;
        let wanted: Vec<usize> = self
            .projection
            .iter()
            .filter_map(|&c| seg.columns.get(c).copied().flatten())
            .collect();
        ScanStats::add(&self.stats.rows_moved, u64::from(frame.rows));
        let decoded = whole.project(&wanted).map_err(|e| {
            gone(format!(
                "its rows no longer have the segment's columns: {e}"
            ))
        })?;
        self.assemble(k, frame, decoded)
    }

    /// A frame's decoded columns (`decoded`, the projection's segment columns in order) as a
    /// batch of the query's schema, cut to the scan's window.
    fn assemble(
        &self,
        k: usize,
        frame: &FrameInfo,
        decoded: RecordBatch,
    ) -> Result<Option<RecordBatch>> {
        let snap = &self.snapshot;
        let seg = &snap.segments[k];
        let n = decoded.num_rows();
        if n != frame.rows as usize {
            return self.damage(
                frame,
                self.damaged(
                    k,
                    frame,
                    format!("the frame holds {n} rows, its header says {}", frame.rows),
                ),
            );
        }
        ScanStats::add(&self.stats.rows_decoded, u64::from(frame.rows));
        let seq_column = snap.schema().fields().len() - 1;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.projection.len());
        let mut next_decoded = 0;
        for (i, &c) in self.projection.iter().enumerate() {
            let field = self.schema.field(i);
            if c == seq_column {
                let first = frame.first_seq;
                columns.push(Arc::new(UInt64Array::from_iter_values(
                    (0..n as u64).map(|r| first.saturating_add(r)),
                )));
            } else if seg.columns.get(c).copied().flatten().is_some() {
                columns.push(decoded.column(next_decoded).clone());
                next_decoded += 1;
            } else {
                columns.push(new_null_array(field.data_type(), n));
            }
        }
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        let batch = match RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)
        {
            Ok(b) => b,
            Err(e) => {
                return self.damage(
                    frame,
                    self.damaged(
                        k,
                        frame,
                        format!("the frame's columns do not fit the tape's schema: {e}"),
                    ),
                );
            }
        };
        // Cut to the window: the snapshot's end (exact) and the `_seq` filter (conservative).
        let (from, to) = self.window;
        let skip = from.saturating_sub(frame.first_seq).min(n as u64) as usize;
        let keep_to = to.saturating_sub(frame.first_seq).min(n as u64) as usize;
        if keep_to <= skip {
            return Ok(None);
        }
        Ok(Some(batch.slice(skip, keep_to - skip)))
    }

    fn damage(&self, frame: &FrameInfo, e: QueryError) -> Result<Option<RecordBatch>> {
        if self.skip_damage {
            ScanStats::add(&self.stats.rows_damaged, u64::from(frame.rows));
            Ok(None)
        } else {
            Err(e)
        }
    }
}
