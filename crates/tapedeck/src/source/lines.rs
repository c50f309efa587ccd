//! Line sources: CSV, JSONL or plain text lines from stdin or a file.
//!
//! URIs: `stdin:csv`, `stdin:jsonl`, `stdin:lines`, `file:PATH` (format from the extension:
//! `.csv`, `.jsonl` / `.ndjson`, anything else is lines; or `format=csv|jsonl|lines`).
//!
//! - **csv**: the first line is the header. Each column gets one type, `int`, `float`, `bool`,
//!   `timestamp` (ISO 8601 / RFC 3339) or `text`, inferred from the first `infer_rows` data
//!   lines (default 1000) or declared with `types=NAME:TYPE,…` (e.g. `types=serial:text`). An
//!   empty field is null in every type.
//! - **jsonl**: one JSON object per line; numbers stay integers when they are, nested values are
//!   kept as JSON text; blank lines are ignored.
//! - **lines**: each line becomes a row with one text column, `line`.
//!
//! # Column types: inferred once, then held
//!
//! Over the inference window, a column gets the first of `int`, `float`, `bool`, `timestamp`
//! that all its non-empty values parse as. A value that does not parse is most often a typo (a
//! lab engineer's `not_a_number` among 999 readings), and a typo must not silently turn a
//! column of measurements into text: so when no type fits every value, the column still gets
//! the type that fits the most of them, as long as **at most one value in 20** (5 %) does not
//! parse; its lines with such a value are malformed lines. Only a column where more than one
//! value in 20 fails every type — one that is mostly not numbers, or a window too short to
//! tell a typo from text (fewer than 20 values with one odd one out) — becomes `text`. An
//! empty column is `text`.
//!
//! After inference the type is held for the rest of the stream: a later value that does not
//! parse as its column's type is a malformed line, never a retyping. Which type each column got
//! is logged (`tracing` info) and available from [`LineSource::column_types`] and, while the
//! source runs elsewhere, from [`SourceCounters::column_types`] (shown in `tapedeck record`'s
//! summary). A column that should be text although its values look like numbers (serial
//! numbers, codes) is declared with `types=NAME:text`.
//!
//! # Malformed lines
//!
//! A malformed line (bad JSON, wrong field count, a value that does not parse as its column's
//! type, invalid UTF-8) is reported with its line number (and, for a value, the column's number
//! and name) and, under `on_error=fail` (the default), ends the stream with
//! [`Error::MalformedInput`] after the lines before it were delivered; under `on_error=skip` it
//! is skipped with a warning and counted ([`SourceCounters::skipped`]).

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

/// The type of a CSV column; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// 64-bit integers.
    Int,
    /// 64-bit floats (`NaN` and `inf` included).
    Float,
    /// `true` / `false` (also `True`, `TRUE`, `False`, `FALSE`).
    Bool,
    /// ISO 8601 / RFC 3339 instants, kept as UTC microseconds.
    Timestamp,
    /// Anything.
    Text,
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

impl ColumnType {
    fn parse(self, s: &str) -> Option<Value> {
        if s.is_empty() {
            return Some(Value::Null);
        }
        match self {
            ColumnType::Int => s.parse().ok().map(Value::Int),
            ColumnType::Float => s.parse().ok().map(Value::Float),
            ColumnType::Bool => parse_bool(s).map(Value::Bool),
            ColumnType::Timestamp => parse_timestamp(s).map(Value::Timestamp),
            ColumnType::Text => Some(Value::Text(s.to_string())),
        }
    }

    /// The word `types=` takes and the summary shows: `int`, `float`, `bool`, `timestamp`,
    /// `text`.
    pub fn keyword(self) -> &'static str {
        match self {
            ColumnType::Int => "int",
            ColumnType::Float => "float",
            ColumnType::Bool => "bool",
            ColumnType::Timestamp => "timestamp",
            ColumnType::Text => "text",
        }
    }

    /// Reads a type word of `types=`: the keywords, and `integer`, `number`, `double`,
    /// `boolean`, `datetime`, `string`.
    pub fn from_keyword(word: &str) -> Option<ColumnType> {
        match word.trim().to_ascii_lowercase().as_str() {
            "int" | "integer" | "i64" => Some(ColumnType::Int),
            "float" | "number" | "double" | "f64" => Some(ColumnType::Float),
            "bool" | "boolean" => Some(ColumnType::Bool),
            "timestamp" | "datetime" | "time" => Some(ColumnType::Timestamp),
            "text" | "string" | "str" => Some(ColumnType::Text),
            _ => None,
        }
    }

    fn described(self) -> &'static str {
        match self {
            ColumnType::Int => "integers",
            ColumnType::Float => "numbers",
            ColumnType::Bool => "true or false",
            ColumnType::Timestamp => "timestamps",
            ColumnType::Text => "text",
        }
    }
}

impl std::fmt::Display for ColumnType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.keyword())
    }
}

const CANDIDATES: [ColumnType; 4] = [
    ColumnType::Int,
    ColumnType::Float,
    ColumnType::Bool,
    ColumnType::Timestamp,
];

/// In the inference window, at most one non-empty value in this many may fail to parse as the
/// type a column gets (a typo); more, and the column is text. See the module docs.
pub const TYPO_ONE_IN: usize = 20;

/// The type of a column whose non-empty values in the inference window are `cells`: the
/// candidate that the fewest of them fail to parse as (the earlier on a tie, so whole numbers
/// are `int`), if at most one in [`TYPO_ONE_IN`] fail; else text.
fn infer_type(cells: &[&str]) -> ColumnType {
    if cells.is_empty() {
        return ColumnType::Text;
    }
    let allowed = cells.len() / TYPO_ONE_IN;
    let mut best: Option<(usize, ColumnType)> = None;
    for t in CANDIDATES {
        // Stop counting once this candidate cannot beat the best so far or the allowance.
        let bound = best.map_or(allowed, |(f, _)| f.min(allowed));
        let mut failures = 0;
        for cell in cells {
            if t.parse(cell).is_none() {
                failures += 1;
                if failures > bound {
                    break;
                }
            }
        }
        if failures <= bound && best.is_none_or(|(f, _)| failures < f) {
            best = Some((failures, t));
            if failures == 0 {
                break;
            }
        }
    }
    best.map_or(ColumnType::Text, |(_, t)| t)
}

/// The types a CSV source gave its columns, in header order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnTypes {
    /// The source (file path or `stdin`).
    pub source: String,
    /// The first and last line of the inference window; `None` when there was no data line.
    pub inferred_from: Option<(u64, u64)>,
    /// Each column and its type.
    pub columns: Vec<(String, ColumnType)>,
    /// The columns whose type was declared with `types=` rather than inferred.
    pub declared: Vec<String>,
}

impl std::fmt::Display for ColumnTypes {
    /// One line: `data.csv: column types (inferred from lines 2-1001): t timestamp, flow float,
    /// serial text (declared)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: column types (", self.source)?;
        match self.inferred_from {
            Some((a, b)) if a == b => write!(f, "inferred from line {a}")?,
            Some((a, b)) => write!(f, "inferred from lines {a}-{b}")?,
            None => f.write_str("no data lines to infer from")?,
        }
        f.write_str("): ")?;
        for (i, (name, ty)) in self.columns.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name} {ty}")?;
            if self.declared.iter().any(|d| d == name) {
                f.write_str(" (declared)")?;
            }
        }
        Ok(())
    }
}

/// Reads `types=NAME:TYPE,NAME:TYPE` (a name may hold `:`; the type follows the last one).
fn parse_declared(uri: &str, value: &str) -> Result<Vec<(String, ColumnType)>> {
    let bad = |what: &str| Error::BadParam {
        uri: uri.to_string(),
        param: "types".into(),
        value: value.to_string(),
        expected: format!(
            "NAME:TYPE pairs separated by commas, TYPE one of int, float, bool, timestamp, text, e.g. `types=serial:text,flow:float` ({what})"
        ),
    };
    let mut out: Vec<(String, ColumnType)> = Vec::new();
    for pair in value.split(',').filter(|p| !p.trim().is_empty()) {
        let Some((name, ty)) = pair.rsplit_once(':') else {
            return Err(bad(&format!("`{pair}` has no `:TYPE`")));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(bad(&format!("`{pair}` names no column")));
        }
        let Some(ty) = ColumnType::from_keyword(ty) else {
            return Err(bad(&format!("`{ty}` in `{pair}` is not a type")));
        };
        if out.iter().any(|(n, _)| n == name) {
            return Err(bad(&format!("column `{name}` is declared twice")));
        }
        out.push((name.to_string(), ty));
    }
    if out.is_empty() {
        return Err(bad("no column declared"));
    }
    Ok(out)
}

struct CsvState {
    reader: ::csv::Reader<Box<dyn Read + Send>>,
    header: Vec<Arc<str>>,
    types: Vec<ColumnType>,
    /// Per column: its type was declared with `types=`.
    declared: Vec<bool>,
    /// The lines the types were inferred from.
    window: Option<(u64, u64)>,
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
    /// Column types declared with `types=`.
    declared: Vec<(String, ColumnType)>,
    /// The URI the source was opened from (for messages about its parameters).
    uri: Option<String>,
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
            declared: Vec::new(),
            uri: None,
            reader: None,
            input: Some(input),
            line: 0,
            buf: Vec::new(),
            counters: SourceCounters::default(),
        }
    }

    /// Infers CSV column types from the first `rows` data lines (default 1000; at least 1).
    pub fn with_infer_rows(mut self, rows: usize) -> LineSource {
        self.infer_rows = rows.max(1);
        self
    }

    /// Declares the types of some CSV columns instead of inferring them; a name the header
    /// does not have is an error when the header is read.
    pub fn with_types(mut self, types: Vec<(String, ColumnType)>) -> LineSource {
        self.declared = types;
        self
    }

    /// The type of each CSV column, once the header and the inference window were read (after
    /// the first [`Source::next_record`]); `None` before, and for JSONL and lines.
    pub fn column_types(&self) -> Option<ColumnTypes> {
        self.counters.column_types()
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
            .parse::<usize>("infer_rows", "a number of lines, at least 1")?;
        if infer_rows == Some(0) {
            return Err(Error::BadParam {
                uri: shown.clone(),
                param: "infer_rows".into(),
                value: "0".into(),
                expected: "a number of lines, at least 1 (types are inferred from data lines), e.g. `infer_rows=1000`".into(),
            });
        }
        let declared = match uri.params.raw("types") {
            Some(v) => {
                let v = v.to_string();
                parse_declared(&shown, &v)?
            }
            None => Vec::new(),
        };
        uri.params.finish()?;
        let parse_format = |s: &str| match s {
            "csv" => Some(LineFormat::Csv),
            "jsonl" | "ndjson" | "json" => Some(LineFormat::Jsonl),
            "lines" | "txt" | "log" | "text" => Some(LineFormat::Lines),
            _ => None,
        };
        let mut source = if uri.scheme == "stdin" {
            let given = format_param.unwrap_or(uri.path.as_str());
            let format = parse_format(given).ok_or_else(|| Error::MalformedUri {
                uri: shown.clone(),
                reason: if given.is_empty() {
                    "say what stdin carries: write `stdin:csv`, `stdin:jsonl` or `stdin:lines`"
                        .into()
                } else {
                    format!(
                        "`{given}` is not a format stdin can carry; write `stdin:csv`, `stdin:jsonl` or `stdin:lines`"
                    )
                },
            })?;
            LineSource::new("stdin", Box::new(std::io::stdin()), format, on_error)
        } else {
            let path = Path::new(&uri.path);
            if uri.path.is_empty() {
                return Err(Error::MalformedUri {
                    uri: shown,
                    reason: "`file:` needs a path after the colon, e.g. `file:data.csv` (or `stdin:csv` to read standard input)".into(),
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
        if !declared.is_empty() && source.format != LineFormat::Csv {
            return Err(Error::BadParam {
                uri: shown,
                param: "types".into(),
                value: declared
                    .iter()
                    .map(|(n, t)| format!("{n}:{t}"))
                    .collect::<Vec<_>>()
                    .join(","),
                expected: "nothing: `types=` declares CSV column types, and this source is not CSV (JSONL keeps JSON's own types; add `format=csv` if it is CSV)".into(),
            });
        }
        source.infer_rows = infer_rows.unwrap_or(1000);
        source.declared = declared;
        source.uri = Some(shown);
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
                declared: Vec::new(),
                window: None,
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
        if let Some((name, _)) = self
            .declared
            .iter()
            .find(|(n, _)| !header.iter().any(|h| h.as_ref() == n))
        {
            return Err(Error::BadParam {
                uri: self.uri.clone().unwrap_or_else(|| self.name.clone()),
                param: "types".into(),
                value: name.clone(),
                expected: format!(
                    "a column of {}'s header: {}",
                    self.name,
                    header
                        .iter()
                        .map(|h| format!("`{h}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
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
        let window = ahead
            .front()
            .zip(ahead.back())
            .map(|((first, _), (last, _))| (*first, *last));
        let mut declared = Vec::with_capacity(header.len());
        let types: Vec<ColumnType> = header
            .iter()
            .enumerate()
            .map(|(c, name)| {
                if let Some((_, t)) = self.declared.iter().find(|(n, _)| n == name.as_ref()) {
                    declared.push(true);
                    return *t;
                }
                declared.push(false);
                let cells: Vec<&str> = ahead
                    .iter()
                    .filter(|(_, r)| r.len() == header.len())
                    .filter_map(|(_, r)| r.get(c))
                    .filter(|s| !s.is_empty())
                    .collect();
                infer_type(&cells)
            })
            .collect();
        let described = ColumnTypes {
            source: self.name.clone(),
            inferred_from: window,
            columns: header
                .iter()
                .zip(&types)
                .map(|(n, t)| (n.to_string(), *t))
                .collect(),
            declared: self.declared.iter().map(|(n, _)| n.clone()).collect(),
        };
        tracing::info!("{described}");
        self.counters.set_column_types(described);
        Ok(CsvState {
            reader,
            header,
            types,
            declared,
            window,
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
                    let read = state.reader.read_record(&mut rec);
                    self.counters.set_bytes_read(state.reader.position().byte());
                    match read {
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
            for (c, ((name, ty), cell)) in state
                .header
                .iter()
                .zip(&state.types)
                .zip(rec.iter())
                .enumerate()
            {
                match ty.parse(cell) {
                    Some(v) => row.push(name.clone(), v),
                    None => {
                        let origin = if state.declared.get(c).copied().unwrap_or(false) {
                            "declared with `types=`".to_string()
                        } else {
                            match state.window {
                                Some((a, b)) => format!("inferred from lines {a}-{b}"),
                                None => "inferred".to_string(),
                            }
                        };
                        let skip = match self.on_error {
                            OnError::Fail => "skip such lines with `on_error=skip`, ",
                            OnError::Skip => "",
                        };
                        bad = Some(format!(
                            "column {} `{name}` holds {} ({origin}) but has `{cell}`; correct the line, {skip}or declare the column's type, e.g. `types={name}:text`",
                            c + 1,
                            ty.described(),
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
            self.counters.add_bytes_read(n as u64);
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

/// One JSON object as a row (nested values as their JSON text).
pub(crate) fn json_row(text: &str) -> std::result::Result<Row, String> {
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
