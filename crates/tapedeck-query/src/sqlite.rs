//! A SQLite table as a query table: read whole into memory (SQLite files tapedeck writes are
//! a run's worth of rows), each column typed by its declared type — INTEGER, REAL, TEXT or
//! BLOB affinity, as SQLite itself decides it.

use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use rusqlite::types::ValueRef;

/// Column builders by SQLite affinity.
enum Column {
    Int(Int64Builder),
    Real(Float64Builder),
    Text(StringBuilder),
    Blob(BinaryBuilder),
}

fn affinity(declared: &str) -> DataType {
    // SQLite's affinity rules (datatype3.html §3.1), in their order.
    let d = declared.to_ascii_uppercase();
    if d.contains("INT") {
        DataType::Int64
    } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
        DataType::Utf8
    } else if d.contains("BLOB") || d.is_empty() {
        DataType::Binary
    } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
        DataType::Float64
    } else {
        // NUMERIC affinity: read as a float (integers convert exactly up to 2^53).
        DataType::Float64
    }
}

/// Reads `table` of the database at `path`.
pub(crate) fn table(path: &Path, table: &str) -> Result<MemTable, String> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("{}: cannot open as SQLite: {e}", path.display()))?;
    let quoted = format!("\"{}\"", table.replace('"', "\"\""));
    let columns: Vec<(String, String)> = {
        let mut stmt = conn
            .prepare(&format!("PRAGMA table_info({quoted})"))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, String>(2)?)))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| format!("{}: {e}", path.display()))?
    };
    if columns.is_empty() {
        return Err(format!(
            "{}: no table {table:?} (name it with ?table=NAME)",
            path.display()
        ));
    }
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, declared)| Field::new(name, affinity(declared), true))
        .collect();
    let mut builders: Vec<Column> = fields
        .iter()
        .map(|f| match f.data_type() {
            DataType::Int64 => Column::Int(Int64Builder::new()),
            DataType::Utf8 => Column::Text(StringBuilder::new()),
            DataType::Float64 => Column::Real(Float64Builder::new()),
            _ => Column::Blob(BinaryBuilder::new()),
        })
        .collect();
    let list = columns
        .iter()
        .map(|(n, _)| format!("\"{}\"", n.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(", ");
    let mut stmt = conn
        .prepare(&format!("SELECT {list} FROM {quoted}"))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut rows = stmt
        .query([])
        .map_err(|e| format!("{}: {e}", path.display()))?;
    while let Some(row) = rows
        .next()
        .map_err(|e| format!("{}: {e}", path.display()))?
    {
        for (i, b) in builders.iter_mut().enumerate() {
            let v = row
                .get_ref(i)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            append(b, v);
        }
    }
    let arrays: Vec<ArrayRef> = builders
        .into_iter()
        .map(|b| -> ArrayRef {
            match b {
                Column::Int(mut b) => Arc::new(b.finish()),
                Column::Real(mut b) => Arc::new(b.finish()),
                Column::Text(mut b) => Arc::new(b.finish()),
                Column::Blob(mut b) => Arc::new(b.finish()),
            }
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), arrays).map_err(|e| e.to_string())?;
    MemTable::try_new(schema, vec![vec![batch]]).map_err(|e| e.to_string())
}

/// Appends a value, converted to the column's type as SQLite's own casts would.
fn append(b: &mut Column, v: ValueRef<'_>) {
    match (b, v) {
        (Column::Int(b), ValueRef::Integer(x)) => b.append_value(x),
        (Column::Int(b), ValueRef::Real(x)) => b.append_value(x as i64),
        (Column::Real(b), ValueRef::Real(x)) => b.append_value(x),
        (Column::Real(b), ValueRef::Integer(x)) => b.append_value(x as f64),
        (Column::Text(b), ValueRef::Text(t)) => b.append_value(String::from_utf8_lossy(t)),
        (Column::Text(b), ValueRef::Integer(x)) => b.append_value(x.to_string()),
        (Column::Text(b), ValueRef::Real(x)) => b.append_value(x.to_string()),
        (Column::Blob(b), ValueRef::Blob(x) | ValueRef::Text(x)) => b.append_value(x),
        (Column::Blob(b), ValueRef::Integer(x)) => b.append_value(x.to_le_bytes()),
        (Column::Int(b), _) => b.append_null(),
        (Column::Real(b), _) => b.append_null(),
        (Column::Text(b), _) => b.append_null(),
        (Column::Blob(b), _) => b.append_null(),
    }
}
