//! `pipe`: batching, the real flush timer, failure handling, limits, fan-out.

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use tapedeck::pipe::{PipeOptions, StopSignal, pipe, pipe_report};
use tapedeck::record::{Record, Row};
use tapedeck::sink::memory::MemorySink;
use tapedeck::sink::{self, Sink, SinkStats};
use tapedeck::source::sim_alicat::AlicatSim;
use tapedeck::source::sim_daq::DaqSim;
use tapedeck::source::{Source, from_iter};
use tapedeck::{Error, Result};

/// A source fed by the test through a channel; blocks while nothing is sent.
struct ChannelSource(Mutex<Receiver<Option<Result<Record>>>>);

impl Source for ChannelSource {
    fn name(&self) -> &str {
        "channel"
    }
    fn next_record(&mut self) -> Result<Option<Record>> {
        match self.0.lock().unwrap().recv() {
            Ok(Some(r)) => r.map(Some),
            Ok(None) | Err(_) => Ok(None),
        }
    }
}

fn channel_source() -> (SyncSender<Option<Result<Record>>>, ChannelSource) {
    let (tx, rx) = mpsc::sync_channel(1024);
    (tx, ChannelSource(Mutex::new(rx)))
}

fn row(i: i64) -> Result<Record> {
    Ok(Record::Row(
        Row::new().with("i", i).with("name", format!("r{i}")),
    ))
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(5));
    }
    f()
}

#[test]
fn flushes_every_batch_size_rows() {
    let sink = MemorySink::new();
    let h = sink.handle();
    let options = PipeOptions {
        batch_size: 100,
        flush_interval: Duration::from_secs(60),
        ..Default::default()
    };
    let summary = pipe(
        from_iter((0..1000).map(row)),
        vec![Box::new(sink)],
        &options,
    )
    .unwrap();
    assert_eq!(summary.rows, 1000);
    let sizes: Vec<usize> = h.batches().iter().map(RecordBatch::num_rows).collect();
    assert_eq!(sizes, vec![100; 10]);
    assert_eq!(h.flushes(), 10);
    assert!(h.is_closed());
}

#[test]
fn large_source_batches_are_sliced_to_batch_size() {
    let sink = MemorySink::new();
    let h = sink.handle();
    let options = PipeOptions {
        batch_size: 64,
        ..Default::default()
    };
    pipe(
        AlicatSim::new(Some(1000), 0.0),
        vec![Box::new(sink)],
        &options,
    )
    .unwrap();
    let sizes: Vec<usize> = h.batches().iter().map(RecordBatch::num_rows).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 1000);
    assert!(sizes.iter().all(|&n| n <= 64), "{sizes:?}");
    assert_eq!(sizes.len(), 16);
}

#[test]
fn a_silent_stream_is_still_flushed_by_the_timer() {
    let (tx, source) = channel_source();
    let sink = MemorySink::new();
    let h = sink.handle();
    let options = PipeOptions {
        batch_size: 1000,
        flush_interval: Duration::from_millis(100),
        ..Default::default()
    };
    let runner = thread::spawn(move || pipe(source, vec![Box::new(sink)], &options));
    for i in 0..5 {
        tx.send(Some(row(i))).unwrap();
    }
    // The source now says nothing; the rows must still arrive within about one interval.
    assert!(
        wait_until(Duration::from_secs(5), || h.rows() == 5),
        "timer flushed nothing"
    );
    assert!(h.flushes() >= 1);
    assert!(!runner.is_finished());
    tx.send(None).unwrap();
    let summary = runner.join().unwrap().unwrap();
    assert_eq!(summary.rows, 5);
    assert_eq!(summary.ended_by, "end");
}

#[test]
fn everything_received_is_flushed_before_a_source_error_is_returned() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("out.csv");
    let mem = MemorySink::new();
    let h = mem.handle();
    let stream = (0..10)
        .map(row)
        .chain(std::iter::once(Err(Error::MalformedInput {
            source_name: "test".into(),
            line: 11,
            message: "boom".into(),
        })));
    let options = PipeOptions {
        batch_size: 1000,
        flush_interval: Duration::from_secs(60),
        ..Default::default()
    };
    let report = pipe_report(
        from_iter(stream),
        vec![
            Box::new(mem),
            sink::open(&format!("csv:{}", csv.display())).unwrap(),
        ],
        &options,
    );
    let err = report.error.expect("the source error is returned");
    assert!(err.to_string().contains("line 11: boom"), "{err}");
    assert_eq!(report.summary.rows, 10);
    assert_eq!(report.summary.ended_by, "error");
    assert_eq!(h.rows(), 10);
    assert_eq!(report.summary.sinks[1].rows, 10);
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), 11, "header + 10 rows:\n{text}");
}

#[test]
fn limit_stops_at_exactly_n_rows() {
    let sink = MemorySink::new();
    let h = sink.handle();
    let options = PipeOptions {
        batch_size: 100,
        limit: Some(1234),
        ..Default::default()
    };
    let s = pipe(AlicatSim::new(None, 0.0), vec![Box::new(sink)], &options).unwrap();
    assert_eq!((s.rows, h.rows()), (1234, 1234));
    assert_eq!(s.ended_by, "limit");
    let s = pipe(
        from_iter((0..50).map(row)),
        vec![Box::new(MemorySink::new())],
        &PipeOptions {
            limit: Some(7),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(s.rows, 7);
}

#[test]
fn duration_stops_a_paced_source() {
    let sink = MemorySink::new();
    let h = sink.handle();
    let options = PipeOptions {
        duration: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    let s = pipe(AlicatSim::new(None, 1000.0), vec![Box::new(sink)], &options).unwrap();
    assert_eq!(s.ended_by, "duration");
    assert!(
        s.rows > 50 && s.rows < 1000,
        "{} rows in 300 ms at 1000/s",
        s.rows
    );
    assert_eq!(h.rows() as u64, s.rows);
    assert!(s.seconds >= 0.29);
}

#[test]
fn stop_signal_flushes_what_was_received() {
    let (tx, source) = channel_source();
    let sink = MemorySink::new();
    let h = sink.handle();
    let stop = StopSignal::default();
    let options = PipeOptions {
        batch_size: 1000,
        flush_interval: Duration::from_secs(60),
        stop: stop.clone(),
        ..Default::default()
    };
    let runner = thread::spawn(move || pipe(source, vec![Box::new(sink)], &options));
    for i in 0..42 {
        tx.send(Some(row(i))).unwrap();
    }
    thread::sleep(Duration::from_millis(100));
    stop.stop();
    let s = runner.join().unwrap().unwrap();
    assert_eq!(s.ended_by, "stopped");
    assert_eq!((s.rows, h.rows()), (42, 42));
    assert!(h.is_closed());
}

/// A sink that blocks in `write` until the test opens its gate.
struct GatedSink {
    gate: Arc<Mutex<()>>,
    rows: u64,
}

impl Sink for GatedSink {
    fn name(&self) -> &str {
        "gated"
    }
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let _open = self.gate.lock().unwrap();
        self.rows += batch.num_rows() as u64;
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
    fn stats(&self) -> SinkStats {
        SinkStats {
            rows: self.rows,
            bytes: 0,
            pending: 0,
        }
    }
}

#[test]
fn a_stuck_sink_holds_others_back_by_at_most_its_queue() {
    let gate = Arc::new(Mutex::new(()));
    let closed = gate.lock().unwrap();
    let fast = MemorySink::new();
    let h = fast.handle();
    let options = PipeOptions {
        batch_size: 10,
        queue_batches: 4,
        ..Default::default()
    };
    let g = gate.clone();
    let runner = thread::spawn(move || {
        pipe(
            from_iter((0..1000).map(row)),
            vec![Box::new(GatedSink { gate: g, rows: 0 }), Box::new(fast)],
            &options,
        )
    });
    // The fast sink gets batches while the slow one is stuck, but only as many as the slow
    // sink's bounded queue (writes and flushes) lets the producer run ahead.
    assert!(wait_until(Duration::from_secs(5), || h.rows() >= 20));
    thread::sleep(Duration::from_millis(200));
    let ahead = h.batches().len();
    assert!(
        ahead <= 6,
        "fast sink ran {ahead} batches ahead of a stuck sink"
    );
    assert!(!runner.is_finished());
    drop(closed);
    let s = runner.join().unwrap().unwrap();
    assert_eq!(s.sinks[0].rows, 1000);
    assert_eq!(s.sinks[1].rows, 1000);
}

/// A sink that fails on its third write.
struct FailingSink(u32);

impl Sink for FailingSink {
    fn name(&self) -> &str {
        "failing"
    }
    fn write(&mut self, _: &RecordBatch) -> Result<()> {
        self.0 += 1;
        if self.0 == 3 {
            return Err(Error::Unsupported {
                sink: "failing".into(),
                what: "disk on fire".into(),
            });
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
    fn stats(&self) -> SinkStats {
        SinkStats::default()
    }
}

#[test]
fn a_failing_sink_stops_the_pipe_and_is_named() {
    let mem = MemorySink::new();
    let h = mem.handle();
    let options = PipeOptions {
        batch_size: 10,
        ..Default::default()
    };
    let report = pipe_report(
        AlicatSim::new(None, 0.0),
        vec![Box::new(FailingSink(0)), Box::new(mem)],
        &options,
    );
    let err = report.error.expect("sink error");
    assert!(
        matches!(err, Error::Sink { ref sink, .. } if sink == "failing"),
        "{err:?}"
    );
    assert!(err.to_string().contains("disk on fire"));
    assert!(report.summary.sinks[0].error.is_some());
    // The healthy sink got everything received and was closed.
    assert_eq!(h.rows() as u64, report.summary.rows);
    assert!(h.is_closed());
    // Alone, the failing sink runs inline; same outcome.
    let err = pipe(
        AlicatSim::new(None, 0.0),
        vec![Box::new(FailingSink(0))],
        &options,
    )
    .unwrap_err();
    assert!(matches!(err, Error::Sink { .. }), "{err:?}");
}

#[test]
fn blocks_go_through_whole() {
    let sink = MemorySink::new();
    let h = sink.handle();
    let sim = DaqSim::new(8, 10_000.0, 1000)
        .with_blocks(Some(5))
        .with_real_time(false)
        .with_raw(true);
    let s = pipe(sim, vec![Box::new(sink)], &PipeOptions::default()).unwrap();
    assert_eq!((s.blocks, s.rows), (5, 5000));
    let blocks = h.blocks();
    assert_eq!(blocks.len(), 5);
    assert_eq!(blocks[4].first_sample_index, 4000);
    assert!(blocks[0].raw.is_some());
}

#[test]
fn bad_options_are_typed_errors() {
    for (options, name) in [
        (
            PipeOptions {
                batch_size: 0,
                ..Default::default()
            },
            "batch_size",
        ),
        (
            PipeOptions {
                flush_interval: Duration::ZERO,
                ..Default::default()
            },
            "flush_interval",
        ),
        (
            PipeOptions {
                queue_batches: 0,
                ..Default::default()
            },
            "queue_batches",
        ),
    ] {
        let err = pipe(
            from_iter((0..3).map(row)),
            vec![Box::new(MemorySink::new())],
            &options,
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::InvalidOption { option, .. } if option == name),
            "{err:?}"
        );
    }
    let err = pipe(from_iter((0..3).map(row)), vec![], &PipeOptions::default()).unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidOption {
            option: "sinks",
            ..
        }
    ));
}

#[test]
fn summary_counts_rows_and_bytes_per_sink() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("a.csv");
    let jsonl = dir.path().join("a.jsonl");
    let s = pipe(
        AlicatSim::new(Some(5000), 0.0),
        vec![
            sink::open(&format!("csv:{}", csv.display())).unwrap(),
            sink::open(&format!("jsonl:{}", jsonl.display())).unwrap(),
            sink::open("null:").unwrap(),
        ],
        &PipeOptions::default(),
    )
    .unwrap();
    assert_eq!(s.rows, 5000);
    assert_eq!(s.sinks[0].bytes, std::fs::metadata(&csv).unwrap().len());
    assert_eq!(s.sinks[1].bytes, std::fs::metadata(&jsonl).unwrap().len());
    assert!(s.sinks.iter().all(|k| k.rows == 5000));
    assert!(s.rows_per_sec > 0.0 && s.seconds > 0.0);
    assert_eq!(s.batches, 5000u64.div_ceil(64));
}

#[test]
fn mixed_row_shapes_reach_jsonl_wide_and_csv_locked() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("m.csv");
    let jsonl = dir.path().join("m.jsonl");
    let rows = vec![
        Ok(Record::Row(Row::new().with("a", 1))),
        Ok(Record::Row(Row::new().with("a", 2).with("b", "x"))),
    ];
    let options = PipeOptions {
        batch_size: 1,
        ..Default::default()
    };
    pipe(
        from_iter(rows),
        vec![
            sink::open(&format!("csv:{}", csv.display())).unwrap(),
            sink::open(&format!("jsonl:{}", jsonl.display())).unwrap(),
        ],
        &options,
    )
    .unwrap();
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), "a\n1\n2\n");
    assert_eq!(
        std::fs::read_to_string(&jsonl).unwrap(),
        "{\"a\":1}\n{\"a\":2,\"b\":\"x\"}\n"
    );
}

#[test]
fn rows_before_a_bad_row_are_still_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("partial.csv");
    let mem = MemorySink::new();
    let h = mem.handle();
    let rows = vec![
        Ok(Record::Row(Row::new().with("n", 1))),
        Ok(Record::Row(Row::new().with("n", 2))),
        Ok(Record::Row(Row::new().with("n", "three"))),
        Ok(Record::Row(Row::new().with("n", 4))),
    ];
    let options = PipeOptions {
        batch_size: 100,
        ..Default::default()
    };
    let report = pipe_report(
        from_iter(rows),
        vec![
            Box::new(mem),
            sink::open(&format!("csv:{}", csv.display())).unwrap(),
        ],
        &options,
    );
    let err = report.error.expect("the bad row is an error");
    assert!(
        matches!(err, Error::SchemaConflict { row: 2, .. }),
        "{err:?}"
    );
    assert_eq!(report.summary.rows, 2);
    assert_eq!(h.rows(), 2);
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), "n\n1\n2\n");
}

#[test]
fn names_differing_in_case_pass_to_jsonl_but_not_to_csv() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("case.jsonl");
    let rows = || vec![Ok(Record::Row(Row::new().with("id", 1).with("ID", 2)))];
    pipe(
        from_iter(rows()),
        vec![sink::open(&format!("jsonl:{}", jsonl.display())).unwrap()],
        &PipeOptions::default(),
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(&jsonl).unwrap(),
        "{\"id\":1,\"ID\":2}\n"
    );
    let csv = dir.path().join("case.csv");
    let err = pipe(
        from_iter(rows()),
        vec![sink::open(&format!("csv:{}", csv.display())).unwrap()],
        &PipeOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("`id` and `ID` collide"), "{err}");
}

/// A sink like a database: every flush costs a round trip, and it asks for its own thread.
struct SlowFlushSink {
    rows: u64,
    flushed_rows: u64,
    flushes: Arc<Mutex<Vec<u64>>>,
}

impl Sink for SlowFlushSink {
    fn name(&self) -> &str {
        "slow-flush"
    }
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        thread::sleep(Duration::from_millis(2));
        self.flushes
            .lock()
            .unwrap()
            .push(self.rows - self.flushed_rows);
        self.flushed_rows = self.rows;
        Ok(())
    }
    fn close(&mut self) -> Result<()> {
        self.flush()
    }
    fn stats(&self) -> SinkStats {
        SinkStats {
            rows: self.rows,
            bytes: 0,
            pending: 0,
        }
    }
    fn prefers_own_thread(&self) -> bool {
        true
    }
}

#[test]
fn flushes_queued_behind_a_slow_sink_are_merged_and_lose_nothing() {
    let flushes = Arc::new(Mutex::new(Vec::new()));
    let sink = SlowFlushSink {
        rows: 0,
        flushed_rows: 0,
        flushes: flushes.clone(),
    };
    let options = PipeOptions {
        batch_size: 64,
        ..Default::default()
    };
    let s = pipe(
        from_iter((0..64_000).map(row)),
        vec![Box::new(sink)],
        &options,
    )
    .unwrap();
    assert_eq!(s.sinks[0].rows, 64_000);
    let flushes = flushes.lock().unwrap();
    assert_eq!(flushes.iter().sum::<u64>(), 64_000, "every row was flushed");
    // 1,000 flushes of 64 rows were asked for; a 2 ms flush behind a fast source merges them.
    assert!(
        flushes.len() < 500,
        "{} flushes: none were merged",
        flushes.len()
    );
    assert!(
        flushes.iter().any(|&n| n > 64),
        "no flush carried more than one batch"
    );
}

#[test]
fn slow_blocks_are_flushed_by_the_timer_one_block_at_a_time() {
    // One block every 100 ms, a 40 ms flush interval and a batch size far above a block's
    // samples: each block is written as it comes (a block is already a batch) and flushed by
    // the timer, not held until the batch size is reached.
    let sink = MemorySink::new();
    let h = sink.handle();
    let sim = DaqSim::new(2, 1000.0, 100)
        .with_blocks(Some(4))
        .with_real_time(true);
    let options = PipeOptions {
        batch_size: 1_000_000,
        flush_interval: Duration::from_millis(40),
        ..PipeOptions::default()
    };
    let s = pipe(sim, vec![Box::new(sink)], &options).unwrap();
    assert_eq!((s.blocks, s.rows), (4, 400));
    assert_eq!(h.blocks().len(), 4);
    assert!(
        h.flushes() >= 4,
        "{} flushes for 4 blocks 100 ms apart",
        h.flushes()
    );
}
