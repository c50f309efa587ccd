//! What the page's header and sink table show: the tape's acknowledged position and rate, its
//! size, segments and compression, the disk's free space, the retention horizon, the time since
//! the last group commit, and each sink's delivery — read from the tape directory alone, so the
//! same page serves a recording in this process (`record --serve`) or in another one
//! (`tapedeck serve DIR` beside `record`).
//!
//! Taken at most once a second and shared by every client ([`StatusCache`]): ten browsers cost
//! what one does.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tapedeck::deliver::{DeliveryState, DeliveryStatus, status};
use tapedeck::tape::{StartAt, TapeReader, acked, retention, verify};

/// A sink is shown as falling behind (red) when it has not held everything the tape
/// acknowledged for this long, or when its delivery failed, stopped or lost its server.
pub const BEHIND_SECONDS: f64 = 5.0;

/// The tape now.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The tape directory as given on the command line.
    pub tape: String,
    /// A writer (a recorder) holds the tape.
    pub recording: bool,
    /// The acknowledged position: rows before it are durable.
    pub acknowledged: u64,
    /// The first row still on the tape (retention removes older segments).
    pub first_row: u64,
    /// Rows per second acknowledged, over the last few seconds.
    pub rows_per_second: f64,
    /// Bytes of the segments on disk.
    pub tape_bytes: u64,
    /// Segments on disk.
    pub segments: usize,
    /// Decoded (Arrow) bytes per tape byte, estimated from the rows this server has read;
    /// `None` before it read any.
    pub compression_ratio: Option<f64>,
    /// The event-time range of the tape (µs), if it has one.
    pub time_range: Option<(i64, i64)>,
    /// Free and total bytes of the tape's file system.
    pub disk_free: Option<u64>,
    /// Total bytes of the tape's file system.
    pub disk_total: Option<u64>,
    /// Seconds since the acknowledged position last moved (a group commit's fsync); `None`
    /// without a published position.
    pub seconds_since_fsync: Option<f64>,
    /// The schema, one `name: type` per column.
    pub schema: Vec<String>,
    /// Each sink delivered from the tape, lag measured now.
    pub sinks: Vec<Sink>,
    /// When this was taken, µs since the epoch.
    pub taken_at: i64,
    /// Why part of this could not be read (the rest is still shown).
    pub problems: Vec<String>,
}

/// One sink's delivery.
#[derive(Debug, Clone, Serialize)]
pub struct Sink {
    /// What the status file says (credentials removed).
    #[serde(flatten)]
    pub status: DeliveryStatus,
    /// Falling behind, failed, stopped or reconnecting: the page shows it red.
    pub behind: bool,
}

impl Sink {
    fn of(status: DeliveryStatus) -> Sink {
        let behind = match status.state {
            DeliveryState::Failed | DeliveryState::Aborted | DeliveryState::Reconnecting => true,
            DeliveryState::Done => status.lag_rows > 0,
            DeliveryState::Opening | DeliveryState::Delivering => {
                status.lag_seconds > BEHIND_SECONDS && !status.replaced_at_end
            }
        };
        Sink { status, behind }
    }
}

/// The status of one tape, taken at most once a second however many clients ask.
#[derive(Debug)]
pub struct StatusCache {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The last status taken, and its JSON (sent to every live page).
    last: Option<(Instant, Status, Arc<str>)>,
    /// Acknowledged positions seen, for the rate.
    samples: VecDeque<(Instant, u64)>,
    /// Decoded bytes and rows read by this server's plots (for the compression estimate).
    decoded: (u64, u64),
}

impl StatusCache {
    /// The cache of the tape in `dir`.
    pub fn new(dir: &Path) -> StatusCache {
        StatusCache {
            dir: dir.to_path_buf(),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Counts rows the plots decoded and their Arrow size, for the compression estimate.
    pub fn count_decoded(&self, rows: u64, bytes: u64) {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.decoded.0 = inner.decoded.0.saturating_add(rows);
        inner.decoded.1 = inner.decoded.1.saturating_add(bytes);
    }

    /// The status, at most a second old.
    pub fn get(&self) -> Status {
        self.fresh(|s, _| s.clone())
    }

    /// [`StatusCache::get`] as JSON, serialised once for every page that asks.
    pub fn get_json(&self) -> Arc<str> {
        self.fresh(|_, json| json.clone())
    }

    /// `what` of the status, taken again when older than a second.
    fn fresh<T>(&self, what: impl Fn(&Status, &Arc<str>) -> T) -> T {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, s, json)) = &inner.last
            && at.elapsed() < Duration::from_secs(1)
        {
            return what(s, json);
        }
        let mut s = take(&self.dir);
        let now = Instant::now();
        inner.samples.push_back((now, s.acknowledged));
        while inner
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(5))
        {
            inner.samples.pop_front();
        }
        if let (Some((t0, a)), Some((t1, b))) = (inner.samples.front(), inner.samples.back()) {
            let dt = t1.duration_since(*t0).as_secs_f64();
            if dt > 0.0 {
                s.rows_per_second = b.saturating_sub(*a) as f64 / dt;
            }
        }
        let (rows, bytes) = inner.decoded;
        if rows > 0 && s.tape_bytes > 0 {
            let total = s.acknowledged.saturating_sub(s.first_row) as f64;
            s.compression_ratio = Some(bytes as f64 / rows as f64 * total / s.tape_bytes as f64);
        }
        let json: Arc<str> = serde_json::to_string(&s).unwrap_or_default().into();
        let out = what(&s, &json);
        inner.last = Some((now, s, json));
        out
    }
}

/// The acknowledged end of the tape in `dir`: what the writer published, or (no writer, or
/// one from before positions were published) the end of what is on disk.
pub fn acknowledged(dir: &Path) -> tapedeck::Result<u64> {
    match acked::read(dir)? {
        Some(seq) => Ok(seq),
        None => TapeReader::open(dir, StartAt::Start)?.end_seq(),
    }
}

fn take(dir: &Path) -> Status {
    let mut problems = Vec::new();
    let mut note = |what: &str, e: &dyn std::fmt::Display| problems.push(format!("{what}: {e}"));
    let acknowledged = acknowledged(dir).unwrap_or_else(|e| {
        note("acknowledged position", &e);
        0
    });
    let info = verify::storage_for(dir)
        .and_then(|s| verify::inspect(s.as_ref()))
        .unwrap_or_else(|e| {
            note("segments", &e);
            verify::Inspection::default()
        });
    let first_row = retention::first_row(dir).unwrap_or_else(|e| {
        note("retention", &e);
        0
    });
    let disk = retention::disk_space(dir);
    let seconds_since_fsync = std::fs::metadata(dir.join(acked::ACKED_FILE))
        .and_then(|m| m.modified())
        .ok()
        .map(|t| {
            SystemTime::now()
                .duration_since(t)
                .unwrap_or_default()
                .as_secs_f64()
        });
    let sinks = status::read_all_now(dir, acknowledged)
        .into_iter()
        .map(Sink::of)
        .collect();
    Status {
        tape: dir.display().to_string(),
        recording: acked::writer_running(dir),
        acknowledged,
        first_row,
        rows_per_second: 0.0,
        tape_bytes: info.bytes,
        segments: info.segments.len(),
        compression_ratio: None,
        time_range: info.time,
        disk_free: disk.as_ref().map(|d| d.free),
        disk_total: disk.as_ref().map(|d| d.total),
        seconds_since_fsync,
        schema: info.schema,
        sinks,
        taken_at: tapedeck::record::time::now_micros(),
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(state: DeliveryState, lag_rows: u64, lag_seconds: f64) -> DeliveryStatus {
        let mut s: DeliveryStatus = serde_json::from_value(serde_json::json!({
            "sink": "csv:x.csv", "state": "delivering", "cursor": 0, "tape_end": 0,
            "lag_rows": 0, "lag_seconds": 0.0, "caught_up_at": "", "rows": 0, "bytes": 0,
            "pending": 0, "error": null, "updated_at": ""
        }))
        .unwrap();
        s.state = state;
        s.lag_rows = lag_rows;
        s.lag_seconds = lag_seconds;
        s
    }

    #[test]
    fn a_sink_is_red_when_failed_stopped_or_behind() {
        assert!(!Sink::of(delivery(DeliveryState::Delivering, 100, 0.5)).behind);
        assert!(Sink::of(delivery(DeliveryState::Delivering, 100, 6.0)).behind);
        assert!(Sink::of(delivery(DeliveryState::Failed, 0, 0.0)).behind);
        assert!(Sink::of(delivery(DeliveryState::Reconnecting, 0, 0.0)).behind);
        assert!(!Sink::of(delivery(DeliveryState::Done, 0, 0.0)).behind);
        assert!(Sink::of(delivery(DeliveryState::Done, 5, 0.0)).behind);
    }
}
