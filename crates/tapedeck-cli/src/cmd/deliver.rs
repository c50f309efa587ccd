//! `tapedeck deliver`: brings sinks up to the end of a tape, each from its own cursor, exactly
//! once — alone (recovering and locking the tape) or beside a recorder that holds it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tapedeck::deliver::DeliveryOptions;
use tapedeck::pipe::Progress;
use tapedeck::recorder::Recorder;

use super::{NewFrom, parse_duration};
use crate::report::json::write_json;
use crate::report::progress::{ProgressMode, progress_loop, show_progress};
use crate::report::{
    EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, delivery_failure, fail, print_deliveries,
    report_recovery,
};
use crate::signals::{install_ctrlc, stop_requested};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The tape directory, e.g. `runs/tape`.
    dir: PathBuf,
    /// Where rows go; repeat for several, e.g. `--sink csv:run.csv`. Each continues from its
    /// own cursor.
    #[arg(long = "sink", value_name = "URI", required = true)]
    sinks: Vec<String>,
    /// Where a sink that holds nothing from this tape yet starts, e.g. `--from end`.
    #[arg(long, value_enum, default_value_t = NewFrom::Start)]
    from: NewFrom,
    /// Commit each sink's cursor at least this often, e.g. `--flush-interval 250ms`.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    flush_interval: Duration,
    /// Write the summary as JSON to this file (`-` for stdout), e.g. `--summary-json s.json`.
    #[arg(long, value_name = "PATH")]
    summary_json: Option<PathBuf>,
    /// Show a progress line on stderr, e.g. `--progress always`.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    progress: ProgressMode,
    /// Do not print the summary to stderr.
    #[arg(long, short)]
    quiet: bool,
}

/// The examples and notes `--help` shows after the options.
pub const HELP: &str = "Examples:
  # after a crash (or a database outage): bring every sink up to the end of the tape
  tapedeck deliver runs/tape --sink csv:run.csv --sink 'sqlite:lab.db?table=samples'

  # add a sink later that only wants what is recorded from now on
  tapedeck deliver runs/tape --sink 'parquet:parts/?roll_rows=100000' --from end

The tape is recovered first (as `record --tape` would) and locked while the delivery runs. If
a recorder is writing the tape, the delivery runs beside it instead: it delivers what the
recorder has acknowledged, follows it, and ends when the recorder stops (a sink the recorder
already feeds is refused: each destination is locked by the delivery writing it).

Each sink's cursor lives with its data: a row in tapedeck_cursor (SQLite, PostgreSQL), a hidden
cursor file beside the file (CSV, JSONL, raw .dt-raw, Arrow IPC, a single Parquet file), or
.tapedeck-cursor inside a parquet:DIR/. See docs/delivery.md.";

/// Runs `tapedeck deliver`; returns the exit code.
pub fn run(args: &Args) -> u8 {
    let (_, interrupted) = install_ctrlc();
    let options = DeliveryOptions {
        flush_interval: args.flush_interval,
        new_start: args.from.into(),
        ..DeliveryOptions::default()
    };
    let started = Instant::now();
    let run = Recorder::builder()
        .tape(&args.dir)
        .sinks(&args.sinks)
        .delivery_options(options)
        .deliver();
    let run = match run {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    if let Some(recovery) = run.recovery() {
        report_recovery(&args.dir, recovery);
    }
    if let Some(pid) = run.beside_recorder()
        && !args.quiet
    {
        eprintln!(
            "tape {} is being recorded by process {pid}: delivering alongside it, up to what it has acknowledged, until it stops (Ctrl-C to stop sooner; committed rows stay)",
            args.dir.display()
        );
    }
    let done = Arc::new(AtomicBool::new(false));
    let ticker = show_progress(args.progress).then(|| {
        let done = done.clone();
        let statuses = run.status_handle();
        std::thread::spawn(move || {
            progress_loop(
                &Progress::default(),
                &done,
                None,
                &[],
                Some(&statuses),
                None,
                None,
            );
        })
    });
    let handle = run.status_handle();
    let stop = || stop_requested(&interrupted, &handle);
    // The end is in the delivery already: the tape's end, or the recorder's last position.
    let finished = run.finish_with(&stop);
    done.store(true, Ordering::SeqCst);
    if let Some(t) = ticker {
        let _ = t.join();
    }
    let summary = match finished {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    if !args.quiet {
        eprintln!(
            "delivered tape {} (rows up to sequence {}) in {:.2}s",
            args.dir.display(),
            summary.end_seq,
            started.elapsed().as_secs_f64()
        );
        print_deliveries(&summary.deliveries);
    }
    if let Some(path) = &args.summary_json {
        let value = serde_json::json!({
            "tape": { "dir": args.dir.display().to_string(), "end_seq": summary.end_seq },
            "seconds": started.elapsed().as_secs_f64(),
            "deliveries": summary.deliveries,
        });
        if let Err(e) = write_json(path, &value) {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    }
    delivery_failure(&summary.deliveries).unwrap_or(if interrupted.load(Ordering::SeqCst) {
        EXIT_INTERRUPTED
    } else {
        EXIT_OK
    })
}
