//! The page's SQL box: one read-only query over the tape (`tape`, and its run metadata `meta`
//! when it has some), answered as rows of JSON.
//!
//! Read-only by construction: DataFusion is told to refuse DDL (`CREATE EXTERNAL TABLE` would
//! name a file), DML (`INSERT`, `COPY … TO` would write one) and statements (`SET`), and no
//! table but the tape's is registered — so no request reaches the file system except through
//! the tape named on the command line. Answers are capped at [`MAX_ROWS`] rows and
//! [`TIMEOUT`]; a query's working memory at [`MEMORY`] (beyond it, the query fails — the page
//! server shares its process with `record --serve`, whose memory it must not take).

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use tapedeck_query::datafusion::arrow::json::ArrayWriter;
use tapedeck_query::datafusion::execution::context::SQLOptions;
use tapedeck_query::datafusion::execution::runtime_env::RuntimeEnvBuilder;
use tapedeck_query::datafusion::prelude::{SessionConfig, SessionContext};

/// Rows an answer holds at most (the rest is counted, not sent).
pub const MAX_ROWS: usize = 1000;
/// How long a query may run.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// Working memory a query may hold (sorts, aggregations, joins).
pub const MEMORY: usize = 512 << 20;

/// An answer.
#[derive(Debug, Serialize)]
pub struct Answer {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// Column types, as text.
    pub types: Vec<String>,
    /// The rows (at most [`MAX_ROWS`]), as JSON objects.
    pub rows: Vec<serde_json::Value>,
    /// Rows left out beyond [`MAX_ROWS`].
    pub truncated: bool,
    /// How long it took, ms.
    pub millis: u64,
}

/// Runs `sql` over the tape in `dir`; `Err` is the message for the page (the SQL's own
/// mistake, or the tape's).
pub async fn run(dir: &Path, sql: &str) -> Result<Answer, String> {
    let started = std::time::Instant::now();
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(MEMORY, 1.0)
        .build_arc()
        .map_err(|e| e.to_string())?;
    let config = SessionConfig::new().with_information_schema(true);
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    tapedeck_query::register_tape(&ctx, "tape", dir).map_err(|e| e.to_string())?;
    tapedeck_query::register_meta(&ctx, "meta", dir).map_err(|e| e.to_string())?;
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let work = async {
        let df = ctx
            .sql_with_options(sql, options)
            .await
            .map_err(|e| tapedeck_query::QueryError::from_datafusion(e).to_string())?;
        let df = df.limit(0, Some(MAX_ROWS + 1)).map_err(|e| e.to_string())?;
        let schema = df.schema().as_arrow().clone();
        let batches = df
            .collect()
            .await
            .map_err(|e| tapedeck_query::QueryError::from_datafusion(e).to_string())?;
        Ok::<_, String>((schema, batches))
    };
    let (schema, batches) = tokio::time::timeout(TIMEOUT, work).await.map_err(|_| {
        format!(
            "the query ran longer than {} s and was stopped",
            TIMEOUT.as_secs()
        )
    })??;
    let mut out = Vec::new();
    {
        let mut w = ArrayWriter::new(&mut out);
        let refs: Vec<_> = batches.iter().collect();
        w.write_batches(&refs).map_err(|e| e.to_string())?;
        w.finish().map_err(|e| e.to_string())?;
    }
    let mut rows: Vec<serde_json::Value> = if out.is_empty() {
        Vec::new()
    } else {
        serde_json::from_slice(&out).map_err(|e| e.to_string())?
    };
    let truncated = rows.len() > MAX_ROWS;
    rows.truncate(MAX_ROWS);
    Ok(Answer {
        columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
        types: schema
            .fields()
            .iter()
            .map(|f| f.data_type().to_string())
            .collect(),
        rows,
        truncated,
        millis: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}
