//! M4 downsampling: every numeric column of a tape reduced to at most four values per plot
//! bucket — the first, the smallest, the largest and the last — so a line drawn through them
//! per pixel column looks exactly like the line through every sample (Jugel et al., "M4", VLDB
//! 2014): a spike or a clipped stretch is never averaged away.
//!
//! Buckets are aligned to the epoch (bucket `b` holds event times `[b·w, (b+1)·w)` µs), so the
//! buckets of two reads of the same stretch of tape — a page's history and then its live
//! updates — are the same buckets and merge by taking min of mins, max of maxes and the first
//! and last by time. The work per batch is one pass over its event times to cut it into runs of
//! one bucket, then one min/max fold per run and column.

use std::collections::BTreeMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use serde::Serialize;

/// Columns of a DAQ block's wide layout (and of bookkeeping generally) that are numbers but
/// not measurements: plotting them would only push the channels off the page.
const NOT_PLOTTED: &[&str] = &[
    "block_index",
    "sample_index",
    "first_sample_index",
    "t_mono_ns",
    "_seq",
];

/// Whether a column of this name and type is plotted: integers and 32/64-bit floats (the types
/// read as f64), not bookkeeping.
pub fn plotted(name: &str, data_type: &DataType) -> bool {
    use DataType::*;
    matches!(
        data_type,
        Float64 | Float32 | Int64 | Int32 | Int16 | Int8 | UInt64 | UInt32 | UInt16 | UInt8
    ) && !NOT_PLOTTED.contains(&name)
        && !name.ends_with("_raw")
}

/// How many of the schema's columns are plotted.
pub fn plotted_columns(schema: &arrow_schema::Schema) -> usize {
    schema
        .fields()
        .iter()
        .filter(|f| plotted(f.name(), f.data_type()))
        .count()
}

/// The reduction of one bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// The value with the earliest event time.
    pub first: f64,
    /// The value with the latest event time.
    pub last: f64,
    first_t: i64,
    last_t: i64,
}

impl Bucket {
    fn merge(&mut self, o: &Bucket) {
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        if o.first_t < self.first_t {
            self.first = o.first;
            self.first_t = o.first_t;
        }
        if o.last_t >= self.last_t {
            self.last = o.last;
            self.last_t = o.last_t;
        }
    }
}

/// The downsampled columns of a stretch of tape, at one bucket width.
#[derive(Debug, Clone)]
pub struct Downsample {
    bucket_us: i64,
    /// Column names in the order first met.
    order: Vec<String>,
    columns: BTreeMap<String, BTreeMap<i64, Bucket>>,
    /// Rows reduced (with an event time).
    rows: u64,
}

/// One column as sent to the page: parallel arrays, one entry per bucket.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Column {
    /// The column's name.
    pub name: String,
    /// Bucket numbers (`event time µs / bucket_us`, floored).
    pub b: Vec<i64>,
    /// Smallest values.
    pub min: Vec<f64>,
    /// Largest values.
    pub max: Vec<f64>,
    /// First values.
    pub first: Vec<f64>,
    /// Last values.
    pub last: Vec<f64>,
}

impl Downsample {
    /// An empty reduction at `bucket_us` µs per bucket (at least 1).
    pub fn new(bucket_us: i64) -> Downsample {
        Downsample {
            bucket_us: bucket_us.max(1),
            order: Vec::new(),
            columns: BTreeMap::new(),
            rows: 0,
        }
    }

    /// The bucket width, µs.
    pub fn bucket_us(&self) -> i64 {
        self.bucket_us
    }

    /// Rows reduced so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Buckets held, over all columns.
    pub fn buckets(&self) -> usize {
        self.columns.values().map(BTreeMap::len).sum()
    }

    /// Adds the rows of `batch` whose event time (its first timestamp column) is in
    /// `[from, to)` µs; rows without one are left out. A batch without a timestamp column
    /// adds nothing.
    pub fn add(&mut self, batch: &RecordBatch, from: i64, to: i64) {
        let schema = batch.schema();
        let Some(times) = tapedeck::tape::codec::event_times(batch) else {
            return;
        };
        // Runs of rows in one bucket: (bucket, start, end) over row indices.
        let w = self.bucket_us;
        let mut runs: Vec<(i64, usize, usize)> = Vec::new();
        let sorted;
        if times.null_count() == 0 {
            // The common case, as a tight loop over the plain values.
            let t = times.values();
            sorted = t.windows(2).all(|p| p[0] <= p[1]);
            let mut k = 0;
            while k < t.len() {
                let v = t[k];
                if v < from || v >= to {
                    k += 1;
                    continue;
                }
                let b = v.div_euclid(w);
                let lo = b.saturating_mul(w);
                let hi = lo.saturating_add(w);
                let start = k;
                k += 1;
                while k < t.len() && t[k] >= lo.max(from) && t[k] < hi.min(to) {
                    k += 1;
                }
                runs.push((b, start, k));
            }
        } else {
            sorted = false;
            let mut cur: Option<(i64, usize, i64, i64)> = None; // (bucket, start, lo, hi) µs
            for (k, t) in times.iter().enumerate() {
                let t = t.filter(|t| *t >= from && *t < to);
                if let (Some((_, _, lo, hi)), Some(t)) = (cur, t)
                    && t >= lo
                    && t < hi
                {
                    continue;
                }
                if let Some((b, start, _, _)) = cur.take() {
                    runs.push((b, start, k));
                }
                cur = t.map(|t| {
                    let b = t.div_euclid(w);
                    let lo = b.saturating_mul(w);
                    (b, k, lo, lo.saturating_add(w))
                });
            }
            if let Some((b, start, _, _)) = cur {
                runs.push((b, start, times.len()));
            }
        }
        if runs.is_empty() {
            return;
        }
        self.rows += runs.iter().map(|(_, s, e)| (e - s) as u64).sum::<u64>();
        for (i, field) in schema.fields().iter().enumerate() {
            if !plotted(field.name(), field.data_type()) {
                continue;
            }
            let array = batch.column(i);
            // The common case — float samples in time order, no nulls — folds plain slices.
            let dense = match array.data_type() {
                DataType::Float64 if sorted && array.null_count() == 0 => {
                    Some(array.as_primitive::<Float64Type>().values())
                }
                _ => None,
            };
            let sparse = match dense {
                Some(_) => None,
                None => match as_f64(array) {
                    Some(v) => Some(v),
                    None => continue,
                },
            };
            let name = field.name();
            if !self.columns.contains_key(name) {
                self.order.push(name.clone());
            }
            let column = self.columns.entry(name.clone()).or_default();
            for &(b, start, end) in &runs {
                let r = match (dense, &sparse) {
                    (Some(v), _) => reduce_sorted(v, &times, start, end)
                        .or_else(|| reduce(&to_options(&v[start..end]), &times, start, end)),
                    (None, Some(v)) => reduce(&v[start..end], &times, start, end),
                    (None, None) => None,
                };
                if let Some(r) = r {
                    column
                        .entry(b)
                        .and_modify(|have| have.merge(&r))
                        .or_insert(r);
                }
            }
        }
    }

    /// Merges another reduction at the same bucket width into this one.
    pub fn merge(&mut self, other: Downsample) {
        self.rows += other.rows;
        for name in other.order {
            if !self.columns.contains_key(&name) {
                self.order.push(name.clone());
            }
            let mine = self.columns.entry(name.clone()).or_default();
            for (b, r) in other.columns.get(&name).into_iter().flatten() {
                mine.entry(*b)
                    .and_modify(|have| have.merge(r))
                    .or_insert(*r);
            }
        }
    }

    /// The columns as sent to the page, in the order they were first met.
    pub fn columns(&self) -> Vec<Column> {
        self.order
            .iter()
            .filter_map(|name| {
                let buckets = self.columns.get(name)?;
                let mut c = Column {
                    name: name.clone(),
                    b: Vec::with_capacity(buckets.len()),
                    min: Vec::with_capacity(buckets.len()),
                    max: Vec::with_capacity(buckets.len()),
                    first: Vec::with_capacity(buckets.len()),
                    last: Vec::with_capacity(buckets.len()),
                };
                for (b, r) in buckets {
                    c.b.push(*b);
                    c.min.push(r.min);
                    c.max.push(r.max);
                    c.first.push(r.first);
                    c.last.push(r.last);
                }
                Some(c)
            })
            .collect()
    }
}

/// The column's values as f64 (`None` for null and NaN entries, and for a type that is not a
/// number).
fn as_f64(a: &ArrayRef) -> Option<Vec<Option<f64>>> {
    macro_rules! conv {
        ($t:ty) => {
            a.as_primitive::<$t>()
                .iter()
                .map(|v| v.map(|v| v as f64).filter(|v| !v.is_nan()))
                .collect()
        };
    }
    Some(match a.data_type() {
        DataType::Float64 => conv!(Float64Type),
        DataType::Float32 => conv!(Float32Type),
        DataType::Int64 => conv!(Int64Type),
        DataType::Int32 => conv!(Int32Type),
        DataType::Int16 => conv!(Int16Type),
        DataType::Int8 => conv!(Int8Type),
        DataType::UInt64 => conv!(UInt64Type),
        DataType::UInt32 => conv!(UInt32Type),
        DataType::UInt16 => conv!(UInt16Type),
        DataType::UInt8 => conv!(UInt8Type),
        _ => return None,
    })
}

fn to_options(v: &[f64]) -> Vec<Option<f64>> {
    v.iter().map(|v| Some(*v).filter(|v| !v.is_nan())).collect()
}

/// The reduction of rows `start..end` of a sorted, null-free float column (all in one bucket);
/// `None` when a NaN makes the first, last or every value unusable (the general path then
/// decides).
fn reduce_sorted(
    values: &[f64],
    times: &arrow_array::TimestampMicrosecondArray,
    start: usize,
    end: usize,
) -> Option<Bucket> {
    let run = values.get(start..end)?;
    let (first, last) = (*run.first()?, *run.last()?);
    let (min, max) = run
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    if first.is_nan() || last.is_nan() || min > max {
        return None;
    }
    Some(Bucket {
        min,
        max,
        first,
        last,
        first_t: times.value(start),
        last_t: times.value(end - 1),
    })
}

/// The reduction of rows `start..end` (all in one bucket; `values` holds exactly those rows),
/// `None` when none has a value.
fn reduce(
    values: &[Option<f64>],
    times: &arrow_array::TimestampMicrosecondArray,
    start: usize,
    end: usize,
) -> Option<Bucket> {
    let mut out: Option<Bucket> = None;
    for (k, v) in (start..end).zip(values) {
        let (Some(v), true) = (*v, times.is_valid(k)) else {
            continue;
        };
        let t = times.value(k);
        match &mut out {
            None => {
                out = Some(Bucket {
                    min: v,
                    max: v,
                    first: v,
                    last: v,
                    first_t: t,
                    last_t: t,
                })
            }
            Some(r) => {
                r.min = r.min.min(v);
                r.max = r.max.max(v);
                if t < r.first_t {
                    r.first = v;
                    r.first_t = t;
                }
                if t >= r.last_t {
                    r.last = v;
                    r.last_t = t;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow_array::{Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow_schema::{Field, Schema, TimeUnit};

    fn batch(times: Vec<i64>, values: Vec<f64>) -> RecordBatch {
        let n = times.len();
        let schema = Schema::new(vec![
            Field::new("t", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("v", DataType::Float64, true),
            Field::new("block_index", DataType::Int64, true),
            Field::new("device", DataType::Utf8, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(TimestampMicrosecondArray::from(times)),
                Arc::new(Float64Array::from(values)),
                Arc::new(Int64Array::from(vec![0; n])),
                Arc::new(StringArray::from(vec!["a"; n])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn a_spike_survives_and_first_last_follow_time() {
        // Ten samples per 10 µs bucket; one spike in the second bucket.
        let times: Vec<i64> = (0..30).collect();
        let mut values: Vec<f64> = (0..30).map(|i| i as f64).collect();
        values[14] = 1000.0;
        let mut d = Downsample::new(10);
        d.add(&batch(times, values), i64::MIN, i64::MAX);
        let cols = d.columns();
        assert_eq!(cols.len(), 1, "only `v` is plotted: {cols:?}");
        let c = &cols[0];
        assert_eq!(c.b, vec![0, 1, 2]);
        assert_eq!(c.max[1], 1000.0);
        assert_eq!((c.first[1], c.last[1], c.min[1]), (10.0, 19.0, 10.0));
        assert_eq!(d.rows(), 30);
    }

    #[test]
    fn two_reads_of_one_stretch_merge_into_the_reduction_of_both() {
        let times: Vec<i64> = (0..100).map(|i| i * 3 - 50).collect();
        let values: Vec<f64> = (0..100).map(|i| ((i * 37) % 23) as f64).collect();
        let mut whole = Downsample::new(7);
        whole.add(&batch(times.clone(), values.clone()), i64::MIN, i64::MAX);
        let mut a = Downsample::new(7);
        a.add(
            &batch(times[..41].to_vec(), values[..41].to_vec()),
            i64::MIN,
            i64::MAX,
        );
        let mut b = Downsample::new(7);
        b.add(
            &batch(times[41..].to_vec(), values[41..].to_vec()),
            i64::MIN,
            i64::MAX,
        );
        a.merge(b);
        assert_eq!(a.columns(), whole.columns());
        // Negative times floor to the bucket below zero.
        assert_eq!(whole.columns()[0].b[0], (-50i64).div_euclid(7));
    }

    #[test]
    fn rows_outside_the_range_and_nan_are_left_out() {
        let mut d = Downsample::new(10);
        d.add(
            &batch(vec![5, 15, 25, 35], vec![1.0, f64::NAN, 3.0, 4.0]),
            10,
            30,
        );
        let c = &d.columns()[0];
        assert_eq!(c.b, vec![2]);
        assert_eq!(c.max, vec![3.0]);
        assert_eq!(d.rows(), 2);
    }

    #[test]
    fn out_of_order_times_keep_first_and_last_by_time() {
        let mut d = Downsample::new(100);
        d.add(
            &batch(vec![50, 10, 90, 20], vec![5.0, 1.0, 9.0, 2.0]),
            0,
            100,
        );
        let c = &d.columns()[0];
        assert_eq!((c.first[0], c.last[0]), (1.0, 9.0));
    }
}
