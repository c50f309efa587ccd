//! Correctness against an independent engine: each query's result over the tape equals
//! DuckDB's over the same rows exported to Parquet (written here from the generated rows, not
//! by the code under test), including joins with a Parquet file tapedeck's sink wrote.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use parquet::arrow::ArrowWriter;

fn python() -> Option<String> {
    let python = std::env::var("TAPEDECK_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import duckdb, pyarrow"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    if std::env::var("CI").as_deref() == Ok("true")
        || std::env::var_os("TAPEDECK_TEST_PYTHON").is_some()
    {
        panic!("{python} cannot import duckdb and pyarrow; run the suite with `bash scripts/test`");
    }
    eprintln!(
        "SKIPPED: {python} cannot import duckdb and pyarrow — run the suite with `bash scripts/test`"
    );
    None
}

fn write_parquet(path: &Path, batch: &arrow_array::RecordBatch) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

/// (name, tapedeck SQL, DuckDB SQL, may be empty). Every query orders its rows completely.
const QUERIES: &[(&str, &str, &str, bool)] = &[
    (
        "count",
        "SELECT count(*) FROM tape",
        "SELECT count(*) FROM tape",
        false,
    ),
    (
        "count_value",
        "SELECT count(value), count(temp) FROM tape",
        "SELECT count(value), count(temp) FROM tape",
        false,
    ),
    (
        "seq_range",
        "SELECT _seq, device, value FROM tape WHERE _seq >= 4000 AND _seq < 4100 ORDER BY _seq",
        "SELECT _seq, device, value FROM tape WHERE _seq >= 4000 AND _seq < 4100 ORDER BY _seq",
        false,
    ),
    (
        "seq_between",
        "SELECT count(*), sum(value) FROM tape WHERE _seq BETWEEN 123 AND 9876",
        "SELECT count(*), sum(value) FROM tape WHERE _seq BETWEEN 123 AND 9876",
        false,
    ),
    (
        "time_range",
        "SELECT _seq, time FROM tape WHERE time >= '2026-01-01T00:00:05Z' AND time < '2026-01-01T00:00:05.250Z' ORDER BY _seq",
        "SELECT _seq, time FROM tape WHERE time >= TIMESTAMPTZ '2026-01-01 00:00:05+00' AND time < TIMESTAMPTZ '2026-01-01 00:00:05.250+00' ORDER BY _seq",
        false,
    ),
    (
        "time_and_value",
        "SELECT device, count(*) FROM tape WHERE time > '2026-01-01T00:00:02Z' AND value > 50 GROUP BY device ORDER BY device",
        "SELECT device, count(*) FROM tape WHERE time > TIMESTAMPTZ '2026-01-01 00:00:02+00' AND value > 50 GROUP BY device ORDER BY device",
        false,
    ),
    (
        "value_filter",
        "SELECT _seq FROM tape WHERE value BETWEEN -1 AND 1 ORDER BY _seq",
        "SELECT _seq FROM tape WHERE value BETWEEN -1 AND 1 ORDER BY _seq",
        false,
    ),
    (
        "nulls",
        "SELECT _seq FROM tape WHERE value IS NULL ORDER BY _seq LIMIT 50",
        "SELECT _seq FROM tape WHERE value IS NULL ORDER BY _seq LIMIT 50",
        false,
    ),
    (
        "group_by",
        "SELECT device, count(*), min(value), max(value), avg(value) FROM tape GROUP BY device ORDER BY device",
        "SELECT device, count(*), min(value), max(value), avg(value) FROM tape GROUP BY device ORDER BY device",
        false,
    ),
    (
        "group_by_having",
        "SELECT device, sum(value) AS s FROM tape GROUP BY device HAVING count(*) > 100 ORDER BY s",
        "SELECT device, sum(value) AS s FROM tape GROUP BY device HAVING count(*) > 100 ORDER BY s",
        false,
    ),
    (
        "date_bin",
        "SELECT date_bin(INTERVAL '1 second', time) AS t, count(*), avg(value) FROM tape GROUP BY t ORDER BY t",
        "SELECT time_bucket(INTERVAL '1 second', time) AS t, count(*), avg(value) FROM tape GROUP BY t ORDER BY t",
        false,
    ),
    (
        "date_bin_device",
        "SELECT date_bin(INTERVAL '500 milliseconds', time) AS t, device, max(value) FROM tape WHERE _seq < 6000 GROUP BY t, device ORDER BY t, device",
        "SELECT time_bucket(INTERVAL '500 milliseconds', time) AS t, device, max(value) FROM tape WHERE _seq < 6000 GROUP BY t, device ORDER BY t, device",
        false,
    ),
    (
        "window_row_number",
        "SELECT _seq, row_number() OVER (PARTITION BY device ORDER BY _seq) AS rn FROM tape WHERE _seq < 300 ORDER BY _seq",
        "SELECT _seq, row_number() OVER (PARTITION BY device ORDER BY _seq) AS rn FROM tape WHERE _seq < 300 ORDER BY _seq",
        false,
    ),
    (
        "window_lag",
        "SELECT _seq, value - lag(value) OVER (ORDER BY _seq) AS d FROM tape WHERE _seq BETWEEN 1000 AND 1200 ORDER BY _seq",
        "SELECT _seq, value - lag(value) OVER (ORDER BY _seq) AS d FROM tape WHERE _seq BETWEEN 1000 AND 1200 ORDER BY _seq",
        false,
    ),
    (
        "window_running",
        "SELECT _seq, sum(value) OVER (PARTITION BY device ORDER BY _seq ROWS BETWEEN 9 PRECEDING AND CURRENT ROW) AS m FROM tape WHERE _seq < 500 ORDER BY _seq",
        "SELECT _seq, sum(value) OVER (PARTITION BY device ORDER BY _seq ROWS BETWEEN 9 PRECEDING AND CURRENT ROW) AS m FROM tape WHERE _seq < 500 ORDER BY _seq",
        false,
    ),
    (
        "join_parquet",
        "SELECT t.device, w.site, count(*), avg(t.value * w.gain) FROM tape t JOIN week w ON t.device = w.device GROUP BY t.device, w.site ORDER BY t.device",
        "SELECT t.device, w.site, count(*), avg(t.value * w.gain) FROM tape t JOIN week w ON t.device = w.device GROUP BY t.device, w.site ORDER BY t.device",
        false,
    ),
    (
        "left_join",
        "SELECT t._seq, w.site FROM tape t LEFT JOIN week w ON t.device = w.device AND w.site = 'north' WHERE t._seq < 40 ORDER BY t._seq",
        "SELECT t._seq, w.site FROM tape t LEFT JOIN week w ON t.device = w.device AND w.site = 'north' WHERE t._seq < 40 ORDER BY t._seq",
        false,
    ),
    (
        "limit",
        "SELECT _seq, value FROM tape ORDER BY value DESC NULLS LAST, _seq LIMIT 7",
        "SELECT _seq, value FROM tape ORDER BY value DESC NULLS LAST, _seq LIMIT 7",
        false,
    ),
    (
        "limit_offset",
        "SELECT _seq FROM tape WHERE device = 'C' ORDER BY _seq LIMIT 5 OFFSET 10",
        "SELECT _seq FROM tape WHERE device = 'C' ORDER BY _seq LIMIT 5 OFFSET 10",
        false,
    ),
    (
        "empty_seq",
        "SELECT _seq, value FROM tape WHERE _seq > 1000000 ORDER BY _seq",
        "SELECT _seq, value FROM tape WHERE _seq > 1000000 ORDER BY _seq",
        true,
    ),
    (
        "empty_time",
        "SELECT count(*) FROM tape WHERE time < '2025-01-01T00:00:00Z'",
        "SELECT count(*) FROM tape WHERE time < TIMESTAMPTZ '2025-01-01 00:00:00+00'",
        false,
    ),
    (
        "schema_change",
        "SELECT _seq, temp FROM tape WHERE _seq BETWEEN 4995 AND 5005 ORDER BY _seq",
        "SELECT _seq, temp FROM tape WHERE _seq BETWEEN 4995 AND 5005 ORDER BY _seq",
        false,
    ),
    (
        "schema_change_agg",
        "SELECT device, count(temp), avg(temp) FROM tape GROUP BY device ORDER BY device",
        "SELECT device, count(temp), avg(temp) FROM tape GROUP BY device ORDER BY device",
        false,
    ),
    (
        "distinct",
        "SELECT DISTINCT device FROM tape ORDER BY device",
        "SELECT DISTINCT device FROM tape ORDER BY device",
        false,
    ),
    (
        "case_when",
        "SELECT CASE WHEN value > 0 THEN 'up' WHEN value < 0 THEN 'down' ELSE 'none' END AS dir, count(*) FROM tape GROUP BY dir ORDER BY dir",
        "SELECT CASE WHEN value > 0 THEN 'up' WHEN value < 0 THEN 'down' ELSE 'none' END AS dir, count(*) FROM tape GROUP BY dir ORDER BY dir",
        false,
    ),
    (
        "subquery",
        "SELECT count(*) FROM tape WHERE value > (SELECT avg(value) FROM tape)",
        "SELECT count(*) FROM tape WHERE value > (SELECT avg(value) FROM tape)",
        false,
    ),
    (
        "or_filter",
        "SELECT count(*) FROM tape WHERE _seq < 100 OR _seq > 9900",
        "SELECT count(*) FROM tape WHERE _seq < 100 OR _seq > 9900",
        false,
    ),
    (
        "min_max_time",
        "SELECT min(time), max(time) FROM tape WHERE device = 'B'",
        "SELECT min(time), max(time) FROM tape WHERE device = 'B'",
        false,
    ),
];

#[test]
fn results_equal_duckdbs_over_the_same_rows() {
    let Some(python) = python() else { return };
    let n = 10_000;
    let f = build(n, 150, 48 << 10);
    let work = f.dir.path();
    // The same rows, independently, for DuckDB.
    write_parquet(&work.join("all.parquet"), &to_batch(&f.rows, true, true));
    // A Parquet file written by tapedeck's own sink, joined in both engines.
    let week = work.join("week.parquet");
    let devices = arrow_array::RecordBatch::try_from_iter(vec![
        (
            "device",
            std::sync::Arc::new(arrow_array::StringArray::from(vec!["A", "B", "C", "E"]))
                as arrow_array::ArrayRef,
        ),
        (
            "site",
            std::sync::Arc::new(arrow_array::StringArray::from(vec![
                "north", "south", "north", "east",
            ])) as _,
        ),
        (
            "gain",
            std::sync::Arc::new(arrow_array::Float64Array::from(vec![1.5, 2.0, 0.5, 9.0])) as _,
        ),
    ])
    .unwrap();
    let mut rec = tapedeck::recorder::Recorder::builder()
        .sink(&format!("parquet:{}", week.display()))
        .open()
        .unwrap();
    rec.write_batch(&devices).unwrap();
    rec.finish().unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let ctx = tapedeck_query::session();
    tapedeck_query::register_tape(&ctx, "tape", &f.tape).unwrap();
    rt.block_on(tapedeck_query::register_uri(
        &ctx,
        "week",
        &format!("parquet:{}", week.display()),
        &Default::default(),
    ))
    .unwrap();
    let mut plan_queries = Vec::new();
    assert!(QUERIES.len() >= 25);
    for (k, (name, ours, theirs, empty)) in QUERIES.iter().enumerate() {
        let batches = rt
            .block_on(run(&ctx, ours))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let schema = batches.first().map(|b| b.schema()).unwrap_or_else(|| {
            rt.block_on(async { ctx.sql(ours).await.unwrap().schema().inner().clone() })
        });
        let out = work.join(format!("q{k}.parquet"));
        let file = std::fs::File::create(&out).unwrap();
        let mut w = ArrowWriter::try_new(file, schema, None).unwrap();
        for b in &batches {
            w.write(b).unwrap();
        }
        w.close().unwrap();
        plan_queries
            .push(serde_json::json!({"name": name, "ours": out, "duckdb": theirs, "empty": empty}));
    }
    let plan = serde_json::json!({
        "views": {"tape": work.join("all.parquet"), "week": week},
        "queries": plan_queries,
    });
    let plan_path = work.join("plan.json");
    std::fs::write(&plan_path, serde_json::to_vec(&plan).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/duckdb_compare.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&plan_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("compared {} queries, 0 mismatched", QUERIES.len())),
        "{stdout}"
    );
}
