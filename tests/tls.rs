//! Outbound TLS, proxies and timeouts against the simulator behind a TLS terminator whose
//! certificates are made at test time: `ca_file` trusted in addition to the built-in roots for
//! both DLI and IAM, verification failures named with the URL, an expired certificate refused,
//! `proxy_url` and `HTTPS_PROXY`/`NO_PROXY` honoured (the config key winning), and the request
//! timeout against an endpoint that never answers or never completes the TLS handshake.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::child;
use common::net::{proxy, test_pki, tls_front};
use common::*;
use dli_exporter::config::{self, Env, Project};
use dli_exporter::dli::FailureReason;
use dli_exporter::sim::{DEMO_ACCESS_KEY, DEMO_SECRET_KEY, SimConfig, Simulator};

const Q: &str = "etl";

struct Fixture {
    sim: Simulator,
    tls: SocketAddr,
    dir: tempfile::TempDir,
    ca_path: std::path::PathBuf,
}

async fn fixture(expired: bool) -> Fixture {
    let sim = sim(SimConfig::default()).await;
    sim.set_jobs(PID, Q, numbered_jobs("tls", 250));
    let pki = test_pki(expired);
    let tls = tls_front(&pki, sim.addr()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &pki.ca_pem).expect("write ca");
    Fixture {
        sim,
        tls,
        dir,
        ca_path,
    }
}

fn https(addr: SocketAddr) -> String {
    format!("https://{addr}")
}

fn tls_project(f: &Fixture, ca: bool, token: bool) -> Project {
    let mut p = project(
        &f.sim,
        &[Q],
        if token { token_auth(&f.sim) } else { aksk() },
    );
    p.endpoint = https(f.tls);
    if let dli_exporter::config::Credentials::Token { iam_endpoint, .. } = &mut p.credentials {
        *iam_endpoint = https(f.tls);
    }
    p.ca_file = ca.then(|| f.ca_path.clone());
    p
}

#[tokio::test]
async fn with_ca_file_the_walk_succeeds_over_tls_for_dli_and_iam() {
    let f = fixture(false).await;
    for token in [false, true] {
        let c = client(&tls_project(&f, true, token), Duration::from_secs(3), 4);
        let (stats, jobs) = walk(&c, Q, &walk_options(100, 4, 0))
            .await
            .unwrap_or_else(|e| panic!("walk over TLS (token auth: {token}): {e}"));
        assert_eq!(stats.jobs, 250);
        assert_exactly_once(&jobs, &f.sim.jobs(PID, Q));
        if token {
            assert_eq!(c.tokens_fetched(), 1, "the IAM login went over TLS too");
        }
    }
}

#[tokio::test]
async fn without_ca_file_verification_fails_naming_the_url() {
    let f = fixture(false).await;
    for token in [false, true] {
        let c = client(&tls_project(&f, false, token), Duration::from_secs(3), 4);
        let err = walk(&c, Q, &walk_options(100, 4, 0))
            .await
            .expect_err("unknown CA must be refused");
        let source = err.request_error().expect("a request error");
        assert_eq!(source.reason(), FailureReason::Connect, "{err}");
        let msg = err.to_string();
        println!("untrusted certificate (token auth: {token}): {msg}");
        assert!(msg.contains(&https(f.tls)), "names the URL: {msg}");
        assert!(
            msg.to_ascii_lowercase().contains("certificate") || msg.contains("UnknownIssuer"),
            "says it is a certificate problem: {msg}"
        );
    }
    assert_eq!(
        f.sim.stats().list_batches_requests,
        0,
        "nothing got through"
    );
}

#[tokio::test]
async fn an_expired_certificate_is_refused_even_from_a_trusted_ca() {
    let f = fixture(true).await;
    let c = client(&tls_project(&f, true, false), Duration::from_secs(3), 4);
    let err = walk(&c, Q, &walk_options(100, 4, 0))
        .await
        .expect_err("expired certificate must be refused");
    let msg = err.to_string();
    println!("expired certificate: {msg}");
    assert_eq!(
        err.request_error().map(|e| e.reason()),
        Some(FailureReason::Connect)
    );
    assert!(msg.contains(&https(f.tls)), "{msg}");
    assert!(msg.to_ascii_lowercase().contains("expired"), "{msg}");
}

fn config_toml(f: &Fixture, extra: &str) -> String {
    format!(
        r#"[poll]
interval = "5s"
timeout = "3s"
request_timeout = "2s"

[auth]
access_key = "{DEMO_ACCESS_KEY}"
secret_key = "{DEMO_SECRET_KEY}"

[[projects]]
project_id = "{PID}"
endpoint = "{}"
queues = ["{Q}"]
ca_file = {:?}
{extra}
"#,
        https(f.tls),
        f.ca_path
    )
}

#[tokio::test]
async fn ca_file_and_proxy_url_from_the_config_are_wired_into_the_client() {
    let f = fixture(false).await;
    let (proxy_addr, proxy_log) = proxy().await;
    let text = config_toml(
        &f,
        &format!("proxy_url = \"http://scraper:Pr0xyPassw0rd@{proxy_addr}\""),
    );
    let settings = config::load_toml_str(&text, &Env::new()).expect("valid config");
    let c = client(&settings.projects[0], Duration::from_secs(3), 4);
    let (stats, _) = walk(&c, Q, &walk_options(100, 4, 0))
        .await
        .expect("walk through the proxy over TLS");
    assert_eq!(stats.jobs, 250);
    assert!(proxy_log.connections() >= 1, "went through the proxy");
    let requests = proxy_log.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.starts_with(&format!("CONNECT {} ", f.tls))),
        "HTTPS is tunnelled with CONNECT to the endpoint: {requests:?}"
    );
    // Basic credentials of the URL are sent to the proxy, base64("scraper:Pr0xyPassw0rd").
    assert!(
        proxy_log
            .auth()
            .iter()
            .all(|a| a == "Basic c2NyYXBlcjpQcjB4eVBhc3N3MHJk"),
        "{:?}",
        proxy_log.auth()
    );
    println!(
        "proxy_url: {} connection(s), {} CONNECT request(s) for {} pages",
        proxy_log.connections(),
        requests.len(),
        stats.pages
    );
}

#[tokio::test]
async fn https_proxy_environment_is_used_and_proxy_url_wins_over_it() {
    let f = fixture(false).await;
    let (env_proxy, env_log) = proxy().await;
    let (cfg_proxy, cfg_log) = proxy().await;
    let env_url = format!("http://{env_proxy}");
    let env = [("HTTPS_PROXY", env_url.as_str())];

    // No proxy_url: the binary follows HTTPS_PROXY.
    std::fs::write(f.dir.path().join("env.toml"), config_toml(&f, "")).expect("write");
    let (status, out) = child::run(
        f.dir.path(),
        "env",
        &["--config.file", "env.toml", "--once"],
        &env,
        Duration::from_secs(20),
    )
    .await;
    assert!(
        status.success(),
        "--once via HTTPS_PROXY\n{}",
        out.outputs()
    );
    assert!(env_log.connections() >= 1, "HTTPS_PROXY was used");
    let env_connections = env_log.connections();

    // proxy_url set: it wins, HTTPS_PROXY is not touched.
    std::fs::write(
        f.dir.path().join("cfg.toml"),
        config_toml(&f, &format!("proxy_url = \"http://{cfg_proxy}\"")),
    )
    .expect("write");
    let (status, out) = child::run(
        f.dir.path(),
        "cfg",
        &["--config.file", "cfg.toml", "--once"],
        &env,
        Duration::from_secs(20),
    )
    .await;
    assert!(status.success(), "--once via proxy_url\n{}", out.outputs());
    assert!(cfg_log.connections() >= 1, "proxy_url was used");
    assert_eq!(
        env_log.connections(),
        env_connections,
        "HTTPS_PROXY ignored when proxy_url is set"
    );

    // NO_PROXY covering the endpoint: direct, no proxy at all.
    let (status, out) = child::run(
        f.dir.path(),
        "noproxy",
        &["--config.file", "env.toml", "--once"],
        &[("HTTPS_PROXY", env_url.as_str()), ("NO_PROXY", "127.0.0.1")],
        Duration::from_secs(20),
    )
    .await;
    assert!(status.success(), "--once with NO_PROXY\n{}", out.outputs());
    assert_eq!(env_log.connections(), env_connections, "NO_PROXY honoured");
}

#[tokio::test]
async fn plain_http_endpoints_go_through_an_http_proxy() {
    let sim = sim(SimConfig::default()).await;
    sim.set_jobs(PID, Q, numbered_jobs("p", 120));
    let (proxy_addr, log) = proxy().await;
    let mut p = project(&sim, &[Q], aksk());
    p.proxy = Some(
        dli_exporter::secret::SecretUrl::parse_proxy(&format!("http://{proxy_addr}"))
            .expect("proxy url"),
    );
    let c = client(&p, Duration::from_secs(3), 4);
    let (stats, _) = walk(&c, Q, &walk_options(100, 4, 0))
        .await
        .expect("walk via the proxy (signature still valid)");
    assert_eq!(stats.jobs, 120);
    assert!(log.connections() >= 1);
    assert!(
        log.requests()
            .iter()
            .all(|r| r.starts_with(&format!("GET {}/v2.0/", sim.base_url()))),
        "{:?}",
        log.requests()
    );
}

#[tokio::test]
async fn an_endpoint_that_never_answers_times_out_within_the_request_timeout() {
    // A bound socket that never accepts: the kernel completes the TCP handshake (backlog), the
    // request is sent, and no answer ever comes. It must end by poll.request_timeout.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sim = sim(SimConfig::default()).await;
    let mut p = project(&sim, &[Q], aksk());
    p.endpoint = format!("http://{addr}");
    let c = client(&p, Duration::from_millis(300), 4);
    let started = Instant::now();
    let err = walk(&c, Q, &walk_options(100, 4, 0))
        .await
        .expect_err("nothing answers");
    let elapsed = started.elapsed();
    println!("unanswered endpoint: failed after {elapsed:?}: {err}");
    assert_eq!(
        err.request_error().map(|e| e.reason()),
        Some(FailureReason::Timeout),
        "{err}"
    );
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    drop(listener);
}

#[tokio::test]
async fn a_tls_handshake_that_never_completes_times_out() {
    // Accepts TCP and then says nothing: the TLS handshake (part of connecting) stalls.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let f = fixture(false).await;
    let mut p = tls_project(&f, true, false);
    p.endpoint = https(addr);
    let c = client(&p, Duration::from_millis(300), 4);
    let started = Instant::now();
    let err = walk(&c, Q, &walk_options(100, 4, 0))
        .await
        .expect_err("silent TLS server");
    let elapsed = started.elapsed();
    println!("stalled TLS handshake: failed after {elapsed:?}: {err}");
    assert_eq!(
        err.request_error().map(|e| e.reason()),
        Some(FailureReason::Timeout),
        "{err}"
    );
    assert!(err.to_string().contains(&https(addr)), "{err}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}
