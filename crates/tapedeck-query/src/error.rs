//! What can go wrong answering a query, with the tape, segment, byte offset or sequence range
//! involved, so a message says what, where, and what to do.

use std::path::PathBuf;

use datafusion::error::DataFusionError;

/// A query error. Inside DataFusion it travels as [`DataFusionError::External`];
/// [`QueryError::from_datafusion`] takes it back out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The tape could not be opened or read.
    #[error(transparent)]
    Tape(#[from] tapedeck::Error),

    /// A frame the query needs fails its checksum or does not decode.
    #[error(
        "tape {tape}: segment {segment} at byte {offset}: rows {seq_from}..{seq_to} are damaged \
         ({problem}); run `tapedeck verify {tape}` for the whole picture, or query again with \
         --skip-damage to leave them out"
    )]
    Damaged {
        /// Tape directory.
        tape: PathBuf,
        /// Segment file name.
        segment: String,
        /// Byte offset of the damage in the segment.
        offset: u64,
        /// First sequence number affected.
        seq_from: u64,
        /// Sequence number after the last one affected.
        seq_to: u64,
        /// What is wrong.
        problem: String,
    },

    /// Two segments give one column two types.
    #[error(
        "tape {tape}: column {column:?} is {first} but {second}; a tape's columns keep their type"
    )]
    SchemaConflict {
        /// Tape directory.
        tape: PathBuf,
        /// The column.
        column: String,
        /// Its type and the segment it was first seen in (`Int64 in segment seg-….tape`).
        first: String,
        /// Its other type and the segment with it.
        second: String,
    },

    /// The tape already has a column named like a virtual one.
    #[error(
        "tape {tape}: it has a column named {column:?}, the name of tapedeck's virtual sequence column"
    )]
    VirtualColumnTaken {
        /// Tape directory.
        tape: PathBuf,
        /// The column.
        column: String,
    },

    /// `--as-of` asks for more than the tape holds.
    #[error(
        "tape {tape}: --as-of {requested} is beyond the end: the tape holds {end} acknowledged rows \
         (use seq:N with N at most {end})"
    )]
    AsOfBeyondEnd {
        /// Tape directory.
        tape: PathBuf,
        /// What was asked for.
        requested: String,
        /// Rows acknowledged.
        end: u64,
    },

    /// `--as-of time:T` on a tape that did not record when its frames became durable.
    #[error("tape {tape}: --as-of {requested}: {message}")]
    AsOfUnknown {
        /// Tape directory.
        tape: PathBuf,
        /// What was asked for.
        requested: String,
        /// Why it cannot be answered.
        message: String,
    },

    /// `--verify`: a segment the query touches breaks the hash chain, or its footer disagrees
    /// with the frames the chain covers.
    #[error(
        "tape {tape}: segment {segment}: {problem}; refusing to answer over a tape that does not \
         check out (run `tapedeck verify {tape}`)"
    )]
    BrokenChain {
        /// Tape directory.
        tape: PathBuf,
        /// Segment file name.
        segment: String,
        /// What does not match.
        problem: String,
    },

    /// A `--table NAME=URI` that cannot be registered.
    #[error("--table {name}={uri}: {message}")]
    Table {
        /// The table name.
        name: String,
        /// The URI, credentials removed.
        uri: String,
        /// Why.
        message: String,
    },

    /// The SQL does not parse or plan (unknown table or column, bad syntax, wrong types).
    #[error("{0}")]
    Sql(String),

    /// The engine failed while running the query.
    #[error("query failed: {0}")]
    Engine(String),
}

impl QueryError {
    /// Takes a [`QueryError`] back out of a [`DataFusionError`], and sorts DataFusion's own
    /// errors into mistakes in the SQL ([`QueryError::Sql`]) and failures ([`QueryError::Engine`]).
    pub fn from_datafusion(e: DataFusionError) -> QueryError {
        match e {
            DataFusionError::External(inner) => QueryError::from_boxed(inner),
            DataFusionError::ArrowError(e, _) => match *e {
                datafusion::arrow::error::ArrowError::ExternalError(inner) => {
                    QueryError::from_boxed(inner)
                }
                other => QueryError::Engine(other.to_string()),
            },
            DataFusionError::Collection(mut all) if !all.is_empty() => {
                QueryError::from_datafusion(all.swap_remove(0))
            }
            DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
                QueryError::from_datafusion(*inner)
            }
            DataFusionError::Shared(inner) => match std::sync::Arc::try_unwrap(inner) {
                Ok(inner) => QueryError::from_datafusion(inner),
                Err(shared) => QueryError::from_shared(&shared),
            },
            e @ (DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)) => QueryError::Sql(e.to_string()),
            other => QueryError::Engine(other.to_string()),
        }
    }

    /// An error that several parts of a plan hold (a repartition hands one error to each
    /// consumer): rebuilt from a reference, keeping what says where.
    fn from_shared(e: &DataFusionError) -> QueryError {
        let inner: Option<&QueryError> = match e {
            DataFusionError::External(b) => b.downcast_ref::<QueryError>(),
            DataFusionError::Shared(s) => return QueryError::from_shared(s),
            DataFusionError::Context(_, i) | DataFusionError::Diagnostic(_, i) => {
                return QueryError::from_shared(i);
            }
            _ => None,
        };
        match inner {
            Some(QueryError::Damaged {
                tape,
                segment,
                offset,
                seq_from,
                seq_to,
                problem,
            }) => QueryError::Damaged {
                tape: tape.clone(),
                segment: segment.clone(),
                offset: *offset,
                seq_from: *seq_from,
                seq_to: *seq_to,
                problem: problem.clone(),
            },
            Some(QueryError::BrokenChain {
                tape,
                segment,
                problem,
            }) => QueryError::BrokenChain {
                tape: tape.clone(),
                segment: segment.clone(),
                problem: problem.clone(),
            },
            Some(other) => QueryError::Engine(other.to_string()),
            None => QueryError::Engine(e.to_string()),
        }
    }

    fn from_boxed(inner: Box<dyn std::error::Error + Send + Sync>) -> QueryError {
        match inner.downcast::<QueryError>() {
            Ok(q) => *q,
            Err(other) => match other.downcast::<DataFusionError>() {
                Ok(d) => QueryError::from_datafusion(*d),
                Err(other) => QueryError::Engine(other.to_string()),
            },
        }
    }

    /// True for mistakes in what the user asked (SQL, `--table`, `--as-of`): the CLI exits 2.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            QueryError::Sql(_)
                | QueryError::Table { .. }
                | QueryError::AsOfBeyondEnd { .. }
                | QueryError::AsOfUnknown { .. }
                | QueryError::Tape(tapedeck::Error::Tape { .. })
        )
    }
}

impl From<QueryError> for DataFusionError {
    fn from(e: QueryError) -> DataFusionError {
        DataFusionError::External(Box::new(e))
    }
}

/// Results of this crate.
pub type Result<T, E = QueryError> = std::result::Result<T, E>;
