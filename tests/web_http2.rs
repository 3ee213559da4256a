//! HTTP/2 over TLS (ALPN `h2`, `http_server_config.http2`, on by default) and the server's
//! limits on HTTP/2 connections: header count and size, body size, idle connections and
//! connections that never send their preface, clients that grant no flow-control window, the
//! connection limit. Plain HTTP and `http2: false` stay HTTP/1.1.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::web::*;
use dli_exporter::web::server::Limits;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

const BOTH: &[&[u8]] = &[b"h2", b"http/1.1"];

fn offer<'a>(ca: &'a Ca, alpn: &[&'static [u8]]) -> Offer<'a> {
    Offer {
        cas: vec![ca],
        alpn: alpn.to_vec(),
        ..Offer::default()
    }
}

/// A TLS connection with ALPN `h2` and an HTTP/2 client on it; `window` sets the client's
/// receive windows (hyper's defaults when `None`). The handle ends when the connection does.
async fn h2_client(
    addr: SocketAddr,
    ca: &Ca,
    window: Option<u32>,
) -> (SendRequest<Full<Bytes>>, JoinHandle<()>) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let tls = TlsConnector::from(Arc::new(client_config(&offer(ca, &[b"h2"]))))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    if let Some(w) = window {
        builder
            .initial_stream_window_size(w)
            .initial_connection_window_size(w)
            .adaptive_window(false);
    }
    let (send, conn) = builder
        .handshake(TokioIo::new(tls))
        .await
        .expect("h2 handshake");
    let handle = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, handle)
}

fn get(path: &str) -> hyper::Request<Full<Bytes>> {
    hyper::Request::get(format!("https://localhost{path}"))
        .body(Full::new(Bytes::new()))
        .expect("request")
}

async fn status_of(send: &mut SendRequest<Full<Bytes>>, req: hyper::Request<Full<Bytes>>) -> u16 {
    send.ready().await.expect("ready");
    match send.send_request(req).await {
        Ok(r) => r.status().as_u16(),
        Err(e) => panic!("request failed: {e:?}"),
    }
}

async fn https_server(tls_extra: &str, limits: Limits) -> (Ca, Served, tempfile::TempDir) {
    let ca = Ca::new("test CA");
    let (dir, path) = tls_dir(&ca.leaf("localhost", Usage::Server, false), tls_extra, &[]);
    let served = serve_web_limited(&path, limits).await;
    (ca, served, dir)
}

#[tokio::test]
async fn http2_is_chosen_by_alpn_and_http11_stays_available() {
    let (ca, s, dir) = https_server("", Limits::default()).await;
    let addr = s.app.addr;
    let x = exchange(addr, &offer(&ca, BOTH), "/metrics")
        .await
        .expect("h2");
    assert!(x.http2, "HTTP/2 not chosen");
    assert_eq!(x.status, 200);
    assert!(String::from_utf8_lossy(&x.body).contains("dli_up"));
    assert_eq!(
        x.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"text/plain; version=0.0.4; charset=utf-8"[..])
    );
    for alpn in [&[b"http/1.1" as &[u8]][..], &[]] {
        let x = exchange(addr, &offer(&ca, alpn), "/metrics")
            .await
            .expect("h1");
        assert!(!x.http2);
        assert_eq!(x.status, 200);
    }
    // Many requests over one HTTP/2 connection, some at once.
    let (send, _conn) = h2_client(addr, &ca, None).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut send = send.clone();
        tasks.push(tokio::spawn(async move {
            status_of(&mut send, get("/-/healthy")).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), 200);
    }
    drop(s);

    // http2: false: HTTP/1.1 even for a client that asks for h2.
    let path = dir.path().join("web-config.yml");
    let mut yml = std::fs::read_to_string(&path).expect("read");
    yml.push_str("http_server_config:\n  http2: false\n");
    std::fs::write(&path, yml).expect("write");
    let s = serve_web_limited(&path, Limits::default()).await;
    assert!(
        load_web(&path)
            .expect("loads")
            .current()
            .summary()
            .contains("on (HTTP/1.1)")
    );
    let x = exchange(s.app.addr, &offer(&ca, BOTH), "/metrics")
        .await
        .expect("h1");
    assert!(!x.http2, "HTTP/2 served with http2: false");
    assert_eq!(x.status, 200);
}

#[tokio::test]
async fn plain_http_does_not_speak_http2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("web.yml");
    std::fs::write(&path, "http_server_config:\n  http2: true\n").expect("write");
    let s = serve_web(&path).await;
    let tcp = TcpStream::connect(s.app.addr).await.expect("connect");
    // HTTP/2 with prior knowledge (h2c) is not served.
    let result = tokio::time::timeout(Duration::from_secs(3), async {
        let (mut send, conn) = hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
            TokioExecutor::new(),
            TokioIo::new(tcp),
        )
        .await?;
        tokio::spawn(conn);
        send.send_request(get("/metrics")).await
    })
    .await
    .expect("no answer within 3 s");
    assert!(result.is_err(), "h2c served: {result:?}");
    // HTTP/1.1 is.
    let r = common::http()
        .get(format!("http://{}/metrics", s.app.addr))
        .send()
        .await
        .expect("h1");
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), reqwest::StatusCode::OK);
}

#[tokio::test]
async fn header_and_body_limits_apply_to_http2_streams() {
    let limits = Limits {
        max_headers: 8,
        max_header_bytes: 8192,
        max_body_bytes: 16,
        ..Limits::default()
    };
    let (ca, s, _dir) = https_server("", limits).await;
    let (mut send, _conn) = h2_client(s.app.addr, &ca, None).await;
    let mut many = get("/metrics");
    for i in 0..12 {
        many.headers_mut().insert(
            format!("x-h{i}")
                .parse::<hyper::header::HeaderName>()
                .expect("name"),
            "v".parse().expect("value"),
        );
    }
    assert_eq!(status_of(&mut send, many).await, 431);
    let mut big = get("/metrics");
    big.headers_mut()
        .insert("x-big", "a".repeat(20_000).parse().expect("value"));
    send.ready().await.expect("ready");
    let r = send.send_request(big).await.map(|r| r.status().as_u16());
    println!("a 20 KB header over HTTP/2: {r:?}");
    assert!(
        r.as_ref().map_or(true, |s| *s == 431),
        "a 20 KB header was served: {r:?}"
    );
    // A body over the limit gets 413; the connection serves the next request.
    let (mut send, _conn) = h2_client(s.app.addr, &ca, None).await;
    let post = hyper::Request::post("https://localhost/-/reload")
        .body(Full::new(Bytes::from(vec![b'x'; 1000])))
        .expect("request");
    assert_eq!(status_of(&mut send, post).await, 413);
    assert_eq!(status_of(&mut send, get("/-/healthy")).await, 200);
}

#[tokio::test]
async fn idle_and_silent_http2_connections_are_closed_after_the_header_timeout() {
    let limits = Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let (ca, s, _dir) = https_server("", limits).await;
    // Idle after a request: GOAWAY, then closed.
    let (mut send, conn) = h2_client(s.app.addr, &ca, None).await;
    assert_eq!(status_of(&mut send, get("/-/healthy")).await, 200);
    let t = Instant::now();
    tokio::time::timeout(Duration::from_secs(3), conn)
        .await
        .expect("idle HTTP/2 connection still open after 3 s")
        .expect("task");
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );

    // A client that completes TLS with h2 and never sends its preface.
    let tcp = TcpStream::connect(s.app.addr).await.expect("connect");
    let mut tls = TlsConnector::from(Arc::new(client_config(&offer(&ca, &[b"h2"]))))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("handshake");
    let t = Instant::now();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), tls.read_to_end(&mut buf)).await;
    assert!(
        closed.is_ok(),
        "silent HTTP/2 connection still open after 3 s"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn an_http2_client_that_grants_no_window_is_disconnected_and_blocks_nobody() {
    let limits = Limits {
        header_read_timeout: Duration::from_millis(400),
        write_timeout: Duration::from_millis(400),
        max_connections: 2,
        ..Limits::default()
    };
    let (ca, s, _dir) = https_server("", limits).await;
    // A 1 KiB window and a response never read: the server cannot send the metrics page.
    let (mut send, conn) = h2_client(s.app.addr, &ca, Some(1024)).await;
    send.ready().await.expect("ready");
    let response = send.send_request(get("/metrics")).await.expect("head");
    assert_eq!(response.status(), 200);
    // Another client is served meanwhile (one connection slot is left).
    let x = exchange(s.app.addr, &offer(&ca, BOTH), "/metrics")
        .await
        .expect("served");
    assert_eq!(x.status, 200);
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("stalled HTTP/2 connection still open after 5 s")
        .expect("task");
    // Its slot is free again: two more connections at once are served.
    let both = offer(&ca, BOTH);
    let (a, b) = tokio::join!(
        exchange(s.app.addr, &both, "/-/healthy"),
        exchange(s.app.addr, &both, "/-/healthy")
    );
    assert_eq!(a.map(|x| x.status), Ok(200));
    assert_eq!(b.map(|x| x.status), Ok(200));
    // The unread body is cut short.
    let body = tokio::time::timeout(Duration::from_secs(3), response.into_body().collect()).await;
    assert!(
        !matches!(body, Ok(Ok(_))),
        "the whole body arrived through a 1 KiB window"
    );
}
