//! Recently decoded frames, shared by the readers of one tape in one process.
//!
//! A recorder with several sinks runs one delivery per sink, each with its own reader; close
//! together, they read the same frames within moments of each other. Without sharing, each of
//! them reads, checks and decompresses every frame again. This cache keeps the last frames
//! decoded (64 MiB of Arrow memory by default; `TAPEDECK_FRAME_CACHE_MB`, 0 turns it off), so a
//! frame is read and decoded once for all readers that keep up, while a reader far behind the
//! newest frame any reader decoded reads on its own and does not push the others' frames out.
//!
//! So a frame is CRC-checked once per process while it is kept: damage that reaches the disk
//! after that is met by the next process (or by a reader far behind), not by readers the
//! cache serves — they get the rows as they were written.
//!
//! What it guarantees: a hit is the batch a reader would have decoded from the same frame. Keys
//! are the tape's id (`TAPEID`: a tape deleted and made again under the same path is another
//! tape), the segment file (never reused for other rows: segment and compaction names are
//! new each time) and the frame's byte offset; a hit is taken only when its first sequence
//! number and row count match the frame's index entry. Only frames that decoded (their CRC
//! checked out) are kept.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use arrow_array::RecordBatch;

/// How far behind the newest frame decoded (in rows) a reader's frames are still kept.
const WINDOW_ROWS: u64 = 1 << 20;
/// The default bound on the Arrow memory of the cached batches.
const DEFAULT_BYTES: usize = 64 << 20;

type Key = (Arc<str>, Arc<str>, u64);

#[derive(Default)]
struct State {
    frames: HashMap<Key, (u64, RecordBatch, usize)>,
    /// Insertion order, oldest first (evicted first).
    order: VecDeque<Key>,
    bytes: usize,
    /// Per tape id: the end of the newest frame decoded.
    newest: HashMap<Arc<str>, u64>,
    hits: u64,
}

/// The cache; see the module docs.
pub struct FrameCache {
    capacity: usize,
    state: Mutex<State>,
}

impl std::fmt::Debug for FrameCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameCache")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// The process's cache, sized by `TAPEDECK_FRAME_CACHE_MB` (default 64; 0: no caching).
pub fn global() -> &'static FrameCache {
    static CACHE: OnceLock<FrameCache> = OnceLock::new();
    CACHE.get_or_init(|| {
        let capacity = std::env::var("TAPEDECK_FRAME_CACHE_MB")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .map_or(DEFAULT_BYTES, |mb| mb.saturating_mul(1 << 20));
        FrameCache::new(capacity)
    })
}

impl FrameCache {
    /// A cache holding at most `capacity` bytes of Arrow memory (0: nothing is kept).
    pub fn new(capacity: usize) -> FrameCache {
        FrameCache {
            capacity,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The batch of the frame at `offset` of `segment` on tape `tape`, if it is kept and holds
    /// `rows` rows from `first_seq`.
    pub fn get(
        &self,
        tape: &Arc<str>,
        segment: &Arc<str>,
        offset: u64,
        first_seq: u64,
        rows: usize,
    ) -> Option<RecordBatch> {
        if self.capacity == 0 {
            return None;
        }
        let mut s = self.state();
        let key = (tape.clone(), segment.clone(), offset);
        let hit = s
            .frames
            .get(&key)
            .filter(|(first, batch, _)| *first == first_seq && batch.num_rows() == rows)
            .map(|(_, batch, _)| batch.clone());
        if hit.is_some() {
            s.hits += 1;
        }
        hit
    }

    /// Keeps `batch`, the rows `first_seq..` of the frame at `offset` of `segment` on tape
    /// `tape` — unless it lies more than a window behind the newest frame kept for the tape.
    pub fn put(
        &self,
        tape: &Arc<str>,
        segment: &Arc<str>,
        offset: u64,
        first_seq: u64,
        batch: &RecordBatch,
    ) {
        if self.capacity == 0 {
            return;
        }
        let bytes = batch.get_array_memory_size();
        if bytes > self.capacity / 4 {
            return;
        }
        let end = first_seq.saturating_add(batch.num_rows() as u64);
        let mut s = self.state();
        let newest = s.newest.entry(tape.clone()).or_insert(0);
        if end.saturating_add(WINDOW_ROWS) < *newest {
            // Far behind the readers that keep up: read on its own.
            return;
        }
        *newest = (*newest).max(end);
        let key = (tape.clone(), segment.clone(), offset);
        if s.frames.contains_key(&key) {
            return;
        }
        s.frames
            .insert(key.clone(), (first_seq, batch.clone(), bytes));
        s.order.push_back(key);
        s.bytes = s.bytes.saturating_add(bytes);
        while s.bytes > self.capacity {
            let Some(old) = s.order.pop_front() else {
                break;
            };
            if let Some((_, _, b)) = s.frames.remove(&old) {
                s.bytes = s.bytes.saturating_sub(b);
            }
        }
    }

    /// Forgets every frame: the next reads go to the disk (after a tape was repaired or
    /// damaged by hand, or in tests that play a new process).
    pub fn clear(&self) {
        let mut s = self.state();
        s.frames.clear();
        s.order.clear();
        s.newest.clear();
        s.bytes = 0;
    }

    /// Lookups answered from the cache so far.
    pub fn hits(&self) -> u64 {
        self.state().hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Int64Array};

    fn batch(first: i64, n: i64) -> RecordBatch {
        let a: ArrayRef = Arc::new(Int64Array::from_iter_values(first..first + n));
        RecordBatch::try_from_iter([("n", a)]).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_hit_needs_the_same_tape_segment_offset_and_rows_and_memory_stays_bounded() {
        let cache = FrameCache::new(1 << 20);
        let (t, u): (Arc<str>, Arc<str>) = ("tape-a".into(), "tape-b".into());
        let seg: Arc<str> = "seg-00000000000000000000.tape".into();
        cache.put(&t, &seg, 64, 0, &batch(0, 100));
        assert!(cache.get(&t, &seg, 64, 0, 100).is_some());
        assert!(cache.get(&u, &seg, 64, 0, 100).is_none(), "another tape");
        assert!(cache.get(&t, &seg, 65, 0, 100).is_none(), "another frame");
        assert!(cache.get(&t, &seg, 64, 1, 100).is_none(), "other rows");
        assert!(cache.get(&t, &seg, 64, 0, 99).is_none(), "other rows");
        assert_eq!(cache.hits(), 1);
        // Far behind the newest frame: not kept.
        cache.put(&t, &seg, 1 << 30, 5 << 20, &batch(0, 100));
        cache.put(&t, &seg, 128, 100, &batch(100, 100));
        assert!(cache.get(&t, &seg, 128, 100, 100).is_none());
        // Bounded: a stream of frames never holds more than the capacity.
        for k in 0..10_000u64 {
            cache.put(&t, &seg, 1 << 31 | k, (5 << 20) + k * 1000, &batch(0, 1000));
        }
        let s = cache.state();
        assert!(s.bytes <= 1 << 20, "{} bytes", s.bytes);
        assert_eq!(s.frames.len(), s.order.len());
        drop(s);
        let off = FrameCache::new(0);
        off.put(&t, &seg, 64, 0, &batch(0, 10));
        assert!(off.get(&t, &seg, 64, 0, 10).is_none());
    }
}
