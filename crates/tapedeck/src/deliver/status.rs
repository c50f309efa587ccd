//! Where each delivery stands, for people: the progress line, `--summary-json`, and
//! `tapedeck inspect`.
//!
//! Each worker keeps a [`DeliveryStatus`] in memory and writes it, at most once a second and when
//! it stops, to `TAPE/deliveries/<hash>.json` (written under a temporary name and renamed).
//! These files are informative only: the cursor that counts lives with each sink's data.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Folder of the status files inside a tape directory.
pub const DIR: &str = "deliveries";

/// Where a delivery is; written as the lowercase word in status files and summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Opening the sink (connecting, finding its cursor).
    Opening,
    /// Writing rows from the tape.
    Delivering,
    /// Its server is away: rows wait (on the tape, or held by the sink) until it is back.
    Reconnecting,
    /// Brought to the tape's end; the sink is closed.
    Done,
    /// Stopped where it was (Ctrl-C, or the process going down); its cursor is committed.
    Aborted,
    /// Failed; `error` says why. The tape keeps every row for the next delivery.
    Failed,
}

impl DeliveryState {
    /// The lowercase word (`delivering`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Opening => "opening",
            DeliveryState::Delivering => "delivering",
            DeliveryState::Reconnecting => "reconnecting",
            DeliveryState::Done => "done",
            DeliveryState::Aborted => "aborted",
            DeliveryState::Failed => "failed",
        }
    }

    /// True once the delivery stopped for good in this run (done or failed).
    pub fn is_finished(self) -> bool {
        matches!(self, DeliveryState::Done | DeliveryState::Failed)
    }
}

impl std::fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lets tests and tools compare with the word a status file holds (`state == "done"`).
impl PartialEq<&str> for DeliveryState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// One sink's delivery, as last seen.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeliveryStatus {
    /// The sink (URI with credentials removed).
    pub sink: String,
    /// Where the delivery is.
    pub state: DeliveryState,
    /// Committed cursor: the destination holds the tape's rows before it.
    pub cursor: Option<u64>,
    /// The tape's acknowledged end when last looked at.
    pub tape_end: u64,
    /// Rows behind: `tape_end - cursor`.
    pub lag_rows: u64,
    /// Seconds since the destination last held everything the tape had acknowledged (0 when it
    /// does).
    pub lag_seconds: f64,
    /// When it last held everything (ISO 8601, UTC).
    pub caught_up_at: String,
    /// Rows written to the sink by this run.
    pub rows: u64,
    /// Bytes written by this run.
    pub bytes: u64,
    /// Rows written but not yet in the destination (its server away).
    pub pending: u64,
    /// Why it failed, or the last connection error while reconnecting.
    pub error: Option<String>,
    /// The destination is rewritten whole and replaced when the delivery finishes (Arrow IPC,
    /// a single Parquet file): its cursor moves only then, so a lag before it is expected.
    #[serde(default)]
    pub replaced_at_end: bool,
    /// Acknowledged rows the tape could not supply (damage found after they were
    /// acknowledged): the cursor moved past them, and each range was reported as an error.
    #[serde(default)]
    pub skipped: Vec<crate::tape::reader::Unreadable>,
    /// When this status was taken (ISO 8601, UTC).
    pub updated_at: String,
    #[serde(skip)]
    pub(crate) written: Option<Instant>,
}

impl DeliveryStatus {
    pub(crate) fn new(sink: String) -> DeliveryStatus {
        DeliveryStatus {
            sink,
            state: DeliveryState::Opening,
            cursor: None,
            tape_end: 0,
            lag_rows: 0,
            lag_seconds: 0.0,
            caught_up_at: String::new(),
            rows: 0,
            bytes: 0,
            pending: 0,
            error: None,
            replaced_at_end: false,
            skipped: Vec::new(),
            updated_at: String::new(),
            written: None,
        }
    }
}

/// The status file of the sink shown as `sink` in the tape `dir`.
pub fn path_for(dir: &Path, sink: &str) -> PathBuf {
    let digest = Sha256::digest(sink.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    dir.join(DIR).join(format!("{hex}.json"))
}

/// Writes a status file; a failure is logged, never fatal (the file is informative).
pub(crate) fn write(path: &Path, status: &DeliveryStatus) {
    let result = (|| -> std::io::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let text = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        tracing::warn!("cannot write the delivery status {}: {e}", path.display());
    }
}

/// Every status file of the tape in `dir`, sorted by sink; unreadable files are skipped with a
/// warning.
pub fn read_all(dir: &Path) -> Vec<DeliveryStatus> {
    let mut out = Vec::new();
    for read in entries(dir).unwrap_or_else(|why| {
        tracing::warn!("{why}; no delivery status read");
        Vec::new()
    }) {
        match read {
            Ok(s) => out.push(s),
            Err(why) => tracing::warn!("{why}; skipped"),
        }
    }
    out.sort_by(|a, b| a.sink.cmp(&b.sink));
    out
}

/// [`read_all`], with each sink's lag measured against the tape's acknowledged end `end` now
/// (a status file says where its delivery stood when written; a delivery that stopped — its
/// process killed or suspended — falls further behind as the tape grows).
pub fn read_all_now(dir: &Path, end: u64) -> Vec<DeliveryStatus> {
    let now = crate::record::time::now_micros();
    read_all(dir)
        .into_iter()
        .map(|mut d| {
            d.tape_end = end;
            d.lag_rows = end.saturating_sub(d.cursor.unwrap_or(0));
            d.lag_seconds = match crate::record::time::parse_timestamp(&d.caught_up_at) {
                Some(t) if d.lag_rows > 0 => now.saturating_sub(t).max(0) as f64 / 1e6,
                _ => 0.0,
            };
            d
        })
        .collect()
}

/// Every status file of the tape in `dir`, or what keeps one from being read (retention must
/// not trim rows a sink it cannot see may need). No `deliveries/` folder: none.
pub fn read_all_strict(dir: &Path) -> Result<Vec<DeliveryStatus>, String> {
    entries(dir)?.into_iter().collect()
}

/// Each status file of the tape in `dir`, read (passwords an older version's redaction missed
/// removed), or why it could not be; `Err` when the folder cannot be listed.
fn entries(dir: &Path) -> Result<Vec<Result<DeliveryStatus, String>>, String> {
    let folder = dir.join(DIR);
    let listing = match std::fs::read_dir(&folder) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot list {}: {e}", folder.display())),
    };
    let mut out = Vec::new();
    for entry in listing {
        let path = entry
            .map_err(|e| format!("cannot list {}: {e}", folder.display()))?
            .path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        out.push(
            std::fs::read(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
                .and_then(|b| {
                    serde_json::from_slice::<DeliveryStatus>(&b)
                        .map_err(|e| format!("{} is not a delivery status ({e})", path.display()))
                })
                .map(|mut s| {
                    s.sink = crate::uri::redact(&s.sink);
                    s.error = s.error.map(|e| crate::uri::redact(&e));
                    s
                }),
        );
    }
    Ok(out)
}
