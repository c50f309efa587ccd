//! A generated tape and the same rows kept in memory (and, for DuckDB, in a Parquet file), so
//! a query's result can be checked against an independent answer.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{
    ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use tapedeck::tape::{TapeOptions, TapeWriter};
use tapedeck_query::datafusion::prelude::SessionContext;
use tapedeck_query::{QueryError, TapeTableOptions};

/// 2026-01-01T00:00:00Z in µs.
pub const BASE_US: i64 = 1_767_225_600_000_000;
pub const DEVICES: [&str; 4] = ["A", "B", "C", "D"];

/// One generated row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub seq: u64,
    pub time: i64,
    pub device: &'static str,
    pub value: Option<f64>,
    /// Only in the second half (a column added later).
    pub temp: Option<f64>,
}

pub fn row(seq: u64, n: u64) -> Row {
    // 1 ms apart, with up to 1.2 ms of jitter so neighbouring frames' time ranges overlap.
    let jitter = ((seq * 7919) % 13) as i64 * 100;
    Row {
        seq,
        time: BASE_US + seq as i64 * 1000 + jitter,
        device: DEVICES[((seq * 31) % 4) as usize],
        value: (!seq.is_multiple_of(17)).then(|| ((seq as f64) * 0.37).sin() * 100.0),
        temp: (seq >= n / 2).then(|| 20.0 + (seq % 50) as f64 / 10.0),
    }
}

fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The rows as a batch, with or without `temp` (and `_seq`, for the Parquet copy).
pub fn to_batch(rows: &[Row], with_temp: bool, with_seq: bool) -> RecordBatch {
    let mut fields = vec![
        Field::new("time", time_type(), true),
        Field::new("device", DataType::Utf8, true),
        Field::new("value", DataType::Float64, true),
    ];
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.time))
                .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.device))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.value))),
    ];
    if with_temp {
        fields.push(Field::new("temp", DataType::Float64, true));
        cols.push(Arc::new(Float64Array::from_iter(
            rows.iter().map(|r| r.temp),
        )));
    }
    if with_seq {
        fields.push(Field::new("_seq", DataType::UInt64, false));
        cols.push(Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.seq),
        )));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub tape: PathBuf,
    pub rows: Vec<Row>,
}

/// A tape of `n` rows in batches of `batch_rows`, segments rolling at `segment_bytes`; the
/// second half carries an extra column (a new segment with a wider schema).
pub fn build(n: u64, batch_rows: u64, segment_bytes: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("tape");
    let rows: Vec<Row> = (0..n).map(|s| row(s, n)).collect();
    write_tape(&tape, &rows, batch_rows, segment_bytes);
    Fixture { dir, tape, rows }
}

pub fn write_tape(tape: &Path, rows: &[Row], batch_rows: u64, segment_bytes: u64) {
    // A frame per batch: the tests count frames read and pruned.
    let options = TapeOptions {
        segment_bytes,
        frame_rows: batch_rows as usize,
        ..TapeOptions::default()
    };
    let w = TapeWriter::open(tape, options).unwrap();
    for chunk in rows.chunks(batch_rows as usize) {
        // A chunk never straddles the half: the schema changes on a batch boundary.
        let (old, new): (Vec<Row>, Vec<Row>) =
            chunk.iter().cloned().partition(|r| r.temp.is_none());
        if !old.is_empty() {
            w.append(&to_batch(&old, false, false)).unwrap();
        }
        if !new.is_empty() {
            w.append(&to_batch(&new, true, false)).unwrap();
        }
    }
    w.close().unwrap();
}

/// Runs `sql` over the tape (as `tape`) in a fresh session.
pub fn query_with(
    tape: &Path,
    sql: &str,
    options: TapeTableOptions,
) -> Result<Vec<RecordBatch>, QueryError> {
    runtime().block_on(async {
        let ctx = tapedeck_query::session();
        tapedeck_query::register_tape_with(&ctx, "tape", tape, options)?;
        run(&ctx, sql).await
    })
}

/// A runtime for a test's queries.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap()
}

pub fn query(tape: &Path, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
    query_with(tape, sql, TapeTableOptions::default())
}

pub async fn run(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
    let df = ctx.sql(sql).await.map_err(QueryError::from_datafusion)?;
    df.collect().await.map_err(QueryError::from_datafusion)
}

/// The first column of the result as u64s (counts, `_seq`s).
pub fn u64s(batches: &[RecordBatch]) -> Vec<u64> {
    let mut out = Vec::new();
    for b in batches {
        let c = tapedeck_query::datafusion::arrow::compute::cast(b.column(0), &DataType::UInt64)
            .unwrap();
        let c = c.as_any().downcast_ref::<UInt64Array>().unwrap();
        out.extend(c.iter().map(|v| v.unwrap()));
    }
    out
}
