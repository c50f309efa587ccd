//! The tape's run metadata as a table: `meta` holds one row per key changed by each record of
//! the tape's `META` journal (`tapedeck meta`, `record --meta`), so a query can ask which
//! operator, calibration or setpoint was in force when each sample was taken.
//!
//! Columns: `time` (timestamp, UTC, the record's commit time), `seq` (the record), `action`,
//! `author`, `key`, `old` and `new` (the values as JSON text; null when the key was not set
//! before, or was removed). The values in force over time come from `LEAD`:
//!
//! ```sql
//! WITH gain AS (
//!   SELECT time AS since, LEAD(time) OVER (ORDER BY seq) AS until, CAST(new AS DOUBLE) AS gain
//!   FROM meta WHERE key = 'gain')
//! SELECT gain.gain, count(*) FROM tape JOIN gain
//!   ON tape.time >= gain.since AND (gain.until IS NULL OR tape.time < gain.until)
//! GROUP BY gain.gain
//! ```

use std::path::Path;
use std::sync::Arc;

use arrow_array::{RecordBatch, StringArray, TimestampMicrosecondArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use serde_json::Value;
use tapedeck::journal::{Journal, key_changes};

use crate::error::{QueryError, Result};

use tapedeck::tape::META_FILE;

/// Registers the run metadata of the tape in `dir` as table `name`; `false` (nothing
/// registered) when the tape has none.
pub fn register_meta(ctx: &SessionContext, name: &str, dir: impl AsRef<Path>) -> Result<bool> {
    let path = dir.as_ref().join(META_FILE);
    if !path.is_file() {
        return Ok(false);
    }
    let table = |message: String| QueryError::Table {
        name: name.to_string(),
        uri: path.display().to_string(),
        message,
    };
    let journal: Journal<Value> =
        Journal::open_read_only(&path).map_err(|e| table(e.to_string()))?;
    let mut changes = Vec::new();
    for r in key_changes(journal.records()) {
        changes.extend(r.map_err(|e| table(e.to_string()))?.1);
    }
    let text = |v: &Option<Value>| v.as_ref().map(Value::to_string);
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("seq", DataType::UInt64, false),
        Field::new("action", DataType::Utf8, false),
        Field::new("author", DataType::Utf8, true),
        Field::new("key", DataType::Utf8, false),
        Field::new("old", DataType::Utf8, true),
        Field::new("new", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(changes.iter().map(|c| c.time))
                    .with_timezone("UTC"),
            ),
            Arc::new(UInt64Array::from_iter_values(changes.iter().map(|c| c.seq))),
            Arc::new(StringArray::from_iter_values(
                changes.iter().map(|c| c.action.as_str()),
            )),
            Arc::new(StringArray::from_iter(
                changes.iter().map(|c| c.author.as_deref()),
            )),
            Arc::new(StringArray::from_iter_values(
                changes.iter().map(|c| c.key.as_str()),
            )),
            Arc::new(StringArray::from_iter(changes.iter().map(|c| text(&c.old)))),
            Arc::new(StringArray::from_iter(changes.iter().map(|c| text(&c.new)))),
        ],
    )
    .map_err(|e| table(e.to_string()))?;
    let mem = MemTable::try_new(schema, vec![vec![batch]]).map_err(QueryError::from_datafusion)?;
    ctx.register_table(name, Arc::new(mem))
        .map_err(QueryError::from_datafusion)?;
    Ok(true)
}
