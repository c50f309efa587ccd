//! `tapedeck verify`: checks every CRC and the hash chain of a tape; exit 1 on any problem.

use std::path::PathBuf;

use super::tape_storage;
use crate::report::{EXIT_FAILED, EXIT_OK, fail};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The tape directory, e.g. `runs/tape`.
    dir: PathBuf,
    /// Print the report as JSON on stdout, e.g. `--json`.
    #[arg(long)]
    json: bool,
}

/// Runs `tapedeck verify`; returns the exit code (1 on any problem).
pub fn run(args: &Args) -> u8 {
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
        for c in &report.compactions {
            println!(
                "compacted: rows {}..{} were rewritten from {} segments into {}; the chain goes on through the MANIFEST's record of it (the old chain ended in {})",
                c.first_seq, c.end_seq, c.segments_before, c.segments_after, c.old_chain
            );
        }
        println!(
            "{}: {} segments, {} frames, {} rows checked; {}",
            args.dir.display(),
            report.segments,
            report.frames,
            report.rows,
            if report.problems.is_empty() && report.first_seq > 0 {
                format!(
                    "every CRC and the hash chain check out (retention removed the rows before {}; the chain is checked from the last removed segment's hash)",
                    report.first_seq
                )
            } else if report.problems.is_empty() {
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
