//! Journal throughput, the workload of issue 20: a 10,000-key map, each transaction setting
//! one key. Prints transactions per second for the operation style (`set`, recorded as the
//! patch) and the closure style (diffed) under `fsync=interval:100ms`, and under
//! `fsync=always` for 1 thread and for 8 threads (group commit).
//!
//! ```text
//! cargo run --release -p tapedeck --example journal_bench -- DIR [TRANSACTIONS]
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tapedeck::journal::{Journal, JournalOptions};
use tapedeck::tape::FsyncPolicy;

type Map = BTreeMap<String, i64>;

fn initial() -> Map {
    (0..10_000).map(|k| (format!("key{k}"), 0)).collect()
}

fn open(dir: &std::path::Path, name: &str, fsync: FsyncPolicy) -> Journal<Map> {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    let options = JournalOptions {
        fsync,
        ..JournalOptions::default()
    };
    Journal::open_with(&path, options, initial).unwrap_or_else(|e| panic!("{e}"))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| "/tmp/journal-bench".into()));
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let interval = FsyncPolicy::Interval(Duration::from_millis(100));

    let j = open(&dir, "set.journal", interval);
    let t = Instant::now();
    for i in 0..n {
        j.set("set", &format!("/key{}", i % 10_000), &(i as i64))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    j.sync().unwrap_or_else(|e| panic!("{e}"));
    println!(
        "set, interval:100ms: {n} transactions in {:.3} s = {:.0}/s",
        t.elapsed().as_secs_f64(),
        n as f64 / t.elapsed().as_secs_f64()
    );

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
