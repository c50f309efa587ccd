//! A tape written before the manifest became a journal reads as it is, and a writer converts
//! its manifest once, keeping the old file (`docs/tape-format.md`, "Manifest", version 0).
//!
//! `tests/data/tape-v0` was written by tapedeck at commit 6e2097f, the last before the change:
//! `tapedeck record --source 'sim:alicat?n=300' --tape DIR --segment-bytes 4096 --frame-rows 50`
//! (300 rows in three sealed segments; its `MANIFEST` holds three version 0 `sealed` records).

use std::path::Path;

use tapedeck::journal::Journal;
use tapedeck::tape::manifest::{self, MANIFEST, MANIFEST_V0, Record};
use tapedeck::tape::verify::{storage_for, verify};
use tapedeck::tape::{StartAt, TapeOptions, TapeReader, TapeWriter};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tape-v0");

fn copy_fixture(to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in std::fs::read_dir(FIXTURE).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
    }
}

fn rows(dir: &Path) -> (u64, Vec<arrow_array::RecordBatch>) {
    let mut n = 0;
    let mut batches = Vec::new();
    for item in TapeReader::open(dir, StartAt::Start).unwrap() {
        let (_, b) = item.unwrap();
        n += b.num_rows() as u64;
        batches.push(b);
    }
    (n, batches)
}

fn sealed(records: &[Record]) -> Vec<(String, u64)> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Sealed {
                file, first_seq, ..
            } => Some((file.clone(), *first_seq)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_tape_from_before_the_manifest_journal_reads_verifies_and_is_converted_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tape");
    copy_fixture(&dir);
    let v0 = std::fs::read(dir.join(MANIFEST)).unwrap();

    // Read as it is: every row, a clean verify, the three sealed records.
    let (n, batches) = rows(&dir);
    assert_eq!(n, 300);
    let storage = storage_for(&dir).unwrap();
    let report = verify(storage.as_ref()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let before = sealed(&manifest::read_only(storage.as_ref()).unwrap());
    assert_eq!(
        before.iter().map(|s| s.1).collect::<Vec<_>>(),
        [0, 128, 256]
    );
    assert_eq!(
        std::fs::read(dir.join(MANIFEST)).unwrap(),
        v0,
        "a reader changed it"
    );

    // A writer converts the manifest and goes on.
    let w = TapeWriter::open(&dir, TapeOptions::default()).unwrap();
    w.append(&batches[0]).unwrap();
    w.close().unwrap();
    assert_eq!(
        std::fs::read(dir.join(MANIFEST_V0)).unwrap(),
        v0,
        "kept as it was"
    );
    let now = std::fs::read(dir.join(MANIFEST)).unwrap();
    assert!(
        now[..8].iter().all(u8::is_ascii_hexdigit) && now[8] == b'\t',
        "not a journal"
    );
    let (m, _) = rows(&dir);
    assert_eq!(m, 300 + batches[0].num_rows() as u64);
    let report = verify(storage_for(&dir).unwrap().as_ref()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let after = sealed(&manifest::read_only(storage_for(&dir).unwrap().as_ref()).unwrap());
    assert_eq!(after[..3], before[..]);
    assert_eq!(after.len(), 4, "{after:?}");

    // The manifest is a journal like any other: its history has the conversion's snapshot
    // (the three old records) and one record per event since, each with its time.
    let j = Journal::<serde_json::Value>::open_read_only(dir.join(MANIFEST)).unwrap();
    let history = j.history().unwrap();
    assert_eq!(
        history[0].snapshot.as_ref().unwrap()["records"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(history.last().unwrap().action, "sealed");

    // Converted once: another writer leaves both files alone.
    let again = std::fs::read(dir.join(MANIFEST)).unwrap();
    TapeWriter::open(&dir, TapeOptions::default())
        .unwrap()
        .close()
        .unwrap();
    assert_eq!(std::fs::read(dir.join(MANIFEST)).unwrap(), again);
    assert_eq!(std::fs::read(dir.join(MANIFEST_V0)).unwrap(), v0);
}

/// Version-1 footers (offsets, no frame times: `docs/tape-format.md`, "Footer") open from
/// their index with no times, and a reader starting at a time reads frame headers to find it —
/// the same row a tape with version-2 footers gives.
#[test]
fn version_1_footers_open_without_frame_times_and_a_time_start_still_finds_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old");
    copy_fixture(&old);
    let storage = storage_for(&old).unwrap();
    let names = tapedeck::tape::segment::list_live(storage.as_ref()).unwrap();
    assert_eq!(names.len(), 3);
    for (_, name) in &names {
        let s = tapedeck::tape::segment::open_indexed(storage.as_ref(), name)
            .unwrap()
            .unwrap();
        assert_eq!(s.footer.as_ref().unwrap().times, None, "{name}");
        assert!(s.frames.iter().all(|f| f.header.time.is_none()), "{name}");
    }
    // Row 175 of sim:alicat: requested_at = 2026-01-01T00:00:00Z + 175 · 100 µs.
    let t = 1_767_225_600_000_000 + 175 * 100;
    let first_row = |dir: &Path| {
        let (seq, batch) = TapeReader::open(dir, StartAt::Time(t))
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        (seq, batch.num_rows())
    };
    let from_old = first_row(&old);
    // The same rows on a tape this build writes (version-2 footers). The fixture's batches
    // (64 rows) pass `frame_rows`, so each is a frame, as on the fixture.
    let new = dir.path().join("new");
    let w = TapeWriter::open(
        &new,
        TapeOptions {
            segment_bytes: 4096,
            frame_rows: 50,
            ..TapeOptions::default()
        },
    )
    .unwrap();
    for b in rows(&old).1 {
        w.append(&b).unwrap();
    }
    w.close().unwrap();
    let storage = storage_for(&new).unwrap();
    let mut with_times = 0;
    for (_, name) in tapedeck::tape::segment::list_live(storage.as_ref()).unwrap() {
        let s = tapedeck::tape::segment::open_indexed(storage.as_ref(), &name)
            .unwrap()
            .unwrap();
        assert!(s.footer.unwrap().times.is_some(), "{name}");
        with_times += 1;
    }
    assert!(with_times >= 2, "{with_times} sealed segments");
    assert_eq!(first_row(&new), from_old);
    assert_eq!(from_old.0, 175);
}
