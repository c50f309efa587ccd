//! The `tapedeck` binary as a user runs it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn tapedeck() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tapedeck"))
}

fn run(args: &[&str]) -> Output {
    tapedeck().args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn summary(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn record_writes_every_sink_and_the_summary_json() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let out = run(&[
        "record",
        "--source",
        "sim:alicat?n=3000",
        "--sink",
        &format!("csv:{d}/a.csv"),
        "--sink",
        &format!("jsonl:{d}/a.jsonl"),
        "--sink",
        &format!("ipc:{d}/a.arrow"),
        "--batch-size",
        "100",
        "--summary-json",
        &format!("{d}/s.json"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = summary(&dir.path().join("s.json"));
    assert_eq!(s["rows"], 3000);
    assert!(s["seconds"].as_f64().unwrap() > 0.0);
    assert!(s["rows_per_sec"].as_f64().unwrap() > 0.0);
    let sinks = s["sinks"].as_array().unwrap();
    assert_eq!(sinks.len(), 3);
    for (k, file) in sinks.iter().zip(["a.csv", "a.jsonl", "a.arrow"]) {
        assert_eq!(k["rows"], 3000);
        assert!(k["uri"].as_str().unwrap().ends_with(file));
        assert_eq!(
            k["bytes"].as_u64().unwrap(),
            std::fs::metadata(dir.path().join(file)).unwrap().len()
        );
    }
    let mut r = csv::Reader::from_path(dir.path().join("a.csv")).unwrap();
    assert_eq!(r.records().count(), 3000);
    let e = stderr(&out);
    assert!(e.contains("recorded 3000 rows"), "{e}");
}

#[test]
fn bad_usage_exits_2_with_a_helpful_message() {
    let dir = tempfile::tempdir().unwrap();
    let existing = dir.path().join("keep.csv");
    std::fs::write(&existing, "precious").unwrap();
    let existing_uri = format!("csv:{}", existing.display());
    for (args, needle) in [
        (
            vec!["record", "--source", "sim:alicat?n=1", "--sink", "xls:out"],
            "known schemes: csv, jsonl, ipc",
        ),
        (
            vec![
                "record",
                "--source",
                "sim:alicat?n=1",
                "--sink",
                "csv:x.csv?colour=red",
            ],
            "valid parameters",
        ),
        (
            vec!["record", "--source", "kafka:x", "--sink", "null:"],
            "known schemes: sim, stdin, file, nats, mqtt",
        ),
        (
            vec!["record", "--source", "mqtt:x", "--sink", "null:"],
            "write it as mqtt://host:port/TOPIC/FILTER",
        ),
        (
            vec![
                "record",
                "--source",
                "sim:alicat?n=1",
                "--sink",
                existing_uri.as_str(),
            ],
            "overwrite=true",
        ),
        (
            vec![
                "record",
                "--source",
                "sim:alicat",
                "--sink",
                "null:",
                "--duration",
                "soon",
            ],
            "not a positive duration",
        ),
        (vec!["record", "--source", "sim:alicat"], "--sink"),
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "precious");
}

#[test]
fn a_bad_later_sink_or_option_creates_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.csv");
    let first_uri = format!("csv:{}", first.display());
    let out = run(&[
        "record",
        "--source",
        "sim:alicat?n=5",
        "--sink",
        &first_uri,
        "--sink",
        "xls:second",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&[
        "record",
        "--source",
        "sim:alicat?n=5",
        "--sink",
        &first_uri,
        "--batch-size",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("batch_size"), "{}", stderr(&out));
    assert!(
        !first.exists(),
        "a failed start must not leave {first:?} behind"
    );
    // And the same command, corrected, runs.
    let out = run(&["record", "--source", "sim:alicat?n=5", "--sink", &first_uri]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_failing_source_exits_1_after_flushing_what_it_sent() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("in.csv");
    let mut child = tapedeck()
        .args([
            "record",
            "--source",
            "stdin:csv",
            "--sink",
            &format!("csv:{}", csv.display()),
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a,b\n1,2\n3,4\n5\n6,7\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("stdin line 4"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), "a,b\n1,2\n3,4\n");
}

#[test]
fn skipped_lines_are_counted_in_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = tapedeck()
        .args([
            "record",
            "--source",
            "stdin:jsonl?on_error=skip",
            "--sink",
            "null:",
            "--summary-json",
            "-",
            "--quiet",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"a\":1}\nnot json\n{\"a\":2}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (s["rows"].as_u64(), s["skipped"].as_u64()),
        (Some(2), Some(1))
    );
    assert!(
        stderr(&out).contains("line 2"),
        "the skip is reported: {}",
        stderr(&out)
    );
    drop(dir);
}

#[test]
fn ctrl_c_stops_cleanly_flushes_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("live.csv");
    let json = dir.path().join("s.json");
    let child = tapedeck()
        .args([
            "record",
            "--source",
            "sim:alicat?rate=2000",
            "--sink",
            &format!("csv:{}", csv.display()),
            "--flush-interval",
            "10s",
            "--batch-size",
            "100000",
            "--summary-json",
            &json.display().to_string(),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let s = summary(&json);
    assert_eq!(s["ended_by"], "stopped");
    let rows = s["rows"].as_u64().unwrap();
    assert!(rows > 100, "{rows} rows in 0.7 s at 2000/s");
    // Nothing was flushed by size or timer before the stop: every row came from the final flush.
    let mut r = csv::Reader::from_path(&csv).unwrap();
    assert_eq!(r.records().count() as u64, rows);
    assert!(stderr(&out).contains(&format!("recorded {rows} rows")));
}

#[test]
fn record_help_explains_every_option_with_an_example() {
    let out = run(&["record", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--source",
        "--sink",
        "--batch-size",
        "--flush-interval",
        "--limit",
        "--duration",
        "--summary-json",
        "--progress",
    ] {
        let line = help
            .lines()
            .position(|l| l.trim_start().starts_with(opt))
            .unwrap_or_else(|| panic!("{opt} missing"));
        let text: String = help.lines().skip(line).take(4).collect();
        assert!(text.contains("e.g."), "{opt} has no example: {text}");
    }
    for needle in [
        "Exit codes",
        "130",
        "sim:daq",
        "accept_blocks",
        "overwrite=true",
    ] {
        assert!(help.contains(needle), "help lacks {needle}");
    }
}

#[test]
fn progress_always_prints_a_progress_line() {
    let out = run(&[
        "record",
        "--source",
        "sim:alicat?rate=5000",
        "--sink",
        "null:",
        "--duration",
        "700ms",
        "--progress",
        "always",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains("rows/s") && e.contains(" rows "), "{e}");
}

#[test]
fn daq_blocks_record_into_arrow_ipc_and_csv_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let ipc = dir.path().join("run.arrow");
    let out = run(&[
        "record",
        "--source",
        "sim:daq?blocks=4&pace=max&raw=true",
        "--sink",
        &format!("ipc:{}", ipc.display()),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reader =
        arrow_ipc::reader::FileReader::try_new(std::fs::File::open(&ipc).unwrap(), None).unwrap();
    let schema = reader.schema();
    assert!(schema.field_with_name("ai7").is_ok() && schema.field_with_name("ai7_raw").is_ok());
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 4000);

    let out = run(&[
        "record",
        "--source",
        "sim:daq?blocks=1&pace=max",
        "--sink",
        &format!("csv:{}/d.csv", dir.path().display()),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("accept_blocks=true"),
        "{}",
        stderr(&out)
    );
}

/// pyarrow is the reader most users have; `TAPEDECK_TEST_PYTHON` names an interpreter with it.
fn python_with_pyarrow() -> Option<String> {
    let python = std::env::var("TAPEDECK_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import pyarrow"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var_os("TAPEDECK_TEST_PYTHON").is_some()
    {
        panic!("`{python}` cannot import pyarrow; `bash scripts/test` prepares a Python that can");
    }
    eprintln!(
        "SKIPPED: `{python}` cannot import pyarrow — run the suite with `bash scripts/test`, which prepares it"
    );
    None
}

#[test]
fn pyarrow_reads_the_arrow_ipc_file() {
    let Some(python) = python_with_pyarrow() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ipc = dir.path().join("a.arrow");
    let out = run(&[
        "record",
        "--source",
        "sim:alicat?n=2000",
        "--sink",
        &format!("ipc:{}", ipc.display()),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let script = r#"
import sys, pyarrow.ipc as ipc
t = ipc.open_file(sys.argv[1]).read_all()
flow = t.column("Mass_Flow").to_pylist()
req = t.column("requested_at")
print(t.num_rows, round(sum(flow), 6), str(req.type), req[1].as_py().isoformat(), t.column("device")[0].as_py())
"#;
    let out = Command::new(python)
        .args(["-c", script, &ipc.display().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let expected_sum: f64 = (0..2000).map(|i| 10.0 + (i % 1000) as f64 * 0.01).sum();
    let printed = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = printed.split_whitespace().collect();
    assert_eq!(fields[0], "2000");
    assert!(
        (fields[1].parse::<f64>().unwrap() - expected_sum).abs() < 1e-6,
        "{printed}"
    );
    assert_eq!(fields[2], "timestamp[us,");
    assert_eq!(fields[4], "2026-01-01T00:00:00.000100+00:00", "{printed}");
    assert_eq!(fields[5], "fuel");
}

/// Runs `script` (with `path` as argv[1]) in the pyarrow-capable Python and returns its stdout.
fn python_reads(python: &str, script: &str, path: &Path) -> String {
    let out = Command::new(python)
        .args(["-c", script, &path.display().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[cfg(feature = "parquet")]
#[test]
fn pyarrow_and_duckdb_read_the_parquet_file() {
    let Some(python) = python_with_pyarrow() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.parquet");
    let out = run(&[
        "record",
        "--source",
        "sim:alicat?n=3000",
        "--sink",
        &format!("parquet:{}", path.display()),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let script = r#"
import sys, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
print(t.num_rows, str(t.schema.field("requested_at").type), t.column("requested_at")[2].as_py().isoformat(), round(sum(t.column("Mass_Flow").to_pylist()), 6))
"#;
    let expected_sum: f64 = (0..3000).map(|i| 10.0 + (i % 1000) as f64 * 0.01).sum();
    let printed = python_reads(&python, script, &path);
    let fields: Vec<&str> = printed.split_whitespace().collect();
    assert_eq!(fields[0], "3000", "{printed}");
    assert_eq!(fields[1..3].join(" "), "timestamp[us, tz=UTC]", "{printed}");
    assert_eq!(fields[3], "2026-01-01T00:00:00.000200+00:00", "{printed}");
    assert!(
        (fields[4].parse::<f64>().unwrap() - expected_sum).abs() < 1e-6,
        "{printed}"
    );

    let has_duckdb = Command::new(&python)
        .args(["-c", "import duckdb"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_duckdb {
        if std::env::var_os("TAPEDECK_TEST_PYTHON").is_some() {
            panic!(
                "`{python}` cannot import duckdb; `bash scripts/test` prepares a Python that can"
            );
        }
        eprintln!(
            "SKIPPED the DuckDB half: `{python}` cannot import duckdb — run the suite with `bash scripts/test`"
        );
        return;
    }
    let script = r#"
import sys, duckdb
con = duckdb.connect()
print(con.execute("select count(*), min(requested_at)::varchar, count(distinct device) from read_parquet(?)", [sys.argv[1]]).fetchone())
"#;
    let printed = python_reads(&python, script, &path);
    assert!(
        printed.starts_with("(3000, '2026-01-01 00:00:00"),
        "{printed}"
    );
    assert!(printed.ends_with(", 1)"), "{printed}");
}

#[cfg(feature = "parquet")]
#[test]
fn after_kill_9_every_visible_parquet_part_is_readable() {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let dir = tempfile::tempdir().unwrap();
    let parts = dir.path().join("parts");
    let mut child = tapedeck()
        .args([
            "record",
            "--source",
            "sim:alicat?rate=20000",
            "--sink",
            &format!("parquet:{}/?roll_rows=5000", parts.display()),
            "--progress",
            "never",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until a few parts are finished, then kill the recorder mid-part.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let visible = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&parts)
            .map(|d| {
                d.map(|e| e.unwrap().path())
                    .filter(|p| {
                        p.extension().is_some_and(|x| x == "parquet")
                            && !p.file_name().unwrap().to_string_lossy().starts_with('.')
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    while visible().len() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(120));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let parts_now = visible();
    assert!(parts_now.len() >= 3, "{parts_now:?}");
    let mut total = 0;
    for p in &parts_now {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(p).unwrap())
            .unwrap_or_else(|e| panic!("{p:?} unreadable after kill -9: {e}"))
            .build()
            .unwrap();
        let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 5000, "{p:?}");
        total += rows;
    }
    assert_eq!(total, parts_now.len() * 5000);
}

#[cfg(feature = "sqlite")]
#[test]
fn record_into_sqlite_and_read_it_with_python() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("lab.db");
    let out = run(&[
        "record",
        "--source",
        "sim:alicat?n=2000",
        "--sink",
        &format!("sqlite:{}?table=samples", db.display()),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let Ok(python) = Command::new("python3").arg("--version").output() else {
        eprintln!("skipping the Python half: python3 is not installed");
        return;
    };
    assert!(python.status.success());
    let printed = python_reads(
        "python3",
        "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*), min(requested_at), max(Mass_Flow) from samples').fetchone())",
        &db,
    );
    // 10.0 + 999 * 0.01 in f64, as Python prints it.
    assert_eq!(
        printed,
        "(2000, '2026-01-01T00:00:00.000000Z', 19.990000000000002)"
    );
}

/// Rows of a tape as `requested_at` values (µs), read with the library.
fn tape_times(dir: &Path) -> Vec<i64> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::TimestampMicrosecondType;
    tapedeck::tape::TapeReader::open(dir, tapedeck::tape::StartAt::Start)
        .unwrap()
        .flat_map(|x| {
            let (_, b) = x.unwrap();
            let col = b
                .column_by_name("requested_at")
                .unwrap()
                .as_primitive::<TimestampMicrosecondType>()
                .clone();
            col.values().to_vec()
        })
        .collect()
}

#[test]
fn sigkill_at_random_moments_never_loses_an_acknowledged_row() {
    use std::io::{BufRead, BufReader};
    let kills: usize = std::env::var("TAPEDECK_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("tape");
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut acked_per_run = Vec::new();
    for _ in 0..kills {
        let mut child = tapedeck()
            .args([
                "record",
                "--source",
                "sim:alicat?rate=40000",
                "--tape",
                &tape.display().to_string(),
                "--fsync",
                "always",
                "--segment-bytes",
                "65536",
                "--sink",
                "null:",
                "--progress",
                "always",
            ])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<u64>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(n) = line
                    .split("acked ")
                    .nth(1)
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    let _ = tx.send(n);
                }
            }
        });
        // Wait for a first acknowledgement, then kill at a random moment.
        let mut last = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while last == 0 && std::time::Instant::now() < deadline {
            if let Ok(n) = rx.recv_timeout(Duration::from_millis(50)) {
                last = n;
            }
        }
        assert!(last > 0, "the recorder acknowledged nothing within 20 s");
        std::thread::sleep(Duration::from_millis(rand(400)));
        while let Ok(n) = rx.try_recv() {
            last = last.max(n);
        }
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        while let Ok(n) = rx.try_recv() {
            last = last.max(n);
        }
        acked_per_run.push(last);
    }
    // One more open seals whatever the last kill left, then everything must check out.
    tapedeck::tape::TapeWriter::open(&tape, tapedeck::tape::TapeOptions::default())
        .unwrap()
        .close()
        .unwrap();
    let times = tape_times(&tape);
    // Each run restarts the simulator at its first timestamp: split the tape into runs there.
    let base = times[0];
    let mut runs: Vec<Vec<i64>> = Vec::new();
    for t in times {
        if t == base {
            runs.push(Vec::new());
        }
        runs.last_mut().unwrap().push(t);
    }
    assert_eq!(runs.len(), kills, "one run per recorder on the tape");
    for (k, (run, acked)) in runs.iter().zip(&acked_per_run).enumerate() {
        assert!(
            run.len() as u64 >= *acked,
            "run {k}: {} rows on the tape, {acked} acknowledged",
            run.len()
        );
        for (i, t) in run.iter().enumerate() {
            assert_eq!(
                *t,
                base + i as i64 * 100,
                "run {k}: row {i} out of order or duplicated"
            );
        }
    }
    let out = run(&["verify", &tape.display().to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    eprintln!(
        "{kills} kills, {} rows checked",
        runs.iter().map(Vec::len).sum::<usize>()
    );
}

#[test]
fn verify_inspect_tail_and_replay_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("t");
    let t = tape.display().to_string();
    let out = run(&[
        "record",
        "--source",
        "sim:alicat?n=5000",
        "--tape",
        &t,
        "--sink",
        "null:",
        "--compression",
        "lz4",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("5000 rows acknowledged"),
        "{}",
        stderr(&out)
    );
    let out = run(&["verify", &t]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("every CRC and the hash chain check out")
    );
    let out = run(&["inspect", &t, "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["rows"], 5000);
    let out = run(&["tail", &t, "--from", "seq:4998", "--format", "csv"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        text.lines()
            .nth(2)
            .unwrap()
            .contains("2026-01-01T00:00:00.499900Z"),
        "{text}"
    );
    let csv = dir.path().join("r.csv");
    let out = run(&[
        "replay",
        &t,
        "--sink",
        &format!("csv:{}", csv.display()),
        "--from",
        "seq:100",
        "--to",
        "300",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 201);

    // Damage one byte in the middle of the segment: verify names it and exits 1.
    let seg = std::fs::read_dir(&tape)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".tape"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&seg, bytes).unwrap();
    let out = run(&["verify", &t]);
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("PROBLEM") && report.contains("seg-"),
        "{report}"
    );
    // The tape stays usable: recording onto it again works.
    let out = run(&["record", "--source", "sim:alicat?n=10", "--tape", &t]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A new sink delivered from the tape's start meets the damaged frame: every other row is
    // delivered, the range is named, and the exit status says rows were skipped (issue 12).
    let out = run(&[
        "record",
        "--source",
        "sim:alicat?n=10",
        "--tape",
        &t,
        "--sink",
        "null:",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("skipped"), "{}", stderr(&out));
    let out = run(&["verify", "/nonexistent/tape"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no such tape directory"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_second_recorder_on_the_same_tape_is_told_who_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t").display().to_string();
    let mut first = tapedeck()
        .args([
            "record",
            "--source",
            "sim:alicat?rate=100",
            "--tape",
            &t,
            "--sink",
            "null:",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let out = run(&[
        "record",
        "--source",
        "sim:alicat?n=1",
        "--tape",
        &t,
        "--sink",
        "null:",
    ]);
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(e.contains(&format!("process {}", first.id())), "{e}");
}

#[path = "../../tapedeck/tests/common/pg_cluster.rs"]
mod pg_cluster;

/// The test server's URL, or `None` (reason printed) without one outside CI.
fn postgres_url(test: &str) -> Option<String> {
    let url = std::env::var("TAPEDECK_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    match psql(&url, "SELECT 1") {
        Ok(_) => Some(url),
        Err(e) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: CI=true but no PostgreSQL at {url}: {e}");
            }
            eprintln!("skipping {test}: no PostgreSQL at {url} ({e})");
            None
        }
    }
}

/// Runs one statement with `psql` and returns its unaligned output.
fn psql(url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args([url, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// `postgres://postgres:PASSWORD@host…` from a password-less URL.
fn with_password(url: &str, password: &str) -> String {
    url.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{password}@"),
        1,
    )
}

#[test]
fn postgres_credentials_never_reach_logs_errors_progress_or_the_summary() {
    let Some(url) = postgres_url("postgres_credentials") else {
        return;
    };
    let schema = format!("td_cli_secret_{}", std::process::id());
    psql(
        &url,
        &format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"),
    )
    .unwrap();
    let secret = "pw-Zq81xK";
    let sink = with_password(&url, secret);
    // Trust authentication ignores the password, so the run succeeds and logs everything it can.
    let ok = tapedeck()
        .args([
            "record",
            "--source",
            "sim:alicat?n=20000&rate=20000",
            "--sink",
            &format!("{sink}?schema={schema}&table=t&create_table=true"),
            "--summary-json",
            "-",
            "--progress",
            "always",
        ])
        .env("TAPEDECK_LOG", "trace")
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", stderr(&ok));
    let failed = tapedeck()
        .args([
            "record",
            "--source",
            "sim:alicat?n=10",
            "--sink",
            &format!("{sink}?schema={schema}&table=absent&create_table=false"),
            "--summary-json",
            "-",
        ])
        .env("TAPEDECK_LOG", "trace")
        .output()
        .unwrap();
    assert_eq!(failed.status.code(), Some(1), "{}", stderr(&failed));
    let refused = run(&[
        "record",
        "--source",
        "sim:alicat?n=10",
        "--sink",
        &format!("postgres://postgres:{secret}@127.0.0.1:1/test?connect_timeout=2s"),
    ]);
    assert_eq!(refused.status.code(), Some(1));
    let bad_param = run(&[
        "record",
        "--source",
        "sim:alicat?n=10",
        "--sink",
        &format!("{sink}?tabel=x"),
    ]);
    assert_eq!(bad_param.status.code(), Some(2));
    let mut everything = String::new();
    for o in [&ok, &failed, &refused, &bad_param] {
        everything.push_str(&String::from_utf8_lossy(&o.stdout));
        everything.push_str(&String::from_utf8_lossy(&o.stderr));
    }
    assert!(
        !everything.contains(secret),
        "the password leaked:\n{everything}"
    );
    // What was shown names the target instead.
    assert!(
        everything.contains(&format!("/test.{schema}.t")),
        "{everything}"
    );
    assert!(
        stderr(&failed).contains(&format!("{schema}.absent")),
        "{}",
        stderr(&failed)
    );
    assert!(
        stderr(&refused).contains("cannot connect to 127.0.0.1:1/test"),
        "{}",
        stderr(&refused)
    );
    let s: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(s["sinks"][0]["rows"], 20000);
    assert_eq!(
        psql(&url, &format!("SELECT count(*) FROM {schema}.t")).unwrap(),
        "20000"
    );
    psql(&url, &format!("DROP SCHEMA {schema} CASCADE")).unwrap();
}

#[test]
fn record_keeps_going_while_postgres_restarts_and_says_the_sink_is_behind() {
    let Some(cluster) = pg_cluster::Cluster::start("record_postgres_restart") else {
        return;
    };
    let url = cluster.url();
    let child = tapedeck()
        .args([
            "record",
            "--source",
            "sim:alicat?rate=4000",
            "--duration",
            "5s",
            "--flush-interval",
            "100ms",
            "--sink",
            &format!("{url}?table=t&create_table=true&connect_timeout=2s"),
            "--summary-json",
            "-",
            "--progress",
            "always",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    cluster.stop("fast");
    std::thread::sleep(Duration::from_millis(1500));
    cluster.start_again();
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("behind"),
        "the progress line never said the sink was behind:\n{err}"
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = s["rows"].as_u64().unwrap();
    assert!(
        rows >= 15_000,
        "the source was held up: only {rows} rows in 5 s"
    );
    assert_eq!(s["sinks"][0]["rows"].as_u64(), Some(rows));
    let stored = psql(
        &url,
        "SELECT count(*) || ' ' || count(DISTINCT requested_at) FROM t",
    )
    .unwrap();
    assert_eq!(
        stored,
        format!("{rows} {rows}"),
        "rows and distinct rows in the table"
    );
}

#[test]
fn record_with_a_tape_delivers_from_it_resumes_and_inspect_shows_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("tape");
    let csv = dir.path().join("out.csv");
    let summary_path = dir.path().join("s.json");
    let record = |n: u64| {
        run(&[
            "record",
            "--source",
            &format!("sim:alicat?n={n}"),
            "--tape",
            &tape.display().to_string(),
            "--sink",
            &format!("csv:{}", csv.display()),
            "--summary-json",
            &summary_path.display().to_string(),
            "-q",
        ])
    };
    let out = record(3000);
    assert!(out.status.success(), "{}", stderr(&out));
    // The same command again continues the file instead of refusing or overwriting it.
    let out = record(2000);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = summary(&summary_path);
    let d = &s["deliveries"][0];
    assert_eq!(d["state"], "done");
    assert_eq!(d["cursor"], 5000);
    assert_eq!(d["rows"], 2000);
    assert_eq!(d["lag_rows"], 0);
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), 5001, "one header, every row once");
    let out = run(&["inspect", &tape.display().to_string(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["end_seq"], 5000);
    assert_eq!(info["deliveries"][0]["cursor"], 5000);
    // A sink added later with `deliver` starts at the beginning of the tape.
    let late = dir.path().join("late.jsonl");
    let out = run(&[
        "deliver",
        &tape.display().to_string(),
        "--sink",
        &format!("jsonl:{}", late.display()),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&late).unwrap().lines().count(),
        5000
    );
    let out = run(&["inspect", &tape.display().to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("deliveries: 2"), "{text}");
    assert!(text.contains("cursor 5000  lag 0 rows"), "{text}");
}

#[test]
fn raw_files_resume_from_the_tape_and_import_salvages_a_cut_file() {
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("tape");
    let raw = dir.path().join("run.dt-raw");
    for _ in 0..2 {
        let out = run(&[
            "record",
            "--source",
            "sim:daq?channels=4&rate=10000&block=500&blocks=6&pace=max&raw=true",
            "--tape",
            &tape.display().to_string(),
            "--sink",
            &format!("raw:{}", raw.display()),
            "-q",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // 12 blocks from two runs in one file, numbered on, and one final marker at the end.
    let arrow = dir.path().join("all.arrow");
    let summary_path = dir.path().join("s.json");
    let out = run(&[
        "import",
        &raw.display().to_string(),
        "--sink",
        &format!("ipc:{}", arrow.display()),
        "--summary-json",
        &summary_path.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = summary(&summary_path);
    assert_eq!(s["blocks"], 12);
    assert_eq!(s["rows"], 12 * 500);
    assert_eq!(s["dt_raw"]["chunks"], 13);
    assert_eq!(s["dt_raw"]["complete"], true);
    // Cut inside the 8th chunk: the first 7 blocks are imported, and the report says where.
    let bytes = std::fs::read(&raw).unwrap();
    let cut = dir.path().join("cut.dt-raw");
    let chunk = 4 + 200 + 4 * 500 * 2; // about one chunk
    std::fs::write(&cut, &bytes[..bytes.len() - 5 * chunk - 100]).unwrap();
    let out = run(&[
        "import",
        &cut.display().to_string(),
        "--sink",
        &format!("ipc:{}", dir.path().join("cut.arrow").display()),
        "--summary-json",
        &summary_path.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("TRUNCATED: stopped at byte"),
        "{}",
        stderr(&out)
    );
    let s = summary(&summary_path);
    let blocks = s["blocks"].as_u64().unwrap();
    assert!((6..=8).contains(&blocks), "{s}");
    assert_eq!(s["dt_raw"]["chunks"], blocks);
    assert!(s["dt_raw"]["stopped_at"].as_u64().unwrap() < bytes.len() as u64);
}

#[test]
fn replay_and_import_of_a_missing_input_leave_an_existing_output_alone() {
    let dir = tempfile::tempdir().unwrap();
    let out_csv = dir.path().join("kept.csv");
    std::fs::write(&out_csv, "a,b\n1,2\n").unwrap();
    let sink = format!("csv:{}?overwrite=true", out_csv.display());
    let missing_tape = dir.path().join("no-tape").display().to_string();
    let missing_raw = dir.path().join("none.dt-raw").display().to_string();
    for args in [
        ["replay", missing_tape.as_str(), "--sink", sink.as_str()],
        ["import", missing_raw.as_str(), "--sink", sink.as_str()],
    ] {
        let o = run(&args);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert_eq!(
            std::fs::read_to_string(&out_csv).unwrap(),
            "a,b\n1,2\n",
            "{args:?} touched the output: {}",
            stderr(&o)
        );
    }
    // A bad sink URI is still the first thing reported (usage, exit 2), whatever the input.
    let o = run(&["replay", &missing_tape, "--sink", "csv:x.csv?overwrit=true"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("overwrit"), "{}", stderr(&o));
}
