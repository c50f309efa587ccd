//! The Parquet sink: files read back with the parquet crate, the hidden-name rule, rolling parts.
#![cfg(feature = "parquet")]

mod common;

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use common::batch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, Encoding};
use parquet::file::reader::{FileReader, SerializedFileReader};
use tapedeck::Error;
use tapedeck::record::{Block, Channel};
use tapedeck::sink;
use tapedeck::source::sim_alicat::AlicatSim;

fn read(path: &Path) -> Vec<RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn concat(batches: &[RecordBatch]) -> RecordBatch {
    arrow_select::concat::concat_batches(&batches[0].schema(), batches).unwrap()
}

fn values() -> RecordBatch {
    batch(vec![
        (
            "s",
            Arc::new(StringArray::from(vec![
                Some("a"),
                None,
                Some(""),
                Some("µ"),
            ])) as ArrayRef,
        ),
        (
            "n",
            Arc::new(Int64Array::from(vec![
                Some(1),
                Some(-2),
                None,
                Some(i64::MAX),
            ])),
        ),
        (
            "x",
            Arc::new(Float64Array::from(vec![
                f64::NAN,
                0.5,
                f64::NEG_INFINITY,
                1e300,
            ])),
        ),
        (
            "b",
            Arc::new(BooleanArray::from(vec![
                Some(true),
                None,
                Some(false),
                Some(true),
            ])),
        ),
        (
            "t",
            Arc::new(
                TimestampMicrosecondArray::from(vec![
                    Some(1),
                    None,
                    Some(-5),
                    Some(1_767_225_600_000_000),
                ])
                .with_timezone("UTC"),
            ),
        ),
    ])
}

#[test]
fn round_trip_row_groups_compression_and_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.parquet");
    let mut s = sink::open(&format!("parquet:{}?row_group_rows=1000", path.display())).unwrap();
    let sim = AlicatSim::new(None, 0.0);
    let mut written = Vec::new();
    for i in 0..40 {
        // 64-row writes with a flush after each, as `pipe` does: row groups must not follow.
        let b = sim.batch(i * 64, 64).unwrap();
        s.write(&b).unwrap();
        s.flush().unwrap();
        written.push(b);
    }
    assert!(!path.exists(), "nothing visible before close");
    s.close().unwrap();
    assert_eq!(s.stats().bytes, std::fs::metadata(&path).unwrap().len());
    let back = concat(&read(&path));
    assert_eq!(back.num_rows(), 2560);
    assert_eq!(back.columns(), concat(&written).columns());
    assert_eq!(
        back.schema().field(2).data_type().to_string(),
        "Timestamp(µs, \"UTC\")"
    );

    let meta = SerializedFileReader::new(File::open(&path).unwrap())
        .unwrap()
        .metadata()
        .clone();
    let groups: Vec<i64> = meta.row_groups().iter().map(|g| g.num_rows()).collect();
    assert_eq!(groups, [1000, 1000, 560]);
    for col in meta.row_group(0).columns() {
        assert!(
            matches!(col.compression(), Compression::ZSTD(_)),
            "{:?}",
            col.compression()
        );
        assert!(
            col.statistics().is_some(),
            "statistics for {}",
            col.column_path()
        );
    }
    let device = meta.row_group(0).column(0);
    assert!(
        device.encodings().any(|e| e == Encoding::RLE_DICTIONARY),
        "text is dictionary-encoded"
    );
    let requested = meta.row_group(0).column(2);
    assert!(
        requested
            .encodings()
            .any(|e| e == Encoding::DELTA_BINARY_PACKED),
        "times are delta-encoded"
    );
    let logical = meta
        .file_metadata()
        .schema_descr()
        .column(2)
        .logical_type_ref()
        .cloned();
    assert!(
        format!("{logical:?}").contains("is_adjusted_to_u_t_c: true")
            && format!("{logical:?}").contains("MICROS"),
        "{logical:?}"
    );
}

#[test]
fn nulls_nan_and_extremes_survive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.parquet");
    let mut s = sink::open(&format!("parquet:{}", path.display())).unwrap();
    s.write(&values()).unwrap();
    s.close().unwrap();
    let back = concat(&read(&path));
    let want = values();
    for (i, (a, b)) in back.columns().iter().zip(want.columns()).enumerate() {
        if i == 2 {
            let (a, b) = (
                a.as_any().downcast_ref::<Float64Array>().unwrap(),
                b.as_any().downcast_ref::<Float64Array>().unwrap(),
            );
            for k in 0..4 {
                assert!(
                    a.value(k).to_bits() == b.value(k).to_bits(),
                    "{} vs {}",
                    a.value(k),
                    b.value(k)
                );
            }
        } else {
            assert_eq!(a, b, "column {i}");
        }
    }
}

#[test]
fn alicat_sample_is_far_below_44_bytes_per_sample() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.parquet");
    let mut s = sink::open(&format!("parquet:{}", path.display())).unwrap();
    let sim = AlicatSim::new(None, 0.0);
    for i in 0..100 {
        s.write(&sim.batch(i * 1000, 1000).unwrap()).unwrap();
    }
    s.close().unwrap();
    let per_sample = std::fs::metadata(&path).unwrap().len() as f64 / 100_000.0;
    assert!(per_sample <= 44.0, "{per_sample} bytes/sample");
}

#[test]
fn the_visible_path_only_ever_holds_a_complete_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.parquet");
    let partial = dir.path().join(".f.parquet.partial");
    let mut s = sink::open(&format!("parquet:{}?row_group_rows=1000", path.display())).unwrap();
    let sim = AlicatSim::new(None, 0.0);
    for i in 0..10 {
        s.write(&sim.batch(i * 1000, 1000).unwrap()).unwrap();
    }
    s.flush().unwrap();
    assert!(
        partial.exists(),
        "rows are being written under the hidden name"
    );
    assert!(
        !path.exists(),
        "the visible name appears only when the file is complete"
    );
    s.close().unwrap();
    assert!(!partial.exists() && path.exists());
    assert_eq!(
        read(&path).iter().map(RecordBatch::num_rows).sum::<usize>(),
        10_000
    );
    // A second sink refuses the now-existing file, unless told to overwrite.
    let err = sink::open(&format!("parquet:{}", path.display()))
        .err()
        .unwrap();
    assert!(matches!(err, Error::FileExists { .. }), "{err:?}");
    let mut s = sink::open(&format!("parquet:{}?overwrite=true", path.display())).unwrap();
    s.write(&values().slice(0, 1)).unwrap();
    s.close().unwrap();
    assert_eq!(
        read(&path).iter().map(RecordBatch::num_rows).sum::<usize>(),
        1
    );
}

#[test]
fn rolling_parts_are_finished_as_they_fill_and_numbering_continues() {
    let dir = tempfile::tempdir().unwrap();
    let parts = dir.path().join("parts");
    let uri = format!("parquet:{}/?roll_rows=1000", parts.display());
    let mut s = sink::open(&uri).unwrap();
    let sim = AlicatSim::new(None, 0.0);
    for i in 0..25 {
        s.write(&sim.batch(i * 100, 100).unwrap()).unwrap();
    }
    s.close().unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&parts)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "part-000000.parquet",
            "part-000001.parquet",
            "part-000002.parquet"
        ]
    );
    let rows: Vec<usize> = names
        .iter()
        .map(|n| read(&parts.join(n)).iter().map(RecordBatch::num_rows).sum())
        .collect();
    assert_eq!(rows, [1000, 1000, 500]);
    // A second run continues the numbering instead of replacing part 0.
    let mut s = sink::open(&uri).unwrap();
    s.write(&sim.batch(0, 10).unwrap()).unwrap();
    s.close().unwrap();
    assert!(parts.join("part-000003.parquet").exists());
}

#[test]
fn parts_roll_while_the_sink_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let parts = dir.path().join("live");
    let mut s = sink::open(&format!("parquet:{}/?roll_rows=10000", parts.display())).unwrap();
    let sim = AlicatSim::new(None, 0.0);
    for i in 0..30 {
        s.write(&sim.batch(i * 1000, 1000).unwrap()).unwrap();
    }
    // 30,000 rows written, 8,192 at most held: at least two parts must be visible and complete.
    let visible: Vec<_> = std::fs::read_dir(&parts)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(visible.len() >= 2, "{visible:?}");
    for p in &visible {
        assert_eq!(
            read(p).iter().map(RecordBatch::num_rows).sum::<usize>(),
            10_000
        );
    }
    s.close().unwrap();
}

#[test]
fn compression_and_dictionary_options() {
    let dir = tempfile::tempdir().unwrap();
    for (param, want) in [
        ("compression=snappy", "SNAPPY"),
        ("compression=lz4", "LZ4_RAW"),
        ("compression=gzip&level=9", "GZIP"),
        ("compression=none", "UNCOMPRESSED"),
        ("compression=zstd&level=19", "ZSTD"),
    ] {
        let path = dir
            .path()
            .join(format!("{}.parquet", param.replace(['=', '&'], "_")));
        let mut s = sink::open(&format!(
            "parquet:{}?{param}&dictionary=false",
            path.display()
        ))
        .unwrap();
        s.write(&values()).unwrap();
        s.close().unwrap();
        let meta = SerializedFileReader::new(File::open(&path).unwrap())
            .unwrap()
            .metadata()
            .clone();
        let col = meta.row_group(0).column(0);
        assert!(
            format!("{:?}", col.compression()).starts_with(want),
            "{param}: {:?}",
            col.compression()
        );
        assert!(
            !col.encodings().any(|e| e == Encoding::RLE_DICTIONARY),
            "{param}: dictionary off"
        );
        assert_eq!(read(&path)[0].columns(), values().columns());
    }
    let err = sink::open("parquet:x.parquet?compression=brotli")
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("zstd, snappy, lz4, gzip, none"),
        "{err}"
    );
    // Out-of-range options are usage errors naming the URI, the parameter, the value and
    // what to write instead.
    for (uri, param, value, hint) in [
        ("parquet:x.parquet?level=99", "level", "99", "level=3"),
        (
            "parquet:x.parquet?compression=gzip&level=10",
            "level",
            "10",
            "level=6",
        ),
        (
            "parquet:x.parquet?compression=snappy&level=3",
            "level",
            "3",
            "drop `level=`",
        ),
        (
            "parquet:x.parquet?row_group_rows=0",
            "row_group_rows",
            "0",
            "row_group_rows=131072",
        ),
        (
            "parquet:parts/?roll_rows=0",
            "roll_rows",
            "0",
            "roll_rows=1000000",
        ),
    ] {
        let err = sink::open(uri).err().unwrap();
        match &err {
            Error::BadParam {
                uri: shown,
                param: p,
                value: v,
                expected,
            } => {
                assert_eq!(
                    (shown.as_str(), p.as_str(), v.as_str()),
                    (uri, param, value)
                );
                assert!(expected.contains(hint), "{uri}: {expected}");
            }
            other => panic!("{uri}: expected BadParam, got {other:?}"),
        }
        assert!(err.is_usage(), "{uri}");
    }
    assert!(!Path::new("x.parquet").exists());
    assert!(!Path::new("parts").exists());
}

fn block(index: u64) -> Block {
    Block {
        device: "dev".into(),
        task: "ai".into(),
        block_index: index,
        first_sample_index: index * 4,
        t_mono_ns: 0,
        t_utc_us: 0,
        period_ns: Some(100),
        read_window_ns: 0,
        channels: vec![Channel::new("ai0", Some("V")), Channel::new("ai1", None)],
        samples: 4,
        values: (0..8).map(f64::from).collect(),
        raw: None,
        error: None,
    }
}

#[test]
fn blocks_wide_or_long_and_shapes_do_not_mix() {
    let dir = tempfile::tempdir().unwrap();
    let wide = dir.path().join("wide.parquet");
    let mut s = sink::open(&format!("parquet:{}", wide.display())).unwrap();
    s.write_block(&block(0)).unwrap();
    s.write_block(&block(1)).unwrap();
    let err = s.write(&values()).unwrap_err();
    match &err {
        Error::ShapeMixed { locked, got, .. } => {
            assert_eq!((*locked, *got), ("blocks", "readings"))
        }
        other => panic!("{other:?}"),
    }
    s.close().unwrap();
    let b = concat(&read(&wide));
    assert_eq!(b.num_rows(), 8);
    assert!(b.column_by_name("ai1").is_some());

    let long = dir.path().join("long.parquet");
    let mut s = sink::open(&format!("parquet:{}?blocks=long", long.display())).unwrap();
    s.write(&values()).unwrap_or(());
    let err = s.write_block(&block(0)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ShapeMixed {
                locked: "readings",
                ..
            }
        ),
        "{err:?}"
    );
    s.close().unwrap();

    let long = dir.path().join("long2.parquet");
    let mut s = sink::open(&format!("parquet:{}?blocks=long", long.display())).unwrap();
    s.write_block(&block(0)).unwrap();
    s.close().unwrap();
    let b = concat(&read(&long));
    assert_eq!(b.num_rows(), 8);
    assert!(b.column_by_name("channel").is_some());
}

#[test]
fn empty_text_columns_round_trip() {
    // All-empty strings take a different path inside the sink (see `backed`).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.parquet");
    let b = batch(vec![(
        "status",
        Arc::new(StringArray::from(vec![""; 5000])) as ArrayRef,
    )]);
    let mut s = sink::open(&format!("parquet:{}", path.display())).unwrap();
    s.write(&b).unwrap();
    s.close().unwrap();
    assert_eq!(concat(&read(&path)).columns(), b.columns());
}

#[test]
fn roll_interval_finishes_a_part_at_the_next_flush() {
    let dir = tempfile::tempdir().unwrap();
    let parts = dir.path().join("timed");
    let mut s = sink::open(&format!("parquet:{}/?roll_interval=100ms", parts.display())).unwrap();
    s.write(&values()).unwrap();
    s.flush().unwrap();
    assert!(
        !parts.join("part-000000.parquet").exists(),
        "too young to roll"
    );
    std::thread::sleep(std::time::Duration::from_millis(150));
    s.write(&values()).unwrap();
    s.flush().unwrap();
    let first = parts.join("part-000000.parquet");
    assert!(
        first.exists(),
        "a part older than roll_interval is finished at a flush"
    );
    assert_eq!(
        read(&first)
            .iter()
            .map(RecordBatch::num_rows)
            .sum::<usize>(),
        8
    );
    s.close().unwrap();
}
