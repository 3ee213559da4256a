//! The web configuration file (`--web.config.file`), in the format of the Prometheus
//! exporter-toolkit, so a `web-config.yml` written for node_exporter works unchanged:
//! `tls_server_config`, `http_server_config` and `basic_auth_users`.
//!
//! It owns parsing and validating that YAML, reading the certificate, key and CA files it names
//! (relative to the web config file's directory, as the toolkit does), building the rustls
//! server configuration (aws-lc-rs provider, chosen explicitly) and [`WebConfigWatcher`], which
//! re-reads everything when the file or any file it names changes and keeps the previous
//! settings when the new ones are broken. It must not serve HTTP (that is `server`) and must never
//! log a password hash or a private key.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use yaml_rust2::{Yaml, YamlLoader};

use crate::basic_auth::{self, BasicAuth};
use crate::rate_limit::RateLimiter;
use crate::secret::Secret;

/// How often the watcher looks at the web config file and the files it names.
pub const WEB_CONFIG_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// A web config that cannot be used; says which file and which key.
#[derive(Debug, Clone, thiserror::Error)]
#[error("web config {}: {}{message}", file.display(), if key.is_empty() { String::new() } else { format!("{key}: ") })]
pub struct WebConfigError {
    /// The web config file.
    pub file: PathBuf,
    /// Dotted key, e.g. `tls_server_config.cert_file`; empty for the file as a whole.
    pub key: String,
    /// What is wrong (never contains a secret).
    pub message: String,
}

/// `client_auth_type` of the exporter-toolkit (Go's `tls.ClientAuthType` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    fn parse(s: &str) -> Option<ClientAuth> {
        Some(match s {
            "" | "NoClientCert" => ClientAuth::NoClientCert,
            "RequestClientCert" => ClientAuth::RequestClientCert,
            "RequireAnyClientCert" => ClientAuth::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
            _ => return None,
        })
    }

    fn verifies(self) -> bool {
        matches!(
            self,
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert
        )
    }
}

/// The settings in force: what the server reads for each connection and request.
pub struct ActiveWebConfig {
    /// TLS for new connections; `None` serves plain HTTP.
    pub tls: Option<TlsAcceptor>,
    /// Client certificate policy (for logs and `--check-config`).
    pub client_auth: ClientAuth,
    /// Basic auth for every endpoint; `None` when no users are configured.
    pub auth: Option<Arc<BasicAuth>>,
    /// `http_server_config.headers`, added to every response.
    pub headers: HeaderMap,
    /// `rate_limit`: requests beyond it get 429.
    pub rate_limit: Option<Arc<RateLimiter>>,
    /// Accepted keys that have no effect here, one sentence each (logged at load).
    pub warnings: Vec<String>,
}

impl fmt::Debug for ActiveWebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActiveWebConfig")
            .field("tls", &self.tls.is_some())
            .field("client_auth", &self.client_auth)
            .field("auth", &self.auth)
            .field("headers", &self.headers)
            .finish()
    }
}

impl ActiveWebConfig {
    /// No TLS, no auth, no headers: what runs without `--web.config.file`.
    pub fn plain() -> Self {
        ActiveWebConfig {
            tls: None,
            client_auth: ClientAuth::NoClientCert,
            auth: None,
            headers: HeaderMap::new(),
            rate_limit: None,
            warnings: Vec::new(),
        }
    }

    /// One line for `--check-config` and the start-up log.
    pub fn summary(&self) -> String {
        format!(
            "TLS: {}, client certificates: {:?}, basic auth users: {}, extra headers: {}, rate limit: {}",
            if self.tls.is_some() { "on" } else { "off" },
            self.client_auth,
            self.auth.as_ref().map_or(0, |a| a.user_count()),
            self.headers.len(),
            self.rate_limit
                .as_ref()
                .map_or_else(|| "off".to_string(), |r| r.describe())
        )
    }
}

/// Headers the toolkit lets a web config set, with the values it allows (empty: any value).
const ALLOWED_HEADERS: [(&str, &[&str]); 5] = [
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// Parses `text` (the content of `file`) and reads the files it names. `watched` collects those
/// files even when loading fails, so the watcher notices when a missing one appears.
pub fn parse(
    file: &Path,
    text: &str,
    watched: &mut Vec<PathBuf>,
) -> Result<ActiveWebConfig, WebConfigError> {
    let cx = Cx {
        file,
        dir: file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    let docs =
        YamlLoader::load_from_str(text).map_err(|e| cx.err("", format!("invalid YAML: {e}")))?;
    if docs.len() > 1 {
        return Err(cx.err("", "more than one YAML document"));
    }
    let root = docs.into_iter().next().unwrap_or(Yaml::Null);
    let top = cx.map(&root, "")?;
    let mut config = ActiveWebConfig::plain();
    let mut tls_section = None;
    for (k, v) in top {
        let key = cx.key_name(k, "")?;
        match key.as_str() {
            "tls_server_config" => tls_section = Some(v),
            "http_server_config" => {
                for (k2, v2) in cx.map(v, "http_server_config")? {
                    let key2 = cx.key_name(k2, "http_server_config")?;
                    match key2.as_str() {
                        "http2" => {
                            if cx.boolean(v2, "http_server_config.http2")? {
                                config.warnings.push(
                                    "http_server_config.http2: ignored; the exporter serves HTTP/1.1 only".into(),
                                );
                            }
                        }
                        "headers" => config.headers = cx.headers(v2)?,
                        other => return Err(cx.unknown("http_server_config.", other)),
                    }
                }
            }
            "basic_auth_users" => {
                let mut users = HashMap::new();
                for (uk, uv) in cx.map(v, "basic_auth_users")? {
                    let user = cx.key_name(uk, "basic_auth_users")?;
                    let key = format!("basic_auth_users.{user}");
                    if user.contains(':') {
                        return Err(cx.err(&key, "a user name cannot contain ':'"));
                    }
                    let hash = cx.string(uv, &key)?;
                    if !basic_auth::is_bcrypt_hash(&hash) {
                        return Err(cx.err(&key, "not a bcrypt hash (make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)"));
                    }
                    users.insert(user, Secret::new(hash));
                }
                if !users.is_empty() {
                    config.auth = Some(Arc::new(BasicAuth::new(users)));
                }
            }
            "rate_limit" => config.rate_limit = cx.rate_limit(v)?.map(Arc::new),
            other => return Err(cx.unknown("", other)),
        }
    }
    if let Some(tls) = tls_section {
        let (acceptor, client_auth) = cx.tls(tls, watched, &mut config.warnings)?;
        config.tls = acceptor;
        config.client_auth = client_auth;
    }
    Ok(config)
}

/// Reads and parses `file`; see [`parse`].
pub fn load(file: &Path, watched: &mut Vec<PathBuf>) -> Result<ActiveWebConfig, WebConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| WebConfigError {
        file: file.to_path_buf(),
        key: String::new(),
        message: format!("cannot read: {e}"),
    })?;
    parse(file, &text, watched)
}

struct Cx<'a> {
    file: &'a Path,
    dir: PathBuf,
}

impl Cx<'_> {
    fn err(&self, key: &str, message: impl Into<String>) -> WebConfigError {
        WebConfigError {
            file: self.file.to_path_buf(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn unknown(&self, prefix: &str, key: &str) -> WebConfigError {
        self.err(&format!("{prefix}{key}"), "unknown key")
    }

    /// The entries of a mapping (`null` is an empty one).
    fn map<'y>(&self, v: &'y Yaml, key: &str) -> Result<Vec<(&'y Yaml, &'y Yaml)>, WebConfigError> {
        match v {
            Yaml::Hash(h) => Ok(h.iter().collect()),
            Yaml::Null => Ok(Vec::new()),
            _ => Err(self.err(key, "expected a mapping")),
        }
    }

    fn key_name(&self, k: &Yaml, parent: &str) -> Result<String, WebConfigError> {
        match k {
            Yaml::String(s) => Ok(s.clone()),
            Yaml::Integer(i) => Ok(i.to_string()),
            Yaml::Boolean(b) => Ok(b.to_string()),
            _ => Err(self.err(parent, "keys must be strings")),
        }
    }

    fn string(&self, v: &Yaml, key: &str) -> Result<String, WebConfigError> {
        match v {
            Yaml::String(s) => Ok(s.clone()),
            Yaml::Null => Ok(String::new()),
            _ => Err(self.err(key, "expected a string")),
        }
    }

    fn boolean(&self, v: &Yaml, key: &str) -> Result<bool, WebConfigError> {
        match v {
            Yaml::Boolean(b) => Ok(*b),
            Yaml::Null => Ok(false),
            _ => Err(self.err(key, "expected true or false")),
        }
    }

    /// `rate_limit: {interval: <duration>, burst: <int>}`; `None` when it does not limit.
    fn rate_limit(&self, v: &Yaml) -> Result<Option<RateLimiter>, WebConfigError> {
        let mut interval = Duration::ZERO;
        let mut burst = 0u32;
        for (k, val) in self.map(v, "rate_limit")? {
            let name = self.key_name(k, "rate_limit")?;
            match name.as_str() {
                "interval" => interval = self.duration(val, "rate_limit.interval")?,
                "burst" => {
                    burst = match val {
                        Yaml::Integer(n) => u32::try_from(*n).map_err(|_| {
                            self.err(
                                "rate_limit.burst",
                                format!("{n} is not a count of requests"),
                            )
                        })?,
                        Yaml::Null => 0,
                        _ => return Err(self.err("rate_limit.burst", "expected an integer")),
                    }
                }
                other => return Err(self.unknown("rate_limit.", other)),
            }
        }
        Ok(RateLimiter::new(interval, burst))
    }

    /// A Go-style duration (`1s`, `250ms`, `1m30s`) or 0.
    fn duration(&self, v: &Yaml, key: &str) -> Result<Duration, WebConfigError> {
        match v {
            Yaml::Integer(0) | Yaml::Null => Ok(Duration::ZERO),
            Yaml::String(s) if s.trim() == "0" => Ok(Duration::ZERO),
            Yaml::String(s) => humantime::parse_duration(s.trim())
                .map_err(|e| self.err(key, format!("invalid duration {s:?}: {e}"))),
            _ => Err(self.err(key, "expected a duration such as 1s or 250ms")),
        }
    }

    fn strings(&self, v: &Yaml, key: &str) -> Result<Vec<String>, WebConfigError> {
        match v {
            Yaml::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, x)| self.string(x, &format!("{key}[{i}]")))
                .collect(),
            Yaml::Null => Ok(Vec::new()),
            _ => Err(self.err(key, "expected a list of strings")),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    fn read_file(
        &self,
        key: &str,
        p: &str,
        watched: &mut Vec<PathBuf>,
    ) -> Result<Vec<u8>, WebConfigError> {
        let path = self.path(p);
        watched.push(path.clone());
        std::fs::read(&path)
            .map_err(|e| self.err(key, format!("cannot read {}: {e}", path.display())))
    }

    fn headers(&self, v: &Yaml) -> Result<HeaderMap, WebConfigError> {
        let mut out = HeaderMap::new();
        for (k, val) in self.map(v, "http_server_config.headers")? {
            let name = self.key_name(k, "http_server_config.headers")?;
            let key = format!("http_server_config.headers.{name}");
            let Some((_, allowed)) = ALLOWED_HEADERS
                .iter()
                .find(|(h, _)| h.eq_ignore_ascii_case(&name))
            else {
                let names: Vec<&str> = ALLOWED_HEADERS.iter().map(|(h, _)| *h).collect();
                return Err(self.err(
                    &key,
                    format!(
                        "this header cannot be configured (allowed: {})",
                        names.join(", ")
                    ),
                ));
            };
            let value = self.string(val, &key)?;
            if !allowed.is_empty() && !allowed.iter().any(|a| a.eq_ignore_ascii_case(&value)) {
                return Err(self.err(
                    &key,
                    format!("invalid value {value:?}; expected one of {allowed:?}"),
                ));
            }
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| self.err(&key, format!("invalid header name: {e}")))?;
            let value = HeaderValue::from_str(&value)
                .map_err(|e| self.err(&key, format!("invalid header value: {e}")))?;
            out.insert(name, value);
        }
        Ok(out)
    }

    fn tls(
        &self,
        v: &Yaml,
        watched: &mut Vec<PathBuf>,
        warnings: &mut Vec<String>,
    ) -> Result<(Option<TlsAcceptor>, ClientAuth), WebConfigError> {
        const S: &str = "tls_server_config";
        let k = |name: &str| format!("{S}.{name}");
        let mut cert_file = String::new();
        let mut key_file = String::new();
        let mut cert_inline = String::new();
        let mut key_inline = String::new();
        let mut client_auth_name = String::new();
        let mut client_ca_file = String::new();
        let mut allowed_sans = Vec::new();
        let mut min_version = String::new();
        let mut max_version = String::new();
        for (key, val) in self.map(v, S)? {
            let name = self.key_name(key, S)?;
            match name.as_str() {
                "cert_file" => cert_file = self.string(val, &k("cert_file"))?,
                "key_file" => key_file = self.string(val, &k("key_file"))?,
                "cert" => cert_inline = self.string(val, &k("cert"))?,
                "key" => key_inline = self.string(val, &k("key"))?,
                "client_auth_type" => {
                    client_auth_name = self.string(val, &k("client_auth_type"))?
                }
                "client_ca_file" => client_ca_file = self.string(val, &k("client_ca_file"))?,
                "client_allowed_sans" => {
                    allowed_sans = self.strings(val, &k("client_allowed_sans"))?
                }
                "min_version" => min_version = self.string(val, &k("min_version"))?,
                "max_version" => max_version = self.string(val, &k("max_version"))?,
                "cipher_suites" | "curve_preferences" => {
                    if !self.strings(val, &k(&name))?.is_empty() {
                        warnings.push(format!(
                            "{S}.{name}: ignored; rustls offers only modern, safe choices and picks them itself"
                        ));
                    }
                }
                "prefer_server_cipher_suites" => {
                    self.boolean(val, &k(&name))?;
                    warnings.push(format!(
                        "{S}.{name}: ignored; rustls always prefers the server's order"
                    ));
                }
                other => return Err(self.unknown(&format!("{S}."), other)),
            }
        }
        let client_auth = ClientAuth::parse(&client_auth_name).ok_or_else(|| {
            self.err(
                &k("client_auth_type"),
                format!(
                    "invalid value {client_auth_name:?}; expected one of NoClientCert, RequestClientCert, \
                     RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert"
                ),
            )
        })?;
        if cert_file.is_empty()
            && cert_inline.is_empty()
            && key_file.is_empty()
            && key_inline.is_empty()
            && client_ca_file.is_empty()
            && client_auth_name.is_empty()
        {
            // As in the toolkit: an empty tls_server_config means plain HTTP.
            return Ok((None, ClientAuth::NoClientCert));
        }
        let cert_pem = match (cert_file.is_empty(), cert_inline.is_empty()) {
            (true, true) => return Err(self.err(S, "missing one of cert or cert_file")),
            (false, false) => return Err(self.err(S, "cert and cert_file are mutually exclusive")),
            (false, true) => self.read_file(&k("cert_file"), &cert_file, watched)?,
            (true, false) => cert_inline.into_bytes(),
        };
        let key_pem = Secret::new(match (key_file.is_empty(), key_inline.is_empty()) {
            (true, true) => return Err(self.err(S, "missing one of key or key_file")),
            (false, false) => return Err(self.err(S, "key and key_file are mutually exclusive")),
            (false, true) => {
                let bytes = self.read_file(&k("key_file"), &key_file, watched)?;
                String::from_utf8(bytes)
                    .map_err(|_| self.err(&k("key_file"), "not a PEM file (not UTF-8)"))?
            }
            (true, false) => key_inline,
        });
        let cert_key = if cert_file.is_empty() {
            k("cert")
        } else {
            k("cert_file")
        };
        let key_key = if key_file.is_empty() {
            k("key")
        } else {
            k("key_file")
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(&cert_key, format!("invalid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(self.err(&cert_key, "no CERTIFICATE block found"));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.expose().as_bytes())
            .map_err(|e| self.err(&key_key, format!("no usable private key: {e}")))?;

        let versions = self.versions(&min_version, &max_version)?;
        let provider = provider();

        if client_auth == ClientAuth::NoClientCert && !client_ca_file.is_empty() {
            return Err(self.err(
                &k("client_ca_file"),
                "client CAs are configured but client_auth_type is NoClientCert; set client_auth_type",
            ));
        }
        if client_auth.verifies() && client_ca_file.is_empty() {
            return Err(self.err(
                &k("client_ca_file"),
                format!("required when client_auth_type is {client_auth:?}"),
            ));
        }
        if !allowed_sans.is_empty() && !client_auth.verifies() {
            return Err(self.err(
                &k("client_allowed_sans"),
                "needs client_auth_type VerifyClientCertIfGiven or RequireAndVerifyClientCert",
            ));
        }
        let verifier: Arc<dyn ClientCertVerifier> = match client_auth {
            ClientAuth::NoClientCert => WebPkiClientVerifier::no_client_auth(),
            ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert => {
                Arc::new(ClientVerifier {
                    inner: None,
                    mandatory: client_auth == ClientAuth::RequireAnyClientCert,
                    allowed_sans: Vec::new(),
                    provider: provider.clone(),
                })
            }
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
                let ca_key = k("client_ca_file");
                let pem = self.read_file(&ca_key, &client_ca_file, watched)?;
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| self.err(&ca_key, format!("invalid PEM: {e}")))?;
                    roots
                        .add(cert)
                        .map_err(|e| self.err(&ca_key, format!("unusable CA certificate: {e}")))?;
                }
                if roots.is_empty() {
                    return Err(self.err(&ca_key, "no CERTIFICATE block found"));
                }
                let mut builder =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                if client_auth == ClientAuth::VerifyClientCertIfGiven {
                    builder = builder.allow_unauthenticated();
                }
                let inner = builder.build().map_err(|e| {
                    self.err(&ca_key, format!("cannot build the client verifier: {e}"))
                })?;
                Arc::new(ClientVerifier {
                    mandatory: client_auth == ClientAuth::RequireAndVerifyClientCert,
                    inner: Some(inner),
                    allowed_sans,
                    provider: provider.clone(),
                })
            }
        };
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|e| self.err(&k("min_version"), format!("{e}")))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|e| {
                self.err(
                    &key_key,
                    format!("cannot be used with the certificate in {cert_key}: {e}"),
                )
            })?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok((Some(TlsAcceptor::from(Arc::new(server))), client_auth))
    }

    fn versions(
        &self,
        min: &str,
        max: &str,
    ) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, WebConfigError> {
        let rank = |key: &str, v: &str, default: u8| -> Result<u8, WebConfigError> {
            match v {
                "" => Ok(default),
                "TLS12" => Ok(12),
                "TLS13" => Ok(13),
                "TLS10" | "TLS11" => Err(self.err(
                    &format!("tls_server_config.{key}"),
                    format!("{v} is not supported (rustls speaks TLS 1.2 and 1.3 only)"),
                )),
                _ => Err(self.err(
                    &format!("tls_server_config.{key}"),
                    format!("invalid value {v:?}; expected TLS12 or TLS13"),
                )),
            }
        };
        let lo = rank("min_version", min, 12)?;
        let hi = rank("max_version", max, 13)?;
        if lo > hi {
            return Err(self.err(
                "tls_server_config.min_version",
                format!("{min} is above max_version {max}"),
            ));
        }
        let mut out = Vec::new();
        if lo <= 12 {
            out.push(&rustls::version::TLS12);
        }
        if hi >= 13 {
            out.push(&rustls::version::TLS13);
        }
        Ok(out)
    }
}

/// The aws-lc-rs provider (the one reqwest uses), chosen explicitly rather than the process
/// default.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Client certificate policy beyond what `WebPkiClientVerifier` does: accepting any certificate
/// (`RequestClientCert`, `RequireAnyClientCert`) and checking `client_allowed_sans`.
#[derive(Debug)]
struct ClientVerifier {
    /// Chain verification against `client_ca_file`; `None` accepts any certificate.
    inner: Option<Arc<dyn ClientCertVerifier>>,
    mandatory: bool,
    /// DNS names, IP addresses or URIs one of which the client certificate must carry.
    allowed_sans: Vec<String>,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        match &self.inner {
            Some(inner) => inner.root_hint_subjects(),
            None => &[],
        }
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if let Some(inner) = &self.inner {
            inner.verify_client_cert(end_entity, intermediates, now)?;
        }
        if !self.allowed_sans.is_empty() && !san_allowed(end_entity, &self.allowed_sans) {
            return Err(rustls::Error::General(
                "client certificate has none of the allowed SANs".into(),
            ));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Whether the certificate carries one of `allowed` as a DNS name, IP address or URI SAN.
/// (The toolkit also matches e-mail SANs; those are not read here.)
fn san_allowed(cert: &CertificateDer<'_>, allowed: &[String]) -> bool {
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    let dns: Vec<&str> = ee.valid_dns_names().collect();
    let uris: Vec<&str> = ee.valid_uri_names().collect();
    allowed.iter().any(|a| {
        if dns.iter().any(|d| d.eq_ignore_ascii_case(a)) || uris.contains(&a.as_str()) {
            return true;
        }
        match a.parse::<std::net::IpAddr>() {
            Ok(ip) => ee
                .verify_is_valid_for_subject_name(&ServerName::IpAddress(ip.into()))
                .is_ok(),
            Err(_) => false,
        }
    })
}

/// A digest of the contents of `paths` (a missing file counts as its error).
fn fingerprint(paths: &[PathBuf]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in paths {
        h.update(p.as_os_str().as_encoded_bytes());
        match std::fs::read(p) {
            Ok(bytes) => {
                h.update([1u8]);
                h.update((bytes.len() as u64).to_le_bytes());
                h.update(&bytes);
            }
            Err(e) => {
                h.update([0u8]);
                h.update(e.kind().to_string().as_bytes());
            }
        }
    }
    h.finalize().into()
}

struct WatchState {
    /// The web config file and every file its last load attempt named.
    watched: Vec<PathBuf>,
    /// Their fingerprint at that attempt.
    seen: [u8; 32],
    /// Why that attempt failed, if it did (the previous settings are still in force).
    failed: Option<WebConfigError>,
}

/// The web config in force, re-read when its files change.
pub struct WebConfigWatcher {
    path: PathBuf,
    current: ArcSwap<ActiveWebConfig>,
    state: Mutex<WatchState>,
}

impl fmt::Debug for WebConfigWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfigWatcher")
            .field("path", &self.path)
            .field("current", &*self.current.load())
            .finish()
    }
}

impl WebConfigWatcher {
    /// Loads `path`; an error here should stop start-up.
    pub fn load(path: &Path) -> Result<Arc<WebConfigWatcher>, WebConfigError> {
        let mut watched = vec![path.to_path_buf()];
        let config = load(path, &mut watched)?;
        let seen = fingerprint(&watched);
        for w in &config.warnings {
            tracing::warn!(web_config = %path.display(), "{w}");
        }
        Ok(Arc::new(WebConfigWatcher {
            path: path.to_path_buf(),
            current: ArcSwap::from_pointee(config),
            state: Mutex::new(WatchState {
                watched,
                seen,
                failed: None,
            }),
        }))
    }

    /// The web config file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The settings in force.
    pub fn current(&self) -> Arc<ActiveWebConfig> {
        self.current.load_full()
    }

    /// Re-reads the files when any of them changed since the last attempt. `Ok(true)`: new
    /// settings are in force; `Ok(false)`: nothing changed; `Err`: the files are broken and the
    /// previous settings stay (also when they were already broken at the last attempt, so a
    /// reload reports it). Blocking file I/O.
    pub fn check(&self) -> Result<bool, WebConfigError> {
        self.refresh(true)
    }

    /// `report_stale`: return the error of an unchanged broken file again.
    fn refresh(&self, report_stale: bool) -> Result<bool, WebConfigError> {
        let mut state = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = fingerprint(&state.watched);
        if now == state.seen {
            return match (&state.failed, report_stale) {
                (Some(e), true) => Err(e.clone()),
                _ => Ok(false),
            };
        }
        let mut watched = vec![self.path.clone()];
        let result = load(&self.path, &mut watched);
        state.seen = fingerprint(&watched);
        state.watched = watched;
        state.failed = result.as_ref().err().cloned();
        let config = result?;
        for w in &config.warnings {
            tracing::warn!(web_config = %self.path.display(), "{w}");
        }
        tracing::info!(web_config = %self.path.display(), settings = %config.summary(), "web config reloaded");
        self.current.store(Arc::new(config));
        Ok(true)
    }

    /// [`WebConfigWatcher::check`] on the blocking pool, logging a failure.
    pub async fn check_and_log(self: &Arc<Self>) -> Result<bool, WebConfigError> {
        self.refresh_and_log(true).await
    }

    async fn refresh_and_log(self: &Arc<Self>, report_stale: bool) -> Result<bool, WebConfigError> {
        let me = self.clone();
        let result = match tokio::task::spawn_blocking(move || me.refresh(report_stale)).await {
            Ok(r) => r,
            Err(e) => Err(WebConfigError {
                file: self.path.clone(),
                key: String::new(),
                message: format!("reload task failed: {e}"),
            }),
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, "web config not reloaded; the previous settings stay in force");
        }
        result
    }

    /// Checks for changes every `interval` until `stop` fires.
    pub async fn watch(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            // A broken file is logged once per change, not every interval.
            let _ = self.refresh_and_log(false).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<ActiveWebConfig, WebConfigError> {
        parse(Path::new("/etc/dli/web.yml"), text, &mut Vec::new())
    }

    fn err_of(text: &str) -> String {
        match parse_str(text) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    const HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

    #[test]
    fn node_exporter_style_file_without_tls_parses() {
        let c = parse_str(&format!(
            "# web-config.yml for node_exporter\n\
             http_server_config:\n  http2: true\n  headers:\n    X-Frame-Options: deny\n    \
             Strict-Transport-Security: max-age=31536000\n\
             basic_auth_users:\n  prometheus: {HASH}\n  'alice': \"{HASH}\"\n\
             tls_server_config: {{}}\n"
        ))
        .expect("parses");
        assert!(c.tls.is_none());
        assert_eq!(c.auth.as_ref().map(|a| a.user_count()), Some(2));
        assert_eq!(
            c.headers.get("x-frame-options").map(|v| v.as_bytes()),
            Some(&b"deny"[..])
        );
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(!format!("{c:?}").contains("$2y$"), "hash in Debug");
        assert!(parse_str("").expect("empty file").auth.is_none());
    }

    #[test]
    fn each_bad_key_is_named() {
        let cases: &[(&str, &str)] = &[
            (
                "bogus: 1\n",
                "web config /etc/dli/web.yml: bogus: unknown key",
            ),
            (
                "tls_server_config:\n  cert_fil: a\n",
                "tls_server_config.cert_fil: unknown key",
            ),
            (
                "http_server_config:\n  header: {}\n",
                "http_server_config.header: unknown key",
            ),
            (
                "http_server_config:\n  http2: maybe\n",
                "http_server_config.http2: expected true or false",
            ),
            (
                "http_server_config:\n  headers:\n    Server: x\n",
                "http_server_config.headers.Server: this header cannot be configured",
            ),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                "http_server_config.headers.X-Frame-Options: invalid value",
            ),
            (
                "basic_auth_users:\n  bob: plain\n",
                "basic_auth_users.bob: not a bcrypt hash",
            ),
            (
                "basic_auth_users: [a]\n",
                "basic_auth_users: expected a mapping",
            ),
            (
                "tls_server_config:\n  cert_file: /nonexistent/a.pem\n  key_file: k.pem\n",
                "tls_server_config.cert_file: cannot read /nonexistent/a.pem:",
            ),
            (
                "tls_server_config:\n  key_file: k.pem\n",
                "tls_server_config: missing one of cert or cert_file",
            ),
            (
                "tls_server_config:\n  cert: x\n  key: y\n  client_auth_type: Sometimes\n",
                "tls_server_config.client_auth_type: invalid value \"Sometimes\"",
            ),
            (
                "tls_server_config:\n  cert: x\n  key: y\n",
                "tls_server_config.cert: no CERTIFICATE block found",
            ),
            ("a: [\n", "invalid YAML"),
        ];
        for (text, want) in cases {
            let got = err_of(text);
            assert!(got.contains(want), "{text:?}: got {got:?}, want {want:?}");
        }
        let got = err_of(&format!("basic_auth_users:\n  bob: {}x\n", &HASH[..20]));
        assert!(!got.contains(&HASH[..20]), "hash leaked into {got}");
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let mut watched = Vec::new();
        let e = parse(
            Path::new("/etc/dli/web.yml"),
            "tls_server_config:\n  cert_file: tls/c.pem\n  key_file: tls/k.pem\n",
            &mut watched,
        )
        .expect_err("files do not exist");
        assert!(
            e.to_string().contains("cannot read /etc/dli/tls/c.pem"),
            "{e}"
        );
        assert_eq!(watched, vec![PathBuf::from("/etc/dli/tls/c.pem")]);
    }

    #[test]
    fn old_tls_versions_are_refused() {
        let cx = Cx {
            file: Path::new("w.yml"),
            dir: PathBuf::from("."),
        };
        let e = cx.versions("TLS10", "").expect_err("TLS10");
        assert!(
            e.to_string()
                .contains("tls_server_config.min_version: TLS10 is not supported"),
            "{e}"
        );
        assert!(cx.versions("TLS13", "TLS12").is_err());
        assert_eq!(cx.versions("TLS13", "").expect("13").len(), 1);
        assert_eq!(cx.versions("", "").expect("default").len(), 2);
    }
}
