//! A `sqlite:` URI read: the database file and the options, and how the sink is opened and
//! resumed (its cursor row moves in the same transaction as its rows).

use std::sync::Arc;

use super::{SqliteOptions, SqliteSink};
use crate::error::Result;
use crate::sink::Sink;
use crate::sink::resume::{ResumeBy, WithCursor};
use crate::sink::spec::{AtPath, Claims, SinkConfig, claims_file};
use crate::uri::Uri;

/// Reads a `sqlite:` URI (the registry's `parse`).
pub(crate) fn parse(uri: &mut Uri) -> Result<Arc<dyn SinkConfig>> {
    let options = SqliteSink::options_from_uri(uri)?;
    Ok(AtPath::config(uri, options))
}

impl SinkConfig for AtPath<SqliteOptions> {
    fn describe(&self) -> String {
        format!(
            "sqlite:{} (table {})",
            self.path.display(),
            self.options.table
        )
    }

    fn claims(&self) -> Claims {
        let mut claims = claims_file(&self.path);
        // Sinks may share a database file, not a table; SQLite compares table names ignoring
        // case.
        if let Some(file) = &claims.file {
            claims.tables.push(format!(
                "table `{}` of {}",
                self.options.table.to_ascii_lowercase(),
                file.display()
            ));
        }
        claims.file_shared = true;
        claims
    }

    fn open(&self) -> Result<Box<dyn Sink>> {
        Ok(Box::new(SqliteSink::open(
            &self.path,
            self.options.clone(),
        )?))
    }

    fn resume_by(&self) -> ResumeBy {
        let (path, options) = (self.path.clone(), self.options.clone());
        ResumeBy::CursorInTransaction(Box::new(move |tape, start| {
            let mut sink = SqliteSink::open(path, options)?;
            let resume = sink.attach_cursor(&tape.id, start)?;
            Ok(WithCursor {
                sink: Box::new(sink),
                resume,
                lock: None,
            })
        }))
    }
}
