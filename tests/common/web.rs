//! Fixtures for the web config tests: certificate authorities, server and client certificates
//! made at test time with rcgen (including self-signed CA:TRUE client certificates as
//! `openssl req -x509` makes them), an exporter serving a web config, and TLS clients that choose
//! their cipher suites, curves and ALPN and report what was negotiated.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dli_exporter::app::{App, StartOptions};
use dli_exporter::sim::{SimConfig, Simulator};
use dli_exporter::web::config::WebConfigWatcher;
use dli_exporter::web::server::Limits;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::{NamedGroup, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

/// A test certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

#[derive(Clone, Copy, PartialEq)]
pub enum Usage {
    Server,
    Client,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        Self::with_key(name, KeyPair::generate().expect("CA key"))
    }

    pub fn with_key(name: &str, key: KeyPair) -> Ca {
        Ca {
            issuer: CertifiedIssuer::self_signed(ca_params(name), key).expect("CA certificate"),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `name` (and 127.0.0.1), ECDSA P-256.
    pub fn leaf(&self, name: &str, usage: Usage, expired: bool) -> Leaf {
        self.leaf_with(
            name,
            usage,
            expired,
            vec![name.to_string(), "127.0.0.1".to_string()],
            KeyPair::generate().expect("leaf key"),
        )
    }

    /// A certificate with exactly `sans` (DNS names, IP addresses, `mailto:` e-mail or
    /// `uri:` URIs) and `key`.
    pub fn leaf_with(
        &self,
        name: &str,
        usage: Usage,
        expired: bool,
        sans: Vec<String>,
        key: KeyPair,
    ) -> Leaf {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.subject_alt_names = sans.iter().map(|s| san(s)).collect();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = p.signed_by(&key, &self.issuer).expect("leaf certificate");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

fn san(s: &str) -> SanType {
    if let Some(mail) = s.strip_prefix("mailto:") {
        SanType::Rfc822Name(mail.try_into().expect("e-mail"))
    } else if let Some(uri) = s.strip_prefix("uri:") {
        SanType::URI(uri.try_into().expect("uri"))
    } else if let Ok(ip) = s.parse() {
        SanType::IpAddress(ip)
    } else {
        SanType::DnsName(s.try_into().expect("dns name"))
    }
}

/// A self-signed client certificate as `openssl req -x509` makes it: CA:TRUE basic
/// constraints, client-auth extended key usage, the given SANs.
pub fn self_signed_client(name: &str, sans: &[&str], expired: bool) -> Leaf {
    let mut p = ca_params(name);
    p.subject_alt_names = sans.iter().map(|s| san(s)).collect();
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if expired {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate().expect("key");
    let cert = p.self_signed(&key).expect("self-signed");
    Leaf {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// An RSA 2048 key.
pub fn rsa_key() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key")
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(aws_lc_rs::default_provider())
}

/// What a TLS client offers.
#[derive(Default, Clone)]
pub struct Offer<'a> {
    pub cas: Vec<&'a Ca>,
    pub identity: Option<&'a Leaf>,
    /// IANA ids, in the client's order; empty: rustls's defaults.
    pub suites: Vec<u16>,
    pub groups: Vec<NamedGroup>,
    pub alpn: Vec<&'static [u8]>,
    /// Only TLS 1.2.
    pub tls12_only: bool,
}

/// A rustls client configuration for `offer`.
pub fn client_config(offer: &Offer) -> rustls::ClientConfig {
    let mut p = aws_lc_rs::default_provider();
    if !offer.suites.is_empty() {
        p.cipher_suites = offer
            .suites
            .iter()
            .map(|id| {
                *aws_lc_rs::ALL_CIPHER_SUITES
                    .iter()
                    .find(|s| u16::from(s.suite()) == *id)
                    .expect("suite known to rustls")
            })
            .collect();
    }
    if !offer.groups.is_empty() {
        p.kx_groups = offer
            .groups
            .iter()
            .map(|g| {
                *aws_lc_rs::ALL_KX_GROUPS
                    .iter()
                    .find(|k| k.name() == *g)
                    .expect("group known to rustls")
            })
            .collect();
    }
    let mut roots = RootCertStore::empty();
    for ca in &offer.cas {
        for c in CertificateDer::pem_slice_iter(ca.pem().as_bytes()) {
            roots.add(c.expect("CA pem")).expect("add CA");
        }
    }
    let versions: &[&rustls::SupportedProtocolVersion] = if offer.tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(p))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match offer.identity {
        Some(leaf) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(leaf.cert.as_bytes())
                    .collect::<Result<_, _>>()
                    .expect("client cert");
            let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).expect("client key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = offer.alpn.iter().map(|a| a.to_vec()).collect();
    config
}

/// A verifying reqwest HTTPS client (HTTP/1.1) with `offer`'s choices; no connection reuse, so
/// every request makes a new handshake.
pub fn https_with(offer: &Offer) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .tls_backend_preconfigured(client_config(offer))
        .build()
        .expect("https client")
}

/// [`https_with`] trusting `cas` and presenting `identity`.
pub fn https(cas: &[&Ca], identity: Option<&Leaf>) -> reqwest::Client {
    https_with(&Offer {
        cas: cas.to_vec(),
        identity,
        ..Offer::default()
    })
}

/// What one request over a fresh TLS connection got.
#[derive(Debug)]
pub struct Exchange {
    pub status: u16,
    pub http2: bool,
    pub suite: u16,
    pub group: Option<NamedGroup>,
    pub tls13: bool,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

/// Connects to `addr` with `offer` (server name `localhost`), sends `GET path` over HTTP/2 when
/// ALPN chose it, HTTP/1.1 otherwise. `Err` says where it failed.
pub async fn exchange(addr: SocketAddr, offer: &Offer<'_>, path: &str) -> Result<Exchange, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let connector = TlsConnector::from(Arc::new(client_config(offer)));
    let tls = tokio::time::timeout(
        Duration::from_secs(5),
        connector.connect(ServerName::try_from("localhost").expect("name"), tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_string())?
    .map_err(|e| format!("handshake: {e}"))?;
    let (_, session) = tls.get_ref();
    let http2 = session.alpn_protocol() == Some(b"h2");
    let suite = session
        .negotiated_cipher_suite()
        .map(|s| u16::from(s.suite()))
        .unwrap_or_default();
    let group = session.negotiated_key_exchange_group().map(|g| g.name());
    let tls13 = session.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
    let req = hyper::Request::get(format!("https://localhost{path}"))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let io = TokioIo::new(tls);
    let response = if http2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
        tokio::spawn(conn);
        send.send_request(req).await
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("h1 handshake: {e}"))?;
        tokio::spawn(conn);
        let mut req = req;
        req.headers_mut()
            .insert("host", hyper::header::HeaderValue::from_static("localhost"));
        send.send_request(req).await
    }
    .map_err(|e| format!("request: {e:?}"))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = tokio::time::timeout(Duration::from_secs(5), response.into_body().collect())
        .await
        .map_err(|_| "body timed out".to_string())?
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Exchange {
        status,
        http2,
        suite,
        group,
        tls13,
        headers,
        body,
    })
}

/// Writes `files` into `dir`.
pub fn write(dir: &Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("write file");
    }
}

/// A server with `leaf` as its certificate and `tls_extra` appended to `tls_server_config`
/// (two-space indented lines), `extra_files` beside it; then `rest` (top-level YAML).
pub fn tls_dir(
    leaf: &Leaf,
    tls_extra: &str,
    extra_files: &[(&str, &str)],
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        &[("server.pem", &leaf.cert), ("server.key", &leaf.key)],
    );
    write(dir.path(), extra_files);
    let path = dir.path().join("web-config.yml");
    std::fs::write(
        &path,
        format!("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n{tls_extra}"),
    )
    .expect("write web config");
    (dir, path)
}

/// The web config at `path` loaded, or its error as text.
pub fn load_web(path: &Path) -> Result<Arc<WebConfigWatcher>, String> {
    WebConfigWatcher::load(path).map_err(|e| e.to_string())
}

/// A running exporter (against a simulator) with a web config.
pub struct Served {
    pub app: App,
    _sim: Simulator,
}

pub async fn serve_web(web_config: &Path) -> Served {
    serve_web_limited(web_config, Limits::default()).await
}

pub async fn serve_web_limited(web_config: &Path, limits: Limits) -> Served {
    let sim = super::sim(SimConfig::default()).await;
    let settings = super::settings(
        vec![super::project(&sim, &["q"], super::aksk())],
        super::fast_poll(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let web = WebConfigWatcher::load(web_config).expect("web config loads");
    let app = App::start_with(
        &settings,
        listener,
        StartOptions {
            web: Some(web),
            web_config_poll: Duration::from_millis(100),
            limits,
            ..StartOptions::default()
        },
    )
    .expect("exporter starts");
    Served { app, _sim: sim }
}

pub fn https_url(app: &App, path: &str) -> String {
    format!("https://127.0.0.1:{}{}", app.addr.port(), path)
}

pub async fn status(client: &reqwest::Client, url: &str) -> Result<reqwest::StatusCode, String> {
    match client.get(url).send().await {
        Ok(r) => Ok(r.status()),
        Err(e) => Err(format!("{e:?}")),
    }
}
