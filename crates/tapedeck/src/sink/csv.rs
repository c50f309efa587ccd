//! `csv:PATH` — RFC 4180 text with a header row from the locked schema.
//!
//! Parameters: `overwrite=true` (replace an existing file), `append=true` (add rows to an existing
//! file: its header becomes the locked column order), `accept_blocks=true` (write DAQ blocks as
//! long rows — refused by default because of their size), `strict=true` (an unknown column is an
//! error instead of being dropped with a warning).
//!
//! Values: null is an empty field, an empty string is `""`, timestamps are ISO 8601 UTC with six
//! fractional digits, floats are the shortest text that reads back exactly, NaN / ±inf are
//! `NaN` / `inf` / `-inf`. Rows are encoded into one buffer and handed to the file in a single
//! `write` per flush.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema};

use super::descriptor::{ACCEPT_BLOCKS, APPEND, OVERWRITE, STRICT, SinkDescriptor};
use super::file::{BufferedOutput, Created, FileOptions};
use super::resume::ResumeBy;
use super::spec::{AtPath, Claims, SinkConfig, claims_file};
use super::text::TextEncoder;
use super::{Lifecycle, Sink, SinkStats};
use crate::error::{Error, Result};
use crate::record::{Block, SchemaLock, UnknownColumns};
use crate::uri::Uri;

/// `csv:PATH`; see [`super::descriptor`].
pub const DESCRIPTOR: SinkDescriptor = SinkDescriptor {
    schemes: &["csv"],
    usage: "csv:PATH",
    example: "csv:run.csv",
    summary: "RFC 4180, header from the first batch; overwrite, append, accept_blocks, strict",
    path_example: Some("run.csv"),
    params: &[OVERWRITE, APPEND, ACCEPT_BLOCKS, STRICT],
    feature: None,
    compiled_in: true,
    parse: Some(parse),
};

/// Options of the CSV sink.
#[derive(Debug, Clone, Default)]
pub struct CsvOptions {
    /// Overwrite / append behaviour.
    pub file: FileOptions,
    /// Accept DAQ blocks (as long rows).
    pub accept_blocks: bool,
    /// Unknown columns are an error.
    pub strict: bool,
}

/// The CSV sink; see the module docs.
#[derive(Debug)]
pub struct CsvSink {
    life: Lifecycle,
    out: BufferedOutput,
    options: CsvOptions,
    lock: SchemaLock,
    /// Header of an existing file being appended to.
    existing_header: Option<Vec<String>>,
    header_written: bool,
    encoder: TextEncoder,
    rows: u64,
    /// What opening created, removed again if the run fails before a row is written.
    created: Created,
}

impl CsvSink {
    /// Creates the sink, opening `path` under `options`.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use tapedeck::sink::{Sink, csv::{CsvSink, CsvOptions}};
    /// let path = dir.path().join("run.csv");
    /// let mut sink = CsvSink::create(&path, CsvOptions::default()).unwrap();
    /// sink.close().unwrap();
    /// // A second sink on the same path refuses to overwrite it.
    /// assert!(CsvSink::create(&path, CsvOptions::default()).is_err());
    /// ```
    pub fn create(path: impl AsRef<Path>, options: CsvOptions) -> Result<CsvSink> {
        let path = path.as_ref();
        let mut opened = options.file.open(path, true)?;
        let existing_len = opened.existing_len;
        let created = std::mem::take(&mut opened.created);
        let mut out = BufferedOutput::new(opened);
        let existing_header = if existing_len > 0 {
            Some(read_header_and_fix_tail(
                out.file_mut(),
                path,
                existing_len,
            )?)
        } else {
            None
        };
        let name = format!("csv:{}", path.display());
        let lock = SchemaLock::new(name.clone()).with_unknown_columns(if options.strict {
            UnknownColumns::Error
        } else {
            UnknownColumns::DropWithWarning
        });
        Ok(CsvSink {
            life: Lifecycle::new(name),
            out,
            header_written: existing_header.is_some(),
            existing_header,
            options,
            lock,
            encoder: TextEncoder::default(),
            rows: 0,
            created,
        })
    }

    /// Reads the options from a URI's parameters (all of them, or an error naming the
    /// unknown one).
    pub(crate) fn options_from_uri(uri: &mut Uri) -> Result<CsvOptions> {
        let options = CsvOptions {
            file: FileOptions::from_params(&mut uri.params, true)?,
            accept_blocks: uri.params.flag("accept_blocks")?,
            strict: uri.params.flag("strict")?,
        };
        uri.params.finish()?;
        Ok(options)
    }

    /// The locked schema (after the first write, or from the header when appending).
    pub fn schema_lock(&self) -> &SchemaLock {
        &self.lock
    }

    fn lock_from_existing_header(&mut self, batch: &RecordBatch) -> Result<()> {
        if let Some(header) = self.existing_header.take() {
            // The file's header fixes the column order; types come from the first batch (text
            // for columns the batch lacks — CSV stores text anyway).
            let fields: Vec<Field> = header
                .iter()
                .map(|name| {
                    let dt = batch
                        .schema()
                        .field_with_name(name)
                        .map(|f| f.data_type().clone())
                        .unwrap_or(DataType::Utf8);
                    Field::new(name, dt, true)
                })
                .collect();
            self.lock.lock(&Schema::new(fields))?;
        }
        Ok(())
    }

    fn encode(&mut self, batch: &RecordBatch) -> Result<()> {
        if !self.lock.is_locked() {
            self.lock_from_existing_header(batch)?;
        }
        let batch = self.lock.conform(batch)?;
        if !self.header_written {
            self.push_header(&batch.schema());
        }
        self.encoder.csv(&batch, &mut self.out.buf)?;
        self.rows += batch.num_rows() as u64;
        self.out.write_out_if_large()
    }

    fn push_header(&mut self, schema: &Schema) {
        TextEncoder::csv_header(schema, &mut self.out.buf);
        self.header_written = true;
    }
}

/// Reads the header of an existing CSV file and makes sure the file ends with a newline, so the
/// first appended row does not glue onto a torn last line.
fn read_header_and_fix_tail(file: &mut File, path: &Path, len: u64) -> Result<Vec<String>> {
    let read_err = |e| Error::io("read", path, e);
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let mut first = String::new();
    BufReader::new(&mut *file)
        .read_line(&mut first)
        .map_err(read_err)?;
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(first.as_bytes());
    let header: Vec<String> = match reader.records().next() {
        Some(Ok(rec)) => rec.iter().map(str::to_string).collect(),
        _ => {
            return Err(Error::MalformedInput {
                source_name: path.display().to_string(),
                line: 1,
                message: "cannot append: the existing file has no readable CSV header".into(),
            });
        }
    };
    file.seek(SeekFrom::Start(len - 1)).map_err(read_err)?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last).map_err(read_err)?;
    if last[0] != b'\n' {
        file.write_all(b"\n")
            .map_err(|e| Error::io("write", path, e))?;
    }
    Ok(header)
}

impl Sink for CsvSink {
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
        if !self.header_written
            && let Some(schema) = self.lock.schema().map(Arc::clone)
        {
            // Locked but never written (e.g. schema from elsewhere): still write the header.
            self.push_header(&schema);
        }
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

impl Drop for CsvSink {
    fn drop(&mut self) {
        // Best effort: a sink dropped without close still leaves its rows in the file (and
        // no file at all if it made one and got no row).
        self.life.abandon_unless_closed();
        let _ = self.close();
    }
}
/// Reads a `csv:` URI (the registry's `parse`).
fn parse(uri: &mut Uri) -> Result<Arc<dyn SinkConfig>> {
    let options = CsvSink::options_from_uri(uri)?;
    Ok(AtPath::config(uri, options))
}

impl SinkConfig for AtPath<CsvOptions> {
    fn describe(&self) -> String {
        format!("csv:{}", self.path.display())
    }

    fn claims(&self) -> Claims {
        claims_file(&self.path)
    }

    fn check_free(&self) -> Result<()> {
        self.options.file.check_path(&self.path, true)
    }

    fn open(&self) -> Result<Box<dyn Sink>> {
        Ok(Box::new(CsvSink::create(&self.path, self.options.clone())?))
    }

    fn resume_by(&self) -> ResumeBy {
        // Resumed by appending to what the cursor kept.
        let options = CsvOptions {
            file: FileOptions::APPEND,
            ..self.options.clone()
        };
        ResumeBy::truncate_to_cursor(&self.path, self.options.file.overwrite, move |p| {
            CsvSink::create(p, options.clone())
        })
    }
}
