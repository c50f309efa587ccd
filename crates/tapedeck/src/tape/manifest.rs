//! The manifest journal: checksummed JSON records, appended and fsynced, torn tail cut on open.
//!
//! The manifest is an index and an audit trail (sealed segments with their hashes and ranges,
//! quarantined ranges, truncated tails). Everything a `sealed` record says can be recomputed from
//! the segment, so a damaged manifest never makes a tape unreadable.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::Storage;

/// File name of the manifest.
pub const MANIFEST: &str = "MANIFEST";

/// One manifest record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Record {
    /// A segment was sealed.
    Sealed {
        /// Segment file.
        file: String,
        /// Segment number.
        segment: u64,
        /// First row.
        first_seq: u64,
        /// Rows.
        rows: u64,
        /// Bytes.
        bytes: u64,
        /// Chain hash, hex.
        chain: String,
        /// Min event time (µs), if any.
        min_time: Option<i64>,
        /// Max event time (µs), if any.
        max_time: Option<i64>,
        /// Schema version (counts schema changes from 0).
        schema: u64,
    },
    /// Damaged bytes were cut out of a segment.
    Quarantined {
        /// Segment file.
        file: String,
        /// First damaged byte.
        offset: u64,
        /// End of the damaged range.
        end: u64,
        /// First sequence number the gap hides.
        rows_from: u64,
        /// Rows in the gap.
        rows: u64,
        /// Copy of the bytes.
        to: String,
    },
    /// A torn tail was cut off.
    Truncated {
        /// Segment file.
        file: String,
        /// New length.
        offset: u64,
        /// Bytes removed.
        bytes: u64,
    },
}

/// Reads every valid record; cuts a torn or corrupt tail off the file (writers only).
pub fn read(storage: &dyn Storage) -> Result<Vec<Record>> {
    read_records(storage, true)
}

/// Reads every valid record without changing the file (readers, `verify`, `inspect`).
pub fn read_only(storage: &dyn Storage) -> Result<Vec<Record>> {
    read_records(storage, false)
}

/// Where a manifest's valid records end, and the file's length.
pub type Damage = (u64, u64);

/// Every valid record, and — when bytes after them do not check out (a torn or damaged
/// record) — where the valid records end and the file's length. Changes nothing (`verify`).
pub fn read_checked(storage: &dyn Storage) -> Result<(Vec<Record>, Option<Damage>)> {
    let (records, valid, len) = scan(storage)?;
    Ok((records, (valid < len).then_some((valid, len))))
}

fn read_records(storage: &dyn Storage, repair: bool) -> Result<Vec<Record>> {
    let (out, at, len) = scan(storage)?;
    if repair && at < len {
        tracing::warn!(
            "manifest: cutting {} damaged bytes off its end at offset {at}",
            len - at
        );
        storage
            .truncate(MANIFEST, at)
            .map_err(|e| Error::io("truncate", storage.describe(MANIFEST), e))?;
    }
    Ok(out)
}

/// The valid records, where they end, and the file's length.
fn scan(storage: &dyn Storage) -> Result<(Vec<Record>, u64, u64)> {
    let io = |e| Error::io("read", storage.describe(MANIFEST), e);
    let Some(len) = storage.len(MANIFEST).map_err(io)? else {
        return Ok((Vec::new(), 0, 0));
    };
    let size = usize::try_from(len).map_err(|_| Error::Tape {
        path: storage.describe(MANIFEST),
        message: format!("{len} bytes is too large for a manifest; move the file aside (it is rebuilt from the segments)"),
    })?;
    let mut data = vec![0u8; size];
    storage.read_at(MANIFEST, 0, &mut data).map_err(io)?;
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 8 <= data.len() {
        let n = u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
        let crc = u32::from_le_bytes([data[at + 4], data[at + 5], data[at + 6], data[at + 7]]);
        let Some(payload) = (at + 8)
            .checked_add(n)
            .and_then(|end| data.get(at + 8..end))
        else {
            break;
        };
        if crc32c::crc32c(payload) != crc {
            break;
        }
        match serde_json::from_slice::<Record>(payload) {
            Ok(r) => out.push(r),
            Err(_) => break,
        }
        at += 8 + n;
    }
    Ok((out, at as u64, len))
}

/// Appends a record and fsyncs it.
pub fn append(storage: &dyn Storage, record: &Record) -> Result<()> {
    let payload = serde_json::to_vec(record).map_err(|e| Error::InvalidOption {
        option: "manifest",
        message: e.to_string(),
    })?;
    let mut b = Vec::with_capacity(payload.len() + 8);
    b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    b.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    b.extend_from_slice(&payload);
    let io = |e| Error::io("write", storage.describe(MANIFEST), e);
    let new = storage.len(MANIFEST).map_err(io)?.is_none();
    storage.append(MANIFEST, &b).map_err(io)?;
    storage.sync(MANIFEST).map_err(io)?;
    if new {
        // The record is durable only once the file's directory entry is.
        storage
            .sync_dir("")
            .map_err(|e| Error::io("fsync the directory of", storage.describe(MANIFEST), e))?;
    }
    Ok(())
}
