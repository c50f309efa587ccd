//! Python values to tapedeck values: the rows `Recorder.write_rows` takes are dicts (or any
//! mapping) of column name to value.
//!
//! | Python | stored as |
//! |---|---|
//! | `None` | null |
//! | `bool` | boolean |
//! | `int` (fits in 64 bits) | int64 |
//! | `float` | float64 |
//! | `str` | UTF-8 text |
//! | `bytes`, `bytearray` | binary |
//! | `datetime.datetime` | timestamp (µs, UTC); a naive one is taken as UTC |
//! | `datetime.date` | text, ISO 8601 |
//! | `enum.Enum` member | its value, converted by this table |
//!
//! Anything else is refused with the column and row named, never stored as a `repr` the user
//! did not ask for. Column names are kept once per recorder (`KeyCache`), so a million rows
//! with the same ten keys allocate ten names.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
};
use arrow_array::{ArrayRef, NullArray, RecordBatch, RecordBatchOptions};
use arrow_schema::{DataType, Field, Schema};
use pyo3::exceptions::{PyOverflowError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString};
use tapedeck::record::{Row, Value};

/// Column names seen so far, shared by every row of a recorder.
#[derive(Default)]
pub struct KeyCache(HashMap<String, Arc<str>>);

impl KeyCache {
    fn get(&mut self, key: &str) -> Arc<str> {
        if let Some(k) = self.0.get(key) {
            return k.clone();
        }
        let k: Arc<str> = Arc::from(key);
        self.0.insert(key.to_string(), k.clone());
        k
    }
}

/// The Python classes the conversion recognises beyond the built-in scalars.
struct Classes<'py> {
    datetime: Bound<'py, PyAny>,
    date: Bound<'py, PyAny>,
    enumeration: Bound<'py, PyAny>,
    utc: Bound<'py, PyAny>,
    epoch: Bound<'py, PyAny>,
}

impl<'py> Classes<'py> {
    fn new(py: Python<'py>) -> PyResult<Classes<'py>> {
        let dt = py.import("datetime")?;
        let datetime = dt.getattr("datetime")?;
        let utc = dt.getattr("timezone")?.getattr("utc")?;
        let epoch = datetime.call1((1970, 1, 1, 0, 0, 0, 0, &utc))?;
        Ok(Classes {
            date: dt.getattr("date")?,
            enumeration: py.import("enum")?.getattr("Enum")?,
            datetime,
            utc,
            epoch,
        })
    }
}

/// Converts a list (any iterable) of mappings into rows.
pub fn rows(rows: &Bound<'_, PyAny>, keys: &mut KeyCache, first_row: u64) -> PyResult<Vec<Row>> {
    let py = rows.py();
    let classes = Classes::new(py)?;
    let mut out = Vec::with_capacity(rows.len().unwrap_or(0));
    for (i, item) in rows.try_iter()?.enumerate() {
        let item = item?;
        let row_no = first_row + i as u64;
        let owned;
        let dict = match item.cast::<PyDict>() {
            Ok(d) => d,
            Err(_) => {
                // A mapping that is no dict (a Sample's `as_dict()` result always is one; a
                // user's own mapping may not be).
                owned = PyDict::new(py);
                owned.update(item.cast().map_err(|_| {
                    PyTypeError::new_err(format!(
                        "row {row_no}: expected a dict of column name to value, got {}",
                        item.get_type()
                            .name()
                            .map(|n| n.to_string())
                            .unwrap_or_default()
                    ))
                })?)?;
                &owned
            }
        };
        let mut row = Row::with_capacity(dict.len());
        for (k, v) in dict.iter() {
            let key = k.cast::<PyString>().map_err(|_| {
                PyTypeError::new_err(format!("row {row_no}: column names must be str, got {k}"))
            })?;
            let name = key.to_str()?;
            let value = value(&v, &classes).map_err(|e| {
                PyErr::from_type(
                    e.get_type(py),
                    format!("row {row_no}, column `{name}`: {}", e.value(py)),
                )
            })?;
            row.push(keys.get(name), value);
        }
        out.push(row);
    }
    Ok(out)
}

fn value(v: &Bound<'_, PyAny>, c: &Classes<'_>) -> PyResult<Value> {
    if v.is_none() {
        return Ok(Value::Null);
    }
    // bool before int: a Python bool is an int.
    if v.is_instance_of::<PyBool>() {
        return Ok(Value::Bool(v.is_truthy()?));
    }
    if v.is_instance_of::<PyInt>() {
        return v.extract::<i64>().map(Value::Int).map_err(|_| {
            PyOverflowError::new_err(format!("{v} does not fit in a 64-bit integer"))
        });
    }
    if v.is_instance_of::<PyFloat>() {
        return Ok(Value::Float(v.extract::<f64>()?));
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(Value::Text(s.to_str()?.to_string()));
    }
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(Value::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(b) = v.cast::<PyByteArray>() {
        return Ok(Value::Bytes(b.to_vec()));
    }
    if v.is_instance(&c.datetime)? {
        return micros(v, c).map(Value::Timestamp);
    }
    if v.is_instance(&c.date)? {
        return Ok(Value::Text(v.call_method0("isoformat")?.extract()?));
    }
    if v.is_instance(&c.enumeration)? {
        return value(&v.getattr("value")?, c);
    }
    Err(PyTypeError::new_err(format!(
        "values of type {} are not stored; use None, bool, int, float, str, bytes or datetime",
        v.get_type().name()?
    )))
}

/// Microseconds since the Unix epoch of a `datetime` (naive: taken as UTC).
fn micros(v: &Bound<'_, PyAny>, c: &Classes<'_>) -> PyResult<i64> {
    let aware = if v.call_method0("utcoffset")?.is_none() {
        let kwargs = PyDict::new(v.py());
        kwargs.set_item("tzinfo", &c.utc)?;
        v.call_method("replace", (), Some(&kwargs))?
    } else {
        v.clone()
    };
    let delta = aware.call_method1("__sub__", (&c.epoch,))?;
    let days: i64 = delta.getattr("days")?.extract()?;
    let seconds: i64 = delta.getattr("seconds")?.extract()?;
    let us: i64 = delta.getattr("microseconds")?.extract()?;
    days.checked_mul(86_400_000_000)
        .and_then(|d| d.checked_add(seconds * 1_000_000 + us))
        .ok_or_else(|| PyOverflowError::new_err(format!("{v} is out of the timestamp range")))
}

/// One column of [`fast_batch`], in the making.
enum FastColumn {
    Null,
    Bool(BooleanBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Text(StringBuilder),
    Bytes(BinaryBuilder),
}

impl FastColumn {
    fn len(&self, nulls: usize) -> usize {
        match self {
            FastColumn::Null => nulls,
            FastColumn::Bool(b) => b.len(),
            FastColumn::Int(b) => b.len(),
            FastColumn::Float(b) => b.len(),
            FastColumn::Text(b) => b.len(),
            FastColumn::Bytes(b) => b.len(),
        }
    }

    fn append_nulls(&mut self, n: usize) {
        match self {
            FastColumn::Null => {}
            FastColumn::Bool(b) => b.append_nulls(n),
            FastColumn::Int(b) => b.append_nulls(n),
            FastColumn::Float(b) => b.append_nulls(n),
            FastColumn::Text(b) => b.append_nulls(n),
            FastColumn::Bytes(b) => b.append_nulls(n),
        }
    }

    fn finish(self, n: usize) -> (DataType, ArrayRef) {
        match self {
            FastColumn::Null => (DataType::Null, Arc::new(NullArray::new(n))),
            FastColumn::Bool(mut b) => (DataType::Boolean, Arc::new(b.finish())),
            FastColumn::Int(mut b) => (DataType::Int64, Arc::new(b.finish())),
            FastColumn::Float(mut b) => (DataType::Float64, Arc::new(b.finish())),
            FastColumn::Text(mut b) => (DataType::Utf8, Arc::new(b.finish())),
            FastColumn::Bytes(mut b) => (DataType::Binary, Arc::new(b.finish())),
        }
    }
}

/// The addresses of the built-in types [`fast_batch`] takes (exactly these, no subclass).
struct ExactTypes {
    text: usize,
    float: usize,
    int: usize,
    boolean: usize,
    bytes: usize,
    none: usize,
}

/// A value of one of the kinds [`fast_batch`] builds directly.
enum Scalar<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(&'a str),
    Bytes(&'a [u8]),
}

/// The batch `RowBuilder::per_batch` would make of `rows` — columns in order of first
/// appearance, int and float widened to float64, a column of only `None` null-typed, a key a
/// row lacks null in it — built straight from the dicts, without a `Row` per dict. `None` when
/// the rows hold anything else (a mapping that is no dict, a datetime, a type conflict, an int
/// beyond 64 bits): the caller then takes the general path, which converts or reports it.
pub fn fast_batch(rows: &Bound<'_, PyAny>) -> PyResult<Option<RecordBatch>> {
    let Ok(list) = rows.cast::<PyList>() else {
        return Ok(None);
    };
    let n = list.len();
    if n == 0 {
        return Ok(None);
    }
    let py = rows.py();
    let types = ExactTypes {
        text: py.get_type::<PyString>().as_type_ptr() as usize,
        float: py.get_type::<PyFloat>().as_type_ptr() as usize,
        int: py.get_type::<PyInt>().as_type_ptr() as usize,
        boolean: py.get_type::<PyBool>().as_type_ptr() as usize,
        bytes: py.get_type::<PyBytes>().as_type_ptr() as usize,
        none: py.None().bind(py).get_type_ptr() as usize,
    };
    let mut names: Vec<String> = Vec::new();
    let mut columns: Vec<FastColumn> = Vec::new();
    // Null-typed columns count their rows here (they have no builder).
    let mut null_rows: Vec<usize> = Vec::new();
    // Keys seen, by the address of the key object: the dicts of one call usually share their
    // key strings (literals, or keys copied from one dict to the next).
    let mut by_address: Vec<(usize, usize)> = Vec::new();
    for (r, item) in list.iter().enumerate() {
        let Ok(dict) = item.cast::<PyDict>() else {
            return Ok(None);
        };
        for (pos, (k, v)) in dict.iter().enumerate() {
            let address = k.as_ptr() as usize;
            // Rows of one source list their keys in one order: the key at this position is
            // most likely the one seen at this position before.
            let guess = by_address.get(pos).filter(|(a, _)| *a == address);
            let i = match guess.or_else(|| by_address.iter().find(|(a, _)| *a == address)) {
                Some(&(_, i)) => i,
                None => {
                    let Ok(key) = k.cast::<PyString>() else {
                        return Ok(None);
                    };
                    let name = key.to_str()?;
                    let i = match names.iter().position(|x| x == name) {
                        Some(i) => i,
                        None => {
                            names.push(name.to_string());
                            columns.push(FastColumn::Null);
                            null_rows.push(0);
                            names.len() - 1
                        }
                    };
                    by_address.push((address, i));
                    i
                }
            };
            // Exact types only (a subclass, an enum member, takes the general path), told by
            // the type object's address: one comparison per kind.
            let t = v.get_type_ptr() as usize;
            let scalar = if t == types.text {
                match v.cast::<PyString>().map(|s| s.to_str()) {
                    Ok(Ok(s)) => Scalar::Text(s),
                    _ => return Ok(None),
                }
            } else if t == types.float {
                Scalar::Float(v.extract::<f64>()?)
            } else if t == types.none {
                Scalar::Null
            } else if t == types.int {
                match v.extract::<i64>() {
                    Ok(x) => Scalar::Int(x),
                    Err(_) => return Ok(None),
                }
            } else if t == types.boolean {
                Scalar::Bool(v.is_truthy()?)
            } else if let Ok(b) = v.cast::<PyBytes>()
                && t == types.bytes
            {
                Scalar::Bytes(b.as_bytes())
            } else {
                return Ok(None);
            };
            let col = &mut columns[i];
            let have = col.len(null_rows[i]);
            if have > r {
                // Two keys of one dict named alike (str subclasses with their own equality):
                // the general path reports the collision.
                return Ok(None);
            }
            if !matches!(scalar, Scalar::Null) {
                // The column's kind, from its first value; an int column meeting a float widens.
                let widen = matches!((&*col, &scalar), (FastColumn::Int(_), Scalar::Float(_)));
                if widen {
                    let FastColumn::Int(mut b) = std::mem::replace(col, FastColumn::Null) else {
                        return Ok(None);
                    };
                    let ints = b.finish();
                    let mut f = Float64Builder::with_capacity(n);
                    for x in ints.iter() {
                        f.append_option(x.map(|x| x as f64));
                    }
                    *col = FastColumn::Float(f);
                }
                if matches!(col, FastColumn::Null) {
                    *col = match scalar {
                        Scalar::Bool(_) => FastColumn::Bool(BooleanBuilder::with_capacity(n)),
                        Scalar::Int(_) => FastColumn::Int(Int64Builder::with_capacity(n)),
                        Scalar::Float(_) => FastColumn::Float(Float64Builder::with_capacity(n)),
                        Scalar::Text(_) => {
                            FastColumn::Text(StringBuilder::with_capacity(n, n * 16))
                        }
                        Scalar::Bytes(_) => {
                            FastColumn::Bytes(BinaryBuilder::with_capacity(n, n * 16))
                        }
                        Scalar::Null => FastColumn::Null,
                    };
                    col.append_nulls(have);
                }
            }
            match (col, scalar) {
                (FastColumn::Null, Scalar::Null) => null_rows[i] = r + 1,
                (c, Scalar::Null) => c.append_nulls(r + 1 - have),
                (c, s) => {
                    c.append_nulls(r - have);
                    match (c, s) {
                        (FastColumn::Bool(b), Scalar::Bool(x)) => b.append_value(x),
                        (FastColumn::Int(b), Scalar::Int(x)) => b.append_value(x),
                        (FastColumn::Float(b), Scalar::Float(x)) => b.append_value(x),
                        (FastColumn::Float(b), Scalar::Int(x)) => b.append_value(x as f64),
                        (FastColumn::Text(b), Scalar::Text(x)) => b.append_value(x),
                        (FastColumn::Bytes(b), Scalar::Bytes(x)) => b.append_value(x),
                        // Any other pair is a type conflict: the general path reports it.
                        _ => return Ok(None),
                    }
                }
            }
        }
    }
    let mut fields = Vec::with_capacity(names.len());
    let mut arrays = Vec::with_capacity(names.len());
    for ((name, mut col), nulls) in names.into_iter().zip(columns).zip(null_rows) {
        let have = col.len(nulls);
        col.append_nulls(n - have);
        let (t, a) = col.finish(n);
        fields.push(Field::new(name, t, true));
        arrays.push(a);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(n));
    Ok(RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), arrays, &options).ok())
}
