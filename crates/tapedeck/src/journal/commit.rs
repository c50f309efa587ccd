//! Group commit: threads committing at once share fdatasyncs.
//!
//! One thread at a time leads: it gathers the records other threads are writing, runs one
//! fsync, and wakes every thread whose record that fsync covered; the others wait, holding no
//! lock, and one of them leads the next fsync. Without the gathering step the threads an fsync
//! releases race back, and the first to ask for the next fsync finds only its own record
//! written: the leader therefore waits — at most as long as the last fsync took, and only while
//! fewer threads wait than the last fsync released — for the others' next records.
//!
//! Guarantees: [`GroupCommit::sync_to`] returns `Ok` only once an fsync that began after record
//! `seq` was written has succeeded; after a failed fsync it never returns `Ok` for a record the
//! failed fsync was to cover (the caller refuses to fsync after a failure).

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::sync::lock;

/// The longest a leader waits for other threads' records.
const MAX_GATHER: Duration = Duration::from_millis(2);

#[derive(Debug)]
struct State {
    /// Records covered by the last successful fsync (a count: records `0..synced`).
    synced: u64,
    /// A thread leads (gathers for, or runs) an fsync.
    leading: bool,
    /// Threads in `sync_to` whose record is not yet covered (the leader counted).
    waiting: usize,
    /// Threads the last fsync found waiting.
    last_group: usize,
    /// How long the last fsync took.
    last_took: Duration,
}

/// The shared fsyncs of one journal file.
#[derive(Debug)]
pub(super) struct GroupCommit {
    state: Mutex<State>,
    /// Signalled when an fsync ends (waiting threads look whether it covered them).
    done: Condvar,
    /// Signalled when a thread starts waiting (a gathering leader counts them).
    arrived: Condvar,
}

impl GroupCommit {
    /// Records `0..synced` are durable already.
    pub fn new(synced: u64) -> GroupCommit {
        GroupCommit {
            state: Mutex::new(State {
                synced,
                leading: false,
                waiting: 0,
                last_group: 1,
                last_took: Duration::ZERO,
            }),
            done: Condvar::new(),
            arrived: Condvar::new(),
        }
    }

    /// Returns once record `seq` is covered by an fsync. `fsync` runs the fsync and returns
    /// the number of records it covers (read before it starts); it is called by one thread at
    /// a time.
    pub fn sync_to(
        &self,
        seq: u64,
        fsync: impl FnOnce() -> crate::Result<u64>,
    ) -> crate::Result<()> {
        let mut s = lock(&self.state);
        s.waiting += 1;
        self.arrived.notify_one();
        loop {
            if s.synced > seq {
                s.waiting -= 1;
                return Ok(());
            }
            if !s.leading {
                break;
            }
            s = wait(&self.done, s);
        }
        s.leading = true;
        // Gather: the threads the last fsync released are most likely writing their next
        // records now; one fsync for all of them instead of one for the first and one for
        // the rest.
        let deadline = Instant::now() + s.last_took.min(MAX_GATHER);
        while s.waiting < s.last_group {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            s = self
                .arrived
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(s);
        let started = Instant::now();
        let result = fsync();
        let took = started.elapsed();
        let mut s = lock(&self.state);
        s.leading = false;
        s.waiting -= 1;
        if let Ok(covered) = result {
            s.synced = s.synced.max(covered);
            s.last_took = took;
            s.last_group = s.waiting + 1;
        }
        self.done.notify_all();
        result.map(|_| ())
    }
}

fn wait<'a>(cv: &Condvar, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
    cv.wait(guard).unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn a_record_is_covered_only_by_an_fsync_that_began_after_it() {
        let gc = Arc::new(GroupCommit::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let fsyncs = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (gc, written, fsyncs) = (gc.clone(), written.clone(), fsyncs.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let seq = written.fetch_add(1, Ordering::SeqCst);
                        gc.sync_to(seq, || {
                            let covered = written.load(Ordering::SeqCst);
                            fsyncs.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_micros(200));
                            Ok(covered)
                        })
                        .unwrap();
                        assert!(lock(&gc.state).synced > seq);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Eight threads, each waiting for its record's fsync: most fsyncs cover several.
        let n = fsyncs.load(Ordering::SeqCst);
        assert!(
            n <= 800,
            "{n} fsyncs for 1,600 records: fewer than 2 per fsync"
        );
    }

    #[test]
    fn a_failed_fsync_covers_nothing() {
        let gc = GroupCommit::new(0);
        let r = gc.sync_to(0, || {
            Err(crate::Error::io(
                "fsync",
                std::path::Path::new("j"),
                std::io::Error::other("EIO"),
            ))
        });
        assert!(r.is_err());
        assert_eq!(lock(&gc.state).synced, 0);
        assert!(!lock(&gc.state).leading);
        assert_eq!(lock(&gc.state).waiting, 0);
    }
}
