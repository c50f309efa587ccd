//! `tapedeck._tapedeck`: the native half of the `tapedeck` Python package.
//!
//! The package (`python/tapedeck`) is a thin, typed layer over this module: every byte that is
//! recorded, delivered or read goes through the Rust library, so a Python program gets the
//! same tape, the same exactly-once deliveries and the same errors as `tapedeck record`. What
//! lives here is only what has to touch Python objects:
//!
//! - [`recorder`] — `Recorder`: rows (dicts), Arrow data and DAQ blocks into
//!   [`tapedeck::recorder::Recorder`], batched by `batch_size`, flushed by a real timer;
//! - [`tape`] — reading a tape as an Arrow C stream, `inspect` and `verify`;
//! - [`cache`] — `StreamCache`: one upstream stream replayed to many readers, its disk tier a
//!   tape;
//! - [`journal`] — `Journal`: the audited state journal (kanta's job);
//! - [`arrow_ffi`] — Arrow data across the boundary (the PyCapsule protocol), zero-copy;
//! - [`rows`] — Python values to tapedeck values;
//! - [`errors`] — tapedeck's errors as the Python exceptions of `tapedeck.errors`.
//!
//! The GIL is released (`Python::detach`) around everything that waits: file and network
//! I/O, fsyncs, and readers waiting for rows.

use pyo3::prelude::*;

mod arrow_ffi;
mod cache;
mod errors;
mod journal;
mod recorder;
mod rows;
mod tape;

/// Every sink scheme with its parameters, as JSON (`tapedeck sinks --json`).
#[pyfunction]
fn sinks_json() -> PyResult<String> {
    serde_json::to_string(&tapedeck::sink::descriptors())
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))
}

#[pymodule]
fn _tapedeck(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<recorder::Recorder>()?;
    m.add_class::<tape::Reader>()?;
    m.add_class::<cache::StreamCache>()?;
    m.add_class::<cache::CacheReader>()?;
    m.add_class::<cache::Batch>()?;
    m.add_class::<journal::Journal>()?;
    m.add_class::<journal::Follower>()?;
    m.add_function(wrap_pyfunction!(tape::inspect_json, m)?)?;
    m.add_function(wrap_pyfunction!(tape::verify_json, m)?)?;
    m.add_function(wrap_pyfunction!(sinks_json, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
