//! The cursor file of a file sink: where its delivery from a tape stands, updated in place with
//! one small `pwrite` per commit and never torn.
//!
//! It lives beside the sinks, not in `deliver/`, because the sinks keep it (the rolling Parquet
//! sink commits it with each finished part) and a sink must not import the delivery layer above
//! it. `tapedeck::deliver::cursor_file` re-exports this module.
//!
//! Layout (all integers little-endian; `docs/delivery.md` has the same table):
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `TDCURSOR` |
//! | 8..24 | tape id, 16 bytes (the 32 hex digits of `TAPEID`) |
//! | 24..32 | `u64` start: the first sequence number this destination holds |
//! | 32..36 | `u32` version, 1 |
//! | 36..40 | `u32` CRC32C of bytes 0..36 |
//! | 40..72 | slot 0 |
//! | 72..104 | slot 1 |
//!
//! A slot: `u64` generation (0 = never written), `u64` seq (rows `start..seq` are in the
//! destination), `u64` value (a text file's committed length in bytes; a Parquet directory's
//! next part number), `u32` flags (bit 0 *complete*, bit 1 *rename pending*), `u32` CRC32C of
//! the tape id and the slot's first 28 bytes. Commit *g* writes slot *g* mod 2, so the previous
//! commit survives a torn write; a reader takes the valid slot with the highest generation.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"TDCURSOR";
const VERSION: u32 = 1;
const HEADER: usize = 40;
const SLOT: usize = 32;
/// Size of a cursor file.
pub const LEN: usize = HEADER + 2 * SLOT;

/// Slot flag: a whole-file destination is complete at `seq` (renamed into place).
pub const COMPLETE: u32 = 1;
/// Slot flag: a whole-file destination's hidden copy is complete at `seq` and its rename into
/// place may not have happened yet.
pub const RENAME_PENDING: u32 = 2;

/// One committed position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// Rows `start..seq` are in the destination.
    pub seq: u64,
    /// Sink-specific: committed byte length, or next part number.
    pub value: u64,
    /// [`COMPLETE`], [`RENAME_PENDING`].
    pub flags: u32,
}

/// An open cursor file.
#[derive(Debug)]
pub struct CursorFile {
    file: File,
    path: PathBuf,
    tape_id: [u8; 16],
    start: u64,
    generation: u64,
    position: Option<Position>,
}

/// What reading an existing cursor file found.
#[derive(Debug)]
pub enum Found {
    /// No cursor file.
    Missing,
    /// A cursor of this tape.
    Ours(CursorFile),
    /// A cursor of another tape (its id, hex).
    OtherTape(String),
    /// A file that is not a valid cursor (what is wrong).
    Damaged(String),
}

fn id_bytes(id: &str) -> Result<[u8; 16]> {
    let mut out = [0u8; 16];
    if id.len() != 32 {
        return Err(bad_id(id));
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(id.get(2 * i..2 * i + 2).ok_or_else(|| bad_id(id))?, 16)
            .map_err(|_| bad_id(id))?;
    }
    Ok(out)
}

fn bad_id(id: &str) -> Error {
    Error::InvalidOption {
        option: "tape id",
        message: format!("`{id}` is not 32 hex digits"),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn slot_crc(tape_id: &[u8; 16], slot: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(tape_id), &slot[..28])
}

fn encode_slot(tape_id: &[u8; 16], generation: u64, p: Position) -> [u8; SLOT] {
    let mut s = [0u8; SLOT];
    s[0..8].copy_from_slice(&generation.to_le_bytes());
    s[8..16].copy_from_slice(&p.seq.to_le_bytes());
    s[16..24].copy_from_slice(&p.value.to_le_bytes());
    s[24..28].copy_from_slice(&p.flags.to_le_bytes());
    let crc = slot_crc(tape_id, &s);
    s[28..32].copy_from_slice(&crc.to_le_bytes());
    s
}

/// A cursor file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// The tape id's 16 bytes.
    pub tape_id: [u8; 16],
    /// The first sequence number the destination holds.
    pub start: u64,
    /// The valid slot with the highest generation: (generation, position).
    pub newest: Option<(u64, Position)>,
}

/// Decodes a cursor file's bytes, or says what is wrong with them.
pub fn decode(bytes: &[u8]) -> std::result::Result<Decoded, String> {
    if bytes.len() < LEN {
        return Err(format!("{} bytes, a cursor file has {LEN}", bytes.len()));
    }
    if &bytes[0..8] != MAGIC {
        return Err("no TDCURSOR magic".into());
    }
    if crc32c::crc32c(&bytes[0..36]) != u32_at(bytes, 36) {
        return Err("header checksum mismatch".into());
    }
    let version = u32_at(bytes, 32);
    if version != VERSION {
        return Err(format!(
            "version {version}; this tapedeck reads version {VERSION}"
        ));
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&bytes[8..24]);
    let start = u64_at(bytes, 24);
    let mut best: Option<(u64, Position)> = None;
    for i in 0..2 {
        let s = &bytes[HEADER + i * SLOT..HEADER + (i + 1) * SLOT];
        let generation = u64_at(s, 0);
        if generation == 0 || slot_crc(&id, s) != u32_at(s, 28) {
            continue;
        }
        let p = Position {
            seq: u64_at(s, 8),
            value: u64_at(s, 16),
            flags: u32_at(s, 24),
        };
        if best.is_none_or(|(g, _)| generation > g) {
            best = Some((generation, p));
        }
    }
    Ok(Decoded {
        tape_id: id,
        start,
        newest: best,
    })
}

impl CursorFile {
    /// Reads the cursor file at `path`.
    pub fn open(path: &Path, tape_id: &str) -> Result<Found> {
        let want = id_bytes(tape_id)?;
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Missing),
            Err(e) => return Err(Error::io("read", path, e)),
        };
        let Decoded {
            tape_id: id,
            start,
            newest: best,
        } = match decode(&bytes) {
            Ok(x) => x,
            Err(problem) => return Ok(Found::Damaged(problem)),
        };
        if id != want {
            return Ok(Found::OtherTape(hex(&id)));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("open", path, e))?;
        Ok(Found::Ours(CursorFile {
            file,
            path: path.to_path_buf(),
            tape_id: id,
            start,
            generation: best.map_or(0, |(g, _)| g),
            position: best.map(|(_, p)| p),
        }))
    }

    /// Creates (or replaces) the cursor file at `path` with no position yet: written under a
    /// temporary name, fsynced and renamed, so a crash leaves the old file or the new one.
    pub fn create(path: &Path, tape_id: &str, start: u64) -> Result<CursorFile> {
        let id = id_bytes(tape_id)?;
        let mut b = vec![0u8; LEN];
        b[0..8].copy_from_slice(MAGIC);
        b[8..24].copy_from_slice(&id);
        b[24..32].copy_from_slice(&start.to_le_bytes());
        b[32..36].copy_from_slice(&VERSION.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..36]);
        b[36..40].copy_from_slice(&crc.to_le_bytes());
        let tmp = path.with_extension("tmp-cursor");
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io("create directory", parent, e))?;
        }
        {
            let mut f = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
            f.write_all(&b).map_err(|e| Error::io("write", &tmp, e))?;
            f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        }
        std::fs::rename(&tmp, path).map_err(|e| Error::io("rename into place", path, e))?;
        // The new name must be durable before anything relies on this cursor: a commit into a
        // file whose name a power failure can take back would be lost with it.
        super::file::sync_parent(path)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("open", path, e))?;
        Ok(CursorFile {
            file,
            path: path.to_path_buf(),
            tape_id: id,
            start,
            generation: 0,
            position: None,
        })
    }

    /// The first sequence number the destination holds.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The last committed position (`None` before the first commit).
    pub fn position(&self) -> Option<Position> {
        self.position
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Commits a new position: one 32-byte `pwrite` into the older slot (`fdatasync` after it
    /// when `sync`).
    pub fn commit(&mut self, p: Position, sync: bool) -> Result<()> {
        let generation = self.generation + 1;
        let slot = encode_slot(&self.tape_id, generation, p);
        let at = HEADER + (generation % 2) as usize * SLOT;
        self.file
            .write_all_at(&slot, at as u64)
            .map_err(|e| Error::io("write", &self.path, e))?;
        if sync {
            self.file
                .sync_data()
                .map_err(|e| Error::io("fsync", &self.path, e))?;
        }
        self.generation = generation;
        self.position = Some(p);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "00112233445566778899aabbccddeeff";

    #[test]
    fn commits_alternate_slots_and_survive_a_torn_slot() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("c");
        let mut c = CursorFile::create(&path, ID, 7).unwrap_or_else(|e| panic!("{e}"));
        let p1 = Position {
            seq: 100,
            value: 4096,
            flags: 0,
        };
        let p2 = Position {
            seq: 200,
            value: 8192,
            flags: COMPLETE,
        };
        c.commit(p1, false).unwrap_or_else(|e| panic!("{e}"));
        c.commit(p2, true).unwrap_or_else(|e| panic!("{e}"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bytes.len(), LEN);
        let d = decode(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((d.start, d.newest), (7, Some((2, p2))));
        // Tear the newest slot (generation 2 lives in slot 0): the older commit wins.
        let mut torn = bytes.clone();
        torn[HEADER + 12] ^= 0x40;
        assert_eq!(decode(&torn).map(|x| x.newest), Ok(Some((1, p1))));
        match CursorFile::open(&path, "ffffffffffffffffffffffffffffffff") {
            Ok(Found::OtherTape(id)) => assert_eq!(id, ID),
            other => panic!("expected another tape's cursor, got {other:?}"),
        }
        std::fs::write(&path, &bytes[..50]).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(CursorFile::open(&path, ID), Ok(Found::Damaged(_))));
    }
}
