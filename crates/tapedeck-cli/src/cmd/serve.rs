//! `tapedeck serve DIR`: a live web page of a tape (the `tapedeck-serve` crate) — plots of every
//! numeric column, the tape's and each sink's state, the run metadata, a SQL box — until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
#[cfg(feature = "serve")]
use std::time::Duration;

#[cfg(feature = "serve")]
use tapedeck_serve::{ServeError, ServeOptions, Server};

use crate::report::EXIT_USAGE;
#[cfg(feature = "serve")]
use crate::report::{EXIT_FAILED, EXIT_OK};

pub const HELP: &str = "\
The page shows every numeric column of the tape as a time plot (downsampled on the server with
first/min/max/last per pixel, so spikes and clipping show), live while `record` writes to the
tape — in this process (`record --tape DIR --serve ADDR`) or another one. Pick a window from
10 s to the whole tape, or drag across a plot to read that stretch of the past. Beside the
plots: rows/s, the acknowledged position, tape size, compression, segments, free disk, the
first retained row, the time since the last fsync; each sink's cursor and lag (red when it
falls behind, fails or stops); the run metadata and its history; a SQL box over `tape`.

Read-only: nothing on the page changes the recording, and no request reads any file but the
tape's. Everything the page needs is inside the binary (works offline).

Safe by default: it listens on 127.0.0.1 and answers only to the names 127.0.0.1, localhost
and [::1]. On any other address a token is required on every request: give one with --token
(16 characters at least) or one is made and printed; open the printed address (it ends in
?token=…) and the page keeps the token in a cookie.

Examples:
  tapedeck serve runs/tape                         # http://127.0.0.1:8080/
  tapedeck serve runs/tape --listen 127.0.0.1:0    # any free port (printed)
  tapedeck serve runs/tape --listen 0.0.0.0:8080   # other machines: with a token
  tapedeck record --source sim:daq --tape runs/tape --serve 127.0.0.1:8080

Exit codes: 0 stopped by Ctrl-C; 1 the server failed; 2 bad usage (not a tape, a port in use,
a token too short).";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The tape directory, e.g. `runs/tape`.
    dir: PathBuf,
    /// The address to listen on, e.g. `127.0.0.1:8080`, `0.0.0.0:8080` (needs a token), or
    /// port 0 for any free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The token every request must carry (at least 16 characters); made up and printed when
    /// listening beyond loopback without one.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "TAPEDECK_SERVE_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Live pages at most (each further one is refused until one closes).
    #[arg(long, value_name = "N", default_value_t = 16)]
    max_clients: usize,
}

/// Starts the page server of `dir` and says where it is: a line on stderr for people, and with
/// `url_on_stdout` the address alone on stdout, for scripts (not for `record`, whose stdout
/// may carry `--summary-json -`).
#[cfg(feature = "serve")]
pub fn start(
    dir: &std::path::Path,
    listen: SocketAddr,
    token: Option<String>,
    max_clients: usize,
    url_on_stdout: bool,
) -> Result<Server, u8> {
    let options = ServeOptions::listen(listen)
        .token(token)
        .max_clients(max_clients);
    match Server::start(dir, options) {
        Ok(server) => {
            eprintln!(
                "serving {} at {}{}",
                dir.display(),
                server.url(),
                if listen.ip().is_loopback() {
                    ""
                } else {
                    " (keep the token secret: it opens the page)"
                }
            );
            if url_on_stdout {
                println!("{}", server.url());
            }
            Ok(server)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Err(match e {
                ServeError::Start(_) => EXIT_FAILED,
                _ => EXIT_USAGE,
            })
        }
    }
}

/// The page server of `record --serve`, running until dropped.
#[cfg(feature = "serve")]
pub type Running = Server;
/// The page server of `record --serve` (none in a tapedeck built without it).
#[cfg(not(feature = "serve"))]
pub struct Running;

/// Starts the page of a recording (`record --tape DIR --serve ADDR`): a loopback address by
/// default; any other needs a token (made and printed when not given).
pub fn start_for_record(
    dir: &std::path::Path,
    listen: SocketAddr,
    token: Option<String>,
) -> Result<Running, u8> {
    #[cfg(feature = "serve")]
    {
        start(dir, listen, token, 16, false)
    }
    #[cfg(not(feature = "serve"))]
    {
        let _ = (dir, listen, token);
        Err(unavailable())
    }
}

/// What a tapedeck built without the page server says when asked for it.
#[cfg(not(feature = "serve"))]
pub fn unavailable() -> u8 {
    eprintln!(
        "error: this tapedeck was built without the page server; build it with \
         `cargo build --release` (the default features) or `--features serve`"
    );
    EXIT_USAGE
}

/// Runs `tapedeck serve`; returns the exit code.
#[cfg(not(feature = "serve"))]
pub fn run(args: &Args) -> u8 {
    let _ = (&args.dir, args.listen, &args.token, args.max_clients);
    unavailable()
}

/// Runs `tapedeck serve`; returns the exit code.
#[cfg(feature = "serve")]
pub fn run(args: &Args) -> u8 {
    let server = match start(
        &args.dir,
        args.listen,
        args.token.clone(),
        args.max_clients,
        true,
    ) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let (stop, _) = crate::signals::install_ctrlc();
    while !stop.is_stopped() {
        if !server.is_running() {
            eprintln!("error: the page server stopped (the log above says why)");
            return EXIT_FAILED;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    server.stop();
    EXIT_OK
}
