//! Configuration: the serde model (`model`), loading the file with `DLI_EXPORTER__*`
//! environment overrides (`load`), secret resolution (`secrets`) and validation (`validate`)
//! into ready-to-use [`Settings`]. The keys are described in docs/architecture.md
//! ("Configuration") and config.example.toml.
//!
//! It owns every rule about what a valid configuration is and names the offending key in each
//! error. It must not log or print secret values, does no network I/O, and imports nothing of
//! the rest of the exporter.

#[cfg(test)]
mod auth_tests;
mod endpoints;
#[cfg(test)]
mod job_names_tests;
mod load;
mod model;
#[cfg(test)]
mod poll_mode_tests;
#[cfg(test)]
mod secret_tests;
mod secrets;
#[cfg(test)]
mod tests;
mod validate;
mod yaml_position;

use std::collections::HashMap;
use std::path::PathBuf;

pub use endpoints::{dli_endpoint_for, iam_endpoint_for, is_valid_project_id};
pub use load::{load, load_toml_str};
pub use model::*;
pub use validate::{
    LISTEN_ADDRESS_RULE, MAX_FULL_WALK_INTERVAL, MAX_POLL_INTERVAL, MAX_STALE_AFTER,
    TELEMETRY_PATH_RULE, check_ca_file, is_valid_telemetry_path, normalize_listen_address,
    project_id_problems, validate,
};

/// Environment variables are read through this map so tests never touch the process environment.
pub type Env = HashMap<String, String>;

/// Prefix of environment overrides: `DLI_EXPORTER__POLL__INTERVAL=30s`.
pub const ENV_PREFIX: &str = "DLI_EXPORTER";
/// Separator between the prefix and the keys, and between nested keys.
pub const ENV_SEPARATOR: &str = "__";

/// A configuration error. Every variant names the file, key or variable that caused it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: unsupported extension (use .toml, .yaml or .yml)")]
    Format { path: PathBuf },
    #[error("invalid configuration{}:\n{}", .path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default(), .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: Option<PathBuf>,
        problems: Vec<Problem>,
    },
}

/// One validation failure: the key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl ConfigError {
    /// The keys named by a validation error (empty for read and parse errors).
    pub fn keys(&self) -> Vec<&str> {
        match self {
            ConfigError::Invalid { problems, .. } => {
                problems.iter().map(|p| p.key.as_str()).collect()
            }
            _ => Vec::new(),
        }
    }
}

/// A human summary of validated settings for `--check-config`; it never prints a secret.
pub fn summary(settings: &Settings) -> String {
    let mut out = String::new();
    if let Some(p) = &settings.source {
        out.push_str(&format!("config file: {}\n", p.display()));
    }
    out.push_str(&format!(
        "listen_address: {}\ntelemetry_path: {}\npoll: interval {} timeout {} request_timeout {} page_size {} concurrency {}\n",
        settings.web.listen_address,
        settings.web.telemetry_path,
        humantime::format_duration(settings.poll.interval),
        humantime::format_duration(settings.poll.timeout),
        humantime::format_duration(settings.poll.request_timeout),
        settings.poll.page_size,
        settings.poll.concurrency,
    ));
    let d = &settings.discovery;
    out.push_str(&format!(
        "discovery: queue list every {}, queue_types {}\n",
        humantime::format_duration(d.interval),
        d.queue_types.join(", ")
    ));
    for p in &settings.projects {
        let id = if p.has_project_id() {
            p.project_id.clone()
        } else {
            // --check-config does not contact IAM: the lookup happens at start and on reload.
            format!(
                "(project_id resolved at start from region {} via {}/v3/projects?name={})",
                p.region.as_deref().unwrap_or("-"),
                p.iam_endpoint.as_deref().unwrap_or("-"),
                p.region.as_deref().unwrap_or("-"),
            )
        };
        let listed = if p.queues.is_empty() {
            "none".to_string()
        } else {
            p.queues.join(", ")
        };
        out.push_str(&format!(
            "project {id} (region {}) endpoint {} auth {}: queues {listed}\n",
            p.region.as_deref().unwrap_or("-"),
            p.endpoint,
            p.credentials.kind().as_str(),
        ));
        match &p.discover {
            Some(filter) => {
                let list = |ps: &[QueuePattern]| {
                    ps.iter()
                        .map(|p| format!("{:?}", p.as_str()))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let mut rule = format!(
                    "  discovered: the queues the queue list shows with queue_type {}",
                    d.queue_types.join(" or ")
                );
                if !filter.include.is_empty() {
                    rule.push_str(&format!(", matching {}", list(&filter.include)));
                }
                if !filter.exclude.is_empty() {
                    rule.push_str(&format!(", not matching {}", list(&filter.exclude)));
                }
                out.push_str(&rule);
                out.push_str(" (found at start, then every discovery.interval)\n");
            }
            None => out.push_str("  discovered: none (only the listed queues)\n"),
        }
        match &p.credentials {
            Credentials::Metadata { endpoint } => {
                out.push_str(&format!("  temporary keys from the metadata service {endpoint}\n"));
            }
            Credentials::Oidc {
                iam_endpoint,
                idp_id,
                id_token_file,
            } => out.push_str(&format!(
                "  temporary keys from {iam_endpoint} for the id token in {} (identity provider {idp_id})\n",
                id_token_file.display()
            )),
            Credentials::AkSk { .. } | Credentials::Token { .. } => {}
        }
        if let Some(ca) = &p.ca_file {
            out.push_str(&format!("  ca_file {}\n", ca.display()));
        }
        match &p.proxy {
            Some(proxy) => out.push_str(&format!("  proxy {proxy}\n")),
            None => out.push_str("  proxy from HTTPS_PROXY/NO_PROXY environment, if set\n"),
        }
    }
    out.push_str("configuration OK\n");
    out
}
