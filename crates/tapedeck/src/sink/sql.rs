//! What SQL sinks share: identifier rules, quoting, and the storage form of a batch.
//!
//! Table (and schema) names come from URIs and are checked against
//! `^[A-Za-z_][A-Za-z0-9_]{0,62}$` before they reach any SQL. Column names come from devices
//! and files, so they are never checked but always quoted *and escaped* ([`quote_ident`]);
//! values are only ever bound, never formatted into SQL.
//!
//! [`to_storage`] turns a batch into the few types a SQL table stores — 64-bit integers, 64-bit
//! floats, text, bytes — before the schema lock sees it: booleans become 0/1, narrow integers
//! widen, timestamps become ISO 8601 text or integer microseconds as the URI asks. The lock then
//! compares like with like, whether it was taken from the first batch or from an existing table.

use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt64Type};
use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, RecordBatchOptions};
use arrow_schema::{DataType, Field, Schema};

use crate::error::{Error, Result};
use crate::record::schema_lock::{SUPPORTED_TYPES, to_f64, to_i64};
use crate::record::time::{IsoFormatter, micros_array};

/// How blocks are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlockRows {
    /// One summary row per block (default).
    #[default]
    Summary,
    /// One row per channel × sample.
    Long,
}

impl BlockRows {
    /// The rows `block` becomes.
    pub fn batch(self, block: &crate::record::Block) -> Result<RecordBatch> {
        match self {
            BlockRows::Summary => block.to_summary_batch(),
            BlockRows::Long => block.to_long_batch(),
        }
    }
}

/// How timestamps are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampStorage {
    /// ISO 8601 UTC text with microseconds (default).
    #[default]
    Iso,
    /// Integer microseconds since the Unix epoch.
    UnixMicros,
}

/// Checks a table or schema name; `param` and `uri` name it in the error.
pub fn check_ident(name: &str, param: &str, uri: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::BadParam {
            uri: uri.to_string(),
            param: param.to_string(),
            value: name.to_string(),
            expected: "a name matching ^[A-Za-z_][A-Za-z0-9_]{0,62}$".into(),
        })
    }
}

/// `"name"` with every `"` doubled: safe for any column name.
///
/// ```
/// assert_eq!(tapedeck::sink::sql::quote_ident(r#"a"; DROP TABLE x; --"#), r#""a""; DROP TABLE x; --""#);
/// ```
pub fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The storage form of `batch` for SQLite; see the module docs.
pub fn to_storage(batch: &RecordBatch, timestamps: TimestampStorage) -> Result<RecordBatch> {
    convert(batch, Rules::Untyped(timestamps))
}

/// The storage form of `batch` for a typed database (PostgreSQL): 64-bit integers and floats,
/// booleans, text, bytes, and timestamps as microseconds in UTC (a timestamp without a time
/// zone is read as UTC).
pub fn to_typed_storage(batch: &RecordBatch) -> Result<RecordBatch> {
    convert(batch, Rules::Typed)
}

/// What a storage form keeps.
#[derive(Clone, Copy)]
enum Rules {
    /// SQLite: booleans become 0/1, timestamps text or integers.
    Untyped(TimestampStorage),
    /// Booleans and timestamps keep their types.
    Typed,
}

/// The timestamp type of the typed storage form.
pub fn utc_micros() -> DataType {
    DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, Some("UTC".into()))
}

fn stored(data_type: &DataType, rules: Rules) -> bool {
    match data_type {
        DataType::Int64
        | DataType::Float64
        | DataType::Utf8
        | DataType::Binary
        | DataType::Null => true,
        DataType::Boolean => matches!(rules, Rules::Typed),
        t => matches!(rules, Rules::Typed) && *t == utc_micros(),
    }
}

fn convert(batch: &RecordBatch, rules: Rules) -> Result<RecordBatch> {
    let schema = batch.schema();
    if schema.fields().iter().all(|f| stored(f.data_type(), rules)) {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (f, a) in schema.fields().iter().zip(batch.columns()) {
        let column = if stored(a.data_type(), rules) {
            a.clone()
        } else {
            storage_column(f.name(), a, rules)?
        };
        fields.push(Field::new(f.name(), column.data_type().clone(), true));
        columns.push(column);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), columns, &options)
        .map_err(|e| Error::arrow("converting a batch for SQL", e))
}

fn storage_column(name: &str, a: &ArrayRef, rules: Rules) -> Result<ArrayRef> {
    Ok(match a.data_type() {
        DataType::Boolean => Arc::new(
            a.as_boolean()
                .iter()
                .map(|v| v.map(i64::from))
                .collect::<Int64Array>(),
        ),
        DataType::Float32 => to_f64(a).ok_or_else(|| unsupported(name, a))?,
        DataType::UInt64 => {
            let u = a.as_primitive::<UInt64Type>();
            if let Some(row) = u
                .iter()
                .position(|v| v.is_some_and(|v| v > i64::MAX as u64))
            {
                return Err(Error::SchemaConflict {
                    column: name.to_string(),
                    locked: DataType::Int64,
                    got: DataType::UInt64,
                    row: row as u64,
                    hint: "a value above 2^63-1 does not fit a SQL integer; send it as float or text",
                });
            }
            Arc::new(u.unary::<_, Int64Type>(|v| v as i64))
        }
        DataType::Timestamp(unit, _) => {
            let micros = micros_array(a, *unit);
            match rules {
                Rules::Typed => Arc::new(micros.with_timezone("UTC")),
                Rules::Untyped(TimestampStorage::UnixMicros) => {
                    Arc::new(micros.reinterpret_cast::<Int64Type>())
                }
                Rules::Untyped(TimestampStorage::Iso) => {
                    let mut iso = IsoFormatter::default();
                    let mut b = StringBuilder::with_capacity(micros.len(), micros.len() * 27);
                    let mut text = Vec::with_capacity(27);
                    for v in micros.iter() {
                        match v {
                            Some(t) => {
                                text.clear();
                                iso.write(t, &mut text);
                                // ISO text is ASCII; the check is a fast scan, never a copy.
                                b.append_value(std::str::from_utf8(&text).unwrap_or_default());
                            }
                            None => b.append_null(),
                        }
                    }
                    Arc::new(b.finish())
                }
            }
        }
        _ => to_i64(a).ok_or_else(|| unsupported(name, a))?,
    })
}

fn unsupported(name: &str, a: &ArrayRef) -> Error {
    Error::UnsupportedType {
        column: name.to_string(),
        data_type: a.data_type().clone(),
        supported: SUPPORTED_TYPES,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        for good in ["samples", "_t", "T1_x", &"a".repeat(63)] {
            assert!(check_ident(good, "table", "u").is_ok(), "{good}");
        }
        for bad in ["", "1x", "a-b", "a b", "x;drop", "ä", &"a".repeat(64)] {
            assert!(check_ident(bad, "table", "u").is_err(), "{bad}");
        }
    }
}
