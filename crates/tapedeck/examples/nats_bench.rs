//! Tape → JetStream → tape, measured against a plain async-nats client moving the same bytes.
//!
//! ```text
//! cargo run --release -p tapedeck --features nats --example nats_bench -- [ROWS] [RUNS] [ADDR]
//! ```
//!
//! Records ROWS (default 1,000,000) alicat-sample rows onto a tape once, then RUNS times (default
//! 3): delivers the tape into a fresh stream (file storage) with the `nats://` sink,
//! `format=arrow` and `format=jsonl`; publishes the very same payloads and headers with a plain
//! async-nats JetStream publisher (256 acknowledgements in flight, as the sink); consumes the
//! arrow stream into a new tape with the `nats://` source; and pulls the same messages with a
//! plain pull consumer (fetch, ack). Prints rows/s of each and the ratios, and the medians.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tapedeck::pipe::PipeOptions;
use tapedeck::recorder::Recorder;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rows: u64 = args.first().map_or(1_000_000, |a| a.parse().expect("ROWS"));
    let runs: usize = args.get(1).map_or(3, |a| a.parse().expect("RUNS"));
    let addr = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:4222".into());
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("tape");
    let rec = Recorder::builder().tape(&tape).open().expect("tape");
    let (report, _) = rec.run(
        tapedeck::source::open(&format!("sim:alicat?n={rows}")).expect("source"),
        &PipeOptions::default(),
        &|| false,
    );
    assert!(report.error.is_none(), "{:?}", report.error);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let client = rt
        .block_on(async_nats::connect(format!("nats://{addr}")))
        .expect("a NATS server with JetStream");
    let js = {
        let _inside = rt.enter();
        async_nats::jetstream::new(client)
    };
    let mut table: Vec<[f64; 5]> = Vec::new();
    for run in 0..runs {
        let stream = format!("BENCH{}_{run}", std::process::id());
        let deliver = |format: &str, subject: &str| -> f64 {
            let uri = format!(
                "nats://{addr}/{subject}?stream={stream}&create_stream=true&subjects=bench.>&format={format}"
            );
            let began = Instant::now();
            let delivery = Recorder::builder()
                .tape(&tape)
                .sink(&uri)
                .deliver()
                .expect("deliver");
            let summary = delivery.finish().expect("delivery");
            assert_eq!(summary.end_seq, rows);
            rows as f64 / began.elapsed().as_secs_f64()
        };
        let arrow = deliver("arrow", "bench.arrow");
        let jsonl = deliver("jsonl", "bench.jsonl");
        // The same messages, published by a plain client into another subject.
        let (plain_pub, plain_pull) = rt.block_on(async {
            let s = js.get_stream(&stream).await.expect("stream");
            let mut msgs = Vec::new();
            let mut from = 1;
            while let Ok(m) = s
                .raw_message_builder()
                .sequence(from)
                .next_by_subject("bench.arrow".to_string())
                .send()
                .await
            {
                from = m.sequence + 1;
                msgs.push((m.headers, m.payload));
            }
            let began = Instant::now();
            let mut in_flight = std::collections::VecDeque::new();
            for (headers, payload) in &msgs {
                let mut h = headers.clone();
                let id = format!("plain-{}", h.get("Nats-Msg-Id").map_or("", |v| v.as_str()));
                h.insert("Nats-Msg-Id", id.as_str());
                in_flight.push_back(
                    js.publish_with_headers("bench.plain", h, payload.clone())
                        .await
                        .expect("publish"),
                );
                if in_flight.len() >= 256 {
                    in_flight.pop_front().expect("ack").await.expect("ack");
                }
            }
            for f in in_flight {
                f.await.expect("ack");
            }
            let plain_pub = rows as f64 / began.elapsed().as_secs_f64();
            // A plain pull consumer over the arrow subject: fetch and ack every message.
            let consumer = s
                .create_consumer(async_nats::jetstream::consumer::pull::Config {
                    durable_name: Some("plain".into()),
                    filter_subject: "bench.arrow".into(),
                    ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                    ..Default::default()
                })
                .await
                .expect("consumer");
            let began = Instant::now();
            let mut got = 0;
            let mut bytes = 0usize;
            while got < msgs.len() {
                let mut batch = consumer
                    .batch()
                    .max_messages(256)
                    .expires(Duration::from_millis(200))
                    .messages()
                    .await
                    .expect("fetch");
                while let Some(m) = batch.next().await {
                    let m = m.expect("message");
                    bytes += m.payload.len();
                    m.ack().await.expect("ack");
                    got += 1;
                }
            }
            assert!(bytes > 0);
            let plain_pull = rows as f64 / began.elapsed().as_secs_f64();
            (plain_pub, plain_pull)
        });
        // The nats:// source into a new tape; the run ends 300 ms after the last message,
        // which is not counted.
        let central = dir.path().join(format!("central{run}"));
        let began = Instant::now();
        let rec = Recorder::builder().tape(&central).open().expect("central");
        let (report, _) = rec.run(
            tapedeck::source::open(&format!(
                "nats://{addr}/bench.arrow?stream={stream}&durable=bench&stop_after_idle=300ms"
            ))
            .expect("source"),
            &PipeOptions::default(),
            &|| false,
        );
        assert!(report.error.is_none(), "{:?}", report.error);
        assert_eq!(report.summary.rows, rows);
        let secs = (began.elapsed().as_secs_f64() - 0.3).max(1e-6);
        let source = rows as f64 / secs;
        let _ = rt.block_on(js.delete_stream(&stream));
        println!(
            "run {run}: sink arrow {arrow:.0} rows/s, jsonl {jsonl:.0} rows/s, plain publisher {plain_pub:.0} rows/s (sink/plain {:.2}); source {source:.0} rows/s, plain pull consumer {plain_pull:.0} rows/s (source/plain {:.2})",
            arrow / plain_pub,
            source / plain_pull
        );
        table.push([arrow, jsonl, plain_pub, source, plain_pull]);
    }
    let median = |i: usize| {
        let mut v: Vec<f64> = table.iter().map(|r| r[i]).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "median of {runs}: sink arrow {:.0} rows/s, jsonl {:.0}, plain publisher {:.0} (sink/plain {:.2}); source {:.0} rows/s, plain pull {:.0} (source/plain {:.2})",
        median(0),
        median(1),
        median(2),
        median(0) / median(2),
        median(3),
        median(4),
        median(3) / median(4)
    );
}
