//! `postgres://user@host:port/db?table=T&schema=S` — PostgreSQL, written with binary COPY into
//! typed tables, surviving the server going away.
//!
//! - **Write path.** `write` converts and checks a batch and holds it; `flush` writes everything
//!   held in one transaction: `BEGIN`, the progress update, one `COPY … FROM STDIN (FORMAT
//!   binary)` per table, `COMMIT` — pipelined, so a flush costs two round trips. With
//!   `use_copy=false` (for roles without COPY) the rows go through prepared multi-row `INSERT`s
//!   in the same transaction.
//! - **Tables.** An existing table's columns, read from `information_schema.columns`, lock the
//!   schema; a column of a type tapedeck cannot write is [`Error::ColumnType`]. A missing table
//!   is created from the first batch (`create_table=true`, the default, as for SQLite) with
//!   `timestamptz`, `double precision`, `bigint`, `boolean`, `text` and `bytea` columns;
//!   `create_table=false` insists on an existing table, and a missing one is
//!   [`Error::MissingTable`]. Columns with a default
//!   (`bigserial`, `DEFAULT now()`) that a flush has no values for are left out of its COPY, so
//!   the default applies; generated columns are never written.
//! - **Names.** Schema and table names must match `^[A-Za-z_][A-Za-z0-9_]{0,62}$`; column
//!   names are always quoted and escaped; values are only ever bound or sent as COPY data.
//! - **Credentials.** The sink calls itself `postgres:host:port/db.schema.table`; the password
//!   never appears in a name, an error or a log line.
//! - **The server goes away.** Each flush's transaction also advances this sink's row in
//!   `SCHEMA.tapedeck_cursor` from the last committed flush number to the next, with the old
//!   number in the `WHERE` clause. The row is written by the sink's first committed
//!   transaction (synchronously), never at open: a run that fails or is killed before it
//!   commits a row leaves no row behind. When the connection drops, the rows stay held and the sink
//!   reconnects with backoff (100 ms doubling to 5 s). The retry sends the same rows under the
//!   same flush number; if the lost transaction did commit, the retry's update matches no row
//!   (and waits for a still-running old transaction's row lock first), so the retry is rolled
//!   back and the rows are counted once — no row is lost and none is written twice. Meanwhile
//!   `write` and `flush` keep accepting rows (the sink is *behind*: [`SinkStats::pending`]) up to
//!   `buffer_rows`, after which `write` waits; after `retry_for` without a server the sink fails
//!   with [`Error::Connect`]. While the sink *opens*, a server that cannot be reached, or a
//!   connection lost on the way (closed, a socket error, SQLSTATE class 08, 57P01–57P03,
//!   53300), is [`Error::Connect`] — what a delivery retries — and every other refusal is
//!   [`Error::Database`].
//! - **Settings.** `connect_timeout` (30 s) caps every connection attempt, `statement_timeout`
//!   (30 s) is sent as a server setting, `close_timeout` (10 s) caps closing,
//!   `application_name=tapedeck`. `synchronous_commit` is `off` for the sink's session unless
//!   the URI says otherwise: a flush makes rows visible, as a file sink's `write(2)` does, and
//!   the server makes them durable within a fraction of a second; a server *crash* (not a clean
//!   restart) can lose the last of them. With the tape, the tape is what is durable. Say
//!   `synchronous_commit=on` to wait for the server's WAL flush at every flush.

mod config;
mod encode;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow_array::{Array, RecordBatch};
use arrow_schema::{Field, Schema};
use bytes::BytesMut;
use futures_util::SinkExt;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement};

pub(crate) use config::parse;
pub use config::{PostgresOptions, Secret};
pub use encode::{PgType, SUPPORTED_PG_TYPES};

use super::sql::{quote_ident, to_typed_storage};
use super::{Lifecycle, Sink, SinkStats};
use crate::error::{Error, Result};
use crate::record::{Block, SchemaLock, UnknownColumns};
use crate::uri::Uri;

/// This sink's descriptor (written beside the registry, so builds without the feature list it).
pub use super::descriptor::POSTGRES as DESCRIPTOR;

/// The table that records each sink's committed flushes, in the sink's schema.
pub const PROGRESS_TABLE: &str = "tapedeck_cursor";

/// How often an asynchronously committing sink commits one flush synchronously, which makes
/// everything before it durable and lets the sink drop the rows it kept in case of a crash.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// Rows one retry transaction carries at most when the sink catches up after an outage.
const CATCH_UP_ROWS: usize = 131_072;

/// Parameters per `INSERT` statement are capped by the protocol at 65,535.
const MAX_PARAMS: usize = 65_535;

/// A column of a destination table.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    pg: PgType,
    /// Has a default (or is an identity column): left out of a flush that has no values for it.
    has_default: bool,
}

/// One destination table.
#[derive(Debug)]
struct Table {
    name: String,
    lock: SchemaLock,
    /// The table's columns once known (introspected, or created from the lock).
    columns: Option<Vec<Column>>,
    /// Created by this sink or found in the database.
    exists: bool,
}

/// Rows held for one flush (or merged flushes), per table, in storage form.
#[derive(Debug, Default)]
struct Held {
    readings: Vec<RecordBatch>,
    blocks: Vec<RecordBatch>,
    rows: usize,
}

/// One transaction attempt. One whose outcome is not known is retried with exactly these rows
/// and number.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    flush: i64,
    /// How many of the first pending flushes it carries.
    covers: usize,
    /// Commit synchronously (making every earlier asynchronous commit durable too).
    sync: bool,
}

/// What one transaction attempt ended with.
enum Outcome {
    Committed {
        rows: u64,
        bytes: u64,
    },
    /// The progress row had already moved to this flush number: an earlier attempt committed.
    AlreadyCommitted,
    /// The progress row is back at this earlier flush: the server lost asynchronous commits.
    Rewound(i64),
    /// The connection is gone; the outcome is unknown.
    Lost(String),
    /// The server refused the transaction (rolled back).
    Failed {
        table: String,
        message: String,
    },
    /// A delivery's first transaction found another tape's delivery in the table (rolled
    /// back): the row key of that delivery.
    OtherTape(String),
}

/// Why a connection attempt failed.
enum ConnectFailure {
    /// No server answered (within `connect_timeout`), or it refused the session
    /// (authentication, an unknown database).
    Startup(String),
    /// The session started, then this step of its setup failed.
    Setup(&'static str, tokio_postgres::Error),
}

impl ConnectFailure {
    fn message(&self) -> String {
        match self {
            ConnectFailure::Startup(m) => m.clone(),
            ConnectFailure::Setup(action, e) => format!("cannot {action}: {}", message(e)),
        }
    }
}

/// An open connection and what was prepared on it.
struct Session {
    client: Client,
    connection: tokio::task::JoinHandle<()>,
    /// The progress table, quoted and qualified.
    progress: String,
    advance: Statement,
    /// The first transaction's progress step: inserts the row (or, for a retry of a first
    /// transaction that did commit, matches nothing).
    register: Statement,
    read_progress: Statement,
    copies: HashMap<String, Statement>,
}

/// The PostgreSQL sink; see the module docs.
pub struct PostgresSink {
    life: Lifecycle,
    options: PostgresOptions,
    database: String,
    rt: tokio::runtime::Runtime,
    session: Option<Session>,
    readings: Table,
    blocks: Table,
    /// This run's id in the progress table.
    sink_id: String,
    /// Flushes committed (the progress row's number).
    committed: i64,
    held: Held,
    pending: VecDeque<Held>,
    pending_rows: usize,
    in_doubt: Option<Attempt>,
    /// `synchronous_commit=off`: commits are acknowledged before they are durable.
    async_commit: bool,
    /// Flushes committed asynchronously and not yet known durable, kept to write again if the
    /// server crashes before writing them out.
    unsynced: VecDeque<(i64, Held)>,
    unsynced_rows: usize,
    last_sync: Instant,
    /// The last flush known durable.
    synced_flush: i64,
    /// Set while the server is away: since when, the last error, the next attempt.
    down: Option<(Instant, String)>,
    next_attempt: Instant,
    backoff: Duration,
    /// A refused transaction: the sink stops delivering.
    broken: bool,
    rows: u64,
    bytes: u64,
    /// Rows received, for row numbers in errors.
    received: u64,
    /// A delivery from a tape: the cursor when the sink opened; each transaction sets the
    /// progress row's `tape_seq` to this plus the rows committed.
    cursor_base: Option<u64>,
    /// The progress row exists (a delivery's from an earlier run, or this run committed).
    registered: bool,
}

impl std::fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSink")
            .field("table", &self.options.table_address())
            .field("connected", &self.session.is_some())
            .field("rows", &self.rows)
            .field("pending_rows", &self.pending_rows)
            .finish_non_exhaustive()
    }
}

impl PostgresSink {
    /// Connects (within `connect_timeout`), prepares the progress table, and reads the tables'
    /// columns. A server that cannot be reached here is an error at once: the retry policy is for
    /// servers that go away *during* a run. A connection lost while opening (the server shut
    /// down, crashed, or ended the session) is [`Error::Connect`] too, which a delivery retries;
    /// anything else the server refuses is [`Error::Database`].
    pub fn open(options: PostgresOptions) -> Result<PostgresSink> {
        Self::open_with(options, None)
    }

    /// Opens the sink as the destination of a delivery from tape `tape_id`: its progress row is
    /// the delivery's, keyed by the tape and the table and kept across runs, and each
    /// transaction sets its `tape_seq` with the rows. Returns the sink and the committed cursor
    /// (`start` when the delivery is new).
    pub(crate) fn open_delivery(
        options: PostgresOptions,
        tape_id: &str,
        start: u64,
    ) -> Result<(PostgresSink, u64)> {
        let sink = Self::open_with(options, Some((tape_id, start)))?;
        let base = sink.cursor_base.unwrap_or(start);
        Ok((sink, base))
    }

    fn open_with(options: PostgresOptions, delivery: Option<(&str, u64)>) -> Result<PostgresSink> {
        let database = options.database();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Connect {
                database: database.clone(),
                message: format!("cannot start the client runtime: {e}"),
                hint: "the process may be out of threads or file descriptors",
            })?;
        let name = format!("postgres:{}", options.table_address());
        let table = |t: &str| Table {
            name: t.to_string(),
            lock: SchemaLock::new(format!("{}.{}.{t}", database, options.schema))
                .with_unknown_columns(if options.strict {
                    UnknownColumns::Error
                } else {
                    UnknownColumns::DropWithWarning
                }),
            columns: None,
            exists: false,
        };
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let async_commit = options.synchronous_commit == "off";
        let mut sink = PostgresSink {
            life: Lifecycle::new(name),
            readings: table(&options.table),
            blocks: table(&options.blocks_table),
            sink_id: format!(
                "{}.{}-{}-{started}",
                options.schema,
                options.table,
                std::process::id()
            ),
            options,
            database,
            rt,
            session: None,
            committed: 0,
            held: Held::default(),
            pending: VecDeque::new(),
            pending_rows: 0,
            in_doubt: None,
            async_commit,
            unsynced: VecDeque::new(),
            unsynced_rows: 0,
            last_sync: Instant::now(),
            synced_flush: 0,
            down: None,
            next_attempt: Instant::now(),
            backoff: Duration::ZERO,
            broken: false,
            rows: 0,
            bytes: 0,
            received: 0,
            cursor_base: None,
            registered: false,
        };
        let session = sink.connect().map_err(|f| match f {
            ConnectFailure::Startup(message) => sink.connect_error(message),
            ConnectFailure::Setup(action, e) => sink.open_error(PROGRESS_TABLE, action, &e),
        })?;
        sink.session = Some(session);
        // A run's own progress row is written by its first transaction; a delivery's is read
        // (and, if new, also written by its first transaction).
        if let Some((tape_id, start)) = delivery {
            sink.sink_id = format!(
                "tape:{tape_id}/{}.{}",
                sink.options.schema, sink.options.table
            );
            sink.register_delivery(start)?;
        }
        for blocks in [false, true] {
            sink.introspect(blocks)?;
        }
        tracing::info!(
            table = %sink.options.table_address(),
            use_copy = sink.options.use_copy,
            create_table = sink.options.create_table,
            "postgres sink open"
        );
        Ok(sink)
    }

    /// Reads the options from a URI's parameters.
    pub(crate) fn options_from_uri(uri: &mut Uri) -> Result<PostgresOptions> {
        PostgresOptions::from_parsed(uri)
    }

    /// The table it writes, `host:port/db.schema.table`.
    pub fn table_address(&self) -> String {
        self.options.table_address()
    }

    fn qualified(&self, table: &str) -> String {
        format!(
            "{}.{}",
            quote_ident(&self.options.schema),
            quote_ident(table)
        )
    }

    fn connect_error(&self, message: String) -> Error {
        Error::Connect {
            database: self.database.clone(),
            message,
            hint: "check that the server runs and accepts TCP connections there, and the user, password and database in the URI",
        }
    }

    /// A failure while the sink opens, after the session started. A lost connection or a server
    /// going away ([`connection_lost`]) is [`Error::Connect`], which a delivery retries; anything
    /// else (a missing privilege, a table it cannot use) is [`Error::Database`].
    fn open_error(&self, table: &str, action: &'static str, e: &tokio_postgres::Error) -> Error {
        if connection_lost(e) {
            Error::Connect {
                database: self.database.clone(),
                message: format!(
                    "the connection was lost while trying to {action} ({}.{table}): {}",
                    self.options.schema,
                    message(e)
                ),
                hint: "the server shut down, restarted, crashed or had no connection to spare while the sink opened; a delivery from a tape tries again for 5 minutes, otherwise run again once the server accepts connections",
            }
        } else {
            self.db_error(table, action, message(e))
        }
    }

    fn db_error(&self, table: &str, action: &'static str, message: String) -> Error {
        Error::Database {
            database: self.database.clone(),
            table: format!("{}.{table}", self.options.schema),
            action,
            message,
        }
    }

    /// One connection attempt, capped by `connect_timeout`: connects, makes sure the progress
    /// table exists, and prepares the progress statements.
    fn connect(&self) -> std::result::Result<Session, ConnectFailure> {
        let o = &self.options;
        let mut config = tokio_postgres::Config::new();
        config
            .host(&o.host)
            .port(o.port)
            .user(&o.user)
            .dbname(&o.dbname)
            .application_name(&o.application_name)
            .connect_timeout(o.connect_timeout)
            .options(format!(
                "-c statement_timeout={} -c synchronous_commit={}",
                o.statement_timeout.as_millis(),
                o.synchronous_commit
            ));
        if let Some(p) = &o.password {
            config.password(p.expose());
        }
        let progress = self.qualified(PROGRESS_TABLE);
        let progress_name = progress.clone();
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {progress} (sink text PRIMARY KEY, target_table text NOT NULL, \
             flushes bigint NOT NULL, rows bigint NOT NULL, tape_seq bigint, updated_at timestamptz NOT NULL DEFAULT now())"
        );
        let advance = format!(
            "UPDATE {progress} SET flushes = $2, rows = rows + $3, tape_seq = $5, updated_at = now() \
             WHERE sink = $1 AND flushes = $4"
        );
        let register = format!(
            "INSERT INTO {progress} AS p (sink, flushes, rows, tape_seq, target_table) VALUES ($1, $2, $3, $5, $6) \
             ON CONFLICT (sink) DO UPDATE SET flushes = excluded.flushes, rows = p.rows + excluded.rows, \
             tape_seq = excluded.tape_seq, updated_at = now() WHERE p.flushes = $4"
        );
        let read = format!("SELECT flushes FROM {progress} WHERE sink = $1");
        let work = async move {
            let (client, connection) = config
                .connect(NoTls)
                .await
                .map_err(|e| ConnectFailure::Startup(message(&e)))?;
            let connection = tokio::spawn(async move {
                let _ = connection.await;
            });
            if let Err(e) = client.batch_execute(&create).await {
                // Two first runs racing to create the table: the loser's CREATE fails with a
                // unique violation on the catalog, or "type already exists" (42710), or
                // "relation already exists" (42P07) — and the table exists.
                use tokio_postgres::error::SqlState;
                let raced = [
                    SqlState::UNIQUE_VIOLATION,
                    SqlState::DUPLICATE_OBJECT,
                    SqlState::DUPLICATE_TABLE,
                ];
                if !e.code().is_some_and(|c| raced.contains(c)) {
                    return Err(ConnectFailure::Setup("create the progress table", e));
                }
            }
            let advance = client
                .prepare_typed(
                    &advance,
                    &[Type::TEXT, Type::INT8, Type::INT8, Type::INT8, Type::INT8],
                )
                .await
                .map_err(|e| ConnectFailure::Setup("prepare the progress statements", e))?;
            let register = client
                .prepare_typed(
                    &register,
                    &[
                        Type::TEXT,
                        Type::INT8,
                        Type::INT8,
                        Type::INT8,
                        Type::INT8,
                        Type::TEXT,
                    ],
                )
                .await
                .map_err(|e| ConnectFailure::Setup("prepare the progress statements", e))?;
            let read_progress = client
                .prepare_typed(&read, &[Type::TEXT])
                .await
                .map_err(|e| ConnectFailure::Setup("prepare the progress statements", e))?;
            Ok(Session {
                client,
                connection,
                progress: progress_name,
                advance,
                register,
                read_progress,
                copies: HashMap::new(),
            })
        };
        self.rt
            .block_on(async { tokio::time::timeout(o.connect_timeout, work).await })
            .map_err(|_| {
                ConnectFailure::Startup(format!(
                    "no answer within {:?} (connect_timeout)",
                    o.connect_timeout
                ))
            })?
    }

    /// Reads the delivery's row, in one synchronously committed transaction that also touches
    /// it: the sink continues from what the server will keep even if it crashes now (the WAL
    /// flush also covers every earlier run's asynchronous commits). A table that already holds
    /// another tape's delivery is refused: two tapes' sequence numbers in one table cannot be
    /// told apart, so neither cursor would say which rows it holds.
    ///
    /// A new delivery's row is not written here but by its first transaction, so a run that
    /// fails (or is killed) before it commits a row leaves no row behind. That transaction
    /// takes a transaction-scoped advisory lock on the table's name and checks for another
    /// tape again before it inserts the row ([`run_transaction`]), so two deliveries of
    /// different tapes opening on one table at once cannot both get in.
    fn register_delivery(&mut self, start: u64) -> Result<()> {
        let progress = self.qualified(PROGRESS_TABLE);
        let others = format!(
            "SELECT sink FROM {progress} WHERE target_table = $1 AND sink LIKE 'tape:%' AND sink <> $2 \
             ORDER BY sink LIMIT 1"
        );
        let touch = format!(
            "UPDATE {progress} SET updated_at = now() WHERE sink = $1 RETURNING flushes, tape_seq"
        );
        let table_key = format!("{}.{}", self.options.schema, self.options.table);
        let id = self.sink_id.clone();
        if i64::try_from(start).is_err() {
            return Err(Error::Delivery {
                sink: self.life.name().to_string(),
                message: format!(
                    "tape row {start} does not fit PostgreSQL's bigint cursor; deliver from the tape's start"
                ),
            });
        }
        let session = self.session_ref()?;
        let read = self.rt.block_on(async {
            let c = &session.client;
            c.batch_execute(begin_sql(true)).await?;
            let r = async {
                if let Some(row) = c
                    .query_opt(&others, &[&table_key as &(dyn ToSql + Sync), &id])
                    .await?
                {
                    return Ok(Err(row.try_get::<_, String>(0)?));
                }
                let found = match c.query_opt(&touch, &[&id as &(dyn ToSql + Sync)]).await? {
                    Some(row) => {
                        Some((row.try_get::<_, i64>(0)?, row.try_get::<_, Option<i64>>(1)?))
                    }
                    None => None,
                };
                Ok::<_, tokio_postgres::Error>(Ok(found))
            }
            .await;
            match r {
                Ok(Ok(found)) => {
                    c.batch_execute("COMMIT").await?;
                    Ok(Ok(found))
                }
                Ok(Err(other)) => {
                    c.batch_execute("ROLLBACK").await?;
                    Ok(Err(other))
                }
                Err(e) => {
                    // Leave the session usable; the first error is the one to report.
                    let _ = c.batch_execute("ROLLBACK").await;
                    Err(e)
                }
            }
        });
        let found = read
            .map_err(|e| self.open_error(PROGRESS_TABLE, "read the delivery's cursor row", &e))?;
        let (flushes, seq) = match found {
            Ok(Some(found)) => found,
            Ok(None) => {
                // A new delivery: its row comes with its first transaction.
                self.cursor_base = Some(start);
                return Ok(());
            }
            Err(theirs) => return Err(self.other_tape_error(&theirs)),
        };
        let Some(seq) = seq.and_then(|s| u64::try_from(s).ok()) else {
            return Err(Error::Delivery {
                sink: self.life.name().to_string(),
                message: format!(
                    "its cursor row `{id}` in {}.{PROGRESS_TABLE} has tape_seq {seq:?}; delete the row to deliver the tape again from its start",
                    self.options.schema
                ),
            });
        };
        self.committed = flushes;
        self.synced_flush = flushes;
        self.cursor_base = Some(seq);
        self.registered = true;
        Ok(())
    }

    /// The refusal of a delivery into a table that holds another tape's delivery (row
    /// `theirs` of the progress table).
    fn other_tape_error(&self, theirs: &str) -> Error {
        let table_key = format!("{}.{}", self.options.schema, self.options.table);
        let their_tape = theirs
            .strip_prefix("tape:")
            .and_then(|r| r.split('/').next())
            .unwrap_or(theirs);
        let id = &self.sink_id;
        let ours = id
            .strip_prefix("tape:")
            .and_then(|r| r.split('/').next())
            .unwrap_or(id.as_str());
        Error::Delivery {
            sink: self.life.name().to_string(),
            message: format!(
                "table {table_key} already holds rows delivered from tape {their_tape} (row `{theirs}` in {}.{PROGRESS_TABLE}), not from this tape ({ours}); deliver into another table (`?table=` or `?schema=`), or drop the table and delete that row to start over",
                self.options.schema
            ),
        }
    }

    fn session_ref(&self) -> Result<&Session> {
        self.session
            .as_ref()
            .ok_or_else(|| self.connect_error("not connected".into()))
    }

    /// Reads a table's columns and locks its schema from them. Returns whether the table exists.
    fn introspect(&mut self, blocks: bool) -> Result<bool> {
        let schema = self.options.schema.clone();
        let table_name = self.table(blocks).name.clone();
        let session = self.session_ref()?;
        let rows = self
            .rt
            .block_on(async {
                session
                    .client
                    .query(
                        "SELECT column_name::text, data_type::text, \
                         (column_default IS NOT NULL OR is_identity = 'YES'), \
                         is_generated <> 'NEVER' \
                         FROM information_schema.columns \
                         WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
                        &[&schema, &table_name],
                    )
                    .await
            })
            .map_err(|e| self.open_error(&table_name, "read the table's columns", &e))?;
        if rows.is_empty() {
            return Ok(false);
        }
        let mut columns = Vec::new();
        for row in rows {
            let read =
                || -> std::result::Result<(String, String, bool, bool), tokio_postgres::Error> {
                    Ok((
                        row.try_get(0)?,
                        row.try_get(1)?,
                        row.try_get(2)?,
                        row.try_get(3)?,
                    ))
                };
            let (name, data_type, has_default, generated) = read()
                .map_err(|e| self.db_error(&table_name, "read the table's columns", message(&e)))?;
            if generated {
                continue;
            }
            let pg =
                PgType::from_information_schema(&data_type).ok_or_else(|| Error::ColumnType {
                    database: self.database.clone(),
                    table: format!("{schema}.{table_name}"),
                    column: name.clone(),
                    column_type: data_type.clone(),
                    supported: SUPPORTED_PG_TYPES,
                })?;
            columns.push(Column {
                name,
                pg,
                has_default,
            });
        }
        let fields: Vec<Field> = columns
            .iter()
            .map(|c| Field::new(&c.name, c.pg.arrow(), true))
            .collect();
        let table = self.table_mut(blocks);
        table.lock.lock(&Schema::new(fields))?;
        table.columns = Some(columns);
        table.exists = true;
        Ok(true)
    }

    fn table(&self, blocks: bool) -> &Table {
        if blocks { &self.blocks } else { &self.readings }
    }

    fn table_mut(&mut self, blocks: bool) -> &mut Table {
        if blocks {
            &mut self.blocks
        } else {
            &mut self.readings
        }
    }

    fn hold(&mut self, batch: &RecordBatch, blocks: bool) -> Result<()> {
        let r = self.hold_checked(batch, blocks);
        self.life.watch(r)
    }

    fn hold_checked(&mut self, batch: &RecordBatch, blocks: bool) -> Result<()> {
        self.life.check_open()?;
        let table = self.table(blocks);
        if !table.exists && !self.options.create_table {
            return Err(Error::MissingTable {
                database: self.database.clone(),
                table: format!("{}.{}", self.options.schema, table.name),
            });
        }
        let stored = to_typed_storage(batch)?;
        let table = self.table_mut(blocks);
        let conformed = table.lock.conform(&stored)?;
        if table.columns.is_none()
            && let Some(schema) = table.lock.schema()
        {
            table.columns = Some(
                schema
                    .fields()
                    .iter()
                    .map(|f| Column {
                        name: f.name().clone(),
                        pg: PgType::for_arrow(f.data_type()),
                        has_default: false,
                    })
                    .collect(),
            );
        }
        let rows = conformed.num_rows();
        self.received += rows as u64;
        if blocks {
            self.held.blocks.push(conformed);
        } else {
            self.held.readings.push(conformed);
        }
        self.held.rows += rows;
        if self.held.rows + self.pending_rows >= self.options.buffer_rows.max(1) {
            // Bounded memory: deliver what is held before taking more, waiting for the server
            // if it is away.
            self.move_held();
            self.commit_pending(true)?;
        }
        Ok(())
    }

    fn move_held(&mut self) {
        let held = std::mem::take(&mut self.held);
        if held.rows > 0 {
            self.pending_rows += held.rows;
            self.pending.push_back(held);
        }
    }

    /// Commits pending flushes. With `wait`, keeps trying (with backoff) until everything is
    /// committed — and durable — or `retry_for` has passed; without, a sink whose server is
    /// away returns at once when an attempt is not yet due.
    fn commit_pending(&mut self, wait: bool) -> Result<()> {
        if self.broken {
            return Ok(());
        }
        while !self.pending.is_empty() || (wait && !self.unsynced.is_empty()) {
            if self.session.is_none() {
                let now = Instant::now();
                if now < self.next_attempt {
                    if !wait {
                        return Ok(());
                    }
                    std::thread::sleep(self.next_attempt - now);
                }
                match self.connect() {
                    Ok(s) => {
                        tracing::info!(table = %self.options.table_address(), "reconnected to the server");
                        self.session = Some(s);
                    }
                    Err(failure) => {
                        self.went_away(failure.message())?;
                        continue;
                    }
                }
            }
            let attempt = match self.in_doubt {
                Some(d) => d,
                None => {
                    let mut covers = 0;
                    let mut rows = 0;
                    for h in &self.pending {
                        if covers > 0 && rows + h.rows > CATCH_UP_ROWS {
                            break;
                        }
                        covers += 1;
                        rows += h.rows;
                    }
                    // The first transaction writes the progress row: synchronously, so the
                    // row the later ones advance cannot vanish in a server crash.
                    let sync = self.async_commit
                        && (!self.registered
                            || wait
                            || self.last_sync.elapsed() >= SYNC_EVERY
                            || self.unsynced_rows + rows >= self.options.buffer_rows / 2);
                    Attempt {
                        flush: self.committed + 1,
                        covers,
                        sync,
                    }
                }
            };
            match self.transaction(attempt) {
                Outcome::Committed { rows, bytes } => {
                    self.settle(attempt);
                    self.rows += rows;
                    self.bytes += bytes;
                }
                Outcome::AlreadyCommitted => {
                    tracing::info!(table = %self.options.table_address(), flush = attempt.flush, "the transaction lost with the connection had committed; not writing it again");
                    let rows: usize = self
                        .pending
                        .iter()
                        .take(attempt.covers)
                        .map(|h| h.rows)
                        .sum();
                    self.settle(attempt);
                    self.rows += rows as u64;
                }
                Outcome::Rewound(at) => self.rewind(at)?,
                Outcome::Lost(e) => {
                    self.in_doubt = Some(attempt);
                    if let Some(s) = self.session.take() {
                        s.connection.abort();
                    }
                    self.went_away(e)?;
                }
                Outcome::Failed { table, message } => {
                    self.broken = true;
                    return Err(self.db_error(&table, "write rows (rolled back)", message));
                }
                Outcome::OtherTape(theirs) => {
                    self.broken = true;
                    return Err(self.other_tape_error(&theirs));
                }
            }
        }
        Ok(())
    }

    /// The attempt committed: its flushes leave the queue — for good if the commit was
    /// synchronous (which also makes every earlier commit durable), else into `unsynced` until
    /// the next synchronous one.
    fn settle(&mut self, attempt: Attempt) {
        let mut done = Held::default();
        for _ in 0..attempt.covers {
            if let Some(h) = self.pending.pop_front() {
                self.pending_rows -= h.rows;
                done.rows += h.rows;
                done.readings.extend(h.readings);
                done.blocks.extend(h.blocks);
            }
        }
        if attempt.sync || !self.async_commit {
            self.unsynced.clear();
            self.unsynced_rows = 0;
            self.last_sync = Instant::now();
            self.synced_flush = attempt.flush;
        } else if done.rows > 0 {
            self.unsynced_rows += done.rows;
            self.unsynced.push_back((attempt.flush, done));
        }
        self.committed = attempt.flush;
        self.registered = true;
        self.in_doubt = None;
        if let Some((since, _)) = self.down.take() {
            tracing::info!(table = %self.options.table_address(), down_for = ?since.elapsed(), "caught up after the server came back");
        }
        self.backoff = Duration::ZERO;
    }

    /// The server came back without the asynchronously committed flushes after `at` (it
    /// crashed before writing them out): they go back to the front of the queue and are written
    /// again, each once.
    fn rewind(&mut self, at: i64) -> Result<()> {
        let lost = self.committed - at;
        let mut back: Vec<Held> = Vec::new();
        let mut rows = 0u64;
        while self.unsynced.back().is_some_and(|(flush, _)| *flush > at) {
            if let Some((_, held)) = self.unsynced.pop_back() {
                rows += held.rows as u64;
                back.push(held);
            }
        }
        if at < self.synced_flush {
            self.broken = true;
            return Err(self.db_error(
                PROGRESS_TABLE,
                "resume after the server restarted",
                format!(
                    "the server lost {lost} committed flushes, some of them committed synchronously; is fsync off on the server?"
                ),
            ));
        }
        tracing::warn!(table = %self.options.table_address(), lost_flushes = lost, rows, "the server restarted without its last asynchronous commits; writing those rows again");
        for held in back {
            self.pending_rows += held.rows;
            self.pending.push_front(held);
        }
        self.unsynced_rows = self.unsynced.iter().map(|(_, h)| h.rows).sum();
        self.rows -= rows;
        self.committed = at;
        self.in_doubt = None;
        Ok(())
    }

    /// Records a failed connection; fails once the server has been away for `retry_for`.
    fn went_away(&mut self, e: String) -> Result<()> {
        let now = Instant::now();
        let since = match &self.down {
            Some((since, _)) => *since,
            None => {
                tracing::warn!(table = %self.options.table_address(), error = %e, "lost the server; holding rows and reconnecting");
                now
            }
        };
        self.down = Some((since, e.clone()));
        if since.elapsed() >= self.options.retry_for {
            self.broken = true;
            return Err(self.connect_error(format!(
                "{e}; gave up after {:?} of retrying (retry_for); {} rows were not written",
                self.options.retry_for, self.pending_rows
            )));
        }
        self.next_attempt = now + self.backoff;
        self.backoff = (self.backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
        Ok(())
    }

    /// Columns of `table` that a transaction carrying `batches` writes: all of them, less those
    /// with a default that no batch has a value for.
    fn copy_columns(table: &Table, batches: &[&RecordBatch]) -> Vec<(usize, PgType, String)> {
        let Some(columns) = &table.columns else {
            return Vec::new();
        };
        columns
            .iter()
            .enumerate()
            .filter(|(i, c)| {
                !c.has_default
                    || batches.iter().any(|b| {
                        let a = b.column(*i);
                        a.null_count() < a.len()
                    })
            })
            .map(|(i, c)| (i, c.pg, c.name.clone()))
            .collect()
    }

    /// Runs one transaction carrying the first `attempt.covers` pending flushes.
    fn transaction(&mut self, attempt: Attempt) -> Outcome {
        let Some(mut session) = self.session.take() else {
            return Outcome::Lost("not connected".into());
        };
        let mut plans = Vec::new();
        let mut ddl = Vec::new();
        let mut total_rows = 0u64;
        for blocks in [false, true] {
            let table = self.table(blocks);
            let batches: Vec<&RecordBatch> = self
                .pending
                .iter()
                .take(attempt.covers)
                .flat_map(|h| if blocks { &h.blocks } else { &h.readings })
                .filter(|b| b.num_rows() > 0)
                .collect();
            if batches.is_empty() {
                continue;
            }
            if !table.exists
                && let Some(columns) = &table.columns
            {
                let defs: Vec<String> = columns
                    .iter()
                    .map(|c| format!("{} {}", quote_ident(&c.name), c.pg.sql()))
                    .collect();
                ddl.push(format!(
                    "CREATE TABLE IF NOT EXISTS {} ({})",
                    self.qualified(&table.name),
                    defs.join(", ")
                ));
            }
            let columns = Self::copy_columns(table, &batches);
            total_rows += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            plans.push((
                table.name.clone(),
                self.qualified(&table.name),
                columns,
                batches,
            ));
        }
        let first_row = self.received - (self.pending_rows + self.held.rows) as u64;
        let deadline = self.options.statement_timeout + Duration::from_secs(10);
        let use_copy = self.options.use_copy;
        let sink_id = self.sink_id.clone();
        let table_key = format!("{}.{}", self.options.schema, self.options.table);
        let prev = attempt.flush - 1;
        let work = run_transaction(
            &mut session,
            &ddl,
            &plans,
            use_copy,
            Step {
                sink_id: &sink_id,
                flush: attempt.flush,
                rows: total_rows as i64,
                prev,
                sync: attempt.sync,
                tape_seq: self.cursor_base.map(|b| {
                    i64::try_from(b.saturating_add(self.rows).saturating_add(total_rows))
                        .unwrap_or(i64::MAX)
                }),
                first: (!self.registered).then_some(First {
                    table_key: &table_key,
                    delivery: self.cursor_base.is_some(),
                }),
            },
            first_row,
        );
        let result = self
            .rt
            .block_on(async { tokio::time::timeout(deadline, work).await })
            .unwrap_or_else(|_| Err(TxError::Lost(format!("no answer within {deadline:?}"))));
        let outcome = match result {
            Ok(Some(bytes)) => Outcome::Committed {
                rows: total_rows,
                bytes,
            },
            Ok(None) => {
                // The progress row is not where this sink left it: did the lost attempt commit?
                // A progress table someone altered (a column of another type) reads as an error,
                // never a panic.
                let read = self.rt.block_on(async {
                    match session
                        .client
                        .query_opt(&session.read_progress, &[&sink_id])
                        .await
                    {
                        Ok(Some(row)) => row.try_get::<_, i64>(0).map(Some),
                        Ok(None) => Ok(None),
                        Err(e) => Err(e),
                    }
                });
                match read {
                    Ok(Some(v)) if v == attempt.flush => Outcome::AlreadyCommitted,
                    Ok(Some(v)) if v < prev => Outcome::Rewound(v),
                    Ok(v) => Outcome::Failed {
                        table: PROGRESS_TABLE.into(),
                        message: format!(
                            "this sink's progress row ({sink_id}) reads {v:?}, expected {prev} or {}; another process changed it",
                            attempt.flush
                        ),
                    },
                    Err(e) if is_lost(&e) => Outcome::Lost(message(&e)),
                    Err(e) => Outcome::Failed {
                        table: PROGRESS_TABLE.into(),
                        message: message(&e),
                    },
                }
            }
            Err(TxError::Lost(e)) => Outcome::Lost(e),
            Err(TxError::Failed { table, message }) => Outcome::Failed { table, message },
            Err(TxError::OtherTape(theirs)) => Outcome::OtherTape(theirs),
        };
        if let Outcome::Committed { .. } = outcome {
            self.readings.exists |=
                self.readings.columns.is_some() && plans_touch(&plans, &self.readings.name);
            self.blocks.exists |=
                self.blocks.columns.is_some() && plans_touch(&plans, &self.blocks.name);
        }
        drop(plans);
        self.session = Some(session);
        outcome
    }
}

fn plans_touch(plans: &[Plan<'_>], table: &str) -> bool {
    plans.iter().any(|p| p.0 == table)
}

/// A table's part of a transaction: name, qualified name, columns (index, type, name), batches.
type Plan<'a> = (
    String,
    String,
    Vec<(usize, PgType, String)>,
    Vec<&'a RecordBatch>,
);

/// The progress-row move a transaction makes: this sink's row from `prev` to `flush`, adding
/// `rows`; `sync` commits it synchronously.
struct Step<'a> {
    sink_id: &'a String,
    flush: i64,
    rows: i64,
    prev: i64,
    sync: bool,
    /// A delivery's cursor after this transaction (`None` outside a delivery).
    tape_seq: Option<i64>,
    /// The sink's first transaction: it writes the progress row.
    first: Option<First<'a>>,
}

/// What the first transaction needs to write the progress row.
struct First<'a> {
    /// `schema.table`.
    table_key: &'a String,
    /// A delivery from a tape: check (under an advisory lock) that no other tape's delivery
    /// holds the table.
    delivery: bool,
}

impl Step<'_> {
    /// The parameters of the prepared progress update.
    fn params(&self) -> [&(dyn ToSql + Sync); 5] {
        [
            self.sink_id,
            &self.flush,
            &self.rows,
            &self.prev,
            &self.tape_seq,
        ]
    }
}

/// `BEGIN`, synchronous for this transaction when asked.
fn begin_sql(sync: bool) -> &'static str {
    if sync {
        "BEGIN; SET LOCAL synchronous_commit = on"
    } else {
        "BEGIN"
    }
}

/// How a transaction failed.
enum TxError {
    Lost(String),
    Failed {
        table: String,
        message: String,
    },
    /// Another tape's delivery holds the table (its row key); rolled back.
    OtherTape(String),
}

fn classify(table: &str, e: &tokio_postgres::Error) -> TxError {
    if is_lost(e) {
        TxError::Lost(message(e))
    } else {
        TxError::Failed {
            table: table.to_string(),
            message: message(e),
        }
    }
}

/// `BEGIN`, advance the progress row, write each table, `COMMIT`. `Ok(None)` when the progress
/// row did not match (rolled back); `Ok(Some(bytes))` when committed.
async fn run_transaction(
    session: &mut Session,
    ddl: &[String],
    plans: &[Plan<'_>],
    use_copy: bool,
    step: Step<'_>,
    first_row: u64,
) -> std::result::Result<Option<u64>, TxError> {
    if let ([plan], true, true, None) = (plans, ddl.is_empty(), use_copy, &step.first) {
        return copy_pipelined(session, plan, step, first_row).await;
    }
    let client = &session.client;
    let advanced = match &step.first {
        None => {
            let begin = client.batch_execute(begin_sql(step.sync));
            let params = step.params();
            let advance = client.execute(&session.advance, &params);
            let (begin, advanced) = futures_util::future::join(begin, advance).await;
            begin.map_err(|e| classify(PROGRESS_TABLE, &e))?;
            advanced.map_err(|e| classify(PROGRESS_TABLE, &e))?
        }
        Some(first) => {
            client
                .batch_execute(begin_sql(step.sync))
                .await
                .map_err(|e| classify(PROGRESS_TABLE, &e))?;
            let registered = async {
                if first.delivery {
                    // One delivery at a time past this point for this table, until COMMIT: the
                    // check for another tape and the insert of this delivery's row are one step.
                    client
                        .query_one(
                            "SELECT pg_advisory_xact_lock(hashtext('tapedeck_cursor:' || $1))",
                            &[first.table_key as &(dyn ToSql + Sync)],
                        )
                        .await?;
                    let others = format!(
                        "SELECT sink FROM {} WHERE target_table = $1 AND sink LIKE 'tape:%' AND sink <> $2 \
                         ORDER BY sink LIMIT 1",
                        session.progress
                    );
                    if let Some(row) = client
                        .query_opt(&others, &[first.table_key as &(dyn ToSql + Sync), step.sink_id])
                        .await?
                    {
                        return Ok(Err(row.try_get::<_, String>(0)?));
                    }
                }
                let p = step.params();
                let params = [p[0], p[1], p[2], p[3], p[4], first.table_key as &(dyn ToSql + Sync)];
                client.execute(&session.register, &params).await.map(Ok)
            }
            .await;
            match registered {
                Ok(Ok(n)) => n,
                Ok(Err(theirs)) => {
                    client
                        .batch_execute("ROLLBACK")
                        .await
                        .map_err(|e| classify(PROGRESS_TABLE, &e))?;
                    return Err(TxError::OtherTape(theirs));
                }
                Err(e) => {
                    let failure = classify(PROGRESS_TABLE, &e);
                    if let TxError::Failed { .. } = failure {
                        let _ = client.batch_execute("ROLLBACK").await;
                    }
                    return Err(failure);
                }
            }
        }
    };
    if advanced != 1 {
        client
            .batch_execute("ROLLBACK")
            .await
            .map_err(|e| classify(PROGRESS_TABLE, &e))?;
        return Ok(None);
    }
    for sql in ddl {
        client
            .batch_execute(sql)
            .await
            .map_err(|e| classify(&plans.first().map_or(String::new(), |p| p.0.clone()), &e))?;
    }
    let mut bytes = 0u64;
    for (name, qualified, columns, batches) in plans {
        let result = if use_copy {
            copy_table(session, qualified, columns, batches, first_row).await
        } else {
            insert_table(&session.client, qualified, columns, batches, first_row).await
        };
        match result {
            Ok(n) => bytes += n,
            Err(CopyError::Db(e)) => {
                let failure = classify(name, &e);
                if let TxError::Failed { .. } = failure {
                    let _ = session.client.batch_execute("ROLLBACK").await;
                }
                return Err(failure);
            }
            Err(CopyError::Data(e)) => {
                let _ = session.client.batch_execute("ROLLBACK").await;
                return Err(TxError::Failed {
                    table: name.clone(),
                    message: e.to_string(),
                });
            }
        }
    }
    session
        .client
        .batch_execute("COMMIT")
        .await
        .map_err(|e| classify(PROGRESS_TABLE, &e))?;
    Ok(Some(bytes))
}

/// The common flush — one table, table exists, COPY — in two round trips: `BEGIN`, the
/// progress update and the start of the COPY go out together; then the COPY data with `COMMIT`
/// right behind it. The rows are encoded before anything is sent, so a value that does not fit
/// never reaches the server.
async fn copy_pipelined(
    session: &mut Session,
    plan: &Plan<'_>,
    step: Step<'_>,
    first_row: u64,
) -> std::result::Result<Option<u64>, TxError> {
    let (name, qualified, columns, batches) = plan;
    let failed = |e: Error| TxError::Failed {
        table: name.clone(),
        message: e.to_string(),
    };
    let payload = encode_copy(columns, batches, first_row).map_err(failed)?;
    let statement = copy_statement(session, qualified, columns)
        .await
        .map_err(|e| classify(name, &e))?;
    let client = &session.client;
    let params = step.params();
    let (begin, advanced, copy) = futures_util::future::join3(
        client.batch_execute(begin_sql(step.sync)),
        client.execute(&session.advance, &params),
        client.copy_in::<_, bytes::Bytes>(&statement),
    )
    .await;
    let started = begin
        .map_err(|e| classify(PROGRESS_TABLE, &e))
        .and_then(|()| advanced.map_err(|e| classify(PROGRESS_TABLE, &e)));
    let (advanced, sink) = match (started, copy) {
        (Ok(n), Ok(sink)) => (n, sink),
        // The progress update or the COPY start failed: the transaction is aborted.
        (Err(e), _) => {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(e);
        }
        (Ok(_), Err(e)) => {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(classify(name, &e));
        }
    };
    futures_util::pin_mut!(sink);
    if advanced != 1 {
        // An earlier attempt committed (or the row moved): end the COPY empty and roll back.
        let mut empty = BytesMut::new();
        encode::copy_header(&mut empty);
        encode::copy_trailer(&mut empty);
        let ended = async {
            sink.send(empty.freeze()).await?;
            sink.as_mut().finish().await
        }
        .await;
        let rolled = client.batch_execute("ROLLBACK").await;
        ended.map_err(|e| classify(name, &e))?;
        rolled.map_err(|e| classify(PROGRESS_TABLE, &e))?;
        return Ok(None);
    }
    let bytes: u64 = payload.iter().map(|b| b.len() as u64).sum();
    let sent = async {
        for chunk in payload {
            sink.feed(chunk).await?;
        }
        sink.flush().await?;
        sink.as_mut().finish().await
    };
    // COMMIT goes out right after the COPY's end; if the COPY failed, the server answers the
    // COMMIT of the aborted transaction with a rollback, and the COPY's error is what counts.
    let (sent, committed) = futures_util::future::join(sent, client.batch_execute("COMMIT")).await;
    sent.map_err(|e| classify(name, &e))?;
    committed.map_err(|e| classify(PROGRESS_TABLE, &e))?;
    Ok(Some(bytes))
}

/// The prepared `COPY … FROM STDIN (FORMAT binary)` for these columns (prepared once per
/// connection).
async fn copy_statement(
    session: &mut Session,
    qualified: &str,
    columns: &[(usize, PgType, String)],
) -> std::result::Result<Statement, tokio_postgres::Error> {
    let sql = format!(
        "COPY {qualified} ({}) FROM STDIN (FORMAT binary)",
        column_list(columns)
    );
    if let Some(s) = session.copies.get(&sql) {
        return Ok(s.clone());
    }
    let s = session.client.prepare(&sql).await?;
    session.copies.insert(sql, s.clone());
    Ok(s)
}

/// The whole binary COPY stream of `batches`, in messages of about `COPY_CHUNK` bytes.
fn encode_copy(
    columns: &[(usize, PgType, String)],
    batches: &[&RecordBatch],
    first_row: u64,
) -> Result<Vec<bytes::Bytes>> {
    let picks: Vec<(usize, PgType)> = columns.iter().map(|c| (c.0, c.1)).collect();
    let mut chunks = Vec::new();
    let mut buf = BytesMut::with_capacity(4096);
    encode::copy_header(&mut buf);
    let mut row = first_row;
    for batch in batches {
        encode::copy_rows(batch, &picks, row, &mut buf)?;
        row += batch.num_rows() as u64;
        if buf.len() >= COPY_CHUNK {
            chunks.push(buf.split().freeze());
        }
    }
    encode::copy_trailer(&mut buf);
    chunks.push(buf.freeze());
    Ok(chunks)
}

enum CopyError {
    Db(tokio_postgres::Error),
    Data(Error),
}

impl From<tokio_postgres::Error> for CopyError {
    fn from(e: tokio_postgres::Error) -> Self {
        CopyError::Db(e)
    }
}

fn column_list(columns: &[(usize, PgType, String)]) -> String {
    columns
        .iter()
        .map(|c| quote_ident(&c.2))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Binary bytes sent per COPY data message.
const COPY_CHUNK: usize = 256 * 1024;

async fn copy_table(
    session: &mut Session,
    qualified: &str,
    columns: &[(usize, PgType, String)],
    batches: &[&RecordBatch],
    first_row: u64,
) -> std::result::Result<u64, CopyError> {
    let payload = encode_copy(columns, batches, first_row).map_err(CopyError::Data)?;
    let statement = copy_statement(session, qualified, columns).await?;
    let sink = session
        .client
        .copy_in::<_, bytes::Bytes>(&statement)
        .await?;
    futures_util::pin_mut!(sink);
    let bytes: u64 = payload.iter().map(|b| b.len() as u64).sum();
    for chunk in payload {
        sink.feed(chunk).await?;
    }
    sink.flush().await?;
    sink.as_mut().finish().await?;
    Ok(bytes)
}

async fn insert_table(
    client: &Client,
    qualified: &str,
    columns: &[(usize, PgType, String)],
    batches: &[&RecordBatch],
    first_row: u64,
) -> std::result::Result<u64, CopyError> {
    let picks: Vec<(usize, PgType)> = columns.iter().map(|c| (c.0, c.1)).collect();
    let types: Vec<Type> = columns.iter().map(|c| c.1.wire()).collect();
    let width = columns.len().max(1);
    let per_statement = (MAX_PARAMS / width).clamp(1, 1000);
    let mut statements: HashMap<usize, Statement> = HashMap::new();
    let mut sent = 0u64;
    let mut row = first_row;
    for batch in batches {
        let params = encode::Param::rows(batch, &picks, row).map_err(CopyError::Data)?;
        row += batch.num_rows() as u64;
        for chunk in params.chunks(per_statement * width) {
            let n = chunk.len() / width;
            let statement = match statements.get(&n) {
                Some(s) => s.clone(),
                None => {
                    let mut p = 0;
                    let values: Vec<String> = (0..n)
                        .map(|_| {
                            let one: Vec<String> = (0..width)
                                .map(|_| {
                                    p += 1;
                                    format!("${p}")
                                })
                                .collect();
                            format!("({})", one.join(","))
                        })
                        .collect();
                    let sql = format!(
                        "INSERT INTO {qualified} ({}) VALUES {}",
                        column_list(columns),
                        values.join(",")
                    );
                    let all_types: Vec<Type> = (0..n).flat_map(|_| types.iter().cloned()).collect();
                    let s = client.prepare_typed(&sql, &all_types).await?;
                    statements.insert(n, s.clone());
                    s
                }
            };
            let refs: Vec<&(dyn ToSql + Sync)> =
                chunk.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            sent += client.execute(&statement, &refs).await?;
        }
    }
    Ok(sent)
}

/// The connection is gone (or the server is shutting down): the outcome of what was in flight
/// is unknown and a reconnect may help.
fn is_lost(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            let c = code.code();
            c.starts_with("08") || c.starts_with("57P") || c == "53300"
        }
        // No server error: an I/O or protocol failure on the socket.
        None => e.as_db_error().is_none(),
    }
}

/// The connection was lost, or the server is going away or cannot take the session now — as
/// opposed to a server refusing what was asked. Decides which failures while the sink opens are
/// [`Error::Connect`] (a delivery retries those): the connection closed, an I/O error on the
/// socket, SQLSTATE class 08 (connection exception), 57P01 / 57P02 / 57P03 (administrator or
/// crash shutdown, cannot connect now) and 53300 (too many connections).
fn connection_lost(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        let c = code.code();
        return c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03" | "53300");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// The driver's message, with the server's detail and hint when it sent them. Never holds the
/// password: tokio-postgres does not put connection parameters in its errors.
fn message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut m = format!("{} ({})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                m.push_str(&format!("; {d}"));
            }
            if let Some(h) = db.hint() {
                m.push_str(&format!("; hint: {h}"));
            }
            m
        }
        None => {
            let mut m = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                let more = s.to_string();
                if !m.contains(&more) {
                    m.push_str(&format!(": {more}"));
                }
                source = s.source();
            }
            m
        }
    }
}

impl Sink for PostgresSink {
    fn name(&self) -> &str {
        self.life.name()
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.hold(batch, false)
    }

    fn write_block(&mut self, block: &Block) -> Result<()> {
        let batch = self.options.blocks.batch(block)?;
        self.hold(&batch, true)
    }

    fn flush(&mut self) -> Result<()> {
        self.life.check_open()?;
        self.move_held();
        self.commit_pending(false)
    }

    fn close(&mut self) -> Result<()> {
        if !self.life.begin_close() {
            return Ok(());
        }
        self.move_held();
        let delivered = self.commit_pending(true);
        if let Some(session) = self.session.take() {
            let Session {
                client, connection, ..
            } = session;
            // Dropping the client sends Terminate; the connection task then ends. A server that
            // does not answer within close_timeout is left behind.
            drop(client);
            let closed = self.rt.block_on(async {
                tokio::time::timeout(self.options.close_timeout, connection).await
            });
            if closed.is_err() {
                tracing::warn!(table = %self.options.table_address(), "connection did not close within close_timeout; dropped it");
            }
        }
        delivered
    }

    fn prefers_own_thread(&self) -> bool {
        true
    }

    fn stats(&self) -> SinkStats {
        SinkStats {
            rows: self.rows,
            bytes: self.bytes,
            pending: (self.pending_rows + self.held.rows) as u64,
        }
    }
}

impl Drop for PostgresSink {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl crate::sink::resume::CursorSink for PostgresSink {
    fn committed_cursor(&self) -> Option<u64> {
        self.cursor_base.map(|b| b + self.rows)
    }

    fn skip_cursor(&mut self, rows: u64) {
        if let Some(b) = &mut self.cursor_base {
            *b += rows;
        }
    }
}
