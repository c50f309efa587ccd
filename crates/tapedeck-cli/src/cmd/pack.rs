//! `tapedeck pack` and `tapedeck unpack`: a text file archived losslessly as a queryable tape,
//! and given back byte for byte (`docs/pack-format.md`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tapedeck::pack::{self, Format, PackOptions, PackProgress};

use crate::report::{EXIT_OK, EXIT_USAGE, fail, human_bytes};

#[derive(clap::Args, Debug)]
pub struct PackArgs {
    /// The file to pack, or `-` for standard input.
    input: PathBuf,
    /// The pack to write: a new directory (a tape), e.g. `flights.tdpack`.
    out: PathBuf,
    /// How records become columns: `csv` (a header, then a column per field), `jsonl` (a
    /// column per key), `log` (a `time` column read from each line's start, and `line`),
    /// `lines` (a `line` column); `auto` chooses from the file name and its first lines.
    #[arg(long, value_name = "FORMAT", default_value = "auto", value_parser = parse_format)]
    format: Format,
    /// The compressor of the frames' columns: `xz` (LZMA2, the default: smallest) or `zstd`
    /// (on nycflights13, vega and log files: 2.6–14 times faster to pack, 1.1–2.5 times to
    /// unpack; packs a fifth to a half larger — BENCHMARKS.md).
    #[arg(long, value_name = "BACKEND", default_value = "xz", value_parser = parse_backend)]
    backend: pack::Backend,
    /// The backend's level: xz 0 to 9, default 5; zstd 1 (fast) to 22 (smallest), default 3.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(0..=22))]
    level: Option<i32>,
    /// Records per chunk; each chunk is one frame, checked before it is written.
    #[arg(long, value_name = "N", default_value_t = pack::DEFAULT_CHUNK_LINES, value_parser = parse_positive)]
    chunk_lines: usize,
    /// Bytes per chunk: a chunk is cut once it holds this many (memory stays a few times this;
    /// at most 256 MiB).
    #[arg(long, value_name = "BYTES", default_value_t = pack::DEFAULT_CHUNK_BYTES, value_parser = parse_positive)]
    chunk_bytes: usize,
    /// Keep whichever form of each frame is smaller, columns or plain lines, for an archive
    /// that is never queried. By default a frame keeps its columns while they cost at most 10%
    /// more than the plain form, so the pack stays queryable.
    #[arg(long)]
    smallest: bool,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct UnpackArgs {
    /// The pack (a directory written by `tapedeck pack`).
    pack: PathBuf,
    /// The file to restore (it must not exist), or `-` for standard output. A file appears
    /// under this name only once every byte has been checked.
    out: PathBuf,
    /// Print the result as JSON on stderr.
    #[arg(long)]
    json: bool,
}

fn parse_backend(s: &str) -> Result<pack::Backend, String> {
    s.parse()
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{s}` is not a positive whole number")),
    }
}

/// The examples `pack --help` shows.
pub const PACK_HELP: &str = "Examples:
  tapedeck pack flights.csv flights.tdpack
  tapedeck pack /var/log/syslog syslog.tdpack --format log
  tapedeck pack flights.csv flights.tdpack --backend zstd      # faster, larger
  zcat app.log.gz | tapedeck pack - app.tdpack --format log
  tapedeck query flights.tdpack 'SELECT carrier, count(*) FROM tape GROUP BY carrier'
  tapedeck unpack flights.tdpack flights.csv

The pack is a tape: each chunk of whole lines is one frame of Arrow columns (CSV fields, JSON
keys, a log's time and line), so `verify`, `inspect`, `tail` and `query` work on it without
unpacking. Whatever the columns do not say (quoting, spacing, number spelling, line endings, a
missing final newline, bytes that are not UTF-8) is kept per row in the `_exact` column, so
`unpack` gives back the input byte for byte. Every frame is decoded and compared with its chunk
before it is written; a frame whose columns cost more than 10% over the plain lines (any more,
with --smallest) is written plain: its rows restore, but have no values for queries.
Each column is stored narrowed (integers in as few bytes as their range or their differences
need) and compressed on its own by the backend; under xz the two forms of a frame are compared
by their zstd sizes (a quick stand-in), and only the chosen one is compressed with xz.
The pack ends with a trailer (`PACK`) holding the SHA-256 of the input. It is written as
OUT.partial and renamed to OUT when complete. Memory: a few times --chunk-bytes, whatever the
input size. Progress (bytes in, bytes out, ratio, MB/s) on stderr.";

/// The examples `unpack --help` shows.
pub const UNPACK_HELP: &str = "Examples:
  tapedeck unpack flights.tdpack flights.csv
  tapedeck unpack app.tdpack - | grep ERROR

Checks every frame's CRC, the record and byte counts and the SHA-256 of the whole against the
pack's trailer. Any damage or mismatch is an error naming the frame and the byte offset, exit 1,
and no file under OUT (it is written as OUT.partial-<pid> and renamed only when all checks
pass). To standard output the bytes stream as they are checked frame by frame: on an error the
output is incomplete and the exit status says so.";

struct Meter {
    started: Instant,
    last: Instant,
    show: bool,
    tty: bool,
}

impl Meter {
    fn new(show: bool) -> Meter {
        let now = Instant::now();
        Meter {
            started: now,
            last: now,
            show,
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Prints `line` at most twice a second on a terminal (in place), every 10 s otherwise.
    fn tick(&mut self, line: impl FnOnce(f64) -> String, last: bool) {
        let every = if self.tty {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(10)
        };
        if !self.show || (!last && self.last.elapsed() < every) {
            return;
        }
        self.last = Instant::now();
        let text = line(self.started.elapsed().as_secs_f64().max(1e-9));
        if self.tty {
            eprint!("\r\x1b[2K{text}");
            if last {
                eprintln!();
            }
        } else {
            eprintln!("{text}");
        }
    }
}

fn progress_line(p: &PackProgress, secs: f64) -> String {
    let ratio = if p.bytes_out > 0 {
        p.bytes_in as f64 / p.bytes_out as f64
    } else {
        0.0
    };
    format!(
        "packed {} -> {} (ratio {:.2}), {} frames ({} plain), {} records, {:.1} MB/s",
        human_bytes(p.bytes_in),
        human_bytes(p.bytes_out),
        ratio,
        p.frames,
        p.raw_frames,
        p.records,
        p.bytes_in as f64 / secs / 1e6
    )
}

/// Runs `tapedeck pack`; returns the exit code.
pub fn run_pack(args: &PackArgs) -> u8 {
    crate::signals::few_malloc_arenas();
    let stdin = args.input.as_os_str() == "-";
    if let Some(level) = args.level.filter(|l| !args.backend.levels().contains(l)) {
        let levels = args.backend.levels();
        eprintln!(
            "error: --level {level} is not a level of --backend {}: give {} to {}",
            args.backend.name(),
            levels.start(),
            levels.end()
        );
        return EXIT_USAGE;
    }
    let options = PackOptions {
        format: args.format,
        backend: args.backend,
        level: args.level,
        chunk_lines: args.chunk_lines,
        chunk_bytes: args.chunk_bytes,
        name: (!stdin).then(|| args.input.display().to_string()),
        columns_slack: if args.smallest {
            0.0
        } else {
            pack::DEFAULT_COLUMNS_SLACK
        },
    };
    let mut meter = Meter::new(!args.json);
    let mut progress = |p: &PackProgress| meter.tick(|s| progress_line(p, s), false);
    let result = if stdin {
        pack::pack(std::io::stdin().lock(), &args.out, &options, &mut progress)
    } else {
        match std::fs::File::open(&args.input) {
            Ok(f) => pack::pack(f, &args.out, &options, &mut progress),
            Err(source) => Err(tapedeck::Error::Io {
                action: "open",
                path: args.input.clone(),
                source,
            }),
        }
    };
    let report = match result {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let t = &report.trailer;
    let p = PackProgress {
        bytes_in: t.bytes,
        bytes_out: report.bytes_out,
        records: t.records,
        frames: t.frames,
        raw_frames: t.raw_frames,
        elapsed: Duration::from_secs_f64(report.seconds),
    };
    meter.tick(|s| progress_line(&p, s), true);
    if args.json {
        println!("{}", serde_json::to_value(&report).unwrap_or_default());
    } else {
        println!(
            "{}: {} {} -> {} (ratio {:.2}) in {:.2} s; sha256 {}",
            args.out.display(),
            t.layout.format(),
            human_bytes(t.bytes),
            human_bytes(report.bytes_out),
            if report.bytes_out > 0 {
                t.bytes as f64 / report.bytes_out as f64
            } else {
                0.0
            },
            report.seconds,
            t.sha256
        );
    }
    EXIT_OK
}

/// Runs `tapedeck unpack`; returns the exit code.
pub fn run_unpack(args: &UnpackArgs) -> u8 {
    let to_stdout = args.out.as_os_str() == "-";
    let mut meter = Meter::new(!args.json && !to_stdout);
    let mut progress = |written: u64| {
        meter.tick(
            |s| {
                format!(
                    "unpacked {} ({:.1} MB/s)",
                    human_bytes(written),
                    written as f64 / s / 1e6
                )
            },
            false,
        )
    };
    let result = if to_stdout {
        pack::unpack(&args.pack, std::io::stdout().lock(), &mut progress)
    } else {
        pack::unpack_to_file(&args.pack, &args.out, &mut progress)
    };
    match result {
        Ok(r) => {
            if args.json {
                eprintln!("{}", serde_json::to_value(&r).unwrap_or_default());
            } else if !to_stdout {
                meter.tick(
                    |s| {
                        format!(
                            "unpacked {} ({:.1} MB/s)",
                            human_bytes(r.bytes),
                            r.bytes as f64 / s / 1e6
                        )
                    },
                    true,
                );
                println!(
                    "{}: {} records, {} checked against the SHA-256 in {}",
                    args.out.display(),
                    r.records,
                    human_bytes(r.bytes),
                    Path::new(&args.pack).join(pack::TRAILER).display()
                );
            }
            EXIT_OK
        }
        Err(e) => fail(&e),
    }
}
