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

use pyo3::exceptions::{PyOverflowError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyString};
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
