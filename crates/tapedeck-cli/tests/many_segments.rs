//! Bounded file handles: a tape of at least 10,000 segments records, verifies, replays, inspects,
//! tails and delivers with the process limited to 256 open files (`ulimit -n 256`). A reader,
//! writer or sink that kept a handle per segment would run out long before the end.

use std::path::Path;
use std::process::Output;
use std::time::Instant;

/// The open-file limit every command runs under.
const LIMIT: u32 = 256;
/// Segments the tape must have: far more than `LIMIT`.
const SEGMENTS: usize = 10_000;
/// Rows recorded: with `--segment-bytes 4096`, `--batch-size 4` and no compression a segment
/// holds 12 sim:alicat rows (three frames), so this makes about 10,100 segments.
const ROWS: u64 = 121_200;

/// Runs the binary with `args` under `ulimit -n LIMIT`.
fn limited(args: &[&str]) -> Output {
    let started = Instant::now();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {LIMIT} || exit 120; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_tapedeck"))
        .args(args)
        .output()
        .unwrap();
    eprintln!(
        "tapedeck {}: {:.1} s",
        args.first().copied().unwrap_or(""),
        started.elapsed().as_secs_f64()
    );
    assert_ne!(
        out.status.code(),
        Some(120),
        "cannot set `ulimit -n {LIMIT}` here: {}",
        stderr(&out)
    );
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(what: &str, o: &Output) {
    assert!(
        o.status.success(),
        "{what} under `ulimit -n {LIMIT}` exited with {:?}: {}",
        o.status.code(),
        stderr(o)
    );
}

/// Data rows of a CSV file with a header.
fn csv_rows(path: &Path) -> u64 {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().count().saturating_sub(1) as u64
}

fn segments(tape: &Path) -> usize {
    std::fs::read_dir(tape)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.starts_with("seg-") && name.ends_with(".tape")
        })
        .count()
}

#[test]
fn a_tape_of_ten_thousand_segments_works_under_ulimit_256() {
    // tmpfs when there is one: ten thousand small files are written and read several times.
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("tapedeck-many-")
            .tempdir_in(shm)
            .unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let tape = dir.path().join("tape");
    let t = tape.to_str().unwrap();
    let d = dir.path().display();
    let started = Instant::now();

    // The limit is in force for the command (and not just asked for).
    let probe = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {LIMIT} && ulimit -n"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&probe.stdout).trim(),
        LIMIT.to_string()
    );

    let out = limited(&[
        "record",
        "--source",
        &format!("sim:alicat?n={ROWS}"),
        "--tape",
        t,
        "--segment-bytes",
        "4096",
        "--batch-size",
        "4",
        // A frame per 4-row flush, so every segment holds a few rows.
        "--frame-rows",
        "4",
        "--compression",
        "none",
        "--fsync",
        "never",
        "--sink",
        &format!("csv:{d}/recorded.csv"),
    ]);
    ok("record", &out);
    let n = segments(&tape);
    assert!(
        n >= SEGMENTS,
        "the tape has {n} segments, the test needs at least {SEGMENTS}: lower --segment-bytes' payload or raise ROWS"
    );
    assert_eq!(csv_rows(&dir.path().join("recorded.csv")), ROWS);

    ok("verify", &limited(&["verify", t]));

    let replayed = dir.path().join("replayed.csv");
    let out = limited(&[
        "replay",
        t,
        "--sink",
        &format!("csv:{}", replayed.display()),
    ]);
    ok("replay", &out);
    assert_eq!(csv_rows(&replayed), ROWS);

    let out = limited(&["inspect", t]);
    ok("inspect", &out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("rows: {ROWS}")), "{text:.2000}");
    assert!(text.contains(&format!("segments: {n}")), "{text:.2000}");

    let out = limited(&["tail", t, "--format", "jsonl"]);
    ok("tail", &out);
    let lines = out.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    assert_eq!(lines.count() as u64, ROWS);

    let delivered = dir.path().join("delivered.csv");
    let out = limited(&[
        "deliver",
        t,
        "--sink",
        &format!("csv:{}", delivered.display()),
    ]);
    ok("deliver", &out);
    assert_eq!(csv_rows(&delivered), ROWS);

    eprintln!(
        "{n} segments, {ROWS} rows: {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
}
