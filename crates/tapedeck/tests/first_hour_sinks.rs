//! What a new user trips over in the sinks (issue 13, items 5 and 11): a run that fails before
//! writing leaves nothing behind, so the retry its message suggests works; two sinks naming one
//! file are refused before anything is created; and URI messages say what was given, where, and
//! what to write instead.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use common::batch;
use tapedeck::Error;
use tapedeck::record::{Block, Channel};
use tapedeck::sink::{self, Sink};

fn rows() -> RecordBatch {
    batch(vec![(
        "n",
        Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef,
    )])
}

fn daq_block() -> Block {
    Block {
        device: "d".into(),
        task: "t".into(),
        block_index: 0,
        first_sample_index: 0,
        t_mono_ns: 0,
        t_utc_us: 0,
        period_ns: Some(100_000),
        read_window_ns: 0,
        channels: vec![Channel::new("ai0", Some("V"))],
        samples: 3,
        values: vec![0.1, 0.2, 0.3],
        raw: None,
        error: None,
    }
}

/// `path` and the names the sink may have made beside it.
fn leftovers(path: &Path) -> Vec<String> {
    let Some(dir) = path.parent() else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let stem = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(&stem))
        .collect()
}

/// A URI pattern (`{}` for the path), a file name, and a first write that fails.
type FailingFirstWrite = (&'static str, &'static str, fn(&mut dyn Sink) -> Error);

/// Each failing first write, by sink.
fn failing_first_writes() -> Vec<FailingFirstWrite> {
    fn blocks(s: &mut dyn Sink) -> Error {
        s.write_block(&daq_block()).unwrap_err()
    }
    fn rows_into_raw(s: &mut dyn Sink) -> Error {
        s.write(&rows()).unwrap_err()
    }
    fn conflicting(s: &mut dyn Sink) -> Error {
        // Two names that differ only in case: the first batch cannot be locked.
        s.write(&batch(vec![
            ("n", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
            ("N", Arc::new(Int64Array::from(vec![2])) as ArrayRef),
        ]))
        .unwrap_err()
    }
    #[allow(unused_mut)]
    let mut all: Vec<FailingFirstWrite> = vec![
        ("csv:{}", "run.csv", blocks),
        ("jsonl:{}", "run.jsonl", blocks),
        ("raw:{}", "run.dt-raw", rows_into_raw),
        ("ipc:{}", "run.arrow", conflicting),
    ];
    #[cfg(feature = "parquet")]
    all.push(("parquet:{}", "run.parquet", conflicting));
    #[cfg(feature = "sqlite")]
    all.push(("sqlite:{}?create_table=false", "run.db", |s| {
        s.write(&rows()).unwrap_err()
    }));
    all
}

#[test]
fn a_sink_that_fails_on_its_first_batch_leaves_nothing_and_the_retry_works() {
    let dir = tempfile::tempdir().unwrap();
    for (pattern, name, fail) in failing_first_writes() {
        // New parent directories too: they go again with the file.
        let path = dir.path().join("new").join("deeper").join(name);
        let uri = pattern.replace("{}", &path.display().to_string());
        let mut s = sink::open(&uri).unwrap();
        let e = fail(s.as_mut());
        assert!(
            !e.is_usage() || matches!(e, Error::BlocksRefused { .. }),
            "{uri}: {e}"
        );
        s.close().unwrap();
        assert!(
            !path.exists(),
            "{uri}: the failed run left {}",
            path.display()
        );
        assert!(leftovers(&path).is_empty(), "{uri}: {:?}", leftovers(&path));
        assert!(
            !dir.path().join("new").exists(),
            "{uri}: the directories the run made stay"
        );
        // The retry the message suggests finds the path free.
        let mut retry = sink::open(&uri).unwrap_or_else(|e| panic!("{uri}: retry: {e}"));
        retry.abandon();
        retry.close().unwrap();
    }
}

#[test]
fn a_run_that_failed_elsewhere_removes_an_unwritten_file_but_keeps_one_with_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut schemes = vec![("csv", "csv"), ("jsonl", "jsonl"), ("ipc", "arrow")];
    if cfg!(feature = "parquet") {
        schemes.push(("parquet", "parquet"));
    }
    if cfg!(feature = "sqlite") {
        schemes.push(("sqlite", "db"));
    }
    for (scheme, ext) in schemes {
        // The source failed before a row (pipe tells every sink).
        let empty = dir.path().join(format!("empty.{ext}"));
        let mut s = sink::open(&format!("{scheme}:{}", empty.display())).unwrap();
        s.abandon();
        s.close().unwrap();
        assert!(
            !empty.exists(),
            "{scheme}: an abandoned, unwritten file stays"
        );

        // Rows were written, then the run failed: they stay, readable.
        let full = dir.path().join(format!("full.{ext}"));
        let mut s = sink::open(&format!("{scheme}:{}", full.display())).unwrap();
        s.write(&rows()).unwrap();
        s.abandon();
        s.close().unwrap();
        assert!(
            full.exists(),
            "{scheme}: rows written before the failure were removed"
        );
        assert_eq!(s.stats().rows, 3, "{scheme}");
    }
    let text = fs::read_to_string(dir.path().join("full.csv")).unwrap();
    assert_eq!(text, "n\n1\n2\n3\n");
}

#[test]
fn a_sink_dropped_before_close_without_rows_leaves_nothing() {
    // What a program does when opening its second sink fails: the first is dropped.
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.csv");
    let s = sink::open(&format!("csv:{}", first.display())).unwrap();
    assert!(first.exists());
    drop(s);
    assert!(!first.exists(), "a sink dropped unwritten left its file");

    // One with rows keeps them.
    let kept = dir.path().join("kept.csv");
    let mut s = sink::open(&format!("csv:{}", kept.display())).unwrap();
    s.write(&rows()).unwrap();
    drop(s);
    assert_eq!(fs::read_to_string(&kept).unwrap(), "n\n1\n2\n3\n");
}

#[test]
fn files_that_existed_before_the_run_are_never_removed() {
    let dir = tempfile::tempdir().unwrap();
    // append=true: the file and what it held stay.
    let log = dir.path().join("log.csv");
    fs::write(&log, "n\n0\n").unwrap();
    let mut s = sink::open(&format!("csv:{}?append=true", log.display())).unwrap();
    s.write_block(&daq_block()).unwrap_err();
    s.close().unwrap();
    assert_eq!(fs::read_to_string(&log).unwrap(), "n\n0\n");

    // overwrite=true: the file was there before this run; it is not this run's to remove.
    let old = dir.path().join("old.csv");
    fs::write(&old, "n\n0\n").unwrap();
    let mut s = sink::open(&format!("csv:{}?overwrite=true", old.display())).unwrap();
    s.write_block(&daq_block()).unwrap_err();
    s.close().unwrap();
    assert!(old.exists());

    // overwrite=true of a path that did not exist: this run made it, so it goes again.
    let fresh = dir.path().join("fresh.csv");
    let mut s = sink::open(&format!("csv:{}?overwrite=true", fresh.display())).unwrap();
    s.write_block(&daq_block()).unwrap_err();
    s.close().unwrap();
    assert!(!fresh.exists());

    // A directory that existed before stays even when empty.
    let existing = dir.path().join("existing");
    fs::create_dir(&existing).unwrap();
    let mut s = sink::open(&format!("csv:{}/x.csv", existing.display())).unwrap();
    s.abandon();
    s.close().unwrap();
    assert!(existing.is_dir());
}

#[cfg(feature = "parquet")]
#[test]
fn a_failed_rolling_parquet_sink_removes_the_directory_it_made() {
    let dir = tempfile::tempdir().unwrap();
    let parts = dir.path().join("parts");
    let mut s = sink::open(&format!("parquet:{}/", parts.display())).unwrap();
    assert!(parts.is_dir());
    s.abandon();
    s.close().unwrap();
    assert!(!parts.exists());
}

#[cfg(feature = "sqlite")]
#[test]
fn sqlite_keeps_a_database_it_made_that_another_sink_wrote_to() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("lab.db");
    // Two sinks into one new database file, different tables: the first fails, the second
    // writes rows.
    let mut a = sink::open(&format!(
        "sqlite:{}?table=a&create_table=false",
        db.display()
    ))
    .unwrap();
    let mut b = sink::open(&format!("sqlite:{}?table=b", db.display())).unwrap();
    a.write(&rows()).unwrap_err();
    a.close().unwrap();
    b.write(&rows()).unwrap();
    b.close().unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM b", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 3);

    // The same with the failing sink closing last, after the other committed.
    let db2 = dir.path().join("lab2.db");
    let mut a = sink::open(&format!(
        "sqlite:{}?table=a&create_table=false",
        db2.display()
    ))
    .unwrap();
    let mut b = sink::open(&format!("sqlite:{}?table=b", db2.display())).unwrap();
    b.write(&rows()).unwrap();
    b.close().unwrap();
    a.write(&rows()).unwrap_err();
    a.close().unwrap();
    assert!(
        db2.exists(),
        "a database another sink wrote rows to was removed"
    );

    // An existing database file a failed run wrote nothing to stays.
    let mut a = sink::open(&format!(
        "sqlite:{}?table=zz&create_table=false",
        db.display()
    ))
    .unwrap();
    a.write(&rows()).unwrap_err();
    a.close().unwrap();
    assert!(db.exists());
}

fn spec(uri: &str) -> sink::SinkSpec {
    sink::parse_unchecked(uri).unwrap_or_else(|e| panic!("{uri}: {e}"))
}

#[test]
fn two_sinks_naming_one_file_are_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    fs::create_dir(dir.path().join("sub")).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(dir.path(), dir.path().join("link")).unwrap();
    let mut same = vec![
        (
            format!("csv:{d}/run.csv"),
            format!("csv:{d}/./run.csv?overwrite=true"),
        ),
        (
            format!("csv:{d}/run.csv"),
            format!("jsonl:{d}/sub/../run.csv"),
        ),
        (format!("ipc:{d}/run.arrow"), format!("raw:{d}//run.arrow")),
    ];
    #[cfg(unix)]
    same.push((format!("csv:{d}/run.csv"), format!("csv:{d}/link/run.csv")));
    #[cfg(feature = "sqlite")]
    {
        same.push((
            format!("sqlite:{d}/lab.db"),
            format!("sqlite:{d}/./lab.db?table=READINGS"),
        ));
        same.push((format!("sqlite:{d}/lab.db"), format!("csv:{d}/lab.db")));
    }
    #[cfg(feature = "parquet")]
    same.push((
        format!("parquet:{d}/parts/"),
        format!("parquet:{d}/parts/?roll_rows=10"),
    ));
    for (a, b) in &same {
        let e = sink::check_distinct([&spec(a), &spec(b)])
            .err()
            .unwrap_or_else(|| panic!("{a} and {b} were not refused"));
        assert!(e.is_usage(), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("--sink") && msg.contains(&d), "{msg}");
    }
    #[allow(unused_mut)]
    let mut distinct = vec![vec![
        format!("csv:{d}/a.csv"),
        format!("csv:{d}/sub/a.csv"),
        "memory:".into(),
        "null:".into(),
        "memory:".into(),
    ]];
    #[cfg(feature = "sqlite")]
    distinct.push(vec![
        format!("sqlite:{d}/lab.db?table=a"),
        format!("sqlite:{d}/lab.db?table=b"),
    ]);
    for uris in &distinct {
        let specs: Vec<_> = uris.iter().map(|u| spec(u)).collect();
        sink::check_distinct(&specs).unwrap_or_else(|e| panic!("{uris:?}: {e}"));
    }
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| n == "sub" || n == "link"),
        "checking created {names:?}"
    );
}

#[test]
fn a_sink_uri_without_a_path_is_shown_with_an_example() {
    let mut uris = vec![
        ("csv:", "csv:run.csv"),
        ("jsonl:?overwrite=true", "jsonl:run.jsonl"),
        ("ipc:", "ipc:run.arrow"),
        ("raw:", "raw:run.dt-raw"),
    ];
    if cfg!(feature = "sqlite") {
        uris.push(("sqlite:", "sqlite:lab.db"));
    }
    if cfg!(feature = "parquet") {
        uris.push(("parquet:", "parquet:run.parquet"));
    }
    for (uri, example) in uris {
        let e = sink::parse(uri)
            .err()
            .unwrap_or_else(|| panic!("{uri} accepted"));
        assert!(matches!(e, Error::MalformedUri { .. }), "{uri}: {e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("`{uri}`")),
            "{uri}: the URI is not shown: {msg}"
        );
        assert!(msg.contains(example), "{uri}: no example: {msg}");
        assert!(e.is_usage());
    }
}

#[test]
fn booleans_read_every_usual_spelling_and_name_what_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.csv").display().to_string();
    for (value, want) in [
        ("true", true),
        ("True", true),
        ("TRUE", true),
        ("yes", true),
        ("Yes", true),
        ("on", true),
        ("ON", true),
        ("1", true),
        ("false", false),
        ("False", false),
        ("no", false),
        ("NO", false),
        ("off", false),
        ("Off", false),
        ("0", false),
    ] {
        let mut uri = tapedeck::uri::Uri::parse(&format!("csv:{p}?strict={value}")).unwrap();
        assert_eq!(uri.params.flag("strict").unwrap(), want, "strict={value}");
    }
    // A bare key means true.
    let mut uri = tapedeck::uri::Uri::parse(&format!("csv:{p}?strict")).unwrap();
    assert!(uri.params.flag("strict").unwrap());
    for value in ["maybe", "", "y", "tru", "2"] {
        let uri = format!("csv:{p}?accept_blocks={value}");
        let e = sink::parse(&uri)
            .err()
            .unwrap_or_else(|| panic!("{uri} accepted"));
        match &e {
            Error::BadParam {
                uri: shown,
                param,
                value: v,
                expected,
            } => {
                assert_eq!(
                    (shown.as_str(), param.as_str(), v.as_str()),
                    (uri.as_str(), "accept_blocks", value)
                );
                for form in [
                    "true",
                    "false",
                    "yes/no",
                    "on/off",
                    "1/0",
                    "accept_blocks=true",
                ] {
                    assert!(expected.contains(form), "{uri}: {expected}");
                }
            }
            other => panic!("{uri}: {other:?}"),
        }
    }
}

#[test]
fn a_parameter_given_twice_is_an_error_naming_it_and_both_values() {
    let e = sink::parse("sqlite:lab.db?table=a&table=b").err().unwrap();
    assert!(e.is_usage());
    let msg = e.to_string();
    for part in [
        "sqlite:lab.db?table=a&table=b",
        "`table`",
        "`a`",
        "`b`",
        "table=b",
    ] {
        assert!(msg.contains(part), "{part} missing: {msg}");
    }
    let e = sink::parse("csv:x.csv?overwrite=true&overwrite=false")
        .err()
        .unwrap();
    assert!(e.to_string().contains("`overwrite`"), "{e}");
    // Sources too.
    let e = tapedeck::source::open("sim:alicat?n=1&n=2").err().unwrap();
    assert!(
        e.to_string().contains("`n`") && e.to_string().contains("`2`"),
        "{e}"
    );
    // A secret is never shown, not even twice.
    let e = sink::parse("csv:x.csv?token=hunter2&token=swordfish")
        .err()
        .unwrap();
    let msg = e.to_string();
    assert!(
        !msg.contains("hunter2") && !msg.contains("swordfish"),
        "{msg}"
    );
}

#[test]
fn pipe_leaves_no_file_from_a_sink_that_refused_the_first_batch() {
    // `record --source sim:daq --sink csv:run.csv --sink ipc:run.arrow`: CSV refuses blocks.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("run.csv");
    let ipc = dir.path().join("run.arrow");
    let sinks = vec![
        sink::open(&format!("csv:{}", csv.display())).unwrap(),
        sink::open(&format!("ipc:{}", ipc.display())).unwrap(),
    ];
    let source =
        tapedeck::source::open("sim:daq?channels=2&rate=1000&block=100&blocks=3&pace=max").unwrap();
    let report =
        tapedeck::pipe::pipe_report(source, sinks, &tapedeck::pipe::PipeOptions::default());
    let e = report.error.map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("accept_blocks=true"), "{e}");
    assert!(!csv.exists(), "the refusing sink left its file");
    assert!(ipc.exists(), "the sink that took the blocks lost its file");
    // The retry the message suggests works at once.
    let source =
        tapedeck::source::open("sim:daq?channels=2&rate=1000&block=100&blocks=3&pace=max").unwrap();
    let sinks = vec![sink::open(&format!("csv:{}?accept_blocks=true", csv.display())).unwrap()];
    tapedeck::pipe::pipe(source, sinks, &tapedeck::pipe::PipeOptions::default()).unwrap();
    assert!(fs::read_to_string(&csv).unwrap().lines().count() > 1);
}
