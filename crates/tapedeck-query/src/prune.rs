//! From a query's filters to the ranges of event time and `_seq` a row must fall in, so whole
//! segments (footer ranges) and frames (header min/max: zone maps) can be left unread.
//!
//! Every bound here is *conservative*: a row outside the range could never pass the filter it
//! came from. Bounds may be wider than the filter (strict `<` is read as `<=`, a nanosecond
//! bound is widened to whole microseconds), never narrower. The filters are reported to
//! DataFusion as inexact, so it still applies each one to the rows read: results are exact.

use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use datafusion::scalar::ScalarValue;

/// A closed range over `i128` (wide enough for any `u64` sequence number and any `i64` time);
/// `None` ends are open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Range {
    /// Smallest value a row may have.
    pub lo: Option<i128>,
    /// Largest value a row may have.
    pub hi: Option<i128>,
}

impl Range {
    fn tighten(&mut self, lo: Option<i128>, hi: Option<i128>) {
        if let Some(l) = lo {
            self.lo = Some(self.lo.map_or(l, |x| x.max(l)));
        }
        if let Some(h) = hi {
            self.hi = Some(self.hi.map_or(h, |x| x.min(h)));
        }
    }

    /// True if no value in `[a, b]` is in the range.
    pub fn excludes(&self, a: i128, b: i128) -> bool {
        self.lo.is_some_and(|l| b < l) || self.hi.is_some_and(|h| a > h)
    }

    /// True if the range is unbounded.
    pub fn is_open(&self) -> bool {
        self.lo.is_none() && self.hi.is_none()
    }
}

/// What a column's values are compared as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Event time, in microseconds.
    Micros,
    /// An integer (`_seq`).
    Integer,
}

/// The ranges the filters allow for the event-time column (µs) and `_seq`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bounds {
    /// Event time, in microseconds since the epoch (UTC).
    pub time: Range,
    /// Sequence numbers.
    pub seq: Range,
}

impl Bounds {
    /// The bounds all of `filters` (a conjunction) imply.
    pub fn from_filters(filters: &[Expr], time_column: Option<&str>, seq_column: &str) -> Bounds {
        let mut b = Bounds::default();
        for f in filters {
            b.add(f, time_column, seq_column);
        }
        b
    }

    /// True if `filter` gives a bound (it is then worth pushing down).
    pub fn understands(filter: &Expr, time_column: Option<&str>, seq_column: &str) -> bool {
        Bounds::from_filters(std::slice::from_ref(filter), time_column, seq_column)
            != Bounds::default()
    }

    fn add(&mut self, e: &Expr, time_column: Option<&str>, seq_column: &str) {
        match e {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::And,
                right,
            }) => {
                self.add(left, time_column, seq_column);
                self.add(right, time_column, seq_column);
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (column, op, value) = match (column_of(left), literal(right)) {
                    (Some(c), Some(v)) => (c, *op, v),
                    _ => match (literal(left), column_of(right)) {
                        (Some(v), Some(c)) => match flip(*op) {
                            Some(op) => (c, op, v),
                            None => return,
                        },
                        _ => return,
                    },
                };
                let Some((range, kind)) = self.range_for(column, time_column, seq_column) else {
                    return;
                };
                let (Some(floor), Some(ceil)) =
                    (value_of(value, kind, false), value_of(value, kind, true))
                else {
                    return;
                };
                // Frame headers hold event times as i64 (saturated): so are the bounds.
                let (floor, ceil) = match kind {
                    Kind::Micros => (clamp_i64(floor), clamp_i64(ceil)),
                    Kind::Integer => (floor, ceil),
                };
                match op {
                    Operator::Eq => range.tighten(Some(floor), Some(ceil)),
                    Operator::Gt | Operator::GtEq => range.tighten(Some(floor), None),
                    Operator::Lt | Operator::LtEq => range.tighten(None, Some(ceil)),
                    _ => {}
                }
            }
            Expr::Between(between) if !between.negated => {
                let Some(column) = column_of(&between.expr) else {
                    return;
                };
                let (Some(low), Some(high)) = (literal(&between.low), literal(&between.high))
                else {
                    return;
                };
                let Some((range, kind)) = self.range_for(column, time_column, seq_column) else {
                    return;
                };
                let clamp = |v: Option<i128>| match kind {
                    Kind::Micros => v.map(clamp_i64),
                    Kind::Integer => v,
                };
                range.tighten(
                    clamp(value_of(low, kind, false)),
                    clamp(value_of(high, kind, true)),
                );
            }
            _ => {}
        }
    }

    fn range_for(
        &mut self,
        column: &str,
        time_column: Option<&str>,
        seq_column: &str,
    ) -> Option<(&mut Range, Kind)> {
        if Some(column) == time_column {
            Some((&mut self.time, Kind::Micros))
        } else if column == seq_column {
            Some((&mut self.seq, Kind::Integer))
        } else {
            None
        }
    }
}

fn clamp_i64(v: i128) -> i128 {
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX))
}

fn flip(op: Operator) -> Option<Operator> {
    Some(match op {
        Operator::Eq => Operator::Eq,
        Operator::Lt => Operator::Gt,
        Operator::LtEq => Operator::GtEq,
        Operator::Gt => Operator::Lt,
        Operator::GtEq => Operator::LtEq,
        _ => return None,
    })
}

/// The column an expression reads, through casts that keep order (timestamp to timestamp,
/// integer to a wider number) — the planner casts a column to compare it with a literal of
/// another type.
fn column_of(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(c.name.as_str()),
        Expr::Cast(c) if order_preserving(c.field.data_type()) => column_of(&c.expr),
        Expr::TryCast(c) if order_preserving(c.field.data_type()) => column_of(&c.expr),
        _ => None,
    }
}

/// Casts to these types keep every value distinct and in order: microsecond and nanosecond
/// timestamps (a cast to seconds or milliseconds truncates, so `CAST(time AS ...) <= x` holds
/// for times past `x` — not unwrapped), and wide numbers for `u64` sequence numbers.
fn order_preserving(t: &datafusion::arrow::datatypes::DataType) -> bool {
    use datafusion::arrow::datatypes::{DataType::*, TimeUnit};
    matches!(
        t,
        Timestamp(TimeUnit::Microsecond | TimeUnit::Nanosecond, _)
            | Int64
            | UInt64
            | Float64
            | Decimal128(..)
    )
}

fn literal(e: &Expr) -> Option<&ScalarValue> {
    match e {
        Expr::Literal(v, _) => Some(v),
        _ => None,
    }
}

/// A literal as a bound: rounded down (`ceil == false`) or up, in the column's units. `None`
/// for nulls and types that do not compare as a number.
fn value_of(v: &ScalarValue, kind: Kind, ceil: bool) -> Option<i128> {
    let div = |x: i128, d: i128| -> i128 {
        let q = x.div_euclid(d);
        if ceil && x.rem_euclid(d) != 0 {
            q + 1
        } else {
            q
        }
    };
    match (kind, v) {
        (Kind::Micros, ScalarValue::TimestampSecond(Some(x), _)) => {
            Some(i128::from(*x) * 1_000_000)
        }
        (Kind::Micros, ScalarValue::TimestampMillisecond(Some(x), _)) => {
            Some(i128::from(*x) * 1_000)
        }
        (Kind::Micros, ScalarValue::TimestampMicrosecond(Some(x), _)) => Some(i128::from(*x)),
        (Kind::Micros, ScalarValue::TimestampNanosecond(Some(x), _)) => {
            Some(div(i128::from(*x), 1_000))
        }
        (Kind::Integer, ScalarValue::Int8(Some(x))) => Some(i128::from(*x)),
        (Kind::Integer, ScalarValue::Int16(Some(x))) => Some(i128::from(*x)),
        (Kind::Integer, ScalarValue::Int32(Some(x))) => Some(i128::from(*x)),
        (Kind::Integer, ScalarValue::Int64(Some(x))) => Some(i128::from(*x)),
        (Kind::Integer, ScalarValue::UInt8(Some(x))) => Some(i128::from(*x)),
        (Kind::Integer, ScalarValue::UInt16(Some(x))) => Some(i128::from(*x)),
        (Kind::Integer, ScalarValue::UInt32(Some(x))) => Some(i128::from(*x)),
        (Kind::Integer, ScalarValue::UInt64(Some(x))) => Some(i128::from(*x)),
        (Kind::Integer, ScalarValue::Float64(Some(x))) if x.is_finite() && x.abs() < 1e30 => {
            let r = if ceil { x.ceil() } else { x.floor() };
            Some(r as i128)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{cast, col, lit};

    fn ts(us: i64) -> Expr {
        lit(ScalarValue::TimestampMicrosecond(Some(us), None))
    }

    #[test]
    fn conjunctions_of_comparisons_tighten_both_ranges() {
        let f = vec![
            col("time").gt_eq(ts(100)).and(col("time").lt(ts(200))),
            col("_seq").gt(lit(5u64)),
            lit(30u64).gt_eq(col("_seq")),
            col("value").gt(lit(1.0)),
        ];
        let b = Bounds::from_filters(&f, Some("time"), "_seq");
        assert_eq!(
            b.time,
            Range {
                lo: Some(100),
                hi: Some(200)
            }
        );
        assert_eq!(
            b.seq,
            Range {
                lo: Some(5),
                hi: Some(30)
            }
        );
        assert!(!Bounds::understands(&f[3], Some("time"), "_seq"));
    }

    #[test]
    fn nanosecond_bounds_widen_to_whole_microseconds() {
        let f = vec![
            col("time").gt(lit(ScalarValue::TimestampNanosecond(Some(1_500), None))),
            col("time").lt(lit(ScalarValue::TimestampNanosecond(Some(-2_500), None))),
        ];
        let b = Bounds::from_filters(&f, Some("time"), "_seq");
        assert_eq!(
            b.time,
            Range {
                lo: Some(1),
                hi: Some(-2)
            }
        );
    }

    #[test]
    fn casts_that_truncate_time_are_not_looked_through() {
        use datafusion::arrow::datatypes::{DataType, TimeUnit};
        let to = |unit| DataType::Timestamp(unit, Some("UTC".into()));
        let narrowing = cast(col("time"), to(TimeUnit::Second)).lt_eq(lit(
            ScalarValue::TimestampSecond(Some(5), Some("UTC".into())),
        ));
        assert_eq!(
            Bounds::from_filters(&[narrowing], Some("time"), "_seq"),
            Bounds::default()
        );
        let widening = cast(col("time"), to(TimeUnit::Nanosecond)).lt_eq(lit(
            ScalarValue::TimestampNanosecond(Some(5_000), Some("UTC".into())),
        ));
        let b = Bounds::from_filters(&[widening], Some("time"), "_seq");
        assert_eq!(
            b.time,
            Range {
                lo: None,
                hi: Some(5)
            }
        );
    }

    #[test]
    fn or_not_and_unknown_shapes_give_no_bound() {
        for f in [
            col("_seq").gt(lit(5u64)).or(col("_seq").lt(lit(2u64))),
            col("_seq").not_eq(lit(5u64)),
            (col("_seq") + lit(1u64)).gt(lit(5u64)),
            col("_seq").gt(lit(ScalarValue::UInt64(None))),
            col("_seq").not_between(lit(1u64), lit(3u64)),
        ] {
            assert_eq!(
                Bounds::from_filters(std::slice::from_ref(&f), Some("time"), "_seq"),
                Bounds::default(),
                "{f}"
            );
        }
        let b = Bounds::from_filters(&[col("_seq").between(lit(3i64), lit(9.5))], None, "_seq");
        assert_eq!(
            b.seq,
            Range {
                lo: Some(3),
                hi: Some(10)
            }
        );
    }
}
