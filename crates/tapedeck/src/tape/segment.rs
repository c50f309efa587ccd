//! Reading segments: header, footer, and a frame-by-frame scan that finds torn tails and corrupt
//! middles.
//!
//! [`scan`] walks a segment's frames from its header, checking each frame's magic, version,
//! lengths, CRC32C and sequence continuity. At the first frame that fails it searches forward for
//! the next frame that checks out and continues the sequence: if there is one, the bytes between
//! are a *gap* (a corrupt middle); if there is none, they are a *torn tail*. Sealed segments can
//! also be opened from their footer without a scan ([`open_indexed`]).

use super::format::{
    FRAME_HEADER, FRAME_MAGIC, FRAME_TRAILER, Footer, FormatError, FrameHeader, HEADER_FIXED,
    SegmentHeader,
};
use crate::error::{Error, Result};
use crate::storage::Storage;

/// A frame found in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef {
    /// Byte offset of the frame in the file.
    pub offset: u64,
    /// Its header.
    pub header: FrameHeader,
}

/// Damaged bytes between two good frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// First damaged byte.
    pub offset: u64,
    /// First byte of the next good frame.
    pub end: u64,
    /// First sequence number missing.
    pub rows_from: u64,
    /// Rows missing.
    pub rows: u64,
}

/// What a scan found in a segment.
#[derive(Debug, Clone)]
pub struct Scanned {
    /// File name.
    pub name: String,
    /// The header.
    pub header: SegmentHeader,
    /// Header length in bytes.
    pub header_len: u64,
    /// Good frames, in order.
    pub frames: Vec<FrameRef>,
    /// Corrupt middles.
    pub gaps: Vec<Gap>,
    /// End of the last good frame: where a torn tail starts, or the footer.
    pub valid_end: u64,
    /// File length.
    pub file_len: u64,
    /// Footer, if the segment is sealed and its footer checks out.
    pub footer: Option<Footer>,
    /// Where the footer starts (sealed segments).
    pub footer_offset: Option<u64>,
}

impl Scanned {
    /// Sequence number after the last good row.
    pub fn end_seq(&self) -> u64 {
        self.frames
            .last()
            .map_or(self.header.first_seq, |f| f.header.end_seq())
    }

    /// Sequence number after the last row, from the footer (sealed segments).
    pub fn end_seq_from_footer(&self) -> u64 {
        self.header
            .first_seq
            .saturating_add(self.footer.as_ref().map_or(0, |f| f.rows))
    }

    /// Rows in good frames.
    pub fn rows(&self) -> u64 {
        self.frames.iter().map(|f| u64::from(f.header.rows)).sum()
    }

    /// Bytes after the last good frame that are not a footer (a torn tail).
    pub fn torn_bytes(&self) -> u64 {
        match self.footer_offset {
            Some(f) if self.footer.is_some() => f - self.valid_end,
            _ => self.file_len - self.valid_end,
        }
    }

    /// Min and max event time over the good frames.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        self.frames
            .iter()
            .filter_map(|f| f.header.time)
            .reduce(|(a, b), (c, d)| (a.min(c), b.max(d)))
    }
}

/// A segment that cannot be read at all (its header is damaged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadHeader {
    /// Why.
    pub problem: FormatError,
    /// File length.
    pub file_len: u64,
}

fn io_err(storage: &dyn Storage, name: &str, e: std::io::Error) -> Error {
    Error::io("read", storage.describe(name), e)
}

/// Every segment file in the directory: `(first_seq, file name)` in sequence order, a
/// compacted segment after the one it replaces that starts at the same row. While a
/// compaction is under way (or after a crash in one) this holds both the replaced segments and
/// their replacements, each whole: a reader that takes each row from the last segment starting
/// at or before it reads the same rows from either ([`super::reader`] does). Whatever walks
/// every segment in turn wants [`list_live`].
pub fn list(storage: &dyn Storage) -> Result<Vec<(u64, String)>> {
    let mut v: Vec<(u64, u64, String)> = storage
        .list()
        .map_err(|e| Error::io("list", storage.describe(""), e))?
        .into_iter()
        .filter_map(|n| super::format::parse_segment_file(&n).map(|(s, g)| (s, g, n)))
        .collect();
    v.sort();
    Ok(v.into_iter().map(|(s, _, n)| (s, n)).collect())
}

/// The tape's segments, one for each row: [`list`] as [`super::compact::live`] sees it (the
/// files a finished compaction replaced, or the output of an unfinished one, left out). Tapes
/// never compacted read no manifest here.
pub fn list_live(storage: &dyn Storage) -> Result<Vec<(u64, String)>> {
    list_live_with(storage, &mut ManifestMemo::default())
}

/// The manifest's records as last read, with its length then: a reader that lists the tape
/// again and again (following it) reads the manifest only when it has grown.
#[derive(Debug, Default)]
pub struct ManifestMemo(Option<(u64, std::sync::Arc<Vec<super::manifest::Record>>)>);

/// [`list_live`], reading the manifest only if it changed length since `memo` was filled.
/// Records read late are safe here: a compaction appends its record before it moves or
/// removes a file, so the files a stale read keeps are still whole, and one removed under a
/// reader sends it back here after the manifest has grown.
pub fn list_live_with(
    storage: &dyn Storage,
    memo: &mut ManifestMemo,
) -> Result<Vec<(u64, String)>> {
    let listed = list(storage)?;
    if !listed
        .iter()
        .any(|(_, n)| super::compact::is_compacted_name(n))
    {
        return Ok(listed);
    }
    // Listed before the manifest is read: a compaction appends its record before it renames
    // its file into place and removes the old files after that, so the manifest read second
    // never hides a file this listing needs.
    let len = storage
        .len(super::manifest::MANIFEST)
        .map_err(|e| io_err(storage, super::manifest::MANIFEST, e))?
        .unwrap_or(0);
    let records = match &memo.0 {
        Some((seen, records)) if *seen == len => records.clone(),
        _ => {
            let records = std::sync::Arc::new(super::manifest::read_only(storage)?);
            memo.0 = Some((len, records.clone()));
            records
        }
    };
    Ok(super::compact::live(&listed, &records))
}

/// Reads a segment's header. `Ok(Err(_))` when the bytes are not a valid header.
pub fn read_header(
    storage: &dyn Storage,
    name: &str,
) -> Result<std::result::Result<(SegmentHeader, u64), BadHeader>> {
    let file_len = storage
        .len(name)
        .map_err(|e| io_err(storage, name, e))?
        .unwrap_or(0);
    let bad = |problem| Ok(Err(BadHeader { problem, file_len }));
    if file_len < HEADER_FIXED as u64 {
        return bad(FormatError::Short);
    }
    let mut fixed = vec![0u8; HEADER_FIXED];
    storage
        .read_at(name, 0, &mut fixed)
        .map_err(|e| io_err(storage, name, e))?;
    let s = match SegmentHeader::schema_len(&fixed) {
        Ok(s) => s,
        Err(e) => return bad(e),
    };
    let len = HEADER_FIXED + s + 4;
    if file_len < len as u64 {
        return bad(FormatError::Short);
    }
    let mut all = vec![0u8; len];
    storage
        .read_at(name, 0, &mut all)
        .map_err(|e| io_err(storage, name, e))?;
    match SegmentHeader::decode(&all) {
        Ok(h) => Ok(Ok((h, len as u64))),
        Err(e) => bad(e),
    }
}

/// Reads and checks the footer, if the file ends with one.
pub fn read_footer(
    storage: &dyn Storage,
    name: &str,
    file_len: u64,
) -> Result<Option<(Footer, u64)>> {
    if file_len < 16 {
        return Ok(None);
    }
    let mut tail = [0u8; 16];
    storage
        .read_at(name, file_len - 16, &mut tail)
        .map_err(|e| io_err(storage, name, e))?;
    let Ok(len) = Footer::len_from_tail(&tail) else {
        return Ok(None);
    };
    if len > file_len || len < 16 {
        return Ok(None);
    }
    let mut b = vec![0u8; len as usize];
    storage
        .read_at(name, file_len - len, &mut b)
        .map_err(|e| io_err(storage, name, e))?;
    match Footer::decode(&b) {
        Ok(f) => Ok(Some((f, file_len - len))),
        // A footer of a later version: refused, never taken for a torn tail and cut (as a
        // build before footer version 2 would cut a version-2 footer).
        Err(_) if Footer::is_newer_version(&b) => Err(Error::Tape {
            path: storage.describe(name),
            message: format!(
                "its footer (magic {:?}) has a format this build does not read: written by a newer tapedeck; this build reads footer versions 1 and 2 — open the tape with that newer version (nothing was changed)",
                String::from_utf8_lossy(&b[..4.min(b.len())])
            ),
        }),
        Err(_) => Ok(None),
    }
}

/// Longest read [`read_frame_sized`] makes on a hint alone: a hint can run past the frame (a
/// quarantined gap follows it in a resealed segment), and those bytes are read for nothing.
const SIZED_READ_MAX: u64 = 16 << 20;

/// [`read_frame`] of a frame whose length is known beforehand — from where the next frame of
/// an index starts —, in one read instead of two (its header, then the frame). When the hint
/// runs past the frame (a gap follows it), the frame is cut from what was read; a hint that
/// does not fit, a header that does not decode or gives a longer frame, and an error reading
/// the hinted bytes are all left to [`read_frame`], which says what is wrong.
pub fn read_frame_sized(
    storage: &dyn Storage,
    name: &str,
    offset: u64,
    len: u64,
    limit: u64,
) -> Result<std::result::Result<(FrameHeader, Vec<u8>), FormatError>> {
    let fits = len >= (FRAME_HEADER + FRAME_TRAILER) as u64
        && len <= SIZED_READ_MAX
        && offset.checked_add(len).is_some_and(|e| e <= limit);
    if !fits {
        return read_frame(storage, name, offset, limit);
    }
    let mut bytes = vec![0u8; len as usize];
    if storage.read_at(name, offset, &mut bytes).is_err() {
        // Perhaps only the bytes past the frame cannot be read (a bad sector in a gap).
        return read_frame(storage, name, offset, limit);
    }
    match FrameHeader::decode(&bytes) {
        Ok(h) if h.frame_len() as u64 <= len => {
            bytes.truncate(h.frame_len());
            let checked = h.check(&bytes).map(|_| ());
            Ok(checked.map(|()| (h, bytes)))
        }
        _ => read_frame(storage, name, offset, limit),
    }
}

/// Reads the frame at `offset` and checks it; returns its header and whole bytes, or why not.
pub fn read_frame(
    storage: &dyn Storage,
    name: &str,
    offset: u64,
    limit: u64,
) -> Result<std::result::Result<(FrameHeader, Vec<u8>), FormatError>> {
    // Offsets come from a footer index: checked, so a crafted one cannot overflow.
    if offset
        .checked_add(FRAME_HEADER as u64)
        .is_none_or(|e| e > limit)
    {
        return Ok(Err(FormatError::Short));
    }
    let mut head = [0u8; FRAME_HEADER];
    storage
        .read_at(name, offset, &mut head)
        .map_err(|e| io_err(storage, name, e))?;
    let h = match FrameHeader::decode(&head) {
        Ok(h) => h,
        Err(FormatError::Version(v)) => {
            newer_frame(storage, name, offset, limit, &head, v)?;
            return Ok(Err(FormatError::Version(v)));
        }
        Err(e) => return Ok(Err(e)),
    };
    let len = h.frame_len() as u64;
    if offset.checked_add(len).is_none_or(|e| e > limit) {
        return Ok(Err(FormatError::Short));
    }
    let mut bytes = vec![0u8; len as usize];
    storage
        .read_at(name, offset, &mut bytes)
        .map_err(|e| io_err(storage, name, e))?;
    let checked = h.check(&bytes).map(|_| ());
    Ok(checked.map(|()| (h, bytes)))
}

/// Opens a sealed segment from its footer, without scanning its frames. `None` if the segment
/// has no valid footer or header.
pub fn open_indexed(storage: &dyn Storage, name: &str) -> Result<Option<Scanned>> {
    let Ok((header, header_len)) = read_header(storage, name)? else {
        return Ok(None);
    };
    let file_len = storage
        .len(name)
        .map_err(|e| io_err(storage, name, e))?
        .unwrap_or(0);
    let Some((footer, footer_offset)) = read_footer(storage, name, file_len)? else {
        return Ok(None);
    };
    // A footer whose counts do not fit the header (or the file) is not trusted: the segment is
    // scanned instead.
    let end_seq = match header.first_seq.checked_add(footer.rows) {
        Some(e) if footer_offset >= header_len => e,
        _ => return Ok(None),
    };
    // Frame headers come from the index; rows per frame from the next frame's first_seq;
    // event times from a version-2 footer (`Scanned::frame_times_known`).
    let mut frames = Vec::with_capacity(footer.index.len());
    for (k, &(offset, first_seq)) in footer.index.iter().enumerate() {
        let next = footer.index.get(k + 1).map_or(end_seq, |n| n.1);
        let rows = u32::try_from(next.saturating_sub(first_seq)).unwrap_or(u32::MAX);
        let time = footer
            .times
            .as_ref()
            .and_then(|t| t.get(k).copied())
            .flatten();
        frames.push(FrameRef {
            offset,
            header: FrameHeader {
                compression: Default::default(),
                payload_len: 0,
                rows,
                first_seq,
                time,
                time_deltas: false,
            },
        });
    }
    Ok(Some(Scanned {
        name: name.to_string(),
        header,
        header_len,
        frames,
        gaps: Vec::new(),
        valid_end: footer_offset,
        file_len,
        footer: Some(footer),
        footer_offset: Some(footer_offset),
    }))
}

/// Scans every frame of a segment; see the module docs. `Ok(Err(_))` if the header is damaged.
pub fn scan(storage: &dyn Storage, name: &str) -> Result<std::result::Result<Scanned, BadHeader>> {
    let (header, header_len) = match read_header(storage, name)? {
        Ok(h) => h,
        Err(bad) => return Ok(Err(bad)),
    };
    let file_len = storage
        .len(name)
        .map_err(|e| io_err(storage, name, e))?
        .unwrap_or(0);
    let footer = read_footer(storage, name, file_len)?;
    let limit = footer.as_ref().map_or(file_len, |(_, at)| *at);
    let mut frames = Vec::new();
    let mut gaps = Vec::new();
    let mut at = header_len;
    let mut expected = header.first_seq;
    while at < limit {
        match read_frame(storage, name, at, limit)? {
            Ok((h, _)) if h.first_seq == expected => {
                frames.push(FrameRef {
                    offset: at,
                    header: h,
                });
                expected = h.end_seq();
                at += h.frame_len() as u64;
            }
            _ => match resync(storage, name, at, limit, expected)? {
                Some((next, h)) => {
                    gaps.push(Gap {
                        offset: at,
                        end: next,
                        rows_from: expected,
                        rows: h.first_seq - expected,
                    });
                    expected = h.first_seq;
                    at = next;
                }
                None => break,
            },
        }
    }
    Ok(Ok(Scanned {
        name: name.to_string(),
        header,
        header_len,
        frames,
        gaps,
        valid_end: at.min(limit),
        file_len,
        footer: footer.as_ref().map(|(f, _)| f.clone()),
        footer_offset: footer.map(|(_, at)| at),
    }))
}

/// A frame whose version this build does not know: if its CRC checks out it is no damage but a
/// frame a newer tapedeck wrote, and recovery must not cut or quarantine it — an error, saying
/// so. (A damaged header that only looks like another version fails the CRC: damage, as ever.)
fn newer_frame(
    storage: &dyn Storage,
    name: &str,
    offset: u64,
    limit: u64,
    head: &[u8; FRAME_HEADER],
    version: u16,
) -> Result<()> {
    let payload = u64::from(u32::from_le_bytes([head[8], head[9], head[10], head[11]]));
    let Some(end) = offset
        .checked_add(FRAME_HEADER as u64)
        .and_then(|e| e.checked_add(payload))
        .and_then(|e| e.checked_add(4))
        .filter(|&e| e <= limit && payload <= u64::from(super::format::MAX_PAYLOAD))
    else {
        return Ok(());
    };
    let mut bytes = vec![0u8; (end - offset) as usize];
    storage
        .read_at(name, offset, &mut bytes)
        .map_err(|e| io_err(storage, name, e))?;
    let body = bytes.len() - 4;
    let crc = u32::from_le_bytes([
        bytes[body],
        bytes[body + 1],
        bytes[body + 2],
        bytes[body + 3],
    ]);
    if crc32c::crc32c(&bytes[..body]) == crc {
        return Err(Error::Tape {
            path: storage.describe(name),
            message: format!(
                "the frame at byte {offset} has format version {version}, written by a newer tapedeck; this build reads versions 1 to 3 — open the tape with that newer version (nothing was changed)"
            ),
        });
    }
    Ok(())
}

/// Bytes read at a time by scans that walk a whole segment (resync, hashing, copying): recovery
/// and `verify` use this much memory per segment, whatever `--segment-bytes` is.
const SCAN_CHUNK: usize = 1 << 20;

/// The next offset after `from` where a frame checks out and does not go back in sequence.
/// Reads the file a chunk at a time; only a candidate frame is read whole.
fn resync(
    storage: &dyn Storage,
    name: &str,
    from: u64,
    limit: u64,
    expected: u64,
) -> Result<Option<(u64, FrameHeader)>> {
    let mut window = vec![0u8; SCAN_CHUNK + FRAME_HEADER];
    let mut base = from.saturating_add(1);
    while base.saturating_add(FRAME_HEADER as u64) <= limit {
        let n = usize::try_from(limit - base).map_or(window.len(), |r| r.min(window.len()));
        storage
            .read_at(name, base, &mut window[..n])
            .map_err(|e| io_err(storage, name, e))?;
        let mut i = 0;
        while i + FRAME_HEADER <= n {
            // A frame of a newer version is read too: `read_frame` refuses the tape if its CRC
            // checks out, rather than let it be cut as part of a torn tail.
            if &window[i..i + 4] == FRAME_MAGIC
                && matches!(
                    FrameHeader::decode(&window[i..]),
                    Err(FormatError::Version(_))
                )
            {
                // Its own `Ok(Err(_))` (damage) changes nothing here: the search goes on.
                let _ = read_frame(storage, name, base + i as u64, limit)?;
            }
            if &window[i..i + 4] == FRAME_MAGIC
                && let Ok(h) = FrameHeader::decode(&window[i..])
                && h.first_seq >= expected
            {
                let at = base + i as u64;
                if let Ok((h, _)) = read_frame(storage, name, at, limit)? {
                    return Ok(Some((at, h)));
                }
            }
            i += 1;
        }
        // The next window starts where a frame header could still begin whole.
        base += i as u64;
    }
    Ok(None)
}

/// Whether any frame in the file checks out (found by its magic and CRC, without the header):
/// tells a header torn before anything was acknowledged from one damaged later.
pub fn any_frame(storage: &dyn Storage, name: &str, file_len: u64) -> Result<bool> {
    Ok(resync(storage, name, 0, file_len, 0)?.is_some())
}

/// The chain hash of a segment's bytes `[0, end)` following `prev` (read a chunk at a time).
pub fn chain_hash(
    storage: &dyn Storage,
    name: &str,
    prev: &[u8; 32],
    end: u64,
) -> Result<[u8; 32]> {
    let mut h = super::format::ChainHasher::new(prev);
    for_each_chunk(storage, name, 0, end, |b| {
        h.update(b);
        Ok(())
    })?;
    Ok(h.finish())
}

/// Copies bytes `[from, end)` of `name` to the end of `to` (a chunk at a time).
pub fn copy_range(storage: &dyn Storage, name: &str, from: u64, end: u64, to: &str) -> Result<()> {
    for_each_chunk(storage, name, from, end, |b| {
        storage
            .append(to, b)
            .map_err(|e| Error::io("write", storage.describe(to), e))
    })
}

fn for_each_chunk(
    storage: &dyn Storage,
    name: &str,
    from: u64,
    end: u64,
    mut f: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut buf = vec![0u8; SCAN_CHUNK];
    let mut pos = from;
    while pos < end {
        let n = usize::try_from(end - pos).map_or(buf.len(), |r| r.min(buf.len()));
        storage
            .read_at(name, pos, &mut buf[..n])
            .map_err(|e| io_err(storage, name, e))?;
        f(&buf[..n])?;
        pos += n as u64;
    }
    Ok(())
}
