//! The `jsonl` codec: one JSON object per line, one column per top-level key.
//!
//! The layout is read from the first chunk and fixed for the pack: the keys in the order they
//! first appear (at most [`MAX_COLUMNS`]), each with a type — integer, float (in the spelling
//! every value of the first chunk had), boolean, string (the decoded text), or `json` (the
//! value's own JSON text, for objects, arrays and keys whose values mix types) — and whether a
//! null is written as `"key": null` or by leaving the key out; and the spacing: what comes
//! before `{`, after `{`, between a key and its value, between members, before `}` and after
//! it (so pretty JSON arrays with one object per line, `  {…},`, pack as well). A line that
//! renders otherwise keeps its bytes in `_exact`.

use arrow_array::ArrayRef;
use arrow_schema::{ArrowError, Field};

use super::chunk::Chunk;
use super::codec::{
    Codec, Col, FloatStyle, MAX_COLUMNS, TimeStyle, VIEW_BYTES, ValueBuilder, ValueKind, read_int,
    unique_names,
};

/// A column's type.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `Int64`.
    Int,
    /// `Float64`, spelled in the given style.
    Float(FloatStyle),
    /// `Boolean`.
    Bool,
    /// `Timestamp(µs, "UTC")`: strings that are UTC times in this style (`"2013-01-01T10:00:00Z"`),
    /// written back in quotes; the first such column is the table's event time.
    Time(TimeStyle),
    /// Text: the decoded string, written back with JSON's standard escapes.
    Str,
    /// Text: the value's JSON text, written back as it is.
    Json,
}

/// One column of a JSONL pack.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JsonColumn {
    /// The column's name (the decoded key, made unique).
    pub name: String,
    /// The key as written, quotes included.
    pub key: String,
    /// Its type.
    pub kind: Kind,
    /// Whether a null is written `"key": null` (else the key is left out).
    pub null_literal: bool,
    /// Whether a text column is stored as views (values of the first chunk were at most `VIEW_BYTES`
    /// bytes on average) rather than with offsets.
    #[serde(default)]
    pub view: bool,
}

/// The layout of a JSONL pack.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JsonLayout {
    /// Before `{`.
    pub prefix: String,
    /// After `{`.
    pub open: String,
    /// Between a key and its value (the `:` and its spaces).
    pub key_sep: String,
    /// Between members (the `,` and its spaces).
    pub item_sep: String,
    /// Before `}`.
    pub close: String,
    /// After `}`.
    pub suffix: String,
    /// The terminator of a row without `_exact`.
    pub terminator: String,
    /// The columns.
    pub columns: Vec<JsonColumn>,
}

/// Byte ranges of one object line.
#[derive(Debug, Default)]
struct Spans {
    prefix: (usize, usize),
    open: (usize, usize),
    close: (usize, usize),
    suffix: (usize, usize),
    /// Per member: key (quotes included), separator, value; and the separator after it.
    members: Vec<[(usize, usize); 4]>,
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\r' | b'\n')) {
        i += 1;
    }
    i
}

/// The end of the string starting at `i` (on its `"`), past the closing quote.
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        match b.get(j)? {
            b'"' => return Some(j + 1),
            b'\\' => j += 2,
            _ => j += 1,
        }
    }
}

/// The end of the value starting at `i`.
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match b.get(j)? {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while let Some(c) = b.get(j) {
                if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n') {
                    break;
                }
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// The spans of a line holding one object (with whitespace or a `,` around it).
fn spans(b: &[u8]) -> Option<Spans> {
    let mut s = Spans::default();
    let open_at = skip_ws(b, 0);
    if b.get(open_at) != Some(&b'{') {
        return None;
    }
    s.prefix = (0, open_at);
    let mut i = skip_ws(b, open_at + 1);
    s.open = (open_at, i);
    if b.get(i) == Some(&b'}') {
        s.close = (i, i + 1);
    } else {
        loop {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            let key_end = string_end(b, i)?;
            let colon = skip_ws(b, key_end);
            if b.get(colon) != Some(&b':') {
                return None;
            }
            let v = skip_ws(b, colon + 1);
            let v_end = value_end(b, v)?;
            let after = skip_ws(b, v_end);
            match b.get(after)? {
                b',' => {
                    let next = skip_ws(b, after + 1);
                    s.members
                        .push([(i, key_end), (key_end, v), (v, v_end), (v_end, next)]);
                    i = next;
                }
                b'}' => {
                    s.members
                        .push([(i, key_end), (key_end, v), (v, v_end), (v_end, v_end)]);
                    s.close = (v_end, after + 1);
                    break;
                }
                _ => return None,
            }
        }
    }
    s.suffix = (s.close.1, b.len());
    // After the object: whitespace and at most one `,`.
    let tail = &b[s.suffix.0..];
    if tail.iter().filter(|&&c| c == b',').count() > 1
        || tail
            .iter()
            .any(|c| !matches!(c, b',' | b' ' | b'\t' | b'\r'))
    {
        return None;
    }
    Some(s)
}

fn text(b: &[u8], r: (usize, usize)) -> Option<&str> {
    std::str::from_utf8(&b[r.0..r.1]).ok()
}

/// What a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Null,
    Bool,
    Str,
    Num,
    Nested,
}

fn class(v: &[u8]) -> Class {
    match v.first() {
        Some(b'"') => Class::Str,
        Some(b'{' | b'[') => Class::Nested,
        _ if v == b"null" => Class::Null,
        _ if v == b"true" || v == b"false" => Class::Bool,
        _ => Class::Num,
    }
}

impl JsonLayout {
    /// The layout of a first chunk, or `None` when none of its first 16 records is one object
    /// on a line.
    pub fn detect(chunk: &Chunk) -> Option<JsonLayout> {
        // The first object line (a JSON array written one object per line opens with `[`).
        let (at, s0) = (0..chunk.records.len().min(16))
            .find_map(|r| spans(chunk.content(r)).map(|s| (r, s)))?;
        let first = chunk.content(at);
        let part = |r: (usize, usize)| text(first, r).map(str::to_owned);
        let mut layout = JsonLayout {
            prefix: part(s0.prefix)?,
            open: part((s0.open.0 + 1, s0.open.1))?,
            key_sep: ":".into(),
            item_sep: ",".into(),
            close: part((s0.close.0, s0.close.1 - 1))?,
            suffix: part(s0.suffix)?,
            terminator: if chunk.terminator(at) == b"\r\n" {
                "\r\n"
            } else {
                "\n"
            }
            .into(),
            columns: Vec::new(),
        };
        // The spacing inside the braces and between members, from the first object lines that
        // show it (a first line `{}` or `{"a": 1}` shows none, or no separator).
        let lines = || {
            (at..chunk.records.len().min(at + 16))
                .filter_map(|r| spans(chunk.content(r)).map(|s| (chunk.content(r), s)))
        };
        if let Some((b, s)) = lines().find(|(_, s)| !s.members.is_empty()) {
            let part = |r: (usize, usize)| text(b, r).map(str::to_owned);
            layout.open = part((s.open.0 + 1, s.open.1))?;
            layout.close = part((s.close.0, s.close.1 - 1))?;
            layout.key_sep = part(s.members[0][1])?;
        }
        if let Some((b, s)) = lines().find(|(_, s)| s.members.len() > 1) {
            layout.item_sep = text(b, s.members[0][3])?.to_owned();
        }
        // Per key: classes seen, float styles that fit, null literal seen.
        struct Seen {
            key: String,
            classes: Vec<Class>,
            ints: bool,
            plain: bool,
            shortest: bool,
            null: bool,
            /// Every string value is written back byte for byte by `serde_json`'s escapes.
            str_exact: bool,
            /// The time style of the first string value, while every string value is one.
            time: Option<Option<TimeStyle>>,
            values: usize,
            bytes: usize,
        }
        let mut seen: Vec<Seen> = Vec::new();
        let mut index = std::collections::HashMap::new();
        let mut scratch = Vec::new();
        for r in 0..chunk.records.len() {
            let b = chunk.content(r);
            let Some(s) = spans(b) else { continue };
            for m in &s.members {
                let Some(key) = text(b, m[0]) else { continue };
                let at = match index.get(key) {
                    Some(&at) => at,
                    None if seen.len() < MAX_COLUMNS => {
                        index.insert(key.to_owned(), seen.len());
                        seen.push(Seen {
                            key: key.to_owned(),
                            classes: Vec::new(),
                            ints: true,
                            plain: true,
                            shortest: true,
                            null: false,
                            str_exact: true,
                            time: None,
                            values: 0,
                            bytes: 0,
                        });
                        seen.len() - 1
                    }
                    None => continue,
                };
                let v = &b[m[2].0..m[2].1];
                let c = class(v);
                let k = &mut seen[at];
                if c == Class::Null {
                    k.null = true;
                    continue;
                }
                k.values += 1;
                k.bytes += v.len();
                if !k.classes.contains(&c) {
                    k.classes.push(c);
                }
                if c == Class::Str {
                    let inner = &v[1..v.len().saturating_sub(1).max(1)];
                    k.time = match k.time.take() {
                        None => Some(TimeStyle::of(inner)),
                        Some(Some(style)) => Some(style.read(inner, &mut scratch).map(|_| style)),
                        Some(None) => Some(None),
                    };
                }
                if c == Class::Str && k.str_exact {
                    // Python's `json.dumps` writes `\u00e9` where serde_json writes `é`: such a
                    // column keeps its values' JSON text instead.
                    k.str_exact = serde_json::from_slice::<String>(v)
                        .ok()
                        .and_then(|t| serde_json::to_vec(&t).ok())
                        .is_some_and(|back| back == v);
                }
                if c == Class::Num {
                    k.ints = k.ints && read_int(v).is_some();
                    k.plain = k.plain && FloatStyle::Plain.read(v, &mut scratch).is_some();
                    k.shortest = k.shortest && FloatStyle::Shortest.read(v, &mut scratch).is_some();
                }
            }
        }
        let names = unique_names(
            seen.iter()
                .map(|k| serde_json::from_str(&k.key).unwrap_or_else(|_| k.key.clone())),
        );
        for (k, name) in seen.into_iter().zip(names) {
            let kind = match (k.classes.as_slice(), k.time.clone().flatten()) {
                ([Class::Num], _) if k.ints => Kind::Int,
                ([Class::Num], _) if k.plain => Kind::Float(FloatStyle::Plain),
                ([Class::Num], _) if k.shortest => Kind::Float(FloatStyle::Shortest),
                ([Class::Bool], _) => Kind::Bool,
                ([Class::Str], Some(style)) => Kind::Time(style),
                ([Class::Str], None) if k.str_exact => Kind::Str,
                _ => Kind::Json,
            };
            layout.columns.push(JsonColumn {
                name,
                key: k.key,
                kind,
                null_literal: k.null,
                view: k.bytes <= VIEW_BYTES * k.values.max(1),
            });
        }
        Some(layout)
    }
}

/// The `jsonl` codec.
#[derive(Debug)]
pub struct JsonCodec {
    layout: JsonLayout,
    index: std::collections::HashMap<String, usize>,
}

impl JsonCodec {
    /// The codec of `layout`.
    pub fn new(layout: JsonLayout) -> JsonCodec {
        let index = layout
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.key.clone(), i))
            .collect();
        JsonCodec { layout, index }
    }
}

impl JsonColumn {
    fn value_kind(&self) -> ValueKind {
        match self.kind {
            Kind::Int => ValueKind::Int,
            Kind::Float(s) => ValueKind::Float(s),
            Kind::Bool => ValueKind::Bool,
            Kind::Time(ref t) => ValueKind::Time(t.clone()),
            Kind::Str | Kind::Json => ValueKind::Text { view: self.view },
        }
    }
}

impl Codec for JsonCodec {
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
        let mut values: Vec<Option<&[u8]>> = vec![None; builders.len()];
        let mut scratch = Vec::new();
        for r in first..chunk.records.len() {
            let b = chunk.content(r);
            values.iter_mut().for_each(|v| *v = None);
            if let Some(s) = spans(b) {
                for m in &s.members {
                    let at = text(b, m[0]).and_then(|k| self.index.get(k));
                    if let Some(&at) = at {
                        values[at] = Some(&b[m[2].0..m[2].1]).filter(|v| *v != b"null");
                    }
                }
            }
            for ((b, v), spec) in builders.iter_mut().zip(&values).zip(&self.layout.columns) {
                if let Kind::Time(_) = spec.kind {
                    // A time: the string's text between its quotes.
                    b.append_bytes(
                        v.and_then(|v| v.strip_prefix(b"\"")?.strip_suffix(b"\"")),
                        &mut scratch,
                    );
                } else if spec.kind == Kind::Str {
                    // A JSON string: its decoded text.
                    b.append_str(
                        v.filter(|v| v.first() == Some(&b'"'))
                            .and_then(|v| serde_json::from_slice::<String>(v).ok())
                            .as_deref(),
                    );
                } else {
                    b.append_bytes(*v, &mut scratch);
                }
            }
        }
        Ok(builders.into_iter().map(ValueBuilder::finish).collect())
    }

    fn render(&self, cols: &[Col<'_>], row: usize, out: &mut Vec<u8>) -> Result<(), String> {
        let l = &self.layout;
        out.extend_from_slice(l.prefix.as_bytes());
        out.push(b'{');
        let mut any = false;
        for (col, spec) in cols.iter().zip(&l.columns) {
            let null = col.is_null(row);
            if null && !spec.null_literal {
                continue;
            }
            out.extend_from_slice(if any {
                l.item_sep.as_bytes()
            } else {
                l.open.as_bytes()
            });
            any = true;
            out.extend_from_slice(spec.key.as_bytes());
            out.extend_from_slice(l.key_sep.as_bytes());
            if null {
                out.extend_from_slice(b"null");
                continue;
            }
            match (col, &spec.kind) {
                (Col::Int(a), Kind::Int) => {
                    out.extend_from_slice(itoa::Buffer::new().format(a.value(row)).as_bytes())
                }
                (Col::Float(a), Kind::Float(s)) => s.write(a.value(row), out),
                (Col::Time(a), Kind::Time(style)) => {
                    out.push(b'"');
                    if !style.write(a.value(row), out) {
                        return Err(format!("column `{}`: a time out of range", spec.name));
                    }
                    out.push(b'"');
                }
                (Col::Bool(a), Kind::Bool) => {
                    out.extend_from_slice(if a.value(row) { b"true" } else { b"false" })
                }
                (c @ (Col::Str(_) | Col::Text(_)), Kind::Str) => {
                    serde_json::to_writer(&mut *out, c.text(row).unwrap_or_default())
                        .map_err(|e| format!("column `{}`: {e}", spec.name))?
                }
                (c @ (Col::Str(_) | Col::Text(_)), Kind::Json) => {
                    out.extend_from_slice(c.text(row).unwrap_or_default().as_bytes())
                }
                _ => {
                    return Err(format!(
                        "column `{}` does not hold its layout's type",
                        spec.name
                    ));
                }
            }
        }
        if any {
            out.extend_from_slice(l.close.as_bytes());
        }
        out.push(b'}');
        out.extend_from_slice(l.suffix.as_bytes());
        out.extend_from_slice(l.terminator.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_line_is_cut_into_members_with_their_spacing() {
        let b = br#"  {"a": 1, "b": {"x": [1, "}"]}, "c": "q\"}"},"#;
        let s = spans(b).unwrap();
        assert_eq!(s.members.len(), 3);
        assert_eq!(
            &b[s.members[1][2].0..s.members[1][2].1],
            br#"{"x": [1, "}"]}"#
        );
        assert_eq!(&b[s.members[2][2].0..s.members[2][2].1], br#""q\"}""#);
        assert_eq!(&b[s.members[0][1].0..s.members[0][1].1], b": ");
        assert_eq!(&b[s.suffix.0..s.suffix.1], b",");
        assert!(spans(b"[1, 2]").is_none());
        assert!(spans(br#"{"a": 1"#).is_none());
        assert!(spans(br#"{"a": 1} x"#).is_none());
        assert!(spans(b"{}").unwrap().members.is_empty());
    }
}

#[cfg(test)]
mod render_tests {
    use super::*;
    use crate::pack::chunk::Chunker;
    use crate::pack::codec::{self, schema_of};

    #[test]
    fn a_regular_line_renders_back_from_its_columns() {
        let line =
            b"{\"id\": 3, \"name\": \"n3\", \"ok\": false, \"v\": 3.5, \"tags\": [\"a\", 3]}\n";
        let chunk = Chunker::new(&line[..], None, 10, 1 << 20)
            .next_chunk()
            .unwrap()
            .unwrap();
        let layout = JsonLayout::detect(&chunk).unwrap();
        let codec = JsonCodec::new(layout.clone());
        let schema = schema_of(&codec);
        let batch = codec::encode(&codec, &schema, &chunk, 0).unwrap();
        let cols = codec::Cols::of(&batch).unwrap();
        let mut out = Vec::new();
        codec.render(&cols.cols, 0, &mut out).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(line),
            "{layout:?}"
        );
        assert!(arrow_array::Array::is_null(cols.exact, 0));
    }
}
