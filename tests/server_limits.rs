//! The server's limits over real loopback connections, with short timeouts from
//! `StartOptions::limits`: oversize heads (431), bodies (413), methods (405), slow senders,
//! clients that never read, the connection limit, and more concurrent scrapes than the limit
//! (503 + Retry-After).

mod common;

use std::time::{Duration, Instant};

use common::*;
use dli_exporter::app::{App, StartOptions};
use dli_exporter::sim::{SimConfig, Simulator};
use dli_exporter::web::server::Limits;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

struct Served {
    app: App,
    _sim: Simulator,
}

async fn start(limits: Limits) -> Served {
    let sim = sim(SimConfig::default()).await;
    let settings = settings(vec![project(&sim, &["q"], aksk())], fast_poll());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let app = App::start_with(
        &settings,
        listener,
        StartOptions {
            limits,
            ..StartOptions::default()
        },
    )
    .expect("exporter starts");
    Served { app, _sim: sim }
}

/// Sends `request` on a new connection and reads until the server closes it (at most 3 s).
async fn raw(app: &App, request: &[u8]) -> String {
    let mut s = TcpStream::connect(app.addr).await.expect("connect");
    s.write_all(request).await.expect("write request");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A scrape through a fresh client must be answered quickly.
async fn assert_prompt_scrape(app: &App) {
    let t = Instant::now();
    let r = http()
        .get(format!("http://{}/metrics", app.addr))
        .send()
        .await
        .expect("scrape");
    assert_eq!(r.status(), StatusCode::OK);
    r.text().await.expect("body");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "scrape took {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn oversize_heads_get_431() {
    let s = start(Limits::default()).await;
    let big = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let resp = raw(&s.app, big.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");

    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let resp = raw(
        &s.app,
        format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    assert_prompt_scrape(&s.app).await;
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_without_being_read() {
    let s = start(Limits::default()).await;
    // Declared too large: answered at once, the body is never waited for.
    let t = Instant::now();
    let resp = raw(
        &s.app,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("connection: close"),
        "{resp}"
    );
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    // Chunked, no length: read only up to the limit.
    let chunk = "a".repeat(8 * 1024);
    let resp = raw(
        &s.app,
        format!(
            "POST /-/reload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n",
            chunk.len()
        )
        .as_bytes(),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    // A small body on a GET is fine.
    let resp = raw(
        &s.app,
        b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[tokio::test]
async fn other_methods_get_405_with_allow() {
    let s = start(Limits::default()).await;
    let client = http();
    for (method, path, allow) in [
        (reqwest::Method::PUT, "/metrics", "GET, HEAD"),
        (reqwest::Method::DELETE, "/", "GET, HEAD"),
        (reqwest::Method::PATCH, "/-/reload", "POST"),
        (reqwest::Method::POST, "/-/healthy", "GET, HEAD"),
        (reqwest::Method::OPTIONS, "/-/ready", "GET, HEAD"),
    ] {
        let got = assert_method_not_allowed(&client, method.clone(), &url(&s.app, path)).await;
        assert_eq!(got, allow, "{method} {path}");
    }
    // An unknown path is 404 whatever the method (docs/architecture.md, "HTTP endpoints").
    for method in [
        reqwest::Method::GET,
        reqwest::Method::POST,
        reqwest::Method::OPTIONS,
    ] {
        let r = client
            .request(method.clone(), format!("http://{}/elsewhere", s.app.addr))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{method} /elsewhere");
    }
}

#[tokio::test]
async fn a_slow_sender_is_cut_off_while_others_are_served() {
    let s = start(Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let mut slow = TcpStream::connect(s.app.addr).await.expect("connect");
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow:")
        .await
        .expect("half a head");
    let t = Instant::now();
    // Others are served while it dawdles.
    for _ in 0..3 {
        assert_prompt_scrape(&s.app).await;
    }
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), slow.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "slow client still connected after 3 s");
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "closed too early: {:?}",
        t.elapsed()
    );
    assert!(
        !String::from_utf8_lossy(&buf).contains(" 200 "),
        "served a half head"
    );
}

#[tokio::test]
async fn a_client_that_never_reads_is_disconnected_and_blocks_nobody() {
    let s = start(Limits {
        write_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    const PIPELINED: usize = 500;
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("small receive buffer");
    let mut stuck = socket.connect(s.app.addr).await.expect("connect");
    let requests = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(PIPELINED);
    // The server stops reading requests once its responses back up; write what it takes.
    let _ = tokio::time::timeout(
        Duration::from_millis(500),
        stuck.write_all(requests.as_bytes()),
    )
    .await;
    // Others are served while it holds its connection.
    for _ in 0..3 {
        assert_prompt_scrape(&s.app).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Now read: the server gave up on it, so the stream ends before all responses came.
    let mut buf = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match stuck.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stuck connection is still open");
    let served = String::from_utf8_lossy(&buf)
        .matches("HTTP/1.1 200")
        .count();
    assert!(served < PIPELINED, "all {served} responses were delivered");
}

#[tokio::test]
async fn more_concurrent_scrapes_than_the_limit_are_served_fully_or_told_to_retry() {
    let s = start(Limits {
        max_concurrent_scrapes: 1,
        max_queued_scrapes: 2,
        scrape_queue_wait: Duration::from_millis(20),
        ..Limits::default()
    })
    .await;
    let client = http();
    let url = format!("http://{}/metrics", s.app.addr);
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let r = client.get(&url).send().await.expect("scrape");
                let status = r.status();
                let retry = r.headers().get("retry-after").cloned();
                let body = r.text().await.expect("body");
                (status, retry, body)
            })
        })
        .collect();
    let (mut ok, mut busy) = (0, 0);
    for t in tasks {
        let (status, retry, body) = t.await.expect("task");
        match status {
            StatusCode::OK => {
                assert!(body.contains("# TYPE dli_up gauge") && body.ends_with('\n'));
                ok += 1;
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(retry.is_some(), "503 without Retry-After");
                busy += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(ok >= 1, "nothing served ({busy} told to retry)");
    assert_eq!(ok + busy, 40);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let s = start(Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let mut conn = TcpStream::connect(s.app.addr).await.expect("connect");
    conn.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let mut buf = vec![0u8; 4096];
    let n = conn.read(&mut buf).await.expect("response");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let t = Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), conn.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "idle keep-alive connection still open after 3 s"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_until_a_slot_frees() {
    let s = start(Limits {
        max_connections: 3,
        header_read_timeout: Duration::from_millis(400),
        ..Limits::default()
    })
    .await;
    // Three idle connections take every slot.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(s.app.addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A fourth is accepted by the kernel but not served while the slots are taken...
    let t = Instant::now();
    let answer = raw(
        &s.app,
        b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // ...and is served once the header-read timeout has closed the idle ones.
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "served after {:?}: the connection limit did not hold",
        t.elapsed()
    );
    for mut c in idle {
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(2), c.read_to_end(&mut buf)).await;
        assert!(closed.is_ok(), "an idle connection was left open");
    }
}
