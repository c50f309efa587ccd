//! How fast the tape's two checksums run on this machine: SHA-256 (the segment hash chain,
//! `sha2`, which uses the CPU's SHA extensions when it has them) and CRC32C (every frame), and
//! BLAKE3 (one thread) — the faster cryptographic hash the chain could move to — over the same
//! bytes, to compare with the disk's write speed (`dd … conv=fdatasync`).
//!
//! ```text
//! cargo run --release -p tapedeck --example hash_speed -- [MiB] [RUNS]
//! ```

use sha2::Digest;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mib: usize = args.first().map_or(1024, |a| a.parse().expect("MiB"));
    let runs: usize = args.get(1).map_or(5, |a| a.parse().expect("RUNS"));
    // Bytes like a daq tape's: 16-bit samples of a slowly varying signal.
    let chunk: Vec<u8> = (0..1usize << 20)
        .map(|i| ((i / 2) as f64 * 0.001).sin().to_bits().to_le_bytes()[i % 8])
        .collect();
    let mut sha = Vec::new();
    let mut crc = Vec::new();
    let mut b3 = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let mut h = blake3::Hasher::new();
        for _ in 0..mib {
            h.update(&chunk);
        }
        std::hint::black_box(h.finalize());
        b3.push(mib as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let mut h = sha2::Sha256::new();
        for _ in 0..mib {
            h.update(&chunk);
        }
        std::hint::black_box(h.finalize());
        sha.push(mib as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let mut c = 0u32;
        for _ in 0..mib {
            c = crc32c::crc32c_append(c, &chunk);
        }
        std::hint::black_box(c);
        crc.push(mib as f64 / t.elapsed().as_secs_f64());
    }
    sha.sort_by(f64::total_cmp);
    crc.sort_by(f64::total_cmp);
    b3.sort_by(f64::total_cmp);
    println!(
        "{mib} MiB x {runs}: SHA-256 median {:.0} MiB/s (min {:.0}, max {:.0}); BLAKE3 median {:.0} MiB/s (min {:.0}, max {:.0}); CRC32C median {:.0} MiB/s",
        sha[runs / 2],
        sha[0],
        sha[runs - 1],
        b3[runs / 2],
        b3[0],
        b3[runs - 1],
        crc[runs / 2]
    );
}
