//! The writer's acknowledged position, published for other processes: a delivery started beside
//! a running recorder (`tapedeck deliver` while `record --tape` runs) reads rows only up to it,
//! as a delivery inside the recorder does.
//!
//! `ACKED` (format in `docs/tape-format.md`) is 32 bytes rewritten in place with one `pwrite`
//! whenever the acknowledged position moves (once per group commit: a few microseconds) and
//! when the writer closes. It is a hint for live readers, never fsynced: after a crash the tape itself
//! (recovered by the next writer) is the truth. A reader that finds the bytes torn (CRC) reads
//! again. Whether a writer is still running is told by the `LOCK` file's advisory lock, not by
//! this file.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};

/// File name of the published position.
pub const ACKED_FILE: &str = "ACKED";
const MAGIC: &[u8; 8] = b"TDACKED1";
const LEN: usize = 32;

fn encode(seq: u64, generation: u64) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    b[..8].copy_from_slice(MAGIC);
    b[8..16].copy_from_slice(&seq.to_le_bytes());
    b[16..24].copy_from_slice(&generation.to_le_bytes());
    let crc = crc32c::crc32c(&b[..24]);
    b[24..28].copy_from_slice(&crc.to_le_bytes());
    b
}

/// The position in `b`, if the bytes check out.
fn decode(b: &[u8]) -> Option<u64> {
    let b: &[u8; LEN] = b.get(..LEN)?.try_into().ok()?;
    let crc = u32::from_le_bytes([b[24], b[25], b[26], b[27]]);
    (&b[..8] == MAGIC && crc32c::crc32c(&b[..24]) == crc).then(|| {
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&b[8..16]);
        u64::from_le_bytes(seq)
    })
}

/// The writer's side.
#[derive(Debug)]
pub struct Publisher {
    file: File,
    generation: u64,
    last: Option<u64>,
}

impl Publisher {
    /// Opens (creating) `dir/ACKED`.
    pub fn open(dir: &Path) -> Result<Publisher> {
        let path = dir.join(ACKED_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        Ok(Publisher {
            file,
            generation: 0,
            last: None,
        })
    }

    /// Publishes `seq` if it moved. A failure is logged once and otherwise ignored: live
    /// readers then lag, the tape is unaffected.
    pub fn publish(&mut self, seq: u64) {
        if self.last == Some(seq) {
            return;
        }
        self.generation = self.generation.wrapping_add(1);
        if let Err(e) = self.file.write_all_at(&encode(seq, self.generation), 0)
            && self.last.is_none()
        {
            tracing::warn!("cannot publish the tape's acknowledged position: {e}");
        }
        self.last = Some(seq);
    }
}

/// The position published in `dir`, `None` if there is none (no writer ever published, or an
/// older version wrote the tape).
pub fn read(dir: &Path) -> Result<Option<u64>> {
    let path = dir.join(ACKED_FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", &path, e)),
    };
    let mut b = [0u8; LEN];
    for _ in 0..10 {
        match file.read_exact_at(&mut b, 0) {
            Ok(()) => {
                if let Some(seq) = decode(&b) {
                    return Ok(Some(seq));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(Error::io("read", &path, e)),
        }
        // Caught mid-write: read again.
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(None)
}

/// True while a writer holds the tape's lock (a recorder, or a `deliver` recovering it).
pub fn writer_running(dir: &Path) -> bool {
    let Ok(f) = File::open(dir.join("LOCK")) else {
        return false;
    };
    // The writer holds an exclusive lock; a shared one is refused while it runs.
    f.try_lock_shared().is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_position_reads_back_and_a_torn_one_does_not() {
        let b = encode(12345, 7);
        assert_eq!(decode(&b), Some(12345));
        for at in 0..28 {
            let mut t = b;
            t[at] ^= 0x40;
            assert_eq!(decode(&t), None, "byte {at}");
        }
        assert_eq!(decode(&b[..20]), None);
    }
}
