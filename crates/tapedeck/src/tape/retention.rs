//! Retention: a tape that runs for months without filling the disk. Whole sealed segments are
//! removed, oldest first, while the tape is larger than a size or their rows are older than an
//! age — never the newest sealed segment (the tip of the chain) or the open one after it, never
//! past a row a caller protects (the oldest cursor of the sinks known to the tape).
//!
//! Guarantees: each removal is first recorded in the manifest (`trimmed`, with the segment's
//! range and its chain hash) and fdatasynced, then the file is removed — a crash between the two
//! leaves a file the manifest calls trimmed, which the next writer removes. The remaining
//! segments still form one hash chain, starting from the last trimmed segment's hash, so
//! `verify` proves it unbroken and says where it begins.

use std::time::Duration;

use serde::Serialize;

use super::manifest::{Manifest, Record};
use super::segment;
use crate::error::{Error, Result};
use crate::storage::Storage;

/// How much of a tape to keep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep at most this many bytes of segments (the last segment always stays).
    pub max_bytes: Option<u64>,
    /// Remove segments whose newest row's event time is older than this.
    pub max_age: Option<Duration>,
}

impl Retention {
    /// The policy as the user would write it (`10GiB`, `7d`, `10GiB,7d`).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(b) = self.max_bytes {
            parts.push(format!("{b} bytes"));
        }
        if let Some(a) = self.max_age {
            parts.push(format!("{} s", a.as_secs()));
        }
        parts.join(" and ")
    }
}

impl std::str::FromStr for Retention {
    type Err = String;

    /// `SIZE` (`10GiB`, `500MB`, `1048576`), `AGE` (`7d`, `12h`, `30m`, `90s`, `2w`), or both
    /// separated by a comma (`10GiB,7d`).
    fn from_str(s: &str) -> std::result::Result<Retention, String> {
        let mut r = Retention::default();
        for part in s.split(',').map(str::trim) {
            if let Some(age) = parse_age(part) {
                r.max_age = Some(age);
            } else if let Some(bytes) = parse_size(part) {
                r.max_bytes = Some(bytes);
            } else {
                return Err(format!(
                    "`{part}` is neither a size (10GiB, 500MB, 1048576) nor an age (7d, 12h, 30m, 90s, 2w)"
                ));
            }
        }
        if r.max_bytes == Some(0) {
            return Err("a size of 0 would remove every row as soon as it is sealed".into());
        }
        Ok(r)
    }
}

fn parse_age(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs = match unit {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(secs).map(Duration::from_secs)
}

fn parse_size(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// One segment removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrimmedSegment {
    /// Its file.
    pub file: String,
    /// Its first row's sequence number.
    pub first_seq: u64,
    /// Its rows.
    pub rows: u64,
    /// Its bytes.
    pub bytes: u64,
}

/// What a trim did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TrimReport {
    /// Segments removed, oldest first.
    pub removed: Vec<TrimmedSegment>,
    /// The first row still on the tape.
    pub first_seq: u64,
    /// Bytes of segments left.
    pub bytes: u64,
    /// The policy wanted more removed, but the segment holding this row (a protected
    /// cursor) stays: (the protected row, bytes the policy would have removed beyond it).
    pub held_back: Option<(u64, u64)>,
}

/// Removes what `retention` says to from the tape in `storage`, whose manifest is `manifest`
/// (the caller holds the tape's writer); rows at or after `protect_from` stay. `apply: false`
/// changes nothing and reports what would be removed.
pub(crate) fn trim(
    storage: &dyn Storage,
    manifest: &Manifest,
    retention: &Retention,
    protect_from: Option<u64>,
    now_micros: i64,
    apply: bool,
) -> Result<TrimReport> {
    let names = segment::list_live(storage)?;
    let mut sizes = Vec::with_capacity(names.len());
    for (_, name) in &names {
        let len = storage
            .len(name)
            .map_err(|e| Error::io("stat", storage.describe(name), e))?
            .unwrap_or(0);
        sizes.push(len);
    }
    let mut total: u64 = sizes.iter().sum();
    let mut report = TrimReport {
        first_seq: names
            .first()
            .map_or(0, |(seq, _)| *seq)
            .max(manifest.with_records(|r| trimmed_before(r).map_or(0, |(end, _)| end))),
        ..TrimReport::default()
    };
    let age_limit = retention
        .max_age
        .map(|age| now_micros.saturating_sub(i64::try_from(age.as_micros()).unwrap_or(i64::MAX)));
    // Never the newest sealed segment, the tip of the chain a new segment's header continues
    // (a writer that crashes before a new segment's header is durable starts again from it),
    // nor anything after it (the open segment).
    let last_sealed = match names.last() {
        Some((_, last)) => {
            segment::open_indexed(storage, last)?.is_some_and(|s| s.footer.is_some())
        }
        None => false,
    };
    let keep_from = names.len().saturating_sub(if last_sealed { 1 } else { 2 });
    for (i, (first_seq, name)) in names.iter().enumerate().take(keep_from) {
        let too_big = retention.max_bytes.is_some_and(|max| total > max);
        let Some(sealed) = segment::open_indexed(storage, name)? else {
            // Not sealed (damaged): the chain is not provable past it; stop here.
            break;
        };
        let Some(footer) = sealed.footer.as_ref() else {
            break;
        };
        // A segment without event times (`max_time` `i64::MIN`) is never too old; removal is
        // oldest first and contiguous (the chain must stay whole), so it stops there.
        let too_old = age_limit.is_some_and(|limit| {
            footer.rows > 0 && footer.max_time != i64::MIN && footer.max_time < limit
        });
        if !too_big && !too_old {
            break;
        }
        let end = first_seq.saturating_add(footer.rows);
        if let Some(protected) = protect_from
            && end > protected
        {
            let wanted: u64 = if retention.max_bytes.is_some() {
                total.saturating_sub(retention.max_bytes.unwrap_or(0))
            } else {
                sizes[i]
            };
            report.held_back = Some((protected, wanted));
            break;
        }
        if apply {
            // A removal recorded before whose file is still there (its removal failed) is
            // not recorded again.
            let recorded = manifest.with_records(|records| {
                records
                    .iter()
                    .any(|r| matches!(r, Record::Trimmed { file, .. } if file == name))
            });
            if !recorded {
                manifest.append(&Record::Trimmed {
                    file: name.clone(),
                    first_seq: *first_seq,
                    rows: footer.rows,
                    bytes: sizes[i],
                    chain: super::format::hex(&footer.chain),
                })?;
            }
            storage
                .remove(name)
                .map_err(|e| Error::io("remove", storage.describe(name), e))?;
        }
        total = total.saturating_sub(sizes[i]);
        report.first_seq = end;
        report.removed.push(TrimmedSegment {
            file: name.clone(),
            first_seq: *first_seq,
            rows: footer.rows,
            bytes: sizes[i],
        });
    }
    report.bytes = total;
    Ok(report)
}

/// Removes the files the manifest calls trimmed that are still there (a crash between the
/// record and the removal); returns how many.
pub(crate) fn finish_removals(storage: &dyn Storage, records: &[Record]) -> Result<usize> {
    let mut n = 0;
    for r in records {
        // Only a segment's own name: a manifest naming anything else is not obeyed.
        if let Record::Trimmed {
            file, first_seq, ..
        } = r
            && super::format::parse_segment_name(file) == Some(*first_seq)
            && storage
                .len(file)
                .map_err(|e| Error::io("stat", storage.describe(file), e))?
                .is_some()
        {
            storage
                .remove(file)
                .map_err(|e| Error::io("remove", storage.describe(file), e))?;
            n += 1;
        }
    }
    Ok(n)
}

/// Each trimmed segment of a manifest: the row after it, and its chain hash (hex).
pub fn trimmed_ends(records: &[Record]) -> impl Iterator<Item = (u64, &str)> {
    records.iter().filter_map(|r| match r {
        Record::Trimmed {
            first_seq,
            rows,
            chain,
            ..
        } => Some((first_seq.saturating_add(*rows), chain.as_str())),
        _ => None,
    })
}

/// Where the retained part of a tape begins, by its manifest: the row after the last trimmed
/// segment and that segment's chain hash (hex); `None` when nothing was trimmed.
pub fn trimmed_before(records: &[Record]) -> Option<(u64, String)> {
    trimmed_ends(records)
        .max_by_key(|(end, _)| *end)
        .map(|(end, chain)| (end, chain.to_string()))
}

/// Space on the file system holding a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DiskSpace {
    /// Bytes an unprivileged writer can still use.
    pub free: u64,
    /// Bytes of the file system.
    pub total: u64,
}

impl DiskSpace {
    /// Free space as a percentage of the file system (100 for an empty one).
    pub fn free_percent(&self) -> f64 {
        if self.total == 0 {
            return 100.0;
        }
        self.free as f64 * 100.0 / self.total as f64
    }
}

/// The space of the file system holding `dir`; `None` when it cannot be read.
pub fn disk_space(dir: &std::path::Path) -> Option<DiskSpace> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(DiskSpace {
        free: s.f_bavail.saturating_mul(s.f_frsize),
        total: s.f_blocks.saturating_mul(s.f_frsize),
    })
}

/// The free-space warning level of a recorder on a tape, in percent of the disk, unless set
/// otherwise (`record --disk-warning`).
pub const DEFAULT_DISK_WARNING: f64 = 5.0;

/// The first row on the tape in `dir`: 0, or the row after the last segment retention
/// removed.
pub fn first_row(dir: &std::path::Path) -> Result<u64> {
    let storage = super::verify::storage_for(dir)?;
    Ok(trimmed_before(&super::manifest::read_only(storage.as_ref())?).map_or(0, |(end, _)| end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_parse_and_nonsense_is_refused() {
        let r: Retention = "10GiB,7d".parse().unwrap();
        assert_eq!(r.max_bytes, Some(10 << 30));
        assert_eq!(r.max_age, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(
            "500MB".parse::<Retention>().unwrap().max_bytes,
            Some(500_000_000)
        );
        assert_eq!("4096".parse::<Retention>().unwrap().max_bytes, Some(4096));
        assert_eq!(
            "90s".parse::<Retention>().unwrap().max_age,
            Some(Duration::from_secs(90))
        );
        for bad in ["", "ten", "5 parsecs", "0", "7y", "99999999999999999999d"] {
            let e = bad.parse::<Retention>().unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
    }
}
