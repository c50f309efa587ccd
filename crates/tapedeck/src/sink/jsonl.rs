//! `jsonl:PATH` — one JSON object per line, no schema lock.
//!
//! Each row stands alone, so a device whose rows gain a field simply writes wider objects; keys
//! follow the batch's column order. Null, NaN and ±inf are written as `null` (JSON has no
//! non-finite numbers), timestamps as ISO 8601 UTC strings. Parameters: `overwrite=true`,
//! `append=true`, `accept_blocks=true` (DAQ blocks as long rows; refused by default).

use std::path::Path;
use std::sync::Arc;

use arrow_array::RecordBatch;

use super::descriptor::{ACCEPT_BLOCKS, APPEND, OVERWRITE, SinkDescriptor};
use super::file::{BufferedOutput, Created, FileOptions};
use super::resume::ResumeBy;
use super::spec::{AtPath, Claims, SinkConfig, claims_file};
use super::text::TextEncoder;
use super::{Lifecycle, Sink, SinkStats};
use crate::error::{Error, Result};
use crate::record::Block;
use crate::uri::Uri;

/// `jsonl:PATH` (also `ndjson:`); see [`super::descriptor`].
pub const DESCRIPTOR: SinkDescriptor = SinkDescriptor {
    schemes: &["jsonl", "ndjson"],
    usage: "jsonl:PATH",
    example: "jsonl:run.jsonl",
    summary: "one JSON object per line, no schema lock; overwrite, append, accept_blocks",
    path_example: Some("run.jsonl"),
    params: &[OVERWRITE, APPEND, ACCEPT_BLOCKS],
    feature: None,
    compiled_in: true,
    parse: Some(parse),
};

/// Options of the JSONL sink.
#[derive(Debug, Clone, Default)]
pub struct JsonlOptions {
    /// Overwrite / append behaviour.
    pub file: FileOptions,
    /// Accept DAQ blocks (as long rows).
    pub accept_blocks: bool,
}

/// The JSONL sink; see the module docs.
#[derive(Debug)]
pub struct JsonlSink {
    life: Lifecycle,
    out: BufferedOutput,
    options: JsonlOptions,
    encoder: TextEncoder,
    rows: u64,
    /// What opening created, removed again if the run fails before a row is written.
    created: Created,
}

impl JsonlSink {
    /// Creates the sink, opening `path` under `options`.
    pub fn create(path: impl AsRef<Path>, options: JsonlOptions) -> Result<JsonlSink> {
        let path = path.as_ref();
        let mut opened = options.file.open(path, true)?;
        let created = std::mem::take(&mut opened.created);
        Ok(JsonlSink {
            life: Lifecycle::new(format!("jsonl:{}", path.display())),
            out: BufferedOutput::new(opened),
            options,
            encoder: TextEncoder::default(),
            rows: 0,
            created,
        })
    }

    /// Reads the options from a URI's parameters (all of them, or an error naming the
    /// unknown one).
    pub(crate) fn options_from_uri(uri: &mut Uri) -> Result<JsonlOptions> {
        let options = JsonlOptions {
            file: FileOptions::from_params(&mut uri.params, true)?,
            accept_blocks: uri.params.flag("accept_blocks")?,
        };
        uri.params.finish()?;
        Ok(options)
    }

    fn encode(&mut self, batch: &RecordBatch) -> Result<()> {
        self.encoder.jsonl(batch, &mut self.out.buf)?;
        self.rows += batch.num_rows() as u64;
        self.out.write_out_if_large()
    }
}

impl Sink for JsonlSink {
    fn name(&self) -> &str {
        self.life.name()
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.life.check_open()?;
        let r = self.encode(batch);
        self.life.watch(r)
    }

    fn write_block(&mut self, block: &Block) -> Result<()> {
        self.life.check_open()?;
        let r = if self.options.accept_blocks {
            block.to_long_batch().and_then(|b| self.encode(&b))
        } else {
            Err(Error::BlocksRefused {
                sink: self.life.name().to_string(),
            })
        };
        self.life.watch(r)
    }

    fn flush(&mut self) -> Result<()> {
        self.life.check_open()?;
        let r = self.out.write_out();
        self.life.watch(r)
    }

    fn close(&mut self) -> Result<()> {
        if !self.life.begin_close() {
            return Ok(());
        }
        if self.life.failed() && self.rows == 0 && self.created.has_file() {
            // The run failed before a row reached this sink: the file it made goes again.
            self.out.buf.clear();
            return self.created.remove(&[]);
        }
        self.created.keep();
        self.out.write_out()
    }

    fn abandon(&mut self) {
        self.life.abandon();
    }

    fn stats(&self) -> SinkStats {
        SinkStats {
            rows: self.rows,
            bytes: self.out.bytes,
            pending: 0,
        }
    }
}

impl Drop for JsonlSink {
    fn drop(&mut self) {
        self.life.abandon_unless_closed();
        let _ = self.close();
    }
}
/// Reads a `jsonl:` URI (the registry's `parse`).
fn parse(uri: &mut Uri) -> Result<Arc<dyn SinkConfig>> {
    let options = JsonlSink::options_from_uri(uri)?;
    Ok(AtPath::config(uri, options))
}

impl SinkConfig for AtPath<JsonlOptions> {
    fn describe(&self) -> String {
        format!("jsonl:{}", self.path.display())
    }

    fn claims(&self) -> Claims {
        claims_file(&self.path)
    }

    fn check_free(&self) -> Result<()> {
        self.options.file.check_path(&self.path, true)
    }

    fn open(&self) -> Result<Box<dyn Sink>> {
        Ok(Box::new(JsonlSink::create(
            &self.path,
            self.options.clone(),
        )?))
    }

    fn resume_by(&self) -> ResumeBy {
        // Resumed by appending to what the cursor kept.
        let options = JsonlOptions {
            file: FileOptions::APPEND,
            ..self.options.clone()
        };
        ResumeBy::truncate_to_cursor(&self.path, self.options.file.overwrite, move |p| {
            JsonlSink::create(p, options.clone())
        })
    }
}
