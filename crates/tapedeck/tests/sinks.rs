//! Sinks: round trips through independent readers, and every bad-input rule.

mod common;

use std::fs;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use common::batch;
use proptest::prelude::*;
use tapedeck::Error;
use tapedeck::record::time::iso_micros;
use tapedeck::record::{Block, Channel};
use tapedeck::sink;

const TRICKY: [Option<&str>; 7] = [
    Some("plain"),
    Some("comma, inside"),
    Some("quote \" inside"),
    Some("line\nbreak\r\nand CR"),
    Some(""),
    None,
    Some("unicode µ ✓ \t tab"),
];

fn tricky_batch() -> RecordBatch {
    let n = TRICKY.len();
    let floats = [
        1.5,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        1e-300,
        0.1 + 0.2,
    ];
    let ts: Vec<Option<i64>> = (0..n as i64)
        .map(|i| {
            if i == 5 {
                None
            } else {
                Some(1_767_225_600_000_000 + i * 123_457)
            }
        })
        .collect();
    batch(vec![
        (
            "text",
            Arc::new(StringArray::from(TRICKY.to_vec())) as ArrayRef,
        ),
        ("f", Arc::new(Float64Array::from(floats.to_vec()))),
        (
            "i",
            Arc::new(Int64Array::from(
                (0..n as i64)
                    .map(|i| i * -1_000_000_007)
                    .collect::<Vec<_>>(),
            )),
        ),
        (
            "b",
            Arc::new(BooleanArray::from(
                (0..n)
                    .map(|i| (i % 2 == 0).then_some(i % 3 == 0))
                    .collect::<Vec<_>>(),
            )),
        ),
        (
            "t",
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
        ),
    ])
}

fn path(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path().join(name).display().to_string()
}

fn float_eq(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

#[test]
fn csv_round_trips_through_the_csv_crate() {
    let dir = tempfile::tempdir().unwrap();
    let p = path(&dir, "out.csv");
    let mut s = sink::open(&format!("csv:{p}")).unwrap();
    let b = tricky_batch();
    s.write(&b).unwrap();
    s.close().unwrap();
    assert_eq!(s.stats().bytes, fs::metadata(&p).unwrap().len());

    let mut r = csv::Reader::from_path(&p).unwrap();
    assert_eq!(
        r.headers().unwrap().iter().collect::<Vec<_>>(),
        ["text", "f", "i", "b", "t"]
    );
    let recs: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(recs.len(), b.num_rows());
    let f = b.column(1).as_primitive::<Float64Type>();
    let i = b.column(2).as_primitive::<Int64Type>();
    let t = b.column(4).as_primitive::<TimestampMicrosecondType>();
    for (row, rec) in recs.iter().enumerate() {
        assert_eq!(&rec[0], TRICKY[row].unwrap_or(""), "row {row}");
        let back: f64 = rec[1].parse().unwrap();
        assert!(
            float_eq(back, f.value(row)),
            "row {row}: {} vs {}",
            &rec[1],
            f.value(row)
        );
        assert_eq!(rec[2].parse::<i64>().unwrap(), i.value(row));
        if t.is_null(row) {
            assert_eq!(&rec[4], "");
        } else {
            assert_eq!(&rec[4], iso_micros(t.value(row)));
            assert_eq!(
                tapedeck::record::time::parse_timestamp(&rec[4]),
                Some(t.value(row))
            );
        }
    }
    // Null and empty string stay distinguishable in the raw text.
    let text = fs::read_to_string(&p).unwrap();
    assert!(text.contains("\n\"\","), "empty string is quoted: {text}");
    assert!(
        text.contains("\n,NaN,") || text.contains("\n,"),
        "null is an empty field"
    );
    // Python reads the same non-finite spellings.
    assert!(text.contains(",NaN,") && text.contains(",inf,") && text.contains(",-inf,"));
}

#[test]
fn jsonl_round_trips_through_serde_json_and_keeps_wider_rows() {
    let dir = tempfile::tempdir().unwrap();
    let p = path(&dir, "out.jsonl");
    let mut s = sink::open(&format!("jsonl:{p}")).unwrap();
    let b = tricky_batch();
    s.write(&b).unwrap();
    // A wider batch later: just wider objects, no lock.
    s.write(&batch(vec![
        ("text", Arc::new(StringArray::from(vec!["w"])) as ArrayRef),
        ("extra", Arc::new(Int64Array::from(vec![42]))),
    ]))
    .unwrap();
    s.close().unwrap();
    let lines: Vec<serde_json::Value> = fs::read_to_string(&p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), b.num_rows() + 1);
    let f = b.column(1).as_primitive::<Float64Type>();
    for (row, obj) in lines.iter().take(b.num_rows()).enumerate() {
        assert_eq!(obj["text"].as_str(), TRICKY[row], "row {row}");
        let v = f.value(row);
        if v.is_finite() {
            assert!(float_eq(obj["f"].as_f64().unwrap(), v));
        } else {
            assert!(obj["f"].is_null(), "NaN/inf are null");
        }
        assert_eq!(
            obj["i"].as_i64().unwrap(),
            b.column(2).as_primitive::<Int64Type>().value(row)
        );
        // Key order follows the batch.
        let keys: Vec<&String> = obj.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["text", "f", "i", "b", "t"]);
    }
    assert_eq!(lines[b.num_rows()]["extra"], 42);
}

#[test]
fn ipc_round_trips_through_arrow_ipc_reader() {
    let dir = tempfile::tempdir().unwrap();
    let b = tricky_batch();
    let read = |p: &str| -> Vec<RecordBatch> {
        arrow_ipc::reader::FileReader::try_new(fs::File::open(p).unwrap(), None)
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    // Default: small writes are coalesced into one record batch.
    let p = path(&dir, "out.arrow");
    let mut s = sink::open(&format!("ipc:{p}")).unwrap();
    s.write(&b).unwrap();
    s.write(&b.slice(2, 3)).unwrap();
    s.flush().unwrap();
    s.close().unwrap();
    let batches = read(&p);
    assert_eq!(batches.len(), 1);
    let expected =
        arrow_select::concat::concat_batches(&b.schema(), &[b.clone(), b.slice(2, 3)]).unwrap();
    assert_eq!(batches[0].columns(), expected.columns());
    assert_eq!(s.stats().bytes, fs::metadata(&p).unwrap().len());
    assert_eq!(s.stats().rows, 10);
    // batch_rows=1: each write is its own record batch.
    let p = path(&dir, "each.arrow");
    let mut s = sink::open(&format!("ipc:{p}?batch_rows=1")).unwrap();
    s.write(&b).unwrap();
    s.write(&b.slice(2, 3)).unwrap();
    s.close().unwrap();
    let batches = read(&p);
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0].columns(), b.columns());
    assert_eq!(batches[1].columns(), b.slice(2, 3).columns());
    // batch_rows=8: record batches of at least 8 rows, none lost.
    let p = path(&dir, "eight.arrow");
    let mut s = sink::open(&format!("ipc:{p}?batch_rows=8")).unwrap();
    for _ in 0..5 {
        s.write(&b.slice(0, 3)).unwrap();
    }
    s.close().unwrap();
    let sizes: Vec<usize> = read(&p).iter().map(RecordBatch::num_rows).collect();
    assert_eq!(sizes, [9, 6]);
}

#[test]
fn ipc_with_no_batches_is_still_a_readable_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = path(&dir, "empty.arrow");
    let mut s = sink::open(&format!("ipc:{p}")).unwrap();
    s.close().unwrap();
    let reader = arrow_ipc::reader::FileReader::try_new(fs::File::open(&p).unwrap(), None).unwrap();
    assert_eq!(reader.count(), 0);
}

#[test]
fn file_sinks_refuse_to_overwrite_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    for scheme in ["csv", "jsonl", "ipc"] {
        let p = path(&dir, &format!("x.{scheme}"));
        fs::write(&p, "precious").unwrap();
        let err = sink::open(&format!("{scheme}:{p}")).err().unwrap();
        assert!(matches!(err, Error::FileExists { .. }), "{scheme}: {err:?}");
        let msg = err.to_string();
        assert!(msg.contains("overwrite=true") && msg.contains(&p), "{msg}");
        assert_eq!(msg.contains("append=true"), scheme != "ipc", "{msg}");
        assert_eq!(fs::read_to_string(&p).unwrap(), "precious", "untouched");
        let mut s = sink::open(&format!("{scheme}:{p}?overwrite=true")).unwrap();
        s.write(&tricky_batch()).unwrap();
        s.close().unwrap();
        assert_ne!(fs::read(&p).unwrap(), b"precious");
    }
    let p = path(&dir, "x.ipc");
    assert!(matches!(
        sink::open(&format!("ipc:{p}?append=true")),
        Err(Error::UnknownParam { .. })
    ));
    let p = path(&dir, "y.csv");
    assert!(matches!(
        sink::open(&format!("csv:{p}?append=true&overwrite=true")),
        Err(Error::BadParam { .. })
    ));
}

#[test]
fn csv_append_reuses_the_existing_header() {
    let dir = tempfile::tempdir().unwrap();
    let p = path(&dir, "log.csv");
    let mut s = sink::open(&format!("csv:{p}")).unwrap();
    s.write(&batch(vec![
        ("a", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
        ("b", Arc::new(StringArray::from(vec!["x"]))),
    ]))
    .unwrap();
    s.close().unwrap();
    // Second run: columns in another order, one missing, one unknown.
    let mut s = sink::open(&format!("csv:{p}?append=true")).unwrap();
    s.write(&batch(vec![
        ("b", Arc::new(StringArray::from(vec!["y"])) as ArrayRef),
        ("zzz", Arc::new(Int64Array::from(vec![9]))),
    ]))
    .unwrap();
    s.close().unwrap();
    assert_eq!(fs::read_to_string(&p).unwrap(), "a,b\n1,x\n,y\n");

    let j = path(&dir, "log.jsonl");
    for _ in 0..2 {
        let mut s = sink::open(&format!("jsonl:{j}?append=true")).unwrap();
        s.write(&batch(vec![(
            "a",
            Arc::new(Int64Array::from(vec![1])) as ArrayRef,
        )]))
        .unwrap();
        s.close().unwrap();
    }
    assert_eq!(fs::read_to_string(&j).unwrap(), "{\"a\":1}\n{\"a\":1}\n");
}

#[test]
fn csv_append_after_a_torn_last_line_starts_a_new_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = path(&dir, "torn.csv");
    fs::write(&p, "a,b\n1,x\n2,").unwrap();
    let mut s = sink::open(&format!("csv:{p}?append=true")).unwrap();
    s.write(&batch(vec![(
        "a",
        Arc::new(Int64Array::from(vec![3])) as ArrayRef,
    )]))
    .unwrap();
    s.close().unwrap();
    assert_eq!(fs::read_to_string(&p).unwrap(), "a,b\n1,x\n2,\n3,\n");
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

#[test]
fn text_sinks_refuse_blocks_unless_accept_blocks() {
    let dir = tempfile::tempdir().unwrap();
    for scheme in ["csv", "jsonl"] {
        let p = path(&dir, &format!("b.{scheme}"));
        let mut s = sink::open(&format!("{scheme}:{p}")).unwrap();
        let err = s.write_block(&daq_block()).unwrap_err();
        assert!(matches!(err, Error::BlocksRefused { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("accept_blocks=true") && msg.contains("gigabyte"),
            "{msg}"
        );
        s.close().unwrap();

        let p = path(&dir, &format!("ok.{scheme}"));
        let mut s = sink::open(&format!("{scheme}:{p}?accept_blocks=true")).unwrap();
        s.write_block(&daq_block()).unwrap();
        s.close().unwrap();
        assert_eq!(s.stats().rows, 3);
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.contains("ai0") && text.contains("0.2"), "{text}");
    }
    // Columnar sinks take blocks in the wide layout.
    let p = path(&dir, "b.arrow");
    let mut s = sink::open(&format!("ipc:{p}")).unwrap();
    s.write_block(&daq_block()).unwrap();
    s.close().unwrap();
    let mut r = arrow_ipc::reader::FileReader::try_new(fs::File::open(&p).unwrap(), None).unwrap();
    let b = r.next().unwrap().unwrap();
    assert_eq!(
        b.column_by_name("ai0")
            .unwrap()
            .as_primitive::<Float64Type>()
            .value(2),
        0.3
    );
}

#[test]
fn close_is_idempotent_and_writing_after_close_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    for uri in [
        format!("csv:{}", path(&dir, "c.csv")),
        format!("jsonl:{}", path(&dir, "c.jsonl")),
        format!("ipc:{}", path(&dir, "c.arrow")),
        "memory:".to_string(),
        "null:".to_string(),
        #[cfg(feature = "sqlite")]
        format!("sqlite:{}", path(&dir, "c.db")),
        #[cfg(feature = "parquet")]
        format!("parquet:{}", path(&dir, "c.parquet")),
        #[cfg(feature = "parquet")]
        format!("parquet:{}/", path(&dir, "parts")),
    ] {
        let mut s = sink::open(&uri).unwrap();
        s.write(&tricky_batch()).unwrap();
        s.close().unwrap();
        s.close().unwrap();
        let err = s.write(&tricky_batch()).unwrap_err();
        assert!(matches!(err, Error::SinkClosed { .. }), "{uri}: {err:?}");
        assert!(matches!(s.flush(), Err(Error::SinkClosed { .. })), "{uri}");
        assert_eq!(s.stats().rows, 7, "{uri}");
    }
}

#[test]
fn uri_errors_list_what_is_valid() {
    let err = sink::open("parquet2:x").err().unwrap();
    assert!(matches!(err, Error::UnknownScheme { .. }));
    assert!(err.to_string().contains("csv, jsonl, ipc"), "{err}");
    let err = sink::open("csv:x.csv?overwrite=true&colour=red")
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("`colour`") && msg.contains("accept_blocks, append, overwrite, strict"),
        "{msg}"
    );
    let err = sink::open("csv:x.csv?overwrite=maybe").err().unwrap();
    assert!(err.to_string().contains("true or false"), "{err}");
    assert!(matches!(
        sink::open("run.csv"),
        Err(Error::MalformedUri { .. })
    ));
    assert!(sink::open("csv:").is_err());
}

#[test]
fn io_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = path(&dir, "plainfile");
    fs::write(&file, "x").unwrap();
    let bad = format!("{file}/sub/out.csv");
    let err = sink::open(&format!("csv:{bad}")).err().unwrap();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains(&file), "{err}");
}

#[test]
fn csv_strict_refuses_unknown_columns() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = sink::open(&format!("csv:{}?strict=true", path(&dir, "s.csv"))).unwrap();
    s.write(&batch(vec![(
        "a",
        Arc::new(Int64Array::from(vec![1])) as ArrayRef,
    )]))
    .unwrap();
    let err = s
        .write(&batch(vec![(
            "b",
            Arc::new(Int64Array::from(vec![1])) as ArrayRef,
        )]))
        .unwrap_err();
    assert!(matches!(err, Error::UnknownColumn { .. }), "{err:?}");
}

#[test]
fn full_disk_is_a_typed_error_naming_the_path() {
    // /dev/full accepts opens and fails every write with ENOSPC.
    if !std::path::Path::new("/dev/full").exists() {
        eprintln!("skipping: /dev/full does not exist on this system");
        return;
    }
    let mut s = sink::open("csv:/dev/full?overwrite=true").unwrap();
    s.write(&tricky_batch()).unwrap();
    let err = s.flush().unwrap_err();
    match &err {
        Error::Io { path, source, .. } => {
            assert_eq!(path, std::path::Path::new("/dev/full"));
            assert_eq!(source.raw_os_error(), Some(28), "ENOSPC");
        }
        other => panic!("wrong error {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn csv_round_trips_any_text_and_float(
        texts in proptest::collection::vec(proptest::option::of(".*"), 1..20),
        floats in proptest::collection::vec(proptest::num::f64::ANY, 1..20),
    ) {
        let n = texts.len().min(floats.len());
        let dir = tempfile::tempdir().unwrap();
        let p = path(&dir, "p.csv");
        let b = batch(vec![
            ("s", Arc::new(StringArray::from(texts[..n].to_vec())) as ArrayRef),
            ("f", Arc::new(Float64Array::from(floats[..n].to_vec()))),
        ]);
        let mut s = sink::open(&format!("csv:{p}")).unwrap();
        s.write(&b).unwrap();
        s.close().unwrap();
        let mut r = csv::Reader::from_path(&p).unwrap();
        let recs: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
        prop_assert_eq!(recs.len(), n);
        for (i, rec) in recs.iter().enumerate() {
            prop_assert_eq!(&rec[0], texts[i].as_deref().unwrap_or(""));
            let back: f64 = rec[1].parse().unwrap();
            prop_assert!(float_eq(back, floats[i]), "{} vs {}", &rec[1], floats[i]);
        }
    }

    #[test]
    fn jsonl_round_trips_any_text(texts in proptest::collection::vec(".*", 1..20)) {
        let dir = tempfile::tempdir().unwrap();
        let p = path(&dir, "p.jsonl");
        let b = batch(vec![("s", Arc::new(StringArray::from(texts.clone())) as ArrayRef)]);
        let mut s = sink::open(&format!("jsonl:{p}")).unwrap();
        s.write(&b).unwrap();
        s.close().unwrap();
        let text = fs::read_to_string(&p).unwrap();
        let back: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["s"].as_str().unwrap().to_string())
            .collect();
        prop_assert_eq!(back, texts);
    }
}
