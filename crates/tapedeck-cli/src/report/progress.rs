//! The progress line on stderr (`--progress`): rows, rate, bytes, elapsed, the share done, the
//! tape's acknowledged rows and each delivery's cursor and lag, refreshed every 250 ms by its
//! own thread, in place on a terminal and one line per refresh elsewhere.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use tapedeck::pipe::Progress;
use tapedeck::tape::TapeWatch;

use super::{human_bytes, human_rate, is_delivering, is_done};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// Only when stderr is a terminal.
    Auto,
    /// Always, also into a pipe or file (one line per refresh).
    Always,
    /// Never.
    Never,
}

/// Whether `mode` shows the progress line here.
pub fn show_progress(mode: ProgressMode) -> bool {
    match mode {
        ProgressMode::Always => true,
        ProgressMode::Never => false,
        ProgressMode::Auto => std::io::stderr().is_terminal(),
    }
}

/// Refreshes the progress line until `done`: the pipe's `progress`, the tape's acknowledged
/// rows past `acked`'s first sequence (and its size against what `acked`'s source counters say
/// was read), each sink behind, each delivery, the share of `expected`.
pub fn progress_loop(
    progress: &Progress,
    done: &AtomicBool,
    acked: Option<(TapeWatch, u64, Option<tapedeck::source::SourceCounters>)>,
    sink_names: &[String],
    deliveries: Option<&tapedeck::deliver::StatusHandle>,
    expected: Option<u64>,
    disk: Option<&(std::path::PathBuf, f64)>,
) {
    let in_place = std::io::stderr().is_terminal();
    let start = Instant::now();
    let mut last = (Instant::now(), 0u64);
    let mut stderr = std::io::stderr();
    while !done.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(250));
        let rows = progress.rows();
        let now = Instant::now();
        let dt = now.duration_since(last.0).as_secs_f64();
        let rate = if dt > 0.0 {
            (rows - last.1.min(rows)) as f64 / dt
        } else {
            0.0
        };
        last = (now, rows);
        let mut line = if deliveries.is_some() && acked.is_none() {
            format!("{:.1}s", start.elapsed().as_secs_f64())
        } else {
            format!(
                "{rows} rows  {}  {}  {:.1}s",
                human_rate(rate),
                human_bytes(progress.bytes()),
                start.elapsed().as_secs_f64()
            )
        };
        if let Some(n) = expected.filter(|n| *n > 0) {
            line.push_str(&progress_share(rows, n, start.elapsed()));
        }
        if let Some((w, first, source)) = &acked {
            line.push_str(&format!(
                "  acked {}",
                w.durable_seq().saturating_sub(*first)
            ));
            // at1's status line: what the tape costs against the input, and its segments.
            let read = source.as_ref().map_or(0, |c| c.bytes_read());
            let taped = w.bytes();
            if read > 0 && taped > 0 {
                let segments = w.segments();
                line.push_str(&format!(
                    "  tape {} (ratio {:.1}) in {segments} segment{}",
                    human_bytes(taped),
                    read as f64 / taped as f64,
                    if segments == 1 { "" } else { "s" }
                ));
            }
            if let Some(full) = w.disk_full() {
                line.push_str(&format!(
                    "  DISK FULL for {:.0}s: acknowledging nothing until {} are free ({} now)",
                    full.waited.as_secs_f64(),
                    human_bytes(full.needed),
                    human_bytes(full.free)
                ));
            }
        }
        if let Some((dir, level)) = disk
            && let Some(space) = tapedeck::tape::retention::disk_space(dir)
            && space.free_percent() < *level
        {
            line.push_str(&format!(
                "  disk {:.1}% free ({})",
                space.free_percent(),
                human_bytes(space.free)
            ));
        }
        for (name, behind) in sink_names.iter().zip(progress.sinks_behind()) {
            if behind > 0 {
                line.push_str(&format!("  {name} behind {behind} rows (reconnecting)"));
            }
        }
        if let Some(d) = deliveries {
            for s in d.statuses() {
                if s.replaced_at_end && is_delivering(&s) {
                    // Rebuilt whole and swapped in at the end: no cursor moves before that.
                    line.push_str(&format!(
                        "  {}: {} rows written, replaced at the end",
                        s.sink, s.rows
                    ));
                    continue;
                }
                line.push_str(&format!(
                    "  {}: cursor {} lag {} rows {:.1}s{}",
                    s.sink,
                    s.cursor.map_or_else(|| "-".to_string(), |c| c.to_string()),
                    s.lag_rows,
                    s.lag_seconds,
                    if is_delivering(&s) || is_done(&s) {
                        String::new()
                    } else {
                        format!(" ({})", s.state)
                    }
                ));
            }
        }
        let _ = if in_place {
            write!(stderr, "\r\x1b[2K{line}")
        } else {
            writeln!(stderr, "{line}")
        };
        let _ = stderr.flush();
    }
    if in_place {
        let _ = write!(stderr, "\r\x1b[2K");
    }
}

/// `  42%  ETA 3s`: the share of `n` rows done and the time left at the average rate so far.
fn progress_share(rows: u64, n: u64, elapsed: Duration) -> String {
    let done = rows.min(n);
    let pct = done as f64 * 100.0 / n as f64;
    let secs = elapsed.as_secs_f64();
    let eta = if done == 0 || secs <= 0.0 {
        "?".to_string()
    } else {
        let left = (n - done) as f64 / (done as f64 / secs);
        humantime::format_duration(Duration::from_secs(left.ceil() as u64)).to_string()
    };
    format!("  {pct:.0}%  ETA {eta}")
}
