//! Reading a tape: any number of readers, each with its own position, never blocking the writer.
//!
//! A [`TapeReader`] starts at the beginning, at a sequence number, at an event time (the first
//! frame whose time range reaches it), or at the end, and yields `(first_seq, batch)` in order.
//! Every frame's CRC32C is checked before it is decoded; a frame that fails is skipped with a
//! warning and counted (recovery quarantines such ranges when the writer next opens the tape).
//! In `follow` mode the reader waits for new frames when it reaches the end — sleeping between
//! looks, from 5 ms up to 100 ms while nothing arrives, never spinning — and moves on to new
//! segments as the writer rolls them.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;

use super::codec::BatchDecoder;
use super::segment::{self, FrameRef};
use crate::error::{Error, Result};
use crate::record::Record;
use crate::storage::{FsStorage, Storage};

/// Rows a reader could not read: a frame that failed its checksum, or a range of sequence
/// numbers no segment holds (quarantined, or a segment lost).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Unreadable {
    /// First sequence number not read.
    pub from: u64,
    /// Sequence number after the last one not read.
    pub to: u64,
    /// The segment, when the damage is in one.
    pub segment: Option<String>,
    /// Byte range in the segment, when known.
    pub bytes: Option<(u64, u64)>,
    /// What was wrong.
    pub why: String,
}

impl Unreadable {
    /// Rows `from..to` a reader could not give, described by the first of `damaged` (what the
    /// reader met) that overlaps them; without one, no segment holds them.
    pub fn covering(from: u64, to: u64, damaged: &[Unreadable]) -> Unreadable {
        let found = damaged.iter().find(|d| d.from < to && d.to > from);
        Unreadable {
            from,
            to,
            segment: found.and_then(|d| d.segment.clone()),
            bytes: found.and_then(|d| d.bytes),
            why: found.map_or_else(
                || "no segment on the tape holds them (a damaged range was quarantined, or a segment is missing)".to_string(),
                |d| d.why.clone(),
            ),
        }
    }
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rows {}..{} ({} rows)",
            self.from,
            self.to,
            self.to.saturating_sub(self.from)
        )?;
        if let Some(seg) = &self.segment {
            write!(f, " in segment {seg}")?;
        }
        if let Some((a, b)) = self.bytes {
            write!(f, " at bytes {a}..{b}")?;
        }
        write!(f, ": {}", self.why)
    }
}

/// Where a reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAt {
    /// The first row of the tape.
    #[default]
    Start,
    /// The row with this sequence number (or the next one that exists).
    Seq(u64),
    /// The first frame whose event times reach this instant (µs since the epoch, UTC).
    Time(i64),
    /// After the last row present when the reader opens (with `follow`: only new rows).
    End,
}

impl std::str::FromStr for StartAt {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "start" => Ok(StartAt::Start),
            "end" => Ok(StartAt::End),
            _ => {
                match seq_or_time(s) {
                    Some(Ok(SeqOrTime::Seq(n))) => return Ok(StartAt::Seq(n)),
                    Some(Ok(SeqOrTime::Time(t))) => return Ok(StartAt::Time(t)),
                    Some(Err(e)) => return Err(e),
                    None => {}
                }
                Err(format!(
                    "`{s}` is not a position; use start, end, seq:N or time:2026-01-01T00:00:00Z"
                ))
            }
        }
    }
}

/// A position written `seq:N` or `time:T`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SeqOrTime {
    /// `seq:N`.
    Seq(u64),
    /// `time:T` (µs since the epoch, UTC).
    Time(i64),
}

/// Parses `seq:N` or `time:T` (ISO 8601); `None` when `s` has neither prefix.
pub(crate) fn seq_or_time(s: &str) -> Option<std::result::Result<SeqOrTime, String>> {
    if let Some(n) = s.strip_prefix("seq:") {
        return Some(
            n.parse()
                .map(SeqOrTime::Seq)
                .map_err(|_| format!("`{n}` is not a sequence number")),
        );
    }
    let t = s.strip_prefix("time:")?;
    Some(
        crate::record::time::parse_timestamp(t)
            .map(SeqOrTime::Time)
            .ok_or_else(|| format!("`{t}` is not an ISO 8601 time")),
    )
}

struct Cursor {
    name: String,
    /// `name`, shared with the frame cache's keys.
    key: Arc<str>,
    first_seq: u64,
    frames: Vec<FrameRef>,
    next: usize,
    /// Where to look for more frames in an unsealed segment; the end of the frames known (a
    /// sealed segment's footer offset), which bounds the last one's read.
    scan_from: u64,
    /// File length as last seen (refreshed when looking for more frames).
    len: u64,
    sealed: bool,
    decoder: BatchDecoder,
}

/// Reads a tape; see the module docs.
pub struct TapeReader {
    storage: Arc<dyn Storage>,
    name: String,
    /// Next sequence number to deliver.
    position: u64,
    /// Stop before this sequence number.
    until: Option<u64>,
    follow: bool,
    cursor: Option<Cursor>,
    skipped_frames: u64,
    /// Damaged frames met since the last [`TapeReader::take_unreadable`].
    unreadable: Vec<Unreadable>,
    idle: Duration,
    pending_start: Option<StartAt>,
    /// The segments as last listed (see `segments_after`).
    listed: Arc<Vec<(u64, String)>>,
    /// With `--from time:T`: rows before T in the first frames read are left out.
    trim_before: Option<i64>,
    /// Blocks of a batch read for [`TapeReader::next_record`] and not yet handed out.
    pending_blocks: std::collections::VecDeque<crate::record::Block>,
    /// The tape's id when frames are shared through the process's frame cache (a reader
    /// opened on a directory: [`super::frame_cache`]).
    cache_tape: Option<Arc<str>>,
    /// The manifest as last read for listing (see [`segment::list_live_with`]).
    manifest: segment::ManifestMemo,
}

impl std::fmt::Debug for TapeReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapeReader")
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl TapeReader {
    /// A reader of the tape in `dir`.
    pub fn open(dir: impl AsRef<std::path::Path>, start: StartAt) -> Result<TapeReader> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::Tape {
                path: dir.to_path_buf(),
                message: "no such tape directory".into(),
            });
        }
        let storage = FsStorage::new(dir).map_err(|e| Error::io("open", dir, e))?;
        let mut r = TapeReader::open_storage(Arc::new(storage), start)?;
        r.name = dir.display().to_string();
        // Readers of one tape directory in this process share the frames they decode; a tape
        // without an id (never opened by a writer) is not cached.
        r.cache_tape = super::id::read_or_create(r.storage.as_ref(), false)
            .ok()
            .flatten()
            .map(Arc::from);
        Ok(r)
    }

    /// A reader on any storage.
    pub fn open_storage(storage: Arc<dyn Storage>, start: StartAt) -> Result<TapeReader> {
        let mut r = TapeReader {
            storage,
            name: "tape".into(),
            position: 0,
            until: None,
            follow: false,
            cursor: None,
            skipped_frames: 0,
            unreadable: Vec::new(),
            idle: Duration::from_millis(5),
            pending_start: None,
            listed: Arc::new(Vec::new()),
            pending_blocks: std::collections::VecDeque::new(),
            trim_before: None,
            cache_tape: None,
            manifest: segment::ManifestMemo::default(),
        };
        // A tape trimmed by retention starts after its removed rows.
        let trimmed =
            super::retention::trimmed_before(&super::manifest::read_only(r.storage.as_ref())?)
                .map(|(end, _)| end);
        match start {
            StartAt::Start => r.position = trimmed.unwrap_or(0),
            StartAt::Seq(s) => {
                if let Some(first) = trimmed.filter(|first| s < *first) {
                    return Err(Error::TapeTrimmed {
                        path: r.storage.describe(""),
                        requested: s,
                        first,
                    });
                }
                r.position = s;
            }
            StartAt::End => r.position = r.end_seq()?,
            StartAt::Time(_) => r.pending_start = Some(start),
        }
        Ok(r)
    }

    /// Keep waiting for new frames at the end (a live tail).
    pub fn follow(mut self, follow: bool) -> TapeReader {
        self.follow = follow;
        self
    }

    /// Stop before sequence number `seq`.
    pub fn until(mut self, seq: Option<u64>) -> TapeReader {
        self.until = seq;
        self
    }

    /// Moves the stop position (a delivery reads up to the acknowledged position, which grows).
    pub fn set_until(&mut self, seq: Option<u64>) {
        self.until = seq;
    }

    /// Frames skipped because they failed their checksum.
    pub fn skipped_frames(&self) -> u64 {
        self.skipped_frames
    }

    /// The damaged frames met since the last call (each also logged). Rows a reader skips
    /// without meeting a frame — a range no segment holds — show as a jump in the sequence
    /// numbers it yields.
    pub fn take_unreadable(&mut self) -> Vec<Unreadable> {
        std::mem::take(&mut self.unreadable)
    }

    /// The next sequence number the reader will deliver.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Sequence number after the last row currently on the tape.
    pub fn end_seq(&self) -> Result<u64> {
        let segs = segment::list_live(self.storage.as_ref())?;
        for (_, name) in segs.iter().rev() {
            if let Some(s) = segment::open_indexed(self.storage.as_ref(), name)? {
                return Ok(s.end_seq_from_footer());
            }
            if let Ok(s) = segment::scan(self.storage.as_ref(), name)? {
                return Ok(s.end_seq());
            }
        }
        Ok(0)
    }

    fn open_cursor(&mut self) -> Result<bool> {
        // Each round skips one segment whose header is damaged; a loop, not recursion, so a
        // long run of them cannot exhaust a thread's stack.
        loop {
            if let Some(opened) = self.open_segment()? {
                return Ok(opened);
            }
        }
    }

    /// The tape's live segments ([`segment::list_live_with`], the manifest read only when it
    /// grew).
    fn list_live(&mut self) -> Result<Vec<(u64, String)>> {
        segment::list_live_with(self.storage.as_ref(), &mut self.manifest)
    }

    /// Forgets the segment `name`, which was removed under the reader, and lists the tape
    /// again: the next read opens whichever segment holds the position now.
    fn drop_removed(&mut self, name: &str) -> Result<()> {
        self.cursor = None;
        self.storage.release(name);
        self.listed = Arc::new(self.list_live()?);
        Ok(())
    }

    /// The tape's segments, listed again only when the cached list has none after `at` (the
    /// reader is at the tail): a tape of 10,000 segments is read without 10,000 directory
    /// listings.
    fn segments_after(&mut self, at: u64) -> Result<Arc<Vec<(u64, String)>>> {
        if self.listed.last().is_none_or(|(f, _)| *f <= at) {
            self.listed = Arc::new(self.list_live()?);
        }
        Ok(self.listed.clone())
    }

    /// Opens the segment holding the position: `Some(true)` opened, `Some(false)` nothing to
    /// read yet, `None` a damaged segment was skipped, or the cached list was stale (look
    /// again).
    fn open_segment(&mut self) -> Result<Option<bool>> {
        let segs = self.segments_after(self.position)?;
        // The last segment starting at or before the position, else the first after it.
        let cut = segs.partition_point(|(first, _)| *first <= self.position);
        let pick = cut
            .checked_sub(1)
            .and_then(|i| segs.get(i))
            .or_else(|| segs.get(cut));
        let Some((first, name)) = pick else {
            return Ok(Some(false));
        };
        let storage = self.storage.as_ref();
        let indexed = match segment::open_indexed(storage, name) {
            Ok(indexed) => indexed,
            // Removed since the list was read (a compaction replaced it, retention trimmed
            // it): list again.
            Err(e) if storage.len(name).ok().flatten().is_none() => {
                self.listed = Arc::new(self.list_live()?);
                if self.listed.iter().any(|(_, n)| n == name) {
                    // Listed but not there to read: not a removal; looking again would loop.
                    return Err(e);
                }
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let (scanned, sealed) = match indexed {
            Some(s) => (s, true),
            None => match segment::scan(storage, name)? {
                Ok(s) => (s, false),
                Err(bad) => {
                    let gone = storage
                        .len(name)
                        .map_err(|e| Error::io("read", storage.describe(name), e))?
                        .is_none();
                    if gone {
                        // Removed since the list was read (a recovery removed an empty
                        // segment, or retention a sealed one): list again. Rows retention
                        // took from before this reader's position are an error, not a jump.
                        if let Some((first, _)) =
                            super::retention::trimmed_before(&super::manifest::read_only(storage)?)
                                .filter(|(first, _)| self.position < *first)
                        {
                            return Err(Error::TapeTrimmed {
                                path: storage.describe(""),
                                requested: self.position,
                                first,
                            });
                        }
                        self.listed = Arc::new(self.list_live()?);
                        return Ok(None);
                    }
                    // A later segment exists: this header is damage, not one still being
                    // written. Its rows are reported and the reader goes on with the next.
                    if let Some((next, _)) = segs.iter().find(|(f, _)| f > first) {
                        tracing::warn!(
                            "{}: segment {name}: its header is damaged ({}); rows {}..{next} skipped",
                            self.name,
                            bad.problem,
                            self.position.max(*first)
                        );
                        self.unreadable.push(Unreadable {
                            from: self.position.max(*first),
                            to: *next,
                            segment: Some(name.clone()),
                            bytes: Some((0, bad.file_len)),
                            why: format!("the segment's header is damaged ({})", bad.problem),
                        });
                        self.position = self.position.max(*next);
                        return Ok(None);
                    }
                    // The last segment, its header still being written: nothing to read yet.
                    return Ok(Some(false));
                }
            },
        };
        // A later segment exists: this one will not grow, even without a footer.
        let later = segs
            .iter()
            .any(|(first, _)| *first > scanned.header.first_seq);
        let decoder = BatchDecoder::new(&scanned.header.schema)
            .map_err(|e| Error::arrow(format!("segment {name}: reading its schema"), e))?;
        let next = scanned
            .frames
            .iter()
            .position(|f| f.header.end_seq() > self.position)
            .unwrap_or(scanned.frames.len());
        if scanned.header.first_seq > self.position {
            // A jump forward: rows retention removed since this reader began are an error
            // naming the first row left, never skipped in silence.
            if let Some((first, _)) =
                super::retention::trimmed_before(&super::manifest::read_only(storage)?)
                    .filter(|(first, _)| self.position < *first)
            {
                return Err(Error::TapeTrimmed {
                    path: storage.describe(""),
                    requested: self.position,
                    first,
                });
            }
            self.position = scanned.header.first_seq;
        }
        self.cursor = Some(Cursor {
            name: name.clone(),
            key: Arc::from(name.as_str()),
            first_seq: scanned.header.first_seq,
            scan_from: scanned.valid_end,
            len: scanned.file_len,
            frames: scanned.frames,
            next,
            sealed: sealed || later,
            decoder,
        });
        Ok(Some(true))
    }

    /// Looks for frames appended to an unsealed segment since the last look.
    fn grow(&mut self) -> Result<bool> {
        let storage = self.storage.clone();
        let Some(c) = self.cursor.as_mut() else {
            return Ok(false);
        };
        let Some(len) = storage
            .len(&c.name)
            .map_err(|e| Error::io("read", storage.describe(&c.name), e))?
        else {
            // Removed under the reader (sealed meanwhile, then replaced by a compaction or
            // trimmed): the rows after its last known frame are in whatever holds them now.
            let name = c.name.clone();
            self.drop_removed(&name)?;
            return Ok(true);
        };
        c.len = len;
        let mut grew = false;
        let mut expected = c.frames.last().map_or(c.first_seq, |f| f.header.end_seq());
        while let Ok((h, _)) = segment::read_frame(storage.as_ref(), &c.name, c.scan_from, len)? {
            if h.first_seq != expected {
                break;
            }
            c.frames.push(FrameRef {
                offset: c.scan_from,
                header: h,
            });
            c.scan_from += h.frame_len() as u64;
            expected = h.end_seq();
            grew = true;
        }
        if !grew && segment::read_footer(storage.as_ref(), &c.name, len)?.is_some() {
            c.sealed = true;
        }
        Ok(grew)
    }

    fn resolve_time(&mut self, t: i64) -> Result<()> {
        let storage = self.storage.clone();
        for (_, name) in segment::list_live(storage.as_ref())? {
            let s = match segment::open_indexed(storage.as_ref(), &name)? {
                Some(s) => {
                    if s.footer.as_ref().is_some_and(|f| f.max_time < t) {
                        continue;
                    }
                    s
                }
                None => match segment::scan(storage.as_ref(), &name)? {
                    Ok(s) => s,
                    Err(_) => continue,
                },
            };
            if s.footer.as_ref().is_some_and(|f| f.times.is_some()) {
                // A version-2 footer holds the frames' times: no frame is read to find it.
                if let Some(f) = s
                    .frames
                    .iter()
                    .find(|f| f.header.time.is_some_and(|(_, hi)| hi >= t))
                {
                    self.position = f.header.first_seq;
                    self.trim_before = Some(t);
                    return Ok(());
                }
                continue;
            }
            for f in &s.frames {
                if let Ok((h, _)) =
                    segment::read_frame(storage.as_ref(), &name, f.offset, s.file_len)?
                    && h.time.is_some_and(|(_, hi)| hi >= t)
                {
                    self.position = h.first_seq;
                    self.trim_before = Some(t);
                    return Ok(());
                }
            }
        }
        self.position = self.end_seq()?;
        Ok(())
    }

    /// The next batch and its first sequence number; `None` at the end (never, when following).
    pub fn next_batch(&mut self) -> Result<Option<(u64, RecordBatch)>> {
        if let Some(StartAt::Time(t)) = self.pending_start.take() {
            self.resolve_time(t)?;
        }
        loop {
            if self.until.is_some_and(|u| self.position >= u) {
                return Ok(None);
            }
            if self.cursor.is_none() && !self.open_cursor()? {
                if self.wait()? {
                    continue;
                }
                return Ok(None);
            }
            let storage = self.storage.clone();
            let Some(c) = self.cursor.as_mut() else {
                continue;
            };
            if let Some(frame) = c.frames.get(c.next).copied() {
                if self.until.is_some_and(|u| frame.header.first_seq >= u) {
                    // A gap (quarantined rows) reaches the stop position: nothing before it to
                    // give. The frame stays for a later, larger stop position.
                    return Ok(None);
                }
                c.next += 1;
                // Decoded moments ago by another reader of this tape in this process?
                let hit = self.cache_tape.as_ref().and_then(|tape| {
                    super::frame_cache::global().get(
                        tape,
                        &c.key,
                        frame.offset,
                        frame.header.first_seq,
                        frame.header.rows as usize,
                    )
                });
                let (first_seq, end_seq, batch) = if let Some(batch) = hit {
                    (frame.header.first_seq, frame.header.end_seq(), batch)
                } else {
                    // A sealed segment's length is known; an open one may have grown.
                    let len = if c.sealed {
                        Some(c.len)
                    } else {
                        storage
                            .len(&c.name)
                            .map_err(|e| Error::io("read", storage.describe(&c.name), e))?
                    };
                    // Where the frame ends: its header says, when a scan read it; else (a
                    // footer's index) where the next frame, or the frames, end — one read
                    // instead of two.
                    let end = if frame.header.payload_len != 0 {
                        frame.offset.saturating_add(frame.header.frame_len() as u64)
                    } else {
                        c.frames.get(c.next).map_or(c.scan_from, |n| n.offset)
                    };
                    let read = len.map(|len| {
                        segment::read_frame_sized(
                            storage.as_ref(),
                            &c.name,
                            frame.offset,
                            end.saturating_sub(frame.offset),
                            len,
                        )
                        .map(|read| (read, len))
                    });
                    let (read, len) = match read {
                        Some(Ok(read)) => read,
                        other => {
                            let name = c.name.clone();
                            let gone =
                                other.is_none() || storage.len(&name).ok().flatten().is_none();
                            match other {
                                Some(Err(e)) if !gone => return Err(e),
                                _ => {}
                            }
                            // Removed under the reader: a compaction replaced it (its rows are in
                            // the new segment) or retention removed it (opening again says so).
                            // The frame was not read: look for the segment holding the position.
                            self.drop_removed(&name)?;
                            continue;
                        }
                    };
                    let (h, bytes) = match read {
                        Ok(x) => x,
                        Err(problem) => {
                            tracing::warn!(
                                "{}: segment {} frame at byte {}: {problem}; skipped",
                                self.name,
                                c.name,
                                frame.offset
                            );
                            self.skipped_frames += 1;
                            let end = c.frames.get(c.next).map_or(len, |f| f.offset);
                            self.unreadable.push(Unreadable {
                                from: frame.header.first_seq,
                                to: frame.header.end_seq(),
                                segment: Some(c.name.clone()),
                                bytes: Some((frame.offset, end)),
                                why: problem.to_string(),
                            });
                            continue;
                        }
                    };
                    // The frame's bytes become the batch's buffers (no copy of the payload):
                    // `read_frame` checked that the frame holds its header and trailer.
                    let payload_len = bytes
                        .len()
                        .saturating_sub(super::format::FRAME_HEADER + super::format::FRAME_TRAILER);
                    let payload = arrow_buffer::Buffer::from_vec(bytes)
                        .slice_with_length(super::format::FRAME_HEADER, payload_len);
                    let batch = c.decoder.decode_buffer(payload, h.coding()).map_err(|e| {
                        Error::arrow(
                            format!("segment {} frame at byte {}", c.name, frame.offset),
                            e,
                        )
                    })?;
                    if let Some(tape) = &self.cache_tape {
                        super::frame_cache::global().put(
                            tape,
                            &c.key,
                            frame.offset,
                            h.first_seq,
                            &batch,
                        );
                    }
                    (h.first_seq, h.end_seq(), batch)
                };
                if end_seq <= self.position {
                    continue;
                }
                let mut skip = self.position.saturating_sub(first_seq) as usize;
                if let Some(t) = self.trim_before {
                    // `--from time:T` found the first frame that reaches T; rows before T in
                    // it (and in any frame before the first row that reaches it) are left out.
                    match super::codec::first_row_at(&batch, t, skip) {
                        Some(k) => {
                            skip = k;
                            self.trim_before = None;
                        }
                        None => {
                            self.position = end_seq;
                            continue;
                        }
                    }
                }
                let mut take = batch.num_rows() - skip.min(batch.num_rows());
                if let Some(u) = self.until {
                    // `first_seq < u` (checked above) and `position < u`: no underflow.
                    let left = u.saturating_sub(self.position.max(first_seq));
                    take = take.min(usize::try_from(left).unwrap_or(usize::MAX));
                }
                let first = first_seq + skip as u64;
                self.position = first + take as u64;
                self.idle = Duration::from_millis(5);
                return Ok(Some((first, batch.slice(skip, take))));
            }
            if !c.sealed && self.grow()? {
                continue;
            }
            let sealed = self.cursor.as_ref().is_some_and(|c| c.sealed);
            if sealed {
                // Next segment, if any: the one holding the position — after this one, or
                // (a compaction replaced this one) one that starts before it — else, past a
                // gap, the first after the position.
                let (first, current) = self
                    .cursor
                    .as_ref()
                    .map_or((0, String::new()), |c| (c.first_seq, c.name.clone()));
                let segs = self.segments_after(first)?;
                let cut = segs.partition_point(|(f, _)| *f <= self.position);
                let holder = cut.checked_sub(1).and_then(|i| segs.get(i));
                let next = if holder.is_some_and(|(_, n)| *n != current) {
                    Some(self.position)
                } else {
                    segs.get(cut).map(|(f, _)| *f)
                };
                if let Some(next) = next {
                    self.position = self.position.max(next);
                    // Done with it: no handle kept open on a file retention may remove.
                    if let Some(done) = self.cursor.take() {
                        self.storage.release(&done.name);
                    }
                    continue;
                }
            }
            if self.wait()? {
                // A later segment may have appeared while this one had no footer. The writer
                // finishes a segment before it starts the next, so one more look collects the
                // frames written since the last one, and then this segment is done.
                let segs = self.list_live()?;
                let first = self.cursor.as_ref().map_or(0, |c| c.first_seq);
                if segs.iter().any(|(f, _)| *f > first) {
                    self.grow()?;
                    if let Some(c) = self.cursor.as_mut() {
                        c.sealed = true;
                    }
                }
                continue;
            }
            return Ok(None);
        }
    }

    /// In follow mode, sleeps a little (backing off) and returns true; else false.
    fn wait(&mut self) -> Result<bool> {
        if !self.follow {
            return Ok(false);
        }
        std::thread::sleep(self.idle);
        self.idle = (self.idle * 2).min(Duration::from_millis(100));
        Ok(true)
    }
}

impl Iterator for TapeReader {
    type Item = Result<(u64, RecordBatch)>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch().transpose()
    }
}

impl TapeReader {
    /// How the reader is shown in messages (`tape:DIR`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next record, for a reader used as a `Source` (`source/tape.rs`): DAQ blocks come
    /// back as blocks (the tape stores them in the marked wide layout), so a replayed tape
    /// reaches its sinks as the recording did; rows as batches.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        if let Some(b) = self.pending_blocks.pop_front() {
            return Ok(Some(Record::Block(b)));
        }
        let Some((_, batch)) = self.next_batch()? else {
            return Ok(None);
        };
        // Sinks take `Utf8`; a pack's short text is stored as views.
        let batch = crate::record::views_to_offsets(batch)
            .map_err(|e| Error::arrow("reading text columns stored as views", e))?;
        if crate::record::Block::is_wide_block_batch(&batch)
            && let Some(blocks) = crate::record::Block::from_wide_batch(&batch)?
        {
            self.pending_blocks.extend(blocks);
            if let Some(b) = self.pending_blocks.pop_front() {
                return Ok(Some(Record::Block(b)));
            }
        }
        Ok(Some(Record::Batch(batch)))
    }
}
