//! The schema lock's rules, one test each (DESIGN.md, "Schema lock").

mod common;

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, Float64Array, Int16Array, Int64Array, StringArray};
use arrow_schema::DataType;
use common::{batch, count_warnings};
use tapedeck::Error;
use tapedeck::record::{Row, RowBuilder, SchemaLock, UnknownColumns, Value};

#[test]
fn first_batch_locks_columns_and_missing_columns_become_null() {
    let mut lock = SchemaLock::new("t");
    lock.conform(&batch(vec![
        ("a", Arc::new(Int64Array::from(vec![1, 2]))),
        ("b", Arc::new(StringArray::from(vec!["x", "y"]))),
    ]))
    .unwrap();
    let out = lock
        .conform(&batch(vec![("b", Arc::new(StringArray::from(vec!["z"])))]))
        .unwrap();
    assert_eq!(out.num_columns(), 2);
    assert_eq!(out.schema().field(0).name(), "a");
    assert!(out.column(0).is_null(0), "missing column must be null");
    assert_eq!(out.column(1).as_string::<i32>().value(0), "z");
}

#[test]
fn unknown_columns_are_dropped_with_exactly_one_warning_per_name() {
    let mut lock = SchemaLock::new("t");
    lock.conform(&batch(vec![("a", Arc::new(Int64Array::from(vec![1])))]))
        .unwrap();
    let later = batch(vec![
        ("a", Arc::new(Int64Array::from(vec![2]))),
        ("extra", Arc::new(Int64Array::from(vec![3]))),
        ("more", Arc::new(Int64Array::from(vec![4]))),
    ]);
    let (_, warnings) = count_warnings(|| {
        for _ in 0..10 {
            let out = lock.conform(&later).unwrap();
            assert_eq!(out.num_columns(), 1);
        }
    });
    assert_eq!(warnings, 2, "one warning for `extra`, one for `more`");
    assert_eq!(lock.dropped_columns(), ["extra", "more"]);
}

#[test]
fn strict_policy_refuses_unknown_columns_naming_column_and_row() {
    let mut lock = SchemaLock::new("t").with_unknown_columns(UnknownColumns::Error);
    lock.conform(&batch(vec![(
        "a",
        Arc::new(Int64Array::from(vec![1, 2, 3])),
    )]))
    .unwrap();
    let err = lock
        .conform(&batch(vec![
            ("a", Arc::new(Int64Array::from(vec![1]))),
            ("surprise", Arc::new(Int64Array::from(vec![1]))),
        ]))
        .unwrap_err();
    match &err {
        Error::UnknownColumn { column, row, .. } => {
            assert_eq!(column, "surprise");
            assert_eq!(*row, 3);
        }
        other => panic!("wrong error {other:?}"),
    }
}

#[test]
fn integers_widen_into_float_columns() {
    let mut lock = SchemaLock::new("t");
    lock.conform(&batch(vec![("v", Arc::new(Float64Array::from(vec![0.5])))]))
        .unwrap();
    let out = lock
        .conform(&batch(vec![(
            "v",
            Arc::new(Int64Array::from(vec![Some(7), None])),
        )]))
        .unwrap();
    let v = out.column(0).as_primitive::<Float64Type>();
    assert_eq!(v.value(0), 7.0);
    assert!(v.is_null(1));
    // Narrow integers (raw DAQ codes) widen too.
    let out = lock
        .conform(&batch(vec![("v", Arc::new(Int16Array::from(vec![-3])))]))
        .unwrap();
    assert_eq!(out.column(0).as_primitive::<Float64Type>().value(0), -3.0);
}

#[test]
fn other_type_changes_name_column_types_and_row() {
    let mut lock = SchemaLock::new("t");
    lock.conform(&batch(vec![(
        "v",
        Arc::new(Float64Array::from(vec![1.0; 5])),
    )]))
    .unwrap();
    let err = lock
        .conform(&batch(vec![(
            "v",
            Arc::new(StringArray::from(vec![None, None, Some("high")])),
        )]))
        .unwrap_err();
    match &err {
        Error::SchemaConflict {
            column,
            locked,
            got,
            row,
            ..
        } => {
            assert_eq!(column, "v");
            assert_eq!(locked, &DataType::Float64);
            assert_eq!(got, &DataType::Utf8);
            assert_eq!(*row, 7, "5 rows before, third row of this batch");
        }
        other => panic!("wrong error {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("`v`") && msg.contains("Float64") && msg.contains("Utf8"),
        "{msg}"
    );
}

#[test]
fn floats_into_an_integer_column_are_a_conflict() {
    let mut lock = SchemaLock::new("t");
    lock.conform(&batch(vec![("n", Arc::new(Int64Array::from(vec![1])))]))
        .unwrap();
    let err = lock
        .conform(&batch(vec![("n", Arc::new(Float64Array::from(vec![1.5])))]))
        .unwrap_err();
    assert!(matches!(err, Error::SchemaConflict { .. }), "{err:?}");
}

#[test]
fn case_insensitive_collisions_are_detected() {
    // Within one batch.
    let mut lock = SchemaLock::new("t");
    let err = lock
        .conform(&batch(vec![
            ("unit_id", Arc::new(StringArray::from(vec!["A"]))),
            ("Unit_ID", Arc::new(StringArray::from(vec!["A"]))),
        ]))
        .unwrap_err();
    assert!(matches!(err, Error::NameCollision { .. }), "{err:?}");
    // Against the locked schema.
    let mut lock = SchemaLock::new("t");
    lock.conform(&batch(vec![(
        "unit_id",
        Arc::new(StringArray::from(vec!["A"])),
    )]))
    .unwrap();
    let err = lock
        .conform(&batch(vec![(
            "Unit_ID",
            Arc::new(StringArray::from(vec!["A"])),
        )]))
        .unwrap_err();
    match err {
        Error::NameCollision { first, second } => {
            assert_eq!((first.as_str(), second.as_str()), ("unit_id", "Unit_ID"));
        }
        other => panic!("wrong error {other:?}"),
    }
}

#[test]
fn a_null_only_first_column_explains_itself() {
    let mut lock = SchemaLock::new("t");
    lock.conform(&batch(vec![(
        "x",
        Arc::new(arrow_array::NullArray::new(2)),
    )]))
    .unwrap();
    let err = lock
        .conform(&batch(vec![("x", Arc::new(Int64Array::from(vec![1])))]))
        .unwrap_err();
    assert!(err.to_string().contains("only nulls"), "{err}");
}

#[test]
fn row_builder_infers_widens_and_fills_missing_with_null() {
    let mut b = RowBuilder::new();
    b.push(
        Row::new()
            .with("device", "fuel")
            .with("flow", 1)
            .with("ok", true),
    );
    b.push(Row::new().with("device", "air").with("flow", 2.5));
    let out = b.finish().unwrap().unwrap();
    assert_eq!(out.num_rows(), 2);
    let flow = out
        .column_by_name("flow")
        .unwrap()
        .as_primitive::<Float64Type>();
    assert_eq!((flow.value(0), flow.value(1)), (1.0, 2.5));
    assert!(out.column_by_name("ok").unwrap().is_null(1));
    // Second batch: locked; new column dropped, ints into float column widen.
    b.push(
        Row::new()
            .with("device", "x")
            .with("flow", 3)
            .with("new", 1),
    );
    let (out, warnings) = count_warnings(|| b.finish().unwrap().unwrap());
    assert_eq!(warnings, 1);
    assert_eq!(out.num_columns(), 3);
    assert_eq!(
        out.column_by_name("flow")
            .unwrap()
            .as_primitive::<Float64Type>()
            .value(0),
        3.0
    );
}

#[test]
fn row_builder_conflicts_name_the_row() {
    let mut b = RowBuilder::new();
    for i in 0..10 {
        b.push(Row::new().with("n", i));
    }
    b.finish().unwrap();
    b.push(Row::new().with("n", 1));
    b.push(Row::new().with("n", "eleven"));
    match b.finish().unwrap_err() {
        Error::SchemaConflict {
            column, row, got, ..
        } => {
            assert_eq!(column, "n");
            assert_eq!(row, 11);
            assert_eq!(got, DataType::Utf8);
        }
        other => panic!("wrong error {other:?}"),
    }
    // The builder is usable again afterwards.
    b.push(Row::new().with("n", 5));
    let out = b.finish().unwrap().unwrap();
    assert_eq!(out.column(0).as_primitive::<Int64Type>().value(0), 5);
}

#[test]
fn row_builder_strict_and_collisions() {
    let mut b = RowBuilder::strict();
    b.push(Row::new().with("a", 1));
    b.finish().unwrap();
    b.push(Row::new().with("a", 1).with("b", 2));
    assert!(matches!(b.finish(), Err(Error::UnknownColumn { .. })));

    let mut b = RowBuilder::new();
    b.push(Row::new().with("Mass_Flow", 1.0).with("mass_flow", 2.0));
    assert!(matches!(b.finish(), Err(Error::NameCollision { .. })));

    let mut b = RowBuilder::new();
    b.push(Row::new().with("a", 1).with("a", 2));
    assert!(matches!(b.finish(), Err(Error::NameCollision { .. })));
}

#[test]
fn row_builder_keeps_every_value_type() {
    let mut b = RowBuilder::new();
    b.push(
        Row::new()
            .with("b", true)
            .with("i", -4)
            .with("f", f64::NAN)
            .with("s", "text")
            .with("t", Value::Timestamp(1_000_000))
            .with("bytes", vec![1u8, 2])
            .with("nothing", Value::Null),
    );
    let out = b.finish().unwrap().unwrap();
    let types: Vec<String> = out
        .schema()
        .fields()
        .iter()
        .map(|f| f.data_type().to_string())
        .collect();
    assert_eq!(
        types,
        [
            "Boolean",
            "Int64",
            "Float64",
            "Utf8",
            "Timestamp(µs, \"UTC\")",
            "Binary",
            "Null"
        ]
    );
}

/// Issue 13, item 2: a batch that shares no data column with the lock (besides identity and
/// time columns) is an error naming both column lists, not a row of nulls.
#[test]
fn a_batch_sharing_no_data_column_is_refused_naming_both_lists() {
    use arrow_array::{ArrayRef, RecordBatch};
    use arrow_schema::{Field, Schema};
    let mk = |cols: Vec<(&str, ArrayRef)>| {
        let fields: Vec<Field> = cols
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect();
        RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            cols.into_iter().map(|(_, a)| a).collect(),
        )
        .unwrap()
    };
    let daq = mk(vec![
        (
            "device",
            Arc::new(StringArray::from(vec!["dev1"])) as ArrayRef,
        ),
        ("ai0", Arc::new(Float64Array::from(vec![0.5]))),
    ]);
    let alicat = mk(vec![
        (
            "device",
            Arc::new(StringArray::from(vec!["fuel"])) as ArrayRef,
        ),
        ("Mass_Flow", Arc::new(Float64Array::from(vec![10.0]))),
    ]);
    let mut lock = SchemaLock::new("sqlite:lab.db/samples");
    lock.conform(&daq).unwrap();
    let err = lock.conform(&alicat).unwrap_err().to_string();
    assert!(
        err.contains("sqlite:lab.db/samples")
            && err.contains("ai0")
            && err.contains("Mass_Flow")
            && err.contains("no data column in common"),
        "{err}"
    );
    // Sharing one data column is fine: the rest is nulls / dropped, as before.
    let some = mk(vec![
        ("ai0", Arc::new(Float64Array::from(vec![1.5])) as ArrayRef),
        ("Mass_Flow", Arc::new(Float64Array::from(vec![10.0]))),
    ]);
    assert_eq!(lock.conform(&some).unwrap().num_rows(), 1);
}
