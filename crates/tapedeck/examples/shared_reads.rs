//! Issue 17, item 2: several readers of one tape in one process (a recorder's deliveries, one
//! per sink) share the frames they decode (`tape::frame_cache`).
//!
//! Records ROWS alicat rows (default 2,000,000; batches of 64, default tape options: zstd,
//! frames of up to 65,536 rows) onto a tape in DIR, then RUNS times (default 5) starts READERS
//! threads (default 5) that each read the whole tape with a `TapeReader` at once, and prints the
//! wall time of each round and the median, in rows/s per reader and all readers' rows/s, with
//! the frame cache's hits. Run it twice to compare, the second time without the cache:
//!
//! ```text
//! cargo build --release -p tapedeck --example shared_reads
//! /work/target/release/examples/shared_reads 2000000 5 5 /work/benchdir
//! TAPEDECK_FRAME_CACHE_MB=0 /work/target/release/examples/shared_reads 2000000 5 5 /work/benchdir
//! ```

use std::time::Instant;

use tapedeck::tape::{StartAt, TapeOptions, TapeReader};

#[path = "common/mod.rs"]
mod common;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |k: usize, d: usize| args.get(k).and_then(|a| a.parse().ok()).unwrap_or(d);
    let rows = arg(1, 2_000_000);
    let runs = arg(2, 5);
    let readers = arg(3, 5);
    let base = args
        .get(4)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("shared-reads-{}", std::process::id()));
    common::record_alicat(&dir, rows, TapeOptions::default());
    let mut secs = Vec::new();
    for run in 0..runs {
        let t = Instant::now();
        let threads: Vec<_> = (0..readers)
            .map(|_| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    let mut n = 0;
                    for item in
                        TapeReader::open(&dir, StartAt::Start).unwrap_or_else(|e| panic!("{e}"))
                    {
                        n += item.unwrap_or_else(|e| panic!("{e}")).1.num_rows();
                    }
                    n
                })
            })
            .collect();
        for t in threads {
            let n = t.join().unwrap_or_else(|_| panic!("a reader panicked"));
            assert_eq!(n, rows);
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "round {run}: {s:.3} s, {:.0} rows/s per reader, {:.0} rows/s in all",
            rows as f64 / s,
            (rows * readers) as f64 / s
        );
        secs.push(s);
    }
    secs.sort_by(f64::total_cmp);
    let m = secs[secs.len() / 2];
    println!(
        "median: {m:.3} s, {:.0} rows/s per reader, {:.0} rows/s in all; frame cache hits {}",
        rows as f64 / m,
        (rows * readers) as f64 / m,
        tapedeck::tape::frame_cache::global().hits()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
