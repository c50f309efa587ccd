//! The crash harness: `tapedeck record --tape` into CSV, JSONL, SQLite, a Parquet directory and
//! PostgreSQL, killed with SIGKILL at random moments (sometimes while PostgreSQL is stopped or
//! crashed), resumed each time; at the end every sink must hold exactly the tape's rows — same
//! values, no duplicates, no gaps — every Parquet part must be readable, and `verify` clean.
//!
//! Scale with `TAPEDECK_CRASH_KILLS` (default 50; the soak in BENCHMARKS.md ran 2,000) and the
//! source's rate with `TAPEDECK_CRASH_RATE` (rows/s, default 20,000; a long soak uses less, so
//! that the final comparison fits in memory). The random seed is printed, and
//! `TAPEDECK_CRASH_SEED` replays a run.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;

#[path = "../../tapedeck/tests/common/pg_cluster.rs"]
mod pg_cluster;

/// The alicat-sample columns, in the order rows are compared.
const COLUMNS: [&str; 8] = [
    "device",
    "unit_id",
    "requested_at",
    "received_at",
    "midpoint_at",
    "latency_s",
    "Mass_Flow",
    "status",
];

/// A row in comparable form: text as is, times as µs, floats as their shortest exact text.
type Canon = Vec<String>;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

fn float(text: &str) -> String {
    text.trim()
        .parse::<f64>()
        .map_or_else(|_| format!("unparsable {text:?}"), |v| format!("{v:?}"))
}

fn micros(text: &str) -> String {
    tapedeck::record::time::parse_timestamp(text.trim())
        .map_or_else(|| format!("unparsable {text:?}"), |v| v.to_string())
}

/// Rows of Arrow batches (the tape, Parquet) in comparable form.
fn canon_batches(batches: &[RecordBatch]) -> Vec<Canon> {
    let mut out = Vec::new();
    for b in batches {
        let cols: Vec<_> = COLUMNS
            .iter()
            .map(|c| {
                b.column_by_name(c)
                    .unwrap_or_else(|| panic!("no column {c} in {:?}", b.schema()))
                    .clone()
            })
            .collect();
        for i in 0..b.num_rows() {
            out.push(
                cols.iter()
                    .map(|a| {
                        if a.is_null(i) {
                            return String::new();
                        }
                        match a.data_type() {
                            DataType::Utf8 => a.as_string::<i32>().value(i).to_string(),
                            DataType::Float64 => {
                                format!("{:?}", a.as_primitive::<Float64Type>().value(i))
                            }
                            DataType::Timestamp(_, _) => a
                                .as_primitive::<TimestampMicrosecondType>()
                                .value(i)
                                .to_string(),
                            other => panic!("unexpected column type {other}"),
                        }
                    })
                    .collect(),
            );
        }
    }
    out
}

fn canon_text(fields: &[&str]) -> Canon {
    fields
        .iter()
        .enumerate()
        .map(|(i, v)| match i {
            2..=4 => micros(v),
            5 | 6 => float(v),
            _ => v.to_string(),
        })
        .collect()
}

fn tape_rows(tape: &Path) -> Vec<Canon> {
    let reader = tapedeck::tape::TapeReader::open(tape, tapedeck::tape::StartAt::Start).unwrap();
    let batches: Vec<RecordBatch> = reader.map(|r| r.unwrap().1).collect();
    canon_batches(&batches)
}

fn csv_rows(path: &Path) -> Vec<Canon> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_string).collect();
    let idx: Vec<usize> = COLUMNS
        .iter()
        .map(|c| header.iter().position(|h| h == c).unwrap())
        .collect();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let fields: Vec<&str> = idx.iter().map(|i| &rec[*i]).collect();
            canon_text(&fields)
        })
        .collect()
}

fn jsonl_rows(path: &Path) -> Vec<Canon> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: line {line:?}: {e}", path.display()));
            let fields: Vec<String> = COLUMNS
                .iter()
                .map(|c| match &v[c] {
                    serde_json::Value::String(s) => s.clone(),
                    // serde_json's own float parsing may be one ulp off; read the number's text.
                    _ => raw_number(line, c),
                })
                .collect();
            let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
            canon_text(&refs)
        })
        .collect()
}

/// The text of the number after `"key":` in a JSON line.
fn raw_number(line: &str, key: &str) -> String {
    let tag = format!("\"{key}\":");
    let Some(at) = line.find(&tag) else {
        return format!("no {key}");
    };
    line[at + tag.len()..]
        .chars()
        .take_while(|c| *c != ',' && *c != '}')
        .collect()
}

fn sqlite_rows(path: &Path) -> Vec<Canon> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT device, unit_id, requested_at, received_at, midpoint_at, latency_s, Mass_Flow, \
             status FROM flow",
        )
        .unwrap();
    stmt.query_map([], |row| {
        let fields: Vec<String> = (0..8)
            .map(|i| match i {
                5 | 6 => row.get::<_, f64>(i).map(|v| format!("{v:?}")),
                _ => row.get::<_, String>(i),
            })
            .collect::<Result<_, _>>()?;
        Ok(fields)
    })
    .unwrap()
    .map(|r| {
        let f = r.unwrap();
        let refs: Vec<&str> = f.iter().map(String::as_str).collect();
        canon_text(&refs)
    })
    .collect()
}

fn parquet_rows(dir: &Path) -> Vec<Canon> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut batches = Vec::new();
    for name in &names {
        assert!(
            !name.ends_with(".partial"),
            "an unfinished part {name} is left after the final delivery"
        );
        if !name.ends_with(".parquet") {
            continue;
        }
        let file = std::fs::File::open(dir.join(name)).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap_or_else(|e| panic!("part {name} is not readable: {e}"))
            .build()
            .unwrap();
        for b in reader {
            batches.push(b.unwrap_or_else(|e| panic!("part {name}: {e}")));
        }
    }
    canon_batches(&batches)
}

fn psql(url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args([url, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn postgres_rows(url: &str) -> Vec<Canon> {
    let text = psql(
        url,
        "COPY (SELECT device, unit_id, (extract(epoch FROM requested_at) * 1000000)::bigint, \
         (extract(epoch FROM received_at) * 1000000)::bigint, (extract(epoch FROM midpoint_at) * 1000000)::bigint, \
         latency_s, \"Mass_Flow\", status FROM flow) TO STDOUT WITH (FORMAT csv)",
    )
    .unwrap();
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes());
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            let mut c: Canon = rec.iter().map(str::to_string).collect();
            c[5] = float(&c[5]);
            c[6] = float(&c[6]);
            c
        })
        .collect()
}

/// Compares a sink's rows with the tape's as multisets (the tape itself repeats values: every
/// run of the simulator starts its sequence again).
fn check(sink: &str, mut got: Vec<Canon>, want: &[Canon]) {
    got.sort();
    let mut want = want.to_vec();
    want.sort();
    if got == want {
        return;
    }
    let mut counts: BTreeMap<&Canon, i64> = BTreeMap::new();
    for r in &want {
        *counts.entry(r).or_default() += 1;
    }
    for r in &got {
        *counts.entry(r).or_default() -= 1;
    }
    let missing: Vec<_> = counts.iter().filter(|(_, n)| **n > 0).take(3).collect();
    let extra: Vec<_> = counts.iter().filter(|(_, n)| **n < 0).take(3).collect();
    panic!(
        "{sink}: {} rows, the tape has {}; missing (first 3): {missing:?}; duplicated or foreign (first 3): {extra:?}",
        got.len(),
        want.len()
    );
}

#[test]
fn every_sink_holds_exactly_the_tape_after_random_kills_and_database_outages() {
    let kills: usize = std::env::var("TAPEDECK_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("TAPEDECK_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    let rate: u64 = std::env::var("TAPEDECK_CRASH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    eprintln!("crash harness: {kills} kills at {rate} rows/s, TAPEDECK_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let cluster = pg_cluster::Cluster::start("crash harness");
    if cluster.is_none() {
        eprintln!("crash harness: running without the PostgreSQL sink (no throwaway cluster)");
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tape = d.join("tape");
    let mut sinks = vec![
        format!("csv:{}", d.join("out.csv").display()),
        format!("jsonl:{}", d.join("out.jsonl").display()),
        format!(
            "sqlite:{}?table=flow&create_table=true",
            d.join("out.db").display()
        ),
        format!("parquet:{}/?roll_rows=4000", d.join("parts").display()),
    ];
    let pg_url = cluster.as_ref().map(|c| c.url());
    if let Some(url) = &pg_url {
        sinks.push(format!(
            "{url}?table=flow&create_table=true&connect_timeout=2s&retry_for=10m"
        ));
    }
    let began = Instant::now();
    let mut outages = 0;
    for k in 0..kills {
        let outage = cluster.is_some() && rng.below(6) == 0;
        let before = outage && rng.below(2) == 0;
        let mode = if rng.below(2) == 0 {
            "fast"
        } else {
            "immediate"
        };
        if before && let Some(c) = &cluster {
            c.stop(mode);
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tapedeck"));
        cmd.args([
            "record",
            "--source",
            &format!("sim:alicat?rate={rate}"),
            "--tape",
            &tape.display().to_string(),
            "--flush-interval",
            "200ms",
            "--progress",
            "never",
            "-q",
        ]);
        for s in &sinks {
            cmd.args(["--sink", s]);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(30 + rng.below(700)));
        if outage
            && !before
            && let Some(c) = &cluster
        {
            c.stop(mode);
            std::thread::sleep(Duration::from_millis(rng.below(300)));
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("kill {k}: the recorder exited by itself ({status}) before it was killed");
        }
        child.kill().unwrap();
        child.wait().unwrap();
        if outage && let Some(c) = &cluster {
            c.start_again();
            outages += 1;
        }
    }
    eprintln!(
        "crash harness: {kills} kills ({outages} with PostgreSQL stopped or crashed) in {:.1}s",
        began.elapsed().as_secs_f64()
    );
    // Bring every sink to the end of the tape, as a user would after the last crash.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tapedeck"));
    cmd.args([
        "deliver",
        &tape.display().to_string(),
        "--progress",
        "never",
    ]);
    for s in &sinks {
        cmd.args(["--sink", s]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "deliver failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verify = Command::new(env!("CARGO_BIN_EXE_tapedeck"))
        .args(["verify", &tape.display().to_string()])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "verify: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let want = tape_rows(&tape);
    assert!(
        want.len() as u64 > kills as u64 * rate / 200,
        "the tape holds only {} rows after {kills} runs",
        want.len()
    );
    check("csv", csv_rows(&d.join("out.csv")), &want);
    check("jsonl", jsonl_rows(&d.join("out.jsonl")), &want);
    check("sqlite", sqlite_rows(&d.join("out.db")), &want);
    check("parquet", parquet_rows(&d.join("parts")), &want);
    if let Some(url) = &pg_url {
        check("postgres", postgres_rows(url), &want);
    }
    eprintln!(
        "crash harness: {} tape rows found exactly once in each of {} sinks; {:.1}s in all",
        want.len(),
        sinks.len(),
        began.elapsed().as_secs_f64()
    );
}
