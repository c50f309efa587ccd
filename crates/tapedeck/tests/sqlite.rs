//! The SQLite sink against a real database file.
#![cfg(feature = "sqlite")]

mod common;

use std::sync::Arc;

use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Float64Array, Int64Array, StringArray,
    TimestampMicrosecondArray,
};
use common::batch;
use rusqlite::Connection;
use tapedeck::Error;
use tapedeck::record::{Block, Channel};
use tapedeck::sink;

fn db(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("lab.db")
}

fn values_batch() -> arrow_array::RecordBatch {
    batch(vec![
        (
            "device",
            Arc::new(StringArray::from(vec![Some("fuel"), Some("µ ✓"), None])) as ArrayRef,
        ),
        (
            "n",
            Arc::new(Int64Array::from(vec![Some(1), None, Some(-7)])),
        ),
        (
            "x",
            Arc::new(Float64Array::from(vec![1.5, f64::INFINITY, -0.25])),
        ),
        (
            "ok",
            Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
        ),
        (
            "raw",
            Arc::new(BinaryArray::from(vec![
                Some(&b"\x00\x01"[..]),
                None,
                Some(&b""[..]),
            ])),
        ),
        (
            "t",
            Arc::new(
                TimestampMicrosecondArray::from(vec![Some(1_767_225_600_000_100), None, Some(0)])
                    .with_timezone("UTC"),
            ),
        ),
    ])
}

#[test]
fn round_trip_with_real_sqlite_types() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut s = sink::open(&format!("sqlite:{}?table=samples", path.display())).unwrap();
    s.write(&values_batch()).unwrap();
    s.flush().unwrap();
    s.write(&values_batch().slice(0, 1)).unwrap();
    s.close().unwrap();
    assert_eq!(s.stats().rows, 4);

    let c = Connection::open(&path).unwrap();
    let types: Vec<(String, String)> = c
        .prepare("PRAGMA table_info(samples)")
        .unwrap()
        .query_map([], |r| Ok((r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let want = [
        ("device", "TEXT"),
        ("n", "INTEGER"),
        ("x", "REAL"),
        ("ok", "INTEGER"),
        ("raw", "BLOB"),
        ("t", "TEXT"),
    ];
    assert_eq!(types, want.map(|(a, b)| (a.to_string(), b.to_string())));
    type Row = (
        Option<String>,
        Option<i64>,
        Option<f64>,
        Option<i64>,
        Option<Vec<u8>>,
        Option<String>,
    );
    let rows: Vec<Row> = c
        .prepare("SELECT device, n, x, ok, raw, t FROM samples ORDER BY rowid")
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 4);
    assert_eq!(
        rows[0],
        (
            Some("fuel".into()),
            Some(1),
            Some(1.5),
            Some(1),
            Some(vec![0, 1]),
            Some("2026-01-01T00:00:00.000100Z".into())
        )
    );
    assert_eq!(
        rows[1],
        (
            Some("µ ✓".into()),
            None,
            Some(f64::INFINITY),
            Some(0),
            None,
            None
        )
    );
    assert_eq!(
        rows[2],
        (
            None,
            Some(-7),
            Some(-0.25),
            None,
            Some(vec![]),
            Some("1970-01-01T00:00:00.000000Z".into())
        )
    );
    assert_eq!(rows[3], rows[0]);
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal", "WAL by default");
}

#[test]
fn unix_us_timestamps_are_integers() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut s = sink::open(&format!(
        "sqlite:{}?timestamps=unix_us&journal_mode=DELETE",
        path.display()
    ))
    .unwrap();
    s.write(&values_batch()).unwrap();
    s.close().unwrap();
    let c = Connection::open(&path).unwrap();
    let t: i64 = c
        .query_row("SELECT t FROM readings WHERE rowid = 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(t, 1_767_225_600_000_100);
    let ty: String = c
        .query_row(
            "SELECT type FROM pragma_table_info('readings') WHERE name = 't'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(ty, "INTEGER");
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete");
}

#[test]
fn injection_strings_in_names_and_values_are_stored_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let evil_col = "a\"; DROP TABLE readings; --";
    let evil_val = "'); DROP TABLE readings; --";
    let b = batch(vec![
        (
            evil_col,
            Arc::new(StringArray::from(vec![evil_val])) as ArrayRef,
        ),
        ("x\" TEXT, \"y", Arc::new(Int64Array::from(vec![1]))),
    ]);
    let mut s = sink::open(&format!("sqlite:{}", path.display())).unwrap();
    s.write(&b).unwrap();
    s.write(&b).unwrap();
    s.close().unwrap();
    let c = Connection::open(&path).unwrap();
    let names: Vec<String> = c
        .prepare("SELECT name FROM pragma_table_info('readings')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(names, [evil_col, "x\" TEXT, \"y"]);
    let v: String = c
        .query_row(
            &format!(
                "SELECT {} FROM readings LIMIT 1",
                tapedeck::sink::sql::quote_ident(evil_col)
            ),
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(v, evil_val);
    let n: i64 = c
        .query_row("SELECT count(*) FROM readings", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
}

#[test]
fn table_names_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    for bad in ["x;drop", "1abc", "a-b", &"t".repeat(64), ""] {
        let err = sink::open(&format!("sqlite:{}?table={bad}", path.display()))
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("^[A-Za-z_][A-Za-z0-9_]{0,62}$"),
            "{bad}: {err}"
        );
    }
    let err = sink::open(&format!("sqlite:{}?blocks_table=b%20c", path.display()))
        .err()
        .unwrap();
    assert!(matches!(err, Error::BadParam { .. }), "{err:?}");
    assert!(!path.exists(), "a rejected URI creates no database");
}

#[test]
fn create_table_false_needs_the_table_and_locks_to_its_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut s = sink::open(&format!(
        "sqlite:{}?create_table=false&table=runs",
        path.display()
    ))
    .unwrap();
    let err = s.write(&values_batch()).unwrap_err();
    match &err {
        Error::MissingTable { database, table } => {
            assert_eq!(table, "runs");
            assert!(database.ends_with("lab.db"), "{database}");
        }
        other => panic!("{other:?}"),
    }
    drop(s);
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE runs (device TEXT, n INTEGER, x DOUBLE, stamp DATETIME)")
        .unwrap();
    let mut s = sink::open(&format!(
        "sqlite:{}?create_table=false&table=runs",
        path.display()
    ))
    .unwrap();
    // Unknown columns (ok, raw, t) are dropped; n: ints fit; x: float fits REAL.
    s.write(&values_batch()).unwrap();
    // A float into the INTEGER column is a conflict naming the column.
    let err = s
        .write(&batch(vec![(
            "n",
            Arc::new(Float64Array::from(vec![2.5])) as ArrayRef,
        )]))
        .unwrap_err();
    match &err {
        Error::SchemaConflict { column, .. } => assert_eq!(column, "n"),
        other => panic!("{other:?}"),
    }
    s.close().unwrap();
    let c = Connection::open(&path).unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 3);
}

#[test]
fn an_existing_table_is_appended_to_under_create_table_true() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    for _ in 0..2 {
        let mut s = sink::open(&format!("sqlite:{}", path.display())).unwrap();
        s.write(&values_batch()).unwrap();
        s.close().unwrap();
    }
    let c = Connection::open(&path).unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM readings", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 6);
}

#[test]
fn a_failed_transaction_is_rolled_back_and_names_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE readings (n INTEGER NOT NULL)")
        .unwrap();
    let mut s = sink::open(&format!("sqlite:{}?create_table=false", path.display())).unwrap();
    s.write(&batch(vec![(
        "n",
        Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
    )]))
    .unwrap();
    s.flush().unwrap();
    s.write(&batch(vec![(
        "n",
        Arc::new(Int64Array::from(vec![Some(3), None, Some(5)])) as ArrayRef,
    )]))
    .unwrap();
    let err = s.flush().unwrap_err();
    match &err {
        Error::Database {
            table,
            action,
            message,
            ..
        } => {
            assert_eq!(table, "readings");
            assert!(action.contains("rolled back"), "{action}");
            assert!(message.contains("NOT NULL"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    s.close().unwrap();
    let c = Connection::open(&path).unwrap();
    let got: Vec<i64> = c
        .prepare("SELECT n FROM readings ORDER BY rowid")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, [1, 2], "nothing of the failed flush remains");
}

fn block(index: u64) -> Block {
    Block {
        device: "dev".into(),
        task: "ai".into(),
        block_index: index,
        first_sample_index: index * 3,
        t_mono_ns: 5,
        t_utc_us: 1_767_225_600_000_000,
        period_ns: Some(1_000),
        read_window_ns: 0,
        channels: vec![Channel::new("ai0", Some("V")), Channel::new("ai1", None)],
        samples: 3,
        values: vec![0.0, 0.1, 0.2, 1.0, 1.1, 1.2],
        raw: None,
        error: None,
    }
}

#[test]
fn blocks_go_to_their_own_table_as_summaries_or_long_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut s = sink::open(&format!("sqlite:{}", path.display())).unwrap();
    s.write(&values_batch()).unwrap();
    s.write_block(&block(0)).unwrap();
    s.write_block(&block(1)).unwrap();
    s.close().unwrap();
    let c = Connection::open(&path).unwrap();
    let summary: (i64, i64, i64, i64, String, i64) = c
        .query_row(
            "SELECT block_index, first_sample_index, sample_count, channel_count, t_utc, period_ns FROM blocks WHERE block_index = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
        )
        .unwrap();
    assert_eq!(
        summary,
        (1, 3, 3, 2, "2026-01-01T00:00:00.000000Z".into(), 1000)
    );
    let readings: i64 = c
        .query_row("SELECT count(*) FROM readings", [], |r| r.get(0))
        .unwrap();
    assert_eq!(readings, 3);

    let path2 = dir.path().join("long.db");
    let mut s = sink::open(&format!(
        "sqlite:{}?blocks=long&blocks_table=samples",
        path2.display()
    ))
    .unwrap();
    s.write_block(&block(0)).unwrap();
    s.close().unwrap();
    let c = Connection::open(&path2).unwrap();
    let (n, v): (i64, f64) = c
        .query_row("SELECT count(*), sum(value) FROM samples", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(n, 6);
    assert!((v - 3.6).abs() < 1e-9);
}

#[test]
fn bad_parameters_list_the_valid_ones() {
    let err = sink::open("sqlite:x.db?journal=WAL").err().unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("busy_timeout")
            && msg.contains("journal_mode")
            && msg.contains("create_table"),
        "{msg}"
    );
    let err = sink::open("sqlite:x.db?synchronous=SOMETIMES")
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("OFF, NORMAL, FULL, EXTRA"),
        "{err}"
    );
    assert!(!std::path::Path::new("x.db").exists());
}

#[test]
fn python_sqlite3_reads_the_database() {
    let Ok(out) = std::process::Command::new("python3")
        .arg("--version")
        .output()
    else {
        eprintln!("skipping: python3 is not installed");
        return;
    };
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut s = sink::open(&format!("sqlite:{}", path.display())).unwrap();
    s.write(&values_batch()).unwrap();
    s.close().unwrap();
    let script = "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute('select count(*), sum(n), max(t) from readings').fetchone())";
    let out = std::process::Command::new("python3")
        .args(["-c", script, &path.display().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "(3, -6, '2026-01-01T00:00:00.000100Z')"
    );
}

/// A tape in `dir` holding `n` rows `i` (from `from`); returns it and its end.
fn tape(dir: &std::path::Path, from: i64, n: i64) -> (tapedeck::deliver::TapeRef, u64) {
    let w = tapedeck::tape::TapeWriter::open(
        dir,
        tapedeck::tape::TapeOptions {
            fsync: tapedeck::tape::FsyncPolicy::Never,
            ..tapedeck::tape::TapeOptions::default()
        },
    )
    .unwrap();
    w.append(&batch(vec![(
        "i",
        Arc::new(Int64Array::from_iter_values(from..from + n)) as ArrayRef,
    )]))
    .unwrap();
    let tape = tapedeck::deliver::TapeRef {
        dir: dir.to_path_buf(),
        id: w.id().to_string(),
    };
    let end = w.next_seq();
    w.close().unwrap();
    (tape, end)
}

/// Starts delivering `tape` up to `end` into `uri`.
fn start_delivery(
    tape: &tapedeck::deliver::TapeRef,
    end: u64,
    uri: &str,
) -> tapedeck::deliver::Delivery {
    let spec = sink::parse_unchecked(uri).unwrap();
    tapedeck::deliver::Delivery::start(
        tape.clone(),
        vec![(uri.to_string(), spec)],
        tapedeck::deliver::TapeEnd::Fixed(end),
        &tapedeck::deliver::DeliveryOptions::default(),
    )
    .unwrap()
}

fn cursor_rows(path: &std::path::Path) -> i64 {
    let conn = Connection::open(path).unwrap();
    let exists: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'tapedeck_cursor'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    if exists == 0 {
        return 0;
    }
    conn.query_row("SELECT count(*) FROM tapedeck_cursor", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_delivery_that_fails_before_committing_leaves_no_cursor_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    // The database exists (another table), the delivery's table does not.
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE other (x INTEGER)")
        .unwrap();
    let (t, end) = tape(&dir.path().join("tape"), 0, 50);
    let uri = format!("sqlite:{}?table=t&create_table=false", path.display());
    let st = start_delivery(&t, end, &uri).finish(end).pop().unwrap();
    assert_eq!(st.state, "failed", "{st:?}");
    assert_eq!(
        cursor_rows(&path),
        0,
        "the failed delivery left its cursor row"
    );

    // Fixed, the same delivery goes through from the tape's start and keeps its row.
    let uri = format!("sqlite:{}?table=t", path.display());
    let st = start_delivery(&t, end, &uri).finish(end).pop().unwrap();
    assert_eq!((st.state.as_str(), st.cursor), ("done", Some(50)), "{st:?}");
    assert_eq!(cursor_rows(&path), 1);
}

#[test]
fn two_tapes_delivering_into_one_new_table_at_once_cannot_both_get_in() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let path = db(&dir);
        let uri = format!("sqlite:{}?table=t", path.display());
        let (a, end_a) = tape(&dir.path().join("a"), 0, 300);
        let (b, end_b) = tape(&dir.path().join("b"), 1000, 200);
        // Both open before either commits: each sees a table no tape holds yet.
        let da = start_delivery(&a, end_a, &uri);
        let db_ = start_delivery(&b, end_b, &uri);
        let sa = da.finish(end_a).pop().unwrap();
        let sb = db_.finish(end_b).pop().unwrap();
        let states = [sa.state.as_str(), sb.state.as_str()];
        assert!(
            states == ["done", "failed"] || states == ["failed", "done"],
            "round {round}: {sa:?} {sb:?}"
        );
        let (winner, loser) = if sa.state == "done" {
            (&sa, &sb)
        } else {
            (&sb, &sa)
        };
        let e = loser.error.clone().unwrap_or_default();
        assert!(e.contains("already holds rows delivered from tape"), "{e}");
        let conn = Connection::open(&path).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(Some(n as u64), winner.cursor, "round {round}");
        assert_eq!(cursor_rows(&path), 1, "round {round}");
    }
}
