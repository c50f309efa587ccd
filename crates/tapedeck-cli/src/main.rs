//! The `tapedeck` command line: record a source into sinks.
//!
//! This file only parses the command line and dispatches: each subcommand lives in `cmd/`
//! (its arguments and its `run`), what they share in reporting in `report/`, and signal
//! handling in `signals.rs`.

mod cmd;
mod report;
mod signals;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::report::exit_codes;
use crate::signals::quiet_on_closed_pipe;

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
    /// Record a source into one or more sinks, directly or (with --tape) through a crash-safe tape.
    #[command(after_long_help = cmd::record::help())]
    Record(cmd::record::Args),
    /// Check every CRC and the hash chain of a tape (of a pack: also its SHA-256); exit 1 on any problem.
    Verify(cmd::verify::Args),
    /// Summarise a tape: schema, segments, rows, time range, bytes, quarantined ranges.
    Inspect(cmd::inspect::Args),
    /// Print a tape's rows, optionally following it as it grows.
    Tail(cmd::tail::Args),
    /// Play a recorded tape into any sinks, as often as wanted.
    Replay(cmd::replay::Args),
    /// Read a `.dt-raw` raw-counts file (salvaging a truncated one) into any sinks.
    #[command(after_long_help = cmd::import::HELP)]
    Import(cmd::import::Args),
    /// Bring sinks up to the end of a tape, each from its own cursor, exactly once.
    #[command(after_long_help = cmd::deliver::HELP)]
    Deliver(cmd::deliver::Args),
    /// Set, get and audit a tape's run metadata (operator, calibration, setpoints), kept in a journal.
    #[command(after_long_help = cmd::meta::HELP)]
    Meta(cmd::meta::Args),
    /// Remove a tape's oldest sealed segments down to a size or an age (never rows a sink still needs).
    #[command(after_long_help = cmd::trim::HELP)]
    Trim(cmd::trim::Args),
    /// Rewrite a tape's sealed segments into fewer segments of large frames (every row kept, the chain still provable).
    #[command(after_long_help = cmd::compact::HELP)]
    Compact(cmd::compact::Args),
    /// Archive a text file (CSV, JSON lines, a log, any lines) losslessly as a queryable tape.
    #[command(after_long_help = cmd::pack::PACK_HELP)]
    Pack(cmd::pack::PackArgs),
    /// Restore a packed file byte for byte, checking its SHA-256.
    #[command(after_long_help = cmd::pack::UNPACK_HELP)]
    Unpack(cmd::pack::UnpackArgs),
    /// List every sink scheme with its URI parameters and their defaults.
    Sinks(cmd::sinks::Args),
    /// Run SQL over a tape, also while it is being recorded; print the result or write it to a sink.
    #[command(after_long_help = cmd::query::HELP)]
    Query(cmd::query::Args),
    /// Serve a live web page of a tape: plots, sinks, metadata and SQL (read-only, offline).
    #[command(after_long_help = cmd::serve::HELP)]
    Serve(cmd::serve::Args),
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
        Command::Record(args) => cmd::record::run(args),
        Command::Verify(args) => {
            quiet_on_closed_pipe();
            cmd::verify::run(&args)
        }
        Command::Inspect(args) => {
            quiet_on_closed_pipe();
            cmd::inspect::run(&args)
        }
        Command::Tail(args) => cmd::tail::run(&args),
        Command::Replay(args) => cmd::replay::run(args),
        Command::Deliver(args) => cmd::deliver::run(&args),
        Command::Import(args) => cmd::import::run(&args),
        Command::Meta(args) => {
            quiet_on_closed_pipe();
            cmd::meta::run(&args)
        }
        Command::Trim(args) => cmd::trim::run(&args),
        Command::Compact(args) => cmd::compact::run(&args),
        Command::Pack(args) => cmd::pack::run_pack(&args),
        Command::Unpack(args) => {
            quiet_on_closed_pipe();
            cmd::pack::run_unpack(&args)
        }
        Command::Query(args) => {
            quiet_on_closed_pipe();
            cmd::query::run(&args)
        }
        Command::Serve(args) => cmd::serve::run(&args),
        Command::Sinks(args) => {
            quiet_on_closed_pipe();
            cmd::sinks::run(&args)
        }
    })
}
