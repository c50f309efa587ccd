//! Group commit: threads committing at once share fdatasyncs.
//!
//! One thread at a time leads: it gathers the records other threads are writing, runs one
//! fsync, and wakes exactly the threads whose record that fsync covered, plus one thread whose
//! record it did not cover, which leads the next fsync. Every other thread stays asleep: no
//! thundering herd after each fsync, which on a machine with few cores costs as much as the
//! fsync itself. Without the gathering step the threads an fsync releases race back, and the
//! first to ask for the next fsync finds only its own record written: the leader therefore
//! waits — at most as long as the last fsync took, and only while fewer threads are committing
//! than the last fsync saw — for the others' next records, and is woken once, when they are all
//! there.
//!
//! Guarantees: [`GroupCommit::sync_to`] returns `Ok` only once an fsync that began after record
//! `seq` was written has succeeded; after a failed fsync it never returns `Ok` for a record the
//! failed fsync was to cover (the caller refuses to fsync after a failure). A leader whose fsync
//! panics hands the lead on (the waiting threads look again), so nobody waits forever.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::sync::lock;

/// The longest a leader waits for other threads' records.
const MAX_GATHER: Duration = Duration::from_millis(2);

/// A waiting thread's word from the leader.
const WAITING: u8 = 0;
/// An fsync covered the thread's record.
const COVERED: u8 = 1;
/// The thread leads the next fsync.
const LEAD: u8 = 2;
/// The fsync failed (or its leader panicked): look again.
const LOOK_AGAIN: u8 = 3;

/// A thread asleep until an fsync covers its record.
#[derive(Debug)]
struct Waiter {
    seq: u64,
    thread: Thread,
    word: Arc<AtomicU8>,
}

#[derive(Debug)]
struct State {
    /// Records covered by the last successful fsync (a count: records `0..synced`).
    synced: u64,
    /// A thread leads (gathers for, or runs) an fsync, or has been told to.
    leading: bool,
    /// Threads in `sync_to` whose record is not yet covered, the leader counted.
    committing: usize,
    /// Threads committing when the last fsync ended.
    last_group: usize,
    /// How long the last fsync took.
    last_took: Duration,
    /// The threads asleep, in the order they came.
    waiters: Vec<Waiter>,
    /// The leader while it gathers (woken when the group is complete).
    gatherer: Option<Thread>,
}

/// The shared fsyncs of one journal file.
#[derive(Debug)]
pub(super) struct GroupCommit {
    state: Mutex<State>,
}

impl GroupCommit {
    /// Records `0..synced` are durable already.
    pub fn new(synced: u64) -> GroupCommit {
        GroupCommit {
            state: Mutex::new(State {
                synced,
                leading: false,
                committing: 0,
                last_group: 1,
                last_took: Duration::ZERO,
                waiters: Vec::new(),
                gatherer: None,
            }),
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
        let word = Arc::new(AtomicU8::new(WAITING));
        let mut s = lock(&self.state);
        s.committing += 1;
        loop {
            if s.synced > seq {
                s.committing -= 1;
                return Ok(());
            }
            if !s.leading {
                s.leading = true;
                break;
            }
            word.store(WAITING, Ordering::Release);
            s.waiters.push(Waiter {
                seq,
                thread: std::thread::current(),
                word: word.clone(),
            });
            if s.committing >= s.last_group
                && let Some(gatherer) = &s.gatherer
            {
                gatherer.unpark();
            }
            drop(s);
            let told = loop {
                match word.load(Ordering::Acquire) {
                    WAITING => std::thread::park(),
                    told => break told,
                }
            };
            match told {
                // The leader counted this thread out.
                COVERED => return Ok(()),
                LEAD => {
                    s = lock(&self.state);
                    break;
                }
                _ => s = lock(&self.state),
            }
        }
        // Gather: the threads the last fsync released are most likely writing their next
        // records now; one fsync for all of them instead of one for the first and one for
        // the rest.
        let deadline = Instant::now() + s.last_took.min(MAX_GATHER);
        s.gatherer = Some(std::thread::current());
        while s.committing < s.last_group {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            drop(s);
            std::thread::park_timeout(deadline - now);
            s = lock(&self.state);
        }
        s.gatherer = None;
        drop(s);
        let mut lead = Lead {
            state: &self.state,
            ended: false,
        };
        let started = Instant::now();
        let result = fsync();
        lead.end(result.as_ref().ok().copied(), started.elapsed());
        result.map(|_| ())
    }
}

/// The lead of one fsync; ending it wakes whom the fsync concerns, also if the fsync panics.
struct Lead<'a> {
    state: &'a Mutex<State>,
    ended: bool,
}

impl Lead<'_> {
    /// Ends the lead after an fsync that covered records `0..covered` (`None`: it failed).
    fn end(&mut self, covered: Option<u64>, took: Duration) {
        self.ended = true;
        let mut s = lock(self.state);
        s.committing -= 1;
        let mut wake = Vec::new();
        match covered {
            Some(covered) => {
                s.synced = s.synced.max(covered);
                s.last_took = took;
                s.last_group = s.committing + 1;
                let synced = s.synced;
                let mut released = 0;
                s.waiters.retain(|w| {
                    if w.seq < synced {
                        w.word.store(COVERED, Ordering::Release);
                        wake.push(w.thread.clone());
                        released += 1;
                        false
                    } else {
                        true
                    }
                });
                s.committing -= released;
                // The first thread left waiting leads next; the rest sleep on.
                if s.waiters.is_empty() {
                    s.leading = false;
                } else {
                    let next = s.waiters.remove(0);
                    next.word.store(LEAD, Ordering::Release);
                    wake.push(next.thread);
                }
            }
            None => {
                s.leading = false;
                for w in s.waiters.drain(..) {
                    w.word.store(LOOK_AGAIN, Ordering::Release);
                    wake.push(w.thread);
                }
            }
        }
        drop(s);
        for thread in wake {
            thread.unpark();
        }
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        if !self.ended {
            // The fsync panicked: nothing is covered; the others look again.
            self.end(None, Duration::ZERO);
        }
    }
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
        assert_eq!(lock(&gc.state).committing, 0);
    }

    #[test]
    fn a_leader_that_panics_hands_the_lead_on() {
        let gc = Arc::new(GroupCommit::new(0));
        let entered = Arc::new(std::sync::Barrier::new(2));
        let leader = {
            let (gc, entered) = (gc.clone(), entered.clone());
            std::thread::spawn(move || {
                gc.sync_to(0, || {
                    entered.wait();
                    // Let the other thread start waiting behind this fsync.
                    std::thread::sleep(Duration::from_millis(50));
                    panic!("an fsync that panics");
                })
            })
        };
        entered.wait();
        let follower = {
            let gc = gc.clone();
            std::thread::spawn(move || gc.sync_to(1, || Ok(2)))
        };
        assert!(
            leader.join().is_err(),
            "the leader's panic reaches its caller"
        );
        // The follower looks again, leads, and its own fsync covers it.
        assert!(follower.join().unwrap().is_ok());
        let s = lock(&gc.state);
        assert_eq!((s.synced, s.leading, s.committing), (2, false, 0));
        assert!(s.waiters.is_empty());
    }
}
