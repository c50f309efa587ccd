//! The `mqtt://` source against the machine's MQTT broker (`TAPEDECK_TEST_MQTT`, default
//! `127.0.0.1:1883`; `.ci/run` starts Mosquitto). Without a broker the tests print why and skip;
//! under `CI=true` a missing broker fails them. Each test uses topics and client ids of its own.
#![cfg(feature = "mqtt")]

use std::path::Path;
use std::time::Duration;

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use tapedeck::pipe::PipeOptions;
use tapedeck::recorder::Recorder;
use tapedeck::tape::{StartAt, TapeReader};

/// The broker, or `None` (with the reason printed) when there is none outside CI.
fn broker(test: &str) -> Option<(String, u16)> {
    let addr = std::env::var("TAPEDECK_TEST_MQTT").unwrap_or_else(|_| "127.0.0.1:1883".into());
    match std::net::TcpStream::connect_timeout(
        &addr.parse().expect("TAPEDECK_TEST_MQTT is host:port"),
        Duration::from_secs(2),
    ) {
        Ok(_) => {
            let (h, p) = addr.rsplit_once(':').unwrap();
            Some((h.to_string(), p.parse().unwrap()))
        }
        Err(e) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: CI=true but no MQTT broker at {addr}: {e}");
            }
            eprintln!("skipping {test}: no MQTT broker at {addr} ({e}); set TAPEDECK_TEST_MQTT");
            None
        }
    }
}

fn unique(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{test}-{}-{nanos}", std::process::id())
}

/// Publishes `{"n": i, "flow": i / 2}` for each `i` with QoS 1 and waits for every PUBACK.
fn publish(host: &str, port: u16, topic: &str, range: std::ops::Range<i64>) {
    let mut o = MqttOptions::new(unique("pub"), host, port);
    o.set_keep_alive(Duration::from_secs(10));
    let (client, mut conn) = Client::new(o, 4096);
    let n = range.clone().count();
    let t = topic.to_string();
    let sender = std::thread::spawn(move || {
        for i in range {
            let payload = format!("{{\"n\": {i}, \"flow\": {}}}", i as f64 / 2.0);
            client
                .publish(t.as_str(), QoS::AtLeastOnce, false, payload)
                .unwrap();
        }
        client
    });
    let mut acked = 0;
    while acked < n {
        match conn.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            other => panic!("publishing: {other:?}"),
        }
    }
    let client = sender.join().unwrap();
    client.disconnect().unwrap();
    let _ = conn.recv_timeout(Duration::from_millis(100));
}

fn record(tape: &Path, source: &str) -> u64 {
    let rec = Recorder::builder().tape(tape).open().unwrap();
    let options = PipeOptions {
        flush_interval: Duration::from_millis(50),
        ..PipeOptions::default()
    };
    let (report, _) = rec.run(tapedeck::source::open(source).unwrap(), &options, &|| false);
    assert!(report.error.is_none(), "{source}: {:?}", report.error);
    report.summary.rows
}

/// Every `n` on the tape, in order, and the topics.
fn tape_ns(tape: &Path) -> (Vec<i64>, Vec<String>) {
    let mut r = TapeReader::open(tape, StartAt::Start).unwrap();
    let (mut ns, mut topics) = (Vec::new(), Vec::new());
    while let Some((_, b)) = r.next_batch().unwrap() {
        let n = b.column_by_name("n").unwrap().as_primitive::<Int64Type>();
        let t = b.column_by_name("_topic").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            ns.push(n.value(i));
            topics.push(t.value(i).to_string());
            assert!(n.is_valid(i));
        }
    }
    (ns, topics)
}

#[test]
fn messages_become_rows_with_their_topic_and_the_session_keeps_what_came_meanwhile() {
    let Some((host, port)) = broker("mqtt_rows") else {
        return;
    };
    let prefix = unique("td");
    let client_id = unique("rec");
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("tape");
    let uri =
        format!("mqtt://{host}:{port}/{prefix}/#?client_id={client_id}&stop_after_idle=700ms");
    // The first run makes the persistent session and its subscription.
    assert_eq!(record(&tape, &uri), 0);
    // Published while no recorder runs: kept by the broker for the session.
    publish(&host, port, &format!("{prefix}/flow/a"), 0..150);
    publish(&host, port, &format!("{prefix}/flow/b"), 150..300);
    assert_eq!(record(&tape, &uri), 300);
    // Acknowledged: the next run gets only what is new.
    publish(&host, port, &format!("{prefix}/flow/a"), 300..400);
    assert_eq!(record(&tape, &uri), 100);
    let (ns, topics) = tape_ns(&tape);
    let mut sorted = ns.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..400).collect::<Vec<i64>>());
    assert!(
        topics[..150]
            .iter()
            .all(|t| *t == format!("{prefix}/flow/a"))
    );
    assert!(topics.iter().all(|t| t.starts_with(&prefix)));
}

#[test]
fn bad_uris_and_payloads_say_what_is_wrong() {
    for (uri, says) in [
        ("mqtt://127.0.0.1:1883", "no topic filter"),
        ("mqtt://127.0.0.1:1883/a/#/b", "whole last level"),
        ("mqtt://127.0.0.1:1883/a/b+", "whole level"),
        ("mqtt://127.0.0.1:1883/a?qos=2", "0, 1"),
        ("mqtt://127.0.0.1:1883/a?topic=x", "topic"),
    ] {
        let e = tapedeck::source::open(uri)
            .err()
            .unwrap_or_else(|| panic!("{uri} opened"));
        assert!(e.to_string().contains(says), "{uri}: {e}");
    }
    let Some((host, port)) = broker("mqtt_bad_payload") else {
        return;
    };
    let prefix = unique("bad");
    let client_id = unique("rec");
    let dir = tempfile::tempdir().unwrap();
    let uri = |extra: &str| {
        format!(
            "mqtt://{host}:{port}/{prefix}/#?client_id={client_id}&stop_after_idle=700ms{extra}"
        )
    };
    assert_eq!(record(&dir.path().join("t1"), &uri("")), 0);
    publish(&host, port, &format!("{prefix}/x"), 0..3);
    // A payload that is not a JSON object.
    let mut o = MqttOptions::new(unique("pub"), host.as_str(), port);
    o.set_keep_alive(Duration::from_secs(10));
    let (client, mut conn) = Client::new(o, 16);
    client
        .publish(format!("{prefix}/x"), QoS::AtLeastOnce, false, "not json")
        .unwrap();
    loop {
        if let Ok(Ok(Event::Incoming(Packet::PubAck(_)))) =
            conn.recv_timeout(Duration::from_secs(5))
        {
            break;
        }
    }
    // on_error=skip records the three good rows and skips the bad one.
    let rec = Recorder::builder()
        .tape(dir.path().join("t2"))
        .open()
        .unwrap();
    let source = tapedeck::source::open(&uri("&on_error=skip")).unwrap();
    let counters = source.counters();
    let (report, _) = rec.run(source, &PipeOptions::default(), &|| false);
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!((report.summary.rows, counters.skipped()), (3, 1));
}
