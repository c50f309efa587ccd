//! `--summary-json`: the run's summary as one JSON document, written to a file or stdout. Kept
//! apart from the text summary because every command adds its own fields to it.

use std::io::Write;
use std::path::PathBuf;

use tapedeck::Error;
use tapedeck::deliver::DeliveryStatus;
use tapedeck::pipe::Summary;

/// The summary of a piped run as JSON, with the column types a text source inferred, the tape's
/// part, and each delivery's status where there are any.
pub fn write_summary_json(
    path: &PathBuf,
    s: &Summary,
    tape: Option<serde_json::Value>,
    deliveries: Option<&[DeliveryStatus]>,
    columns: Option<&tapedeck::source::lines::ColumnTypes>,
) -> Result<(), Error> {
    let mut value = serde_json::to_value(s).map_err(bad_json)?;
    if let Some(obj) = value.as_object_mut() {
        if let Some(c) = columns {
            let list: Vec<serde_json::Value> = c
                .columns
                .iter()
                .map(|(name, t)| serde_json::json!({ "name": name, "type": t.keyword() }))
                .collect();
            obj.insert("columns".into(), serde_json::Value::Array(list));
        }
        if let Some(t) = tape {
            obj.insert("tape".into(), t);
        }
        if let Some(d) = deliveries {
            obj.insert(
                "deliveries".into(),
                serde_json::to_value(d).map_err(bad_json)?,
            );
        }
    }
    write_json(path, &value)
}

fn bad_json(e: serde_json::Error) -> Error {
    Error::InvalidOption {
        option: "--summary-json",
        message: e.to_string(),
    }
}

/// Writes `value` pretty-printed to `path` (`-` for stdout).
pub fn write_json(path: &PathBuf, value: &serde_json::Value) -> Result<(), Error> {
    let mut text = serde_json::to_string_pretty(value).map_err(bad_json)?;
    text.push('\n');
    if path.as_os_str() == "-" {
        // A closed stdout is an error to report, not a panic.
        let mut out = std::io::stdout().lock();
        return out
            .write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| Error::io("write the summary to", "stdout", e));
    }
    std::fs::write(path, text).map_err(|e| Error::io("write", path, e))
}
