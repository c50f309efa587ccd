//! What a new user meets in the first hour (issue 13): exit codes that match README's table,
//! messages that say what was given and what to write instead, logs without colour codes when
//! they do not go to a terminal.

use std::path::Path;
use std::process::{Command, Output};

fn tapedeck() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tapedeck"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn record_tape(tape: &Path, rows: u64) -> Output {
    tapedeck()
        .args(["record", "--source"])
        .arg(format!("sim:alicat?n={rows}"))
        .arg("--tape")
        .arg(tape)
        .output()
        .unwrap()
}

/// Item 10: an existing output file is a usage error (2) with a tape too, and the tape is not
/// touched — not created, not recovered.
#[test]
fn an_existing_file_is_exit_2_with_a_tape_before_the_tape_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("old.csv");
    std::fs::write(&csv, "a,b\n1,2\n").unwrap();
    let tape = dir.path().join("tape");
    let o = tapedeck()
        .args(["record", "--source", "sim:alicat?n=10", "--tape"])
        .arg(&tape)
        .arg("--sink")
        .arg(format!("csv:{}", csv.display()))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    assert!(!tape.exists(), "the tape was not created");
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), "a,b\n1,2\n");

    assert!(record_tape(&tape, 10).status.success());
    let before = std::fs::read(tape.join("MANIFEST")).unwrap_or_default();
    let o = tapedeck()
        .arg("deliver")
        .arg(&tape)
        .arg("--sink")
        .arg(format!("csv:{}", csv.display()))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(tape.join("MANIFEST")).unwrap_or_default(),
        before
    );
}

/// Item 11: `--tape` and `deliver` given a regular file say so, and what to give instead.
#[test]
fn a_regular_file_given_as_a_tape_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("afile");
    std::fs::write(&file, "x").unwrap();
    let o = record_tape(&file, 10);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("is a file, not a tape directory"),
        "{}",
        stderr(&o)
    );
    for cmd in ["deliver", "verify", "inspect"] {
        let mut c = tapedeck();
        c.arg(cmd).arg(&file);
        if cmd == "deliver" {
            c.args(["--sink", "null:"]);
        }
        let o = c.output().unwrap();
        assert_ne!(o.status.code(), Some(0), "{cmd}");
        assert!(
            stderr(&o).contains("is a file, not a tape directory"),
            "{cmd}: {}",
            stderr(&o)
        );
    }
}

/// Item 12: logs carry no ANSI colour codes when stderr is not a terminal.
#[test]
fn logs_are_plain_text_off_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("tape");
    assert!(record_tape(&tape, 50).status.success());
    // A torn tail makes the next writer log a warning.
    let seg = std::fs::read_dir(&tape)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(b"TDFRgarbage");
    // Remove the footer so the segment counts as open and its tail as torn.
    std::fs::write(&seg, &bytes).unwrap();
    let o = record_tape(&tape, 10);
    let err = stderr(&o);
    assert!(err.contains("WARN"), "a warning was logged: {err}");
    assert!(!err.contains('\u{1b}'), "no escape codes: {err:?}");
}

/// The sinks of the both-ways test, by file name: (name, URI template with `{d}` for the
/// directory).
const BOTH_WAYS_SINKS: &[(&str, &str)] = &[
    ("csv", "csv:{d}/out.csv?accept_blocks=true"),
    ("jsonl", "jsonl:{d}/out.jsonl?accept_blocks=true"),
    ("sqlite", "sqlite:{d}/out.db?table=samples"),
    (
        "sqlite_long",
        "sqlite:{d}/long.db?table=samples&blocks=long",
    ),
    ("parquet", "parquet:{d}/out.parquet"),
    ("ipc", "ipc:{d}/out.arrow"),
    ("raw", "raw:{d}/out.dt-raw"),
];

fn sqlite_dump(path: &Path) -> Vec<String> {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name <> 'tapedeck_cursor' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    tables.sort();
    let mut out = Vec::new();
    for t in tables {
        let mut s = c
            .prepare(&format!("SELECT * FROM \"{t}\" ORDER BY rowid"))
            .unwrap();
        let n = s.column_count();
        let rows = s
            .query_map([], |r| {
                Ok((0..n)
                    .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                    .collect::<Vec<_>>()
                    .join("|"))
            })
            .unwrap();
        out.push(format!("table {t}"));
        out.extend(rows.map(|r| r.unwrap()));
    }
    out
}

fn arrow_batches(name: &str, path: &Path) -> Vec<arrow_array::RecordBatch> {
    let f = std::fs::File::open(path).unwrap();
    if name == "parquet" {
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap())
            .collect()
    } else {
        arrow_ipc::reader::FileReader::try_new(f, None)
            .unwrap()
            .map(|b| b.unwrap())
            .collect()
    }
}

/// The columns of every batch, concatenated: what a reader sees, whatever the batch sizes.
fn columns(batches: &[arrow_array::RecordBatch]) -> Vec<String> {
    let Some(first) = batches.first() else {
        return Vec::new();
    };
    let schema = first.schema();
    let all = arrow_select::concat::concat_batches(&schema, batches).unwrap();
    schema
        .fields()
        .iter()
        .zip(all.columns())
        .map(|(f, c)| format!("{}: {:?} {:?}", f.name(), f.data_type(), c))
        .collect()
}

/// Item 1: the same DAQ blocks give the same result in every sink with or without a tape —
/// SQLite summary rows or long rows, CSV and JSONL rows, Parquet and IPC tables, `.dt-raw`
/// chunks — and a CSV without `accept_blocks=true` refuses them both ways.
#[test]
fn every_sink_holds_the_same_with_or_without_a_tape() {
    let dir = tempfile::tempdir().unwrap();
    // A deterministic block source: a .dt-raw file made once.
    let src = dir.path().join("src.dt-raw");
    let o = tapedeck()
        .args([
            "record",
            "--source",
            "sim:daq?channels=3&rate=1000&block=250&blocks=8&pace=max&raw=true",
        ])
        .arg("--sink")
        .arg(format!("raw:{}", src.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let source = format!("file:{}", src.display());
    let direct = dir.path().join("direct");
    let taped = dir.path().join("taped");
    for (out, tape) in [(&direct, None), (&taped, Some(dir.path().join("tape")))] {
        std::fs::create_dir_all(out).unwrap();
        let mut c = tapedeck();
        c.args(["record", "--source", &source, "--progress", "never"]);
        if let Some(t) = &tape {
            c.arg("--tape").arg(t);
        }
        for (_, uri) in BOTH_WAYS_SINKS {
            c.args(["--sink", &uri.replace("{d}", &out.display().to_string())]);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "tape {tape:?}: {}", stderr(&o));
    }
    for (name, uri) in BOTH_WAYS_SINKS {
        let file = uri
            .split_once(':')
            .unwrap()
            .1
            .split('?')
            .next()
            .unwrap()
            .replace("{d}/", "");
        let (a, b) = (direct.join(&file), taped.join(&file));
        match *name {
            "csv" | "jsonl" => assert_eq!(
                std::fs::read_to_string(&a).unwrap(),
                std::fs::read_to_string(&b).unwrap(),
                "{name}"
            ),
            "sqlite" | "sqlite_long" => {
                let (x, y) = (sqlite_dump(&a), sqlite_dump(&b));
                assert!(x.len() > 2, "{name}: {x:?}");
                assert_eq!(x, y, "{name}");
            }
            "parquet" | "ipc" => {
                let (x, y) = (arrow_batches(name, &a), arrow_batches(name, &b));
                assert_eq!(columns(&x), columns(&y), "{name}");
            }
            "raw" => assert_eq!(
                std::fs::read(&a).unwrap(),
                std::fs::read(&b).unwrap(),
                "{name}"
            ),
            _ => unreachable!(),
        }
    }
    // `replay` hands the tape's blocks to its sinks as blocks too.
    let replayed = dir.path().join("replayed.db");
    let o = tapedeck()
        .arg("replay")
        .arg(dir.path().join("tape"))
        .arg("--sink")
        .arg(format!("sqlite:{}?table=samples", replayed.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(sqlite_dump(&replayed), sqlite_dump(&direct.join("out.db")));
    // Blocks into a CSV that does not accept them: refused both ways, with the same advice.
    for tape in [None, Some(dir.path().join("tape2"))] {
        let mut c = tapedeck();
        c.args(["record", "--source", &source, "--progress", "never"]);
        if let Some(t) = &tape {
            c.arg("--tape").arg(t);
        }
        c.arg("--sink").arg(format!(
            "csv:{}",
            dir.path()
                .join(format!("refuse{}.csv", tape.is_some()))
                .display()
        ));
        let o = c.output().unwrap();
        assert_eq!(o.status.code(), Some(1), "tape {tape:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("accept_blocks=true"),
            "tape {tape:?}: {}",
            stderr(&o)
        );
    }
}

/// Item 4: `tail --format table` keeps its column widths from batch to batch (they only grow),
/// so a short value after a long one does not pull the columns left.
#[test]
fn tail_table_columns_do_not_move_between_batches() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("tape");
    let mut child = tapedeck()
        .args([
            "record",
            "--source",
            "stdin:csv",
            "--batch-size",
            "2",
            "--tape",
        ])
        .arg(&tape)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a,b\n1000000,x\n2000000,x\n1,y\n2,y\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = tapedeck()
        .arg("tail")
        .arg(&tape)
        .args(["--format", "table"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.contains('x') || l.contains('y'))
        .collect();
    assert_eq!(rows.len(), 4, "{text}");
    let at: Vec<usize> = rows.iter().map(|l| l.find(['x', 'y']).unwrap()).collect();
    assert!(
        at.windows(2).all(|w| w[0] == w[1]),
        "columns moved:\n{text}"
    );
}

/// Item 9: the tape is listed once, with its bytes; a failed delivery says how far behind it
/// is.
#[test]
fn the_summary_counts_the_tape_once_with_bytes_and_a_failed_delivery_its_lag() {
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("tape");
    let summary = dir.path().join("s.json");
    let o = tapedeck()
        .args([
            "record",
            "--source",
            "sim:daq?channels=2&rate=1000&block=100&blocks=5&pace=max",
        ])
        .arg("--tape")
        .arg(&tape)
        .arg("--sink")
        .arg(format!("csv:{}", dir.path().join("blocks.csv").display()))
        .arg("--summary-json")
        .arg(&summary)
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "the csv refuses blocks: {err}");
    // The summary names the tape once (a warning that the machine's disk is nearly full, which
    // names it too, is not the summary's doing).
    let summary_lines: String = err
        .lines()
        .filter(|l| !l.contains("below the warning level"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        summary_lines.matches(&tape.display().to_string()).count(),
        1,
        "{err}"
    );
    assert!(!err.contains(" 0 B"), "the tape's bytes are counted: {err}");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let tape_sink = s["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["uri"].as_str().unwrap().starts_with("tape:"))
        .unwrap();
    assert!(tape_sink["bytes"].as_u64().unwrap() > 0, "{s}");
    let d = &s["deliveries"][0];
    assert_eq!(d["state"], "failed");
    assert_eq!(d["lag_rows"], 500, "{s}");
    // Item 5: the failed delivery leaves no empty file (nor its cursor) behind, so the retry
    // the error suggests works.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("blocks.csv"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Item 6: a sink attached to a live recording: `deliver` runs beside the recorder, follows
/// what it acknowledges, and ends with every row once the recorder stops.
#[test]
fn deliver_attaches_a_sink_to_a_live_recording() {
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("tape");
    let csv = dir.path().join("late.csv");
    let rec = tapedeck()
        .args([
            "record",
            "--source",
            "sim:alicat?rate=2000&n=4000",
            "--tape",
        ])
        .arg(&tape)
        .args(["--progress", "never"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the tape exists and holds some rows.
    let t0 = std::time::Instant::now();
    while !tape.join("ACKED").exists() && t0.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let o = tapedeck()
        .arg("deliver")
        .arg(&tape)
        .arg("--sink")
        .arg(format!("csv:{}", csv.display()))
        .output()
        .unwrap();
    let rec = rec.wait_with_output().unwrap();
    assert!(rec.status.success(), "{}", stderr(&rec));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("delivering alongside it"),
        "{}",
        stderr(&o)
    );
    let lines = std::fs::read_to_string(&csv).unwrap().lines().count();
    assert_eq!(lines, 4001, "header and every row");
}

/// Item 2: a tape refuses rows unrelated to what it holds (alicat samples onto DAQ blocks),
/// saying what it holds, unless `--allow-schema-change`.
#[test]
fn a_tape_refuses_unrelated_rows_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("tape");
    let o = tapedeck()
        .args([
            "record",
            "--source",
            "sim:daq?channels=2&rate=1000&block=100&blocks=3&pace=max",
            "--tape",
        ])
        .arg(&tape)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = record_tape(&tape, 100);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("no data column in common")
            && err.contains("ai0")
            && err.contains("Mass_Flow"),
        "{err}"
    );
    let o = tapedeck()
        .args([
            "record",
            "--source",
            "sim:alicat?n=100",
            "--allow-schema-change",
            "--tape",
        ])
        .arg(&tape)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // More of the same kind is fine.
    let o = tapedeck()
        .args(["record", "--source", "sim:alicat?n=100", "--tape"])
        .arg(&tape)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Item 3: the run says which type each column of a text source got, in the summary and its
/// JSON.
#[test]
fn the_summary_says_which_type_each_column_got() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("s.json");
    let mut child = tapedeck()
        .args([
            "record",
            "--source",
            "stdin:csv",
            "--sink",
            "null:",
            "--summary-json",
        ])
        .arg(&summary)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"t,flow,serial\n1,2.5,A1\n2,3.5,B2\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o)
            .contains("column types (inferred from lines 2-3): t int, flow float, serial text"),
        "{}",
        stderr(&o)
    );
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(s["columns"][1]["name"], "flow");
    assert_eq!(s["columns"][1]["type"], "float");
}

/// Item 9: with the row count known, the progress line shows a share and the time left.
#[test]
fn the_progress_line_shows_a_share_and_time_left_when_the_count_is_known() {
    let o = tapedeck()
        .args([
            "record",
            "--source",
            "sim:alicat?n=1500&rate=2000",
            "--sink",
            "null:",
            "--progress",
            "always",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let line = err
        .lines()
        .find(|l| l.contains("ETA"))
        .unwrap_or_else(|| panic!("no ETA in: {err}"));
    assert!(line.contains('%'), "{line}");
}

/// Item 5: two `--sink`s naming one file are refused before anything is created (exit 2).
#[test]
fn two_sinks_naming_one_file_are_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let a = format!("csv:{}/out.csv", dir.path().display());
    let b = format!("csv:{}/./out.csv", dir.path().display());
    let o = tapedeck()
        .args([
            "record",
            "--source",
            "sim:alicat?n=10",
            "--sink",
            &a,
            "--sink",
            &b,
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// Item 2: alicat rows into an SQLite table of DAQ rows are refused, naming both column lists,
/// instead of adding rows of nulls.
#[test]
fn a_table_refuses_rows_unrelated_to_its_columns() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}/lab.db?table=samples", dir.path().display());
    {
        use std::io::Write;
        let mut child = tapedeck()
            .args(["record", "--source", "stdin:csv", "--sink", &db])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"device,ai0,ai1\ndev1,0.5,0.25\ndev1,0.6,0.26\n")
            .unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = tapedeck()
        .args(["record", "--source", "sim:alicat?n=10", "--sink", &db])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no data column in common") && stderr(&o).contains("Mass_Flow"),
        "{}",
        stderr(&o)
    );
}

/// A `deliver` beside a recorder into the sink the recorder already feeds is refused (the
/// destination's lock), so no row is written twice.
#[test]
fn deliver_beside_a_recorder_into_its_own_sink_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("tape");
    let csv = dir.path().join("out.csv");
    let rec = tapedeck()
        .args([
            "record",
            "--source",
            "sim:alicat?rate=2000&n=3000",
            "--tape",
        ])
        .arg(&tape)
        .arg("--sink")
        .arg(format!("csv:{}", csv.display()))
        .args(["--progress", "never"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !csv.exists() && t0.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let o = tapedeck()
        .arg("deliver")
        .arg(&tape)
        .arg("--sink")
        .arg(format!("csv:{}", csv.display()))
        .output()
        .unwrap();
    let rec = rec.wait_with_output().unwrap();
    assert!(rec.status.success(), "{}", stderr(&rec));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("another delivery is writing it"),
        "{}",
        stderr(&o)
    );
    let lines = std::fs::read_to_string(&csv).unwrap().lines().count();
    assert_eq!(lines, 3001, "header and every row once");
}
