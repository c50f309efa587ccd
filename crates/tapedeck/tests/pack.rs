//! Packs (`docs/pack-format.md`): every input comes back byte for byte, through every codec,
//! and a damaged or cut pack is an error, never wrong bytes.

use std::path::{Path, PathBuf};

use arrow_array::{Array, BinaryArray, RecordBatch};
use arrow_schema::DataType;
use proptest::prelude::*;
use tapedeck::pack::{self, Backend, Format, PackOptions};
use tapedeck::tape::{StartAt, TapeReader};

fn options(format: Format, lines: usize, bytes: usize) -> PackOptions {
    PackOptions {
        format,
        level: Some(3),
        chunk_lines: lines,
        chunk_bytes: bytes,
        ..PackOptions::default()
    }
}

/// Options that keep a frame's columns whatever they cost, for tests of what the columns hold.
fn columns(format: Format, lines: usize) -> PackOptions {
    PackOptions {
        columns_slack: 1e9,
        ..options(format, lines, 1 << 20)
    }
}

/// Packs `input` into `dir/name`, unpacks it, and returns the pack's path and report.
fn round_trip(
    dir: &Path,
    name: &str,
    input: &[u8],
    o: &PackOptions,
) -> (PathBuf, pack::PackReport) {
    let out = dir.join(name);
    let report = pack::pack(input, &out, o, &mut |_| {}).unwrap();
    let mut back = Vec::new();
    let r = pack::unpack(&out, &mut back, &mut |_| {}).unwrap();
    assert!(
        back == input,
        "{name}: {:?}\n != {:?}",
        String::from_utf8_lossy(&back),
        String::from_utf8_lossy(input)
    );
    assert_eq!(r.bytes, input.len() as u64);
    assert_eq!(report.trailer.bytes, input.len() as u64);
    (out, report)
}

fn batches(pack: &Path) -> Vec<RecordBatch> {
    let mut r = TapeReader::open(pack, StartAt::Start).unwrap();
    let mut out = Vec::new();
    while let Some((_, b)) = r.next_batch().unwrap() {
        out.push(b);
    }
    out
}

fn exact_rows(b: &RecordBatch) -> usize {
    let e = b.column_by_name("_exact").unwrap();
    e.len() - e.null_count()
}

const ALL: [Format; 5] = [
    Format::Auto,
    Format::Csv,
    Format::Jsonl,
    Format::Log,
    Format::Lines,
];

/// The generated edge cases of the issue, each through every codec that accepts it.
fn edge_cases() -> Vec<(&'static str, Vec<u8>)> {
    let mut huge = b"id,text\n1,".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 300_000));
    huge.extend_from_slice(b"\n2,short\n");
    vec![
        ("empty", Vec::new()),
        ("crlf", b"a,b\r\n1,2\r\n3,4\r\n".to_vec()),
        ("mixed endings", b"a,b\n1,2\r\n3,4\n".to_vec()),
        ("quoted newlines", b"a,b\n1,\"x\ny\"\n2,\"p\r\nq\"\n".to_vec()),
        ("empty fields", b"a,b,c\n,,\n1,,3\n\"\",\"\",\n".to_vec()),
        ("ragged", b"a,b,c\n1,2\n1,2,3,4\n\n5,6,7\n".to_vec()),
        ("number spelling", b"x,y\n1.50,007\n1.5,7\n1e5,+7\n-0,0\n".to_vec()),
        ("non utf8", b"a,b\n\xff\xfe,1\nok,\xc3\n".to_vec()),
        ("no final newline", b"a,b\n1,2\n3,4".to_vec()),
        ("header only", b"a,b,c\n".to_vec()),
        ("header no newline", b"a,b,c".to_vec()),
        ("broken quotes", b"a,b\n\"open,1\n2,3\n\"x\"y,4\n".to_vec()),
        ("one huge line", huge),
        ("json", br#"{"a": 1, "b": "x\"y", "c": [1, {"d": null}], "e": 1.5}
{"a": 2, "b": "\u00e9", "c": null, "e": 2}
{"b": "z", "a": 3}
{}
not json
{"a": 99999999999999999999, "e": 1.50, "f": true}
"#.to_vec()),
        ("json array lines", b"[\n  {\"a\":1,\"b\":\"x\"},\n  {\"a\":2,\"b\":\"y\"}\n]\n".to_vec()),
        ("log", b"2026-11-30T13:02:18Z start\n2026-11-30T13:02:19.5Z step 1\n  continued\n[2026-11-30 13:02:20] end".to_vec()),
        ("lone cr", b"a\rb\n\r\n\n\r".to_vec()),
    ]
}

#[test]
fn every_edge_case_comes_back_byte_for_byte_through_every_codec() {
    let dir = tempfile::tempdir().unwrap();
    for (name, input) in edge_cases() {
        for format in ALL {
            for (lines, bytes, backend) in [
                (1_000_000, 1 << 20, Backend::Zstd),
                (2, 1 << 20, Backend::Zstd),
                (1_000, 64, Backend::Zstd),
                (1_000_000, 1 << 20, Backend::Xz),
                (2, 1 << 20, Backend::Xz),
            ] {
                let o = PackOptions {
                    backend,
                    level: None,
                    ..options(format, lines, bytes)
                };
                let tag =
                    format!("{name}-{format}-{lines}-{bytes}-{}", backend.name()).replace(' ', "_");
                match pack::pack(input.as_slice(), &dir.path().join(&tag), &o, &mut |_| {}) {
                    Ok(_) => {
                        let mut back = Vec::new();
                        pack::unpack(&dir.path().join(&tag), &mut back, &mut |_| {}).unwrap();
                        assert!(back == input, "{tag}: {:?}", String::from_utf8_lossy(&back));
                    }
                    // An explicit codec may refuse an input whose first line it cannot read;
                    // it says so and leaves nothing behind.
                    Err(e) => {
                        assert!(matches!(format, Format::Csv | Format::Jsonl), "{tag}: {e}");
                        assert!(e.to_string().contains("--format lines"), "{e}");
                        assert!(!dir.path().join(&tag).exists());
                        assert!(!pack::partial_path(&dir.path().join(&tag)).exists());
                    }
                }
            }
        }
    }
}

#[test]
fn a_regular_csv_becomes_typed_columns_with_no_exact_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut input = b"id,name,price,when\n".to_vec();
    for i in 0..5000 {
        input.extend(
            format!(
                "{i},\"item, {}\",{}.25,2026-01-{:02}\n",
                i % 7,
                i % 100,
                i % 28 + 1
            )
            .as_bytes(),
        );
    }
    let (out, report) = round_trip(dir.path(), "t.tdpack", &input, &columns(Format::Auto, 1000));
    assert_eq!(report.trailer.layout.format(), Format::Csv);
    assert_eq!(report.trailer.records, 5000);
    assert_eq!(report.trailer.raw_frames, 0);
    let b = batches(&out);
    // A chunk is 1,000 records: the first holds the header and 999 rows.
    assert_eq!(b.len(), 6);
    let s = b[0].schema();
    let types: Vec<_> = s
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type().clone()))
        .collect();
    assert_eq!(
        types,
        vec![
            ("id", DataType::Int64),
            ("name", DataType::Utf8View),
            ("price", DataType::Float64),
            ("when", DataType::Utf8View),
            ("_exact", DataType::Binary)
        ]
    );
    assert_eq!(b.iter().map(exact_rows).sum::<usize>(), 0);
    // And it is smaller than the CSV.
    assert!(
        report.bytes_out < input.len() as u64 / 2,
        "{} of {}",
        report.bytes_out,
        input.len()
    );
    // With the default slack the same input keeps its columns too: they cost little more
    // than the plain form.
    let (_, report) = round_trip(
        dir.path(),
        "d.tdpack",
        &input,
        &options(Format::Auto, 1000, 1 << 20),
    );
    assert_eq!(report.trailer.raw_frames, 0);
}

#[test]
fn rows_that_do_not_fit_the_layout_keep_their_bytes_and_their_readable_columns() {
    let dir = tempfile::tempdir().unwrap();
    // The first chunk (the header and two rows) makes `n` an integer column; the second
    // chunk has a `1.50` and a needlessly quoted `"d"`.
    let input = b"n,s\n1,a\n2,b\n1.50,c\n3,\"d\"\n";
    let (out, _) = round_trip(dir.path(), "t.tdpack", input, &columns(Format::Csv, 3));
    let b = batches(&out);
    assert_eq!(b[0].schema().field(0).data_type(), &DataType::Int64);
    let exact = b[1]
        .column_by_name("_exact")
        .unwrap()
        .as_any()
        .downcast_ref::<BinaryArray>()
        .unwrap();
    let got: Vec<Option<&[u8]>> = exact.iter().collect();
    assert_eq!(got, vec![Some(&b"1.50,c\n"[..]), Some(&b"3,\"d\"\n"[..])]);
    // `1.50` is not an integer: null in `n`; `"d"` is still `d` in `s`.
    let n = b[1].column(0);
    assert!(n.is_null(0) && n.is_valid(1));
    let s = b[1]
        .column(1)
        .as_any()
        .downcast_ref::<arrow_array::StringViewArray>()
        .unwrap();
    assert_eq!(s.value(1), "d");
}

#[test]
fn json_lines_become_columns_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut input = Vec::new();
    for i in 0..300 {
        input.extend(format!("{{\"id\": {i}, \"name\": \"n{i}\", \"ok\": {}, \"v\": {}.5, \"tags\": [\"a\", {i}]}}\n", i % 2 == 0, i).as_bytes());
    }
    let (out, report) = round_trip(dir.path(), "j.tdpack", &input, &columns(Format::Auto, 1000));
    assert_eq!(report.trailer.layout.format(), Format::Jsonl);
    let b = batches(&out);
    let s = b[0].schema();
    let types: Vec<_> = s.fields().iter().map(|f| f.data_type().clone()).collect();
    assert_eq!(
        types,
        vec![
            DataType::Int64,
            DataType::Utf8View,
            DataType::Boolean,
            DataType::Float64,
            DataType::Utf8View,
            DataType::Binary
        ]
    );
    assert_eq!(exact_rows(&b[0]), 0);
}

#[test]
fn a_log_has_a_time_column_its_frames_are_pruned_by() {
    let dir = tempfile::tempdir().unwrap();
    let mut input = Vec::new();
    for i in 0..1000 {
        input.extend(
            format!(
                "2026-11-30T13:{:02}:{:02}.000Z INFO request {i} took {} ms\n",
                i / 60 % 60,
                i % 60,
                i % 17
            )
            .as_bytes(),
        );
    }
    let (out, report) = round_trip(dir.path(), "l.tdpack", &input, &columns(Format::Auto, 100));
    assert_eq!(report.trailer.layout.format(), Format::Log);
    let b = batches(&out);
    assert_eq!(b[0].schema().field(0).name(), "time");
    assert_eq!(b[0].column(0).null_count(), 0);
    assert_eq!(b.iter().map(exact_rows).sum::<usize>(), 0);
    // The frames carry time ranges: a reader starting at a time skips earlier frames.
    let t = b[5]
        .column(0)
        .as_any()
        .downcast_ref::<arrow_array::TimestampMicrosecondArray>()
        .unwrap()
        .value(0);
    let mut r = TapeReader::open(&out, StartAt::Time(t)).unwrap();
    assert_eq!(r.next_batch().unwrap().unwrap().0, 500);
}

#[test]
fn a_frame_whose_plain_form_is_smaller_is_written_plain() {
    let dir = tempfile::tempdir().unwrap();
    // Random-looking text in a CSV: columns do not help, the plain form wins or ties.
    let mut input = b"a,b\n".to_vec();
    let mut x = 0x2545F4914F6CDD1Du64;
    // 1,999 rows and the header: four chunks of 500 records (a last chunk of one row would
    // encode to the same size either way, and a tie keeps the columns).
    for _ in 0..1999 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        input.extend(format!("{:x},{:o}\r\n", x, x >> 3).as_bytes());
    }
    let o = PackOptions {
        columns_slack: 0.0,
        ..options(Format::Csv, 500, 1 << 20)
    };
    let (out, report) = round_trip(dir.path(), "r.tdpack", &input, &o);
    // Every row ends in `\r\n` while the header ends in `\n`: every row is exact, so the
    // structured form only adds columns, and the plain form is chosen.
    assert_eq!(report.trailer.raw_frames, report.trailer.frames);
    let b = batches(&out);
    assert!(
        b.iter()
            .all(|b| exact_rows(b) == b.num_rows() && b.column(0).null_count() == b.num_rows())
    );
}

#[test]
fn an_existing_output_is_refused_and_an_interrupted_pack_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p");
    std::fs::create_dir(&out).unwrap();
    let e = pack::pack(&b"x\n"[..], &out, &PackOptions::default(), &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    let out = dir.path().join("q");
    // What a killed `pack` leaves: a tape without a trailer.
    let partial = pack::partial_path(&out);
    std::fs::create_dir(&partial).unwrap();
    std::fs::write(partial.join("TAPEID"), b"").unwrap();
    round_trip(dir.path(), "q", b"x\n", &PackOptions::default());
    assert!(!partial.exists());
    // An empty one (a crash before the tape was opened) is replaced too.
    let out = dir.path().join("e");
    std::fs::create_dir(pack::partial_path(&out)).unwrap();
    round_trip(dir.path(), "e", b"x\n", &PackOptions::default());
    // A directory of that name that is not an interrupted pack is left alone.
    let out = dir.path().join("r");
    std::fs::create_dir(pack::partial_path(&out)).unwrap();
    std::fs::write(pack::partial_path(&out).join("notes.txt"), b"mine").unwrap();
    let e = pack::pack(&b"x\n"[..], &out, &PackOptions::default(), &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("not an interrupted pack"), "{e}");
    // A complete pack whose rename did not happen: the error says to rename it.
    let out = dir.path().join("c");
    let done = dir.path().join("q");
    std::fs::rename(&done, pack::partial_path(&out)).unwrap();
    let e = pack::pack(&b"x\n"[..], &out, &PackOptions::default(), &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("rename it to"), "{e}");
}

fn segments(pack: &Path) -> Vec<PathBuf> {
    let mut s: Vec<PathBuf> = std::fs::read_dir(pack)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tape"))
        .collect();
    s.sort();
    s
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Unpacks a damaged copy to a file: it must fail, and leave no output under the name.
fn unpack_fails(pack: &Path, what: &str) {
    let out = pack.with_extension("out");
    let r = pack::unpack_to_file(pack, &out, &mut |_| {});
    assert!(r.is_err(), "{what}: unpacked {:?}", r.ok());
    assert!(!out.exists(), "{what}: left output");
    let leftovers: Vec<_> = std::fs::read_dir(pack.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".partial-"))
        .collect();
    assert!(leftovers.is_empty(), "{what}: left {leftovers:?}");
}

#[test]
fn every_cut_and_bit_flip_of_a_pack_is_an_error_never_wrong_bytes() {
    every_cut_and_bit_flip(Backend::Zstd);
}

#[test]
fn every_cut_and_bit_flip_of_an_xz_pack_is_an_error_never_wrong_bytes() {
    every_cut_and_bit_flip(Backend::Xz);
}

fn every_cut_and_bit_flip(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut input = b"id,v,s\n".to_vec();
    for i in 0..400 {
        input.extend(format!("{i},{}.5,s{}\n", i * 3, i % 9).as_bytes());
    }
    let o = PackOptions {
        backend,
        level: None,
        ..columns(Format::Csv, 100)
    };
    let (good, _) = round_trip(dir.path(), "good", &input, &o);
    let seg = segments(&good);
    assert_eq!(seg.len(), 1);
    let bytes = std::fs::read(&seg[0]).unwrap();
    let name = seg[0].file_name().unwrap().to_owned();
    // Where the footer starts: its length is in the 8 bytes before the closing magic.
    let len = u64::from_le_bytes(bytes[bytes.len() - 16..bytes.len() - 8].try_into().unwrap());
    let footer_at = bytes.len() - len as usize;
    let mut cases = 0;
    // Every cut (a step keeps the test quick; the first and last 64 bytes one by one).
    let cuts: Vec<usize> = (0..bytes.len())
        .filter(|&i| i < 64 || i + 64 > bytes.len() || i % 7 == 0)
        .collect();
    let mut failed = 0;
    for cut in cuts {
        let copy = dir.path().join(format!("cut{cut}"));
        copy_dir(&good, &copy);
        std::fs::write(copy.join(&name), &bytes[..cut]).unwrap();
        // A cut inside the footer leaves every frame whole: the bytes may come back — and
        // then must be exactly the input. Any cut into a frame is an error.
        let out = copy.with_extension("out");
        match pack::unpack_to_file(&copy, &out, &mut |_| {}) {
            Ok(_) => {
                assert!(
                    std::fs::read(&out).unwrap() == input,
                    "cut at {cut}: wrong bytes"
                );
                assert!(
                    cut >= footer_at,
                    "cut at {cut} (footer at {footer_at}) unpacked"
                );
            }
            Err(_) => {
                assert!(!out.exists());
                failed += 1;
            }
        }
        let _ = std::fs::remove_file(&out);
        std::fs::remove_dir_all(&copy).unwrap();
        cases += 1;
    }
    assert!(failed > 100, "{failed}");
    // A bit flip in every byte of the frames and footer (every 3rd byte, every bit position
    // over the run).
    for at in (0..bytes.len()).step_by(3) {
        let copy = dir.path().join(format!("flip{at}"));
        copy_dir(&good, &copy);
        let mut b = bytes.clone();
        b[at] ^= 1 << (at % 8);
        std::fs::write(copy.join(&name), &b).unwrap();
        let out = copy.with_extension("out");
        // A flip may land where nothing reads it (padding, the footer's index when reading
        // in order); then the bytes come back whole — and must be exactly the input.
        match pack::unpack_to_file(&copy, &out, &mut |_| {}) {
            Ok(_) => assert!(
                std::fs::read(&out).unwrap() == input,
                "flip at {at}: wrong bytes"
            ),
            Err(_) => assert!(!out.exists()),
        }
        let _ = std::fs::remove_file(&out);
        std::fs::remove_dir_all(&copy).unwrap();
        cases += 1;
    }
    // The trailer: cut, flipped, missing.
    let trailer = std::fs::read(good.join("PACK")).unwrap();
    for at in [0, trailer.len() / 2, trailer.len() - 2] {
        let copy = dir.path().join(format!("trailer{at}"));
        copy_dir(&good, &copy);
        let mut t = trailer.clone();
        t[at] ^= 0x04;
        std::fs::write(copy.join("PACK"), &t).unwrap();
        unpack_fails(&copy, &format!("trailer flip at {at}"));
        std::fs::write(copy.join("PACK"), &trailer[..at]).unwrap();
        unpack_fails(&copy, &format!("trailer cut at {at}"));
        std::fs::remove_file(copy.join("PACK")).unwrap();
        unpack_fails(&copy, "no trailer");
        cases += 1;
    }
    // A missing segment.
    let copy = dir.path().join("nosegment");
    copy_dir(&good, &copy);
    std::fs::remove_file(copy.join(&name)).unwrap();
    unpack_fails(&copy, "no segment");
    assert!(cases > 200, "{cases}");
}

#[test]
fn memory_stays_bounded_by_the_chunk_on_a_long_input() {
    // A reader that makes 64 MiB of lines without holding them: the pack reads it in chunks
    // of 1 MiB, so the test would only notice a leak as a slow run — what it checks is that
    // the chunk bound holds frame by frame.
    struct Lines(u64, u64, Vec<u8>);
    impl std::io::Read for Lines {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.2.is_empty() {
                if self.0 >= self.1 {
                    return Ok(0);
                }
                self.2 = format!("{:020} some text that repeats\n", self.0).into_bytes();
                self.0 += 1;
            }
            let n = self.2.len().min(buf.len());
            buf[..n].copy_from_slice(&self.2[..n]);
            self.2.drain(..n);
            Ok(n)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("long");
    let mut frames = 0u64;
    let mut last_in = 0u64;
    let report = pack::pack(
        Lines(0, 400_000, Vec::new()),
        &out,
        &options(Format::Lines, 1_000_000, 1 << 20),
        &mut |p| {
            assert!(
                p.bytes_in - last_in < 2 << 20,
                "a chunk of {} bytes",
                p.bytes_in - last_in
            );
            last_in = p.bytes_in;
            frames = p.frames;
        },
    )
    .unwrap();
    assert!(frames >= 16, "{frames}");
    assert_eq!(report.trailer.records, 400_000);
    let mut sink = Sha(sha2::Sha256::default(), 0);
    pack::unpack(&out, &mut sink, &mut |_| {}).unwrap();
    assert_eq!(sink.1, report.trailer.bytes);
}

struct Sha(sha2::Sha256, u64);
impl std::io::Write for Sha {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        self.0.update(b);
        self.1 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random byte strings — from a CSV/JSON-ish alphabet, so the codecs' paths are taken,
    /// and any byte at all — come back exactly through every codec that takes them.
    #[test]
    fn random_bytes_come_back_exactly(
        input in prop_oneof![
            proptest::collection::vec(proptest::sample::select(b"ab1.5,\"\n\r{}:[] \t-0e".to_vec()), 0..400),
            proptest::collection::vec(any::<u8>(), 0..400),
        ],
        lines in 1usize..20,
        bytes in 8usize..200,
        xz in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        for format in ALL {
            let out = dir.path().join(format.to_string());
            let o = PackOptions {
                backend: if xz { Backend::Xz } else { Backend::Zstd },
                level: None,
                ..options(format, lines, bytes)
            };
            match pack::pack(input.as_slice(), &out, &o, &mut |_| {}) {
                Ok(_) => {
                    let mut back = Vec::new();
                    pack::unpack(&out, &mut back, &mut |_| {}).unwrap();
                    prop_assert_eq!(&back, &input, "format {}", format);
                }
                // Only an explicit structured codec may refuse (its first line is not a header
                // or an object); `auto`, `log` and `lines` take anything.
                Err(e) => prop_assert!(matches!(format, Format::Csv | Format::Jsonl), "{}: {}", format, e),
            }
        }
    }
}

/// Where the real corpora are (`scripts/test` fetches them); `None` (with the reason printed)
/// outside CI when they are not there. Under `CI=true` their absence fails the test.
fn corpora() -> Option<PathBuf> {
    match std::env::var_os("TAPEDECK_TEST_CORPORA").map(PathBuf::from) {
        Some(p) if p.join("flights.csv").is_file() => Some(p),
        other => {
            let why = format!(
                "the pack corpora are not there ({other:?}); `bash scripts/test` fetches them and sets TAPEDECK_TEST_CORPORA"
            );
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
            eprintln!("skipped: {why}");
            None
        }
    }
}

#[test]
fn real_files_come_back_byte_for_byte() {
    let Some(dir) = corpora() else { return };
    let out = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    // This machine's own logs, as far as they are readable text or not.
    for log in [
        "/var/log/dpkg.log",
        "/var/log/apt/history.log",
        "/var/log/apt/term.log",
        "/var/log/alternatives.log",
    ] {
        if Path::new(log).is_file() {
            files.push(PathBuf::from(log));
        }
    }
    files.sort();
    assert!(files.len() >= 20, "{files:?}");
    let mut csv_frames = 0;
    for (i, f) in files.iter().enumerate() {
        let input = std::fs::read(f).unwrap();
        let o = PackOptions {
            name: Some(f.display().to_string()),
            level: Some(3),
            ..PackOptions::default()
        };
        let (pack, report) = round_trip(out.path(), &format!("p{i}"), &input, &o);
        let t = &report.trailer;
        eprintln!(
            "{}: {} {} bytes -> {} ({} frames, {} plain)",
            f.display(),
            t.layout.format(),
            t.bytes,
            report.bytes_out,
            t.frames,
            t.raw_frames
        );
        if f.extension().is_some_and(|e| e == "csv") {
            assert_eq!(t.layout.format(), Format::Csv, "{}", f.display());
            csv_frames += t.frames - t.raw_frames;
        }
        if f.file_name().is_some_and(|n| n == "flights.csv") {
            // 336,776 flights, typed, every row restored from its columns.
            assert_eq!(t.records, 336_776);
            let b = batches(&pack);
            assert_eq!(b.iter().map(exact_rows).sum::<usize>(), 0);
            assert_eq!(b[0].schema().field(0).data_type(), &DataType::Int64);
            // `time_hour` (`2013-01-01T10:00:00Z`) is a time: the table's event time, so
            // frames carry time ranges.
            let schema = b[0].schema();
            let (_, field) = schema.column_with_name("time_hour").unwrap();
            assert!(
                matches!(field.data_type(), DataType::Timestamp(..)),
                "{field:?}"
            );
        }
    }
    assert!(csv_frames > 0);
}

/// What common writers produce packs into columns without falling back to `_exact`: R's
/// `write.csv` (every string quoted, a missing one `NA`), a byte-order mark, an inch mark in an
/// unquoted field, a TSV whose names hold commas, Python's `json.dumps` (`\u00e9`, `", "`),
/// and a first JSON line that shows no spacing.
#[test]
fn common_writers_pack_into_columns_without_exact_rows() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        (
            "r.csv",
            b"\"id\",\"name\",\"v\"\n1,\"a\",1.5\n2,NA,NA\n3,\"c, d\",2\n".to_vec(),
            vec!["id", "name", "v"],
        ),
        (
            "bom.csv",
            b"\xef\xbb\xbfid,_seq\n1,2\n3,4\n".to_vec(),
            vec!["id", "c1"],
        ),
        (
            "inch.csv",
            b"item,size,n\npipe,12\",3\nrod,4\",5\n".to_vec(),
            vec!["item", "size", "n"],
        ),
        (
            "t.tsv",
            b"a,b\tc,d\n1\t2\n3\t4\n".to_vec(),
            vec!["a,b", "c,d"],
        ),
        (
            "py.jsonl",
            b"{}\n{\"k\": \"caf\\u00e9\", \"n\": 1}\n{\"k\": \"x\", \"n\": 2}\n".to_vec(),
            vec!["k", "n"],
        ),
    ];
    for (name, input, names) in cases {
        let o = PackOptions {
            name: Some(name.to_string()),
            ..columns(Format::Auto, 100)
        };
        let (out, report) = round_trip(dir.path(), &format!("{name}.tdpack"), &input, &o);
        let b = batches(&out);
        let got: Vec<String> = b[0]
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let want: Vec<String> = names
            .iter()
            .map(|s| s.to_string())
            .chain(["_exact".to_string()])
            .collect();
        assert_eq!(got, want, "{name}: {:?}", report.trailer.layout);
        let exact: usize = b.iter().map(exact_rows).sum();
        // `{}` as a JSON line renders as itself: no key, nothing to keep.
        assert_eq!(exact, 0, "{name}: {:?}", report.trailer.layout);
    }
}

#[test]
fn unpack_refuses_to_overwrite_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let (pack, _) = round_trip(dir.path(), "p", b"a\nb\n", &PackOptions::default());
    let out = dir.path().join("out.txt");
    std::fs::write(&out, b"keep me").unwrap();
    let e = pack::unpack_to_file(&pack, &out, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
}

#[test]
fn a_crlf_line_in_an_lf_file_keeps_its_cr_in_line_not_in_exact() {
    let dir = tempfile::tempdir().unwrap();
    let input = b"a\nb\r\nc\n";
    let (out, _) = round_trip(dir.path(), "l", input, &columns(Format::Lines, 100));
    let b = batches(&out);
    assert_eq!(exact_rows(&b[0]), 0);
    let line = b[0]
        .column_by_name("line")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow_array::StringArray>()
        .unwrap();
    assert_eq!(line.value(1), "b\r");
}

#[test]
fn a_json_key_holding_utc_times_is_a_time_column_and_the_event_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut input = Vec::new();
    for i in 0..300 {
        input.extend(
            format!(
                "{{\"t\": \"2026-11-30T10:{:02}:{:02}.250Z\", \"v\": {i}}}\n",
                i / 60,
                i % 60
            )
            .as_bytes(),
        );
    }
    let (out, _) = round_trip(dir.path(), "t", &input, &columns(Format::Jsonl, 100));
    let b = batches(&out);
    assert!(matches!(
        b[0].schema().field(0).data_type(),
        DataType::Timestamp(..)
    ));
    assert_eq!(b.iter().map(exact_rows).sum::<usize>(), 0);
    let t = b[2]
        .column(0)
        .as_any()
        .downcast_ref::<arrow_array::TimestampMicrosecondArray>()
        .unwrap()
        .value(0);
    let mut r = TapeReader::open(&out, StartAt::Time(t)).unwrap();
    assert_eq!(r.next_batch().unwrap().unwrap().0, 200);
}
