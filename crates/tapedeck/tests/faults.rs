//! Faults a disk or a machine can produce, injected at the storage seam: power loss (unsynced
//! bytes and directory entries dropped), torn and zero-filled writes, ENOSPC and EIO on write,
//! on fsync and on directory fsync, and bit flips. Each test names the defect it pins (issue 12);
//! the model-based property test at the end runs them all in random order.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use common::batch;
use proptest::prelude::*;
use tapedeck::tape::id::{TAPE_ID_FILE, read_or_create};
use tapedeck::tape::storage::{Fault, MemStorage, Op, Storage};
use tapedeck::tape::verify::verify;
use tapedeck::tape::{
    Compression, FsyncPolicy, SPACE_RESERVE, StartAt, TapeOptions, TapeReader, TapeWriter,
};

fn rows(first: i64, n: usize) -> RecordBatch {
    batch(vec![(
        "n",
        Arc::new(Int64Array::from_iter_values(first..first + n as i64)) as ArrayRef,
    )])
}

fn opts(fsync: FsyncPolicy, segment_bytes: u64) -> TapeOptions {
    TapeOptions {
        fsync,
        compression: Compression::None,
        zstd_level: None,
        segment_bytes,
        segment_age: None,
        frame_rows: tapedeck::tape::writer::DEFAULT_FRAME_ROWS,
        allow_schema_change: false,
        disk_full_timeout: Some(Duration::ZERO),
    }
}

/// A policy that never syncs on its own: rows become durable only through `wait_durable`, so
/// what a test hands to the storage with `flush` stays unsynced until then — and a crash can
/// tear it.
fn manual() -> FsyncPolicy {
    FsyncPolicy::Interval(Duration::from_secs(3600))
}

fn open(storage: &MemStorage, o: TapeOptions) -> TapeWriter {
    match TapeWriter::open_storage(Arc::new(storage.clone()), o) {
        Ok(w) => w,
        Err(e) => panic!("recovery failed: {e}"),
    }
}

/// Every `n` value on the tape, in order.
fn read_all(storage: &MemStorage) -> Vec<i64> {
    let r = TapeReader::open_storage(Arc::new(storage.clone()), StartAt::Start).unwrap();
    let mut out = Vec::new();
    for item in r {
        let (_, b) = item.unwrap();
        let n = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        out.extend(n.values().iter().copied());
    }
    out
}

fn segments(storage: &MemStorage) -> Vec<String> {
    storage
        .list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with("seg-"))
        .collect()
}

/// Issue 17, a full disk: the writer stops acknowledging between two frames (keeping the room
/// sealing needs), says so, and goes on by itself when space returns — no row lost, none twice.
#[test]
fn a_full_disk_pauses_acknowledgement_and_space_returning_resumes_it() {
    let storage = MemStorage::new();
    storage.set_capacity(Some(SPACE_RESERVE + (96 << 10)));
    let o = TapeOptions {
        disk_full_timeout: None,
        ..opts(FsyncPolicy::Always, 32 << 10)
    };
    let w = Arc::new(open(&storage, o));
    let watch = w.watch();
    let appender = {
        let w = w.clone();
        std::thread::spawn(move || {
            for i in 0..400 {
                w.append(&rows(i * 100, 100))?;
            }
            Ok::<_, tapedeck::Error>(())
        })
    };
    let started = Instant::now();
    while watch.disk_full().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the disk never filled"
        );
        assert!(
            !appender.is_finished(),
            "all rows fitted: the disk is too big"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let acked = watch.durable_seq();
    assert!(acked > 0 && acked < 40_000, "{acked}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        watch.durable_seq(),
        acked,
        "nothing acknowledged while full"
    );
    let full = watch.disk_full().expect("still full");
    assert!(full.waited >= Duration::from_millis(250), "{full:?}");
    assert!(full.free < full.needed, "{full:?}");
    // Space returns (a file removed, a retention trim): the writer goes on by itself.
    storage.set_capacity(None);
    appender.join().unwrap().unwrap();
    assert!(watch.disk_full().is_none());
    assert_eq!(watch.durable_seq(), 40_000);
    let Ok(w) = Arc::try_unwrap(w) else {
        panic!("the writer is still shared")
    };
    w.close().unwrap();
    assert_eq!(read_all(&storage), (0..40_000).collect::<Vec<_>>());
    let report = verify(&storage).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// Rows submitted while the writer waits for space (held in memory, not yet in a frame) are
/// acknowledged only once written and fsynced: a power loss right after they are acknowledged
/// keeps every one.
#[test]
fn rows_submitted_while_the_disk_is_full_are_acknowledged_only_once_on_disk() {
    let storage = MemStorage::new();
    storage.set_capacity(Some(SPACE_RESERVE + (16 << 10)));
    let o = TapeOptions {
        disk_full_timeout: None,
        ..opts(FsyncPolicy::Always, 1 << 20)
    };
    let w = open(&storage, o.clone());
    let watch = w.watch();
    let mut next = 0i64;
    let started = Instant::now();
    while watch.disk_full().is_none() {
        assert!(started.elapsed() < Duration::from_secs(20), "never full");
        w.submit(&rows(next, 100)).unwrap();
        next += 100;
        std::thread::sleep(Duration::from_millis(1));
    }
    // A few rows more while the committer waits: held, not yet a frame.
    w.submit(&rows(next, 10)).unwrap();
    next += 10;
    std::thread::sleep(Duration::from_millis(150));
    assert!(watch.durable_seq() < next as u64);
    storage.set_capacity(None);
    w.wait_durable(next as u64).unwrap();
    // Acknowledged: on the disk, whatever a power loss drops.
    w.abandon();
    storage.crash(|_| 0);
    drop(open(&storage, o));
    assert_eq!(read_all(&storage), (0..next).collect::<Vec<_>>());
}

/// A disk that stays full past `disk_full_timeout`: the writer stops with `ENOSPC`, saying how
/// long it waited; after a power loss every acknowledged row is there and nothing else.
#[test]
fn a_disk_that_stays_full_stops_the_writer_after_its_timeout_and_loses_nothing() {
    let storage = MemStorage::new();
    storage.set_capacity(Some(SPACE_RESERVE + (64 << 10)));
    let o = TapeOptions {
        disk_full_timeout: Some(Duration::from_millis(300)),
        ..opts(FsyncPolicy::Always, 32 << 10)
    };
    let w = open(&storage, o.clone());
    let mut acked = 0i64;
    let started = Instant::now();
    let err = loop {
        assert!(started.elapsed() < Duration::from_secs(20), "never stopped");
        match w.append(&rows(acked, 100)) {
            Ok(a) => acked = a.end_seq as i64,
            Err(e) => break e,
        }
    };
    assert!(acked > 0);
    assert_eq!(err.os_error(), Some(28), "{err}");
    assert!(
        err.to_string().contains("the disk stayed full for"),
        "{err}"
    );
    assert!(w.close().is_err(), "close says the writer failed");
    storage.crash(|_| 0);
    storage.set_capacity(None);
    drop(open(&storage, o));
    assert_eq!(read_all(&storage), (0..acked).collect::<Vec<_>>());
}

/// A write that fails with ENOSPC although the disk said it had room (something else took the
/// space meanwhile, or a quota): what it wrote is cut off and it is tried again, not failed.
#[test]
fn enospc_under_a_write_is_waited_out_and_written_once() {
    let storage = MemStorage::new();
    let o = TapeOptions {
        disk_full_timeout: None,
        ..opts(FsyncPolicy::Always, 1 << 20)
    };
    let w = open(&storage, o);
    w.append(&rows(0, 100)).unwrap();
    storage.fail_nth(Op::Append, 0, Fault::ShortWrite);
    w.append(&rows(100, 100)).unwrap();
    w.append(&rows(200, 100)).unwrap();
    assert_eq!(storage.fired(), vec![(Op::Append, Fault::ShortWrite)]);
    w.close().unwrap();
    assert_eq!(read_all(&storage), (0..300).collect::<Vec<_>>());
    let report = verify(&storage).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// Defect 1 and 5: a full disk while a segment is started leaves a header with no rows; the
/// next run must not append after it (its rows would be unreadable), and `close` must say the
/// writer failed.
#[test]
fn after_a_full_disk_the_next_run_starts_a_new_segment_file_and_loses_nothing() {
    let storage = MemStorage::new();
    let w = open(&storage, opts(FsyncPolicy::Always, 1 << 20));
    w.append(&rows(0, 50)).unwrap();
    w.close().unwrap();

    let w = open(&storage, opts(FsyncPolicy::Always, 1 << 20));
    // The new segment's header and first frame go out in one write: let half of it land.
    storage.fail_nth(Op::Append, 0, Fault::ShortWrite);
    assert!(w.append(&rows(50, 50)).is_err(), "ENOSPC surfaces");
    let closed = w.close();
    let err = closed.expect_err("close reports the failure");
    assert!(
        err.to_string().contains("No space left") && err.to_string().contains("50 submitted"),
        "{err}"
    );

    // Space freed; record again (no crash: the page cache kept the torn header).
    let w = open(&storage, opts(FsyncPolicy::Always, 1 << 20));
    assert_eq!(w.next_seq(), 50);
    w.append(&rows(50, 50)).unwrap();
    w.close().unwrap();
    assert_eq!(read_all(&storage), (0..100).collect::<Vec<_>>());
    let report = verify(&storage).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// Defect 1: a name that exists is never appended to, even if something left it there.
#[test]
fn a_segment_file_is_only_ever_created_new() {
    let storage = MemStorage::new();
    let w = open(&storage, opts(FsyncPolicy::Always, 1 << 20));
    w.append(&rows(0, 10)).unwrap();
    w.close().unwrap();
    let w = open(&storage, opts(FsyncPolicy::Always, 1 << 20));
    // A file appears under the name the next segment will take (after recovery looked).
    storage.put("seg-00000000000000000010.tape", b"stray".to_vec());
    let err = w
        .append(&rows(10, 10))
        .expect_err("refused, not appended after the stray bytes");
    assert!(err.to_string().contains("exists already"), "{err}");
    assert_eq!(
        storage.bytes("seg-00000000000000000010.tape"),
        Some(b"stray".to_vec())
    );
    assert!(w.close().is_err());
    // Recovery removes the undecodable file (a header that never made it whole), and the
    // next run records into a segment of its own.
    let w = open(&storage, opts(FsyncPolicy::Always, 1 << 20));
    w.append(&rows(10, 10)).unwrap();
    w.close().unwrap();
    assert_eq!(read_all(&storage), (0..20).collect::<Vec<_>>());
}

/// Defect 7: a segment, the manifest and the tape id are durable directory entries before any
/// row in them is acknowledged — a power loss right after an acknowledgement keeps them.
#[test]
fn acknowledged_rows_survive_a_power_loss_that_drops_unsynced_directory_entries() {
    for fsync in [FsyncPolicy::Always, manual()] {
        let storage = MemStorage::new();
        let w = open(&storage, opts(fsync, 600));
        for i in 0..20 {
            w.submit(&rows(i * 10, 10)).unwrap();
            w.wait_durable(w.next_seq()).unwrap();
        }
        let acked = w.durable_seq();
        assert!(segments(&storage).len() > 2, "rolls happened");
        w.abandon();
        storage.crash(|_| 0); // no unsynced byte and no unsynced directory entry survives
        let w = open(&storage, opts(fsync, 600));
        assert!(w.next_seq() >= acked);
        let id = w.id().to_string();
        w.close().unwrap();
        assert_eq!(read_all(&storage), (0..acked as i64).collect::<Vec<_>>());
        assert_eq!(read_or_create(&storage, false).unwrap(), Some(id));
    }
}

/// Defect 6: repairing a damaged TAPEID is atomic: a crash or an error at any step leaves the
/// same id readable.
#[test]
fn tapeid_repair_survives_a_crash_or_an_error_at_every_step() {
    let seed = MemStorage::new();
    let id = read_or_create(&seed, true).unwrap().unwrap();
    let good = seed.bytes(TAPE_ID_FILE).unwrap();
    let steps = [Op::Append, Op::Sync, Op::Rename, Op::SyncDir];
    for op in &steps {
        for fault in [Fault::NoSpace, Fault::Eio] {
            for keep in [0usize, 1, usize::MAX] {
                let s = MemStorage::new();
                s.put(TAPE_ID_FILE, good.clone());
                s.flip_bit(TAPE_ID_FILE, 3, 1); // one copy damaged: a writer rewrites the file
                s.fail_nth(*op, 0, fault);
                let r = read_or_create(&s, true);
                assert!(r.is_err(), "{op:?} {fault:?} fails");
                s.crash(|n| n.min(keep));
                assert_eq!(
                    read_or_create(&s, true).unwrap(),
                    Some(id.clone()),
                    "{op:?} {fault:?} keep {keep}"
                );
            }
        }
    }
}

/// A failed fsync (EIO) stops the writer and acknowledges nothing it covered; after the power
/// loss that follows, every acknowledged row is there.
#[test]
fn eio_on_fsync_acknowledges_nothing_it_should_have_covered() {
    let storage = MemStorage::new();
    let w = open(&storage, opts(FsyncPolicy::Always, 1 << 20));
    w.append(&rows(0, 10)).unwrap();
    storage.fail_nth(Op::Sync, 0, Fault::Eio);
    assert!(w.append(&rows(10, 10)).is_err());
    assert_eq!(w.durable_seq(), 10);
    assert!(
        w.submit(&rows(20, 10)).is_err(),
        "a failed writer takes no more rows"
    );
    assert!(w.failure().is_some_and(|m| m.contains("os error 5")));
    assert!(w.close().is_err());
    storage.crash(|n| n);
    let w = open(&storage, opts(FsyncPolicy::Always, 1 << 20));
    w.close().unwrap();
    let got = read_all(&storage);
    assert!(got.len() >= 10);
    assert_eq!(got, (0..got.len() as i64).collect::<Vec<_>>());
}

/// Defect 14: verify proves the whole tape, not only the files it finds.
#[test]
fn verify_reports_a_missing_segment_a_headless_tape_and_a_directory_that_is_no_tape() {
    let empty = MemStorage::new();
    let r = verify(&empty).unwrap();
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(r.problems[0].what.contains("not a tape"));

    let storage = MemStorage::new();
    let w = open(&storage, opts(FsyncPolicy::Always, 600));
    for i in 0..20 {
        w.append(&rows(i * 10, 10)).unwrap();
    }
    w.close().unwrap();
    assert!(verify(&storage).unwrap().problems.is_empty());
    let segs = segments(&storage);
    assert!(segs.len() >= 3);

    // The only-segment case and the first-segment case: rows 0.. missing.
    let first = MemStorage::new();
    for name in storage.list().unwrap() {
        if name != segs[0] {
            first.put(&name, storage.bytes(&name).unwrap());
        }
    }
    let r = verify(&first).unwrap();
    assert!(
        r.problems.iter().any(|p| p.what.contains("missing")),
        "{:?}",
        r.problems
    );
    assert!(r.problems.iter().any(|p| p.what.contains("rows 0..")));

    // A middle one: the sequence gap and the manifest both say so.
    let middle = MemStorage::new();
    for name in storage.list().unwrap() {
        if name != segs[1] {
            middle.put(&name, storage.bytes(&name).unwrap());
        }
    }
    let r = verify(&middle).unwrap();
    assert!(
        r.problems
            .iter()
            .any(|p| p.file == segs[1] && p.what.contains("missing")),
        "{:?}",
        r.problems
    );
}

/// Defect 2 and 3: a bit flipped inside a sealed segment is reported by the reader with the
/// segment, the byte range and the sequence range it hides, and by verify.
#[test]
fn damage_in_a_sealed_segment_is_reported_with_its_ranges() {
    let storage = MemStorage::new();
    let w = open(&storage, opts(FsyncPolicy::Always, 1 << 20));
    for i in 0..10 {
        w.append(&rows(i * 10, 10)).unwrap();
    }
    w.close().unwrap();
    let seg = segments(&storage).remove(0);
    let len = storage.bytes(&seg).unwrap().len();
    storage.flip_bit(&seg, len / 2, 4);
    let report = verify(&storage).unwrap();
    assert!(
        report.problems.iter().any(|p| p.file == seg),
        "{:?}",
        report.problems
    );
    let mut r = TapeReader::open_storage(Arc::new(storage.clone()), StartAt::Start).unwrap();
    let mut got = Vec::new();
    while let Some((_, b)) = r.next_batch().unwrap() {
        let n = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        got.extend(n.values().iter().copied());
    }
    let damage = r.take_unreadable();
    assert_eq!(damage.len(), 1, "{damage:?}");
    let d = &damage[0];
    assert_eq!(d.segment.as_deref(), Some(seg.as_str()));
    assert_eq!(d.to - d.from, 10);
    let (a, b) = d.bytes.unwrap();
    assert!(a as usize <= len / 2 && len / 2 < b as usize, "{d:?}");
    let expected: Vec<i64> = (0..100)
        .filter(|n| !(d.from..d.to).contains(&(*n as u64)))
        .collect();
    assert_eq!(got, expected);
}

/// Defect 12: under `--fsync never` rows reach the OS (and readers) within milliseconds, not
/// after a megabyte has piled up.
#[test]
fn fsync_never_hands_rows_to_the_os_promptly() {
    let storage = MemStorage::new();
    let w = open(&storage, opts(FsyncPolicy::Never, 1 << 20));
    let syncs = storage.syncs();
    w.submit(&rows(0, 5)).unwrap();
    let mut seen = 0;
    for _ in 0..200 {
        seen = read_all(&storage).len();
        if seen == 5 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(seen, 5, "a reader sees the rows without a close");
    assert_eq!(w.durable_seq(), 5, "acknowledged once handed to the OS");
    assert_eq!(storage.syncs(), syncs, "and never fsynced");
    w.close().unwrap();
}

/// Defect 11: recovery reads a segment in bounded memory; a frame header claiming rows past
/// u64::MAX is damage, not a panic.
#[test]
fn a_frame_whose_sequence_range_overflows_is_damage() {
    use tapedeck::tape::format::{FRAME_HEADER, FrameHeader};
    let mut b = Vec::new();
    let h = FrameHeader {
        compression: Compression::None,
        payload_len: 1,
        rows: 2,
        first_seq: u64::MAX - 1,
        time: None,
        time_deltas: false,
    };
    h.encode_into(&[0], &mut b);
    assert!(FrameHeader::decode(&b[..FRAME_HEADER]).is_err());
}

// ---------------------------------------------------------------------------------------------
// The model-based property test.

/// One step of the model.
#[derive(Debug, Clone)]
enum Step {
    /// Submit a batch of this many rows.
    Submit(usize),
    /// Hand what is pending to the storage, unsynced.
    Flush,
    /// Wait until everything submitted is durable (the acknowledgement).
    Commit,
    /// Arm a fault on the n-th next operation of a kind.
    Arm(Op, u8, Fault),
    /// Power loss; `zeroed` = part of what survives unsynced reads as zeros.
    Crash { seed: u32, zeroed: bool },
    /// The process ends cleanly (close) and a new one opens the tape.
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    let op = prop_oneof![
        Just(Op::Append),
        Just(Op::Sync),
        Just(Op::SyncDir),
        Just(Op::Create),
        Just(Op::Rename),
    ];
    let fault = prop_oneof![
        Just(Fault::NoSpace),
        Just(Fault::ShortWrite),
        Just(Fault::Eio)
    ];
    prop_oneof![
        4 => (1usize..40).prop_map(Step::Submit),
        2 => Just(Step::Flush),
        2 => Just(Step::Commit),
        1 => (op, 0u8..4, fault).prop_map(|(o, n, f)| Step::Arm(o, n, f)),
        1 => (any::<u32>(), any::<bool>()).prop_map(|(seed, zeroed)| Step::Crash { seed, zeroed }),
        1 => Just(Step::Restart),
    ]
}

/// Tallies across every case of the property test, printed at the end (BENCHMARKS.md quotes a
/// soak run of it).
#[derive(Default, Debug)]
struct Tally {
    cases: u64,
    faults: BTreeMap<String, u64>,
    crashes: u64,
    rows_checked: u64,
    lost: u64,
    duplicated: u64,
}

fn xorshift(seed: &mut u32) -> u32 {
    let mut x = (*seed).max(1);
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *seed = x;
    x
}

/// Runs one sequence of steps with frames of up to `frame_rows` rows (1: a frame per submit;
/// more: submits joined into frames, which must not change what is acknowledged).
fn run_model(steps: &[Step], frame_rows: usize, tally: &mut Tally) -> Result<(), TestCaseError> {
    let storage = MemStorage::new();
    let o = TapeOptions {
        frame_rows,
        ..opts(manual(), 900)
    };
    // Recovery itself may hit an armed fault (ENOSPC while sealing): that is a typed error,
    // and the next attempt, with the fault gone, succeeds.
    let reopen = |storage: &MemStorage| -> Result<TapeWriter, TestCaseError> {
        match TapeWriter::open_storage(Arc::new(storage.clone()), o.clone()) {
            Ok(w) => Ok(w),
            Err(_) => {
                storage.clear_faults();
                TapeWriter::open_storage(Arc::new(storage.clone()), o.clone())
                    .map_err(|e| TestCaseError::fail(format!("recovery failed twice: {e}")))
            }
        }
    };
    let mut w = Some(reopen(&storage)?);
    // Rows known to be on the tape (acknowledged) and rows submitted so far.
    let mut acked: u64 = 0;
    let mut next: u64 = 0;
    let check =
        |storage: &MemStorage, acked: u64, tally: &mut Tally| -> Result<u64, TestCaseError> {
            let got = read_all(storage);
            tally.rows_checked += got.len() as u64;
            let expect: Vec<i64> = (0..got.len() as i64).collect();
            if got != expect {
                let mut seen = std::collections::BTreeSet::new();
                tally.duplicated += got.iter().filter(|v| !seen.insert(**v)).count() as u64;
                return Err(TestCaseError::fail(format!(
                    "rows out of order or repeated: {:?}",
                    &got[..got.len().min(40)]
                )));
            }
            if (got.len() as u64) < acked {
                tally.lost += acked - got.len() as u64;
                return Err(TestCaseError::fail(format!(
                    "{} rows readable, {acked} acknowledged",
                    got.len()
                )));
            }
            Ok(got.len() as u64)
        };
    for s in steps {
        match s {
            Step::Submit(n) => {
                if let Some(writer) = &w
                    && writer.submit(&rows(next as i64, *n)).is_ok()
                {
                    next += *n as u64;
                }
            }
            Step::Flush => {
                if let Some(writer) = &w {
                    let _ = writer.flush();
                }
            }
            Step::Commit => {
                if let Some(writer) = &w
                    && writer.wait_durable(writer.next_seq()).is_ok()
                {
                    prop_assert!(writer.durable_seq() >= next);
                    acked = acked.max(writer.durable_seq());
                }
            }
            Step::Arm(op, n, fault) => {
                storage.fail_nth(*op, u64::from(*n), *fault);
            }
            Step::Crash { seed, zeroed } => {
                if let Some(writer) = w.take() {
                    acked = acked.max(writer.durable_seq());
                    writer.abandon();
                }
                tally.crashes += 1;
                count_fired(&storage, tally);
                let mut rng = *seed;
                let choose = move |n: usize| {
                    if n == 0 {
                        0
                    } else {
                        xorshift(&mut rng) as usize % (n + 1)
                    }
                };
                if *zeroed {
                    storage.crash_zeroed(choose);
                } else {
                    storage.crash(choose);
                }
                let writer = reopen(&storage)?;
                next = check(&storage, acked, tally)?;
                prop_assert_eq!(writer.next_seq(), next);
                w = Some(writer);
            }
            Step::Restart => {
                if let Some(writer) = w.take() {
                    let failed = writer.failure().is_some();
                    acked = acked.max(writer.durable_seq());
                    let closed = writer.close();
                    prop_assert!(
                        closed.is_err() || !failed,
                        "close of a failed writer reports it"
                    );
                    if closed.is_ok() {
                        acked = next;
                    }
                }
                count_fired(&storage, tally);
                // Faults still armed hit recovery itself.
                let writer = reopen(&storage)?;
                next = check(&storage, acked, tally)?;
                prop_assert_eq!(writer.next_seq(), next);
                w = Some(writer);
            }
        }
    }
    if let Some(writer) = w.take() {
        acked = acked.max(writer.durable_seq());
        let _ = writer.close();
    }
    count_fired(&storage, tally);
    storage.clear_faults();
    reopen(&storage)?
        .close()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    check(&storage, acked, tally)?;
    let report = verify(&storage).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(report.problems.is_empty(), "{:?}", report.problems);
    Ok(())
}

fn count_fired(storage: &MemStorage, tally: &mut Tally) {
    let fired = storage.fired();
    let before: u64 = tally.faults.values().sum();
    for (k, (op, fault)) in fired.iter().enumerate() {
        if (k as u64) < before {
            continue;
        }
        *tally
            .faults
            .entry(format!("{fault:?} on {op:?}"))
            .or_default() += 1;
    }
}

fn cases() -> u32 {
    std::env::var("TAPEDECK_FAULT_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96)
}

#[test]
fn random_faults_and_crashes_never_lose_or_repeat_an_acknowledged_row() {
    let tally = std::cell::RefCell::new(Tally::default());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let frame_rows = prop_oneof![
        Just(1usize),
        2usize..100,
        Just(tapedeck::tape::writer::DEFAULT_FRAME_ROWS)
    ];
    let cases = (proptest::collection::vec(step(), 1..40), frame_rows);
    let result = runner.run(&cases, |(steps, frame_rows)| {
        let mut t = Tally::default();
        let r = run_model(&steps, frame_rows, &mut t);
        let mut all = tally.borrow_mut();
        all.cases += 1;
        all.crashes += t.crashes;
        all.rows_checked += t.rows_checked;
        all.lost += t.lost;
        all.duplicated += t.duplicated;
        for (k, v) in t.faults {
            *all.faults.entry(k).or_default() += v;
        }
        r
    });
    let t = tally.into_inner();
    eprintln!(
        "fault model: {} cases (shrinking included), {} crashes, faults fired {:?}, {} rows checked, {} lost, {} duplicated",
        t.cases, t.crashes, t.faults, t.rows_checked, t.lost, t.duplicated
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Bit rot: flips anywhere in a sealed tape are found, and cost only the rows they hit.

/// Rows in `got` must be increasing (in order, each once), and every row of `0..total` that
/// is missing must lie in a segment verify flagged.
fn only_flagged_rows_missing(
    got: &[i64],
    total: i64,
    ranges: &[(String, i64, i64)],
    flagged: &std::collections::BTreeSet<String>,
) -> Result<(), TestCaseError> {
    prop_assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in order, once: {got:?}"
    );
    let have: std::collections::BTreeSet<i64> = got.iter().copied().collect();
    for row in 0..total {
        if !have.contains(&row) {
            let seg = ranges.iter().find(|(_, a, b)| (*a..*b).contains(&row));
            prop_assert!(
                seg.is_some_and(|(name, ..)| flagged.contains(name)),
                "row {row} lost in {seg:?}, which verify did not flag ({flagged:?})"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn bit_flips_anywhere_are_reported_and_cost_only_the_rows_they_hit(
        flips in proptest::collection::vec((any::<u32>(), any::<u32>(), 0u8..8), 1..4),
    ) {
        let storage = MemStorage::new();
        let w = open(&storage, opts(FsyncPolicy::Always, 1200));
        for i in 0..40 {
            w.append(&rows(i * 10, 10)).unwrap();
        }
        w.close().unwrap();
        let id = read_or_create(&storage, false).unwrap();
        let names = segments(&storage);
        let mut ranges = Vec::new();
        for (k, n) in names.iter().enumerate() {
            let first = n[4..24].parse::<i64>().unwrap();
            let end = names.get(k + 1).map_or(400, |m| m[4..24].parse::<i64>().unwrap());
            ranges.push((n.clone(), first, end));
        }
        let files = storage.list().unwrap();
        let before: BTreeMap<String, Vec<u8>> =
            files.iter().map(|f| (f.clone(), storage.bytes(f).unwrap())).collect();
        for (file, at, bit) in &flips {
            let name = &files[*file as usize % files.len()];
            let len = before[name].len();
            storage.flip_bit(name, *at as usize % len, *bit);
        }
        let changed: Vec<String> = files
            .iter()
            .filter(|f| storage.bytes(f).as_ref() != before.get(*f))
            .cloned()
            .collect();
        let report = verify(&storage).unwrap();
        let flagged: std::collections::BTreeSet<String> =
            report.problems.iter().map(|p| p.file.clone()).collect();
        for f in &changed {
            if f.starts_with("seg-") || f == "MANIFEST" || f == TAPE_ID_FILE {
                prop_assert!(flagged.contains(f), "{f} changed but verify says {:?}", report.problems);
            }
        }
        for f in &flagged {
            prop_assert!(changed.contains(f), "verify flagged {f}, which is intact: {:?}", report.problems);
        }
        only_flagged_rows_missing(&read_all(&storage), 400, &ranges, &flagged)?;
        // Recovery never fails, keeps what readers could read, and the id survives one
        // damaged copy (both copies damaged is the one typed error, saying what to do).
        {
            if tapedeck::tape::id::health(&storage).unwrap() == tapedeck::tape::id::IdHealth::Damaged {
                let err = TapeWriter::open_storage(Arc::new(storage.clone()), opts(FsyncPolicy::Always, 1200));
                prop_assert!(err.err().is_some_and(|e| e.to_string().contains("both copies")));
                return Ok(());
            }
        }
        let w = open(&storage, opts(FsyncPolicy::Always, 1200));
        prop_assert_eq!(Some(w.id().to_string()), id.clone());
        w.close().unwrap();
        only_flagged_rows_missing(&read_all(&storage), 400, &ranges, &flagged)?;
    }
}

/// Defect 11: a stop position (`--to`) inside a quarantined gap ends the read at the gap, with
/// no underflow, and a later, larger stop position reads on past it.
#[test]
fn a_stop_position_inside_a_gap_ends_the_read_there() {
    let storage = MemStorage::new();
    let w = open(&storage, opts(FsyncPolicy::Always, 1 << 20));
    for i in 0..10 {
        w.append(&rows(i * 10, 10)).unwrap();
    }
    w.abandon();
    // Damage the frame holding rows 30..40 of the open segment; recovery quarantines it.
    let seg = segments(&storage).remove(0);
    let bytes = storage.bytes(&seg).unwrap();
    let frame_starts: Vec<usize> = bytes
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == b"TDFR")
        .map(|(i, _)| i)
        .collect();
    storage.flip_bit(&seg, frame_starts[3] + 50, 2);
    let w = open(&storage, opts(FsyncPolicy::Always, 1 << 20));
    assert_eq!(w.recovery().quarantined.len(), 1);
    w.close().unwrap();
    let mut r = TapeReader::open_storage(Arc::new(storage.clone()), StartAt::Start)
        .unwrap()
        .until(Some(35));
    let mut got = Vec::new();
    while let Some((_, b)) = r.next_batch().unwrap() {
        let n = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        got.extend(n.values().iter().copied());
    }
    assert_eq!(got, (0..30).collect::<Vec<_>>());
    r.set_until(Some(60));
    while let Some((_, b)) = r.next_batch().unwrap() {
        let n = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        got.extend(n.values().iter().copied());
    }
    assert_eq!(got, (0..30).chain(40..60).collect::<Vec<_>>());
}
