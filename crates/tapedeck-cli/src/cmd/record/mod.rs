//! `tapedeck record`: a source into sinks, directly through the pipe or, with `--tape`, onto a
//! tape first with one delivery per sink (`tape.rs`); then the summary and the exit code.

pub(crate) mod tape;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tapedeck::pipe::{PipeOptions, Progress};
use tapedeck::recorder::Recorder;
use tapedeck::source;
use tapedeck::tape::FsyncPolicy;

use self::tape::{TapeCompression, parse_fsync};
use super::{NewFrom, parse_duration};
use crate::report::json::write_summary_json;
use crate::report::progress::{ProgressMode, progress_loop, show_progress};
use crate::report::{
    EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, delivery_failure, exit_codes, fail, print_deliveries,
    print_summary, report_recovery,
};
use crate::signals::install_ctrlc;

/// The examples and the sources, before the generated list of sinks in `--help`.
const HELP_BEFORE_SINKS: &str = "Examples:
  # 5 s of simulated DAQ blocks (8 channels at 10 kHz) into an Arrow IPC file
  tapedeck record --source sim:daq --duration 5s --sink ipc:run.arrow

  # one million alicat samples into CSV and JSONL at once, summary as JSON
  tapedeck record --source 'sim:alicat?n=1000000' --sink csv:run.csv --sink jsonl:run.jsonl \\
      --summary-json summary.json

  # a rolling Parquet directory and a SQLite table from the same stream
  tapedeck record --source 'sim:alicat?rate=1000' --duration 1m \\
      --sink 'parquet:parts/?roll_rows=10000' --sink 'sqlite:lab.db?table=samples'

  # into an existing PostgreSQL table (the password never appears in output)
  tapedeck record --source 'sim:alicat?rate=100' \\
      --sink 'postgres://lab:secret@db.local:5432/plant?schema=raw&table=flow'

  # onto a crash-safe tape first, each row acknowledged after its fdatasync; the sinks are fed
  # from the tape, each from its own cursor, exactly once even if the recorder is killed
  tapedeck record --source 'sim:alicat?rate=1000' --tape runs/tape --fsync always \\
      --sink csv:run.csv --sink 'sqlite:lab.db?table=samples&create_table=true'
  tapedeck verify runs/tape
  tapedeck record --source 'sim:alicat?rate=1000' --tape runs/tape --sink csv:run.csv   # resumes

  # an edge recorder publishing its tape to NATS JetStream, and the central recorder
  # consuming every edge into its own tape (docs/scale-out.md)
  tapedeck record --source sim:daq --tape edge1 \\
      --sink 'nats://hub:4222/lab.edge1?stream=LAB&create_stream=true&subjects=lab.>'
  tapedeck record --source 'nats://hub:4222/lab.>?stream=LAB&durable=central' \\
      --tape central --sink 'parquet:lake/'

  # tail a CSV stream from stdin, skipping malformed lines, flushing every 250 ms
  producer | tapedeck record --source 'stdin:csv?on_error=skip' --flush-interval 250ms \\
      --sink 'csv:log.csv?append=true'

Sources:
  sim:alicat?n=N&rate=HZ           alicat-sample rows; unbounded without n; unpaced without rate
  sim:daq?channels=8&rate=10000&block=1000&blocks=N&pace=real|max&raw=true
                                   simulated DAQ blocks (rate is per channel)
  stdin:csv | stdin:jsonl | stdin:lines
  file:PATH                        .csv / .jsonl / anything else as lines; format=csv|jsonl|lines
  file:PATH.dt-raw                 a raw-counts file, chunk by chunk as blocks
  nats://HOST:PORT/SUBJECT?stream=S&durable=NAME&stop_after_idle=DUR
                                   a JetStream durable consumer (needs --tape): messages are
                                   acknowledged once the tape has their rows; SUBJECT may use
                                   * and >; adds _nats_* and _origin_* columns
  mqtt://HOST:PORT/TOPIC/#?qos=1&client_id=ID&stop_after_idle=DUR
                                   JSON messages, one row each with a _topic column (needs
                                   --tape): PUBACK once the tape has the row; on_error=skip
  Line sources take on_error=fail|skip (default fail) and, for CSV, infer_rows=N (default
  1000) and types=NAME:TYPE,... (int|float|bool|timestamp|text). A column keeps the type of its
  first infer_rows lines (up to 1 value in 20 there may be a typo: those lines are malformed);
  the summary says which type each column got.

";

/// The notes after the list of sinks, and the exit codes.
const HELP_AFTER_SINKS: &str = concat!(
    "  File sinks never replace an existing file unless the URI says overwrite=true (or append=true).
  CSV and JSONL refuse DAQ blocks unless the URI says accept_blocks=true.

",
    exit_codes!()
);

/// The examples and notes `--help` shows after the options; the sinks come from
/// [`tapedeck::sink::descriptors`] (those this build includes).
pub fn help() -> String {
    let mut out = String::from(HELP_BEFORE_SINKS);
    out.push_str("Sinks:\n");
    out.push_str(&super::sinks::help_lines());
    out.push_str(HELP_AFTER_SINKS);
    out
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where records come from, e.g. `sim:daq`, `sim:alicat?n=1000`, `stdin:csv`, `file:log.jsonl`.
    #[arg(long, value_name = "URI")]
    source: String,

    /// Where records go; repeat for several sinks, e.g. `--sink csv:run.csv --sink ipc:run.arrow`
    /// (optional with --tape).
    #[arg(long = "sink", value_name = "URI", required_unless_present = "tape")]
    sinks: Vec<String>,

    /// Rows buffered before they are written to the sinks, e.g. `--batch-size 1000`.
    #[arg(long, value_name = "ROWS", default_value_t = 64)]
    batch_size: usize,

    /// Longest time rows wait in the buffer, even if the source goes quiet (with --tape: also
    /// the longest time a delivered row waits for its cursor commit), e.g. `250ms`, `1s`.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    flush_interval: Duration,

    /// Stop after this many rows, e.g. `--limit 1000000`.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,

    /// Stop after this long, e.g. `--duration 5s`, `--duration 10m`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    duration: Option<Duration>,

    /// Write the run's summary as JSON to this file (`-` for stdout), e.g. `--summary-json s.json`.
    #[arg(long, value_name = "PATH")]
    summary_json: Option<PathBuf>,

    /// Show a progress line on stderr (rows, rows/s, bytes, elapsed), e.g. `--progress always`.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    progress: ProgressMode,

    /// Do not print the summary to stderr.
    #[arg(long, short)]
    quiet: bool,

    /// Record onto the tape in this directory first (created, or recovered and appended to); the
    /// sinks are then fed from the tape, each from its own cursor, e.g. `--tape runs/tape`.
    #[arg(long, value_name = "DIR")]
    tape: Option<PathBuf>,

    /// When tape frames are acknowledged: always (after the fdatasync that covers them, group
    /// committed), interval:DUR (an fdatasync at least that often), or never (once handed to the
    /// OS, every 10 ms: survives a killed process, not a power failure), e.g. `--fsync always`.
    #[arg(long, value_name = "POLICY", default_value = "interval:10ms", value_parser = parse_fsync)]
    fsync: FsyncPolicy,

    /// Compression of tape frames: none, lz4 or zstd, e.g. `--compression lz4`.
    #[arg(long, value_enum, default_value_t = TapeCompression::Zstd)]
    compression: TapeCompression,

    /// Roll to a new tape segment past this many bytes, e.g. `--segment-bytes 67108864`.
    #[arg(long, value_name = "N", default_value_t = 256 << 20)]
    segment_bytes: u64,

    /// Rows per tape frame: the flushes that arrive while the previous commit is in flight are
    /// joined into one frame, cut once it holds this many rows (1: a frame per flush), e.g.
    /// `--frame-rows 8192`.
    #[arg(long, value_name = "ROWS", default_value_t = tapedeck::tape::writer::DEFAULT_FRAME_ROWS,
          value_parser = clap::value_parser!(usize))]
    frame_rows: usize,

    /// With --tape: where a sink that holds nothing from this tape yet starts (the tape's first
    /// row, or only rows recorded from now on), e.g. `--from end`.
    #[arg(long, value_enum, default_value_t = NewFrom::Start, requires = "tape")]
    from: NewFrom,

    /// With --tape: accept rows that share no data column with what the tape holds (by
    /// default refused: it is almost always the wrong source or the wrong tape).
    #[arg(long, requires = "tape")]
    allow_schema_change: bool,

    /// With --tape: set run metadata as the recording starts (one record of the tape's META
    /// journal, action `record`; see `tapedeck meta`), e.g. `--meta operator=ana --meta gain=2.5`.
    #[arg(long = "meta", value_name = "KEY=VALUE", requires = "tape")]
    meta: Vec<String>,

    /// With --tape: keep the tape to a size or an age (`10GiB`, `7d`, `10GiB,7d`): every 100 ms
    /// the oldest sealed segments beyond it are removed — never rows a sink known to the tape
    /// has not received (see `tapedeck trim`).
    #[arg(long, value_name = "SIZE|AGE", requires = "tape", value_parser = crate::cmd::trim::parse_retention)]
    retain: Option<tapedeck::tape::retention::Retention>,

    /// With --tape: warn (log and progress line) when the tape's disk has less than this
    /// percentage free (0 to 50); with --retain, trim early back to twice it, e.g. `--disk-warning 10`.
    #[arg(long, value_name = "PERCENT", requires = "tape", default_value_t = tapedeck::tape::retention::DEFAULT_DISK_WARNING, value_parser = parse_percent)]
    disk_warning: f64,

    /// With --tape: when the disk is full, wait this long for space — acknowledging nothing
    /// meanwhile and going on by itself when space returns (a retention trim, a file removed) —
    /// before stopping with an error, e.g. `--disk-full-timeout 10m`; `0` stops at once. By
    /// default it waits as long as it takes (the progress line and the log say so). The tape
    /// keeps 64 KiB free (and room for the open segment's index), so it stops between
    /// frames, never while sealing a segment.
    #[arg(long, value_name = "DURATION", requires = "tape", value_parser = parse_duration)]
    disk_full_timeout: Option<std::time::Duration>,

    /// With --tape: serve a live web page of the recording at this address while it runs
    /// (see `tapedeck serve --help`), e.g. `--serve 127.0.0.1:8080`.
    #[arg(long, value_name = "ADDR", requires = "tape")]
    serve: Option<std::net::SocketAddr>,

    /// With --serve: the token every request to the page must carry (at least 16
    /// characters); made up and printed when --serve is not a loopback address.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "TAPEDECK_SERVE_TOKEN",
        hide_env_values = true
    )]
    serve_token: Option<String>,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|p| (0.0..=50.0).contains(p))
        .ok_or_else(|| format!("`{s}` is not a percentage from 0 to 50, e.g. 5"))
}

/// Runs `tapedeck record`; returns the exit code.
pub fn run(args: Args) -> u8 {
    let src = match source::open(&args.source) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    // Rows the run will take, when known: the progress line shows a share and a time left.
    let expected = match (src.expected_rows(), args.limit) {
        (Some(n), Some(l)) => Some(n.min(l)),
        (n, l) => n.or(l),
    };

    let meta = match super::meta::parse_pairs(&args.meta) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: --meta {e}");
            return crate::report::EXIT_USAGE;
        }
    };
    let (stop, interrupted) = install_ctrlc();
    let progress = Arc::new(Progress::default());
    let options = PipeOptions {
        batch_size: args.batch_size,
        flush_interval: args.flush_interval,
        limit: args.limit,
        duration: args.duration,
        stop,
        progress: Some(progress.clone()),
        ..PipeOptions::default()
    };
    if let Err(e) = options.validate() {
        return fail(&e);
    }
    // The library's front door does the careful part: every URI checked before the first file
    // is created (a typo in the last `--sink` leaves no empty file behind from the first), the
    // tape recovered and locked, one delivery per sink started from its cursor.
    let mut builder = Recorder::builder();
    if let Some(dir) = &args.tape {
        builder = builder
            .tape(dir)
            .tape_options(tape::options(&args))
            .delivery_options(tape::delivery_options(&args));
        if let Some(r) = args.retain {
            builder = builder.retain(r);
        }
        builder = builder.disk_warning(args.disk_warning);
    }
    for uri in &args.sinks {
        builder = builder.sink(uri);
    }
    let mut rec = match builder.open() {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    if let (Some(dir), Some(r)) = (&args.tape, rec.recovery()) {
        report_recovery(dir, r);
    }
    // The page (`--serve`): stopped when this function returns, after the summary.
    let _page = match (&args.tape, args.serve) {
        (Some(dir), Some(addr)) => {
            match super::serve::start_for_record(dir, addr, args.serve_token.clone()) {
                Ok(page) => Some(page),
                Err(code) => return code,
            }
        }
        _ => None,
    };
    if let Some(dir) = args.tape.as_ref().filter(|_| !meta.is_empty()) {
        let path = dir.join(super::meta::META_FILE);
        if let Err(e) = super::meta::set_meta(&path, "record", None, |m| m.extend(meta)) {
            return fail(&e);
        }
    }
    let done = Arc::new(AtomicBool::new(false));
    let names = rec.sink_names();
    // Read before `src` moves into the pipe: the column types a text source inferred, and the
    // bytes it read (the progress line's compression ratio).
    let src_counters = src.counters();
    let ticker = show_progress(args.progress).then(|| {
        let done = done.clone();
        let progress = progress.clone();
        let counters = src_counters.clone();
        let acked = rec
            .tape_watch()
            .map(|(w, first)| (w, first, Some(counters)));
        let statuses = rec.status_handle();
        let disk = args.tape.clone().map(|d| (d, args.disk_warning));
        std::thread::spawn(move || {
            progress_loop(
                &progress,
                &done,
                acked,
                &names,
                statuses.as_ref(),
                expected,
                disk.as_ref(),
            );
        })
    });
    let report = rec.pipe(src, &options);
    let (tape, deliveries) = if args.tape.is_some() {
        let (t, d) = tape::finish(rec, &interrupted);
        (t, Some(d))
    } else {
        (None, None)
    };
    done.store(true, Ordering::SeqCst);
    if let Some(t) = ticker {
        let _ = t.join();
    }
    if !args.quiet {
        print_summary(&report.summary, tape.is_some());
        if let Some(t) = src_counters.column_types() {
            eprintln!("  {t}");
        }
        if let Some(t) = &tape {
            tape::print_line(t, &report.summary);
        }
    }
    if let Some(t) = &tape {
        tape::report_unacknowledged(t);
    }
    if !args.quiet
        && let Some(d) = &deliveries
    {
        print_deliveries(d);
    }
    if let Some(path) = &args.summary_json
        && let Err(e) = write_summary_json(
            path,
            &report.summary,
            tape,
            deliveries.as_deref(),
            src_counters.column_types().as_ref(),
        )
    {
        eprintln!("error: {e}");
        return EXIT_FAILED;
    }
    if let Some(e) = &report.error {
        return fail(e);
    }
    if let Some(code) = deliveries.as_deref().and_then(delivery_failure) {
        return code;
    }
    if interrupted.load(Ordering::SeqCst) {
        EXIT_INTERRUPTED
    } else {
        EXIT_OK
    }
}
