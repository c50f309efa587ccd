//! `tapedeck meta`: run metadata kept beside a tape — which operator, calibration, setpoints and
//! gains were in force — in a journal (`DIR/META`, `docs/journal-format.md`): every change is a
//! record with its time, action and author, so the history cannot be quietly rewritten.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use tapedeck::journal::{Journal, JournalOptions};
use tapedeck::tape::FsyncPolicy;

use crate::report::{EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail};

pub use tapedeck::tape::META_FILE;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The tape directory, e.g. `runs/tape`.
    dir: PathBuf,
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand, Debug)]
enum What {
    /// Set keys, in one record, e.g. `set operator=ana gain.ai0=2.5`.
    Set {
        /// KEY=VALUE pairs; a VALUE that reads as JSON (a number, true, null, [..], {..}) is
        /// kept as that, anything else as text.
        #[arg(value_name = "KEY=VALUE", required = true)]
        pairs: Vec<String>,
        /// The record's action name, e.g. `--action calibrate`.
        #[arg(long, default_value = "set")]
        action: String,
        /// Who made the change (default: $USER).
        #[arg(long)]
        author: Option<String>,
    },
    /// Remove keys, in one record, e.g. `unset setpoint`.
    Unset {
        /// The keys.
        #[arg(value_name = "KEY", required = true)]
        keys: Vec<String>,
        /// The record's action name.
        #[arg(long, default_value = "unset")]
        action: String,
        /// Who made the change (default: $USER).
        #[arg(long)]
        author: Option<String>,
    },
    /// Print every key and value as JSON, or one key's value.
    Get {
        /// Only this key.
        key: Option<String>,
    },
    /// Print every change: time, record, action, author, and each key's old and new value.
    History {
        /// One JSON object per record (JSON lines).
        #[arg(long)]
        json: bool,
        /// After the history, keep printing changes as they are committed (e.g. by a running
        /// `tapedeck record --meta`, or `meta set` from another shell) until Ctrl-C.
        #[arg(long)]
        follow: bool,
    },
    /// Print the metadata as it stood at a time, e.g. `as-of 2026-11-29T12:00:00Z`.
    AsOf {
        /// An ISO 8601 time.
        time: String,
    },
}

/// The examples `--help` shows.
pub const HELP: &str = "Examples:
  tapedeck meta runs/tape set operator=ana 'gain.ai0=2.5' --action calibrate
  tapedeck meta runs/tape get
  tapedeck meta runs/tape history
  tapedeck meta runs/tape history --follow
  tapedeck meta runs/tape as-of 2026-11-29T12:00:00Z

The metadata lives in DIR/META, a journal: one CRC-checked record per change (time, action,
author, the change as a JSON Patch), fsynced before the command returns; every 8 MiB of records
a snapshot starts a new file (older ones stay as META.<seq>-<date>, read by `history`).
`history --follow` keeps printing changes as they are committed. `record --tape DIR
--meta KEY=VALUE` sets keys when a recording starts.";

/// Runs `tapedeck meta`; returns the exit code.
pub fn run(args: &Args) -> u8 {
    let path = args.dir.join(META_FILE);
    match &args.what {
        What::Set {
            pairs,
            action,
            author,
        } => {
            let pairs = match parse_pairs(pairs) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: {e}");
                    return EXIT_USAGE;
                }
            };
            if !args.dir.is_dir() {
                eprintln!(
                    "error: {} is not a directory; metadata is kept beside a tape (`record --tape DIR` makes one)",
                    args.dir.display()
                );
                return EXIT_USAGE;
            }
            change(&path, action, author.clone(), |m| {
                for (k, v) in pairs {
                    m.insert(k, v);
                }
            })
        }
        What::Unset {
            keys,
            action,
            author,
        } => {
            if !path.is_file() {
                eprintln!(
                    "error: {} holds no metadata; nothing to unset",
                    path.display()
                );
                return EXIT_FAILED;
            }
            change(&path, action, author.clone(), |m| {
                for k in keys {
                    m.remove(k);
                }
            })
        }
        What::Get { key } => read(&path, |j| {
            let value = j.value();
            match key {
                None => println!("{}", pretty(&value)),
                Some(k) => match value.get(k) {
                    Some(v) => println!("{}", pretty(v)),
                    None => {
                        eprintln!("error: no key `{k}` in {}", path.display());
                        return EXIT_FAILED;
                    }
                },
            }
            EXIT_OK
        }),
        What::History { json, follow } => read(&path, |j| print_history(j, &path, *json, *follow)),
        What::AsOf { time } => {
            let Some(t) = tapedeck::record::time::parse_timestamp(time) else {
                eprintln!("error: `{time}` is not an ISO 8601 time, e.g. 2026-11-29T12:00:00Z");
                return EXIT_USAGE;
            };
            read(&path, |j| match j.value_as_of(t) {
                Ok(Some(v)) => {
                    println!("{}", pretty(&v));
                    EXIT_OK
                }
                Ok(None) => {
                    eprintln!(
                        "error: {} has no record at or before {time}",
                        path.display()
                    );
                    EXIT_FAILED
                }
                Err(e) => fail(&e),
            })
        }
    }
}

/// `KEY=VALUE` pairs, values as JSON when they read as JSON.
pub fn parse_pairs(pairs: &[String]) -> Result<Vec<(String, Value)>, String> {
    pairs
        .iter()
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| format!("`{p}` is not KEY=VALUE, e.g. operator=ana"))?;
            let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
            Ok((k.to_string(), value))
        })
        .collect()
}

/// A new `META` file is started with a snapshot once the records after the last one take this
/// many bytes (the older files stay, readable: `META.<seq>-<date>`).
pub const META_SNAPSHOT_BYTES: u64 = 8 << 20;

/// Commits `edit` of the metadata map as one record (action, author), fsynced.
pub fn set_meta(
    path: &Path,
    action: &str,
    author: Option<String>,
    edit: impl FnOnce(&mut Map<String, Value>),
) -> tapedeck::Result<()> {
    let options = JournalOptions {
        fsync: FsyncPolicy::Always,
        author: author.or_else(|| std::env::var("USER").ok()),
        // Opening replays only the records since the last snapshot: a long history opens
        // fast and in memory proportional to the metadata, not to its history.
        snapshot_bytes: Some(META_SNAPSHOT_BYTES),
        ..JournalOptions::default()
    };
    let j: Journal<Map<String, Value>> = Journal::open(path, options)?;
    j.transaction(action, |m| {
        edit(m);
        Ok::<_, String>(())
    })
}

fn change(
    path: &Path,
    action: &str,
    author: Option<String>,
    edit: impl FnOnce(&mut Map<String, Value>),
) -> u8 {
    match set_meta(path, action, author, edit) {
        Ok(()) => EXIT_OK,
        Err(e) => fail(&e),
    }
}

fn read(path: &Path, f: impl FnOnce(&Journal<Map<String, Value>>) -> u8) -> u8 {
    if !path.is_file() {
        eprintln!(
            "error: {} holds no metadata yet; `tapedeck meta DIR set KEY=VALUE` starts it",
            path.display()
        );
        return EXIT_FAILED;
    }
    match Journal::open_read_only(path) {
        Ok(j) => f(&j),
        Err(e) => fail(&e),
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// One line per record (or a JSON object per record): time, record, action, author, then each
/// key's old → new value. Later snapshots (which change nothing) are left out. Records are read
/// and printed one at a time: a long history starts printing at once.
fn print_history(j: &Journal<Map<String, Value>>, path: &Path, json: bool, follow: bool) -> u8 {
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut tracker = tapedeck::journal::KeyTracker::default();
    let next = std::cell::Cell::new(0);
    let mut print = |out: &mut std::io::BufWriter<_>,
                     r: tapedeck::Result<tapedeck::journal::Record>| {
        let (r, changes) = tracker.changes_of(r?)?;
        next.set(r.seq.saturating_add(1));
        if r.action == "snapshot" && changes.is_empty() {
            return Ok(true);
        }
        Ok(writeln!(out, "{}", history_line(&r, &changes, json)).is_ok())
    };
    for r in j.records() {
        match print(&mut out, r) {
            Ok(true) => {}
            // stdout closed (`| head`): done.
            Ok(false) => return EXIT_OK,
            Err(e) => {
                let _ = out.flush();
                return fail(&e);
            }
        }
    }
    if out.flush().is_err() || !follow {
        return EXIT_OK;
    }
    let mut follower = match tapedeck::journal::JournalFollower::new(path, next.get()) {
        Ok(f) => f,
        Err(e) => return fail(&e),
    };
    let (_, stop) = crate::signals::install_ctrlc();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let records = match follower.poll(10_000) {
            Ok(r) => r,
            Err(e) => return fail(&e),
        };
        for r in records {
            match print(&mut out, Ok(r)) {
                Ok(true) => {}
                Ok(false) => return EXIT_OK,
                Err(e) => return fail(&e),
            }
        }
        if out.flush().is_err() {
            return EXIT_OK;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    EXIT_OK
}

fn history_line(
    r: &tapedeck::journal::Record,
    changes: &[tapedeck::journal::KeyChange],
    json: bool,
) -> String {
    if json {
        serde_json::json!({
            "time": tapedeck::record::time::iso_micros(r.time),
            "seq": r.seq,
            "action": r.action,
            "author": r.author,
            "changes": changes
                .iter()
                .map(|c| serde_json::json!({"key": c.key, "old": c.old, "new": c.new}))
                .collect::<Vec<_>>(),
        })
        .to_string()
    } else {
        let what = changes
            .iter()
            .map(|c| match (&c.old, &c.new) {
                (None, Some(n)) => format!("{}={n}", c.key),
                (Some(o), Some(n)) => format!("{}: {o} -> {n}", c.key),
                (Some(o), None) => format!("{} removed (was {o})", c.key),
                (None, None) => c.key.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "{}  #{}  {}{}  {}",
            tapedeck::record::time::iso_micros(r.time),
            r.seq,
            r.action,
            r.author
                .as_deref()
                .map(|a| format!(" by {a}"))
                .unwrap_or_default(),
            what
        )
    }
}
