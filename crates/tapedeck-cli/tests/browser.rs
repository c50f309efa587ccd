//! `tapedeck serve` in a real browser: headless Chromium driven over WebDriver (Debian's
//! `chromium` and `chromium-driver`, which `.ci/run` installs). While `record` writes a DAQ
//! tape, the page loads without a console error, its plots advance, a delivery stopped on
//! purpose (SIGSTOP) turns red, a restart of the server is a reconnect that resumes without a
//! gap, and the SQL box answers. A screenshot is saved (`$TAPEDECK_ARTIFACTS`, default
//! `target/artifacts/`).
//!
//! Without Chromium the test says so and passes; under `CI=true` that is a failure.

#![cfg(feature = "serve")]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const DRIVER: &str = "/usr/bin/chromedriver";

/// A child process killed when dropped.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tapedeck(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tapedeck"));
    c.args(args).stdin(Stdio::null());
    c
}

/// `tapedeck serve DIR --listen 127.0.0.1:PORT`, returned once it printed its address.
fn serve(dir: &Path, port: u16) -> (Proc, String) {
    let listen = format!("127.0.0.1:{port}");
    let mut child = tapedeck(&["serve", dir.to_str().unwrap(), "--listen", &listen])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("http://127.0.0.1:"),
        "serve printed {line:?}"
    );
    (Proc(child), line.trim().to_string())
}

/// A W3C WebDriver session on chromedriver.
struct Browser {
    agent: ureq::Agent,
    base: String,
    _driver: Proc,
}

impl Browser {
    fn start() -> Browser {
        let port = free_port();
        let driver = Proc(
            Command::new(DRIVER)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let root = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while agent.get(format!("{root}/status")).call().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not answer");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": { "browser": "ALL" },
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1700"]
            }
        }}});
        let v = Self::send(&agent, "POST", &format!("{root}/session"), Some(&caps));
        let id = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        Browser {
            agent,
            base: format!("{root}/session/{id}"),
            _driver: driver,
        }
    }

    fn send(agent: &ureq::Agent, method: &str, url: &str, body: Option<&Value>) -> Value {
        let mut resp = match method {
            "GET" => agent.get(url).call(),
            "DELETE" => agent.delete(url).call(),
            _ => agent
                .post(url)
                .header("content-type", "application/json")
                .send(body.unwrap_or(&json!({})).to_string()),
        }
        .unwrap();
        let text = resp.body_mut().read_to_string().unwrap();
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        Self::send(
            &self.agent,
            method,
            &format!("{}{path}", self.base),
            body.as_ref(),
        )
    }

    fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body) in the page; its return value.
    fn js(&self, script: &str) -> Value {
        let v = self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        );
        if v["value"].get("error").is_some() {
            panic!("script failed: {v}");
        }
        v["value"].clone()
    }

    /// Waits until `script` returns true; the last value in the panic otherwise.
    fn wait_for(&self, what: &str, script: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let v = self.js(script);
            if v == json!(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: still {v} after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The browser console's entries since the last call.
    fn console(&self) -> Vec<Value> {
        let v = self.cmd("POST", "/se/log", Some(json!({ "type": "browser" })));
        v["value"].as_array().cloned().unwrap_or_default()
    }

    fn screenshot(&self, path: &Path) {
        let v = self.cmd("GET", "/screenshot", None);
        let png = base64(v["value"].as_str().unwrap());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.agent.delete(&self.base).call();
    }
}

fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= u32::from(value(*c)) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

fn artifacts() -> PathBuf {
    std::env::var_os("TAPEDECK_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/artifacts"))
}

#[test]
fn the_dashboard_in_headless_chromium() {
    if !Path::new(CHROMIUM).exists() || !Path::new(DRIVER).exists() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "CI=true but {CHROMIUM} or {DRIVER} is missing (apt-get install chromium chromium-driver)"
            );
        }
        eprintln!(
            "skipped: {CHROMIUM} or {DRIVER} is missing (apt-get install chromium chromium-driver)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("tape");
    let t = tape.to_str().unwrap();
    // A DAQ recording at real pace, one sink fed by the recorder.
    let ok_csv = dir.path().join("ok.csv");
    let _recorder = Proc(
        tapedeck(&[
            "record",
            "--source",
            "sim:daq?channels=4&rate=2000&pace=real",
            "--tape",
            t,
            "--sink",
            &format!("csv:{}?accept_blocks=true", ok_csv.display()),
            "--flush-interval",
            "200ms",
            "--meta",
            "operator=ana",
            "--meta",
            "gain.ai0=2.5",
            "--progress",
            "never",
            "--quiet",
            "--duration",
            "300s",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !tape.join("ACKED").exists() {
        assert!(Instant::now() < deadline, "the recording did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A second delivery beside the recorder: the one that will be stopped on purpose.
    let slow_csv = dir.path().join("slow.csv");
    let slow = Proc(
        tapedeck(&[
            "deliver",
            t,
            "--sink",
            &format!("csv:{}?accept_blocks=true", slow_csv.display()),
            "--progress",
            "never",
            "--quiet",
        ])
        .spawn()
        .unwrap(),
    );
    let port = free_port();
    let (server, url) = serve(&tape, port);

    let browser = Browser::start();
    browser.go(&url);
    browser.wait_for(
        "the page's first data",
        "return document.body.dataset.ready === '1' && document.querySelectorAll('.plot').length === 4",
        Duration::from_secs(30),
    );
    browser.wait_for(
        "both sinks listed",
        "return document.querySelectorAll('#sinks tbody tr').length === 2",
        Duration::from_secs(20),
    );
    let errors: Vec<Value> = browser
        .console()
        .into_iter()
        .filter(|e| e["level"] == "SEVERE" || e["level"] == "WARNING")
        .collect();
    assert!(errors.is_empty(), "console errors on load: {errors:?}");

    // The plots advance while the recording runs.
    let before = browser.js("return window.tapedeck.lastSeq");
    let bucket_before =
        browser.js("return Number(document.querySelector('.plot').dataset.lastBucket)");
    browser.wait_for(
        "the plots advancing",
        &format!(
            "return window.tapedeck.lastSeq > {before} && \
             Number(document.querySelector('.plot').dataset.lastBucket) > {bucket_before} && \
             Number(document.querySelector('.plot').dataset.points) > 10"
        ),
        Duration::from_secs(20),
    );
    // The metadata the recorder set is shown.
    browser.wait_for(
        "the run metadata",
        "return document.querySelector('#meta').textContent.includes('operator') && \
         document.querySelector('#meta').textContent.includes('ana')",
        Duration::from_secs(15),
    );

    // A delivery stopped on purpose turns red; the recorder's own stays clear. First both keep
    // up (so red means the stop, not a slow start).
    browser.wait_for(
        "both sinks keeping up",
        "const rows = [...document.querySelectorAll('#sinks tbody tr')]; \
         return rows.length === 2 && rows.every(r => !r.classList.contains('behind') && r.dataset.state === 'delivering')",
        Duration::from_secs(30),
    );
    let pid = slow.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    browser.wait_for(
        "the stopped sink turning red",
        "const rows = [...document.querySelectorAll('#sinks tbody tr')]; \
         const slow = rows.find(r => r.dataset.sink.includes('slow.csv')); \
         const ok = rows.find(r => r.dataset.sink.includes('ok.csv')); \
         return !!slow && slow.classList.contains('behind') && !!ok && !ok.classList.contains('behind')",
        Duration::from_secs(30),
    );

    // The SQL box answers (as a table, and a plot of the numeric columns).
    browser.js(
        "document.getElementById('sql').value = \
         \"SELECT date_bin(INTERVAL '1 second', t_utc) AS t, avg(ai0) AS ai0 FROM tape GROUP BY 1 ORDER BY 1\"; \
         document.getElementById('run').click(); return true",
    );
    browser.wait_for(
        "the SQL answer",
        "const t = document.getElementById('sqltable'); \
         return !!t && t.querySelectorAll('tr').length > 2 && !document.getElementById('sqlplot').hidden",
        Duration::from_secs(60),
    );
    browser.screenshot(&artifacts().join("dashboard.png"));

    // The server goes away and comes back on the same port: the page's stream reconnects with
    // the last sequence number it had and continues without a gap.
    let seq_at_kill: u64 = browser
        .js("return window.tapedeck.lastSeq")
        .as_u64()
        .unwrap();
    drop(server);
    std::thread::sleep(Duration::from_millis(1500));
    let (_server, _) = serve(&tape, port);
    browser.wait_for(
        "the stream resuming after a reconnect",
        &format!(
            "return window.tapedeck.reconnects > 0 && window.tapedeck.lastSeq > {seq_at_kill} + 1000"
        ),
        Duration::from_secs(30),
    );
    let gaps = browser.js("return window.tapedeck.gaps");
    assert_eq!(gaps, json!(0), "live messages did not follow each other");
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
}
