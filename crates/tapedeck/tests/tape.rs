//! The tape: round trips, recovery from crashes and damage, the format against its spec.

mod common;

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use common::{EVERY_COMPRESSION, batch};
use proptest::prelude::*;
use tapedeck::tape::format::{self, Coding, FrameHeader, SegmentHeader};
use tapedeck::tape::storage::{Fault, MemStorage, Storage};
use tapedeck::tape::verify::{inspect, verify};
use tapedeck::tape::{Compression, FsyncPolicy, StartAt, TapeOptions, TapeReader, TapeWriter};

fn rows(first: i64, n: usize) -> RecordBatch {
    batch(vec![
        (
            "t",
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    (0..n as i64).map(|k| (first + k) * 1000),
                )
                .with_timezone("UTC"),
            ) as ArrayRef,
        ),
        (
            "n",
            Arc::new(Int64Array::from_iter_values(first..first + n as i64)),
        ),
        (
            "s",
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|k| format!("row{}", first + k as i64)),
            )),
        ),
    ])
}

fn options(fsync: FsyncPolicy) -> TapeOptions {
    TapeOptions {
        fsync,
        compression: Compression::Zstd,
        zstd_level: None,
        segment_bytes: 4096,
        segment_age: None,
        frame_rows: tapedeck::tape::writer::DEFAULT_FRAME_ROWS,
        allow_schema_change: false,
        disk_full_timeout: Some(Duration::ZERO),
    }
}

/// The name of the tape's first segment file.
fn first_segment(storage: &MemStorage) -> String {
    storage
        .list()
        .unwrap()
        .into_iter()
        .find(|n| n.starts_with("seg-"))
        .unwrap()
}

/// Every `n` value on the tape, in order.
fn read_all(storage: &MemStorage) -> Vec<i64> {
    let r = TapeReader::open_storage(Arc::new(storage.clone()), StartAt::Start).unwrap();
    let mut out = Vec::new();
    for item in r {
        let (_, b) = item.unwrap();
        let n = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        out.extend(n.values().iter().copied());
    }
    out
}

#[test]
fn round_trip_across_segments_and_compressions() {
    for compression in EVERY_COMPRESSION {
        let storage = MemStorage::new();
        let w = TapeWriter::open_storage(
            Arc::new(storage.clone()),
            TapeOptions {
                compression,
                ..options(FsyncPolicy::Always)
            },
        )
        .unwrap();
        for i in 0..50 {
            let a = w.append(&rows(i * 10, 10)).unwrap();
            assert_eq!(
                (a.first_seq, a.end_seq),
                (i as u64 * 10, i as u64 * 10 + 10)
            );
            assert!(
                w.durable_seq() >= a.end_seq,
                "append returns once durable under fsync=always"
            );
        }
        w.close().unwrap();
        let got = read_all(&storage);
        assert_eq!(got, (0..500).collect::<Vec<_>>(), "{compression:?}");
        let segs = storage
            .list()
            .unwrap()
            .into_iter()
            .filter(|n| n.starts_with("seg-"))
            .count();
        assert!(segs > 1, "4 KiB segments roll");
        let report = verify(&storage).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.rows, 500);
    }
}

#[test]
fn readers_start_at_seq_time_or_end_and_stop_at_until() {
    let storage = MemStorage::new();
    let w =
        TapeWriter::open_storage(Arc::new(storage.clone()), options(FsyncPolicy::Always)).unwrap();
    for i in 0..10 {
        w.append(&rows(i * 10, 10)).unwrap();
    }
    w.close().unwrap();
    let s: Arc<dyn Storage> = Arc::new(storage.clone());
    let collect = |r: TapeReader| -> Vec<i64> {
        r.flat_map(|x| {
            let (_, b) = x.unwrap();
            b.column(1)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect()
    };
    assert_eq!(
        collect(TapeReader::open_storage(s.clone(), StartAt::Seq(37)).unwrap()),
        (37..100).collect::<Vec<_>>()
    );
    assert_eq!(
        collect(
            TapeReader::open_storage(s.clone(), StartAt::Seq(37))
                .unwrap()
                .until(Some(52))
        ),
        (37..52).collect::<Vec<_>>()
    );
    // Time 45 ms: the frame holding rows 40..50 is the first whose times reach it, and the
    // reader starts at the row that reaches it (issue 13: not up to a frame before T).
    assert_eq!(
        collect(TapeReader::open_storage(s.clone(), StartAt::Time(45_000)).unwrap())[0],
        45
    );
    assert!(collect(TapeReader::open_storage(s.clone(), StartAt::End).unwrap()).is_empty());
}

#[test]
fn reopening_recovers_and_appends_after_the_last_row() {
    let storage = MemStorage::new();
    let w =
        TapeWriter::open_storage(Arc::new(storage.clone()), options(FsyncPolicy::Always)).unwrap();
    w.append(&rows(0, 5)).unwrap();
    w.close().unwrap();
    let w =
        TapeWriter::open_storage(Arc::new(storage.clone()), options(FsyncPolicy::Always)).unwrap();
    assert!(w.recovery().is_clean(), "{:?}", w.recovery());
    assert_eq!(w.next_seq(), 5);
    w.append(&rows(5, 5)).unwrap();
    w.close().unwrap();
    assert_eq!(read_all(&storage), (0..10).collect::<Vec<_>>());
    assert!(verify(&storage).unwrap().problems.is_empty());
}

#[test]
fn a_crash_loses_nothing_acknowledged_and_recovery_reports_the_torn_tail() {
    let storage = MemStorage::new();
    let w = TapeWriter::open_storage(
        Arc::new(storage.clone()),
        TapeOptions {
            segment_bytes: 1 << 20,
            ..options(FsyncPolicy::Always)
        },
    )
    .unwrap();
    for i in 0..5 {
        w.append(&rows(i * 10, 10)).unwrap();
    }
    // Submitted but never waited for, then the power goes: a torn tail.
    w.submit(&rows(50, 10)).unwrap();
    let acked = w.durable_seq();
    w.abandon();
    storage.crash(|unsynced| unsynced / 2);
    let w =
        TapeWriter::open_storage(Arc::new(storage.clone()), options(FsyncPolicy::Always)).unwrap();
    let rec = w.recovery().clone();
    w.close().unwrap();
    let got = read_all(&storage);
    assert!(
        got.len() as u64 >= acked,
        "acknowledged rows survive: {} < {acked}",
        got.len()
    );
    assert_eq!(
        got,
        (0..got.len() as i64).collect::<Vec<_>>(),
        "in order, once"
    );
    assert!(!rec.resealed.is_empty(), "{rec:?}");
    assert!(verify(&storage).unwrap().problems.is_empty());
}

#[test]
fn a_corrupt_middle_frame_is_quarantined_and_the_rest_stays_readable() {
    let storage = MemStorage::new();
    let w = TapeWriter::open_storage(
        Arc::new(storage.clone()),
        TapeOptions {
            segment_bytes: 1 << 20,
            ..options(FsyncPolicy::Always)
        },
    )
    .unwrap();
    for i in 0..10 {
        w.append(&rows(i * 10, 10)).unwrap();
    }
    w.abandon(); // crash without sealing: the segment has no footer
    storage.crash(|u| u);
    let seg = first_segment(&storage);
    let bytes = storage.bytes(&seg).unwrap();
    let header_len = SegmentHeader::decode(&bytes).unwrap().len();
    let first = FrameHeader::decode(&bytes[header_len..]).unwrap();
    // Flip a payload bit in the third frame.
    let third = header_len + 2 * first.frame_len();
    storage.flip_bit(&seg, third + format::FRAME_HEADER + 3, 2);
    let w =
        TapeWriter::open_storage(Arc::new(storage.clone()), options(FsyncPolicy::Always)).unwrap();
    let rec = w.recovery().clone();
    w.close().unwrap();
    assert_eq!(rec.quarantined.len(), 1, "{rec:?}");
    assert_eq!(rec.quarantined[0].3, 10, "ten rows lost");
    let got = read_all(&storage);
    let want: Vec<i64> = (0..100).filter(|n| !(20..30).contains(n)).collect();
    assert_eq!(got, want);
    assert!(storage.list().is_ok());
    let q = storage.bytes(&format!(
        "quarantine/{}.{}-{}.bad",
        seg.trim_end_matches(".tape"),
        rec.quarantined[0].1,
        rec.quarantined[0].2
    ));
    assert!(q.is_some_and(|b| !b.is_empty()), "damaged bytes are kept");
    let report = verify(&storage).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.what.contains("quarantined")),
        "{:?}",
        report.problems
    );
    let info = inspect(&storage).unwrap();
    assert_eq!(info.quarantined.len(), 1);
}

#[test]
fn verify_finds_a_flipped_bit_in_a_sealed_segment_and_the_broken_chain() {
    let storage = MemStorage::new();
    // Frames of 10 rows, so a flipped bit costs one of them.
    let w = TapeWriter::open_storage(
        Arc::new(storage.clone()),
        TapeOptions {
            frame_rows: 10,
            ..options(FsyncPolicy::Never)
        },
    )
    .unwrap();
    for i in 0..40 {
        w.submit(&rows(i * 10, 10)).unwrap();
    }
    w.close().unwrap();
    assert!(verify(&storage).unwrap().problems.is_empty());
    let seg = first_segment(&storage);
    let bytes = storage.bytes(&seg).unwrap();
    let header_len = SegmentHeader::decode(&bytes).unwrap().len();
    storage.flip_bit(&seg, header_len + 50, 0);
    let report = verify(&storage).unwrap();
    let text: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|p| p.contains("damaged") || p.contains("torn")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|p| p.contains("hash chain broken")),
        "{text:?}"
    );
    // Readers skip the bad frame and go on.
    let got = read_all(&storage);
    assert!(got.len() >= 390 && got.len() < 400, "{}", got.len());
}

#[test]
fn a_second_writer_is_refused_with_the_holders_pid() {
    let dir = tempfile::tempdir().unwrap();
    let w = TapeWriter::open(dir.path(), TapeOptions::default()).unwrap();
    let err = TapeWriter::open(dir.path(), TapeOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&std::process::id().to_string()), "{msg}");
    // Readers are never blocked.
    w.append(&rows(0, 3)).unwrap();
    w.wait_durable(3).unwrap();
    let n: usize = TapeReader::open(dir.path(), StartAt::Start)
        .unwrap()
        .map(|b| b.unwrap().1.num_rows())
        .sum();
    assert_eq!(n, 3);
    w.close().unwrap();
    TapeWriter::open(dir.path(), TapeOptions::default())
        .unwrap()
        .close()
        .unwrap();
}

#[test]
fn group_commit_covers_many_frames_with_few_syncs() {
    let storage = MemStorage::new();
    let w = TapeWriter::open_storage(
        Arc::new(storage.clone()),
        TapeOptions {
            segment_bytes: 1 << 30,
            ..options(FsyncPolicy::Always)
        },
    )
    .unwrap();
    for i in 0..2000 {
        w.submit(&rows(i * 2, 2)).unwrap();
    }
    w.wait_durable(4000).unwrap();
    assert!(
        storage.syncs() < 2000,
        "{} syncs for 2000 frames",
        storage.syncs()
    );
    w.close().unwrap();
    assert_eq!(read_all(&storage).len(), 4000);
}

#[test]
fn interval_policy_acknowledges_without_waiting() {
    let storage = MemStorage::new();
    let w = TapeWriter::open_storage(
        Arc::new(storage.clone()),
        options(FsyncPolicy::Interval(Duration::from_millis(5))),
    )
    .unwrap();
    let a = w.append(&rows(0, 10)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while w.durable_seq() < a.end_seq && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(
        w.durable_seq(),
        10,
        "the interval sync acknowledged the frame"
    );
    w.close().unwrap();
}

#[test]
fn a_full_disk_stops_the_writer_and_loses_nothing_acknowledged() {
    let storage = MemStorage::new();
    let w = TapeWriter::open_storage(
        Arc::new(storage.clone()),
        TapeOptions {
            segment_bytes: 1 << 30,
            ..options(FsyncPolicy::Always)
        },
    )
    .unwrap();
    for i in 0..5 {
        w.append(&rows(i * 10, 10)).unwrap();
    }
    let acked = w.durable_seq();
    storage.fail_after(100, Fault::ShortWrite);
    let mut failed = None;
    for i in 5..50 {
        if let Err(e) = w.append(&rows(i * 10, 10)) {
            failed = Some(e);
            break;
        }
    }
    let err = failed.expect("ENOSPC surfaces as an error");
    assert!(
        err.to_string().contains("mem:seg-"),
        "names the file: {err}"
    );
    drop(w);
    storage.crash(|_| 0);
    let w =
        TapeWriter::open_storage(Arc::new(storage.clone()), options(FsyncPolicy::Always)).unwrap();
    w.close().unwrap();
    let got = read_all(&storage);
    assert!(got.len() as u64 >= acked);
    assert_eq!(got, (0..got.len() as i64).collect::<Vec<_>>());
}

#[test]
fn golden_frame_bytes_match_the_spec() {
    let h = FrameHeader {
        compression: Compression::Zstd,
        payload_len: 3,
        rows: 2,
        first_seq: 7,
        time: Some((-1, 5)),
        time_deltas: false,
    };
    let mut out = Vec::new();
    h.encode_into(b"abc", &mut out);
    let mut want = Vec::new();
    want.extend_from_slice(b"TDFR");
    want.extend_from_slice(&1u16.to_le_bytes());
    want.extend_from_slice(&(1u16 | (2 << 1)).to_le_bytes()); // time valid, zstd
    want.extend_from_slice(&3u32.to_le_bytes());
    want.extend_from_slice(&2u32.to_le_bytes());
    want.extend_from_slice(&7u64.to_le_bytes());
    want.extend_from_slice(&(-1i64).to_le_bytes());
    want.extend_from_slice(&5i64.to_le_bytes());
    want.extend_from_slice(b"abc");
    let crc = crc32c::crc32c(&want);
    want.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(out, want);
    assert_eq!(FrameHeader::decode(&out).unwrap(), h);
    assert_eq!(h.check(&out).unwrap(), b"abc");

    let sh = SegmentHeader {
        first_seq: 9,
        segment: 1,
        prev_chain: [7; 32],
        schema: vec![1, 2, 3, 4],
    };
    let b = sh.encode();
    assert_eq!(&b[0..8], b"TAPESEG1");
    assert_eq!(u32::from_le_bytes(b[12..16].try_into().unwrap()), 4);
    assert_eq!(u64::from_le_bytes(b[16..24].try_into().unwrap()), 9);
    assert_eq!(&b[32..64], &[7; 32]);
    assert_eq!(b.len(), 64 + 4 + 4);
    assert_eq!(SegmentHeader::decode(&b).unwrap(), sh);
    assert_eq!(format::segment_name(42), "seg-00000000000000000042.tape");
}

/// A tape of `frames` 10-row frames (one flush each) in small segments, on a simulated disk.
fn tape_of_small_frames(frames: i64) -> MemStorage {
    let storage = MemStorage::new();
    let w =
        TapeWriter::open_storage(Arc::new(storage.clone()), options(FsyncPolicy::Never)).unwrap();
    for i in 0..frames {
        w.submit(&rows(i * 10, 10)).unwrap();
        w.flush().unwrap();
    }
    w.close().unwrap();
    storage
}

#[test]
fn golden_footer_bytes_match_the_spec_in_both_versions() {
    use tapedeck::tape::format::Footer;
    let mut footer = Footer {
        rows: 30,
        min_time: -1,
        max_time: 9,
        index: vec![(72, 100), (500, 110), (900, 120)],
        times: Some(vec![Some((-1, 5)), None, Some((6, 9))]),
        chain: [3; 32],
    };
    // Version 2: 32-byte entries with each frame's times; no time is (i64::MAX, i64::MIN).
    let b = footer.encode();
    let mut want = Vec::new();
    want.extend_from_slice(b"TDFU");
    want.extend_from_slice(&3u32.to_le_bytes());
    want.extend_from_slice(&30u64.to_le_bytes());
    want.extend_from_slice(&(-1i64).to_le_bytes());
    want.extend_from_slice(&9i64.to_le_bytes());
    for (offset, seq, lo, hi) in [
        (72u64, 100u64, -1i64, 5i64),
        (500, 110, i64::MAX, i64::MIN),
        (900, 120, 6, 9),
    ] {
        want.extend_from_slice(&offset.to_le_bytes());
        want.extend_from_slice(&seq.to_le_bytes());
        want.extend_from_slice(&lo.to_le_bytes());
        want.extend_from_slice(&hi.to_le_bytes());
    }
    want.extend_from_slice(&[3; 32]);
    let crc = crc32c::crc32c(&want);
    want.extend_from_slice(&crc.to_le_bytes());
    want.extend_from_slice(&((84 + 32 * 3) as u64).to_le_bytes());
    want.extend_from_slice(b"TAPEEND1");
    assert_eq!(b, want);
    assert_eq!(b.len(), footer.len());
    assert_eq!(Footer::len_from_tail(&b).unwrap(), b.len() as u64);
    assert_eq!(Footer::decode(&b).unwrap(), footer);
    // Every byte before the end magic is checked: a flipped bit anywhere there, and every
    // cut, is refused (never a footer with other values).
    for i in 0..b.len() - 8 {
        let mut bad = b.clone();
        bad[i] ^= 0x10;
        assert!(Footer::decode(&bad).is_err(), "flip at byte {i} decoded");
    }
    for cut in 0..b.len() {
        assert!(Footer::decode(&b[..cut]).is_err(), "cut at {cut} decoded");
    }

    // Version 1 (what tapes before version 2 hold): 16-byte entries, no times.
    footer.times = None;
    let b = footer.encode();
    assert_eq!(&b[0..4], b"TDFT");
    assert_eq!(b.len(), 84 + 16 * 3);
    assert_eq!(
        u64::from_le_bytes(b[32 + 16..40 + 16].try_into().unwrap()),
        500
    );
    assert_eq!(
        u64::from_le_bytes(b[40 + 16..48 + 16].try_into().unwrap()),
        110
    );
    let decoded = Footer::decode(&b).unwrap();
    assert_eq!(decoded.times, None);
    assert_eq!(decoded, footer);
}

#[test]
fn a_sealed_segment_s_footer_holds_its_frames_times_and_verify_checks_them() {
    let storage = tape_of_small_frames(40);
    let mut sealed = 0;
    for name in storage.list().unwrap() {
        if !name.starts_with("seg-") {
            continue;
        }
        let scanned = tapedeck::tape::segment::scan(&storage, &name)
            .unwrap()
            .unwrap();
        let Some(footer) = &scanned.footer else {
            continue;
        };
        sealed += 1;
        let want: Vec<_> = scanned.frames.iter().map(|f| f.header.time).collect();
        assert!(want.iter().all(Option::is_some));
        assert_eq!(footer.times.as_ref(), Some(&want), "{name}");
        // Opened from its footer alone, the frames carry the same times.
        let indexed = tapedeck::tape::segment::open_indexed(&storage, &name)
            .unwrap()
            .unwrap();
        let got: Vec<_> = indexed.frames.iter().map(|f| f.header.time).collect();
        assert_eq!(got, want);
    }
    assert!(sealed >= 2, "{sealed} sealed segments");
    assert!(verify(&storage).unwrap().problems.is_empty());

    // A footer whose times lie (CRC recomputed, so only the comparison can tell).
    let name = first_segment(&storage);
    let scanned = tapedeck::tape::segment::scan(&storage, &name)
        .unwrap()
        .unwrap();
    let (mut footer, at) = (scanned.footer.unwrap(), scanned.footer_offset.unwrap());
    if let Some(t) = footer.times.as_mut().and_then(|t| t.first_mut()) {
        *t = Some((i64::MIN, i64::MIN));
    }
    let mut bytes = storage.bytes(&name).unwrap();
    bytes.truncate(at as usize);
    bytes.extend_from_slice(&footer.encode());
    storage.truncate(&name, 0).unwrap();
    storage.append(&name, &bytes).unwrap();
    let report = verify(&storage).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.to_string().contains("frame times do not match")),
        "{:?}",
        report.problems
    );
}

#[test]
fn every_truncation_of_a_tape_recovers_to_a_prefix() {
    let storage = MemStorage::new();
    let w = TapeWriter::open_storage(
        Arc::new(storage.clone()),
        TapeOptions {
            segment_bytes: 1 << 20,
            ..options(FsyncPolicy::Never)
        },
    )
    .unwrap();
    for i in 0..6 {
        w.submit(&rows(i * 3, 3)).unwrap();
    }
    w.close().unwrap();
    let seg = first_segment(&storage);
    let full = storage.bytes(&seg).unwrap();
    let manifest = storage.bytes("MANIFEST").unwrap();
    for cut in 0..=full.len() {
        let s = MemStorage::new();
        s.put(&seg, full[..cut].to_vec());
        s.put("MANIFEST", manifest.clone());
        let w = TapeWriter::open_storage(Arc::new(s.clone()), options(FsyncPolicy::Never))
            .unwrap_or_else(|e| panic!("cut at {cut}: recovery failed: {e}"));
        w.close().unwrap();
        let got = read_all(&s);
        assert_eq!(
            got,
            (0..got.len() as i64).collect::<Vec<_>>(),
            "cut at {cut}"
        );
        if cut == full.len() {
            assert_eq!(got.len(), 18);
        }
        let report = verify(&s).unwrap();
        assert!(
            report.problems.is_empty(),
            "cut at {cut}: {:?}",
            report.problems
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random appends, crashes (with torn writes) and reopenings: every acknowledged row is
    /// readable, in order, exactly once; recovery never fails; verify passes after it. Rows are
    /// acknowledged only by an explicit wait (the interval is an hour), and `flush` hands
    /// unacknowledged frames to the storage unsynced, so a crash really tears them.
    #[test]
    fn random_crashes_never_lose_acknowledged_rows(
        steps in proptest::collection::vec((1usize..6, 0usize..4, any::<u16>()), 1..25),
    ) {
        let storage = MemStorage::new();
        let mut next: i64 = 0;
        let mut acked: u64 = 0;
        let manual = FsyncPolicy::Interval(Duration::from_secs(3600));
        let mut w = Some(TapeWriter::open_storage(Arc::new(storage.clone()), TapeOptions { segment_bytes: 2048, ..options(manual) }).unwrap());
        for (n, action, seed) in steps {
            let writer = w.as_ref().unwrap();
            prop_assert_eq!(writer.next_seq(), next as u64);
            match action {
                0 | 1 => {
                    writer.submit(&rows(next, n)).unwrap();
                    next += n as i64;
                    writer.wait_durable(next as u64).unwrap();
                    acked = next as u64;
                }
                2 => {
                    writer.submit(&rows(next, n)).unwrap();
                    writer.flush().unwrap();
                    next += n as i64;
                }
                _ => {
                    acked = acked.max(writer.durable_seq());
                    w.take().unwrap().abandon();
                    storage.crash(|u| if u == 0 { 0 } else { seed as usize % (u + 1) });
                    let reopened = TapeWriter::open_storage(Arc::new(storage.clone()), TapeOptions { segment_bytes: 2048, ..options(manual) }).unwrap();
                    let got = read_all(&storage);
                    prop_assert!(got.len() as u64 >= acked, "{} rows readable, {} acknowledged", got.len(), acked);
                    prop_assert_eq!(&got, &(0..got.len() as i64).collect::<Vec<_>>());
                    next = got.len() as i64;
                    prop_assert_eq!(reopened.next_seq(), next as u64);
                    w = Some(reopened);
                }
            }
        }
        if let Some(writer) = w.take() {
            acked = acked.max(writer.durable_seq());
            writer.close().unwrap();
        }
        let got = read_all(&storage);
        prop_assert!(got.len() as u64 >= acked);
        prop_assert_eq!(&got, &(0..got.len() as i64).collect::<Vec<_>>());
        let report = verify(&storage).unwrap();
        prop_assert!(report.problems.is_empty(), "{:?}", report.problems);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Frame coalescing (issue 17) never changes which rows are acknowledged: the same script of
    /// submits, flushes and waits, run with one frame per batch and with batches joined into
    /// frames of `frame_rows`, acknowledges the same rows after every step (one segment, so
    /// only the waits fsync), and after a power loss that drops every unsynced byte each tape
    /// holds exactly its acknowledged rows. With small segments (seals fsync too, at points that
    /// depend on frame sizes) and a power loss that keeps a random part of the unsynced bytes, a
    /// coalescing tape holds every acknowledged row, in order, once.
    #[test]
    fn frame_coalescing_never_changes_which_rows_are_acknowledged(
        frame_rows in prop_oneof![Just(2usize), Just(7), Just(64), Just(65_536)],
        steps in proptest::collection::vec((1usize..40, 0usize..3), 1..30),
        seed in any::<u16>(),
    ) {
        let manual = FsyncPolicy::Interval(Duration::from_secs(3600));
        let run = |frame_rows: usize, segment_bytes: u64, keep: &dyn Fn(usize) -> usize| -> Result<(Vec<u64>, u64, Vec<i64>), TestCaseError> {
            let storage = MemStorage::new();
            let o = TapeOptions { segment_bytes, frame_rows, ..options(manual) };
            let w = TapeWriter::open_storage(Arc::new(storage.clone()), o).unwrap();
            let mut next = 0i64;
            let mut acked_after = Vec::new();
            for &(n, action) in &steps {
                w.submit(&rows(next, n)).unwrap();
                next += n as i64;
                match action {
                    0 => w.wait_durable(next as u64).unwrap(),
                    1 => w.flush().unwrap(),
                    _ => {}
                }
                acked_after.push(w.durable_seq());
            }
            let acked = w.durable_seq();
            w.abandon();
            storage.crash(keep);
            drop(TapeWriter::open_storage(Arc::new(storage.clone()), TapeOptions { segment_bytes, frame_rows, ..options(manual) }).unwrap());
            Ok((acked_after, acked, read_all(&storage)))
        };
        let drop_all = |_: usize| 0;
        let (per_batch, acked, got) = run(1, 1 << 30, &drop_all)?;
        let (joined, acked_joined, got_joined) = run(frame_rows, 1 << 30, &drop_all)?;
        prop_assert_eq!(&per_batch, &joined, "acknowledged rows after each step");
        prop_assert_eq!(acked, acked_joined);
        // Nothing unsynced survives: each tape is exactly its acknowledged rows.
        prop_assert_eq!(&got, &(0..acked as i64).collect::<Vec<_>>());
        prop_assert_eq!(&got_joined, &got);
        // A power loss that keeps part of the unsynced bytes (a torn write): at least the
        // acknowledged rows, in order, once.
        let torn = move |u: usize| if u == 0 { 0 } else { seed as usize % (u + 1) };
        let (_, acked, got) = run(frame_rows, 2048, &drop_all)?;
        prop_assert_eq!(&got, &(0..acked as i64).collect::<Vec<_>>());
        let (_, acked, got) = run(frame_rows, 2048, &torn)?;
        prop_assert!(got.len() as u64 >= acked, "{} rows readable, {} acknowledged", got.len(), acked);
        prop_assert_eq!(&got, &(0..got.len() as i64).collect::<Vec<_>>());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A bit flipped anywhere in a sealed tape: reopening recovers without error, readers never
    /// panic and deliver rows in order, and verify either passes or names the damage.
    #[test]
    fn a_flipped_bit_anywhere_gives_recovery_or_a_report(pick in any::<u32>(), bit in 0u8..8) {
        let storage = MemStorage::new();
        let w = TapeWriter::open_storage(Arc::new(storage.clone()), TapeOptions { segment_bytes: 1500, ..options(FsyncPolicy::Never) }).unwrap();
        for i in 0..12 {
            w.submit(&rows(i * 4, 4)).unwrap();
        }
        w.close().unwrap();
        let files: Vec<String> = storage.list().unwrap();
        let name = &files[pick as usize % files.len()];
        let len = storage.bytes(name).unwrap().len();
        prop_assume!(len > 0);
        storage.flip_bit(name, (pick as usize / files.len()) % len, bit);
        let before = verify(&storage).unwrap();
        let w = TapeWriter::open_storage(Arc::new(storage.clone()), options(FsyncPolicy::Never)).unwrap();
        w.close().unwrap();
        let got = read_all(&storage);
        let mut sorted = got.clone();
        sorted.sort();
        sorted.dedup();
        prop_assert_eq!(&got, &sorted, "rows stay in order, once");
        if got.len() < 48 {
            prop_assert!(!before.problems.is_empty() || name == "MANIFEST", "rows were lost but verify saw nothing");
        }
    }
}

#[test]
fn a_following_reader_sees_rows_as_they_are_appended_and_across_segment_rolls() {
    let storage = MemStorage::new();
    let w = TapeWriter::open_storage(
        Arc::new(storage.clone()),
        TapeOptions {
            segment_bytes: 2048,
            ..options(FsyncPolicy::Always)
        },
    )
    .unwrap();
    w.append(&rows(0, 5)).unwrap();
    let s: Arc<dyn Storage> = Arc::new(storage.clone());
    let reader = std::thread::spawn(move || {
        let mut r = TapeReader::open_storage(s, StartAt::Start)
            .unwrap()
            .follow(true)
            .until(Some(200));
        let mut got = Vec::new();
        while let Some((_, b)) = r.next_batch().unwrap() {
            got.extend(
                b.column(1)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .iter()
                    .copied(),
            );
        }
        got
    });
    std::thread::sleep(Duration::from_millis(100));
    for i in 1..40 {
        w.append(&rows(i * 5, 5)).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let got = reader.join().unwrap();
    assert_eq!(
        got,
        (0..200).collect::<Vec<_>>(),
        "every row, in order, across rolls"
    );
    w.close().unwrap();
}

/// Issue 13, item 4: `--from time:T` starts at the first row whose time reaches T, not at the
/// start of the frame that holds it.
#[test]
fn a_time_start_trims_the_first_frame_to_that_time() {
    let storage = MemStorage::new();
    let w =
        TapeWriter::open_storage(Arc::new(storage.clone()), options(FsyncPolicy::Always)).unwrap();
    for i in 0..10 {
        w.append(&rows(i * 10, 10)).unwrap();
    }
    w.close().unwrap();
    // Row n has time n ms.
    let r = TapeReader::open_storage(Arc::new(storage.clone()), StartAt::Time(25_000)).unwrap();
    let mut got = Vec::new();
    for item in r {
        let (first, b) = item.unwrap();
        let n = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        if got.is_empty() {
            assert_eq!(first, 25, "the sequence number of the first row given");
        }
        got.extend(n.values().iter().copied());
    }
    assert_eq!(got, (25..100).collect::<Vec<_>>());
}

#[test]
fn a_projected_decode_equals_the_full_decode_projected_and_refuses_cut_payloads() {
    use arrow_buffer::Buffer;
    use tapedeck::tape::codec::{BatchDecoder, BatchEncoder, decode_projected};
    let b = rows(10, 100);
    for compression in EVERY_COMPRESSION {
        let mut enc = BatchEncoder::new(&b.schema(), compression).unwrap();
        let (payload, deltas) = enc.encode(&b).unwrap();
        // Compressed frames store their timestamp column as differences; coded ones are
        // frames of version 3.
        assert_eq!(
            deltas,
            match compression {
                Compression::None => Coding::Ipc,
                Compression::CodedZstd | Compression::CodedXz => Coding::Coded,
                _ => Coding::TimeDeltas,
            }
        );
        let mut dec = BatchDecoder::new(enc.schema_message()).unwrap();
        let full = dec.decode(&payload, deltas).unwrap();
        assert_eq!(full, b, "{compression:?}");
        let schema = dec.schema();
        let buf = Buffer::from_vec(payload.clone());
        for projection in [vec![2, 0], vec![1], vec![], vec![0, 1, 2]] {
            let got = decode_projected(&schema, &buf, &projection, deltas).unwrap();
            assert_eq!(
                got,
                full.project(&projection).unwrap(),
                "{compression:?} {projection:?}"
            );
            assert_eq!(got.num_rows(), 100);
        }
        for cut in [0, 3, 7, 20, payload.len() / 2, payload.len() - 1] {
            let short = Buffer::from_vec(payload[..cut].to_vec());
            assert!(
                decode_projected(&schema, &short, &[0], deltas).is_err(),
                "cut at {cut}"
            );
        }
    }
}

/// Submits `batches` batches of `n` rows each (without waiting), closes, and returns the
/// storage with the sequence ranges `submit` returned.
fn submitted(options: TapeOptions, batches: i64, n: usize) -> (MemStorage, Vec<(u64, u64)>) {
    let storage = MemStorage::new();
    let w = TapeWriter::open_storage(Arc::new(storage.clone()), options).unwrap();
    let mut ranges = Vec::new();
    for i in 0..batches {
        let a = w.submit(&rows(i * n as i64, n)).unwrap();
        ranges.push((a.first_seq, a.end_seq));
    }
    w.close().unwrap();
    (storage, ranges)
}

#[test]
fn flushes_submitted_between_commits_become_one_frame() {
    // 64-row flushes, as `record` makes them, under an fsync interval long enough that many
    // arrive between two commits.
    let options = TapeOptions {
        segment_bytes: 1 << 30,
        ..options(FsyncPolicy::Interval(Duration::from_secs(60)))
    };
    let (storage, ranges) = submitted(options, 1000, 64);
    // Sequence numbers are given at submission, one after the other.
    for (i, (first, end)) in ranges.iter().enumerate() {
        assert_eq!((*first, *end), (i as u64 * 64, (i as u64 + 1) * 64));
    }
    let report = verify(&storage).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.rows, 64_000);
    // 64,000 rows fit in one frame of at most 65,536 rows.
    assert_eq!(
        report.frames, 1,
        "64-row flushes were written as {} frames",
        report.frames
    );
    assert_eq!(read_all(&storage), (0..64_000).collect::<Vec<_>>());
}

#[test]
fn a_frame_holds_at_most_frame_rows_and_frame_rows_1_keeps_a_frame_per_batch() {
    for (frame_rows, batch_rows, frames) in [(1000, 64, 7), (1, 64, 100), (100, 250, 100)] {
        let options = TapeOptions {
            segment_bytes: 1 << 30,
            frame_rows,
            ..options(FsyncPolicy::Interval(Duration::from_secs(60)))
        };
        let (storage, _) = submitted(options, 100, batch_rows);
        let report = verify(&storage).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        // 100 × 64 = 6,400 rows in frames cut at the first batch reaching 1,000 rows (16
        // batches, 1,024 rows): 6 of them and the 256 rows left; a batch bigger than
        // frame_rows is a frame of its own.
        assert_eq!(
            report.frames, frames,
            "frame_rows {frame_rows}, batches of {batch_rows}"
        );
        let n = 100 * batch_rows as i64;
        assert_eq!(read_all(&storage), (0..n).collect::<Vec<_>>());
    }
}

#[test]
fn held_rows_go_to_their_own_segment_when_the_schema_changes() {
    let storage = MemStorage::new();
    let w = TapeWriter::open_storage(
        Arc::new(storage.clone()),
        TapeOptions {
            allow_schema_change: true,
            ..options(FsyncPolicy::Interval(Duration::from_secs(60)))
        },
    )
    .unwrap();
    w.submit(&rows(0, 10)).unwrap();
    w.submit(&rows(10, 10)).unwrap();
    let other = batch(vec![(
        "m",
        Arc::new(Int64Array::from_iter_values(0..5)) as ArrayRef,
    )]);
    w.submit(&other).unwrap();
    w.submit(&rows(20, 10)).unwrap();
    w.close().unwrap();
    let report = verify(&storage).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    // Three segments (a schema change rolls), each of one frame: 20 rows, 5, 10.
    assert_eq!((report.segments, report.frames, report.rows), (3, 3, 35));
    let seqs: Vec<(u64, usize)> = TapeReader::open_storage(Arc::new(storage), StartAt::Start)
        .unwrap()
        .map(|item| item.map(|(seq, b)| (seq, b.num_rows())).unwrap())
        .collect();
    assert_eq!(seqs, vec![(0, 20), (20, 5), (25, 10)]);
}

/// Frame format version 2 (docs/tape-format.md, "Time as differences"): a compressed frame with
/// a timestamp column is written as version 2 and reads back exactly — nulls, a sliced batch,
/// values at the ends of the i64 range (the differences wrap) — and an uncompressed one stays
/// version 1, read in place.
#[test]
fn compressed_frames_store_time_as_differences_and_read_back_exactly() {
    use tapedeck::tape::format::FRAME_HEADER;
    let times = TimestampMicrosecondArray::from(vec![
        Some(i64::MIN),
        Some(i64::MAX),
        None,
        Some(0),
        Some(-5),
        Some(1_767_225_600_000_000),
        None,
        Some(1_767_225_600_000_100),
    ])
    .with_timezone("UTC");
    let n = Int64Array::from_iter_values(0..8);
    let whole = batch(vec![
        ("t", Arc::new(times) as ArrayRef),
        ("n", Arc::new(n) as ArrayRef),
    ]);
    for compression in EVERY_COMPRESSION {
        let storage = MemStorage::new();
        let w = TapeWriter::open_storage(
            Arc::new(storage.clone()),
            TapeOptions {
                compression,
                frame_rows: 1,
                ..options(FsyncPolicy::Always)
            },
        )
        .unwrap();
        w.append(&whole).unwrap();
        w.append(&whole.slice(3, 4)).unwrap();
        w.close().unwrap();
        let name = first_segment(&storage);
        let bytes = storage.bytes(&name).unwrap();
        let header = SegmentHeader::decode(&bytes).unwrap();
        let first_frame = header.len();
        let version = u16::from_le_bytes([bytes[first_frame + 4], bytes[first_frame + 5]]);
        let want = match compression {
            Compression::None => 1,
            Compression::CodedZstd | Compression::CodedXz => 3,
            _ => 2,
        };
        assert_eq!(version, want, "{compression:?}");
        assert!(bytes.len() > first_frame + FRAME_HEADER);
        let r = TapeReader::open_storage(Arc::new(storage.clone()), StartAt::Start).unwrap();
        let got: Vec<RecordBatch> = r.map(|i| i.unwrap().1).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], whole, "{compression:?}");
        assert_eq!(got[1], whole.slice(3, 4), "{compression:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any timestamps, nulls anywhere: stored as differences, read back as they were.
    #[test]
    fn time_differences_round_trip_any_values(
        values in proptest::collection::vec(proptest::option::of(any::<i64>()), 1..200),
    ) {
        use tapedeck::tape::codec::{BatchDecoder, BatchEncoder};
        let times = TimestampMicrosecondArray::from(values).with_timezone("UTC");
        let b = batch(vec![("t", Arc::new(times) as ArrayRef)]);
        let mut enc = BatchEncoder::new(&b.schema(), Compression::Zstd).unwrap();
        let (payload, deltas) = enc.encode(&b).unwrap();
        prop_assert_eq!(deltas, Coding::TimeDeltas);
        let mut dec = BatchDecoder::new(enc.schema_message()).unwrap();
        prop_assert_eq!(dec.decode(&payload, deltas).unwrap(), b);
    }
}

/// A frame of a format version this build does not know, whose CRC checks out, was written by a
/// newer tapedeck: recovery refuses the tape, saying so, and changes nothing — never cuts or
/// quarantines it as damage. (The same bytes with a bad CRC are damage, as ever.)
#[test]
fn a_frame_from_a_newer_version_is_refused_not_cut_as_damage() {
    use tapedeck::tape::format::FRAME_HEADER;
    let storage = MemStorage::new();
    let o = TapeOptions {
        frame_rows: 1,
        ..options(FsyncPolicy::Always)
    };
    let w = TapeWriter::open_storage(Arc::new(storage.clone()), o.clone()).unwrap();
    w.append(&rows(0, 10)).unwrap();
    w.append(&rows(10, 10)).unwrap();
    // Left open, as a crash leaves it: the next writer scans the segment.
    w.abandon();
    let name = first_segment(&storage);
    let mut bytes = storage.bytes(&name).unwrap();
    let first = SegmentHeader::decode(&bytes).unwrap().len();
    let payload = u32::from_le_bytes(bytes[first + 8..first + 12].try_into().unwrap()) as usize;
    let second = first + FRAME_HEADER + payload + 4;
    bytes[second + 4..second + 6].copy_from_slice(&4u16.to_le_bytes());
    let body = bytes.len() - 4;
    // The second frame is the file's last: its CRC is the file's last 4 bytes.
    let payload2 = u32::from_le_bytes(bytes[second + 8..second + 12].try_into().unwrap()) as usize;
    assert_eq!(second + FRAME_HEADER + payload2 + 4, bytes.len());
    let crc = crc32c::crc32c(&bytes[second..body]);
    bytes[body..].copy_from_slice(&crc.to_le_bytes());
    storage.put(&name, bytes.clone());
    let err = TapeWriter::open_storage(Arc::new(storage.clone()), o.clone()).unwrap_err();
    assert!(
        err.to_string()
            .contains("format version 4, written by a newer tapedeck"),
        "{err}"
    );
    assert_eq!(storage.bytes(&name).unwrap(), bytes, "nothing changed");
    // Also behind damage: the scan, searching past a damaged first frame, finds it.
    let mut behind = bytes.clone();
    behind[first + FRAME_HEADER] ^= 1;
    storage.put(&name, behind.clone());
    let err = TapeWriter::open_storage(Arc::new(storage.clone()), o.clone()).unwrap_err();
    assert!(
        err.to_string().contains("written by a newer tapedeck"),
        "{err}"
    );
    assert_eq!(storage.bytes(&name).unwrap(), behind, "nothing changed");
    // With a CRC that does not check out it is damage: recovery cuts it (a torn tail).
    let mut damaged = bytes;
    damaged[body] ^= 1;
    storage.put(&name, damaged);
    let w = TapeWriter::open_storage(Arc::new(storage.clone()), o).unwrap();
    assert_eq!(w.next_seq(), 10);
    w.close().unwrap();
}

/// A reader reads each frame once — its length comes from where the next frame starts —, not
/// its header and then the frame (damage and gaps fall back to that: the other tests here).
#[test]
fn a_reader_reads_each_frame_in_one_read() {
    let storage = tape_of_small_frames(200);
    let frames = verify(&storage).unwrap().frames;
    let segments = storage
        .list()
        .unwrap()
        .iter()
        .filter(|n| n.starts_with("seg-"))
        .count() as u64;
    assert!(
        frames >= 150 && segments >= 3,
        "{frames} frames, {segments} segments"
    );
    let before = storage.reads();
    let got: Vec<i64> = TapeReader::open_storage(Arc::new(storage.clone()), StartAt::Start)
        .unwrap()
        .flat_map(|item| {
            let (_, b) = item.unwrap();
            let n = b
                .column(1)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .clone();
            n.values().to_vec()
        })
        .collect();
    assert_eq!(got, (0..2000).collect::<Vec<_>>());
    let reads = storage.reads() - before;
    // One per frame, plus a few per segment (its header, its footer) and the manifest: 318
    // reads for 200 frames in 29 segments when written; two reads per frame would be 518.
    assert!(
        reads <= frames + 5 * segments + 8,
        "{reads} reads for {frames} frames in {segments} segments"
    );
}

/// A footer of a version this build does not know (its CRC and length check out, its magic is
/// new) is refused by the writer, the reader and `verify` — never cut as a torn tail.
#[test]
fn a_footer_from_a_newer_version_is_refused_not_cut() {
    let storage = tape_of_small_frames(40);
    let name = first_segment(&storage);
    let scanned = tapedeck::tape::segment::scan(&storage, &name)
        .unwrap()
        .unwrap();
    let at = scanned.footer_offset.unwrap() as usize;
    let mut bytes = storage.bytes(&name).unwrap();
    let mut footer = bytes.split_off(at);
    footer[0..4].copy_from_slice(b"TDFZ");
    let body = footer.len() - 20;
    let crc = crc32c::crc32c(&footer[..body]);
    footer[body..body + 4].copy_from_slice(&crc.to_le_bytes());
    bytes.extend_from_slice(&footer);
    storage.truncate(&name, 0).unwrap();
    storage.append(&name, &bytes).unwrap();

    let newer = |e: String| assert!(e.contains("newer tapedeck"), "{e}");
    match TapeWriter::open_storage(Arc::new(storage.clone()), options(FsyncPolicy::Never)) {
        Ok(_) => panic!("the writer opened a tape with a newer footer"),
        Err(e) => newer(e.to_string()),
    }
    newer(verify(&storage).unwrap_err().to_string());
    let read: Result<Vec<_>, _> =
        TapeReader::open_storage(Arc::new(storage.clone()), StartAt::Start)
            .and_then(|r| r.collect::<Result<Vec<_>, _>>());
    newer(read.expect_err("the reader refuses").to_string());
    assert_eq!(storage.bytes(&name).unwrap(), bytes, "nothing was changed");
}

/// A batch of every column kind a coded frame transforms (or leaves alone), from generated
/// values: integers of three widths, times, floats, text as `Utf8` and `Utf8View`, flags.
fn coded_batch(
    ints: &[Option<i64>],
    floats: &[f64],
    texts: &[String],
    flags: &[bool],
) -> RecordBatch {
    use arrow_array::{BooleanArray, Float64Array, Int16Array, Int32Array, StringViewArray};
    let n = ints
        .len()
        .min(floats.len())
        .min(texts.len())
        .min(flags.len());
    batch(vec![
        (
            "t",
            Arc::new(TimestampMicrosecondArray::from(ints[..n].to_vec()).with_timezone("UTC"))
                as ArrayRef,
        ),
        ("i64", Arc::new(Int64Array::from(ints[..n].to_vec()))),
        (
            "i32",
            Arc::new(Int32Array::from_iter(
                ints[..n].iter().map(|v| v.map(|x| x as i32)),
            )),
        ),
        (
            "i16",
            Arc::new(Int16Array::from_iter_values(
                ints[..n].iter().map(|v| v.unwrap_or(7) as i16),
            )),
        ),
        ("f", Arc::new(Float64Array::from(floats[..n].to_vec()))),
        ("s", Arc::new(StringArray::from_iter_values(&texts[..n]))),
        (
            "v",
            Arc::new(StringViewArray::from_iter_values(&texts[..n])),
        ),
        ("b", Arc::new(BooleanArray::from(flags[..n].to_vec()))),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Coded frames (version 3) give back any values, with either backend, whole and
    /// projected: integers of any range (constant, sorted, wrapping extremes), NaN and signed
    /// zeros, empty and long text, nulls anywhere.
    #[test]
    fn coded_frames_round_trip_any_values(
        ints in proptest::collection::vec(
            prop_oneof![
                Just(None),
                any::<i64>().prop_map(Some),
                (0i64..300).prop_map(Some),
                Just(Some(i64::MIN)),
                Just(Some(i64::MAX)),
            ],
            1..300,
        ),
        floats in proptest::collection::vec(
            prop_oneof![any::<f64>(), Just(f64::NAN), Just(-0.0), (0u32..1000).prop_map(|x| f64::from(x) / 100.0)],
            300,
        ),
        texts in proptest::collection::vec("[a-z]{0,3}|[a-zé]{10,40}", 300),
        flags in proptest::collection::vec(any::<bool>(), 300),
        sorted in any::<bool>(),
    ) {
        use arrow_buffer::Buffer;
        use tapedeck::tape::codec::{BatchDecoder, BatchEncoder, decode_projected};
        let mut ints = ints;
        if sorted {
            ints.sort();
        }
        let b = coded_batch(&ints, &floats, &texts, &flags);
        for compression in [Compression::CodedZstd, Compression::CodedXz] {
            let mut enc = BatchEncoder::new(&b.schema(), compression).unwrap();
            let (payload, coding) = enc.encode(&b).unwrap();
            prop_assert_eq!(coding, Coding::Coded);
            let mut dec = BatchDecoder::new(enc.schema_message()).unwrap();
            let back = dec.decode(&payload, coding).unwrap();
            // Floats compare by their bits (NaN is not equal to itself).
            prop_assert_eq!(format!("{back:?}"), format!("{b:?}"));
            let buf = Buffer::from_vec(payload);
            for projection in [vec![4, 0], vec![6], vec![], vec![7, 5, 2]] {
                let got = decode_projected(&dec.schema(), &buf, &projection, coding).unwrap();
                prop_assert_eq!(
                    format!("{got:?}"),
                    format!("{:?}", b.project(&projection).unwrap())
                );
            }
        }
    }
}

/// A coded payload that is cut anywhere, or has any one bit flipped, gives an error or a batch —
/// never a panic (the frame's CRC is what catches the flip; this is the decoder's own care).
/// Cuts are always errors.
#[test]
fn coded_payloads_cut_or_flipped_never_panic() {
    use tapedeck::tape::codec::{BatchDecoder, BatchEncoder};
    let ints: Vec<Option<i64>> = (0..200).map(|k| Some(k * 3)).collect();
    let floats: Vec<f64> = (0..200).map(|k| f64::from(k) * 0.25).collect();
    let texts: Vec<String> = (0..200).map(|k| format!("row{k}")).collect();
    let flags: Vec<bool> = (0..200).map(|k| k % 3 == 0).collect();
    let b = coded_batch(&ints, &floats, &texts, &flags);
    for compression in [Compression::CodedZstd, Compression::CodedXz] {
        let mut enc = BatchEncoder::new(&b.schema(), compression).unwrap();
        let (payload, coding) = enc.encode(&b).unwrap();
        let mut dec = BatchDecoder::new(enc.schema_message()).unwrap();
        for cut in 0..payload.len() {
            assert!(
                dec.decode(&payload[..cut], coding).is_err(),
                "{compression:?} cut at {cut}"
            );
        }
        let mut flipped = payload.clone();
        for bit in 0..payload.len() * 8 {
            flipped[bit / 8] ^= 1 << (bit % 8);
            let _ = dec.decode(&flipped, coding);
            flipped[bit / 8] ^= 1 << (bit % 8);
        }
        assert_eq!(dec.decode(&flipped, coding).unwrap(), b);
    }
}

/// A coded frame whose metadata lists one buffer fewer than its schema's columns have is an
/// error, whole and projected — Arrow's reader, given it, would panic skipping the column.
#[test]
fn a_coded_frame_whose_buffer_list_is_short_is_an_error() {
    use arrow_buffer::Buffer;
    use tapedeck::tape::codec::{BatchDecoder, BatchEncoder, decode_projected};
    let two = batch(vec![
        (
            "a",
            Arc::new(Int64Array::from_iter_values(0..100)) as ArrayRef,
        ),
        (
            "b",
            Arc::new(Int64Array::from_iter_values(0..100)) as ArrayRef,
        ),
    ]);
    let one = batch(vec![(
        "a",
        Arc::new(Int64Array::from_iter_values(0..100)) as ArrayRef,
    )]);
    // A frame of the one-column batch, read against the two-column schema.
    let mut enc = BatchEncoder::new(&one.schema(), Compression::CodedZstd).unwrap();
    let (payload, coding) = enc.encode(&one).unwrap();
    let wide = BatchEncoder::new(&two.schema(), Compression::CodedZstd).unwrap();
    let mut dec = BatchDecoder::new(wide.schema_message()).unwrap();
    let err = dec.decode(&payload, coding).unwrap_err().to_string();
    assert!(err.contains("does not match the schema"), "{err}");
    let buf = Buffer::from_vec(payload);
    let err = decode_projected(&two.schema(), &buf, &[0], coding)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not match the schema"), "{err}");
}
