//! The configuration as written (serde model, with the defaults) and as validated ([`Settings`],
//! [`Project`], [`Credentials`]). Plain data: no I/O, no validation rules.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::secret::{Secret, SecretUrl};

/// Default of `poll.stale_after`.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(300);

/// Default of `auth.metadata_endpoint`: the link-local metadata service of ECS instances and CCE
/// nodes (docs/dli-api.md, "Metadata credentials").
pub const DEFAULT_METADATA_ENDPOINT: &str = "http://169.254.169.254";

/// The whole configuration file, as written (docs/architecture.md, "Configuration").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub web: WebConfig,
    #[serde(default)]
    pub poll: PollConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Default credentials for every project that does not carry its own `[projects.auth]`.
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub projects: Vec<ProjectConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    pub listen_address: String,
    pub telemetry_path: String,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen_address: "0.0.0.0:10049".into(),
            telemetry_path: "/metrics".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PollConfig {
    /// Time between the starts of two polls of one queue.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Bound on the whole walk of one queue; must be below `interval`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Bound on one HTTP request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// The `size` query parameter.
    pub page_size: u32,
    /// A walk needing more pages than this fails.
    pub max_pages: u32,
    /// HTTP requests in flight to DLI, all queues together.
    pub concurrency: u32,
    /// Retries per request for timeouts, connection errors, 5xx and 429.
    pub retries: u32,
    /// After this long without a successful poll a queue's job series are dropped.
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(45),
            request_timeout: Duration::from_secs(10),
            page_size: 100,
            max_pages: 2000,
            concurrency: 4,
            retries: 3,
            stale_after: DEFAULT_STALE_AFTER,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub owner_breakdown: bool,
    pub max_owners_per_queue: u32,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            owner_breakdown: true,
            max_owners_per_queue: 200,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    /// A stored AK/SK (optionally with a security token): SDK-HMAC-SHA256 signing.
    #[default]
    Aksk,
    /// An IAM password login; requests carry `X-Auth-Token`.
    Token,
    /// Temporary AK/SK of the ECS instance's or CCE node's agency, from the metadata service.
    Metadata,
    /// CCE workload identity: a projected service account token exchanged at IAM for temporary
    /// AK/SK.
    Oidc,
}

impl AuthKind {
    pub const ALL: [AuthKind; 4] = [
        AuthKind::Aksk,
        AuthKind::Token,
        AuthKind::Metadata,
        AuthKind::Oidc,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthKind::Aksk => "aksk",
            AuthKind::Token => "token",
            AuthKind::Metadata => "metadata",
            AuthKind::Oidc => "oidc",
        }
    }
}

/// `[auth]` or `[projects.auth]`, as written. Secrets stay wrapped in [`Secret`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub kind: AuthKind,
    pub access_key: Option<Secret>,
    pub access_key_file: Option<PathBuf>,
    pub secret_key: Option<Secret>,
    pub secret_key_file: Option<PathBuf>,
    pub security_token: Option<Secret>,
    pub security_token_file: Option<PathBuf>,
    pub iam_endpoint: Option<String>,
    pub domain_name: Option<String>,
    pub user_name: Option<String>,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    /// `kind = "metadata"`: base URL of the metadata service.
    pub metadata_endpoint: Option<String>,
    /// `kind = "oidc"`: the IAM identity provider the id token is exchanged with.
    pub idp_id: Option<String>,
    /// `kind = "oidc"`: the file holding the id token (a projected service account token),
    /// re-read at each exchange.
    pub id_token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    pub project_id: String,
    #[serde(default)]
    pub region: Option<String>,
    /// DLI endpoint; derived from the region when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    pub queues: Vec<String>,
    /// Replaces `[auth]` whole for this project (tables are not merged).
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Extra PEM CA bundle trusted for this project's DLI and IAM endpoints.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// HTTP(S) proxy for this project's DLI and IAM requests; when absent the standard
    /// `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` variables apply. A `Secret` because it may carry
    /// `user:password@`.
    #[serde(default)]
    pub proxy_url: Option<Secret>,
}

/// Credentials ready to use, secrets resolved from config, files or environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    AkSk {
        access_key: Secret,
        secret_key: Secret,
        security_token: Option<Secret>,
    },
    Token {
        iam_endpoint: String,
        domain_name: String,
        user_name: String,
        password: Secret,
    },
    /// Temporary keys from the metadata service at `endpoint` (no secret in the config).
    Metadata { endpoint: String },
    /// Temporary keys from IAM in exchange for the id token in `id_token_file` (no secret in the
    /// config: the file is read at each exchange, never kept).
    Oidc {
        iam_endpoint: String,
        idp_id: String,
        id_token_file: PathBuf,
    },
}

impl Credentials {
    pub fn kind(&self) -> AuthKind {
        match self {
            Credentials::AkSk { .. } => AuthKind::Aksk,
            Credentials::Token { .. } => AuthKind::Token,
            Credentials::Metadata { .. } => AuthKind::Metadata,
            Credentials::Oidc { .. } => AuthKind::Oidc,
        }
    }
}

/// One validated project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub project_id: String,
    pub region: Option<String>,
    /// Base URL without a trailing slash, e.g. `https://dli.cn-north-4.myhuaweicloud.com`.
    pub endpoint: String,
    pub queues: Vec<String>,
    pub credentials: Credentials,
    /// Extra PEM CA bundle (checked to hold at least one certificate), trusted in addition to
    /// the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// Explicit proxy; `None` leaves the `HTTPS_PROXY`/`NO_PROXY` environment in charge.
    pub proxy: Option<SecretUrl>,
}

/// The validated configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub web: WebConfig,
    pub poll: PollConfig,
    pub metrics: MetricsConfig,
    pub projects: Vec<Project>,
    /// Where it was loaded from, for messages and reloads.
    pub source: Option<PathBuf>,
}

impl Settings {
    /// Every configured project x queue pair, in the order of the file: the one expansion of
    /// `[[projects]]` into what is polled.
    pub fn queue_pairs(&self) -> impl Iterator<Item = (&Project, &str)> {
        self.projects
            .iter()
            .flat_map(|p| p.queues.iter().map(move |q| (p, q.as_str())))
    }
}
