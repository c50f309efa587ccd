//! The tape's identity: a random 128-bit id in the file `TAPEID`, written once when the tape is
//! created.
//!
//! A sink's delivery cursor names the tape it counts rows of, so a cursor can never be applied to
//! another tape's sequence numbers (a CSV file delivered from one tape, then pointed at a new
//! one, is refused instead of silently continuing at the wrong row).

use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::storage::Storage;

/// A tape as a delivery names it: its directory and its id.
#[derive(Debug, Clone)]
pub struct TapeRef {
    /// Its directory.
    pub dir: std::path::PathBuf,
    /// Its id (`TAPEID`).
    pub id: String,
}

/// File name of the tape id.
pub const TAPE_ID_FILE: &str = "TAPEID";

/// Length of the id in hex digits.
const ID_HEX: usize = 32;

/// Reads the tape's id; when the tape has none yet and `create` is set, makes one and writes it
/// (fsynced). `Ok(None)` when there is none and `create` is not set.
///
/// The file holds the id twice, each copy with its CRC32C (`<32 hex> <8 hex>\n`, 42 bytes at
/// offsets 0 and 42), so one damaged copy is survivable: the other is used, and a writer (`create`) rewrites the file.
pub fn read_or_create(storage: &dyn Storage, create: bool) -> Result<Option<String>> {
    let io = |action, e| Error::io(action, storage.describe(TAPE_ID_FILE), e);
    let len = storage.len(TAPE_ID_FILE).map_err(|e| io("read", e))?;
    if let Some(len) = len.filter(|l| *l > 0) {
        let mut buf = vec![0u8; len as usize];
        storage
            .read_at(TAPE_ID_FILE, 0, &mut buf)
            .map_err(|e| io("read", e))?;
        // Copies sit at fixed offsets, so a damaged separator cannot hide the other copy.
        let copies: Vec<Option<String>> = buf.chunks(LINE).map(parse_line).collect();
        let Some(id) = copies.iter().flatten().next().cloned() else {
            return Err(Error::Tape {
                path: storage.describe(TAPE_ID_FILE),
                message: "both copies of the tape id are damaged; restore the file from a backup (sinks' cursors name this id), or delete it to give the tape a new id — sinks delivered before must then be delivered again into new destinations".into(),
            });
        };
        let intact = buf == line_for(&id).repeat(2).into_bytes();
        if create && !intact {
            tracing::warn!(
                "{}: one copy of the tape id was damaged; rewriting it",
                storage.describe(TAPE_ID_FILE).display()
            );
            write_id(storage, &id)?;
        }
        return Ok(Some(id));
    }
    // Absent, or empty after a crash while it was being created.
    if !create {
        return Ok(None);
    }
    let id = new_id(storage);
    write_id(storage, &id)?;
    Ok(Some(id))
}

/// The state of a tape's id file, for `verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdHealth {
    /// No id file (a tape never opened by a writer).
    Absent,
    /// Both copies check out.
    Intact,
    /// One copy is damaged; the next writer rewrites the file.
    OneCopyDamaged,
    /// No copy checks out.
    Damaged,
}

/// Checks the id file without changing it.
pub fn health(storage: &dyn Storage) -> Result<IdHealth> {
    let io = |e| Error::io("read", storage.describe(TAPE_ID_FILE), e);
    let Some(len) = storage.len(TAPE_ID_FILE).map_err(io)? else {
        return Ok(IdHealth::Absent);
    };
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0).min(4 * LINE)];
    storage.read_at(TAPE_ID_FILE, 0, &mut buf).map_err(io)?;
    let copies: Vec<Option<String>> = buf.chunks(LINE).map(parse_line).collect();
    let Some(id) = copies.iter().flatten().next() else {
        return Ok(IdHealth::Damaged);
    };
    Ok(if buf == line_for(id).repeat(2).into_bytes() {
        IdHealth::Intact
    } else {
        IdHealth::OneCopyDamaged
    })
}

fn line_for(id: &str) -> String {
    format!("{id} {:08x}\n", crc32c::crc32c(id.as_bytes()))
}

/// Bytes of one copy: id, space, CRC, newline.
const LINE: usize = ID_HEX + 1 + 8 + 1;

fn parse_line(line: &[u8]) -> Option<String> {
    let id = std::str::from_utf8(line.get(..ID_HEX)?).ok()?;
    let crc = std::str::from_utf8(line.get(ID_HEX + 1..ID_HEX + 9)?).ok()?;
    let ok = id.len() == ID_HEX
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && crc == format!("{:08x}", crc32c::crc32c(id.as_bytes()));
    ok.then(|| id.to_string())
}

/// Where a new id file is written before it is renamed over `TAPEID`.
const TAPE_ID_TEMP: &str = "TAPEID.new";

/// Writes the id file atomically: a new file, fsynced, renamed over the old one, directory
/// fsynced. A crash at any point leaves either the old file or the new one, never an empty or
/// half-written `TAPEID` (which would make every sink's cursor name "another tape").
fn write_id(storage: &dyn Storage, id: &str) -> Result<()> {
    let io = |action, e| Error::io(action, storage.describe(TAPE_ID_TEMP), e);
    if storage
        .len(TAPE_ID_TEMP)
        .map_err(|e| io("read", e))?
        .is_some()
    {
        storage.remove(TAPE_ID_TEMP).map_err(|e| io("remove", e))?;
    }
    let line = line_for(id);
    storage
        .append(TAPE_ID_TEMP, format!("{line}{line}").as_bytes())
        .map_err(|e| io("write", e))?;
    storage.sync(TAPE_ID_TEMP).map_err(|e| io("fsync", e))?;
    storage
        .rename(TAPE_ID_TEMP, TAPE_ID_FILE)
        .map_err(|e| io("rename", e))?;
    storage
        .sync_dir("")
        .map_err(|e| Error::io("fsync the directory of", storage.describe(TAPE_ID_FILE), e))
}

/// 128 bits from the clock, the process, the directory and a stack address: unique enough to
/// tell tapes apart, which is all the id is for.
fn new_id(storage: &dyn Storage) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let marker = 0u8;
    let mut h = Sha256::new();
    h.update(nanos.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(storage.describe("").to_string_lossy().as_bytes());
    h.update((&marker as *const u8 as usize).to_le_bytes());
    let digest = h.finalize();
    digest[..ID_HEX / 2]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tape::storage::MemStorage;

    #[test]
    fn created_once_then_read_back() {
        let s = MemStorage::new();
        assert_eq!(read_or_create(&s, false).ok().flatten(), None);
        let id = read_or_create(&s, true).ok().flatten();
        assert_eq!(id.as_ref().map(String::len), Some(ID_HEX));
        assert_eq!(read_or_create(&s, true).ok().flatten(), id);
        assert_eq!(read_or_create(&s, false).ok().flatten(), id);
    }

    #[test]
    fn one_damaged_copy_is_repaired_two_are_an_error() {
        let s = MemStorage::new();
        let id = read_or_create(&s, true).ok().flatten();
        let good = s.bytes(TAPE_ID_FILE).unwrap_or_default();
        for at in 0..good.len() {
            for bit in 0..8 {
                s.put(TAPE_ID_FILE, good.clone());
                s.flip_bit(TAPE_ID_FILE, at, bit);
                assert_eq!(
                    read_or_create(&s, true).ok().flatten(),
                    id,
                    "byte {at} bit {bit}"
                );
                assert_eq!(s.bytes(TAPE_ID_FILE), Some(good.clone()), "rewritten");
            }
        }
        s.put(TAPE_ID_FILE, b"not-an-id\nnor this\n".to_vec());
        let err = read_or_create(&s, true).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("both copies")));
    }
}
