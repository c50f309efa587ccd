//! `tapedeck tail`: a tape's rows as a table, CSV or JSONL, optionally following the tape as it
//! grows.

use std::io::Write;
use std::path::PathBuf;

use clap::ValueEnum;
use tapedeck::tape::{StartAt, TapeReader};

use super::parse_start;
use crate::report::{EXIT_OK, fail};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum TailFormat {
    /// Aligned columns.
    Table,
    /// CSV with a header.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The tape directory, e.g. `runs/tape`.
    dir: PathBuf,
    /// Keep waiting for new rows, e.g. `--follow` (stop with Ctrl-C).
    #[arg(long, short)]
    follow: bool,
    /// Where to start: start, end, seq:N or time:ISO, e.g. `--from time:2026-01-01T00:00:00Z`.
    #[arg(long, default_value = "start", value_parser = parse_start)]
    from: StartAt,
    /// Output format, e.g. `--format jsonl`.
    #[arg(long, value_enum, default_value_t = TailFormat::Table)]
    format: TailFormat,
}

/// Runs `tapedeck tail`; returns the exit code (0 also when the reader of stdout goes away).
pub fn run(args: &Args) -> u8 {
    let reader = match TapeReader::open(&args.dir, args.from) {
        Ok(r) => r.follow(args.follow),
        Err(e) => return fail(&e),
    };
    let mut out = std::io::stdout().lock();
    let mut enc = tapedeck::sink::text::TextEncoder::default();
    let mut header = true;
    // Table widths carry over from batch to batch (they only grow), so a followed tape's
    // columns stay put.
    let mut widths: Vec<usize> = Vec::new();
    for item in reader {
        let batch = match item.and_then(|(_, b)| {
            tapedeck::record::views_to_offsets(b)
                .map_err(|e| tapedeck::Error::arrow("reading text columns stored as views", e))
        }) {
            Ok(b) => b,
            Err(e) => return fail(&e),
        };
        let mut buf = Vec::new();
        let r = match args.format {
            TailFormat::Jsonl => enc.jsonl(&batch, &mut buf),
            TailFormat::Csv | TailFormat::Table => {
                if header {
                    tapedeck::sink::text::TextEncoder::csv_header(&batch.schema(), &mut buf);
                }
                enc.csv(&batch, &mut buf)
            }
        };
        if let Err(e) = r {
            return fail(&e);
        }
        if args.format == TailFormat::Table {
            buf = as_table(&buf, header, &mut widths);
        }
        header = false;
        if out.write_all(&buf).and_then(|()| out.flush()).is_err() {
            // The reader of our output went away (e.g. `| head`): a normal end.
            return EXIT_OK;
        }
    }
    EXIT_OK
}

/// CSV text as aligned columns: each column as wide as its widest value so far (`widths`
/// carries them from chunk to chunk and only grows).
fn as_table(csv_text: &[u8], header: bool, widths: &mut Vec<usize>) -> Vec<u8> {
    let rows: Vec<Vec<String>> = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(csv_text)
        .records()
        .filter_map(Result::ok)
        .map(|r| r.iter().map(str::to_string).collect())
        .collect();
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    if widths.len() < cols {
        widths.resize(cols, 0);
    }
    for (c, w) in widths.iter_mut().enumerate() {
        let here = rows
            .iter()
            .filter_map(|r| r.get(c))
            .map(|v| v.chars().count())
            .max()
            .unwrap_or(0);
        *w = (*w).max(here);
    }
    let widths: &[usize] = widths;
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, v)| format!("{v:<w$}", w = widths[c]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if i == 0 && header {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            out.push_str(&rule.join("  "));
            out.push('\n');
        }
    }
    out.into_bytes()
}
