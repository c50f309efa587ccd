//! What every command shares in how it reports: exit codes (and their help text), errors, the
//! run's summary, each delivery's outcome, and the sink URIs checked before anything is
//! created. One place, so `record`, `deliver`, `replay` and `import` say things the same way.

pub mod json;
pub mod progress;

use tapedeck::Error;
use tapedeck::deliver::{DeliveryState, DeliveryStatus};
use tapedeck::pipe::Summary;

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: the run failed (source or sink error); what was received was flushed first.
pub const EXIT_FAILED: u8 = 1;
/// Exit status: bad usage (option, URI, parameter, or a file that would be overwritten).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: finished, but acknowledged rows the tape could no longer supply (damage found
/// after they were acknowledged) were skipped by a delivery; each range was printed.
pub const EXIT_SKIPPED: u8 = 3;
/// Exit status: stopped by Ctrl-C / SIGTERM after flushing everything received.
pub const EXIT_INTERRUPTED: u8 = 130;

/// The exit codes as help text: a macro, not a `const`, so `concat!` can append it to a
/// command's help at compile time.
macro_rules! exit_codes {
    () => {
        "Exit codes:
  0    the run finished (source ended, --limit or --duration reached)
  1    the run failed (a source or sink error); everything received was flushed first
  2    bad usage: unknown option, malformed URI, unknown URI parameter, existing output file
  3    finished, but a delivery skipped acknowledged rows the tape could no longer supply
       (damage found after they were acknowledged); each range was printed as an error
  130  stopped by Ctrl-C or SIGTERM; everything received was flushed and the summary printed"
    };
}
pub(crate) use exit_codes;

/// Prints `e` and returns its exit code: usage errors 2, everything else 1.
pub fn fail(e: &Error) -> u8 {
    eprintln!("error: {e}");
    if e.is_usage() {
        EXIT_USAGE
    } else {
        EXIT_FAILED
    }
}

// A delivery's state (`DeliveryState`), asked in one place.

/// The delivery ended: done, or failed.
pub fn is_finished(s: &DeliveryStatus) -> bool {
    s.state.is_finished()
}

/// The delivery brought its sink to the end it was given.
pub fn is_done(s: &DeliveryStatus) -> bool {
    s.state == DeliveryState::Done
}

/// The delivery failed (its error says why).
pub fn is_failed(s: &DeliveryStatus) -> bool {
    s.state == DeliveryState::Failed
}

/// The delivery is writing to its sink.
pub fn is_delivering(s: &DeliveryStatus) -> bool {
    s.state == DeliveryState::Delivering
}

/// The delivery waits for its sink: still opening it, or reconnecting to it.
pub fn is_waiting_for_sink(s: &DeliveryStatus) -> bool {
    matches!(
        s.state,
        DeliveryState::Opening | DeliveryState::Reconnecting
    )
}

/// Says what recovering the tape in `dir` did, when it did anything.
pub fn report_recovery(dir: &std::path::Path, r: &tapedeck::tape::Recovery) {
    if !r.is_clean() {
        eprintln!(
            "tape {}: recovered — {} torn tail(s) cut, {} damaged range(s) quarantined, {} segment(s) sealed; {} rows on the tape",
            dir.display(),
            r.truncated.len(),
            r.quarantined.len(),
            r.resealed.len(),
            r.rows
        );
    }
}

/// Exit code for failed deliveries, or for deliveries that skipped unreadable rows.
pub fn delivery_failure(statuses: &[DeliveryStatus]) -> Option<u8> {
    for s in statuses {
        for range in &s.skipped {
            eprintln!(
                "error: delivery to {}: acknowledged {range}; skipped — the sink does not hold them",
                s.sink
            );
        }
    }
    let skipped = statuses.iter().any(|s| !s.skipped.is_empty());
    let failed: Vec<&DeliveryStatus> = statuses.iter().filter(|s| is_failed(s)).collect();
    if failed.is_empty() {
        return skipped.then_some(EXIT_SKIPPED);
    }
    for s in failed {
        let error = s.error.as_deref().unwrap_or("unknown error");
        // Delivery errors name their sink already; others get it added.
        let what = if error.starts_with("delivery to ") {
            error.to_string()
        } else {
            format!("delivery to {} failed: {error}", s.sink)
        };
        eprintln!(
            "error: {what}; the tape keeps every row — fix the cause and run `tapedeck deliver` to catch up"
        );
    }
    Some(EXIT_FAILED)
}

/// One line per delivery: state, rows delivered this run, cursor, rows behind, error.
pub fn print_deliveries(statuses: &[DeliveryStatus]) {
    for s in statuses {
        eprintln!(
            "  {}: {} — {} rows delivered this run, cursor {}, {} rows behind{}",
            s.sink,
            s.state,
            s.rows,
            s.cursor.map_or_else(|| "-".to_string(), |c| c.to_string()),
            s.lag_rows,
            s.error
                .as_ref()
                .map(|e| format!(" — {e}"))
                .unwrap_or_default()
        );
    }
}

/// `1.2k rows/s`.
pub fn human_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2}M rows/s", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1}k rows/s", r / 1e3)
    } else {
        format!("{r:.0} rows/s")
    }
}

/// `3.4 MiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The run's summary on stderr. With a tape, its line (rows acknowledged, bytes) is printed by
/// the caller, so the tape is not listed twice.
pub fn print_summary(s: &Summary, taped: bool) {
    eprintln!(
        "recorded {} rows in {:.2}s ({}), ended by {}{}",
        s.rows,
        s.seconds,
        human_rate(s.rows_per_sec),
        s.ended_by,
        if s.skipped > 0 {
            format!(", {} malformed lines skipped", s.skipped)
        } else {
            String::new()
        }
    );
    for k in s
        .sinks
        .iter()
        .filter(|k| !(taped && k.uri.starts_with("tape:")))
    {
        eprintln!(
            "  {}: {} rows, {}{}",
            k.uri,
            k.rows,
            human_bytes(k.bytes),
            k.error
                .as_ref()
                .map(|e| format!(" — FAILED: {e}"))
                .unwrap_or_default()
        );
    }
}
