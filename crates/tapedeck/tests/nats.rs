//! The `nats://` sink and source against a real NATS server with JetStream
//! (`TAPEDECK_TEST_NATS`, default `127.0.0.1:4222`; `.ci/run` starts one). Without a server the
//! tests print why and skip; under `CI=true` a missing server fails them. Each test uses a
//! stream and subjects of its own (memory storage), removed at its end; the restart test runs a
//! throwaway `nats-server` of its own (file storage) so it can kill it.
#![cfg(feature = "nats")]

use std::path::Path;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, RecordBatch};
use tapedeck::pipe::PipeOptions;
use tapedeck::recorder::Recorder;
use tapedeck::tape::{StartAt, TapeReader};

#[path = "common/nats_server.rs"]
mod nats_server;

use nats_server::{Client as Server, Msg};

fn server(test: &str) -> Option<Server> {
    nats_server::shared(test)
}

/// A stream name of this test run.
fn stream_name(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("T{}_{}_{nanos}", test.to_uppercase(), std::process::id())
}

/// The stream's subjects are `<stream in lower case>.>`: `t.x` below stands for
/// `<stream>.x`, so that the tests' streams never overlap.
fn subject(stream: &str, short: &str) -> String {
    format!(
        "{}.{}",
        stream.to_lowercase(),
        short.trim_start_matches("t.")
    )
}

fn sink_uri(s: &Server, short: &str, stream: &str, extra: &str) -> String {
    format!(
        "nats://{}/{}?stream={stream}&create_stream=true&storage=memory&subjects={}.>{extra}",
        s.addr,
        subject(stream, short),
        stream.to_lowercase()
    )
}

fn source_uri(s: &Server, short: &str, stream: &str, extra: &str) -> String {
    format!(
        "nats://{}/{}?stream={stream}&durable=central&stop_after_idle=1s{extra}",
        s.addr,
        subject(stream, short)
    )
}

/// Records `source` onto `tape` with `sinks`; panics on any failure.
fn record(tape: &Path, source: &str, sinks: &[String]) -> u64 {
    let rec = Recorder::builder().tape(tape).sinks(sinks).open().unwrap();
    let options = PipeOptions {
        batch_size: 1000,
        flush_interval: Duration::from_millis(100),
        ..PipeOptions::default()
    };
    let (report, summary) = rec.run(tapedeck::source::open(source).unwrap(), &options, &|| false);
    assert!(report.error.is_none(), "{source}: {:?}", report.error);
    for d in &summary.deliveries {
        assert!(d.error.is_none(), "{d:?}");
    }
    report.summary.rows
}

fn tape_batches(tape: &Path) -> Vec<RecordBatch> {
    let mut r = TapeReader::open(tape, StartAt::Start).unwrap();
    let mut out = Vec::new();
    while let Some((_, b)) = r.next_batch().unwrap() {
        out.push(b);
    }
    out
}

fn int_column(batches: &[RecordBatch], name: &str) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name(name).unwrap().as_primitive::<Int64Type>();
            (0..c.len()).map(|i| c.value(i)).collect::<Vec<_>>()
        })
        .collect()
}

fn text_column(batches: &[RecordBatch], name: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name(name).unwrap().as_string::<i32>();
            (0..c.len())
                .map(|i| {
                    if c.is_valid(i) {
                        c.value(i).to_string()
                    } else {
                        String::new()
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A column of all the batches, as one array.
fn column(batches: &[RecordBatch], name: &str) -> arrow_array::ArrayRef {
    let parts: Vec<&dyn Array> = batches
        .iter()
        .map(|b| b.column_by_name(name).unwrap().as_ref())
        .collect();
    arrow_select::concat::concat(&parts).unwrap()
}

fn tape_id(tape: &Path) -> String {
    std::fs::read_to_string(tape.join("TAPEID"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The stream holds `rows` tape rows of `tape`, each once and in order, as messages whose
/// `Tapedeck-Seq`s follow on.
fn assert_exactly_once(msgs: &[Msg], tape: &str, rows: u64) {
    let mut next = 0;
    for m in msgs {
        assert_eq!(m.headers["Tapedeck-Tape"], tape);
        assert_eq!(m.number("Tapedeck-Seq"), next, "message {}", m.stream_seq);
        next += m.number("Tapedeck-Rows");
    }
    assert_eq!(next, rows);
}

#[test]
fn a_tape_goes_into_a_stream_once_and_comes_back_out_the_same() {
    let Some(s) = server("round_trip_arrow") else {
        return;
    };
    let stream = stream_name("arrow");
    let dir = tempfile::tempdir().unwrap();
    let (edge, central) = (dir.path().join("edge"), dir.path().join("central"));
    let rows = record(
        &edge,
        "sim:alicat?n=20000",
        &[sink_uri(&s, "t.edge1", &stream, "")],
    );
    assert_eq!(rows, 20_000);
    let msgs = s.messages(&stream, &subject(&stream, "t.edge1"));
    assert_exactly_once(&msgs, &tape_id(&edge), 20_000);
    assert!(msgs.iter().all(|m| m.headers["Tapedeck-Format"] == "arrow"
        && m.headers["Nats-Msg-Id"]
            == format!(
                "{}:{}",
                m.headers["Tapedeck-Tape"], m.headers["Tapedeck-Seq"]
            )));
    // Each payload is an Arrow IPC stream on its own.
    let first = arrow_ipc::reader::StreamReader::try_new(&msgs[0].payload[..], None)
        .unwrap()
        .map(Result::unwrap)
        .collect::<Vec<_>>();
    assert_eq!(
        first.iter().map(|b| b.num_rows() as u64).sum::<u64>(),
        msgs[0].number("Tapedeck-Rows")
    );

    // Consumed into a central tape: the same rows, with where they came from.
    let got = record(&central, &source_uri(&s, "t.>", &stream, ""), &[]);
    assert_eq!(got, 20_000);
    let (a, b) = (tape_batches(&edge), tape_batches(&central));
    for name in ["device", "Mass_Flow", "requested_at"] {
        assert!(*column(&a, name) == *column(&b, name), "{name}");
    }
    assert_eq!(
        int_column(&b, "_origin_seq"),
        (0..20_000).collect::<Vec<i64>>()
    );
    assert!(
        text_column(&b, "_origin_tape")
            .iter()
            .all(|t| *t == tape_id(&edge))
    );
    assert!(
        text_column(&b, "_nats_subject")
            .iter()
            .all(|t| *t == subject(&stream, "t.edge1"))
    );
    let seqs = int_column(&b, "_nats_seq");
    assert!(seqs.windows(2).all(|w| w[0] <= w[1]));

    // Nothing new: a second run of the same consumer adds nothing.
    assert_eq!(
        record(&central, &source_uri(&s, "t.>", &stream, ""), &[]),
        0
    );
    // More rows at the edge: only they arrive.
    record(
        &edge,
        "sim:alicat?n=5000",
        &[sink_uri(&s, "t.edge1", &stream, "")],
    );
    assert_exactly_once(
        &s.messages(&stream, &subject(&stream, "t.edge1")),
        &tape_id(&edge),
        25_000,
    );
    assert_eq!(
        record(&central, &source_uri(&s, "t.>", &stream, ""), &[]),
        5_000
    );
    assert_eq!(
        int_column(&tape_batches(&central), "_origin_seq"),
        (0..25_000).collect::<Vec<i64>>()
    );
    s.drop_stream(&stream);
}

#[test]
fn jsonl_is_one_message_per_row_and_reads_back_as_rows() {
    let Some(s) = server("round_trip_jsonl") else {
        return;
    };
    let stream = stream_name("jsonl");
    let dir = tempfile::tempdir().unwrap();
    let (edge, central) = (dir.path().join("edge"), dir.path().join("central"));
    record(
        &edge,
        "sim:alicat?n=300",
        &[sink_uri(&s, "t.j", &stream, "&format=jsonl")],
    );
    let msgs = s.messages(&stream, &subject(&stream, "t.j"));
    assert_eq!(msgs.len(), 300);
    assert_exactly_once(&msgs, &tape_id(&edge), 300);
    let row: serde_json::Value = serde_json::from_slice(&msgs[7].payload).unwrap();
    assert!(
        row.get("Mass_Flow").is_some() && row.get("device").is_some(),
        "{row}"
    );
    assert_eq!(msgs[7].headers["Tapedeck-Format"], "jsonl");
    assert_eq!(
        record(&central, &source_uri(&s, "t.j", &stream, ""), &[]),
        300
    );
    let b = tape_batches(&central);
    assert_eq!(
        int_column(&b, "_origin_seq"),
        (0..300).collect::<Vec<i64>>()
    );
    assert!(*column(&b, "device") == *column(&tape_batches(&edge), "device"));
    s.drop_stream(&stream);
}

#[test]
fn a_subject_holding_another_tape_is_refused() {
    let Some(s) = server("other_tape") else {
        return;
    };
    let stream = stream_name("other");
    let dir = tempfile::tempdir().unwrap();
    let uri = sink_uri(&s, "t.shared", &stream, "");
    record(
        &dir.path().join("a"),
        "sim:alicat?n=100",
        std::slice::from_ref(&uri),
    );
    let rec = Recorder::builder()
        .tape(dir.path().join("b"))
        .sink(&uri)
        .open()
        .unwrap();
    let (_, summary) = rec.run(
        tapedeck::source::open("sim:alicat?n=100").unwrap(),
        &PipeOptions::default(),
        &|| false,
    );
    let error = summary.deliveries[0].error.clone().unwrap_or_default();
    assert!(
        error.contains("comes from tape") && error.contains("own subject"),
        "{error}"
    );
    assert_exactly_once(
        &s.messages(&stream, &subject(&stream, "t.shared")),
        &tape_id(&dir.path().join("a")),
        100,
    );
    s.drop_stream(&stream);
}

#[test]
fn messages_out_of_order_or_twice_are_taken_back_and_sent_again() {
    let Some(s) = server("repair") else {
        return;
    };
    let stream = stream_name("repair");
    let dir = tempfile::tempdir().unwrap();
    let edge = dir.path().join("edge");
    let uri = sink_uri(&s, "t.r", &stream, "");
    // Batches of 1,000 rows: messages of 1,000 rows.
    record(&edge, "sim:alicat?n=6000", std::slice::from_ref(&uri));
    let msgs = s.messages(&stream, &subject(&stream, "t.r"));
    assert!(msgs.len() >= 4, "{} messages", msgs.len());
    // A reconnect that lost one message but not the next: the second to last goes missing.
    let lost = &msgs[msgs.len() - 2];
    s.delete_message(&stream, lost.stream_seq);
    // And a duplicate of an earlier one published later (beyond the duplicate window).
    let mut dup = msgs[1].headers.clone();
    dup.insert("Nats-Msg-Id".into(), "someone-else".into());
    s.publish(&subject(&stream, "t.r"), &dup, &msgs[1].payload);
    // The next delivery takes both back and publishes from the lost rows on.
    record(&edge, "sim:alicat?n=2000", std::slice::from_ref(&uri));
    assert_exactly_once(
        &s.messages(&stream, &subject(&stream, "t.r")),
        &tape_id(&edge),
        8000,
    );
    s.drop_stream(&stream);
}

#[test]
fn bad_uris_and_a_missing_stream_say_what_to_do() {
    for (uri, says) in [
        ("nats://127.0.0.1:4222/lab.x", "?stream=NAME"),
        ("nats://127.0.0.1:4222/lab.>?stream=S", "wildcard"),
        ("nats://127.0.0.1:4222/lab.x?stream=S&formt=arrow", "formt"),
        ("nats://127.0.0.1:4222/lab.x?stream=a.b", "stream"),
        (
            "nats://127.0.0.1:4222/lab.x?stream=S&format=csv",
            "arrow, jsonl",
        ),
        (
            "nats://127.0.0.1:4222/lab.x?stream=S&max_in_flight=0",
            "at least 1",
        ),
    ] {
        let e = tapedeck::sink::parse(uri)
            .err()
            .unwrap_or_else(|| panic!("{uri} parsed"));
        assert!(e.to_string().contains(says), "{uri}: {e}");
    }
    let e = tapedeck::source::open("nats://127.0.0.1:4222/lab.>?stream=S&batch=0")
        .err()
        .unwrap();
    assert!(e.to_string().contains("batch"), "{e}");
    let Some(s) = server("missing_stream") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let missing = format!(
        "nats://{}/t.none?stream=NOSUCH{}",
        s.addr,
        std::process::id()
    );
    let e = tapedeck::sink::open(&missing).err().unwrap().to_string();
    assert!(
        e.contains("does not exist") && e.contains("create_stream=true"),
        "{e}"
    );
    // A source without a tape is refused, naming --tape.
    let rec = Recorder::builder()
        .sink(&format!("csv:{}", dir.path().join("x.csv").display()))
        .open()
        .unwrap();
    let (report, _) = rec.run(
        tapedeck::source::open(&format!("nats://{}/t.x?stream=S", s.addr)).unwrap(),
        &PipeOptions::default(),
        &|| false,
    );
    let e = report.error.unwrap().to_string();
    assert!(e.contains("--tape"), "{e}");
    // A server that is not there.
    let e = tapedeck::sink::open("nats://127.0.0.1:1/t.x?stream=S&connect_timeout=1s")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("cannot connect to NATS 127.0.0.1:1"), "{e}");
}

#[test]
fn a_server_restart_mid_delivery_loses_nothing_and_doubles_nothing() {
    let Some(own) = nats_server::Server::start("server_restart") else {
        return;
    };
    let addr = own.addr();
    let dir = tempfile::tempdir().unwrap();
    let edge = dir.path().join("edge");
    let uri = format!(
        "nats://{addr}/t.edge?stream=EDGE&create_stream=true&subjects=t.>&max_in_flight=16"
    );
    let recording = {
        let (edge, uri) = (edge.clone(), uri.clone());
        std::thread::spawn(move || record(&edge, "sim:alicat?n=300000&rate=100000", &[uri]))
    };
    std::thread::sleep(Duration::from_millis(1200));
    own.stop();
    std::thread::sleep(Duration::from_millis(1500));
    own.start_again();
    assert_eq!(recording.join().unwrap(), 300_000);
    let s = Server::connect(&addr).unwrap();
    assert_exactly_once(&s.messages("EDGE", "t.edge"), &tape_id(&edge), 300_000);
}

#[test]
fn rows_the_tape_has_none_for_are_declared_not_taken_for_a_gap() {
    use tapedeck::sink::resume::CursorSink;
    use tapedeck::sink::{Sink, nats::NatsOptions, nats::NatsSink};
    let Some(s) = server("declared_skip") else {
        return;
    };
    let stream = stream_name("skip");
    let options = NatsOptions::from_uri(&sink_uri(&s, "t.s", &stream, "")).unwrap();
    let batch = |n: i64| {
        RecordBatch::try_from_iter([(
            "n",
            std::sync::Arc::new(arrow_array::Int64Array::from_iter_values(0..n))
                as arrow_array::ArrayRef,
        )])
        .unwrap()
    };
    let mut sink = NatsSink::open(options.clone(), Some(("tape-x", 0))).unwrap();
    sink.write(&batch(10)).unwrap();
    sink.flush().unwrap();
    // A damaged range of 5 rows the delivery skips, then 10 more rows.
    sink.skip_cursor(5);
    sink.write(&batch(10)).unwrap();
    sink.close().unwrap();
    assert_eq!(sink.committed_cursor(), Some(25));
    let msgs = s.messages(&stream, &subject(&stream, "t.s"));
    assert_eq!(msgs.len(), 2);
    assert_eq!(
        (
            msgs[1].number("Tapedeck-Seq"),
            msgs[1].number("Tapedeck-From")
        ),
        (15, 10)
    );
    // The next start follows the chain across the declared skip: nothing taken back.
    let again = NatsSink::open(options, Some(("tape-x", 0))).unwrap();
    assert_eq!(again.committed_cursor(), Some(25));
    assert_eq!(s.messages(&stream, &subject(&stream, "t.s")).len(), 2);
    s.drop_stream(&stream);
}
