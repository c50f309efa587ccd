//! NATS JetStream as tapedeck speaks it: the address a `nats://` URI names, the connection,
//! the stream, and the messages — what the sink (`sink/nats.rs`) publishes and the source
//! (`source/nats.rs`) reads.
//!
//! It sits beside the file formats, below both sources and sinks, because both ends use it
//! and a source may not import a sink (`docs/architecture.md`). `docs/scale-out.md` specifies
//! the messages; in short:
//!
//! - `format=arrow`: the payload is one Arrow IPC **stream** (schema message, one record batch,
//!   end-of-stream marker), readable by any Arrow library on its own;
//! - `format=jsonl`: the payload is one row as one JSON object (no newline);
//! - headers: `Tapedeck-Format` (`arrow` / `jsonl`) and `Tapedeck-Rows`; from a tape also
//!   `Tapedeck-Tape` (the tape id), `Tapedeck-Seq` (the tape sequence number of the first row)
//!   and `Nats-Msg-Id` = `<tape id>:<first sequence number>`, so JetStream drops a message
//!   published twice within its duplicate window, and `Tapedeck-After` (the stream sequence
//!   up to which the sender knew the tape's messages in order).

use std::future::Future;
use std::io::Cursor;
use std::time::Duration;

use arrow_array::RecordBatch;

use crate::error::{Error, Result};
use crate::uri::{Authority, Secret, Uri};

/// The header naming the payload's format (`arrow`, `jsonl`).
pub const FORMAT_HEADER: &str = "Tapedeck-Format";
/// The header with the id of the tape the rows come from.
pub const TAPE_HEADER: &str = "Tapedeck-Tape";
/// The header with the tape sequence number of the message's first row.
pub const SEQ_HEADER: &str = "Tapedeck-Seq";
/// The header with the number of rows in the message.
pub const ROWS_HEADER: &str = "Tapedeck-Rows";
/// The header with the stream sequence of the sender's last message known in order (up to
/// it, the tape's messages on the subject have no gap and no duplicate): where a sink that
/// starts again checks the stream from.
pub const AFTER_HEADER: &str = "Tapedeck-After";
/// The header of a message that follows rows the tape has none for (a damaged range a delivery
/// skipped): where the message before it ended. Absent, that is `Tapedeck-Seq`.
pub const FROM_HEADER: &str = "Tapedeck-From";
/// JetStream's deduplication header.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// The payload of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One Arrow IPC stream with one batch per message.
    Arrow,
    /// One JSON object (one row) per message.
    Jsonl,
}

impl Format {
    /// The header value, `arrow` or `jsonl`.
    pub fn keyword(self) -> &'static str {
        match self {
            Format::Arrow => "arrow",
            Format::Jsonl => "jsonl",
        }
    }
}

/// Where a `nats://[user[:password]@]host[:port]/SUBJECT` URI points; credentials are never
/// shown (`Debug` hides them, [`Address::server`] leaves them out).
#[derive(Debug, Clone)]
pub struct Address {
    /// Server host (default `127.0.0.1`).
    pub host: String,
    /// Server port (default 4222).
    pub port: u16,
    /// The subject (`lab.edge1`; a source may use the wildcards `*` and `>`).
    pub subject: String,
    /// User name, or the token when no password follows it.
    user: Option<Secret>,
    /// Password.
    password: Option<Secret>,
}

impl Address {
    /// Reads the part of a `nats://` URI before its `?`; `wildcards` allows `*` and `>` in
    /// the subject (a consumer's filter), not in a subject published to.
    pub(crate) fn from_uri(uri: &Uri, wildcards: bool) -> Result<Address> {
        let malformed = |reason: String| Error::MalformedUri {
            uri: uri.shown().to_string(),
            reason,
        };
        let usage = "write it as nats://host:port/SUBJECT?stream=NAME";
        let Some(a) = Authority::split(&uri.path).map_err(malformed)? else {
            return Err(malformed(usage.into()));
        };
        let subject = a.path.to_string();
        if subject.is_empty() {
            return Err(malformed(format!("no subject after the server; {usage}")));
        }
        check_subject(&subject, wildcards).map_err(malformed)?;
        Ok(Address {
            host: if a.host.is_empty() {
                "127.0.0.1".into()
            } else {
                a.host
            },
            port: a.port.unwrap_or(4222),
            subject,
            user: a.user.map(Secret::new),
            password: a.password,
        })
    }

    /// `host:port` (IPv6 in brackets), as errors and names show the server.
    pub fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A subject is dot-separated tokens of printable characters without spaces; `*` is a whole
/// token, `>` the whole last token.
fn check_subject(subject: &str, wildcards: bool) -> std::result::Result<(), String> {
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() {
            return Err(format!(
                "the subject `{subject}` has an empty token (two dots, or a dot at an end)"
            ));
        }
        if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("the subject `{subject}` holds a space"));
        }
        let wild = *t == "*" || (*t == ">" && i + 1 == tokens.len());
        if t.contains(['*', '>']) && !wild {
            return Err(format!(
                "the subject `{subject}`: `*` and `>` are wildcards only as whole tokens (`>` last)"
            ));
        }
        if wild && !wildcards {
            return Err(format!(
                "the subject `{subject}` has a wildcard: a sink publishes to one subject (a source may filter with `*` and `>`)"
            ));
        }
    }
    Ok(())
}

/// Whether `subject` falls under the `filter` (which may hold `*` and `>`).
///
/// ```
/// use tapedeck::nats::subject_matches;
/// assert!(subject_matches("lab.>", "lab.edge1.flow"));
/// assert!(subject_matches("lab.*", "lab.edge1"));
/// assert!(!subject_matches("lab.*", "lab.edge1.flow"));
/// assert!(!subject_matches("lab", "lab.edge1"));
/// ```
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The error of a server that cannot be reached, or went away and did not come back: what a
/// delivery retries.
pub(crate) fn connect_error(server: &str, message: impl std::fmt::Display) -> Error {
    Error::Connect {
        database: format!("NATS {server}"),
        message: message.to_string(),
        hint: "is nats-server running there, with JetStream (`nats-server -js`)? Check the host, port and credentials",
    }
}

/// A connection to a NATS server with JetStream, and the runtime that drives it.
pub(crate) struct Connection {
    /// One worker thread: the client's reader, pings and reconnects run while the caller does
    /// other work; calls block on it.
    runtime: tokio::runtime::Runtime,
    pub client: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    pub server: String,
}

impl Connection {
    /// Connects (within `timeout`); a server that does not answer is [`Error::Connect`].
    pub fn open(address: &Address, timeout: Duration) -> Result<Connection> {
        let server = address.server();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tapedeck-nats")
            .enable_all()
            .build()
            .map_err(|e| connect_error(&server, format!("cannot start its runtime: {e}")))?;
        let mut options = async_nats::ConnectOptions::new()
            .connection_timeout(timeout)
            .request_timeout(Some(timeout))
            .name("tapedeck");
        options = match (&address.user, &address.password) {
            (Some(u), Some(p)) => options.user_and_password(u.expose().into(), p.expose().into()),
            (Some(token), None) => options.token(token.expose().into()),
            _ => options,
        };
        let url = format!("nats://{server}");
        let client = runtime
            .block_on(async {
                tokio::time::timeout(timeout.saturating_add(Duration::from_secs(1)), async {
                    options.connect(url.as_str()).await
                })
                .await
            })
            .map_err(|_| connect_error(&server, "no answer in time"))?
            .map_err(|e| connect_error(&server, e))?;
        // The JetStream context starts a task of its own: made inside the runtime.
        let js = {
            let _inside = runtime.enter();
            async_nats::jetstream::new(client.clone())
        };
        Ok(Connection {
            runtime,
            client,
            js,
            server,
        })
    }

    /// Runs `f` to its end on the connection's runtime.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// The stream named `name`; with `create`, made (file storage unless `memory`) when it
    /// does not exist. Checks that `subject` falls under the stream's subjects, so a publish
    /// cannot silently land nowhere.
    pub fn stream(
        &self,
        name: &str,
        subject: &str,
        create: Option<&StreamSettings>,
    ) -> Result<async_nats::jetstream::stream::Stream> {
        use async_nats::jetstream::context::GetStreamErrorKind;
        let got = self.block_on(self.js.get_stream(name));
        let stream = match got {
            Ok(s) => s,
            Err(e) => {
                let missing = matches!(e.kind(), GetStreamErrorKind::JetStream(j)
                    if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND);
                match (missing, create) {
                    (true, Some(settings)) => self.create_stream(name, subject, settings)?,
                    (true, None) => {
                        return Err(Error::InvalidOption {
                            option: "stream",
                            message: format!(
                                "NATS {}: stream `{name}` does not exist; create it (`nats stream add {name} --subjects '{subject}'`) or add create_stream=true to the URI",
                                self.server
                            ),
                        });
                    }
                    (false, _) => {
                        return Err(connect_error(
                            &self.server,
                            format!("cannot look up stream `{name}`: {e}"),
                        ));
                    }
                }
            }
        };
        let subjects = &stream.cached_info().config.subjects;
        // A stream without subjects listens on its own name.
        let covered = if subjects.is_empty() {
            subject_matches(name, subject)
        } else {
            subjects
                .iter()
                .any(|s| subject_matches(s, subject) || subject_matches(subject, s))
        };
        if !covered {
            return Err(Error::InvalidOption {
                option: "stream",
                message: format!(
                    "NATS {}: stream `{name}` holds the subjects {subjects:?}, not `{subject}`; name the stream that does, or add the subject to it",
                    self.server
                ),
            });
        }
        Ok(stream)
    }

    fn create_stream(
        &self,
        name: &str,
        subject: &str,
        settings: &StreamSettings,
    ) -> Result<async_nats::jetstream::stream::Stream> {
        use async_nats::jetstream::stream::{Config, StorageType};
        let config = Config {
            name: name.to_string(),
            subjects: if settings.subjects.is_empty() {
                vec![subject.to_string()]
            } else {
                settings.subjects.clone()
            },
            storage: if settings.memory {
                StorageType::Memory
            } else {
                StorageType::File
            },
            num_replicas: settings.replicas,
            duplicate_window: settings.duplicate_window,
            ..Config::default()
        };
        self.block_on(self.js.get_or_create_stream(config))
            .map_err(|e| Error::InvalidOption {
                option: "create_stream",
                message: format!("NATS {}: cannot create stream `{name}`: {e}", self.server),
            })
    }
}

/// How a stream is made when a URI says `create_stream=true`.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Its subjects (default: the URI's subject).
    pub subjects: Vec<String>,
    /// Memory storage instead of file storage.
    pub memory: bool,
    /// Replicas (1 on a single server).
    pub replicas: usize,
    /// JetStream's duplicate window (`Nats-Msg-Id`s remembered this long).
    pub duplicate_window: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            subjects: Vec::new(),
            memory: false,
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
        }
    }
}

/// What the sink's and the source's URIs both say: the stream, how to make it, how long to
/// wait for the server.
#[derive(Debug, Clone)]
pub struct StreamParams {
    /// The stream's name (`stream=`).
    pub stream: String,
    /// `create_stream=true` and how (`subjects=`, `storage=`, `replicas=`, `duplicate_window=`).
    pub create: Option<StreamSettings>,
    /// `connect_timeout=` (default 10 s): each connection attempt and each request.
    pub connect_timeout: Duration,
}

impl StreamParams {
    /// Reads `stream`, `create_stream`, `subjects`, `storage`, `replicas`,
    /// `duplicate_window` and `connect_timeout`.
    pub(crate) fn from_uri(uri: &mut Uri) -> Result<StreamParams> {
        let shown = uri.shown().to_string();
        let p = &mut uri.params;
        let Some(stream) = p.raw("stream").map(str::to_string) else {
            return Err(Error::MalformedUri {
                uri: shown,
                reason: "name the JetStream stream: add ?stream=NAME".into(),
            });
        };
        if stream.is_empty()
            || !stream
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(Error::BadParam {
                uri: shown,
                param: "stream".into(),
                value: stream,
                expected: "a stream name of letters, digits, `_` and `-`".into(),
            });
        }
        let create = p.flag("create_stream")?;
        let d = StreamSettings::default();
        let settings = StreamSettings {
            subjects: p
                .raw("subjects")
                .map(|s| s.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
            memory: p.choice("storage", &["file", "memory"])? == Some("memory"),
            replicas: p
                .parse::<usize>("replicas", "a number of replicas from 1 to 5")?
                .unwrap_or(d.replicas),
            duplicate_window: p
                .duration("duplicate_window")?
                .unwrap_or(d.duplicate_window),
        };
        let connect_timeout = p
            .duration("connect_timeout")?
            .unwrap_or(Duration::from_secs(10));
        if connect_timeout.is_zero() || !(1..=5).contains(&settings.replicas) {
            return Err(Error::BadParam {
                uri: shown,
                param: "connect_timeout / replicas".into(),
                value: format!("{connect_timeout:?} / {}", settings.replicas),
                expected: "a positive duration such as 5s, and 1 to 5 replicas".into(),
            });
        }
        Ok(StreamParams {
            stream,
            create: create.then_some(settings),
            connect_timeout,
        })
    }
}

/// One batch as an Arrow IPC stream: the payload of a `format=arrow` message.
pub fn encode_arrow(batch: &RecordBatch) -> Result<Vec<u8>> {
    let arrow = |e| Error::arrow("encoding a NATS message", e);
    let mut out = Vec::with_capacity(batch.get_array_memory_size().saturating_add(1024));
    let mut w =
        arrow_ipc::writer::StreamWriter::try_new(&mut out, &batch.schema()).map_err(arrow)?;
    w.write(batch).map_err(arrow)?;
    w.finish().map_err(arrow)?;
    drop(w);
    Ok(out)
}

/// The batches of a `format=arrow` payload; a payload that is not an Arrow IPC stream is an
/// error saying so.
pub fn decode_arrow(payload: &[u8]) -> Result<Vec<RecordBatch>> {
    let arrow = |e| Error::arrow("reading a NATS message as an Arrow IPC stream", e);
    let reader =
        arrow_ipc::reader::StreamReader::try_new(Cursor::new(payload), None).map_err(arrow)?;
    reader.map(|b| b.map_err(arrow)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn addresses_read_and_hide_credentials() {
        let uri = Uri::parse("nats://lab:s3cret@10.0.0.5:4333/lab.edge1?stream=LAB").unwrap();
        let a = Address::from_uri(&uri, false).unwrap();
        assert_eq!(
            (a.server(), a.subject.as_str()),
            ("10.0.0.5:4333".into(), "lab.edge1")
        );
        assert!(!format!("{a:?}").contains("s3cret"));
        let a = Address::from_uri(&Uri::parse("nats:///x").unwrap(), false).unwrap();
        assert_eq!(a.server(), "127.0.0.1:4222");
        for (bad, why) in [
            ("nats://host:4222", "no subject"),
            ("nats://host:4222/a..b", "empty token"),
            ("nats://host:4222/a.>", "wildcard"),
            ("nats://host:4222/a.b>", "whole tokens"),
            ("nats:host/a", "nats://host:port/SUBJECT"),
            ("nats://host:0/a", "port"),
        ] {
            let e = Address::from_uri(&Uri::parse(bad).unwrap(), false).unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
        assert!(Address::from_uri(&Uri::parse("nats://h/lab.>").unwrap(), true).is_ok());
    }

    #[test]
    fn arrow_payloads_round_trip_and_garbage_is_an_error() {
        use arrow_array::{Float64Array, StringArray};
        use arrow_schema::{DataType, Field, Schema};
        let schema = Arc::new(Schema::new(vec![
            Field::new("device", DataType::Utf8, true),
            Field::new("flow", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["a", "b"])),
                Arc::new(Float64Array::from(vec![1.5, f64::NAN])),
            ],
        )
        .unwrap();
        let bytes = encode_arrow(&batch).unwrap();
        let back = decode_arrow(&bytes).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].schema(), batch.schema());
        assert_eq!(back[0].num_rows(), 2);
        assert!(decode_arrow(b"{\"a\":1}").is_err());
        assert!(decode_arrow(&bytes[..bytes.len() / 2]).is_err());
    }
}
