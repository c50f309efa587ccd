//! `record --tape`: the recording's tape part — the tape's and the deliveries' options for the
//! [`Recorder`], bringing the deliveries to the tape's acknowledged end, and reporting what the
//! tape holds. Apart from `record`'s own module so the command stays readable.

use std::sync::atomic::AtomicBool;

use clap::ValueEnum;
use tapedeck::deliver::{DeliveryOptions, DeliveryState, DeliveryStatus};
use tapedeck::pipe::Summary;
use tapedeck::recorder::Recorder;
use tapedeck::tape::{FsyncPolicy, TapeOptions};

use super::Args;
use crate::report::{human_bytes, is_waiting_for_sink};
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

impl From<TapeCompression> for tapedeck::tape::Compression {
    fn from(c: TapeCompression) -> Self {
        match c {
            TapeCompression::None => tapedeck::tape::Compression::None,
            TapeCompression::Lz4 => tapedeck::tape::Compression::Lz4,
            TapeCompression::Zstd => tapedeck::tape::Compression::Zstd,
        }
    }
}

/// Parses `--fsync`: always, never or interval:DUR.
pub fn parse_fsync(s: &str) -> Result<FsyncPolicy, String> {
    s.parse()
}

/// The tape's options from `record`'s arguments.
pub fn options(args: &Args) -> TapeOptions {
    TapeOptions {
        fsync: args.fsync,
        compression: args.compression.into(),
        zstd_level: None,
        segment_bytes: args.segment_bytes.max(1 << 12),
        segment_age: None,
        frame_rows: args.frame_rows.max(1),
        allow_schema_change: args.allow_schema_change,
        // Without the option: wait for space as long as it takes.
        disk_full_timeout: args.disk_full_timeout,
    }
}

/// How the deliveries run, from `record`'s arguments.
pub fn delivery_options(args: &Args) -> DeliveryOptions {
    DeliveryOptions {
        flush_interval: args.flush_interval,
        new_start: args.from.into(),
        ..DeliveryOptions::default()
    }
}

/// Once the pipe has closed the tape: says which sinks the run waits for, then brings every
/// sink to the tape's acknowledged end (all of it, unless the tape failed, or the user stops
/// it). Returns the tape's part of the summary and each delivery's status.
pub fn finish(
    rec: Recorder,
    interrupted: &AtomicBool,
) -> (Option<serde_json::Value>, Vec<DeliveryStatus>) {
    let deliveries = rec.deliveries();
    let waiting = |state: DeliveryState| -> Vec<String> {
        deliveries
            .iter()
            .filter(|s| is_waiting_for_sink(s) && s.state == state)
            .map(|s| s.sink.clone())
            .collect()
    };
    // A sink still connecting when the source ended (a fast run) is not one that went away.
    for (sinks, what) in [
        (waiting(DeliveryState::Opening), "to open (connect)"),
        (waiting(DeliveryState::Reconnecting), "to come back"),
    ] {
        if !sinks.is_empty() {
            eprintln!(
                "waiting for {} {what} (up to 5 minutes); press Ctrl-C twice to stop now — committed rows stay, and `tapedeck deliver` catches up later",
                sinks.join(", ")
            );
        }
    }
    let statuses = rec.status_handle();
    let stop = || {
        statuses
            .as_ref()
            .is_some_and(|h| stop_requested(interrupted, h))
    };
    // After the pipe the recorder holds no sink, so closing cannot fail here; its errors are
    // in the pipe's report.
    match rec.finish_with(&stop) {
        Ok(s) => (
            s.tape.and_then(|t| serde_json::to_value(t).ok()),
            s.deliveries,
        ),
        Err(e) => {
            eprintln!("error: {e}");
            (None, Vec::new())
        }
    }
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
