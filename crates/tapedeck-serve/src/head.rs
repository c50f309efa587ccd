//! The newest rows of the tape, read once for every live page.
//!
//! Ten pages following a recording want the same new rows. Each reading them itself costs each
//! a pread, a CRC check and (on a frame-cache miss) a decode per frame; the [`Head`] reads them
//! once, on one thread, and keeps the last [`HEAD_BYTES`] of decoded batches for the pages to
//! take from ([`Head::take`]). A page behind what the head holds (it reconnected after a
//! while, or asked for the past) reads from the tape on its own until it reaches the head.
//!
//! The head runs only while pages ask: it starts on the first [`Head::take`] and stops after
//! [`IDLE`] without one. It reads acknowledged rows only.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use tapedeck::tape::{StartAt, TapeReader};

use crate::status::{StatusCache, acknowledged};

/// Decoded bytes of batches the head keeps (pages more than this behind read on their own).
pub const HEAD_BYTES: usize = 64 << 20;
/// The head stops after this long without a page asking.
pub const IDLE: Duration = Duration::from_secs(10);
/// How often the head looks for new rows.
const POLL: Duration = Duration::from_millis(100);

/// The shared reader of the newest rows; see the module docs.
#[derive(Debug)]
pub struct Head {
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    /// Told what the head decodes (the compression estimate).
    status: Arc<StatusCache>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    running: bool,
    /// `(first_seq, batch)`, in order.
    batches: VecDeque<(u64, RecordBatch)>,
    /// The first sequence number held (where the head started, or after what it dropped).
    start: u64,
    /// The sequence number after the last row held.
    end: u64,
    bytes: usize,
    last_asked: Option<Instant>,
    /// Damaged ranges the head's reader skipped (the newest few), told to the pages whose
    /// messages span them.
    unreadable: VecDeque<tapedeck::tape::reader::Unreadable>,
}

/// Damaged ranges kept to tell pages about.
const UNREADABLE_KEPT: usize = 64;

/// What [`Head::take`] found.
#[derive(Debug)]
pub enum Taken {
    /// Rows from the asked position on (possibly none yet), the position after them, and what
    /// the head could not read between the two (to be said).
    Rows(Vec<RecordBatch>, u64, Vec<String>),
    /// The head does not hold that position (it is older, or the head just started): read it
    /// from the tape, up to this position at most — from there on the head has it.
    Elsewhere(Option<u64>),
}

impl Head {
    /// The head of the tape in `dir`, not yet running.
    pub fn new(dir: &Path, stop: Arc<AtomicBool>, status: Arc<StatusCache>) -> Head {
        Head {
            dir: dir.to_path_buf(),
            stop,
            status,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Rows from `from` on, at most about `max_rows`; starts the head if it is not running.
    pub fn take(self: &Arc<Self>, from: u64, max_rows: u64) -> Taken {
        let mut st = self.lock();
        st.last_asked = Some(Instant::now());
        if !st.running {
            st.running = true;
            st.batches.clear();
            st.bytes = 0;
            let start = acknowledged(&self.dir).unwrap_or(from);
            st.start = start;
            st.end = start;
            let head = self.clone();
            let spawned = std::thread::Builder::new()
                .name("tapedeck-serve-head".into())
                .spawn(move || head.run(start));
            if spawned.is_err() {
                st.running = false;
            }
            return Taken::Elsewhere(Some(start).filter(|s| *s > from));
        }
        if from < st.start || from > st.end {
            return Taken::Elsewhere(Some(st.start).filter(|s| *s > from));
        }
        let mut out = Vec::new();
        let mut at = from;
        let mut rows = 0u64;
        for (first, batch) in &st.batches {
            let n = batch.num_rows() as u64;
            if first + n <= at {
                continue;
            }
            let skip = at.saturating_sub(*first);
            let part = if skip > 0 {
                batch.slice(skip as usize, (n - skip) as usize)
            } else {
                batch.clone()
            };
            at = first + n;
            rows += part.num_rows() as u64;
            out.push(part);
            if rows >= max_rows {
                break;
            }
        }
        // Nothing held past `from`: caught up — or rows the head skipped (a quarantined gap)
        // lie between, and the page goes on where the head did.
        let to = if out.is_empty() { from.max(st.end) } else { at };
        let notes = st
            .unreadable
            .iter()
            .filter(|u| u.from >= from && u.from < to)
            .map(|u| format!("skipped unreadable rows: {u}"))
            .collect();
        Taken::Rows(out, to, notes)
    }

    fn run(self: Arc<Self>, start: u64) {
        let mut reader = match TapeReader::open(&self.dir, StartAt::Seq(start)) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("the page's shared reader cannot open the tape: {e}");
                self.lock().running = false;
                return;
            }
        };
        while !self.stop.load(Ordering::Relaxed) {
            if self.lock().last_asked.is_none_or(|t| t.elapsed() > IDLE) {
                break;
            }
            let Ok(end) = acknowledged(&self.dir) else {
                std::thread::sleep(POLL);
                continue;
            };
            reader.set_until(Some(end));
            let mut got = false;
            loop {
                match reader.next_batch() {
                    Ok(Some((first, batch))) => {
                        got = true;
                        self.status.count_decoded(
                            batch.num_rows() as u64,
                            batch.get_array_memory_size() as u64,
                        );
                        let mut st = self.lock();
                        st.bytes += batch.get_array_memory_size();
                        st.end = first + batch.num_rows() as u64;
                        st.batches.push_back((first, batch));
                        while st.bytes > HEAD_BYTES && st.batches.len() > 1 {
                            if let Some((first, b)) = st.batches.pop_front() {
                                st.bytes = st.bytes.saturating_sub(b.get_array_memory_size());
                                st.start = first + b.num_rows() as u64;
                            }
                        }
                    }
                    Ok(None) => break,
                    // Rows the head cannot read at all (retention removed them under it): the
                    // pages asking for them read on their own and are told; the head goes on
                    // from the tape's end.
                    Err(_) => {
                        if let Ok(end) = acknowledged(&self.dir)
                            && let Ok(r) = TapeReader::open(&self.dir, StartAt::Seq(end))
                        {
                            reader = r;
                            let mut st = self.lock();
                            st.batches.clear();
                            st.bytes = 0;
                            st.start = end;
                            st.end = end;
                        }
                        break;
                    }
                }
            }
            // The reader's position may have moved past a quarantined gap or a damaged frame:
            // note it, so a page waiting at the gap's start goes on (and is told).
            let at = reader.position();
            let skipped = reader.take_unreadable();
            {
                let mut st = self.lock();
                for u in skipped {
                    if st.unreadable.len() >= UNREADABLE_KEPT {
                        st.unreadable.pop_front();
                    }
                    st.unreadable.push_back(u);
                }
                if at > st.end {
                    if st.batches.is_empty() {
                        st.start = at;
                    }
                    st.end = at;
                }
            }
            if !got {
                std::thread::sleep(POLL);
            }
        }
        let mut st = self.lock();
        st.running = false;
        st.batches.clear();
        st.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapedeck::record::Row;
    use tapedeck::recorder::Recorder;

    fn append(dir: &Path, from: i64, n: i64) {
        let mut rec = Recorder::builder().tape(dir).open().unwrap();
        for k in 0..n / 100 {
            rec.write_rows((0..100).map(|i| Row::new().with("i", from + k * 100 + i)))
                .unwrap();
            rec.flush().unwrap();
        }
        rec.finish().unwrap();
    }

    fn rows_of(batches: &[RecordBatch]) -> Vec<i64> {
        use arrow_array::cast::AsArray;
        use arrow_array::types::Int64Type;
        batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect()
    }

    #[test]
    fn the_head_holds_new_rows_from_where_it_started_and_slices_from_any_position() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("t");
        append(&t, 0, 1000);
        let head = Arc::new(Head::new(
            &t,
            Arc::new(AtomicBool::new(false)),
            Arc::new(StatusCache::new(&t)),
        ));
        // It starts at the acknowledged end: older rows are read elsewhere, up to there.
        match head.take(0, 1_000_000) {
            Taken::Elsewhere(Some(1000)) => {}
            other => panic!("{other:?}"),
        }
        append(&t, 1000, 500);
        let deadline = Instant::now() + Duration::from_secs(10);
        let (batches, to) = loop {
            if let Taken::Rows(b, to, _) = head.take(1000, 1_000_000)
                && to == 1500
            {
                break (b, to);
            }
            assert!(Instant::now() < deadline, "the head never got the new rows");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(to, 1500);
        assert_eq!(rows_of(&batches), (1000..1500).collect::<Vec<_>>());
        // From the middle of a batch, and at most about `max_rows`.
        let Taken::Rows(b, to, _) = head.take(1250, 100) else {
            panic!("1250 is held")
        };
        let got = rows_of(&b);
        assert_eq!(got.first(), Some(&1250));
        assert_eq!(to, 1250 + got.len() as u64);
        assert!(got.len() >= 100 && got.len() < 300, "{}", got.len());
        // Caught up: nothing, the position stays.
        let Taken::Rows(b, to, _) = head.take(1500, 100) else {
            panic!("the end is held")
        };
        assert!(b.is_empty());
        assert_eq!(to, 1500);
        // Before what it holds: elsewhere, up to its start.
        assert!(matches!(head.take(10, 100), Taken::Elsewhere(Some(1000))));
    }
}
