//! The acceptance test of exporter-toolkit parity: `tests/fixtures/web-config/kitchen-sink.yml`,
//! a node_exporter deployment's web config using every key the toolkit documents, loads without
//! a warning and behaves as the toolkit would over real connections (HTTP/2 by ALPN, verified
//! client certificates with allowed SANs, the listed suites and curves only, basic auth, the five
//! headers, the rate limit); its inline twin (certificate, key and client CA as PEM text) too.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::web::*;
use rustls::NamedGroup;

const PASSWORD: &str = "kitchen sink";

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/web-config")
        .join(name);
    std::fs::read_to_string(path).expect("read fixture")
}

struct Pki {
    server_ca: Ca,
    client_ca: Ca,
    server: Leaf,
}

fn pki() -> Pki {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("clients CA");
    let server = server_ca.leaf("localhost", Usage::Server, false);
    Pki {
        server_ca,
        client_ca,
        server,
    }
}

fn client(pki: &Pki, sans: &[&str]) -> Leaf {
    pki.client_ca.leaf_with(
        "prometheus",
        Usage::Client,
        false,
        sans.iter().map(|s| s.to_string()).collect(),
        rcgen::KeyPair::generate().expect("key"),
    )
}

/// The kitchen-sink file copied into a fresh directory with the files it names.
fn deployed(pki: &Pki) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("tls")).expect("mkdir");
    write(
        &dir.path().join("tls"),
        &[
            ("server.crt", &pki.server.cert),
            ("server.key", &pki.server.key),
            ("clients-ca.crt", &pki.client_ca.pem()),
        ],
    );
    let path = dir.path().join("web-config.yml");
    std::fs::write(&path, fixture("kitchen-sink.yml")).expect("write");
    (dir, path)
}

/// `GET /metrics` without credentials over a fresh connection (credentials are sent through
/// reqwest below): the status and what was negotiated.
async fn scrape(addr: std::net::SocketAddr, offer: &Offer<'_>) -> Result<Exchange, String> {
    exchange(addr, offer, "/metrics").await
}

#[tokio::test]
async fn the_kitchen_sink_web_config_loads_and_behaves_as_the_toolkits() {
    // Leaked so that TLS offers can borrow the certificates for the whole test.
    let pki: &'static Pki = Box::leak(Box::new(pki()));
    let (_dir, path) = deployed(pki);
    let web = load_web(&path).expect("the kitchen sink loads");
    let current = web.current();
    assert!(current.warnings.is_empty(), "{:?}", current.warnings);
    assert_eq!(
        current.summary(),
        "TLS: on (HTTP/2 and HTTP/1.1), client certificates: RequireAndVerifyClientCert, \
         basic auth users: 1, extra headers: 5, rate limit: 1 request per 1s, bursts of 20"
    );
    let s = serve_web(&path).await;
    let addr = s.app.addr;
    let leak = |l: Leaf| -> &'static Leaf { Box::leak(Box::new(l)) };
    let prometheus = leak(client(pki, &["prometheus.monitoring.svc"]));
    let by_mail = leak(client(pki, &["mailto:oncall@example.com"]));
    let by_uri = leak(client(
        pki,
        &["uri:spiffe://cluster.local/ns/monitoring/sa/prometheus"],
    ));
    let by_ip = leak(client(pki, &["10.0.0.5"]));
    let stranger = leak(client(pki, &["grafana.monitoring.svc"]));
    let offer = |identity: Option<&'static Leaf>| Offer {
        cas: vec![&pki.server_ca],
        identity,
        alpn: vec![b"h2", b"http/1.1"],
        ..Offer::default()
    };
    let mut used = 0;

    // HTTP/2 by ALPN; without credentials 401 with the five headers, as the toolkit answers.
    let x = scrape(addr, &offer(Some(prometheus)))
        .await
        .expect("mTLS handshake");
    used += 1;
    assert!(x.http2);
    assert_eq!(x.status, 401);
    for (name, value) in [
        (
            "strict-transport-security",
            "max-age=31536000; includeSubDomains",
        ),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "deny"),
        ("x-xss-protection", "1"),
        ("content-security-policy", "default-src 'self'"),
    ] {
        assert_eq!(
            x.headers.get(name).map(|v| v.as_bytes()),
            Some(value.as_bytes()),
            "{name}"
        );
    }
    // Each allowed SAN form gets through with the password; no certificate or another SAN
    // does not.
    for (what, leaf) in [
        ("DNS", prometheus),
        ("e-mail", by_mail),
        ("URI", by_uri),
        ("IP", by_ip),
    ] {
        let r = https(&[&pki.server_ca], Some(leaf))
            .get(https_url(&s.app, "/metrics"))
            .basic_auth("prometheus", Some(PASSWORD))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:?}"));
        used += 1;
        assert_eq!(r.status(), reqwest::StatusCode::OK, "{what}");
        assert!(r.text().await.expect("body").contains("dli_up"));
    }
    for (what, identity) in [("no certificate", None), ("other SAN", Some(stranger))] {
        let e = scrape(addr, &offer(identity)).await;
        assert!(e.is_err(), "{what} got through: {e:?}");
    }
    // Only the listed suites and curves.
    let tls12 = |suites: &[u16], groups: &[NamedGroup]| {
        let mut o = offer(Some(prometheus));
        o.suites = suites.to_vec();
        o.groups = groups.to_vec();
        o.tls12_only = true;
        o
    };
    assert!(
        scrape(addr, &tls12(&[0xcca9], &[])).await.is_err(),
        "unlisted ECDSA CHACHA20"
    );
    let x = scrape(addr, &tls12(&[0xc02c, 0xc02b], &[]))
        .await
        .expect("listed");
    used += 1;
    assert_eq!(x.suite, 0xc02b, "the server's order wins");
    assert!(
        scrape(addr, &tls12(&[], &[NamedGroup::secp384r1]))
            .await
            .is_err(),
        "unlisted P-384"
    );
    let x = scrape(
        addr,
        &tls12(&[], &[NamedGroup::secp384r1, NamedGroup::secp256r1]),
    )
    .await
    .expect("listed curve");
    used += 1;
    assert_eq!(x.group, Some(NamedGroup::secp256r1));
    // The rate limit: 20 at once, then 429 (before authentication).
    let mut limited = false;
    for _ in used..30 {
        let x = scrape(addr, &offer(Some(prometheus)))
            .await
            .expect("handshake");
        if x.status == 429 {
            limited = true;
            break;
        }
        assert_eq!(x.status, 401);
    }
    assert!(limited, "no 429 after the burst of 20");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let x = scrape(addr, &offer(Some(prometheus)))
        .await
        .expect("handshake");
    assert_eq!(x.status, 401, "a token is back after the interval");
}

#[tokio::test]
async fn the_inline_kitchen_sink_loads_and_behaves_as_the_toolkits() {
    let pki = pki();
    let indent = |pem: &str| pem.trim_end().replace('\n', "\n    ");
    let text = fixture("kitchen-sink-inline.yml")
        .replace("@SERVER_CERT@", &indent(&pki.server.cert))
        .replace("@SERVER_KEY@", &indent(&pki.server.key))
        .replace("@CLIENT_CA@", &indent(&pki.client_ca.pem()));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("web-config.yml");
    std::fs::write(&path, text).expect("write");
    let web = load_web(&path).expect("the inline kitchen sink loads");
    let current = web.current();
    assert_eq!(
        current.summary(),
        "TLS: on (HTTP/1.1), client certificates: RequireAnyClientCert, basic auth users: 0, \
         extra headers: 0, rate limit: off"
    );
    // RequireAnyClientCert does not verify against client_ca; the toolkit says so too ("other
    // values are insecure"), here as a warning.
    assert!(
        current.warnings.iter().any(|w| w.contains("not verified")),
        "{:?}",
        current.warnings
    );
    let s = serve_web(&path).await;
    let offer = |identity: Option<&'static Leaf>| Offer {
        cas: vec![],
        identity,
        alpn: vec![b"h2", b"http/1.1"],
        ..Offer::default()
    };
    let leak = |l: Leaf| -> &'static Leaf { Box::leak(Box::new(l)) };
    let ca: &'static Ca = Box::leak(Box::new(pki.server_ca));
    let with_ca = |mut o: Offer<'static>| {
        o.cas = vec![ca];
        o
    };
    let allowed = leak(self_signed_client(
        "p",
        &["prometheus.monitoring.svc"],
        false,
    ));
    let x = exchange(s.app.addr, &with_ca(offer(Some(allowed))), "/metrics")
        .await
        .expect("any certificate with the allowed SAN");
    assert!(!x.http2, "http2: off");
    assert_eq!(x.status, 200);
    let other = leak(self_signed_client("p", &["grafana"], false));
    assert!(
        exchange(s.app.addr, &with_ca(offer(Some(other))), "/metrics")
            .await
            .is_err()
    );
    assert!(
        exchange(s.app.addr, &with_ca(offer(None)), "/metrics")
            .await
            .is_err()
    );
}
