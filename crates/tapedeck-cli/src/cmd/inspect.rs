//! `tapedeck inspect`: a tape's schema, segments, rows, time range, bytes, quarantined ranges,
//! and each sink's delivery cursor and lag, as text or JSON.

use std::path::PathBuf;

use tapedeck::deliver::status;
use tapedeck::tape::{StartAt, TapeReader};

use super::tape_storage;
use crate::report::{EXIT_OK, fail, human_bytes};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The tape directory, e.g. `runs/tape`.
    dir: PathBuf,
    /// Print the summary as JSON on stdout, e.g. `--json`.
    #[arg(long)]
    json: bool,
}

/// Runs `tapedeck inspect`; returns the exit code.
pub fn run(args: &Args) -> u8 {
    let info =
        match tape_storage(&args.dir).and_then(|s| tapedeck::tape::verify::inspect(s.as_ref())) {
            Ok(r) => r,
            Err(e) => return fail(&e),
        };
    let end = TapeReader::open(&args.dir, StartAt::Start)
        .and_then(|r| r.end_seq())
        .unwrap_or(0);
    let deliveries = status::read_all_now(&args.dir, end);
    // A pack (`tapedeck pack`) is a tape with a trailer: say what it holds.
    let pack = args
        .dir
        .join(tapedeck::pack::TRAILER)
        .exists()
        .then(|| tapedeck::pack::read_trailer(&args.dir));
    if args.json {
        let mut value = serde_json::to_value(&info).unwrap_or_default();
        if let Some(obj) = value.as_object_mut() {
            if let Some(p) = &pack {
                let v = match p {
                    Ok(t) => serde_json::to_value(t).unwrap_or_default(),
                    Err(e) => serde_json::json!({ "error": e.to_string() }),
                };
                obj.insert("pack".into(), v);
            }
            obj.insert("end_seq".into(), end.into());
            obj.insert(
                "deliveries".into(),
                serde_json::to_value(&deliveries).unwrap_or_default(),
            );
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return EXIT_OK;
    }
    let iso = tapedeck::record::time::iso_micros;
    println!("tape {}", args.dir.display());
    match &pack {
        Some(Ok(t)) => println!(
            "pack: {} of {} ({} bytes, {} records; ratio {:.2}), {} frames ({} plain), {} level {}, sha256 {}",
            t.layout.format(),
            t.name.as_deref().unwrap_or("standard input"),
            t.bytes,
            t.records,
            if info.bytes > 0 {
                t.bytes as f64 / info.bytes as f64
            } else {
                0.0
            },
            t.frames,
            t.raw_frames,
            t.backend.name(),
            t.level,
            t.sha256
        ),
        Some(Err(e)) => println!("pack: {e}"),
        None => {}
    }
    println!("schema:");
    for f in &info.schema {
        println!("  {f}");
    }
    println!("rows: {}", info.rows);
    if let Some((a, b)) = info.time {
        println!("time: {} .. {}", iso(a), iso(b));
    }
    println!(
        "bytes on disk: {} ({})",
        info.bytes,
        human_bytes(info.bytes)
    );
    println!("segments: {}", info.segments.len());
    for s in &info.segments {
        println!(
            "  {}  first {}  rows {}  {}{}",
            s.file,
            s.first_seq,
            s.rows,
            human_bytes(s.bytes),
            if s.sealed { "" } else { "  (open)" }
        );
    }
    if let Some((segments, rows, bytes)) = info.trimmed {
        println!(
            "retained: rows {rows}.. (retention removed rows 0..{rows}: {segments} segments, {})",
            human_bytes(bytes)
        );
    }
    for c in &info.compactions {
        println!(
            "compacted: rows {}..{} ({} segments, {} -> {} segments, {}; the old chain ended in {})",
            c.first_seq,
            c.end_seq,
            c.segments_before,
            c.segments_after,
            human_bytes(c.bytes_before),
            human_bytes(c.bytes_after),
            c.old_chain
        );
    }
    for (file, from, to, rows) in &info.quarantined {
        println!("quarantined: {file} bytes {from}..{to} ({rows} rows)");
    }
    println!("deliveries: {}", deliveries.len());
    for d in &deliveries {
        println!(
            "  {}  cursor {}  lag {} rows, {:.1}s  ({}, as of {}){}",
            d.sink,
            d.cursor.map_or_else(|| "-".to_string(), |c| c.to_string()),
            d.lag_rows,
            d.lag_seconds,
            d.state,
            d.updated_at,
            d.error
                .as_ref()
                .map(|e| format!("  last error: {e}"))
                .unwrap_or_default()
        );
        if let Some(c) = d.cursor.filter(|c| *c > end) {
            println!(
                "    PROBLEM: its cursor {c} is past the tape's end {end}: the tape lost rows this sink holds (a segment missing, or a power failure under --fsync never); run `tapedeck verify`"
            );
        }
        for r in &d.skipped {
            println!("    skipped unreadable acknowledged {r}");
        }
    }
    EXIT_OK
}
