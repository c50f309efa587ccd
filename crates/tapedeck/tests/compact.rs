//! Compaction (`tapedeck compact`, issue 17 item 6): sealed segments rewritten into fewer
//! segments of large frames keep every row and sequence number, `verify` still proves the
//! chain, a crash or a fault at any step leaves the old tape or the new one, and readers that
//! run across it read every row once.

mod common;

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{
    Array, ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use common::batch;
use tapedeck::tape::compact::{Before, CompactOptions};
use tapedeck::tape::retention::Retention;
use tapedeck::tape::storage::{Fault, FsStorage, MemStorage, Op, Storage};
use tapedeck::tape::verify::{inspect, verify};
use tapedeck::tape::{Compression, FsyncPolicy, StartAt, TapeOptions, TapeReader, TapeWriter};

/// Rows `first..first + n`: event time 1 ms apart, a value, a device name.
fn rows(first: i64, n: usize) -> RecordBatch {
    let seq: Vec<i64> = (first..first + n as i64).collect();
    batch(vec![
        (
            "time",
            Arc::new(
                TimestampMicrosecondArray::from(
                    seq.iter()
                        .map(|i| 1_700_000_000_000_000 + i * 1000)
                        .collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ) as ArrayRef,
        ),
        ("n", Arc::new(Int64Array::from(seq.clone())) as ArrayRef),
        (
            "device",
            Arc::new(StringArray::from_iter_values(
                seq.iter().map(|i| format!("dev{}", i % 3)),
            )) as ArrayRef,
        ),
    ])
}

fn options(segment_bytes: u64) -> TapeOptions {
    TapeOptions {
        fsync: FsyncPolicy::Always,
        compression: Compression::Zstd,
        segment_bytes,
        ..TapeOptions::default()
    }
}

/// A tape of `batches` batches of 10 rows, each acknowledged before the next (a slow source:
/// one small frame each), in segments of about `segment_bytes`.
fn record(storage: Arc<dyn Storage>, batches: i64, segment_bytes: u64) -> TapeWriter {
    let w = TapeWriter::open_storage(storage, options(segment_bytes)).unwrap();
    for b in 0..batches {
        w.append(&rows(b * 10, 10)).unwrap();
    }
    w
}

/// Every row as (seq, time, n, device).
fn read_all(storage: Arc<dyn Storage>) -> Vec<(u64, i64, i64, String)> {
    let r = TapeReader::open_storage(storage, StartAt::Start).unwrap();
    let mut out = Vec::new();
    for item in r {
        let (first, b) = item.unwrap();
        out.extend(unpack(first, &b));
    }
    out
}

fn unpack(first: u64, b: &RecordBatch) -> Vec<(u64, i64, i64, String)> {
    let t = b
        .column(0)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .unwrap();
    let n = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
    let d = b.column(2).as_any().downcast_ref::<StringArray>().unwrap();
    (0..b.num_rows())
        .map(|i| {
            (
                first + i as u64,
                t.value(i),
                n.value(i),
                d.value(i).to_string(),
            )
        })
        .collect()
}

fn segment_files(storage: &dyn Storage) -> Vec<String> {
    let mut v: Vec<String> = storage
        .list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with("seg-"))
        .collect();
    v.sort();
    v
}

/// Verify finds nothing wrong (but the open segment of a writer still running).
fn assert_verifies(storage: &dyn Storage) {
    let report = verify(storage).unwrap();
    let problems: Vec<_> = report
        .problems
        .iter()
        .filter(|p| !p.what.contains("the writer is running"))
        .collect();
    assert!(problems.is_empty(), "verify found problems: {problems:#?}");
}

#[test]
fn compaction_keeps_every_row_and_verify_still_proves_the_chain() {
    let mem = MemStorage::new();
    let storage: Arc<dyn Storage> = Arc::new(mem.clone());
    let w = record(storage.clone(), 300, 4096);
    let before = read_all(storage.clone());
    assert_eq!(before.len(), 3000);
    let old = inspect(storage.as_ref()).unwrap();
    assert!(old.segments.len() >= 5, "{} segments", old.segments.len());
    let frames_before = verify(storage.as_ref()).unwrap().frames;
    assert!(frames_before >= 290, "{frames_before} frames");

    let report = w.watch().compact(&CompactOptions::default()).unwrap();
    // Every sealed segment was rewritten into one (they fit 256 MiB), the open one stayed.
    let sealed = old.segments.iter().filter(|s| s.sealed).count();
    assert_eq!(report.replaced.len(), sealed);
    assert_eq!(report.files.len(), 1);
    assert_eq!(report.first_seq, 0);
    assert!(
        report.frames_after < report.frames_before / 10,
        "{report:?}"
    );
    assert!(report.bytes_after < report.bytes_before, "{report:?}");
    assert_eq!(read_all(storage.clone()), before);
    assert_verifies(storage.as_ref());
    let v = verify(storage.as_ref()).unwrap();
    assert_eq!(v.rows, 3000);
    assert_eq!(v.compactions.len(), 1);
    assert_eq!(v.compactions[0].segments_before, sealed);
    // The replaced files are gone; none is left half-written.
    let files = segment_files(storage.as_ref());
    assert!(files.iter().all(|f| !f.ends_with(".new")), "{files:?}");
    assert_eq!(files.len(), old.segments.len() - sealed + 1, "{files:?}");

    // The writer goes on; a new writer recovers; a second compaction takes the first one's
    // output and what came after it.
    for b in 300..400 {
        w.append(&rows(b * 10, 10)).unwrap();
    }
    w.close().unwrap();
    let w = TapeWriter::open_storage(storage.clone(), options(4096)).unwrap();
    assert!(w.recovery().is_clean(), "{:?}", w.recovery());
    let all = read_all(storage.clone());
    assert_eq!(all.len(), 4000);
    assert_eq!(&all[..3000], &before[..]);
    assert_verifies(storage.as_ref());
    let second = w.watch().compact(&CompactOptions::default()).unwrap();
    assert!(
        second.replaced.iter().any(|f| report.files.contains(f)),
        "{second:?}"
    );
    assert_eq!(read_all(storage.clone()), all);
    w.append(&rows(4000, 10)).unwrap();
    w.close().unwrap();
    let v = verify(storage.as_ref()).unwrap();
    assert!(v.problems.is_empty(), "{:#?}", v.problems);
    assert_eq!(v.compactions.len(), 2);
    assert_eq!(v.rows, 4010);
    // The 10 rows sealed by the close join the rest; after that nothing is left to gain.
    let w = TapeWriter::open_storage(storage.clone(), options(4096)).unwrap();
    let third = w.watch().compact(&CompactOptions::default()).unwrap();
    assert_eq!(third.replaced.len(), 2, "{third:?}");
    assert_eq!((third.files.len(), third.frames_after), (1, 1), "{third:?}");
    let fourth = w.watch().compact(&CompactOptions::default()).unwrap();
    assert!(fourth.replaced.is_empty(), "{fourth:?}");
    w.close().unwrap();
    assert_verifies(storage.as_ref());
    assert_eq!(read_all(storage.clone()).len(), 4010);
}

#[test]
fn a_bound_limits_what_is_rewritten() {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let w = record(storage.clone(), 200, 4096);
    let before = read_all(storage.clone());
    let dry = w
        .watch()
        .compact(&CompactOptions {
            before: Before::Seq(1000),
            apply: false,
            ..CompactOptions::default()
        })
        .unwrap();
    assert!(!dry.replaced.is_empty());
    assert!(dry.files.is_empty(), "a dry run writes nothing: {dry:?}");
    assert!(dry.first_seq + dry.rows <= 1000, "{dry:?}");
    assert_eq!(verify(storage.as_ref()).unwrap().compactions.len(), 0);
    let done = w
        .watch()
        .compact(&CompactOptions {
            before: Before::Seq(1000),
            ..CompactOptions::default()
        })
        .unwrap();
    assert_eq!(done.replaced, dry.replaced);
    assert!(done.first_seq + done.rows <= 1000, "{done:?}");
    // By time: rows before 1,700,000,000 s + 1.5 s are the first 1500.
    let by_time = w
        .watch()
        .compact(&CompactOptions {
            before: Before::Time(1_700_000_001_500_000),
            ..CompactOptions::default()
        })
        .unwrap();
    assert!(by_time.first_seq + by_time.rows <= 1500, "{by_time:?}");
    assert!(by_time.first_seq + by_time.rows > 1000, "{by_time:?}");
    w.close().unwrap();
    assert_eq!(read_all(storage.clone()), before);
    assert_verifies(storage.as_ref());
    assert!("seq:10".parse::<Before>().is_ok());
    assert!("2026-01-01T00:00:00Z".parse::<Before>().is_ok());
    let bad = "yesterday".parse::<Before>().unwrap_err();
    assert!(bad.contains("seq:"), "{bad}");
}

/// A crash (power loss: unsynced bytes and directory entries dropped) or a fault (EIO, ENOSPC)
/// at each step of a compaction: the next writer finds either the old segments or the new
/// ones, every row once, and a chain `verify` proves.
#[test]
fn a_crash_or_a_fault_at_any_step_leaves_the_old_tape_or_the_new_one() {
    let mut cases = 0;
    let mut new_form = 0;
    for op in [Op::Create, Op::Append, Op::Sync, Op::SyncDir, Op::Rename] {
        for n in 0..40u64 {
            for (fault, keep) in [
                (Fault::Eio, 0usize),
                (Fault::NoSpace, usize::MAX),
                (Fault::ShortWrite, 1),
            ] {
                let mem = MemStorage::new();
                let storage: Arc<dyn Storage> = Arc::new(mem.clone());
                let w = record(storage.clone(), 120, 4096);
                let before = read_all(storage.clone());
                mem.fail_nth(op, n, fault);
                let result = w.watch().compact(&CompactOptions::default());
                let fired = !mem.fired().is_empty();
                // Power goes: some of what was not synced survives.
                mem.crash(|k| k.min(keep));
                drop(w);
                mem.clear_faults();
                let w = TapeWriter::open_storage(storage.clone(), options(4096))
                    .unwrap_or_else(|e| panic!("{op:?} #{n} {fault:?}: recovery failed: {e}"));
                w.close().unwrap();
                let after = read_all(storage.clone());
                assert_eq!(
                    after, before,
                    "{op:?} #{n} {fault:?} ({result:?}): rows changed"
                );
                let v = verify(storage.as_ref()).unwrap();
                assert!(
                    v.problems.is_empty(),
                    "{op:?} #{n} {fault:?} ({result:?}): {:#?}",
                    v.problems
                );
                let files = segment_files(storage.as_ref());
                assert!(
                    files.iter().all(|f| !f.ends_with(".new")),
                    "{op:?} #{n}: {files:?}"
                );
                if v.compactions.len() == 1 {
                    new_form += 1;
                }
                cases += 1;
                if !fired {
                    // This op ran fewer than n times: later n change nothing.
                    assert!(result.is_ok(), "{result:?}");
                    break;
                }
            }
        }
    }
    assert!(cases > 50, "{cases} cases");
    assert!(
        new_form > 0 && new_form < cases,
        "{new_form} of {cases} ended compacted"
    );
    eprintln!("{cases} crash cases, {new_form} ended in the new form");
}

/// A reader part way through the tape when a compaction removes the segment it reads goes on
/// from the new segments: every row once, in order; a follower beside a writer and a
/// compaction too.
#[test]
fn readers_running_across_a_compaction_read_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = Arc::new(FsStorage::new(dir.path()).unwrap());
    let w = record(storage.clone(), 300, 4096);
    let before = read_all(storage.clone());

    // A reader that has read a little, and a follower in a thread.
    let mut reader = TapeReader::open_storage(storage.clone(), StartAt::Start).unwrap();
    let mut got = Vec::new();
    for _ in 0..5 {
        let (first, b) = reader.next_batch().unwrap().unwrap();
        got.extend(unpack(first, &b));
    }
    let follow_storage: Arc<dyn Storage> = Arc::new(FsStorage::new(dir.path()).unwrap());
    let follower = std::thread::spawn(move || {
        let mut r = TapeReader::open_storage(follow_storage, StartAt::Start)
            .unwrap()
            .follow(true);
        let mut out = Vec::new();
        while out.len() < 5000 {
            let (first, b) = r.next_batch().unwrap().unwrap();
            out.extend(unpack(first, &b));
            std::thread::sleep(Duration::from_micros(200));
        }
        out
    });
    std::thread::sleep(Duration::from_millis(20));
    let report = w.watch().compact(&CompactOptions::default()).unwrap();
    assert!(report.replaced.len() >= 5, "{report:?}");
    for b in 300..500 {
        w.append(&rows(b * 10, 10)).unwrap();
    }
    while let Some((first, b)) = reader.next_batch().unwrap() {
        got.extend(unpack(first, &b));
    }
    let all = read_all(storage.clone());
    assert_eq!(all.len(), 5000);
    assert_eq!(&all[..3000], &before[..]);
    assert_eq!(got, all, "the reader across the compaction");
    let followed = follower.join().unwrap();
    assert_eq!(followed, all, "the follower across the compaction");
    w.close().unwrap();
    assert_verifies(storage.as_ref());
}

#[test]
fn retention_after_compaction_keeps_the_rest_provable() {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let w = record(storage.clone(), 300, 4096);
    // Rewrite into segments of about 8 KiB of old bytes, so there are several to trim.
    let report = w
        .watch()
        .compact(&CompactOptions {
            segment_bytes: 8192,
            ..CompactOptions::default()
        })
        .unwrap();
    assert!(report.files.len() >= 2, "{report:?}");
    let all = read_all(storage.clone());
    let trimmed = w
        .watch()
        .trim(&"1KB".parse::<Retention>().unwrap(), None, true)
        .unwrap();
    assert!(!trimmed.removed.is_empty());
    assert!(
        trimmed
            .removed
            .iter()
            .any(|s| report.files.contains(&s.file)),
        "{trimmed:?}"
    );
    w.close().unwrap();
    let v = verify(storage.as_ref()).unwrap();
    assert!(v.problems.is_empty(), "{:#?}", v.problems);
    assert_eq!(v.first_seq, trimmed.first_seq);
    let rest = read_all(storage.clone());
    assert_eq!(rest.first().map(|r| r.0), Some(trimmed.first_seq));
    assert_eq!(&all[trimmed.first_seq as usize..], &rest[..]);
    // A writer reopens it cleanly.
    let w = TapeWriter::open_storage(storage.clone(), options(4096)).unwrap();
    assert!(w.recovery().is_clean(), "{:?}", w.recovery());
    w.close().unwrap();
}

#[test]
fn compaction_stops_before_a_damaged_segment_and_changes_nothing_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = Arc::new(FsStorage::new(dir.path()).unwrap());
    let w = record(storage.clone(), 200, 4096);
    w.close().unwrap();
    let files = segment_files(storage.as_ref());
    assert!(files.len() >= 4, "{files:?}");
    // Flip a byte in the middle of the third segment's frames.
    let victim = dir.path().join(&files[2]);
    let mut bytes = std::fs::read(&victim).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&victim, &bytes).unwrap();
    let problems_before = verify(storage.as_ref()).unwrap().problems;
    assert!(!problems_before.is_empty());

    let storage: Arc<dyn Storage> = Arc::new(FsStorage::new(dir.path()).unwrap());
    let w = TapeWriter::open_storage(storage.clone(), options(4096)).unwrap();
    let report = w.watch().compact(&CompactOptions::default()).unwrap();
    w.close().unwrap();
    assert_eq!(report.replaced, files[..2].to_vec(), "{report:?}");
    let why = report.stopped.clone().unwrap_or_default();
    assert!(why.contains(&files[2]), "{why}");
    // The damaged segment is as it was; what verify says about it is unchanged.
    assert_eq!(std::fs::read(&victim).unwrap(), bytes);
    let after = verify(storage.as_ref()).unwrap();
    assert_eq!(
        after.problems.len(),
        problems_before.len(),
        "{:#?}",
        after.problems
    );
    assert!(
        after.problems.iter().all(|p| p.file == files[2]),
        "{:#?}",
        after.problems
    );
}

#[test]
fn output_a_compaction_never_committed_is_invisible_and_removed_by_the_next_writer() {
    let mem = MemStorage::new();
    let storage: Arc<dyn Storage> = Arc::new(mem.clone());
    let w = record(storage.clone(), 100, 4096);
    let before = read_all(storage.clone());
    let files = segment_files(storage.as_ref());
    // The new segment's fsync fails: nothing is switched.
    mem.fail_nth(Op::Sync, 0, Fault::Eio);
    assert!(w.watch().compact(&CompactOptions::default()).is_err());
    mem.clear_faults();
    // A temporary file left by a crash.
    storage
        .create_new("seg-00000000000000000000-8.tape.new")
        .unwrap();
    assert_eq!(read_all(storage.clone()), before);
    assert_verifies(storage.as_ref());
    w.close().unwrap();
    let w = TapeWriter::open_storage(storage.clone(), options(4096)).unwrap();
    w.close().unwrap();
    assert_eq!(segment_files(storage.as_ref()), files);
    assert_eq!(read_all(storage.clone()), before);
    assert!(verify(storage.as_ref()).unwrap().compactions.is_empty());
}

#[test]
fn a_compaction_switched_but_not_renamed_reads_as_before_and_the_next_writer_finishes_it() {
    let mem = MemStorage::new();
    let storage: Arc<dyn Storage> = Arc::new(mem.clone());
    let w = record(storage.clone(), 100, 4096);
    let before = read_all(storage.clone());
    // The record is written; the rename into place fails.
    mem.fail_nth(Op::Rename, 0, Fault::Eio);
    assert!(w.watch().compact(&CompactOptions::default()).is_err());
    mem.clear_faults();
    assert_eq!(read_all(storage.clone()), before);
    assert_verifies(storage.as_ref());
    w.close().unwrap();
    let w = TapeWriter::open_storage(storage.clone(), options(4096)).unwrap();
    w.close().unwrap();
    assert_eq!(read_all(storage.clone()), before);
    let v = verify(storage.as_ref()).unwrap();
    assert!(v.problems.is_empty(), "{:#?}", v.problems);
    assert_eq!(v.compactions.len(), 1);
    let files = segment_files(storage.as_ref());
    assert!(files.iter().any(|f| f.ends_with("-1.tape")), "{files:?}");
    assert!(files.iter().all(|f| !f.ends_with(".new")), "{files:?}");
}

/// Whatever loses the manifest's record of a compaction (a damaged manifest moved aside), the
/// compacted segment — by then the only copy of its rows — is kept and read.
#[test]
fn a_lost_manifest_never_removes_a_compacted_segment() {
    let mem = MemStorage::new();
    let storage: Arc<dyn Storage> = Arc::new(mem.clone());
    let w = record(storage.clone(), 100, 4096);
    w.watch().compact(&CompactOptions::default()).unwrap();
    w.close().unwrap();
    let before = read_all(storage.clone());
    storage.remove("MANIFEST").unwrap();
    let w = TapeWriter::open_storage(storage.clone(), options(4096)).unwrap();
    w.close().unwrap();
    let files = segment_files(storage.as_ref());
    assert!(files.iter().any(|f| f.ends_with("-1.tape")), "{files:?}");
    assert_eq!(read_all(storage.clone()), before);
}

/// A nightly `compact` for weeks: each run rewrites the compacted segment and the new ones
/// after it; the chain stays provable however many compactions it passes through.
#[test]
fn many_compactions_in_a_row_keep_the_chain_provable() {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let mut expected = 0;
    for night in 0..24 {
        let w = TapeWriter::open_storage(storage.clone(), options(4096)).unwrap();
        for _ in 0..30 {
            w.append(&rows(expected, 10)).unwrap();
            expected += 10;
        }
        if night % 5 == 4 {
            // Now and then retention takes the oldest part too.
            w.watch()
                .trim(&"64KB".parse::<Retention>().unwrap(), None, true)
                .unwrap();
        }
        let report = w.watch().compact(&CompactOptions::default()).unwrap();
        assert!(!report.replaced.is_empty(), "night {night}: {report:?}");
        w.close().unwrap();
        let v = verify(storage.as_ref()).unwrap();
        assert!(v.problems.is_empty(), "night {night}: {:#?}", v.problems);
        let all = read_all(storage.clone());
        assert_eq!(all.last().map(|r| r.2), Some(expected - 1), "night {night}");
        assert_eq!(
            all.len() as u64,
            expected as u64 - v.first_seq,
            "night {night}"
        );
    }
    assert!(verify(storage.as_ref()).unwrap().compactions.len() >= 24);
}

/// A reader that began on the open segment, which is then sealed and compacted away under it,
/// goes on from the compacted segment at its row: nothing skipped, nothing twice.
#[test]
fn a_reader_on_an_open_segment_that_is_sealed_and_compacted_goes_on() {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let w = record(storage.clone(), 50, 1 << 20);
    let mut reader = TapeReader::open_storage(storage.clone(), StartAt::Start).unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let (first, b) = reader.next_batch().unwrap().unwrap();
        got.extend(unpack(first, &b));
    }
    w.close().unwrap();
    let w = TapeWriter::open_storage(storage.clone(), options(1 << 20)).unwrap();
    for b in 50..60 {
        w.append(&rows(b * 10, 10)).unwrap();
    }
    let report = w.watch().compact(&CompactOptions::default()).unwrap();
    assert_eq!(report.replaced.len(), 1, "{report:?}");
    w.close().unwrap();
    while let Some((first, b)) = reader.next_batch().unwrap() {
        got.extend(unpack(first, &b));
    }
    assert_eq!(reader.skipped_frames(), 0);
    assert_eq!(got, read_all(storage.clone()));
    assert_eq!(got.len(), 600);
}

/// An error after some new segments were switched to: those stay, the rest of the range is as
/// it was, the report says what stopped it, and the tape reads and verifies the same.
#[test]
fn an_error_part_way_keeps_what_was_switched_and_says_so() {
    let mem = MemStorage::new();
    let storage: Arc<dyn Storage> = Arc::new(mem.clone());
    let w = record(storage.clone(), 300, 4096);
    let before = read_all(storage.clone());
    // New segments of about 8 KiB of old bytes; the second one's file cannot be created.
    mem.fail_nth(Op::Create, 1, Fault::NoSpace);
    let report = w
        .watch()
        .compact(&CompactOptions {
            segment_bytes: 8192,
            ..CompactOptions::default()
        })
        .unwrap();
    mem.clear_faults();
    assert_eq!(report.files.len(), 1, "{report:?}");
    let why = report.error.clone().unwrap_or_default();
    assert!(why.contains("stopped after 1 new segments"), "{why}");
    w.close().unwrap();
    assert_eq!(read_all(storage.clone()), before);
    let v = verify(storage.as_ref()).unwrap();
    assert!(v.problems.is_empty(), "{:#?}", v.problems);
    assert_eq!(v.compactions.len(), 1);
}
