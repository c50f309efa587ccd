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
//! - **A crash at any point leaves the old form or the new form, never neither.** Each new
//!   segment is written under a temporary name and fsynced; one `compacted` manifest record
//!   switches the tape to it; only then is it renamed into place and the old files removed. A
//!   writer opening the tape finishes whichever side the record says ([`finish`]), and
//!   [`live`] gives whatever walks every segment the same view meanwhile. A compacted file is
//!   never removed for want of a record (a lost manifest loses no rows).
//! - **The history stays provable.** The record keeps the old chain's last hash; the new
//!   segment's chain starts from it, and the segment after the range (which holds it) follows
//!   the new segment by the record ([`ChainJoins`]), so `verify` proves the whole chain.
//! - **Readers running across it are not disturbed.** Each old and each new file is whole while
//!   it is listed, so a reader that takes each row from the last segment starting at or before
//!   it reads the same rows from either; a reader whose file is removed under it looks again.
//! - **Bounded.** One new segment (up to `segment_bytes` of old bytes) is written, switched and
//!   cleaned up at a time, under the writer's trim lock — so the disk needs room for one new
//!   segment beside the old ones, memory holds one frame of each side, and retention or a
//!   close waits at most for one segment.
//!
//! Only clean segments are rewritten: the range stops before a segment that is open, has
//! quarantined bytes, or whose chain does not check out.

use std::collections::HashSet;

use arrow_array::RecordBatch;
use serde::Serialize;

use super::codec::{BatchDecoder, BatchEncoder, time_range};
use super::format::{
    ChainHasher, Coding, Compression, FRAME_HEADER, FRAME_TRAILER, Footer, FrameHeader,
    SegmentHeader, compacted_segment_name, hex, parse_segment_file, unhex,
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
        use super::reader::{SeqOrTime, seq_or_time};
        match seq_or_time(s) {
            Some(Ok(SeqOrTime::Seq(n))) => return Ok(Before::Seq(n)),
            Some(Ok(SeqOrTime::Time(t))) => return Ok(Before::Time(t)),
            Some(Err(e)) => return Err(e),
            None => {}
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
    /// The error that stopped the compaction after some new segments were switched to (those
    /// stay; the rest of the range is as it was). An error before any is returned instead.
    pub error: Option<String>,
}

/// Whether `name` is a segment written by a compaction.
pub fn is_compacted_name(name: &str) -> bool {
    parse_segment_file(name).is_some_and(|(_, generation)| generation > 0)
}

/// The `compacted` records of a manifest and what they make of a listing.
struct Compactions<'a> {
    /// Each record's replaced files and new files, in manifest order.
    records: Vec<(&'a [String], Vec<&'a str>)>,
    /// Files the tape dropped otherwise (trimmed, removed whole).
    dropped: HashSet<&'a str>,
}

impl<'a> Compactions<'a> {
    fn of(records: &'a [Record]) -> Compactions<'a> {
        let mut c = Compactions {
            records: Vec::new(),
            dropped: HashSet::new(),
        };
        for r in records {
            match r {
                Record::Compacted {
                    replaced, files, ..
                } => c
                    .records
                    .push((replaced, files.iter().map(|f| f.file.as_str()).collect())),
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

    /// The files to leave out of `listed`: those a complete compaction replaced, and the new
    /// files of one not complete yet. A compaction is complete once each of its new files is
    /// listed (renamed into place) or gone for a reason the manifest gives (replaced by a
    /// later compaction, trimmed).
    fn hidden(&self, listed: &HashSet<&str>) -> HashSet<&'a str> {
        let later_replaced = |k: usize, f: &str| {
            self.records
                .iter()
                .skip(k + 1)
                .any(|(replaced, _)| replaced.iter().any(|r| r == f))
        };
        let mut hidden = HashSet::new();
        for (k, (replaced, files)) in self.records.iter().enumerate() {
            let complete = files
                .iter()
                .all(|f| listed.contains(f) || self.dropped.contains(f) || later_replaced(k, f));
            if complete {
                hidden.extend(replaced.iter().map(String::as_str));
            } else {
                hidden.extend(files.iter().copied());
            }
        }
        hidden
    }
}

/// The segments of `listed` that hold the tape's rows, given the manifest's `records`: a
/// compaction whose new files are all in place stands for the files it replaced; one whose
/// files are not all renamed into place yet (a crash, or the moment between its record and its
/// renames) does not, and its files already in place are left out. Compacted files no record
/// names are kept (whatever lost their record, they may hold the only copy of their rows).
pub fn live(listed: &[(u64, String)], records: &[Record]) -> Vec<(u64, String)> {
    let names: HashSet<&str> = listed.iter().map(|(_, n)| n.as_str()).collect();
    let hidden = Compactions::of(records).hidden(&names);
    listed
        .iter()
        .filter(|(_, n)| !hidden.contains(n.as_str()))
        .cloned()
        .collect()
}

/// One compaction's join in the hash chain: the first row of its range, the replaced range's
/// previous-chain hash, the old chain's last hash, the new segments' last chain hash.
#[derive(Debug, Clone, Copy)]
struct Join {
    first_seq: u64,
    prev: [u8; 32],
    old: [u8; 32],
    new: [u8; 32],
}

/// The joins compactions make in the hash chain, read once from a manifest.
#[derive(Debug, Default)]
pub struct ChainJoins {
    joins: Vec<Join>,
}

impl ChainJoins {
    /// The joins of the `compacted` records in `records`.
    pub fn of(records: &[Record]) -> ChainJoins {
        ChainJoins {
            joins: records
                .iter()
                .filter_map(|r| match r {
                    Record::Compacted {
                        first_seq,
                        prev_chain,
                        old_chain,
                        chain,
                        ..
                    } => Some(Join {
                        first_seq: *first_seq,
                        prev: unhex(prev_chain)?,
                        old: unhex(old_chain)?,
                        new: unhex(chain)?,
                    }),
                    _ => None,
                })
                .collect(),
        }
    }

    /// Whether a segment starting at row `first_seq` whose header holds `actual` as its
    /// previous-chain hash may follow a segment (or trimmed segment) whose chain hash is
    /// `expected`: the same hash, or joined by compactions. After a compaction's new segments
    /// (chain `chain`) comes the segment that held the old chain's last hash (`old_chain`); a
    /// compaction's first new segment starts at the range's first row, from `old_chain`, where
    /// the replaced range started from `prev_chain`. Each hash reachable so is taken, through
    /// as many compactions as there are.
    pub fn links(&self, expected: &[u8; 32], actual: &[u8; 32], first_seq: u64) -> bool {
        if expected == actual {
            return true;
        }
        let mut reach: Vec<[u8; 32]> = vec![*expected];
        let mut used = vec![false; self.joins.len()];
        loop {
            let mut grew = false;
            for (k, j) in self.joins.iter().enumerate() {
                if used.get(k).copied().unwrap_or(true) {
                    continue;
                }
                let after_range = reach.contains(&j.new);
                let range_start = j.first_seq == first_seq && reach.contains(&j.prev);
                if after_range || range_start {
                    if j.old == *actual {
                        return true;
                    }
                    reach.push(j.old);
                    if let Some(u) = used.get_mut(k) {
                        *u = true;
                    }
                    grew = true;
                }
            }
            if !grew {
                return false;
            }
        }
    }
}

/// Finishes what a crash interrupted (called by a writer opening the tape, and before a
/// compaction), as `records` (read from the disk) say: a compaction whose record is there has
/// its new files renamed into place and, once all are, the files it replaced removed; a
/// temporary file no record names (a compaction that never switched) is removed. Returns how
/// many files were renamed or removed.
pub fn finish(storage: &dyn Storage, records: &[Record]) -> Result<usize> {
    let c = Compactions::of(records);
    let mut done = 0;
    let mut names: HashSet<String> = storage
        .list()
        .map_err(|e| Error::io("list", storage.describe(""), e))?
        .into_iter()
        .collect();
    let named: HashSet<&str> = c
        .records
        .iter()
        .flat_map(|(_, files)| files.iter().copied())
        .collect();
    for (_, files) in &c.records {
        for f in files {
            let temp = format!("{f}{TEMP_SUFFIX}");
            if !names.contains(*f) && names.contains(&temp) {
                storage
                    .rename(&temp, f)
                    .map_err(|e| Error::io("rename", storage.describe(&temp), e))?;
                names.remove(&temp);
                names.insert(f.to_string());
                done += 1;
            }
        }
    }
    if done > 0 {
        sync_dir(storage)?;
    }
    let listed: HashSet<&str> = names.iter().map(String::as_str).collect();
    let hidden = c.hidden(&listed);
    let mut removed = 0;
    for name in &names {
        let stale_temp = name
            .strip_suffix(TEMP_SUFFIX)
            .is_some_and(|stem| parse_segment_file(stem).is_some() && !named.contains(stem));
        // Only what a complete compaction replaced: the new files of an incomplete one are
        // hidden, never removed.
        let replaced =
            hidden.contains(name.as_str()) && c.records.iter().any(|(r, _)| r.contains(name));
        if stale_temp || replaced {
            storage
                .remove(name)
                .map_err(|e| Error::io("remove", storage.describe(name), e))?;
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(storage)?;
    }
    Ok(done + removed)
}

fn sync_dir(storage: &dyn Storage) -> Result<()> {
    storage
        .sync_dir("")
        .map_err(|e| Error::io("fsync", storage.describe(""), e))
}

/// One old segment chosen for rewriting (its frame index is read again when it is rewritten,
/// so a long range costs no memory per frame).
#[derive(Debug, Clone)]
struct Chosen {
    name: String,
    first_seq: u64,
    end_seq: u64,
    segment: u64,
    file_len: u64,
    frames: u64,
    prev_chain: [u8; 32],
    chain: [u8; 32],
    schema: Vec<u8>,
}

/// Compacts the tape in `storage`, whose manifest is `manifest` (the caller holds the tape's
/// writer); see the module docs. Each new segment is written and switched while `trim_lock`
/// is held (retention takes it too); `closing` says to stop between two; `progress` is told
/// what is done after each.
pub(crate) fn compact(
    storage: &dyn Storage,
    manifest: &Manifest,
    options: &CompactOptions,
    trim_lock: &std::sync::Mutex<()>,
    closing: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(&CompactReport),
) -> Result<CompactReport> {
    let lock = || {
        trim_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    let records = {
        let _held = lock();
        let records = super::manifest::read_only(storage)?;
        finish(storage, &records)?;
        records
    };
    let (chosen, stopped) = choose(storage, &records, options)?;
    let mut report = CompactReport {
        stopped,
        ..CompactReport::default()
    };
    let frame_rows = options.frame_rows.max(1) as u64;
    let groups: Vec<&[Chosen]> = group(&chosen, options.segment_bytes)
        .into_iter()
        .filter(|g| match g {
            [one] => {
                one.frames
                    > one
                        .end_seq
                        .saturating_sub(one.first_seq)
                        .div_ceil(frame_rows)
                        .max(1)
            }
            _ => true,
        })
        .collect();
    for g in &groups {
        let held = lock();
        if closing() {
            report.stopped = Some("the tape's writer is closing".into());
            break;
        }
        let outcome = compact_group(storage, manifest, g, options, &mut report);
        drop(held);
        if let Err(e) = outcome {
            if report.files.is_empty() {
                return Err(e);
            }
            // What was switched before stays switched; say where it stopped.
            report.error = Some(format!(
                "stopped after {} new segments: {e}",
                report.files.len()
            ));
            break;
        }
        progress(&report);
    }
    Ok(report)
}

/// Rewrites one group as one new segment, switches to it and removes the group's files.
fn compact_group(
    storage: &dyn Storage,
    manifest: &Manifest,
    group: &[Chosen],
    options: &CompactOptions,
    report: &mut CompactReport,
) -> Result<()> {
    let (Some(first), Some(last)) = (group.first(), group.last()) else {
        return Ok(());
    };
    // Retention may have removed some of them since they were chosen.
    for c in group {
        if storage
            .len(&c.name)
            .map_err(|e| Error::io("stat", storage.describe(&c.name), e))?
            .is_none()
        {
            return Err(Error::Tape {
                path: storage.describe(&c.name),
                message: "removed (by retention) since the compaction chose it: nothing changed"
                    .into(),
            });
        }
    }
    let bytes_before = group
        .iter()
        .map(|c| c.file_len)
        .fold(0, u64::saturating_add);
    let frames_before = group.iter().map(|c| c.frames).fold(0, u64::saturating_add);
    let rows = last.end_seq.saturating_sub(first.first_seq);
    if report.replaced.is_empty() {
        report.first_seq = first.first_seq;
    }
    if !options.apply {
        report.replaced.extend(group.iter().map(|c| c.name.clone()));
        report.rows = report.rows.saturating_add(rows);
        report.frames_before = report.frames_before.saturating_add(frames_before);
        report.bytes_before = report.bytes_before.saturating_add(bytes_before);
        return Ok(());
    }
    let records = super::manifest::read_only(storage)?;
    let generation = next_generation(storage, &records)?;
    let (temp, file) = match write_segment(storage, group, generation, &last.chain, options) {
        Ok(written) => written,
        Err(e) => {
            let name = compacted_segment_name(first.first_seq, generation);
            let _ = storage.remove(&format!("{name}{TEMP_SUFFIX}"));
            return Err(e);
        }
    };
    if let Err(e) = check_segment(storage, group, &temp).and_then(|()| sync_dir(storage)) {
        let _ = storage.remove(&temp);
        return Err(e);
    }
    // The switch: from here on the tape is the new file (renamed next, or by the next writer).
    // A failed append may be on the disk all the same (a failed fsync): the temporary file
    // stays for the next writer, which renames it if the record is there and removes it if not.
    manifest.append(&Record::Compacted {
        first_seq: first.first_seq,
        rows,
        replaced: group.iter().map(|c| c.name.clone()).collect(),
        bytes_before,
        files: vec![file.clone()],
        prev_chain: hex(&first.prev_chain),
        old_chain: hex(&last.chain),
        chain: file.chain.clone(),
    })?;
    storage
        .rename(&temp, &file.file)
        .map_err(|e| Error::io("rename", storage.describe(&temp), e))?;
    sync_dir(storage)?;
    for c in group {
        if let Err(e) = storage.remove(&c.name) {
            tracing::warn!(
                "{}: replaced by compaction but not removed ({e}); the next writer to open the tape removes it",
                storage.describe(&c.name).display()
            );
        }
    }
    sync_dir(storage)?;
    report.replaced.extend(group.iter().map(|c| c.name.clone()));
    report.rows = report.rows.saturating_add(rows);
    report.frames_before = report.frames_before.saturating_add(frames_before);
    report.bytes_before = report.bytes_before.saturating_add(bytes_before);
    report.files.push(file.file);
    report.frames_after = report.frames_after.saturating_add(file.frames);
    report.bytes_after = report.bytes_after.saturating_add(file.bytes);
    Ok(())
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
    let joins = ChainJoins::of(records);
    let mut chosen: Vec<Chosen> = Vec::new();
    let live = segment::list_live(storage)?;
    for (k, (_, name)) in live.iter().enumerate() {
        let stop = |why: String| Some(format!("{why}; it stays as it is"));
        let Some(scanned) = segment::open_indexed(storage, name)? else {
            // The open segment, or one whose footer is damaged.
            if k + 1 < live.len() {
                return Ok((
                    chosen,
                    stop(format!(
                        "{name} has no valid footer (run `tapedeck verify`)"
                    )),
                ));
            }
            break;
        };
        let Some((footer, footer_offset)) = scanned.footer.as_ref().zip(scanned.footer_offset)
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
                stop(format!(
                    "{name} has quarantined bytes (the MANIFEST records what was lost)"
                )),
            ));
        }
        let chain = segment::chain_hash(storage, name, &scanned.header.prev_chain, footer_offset)?;
        if chain != footer.chain {
            return Ok((
                chosen,
                stop(format!(
                    "{name}: its hash chain does not check out (run `tapedeck verify`)"
                )),
            ));
        }
        if let Some(prev) = chosen.last()
            && (!joins.links(
                &prev.chain,
                &scanned.header.prev_chain,
                scanned.header.first_seq,
            ) || prev.end_seq != scanned.header.first_seq)
        {
            let why = format!(
                "{name} does not follow {} (run `tapedeck verify`)",
                prev.name
            );
            return Ok((chosen, stop(why)));
        }
        chosen.push(Chosen {
            name: name.clone(),
            first_seq: scanned.header.first_seq,
            end_seq: end,
            segment: scanned.header.segment,
            file_len: scanned.file_len,
            frames: footer.index.len() as u64,
            prev_chain: scanned.header.prev_chain,
            chain,
            schema: scanned.header.schema.clone(),
        });
    }
    Ok((chosen, None))
}

/// A compaction generation no file of this tape has, and no record names.
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
        let other_schema = head.schema != c.schema;
        let full = bytes > 0 && bytes.saturating_add(c.file_len) > segment_bytes;
        if i > start && (other_schema || full) {
            if let Some(g) = chosen.get(start..i) {
                groups.push(g);
            }
            start = i;
            bytes = 0;
        }
        bytes = bytes.saturating_add(c.file_len);
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
    segment: Scanned,
    decoder: BatchDecoder,
    next: usize,
    expected: u64,
}

impl<'a> Batches<'a> {
    /// The batches of the sealed segment `name`, as its footer indexes them.
    fn sealed(storage: &'a dyn Storage, name: &str) -> Result<Batches<'a>> {
        match segment::open_indexed(storage, name)? {
            Some(s) => Batches::of(storage, s),
            None => Err(Error::Tape {
                path: storage.describe(name),
                message: "compaction stopped, nothing changed: the segment has no valid footer; run `tapedeck verify`".into(),
            }),
        }
    }

    fn of(storage: &'a dyn Storage, segment: Scanned) -> Result<Batches<'a>> {
        let decoder = BatchDecoder::new(&segment.header.schema).map_err(|e| {
            Error::arrow(format!("segment {}: reading its schema", segment.name), e)
        })?;
        let expected = segment.header.first_seq;
        Ok(Batches {
            storage,
            segment,
            decoder,
            next: 0,
            expected,
        })
    }

    fn damaged(&self, what: String) -> Error {
        Error::Tape {
            path: self.storage.describe(&self.segment.name),
            message: format!("compaction stopped, nothing changed: {what}; run `tapedeck verify`"),
        }
    }

    fn next_batch(&mut self) -> Result<Option<(u64, RecordBatch)>> {
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
        let name = &self.segment.name;
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
            .decode(payload, h.coding())
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
    /// Per frame of `index`, its event-time range.
    times: Vec<Option<(i64, i64)>>,
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
        let (payload, coding) = self
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
            time_deltas: coding == Coding::TimeDeltas,
        };
        let mut frame = Vec::with_capacity(payload.len() + FRAME_HEADER + FRAME_TRAILER);
        header.encode_into(&payload, &mut frame);
        self.index.push((self.bytes, self.held_first));
        self.times.push(time);
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
    let first_seq = head.first_seq;
    let file = compacted_segment_name(first_seq, generation);
    let temp = format!("{file}{TEMP_SUFFIX}");
    let schema = BatchDecoder::new(&head.schema)
        .map_err(|e| Error::arrow(format!("segment {}: reading its schema", head.name), e))?
        .schema();
    let encoder = BatchEncoder::new(&schema, options.compression)
        .map_err(|e| Error::arrow("encoding the tape schema", e))?;
    let header = SegmentHeader {
        first_seq,
        // The last replaced segment's number, so numbers still grow along the tape.
        segment: tail.segment,
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
        times: Vec::new(),
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
        let mut batches = Batches::sealed(storage, &old.name)?;
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
        times: Some(std::mem::take(&mut seg.times)),
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
            segment: tail.segment,
            first_seq,
            rows: seg.rows,
            bytes: seg.bytes,
            frames,
            chain: hex(&chain),
        },
    ))
}

/// Reads the new segment `temp` back — the footer, the chain, every frame's CRC — and compares
/// its rows with those of the old segments it replaces.
fn check_segment(storage: &dyn Storage, group: &[Chosen], temp: &str) -> Result<()> {
    let mismatch = |what: String| Error::Tape {
        path: storage.describe(temp),
        message: format!("compaction stopped, nothing changed: the rewritten segment {what}"),
    };
    // From its footer: reading its frames below checks each one's CRC and that they run on
    // without a gap to the footer's end.
    let Some(new) = segment::open_indexed(storage, temp)? else {
        return Err(mismatch("has no valid header or footer".into()));
    };
    let (Some(footer), Some(at)) = (&new.footer, new.footer_offset) else {
        return Err(mismatch("has no valid footer".into()));
    };
    if segment::chain_hash(storage, temp, &new.header.prev_chain, at)? != footer.chain {
        return Err(mismatch("does not hash to its footer's chain".into()));
    }
    // One frame of each side in memory at a time.
    let mut fresh = Batches::of(storage, new)?;
    let mut current: Option<(u64, RecordBatch, usize)> = None;
    for old in group {
        let mut batches = Batches::sealed(storage, &old.name)?;
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
