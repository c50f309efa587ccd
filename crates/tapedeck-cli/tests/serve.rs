//! `tapedeck serve` and `record --serve` as commands: where they say the page is, what they
//! refuse, and that the page of a recording lives exactly as long as the recording. (The page
//! itself in a browser: `browser.rs`; the server's HTTP rules: crates/tapedeck-serve/tests.)

#![cfg(feature = "serve")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ok, run};

fn get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[test]
fn record_serve_shows_the_recording_while_it_runs_and_stops_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("tape");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tapedeck"))
        .args([
            "record",
            "--source",
            "sim:alicat?rate=500",
            "--tape",
            tape.to_str().unwrap(),
            "--duration",
            "4s",
            "--serve",
            "127.0.0.1:0",
            "--summary-json",
            "-",
            "--quiet",
            "--progress",
            "never",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .rsplit("http://")
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    assert!(
        line.starts_with("serving ") && addr.starts_with("127.0.0.1:"),
        "{line}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let (code, body) = get(&addr, "/api/status").unwrap();
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["acknowledged"].as_u64() > Some(0) {
            break v;
        }
        assert!(Instant::now() < deadline, "nothing acknowledged: {v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status["recording"], true, "{status}");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    // stdout holds the summary alone (the address went to stderr).
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(summary["rows"].as_u64() > Some(0), "{summary}");
    assert!(get(&addr, "/").is_err(), "the page outlived the recording");
}

#[test]
fn serve_refuses_what_it_cannot_serve_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(&[
        "serve",
        dir.path().join("none").to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no such tape directory"));
    let tape = dir.path().join("tape");
    ok(run(&[
        "record",
        "--source",
        "sim:alicat?n=10",
        "--tape",
        tape.to_str().unwrap(),
        "--quiet",
    ]));
    let o = run(&[
        "serve",
        tape.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--token",
        "short",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("at least 16"));
    let o = run(&["serve", tape.to_str().unwrap(), "--listen", "nonsense"]);
    assert_eq!(o.status.code(), Some(2));
    // --serve needs a tape to show.
    let o = run(&[
        "record",
        "--source",
        "sim:alicat?n=10",
        "--sink",
        "null:",
        "--serve",
        "127.0.0.1:0",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--tape"));
    let help = ok(run(&["serve", "--help"])).to_lowercase();
    assert!(
        help.contains("token") && help.contains("--listen") && help.contains("read-only"),
        "{help}"
    );
}
