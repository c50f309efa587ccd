//! `ipc:PATH` — an Arrow IPC file (the "Feather v2" format), readable by pyarrow and any Arrow reader.
//!
//! The schema is locked by the first batch (an IPC file has exactly one schema); later batches
//! are conformed to it. Small batches are coalesced into record batches of `batch_rows` rows
//! (default 65,536; `batch_rows=1` writes each batch as it comes): a file of 64-row record batches
//! costs readers a message header per 64 rows, and nothing is lost by waiting, because an IPC file
//! is unreadable until its footer is written by [`Sink::close`] anyway — crash safety for this
//! sink comes with the tape. Memory stays bounded by `batch_rows`. Appending is refused (the
//! footer would have to be rewritten). Parameters: `overwrite=true`, `strict=true`,
//! `batch_rows=N`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_ipc::writer::FileWriter;
use arrow_schema::Schema;

use super::descriptor::{OVERWRITE, ParamDescriptor, STRICT, SinkDescriptor};
use super::file::{Created, FileOptions};
use super::resume::ResumeBy;
use super::spec::{AtPath, Claims, SinkConfig, claims_file};
use super::{HeldBatches, Lifecycle, Sink, SinkStats};
use crate::error::{Error, Result};
use crate::record::{SchemaLock, UnknownColumns};
use crate::uri::Uri;

/// `ipc:PATH` (also `arrow:`); see [`super::descriptor`].
pub const DESCRIPTOR: SinkDescriptor = SinkDescriptor {
    schemes: &["ipc", "arrow"],
    usage: "ipc:PATH",
    example: "ipc:run.arrow",
    summary: "Arrow IPC file (pyarrow.ipc.open_file); overwrite, strict, batch_rows",
    path_example: Some("run.arrow"),
    params: &[
        OVERWRITE,
        STRICT,
        ParamDescriptor {
            name: "batch_rows",
            kind: "rows",
            default: "65536",
            doc: "rows per record batch in the file (small writes are collected)",
        },
    ],
    feature: None,
    compiled_in: true,
    parse: Some(parse),
};

/// Counts bytes on their way to the file.
#[derive(Debug)]
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

type Output = Counting<BufWriter<File>>;

enum State {
    /// File created, schema not known yet.
    Pending(Output),
    Writing(Box<FileWriter<Output>>),
    Done,
}

/// Options of the Arrow IPC sink.
#[derive(Debug, Clone, Default)]
pub struct IpcOptions {
    /// Overwrite behaviour (append is not supported).
    pub file: FileOptions,
    /// Unknown columns are an error.
    pub strict: bool,
    /// Rows per record batch in the file (small writes are coalesced up to this); 0 means the
    /// default, 65,536.
    pub batch_rows: usize,
}

/// Default rows per record batch in the file.
pub const DEFAULT_BATCH_ROWS: usize = 65_536;

/// The Arrow IPC file sink; see the module docs.
pub struct IpcSink {
    life: Lifecycle,
    path: PathBuf,
    state: State,
    lock: SchemaLock,
    batch_rows: usize,
    held: HeldBatches,
    rows: u64,
    bytes: u64,
    /// What opening created, removed again if the run fails before a row is written.
    created: Created,
}

impl std::fmt::Debug for IpcSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpcSink")
            .field("path", &self.path)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl IpcSink {
    /// Creates the sink, opening `path` under `options`.
    pub fn create(path: impl AsRef<Path>, options: IpcOptions) -> Result<IpcSink> {
        let path = path.as_ref();
        let name = format!("ipc:{}", path.display());
        if options.file.append {
            return Err(Error::Unsupported {
                sink: name,
                what: "an Arrow IPC file cannot be appended to (its footer indexes every batch); write a new file".into(),
            });
        }
        let mut opened = options.file.open(path, false)?;
        let created = std::mem::take(&mut opened.created);
        let lock = SchemaLock::new(name.clone()).with_unknown_columns(if options.strict {
            UnknownColumns::Error
        } else {
            UnknownColumns::DropWithWarning
        });
        Ok(IpcSink {
            life: Lifecycle::new(name),
            path: opened.path,
            state: State::Pending(Counting {
                inner: BufWriter::with_capacity(1 << 20, opened.file),
                bytes: 0,
            }),
            lock,
            batch_rows: if options.batch_rows == 0 {
                DEFAULT_BATCH_ROWS
            } else {
                options.batch_rows
            },
            held: HeldBatches::default(),
            rows: 0,
            bytes: 0,
            created,
        })
    }

    /// Reads the options from a URI's parameters (all of them, or an error naming the
    /// unknown one).
    pub(crate) fn options_from_uri(uri: &mut Uri) -> Result<IpcOptions> {
        let options = IpcOptions {
            file: FileOptions::from_params(&mut uri.params, false)?,
            strict: uri.params.flag("strict")?,
            batch_rows: uri
                .params
                .parse::<usize>("batch_rows", "a number of rows per record batch")?
                .unwrap_or(DEFAULT_BATCH_ROWS)
                .max(1),
        };
        uri.params.finish()?;
        Ok(options)
    }

    fn ipc_err(&self, action: &'static str, e: arrow_schema::ArrowError) -> Error {
        match e {
            arrow_schema::ArrowError::IoError(_, io) => Error::io(action, &self.path, io),
            other => Error::arrow(format!("{}: {action}", self.life.name()), other),
        }
    }

    /// Writes the IPC header once the schema is known.
    fn start(&mut self, schema: &Schema) -> Result<()> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Pending(out) => {
                let writer =
                    FileWriter::try_new(out, schema).map_err(|e| self.ipc_err("write", e))?;
                self.state = State::Writing(Box::new(writer));
            }
            other => self.state = other,
        }
        Ok(())
    }

    /// Writes the held batches as one record batch.
    fn write_held(&mut self) -> Result<()> {
        let Some(batch) = self.held.take(self.life.name())? else {
            return Ok(());
        };
        self.start(&batch.schema())?;
        if let State::Writing(w) = &mut self.state {
            let r = w.write(&batch);
            r.map_err(|e| self.ipc_err("write", e))?;
        }
        self.sync_bytes();
        Ok(())
    }

    fn accept(&mut self, batch: &RecordBatch) -> Result<()> {
        let batch = self.lock.conform(batch)?;
        self.rows += batch.num_rows() as u64;
        if self.held.push(batch) >= self.batch_rows {
            self.write_held()?;
        }
        Ok(())
    }

    fn sync_bytes(&mut self) {
        if let State::Writing(w) = &self.state {
            self.bytes = w.get_ref().bytes;
        }
    }
}

impl Sink for IpcSink {
    fn name(&self) -> &str {
        self.life.name()
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.life.check_open()?;
        let r = self.accept(batch);
        self.life.watch(r)
    }

    fn flush(&mut self) -> Result<()> {
        self.life.check_open()?;
        if let State::Writing(w) = &mut self.state {
            let r = w.flush().map_err(|e| self.ipc_err("write", e));
            self.life.watch(r)?;
        }
        self.sync_bytes();
        Ok(())
    }

    fn abandon(&mut self) {
        self.life.abandon();
    }

    fn close(&mut self) -> Result<()> {
        if !self.life.begin_close() {
            return Ok(());
        }
        if self.life.failed() && self.rows == 0 && self.created.has_file() {
            // The run failed before a row reached this sink: the file it made goes again.
            self.state = State::Done;
            return self.created.remove(&[]);
        }
        self.created.keep();
        self.write_held()?;
        if matches!(self.state, State::Pending(_)) {
            // Nothing was written: still leave a readable, empty IPC file.
            self.start(&Schema::empty())?;
        }
        if let State::Writing(mut w) = std::mem::replace(&mut self.state, State::Done) {
            let r = w.finish();
            r.map_err(|e| self.ipc_err("finish", e))?;
            let out = w.into_inner().map_err(|e| self.ipc_err("finish", e))?;
            self.bytes = out.bytes;
            let file = out
                .inner
                .into_inner()
                .map_err(|e| Error::io("write", &self.path, e.into_error()))?;
            drop(file);
        }
        Ok(())
    }

    fn stats(&self) -> SinkStats {
        SinkStats {
            rows: self.rows,
            bytes: self.bytes,
            pending: 0,
        }
    }
}

impl Drop for IpcSink {
    fn drop(&mut self) {
        self.life.abandon_unless_closed();
        let _ = self.close();
    }
}
/// Reads a `ipc:` URI (the registry's `parse`).
fn parse(uri: &mut Uri) -> Result<Arc<dyn SinkConfig>> {
    let options = IpcSink::options_from_uri(uri)?;
    Ok(AtPath::config(uri, options))
}

impl SinkConfig for AtPath<IpcOptions> {
    fn describe(&self) -> String {
        format!("ipc:{}", self.path.display())
    }

    fn claims(&self) -> Claims {
        claims_file(&self.path)
    }

    fn check_free(&self) -> Result<()> {
        self.options.file.check_path(&self.path, false)
    }

    fn open(&self) -> Result<Box<dyn Sink>> {
        Ok(Box::new(IpcSink::create(&self.path, self.options.clone())?))
    }

    fn resume_by(&self) -> ResumeBy {
        // Every rebuild writes a new hidden copy.
        let mut options = self.options.clone();
        options.file.overwrite = true;
        ResumeBy::rebuild_and_rename(&self.path, self.options.file.overwrite, move |p| {
            IpcSink::create(p, options.clone())
        })
    }
}
