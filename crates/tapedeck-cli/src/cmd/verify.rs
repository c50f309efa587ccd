//! `tapedeck verify`: checks every CRC and the hash chain of a tape (and of a pack, that it
//! restores its original: counts and SHA-256); exit 1 on any problem.

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
    // A pack (`tapedeck pack`): also restore it to nowhere, checking the record and byte counts
    // and the SHA-256 of the original its trailer holds.
    let pack = args.dir.join(tapedeck::pack::TRAILER).exists().then(|| {
        tapedeck::pack::unpack(&args.dir, std::io::sink(), &mut |_| {}).map_err(|e| e.to_string())
    });
    if args.json {
        let mut value = serde_json::to_value(&report).unwrap_or_default();
        if let (Some(p), Some(obj)) = (&pack, value.as_object_mut()) {
            let v = match p {
                Ok(r) => serde_json::json!({ "ok": true, "bytes": r.bytes, "records": r.records }),
                Err(e) => serde_json::json!({ "ok": false, "error": e }),
            };
            obj.insert("pack".into(), v);
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        match &pack {
            Some(Ok(r)) => println!(
                "pack: {} records, {} bytes restored; counts and SHA-256 match the trailer",
                r.records, r.bytes
            ),
            Some(Err(e)) => println!("PROBLEM pack: {e}"),
            None => {}
        }
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
    if report.problems.is_empty() && pack.is_none_or(|p| p.is_ok()) {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}
