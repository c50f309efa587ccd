//! `raw:` against `dd … conv=fdatasync` on the same disk, in one run.
//!
//! Writes the same number of bytes both ways: `dd if=/dev/zero bs=262144 count=N
//! conv=fdatasync` and a `.dt-raw` file of N blocks of 32 channels × 4096 int16 samples (one
//! 262,144-byte payload per chunk) through `RawSink` with the default `fsync=interval:10ms`
//! (ended by an fdatasync at close). Runs alternate; medians of bytes/s and their ratio are
//! printed.
//!
//!     cargo run --release --example raw_vs_dd -- DIR [MIB] [RUNS]

use std::process::Command;
use std::time::Instant;

use tapedeck::sink::Sink;
use tapedeck::sink::raw::{RawOptions, RawSink};
use tapedeck::source::sim_daq::DaqSim;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(args.get(1).map_or("/tmp", String::as_str));
    let mib: u64 = args.get(2).map_or(Ok(1024), |s| s.parse())?;
    let runs: usize = args.get(3).map_or(Ok(5), |s| s.parse())?;
    let chunk = 32 * 4096 * 2u64;
    let n = mib * (1 << 20) / chunk;
    let mut block = DaqSim::new(32, 100_000.0, 4096)
        .with_raw(true)
        .make_block(0, 1_767_225_600_000_000);
    let (mut dd, mut raw) = (Vec::new(), Vec::new());
    let mut raw_bytes = 0;
    for run in 0..runs {
        let target = dir.join("dd.bin");
        let t = Instant::now();
        let status = Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", target.display()))
            .arg(format!("bs={chunk}"))
            .arg(format!("count={n}"))
            .args(["conv=fdatasync", "status=none"])
            .status()?;
        assert!(status.success(), "dd failed");
        dd.push((n * chunk) as f64 / t.elapsed().as_secs_f64());
        std::fs::remove_file(&target)?;

        let target = dir.join("raw.dt-raw");
        let t = Instant::now();
        let mut sink = RawSink::create(
            &target,
            RawOptions {
                file: tapedeck::sink::FileOptions {
                    overwrite: true,
                    append: false,
                },
                fsync: std::env::var("RAW_FSYNC")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(RawOptions::default().fsync),
            },
        )?;
        for i in 0..n {
            block.block_index = i;
            block.first_sample_index = i * 4096;
            sink.write_block(&block)?;
        }
        sink.close()?;
        // Everything on disk before the clock stops, as dd's conv=fdatasync (a no-op when the
        // policy already synced at close).
        std::fs::File::open(&target)?.sync_data()?;
        let secs = t.elapsed().as_secs_f64();
        raw_bytes = std::fs::metadata(&target)?.len();
        raw.push(raw_bytes as f64 / secs);
        std::fs::remove_file(&target)?;
        eprintln!(
            "run {run}: dd {:.0} MB/s, raw {:.0} MB/s",
            dd[run] / 1e6,
            raw[run] / 1e6
        );
    }
    let (d, r) = (median(dd), median(raw));
    println!(
        "{n} chunks of {chunk} payload bytes ({raw_bytes} bytes in the .dt-raw file), {runs} runs in {}",
        dir.display()
    );
    println!("dd conv=fdatasync median {:.1} MB/s", d / 1e6);
    println!(
        "raw: fsync={} median {:.1} MB/s",
        std::env::var("RAW_FSYNC").unwrap_or_else(|_| "interval:10ms".into()),
        r / 1e6
    );
    println!("raw / dd = {:.2} (target >= 0.80)", r / d);
    Ok(())
}
