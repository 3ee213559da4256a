//! The web configuration file (`--web.config.file`), in the format of the Prometheus
//! exporter-toolkit, so a `web-config.yml` written for node_exporter works unchanged:
//! `tls_server_config`, `http_server_config`, `basic_auth_users` and `rate_limit`. What still
//! differs from the toolkit is listed in SECURITY.md ("Differences from exporter-toolkit").
//!
//! It owns the settings in force ([`ActiveWebConfig`]) and their errors. Reading the YAML as the
//! toolkit's Go YAML library does is `yaml` and `golang`, walking the keys is `parse`, the TLS
//! section is `tls` (with Go's cipher and curve names in `crypto` and the client certificate
//! checks in `client_cert`), re-reading everything when a file changes is `watch`. It must not
//! serve HTTP (that is `web::server`) and must never log a password hash or a private key.

mod client_cert;
mod crypto;
mod golang;
mod parse;
mod tls;
mod watch;
mod yaml;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::HeaderMap;
use tokio_rustls::TlsAcceptor;

use super::basic_auth::BasicAuth;
use super::rate_limit::RateLimiter;

pub use parse::{load, parse};
pub use watch::WebConfigWatcher;

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
            // `RequireClientCert` is the toolkit's old name, still accepted there.
            "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
            _ => return None,
        })
    }

    pub(super) fn verifies(self) -> bool {
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
    /// HTTP/2 offered by ALPN (`http_server_config.http2`, TLS only).
    pub http2: bool,
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
            .field("http2", &self.http2)
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
            http2: false,
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
            match (&self.tls, self.http2) {
                (None, _) => "off",
                (Some(_), true) => "on (HTTP/2 and HTTP/1.1)",
                (Some(_), false) => "on (HTTP/1.1)",
            },
            self.client_auth,
            self.auth.as_ref().map_or(0, |a| a.user_count()),
            self.headers.len(),
            self.rate_limit
                .as_ref()
                .map_or_else(|| "off".to_string(), |r| r.describe())
        )
    }
}
