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
        if std::env::var("CI").as_deref() == Ok("true")
            || std::env::var_os("TAPEDECK_TEST_PYTHON").is_some()
        {
            panic!("no {python} to run the independent .dt-raw reader");
        }
        eprintln!(
            "SKIPPED: no {python} for the independent .dt-raw reader — run the suite with `bash scripts/test`"
        );
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

// ---- Numbers from the disk that do not fit (issue 12, defect 11) ----

use serde_json::{Value, json};
use tapedeck::Error;
use tapedeck::dtraw::{Chunk, ChunkHeader};

fn file_header() -> Value {
    json!({"format_version": 2, "task": "ai", "device": "dev", "channels": [{"name": "a", "unit": "V"}, {"name": "b", "unit": null}], "n_channels": 2, "sample_rate_hz": 1000.0, "block_period_ns": 1_000_000, "dtype": "int16", "samples_per_buffer": 3, "task_started_at": "2026-01-01T00:00:00+00:00", "metadata": {}})
}

fn chunk_header() -> Value {
    json!({"seq": 0, "event_kind": "buffer_done", "first_sample_index": 0, "valid_samples": 3, "buffer_capacity": 3, "t_mono_ns": 5000, "t_utc": "2026-01-01T00:00:00.000005+00:00", "flags": []})
}

/// A file of `header` and one chunk `chunk` with `payload` bytes of codes.
fn crafted(header: &Value, chunk: &Value, payload: usize) -> Vec<u8> {
    let mut b = Vec::new();
    framed(&mut b, &header.to_string());
    framed(&mut b, &chunk.to_string());
    b.extend((0..payload).map(|i| i as u8));
    b
}

/// Every way of reading `path` — chunks, blocks, every batch layout, headers only, the
/// `file:` source — run to its end. Returns the reader's stop, if it made one.
fn read_everything(path: &Path) -> tapedeck::Result<Option<tapedeck::dtraw::Stop>> {
    let mut r = DtRawReader::open(path)?;
    while let Some(c) = r.next_chunk()? {
        if let Ok(b) = r.to_block(&c) {
            for batch in [b.to_wide_batch(), b.to_long_batch(), b.to_summary_batch()] {
                let _ = batch;
            }
        }
    }
    let mut skim = DtRawReader::open(path)?;
    while skim.next_chunk_header()?.is_some() {}
    assert_eq!(
        skim.stop().map(|s| s.offset),
        r.stop().map(|s| s.offset),
        "headers-only reading stops where full reading does"
    );
    if let Ok(mut src) = tapedeck::source::open(&format!("file:{}", path.display())) {
        while let Ok(Some(rec)) = src.next_record() {
            if let tapedeck::record::Record::Block(b) = rec {
                let _ = b.to_wide_batch();
            }
        }
    }
    Ok(r.stop().cloned())
}

#[test]
fn huge_numbers_in_a_file_header_are_typed_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.dt-raw");
    for (key, value, needle) in [
        ("n_channels", json!(u64::MAX), "n_channels"),
        ("n_channels", json!(-1), "n_channels"),
        ("n_channels", json!(1e30), "n_channels"),
        ("format_version", json!(u64::MAX), "format_version"),
        ("format_version", json!(i64::MIN), "format_version"),
    ] {
        let mut h = file_header();
        h[key] = value.clone();
        std::fs::write(&path, crafted(&h, &chunk_header(), 12)).unwrap();
        let err = DtRawReader::open(&path).unwrap_err();
        assert!(matches!(err, Error::Tape { .. }), "{key}={value}: {err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(needle) && msg.contains("h.dt-raw"),
            "{key}={value}: {msg}"
        );
    }
    // A header length prefix of u32::MAX.
    let mut bytes = crafted(&file_header(), &chunk_header(), 12);
    bytes[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(DtRawReader::open(&path), Err(Error::Tape { .. })));
    // Huge but harmless header numbers read.
    for (key, value) in [
        ("samples_per_buffer", json!(u64::MAX)),
        ("block_period_ns", json!(i64::MIN)),
        ("block_period_ns", json!(-1)),
        ("sample_rate_hz", json!(1e308)),
    ] {
        let mut h = file_header();
        h[key] = value.clone();
        std::fs::write(&path, crafted(&h, &chunk_header(), 12)).unwrap();
        let stop = read_everything(&path).unwrap();
        assert_eq!(stop, None, "{key}={value}");
        let mut r = DtRawReader::open(&path).unwrap();
        let c = r.next_chunk().unwrap().unwrap();
        r.to_block(&c).unwrap().to_long_batch().unwrap();
    }
}

#[test]
fn chunk_numbers_that_overflow_stop_the_reading_there_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.dt-raw");
    let i16_header = file_header();
    let mut i32_header = file_header();
    i32_header["dtype"] = json!("int32");
    let mut huge_period = file_header();
    huge_period["block_period_ns"] = json!(i64::MAX);
    let mut long_period = file_header();
    long_period["block_period_ns"] = json!(i64::MAX / 4);
    // (file header, chunk key, value, payload bytes, words the stop reason holds)
    let cases: Vec<(&Value, &str, Value, usize, &str)> = vec![
        (
            &i16_header,
            "valid_samples",
            json!(u64::MAX),
            12,
            "valid_samples",
        ),
        // 2 channels × 2^62 samples × 2 bytes = 2^64: wraps to 0 in unchecked arithmetic.
        (
            &i16_header,
            "valid_samples",
            json!(1u64 << 62),
            0,
            "valid_samples",
        ),
        (
            &i32_header,
            "valid_samples",
            json!(1u64 << 61),
            0,
            "valid_samples",
        ),
        (
            &i16_header,
            "valid_samples",
            json!(1u64 << 40),
            12,
            "payload bytes",
        ),
        (&i16_header, "valid_samples", json!(-1), 12, "valid_samples"),
        (
            &i16_header,
            "valid_samples",
            json!(1e30),
            12,
            "valid_samples",
        ),
        (
            &i16_header,
            "first_sample_index",
            json!(u64::MAX),
            12,
            "first_sample_index",
        ),
        (
            &i16_header,
            "first_sample_index",
            json!(i64::MAX),
            12,
            "first_sample_index",
        ),
        (
            &i16_header,
            "first_sample_index",
            json!(-5),
            12,
            "first_sample_index",
        ),
        (&i16_header, "t_mono_ns", json!(i64::MAX), 12, "t_mono_ns"),
        (&i16_header, "t_mono_ns", json!(u64::MAX), 12, "t_mono_ns"),
        (&i16_header, "seq", json!(u64::MAX), 12, "seq"),
        (
            &huge_period,
            "valid_samples",
            json!(3),
            12,
            "block_period_ns",
        ),
        (
            &long_period,
            "t_mono_ns",
            json!(i64::MAX - 10),
            12,
            "t_mono_ns",
        ),
    ];
    for (header, key, value, payload, needle) in cases {
        let mut c = chunk_header();
        c[key] = value.clone();
        let bytes = crafted(header, &c, payload);
        std::fs::write(&path, &bytes).unwrap();
        let stop = read_everything(&path)
            .unwrap_or_else(|e| panic!("{key}={value}: {e}"))
            .unwrap_or_else(|| panic!("{key}={value}: read without a stop"));
        let header_end = 4 + header.to_string().len() as u64;
        assert_eq!(
            (stop.offset, stop.chunks, stop.file_len),
            (header_end, 0, bytes.len() as u64),
            "{key}={value}: {stop:?}"
        );
        assert!(
            stop.reason.contains(needle),
            "{key}={value}: {}",
            stop.reason
        );
    }
    // The extremes that do fit read, and every layout of their block builds.
    for (key, value) in [
        ("t_mono_ns", json!(i64::MIN)),
        ("buffer_capacity", json!(u64::MAX)),
        ("first_sample_index", json!(i64::MAX - 2)),
        ("t_mono_ns", json!(i64::MAX - 2_000_000)),
    ] {
        let mut c = chunk_header();
        c[key] = value.clone();
        std::fs::write(&path, crafted(&i16_header, &c, 12)).unwrap();
        assert_eq!(read_everything(&path).unwrap(), None, "{key}={value}");
        let mut r = DtRawReader::open(&path).unwrap();
        let chunk = r.next_chunk().unwrap().unwrap();
        let b = r.to_block(&chunk).unwrap();
        b.to_wide_batch().unwrap();
        b.to_long_batch().unwrap();
        b.to_summary_batch().unwrap();
    }
}

#[test]
fn to_block_refuses_a_chunk_whose_numbers_do_not_fit_with_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.dt-raw");
    std::fs::write(&path, crafted(&file_header(), &chunk_header(), 12)).unwrap();
    let mut r = DtRawReader::open(&path).unwrap();
    let good = r.next_chunk().unwrap().unwrap();
    let header = |f: &dyn Fn(&mut ChunkHeader)| {
        let mut c: Chunk = good.clone();
        f(&mut c.header);
        c.offset = 4242;
        c
    };
    for (what, chunk) in [
        ("too few codes", header(&|h| h.valid_samples = 5)),
        (
            "usize::MAX samples",
            header(&|h| h.valid_samples = usize::MAX),
        ),
        ("2^62 samples", header(&|h| h.valid_samples = 1 << 62)),
        ("t_mono_ns", header(&|h| h.t_mono_ns = i64::MAX)),
        (
            "first_sample_index",
            header(&|h| h.first_sample_index = u64::MAX),
        ),
    ] {
        let err = r.to_block(&chunk).unwrap_err();
        assert!(matches!(err, Error::InvalidBlock { .. }), "{what}: {err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("4242") && msg.contains("b.dt-raw"),
            "{what}: {msg}"
        );
    }
    let mut codes = good.clone();
    codes.codes = RawCodes::I16(vec![1, 2]);
    assert!(matches!(
        r.to_block(&codes),
        Err(Error::InvalidBlock { .. })
    ));
}

/// xorshift64: a deterministic stream of pseudo-random numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "-1",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "4611686018427387904",
    "2305843009213693952",
    "4294967295",
    "1e30",
    "-0",
    "1.5",
    "null",
    "\"3\"",
];

/// Replaces one JSON number of `json` by an interesting value.
fn mutate_number(json: &str, rng: &mut Rng) -> String {
    let starts: Vec<usize> = json
        .char_indices()
        .filter(|&(i, c)| {
            ((c.is_ascii_digit() || c == '-') && json[..i].ends_with(": "))
                || (c.is_ascii_digit() && json[..i].ends_with('['))
        })
        .map(|(i, _)| i)
        .collect();
    if starts.is_empty() {
        return json.to_string();
    }
    let s = starts[rng.below(starts.len())];
    let end = json[s..]
        .find(|c: char| !(c.is_ascii_digit() || "-+.eE".contains(c)))
        .map_or(json.len(), |e| s + e);
    let value = INTERESTING[rng.below(INTERESTING.len())];
    format!("{}{value}{}", &json[..s], &json[end..])
}

#[test]
fn random_mutations_of_valid_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.dt-raw");
    // Two valid files: the golden dtollib one and one tapedeck wrote (scales, final marker).
    let written = dir.path().join("w.dt-raw");
    write_sample(&written);
    let originals = [golden().0, std::fs::read(&written).unwrap()];
    // Their frames, to mutate numbers and re-frame.
    let frames = |bytes: &[u8]| -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        let n = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let hl = n(0);
        out.push((
            String::from_utf8(bytes[4..4 + hl].to_vec()).unwrap(),
            Vec::new(),
        ));
        at += 4 + hl;
        let v: Value = serde_json::from_str(&out[0].0).unwrap();
        let width = if v["dtype"] == "int32" { 4 } else { 2 };
        let channels = v["n_channels"].as_u64().unwrap() as usize;
        while at < bytes.len() {
            let cl = n(at);
            let text = String::from_utf8(bytes[at + 4..at + 4 + cl].to_vec()).unwrap();
            let c: Value = serde_json::from_str(&text).unwrap();
            let payload = c["valid_samples"].as_u64().unwrap() as usize * channels * width;
            at += 4 + cl;
            out.push((text, bytes[at..at + payload].to_vec()));
            at += payload;
        }
        out
    };
    let parsed = [frames(&originals[0]), frames(&originals[1])];
    let mut rng = Rng(0x5EED_0000_D7A4_0001);
    let runs = 3000;
    for run in 0..runs {
        let which = rng.below(2);
        let mut bytes = if rng.below(2) == 0 {
            // Structural: numbers in the headers replaced, the frames' lengths kept right.
            let mut parts = parsed[which].clone();
            for _ in 0..=rng.below(3) {
                let k = rng.below(parts.len());
                parts[k].0 = mutate_number(&parts[k].0, &mut rng);
            }
            let mut b = Vec::new();
            for (json, payload) in &parts {
                framed(&mut b, json);
                b.extend_from_slice(payload);
            }
            b
        } else {
            originals[which].clone()
        };
        // Byte-level: bit flips, bytes set to 0x00 / 0xff / anything, a cut.
        for _ in 0..rng.below(4) {
            let i = rng.below(bytes.len());
            match rng.below(4) {
                0 => bytes[i] ^= 1 << rng.below(8),
                1 => bytes[i] = 0,
                2 => bytes[i] = 0xff,
                _ => bytes[i] = rng.next() as u8,
            }
        }
        if rng.below(4) == 0 {
            let cut = rng.below(bytes.len() + 1);
            bytes.truncate(cut);
        }
        std::fs::write(&path, &bytes).unwrap();
        let outcome = std::panic::catch_unwind(|| read_everything(&path));
        assert!(outcome.is_ok(), "run {run} panicked; bytes: {bytes:?}");
    }
}
