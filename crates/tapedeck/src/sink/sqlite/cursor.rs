//! A delivery's cursor inside the database: the row of [`CURSOR_TABLE`] that moves in the
//! same transaction as the rows it counts ("cursor in the same transaction",
//! `crate::sink::resume`), and the refusal of a second tape's delivery into one table.

use rusqlite::{Connection, OptionalExtension};

use super::{SqliteSink, db_error};
use crate::error::{Error, Result};
use crate::sink::resume::CursorSink;

/// The table that holds each delivery's cursor, in the sink's database.
pub const CURSOR_TABLE: &str = "tapedeck_cursor";

/// A delivery from a tape into this database: its row in [`CURSOR_TABLE`] moves in the same
/// transaction as the rows, to `base` + rows committed by this sink.
#[derive(Debug, Clone)]
pub(super) struct DeliveryCursor {
    pub(super) key: String,
    pub(super) tape_id: String,
    pub(super) base: u64,
    /// The row is in the table (an earlier run's, or this run's first commit made it). Until
    /// then every commit checks again, inside its write transaction, that no other tape's
    /// delivery holds the table.
    pub(super) stored: bool,
}

impl SqliteSink {
    /// Makes this sink the destination of a delivery from tape `tape_id` and returns the
    /// committed cursor (`start` when the delivery is new). From here on every transaction also
    /// moves the cursor, atomically with its rows. A table that already holds another tape's
    /// delivery is refused: two tapes' sequence numbers in one table cannot be told apart, so
    /// neither cursor would say which rows it holds.
    ///
    /// Opening only reads: a new delivery's row in [`CURSOR_TABLE`] is written by its first
    /// commit, so a run that fails (or is killed) before it commits a row leaves no row
    /// behind. The refusal stays race-free: that first commit checks again for another tape's
    /// row inside its `BEGIN IMMEDIATE` transaction, which no other writer can interleave
    /// with (see [`SqliteSink::commit`]).
    pub(super) fn attach_cursor(&mut self, tape_id: &str, start: u64) -> Result<u64> {
        let shown = self.shown();
        let name = self.life.name().to_string();
        let table = self.options.table.clone();
        let key = format!("tape:{tape_id}/{table}");
        if i64::try_from(start).is_err() {
            return Err(Error::Delivery {
                sink: name,
                message: format!(
                    "tape row {start} does not fit SQLite's 64-bit integer cursor; deliver from the tape's start"
                ),
            });
        }
        let conn = self.conn()?;
        let read = (|| -> rusqlite::Result<std::result::Result<Option<i64>, (String, String)>> {
            if !cursor_table_exists(conn)? {
                return Ok(Ok(None));
            }
            if let Some(other) = other_tape(conn, &table, tape_id)? {
                return Ok(Err(other));
            }
            conn.query_row(
                &format!("SELECT tape_seq FROM {CURSOR_TABLE} WHERE sink = ?1"),
                [&key],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(Ok)
        })();
        let seq = match read {
            Ok(Ok(seq)) => seq,
            Ok(Err((theirs, their_key))) => {
                return Err(other_tape_error(
                    &name, &table, &shown, &theirs, &their_key, tape_id,
                ));
            }
            Err(e) => {
                return Err(db_error(
                    &shown,
                    CURSOR_TABLE,
                    "read the delivery cursor",
                    &e,
                ));
            }
        };
        let base = match seq {
            None => start,
            Some(seq) => u64::try_from(seq).map_err(|_| Error::Delivery {
                sink: name,
                message: format!(
                    "its cursor row `{key}` in {CURSOR_TABLE} reads {seq}; a cursor is never negative — delete the row to deliver the tape again from its start"
                ),
            })?,
        };
        self.cursor = Some(DeliveryCursor {
            key,
            tape_id: tape_id.to_string(),
            base,
            stored: seq.is_some(),
        });
        Ok(base)
    }
}

/// Whether [`CURSOR_TABLE`] exists.
pub(super) fn cursor_table_exists(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [CURSOR_TABLE],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

/// Another tape's delivery into `table`: its tape id and row key.
pub(super) fn other_tape(
    conn: &Connection,
    table: &str,
    tape_id: &str,
) -> rusqlite::Result<Option<(String, String)>> {
    conn.query_row(
        &format!(
            "SELECT tape_id, sink FROM {CURSOR_TABLE} WHERE target_table = ?1 AND tape_id <> ?2 \
             ORDER BY sink LIMIT 1"
        ),
        rusqlite::params![table, tape_id],
        |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
    )
    .optional()
}

/// The refusal of a second tape's delivery into a table that holds another tape's.
pub(super) fn other_tape_error(
    sink: &str,
    table: &str,
    shown: &str,
    theirs: &str,
    their_key: &str,
    tape_id: &str,
) -> Error {
    Error::Delivery {
        sink: sink.to_string(),
        message: format!(
            "table {table} in {shown} already holds rows delivered from tape {theirs} (row `{their_key}` in {CURSOR_TABLE}), not from this tape ({tape_id}); deliver into another table (`?table=`) or another database, or drop the table and delete that row to start over"
        ),
    }
}

impl CursorSink for SqliteSink {
    fn committed_cursor(&self) -> Option<u64> {
        self.cursor.as_ref().map(|c| c.base + self.rows)
    }

    fn skip_cursor(&mut self, rows: u64) {
        if let Some(c) = &mut self.cursor {
            c.base += rows;
        }
    }
}
