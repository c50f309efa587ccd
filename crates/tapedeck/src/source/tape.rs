//! A tape as a source (`tapedeck replay`, `tail`): [`TapeReader`] behind the [`Source`] trait.
//!
//! The reading itself is the tape's ([`TapeReader::next_record`]); this module only plugs it
//! in. It sits here rather than in `tape/` because the tape is a lower layer than the sources
//! and must not import them (`docs/architecture.md`, `tests/layering.rs`).

use super::Source;
use crate::error::Result;
use crate::record::Record;
use crate::tape::TapeReader;

impl Source for TapeReader {
    fn name(&self) -> &str {
        TapeReader::name(self)
    }

    fn next_record(&mut self) -> Result<Option<Record>> {
        TapeReader::next_record(self)
    }
}
