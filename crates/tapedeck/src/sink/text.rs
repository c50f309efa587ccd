//! Arrow values as text: the CSV and JSONL encodings shared by their sinks and `tapedeck tail`.
//!
//! [`TextColumn`] normalises one Arrow column to the handful of shapes text formats care about
//! (narrow integers widen to i64, float32 to f64, every timestamp unit to µs) so the per-row
//! loops of the sinks are a single `match` with no dynamic casts. Floats are written with `ryu`
//! (shortest text that reads back to the same bits), integers with `itoa`, instants as ISO 8601
//! UTC with microseconds.

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType, UInt64Type};
use arrow_array::{Array, ArrayRef, BinaryArray, BooleanArray, PrimitiveArray, StringArray};
use arrow_schema::DataType;

use crate::error::{Error, Result};
use crate::record::schema_lock::{SUPPORTED_TYPES, to_f64, to_i64};
use crate::record::time::{IsoFormatter, micros_array};

/// One column, normalised for text output.
enum TextColumn {
    Null,
    Bool(BooleanArray),
    Int(PrimitiveArray<Int64Type>),
    UInt(PrimitiveArray<UInt64Type>),
    Float(PrimitiveArray<Float64Type>),
    Text(StringArray),
    Bytes(BinaryArray),
    Timestamp(PrimitiveArray<TimestampMicrosecondType>),
}

/// Per-column formatting caches a text sink keeps across batches.
#[derive(Debug, Default)]
struct ColumnCache {
    floats: FloatCache,
    iso: IsoFormatter,
}

impl ColumnCache {
    /// Caches for `n` columns, keeping existing ones.
    fn resize(caches: &mut Vec<ColumnCache>, n: usize) {
        if caches.len() < n {
            caches.resize_with(n, ColumnCache::default);
        }
    }
}

const FLOAT_SLOTS: usize = 4096;

/// Text of recently written floats, direct-mapped by bit pattern. Measurement values are
/// quantised (an instrument reporting two decimals, an ADC's codes), so the same values recur
/// and `ryu`, the costliest step of a text row, runs once per distinct value instead of once per
/// row. A miss costs one hash and one copy.
#[derive(Debug)]
pub(crate) struct FloatCache {
    /// Bit pattern per slot; `u64::MAX` (a NaN, never cached) marks an empty slot.
    keys: Box<[u64; FLOAT_SLOTS]>,
    lens: Box<[u8; FLOAT_SLOTS]>,
    text: Box<[[u8; 24]; FLOAT_SLOTS]>,
}

impl Default for FloatCache {
    fn default() -> Self {
        FloatCache {
            keys: Box::new([u64::MAX; FLOAT_SLOTS]),
            lens: Box::new([0; FLOAT_SLOTS]),
            text: Box::new([[0; 24]; FLOAT_SLOTS]),
        }
    }
}

impl FloatCache {
    /// Writes finite `v` as `ryu` would.
    fn write(&mut self, v: f64, out: &mut Vec<u8>) {
        let bits = v.to_bits();
        let slot = (bits.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - 12)) as usize;
        if self.keys[slot] != bits {
            let mut b = ryu::Buffer::new();
            let t = b.format_finite(v).as_bytes();
            // ryu's longest output is 24 bytes.
            let n = t.len().min(24);
            self.text[slot][..n].copy_from_slice(&t[..n]);
            self.lens[slot] = n as u8;
            self.keys[slot] = bits;
        }
        out.extend_from_slice(&self.text[slot][..self.lens[slot] as usize]);
    }
}

impl TextColumn {
    fn new(name: &str, array: &ArrayRef) -> Result<TextColumn> {
        Ok(match array.data_type() {
            DataType::Null => TextColumn::Null,
            DataType::Boolean => TextColumn::Bool(array.as_boolean().clone()),
            DataType::Int64 => TextColumn::Int(array.as_primitive::<Int64Type>().clone()),
            DataType::UInt64 => TextColumn::UInt(array.as_primitive::<UInt64Type>().clone()),
            DataType::Float64 => TextColumn::Float(array.as_primitive::<Float64Type>().clone()),
            DataType::Float32 => match to_f64(array) {
                Some(a) => TextColumn::Float(a.as_primitive::<Float64Type>().clone()),
                None => return Err(unsupported(name, array)),
            },
            DataType::Utf8 => TextColumn::Text(array.as_string::<i32>().clone()),
            DataType::Binary => TextColumn::Bytes(array.as_binary::<i32>().clone()),
            DataType::Timestamp(unit, _) => TextColumn::Timestamp(micros_array(array, *unit)),
            _ => match to_i64(array) {
                Some(a) => TextColumn::Int(a.as_primitive::<Int64Type>().clone()),
                None => return Err(unsupported(name, array)),
            },
        })
    }

    /// Builds the views of every column of a batch.
    fn for_batch(batch: &arrow_array::RecordBatch) -> Result<Vec<TextColumn>> {
        batch
            .schema()
            .fields()
            .iter()
            .zip(batch.columns())
            .map(|(f, a)| TextColumn::new(f.name(), a))
            .collect()
    }

    fn is_null(&self, row: usize) -> bool {
        match self {
            TextColumn::Null => true,
            TextColumn::Bool(a) => a.is_null(row),
            TextColumn::Int(a) => a.is_null(row),
            TextColumn::UInt(a) => a.is_null(row),
            TextColumn::Float(a) => a.is_null(row),
            TextColumn::Text(a) => a.is_null(row),
            TextColumn::Bytes(a) => a.is_null(row),
            TextColumn::Timestamp(a) => a.is_null(row),
        }
    }

    /// Writes row `row` as a CSV field (RFC 4180). Null is an empty field; an empty string is
    /// `""` so the two stay distinguishable. NaN and ±inf are `NaN`, `inf`, `-inf`, which
    /// Python's `float()`, pandas and Rust's `f64::from_str` all read back.
    fn write_csv(&self, row: usize, cache: &mut ColumnCache, out: &mut Vec<u8>) {
        if self.is_null(row) {
            return;
        }
        match self {
            TextColumn::Null => {}
            TextColumn::Bool(a) => out.extend_from_slice(bool_text(a.value(row))),
            TextColumn::Int(a) => write_int(a.value(row), out),
            TextColumn::UInt(a) => {
                out.extend_from_slice(itoa::Buffer::new().format(a.value(row)).as_bytes())
            }
            TextColumn::Float(a) => {
                let v = a.value(row);
                if v.is_finite() {
                    cache.floats.write(v, out);
                } else if v.is_nan() {
                    out.extend_from_slice(b"NaN");
                } else if v > 0.0 {
                    out.extend_from_slice(b"inf");
                } else {
                    out.extend_from_slice(b"-inf");
                }
            }
            TextColumn::Text(a) => write_csv_text(a.value(row).as_bytes(), out),
            TextColumn::Bytes(a) => write_hex(a.value(row), out),
            TextColumn::Timestamp(a) => cache.iso.write(a.value(row), out),
        }
    }

    /// Writes row `row` as a JSON value. Null, NaN and ±inf are `null` (JSON has no
    /// non-finite numbers); instants are ISO 8601 strings; bytes are a hex string.
    fn write_json(&self, row: usize, cache: &mut ColumnCache, out: &mut Vec<u8>) {
        if self.is_null(row) {
            out.extend_from_slice(b"null");
            return;
        }
        match self {
            TextColumn::Null => out.extend_from_slice(b"null"),
            TextColumn::Bool(a) => out.extend_from_slice(bool_text(a.value(row))),
            TextColumn::Int(a) => write_int(a.value(row), out),
            TextColumn::UInt(a) => {
                out.extend_from_slice(itoa::Buffer::new().format(a.value(row)).as_bytes())
            }
            TextColumn::Float(a) => {
                let v = a.value(row);
                if v.is_finite() {
                    cache.floats.write(v, out);
                } else {
                    out.extend_from_slice(b"null");
                }
            }
            TextColumn::Text(a) => write_json_string(a.value(row), out),
            TextColumn::Bytes(a) => {
                out.push(b'"');
                write_hex(a.value(row), out);
                out.push(b'"');
            }
            TextColumn::Timestamp(a) => {
                out.push(b'"');
                cache.iso.write(a.value(row), out);
                out.push(b'"');
            }
        }
    }
}

fn unsupported(name: &str, array: &ArrayRef) -> Error {
    Error::UnsupportedType {
        column: name.to_string(),
        data_type: array.data_type().clone(),
        supported: SUPPORTED_TYPES,
    }
}

fn bool_text(v: bool) -> &'static [u8] {
    if v { b"true" } else { b"false" }
}

fn write_int(v: i64, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

fn write_hex(bytes: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 15) as usize]);
    }
}

/// RFC 4180: quote a field that contains a comma, quote, CR or LF (or is empty, to tell it from
/// null); double the quotes inside.
fn write_csv_text(s: &[u8], out: &mut Vec<u8>) {
    let needs_quotes = s.is_empty() || s.iter().any(|&b| matches!(b, b',' | b'"' | b'\r' | b'\n'));
    if !needs_quotes {
        out.extend_from_slice(s);
        return;
    }
    out.push(b'"');
    for &b in s {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// A JSON string literal with the escapes RFC 8259 requires.
fn write_json_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Encodes batches as CSV rows or JSON lines, keeping its formatting caches across batches.
///
/// The CSV and JSONL sinks are built on it, and so is `tapedeck tail`.
///
/// ```
/// # use std::sync::Arc;
/// # use arrow_array::{Int64Array, RecordBatch};
/// # use arrow_schema::{DataType, Field, Schema};
/// use tapedeck::sink::text::TextEncoder;
/// let batch = RecordBatch::try_new(
///     Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)])),
///     vec![Arc::new(Int64Array::from(vec![1, 2]))],
/// ).unwrap();
/// let mut enc = TextEncoder::default();
/// let mut out = Vec::new();
/// TextEncoder::csv_header(&batch.schema(), &mut out);
/// enc.csv(&batch, &mut out).unwrap();
/// enc.jsonl(&batch, &mut out).unwrap();
/// assert_eq!(String::from_utf8(out).unwrap(), "n\n1\n2\n{\"n\":1}\n{\"n\":2}\n");
/// ```
#[derive(Debug, Default)]
pub struct TextEncoder {
    caches: Vec<ColumnCache>,
}

impl TextEncoder {
    /// The CSV header line of `schema`.
    pub fn csv_header(schema: &arrow_schema::Schema, out: &mut Vec<u8>) {
        for (i, f) in schema.fields().iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_csv_text(f.name().as_bytes(), out);
        }
        out.push(b'\n');
    }

    /// Every row of `batch` as CSV lines.
    pub fn csv(&mut self, batch: &arrow_array::RecordBatch, out: &mut Vec<u8>) -> Result<()> {
        let columns = TextColumn::for_batch(batch)?;
        ColumnCache::resize(&mut self.caches, columns.len());
        for row in 0..batch.num_rows() {
            for (i, (col, cache)) in columns.iter().zip(&mut self.caches).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                col.write_csv(row, cache, out);
            }
            out.push(b'\n');
        }
        Ok(())
    }

    /// Every row of `batch` as one JSON object per line, keys in column order.
    pub fn jsonl(&mut self, batch: &arrow_array::RecordBatch, out: &mut Vec<u8>) -> Result<()> {
        let schema = batch.schema();
        // `{"name":` / `,"name":` prefixes are encoded once per batch, not once per row.
        let keys: Vec<Vec<u8>> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let mut k = vec![if i == 0 { b'{' } else { b',' }];
                write_json_string(f.name(), &mut k);
                k.push(b':');
                k
            })
            .collect();
        let columns = TextColumn::for_batch(batch)?;
        ColumnCache::resize(&mut self.caches, columns.len());
        for row in 0..batch.num_rows() {
            if columns.is_empty() {
                out.push(b'{');
            }
            for ((key, col), cache) in keys.iter().zip(&columns).zip(&mut self.caches) {
                out.extend_from_slice(key);
                col.write_json(row, cache, out);
            }
            out.extend_from_slice(b"}\n");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_cache_always_matches_ryu_even_when_slots_collide() {
        let mut cache = FloatCache::default();
        let mut x: u64 = 0x1234_5678_9abc_def1;
        // Far more distinct values than slots, and repeats, in one stream.
        for i in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = if i % 3 == 0 {
                (i % 5000) as f64 * 0.01
            } else {
                f64::from_bits(x)
            };
            if !v.is_finite() {
                continue;
            }
            let mut out = Vec::new();
            cache.write(v, &mut out);
            assert_eq!(out, ryu::Buffer::new().format_finite(v).as_bytes(), "{v}");
        }
    }

    #[test]
    fn csv_quoting_follows_rfc_4180() {
        let cases: [(&str, &str); 5] = [
            ("plain", "plain"),
            ("", "\"\""),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("two\nlines", "\"two\nlines\""),
        ];
        for (input, want) in cases {
            let mut out = Vec::new();
            write_csv_text(input.as_bytes(), &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }

    #[test]
    fn json_strings_escape_control_characters() {
        let mut out = Vec::new();
        write_json_string("a\"b\\c\n\u{1}é", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a\\\"b\\\\c\\n\\u0001é\""
        );
    }
}
