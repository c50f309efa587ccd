//! What each sink says about itself: [`SinkDescriptor`] (its schemes, a summary, its URI
//! parameters with their defaults, the cargo feature it needs) and the registry of them,
//! [`descriptors`]. The unknown-scheme, unknown-parameter and "feature not compiled in" errors,
//! the CLI's sink help and `tapedeck sinks` are all made from the registry.
//!
//! Each sink module exports its `DESCRIPTOR`, whose `parse` reads a URI into the sink's
//! [`super::SinkConfig`] (path and options; how to open it and how a delivery resumes it). The descriptors of the sinks behind a cargo
//! feature (SQLite, Parquet, PostgreSQL, NATS) are written here, beside the registry, so that a build
//! leaving the feature out still lists them (as not compiled in); their modules re-export them.

use serde::Serialize;

use super::spec::ParseFn;

/// One URI parameter of a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ParamDescriptor {
    /// The key, as written in the URI (`overwrite`).
    pub name: &'static str,
    /// Its type or its accepted values (`bool`, `rows`, `zstd|snappy|lz4|gzip|none`).
    pub kind: &'static str,
    /// The value when the parameter is absent, as the user would write it (empty: none).
    pub default: &'static str,
    /// One line saying what it does.
    pub doc: &'static str,
}

/// Everything the registry knows about one sink; see the module docs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SinkDescriptor {
    /// The URI schemes, the main one first (`jsonl`, then its alias `ndjson`).
    pub schemes: &'static [&'static str],
    /// How a URI of this sink is written, e.g. `csv:PATH`.
    pub usage: &'static str,
    /// A URI that names such a sink, e.g. `csv:run.csv`.
    pub example: &'static str,
    /// What the sink writes, in one or two sentences (the wording of `record --help`).
    pub summary: &'static str,
    /// An example path for the message when the path after `scheme:` is missing (`None` for
    /// sinks that take no path).
    pub path_example: Option<&'static str>,
    /// Every URI parameter the sink reads, in the order the help lists them.
    pub params: &'static [ParamDescriptor],
    /// The cargo feature the sink needs, if any.
    pub feature: Option<&'static str>,
    /// Whether this build includes the sink (its feature is on, or it needs none).
    pub compiled_in: bool,
    /// Reads a URI of this sink into its path and options (`None` when not compiled in).
    #[serde(skip)]
    pub parse: Option<ParseFn>,
}

impl SinkDescriptor {
    /// The main scheme (`csv`, `postgres`).
    pub fn scheme(&self) -> &'static str {
        self.schemes[0]
    }

    /// The parameter names, sorted and comma-separated, as the unknown-parameter error lists
    /// them (`(none)` for a sink without parameters).
    pub fn param_list(&self) -> String {
        let mut names: Vec<&str> = self.params.iter().map(|p| p.name).collect();
        names.sort_unstable();
        names.dedup();
        if names.is_empty() {
            "(none)".into()
        } else {
            names.join(", ")
        }
    }
}

/// Every sink, in the order help and errors list them, including those whose cargo feature
/// this build leaves out ([`SinkDescriptor::compiled_in`] is false for them).
///
/// ```
/// let csv = tapedeck::sink::descriptors().iter().find(|d| d.scheme() == "csv").unwrap();
/// assert!(csv.compiled_in && csv.params.iter().any(|p| p.name == "overwrite"));
/// ```
pub fn descriptors() -> &'static [SinkDescriptor] {
    const ALL: &[SinkDescriptor] = &[
        super::csv::DESCRIPTOR,
        super::jsonl::DESCRIPTOR,
        super::ipc::DESCRIPTOR,
        SQLITE,
        PARQUET,
        POSTGRES,
        NATS,
        super::raw::DESCRIPTOR,
        super::memory::DESCRIPTOR,
        super::null::DESCRIPTOR,
    ];
    ALL
}

/// The descriptor whose schemes include `scheme`, compiled in or not.
pub fn find(scheme: &str) -> Option<&'static SinkDescriptor> {
    descriptors().iter().find(|d| d.schemes.contains(&scheme))
}

/// The main schemes of the sinks this build includes, in registry order.
pub fn schemes() -> Vec<&'static str> {
    descriptors()
        .iter()
        .filter(|d| d.compiled_in)
        .map(SinkDescriptor::scheme)
        .collect()
}

/// `overwrite`, shared by the file sinks.
pub(crate) const OVERWRITE: ParamDescriptor = ParamDescriptor {
    name: "overwrite",
    kind: "bool",
    default: "false",
    doc: "replace an existing file (without it, an existing file is an error)",
};

/// `append`, shared by the text file sinks.
pub(crate) const APPEND: ParamDescriptor = ParamDescriptor {
    name: "append",
    kind: "bool",
    default: "false",
    doc: "append to an existing file (not with overwrite)",
};

/// `accept_blocks`, shared by the text file sinks.
pub(crate) const ACCEPT_BLOCKS: ParamDescriptor = ParamDescriptor {
    name: "accept_blocks",
    kind: "bool",
    default: "false",
    doc: "write DAQ blocks (one row per channel and sample) instead of refusing them",
};

/// `strict`, shared by the sinks with a schema.
pub(crate) const STRICT: ParamDescriptor = ParamDescriptor {
    name: "strict",
    kind: "bool",
    default: "false",
    doc: "a column the locked schema lacks is an error (without it, it is dropped with a warning)",
};

const TABLE: ParamDescriptor = ParamDescriptor {
    name: "table",
    kind: "name",
    default: "readings",
    doc: "the table rows go to",
};

const BLOCKS_TABLE: ParamDescriptor = ParamDescriptor {
    name: "blocks_table",
    kind: "name",
    default: "blocks",
    doc: "the table DAQ blocks go to",
};

const CREATE_TABLE: ParamDescriptor = ParamDescriptor {
    name: "create_table",
    kind: "bool",
    default: "true",
    doc: "create a missing table (false: the table must exist)",
};

const DB_BLOCKS: ParamDescriptor = ParamDescriptor {
    name: "blocks",
    kind: "summary|long",
    default: "summary",
    doc: "a DAQ block as one summary row per channel, or one row per channel and sample",
};

/// `sqlite:PATH` (cargo feature `sqlite`).
pub const SQLITE: SinkDescriptor = SinkDescriptor {
    schemes: &["sqlite"],
    usage: "sqlite:PATH",
    example: "sqlite:lab.db",
    summary: "SQLite database; table (readings), blocks_table (blocks), blocks=summary|long, \
              create_table, timestamps=iso|unix_us, journal_mode, synchronous, busy_timeout, \
              strict. One transaction per flush.",
    path_example: Some("lab.db"),
    params: &[
        TABLE,
        BLOCKS_TABLE,
        DB_BLOCKS,
        CREATE_TABLE,
        ParamDescriptor {
            name: "timestamps",
            kind: "iso|unix_us",
            default: "iso",
            doc: "timestamps as ISO 8601 text or integer microseconds",
        },
        ParamDescriptor {
            name: "journal_mode",
            kind: "WAL|DELETE|TRUNCATE|PERSIST|MEMORY|OFF",
            default: "WAL",
            doc: "PRAGMA journal_mode on open",
        },
        ParamDescriptor {
            name: "synchronous",
            kind: "OFF|NORMAL|FULL|EXTRA",
            default: "NORMAL",
            doc: "PRAGMA synchronous on open",
        },
        ParamDescriptor {
            name: "busy_timeout",
            kind: "milliseconds",
            default: "5000",
            doc: "how long to wait for another writer of the database",
        },
        STRICT,
    ],
    feature: Some("sqlite"),
    compiled_in: cfg!(feature = "sqlite"),
    #[cfg(feature = "sqlite")]
    parse: Some(super::sqlite::parse),
    #[cfg(not(feature = "sqlite"))]
    parse: None,
};

/// `parquet:PATH` or `parquet:DIR/` (cargo feature `parquet`).
pub const PARQUET: SinkDescriptor = SinkDescriptor {
    schemes: &["parquet"],
    usage: "parquet:PATH",
    example: "parquet:run.parquet",
    summary: "one Parquet file, visible only once complete; parquet:DIR/ rolling parts \
              (roll_rows, roll_interval); compression=zstd|snappy|lz4|gzip|none, level, \
              dictionary, row_group_rows (131072), blocks=wide|long, overwrite, strict",
    path_example: Some("run.parquet` (one file) or `parquet:parts/` (rolling parts"),
    params: &[
        ParamDescriptor {
            name: "compression",
            kind: "zstd|snappy|lz4|gzip|none",
            default: "zstd",
            doc: "the page compression codec",
        },
        ParamDescriptor {
            name: "level",
            kind: "integer",
            default: "3 (zstd), 6 (gzip)",
            doc: "compression level: zstd 1-22, gzip 0-9; none for the other codecs",
        },
        ParamDescriptor {
            name: "dictionary",
            kind: "bool",
            default: "true",
            doc: "dictionary encoding",
        },
        ParamDescriptor {
            name: "row_group_rows",
            kind: "rows",
            default: "131072",
            doc: "rows per row group (at least 1)",
        },
        ParamDescriptor {
            name: "roll_rows",
            kind: "rows",
            default: "",
            doc: "parquet:DIR/ only: finish a part after this many rows (at least 1)",
        },
        ParamDescriptor {
            name: "roll_interval",
            kind: "duration",
            default: "",
            doc: "parquet:DIR/ only: finish a part when it is this old",
        },
        ParamDescriptor {
            name: "blocks",
            kind: "wide|long",
            default: "wide",
            doc: "a DAQ block as one column per channel, or one row per channel and sample",
        },
        OVERWRITE,
        STRICT,
    ],
    feature: Some("parquet"),
    compiled_in: cfg!(feature = "parquet"),
    #[cfg(feature = "parquet")]
    parse: Some(super::parquet::parse),
    #[cfg(not(feature = "parquet"))]
    parse: None,
};

/// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` (cargo feature `postgres`).
pub const POSTGRES: SinkDescriptor = SinkDescriptor {
    schemes: &["postgres", "postgresql"],
    usage: "postgres://USER[:PASSWORD]@HOST[:PORT]/DB",
    example: "postgres://lab@localhost:5432/plant",
    summary: "PostgreSQL over binary COPY, one transaction per flush; schema (public), \
              table (readings), blocks_table (blocks), blocks, create_table (true; \
              false: the table must exist), use_copy, connect_timeout (30s), statement_timeout (30s), \
              close_timeout (10s), application_name, synchronous_commit (off), retry_for (5m), \
              buffer_rows (1000000), strict. Reconnects if the server goes away, holding rows \
              (the progress line says the sink is behind) and writing each exactly once.",
    path_example: None,
    params: &[
        ParamDescriptor {
            name: "schema",
            kind: "name",
            default: "public",
            doc: "the schema of the tables",
        },
        TABLE,
        BLOCKS_TABLE,
        DB_BLOCKS,
        CREATE_TABLE,
        ParamDescriptor {
            name: "use_copy",
            kind: "bool",
            default: "true",
            doc: "binary COPY (false: prepared multi-row INSERTs)",
        },
        ParamDescriptor {
            name: "connect_timeout",
            kind: "duration",
            default: "30s",
            doc: "cap on each connection attempt",
        },
        ParamDescriptor {
            name: "statement_timeout",
            kind: "duration",
            default: "30s",
            doc: "the server's statement_timeout for the session",
        },
        ParamDescriptor {
            name: "close_timeout",
            kind: "duration",
            default: "10s",
            doc: "how long close waits for the last commit",
        },
        ParamDescriptor {
            name: "application_name",
            kind: "text",
            default: "tapedeck",
            doc: "the session's application_name",
        },
        ParamDescriptor {
            name: "synchronous_commit",
            kind: "off|local|remote_write|on|remote_apply",
            default: "off",
            doc: "the session's synchronous_commit",
        },
        ParamDescriptor {
            name: "retry_for",
            kind: "duration",
            default: "5m",
            doc: "how long a server may be away before the sink fails",
        },
        ParamDescriptor {
            name: "buffer_rows",
            kind: "rows",
            default: "1000000",
            doc: "rows held while the server is away before write waits",
        },
        STRICT,
        ParamDescriptor {
            name: "sslmode",
            kind: "disable|prefer",
            default: "",
            doc: "accepted for libpq compatibility; this build connects without TLS",
        },
    ],
    feature: Some("postgres"),
    compiled_in: cfg!(feature = "postgres"),
    #[cfg(feature = "postgres")]
    parse: Some(super::postgres::parse),
    #[cfg(not(feature = "postgres"))]
    parse: None,
};

/// The NATS JetStream sink (`nats://`).
pub const NATS: SinkDescriptor = SinkDescriptor {
    schemes: &["nats"],
    usage: "nats://[USER[:PASSWORD]@]HOST[:PORT]/SUBJECT?stream=NAME",
    example: "nats://127.0.0.1:4222/lab.edge1?stream=LAB",
    summary: "NATS JetStream: format=arrow (one Arrow IPC message per batch) or jsonl (one \
              message per row), exactly once from a tape (message ids from the tape's id and \
              sequence numbers; the cursor is the subject's last message, checked in order); \
              create_stream, max_in_flight (256), retry_for (5m). A server away is waited for \
              while the tape keeps recording.",
    path_example: None,
    params: &[
        ParamDescriptor {
            name: "stream",
            kind: "name",
            default: "",
            doc: "the JetStream stream that stores the subject (required)",
        },
        ParamDescriptor {
            name: "format",
            kind: "arrow|jsonl",
            default: "arrow",
            doc: "one Arrow IPC stream per batch, or one JSON object per row",
        },
        ParamDescriptor {
            name: "create_stream",
            kind: "bool",
            default: "false",
            doc: "make the stream when it does not exist (else a missing stream is an error)",
        },
        ParamDescriptor {
            name: "subjects",
            kind: "list",
            default: "",
            doc: "with create_stream: the stream's subjects, comma-separated (default: SUBJECT)",
        },
        ParamDescriptor {
            name: "storage",
            kind: "file|memory",
            default: "file",
            doc: "with create_stream: where the server keeps the stream",
        },
        ParamDescriptor {
            name: "replicas",
            kind: "1-5",
            default: "1",
            doc: "with create_stream: copies of the stream in a cluster",
        },
        ParamDescriptor {
            name: "duplicate_window",
            kind: "duration",
            default: "2m",
            doc: "with create_stream: how long the server remembers message ids",
        },
        ParamDescriptor {
            name: "max_in_flight",
            kind: "messages",
            default: "256",
            doc: "messages published and not yet acknowledged, at most",
        },
        ParamDescriptor {
            name: "connect_timeout",
            kind: "duration",
            default: "10s",
            doc: "cap on connecting and on each request",
        },
        ParamDescriptor {
            name: "retry_for",
            kind: "duration",
            default: "5m",
            doc: "how long a server may be away before the sink fails",
        },
    ],
    feature: Some("nats"),
    compiled_in: cfg!(feature = "nats"),
    #[cfg(feature = "nats")]
    parse: Some(super::nats::parse),
    #[cfg(not(feature = "nats"))]
    parse: None,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sink_is_compiled_in_exactly_when_it_can_parse() {
        for d in descriptors() {
            assert_eq!(d.compiled_in, d.parse.is_some(), "{}", d.scheme());
        }
    }

    #[test]
    fn every_compiled_in_example_parses_into_its_own_sink() {
        for d in descriptors().iter().filter(|d| d.compiled_in) {
            for scheme in d.schemes {
                let uri = d.example.replacen(d.scheme(), scheme, 1);
                let spec = crate::sink::parse_unchecked(&uri)
                    .unwrap_or_else(|e| panic!("{uri} does not parse: {e}"));
                assert_eq!(spec.descriptor().scheme(), d.scheme(), "{uri}");
                let shown = spec.describe();
                assert!(
                    shown.starts_with(&format!("{}:", d.scheme())),
                    "{uri} is described as {shown}"
                );
            }
        }
    }
}
