//! The subcommands, one module each: its clap arguments (`Args`) and its `run`, which calls the
//! library and returns the exit code. Here too: the argument types more than one command takes.

pub mod compact;
pub mod deliver;
pub mod import;
pub mod inspect;
pub mod meta;
pub mod pack;
pub mod query;
pub mod record;
pub mod replay;
pub mod serve;
pub mod sinks;
pub mod tail;
pub mod trim;
pub mod verify;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;
use tapedeck::Error;
use tapedeck::deliver::NewStart;
use tapedeck::tape::StartAt;
use tapedeck::tape::storage::Storage;

// `--from` of `record --tape` and `deliver` (no doc comment: clap would show it).
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum NewFrom {
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

/// Parses `--from` of `tail` and `replay`: start, end, seq:N or time:ISO.
pub fn parse_start(s: &str) -> Result<StartAt, String> {
    s.parse()
}

/// Parses a positive duration option, e.g. `250ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    tapedeck::uri::parse_duration(s)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("`{s}` is not a positive duration; try 250ms, 1s, 5m"))
}

/// The storage of the tape directory `dir` (`verify`, `inspect`), or the error saying it is no
/// tape directory.
pub fn tape_storage(dir: &Path) -> Result<Arc<dyn Storage>, Error> {
    tapedeck::tape::verify::storage_for(dir)
}

/// Opens the tape in `dir` for a command that changes it (`trim`, `compact`): recovered and
/// locked as any writer does. On an error it has been printed (with `hint` when another
/// process holds the tape) and the exit code is returned.
pub fn open_tape_writer(dir: &Path, hint: &str) -> Result<tapedeck::tape::TapeWriter, u8> {
    if !dir.is_dir() {
        eprintln!(
            "error: {} is not a tape directory (a tape is made by `tapedeck record --tape DIR`)",
            dir.display()
        );
        return Err(crate::report::EXIT_FAILED);
    }
    match tapedeck::tape::TapeWriter::open(dir, tapedeck::tape::TapeOptions::default()) {
        Ok(w) => Ok(w),
        Err(e @ Error::TapeLocked { .. }) => {
            eprintln!("error: {e}");
            eprintln!("hint: {hint}");
            Err(crate::report::EXIT_FAILED)
        }
        Err(e) => Err(crate::report::fail(&e)),
    }
}
