//! The HTTP server (hyper 1.x): `/metrics` (or the configured path), the landing page `/`,
//! `/-/healthy`, `/-/ready` and `POST /-/reload`, with gzip when asked and graceful shutdown.
//!
//! It owns routing, content negotiation and connection limits. It reads metrics and readiness
//! from shared state and must never call DLI: a scrape costs the same whatever DLI does.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, REVISION, VERSION};
use crate::store::SnapshotStore;

/// Connections served at once; further ones wait in the listen backlog.
const MAX_CONNECTIONS: usize = 512;
/// Time a client has to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head accepted.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How long shutdown waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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
}

type Body = Full<Bytes>;

/// Serves until `shutdown` fires, then stops accepting and lets in-flight requests finish
/// (for at most a few seconds). Connections still open when it returns are closed: nothing is
/// served after it.
pub async fn serve(listener: TcpListener, state: Arc<ServerState>, shutdown: CancellationToken) {
    let graceful = GracefulShutdown::new();
    // Ends every connection task when `serve` returns (or is dropped), after the grace period.
    let close_all = CancellationToken::new();
    let _close_all_on_return = close_all.clone().drop_guard();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
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
        let state = state.clone();
        let service = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle(req, &state, peer).await) }
        });
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let watched = graceful.watch(conn);
        let close = close_all.clone();
        tokio::spawn(async move {
            tokio::select! {
                result = watched => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                }
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
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("connections still open after the shutdown grace period"),
    }
}

async fn handle(req: Request<Incoming>, state: &ServerState, _peer: SocketAddr) -> Response<Body> {
    let path = req.uri().path();
    let method = req.method();
    let is_get = method == Method::GET || method == Method::HEAD;
    let head = method == Method::HEAD;
    let response = if path == state.telemetry_path {
        if is_get {
            metrics_response(
                state,
                accepts_gzip(req.headers().get(header::ACCEPT_ENCODING)),
            )
        } else {
            method_not_allowed("GET, HEAD")
        }
    } else {
        match path {
            "/" if is_get => landing_page(state),
            "/-/healthy" if is_get => text(StatusCode::OK, "Healthy\n".into()),
            "/-/ready" if is_get => {
                let (attempted, total) = state.store.attempted();
                if attempted == total {
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
            _ => text(
                StatusCode::NOT_FOUND,
                format!("404 page not found: {path}\n"),
            ),
        }
    };
    if head {
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, Full::new(Bytes::new()));
    }
    response
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
    // Rendered (and gzipped) once per change, not per scrape: see crate::render_cache.
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
