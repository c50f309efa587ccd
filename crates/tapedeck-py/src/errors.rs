//! tapedeck's errors as Python exceptions.
//!
//! The classes live in `tapedeck/errors.py` (so they can inherit from Python's own: a bad URI
//! is a `ValueError`, a database that cannot be reached a `ConnectionError`, an I/O failure an
//! `OSError` with its `errno`); this module picks the class for each [`tapedeck::Error`] kind
//! and raises it with the error's message, which already names the path, URI, column, byte
//! offset or sequence range involved and never holds a credential.

use pyo3::prelude::*;
use pyo3::types::PyTuple;
use tapedeck::Error;

/// The name of the `tapedeck.errors` class for `e`. A sink's error (`Error::Sink`) is
/// classified by what went wrong inside it, so a database that went away is a
/// `ConnectError` whichever sink reported it.
pub fn class_name(e: &Error) -> &'static str {
    match e {
        Error::UnknownScheme { .. }
        | Error::UnknownParam { .. }
        | Error::BadParam { .. }
        | Error::MalformedUri { .. } => "UriError",
        Error::InvalidOption { .. } | Error::FeatureDisabled { .. } => "OptionError",
        Error::FileExists { .. } => "DestinationExistsError",
        Error::UnrelatedColumns { .. }
        | Error::SchemaConflict { .. }
        | Error::UnknownColumn { .. }
        | Error::NameCollision { .. }
        | Error::UnsupportedType { .. }
        | Error::ColumnType { .. }
        | Error::ShapeMixed { .. }
        | Error::BlocksRefused { .. } => "SchemaError",
        Error::MalformedInput { .. }
        | Error::InvalidBlock { .. }
        | Error::ValueOutOfRange { .. } => "InputError",
        Error::Connect { .. } => "ConnectError",
        Error::Io { .. } => "StorageError",
        Error::TapeLocked { .. } | Error::JournalLocked { .. } => "LockedError",
        Error::JournalDamaged { .. } => "DamagedError",
        Error::Tape { .. } => "TapeError",
        Error::TapeStopped {
            os_error: Some(_), ..
        } => "StorageError",
        Error::TapeStopped { .. } => "TapeError",
        Error::Sink { source, .. } => match class_name(source) {
            "TapedeckError" => "SinkError",
            inner => inner,
        },
        Error::Delivery { .. }
        | Error::SinkClosed { .. }
        | Error::Database { .. }
        | Error::MissingTable { .. }
        | Error::Parquet { .. } => "SinkError",
        Error::Arrow { .. } => "ArrowDataError",
        _ => "TapedeckError",
    }
}

/// Raises `e` as the `tapedeck.errors` class for its kind.
pub fn to_py(py: Python<'_>, e: Error) -> PyErr {
    raise(py, class_name(&e), e.os_error(), e.to_string())
}

/// An exception of class `name` from `tapedeck.errors` with `message` (and `errno`, for an
/// `OSError` subclass: then `e.errno` and `e.strerror` are set as Python's own are).
pub fn raise(py: Python<'_>, name: &str, errno: Option<i32>, message: String) -> PyErr {
    let made = (|| -> PyResult<PyErr> {
        let class = py.import("tapedeck.errors")?.getattr(name)?;
        let args = match errno {
            Some(n) => PyTuple::new(
                py,
                [
                    n.into_pyobject(py)?.into_any(),
                    message.clone().into_pyobject(py)?.into_any(),
                ],
            )?,
            None => PyTuple::new(py, [message.clone().into_pyobject(py)?.into_any()])?,
        };
        Ok(PyErr::from_value(class.call1(args)?))
    })();
    // The package is always there beside the module; if it is not, the message still is.
    made.unwrap_or_else(|_| pyo3::exceptions::PyRuntimeError::new_err(message))
}

/// A `TapedeckError` subclass by name, for errors the bindings find themselves.
pub fn named(py: Python<'_>, name: &str, message: impl Into<String>) -> PyErr {
    raise(py, name, None, message.into())
}
