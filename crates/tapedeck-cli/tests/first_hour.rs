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
