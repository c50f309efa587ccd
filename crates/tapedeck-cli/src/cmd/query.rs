//! `tapedeck query DIR "SQL"`: SQL over a tape while it lands (the `tapedeck-query` crate, built
//! on DataFusion), printed as a table, CSV, JSON lines or JSON, or written to any sink.

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

use crate::report::EXIT_USAGE;

pub const HELP: &str = "\
The tape is the table `tape`: the rows acknowledged when the query starts (also while `record`
writes to it), its columns plus `_seq`, each row's sequence number. Filters on the event-time
column (the first timestamp column) and on `_seq` skip whole segments and frames.

Examples:
  tapedeck query runs/tape \"SELECT device, count(*), avg(value) FROM tape GROUP BY device\"
  tapedeck query runs/tape \"SELECT * FROM tape WHERE time > now() - INTERVAL '10 seconds'\" --follow
  tapedeck query runs/tape \"SELECT date_bin(INTERVAL '1 minute', time) AS t, avg(value)
      FROM tape GROUP BY t ORDER BY t\" --format csv
  tapedeck query runs/tape \"SELECT * FROM tape JOIN last AS l USING (device)\" \\
      --table last=parquet:archive/week.parquet
  tapedeck query runs/tape \"SELECT * FROM tape\" --as-of seq:1000 --sink parquet:first.parquet

Tables (--table NAME=URI): tape:DIR, parquet:FILE or parquet:DIR (of parts), csv:FILE,
jsonl:FILE, ipc:FILE, sqlite:FILE?table=T; a bare path is recognised by what it is.

Exit codes: 0 answered; 1 the query failed while running (a damaged frame, a sink error);
2 bad usage: SQL that does not parse or plan, an unknown table or column, a --table that does
not exist, an --as-of beyond the end.";

// Output formats (no doc comments: clap would show them).
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON object per row, one per line.
    Jsonl,
    /// One JSON array of row objects.
    Json,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The tape directory, registered as the table `tape`.
    pub dir: PathBuf,
    /// The SQL, e.g. "SELECT count(*) FROM tape".
    pub sql: String,
    /// Register another table, e.g. `--table last=parquet:week.parquet`; repeatable.
    #[arg(long = "table", value_name = "NAME=URI")]
    pub tables: Vec<String>,
    /// How to print the result.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write the result to a sink instead of printing it, e.g. `parquet:out.parquet`.
    #[arg(long, value_name = "URI", conflicts_with = "format")]
    pub sink: Option<String>,
    /// Print the query plan (logical and physical) instead of running it.
    #[arg(long)]
    pub explain: bool,
    /// After the result, print on stderr what was read: segments and frames pruned, bytes,
    /// rows decoded.
    #[arg(long)]
    pub stats: bool,
    /// Re-run the query on each new snapshot and print each result (Ctrl-C ends).
    #[arg(long)]
    pub follow: bool,
    /// With --follow: how often, e.g. `500ms`, `5s`.
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = super::parse_duration)]
    pub every: Duration,
    /// Read the tape as it stood: `seq:N` (after its first N rows) or `time:ISO` (at that
    /// wall-clock time, e.g. `time:2026-01-01T12:00:00Z`).
    #[arg(long, value_name = "seq:N|time:T")]
    pub as_of: Option<String>,
    /// Re-check the hash chain of every segment the query reads; refuse to answer over a
    /// broken one.
    #[arg(long)]
    pub verify: bool,
    /// Leave damaged frames out (counted with --stats) instead of failing.
    #[arg(long)]
    pub skip_damage: bool,
}

#[cfg(not(feature = "query"))]
pub fn run(_args: &Args) -> u8 {
    eprintln!(
        "error: this tapedeck was built without the query engine (DataFusion): the README's \
         quick start leaves it out to build fast. Build it with\n  cargo build --release\n\
         (the default features include it: `--features query`), then run target/release/tapedeck"
    );
    EXIT_USAGE
}

#[cfg(feature = "query")]
pub fn run(args: &Args) -> u8 {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the query runtime: {e}");
            return crate::report::EXIT_FAILED;
        }
    };
    match rt.block_on(engine::run(args)) {
        Ok(()) => crate::report::EXIT_OK,
        Err(e) => {
            eprintln!("error: {e}");
            if e.is_usage() {
                EXIT_USAGE
            } else {
                crate::report::EXIT_FAILED
            }
        }
    }
}

#[cfg(feature = "query")]
mod engine {
    use std::io::Write;
    use std::sync::Arc;

    use futures_util::StreamExt;
    use tapedeck_query::datafusion::arrow::array::RecordBatch;
    use tapedeck_query::datafusion::arrow::{csv, json, util::pretty};
    use tapedeck_query::datafusion::physical_plan::displayable;
    use tapedeck_query::datafusion::prelude::SessionContext;
    use tapedeck_query::{AsOf, QueryError, TapeTable, TapeTableOptions};

    use super::{Args, Format};

    type Result<T> = std::result::Result<T, QueryError>;

    fn df(e: tapedeck_query::datafusion::error::DataFusionError) -> QueryError {
        QueryError::from_datafusion(e)
    }

    fn io(e: std::io::Error) -> QueryError {
        QueryError::Engine(format!("writing the result: {e}"))
    }

    pub async fn run(args: &Args) -> Result<()> {
        let as_of = match &args.as_of {
            Some(s) => s.parse::<AsOf>().map_err(|m| QueryError::AsOfUnknown {
                tape: args.dir.clone(),
                requested: s.clone(),
                message: m,
            })?,
            None => AsOf::Latest,
        };
        if args.follow && (args.sink.is_some() || args.explain) {
            return Err(QueryError::Sql(
                "--follow prints each result; it does not go with --sink or --explain".into(),
            ));
        }
        let options = TapeTableOptions::default()
            .as_of(as_of)
            .skip_damage(args.skip_damage)
            .verify(args.verify);
        let ctx = tapedeck_query::session();
        // --stats times the query from here: taking the snapshot is part of it (setting up
        // the engine's session, once per process, is not).
        let mut started = std::time::Instant::now();
        let mut tapes = vec![tapedeck_query::register_tape_with(
            &ctx,
            "tape",
            &args.dir,
            options.clone(),
        )?];
        // The tape's run metadata (`tapedeck meta`), when it has any.
        tapedeck_query::register_meta(&ctx, "meta", &args.dir)?;
        for t in &args.tables {
            let Some((name, uri)) = t.split_once('=') else {
                return Err(QueryError::Table {
                    name: t.clone(),
                    uri: String::new(),
                    message: "write it as NAME=URI, e.g. last=parquet:week.parquet".into(),
                });
            };
            if let Some(tape) = tapedeck_query::register_uri(&ctx, name, uri, &options).await? {
                tapes.push(tape);
            }
        }
        if args.explain {
            return explain(&ctx, &args.sql, &tapes).await;
        }
        loop {
            let out = once(&ctx, args, &tapes).await;
            if args.stats {
                print_stats(&tapes, started.elapsed());
            }
            out?;
            if !args.follow {
                return Ok(());
            }
            tokio::time::sleep(args.every).await;
            started = std::time::Instant::now();
            for t in &tapes {
                t.refresh()?;
            }
        }
    }

    async fn explain(ctx: &SessionContext, sql: &str, tapes: &[Arc<TapeTable>]) -> Result<()> {
        let frame = ctx.sql(sql).await.map_err(df)?;
        let logical = frame.logical_plan().display_indent().to_string();
        let physical = frame.create_physical_plan().await.map_err(df)?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "logical plan:\n{logical}\n\nphysical plan:").map_err(io)?;
        writeln!(out, "{}", displayable(physical.as_ref()).indent(true)).map_err(io)?;
        // Planning pruned the tapes' segments and frames already: say what a run would read.
        for t in tapes {
            let s = t.stats();
            writeln!(
                out,
                "tape scan of {}: {} of {} segments and {} of {} frames to read ({} and {} pruned)",
                t.snapshot().dir().display(),
                s.segments - s.segments_pruned,
                s.segments,
                s.frames - s.frames_pruned,
                s.frames,
                s.segments_pruned,
                s.frames_pruned
            )
            .map_err(io)?;
        }
        Ok(())
    }

    /// Plans and runs the query once, writing its result.
    async fn once(ctx: &SessionContext, args: &Args, tapes: &[Arc<TapeTable>]) -> Result<()> {
        // Planned first: a mistake in the SQL writes nothing (and creates no sink file).
        let frame = ctx.sql(&args.sql).await.map_err(df)?;
        let mut stream = frame.execute_stream().await.map_err(df)?;
        if let Some(uri) = &args.sink {
            let mut recorder: Option<tapedeck::recorder::Recorder> = None;
            let mut rows = 0u64;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(df)?;
                if recorder.is_none() {
                    recorder = Some(tapedeck::recorder::Recorder::builder().sink(uri).open()?);
                }
                if let Some(r) = recorder.as_mut() {
                    r.write_batch(&batch)?;
                }
                rows += batch.num_rows() as u64;
            }
            let recorder = match recorder {
                Some(r) => r,
                // An empty result still makes the sink (an empty table or file with no rows).
                None => tapedeck::recorder::Recorder::builder().sink(uri).open()?,
            };
            recorder.finish()?;
            eprintln!("{rows} rows written to {}", tapedeck::uri::redact(uri));
            return Ok(());
        }
        let stdout = std::io::stdout();
        match args.format {
            Format::Table => {
                let mut batches: Vec<RecordBatch> = Vec::new();
                while let Some(b) = stream.next().await {
                    batches.push(b.map_err(df)?);
                }
                let mut out = stdout.lock();
                if args.follow {
                    let end: u64 = tapes.first().map_or(0, |t| t.snapshot().end());
                    writeln!(out, "-- {} rows acknowledged", end).map_err(io)?;
                }
                let text = pretty::pretty_format_batches(&batches).map_err(arrow)?;
                writeln!(out, "{text}").map_err(io)?;
                let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
                writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" }).map_err(io)?;
            }
            Format::Csv => {
                let mut w = csv::WriterBuilder::new()
                    .with_header(true)
                    .build(stdout.lock());
                drain(&mut stream, |b| w.write(b)).await?;
            }
            Format::Jsonl => {
                let mut w = json::LineDelimitedWriter::new(stdout.lock());
                drain(&mut stream, |b| w.write(b)).await?;
                w.finish().map_err(arrow)?;
            }
            Format::Json => {
                let mut w = json::ArrayWriter::new(stdout.lock());
                drain(&mut stream, |b| w.write(b)).await?;
                w.finish().map_err(arrow)?;
                println!();
            }
        }
        Ok(())
    }

    fn arrow(e: tapedeck_query::datafusion::arrow::error::ArrowError) -> QueryError {
        QueryError::Engine(format!("writing the result: {e}"))
    }

    /// Hands each batch of the result to `write` as it comes: memory stays bounded.
    async fn drain(
        stream: &mut tapedeck_query::datafusion::execution::SendableRecordBatchStream,
        mut write: impl FnMut(
            &RecordBatch,
        ) -> std::result::Result<
            (),
            tapedeck_query::datafusion::arrow::error::ArrowError,
        >,
    ) -> Result<()> {
        while let Some(b) = stream.next().await {
            write(&b.map_err(df)?).map_err(arrow)?;
        }
        Ok(())
    }

    fn print_stats(tapes: &[Arc<TapeTable>], elapsed: std::time::Duration) {
        for t in tapes {
            let s = t.stats();
            let snap = t.snapshot();
            let pct = if s.bytes_total == 0 {
                0.0
            } else {
                100.0 * s.bytes_read as f64 / s.bytes_total as f64
            };
            eprintln!(
                "{}: snapshot of {} rows; read {} of {} segments ({} pruned), {} of {} frames \
                 ({} pruned by zone maps), {} of {} bytes ({pct:.2}%), {} rows decoded{}; {:.4} s",
                snap.dir().display(),
                snap.end(),
                s.segments - s.segments_pruned,
                s.segments,
                s.segments_pruned,
                s.frames - s.frames_pruned,
                s.frames,
                s.frames_pruned,
                s.bytes_read,
                s.bytes_total,
                s.rows_decoded,
                match (s.rows_damaged, s.rows_moved) {
                    (0, 0) => String::new(),
                    (d, 0) => format!(", {d} damaged rows left out"),
                    (0, m) => format!(", {m} rows read where a compaction moved them"),
                    (d, m) => format!(
                        ", {d} damaged rows left out, {m} rows read where a compaction moved them"
                    ),
                },
                elapsed.as_secs_f64()
            );
        }
    }
}
