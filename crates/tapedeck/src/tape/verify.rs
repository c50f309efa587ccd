//! `verify` and `inspect`: what is on a tape, and whether every byte of it checks out.
//!
//! [`verify`] reads every segment in order and checks each header, every frame's CRC32C and
//! sequence continuity, each footer, and the hash chain (each sealed segment's chain hash is
//! recomputed from the previous one and its bytes, and each header's `prev_chain` must match).
//! Quarantined ranges recorded in the manifest are reported too. [`inspect`] summarises a tape
//! without reading payloads: schema, segments, rows, time range, bytes on disk.

use std::sync::Arc;

use serde::Serialize;

use super::codec::BatchDecoder;
use super::format::{hex, unhex};
use super::manifest::{self, Record};
use super::segment;
use crate::error::{Error, Result};
use crate::storage::Storage;

/// One problem found by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Segment file (or `MANIFEST`).
    pub file: String,
    /// Byte offset, when known.
    pub offset: Option<u64>,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.offset {
            Some(o) => write!(f, "{} at byte {o}: {}", self.file, self.what),
            None => write!(f, "{}: {}", self.file, self.what),
        }
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Segments read.
    pub segments: u64,
    /// Frames whose CRC checked out.
    pub frames: u64,
    /// Rows in those frames.
    pub rows: u64,
    /// Every problem, in tape order.
    pub problems: Vec<Problem>,
    /// The first row on the tape: 0, or where retention left it (the rows before were
    /// removed, as the manifest records; the chain is checked from the last removed segment).
    pub first_seq: u64,
    /// The compactions the chain passes through, oldest first.
    pub compactions: Vec<Compaction>,
}

/// A compaction the manifest records: rows `first_seq..end_seq` were rewritten from
/// `segments_before` segments into `segments_after`; the old chain's last hash was
/// `old_chain`, which the new segments' chain starts from (someone who kept that hash can
/// check the history up to the compaction against it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Compaction {
    /// First row rewritten.
    pub first_seq: u64,
    /// Row after the last one rewritten.
    pub end_seq: u64,
    /// Segments replaced.
    pub segments_before: usize,
    /// Segments written.
    pub segments_after: usize,
    /// Bytes before.
    pub bytes_before: u64,
    /// Bytes after.
    pub bytes_after: u64,
    /// The old chain's last hash, hex.
    pub old_chain: String,
}

/// The compactions `records` hold, oldest first.
pub fn compactions(records: &[Record]) -> Vec<Compaction> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Compacted {
                first_seq,
                rows,
                replaced,
                bytes_before,
                files,
                old_chain,
                ..
            } => Some(Compaction {
                first_seq: *first_seq,
                end_seq: first_seq.saturating_add(*rows),
                segments_before: replaced.len(),
                segments_after: files.len(),
                bytes_before: *bytes_before,
                bytes_after: files.iter().map(|f| f.bytes).fold(0, u64::saturating_add),
                old_chain: old_chain.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// Checks every CRC and the hash chain; see the module docs.
///
/// Beside a running recorder that trims its tape (`record --retain`), a segment removed while
/// it is read is not damage: the manifest records it trimmed before the file goes, so the
/// check goes on from the segment after it, as if the tape had started there — it never
/// starts over, so it finishes however often the recorder trims.
pub fn verify(storage: &dyn Storage) -> Result<VerifyReport> {
    // A manifest record being appended while it was read: the tape is checked again (a few
    // times at most; then as it is, and what is still wrong is reported).
    for _ in 0..3 {
        if let Some(report) = verify_once(storage, true)? {
            return Ok(report);
        }
    }
    verify_once(storage, false).map(Option::unwrap_or_default)
}

/// A segment that [`verify`] could not read because it is gone, when the manifest — read
/// again — records it trimmed: retention removed it meanwhile (the record is written before
/// the file is removed, oldest first, so every segment before it is gone too). Returns where
/// the tape now begins (the row after it and its chain hash) and the manifest as it is now.
fn trimmed_meanwhile(storage: &dyn Storage, name: &str) -> Result<Option<Rebase>> {
    if storage
        .len(name)
        .map_err(|e| Error::io("stat", storage.describe(name), e))?
        .is_some()
    {
        return Ok(None);
    }
    let (records, damage) = manifest::read_checked(storage)?;
    let start = records.iter().find_map(|r| match r {
        Record::Trimmed {
            file,
            first_seq,
            rows,
            chain,
            ..
        } if file == name => Some((first_seq.saturating_add(*rows), unhex(chain))),
        _ => None,
    });
    Ok(start.map(|(first_seq, chain)| Rebase {
        first_seq,
        chain,
        records,
        damage,
    }))
}

/// Where [`verify`] goes on from after retention removed segments while it read them.
struct Rebase {
    first_seq: u64,
    chain: Option<[u8; 32]>,
    records: Vec<Record>,
    damage: Option<manifest::Damage>,
}

/// Whether the manifest, read again, records `name` replaced by a compaction (and the file is
/// gone).
fn replaced_meanwhile(storage: &dyn Storage, name: &str) -> Result<bool> {
    if storage
        .len(name)
        .map_err(|e| Error::io("stat", storage.describe(name), e))?
        .is_some()
    {
        return Ok(false);
    }
    Ok(manifest::read_checked(storage)?.0.iter().any(
        |r| matches!(r, Record::Compacted { replaced, .. } if replaced.iter().any(|f| f == name)),
    ))
}

/// One pass of [`verify`]; `None` when the manifest's tail did not check out and `retry`.
fn verify_once(storage: &dyn Storage, retry: bool) -> Result<Option<VerifyReport>> {
    let mut report = VerifyReport::default();
    let listed = segment_names(storage)?;
    // Read after the listing: a trim running meanwhile (`record --retain`) is in it, and the
    // files it removed, or a crash left behind, are skipped as the manifest's trimmed ones.
    let (mut records, mut damage) = manifest::read_checked(storage)?;
    let trimmed: std::collections::BTreeMap<u64, &str> =
        super::retention::trimmed_ends(&records).collect();
    let trimmed_files: std::collections::BTreeSet<&str> = records
        .iter()
        .filter_map(|r| match r {
            Record::Trimmed { file, .. } => Some(file.as_str()),
            _ => None,
        })
        .collect();
    let names: Vec<String> = listed
        .into_iter()
        .filter(|n| !trimmed_files.contains(n.as_str()))
        .collect();
    // The first row: 0, or — after retention — the end of the trimmed segment the first
    // segment left follows, whose chain hash (kept in the manifest) the chain goes on from.
    let first = names
        .first()
        .and_then(|n| super::format::parse_segment_name(n))
        .unwrap_or(0);
    report.first_seq = if trimmed.contains_key(&first) {
        first
    } else {
        0
    };
    // The previous segment's chain hash; `None` when its footer is damaged (that is reported
    // there, and the next header cannot be checked against it).
    let mut prev_chain = match trimmed.get(&first) {
        Some(chain) => unhex(chain),
        None => Some([0u8; 32]),
    };
    let mut expected_seq: Option<u64> = None;
    let mut joins = super::compact::ChainJoins::of(&records);
    // The first of `names` still on the tape (retention may remove some while they are read).
    let mut kept = 0;
    for (i, name) in names.iter().enumerate() {
        report.segments += 1;
        let problem = |offset, what: String| Problem {
            file: name.clone(),
            offset,
            what,
        };
        // Removed by retention while it was read: the tape now starts after it.
        macro_rules! trimmed_meanwhile_or {
            ($err:expr) => {
                match trimmed_meanwhile(storage, name)? {
                    Some(rebase) => {
                        report = VerifyReport {
                            first_seq: rebase.first_seq,
                            ..VerifyReport::default()
                        };
                        prev_chain = rebase.chain;
                        expected_seq = Some(rebase.first_seq);
                        (records, damage) = (rebase.records, rebase.damage);
                        joins = super::compact::ChainJoins::of(&records);
                        kept = i + 1;
                        continue;
                    }
                    // Replaced by a compaction while it was read: check the tape again.
                    None if retry && replaced_meanwhile(storage, name)? => return Ok(None),
                    None => $err,
                }
            };
        }
        let scanned = match segment::scan(storage, name) {
            Err(e) => trimmed_meanwhile_or!(return Err(e)),
            Ok(Err(bad)) => trimmed_meanwhile_or!(Err(bad)),
            Ok(Ok(s)) => Ok(s),
        };
        let s = match scanned {
            Ok(s) => s,
            // The last segment with its header not (all) written yet: a writer creating it,
            // or a crash while it did (the next writer removes it) — no row is in it.
            Err(bad)
                if i + 1 == names.len()
                    && matches!(bad.problem, super::format::FormatError::Short) =>
            {
                report.problems.push(problem(
                    None,
                    "not sealed (its header is not written yet): the writer is creating it, or crashed — opening the tape for writing removes it".into(),
                ));
                continue;
            }
            Err(bad) => {
                report
                    .problems
                    .push(problem(Some(0), format!("header: {}", bad.problem)));
                // Its rows, its end and its chain are unknown: reported here, not again as a
                // mismatch on the next segment.
                prev_chain = None;
                expected_seq = None;
                continue;
            }
        };
        if prev_chain.is_some_and(|c| !joins.links(&c, &s.header.prev_chain, s.header.first_seq)) {
            report.problems.push(problem(
                Some(32),
                "header's previous-segment hash does not match the chain".into(),
            ));
        }
        if let Some(e) = expected_seq
            && s.header.first_seq != e
        {
            report.problems.push(problem(
                Some(16),
                format!(
                    "starts at sequence {} but the previous segment ended at {e}",
                    s.header.first_seq
                ),
            ));
        }
        for g in &s.gaps {
            report.problems.push(problem(
                Some(g.offset),
                format!(
                    "{} damaged bytes (up to {}), {} rows from sequence {} unreadable",
                    g.end - g.offset,
                    g.end,
                    g.rows,
                    g.rows_from
                ),
            ));
        }
        if s.torn_bytes() > 0 {
            let what = match &s.footer {
                // Sealed: the footer says how many rows there are, so these bytes are damage.
                Some(_) => format!(
                    "{} damaged bytes before the footer: rows {}..{} unreadable",
                    s.torn_bytes(),
                    s.end_seq(),
                    s.end_seq_from_footer()
                ),
                None => format!(
                    "{} bytes after the last good frame are not a frame (torn tail)",
                    s.torn_bytes()
                ),
            };
            report.problems.push(problem(Some(s.valid_end), what));
        }
        report.frames += s.frames.len() as u64;
        report.rows += s.rows();
        match (&s.footer, s.footer_offset) {
            (Some(footer), Some(at)) => {
                let chain = match segment::chain_hash(storage, name, &s.header.prev_chain, at) {
                    Err(e) => trimmed_meanwhile_or!(return Err(e)),
                    Ok(chain) => chain,
                };
                if chain != footer.chain {
                    report.problems.push(problem(
                        Some(at),
                        format!(
                            "hash chain broken: footer says {}, bytes give {}",
                            hex(&footer.chain),
                            hex(&chain)
                        ),
                    ));
                }
                let indexed: Vec<u64> = footer.index.iter().map(|(o, _)| *o).collect();
                let found: Vec<u64> = s.frames.iter().map(|f| f.offset).collect();
                if s.gaps.is_empty() && indexed != found {
                    report.problems.push(problem(
                        Some(at),
                        "footer's frame index does not match the frames".into(),
                    ));
                } else if let Some(times) = &footer.times
                    && footer.index.iter().zip(times).any(|(&(offset, _), t)| {
                        // Each entry against the frame at its offset (a quarantined gap
                        // leaves no frame there to compare with).
                        s.frames
                            .binary_search_by_key(&offset, |f| f.offset)
                            .is_ok_and(|i| s.frames[i].header.time != *t)
                    })
                {
                    // Queries prune frames by these times: one that lies would hide rows.
                    report.problems.push(problem(
                        Some(at),
                        "footer's frame times do not match the frames' headers".into(),
                    ));
                }
                prev_chain = Some(footer.chain);
            }
            _ => {
                let what = if i + 1 == names.len() {
                    "not sealed (no footer): the writer is running, or crashed — opening the tape for writing seals it"
                } else {
                    "no valid footer, but a later segment exists"
                };
                report.problems.push(problem(None, what.into()));
                prev_chain = None;
            }
        }
        // A sealed segment's footer says where the next one starts, even when its last frames
        // are damaged (the damage is reported once, here, not again on the next segment).
        // Without a footer, a segment that is not the last ends where nobody can say (its
        // damage is reported above), so the next one's start is not checked against it.
        expected_seq = match &s.footer {
            Some(_) => Some(s.end_seq_from_footer()),
            None if i + 1 == names.len() => Some(s.end_seq()),
            None => None,
        };
    }
    let names = names.get(kept..).unwrap_or_default();
    whole_tape_problems(storage, names, &records, &mut report)?;
    if damage.is_some() && retry {
        // Perhaps a record being appended right now (a running writer): look again.
        std::thread::sleep(std::time::Duration::from_millis(50));
        return Ok(None);
    }
    if let Some((valid, len)) = damage {
        report.problems.push(Problem {
            file: manifest::MANIFEST.into(),
            offset: Some(valid),
            what: format!(
                "{} bytes after the last good record do not check out (a torn record, which the next writer cuts, or damage, which it keeps as MANIFEST.damaged-<µs> and replaces by the good records — the segments hold everything the manifest says)",
                len - valid
            ),
        });
    }
    report.compactions = compactions(&records);
    for r in records {
        if let Record::Quarantined {
            file,
            offset,
            end,
            rows,
            to,
            ..
        } = r
        {
            report.problems.push(Problem {
                file,
                offset: Some(offset),
                what: format!(
                    "quarantined earlier: bytes up to {end}, {rows} rows lost (copy in {to})"
                ),
            });
        }
    }
    Ok(Some(report))
}

/// What only the tape as a whole can show: a directory that is no tape, a tape that does not
/// start at row 0, and segments the manifest sealed that are gone.
fn whole_tape_problems(
    storage: &dyn Storage,
    names: &[String],
    records: &[Record],
    report: &mut VerifyReport,
) -> Result<()> {
    let has = |name: &str| {
        storage
            .len(name)
            .map(|l| l.is_some())
            .map_err(|e| Error::io("read", storage.describe(name), e))
    };
    if names.is_empty() && records.is_empty() && !has(super::id::TAPE_ID_FILE)? {
        report.problems.push(Problem {
            file: storage.describe("").display().to_string(),
            offset: None,
            what: "not a tape: no segments, no MANIFEST, no TAPEID (a tape directory is made by `tapedeck record --tape DIR`)".into(),
        });
        return Ok(());
    }
    let id_problem = match super::id::health(storage)? {
        super::id::IdHealth::Absent | super::id::IdHealth::Intact => None,
        super::id::IdHealth::OneCopyDamaged => Some(
            "one of its two copies is damaged; the next writer (`record --tape`, `deliver`) rewrites it from the other",
        ),
        super::id::IdHealth::Damaged => Some(
            "both copies of the tape id are damaged: sinks' cursors cannot be matched to this tape; restore the file from a backup",
        ),
    };
    if let Some(what) = id_problem {
        report.problems.push(Problem {
            file: super::id::TAPE_ID_FILE.into(),
            offset: None,
            what: what.into(),
        });
    }
    let kept_from = report.first_seq;
    if let Some(first) = names.first()
        && let Some(seq) = super::format::parse_segment_name(first)
        && seq != kept_from
    {
        let what = if kept_from == 0 {
            format!("the tape's first segment starts at sequence {seq}: rows 0..{seq} are missing")
        } else {
            format!(
                "retention removed the rows before {kept_from}, but the first segment starts at sequence {seq}: rows {kept_from}..{seq} are missing"
            )
        };
        report.problems.push(Problem {
            file: first.clone(),
            offset: None,
            what,
        });
    }
    // The manifest's last word on each file: sealed, or removed (a torn header cut to nothing,
    // an empty segment, a whole file quarantined).
    let mut sealed: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
    for r in records {
        match r {
            Record::Sealed {
                file,
                first_seq,
                rows,
                ..
            } => {
                sealed.insert(file, (*first_seq, *rows));
            }
            Record::Truncated {
                file, offset: 0, ..
            }
            | Record::Quarantined {
                file, offset: 0, ..
            }
            | Record::Trimmed { file, .. } => {
                sealed.remove(file.as_str());
            }
            Record::Compacted {
                replaced, files, ..
            } => {
                for file in replaced {
                    sealed.remove(file.as_str());
                }
                for f in files {
                    sealed.insert(&f.file, (f.first_seq, f.rows));
                }
            }
            _ => {}
        }
    }
    for (file, (first, rows)) in sealed {
        // A segment the listing did not see but that is there now was sealed after the
        // listing, beside a running writer: not missing. Nor is one the manifest, read again
        // now, records trimmed (retention beside a running writer removed it meanwhile).
        // A compaction's segment not renamed into place yet (the next writer does) is there
        // under its temporary name, and the segments it replaces still hold its rows.
        let there_now = || {
            storage.len(file).ok().flatten().is_some()
                || storage.len(&format!("{file}.new")).ok().flatten().is_some()
        };
        if names.iter().any(|n| n == file) || there_now() {
            continue;
        }
        let trimmed_now = manifest::read_checked(storage)?.0.iter().any(|r| match r {
            Record::Trimmed { file: f, .. } => f == file,
            Record::Compacted { replaced, .. } => replaced.iter().any(|f| f == file),
            _ => false,
        });
        if !trimmed_now {
            report.problems.push(Problem {
                file: file.to_string(),
                offset: None,
                what: format!(
                    "missing: the MANIFEST lists it sealed with {rows} rows (sequence {first}..{}), but the file is gone — restore it from a backup",
                    first.saturating_add(rows)
                ),
            });
        }
    }
    Ok(())
}

/// One segment in [`inspect`]'s summary.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentSummary {
    /// File name.
    pub file: String,
    /// First sequence number.
    pub first_seq: u64,
    /// Rows.
    pub rows: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// Sealed (has a footer).
    pub sealed: bool,
    /// Event-time range (µs), if known.
    pub time: Option<(i64, i64)>,
}

/// What [`inspect`] reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Inspection {
    /// Schema of the last segment, as text.
    pub schema: Vec<String>,
    /// Segments.
    pub segments: Vec<SegmentSummary>,
    /// Rows.
    pub rows: u64,
    /// Bytes on disk (segments).
    pub bytes: u64,
    /// Event-time range over the tape.
    pub time: Option<(i64, i64)>,
    /// Quarantined ranges from the manifest: (segment, offset, end, rows).
    pub quarantined: Vec<(String, u64, u64, u64)>,
    /// What retention removed, from the manifest: (segments, rows, bytes); the tape then
    /// starts at row `rows`.
    pub trimmed: Option<(u64, u64, u64)>,
    /// What compaction rewrote, from the manifest.
    pub compactions: Vec<Compaction>,
}

/// Summarises a tape; see the module docs.
pub fn inspect(storage: &dyn Storage) -> Result<Inspection> {
    let mut out = Inspection::default();
    for name in segment_names(storage)? {
        let s = match segment::open_indexed(storage, &name)? {
            Some(s) => s,
            None => match segment::scan(storage, &name)? {
                Ok(s) => s,
                Err(_) => continue,
            },
        };
        let time = match &s.footer {
            Some(f) if f.min_time <= f.max_time => Some((f.min_time, f.max_time)),
            Some(_) => None,
            None => s.time_range(),
        };
        let rows = s.footer.as_ref().map_or_else(|| s.rows(), |f| f.rows);
        if let Ok(d) = BatchDecoder::new(&s.header.schema) {
            out.schema = d
                .schema()
                .fields()
                .iter()
                .map(|f| format!("{}: {}", f.name(), f.data_type()))
                .collect();
        }
        out.rows += rows;
        out.bytes += s.file_len;
        out.time = match (out.time, time) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (x, y) => x.or(y),
        };
        out.segments.push(SegmentSummary {
            file: name,
            first_seq: s.header.first_seq,
            rows,
            bytes: s.file_len,
            sealed: s.footer.is_some(),
            time,
        });
    }
    let records = manifest::read_only(storage)?;
    out.compactions = compactions(&records);
    for r in records {
        match r {
            Record::Quarantined {
                file,
                offset,
                end,
                rows,
                ..
            } => out.quarantined.push((file, offset, end, rows)),
            Record::Trimmed {
                first_seq,
                rows,
                bytes,
                ..
            } => {
                let (n, end, total) = out.trimmed.unwrap_or((0, 0, 0));
                out.trimmed = Some((
                    n + 1,
                    end.max(first_seq.saturating_add(rows)),
                    total.saturating_add(bytes),
                ));
            }
            _ => {}
        }
    }
    Ok(out)
}

fn segment_names(storage: &dyn Storage) -> Result<Vec<String>> {
    Ok(segment::list_live(storage)?
        .into_iter()
        .map(|(_, n)| n)
        .collect())
}

/// Opens a tape directory for reading (no lock, nothing written).
pub fn storage_for(dir: &std::path::Path) -> Result<Arc<dyn Storage>> {
    if !dir.is_dir() {
        let message = if dir.exists() {
            "this is a file, not a tape directory (a tape is a directory made by `tapedeck record --tape DIR`)"
        } else {
            "no such tape directory"
        };
        return Err(Error::Tape {
            path: dir.to_path_buf(),
            message: message.into(),
        });
    }
    Ok(Arc::new(
        crate::storage::FsStorage::new(dir).map_err(|e| Error::io("open", dir, e))?,
    ))
}
