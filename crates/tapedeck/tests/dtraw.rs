//! `.dt-raw` v2: a golden file built byte by byte from the layout in the reference notes,
//! tapedeck's writer read back (by tapedeck and by an independent Python reader that uses only
//! `struct`, `json` and `array`), and truncation at every byte.

use std::path::Path;
use std::process::Command;

use tapedeck::dtraw::{DtRawReader, Dtype, FLAG_FINAL, FLAG_OVERRUN, FLAG_PARTIAL};
use tapedeck::record::{Block, BlockError, RawCodes};
use tapedeck::sink::Sink;
use tapedeck::sink::raw::{RawOptions, RawSink};
use tapedeck::source::sim_daq::DaqSim;

/// `u32 LE len | bytes`.
fn framed(out: &mut Vec<u8>, json: &str) {
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(json.as_bytes());
}

/// A dtollib file: 2 channels, int16, buffers of 3 samples; chunk 1 is partial with an
/// overrun. Returns the bytes and the offsets where each chunk ends.
fn golden() -> (Vec<u8>, Vec<usize>) {
    let mut b = Vec::new();
    framed(
        &mut b,
        r#"{"format_version": 2, "task": "ai", "device": "DT9836(00)", "channels": [{"name": "ch0", "unit": "V"}, {"name": "ch1", "unit": null}], "n_channels": 2, "sample_rate_hz": 1000.0, "block_period_ns": 1000000, "dtype": "int16", "samples_per_buffer": 3, "task_started_at": "2026-01-01T00:00:00+00:00", "metadata": {"operator": "\u00e9"}}"#,
    );
    let mut ends = Vec::new();
    framed(
        &mut b,
        r#"{"seq": 0, "event_kind": "buffer_done", "first_sample_index": 0, "valid_samples": 3, "buffer_capacity": 3, "t_mono_ns": 5000, "t_utc": "2026-01-01T00:00:00.000005+00:00", "flags": []}"#,
    );
    for code in [1i16, 2, 3, -1, -2, -32768] {
        b.extend_from_slice(&code.to_le_bytes());
    }
    ends.push(b.len());
    framed(
        &mut b,
        r#"{"seq": 1, "event_kind": "buffer_done_with_flags", "first_sample_index": 3, "valid_samples": 2, "buffer_capacity": 3, "t_mono_ns": 3005000, "t_utc": "2026-01-01T00:00:00.003005+00:00", "flags": ["overrun_marker", "partial"]}"#,
    );
    for code in [10i16, 11, 32767, -10] {
        b.extend_from_slice(&code.to_le_bytes());
    }
    ends.push(b.len());
    (b, ends)
}

#[test]
fn a_golden_dtollib_file_reads_with_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("golden.dt-raw");
    let (bytes, _) = golden();
    std::fs::write(&path, &bytes).unwrap();
    let mut r = DtRawReader::open(&path).unwrap();
    let h = r.header().clone();
    assert_eq!((h.task.as_str(), h.device.as_str()), ("ai", "DT9836(00)"));
    assert_eq!(h.channels.len(), 2);
    assert_eq!(h.channels[1].unit, None);
    assert_eq!(h.channels[0].scale, None);
    assert_eq!(
        (h.dtype, h.samples_per_buffer, h.block_period_ns),
        (Dtype::I16, 3, 1_000_000)
    );
    assert_eq!(h.metadata_json, r#"{"operator":"é"}"#);
    let c0 = r.next_chunk().unwrap().unwrap();
    assert_eq!(c0.codes, RawCodes::I16(vec![1, 2, 3, -1, -2, -32768]));
    assert!(c0.header.flags.is_empty());
    let b0 = r.to_block(&c0).unwrap();
    // No ranges in a dtollib header: values are the codes, in counts.
    assert_eq!(b0.values, vec![1.0, 2.0, 3.0, -1.0, -2.0, -32768.0]);
    assert_eq!(b0.channels[0].unit.as_deref(), Some("counts"));
    assert_eq!((b0.t_mono_ns, b0.t_utc_us), (5000, 1_767_225_600_000_005));
    let c1 = r.next_chunk().unwrap().unwrap();
    assert_eq!(c1.header.flags, vec![FLAG_OVERRUN, FLAG_PARTIAL]);
    let b1 = r.to_block(&c1).unwrap();
    assert_eq!(
        (b1.block_index, b1.first_sample_index, b1.samples),
        (1, 3, 2)
    );
    assert_eq!(b1.error.as_ref().map(|e| e.kind.as_str()), Some("overrun"));
    assert!(r.next_chunk().unwrap().is_none());
    assert!(r.stop().is_none());
}

#[test]
fn a_truncated_file_gives_every_complete_chunk_and_says_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.dt-raw");
    let (bytes, ends) = golden();
    let header_end = 4 + u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    for len in 0..=bytes.len() {
        std::fs::write(&path, &bytes[..len]).unwrap();
        let mut r = match DtRawReader::open(&path) {
            Ok(r) => r,
            Err(e) => {
                assert!(len < header_end, "cut at {len}: {e}");
                continue;
            }
        };
        assert!(len >= header_end);
        let mut got = 0;
        while r.next_chunk().unwrap().is_some() {
            got += 1;
        }
        let complete = ends.iter().filter(|e| **e <= len).count();
        assert_eq!(got, complete, "cut at {len}");
        // Skipping payloads (a resuming writer) finds the same chunks and the same stop.
        let mut skim = DtRawReader::open(&path).unwrap();
        let mut offsets = Vec::new();
        while let Some((_, offset)) = skim.next_chunk_header().unwrap() {
            offsets.push(offset);
        }
        assert_eq!(offsets.len(), complete, "cut at {len}, headers only");
        assert_eq!(skim.stop().map(|s| s.offset), r.stop().map(|s| s.offset));
        let boundary = len == header_end || ends.contains(&len);
        match r.stop() {
            None => assert!(boundary, "cut at {len} mid-chunk without a report"),
            Some(s) => {
                assert!(!boundary, "cut at {len} is a chunk boundary: {s:?}");
                let last_end = ends
                    .iter()
                    .copied()
                    .filter(|e| *e <= len)
                    .max()
                    .unwrap_or(header_end);
                assert_eq!((s.offset as usize, s.chunks as usize), (last_end, complete));
                assert_eq!(s.file_len as usize, len);
            }
        }
    }
}

fn sim_blocks(n: u64) -> Vec<Block> {
    let mut sim = DaqSim::new(3, 1000.0, 8).with_raw(true);
    (0..n)
        .map(|i| sim.make_block(i, 1_767_225_600_000_000))
        .collect()
}

/// Writes the sim's blocks, a short block, and an overrun without data.
fn write_sample(path: &Path) -> Vec<Block> {
    let mut sink = RawSink::create(path, RawOptions::default()).unwrap();
    let mut blocks = sim_blocks(4);
    let mut short = blocks[3].clone();
    short.block_index = 4;
    short.first_sample_index += 8;
    short.samples = 5;
    short.values = (0..3)
        .flat_map(|c| blocks[3].channel_values(c)[..5].to_vec())
        .collect();
    short.raw = match &blocks[3].raw {
        Some(RawCodes::I16(v)) => Some(RawCodes::I16(
            (0..3).flat_map(|c| v[c * 8..c * 8 + 5].to_vec()).collect(),
        )),
        other => other.clone(),
    };
    blocks.push(short);
    let mut overrun = blocks[0].clone();
    overrun.samples = 0;
    overrun.values.clear();
    overrun.raw = None;
    overrun.error = Some(BlockError {
        kind: "overrun".into(),
        message: "buffer lost".into(),
    });
    blocks.push(overrun);
    for b in &blocks {
        sink.write_block(b).unwrap();
    }
    sink.close().unwrap();
    blocks
}

#[test]
fn tapedeck_files_read_back_to_the_same_codes_and_volts_within_half_a_step() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.dt-raw");
    let blocks = write_sample(&path);
    let mut r = DtRawReader::open(&path).unwrap();
    let mut chunks = Vec::new();
    while let Some(c) = r.next_chunk().unwrap() {
        chunks.push(c);
    }
    assert!(r.stop().is_none());
    assert_eq!(
        chunks.len(),
        7,
        "4 blocks, a partial one, an overrun, the final marker"
    );
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c.header.seq, i as u64);
    }
    assert!(chunks[4].header.flags.contains(&FLAG_PARTIAL.to_string()));
    assert_eq!(chunks[5].header.flags, vec![FLAG_OVERRUN]);
    assert_eq!(chunks[5].header.valid_samples, 0);
    assert_eq!(chunks[6].header.flags, vec![FLAG_FINAL]);
    let step = 20.0 / 65535.0;
    for (c, b) in chunks.iter().zip(&blocks).take(5) {
        assert_eq!(Some(&c.codes), b.raw.as_ref());
        let back = r.to_block(c).unwrap();
        assert_eq!(back.channels[0].scale, b.channels[0].scale);
        for (x, y) in back.values.iter().zip(&b.values) {
            assert!((x - y).abs() <= step / 2.0 + 1e-12, "{x} vs {y}");
        }
    }
}

#[test]
fn an_independent_python_reader_parses_tapedecks_file_and_finds_dtollibs_json() {
    let python = std::env::var("TAPEDECK_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    if Command::new(&python).arg("-c").arg("1").output().is_err() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true but no {python} to run the independent .dt-raw reader");
        }
        eprintln!("skipping: no {python} for the independent .dt-raw reader");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("py.dt-raw");
    let blocks = write_sample(&path);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dtraw_reader.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // json.dumps(json.loads(header)) == header for every header: the same text dtollib writes.
    assert_eq!(v["json_as_python_writes_it"], true, "{v}");
    assert_eq!(v["chunks"], 7);
    assert_eq!(v["flags"][6][0], "final");
    let codes: i64 = blocks
        .iter()
        .filter_map(|b| b.raw.as_ref())
        .map(|r| match r {
            RawCodes::I16(v) => v.iter().map(|c| i64::from(*c)).sum::<i64>(),
            RawCodes::I32(v) => v.iter().map(|c| i64::from(*c)).sum::<i64>(),
        })
        .sum();
    assert_eq!(v["code_sum"], codes);
    assert_eq!(v["n_channels"], 3);
    assert_eq!(v["channels"][0]["range"], serde_json::json!([-10.0, 10.0]));
}
