//! Sources: the standard workloads exactly, and the line readers' inference and error handling.

use std::io::Cursor;
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, TimestampMicrosecondType};
use tapedeck::Error;
use tapedeck::record::{Record, Row, Value};
use tapedeck::source::lines::{LineFormat, LineSource, OnError};
use tapedeck::source::sim_alicat::{AlicatSim, BASE_MICROS};
use tapedeck::source::{self, Source};

fn drain(mut s: impl Source) -> Vec<Record> {
    let mut out = Vec::new();
    while let Some(r) = s.next_record().unwrap() {
        out.push(r);
    }
    out
}

fn rows(records: Vec<Record>) -> Vec<Row> {
    records
        .into_iter()
        .map(|r| match r {
            Record::Row(r) => r,
            other => panic!("expected rows, got {other:?}"),
        })
        .collect()
}

#[test]
fn alicat_sample_is_exactly_the_workload() {
    let sim = AlicatSim::new(Some(2500), 0.0);
    let b = sim.batch(0, 2500).unwrap();
    let names: Vec<String> = b
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        [
            "device",
            "unit_id",
            "requested_at",
            "received_at",
            "midpoint_at",
            "latency_s",
            "Mass_Flow",
            "status"
        ]
    );
    let req = b.column(2).as_primitive::<TimestampMicrosecondType>();
    let rec = b.column(3).as_primitive::<TimestampMicrosecondType>();
    let mid = b.column(4).as_primitive::<TimestampMicrosecondType>();
    let flow = b.column(6).as_primitive::<Float64Type>();
    for i in [0usize, 1, 999, 1000, 1001, 2499] {
        assert_eq!(b.column(0).as_string::<i32>().value(i), "fuel");
        assert_eq!(b.column(1).as_string::<i32>().value(i), "A");
        assert_eq!(req.value(i), BASE_MICROS + i as i64 * 100);
        assert_eq!(rec.value(i) - req.value(i), 5_000);
        assert_eq!(mid.value(i) - req.value(i), 2_000);
        assert_eq!(b.column(5).as_primitive::<Float64Type>().value(i), 0.005);
        assert_eq!(flow.value(i), 10.0 + (i % 1000) as f64 * 0.01);
        assert_eq!(b.column(7).as_string::<i32>().value(i), "");
    }
    assert_eq!(
        tapedeck::record::time::iso_micros(BASE_MICROS),
        "2026-01-01T00:00:00.000000Z"
    );
    // From a URI, n bounds the stream.
    let total: usize = drain(source::open("sim:alicat?n=2500").unwrap())
        .iter()
        .map(Record::row_count)
        .sum();
    assert_eq!(total, 2500);
}

#[test]
fn alicat_rate_paces_rows_but_not_timestamps() {
    let t = Instant::now();
    let records = drain(source::open("sim:alicat?n=50&rate=200").unwrap());
    let elapsed = t.elapsed().as_secs_f64();
    assert!(elapsed >= 0.2, "50 rows at 200/s took {elapsed}s");
    let mut next = 0i64;
    for r in records {
        let Record::Batch(b) = r else { panic!() };
        let req = b.column(2).as_primitive::<TimestampMicrosecondType>();
        for i in 0..b.num_rows() {
            assert_eq!(req.value(i), BASE_MICROS + next * 100);
            next += 1;
        }
    }
    assert_eq!(next, 50);
}

#[test]
fn daq_blocks_follow_rate_block_and_raw() {
    let records = drain(
        source::open("sim:daq?channels=4&rate=2000&block=100&blocks=3&pace=max&raw=true").unwrap(),
    );
    assert_eq!(records.len(), 3);
    for (k, r) in records.iter().enumerate() {
        let Record::Block(b) = r else { panic!() };
        b.validate().unwrap();
        assert_eq!(b.channel_count(), 4);
        assert_eq!(b.samples, 100);
        assert_eq!(b.block_index, k as u64);
        assert_eq!(b.first_sample_index, k as u64 * 100);
        assert_eq!(b.period_ns, Some(500_000));
        assert_eq!(b.t_mono_ns, k as i64 * 100 * 500_000);
        let Some(tapedeck::record::RawCodes::I16(raw)) = &b.raw else {
            panic!("raw codes")
        };
        for (v, code) in b.values.iter().zip(raw) {
            assert!(v.abs() <= 1.011, "sin + small noise: {v}");
            assert!(((*code as f64) * 10.0 / 32767.0 - v).abs() < 1e-3);
        }
    }
    // Real-time pacing: 2 blocks of 100 samples at 1 kHz take at least 0.2 s.
    let t = Instant::now();
    drain(source::open("sim:daq?channels=1&rate=1000&block=100&blocks=2").unwrap());
    assert!(t.elapsed().as_secs_f64() >= 0.19);
}

#[test]
fn sim_uris_validate_their_parameters() {
    for (uri, needle) in [
        ("sim:alicat?rows=5", "valid parameters: n, rate"),
        ("sim:alicat?n=-1", "a row count"),
        ("sim:daq?pace=slow", "one of real, max"),
        ("sim:daq?channels=0", "positive"),
        (
            "sim:daq?channels=64&block=10000000",
            "at most 67,108,864 values",
        ),
        ("sim:alicat?rate=1e-300", "between 0.001 and 1e9"),
        ("sim:daq?rate=inf", "positive"),
        ("sim:wind", "known: sim:alicat, sim:daq"),
        ("kafka:topic", "known schemes: sim, stdin, file"),
        ("stdin:", "stdin:csv"),
    ] {
        let err = source::open(uri)
            .err()
            .unwrap_or_else(|| panic!("{uri} should fail"));
        assert!(err.to_string().contains(needle), "{uri}: {err}");
    }
}

fn csv_source(text: &str, on_error: OnError) -> LineSource {
    LineSource::new(
        "test.csv",
        Box::new(Cursor::new(text.to_string())),
        LineFormat::Csv,
        on_error,
    )
}

#[test]
fn csv_source_infers_column_types() {
    let text = "i,f,b,t,s,mixed\n1,1.5,true,2026-01-01T00:00:00Z,a,1\n2,,false,2026-01-01 00:00:01.5,\"b, c\",2.5\n,3,TRUE,,,x\n";
    let rows = rows(drain(csv_source(text, OnError::Fail)));
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].get("i"), Some(&Value::Int(1)));
    assert_eq!(rows[0].get("f"), Some(&Value::Float(1.5)));
    assert_eq!(
        rows[2].get("f"),
        Some(&Value::Float(3.0)),
        "int in a float column"
    );
    assert_eq!(rows[1].get("f"), Some(&Value::Null));
    assert_eq!(rows[1].get("b"), Some(&Value::Bool(false)));
    assert_eq!(rows[0].get("t"), Some(&Value::Timestamp(BASE_MICROS)));
    assert_eq!(
        rows[1].get("t"),
        Some(&Value::Timestamp(BASE_MICROS + 1_500_000))
    );
    assert_eq!(rows[1].get("s"), Some(&Value::Text("b, c".into())));
    assert_eq!(rows[2].get("mixed"), Some(&Value::Text("x".into())));
}

#[test]
fn csv_malformed_lines_fail_or_are_skipped_with_their_line_number() {
    let text = "a,b\n1,2\n3\n4,x\n5,6\n";
    let mut s = csv_source(text, OnError::Fail);
    let mut first = Vec::new();
    let err = loop {
        match s.next_record() {
            Ok(Some(r)) => first.push(r),
            Ok(None) => panic!("should fail"),
            Err(e) => break e,
        }
    };
    match &err {
        Error::MalformedInput { line, message, .. } => {
            assert_eq!(*line, 3);
            assert!(
                message.contains("1 fields, but the header has 2"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(first.len(), 1);

    let s = csv_source(text, OnError::Skip);
    let counters = s.counters();
    // `4,x`: b was inferred as text (x is in the inference window), so only line 3 is bad.
    let got = rows(drain(s));
    assert_eq!(got.len(), 3);
    assert_eq!(counters.skipped(), 1);
}

fn drain_err(mut s: impl Source) -> Error {
    loop {
        match s.next_record() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("expected an error"),
            Err(e) => return e,
        }
    }
}

#[test]
fn csv_type_errors_after_inference_name_column_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("late.csv");
    std::fs::write(&p, "n,s\n1,a\n2,b\nthree,c\n").unwrap();
    let s = source::open(&format!("file:{}?infer_rows=2", p.display())).unwrap();
    let err = drain_err(s);
    let msg = err.to_string();
    assert!(
        msg.contains("line 4")
            && msg.contains("`n`")
            && msg.contains("integers")
            && msg.contains("`three`"),
        "{msg}"
    );
}

#[test]
fn csv_header_problems_are_reported() {
    let err = drain_err(csv_source("a,A\n1,2\n", OnError::Fail));
    assert!(matches!(err, Error::NameCollision { .. }), "{err:?}");
    let err = drain_err(csv_source("a,,c\n1,2,3\n", OnError::Fail));
    assert!(err.to_string().contains("empty column name"), "{err}");
    assert!(drain(csv_source("", OnError::Fail)).is_empty());
}

#[test]
fn jsonl_source_reads_objects_and_reports_bad_lines() {
    let text = "{\"a\":1,\"b\":2.5,\"c\":\"x\",\"d\":null,\"e\":[1,2],\"f\":true}\n\n{\"a\":\n[1]\n{\"a\":2}\n";
    let s = LineSource::new(
        "in.jsonl",
        Box::new(Cursor::new(text)),
        LineFormat::Jsonl,
        OnError::Skip,
    );
    let counters = s.counters();
    let rows = rows(drain(s));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get("a"), Some(&Value::Int(1)));
    assert_eq!(rows[0].get("b"), Some(&Value::Float(2.5)));
    assert_eq!(rows[0].get("e"), Some(&Value::Text("[1,2]".into())));
    assert_eq!(rows[0].get("f"), Some(&Value::Bool(true)));
    let names: Vec<&str> = rows[0].fields().iter().map(|(n, _)| n.as_ref()).collect();
    assert_eq!(names, ["a", "b", "c", "d", "e", "f"], "key order kept");
    assert_eq!(counters.skipped(), 2);

    let s = LineSource::new(
        "in.jsonl",
        Box::new(Cursor::new(text)),
        LineFormat::Jsonl,
        OnError::Fail,
    );
    let err = drain_err(s);
    match err {
        Error::MalformedInput {
            line, source_name, ..
        } => assert_eq!((line, source_name.as_str()), (3, "in.jsonl")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn lines_source_keeps_each_line_and_flags_invalid_utf8() {
    let mut bytes = b"first\r\nsecond\n".to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe, b'\n']);
    bytes.extend_from_slice(b"last");
    let s = LineSource::new(
        "log",
        Box::new(Cursor::new(bytes.clone())),
        LineFormat::Lines,
        OnError::Skip,
    );
    let got: Vec<Value> = rows(drain(s))
        .into_iter()
        .map(|r| r.get("line").cloned().unwrap())
        .collect();
    assert_eq!(
        got,
        vec![
            Value::from("first"),
            Value::from("second"),
            Value::from("last")
        ]
    );
    let s = LineSource::new(
        "log",
        Box::new(Cursor::new(bytes)),
        LineFormat::Lines,
        OnError::Fail,
    );
    let err = drain_err(s);
    assert!(
        err.to_string().contains("log line 3: not valid UTF-8"),
        "{err}"
    );
}

#[test]
fn file_source_picks_format_from_extension_and_names_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.jsonl");
    std::fs::write(&p, "{\"x\":1}\n").unwrap();
    let rows = rows(drain(
        source::open(&format!("file:{}", p.display())).unwrap(),
    ));
    assert_eq!(rows[0].get("x"), Some(&Value::Int(1)));
    let rows2 = self::rows(drain(
        source::open(&format!("file:{}?format=lines", p.display())).unwrap(),
    ));
    assert_eq!(rows2[0].get("line"), Some(&Value::from("{\"x\":1}")));
    let missing = dir.path().join("nope.csv");
    let err = source::open(&format!("file:{}", missing.display()))
        .err()
        .unwrap();
    assert!(
        matches!(err, Error::Io { .. }) && err.to_string().contains("nope.csv"),
        "{err}"
    );
}

// ---- Numbers from a URI that do not fit (issue 12, defect 11) ----

#[test]
fn daq_times_beyond_i64_nanoseconds_are_refused_not_wrapped() {
    // One block of 2^26 samples at 0.001 Hz spans 6.7e19 ns, more than i64 holds.
    let err = source::open("sim:daq?channels=1&rate=0.001&block=67108864&pace=max")
        .err()
        .expect("a block longer than i64 nanoseconds is refused");
    assert!(matches!(err, Error::BadParam { .. }), "{err:?}");
    assert!(err.to_string().contains("`block`"), "{err}");
    // 10,000 blocks of 1,000 samples at 0.001 Hz end after 1e19 ns: refused up front.
    let err = source::open("sim:daq?channels=1&rate=0.001&block=1000&blocks=10000&pace=max")
        .err()
        .expect("a run longer than i64 nanoseconds is refused");
    assert!(err.to_string().contains("`blocks`"), "{err}");
    // Unbounded: the blocks that fit come out, then a typed error (not a panic, not a wrap).
    let mut s = source::open("sim:daq?channels=1&rate=0.001&block=1000000&pace=max").unwrap();
    let mut last_t = i64::MIN;
    let err = loop {
        match s.next_record() {
            Ok(Some(Record::Block(b))) => {
                assert!(b.t_mono_ns > last_t, "times only grow");
                last_t = b.t_mono_ns;
                b.to_summary_batch().unwrap();
                if last_t >= 8_000_000_000_000_000_000 {
                    b.to_wide_batch().unwrap();
                }
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::InvalidBlock { .. }), "{err:?}");
    assert!(err.to_string().contains("sim:daq"), "{err}");
    assert_eq!(last_t, 8_000_000_000_000_000_000);
}

#[test]
fn alicat_batches_past_the_i64_clock_are_errors() {
    let sim = AlicatSim::new(None, 0.0);
    for (first, count) in [
        (u64::MAX - 5, 10),
        (u64::MAX, 1),
        (i64::MAX as u64 / 100 + 1, 1),
        (i64::MAX as u64 / 100 - 10, 100),
    ] {
        let err = sim.batch(first, count).unwrap_err();
        assert!(err.to_string().contains("sim:alicat"), "{first}: {err}");
    }
    assert_eq!(sim.batch(1_000_000, 3).unwrap().num_rows(), 3);
}
