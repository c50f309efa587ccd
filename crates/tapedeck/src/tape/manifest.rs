//! The manifest: the tape's index and audit trail (sealed segments with their hashes and
//! ranges, quarantined ranges, truncated tails), kept as a [`Journal`] — the same mechanism,
//! file format and tools as any journal (`docs/journal-format.md`).
//!
//! The journal's state is `{"records": [Record, …]}`; each event appends one record with a
//! JSON Patch `add` at `/records/-`, its action the record's kind (`sealed`, `quarantined`,
//! `truncated`), fdatasynced before the call returns.
//!
//! Guarantees: everything a `sealed` record says can be recomputed from the segment, so a
//! damaged manifest never makes a tape unreadable or unwritable — a writer that finds damage
//! keeps the damaged file (`MANIFEST.damaged-<µs>`) and goes on with a new manifest holding
//! every record that still checks out, before and after the damage. A manifest written by tapedeck before the manifest became a journal
//! (version 0: length- and CRC-framed JSON records) is read as it is, and a writer converts it
//! once, keeping the old file as `MANIFEST.v0`; a crash at any step of a rebuild leaves the old
//! manifest or the new one.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::durability::FsyncPolicy;
use crate::error::{Error, Result};
use crate::journal::{Journal, JournalOptions};
use crate::storage::Storage;

/// File name of the manifest.
pub const MANIFEST: &str = "MANIFEST";

/// Where a rebuilt manifest is written before it replaces the old one.
const NEXT: &str = "MANIFEST.next";

/// The name a version 0 manifest keeps once converted.
pub const MANIFEST_V0: &str = "MANIFEST.v0";

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
    /// A sealed segment was removed by retention (`record --retain`, `tapedeck trim`).
    Trimmed {
        /// Segment file.
        file: String,
        /// Its first row.
        first_seq: u64,
        /// Its rows.
        rows: u64,
        /// Its bytes.
        bytes: u64,
        /// Its chain hash, hex: the next segment's header holds it.
        chain: String,
    },
    /// Sealed segments were rewritten into fewer segments of large frames (`tapedeck
    /// compact`); this record is the switch from the old files to the new ones.
    Compacted {
        /// First row of the rewritten range.
        first_seq: u64,
        /// Rows of the range (its sequence span).
        rows: u64,
        /// The segment files replaced, in order.
        replaced: Vec<String>,
        /// Their bytes.
        bytes_before: u64,
        /// The new segments, in order.
        files: Vec<CompactedFile>,
        /// The first replaced segment's previous-chain hash, hex: where the range joined the
        /// chain.
        prev_chain: String,
        /// The last replaced segment's chain hash, hex: the old chain's last hash, which the
        /// segment after the range holds and the first new segment starts from.
        old_chain: String,
        /// The last new segment's chain hash, hex.
        chain: String,
    },
}

/// One segment written by a compaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactedFile {
    /// Segment file.
    pub file: String,
    /// Segment number (its header's).
    pub segment: u64,
    /// First row.
    pub first_seq: u64,
    /// Rows.
    pub rows: u64,
    /// Bytes.
    pub bytes: u64,
    /// Frames.
    pub frames: u64,
    /// Chain hash, hex.
    pub chain: String,
}

impl Record {
    /// The record's kind, the journal action that appends it.
    fn action(&self) -> &'static str {
        match self {
            Record::Sealed { .. } => "sealed",
            Record::Quarantined { .. } => "quarantined",
            Record::Truncated { .. } => "truncated",
            Record::Trimmed { .. } => "trimmed",
            Record::Compacted { .. } => "compacted",
        }
    }
}

/// The manifest journal's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    records: Vec<Record>,
}

/// The manifest of a tape, open for appending (the tape's writer holds it).
pub struct Manifest {
    journal: Journal<State>,
    /// Records appended, in order (kept beside the journal: the writer asks often).
    records: std::sync::Mutex<Vec<Record>>,
}

impl std::fmt::Debug for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manifest").finish_non_exhaustive()
    }
}

fn options() -> JournalOptions {
    JournalOptions {
        fsync: FsyncPolicy::Always,
        ..JournalOptions::default()
    }
}

impl Manifest {
    /// Opens the manifest of the tape in `storage` for writing: finishes an interrupted
    /// rebuild, converts a version 0 manifest, cuts a torn tail, and replaces a damaged
    /// manifest by one holding its good records (see the module docs).
    pub fn open(storage: &Arc<dyn Storage>) -> Result<Manifest> {
        let io = |action, name: &str, e| Error::io(action, storage.describe(name), e);
        // An interrupted rebuild: the new file is complete and durable before the renames.
        if exists(storage.as_ref(), NEXT)? {
            if exists(storage.as_ref(), MANIFEST)? {
                storage.remove(NEXT).map_err(|e| io("remove", NEXT, e))?;
            } else {
                storage
                    .rename(NEXT, MANIFEST)
                    .map_err(|e| io("rename", NEXT, e))?;
                storage
                    .sync_dir("")
                    .map_err(|e| io("fsync the directory of", MANIFEST, e))?;
            }
        }
        if let Some((records, _)) = read_v0(storage.as_ref(), MANIFEST)? {
            rebuild(storage, records, MANIFEST_V0)?;
        }
        let journal = match Journal::open_storage(storage.clone(), MANIFEST, options(), || {
            State::default()
        }) {
            Ok(j) => j,
            Err(Error::JournalDamaged { offset, .. }) => {
                let records = salvage(storage.as_ref())?;
                let keep = format!("{MANIFEST}.damaged-{}", crate::record::time::now_micros());
                tracing::warn!(
                    "manifest: damaged at byte {offset}; kept as {keep}, going on with the {} records that still check out",
                    records.len()
                );
                rebuild(storage, records, &keep)?;
                Journal::open_storage(storage.clone(), MANIFEST, options(), State::default)?
            }
            Err(e) => return Err(e),
        };
        let records = journal
            .state()
            .map_err(|e| Error::Tape {
                path: storage.describe(MANIFEST),
                message: format!("the manifest's records do not read: {e}"),
            })?
            .records;
        Ok(Manifest {
            journal,
            records: std::sync::Mutex::new(records),
        })
    }

    /// Every record, in order.
    pub fn records(&self) -> Vec<Record> {
        crate::sync::lock(&self.records).clone()
    }

    /// Runs `f` over every record, in order, without copying them.
    pub fn with_records<R>(&self, f: impl FnOnce(&[Record]) -> R) -> R {
        f(&crate::sync::lock(&self.records))
    }

    /// Appends `record`; returns once it is durable.
    pub fn append(&self, record: &Record) -> Result<()> {
        self.journal.set(record.action(), "/records/-", record)?;
        crate::sync::lock(&self.records).push(record.clone());
        Ok(())
    }
}

/// The records a damaged manifest still holds: those of every record that checks out, before
/// the damage and after it (each one appends records; none depends on another).
fn salvage(storage: &dyn Storage) -> Result<Vec<Record>> {
    let mut out: Vec<Record> = Vec::new();
    for r in crate::journal::good_records(storage, MANIFEST)? {
        if let Some(snapshot) = r.snapshot {
            // A snapshot holds every record before it; keep those not seen yet.
            if let Ok(state) = serde_json::from_value::<State>(snapshot) {
                for rec in state.records {
                    if !out.contains(&rec) {
                        out.push(rec);
                    }
                }
            }
            continue;
        }
        for op in r.patch.map(|p| p.0).unwrap_or_default() {
            if let json_patch::PatchOperation::Add(add) = op
                && add.path.as_str() == "/records/-"
                && let Ok(rec) = serde_json::from_value::<Record>(add.value)
            {
                out.push(rec);
            }
        }
    }
    Ok(out)
}

/// Writes a manifest holding `records` under [`NEXT`], then puts it in place of the old one,
/// which is kept as `keep`.
fn rebuild(storage: &Arc<dyn Storage>, records: Vec<Record>, keep: &str) -> Result<()> {
    let io = |action, name: &str, e| Error::io(action, storage.describe(name), e);
    if exists(storage.as_ref(), NEXT)? {
        storage.remove(NEXT).map_err(|e| io("remove", NEXT, e))?;
    }
    // Written and fsynced, with its directory entry, before it is opened.
    drop(Journal::open_storage(
        storage.clone(),
        NEXT,
        options(),
        || State { records },
    )?);
    storage
        .rename(MANIFEST, keep)
        .map_err(|e| io("rename", MANIFEST, e))?;
    storage
        .rename(NEXT, MANIFEST)
        .map_err(|e| io("rename", NEXT, e))?;
    storage
        .sync_dir("")
        .map_err(|e| io("fsync the directory of", MANIFEST, e))
}

fn exists(storage: &dyn Storage, name: &str) -> Result<bool> {
    Ok(storage
        .len(name)
        .map_err(|e| Error::io("stat", storage.describe(name), e))?
        .is_some())
}

/// Reads every valid record without changing anything (readers, `verify`, `inspect`).
pub fn read_only(storage: &dyn Storage) -> Result<Vec<Record>> {
    Ok(read_checked(storage)?.0)
}

/// Where a manifest's valid records end, and the file's length.
pub type Damage = (u64, u64);

/// Every valid record, and — when bytes after them do not check out (a torn or damaged
/// record) — where the valid records end and the file's length. Changes nothing (`verify`).
/// Reads a journal manifest, a version 0 one, or — during a rebuild or conversion — whichever
/// file holds the records.
pub fn read_checked(storage: &dyn Storage) -> Result<(Vec<Record>, Option<Damage>)> {
    let name = if !exists(storage, MANIFEST)? && exists(storage, NEXT)? {
        NEXT
    } else {
        MANIFEST
    };
    if !exists(storage, name)? {
        return Ok((Vec::new(), None));
    }
    if let Some(v0) = read_v0(storage, name)? {
        return Ok(v0);
    }
    let read = crate::journal::read_value(storage, name)?;
    let state: State = if read.value.is_null() {
        State::default()
    } else {
        serde_json::from_value(read.value).map_err(|e| Error::Tape {
            path: storage.describe(name),
            message: format!(
                "the manifest's records do not read ({e}); the segments hold everything it says: move it aside"
            ),
        })?
    };
    let damage = (read.good_len < read.len).then_some((read.good_len, read.len));
    Ok((state.records, damage))
}

/// The records of a version 0 manifest (4-byte length, 4-byte CRC32C, JSON payload per
/// record, little-endian), with where its valid records end if bytes after them do not check
/// out; `None` when `name` is not one (its first record does not check out as one).
fn read_v0(storage: &dyn Storage, name: &str) -> Result<Option<(Vec<Record>, Option<Damage>)>> {
    let io = |e| Error::io("read", storage.describe(name), e);
    let Some(len) = storage.len(name).map_err(io)? else {
        return Ok(None);
    };
    let mut head = [0u8; 8];
    if len < 8 {
        return Ok(None);
    }
    storage.read_at(name, 0, &mut head).map_err(io)?;
    let n = u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
    if n.saturating_add(8) > len {
        return Ok(None);
    }
    let size = usize::try_from(len).map_err(|_| Error::Tape {
        path: storage.describe(name),
        message: format!(
            "{len} bytes is too large for a manifest; move the file aside (it is rebuilt from the segments)"
        ),
    })?;
    let mut data = vec![0u8; size];
    storage.read_at(name, 0, &mut data).map_err(io)?;
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
    if out.is_empty() {
        return Ok(None);
    }
    let damage = (at < data.len()).then_some((at as u64, len));
    Ok(Some((out, damage)))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::storage::MemStorage;

    /// A version 0 manifest holding `records`, as tapedeck wrote it before the manifest was a
    /// journal.
    pub(crate) fn v0_bytes(records: &[Record]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            let payload = serde_json::to_vec(r).unwrap();
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
            out.extend_from_slice(&payload);
        }
        out
    }

    fn sealed(segment: u64) -> Record {
        Record::Sealed {
            file: format!("seg-{segment:06}.tape"),
            segment,
            first_seq: segment * 10,
            rows: 10,
            bytes: 1000,
            chain: "ab".repeat(32),
            min_time: Some(1),
            max_time: Some(2),
            schema: 0,
        }
    }

    #[test]
    fn a_version_0_manifest_is_read_as_it_is_and_converted_once_by_a_writer() {
        let mem = MemStorage::new();
        let old = vec![sealed(0), sealed(1)];
        mem.put(MANIFEST, v0_bytes(&old));
        let storage: Arc<dyn Storage> = Arc::new(mem.clone());
        assert_eq!(read_checked(storage.as_ref()).unwrap(), (old.clone(), None));
        let m = Manifest::open(&storage).unwrap();
        assert_eq!(m.records(), old);
        m.append(&sealed(2)).unwrap();
        drop(m);
        assert_eq!(mem.bytes(MANIFEST_V0).unwrap(), v0_bytes(&old), "kept");
        let text = String::from_utf8(mem.bytes(MANIFEST).unwrap()).unwrap();
        assert!(text.contains("\"action\":\"sealed\""), "{text}");
        let all = vec![sealed(0), sealed(1), sealed(2)];
        assert_eq!(read_only(storage.as_ref()).unwrap(), all);
        assert_eq!(Manifest::open(&storage).unwrap().records(), all);
    }

    #[test]
    fn a_crash_at_any_step_of_a_conversion_keeps_every_record() {
        let old = vec![sealed(0), sealed(1), sealed(2)];
        // The steps: nothing done; NEXT written; MANIFEST renamed to v0; NEXT renamed.
        for step in 0..4 {
            let mem = MemStorage::new();
            mem.put(MANIFEST, v0_bytes(&old));
            let storage: Arc<dyn Storage> = Arc::new(mem.clone());
            if step >= 1 {
                drop(
                    Journal::open_storage(storage.clone(), NEXT, options(), || State {
                        records: old.clone(),
                    })
                    .unwrap(),
                );
            }
            if step >= 2 {
                storage.rename(MANIFEST, MANIFEST_V0).unwrap();
            }
            if step >= 3 {
                storage.rename(NEXT, MANIFEST).unwrap();
            }
            assert_eq!(
                read_only(storage.as_ref()).unwrap(),
                old,
                "reader, step {step}"
            );
            let m = Manifest::open(&storage).unwrap();
            assert_eq!(m.records(), old, "writer, step {step}");
            assert!(!exists(storage.as_ref(), NEXT).unwrap());
        }
    }

    #[test]
    fn damage_in_the_middle_keeps_the_damaged_file_and_the_good_records() {
        let mem = MemStorage::new();
        let storage: Arc<dyn Storage> = Arc::new(mem.clone());
        let m = Manifest::open(&storage).unwrap();
        let mut ends = vec![mem.bytes(MANIFEST).unwrap().len()];
        for s in 0..4 {
            m.append(&sealed(s)).unwrap();
            ends.push(mem.bytes(MANIFEST).unwrap().len());
        }
        drop(m);
        // A bit flip inside the second appended record.
        mem.flip_bit(MANIFEST, ends[1] + 30, 2);
        let (records, damage) = read_checked(storage.as_ref()).unwrap();
        assert_eq!(records, vec![sealed(0)]);
        assert_eq!(damage, Some((ends[1] as u64, *ends.last().unwrap() as u64)));
        // The writer keeps every record that checks out, after the damage too.
        let m = Manifest::open(&storage).unwrap();
        assert_eq!(m.records(), vec![sealed(0), sealed(2), sealed(3)]);
        let kept: Vec<String> = mem
            .list()
            .unwrap()
            .into_iter()
            .filter(|n| n.starts_with("MANIFEST.damaged-"))
            .collect();
        assert_eq!(kept.len(), 1, "{:?}", mem.list().unwrap());
        m.append(&sealed(9)).unwrap();
        assert_eq!(
            read_only(storage.as_ref()).unwrap(),
            vec![sealed(0), sealed(2), sealed(3), sealed(9)]
        );
    }
}
