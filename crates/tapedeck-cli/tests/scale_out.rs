//! Scale-out with the real binary and SIGKILLs.
//!
//! - NATS JetStream: three edge recorders publish their tapes into one stream, one central
//!   recorder consumes it into its tape; edges and the central recorder are killed at random
//!   moments and started again. At the end every row of every edge tape is on the central tape
//!   exactly once (by `_origin_tape` and `_origin_seq`), and the stream holds each edge's rows
//!   once and in order.
//! - MQTT: a recorder ingesting QoS 1 messages is killed mid-stream and started again: no
//!   message is lost (each is acknowledged to the broker only after the tape's fsync).
//!
//! The servers are `TAPEDECK_TEST_NATS` (default `127.0.0.1:4222`) and `TAPEDECK_TEST_MQTT`
//! (default `127.0.0.1:1883`); `.ci/run` starts them. Without one a test prints why and skips;
//! under `CI=true` a missing server fails it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;

#[path = "../../tapedeck/tests/common/nats_server.rs"]
mod nats_server;

fn tapedeck() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tapedeck"))
}

fn server(var: &str, default: &str) -> Option<String> {
    let addr = std::env::var(var).unwrap_or_else(|_| default.into());
    match std::net::TcpStream::connect_timeout(
        &addr.parse().expect("TAPEDECK_TEST_NATS is host:port"),
        Duration::from_secs(2),
    ) {
        Ok(_) => Some(addr),
        Err(e) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true but no server at {addr} ({var}): {e}");
            }
            eprintln!("skipping: no server at {addr} ({e}); set {var}");
            None
        }
    }
}

/// A small pseudo-random sequence (the moments of the kills), seeded from the clock and printed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn kill(mut child: Child) {
    // SIGKILL: no clean-up of any kind.
    let _ = child.kill();
    let _ = child.wait();
}

fn finish(child: Child, what: &str) {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Rows on a tape, by reading it.
fn tape_rows(tape: &Path) -> u64 {
    let mut r = tapedeck::tape::TapeReader::open(tape, tapedeck::tape::StartAt::Start).unwrap();
    let mut n = 0;
    while let Some((_, b)) = r.next_batch().unwrap() {
        n += b.num_rows() as u64;
    }
    n
}

fn tape_id(tape: &Path) -> String {
    std::fs::read_to_string(tape.join("TAPEID"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn three_edges_and_a_central_recorder_keep_every_row_once_through_kills() {
    let Some(addr) = server("TAPEDECK_TEST_NATS", "127.0.0.1:4222") else {
        return;
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("seed {seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let stream = format!("SCALE{}", std::process::id());
    let prefix = format!("s{}", std::process::id());
    let edge_sink = |i: usize| {
        format!(
            "nats://{addr}/{prefix}.edge{i}?stream={stream}&create_stream=true&storage=memory&subjects={prefix}.>"
        )
    };
    let edge_run = |i: usize, rows: u64| {
        tapedeck()
            .args(["record", "--source"])
            .arg(format!("sim:alicat?n={rows}&rate=20000"))
            .arg("--tape")
            .arg(dir.path().join(format!("edge{i}")))
            .args(["--progress", "never", "--sink"])
            .arg(edge_sink(i))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let central = dir.path().join("central");
    let central_run = || {
        tapedeck()
            .args(["record", "--source"])
            .arg(format!(
                "nats://{addr}/{prefix}.>?stream={stream}&durable=central&ack_wait=2s&stop_after_idle=6s"
            ))
            .arg("--tape")
            .arg(&central)
            .args(["--progress", "never", "--flush-interval", "100ms"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // The first edge makes the stream; then everyone runs at once.
    finish(edge_run(0, 2000), "edge0's first run");
    let mut edges: Vec<Option<Child>> = (0..3).map(|i| Some(edge_run(i, 30_000))).collect();
    let mut consumer = central_run();
    // Kill each edge once at a random moment of its 1.5 s run, and start it again (it resumes
    // its tape and its delivery, and records more).
    let began = Instant::now();
    let mut order: Vec<usize> = (0..3).collect();
    order.sort_by_key(|_| rng.below(100));
    for &i in &order {
        std::thread::sleep(Duration::from_millis(100 + rng.below(400)));
        if let Some(child) = edges[i].take() {
            kill(child);
        }
        edges[i] = Some(edge_run(i, 10_000));
    }
    // The central recorder killed mid-stream, then started again.
    std::thread::sleep(Duration::from_millis(200 + rng.below(600)));
    kill(consumer);
    consumer = central_run();
    std::thread::sleep(Duration::from_millis(rng.below(800)));
    kill(consumer);
    for (i, e) in edges.into_iter().enumerate() {
        if let Some(e) = e {
            finish(e, &format!("edge{i}"));
        }
    }
    // The last central run drains the stream and ends when it is idle.
    finish(central_run(), "the central recorder");
    println!("runs done after {:?}", began.elapsed());

    // Every edge row once on the central tape.
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..3 {
        let edge = dir.path().join(format!("edge{i}"));
        expected.insert(tape_id(&edge), tape_rows(&edge));
    }
    let mut seen: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    let mut rows = 0u64;
    let mut r = tapedeck::tape::TapeReader::open(&central, tapedeck::tape::StartAt::Start).unwrap();
    while let Some((_, b)) = r.next_batch().unwrap() {
        let tapes = b.column_by_name("_origin_tape").unwrap().as_string::<i32>();
        let seqs = b
            .column_by_name("_origin_seq")
            .unwrap()
            .as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            assert!(tapes.is_valid(i) && seqs.is_valid(i));
            let fresh = seen
                .entry(tapes.value(i).to_string())
                .or_default()
                .insert(seqs.value(i));
            assert!(
                fresh,
                "row {} of tape {} twice",
                seqs.value(i),
                tapes.value(i)
            );
            rows += 1;
        }
    }
    // Each edge's rows in the stream, once and in order.
    let client = nats_server::Client::connect(&addr).unwrap();
    let mut in_stream: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..3 {
        let mut next = 0;
        for m in client.messages(&stream, &format!("{prefix}.edge{i}")) {
            assert_eq!(
                m.number("Tapedeck-Seq"),
                next,
                "edge{i}: message {}",
                m.stream_seq
            );
            next += m.number("Tapedeck-Rows");
            in_stream.insert(m.headers["Tapedeck-Tape"].clone(), next);
        }
    }
    println!("rows per edge tape: {expected:?}; in the stream: {in_stream:?}");
    for (tape, n) in &expected {
        assert_eq!(
            in_stream.get(tape),
            Some(n),
            "edge tape {tape} in the stream"
        );
        let got = seen.get(tape).map_or(0, BTreeSet::len) as u64;
        assert_eq!(
            got, *n,
            "edge tape {tape}: {got} of {n} rows on the central tape"
        );
        assert_eq!(seen[tape].iter().next_back().copied(), Some(*n as i64 - 1));
    }
    assert_eq!(rows, expected.values().sum::<u64>());
    let v = tapedeck().arg("verify").arg(&central).output().unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    client.drop_stream(&stream);
}

#[test]
fn an_mqtt_recorder_killed_mid_stream_loses_no_message() {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
    let Some(addr) = server("TAPEDECK_TEST_MQTT", "127.0.0.1:1883") else {
        return;
    };
    let (host, port) = addr.rsplit_once(':').unwrap();
    let port: u16 = port.parse().unwrap();
    let id = format!(
        "kill-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    );
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("seed {seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("tape");
    let run = |idle: Option<&str>| {
        let mut uri = format!("mqtt://{addr}/{id}/#?client_id={id}");
        if let Some(idle) = idle {
            uri.push_str(&format!("&stop_after_idle={idle}"));
        }
        tapedeck()
            .args(["record", "--source", &uri, "--tape"])
            .arg(&tape)
            .args(["--progress", "never", "--flush-interval", "50ms"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // The session and its subscription; then 3,000 messages published over about a second,
    // while a recorder takes them, is killed at a random moment and is started again at once
    // (the broker keeps what comes meanwhile for the session).
    finish(run(Some("300ms")), "the first mqtt run");
    let child = run(None);
    let mut o = MqttOptions::new(format!("{id}-pub"), host, port);
    o.set_keep_alive(Duration::from_secs(10));
    let (client, mut conn) = Client::new(o, 4096);
    let topic = format!("{id}/dev");
    let sender = std::thread::spawn(move || {
        for i in 0..3000 {
            client
                .publish(
                    topic.as_str(),
                    QoS::AtLeastOnce,
                    false,
                    format!("{{\"n\": {i}}}"),
                )
                .unwrap();
            if i % 10 == 0 {
                std::thread::sleep(Duration::from_millis(3));
            }
        }
        client
    });
    let acks = std::thread::spawn(move || {
        let mut acked = 0;
        while acked < 3000 {
            match conn.recv_timeout(Duration::from_secs(10)) {
                Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
                Ok(Ok(_)) => {}
                other => panic!("publishing: {other:?}"),
            }
        }
    });
    std::thread::sleep(Duration::from_millis(100 + rng.below(500)));
    kill(child);
    let again = run(Some("1s"));
    acks.join().unwrap();
    drop(sender.join().unwrap());
    finish(again, "the mqtt run after the kill");
    let mut seen = BTreeMap::<i64, u32>::new();
    let mut r = tapedeck::tape::TapeReader::open(&tape, tapedeck::tape::StartAt::Start).unwrap();
    while let Some((_, b)) = r.next_batch().unwrap() {
        let n = b.column_by_name("n").unwrap().as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            *seen.entry(n.value(i)).or_default() += 1;
        }
    }
    let twice = seen.values().filter(|c| **c > 1).count();
    println!(
        "3000 messages, {} on the tape, {twice} twice (acknowledged by the tape just before the kill)",
        seen.len()
    );
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (0..3000).collect::<Vec<i64>>()
    );
    // At least once: at most the rows of the commits the tape acknowledged just before the
    // kill whose PUBACKs had not gone out yet (the default --batch-size is 64 rows; a few
    // commits may be in that window).
    assert!(
        twice <= 256,
        "{twice} messages twice: more than four commits' worth"
    );
}
