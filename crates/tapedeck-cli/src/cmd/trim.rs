//! `tapedeck trim`: removes a tape's oldest sealed segments down to a size or an age — never
//! the last segment, never a row a sink known to the tape has not received (unless `--force`,
//! which says which sinks lose what). A running recorder does the same with `record --retain`.

use std::path::PathBuf;

use tapedeck::deliver::status;
use tapedeck::tape::retention::Retention;

use crate::report::{EXIT_FAILED, EXIT_OK, fail, human_bytes};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The tape directory, e.g. `runs/tape`.
    dir: PathBuf,
    /// What to keep: a size (`10GiB`, `500MB`), an age of the rows' event time (`7d`, `12h`,
    /// `30m`), or both (`10GiB,7d`).
    #[arg(long, value_name = "SIZE|AGE", value_parser = parse_retention)]
    keep: Retention,
    /// Remove rows that sinks known to the tape have not received yet (each one's loss is
    /// printed); without it, trimming stops at the oldest sink's cursor.
    #[arg(long)]
    force: bool,
    /// Only print what would be removed (opening the tape still recovers it, as every writer
    /// does: an open segment left by a crash is sealed).
    #[arg(long)]
    dry_run: bool,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Parses `--keep` / `--retain`.
pub fn parse_retention(s: &str) -> Result<Retention, String> {
    s.parse()
}

/// The examples `--help` shows.
pub const HELP: &str = "Examples:
  tapedeck trim runs/tape --keep 10GiB
  tapedeck trim runs/tape --keep 7d --dry-run
  tapedeck trim runs/tape --keep 1GiB --force     # even rows a sink has not received

Whole sealed segments go, oldest first; each removal is recorded in the tape's MANIFEST first,
so `verify` still proves the remaining hash chain and says where it begins, and `inspect`
shows the retained range. A sink whose cursor is behind the new start can no longer be
delivered to from this tape (its delivery fails, naming the first row left). Needs the tape's
writer lock: on a tape being recorded, use `record --retain SIZE|AGE` instead.";

/// Runs `tapedeck trim`; returns the exit code.
pub fn run(args: &Args) -> u8 {
    let writer = match super::open_tape_writer(
        &args.dir,
        "a recorder holds the tape; give it `--retain SIZE|AGE` instead",
    ) {
        Ok(w) => w,
        Err(code) => return code,
    };
    let statuses = match status::read_all_strict(&args.dir) {
        Ok(s) => s,
        Err(why) if !args.force => {
            let _ = writer.close();
            eprintln!(
                "error: {why}; a sink it describes may still need rows, so nothing is trimmed (fix or remove the file, or --force)"
            );
            return EXIT_FAILED;
        }
        Err(_) => status::read_all(&args.dir),
    };
    // A sink with no cursor yet holds nothing: it still needs every row.
    let oldest = statuses.iter().map(|s| s.cursor.unwrap_or(0)).min();
    let protect = if args.force { None } else { oldest };
    let report = match writer.watch().trim(&args.keep, protect, !args.dry_run) {
        Ok(r) => r,
        Err(e) => {
            let _ = writer.close();
            return fail(&e);
        }
    };
    if let Err(e) = writer.close() {
        return fail(&e);
    }
    let losses: Vec<(String, u64)> = statuses
        .iter()
        .filter_map(|s| {
            let c = s.cursor.unwrap_or(0);
            (c < report.first_seq).then(|| (s.sink.clone(), c))
        })
        .collect();
    if args.json {
        let value = serde_json::json!({
            "dry_run": args.dry_run,
            "removed": report.removed,
            "first_seq": report.first_seq,
            "bytes": report.bytes,
            "held_back_at": report.held_back.map(|(seq, _)| seq),
            "sinks_losing_rows": losses
                .iter()
                .map(|(sink, c)| serde_json::json!({"sink": sink, "from": c, "to": report.first_seq}))
                .collect::<Vec<_>>(),
        });
        println!("{value}");
        return EXIT_OK;
    }
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for s in &report.removed {
        println!(
            "{verb} {}  rows {}..{}  {}",
            s.file,
            s.first_seq,
            s.first_seq.saturating_add(s.rows),
            human_bytes(s.bytes)
        );
    }
    let freed: u64 = report.removed.iter().map(|s| s.bytes).sum();
    println!(
        "{}: {verb} {} segments ({}); the tape {} at row {}, {} of segments",
        args.dir.display(),
        report.removed.len(),
        human_bytes(freed),
        if args.dry_run {
            "would start"
        } else {
            "starts"
        },
        report.first_seq,
        human_bytes(report.bytes)
    );
    if let Some((seq, _)) = report.held_back {
        let who: Vec<&str> = statuses
            .iter()
            .filter(|s| s.cursor.unwrap_or(0) == seq)
            .map(|s| s.sink.as_str())
            .collect();
        println!(
            "kept rows from {seq} on: {} has not received them yet (`tapedeck deliver` first, or --force)",
            if who.is_empty() {
                "a sink".to_string()
            } else {
                who.join(", ")
            }
        );
    }
    for (sink, c) in &losses {
        println!(
            "{sink} {} rows {c}..{} it has not received",
            if args.dry_run { "would lose" } else { "lost" },
            report.first_seq
        );
    }
    EXIT_OK
}
