//! How records lie in a journal file: the two framings of `docs/journal-format.md` —
//! CRC32C-framed JSON lines (readable in an editor) and CRC32C-framed MessagePack (smaller,
//! faster) — and a reader that walks a file record by record in bounded memory, telling a torn
//! append from damage.
//!
//! Guarantees: [`encode`] of a record read back by [`RecordReader`] gives the same record;
//! every byte sequence read gives records or a typed problem with its offset, never a panic.

use std::io;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Record;
use crate::storage::Storage;

/// How a journal's records are framed in its files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum JournalFormat {
    /// One line per record: 8 hex digits of CRC32C, a tab, the record as JSON, `\n`.
    #[default]
    JsonLines,
    /// An 8-byte file magic, then per record a 12-byte header (length, CRC32C of the payload,
    /// CRC32C of those 8 bytes) and the record as a MessagePack map.
    MessagePack,
}

/// The first bytes of a MessagePack journal file.
pub(super) const MSGPACK_MAGIC: &[u8; 8] = b"TDJ\x00MP1\n";

/// Bytes of a MessagePack record's header.
const HEADER: usize = 12;

/// A MessagePack record's payload is at most this long (a bigger length field is damage).
const MAX_PAYLOAD: usize = 1 << 30;

/// The first read of a file, and how much more each later read asks for.
const CHUNK: usize = 256 << 10;

impl JournalFormat {
    /// What a new file of this format starts with, before its first record.
    pub(super) fn preamble(self) -> &'static [u8] {
        match self {
            JournalFormat::JsonLines => b"",
            JournalFormat::MessagePack => MSGPACK_MAGIC,
        }
    }

    /// The format of a file that starts with `head` (its first 8 bytes, or all of a shorter
    /// file): the magic, or a start of it, is MessagePack; anything else JSON lines (whose
    /// first byte is a hex digit).
    pub(super) fn detect(head: &[u8]) -> JournalFormat {
        let n = head.len().min(MSGPACK_MAGIC.len());
        if n > 0 && head[..n] == MSGPACK_MAGIC[..n] {
            JournalFormat::MessagePack
        } else {
            JournalFormat::JsonLines
        }
    }
}

/// `record` framed for a file of `format`.
pub(super) fn encode(format: JournalFormat, record: &Record) -> Result<Vec<u8>, String> {
    match format {
        JournalFormat::JsonLines => {
            let json = serde_json::to_vec(record).map_err(|e| e.to_string())?;
            let mut line = format!("{:08x}\t", crc32c::crc32c(&json)).into_bytes();
            line.extend_from_slice(&json);
            line.push(b'\n');
            Ok(line)
        }
        JournalFormat::MessagePack => {
            let payload = rmp_serde::to_vec_named(record).map_err(|e| e.to_string())?;
            let len = u32::try_from(payload.len())
                .ok()
                .filter(|n| (*n as usize) <= MAX_PAYLOAD)
                .ok_or_else(|| format!("a record of {} bytes is too large", payload.len()))?;
            let mut frame = Vec::with_capacity(HEADER + payload.len());
            frame.extend_from_slice(&len.to_le_bytes());
            frame.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
            let check = crc32c::crc32c(&frame);
            frame.extend_from_slice(&check.to_le_bytes());
            frame.extend_from_slice(&payload);
            Ok(frame)
        }
    }
}

/// What one record's bytes held.
#[derive(Debug)]
pub(super) enum Read {
    /// A record that checks out.
    Good(Record),
    /// Bytes that are not a good record. `whole`: they were written whole (their CRC checks
    /// out), so they are damage wherever they are, never a torn append.
    Bad { problem: String, whole: bool },
}

/// One record's place in its file and what it held.
#[derive(Debug)]
pub(super) struct Item {
    /// Byte offset where it starts.
    pub offset: u64,
    /// Byte offset after it: where the next record (or, after bad bytes, the next good-looking
    /// one) starts.
    pub end: u64,
    pub read: Read,
}

/// Reads a journal file record by record, holding about 256 KiB of it (more only for a
/// record larger than that, or to look past damage in a MessagePack file).
pub(super) struct RecordReader<S> {
    storage: S,
    name: String,
    format: JournalFormat,
    /// The file's length when last looked at.
    len: u64,
    /// Bytes of the file from offset `buf_at`.
    buf: Vec<u8>,
    buf_at: u64,
    /// Offset of the next record.
    at: u64,
}

/// What a [`RecordReader`] reads through: a borrowed storage, or a shared one (a reader that
/// outlives the call that made it).
pub(super) trait StorageRef {
    fn storage(&self) -> &dyn Storage;
}

impl StorageRef for &dyn Storage {
    fn storage(&self) -> &dyn Storage {
        *self
    }
}

impl StorageRef for Arc<dyn Storage> {
    fn storage(&self) -> &dyn Storage {
        self.as_ref()
    }
}

impl<S: StorageRef> RecordReader<S> {
    /// A reader of file `name` from byte `from` (0: its first record, after any preamble);
    /// `None` when there is no such file.
    pub fn open(storage: S, name: &str, from: u64) -> io::Result<Option<Self>> {
        let Some(len) = storage.storage().len(name)? else {
            return Ok(None);
        };
        let mut r = RecordReader {
            storage,
            name: name.to_string(),
            format: JournalFormat::JsonLines,
            len,
            buf: Vec::new(),
            buf_at: 0,
            at: 0,
        };
        r.fill_to(
            MSGPACK_MAGIC
                .len()
                .min(usize::try_from(len).unwrap_or(usize::MAX)),
        )?;
        r.format = JournalFormat::detect(&r.buf);
        let start = r.format.preamble().len() as u64;
        r.at = from.max(start.min(len));
        Ok(Some(r))
    }

    /// The file's framing.
    pub fn format(&self) -> JournalFormat {
        self.format
    }

    /// Offset of the next record.
    pub fn offset(&self) -> u64 {
        self.at
    }

    /// The file's length when last looked at.
    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// Whether the file's preamble is whole (a MessagePack file cut inside its magic holds
    /// nothing: a crash while it was created).
    pub fn preamble_whole(&self) -> bool {
        self.len >= self.format.preamble().len() as u64
    }

    /// The next record, or `None` at the end of the file.
    pub fn next_item(&mut self) -> io::Result<Option<Item>> {
        if self.at >= self.len {
            return Ok(None);
        }
        let item = match self.format {
            JournalFormat::JsonLines => self.next_line()?,
            JournalFormat::MessagePack => self.next_frame()?,
        };
        self.at = item.end;
        Ok(Some(item))
    }

    /// Makes `buf` hold the file from `at` for at least `need` bytes, or to the end of the
    /// file; returns the bytes held from `at`. Bytes before `at` are dropped only when more
    /// must be read, so walking a file costs one copy per chunk, not per record.
    fn window(&mut self, at: u64, need: usize) -> io::Result<&[u8]> {
        let held_end = self.buf_at + self.buf.len() as u64;
        if at < self.buf_at || at > held_end {
            self.buf.clear();
            self.buf_at = at;
        }
        let want = need.min(usize::try_from(self.len.saturating_sub(at)).unwrap_or(usize::MAX));
        let mut rel = usize::try_from(at - self.buf_at).unwrap_or(0);
        if self.buf.len() - rel < want {
            self.buf.drain(..rel);
            self.buf_at = at;
            rel = 0;
            self.fill_to(want)?;
        }
        Ok(&self.buf[rel..])
    }

    /// Reads the file into `buf` (which starts at `buf_at`) until it holds `want` bytes,
    /// reading at least a chunk at a time.
    fn fill_to(&mut self, want: usize) -> io::Result<()> {
        let have = self.buf.len();
        if have >= want {
            return Ok(());
        }
        let end = self.buf_at.saturating_add(have as u64);
        let left = usize::try_from(self.len.saturating_sub(end)).unwrap_or(usize::MAX);
        let more = (want - have).max(CHUNK).min(left);
        self.buf.resize(have + more, 0);
        if let Err(e) = self
            .storage
            .storage()
            .read_at(&self.name, end, &mut self.buf[have..])
        {
            self.buf.truncate(have);
            return Err(e);
        }
        Ok(())
    }

    fn next_line(&mut self) -> io::Result<Item> {
        let at = self.at;
        let mut need = CHUNK;
        loop {
            let len = self.len;
            let window = self.window(at, need)?;
            if let Some(n) = window.iter().position(|b| *b == b'\n') {
                let read = decode_line(&window[..n]);
                return Ok(Item {
                    offset: at,
                    end: at + n as u64 + 1,
                    read,
                });
            }
            if at + window.len() as u64 >= len {
                // No newline before the end: the last append did not finish.
                return Ok(Item {
                    offset: at,
                    end: len,
                    read: Read::Bad {
                        problem: "an unterminated record".into(),
                        whole: false,
                    },
                });
            }
            need = need.saturating_mul(2);
        }
    }

    fn next_frame(&mut self) -> io::Result<Item> {
        let at = self.at;
        let (read, end) = match self.frame_at(at)? {
            Frame::Whole { payload_end, read } => (read, payload_end),
            Frame::Bad {
                problem,
                payload_end,
            } => {
                // Where the next good frame starts, if one does: a bad header or length gives
                // no place to continue, so look for one byte by byte.
                let end = match payload_end {
                    Some(end) => end,
                    None => self.next_good_frame(at + 1)?.unwrap_or(self.len),
                };
                (
                    Read::Bad {
                        problem,
                        whole: false,
                    },
                    end,
                )
            }
        };
        Ok(Item {
            offset: at,
            end,
            read,
        })
    }

    /// The frame at `at`.
    fn frame_at(&mut self, at: u64) -> io::Result<Frame> {
        let len = self.len;
        let header = self.window(at, HEADER)?;
        let Some(h) = header.get(..HEADER) else {
            return Ok(Frame::Bad {
                problem: "a record header cut short".into(),
                payload_end: None,
            });
        };
        let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let (n, crc, check) = (word(0) as usize, word(4), word(8));
        if crc32c::crc32c(&h[..8]) != check {
            return Ok(Frame::Bad {
                problem: format!(
                    "bad header CRC (stored {check:08x}, computed {:08x})",
                    crc32c::crc32c(&h[..8])
                ),
                payload_end: None,
            });
        }
        let end = at + (HEADER + n) as u64;
        if n > MAX_PAYLOAD || end > len {
            return Ok(Frame::Bad {
                problem: format!("a record of {n} bytes runs past the end of the file"),
                payload_end: None,
            });
        }
        let frame = self.window(at, HEADER + n)?;
        let payload = &frame[HEADER..HEADER + n];
        let computed = crc32c::crc32c(payload);
        if computed != crc {
            return Ok(Frame::Bad {
                problem: format!("bad CRC (stored {crc:08x}, computed {computed:08x})"),
                payload_end: Some(end),
            });
        }
        let read = match rmp_serde::from_slice::<Record>(payload) {
            Ok(record) => Read::Good(record),
            Err(e) => Read::Bad {
                problem: format!("bad MessagePack: {e}"),
                whole: true,
            },
        };
        Ok(Frame::Whole {
            payload_end: end,
            read,
        })
    }

    /// The offset of the first frame at or after `from` whose header and payload check out.
    fn next_good_frame(&mut self, from: u64) -> io::Result<Option<u64>> {
        let mut at = from;
        while at + HEADER as u64 <= self.len {
            if let Frame::Whole { .. } = self.frame_at(at)? {
                return Ok(Some(at));
            }
            at += 1;
        }
        Ok(None)
    }
}

enum Frame {
    Whole {
        payload_end: u64,
        read: Read,
    },
    Bad {
        problem: String,
        /// Where the frame ends, when its header can be trusted.
        payload_end: Option<u64>,
    },
}

/// A line's record (without its `\n`), or what is wrong with it.
fn decode_line(line: &[u8]) -> Read {
    let bad = |problem: String, whole: bool| Read::Bad { problem, whole };
    let (crc, json) = match line.get(..9) {
        Some(head) if head[8] == b'\t' => (&head[..8], &line[9..]),
        _ => return bad("no CRC before the record".into(), false),
    };
    let crc = crc
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        .then(|| std::str::from_utf8(crc).ok())
        .flatten()
        .and_then(|c| u32::from_str_radix(c, 16).ok());
    let Some(crc) = crc else {
        return bad("the CRC is not 8 lowercase hex digits".into(), false);
    };
    let computed = crc32c::crc32c(json);
    if computed != crc {
        return bad(
            format!("bad CRC (stored {crc:08x}, computed {computed:08x})"),
            false,
        );
    }
    match serde_json::from_slice(json) {
        Ok(record) => Read::Good(record),
        Err(e) => bad(format!("bad JSON: {e}"), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    fn record(seq: u64) -> Record {
        Record {
            seq,
            time: 1_700_000_000_000_000 + seq as i64,
            action: format!("set {seq}"),
            author: seq.is_multiple_of(2).then(|| "ana".into()),
            patch: (seq > 0).then(|| {
                serde_json::from_value(serde_json::json!([
                    {"op": "add", "path": format!("/k{seq}"), "value": seq}
                ]))
                .unwrap()
            }),
            snapshot: (seq == 0).then(|| serde_json::json!({"a": [1, 2.5, "x", null]})),
            version: (seq == 0).then_some(3),
        }
    }

    fn file(format: JournalFormat, n: u64) -> Vec<u8> {
        let mut bytes = format.preamble().to_vec();
        for seq in 0..n {
            bytes.extend(encode(format, &record(seq)).unwrap());
        }
        bytes
    }

    fn read_all(bytes: Vec<u8>) -> (JournalFormat, Vec<Item>) {
        let storage = MemStorage::new();
        storage.put("j", bytes);
        let mut r = RecordReader::open(&storage as &dyn Storage, "j", 0)
            .unwrap()
            .unwrap();
        let mut items = Vec::new();
        while let Some(item) = r.next_item().unwrap() {
            items.push(item);
        }
        (r.format(), items)
    }

    #[test]
    fn both_framings_read_back_what_was_written() {
        for format in [JournalFormat::JsonLines, JournalFormat::MessagePack] {
            let (found, items) = read_all(file(format, 5));
            assert_eq!(found, format);
            let records: Vec<Record> = items
                .into_iter()
                .map(|i| match i.read {
                    Read::Good(r) => r,
                    Read::Bad { problem, .. } => panic!("{format:?}: {problem}"),
                })
                .collect();
            assert_eq!(records, (0..5).map(record).collect::<Vec<_>>());
        }
    }

    #[test]
    fn the_message_pack_frame_is_laid_out_as_specified() {
        let r = record(1);
        let frame = encode(JournalFormat::MessagePack, &r).unwrap();
        let payload = rmp_serde::to_vec_named(&r).unwrap();
        assert_eq!(&frame[0..4], &(payload.len() as u32).to_le_bytes());
        assert_eq!(&frame[4..8], &crc32c::crc32c(&payload).to_le_bytes());
        assert_eq!(&frame[8..12], &crc32c::crc32c(&frame[..8]).to_le_bytes());
        assert_eq!(&frame[12..], &payload[..]);
        // The payload is a map whose keys are the JSON member names.
        assert_eq!(payload[0] & 0xf0, 0x80, "a fixmap");
        assert!(payload.windows(6).any(|w| w == b"action"));
    }

    #[test]
    fn every_cut_of_a_message_pack_file_reads_a_prefix_then_a_torn_record() {
        let bytes = file(JournalFormat::MessagePack, 4);
        for cut in MSGPACK_MAGIC.len()..bytes.len() {
            let (_, items) = read_all(bytes[..cut].to_vec());
            let good = items
                .iter()
                .take_while(|i| matches!(i.read, Read::Good(_)))
                .count();
            let rest = &items[good..];
            assert!(rest.len() <= 1, "cut {cut}: {rest:?}");
            if let Some(i) = rest.first() {
                assert!(
                    matches!(i.read, Read::Bad { whole: false, .. }),
                    "cut {cut}"
                );
                assert_eq!(i.end, cut as u64, "cut {cut}");
            }
        }
    }

    #[test]
    fn a_bit_flip_in_a_message_pack_frame_is_bad_and_the_next_frame_is_found() {
        let bytes = file(JournalFormat::MessagePack, 3);
        let second = MSGPACK_MAGIC.len()
            + encode(JournalFormat::MessagePack, &record(0))
                .unwrap()
                .len();
        let third = second
            + encode(JournalFormat::MessagePack, &record(1))
                .unwrap()
                .len();
        // Flip a bit in the length, in the header CRC, in the payload.
        for at in [second, second + 9, second + 20] {
            let mut b = bytes.clone();
            b[at] ^= 0x10;
            let (_, items) = read_all(b);
            assert_eq!(items.len(), 3, "flip at {at}: {items:?}");
            assert!(matches!(items[1].read, Read::Bad { .. }), "flip at {at}");
            assert_eq!(items[1].offset, second as u64);
            assert_eq!(items[2].offset, third as u64);
            assert!(matches!(items[2].read, Read::Good(ref r) if r.seq == 2));
        }
    }

    #[test]
    fn a_file_cut_inside_its_magic_is_message_pack_with_nothing_in_it() {
        for cut in 1..MSGPACK_MAGIC.len() {
            let storage = MemStorage::new();
            storage.put("j", MSGPACK_MAGIC[..cut].to_vec());
            let mut r = RecordReader::open(&storage as &dyn Storage, "j", 0)
                .unwrap()
                .unwrap();
            assert_eq!(r.format(), JournalFormat::MessagePack);
            assert!(!r.preamble_whole());
            assert!(r.next_item().unwrap().is_none());
        }
    }

    #[test]
    fn a_json_line_longer_than_a_chunk_is_read_whole() {
        let mut r = record(0);
        r.snapshot = Some(serde_json::json!({"big": "x".repeat(3 * CHUNK)}));
        let mut bytes = encode(JournalFormat::JsonLines, &r).unwrap();
        bytes.extend(encode(JournalFormat::JsonLines, &record(1)).unwrap());
        let (_, items) = read_all(bytes);
        assert_eq!(items.len(), 2);
        assert!(matches!(&items[0].read, Read::Good(g) if *g == r));
    }
}
