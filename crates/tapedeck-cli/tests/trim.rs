//! `tapedeck trim`: removes the oldest sealed segments, stops at the oldest sink's cursor
//! unless `--force` (which says who loses what), and a delivery from before the new start
//! fails naming the first row left.

mod common;
use common::{ok, run};

#[test]
fn trim_stops_at_a_sinks_cursor_unless_forced_and_says_who_loses_what() {
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("tape");
    let t = tape.to_str().unwrap();
    let csv = format!("csv:{}", dir.path().join("a.csv").display());
    let record = |n: u64, sink: Option<&str>| {
        let source = format!("sim:alicat?n={n}");
        let mut args = vec!["record", "--source", &source, "--tape", t];
        args.extend(["--segment-bytes", "8192", "--compression", "none", "-q"]);
        if let Some(s) = sink {
            args.extend(["--sink", s]);
        }
        ok(run(&args));
    };
    // The CSV sink gets the first 3,000 rows; 3,000 more are recorded without it.
    record(3000, Some(&csv));
    record(3000, None);

    let dry = ok(run(&["trim", t, "--keep", "1", "--dry-run"]));
    assert!(dry.contains("would remove"), "{dry}");
    assert!(dry.contains("kept rows from 3000 on"), "{dry}");
    assert!(dry.contains("a.csv"), "{dry}");
    let out = ok(run(&["trim", t, "--keep", "1"]));
    assert!(out.contains("removed"), "{out}");
    let v = ok(run(&["verify", t]));
    assert!(v.contains("retention removed the rows before"), "{v}");
    let i = ok(run(&["inspect", t]));
    assert!(i.contains("retained: rows"), "{i}");
    // The CSV sink can still catch up: everything it has not received is on the tape.
    ok(run(&["deliver", t, "--sink", &csv]));

    // Forced past a new sink's cursor (it never received anything): it is told what it lost.
    let late = format!("jsonl:{}", dir.path().join("late.jsonl").display());
    let forced = ok(run(&["trim", t, "--keep", "1", "--force", "--json"]));
    let v: serde_json::Value = serde_json::from_str(forced.trim()).unwrap();
    let first = v["first_seq"].as_u64().unwrap();
    assert!(first > 3000, "{v}");
    // A sink added now starts at the first row left; one whose cursor is behind it fails,
    // naming that row.
    ok(run(&["deliver", t, "--sink", &late]));
    let lines = std::fs::read_to_string(dir.path().join("late.jsonl")).unwrap();
    assert_eq!(lines.lines().count() as u64, 6000 - first);
    let bad = run(&["trim", t, "--keep", "nonsense"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("neither a size"));
}
