//! Signals: Ctrl-C / SIGTERM stop a run after flushing (a second one exits at once), the grace
//! deliveries get before they are stopped at their cursors, and a closed stdout pipe ending
//! the printing commands quietly. Process-wide state, so it lives apart from the commands.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tapedeck::pipe::StopSignal;

use crate::report::{EXIT_INTERRUPTED, is_finished};

/// After Ctrl-C / SIGTERM, how long deliveries may go on bringing their sinks up to the tape's
/// end before they are stopped where they are (their cursors committed).
const STOP_GRACE: Duration = Duration::from_secs(5);

/// For commands that only print (`inspect`, `verify`): a reader that closes the pipe early
/// (`tapedeck inspect DIR | head`) ends the process quietly, as it does any Unix tool, instead
/// of `println!` panicking on the write error. Not for `record`: a recorder must flush its tape
/// whatever happens to stdout.
pub fn quiet_on_closed_pipe() {
    // SAFETY: restoring the default disposition of SIGPIPE touches no memory and runs before
    // any other thread of this process is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// For `pack`: at most two malloc arenas. A pack compresses each frame's columns on short-lived
/// threads; with glibc's default (up to 8 arenas a core) each keeps the chunk-sized buffers it
/// freed, and a 1 GB generated CSV packed with a peak RSS of 268–276 MiB; with two arenas, 195
/// MiB (BENCHMARKS.md, "Coded buffers and the xz backend").
pub fn few_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets an allocator parameter; it runs before the pack starts any
    // thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// True once deliveries should stop where they are: Ctrl-C / SIGTERM came, and the deliveries
/// have had [`STOP_GRACE`] to bring their sinks to the tape's end. Says which sinks it stops.
pub fn stop_requested(
    interrupted: &AtomicBool,
    statuses: &tapedeck::deliver::StatusHandle,
) -> bool {
    static SINCE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    if !interrupted.load(Ordering::SeqCst) {
        return false;
    }
    let since = *SINCE.get_or_init(Instant::now);
    if since.elapsed() < STOP_GRACE {
        return false;
    }
    for s in statuses.statuses() {
        if !is_finished(&s) {
            eprintln!(
                "stopping the delivery to {} ({}, cursor {}) without waiting for it: committed rows stay; `tapedeck deliver` catches up later",
                s.sink,
                s.state,
                s.cursor.map_or_else(|| "-".to_string(), |c| c.to_string())
            );
        }
    }
    true
}

/// Ctrl-C / SIGTERM stop the run after flushing; a second one exits at once.
pub fn install_ctrlc() -> (StopSignal, Arc<AtomicBool>) {
    let stop = StopSignal::default();
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let interrupted = interrupted.clone();
        let handler = ctrlc::set_handler(move || {
            if interrupted.swap(true, Ordering::SeqCst) {
                // A second Ctrl-C while flushing: the user insists.
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
            stop.stop();
        });
        if let Err(e) = handler {
            tracing::warn!("cannot install the Ctrl-C handler: {e}");
        }
    }
    (stop, interrupted)
}
