//! Delivery from a tape: each sink's cursor kept with its data, and every way a previous run
//! can have stopped — rows written after the last commit, a part or file finished but not yet
//! renamed, a cursor of another tape, a damaged cursor, a file that was not ours.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use tapedeck::deliver::{Delivery, DeliveryOptions, TapeEnd, TapeRef, destination};
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
    let w = TapeWriter::open(
        dir,
        TapeOptions {
            fsync: FsyncPolicy::Never,
            ..TapeOptions::default()
        },
    )
    .unwrap();
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

/// Delivers the whole tape into `uri`; returns the final status.
fn deliver(tape: &TapeRef, end: u64, uri: &str) -> tapedeck::deliver::DeliveryStatus {
    let spec = tapedeck::sink::parse_unchecked(uri).unwrap();
    let d = Delivery::start(
        tape.clone(),
        vec![(uri.to_string(), spec)],
        TapeEnd::Fixed(end),
        &DeliveryOptions::default(),
    )
    .unwrap();
    d.finish(end).pop().unwrap()
}

fn csv_column(path: &Path) -> Vec<i64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn a_csv_file_is_cut_back_to_its_cursor_and_continued_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.csv");
    let uri = format!("csv:{}", out.display());
    let (tape, end) = record(&dir.path().join("tape"), 0, 1000);
    let s = deliver(&tape, end, &uri);
    assert_eq!((s.state.as_str(), s.cursor), ("done", Some(1000)));
    // A run that wrote rows after its last commit, then died: the rows are in the file, the
    // cursor does not cover them.
    let mut f = std::fs::OpenOptions::new().append(true).open(&out).unwrap();
    std::io::Write::write_all(&mut f, b"1000,500.0\n1001,500.5\n10").unwrap();
    drop(f);
    let (tape, end) = record(&dir.path().join("tape"), 1000, 500);
    let s = deliver(&tape, end, &uri);
    assert_eq!((s.cursor, s.rows), (Some(1500), 500));
    assert_eq!(csv_column(&out), (0..1500).collect::<Vec<_>>());
    // Nothing new: nothing written, the file unchanged.
    let before = std::fs::read(&out).unwrap();
    let s = deliver(&tape, end, &uri);
    assert_eq!((s.cursor, s.rows), (Some(1500), 0));
    assert_eq!(std::fs::read(&out).unwrap(), before);
}

#[test]
fn a_file_shorter_than_its_cursor_is_rebuilt_from_the_tape() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let uri = format!("jsonl:{}", out.display());
    let (tape, end) = record(&dir.path().join("tape"), 0, 300);
    deliver(&tape, end, &uri);
    // Lost in a power failure: the cursor says more than the file holds.
    let len = std::fs::metadata(&out).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&out)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let s = deliver(&tape, end, &uri);
    assert_eq!((s.cursor, s.rows), (Some(300), 300));
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 300);
}

#[test]
fn a_cursor_of_another_tape_or_a_file_that_is_not_ours_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.csv");
    let uri = format!("csv:{}", out.display());
    let (tape_a, end_a) = record(&dir.path().join("a"), 0, 100);
    let (tape_b, end_b) = record(&dir.path().join("b"), 0, 100);
    assert_ne!(tape_a.id, tape_b.id);
    deliver(&tape_a, end_a, &uri);
    let s = deliver(&tape_b, end_b, &uri);
    assert_eq!(s.state, "failed");
    let e = s.error.unwrap();
    assert!(e.contains(&tape_a.id) && e.contains(&tape_b.id), "{e}");
    // Untouched.
    assert_eq!(csv_column(&out).len(), 100);

    let foreign = dir.path().join("foreign.csv");
    std::fs::write(&foreign, "x\n1\n").unwrap();
    let s = deliver(&tape_a, end_a, &format!("csv:{}", foreign.display()));
    assert_eq!(s.state, "failed");
    assert!(s.error.unwrap().contains("overwrite=true"));
    assert_eq!(std::fs::read_to_string(&foreign).unwrap(), "x\n1\n");
    let s = deliver(
        &tape_a,
        end_a,
        &format!("csv:{}?overwrite=true", foreign.display()),
    );
    assert_eq!(s.cursor, Some(100));
    assert_eq!(csv_column(&foreign), (0..100).collect::<Vec<_>>());
}

#[test]
fn a_damaged_cursor_file_rebuilds_a_text_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.csv");
    let uri = format!("csv:{}", out.display());
    let (tape, end) = record(&dir.path().join("tape"), 0, 250);
    deliver(&tape, end, &uri);
    let cursor = destination::hidden_beside(&out, "tapedeck-cursor");
    let mut bytes = std::fs::read(&cursor).unwrap();
    bytes[3] ^= 1;
    std::fs::write(&cursor, bytes).unwrap();
    let s = deliver(&tape, end, &uri);
    assert_eq!((s.cursor, s.rows), (Some(250), 250));
    assert_eq!(csv_column(&out), (0..250).collect::<Vec<_>>());
}

#[cfg(feature = "sqlite")]
#[test]
fn sqlite_keeps_the_cursor_in_the_same_transaction_as_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("out.db");
    let uri = format!("sqlite:{}?table=t&create_table=true", db.display());
    let (tape, end) = record(&dir.path().join("tape"), 0, 700);
    let s = deliver(&tape, end, &uri);
    assert_eq!(s.cursor, Some(700));
    let conn = rusqlite::Connection::open(&db).unwrap();
    let seq: i64 = conn
        .query_row("SELECT tape_seq FROM tapedeck_cursor", [], |r| r.get(0))
        .unwrap();
    assert_eq!(seq, 700);
    // A transaction that never committed leaves neither rows nor cursor: simulate a later run
    // whose last transaction was rolled back by deleting rows 600.. and moving the cursor back
    // in one transaction, then resume.
    conn.execute_batch(
        "BEGIN; DELETE FROM t WHERE i >= 600; UPDATE tapedeck_cursor SET tape_seq = 600; COMMIT;",
    )
    .unwrap();
    drop(conn);
    let (tape, end) = record(&dir.path().join("tape"), 700, 50);
    let s = deliver(&tape, end, &uri);
    assert_eq!((s.cursor, s.rows), (Some(750), 150));
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (n, distinct, max): (i64, i64, i64) = conn
        .query_row(
            "SELECT count(*), count(DISTINCT i), max(i) FROM t",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((n, distinct, max), (750, 750, 749));
}

#[cfg(feature = "parquet")]
fn parquet_ids(path: &Path) -> Vec<i64> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    reader
        .flat_map(|b| {
            let b = b.unwrap();
            b.column(0).as_primitive::<Int64Type>().values().to_vec()
        })
        .collect()
}

#[cfg(feature = "parquet")]
#[test]
fn parquet_parts_resume_after_the_last_finished_part_and_finish_an_interrupted_rename() {
    let dir = tempfile::tempdir().unwrap();
    let parts = dir.path().join("parts");
    let uri = format!("parquet:{}/?roll_rows=400", parts.display());
    let (tape, end) = record(&dir.path().join("tape"), 0, 1000);
    let s = deliver(&tape, end, &uri);
    // Three parts: 400 + 400 + the 200 finished at the end.
    assert_eq!(s.cursor, Some(1000));
    // Simulate a stop after the last part's cursor commit but before its rename.
    let last = parts.join("part-000002.parquet");
    let hidden = parts.join(".part-000002.parquet.partial");
    std::fs::rename(&last, &hidden).unwrap();
    // And an unfinished part of a later run.
    std::fs::write(parts.join(".part-000003.parquet.partial"), b"PAR1 half").unwrap();
    let (tape, end) = record(&dir.path().join("tape"), 1000, 100);
    let s = deliver(&tape, end, &uri);
    assert_eq!((s.cursor, s.rows), (Some(1100), 100));
    let mut names: Vec<String> = std::fs::read_dir(&parts)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ".tapedeck-cursor",
            "part-000000.parquet",
            "part-000001.parquet",
            "part-000002.parquet",
            "part-000003.parquet"
        ]
    );
    let ids: Vec<i64> = names[1..]
        .iter()
        .flat_map(|n| parquet_ids(&parts.join(n)))
        .collect();
    assert_eq!(ids, (0..1100).collect::<Vec<_>>());
}

#[cfg(feature = "parquet")]
#[test]
fn a_whole_file_is_rebuilt_with_new_rows_and_an_interrupted_rename_is_finished() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.parquet");
    let uri = format!("parquet:{}", out.display());
    let (tape, end) = record(&dir.path().join("tape"), 0, 300);
    assert_eq!(deliver(&tape, end, &uri).cursor, Some(300));
    assert_eq!(parquet_ids(&out), (0..300).collect::<Vec<_>>());
    let (tape, end) = record(&dir.path().join("tape"), 300, 200);
    let s = deliver(&tape, end, &uri);
    assert_eq!(s.cursor, Some(500));
    assert_eq!(parquet_ids(&out), (0..500).collect::<Vec<_>>());
    // Stopped after the cursor said "rename pending" and before the rename: the next delivery
    // finishes it. Rebuild the state by hand: the complete copy under the hidden name, the
    // cursor slot marked pending.
    let hidden = destination::hidden_beside(&out, "tapedeck-partial");
    std::fs::rename(&out, &hidden).unwrap();
    let cursor_path = destination::hidden_beside(&out, "tapedeck-cursor");
    let tapedeck::deliver::cursor_file::Found::Ours(mut c) =
        tapedeck::deliver::cursor_file::CursorFile::open(&cursor_path, &tape.id).unwrap()
    else {
        panic!("the cursor file is ours");
    };
    c.commit(
        tapedeck::deliver::cursor_file::Position {
            seq: 500,
            value: 0,
            flags: tapedeck::deliver::cursor_file::RENAME_PENDING,
        },
        true,
    )
    .unwrap();
    let s = deliver(&tape, end, &uri);
    assert_eq!((s.cursor, s.rows), (Some(500), 0));
    assert!(!hidden.exists());
    assert_eq!(parquet_ids(&out), (0..500).collect::<Vec<_>>());
}

#[test]
fn a_new_sink_can_start_at_the_end_of_the_tape() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("late.csv");
    let uri = format!("csv:{}", out.display());
    let (tape, end) = record(&dir.path().join("tape"), 0, 400);
    let spec = tapedeck::sink::parse_unchecked(&uri).unwrap();
    let d = Delivery::start(
        tape.clone(),
        vec![(uri.clone(), spec)],
        TapeEnd::Fixed(end),
        &DeliveryOptions {
            new_start: tapedeck::deliver::NewStart::End,
            ..DeliveryOptions::default()
        },
    )
    .unwrap();
    assert_eq!(d.finish(end)[0].cursor, Some(400));
    let (tape, end) = record(&dir.path().join("tape"), 400, 100);
    let s = deliver(&tape, end, &uri);
    assert_eq!(s.cursor, Some(500));
    assert_eq!(csv_column(&out), (400..500).collect::<Vec<_>>());
    // The status file names the sink and its cursor for `inspect`.
    let statuses = tapedeck::deliver::status::read_all(&tape.dir);
    assert_eq!(statuses.len(), 1);
    assert_eq!(
        (statuses[0].sink.as_str(), statuses[0].cursor),
        (uri.as_str(), Some(500))
    );
}

#[test]
fn a_cursor_past_the_end_of_the_tape_is_an_error_not_a_silent_skip() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.csv");
    let uri = format!("csv:{}", out.display());
    let (tape, end) = record(&dir.path().join("tape"), 0, 200);
    deliver(&tape, end, &uri);
    // As if the tape lost its last rows in a power failure after the sink had them.
    let cursor_path = destination::hidden_beside(&out, "tapedeck-cursor");
    let tapedeck::deliver::cursor_file::Found::Ours(mut c) =
        tapedeck::deliver::cursor_file::CursorFile::open(&cursor_path, &tape.id).unwrap()
    else {
        panic!("the cursor file is ours");
    };
    let len = std::fs::metadata(&out).unwrap().len();
    c.commit(
        tapedeck::deliver::cursor_file::Position {
            seq: 260,
            value: len,
            flags: 0,
        },
        true,
    )
    .unwrap();
    let s = deliver(&tape, end, &uri);
    assert_eq!(s.state, "failed");
    assert!(
        s.error
            .as_deref()
            .is_some_and(|e| e.contains("cursor is 260 but the tape ends at 200")),
        "{:?}",
        s.error
    );
}

/// Issue 17: a delivery that keeps up with a live tape and one that starts far behind it (and a
/// third after the recording) see the same rows — frames joined from many small batches come
/// back as the same rows, in the same order, whoever reads them when.
#[test]
fn a_delivery_that_falls_behind_and_one_that_keeps_up_see_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let w = TapeWriter::open(
        dir.path().join("tape"),
        TapeOptions {
            fsync: FsyncPolicy::Interval(std::time::Duration::from_millis(5)),
            ..TapeOptions::default()
        },
    )
    .unwrap();
    let tape = TapeRef {
        dir: dir.path().join("tape"),
        id: w.id().to_string(),
    };
    let live = |name: &str| {
        let uri = format!("csv:{}", dir.path().join(name).display());
        let spec = tapedeck::sink::parse_unchecked(&uri).unwrap();
        Delivery::start(
            tape.clone(),
            vec![(uri, spec)],
            TapeEnd::Live(w.watch()),
            &DeliveryOptions::default(),
        )
        .unwrap()
    };
    let keeps_up = live("keeps_up.csv");
    let mut behind = None;
    let mut at = 0;
    while at < 20_000 {
        // Small batches, as a recorder flushing often writes them: joined into frames.
        w.submit(&batch(at, 64.min(20_000 - at))).unwrap();
        at += 64.min(20_000 - at);
        if at >= 10_000 && behind.is_none() {
            behind = Some(live("behind.csv"));
        }
    }
    w.wait_durable(20_000).unwrap();
    let end = w.next_seq();
    let a = keeps_up.finish(end).pop().unwrap();
    let b = behind.unwrap().finish(end).pop().unwrap();
    w.close().unwrap();
    assert_eq!((a.cursor, b.cursor), (Some(20_000), Some(20_000)));
    let after = deliver(
        &tape,
        end,
        &format!("csv:{}", dir.path().join("after.csv").display()),
    );
    assert_eq!(after.cursor, Some(20_000));
    let first = std::fs::read(dir.path().join("keeps_up.csv")).unwrap();
    assert_eq!(
        csv_column(&dir.path().join("keeps_up.csv")),
        (0..20_000).collect::<Vec<_>>()
    );
    assert_eq!(std::fs::read(dir.path().join("behind.csv")).unwrap(), first);
    assert_eq!(std::fs::read(dir.path().join("after.csv")).unwrap(), first);
}
