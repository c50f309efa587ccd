//! Frame payloads that pass their CRC but were not written by tapedeck: a crafted file, or a
//! writer bug. A frame's CRC proves only that its bytes are the ones stored, so every decoder
//! (`BatchDecoder::decode`, `decode_buffer`, `codec::decode_projected`, for the three codings
//! of frame versions 1, 2 and 3) must answer any byte string with an error or with a batch
//! whose arrays are valid — never a panic, never an array that breaks Arrow's invariants.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, OnceLock};

use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int16Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow_buffer::Buffer;
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use common::EVERY_COMPRESSION;
use proptest::prelude::*;
use tapedeck::tape::Compression;
use tapedeck::tape::codec::{BatchDecoder, BatchEncoder, decode_projected};
use tapedeck::tape::format::Coding;

/// A batch with each kind of column a recording holds: event time, integers of two widths,
/// floats, booleans and text, some of them with nulls.
fn sample() -> RecordBatch {
    let n = 300i64;
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "t",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("n", DataType::Int64, true),
        Field::new("raw", DataType::Int16, false),
        Field::new("v", DataType::Float64, true),
        Field::new("ok", DataType::Boolean, true),
        Field::new("s", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampMicrosecondArray::from_iter_values((0..n).map(|k| 1_700_000_000_000 + k * 10))
                .with_timezone("UTC"),
        ),
        Arc::new(Int64Array::from_iter(
            (0..n).map(|k| (k % 7 != 0).then_some(k * 3)),
        )),
        Arc::new(Int16Array::from_iter_values(
            (0..n).map(|k| (k % 300) as i16),
        )),
        Arc::new(Float64Array::from_iter(
            (0..n).map(|k| (k % 5 != 0).then_some(k as f64 / 7.0)),
        )),
        Arc::new(BooleanArray::from_iter(
            (0..n).map(|k| (k % 11 != 0).then_some(k % 2 == 0)),
        )),
        Arc::new(StringArray::from_iter(
            (0..n).map(|k| (k % 13 != 0).then(|| format!("device-{}", k % 4))),
        )),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

struct Encoded {
    schema_message: Vec<u8>,
    payload: Vec<u8>,
    coding: Coding,
}

/// The sample batch encoded once under each compression (xz is slow to build per case).
fn encoded() -> &'static [Encoded] {
    static ENCODED: OnceLock<Vec<Encoded>> = OnceLock::new();
    ENCODED.get_or_init(|| {
        let batch = sample();
        EVERY_COMPRESSION
            .iter()
            .map(|&c| {
                let mut enc = BatchEncoder::new(&batch.schema(), c).unwrap();
                let (payload, coding) = enc.encode(&batch).unwrap();
                Encoded {
                    schema_message: enc.schema_message().to_vec(),
                    payload,
                    coding,
                }
            })
            .collect()
    })
}

/// How a payload is changed: bytes set, a 4- or 8-byte field overwritten with an extreme
/// value (lengths, offsets, counts), a cut.
#[derive(Debug, Clone)]
enum Change {
    Byte(usize, u8),
    Word32(usize, u32),
    Word64(usize, u64),
    Cut(usize),
}

fn change() -> impl Strategy<Value = Change> {
    let extreme32 = prop_oneof![
        Just(0u32),
        Just(1),
        Just(0x7fff_ffff),
        Just(0x8000_0000),
        Just(u32::MAX),
        any::<u32>(),
    ];
    let extreme64 = prop_oneof![
        Just(0u64),
        Just(i64::MAX as u64),
        Just(i64::MIN as u64),
        Just(u64::MAX),
        Just(1 << 40),
        any::<u64>(),
    ];
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(at, v)| Change::Byte(at, v)),
        2 => (any::<usize>(), extreme32).prop_map(|(at, v)| Change::Word32(at, v)),
        2 => (any::<usize>(), extreme64).prop_map(|(at, v)| Change::Word64(at, v)),
        1 => any::<usize>().prop_map(Change::Cut),
    ]
}

fn apply(payload: &mut Vec<u8>, c: &Change) {
    if payload.is_empty() {
        return;
    }
    let n = payload.len();
    match *c {
        Change::Byte(at, v) => payload[at % n] = v,
        Change::Word32(at, v) => {
            // Aligned, as the flatbuffer's and the buffer records' fields are.
            let at = (at % n) & !3;
            for (k, b) in v.to_le_bytes().iter().enumerate() {
                if let Some(slot) = payload.get_mut(at + k) {
                    *slot = *b;
                }
            }
        }
        Change::Word64(at, v) => {
            let at = (at % n) & !7;
            for (k, b) in v.to_le_bytes().iter().enumerate() {
                if let Some(slot) = payload.get_mut(at + k) {
                    *slot = *b;
                }
            }
        }
        Change::Cut(at) => payload.truncate(at % n),
    }
}

/// Every decoder on `payload`: each must return, and what it returns must be valid.
fn decode_all(e: &Encoded, payload: &[u8], projection: &[usize]) -> Result<(), String> {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut results = Vec::new();
        let mut dec = BatchDecoder::new(&e.schema_message).map_err(|e| e.to_string())?;
        let schema = dec.schema();
        results.push(dec.decode(payload, e.coding));
        let mut dec = BatchDecoder::new(&e.schema_message).map_err(|e| e.to_string())?;
        results.push(dec.decode_buffer(Buffer::from(payload), e.coding));
        results.push(decode_projected(
            &schema,
            &Buffer::from(payload),
            projection,
            e.coding,
        ));
        for r in &results {
            // An uncompressed payload's every length is visible before decoding: the checks
            // must refuse it themselves, not leave it to a caught panic of Arrow's reader
            // (kept for compressed buffers that decompress short).
            if e.coding == Coding::Ipc
                && let Err(err) = r
                && err.to_string().contains("Arrow's reader refused it")
            {
                return Err(format!("reached Arrow's reader unchecked: {err}"));
            }
        }
        for batch in results.into_iter().flatten() {
            for (k, column) in batch.columns().iter().enumerate() {
                column
                    .to_data()
                    .validate_full()
                    .map_err(|err| format!("column {k} decoded invalid: {err}"))?;
            }
        }
        Ok::<(), String>(())
    }));
    match outcome {
        Ok(r) => r,
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("a decoder panicked: {why}"))
        }
    }
}

#[test]
fn the_untouched_payloads_decode_to_the_batch() {
    let batch = sample();
    for e in encoded() {
        let mut dec = BatchDecoder::new(&e.schema_message).unwrap();
        assert_eq!(
            dec.decode(&e.payload, e.coding).unwrap(),
            batch,
            "{:?}",
            e.coding
        );
        decode_all(e, &e.payload, &[5, 0]).unwrap();
    }
}

#[test]
fn every_cut_of_every_payload_is_answered_without_a_panic() {
    for e in encoded() {
        for len in 0..e.payload.len() {
            decode_all(e, &e.payload[..len], &[0, 1, 2, 3, 4, 5])
                .map_err(|why| format!("{:?}, cut to {len}: {why}", e.coding))
                .unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 768, ..ProptestConfig::default() })]

    #[test]
    fn a_changed_payload_is_an_error_or_a_valid_batch_never_a_panic(
        which in 0..EVERY_COMPRESSION.len(),
        changes in prop::collection::vec(change(), 1..4),
        projection in prop::sample::subsequence(vec![0usize, 1, 2, 3, 4, 5], 0..=6),
    ) {
        let e = &encoded()[which];
        let mut payload = e.payload.clone();
        for c in &changes {
            apply(&mut payload, c);
        }
        if let Err(why) = decode_all(e, &payload, &projection) {
            prop_assert!(false, "{:?} with {:?}: {}", e.coding, changes, why);
        }
        // One decoder reads a segment's frames in turn: whatever a changed frame did to it,
        // the next good frame decodes as written.
        let mut dec = BatchDecoder::new(&e.schema_message).unwrap();
        let _ = catch_unwind(AssertUnwindSafe(|| dec.decode(&payload, e.coding)));
        let next = dec.decode(&e.payload, e.coding).map_err(|err| err.to_string());
        prop_assert_eq!(next, Ok(sample()), "{:?} after {:?}", e.coding, changes);
    }
}

#[test]
fn dictionary_and_view_columns_still_round_trip_through_ipc_frames() {
    use arrow_array::{Array, DictionaryArray, StringViewArray, types::Int32Type};
    let dict: DictionaryArray<Int32Type> = ["a", "b", "a", "c"].into_iter().collect();
    let views = StringViewArray::from(vec!["short", "a value longer than twelve bytes", "x", ""]);
    let schema = Arc::new(Schema::new(vec![
        Field::new("d", dict.data_type().clone(), false),
        Field::new("v", DataType::Utf8View, false),
    ]));
    let batch = RecordBatch::try_new(schema, vec![Arc::new(dict), Arc::new(views)]).unwrap();
    for c in [Compression::None, Compression::Lz4, Compression::Zstd] {
        let mut enc = BatchEncoder::new(&batch.schema(), c).unwrap();
        let mut dec = BatchDecoder::new(enc.schema_message()).unwrap();
        for _ in 0..2 {
            let (payload, coding) = enc.encode(&batch).unwrap();
            assert_eq!(dec.decode(&payload, coding).unwrap(), batch, "{c:?}");
        }
    }
}

#[test]
fn an_end_of_stream_marker_inside_a_frame_is_refused_and_the_next_frame_decodes() {
    let e = &encoded()[0];
    let mut dec = BatchDecoder::new(&e.schema_message).unwrap();
    let mut with_eos = e.payload.clone();
    with_eos.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
    let err = dec.decode(&with_eos, e.coding).unwrap_err().to_string();
    assert!(err.contains("end-of-stream"), "{err}");
    assert_eq!(dec.decode(&e.payload, e.coding).unwrap(), sample());
}
