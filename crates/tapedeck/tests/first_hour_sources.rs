//! Issue 13 ("the first hour"), source side: CSV column types that are inferred once, then
//! held and shown; `--duration` of a paced DAQ simulation that records exactly
//! duration × rate samples; source URI mistakes answered with source URIs.

use std::fmt::Write as _;
use std::io::Cursor;
use std::time::{Duration, Instant};

use tapedeck::Error;
use tapedeck::pipe::{PipeOptions, pipe};
use tapedeck::record::{Record, Row, Value};
use tapedeck::sink::memory::MemorySink;
use tapedeck::source::lines::{ColumnType, LineFormat, LineSource, OnError};
use tapedeck::source::{self, Source};

/// Rows until the end, or the error that ended the stream.
fn read_all(s: &mut dyn Source) -> (Vec<Row>, Option<Error>) {
    let mut rows = Vec::new();
    loop {
        match s.next_record() {
            Ok(Some(Record::Row(r))) => rows.push(r),
            Ok(Some(other)) => panic!("expected rows, got {other:?}"),
            Ok(None) => return (rows, None),
            Err(e) => return (rows, Some(e)),
        }
    }
}

fn csv(text: &str, on_error: OnError) -> LineSource {
    LineSource::new(
        "lab.csv",
        Box::new(Cursor::new(text.to_string())),
        LineFormat::Csv,
        on_error,
    )
}

/// `i,flow` with `n` data lines (lines 2..=n+1); `flow` is `i * 0.5`, except `typo` lines
/// (0-based data line indices) which say `not_a_number`.
fn lab_csv(n: usize, typos: &[usize]) -> String {
    let mut text = String::from("i,flow\n");
    for i in 0..n {
        if typos.contains(&i) {
            writeln!(text, "{i},not_a_number").unwrap();
        } else {
            writeln!(text, "{i},{}", i as f64 * 0.5 + 0.25).unwrap();
        }
    }
    text
}

fn type_of(s: &LineSource, column: &str) -> ColumnType {
    s.column_types()
        .expect("column types once the header was read")
        .columns
        .iter()
        .find(|(n, _)| n == column)
        .map(|(_, t)| *t)
        .unwrap_or_else(|| panic!("no column {column}"))
}

// ---- Item 3: a typo inside the inference window ----

#[test]
fn one_typo_in_the_inference_window_keeps_the_column_numeric_and_fails_by_default() {
    // 999 readings and one typo on data line 500 (file line 502), all inside the window.
    let text = lab_csv(1000, &[500]);
    let mut s = csv(&text, OnError::Fail);
    let (rows, err) = read_all(&mut s);
    assert_eq!(type_of(&s, "flow"), ColumnType::Float);
    assert_eq!(rows.len(), 500, "the lines before the typo are delivered");
    assert_eq!(rows[499].get("flow"), Some(&Value::Float(249.75)));
    match err.expect("the typo is a malformed line, fatal under on_error=fail") {
        Error::MalformedInput {
            line,
            message,
            source_name,
        } => {
            assert_eq!((line, source_name.as_str()), (502, "lab.csv"));
            for needle in [
                "column 2 `flow`",
                "numbers",
                "inferred from lines 2-1001",
                "`not_a_number`",
                "on_error=skip",
                "types=flow:text",
            ] {
                assert!(message.contains(needle), "{needle}: {message}");
            }
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn one_typo_in_the_inference_window_is_skipped_and_counted_under_skip() {
    let text = lab_csv(1000, &[500]);
    let mut s = csv(&text, OnError::Skip);
    let counters = s.counters();
    let (rows, err) = read_all(&mut s);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(rows.len(), 999);
    assert_eq!(counters.skipped(), 1);
    assert!(
        rows.iter()
            .all(|r| matches!(r.get("flow"), Some(Value::Float(_)))),
        "every delivered flow is a number"
    );
    assert_eq!(type_of(&s, "i"), ColumnType::Int);
    assert_eq!(type_of(&s, "flow"), ColumnType::Float);
}

#[test]
fn a_column_that_is_mostly_not_numbers_is_text() {
    // One value in 20 may be a typo; more, and the column is text.
    let at_most = lab_csv(40, &[3, 17]); // 2 of 40: a number column with two bad lines
    let mut s = csv(&at_most, OnError::Skip);
    let (rows, _) = read_all(&mut s);
    assert_eq!(type_of(&s, "flow"), ColumnType::Float);
    assert_eq!(rows.len(), 38);

    let too_many = lab_csv(40, &[3, 17, 30]); // 3 of 40: text
    let mut s = csv(&too_many, OnError::Fail);
    let (rows, err) = read_all(&mut s);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(type_of(&s, "flow"), ColumnType::Text);
    assert_eq!(rows.len(), 40);
    assert_eq!(rows[3].get("flow"), Some(&Value::from("not_a_number")));
    assert_eq!(rows[4].get("flow"), Some(&Value::from("2.25")));

    // Too few values to tell a typo from text (19, one odd): text, nothing lost.
    let short = lab_csv(19, &[5]);
    let mut s = csv(&short, OnError::Fail);
    let (rows, err) = read_all(&mut s);
    assert!(err.is_none(), "{err:?}");
    assert_eq!((type_of(&s, "flow"), rows.len()), (ColumnType::Text, 19));

    // Mostly words: text.
    let mut s = csv("id,state\n1,idle\n2,2\n3,run\n4,run\n", OnError::Fail);
    let (rows, err) = read_all(&mut s);
    assert!(err.is_none(), "{err:?}");
    assert_eq!((type_of(&s, "state"), rows.len()), (ColumnType::Text, 4));
}

#[test]
fn a_float_among_integers_makes_a_float_column_not_a_malformed_line() {
    let mut text = String::from("n\n");
    for i in 0..100 {
        writeln!(text, "{i}").unwrap();
    }
    text.push_str("2.5\n");
    let mut s = csv(&text, OnError::Fail);
    let (rows, err) = read_all(&mut s);
    assert!(err.is_none(), "{err:?}");
    assert_eq!((type_of(&s, "n"), rows.len()), (ColumnType::Float, 101));
}

// ---- Item 3: after the inference window the type is held ----

#[test]
fn after_the_inference_window_a_value_that_does_not_parse_is_malformed_never_a_retyping() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("late.csv");
    // Window: lines 2-6 (numbers). Line 8 has a word, line 9 a float in the int column.
    std::fs::write(
        &p,
        "n,flow\n1,0.5\n2,1.5\n3,2.5\n4,3.5\n5,4.5\n6,5.5\n7,not_a_number\n8.5,7.5\n9,8.5\n",
    )
    .unwrap();
    let uri = format!("file:{}?infer_rows=5", p.display());

    let mut s = source::open(&uri).unwrap();
    let (rows, err) = read_all(&mut s);
    assert_eq!(rows.len(), 6);
    let msg = err
        .expect("fatal under the default on_error=fail")
        .to_string();
    assert!(
        msg.contains("line 8")
            && msg.contains("column 2 `flow`")
            && msg.contains("inferred from lines 2-6"),
        "{msg}"
    );

    let mut s = source::open(&format!("{uri}&on_error=skip")).unwrap();
    let counters = s.counters();
    let (rows, err) = read_all(&mut s);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(
        counters.skipped(),
        2,
        "the word and the float in the int column"
    );
    assert_eq!(rows.len(), 7);
    assert_eq!(rows[6].get("n"), Some(&Value::Int(9)));
    assert_eq!(rows[6].get("flow"), Some(&Value::Float(8.5)));
    let types = counters.column_types().unwrap();
    assert_eq!(
        types.columns,
        [
            ("n".to_string(), ColumnType::Int),
            ("flow".to_string(), ColumnType::Float)
        ]
    );
}

// ---- Item 3: which type each column got ----

#[test]
fn column_types_are_shown_and_can_be_declared() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("lab.csv");
    std::fs::write(
        &p,
        "t,flow,n,ok,note,serial\n2026-01-01T00:00:00Z,1.5,1,true,a,0012\n2026-01-01T00:00:01Z,2,2,false,,0013\n",
    )
    .unwrap();
    let mut s = source::open(&format!("file:{}?types=serial:text", p.display())).unwrap();
    let counters = s.counters();
    assert!(
        counters.column_types().is_none(),
        "known once the header is read"
    );
    let (rows, err) = read_all(&mut s);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(rows[0].get("serial"), Some(&Value::from("0012")));
    let types = counters.column_types().unwrap();
    assert_eq!(types.inferred_from, Some((2, 3)));
    assert_eq!(types.declared, ["serial"]);
    let line = types.to_string();
    assert_eq!(
        line,
        format!(
            "{}: column types (inferred from lines 2-3): t timestamp, flow float, n int, ok bool, note text, serial text (declared)",
            p.display()
        )
    );

    // A declared name the header lacks names the header; a bad type word names the types.
    let mut s = source::open(&format!("file:{}?types=Serial:text", p.display())).unwrap();
    let (_, err) = read_all(&mut s);
    let err = err.expect("unknown column");
    assert!(
        matches!(err, Error::BadParam { .. }) && err.is_usage(),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("`Serial`") && err.to_string().contains("`serial`"),
        "{err}"
    );
    let err = source::open(&format!("file:{}?types=serial:txt", p.display()))
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("`txt`") && err.to_string().contains("int, float, bool"),
        "{err}"
    );
    // JSONL and lines have no inferred types.
    let mut s = LineSource::new(
        "x.jsonl",
        Box::new(Cursor::new("{\"a\":1}\n")),
        LineFormat::Jsonl,
        OnError::Fail,
    );
    read_all(&mut s);
    assert!(s.column_types().is_none());
}

// ---- Item 4: --duration of sim:daq ----

#[test]
fn a_paced_daq_run_bounded_by_a_duration_ends_after_the_blocks_within_it() {
    // 0.3 s of 0.1 s blocks: 3 blocks, the last one ready at 0.3 s.
    let mut s = source::open("sim:daq?channels=2&rate=1000&block=100").unwrap();
    assert!(s.end_after(Duration::from_millis(300)));
    let t = Instant::now();
    let mut samples = 0;
    while let Some(r) = s.next_record().unwrap() {
        samples += r.row_count();
    }
    assert_eq!(samples, 300);
    assert!(t.elapsed() >= Duration::from_millis(290), "paced");
    // A block that would end past the duration is not made; `blocks=` still bounds it.
    let mut s = source::open("sim:daq?channels=1&rate=1000&block=100&pace=max").unwrap();
    assert!(
        !s.end_after(Duration::from_millis(250)),
        "pace=max runs by the clock"
    );
    let mut s = source::open("sim:daq?channels=1&rate=100000&block=100").unwrap();
    assert!(s.end_after(Duration::from_micros(2500)));
    let mut blocks = 0;
    while s.next_record().unwrap().is_some() {
        blocks += 1;
    }
    assert_eq!(blocks, 2, "2.5 ms of 1 ms blocks");
    let mut s = source::open("sim:daq?channels=1&rate=100000&block=100&blocks=1").unwrap();
    assert!(s.end_after(Duration::from_millis(5)));
    assert!(s.next_record().unwrap().is_some());
    assert!(s.next_record().unwrap().is_none());
}

/// Needs the `pipe.rs` side of issue 13 item 4 (a source that took `end_after` is not cut by
/// the wall clock at the deadline, where its last block becomes ready).
#[test]
fn daq_duration_records_exactly_duration_times_rate() {
    // The README's `--duration 5s` of sim:daq (0.1 s blocks at 10 kHz), shortened to 0.5 s.
    let sink = MemorySink::new();
    let seen = sink.handle();
    let options = PipeOptions {
        duration: Some(Duration::from_millis(500)),
        ..PipeOptions::default()
    };
    let src = source::open("sim:daq?channels=8&rate=10000&block=1000").unwrap();
    let summary = pipe(src, vec![Box::new(sink)], &options).unwrap();
    assert_eq!(summary.rows, 5000, "{summary:?}");
    assert_eq!(seen.blocks().len(), 5);
    assert_eq!(summary.ended_by, "duration");
}

// ---- Item 11: source URI mistakes suggest source URIs ----

#[test]
fn source_uri_mistakes_say_what_to_write_instead() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("d.jsonl");
    std::fs::write(&jsonl, "{\"a\":1}\n").unwrap();
    let jsonl_types = format!("file:{}?types=a:int", jsonl.display());
    for (uri, needles) in [
        ("stdin", &["`stdin`", "stdin:csv", "stdin:jsonl"][..]),
        ("data.csv", &["`data.csv`", "file:data.csv"]),
        ("", &["sim:alicat", "stdin:csv", "file:data.csv"]),
        ("alicat", &["sim:alicat"]),
        ("sim", &["sim:alicat", "sim:daq"]),
        ("sim:", &["sim:alicat", "sim:daq"]),
        (
            "csv:data.csv",
            &["names a sink", "file:data.csv", "stdin:csv"],
        ),
        ("jsonl:log.jsonl", &["file:log.jsonl", "stdin:jsonl"]),
        ("parquet:x.parquet", &["names a sink", "sim, stdin, file"]),
        ("raw:run.dt-raw", &["file:run.dt-raw"]),
        (
            "kafka:topic",
            &["known schemes: sim, stdin, file", "stdin:csv"],
        ),
        ("stdin:", &["stdin:csv"]),
        ("stdin:xml", &["`xml`", "stdin:csv"]),
        ("file:", &["file:data.csv"]),
        ("stdin:csv?infer_rows=0", &["`infer_rows`", "at least 1"]),
        (
            "stdin:csv?types=flow",
            &["`types`", "`flow` has no `:TYPE`"],
        ),
        (jsonl_types.as_str(), &["`types`", "not CSV"]),
    ] {
        let err = source::open(uri)
            .err()
            .unwrap_or_else(|| panic!("{uri:?} should fail"));
        let msg = err.to_string();
        assert!(err.is_usage(), "{uri:?} is bad usage (exit 2): {err:?}");
        assert!(
            msg.contains(&format!("`{uri}`")),
            "{uri:?}: names what was given: {msg}"
        );
        assert!(
            !msg.contains("csv:run.csv"),
            "{uri:?}: a sink example: {msg}"
        );
        for needle in needles {
            assert!(msg.contains(needle), "{uri:?}: {needle}: {msg}");
        }
    }
}
