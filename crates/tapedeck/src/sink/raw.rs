//! `raw:PATH` — DAQ blocks' raw converter codes, losslessly, in dtollib's `.dt-raw` v2 format.
//!
//! The file is byte-compatible with dtollib's `RawCountsSink` (see [`crate::dtraw`]): the same
//! framing, header and chunk header keys in the same order, the same JSON text, the flags
//! `overrun_marker` and `partial`, and the valid samples' codes as the payload. On top, as
//! dtollib's design planned: each channel entry carries `range`, `gain` and `encoding` when the
//! block's channels have a scale, so the codes read back as volts; a block that reports an
//! overrun and carries no samples becomes a zero-payload chunk; and `close` ends the file with a
//! zero-payload chunk flagged `final`, so a reader can tell a complete recording from one that
//! was cut off.
//!
//! Each chunk (length, header, payload) reaches the file in one `write(2)`. Durability follows
//! `fsync=` as for the tape: `never`, `always` (an `fdatasync` after every chunk), or
//! `interval:DUR` (default `interval:10ms`: a background thread runs `fdatasync` every DUR
//! while there are new chunks, so the writer never waits on the disk; and one at close). A
//! background `fdatasync` that fails is the error of the next write, flush or close — never
//! dropped. Under a delivery from a tape every cursor commit also fdatasyncs the file first,
//! whatever `fsync=` says. Parameters: `overwrite=true`, `fsync=`. Rows are refused: this sink
//! takes blocks with raw codes.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;

use super::descriptor::{OVERWRITE, ParamDescriptor, SinkDescriptor};
use super::file::{Created, FileOptions};
use super::resume::ResumeBy;
use super::spec::{AtPath, Claims, SinkConfig, claims_file};
use super::{Lifecycle, Sink, SinkStats};
use crate::dtraw::{ChunkHeader, Dtype, FLAG_FINAL, FLAG_OVERRUN, FLAG_PARTIAL, FileHeader};
use crate::durability::FsyncPolicy;
use crate::error::{Error, Result};
use crate::record::{Block, RawCodes};
use crate::uri::Uri;

/// `raw:PATH`; see [`super::descriptor`].
pub const DESCRIPTOR: SinkDescriptor = SinkDescriptor {
    schemes: &["raw"],
    usage: "raw:PATH",
    example: "raw:run.dt-raw",
    summary: "DAQ blocks' raw codes as .dt-raw v2 (dtollib-compatible, with per-channel \
              ranges, a final marker, overruns as zero-payload chunks); overwrite, \
              fsync=always|never|interval:DUR (interval:10ms)",
    path_example: Some("run.dt-raw"),
    params: &[
        OVERWRITE,
        ParamDescriptor {
            name: "fsync",
            kind: "always|never|interval:DUR",
            default: "interval:10ms",
            doc: "when the file is fdatasynced",
        },
    ],
    feature: None,
    compiled_in: true,
    parse: Some(parse),
};

/// Options of the raw sink.
#[derive(Debug, Clone)]
pub struct RawOptions {
    /// Overwrite behaviour.
    pub file: FileOptions,
    /// When chunks are fdatasynced.
    pub fsync: FsyncPolicy,
}

impl Default for RawOptions {
    fn default() -> Self {
        RawOptions {
            file: FileOptions::default(),
            fsync: FsyncPolicy::Interval(Duration::from_millis(10)),
        }
    }
}

/// The raw-counts sink; see the module docs.
#[derive(Debug)]
pub struct RawSink {
    life: Lifecycle,
    file: File,
    path: PathBuf,
    options: RawOptions,
    header: Option<FileHeader>,
    seq: u64,
    buf: Vec<u8>,
    /// `fsync=interval:…`: the thread that syncs behind the writer.
    syncer: Option<Syncer>,
    /// Sample index, monotonic and UTC time just after the last block (for the final marker).
    end: (u64, i64, i64),
    rows: u64,
    bytes: u64,
    /// What opening created, removed again if the run fails before a chunk is written.
    created: Created,
}

impl RawSink {
    /// Creates the file at `path` (refusing an existing one unless `overwrite`).
    pub fn create(path: impl AsRef<Path>, options: RawOptions) -> Result<RawSink> {
        let path = path.as_ref();
        let mut opened = options.file.open(path, false)?;
        let created = std::mem::take(&mut opened.created);
        Ok(RawSink {
            life: Lifecycle::new(format!("raw:{}", path.display())),
            file: opened.file,
            path: path.to_path_buf(),
            options,
            header: None,
            seq: 0,
            buf: Vec::with_capacity(1 << 20),
            syncer: None,
            end: (0, 0, 0),
            rows: 0,
            bytes: 0,
            created,
        })
    }

    /// Opens `path` to add chunks to it (a delivery resuming): an empty or missing file starts
    /// fresh; otherwise its header is kept, chunk numbers continue, and a trailing `final`
    /// marker is cut off (the recording goes on). Only chunk headers are read (payloads are
    /// skipped). A file whose chunks do not all read is an error naming where they stop.
    pub fn append(path: impl AsRef<Path>, options: RawOptions) -> Result<RawSink> {
        let path = path.as_ref();
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let mut sink = RawSink::create(
            path,
            RawOptions {
                file: FileOptions {
                    overwrite: false,
                    append: true,
                },
                ..options
            },
        )?;
        if len == 0 {
            return Ok(sink);
        }
        let mut reader = crate::dtraw::DtRawReader::open(path)?;
        let mut last: Option<(u64, u64, bool)> = None; // (seq, offset, final)
        while let Some((header, offset)) = reader.next_chunk_header()? {
            let is_final =
                header.valid_samples == 0 && header.flags.iter().any(|f| f == FLAG_FINAL);
            last = Some((header.seq, offset, is_final));
        }
        if let Some(stop) = reader.stop() {
            return Err(Error::Tape {
                path: path.to_path_buf(),
                message: format!(
                    "cannot add to this .dt-raw file: its chunks stop reading at byte {} ({}); salvage it with `tapedeck import` first",
                    stop.offset, stop.reason
                ),
            });
        }
        match last {
            Some((seq, offset, true)) => {
                sink.file
                    .set_len(offset)
                    .map_err(|e| Error::io("truncate", path, e))?;
                sink.seq = seq;
            }
            Some((seq, _, false)) => sink.seq = seq + 1,
            None => {}
        }
        sink.header = Some(reader.header().clone());
        Ok(sink)
    }

    /// Reads the options from a URI's parameters.
    pub(crate) fn options_from_uri(uri: &mut Uri) -> Result<RawOptions> {
        let file = FileOptions::from_params(&mut uri.params, false)?;
        let fsync = match uri.params.raw("fsync").map(str::to_string) {
            None => RawOptions::default().fsync,
            Some(v) => v.parse().map_err(|expected: String| Error::BadParam {
                uri: uri.params.uri().to_string(),
                param: "fsync".into(),
                value: v.clone(),
                expected,
            })?,
        };
        uri.params.finish()?;
        Ok(RawOptions { file, fsync })
    }

    fn file_header(block: &Block, dtype: Dtype) -> FileHeader {
        let period = block.effective_period_ns();
        FileHeader {
            task: block.task.clone(),
            device: block.device.clone(),
            channels: block.channels.clone(),
            sample_rate_hz: if period > 0 { 1e9 / period as f64 } else { 0.0 },
            block_period_ns: period,
            dtype,
            samples_per_buffer: block.samples,
            task_started_at: crate::dtraw::py_isoformat(
                block.t_utc_us - block.t_mono_ns.div_euclid(1000),
            ),
            metadata_json: "{}".into(),
        }
    }

    /// Appends one chunk (length, header, payload) to `buf`.
    fn push_chunk(&mut self, header: &ChunkHeader, codes: Option<&RawCodes>) {
        frame(&mut self.buf, &header.to_json());
        // Filled in place, slice by slice: the compiler turns this into a plain copy on a
        // little-endian machine.
        let at = self.buf.len();
        match codes {
            Some(RawCodes::I16(v)) => {
                self.buf.resize(at + 2 * v.len(), 0);
                for (d, c) in self.buf[at..].chunks_exact_mut(2).zip(v) {
                    d.copy_from_slice(&c.to_le_bytes());
                }
            }
            Some(RawCodes::I32(v)) => {
                self.buf.resize(at + 4 * v.len(), 0);
                for (d, c) in self.buf[at..].chunks_exact_mut(4).zip(v) {
                    d.copy_from_slice(&c.to_le_bytes());
                }
            }
            None => {}
        }
    }

    /// Writes `buf` in one call and applies the fsync policy: `always` syncs here; `interval`
    /// leaves it to the syncer thread, so the writer never waits on the disk; `force_sync`
    /// (close) syncs here under any policy but `never`.
    fn emit(&mut self, force_sync: bool) -> Result<()> {
        if let Some(s) = &self.syncer
            && let Some(e) = s.take_error()
        {
            return Err(Error::io("fdatasync", &self.path, e));
        }
        self.file
            .write_all(&self.buf)
            .map_err(|e| Error::io("write", &self.path, e))?;
        self.bytes += self.buf.len() as u64;
        self.buf.clear();
        match self.options.fsync {
            FsyncPolicy::Always => self.sync()?,
            FsyncPolicy::Never => {}
            FsyncPolicy::Interval(d) => {
                if force_sync {
                    self.sync()?;
                } else {
                    if self.syncer.is_none() {
                        let file = self
                            .file
                            .try_clone()
                            .map_err(|e| Error::io("open a second handle on", &self.path, e))?;
                        self.syncer = Some(Syncer::start(file, d).map_err(|e| {
                            Error::io("start the fdatasync thread for", &self.path, e)
                        })?);
                    }
                    if let Some(s) = &self.syncer {
                        s.mark_dirty();
                    }
                }
            }
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io("fdatasync", &self.path, e))?;
        Ok(())
    }
}

impl Sink for RawSink {
    fn name(&self) -> &str {
        self.life.name()
    }

    /// Takes batches in the wide block layout (as a tape holds blocks) and writes the blocks
    /// they were made from; other batches are refused.
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.life.check_open()?;
        let r = match Block::from_wide_batch(batch) {
            Ok(Some(blocks)) => blocks.iter().try_for_each(|b| self.write_block(b)),
            Ok(None) => Err(Error::Unsupported {
                sink: self.life.name().to_string(),
                what: "raw: stores DAQ blocks' raw codes, not rows; record a block source (e.g. `sim:daq?raw=true`) or choose another sink".into(),
            }),
            Err(e) => Err(e),
        };
        self.life.watch(r)
    }

    fn write_block(&mut self, block: &Block) -> Result<()> {
        self.life.check_open()?;
        let r = self.chunk(block);
        self.life.watch(r)
    }

    /// Chunks are in the file as soon as they are written; the syncer thread makes them durable.
    fn flush(&mut self) -> Result<()> {
        self.life.check_open()?;
        let r = match self.syncer.as_ref().and_then(Syncer::take_error) {
            Some(e) => Err(Error::io("fdatasync", &self.path, e)),
            None => Ok(()),
        };
        self.life.watch(r)
    }

    fn abandon(&mut self) {
        self.life.abandon();
    }

    fn close(&mut self) -> Result<()> {
        if !self.life.begin_close() {
            return Ok(());
        }
        if self.life.failed() && self.bytes == 0 && self.created.has_file() {
            // The run failed before a chunk reached this file: the file it made goes again.
            self.buf.clear();
            if let Some(s) = self.syncer.take() {
                let _ = s.stop();
            }
            return self.created.remove(&[]);
        }
        self.created.keep();
        self.finish()
    }

    fn stats(&self) -> SinkStats {
        SinkStats {
            rows: self.rows,
            bytes: self.bytes,
            pending: 0,
        }
    }
}

impl RawSink {
    /// One block as one chunk (and the file header before the first).
    fn chunk(&mut self, block: &Block) -> Result<()> {
        block.validate()?;
        let overrun_only = block.error.is_some() && block.samples == 0;
        let codes = match (&block.raw, overrun_only) {
            (Some(c), _) => Some(c),
            (None, true) => None,
            (None, false) => {
                return Err(Error::InvalidBlock {
                    device: block.device.clone(),
                    block_index: block.block_index,
                    message: format!(
                        "{} needs raw codes and this block has none (for sim:daq add `raw=true`)",
                        self.life.name()
                    ),
                });
            }
        };
        let dtype = match codes {
            Some(RawCodes::I16(_)) | None => Dtype::I16,
            Some(RawCodes::I32(_)) => Dtype::I32,
        };
        match &self.header {
            None => {
                let header = Self::file_header(block, dtype);
                frame(&mut self.buf, &header.to_json());
                self.header = Some(header);
            }
            Some(h)
                if codes.is_some()
                    && (h.dtype != dtype || h.channels.len() != block.channels.len()) =>
            {
                return Err(Error::InvalidBlock {
                    device: block.device.clone(),
                    block_index: block.block_index,
                    message: format!(
                        "{}: the file holds {} channels of {}; this block has {} channels of {}",
                        self.life.name(),
                        h.channels.len(),
                        h.dtype.name(),
                        block.channels.len(),
                        dtype.name()
                    ),
                });
            }
            Some(_) => {}
        }
        let capacity = self.header.as_ref().map_or(0, |h| h.samples_per_buffer);
        let mut flags = Vec::new();
        if block.error.is_some() {
            flags.push(FLAG_OVERRUN.to_string());
        }
        if block.samples < capacity && !overrun_only {
            flags.push(FLAG_PARTIAL.to_string());
        }
        let header = ChunkHeader {
            seq: self.seq,
            event_kind: if flags.is_empty() {
                "buffer_done"
            } else {
                "buffer_done_with_flags"
            }
            .into(),
            first_sample_index: block.first_sample_index,
            valid_samples: block.samples,
            buffer_capacity: capacity.max(block.samples),
            t_mono_ns: block.t_mono_ns,
            t_utc: crate::dtraw::py_isoformat(block.t_utc_us),
            flags,
        };
        self.push_chunk(&header, codes);
        self.emit(false)?;
        self.seq += 1;
        self.rows += block.samples as u64;
        let span = block.effective_period_ns() * block.samples as i64;
        self.end = (
            block.first_sample_index + block.samples as u64,
            block.t_mono_ns + span,
            block.t_utc_us + span.div_euclid(1000),
        );
        Ok(())
    }

    /// Ends the file with the `final` marker.
    fn finish(&mut self) -> Result<()> {
        // A background fdatasync that failed is this close's error: the chunks it should have
        // made durable may be gone after a power failure, and a later fdatasync that succeeds
        // does not bring them back (the kernel reports a writeback error once). The file then
        // gets no `final` marker: a reader sees a recording that was cut off.
        if let Some(e) = self.syncer.take().and_then(Syncer::stop) {
            return Err(Error::io("fdatasync", &self.path, e));
        }
        if let Some(h) = &self.header {
            let capacity = h.samples_per_buffer;
            let header = ChunkHeader {
                seq: self.seq,
                event_kind: "buffer_done_with_flags".into(),
                first_sample_index: self.end.0,
                valid_samples: 0,
                buffer_capacity: capacity,
                t_mono_ns: self.end.1,
                t_utc: crate::dtraw::py_isoformat(self.end.2),
                flags: vec![FLAG_FINAL.to_string()],
            };
            self.push_chunk(&header, None);
            self.seq += 1;
            let sync = self.options.fsync != FsyncPolicy::Never;
            self.emit(sync)?;
        }
        Ok(())
    }
}

/// `u32 LE length | JSON`, the framing of both header kinds.
fn frame(buf: &mut Vec<u8>, json: &str) {
    buf.extend_from_slice(&(json.len() as u32).to_le_bytes());
    buf.extend_from_slice(json.as_bytes());
}

/// fdatasync on its own thread, at most once per interval, while there are writes to cover.
#[derive(Debug)]
struct Syncer {
    shared: std::sync::Arc<SyncShared>,
    handle: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct SyncShared {
    dirty: std::sync::atomic::AtomicBool,
    stop: std::sync::atomic::AtomicBool,
    error: std::sync::Mutex<Option<std::io::Error>>,
}

impl Syncer {
    /// Starts the thread; an error if the system cannot start one (then nothing would ever be
    /// synced, which must not pass in silence).
    fn start(file: File, interval: Duration) -> std::io::Result<Syncer> {
        use std::sync::atomic::Ordering;
        let shared = std::sync::Arc::new(SyncShared::default());
        let s = shared.clone();
        let handle = std::thread::Builder::new()
            .name("raw-sync".into())
            .spawn(move || {
                while !s.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(interval);
                    if s.dirty.swap(false, Ordering::SeqCst)
                        && let Err(e) = file.sync_data()
                    {
                        // The first failure is the one to report; keep it until it is taken.
                        crate::sync::lock(&s.error).get_or_insert(e);
                    }
                }
            })?;
        Ok(Syncer {
            shared,
            handle: Some(handle),
        })
    }

    fn mark_dirty(&self) {
        self.shared
            .dirty
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn take_error(&self) -> Option<std::io::Error> {
        crate::sync::lock(&self.shared.error).take()
    }

    /// Stops the thread and returns a failure it had not reported yet.
    fn stop(mut self) -> Option<std::io::Error> {
        self.shared
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(h) = self.handle.take()
            && h.join().is_err()
        {
            return Some(std::io::Error::other(
                "the fdatasync thread panicked; the last chunks may not be durable",
            ));
        }
        self.take_error()
    }
}

impl Drop for RawSink {
    fn drop(&mut self) {
        self.life.abandon_unless_closed();
        let _ = self.close();
    }
}

/// Reads a `raw:` URI (the registry's `parse`).
fn parse(uri: &mut Uri) -> Result<Arc<dyn SinkConfig>> {
    let options = RawSink::options_from_uri(uri)?;
    Ok(AtPath::config(uri, options))
}

impl SinkConfig for AtPath<RawOptions> {
    fn describe(&self) -> String {
        format!("raw:{}", self.path.display())
    }

    fn claims(&self) -> Claims {
        claims_file(&self.path)
    }

    fn check_free(&self) -> Result<()> {
        self.options.file.check_path(&self.path, false)
    }

    fn open(&self) -> Result<Box<dyn Sink>> {
        Ok(Box::new(RawSink::create(&self.path, self.options.clone())?))
    }

    fn resume_by(&self) -> ResumeBy {
        let options = self.options.clone();
        ResumeBy::truncate_to_cursor(&self.path, self.options.file.overwrite, move |p| {
            RawSink::append(p, options.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_background_fdatasync_is_the_error_of_close() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("run.dt-raw");
        let mut sink = RawSink::create(
            &path,
            RawOptions {
                fsync: FsyncPolicy::Interval(Duration::from_millis(5)),
                ..RawOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let block = crate::source::sim_daq::DaqSim::new(2, 1000.0, 8)
            .with_raw(true)
            .make_block(0, 1_767_225_600_000_000);
        sink.write_block(&block).unwrap_or_else(|e| panic!("{e}"));
        // What the syncer thread records when its fdatasync fails (EIO from the disk).
        let Some(syncer) = &sink.syncer else {
            panic!("fsync=interval starts a syncer at the first chunk");
        };
        *crate::sync::lock(&syncer.shared.error) = Some(std::io::Error::from_raw_os_error(5));
        let e = sink.close().err().map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("fdatasync") && e.contains("run.dt-raw")),
            "close must report the failed background fdatasync, got {e:?}"
        );
    }
}
