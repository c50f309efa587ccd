//! Line sources: CSV, JSONL or plain text lines from stdin or a file.
//!
//! URIs: `stdin:csv`, `stdin:jsonl`, `stdin:lines`, `file:PATH` (format from the extension:
//! `.csv`, `.jsonl` / `.ndjson`, anything else is lines; or `format=csv|jsonl|lines`).
//!
//! - **csv**: the first line is the header. Column types are inferred from the first
//!   `infer_rows` data lines (default 1000): integer, else float, else boolean, else timestamp
//!   (ISO 8601 / RFC 3339), else text; an empty field is null. A later field that does not parse
//!   as its column's type is a malformed line.
//! - **jsonl**: one JSON object per line; numbers stay integers when they are, nested values are
//!   kept as JSON text; blank lines are ignored.
//! - **lines**: each line becomes a row with one text column, `line`.
//!
//! A malformed line (bad JSON, wrong field count, unparsable value, invalid UTF-8) is reported
//! with its line number and, under `on_error=fail` (the default), ends the stream with
//! [`Error::MalformedInput`]; under `on_error=skip` it is skipped with a warning and counted.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use super::{Source, SourceCounters};
use crate::error::{Error, Result};
use crate::record::schema_lock::check_collisions;
use crate::record::time::parse_timestamp;
use crate::record::{Record, Row, Value};
use crate::uri::Uri;

/// The format of a line source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    /// CSV with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// Plain text, one row per line.
    Lines,
}

/// What to do with a malformed line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Stop with an error (default).
    #[default]
    Fail,
    /// Skip the line, warn, and count it.
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CellType {
    Int,
    Float,
    Bool,
    Timestamp,
    Text,
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

impl CellType {
    fn parse(self, s: &str) -> Option<Value> {
        if s.is_empty() {
            return Some(Value::Null);
        }
        match self {
            CellType::Int => s.parse().ok().map(Value::Int),
            CellType::Float => s.parse().ok().map(Value::Float),
            CellType::Bool => parse_bool(s).map(Value::Bool),
            CellType::Timestamp => parse_timestamp(s).map(Value::Timestamp),
            CellType::Text => Some(Value::Text(s.to_string())),
        }
    }

    fn name(self) -> &'static str {
        match self {
            CellType::Int => "an integer",
            CellType::Float => "a number",
            CellType::Bool => "true or false",
            CellType::Timestamp => "a timestamp",
            CellType::Text => "text",
        }
    }
}

const CANDIDATES: [CellType; 4] = [
    CellType::Int,
    CellType::Float,
    CellType::Bool,
    CellType::Timestamp,
];

struct CsvState {
    reader: ::csv::Reader<Box<dyn Read + Send>>,
    header: Vec<Arc<str>>,
    types: Vec<CellType>,
    /// Records read ahead for type inference, with their line numbers.
    ahead: VecDeque<(u64, ::csv::StringRecord)>,
}

enum Reader {
    Csv(Box<CsvState>),
    Text(Box<dyn BufRead + Send>),
}

/// A CSV / JSONL / lines source; see the module docs.
pub struct LineSource {
    name: String,
    format: LineFormat,
    on_error: OnError,
    infer_rows: usize,
    reader: Option<Reader>,
    input: Option<Box<dyn Read + Send>>,
    line: u64,
    buf: Vec<u8>,
    counters: SourceCounters,
}

impl std::fmt::Debug for LineSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineSource")
            .field("name", &self.name)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl LineSource {
    /// A source reading `input` in `format`; `name` is used in messages.
    pub fn new(
        name: impl Into<String>,
        input: Box<dyn Read + Send>,
        format: LineFormat,
        on_error: OnError,
    ) -> LineSource {
        LineSource {
            name: name.into(),
            format,
            on_error,
            infer_rows: 1000,
            reader: None,
            input: Some(input),
            line: 0,
            buf: Vec::new(),
            counters: SourceCounters::default(),
        }
    }

    /// A source reading the file at `path`.
    pub fn from_path(path: &Path, format: LineFormat, on_error: OnError) -> Result<LineSource> {
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        Ok(LineSource::new(
            path.display().to_string(),
            Box::new(file),
            format,
            on_error,
        ))
    }

    pub(crate) fn from_uri(mut uri: Uri) -> Result<LineSource> {
        let shown = uri.shown().to_string();
        let format_param = uri.params.choice("format", &["csv", "jsonl", "lines"])?;
        let on_error = match uri.params.choice("on_error", &["fail", "skip"])? {
            Some("skip") => OnError::Skip,
            _ => OnError::Fail,
        };
        let infer_rows = uri
            .params
            .parse::<usize>("infer_rows", "a number of lines")?
            .unwrap_or(1000)
            .max(1);
        uri.params.finish()?;
        let parse_format = |s: &str| match s {
            "csv" => Some(LineFormat::Csv),
            "jsonl" | "ndjson" | "json" => Some(LineFormat::Jsonl),
            "lines" | "txt" | "log" | "text" => Some(LineFormat::Lines),
            _ => None,
        };
        let mut source = if uri.scheme == "stdin" {
            let format = format_param
                .or(Some(uri.path.as_str()).filter(|p| !p.is_empty()))
                .and_then(parse_format)
                .ok_or_else(|| Error::MalformedUri {
                    uri: shown.clone(),
                    reason: "say what stdin carries: stdin:csv, stdin:jsonl or stdin:lines".into(),
                })?;
            LineSource::new("stdin", Box::new(std::io::stdin()), format, on_error)
        } else {
            let path = Path::new(&uri.path);
            if uri.path.is_empty() {
                return Err(Error::MalformedUri {
                    uri: shown,
                    reason: "file: needs a path, e.g. file:data.csv".into(),
                });
            }
            let format = format_param
                .and_then(parse_format)
                .or_else(|| {
                    path.extension()
                        .and_then(|e| e.to_str())
                        .map(|e| parse_format(&e.to_ascii_lowercase()).unwrap_or(LineFormat::Lines))
                })
                .unwrap_or(LineFormat::Lines);
            LineSource::from_path(path, format, on_error)?
        };
        source.infer_rows = infer_rows;
        Ok(source)
    }

    /// Reports a malformed line: an error under `fail`, a warning and a count under `skip`.
    fn malformed(&self, line: u64, message: String) -> Result<()> {
        let err = Error::MalformedInput {
            source_name: self.name.clone(),
            line,
            message,
        };
        match self.on_error {
            OnError::Fail => Err(err),
            OnError::Skip => {
                tracing::warn!("skipping malformed line: {err}");
                self.counters.add_skipped();
                Ok(())
            }
        }
    }

    fn open_reader(&mut self) -> Result<()> {
        let Some(input) = self.input.take() else {
            return Ok(());
        };
        self.reader = Some(match self.format {
            LineFormat::Csv => Reader::Csv(Box::new(self.start_csv(input)?)),
            _ => Reader::Text(Box::new(BufReader::with_capacity(1 << 16, input))),
        });
        Ok(())
    }

    fn start_csv(&mut self, input: Box<dyn Read + Send>) -> Result<CsvState> {
        let mut reader = ::csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(input);
        let mut header_rec = ::csv::StringRecord::new();
        let got = reader
            .read_record(&mut header_rec)
            .map_err(|e| self.csv_error(1, e))?;
        if !got {
            return Ok(CsvState {
                reader,
                header: Vec::new(),
                types: Vec::new(),
                ahead: VecDeque::new(),
            });
        }
        let header: Vec<Arc<str>> = header_rec.iter().map(Arc::from).collect();
        if header.iter().any(|h| h.is_empty()) {
            return Err(Error::MalformedInput {
                source_name: self.name.clone(),
                line: 1,
                message: "the CSV header has an empty column name".into(),
            });
        }
        check_collisions(header.iter().map(|h| h.as_ref()))?;
        let mut ahead = VecDeque::new();
        while ahead.len() < self.infer_rows {
            let mut rec = ::csv::StringRecord::new();
            match reader.read_record(&mut rec) {
                Ok(false) => break,
                Ok(true) => {
                    let line = rec.position().map_or(0, |p| p.line());
                    ahead.push_back((line, rec));
                }
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line());
                    let message = e.to_string();
                    self.malformed(line, message)?;
                }
            }
        }
        let types = (0..header.len())
            .map(|c| {
                let cells = || {
                    ahead
                        .iter()
                        .filter(|(_, r)| r.len() == header.len())
                        .filter_map(move |(_, r)| r.get(c))
                        .filter(|s| !s.is_empty())
                };
                CANDIDATES
                    .into_iter()
                    .find(|t| cells().next().is_some() && cells().all(|s| t.parse(s).is_some()))
                    .unwrap_or(CellType::Text)
            })
            .collect();
        Ok(CsvState {
            reader,
            header,
            types,
            ahead,
        })
    }

    fn csv_error(&self, line: u64, e: ::csv::Error) -> Error {
        Error::MalformedInput {
            source_name: self.name.clone(),
            line: e.position().map_or(line, |p| p.line()),
            message: e.to_string(),
        }
    }

    fn next_csv(&mut self) -> Result<Option<Record>> {
        loop {
            let Some(Reader::Csv(state)) = &mut self.reader else {
                return Ok(None);
            };
            let (line, rec) = match state.ahead.pop_front() {
                Some(x) => x,
                None => {
                    let mut rec = ::csv::StringRecord::new();
                    match state.reader.read_record(&mut rec) {
                        Ok(false) => return Ok(None),
                        Ok(true) => (rec.position().map_or(0, |p| p.line()), rec),
                        Err(e) => {
                            let line = e.position().map_or(0, |p| p.line());
                            let msg = e.to_string();
                            self.malformed(line, msg)?;
                            continue;
                        }
                    }
                }
            };
            if rec.len() != state.header.len() {
                let msg = format!(
                    "{} fields, but the header has {}",
                    rec.len(),
                    state.header.len()
                );
                self.malformed(line, msg)?;
                continue;
            }
            let mut row = Row::with_capacity(rec.len());
            let mut bad = None;
            for ((name, ty), cell) in state.header.iter().zip(&state.types).zip(rec.iter()) {
                match ty.parse(cell) {
                    Some(v) => row.push(name.clone(), v),
                    None => {
                        bad = Some(format!(
                            "column `{name}` expects {} (inferred from the first lines) but has `{cell}`",
                            ty.name()
                        ));
                        break;
                    }
                }
            }
            match bad {
                Some(msg) => self.malformed(line, msg)?,
                None => return Ok(Some(Record::Row(row))),
            }
        }
    }

    fn next_text(&mut self) -> Result<Option<Record>> {
        loop {
            let Some(Reader::Text(reader)) = &mut self.reader else {
                return Ok(None);
            };
            self.buf.clear();
            let n = reader
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| Error::io("read", self.name.clone(), e))?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            let line_no = self.line;
            let mut bytes = self.buf.as_slice();
            if let Some(b) = bytes.strip_suffix(b"\n") {
                bytes = b.strip_suffix(b"\r").unwrap_or(b);
            }
            let text = match std::str::from_utf8(bytes) {
                Ok(t) => t,
                Err(e) => {
                    self.malformed(line_no, format!("not valid UTF-8 ({e})"))?;
                    continue;
                }
            };
            match self.format {
                LineFormat::Lines => {
                    return Ok(Some(Record::Row(Row::new().with("line", text))));
                }
                _ => {
                    if text.trim().is_empty() {
                        continue;
                    }
                    match json_row(text) {
                        Ok(row) => return Ok(Some(Record::Row(row))),
                        Err(msg) => self.malformed(line_no, msg)?,
                    }
                }
            }
        }
    }
}

fn json_row(text: &str) -> std::result::Result<Row, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let serde_json::Value::Object(map) = value else {
        return Err("expected a JSON object per line".into());
    };
    let mut row = Row::with_capacity(map.len());
    for (k, v) in map {
        let value = match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Value::Text(s),
            nested => Value::Text(nested.to_string()),
        };
        row.push(k, value);
    }
    Ok(row)
}

impl Source for LineSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_record(&mut self) -> Result<Option<Record>> {
        self.open_reader()?;
        match self.format {
            LineFormat::Csv => self.next_csv(),
            _ => self.next_text(),
        }
    }

    fn counters(&self) -> SourceCounters {
        self.counters.clone()
    }
}
