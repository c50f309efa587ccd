//! `postgres://user:password@host:port/db?table=T&schema=S&…` — what the URI says, checked.
//!
//! The password is kept in a [`Secret`] whose `Debug` shows `***`, and nothing here formats it
//! into a string: the sink names its table as `host:port/db.schema.table` ([`PostgresOptions::table_address`]).
//! A missing password is taken from `PGPASSWORD`, as libpq does.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::sink::Sink;
use crate::sink::resume::{ResumeBy, WithCursor};
use crate::sink::spec::{Claims, SinkConfig};
use crate::sink::sql::{BlockRows, check_ident};
pub use crate::uri::Secret;
use crate::uri::{Authority, Uri};

/// Options of the PostgreSQL sink (the reference libraries' `PostgresConfig`, plus what a
/// server going away needs).
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Server host name or address (default `localhost`).
    pub host: String,
    /// Server port (default 5432).
    pub port: u16,
    /// Role (default `postgres`).
    pub user: String,
    /// Password (from the URI, else `PGPASSWORD`).
    pub password: Option<Secret>,
    /// Database (default: the role's name).
    pub dbname: String,
    /// Schema of the tables (default `public`).
    pub schema: String,
    /// Table for rows (default `readings`).
    pub table: String,
    /// Table for blocks (default `blocks`).
    pub blocks_table: String,
    /// How blocks are stored.
    pub blocks: BlockRows,
    /// Create missing tables from the first batch (default true, as for SQLite; false
    /// insists on an existing table, whose columns lock the schema).
    pub create_table: bool,
    /// Write with binary COPY (default); false uses prepared multi-row INSERTs, for roles
    /// without COPY.
    pub use_copy: bool,
    /// Cap on establishing a connection (default 30 s).
    pub connect_timeout: Duration,
    /// `statement_timeout`, sent as a server setting (default 30 s).
    pub statement_timeout: Duration,
    /// Cap on closing: after it the connection is dropped (default 10 s).
    pub close_timeout: Duration,
    /// `application_name` (default `tapedeck`).
    pub application_name: String,
    /// `synchronous_commit` for the sink's session (default `off`; see the module docs).
    pub synchronous_commit: String,
    /// How long the sink keeps trying to reach a server that went away before it fails
    /// (default 5 min).
    pub retry_for: Duration,
    /// Rows the sink holds while the server is away; beyond it, writes wait (default 1,000,000).
    pub buffer_rows: usize,
    /// Unknown columns are an error.
    pub strict: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            host: "localhost".into(),
            port: 5432,
            user: "postgres".into(),
            password: None,
            dbname: "postgres".into(),
            schema: "public".into(),
            table: "readings".into(),
            blocks_table: "blocks".into(),
            blocks: BlockRows::Summary,
            create_table: true,
            use_copy: true,
            connect_timeout: Duration::from_secs(30),
            statement_timeout: Duration::from_secs(30),
            close_timeout: Duration::from_secs(10),
            application_name: "tapedeck".into(),
            synchronous_commit: "off".into(),
            retry_for: Duration::from_secs(300),
            buffer_rows: 1_000_000,
            strict: false,
        }
    }
}

impl PostgresOptions {
    /// Reads a `postgres://` or `postgresql://` URI.
    ///
    /// ```
    /// use tapedeck::sink::postgres::PostgresOptions;
    /// let o = PostgresOptions::from_uri("postgres://lab:pw@db.local:6543/plant?table=flow&schema=raw").unwrap();
    /// assert_eq!(o.table_address(), "db.local:6543/plant.raw.flow");
    /// assert!(!format!("{o:?}").contains("pw"));
    /// ```
    pub fn from_uri(uri: &str) -> Result<PostgresOptions> {
        let mut uri = Uri::parse(uri)?;
        PostgresOptions::from_parsed(&mut uri)
    }

    pub(crate) fn from_parsed(uri: &mut Uri) -> Result<PostgresOptions> {
        let shown = uri.shown().to_string();
        let malformed = |reason: &str| Error::MalformedUri {
            uri: shown.clone(),
            reason: reason.to_string(),
        };
        let Some(Authority {
            user,
            password,
            host,
            port,
            path: dbname,
        }) = Authority::split(&uri.path).map_err(|reason| malformed(&reason))?
        else {
            return Err(malformed(
                "write it as postgres://user[:password]@host[:port]/database?table=T",
            ));
        };
        let d = PostgresOptions::default();
        let user = user.unwrap_or(d.user);
        let p = &mut uri.params;
        let duration = |p: &mut crate::uri::Params, key, default| -> Result<Duration> {
            Ok(p.duration(key)?.unwrap_or(default))
        };
        let options = PostgresOptions {
            host: if host.is_empty() { d.host } else { host },
            port: port.unwrap_or(d.port),
            dbname: if dbname.is_empty() {
                user.clone()
            } else {
                dbname.to_string()
            },
            user,
            password: password.or_else(|| std::env::var("PGPASSWORD").ok().map(Secret::new)),
            schema: p.raw("schema").map_or(d.schema, str::to_string),
            table: p.raw("table").map_or(d.table, str::to_string),
            blocks_table: p.raw("blocks_table").map_or(d.blocks_table, str::to_string),
            blocks: match p.choice("blocks", &["summary", "long"])? {
                Some("long") => BlockRows::Long,
                _ => BlockRows::Summary,
            },
            create_table: p.flag_or("create_table", d.create_table)?,
            use_copy: p.flag_or("use_copy", d.use_copy)?,
            connect_timeout: duration(p, "connect_timeout", d.connect_timeout)?,
            statement_timeout: duration(p, "statement_timeout", d.statement_timeout)?,
            close_timeout: duration(p, "close_timeout", d.close_timeout)?,
            application_name: p
                .raw("application_name")
                .map_or(d.application_name, str::to_string),
            synchronous_commit: p
                .choice(
                    "synchronous_commit",
                    &["off", "local", "remote_write", "on", "remote_apply"],
                )?
                .map_or(d.synchronous_commit, str::to_string),
            retry_for: duration(p, "retry_for", d.retry_for)?,
            buffer_rows: p
                .parse::<usize>("buffer_rows", "a number of rows")?
                .unwrap_or(d.buffer_rows),
            strict: p.flag("strict")?,
        };
        if let Some(mode) = p.raw("sslmode")
            && mode != "disable"
            && mode != "prefer"
        {
            return Err(Error::BadParam {
                uri: shown.clone(),
                param: "sslmode".into(),
                value: mode.to_string(),
                expected: "disable or prefer: this build of tapedeck connects without TLS".into(),
            });
        }
        p.finish()?;
        check_ident(&options.schema, "schema", &shown)?;
        check_ident(&options.table, "table", &shown)?;
        check_ident(&options.blocks_table, "blocks_table", &shown)?;
        if options.connect_timeout.is_zero() || options.close_timeout.is_zero() {
            return Err(Error::BadParam {
                uri: shown,
                param: "connect_timeout / close_timeout".into(),
                value: "0".into(),
                expected: "a positive duration such as 5s".into(),
            });
        }
        Ok(options)
    }

    /// `host:port/db` — the database, as errors name it.
    pub fn database(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.dbname)
    }

    /// `host:port/db.schema.table` — the table the sink writes, free of credentials.
    pub fn table_address(&self) -> String {
        format!("{}.{}.{}", self.database(), self.schema, self.table)
    }
}

/// Reads a `postgres://` URI (the registry's `parse`).
pub(crate) fn parse(uri: &mut Uri) -> Result<Arc<dyn SinkConfig>> {
    Ok(Arc::new(super::PostgresSink::options_from_uri(uri)?))
}

impl SinkConfig for PostgresOptions {
    fn describe(&self) -> String {
        format!("postgres:{}", self.table_address())
    }

    fn claims(&self) -> Claims {
        Claims {
            tables: vec![format!(
                "table {}:{}/{}.{}.{}",
                self.host.to_ascii_lowercase(),
                self.port,
                self.dbname,
                self.schema,
                self.table
            )],
            ..Claims::default()
        }
    }

    fn open(&self) -> Result<Box<dyn Sink>> {
        Ok(Box::new(super::PostgresSink::open(self.clone())?))
    }

    fn resume_by(&self) -> ResumeBy {
        let options = self.clone();
        ResumeBy::CursorInTransaction(Box::new(move |tape, start| {
            let (sink, resume) = super::PostgresSink::open_delivery(options, &tape.id, start)?;
            Ok(WithCursor {
                sink: Box::new(sink),
                resume,
                lock: None,
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_part() {
        let o = PostgresOptions::from_uri(
            "postgres://me:p%40ss%2Fw@[::1]:6000/lab?table=t1&schema=s1&create_table=true&use_copy=false&connect_timeout=2s&synchronous_commit=on&buffer_rows=10",
        )
        .unwrap();
        assert_eq!(o.host, "::1");
        assert_eq!(o.port, 6000);
        assert_eq!(o.user, "me");
        assert_eq!(o.password.as_ref().map(Secret::expose), Some("p@ss/w"));
        assert_eq!(o.dbname, "lab");
        assert_eq!((o.schema.as_str(), o.table.as_str()), ("s1", "t1"));
        assert!(o.create_table && !o.use_copy);
        assert_eq!(o.connect_timeout, Duration::from_secs(2));
        assert_eq!(o.synchronous_commit, "on");
        assert_eq!(o.buffer_rows, 10);
        assert!(!format!("{o:?}").contains("p@ss"));
    }

    #[test]
    fn defaults() {
        let o = PostgresOptions::from_uri("postgresql://db").unwrap();
        assert_eq!(o.table_address(), "db:5432/postgres.public.readings");
        assert!(o.create_table && o.use_copy);
        let o = PostgresOptions::from_uri("postgresql://db?create_table=false").unwrap();
        assert!(!o.create_table);
        assert_eq!(o.statement_timeout, Duration::from_secs(30));
        assert_eq!(o.close_timeout, Duration::from_secs(10));
        assert_eq!(o.application_name, "tapedeck");
    }

    #[test]
    fn bad_uris_name_the_problem_without_the_password() {
        for (uri, needle) in [
            ("postgres:db/x", "postgres://user"),
            ("postgres://u:secret@h:99999/db", "port"),
            ("postgres://u:secret@h/db?table=a-b", "table"),
            ("postgres://u:secret@h/db?schema=1s", "schema"),
            ("postgres://u:secret@h/db?tabel=x", "tabel"),
            ("postgres://u:secret@h/db?sslmode=require", "TLS"),
            ("postgres://u:secret@h/db?connect_timeout=0s", "positive"),
            (
                "postgres://u:secret@h/db?synchronous_commit=maybe",
                "synchronous_commit",
            ),
        ] {
            let e = PostgresOptions::from_uri(uri).unwrap_err().to_string();
            assert!(e.contains(needle), "{uri}: {e}");
            assert!(!e.contains("secret"), "{uri}: {e}");
        }
    }
}
