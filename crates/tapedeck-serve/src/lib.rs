//! # tapedeck-serve
//!
//! `tapedeck serve DIR` and `record … --serve ADDR`: a web page of a tape, live while it is
//! recorded — every numeric column as a scrolling plot (downsampled on the server with M4, so
//! spikes and clipping show), the acknowledged position and its rate, the tape's size,
//! compression and segments, the disk's free space, the retention horizon, the time since the
//! last fsync, each sink's cursor and lag (red when it falls behind), the run metadata and its
//! history, and a SQL box.
//!
//! What it guarantees:
//! - **Read-only, one tape.** No request changes the recording; no request names a file: the
//!   only files read are the tape directory's (the page's own files are compiled in).
//! - **Offline.** The page, its script and its plotting are embedded in the binary; nothing is
//!   fetched from anywhere else.
//! - **Safe by default.** Loopback unless told otherwise; any other address needs a token
//!   (generated when not given), checked in constant time on every request ([`guard`]).
//! - **Live without gaps.** The page's event stream (Server-Sent Events) carries the tape's
//!   sequence numbers; a reconnect continues after the last one the page got ([`plot::follow`]).
//! - **Bounded.** At most [`ServeOptions::max_clients`] live streams; each holds a few
//!   messages of a bounded size and gets about [`plot::min_bucket_us`]'s budget of bytes per
//!   second. The newest rows are read once for all of them ([`head`]).
//!
//! ```no_run
//! let server = tapedeck_serve::Server::start(
//!     std::path::Path::new("runs/tape"),
//!     tapedeck_serve::ServeOptions::default(),
//! )?;
//! println!("open {}", server.url());
//! server.wait();
//! # Ok::<(), tapedeck_serve::ServeError>(())
//! ```

#![warn(missing_docs)]

pub mod guard;
pub mod head;
pub mod m4;
pub mod plot;
#[cfg(feature = "sql")]
pub mod sql;
pub mod status;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::status::StatusCache;

/// How a server listens.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeOptions {
    /// The address, e.g. `127.0.0.1:8080` (port 0: any free port).
    pub listen: SocketAddr,
    /// The token every request must carry; `None`: none on loopback, a new random one on any
    /// other address.
    pub token: Option<String>,
    /// Live streams at most (more are refused with 503 until one closes).
    pub max_clients: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            max_clients: 16,
        }
    }
}

impl ServeOptions {
    /// Options listening on `listen`.
    pub fn listen(listen: SocketAddr) -> ServeOptions {
        ServeOptions {
            listen,
            ..ServeOptions::default()
        }
    }

    /// With this token.
    pub fn token(mut self, token: Option<String>) -> ServeOptions {
        self.token = token;
        self
    }

    /// With at most `n` live streams.
    pub fn max_clients(mut self, n: usize) -> ServeOptions {
        self.max_clients = n;
        self
    }
}

/// Why a server did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The address could not be listened on.
    #[error(
        "cannot listen on {addr}: {source} (another program may use the port: pick another with --listen, e.g. 127.0.0.1:0 for any free one)"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
    /// The directory is not a tape.
    #[error("{0}")]
    Tape(#[from] tapedeck::Error),
    /// A token too short to keep anyone out.
    #[error(
        "the token is {len} characters; use at least 16 (or leave --token out on a loopback address, or let tapedeck make one)"
    )]
    WeakToken {
        /// Its length.
        len: usize,
    },
    /// No maximum number of clients.
    #[error("--max-clients must be at least 1")]
    NoClients,
    /// The server's threads could not start (or a token could not be made).
    #[error("cannot start the server: {0}")]
    Start(std::io::Error),
}

/// How long open answers get to end once the server is told to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What the handlers share.
#[derive(Debug)]
pub struct App {
    dir: PathBuf,
    token: Option<String>,
    ip: std::net::IpAddr,
    port: u16,
    status: Arc<StatusCache>,
    clients: Arc<Semaphore>,
    /// History and SQL requests run at most this many at once (each may read much of the tape).
    heavy: Semaphore,
    max_clients: usize,
    stop: Arc<AtomicBool>,
    /// The newest rows, read once for every live page.
    head: Arc<head::Head>,
}

/// A running server; [`Server::stop`] or dropping it ends it.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    token: Option<String>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    /// Listens on `options.listen` and serves the tape in `dir` on a thread of its own.
    pub fn start(dir: &Path, options: ServeOptions) -> Result<Server, ServeError> {
        tapedeck::tape::verify::storage_for(dir)?;
        if options.max_clients == 0 {
            return Err(ServeError::NoClients);
        }
        let token = match options.token {
            Some(t) if t.chars().count() < 16 => {
                return Err(ServeError::WeakToken {
                    len: t.chars().count(),
                });
            }
            Some(t) => Some(t),
            None if options.listen.ip().is_loopback() => None,
            None => Some(guard::new_token().map_err(ServeError::Start)?),
        };
        let listener = TcpListener::bind(options.listen).map_err(|source| ServeError::Bind {
            addr: options.listen,
            source,
        })?;
        let addr = listener.local_addr().map_err(ServeError::Start)?;
        listener.set_nonblocking(true).map_err(ServeError::Start)?;
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(StatusCache::new(dir));
        let app = Arc::new(App {
            dir: dir.to_path_buf(),
            token: token.clone(),
            ip: addr.ip(),
            port: addr.port(),
            status: status.clone(),
            clients: Arc::new(Semaphore::new(options.max_clients)),
            heavy: Semaphore::new(4),
            max_clients: options.max_clients,
            stop: stop.clone(),
            head: Arc::new(head::Head::new(dir, stop.clone(), status)),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tapedeck-serve")
            .enable_all()
            .build()
            .map_err(ServeError::Start)?;
        let (tx, rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("tapedeck-serve".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!("the page server cannot listen: {e}");
                            return;
                        }
                    };
                    // Stopping: the listener closes at once and the open answers get
                    // `SHUTDOWN_GRACE` to end (a page that stopped reading would hold a
                    // graceful shutdown forever).
                    let stopping = Arc::new(tokio::sync::Notify::new());
                    let told = stopping.clone();
                    let served =
                        axum::serve(listener, router(app)).with_graceful_shutdown(async move {
                            let _ = rx.await;
                            told.notify_one();
                        });
                    let grace = async move {
                        stopping.notified().await;
                        tokio::time::sleep(SHUTDOWN_GRACE).await;
                    };
                    let served = Box::pin(served.into_future());
                    if let futures_util::future::Either::Left((Err(e), _)) =
                        futures_util::future::select(served, Box::pin(grace)).await
                    {
                        tracing::error!("the page server stopped: {e}");
                    }
                });
                // Live streams end by themselves once `stop` is set; don't wait for them.
                runtime.shutdown_timeout(Duration::from_millis(500));
            })
            .map_err(ServeError::Start)?;
        Ok(Server {
            addr,
            token,
            shutdown: Some(tx),
            thread: Some(thread),
            stop,
        })
    }

    /// The address it listens on (with the port chosen, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The token requests must carry, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The page's address, with the token when there is one.
    pub fn url(&self) -> String {
        let host = match self.addr.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        match &self.token {
            Some(t) => format!("http://{host}:{}/?token={t}", self.addr.port()),
            None => format!("http://{host}:{}/", self.addr.port()),
        }
    }

    /// False once the server ended by itself (its thread stopped: an error was logged).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Blocks until the server ends (it ends when stopped from another thread, or on error).
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Stops serving: closes the listener and every live stream.
    pub fn stop(mut self) {
        self.end();
    }

    fn end(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.end();
    }
}

/// The page's files, compiled in.
mod assets {
    pub const INDEX: &str = include_str!("../assets/index.html");
    pub const SCRIPT: &str = include_str!("../assets/app.js");
    pub const STYLE: &str = include_str!("../assets/app.css");
    pub const ICON: &str = include_str!("../assets/icon.svg");
}

fn router(app: Arc<App>) -> Router {
    let asset = |body: &'static str, kind: &'static str| {
        get(move || async move { ([(header::CONTENT_TYPE, kind)], body) })
    };
    Router::new()
        .route("/", asset(assets::INDEX, "text/html; charset=utf-8"))
        .route(
            "/app.js",
            asset(assets::SCRIPT, "text/javascript; charset=utf-8"),
        )
        .route("/app.css", asset(assets::STYLE, "text/css; charset=utf-8"))
        .route("/icon.svg", asset(assets::ICON, "image/svg+xml"))
        .route("/api/status", get(api_status))
        .route("/api/series", get(api_series))
        .route("/api/live", get(api_live))
        .route("/api/meta", get(api_meta))
        .route("/api/sql", post(api_sql))
        .fallback(|| async { json_error(StatusCode::NOT_FOUND, "no such page") })
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            guard::guard,
        ))
        .with_state(app)
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        serde_json::json!({ "error": message }).to_string(),
    )
        .into_response()
}

fn json_ok(value: &impl serde::Serialize) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => (
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

async fn api_status(State(app): State<Arc<App>>) -> Response {
    let a = app.clone();
    match blocking(move || a.status.get()).await {
        Some(s) => json_ok(&s),
        None => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the status could not be read",
        ),
    }
}

/// A query parameter as a number, or why not (the 400 answer's message).
fn param<T: std::str::FromStr>(
    q: &HashMap<String, String>,
    name: &str,
    what: &str,
) -> Result<Option<T>, String> {
    match q.get(name) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| format!("`{name}={v}` is not {what}")),
    }
}

/// `/api/series?width=PX` and either `window=SECONDS` (the last ones of the tape), or
/// `from=µs&to=µs`; neither: the whole tape.
async fn api_series(
    State(app): State<Arc<App>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let parsed = (|| {
        let width = param::<usize>(&q, "width", "a width in pixels")?.unwrap_or(1000);
        if width == 0 || width > plot::MAX_WIDTH {
            return Err(format!("`width` must be 1 to {}", plot::MAX_WIDTH));
        }
        let window = param::<f64>(&q, "window", "a number of seconds")?;
        if window.is_some_and(|w| !(w > 0.0 && w < 1e12)) {
            return Err("`window` must be a positive number of seconds".to_string());
        }
        let from = param::<i64>(&q, "from", "a time in µs since the epoch")?;
        let to = param::<i64>(&q, "to", "a time in µs since the epoch")?;
        if let (Some(a), Some(b)) = (from, to)
            && a >= b
        {
            return Err("`from` must be before `to`".to_string());
        }
        Ok((width, window, from, to))
    })();
    let (width, window, from, to) = match parsed {
        Ok(p) => p,
        Err(why) => return json_error(StatusCode::BAD_REQUEST, &why),
    };
    let Ok(_permit) = app.heavy.acquire().await else {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping");
    };
    let a = app.clone();
    let answer = blocking(move || {
        let (from, to) = match window {
            Some(w) => {
                let end = a
                    .status
                    .get()
                    .time_range
                    .map(|(_, hi)| hi.saturating_add(1));
                let span = (w * 1e6) as i64;
                (end.map(|e| e.saturating_sub(span)), end)
            }
            None => (from, to),
        };
        plot::history(&a.dir, plot::Span { from, to, width }, &a.status)
    })
    .await;
    match answer {
        Some(Ok(series)) => json_ok(&series),
        Some(Err(e)) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        None => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the tape could not be read",
        ),
    }
}

/// `/api/live?since=SEQ&bucket=µs`: Server-Sent Events; `Last-Event-ID` (sent by the browser
/// on a reconnect) overrides `since`.
async fn api_live(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let parsed = (|| {
        let last = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| "Last-Event-ID is not a sequence number".to_string())
            })
            .transpose()?;
        let since = param::<u64>(&q, "since", "a sequence number")?;
        let bucket = param::<i64>(&q, "bucket", "a bucket width in µs")?.unwrap_or(100_000);
        if bucket < 1 {
            return Err("`bucket` must be at least 1 µs".to_string());
        }
        Ok((last.or(since), bucket))
    })();
    let (since, bucket) = match parsed {
        Ok(p) => p,
        Err(why) => return json_error(StatusCode::BAD_REQUEST, &why),
    };
    let Ok(permit) = app.clients.clone().try_acquire_owned() else {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "{} pages are open already (the most this server takes: --max-clients); close one and reload",
                app.max_clients
            ),
        );
    };
    let (tx, rx) = mpsc::channel::<plot::Live>(4);
    let a = app.clone();
    let spawned = std::thread::Builder::new()
        .name("tapedeck-serve-live".into())
        .spawn(move || {
            let since = match since {
                Some(s) => s,
                None => status::acknowledged(&a.dir).unwrap_or(0),
            };
            // A page that stops reading fills its queue: wait for room, but give up when the
            // server stops (a blocked send would hold the shutdown).
            let send = |m: plot::Live| {
                let mut m = m;
                loop {
                    match tx.try_send(m) {
                        Ok(()) => return true,
                        Err(mpsc::error::TrySendError::Closed(_)) => return false,
                        Err(mpsc::error::TrySendError::Full(back)) => {
                            if a.stop.load(Ordering::Relaxed) {
                                return false;
                            }
                            m = back;
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
            };
            plot::follow(&a.dir, since, bucket, &a.status, &a.head, &a.stop, &send);
        });
    if let Err(e) = spawned {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("cannot start a stream: {e}"),
        );
    }
    let first = Arc::new(AtomicBool::new(true));
    let stream = futures_util::stream::unfold((rx, permit), move |(mut rx, permit)| {
        let first = first.clone();
        async move {
            let m = rx.recv().await?;
            let mut event = match m {
                plot::Live::Data { to, json, .. } => {
                    Event::default().event("data").id(to.to_string()).data(json)
                }
                plot::Live::Status(json) => Event::default().event("status").data(json),
                plot::Live::Notice(text) => Event::default().event("notice").data(text),
            };
            if first.swap(false, Ordering::Relaxed) {
                event = event.retry(Duration::from_secs(1));
            }
            Some((Ok::<_, Infallible>(event), (rx, permit)))
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `/api/meta`: the run metadata now and its last 200 changes (none: `null` and `[]`).
async fn api_meta(State(app): State<Arc<App>>) -> Response {
    let path = app.dir.join(tapedeck::tape::META_FILE);
    let answer = blocking(move || -> Result<serde_json::Value, String> {
        if !path.exists() {
            return Ok(serde_json::json!({ "value": null, "history": [] }));
        }
        let journal = tapedeck::journal::Journal::<serde_json::Value>::open_read_only(&path)
            .map_err(|e| e.to_string())?;
        let mut history = journal.all_records().map_err(|e| e.to_string())?;
        let skip = history.len().saturating_sub(200);
        history.drain(..skip);
        Ok(serde_json::json!({ "value": journal.value(), "history": history }))
    })
    .await;
    match answer {
        Some(Ok(v)) => json_ok(&v),
        Some(Err(e)) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e),
        None => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metadata could not be read",
        ),
    }
}

/// `POST /api/sql` with `{"sql": "…"}`.
async fn api_sql(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    // JSON only: a form or a `no-cors` fetch of another page cannot send this type.
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the query as Content-Type: application/json",
        );
    }
    let sql = match serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("sql")?.as_str().map(str::to_string))
    {
        Some(s) if !s.trim().is_empty() => s,
        _ => return json_error(StatusCode::BAD_REQUEST, "send {\"sql\": \"SELECT …\"}"),
    };
    let Ok(_permit) = app.heavy.acquire().await else {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping");
    };
    run_sql(&app.dir, &sql).await
}

#[cfg(feature = "sql")]
async fn run_sql(dir: &Path, sql: &str) -> Response {
    match sql::run(dir, sql).await {
        Ok(answer) => json_ok(&answer),
        Err(e) => json_error(StatusCode::BAD_REQUEST, &e),
    }
}

#[cfg(not(feature = "sql"))]
async fn run_sql(_dir: &Path, _sql: &str) -> Response {
    json_error(
        StatusCode::NOT_IMPLEMENTED,
        "this tapedeck was built without the query engine: build it with `cargo build --release --features query`",
    )
}
