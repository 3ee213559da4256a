//! The HTTP server (hyper 1.x): `/metrics` (or the configured path), the landing page `/`,
//! `/-/healthy`, `/-/ready` and `POST /-/reload`, with gzip when asked and graceful shutdown;
//! TLS, basic auth and extra headers from the web config ([`crate::web::config`]).
//!
//! It owns routing, content negotiation and the limits that keep one client from hurting the
//! others: connections, request head and body size, methods, concurrent scrapes, slow senders
//! (header-read timeout, which also covers the TLS handshake) and stalled readers (write
//! timeout). Each connection runs in its own task, so a stuck client never delays other scrapes
//! or the pollers. It reads metrics and readiness from shared state and must never call DLI: a
//! scrape costs the same whatever DLI does.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::SnapshotStore;
use crate::version::{REVISION, VERSION};
use crate::web::basic_auth;
use crate::web::config::{ActiveWebConfig, WebConfigWatcher};
use crate::web::conn::{self, ConnLimits, Protocols};
use crate::web::write_timeout::WriteTimeout;

/// Connections served at once; further ones wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 512;
/// Time a client has to complete the TLS handshake, and then to send each request head
/// (also how long an idle keep-alive connection stays open). Against slowloris.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers) accepted; larger ones get 431. hyper needs at
/// least 8 KiB.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most header fields in one request; more get 431.
pub const MAX_HEADERS: usize = 64;
/// Requests one HTTP/2 connection may have in flight at once.
pub const MAX_CONCURRENT_STREAMS: u32 = 16;
/// Largest request body accepted (GET, HEAD and `POST /-/reload` need none); larger ones get 413
/// and the connection is closed without reading the rest.
pub const MAX_BODY_BYTES: usize = 4 * 1024;
/// Scrapes rendered at once.
pub const MAX_CONCURRENT_SCRAPES: usize = 4;
/// Scrapes that may wait for a render slot; more get 503 with `Retry-After` at once.
pub const MAX_QUEUED_SCRAPES: usize = 16;
/// How long a queued scrape waits for a render slot before it gets 503.
pub const SCRAPE_QUEUE_WAIT: Duration = Duration::from_secs(2);
/// A client that reads nothing of its response for this long is disconnected.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for in-flight requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// `Retry-After` (seconds) of a 503 for too many scrapes.
const RETRY_AFTER_SECS: &str = "1";

/// The server's limits; [`Limits::default`] is the constants above. Tests shorten them.
#[derive(Debug, Clone)]
pub struct Limits {
    /// [`MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// [`HEADER_READ_TIMEOUT`]; also bounds the TLS handshake and reading a request body.
    pub header_read_timeout: Duration,
    /// [`MAX_HEADER_BYTES`].
    pub max_header_bytes: usize,
    /// [`MAX_HEADERS`].
    pub max_headers: usize,
    /// [`MAX_BODY_BYTES`].
    pub max_body_bytes: usize,
    /// [`MAX_CONCURRENT_STREAMS`].
    pub max_concurrent_streams: u32,
    /// [`MAX_CONCURRENT_SCRAPES`].
    pub max_concurrent_scrapes: usize,
    /// [`MAX_QUEUED_SCRAPES`].
    pub max_queued_scrapes: usize,
    /// [`SCRAPE_QUEUE_WAIT`].
    pub scrape_queue_wait: Duration,
    /// [`WRITE_TIMEOUT`].
    pub write_timeout: Duration,
    /// [`SHUTDOWN_GRACE`].
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_header_bytes: MAX_HEADER_BYTES,
            max_headers: MAX_HEADERS,
            max_body_bytes: MAX_BODY_BYTES,
            max_concurrent_streams: MAX_CONCURRENT_STREAMS,
            max_concurrent_scrapes: MAX_CONCURRENT_SCRAPES,
            max_queued_scrapes: MAX_QUEUED_SCRAPES,
            scrape_queue_wait: SCRAPE_QUEUE_WAIT,
            write_timeout: WRITE_TIMEOUT,
            shutdown_grace: SHUTDOWN_GRACE,
        }
    }
}

/// Content type of the text exposition format 0.0.4. `prometheus::TEXT_FORMAT` leaves out the
/// charset; the format is UTF-8 (label values such as owner names are not ASCII).
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Re-reads the configuration; the error says why the old one is still running.
pub type ReloadFn =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// What the handlers read.
pub struct ServerState {
    pub metrics: Arc<Metrics>,
    pub store: Arc<SnapshotStore>,
    pub telemetry_path: String,
    /// `POST /-/reload`; `None` answers 503.
    pub reload: Option<ReloadFn>,
    /// TLS, auth and headers; `None` serves plain HTTP without auth.
    pub web: Option<Arc<WebConfigWatcher>>,
    pub limits: Limits,
    /// Render slots and the bounded queue in front of them.
    pub scrapes: ScrapeGate,
}

impl ServerState {
    /// State with the default limits and no web config.
    pub fn new(
        metrics: Arc<Metrics>,
        store: Arc<SnapshotStore>,
        telemetry_path: String,
        reload: Option<ReloadFn>,
    ) -> Self {
        Self::with_options(
            metrics,
            store,
            telemetry_path,
            reload,
            None,
            Limits::default(),
        )
    }

    pub fn with_options(
        metrics: Arc<Metrics>,
        store: Arc<SnapshotStore>,
        telemetry_path: String,
        reload: Option<ReloadFn>,
        web: Option<Arc<WebConfigWatcher>>,
        limits: Limits,
    ) -> Self {
        let scrapes = ScrapeGate::new(&limits);
        ServerState {
            metrics,
            store,
            telemetry_path,
            reload,
            web,
            limits,
            scrapes,
        }
    }
}

/// At most `max_concurrent_scrapes` renders at once; at most `max_queued_scrapes` waiting, each
/// for at most `scrape_queue_wait`.
pub struct ScrapeGate {
    slots: Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
    wait: Duration,
}

/// Decrements the waiting count however the wait ends (including a dropped connection).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ScrapeGate {
    fn new(limits: &Limits) -> Self {
        ScrapeGate {
            slots: Semaphore::new(limits.max_concurrent_scrapes.max(1)),
            waiting: AtomicUsize::new(0),
            max_waiting: limits.max_queued_scrapes,
            wait: limits.scrape_queue_wait,
        }
    }

    /// A render slot, or `None` when the queue is full or the wait ran out.
    async fn enter(&self) -> Option<SemaphorePermit<'_>> {
        if let Ok(p) = self.slots.try_acquire() {
            return Some(p);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let _waiting = Waiting(&self.waiting);
        match tokio::time::timeout(self.wait, self.slots.acquire()).await {
            Ok(Ok(p)) => Some(p),
            _ => None,
        }
    }
}

type Body = Full<Bytes>;

/// Serves until `shutdown` fires, then stops accepting and lets in-flight requests finish
/// (for at most a few seconds). Connections still open when it returns are closed: nothing is
/// served after it.
pub async fn serve(listener: TcpListener, state: Arc<ServerState>, shutdown: CancellationToken) {
    let limits = state.limits.clone();
    let graceful = GracefulShutdown::new();
    // Ends every connection task when `serve` returns (or is dropped), after the grace period.
    let close_all = CancellationToken::new();
    let _close_all_on_return = close_all.clone().drop_guard();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let protocols = Arc::new(Protocols::new(ConnLimits {
        header_read_timeout: limits.header_read_timeout,
        max_header_bytes: limits.max_header_bytes,
        max_headers: limits.max_headers,
        write_timeout: limits.write_timeout,
        max_concurrent_streams: limits.max_concurrent_streams,
    }));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let io = WriteTimeout::new(stream, limits.write_timeout);
        let tls = state.web.as_ref().and_then(|w| w.current().tls.clone());
        let state = state.clone();
        let handler = move |req| {
            let state = state.clone();
            async move { handle(req, &state, peer).await }
        };
        let protocols = protocols.clone();
        let watcher = graceful.watcher();
        let close = close_all.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = conn::serve(&protocols, io, tls, peer, handler, watcher, &stop) => {}
                _ = close.cancelled() => {
                    tracing::debug!(%peer, "connection closed at the end of the shutdown grace period");
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.shutdown_grace) => tracing::warn!("connections still open after the shutdown grace period"),
    }
}

/// Applies limits, auth and the web config headers around [`route`].
async fn handle(req: Request<Incoming>, state: &ServerState, _peer: SocketAddr) -> Response<Body> {
    let web = state.web.as_ref().map(|w| w.current());
    let head = req.method() == Method::HEAD;
    // hyper enforces this for HTTP/1.1 only.
    if req.headers().len() > state.limits.max_headers {
        return text(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "431 too many header fields\n".into(),
        );
    }
    let mut response = match web.as_ref().and_then(|w| w.rate_limit.as_ref()) {
        // Refused before authentication, so a flood costs no bcrypt work.
        Some(limit) if !limit.allow() => {
            let mut r = text(
                StatusCode::TOO_MANY_REQUESTS,
                "429 too many requests (web config rate_limit)\n".into(),
            );
            if let Some(v) = limit
                .retry_after_secs()
                .and_then(|s| HeaderValue::from_str(&s.to_string()).ok())
            {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        _ => guarded(req, state, web.as_deref()).await,
    };
    if let Some(web) = &web {
        for (name, value) in &web.headers {
            response.headers_mut().insert(name.clone(), value.clone());
        }
    }
    if head {
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, Full::new(Bytes::new()));
    }
    response
}

async fn guarded(
    req: Request<Incoming>,
    state: &ServerState,
    web: Option<&ActiveWebConfig>,
) -> Response<Body> {
    let limit = state.limits.max_body_bytes;
    // `Connection: close` exists in HTTP/1 only; HTTP/2 ends just the stream.
    let h1 = req.version() < Version::HTTP_2;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large(limit, h1);
    }
    if let Some(auth) = web.and_then(|w| w.auth.as_ref())
        && !auth.check(req.headers().get(header::AUTHORIZATION)).await
    {
        let mut r = text(StatusCode::UNAUTHORIZED, "401 Unauthorized\n".into());
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(basic_auth::CHALLENGE),
        );
        return r;
    }
    let (parts, body) = req.into_parts();
    // Read (and drop) what body there is, never more than the limit, so keep-alive works.
    match tokio::time::timeout(state.limits.header_read_timeout, drain_body(body, limit)).await {
        Ok(Ok(())) => {}
        Ok(Err(DrainError::TooLarge)) => return too_large(limit, h1),
        Ok(Err(DrainError::Broken)) | Err(_) => {
            let mut r = text(StatusCode::BAD_REQUEST, "400 bad request body\n".into());
            if h1 {
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return r;
        }
    }
    route(Request::from_parts(parts, ()), state).await
}

enum DrainError {
    TooLarge,
    Broken,
}

async fn drain_body(mut body: Incoming, limit: usize) -> Result<(), DrainError> {
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| DrainError::Broken)?;
        if let Some(data) = frame.data_ref() {
            seen = seen.saturating_add(data.len());
            if seen > limit {
                return Err(DrainError::TooLarge);
            }
        }
    }
    Ok(())
}

fn too_large(limit: usize, h1: bool) -> Response<Body> {
    let mut r = text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("413 request body larger than {limit} bytes\n"),
    );
    if h1 {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

async fn route(req: Request<()>, state: &ServerState) -> Response<Body> {
    let path = req.uri().path();
    let method = req.method();
    let is_get = method == Method::GET || method == Method::HEAD;
    if path == state.telemetry_path {
        if !is_get {
            return method_not_allowed("GET, HEAD");
        }
        let Some(_slot) = state.scrapes.enter().await else {
            let mut r = text(
                StatusCode::SERVICE_UNAVAILABLE,
                "503 too many concurrent scrapes; retry later\n".into(),
            );
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
            return r;
        };
        return metrics_response(
            state,
            accepts_gzip(req.headers().get(header::ACCEPT_ENCODING)),
        );
    }
    match path {
        "/" if is_get => landing_page(state),
        "/-/healthy" if is_get => text(StatusCode::OK, "Healthy\n".into()),
        "/-/ready" if is_get => {
            let (attempted, total) = state.store.attempted();
            let discovering = state.store.pending_discoveries();
            if discovering > 0 {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "Not ready: the first queue discovery of {discovering} project(s) has not ended\n"
                    ),
                )
            } else if attempted == total {
                text(StatusCode::OK, "Ready\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "Not ready: {attempted} of {total} queues have completed a first poll\n"
                    ),
                )
            }
        }
        "/-/reload" if method == Method::POST => match &state.reload {
            Some(reload) => match reload().await {
                Ok(()) => text(StatusCode::OK, "Reloaded\n".into()),
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("reload failed: {e}\n"),
                ),
            },
            None => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "reload is not available\n".into(),
            ),
        },
        "/-/reload" => method_not_allowed("POST"),
        "/" | "/-/healthy" | "/-/ready" => method_not_allowed("GET, HEAD"),
        // Any other path is 404 whatever the method (docs/architecture.md, "HTTP endpoints").
        _ => text(
            StatusCode::NOT_FOUND,
            format!("404 page not found: {path}\n"),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = text(
        StatusCode::METHOD_NOT_ALLOWED,
        "405 method not allowed\n".into(),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn metrics_response(state: &ServerState, gzip: bool) -> Response<Body> {
    // Rendered (and gzipped) once per change, not per scrape: see crate::metrics::render_cache.
    let exposition = state.metrics.exposition(gzip);
    let mut r = Response::new(Full::new(exposition.body));
    if exposition.gzip {
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(METRICS_CONTENT_TYPE),
    );
    r.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    r
}

/// True when `Accept-Encoding` lists gzip (or `*`) with a non-zero quality.
pub fn accepts_gzip(value: Option<&HeaderValue>) -> bool {
    let Some(v) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    v.split(',').any(|item| {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        if coding != "gzip" && coding != "x-gzip" && coding != "*" {
            return false;
        }
        let q = parts
            .filter_map(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .map(|q| q.trim().parse::<f32>().unwrap_or(0.0))
            })
            .next()
            .unwrap_or(1.0);
        q > 0.0
    })
}

fn landing_page(state: &ServerState) -> Response<Body> {
    let path = html_escape(&state.telemetry_path);
    let queues: String = state
        .store
        .view()
        .iter()
        .map(|(k, s)| {
            format!(
                "<li><code>{}</code> / <code>{}</code>: {}</li>",
                html_escape(&k.project_id),
                html_escape(&k.queue),
                match (s.attempted, s.last_success) {
                    (false, _) => "not polled yet",
                    (true, true) => "last poll succeeded",
                    (true, false) => "last poll failed",
                }
            )
        })
        .collect();
    let body = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>DLI Exporter</title></head>\n<body>\n\
         <h1>DLI Exporter</h1>\n<p>Prometheus exporter for Huawei Cloud DLI Spark batch jobs. \
         Version {VERSION} (revision {REVISION}).</p>\n<ul>\n<li><a href=\"{path}\">Metrics</a></li>\n\
         <li><a href=\"/-/healthy\">Health</a></li>\n<li><a href=\"/-/ready\">Readiness</a></li>\n</ul>\n\
         <h2>Queues</h2>\n<ul>{queues}</ul>\n</body></html>\n"
    );
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn scrape_gate_queues_briefly_then_refuses() {
        let gate = ScrapeGate::new(&Limits {
            max_concurrent_scrapes: 1,
            max_queued_scrapes: 1,
            scrape_queue_wait: Duration::from_millis(50),
            ..Limits::default()
        });
        let first = gate.enter().await.expect("a free slot");
        // The queue holds one waiter; a second waiter is refused at once.
        let (queued, refused) = tokio::join!(gate.enter(), async {
            tokio::task::yield_now().await;
            gate.enter().await.is_none()
        });
        assert!(refused, "a second waiter was queued");
        assert!(
            queued.is_none(),
            "the waiter got a slot that was never freed"
        );
        assert_eq!(gate.waiting.load(Ordering::Acquire), 0);
        drop(first);
        // A waiter gets the slot when it frees within the wait.
        let held = gate.enter().await.expect("slot");
        let (got, ()) = tokio::join!(gate.enter(), async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(held);
        });
        assert!(got.is_some());
    }

    #[test]
    fn gzip_negotiation() {
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert!(accepts_gzip(Some(&h("gzip"))));
        assert!(accepts_gzip(Some(&h("deflate, gzip;q=0.5"))));
        assert!(accepts_gzip(Some(&h("*"))));
        assert!(!accepts_gzip(Some(&h("gzip;q=0"))));
        assert!(!accepts_gzip(Some(&h("identity"))));
        assert!(!accepts_gzip(None));
    }
}
