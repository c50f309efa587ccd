//! Compaction: sealed segments rewritten into fewer segments of large frames (`tapedeck
//! compact`), keeping every sequence number and the proof of the history.
//!
//! A tape written by a slow source, or before frames were sized for the disk, holds many small
//! frames and segments: each costs a header, an index entry and a CRC, compresses poorly and
//! makes readers seek. Compaction reads a run of sealed segments, joins their rows into frames
//! of up to `frame_rows` rows, writes them as new segments and swaps the new for the old in one
//! step. What it guarantees (`docs/tape-format.md`, "Compaction"):
//!
//! - **Every row stays, with its sequence number.** Each new segment is decoded again and
//!   compared row by row with the rows it replaces before anything is switched.
//! - **A crash at any point leaves the old form or the new form, never neither.** The new files
//!   are written under temporary names, fsynced, renamed to names no segment ever had, and only
//!   then does one `compacted` manifest record switch the tape to them; the old files are
//!   removed after it. A writer opening the tape finishes whichever side the record says
//!   ([`finish`]); [`live`] gives readers that walk every segment the same view meanwhile.
//! - **The history stays provable.** The record keeps the old chain's last hash; the first new
//!   segment's chain starts from it, and the segment after the range (which holds it) follows
//!   the new segments by the record ([`links`]), so `verify` proves the whole chain.
//! - **Readers running across it are not disturbed.** Each old and each new file is whole while
//!   it is listed, so a reader that takes each row from the last segment starting at or before
//!   it reads the same rows from either; a reader whose file is removed under it looks again.
//!
//! Only clean segments are rewritten: the range stops before a segment that is open, has
//! quarantined bytes, or whose chain does not check out.

use std::collections::{BTreeSet, HashSet};

use arrow_array::RecordBatch;
use serde::Serialize;

use super::codec::{BatchDecoder, BatchEncoder, time_range};
use super::format::{
    ChainHasher, Compression, FRAME_HEADER, FRAME_TRAILER, Footer, FrameHeader, SegmentHeader,
    compacted_segment_name, hex, parse_segment_file, unhex,
};
use super::manifest::{CompactedFile, Manifest, Record};
use super::segment::{self, Scanned};
use crate::error::{Error, Result};
use crate::storage::Storage;

/// Suffix of a compaction's file while it is written, before the switch.
const TEMP_SUFFIX: &str = ".new";
/// Output is handed to storage in pieces of about this size.
const WRITE_CHUNK: usize = 1 << 20;

/// Which sealed segments a compaction may rewrite: those wholly before this bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Before {
    /// Every sealed segment.
    #[default]
    All,
    /// Segments whose rows all lie before this sequence number.
    Seq(u64),
    /// Segments whose newest event time is before this instant (µs since the epoch, UTC).
    Time(i64),
}

impl std::str::FromStr for Before {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Before, String> {
        if let Some(n) = s.strip_prefix("seq:") {
            return n
                .parse()
                .map(Before::Seq)
                .map_err(|_| format!("`{n}` is not a sequence number"));
        }
        if let Some(t) = s.strip_prefix("time:") {
            return crate::record::time::parse_timestamp(t)
                .map(Before::Time)
                .ok_or_else(|| format!("`{t}` is not an ISO 8601 time"));
        }
        if let Ok(n) = s.parse() {
            return Ok(Before::Seq(n));
        }
        crate::record::time::parse_timestamp(s)
            .map(Before::Time)
            .ok_or_else(|| {
                format!(
                    "`{s}` is neither a sequence number nor a time; use e.g. 1000000, seq:1000000 or time:2026-01-01T00:00:00Z"
                )
            })
    }
}

/// How to compact.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// The range to rewrite.
    pub before: Before,
    /// A new segment takes old segments until their bytes reach this (new segments start where
    /// old ones did).
    pub segment_bytes: u64,
    /// Rows per new frame (a DAQ block stays a frame of its own).
    pub frame_rows: usize,
    /// Compression of the new frames.
    pub compression: Compression,
    /// `false`: only say what would be rewritten.
    pub apply: bool,
}

impl Default for CompactOptions {
    fn default() -> Self {
        let tape = super::TapeOptions::default();
        CompactOptions {
            before: Before::All,
            segment_bytes: tape.segment_bytes,
            frame_rows: tape.frame_rows,
            compression: tape.compression,
            apply: true,
        }
    }
}

/// What a compaction did (or, with `apply: false`, would do; the new side is then unknown).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CompactReport {
    /// The segment files replaced, in order.
    pub replaced: Vec<String>,
    /// The new segment files, in order.
    pub files: Vec<String>,
    /// First row of the rewritten range.
    pub first_seq: u64,
    /// Rows in it.
    pub rows: u64,
    /// Frames before and after.
    pub frames_before: u64,
    /// Frames after.
    pub frames_after: u64,
    /// Bytes before and after.
    pub bytes_before: u64,
    /// Bytes after.
    pub bytes_after: u64,
    /// Why the range ends before the bound asked for, if it does for another reason than an
    /// open segment (a damaged segment, quarantined bytes).
    pub stopped: Option<String>,
}

/// Whether `name` is a segment written by a compaction.
pub fn is_compacted_name(name: &str) -> bool {
    parse_segment_file(name).is_some_and(|(_, generation)| generation > 0)
}

/// What the manifest says about compactions: replaced files, committed new files, and files
/// the tape dropped otherwise (trimmed, removed whole).
struct Compactions<'a> {
    replaced: HashSet<&'a str>,
    committed: BTreeSet<&'a str>,
    dropped: HashSet<&'a str>,
}

impl<'a> Compactions<'a> {
    fn of(records: &'a [Record]) -> Compactions<'a> {
        let mut c = Compactions {
            replaced: HashSet::new(),
            committed: BTreeSet::new(),
            dropped: HashSet::new(),
        };
        for r in records {
            match r {
                Record::Compacted {
                    replaced, files, ..
                } => {
                    c.replaced.extend(replaced.iter().map(String::as_str));
                    c.committed.extend(files.iter().map(|f| f.file.as_str()));
                }
                Record::Trimmed { file, .. }
                | Record::Truncated {
                    file, offset: 0, ..
                }
                | Record::Quarantined {
                    file, offset: 0, ..
                } => {
                    c.dropped.insert(file);
                }
                _ => {}
            }
        }
        c
    }

    fn is_live(&self, name: &str) -> bool {
        !self.replaced.contains(name) && (!is_compacted_name(name) || self.committed.contains(name))
    }
}

/// A listing of segments: `(first_seq, file name)` in order.
pub type Listing = Vec<(u64, String)>;

/// The segments of `listed` that hold the tape's rows once every compaction the manifest
/// `records` commits is finished: without replaced files and without new files no record
/// commits. `Err` (with the same filter applied) when a committed new file is not in the
/// listing: the listing was taken before that compaction put its files in place, so it should
/// be taken again.
pub fn live(
    listed: &[(u64, String)],
    records: &[Record],
) -> std::result::Result<Listing, Listing> {
    let c = Compactions::of(records);
    let kept: Vec<(u64, String)> = listed
        .iter()
        .filter(|(_, n)| c.is_live(n))
        .cloned()
        .collect();
    let names: HashSet<&str> = listed.iter().map(|(_, n)| n.as_str()).collect();
    let missing = c
        .committed
        .iter()
        .any(|f| !c.replaced.contains(f) && !c.dropped.contains(f) && !names.contains(f));
    if missing { Err(kept) } else { Ok(kept) }
}

/// Whether a segment whose header holds `actual` as its previous-chain hash may follow one
/// whose chain hash is `expected` (or the trimmed segment before it): the same hash, or joined
/// by compactions — after a compaction's new segments comes the segment that held the old
/// chain's last hash, and the first new segment starts from that hash where the replaced ones
/// started from `expected`.
pub fn links(expected: &[u8; 32], actual: &[u8; 32], records: &[Record]) -> bool {
    let joins: Vec<([u8; 32], [u8; 32], [u8; 32])> = records
        .iter()
        .filter_map(|r| match r {
            Record::Compacted {
                prev_chain,
                old_chain,
                chain,
                ..
            } => Some((unhex(prev_chain)?, unhex(old_chain)?, unhex(chain)?)),
            _ => None,
        })
        .collect();
    // Each compaction is one step; a chain of them is as long as there were compactions.
    links_within(expected, actual, &joins, joins.len().min(16))
}

fn links_within(
    expected: &[u8; 32],
    actual: &[u8; 32],
    joins: &[([u8; 32], [u8; 32], [u8; 32])],
    depth: usize,
) -> bool {
    if expected == actual {
        return true;
    }
    let Some(depth) = depth.checked_sub(1) else {
        return false;
    };
    joins.iter().any(|(prev, old, new)| {
        (new == expected && links_within(old, actual, joins, depth))
            || (old == actual && links_within(expected, prev, joins, depth))
    })
}

/// Finishes what a crash interrupted (called by a writer opening the tape, and before a
/// compaction): removes the files a committed compaction replaced and the output of one never
/// committed (temporary files and new segments no record names). Returns how many files went.
pub fn finish(storage: &dyn Storage, records: &[Record]) -> Result<usize> {
    let c = Compactions::of(records);
    let mut removed = 0;
    let names = storage
        .list()
        .map_err(|e| Error::io("list", storage.describe(""), e))?;
    for name in names {
        let temp = name
            .strip_suffix(TEMP_SUFFIX)
            .is_some_and(|stem| parse_segment_file(stem).is_some());
        let stale = parse_segment_file(&name).is_some() && !c.is_live(&name);
        if temp || stale {
            storage
                .remove(&name)
                .map_err(|e| Error::io("remove", storage.describe(&name), e))?;
            removed += 1;
        }
    }
    if removed > 0 {
        storage
            .sync_dir("")
            .map_err(|e| Error::io("fsync", storage.describe(""), e))?;
    }
    Ok(removed)
}

/// One old segment chosen for rewriting.
struct Chosen {
    scanned: Scanned,
    footer: Footer,
}

/// Compacts the tape in `storage`, whose manifest is `manifest` (the caller holds the tape's
/// writer and no trim runs meanwhile); see the module docs.
pub(crate) fn compact(
    storage: &dyn Storage,
    manifest: &Manifest,
    options: &CompactOptions,
) -> Result<CompactReport> {
    let records = manifest.records();
    finish(storage, &records)?;
    let (chosen, stopped) = choose(storage, &records, options)?;
    let mut report = CompactReport {
        stopped,
        ..CompactReport::default()
    };
    let frame_rows = options.frame_rows.max(1) as u64;
    let worth_it = chosen.len() >= 2
        || chosen
            .iter()
            .any(|c| c.scanned.frames.len() as u64 > c.footer.rows.div_ceil(frame_rows).max(1));
    if !worth_it {
        return Ok(report);
    }
    let (Some(first), Some(last)) = (chosen.first(), chosen.last()) else {
        return Ok(report);
    };
    report.first_seq = first.scanned.header.first_seq;
    report.rows = last
        .scanned
        .end_seq_from_footer()
        .saturating_sub(report.first_seq);
    for c in &chosen {
        report.replaced.push(c.scanned.name.clone());
        report.frames_before += c.scanned.frames.len() as u64;
        report.bytes_before += c.scanned.file_len;
    }
    if !options.apply {
        return Ok(report);
    }
    let prev_chain = first.scanned.header.prev_chain;
    let old_chain = last.footer.chain;
    let generation = next_generation(storage, &records)?;
    let groups = group(&chosen, options.segment_bytes);
    let mut written: Vec<(String, CompactedFile)> = Vec::new();
    let outcome = (|| -> Result<()> {
        let mut link = old_chain;
        for g in &groups {
            let file = write_segment(storage, g, generation, &link, options)?;
            check_segment(storage, g, &file.0)?;
            link = unhex(&file.1.chain).unwrap_or(link);
            written.push(file);
        }
        Ok(())
    })();
    if let Err(e) = outcome {
        for (temp, _) in &written {
            let _ = storage.remove(temp);
        }
        // The segment being written when it failed.
        let _ = finish(storage, &records);
        return Err(e);
    }
    let sync_dir = || {
        storage
            .sync_dir("")
            .map_err(|e| Error::io("fsync", storage.describe(""), e))
    };
    sync_dir()?;
    for (temp, f) in &written {
        if let Err(e) = storage.rename(temp, &f.file) {
            for (temp, f) in &written {
                let _ = storage.remove(temp);
                let _ = storage.remove(&f.file);
            }
            return Err(Error::io("rename", storage.describe(temp), e));
        }
    }
    sync_dir()?;
    let files: Vec<CompactedFile> = written.into_iter().map(|(_, f)| f).collect();
    let chain = files
        .last()
        .map_or_else(|| hex(&old_chain), |f| f.chain.clone());
    // The switch: from here on the tape is the new files.
    manifest.append(&Record::Compacted {
        first_seq: report.first_seq,
        rows: report.rows,
        replaced: report.replaced.clone(),
        bytes_before: report.bytes_before,
        files: files.clone(),
        prev_chain: hex(&prev_chain),
        old_chain: hex(&old_chain),
        chain,
    })?;
    // Oldest first, so what is left of the old files is always a run up to the range's end.
    for name in &report.replaced {
        if let Err(e) = storage.remove(name) {
            tracing::warn!(
                "{}: replaced by compaction but not removed ({e}); the next writer to open the tape removes it",
                storage.describe(name).display()
            );
        }
    }
    sync_dir()?;
    for f in &files {
        report.files.push(f.file.clone());
        report.frames_after += f.frames;
        report.bytes_after += f.bytes;
    }
    Ok(report)
}

/// The run of sealed segments to rewrite, and why it stops early (if it does for more than the
/// bound or the open segment).
fn choose(
    storage: &dyn Storage,
    records: &[Record],
    options: &CompactOptions,
) -> Result<(Vec<Chosen>, Option<String>)> {
    let quarantined: HashSet<&str> = records
        .iter()
        .filter_map(|r| match r {
            Record::Quarantined { file, .. } => Some(file.as_str()),
            _ => None,
        })
        .collect();
    let mut chosen: Vec<Chosen> = Vec::new();
    for (_, name) in segment::list_live(storage)? {
        let Some(scanned) = segment::open_indexed(storage, &name)? else {
            // The open segment (or one whose footer is damaged): the range ends here.
            break;
        };
        let Some((footer, footer_offset)) = scanned.footer.clone().zip(scanned.footer_offset)
        else {
            break;
        };
        let end = scanned.end_seq_from_footer();
        let within = match options.before {
            Before::All => true,
            Before::Seq(s) => end <= s,
            Before::Time(t) => {
                footer.rows > 0 && footer.max_time != i64::MIN && footer.max_time < t
            }
        };
        if !within {
            break;
        }
        if quarantined.contains(name.as_str()) {
            return Ok((
                chosen,
                Some(format!(
                    "{name} has quarantined bytes: it stays as it is (the MANIFEST records what was lost)"
                )),
            ));
        }
        let chain = segment::chain_hash(storage, &name, &scanned.header.prev_chain, footer_offset)?;
        if chain != footer.chain {
            return Ok((
                chosen,
                Some(format!(
                    "{name}: its hash chain does not check out (run `tapedeck verify`); it stays as it is"
                )),
            ));
        }
        if let Some(prev) = chosen.last()
            && (!links(&prev.footer.chain, &scanned.header.prev_chain, records)
                || prev.scanned.end_seq_from_footer() != scanned.header.first_seq)
        {
            let why = format!(
                "{name} does not follow {} (run `tapedeck verify`); it stays as it is",
                prev.scanned.name
            );
            return Ok((chosen, Some(why)));
        }
        chosen.push(Chosen { scanned, footer });
    }
    Ok((chosen, None))
}

/// A compaction generation no file of this tape ever had.
fn next_generation(storage: &dyn Storage, records: &[Record]) -> Result<u64> {
    let listed = storage
        .list()
        .map_err(|e| Error::io("list", storage.describe(""), e))?;
    let named = records.iter().flat_map(|r| match r {
        Record::Compacted {
            replaced, files, ..
        } => replaced
            .iter()
            .map(String::as_str)
            .chain(files.iter().map(|f| f.file.as_str()))
            .collect::<Vec<_>>(),
        _ => Vec::new(),
    });
    let highest = listed
        .iter()
        .map(String::as_str)
        .chain(named)
        .filter_map(|n| parse_segment_file(n.strip_suffix(TEMP_SUFFIX).unwrap_or(n)))
        .map(|(_, g)| g)
        .max()
        .unwrap_or(0);
    Ok(highest.saturating_add(1))
}

/// Runs of old segments that become one new segment each: same schema, up to `segment_bytes`
/// of old bytes (a new segment starts where an old one did).
fn group(chosen: &[Chosen], segment_bytes: u64) -> Vec<&[Chosen]> {
    let mut groups = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (i, c) in chosen.iter().enumerate() {
        let Some(head) = chosen.get(start) else {
            break;
        };
        let other_schema = head.scanned.header.schema != c.scanned.header.schema;
        let full = bytes > 0 && bytes.saturating_add(c.scanned.file_len) > segment_bytes;
        if i > start && (other_schema || full) {
            if let Some(g) = chosen.get(start..i) {
                groups.push(g);
            }
            start = i;
            bytes = 0;
        }
        bytes = bytes.saturating_add(c.scanned.file_len);
    }
    if let Some(g) = chosen.get(start..).filter(|g| !g.is_empty()) {
        groups.push(g);
    }
    groups
}

/// The rows of one sealed segment's frames, decoded one frame at a time, in order, each with
/// its first sequence number; a damaged frame or a gap in the sequence is an error.
struct Batches<'a> {
    storage: &'a dyn Storage,
    segment: &'a Scanned,
    decoder: BatchDecoder,
    next: usize,
    expected: u64,
}

impl<'a> Batches<'a> {
    fn of(storage: &'a dyn Storage, segment: &'a Scanned) -> Result<Batches<'a>> {
        let decoder = BatchDecoder::new(&segment.header.schema).map_err(|e| {
            Error::arrow(format!("segment {}: reading its schema", segment.name), e)
        })?;
        Ok(Batches {
            storage,
            segment,
            decoder,
            next: 0,
            expected: segment.header.first_seq,
        })
    }

    fn damaged(&self, what: String) -> Error {
        Error::Tape {
            path: self.storage.describe(&self.segment.name),
            message: format!("compaction stopped, nothing changed: {what}; run `tapedeck verify`"),
        }
    }

    fn next_batch(&mut self) -> Result<Option<(u64, RecordBatch)>> {
        let name = &self.segment.name;
        let Some(frame) = self.segment.frames.get(self.next).copied() else {
            let end = self.segment.end_seq_from_footer();
            if self.expected != end {
                return Err(self.damaged(format!(
                    "the frames end at row {} but the footer says {end}",
                    self.expected
                )));
            }
            return Ok(None);
        };
        self.next += 1;
        let at = frame.offset;
        let (h, bytes) = match segment::read_frame(self.storage, name, at, self.segment.valid_end)?
        {
            Ok(x) => x,
            Err(problem) => {
                return Err(self.damaged(format!("the frame at byte {at} is damaged ({problem})")));
            }
        };
        if h.first_seq != self.expected {
            return Err(self.damaged(format!(
                "the frame at byte {at} starts at row {} where row {} was due",
                h.first_seq, self.expected
            )));
        }
        let payload = bytes
            .get(FRAME_HEADER..bytes.len().saturating_sub(FRAME_TRAILER))
            .unwrap_or_default();
        let batch = self
            .decoder
            .decode(payload, h.time_deltas)
            .map_err(|e| Error::arrow(format!("segment {name} frame at byte {at}"), e))?;
        self.expected = h.end_seq();
        Ok(Some((h.first_seq, batch)))
    }
}

/// The new segment being written.
struct NewSegment<'a> {
    storage: &'a dyn Storage,
    temp: String,
    encoder: BatchEncoder,
    hasher: ChainHasher,
    out: Vec<u8>,
    bytes: u64,
    index: Vec<(u64, u64)>,
    rows: u64,
    time: Option<(i64, i64)>,
    held: Vec<RecordBatch>,
    held_first: u64,
    held_rows: usize,
    held_bytes: usize,
}

impl NewSegment<'_> {
    fn io(&self, action: &'static str, e: std::io::Error) -> Error {
        Error::io(action, self.storage.describe(&self.temp), e)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        self.out.extend_from_slice(bytes);
        self.bytes = self.bytes.saturating_add(bytes.len() as u64);
        if self.out.len() >= WRITE_CHUNK {
            self.drain()?;
        }
        Ok(())
    }

    fn drain(&mut self) -> Result<()> {
        if !self.out.is_empty() {
            self.storage
                .append(&self.temp, &self.out)
                .map_err(|e| self.io("write", e))?;
            self.out.clear();
        }
        Ok(())
    }

    fn hold(&mut self, first_seq: u64, batch: RecordBatch, frame_rows: usize) -> Result<()> {
        // A DAQ block stays a frame of its own: a delivery splits frames back into blocks by
        // `block_index` alone.
        let own = crate::record::Block::is_wide_block_batch(&batch);
        if own {
            self.cut()?;
        }
        if self.held.is_empty() {
            self.held_first = first_seq;
        }
        self.held_rows = self.held_rows.saturating_add(batch.num_rows());
        self.held_bytes = self
            .held_bytes
            .saturating_add(batch.get_array_memory_size());
        self.held.push(batch);
        if own || self.held_rows >= frame_rows || self.held_bytes >= super::writer::FRAME_BYTES {
            self.cut()?;
        }
        Ok(())
    }

    fn cut(&mut self) -> Result<()> {
        let held = std::mem::take(&mut self.held);
        self.held_rows = 0;
        self.held_bytes = 0;
        let batch = match held.as_slice() {
            [] => return Ok(()),
            [one] => one.clone(),
            [first, ..] => arrow_select::concat::concat_batches(&first.schema(), &held)
                .map_err(|e| Error::arrow("joining frames for compaction", e))?,
        };
        let rows = u32::try_from(batch.num_rows()).map_err(|_| Error::InvalidOption {
            option: "frame-rows",
            message: "a frame of more than 4,294,967,295 rows".into(),
        })?;
        let (payload, time_deltas) = self
            .encoder
            .encode(&batch)
            .map_err(|e| Error::arrow("encoding a compacted frame", e))?;
        let payload_len = u32::try_from(payload.len()).map_err(|_| Error::InvalidOption {
            option: "frame-rows",
            message: "a frame of more than 4 GiB; give a smaller --frame-rows".into(),
        })?;
        let time = time_range(&batch);
        let header = FrameHeader {
            compression: self.encoder.compression(),
            payload_len,
            rows,
            first_seq: self.held_first,
            time,
            time_deltas,
        };
        let mut frame = Vec::with_capacity(payload.len() + FRAME_HEADER + FRAME_TRAILER);
        header.encode_into(&payload, &mut frame);
        self.index.push((self.bytes, self.held_first));
        self.rows = self.rows.saturating_add(u64::from(rows));
        self.time = match (self.time, time) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (x, y) => x.or(y),
        };
        self.put(&frame)
    }
}

/// Writes one group as a new segment under a temporary name; returns that name and the
/// segment's record.
fn write_segment(
    storage: &dyn Storage,
    group: &[Chosen],
    generation: u64,
    prev_chain: &[u8; 32],
    options: &CompactOptions,
) -> Result<(String, CompactedFile)> {
    let (Some(head), Some(tail)) = (group.first(), group.last()) else {
        return Err(Error::InvalidOption {
            option: "compact",
            message: "an empty group of segments".into(),
        });
    };
    let first_seq = head.scanned.header.first_seq;
    let file = compacted_segment_name(first_seq, generation);
    let temp = format!("{file}{TEMP_SUFFIX}");
    let schema = BatchDecoder::new(&head.scanned.header.schema)
        .map_err(|e| {
            Error::arrow(
                format!("segment {}: reading its schema", head.scanned.name),
                e,
            )
        })?
        .schema();
    let encoder = BatchEncoder::new(&schema, options.compression)
        .map_err(|e| Error::arrow("encoding the tape schema", e))?;
    let header = SegmentHeader {
        first_seq,
        // The last replaced segment's number, so numbers still grow along the tape.
        segment: tail.scanned.header.segment,
        prev_chain: *prev_chain,
        schema: encoder.schema_message().to_vec(),
    };
    storage
        .create_new(&temp)
        .map_err(|e| Error::io("create", storage.describe(&temp), e))?;
    let mut seg = NewSegment {
        storage,
        temp: temp.clone(),
        encoder,
        hasher: ChainHasher::new(prev_chain),
        out: Vec::new(),
        bytes: 0,
        index: Vec::new(),
        rows: 0,
        time: None,
        held: Vec::new(),
        held_first: first_seq,
        held_rows: 0,
        held_bytes: 0,
    };
    seg.put(&header.encode())?;
    let frame_rows = options.frame_rows.max(1);
    for old in group {
        let mut batches = Batches::of(storage, &old.scanned)?;
        while let Some((seq, batch)) = batches.next_batch()? {
            seg.hold(seq, batch, frame_rows)?;
        }
    }
    seg.cut()?;
    let chain = seg.hasher.finish();
    let footer = Footer {
        rows: seg.rows,
        min_time: seg.time.map_or(i64::MAX, |t| t.0),
        max_time: seg.time.map_or(i64::MIN, |t| t.1),
        index: std::mem::take(&mut seg.index),
        chain,
    };
    let frames = footer.index.len() as u64;
    let footer_bytes = footer.encode();
    seg.out.extend_from_slice(&footer_bytes);
    seg.bytes = seg.bytes.saturating_add(footer_bytes.len() as u64);
    seg.drain()?;
    storage.sync(&temp).map_err(|e| seg.io("fsync", e))?;
    Ok((
        temp,
        CompactedFile {
            file,
            segment: tail.scanned.header.segment,
            first_seq,
            rows: seg.rows,
            bytes: seg.bytes,
            frames,
            chain: hex(&chain),
        },
    ))
}

/// Reads the new segment `temp` back — every frame's CRC, the footer, the chain — and compares
/// its rows with those of the old segments it replaces.
fn check_segment(storage: &dyn Storage, group: &[Chosen], temp: &str) -> Result<()> {
    let mismatch = |what: String| Error::Tape {
        path: storage.describe(temp),
        message: format!("compaction stopped, nothing changed: the rewritten segment {what}"),
    };
    let new = match segment::scan(storage, temp)? {
        Ok(s) if s.gaps.is_empty() && s.torn_bytes() == 0 => s,
        Ok(_) => return Err(mismatch("does not read back whole".into())),
        Err(bad) => return Err(mismatch(format!("has a bad header ({})", bad.problem))),
    };
    let (Some(footer), Some(at)) = (&new.footer, new.footer_offset) else {
        return Err(mismatch("has no valid footer".into()));
    };
    if segment::chain_hash(storage, temp, &new.header.prev_chain, at)? != footer.chain {
        return Err(mismatch("does not hash to its footer's chain".into()));
    }
    // One frame of each side in memory at a time.
    let mut fresh = Batches::of(storage, &new)?;
    let mut current: Option<(u64, RecordBatch, usize)> = None;
    for old in group {
        let mut batches = Batches::of(storage, &old.scanned)?;
        while let Some((seq, batch)) = batches.next_batch()? {
            let mut at = 0usize;
            while at < batch.num_rows() {
                let row = seq + at as u64;
                let (new_first, new_batch, offset) = match current.take() {
                    Some(c) => c,
                    None => match fresh.next_batch()? {
                        Some((first, b)) if first == row => (first, b, 0),
                        Some(_) => {
                            return Err(mismatch(format!(
                                "does not hold row {row} where expected"
                            )));
                        }
                        None => return Err(mismatch(format!("ends before row {row}"))),
                    },
                };
                let n = (batch.num_rows() - at).min(new_batch.num_rows() - offset);
                let a = batch.slice(at, n);
                let b = new_batch.slice(offset, n);
                let same = a.num_columns() == b.num_columns()
                    && a.columns()
                        .iter()
                        .zip(b.columns())
                        .all(|(x, y)| x.to_data() == y.to_data());
                if !same {
                    return Err(mismatch(format!(
                        "differs from the original in rows {row}..{}",
                        row + n as u64
                    )));
                }
                at += n;
                if offset + n < new_batch.num_rows() {
                    current = Some((new_first, new_batch, offset + n));
                }
            }
        }
    }
    if current.is_some() || fresh.next_batch()?.is_some() {
        return Err(mismatch(
            "holds more rows than the segments it replaces".into(),
        ));
    }
    Ok(())
}
