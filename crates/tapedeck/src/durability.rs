//! When written bytes are made durable: the fsync policy, shared by everything that appends to
//! a file it promises to keep.
//!
//! It exists on its own, below both the tape and the sinks, because both take the same
//! `always | interval:DUR | never` choice (`--fsync` for the tape writer, `fsync=` for the
//! `raw:` sink) and neither should have to import the other to name it. It holds the policy
//! only; how each writer applies it (group commit on the tape, a background `fdatasync` thread
//! in the raw sink) stays with that writer. `tapedeck::tape::FsyncPolicy` re-exports it.

use std::time::Duration;

/// When appended frames are fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every append waits for an fdatasync that covers it (group commit).
    Always,
    /// An fdatasync at least this often while frames are pending.
    Interval(Duration),
    /// Never fsync; the operating system writes back when it likes.
    Never,
}

impl Default for FsyncPolicy {
    fn default() -> Self {
        FsyncPolicy::Interval(Duration::from_millis(10))
    }
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            _ => s
                .strip_prefix("interval:")
                .and_then(crate::uri::parse_duration)
                .filter(|d| !d.is_zero())
                .map(FsyncPolicy::Interval)
                .ok_or_else(|| {
                    format!("`{s}` is not always, never or interval:DURATION (e.g. interval:10ms)")
                }),
        }
    }
}
