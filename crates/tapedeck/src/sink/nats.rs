//! `nats://host:port/SUBJECT?stream=S&format=arrow|jsonl` — NATS JetStream, exactly once from
//! a tape.
//!
//! - **Messages.** `format=arrow` (the default): one message per batch, an Arrow IPC stream,
//!   split so that no message exceeds the server's `max_payload`; `format=jsonl`: one message
//!   per row. Headers and payloads are specified in `docs/scale-out.md` ([`crate::nats`]).
//! - **Exactly once from a tape.** Every message carries `Nats-Msg-Id: <tape id>:<first
//!   sequence number>`, `Tapedeck-Tape`, `Tapedeck-Seq` and `Tapedeck-Rows`. The sink's cursor
//!   is kept by the stream itself: a delivery resumes after the tape's messages on the subject,
//!   walked in order from the last message's `Tapedeck-After` (see below), so no local file can
//!   disagree with the server; a subject whose last message belongs to another tape (or was
//!   not published by tapedeck) is refused — give each recorder its own subject. JetStream's
//!   duplicate window is a second line of defence only.
//! - **Acknowledged.** `flush` publishes what was written with up to `max_in_flight` messages
//!   waiting for their publish acknowledgement, and returns when all are acknowledged: the
//!   cursor moves only over acknowledged messages.
//! - **The server goes away** (a restart, a network cut): the unacknowledged messages are
//!   published again with backoff (100 ms doubling to 5 s) for `retry_for` (5 min) — after
//!   asking the stream for the subject's last message and dropping those it already holds —
//!   while the tape keeps recording; then the sink fails with [`Error::Connect`].
//! - **Without a tape** (the direct path) messages carry no id: at least once.
//! - **Credentials** (`nats://user:password@host`, `nats://token@host`) never appear in a name,
//!   an error or a log line: the sink calls itself `nats://host:port/SUBJECT`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use async_nats::HeaderMap;
use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use bytes::Bytes;

use super::resume::{ResumeBy, WithCursor};
use super::spec::{Claims, SinkConfig};
use super::text::TextEncoder;
use super::{Sink, SinkStats};
use crate::error::{Error, Result};
use crate::nats::{
    AFTER_HEADER, Address, Connection, FORMAT_HEADER, FROM_HEADER, Format, MSG_ID_HEADER,
    ROWS_HEADER, SEQ_HEADER, StreamParams, TAPE_HEADER, connect_error,
};
use crate::uri::Uri;

pub use super::descriptor::NATS as DESCRIPTOR;

/// Room left in a message for its headers.
const HEADER_ROOM: usize = 1024;

/// What a `nats://` sink URI says.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Server and subject.
    pub address: Address,
    /// Stream, how to make it, connection timeout.
    pub stream: StreamParams,
    /// Message payloads (default arrow).
    pub format: Format,
    /// Messages waiting for their publish acknowledgement at most (default 256).
    pub max_in_flight: usize,
    /// How long the sink keeps publishing again to a server that went away (default 5 min).
    pub retry_for: Duration,
}

impl NatsOptions {
    /// Reads a `nats://` URI.
    ///
    /// ```
    /// use tapedeck::sink::nats::NatsOptions;
    /// let o = NatsOptions::from_uri("nats://lab:pw@10.0.0.5/lab.edge1?stream=LAB&format=jsonl").unwrap();
    /// assert_eq!(o.describe(), "nats://10.0.0.5:4222/lab.edge1");
    /// assert!(!format!("{o:?}").contains("pw"));
    /// assert!(NatsOptions::from_uri("nats://10.0.0.5/lab.edge1").is_err()); // no stream
    /// ```
    pub fn from_uri(uri: &str) -> Result<NatsOptions> {
        NatsOptions::from_parsed(&mut Uri::parse(uri)?)
    }

    pub(crate) fn from_parsed(uri: &mut Uri) -> Result<NatsOptions> {
        let address = Address::from_uri(uri, false)?;
        let stream = StreamParams::from_uri(uri)?;
        let shown = uri.shown().to_string();
        let p = &mut uri.params;
        let format = match p.choice("format", &["arrow", "jsonl"])? {
            Some("jsonl") => Format::Jsonl,
            _ => Format::Arrow,
        };
        let max_in_flight = p
            .parse::<usize>("max_in_flight", "a number of messages")?
            .unwrap_or(256);
        let retry_for = p.duration("retry_for")?.unwrap_or(Duration::from_secs(300));
        p.finish()?;
        if max_in_flight == 0 {
            return Err(Error::BadParam {
                uri: shown,
                param: "max_in_flight".into(),
                value: "0".into(),
                expected: "at least 1 message".into(),
            });
        }
        Ok(NatsOptions {
            address,
            stream,
            format,
            max_in_flight,
            retry_for,
        })
    }

    /// `nats://host:port/SUBJECT`: how the sink is named (no credentials).
    pub fn describe(&self) -> String {
        format!("nats://{}/{}", self.address.server(), self.address.subject)
    }
}

/// Reads a `nats://` URI (the registry's `parse`).
pub(crate) fn parse(uri: &mut Uri) -> Result<Arc<dyn SinkConfig>> {
    Ok(Arc::new(NatsOptions::from_parsed(uri)?))
}

impl SinkConfig for NatsOptions {
    fn describe(&self) -> String {
        NatsOptions::describe(self)
    }

    fn claims(&self) -> Claims {
        Claims {
            tables: vec![self.describe()],
            ..Claims::default()
        }
    }

    fn open(&self) -> Result<Box<dyn Sink>> {
        Ok(Box::new(NatsSink::open(self.clone(), None)?))
    }

    fn resume_by(&self) -> ResumeBy {
        let options = self.clone();
        ResumeBy::CursorInTransaction(Box::new(move |tape, start| {
            let sink = NatsSink::open(options, Some((&tape.id, start)))?;
            let resume = sink.committed;
            Ok(WithCursor {
                sink: Box::new(sink),
                resume,
                lock: None,
            })
        }))
    }
}

/// A message written and not yet acknowledged by the stream; `payload: None` marks rows the
/// tape has none for (skipped), which move the cursor without a message.
struct Outgoing {
    payload: Option<Bytes>,
    /// The tape sequence number of its first row, and its rows.
    first: u64,
    rows: u64,
    /// Where the message before it ended: `first`, or less when the rows between have no
    /// rows on the tape (skipped; `Tapedeck-From`).
    from: u64,
}

impl Outgoing {
    /// The tape sequence number after its last row.
    fn end(&self) -> u64 {
        self.first.saturating_add(self.rows)
    }
}

/// Why a pass of publishing stopped.
enum Failure {
    /// Nothing publishing again can mend.
    Fatal(Error),
    /// The server did not acknowledge (away, restarting, timed out): publish again.
    Lost(String),
    /// The stream called a message a duplicate of one that was taken back: publish again
    /// under new message ids.
    Stale,
}

/// This tape's messages on the subject, walked in stream order ([`NatsSink::reconcile`]).
#[derive(Debug, Clone, Copy, Default)]
struct Chain {
    /// The tape sequence number after the chain's last row (`None`: no message).
    end: Option<u64>,
    /// The stream sequence of the chain's last message.
    anchor: Option<u64>,
    /// Messages taken back (off the chain).
    deleted: usize,
}

/// Publishes batches to a JetStream stream; see the module docs.
pub struct NatsSink {
    name: String,
    options: NatsOptions,
    conn: Connection,
    stream: Stream,
    /// The largest payload the server takes, less room for headers.
    max_payload: usize,
    /// The tape delivered, when a delivery.
    tape: Option<String>,
    /// The tape sequence number of the next row written.
    next_seq: u64,
    /// The tape sequence number after the last message queued or in the stream (rows skipped
    /// since are declared by the next message's `Tapedeck-From`).
    chain_end: u64,
    /// The end of the last message the stream acknowledged (in order).
    committed: u64,
    /// The stream sequence of that message: every message of this tape on the subject up to
    /// it is in order, without gaps or duplicates.
    anchor: Option<u64>,
    /// Set once messages were taken back: message ids then carry it, so that the stream's
    /// duplicate window does not drop the messages published again.
    repair: Option<u64>,
    held: VecDeque<Outgoing>,
    encoder: TextEncoder,
    stats: SinkStats,
    closed: bool,
}

impl std::fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSink")
            .field("name", &self.name)
            .field("committed", &self.committed)
            .field("held", &self.held.len())
            .finish()
    }
}

impl NatsSink {
    /// Connects and checks the stream (making it with `create_stream=true`); for a delivery of
    /// `(tape id, start)`, resumes after this tape's last message on the subject — taking back
    /// any a crash left out of order —, or at `start` when the subject holds none.
    pub fn open(options: NatsOptions, delivery: Option<(&str, u64)>) -> Result<NatsSink> {
        let conn = Connection::open(&options.address, options.stream.connect_timeout)?;
        let stream = conn.stream(
            &options.stream.stream,
            &options.address.subject,
            options.stream.create.as_ref(),
        )?;
        let max_payload = conn
            .client
            .server_info()
            .max_payload
            .saturating_sub(HEADER_ROOM)
            .max(HEADER_ROOM);
        let mut sink = NatsSink {
            name: options.describe(),
            options,
            conn,
            stream,
            max_payload,
            tape: delivery.map(|(id, _)| id.to_string()),
            next_seq: 0,
            chain_end: 0,
            committed: 0,
            anchor: None,
            repair: None,
            held: VecDeque::new(),
            encoder: TextEncoder::default(),
            stats: SinkStats::default(),
            closed: false,
        };
        if let Some((_, start)) = delivery {
            let chain = sink.resume_point()?;
            let resume = chain.end.unwrap_or(start);
            sink.next_seq = resume;
            sink.chain_end = resume;
            sink.committed = resume;
            sink.anchor = chain.anchor;
            if chain.deleted > 0 {
                sink.start_repair(chain.deleted);
            }
        }
        Ok(sink)
    }

    /// Where a delivery resumes: the subject's last message names (`Tapedeck-After`) a message
    /// of this tape up to which the stream was in order when it was sent; the chain is walked
    /// from there.
    fn resume_point(&self) -> Result<Chain> {
        let subject = self.options.address.subject.clone();
        let last = self.get(|s| {
            let subject = subject.clone();
            async move { s.get_last_raw_message_by_subject(&subject).await }
        })?;
        let Some(last) = last else {
            return Ok(Chain::default());
        };
        self.ours(&last)?;
        let after = header_number(&last, AFTER_HEADER);
        // The end of the message the chain starts after, when it is still in the stream.
        let expected = match after {
            Some(a) => self
                .get(|s| async move { s.get_raw_message(a).await })?
                .and_then(|m| {
                    Some(
                        header_number(&m, SEQ_HEADER)?
                            .saturating_add(header_number(&m, ROWS_HEADER)?),
                    )
                }),
            None => None,
        };
        self.reconcile(after, expected)
    }

    /// A message of the stream, `None` when there is none (`f` asks for it).
    fn get<F, Fut>(&self, f: F) -> Result<Option<StreamMessage>>
    where
        F: FnOnce(Stream) -> Fut,
        Fut: std::future::Future<
                Output = std::result::Result<
                    StreamMessage,
                    async_nats::jetstream::stream::LastRawMessageError,
                >,
            >,
    {
        match self.conn.block_on(f(self.stream.clone())) {
            Ok(m) => Ok(Some(m)),
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok(None),
            Err(e) => Err(connect_error(
                &self.conn.server,
                format!(
                    "cannot read stream `{}` ({}): {e}",
                    self.options.stream.stream, self.options.address.subject
                ),
            )),
        }
    }

    /// Refuses a message on the subject that is not this tape's.
    fn ours(&self, m: &StreamMessage) -> Result<()> {
        let tape = self.tape.as_deref().unwrap_or_default();
        let subject = &self.options.address.subject;
        let stream = &self.options.stream.stream;
        let message = match m.headers.get(TAPE_HEADER).map(|v| v.as_str()) {
            Some(t)
                if t == tape
                    && header_number(m, SEQ_HEADER).is_some()
                    && header_number(m, ROWS_HEADER).is_some() =>
            {
                return Ok(());
            }
            Some(theirs) => format!(
                "message {} on `{subject}` (stream `{stream}`) comes from tape {theirs}, not from this tape ({tape}); give each recorder its own subject (e.g. lab.edge1, lab.edge2, with a stream over lab.>)",
                m.sequence
            ),
            None => format!(
                "message {} on `{subject}` (stream `{stream}`) was not published by a tapedeck delivery (no {TAPE_HEADER} / {SEQ_HEADER} / {ROWS_HEADER} headers), so where this tape's rows end cannot be told; deliver to a subject of its own",
                m.sequence
            ),
        };
        Err(Error::Delivery {
            sink: self.name.clone(),
            message,
        })
    }

    /// Walks this tape's messages on the subject after stream sequence `anchor` (from the
    /// first when `None`): each must start where the one before ended (`expected`, or where
    /// the first one starts when `None`). A message off that chain — rows sent before (a
    /// duplicate) or after a gap (a message lost in a reconnect while the next one got
    /// through) — is taken back (deleted from the stream), so the stream holds every row once
    /// and in order; the rows after the chain's end are then published again.
    fn reconcile(&self, anchor: Option<u64>, expected: Option<u64>) -> Result<Chain> {
        let subject = self.options.address.subject.clone();
        let mut chain = Chain {
            end: expected,
            anchor,
            deleted: 0,
        };
        let mut from = anchor.map_or(1, |a| a.saturating_add(1));
        let mut broken = false;
        loop {
            let next = self.get(|s| {
                let subject = subject.clone();
                async move {
                    s.raw_message_builder()
                        .sequence(from)
                        .next_by_subject(subject)
                        .send()
                        .await
                }
            })?;
            let Some(m) = next else {
                return Ok(chain);
            };
            from = m.sequence.saturating_add(1);
            self.ours(&m)?;
            let (seq, rows) = (
                header_number(&m, SEQ_HEADER).unwrap_or_default(),
                header_number(&m, ROWS_HEADER).unwrap_or_default(),
            );
            // Rows skipped before it (none on the tape) are declared by `Tapedeck-From`.
            let continues = header_number(&m, FROM_HEADER).unwrap_or(seq);
            let expected = *chain.end.get_or_insert(continues);
            if !broken && continues == expected && seq >= continues {
                chain.end = Some(seq.saturating_add(rows));
                chain.anchor = Some(m.sequence);
                continue;
            }
            // After a gap everything is off the chain; a duplicate before it is only itself.
            broken |= continues > expected;
            let stream = self.stream.clone();
            self.conn
                .block_on(async move { stream.delete_message(m.sequence).await })
                .map_err(|e| {
                    connect_error(
                        &self.conn.server,
                        format!(
                            "cannot take back message {} (rows {seq}..{}, out of order on `{subject}`): {e}",
                            m.sequence,
                            seq.saturating_add(rows)
                        ),
                    )
                })?;
            chain.deleted += 1;
        }
    }

    /// After messages were taken back: new message ids from now on.
    fn start_repair(&mut self, deleted: usize) {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        tracing::warn!(
            "{}: took back {deleted} message(s) the stream held out of order (a message lost in a reconnect or a crash); publishing again from row {}",
            self.name,
            self.committed
        );
        self.repair = Some(nonce);
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            return Err(Error::SinkClosed {
                sink: self.name.clone(),
            });
        }
        Ok(())
    }

    /// Queues one message of `rows` rows.
    fn hold(&mut self, payload: Vec<u8>, rows: u64) {
        self.stats.bytes = self.stats.bytes.saturating_add(payload.len() as u64);
        self.stats.pending = self.stats.pending.saturating_add(rows);
        self.held.push_back(Outgoing {
            payload: Some(Bytes::from(payload)),
            first: self.next_seq,
            rows,
            from: self.chain_end.min(self.next_seq),
        });
        self.next_seq = self.next_seq.saturating_add(rows);
        self.chain_end = self.next_seq;
    }

    /// The headers of a message (see the module docs).
    fn headers(&self, m: &Outgoing) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(FORMAT_HEADER, self.options.format.keyword());
        headers.insert(ROWS_HEADER, m.rows.to_string());
        if let Some(tape) = &self.tape {
            headers.insert(TAPE_HEADER, tape.as_str());
            headers.insert(SEQ_HEADER, m.first.to_string());
            if m.from != m.first {
                headers.insert(FROM_HEADER, m.from.to_string());
            }
            headers.insert(
                MSG_ID_HEADER,
                match self.repair {
                    None => format!("{tape}:{}", m.first),
                    Some(r) => format!("{tape}:{}:{r}", m.first),
                },
            );
            if let Some(a) = self.anchor {
                headers.insert(AFTER_HEADER, a.to_string());
            }
        }
        headers
    }

    /// Queues `batch` as Arrow messages, split until each fits the server's payload limit.
    fn hold_arrow(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = batch.num_rows();
        let payload = crate::nats::encode_arrow(batch)?;
        if payload.len() <= self.max_payload {
            self.hold(payload, rows as u64);
            return Ok(());
        }
        if rows <= 1 {
            return Err(self.too_large(payload.len(), "an Arrow message"));
        }
        // Pieces sized from this one's bytes per row, at most half of it each time.
        let per_row = payload.len().div_ceil(rows).max(1);
        let piece = (self.max_payload / per_row).clamp(1, rows / 2);
        let mut at = 0;
        while at < rows {
            let len = piece.min(rows - at);
            self.hold_arrow(&batch.slice(at, len))?;
            at += len;
        }
        Ok(())
    }

    /// Queues `batch` as one JSON object per message.
    fn hold_jsonl(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut text = Vec::new();
        self.encoder.jsonl(batch, &mut text)?;
        let lines: Vec<&[u8]> = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        if let Some(big) = lines.iter().find(|l| l.len() > self.max_payload) {
            return Err(self.too_large(big.len(), "a JSON row; use format=arrow, or"));
        }
        for line in lines {
            self.hold(line.to_vec(), 1);
        }
        Ok(())
    }

    fn too_large(&self, bytes: usize, what: &str) -> Error {
        Error::Sink {
            sink: self.name.clone(),
            source: Box::new(Error::InvalidOption {
                option: "max_payload",
                message: format!(
                    "one row takes {bytes} bytes as {what} more than the server's max_payload allows ({} bytes with headers); raise max_payload in nats-server's configuration",
                    self.max_payload.saturating_add(HEADER_ROOM)
                ),
            }),
        }
    }

    /// Publishes everything held, again and again while the server is away (see the module
    /// docs), until all of it is acknowledged.
    fn publish_held(&mut self) -> Result<()> {
        let began = Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            let (acked, failure) = self.publish_once();
            self.settle(&acked);
            let message = match failure {
                None => return Ok(()),
                Some(Failure::Fatal(e)) => return Err(e),
                Some(Failure::Stale) => {
                    self.start_repair(0);
                    continue;
                }
                Some(Failure::Lost(message)) => message,
            };
            if began.elapsed() >= self.options.retry_for {
                return Err(connect_error(
                    &self.conn.server,
                    format!(
                        "{message}; gave up after {} s ({} rows not acknowledged, still on the tape: the next delivery sends them)",
                        self.options.retry_for.as_secs(),
                        self.stats.pending
                    ),
                ));
            }
            tracing::warn!(
                "{}: {message}; publishing again in {} ms",
                self.name,
                backoff.as_millis()
            );
            std::thread::sleep(backoff);
            backoff = backoff.saturating_mul(2).min(Duration::from_secs(5));
            // What the stream took before the cut is not sent again, and what it took out of
            // order is taken back.
            if self.tape.is_some() {
                match self.reconcile(self.anchor, Some(self.committed)) {
                    Ok(chain) => {
                        let end = chain.end.unwrap_or(self.committed);
                        let stored: Vec<Option<u64>> = self
                            .held
                            .iter()
                            .take_while(|m| m.end() <= end)
                            .map(|_| None)
                            .collect();
                        self.settle(&stored);
                        self.committed = self.committed.max(end);
                        self.anchor = chain.anchor.or(self.anchor);
                        if chain.deleted > 0 {
                            self.start_repair(chain.deleted);
                        }
                    }
                    Err(e) => tracing::warn!("{}: {e}", self.name),
                }
            }
        }
    }

    /// The first held messages are in the stream (at these stream sequences, when known): the
    /// cursor moves over them.
    fn settle(&mut self, acked: &[Option<u64>]) {
        for seq in acked {
            if let Some(m) = self.held.pop_front() {
                self.committed = m.end();
                if m.payload.is_some() {
                    self.stats.pending = self.stats.pending.saturating_sub(m.rows);
                    self.stats.rows = self.stats.rows.saturating_add(m.rows);
                }
                if seq.is_some() {
                    self.anchor = *seq;
                }
            }
        }
    }

    /// One pass over the held messages, `max_in_flight` of them awaiting their
    /// acknowledgement; returns the stream sequences of the first ones acknowledged (in
    /// order; `None` for skipped rows), and why it stopped short.
    fn publish_once(&self) -> (Vec<Option<u64>>, Option<Failure>) {
        let window = self.options.max_in_flight;
        self.conn.block_on(async {
            let mut in_flight: VecDeque<Option<PublishAckFuture>> = VecDeque::with_capacity(window);
            let mut acked = Vec::new();
            let mut failure = None;
            for m in &self.held {
                match &m.payload {
                    None => in_flight.push_back(None),
                    Some(payload) => match self
                        .conn
                        .js
                        .publish_with_headers(
                            self.options.address.subject.clone(),
                            self.headers(m),
                            payload.clone(),
                        )
                        .await
                    {
                        Ok(f) => in_flight.push_back(Some(f)),
                        Err(e) => {
                            failure = Some(self.classify(&e));
                            break;
                        }
                    },
                }
                if in_flight.len() >= window
                    && let Err(f) = self.await_front(&mut in_flight, &mut acked).await
                {
                    return (acked, Some(f));
                }
            }
            while !in_flight.is_empty() {
                if let Err(f) = self.await_front(&mut in_flight, &mut acked).await {
                    return (acked, Some(f));
                }
            }
            (acked, failure)
        })
    }

    /// Awaits the oldest acknowledgement in flight.
    async fn await_front(
        &self,
        in_flight: &mut VecDeque<Option<PublishAckFuture>>,
        acked: &mut Vec<Option<u64>>,
    ) -> std::result::Result<(), Failure> {
        let Some(front) = in_flight.pop_front() else {
            return Ok(());
        };
        let Some(f) = front else {
            acked.push(None);
            return Ok(());
        };
        let ack = f.await.map_err(|e| self.classify(&e))?;
        let stream = &self.options.stream.stream;
        if &ack.stream != stream {
            return Err(Failure::Fatal(Error::InvalidOption {
                option: "stream",
                message: format!(
                    "NATS {}: subject `{}` is stored by stream `{}`, not `{stream}`",
                    self.conn.server, self.options.address.subject, ack.stream
                ),
            }));
        }
        // A duplicate of a message the stream still holds is that message; of one taken back
        // (or one whose id another process used), it must be published anew.
        if ack.duplicate && self.tape.is_some() {
            let first = self.held.get(acked.len()).map(|m| m.first);
            match self.stream.get_raw_message(ack.sequence).await {
                Ok(m) if header_number(&m, SEQ_HEADER) == first => {}
                Ok(_) => return Err(Failure::Stale),
                Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => {
                    return Err(Failure::Stale);
                }
                Err(e) => return Err(Failure::Lost(e.to_string())),
            }
        }
        acked.push(Some(ack.sequence));
        Ok(())
    }

    fn classify(&self, e: &PublishError) -> Failure {
        match e.kind() {
            // "No responders" too: JetStream recovering after a restart, or a leader election;
            // a stream deleted for good shows as that until `retry_for` ends.
            PublishErrorKind::StreamNotFound => Failure::Lost(format!(
                "no stream answers for subject `{}` (stream `{}` restarting, or deleted?)",
                self.options.address.subject, self.options.stream.stream
            )),
            PublishErrorKind::MaxPayloadExceeded => Failure::Fatal(self.too_large(0, "a message")),
            _ => Failure::Lost(format!("publishing failed: {e}")),
        }
    }
}

/// A header's value as a number.
fn header_number(m: &StreamMessage, name: &str) -> Option<u64> {
    m.headers.get(name)?.as_str().parse().ok()
}

impl Sink for NatsSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.check_open()?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        match self.options.format {
            Format::Arrow => self.hold_arrow(batch),
            Format::Jsonl => self.hold_jsonl(batch),
        }
    }

    fn flush(&mut self) -> Result<()> {
        self.check_open()?;
        self.publish_held()
    }

    fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        let published = self.publish_held();
        self.closed = true;
        let flushed = self.conn.block_on(self.conn.client.flush());
        published?;
        flushed.map_err(|e| connect_error(&self.conn.server, format!("closing: {e}")))
    }

    fn stats(&self) -> SinkStats {
        self.stats
    }

    fn prefers_own_thread(&self) -> bool {
        true
    }
}

impl super::resume::CursorSink for NatsSink {
    fn committed_cursor(&self) -> Option<u64> {
        self.tape.as_ref().map(|_| self.committed)
    }

    fn skip_cursor(&mut self, rows: u64) {
        if self.held.is_empty() {
            self.committed = self.committed.saturating_add(rows);
        } else {
            self.held.push_back(Outgoing {
                payload: None,
                first: self.next_seq,
                rows,
                from: self.next_seq,
            });
        }
        self.next_seq = self.next_seq.saturating_add(rows);
    }
}
