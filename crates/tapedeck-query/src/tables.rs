//! `--table NAME=URI`: what tapedeck records and writes, as more tables beside the tape — other
//! tapes, and the files its sinks write — so a query can join the live tape with last week's
//! Parquet.
//!
//! | URI | table |
//! |---|---|
//! | `tape:DIR` (or a tape directory) | a tape snapshot ([`crate::TapeTable`]) |
//! | `parquet:PATH` (or `*.parquet`) | a Parquet file, or a directory of Parquet parts |
//! | `csv:PATH` (or `*.csv`) | a CSV file with a header row |
//! | `jsonl:PATH` / `ndjson:` (or `*.jsonl`, `*.ndjson`) | one JSON object per line |
//! | `ipc:PATH` / `arrow:` (or `*.arrow`, `*.ipc`, `*.feather`) | an Arrow IPC file |
//! | `sqlite:PATH?table=T` | a table of a SQLite database (default `table=records`) |

use std::path::Path;
use std::sync::Arc;

use datafusion::datasource::file_format::options::ArrowReadOptions;
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions, SessionContext};
use tapedeck::uri::Uri;

use crate::error::{QueryError, Result};
use crate::scan::{TapeTable, TapeTableOptions};

/// Registers `uri` in `ctx` as `name`; returns the tape table when it is one.
pub async fn register_uri(
    ctx: &SessionContext,
    name: &str,
    uri: &str,
    tape_options: &TapeTableOptions,
) -> Result<Option<Arc<TapeTable>>> {
    let shown = tapedeck::uri::redact(uri);
    let fail = |message: String| QueryError::Table {
        name: name.to_string(),
        uri: shown.clone(),
        message,
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(fail(
            "a table name is letters, digits and `_` (it is used unquoted in the SQL)".into(),
        ));
    }
    let (scheme, path, params) = match Uri::parse(uri) {
        Ok(u) if known(&u.scheme) => (u.scheme.clone(), u.path.clone(), Some(u.params)),
        // A bare path: the kind from what is there.
        _ => (String::new(), uri.to_string(), None),
    };
    let p = Path::new(&path);
    if !p.exists() {
        return Err(fail(format!("{path}: no such file or directory")));
    }
    let scheme = if scheme.is_empty() {
        guess(p).ok_or_else(|| {
            fail(format!(
                "cannot tell what {path} holds; name it with a scheme: tape:, parquet:, csv:, \
                 jsonl:, ipc: or sqlite:"
            ))
        })?
    } else {
        scheme
    };
    let ext = p
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| format!(".{e}"))
        .unwrap_or_default();
    let file_ext = |default: &'static str| -> String {
        if p.is_dir() {
            default.to_string()
        } else {
            ext.clone()
        }
    };
    let df =
        |e: datafusion::error::DataFusionError| fail(QueryError::from_datafusion(e).to_string());
    match scheme.as_str() {
        #[cfg(not(feature = "sqlite"))]
        "sqlite" => {
            let _ = params;
            return Err(fail(
                "this build has no SQLite tables (the query crate's `sqlite` feature)".into(),
            ));
        }
        "tape" => {
            let table = Arc::new(TapeTable::open(p, tape_options.clone())?);
            ctx.register_table(name, table.clone()).map_err(df)?;
            return Ok(Some(table));
        }
        "parquet" => {
            let e = file_ext(".parquet");
            ctx.register_parquet(
                name,
                &path,
                ParquetReadOptions::default().file_extension(&e),
            )
            .await
            .map_err(df)?;
        }
        "csv" => {
            let e = file_ext(".csv");
            ctx.register_csv(name, &path, CsvReadOptions::new().file_extension(&e))
                .await
                .map_err(df)?;
        }
        "jsonl" | "ndjson" => {
            let e = file_ext(".jsonl");
            ctx.register_json(name, &path, JsonReadOptions::default().file_extension(&e))
                .await
                .map_err(df)?;
        }
        "ipc" | "arrow" => {
            let e = file_ext(".arrow");
            let options = ArrowReadOptions {
                file_extension: &e,
                ..Default::default()
            };
            ctx.register_arrow(name, &path, options).await.map_err(df)?;
        }
        #[cfg(feature = "sqlite")]
        "sqlite" => {
            let table = params
                .and_then(|mut p| p.raw("table").map(str::to_string))
                .unwrap_or_else(|| "records".into());
            let mem = crate::sqlite::table(p, &table).map_err(fail)?;
            ctx.register_table(name, Arc::new(mem)).map_err(df)?;
        }
        other => {
            return Err(fail(format!(
                "{other}: tables are tapes, parquet:, csv:, jsonl:, ipc: or sqlite: files"
            )));
        }
    }
    Ok(None)
}

fn known(scheme: &str) -> bool {
    matches!(
        scheme,
        "tape" | "parquet" | "csv" | "jsonl" | "ndjson" | "ipc" | "arrow" | "sqlite"
    )
}

/// What a bare path holds: a tape directory, a directory of Parquet parts, or a file by its
/// extension.
fn guess(p: &Path) -> Option<String> {
    if p.is_dir() {
        let is_tape = ["MANIFEST", "TAPEID"].iter().any(|f| p.join(f).exists());
        return Some(if is_tape { "tape" } else { "parquet" }.into());
    }
    let ext = p.extension()?.to_str()?.to_ascii_lowercase();
    Some(
        match ext.as_str() {
            "parquet" => "parquet",
            "csv" => "csv",
            "jsonl" | "ndjson" | "json" => "jsonl",
            "arrow" | "ipc" | "feather" => "ipc",
            "sqlite" | "db" | "sqlite3" => "sqlite",
            _ => return None,
        }
        .into(),
    )
}
