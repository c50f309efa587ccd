//! Readers of one tape in one process share decoded frames (`tape::frame_cache`): a second
//! reader gets the same rows without decoding them again, and a tape made again under the
//! same path is never answered from the old one's frames.

mod common;

use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use common::batch;
use tapedeck::tape::frame_cache;
use tapedeck::tape::{StartAt, TapeOptions, TapeReader, TapeWriter};

fn rows(first: i64, n: usize, k: i64) -> RecordBatch {
    batch(vec![(
        "n",
        Arc::new(Int64Array::from_iter_values(
            (first..first + n as i64).map(|i| i * k),
        )) as ArrayRef,
    )])
}

fn write(dir: &std::path::Path, k: i64) {
    let w = TapeWriter::open(
        dir,
        TapeOptions {
            frame_rows: 1000,
            ..TapeOptions::default()
        },
    )
    .unwrap();
    for b in 0..50 {
        w.submit(&rows(b * 1000, 1000, k)).unwrap();
    }
    w.close().unwrap();
}

fn read(dir: &std::path::Path) -> Vec<(u64, Vec<i64>)> {
    TapeReader::open(dir, StartAt::Start)
        .unwrap()
        .map(|item| {
            let (first, b) = item.unwrap();
            let n = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            (first, n.values().to_vec())
        })
        .collect()
}

#[test]
fn a_second_reader_shares_the_first_ones_frames_and_a_new_tape_is_never_mixed_up() {
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("tape");
    write(&tape, 1);
    let hits = frame_cache::global().hits();
    let first = read(&tape);
    assert_eq!(first.iter().map(|(_, v)| v.len()).sum::<usize>(), 50_000);
    let second = read(&tape);
    assert_eq!(first, second);
    assert!(
        frame_cache::global().hits() >= hits + 50,
        "the second reader decoded again"
    );
    // The same path, another tape (another id): its own rows.
    std::fs::remove_dir_all(&tape).unwrap();
    write(&tape, 3);
    let third = read(&tape);
    assert_eq!(third.len(), first.len());
    for ((s1, v1), (s3, v3)) in first.iter().zip(&third) {
        assert_eq!(s1, s3);
        assert_eq!(v1.iter().map(|x| x * 3).collect::<Vec<_>>(), *v3);
    }
}
