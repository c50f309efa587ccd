//! A snapshot of a tape: the segments and frames holding the rows acknowledged when the query
//! starts, and the one schema they are read as.
//!
//! What a snapshot guarantees:
//! - **Only acknowledged rows.** While a writer holds the tape (`LOCK`), the snapshot ends at the
//!   position it publishes in `ACKED` — every row before it is durable, every frame before it is
//!   whole. With no writer, it ends after the last whole frame on the tape. A frame being
//!   written, a torn tail, or rows past the end are never read.
//! - **Fixed.** Rows acknowledged after the snapshot was taken are not seen by queries over it,
//!   however long they run; taking a new snapshot sees them.
//! - **One schema.** Columns are the union over the segments, in the order first seen, all
//!   nullable (a column added later is null in the rows before it), plus the virtual `_seq`
//!   (each row's sequence number on the tape). A column that changes type is an error.
//! - **Damage is known up front.** Bytes a scan of an unsealed segment could not read, a
//!   segment whose header is damaged and rows that no segment holds are listed as damage; a
//!   query that needs them fails (or leaves them out, if asked) — see [`crate::scan`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use tapedeck::tape::codec::BatchDecoder;
use tapedeck::tape::format::{FRAME_HEADER, FrameHeader};
use tapedeck::tape::storage::Storage;
use tapedeck::tape::{acked, segment, verify};

use crate::error::{QueryError, Result};

/// The name of the virtual column holding each row's sequence number on the tape.
pub const SEQ_COLUMN: &str = "_seq";

/// Which state of the tape to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AsOf {
    /// Everything acknowledged now.
    #[default]
    Latest,
    /// The tape after its first `N` rows (`--as-of seq:N`).
    Seq(u64),
    /// The rows durable at a wall-clock time, µs since the Unix epoch (`--as-of time:T`), from
    /// the tape's durability history (`DURABLE`, docs/tape-format.md).
    Time(i64),
}

impl std::str::FromStr for AsOf {
    type Err = String;

    /// Parses `seq:N` (or `latest`).
    fn from_str(s: &str) -> std::result::Result<AsOf, String> {
        if s == "latest" {
            return Ok(AsOf::Latest);
        }
        if let Some(n) = s.strip_prefix("seq:") {
            return n
                .parse()
                .map(AsOf::Seq)
                .map_err(|_| format!("{s:?}: after seq: comes a row count, e.g. seq:1000"));
        }
        if let Some(t) = s.strip_prefix("time:") {
            return tapedeck::record::time::parse_timestamp(t)
                .map(AsOf::Time)
                .ok_or_else(|| {
                    format!(
                        "{s:?}: after time: comes an ISO 8601 time, e.g. time:2026-01-01T12:00:00Z"
                    )
                });
        }
        Err(format!(
            "{s:?}: expected seq:N (the first N rows) or time:ISO (the tape as it stood then)"
        ))
    }
}

/// One frame of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameInfo {
    /// Byte offset in the segment.
    pub offset: u64,
    /// Sequence number of its first row.
    pub first_seq: u64,
    /// Rows in it.
    pub rows: u32,
    /// Event-time range (µs); `None`: the frame has none — or, in a segment opened from a
    /// version-1 footer (`SegmentInfo::frame_times_known` false), not known until the frame
    /// header is read ([`Snapshot::frame_times`]).
    pub time: Option<(i64, i64)>,
}

impl FrameInfo {
    pub fn end_seq(&self) -> u64 {
        self.first_seq.saturating_add(u64::from(self.rows))
    }
}

/// Rows of the snapshot that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    pub segment: String,
    pub offset: u64,
    pub seq_from: u64,
    pub seq_to: u64,
    pub problem: String,
}

/// One segment of a snapshot.
#[derive(Debug)]
pub(crate) struct SegmentInfo {
    /// File name.
    pub name: String,
    /// Sequence number of its first row.
    pub first_seq: u64,
    /// Sequence number after its last row in the snapshot.
    pub end_seq: u64,
    /// Its own schema (the Arrow IPC schema in its header).
    pub schema: SchemaRef,
    /// For each of the snapshot's columns, its index in this segment's schema.
    pub columns: Vec<Option<usize>>,
    /// The segment's event-time column is the snapshot's (its frame time ranges describe it).
    pub same_time_column: bool,
    /// Min and max event time, from the footer (sealed segments) or the frames.
    pub time: Option<(i64, i64)>,
    /// Whether the frames' time ranges are known.
    pub frame_times_known: bool,
    /// They are known from a version-2 footer, which the hash chain does not cover:
    /// `--verify` checks them against the frame headers ([`Snapshot::check_chain`]).
    pub times_from_footer: bool,
    /// The frames in the snapshot, in order.
    pub frames: Vec<FrameInfo>,
    /// Bytes a frame may reach (the footer or the end of the last whole frame).
    pub limit: u64,
    /// Header's hash of the previous segment; the footer's chain hash and where the footer
    /// starts (sealed segments).
    pub prev_chain: [u8; 32],
    pub sealed: Option<([u8; 32], u64)>,
    /// Bytes of the segment file.
    pub file_len: u64,
}

/// A snapshot of a tape; see the module docs.
pub struct Snapshot {
    pub(crate) dir: PathBuf,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) segments: Vec<SegmentInfo>,
    pub(crate) damage: Vec<Damage>,
    /// Sequence number after the last row of the snapshot.
    end: u64,
    /// Rows acknowledged on the tape when the snapshot was taken (before `--as-of`).
    acknowledged: u64,
    schema: SchemaRef,
    time_column: Option<usize>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("dir", &self.dir)
            .field("end", &self.end)
            .field("segments", &self.segments.len())
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    /// Takes a snapshot of the tape in `dir`.
    pub fn open(dir: impl AsRef<Path>, as_of: AsOf) -> Result<Snapshot> {
        let dir = dir.as_ref();
        // A writer that starts while the snapshot is taken without one could have frames on
        // disk that are not yet durable: take it again, from the position it publishes.
        let mut running = acked::writer_running(dir);
        for _ in 0..3 {
            let snap = Snapshot::take(dir, as_of, running)?;
            if running {
                return Ok(snap);
            }
            running = acked::writer_running(dir);
            if !running {
                return Ok(snap);
            }
        }
        Snapshot::take(dir, as_of, running)
    }

    /// Takes a snapshot of a tape held by `storage` rather than a directory (a simulated disk
    /// in tests, a tape kept elsewhere): its rows up to the last whole frame, as when no writer
    /// runs — no writer publishes a position there. `--as-of time:` needs the tape's
    /// directory (its `DURABLE` history).
    pub fn open_storage(storage: Arc<dyn Storage>, as_of: AsOf) -> Result<Snapshot> {
        let dir = storage.describe("");
        // A directory a writer holds is read up to the position it publishes, as `open` does.
        let running = dir.is_dir() && acked::writer_running(&dir);
        if matches!(as_of, AsOf::Time(_)) && !dir.is_dir() {
            return Err(QueryError::AsOfUnknown {
                tape: dir,
                requested: "time".into(),
                message: "this tape is not in a directory, so it has no durability history \
                          (DURABLE); use seq:N"
                    .into(),
            });
        }
        Snapshot::take_from(dir, storage, as_of, running)
    }

    /// Takes the snapshot, from the published position if a writer was `running`.
    fn take(dir: &Path, as_of: AsOf, running: bool) -> Result<Snapshot> {
        let storage = verify::storage_for(dir)?;
        Snapshot::take_from(dir.to_path_buf(), storage, as_of, running)
    }

    /// [`Snapshot::take`] over `storage`, the tape directory `dir` naming it (and holding
    /// `ACKED` and `DURABLE`).
    fn take_from(
        dir: PathBuf,
        storage: Arc<dyn Storage>,
        as_of: AsOf,
        running: bool,
    ) -> Result<Snapshot> {
        // A segment removed between the listing and its reading (a compaction replaced it,
        // retention trimmed it) is not damage: the tape is listed again.
        for _ in 0..3 {
            if let Some(snapshot) = Snapshot::try_take(&dir, &storage, as_of, running)? {
                return Ok(snapshot);
            }
        }
        Snapshot::try_take(&dir, &storage, as_of, running)?.ok_or_else(|| {
            QueryError::from(tapedeck::Error::Tape {
                path: dir.clone(),
                message: "its segments kept changing while the query listed them (compaction or retention running): run the query again".into(),
            })
        })
    }

    /// One try of [`Snapshot::take_from`]; `None` when a listed segment was gone.
    fn try_take(
        dir: &Path,
        storage: &Arc<dyn Storage>,
        as_of: AsOf,
        running: bool,
    ) -> Result<Option<Snapshot>> {
        let dir = dir.to_path_buf();
        let storage = storage.clone();
        // Read the published position before listing: the segments listed after it hold at
        // least every row it covers.
        let published = if running {
            Some(acked::read(&dir)?.unwrap_or(0))
        } else {
            None
        };
        let listed = segment::list_live(storage.as_ref())?;
        let mut segments: Vec<SegmentInfo> = Vec::new();
        let mut damage = Vec::new();
        for (k, (first_seq, name)) in listed.iter().enumerate() {
            if published.is_some_and(|p| *first_seq >= p) {
                break;
            }
            let next_first = listed.get(k + 1).map(|n| n.0);
            let gone = |storage: &Arc<dyn Storage>| storage.len(name).ok().flatten().is_none();
            let read = match read_segment(storage.as_ref(), name, published, &mut damage) {
                Err(_) if gone(&storage) => return Ok(None),
                read => read?,
            };
            match read {
                Some(seg) => segments.push(seg),
                None if gone(&storage) => return Ok(None),
                None => damage.push(Damage {
                    segment: name.clone(),
                    offset: 0,
                    seq_from: *first_seq,
                    seq_to: next_first.or(published).unwrap_or(*first_seq),
                    problem: "the segment's header is damaged".into(),
                }),
            }
        }
        // Rows no segment holds (a segment removed by hand, or one whose header is damaged).
        let mut expected = 0u64;
        for s in &segments {
            if s.first_seq > expected && !damage.iter().any(|d| d.seq_from == expected) {
                damage.push(Damage {
                    segment: s.name.clone(),
                    offset: 0,
                    seq_from: expected,
                    seq_to: s.first_seq,
                    problem: "no segment holds these rows".into(),
                });
            }
            expected = s.end_seq.max(expected);
        }
        let on_tape = segments.last().map_or(0, |s| s.end_seq);
        let acknowledged = published.map_or(on_tape, |p| p.min(on_tape));
        let end = match as_of {
            AsOf::Latest => acknowledged,
            AsOf::Seq(n) if n <= acknowledged => n,
            AsOf::Seq(n) => {
                return Err(QueryError::AsOfBeyondEnd {
                    tape: dir,
                    requested: format!("seq:{n}"),
                    end: acknowledged,
                });
            }
            AsOf::Time(t) => {
                let requested = format!("time:{}", tapedeck::record::time::iso_micros(t));
                match acked::durable_at(&dir, t)? {
                    acked::DurableAt::Seq(n) => n.min(acknowledged),
                    acked::DurableAt::NoHistory => {
                        return Err(QueryError::AsOfUnknown {
                            tape: dir,
                            requested,
                            message: "the tape has no durability history (DURABLE): it was \
                                      recorded by a version before it was kept; use seq:N"
                                .into(),
                        });
                    }
                    acked::DurableAt::Before { since, seq } => {
                        return Err(QueryError::AsOfUnknown {
                            tape: dir,
                            requested,
                            message: format!(
                                "the tape's durability history starts at {} (with {seq} rows); \
                                 earlier times are unknown — use seq:N",
                                tapedeck::record::time::iso_micros(since)
                            ),
                        });
                    }
                }
            }
        };
        let (schema, time_column) = union_schema(&dir, &mut segments)?;
        let mut snap = Snapshot {
            dir,
            storage,
            segments,
            damage,
            end,
            acknowledged,
            schema,
            time_column,
        };
        snap.clip(end);
        Ok(Some(snap))
    }

    /// Leaves out every row from `end` on.
    fn clip(&mut self, end: u64) {
        self.segments
            .retain(|s| s.first_seq < end || s.frames.is_empty());
        for s in &mut self.segments {
            s.frames.retain(|f| f.first_seq < end);
            s.end_seq = s.end_seq.min(end);
        }
        self.segments.retain(|s| !s.frames.is_empty());
        self.damage.retain(|d| d.seq_from < end);
        for d in &mut self.damage {
            d.seq_to = d.seq_to.min(end);
        }
    }

    /// The tape directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sequence number after the last row of the snapshot: how many rows it holds, counting
    /// damaged ones.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Rows acknowledged on the tape when the snapshot was taken.
    pub fn acknowledged(&self) -> u64 {
        self.acknowledged
    }

    /// The schema queries see: the tape's columns and `_seq`.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The event-time column (the first timestamp column), whose filters prune by time.
    pub fn time_column(&self) -> Option<&str> {
        self.time_column
            .map(|i| self.schema.field(i).name().as_str())
    }

    /// Segments in the snapshot.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Bytes of the segment files in the snapshot.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.file_len).sum()
    }

    /// Segment `k`'s frames with their time ranges, reading the frame headers when the
    /// segment was opened from a version-1 footer (offsets only); returns the bytes read.
    pub(crate) fn frame_times(&self, k: usize) -> Result<(Vec<FrameInfo>, u64)> {
        let s = &self.segments[k];
        if s.frame_times_known {
            return Ok((s.frames.clone(), 0));
        }
        self.read_frame_times(k)
    }

    /// Segment `k`'s frames with the time ranges their headers hold.
    fn read_frame_times(&self, k: usize) -> Result<(Vec<FrameInfo>, u64)> {
        let s = &self.segments[k];
        let out = s
            .frames
            .iter()
            .zip(self.frame_headers(k)?)
            .map(|(f, h)| {
                // A header that does not decode, or disagrees with the index, is left for the
                // frame read to report (with its CRC); here it only cannot be pruned.
                let time = match h {
                    Ok(h) if h.first_seq == f.first_seq => h.time,
                    _ => Some((i64::MIN, i64::MAX)),
                };
                FrameInfo { time, ..*f }
            })
            .collect();
        let bytes = (FRAME_HEADER as u64).saturating_mul(s.frames.len() as u64);
        Ok((out, bytes))
    }

    /// The header of each frame of segment `k` (40 bytes read each), decoded or not.
    fn frame_headers(
        &self,
        k: usize,
    ) -> Result<Vec<std::result::Result<FrameHeader, tapedeck::tape::format::FormatError>>> {
        let s = &self.segments[k];
        let mut head = [0u8; FRAME_HEADER];
        s.frames
            .iter()
            .map(|f| {
                self.storage
                    .read_at(&s.name, f.offset, &mut head)
                    .map_err(|e| tapedeck::Error::io("read", self.storage.describe(&s.name), e))?;
                Ok(FrameHeader::decode(&head))
            })
            .collect()
    }

    /// The error for a frame of segment `k` at byte `offset` whose format version `v` this
    /// build does not read: not damage to skip — most likely a newer tapedeck wrote it.
    pub(crate) fn newer_frame(&self, k: usize, offset: u64, v: u16) -> QueryError {
        QueryError::from(tapedeck::Error::Tape {
            path: self.storage.describe(&self.segments[k].name),
            message: format!(
                "the frame at byte {offset} has format version {v}, which this build does not read: written by a newer tapedeck (query with that version), or damaged (`tapedeck verify` tells)"
            ),
        })
    }

    /// `--verify`: checks segment `k`'s place in the hash chain — its header names the previous
    /// segment's chain hash, and (sealed) its footer's hash is that of its bytes — and that the
    /// frame times its footer holds (outside the chain; queries prune by them) are those of
    /// its frame headers (inside it).
    pub(crate) fn check_chain(&self, k: usize) -> Result<()> {
        let s = &self.segments[k];
        let broken = |problem: String| QueryError::BrokenChain {
            tape: self.dir.clone(),
            segment: s.name.clone(),
            problem,
        };
        let prev = match k.checked_sub(1).map(|p| &self.segments[p]) {
            None if s.first_seq == 0 => Some([0u8; 32]),
            Some(p) if p.end_seq == s.first_seq => p.sealed.map(|(chain, _)| chain),
            _ => None,
        };
        if let Some(prev) = prev
            && prev != s.prev_chain
        {
            return Err(broken(
                "its header's previous-segment hash does not match the chain".into(),
            ));
        }
        if let Some((chain, footer_at)) = s.sealed {
            let bytes =
                segment::chain_hash(self.storage.as_ref(), &s.name, &s.prev_chain, footer_at)?;
            if bytes != chain {
                return Err(broken(format!(
                    "its bytes hash to {} but its footer says {}",
                    tapedeck::tape::format::hex(&bytes),
                    tapedeck::tape::format::hex(&chain)
                )));
            }
        }
        if s.times_from_footer {
            self.check_footer_times(k)?;
        }
        Ok(())
    }

    /// `--verify` of a version-2 footer's frame times, outside the hash chain, against the
    /// frame headers inside it: each index entry must point at a frame header of its
    /// `first_seq` with the same time range.
    fn check_footer_times(&self, k: usize) -> Result<()> {
        let s = &self.segments[k];
        let broken = |problem: String| QueryError::BrokenChain {
            tape: self.dir.clone(),
            segment: s.name.clone(),
            problem,
        };
        let range = |t: Option<(i64, i64)>| {
            t.map_or("none".to_string(), |(lo, hi)| format!("{lo}..={hi} µs"))
        };
        for (f, h) in s.frames.iter().zip(self.frame_headers(k)?) {
            match h {
                Ok(h) if h.first_seq == f.first_seq => {
                    if h.time != f.time {
                        return Err(broken(format!(
                            "its footer (outside the hash chain) gives the frame at byte {} the \
                             time range {}, the frame's header {}",
                            f.offset,
                            range(f.time),
                            range(h.time)
                        )));
                    }
                }
                Err(tapedeck::tape::format::FormatError::Version(v)) => {
                    return Err(self.newer_frame(k, f.offset, v));
                }
                _ => {
                    return Err(broken(format!(
                        "its footer's index entry for row {} points at byte {}, where no frame \
                         of that row starts",
                        f.first_seq, f.offset
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Reads one segment's frames up to `published`; `None` if its header is damaged. Gaps found
/// by a scan go to `damage`.
fn read_segment(
    storage: &dyn Storage,
    name: &str,
    published: Option<u64>,
    damage: &mut Vec<Damage>,
) -> Result<Option<SegmentInfo>> {
    // A sealed segment opens from its footer (frame offsets; times from version 2); the segment being
    // written by walking its frame headers; anything the walk cannot vouch for by a full scan
    // (which finds corrupt middles).
    let (scanned, from_index) = match segment::open_indexed(storage, name)? {
        Some(s) => (s, true),
        None => match walk(storage, name, published)? {
            Some(s) => (s, false),
            None => match segment::scan(storage, name)? {
                Ok(s) => (s, false),
                Err(_) => return Ok(None),
            },
        },
    };
    let times_from_footer =
        from_index && scanned.footer.as_ref().is_some_and(|f| f.times.is_some());
    let decoder = BatchDecoder::new(&scanned.header.schema).map_err(|e| tapedeck::Error::Tape {
        path: storage.describe(name),
        message: format!("the segment's schema does not decode: {e}"),
    })?;
    let frames: Vec<FrameInfo> = scanned
        .frames
        .iter()
        .filter(|f| published.is_none_or(|p| f.header.first_seq < p))
        .map(|f| FrameInfo {
            offset: f.offset,
            first_seq: f.header.first_seq,
            rows: f.header.rows,
            time: f.header.time,
        })
        .collect();
    for g in &scanned.gaps {
        damage.push(Damage {
            segment: name.to_string(),
            offset: g.offset,
            seq_from: g.rows_from,
            seq_to: g.rows_from.saturating_add(g.rows),
            problem: format!(
                "{} bytes fail their checksum",
                g.end.saturating_sub(g.offset)
            ),
        });
    }
    let end_seq = frames
        .last()
        .map_or(scanned.header.first_seq, FrameInfo::end_seq);
    let time = match &scanned.footer {
        Some(f) if f.min_time <= f.max_time => Some((f.min_time, f.max_time)),
        Some(_) => None,
        None => scanned.time_range(),
    };
    Ok(Some(SegmentInfo {
        name: name.to_string(),
        first_seq: scanned.header.first_seq,
        end_seq,
        schema: decoder.schema(),
        columns: Vec::new(),
        same_time_column: false,
        time,
        // A version-2 footer holds the frames' times; a version-1 footer offsets only.
        frame_times_known: !from_index || times_from_footer,
        times_from_footer,
        frames,
        limit: scanned.valid_end,
        prev_chain: scanned.header.prev_chain,
        sealed: scanned
            .footer
            .as_ref()
            .zip(scanned.footer_offset)
            .map(|(f, at)| (f.chain, at)),
        file_len: scanned.file_len,
    }))
}

/// Walks an unsealed segment's frames by their headers alone (40 bytes each; the frames' CRCs
/// are checked when a query reads them), up to `published` or the end of the file. `None` when
/// it meets a header that does not decode, or a sequence break, before that: the caller then
/// scans the segment, which tells a torn tail from a corrupt middle.
fn walk(
    storage: &dyn Storage,
    name: &str,
    published: Option<u64>,
) -> Result<Option<segment::Scanned>> {
    let Ok((header, header_len)) = segment::read_header(storage, name)? else {
        return Ok(None);
    };
    let file_len = storage
        .len(name)
        .map_err(|e| tapedeck::Error::io("read", storage.describe(name), e))?
        .unwrap_or(0);
    let mut frames = Vec::new();
    let mut at = header_len;
    let mut seq = header.first_seq;
    let mut head = [0u8; FRAME_HEADER];
    loop {
        if published.is_some_and(|p| seq >= p) {
            break;
        }
        let Some(end_of_header) = at.checked_add(FRAME_HEADER as u64) else {
            return Ok(None);
        };
        if end_of_header > file_len {
            // The end of the file (or a header being written): fine without a writer only if
            // nothing is left, with one only once the published position is reached.
            if published.is_some() || at != file_len {
                return Ok(None);
            }
            break;
        }
        storage
            .read_at(name, at, &mut head)
            .map_err(|e| tapedeck::Error::io("read", storage.describe(name), e))?;
        let h = match FrameHeader::decode(&head) {
            Ok(h) if h.first_seq == seq => h,
            _ => return Ok(None),
        };
        let end = at.saturating_add(h.frame_len() as u64);
        if end > file_len {
            // A frame cut short: a torn tail (no writer) — or, below the published position,
            // something the scan must look at.
            return Ok(None);
        }
        frames.push(segment::FrameRef {
            offset: at,
            header: h,
        });
        seq = h.end_seq();
        at = end;
    }
    Ok(Some(segment::Scanned {
        name: name.to_string(),
        header,
        header_len,
        frames,
        gaps: Vec::new(),
        valid_end: at,
        file_len,
        footer: None,
        footer_offset: None,
    }))
}

fn first_timestamp(schema: &Schema) -> Option<usize> {
    schema
        .fields()
        .iter()
        .position(|f| matches!(f.data_type(), DataType::Timestamp(..)))
}

/// The union schema (plus `_seq`) and its event-time column; fills each segment's column map.
fn union_schema(dir: &Path, segments: &mut [SegmentInfo]) -> Result<(SchemaRef, Option<usize>)> {
    let mut fields: Vec<(Field, String)> = Vec::new();
    for s in segments.iter() {
        for f in s.schema.fields() {
            if matches!(f.data_type(), DataType::Dictionary(..)) {
                return Err(QueryError::Engine(format!(
                    "tape {}: segment {}: column {:?} is dictionary-encoded, which tapedeck \
                     does not record and queries do not read",
                    dir.display(),
                    s.name,
                    f.name()
                )));
            }
            if f.name() == SEQ_COLUMN {
                return Err(QueryError::VirtualColumnTaken {
                    tape: dir.to_path_buf(),
                    column: SEQ_COLUMN.into(),
                });
            }
            match fields.iter().find(|(g, _)| g.name() == f.name()) {
                Some((g, first_segment)) if g.data_type() != f.data_type() => {
                    return Err(QueryError::SchemaConflict {
                        tape: dir.to_path_buf(),
                        column: f.name().clone(),
                        first: format!("{} in segment {first_segment}", g.data_type()),
                        second: format!("{} in segment {}", f.data_type(), s.name),
                    });
                }
                Some(_) => {}
                None => fields.push((
                    Field::new(f.name(), f.data_type().clone(), true),
                    s.name.clone(),
                )),
            }
        }
    }
    let mut all: Vec<Field> = fields.into_iter().map(|(f, _)| f).collect();
    all.push(Field::new(SEQ_COLUMN, DataType::UInt64, false));
    let schema = Schema::new(all);
    let time_column = first_timestamp(&schema);
    let time_name = time_column.map(|i| schema.field(i).name().clone());
    for s in segments.iter_mut() {
        s.columns = schema
            .fields()
            .iter()
            .map(|f| s.schema.index_of(f.name()).ok())
            .collect();
        s.same_time_column = match (first_timestamp(&s.schema), &time_name) {
            (Some(i), Some(name)) => s.schema.field(i).name() == name,
            _ => false,
        };
    }
    Ok((Arc::new(schema), time_column))
}
