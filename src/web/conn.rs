//! One accepted connection: the TLS handshake (bounded by the header-read timeout), then HTTP/2
//! when ALPN chose `h2`, HTTP/1.1 otherwise (plain HTTP is always HTTP/1.1).
//!
//! HTTP/1.1 gets hyper's header-read timeout, head size and header count limits. hyper has no
//! timeouts for HTTP/2, so this file adds the equivalents per connection: a connection with no
//! request in flight for the header-read timeout (never sent its preface, dribbles a request's
//! headers, or sits idle) is sent GOAWAY and closed; a response whose client grants no flow
//! control window for the write timeout gets the connection closed (the TCP write timeout of
//! `write_timeout` cannot see that stall). The head size is hyper's `max_header_list_size`, the
//! header count is checked by the server's handler, the number of streams is bounded.
//!
//! It owns the protocol choice and these watchdogs only; what a request gets is the handler's
//! business (`web::server`), which it receives as a function.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::web::write_timeout::WriteTimeout;

/// HTTP/2 response bodies are handed to hyper in pieces of this size, so that a client that
/// stops granting flow-control window is seen as a body that stops being read.
const H2_CHUNK: usize = 8 * 1024;
/// HTTP/2 receive windows: request bodies are tiny here (a few KiB at most are read), so a
/// client cannot park more than this much unread data per stream and per connection.
const H2_STREAM_WINDOW: u32 = 64 * 1024;
const H2_CONNECTION_WINDOW: u32 = 256 * 1024;

/// The limits a connection needs (from the server's `Limits`).
#[derive(Debug, Clone)]
pub(super) struct ConnLimits {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub write_timeout: Duration,
    pub max_concurrent_streams: u32,
}

/// The protocol builders, made once per server.
pub(super) struct Protocols {
    h1: hyper::server::conn::http1::Builder,
    h2: hyper::server::conn::http2::Builder<TokioExecutor>,
    limits: ConnLimits,
}

impl Protocols {
    pub fn new(limits: ConnLimits) -> Self {
        let mut h1 = hyper::server::conn::http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes.max(8192))
            .max_headers(limits.max_headers)
            .keep_alive(true);
        let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(limits.max_concurrent_streams.max(1))
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONNECTION_WINDOW)
            .max_send_buf_size(H2_CHUNK * 2);
        Protocols { h1, h2, limits }
    }
}

/// Serves one connection until it ends or `stop` fires and in-flight requests finish.
/// `watcher` keeps the server's graceful shutdown waiting for it.
pub(super) async fn serve<H, F>(
    protocols: &Protocols,
    io: WriteTimeout<TcpStream>,
    tls: Option<TlsAcceptor>,
    peer: SocketAddr,
    handler: H,
    watcher: Watcher,
    stop: &CancellationToken,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let h1_service = {
        let handler = handler.clone();
        service_fn(move |req| {
            let f = handler(req);
            async move { Ok::<_, Infallible>(f.await) }
        })
    };
    let result = match tls {
        None => {
            watcher
                .watch(protocols.h1.serve_connection(TokioIo::new(io), h1_service))
                .await
        }
        Some(acceptor) => {
            let handshake = tokio::select! {
                _ = stop.cancelled() => return,
                h = tokio::time::timeout(protocols.limits.header_read_timeout, acceptor.accept(io)) => h,
            };
            let tls = match handshake {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, %peer, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                serve_h2(protocols, tls, peer, handler, watcher, stop).await
            } else {
                watcher
                    .watch(protocols.h1.serve_connection(TokioIo::new(tls), h1_service))
                    .await
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, %peer, "connection ended with an error");
    }
}

async fn serve_h2<H, F>(
    protocols: &Protocols,
    tls: tokio_rustls::server::TlsStream<WriteTimeout<TcpStream>>,
    peer: SocketAddr,
    handler: H,
    watcher: Watcher,
    stop: &CancellationToken,
) -> Result<(), hyper::Error>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = activity.clone();
        service_fn(move |req| {
            let handling = Handling::start(&activity);
            let f = handler(req);
            async move {
                let response = f.await;
                let sending = handling.into_sending();
                Ok::<_, Infallible>(response.map(|body| Chunked::new(body, sending)))
            }
        })
    };
    let idle = protocols.limits.header_read_timeout;
    let stall = protocols.limits.write_timeout;
    let mut conn = pin!(protocols.h2.serve_connection(TokioIo::new(tls), service));
    let mut shutting_down = false;
    // Held until the connection ends: the server's graceful shutdown waits for it.
    let _watcher = watcher;
    loop {
        let check_at = activity.next_check(idle, stall);
        tokio::select! {
            result = conn.as_mut() => return result,
            _ = stop.cancelled(), if !shutting_down => {
                conn.as_mut().graceful_shutdown();
                shutting_down = true;
            }
            _ = tokio::time::sleep_until(check_at) => match activity.verdict(idle, stall) {
                Verdict::Busy => {}
                Verdict::Idle if !shutting_down => {
                    tracing::debug!(%peer, "HTTP/2 connection idle; sending GOAWAY");
                    conn.as_mut().graceful_shutdown();
                    shutting_down = true;
                    activity.touch();
                }
                Verdict::Idle => {
                    tracing::debug!(%peer, "HTTP/2 connection still open after GOAWAY; closing");
                    return Ok(());
                }
                Verdict::Stalled => {
                    tracing::debug!(%peer, "HTTP/2 client read nothing of a response; closing");
                    return Ok(());
                }
            },
        }
    }
}

/// What an HTTP/2 connection is doing.
struct Activity {
    state: Mutex<ActivityState>,
}

struct ActivityState {
    /// Requests whose handler runs.
    handling: usize,
    /// Responses whose body hyper has not finished taking.
    sending: usize,
    /// The last request start, handler end or body progress.
    last: Instant,
}

enum Verdict {
    Busy,
    /// Nothing in flight for the idle timeout.
    Idle,
    /// Only responses in flight, none of which progressed for the stall timeout.
    Stalled,
}

impl Activity {
    fn new() -> Self {
        Activity {
            state: Mutex::new(ActivityState {
                handling: 0,
                sending: 0,
                last: Instant::now(),
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut ActivityState) -> T) -> T {
        // A poisoned lock only means a panic elsewhere mid-update; the counts stay usable.
        let mut state = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut state)
    }

    fn touch(&self) {
        self.with(|s| s.last = Instant::now());
    }

    fn next_check(&self, idle: Duration, stall: Duration) -> Instant {
        self.with(|s| {
            let now = Instant::now();
            let at = match (s.handling, s.sending) {
                (0, 0) => s.last + idle,
                (0, _) => s.last + stall,
                _ => now + idle,
            };
            at.max(now)
        })
    }

    fn verdict(&self, idle: Duration, stall: Duration) -> Verdict {
        self.with(|s| {
            let quiet = Instant::now().saturating_duration_since(s.last);
            match (s.handling, s.sending) {
                (0, 0) if quiet >= idle => Verdict::Idle,
                (0, n) if n > 0 && quiet >= stall => Verdict::Stalled,
                _ => Verdict::Busy,
            }
        })
    }
}

/// A request whose handler runs; dropped without a response when the stream is reset.
struct Handling {
    activity: Option<Arc<Activity>>,
}

impl Handling {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.with(|s| {
            s.handling = s.handling.saturating_add(1);
            s.last = Instant::now();
        });
        Handling {
            activity: Some(activity.clone()),
        }
    }

    fn into_sending(mut self) -> Sending {
        let activity = self.activity.take();
        if let Some(a) = &activity {
            a.with(|s| {
                s.handling = s.handling.saturating_sub(1);
                s.sending = s.sending.saturating_add(1);
                s.last = Instant::now();
            });
        }
        Sending { activity }
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        if let Some(a) = &self.activity {
            a.with(|s| {
                s.handling = s.handling.saturating_sub(1);
                s.last = Instant::now();
            });
        }
    }
}

/// A response body hyper has not finished taking.
struct Sending {
    activity: Option<Arc<Activity>>,
}

impl Sending {
    fn progress(&self) {
        if let Some(a) = &self.activity {
            a.touch();
        }
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        if let Some(a) = &self.activity {
            a.with(|s| {
                s.sending = s.sending.saturating_sub(1);
                s.last = Instant::now();
            });
        }
    }
}

/// A response body in pieces of [`H2_CHUNK`], each one counted as progress. hyper asks for the
/// next piece only when the client's flow-control window took the previous one.
struct Chunked {
    inner: Full<Bytes>,
    pending: Bytes,
    sending: Sending,
}

impl Chunked {
    fn new(inner: Full<Bytes>, sending: Sending) -> Self {
        Chunked {
            inner,
            pending: Bytes::new(),
            sending,
        }
    }
}

impl Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.pending.is_empty() {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(mut data) => self.pending = data.copy_to_bytes(data.remaining()),
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return other,
            }
        }
        let n = self.pending.len().min(H2_CHUNK);
        let chunk = self.pending.split_to(n);
        self.sending.progress();
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        let pending = self.pending.len() as u64;
        hint.set_lower(hint.lower().saturating_add(pending));
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper.saturating_add(pending));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_tells_idle_from_busy_from_stalled() {
        let idle = Duration::from_secs(10);
        let stall = Duration::from_secs(30);
        let a = Arc::new(Activity::new());
        assert!(matches!(a.verdict(idle, stall), Verdict::Busy));
        tokio::time::advance(idle).await;
        assert!(matches!(a.verdict(idle, stall), Verdict::Idle));
        // A running handler keeps the connection busy however long it takes.
        let h = Handling::start(&a);
        tokio::time::advance(stall * 2).await;
        assert!(matches!(a.verdict(idle, stall), Verdict::Busy));
        // A response that makes no progress is a stall after the write timeout, not before.
        let s = h.into_sending();
        tokio::time::advance(idle).await;
        assert!(matches!(a.verdict(idle, stall), Verdict::Busy));
        tokio::time::advance(stall - idle).await;
        assert!(matches!(a.verdict(idle, stall), Verdict::Stalled));
        s.progress();
        assert!(matches!(a.verdict(idle, stall), Verdict::Busy));
        drop(s);
        tokio::time::advance(idle).await;
        assert!(matches!(a.verdict(idle, stall), Verdict::Idle));
        assert!(a.next_check(idle, stall) >= Instant::now());
    }

    #[tokio::test]
    async fn bodies_come_in_chunks_and_keep_their_length() {
        let a = Arc::new(Activity::new());
        let data = Bytes::from(vec![7u8; H2_CHUNK * 2 + 5]);
        let mut body = Chunked::new(Full::new(data.clone()), Handling::start(&a).into_sending());
        assert_eq!(body.size_hint().exact(), Some(data.len() as u64));
        let mut sizes = Vec::new();
        let mut all = Vec::new();
        while let Some(frame) = body.frame().await {
            let d = frame.expect("frame").into_data().expect("data");
            sizes.push(d.len());
            all.extend_from_slice(&d);
        }
        assert_eq!(sizes, vec![H2_CHUNK, H2_CHUNK, 5]);
        assert_eq!(all, data.to_vec());
        assert!(body.is_end_stream());
        drop(body);
        assert_eq!(a.with(|s| (s.handling, s.sending)), (0, 0));
    }
}
