//! `tapedeck import`: reads a `.dt-raw` raw-counts file (salvaging a truncated one) into any
//! sinks, and says how much of the file it read.

use std::path::PathBuf;

use tapedeck::pipe::PipeOptions;
use tapedeck::recorder::Recorder;

use crate::report::json::write_json;
use crate::report::{EXIT_FAILED, EXIT_OK, fail, print_summary};

#[derive(clap::Args, Debug)]
pub struct Args {
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

/// The examples and notes `--help` shows after the options.
pub const HELP: &str = "Examples:
  # a dtollib recording into Parquet, codes converted to volts where the header has ranges
  tapedeck import run.dt-raw --sink parquet:run.parquet

  # a file cut short by a crash: every complete chunk is kept, and where it stopped is printed
  tapedeck import crashed.dt-raw --sink 'csv:crashed.csv?accept_blocks=true'

Each chunk becomes one block: block_index is the chunk's seq, first_sample_index and times
are kept, the codes are kept as <channel>_raw columns, and an overrun_marker flag becomes
error_type `overrun`. The same file can be a source of `record`: --source file:run.dt-raw.";

/// Runs `tapedeck import`; returns the exit code.
pub fn run(args: &Args) -> u8 {
    // The sinks are checked first (a bad URI is a usage error whatever the file) and opened
    // only once the file is: a missing file leaves an existing sink file alone.
    let builder = Recorder::builder().sinks(&args.sinks);
    if let Err(e) = builder.check() {
        return fail(&e);
    }
    let src = match tapedeck::dtraw::DtRawSource::open(&args.file) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let recorder = match builder.open() {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let report_handle = src.report();
    let (report, _) = recorder.run(src, &PipeOptions::default(), &|| false);
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
