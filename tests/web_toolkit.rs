//! Parity with exporter-toolkit's web config, point by point, over real loopback connections with
//! certificates made at test time: client certificates verified against the system roots when no
//! client CA is given, self-signed (CA:TRUE) client certificates listed in the CA file, inline
//! `client_ca`, the `RequireClientCert` alias, a file winning over the inline form,
//! `client_allowed_sans` under every policy with e-mail, URI and IP SANs, `rate_limit` with
//! `burst: 0`, unquoted header values, and the toolkit's fixture shapes through `--check-config`.

mod common;

use std::time::{Duration, Instant};

use common::child;
use common::web::*;
use reqwest::StatusCode;

const VERIFY: &str = "  client_auth_type: RequireAndVerifyClientCert\n";

/// Whether a scrape with `identity` succeeds against `url` (server CA trusted).
async fn passes(server_ca: &Ca, identity: Option<&Leaf>, url: &str) -> bool {
    status(&https(&[server_ca], identity), url).await == Ok(StatusCode::OK)
}

#[tokio::test]
async fn self_signed_ca_true_client_certificates_listed_in_the_ca_file_are_accepted() {
    let server_ca = Ca::new("server CA");
    let other_ca = Ca::new("other CA");
    let listed = self_signed_client("prometheus", &["prometheus.example"], false);
    let unlisted = self_signed_client("prometheus", &["prometheus.example"], false);
    let expired = self_signed_client("old", &["old.example"], true);
    // The file holds the self-signed certificates and a regular CA.
    let pool = format!("{}{}{}", listed.cert, other_ca.pem(), expired.cert);
    let (_dir, path) = tls_dir(
        &server_ca.leaf("localhost", Usage::Server, false),
        &format!("{VERIFY}  client_ca_file: clients.pem\n"),
        &[("clients.pem", &pool)],
    );
    let s = serve_web(&path).await;
    let url = https_url(&s.app, "/metrics");
    assert!(
        passes(&server_ca, Some(&listed), &url).await,
        "listed self-signed refused"
    );
    let e = status(&https(&[&server_ca], Some(&unlisted)), &url).await;
    assert!(
        e.is_err(),
        "a self-signed certificate not in the file passed: {e:?}"
    );
    let e = status(&https(&[&server_ca], Some(&expired)), &url).await;
    assert!(e.is_err(), "an expired listed certificate passed: {e:?}");
    // The regular CA in the same file still verifies chains.
    let chained = other_ca.leaf("prometheus", Usage::Client, false);
    assert!(passes(&server_ca, Some(&chained), &url).await);
    assert!(
        !passes(&server_ca, None, &url).await,
        "no certificate passed"
    );
}

#[tokio::test]
async fn inline_client_ca_the_old_policy_name_and_files_winning_over_inline_forms() {
    let server_ca = Ca::new("server CA");
    let client = self_signed_client("prometheus", &["prometheus.example"], false);
    let indent = |pem: &str| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    // Inline client_ca (PEM text).
    let (_dir, path) = tls_dir(
        &server_ca.leaf("localhost", Usage::Server, false),
        &format!("{VERIFY}  client_ca: |\n{}", indent(&client.cert)),
        &[],
    );
    let s = serve_web(&path).await;
    let url = https_url(&s.app, "/metrics");
    assert!(passes(&server_ca, Some(&client), &url).await);
    assert!(!passes(&server_ca, None, &url).await);

    // `RequireClientCert` is the toolkit's old name of RequireAnyClientCert.
    let (_dir, path) = tls_dir(
        &server_ca.leaf("localhost", Usage::Server, false),
        "  client_auth_type: RequireClientCert\n",
        &[],
    );
    let web = load_web(&path).expect("RequireClientCert loads");
    assert!(web.current().summary().contains("RequireAnyClientCert"));
    let s = serve_web(&path).await;
    let url = https_url(&s.app, "/metrics");
    let stranger = self_signed_client("anyone", &["anyone.example"], false);
    assert!(
        passes(&server_ca, Some(&stranger), &url).await,
        "any certificate passes"
    );
    assert!(
        !passes(&server_ca, None, &url).await,
        "a certificate is required"
    );

    // cert_file and cert, key_file and key, client_ca_file and client_ca: the files win.
    let other_ca = Ca::new("inline CA");
    let inline = other_ca.leaf("localhost", Usage::Server, false);
    let (_dir, path) = tls_dir(
        &server_ca.leaf("localhost", Usage::Server, false),
        &format!(
            "  cert: |\n{}  key: |\n{}{VERIFY}  client_ca_file: clients.pem\n  client_ca: |\n{}",
            indent(&inline.cert),
            indent(&inline.key),
            indent(&other_ca.pem())
        ),
        &[("clients.pem", &client.cert)],
    );
    let web = load_web(&path).expect("both forms load");
    let warnings = web.current().warnings.join("\n");
    for key in ["cert", "key", "client_ca"] {
        assert!(
            warnings.contains(&format!("tls_server_config.{key} is ignored")),
            "{key}: {warnings}"
        );
    }
    let s = serve_web(&path).await;
    let url = https_url(&s.app, "/metrics");
    assert!(
        passes(&server_ca, Some(&client), &url).await,
        "the files' certificate and CA"
    );
    let e = status(&https(&[&other_ca], Some(&client)), &url).await;
    assert!(e.is_err(), "the inline certificate was served: {e:?}");
}

#[tokio::test]
async fn client_allowed_sans_match_dns_ip_uri_and_email_under_every_policy() {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let sans = "  client_allowed_sans: [prometheus.example, 10.1.2.3, 'spiffe://mon/prom', ops@example.org]\n";
    let leaf = |sans: &[&str]| {
        client_ca.leaf_with(
            "c",
            Usage::Client,
            false,
            sans.iter().map(|s| s.to_string()).collect(),
            rcgen::KeyPair::generate().expect("key"),
        )
    };
    let good = [
        leaf(&["PROMETHEUS.example"]),
        leaf(&["10.1.2.3"]),
        leaf(&["uri:spiffe://mon/prom"]),
        leaf(&["other.example", "mailto:ops@example.org"]),
    ];
    let bad = [
        leaf(&["other.example"]),
        leaf(&["mailto:dev@example.org"]),
        leaf(&["uri:spiffe://mon/other", "10.1.2.4"]),
    ];
    for policy in [
        "RequireAndVerifyClientCert",
        "VerifyClientCertIfGiven",
        "RequireAnyClientCert",
        "RequestClientCert",
    ] {
        let (_dir, path) = tls_dir(
            &server_ca.leaf("localhost", Usage::Server, false),
            &format!("  client_auth_type: {policy}\n  client_ca_file: ca.pem\n{sans}"),
            &[("ca.pem", &client_ca.pem())],
        );
        let s = serve_web(&path).await;
        let url = https_url(&s.app, "/metrics");
        for (i, g) in good.iter().enumerate() {
            assert!(
                passes(&server_ca, Some(g), &url).await,
                "{policy}: good {i}"
            );
        }
        for (i, b) in bad.iter().enumerate() {
            assert!(
                !passes(&server_ca, Some(b), &url).await,
                "{policy}: bad {i}"
            );
        }
        // With allowed SANs a certificate is needed whatever the policy (the toolkit's check
        // fails the handshake too).
        assert!(
            !passes(&server_ca, None, &url).await,
            "{policy}: no certificate"
        );
    }
    // Under RequireAnyClientCert the SANs are checked although the chain is not.
    let (_dir, path) = tls_dir(
        &server_ca.leaf("localhost", Usage::Server, false),
        &format!("  client_auth_type: RequireAnyClientCert\n{sans}"),
        &[],
    );
    let s = serve_web(&path).await;
    let url = https_url(&s.app, "/metrics");
    let stranger = self_signed_client("x", &["prometheus.example"], false);
    assert!(passes(&server_ca, Some(&stranger), &url).await);
    let stranger = self_signed_client("x", &["nobody.example"], false);
    assert!(!passes(&server_ca, Some(&stranger), &url).await);
}

#[tokio::test]
async fn rate_limit_burst_zero_refuses_every_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("web.yml");
    std::fs::write(&path, "rate_limit:\n  interval: 1s\n  burst: 0\n").expect("write");
    let s = serve_web(&path).await;
    let client = common::http();
    let url = format!("http://{}/metrics", s.app.addr);
    let t = Instant::now();
    for i in 0..5 {
        let r = client.get(&url).send().await.expect("request");
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "request {i}");
        assert!(
            r.headers().get("retry-after").is_none(),
            "no token ever comes"
        );
    }
    tokio::time::sleep(Duration::from_millis(1100).saturating_sub(t.elapsed())).await;
    let r = client.get(&url).send().await.expect("request");
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "after an interval"
    );
}

#[tokio::test]
async fn unquoted_header_values_are_sent_as_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("web.yml");
    std::fs::write(
        &path,
        "http_server_config:\n  headers:\n    X-XSS-Protection: 1\n    \
         Strict-Transport-Security: max-age=31536000\n",
    )
    .expect("write");
    let s = serve_web(&path).await;
    let r = common::http()
        .get(format!("http://{}/-/healthy", s.app.addr))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers().get("x-xss-protection").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
}

/// `RequireAndVerifyClientCert` / `VerifyClientCertIfGiven` without `client_ca_file`: the real
/// binary verifies client certificates against the system roots (here `SSL_CERT_FILE`, which
/// rustls-native-certs honours as OpenSSL does) and warns.
#[tokio::test]
async fn verifying_without_a_client_ca_uses_the_system_roots_and_warns() {
    let server_ca = Ca::new("server CA");
    let system_ca = Ca::new("a public CA");
    let private_ca = Ca::new("someone else's CA");
    for (policy, anonymous_ok) in [
        ("RequireAndVerifyClientCert", false),
        ("VerifyClientCertIfGiven", true),
    ] {
        let leaf = server_ca.leaf("localhost", Usage::Server, false);
        let (dir, path) = tls_dir(&leaf, &format!("  client_auth_type: {policy}\n"), &[]);
        write(dir.path(), &[("roots.pem", &system_ca.pem())]);
        let roots = dir.path().join("roots.pem");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let listen = format!("127.0.0.1:{port}");
        let web = path.display().to_string();
        let mut exporter = child::spawn(
            dir.path(),
            "exporter",
            &[
                "--demo",
                "--web.listen-address",
                &listen,
                "--web.config.file",
                &web,
            ],
            &[("SSL_CERT_FILE", &roots.display().to_string())],
        );
        let url = format!("https://127.0.0.1:{port}/-/healthy");
        let public = system_ca.leaf("prometheus", Usage::Client, false);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !passes(&server_ca, Some(&public), &url).await {
            exporter.assert_running();
            assert!(
                Instant::now() < deadline,
                "no scrape: {}",
                exporter.outputs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let private = private_ca.leaf("prometheus", Usage::Client, false);
        assert!(
            !passes(&server_ca, Some(&private), &url).await,
            "{policy}: private CA"
        );
        assert_eq!(
            passes(&server_ca, None, &url).await,
            anonymous_ok,
            "{policy}: none"
        );
        let log = exporter.stderr();
        assert!(
            log.contains("any publicly trusted client certificate passes"),
            "{policy}: no warning in\n{log}"
        );
    }
}

/// The shapes of exporter-toolkit's own test fixtures (written anew here), through
/// `--check-config`: the good ones load, the bad ones fail naming the key, and what rustls
/// cannot do is refused with the reason.
#[tokio::test]
async fn the_toolkits_fixture_shapes_load_or_are_refused_by_name() {
    let ca = Ca::new("test CA");
    let leaf = ca.leaf("localhost", Usage::Server, false);
    let rsa = ca.leaf_with(
        "localhost",
        Usage::Server,
        false,
        vec!["localhost".into()],
        rsa_key(),
    );
    let client = self_signed_client("test3", &["test3"], false);
    let files = [
        ("server.crt", leaf.cert.as_str()),
        ("server.key", leaf.key.as_str()),
        ("rsa.crt", rsa.cert.as_str()),
        ("rsa.key", rsa.key.as_str()),
        ("client_selfsigned.pem", client.cert.as_str()),
    ];
    let tls = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
    let rsa_tls = "tls_server_config:\n  cert_file: rsa.crt\n  key_file: rsa.key\n";
    let ok = "";
    let cases: Vec<(String, &str)> = vec![
        (String::new(), ok),
        (format!("{tls}  client_auth_type: VerifyClientCertIfGiven\n"), ok),
        (format!("{tls}  client_auth_type: RequireAndVerifyClientCert\n"), ok),
        (format!("{tls}{VERIFY}  client_ca_file: client_selfsigned.pem\n  client_allowed_sans: [one, test3, two]\n"), ok),
        (format!("{tls}  client_auth_type: RequireAnyClientCert\n"), ok),
        (format!("{tls}  client_auth_type: VerifyClientCertIfGiven\n  curve_preferences: [CurveP256, CurveP384, X25519]\n"), ok),
        (format!("{rsa_tls}  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]\n  min_version: TLS12\n  max_version: TLS12\n"), ok),
        (format!("{rsa_tls}  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n  prefer_server_cipher_suites: false\n  max_version: TLS12\n"), ok),
        (format!("{rsa_tls}  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]\n  max_version: TLS12\nhttp_server_config:\n  http2: false\n"), ok),
        ("http_server_config:\n  headers:\n    X-Frame-Options: deny\n    X-XSS-Protection: 1\n    Content-Security-Policy: \"default-src 'self'\"\n".into(), ok),
        ("rate_limit:\n  interval: 0\n  burst: 0\n".into(), ok),
        ("rate_limit:\n  interval: \"1s\"\n  burst: 0\n".into(), ok),
        (format!("{rsa_tls}  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]\n  max_version: TLS12\n"), "tls_server_config.cipher_suites: HTTP/2"),
        (format!("{tls}  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA2048]\n"), "tls_server_config.cipher_suites: unknown cipher suite \"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA2048\""),
        (format!("{tls}  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA]\n"), "tls_server_config.cipher_suites: TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA is not supported: rustls implements no CBC"),
        (format!("{tls}  curve_preferences: [CurveP257]\n"), "tls_server_config.curve_preferences: unknown curve \"CurveP257\""),
        (format!("{tls}  min_version: TLS13\n  curve_preferences: [CurveP521]\n"), "tls_server_config.curve_preferences: CurveP521 is not supported"),
        (format!("{tls}  min_version: TLS111\n"), "tls_server_config.min_version: invalid value \"TLS111\""),
        (format!("{tls}  min_version: TLS10\n"), "tls_server_config.min_version: TLS10 is not supported"),
        (format!("{tls}  client_ca_file: /dev/null\n"), "tls_server_config.client_ca_file: client CAs are configured but client_auth_type is NoClientCert"),
        (format!("{tls}  client_ca_file: somefile\n"), "client_auth_type is NoClientCert"),
        (format!("{tls}{VERIFY}  client_ca_file: /dev/null\n"), "tls_server_config.client_ca_file: no CERTIFICATE block"),
        (format!("{tls}{VERIFY}  client_ca_file: somefile\n"), "tls_server_config.client_ca_file: cannot read"),
        (format!("{tls}  client_ca_file: client_selfsigned.pem\n"), "client_auth_type is NoClientCert"),
        (format!("{tls}  client_allowed_sans: [a]\n"), "tls_server_config.client_allowed_sans: has no effect"),
        (format!("{tls}{VERIFY}  client_allowed_sans: []\n"), "tls_server_config.client_allowed_sans: an empty list"),
        ("tls_server_config:\n  cert_file: \"\"\n  key_file: server.key\n".into(), "missing one of cert or cert_file"),
        ("tls_server_config:\n  cert_file: server.crt\n  key: \"\"\n".into(), "missing one of key or key_file"),
        ("tls_server_config:\n  cert_filse: server.crt\n".into(), "tls_server_config.cert_filse: unknown key"),
        ("http_server_config:\n  headers:\n    Content-Type: foo\n".into(), "Content-Type: this header cannot be configured"),
        ("hWkNKCp3fvIx3jKnsaBI\nTuEjdwNS8A2vYdFbiKqr\n".into(), "expected a mapping"),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), &files);
    for (i, (yaml, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("case{i}.yml"));
        std::fs::write(&path, yaml).expect("write");
        let web = path.display().to_string();
        let (_, out) = child::run(
            dir.path(),
            &format!("check{i}"),
            &[
                "--check-config",
                "--config.file",
                "/nonexistent.toml",
                "--web.config.file",
                &web,
            ],
            &[],
            Duration::from_secs(20),
        )
        .await;
        let stdout = out.stdout();
        let stderr = out.stderr();
        if want.is_empty() {
            assert!(
                stdout.contains(&format!("web config {web}: TLS: ")),
                "case {i} should load:\n{yaml}\n{stderr}"
            );
        } else {
            assert!(
                stderr.contains(&format!("web config {web}: ")) && stderr.contains(want),
                "case {i}: want {want:?}:\n{yaml}\n{stderr}"
            );
        }
    }
}
