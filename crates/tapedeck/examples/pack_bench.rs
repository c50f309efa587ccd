//! Issue 18: `pack` against `xz -9` and `zstd -19` on real corpora, in one run.
//!
//! For each corpus (a file, or several files joined into one input) prints, as medians of RUNS
//! runs: the original size; the size and ratio of a pack with the default settings, of
//! `xz -9` and of `zstd -19` (the command-line tools, run on the same bytes); pack and
//! xz/zstd compression MB/s; unpack MB/s (to memory, every check made); and the pack's peak
//! RSS (the process's `VmHWM` grows only, so corpora go smallest first and a big generated
//! stream comes last: `--big GB` packs GB of generated CSV from a reader that never holds it).
//!
//! Run: `cargo run --release -p tapedeck --example pack_bench -- [--runs N] [--backend zstd|xz] [--level L]
//!       [--big GB] [--slack S] [--work DIR] NAME=FILE[,FILE…] …`

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use tapedeck::pack::{self, PackOptions};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Compresses `input` with an external tool; returns (bytes, seconds).
fn external(tool: &str, args: &[&str], input: &Path) -> (u64, f64) {
    let t = Instant::now();
    let out = Command::new(tool)
        .args(args)
        .arg("-c")
        .arg(input)
        .stdout(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(out.status.success(), "{tool} failed");
    (out.stdout.len() as u64, t.elapsed().as_secs_f64())
}

struct Sink(u64);
impl std::io::Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Generated CSV rows, `limit` bytes of them, never held in memory.
struct Generated {
    made: u64,
    limit: u64,
    row: u64,
    buf: Vec<u8>,
    at: usize,
}

impl Read for Generated {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.buf.len() {
            if self.made >= self.limit {
                return Ok(0);
            }
            self.buf.clear();
            self.at = 0;
            if self.row == 0 {
                self.buf.extend_from_slice(b"id,device,time,value,status\n");
            }
            for _ in 0..1000 {
                let r = self.row;
                self.row += 1;
                let line = format!(
                    "{r},dev{},2026-11-30T{:02}:{:02}:{:02}.{:03}Z,{}.{},{}\n",
                    r % 16,
                    (r / 3_600_000) % 24,
                    (r / 60_000) % 60,
                    (r / 1000) % 60,
                    r % 1000,
                    (r * 7919) % 1000,
                    r % 100,
                    ["ok", "ok", "ok", "warn"][(r % 4) as usize]
                );
                self.buf.extend_from_slice(line.as_bytes());
            }
            self.made += self.buf.len() as u64;
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut take = |flag: &str| -> Option<String> {
        let i = args.iter().position(|a| a == flag)?;
        let v = args.get(i + 1).cloned();
        args.drain(i..(i + 2).min(args.len()));
        v
    };
    let runs: usize = take("--runs").and_then(|v| v.parse().ok()).unwrap_or(3);
    let backend: pack::Backend = take("--backend")
        .map(|v| v.parse().unwrap_or_else(|e| panic!("{e}")))
        .unwrap_or(pack::DEFAULT_BACKEND);
    let level: i32 = take("--level")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| backend.default_level());
    let big: f64 = take("--big").and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let slack: f64 = take("--slack")
        .and_then(|v| v.parse().ok())
        .unwrap_or(pack::DEFAULT_COLUMNS_SLACK);
    let work = PathBuf::from(take("--work").unwrap_or_else(|| "/tmp/pack_bench".into()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "| corpus | bytes | pack ({backend:?} level {level}) | xz -9 | zstd -19 | pack / xz size | pack MB/s | xz -9 MB/s | zstd -19 MB/s | pack speed / xz | unpack MB/s | frames (plain) | peak RSS MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for spec in &args {
        let (name, files) = spec
            .split_once('=')
            .unwrap_or_else(|| panic!("NAME=FILE[,FILE…]: {spec}"));
        // One input: the files joined.
        let input_path = work.join(format!("{name}.input"));
        let mut input = Vec::new();
        for f in files.split(',') {
            input.extend(std::fs::read(f).unwrap_or_else(|e| panic!("{f}: {e}")));
        }
        std::fs::write(&input_path, &input).unwrap_or_else(|e| panic!("{e}"));
        let mb = input.len() as f64 / 1e6;
        let (mut p_s, mut u_s, mut x_s, mut z_s) = (vec![], vec![], vec![], vec![]);
        let (mut p_b, mut x_b, mut z_b, mut frames, mut plain) = (0, 0, 0, 0, 0);
        let options = PackOptions {
            backend,
            level: Some(level),
            columns_slack: slack,
            name: Some(files.split(',').next().unwrap_or(name).to_string()),
            ..PackOptions::default()
        };
        for run in 0..runs {
            let out = work.join(format!("{name}-{run}.tdpack"));
            let t = Instant::now();
            let r = pack::pack(input.as_slice(), &out, &options, &mut |_| {})
                .unwrap_or_else(|e| panic!("{e}"));
            p_s.push(t.elapsed().as_secs_f64());
            p_b = r.bytes_out;
            frames = r.trailer.frames;
            plain = r.trailer.raw_frames;
            let t = Instant::now();
            let mut sink = Sink(0);
            pack::unpack(&out, &mut sink, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
            u_s.push(t.elapsed().as_secs_f64());
            assert_eq!(sink.0, input.len() as u64);
            let _ = std::fs::remove_dir_all(&out);
            let (b, s) = external("xz", &["-9", "-k", "-T1"], &input_path);
            x_b = b;
            x_s.push(s);
            let (b, s) = external("zstd", &["-19", "-q", "-T1"], &input_path);
            z_b = b;
            z_s.push(s);
        }
        let (p, u, x, z) = (median(p_s), median(u_s), median(x_s), median(z_s));
        println!(
            "| {name} | {} | {p_b} ({:.2}×) | {x_b} ({:.2}×) | {z_b} ({:.2}×) | {:.3} | {:.1} | {:.1} | {:.1} | {:.1}× | {:.0} | {frames} ({plain}) | {:.0} |",
            input.len(),
            input.len() as f64 / p_b as f64,
            input.len() as f64 / x_b as f64,
            input.len() as f64 / z_b as f64,
            p_b as f64 / x_b as f64,
            mb / p,
            mb / x,
            mb / z,
            x / p,
            mb / u,
            peak_rss_mib()
        );
        let _ = std::fs::remove_file(&input_path);
    }
    if big > 0.0 {
        let limit = (big * 1e9) as u64;
        let out = work.join("big.tdpack");
        let t = Instant::now();
        let r = pack::pack(
            Generated {
                made: 0,
                limit,
                row: 0,
                buf: Vec::new(),
                at: 0,
            },
            &out,
            &PackOptions {
                backend,
                level: Some(level),
                ..PackOptions::default()
            },
            &mut |_| {},
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let s = t.elapsed().as_secs_f64();
        println!(
            "generated CSV: {} bytes -> {} (ratio {:.2}) in {s:.1} s ({:.1} MB/s), {} frames, peak RSS {:.0} MiB",
            r.trailer.bytes,
            r.bytes_out,
            r.trailer.bytes as f64 / r.bytes_out as f64,
            r.trailer.bytes as f64 / s / 1e6,
            r.trailer.frames,
            peak_rss_mib()
        );
        let t = Instant::now();
        let mut sink = Sink(0);
        pack::unpack(&out, &mut sink, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
        println!(
            "  unpacked {} bytes in {:.1} s ({:.0} MB/s), peak RSS {:.0} MiB",
            sink.0,
            t.elapsed().as_secs_f64(),
            sink.0 as f64 / t.elapsed().as_secs_f64() / 1e6,
            peak_rss_mib()
        );
    }
}
