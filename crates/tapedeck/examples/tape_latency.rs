//! Append latency under `fsync=always` against the disk's own fdatasync latency, in one run.
//!
//! usage: cargo run --release -p tapedeck --example tape_latency -- DIR [APPENDS]
//!
//! Measures the median latency of `write(4 KiB) + fdatasync` on a file in DIR, then appends
//! APPENDS (default 2000) alicat-sample batches of 64 rows one at a time to a fresh tape in DIR
//! with `fsync=always`, each waiting for its acknowledgement, and prints p50 / p99 of those
//! appends and p99 / fdatasync-median.

use std::io::Write;
use std::time::Instant;

use tapedeck::source::sim_alicat::AlicatSim;
use tapedeck::tape::{Compression, FsyncPolicy, TapeOptions, TapeWriter};

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(args.get(1).ok_or("usage: tape_latency DIR [APPENDS]")?);
    let appends: usize = args.get(2).map_or(Ok(2000), |a| a.parse())?;
    std::fs::create_dir_all(&dir)?;

    let probe = dir.join("fdatasync-probe");
    let mut f = std::fs::File::create(&probe)?;
    let block = vec![7u8; 4096];
    let mut sync_ms = Vec::with_capacity(appends);
    for _ in 0..appends {
        let t = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        sync_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    drop(f);
    std::fs::remove_file(&probe)?;
    let sync_median = percentile(&mut sync_ms, 0.5);

    let tape = dir.join("latency-tape");
    let _ = std::fs::remove_dir_all(&tape);
    let w = TapeWriter::open(
        &tape,
        TapeOptions {
            fsync: FsyncPolicy::Always,
            compression: Compression::Zstd,
            ..TapeOptions::default()
        },
    )?;
    let sim = AlicatSim::new(None, 0.0);
    let mut append_ms = Vec::with_capacity(appends);
    for i in 0..appends {
        let batch = sim.batch(i as u64 * 64, 64)?;
        let t = Instant::now();
        w.append(&batch)?;
        append_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    w.close()?;
    let p50 = percentile(&mut append_ms, 0.5);
    let p99 = percentile(&mut append_ms, 0.99);
    println!("fdatasync median {sync_median:.3} ms ({appends} x 4 KiB)");
    println!("append fsync=always: p50 {p50:.3} ms, p99 {p99:.3} ms ({appends} x 64 rows)");
    println!("p99 / fdatasync median = {:.2}", p99 / sync_median);
    std::fs::remove_dir_all(&tape)?;
    Ok(())
}
