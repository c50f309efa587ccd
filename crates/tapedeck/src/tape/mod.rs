//! The tape: a checksummed, segmented, group-committed log of Arrow record batches.
//!
//! Layout on disk: `docs/tape-format.md`. The pieces, in the order data flows:
//! [`format`](mod@format) (bytes), [`codec`] (Arrow IPC payloads; [`columns`], their coded form), [`storage`] (I/O, with a
//! crashable in-memory double; a top-level module the journal shares), [`writer`] (append, group commit, segment roll, recovery on open),
//! [`manifest`] (the journal), [`segment`] (scans), [`reader`] (positions, follow), [`verify`]
//! (CRCs, hash chain, summary), [`retention`] and [`compact`] (sealed segments removed or
//! rewritten, the history kept provable).
//!
//! This module is the format and its readers and writers only: it knows nothing of sources,
//! sinks or deliveries (the layering test, `tests/layering.rs`, keeps it so). The tape as a
//! sink is `sink::tape::TapeSink`; the tape as a source is `TapeReader`'s `Source`
//! implementation in `source/`.

pub mod acked;
pub mod codec;
pub mod columns;
pub mod compact;
pub mod format;
pub mod frame_cache;
pub mod id;
pub mod manifest;
pub mod reader;
pub mod retention;
pub mod segment;
pub mod verify;
pub mod writer;

pub use crate::durability::FsyncPolicy;

/// The tape directory's run-metadata journal (`tapedeck meta`; `docs/journal-format.md`),
/// which tape readers ignore.
pub const META_FILE: &str = "META";
/// The storage seam moved below the tape (the journal uses it too); this keeps the old path.
pub use crate::storage;
pub use format::Compression;
pub use reader::{StartAt, TapeReader};
pub use writer::{DiskFull, Recovery, SPACE_RESERVE, TapeOptions, TapeWatch, TapeWriter};
