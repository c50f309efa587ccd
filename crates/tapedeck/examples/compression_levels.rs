//! Issue 17, item 3: what zstd level and frame size give on the tape, for alicat-like rows and
//! for DAQ blocks — and what a delta encoding of the time columns would add (a format change,
//! measured here before deciding on it).
//!
//! Frames are encoded as the tape writer encodes them (one Arrow IPC record-batch message with
//! zstd body compression per frame); only the level differs. Prints, per workload, frame size
//! and level: payload bytes per row, and encode and decode speed in MB/s of Arrow data.
//!
//! Run: `cargo run --release -p tapedeck --example compression_levels [ROWS]`; with `--tape DIR
//! [ROWS]`, records ROWS alicat rows (batches of 64, default options: zstd, frames of up to
//! 65,536 rows, `fsync=interval:10ms`) onto a new tape in DIR and prints its bytes per row.

use std::sync::Arc;
use std::time::Instant;

use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_ipc::CompressionType;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_schema::{DataType, Field, Schema};
use tapedeck::source::sim_alicat::AlicatSim;

#[path = "common/mod.rs"]
mod common;
use tapedeck::source::sim_daq::DaqSim;

/// Encodes `frames` as one IPC stream at `level` (`None`: uncompressed); returns the bytes of
/// the record-batch messages, the encode time and the decode time.
fn encode(frames: &[RecordBatch], level: Option<i32>) -> (usize, f64, f64) {
    let schema = frames[0].schema();
    let options = match level {
        None => IpcWriteOptions::default(),
        Some(l) => IpcWriteOptions::default()
            .try_with_compression(Some(CompressionType::ZSTD))
            .and_then(|o| o.try_with_compression_level(Some(l)))
            .unwrap_or_else(|e| panic!("{e}")),
    };
    let mut writer = StreamWriter::try_new_with_options(Vec::new(), &schema, options)
        .unwrap_or_else(|e| panic!("{e}"));
    let schema_len = writer.get_ref().len();
    let t = Instant::now();
    for f in frames {
        writer.write(f).unwrap_or_else(|e| panic!("{e}"));
    }
    writer.finish().unwrap_or_else(|e| panic!("{e}"));
    let encode_s = t.elapsed().as_secs_f64();
    let bytes = writer.into_inner().unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    let mut rows = 0;
    for b in
        StreamReader::try_new(std::io::Cursor::new(&bytes), None).unwrap_or_else(|e| panic!("{e}"))
    {
        rows += b.unwrap_or_else(|e| panic!("{e}")).num_rows();
    }
    let decode_s = t.elapsed().as_secs_f64();
    assert_eq!(rows, frames.iter().map(|f| f.num_rows()).sum::<usize>());
    (bytes.len() - schema_len, encode_s, decode_s)
}

/// The batch with each timestamp column replaced by its first value and the differences
/// between neighbours (what a delta encoding would hand to zstd).
fn with_time_deltas(batch: &RecordBatch) -> RecordBatch {
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        if let Some(t) = c.as_any().downcast_ref::<TimestampMicrosecondArray>() {
            let v = t.values();
            let d: Int64Array = (0..v.len())
                .map(|i| if i == 0 { v[0] } else { v[i] - v[i - 1] })
                .collect();
            fields.push(Field::new(f.name(), DataType::Int64, true));
            columns.push(Arc::new(d));
        } else {
            fields.push(f.as_ref().clone());
            columns.push(c.clone());
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap_or_else(|e| panic!("{e}"))
}

fn report(workload: &str, frames: &[RecordBatch]) {
    let rows: usize = frames.iter().map(|f| f.num_rows()).sum();
    let arrow: usize = frames.iter().map(|f| f.get_array_memory_size()).sum();
    let frame_rows = frames[0].num_rows();
    for level in [None, Some(1), Some(3), Some(6), Some(9), Some(19)] {
        let (bytes, enc, dec) = encode(frames, level);
        println!(
            "{workload}\tframe {frame_rows} rows\tlevel {}\t{:.3} bytes/row\tArrow/stored {:.2}\tencode {:.0} MB/s\tdecode {:.0} MB/s",
            level.map_or("none".into(), |l| l.to_string()),
            bytes as f64 / rows as f64,
            arrow as f64 / bytes as f64,
            arrow as f64 / enc / 1e6,
            arrow as f64 / dec / 1e6
        );
    }
}

/// Records `rows` alicat rows onto a new tape in `dir` as `record` does; prints bytes per row.
fn tape(dir: &std::path::Path, rows: usize) {
    let t = Instant::now();
    common::record_alicat(dir, rows, tapedeck::tape::TapeOptions::default());
    let secs = t.elapsed().as_secs_f64();
    let bytes: u64 = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "tape: {rows} alicat rows, {bytes} segment bytes = {:.3} bytes/row, {:.0} rows/s",
        bytes as f64 / rows as f64,
        rows as f64 / secs
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--tape") {
        let dir = std::path::PathBuf::from(
            args.get(1)
                .cloned()
                .unwrap_or_else(|| "/tmp/cl-tape".into()),
        );
        let rows = args
            .get(2)
            .and_then(|s| s.parse().ok())
            .unwrap_or(1_000_000);
        tape(&dir, rows);
        return;
    }
    let rows: usize = args
        .first()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_048_576);
    let sim = AlicatSim::new(None, 0.0);
    for frame_rows in [4_096usize, 16_384, 65_536] {
        let frames: Vec<RecordBatch> = (0..rows / frame_rows)
            .map(|i| {
                sim.batch((i * frame_rows) as u64, frame_rows)
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect();
        report("alicat", &frames);
        let deltas: Vec<RecordBatch> = frames.iter().map(with_time_deltas).collect();
        report("alicat, time as deltas", &deltas);
    }
    // DAQ blocks: 8 channels, 1,000 samples per block — a frame per block, as on the tape.
    let mut daq = DaqSim::new(8, 10_000.0, 1_000).with_raw(true);
    let blocks: Vec<RecordBatch> = (0..(rows / 1_000).max(1) as u64)
        .map(|i| {
            daq.make_block(i, 1_767_225_600_000_000 + i as i64 * 100_000)
                .to_wide_batch()
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    report("daq block (8 x 1000, raw codes)", &blocks);
}
