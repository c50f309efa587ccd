//! What the benchmark examples share (each includes it with `#[path]`; not an example itself).

use tapedeck::source::sim_alicat::AlicatSim;
use tapedeck::tape::{TapeOptions, TapeWriter};

/// Records `rows` simulated alicat rows onto a new tape in `dir` (removed first), in batches
/// of 64 as `record --batch-size 64` submits them, with `options`.
pub fn record_alicat(dir: &std::path::Path, rows: usize, options: TapeOptions) {
    let _ = std::fs::remove_dir_all(dir);
    let w = TapeWriter::open(dir, options).unwrap_or_else(|e| panic!("{e}"));
    let sim = AlicatSim::new(None, 0.0);
    for first in (0..rows).step_by(64) {
        let b = sim
            .batch(first as u64, 64.min(rows - first))
            .unwrap_or_else(|e| panic!("{e}"));
        w.submit(&b).unwrap_or_else(|e| panic!("{e}"));
    }
    w.close().unwrap_or_else(|e| panic!("{e}"));
}
