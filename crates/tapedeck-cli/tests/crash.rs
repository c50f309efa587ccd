//! The crash harness: `tapedeck record --tape` and `tapedeck deliver` killed with SIGKILL at
//! random moments, resumed each time, then every sink compared with the tape.
//!
//! Two loops, run as two tests:
//!
//! - **Rows** into every row sink that keeps a cursor — CSV, JSONL, SQLite, a Parquet directory,
//!   a single Parquet file, an Arrow IPC file, PostgreSQL and a NATS JetStream subject
//!   (`nats://`, on a throwaway `nats-server` of the harness; the database and the NATS server
//!   are stopped or crashed — nats-server by SIGKILL — in about one run in six). The source
//!   is `stdin:csv`, fed by this harness at a steady rate with rows that are unique: `run`
//!   (the kill number) and `seq` (0, 1, 2, … within the run), a `t_utc` that only grows, a
//!   float and a text with quotes, commas, `µ` and nulls. So a lost row cannot hide behind an
//!   equal one from another run (`sim:alicat` starts over at the same values every run and
//!   has no seed).
//! - **`raw:`** (`.dt-raw`), which needs DAQ blocks: `sim:daq?raw=true` in real time into a tape
//!   of its own (with a row sink in the same run a CSV would refuse the blocks), whose samples
//!   are unique by their wall-clock `t_utc`. Some `deliver` runs there go to the end (they write
//!   the `final` marker) before the next kill.
//!
//! Every run draws its `--fsync` policy (a SIGKILL loses nothing the operating system holds,
//! whatever the policy, so the checks below hold for each), compression, `--segment-bytes`
//! (4096, the minimum, rolls segments many times within a run) and its subset of sinks, so that
//! sinks fall behind and a killed `deliver` has rows to catch up. About one kill in six comes
//! the moment a CSV, JSONL or `.dt-raw` file of the run changes (cut back or first written on
//! resume, before a commit covers it), one in three early (while the run recovers the tape and
//! resumes its sinks), the rest at random.
//!
//! After every kill, before anything can append to the tape again:
//! - no delivery of the killed run may have failed (its progress line and status file say so; a
//!   killed run prints no summary): each failure is printed at once and fails the test at its
//!   end, after the data checks;
//! - the tape is recovered (in this process, as the next run would; every other kill it is only
//!   read, and that run's own recovery is judged at the next kill); it must not have shrunk,
//!   nor changed its last row of the previous kill;
//! - every sink is read: it may hold only rows the tape still has (a delivery reads only
//!   acknowledged rows: a sink holding more means acknowledged rows were lost), and its last row
//!   must be the tape's row at that position; whole files and Parquet parts must be readable
//!   whenever they are visible.
//!
//! At the end a `deliver` brings every sink to the tape's end, `verify` must be clean, the tape
//! must hold each run's rows in order without gaps, and every sink exactly the tape's rows in
//! tape order (SQLite by rowid; PostgreSQL, a table without an order, sorted by its unique
//! key); the `.dt-raw` file every sample's codes in order, chunk numbers 0, 1, 2, … and one
//! `final` marker, at its end.
//!
//! `TAPEDECK_CRASH_KILLS` (default 50) kills of the rows loop, and half that (at least 4) of
//! the raw loop; `TAPEDECK_CRASH_RATE` rows per second (a divisor of 1,000,000; default
//! 10,000; a long soak uses less, so that the final comparison fits in memory). The random seed
//! is printed, and `TAPEDECK_CRASH_SEED` replays the same choices (not the same timing).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float64Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType, UInt64Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};

#[path = "../../tapedeck/tests/common/nats_server.rs"]
mod nats_server;
#[path = "../../tapedeck/tests/common/pg_cluster.rs"]
mod pg_cluster;

/// The rows loop's columns, in the order rows are compared; `(run, seq)` is unique.
const COLUMNS: [&str; 5] = ["run", "seq", "t_utc", "value", "note"];
const RUN: usize = 0;
const SEQ: usize = 1;
const T_UTC: usize = 2;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Int,
    Float,
    Time,
}

const KINDS: [Kind; 5] = [Kind::Int, Kind::Int, Kind::Time, Kind::Float, Kind::Text];

/// What a `.dt-raw` file keeps of the tape's wide DAQ rows (two channels).
const RAW_COLUMNS: [&str; 6] = [
    "sample_index",
    "t_mono_ns",
    "t_utc",
    "ai0_raw",
    "ai1_raw",
    "error_type",
];
const RAW_SAMPLE: usize = 0;
const RAW_T_UTC: usize = 2;

/// A row in comparable form: text as is (null as empty), integers and times (µs) in decimal,
/// floats as their shortest exact text.
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

    fn pick<'a>(&mut self, of: &[&'a str]) -> &'a str {
        of[self.below(of.len() as u64) as usize]
    }
}

fn env_num(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

// ---------------------------------------------------------------------------------------------
// Canonical rows

fn canon_field(kind: Kind, text: &str) -> String {
    let t = text.trim();
    if t.is_empty() {
        return String::new();
    }
    match kind {
        Kind::Text => text.to_string(),
        Kind::Int => t
            .parse::<i64>()
            .map_or_else(|_| format!("unparsable {text:?}"), |v| v.to_string()),
        Kind::Float => t
            .parse::<f64>()
            .map_or_else(|_| format!("unparsable {text:?}"), |v| format!("{v:?}")),
        Kind::Time => tapedeck::record::time::parse_timestamp(t)
            .map_or_else(|| format!("unparsable {text:?}"), |v| v.to_string()),
    }
}

fn canon_text(fields: &[&str], kinds: &[Kind]) -> Canon {
    fields
        .iter()
        .zip(kinds)
        .map(|(v, k)| canon_field(*k, v))
        .collect()
}

fn cell(a: &dyn Array, i: usize) -> String {
    if a.is_null(i) {
        return String::new();
    }
    match a.data_type() {
        DataType::Utf8 => a.as_string::<i32>().value(i).to_string(),
        DataType::LargeUtf8 => a.as_string::<i64>().value(i).to_string(),
        DataType::Utf8View => a.as_string_view().value(i).to_string(),
        DataType::Int16 => a.as_primitive::<Int16Type>().value(i).to_string(),
        DataType::Int32 => a.as_primitive::<Int32Type>().value(i).to_string(),
        DataType::Int64 => a.as_primitive::<Int64Type>().value(i).to_string(),
        DataType::UInt64 => a.as_primitive::<UInt64Type>().value(i).to_string(),
        DataType::Float64 => format!("{:?}", a.as_primitive::<Float64Type>().value(i)),
        DataType::Timestamp(TimeUnit::Microsecond, _) => a
            .as_primitive::<TimestampMicrosecondType>()
            .value(i)
            .to_string(),
        other => panic!("unexpected column type {other}"),
    }
}

/// Rows of Arrow batches (the tape, Parquet, Arrow IPC) in comparable form.
fn canon_batches(batches: &[RecordBatch], columns: &[&str]) -> Vec<Canon> {
    let mut out = Vec::new();
    for b in batches {
        let cols: Vec<_> = columns
            .iter()
            .map(|c| {
                b.column_by_name(c)
                    .unwrap_or_else(|| panic!("no column {c} in {:?}", b.schema()))
                    .clone()
            })
            .collect();
        for i in 0..b.num_rows() {
            out.push(cols.iter().map(|a| cell(a.as_ref(), i)).collect());
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The tape

fn tape_rows(tape: &Path, columns: &[&str]) -> Vec<Canon> {
    let reader = tapedeck::tape::TapeReader::open(tape, tapedeck::tape::StartAt::Start).unwrap();
    let batches: Vec<RecordBatch> = reader.map(|r| r.unwrap().1).collect();
    canon_batches(&batches, columns)
}

/// The tape's row with sequence number `seq`, if it has one.
fn tape_row_at(tape: &Path, seq: u64, columns: &[&str]) -> Option<Canon> {
    let reader = tapedeck::tape::TapeReader::open(tape, tapedeck::tape::StartAt::Seq(seq)).ok()?;
    for item in reader {
        let (first, batch) = item.unwrap();
        if seq < first {
            return None;
        }
        if seq < first + batch.num_rows() as u64 {
            let b = batch.slice((seq - first) as usize, 1);
            return canon_batches(&[b], columns).pop();
        }
    }
    None
}

fn segments(tape: &Path) -> usize {
    std::fs::read_dir(tape).map_or(0, |d| {
        d.flatten()
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.starts_with("seg-") && n.ends_with(".tape")
            })
            .count()
    })
}

/// The tape's end after a kill: recovered in this process (as the next run would do it), or
/// only read.
fn tape_end(tape: &Path, recover: bool) -> u64 {
    if !tape.join("TAPEID").exists() {
        return 0;
    }
    let end = || {
        tapedeck::tape::TapeReader::open(tape, tapedeck::tape::StartAt::Start)
            .unwrap()
            .end_seq()
            .unwrap()
    };
    if !recover {
        return end();
    }
    let w = tapedeck::tape::TapeWriter::open(tape, tapedeck::tape::TapeOptions::default())
        .unwrap_or_else(|e| panic!("recovering the tape: {e}"));
    let r = w.recovery().clone();
    w.close().unwrap();
    assert!(
        r.quarantined.is_empty(),
        "a SIGKILL cannot damage acknowledged frames, yet recovery quarantined {:?}",
        r.quarantined
    );
    let end = end();
    assert_eq!(
        r.rows, end,
        "recovery counted {} rows, the tape ends at {end}",
        r.rows
    );
    end
}

/// The rows loop's tape: each run's rows with `seq` 0, 1, 2, … and no gap, runs in order, and
/// `t_utc` always growing. Returns the number of runs.
fn check_rows_tape(rows: &[Canon]) -> usize {
    let n = |r: &Canon, i: usize| r[i].parse::<i64>().unwrap();
    if let Some(first) = rows.first() {
        assert_eq!(n(first, SEQ), 0, "the tape starts inside a run: {first:?}");
    }
    let mut runs = usize::from(!rows.is_empty());
    for (i, w) in rows.windows(2).enumerate() {
        let next_in_run = n(&w[1], RUN) == n(&w[0], RUN) && n(&w[1], SEQ) == n(&w[0], SEQ) + 1;
        let next_run = n(&w[1], RUN) > n(&w[0], RUN) && n(&w[1], SEQ) == 0;
        assert!(
            (next_in_run || next_run) && n(&w[1], T_UTC) > n(&w[0], T_UTC),
            "tape rows {i} and {}: rows lost, repeated or out of order: {:?} then {:?}",
            i + 1,
            w[0],
            w[1]
        );
        runs += usize::from(next_run);
    }
    runs
}

/// The raw loop's tape: within a run the sample index counts up by one, a new run starts at
/// sample 0, and `t_utc` always grows. Returns the number of runs.
fn check_raw_tape(rows: &[Canon]) -> usize {
    let n = |r: &Canon, i: usize| r[i].parse::<i64>().unwrap();
    let mut runs = usize::from(!rows.is_empty());
    for (i, w) in rows.windows(2).enumerate() {
        let next_run = n(&w[1], RAW_SAMPLE) == 0;
        assert!(
            (next_run || n(&w[1], RAW_SAMPLE) == n(&w[0], RAW_SAMPLE) + 1)
                && n(&w[1], RAW_T_UTC) > n(&w[0], RAW_T_UTC),
            "tape rows {i} and {}: samples lost, repeated or out of order: {:?} then {:?}",
            i + 1,
            w[0],
            w[1]
        );
        runs += usize::from(next_run);
    }
    runs
}

// ---------------------------------------------------------------------------------------------
// Reading the sinks

/// What a sink holds at a moment: its number of rows and its last row.
#[derive(Debug, Default)]
struct Held {
    rows: u64,
    last: Option<Canon>,
}

/// Counts the complete lines of a file that only grows or is cut back, reading only what
/// changed since a checkpoint whose preceding bytes are unchanged.
#[derive(Default)]
struct LineCounter {
    /// (offset just after a newline, lines before it, the 64 bytes before it)
    checkpoints: Vec<(u64, u64, Vec<u8>)>,
}

fn read_at(f: &File, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    f.read_exact_at(&mut buf, offset).unwrap();
    buf
}

impl LineCounter {
    /// Complete lines, the first line and the last complete line.
    fn count(&mut self, path: &Path) -> (u64, Option<(String, String)>) {
        let Ok(f) = File::open(path) else {
            return (0, None);
        };
        let len = f.metadata().unwrap().len();
        let (from, mut lines) = self
            .checkpoints
            .iter()
            .rev()
            .find(|(off, _, guard)| {
                *off <= len && read_at(&f, off - guard.len() as u64, guard.len()) == *guard
            })
            .map_or((0, 0), |(off, n, _)| (*off, *n));
        let new = read_at(&f, from, (len - from) as usize);
        let mut end = from;
        for (i, b) in new.iter().enumerate() {
            if *b == b'\n' {
                lines += 1;
                end = from + i as u64 + 1;
            }
        }
        if end == 0 {
            return (0, None);
        }
        let g = end.min(64);
        let guard = read_at(&f, end - g, g as usize);
        if self.checkpoints.last().map(|c| c.0) != Some(end) {
            self.checkpoints.push((end, lines, guard));
        }
        let line = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        let head = read_at(&f, 0, end.min(1 << 12) as usize);
        let first = line(&head[..head.iter().position(|b| *b == b'\n').unwrap_or(head.len())]);
        let back = end.min(1 << 16);
        let tail = read_at(&f, end - back, back as usize);
        let body = &tail[..tail.len() - 1];
        let start = body.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        (lines, Some((first, line(&body[start..]))))
    }
}

fn csv_index(header: &csv::StringRecord) -> Vec<usize> {
    COLUMNS
        .iter()
        .map(|c| {
            header
                .iter()
                .position(|h| h == *c)
                .unwrap_or_else(|| panic!("no column {c} in the CSV header {header:?}"))
        })
        .collect()
}

fn csv_record(rec: &csv::StringRecord, idx: &[usize]) -> Canon {
    let f: Vec<&str> = idx.iter().map(|i| rec.get(*i).unwrap_or("short")).collect();
    canon_text(&f, &KINDS)
}

fn csv_parse(text: &str, path: &Path) -> Vec<csv::StringRecord> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

fn csv_rows(path: &Path) -> Vec<Canon> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let idx = csv_index(r.headers().unwrap());
    r.records()
        .map(|rec| {
            csv_record(
                &rec.unwrap_or_else(|e| panic!("{}: {e}", path.display())),
                &idx,
            )
        })
        .collect()
}

fn csv_held(path: &Path, counter: &mut LineCounter) -> Held {
    let (lines, ends) = counter.count(path);
    let Some((header, last)) = ends.filter(|_| lines > 1) else {
        return Held::default();
    };
    let idx = csv_index(&csv_parse(&header, path)[0]);
    Held {
        rows: lines - 1,
        last: Some(csv_record(&csv_parse(&last, path)[0], &idx)),
    }
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

fn jsonl_row(line: &str, path: &Path) -> Canon {
    let v: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{}: line {line:?}: {e}", path.display()));
    let fields: Vec<String> = COLUMNS
        .iter()
        .map(|c| match &v[c] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            serde_json::Value::Number(n) if n.is_i64() => n.to_string(),
            // serde_json's own float parsing may be one ulp off; read the number's text.
            serde_json::Value::Number(_) => raw_number(line, c),
            other => format!("unexpected {other}"),
        })
        .collect();
    let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
    canon_text(&refs, &KINDS)
}

fn jsonl_rows(path: &Path) -> Vec<Canon> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| jsonl_row(line, path))
        .collect()
}

fn jsonl_held(path: &Path, counter: &mut LineCounter) -> Held {
    let (rows, ends) = counter.count(path);
    Held {
        rows,
        last: ends.map(|(_, last)| jsonl_row(&last, path)),
    }
}

const SQL_COLUMNS: &str = "run, seq, t_utc, value, note";

fn sqlite_query(path: &Path, sql: &str) -> Vec<Canon> {
    if !path.exists() {
        return Vec::new();
    }
    let conn = rusqlite::Connection::open(path).unwrap();
    let Ok(mut stmt) = conn.prepare(sql) else {
        // No table yet.
        return Vec::new();
    };
    stmt.query_map([], |row| {
        (0..COLUMNS.len())
            .map(|i| {
                Ok(match row.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => String::new(),
                    rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                    rusqlite::types::ValueRef::Real(v) => format!("{v:?}"),
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    rusqlite::types::ValueRef::Blob(_) => "a blob".to_string(),
                })
            })
            .collect::<Result<Vec<String>, rusqlite::Error>>()
    })
    .unwrap()
    .map(|r| {
        let f = r.unwrap();
        let refs: Vec<&str> = f.iter().map(String::as_str).collect();
        canon_text(&refs, &KINDS)
    })
    .collect()
}

/// SQLite rows in insertion (rowid) order.
fn sqlite_rows(path: &Path) -> Vec<Canon> {
    sqlite_query(
        path,
        &format!("SELECT {SQL_COLUMNS} FROM flow ORDER BY rowid"),
    )
}

fn sqlite_held(path: &Path) -> Held {
    if !path.exists() {
        return Held::default();
    }
    let conn = rusqlite::Connection::open(path).unwrap();
    let rows: u64 = conn
        .query_row("SELECT count(*) FROM flow", [], |r| r.get::<_, i64>(0))
        .map_or(0, |n| n as u64);
    drop(conn);
    let last = sqlite_query(
        path,
        &format!("SELECT {SQL_COLUMNS} FROM flow ORDER BY rowid DESC LIMIT 1"),
    )
    .pop();
    Held { rows, last }
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

const PG_COLUMNS: &str = "run, seq, (extract(epoch FROM t_utc) * 1000000)::bigint, value, note";

/// The CSV records of `COPY (select) TO STDOUT`; none when the table does not exist yet.
fn postgres_copy(url: &str, select: &str) -> Vec<csv::StringRecord> {
    let text = match psql(url, &format!("COPY ({select}) TO STDOUT WITH (FORMAT csv)")) {
        Ok(t) => t,
        Err(e) if e.contains("does not exist") => return Vec::new(),
        Err(e) => panic!("postgres: {e}"),
    };
    csv_parse(&text, Path::new("postgres"))
}

fn postgres_canon(fields: &[&str]) -> Canon {
    let mut kinds = KINDS;
    kinds[T_UTC] = Kind::Int;
    canon_text(fields, &kinds)
}

/// PostgreSQL rows sorted by `(run, seq)` — unique, and the tape's order (a table has no
/// order of its own).
fn postgres_rows(url: &str) -> Vec<Canon> {
    postgres_copy(
        url,
        &format!("SELECT {PG_COLUMNS} FROM flow ORDER BY run, seq"),
    )
    .iter()
    .map(|r| postgres_canon(&r.iter().collect::<Vec<_>>()))
    .collect()
}

fn postgres_held(url: &str) -> Held {
    // One round trip: the count, then the last row (none when the table is empty).
    let rec = postgres_copy(
        url,
        &format!(
            "SELECT n.n, l.* FROM (SELECT count(*) AS n FROM flow) n LEFT JOIN (SELECT \
             {PG_COLUMNS} FROM flow ORDER BY run DESC, seq DESC LIMIT 1) l ON true"
        ),
    );
    let Some(rec) = rec.first() else {
        return Held::default();
    };
    let fields: Vec<&str> = rec.iter().collect();
    let rows: u64 = fields[0].parse().unwrap();
    Held {
        rows,
        last: (rows > 0).then(|| postgres_canon(&fields[1..])),
    }
}

fn parquet_reader(
    path: &Path,
) -> parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder<File> {
    let file = File::open(path).unwrap();
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap_or_else(|e| panic!("{} is visible but not readable: {e}", path.display()))
}

fn read_parquet(path: &Path, row_groups: Option<Vec<usize>>) -> Vec<Canon> {
    let mut b = parquet_reader(path);
    if let Some(g) = row_groups {
        b = b.with_row_groups(g);
    }
    let batches: Vec<RecordBatch> = b
        .build()
        .unwrap()
        .map(|b| b.unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect();
    canon_batches(&batches, &COLUMNS)
}

/// The finished parts of a Parquet directory, in part order; `at_end` refuses unfinished ones.
fn parts(dir: &Path, at_end: bool) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    for e in entries {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !(at_end && name.ends_with(".partial")),
            "an unfinished part {name} is left after the final delivery"
        );
        if let Some(n) = name
            .strip_prefix("part-")
            .and_then(|r| r.strip_suffix(".parquet"))
        {
            found.push((n.parse().unwrap(), dir.join(&name)));
        }
    }
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

fn parts_rows(dir: &Path) -> Vec<Canon> {
    parts(dir, true)
        .iter()
        .flat_map(|p| read_parquet(p, None))
        .collect()
}

fn parts_held(dir: &Path) -> Held {
    let parts = parts(dir, false);
    let mut rows = 0;
    for p in &parts {
        rows += parquet_reader(p).metadata().file_metadata().num_rows() as u64;
    }
    let last = parts.last().and_then(|p| read_parquet(p, None).pop());
    Held { rows, last }
}

fn parquet_file_held(path: &Path) -> Held {
    if !path.exists() {
        return Held::default();
    }
    let b = parquet_reader(path);
    let rows = b.metadata().file_metadata().num_rows() as u64;
    let groups = b.metadata().num_row_groups();
    let last = (groups > 0)
        .then(|| read_parquet(path, Some(vec![groups - 1])).pop())
        .flatten();
    Held { rows, last }
}

fn ipc_batches(path: &Path) -> Vec<RecordBatch> {
    let file = File::open(path).unwrap();
    arrow_ipc::reader::FileReader::try_new(file, None)
        .unwrap_or_else(|e| panic!("{} is visible but not readable: {e}", path.display()))
        .map(|b| b.unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

/// Every batch of the crash harness's NATS subject, in stream order; each message must say
/// where its rows sit on the tape, following on from the one before (exactly once, in order).
fn nats_batches(addr: &str) -> Vec<RecordBatch> {
    let client = nats_server::Client::connect(addr).unwrap();
    let mut next = 0;
    let mut out = Vec::new();
    for m in client.messages("CRASH", "crash.rows") {
        assert_eq!(
            m.number("Tapedeck-Seq"),
            next,
            "NATS message {} is out of order",
            m.stream_seq
        );
        next += m.number("Tapedeck-Rows");
        let batches: Vec<RecordBatch> =
            arrow_ipc::reader::StreamReader::try_new(&m.payload[..], None)
                .unwrap()
                .map(Result::unwrap)
                .collect();
        assert_eq!(
            batches.iter().map(|b| b.num_rows() as u64).sum::<u64>(),
            m.number("Tapedeck-Rows")
        );
        out.extend(batches);
    }
    out
}

fn ipc_rows(path: &Path) -> Vec<Canon> {
    canon_batches(&ipc_batches(path), &COLUMNS)
}

fn ipc_held(path: &Path) -> Held {
    if !path.exists() {
        return Held::default();
    }
    let batches = ipc_batches(path);
    let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
    let last = batches
        .iter()
        .rev()
        .find(|b| b.num_rows() > 0)
        .and_then(|b| canon_batches(&[b.slice(b.num_rows() - 1, 1)], &COLUMNS).pop());
    Held { rows, last }
}

/// One complete chunk of a `.dt-raw` file.
struct RawChunk {
    seq: Option<u64>,
    flags: Vec<String>,
    first: i64,
    mono: i64,
    utc: i64,
    valid: usize,
    /// Byte offset of the chunk, and of its payload.
    at: usize,
    payload: usize,
}

/// A `.dt-raw` file read by this harness's own parser (docs/dt-raw.md), up to its last
/// complete chunk (`end`: the byte after it).
struct RawFile {
    bytes: Vec<u8>,
    channels: usize,
    size: usize,
    period: i64,
    chunks: Vec<RawChunk>,
    end: usize,
}

fn raw_file(path: &Path) -> RawFile {
    let bytes = std::fs::read(path).unwrap_or_default();
    let mut file = RawFile {
        bytes: Vec::new(),
        channels: 0,
        size: 2,
        period: 0,
        chunks: Vec::new(),
        end: 0,
    };
    let u32_at = |p: usize| -> Option<usize> {
        bytes
            .get(p..p + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
    };
    let json_at = |p: usize, len: usize| -> serde_json::Value {
        serde_json::from_slice(&bytes[p..p + len])
            .unwrap_or_else(|e| panic!("{}: JSON at byte {p}: {e}", path.display()))
    };
    let Some(hlen) = u32_at(0).filter(|h| bytes.len() >= 4 + h) else {
        return file;
    };
    let header = json_at(4, hlen);
    file.channels = header["n_channels"].as_u64().unwrap() as usize;
    file.size = match header["dtype"].as_str().unwrap() {
        "int16" => 2,
        "int32" => 4,
        other => panic!("{}: dtype {other}", path.display()),
    };
    file.period = header["block_period_ns"].as_i64().unwrap();
    let mut pos = 4 + hlen;
    while let Some(clen) = u32_at(pos).filter(|c| bytes.len() >= pos + 4 + c) {
        let chunk = json_at(pos + 4, clen);
        let valid = chunk["valid_samples"].as_u64().unwrap() as usize;
        let payload = pos + 4 + clen;
        let next = payload + file.channels * valid * file.size;
        if bytes.len() < next {
            break;
        }
        let utc_text = chunk["t_utc"].as_str().unwrap();
        file.chunks.push(RawChunk {
            seq: chunk["seq"].as_u64(),
            flags: chunk["flags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_string())
                .collect(),
            first: chunk["first_sample_index"].as_i64().unwrap(),
            mono: chunk["t_mono_ns"].as_i64().unwrap(),
            utc: tapedeck::record::time::parse_timestamp(utc_text)
                .unwrap_or_else(|| panic!("{}: t_utc {utc_text:?}", path.display())),
            valid,
            at: pos,
            payload,
        });
        pos = next;
    }
    file.end = pos;
    file.bytes = bytes;
    file
}

impl RawFile {
    /// The chunk's samples as rows of `RAW_COLUMNS`.
    fn rows(&self, c: &RawChunk) -> Vec<Canon> {
        let overrun = if c.flags.iter().any(|f| f == "overrun_marker") {
            "overrun"
        } else {
            ""
        };
        let code = |ch: usize, k: usize| -> String {
            let at = c.payload + (ch * c.valid + k) * self.size;
            let b = &self.bytes[at..at + self.size];
            if self.size == 2 {
                i16::from_le_bytes(b.try_into().unwrap()).to_string()
            } else {
                i32::from_le_bytes(b.try_into().unwrap()).to_string()
            }
        };
        (0..c.valid)
            .map(|k| {
                let offset = k as i64 * self.period;
                let mut row = vec![
                    (c.first + k as i64).to_string(),
                    (c.mono + offset).to_string(),
                    (c.utc + offset.div_euclid(1000)).to_string(),
                ];
                row.extend((0..self.channels).map(|ch| code(ch, k)));
                row.push(overrun.to_string());
                row
            })
            .collect()
    }
}

/// Every sample of a `.dt-raw` file after the final delivery, in order. Its chunk numbers must
/// run 0, 1, 2, … and its only `final` marker must be its last chunk.
fn raw_rows(path: &Path) -> Vec<Canon> {
    let file = raw_file(path);
    assert_eq!(
        file.end,
        file.bytes.len(),
        "{}: bytes after the last complete chunk",
        path.display()
    );
    let mut finals = Vec::new();
    let mut out = Vec::new();
    for (i, c) in file.chunks.iter().enumerate() {
        assert_eq!(
            c.seq,
            Some(i as u64),
            "{}: chunk {i} at byte {} has another number",
            path.display(),
            c.at
        );
        if c.flags.iter().any(|f| f == "final") {
            finals.push(i);
        }
        out.extend(file.rows(c));
    }
    assert_eq!(
        finals,
        vec![file.chunks.len().saturating_sub(1)],
        "{}: the final marker must be the last chunk, and only there ({} chunks)",
        path.display(),
        file.chunks.len()
    );
    out
}

fn raw_held(path: &Path) -> Held {
    let file = raw_file(path);
    Held {
        rows: file.chunks.iter().map(|c| c.valid as u64).sum(),
        last: file
            .chunks
            .iter()
            .rev()
            .find(|c| c.valid > 0)
            .and_then(|c| file.rows(c).pop()),
    }
}

// ---------------------------------------------------------------------------------------------
// The sinks

#[derive(Clone, Copy, PartialEq, Debug)]
enum Dest {
    Csv,
    Jsonl,
    Sqlite,
    Parts,
    ParquetFile,
    Ipc,
    Raw,
    Postgres,
    Nats,
}

struct Sink {
    dest: Dest,
    uri: String,
    path: PathBuf,
    lines: LineCounter,
}

impl Sink {
    fn new(dest: Dest, d: &Path, pg_url: Option<&str>, nats: Option<&str>) -> Sink {
        let p = |name: &str| d.join(name);
        let (uri, path) = match dest {
            Dest::Csv => (format!("csv:{}", p("out.csv").display()), p("out.csv")),
            Dest::Jsonl => (
                format!("jsonl:{}", p("out.jsonl").display()),
                p("out.jsonl"),
            ),
            Dest::Sqlite => (
                format!(
                    "sqlite:{}?table=flow&create_table=true",
                    p("out.db").display()
                ),
                p("out.db"),
            ),
            Dest::Parts => (
                format!("parquet:{}/?roll_rows=4000", p("parts").display()),
                p("parts"),
            ),
            Dest::ParquetFile => (
                format!(
                    "parquet:{}?row_group_rows=8192",
                    p("whole.parquet").display()
                ),
                p("whole.parquet"),
            ),
            Dest::Ipc => (
                format!("ipc:{}?batch_rows=8192", p("whole.arrow").display()),
                p("whole.arrow"),
            ),
            Dest::Raw => (
                format!("raw:{}", p("out.dt-raw").display()),
                p("out.dt-raw"),
            ),
            Dest::Postgres => (
                format!(
                    "{}?table=flow&create_table=true&connect_timeout=2s&retry_for=10m",
                    pg_url.unwrap()
                ),
                PathBuf::new(),
            ),
            Dest::Nats => (
                format!(
                    "nats://{}/crash.rows?stream=CRASH&create_stream=true&subjects=crash.>&connect_timeout=2s&retry_for=10m&max_in_flight=8",
                    nats.unwrap()
                ),
                PathBuf::new(),
            ),
        };
        Sink {
            dest,
            uri,
            path,
            lines: LineCounter::default(),
        }
    }

    fn name(&self) -> String {
        format!("{:?}", self.dest).to_lowercase()
    }

    fn pg_url(&self) -> &str {
        &self.uri[..self.uri.find('?').unwrap()]
    }

    fn nats_addr(&self) -> &str {
        let rest = &self.uri["nats://".len()..];
        &rest[..rest.find('/').unwrap()]
    }

    /// In a `record` run three times in four; whole files (rebuilt from the tape's first row
    /// by every delivery with new rows) once in four; `raw:` (alone on its tape) every other
    /// time, so that a `deliver` often finds it behind.
    fn in_record(&self, rng: &mut Rng) -> bool {
        match self.dest {
            Dest::ParquetFile | Dest::Ipc => rng.below(4) == 0,
            Dest::Raw => rng.below(2) == 0,
            _ => rng.below(4) < 3,
        }
    }

    fn held(&mut self) -> Held {
        match self.dest {
            Dest::Csv => csv_held(&self.path, &mut self.lines),
            Dest::Jsonl => jsonl_held(&self.path, &mut self.lines),
            Dest::Sqlite => sqlite_held(&self.path),
            Dest::Parts => parts_held(&self.path),
            Dest::ParquetFile => parquet_file_held(&self.path),
            Dest::Ipc => ipc_held(&self.path),
            Dest::Raw => raw_held(&self.path),
            Dest::Postgres => postgres_held(self.pg_url()),
            Dest::Nats => {
                let batches = nats_batches(self.nats_addr());
                let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
                let last = batches
                    .iter()
                    .rev()
                    .find(|b| b.num_rows() > 0)
                    .and_then(|b| canon_batches(&[b.slice(b.num_rows() - 1, 1)], &COLUMNS).pop());
                Held { rows, last }
            }
        }
    }

    /// Everything the sink holds, in its order.
    fn rows(&self) -> Vec<Canon> {
        match self.dest {
            Dest::Csv => csv_rows(&self.path),
            Dest::Jsonl => jsonl_rows(&self.path),
            Dest::Sqlite => sqlite_rows(&self.path),
            Dest::Parts => parts_rows(&self.path),
            Dest::ParquetFile => read_parquet(&self.path, None),
            Dest::Ipc => ipc_rows(&self.path),
            Dest::Raw => raw_rows(&self.path),
            Dest::Postgres => postgres_rows(self.pg_url()),
            Dest::Nats => canon_batches(&nats_batches(self.nats_addr()), &COLUMNS),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Comparing

/// Where each row stands (rows are unique).
fn index_of(rows: &[Canon]) -> HashMap<&Canon, usize> {
    rows.iter().enumerate().map(|(i, r)| (r, i)).collect()
}

/// The sink must hold exactly `want`, in order.
fn check(sink: &str, got: &[Canon], want: &[Canon]) {
    if got == want {
        return;
    }
    let i = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let tape = index_of(want);
    let held = index_of(got);
    let around = |rows: &[Canon], i: usize| -> Vec<String> {
        (i.saturating_sub(1)..(i + 2).min(rows.len()))
            .map(|j| format!("#{j} {:?}", rows[j]))
            .collect()
    };
    let duplicates = got.len() - held.len();
    let missing = want.iter().filter(|r| !held.contains_key(r)).count();
    let foreign = got.iter().filter(|r| !tape.contains_key(r)).count();
    panic!(
        "{sink}: {} rows, the tape has {}; {missing} tape rows missing, {duplicates} duplicated, \
         {foreign} not on the tape; first difference at row {i}: the sink has {:?} (tape row \
         {:?}), the tape has {:?} (sink row {:?})",
        got.len(),
        want.len(),
        around(got, i),
        got.get(i).and_then(|r| tape.get(r)),
        around(want, i),
        want.get(i).and_then(|r| held.get(r)),
    );
}

// ---------------------------------------------------------------------------------------------
// Running and killing

fn log_text(log: &Path) -> String {
    format!(
        "its stderr ({}):\n{}",
        log.display(),
        std::fs::read_to_string(log).unwrap_or_default()
    )
}

fn exit_text(status: ExitStatus, log: &Path) -> String {
    format!("{status}; {}", log_text(log))
}

/// Deliveries that failed during a run that was then killed (a killed run prints no summary):
/// the progress line marks a failed sink `(failed)`, and its status file under
/// `TAPE/deliveries/` says `"state": "failed"` with the error.
fn failed_deliveries(tape: &Path, log: &Path, since: SystemTime) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .rev()
        .find(|l| l.contains("(failed)"))
        .map(|l| format!("progress: {l}"))
        .into_iter()
        .collect();
    for e in std::fs::read_dir(tape.join("deliveries"))
        .into_iter()
        .flatten()
    {
        let e = e.unwrap();
        let fresh = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= since);
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let Ok(status) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if fresh && status["state"] == "failed" {
            out.push(format!(
                "status: {} failed: {}",
                status["sink"], status["error"]
            ));
        }
    }
    out
}

/// A child killed (and reaped) however the test ends.
struct Run(Child);

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One CSV line of the rows loop: `run, seq, t_utc, value, note` (a null note every fifth row).
fn row_line(run: u64, seq: u64, t_utc: i64) -> String {
    let time = tapedeck::record::time::iso_micros(t_utc);
    let value = run as f64 + seq as f64 / 7.0;
    if seq % 5 == 4 {
        format!("{run},{seq},{time},{value:?},\n")
    } else {
        format!("{run},{seq},{time},{value:?},\"r{run} µ \"\"q\"\", {seq}\"\n")
    }
}

/// Feeds a `stdin:csv` recorder `rate` rows per second until it goes away.
fn feed_rows(stdin: ChildStdin, run: u64, rate: u64) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let t0 = now_micros();
        let period = (1_000_000 / rate) as i64;
        let began = Instant::now();
        let mut out = std::io::BufWriter::new(stdin);
        if out.write_all(b"run,seq,t_utc,value,note\n").is_err() {
            return;
        }
        let mut seq = 0u64;
        loop {
            let due = began.elapsed().as_micros() as u64 * rate / 1_000_000 + 1;
            while seq < due {
                if out
                    .write_all(row_line(run, seq, t0 + seq as i64 * period).as_bytes())
                    .is_err()
                {
                    return;
                }
                seq += 1;
            }
            if out.flush().is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

/// Where a `record` run's rows come from.
enum Feed {
    /// `stdin:csv`, fed by [`feed_rows`].
    Stdin(u64),
    /// A simulator URI.
    Sim(String),
}

#[derive(Default)]
struct Stats {
    records: usize,
    delivers: usize,
    delivers_done: usize,
    first_write_kills: usize,
    catch_ups: usize,
    outages: usize,
    rolled: usize,
    recoveries: usize,
    snapshots: usize,
    check_secs: f64,
}

/// One tape, its sinks, and the runs that are killed on it.
struct Harness<'a> {
    label: &'static str,
    _dir: tempfile::TempDir,
    tape: PathBuf,
    logs: PathBuf,
    sinks: Vec<Sink>,
    /// The tape's columns, as the sinks keep them.
    columns: &'static [&'static str],
    cluster: Option<&'a pg_cluster::Cluster>,
    /// The NATS server the `nats://` sink publishes to (stopped and started like the cluster).
    nats: Option<&'a nats_server::Server>,
    rng: Rng,
    /// A run is a `deliver` one time in this many.
    deliver_one_in: u64,
    stats: Stats,
    /// Deliveries that failed in killed runs.
    failures: Vec<String>,
    /// The tape's end after the previous kill, and its last row then.
    prev_end: u64,
    prev_last: Option<Canon>,
}

impl<'a> Harness<'a> {
    fn new(
        label: &'static str,
        dests: &[Dest],
        columns: &'static [&'static str],
        cluster: Option<&'a pg_cluster::Cluster>,
        nats: Option<&'a nats_server::Server>,
        seed: u64,
    ) -> Harness<'a> {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        let pg_url = cluster.map(|c| c.url());
        let nats_addr = nats.map(|n| n.addr());
        let sinks = dests
            .iter()
            .filter(|d| **d != Dest::Postgres || pg_url.is_some())
            .filter(|d| **d != Dest::Nats || nats_addr.is_some())
            .map(|d| Sink::new(*d, dir.path(), pg_url.as_deref(), nats_addr.as_deref()))
            .collect();
        Harness {
            label,
            tape: dir.path().join("tape"),
            logs,
            _dir: dir,
            sinks,
            columns,
            cluster,
            nats,
            rng: Rng(seed),
            deliver_one_in: 4,
            stats: Stats::default(),
            failures: Vec::new(),
            prev_end: 0,
            prev_last: None,
        }
    }

    fn tape_arg(&self) -> String {
        self.tape.display().to_string()
    }

    fn spawn(&self, args: &[String], log: &Path, stdin: bool) -> Run {
        Run(Command::new(env!("CARGO_BIN_EXE_tapedeck"))
            .args(args)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::null())
            .stderr(File::create(log).unwrap())
            .spawn()
            .unwrap())
    }

    fn deliver_args(&self, flags: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = ["deliver", &self.tape_arg(), "--flush-interval", "200ms"]
            .iter()
            .chain(flags)
            .map(|s| s.to_string())
            .collect();
        for s in &self.sinks {
            args.extend(["--sink".to_string(), s.uri.clone()]);
        }
        args
    }

    /// A `deliver` of every sink that runs to its end (it writes the `.dt-raw` `final` marker
    /// and renames whole files into place), then the same checks as after a kill.
    fn catch_up(&mut self, k: usize) {
        self.stats.catch_ups += 1;
        let args = self.deliver_args(&["--progress", "never", "-q"]);
        let log = self.logs.join(format!("catch-up-{k}.err"));
        let mut run = self.spawn(&args, &log, false);
        let status = run.0.wait().unwrap();
        assert!(
            status.success(),
            "{}: catch-up before kill {k} failed: {}",
            self.label,
            exit_text(status, &log)
        );
        self.check_after(k, true, &args);
    }

    /// The database and the NATS server go away (a PostgreSQL shutdown in `mode`; nats-server
    /// killed with SIGKILL).
    fn stop_servers(&self, mode: &str) {
        if let Some(c) = self.cluster {
            c.stop(mode);
        }
        if let Some(n) = self.nats {
            n.stop();
        }
    }

    /// Starts a `record` or `deliver` run, kills it at a random moment, and checks what it left.
    fn kill_once(&mut self, k: usize, feed: &Feed) {
        let deliver = self.rng.below(self.deliver_one_in) == 0 && self.tape.join("TAPEID").exists();
        let outage = (self.cluster.is_some() || self.nats.is_some()) && self.rng.below(6) == 0;
        let before = outage && self.rng.below(2) == 0;
        let mode = if self.rng.below(2) == 0 {
            "fast"
        } else {
            "immediate"
        };
        if before {
            self.stop_servers(mode);
        }
        let segs_before = segments(&self.tape);
        let args = if deliver {
            self.stats.delivers += 1;
            self.deliver_args(&["--progress", "always", "-q"])
        } else {
            self.stats.records += 1;
            let source = match feed {
                Feed::Stdin(_) => "stdin:csv?infer_rows=10".to_string(),
                Feed::Sim(uri) => uri.clone(),
            };
            let fsync = self
                .rng
                .pick(&["always", "always", "interval:10ms", "never"]);
            let compression = self.rng.pick(&["zstd", "lz4", "none"]);
            let segment = self
                .rng
                .pick(&["4096", "65536", "65536", "1048576", "268435456"]);
            let mut args: Vec<String> = [
                "record",
                "--source",
                &source,
                "--tape",
                &self.tape_arg(),
                "--fsync",
                fsync,
                "--compression",
                compression,
                "--segment-bytes",
                segment,
                "--flush-interval",
                "200ms",
                "--progress",
                "always",
                "-q",
            ]
            .map(String::from)
            .to_vec();
            for i in 0..self.sinks.len() {
                if self.sinks[i].in_record(&mut self.rng) {
                    args.extend(["--sink".to_string(), self.sinks[i].uri.clone()]);
                }
            }
            args
        };
        let log = self.logs.join(format!("run-{k}.err"));
        let started = SystemTime::now();
        let stdin = !deliver && matches!(feed, Feed::Stdin(_));
        let mut run = self.spawn(&args, &log, stdin);
        let feeder = match feed {
            Feed::Stdin(rate) if stdin => {
                Some(feed_rows(run.0.stdin.take().unwrap(), k as u64, *rate))
            }
            _ => None,
        };
        // One kill in six comes as soon as a text or `.dt-raw` file of the run changes (its
        // cut-back or first write on resume, before the first commit covers it); one in three
        // early, while the run recovers the tape and resumes its sinks.
        let files: Vec<&Path> = self
            .sinks
            .iter()
            .filter(|s| matches!(s.dest, Dest::Csv | Dest::Jsonl | Dest::Raw))
            .filter(|s| args.contains(&s.uri))
            .map(|s| s.path.as_path())
            .collect();
        if !files.is_empty() && self.rng.below(6) == 0 {
            let file = files[self.rng.below(files.len() as u64) as usize];
            let len = || std::fs::metadata(file).map_or(0, |m| m.len());
            let (was, since) = (len(), Instant::now());
            while len() == was
                && since.elapsed() < Duration::from_secs(2)
                && run.0.try_wait().unwrap().is_none()
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            self.stats.first_write_kills += 1;
        } else {
            let wait = if self.rng.below(3) == 0 {
                5 + self.rng.below(120)
            } else if deliver {
                10 + self.rng.below(500)
            } else {
                30 + self.rng.below(700)
            };
            std::thread::sleep(Duration::from_millis(wait));
        }
        if outage && !before {
            self.stop_servers(mode);
            std::thread::sleep(Duration::from_millis(self.rng.below(300)));
        }
        match run.0.try_wait().unwrap() {
            Some(status) if deliver && status.success() => self.stats.delivers_done += 1,
            Some(status) => panic!(
                "{}: kill {k}: `{}` exited by itself before it was killed: {}",
                self.label,
                args.join(" "),
                exit_text(status, &log)
            ),
            None => drop(run),
        }
        if let Some(f) = feeder {
            f.join().unwrap();
        }
        if outage {
            if let Some(c) = self.cluster {
                c.start_again();
            }
            if let Some(n) = self.nats {
                n.start_again();
            }
            self.stats.outages += 1;
        }
        let failed = failed_deliveries(&self.tape, &log, started);
        if !failed.is_empty() {
            // Not fatal here (the data checks go on: the sink is only behind), but the test fails
            // at its end, and says so now.
            let msg = format!(
                "{}: kill {k}: a delivery failed in `{}`:\n{}\n{}",
                self.label,
                args.join(" "),
                failed.join("\n"),
                log_text(&log)
            );
            eprintln!("{msg}");
            self.failures.push(msg);
        }
        if !deliver && segments(&self.tape) >= segs_before + 2 {
            self.stats.rolled += 1;
        }
        self.check_after(k, deliver, &args);
    }

    /// Nothing appends to the tape until the next run: what the sinks hold now must be on it.
    fn check_after(&mut self, k: usize, deliver: bool, args: &[String]) {
        let checking = Instant::now();
        let label = self.label;
        let run = || format!("`{}`", args.join(" "));
        let recover = self.rng.below(2) == 0;
        self.stats.recoveries += usize::from(recover);
        let end = tape_end(&self.tape, recover);
        assert!(
            end >= self.prev_end,
            "{label}: kill {k}: the tape shrank from {} rows to {end} (recovered here: \
             {recover}) after {}",
            self.prev_end,
            run()
        );
        let (tape, columns) = (&self.tape, self.columns);
        let mut rows_at: HashMap<u64, Option<Canon>> = HashMap::new();
        let mut row_at = |seq: u64| -> Option<Canon> {
            rows_at
                .entry(seq)
                .or_insert_with(|| tape_row_at(tape, seq, columns))
                .clone()
        };
        if self.prev_end > 0 {
            assert_eq!(
                row_at(self.prev_end - 1),
                self.prev_last,
                "{label}: kill {k}: the tape's row {} changed after {}",
                self.prev_end - 1,
                run()
            );
        }
        self.prev_end = end;
        self.prev_last = end.checked_sub(1).and_then(&mut row_at);
        for s in &mut self.sinks {
            let held = s.held();
            assert!(
                held.rows <= end,
                "{label}: kill {k}: {} holds {} rows, the tape after recovery only {end}: it \
                 held rows that were never acknowledged, or the tape lost acknowledged rows \
                 (recovered here: {recover}; a deliver run: {deliver}); {}",
                s.name(),
                held.rows,
                run()
            );
            let want = held.rows.checked_sub(1).and_then(&mut row_at);
            assert_eq!(
                held.last,
                want,
                "{label}: kill {k}: the last of the {} rows {} holds is not the tape's row {}; {}",
                held.rows,
                s.name(),
                held.rows.saturating_sub(1),
                run()
            );
            self.stats.snapshots += 1;
        }
        self.stats.check_secs += checking.elapsed().as_secs_f64();
    }

    /// The final `deliver` and `verify`; returns the tape's rows.
    fn finish(&mut self) -> Vec<Canon> {
        let args = self.deliver_args(&["--progress", "never", "-q"]);
        let log = self.logs.join("final-deliver.err");
        let status = self.spawn(&args, &log, false).0.wait().unwrap();
        assert!(
            status.success(),
            "{}: the final deliver failed: {}\n{}",
            self.label,
            exit_text(status, &log),
            self.failures.join("\n")
        );
        let verify = Command::new(env!("CARGO_BIN_EXE_tapedeck"))
            .args(["verify", &self.tape_arg()])
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "{}: verify: {}",
            self.label,
            String::from_utf8_lossy(&verify.stdout)
        );
        tape_rows(&self.tape, self.columns)
    }

    /// Every sink against the tape.
    fn compare(&self, want: &[Canon]) {
        for s in &self.sinks {
            check(&s.name(), &s.rows(), want);
        }
    }

    /// The summary line; fails when a delivery failed in a killed run.
    fn report(&self, kills: usize, began: Instant, want: &[Canon], runs: usize) {
        let s = &self.stats;
        eprintln!(
            "{}: {kills} kills ({} of record, {} of deliver of which {} finished first; {} at a \
             file's first change; {} catch-up delivers; {} with PostgreSQL and nats-server stopped or crashed; {} runs rolled segments; \
             {} recovered here; {} sink snapshots checked against the recovered tape, {:.1}s); \
             {} tape rows from {runs} runs in {} segments found exactly once and in order in \
             each of {} sinks; {:.1}s in all",
            self.label,
            s.records,
            s.delivers,
            s.delivers_done,
            s.first_write_kills,
            s.catch_ups,
            s.outages,
            s.rolled,
            s.recoveries,
            s.snapshots,
            s.check_secs,
            want.len(),
            segments(&self.tape),
            self.sinks.len(),
            began.elapsed().as_secs_f64()
        );
        assert!(
            self.failures.is_empty(),
            "{}: {} runs had a delivery fail (every sink still matched the tape at the end):\n{}",
            self.label,
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

fn settings(loop_name: &str) -> (usize, u64, u64) {
    let kills = env_num("TAPEDECK_CRASH_KILLS").unwrap_or(50) as usize;
    let seed = env_num("TAPEDECK_CRASH_SEED").unwrap_or_else(|| now_micros() as u64 | 1);
    let rate = env_num("TAPEDECK_CRASH_RATE").unwrap_or(10_000);
    assert!(
        rate > 0 && 1_000_000 % rate == 0,
        "TAPEDECK_CRASH_RATE must divide 1,000,000 (whole µs between rows)"
    );
    eprintln!("{loop_name}: {rate} rows/s, TAPEDECK_CRASH_SEED={seed}");
    (kills, seed, rate)
}

#[test]
fn every_sink_holds_exactly_the_tape_after_random_kills_and_database_outages() {
    let (kills, seed, rate) = settings("crash harness");
    let cluster = pg_cluster::Cluster::start("crash harness");
    if cluster.is_none() {
        eprintln!("crash harness: running without the PostgreSQL sink (no throwaway cluster)");
    }
    let nats = nats_server::Server::start("crash harness");
    let mut h = Harness::new(
        "crash harness",
        &[
            Dest::Csv,
            Dest::Jsonl,
            Dest::Sqlite,
            Dest::Parts,
            Dest::ParquetFile,
            Dest::Ipc,
            Dest::Postgres,
            Dest::Nats,
        ],
        &COLUMNS,
        cluster.as_ref(),
        nats.as_ref(),
        seed,
    );
    let began = Instant::now();
    for k in 0..kills {
        h.kill_once(k, &Feed::Stdin(rate));
    }
    let want = h.finish();
    assert!(
        want.len() as u64 > h.stats.records as u64 * rate / 100,
        "the tape holds only {} rows after {} runs",
        want.len(),
        h.stats.records
    );
    let runs = check_rows_tape(&want);
    h.compare(&want);
    h.report(kills, began, &want, runs);
}

#[test]
fn raw_file_holds_exactly_the_tape_after_random_kills() {
    let (kills, seed, rate) = settings("raw crash harness");
    let kills = (kills / 2).max(4);
    let mut h = Harness::new(
        "raw crash harness",
        &[Dest::Raw],
        &RAW_COLUMNS,
        None,
        None,
        seed ^ 0x9e37_79b9_7f4a_7c15,
    );
    h.deliver_one_in = 3;
    let source = format!(
        "sim:daq?channels=2&rate={rate}&block={}&pace=real&raw=true",
        (rate / 100).max(1)
    );
    let began = Instant::now();
    for k in 0..kills {
        if k > 0 && h.rng.below(4) == 0 {
            h.catch_up(k);
        }
        h.kill_once(k, &Feed::Sim(source.clone()));
    }
    let want = h.finish();
    let runs = check_raw_tape(&want);
    h.compare(&want);
    h.report(kills, began, &want, runs);
}
