//! Journal throughput, the workload of issue 20: a 10,000-key map, each transaction setting
//! one key. Prints transactions per second for the operation style (`set`, recorded as the
//! patch) and the closure style (diffed) under `fsync=interval:100ms`, and under
//! `fsync=always` for 1 thread and for 8 threads (group commit).
//!
//! ```text
//! cargo run --release -p tapedeck --example journal_bench -- DIR [TRANSACTIONS]
//! cargo run --release -p tapedeck --example journal_bench -- --meta DIR RECORDS [SNAPSHOT_BYTES]
//! ```
//!
//! `--meta` writes a tape's run-metadata journal `DIR/META` of RECORDS records (each setting
//! one of 100 keys; snapshots every SNAPSHOT_BYTES bytes of records, 0: none), for timing
//! `tapedeck meta DIR history` and `get` on a long history.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tapedeck::journal::{Journal, JournalFormat, JournalOptions};
use tapedeck::tape::FsyncPolicy;

type Map = BTreeMap<String, i64>;

fn initial() -> Map {
    (0..10_000).map(|k| (format!("key{k}"), 0)).collect()
}

fn open(dir: &std::path::Path, name: &str, fsync: FsyncPolicy) -> Journal<Map> {
    open_as(dir, name, fsync, JournalFormat::JsonLines)
}

fn open_as(
    dir: &std::path::Path,
    name: &str,
    fsync: FsyncPolicy,
    format: JournalFormat,
) -> Journal<Map> {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    let options = JournalOptions {
        fsync,
        format,
        ..JournalOptions::default()
    };
    Journal::open_with(&path, options, initial).unwrap_or_else(|e| panic!("{e}"))
}

/// Writes `DIR/META` with `n` records, as `tapedeck meta DIR set` would over a long run.
fn meta(dir: &std::path::Path, n: u64, snapshot_bytes: u64) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join("META");
    for f in std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
    {
        if f.file_name().to_string_lossy().starts_with("META") {
            let _ = std::fs::remove_file(f.path());
        }
    }
    let options = JournalOptions {
        fsync: FsyncPolicy::Interval(Duration::from_millis(100)),
        snapshot_bytes: (snapshot_bytes > 0).then_some(snapshot_bytes),
        ..JournalOptions::default()
    };
    let j: Journal<Map> = Journal::open(&path, options).unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    for i in 0..n {
        j.set("set", &format!("/key{}", i % 100), &(i as i64))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    j.sync().unwrap_or_else(|e| panic!("{e}"));
    println!(
        "{n} records in {:.1} s into {}",
        t.elapsed().as_secs_f64(),
        path.display()
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    if std::env::args().nth(1).as_deref() == Some("--meta") {
        let _ = args.next();
        let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| "/tmp/meta-bench".into()));
        let n = args
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1_000_000);
        let bytes = args.next().and_then(|s| s.parse().ok()).unwrap_or(8 << 20);
        meta(&dir, n, bytes);
        return;
    }
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| "/tmp/journal-bench".into()));
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let interval = FsyncPolicy::Interval(Duration::from_millis(100));

    for (name, format) in [
        ("set.journal", JournalFormat::JsonLines),
        ("set.mp.journal", JournalFormat::MessagePack),
    ] {
        let j = open_as(&dir, name, interval, format);
        let t = Instant::now();
        for i in 0..n {
            j.set("set", &format!("/key{}", i % 10_000), &(i as i64))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        j.sync().unwrap_or_else(|e| panic!("{e}"));
        println!(
            "set, interval:100ms, {format:?}: {n} transactions in {:.3} s = {:.0}/s",
            t.elapsed().as_secs_f64(),
            n as f64 / t.elapsed().as_secs_f64()
        );
    }
    for (name, format) in [
        ("set.journal", JournalFormat::JsonLines),
        ("set.mp.journal", JournalFormat::MessagePack),
    ] {
        let t = Instant::now();
        let j: Journal<Map> = Journal::open(dir.join(name), JournalOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let records = j.next_seq();
        let bytes = std::fs::metadata(dir.join(name)).map_or(0, |m| m.len());
        println!(
            "open (replay) {format:?}: {records} records, {bytes} bytes in {:.3} s",
            t.elapsed().as_secs_f64()
        );
    }

    let m = (n / 100).max(1);
    let j = open(&dir, "closure.journal", interval);
    let t = Instant::now();
    for i in 0..m {
        j.transaction("closure", |s| {
            s.insert(format!("key{}", i % 10_000), i as i64);
            Ok::<_, String>(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }
    println!(
        "closure (diffs the 10,000-key state), interval:100ms: {m} transactions in {:.3} s = {:.0}/s",
        t.elapsed().as_secs_f64(),
        m as f64 / t.elapsed().as_secs_f64()
    );

    let per_thread = (n / 50).max(8);
    let mut rates = Vec::new();
    for threads in [1usize, 8] {
        let j = Arc::new(open(&dir, "always.journal", FsyncPolicy::Always));
        let t = Instant::now();
        let handles: Vec<_> = (0..threads)
            .map(|th| {
                let j = j.clone();
                std::thread::spawn(move || {
                    for i in 0..per_thread / threads {
                        j.set("set", &format!("/key{}", (th * 1000 + i) % 10_000), &1)
                            .unwrap_or_else(|e| panic!("{e}"));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join()
                .unwrap_or_else(|_| panic!("a writer thread panicked"));
        }
        let done = (per_thread / threads) * threads;
        let rate = done as f64 / t.elapsed().as_secs_f64();
        println!("set, fsync=always, {threads} thread(s): {done} transactions, {rate:.0}/s");
        rates.push(rate);
    }
    println!("8 threads / 1 thread: {:.2}", rates[1] / rates[0]);
}
