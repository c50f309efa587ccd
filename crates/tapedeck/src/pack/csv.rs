//! The `csv` codec: one column per header field, typed from the first chunk, rendered back
//! under the file's own dialect.
//!
//! The layout is read once, from the header and the first chunk, and fixed for the pack: the
//! delimiter (a `.tsv`'s tab, or whichever of `,` tab `;` `|` splits the header most), the
//! terminator of the header, and per column its type (integer, float, UTC time, or text — a
//! type only when every value of the first chunk is spelled exactly as the type writes it
//! back: `1.50` or `007` keep a column text), its quoting (`always` when every value of the
//! first chunk was quoted, else `minimal`: quoted only when it must be) and how a null is
//! spelled (empty, or a token such as `NA`). An empty field is null; `""` is the empty
//! string. A record that renders otherwise — other quoting, another field count, a value that
//! does not fit its column's type, broken quotes — keeps its bytes in `_exact`, its columns
//! filled as far as they could be read.

use arrow_array::ArrayRef;
use arrow_schema::{ArrowError, Field};

use super::chunk::Chunk;
use super::codec::{
    Codec, Col, FloatStyle, MAX_COLUMNS, TimeStyle, VIEW_BYTES, ValueBuilder, ValueKind, read_int,
    unique_names, write_quoted,
};

/// A column's type.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `Int64`, written as decimal digits.
    Int,
    /// `Float64`, written in the given style.
    Float(FloatStyle),
    /// `Timestamp(µs, "UTC")`, written in the given style (and the table's event time when it
    /// is the first such column, so a packed CSV is pruned by it).
    Time(TimeStyle),
    /// Text (`Utf8View` or `Utf8`), written as it is.
    Text,
}

/// When a column's values are quoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quote {
    /// Only when the value must be: it is empty, starts with `"`, or holds the delimiter, CR
    /// or LF (a `"` further in is plain text, as the splitter reads it).
    Minimal,
    /// Always.
    Always,
}

/// One column of a CSV pack.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CsvColumn {
    /// The column's name in the table (the header field, made unique and non-empty).
    pub name: String,
    /// Its type.
    pub kind: Kind,
    /// Its quoting.
    pub quote: Quote,
    /// Whether a text column is stored as views (`Utf8View`: values of the first chunk were
    /// at most `VIEW_BYTES` on average) rather than with offsets (`Utf8`).
    #[serde(default)]
    pub view: bool,
    /// How a null is spelled (unquoted): empty, or a token such as `NA` for a numeric column
    /// whose missing values were written so (`R`'s `write.csv`, pandas' `na_rep`).
    #[serde(default)]
    pub null: String,
}

/// Spellings of a missing value that make a numeric column's nulls when they are the only
/// values of a column that do not read as its type.
const NULL_TOKENS: [&str; 7] = ["NA", "N/A", "NULL", "null", "\\N", "None", "nan"];

/// The layout of a CSV pack.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CsvLayout {
    /// The delimiter byte.
    pub delimiter: u8,
    /// The terminator of a row without `_exact`.
    pub terminator: String,
    /// The header record's exact bytes (terminator included), as lowercase hex.
    pub header: String,
    /// The columns.
    pub columns: Vec<CsvColumn>,
}

/// The delimiter a header suggests: whichever of `,` TAB `;` `|` it holds most of, in that
/// order of preference on a tie.
pub fn sniff_delimiter(header: &[u8]) -> u8 {
    [b',', b'\t', b';', b'|']
        .into_iter()
        .max_by_key(|d| {
            (
                memchr::memchr_iter(*d, header).count(),
                [b'|', b';', b'\t', b','].iter().position(|x| x == d),
            )
        })
        .unwrap_or(b',')
}

/// One field of a record: its byte range in the record's content, and whether it was quoted
/// (then the range is inside the quotes, with `""` still doubled).
#[derive(Debug, Clone, Copy)]
struct FieldSpan {
    start: usize,
    end: usize,
    quoted: bool,
}

/// Splits a record's content into fields; `false` when its quotes are broken (a quoted field
/// followed by something other than the delimiter, or not closed).
fn split(content: &[u8], delimiter: u8, out: &mut Vec<FieldSpan>) -> bool {
    out.clear();
    let mut i = 0;
    loop {
        if content.get(i) == Some(&b'"') {
            let start = i + 1;
            let mut j = start;
            loop {
                match memchr::memchr(b'"', &content[j..]) {
                    None => return false,
                    Some(k) => {
                        j += k;
                        if content.get(j + 1) == Some(&b'"') {
                            j += 2;
                        } else {
                            break;
                        }
                    }
                }
            }
            out.push(FieldSpan {
                start,
                end: j,
                quoted: true,
            });
            i = j + 1;
            match content.get(i) {
                None => return true,
                Some(&b) if b == delimiter => i += 1,
                Some(_) => return false,
            }
        } else {
            let end = memchr::memchr(delimiter, &content[i..]).map_or(content.len(), |k| i + k);
            out.push(FieldSpan {
                start: i,
                end,
                quoted: false,
            });
            if end == content.len() {
                return true;
            }
            i = end + 1;
        }
    }
}

/// The text of a field, `""` undoubled.
fn unquote<'a>(content: &'a [u8], f: FieldSpan, buf: &'a mut Vec<u8>) -> &'a [u8] {
    let raw = &content[f.start..f.end];
    if f.quoted && memchr::memchr(b'"', raw).is_some() {
        buf.clear();
        let mut k = 0;
        while k < raw.len() {
            buf.push(raw[k]);
            k += if raw[k] == b'"' { 2 } else { 1 };
        }
        buf
    } else {
        raw
    }
}

impl CsvLayout {
    /// The layout read from a first chunk whose record 0 is the header, with the delimiter
    /// `hint` (a `.tsv` file's tab) or the one the header suggests; `None` when it does not look
    /// like CSV (fewer than two or more than [`MAX_COLUMNS`] columns, or broken header quotes).
    pub fn detect(chunk: &Chunk, hint: Option<u8>) -> Option<CsvLayout> {
        let header = chunk.content(0);
        let delimiter = match hint {
            Some(d) => d,
            None => sniff_delimiter(header),
        };
        let mut fields = Vec::new();
        if !split(header, delimiter, &mut fields) || fields.len() < 2 || fields.len() > MAX_COLUMNS
        {
            return None;
        }
        let mut buf = Vec::new();
        let names = unique_names(
            fields
                .iter()
                .map(|f| String::from_utf8_lossy(unquote(header, *f, &mut buf)).into_owned()),
        );
        let n = names.len();
        // Per column: values seen, all quoted, all ints, all floats of each style.
        let mut seen = vec![0usize; n];
        let mut quoted = vec![0usize; n];
        let mut ints = vec![true; n];
        let mut plain = vec![true; n];
        let mut shortest = vec![true; n];
        // Per column: the time style of its first value, while every value is written so.
        let mut times: Vec<Option<Option<TimeStyle>>> = vec![None; n];
        let mut empties = vec![0usize; n];
        let mut text_bytes = vec![0usize; n];
        let mut tokens = vec![[0usize; NULL_TOKENS.len()]; n];
        let mut scratch = Vec::new();
        for r in 1..chunk.records.len() {
            let content = chunk.content(r);
            if !split(content, delimiter, &mut fields) || fields.len() != n {
                continue;
            }
            for (c, f) in fields.iter().enumerate() {
                if !f.quoted && f.start == f.end {
                    empties[c] += 1;
                    continue;
                }
                if !f.quoted
                    && let Some(t) = NULL_TOKENS
                        .iter()
                        .position(|t| t.as_bytes() == &content[f.start..f.end])
                {
                    tokens[c][t] += 1;
                    continue;
                }
                seen[c] += 1;
                text_bytes[c] += f.end - f.start;
                quoted[c] += usize::from(f.quoted);
                let v = unquote(content, *f, &mut buf);
                ints[c] = ints[c] && read_int(v).is_some();
                times[c] = match times[c].take() {
                    None => Some(TimeStyle::of(v)),
                    Some(Some(style)) => Some(style.read(v, &mut scratch).map(|_| style)),
                    Some(None) => Some(None),
                };
                plain[c] = plain[c] && FloatStyle::Plain.read(v, &mut scratch).is_some();
                shortest[c] = shortest[c] && FloatStyle::Shortest.read(v, &mut scratch).is_some();
            }
        }
        let columns = names
            .into_iter()
            .enumerate()
            .map(|(c, name)| {
                let kind = if seen[c] == 0 {
                    Kind::Text
                } else if ints[c] {
                    Kind::Int
                } else if plain[c] {
                    Kind::Float(FloatStyle::Plain)
                } else if shortest[c] {
                    Kind::Float(FloatStyle::Shortest)
                } else if let Some(Some(style)) = times[c].take() {
                    Kind::Time(style)
                } else {
                    Kind::Text
                };
                // A numeric column's nulls: the most frequent null token, if it is more
                // frequent than empty fields; a text column keeps its tokens as text.
                let (best, count) = tokens[c]
                    .iter()
                    .enumerate()
                    .max_by_key(|(i, n)| (**n, usize::MAX - i))
                    .map_or((0, 0), |(i, n)| (i, *n));
                let quote = if seen[c] > 0 && quoted[c] == seen[c] {
                    Quote::Always
                } else {
                    Quote::Minimal
                };
                // An unquoted token is a null where every value is quoted (R's `write.csv`
                // writes a missing string as `NA`) or the column is numeric.
                let null = if (kind != Kind::Text || quote == Quote::Always) && count > empties[c] {
                    NULL_TOKENS[best].to_string()
                } else {
                    String::new()
                };
                CsvColumn {
                    name,
                    kind,
                    view: text_bytes[c] <= VIEW_BYTES * seen[c].max(1),
                    quote,
                    null,
                }
            })
            .collect();
        let terminator = if chunk.terminator(0) == b"\r\n" {
            "\r\n"
        } else {
            "\n"
        };
        Some(CsvLayout {
            delimiter,
            terminator: terminator.into(),
            header: crate::tape::format::hex(chunk.record(0)),
            columns,
        })
    }
}

/// The `csv` codec.
#[derive(Debug)]
pub struct CsvCodec {
    layout: CsvLayout,
}

impl CsvCodec {
    /// The codec of `layout`.
    pub fn new(layout: CsvLayout) -> CsvCodec {
        CsvCodec { layout }
    }
}

impl CsvColumn {
    fn value_kind(&self) -> ValueKind {
        match self.kind {
            Kind::Int => ValueKind::Int,
            Kind::Float(s) => ValueKind::Float(s),
            Kind::Time(ref t) => ValueKind::Time(t.clone()),
            Kind::Text => ValueKind::Text { view: self.view },
        }
    }
}

impl Codec for CsvCodec {
    fn fields(&self) -> Vec<Field> {
        self.layout
            .columns
            .iter()
            .map(|c| Field::new(&c.name, c.value_kind().data_type(), true))
            .collect()
    }

    fn columns(&self, chunk: &Chunk, first: usize) -> Result<Vec<ArrayRef>, ArrowError> {
        let rows = chunk.records.len().saturating_sub(first);
        let mut builders: Vec<ValueBuilder> = self
            .layout
            .columns
            .iter()
            .map(|c| ValueBuilder::new(c.value_kind(), rows))
            .collect();
        let mut fields = Vec::new();
        let (mut buf, mut scratch) = (Vec::new(), Vec::new());
        for r in first..chunk.records.len() {
            let content = chunk.content(r);
            let ok = split(content, self.layout.delimiter, &mut fields);
            for (c, b) in builders.iter_mut().enumerate() {
                let null = self.layout.columns[c].null.as_bytes();
                let value = fields
                    .get(c)
                    .filter(|f| {
                        ok && (f.quoted || (f.start < f.end && &content[f.start..f.end] != null))
                    })
                    .map(|f| unquote(content, *f, &mut buf));
                b.append_bytes(value, &mut scratch);
            }
        }
        Ok(builders.into_iter().map(ValueBuilder::finish).collect())
    }

    fn render(&self, cols: &[Col<'_>], row: usize, out: &mut Vec<u8>) -> Result<(), String> {
        let d = self.layout.delimiter;
        for (c, (col, spec)) in cols.iter().zip(&self.layout.columns).enumerate() {
            if c > 0 {
                out.push(d);
            }
            if col.is_null(row) {
                out.extend_from_slice(spec.null.as_bytes());
                continue;
            }
            let start = out.len();
            match (col, &spec.kind) {
                (Col::Int(a), Kind::Int) => {
                    out.extend_from_slice(itoa::Buffer::new().format(a.value(row)).as_bytes())
                }
                (Col::Float(a), Kind::Float(s)) => s.write(a.value(row), out),
                (Col::Time(a), Kind::Time(style)) => {
                    if !style.write(a.value(row), out) {
                        return Err(format!("column `{}`: a time out of range", spec.name));
                    }
                }
                (c @ (Col::Str(_) | Col::Text(_)), Kind::Text) => {
                    out.extend_from_slice(c.text(row).unwrap_or_default().as_bytes())
                }
                _ => {
                    return Err(format!(
                        "column `{}` does not hold its layout's type",
                        spec.name
                    ));
                }
            }
            // A number never holds the delimiter (`,` TAB `;` `|`), a quote or a line break.
            let must = matches!(spec.kind, Kind::Text) && {
                let text = &out[start..];
                text.is_empty()
                    || text.first() == Some(&b'"')
                    || text.iter().any(|&b| b == d || b == b'\r' || b == b'\n')
            };
            if must || spec.quote == Quote::Always {
                let text = out.split_off(start);
                write_quoted(&text, out);
            }
        }
        out.extend_from_slice(self.layout.terminator.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(s: &[u8]) -> Option<Vec<(String, bool)>> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        split(s, b',', &mut out).then(|| {
            out.iter()
                .map(|f| {
                    (
                        String::from_utf8_lossy(unquote(s, *f, &mut buf)).into_owned(),
                        f.quoted,
                    )
                })
                .collect()
        })
    }

    #[test]
    fn fields_split_with_quotes_and_doubled_quotes() {
        assert_eq!(
            fields(br#"a,"b,c","d""e",,"""#).unwrap(),
            vec![
                ("a".into(), false),
                ("b,c".into(), true),
                ("d\"e".into(), true),
                ("".into(), false),
                ("".into(), true)
            ]
        );
        assert!(fields(br#""open,a"#).is_none());
        assert!(fields(br#""a"b,c"#).is_none());
        assert_eq!(fields(b"").unwrap(), vec![("".into(), false)]);
    }
}
