//! `tapedeck compact`: a tape of small frames rewritten into large ones answers the same
//! queries, verifies, shows the compaction in `inspect`, and delivers every row.

mod common;
use common::{ok, run};

#[test]
fn compact_rewrites_small_frames_and_the_tape_answers_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("tape");
    let t = tape.to_str().unwrap();
    // A slow source: a frame per 10-row flush, segments of 8 KiB.
    ok(run(&[
        "record",
        "--source",
        "sim:alicat?n=3000",
        "--tape",
        t,
        "--batch-size",
        "10",
        "--frame-rows",
        "1",
        "--segment-bytes",
        "8192",
        "-q",
    ]));
    let dump = |t: &str| {
        ok(run(&[
            "query",
            t,
            "select * from tape order by _seq",
            "--format",
            "csv",
        ]))
    };
    let before = dump(t);
    assert_eq!(before.lines().count(), 3001);

    let dry = ok(run(&["compact", t, "--dry-run"]));
    assert!(dry.contains("would rewrite rows 0..3000"), "{dry}");
    let done = run(&["compact", t]);
    let progress = String::from_utf8_lossy(&done.stderr).into_owned();
    let out = ok(done);
    assert!(out.contains("rewritten"), "{out}");
    assert!(progress.contains("rows 0..3000 rewritten"), "{progress}");
    let json = ok(run(&["compact", t, "--json"]));
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["replaced"].as_array().map(Vec::len), Some(0), "{v}");

    assert_eq!(dump(t), before);
    let verified = ok(run(&["verify", t]));
    assert!(verified.contains("compacted: rows 0..3000"), "{verified}");
    assert!(verified.contains("the hash chain check out"), "{verified}");
    let inspected = ok(run(&["inspect", t]));
    assert!(inspected.contains("compacted: rows 0..3000"), "{inspected}");
    assert!(inspected.contains("segments: 1\n"), "{inspected}");

    // Recording goes on after it, and a new sink gets every row once.
    ok(run(&[
        "record",
        "--source",
        "sim:alicat?n=500",
        "--tape",
        t,
        "-q",
    ]));
    let jsonl = dir.path().join("all.jsonl");
    ok(run(&[
        "deliver",
        t,
        "--sink",
        &format!("jsonl:{}", jsonl.display()),
    ]));
    let lines = std::fs::read_to_string(&jsonl).unwrap();
    assert_eq!(lines.lines().count(), 3500);
    ok(run(&["verify", t]));

    let bad = run(&["compact", t, "--before", "soon"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("neither a sequence number nor a time"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let missing = run(&["compact", dir.path().join("nope").to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not a tape directory"));
}
