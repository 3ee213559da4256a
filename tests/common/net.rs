//! Network fixtures for the TLS and proxy tests: a test CA and server certificates made at test
//! time with rcgen, a TLS terminator in front of a plain simulator, and a tiny HTTP proxy
//! (CONNECT tunnels and absolute-form forwarding) that counts what goes through it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA and one server certificate for `127.0.0.1` and `localhost`.
pub struct TestPki {
    /// The CA certificate, PEM: what a `ca_file` holds.
    pub ca_pem: String,
    pub server_cert: CertificateDer<'static>,
    pub server_key: Vec<u8>,
}

/// A fresh CA and a server certificate; `expired` makes the server certificate's validity end
/// a day ago.
pub fn test_pki(expired: bool) -> TestPki {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "dli_exporter test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "dli simulator");
    let now = time::OffsetDateTime::now_utc();
    if expired {
        params.not_before = now - time::Duration::days(30);
        params.not_after = now - time::Duration::days(1);
    } else {
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(30);
    }
    let key = KeyPair::generate().expect("server key");
    let cert = params.signed_by(&key, &issuer).expect("server cert");
    TestPki {
        ca_pem: ca_cert.pem(),
        server_cert: cert.der().clone(),
        server_key: key.serialize_der(),
    }
}

/// A TLS terminator on `127.0.0.1:0` that forwards every connection to `backend` in plain TCP.
/// Returns its address; it runs until the test's runtime ends.
pub async fn tls_front(pki: &TestPki, backend: SocketAddr) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![pki.server_cert.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key.clone())),
        )
        .expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tls");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A handshake the client refuses (unknown CA, expired) just ends here.
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

/// What went through a [`Proxy`].
#[derive(Default)]
pub struct ProxyLog {
    /// Connections accepted.
    pub connections: AtomicUsize,
    /// Request lines seen (`CONNECT host:port HTTP/1.1`, `GET http://… HTTP/1.1`).
    pub requests: Mutex<Vec<String>>,
    /// `Proxy-Authorization` header values seen.
    pub auth: Mutex<Vec<String>>,
}

impl ProxyLog {
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn auth(&self) -> Vec<String> {
        self.auth.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// A tiny HTTP proxy on `127.0.0.1:0`: `CONNECT` opens a tunnel to the named address; any other
/// request (absolute-form, for `http://` targets) is forwarded as is to the host of its URL.
pub async fn proxy() -> (SocketAddr, Arc<ProxyLog>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("addr");
    let log = Arc::new(ProxyLog::default());
    let accept_log = log.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            accept_log.connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(proxy_connection(stream, accept_log.clone()));
        }
    });
    (addr, log)
}

async fn proxy_connection(mut client: TcpStream, log: Arc<ProxyLog>) {
    // Read the request head (bounded).
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("proxy-authorization")
            && let Ok(mut auth) = log.auth.lock()
        {
            auth.push(value.trim().to_string());
        }
    }
    if let Ok(mut r) = log.requests.lock() {
        r.push(request_line.clone());
    }
    let mut parts = request_line.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if method == "CONNECT" {
        let Ok(mut upstream) = TcpStream::connect(target).await else {
            let _ = client
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                .await;
            return;
        };
        if client
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    } else {
        let host = target
            .strip_prefix("http://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default()
            .to_string();
        let Ok(mut upstream) = TcpStream::connect(host).await else {
            return;
        };
        if upstream.write_all(&head).await.is_err() {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}
