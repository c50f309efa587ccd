//! `tapedeck pack` / `unpack`: a file comes back byte for byte, a pack is a tape that
//! `verify`, `inspect`, `tail` and `query` read, and bad input or a damaged pack is a clear
//! error with the right exit code and no output left behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;
use common::{ok, run};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn sample_csv(path: &Path) -> Vec<u8> {
    let mut input = b"carrier,flight,dep_delay,origin\r\n".to_vec();
    for i in 0..3000 {
        let delay = if i % 11 == 0 {
            "NA".to_string()
        } else {
            format!("{}", (i % 40) as i64 - 5)
        };
        input.extend(
            format!(
                "{},{},{delay},\"{}\"\r\n",
                ["UA", "AA", "DL", "B6"][i % 4],
                100 + i,
                ["EWR", "LGA", "JFK"][i % 3]
            )
            .as_bytes(),
        );
    }
    std::fs::write(path, &input).unwrap();
    input
}

#[test]
fn a_file_packs_unpacks_and_is_a_tape_the_other_commands_read() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("flights.csv");
    let input = sample_csv(&csv);
    let pack = dir.path().join("flights.tdpack");
    let out = run(&["pack", s(&csv), s(&pack)]);
    let progress = String::from_utf8_lossy(&out.stderr).into_owned();
    let summary = ok(out);
    assert!(
        summary.contains("csv") && summary.contains("sha256"),
        "{summary}"
    );
    assert!(
        progress.contains("ratio") && progress.contains("MB/s"),
        "{progress}"
    );

    let back = dir.path().join("back.csv");
    ok(run(&["unpack", s(&pack), s(&back)]));
    assert!(std::fs::read(&back).unwrap() == input);
    // To standard output too.
    let o = ok_bytes(run(&["unpack", s(&pack), "-"]));
    assert!(o == input);

    let v = ok(run(&["verify", s(&pack)]));
    assert!(v.contains("SHA-256 match"), "{v}");
    let inspect = ok(run(&["inspect", s(&pack)]));
    assert!(
        inspect.contains("pack: csv of") && inspect.contains("3000 records"),
        "{inspect}"
    );
    let tail = ok(run(&["tail", s(&pack), "--from", "seq:2998"]));
    assert!(tail.contains("flight"), "{tail}");
    // SQL over the pack's columns, without unpacking: `NA` delays are nulls, the quoted
    // origins plain text.
    let q = ok(run(&[
        "query",
        s(&pack),
        "SELECT carrier, count(*) AS n, count(dep_delay) AS delays, min(origin) AS o FROM tape GROUP BY carrier ORDER BY carrier",
        "--format",
        "csv",
    ]));
    assert_eq!(
        q,
        "carrier,n,delays,o\nAA,750,682,EWR\nB6,750,682,EWR\nDL,750,682,EWR\nUA,750,681,EWR\n"
    );
}

#[test]
fn a_query_reads_a_pack_whose_last_frame_is_larger_than_its_read_chunk() {
    // One frame of about 3 MB, the segment's last: the query reads its frames a MiB at a time
    // and must take the rest of a frame that runs past that.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("big.csv");
    let mut input = b"i,word\n".to_vec();
    for i in 0..150_000u64 {
        input.extend(format!("{},w{}x{}\n", i * 7919 % 1_000_003, i % 97, i % 13).as_bytes());
    }
    std::fs::write(&csv, &input).unwrap();
    let pack = dir.path().join("big.tdpack");
    ok(run(&[
        "pack",
        s(&csv),
        s(&pack),
        "--chunk-bytes",
        "100000000",
        "--level",
        "1",
    ]));
    let q = ok(run(&[
        "query",
        s(&pack),
        "SELECT count(*) AS n, count(DISTINCT word) AS w FROM tape",
        "--format",
        "csv",
    ]));
    assert_eq!(q, "n,w\n150000,1261\n");
}

fn ok_bytes(o: Output) -> Vec<u8> {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

#[test]
fn standard_input_packs_and_bad_arguments_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let pack = dir.path().join("in.tdpack");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tapedeck"))
        .args(["pack", "-", s(&pack), "--format", "log"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = b"2026-11-30T10:00:00Z a\n2026-11-30T10:00:01Z b\nno time\n".to_vec();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&input).unwrap();
    ok(child.wait_with_output().unwrap());
    assert!(ok_bytes(run(&["unpack", s(&pack), "-"])) == input);
    let q = ok(run(&[
        "query",
        s(&pack),
        "SELECT count(time) AS t, count(*) AS n FROM tape",
        "--format",
        "csv",
    ]));
    assert_eq!(q, "t,n\n2,3\n");
    // A packed log's `template` column, computed from `line`; filters on `time` still apply.
    let q = ok(run(&[
        "query",
        s(&pack),
        "SELECT template, count(*) AS n FROM tape GROUP BY template ORDER BY template",
        "--format",
        "csv",
    ]));
    assert_eq!(
        q,
        "template,n\n<*>:<*>:<*> a,1\n<*>:<*>:<*> b,1\nno time,1\n"
    );
    let q = ok(run(&[
        "query",
        s(&pack),
        "SELECT line, _seq FROM tape WHERE time >= '2026-11-30T10:00:01Z'",
        "--format",
        "csv",
    ]));
    assert_eq!(q, "line,_seq\n2026-11-30T10:00:01Z b,1\n");

    for bad in [
        vec!["pack", "x", "y", "--format", "xml"],
        vec!["pack", "x", "y", "--backend", "zstd", "--level", "0"],
        vec!["pack", "x", "y", "--level", "23"],
        vec!["pack", "x", "y", "--backend", "xz", "--level", "10"],
        vec!["pack", "x", "y", "--backend", "lz4"],
        vec!["pack", "x", "y", "--chunk-lines", "0"],
        vec!["unpack"],
    ] {
        let o = run(&bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}");
        assert!(!o.stderr.is_empty());
    }
    // A missing input, an existing output, not a pack: exit 1 with the path named.
    let o = run(&[
        "pack",
        s(&dir.path().join("missing.csv")),
        s(&dir.path().join("m")),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.csv"));
    let o = run(&["pack", s(&pack), s(&pack)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    let o = run(&["unpack", s(dir.path()), s(&dir.path().join("out"))]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a pack"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!dir.path().join("out").exists());
}

#[test]
fn a_damaged_pack_fails_loudly_and_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("a.csv");
    sample_csv(&csv);
    let pack = dir.path().join("a.tdpack");
    ok(run(&["pack", s(&csv), s(&pack), "--chunk-lines", "500"]));
    let seg: PathBuf = std::fs::read_dir(&pack)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "tape"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    let out = dir.path().join("restored.csv");
    let o = run(&["unpack", s(&pack), s(&out)]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("frame") && err.contains("byte"), "{err}");
    assert!(!out.exists());
    // `verify` says so too, and exits 1.
    let v = run(&["verify", s(&pack)]);
    assert_eq!(v.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&v.stdout).contains("PROBLEM"));
    assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".partial")
    }));
}

/// DuckDB from the test venv (`scripts/test`); `None`, with the reason, outside CI.
fn python_with_duckdb() -> Option<String> {
    let python = std::env::var("TAPEDECK_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    if Command::new(&python)
        .args(["-c", "import duckdb"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some(python);
    }
    let why =
        format!("`{python}` cannot import duckdb; `bash scripts/test` prepares a Python that can");
    assert!(
        std::env::var("CI").as_deref() != Ok("true")
            && std::env::var_os("TAPEDECK_TEST_PYTHON").is_none(),
        "{why}"
    );
    eprintln!("SKIPPED: {why}");
    None
}

#[test]
fn a_group_by_over_packed_flights_equals_duckdb_over_the_csv() {
    let Some(python) = python_with_duckdb() else {
        return;
    };
    let corpora = std::env::var_os("TAPEDECK_TEST_CORPORA").map(PathBuf::from);
    let Some(flights) = corpora
        .map(|c| c.join("flights.csv"))
        .filter(|p| p.is_file())
    else {
        let why = "no flights.csv: `bash scripts/test` fetches it and sets TAPEDECK_TEST_CORPORA";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("SKIPPED: {why}");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sql = "SELECT carrier, origin, count(*) AS n, sum(distance) AS d, min(dep_delay) AS lo, max(dep_delay) AS hi FROM {} GROUP BY carrier, origin ORDER BY carrier, origin";
    // Both backends: xz (the default) and zstd.
    let mut answers = Vec::new();
    for (name, args) in [
        ("zstd.tdpack", ["--level", "3", "--backend", "zstd"]),
        ("xz.tdpack", ["--level", "1", "--backend", "xz"]),
    ] {
        let pack = dir.path().join(name);
        let mut cmd = vec!["pack", s(&flights), s(&pack)];
        cmd.extend(args);
        ok(run(&cmd));
        let inspect = ok(run(&["inspect", s(&pack)]));
        assert!(inspect.contains(&format!("{} level", args[3])), "{inspect}");
        answers.push(ok(run(&[
            "query",
            s(&pack),
            &sql.replace("{}", "tape"),
            "--format",
            "csv",
        ])));
        let back = dir.path().join(format!("{name}.csv"));
        ok(run(&["unpack", s(&pack), s(&back)]));
        assert!(std::fs::read(&back).unwrap() == std::fs::read(&flights).unwrap());
    }
    assert_eq!(answers[0], answers[1]);
    let ours = answers.swap_remove(0);
    let script = format!(
        "import duckdb, sys\nrows = duckdb.sql(\"{}\").fetchall()\nprint('carrier,origin,n,d,lo,hi')\nfor r in rows: print(','.join('' if v is None else str(v) for v in r))",
        sql.replace(
            "{}",
            &format!("read_csv('{}', nullstr='NA')", flights.display())
        )
    );
    let o = Command::new(&python)
        .args(["-c", &script])
        .output()
        .unwrap();
    let theirs = ok(o);
    assert_eq!(ours.lines().count(), theirs.lines().count());
    assert!(ours.lines().count() > 30, "{ours}");
    assert_eq!(ours, theirs);
}

#[test]
fn a_log_tailed_into_a_tape_shows_its_ratio_and_segments() {
    // `tail -F app.log | tapedeck record --source stdin:lines --tape DIR`: the progress line
    // says what the tape costs against the bytes read, as at1's status line does.
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("logs");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tapedeck"))
        .args([
            "record",
            "--source",
            "stdin:lines",
            "--tape",
            s(&tape),
            "--progress",
            "always",
            "--flush-interval",
            "100ms",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    use std::io::Write;
    let started = std::time::Instant::now();
    let mut i = 0u64;
    while started.elapsed() < std::time::Duration::from_millis(1200) {
        for _ in 0..200 {
            writeln!(
                stdin,
                "2026-11-30T10:00:{:02}Z INFO request {i} served in {} ms",
                i % 60,
                i % 17
            )
            .unwrap();
            i += 1;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let line = err
        .lines()
        .rev()
        .find(|l| l.contains("ratio"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains(" segment"), "{line}");
    // The tape holds every line.
    let q = ok(run(&[
        "query",
        s(&tape),
        "SELECT count(*) AS n FROM tape",
        "--format",
        "csv",
    ]));
    assert_eq!(q, format!("n\n{i}\n"));
}

#[test]
fn a_killed_pack_leaves_no_pack_and_the_next_one_replaces_its_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("k.tdpack");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tapedeck"))
        .args([
            "pack",
            "-",
            s(&out),
            "--format",
            "csv",
            "--chunk-lines",
            "1000",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    use std::io::Write;
    writeln!(stdin, "i,v").unwrap();
    for i in 0..50_000 {
        writeln!(stdin, "{i},{}", i * 7).unwrap();
    }
    stdin.flush().unwrap();
    // Frames are being written: kill it mid-pack, its input still open.
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap();
    let _ = child.wait();
    drop(stdin);
    assert!(!out.exists(), "a killed pack left {}", out.display());
    // The next pack to the same name replaces what the killed one left.
    let csv = dir.path().join("k.csv");
    std::fs::write(&csv, "i,v\n1,2\n").unwrap();
    ok(run(&["pack", s(&csv), s(&out)]));
    assert!(ok_bytes(run(&["unpack", s(&out), "-"])) == b"i,v\n1,2\n");
    assert!(!dir.path().join("k.tdpack.partial").exists());
}
