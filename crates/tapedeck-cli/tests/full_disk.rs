//! A real full disk: a small tmpfs is mounted, filled, recorded onto, freed, and recorded onto
//! again. Every acknowledged row must be on the tape once, in order, and every sink must hold
//! exactly the tape's rows — the in-process storage seam (`tests/faults.rs` of the library)
//! proves the same against a model; this proves it against the kernel.
//!
//! Mounting needs root. Without it the test says why it skipped; under `CI=true` that is a
//! failure (`.ci/run` runs as root).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tapedeck() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tapedeck"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A tmpfs of `size` mounted on a fresh directory; unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str, tag: &str) -> Option<Tmpfs> {
        let dir =
            std::env::temp_dir().join(format!("tapedeck-full-disk-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            other => {
                let why = match other {
                    Ok(o) => stderr(&o),
                    Err(e) => e.to_string(),
                };
                let _ = std::fs::remove_dir(&dir);
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("cannot mount a tmpfs (CI=true needs it; run as root): {why}");
                }
                eprintln!("SKIPPED: cannot mount a tmpfs (needs root): {why}");
                None
            }
        }
    }

    /// Fills the disk until `leave` bytes are free.
    fn fill(&self, leave: u64) {
        let free = free_bytes(&self.dir);
        let mut f = std::fs::File::create(self.dir.join("fill")).unwrap();
        let block = vec![0xA5u8; 4096];
        let mut written = 0u64;
        while written + leave + 4096 <= free {
            use std::io::Write;
            if f.write_all(&block).is_err() {
                break;
            }
            written += 4096;
        }
        let _ = f.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.dir.join("fill")).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_bytes(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap()
}

/// `tapedeck inspect --json` of a tape.
fn inspect_json(tape: &Path) -> serde_json::Value {
    let v = tapedeck()
        .arg("inspect")
        .arg(tape)
        .arg("--json")
        .output()
        .unwrap();
    serde_json::from_slice(&v.stdout).unwrap()
}

fn record(tape: &Path, sinks: &[String], summary: &Path, rows: u64) -> Output {
    let mut c = tapedeck();
    c.args(["record", "--source"])
        .arg(format!("sim:alicat?n={rows}"))
        .arg("--tape")
        .arg(tape)
        .args(["--compression", "none", "--fsync", "always"])
        .args(["--segment-bytes", "65536", "--progress", "never"])
        // A full disk is waited out for a second (the tape's writes stop; the sinks on the
        // same disk may fail first), then the run stops.
        .args(["--disk-full-timeout", "1s"])
        .arg("--summary-json")
        .arg(summary);
    for s in sinks {
        c.args(["--sink", s]);
    }
    c.output().unwrap()
}

fn acknowledged(summary: &Path) -> u64 {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(summary).unwrap()).unwrap();
    v["tape"]["acknowledged"].as_u64().unwrap()
}

/// The tape's rows as CSV text, in tape order (the reference every sink is compared with).
fn tape_as_csv(tape: &Path, out: &Path) -> String {
    let o = tapedeck()
        .arg("replay")
        .arg(tape)
        .arg("--sink")
        .arg(format!("csv:{}", out.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::read_to_string(out).unwrap()
}

fn parquet_rows(dir: &Path) -> u64 {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".parquet") {
            continue;
        }
        let r = SerializedFileReader::new(std::fs::File::open(&p).unwrap()).unwrap();
        n += r.metadata().file_metadata().num_rows() as u64;
    }
    n
}

fn full_disk_round(leave: u64) {
    let Some(fs) = Tmpfs::mount("6m", &leave.to_string()) else {
        return;
    };
    let outside = tempfile::tempdir().unwrap();
    let tape = fs.dir.join("tape");
    let csv = fs.dir.join("out.csv");
    let parts = fs.dir.join("parts");
    let sinks = vec![
        format!("csv:{}", csv.display()),
        format!("parquet:{}/?roll_rows=2000", parts.display()),
    ];
    let s = |k: usize| outside.path().join(format!("s{k}.json"));

    let o = record(&tape, &sinks, &s(1), 4000);
    assert!(o.status.success(), "first run: {}", stderr(&o));
    let mut acked = acknowledged(&s(1));
    assert_eq!(acked, 4000);

    fs.fill(leave);
    let o = record(&tape, &sinks, &s(2), 20000);
    let err = stderr(&o);
    assert!(!o.status.success(), "a full disk is a failure: {err}");
    assert!(
        err.contains("No space left on device") || err.contains("the disk stayed full for"),
        "{err}"
    );
    acked += acknowledged(&s(2));
    assert!(
        acknowledged(&s(2)) < 20000,
        "the disk really filled up: {err}"
    );

    fs.free();
    let o = record(&tape, &sinks, &s(3), 3000);
    assert!(o.status.success(), "after freeing space: {}", stderr(&o));
    acked += acknowledged(&s(3));

    let v = tapedeck().arg("verify").arg(&tape).output().unwrap();
    assert!(
        v.status.success(),
        "verify: {}",
        String::from_utf8_lossy(&v.stdout)
    );
    let reference = tape_as_csv(&tape, &outside.path().join("tape.csv"));
    let tape_rows = reference.lines().count() as u64 - 1;
    assert_eq!(
        tape_rows, acked,
        "every acknowledged row on the tape once, nothing unacknowledged"
    );
    assert_eq!(
        std::fs::read_to_string(&csv).unwrap(),
        reference,
        "the CSV sink holds exactly the tape's rows, in order"
    );
    assert_eq!(parquet_rows(&parts), tape_rows, "the Parquet parts too");
    eprintln!(
        "full tmpfs, {leave} bytes left: acknowledged 4000 + {} (disk full) + {} rows; tape {tape_rows} rows; csv and parquet match it; verify clean",
        acknowledged(&s(2)),
        acknowledged(&s(3))
    );
}

#[test]
fn a_full_tmpfs_loses_no_acknowledged_row_with_4k_free() {
    full_disk_round(4 << 10);
}

#[test]
fn a_full_tmpfs_loses_no_acknowledged_row_with_300k_free() {
    full_disk_round(300 << 10);
}

/// `record --retain` on a 4 MiB tmpfs: ten times the disk's size of rows goes through the
/// tape without an error, every acknowledged row reaches the sink once, and the tape that is
/// left verifies from where retention left it.
#[test]
fn retention_keeps_a_small_disk_from_filling_over_ten_times_its_size() {
    let Some(disk) = Tmpfs::mount("4m", "retain") else {
        return;
    };
    let out_dir = tempfile::tempdir().unwrap();
    let tape = disk.dir.join("tape");
    let csv = out_dir.path().join("all.csv");
    let summary = out_dir.path().join("summary.json");
    // About 60 bytes a row on an uncompressed tape: 700,000 rows are ten times the disk.
    let rows = 700_000u64;
    let o = tapedeck()
        .args(["record", "--source"])
        .arg(format!("sim:alicat?n={rows}&rate=100000"))
        .arg("--tape")
        .arg(&tape)
        .args(["--compression", "none", "--segment-bytes", "131072"])
        .args(["--retain", "1536KiB", "--progress", "never"])
        .arg("--sink")
        .arg(format!("csv:{}", csv.display()))
        .arg("--summary-json")
        .arg(&summary)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(acknowledged(&summary), rows);
    let tape_bytes: u64 = std::fs::read_dir(&tape)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(tape_bytes < 4 << 20, "{tape_bytes} bytes left on the tape");
    // Ten times the disk went through it.
    let info = inspect_json(&tape);
    let trimmed_bytes = info["trimmed"][2].as_u64().unwrap();
    assert!(
        trimmed_bytes + tape_bytes > 10 * (4 << 20) - (4 << 20),
        "{info}"
    );
    // Every row in the sink, once, in order.
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count() as u64, rows + 1);
    let v = tapedeck().arg("verify").arg(&tape).output().unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    assert!(String::from_utf8_lossy(&v.stdout).contains("retention removed the rows before"));
}

/// Below the free-space warning level the recorder says so; with `--retain` it trims the oldest
/// segments early, back to the level, although the tape is far below its retention size.
#[test]
fn a_nearly_full_disk_is_announced_and_retention_trims_early() {
    let Some(disk) = Tmpfs::mount("8m", "warn") else {
        return;
    };
    let tape = disk.dir.join("tape");
    let record = |rows: u64, extra: &[&str]| {
        tapedeck()
            .args(["record", "--source"])
            .arg(format!("sim:alicat?n={rows}"))
            .arg("--tape")
            .arg(&tape)
            .args(["--compression", "none", "--segment-bytes", "131072"])
            .args(["--progress", "never"])
            .args(extra)
            .output()
            .unwrap()
    };
    // About 2 MiB of tape, then the disk filled to 2% free.
    let o = record(35_000, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    disk.fill(160 << 10);
    let level = 100.0 * free_bytes(&disk.dir) as f64 / (8 << 20) as f64;
    assert!(level < 5.0, "{level}% free");
    // A short recording: the warning, no trimming without --retain.
    let o = record(10, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stderr(&o);
    assert!(
        text.contains("% free") && text.contains("below the warning level of 5%"),
        "{text}"
    );
    assert!(text.contains("--retain"), "{text}");
    // With a retention far larger than the tape: trimmed early, back above 5% free.
    // 150,000 rows at 30,000 a second: 9 MB through the 8 MiB disk.
    let o = tapedeck()
        .args([
            "record",
            "--source",
            "sim:alicat?n=150000&rate=30000",
            "--tape",
        ])
        .arg(&tape)
        .args(["--compression", "none", "--segment-bytes", "131072"])
        .args(["--progress", "never", "--retain", "1GiB"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let free = 100.0 * free_bytes(&disk.dir) as f64 / (8 << 20) as f64;
    let info = inspect_json(&tape);
    assert!(info["trimmed"][0].as_u64().unwrap() > 0, "{info}");
    assert!(free >= 4.0, "{free}% free after trimming early");
    let v = tapedeck().arg("verify").arg(&tape).output().unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
}

/// With the disk full the recorder waits — says so, acknowledges nothing — and goes on by itself
/// when space returns (here: a file removed); every row reaches the sink once, in order.
#[test]
fn a_recording_waits_out_a_full_disk_and_goes_on_when_space_returns() {
    let Some(disk) = Tmpfs::mount("8m", "wait") else {
        return;
    };
    let out_dir = tempfile::tempdir().unwrap();
    let tape = disk.dir.join("tape");
    let csv = out_dir.path().join("all.csv");
    let summary = out_dir.path().join("summary.json");
    let run = |rows: u64| {
        tapedeck()
            .args(["record", "--source"])
            .arg(format!("sim:alicat?n={rows}&rate=20000"))
            .arg("--tape")
            .arg(&tape)
            .args(["--compression", "none", "--progress", "never"])
            .arg("--sink")
            .arg(format!("csv:{}", csv.display()))
            .arg("--summary-json")
            .arg(&summary)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let o = run(100).wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // Less free than the tape keeps in reserve: the next run's first frame must wait.
    disk.fill(40 << 10);
    let child = run(20_000);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    disk.free();
    let o = child.wait_with_output().unwrap();
    let text = stderr(&o);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("the disk is full"), "{text}");
    // It waited until the space came back, about 1.5 s, not less.
    let waited: f64 = text
        .split("space on the disk again after ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no word of the space returning: {text}"));
    assert!(waited >= 1.0, "{text}");
    assert_eq!(acknowledged(&summary), 20_000, "{text}");
    let lines = std::fs::read_to_string(&csv).unwrap().lines().count();
    assert_eq!(lines, 20_100 + 1, "every row in the CSV once");
    let v = tapedeck().arg("verify").arg(&tape).output().unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
}

/// `pack` and `unpack` on a real full disk: each fails with the OS's error, exit 1, and leaves
/// nothing under the name asked for — no `OUT`, no `OUT.partial`, no `OUT.partial-<pid>`.
#[test]
fn pack_and_unpack_on_a_full_disk_fail_and_leave_nothing_under_the_name() {
    let Some(disk) = Tmpfs::mount("2m", "pack") else {
        return;
    };
    // 8 MB of CSV whose values do not repeat: a pack of it needs more than the 2 MB disk.
    let work = tempfile::tempdir().unwrap();
    let csv = work.path().join("big.csv");
    let mut text = String::from("i,a,b\n");
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    while text.len() < 8 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(&format!("{},{:x},{}\n", text.len(), x, x >> 11));
    }
    std::fs::write(&csv, &text).unwrap();
    let leftovers = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };

    // A command that must fail on the full disk with the OS's error and leave nothing there.
    let fails_for_space = |args: &[&str]| {
        let o = tapedeck().args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("space"), "{args:?}: {}", stderr(&o));
        assert!(
            leftovers(&disk.dir).is_empty(),
            "{args:?}: {:?}",
            leftovers(&disk.dir)
        );
    };
    let (csv_s, out) = (csv.to_str().unwrap(), disk.dir.join("big.tdpack"));
    fails_for_space(&["pack", csv_s, out.to_str().unwrap()]);

    // A pack made elsewhere, restored onto the full disk.
    let pack = work.path().join("big.tdpack");
    let o = tapedeck()
        .args(["pack", csv_s, pack.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let restored = disk.dir.join("big.csv");
    fails_for_space(&["unpack", pack.to_str().unwrap(), restored.to_str().unwrap()]);
    // With room, the same command restores it exactly.
    let o = tapedeck()
        .args([
            "unpack",
            pack.to_str().unwrap(),
            work.path().join("back.csv").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read(work.path().join("back.csv")).unwrap() == text.as_bytes());
}

/// `pack` onto a disk that fills up (ENOSPC while writing the pack's tape): exit 1 saying so,
/// and nothing left under the pack's name or its `.partial` name; the same input packs and
/// unpacks byte for byte once there is room.
#[test]
fn a_pack_onto_a_full_disk_fails_and_leaves_nothing() {
    let Some(fs) = Tmpfs::mount("2m", "pack") else {
        return;
    };
    // 6 MB of CSV whose text column barely compresses (hex of a hash-like sequence).
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("in.csv");
    let mut text = String::from("id,hex\n");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..120_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(&format!("{i},{x:016x}{:016x}\n", x.rotate_left(29)));
    }
    std::fs::write(&input, &text).unwrap();
    let out = fs.dir.join("in.tdpack");
    let o = tapedeck()
        .args(["pack", "--backend", "zstd", "--level", "1"])
        .arg(&input)
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("free space") && err.contains("No space"),
        "{err}"
    );
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(&fs.dir).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // With room (outside the tmpfs), the same input packs and comes back.
    let ok_out = work.path().join("in.tdpack");
    let o = tapedeck()
        .args(["pack"])
        .arg(&input)
        .arg(&ok_out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let back = work.path().join("back.csv");
    let o = tapedeck()
        .args(["unpack"])
        .arg(&ok_out)
        .arg(&back)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read(&back).unwrap() == text.as_bytes());
}
