//! What a user sees when the disk or a sink misbehaves: damage found in acknowledged rows is an
//! error with its ranges and exit status 3; a sink that never answers does not make `record`
//! unkillable; a failed tape writer is a failed run.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn tapedeck() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tapedeck"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn record_tape(tape: &Path, rows: u64) {
    let o = tapedeck()
        .args(["record", "--source"])
        .arg(format!("sim:alicat?n={rows}"))
        .arg("--tape")
        .arg(tape)
        // Frames of 100 rows, so one damaged byte costs one frame of 100 rows.
        .args([
            "--compression",
            "none",
            "--batch-size",
            "100",
            "--frame-rows",
            "100",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

fn segments(tape: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(tape)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .collect();
    v.sort();
    v
}

/// Defect 3 and 2: a flipped byte in a sealed segment, found by a delivery: the rows it hides are
/// printed as an error with segment, bytes and sequence range, put in the summary, and the run
/// ends with exit status 3 — every other row delivered.
#[test]
fn a_delivery_that_meets_damage_says_which_rows_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("tape");
    record_tape(&tape, 1000);
    let seg = segments(&tape).remove(0);
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&seg, bytes).unwrap();

    let csv = dir.path().join("out.csv");
    let summary = dir.path().join("s.json");
    let o = tapedeck()
        .arg("deliver")
        .arg(&tape)
        .arg("--sink")
        .arg(format!("csv:{}", csv.display()))
        .arg("--summary-json")
        .arg(&summary)
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    let name = seg.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        err.contains("error: delivery to") && err.contains(&name) && err.contains("rows "),
        "{err}"
    );
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let skipped = s["deliveries"][0]["skipped"].as_array().unwrap().clone();
    assert_eq!(skipped.len(), 1, "{s}");
    let lost = skipped[0]["to"].as_u64().unwrap() - skipped[0]["from"].as_u64().unwrap();
    assert!(lost > 0 && lost <= 100, "one frame of 100 rows: {lost}");
    let lines = std::fs::read_to_string(&csv).unwrap().lines().count() as u64;
    assert_eq!(lines - 1, 1000 - lost, "every other row delivered");

    // verify names the same segment; inspect shows the skipped range.
    let v = tapedeck().arg("verify").arg(&tape).output().unwrap();
    assert_eq!(v.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&v.stdout).contains(&name));
    let i = tapedeck().arg("inspect").arg(&tape).output().unwrap();
    let shown = String::from_utf8_lossy(&i.stdout).into_owned();
    assert!(
        shown.contains("skipped unreadable acknowledged rows"),
        "{shown}"
    );
    // Defect 2: the damage in the sealed segment is quarantined like damage in an open one —
    // in the manifest with its sequence range and rows, a copy of the bytes kept.
    assert!(
        shown.contains(&format!("quarantined: {name} bytes"))
            && shown.contains(&format!("({lost} rows)")),
        "{shown}"
    );
    let copies = std::fs::read_dir(tape.join("quarantine")).unwrap().count();
    assert_eq!(copies, 1);
    // A second delivery meets the same damage: recorded once.
    let o = tapedeck()
        .arg("deliver")
        .arg(&tape)
        .arg("--sink")
        .arg(format!("csv:{}", dir.path().join("second.csv").display()))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let i = tapedeck().arg("inspect").arg(&tape).output().unwrap();
    let shown = String::from_utf8_lossy(&i.stdout).into_owned();
    assert_eq!(shown.matches("quarantined:").count(), 1, "{shown}");
}

/// Defect 14: verify of a directory that is not a tape, or a file, is a problem (exit 1).
#[test]
fn verify_refuses_an_empty_directory_and_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let o = tapedeck().arg("verify").arg(dir.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("not a tape"));
    let file = dir.path().join("afile");
    std::fs::write(&file, b"x").unwrap();
    let o = tapedeck().arg("verify").arg(&file).output().unwrap();
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("is a file, not a tape directory")
            || stderr(&o).contains("this is a file"),
        "{}",
        stderr(&o)
    );

    // A tape whose only segment was deleted: not "every CRC checks out".
    let tape = dir.path().join("tape");
    record_tape(&tape, 500);
    for s in segments(&tape) {
        std::fs::remove_file(s).unwrap();
    }
    let o = tapedeck().arg("verify").arg(&tape).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("missing"));
}

/// Defect 15: a sink that never answers does not make `record` unkillable: one SIGTERM ends it
/// after a short grace, naming the sink it stopped waiting for.
#[test]
fn one_sigterm_ends_a_record_whose_sink_never_answers() {
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("tape");
    // Nothing listens on port 9 of localhost: the delivery keeps reconnecting.
    let sink = "postgres://postgres@127.0.0.1:9/test?table=never";
    let mut child = tapedeck()
        .args(["record", "--source", "sim:alicat?n=500"])
        .arg("--tape")
        .arg(&tape)
        .args(["--sink", sink, "--progress", "never"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let the source end and the recorder reach the wait for its deliveries.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "still waiting for the sink"
    );
    let sent = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut status = None;
    while sent.elapsed() < Duration::from_secs(30) {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(status) = status else {
        let _ = child.kill();
        panic!("record ignored SIGTERM for 30 s");
    };
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(
        sent.elapsed() < Duration::from_secs(15),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        err.contains("stopping the delivery to postgres://postgres@127.0.0.1:9/test"),
        "{err}"
    );
    // The tape kept every row.
    let i = tapedeck()
        .args(["inspect", "--json"])
        .arg(&tape)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&i.stdout).unwrap();
    assert_eq!(v["rows"], 500);
}

/// `tapedeck inspect DIR | head`: a reader that closes the pipe early ends inspect quietly,
/// never with a panic.
#[test]
fn inspect_into_a_closed_pipe_does_not_panic() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("tape");
    let o = tapedeck()
        .args(["record", "--source", "sim:alicat?n=60000", "--tape"])
        .arg(&tape)
        .args(["--segment-bytes", "4096", "--compression", "none", "-q"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let mut child = tapedeck()
        .arg("inspect")
        .arg(&tape)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The pipe's reader is gone now.
    let o = child.wait_with_output().unwrap();
    assert!(first.starts_with("tape "));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert_ne!(o.status.code(), Some(101));
}
