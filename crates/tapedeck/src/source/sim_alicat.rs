//! `sim:alicat?n=N&rate=HZ` — the alicat-sample workload, exactly.
//!
//! Row `i`: `device="fuel"`, `unit_id="A"`, `requested_at = 2026-01-01T00:00:00Z + i·100 µs`,
//! `received_at = requested_at + 5 ms`, `midpoint_at = requested_at + 2 ms`, `latency_s = 0.005`,
//! `Mass_Flow = 10.0 + (i mod 1000)·0.01`, `status = ""`. Timestamps follow `i`, never the wall
//! clock, whatever the pacing. `n` bounds the stream (unbounded if absent); `rate` paces it in
//! rows per second (as fast as possible if absent or 0). Rows come out as Arrow batches of the
//! size `pipe` asks for, so the simulator costs little next to the sinks it feeds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::Source;
use crate::error::{Error, Result};
use crate::record::{Record, timestamp_type};
use crate::uri::Uri;

/// 2026-01-01T00:00:00Z in µs since the epoch.
pub const BASE_MICROS: i64 = 1_767_225_600_000_000;

/// The alicat-sample simulator.
#[derive(Debug)]
pub struct AlicatSim {
    name: String,
    schema: SchemaRef,
    next: u64,
    n: Option<u64>,
    rate: f64,
    chunk: usize,
    started: Option<Instant>,
}

impl AlicatSim {
    /// `n` rows (unbounded if `None`) at `rate` rows/s (unpaced if 0).
    pub fn new(n: Option<u64>, rate: f64) -> AlicatSim {
        let fields = vec![
            Field::new("device", DataType::Utf8, true),
            Field::new("unit_id", DataType::Utf8, true),
            Field::new("requested_at", timestamp_type(), true),
            Field::new("received_at", timestamp_type(), true),
            Field::new("midpoint_at", timestamp_type(), true),
            Field::new("latency_s", DataType::Float64, true),
            Field::new("Mass_Flow", DataType::Float64, true),
            Field::new("status", DataType::Utf8, true),
        ];
        AlicatSim {
            name: "sim:alicat".into(),
            schema: Arc::new(Schema::new(fields)),
            next: 0,
            n,
            rate,
            chunk: 1024,
            started: None,
        }
    }

    pub(crate) fn from_uri(mut uri: Uri) -> Result<AlicatSim> {
        let n = uri.params.parse::<u64>("n", "a row count")?;
        let rate = uri
            .params
            .parse::<f64>("rate", "rows per second (0 = as fast as possible)")?
            .unwrap_or(0.0);
        if !(rate == 0.0 || (0.001..=1e9).contains(&rate)) {
            return Err(Error::BadParam {
                uri: uri.shown().to_string(),
                param: "rate".into(),
                value: rate.to_string(),
                expected: "rows per second between 0.001 and 1e9, or 0 for as fast as possible"
                    .into(),
            });
        }
        uri.params.finish()?;
        let mut sim = AlicatSim::new(n, rate);
        sim.name = uri.shown().to_string();
        Ok(sim)
    }

    /// Builds rows `first..first+count` as one batch; an error when a row's timestamps
    /// (`2026-01-01 + i·100 µs + 5 ms`) would not fit i64 microseconds.
    pub fn batch(&self, first: u64, count: usize) -> Result<RecordBatch> {
        let end = u64::try_from(count)
            .ok()
            .and_then(|c| first.checked_add(c))
            .filter(|&end| {
                // The last row's latest timestamp, received_at, must fit.
                i64::try_from(end.saturating_sub(1))
                    .ok()
                    .and_then(|i| i.checked_mul(100))
                    .and_then(|t| t.checked_add(BASE_MICROS + 5_000))
                    .is_some()
            })
            .ok_or_else(|| Error::Unsupported {
                sink: self.name.clone(),
                what: format!(
                    "rows {first}..{first}+{count}: row timestamps (2026-01-01 + row × 100 µs) past the year 294,000 do not fit i64 microseconds; ask for fewer rows"
                ),
            })?;
        // Every product and sum below is at most the one checked above.
        let requested: Vec<i64> = (first..end).map(|i| BASE_MICROS + i as i64 * 100).collect();
        let shifted = |d: i64| {
            TimestampMicrosecondArray::from_iter_values(requested.iter().map(|t| t + d))
                .with_timezone("UTC")
        };
        let constant = |s: &str| {
            let mut b = StringBuilder::with_capacity(count, count * s.len());
            for _ in 0..count {
                b.append_value(s);
            }
            b.finish()
        };
        let flow =
            Float64Array::from_iter_values((first..end).map(|i| 10.0 + (i % 1000) as f64 * 0.01));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(constant("fuel")),
            Arc::new(constant("A")),
            Arc::new(shifted(0)),
            Arc::new(shifted(5_000)),
            Arc::new(shifted(2_000)),
            Arc::new(Float64Array::from_value(0.005, count)),
            Arc::new(flow),
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                "", count,
            ))),
        ];
        RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| Error::arrow("sim:alicat: building a batch", e))
    }
}

impl Source for AlicatSim {
    fn name(&self) -> &str {
        &self.name
    }

    fn expected_rows(&self) -> Option<u64> {
        self.n
    }

    fn set_batch_hint(&mut self, rows: usize) {
        self.chunk = rows.max(1);
    }

    fn next_record(&mut self) -> Result<Option<Record>> {
        let remaining = self.n.map_or(u64::MAX, |n| n - self.next.min(n));
        if remaining == 0 {
            return Ok(None);
        }
        let mut count = (self.chunk as u64).min(remaining);
        if self.rate > 0.0 {
            let start = *self.started.get_or_insert_with(Instant::now);
            // Row i is due at start + i / rate; emit what is due, waiting for at least one row.
            let first_due = Duration::try_from_secs_f64(self.next as f64 / self.rate)
                .ok()
                .and_then(|d| start.checked_add(d));
            let now = Instant::now();
            if let Some(first_due) = first_due
                && first_due > now
            {
                std::thread::sleep(first_due - now);
            }
            let elapsed = start.elapsed().as_secs_f64();
            let due = ((elapsed * self.rate) as u64)
                .saturating_add(1)
                .saturating_sub(self.next);
            count = count.min(due.max(1));
        }
        let batch = self.batch(self.next, usize::try_from(count).unwrap_or(usize::MAX))?;
        self.next = self.next.saturating_add(count);
        Ok(Some(Record::Batch(batch)))
    }
}
