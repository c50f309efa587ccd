//! `nats://host:port/SUBJECT?stream=S&durable=NAME` — a JetStream durable pull consumer as a
//! source, acknowledging each message to the server only after the tape acknowledged its rows.
//!
//! - **Messages.** `Tapedeck-Format: arrow` (or a payload that is an Arrow IPC stream) gives its
//!   batches; otherwise the payload is one JSON object, one row (`docs/scale-out.md`).
//! - **Provenance columns.** Every row gets `_nats_stream`, `_nats_subject` and `_nats_seq` (the
//!   stream sequence of the message that carried it) and, when the message came from a tapedeck
//!   delivery, `_origin_tape` and `_origin_seq` (the producing tape and the row's sequence
//!   number there; kept as they are when the rows already have them, from an earlier hop).
//! - **Exactly once into a tape.** It runs only with a tape ([`Source::attach_tape`]). A message
//!   is acknowledged to the server after the tape has acknowledged (fsynced) every row it
//!   carried, so a crash at any point loses nothing; messages the server delivers again are
//!   recognised by their stream sequence: those at or before the tape's last `_nats_seq` (of
//!   this stream) are on the tape already and are only acknowledged, and one delivered again
//!   during the run is not yielded twice. Messages are yielded in stream order, so the tape's
//!   rows of this stream are in stream order and "at or before its last one" is exact. For
//!   that, when the tape holds rows of the stream, the durable consumer is made again at
//!   start, delivering from the message after the tape's last one: the tape, not the
//!   consumer's acknowledgements, says where a run goes on (the server would send what a
//!   killed run left unacknowledged only after its `ack_wait`, behind newer messages).
//! - **Ending.** The stream has no end: the source runs until `record` is stopped (Ctrl-C,
//!   `--duration`, `--limit`), or, with `stop_after_idle=DUR`, once no message came for that
//!   long (after waiting for the tape to acknowledge what it yielded).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::message::Acker;
use futures_util::StreamExt;

use super::{Source, TapeLink};
use crate::error::{Error, Result};
use crate::nats::{
    Address, Connection, FORMAT_HEADER, SEQ_HEADER, StreamParams, TAPE_HEADER, connect_error,
};
use crate::record::{Record, Row, Value};
use crate::uri::Uri;

/// The provenance columns, in the order they are added.
pub const STREAM_COLUMN: &str = "_nats_stream";
/// The subject a row's message was published to.
pub const SUBJECT_COLUMN: &str = "_nats_subject";
/// The stream sequence of a row's message.
pub const SEQ_COLUMN: &str = "_nats_seq";
/// The tape a row was first recorded on (from a tapedeck delivery's headers).
pub const ORIGIN_TAPE_COLUMN: &str = "_origin_tape";
/// The row's sequence number on that tape.
pub const ORIGIN_SEQ_COLUMN: &str = "_origin_seq";

/// How many acknowledged stream sequences a run remembers.
const ACKED_KEPT: usize = 1 << 20;

/// What a `nats://` source URI says.
#[derive(Debug, Clone)]
pub struct NatsSourceOptions {
    /// Server and subject (wildcards allowed: a filter).
    pub address: Address,
    /// Stream, how to make it, connection timeout.
    pub stream: StreamParams,
    /// The durable consumer's name (default `tapedeck`).
    pub durable: String,
    /// Messages asked for at a time (default 256).
    pub batch: usize,
    /// How long an unacknowledged message waits before the server sends it again (default 60 s;
    /// rows are acknowledged within a flush interval and an fsync).
    pub ack_wait: Duration,
    /// End the stream once no message came for this long (default: never).
    pub stop_after_idle: Option<Duration>,
}

impl NatsSourceOptions {
    pub(crate) fn from_uri(mut uri: Uri) -> Result<NatsSourceOptions> {
        let address = Address::from_uri(&uri, true)?;
        let stream = StreamParams::from_uri(&mut uri)?;
        let shown = uri.shown().to_string();
        let p = &mut uri.params;
        let durable = p.raw("durable").unwrap_or("tapedeck").to_string();
        let batch = p
            .parse::<usize>("batch", "a number of messages")?
            .unwrap_or(256);
        let ack_wait = p.duration("ack_wait")?.unwrap_or(Duration::from_secs(60));
        let stop_after_idle = p.duration("stop_after_idle")?;
        p.finish()?;
        if durable.is_empty() || durable.contains(['.', '*', '>', ' ']) {
            return Err(Error::BadParam {
                uri: shown,
                param: "durable".into(),
                value: durable,
                expected: "a consumer name without `.`, `*`, `>` or spaces".into(),
            });
        }
        if batch == 0 || ack_wait < Duration::from_secs(1) {
            return Err(Error::BadParam {
                uri: shown,
                param: "batch / ack_wait".into(),
                value: format!("{batch} / {} ms", ack_wait.as_millis()),
                expected: "at least 1 message, and at least 1s".into(),
            });
        }
        Ok(NatsSourceOptions {
            address,
            stream,
            durable,
            batch,
            ack_wait,
            stop_after_idle,
        })
    }
}

/// A message yielded and not yet acknowledged to the server.
struct Awaiting {
    /// Rows yielded this run up to and including this message's.
    through: u64,
    stream_seq: u64,
    acker: Acker,
}

/// The source; see the module docs.
pub struct NatsSource {
    name: String,
    options: NatsSourceOptions,
    conn: Option<(Connection, PullConsumer)>,
    link: Option<TapeLink>,
    /// Every message of the stream up to this stream sequence is on the tape.
    have_through: u64,
    /// The message after those, and how many of its first rows are on the tape too.
    partial: Option<(u64, u64)>,
    /// The stream sequences of the messages acknowledged this run (the newest
    /// [`ACKED_KEPT`]): one delivered again (its acknowledgement lost) is not yielded twice.
    acked: std::collections::BTreeSet<u64>,
    /// The stream sequence of the last message yielded.
    last_yielded: u64,
    /// Rows yielded this run.
    yielded: u64,
    awaiting: VecDeque<Awaiting>,
    ready: VecDeque<Record>,
    last_message: Instant,
}

impl NatsSource {
    pub(crate) fn from_uri(uri: Uri) -> Result<NatsSource> {
        let options = NatsSourceOptions::from_uri(uri)?;
        Ok(NatsSource {
            name: format!(
                "nats://{}/{} (stream {}, consumer {})",
                options.address.server(),
                options.address.subject,
                options.stream.stream,
                options.durable
            ),
            options,
            conn: None,
            link: None,
            have_through: 0,
            partial: None,
            acked: std::collections::BTreeSet::new(),
            last_yielded: 0,
            yielded: 0,
            awaiting: VecDeque::new(),
            ready: VecDeque::new(),
            last_message: Instant::now(),
        })
    }

    /// Connects, and makes the durable consumer afresh at a known position, so that a run's
    /// first deliveries come in stream order: after the tape's last message of this stream
    /// when the tape holds one; else after the existing consumer's acknowledgement floor
    /// (everything at or below it was on a tape before it was acknowledged); else from the
    /// stream's start. (Kept as it was, the server would send what a killed run left
    /// unacknowledged only after its `ack_wait`, behind newer messages.) An existing consumer
    /// that filters another subject is refused, not replaced.
    fn connect(&mut self) -> Result<()> {
        use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
        let o = &self.options;
        let conn = Connection::open(&o.address, o.stream.connect_timeout)?;
        let stream = conn.stream(
            &o.stream.stream,
            &o.address.subject,
            o.stream.create.as_ref(),
        )?;
        let existing = conn.block_on(stream.consumer_info(&o.durable)).ok();
        if let Some(info) = &existing
            && info.config.filter_subject != o.address.subject
        {
            return Err(Error::InvalidOption {
                option: "durable",
                message: format!(
                    "consumer `{}` of stream `{}` filters `{}`, not `{}`; name another durable consumer",
                    o.durable, o.stream.stream, info.config.filter_subject, o.address.subject
                ),
            });
        }
        let from_tape = self.partial.is_some();
        let start = if from_tape {
            Some(self.have_through.saturating_add(1))
        } else {
            existing
                .as_ref()
                .map(|info| info.ack_floor.stream_sequence.saturating_add(1))
        };
        if existing.is_some() {
            conn.block_on(stream.delete_consumer(&o.durable))
                .map_err(|e| {
                    connect_error(
                        &conn.server,
                        format!("cannot reset consumer `{}`: {e}", o.durable),
                    )
                })?;
        }
        let config = pull::Config {
            durable_name: Some(o.durable.clone()),
            filter_subject: o.address.subject.clone(),
            ack_policy: AckPolicy::Explicit,
            ack_wait: o.ack_wait,
            max_ack_pending: 100_000,
            deliver_policy: match start {
                Some(start_sequence) if start_sequence > 1 => {
                    DeliverPolicy::ByStartSequence { start_sequence }
                }
                _ => DeliverPolicy::All,
            },
            ..pull::Config::default()
        };
        let consumer: PullConsumer =
            conn.block_on(stream.create_consumer(config)).map_err(|e| {
                connect_error(
                    &conn.server,
                    format!("cannot make consumer `{}`: {e}", o.durable),
                )
            })?;
        self.conn = Some((conn, consumer));
        Ok(())
    }

    /// Acknowledges to the server every message whose rows the tape has acknowledged.
    fn acknowledge_durable(&mut self) -> Result<()> {
        let Some(link) = &self.link else {
            return Ok(());
        };
        let durable = link.acknowledged_rows();
        let mut done = Vec::new();
        while self.awaiting.front().is_some_and(|a| a.through <= durable) {
            if let Some(a) = self.awaiting.pop_front() {
                self.acked.insert(a.stream_seq);
                if self.acked.len() > ACKED_KEPT {
                    self.acked.pop_first();
                }
                done.push(a.acker);
            }
        }
        self.ack_all(done)
    }

    fn ack_all(&self, ackers: Vec<Acker>) -> Result<()> {
        if ackers.is_empty() {
            return Ok(());
        }
        let Some((conn, _)) = &self.conn else {
            return Ok(());
        };
        conn.block_on(async {
            for a in &ackers {
                a.ack().await.map_err(|e| {
                    connect_error(&conn.server, format!("acknowledging a message: {e}"))
                })?;
            }
            Ok(())
        })
    }

    /// Asks the server for the next messages (waiting at most 200 ms) and turns them into
    /// records.
    fn fetch(&mut self) -> Result<()> {
        let Some((conn, consumer)) = &self.conn else {
            return Ok(());
        };
        let messages = conn.block_on(async {
            let mut batch = consumer
                .batch()
                .max_messages(self.options.batch)
                .expires(Duration::from_millis(200))
                .messages()
                .await
                .map_err(|e| connect_error(&conn.server, format!("fetching: {e}")))?;
            let mut out = Vec::new();
            while let Some(m) = batch.next().await {
                match m {
                    Ok(m) => out.push(m),
                    // A server going away mid-fetch: what came is kept, the rest comes again.
                    Err(e) => {
                        tracing::warn!("{}: fetching: {e}; asking again", self.name);
                        break;
                    }
                }
            }
            Ok::<_, Error>(out)
        })?;
        let mut ack_now = Vec::new();
        for m in messages {
            let seq = m
                .info()
                .map(|i| i.stream_sequence)
                .map_err(|e| Error::MalformedMessage {
                    source_name: self.name.clone(),
                    seq: 0,
                    message: format!("no JetStream metadata: {e}"),
                })?;
            self.last_message = Instant::now();
            let (message, acker) = m.split();
            if seq <= self.have_through {
                // On the tape already (a run before acknowledged it late, or not at all).
                ack_now.push(acker);
                continue;
            }
            if seq <= self.last_yielded {
                // Sent again during this run: yielded already and awaiting the tape (it is
                // acknowledged then), or yielded and acknowledged (an acknowledgement lost:
                // again). One never received (a fetch cut short, a connection lost with it in
                // transit) is yielded now, after newer ones.
                if self.awaiting.iter().any(|a| a.stream_seq == seq) {
                    continue;
                }
                if self.acked.contains(&seq) {
                    ack_now.push(acker);
                    continue;
                }
            }
            let skip = match self.partial {
                Some((p, rows)) if p == seq => rows,
                _ => 0,
            };
            let rows = self.decode(&message, seq, skip)?;
            if rows == 0 {
                // Wholly on the tape already.
                ack_now.push(acker);
                self.last_yielded = seq;
                continue;
            }
            self.last_yielded = seq;
            self.yielded = self.yielded.saturating_add(rows);
            self.awaiting.push_back(Awaiting {
                through: self.yielded,
                stream_seq: seq,
                acker,
            });
        }
        self.ack_all(ack_now)
    }

    /// Queues the records of one message but its first `skip` rows (on the tape already);
    /// returns the rows queued.
    fn decode(&mut self, m: &async_nats::Message, seq: u64, skip: u64) -> Result<u64> {
        let header = |name: &str| {
            m.headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_string())
        };
        let origin_tape = header(TAPE_HEADER);
        let origin_first = header(SEQ_HEADER).and_then(|s| s.parse::<u64>().ok());
        let arrow = match header(FORMAT_HEADER).as_deref() {
            Some("arrow") => true,
            Some(_) => false,
            // An Arrow IPC stream starts with the continuation marker.
            None => m.payload.starts_with(&[0xff, 0xff, 0xff, 0xff]),
        };
        let bad = |message: String| Error::MalformedMessage {
            source_name: self.name.clone(),
            seq,
            message,
        };
        let provenance = Provenance {
            stream: &self.options.stream.stream,
            subject: m.subject.as_str(),
            seq,
            origin_tape: origin_tape.as_deref(),
            origin_first,
        };
        if arrow {
            let batches = crate::nats::decode_arrow(&m.payload)
                .map_err(|e| bad(format!("not an Arrow IPC stream: {e}")))?;
            let (mut offset, mut queued) = (0u64, 0u64);
            for b in batches {
                let n = b.num_rows() as u64;
                // Rows of this batch still to drop.
                let drop = skip.saturating_sub(offset).min(n);
                offset = offset.saturating_add(n);
                if drop == n {
                    continue;
                }
                let (from, len) = (drop as usize, (n - drop) as usize);
                let with = provenance.add_to_batch(&b.slice(from, len), offset - n + drop)?;
                queued = queued.saturating_add(with.num_rows() as u64);
                self.ready.push_back(Record::Batch(with));
            }
            return Ok(queued);
        }
        if skip > 0 {
            return Ok(0);
        }
        let text = std::str::from_utf8(&m.payload)
            .map_err(|_| bad("neither Arrow nor UTF-8 JSON".into()))?;
        let mut row = super::lines::json_row(text.trim()).map_err(bad)?;
        provenance.add_to_row(&mut row);
        self.ready.push_back(Record::Row(row));
        Ok(1)
    }

    /// Waits (up to 5 s) for the tape to acknowledge everything yielded, then acknowledges it.
    fn settle_before_end(&mut self) -> Result<()> {
        let until = Instant::now() + Duration::from_secs(5);
        while !self.awaiting.is_empty() && Instant::now() < until {
            self.acknowledge_durable()?;
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

/// Where the rows of one message came from.
struct Provenance<'a> {
    stream: &'a str,
    subject: &'a str,
    seq: u64,
    origin_tape: Option<&'a str>,
    origin_first: Option<u64>,
}

impl Provenance<'_> {
    /// `batch` with the provenance columns; `offset` rows of the message came before it.
    fn add_to_batch(&self, batch: &RecordBatch, offset: u64) -> Result<RecordBatch> {
        let n = batch.num_rows();
        let schema = batch.schema();
        let has = |name: &str| schema.index_of(name).is_ok();
        let mut fields: Vec<Arc<Field>> = Vec::with_capacity(schema.fields().len() + 5);
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(fields.capacity());
        let keep_origin = has(ORIGIN_TAPE_COLUMN) && has(ORIGIN_SEQ_COLUMN);
        for (f, c) in schema.fields().iter().zip(batch.columns()) {
            let ours = [STREAM_COLUMN, SUBJECT_COLUMN, SEQ_COLUMN].contains(&f.name().as_str())
                || (!keep_origin
                    && [ORIGIN_TAPE_COLUMN, ORIGIN_SEQ_COLUMN].contains(&f.name().as_str()));
            if !ours {
                fields.push(f.clone());
                columns.push(c.clone());
            }
        }
        let text = |name: &str, v: Option<&str>| {
            (
                Arc::new(Field::new(name, DataType::Utf8, true)),
                Arc::new(StringArray::from(vec![v; n])) as ArrayRef,
            )
        };
        let mut add = |(f, c): (Arc<Field>, ArrayRef)| {
            fields.push(f);
            columns.push(c);
        };
        add(text(STREAM_COLUMN, Some(self.stream)));
        add(text(SUBJECT_COLUMN, Some(self.subject)));
        add((
            Arc::new(Field::new(SEQ_COLUMN, DataType::Int64, true)),
            Arc::new(Int64Array::from(vec![as_i64(self.seq); n])),
        ));
        if !keep_origin {
            add(text(ORIGIN_TAPE_COLUMN, self.origin_tape));
            let first = self.origin_first.map(|f| f.saturating_add(offset));
            let seqs: Int64Array = (0..n as u64)
                .map(|i| first.map(|f| as_i64(f.saturating_add(i))))
                .collect();
            add((
                Arc::new(Field::new(ORIGIN_SEQ_COLUMN, DataType::Int64, true)),
                Arc::new(seqs),
            ));
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| Error::arrow("adding the NATS provenance columns", e))
    }

    /// The row with the provenance fields: `_nats_*` set (replacing an earlier hop's),
    /// `_origin_*` kept when the row has them from an earlier hop.
    fn add_to_row(&self, row: &mut Row) {
        row.set(STREAM_COLUMN, Value::Text(self.stream.to_string()));
        row.set(SUBJECT_COLUMN, Value::Text(self.subject.to_string()));
        row.set(SEQ_COLUMN, Value::Int(as_i64(self.seq)));
        if row.get(ORIGIN_TAPE_COLUMN).is_none() || row.get(ORIGIN_SEQ_COLUMN).is_none() {
            row.set(
                ORIGIN_TAPE_COLUMN,
                self.origin_tape
                    .map_or(Value::Null, |t| Value::Text(t.to_string())),
            );
            row.set(
                ORIGIN_SEQ_COLUMN,
                self.origin_first
                    .map_or(Value::Null, |s| Value::Int(as_i64(s))),
            );
        }
    }
}

impl Source for NatsSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn attach_tape(&mut self, link: TapeLink) -> Result<()> {
        if let Some((seq, rows)) =
            link.last_run(SEQ_COLUMN, STREAM_COLUMN, &self.options.stream.stream)?
        {
            // The last message may be on the tape in part: it comes again, and its first
            // `rows` rows are dropped then.
            self.have_through = seq.saturating_sub(1);
            self.partial = Some((seq, rows));
            self.last_yielded = self.have_through;
        }
        self.link = Some(link);
        Ok(())
    }

    fn next_record(&mut self) -> Result<Option<Record>> {
        if self.link.is_none() {
            return Err(super::needs_a_tape(&self.name, "nats"));
        }
        if self.conn.is_none() {
            self.connect()?;
            self.last_message = Instant::now();
        }
        loop {
            self.acknowledge_durable()?;
            if let Some(r) = self.ready.pop_front() {
                return Ok(Some(r));
            }
            if let Some(idle) = self.options.stop_after_idle
                && self.last_message.elapsed() >= idle
            {
                self.settle_before_end()?;
                return Ok(None);
            }
            self.fetch()?;
        }
    }
}

/// A sequence number as the `Int64` column holding it (they stay far below 2^63).
fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
