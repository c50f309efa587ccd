//! `tapedeck compact`: rewrites a tape's sealed segments into fewer segments of large frames —
//! every row keeps its sequence number, the new segments are checked row by row against the old
//! before one manifest record switches to them, and `verify` still proves the history.

use std::path::PathBuf;
use std::time::Instant;

use tapedeck::tape::compact::{Before, CompactOptions};

use super::record::tape::TapeCompression;
use crate::report::{EXIT_FAILED, EXIT_OK, fail, human_bytes};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The tape directory, e.g. `runs/tape`.
    dir: PathBuf,
    /// Rewrite only segments wholly before this row or time: a sequence number (`1000000`,
    /// `seq:1000000`) or an ISO 8601 time (`time:2026-11-01T00:00:00Z`, compared with each
    /// segment's newest event time). Default: every sealed segment.
    #[arg(long, value_name = "SEQ|TIME", value_parser = parse_before)]
    before: Option<Before>,
    /// Compression of the new frames.
    #[arg(long, value_enum, default_value_t = TapeCompression::Zstd)]
    compression: TapeCompression,
    /// A new segment takes old segments until their bytes reach this, e.g. `--segment-bytes
    /// 67108864` (a new segment starts where an old one did).
    #[arg(long, value_name = "N", default_value_t = 256 << 20)]
    segment_bytes: u64,
    /// Rows per new frame (a DAQ block stays a frame of its own), e.g. `--frame-rows 16384`.
    #[arg(long, value_name = "ROWS", default_value_t = tapedeck::tape::writer::DEFAULT_FRAME_ROWS)]
    frame_rows: usize,
    /// Only print what would be rewritten (opening the tape still recovers it, as every
    /// writer does).
    #[arg(long)]
    dry_run: bool,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

fn parse_before(s: &str) -> Result<Before, String> {
    s.parse()
}

/// The examples `--help` shows.
pub const HELP: &str = "Examples:
  tapedeck compact runs/tape
  tapedeck compact runs/tape --before time:2026-11-01T00:00:00Z
  tapedeck compact runs/tape --dry-run

For tapes of many small frames — a slow source, or a tape written before frames were sized for
the disk: fewer, larger frames compress better and read faster. One new segment at a time is
written beside the segments it replaces, read back and compared row by row, and only then does
one record in the tape's MANIFEST switch to it; the old files go after that. A crash at any
point leaves the old tape or the new one (the next writer finishes the switch). The old chain's
last hash is kept in that record and the new chain starts from it, so `verify` still proves the
whole history (it lists each compaction). Readers, `tail -f` and `tapedeck deliver` started
beside it (they read beside the lock holder) and queries go on undisturbed: a reader whose
segment is replaced reads the same rows from the new one. Segments with damage stay as they are
(the range stops before them). Needs the tape's writer lock: stop the recording first. Exit 1
when an error (a full disk, say) stops it part way: the segments rewritten before it stay, the
rest is as it was. A compacted tape needs this tapedeck version or a newer one.";

/// Runs `tapedeck compact`; returns the exit code.
pub fn run(args: &Args) -> u8 {
    let writer = match super::open_tape_writer(
        &args.dir,
        "a recorder (or a delivery) holds the tape; compact it once that has stopped",
    ) {
        Ok(w) => w,
        Err(code) => return code,
    };
    let options = CompactOptions {
        before: args.before.unwrap_or_default(),
        segment_bytes: args.segment_bytes.max(1 << 12),
        frame_rows: args.frame_rows.max(1),
        compression: args.compression.into(),
        apply: !args.dry_run,
    };
    let started = Instant::now();
    // Progress on stderr, a line per new segment: a large tape takes a while.
    let quiet = args.json || args.dry_run;
    let mut progress = |r: &tapedeck::tape::compact::CompactReport| {
        if !quiet {
            eprintln!(
                "  rows {}..{} rewritten: {} segments -> {}, {} -> {} ({:.0} rows/s)",
                r.first_seq,
                r.first_seq.saturating_add(r.rows),
                r.replaced.len(),
                r.files.len(),
                human_bytes(r.bytes_before),
                human_bytes(r.bytes_after),
                r.rows as f64 / started.elapsed().as_secs_f64().max(1e-9)
            );
        }
    };
    let report = match writer
        .watch()
        .compact_with_progress(&options, &mut progress)
    {
        Ok(r) => r,
        Err(e) => {
            let _ = writer.close();
            return fail(&e);
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    if let Err(e) = writer.close() {
        return fail(&e);
    }
    // Stopped by an error after switching some segments: what was done stays, and says so,
    // but the run did not do what was asked.
    let code = if report.error.is_some() {
        EXIT_FAILED
    } else {
        EXIT_OK
    };
    if args.json {
        let mut value = serde_json::to_value(&report).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.insert("dry_run".into(), args.dry_run.into());
            map.insert("seconds".into(), seconds.into());
        }
        println!("{value}");
        return code;
    }
    if let Some(e) = &report.error {
        eprintln!(
            "error: {e} (the segments rewritten before it stay; run `tapedeck compact` again for the rest)"
        );
    }
    if let Some(why) = &report.stopped {
        println!("stopped early: {why}");
    }
    if report.replaced.is_empty() {
        let why = if report.stopped.is_some() {
            "nothing before that to compact"
        } else {
            "the sealed segments in range are already segments of full frames"
        };
        println!("{}: nothing compacted ({why})", args.dir.display());
        return EXIT_OK;
    }
    let end = report.first_seq.saturating_add(report.rows);
    if args.dry_run {
        println!(
            "{}: would rewrite rows {}..{end}: {} segments, {} frames, {}",
            args.dir.display(),
            report.first_seq,
            report.replaced.len(),
            report.frames_before,
            human_bytes(report.bytes_before)
        );
        return EXIT_OK;
    }
    for f in &report.files {
        println!("wrote {f}");
    }
    println!(
        "{}: rows {}..{end} rewritten in {seconds:.1}s: {} segments -> {}, {} frames -> {}, {} -> {}",
        args.dir.display(),
        report.first_seq,
        report.replaced.len(),
        report.files.len(),
        report.frames_before,
        report.frames_after,
        human_bytes(report.bytes_before),
        human_bytes(report.bytes_after)
    );
    code
}
