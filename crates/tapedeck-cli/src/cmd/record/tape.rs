//! `record --tape`: the recording's tape part — opening (or recovering) the tape writer and
//! starting one delivery per sink from it, then bringing those deliveries to the tape's
//! acknowledged end and reporting what the tape holds. Apart from `record`'s own module so
//! the command stays readable.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use clap::ValueEnum;
use tapedeck::deliver::{Delivery, DeliveryOptions, DeliveryStatus, TapeEnd, TapeRef};
use tapedeck::pipe::Summary;
use tapedeck::sink::tape::TapeSink;
use tapedeck::tape::{FsyncPolicy, TapeOptions, TapeWatch, TapeWriter};
use tapedeck::{Error, sink};

use super::Args;
use crate::report::{human_bytes, is_waiting_for_sink, report_recovery};
use crate::signals::stop_requested;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum TapeCompression {
    /// No compression.
    None,
    /// LZ4 frame.
    Lz4,
    /// zstd.
    Zstd,
}

/// Parses `--fsync`: always, never or interval:DUR.
pub fn parse_fsync(s: &str) -> Result<FsyncPolicy, String> {
    s.parse()
}

/// A recording onto a tape while it runs: where the tape is, its acknowledged position, the
/// sequence number its first row of this run got, and the deliveries feeding the sinks.
pub struct TapeRun {
    pub dir: PathBuf,
    pub watch: TapeWatch,
    pub start: u64,
    pub delivery: Delivery,
}

/// Opens (or recovers) the tape in `dir` and starts a delivery for each sink of `specs`;
/// returns the run and the sink the pipe writes: the tape itself.
pub fn open(
    dir: &Path,
    args: &Args,
    specs: Vec<(String, sink::SinkSpec)>,
) -> Result<(TapeRun, Box<dyn sink::Sink>), Error> {
    let options = TapeOptions {
        fsync: args.fsync,
        compression: match args.compression {
            TapeCompression::None => tapedeck::tape::Compression::None,
            TapeCompression::Lz4 => tapedeck::tape::Compression::Lz4,
            TapeCompression::Zstd => tapedeck::tape::Compression::Zstd,
        },
        segment_bytes: args.segment_bytes.max(1 << 12),
        segment_age: None,
        allow_schema_change: args.allow_schema_change,
    };
    let writer = TapeWriter::open(dir, options)?;
    report_recovery(dir, &writer);
    let watch = writer.watch();
    let start = writer.next_seq();
    let tape = TapeRef {
        dir: dir.to_path_buf(),
        id: writer.id().to_string(),
    };
    let delivery_options = DeliveryOptions {
        flush_interval: args.flush_interval,
        new_start: args.from.into(),
        quarantine: Some(watch.clone()),
        ..DeliveryOptions::default()
    };
    // The sinks are fed from the tape, each from its own cursor; the recorder only
    // writes the tape, so a slow or absent sink never holds it up.
    let delivery = Delivery::start(tape, specs, TapeEnd::Live(watch.clone()), &delivery_options)?;
    let sink = Box::new(TapeSink::from_writer(
        format!("tape:{}", dir.display()),
        writer,
    )) as Box<dyn sink::Sink>;
    let run = TapeRun {
        dir: dir.to_path_buf(),
        watch,
        start,
        delivery,
    };
    Ok((run, sink))
}

/// Once the pipe has closed the tape: brings every sink to the tape's acknowledged end (all of
/// it, unless the tape failed, or the user stops it). Returns the tape's part of the summary
/// and each delivery's status.
pub fn finish(run: TapeRun, interrupted: &AtomicBool) -> (serde_json::Value, Vec<DeliveryStatus>) {
    let TapeRun {
        dir,
        watch: w,
        start,
        delivery,
    } = run;
    let waiting: Vec<String> = delivery
        .statuses()
        .into_iter()
        .filter(is_waiting_for_sink)
        .map(|s| s.sink)
        .collect();
    if !waiting.is_empty() {
        eprintln!(
            "waiting for {} to come back (up to 5 minutes); press Ctrl-C twice to stop now — committed rows stay, and `tapedeck deliver` catches up later",
            waiting.join(", ")
        );
    }
    let statuses = delivery.status_handle();
    let deliveries =
        delivery.finish_or_stop(w.durable_seq(), &|| stop_requested(interrupted, &statuses));
    let tape = serde_json::json!({
        "dir": dir.display().to_string(),
        "first_seq": start,
        "end_seq": w.next_seq(),
        "acknowledged": w.durable_seq().saturating_sub(start),
        "received": w.next_seq().saturating_sub(start),
    });
    (tape, deliveries)
}

/// The summary's tape line: rows acknowledged, their sequence numbers, bytes, and the tape's
/// error if it failed.
pub fn print_line(t: &serde_json::Value, summary: &Summary) {
    let tape_sink = summary.sinks.iter().find(|k| k.uri.starts_with("tape:"));
    eprintln!(
        "  tape {}: {} rows acknowledged (sequence {}..{}), {}{}",
        t["dir"].as_str().unwrap_or(""),
        t["acknowledged"],
        t["first_seq"],
        t["end_seq"],
        human_bytes(tape_sink.map_or(0, |k| k.bytes)),
        tape_sink
            .and_then(|k| k.error.as_ref())
            .map(|e| format!(" — FAILED: {e}"))
            .unwrap_or_default()
    );
}

/// Says how many received rows the tape did not acknowledge (it stopped after an I/O error).
pub fn report_unacknowledged(t: &serde_json::Value) {
    let received = t["received"].as_u64().unwrap_or(0);
    let acknowledged = t["acknowledged"].as_u64().unwrap_or(0);
    if received > acknowledged {
        eprintln!(
            "error: tape {}: {} of the {received} rows received were not acknowledged (the tape stopped after an I/O error); the {acknowledged} acknowledged rows are safe on the tape",
            t["dir"].as_str().unwrap_or(""),
            received - acknowledged
        );
    }
}
