//! DAQ blocks: validation and the long / wide adapters.

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int16Type, Int64Type, TimestampMicrosecondType};
use tapedeck::Error;
use tapedeck::record::block::LONG_COLUMNS;
use tapedeck::record::{Block, BlockError, Channel, RawCodes};

fn block(period_ns: Option<i64>) -> Block {
    Block {
        device: "dev1".into(),
        task: "ai".into(),
        block_index: 3,
        first_sample_index: 300,
        t_mono_ns: 1_000_000,
        t_utc_us: 1_767_225_600_000_000,
        period_ns,
        read_window_ns: 400_000,
        channels: vec![Channel::new("ai0", Some("V")), Channel::new("ai1", None)],
        samples: 4,
        values: vec![0.0, 0.1, 0.2, 0.3, 1.0, 1.1, 1.2, 1.3],
        raw: Some(RawCodes::I16(vec![0, 1, 2, 3, 10, 11, 12, 13])),
        error: None,
    }
}

#[test]
fn long_rows_follow_block_start_plus_k_periods() {
    let b = block(Some(250_000)); // 4 kHz
    let out = b.to_long_batch().unwrap();
    let schema = out.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, LONG_COLUMNS);
    assert_eq!(out.num_rows(), 8);
    let mono = out.column(5).as_primitive::<Int64Type>();
    let utc = out.column(6).as_primitive::<TimestampMicrosecondType>();
    let sample = out.column(4).as_primitive::<Int64Type>();
    let value = out.column(7).as_primitive::<Float64Type>();
    for k in 0..4 {
        assert_eq!(mono.value(k), 1_000_000 + k as i64 * 250_000);
        assert_eq!(utc.value(k), 1_767_225_600_000_000 + k as i64 * 250);
        assert_eq!(sample.value(k), 300 + k as i64);
        // Second channel starts at row 4 with the same times.
        assert_eq!(mono.value(4 + k), mono.value(k));
        assert_eq!(value.value(4 + k), 1.0 + k as f64 / 10.0);
    }
    let channel = out.column(2).as_string::<i32>();
    assert_eq!((channel.value(0), channel.value(4)), ("ai0", "ai1"));
    let unit = out.column(8).as_string::<i32>();
    assert_eq!(unit.value(0), "V");
    assert!(arrow_array::Array::is_null(unit, 4));
}

#[test]
fn without_a_period_samples_spread_over_the_read_window() {
    let b = block(None);
    assert_eq!(b.effective_period_ns(), 100_000); // 400 µs / 4 samples
    let out = b.to_long_batch().unwrap();
    let mono = out.column(5).as_primitive::<Int64Type>();
    assert_eq!(mono.value(3) - mono.value(0), 300_000);
}

#[test]
fn wide_batch_has_one_column_per_channel_and_raw_codes() {
    let mut b = block(Some(250_000));
    b.error = Some(BlockError {
        kind: "overrun".into(),
        message: "buffer overrun".into(),
    });
    let out = b.to_wide_batch().unwrap();
    assert_eq!(out.num_rows(), 4);
    let ai1 = out
        .column_by_name("ai1")
        .unwrap()
        .as_primitive::<Float64Type>();
    assert_eq!(ai1.value(2), 1.2);
    let raw = out
        .column_by_name("ai0_raw")
        .unwrap()
        .as_primitive::<Int16Type>();
    assert_eq!(raw.value(3), 3);
    let schema = out.schema();
    let f = schema.field_with_name("ai0").unwrap();
    assert_eq!(f.metadata().get("unit").map(String::as_str), Some("V"));
    let et = out.column_by_name("error_type").unwrap().as_string::<i32>();
    assert_eq!(et.value(0), "overrun");
}

#[test]
fn malformed_blocks_are_typed_errors() {
    let mut b = block(Some(1));
    b.values.pop();
    let err = b.to_wide_batch().unwrap_err();
    assert!(
        matches!(err, Error::InvalidBlock { block_index: 3, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("7 values for 2 channels × 4 samples"),
        "{err}"
    );

    let mut b = block(Some(1));
    b.raw = Some(RawCodes::I32(vec![1]));
    assert!(matches!(b.to_long_batch(), Err(Error::InvalidBlock { .. })));

    let mut b = block(Some(1));
    b.channels[1].name = "AI0".into();
    assert!(matches!(b.validate(), Err(Error::NameCollision { .. })));

    let mut b = block(Some(1));
    b.channels.clear();
    b.values.clear();
    b.raw = None;
    assert!(matches!(b.validate(), Err(Error::InvalidBlock { .. })));
}

#[test]
fn wide_batches_turn_back_into_the_blocks_they_came_from() {
    use tapedeck::source::sim_daq::DaqSim;
    let mut sim = DaqSim::new(3, 10_000.0, 50).with_raw(true);
    let mut blocks: Vec<Block> = (0..3)
        .map(|i| sim.make_block(i, 1_767_225_600_000_000))
        .collect();
    blocks[1].error = Some(tapedeck::record::BlockError {
        kind: "overrun".into(),
        message: "lost one".into(),
    });
    let batches: Vec<_> = blocks.iter().map(|b| b.to_wide_batch().unwrap()).collect();
    let joined = arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap();
    let back = Block::from_wide_batch(&joined).unwrap().unwrap();
    assert_eq!(back, blocks);
    // The long layout is not taken for wide blocks.
    assert!(
        Block::from_wide_batch(&blocks[0].to_long_batch().unwrap())
            .unwrap()
            .is_none()
    );
}

/// Issue 12, defect 11: a block whose sample times or indexes would pass `i64::MAX` is a typed
/// error, never a wrap-around or a panic — both when it is built and when it is read back.
#[test]
fn times_and_indexes_that_overflow_are_typed_errors() {
    let mut b = block(Some(i64::MAX / 2));
    assert!(matches!(b.validate(), Err(Error::InvalidBlock { .. })));
    assert!(b.to_long_batch().is_err());
    b = block(Some(250_000));
    b.t_mono_ns = i64::MAX - 10;
    assert!(matches!(b.validate(), Err(Error::InvalidBlock { .. })));
    b = block(Some(250_000));
    b.first_sample_index = u64::MAX;
    assert!(matches!(b.validate(), Err(Error::InvalidBlock { .. })));

    // A wide batch whose t_mono_ns column jumps from i64::MIN to i64::MAX (a damaged or
    // hand-made file): an error naming the block.
    let good = block(Some(250_000)).to_wide_batch().unwrap();
    let mut columns = good.columns().to_vec();
    let mono_at = good.schema().index_of("t_mono_ns").unwrap();
    columns[mono_at] = std::sync::Arc::new(arrow_array::Int64Array::from(vec![
        i64::MIN,
        i64::MAX,
        0,
        1,
    ]));
    let bad = arrow_array::RecordBatch::try_new(good.schema(), columns).unwrap();
    let err = Block::from_wide_batch(&bad).err().map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("too far apart")));
}

#[test]
fn small_blocks_of_two_devices_come_back_from_a_tape_as_they_went_in() {
    use std::sync::Arc;
    use tapedeck::tape::storage::MemStorage;
    use tapedeck::tape::{FsyncPolicy, StartAt, TapeOptions, TapeReader, TapeWriter};
    // Two devices with the same channels and block_index, 4-sample blocks, submitted without
    // waiting: the writer joins small batches into frames, but never blocks, which are split
    // back by block_index alone.
    let storage = MemStorage::new();
    let w = TapeWriter::open_storage(
        Arc::new(storage.clone()),
        TapeOptions {
            fsync: FsyncPolicy::Interval(std::time::Duration::from_secs(60)),
            ..TapeOptions::default()
        },
    )
    .unwrap();
    let mut sent = Vec::new();
    for device in ["dev1", "dev2"] {
        let mut b = block(Some(100_000));
        b.device = device.into();
        w.submit(&b.to_wide_batch().unwrap()).unwrap();
        sent.push(b);
    }
    w.close().unwrap();
    let mut got = Vec::new();
    for item in TapeReader::open_storage(Arc::new(storage), StartAt::Start).unwrap() {
        let (_, batch) = item.unwrap();
        got.extend(Block::from_wide_batch(&batch).unwrap().unwrap());
    }
    let devices: Vec<&str> = got.iter().map(|b| b.device.as_str()).collect();
    assert_eq!(devices, ["dev1", "dev2"]);
    assert_eq!(got[1].values, sent[1].values);
}
