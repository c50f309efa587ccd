//! Delivery under real faults: a data file that cannot be fdatasynced never gets a cursor that
//! covers it, a damaged cursor with `--from end` never costs a file its bytes, a whole file is
//! never rebuilt with fewer rows than it holds when the tape lost some, and a database table
//! that holds one tape's delivery refuses another tape's.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use tapedeck::deliver::cursor_file::{CursorFile, Found};
use tapedeck::deliver::{Delivery, DeliveryOptions, NewStart, TapeEnd, TapeRef, destination};
use tapedeck::tape::{FsyncPolicy, TapeOptions, TapeWriter};

fn batch(from: i64, n: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("i", DataType::Int64, false),
        Field::new("v", DataType::Float64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(from..from + n)),
            Arc::new(Float64Array::from_iter_values(
                (from..from + n).map(|i| i as f64 * 0.5),
            )),
        ],
    )
    .unwrap()
}

/// Appends rows `from..from+n` (in batches of 100) to the tape in `dir`; returns its ref and end.
fn record(dir: &Path, from: i64, n: i64) -> (TapeRef, u64) {
    record_with(
        dir,
        from,
        n,
        TapeOptions {
            fsync: FsyncPolicy::Never,
            ..TapeOptions::default()
        },
    )
}

/// [`record`] with the tape's options given.
fn record_with(dir: &Path, from: i64, n: i64, options: TapeOptions) -> (TapeRef, u64) {
    let w = TapeWriter::open(dir, options).unwrap();
    let mut at = from;
    while at < from + n {
        let k = 100.min(from + n - at);
        w.append(&batch(at, k)).unwrap();
        at += k;
    }
    let tape = TapeRef {
        dir: dir.to_path_buf(),
        id: w.id().to_string(),
    };
    let end = w.next_seq();
    w.close().unwrap();
    (tape, end)
}

/// Delivers the tape up to `end` into `uri`, a new destination starting at `new_start`.
fn deliver_from(
    tape: &TapeRef,
    end: u64,
    uri: &str,
    new_start: NewStart,
) -> tapedeck::deliver::DeliveryStatus {
    let spec = tapedeck::sink::parse_unchecked(uri).unwrap();
    let d = Delivery::start(
        tape.clone(),
        vec![(uri.to_string(), spec)],
        TapeEnd::Fixed(end),
        &DeliveryOptions {
            new_start,
            ..DeliveryOptions::default()
        },
    )
    .unwrap();
    d.finish(end).pop().unwrap()
}

fn deliver(tape: &TapeRef, end: u64, uri: &str) -> tapedeck::deliver::DeliveryStatus {
    deliver_from(tape, end, uri, NewStart::Start)
}

fn csv_column(path: &Path) -> Vec<i64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect()
}

/// The committed position in the cursor file beside `data`.
fn cursor_position(data: &Path, tape: &TapeRef) -> Option<u64> {
    let path = destination::hidden_beside(data, "tapedeck-cursor");
    match CursorFile::open(&path, &tape.id).unwrap() {
        Found::Ours(c) => c.position().map(|p| p.seq),
        other => panic!(
            "expected this tape's cursor at {}, got {other:?}",
            path.display()
        ),
    }
}

/// A data file whose fdatasync fails: on Linux, fdatasync of /dev/null is EINVAL, while every
/// write to it succeeds. A cursor written without syncing the data first would go through.
#[cfg(target_os = "linux")]
#[test]
fn a_text_file_whose_data_cannot_be_synced_never_gets_a_cursor_covering_it() {
    let dir = tempfile::tempdir().unwrap();
    let (tape, end) = record(&dir.path().join("tape"), 0, 300);
    for (scheme, name) in [("csv", "out.csv"), ("jsonl", "out.jsonl")] {
        // Through a whole delivery: commits while catching up, then `finish`.
        let out = dir.path().join(name);
        std::os::unix::fs::symlink("/dev/null", &out).unwrap();
        let uri = format!("{scheme}:{}", out.display());
        let s = deliver(&tape, end, &uri);
        assert_eq!(s.state, "failed", "{scheme}: {s:?}");
        let e = s.error.unwrap_or_default();
        assert!(
            e.contains("fdatasync") && e.contains(name) && e.contains("deliver again"),
            "{scheme}: {e}"
        );
        assert_eq!(cursor_position(&out, &tape), None, "{scheme}");

        // `finish` alone, with no commit before it.
        let spec = tapedeck::sink::parse_unchecked(&uri).unwrap();
        let mut t = destination::open(spec, &tape, 0).unwrap();
        t.write(&batch(0, 10)).unwrap();
        let e = t
            .finish(10)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("fdatasync"), "{scheme}: {e}");
        assert_eq!(t.committed(), None, "{scheme}");
        drop(t);
        assert_eq!(cursor_position(&out, &tape), None, "{scheme}");

        // A commit whose sync fails stops the next commit, and the cursor stays put.
        let spec = tapedeck::sink::parse_unchecked(&uri).unwrap();
        let mut t = destination::open(spec, &tape, 0).unwrap();
        t.write(&batch(0, 10)).unwrap();
        let failed = (0..200).any(|i| {
            std::thread::sleep(std::time::Duration::from_millis(5));
            t.commit(10 + i).is_err()
        });
        assert!(
            failed,
            "{scheme}: a failed fdatasync must fail a later commit"
        );
        assert_eq!(t.committed(), None, "{scheme}");
        drop(t);
        assert_eq!(cursor_position(&out, &tape), None, "{scheme}");
    }
}

#[test]
fn a_committed_cursor_covers_exactly_the_synced_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.csv");
    let uri = format!("csv:{}", out.display());
    let (tape, end) = record(&dir.path().join("tape"), 0, 500);
    let spec = tapedeck::sink::parse_unchecked(&uri).unwrap();
    let mut t = destination::open(spec, &tape, 0).unwrap();
    t.write(&batch(0, 200)).unwrap();
    t.commit(200).unwrap();
    t.write(&batch(200, 300)).unwrap();
    t.finish(end).unwrap();
    assert_eq!(t.committed(), Some(end));
    drop(t);
    let cursor = destination::hidden_beside(&out, "tapedeck-cursor");
    let Found::Ours(c) = CursorFile::open(&cursor, &tape.id).unwrap() else {
        panic!("the cursor file is ours");
    };
    let p = c.position().unwrap();
    assert_eq!(
        (p.seq, p.value),
        (end, std::fs::metadata(&out).unwrap().len())
    );
    assert_eq!(csv_column(&out), (0..500).collect::<Vec<_>>());
}

/// Damages the cursor file beside `data` (its magic), as a disk error would.
fn damage_cursor(data: &Path) {
    let cursor = destination::hidden_beside(data, "tapedeck-cursor");
    let mut bytes = std::fs::read(&cursor).unwrap();
    bytes[3] ^= 1;
    std::fs::write(&cursor, bytes).unwrap();
}

#[test]
fn a_damaged_cursor_with_from_end_never_costs_a_file_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.csv");
    let uri = format!("csv:{}", out.display());
    let (tape, end) = record(&dir.path().join("tape"), 0, 250);
    assert_eq!(deliver(&tape, end, &uri).cursor, Some(250));
    let (tape, end) = record(&dir.path().join("tape"), 250, 50);
    damage_cursor(&out);
    let before = std::fs::read(&out).unwrap();
    // A new start at the tape's end would start the file over there.
    let s = deliver_from(&tape, end, &uri, NewStart::End);
    assert_eq!(s.state, "failed");
    let e = s.error.unwrap_or_default();
    assert!(
        e.contains("damaged") && e.contains("--from end") && e.contains("out.csv"),
        "{e}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), before);
    // From the tape's first row the file is rebuilt, and keeps every row it had.
    let s = deliver(&tape, end, &uri);
    assert_eq!((s.state.as_str(), s.cursor), ("done", Some(300)));
    assert_eq!(csv_column(&out), (0..300).collect::<Vec<_>>());
    // An empty file has nothing to lose: it starts at the end as asked.
    let late = dir.path().join("late.csv");
    let late_uri = format!("csv:{}", late.display());
    assert_eq!(
        deliver_from(&tape, end, &late_uri, NewStart::End).cursor,
        Some(300)
    );
    damage_cursor(&late);
    let s = deliver_from(&tape, end, &late_uri, NewStart::End);
    assert_eq!((s.state.as_str(), s.cursor), ("done", Some(300)));
}

#[test]
fn a_damaged_cursor_with_from_end_never_replaces_a_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.arrow");
    let uri = format!("ipc:{}", out.display());
    let (tape, end) = record(&dir.path().join("tape"), 0, 200);
    assert_eq!(deliver(&tape, end, &uri).cursor, Some(200));
    let (tape, end) = record(&dir.path().join("tape"), 200, 100);
    damage_cursor(&out);
    let before = std::fs::read(&out).unwrap();
    let s = deliver_from(&tape, end, &uri, NewStart::End);
    assert_eq!(s.state, "failed");
    assert!(s.error.unwrap_or_default().contains("--from end"));
    assert_eq!(std::fs::read(&out).unwrap(), before);
}

/// Small uncompressed segments: a few 100-row frames each.
fn small_segments() -> TapeOptions {
    TapeOptions {
        fsync: FsyncPolicy::Never,
        compression: tapedeck::tape::Compression::None,
        segment_bytes: 4096,
        frame_rows: 100,
        ..TapeOptions::default()
    }
}

/// Flips one byte in the middle of the tape's first segment (sealed: later ones follow), as a
/// disk error would, and returns the rows the tape can no longer supply because of it.
fn damage_first_segment(tape: &Path) -> Vec<tapedeck::tape::reader::Unreadable> {
    let mut segs: Vec<_> = std::fs::read_dir(tape)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with("seg-") && n.ends_with(".tape")
        })
        .collect();
    segs.sort();
    assert!(segs.len() >= 2, "want several segments, got {segs:?}");
    let mut bytes = std::fs::read(&segs[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&segs[0], bytes).unwrap();
    // As a new process finds it: the frames this one decoded before the damage are forgotten.
    tapedeck::tape::frame_cache::global().clear();
    let mut reader =
        tapedeck::tape::TapeReader::open(tape, tapedeck::tape::StartAt::Start).unwrap();
    while reader.next_batch().unwrap().is_some() {}
    let lost = reader.take_unreadable();
    assert!(!lost.is_empty(), "the flipped byte must cost rows");
    lost
}

/// Whether a hidden rebuild (`.NAME.tapedeck-partial`) is left beside `data`.
fn partial_left(data: &Path) -> bool {
    destination::hidden_beside(data, "tapedeck-partial").exists()
}

/// A whole file (`scheme`: ipc or single Parquet) holding rows the tape can no longer supply is
/// not rebuilt without them: the file stays byte for byte, its cursor stays, and the error says
/// which rows and what to do; a new file takes the tape as it is now.
fn whole_file_keeps_rows_the_tape_lost(scheme: &str, file: &str, rows: fn(&Path) -> usize) {
    let dir = tempfile::tempdir().unwrap();
    let tape_dir = dir.path().join("tape");
    let out = dir.path().join(file);
    let uri = format!("{scheme}:{}", out.display());
    let (tape, end) = record_with(&tape_dir, 0, 1000, small_segments());
    let s = deliver(&tape, end, &uri);
    assert_eq!((s.state.as_str(), s.cursor), ("done", Some(1000)), "{s:?}");
    assert_eq!(rows(&out), 1000);

    let lost = damage_first_segment(&tape_dir);
    let (tape, end) = record_with(&tape_dir, 1000, 200, small_segments());
    let before = std::fs::read(&out).unwrap();
    let s = deliver(&tape, end, &uri);
    assert_eq!(s.state, "failed", "{scheme}: {s:?}");
    let e = s.error.unwrap_or_default();
    for l in &lost {
        assert!(
            e.contains(&format!("rows {}..{}", l.from, l.to)),
            "{scheme}: the error must name rows {}..{}: {e}",
            l.from,
            l.to
        );
    }
    assert!(
        e.contains(&out.display().to_string())
            && e.contains("kept exactly as it was")
            && e.contains("new file"),
        "{scheme}: {e}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), before, "{scheme}");
    assert_eq!(cursor_position(&out, &tape), Some(1000), "{scheme}");
    assert!(!partial_left(&out), "{scheme}: the rebuild is discarded");
    // Again: the same refusal, the same file.
    assert_eq!(deliver(&tape, end, &uri).state, "failed", "{scheme}");
    assert_eq!(std::fs::read(&out).unwrap(), before, "{scheme}");

    // A new file gets what the tape still has, the new rows included.
    let fresh = dir.path().join(format!("fresh-{file}"));
    let s = deliver(&tape, end, &format!("{scheme}:{}", fresh.display()));
    assert_eq!((s.state.as_str(), s.cursor), ("done", Some(1200)), "{s:?}");
    let missing: u64 = lost.iter().map(|l| l.to - l.from).sum();
    assert_eq!(rows(&fresh) as u64, 1200 - missing, "{scheme}");
}

fn ipc_rows(path: &Path) -> usize {
    let r =
        arrow_ipc::reader::FileReader::try_new(std::fs::File::open(path).unwrap(), None).unwrap();
    r.map(|b| b.unwrap().num_rows()).sum()
}

#[test]
fn an_ipc_file_is_not_rebuilt_without_rows_the_tape_lost() {
    whole_file_keeps_rows_the_tape_lost("ipc", "out.arrow", ipc_rows);
}

#[cfg(feature = "parquet")]
#[test]
fn a_parquet_file_is_not_rebuilt_without_rows_the_tape_lost() {
    fn rows(path: &Path) -> usize {
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(path).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum()
    }
    whole_file_keeps_rows_the_tape_lost("parquet", "out.parquet", rows);
}

#[cfg(feature = "sqlite")]
#[test]
fn sqlite_refuses_a_second_tape_into_a_table_holding_another_tapes_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("out.db");
    let uri = format!("sqlite:{}?table=t&create_table=true", db.display());
    let (tape_a, end_a) = record(&dir.path().join("a"), 0, 300);
    let (tape_b, end_b) = record(&dir.path().join("b"), 0, 100);
    assert_eq!(deliver(&tape_a, end_a, &uri).cursor, Some(300));
    let s = deliver(&tape_b, end_b, &uri);
    assert_eq!(s.state, "failed");
    let e = s.error.unwrap_or_default();
    assert!(
        e.contains(&tape_a.id) && e.contains(&tape_b.id) && e.contains("table t"),
        "{e}"
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (rows, cursors): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM tapedeck_cursor)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((rows, cursors), (300, 1));
    drop(conn);
    // The same tape continues; another table takes the second tape.
    assert_eq!(deliver(&tape_a, end_a, &uri).state, "done");
    let other = format!("sqlite:{}?table=u&create_table=true", db.display());
    assert_eq!(deliver(&tape_b, end_b, &other).cursor, Some(100));
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;

    /// The test server's URL and a client, or `None` (with the reason printed) when there is
    /// none outside CI — as `tests/postgres.rs` does.
    fn server(test: &str) -> Option<(String, tokio::runtime::Runtime, tokio_postgres::Client)> {
        let url = std::env::var("TAPEDECK_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(async {
            let config: tokio_postgres::Config = url.parse().map_err(|e| format!("{e}"))?;
            let connect = config.connect(tokio_postgres::NoTls);
            let (client, conn) = tokio::time::timeout(std::time::Duration::from_secs(5), connect)
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| format!("{e}"))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok::<_, String>(client)
        });
        match client {
            Ok(c) => Some((url, rt, c)),
            Err(e) => {
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("{test}: CI=true but no PostgreSQL at {url}: {e}");
                }
                eprintln!(
                    "skipping {test}: no PostgreSQL at {url} ({e}); set TAPEDECK_TEST_POSTGRES_URL"
                );
                None
            }
        }
    }

    #[test]
    fn postgres_refuses_a_second_tape_into_a_table_holding_another_tapes_cursor() {
        let test = "second_tape";
        let Some((url, rt, client)) = server(test) else {
            return;
        };
        let s = format!("td_{test}_{}", std::process::id());
        rt.block_on(client.batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s}"
        )))
        .unwrap();
        let sep = if url.contains('?') { '&' } else { '?' };
        let uri = |table: &str| format!("{url}{sep}schema={s}&table={table}&create_table=true");
        let dir = tempfile::tempdir().unwrap();
        let (tape_a, end_a) = record(&dir.path().join("a"), 0, 300);
        let (tape_b, end_b) = record(&dir.path().join("b"), 0, 100);
        assert_eq!(deliver(&tape_a, end_a, &uri("t")).cursor, Some(300));
        let st = deliver(&tape_b, end_b, &uri("t"));
        assert_eq!(st.state, "failed");
        let e = st.error.unwrap_or_default();
        assert!(
            e.contains(&tape_a.id) && e.contains(&tape_b.id) && e.contains(&format!("{s}.t")),
            "{e}"
        );
        let count = |sql: &str| -> i64 { rt.block_on(client.query_one(sql, &[])).unwrap().get(0) };
        assert_eq!(count(&format!("SELECT count(*) FROM {s}.t")), 300);
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM {s}.tapedeck_cursor WHERE sink LIKE 'tape:%'"
            )),
            1
        );
        // The same tape continues; another table takes the second tape.
        assert_eq!(deliver(&tape_a, end_a, &uri("t")).state, "done");
        assert_eq!(deliver(&tape_b, end_b, &uri("u")).cursor, Some(100));
        rt.block_on(client.batch_execute(&format!("DROP SCHEMA {s} CASCADE")))
            .unwrap();
    }
}

/// Appends `blocks` simulated DAQ blocks (with raw codes) to the tape in `dir`.
fn record_blocks(dir: &Path, blocks: u64) -> (TapeRef, u64) {
    use tapedeck::record::Record;
    use tapedeck::source::Source;
    let mut src = tapedeck::source::open(&format!(
        "sim:daq?channels=2&rate=10000&block=100&blocks={blocks}&pace=max&raw=true"
    ))
    .unwrap();
    let w = TapeWriter::open(dir, TapeOptions::default()).unwrap();
    while let Some(r) = src.next_record().unwrap() {
        if let Record::Block(b) = r {
            w.append(&b.to_wide_batch().unwrap()).unwrap();
        }
    }
    let tape = TapeRef {
        dir: dir.to_path_buf(),
        id: w.id().to_string(),
    };
    let end = w.next_seq();
    w.close().unwrap();
    (tape, end)
}

/// Crash harness bug A: a finished `.dt-raw` file ends with its `final` marker, which the next
/// delivery cuts before it appends. Killed before its first commit, that delivery must leave a
/// file the following one can resume — the cursor moves to the cut length before anything new
/// is written.
#[test]
fn a_raw_file_resumes_after_a_kill_right_after_its_final_marker_was_cut() {
    let dir = tempfile::tempdir().unwrap();
    let tape_dir = dir.path().join("tape");
    let out = dir.path().join("out.dt-raw");
    let uri = format!("raw:{}", out.display());
    let (tape, end) = record_blocks(&tape_dir, 3);
    assert_eq!(deliver(&tape, end, &uri).state, "done");
    let (_, end2) = record_blocks(&tape_dir, 4);
    assert!(end2 > end);
    // The next delivery opens (cutting the marker), writes a block, and is killed: no
    // destructor, no commit.
    let spec = tapedeck::sink::parse_unchecked(&uri).unwrap();
    let mut t = destination::open(spec, &tape, 0).unwrap();
    let mut reader =
        tapedeck::tape::TapeReader::open(&tape_dir, tapedeck::tape::StartAt::Seq(end)).unwrap();
    let (_, b) = reader.next_batch().unwrap().unwrap();
    t.write(&b).unwrap();
    std::mem::forget(t);
    // A killed process's descriptors are closed by the kernel, which releases its locks: do
    // that for the leaked destination's lock file (nothing else of it runs).
    let lock = destination::hidden_beside(&out, "tapedeck-lock");
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if std::fs::read_link(entry.path()).is_ok_and(|p| p == lock)
            && let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>()
        {
            use std::os::fd::FromRawFd;
            // SAFETY: the descriptor belongs to the destination leaked above, which never uses it
            // again; closing it is what the kernel does when the process dies.
            drop(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
        }
    }
    // What the page cache holds survives a kill; the next delivery resumes.
    let status = deliver(&tape, end2, &uri);
    assert_eq!(status.state, "done", "{status:?}");
    let mut r = tapedeck::dtraw::reader::DtRawReader::open(&out).unwrap();
    let mut samples = 0u64;
    let mut seqs = Vec::new();
    while let Some(c) = r.next_chunk().unwrap() {
        samples += c.header.valid_samples as u64;
        seqs.push(c.header.seq);
    }
    assert!(r.stop().is_none(), "the whole file reads: {:?}", r.stop());
    assert_eq!(samples, end2, "every sample, once");
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

/// Two deliveries of one tape into one SQLite table at once (a `deliver` beside a recorder
/// that already feeds that table): the second to commit finds the cursor moved and rolls back,
/// instead of writing every row twice.
#[test]
fn two_deliveries_into_one_sqlite_table_at_once_cannot_both_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (tape, end) = record(&dir.path().join("tape"), 0, 300);
    let uri = format!("sqlite:{}/lab.db?table=samples", dir.path().display());
    let open =
        || destination::open(tapedeck::sink::parse_unchecked(&uri).unwrap(), &tape, 0).unwrap();
    let (mut a, mut b) = (open(), open());
    let mut reader =
        tapedeck::tape::TapeReader::open(&tape.dir, tapedeck::tape::StartAt::Start).unwrap();
    let (_, first) = reader.next_batch().unwrap().unwrap();
    a.write(&first).unwrap();
    a.commit(first.num_rows() as u64).unwrap();
    b.write(&first).unwrap();
    let err = b.commit(first.num_rows() as u64).unwrap_err().to_string();
    assert!(err.contains("another delivery"), "{err}");
    a.finish(first.num_rows() as u64).unwrap();
    let c = rusqlite::Connection::open(dir.path().join("lab.db")).unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM samples", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n as usize, first.num_rows(), "each row once");
    assert!(end >= first.num_rows() as u64);
}
