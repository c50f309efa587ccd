//! `tapedeck deliver`: brings sinks up to the end of a tape, each from its own cursor, exactly
//! once — alone (recovering and locking the tape) or beside a recorder that holds it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tapedeck::Error;
use tapedeck::deliver::parse_sinks;
use tapedeck::deliver::{Delivery, DeliveryOptions, TapeEnd, TapeRef};
use tapedeck::pipe::Progress;
use tapedeck::tape::{TapeOptions, TapeWriter};

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
    let specs = match parse_sinks(&args.sinks, true) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    // Same message as `verify` and `inspect` for a path that is no tape directory.
    if let Err(e) = tapedeck::tape::verify::storage_for(&args.dir) {
        return fail(&e);
    }
    let (_, interrupted) = install_ctrlc();
    // Opening the writer recovers the tape and takes its lock, so no recorder appends to it
    // (or delivers to the same sinks) meanwhile. If a recorder holds it, this delivery runs
    // beside it as a reader, up to what the recorder publishes as acknowledged, and ends when
    // the recorder does.
    let (writer, tape_id, end) = match TapeWriter::open(&args.dir, TapeOptions::default()) {
        Ok(w) => {
            report_recovery(&args.dir, w.recovery());
            let id = w.id().to_string();
            let end = TapeEnd::Fixed(w.next_seq());
            (Some(w), id, end)
        }
        Err(Error::TapeLocked { pid, .. }) => {
            let id = tapedeck::tape::verify::storage_for(&args.dir).and_then(|s| {
                tapedeck::tape::id::read_or_create(s.as_ref(), false)?.ok_or_else(|| Error::Tape {
                    path: args.dir.clone(),
                    message:
                        "the recorder has not written the tape's id yet; try again in a moment"
                            .into(),
                })
            });
            let id = match id {
                Ok(id) => id,
                Err(e) => return fail(&e),
            };
            if !args.quiet {
                eprintln!(
                    "tape {} is being recorded by process {pid}: delivering alongside it, up to what it has acknowledged, until it stops (Ctrl-C to stop sooner; committed rows stay)",
                    args.dir.display()
                );
            }
            (None, id, TapeEnd::Published(args.dir.clone()))
        }
        Err(e) => return fail(&e),
    };
    let tape = TapeRef {
        dir: args.dir.clone(),
        id: tape_id,
    };
    let options = DeliveryOptions {
        flush_interval: args.flush_interval,
        new_start: args.from.into(),
        quarantine: writer.as_ref().map(TapeWriter::watch),
        ..DeliveryOptions::default()
    };
    let started = Instant::now();
    let delivery = match Delivery::start(tape, specs, end, &options) {
        Ok(d) => d,
        Err(e) => return fail(&e),
    };
    let done = Arc::new(AtomicBool::new(false));
    let ticker = show_progress(args.progress).then(|| {
        let done = done.clone();
        let statuses = delivery.status_handle();
        std::thread::spawn(move || {
            progress_loop(
                &Progress::default(),
                &done,
                None,
                &[],
                Some(&statuses),
                None,
            );
        })
    });
    let handle = delivery.status_handle();
    let stop = || stop_requested(&interrupted, &handle);
    // The end is in the delivery already: the tape's end, or the recorder's last position.
    let statuses = delivery.wait_or_stop(&stop);
    let end = statuses.iter().map(|s| s.tape_end).max().unwrap_or(0);
    done.store(true, Ordering::SeqCst);
    if let Some(t) = ticker {
        let _ = t.join();
    }
    if let Some(w) = writer
        && let Err(e) = w.close()
    {
        return fail(&e);
    }
    if !args.quiet {
        eprintln!(
            "delivered tape {} (rows up to sequence {end}) in {:.2}s",
            args.dir.display(),
            started.elapsed().as_secs_f64()
        );
        print_deliveries(&statuses);
    }
    if let Some(path) = &args.summary_json {
        let value = serde_json::json!({
            "tape": { "dir": args.dir.display().to_string(), "end_seq": end },
            "seconds": started.elapsed().as_secs_f64(),
            "deliveries": statuses,
        });
        if let Err(e) = write_json(path, &value) {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    }
    delivery_failure(&statuses).unwrap_or(if interrupted.load(Ordering::SeqCst) {
        EXIT_INTERRUPTED
    } else {
        EXIT_OK
    })
}
