//! Arrow data across the Python boundary, through the Arrow PyCapsule protocol.
//!
//! Anything that implements `__arrow_c_stream__` (a pyarrow `Table` or `RecordBatchReader`, a
//! Polars `DataFrame`, a DuckDB relation, arro3, nanoarrow) or `__arrow_c_array__` (a
//! `RecordBatch`, a struct array) can be written, and every reader tapedeck hands out is a
//! stream the same libraries import. Buffers are shared, not copied: the C data interface
//! moves ownership of the producer's buffers with a release callback. No Python Arrow library
//! is needed by this module.

use std::ffi::CStr;

use arrow_array::ffi::{FFI_ArrowArray, FFI_ArrowSchema};
use arrow_array::ffi_stream::{ArrowArrayStreamReader, FFI_ArrowArrayStream};
use arrow_array::{Array, RecordBatch, RecordBatchIterator, RecordBatchReader, StructArray};
use arrow_schema::Schema;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyCapsuleMethods, PyTuple};

const STREAM: &CStr = c"arrow_array_stream";
const ARRAY: &CStr = c"arrow_array";
const SCHEMA: &CStr = c"arrow_schema";

/// A stream of batches read from a Python object; see the module docs. The object's own
/// reader runs on whichever thread reads it (with or without the GIL: a producer that needs
/// it takes it).
pub type Batches = Box<dyn RecordBatchReader + Send>;

/// Imports `data` (anything with `__arrow_c_stream__` or `__arrow_c_array__`) as batches.
pub fn import(data: &Bound<'_, PyAny>) -> PyResult<Batches> {
    if data.hasattr("__arrow_c_stream__")? {
        let capsule = data.call_method0("__arrow_c_stream__")?;
        let capsule = capsule
            .cast::<PyCapsule>()
            .map_err(|_| PyTypeError::new_err("__arrow_c_stream__ did not return a PyCapsule"))?;
        let ptr = capsule.pointer_checked(Some(STREAM))?;
        // SAFETY: the capsule is named `arrow_array_stream`, so by the protocol it points to
        // an `ArrowArrayStream`; `from_raw` moves it out and leaves a released stream behind,
        // which the capsule's destructor then ignores.
        let reader = unsafe {
            ArrowArrayStreamReader::from_raw(ptr.as_ptr().cast::<FFI_ArrowArrayStream>())
        }
        .map_err(|e| PyValueError::new_err(format!("cannot import the Arrow stream: {e}")))?;
        return Ok(Box::new(reader));
    }
    if data.hasattr("__arrow_c_array__")? {
        let pair = data.call_method0("__arrow_c_array__")?;
        let pair = pair.cast::<PyTuple>().map_err(|_| {
            PyTypeError::new_err("__arrow_c_array__ did not return a (schema, array) tuple")
        })?;
        if pair.len() != 2 {
            return Err(PyTypeError::new_err(
                "__arrow_c_array__ did not return a (schema, array) tuple",
            ));
        }
        let schema_cap = pair.get_item(0)?;
        let array_cap = pair.get_item(1)?;
        let schema_cap = schema_cap
            .cast::<PyCapsule>()
            .map_err(|_| PyTypeError::new_err("__arrow_c_array__: the schema is no PyCapsule"))?;
        let array_cap = array_cap
            .cast::<PyCapsule>()
            .map_err(|_| PyTypeError::new_err("__arrow_c_array__: the array is no PyCapsule"))?;
        let schema_ptr = schema_cap.pointer_checked(Some(SCHEMA))?;
        let array_ptr = array_cap.pointer_checked(Some(ARRAY))?;
        // SAFETY: named capsules of the protocol: an `ArrowSchema` (borrowed) and an
        // `ArrowArray` (moved out, leaving a released one for the capsule's destructor).
        let data = unsafe {
            let schema = &*schema_ptr.as_ptr().cast::<FFI_ArrowSchema>();
            let array = FFI_ArrowArray::from_raw(array_ptr.as_ptr().cast::<FFI_ArrowArray>());
            arrow_array::ffi::from_ffi(array, schema)
        }
        .map_err(|e| PyValueError::new_err(format!("cannot import the Arrow array: {e}")))?;
        if !matches!(data.data_type(), arrow_schema::DataType::Struct(_)) {
            return Err(PyTypeError::new_err(format!(
                "expected a record batch (a struct array of columns), got an array of {}; \
                 wrap it in a table, e.g. pyarrow.table({{\"x\": array}})",
                data.data_type()
            )));
        }
        let array = StructArray::from(data);
        if array.null_count() > 0 {
            return Err(PyValueError::new_err(
                "the Arrow array has null rows at its top level; a table's rows cannot be null",
            ));
        }
        let batch = RecordBatch::from(array);
        let schema = batch.schema();
        return Ok(Box::new(RecordBatchIterator::new(vec![Ok(batch)], schema)));
    }
    Err(PyTypeError::new_err(format!(
        "expected Arrow data (an object with __arrow_c_stream__ or __arrow_c_array__, such as a \
         pyarrow Table or RecordBatch, a Polars DataFrame or a DuckDB relation), got {}",
        data.get_type().name()?
    )))
}

/// `batches` as an `arrow_array_stream` capsule, for `__arrow_c_stream__`.
pub fn export_stream(py: Python<'_>, batches: Batches) -> PyResult<Bound<'_, PyCapsule>> {
    PyCapsule::new_with_value(py, FFI_ArrowArrayStream::new(batches), STREAM)
}

/// `__arrow_c_stream__` of a reader that is read once: takes what `slot` holds, turns it into
/// batches with `into` and exports them; a second call is a `ReaderConsumedError` saying
/// `again`.
pub fn export_once<'py, T: Send>(
    py: Python<'py>,
    slot: &std::sync::Mutex<Option<T>>,
    into: impl FnOnce(T) -> Batches,
    again: &str,
) -> PyResult<Bound<'py, PyCapsule>> {
    // Taken without the GIL: the slot's owner may hold its lock while it waits for the GIL
    // (a reader pulling from a Python upstream).
    let taken = py.detach(|| {
        slot.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    });
    match taken {
        Some(t) => export_stream(py, into(t)),
        None => Err(crate::errors::named(py, "ReaderConsumedError", again)),
    }
}

/// `schema` as an `arrow_schema` capsule, for `__arrow_c_schema__`.
pub fn export_schema<'py>(py: Python<'py>, schema: &Schema) -> PyResult<Bound<'py, PyCapsule>> {
    let ffi = FFI_ArrowSchema::try_from(schema)
        .map_err(|e| PyValueError::new_err(format!("cannot export the schema: {e}")))?;
    PyCapsule::new_with_value(py, ffi, SCHEMA)
}
