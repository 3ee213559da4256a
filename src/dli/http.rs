//! The `reqwest::Client` of one project, shared by its DLI and IAM requests: TLS verification
//! (always on) with the built-in roots plus the project's `ca_file`, the proxy (`proxy_url`, else
//! the standard `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` environment), connect and request timeouts,
//! no redirects.
//!
//! It owns these transport settings ([`ClientOptions`]) and the errors of building a client
//! ([`ClientBuildError`]). It must not offer any way to turn
//! certificate verification off, and must not put a proxy password into a message.

use std::time::Duration;

use super::throttle::ThrottlePolicy;
use super::transport::DEFAULT_MAX_BODY_BYTES;
use crate::config::{PollConfig, Project, check_ca_file};

/// Transport settings shared by every project's client.
#[derive(Clone)]
pub struct ClientOptions {
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    pub user_agent: String,
    /// Hold-off after repeated 429 / APIGW.0308 answers, per endpoint.
    pub throttle: ThrottlePolicy,
}

impl ClientOptions {
    pub fn new(request_timeout: Duration) -> Self {
        ClientOptions {
            request_timeout,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            user_agent: crate::version::USER_AGENT.to_string(),
            throttle: ThrottlePolicy::default(),
        }
    }

    /// The options a poller uses: `poll.request_timeout`, and a hold-off that honours
    /// `Retry-After` up to `poll.timeout` and never outlasts `poll.interval`.
    pub fn for_poll(poll: &PollConfig) -> Self {
        let mut options = Self::new(poll.request_timeout);
        options.throttle = options.throttle.bounded_by(poll.timeout, poll.interval);
        options
    }
}

/// Errors building a client: they name the project and the file or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error("project {project}: the project id has not been looked up from the region yet")]
    NoProjectId { project: String },
    #[error("project {project_id}: ca_file {path}: {message}")]
    CaFile {
        project_id: String,
        path: std::path::PathBuf,
        message: String,
    },
    /// `proxy` is shown with any `user:password@` redacted.
    #[error("project {project_id}: proxy_url {proxy} is not usable")]
    Proxy { project_id: String, proxy: String },
    #[error("project {project_id}: endpoint {endpoint:?} is not a usable URL")]
    Endpoint {
        project_id: String,
        endpoint: String,
    },
    #[error("project {project_id}: cannot build the HTTP client: {message}")]
    Http { project_id: String, message: String },
}

/// The HTTP client of a metadata service: link-local, so never through a proxy (whatever the
/// environment says); connect and read bounded by `timeout` each (docs/dli-api.md, "Metadata
/// credentials"); no redirects.
pub fn build_metadata(
    project_id: &str,
    options: &ClientOptions,
    timeout: Duration,
) -> Result<reqwest::Client, ClientBuildError> {
    reqwest::Client::builder()
        .user_agent(options.user_agent.clone())
        .connect_timeout(timeout)
        .read_timeout(timeout)
        .timeout(timeout.saturating_mul(2))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| ClientBuildError::Http {
            project_id: project_id.to_string(),
            message: e.to_string(),
        })
}

/// Longest a TCP + TLS connect may take, whatever `poll.request_timeout` is.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the HTTP client of `project`.
pub fn build(
    project: &Project,
    options: &ClientOptions,
) -> Result<reqwest::Client, ClientBuildError> {
    let project_id = project.display_id();
    let mut builder = reqwest::Client::builder()
        .user_agent(options.user_agent.clone())
        .connect_timeout(options.request_timeout.min(MAX_CONNECT_TIMEOUT))
        .timeout(options.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(50));
    if let Some(path) = &project.ca_file {
        let certs = check_ca_file(path).map_err(|message| ClientBuildError::CaFile {
            project_id: project_id.clone(),
            path: path.clone(),
            message,
        })?;
        builder = builder.tls_certs_merge(certs);
    }
    if let Some(proxy) = &project.proxy {
        // An explicit proxy replaces the environment's (reqwest then ignores HTTPS_PROXY).
        let p = reqwest::Proxy::all(proxy.expose()).map_err(|_| ClientBuildError::Proxy {
            project_id: project_id.clone(),
            proxy: proxy.redacted().to_string(),
        })?;
        builder = builder.proxy(p);
    }
    // Without `proxy_url`, reqwest reads HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY itself;
    // `no_proxy()` must never be called here (only for the metadata service, above).
    builder.build().map_err(|e| ClientBuildError::Http {
        project_id,
        message: e.to_string(),
    })
}
