//! `file:PATH.dt-raw` — a raw-counts file as a source: [`DtRawSource`] behind the [`Source`]
//! trait.
//!
//! The reading itself is the format's ([`DtRawSource::next_record`]); this module only plugs it
//! in. It sits here rather than in `dtraw/` because the format is a lower layer than the sources
//! and must not import them (`docs/architecture.md`, `tests/layering.rs`).

use super::Source;
use crate::dtraw::DtRawSource;
use crate::error::Result;
use crate::record::Record;

impl Source for DtRawSource {
    fn name(&self) -> &str {
        DtRawSource::name(self)
    }

    fn next_record(&mut self) -> Result<Option<Record>> {
        DtRawSource::next_record(self)
    }
}
