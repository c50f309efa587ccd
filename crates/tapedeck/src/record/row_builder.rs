//! Rows in, Arrow batches out.
//!
//! A [`RowBuilder`] buffers rows and, on [`RowBuilder::finish`], infers the columns of the
//! buffered rows (order of first appearance; int/float widen to float64; a column of only nulls
//! stays `Null`) and builds one `RecordBatch`. Two modes:
//!
//! - [`RowBuilder::locked`] (the default of [`RowBuilder::new`]): the first batch locks the
//!   schema and every later batch is conformed to it through a [`SchemaLock`] — missing columns
//!   null, unknown columns dropped with one warning (or an error under strict), conflicts typed.
//! - [`RowBuilder::per_batch`]: every batch carries exactly the columns its own rows have, and
//!   only exact duplicate names collide. `pipe` uses this so each sink can apply its own lock
//!   (JSONL keeps wider rows and case-sensitive keys; CSV locks).
//!
//! Row numbers in errors count from the first row the builder saw, starting at 0.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, NullArray, RecordBatch, RecordBatchOptions};
use arrow_schema::{DataType, Field, Schema};

use super::schema_lock::{SchemaLock, UnknownColumns};
use super::value::{Row, Value};
use crate::error::{Error, Result};

/// Turns rows into batches; see the module docs.
///
/// ```
/// use tapedeck::record::{Row, RowBuilder};
/// let mut b = RowBuilder::new();
/// b.push(Row::new().with("device", "fuel").with("flow", 1));
/// b.push(Row::new().with("device", "fuel").with("flow", 2.5));
/// let batch = b.finish().unwrap().unwrap();
/// assert_eq!(batch.num_rows(), 2);
/// // 1 and 2.5 in one column: widened to float64.
/// assert_eq!(batch.schema().field(1).data_type(), &arrow_schema::DataType::Float64);
/// ```
#[derive(Debug)]
pub struct RowBuilder {
    rows: Vec<Row>,
    lock: Option<SchemaLock>,
    rows_seen: u64,
}

impl Default for RowBuilder {
    fn default() -> Self {
        RowBuilder::new()
    }
}

impl RowBuilder {
    /// A builder that locks the schema on its first batch (unknown columns dropped with a
    /// warning).
    pub fn new() -> RowBuilder {
        RowBuilder::locked(SchemaLock::new("row builder"))
    }

    /// A builder that locks with `lock` (choose its owner name and policy).
    pub fn locked(lock: SchemaLock) -> RowBuilder {
        RowBuilder {
            rows: Vec::new(),
            lock: Some(lock),
            rows_seen: 0,
        }
    }

    /// A strict builder: an unknown column after the lock is an error.
    pub fn strict() -> RowBuilder {
        RowBuilder::locked(
            SchemaLock::new("row builder").with_unknown_columns(UnknownColumns::Error),
        )
    }

    /// A builder whose batches each carry just the columns of their own rows (no lock).
    pub fn per_batch() -> RowBuilder {
        RowBuilder {
            rows: Vec::new(),
            lock: None,
            rows_seen: 0,
        }
    }

    /// Buffers a row.
    pub fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    /// Rows buffered since the last `finish`.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The schema lock, if this builder holds one.
    pub fn schema_lock(&self) -> Option<&SchemaLock> {
        self.lock.as_ref()
    }

    /// Builds a batch of the buffered rows (`None` when there are none). On error every
    /// buffered row is discarded, so one bad row cannot wedge the builder; use
    /// [`RowBuilder::finish_partial`] to keep the rows before the bad one.
    pub fn finish(&mut self) -> Result<Option<RecordBatch>> {
        match self.finish_partial() {
            (batch, None) => Ok(batch),
            (_, Some(e)) => Err(e),
        }
    }

    /// Like [`RowBuilder::finish`], but when a row is bad the rows before it still come back as a
    /// batch, beside the error.
    ///
    /// ```
    /// use tapedeck::record::{Row, RowBuilder};
    /// let mut b = RowBuilder::per_batch();
    /// b.push(Row::new().with("n", 1));
    /// b.push(Row::new().with("n", 2));
    /// b.push(Row::new().with("n", "three"));
    /// let (batch, error) = b.finish_partial();
    /// assert_eq!(batch.unwrap().num_rows(), 2);
    /// assert!(error.unwrap().to_string().contains("row 2"));
    /// ```
    pub fn finish_partial(&mut self) -> (Option<RecordBatch>, Option<Error>) {
        if self.rows.is_empty() {
            return (None, None);
        }
        let rows = std::mem::take(&mut self.rows);
        let first_row = self.rows_seen;
        self.rows_seen += rows.len() as u64;
        // Only a locked builder stands for a table, where names that differ in case collide.
        let fold_case = self.lock.is_some();
        let (batch, error) = match build_batch(&rows, first_row, fold_case) {
            Ok(batch) => (Some(batch), None),
            Err(RowError { valid_rows, error }) => {
                let prefix = (valid_rows > 0)
                    .then(|| build_batch(&rows[..valid_rows], first_row, fold_case).ok())
                    .flatten();
                (prefix, Some(error))
            }
        };
        match (&mut self.lock, batch) {
            (Some(lock), Some(batch)) => match lock.conform(&batch) {
                Ok(b) => (Some(b), error),
                Err(e) => (None, Some(error.unwrap_or(e))),
            },
            (_, batch) => (batch, error),
        }
    }
}

/// A row that cannot join the batch, and how many rows before it can.
pub(crate) struct RowError {
    valid_rows: usize,
    error: Error,
}

enum Column {
    Null,
    Bool(BooleanBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Text(StringBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    Bytes(BinaryBuilder),
}

impl Column {
    fn for_type(dt: &DataType, n: usize) -> Column {
        match dt {
            DataType::Boolean => Column::Bool(BooleanBuilder::with_capacity(n)),
            DataType::Int64 => Column::Int(Int64Builder::with_capacity(n)),
            DataType::Float64 => Column::Float(Float64Builder::with_capacity(n)),
            DataType::Utf8 => Column::Text(StringBuilder::with_capacity(n, n * 8)),
            DataType::Timestamp(_, _) => Column::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC"),
            ),
            DataType::Binary => Column::Bytes(BinaryBuilder::with_capacity(n, n * 8)),
            _ => Column::Null,
        }
    }

    fn append(&mut self, v: &Value) {
        match (self, v) {
            (Column::Bool(b), Value::Bool(x)) => b.append_value(*x),
            (Column::Int(b), Value::Int(x)) => b.append_value(*x),
            (Column::Float(b), Value::Float(x)) => b.append_value(*x),
            (Column::Float(b), Value::Int(x)) => b.append_value(*x as f64),
            (Column::Text(b), Value::Text(x)) => b.append_value(x),
            (Column::Timestamp(b), Value::Timestamp(x)) => b.append_value(*x),
            (Column::Bytes(b), Value::Bytes(x)) => b.append_value(x),
            (c, _) => c.append_null(),
        }
    }

    fn append_null(&mut self) {
        match self {
            Column::Null => {}
            Column::Bool(b) => b.append_null(),
            Column::Int(b) => b.append_null(),
            Column::Float(b) => b.append_null(),
            Column::Text(b) => b.append_null(),
            Column::Timestamp(b) => b.append_null(),
            Column::Bytes(b) => b.append_null(),
        }
    }

    fn finish(self, n: usize) -> ArrayRef {
        match self {
            Column::Null => Arc::new(NullArray::new(n)),
            Column::Bool(mut b) => Arc::new(b.finish()),
            Column::Int(mut b) => Arc::new(b.finish()),
            Column::Float(mut b) => Arc::new(b.finish()),
            Column::Text(mut b) => Arc::new(b.finish()),
            Column::Timestamp(mut b) => Arc::new(b.finish()),
            Column::Bytes(mut b) => Arc::new(b.finish()),
        }
    }
}

/// Merges a value type into a column type: Null is neutral, int+float → float.
fn merge(current: &DataType, got: &DataType) -> Option<DataType> {
    match (current, got) {
        (a, b) if a == b => Some(a.clone()),
        (DataType::Null, b) => Some(b.clone()),
        (a, DataType::Null) => Some(a.clone()),
        (DataType::Int64, DataType::Float64) | (DataType::Float64, DataType::Int64) => {
            Some(DataType::Float64)
        }
        _ => None,
    }
}

/// Infers the columns of `rows` and builds one batch; `first_row` numbers rows in errors.
/// With `fold_case`, names that differ only in letter case collide.
pub(crate) fn build_batch(
    rows: &[Row],
    first_row: u64,
    fold_case: bool,
) -> Result<RecordBatch, RowError> {
    let at = |valid_rows: usize, error: Error| RowError { valid_rows, error };
    // Pass 1: columns in order of first appearance, with merged types.
    let mut names: Vec<Arc<str>> = Vec::new();
    let mut types: Vec<DataType> = Vec::new();
    let mut index: HashMap<Arc<str>, usize> = HashMap::new();
    let mut lower: HashMap<String, usize> = HashMap::new();
    for (r, row) in rows.iter().enumerate() {
        for (name, value) in row.fields() {
            let i = match index.get(name) {
                Some(&i) => i,
                None => {
                    if fold_case && let Some(&j) = lower.get(&name.to_lowercase()) {
                        return Err(at(
                            r,
                            Error::NameCollision {
                                first: names[j].to_string(),
                                second: name.to_string(),
                            },
                        ));
                    }
                    let i = names.len();
                    names.push(name.clone());
                    types.push(DataType::Null);
                    index.insert(name.clone(), i);
                    lower.insert(name.to_lowercase(), i);
                    i
                }
            };
            let got = value.data_type();
            types[i] = merge(&types[i], &got).ok_or_else(|| {
                at(
                    r,
                    Error::SchemaConflict {
                        column: name.to_string(),
                        locked: types[i].clone(),
                        got,
                        row: first_row + r as u64,
                        hint: "earlier rows fixed this column's type; send one type per column",
                    },
                )
            })?;
        }
    }
    // Pass 2: fill builders; a column a row does not mention is null in that row.
    let n = rows.len();
    let mut columns: Vec<Column> = types.iter().map(|t| Column::for_type(t, n)).collect();
    let mut filled_at: Vec<usize> = vec![usize::MAX; columns.len()];
    for (r, row) in rows.iter().enumerate() {
        for (pos, (name, value)) in row.fields().iter().enumerate() {
            // Rows from one source usually list fields in column order: try that slot first.
            let i = match names.get(pos) {
                Some(n) if n == name => pos,
                // Pass 1 indexed every name of every row.
                _ => index[name],
            };
            if filled_at[i] == r {
                return Err(at(
                    r,
                    Error::NameCollision {
                        first: name.to_string(),
                        second: name.to_string(),
                    },
                ));
            }
            filled_at[i] = r;
            columns[i].append(value);
        }
        for (i, col) in columns.iter_mut().enumerate() {
            if filled_at[i] != r {
                col.append_null();
            }
        }
    }
    let fields: Vec<Field> = names
        .iter()
        .zip(&types)
        .map(|(n, t)| {
            let t = if matches!(t, DataType::Timestamp(_, _)) {
                super::value::timestamp_type()
            } else {
                t.clone()
            };
            Field::new(n.as_ref(), t, true)
        })
        .collect();
    let arrays: Vec<ArrayRef> = columns.into_iter().map(|c| c.finish(n)).collect();
    let options = RecordBatchOptions::new().with_row_count(Some(n));
    RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), arrays, &options)
        .map_err(|e| at(0, Error::arrow("building a batch from rows", e)))
}
