//! What every pack codec shares: the `_exact` column, how a row is rendered back to bytes, how
//! a chunk becomes a batch that is checked row by row, and the text forms of numbers.
//!
//! A codec turns each record into typed columns and knows how to *render* a row of those
//! columns back to bytes under the pack's layout (delimiter, quoting, separators, terminator).
//! A row whose rendering is not exactly its record keeps the record in `_exact`, so a pack
//! restores any input whatever the codec makes of it; the columns stay filled for queries
//! wherever a value could be read.

use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    StringViewArray, TimestampMicrosecondArray,
    builder::{BinaryBuilder, StringBuilder, StringViewBuilder},
};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};

use super::chunk::Chunk;

/// The column holding a record's exact bytes (terminator included) when the other columns
/// do not render to them.
pub const EXACT: &str = "_exact";

/// Names a query reserves: `_exact` (this module's) and `_seq` (the tape's sequence number).
pub const RESERVED: [&str; 2] = [EXACT, "_seq"];

/// At most this many columns in a layout; a CSV header with more is packed as lines, later JSON
/// keys beyond it make their rows `_exact`. It keeps the layout (in every segment's schema and
/// the trailer) a few hundred KiB at most.
pub const MAX_COLUMNS: usize = 1024;

/// Table names for header fields or keys, in order: trimmed (a UTF-8 byte-order mark too),
/// `c<i>` for an empty or reserved one, `_<i>` appended to a repeat until it is unique.
pub fn unique_names(raw: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut taken = std::collections::HashSet::new();
    let mut names = Vec::new();
    for (i, text) in raw.into_iter().enumerate() {
        let text = text.trim_start_matches('\u{feff}').trim();
        let mut name = if text.is_empty() || RESERVED.contains(&text) {
            format!("c{i}")
        } else {
            text.to_string()
        };
        while taken.contains(&name) {
            name = format!("{name}_{i}");
        }
        taken.insert(name.clone());
        names.push(name);
    }
    names
}

/// How a float column's values are spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FloatStyle {
    /// Shortest digits that read back the same value, never an exponent, no `.0` on whole
    /// numbers (`1.5`, `3`, `0.0001`).
    Plain,
    /// Shortest digits, with `.0` on whole numbers and an exponent for very large or small
    /// values (`1.5`, `3.0`, `1e-7`): how most JSON writers spell a float.
    Shortest,
}

impl FloatStyle {
    /// Appends `v` in this style.
    pub fn write(self, v: f64, out: &mut Vec<u8>) {
        match self {
            FloatStyle::Plain => {
                // Rust's `Display` and ryu give the same shortest digits; they differ only in
                // notation (`3` / `3.0`, `1e-7` / `0.0000001`). ryu is several times faster, so
                // it writes what needs no exponent, and `Display` the rest.
                let mut buf = ryu::Buffer::new();
                let text = buf.format(v);
                if text.contains('e') {
                    use std::io::Write;
                    // Writing to a Vec cannot fail.
                    let _ = write!(out, "{v}");
                } else {
                    out.extend_from_slice(text.strip_suffix(".0").unwrap_or(text).as_bytes());
                }
            }
            FloatStyle::Shortest => out.extend_from_slice(ryu::Buffer::new().format(v).as_bytes()),
        }
    }

    /// `text` as a float of this style, if writing the value back gives `text` exactly.
    pub fn read(self, text: &[u8], scratch: &mut Vec<u8>) -> Option<f64> {
        let v: f64 = std::str::from_utf8(text).ok()?.parse().ok()?;
        scratch.clear();
        self.write(v, scratch);
        (scratch.as_slice() == text).then_some(v)
    }
}

/// How a time column's values are spelled: `YYYY-MM-DD`, `sep`, `HH:MM:SS`, then `.` and
/// `frac` digits when `frac` > 0, then `suffix` (`Z` or nothing). Values are UTC.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TimeStyle {
    /// Between the date and the time: `T` or a space.
    pub sep: char,
    /// Digits of fraction: 0, 3, 6 (or up to 9, the last 3 zero: µs are stored).
    pub frac: u8,
    /// After the time: `Z` or empty.
    pub suffix: String,
}

impl TimeStyle {
    /// The style `text` is written in, if it is one (`2013-01-01T10:00:00Z`).
    pub fn of(text: &[u8]) -> Option<TimeStyle> {
        let t = std::str::from_utf8(text).ok()?;
        let sep = t.chars().nth(10).filter(|c| *c == 'T' || *c == ' ')?;
        let (body, suffix) = match t.strip_suffix('Z') {
            Some(b) => (b, "Z"),
            None => (t, ""),
        };
        let frac = match body.get(19..) {
            Some("") => 0,
            Some(f) => u8::try_from(f.strip_prefix('.')?.len())
                .ok()
                .filter(|n| *n <= 9)?,
            None => return None,
        };
        let style = TimeStyle {
            sep,
            frac,
            suffix: suffix.into(),
        };
        style.read(text, &mut Vec::new()).map(|_| style)
    }

    /// Appends `micros` (µs since the epoch, UTC) in this style; `false` when it has no
    /// calendar date.
    pub fn write(&self, micros: i64, out: &mut Vec<u8>) -> bool {
        use chrono::{Datelike, Timelike};
        let Some(t) = chrono::DateTime::from_timestamp_micros(micros) else {
            return false;
        };
        let Ok(year) = u32::try_from(t.year()).map(|y| y.min(9999)) else {
            return false;
        };
        // Fixed-width digits by hand: this runs once per value when packing and unpacking.
        let digits = |out: &mut Vec<u8>, v: u32, width: usize| {
            let mut buf = [b'0'; 9];
            let mut v = v;
            for i in (0..width).rev() {
                buf[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
            out.extend_from_slice(&buf[..width]);
        };
        digits(out, year, 4);
        out.push(b'-');
        digits(out, t.month(), 2);
        out.push(b'-');
        digits(out, t.day(), 2);
        let mut sep = [0u8; 4];
        out.extend_from_slice(self.sep.encode_utf8(&mut sep).as_bytes());
        digits(out, t.hour(), 2);
        out.push(b':');
        digits(out, t.minute(), 2);
        out.push(b':');
        digits(out, t.second(), 2);
        if self.frac > 0 {
            let frac = usize::from(self.frac.min(9));
            out.push(b'.');
            let nanos = t.timestamp_subsec_nanos().min(999_999_999);
            digits(out, nanos / 10u32.pow(9 - frac as u32), frac);
        }
        out.extend_from_slice(self.suffix.as_bytes());
        true
    }

    /// `text` as µs since the epoch, if writing it back in this style gives `text` exactly.
    pub fn read(&self, text: &[u8], scratch: &mut Vec<u8>) -> Option<i64> {
        let v = crate::pack::text::leading_time(std::str::from_utf8(text).ok()?)?;
        scratch.clear();
        (self.write(v, scratch) && scratch.as_slice() == text).then_some(v)
    }
}

/// `text` as an integer, if writing it back gives `text` exactly (no `+`, no leading zeros).
pub fn read_int(text: &[u8]) -> Option<i64> {
    let v: i64 = std::str::from_utf8(text).ok()?.parse().ok()?;
    (itoa::Buffer::new().format(v).as_bytes() == text).then_some(v)
}

/// A column of a batch, downcast once for rendering.
#[derive(Debug, Clone, Copy)]
pub enum Col<'a> {
    /// 64-bit integers.
    Int(&'a Int64Array),
    /// 64-bit floats.
    Float(&'a Float64Array),
    /// Booleans.
    Bool(&'a BooleanArray),
    /// UTF-8 text, as views: a value of up to 12 bytes is held in its 16-byte view, so the
    /// short repeated strings of CSV and JSON columns (codes, names, units) compress to almost
    /// nothing, where `Utf8`'s running offsets cost bytes on every row.
    Str(&'a StringViewArray),
    /// UTF-8 text with offsets: for long values (lines), whose views would cost 16 bytes a
    /// row on top of the text.
    Text(&'a StringArray),
    /// Event times (µs).
    Time(&'a TimestampMicrosecondArray),
}

impl<'a> Col<'a> {
    /// Column `i` of `batch`.
    pub fn of(batch: &'a RecordBatch, i: usize) -> Result<Col<'a>, String> {
        let a = batch.column(i).as_any();
        let name = batch.schema().field(i).name().clone();
        if let Some(a) = a.downcast_ref::<Int64Array>() {
            Ok(Col::Int(a))
        } else if let Some(a) = a.downcast_ref::<Float64Array>() {
            Ok(Col::Float(a))
        } else if let Some(a) = a.downcast_ref::<BooleanArray>() {
            Ok(Col::Bool(a))
        } else if let Some(a) = a.downcast_ref::<StringViewArray>() {
            Ok(Col::Str(a))
        } else if let Some(a) = a.downcast_ref::<StringArray>() {
            Ok(Col::Text(a))
        } else if let Some(a) = a.downcast_ref::<TimestampMicrosecondArray>() {
            Ok(Col::Time(a))
        } else {
            Err(format!(
                "column `{name}` has type {}, which no pack codec writes",
                batch.column(i).data_type()
            ))
        }
    }

    /// Whether row `row` is null.
    pub fn is_null(&self, row: usize) -> bool {
        match self {
            Col::Int(a) => a.is_null(row),
            Col::Float(a) => a.is_null(row),
            Col::Bool(a) => a.is_null(row),
            Col::Str(a) => a.is_null(row),
            Col::Text(a) => a.is_null(row),
            Col::Time(a) => a.is_null(row),
        }
    }
}

impl Col<'_> {
    /// The text of row `row` of a text column (either layout), `None` when it is null or the
    /// column is not text.
    pub fn text(&self, row: usize) -> Option<&str> {
        match self {
            Col::Str(a) => a.is_valid(row).then(|| a.value(row)),
            Col::Text(a) => a.is_valid(row).then(|| a.value(row)),
            _ => None,
        }
    }
}

/// Strings of at most this many bytes on average in the first chunk are stored as views (a
/// view holds up to 12 bytes itself; longer ones point into a buffer, and still compress
/// better than offsets while they are short: flights.csv's 20-byte times do); longer ones,
/// such as log lines, with offsets.
pub const VIEW_BYTES: usize = 40;

/// The Arrow type of a text column: views for short values, offsets for long ones.
pub fn text_type(view: bool) -> DataType {
    if view {
        DataType::Utf8View
    } else {
        DataType::Utf8
    }
}

/// A builder of a text column of either layout.
#[derive(Debug)]
pub enum TextBuilder {
    /// Views.
    View(StringViewBuilder),
    /// Offsets.
    Plain(StringBuilder),
}

impl TextBuilder {
    /// A builder for `rows` values.
    pub fn new(view: bool, rows: usize) -> TextBuilder {
        if view {
            TextBuilder::View(StringViewBuilder::with_capacity(rows))
        } else {
            TextBuilder::Plain(StringBuilder::with_capacity(rows, 0))
        }
    }

    /// Appends a value or a null.
    pub fn append_option(&mut self, v: Option<&str>) {
        match self {
            TextBuilder::View(b) => b.append_option(v),
            TextBuilder::Plain(b) => b.append_option(v),
        }
    }

    /// The column.
    pub fn finish(&mut self) -> ArrayRef {
        match self {
            TextBuilder::View(b) => Arc::new(b.finish()),
            TextBuilder::Plain(b) => Arc::new(b.finish()),
        }
    }
}

/// What a column holds, as the codecs read and type it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueKind {
    /// `Int64`.
    Int,
    /// `Float64`, read only when spelled in this style.
    Float(FloatStyle),
    /// `Boolean`: `true` / `false`.
    Bool,
    /// `Timestamp(µs, "UTC")`, read only when spelled in this style.
    Time(TimeStyle),
    /// Text (views or offsets), read as UTF-8.
    Text {
        /// Stored as views.
        view: bool,
    },
}

impl ValueKind {
    /// The Arrow type of such a column.
    pub fn data_type(&self) -> DataType {
        match self {
            ValueKind::Int => DataType::Int64,
            ValueKind::Float(_) => DataType::Float64,
            ValueKind::Bool => DataType::Boolean,
            ValueKind::Time(_) => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ValueKind::Text { view } => text_type(*view),
        }
    }
}

/// A builder of one column of a codec's batch: each value is read from its bytes as the
/// column's kind, null when it is absent or does not read as that kind (the row's rendering then
/// differs, and the row keeps its bytes in `_exact`).
#[derive(Debug)]
pub enum ValueBuilder {
    /// `Int64`.
    Int(arrow_array::builder::Int64Builder),
    /// `Float64`.
    Float(arrow_array::builder::Float64Builder, FloatStyle),
    /// `Boolean`.
    Bool(arrow_array::builder::BooleanBuilder),
    /// `Timestamp(µs, "UTC")`.
    Time(arrow_array::builder::TimestampMicrosecondBuilder, TimeStyle),
    /// Text.
    Text(TextBuilder),
}

impl ValueBuilder {
    /// A builder for `rows` values of `kind`.
    pub fn new(kind: ValueKind, rows: usize) -> ValueBuilder {
        match kind {
            ValueKind::Int => {
                ValueBuilder::Int(arrow_array::builder::Int64Builder::with_capacity(rows))
            }
            ValueKind::Float(s) => {
                ValueBuilder::Float(arrow_array::builder::Float64Builder::with_capacity(rows), s)
            }
            ValueKind::Bool => {
                ValueBuilder::Bool(arrow_array::builder::BooleanBuilder::with_capacity(rows))
            }
            ValueKind::Time(style) => ValueBuilder::Time(
                arrow_array::builder::TimestampMicrosecondBuilder::with_capacity(rows),
                style,
            ),
            ValueKind::Text { view } => ValueBuilder::Text(TextBuilder::new(view, rows)),
        }
    }

    /// Appends `v` read as the column's kind, or a null.
    pub fn append_bytes(&mut self, v: Option<&[u8]>, scratch: &mut Vec<u8>) {
        match self {
            ValueBuilder::Int(b) => b.append_option(v.and_then(read_int)),
            ValueBuilder::Float(b, s) => b.append_option(v.and_then(|v| s.read(v, scratch))),
            ValueBuilder::Bool(b) => b.append_option(v.and_then(|v| match v {
                b"true" => Some(true),
                b"false" => Some(false),
                _ => None,
            })),
            ValueBuilder::Time(b, style) => b.append_option(v.and_then(|v| style.read(v, scratch))),
            ValueBuilder::Text(b) => b.append_option(v.and_then(|v| std::str::from_utf8(v).ok())),
        }
    }

    /// Appends text already decoded (a text column only; any other appends a null).
    pub fn append_str(&mut self, v: Option<&str>) {
        match self {
            ValueBuilder::Text(b) => b.append_option(v),
            other => other.append_bytes(None, &mut Vec::new()),
        }
    }

    /// The column.
    pub fn finish(self) -> ArrayRef {
        match self {
            ValueBuilder::Int(mut b) => Arc::new(b.finish()),
            ValueBuilder::Float(mut b, _) => Arc::new(b.finish()),
            ValueBuilder::Bool(mut b) => Arc::new(b.finish()),
            ValueBuilder::Time(mut b, _) => Arc::new(b.finish().with_timezone("UTC")),
            ValueBuilder::Text(mut b) => b.finish(),
        }
    }
}

/// The columns of one batch, ready to render.
#[derive(Debug)]
pub struct Cols<'a> {
    /// Every column but `_exact`, in schema order.
    pub cols: Vec<Col<'a>>,
    /// `_exact`.
    pub exact: &'a BinaryArray,
}

impl<'a> Cols<'a> {
    /// Downcasts the columns of `batch`, whose last column must be `_exact`.
    pub fn of(batch: &'a RecordBatch) -> Result<Cols<'a>, String> {
        let n = batch.num_columns();
        let last = n
            .checked_sub(1)
            .filter(|&i| batch.schema().field(i).name() == EXACT)
            .ok_or_else(|| format!("the batch has no `{EXACT}` column last"))?;
        let exact = batch
            .column(last)
            .as_any()
            .downcast_ref::<BinaryArray>()
            .ok_or_else(|| format!("`{EXACT}` is not binary"))?;
        let cols = (0..last)
            .map(|i| Col::of(batch, i))
            .collect::<Result<_, _>>()?;
        Ok(Cols { cols, exact })
    }
}

/// What a codec does; the rest (exactness, raw frames, checks) is shared.
pub trait Codec: Send + Sync {
    /// The fields of the table, `_exact` not included.
    fn fields(&self) -> Vec<Field>;

    /// The columns (in `fields` order) of the records `chunk.records[first..]`: each value
    /// read as well as it can be, null where it cannot.
    fn columns(&self, chunk: &Chunk, first: usize) -> Result<Vec<ArrayRef>, ArrowError>;

    /// Appends row `row` rendered under the layout, terminator included. Fails only when a
    /// value cannot be written at all (a damaged or foreign batch).
    fn render(&self, cols: &[Col<'_>], row: usize, out: &mut Vec<u8>) -> Result<(), String>;
}

/// The schema of a codec's table: its fields, then `_exact`.
pub fn schema_of(codec: &dyn Codec) -> SchemaRef {
    let mut fields = codec.fields();
    fields.push(Field::new(EXACT, DataType::Binary, true));
    Arc::new(Schema::new(fields))
}

/// The event-time field of a log pack.
pub fn time_field(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        true,
    )
}

/// The batch of the records `chunk.records[first..]`: the codec's columns, and `_exact` for
/// each row they do not render to exactly.
pub fn encode(
    codec: &dyn Codec,
    schema: &SchemaRef,
    chunk: &Chunk,
    first: usize,
) -> Result<RecordBatch, ArrowError> {
    let mut columns = codec.columns(chunk, first)?;
    let rows = chunk.records.len().saturating_sub(first);
    // A layout may have no columns at all (a JSON file whose first object is `{}`).
    let plain = RecordBatch::try_new_with_options(
        Arc::new(Schema::new(schema.fields()[..columns.len()].to_vec())),
        columns.clone(),
        &arrow_array::RecordBatchOptions::new().with_row_count(Some(rows)),
    )?;
    let cols = (0..plain.num_columns())
        .map(|i| Col::of(&plain, i))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ArrowError::InvalidArgumentError)?;
    let mut exact = BinaryBuilder::with_capacity(rows, 0);
    let mut scratch = Vec::new();
    for row in 0..rows {
        let record = chunk.record(first + row);
        scratch.clear();
        let same = codec.render(&cols, row, &mut scratch).is_ok() && scratch == record;
        if same {
            exact.append_null();
        } else {
            exact.append_value(record);
        }
    }
    columns.push(Arc::new(exact.finish()));
    RecordBatch::try_new(schema.clone(), columns)
}

/// The raw form of the records `chunk.records[first..]`: every column null, every record in
/// `_exact`. A frame falls back to it when the structured form is larger by more than the
/// pack's slack, or does not give the bytes back.
pub fn raw(schema: &SchemaRef, chunk: &Chunk, first: usize) -> Result<RecordBatch, ArrowError> {
    let rows = chunk.records.len().saturating_sub(first);
    let mut columns: Vec<ArrayRef> = schema.fields()[..schema.fields().len().saturating_sub(1)]
        .iter()
        .map(|f| arrow_array::new_null_array(f.data_type(), rows))
        .collect();
    let start = chunk.records.get(first).map_or(0, |r| r.start);
    let mut exact = BinaryBuilder::with_capacity(rows, chunk.bytes.len() - start);
    for i in first..chunk.records.len() {
        exact.append_value(chunk.record(i));
    }
    columns.push(Arc::new(exact.finish()));
    RecordBatch::try_new(schema.clone(), columns)
}

/// Appends the bytes of every row of `batch`.
pub fn render_batch(
    codec: &dyn Codec,
    batch: &RecordBatch,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let cols = Cols::of(batch)?;
    for row in 0..batch.num_rows() {
        if cols.exact.is_valid(row) {
            out.extend_from_slice(cols.exact.value(row));
        } else {
            codec
                .render(&cols.cols, row, out)
                .map_err(|e| format!("row {row}: {e}"))?;
        }
    }
    Ok(())
}

/// Appends `"text"` with `"` doubled (CSV quoting).
pub fn write_quoted(text: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for part in text.split_inclusive(|&b| b == b'"') {
        out.extend_from_slice(part);
        if part.last() == Some(&b'"') {
            out.push(b'"');
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_only_when_they_are_spelled_as_written_back() {
        let mut s = Vec::new();
        assert_eq!(read_int(b"-42"), Some(-42));
        for bad in [
            &b"042"[..],
            b"+1",
            b"1.0",
            b"",
            b" 1",
            b"99999999999999999999",
        ] {
            assert_eq!(read_int(bad), None, "{bad:?}");
        }
        assert_eq!(FloatStyle::Plain.read(b"1.5", &mut s), Some(1.5));
        assert_eq!(FloatStyle::Plain.read(b"3", &mut s), Some(3.0));
        assert_eq!(FloatStyle::Plain.read(b"1.50", &mut s), None);
        assert_eq!(FloatStyle::Plain.read(b"1e5", &mut s), None);
        assert_eq!(FloatStyle::Shortest.read(b"3.0", &mut s), Some(3.0));
        assert_eq!(FloatStyle::Shortest.read(b"3", &mut s), None);
        assert_eq!(FloatStyle::Shortest.read(b"1e-7", &mut s), Some(1e-7));
        // Plain is Rust's `Display`, whichever way it is written.
        for v in [
            0.0,
            -0.0,
            1.5,
            3.0,
            1e-7,
            1e21,
            1e16,
            123456.789,
            f64::NAN,
            f64::INFINITY,
            -2.5e-300,
            f64::MAX,
        ] {
            let mut out = Vec::new();
            FloatStyle::Plain.write(v, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{v}"), "{v:?}");
        }
    }

    #[test]
    fn times_are_read_only_in_the_spelling_they_are_written_back() {
        let mut s = Vec::new();
        for text in [
            &b"2013-01-01T10:00:00Z"[..],
            b"2013-01-01 10:00:00",
            b"2026-11-30T13:02:18.500Z",
            b"2026-11-30 13:02:18.123456",
        ] {
            let style = TimeStyle::of(text).unwrap();
            let v = style.read(text, &mut s).unwrap();
            let mut out = Vec::new();
            assert!(style.write(v, &mut out));
            assert_eq!(out, text);
        }
        let z = TimeStyle::of(b"2013-01-01T10:00:00Z").unwrap();
        assert_eq!(z.read(b"2013-01-01T10:00:00", &mut s), None);
        assert_eq!(z.read(b"2013-01-01T10:00:00+01:00", &mut s), None);
        assert_eq!(z.read(b"2013-1-01T10:00:00Z", &mut s), None);
        assert!(TimeStyle::of(b"10:00").is_none());
        assert!(TimeStyle::of(b"2013-01-01T10:00:00+01:00").is_none());
    }

    #[test]
    fn quoting_doubles_quotes() {
        let mut out = Vec::new();
        write_quoted(br#"a"b""#, &mut out);
        assert_eq!(out, br#""a""b""""#);
    }
}
