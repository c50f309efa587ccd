//! PostgreSQL's binary wire form of column values, written straight from Arrow arrays.
//!
//! One encoder serves both write paths: [`copy_rows`] writes the body of a `COPY … FROM STDIN
//! (FORMAT binary)` stream (header, rows of length-prefixed fields, trailer — PostgreSQL's "Binary
//! Format" of COPY), and [`Param`] hands the same bytes to a prepared `INSERT` as bound
//! parameters. Values are converted to the *column's* type (`int4`, `real`, `timestamp`, …), so
//! an introspected table with narrower columns than tapedeck would create still takes rows; a
//! value that does not fit is [`Error::ValueOutOfRange`] naming the column and the row.

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use bytes::{BufMut, BytesMut};

use crate::error::{Error, Result};

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The column types tapedeck writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgType {
    /// `smallint`
    Int2,
    /// `integer`
    Int4,
    /// `bigint`
    Int8,
    /// `real`
    Float4,
    /// `double precision`
    Float8,
    /// `boolean`
    Bool,
    /// `text`, `character varying`, `character`
    Text,
    /// `json`
    Json,
    /// `jsonb`
    Jsonb,
    /// `bytea`
    Bytea,
    /// `timestamp with time zone`
    Timestamptz,
    /// `timestamp without time zone` (written as the UTC wall-clock time)
    Timestamp,
}

/// The type names tapedeck can write, for error messages.
pub const SUPPORTED_PG_TYPES: &str = "smallint, integer, bigint, real, double precision, boolean, text, character varying, character, json, jsonb, bytea, timestamp with time zone, timestamp without time zone";

impl PgType {
    /// The type of an `information_schema.columns.data_type` name, if tapedeck writes it.
    pub fn from_information_schema(name: &str) -> Option<PgType> {
        Some(match name {
            "smallint" => PgType::Int2,
            "integer" => PgType::Int4,
            "bigint" => PgType::Int8,
            "real" => PgType::Float4,
            "double precision" => PgType::Float8,
            "boolean" => PgType::Bool,
            "text" | "character varying" | "character" => PgType::Text,
            "json" => PgType::Json,
            "jsonb" => PgType::Jsonb,
            "bytea" => PgType::Bytea,
            "timestamp with time zone" => PgType::Timestamptz,
            "timestamp without time zone" => PgType::Timestamp,
            _ => return None,
        })
    }

    /// The type `create_table=true` gives a column of the storage form's `data_type`.
    pub fn for_arrow(data_type: &DataType) -> PgType {
        match data_type {
            DataType::Int64 => PgType::Int8,
            DataType::Float64 => PgType::Float8,
            DataType::Boolean => PgType::Bool,
            DataType::Binary => PgType::Bytea,
            DataType::Timestamp(..) => PgType::Timestamptz,
            // Text, and columns that were only ever null.
            _ => PgType::Text,
        }
    }

    /// The SQL name, for DDL.
    pub fn sql(self) -> &'static str {
        match self {
            PgType::Int2 => "smallint",
            PgType::Int4 => "integer",
            PgType::Int8 => "bigint",
            PgType::Float4 => "real",
            PgType::Float8 => "double precision",
            PgType::Bool => "boolean",
            PgType::Text => "text",
            PgType::Json => "json",
            PgType::Jsonb => "jsonb",
            PgType::Bytea => "bytea",
            PgType::Timestamptz => "timestamp with time zone",
            PgType::Timestamp => "timestamp without time zone",
        }
    }

    /// The Arrow type of the storage form that feeds a column of this type (what the schema
    /// lock holds for it).
    pub fn arrow(self) -> DataType {
        match self {
            PgType::Int2 | PgType::Int4 | PgType::Int8 => DataType::Int64,
            PgType::Float4 | PgType::Float8 => DataType::Float64,
            PgType::Bool => DataType::Boolean,
            PgType::Text | PgType::Json | PgType::Jsonb => DataType::Utf8,
            PgType::Bytea => DataType::Binary,
            PgType::Timestamptz | PgType::Timestamp => crate::sink::sql::utc_micros(),
        }
    }

    /// The type tokio-postgres binds a [`Param`] of this column as.
    pub(crate) fn wire(self) -> tokio_postgres::types::Type {
        use tokio_postgres::types::Type;
        match self {
            PgType::Int2 => Type::INT2,
            PgType::Int4 => Type::INT4,
            PgType::Int8 => Type::INT8,
            PgType::Float4 => Type::FLOAT4,
            PgType::Float8 => Type::FLOAT8,
            PgType::Bool => Type::BOOL,
            PgType::Text => Type::TEXT,
            PgType::Json => Type::JSON,
            PgType::Jsonb => Type::JSONB,
            PgType::Bytea => Type::BYTEA,
            PgType::Timestamptz => Type::TIMESTAMPTZ,
            PgType::Timestamp => Type::TIMESTAMP,
        }
    }
}

/// One column of a batch, downcast once, with the type of the column it goes to.
pub(crate) struct ColumnWriter<'a> {
    name: &'a str,
    to: PgType,
    values: Values<'a>,
}

enum Values<'a> {
    Int(&'a arrow_array::Int64Array),
    Float(&'a arrow_array::Float64Array),
    Bool(&'a arrow_array::BooleanArray),
    Text(&'a arrow_array::StringArray),
    Bytes(&'a arrow_array::BinaryArray),
    Time(&'a arrow_array::TimestampMicrosecondArray),
    Null,
}

impl<'a> ColumnWriter<'a> {
    /// `array` must be in the typed storage form ([`crate::sink::sql::to_typed_storage`]).
    pub(crate) fn new(name: &'a str, array: &'a ArrayRef, to: PgType) -> Result<Self> {
        let values = match array.data_type() {
            DataType::Int64 => Values::Int(array.as_primitive::<Int64Type>()),
            DataType::Float64 => Values::Float(array.as_primitive::<Float64Type>()),
            DataType::Boolean => Values::Bool(array.as_boolean()),
            DataType::Utf8 => Values::Text(array.as_string::<i32>()),
            DataType::Binary => Values::Bytes(array.as_binary::<i32>()),
            DataType::Timestamp(..) => {
                Values::Time(array.as_primitive::<TimestampMicrosecondType>())
            }
            DataType::Null => Values::Null,
            other => {
                return Err(Error::UnsupportedType {
                    column: name.to_string(),
                    data_type: other.clone(),
                    supported: crate::record::schema_lock::SUPPORTED_TYPES,
                });
            }
        };
        Ok(ColumnWriter { name, to, values })
    }

    fn is_null(&self, row: usize) -> bool {
        match &self.values {
            Values::Int(a) => a.is_null(row),
            Values::Float(a) => a.is_null(row),
            Values::Bool(a) => a.is_null(row),
            Values::Text(a) => a.is_null(row),
            Values::Bytes(a) => a.is_null(row),
            Values::Time(a) => a.is_null(row),
            Values::Null => true,
        }
    }

    /// Writes the value at `row` as a COPY field: a big-endian i32 length (-1 for null) and the
    /// bytes. `first_row` numbers rows in errors.
    fn write_field(&self, row: usize, first_row: u64, out: &mut BytesMut) -> Result<()> {
        if self.is_null(row) {
            out.put_i32(-1);
            return Ok(());
        }
        let at = out.len();
        out.put_i32(0);
        self.write_value(row, first_row, out)?;
        let len = (out.len() - at - 4) as i32;
        out[at..at + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    /// Writes the non-null value at `row` in the column type's binary form.
    fn write_value(&self, row: usize, first_row: u64, out: &mut BytesMut) -> Result<()> {
        let out_of_range = |value: String| Error::ValueOutOfRange {
            column: self.name.to_string(),
            row: first_row + row as u64,
            value,
            target: self.to.sql(),
        };
        match (&self.values, self.to) {
            (Values::Int(a), PgType::Int8) => out.put_i64(a.value(row)),
            (Values::Int(a), PgType::Int4) => {
                let v = a.value(row);
                out.put_i32(i32::try_from(v).map_err(|_| out_of_range(v.to_string()))?);
            }
            (Values::Int(a), PgType::Int2) => {
                let v = a.value(row);
                out.put_i16(i16::try_from(v).map_err(|_| out_of_range(v.to_string()))?);
            }
            (Values::Float(a), PgType::Float8) => out.put_f64(a.value(row)),
            (Values::Float(a), PgType::Float4) => {
                let v = a.value(row);
                let narrowed = v as f32;
                if v.is_finite() && !narrowed.is_finite() {
                    return Err(out_of_range(v.to_string()));
                }
                out.put_f32(narrowed);
            }
            (Values::Bool(a), PgType::Bool) => out.put_u8(u8::from(a.value(row))),
            (Values::Text(a), PgType::Text | PgType::Json) => {
                out.put_slice(a.value(row).as_bytes())
            }
            (Values::Text(a), PgType::Jsonb) => {
                // jsonb's binary form: a version byte (1), then the JSON text.
                out.put_u8(1);
                out.put_slice(a.value(row).as_bytes());
            }
            (Values::Bytes(a), PgType::Bytea) => out.put_slice(a.value(row)),
            (Values::Time(a), PgType::Timestamptz | PgType::Timestamp) => {
                let v = a.value(row);
                out.put_i64(
                    v.checked_sub(PG_EPOCH_MICROS)
                        .ok_or_else(|| out_of_range(v.to_string()))?,
                );
            }
            _ => {
                // The schema lock maps every column type to one storage type, so this is a
                // column whose lock and table disagree: say so rather than write garbage.
                return Err(Error::Unsupported {
                    sink: "postgres".into(),
                    what: format!(
                        "column `{}`: cannot write this value into a {} column",
                        self.name,
                        self.to.sql()
                    ),
                });
            }
        }
        Ok(())
    }
}

/// The 19-byte header of a binary COPY stream: signature, flags, header-extension length.
pub(crate) fn copy_header(out: &mut BytesMut) {
    out.put_slice(b"PGCOPY\n\xff\r\n\0");
    out.put_i32(0);
    out.put_i32(0);
}

/// The trailer of a binary COPY stream: a field count of -1.
pub(crate) fn copy_trailer(out: &mut BytesMut) {
    out.put_i16(-1);
}

/// Appends every row of `batch` (storage form, columns in `types` order) as binary COPY rows.
/// `first_row` numbers rows in errors.
pub(crate) fn copy_rows(
    batch: &RecordBatch,
    columns: &[(usize, PgType)],
    first_row: u64,
    out: &mut BytesMut,
) -> Result<()> {
    let schema = batch.schema();
    let writers = columns
        .iter()
        .map(|&(i, to)| ColumnWriter::new(schema.field(i).name(), batch.column(i), to))
        .collect::<Result<Vec<_>>>()?;
    let fields = i16::try_from(writers.len()).map_err(|_| Error::Unsupported {
        sink: "postgres".into(),
        what: format!(
            "{} columns; PostgreSQL tables hold at most 1600",
            writers.len()
        ),
    })?;
    out.reserve(batch.num_rows() * (2 + writers.len() * 12));
    for row in 0..batch.num_rows() {
        out.put_i16(fields);
        for w in &writers {
            w.write_field(row, first_row, out)?;
        }
    }
    Ok(())
}

/// One value of one row, bound as a parameter of a prepared `INSERT` in the same binary form.
#[derive(Debug)]
pub(crate) struct Param {
    /// The encoded value, or `None` for SQL NULL.
    bytes: Option<bytes::Bytes>,
}

impl Param {
    /// Encodes every value of `batch`, row by row, for a multi-row `INSERT`.
    pub(crate) fn rows(
        batch: &RecordBatch,
        columns: &[(usize, PgType)],
        first_row: u64,
    ) -> Result<Vec<Param>> {
        let schema = batch.schema();
        let writers = columns
            .iter()
            .map(|&(i, to)| ColumnWriter::new(schema.field(i).name(), batch.column(i), to))
            .collect::<Result<Vec<_>>>()?;
        let mut out = Vec::with_capacity(batch.num_rows() * writers.len());
        let mut buf = BytesMut::new();
        for row in 0..batch.num_rows() {
            for w in &writers {
                out.push(if w.is_null(row) {
                    Param { bytes: None }
                } else {
                    w.write_value(row, first_row, &mut buf)?;
                    Param {
                        bytes: Some(buf.split().freeze()),
                    }
                });
            }
        }
        Ok(out)
    }
}

impl tokio_postgres::types::ToSql for Param {
    fn to_sql(
        &self,
        _ty: &tokio_postgres::types::Type,
        out: &mut BytesMut,
    ) -> std::result::Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
    {
        match &self.bytes {
            Some(b) => {
                out.put_slice(b);
                Ok(tokio_postgres::types::IsNull::No)
            }
            None => Ok(tokio_postgres::types::IsNull::Yes),
        }
    }

    fn accepts(_ty: &tokio_postgres::types::Type) -> bool {
        // The statement is prepared with the column types the values were encoded for.
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{BooleanArray, Float64Array, Int64Array, StringArray};
    use arrow_schema::{Field, Schema};

    use super::*;

    fn one_column(array: ArrayRef) -> RecordBatch {
        let schema = Schema::new(vec![Field::new("c", array.data_type().clone(), true)]);
        RecordBatch::try_new(Arc::new(schema), vec![array]).unwrap()
    }

    fn encode(array: ArrayRef, to: PgType) -> Result<Vec<u8>> {
        let mut out = BytesMut::new();
        copy_rows(&one_column(array), &[(0, to)], 0, &mut out)?;
        Ok(out.to_vec())
    }

    #[test]
    fn rows_are_field_count_then_length_prefixed_fields() {
        let bytes = encode(
            Arc::new(Int64Array::from(vec![Some(1), None])),
            PgType::Int8,
        )
        .unwrap();
        assert_eq!(
            bytes,
            [
                &[0, 1][..],
                &[0, 0, 0, 8],
                &1i64.to_be_bytes(),
                &[0, 1],
                &(-1i32).to_be_bytes()
            ]
            .concat()
        );
    }

    #[test]
    fn header_and_trailer() {
        let mut out = BytesMut::new();
        copy_header(&mut out);
        copy_trailer(&mut out);
        assert_eq!(&out[..11], b"PGCOPY\n\xff\r\n\0");
        assert_eq!(out.len(), 19 + 2);
        assert_eq!(&out[19..], &[0xff, 0xff]);
    }

    #[test]
    fn narrow_columns_take_values_that_fit_and_name_those_that_do_not() {
        let ok = encode(Arc::new(Int64Array::from(vec![-32768])), PgType::Int2).unwrap();
        assert_eq!(&ok[2..], &[0, 0, 0, 2, 0x80, 0x00]);
        let e = encode(Arc::new(Int64Array::from(vec![1, 40_000])), PgType::Int2).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("`c`") && text.contains("40000") && text.contains("row 1"),
            "{text}"
        );
        let f = encode(Arc::new(Float64Array::from(vec![1e300])), PgType::Float4).unwrap_err();
        assert!(f.to_string().contains("real"), "{f}");
        let f4 = encode(Arc::new(Float64Array::from(vec![1.5])), PgType::Float4).unwrap();
        assert_eq!(&f4[6..], &1.5f32.to_be_bytes());
    }

    #[test]
    fn timestamps_count_from_2000_and_jsonb_has_a_version_byte() {
        let t = arrow_array::TimestampMicrosecondArray::from(vec![PG_EPOCH_MICROS + 7])
            .with_timezone("UTC");
        let bytes = encode(Arc::new(t), PgType::Timestamptz).unwrap();
        assert_eq!(&bytes[6..], &7i64.to_be_bytes());
        let j = encode(Arc::new(StringArray::from(vec!["{}"])), PgType::Jsonb).unwrap();
        assert_eq!(&j[2..], &[0, 0, 0, 3, 1, b'{', b'}']);
        let b = encode(Arc::new(BooleanArray::from(vec![true])), PgType::Bool).unwrap();
        assert_eq!(&b[2..], &[0, 0, 0, 1, 1]);
    }

    #[test]
    fn every_type_maps_back_to_its_storage_type() {
        for name in SUPPORTED_PG_TYPES.split(", ") {
            let t = PgType::from_information_schema(name).unwrap();
            assert_eq!(PgType::for_arrow(&t.arrow()).arrow(), t.arrow(), "{name}");
        }
        assert_eq!(PgType::from_information_schema("numeric"), None);
    }
}
