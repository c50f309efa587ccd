//! A `parquet:` URI read: the layout (one file or rolling parts) and the options, and how each
//! is opened and resumed.

use std::sync::Arc;

use super::{ParquetLayout, ParquetOptions, ParquetSink, parts};
use crate::error::{Error, Result};
use crate::sink::Sink;
use crate::sink::resume::ResumeBy;
use crate::sink::spec::{Claims, SinkConfig, claims_file};
use crate::uri::Uri;

/// A `parquet:` sink's layout and options.
#[derive(Debug, Clone)]
pub struct ParquetConfig {
    /// One file, or rolling parts in a directory (`parquet:DIR/`).
    pub layout: ParquetLayout,
    /// Its options.
    pub options: ParquetOptions,
}

/// Reads a `parquet:` URI (the registry's `parse`).
pub(crate) fn parse(uri: &mut Uri) -> Result<Arc<dyn SinkConfig>> {
    let layout = ParquetLayout::from_path(&uri.path);
    let options = ParquetSink::options_from_uri(uri)?;
    Ok(Arc::new(ParquetConfig { layout, options }))
}

impl SinkConfig for ParquetConfig {
    fn describe(&self) -> String {
        format!("parquet:{}", self.layout.path().display())
    }

    fn claims(&self) -> Claims {
        claims_file(self.layout.path())
    }

    fn check_free(&self) -> Result<()> {
        match &self.layout {
            ParquetLayout::File(path) => self.options.file.check_path(path, false),
            // A new run into a directory continues its part numbers.
            ParquetLayout::Dir(_) => Ok(()),
        }
    }

    fn check_for_delivery(&self) -> Result<()> {
        match &self.layout {
            ParquetLayout::Dir(dir) if parts::holds_foreign_parts(dir) => Err(Error::FileExists {
                path: dir.clone(),
                append_hint: " (a delivery continues a file only from its own cursor file)",
            }),
            _ => Ok(()),
        }
    }

    fn open(&self) -> Result<Box<dyn Sink>> {
        Ok(Box::new(ParquetSink::create(
            self.layout.clone(),
            self.options.clone(),
        )?))
    }

    fn resume_by(&self) -> ResumeBy {
        let mut options = self.options.clone();
        match &self.layout {
            ParquetLayout::File(path) => {
                // Every rebuild writes a new hidden copy.
                options.file.overwrite = true;
                ResumeBy::rebuild_and_rename(path, self.options.file.overwrite, move |p| {
                    ParquetSink::create(ParquetLayout::File(p.to_path_buf()), options.clone())
                })
            }
            ParquetLayout::Dir(dir) => {
                let dir = dir.clone();
                ResumeBy::CursorInTransaction(Box::new(move |tape, start| {
                    parts::open_for_delivery(&dir, options, tape, start)
                }))
            }
        }
    }
}
