//! `tapedeck query` as a user runs it: formats, tables, sinks, stats, bad input, and queries
//! against a tape while `record` writes to it.

#![cfg(feature = "query")]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn tapedeck() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tapedeck"))
}

fn run(args: &[&str]) -> Output {
    tapedeck().args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The one value of a one-row, one-column `--format csv` result.
fn csv_value(out: &Output) -> u64 {
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    stdout
        .lines()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"))
}

/// A tape of `n` alicat rows, and a Parquet copy of them written by the `parquet:` sink.
fn recorded(dir: &Path, n: u64) -> (String, String) {
    let tape = dir.join("tape").display().to_string();
    let parquet = dir.join("copy.parquet").display().to_string();
    let out = run(&[
        "record",
        "--source",
        &format!("sim:alicat?n={n}"),
        "--tape",
        &tape,
        "--sink",
        &format!("parquet:{parquet}"),
        "--segment-bytes",
        "65536",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    (tape, parquet)
}

/// A recorder writing 20,000 alicat rows a second onto `tape` for `duration`, in the background.
fn recording(tape: &Path, duration: &str, more: &[&str]) -> std::process::Child {
    tapedeck()
        .args([
            "record",
            "--source",
            "sim:alicat?rate=20000",
            "--duration",
            duration,
        ])
        .arg("--tape")
        .arg(tape)
        .args(more)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_query_prints_in_each_format() {
    let dir = tempfile::tempdir().unwrap();
    let (tape, _) = recorded(dir.path(), 5_000);
    let sql = "SELECT device, count(*) AS n FROM tape GROUP BY device ORDER BY device";

    let out = run(&[
        "query",
        &tape,
        "SELECT count(*) AS n, max(_seq) AS last FROM tape",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains("| 5000 | 4999 |"), "{table}");
    assert!(table.contains("(1 row)"), "{table}");

    let out = run(&["query", &tape, sql, "--format", "csv"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut r = csv::Reader::from_reader(out.stdout.as_slice());
    assert_eq!(r.headers().unwrap(), vec!["device", "n"]);
    let total: u64 = r
        .records()
        .map(|x| x.unwrap()[1].parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 5_000);

    let out = run(&["query", &tape, sql, "--format", "jsonl"]);
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!lines.is_empty());
    assert_eq!(
        lines.iter().map(|v| v["n"].as_u64().unwrap()).sum::<u64>(),
        5_000
    );

    let out = run(&["query", &tape, sql, "--format", "json"]);
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all.as_array().unwrap().len(), lines.len());
}

#[test]
fn a_tape_joins_a_parquet_file_and_a_result_goes_to_a_sink() {
    let dir = tempfile::tempdir().unwrap();
    let (tape, parquet) = recorded(dir.path(), 3_000);
    // Every row of the tape matches its copy in the Parquet file the sink wrote.
    let out = run(&[
        "query",
        &tape,
        "SELECT count(*) FROM tape t JOIN copy c ON t.requested_at = c.requested_at AND t.device = c.device",
        "--table",
        &format!("copy=parquet:{parquet}"),
        "--format",
        "csv",
    ]);
    let n = csv_value(&out);
    assert!(n >= 3_000, "{n}");

    let db = dir.path().join("out.db");
    let out = run(&[
        "query",
        &tape,
        "SELECT _seq, device, \"Mass_Flow\" FROM tape WHERE _seq < 100",
        "--sink",
        &format!("sqlite:{}?table=firsts", db.display()),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("100 rows written"),
        "{}",
        text(&out.stderr)
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM firsts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 100);
}

#[test]
fn stats_show_pruning_and_explain_shows_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let (tape, _) = recorded(dir.path(), 20_000);
    let out = run(&[
        "query",
        &tape,
        "SELECT count(*) FROM tape WHERE _seq >= 19900",
        "--stats",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("| 100 "),
        "{}",
        text(&out.stdout)
    );
    let stats = text(&out.stderr);
    assert!(stats.contains("pruned"), "{stats}");
    assert!(!stats.contains("(0 pruned)"), "no segment pruned: {stats}");

    let out = run(&[
        "query",
        &tape,
        "SELECT count(*) FROM tape WHERE _seq >= 19900",
        "--explain",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    assert!(
        plan.contains("logical plan") && plan.contains("physical plan"),
        "{plan}"
    );
    // The pruning planning did, and no rows: --explain does not run the query.
    assert!(
        plan.contains("tape scan of") && plan.contains("to read"),
        "{plan}"
    );
    assert!(!plan.contains("| 100"), "{plan}");
}

#[test]
fn bad_input_exits_2_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (tape, _) = recorded(dir.path(), 500);
    let sink = dir.path().join("never.parquet");
    let sink_uri = format!("parquet:{}", sink.display());
    for (args, needle) in [
        (
            vec!["query", &tape, "SELEC 1", "--sink", &sink_uri],
            "SELEC",
        ),
        (
            vec!["query", &tape, "SELECT nope FROM tape", "--sink", &sink_uri],
            "nope",
        ),
        (vec!["query", &tape, "SELECT * FROM other"], "other"),
        (
            vec![
                "query",
                &tape,
                "SELECT 1",
                "--table",
                "x=parquet:/does/not/exist.parquet",
            ],
            "no such file",
        ),
        (
            vec!["query", &tape, "SELECT 1", "--table", "justaname"],
            "NAME=URI",
        ),
        (
            vec!["query", &tape, "SELECT 1", "--as-of", "seq:501"],
            "beyond the end",
        ),
        (
            vec!["query", &tape, "SELECT 1", "--as-of", "yesterday"],
            "seq:N",
        ),
        (
            vec!["query", "/no/such/tape", "SELECT 1"],
            "no such tape directory",
        ),
    ] {
        let out = run(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(!sink.exists(), "a failed query created its sink");
}

#[test]
fn queries_beside_a_running_recorder_never_exceed_the_acknowledged_rows_nor_go_back() {
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("tape");
    let mut rec = recording(&tape, "4s", &["--segment-bytes", "262144"]);
    let mut last = 0u64;
    let mut answers = 0;
    let read_acked = || -> u64 {
        let b = std::fs::read(tape.join("ACKED")).unwrap_or_default();
        b.get(8..16)
            .map_or(0, |s| u64::from_le_bytes(s.try_into().unwrap()))
    };
    while rec.try_wait().unwrap().is_none() {
        if !tape.join("ACKED").exists() {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let out = run(&[
            "query",
            tape.to_str().unwrap(),
            "SELECT count(*) FROM tape",
            "--format",
            "csv",
        ]);
        let n = csv_value(&out);
        let acked_after = read_acked();
        assert!(
            n <= acked_after,
            "a query saw {n} rows with {acked_after} acknowledged"
        );
        assert!(n >= last, "the count went back from {last} to {n}");
        last = n;
        answers += 1;
    }
    assert!(rec.wait().unwrap().success());
    assert!(
        answers >= 3,
        "only {answers} queries ran during the recording"
    );
    let out = run(&[
        "query",
        tape.to_str().unwrap(),
        "SELECT count(*) FROM tape",
        "--format",
        "csv",
    ]);
    let n = csv_value(&out);
    assert!(n >= last && n > 0);
}

#[test]
fn follow_reprints_the_result_on_each_new_snapshot_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("tape");
    let tape_arg = tape.to_str().unwrap();
    let mut rec = recording(&tape, "3s", &[]);
    while !tape.join("ACKED").exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let follow = tapedeck()
        .args([
            "query",
            tape_arg,
            "SELECT count(*) AS n FROM tape",
            "--format",
            "csv",
            "--follow",
            "--every",
            "100ms",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(rec.wait().unwrap().success());
    // Long enough for a few more rounds after the recorder stopped.
    std::thread::sleep(Duration::from_millis(600));
    let pid = follow.id();
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let out = follow.wait_with_output().unwrap();
    let stdout = text(&out.stdout);
    let counts: Vec<u64> = stdout.lines().filter_map(|l| l.parse().ok()).collect();
    assert!(
        counts.len() >= 5,
        "only {} results from --follow: {stdout}\n{}",
        counts.len(),
        text(&out.stderr)
    );
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "a count went back: {counts:?}"
    );
    assert!(
        counts.first() < counts.last(),
        "the result never changed while rows landed: {counts:?}"
    );
    let final_count = csv_value(&run(&[
        "query",
        tape_arg,
        "SELECT count(*) AS n FROM tape",
        "--format",
        "csv",
    ]));
    assert_eq!(
        counts.last().copied(),
        Some(final_count),
        "the last result after the recorder stopped is the whole tape"
    );
}
