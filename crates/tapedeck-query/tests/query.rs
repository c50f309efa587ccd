//! The tape as a table: snapshots, pruning, projection, schema change, damage, chain checks,
//! `--as-of`, and a property test of random ranges against a brute-force filter.

mod common;

use std::sync::Arc;

use arrow_array::Array;

use common::*;
use proptest::prelude::*;
use tapedeck_query::{AsOf, QueryError, TapeTable, TapeTableOptions};

#[test]
fn every_row_reads_back_with_its_seq_and_a_later_column_is_null_before() {
    let f = build(5_000, 250, 64 << 10);
    let b = query(&f.tape, "SELECT _seq, value, temp FROM tape ORDER BY _seq").unwrap();
    let seqs = u64s(&b);
    assert_eq!(seqs, (0..5_000).collect::<Vec<_>>());
    let all =
        tapedeck_query::datafusion::arrow::compute::concat_batches(&b[0].schema(), &b).unwrap();
    let value = all
        .column(1)
        .as_any()
        .downcast_ref::<arrow_array::Float64Array>()
        .unwrap();
    let temp = all
        .column(2)
        .as_any()
        .downcast_ref::<arrow_array::Float64Array>()
        .unwrap();
    for r in &f.rows {
        let k = r.seq as usize;
        assert_eq!(value.is_valid(k), r.value.is_some(), "row {k}");
        assert_eq!(temp.is_valid(k), r.temp.is_some(), "row {k}");
        if let Some(t) = r.temp {
            assert_eq!(temp.value(k), t);
        }
    }
}

#[test]
fn a_time_range_reads_only_the_frames_it_overlaps() {
    let f = build(20_000, 200, 64 << 10);
    let table = TapeTable::open(&f.tape, TapeTableOptions::default()).unwrap();
    let snap = table.snapshot();
    assert!(
        snap.segment_count() >= 4,
        "{} segments",
        snap.segment_count()
    );
    // 1% of the time range, in the middle.
    let lo = BASE_US + 10_000 * 1000;
    let hi = lo + 200 * 1000;
    let sql = format!(
        "SELECT count(*) FROM tape WHERE time >= to_timestamp_micros({lo}) AND time < to_timestamp_micros({hi})"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ctx = tapedeck_query::session();
    let table = Arc::new(table);
    ctx.register_table("tape", table.clone()).unwrap();
    let got = u64s(&rt.block_on(run(&ctx, &sql)).unwrap());
    let want = f
        .rows
        .iter()
        .filter(|r| r.time >= lo && r.time < hi)
        .count() as u64;
    assert_eq!(got, vec![want]);
    let s = table.stats();
    assert!(s.segments_pruned >= 1, "{s:?}");
    assert!(s.frames_pruned > 0, "{s:?}");
    assert!(
        s.bytes_read * 50 < s.bytes_total,
        "a 1% query read {} of {} bytes",
        s.bytes_read,
        s.bytes_total
    );
    assert!(s.rows_decoded < 1_000, "{s:?}");
}

#[test]
fn seq_filters_prune_and_cut_inside_a_frame() {
    let f = build(3_000, 100, 32 << 10);
    let b = query(
        &f.tape,
        "SELECT _seq FROM tape WHERE _seq BETWEEN 1234 AND 1240 ORDER BY _seq",
    )
    .unwrap();
    assert_eq!(u64s(&b), (1234..=1240).collect::<Vec<_>>());
    let b = query(&f.tape, "SELECT count(*) FROM tape WHERE _seq > 2990").unwrap();
    assert_eq!(u64s(&b), vec![9]);
}

#[test]
fn as_of_reads_the_first_n_rows_and_beyond_the_end_is_refused() {
    let f = build(1_000, 64, 1 << 20);
    let b = query_with(
        &f.tape,
        "SELECT count(*), max(_seq) FROM tape",
        TapeTableOptions::default().as_of(AsOf::Seq(100)),
    )
    .unwrap();
    assert_eq!(u64s(&b), vec![100]);
    let e = query_with(
        &f.tape,
        "SELECT 1",
        TapeTableOptions::default().as_of(AsOf::Seq(1_001)),
    )
    .unwrap_err();
    assert!(
        matches!(e, QueryError::AsOfBeyondEnd { end: 1_000, .. }),
        "{e}"
    );
    assert!(e.is_usage());
    assert_eq!(
        "time:2026-01-01T00:00:00Z".parse::<AsOf>(),
        Ok(AsOf::Time(BASE_US))
    );
    assert!("time:yesterday".parse::<AsOf>().is_err());
    assert!("seq:-1".parse::<AsOf>().is_err());
    assert_eq!("seq:5".parse::<AsOf>(), Ok(AsOf::Seq(5)));
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

#[test]
fn as_of_a_time_reads_the_tape_as_it_stood_then() {
    use tapedeck::tape::{FsyncPolicy, TapeOptions, TapeWriter};
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("tape");
    let before = now_us();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let options = || TapeOptions {
        fsync: FsyncPolicy::Always,
        ..TapeOptions::default()
    };
    let mut marks = Vec::new();
    let w = TapeWriter::open(&tape, options()).unwrap();
    for k in 0..3u64 {
        let rows: Vec<Row> = (k * 100..(k + 1) * 100).map(|s| row(s, u64::MAX)).collect();
        w.append(&to_batch(&rows, false, false)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(150));
        marks.push((now_us(), (k + 1) * 100));
        std::thread::sleep(std::time::Duration::from_millis(150));
    }
    w.close().unwrap();
    // A second run appends: the history goes on.
    let w = TapeWriter::open(&tape, options()).unwrap();
    let rows: Vec<Row> = (300..350).map(|s| row(s, u64::MAX)).collect();
    w.append(&to_batch(&rows, false, false)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(150));
    marks.push((now_us(), 350));
    w.close().unwrap();
    for (t, want) in marks {
        let b = query_with(
            &tape,
            "SELECT count(*) FROM tape",
            TapeTableOptions::default().as_of(AsOf::Time(t)),
        )
        .unwrap();
        assert_eq!(u64s(&b), vec![want], "as of {t}");
    }
    let b = query_with(
        &tape,
        "SELECT count(*) FROM tape",
        TapeTableOptions::default().as_of(AsOf::Time(before)),
    )
    .unwrap();
    assert_eq!(u64s(&b), vec![0]);
    // A tape without its history says so.
    std::fs::remove_file(tape.join("DURABLE")).unwrap();
    let e = query_with(
        &tape,
        "SELECT 1",
        TapeTableOptions::default().as_of(AsOf::Time(before)),
    )
    .unwrap_err();
    assert!(
        matches!(e, QueryError::AsOfUnknown { .. }) && e.is_usage(),
        "{e}"
    );
}

#[test]
fn sql_mistakes_are_usage_errors_that_say_what() {
    let f = build(100, 50, 1 << 20);
    for (sql, needle) in [
        ("SELEC * FROM tape", "SELEC"),
        ("SELECT nope FROM tape", "nope"),
        ("SELECT * FROM elsewhere", "elsewhere"),
    ] {
        let e = query(&f.tape, sql).unwrap_err();
        assert!(e.is_usage(), "{sql}: {e:?}");
        assert!(e.to_string().contains(needle), "{sql}: {e}");
    }
    let e = query(&f.dir.path().join("missing"), "SELECT 1").unwrap_err();
    assert!(
        e.is_usage() && e.to_string().contains("no such tape directory"),
        "{e}"
    );
}

/// The tape's segment files, in order.
fn segments(tape: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut segs: Vec<_> = std::fs::read_dir(tape)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .collect();
    segs.sort();
    segs
}

/// Flips a byte in the payload of the frame holding row `seq` of the first segment.
fn damage_first_segment(f: &Fixture) -> (String, u64) {
    let segs = segments(&f.tape);
    let path = &segs[0];
    let mut bytes = std::fs::read(path).unwrap();
    // The second frame: find the frame magic after the header.
    let magic = b"TDFR";
    let first = bytes.windows(4).position(|w| w == magic).unwrap();
    let second = first
        + 4
        + bytes[first + 4..]
            .windows(4)
            .position(|w| w == magic)
            .unwrap();
    bytes[second + 60] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
    (
        path.file_name().unwrap().to_string_lossy().into_owned(),
        second as u64,
    )
}

#[test]
fn a_damaged_frame_fails_the_query_naming_where_unless_damage_is_skipped() {
    let f = build(2_000, 100, 1 << 20);
    let (segment, offset) = damage_first_segment(&f);
    let e = query(&f.tape, "SELECT count(*) FROM tape").unwrap_err();
    match &e {
        QueryError::Damaged {
            segment: s,
            offset: o,
            seq_from,
            seq_to,
            ..
        } => {
            assert_eq!((s, *o), (&segment, offset));
            assert_eq!((*seq_from, *seq_to), (100, 200));
        }
        other => panic!("expected Damaged, got {other:?}"),
    }
    assert!(!e.is_usage());
    // A query whose range avoids the damage is answered.
    let b = query(&f.tape, "SELECT count(*) FROM tape WHERE _seq >= 200").unwrap();
    assert_eq!(u64s(&b), vec![1_800]);
    let b = query_with(
        &f.tape,
        "SELECT count(*) FROM tape",
        TapeTableOptions::default().skip_damage(true),
    )
    .unwrap();
    assert_eq!(u64s(&b), vec![1_900]);
}

#[test]
fn verify_refuses_to_answer_over_a_broken_chain() {
    // Sealed segments with good CRCs but a footer whose chain hash is wrong.
    let f = build(2_000, 100, 16 << 10);
    let segs = segments(&f.tape);
    assert!(segs.len() >= 2);
    // Rewrite the first segment's footer chain (and its CRC) as a forger would.
    let path = &segs[0];
    let mut bytes = std::fs::read(path).unwrap();
    let n = bytes.len();
    let footer_len = u64::from_le_bytes(bytes[n - 16..n - 8].try_into().unwrap()) as usize;
    let start = n - footer_len;
    let body_end = n - 20;
    let chain_at = body_end - 32;
    bytes[chain_at] ^= 1;
    let crc = crc32c::crc32c(&bytes[start..body_end]);
    bytes[body_end..body_end + 4].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
    // Without --verify the rows read (their CRCs are good).
    assert_eq!(
        u64s(&query(&f.tape, "SELECT count(*) FROM tape").unwrap()),
        vec![2_000]
    );
    let e = query_with(
        &f.tape,
        "SELECT count(*) FROM tape",
        TapeTableOptions::default().verify(true),
    )
    .unwrap_err();
    assert!(matches!(e, QueryError::BrokenChain { .. }), "{e:?}");
}

#[test]
fn a_query_during_a_recording_never_sees_more_than_is_acknowledged_nor_goes_back() {
    use tapedeck::tape::{FsyncPolicy, TapeOptions, TapeWriter};
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("tape");
    let options = TapeOptions {
        segment_bytes: 64 << 10,
        fsync: FsyncPolicy::Interval(std::time::Duration::from_millis(2)),
        ..TapeOptions::default()
    };
    let w = TapeWriter::open(&tape, options).unwrap();
    let watch = w.watch();
    let total = 40_000u64;
    let writer = std::thread::spawn(move || {
        for k in 0..(total / 100) {
            let rows: Vec<Row> = (k * 100..(k + 1) * 100).map(|s| row(s, u64::MAX)).collect();
            w.submit(&to_batch(&rows, false, false)).unwrap();
            if k.is_multiple_of(20) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        w.close().unwrap();
    });
    let mut last = 0u64;
    let mut answers = 0;
    loop {
        let done = writer.is_finished();
        let b = query(&tape, "SELECT count(*), max(_seq) FROM tape").unwrap();
        let acked_after = watch.durable_seq();
        let n = u64s(&b)[0];
        assert!(
            n <= acked_after,
            "query saw {n} rows, only {acked_after} acknowledged"
        );
        assert!(n >= last, "count went back from {last} to {n}");
        last = n;
        answers += 1;
        if done {
            break;
        }
    }
    writer.join().unwrap();
    assert_eq!(
        u64s(&query(&tape, "SELECT count(*) FROM tape").unwrap()),
        vec![total]
    );
    assert!(answers >= 2);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_time_and_seq_ranges_match_a_brute_force_filter(
        s_lo in 0u64..3_200, s_len in 0u64..3_200, t_lo in -100i64..3_200, t_len in 0i64..3_200,
        strict in any::<bool>(),
    ) {
        static FIXTURE: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
        let f = FIXTURE.get_or_init(|| build(3_000, 70, 12 << 10));
        let s_hi = s_lo + s_len;
        let t_lo_us = BASE_US + t_lo * 1000;
        let t_hi_us = t_lo_us + t_len * 1000;
        let op = if strict { "<" } else { "<=" };
        let sql = format!(
            "SELECT _seq FROM tape WHERE _seq >= {s_lo} AND _seq {op} {s_hi} \
             AND time >= to_timestamp_micros({t_lo_us}) AND time {op} to_timestamp_micros({t_hi_us}) ORDER BY _seq"
        );
        let got = u64s(&query(&f.tape, &sql).unwrap());
        let want: Vec<u64> = f.rows.iter().filter(|r| {
            let seq_ok = r.seq >= s_lo && if strict { r.seq < s_hi } else { r.seq <= s_hi };
            let t_ok = r.time >= t_lo_us && if strict { r.time < t_hi_us } else { r.time <= t_hi_us };
            seq_ok && t_ok
        }).map(|r| r.seq).collect();
        prop_assert_eq!(got, want);
    }
}

#[test]
fn a_torn_tail_left_by_a_crash_is_not_read_and_whole_frames_are() {
    use tapedeck::tape::{FsyncPolicy, TapeOptions, TapeWriter};
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("tape");
    let options = TapeOptions {
        fsync: FsyncPolicy::Always,
        ..TapeOptions::default()
    };
    let w = TapeWriter::open(&tape, options).unwrap();
    for k in 0..10u64 {
        let rows: Vec<Row> = (k * 100..(k + 1) * 100).map(|s| row(s, u64::MAX)).collect();
        w.append(&to_batch(&rows, false, false)).unwrap();
    }
    // A crash: the writer never seals its segment, and the last frame is cut short (a torn
    // write).
    w.abandon();
    let seg = segments(&tape).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 10).unwrap();
    drop(f);
    let b = query(&tape, "SELECT count(*), max(_seq) FROM tape").unwrap();
    assert_eq!(u64s(&b), vec![900]);
}

/// A tape's storage where a read touching `segment`'s bytes `failing` (frames in its second
/// quarter; its header and footer read fine) fails with EIO, as a failing disk's would;
/// everything else goes to the tape's directory.
struct FailingReads {
    inner: Arc<dyn tapedeck::tape::storage::Storage>,
    segment: String,
    failing: std::ops::Range<u64>,
}

impl tapedeck::tape::storage::Storage for FailingReads {
    fn list(&self) -> std::io::Result<Vec<String>> {
        self.inner.list()
    }
    fn len(&self, name: &str) -> std::io::Result<Option<u64>> {
        self.inner.len(name)
    }
    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let end = offset + buf.len() as u64;
        if name == self.segment && offset < self.failing.end && end > self.failing.start {
            return Err(std::io::Error::from_raw_os_error(5));
        }
        self.inner.read_at(name, offset, buf)
    }
    fn create_new(&self, name: &str) -> std::io::Result<()> {
        self.inner.create_new(name)
    }
    fn append(&self, name: &str, data: &[u8]) -> std::io::Result<()> {
        self.inner.append(name, data)
    }
    fn sync(&self, name: &str) -> std::io::Result<()> {
        self.inner.sync(name)
    }
    fn sync_dir(&self, dir: &str) -> std::io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn rename(&self, from: &str, to: &str) -> std::io::Result<()> {
        self.inner.rename(from, to)
    }
    fn truncate(&self, name: &str, len: u64) -> std::io::Result<()> {
        self.inner.truncate(name, len)
    }
    fn remove(&self, name: &str) -> std::io::Result<()> {
        self.inner.remove(name)
    }
    fn describe(&self, name: &str) -> std::path::PathBuf {
        self.inner.describe(name)
    }
}

#[test]
fn a_read_error_fails_the_query_naming_the_segment_and_skipping_damage_does_not_hide_it() {
    let f = build(5_000, 250, 64 << 10);
    let inner = tapedeck::tape::verify::storage_for(&f.tape).unwrap();
    let segment = inner
        .list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with("seg-"))
        .min()
        .unwrap();
    let len = inner.len(&segment).unwrap().unwrap();
    let storage: Arc<dyn tapedeck::tape::storage::Storage> = Arc::new(FailingReads {
        inner,
        segment: segment.clone(),
        failing: len / 4..len / 2,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    for skip_damage in [false, true] {
        let options = TapeTableOptions::default().skip_damage(skip_damage);
        let result = rt.block_on(async {
            let ctx = tapedeck_query::session();
            let table = TapeTable::open_storage(storage.clone(), options).unwrap();
            ctx.register_table("tape", Arc::new(table)).unwrap();
            run(&ctx, "SELECT sum(value) FROM tape").await
        });
        let e = result
            .expect_err("a failed read must fail the query")
            .to_string();
        assert!(
            e.contains(&segment) && e.contains("os error 5"),
            "skip_damage {skip_damage}: {e}"
        );
    }
    // Reads that avoid the failing segment answer.
    let first_elsewhere = rt.block_on(async {
        let ctx = tapedeck_query::session();
        let table = TapeTable::open_storage(storage.clone(), TapeTableOptions::default()).unwrap();
        let end = table.snapshot().end();
        ctx.register_table("tape", Arc::new(table)).unwrap();
        let last = run(
            &ctx,
            &format!("SELECT count(*) FROM tape WHERE _seq >= {}", end - 10),
        )
        .await
        .unwrap();
        u64s(&last)
    });
    assert_eq!(first_elsewhere, vec![10]);
}

/// A query whose snapshot was taken before `tapedeck compact` replaced the segments it lists
/// reads their rows where they are now: the same answer, no error.
#[test]
fn a_query_planned_before_a_compaction_answers_the_same_after_it() {
    let f = build(5_000, 25, 4 << 10);
    let sql = "SELECT count(*), sum(value), sum(temp), min(_seq), max(_seq), \
               count(DISTINCT device) FROM tape";
    let dump = "SELECT _seq, time, device, value, temp FROM tape ORDER BY _seq";
    let pretty = |b: &[arrow_array::RecordBatch]| {
        tapedeck_query::datafusion::arrow::util::pretty::pretty_format_batches(b)
            .unwrap()
            .to_string()
    };
    let expected = (
        pretty(&query(&f.tape, sql).unwrap()),
        pretty(&query(&f.tape, dump).unwrap()),
    );
    let segments_before = segments(&f.tape).len();
    assert!(segments_before > 40, "{segments_before} segments");
    runtime().block_on(async {
        let ctx = tapedeck_query::session();
        // The snapshot is taken here, listing the segments as they are.
        let table =
            tapedeck_query::register_tape_with(&ctx, "tape", &f.tape, TapeTableOptions::default())
                .unwrap();
        let w = tapedeck::tape::TapeWriter::open(&f.tape, tapedeck::tape::TapeOptions::default())
            .unwrap();
        let report = w
            .watch()
            .compact(&tapedeck::tape::compact::CompactOptions::default())
            .unwrap();
        w.close().unwrap();
        // Both schemas (a column added halfway): at least two new segments, every old one gone.
        assert!(report.files.len() >= 2, "{report:?}");
        assert_eq!(report.replaced.len(), segments_before, "{report:?}");
        let got = (
            pretty(&run(&ctx, sql).await.unwrap()),
            pretty(&run(&ctx, dump).await.unwrap()),
        );
        assert_eq!(got.0, expected.0);
        assert!(got.1 == expected.1, "the rows differ after the compaction");
        // Some rows came from where the compaction moved them (the segments whose handles
        // the storage no longer held), not from the handles kept open.
        assert!(table.stats().rows_moved > 0, "{:?}", table.stats());
    });
    // A fresh query over the compacted tape, too.
    assert_eq!(pretty(&query(&f.tape, sql).unwrap()), expected.0);
}

/// Sealed segments' footers hold their frames' times (footer version 2), so pruning a
/// segment's frames reads nothing: a time range that falls between two frames reads 0 bytes.
#[test]
fn frames_are_pruned_from_the_footer_without_reading_their_headers() {
    let f = build(4_000, 100, 64 << 10);
    let storage = tapedeck::tape::verify::storage_for(&f.tape).unwrap();
    let names = tapedeck::tape::segment::list_live(storage.as_ref()).unwrap();
    // Two neighbouring frames of a sealed segment with a gap between their time ranges.
    let (lo, hi) = names
        .iter()
        .filter_map(|(_, name)| {
            tapedeck::tape::segment::open_indexed(storage.as_ref(), name).unwrap()
        })
        .flat_map(|s| {
            let times: Vec<(i64, i64)> = s.frames.iter().filter_map(|f| f.header.time).collect();
            assert_eq!(
                times.len(),
                s.frames.len(),
                "a sealed segment's frames have times"
            );
            times
                .windows(2)
                .map(|w| (w[0].1, w[1].0))
                .collect::<Vec<_>>()
        })
        .find(|(max, next_min)| next_min - max > 2)
        .expect("a gap between two frames");
    // Strictly inside the gap (pruning treats bounds as inclusive, conservatively).
    let (lo, hi) = (lo + 1, hi - 1);
    let sql = format!(
        "SELECT count(*) FROM tape WHERE time >= to_timestamp_micros({lo}) AND time <= to_timestamp_micros({hi})"
    );
    let table = Arc::new(TapeTable::open(&f.tape, TapeTableOptions::default()).unwrap());
    let ctx = tapedeck_query::session();
    ctx.register_table("tape", table.clone()).unwrap();
    let got = u64s(&runtime().block_on(run(&ctx, &sql)).unwrap());
    let want = f
        .rows
        .iter()
        .filter(|r| r.time >= lo && r.time <= hi)
        .count() as u64;
    assert_eq!(got, vec![want]);
    assert_eq!(want, 0);
    let s = table.stats();
    assert!(s.frames_pruned > 0 && s.frames == s.frames_pruned, "{s:?}");
    assert_eq!(s.bytes_read, 0, "{s:?}");
}

/// The frame times a version-2 footer holds are outside the hash chain: `--verify` checks them
/// against the frame headers (inside it) and refuses to answer over a footer that lies.
#[test]
fn verify_refuses_a_footer_whose_frame_times_lie() {
    let f = build(4_000, 100, 64 << 10);
    let storage = tapedeck::tape::verify::storage_for(&f.tape).unwrap();
    let (_, name) = tapedeck::tape::segment::list_live(storage.as_ref()).unwrap()[0].clone();
    let scanned = tapedeck::tape::segment::scan(storage.as_ref(), &name)
        .unwrap()
        .unwrap();
    let (mut footer, at) = (scanned.footer.unwrap(), scanned.footer_offset.unwrap());
    // The first frame's range moved far into the future: a time filter prunes it.
    let first = footer.times.as_mut().unwrap().first_mut().unwrap();
    *first = Some((i64::MAX - 1, i64::MAX - 1));
    let path = f.tape.join(&name);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(at as usize);
    bytes.extend_from_slice(&footer.encode());
    std::fs::write(&path, &bytes).unwrap();

    let sql = format!(
        "SELECT count(*) FROM tape WHERE time < to_timestamp_micros({})",
        BASE_US + 50_000
    );
    let want = f.rows.iter().filter(|r| r.time < BASE_US + 50_000).count() as u64;
    assert!(want > 0);
    // Without --verify the lie hides the frame's rows (why --verify checks it).
    let got = u64s(&query(&f.tape, &sql).unwrap());
    assert!(got[0] < want, "{got:?} vs {want}");
    match query_with(&f.tape, &sql, TapeTableOptions::default().verify(true)) {
        Err(QueryError::BrokenChain { problem, .. }) => {
            assert!(problem.contains("time range"), "{problem}")
        }
        other => panic!("expected a broken chain, got {other:?}"),
    }
}
