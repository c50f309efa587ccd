//! NATS for the tests: a client that reads back what a stream holds, and a throwaway
//! `nats-server` with JetStream and file storage that a test can kill (SIGKILL) and start
//! again on the same port and storage directory — a server restart or crash mid-delivery.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream;

/// A connection for checking what a stream holds.
pub struct Client {
    pub addr: String,
    rt: tokio::runtime::Runtime,
    js: jetstream::Context,
}

/// One message of a stream, as the tests look at it.
#[derive(Debug, Clone)]
pub struct Msg {
    pub stream_seq: u64,
    pub headers: BTreeMap<String, String>,
    pub payload: Vec<u8>,
}

impl Msg {
    pub fn number(&self, name: &str) -> u64 {
        self.headers[name].parse().unwrap()
    }
}

impl Client {
    pub fn connect(addr: &str) -> Result<Client, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let client = rt
            .block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(3),
                    async_nats::connect(format!("nats://{addr}")),
                )
                .await
            })
            .map_err(|_| "no answer in 3 s".to_string())?
            .map_err(|e| e.to_string())?;
        let js = {
            let _inside = rt.enter();
            jetstream::new(client)
        };
        Ok(Client {
            addr: addr.to_string(),
            rt,
            js,
        })
    }

    /// Every message on `subject`, in stream order (none when the stream does not exist).
    pub fn messages(&self, stream: &str, subject: &str) -> Vec<Msg> {
        self.rt.block_on(async {
            let Ok(s) = self.js.get_stream(stream).await else {
                return Vec::new();
            };
            let mut out = Vec::new();
            let mut from = 1;
            while let Ok(m) = s
                .raw_message_builder()
                .sequence(from)
                .next_by_subject(subject.to_string())
                .send()
                .await
            {
                from = m.sequence + 1;
                out.push(Msg {
                    stream_seq: m.sequence,
                    headers: m
                        .headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v[0].as_str().to_string()))
                        .collect(),
                    payload: m.payload.to_vec(),
                });
            }
            out
        })
    }

    pub fn delete_message(&self, stream: &str, seq: u64) {
        self.rt.block_on(async {
            let s = self.js.get_stream(stream).await.unwrap();
            assert!(s.delete_message(seq).await.unwrap());
        });
    }

    pub fn publish(&self, subject: &str, headers: &BTreeMap<String, String>, payload: &[u8]) {
        self.rt.block_on(async {
            let mut h = async_nats::HeaderMap::new();
            for (k, v) in headers {
                h.insert(k.as_str(), v.as_str());
            }
            self.js
                .publish_with_headers(subject.to_string(), h, payload.to_vec().into())
                .await
                .unwrap()
                .await
                .unwrap();
        });
    }

    pub fn drop_stream(&self, stream: &str) {
        let _ = self.rt.block_on(self.js.delete_stream(stream));
    }
}

/// The machine's test server (`TAPEDECK_TEST_NATS`, default `127.0.0.1:4222`), or `None`
/// (with the reason printed) when there is none outside CI.
pub fn shared(test: &str) -> Option<Client> {
    let addr = std::env::var("TAPEDECK_TEST_NATS").unwrap_or_else(|_| "127.0.0.1:4222".into());
    match Client::connect(&addr) {
        Ok(s) => Some(s),
        Err(e) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: CI=true but no NATS server at {addr}: {e}");
            }
            eprintln!("skipping {test}: no NATS server at {addr} ({e}); set TAPEDECK_TEST_NATS");
            None
        }
    }
}

/// A throwaway `nats-server`; see the module docs.
pub struct Server {
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    child: Mutex<Option<Child>>,
}

impl Server {
    /// Starts one on a free port, or `None` (with the reason printed) when there is no
    /// `nats-server` binary outside CI.
    pub fn start(test: &str) -> Option<Server> {
        let bin = [
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
            "/usr/local/bin/nats-server",
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|b| b.exists());
        let Some(bin) = bin else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: CI=true but no nats-server binary to start");
            }
            eprintln!("skipping {test}: no nats-server binary");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let s = Server {
            port,
            bin,
            dir: tempfile::tempdir().unwrap(),
            child: Mutex::new(None),
        };
        s.start_again();
        Some(s)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn store(&self) -> &Path {
        self.dir.path()
    }

    /// Starts the server (again), and waits until it answers.
    pub fn start_again(&self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if child.is_some() {
            return;
        }
        *child = Some(
            Command::new(&self.bin)
                .args([
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-js",
                    "-sd",
                ])
                .arg(self.dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        for _ in 0..200 {
            if Client::connect(&self.addr()).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nats-server did not start on {}", self.addr());
    }

    /// Kills the server (SIGKILL).
    pub fn stop(&self) {
        if let Some(mut c) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
