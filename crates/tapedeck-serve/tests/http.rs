//! The page server over real HTTP: what it answers, what it refuses, and the live stream's
//! sequence numbers across a reconnect.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use tapedeck::record::{Row, Value};
use tapedeck::recorder::Recorder;
use tapedeck_serve::{ServeOptions, Server};

/// A tape of `n` rows, one every millisecond from 2026-01-01, with `value` = the row number
/// and a spike of 1e6 at row 500.
fn tape(dir: &Path, n: i64) {
    let mut rec = Recorder::builder().tape(dir).open().unwrap();
    let t0 = 1_767_225_600_000_000i64;
    rec.write_rows((0..n).map(|i| {
        Row::new()
            .with("time", Value::Timestamp(t0 + i * 1000))
            .with("value", if i == 500 { 1e6 } else { i as f64 })
            .with("device", "a")
    }))
    .unwrap();
    rec.finish().unwrap();
}

fn start(dir: &Path, options: ServeOptions) -> Server {
    Server::start(dir, options).unwrap()
}

fn loopback() -> ServeOptions {
    ServeOptions::listen(SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// One HTTP/1.1 exchange over a fresh connection: (status, lower-cased headers, body).
fn http(addr: SocketAddr, request: &str) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let mut body = Vec::new();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            let n = usize::from_str_radix(line.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        r.read_to_end(&mut body).unwrap();
    }
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn get(addr: SocketAddr, path: &str) -> (u16, Vec<(String, String)>, String) {
    http(
        addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            addr.port()
        ),
    )
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn the_page_and_its_files_come_with_security_headers_and_no_inline_script() {
    let dir = tempfile::tempdir().unwrap();
    tape(&dir.path().join("t"), 10);
    let server = start(&dir.path().join("t"), loopback());
    let addr = server.local_addr();
    let (status, h, body) = get(addr, "/");
    assert_eq!(status, 200);
    assert!(header(&h, "content-type").unwrap().starts_with("text/html"));
    let csp = header(&h, "content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(header(&h, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&h, "x-frame-options"), Some("DENY"));
    // Every script is a file of the server's: no inline code, nothing from elsewhere.
    for tag in body.split("<script").skip(1) {
        let tag = &tag[..tag.find('>').unwrap()];
        assert!(
            tag.contains("src=\"/"),
            "an inline or foreign script: <script{tag}>"
        );
    }
    assert!(
        !body.contains("http://") && !body.contains("https://"),
        "the page names another site"
    );
    for (path, kind) in [
        ("/app.js", "text/javascript"),
        ("/app.css", "text/css"),
        ("/icon.svg", "image/svg+xml"),
    ] {
        let (status, h, body) = get(addr, path);
        assert_eq!(status, 200, "{path}");
        assert!(
            header(&h, "content-type").unwrap().starts_with(kind),
            "{path}"
        );
        assert!(!body.is_empty());
        assert!(
            !body.contains("https://") || path == "/icon.svg",
            "{path} fetches from elsewhere"
        );
    }
}

#[test]
fn no_request_reaches_a_file_outside_the_page() {
    let dir = tempfile::tempdir().unwrap();
    tape(&dir.path().join("t"), 10);
    std::fs::write(dir.path().join("secret.txt"), "root:secret").unwrap();
    let server = start(&dir.path().join("t"), loopback());
    let addr = server.local_addr();
    for path in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/etc/passwd",
        "/assets/app.js",
        "/api/../../secret.txt",
        "/t/MANIFEST",
        "/MANIFEST",
        "/api/series/../../secret.txt",
    ] {
        let (status, h, body) = get(addr, path);
        assert!(status == 404 || status == 400, "{path}: {status}");
        assert!(!body.contains("root:"), "{path} read a file: {body}");
        assert!(
            header(&h, "content-security-policy").is_some(),
            "{path}: no CSP on the refusal"
        );
    }
}

#[test]
fn on_loopback_only_loopback_host_names_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    tape(&dir.path().join("t"), 10);
    let server = start(&dir.path().join("t"), loopback());
    let addr = server.local_addr();
    let req = |host: &str| {
        http(
            addr,
            &format!("GET /api/status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
    };
    assert_eq!(req(&format!("localhost:{}", addr.port())).0, 200);
    assert_eq!(req(&format!("127.0.0.1:{}", addr.port())).0, 200);
    let (status, _, body) = req(&format!("attacker.example:{}", addr.port()));
    assert_eq!(status, 403, "a rebound DNS name was answered");
    assert!(body.contains("127.0.0.1"), "{body}");
    // Another site's page (or another port's) cannot use the API; the page itself can.
    let from = |site: &str| {
        http(
            addr,
            &format!(
                "GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nSec-Fetch-Site: {site}\r\nConnection: close\r\n\r\n",
                addr.port()
            ),
        )
        .0
    };
    assert_eq!(from("cross-site"), 403);
    assert_eq!(from("same-site"), 403);
    assert_eq!(from("same-origin"), 200);
    assert_eq!(from("none"), 200);
}

#[test]
fn another_loopback_address_is_answered_by_its_own_name() {
    let dir = tempfile::tempdir().unwrap();
    tape(&dir.path().join("t"), 10);
    let server = start(
        &dir.path().join("t"),
        ServeOptions::listen(SocketAddr::from(([127, 0, 0, 2], 0))),
    );
    assert!(server.token().is_none());
    assert!(
        server.url().starts_with("http://127.0.0.2:"),
        "{}",
        server.url()
    );
    let addr = server.local_addr();
    let (status, _, body) = http(
        addr,
        &format!(
            "GET /api/status HTTP/1.1\r\nHost: 127.0.0.2:{}\r\nConnection: close\r\n\r\n",
            addr.port()
        ),
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_token_is_required_on_every_request_when_set_and_made_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    tape(&dir.path().join("t"), 10);
    let token = "0123456789abcdef-token";
    let server = start(&dir.path().join("t"), loopback().token(Some(token.into())));
    let addr = server.local_addr();
    assert!(server.url().ends_with(&format!("?token={token}")));
    let (status, _, body) = get(addr, "/api/status");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("token"), "{body}");
    assert_eq!(
        get(addr, "/api/status?token=wrong-token-wrong-token").0,
        403
    );
    let (status, h, _) = get(addr, &format!("/?token={token}"));
    assert_eq!(status, 200);
    let cookie = header(&h, "set-cookie").unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let with = |extra: &str| {
        http(
            addr,
            &format!("GET /api/status HTTP/1.1\r\nHost: x\r\n{extra}\r\nConnection: close\r\n\r\n"),
        )
        .0
    };
    let port = addr.port();
    assert!(
        cookie.starts_with(&format!("tapedeck_token_{port}=")),
        "{cookie}"
    );
    assert_eq!(with(&format!("Cookie: tapedeck_token_{port}={token}")), 200);
    assert_eq!(with(&format!("Authorization: Bearer {token}")), 200);
    assert_eq!(
        with(&format!(
            "Cookie: tapedeck_token_{port}=0123456789abcdef-tokem"
        )),
        403
    );
    // Another server's cookie on this host is not this one's.
    assert_eq!(with(&format!("Cookie: tapedeck_token_1={token}")), 401);
    drop(server);

    // Beyond loopback without one: one is made.
    let server = start(
        &dir.path().join("t"),
        ServeOptions::listen(SocketAddr::from(([0, 0, 0, 0], 0))),
    );
    let made = server.token().unwrap().to_string();
    assert_eq!(made.len(), 32);
    let addr = SocketAddr::from(([127, 0, 0, 1], server.local_addr().port()));
    assert_eq!(get(addr, "/").0, 401);
    assert_eq!(get(addr, &format!("/?token={made}")).0, 200);

    // A short one is refused before anything listens.
    let e = Server::start(
        &dir.path().join("t"),
        loopback().token(Some("short".into())),
    )
    .unwrap_err();
    assert!(e.to_string().contains("at least 16"), "{e}");
}

#[test]
fn not_a_tape_and_a_port_in_use_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let e = Server::start(&dir.path().join("nothing"), loopback()).unwrap_err();
    assert!(e.to_string().contains("no such tape directory"), "{e}");
    tape(&dir.path().join("t"), 10);
    let first = start(&dir.path().join("t"), loopback());
    let e = Server::start(
        &dir.path().join("t"),
        ServeOptions::listen(first.local_addr()),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("cannot listen on") && e.to_string().contains("--listen"),
        "{e}"
    );
}

#[test]
fn the_status_and_the_series_describe_the_tape_and_keep_the_spike() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t");
    tape(&t, 2000);
    let server = start(&t, loopback());
    let addr = server.local_addr();
    let (status, _, body) = get(addr, "/api/status");
    assert_eq!(status, 200, "{body}");
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["acknowledged"], 2000);
    assert_eq!(s["recording"], false);
    assert!(s["tape_bytes"].as_u64().unwrap() > 0);
    assert!(s["segments"].as_u64().unwrap() >= 1);
    assert!(s["disk_free"].as_u64().unwrap() > 0);
    // 2000 rows over 2 s into 100 buckets of 20 ms (20 rows each): the spike stays a maximum.
    let (status, _, body) = get(addr, "/api/series?width=100");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["rows"], 2000);
    assert_eq!(v["end_seq"], 2000);
    let cols = v["columns"].as_array().unwrap();
    assert_eq!(cols.len(), 1, "only `value` is numeric: {cols:?}");
    let max: Vec<f64> = serde_json::from_value(cols[0]["max"].clone()).unwrap();
    assert!(max.len() <= 101 && max.len() >= 99, "{} buckets", max.len());
    // Exactly one bucket holds the spike; its neighbours hold their own rows' values.
    let spiked: Vec<usize> = (0..max.len()).filter(|i| max[*i] == 1e6).collect();
    assert_eq!(spiked.len(), 1, "{max:?}");
    assert!(max[spiked[0] + 1] < 2000.0 && max[spiked[0] - 1] < 2000.0);
    let mins: Vec<f64> = serde_json::from_value(cols[0]["min"].clone()).unwrap();
    assert_eq!(mins[0], 0.0);
    // A window: the last half second only.
    let (_, _, body) = get(addr, "/api/series?window=0.5&width=50");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["rows"], 500, "{body}");
}

#[test]
fn bad_parameters_are_refused_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    tape(&dir.path().join("t"), 10);
    let server = start(&dir.path().join("t"), loopback());
    let addr = server.local_addr();
    for (path, says) in [
        ("/api/series?width=abc", "width=abc"),
        ("/api/series?width=0", "width"),
        ("/api/series?width=99999", "width"),
        ("/api/series?window=-3", "window"),
        ("/api/series?from=5&to=3", "before"),
        ("/api/series?from=x", "from=x"),
        ("/api/live?bucket=0", "bucket"),
        ("/api/live?since=-1", "since=-1"),
    ] {
        let (status, _, body) = get(addr, path);
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(says), "{path}: {body}");
    }
    let (status, _, body) = http(
        addr,
        &format!(
            "GET /api/live HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nLast-Event-ID: soon\r\nConnection: close\r\n\r\n",
            addr.port()
        ),
    );
    assert_eq!(status, 400, "{body}");
}

/// Reads Server-Sent Events until `enough` says so; returns the `data` events' JSON.
fn live(
    addr: SocketAddr,
    path: &str,
    last_id: Option<u64>,
    enough: &dyn Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let last = last_id
        .map(|i| format!("Last-Event-ID: {i}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{last}Connection: close\r\n\r\n",
            addr.port()
        )
        .as_bytes(),
    )
    .unwrap();
    let r = BufReader::new(s);
    let mut out = Vec::new();
    let mut event = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    for line in r.lines() {
        let line = line.unwrap();
        if let Some(e) = line.strip_prefix("event: ") {
            event = e.to_string();
        } else if let Some(d) = line.strip_prefix("data: ")
            && event == "data"
        {
            out.push(serde_json::from_str(d).unwrap());
            if enough(&out) {
                return out;
            }
        }
        assert!(Instant::now() < deadline, "no end in sight: {out:?}");
    }
    out
}

#[test]
fn the_live_stream_follows_a_recording_and_a_reconnect_continues_without_gap_or_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t");
    tape(&t, 100);
    let server = start(&t, loopback());
    let addr = server.local_addr();
    // Another writer appends while the page watches.
    let writer = {
        let t = t.clone();
        std::thread::spawn(move || {
            let mut rec = Recorder::builder().tape(&t).open().unwrap();
            let t0 = 1_767_225_700_000_000i64;
            for k in 0..20i64 {
                rec.write_rows((0..50).map(|i| {
                    Row::new()
                        .with("time", Value::Timestamp(t0 + (k * 50 + i) * 1000))
                        .with("value", (k * 50 + i) as f64)
                        .with("device", "a")
                }))
                .unwrap();
                rec.flush().unwrap();
                rec.sync().unwrap();
                std::thread::sleep(Duration::from_millis(30));
            }
            rec.finish().unwrap();
        })
    };
    let events = live(addr, "/api/live?since=0&bucket=1000", None, &|e| {
        e.last().is_some_and(|d| d["to"].as_u64() >= Some(600))
    });
    let mut at = 0;
    for e in &events {
        assert_eq!(
            e["from"].as_u64(),
            Some(at),
            "a gap or a repeat: {events:?}"
        );
        at = e["to"].as_u64().unwrap();
    }
    writer.join().unwrap();
    // The browser's reconnect: Last-Event-ID wins over `since`, and the next event starts there.
    let again = live(addr, "/api/live?since=0&bucket=1000", Some(at), &|e| {
        e.last().is_some_and(|d| d["to"].as_u64() >= Some(1100))
    });
    assert_eq!(again[0]["from"].as_u64(), Some(at));
    assert_eq!(again.last().unwrap()["to"], 1100);
}

/// A live stream opened and left open: the connection and its status line's first 12 bytes.
fn open_stream(addr: SocketAddr) -> (TcpStream, [u8; 12]) {
    let mut s = TcpStream::connect(addr).unwrap();
    let request = format!(
        "GET /api/live HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        addr.port()
    );
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).unwrap();
    (s, buf)
}

#[test]
fn live_streams_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    tape(&dir.path().join("t"), 10);
    let server = start(&dir.path().join("t"), loopback().max_clients(1));
    let addr = server.local_addr();
    let (first, status) = open_stream(addr);
    assert_eq!(&status, b"HTTP/1.1 200");
    let (status, _, body) = get(addr, "/api/live");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("--max-clients"), "{body}");
    drop(first);
    // Its place is free again once it closes.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if &open_stream(addr).1 == b"HTTP/1.1 200" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed stream's place was never freed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_metadata_is_null_without_a_journal() {
    let dir = tempfile::tempdir().unwrap();
    tape(&dir.path().join("t"), 10);
    let server = start(&dir.path().join("t"), loopback());
    let (status, _, body) = get(server.local_addr(), "/api/meta");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v, serde_json::json!({ "value": null, "history": [] }));
}

#[cfg(feature = "sql")]
#[test]
fn the_sql_box_answers_and_refuses_anything_that_writes() {
    let dir = tempfile::tempdir().unwrap();
    tape(&dir.path().join("t"), 2000);
    let server = start(&dir.path().join("t"), loopback());
    let addr = server.local_addr();
    let post = |sql: &str| {
        let body = serde_json::json!({ "sql": sql }).to_string();
        http(
            addr,
            &format!(
                "POST /api/sql HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                addr.port(),
                body.len()
            ),
        )
    };
    let (status, _, body) = post("SELECT count(*) AS n, max(value) AS top FROM tape");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["rows"][0]["n"], 2000);
    assert_eq!(v["rows"][0]["top"], 1e6);
    assert_eq!(v["columns"], serde_json::json!(["n", "top"]));
    let (_, _, body) = post("SELECT value FROM tape");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["rows"].as_array().unwrap().len(), 1000);
    assert_eq!(v["truncated"], true);
    let out = dir.path().join("copied.csv");
    for sql in [
        format!("COPY (SELECT * FROM tape) TO '{}'", out.display()),
        format!(
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '{}'",
            dir.path().join("secret").display()
        ),
        "SET datafusion.execution.batch_size = 1".to_string(),
        "SELEC nonsense".to_string(),
    ] {
        let (status, _, body) = post(&sql);
        assert_eq!(status, 400, "{sql}: {body}");
        assert!(body.contains("error"), "{body}");
    }
    assert!(!out.exists(), "a query wrote a file");
    assert_eq!(post("").0, 400);
    // Only JSON: what another site's form or `no-cors` fetch could send is refused.
    let body = r#"{"sql": "SELECT 1"}"#;
    let (status, _, text) = http(
        addr,
        &format!(
            "POST /api/sql HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            addr.port(),
            body.len()
        ),
    );
    assert_eq!(status, 415, "{text}");
}
