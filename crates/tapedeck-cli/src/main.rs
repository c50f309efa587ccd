//! The `tapedeck` command line: record a source into sinks.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use tapedeck::deliver::{
    Delivery, DeliveryOptions, DeliveryStatus, NewStart, TapeEnd, TapeRef, status,
};
use tapedeck::pipe::{PipeOptions, Progress, StopSignal, Summary, pipe_report};
use tapedeck::sink::tape::TapeSink;
use tapedeck::tape::{FsyncPolicy, StartAt, TapeOptions, TapeReader, TapeWatch, TapeWriter};
use tapedeck::{Error, sink, source};

/// Exit status: success.
const EXIT_OK: u8 = 0;
/// Exit status: the run failed (source or sink error); what was received was flushed first.
const EXIT_FAILED: u8 = 1;
/// Exit status: bad usage (option, URI, parameter, or a file that would be overwritten).
const EXIT_USAGE: u8 = 2;
/// Exit status: finished, but acknowledged rows the tape could no longer supply (damage found
/// after they were acknowledged) were skipped by a delivery; each range was printed.
const EXIT_SKIPPED: u8 = 3;
/// Exit status: stopped by Ctrl-C / SIGTERM after flushing everything received.
const EXIT_INTERRUPTED: u8 = 130;
/// After Ctrl-C / SIGTERM, how long deliveries may go on bringing their sinks up to the tape's
/// end before they are stopped where they are (their cursors committed).
const STOP_GRACE: Duration = Duration::from_secs(5);

macro_rules! exit_codes {
    () => {
        "Exit codes:
  0    the run finished (source ended, --limit or --duration reached)
  1    the run failed (a source or sink error); everything received was flushed first
  2    bad usage: unknown option, malformed URI, unknown URI parameter, existing output file
  3    finished, but a delivery skipped acknowledged rows the tape could no longer supply
       (damage found after they were acknowledged); each range was printed as an error
  130  stopped by Ctrl-C or SIGTERM; everything received was flushed and the summary printed"
    };
}

#[derive(Parser, Debug)]
#[command(
    name = "tapedeck",
    version,
    about = "A crash-safe flight recorder for measurement and event streams",
    long_about = "tapedeck records measurement and event streams (instrument samples, DAQ blocks, \
CSV / JSONL / text lines) and delivers them to files and databases.",
    after_long_help = exit_codes!()
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Record a source into one or more sinks (and, with --tape, onto a tape).
    #[command(after_long_help = RECORD_HELP)]
    Record(RecordArgs),
    /// Check every CRC and the hash chain of a tape; exit 1 on any problem.
    Verify(VerifyArgs),
    /// Summarise a tape: schema, segments, rows, time range, bytes, quarantined ranges.
    Inspect(InspectArgs),
    /// Print a tape's rows, optionally following it as it grows.
    Tail(TailArgs),
    /// Play a recorded tape into any sinks, as often as wanted.
    Replay(ReplayArgs),
    /// Read a `.dt-raw` raw-counts file (salvaging a truncated one) into any sinks.
    #[command(after_long_help = IMPORT_HELP)]
    Import(ImportArgs),
    /// Bring sinks up to the end of a tape, each from its own cursor, exactly once.
    #[command(after_long_help = DELIVER_HELP)]
    Deliver(DeliverArgs),
}

#[derive(clap::Args, Debug)]
struct ImportArgs {
    /// The `.dt-raw` file, e.g. `run.dt-raw`.
    file: PathBuf,
    /// Where the blocks go; repeat for several, e.g. `--sink parquet:run.parquet`.
    #[arg(long = "sink", value_name = "URI", required = true)]
    sinks: Vec<String>,
    /// Write the summary as JSON to this file (`-` for stdout), e.g. `--summary-json s.json`.
    #[arg(long, value_name = "PATH")]
    summary_json: Option<PathBuf>,
    /// Do not print the summary to stderr.
    #[arg(long, short)]
    quiet: bool,
}

const IMPORT_HELP: &str = "Examples:
  # a dtollib recording into Parquet, codes converted to volts where the header has ranges
  tapedeck import run.dt-raw --sink parquet:run.parquet

  # a file cut short by a crash: every complete chunk is kept, and where it stopped is printed
  tapedeck import crashed.dt-raw --sink 'csv:crashed.csv?accept_blocks=true'

Each chunk becomes one block: block_index is the chunk's seq, first_sample_index and times
are kept, the codes are kept as <channel>_raw columns, and an overrun_marker flag becomes
error_type `overrun`. The same file can be a source of `record`: --source file:run.dt-raw.";

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum NewFrom {
    /// From the first row of the tape.
    Start,
    /// Only rows recorded from now on.
    End,
}

impl From<NewFrom> for NewStart {
    fn from(f: NewFrom) -> NewStart {
        match f {
            NewFrom::Start => NewStart::Start,
            NewFrom::End => NewStart::End,
        }
    }
}

#[derive(clap::Args, Debug)]
struct DeliverArgs {
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

const DELIVER_HELP: &str = "Examples:
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

#[derive(clap::Args, Debug)]
struct VerifyArgs {
    /// The tape directory, e.g. `runs/tape`.
    dir: PathBuf,
    /// Print the report as JSON on stdout, e.g. `--json`.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct InspectArgs {
    /// The tape directory, e.g. `runs/tape`.
    dir: PathBuf,
    /// Print the summary as JSON on stdout, e.g. `--json`.
    #[arg(long)]
    json: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum TailFormat {
    /// Aligned columns.
    Table,
    /// CSV with a header.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

#[derive(clap::Args, Debug)]
struct TailArgs {
    /// The tape directory, e.g. `runs/tape`.
    dir: PathBuf,
    /// Keep waiting for new rows, e.g. `--follow` (stop with Ctrl-C).
    #[arg(long, short)]
    follow: bool,
    /// Where to start: start, end, seq:N or time:ISO, e.g. `--from time:2026-01-01T00:00:00Z`.
    #[arg(long, default_value = "start", value_parser = parse_start)]
    from: StartAt,
    /// Output format, e.g. `--format jsonl`.
    #[arg(long, value_enum, default_value_t = TailFormat::Table)]
    format: TailFormat,
}

#[derive(clap::Args, Debug)]
struct ReplayArgs {
    /// The tape directory, e.g. `runs/tape`.
    dir: PathBuf,
    /// Where rows go; repeat for several, e.g. `--sink parquet:run.parquet`.
    #[arg(long = "sink", value_name = "URI", required = true)]
    sinks: Vec<String>,
    /// Where to start: start, seq:N or time:ISO, e.g. `--from seq:1000`.
    #[arg(long, default_value = "start", value_parser = parse_start)]
    from: StartAt,
    /// Stop before this sequence number, e.g. `--to 5000`.
    #[arg(long, value_name = "SEQ")]
    to: Option<u64>,
    /// Rows per write to the sinks, e.g. `--batch-size 10000`.
    #[arg(long, value_name = "ROWS", default_value_t = 65_536)]
    batch_size: usize,
    /// Write the summary as JSON to this file (`-` for stdout), e.g. `--summary-json s.json`.
    #[arg(long, value_name = "PATH")]
    summary_json: Option<PathBuf>,
    /// Do not print the summary to stderr.
    #[arg(long, short)]
    quiet: bool,
}

fn parse_start(s: &str) -> Result<StartAt, String> {
    s.parse()
}

const RECORD_HELP: &str = concat!(
    "Examples:
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
  Line sources take on_error=fail|skip (default fail) and, for CSV, infer_rows=N (default
  1000) and types=NAME:TYPE,... (int|float|bool|timestamp|text). A column keeps the type of its
  first infer_rows lines (up to 1 value in 20 there may be a typo: those lines are malformed);
  the summary says which type each column got.

Sinks:
  csv:PATH      RFC 4180, header from the first batch; overwrite, append, accept_blocks, strict
  jsonl:PATH    one JSON object per line, no schema lock; overwrite, append, accept_blocks
  ipc:PATH      Arrow IPC file (pyarrow.ipc.open_file); overwrite, strict, batch_rows
  sqlite:PATH   SQLite database; table (readings), blocks_table (blocks), blocks=summary|long,
                create_table, timestamps=iso|unix_us, journal_mode, synchronous, busy_timeout,
                strict. One transaction per flush.
  parquet:PATH  one Parquet file, visible only once complete; parquet:DIR/ rolling parts
                (roll_rows, roll_interval); compression=zstd|snappy|lz4|gzip|none, level,
                dictionary, row_group_rows (131072), blocks=wide|long, overwrite, strict
  postgres://USER[:PASSWORD]@HOST[:PORT]/DB
                PostgreSQL over binary COPY, one transaction per flush; schema (public),
                table (readings), blocks_table (blocks), blocks, create_table (true;
                false: the table must exist), use_copy, connect_timeout (30s), statement_timeout (30s),
                close_timeout (10s), application_name, synchronous_commit (off), retry_for (5m),
                buffer_rows (1000000), strict. Reconnects if the server goes away, holding rows
                (the progress line says the sink is behind) and writing each exactly once.
  raw:PATH      DAQ blocks' raw codes as .dt-raw v2 (dtollib-compatible, with per-channel
                ranges, a final marker, overruns as zero-payload chunks); overwrite,
                fsync=always|never|interval:DUR (interval:10ms)
  memory:       kept in memory (tests);   null:  discarded (benchmarks)
  File sinks never replace an existing file unless the URI says overwrite=true (or append=true).
  CSV and JSONL refuse DAQ blocks unless the URI says accept_blocks=true.

",
    exit_codes!()
);

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum ProgressMode {
    /// Only when stderr is a terminal.
    Auto,
    /// Always, also into a pipe or file (one line per refresh).
    Always,
    /// Never.
    Never,
}

#[derive(clap::Args, Debug)]
struct RecordArgs {
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

    /// With --tape: where a sink that holds nothing from this tape yet starts (the tape's first
    /// row, or only rows recorded from now on), e.g. `--from end`.
    #[arg(long, value_enum, default_value_t = NewFrom::Start, requires = "tape")]
    from: NewFrom,

    /// With --tape: accept rows that share no data column with what the tape holds (by
    /// default refused: it is almost always the wrong source or the wrong tape).
    #[arg(long, requires = "tape")]
    allow_schema_change: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum TapeCompression {
    /// No compression.
    None,
    /// LZ4 frame.
    Lz4,
    /// zstd.
    Zstd,
}

fn parse_fsync(s: &str) -> Result<FsyncPolicy, String> {
    s.parse()
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    tapedeck::uri::parse_duration(s)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("`{s}` is not a positive duration; try 250ms, 1s, 5m"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Colour only on a terminal, and never with NO_COLOR set (https://no-color.org): logs that
    // go to a file or a pipe stay plain text.
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TAPEDECK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    ExitCode::from(match cli.command {
        Command::Record(args) => record(args),
        Command::Verify(args) => {
            quiet_on_closed_pipe();
            verify(&args)
        }
        Command::Inspect(args) => {
            quiet_on_closed_pipe();
            inspect(&args)
        }
        Command::Tail(args) => tail(&args),
        Command::Replay(args) => replay(args),
        Command::Deliver(args) => deliver(&args),
        Command::Import(args) => import(&args),
    })
}

/// For commands that only print (`inspect`, `verify`): a reader that closes the pipe early
/// (`tapedeck inspect DIR | head`) ends the process quietly, as it does any Unix tool, instead
/// of `println!` panicking on the write error. Not for `record`: a recorder must flush its tape
/// whatever happens to stdout.
fn quiet_on_closed_pipe() {
    // SAFETY: restoring the default disposition of SIGPIPE touches no memory and runs before
    // any other thread of this process is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn fail(e: &Error) -> u8 {
    eprintln!("error: {e}");
    if e.is_usage() {
        EXIT_USAGE
    } else {
        EXIT_FAILED
    }
}

fn record(args: RecordArgs) -> u8 {
    let src = match source::open(&args.source) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    // Rows the run will take, when known: the progress line shows a share and a time left.
    let expected = match (src.expected_rows(), args.limit) {
        (Some(n), Some(l)) => Some(n.min(l)),
        (n, l) => n.or(l),
    };

    // Every URI and option is checked before the first file is created, so a typo in the last
    // `--sink` leaves no empty file behind from the first.
    let specs = match parse_sinks(&args.sinks, args.tape.is_some()) {
        Ok(s) => s,
        Err(e) => return fail(&e),
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
    let mut sinks = Vec::new();
    let mut tape_run: Option<(PathBuf, TapeWatch, u64, Delivery)> = None;
    if let Some(dir) = &args.tape {
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
        let writer = match TapeWriter::open(dir, options) {
            Ok(w) => w,
            Err(e) => return fail(&e),
        };
        report_recovery(dir, &writer);
        let watch = writer.watch();
        let start = writer.next_seq();
        let tape = TapeRef {
            dir: dir.clone(),
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
        let delivery =
            match Delivery::start(tape, specs, TapeEnd::Live(watch.clone()), &delivery_options) {
                Ok(d) => d,
                Err(e) => return fail(&e),
            };
        sinks.push(Box::new(TapeSink::from_writer(
            format!("tape:{}", dir.display()),
            writer,
        )) as Box<dyn sink::Sink>);
        tape_run = Some((dir.clone(), watch, start, delivery));
    } else {
        for (_, spec) in specs {
            match spec.open() {
                Ok(s) => sinks.push(s),
                Err(e) => return fail(&e),
            }
        }
    }
    let done = Arc::new(AtomicBool::new(false));
    let names: Vec<String> = sinks.iter().map(|s| s.name().to_string()).collect();
    let ticker = show_progress(args.progress).then(|| {
        let done = done.clone();
        let progress = progress.clone();
        let acked = tape_run
            .as_ref()
            .map(|(_, w, start, _)| (w.clone(), *start));
        let statuses = tape_run.as_ref().map(|(.., d)| d.status_handle());
        std::thread::spawn(move || {
            progress_loop(&progress, &done, acked, &names, statuses.as_ref(), expected);
        })
    });
    // Read before `src` moves into the pipe: the column types a text source inferred.
    let src_counters = src.counters();
    let report = pipe_report(src, sinks, &options);
    let mut deliveries = None;
    let tape = tape_run.map(|(dir, w, start, delivery)| {
        let waiting: Vec<String> = delivery
            .statuses()
            .into_iter()
            .filter(|s| matches!(s.state.as_str(), "opening" | "reconnecting"))
            .map(|s| s.sink)
            .collect();
        if !waiting.is_empty() {
            eprintln!(
                "waiting for {} to come back (up to 5 minutes); press Ctrl-C twice to stop now — committed rows stay, and `tapedeck deliver` catches up later",
                waiting.join(", ")
            );
        }
        // The tape is closed: every sink is brought to its acknowledged end (all of it, unless
        // the tape failed, or the user stops it).
        let statuses = delivery.status_handle();
        deliveries = Some(delivery.finish_or_stop(w.durable_seq(), &|| {
            stop_requested(&interrupted, &statuses)
        }));
        serde_json::json!({
            "dir": dir.display().to_string(),
            "first_seq": start,
            "end_seq": w.next_seq(),
            "acknowledged": w.durable_seq().saturating_sub(start),
            "received": w.next_seq().saturating_sub(start),
        })
    });
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
            let bytes = report
                .summary
                .sinks
                .iter()
                .find(|k| k.uri.starts_with("tape:"))
                .map_or(0, |k| k.bytes);
            eprintln!(
                "  tape {}: {} rows acknowledged (sequence {}..{}), {}{}",
                t["dir"].as_str().unwrap_or(""),
                t["acknowledged"],
                t["first_seq"],
                t["end_seq"],
                human_bytes(bytes),
                report
                    .summary
                    .sinks
                    .iter()
                    .find(|k| k.uri.starts_with("tape:"))
                    .and_then(|k| k.error.as_ref())
                    .map(|e| format!(" — FAILED: {e}"))
                    .unwrap_or_default()
            );
        }
    }
    if let Some(t) = &tape {
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

/// Parses every sink URI, keeping the URI as shown (credentials removed) beside its spec. A
/// delivery (`delivered`) decides itself whether an existing file is one it continues.
fn parse_sinks(uris: &[String], delivered: bool) -> Result<Vec<(String, sink::SinkSpec)>, Error> {
    let specs = uris
        .iter()
        .map(|uri| {
            let spec = if delivered {
                // An existing file the delivery would refuse is a usage error now, before the
                // tape is created or recovered (exit 2, as without a tape).
                let spec = sink::parse_unchecked(uri)?;
                tapedeck::deliver::target::check_destination(&spec)?;
                spec
            } else {
                sink::parse(uri)?
            };
            Ok((tapedeck::uri::redact(uri), spec))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    // Two sinks writing one file (or one table) would corrupt it: refused before anything is
    // created.
    sink::check_distinct(specs.iter().map(|(_, s)| s))?;
    Ok(specs)
}

/// True once deliveries should stop where they are: Ctrl-C / SIGTERM came, and the deliveries
/// have had [`STOP_GRACE`] to bring their sinks to the tape's end. Says which sinks it stops.
fn stop_requested(interrupted: &AtomicBool, statuses: &tapedeck::deliver::StatusHandle) -> bool {
    static SINCE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    if !interrupted.load(Ordering::SeqCst) {
        return false;
    }
    let since = *SINCE.get_or_init(Instant::now);
    if since.elapsed() < STOP_GRACE {
        return false;
    }
    for s in statuses.statuses() {
        if !matches!(s.state.as_str(), "done" | "failed") {
            eprintln!(
                "stopping the delivery to {} ({}, cursor {}) without waiting for it: committed rows stay; `tapedeck deliver` catches up later",
                s.sink,
                s.state,
                s.cursor.map_or_else(|| "-".to_string(), |c| c.to_string())
            );
        }
    }
    true
}

/// Ctrl-C / SIGTERM stop the run after flushing; a second one exits at once.
fn install_ctrlc() -> (StopSignal, Arc<AtomicBool>) {
    let stop = StopSignal::default();
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let interrupted = interrupted.clone();
        let handler = ctrlc::set_handler(move || {
            if interrupted.swap(true, Ordering::SeqCst) {
                // A second Ctrl-C while flushing: the user insists.
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
            stop.stop();
        });
        if let Err(e) = handler {
            tracing::warn!("cannot install the Ctrl-C handler: {e}");
        }
    }
    (stop, interrupted)
}

fn show_progress(mode: ProgressMode) -> bool {
    match mode {
        ProgressMode::Always => true,
        ProgressMode::Never => false,
        ProgressMode::Auto => std::io::stderr().is_terminal(),
    }
}

fn report_recovery(dir: &std::path::Path, writer: &TapeWriter) {
    let r = writer.recovery();
    if !r.is_clean() {
        eprintln!(
            "tape {}: recovered — {} torn tail(s) cut, {} damaged range(s) quarantined, {} segment(s) sealed; {} rows on the tape",
            dir.display(),
            r.truncated.len(),
            r.quarantined.len(),
            r.resealed.len(),
            r.rows
        );
    }
}

/// Exit code for failed deliveries, or for deliveries that skipped unreadable rows.
fn delivery_failure(statuses: &[DeliveryStatus]) -> Option<u8> {
    for s in statuses {
        for range in &s.skipped {
            eprintln!(
                "error: delivery to {}: acknowledged {range}; skipped — the sink does not hold them",
                s.sink
            );
        }
    }
    let skipped = statuses.iter().any(|s| !s.skipped.is_empty());
    let failed: Vec<&DeliveryStatus> = statuses.iter().filter(|s| s.state == "failed").collect();
    if failed.is_empty() {
        return skipped.then_some(EXIT_SKIPPED);
    }
    for s in failed {
        let error = s.error.as_deref().unwrap_or("unknown error");
        // Delivery errors name their sink already; others get it added.
        let what = if error.starts_with("delivery to ") {
            error.to_string()
        } else {
            format!("delivery to {} failed: {error}", s.sink)
        };
        eprintln!(
            "error: {what}; the tape keeps every row — fix the cause and run `tapedeck deliver` to catch up"
        );
    }
    Some(EXIT_FAILED)
}

fn print_deliveries(statuses: &[DeliveryStatus]) {
    for s in statuses {
        eprintln!(
            "  {}: {} — {} rows delivered this run, cursor {}, {} rows behind{}",
            s.sink,
            s.state,
            s.rows,
            s.cursor.map_or_else(|| "-".to_string(), |c| c.to_string()),
            s.lag_rows,
            s.error
                .as_ref()
                .map(|e| format!(" — {e}"))
                .unwrap_or_default()
        );
    }
}

fn import(args: &ImportArgs) -> u8 {
    let specs = match parse_sinks(&args.sinks, false) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let src = match tapedeck::dtraw::DtRawSource::open(&args.file) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let report_handle = src.report();
    let mut sinks = Vec::new();
    for (_, spec) in specs {
        match spec.open() {
            Ok(s) => sinks.push(s),
            Err(e) => return fail(&e),
        }
    }
    let options = PipeOptions::default();
    let report = pipe_report(src, sinks, &options);
    let read = report_handle
        .lock()
        .map(|r| r.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    if !args.quiet {
        print_summary(&report.summary, false);
        eprintln!(
            "  {}: {} chunks read, {} zero-payload markers, {}",
            args.file.display(),
            read.chunks,
            read.markers,
            match (&read.stop, read.complete) {
                (Some(s), _) => format!(
                    "TRUNCATED: stopped at byte {} of {} ({}); every complete chunk before it was imported",
                    s.offset, s.file_len, s.reason
                ),
                (None, true) => "complete (final marker present)".to_string(),
                (None, false) =>
                    "ends without a final marker (the recorder may have stopped early)".to_string(),
            }
        );
    }
    if let Some(path) = &args.summary_json {
        let mut value = serde_json::to_value(&report.summary).unwrap_or_default();
        if let Some(obj) = value.as_object_mut() {
            obj.insert(
                "dt_raw".into(),
                serde_json::json!({
                    "chunks": read.chunks,
                    "markers": read.markers,
                    "complete": read.complete,
                    "stopped_at": read.stop.as_ref().map(|s| s.offset),
                    "file_len": read.stop.as_ref().map(|s| s.file_len),
                    "stop_reason": read.stop.as_ref().map(|s| s.reason.clone()),
                }),
            );
        }
        if let Err(e) = write_json(path, &value) {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    }
    match &report.error {
        Some(e) => fail(e),
        None => EXIT_OK,
    }
}

fn deliver(args: &DeliverArgs) -> u8 {
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
            report_recovery(&args.dir, &w);
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
    let delivery = match Delivery::start(tape, specs, end.clone(), &options) {
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
    let statuses = match end {
        TapeEnd::Fixed(e) => delivery.finish_or_stop(e, &stop),
        _ => delivery.wait_or_stop(&stop),
    };
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

fn progress_loop(
    progress: &Progress,
    done: &AtomicBool,
    acked: Option<(TapeWatch, u64)>,
    sink_names: &[String],
    deliveries: Option<&tapedeck::deliver::StatusHandle>,
    expected: Option<u64>,
) {
    let in_place = std::io::stderr().is_terminal();
    let start = Instant::now();
    let mut last = (Instant::now(), 0u64);
    let mut stderr = std::io::stderr();
    while !done.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(250));
        let rows = progress.rows();
        let now = Instant::now();
        let dt = now.duration_since(last.0).as_secs_f64();
        let rate = if dt > 0.0 {
            (rows - last.1.min(rows)) as f64 / dt
        } else {
            0.0
        };
        last = (now, rows);
        let mut line = if deliveries.is_some() && acked.is_none() {
            format!("{:.1}s", start.elapsed().as_secs_f64())
        } else {
            format!(
                "{rows} rows  {}  {}  {:.1}s",
                human_rate(rate),
                human_bytes(progress.bytes()),
                start.elapsed().as_secs_f64()
            )
        };
        if let Some(n) = expected.filter(|n| *n > 0) {
            line.push_str(&progress_share(rows, n, start.elapsed()));
        }
        if let Some((w, first)) = &acked {
            line.push_str(&format!(
                "  acked {}",
                w.durable_seq().saturating_sub(*first)
            ));
        }
        for (name, behind) in sink_names.iter().zip(progress.sinks_behind()) {
            if behind > 0 {
                line.push_str(&format!("  {name} behind {behind} rows (reconnecting)"));
            }
        }
        if let Some(d) = deliveries {
            for s in d.statuses() {
                if s.replaced_at_end && s.state == "delivering" {
                    // Rebuilt whole and swapped in at the end: no cursor moves before that.
                    line.push_str(&format!(
                        "  {}: {} rows written, replaced at the end",
                        s.sink, s.rows
                    ));
                    continue;
                }
                line.push_str(&format!(
                    "  {}: cursor {} lag {} rows {:.1}s{}",
                    s.sink,
                    s.cursor.map_or_else(|| "-".to_string(), |c| c.to_string()),
                    s.lag_rows,
                    s.lag_seconds,
                    match s.state.as_str() {
                        "delivering" | "done" => String::new(),
                        other => format!(" ({other})"),
                    }
                ));
            }
        }
        let _ = if in_place {
            write!(stderr, "\r\x1b[2K{line}")
        } else {
            writeln!(stderr, "{line}")
        };
        let _ = stderr.flush();
    }
    if in_place {
        let _ = write!(stderr, "\r\x1b[2K");
    }
}

/// `  42%  ETA 3s`: the share of `n` rows done and the time left at the average rate so far.
fn progress_share(rows: u64, n: u64, elapsed: Duration) -> String {
    let done = rows.min(n);
    let pct = done as f64 * 100.0 / n as f64;
    let secs = elapsed.as_secs_f64();
    let eta = if done == 0 || secs <= 0.0 {
        "?".to_string()
    } else {
        let left = (n - done) as f64 / (done as f64 / secs);
        humantime::format_duration(Duration::from_secs(left.ceil() as u64)).to_string()
    };
    format!("  {pct:.0}%  ETA {eta}")
}

fn human_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2}M rows/s", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1}k rows/s", r / 1e3)
    } else {
        format!("{r:.0} rows/s")
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The run's summary on stderr. With a tape, its line (rows acknowledged, bytes) is printed by
/// the caller, so the tape is not listed twice.
fn print_summary(s: &Summary, taped: bool) {
    eprintln!(
        "recorded {} rows in {:.2}s ({}), ended by {}{}",
        s.rows,
        s.seconds,
        human_rate(s.rows_per_sec),
        s.ended_by,
        if s.skipped > 0 {
            format!(", {} malformed lines skipped", s.skipped)
        } else {
            String::new()
        }
    );
    for k in s
        .sinks
        .iter()
        .filter(|k| !(taped && k.uri.starts_with("tape:")))
    {
        eprintln!(
            "  {}: {} rows, {}{}",
            k.uri,
            k.rows,
            human_bytes(k.bytes),
            k.error
                .as_ref()
                .map(|e| format!(" — FAILED: {e}"))
                .unwrap_or_default()
        );
    }
}

fn write_summary_json(
    path: &PathBuf,
    s: &Summary,
    tape: Option<serde_json::Value>,
    deliveries: Option<&[DeliveryStatus]>,
    columns: Option<&tapedeck::source::lines::ColumnTypes>,
) -> Result<(), Error> {
    let mut value = serde_json::to_value(s).map_err(bad_json)?;
    if let Some(obj) = value.as_object_mut() {
        if let Some(c) = columns {
            let list: Vec<serde_json::Value> = c
                .columns
                .iter()
                .map(|(name, t)| serde_json::json!({ "name": name, "type": t.keyword() }))
                .collect();
            obj.insert("columns".into(), serde_json::Value::Array(list));
        }
        if let Some(t) = tape {
            obj.insert("tape".into(), t);
        }
        if let Some(d) = deliveries {
            obj.insert(
                "deliveries".into(),
                serde_json::to_value(d).map_err(bad_json)?,
            );
        }
    }
    write_json(path, &value)
}

fn bad_json(e: serde_json::Error) -> Error {
    Error::InvalidOption {
        option: "--summary-json",
        message: e.to_string(),
    }
}

/// Writes `value` pretty-printed to `path` (`-` for stdout).
fn write_json(path: &PathBuf, value: &serde_json::Value) -> Result<(), Error> {
    let mut text = serde_json::to_string_pretty(value).map_err(bad_json)?;
    text.push('\n');
    if path.as_os_str() == "-" {
        // A closed stdout is an error to report, not a panic.
        let mut out = std::io::stdout().lock();
        return out
            .write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| Error::io("write the summary to", "stdout", e));
    }
    std::fs::write(path, text).map_err(|e| Error::io("write", path, e))
}

fn tape_storage(
    dir: &std::path::Path,
) -> Result<std::sync::Arc<dyn tapedeck::tape::storage::Storage>, Error> {
    tapedeck::tape::verify::storage_for(dir)
}

fn verify(args: &VerifyArgs) -> u8 {
    let report =
        match tape_storage(&args.dir).and_then(|s| tapedeck::tape::verify::verify(s.as_ref())) {
            Ok(r) => r,
            Err(e) => return fail(&e),
        };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        for p in &report.problems {
            println!("PROBLEM {p}");
        }
        println!(
            "{}: {} segments, {} frames, {} rows checked; {}",
            args.dir.display(),
            report.segments,
            report.frames,
            report.rows,
            if report.problems.is_empty() {
                "every CRC and the hash chain check out".to_string()
            } else {
                format!("{} problem(s)", report.problems.len())
            }
        );
    }
    if report.problems.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

fn inspect(args: &InspectArgs) -> u8 {
    let info =
        match tape_storage(&args.dir).and_then(|s| tapedeck::tape::verify::inspect(s.as_ref())) {
            Ok(r) => r,
            Err(e) => return fail(&e),
        };
    let end = TapeReader::open(&args.dir, StartAt::Start)
        .and_then(|r| r.end_seq())
        .unwrap_or(0);
    let deliveries = deliveries_now(&args.dir, end);
    if args.json {
        let mut value = serde_json::to_value(&info).unwrap_or_default();
        if let Some(obj) = value.as_object_mut() {
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

/// The tape's delivery status files, with the lag recomputed against the tape's end now: rows
/// behind, and seconds since the sink last held everything.
fn deliveries_now(dir: &std::path::Path, end: u64) -> Vec<DeliveryStatus> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    status::read_all(dir)
        .into_iter()
        .map(|mut d| {
            d.tape_end = end;
            d.lag_rows = end.saturating_sub(d.cursor.unwrap_or(0));
            d.lag_seconds = match tapedeck::record::time::parse_timestamp(&d.caught_up_at) {
                Some(t) if d.lag_rows > 0 => (now - t).max(0) as f64 / 1e6,
                _ => 0.0,
            };
            d
        })
        .collect()
}

fn tail(args: &TailArgs) -> u8 {
    let reader = match TapeReader::open(&args.dir, args.from) {
        Ok(r) => r.follow(args.follow),
        Err(e) => return fail(&e),
    };
    let mut out = std::io::stdout().lock();
    let mut enc = tapedeck::sink::text::TextEncoder::default();
    let mut header = true;
    // Table widths carry over from batch to batch (they only grow), so a followed tape's
    // columns stay put.
    let mut widths: Vec<usize> = Vec::new();
    for item in reader {
        let (_, batch) = match item {
            Ok(x) => x,
            Err(e) => return fail(&e),
        };
        let mut buf = Vec::new();
        let r = match args.format {
            TailFormat::Jsonl => enc.jsonl(&batch, &mut buf),
            TailFormat::Csv | TailFormat::Table => {
                if header {
                    tapedeck::sink::text::TextEncoder::csv_header(&batch.schema(), &mut buf);
                }
                enc.csv(&batch, &mut buf)
            }
        };
        if let Err(e) = r {
            return fail(&e);
        }
        if args.format == TailFormat::Table {
            buf = as_table(&buf, header, &mut widths);
        }
        header = false;
        if out.write_all(&buf).and_then(|()| out.flush()).is_err() {
            // The reader of our output went away (e.g. `| head`): a normal end.
            return EXIT_OK;
        }
    }
    EXIT_OK
}

/// CSV text as aligned columns: each column as wide as its widest value so far (`widths`
/// carries them from chunk to chunk and only grows).
fn as_table(csv_text: &[u8], header: bool, widths: &mut Vec<usize>) -> Vec<u8> {
    let rows: Vec<Vec<String>> = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(csv_text)
        .records()
        .filter_map(Result::ok)
        .map(|r| r.iter().map(str::to_string).collect())
        .collect();
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    if widths.len() < cols {
        widths.resize(cols, 0);
    }
    for (c, w) in widths.iter_mut().enumerate() {
        let here = rows
            .iter()
            .filter_map(|r| r.get(c))
            .map(|v| v.chars().count())
            .max()
            .unwrap_or(0);
        *w = (*w).max(here);
    }
    let widths: &[usize] = widths;
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, v)| format!("{v:<w$}", w = widths[c]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if i == 0 && header {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            out.push_str(&rule.join("  "));
            out.push('\n');
        }
    }
    out.into_bytes()
}

fn replay(args: ReplayArgs) -> u8 {
    let specs = match parse_sinks(&args.sinks, false) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let reader = match TapeReader::open(&args.dir, args.from) {
        Ok(r) => r.until(args.to),
        Err(e) => return fail(&e),
    };
    let options = PipeOptions {
        batch_size: args.batch_size,
        flush_interval: Duration::from_secs(1),
        ..PipeOptions::default()
    };
    if let Err(e) = options.validate() {
        return fail(&e);
    }
    let mut sinks = Vec::new();
    for (_, spec) in specs {
        match spec.open() {
            Ok(s) => sinks.push(s),
            Err(e) => return fail(&e),
        }
    }
    let report = pipe_report(reader, sinks, &options);
    if !args.quiet {
        print_summary(&report.summary, false);
    }
    if let Some(path) = &args.summary_json
        && let Err(e) = write_summary_json(path, &report.summary, None, None, None)
    {
        eprintln!("error: {e}");
        return EXIT_FAILED;
    }
    match &report.error {
        Some(e) => fail(e),
        None => EXIT_OK,
    }
}
