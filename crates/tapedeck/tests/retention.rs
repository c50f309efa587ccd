//! Retention: the oldest sealed segments go, never the last one, never rows a protected cursor
//! still needs; each removal is in the manifest first, so a crash between the record and the
//! removal is finished by the next writer, `verify` proves the remaining chain and readers
//! asked for a removed row get an error naming the first row left.

mod common;

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, TimestampMicrosecondArray};
use common::batch;
use tapedeck::Error;
use tapedeck::tape::retention::Retention;
use tapedeck::tape::storage::{MemStorage, Storage};
use tapedeck::tape::verify::{inspect, verify};
use tapedeck::tape::{Compression, FsyncPolicy, StartAt, TapeOptions, TapeReader, TapeWriter};

/// Rows `first..first+n`, event time `time_us` each.
fn rows(first: i64, n: usize, time_us: i64) -> RecordBatch {
    batch(vec![
        (
            "t",
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(std::iter::repeat_n(time_us, n))
                    .with_timezone("UTC"),
            ) as ArrayRef,
        ),
        (
            "n",
            Arc::new(Int64Array::from_iter_values(first..first + n as i64)),
        ),
    ])
}

fn options() -> TapeOptions {
    TapeOptions {
        fsync: FsyncPolicy::Always,
        compression: Compression::None,
        zstd_level: None,
        segment_bytes: 4096,
        segment_age: None,
        frame_rows: 100,
        allow_schema_change: false,
        disk_full_timeout: Some(std::time::Duration::ZERO),
    }
}

/// A tape of 3,000 rows in batches of 100 (about a segment per 200 rows), the first 1,500 with
/// an event time in 2001, the rest now.
fn tape() -> MemStorage {
    let storage = MemStorage::new();
    let w = TapeWriter::open_storage(Arc::new(storage.clone()), options()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    for b in 0..30 {
        let time = if b < 15 { 1_000_000_000_000_000 } else { now };
        w.append(&rows(b * 100, 100, time)).unwrap();
    }
    w.close().unwrap();
    storage
}

fn segments(storage: &MemStorage) -> Vec<String> {
    storage
        .list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with("seg-"))
        .collect()
}

fn read_from(storage: &MemStorage, start: StartAt) -> tapedeck::Result<Vec<i64>> {
    let mut out = Vec::new();
    for item in TapeReader::open_storage(Arc::new(storage.clone()), start)? {
        let (_, b) = item?;
        let n = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        out.extend(n.values().iter().copied());
    }
    Ok(out)
}

#[test]
fn a_size_keeps_the_newest_segments_and_verify_proves_the_rest_of_the_chain() {
    let storage = tape();
    let before = segments(&storage);
    assert!(before.len() >= 6, "{before:?}");
    let total: u64 = before
        .iter()
        .map(|n| storage.len(n).unwrap().unwrap())
        .sum();
    let keep = total / 3;
    let w = TapeWriter::open_storage(Arc::new(storage.clone()), options()).unwrap();
    let r = w
        .watch()
        .trim(
            &Retention {
                max_bytes: Some(keep),
                max_age: None,
            },
            None,
            true,
        )
        .unwrap();
    w.close().unwrap();
    assert!(!r.removed.is_empty());
    assert!(r.bytes <= keep, "{} bytes left, {keep} kept", r.bytes);
    let after = segments(&storage);
    assert_eq!(after.len() + r.removed.len(), before.len());
    assert_eq!(after, before[r.removed.len()..]);
    // The rest reads from the first row left; the chain checks out from there.
    let first = r.first_seq;
    assert_eq!(
        read_from(&storage, StartAt::Start).unwrap(),
        (first as i64..3000).collect::<Vec<_>>()
    );
    let report = verify(&storage).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.first_seq, first);
    let info = inspect(&storage).unwrap();
    assert_eq!(
        info.trimmed,
        Some((
            r.removed.len() as u64,
            first,
            r.removed.iter().map(|s| s.bytes).sum()
        ))
    );
    // A reader asked for a removed row is told where the tape starts now.
    match read_from(&storage, StartAt::Seq(first - 1)) {
        Err(Error::TapeTrimmed {
            requested,
            first: f,
            ..
        }) => assert_eq!((requested, f), (first - 1, first)),
        other => panic!("expected TapeTrimmed, got {other:?}"),
    }
    // And a writer goes on appending to the trimmed tape.
    let w = TapeWriter::open_storage(Arc::new(storage.clone()), options()).unwrap();
    assert_eq!(w.next_seq(), 3000);
    w.append(&rows(3000, 10, 0)).unwrap();
    w.close().unwrap();
    assert!(verify(&storage).unwrap().problems.is_empty());
}

#[test]
fn never_the_last_segment_and_never_past_a_protected_cursor() {
    let storage = tape();
    let w = TapeWriter::open_storage(Arc::new(storage.clone()), options()).unwrap();
    let all = Retention {
        max_bytes: Some(1),
        max_age: None,
    };
    // A sink at row 700 still needs the segment holding it, and everything after.
    let r = w.watch().trim(&all, Some(700), true).unwrap();
    assert!(r.first_seq <= 700, "{r:?}");
    assert_eq!(r.held_back.map(|(seq, _)| seq), Some(700));
    assert!(read_from(&storage, StartAt::Seq(700)).is_ok());
    // Without protection everything but the last segment goes.
    let r = w.watch().trim(&all, None, true).unwrap();
    w.close().unwrap();
    assert_eq!(segments(&storage).len(), 1);
    let left = read_from(&storage, StartAt::Start).unwrap();
    assert_eq!(*left.last().unwrap(), 2999);
    assert_eq!(left[0] as u64, r.first_seq);
    assert!(verify(&storage).unwrap().problems.is_empty());
}

#[test]
fn an_age_removes_the_segments_whose_rows_are_older() {
    let storage = tape();
    let w = TapeWriter::open_storage(Arc::new(storage.clone()), options()).unwrap();
    let week = Retention {
        max_bytes: None,
        max_age: Some(Duration::from_secs(7 * 86_400)),
    };
    let dry = w.watch().trim(&week, None, false).unwrap();
    assert!(!dry.removed.is_empty());
    assert_eq!(
        read_from(&storage, StartAt::Start).unwrap().len(),
        3000,
        "dry run removed"
    );
    let r = w.watch().trim(&week, None, true).unwrap();
    w.close().unwrap();
    assert_eq!(r.removed, dry.removed);
    // Every row left from 1,500 on is new; the segment mixing old and new rows stays.
    assert!(r.first_seq <= 1500 && r.first_seq > 0, "{r:?}");
    assert!(verify(&storage).unwrap().problems.is_empty());
}

#[test]
fn a_crash_between_the_record_and_the_removal_is_finished_by_the_next_writer() {
    let storage = tape();
    let w = TapeWriter::open_storage(Arc::new(storage.clone()), options()).unwrap();
    let names = segments(&storage);
    let first = names[0].clone();
    let bytes = storage.bytes(&first).unwrap();
    // Protect from the second segment's first row: exactly the first segment goes.
    let second: u64 = names[1]
        .trim_start_matches("seg-")
        .trim_end_matches(".tape")
        .parse()
        .unwrap();
    let r = w
        .watch()
        .trim(
            &Retention {
                max_bytes: Some(1),
                max_age: None,
            },
            Some(second),
            true,
        )
        .unwrap();
    w.close().unwrap();
    assert_eq!(r.removed.len(), 1);
    // The crash: the record is durable, the file is still there.
    storage.put(&first, bytes);
    // Readers and verify are not confused by it; the next writer removes it.
    assert!(verify(&storage).unwrap().problems.is_empty());
    TapeWriter::open_storage(Arc::new(storage.clone()), options())
        .unwrap()
        .close()
        .unwrap();
    assert!(!segments(&storage).contains(&first));
    assert!(verify(&storage).unwrap().problems.is_empty());
}

#[test]
fn a_power_loss_during_trimming_leaves_a_tape_that_verifies() {
    for seed in 1..40u32 {
        let storage = tape();
        let w = TapeWriter::open_storage(Arc::new(storage.clone()), options()).unwrap();
        let _ = w.watch().trim(
            &Retention {
                max_bytes: Some(1),
                max_age: None,
            },
            None,
            true,
        );
        w.abandon();
        let mut rng = seed;
        storage.crash(move |k| {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            if k == 0 { 0 } else { rng as usize % (k + 1) }
        });
        let w = TapeWriter::open_storage(Arc::new(storage.clone()), options()).unwrap();
        w.close().unwrap();
        let report = verify(&storage).unwrap();
        assert!(
            report.problems.is_empty(),
            "seed {seed}: {:?}",
            report.problems
        );
        let left = read_from(&storage, StartAt::Start).unwrap();
        assert_eq!(*left.last().unwrap(), 2999, "seed {seed}");
        assert_eq!(left[0] as u64, report.first_seq, "seed {seed}");
    }
}

#[test]
fn a_reader_opened_before_a_trim_is_told_its_rows_are_gone() {
    let storage = tape();
    // Opened at row 0, nothing read yet; then the first segments go.
    let mut r = TapeReader::open_storage(Arc::new(storage.clone()), StartAt::Seq(0)).unwrap();
    let w = TapeWriter::open_storage(Arc::new(storage.clone()), options()).unwrap();
    let report = w
        .watch()
        .trim(
            &Retention {
                max_bytes: Some(1),
                max_age: None,
            },
            None,
            true,
        )
        .unwrap();
    w.close().unwrap();
    match r.next_batch() {
        Err(Error::TapeTrimmed {
            requested, first, ..
        }) => assert_eq!((requested, first), (0, report.first_seq)),
        other => panic!("expected TapeTrimmed, got {other:?}"),
    }
}

#[test]
fn verify_beside_a_recorder_trimming_its_tape_reports_no_false_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tape");
    let w = TapeWriter::open(&path, options()).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let verifier = {
        let (path, stop) = (path.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let storage = tapedeck::tape::verify::storage_for(&path).unwrap();
                let report = verify(storage.as_ref()).unwrap();
                // What a trim racing the check could fake: an error for a segment gone while it
                // was read (`unwrap` above), a broken chain, rows missing. (A live writer's
                // segments being created or sealed, or a manifest record being appended, show
                // as other problems of `verify` on a live tape; not this test's subject.)
                let real: Vec<_> = report
                    .problems
                    .iter()
                    .filter(|p| {
                        [
                            "missing",
                            "hash chain",
                            "starts at sequence",
                            "previous-segment",
                        ]
                        .iter()
                        .any(|w| p.what.contains(w))
                    })
                    .collect();
                assert!(real.is_empty(), "{real:?}");
                runs += 1;
            }
            runs
        })
    };
    let keep = Retention {
        max_bytes: Some(20_000),
        max_age: None,
    };
    for b in 0..300 {
        w.append(&rows(b * 100, 100, 0)).unwrap();
        w.watch().trim(&keep, None, true).unwrap();
    }
    w.close().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(verifier.join().unwrap() > 0);
}

#[test]
fn enospc_or_eio_while_trimming_removes_nothing_and_loses_nothing() {
    use tapedeck::tape::storage::{Fault, Op};
    for fault in [Fault::NoSpace, Fault::Eio] {
        let storage = tape();
        let before = segments(&storage);
        let w = TapeWriter::open_storage(Arc::new(storage.clone()), options()).unwrap();
        // The manifest record of the first removal cannot be written.
        storage.fail_nth(Op::Append, 0, fault);
        let all = Retention {
            max_bytes: Some(1),
            max_age: None,
        };
        assert!(w.watch().trim(&all, None, true).is_err(), "{fault:?}");
        storage.clear_faults();
        w.abandon();
        assert_eq!(
            segments(&storage),
            before,
            "{fault:?}: a file went without its record"
        );
        // The next writer finds the tape whole; every row reads; trimming works again.
        let w = TapeWriter::open_storage(Arc::new(storage.clone()), options()).unwrap();
        assert_eq!(
            read_from(&storage, StartAt::Start).unwrap(),
            (0..3000).collect::<Vec<_>>()
        );
        assert!(!w.watch().trim(&all, None, true).unwrap().removed.is_empty());
        w.close().unwrap();
        let report = verify(&storage).unwrap();
        assert!(
            report.problems.is_empty(),
            "{fault:?}: {:?}",
            report.problems
        );
    }
}
