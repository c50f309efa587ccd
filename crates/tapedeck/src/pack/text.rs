//! The `lines` and `log` codecs: a line is a `line` text column; a log line also has its
//! leading timestamp read into a `time` column, so a packed log is queried and pruned by time.
//!
//! A row renders as its `line` followed by the pack's terminator; `line` is the record
//! without that terminator (so a `\r\n` line in a `\n` file keeps its `\r`). A line that is
//! not UTF-8, or ends otherwise (the last line without a newline, a `\n` line in a `\r\n`
//! file), is kept in `_exact`. The `time` column is read from the line and never rendered: the line holds it.

use std::sync::Arc;

use arrow_array::ArrayRef;
use arrow_array::builder::{StringBuilder, TimestampMicrosecondBuilder};
use arrow_schema::{ArrowError, DataType, Field};

use super::chunk::Chunk;
use super::codec::{Codec, Col, time_field};

/// How lines end in a `lines` or `log` pack.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinesLayout {
    /// The terminator of a row that has no `_exact`: `"\n"` or `"\r\n"`.
    pub terminator: String,
    /// Whether the table has a `time` column read from each line's start.
    pub time: bool,
}

impl LinesLayout {
    /// The layout of a file whose first record is `first` (its terminator decides).
    pub fn detect(chunk: &Chunk, time: bool) -> LinesLayout {
        let terminator = match chunk.records.first().map(|_| chunk.terminator(0)) {
            Some(b"\r\n") => "\r\n",
            _ => "\n",
        };
        LinesLayout {
            terminator: terminator.into(),
            time,
        }
    }
}

/// The `lines` / `log` codec.
#[derive(Debug)]
pub struct LinesCodec {
    layout: LinesLayout,
}

impl LinesCodec {
    /// The codec of `layout`.
    pub fn new(layout: LinesLayout) -> LinesCodec {
        LinesCodec { layout }
    }
}

impl Codec for LinesCodec {
    fn fields(&self) -> Vec<Field> {
        let mut f = Vec::new();
        if self.layout.time {
            f.push(time_field("time"));
        }
        f.push(Field::new("line", DataType::Utf8, true));
        f
    }

    fn columns(&self, chunk: &Chunk, first: usize) -> Result<Vec<ArrayRef>, ArrowError> {
        let rows = chunk.records.len().saturating_sub(first);
        let mut lines = StringBuilder::with_capacity(rows, chunk.bytes.len());
        let mut times = TimestampMicrosecondBuilder::with_capacity(rows);
        let term = self.layout.terminator.as_bytes();
        for i in first..chunk.records.len() {
            // The line is the record without the layout's terminator, so a `\r\n` line in a
            // `\n` file keeps its `\r` and renders back exactly (rather than twice, as a
            // line and in `_exact`).
            let record = chunk.record(i);
            let line = record.strip_suffix(term).unwrap_or(chunk.content(i));
            match std::str::from_utf8(line) {
                Ok(text) => {
                    lines.append_value(text);
                    times.append_option(self.layout.time.then(|| leading_time(text)).flatten());
                }
                Err(_) => {
                    lines.append_null();
                    times.append_null();
                }
            }
        }
        let mut out: Vec<ArrayRef> = Vec::new();
        if self.layout.time {
            out.push(Arc::new(times.finish().with_timezone("UTC")));
        }
        out.push(Arc::new(lines.finish()));
        Ok(out)
    }

    fn render(&self, cols: &[Col<'_>], row: usize, out: &mut Vec<u8>) -> Result<(), String> {
        match cols.last() {
            Some(c @ Col::Text(_)) => {
                let line = c.text(row).ok_or("`line` is null and `_exact` too")?;
                out.extend_from_slice(line.as_bytes());
                out.extend_from_slice(self.layout.terminator.as_bytes());
                Ok(())
            }
            _ => Err("the last column before `_exact` is not the text column `line`".into()),
        }
    }
}

/// The template of a log line: every token holding a digit (numbers, times, ids, addresses,
/// sizes) replaced by `<*>`, where tokens are split at whitespace and at ``= : , ; ( ) [ ] { }
/// < > " '``. Lines of one message kind share a template, so `GROUP BY template` counts message
/// kinds. A packed log's `template` column (in `tapedeck query`) is this function of `line`;
/// it is computed when read, not stored.
pub fn template(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        if token.bytes().any(|b| b.is_ascii_digit()) {
            out.push_str("<*>");
        } else {
            out.push_str(token);
        }
        token.clear();
    };
    for c in line.chars() {
        if c.is_whitespace() || "=:,;()[]{}<>\"'".contains(c) {
            flush(&mut token, &mut out);
            out.push(c);
        } else {
            token.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

/// The time a log line starts with, as µs since the epoch (UTC): an ISO 8601 / RFC 3339
/// date and time (`2026-11-30T13:02:18.123Z`, `2026-11-30 13:02:18,123`, with or without an
/// offset; without one it is taken as UTC), optionally in `[` `]`.
pub fn leading_time(line: &str) -> Option<i64> {
    let s = line.strip_prefix('[').unwrap_or(line);
    let b = s.as_bytes();
    // Date and time: `YYYY-MM-DD?HH:MM:SS`.
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(b[10] == b'T' || b[10] == b' ') {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let date =
        chrono::NaiveDate::from_ymd_opt(digits(0..4)? as i32, digits(5..7)?, digits(8..10)?)?;
    let mut end = 19;
    let mut micros = 0i64;
    if matches!(b.get(19), Some(b'.' | b',')) {
        let frac: String = s[20..].chars().take_while(|c| c.is_ascii_digit()).collect();
        if frac.is_empty() {
            return None;
        }
        end = 20 + frac.len();
        let six: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
        micros = six.parse().ok()?;
    }
    let time = chrono::NaiveTime::from_hms_opt(digits(11..13)?, digits(14..16)?, digits(17..19)?)?;
    let mut t = date
        .and_time(time)
        .and_utc()
        .timestamp_micros()
        .checked_add(micros)?;
    let rest = &s[end..];
    let offset_secs = utc_offset(rest.as_bytes()).unwrap_or(0);
    t = t.checked_sub(offset_secs.checked_mul(1_000_000)?)?;
    Some(t)
}

/// The UTC offset at the start of `b`, in seconds: `Z`, or `+`/`-` then `HH`, `HHMM` or
/// `HH:MM` (hours up to 23, minutes up to 59). `None` when `b` starts with none of these (the
/// time is then taken as UTC).
fn utc_offset(b: &[u8]) -> Option<i64> {
    let two = |at: usize| -> Option<i64> {
        let d = b.get(at..at + 2)?;
        d.iter()
            .all(u8::is_ascii_digit)
            .then(|| i64::from(d[0] - b'0') * 10 + i64::from(d[1] - b'0'))
    };
    let sign = match b.first()? {
        b'Z' => return Some(0),
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let hours = two(1).filter(|h| *h <= 23)?;
    let minutes = match b.get(3) {
        Some(b':') => two(4)?,
        Some(c) if c.is_ascii_digit() => two(3)?,
        _ => 0,
    };
    (minutes <= 59).then_some(sign * (hours * 3600 + minutes * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_keeps_the_words_and_masks_what_varies() {
        assert_eq!(
            template("2026-11-30 13:02:18 status installed libc6:amd64 2.36-9"),
            "<*> <*>:<*>:<*> status installed <*>:<*> <*>"
        );
        assert_eq!(
            template("GET /index.html 200 in 12ms"),
            "GET /index.html <*> in <*>"
        );
        assert_eq!(template("user=ana id=(42)"), "user=ana id=(<*>)");
        assert_eq!(template(""), "");
    }

    #[test]
    fn log_times_are_read_in_their_common_spellings() {
        let base = leading_time("2026-11-30T13:02:18Z x").unwrap();
        assert_eq!(leading_time("2026-11-30 13:02:18 x"), Some(base));
        assert_eq!(leading_time("[2026-11-30 13:02:18] x"), Some(base));
        assert_eq!(leading_time("2026-11-30T13:02:18.5Z"), Some(base + 500_000));
        assert_eq!(
            leading_time("2026-11-30 13:02:18,123 INFO"),
            Some(base + 123_000)
        );
        assert_eq!(leading_time("2026-11-30T14:02:18+01:00"), Some(base));
        assert_eq!(leading_time("2026-11-30T14:02:18+0100"), Some(base));
        assert_eq!(leading_time("2026-11-30 14:02:18+01 x"), Some(base));
        assert_eq!(leading_time("2026-11-30T12:02:18-01:00"), Some(base));
        // Not an offset: the time is UTC.
        assert_eq!(leading_time("2026-11-30T13:02:18 -- x"), Some(base));
        assert_eq!(leading_time("2026-11-30T13:02:18+1:2:34"), Some(base));
        assert_eq!(leading_time("Nov 30 13:02:18 host"), None);
        assert_eq!(leading_time("2026-13-30 13:02:18"), None);
        assert_eq!(leading_time("short"), None);
    }
}
