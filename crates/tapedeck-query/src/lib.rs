//! # tapedeck-query
//!
//! SQL over a tapedeck tape while it lands, with [Apache DataFusion](https://datafusion.apache.org).
//! A tape is a table ([`TapeTable`]): a [`Snapshot`] of the rows acknowledged when it was taken —
//! never a row that is not durable, never a torn frame — also while another process records
//! onto the tape. Scans decode only the columns a query reads, leave out whole segments and
//! frames whose event-time or `_seq` range the filters exclude (footer ranges and frame-header
//! min/max as zone maps), check every frame's CRC, and run segments' frames as parallel
//! partitions. `--table` URIs ([`register_uri`]) add other tapes and the files tapedeck's sinks
//! write.
//!
//! This crate sits above the `tapedeck` library (it reads the tape format through
//! `tapedeck::tape`) and below the CLI's `tapedeck query`; it is the only crate that builds
//! DataFusion.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let rt = tokio::runtime::Builder::new_current_thread().build()?;
//! # rt.block_on(async {
//! use datafusion::prelude::SessionContext;
//! use tapedeck::record::Row;
//! use tapedeck::recorder::Recorder;
//!
//! let dir = tempfile::tempdir()?;
//! let tape = dir.path().join("tape");
//! let mut recorder = Recorder::builder().tape(&tape).open()?;
//! recorder.write_rows((0..10).map(|i| Row::new().with("i", i as i64)))?;
//! recorder.finish()?;
//!
//! // Your own session: one call registers the tape.
//! let ctx = SessionContext::new();
//! tapedeck_query::register_tape(&ctx, "tape", &tape)?;
//! let df = ctx.sql("SELECT sum(i) AS total FROM tape").await?;
//! let batches = df.collect().await?;
//! let total = batches[0].column(0).as_any().downcast_ref::<arrow_array::Int64Array>().unwrap();
//! assert_eq!(total.value(0), 45);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod error;
mod meta;
pub mod pack;
pub mod prune;
mod scan;
mod snapshot;
#[cfg(feature = "sqlite")]
mod sqlite;
mod tables;

use std::path::Path;
use std::sync::Arc;

pub use datafusion;
pub use error::{QueryError, Result};
pub use meta::register_meta;
pub use scan::{ScanReport, ScanStats, TapeTable, TapeTableOptions};
pub use snapshot::{AsOf, SEQ_COLUMN, Snapshot};
pub use tables::register_uri;

use datafusion::prelude::SessionContext;

/// Registers the tape in `dir` as table `name` in `ctx`, with a snapshot taken now.
pub fn register_tape(
    ctx: &SessionContext,
    name: &str,
    dir: impl AsRef<Path>,
) -> Result<Arc<TapeTable>> {
    register_tape_with(ctx, name, dir, TapeTableOptions::default())
}

/// [`register_tape`] with options (`--as-of`, skipping damage, chain checks).
pub fn register_tape_with(
    ctx: &SessionContext,
    name: &str,
    dir: impl AsRef<Path>,
    options: TapeTableOptions,
) -> Result<Arc<TapeTable>> {
    let dir = dir.as_ref();
    let table = Arc::new(TapeTable::open(dir, options)?);
    if pack::is_log_pack(dir) {
        // A packed log: the table with its computed `template` column.
        pack::register_log_view(ctx, name, table.clone()).map_err(QueryError::from_datafusion)?;
    } else {
        ctx.register_table(name, table.clone())
            .map_err(QueryError::from_datafusion)?;
    }
    Ok(table)
}

/// A session set up for queries over tapes: one partition per core and `information_schema`
/// (`SHOW TABLES`, `SHOW COLUMNS FROM tape`).
pub fn session() -> SessionContext {
    let config = datafusion::prelude::SessionConfig::new().with_information_schema(true);
    SessionContext::new_with_config(config)
}
