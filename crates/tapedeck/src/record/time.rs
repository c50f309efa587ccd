//! Timestamps as text: ISO 8601 UTC with microseconds, written fast and parsed leniently.
//!
//! Every text sink writes instants as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (always six fractional
//! digits, always `Z`), so files sort as text and read back without a time-zone guess. The
//! formatter is hand-written because it sits on the hot path of the CSV and JSONL sinks; a test
//! checks it against chrono over a wide range.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use arrow_array::{ArrayRef, PrimitiveArray};
use arrow_schema::TimeUnit;
use chrono::{DateTime, NaiveDateTime, Utc};

/// A timestamp column of any unit as microseconds (seconds and milliseconds saturate,
/// nanoseconds round toward minus infinity).
pub fn micros_array(a: &ArrayRef, unit: TimeUnit) -> PrimitiveArray<TimestampMicrosecondType> {
    match unit {
        TimeUnit::Second => a
            .as_primitive::<TimestampSecondType>()
            .unary(|v| v.saturating_mul(1_000_000)),
        TimeUnit::Millisecond => a
            .as_primitive::<TimestampMillisecondType>()
            .unary(|v| v.saturating_mul(1000)),
        TimeUnit::Microsecond => a.as_primitive::<TimestampMicrosecondType>().clone(),
        TimeUnit::Nanosecond => a
            .as_primitive::<TimestampNanosecondType>()
            .unary(|v| v.div_euclid(1000)),
    }
}

/// Appends `micros` (µs since the Unix epoch, UTC) as ISO 8601 to `out`.
///
/// ```
/// let mut s = Vec::new();
/// tapedeck::record::time::write_iso_micros(1_767_225_600_000_100, &mut s);
/// assert_eq!(s, b"2026-01-01T00:00:00.000100Z");
/// ```
pub fn write_iso_micros(micros: i64, out: &mut Vec<u8>) {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        // Outside four-digit years, fall back to chrono's general formatting.
        match DateTime::<Utc>::from_timestamp_micros(micros) {
            Some(t) => {
                out.extend_from_slice(t.format("%+Y-%m-%dT%H:%M:%S%.6fZ").to_string().as_bytes())
            }
            None => out.extend_from_slice(micros.to_string().as_bytes()),
        }
        return;
    }
    let (hh, mm, ss) = (sod / 3600, (sod / 60) % 60, sod % 60);
    let mut buf = *b"0000-00-00T00:00:00.000000Z";
    put_digits(&mut buf[0..4], y as u32);
    put_digits(&mut buf[5..7], m);
    put_digits(&mut buf[8..10], d);
    put_digits(&mut buf[11..13], hh);
    put_digits(&mut buf[14..16], mm);
    put_digits(&mut buf[17..19], ss);
    put_digits(&mut buf[20..26], frac);
    out.extend_from_slice(&buf);
}

/// [`write_iso_micros`] with a cache of the last second's `YYYY-MM-DDTHH:MM:SS.` prefix: a
/// stream of nearby instants then costs one copy and six digits per value.
#[derive(Debug, Clone)]
pub struct IsoFormatter {
    secs: i64,
    prefix: [u8; 20],
}

impl Default for IsoFormatter {
    fn default() -> Self {
        IsoFormatter {
            secs: i64::MIN,
            prefix: [0; 20],
        }
    }
}

impl IsoFormatter {
    /// Appends `micros` as ISO 8601 to `out`; same text as [`write_iso_micros`].
    pub fn write(&mut self, micros: i64, out: &mut Vec<u8>) {
        let secs = micros.div_euclid(1_000_000);
        if secs != self.secs {
            let mut full = Vec::with_capacity(27);
            write_iso_micros(secs * 1_000_000, &mut full);
            if full.len() != 27 {
                // Years beyond four digits: no fixed-width prefix to cache.
                write_iso_micros(micros, out);
                return;
            }
            self.prefix.copy_from_slice(&full[..20]);
            self.secs = secs;
        }
        let mut tail = *b"000000Z";
        put_digits(&mut tail[..6], micros.rem_euclid(1_000_000) as u32);
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(&tail);
    }
}

/// `t` as microseconds since the Unix epoch (0 for a clock set before 1970).
pub(crate) fn micros_since_epoch(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The wall clock now, as microseconds since the Unix epoch (summaries, statuses).
pub fn now_micros() -> i64 {
    micros_since_epoch(std::time::SystemTime::now())
}

/// ISO 8601 text of `micros`, for messages and tests.
pub fn iso_micros(micros: i64) -> String {
    let mut v = Vec::with_capacity(27);
    write_iso_micros(micros, &mut v);
    String::from_utf8_lossy(&v).into_owned()
}

fn put_digits(slot: &mut [u8], mut v: u32) {
    for b in slot.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

// Howard Hinnant's days → civil date algorithm (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Parses an instant: RFC 3339 (`2026-01-01T00:00:00.5Z`, `…+02:00`) or a zone-less
/// `YYYY-MM-DD[T ]HH:MM:SS[.f]`, taken as UTC. Returns µs since the epoch.
///
/// ```
/// use tapedeck::record::time::parse_timestamp;
/// assert_eq!(parse_timestamp("1970-01-01T00:00:01.5Z"), Some(1_500_000));
/// assert_eq!(parse_timestamp("1970-01-01 01:00:00"), Some(3_600_000_000));
/// assert_eq!(parse_timestamp("yesterday"), None);
/// ```
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let t = text.trim();
    // Cheap rejection: every accepted form starts with `dddd-dd-dd`.
    let b = t.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !b[0].is_ascii_digit() {
        return None;
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Some(dt.timestamp_micros());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, fmt) {
            return Some(n.and_utc().timestamp_micros());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_chrono(us in -62_135_596_800_000_000i64..253_402_300_799_999_999i64) {
            let ours = iso_micros(us);
            let theirs = DateTime::<Utc>::from_timestamp_micros(us).unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
            prop_assert_eq!(&ours, &theirs);
            prop_assert_eq!(parse_timestamp(&ours), Some(us));
            let mut cached = IsoFormatter::default();
            let mut a = Vec::new();
            cached.write(us, &mut a);
            cached.write(us + 1, &mut a);
            cached.write(us - 1_000_001, &mut a);
            let mut b = Vec::new();
            for t in [us, us + 1, us - 1_000_001] {
                write_iso_micros(t, &mut b);
            }
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn out_of_range_years_still_format() {
        let s = iso_micros(-62_135_596_800_000_001);
        assert!(s.starts_with('-') || s.starts_with("0000"), "{s}");
    }
}
