//! `tapedeck replay`: plays a recorded tape (a range of it) into any sinks, as often as wanted.

use std::path::PathBuf;
use std::time::Duration;

use tapedeck::pipe::PipeOptions;
use tapedeck::recorder::Recorder;
use tapedeck::tape::{StartAt, TapeReader};

use super::parse_start;
use crate::report::json::write_summary_json;
use crate::report::{EXIT_FAILED, EXIT_OK, fail, print_summary};

#[derive(clap::Args, Debug)]
pub struct Args {
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

/// Runs `tapedeck replay`; returns the exit code.
pub fn run(args: Args) -> u8 {
    let options = PipeOptions {
        batch_size: args.batch_size,
        flush_interval: Duration::from_secs(1),
        ..PipeOptions::default()
    };
    if let Err(e) = options.validate() {
        return fail(&e);
    }
    // The sinks are checked first (a bad URI is a usage error whatever the tape) and opened
    // only once the tape is: a missing tape leaves an existing file alone.
    let builder = Recorder::builder().sinks(&args.sinks);
    if let Err(e) = builder.check() {
        return fail(&e);
    }
    let reader = match TapeReader::open(&args.dir, args.from) {
        Ok(r) => r.until(args.to),
        Err(e) => return fail(&e),
    };
    let recorder = match builder.open() {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let (report, _) = recorder.run(reader, &options, &|| false);
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
