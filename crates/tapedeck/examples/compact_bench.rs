//! Issue 17, item 6: what `tapedeck compact` gives on a tape written by a slow source.
//!
//! Records ROWS alicat rows (default 1,000,000) in batches of 64 with `frame_rows = 1` — a frame
//! per flush, as a source that flushes slower than the disk commits leaves it — in segments of
//! 16 MiB, then compacts it with the defaults (frames of up to 65,536 rows, zstd, segments of
//! 256 MiB), and reads the whole tape with a `TapeReader` before and after. Repeats RUNS times
//! (default 5) on fresh tapes and prints each run and the medians: bytes per row, frames and
//! segments before and after, compaction rows/s, full-read rows/s before and after.
//!
//! Run: `cargo run --release -p tapedeck --example compact_bench [ROWS] [RUNS] [DIR]`.

use std::time::Instant;

#[path = "common/mod.rs"]
mod common;

use tapedeck::tape::compact::CompactOptions;
use tapedeck::tape::verify::inspect;
use tapedeck::tape::{StartAt, TapeOptions, TapeReader, TapeWriter};

fn tape_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum()
}

/// Reads every row; returns rows/s.
fn read_all(dir: &std::path::Path, rows: usize) -> f64 {
    let t = Instant::now();
    let mut n = 0;
    for item in TapeReader::open(dir, StartAt::Start).unwrap_or_else(|e| panic!("{e}")) {
        n += item.unwrap_or_else(|e| panic!("{e}")).1.num_rows();
    }
    assert_eq!(n, rows);
    rows as f64 / t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rows: usize = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let runs: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let base = args
        .get(3)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let mut cols: Vec<Vec<f64>> = vec![Vec::new(); 8];
    println!(
        "run | bytes/row before | after | frames before | after | segments before | after | compact rows/s | read rows/s before | after"
    );
    for run in 0..runs {
        let dir = base.join(format!("compact-bench-{}-{run}", std::process::id()));
        let options = TapeOptions {
            frame_rows: 1,
            segment_bytes: 16 << 20,
            ..TapeOptions::default()
        };
        common::record_alicat(&dir, rows, options);
        let storage = tapedeck::tape::verify::storage_for(&dir).unwrap_or_else(|e| panic!("{e}"));
        let before = inspect(storage.as_ref()).unwrap_or_else(|e| panic!("{e}"));
        let bytes_before = tape_bytes(&dir);
        let read_before = read_all(&dir, rows);

        let w = TapeWriter::open(&dir, TapeOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        let t = Instant::now();
        let report = w
            .watch()
            .compact(&CompactOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let compact_secs = t.elapsed().as_secs_f64();
        w.close().unwrap_or_else(|e| panic!("{e}"));
        let after = inspect(storage.as_ref()).unwrap_or_else(|e| panic!("{e}"));
        let bytes_after = tape_bytes(&dir);
        let read_after = read_all(&dir, rows);
        let row = [
            bytes_before as f64 / rows as f64,
            bytes_after as f64 / rows as f64,
            report.frames_before as f64,
            report.frames_after as f64,
            before.segments.len() as f64,
            after.segments.len() as f64,
            report.rows as f64 / compact_secs,
            read_before,
        ];
        println!(
            "{run} | {:.2} | {:.2} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0}",
            row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], read_after
        );
        for (c, v) in cols.iter_mut().zip(row) {
            c.push(v);
        }
        cols.push(vec![read_after]);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let read_after: Vec<f64> = cols.drain(8..).flatten().collect();
    let m: Vec<f64> = cols.into_iter().map(median).collect();
    println!(
        "median | {:.2} | {:.2} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0}",
        m[0],
        m[1],
        m[2],
        m[3],
        m[4],
        m[5],
        m[6],
        m[7],
        median(read_after)
    );
}
