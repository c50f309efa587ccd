//! The plots' data: a stretch of the tape's past reduced for a page ([`history`]), and each
//! client's live stream ([`follow`]) — the rows acknowledged since a sequence number, reduced
//! and sent in order, so a client that reconnects with the last sequence number it got
//! (`Last-Event-ID`) continues without a gap or a repeat.
//!
//! Only acknowledged rows are read (the tape's published position), never a frame still being
//! written. Each client reads with its own [`TapeReader`]; frames decoded for one are shared
//! with the others through the library's frame cache, so ten clients decode each frame once.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tapedeck::tape::{StartAt, TapeReader};

use arrow_array::RecordBatch;

use crate::head::{Head, Taken};
use crate::m4::{Column, Downsample, plotted_columns};
use crate::status::{StatusCache, acknowledged};

/// The widest plot served, in buckets (pixels).
pub const MAX_WIDTH: usize = 4000;

/// Bytes a client may receive per second for its plots, on average (the budget is
/// 100 KB/s; status events take the rest).
const BYTES_PER_SECOND: i64 = 80_000;
/// JSON bytes one bucket of one column takes at most, about: five numbers.
const BYTES_PER_BUCKET: i64 = 70;

/// The narrowest bucket (µs) for `columns` plotted columns: at one bucket per column per
/// bucket width, the live stream stays under [`BYTES_PER_SECOND`].
pub fn min_bucket_us(columns: usize) -> i64 {
    let columns = i64::try_from(columns.max(1)).unwrap_or(i64::MAX);
    columns
        .saturating_mul(BYTES_PER_BUCKET)
        .saturating_mul(1_000_000)
        / BYTES_PER_SECOND
}

/// A reduced stretch of the tape, as `/api/series` answers.
#[derive(Debug, Serialize)]
pub struct Series {
    /// Bucket width, µs: pass it to `/api/live` to continue at the same resolution.
    pub bucket_us: i64,
    /// The stretch, µs: `[from, to)`.
    pub from: i64,
    /// End of the stretch, µs.
    pub to: i64,
    /// The sequence number after the last row read: where `/api/live` continues.
    pub end_seq: u64,
    /// Rows reduced.
    pub rows: u64,
    /// The tape has an event-time column (without one there is nothing to plot).
    pub has_time: bool,
    /// The plotted columns.
    pub columns: Vec<Column>,
}

/// What the page asks of the past.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    /// Start, µs (`None`: the tape's first event time).
    pub from: Option<i64>,
    /// End, µs (`None`: after its last one).
    pub to: Option<i64>,
    /// Buckets wanted across the span (the plot's width in pixels).
    pub width: usize,
}

/// Reduces the acknowledged rows with event times in the span. The tape's time range decides
/// an open end.
pub fn history(dir: &Path, span: Span, status: &StatusCache) -> tapedeck::Result<Series> {
    let end_seq = acknowledged(dir)?;
    let range = status.get().time_range;
    // An open end takes every row up to `end_seq` — also rows acknowledged after the status
    // was taken — so the live stream, which continues at `end_seq`, leaves none out.
    let filter_to = span.to.unwrap_or(i64::MAX);
    let to = span
        .to
        .or(range.map(|(_, hi)| hi.saturating_add(1)))
        .unwrap_or(1);
    let from = span.from.or(range.map(|(lo, _)| lo)).unwrap_or(0).min(to);
    let start = if span.from.is_some() {
        StartAt::Time(from)
    } else {
        StartAt::Start
    };
    let mut reader = TapeReader::open(dir, start)?.until(Some(end_seq));
    let width = i64::try_from(span.width.clamp(1, MAX_WIDTH)).unwrap_or(1);
    let wanted = to.saturating_sub(from).max(1).saturating_add(width - 1) / width;
    let mut series = Series {
        bucket_us: wanted.max(1),
        from,
        to,
        end_seq,
        rows: 0,
        has_time: false,
        columns: Vec::new(),
    };
    let mut down: Option<Downsample> = None;
    let mut newest: Option<i64> = None;
    while let Some((_, batch)) = reader.next_batch()? {
        if let Some((lo, hi)) = tapedeck::tape::codec::time_range(&batch) {
            series.has_time = true;
            if lo >= filter_to {
                break;
            }
            newest = Some(newest.map_or(hi, |n| n.max(hi)));
        }
        let d = down.get_or_insert_with(|| {
            let columns = plotted_columns(batch.schema_ref());
            Downsample::new(wanted.max(min_bucket_us(columns)))
        });
        status.count_decoded(
            batch.num_rows() as u64,
            batch.get_array_memory_size() as u64,
        );
        d.add(&batch, from, filter_to);
    }
    if span.to.is_none()
        && let Some(n) = newest
    {
        series.to = series.to.max(n.saturating_add(1));
    }
    if let Some(d) = down {
        series.bucket_us = d.bucket_us();
        series.rows = d.rows();
        series.columns = d.columns();
    }
    Ok(series)
}

/// One message of a client's live stream.
#[derive(Debug)]
pub enum Live {
    /// Rows `from..to` reduced (`to` is the event id: where a reconnect continues).
    Data {
        /// First sequence number covered.
        from: u64,
        /// The sequence number after the last one covered.
        to: u64,
        /// The reduction, as JSON.
        json: String,
    },
    /// The tape's status, as JSON.
    Status(Arc<str>),
    /// Something the page should show (rows trimmed away before the client got them, a
    /// damaged frame skipped, the tape unreadable).
    Notice(String),
}

#[derive(Serialize)]
struct DataEvent<'a> {
    from: u64,
    to: u64,
    bucket_us: i64,
    columns: &'a [Column],
}

/// How often a live client is sent what is new.
const TICK: Duration = Duration::from_millis(250);
/// Rows reduced into one message at most (a client far behind catches up in steps).
const ROWS_PER_MESSAGE: u64 = 4_000_000;
/// Buckets (over all columns) in one message at most: about 1.4 MB of JSON.
const BUCKETS_PER_MESSAGE: usize = 20_000;

/// A reader of the tape at `from` for a client behind the shared head: `None` (said to the
/// client) when the tape cannot be read. Rows removed by retention before the client got them
/// are said too, and the reader starts at the first row left (returned with it).
fn open_at(dir: &Path, from: u64, send: &dyn Fn(Live) -> bool) -> Option<(TapeReader, u64)> {
    match TapeReader::open(dir, StartAt::Seq(from)) {
        Ok(r) => Some((r, from)),
        Err(tapedeck::Error::TapeTrimmed { first, .. }) => {
            let note = format!(
                "rows {from}..{first} were removed by retention before this page got them; continuing at row {first}"
            );
            if !send(Live::Notice(note)) {
                return None;
            }
            match TapeReader::open(dir, StartAt::Seq(first)) {
                Ok(r) => Some((r, first)),
                Err(e) => {
                    send(Live::Notice(format!("cannot read the tape: {e}")));
                    None
                }
            }
        }
        Err(e) => {
            send(Live::Notice(format!("cannot read the tape: {e}")));
            None
        }
    }
}

/// Reads the tape from `since` for one client and sends what is new every [`TICK`], and the
/// status every second, until the client goes (`send` fails) or `stop` is set. New rows come
/// from the shared [`Head`]; a client behind it reads the tape on its own until it gets there.
pub fn follow(
    dir: &Path,
    since: u64,
    bucket_us: i64,
    status: &StatusCache,
    head: &Arc<Head>,
    stop: &AtomicBool,
    send: &dyn Fn(Live) -> bool,
) {
    let mut from = since;
    let mut own: Option<TapeReader> = None;
    let mut last_status: Option<Instant> = None;
    // The byte budget decides the narrowest bucket, once the columns are known.
    let mut bucket_us = bucket_us;
    let mut budgeted = false;
    while !stop.load(Ordering::Relaxed) {
        if last_status.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            last_status = Some(Instant::now());
            if !send(Live::Status(status.get_json())) {
                return;
            }
        }
        let mut down = Downsample::new(bucket_us);
        // `decoded`: the batch was decoded for this page alone (the head counts its own).
        let mut add = |down: &mut Downsample, batch: &RecordBatch, decoded: bool| {
            if !budgeted {
                budgeted = true;
                let columns = plotted_columns(batch.schema_ref());
                bucket_us = bucket_us.max(min_bucket_us(columns));
                *down = Downsample::new(bucket_us);
            }
            if decoded {
                status.count_decoded(
                    batch.num_rows() as u64,
                    batch.get_array_memory_size() as u64,
                );
            }
            down.add(batch, i64::MIN, i64::MAX);
        };
        let mut caught_up = true;
        let to = match head.take(from, ROWS_PER_MESSAGE) {
            Taken::Rows(batches, to, notes) => {
                own = None;
                for n in notes {
                    if !send(Live::Notice(n)) {
                        return;
                    }
                }
                for b in &batches {
                    add(&mut down, b, false);
                }
                to
            }
            Taken::Elsewhere(limit) => {
                let reader = match own.take() {
                    Some(r) if r.position() == from => r,
                    // (A start moved past rows removed by retention: the next message still
                    // starts at `from`, spanning them, after the notice that says so.)
                    _ => match open_at(dir, from, send) {
                        Some((r, _)) => r,
                        None => return,
                    },
                };
                let reader = own.insert(reader);
                let end = match acknowledged(dir) {
                    Ok(e) => e,
                    Err(e) => {
                        if !send(Live::Notice(format!(
                            "cannot read the tape's position: {e}"
                        ))) {
                            return;
                        }
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                };
                reader.set_until(Some(limit.map_or(end, |l| l.min(end))));
                let mut rows = 0u64;
                let mut reopen = false;
                loop {
                    match reader.next_batch() {
                        Ok(Some((_, batch))) => {
                            rows += batch.num_rows() as u64;
                            add(&mut down, &batch, true);
                            if rows >= ROWS_PER_MESSAGE || down.buckets() >= BUCKETS_PER_MESSAGE {
                                caught_up = false;
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            // Retention removed the rows under the reader: open it again
                            // (where the first row left is). Anything else: say so and go on
                            // after it (the reader moved past it).
                            reopen = matches!(e, tapedeck::Error::TapeTrimmed { .. });
                            if !reopen && !send(Live::Notice(format!("{e}"))) {
                                return;
                            }
                            break;
                        }
                    }
                }
                for u in reader.take_unreadable() {
                    if !send(Live::Notice(format!("skipped unreadable rows: {u}"))) {
                        return;
                    }
                }
                let at = TapeReader::position(reader);
                if limit.is_some_and(|l| at >= l) {
                    // At the head: take from it next time.
                    caught_up = false;
                }
                if reopen {
                    own = None;
                    caught_up = false;
                }
                at
            }
        };
        if to > from {
            let columns = down.columns();
            let json = serde_json::to_string(&DataEvent {
                from,
                to,
                bucket_us: down.bucket_us(),
                columns: &columns,
            })
            .unwrap_or_default();
            if !send(Live::Data { from, to, json }) {
                return;
            }
            from = to;
        }
        if caught_up {
            std::thread::sleep(TICK);
        }
    }
}
