//! `tapedeck meta` and `record --meta`: run metadata in the tape's journal, its history and
//! the state as of a time.

use std::process::{Command, Output};

fn tapedeck(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tapedeck"))
        .args(args)
        .env("USER", "tester")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn metadata_is_set_with_the_recording_changed_audited_and_read_as_of_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("tape");
    let t = tape.to_str().unwrap();
    stdout(&tapedeck(&[
        "record",
        "--source",
        "sim:alicat?n=100",
        "--tape",
        t,
        "--meta",
        "operator=ana",
        "--meta",
        "gain=2.5",
        "-q",
    ]));
    let history = stdout(&tapedeck(&["meta", t, "history", "--json"]));
    let first: Vec<serde_json::Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(first[1]["action"], "record");
    let between = first[1]["time"].as_str().unwrap().to_string();
    std::thread::sleep(std::time::Duration::from_millis(5));

    stdout(&tapedeck(&[
        "meta",
        t,
        "set",
        "gain=3",
        "note=hello world",
        "--action",
        "calibrate",
    ]));
    stdout(&tapedeck(&["meta", t, "unset", "note"]));
    let now: serde_json::Value =
        serde_json::from_str(&stdout(&tapedeck(&["meta", t, "get"]))).unwrap();
    assert_eq!(now, serde_json::json!({"operator": "ana", "gain": 3}));
    assert_eq!(stdout(&tapedeck(&["meta", t, "get", "gain"])).trim(), "3");

    let history = stdout(&tapedeck(&["meta", t, "history", "--json"]));
    let records: Vec<serde_json::Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<&str> = records
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["open", "record", "calibrate", "unset"]);
    assert_eq!(records[2]["author"], "tester");
    assert_eq!(
        records[2]["changes"],
        serde_json::json!([
            {"key": "gain", "old": 2.5, "new": 3},
            {"key": "note", "old": null, "new": "hello world"}
        ])
    );
    // As it stood when the recording started.
    let then: serde_json::Value =
        serde_json::from_str(&stdout(&tapedeck(&["meta", t, "as-of", &between]))).unwrap();
    assert_eq!(then, serde_json::json!({"operator": "ana", "gain": 2.5}));
    // The tape itself is untouched by its metadata.
    assert!(stdout(&tapedeck(&["verify", t])).contains("100 rows checked"));

    // The history is a table for SQL, beside the tape.
    #[cfg(feature = "query")]
    {
        let csv = stdout(&tapedeck(&[
            "query",
            t,
            "SELECT seq, action, key, old, new FROM meta ORDER BY seq, key",
            "--format",
            "csv",
        ]));
        assert_eq!(
            csv.lines().collect::<Vec<_>>(),
            [
                "seq,action,key,old,new",
                "1,record,gain,,2.5",
                "1,record,operator,,\"\"\"ana\"\"\"",
                "2,calibrate,gain,2.5,3",
                "2,calibrate,note,,\"\"\"hello world\"\"\"",
                "3,unset,note,\"\"\"hello world\"\"\",",
            ],
            "{csv}"
        );
    }

    // Bad input: exit 2, nothing written.
    let before = std::fs::read(tape.join("META")).unwrap();
    assert_eq!(
        tapedeck(&["meta", t, "set", "novalue"]).status.code(),
        Some(2)
    );
    assert_eq!(
        tapedeck(&["meta", t, "as-of", "yesterday"]).status.code(),
        Some(2)
    );
    assert_eq!(std::fs::read(tape.join("META")).unwrap(), before);
    let none = dir.path().join("none");
    let o = tapedeck(&["meta", none.to_str().unwrap(), "get"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no metadata yet"));
}

#[test]
fn history_follow_prints_changes_committed_by_another_process_until_stopped() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().to_str().unwrap();
    stdout(&tapedeck(&["meta", t, "set", "operator=ana"]));
    let mut follow = Command::new(env!("CARGO_BIN_EXE_tapedeck"))
        .args(["meta", t, "history", "--follow", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let mut next =
        || -> serde_json::Value { serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap() };
    assert_eq!(next()["action"], "open");
    assert_eq!(next()["changes"][0]["new"], "ana");
    for gain in 1..=3 {
        stdout(&tapedeck(&["meta", t, "set", &format!("gain={gain}")]));
        let line = next();
        assert_eq!(line["changes"][0]["key"], "gain", "{line}");
        assert_eq!(line["changes"][0]["new"], gain, "{line}");
    }
    // Ctrl-C stops it, successfully.
    let pid = follow.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = follow.wait().unwrap();
    assert!(status.success(), "{status}");
}
