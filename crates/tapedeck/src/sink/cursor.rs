//! Sinks that keep a delivery's cursor themselves, with the data they commit.
//!
//! SQLite and PostgreSQL move a row of `tapedeck_cursor` in the same transaction as the rows it
//! counts; the rolling Parquet directory commits its cursor file with each finished part. Such a
//! sink implements [`CursorRow`], and a delivery only asks it where it stands. The trait lives
//! beside the sinks that implement it, not in `deliver/`, so no sink imports the delivery layer
//! above it (`docs/architecture.md`). File sinks whose cursor the delivery keeps use
//! [`super::cursor_file`].

use super::Sink;

/// A sink that moves a delivery's cursor itself, with the data it commits.
pub(crate) trait CursorRow: Sink {
    /// The cursor as committed.
    fn committed_cursor(&self) -> Option<u64>;
    /// Counts `rows` sequence numbers the tape has no rows for into the cursor.
    fn skip_cursor(&mut self, rows: u64);
}
