//! The `reqwest::Client` of one project, shared by its DLI and IAM requests: TLS verification
//! (always on) with the built-in roots plus the project's `ca_file`, the proxy (`proxy_url`, else
//! the standard `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` environment), connect and request timeouts,
//! no redirects.
//!
//! It owns these transport settings and their errors. It must not offer any way to turn
//! certificate verification off, and must not put a proxy password into a message.

use std::time::Duration;

use super::client::{ClientBuildError, ClientOptions};
use crate::config::{Project, check_ca_file};

/// Longest a TCP + TLS connect may take, whatever `poll.request_timeout` is.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the HTTP client of `project`.
pub fn build(
    project: &Project,
    options: &ClientOptions,
) -> Result<reqwest::Client, ClientBuildError> {
    let project_id = project.project_id.clone();
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
    // `no_proxy()` must never be called here.
    builder.build().map_err(|e| ClientBuildError::Http {
        project_id,
        message: e.to_string(),
    })
}
