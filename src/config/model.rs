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

/// Default of `discovery.interval`.
pub const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(600);

/// Shortest `discovery.interval` the file may set: the queue list is one request per project,
/// but nothing about queues changes fast enough to justify asking more often.
pub const MIN_DISCOVERY_INTERVAL: Duration = Duration::from_secs(1);

/// The `queues` entry that asks for discovery (docs/architecture.md, "Queue discovery").
pub const DISCOVER_ALL: &str = "*";

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
    #[serde(default)]
    pub discovery: DiscoveryConfig,
    /// Default credentials for every project that does not carry its own `[projects.auth]`.
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub projects: Vec<ProjectConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
    /// Full walks every time, incremental polls, or incremental where the server allows it
    /// (docs/architecture.md, "Incremental polls").
    pub mode: PollMode,
    /// Time between two full walks of a queue polled incrementally.
    #[serde(with = "humantime_serde")]
    pub full_walk_interval: Duration,
}

/// `poll.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PollMode {
    /// Every poll walks every page.
    Full,
    /// Polls fetch only what can have changed; a poll that finds the server not honouring
    /// `order`, `state` or `job-id` fails as inconsistent and the next one walks fully.
    Incremental,
    /// Incremental where the last full walk saw the server honour `order`, `state` and `job-id`.
    #[default]
    Auto,
}

impl PollMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PollMode::Full => "full",
            PollMode::Incremental => "incremental",
            PollMode::Auto => "auto",
        }
    }
}

/// Default of `poll.full_walk_interval`.
pub const DEFAULT_FULL_WALK_INTERVAL: Duration = Duration::from_secs(15 * 60);

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
            mode: PollMode::Auto,
            full_walk_interval: DEFAULT_FULL_WALK_INTERVAL,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub owner_breakdown: bool,
    pub max_owners_per_queue: u32,
    /// Regexes (matching the whole name) selecting the job names that get `dli_batch_job_last_*`
    /// series; empty turns them off (docs/architecture.md, "Job names").
    pub job_names: Vec<String>,
    /// Selected names kept per queue, those whose newest run is newest first.
    pub max_job_names_per_queue: u32,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            owner_breakdown: true,
            max_owners_per_queue: 200,
            job_names: Vec::new(),
            max_job_names_per_queue: DEFAULT_MAX_JOB_NAMES_PER_QUEUE,
        }
    }
}

/// Default of `metrics.max_job_names_per_queue`.
pub const DEFAULT_MAX_JOB_NAMES_PER_QUEUE: u32 = 100;

/// Largest `metrics.max_job_names_per_queue`: each kept name is up to nine series per queue.
pub const MAX_JOB_NAMES_PER_QUEUE: u32 = 10_000;

impl MetricsConfig {
    /// The job name selection, `None` when `job_names` is empty (the feature is off). Patterns
    /// that do not compile are left out: validation has already refused them.
    pub fn job_name_filter(&self) -> Option<JobNameFilter> {
        JobNameFilter::new(&self.job_names, self.max_job_names_per_queue)
            .ok()
            .flatten()
    }
}

/// `metrics.job_names` and `metrics.max_job_names_per_queue`, compiled: what the aggregation of
/// a walk needs to select job names.
#[derive(Debug, Clone)]
pub struct JobNameFilter {
    /// The patterns as written, for equality and messages.
    sources: Vec<String>,
    /// One regex matching a name that any pattern matches whole.
    any: regex::Regex,
    /// Names kept per queue (at least 1).
    pub max_per_queue: usize,
}

impl JobNameFilter {
    /// The filter, `None` when `sources` is empty; the error is the index of the first pattern
    /// that does not compile and the regex crate's explanation.
    pub fn new(sources: &[String], max_per_queue: u32) -> Result<Option<Self>, (usize, String)> {
        if sources.is_empty() {
            return Ok(None);
        }
        let mut alternatives = Vec::with_capacity(sources.len());
        for (i, source) in sources.iter().enumerate() {
            // Each on its own first, so an error names the pattern that caused it.
            QueuePattern::new(source).map_err(|why| (i, why))?;
            alternatives.push(format!("(?:{source})"));
        }
        let any = regex::RegexBuilder::new(&format!("^(?:{})$", alternatives.join("|")))
            .size_limit(1 << 22)
            .build()
            .map_err(|e| (0, e.to_string()))?;
        Ok(Some(JobNameFilter {
            sources: sources.to_vec(),
            any,
            max_per_queue: (max_per_queue as usize).max(1),
        }))
    }

    /// True when one of the patterns matches the whole of `name`.
    pub fn matches(&self, name: &str) -> bool {
        self.any.is_match(name)
    }

    /// The patterns as written in the configuration.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }
}

impl PartialEq for JobNameFilter {
    fn eq(&self, other: &Self) -> bool {
        self.sources == other.sources && self.max_per_queue == other.max_per_queue
    }
}

impl Eq for JobNameFilter {}

/// `[discovery]`: how the queues of `queues = ["*"]` projects are found, and how often the queue
/// list (also the source of the `dli_queue_*` metrics) is fetched.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// Time between two fetches of a project's queue list.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// `queue_type`s kept by discovery; the default keeps the types that run Spark batch jobs.
    pub queue_types: Vec<String>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            interval: DEFAULT_DISCOVERY_INTERVAL,
            queue_types: vec!["general".into(), "all".into()],
        }
    }
}

impl DiscoveryConfig {
    /// True when discovery keeps queues of this `queue_type` (compared without regard to case).
    pub fn keeps_type(&self, queue_type: &str) -> bool {
        self.queue_types
            .iter()
            .any(|t| t.eq_ignore_ascii_case(queue_type))
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
    /// Resolved from `region` through IAM when absent.
    #[serde(default)]
    pub project_id: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// DLI endpoint; derived from the region when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Queue names; `"*"` (or no `queues` key) discovers the project's queues.
    #[serde(default)]
    pub queues: Option<Vec<String>>,
    /// Regexes (matching the whole name) a discovered queue must match one of; empty keeps all.
    #[serde(default)]
    pub include_queues: Vec<String>,
    /// Regexes (matching the whole name) that drop a discovered queue.
    #[serde(default)]
    pub exclude_queues: Vec<String>,
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

/// A regex that must match a whole name (a queue's, or a job's for `metrics.job_names`), as
/// Prometheus relabel regexes do: the text as written, compiled as `^(?:text)$`.
#[derive(Debug, Clone)]
pub struct QueuePattern {
    source: String,
    regex: regex::Regex,
}

impl QueuePattern {
    /// Compiles `source` anchored at both ends; the error is the regex crate's explanation.
    pub fn new(source: &str) -> Result<Self, String> {
        let regex = regex::RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(1 << 20)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(QueuePattern {
            source: source.to_string(),
            regex,
        })
    }

    /// The regex as written in the configuration.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn matches(&self, name: &str) -> bool {
        self.regex.is_match(name)
    }
}

impl PartialEq for QueuePattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for QueuePattern {}

/// The name filters of a project that discovers its queues (`queues = ["*"]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueFilter {
    /// A discovered queue is kept only if it matches one of these (all are kept when empty).
    pub include: Vec<QueuePattern>,
    /// A discovered queue matching one of these is dropped.
    pub exclude: Vec<QueuePattern>,
}

impl QueueFilter {
    /// True when the name filters keep a discovered queue of this name.
    pub fn keeps(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| p.matches(name)))
            && !self.exclude.iter().any(|p| p.matches(name))
    }
}

/// One validated project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// The project id; empty until resolved when `project_id_from_region` is set.
    pub project_id: String,
    /// `project_id` was omitted: it is looked up from `region` through IAM at start and on reload
    /// (docs/architecture.md, "Project id from the region").
    pub project_id_from_region: bool,
    pub region: Option<String>,
    /// Base URL without a trailing slash, e.g. `https://dli.cn-north-4.myhuaweicloud.com`.
    pub endpoint: String,
    /// IAM base URL (from the auth table, else derived from the region): token logins and the
    /// project id lookup. `None` when neither is set (then neither is possible).
    pub iam_endpoint: Option<String>,
    /// Queues listed by name: always polled, whatever the queue list says.
    pub queues: Vec<String>,
    /// `Some` when the project discovers its queues (`"*"` in `queues`, or no `queues` key).
    pub discover: Option<QueueFilter>,
    pub credentials: Credentials,
    /// Extra PEM CA bundle (checked to hold at least one certificate), trusted in addition to
    /// the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// Explicit proxy; `None` leaves the `HTTPS_PROXY`/`NO_PROXY` environment in charge.
    pub proxy: Option<SecretUrl>,
}

impl Project {
    /// The project id, or how it will be found, for messages.
    pub fn display_id(&self) -> String {
        if self.project_id.is_empty() && self.project_id_from_region {
            format!(
                "(project of region {})",
                self.region.as_deref().unwrap_or("-")
            )
        } else {
            self.project_id.clone()
        }
    }

    /// True once the project id is known (given, or looked up).
    pub fn has_project_id(&self) -> bool {
        !self.project_id.is_empty()
    }
}

/// The validated configuration the daemon runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub web: WebConfig,
    pub poll: PollConfig,
    pub metrics: MetricsConfig,
    pub discovery: DiscoveryConfig,
    pub projects: Vec<Project>,
    /// Where it was loaded from, for messages and reloads.
    pub source: Option<PathBuf>,
}

impl Settings {
    /// Every project x queue pair listed by name, in the order of the file (discovered queues
    /// come on top of these at run time).
    pub fn queue_pairs(&self) -> impl Iterator<Item = (&Project, &str)> {
        self.projects
            .iter()
            .flat_map(|p| p.queues.iter().map(move |q| (p, q.as_str())))
    }
}
