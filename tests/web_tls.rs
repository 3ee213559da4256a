//! `--web.config.file` over real loopback connections: TLS with certificates made at test time
//! (rcgen), client certificates, basic auth, extra headers, certificate rotation without
//! restart, a broken rewrite keeping the old settings, and the real binary once.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::web::*;
use common::*;
use dli_exporter::web::config::WebConfigWatcher;
use dli_exporter::web::server::Limits;
use reqwest::StatusCode;

#[tokio::test]
async fn tls_scrape_with_a_trusted_ca_works_and_plain_http_does_not() {
    let ca = Ca::new("test CA");
    let (_dir, path) = tls_dir(&ca.leaf("localhost", Usage::Server, false), "", &[]);
    let s = serve_web(&path).await;
    let r = https(&[&ca], None)
        .get(https_url(&s.app, "/metrics"))
        .send()
        .await
        .expect("TLS scrape");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.expect("body").contains("dli_up"));
    // Plain HTTP to the TLS port does not get metrics.
    let plain = http()
        .get(format!("http://{}/metrics", s.app.addr))
        .send()
        .await;
    assert!(
        plain
            .as_ref()
            .map_or(true, |r| r.status() != StatusCode::OK),
        "plain HTTP served: {plain:?}"
    );
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_cut_off_while_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = Ca::new("test CA");
    let (_dir, path) = tls_dir(&ca.leaf("localhost", Usage::Server, false), "", &[]);
    let s = serve_web_limited(
        &path,
        Limits {
            header_read_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
    )
    .await;
    let mut slow = tokio::net::TcpStream::connect(s.app.addr)
        .await
        .expect("connect");
    // The first bytes of a ClientHello record, then nothing.
    slow.write_all(&[0x16, 0x03, 0x01]).await.expect("write");
    let t = Instant::now();
    let client = https(&[&ca], None);
    for _ in 0..3 {
        assert_eq!(
            status(&client, &https_url(&s.app, "/metrics")).await,
            Ok(StatusCode::OK)
        );
    }
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), slow.read_to_end(&mut buf)).await;
    assert!(
        closed.is_ok(),
        "stalled handshake still connected after 3 s"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn expired_and_untrusted_certificates_are_rejected_by_a_verifying_client() {
    let ca = Ca::new("test CA");
    let (_dir, path) = tls_dir(&ca.leaf("localhost", Usage::Server, true), "", &[]);
    let s = serve_web(&path).await;
    let e = status(&https(&[&ca], None), &https_url(&s.app, "/metrics"))
        .await
        .expect_err("expired certificate accepted");
    assert!(e.to_lowercase().contains("expired"), "{e}");

    let other = Ca::new("other CA");
    let (_dir2, path2) = tls_dir(&other.leaf("localhost", Usage::Server, false), "", &[]);
    let s2 = serve_web(&path2).await;
    let e = status(&https(&[&ca], None), &https_url(&s2.app, "/metrics"))
        .await
        .expect_err("untrusted certificate accepted");
    assert!(e.to_lowercase().contains("unknownissuer"), "{e}");
}

#[tokio::test]
async fn mtls_require_and_verify_client_cert() {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let stranger_ca = Ca::new("stranger CA");
    let (_dir, path) = tls_dir(
        &server_ca.leaf("localhost", Usage::Server, false),
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: clients.pem\n  min_version: TLS12\n",
        &[("clients.pem", &client_ca.pem())],
    );
    let s = serve_web(&path).await;
    let url = https_url(&s.app, "/metrics");
    let no_cert = status(&https(&[&server_ca], None), &url).await;
    assert!(
        no_cert.is_err(),
        "served without a client certificate: {no_cert:?}"
    );
    let good = client_ca.leaf("prometheus", Usage::Client, false);
    assert_eq!(
        status(&https(&[&server_ca], Some(&good)), &url).await,
        Ok(StatusCode::OK)
    );
    let stranger = stranger_ca.leaf("prometheus", Usage::Client, false);
    let other = status(&https(&[&server_ca], Some(&stranger)), &url).await;
    assert!(
        other.is_err(),
        "served a certificate from another CA: {other:?}"
    );
}

#[tokio::test]
async fn client_allowed_sans_are_enforced() {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let (_dir, path) = tls_dir(
        &server_ca.leaf("localhost", Usage::Server, false),
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: clients.pem\n  \
         client_allowed_sans: [prometheus.example]\n",
        &[("clients.pem", &client_ca.pem())],
    );
    let s = serve_web(&path).await;
    let url = https_url(&s.app, "/metrics");
    let allowed = client_ca.leaf("prometheus.example", Usage::Client, false);
    assert_eq!(
        status(&https(&[&server_ca], Some(&allowed)), &url).await,
        Ok(StatusCode::OK)
    );
    let other = client_ca.leaf("someone.example", Usage::Client, false);
    assert!(
        status(&https(&[&server_ca], Some(&other)), &url)
            .await
            .is_err()
    );
}

fn auth_config(dir: &Path) -> PathBuf {
    let hash = bcrypt::hash("open sesame", 4).expect("bcrypt");
    let path = dir.join("web.yml");
    std::fs::write(
        &path,
        format!(
            "basic_auth_users:\n  prometheus: '{hash}'\nhttp_server_config:\n  headers:\n    \
             X-Content-Type-Options: nosniff\n    X-Frame-Options: deny\n"
        ),
    )
    .expect("write");
    path
}

#[tokio::test]
async fn basic_auth_on_every_endpoint_and_extra_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = serve_web(&auth_config(dir.path())).await;
    let client = http();
    for path in ["/metrics", "/", "/-/healthy", "/-/ready"] {
        let url = format!("http://{}{}", s.app.addr, path);
        for (what, req) in [
            ("no credentials", client.get(&url)),
            (
                "wrong password",
                client.get(&url).basic_auth("prometheus", Some("nope")),
            ),
            (
                "unknown user",
                client.get(&url).basic_auth("mallory", Some("open sesame")),
            ),
        ] {
            let r = req.send().await.expect("request");
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what} {path}");
            assert_eq!(
                r.headers().get("www-authenticate").map(|v| v.as_bytes()),
                Some(&b"Basic realm=\"dli_exporter\""[..]),
                "{what} {path}"
            );
            assert_eq!(
                r.headers().get("x-frame-options").map(|v| v.as_bytes()),
                Some(&b"deny"[..])
            );
        }
    }
    let r = client
        .get(format!("http://{}/metrics", s.app.addr))
        .basic_auth("prometheus", Some("open sesame"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()
            .get("x-content-type-options")
            .map(|v| v.as_bytes()),
        Some(&b"nosniff"[..])
    );
    assert_eq!(
        r.headers().get("x-frame-options").map(|v| v.as_bytes()),
        Some(&b"deny"[..])
    );
    // The second good request is answered from the verification cache, quickly.
    let t = Instant::now();
    for _ in 0..20 {
        let r = client
            .get(format!("http://{}/-/healthy", s.app.addr))
            .basic_auth("prometheus", Some("open sesame"))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

/// Retries `f` until it returns true, for at most `within`.
async fn eventually<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn rotated_certificates_are_served_without_restart_and_broken_files_keep_the_old_ones() {
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let (dir, path) = tls_dir(&old_ca.leaf("localhost", Usage::Server, false), "", &[]);
    let s = serve_web(&path).await;
    let url = https_url(&s.app, "/metrics");
    let trusts_old = https(&[&old_ca], None);
    let trusts_new = https(&[&new_ca], None);
    assert_eq!(status(&trusts_old, &url).await, Ok(StatusCode::OK));
    assert!(status(&trusts_new, &url).await.is_err());

    // Rotation: new files in place; new connections get the new certificate.
    let leaf = new_ca.leaf("localhost", Usage::Server, false);
    write(
        dir.path(),
        &[("server.pem", &leaf.cert), ("server.key", &leaf.key)],
    );
    eventually("new certificate served", Duration::from_secs(5), || async {
        status(&trusts_new, &url).await == Ok(StatusCode::OK)
    })
    .await;
    assert!(
        status(&trusts_old, &url).await.is_err(),
        "old certificate still served"
    );

    // A broken certificate file: the previous (new) certificate stays in force.
    write(
        dir.path(),
        &[("server.pem", "-----BEGIN CERTIFICATE-----\ngarbage\n")],
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(status(&trusts_new, &url).await, Ok(StatusCode::OK));
    // A broken web config file: same.
    std::fs::write(&path, "tls_server_config:\n  cert_fil: x\n").expect("write");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(status(&trusts_new, &url).await, Ok(StatusCode::OK));
    // A reload reports the broken web config.
    let reload = s.app.reload().await;
    let err = reload
        .expect_err("reload with a broken web config")
        .to_string();
    assert!(
        err.contains("tls_server_config.cert_fil: unknown key"),
        "{err}"
    );
}

/// The real binary with `--web.config.file` (TLS and basic auth) in `--demo` mode.
#[tokio::test]
async fn the_binary_serves_tls_with_basic_auth() {
    let ca = Ca::new("test CA");
    let leaf = ca.leaf("localhost", Usage::Server, false);
    let hash = bcrypt::hash("pw", 4).expect("bcrypt");
    let (dir, path) = tls_dir(&leaf, "", &[]);
    let mut yml = std::fs::read_to_string(&path).expect("read");
    yml.push_str(&format!("basic_auth_users:\n  prom: '{hash}'\n"));
    std::fs::write(&path, yml).expect("write");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let stderr = dir.path().join("stderr.txt");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dli_exporter"))
        .args(["--demo", "--web.listen-address"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--web.config.file")
        .arg(&path)
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("stderr"))
        .spawn()
        .expect("start the binary");
    let client = https(&[&ca], None);
    let url = format!("https://127.0.0.1:{port}/metrics");
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let ok = loop {
        match client.get(&url).basic_auth("prom", Some("pw")).send().await {
            Ok(r) if r.status() == StatusCode::OK => break true,
            Ok(r) => last = format!("status {}", r.status()),
            Err(e) => last = format!("{e:?}"),
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let unauth = client.get(&url).send().await.map(|r| r.status());
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(ok, "no TLS scrape: {last}\n{log}");
    assert_eq!(unauth.ok(), Some(StatusCode::UNAUTHORIZED), "{log}");
    assert!(!log.contains(&hash), "hash logged:\n{log}");

    // --check-config validates the web config too, naming the file and key.
    std::fs::write(&path, "basic_auth_users:\n  prom: plain\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dli_exporter"))
        .args([
            "--check-config",
            "--config.file",
            "/nonexistent.toml",
            "--web.config.file",
        ])
        .arg(&path)
        .env_clear()
        .output()
        .expect("run --check-config");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "web config {}: basic_auth_users.prom: not a bcrypt hash",
            path.display()
        )),
        "{stderr}"
    );
}

/// `deploy/web-config.example.yml` loads as shipped once the files it names exist.
#[test]
fn the_shipped_example_web_config_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/web-config.example.yml");
    let path = dir.path().join("web-config.yml");
    std::fs::copy(&example, &path).expect("copy the example");
    std::fs::create_dir(dir.path().join("tls")).expect("mkdir");
    let ca = Ca::new("test CA");
    let leaf = ca.leaf("localhost", Usage::Server, false);
    write(
        &dir.path().join("tls"),
        &[
            ("server.crt", &leaf.cert),
            ("server.key", &leaf.key),
            ("clients-ca.crt", &ca.pem()),
        ],
    );
    let web = WebConfigWatcher::load(&path).expect("the example loads");
    assert_eq!(
        web.current().summary(),
        "TLS: on (HTTP/2 and HTTP/1.1), client certificates: RequireAndVerifyClientCert, basic auth users: 1, extra headers: 3, rate limit: off"
    );
}

/// Errors that need real certificates name the file and key.
#[test]
fn a_key_that_does_not_match_and_old_tls_versions_are_named() {
    let ca = Ca::new("test CA");
    let a = ca.leaf("localhost", Usage::Server, false);
    let b = ca.leaf("localhost", Usage::Server, false);
    let mixed = Leaf {
        cert: a.cert,
        key: b.key.clone(),
    };
    let (_dir, path) = tls_dir(&mixed, "", &[]);
    let e = WebConfigWatcher::load(&path)
        .expect_err("mismatched key")
        .to_string();
    assert!(
        e.starts_with(&format!(
            "web config {}: tls_server_config.key_file: cannot be used",
            path.display()
        )),
        "{e}"
    );
    let (_dir, path) = tls_dir(&b, "  min_version: TLS11\n", &[]);
    let e = WebConfigWatcher::load(&path)
        .expect_err("TLS11")
        .to_string();
    assert!(
        e.contains("tls_server_config.min_version: TLS11 is not supported"),
        "{e}"
    );
    // Without a client CA the system roots verify, as in exporter-toolkit, with a warning.
    let (_dir, path) = tls_dir(&b, "  client_auth_type: RequireAndVerifyClientCert\n", &[]);
    let web = WebConfigWatcher::load(&path).expect("no client CA: system roots");
    let warnings = web.current().warnings.join("\n");
    assert!(
        warnings.contains("any publicly trusted client certificate passes"),
        "{warnings}"
    );
}

/// `rate_limit` (toolkit format): a burst, then 429 with Retry-After, before authentication.
#[tokio::test]
async fn rate_limit_refuses_requests_beyond_the_bucket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("web.yml");
    std::fs::write(&path, "rate_limit:\n  interval: 10s\n  burst: 3\n").expect("write");
    let s = serve_web(&path).await;
    let client = http();
    let url = format!("http://{}/metrics", s.app.addr);
    for i in 0..3 {
        let r = client.get(&url).send().await.expect("scrape");
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "request {i} is within the burst"
        );
    }
    let r = client.get(&url).send().await.expect("scrape");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        r.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"10"[..])
    );
    // interval 0 is the toolkit's "off".
    std::fs::write(&path, "rate_limit:\n  interval: 0\n  burst: 3\n").expect("write");
    let web = WebConfigWatcher::load(&path).expect("loads");
    assert!(web.current().summary().ends_with("rate limit: off"));
    for (text, key) in [
        ("rate_limit:\n  interval: soon\n", "rate_limit.interval"),
        ("rate_limit:\n  burst: -1\n", "rate_limit.burst"),
        ("rate_limit:\n  bursts: 1\n", "rate_limit.bursts"),
    ] {
        std::fs::write(&path, text).expect("write");
        let e = WebConfigWatcher::load(&path).expect_err(text).to_string();
        assert!(e.contains(key), "{e}");
    }
}
