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
//!
//! `DURABLE` is the history of that position: 24-byte records `(position, wall-clock time)`,
//! exact to 100 ms (at most two records per 100 ms, the last one when the writer closes), so
//! `tapedeck query --as-of time:T` can read the tape as it stood at `T` ([`durable_at`]). Each
//! record is a true statement (rows before the position were durable at that time); it is not
//! fsynced either, so a crash may lose the last records (the answer for those times is then an
//! earlier position) or tear the last one (skipped by its CRC).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::record::time::now_micros;

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

/// File name of the durability history: when each acknowledged position was reached.
pub const DURABLE_FILE: &str = "DURABLE";
/// Bytes of one history record.
const RECORD: usize = 24;
/// A history record is written at most this often (µs) while the position moves.
const HISTORY_EVERY_US: i64 = 100_000;

fn encode_record(seq: u64, micros: i64) -> [u8; RECORD] {
    let mut b = [0u8; RECORD];
    b[..8].copy_from_slice(&seq.to_le_bytes());
    b[8..16].copy_from_slice(&micros.to_le_bytes());
    let crc = crc32c::crc32c(&b[..16]);
    b[16..20].copy_from_slice(&crc.to_le_bytes());
    b
}

/// `(seq, micros)` of one record, if it checks out.
fn decode_record(b: &[u8]) -> Option<(u64, i64)> {
    let b: &[u8; RECORD] = b.get(..RECORD)?.try_into().ok()?;
    let crc = u32::from_le_bytes([b[16], b[17], b[18], b[19]]);
    if crc32c::crc32c(&b[..16]) != crc || b[20..24] != [0; 4] {
        return None;
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&b[..8]);
    let mut t = [0u8; 8];
    t.copy_from_slice(&b[8..16]);
    Some((u64::from_le_bytes(seq), i64::from_le_bytes(t)))
}

/// The writer's side.
#[derive(Debug)]
pub struct Publisher {
    file: File,
    generation: u64,
    last: Option<u64>,
    /// `DURABLE`, appended to; `None` once a write to it failed (then it is left as it is).
    history: Option<File>,
    /// The last position and time written to the history.
    logged: Option<(u64, i64)>,
    /// A position published less than 100 ms after the last record, not yet written.
    held: Option<(u64, i64)>,
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
        let history_path = dir.join(DURABLE_FILE);
        let history = match OpenOptions::new()
            .append(true)
            .create(true)
            .open(&history_path)
        {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(
                    "cannot open {}: `query --as-of time:` will not know this run: {e}",
                    history_path.display()
                );
                None
            }
        };
        Ok(Publisher {
            file,
            generation: 0,
            last: None,
            history,
            logged: None,
            held: None,
        })
    }

    /// Records that `seq` was reached now. A record is appended when the last one is at least
    /// 100 ms old — preceded by the position published just before, if that one was held back —
    /// so the history is exact to 100 ms at a cost of at most two records per 100 ms.
    fn log(&mut self, seq: u64) {
        let now = now_micros();
        let due = self
            .logged
            .is_none_or(|(_, t)| now.saturating_sub(t) >= HISTORY_EVERY_US);
        if !due {
            self.held = Some((seq, now));
            return;
        }
        if let Some(held) = self.held.take() {
            self.append(held);
        }
        self.append((seq, now));
    }

    fn append(&mut self, (seq, micros): (u64, i64)) {
        let Some(f) = self.history.as_mut() else {
            return;
        };
        // One write of a whole record: a crash leaves at most a torn last record, which
        // readers skip by its CRC.
        if let Err(e) = std::io::Write::write_all(f, &encode_record(seq, micros)) {
            tracing::warn!("cannot append to the tape's durability history: {e}");
            self.history = None;
        }
        self.logged = Some((seq, micros));
    }

    /// Publishes `seq` if it moved. A failure is logged once and otherwise ignored: live
    /// readers then lag, the tape is unaffected.
    pub fn publish(&mut self, seq: u64) {
        if self.last == Some(seq) {
            return;
        }
        self.log(seq);
        self.generation = self.generation.wrapping_add(1);
        if let Err(e) = self.file.write_all_at(&encode(seq, self.generation), 0)
            && self.last.is_none()
        {
            tracing::warn!("cannot publish the tape's acknowledged position: {e}");
        }
        self.last = Some(seq);
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        // The last position reached goes into the history even if it moved less than 100 ms
        // after the previous record.
        if let Some(held) = self.held.take() {
            self.append(held);
        }
    }
}

/// What the durability history of `dir` says about wall-clock time `micros`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurableAt {
    /// Rows before this sequence number were durable at that time (the most the history
    /// proves; rows that became durable in the last 100 ms before it may be left out).
    Seq(u64),
    /// The tape has no history (written by a version before it was kept).
    NoHistory,
    /// The history starts later (a writer without it wrote the tape's first rows): before
    /// `since` (µs), at `seq` rows, it cannot tell.
    Before {
        /// Time of the first record.
        since: i64,
        /// Position of the first record.
        seq: u64,
    },
}

/// The acknowledged position at wall-clock time `micros` (µs since the Unix epoch, UTC), from
/// `dir/DURABLE`.
pub fn durable_at(dir: &Path, micros: i64) -> Result<DurableAt> {
    let path = dir.join(DURABLE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DurableAt::NoHistory),
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    let mut first: Option<(u64, i64)> = None;
    let mut best: Option<u64> = None;
    for (seq, t) in bytes.chunks_exact(RECORD).filter_map(decode_record) {
        first.get_or_insert((seq, t));
        if t <= micros {
            best = Some(best.map_or(seq, |b| b.max(seq)));
        }
    }
    Ok(match (best, first) {
        (Some(seq), _) => DurableAt::Seq(seq),
        (None, None) => DurableAt::NoHistory,
        // Before the first record of a history that starts with an empty tape: no rows yet.
        (None, Some((0, _))) => DurableAt::Seq(0),
        (None, Some((seq, since))) => DurableAt::Before { since, seq },
    })
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
    // The writer holds an exclusive lock; a shared one is refused while it runs. (Any other
    // failure to lock says nothing about a writer.) The shared lock, if taken, is released
    // when `f` closes, at once.
    matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock))
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

    #[test]
    fn the_history_answers_as_of_a_time_and_skips_a_torn_record() {
        let dir = tempfile_dir();
        assert_eq!(durable_at(&dir, 0).unwrap(), DurableAt::NoHistory);
        let mut bytes = Vec::new();
        for (seq, t) in [(0u64, 1_000i64), (10, 2_000), (25, 3_000)] {
            bytes.extend_from_slice(&encode_record(seq, t));
        }
        let mut torn = encode_record(99, 4_000);
        torn[3] ^= 1;
        bytes.extend_from_slice(&torn);
        bytes.extend_from_slice(&encode_record(30, 5_000)[..10]);
        std::fs::write(dir.join(DURABLE_FILE), &bytes).unwrap();
        assert_eq!(durable_at(&dir, 999).unwrap(), DurableAt::Seq(0));
        assert_eq!(durable_at(&dir, 2_500).unwrap(), DurableAt::Seq(10));
        assert_eq!(durable_at(&dir, 10_000).unwrap(), DurableAt::Seq(25));
        // A history that starts on a tape already holding rows cannot tell before it starts.
        std::fs::write(dir.join(DURABLE_FILE), encode_record(7, 2_000)).unwrap();
        assert_eq!(
            durable_at(&dir, 1_000).unwrap(),
            DurableAt::Before {
                since: 2_000,
                seq: 7
            }
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_publisher_writes_the_history_at_most_every_100_ms_and_its_last_position_on_drop() {
        let dir = tempfile_dir();
        let mut p = Publisher::open(&dir).unwrap();
        for seq in 0..50 {
            p.publish(seq);
        }
        drop(p);
        let bytes = std::fs::read(dir.join(DURABLE_FILE)).unwrap();
        let records: Vec<(u64, i64)> = bytes
            .chunks_exact(RECORD)
            .filter_map(decode_record)
            .collect();
        assert_eq!(records.first().map(|r| r.0), Some(0));
        assert_eq!(records.last().map(|r| r.0), Some(49));
        assert!(
            records.len() < 10,
            "{} records for 50 publishes in well under a second",
            records.len()
        );
        assert!(
            records
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "tapedeck-acked-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
