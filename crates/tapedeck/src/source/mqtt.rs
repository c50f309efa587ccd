//! `mqtt://host:port/TOPIC/FILTER?qos=1&client_id=ID` — MQTT 3.1.1 ingest: each message's
//! payload is one JSON object, one row, with its topic in a `_topic` column; acknowledged to
//! the broker only after the tape acknowledged the row.
//!
//! - **Acknowledged after the fsync.** With `qos=1` (the default) the source subscribes in a
//!   persistent session (`clean_session=false` under a fixed `client_id`) with manual
//!   acknowledgements: a message's PUBACK is sent once the tape has acknowledged (fsynced) its
//!   row. A crash or a broker restart before that leaves the message unacknowledged in the
//!   session, and the broker sends it again: nothing is lost. Messages published while the
//!   recorder is not running are kept by the broker for the session and arrive at the next run.
//! - **At least once across a crash.** MQTT messages carry no id that outlives a session's
//!   packet ids, so a row the tape acknowledged just before a crash, whose PUBACK had not gone
//!   out yet, arrives again and is recorded twice. Within a run, a message the broker sends
//!   again after a reconnect (its `dup` flag, the packet id of one still awaiting the tape) is
//!   not recorded twice. `qos=0`: no acknowledgement, no redelivery, no persistent session.
//! - **Throughput.** A broker sends a client at most its in-flight limit of unacknowledged
//!   messages (Mosquitto's `max_inflight_messages`, 20 by default): with acknowledgements only
//!   after the fsync, that many rows per flush; record with a short `--flush-interval` (e.g.
//!   `50ms`), or raise the broker's limit.
//! - **It records onto a tape only** (`--tape`): the acknowledgement needs one.
//! - **Ending.** Like the NATS source: until stopped, or `stop_after_idle=DUR`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rumqttc::{Client, Connection, Event, MqttOptions, Packet, Publish, QoS, RecvTimeoutError};

use super::{Source, TapeLink};
use crate::error::{Error, Result};
use crate::record::{Record, Value};
use crate::uri::{Authority, Uri};

/// The column holding each row's topic.
pub const TOPIC_COLUMN: &str = "_topic";

/// What an `mqtt://` source URI says.
#[derive(Debug, Clone)]
pub struct MqttSourceOptions {
    /// Broker host (default `127.0.0.1`) and port (default 1883).
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// The topic filter subscribed to (`+` and `#` wildcards).
    pub filter: String,
    /// 0 or 1 (default 1).
    pub qos: u8,
    /// The client id of the persistent session (default `tapedeck`).
    pub client_id: String,
    /// End once no message came for this long (default: never).
    pub stop_after_idle: Option<Duration>,
    /// Skip (and acknowledge) a message that is not a JSON object, instead of failing.
    pub skip_bad: bool,
    /// How long the broker may be away before the source fails (default 5 min).
    pub retry_for: Duration,
}

impl MqttSourceOptions {
    pub(crate) fn from_uri(mut uri: Uri) -> Result<MqttSourceOptions> {
        let shown = uri.shown().to_string();
        let malformed = |reason: String| Error::MalformedUri {
            uri: shown.clone(),
            reason,
        };
        let usage = "write it as mqtt://host:port/TOPIC/FILTER (wildcards + and #)";
        let Some(a) = Authority::split(&uri.path).map_err(malformed)? else {
            return Err(malformed(usage.into()));
        };
        let filter = a.path.to_string();
        if filter.is_empty() {
            return Err(malformed(format!(
                "no topic filter after the broker; {usage}"
            )));
        }
        let levels: Vec<&str> = filter.split('/').collect();
        for (i, level) in levels.iter().enumerate() {
            let bad = (level.contains('#') && (*level != "#" || i + 1 != levels.len()))
                || (level.contains('+') && *level != "+");
            if bad {
                return Err(malformed(format!(
                    "the topic filter `{filter}`: `+` is a whole level, `#` the whole last level"
                )));
            }
        }
        let (host, port) = (a.host, a.port);
        let p = &mut uri.params;
        let qos = match p.choice("qos", &["0", "1"])? {
            Some("0") => 0,
            _ => 1,
        };
        let client_id = p.raw("client_id").unwrap_or("tapedeck").to_string();
        let stop_after_idle = p.duration("stop_after_idle")?;
        let skip_bad = p.choice("on_error", &["fail", "skip"])? == Some("skip");
        let retry_for = p.duration("retry_for")?.unwrap_or(Duration::from_secs(300));
        p.finish()?;
        if client_id.is_empty() || client_id.len() > 64 {
            return Err(Error::BadParam {
                uri: shown,
                param: "client_id".into(),
                value: client_id,
                expected: "1 to 64 characters".into(),
            });
        }
        Ok(MqttSourceOptions {
            host: if host.is_empty() {
                "127.0.0.1".into()
            } else {
                host
            },
            port: port.unwrap_or(1883),
            filter,
            qos,
            client_id,
            stop_after_idle,
            skip_bad,
            retry_for,
        })
    }
}

/// A message recorded and not yet acknowledged to the broker.
struct Awaiting {
    /// Rows yielded this run up to and including this one.
    through: u64,
    publish: Publish,
}

/// The source; see the module docs.
pub struct MqttSource {
    name: String,
    options: MqttSourceOptions,
    conn: Option<(Client, Connection)>,
    link: Option<TapeLink>,
    yielded: u64,
    awaiting: VecDeque<Awaiting>,
    ready: VecDeque<Record>,
    last_message: Instant,
    /// Since when the broker has been away, if it is.
    away_since: Option<Instant>,
    /// Connected (a CONNACK came, no error since).
    connected: bool,
    counters: super::SourceCounters,
}

impl MqttSource {
    pub(crate) fn from_uri(uri: Uri) -> Result<MqttSource> {
        let options = MqttSourceOptions::from_uri(uri)?;
        Ok(MqttSource {
            name: format!(
                "mqtt://{}:{}/{} (client {})",
                options.host, options.port, options.filter, options.client_id
            ),
            options,
            conn: None,
            link: None,
            yielded: 0,
            awaiting: VecDeque::new(),
            ready: VecDeque::new(),
            last_message: Instant::now(),
            away_since: None,
            connected: false,
            counters: super::SourceCounters::default(),
        })
    }

    fn connect(&mut self) {
        let o = &self.options;
        let mut mqtt = MqttOptions::new(o.client_id.clone(), o.host.clone(), o.port);
        mqtt.set_keep_alive(Duration::from_secs(30))
            .set_clean_session(o.qos == 0)
            .set_manual_acks(true)
            .set_max_packet_size(16 << 20, 16 << 20);
        let (client, connection) = Client::new(mqtt, 1024);
        self.conn = Some((client, connection));
    }

    /// The broker cannot be reached, or the client failed: what a run reports and a user checks.
    fn broker_error(&self, message: String) -> Error {
        Error::Connect {
            database: format!("MQTT {}:{}", self.options.host, self.options.port),
            message,
            hint: "is the broker (mosquitto) running there?",
        }
    }

    /// Sends the PUBACK of every message whose row the tape has acknowledged.
    fn acknowledge_durable(&mut self) -> Result<()> {
        let (Some(link), Some(_)) = (&self.link, &self.conn) else {
            return Ok(());
        };
        let durable = link.acknowledged_rows();
        let ready: Vec<Publish> = std::iter::from_fn(|| {
            self.awaiting
                .front()
                .is_some_and(|a| a.through <= durable)
                .then(|| self.awaiting.pop_front().map(|a| a.publish))
                .flatten()
        })
        .collect();
        for publish in &ready {
            // The request channel holds ACK_CHANNEL requests: when full, a poll sends one.
            loop {
                let Some((client, _)) = &self.conn else {
                    return Ok(());
                };
                match client.try_ack(publish) {
                    Ok(()) => break,
                    Err(rumqttc::ClientError::TryRequest(_)) => self.pump(1)?,
                    Err(e) => {
                        return Err(self.broker_error(format!("acknowledging a message: {e}")));
                    }
                }
            }
        }
        // The client's event loop sends one queued request per poll, after the events it has
        // read already: poll until the PUBACKs are out (taking what arrives meanwhile).
        self.pump(ready.len().saturating_mul(2))
    }

    /// Up to `polls` quick polls of a connected client (a connection being made is not cut
    /// short by them); stops when nothing is queued.
    fn pump(&mut self, polls: usize) -> Result<()> {
        for _ in 0..polls {
            if !self.connected {
                return Ok(());
            }
            let Some((_, connection)) = &mut self.conn else {
                return Ok(());
            };
            match connection.recv_timeout(Duration::from_millis(1)) {
                Ok(event) => self.handle(event)?,
                Err(_) => return Ok(()),
            }
        }
        Ok(())
    }

    /// Waits up to 20 ms for the next event (then the tape may have acknowledged more rows,
    /// whose messages are acknowledged in turn).
    fn poll(&mut self) -> Result<()> {
        let Some((_, connection)) = &mut self.conn else {
            return Ok(());
        };
        // Connected: a short wait, so that rows the tape acknowledged meanwhile are
        // acknowledged soon. Connecting: long enough for the connection to be made (a poll
        // cut short starts it over).
        let wait = if self.connected {
            Duration::from_millis(20)
        } else {
            Duration::from_secs(10)
        };
        match connection.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) if !self.connected => {
                self.handle(Err(rumqttc::ConnectionError::NetworkTimeout))
            }
            Err(RecvTimeoutError::Timeout) => Ok(()),
            Err(RecvTimeoutError::Disconnected) => Err(self.broker_error(
                "the client's request channel closed (a bug: please report it)".into(),
            )),
            Ok(event) => self.handle(event),
        }
    }

    /// One event of the client: a message becomes a row; a connection (again) subscribes; a
    /// broken connection is retried (for up to `retry_for`).
    fn handle(
        &mut self,
        event: std::result::Result<Event, rumqttc::ConnectionError>,
    ) -> Result<()> {
        match event {
            Err(e) => {
                self.connected = false;
                // The event loop reconnects at the next poll; the session keeps what is
                // unacknowledged.
                let since = *self.away_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.options.retry_for {
                    return Err(self.broker_error(format!(
                        "{e}; gave up after {} s",
                        self.options.retry_for.as_secs()
                    )));
                }
                tracing::warn!("{}: {e}; connecting again", self.name);
                std::thread::sleep(Duration::from_millis(100));
                Ok(())
            }
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                self.away_since = None;
                self.connected = true;
                // (Re)subscribe: a persistent session keeps the subscription, a clean one not.
                let qos = if self.options.qos == 0 {
                    QoS::AtMostOnce
                } else {
                    QoS::AtLeastOnce
                };
                let Some((client, _)) = &self.conn else {
                    return Ok(());
                };
                let subscribed = client.try_subscribe(self.options.filter.clone(), qos);
                subscribed.map_err(|e| {
                    self.broker_error(format!("subscribing to {}: {e}", self.options.filter))
                })?;
                Ok(())
            }
            Ok(Event::Incoming(Packet::Publish(p))) => self.take(p),
            Ok(_) => Ok(()),
        }
    }

    /// A message: its row, or (sent again while its first copy awaits the tape) nothing.
    fn take(&mut self, p: Publish) -> Result<()> {
        self.last_message = Instant::now();
        if p.dup && self.awaiting.iter().any(|a| a.publish.pkid == p.pkid) {
            return Ok(());
        }
        let parsed = std::str::from_utf8(&p.payload)
            .map_err(|_| "not UTF-8".to_string())
            .and_then(|t| super::lines::json_row(t.trim()));
        let mut row = match parsed {
            Ok(row) => row,
            Err(why) if self.options.skip_bad => {
                tracing::warn!("{}: skipped a message on {}: {why}", self.name, p.topic);
                self.counters.add_skipped();
                if let Some((client, _)) = &self.conn {
                    let _ = client.try_ack(&p);
                }
                return Ok(());
            }
            Err(why) => {
                return Err(Error::MalformedMessage {
                    source_name: self.name.clone(),
                    seq: u64::from(p.pkid),
                    message: format!(
                        "on topic {}: {why} (a payload must be one JSON object; on_error=skip skips such messages)",
                        p.topic
                    ),
                });
            }
        };
        row.set(TOPIC_COLUMN, Value::Text(p.topic.clone()));
        self.ready.push_back(Record::Row(row));
        self.yielded = self.yielded.saturating_add(1);
        if p.qos != QoS::AtMostOnce {
            self.awaiting.push_back(Awaiting {
                through: self.yielded,
                publish: p,
            });
        }
        Ok(())
    }
}

impl Source for MqttSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn counters(&self) -> super::SourceCounters {
        self.counters.clone()
    }

    fn attach_tape(&mut self, link: TapeLink) -> Result<()> {
        self.link = Some(link);
        Ok(())
    }

    fn next_record(&mut self) -> Result<Option<Record>> {
        if self.link.is_none() {
            return Err(super::needs_a_tape(&self.name, "mqtt"));
        }
        if self.conn.is_none() {
            self.connect();
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
                // What was recorded is acknowledged before the end, once the tape has it; a
                // message arriving meanwhile is recorded (the run goes on).
                let until = Instant::now() + Duration::from_secs(5);
                while !self.awaiting.is_empty() && self.ready.is_empty() && Instant::now() < until {
                    self.acknowledge_durable()?;
                    self.pump(1)?;
                    std::thread::sleep(Duration::from_millis(5));
                }
                if !self.ready.is_empty() {
                    continue;
                }
                // The PUBACKs queued last go out with the next polls, then the session ends.
                self.pump(64)?;
                if !self.ready.is_empty() {
                    continue;
                }
                if let Some((client, connection)) = &mut self.conn {
                    let _ = client.try_disconnect();
                    let _ = connection.recv_timeout(Duration::from_millis(50));
                }
                return Ok(None);
            }
            self.poll()?;
        }
    }
}
