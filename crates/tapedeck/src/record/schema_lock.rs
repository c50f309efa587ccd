//! The schema lock: the first batch a destination sees fixes its columns and their types.
//!
//! Files and tables cannot change shape halfway (a CSV header is written once, an Arrow IPC file
//! has one schema, a SQL table has its columns), so every destination that has a shape holds a
//! [`SchemaLock`] and passes each batch through [`SchemaLock::conform`]. The rules, from
//! `DESIGN.md`:
//!
//! - a locked column missing from a later batch is written as null;
//! - a column the lock does not know is dropped, with exactly one warning per column name — or,
//!   under the strict policy, is an error;
//! - a batch that shares no data column with the lock (only identity columns such as `device`
//!   and timestamps, or nothing) is [`Error::UnrelatedColumns`]: it would be a row of nulls, and
//!   is almost always another source's rows;
//! - integers and floats widen: an integer batch column into a float64 column is converted;
//! - any other type change is [`Error::SchemaConflict`], naming column, both types and the row;
//! - names that differ only in letter case (`Unit_ID` / `unit_id`) are [`Error::NameCollision`],
//!   because SQLite and PostgreSQL fold them into one column.
//!
//! A column that held only nulls in the first batch is locked with Arrow's `Null` type; a later
//! non-null value there is a conflict whose hint says so.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch, new_null_array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::error::{Error, Result};

/// What happens to a column the lock does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownColumns {
    /// Drop it, warning once per column name (the default).
    #[default]
    DropWithWarning,
    /// Fail with [`Error::UnknownColumn`].
    Error,
}

/// Holds the locked schema of one destination and conforms batches to it.
///
/// ```
/// use std::sync::Arc;
/// use arrow_array::{Float64Array, Int64Array, RecordBatch};
/// use arrow_schema::{DataType, Field, Schema};
/// use tapedeck::record::SchemaLock;
///
/// let mut lock = SchemaLock::new("example");
/// let first = RecordBatch::try_new(
///     Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, true)])),
///     vec![Arc::new(Float64Array::from(vec![1.5]))],
/// ).unwrap();
/// lock.conform(&first).unwrap();
/// // A later batch with integers and an extra column: ints widen, `y` is dropped.
/// let later = RecordBatch::try_new(
///     Arc::new(Schema::new(vec![
///         Field::new("x", DataType::Int64, true),
///         Field::new("y", DataType::Int64, true),
///     ])),
///     vec![Arc::new(Int64Array::from(vec![2])), Arc::new(Int64Array::from(vec![3]))],
/// ).unwrap();
/// let out = lock.conform(&later).unwrap();
/// assert_eq!(out.schema().fields().len(), 1);
/// assert_eq!(out.column(0).data_type(), &DataType::Float64);
/// assert_eq!(lock.dropped_columns(), ["y"]);
/// ```
#[derive(Debug)]
pub struct SchemaLock {
    owner: String,
    unknown: UnknownColumns,
    locked: Option<SchemaRef>,
    by_lower: HashMap<String, usize>,
    warned: HashSet<String>,
    dropped: Vec<String>,
    rows_seen: u64,
}

/// Arrow types the record model carries.
pub const SUPPORTED_TYPES: &str = "null, boolean, integers, float32/64, utf8, binary, timestamps";

fn supported(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Null
            | DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float32
            | DataType::Float64
            | DataType::Utf8
            | DataType::Binary
            | DataType::Timestamp(_, _)
    )
}

/// Checks a list of names for exact or case-insensitive duplicates.
pub(crate) fn check_collisions<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<()> {
    let mut seen: HashMap<String, &str> = HashMap::new();
    for name in names {
        if let Some(first) = seen.insert(name.to_lowercase(), name) {
            return Err(Error::NameCollision {
                first: first.to_string(),
                second: name.to_string(),
            });
        }
    }
    Ok(())
}

impl SchemaLock {
    /// A new, unlocked lock; `owner` names the destination in warnings.
    pub fn new(owner: impl Into<String>) -> SchemaLock {
        SchemaLock {
            owner: owner.into(),
            unknown: UnknownColumns::default(),
            locked: None,
            by_lower: HashMap::new(),
            warned: HashSet::new(),
            dropped: Vec::new(),
            rows_seen: 0,
        }
    }

    /// Sets the policy for unknown columns (builder style).
    pub fn with_unknown_columns(mut self, policy: UnknownColumns) -> SchemaLock {
        self.unknown = policy;
        self
    }

    /// True once a schema is locked.
    pub fn is_locked(&self) -> bool {
        self.locked.is_some()
    }

    /// The locked schema, if any.
    pub fn schema(&self) -> Option<&SchemaRef> {
        self.locked.as_ref()
    }

    /// Column names dropped so far, each once, in the order first seen.
    pub fn dropped_columns(&self) -> &[String] {
        &self.dropped
    }

    /// Rows conformed so far.
    pub fn rows_seen(&self) -> u64 {
        self.rows_seen
    }

    /// Locks `schema` explicitly (e.g. from an existing file's header or table). All columns
    /// become nullable, so a missing column can always be written as null.
    pub fn lock(&mut self, schema: &Schema) -> Result<()> {
        check_collisions(schema.fields().iter().map(|f| f.name().as_str()))?;
        for f in schema.fields() {
            if !supported(f.data_type()) {
                return Err(Error::UnsupportedType {
                    column: f.name().clone(),
                    data_type: f.data_type().clone(),
                    supported: SUPPORTED_TYPES,
                });
            }
        }
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        self.by_lower = fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name().to_lowercase(), i))
            .collect();
        self.locked = Some(Arc::new(Schema::new_with_metadata(
            fields,
            schema.metadata().clone(),
        )));
        Ok(())
    }

    /// Conforms `batch` to the locked schema, locking it first if nothing is locked yet.
    pub fn conform(&mut self, batch: &RecordBatch) -> Result<RecordBatch> {
        let locked = match &self.locked {
            Some(s) => s.clone(),
            None => {
                self.lock(batch.schema_ref())?;
                self.locked.clone().ok_or_else(|| Error::InvalidOption {
                    option: "schema",
                    message: "lock did not take".into(),
                })?
            }
        };
        let out = self.project(&locked, batch)?;
        self.rows_seen += batch.num_rows() as u64;
        Ok(out)
    }

    fn project(&mut self, locked: &SchemaRef, batch: &RecordBatch) -> Result<RecordBatch> {
        let incoming = batch.schema_ref();
        let same_shape = incoming.fields().len() == locked.fields().len()
            && incoming
                .fields()
                .iter()
                .zip(locked.fields())
                .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
        if same_shape {
            return RecordBatch::try_new(locked.clone(), batch.columns().to_vec())
                .map_err(|e| Error::arrow(format!("{}: conforming batch", self.owner), e));
        }
        check_collisions(incoming.fields().iter().map(|f| f.name().as_str()))?;
        let mut columns: Vec<Option<ArrayRef>> = vec![None; locked.fields().len()];
        for (field, array) in incoming.fields().iter().zip(batch.columns()) {
            let name = field.name();
            match self.by_lower.get(&name.to_lowercase()) {
                Some(&i) if locked.field(i).name() == name => {
                    columns[i] = Some(self.convert(locked.field(i), array)?);
                }
                Some(&i) => {
                    return Err(Error::NameCollision {
                        first: locked.field(i).name().clone(),
                        second: name.clone(),
                    });
                }
                None => self.unknown_column(name, locked)?,
            }
        }
        let has_data = |s: &Schema| s.fields().iter().any(|f| super::is_data_column(f));
        // Missing columns become nulls and unknown ones are dropped — but a batch that shares
        // no data column at all would become a row of nulls: refused, naming both lists.
        if has_data(incoming)
            && has_data(locked)
            && super::shared_data_columns(incoming, locked).is_empty()
        {
            return Err(Error::UnrelatedColumns {
                owner: self.owner.clone(),
                locked: super::column_list(locked),
                got: super::column_list(incoming),
            });
        }
        let n = batch.num_rows();
        let columns: Vec<ArrayRef> = columns
            .into_iter()
            .zip(locked.fields())
            .map(|(c, f)| c.unwrap_or_else(|| new_null_array(f.data_type(), n)))
            .collect();
        let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(n));
        RecordBatch::try_new_with_options(locked.clone(), columns, &options)
            .map_err(|e| Error::arrow(format!("{}: conforming batch", self.owner), e))
    }

    fn unknown_column(&mut self, name: &str, locked: &SchemaRef) -> Result<()> {
        match self.unknown {
            UnknownColumns::Error => Err(Error::UnknownColumn {
                column: name.to_string(),
                row: self.rows_seen,
                locked: locked
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
            UnknownColumns::DropWithWarning => {
                if self.warned.insert(name.to_string()) {
                    tracing::warn!(
                        destination = %self.owner,
                        column = name,
                        "column `{name}` is not in the locked schema; dropping it (this warning is shown once)"
                    );
                    self.dropped.push(name.to_string());
                }
                Ok(())
            }
        }
    }

    fn convert(&self, target: &Field, array: &ArrayRef) -> Result<ArrayRef> {
        let got = array.data_type();
        let want = target.data_type();
        if got == want {
            return Ok(array.clone());
        }
        if *got == DataType::Null {
            return Ok(new_null_array(want, array.len()));
        }
        let widened: Option<ArrayRef> = match want {
            DataType::Float64 => to_f64(array),
            DataType::Int64 => to_i64(array),
            _ => None,
        };
        widened.ok_or_else(|| {
            let first_value = (0..array.len()).find(|&i| array.is_valid(i)).unwrap_or(0);
            Error::SchemaConflict {
                column: target.name().clone(),
                locked: want.clone(),
                got: got.clone(),
                row: self.rows_seen + first_value as u64,
                hint: if *want == DataType::Null {
                    "the first batch had only nulls in this column, which locked it as null; send a typed value (or a typed schema) in the first batch"
                } else {
                    "the first batch fixed this column's type; convert the value before sending it, or write to a new destination"
                },
            }
        })
    }
}

pub(crate) fn to_f64(a: &ArrayRef) -> Option<ArrayRef> {
    macro_rules! widen {
        ($t:ty) => {
            Some(Arc::new(a.as_primitive::<$t>().unary::<_, Float64Type>(|v| v as f64)) as ArrayRef)
        };
    }
    match a.data_type() {
        DataType::Int8 => widen!(Int8Type),
        DataType::Int16 => widen!(Int16Type),
        DataType::Int32 => widen!(Int32Type),
        DataType::Int64 => widen!(Int64Type),
        DataType::UInt8 => widen!(UInt8Type),
        DataType::UInt16 => widen!(UInt16Type),
        DataType::UInt32 => widen!(UInt32Type),
        DataType::Float32 => widen!(Float32Type),
        _ => None,
    }
}

pub(crate) fn to_i64(a: &ArrayRef) -> Option<ArrayRef> {
    macro_rules! widen {
        ($t:ty) => {
            Some(Arc::new(a.as_primitive::<$t>().unary::<_, Int64Type>(|v| v as i64)) as ArrayRef)
        };
    }
    match a.data_type() {
        DataType::Int8 => widen!(Int8Type),
        DataType::Int16 => widen!(Int16Type),
        DataType::Int32 => widen!(Int32Type),
        DataType::UInt8 => widen!(UInt8Type),
        DataType::UInt16 => widen!(UInt16Type),
        DataType::UInt32 => widen!(UInt32Type),
        _ => None,
    }
}
