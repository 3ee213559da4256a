//! Configuration: the serde model of design.md §4, loading (file + `DLI_EXPORTER__*` environment),
//! secret resolution and validation into ready-to-use [`Settings`].
//!
//! It owns every rule about what a valid configuration is and names the offending key in each
//! error. It must not log or print secret values, and it does no network I/O.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::secret::{Secret, SecretUrl};

mod yaml_position;

/// Environment variables are read through this map so tests never touch the process environment.
pub type Env = HashMap<String, String>;

/// Prefix of environment overrides: `DLI_EXPORTER__POLL__INTERVAL=30s`.
pub const ENV_PREFIX: &str = "DLI_EXPORTER";
/// Separator between the prefix and the keys, and between nested keys.
pub const ENV_SEPARATOR: &str = "__";

/// The whole configuration file, as written (design.md §4).
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
            stale_after: Duration::from_secs(300),
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
    #[default]
    Aksk,
    Token,
}

impl AuthKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthKind::Aksk => "aksk",
            AuthKind::Token => "token",
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
}

impl Credentials {
    pub fn kind(&self) -> AuthKind {
        match self {
            Credentials::AkSk { .. } => AuthKind::Aksk,
            Credentials::Token { .. } => AuthKind::Token,
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

#[derive(Clone, Copy)]
enum Format {
    Toml,
    Yaml,
}

fn format_of(path: &Path) -> Result<Format, ConfigError> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("toml") => Ok(Format::Toml),
        Some("yaml") | Some("yml") => Ok(Format::Yaml),
        _ => Err(ConfigError::Format {
            path: path.to_path_buf(),
        }),
    }
}

/// Loads a config file with environment overrides, resolves secrets and validates.
pub fn load(path: &Path, env: &Env) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let settings = load_str(&text, format_of(path)?, env, Some(path))?;
    Ok(settings)
}

/// Loads configuration text (TOML) with environment overrides; used by tests and `--demo`.
pub fn load_toml_str(text: &str, env: &Env) -> Result<Settings, ConfigError> {
    load_str(text, Format::Toml, env, None)
}

/// `line L, column C (key K)` for the unknown key a `config` crate error names, when it stands in
/// the YAML `text` (the same shape as the TOML errors).
fn yaml_unknown_key_position(text: &str, message: &str) -> Option<String> {
    let between = |start: &str| -> Option<&str> {
        let from = message.find(start)? + start.len();
        let len = message[from..].find('`')?;
        Some(&message[from..from + len])
    };
    let field = between("unknown field `")?;
    let parent = between(" for key `").unwrap_or("");
    let (line, column) = yaml_position::key_position(text, parent, field)?;
    let key = if parent.is_empty() {
        field.to_string()
    } else {
        format!("{parent}.{field}")
    };
    Some(format!("line {line}, column {column} (key {key})"))
}

fn load_str(
    text: &str,
    format: Format,
    env: &Env,
    path: Option<&Path>,
) -> Result<Settings, ConfigError> {
    let shown_path = path
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("<inline>"));
    let parse_err = |message: String| ConfigError::Parse {
        path: shown_path.clone(),
        message,
    };
    // A strict parse of the file alone first: for TOML its errors carry line and column, so an
    // unknown or mistyped key is reported where it stands in the file.
    if let Format::Toml = format {
        toml::from_str::<Config>(text).map_err(|e| parse_err(toml_error(text, &e)))?;
    }
    let file_format = match format {
        Format::Toml => config::FileFormat::Toml,
        Format::Yaml => config::FileFormat::Yaml,
    };
    let overrides: HashMap<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}{ENV_SEPARATOR}")))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let built = config::Config::builder()
        .add_source(config::File::from_str(text, file_format))
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator(ENV_SEPARATOR)
                .separator(ENV_SEPARATOR)
                .try_parsing(true)
                .source(Some(overrides)),
        )
        .build()
        .map_err(|e| parse_err(e.to_string()))?;
    let config: Config = built.try_deserialize().map_err(|e| {
        let message = e.to_string();
        // YAML errors come without a position: find an unknown key in the text ourselves. One
        // that is not in the file came from an environment override.
        let position = match format {
            Format::Yaml => yaml_unknown_key_position(text, &message),
            Format::Toml => None,
        };
        match position {
            Some(at) => parse_err(format!("{at}: {message}")),
            None => parse_err(format!(
                "{message} (file or {ENV_PREFIX}{ENV_SEPARATOR}* environment override)"
            )),
        }
    })?;
    validate(config, env, path)
}

/// A TOML error as `line L, column C (key K): message`. Unlike the error's own `Display` it never
/// quotes the offending line, which may hold a secret (`secret_kye = "..."`): only the key part of
/// it is shown.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    let Some(span) = e.span() else {
        return message.to_string();
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    match key {
        Some(k) => format!("line {line_no}, column {column} (key {k}): {message}"),
        None => format!("line {line_no}, column {column}: {message}"),
    }
}

/// Checks every rule and resolves secrets; collects all problems instead of stopping at the first.
pub fn validate(config: Config, env: &Env, path: Option<&Path>) -> Result<Settings, ConfigError> {
    let mut problems = Vec::new();
    let mut problem = |key: &str, message: String| {
        problems.push(Problem {
            key: key.to_string(),
            message,
        })
    };

    validate_listen_address(&config.web.listen_address, &mut problem);
    let tp = &config.web.telemetry_path;
    if !tp.starts_with('/') || tp.len() < 2 || tp.starts_with("/-/") || tp.contains(['?', '#', ' '])
    {
        problem(
            "web.telemetry_path",
            format!(
                "{tp:?} must be a path such as \"/metrics\" (starting with '/', not '/' itself nor under '/-/')"
            ),
        );
    }

    let p = &config.poll;
    for (key, value) in [
        ("poll.interval", p.interval),
        ("poll.timeout", p.timeout),
        ("poll.request_timeout", p.request_timeout),
        ("poll.stale_after", p.stale_after),
    ] {
        if value.is_zero() {
            problem(key, "must be greater than 0".into());
        }
    }
    if p.timeout >= p.interval {
        problem(
            "poll.timeout",
            format!(
                "{} must be less than poll.interval ({}) so that walks never overlap",
                humantime::format_duration(p.timeout),
                humantime::format_duration(p.interval)
            ),
        );
    }
    if p.request_timeout > p.timeout {
        problem(
            "poll.request_timeout",
            format!(
                "{} must not exceed poll.timeout ({})",
                humantime::format_duration(p.request_timeout),
                humantime::format_duration(p.timeout)
            ),
        );
    }
    if p.page_size == 0 {
        problem("poll.page_size", "must be at least 1".into());
    }
    if p.max_pages == 0 {
        problem("poll.max_pages", "must be at least 1".into());
    }
    if p.concurrency == 0 {
        problem("poll.concurrency", "must be at least 1".into());
    }

    if config.projects.is_empty() {
        problem(
            "projects",
            "at least one [[projects]] entry with a project_id and queues is required".into(),
        );
    }

    let mut seen: HashSet<(String, String)> = HashSet::new();
    let mut projects = Vec::with_capacity(config.projects.len());
    for (i, pc) in config.projects.iter().enumerate() {
        let key = |field: &str| format!("projects[{i}].{field}");
        let mut ok = true;
        if !is_valid_project_id(&pc.project_id) {
            problem(
                &key("project_id"),
                format!(
                    "{:?} must be 1 to 64 ASCII letters and digits (usually 32 lowercase hex)",
                    pc.project_id
                ),
            );
            ok = false;
        }
        if let Some(region) = &pc.region
            && !is_valid_region(region)
        {
            problem(
                &key("region"),
                format!(
                    "{region:?} must be a region id such as \"cn-north-4\" (lowercase letters, digits, '-')"
                ),
            );
            ok = false;
        }
        let endpoint = match (&pc.endpoint, &pc.region) {
            (Some(e), _) => match normalize_endpoint(e) {
                Ok(e) => Some(e),
                Err(why) => {
                    problem(&key("endpoint"), format!("{e:?} {why}"));
                    None
                }
            },
            (None, Some(region)) if is_valid_region(region) => Some(dli_endpoint_for(region)),
            (None, Some(_)) => None,
            (None, None) => {
                problem(
                    &key("region"),
                    "required when projects[].endpoint is not set".into(),
                );
                None
            }
        };
        if pc.queues.is_empty() {
            problem(&key("queues"), "must list at least one queue".into());
            ok = false;
        }
        for (j, q) in pc.queues.iter().enumerate() {
            if q.trim().is_empty() {
                problem(
                    &format!("projects[{i}].queues[{j}]"),
                    "queue name must not be empty".into(),
                );
                ok = false;
            } else if !seen.insert((pc.project_id.clone(), q.clone())) {
                problem(
                    &format!("projects[{i}].queues[{j}]"),
                    format!(
                        "duplicate queue {q:?} for project {}: each project x queue pair may appear once",
                        pc.project_id
                    ),
                );
                ok = false;
            }
        }
        let (auth, auth_key) = match &pc.auth {
            Some(a) => (a, key("auth")),
            None => (&config.auth, "auth".to_string()),
        };
        let credentials =
            resolve_credentials(auth, &auth_key, pc.region.as_deref(), env, &mut problem);
        if let Some(ca) = &pc.ca_file
            && let Err(why) = check_ca_file(ca)
        {
            problem(&key("ca_file"), format!("{}: {why}", ca.display()));
            ok = false;
        }
        let proxy = match pc
            .proxy_url
            .as_ref()
            .map(|u| SecretUrl::parse_proxy(u.expose()))
        {
            None => None,
            Some(Ok(u)) => Some(u),
            Some(Err(why)) => {
                // The value itself is not repeated: it may carry a password.
                problem(&key("proxy_url"), why.to_string());
                ok = false;
                None
            }
        };
        if let (true, Some(endpoint), Some(credentials)) = (ok, endpoint, credentials) {
            projects.push(Project {
                project_id: pc.project_id.clone(),
                region: pc.region.clone(),
                endpoint,
                queues: pc.queues.clone(),
                credentials,
                ca_file: pc.ca_file.clone(),
                proxy,
            });
        }
    }

    if !problems.is_empty() {
        return Err(ConfigError::Invalid {
            path: path.map(Path::to_path_buf),
            problems,
        });
    }
    let mut web = config.web;
    if let Some(rest) = web.listen_address.strip_prefix(':') {
        // ":10049" means every interface, as with other exporters.
        web.listen_address = format!("0.0.0.0:{rest}");
    }
    Ok(Settings {
        web,
        poll: config.poll,
        metrics: config.metrics,
        projects,
        source: path.map(Path::to_path_buf),
    })
}

fn validate_listen_address(addr: &str, problem: &mut impl FnMut(&str, String)) {
    let ok = match addr.rsplit_once(':') {
        Some((host, port)) => {
            port.parse::<u16>().is_ok()
                && !host.contains(char::is_whitespace)
                && (!host.contains(':') || (host.starts_with('[') && host.ends_with(']')))
        }
        None => false,
    };
    if !ok {
        problem(
            "web.listen_address",
            format!("{addr:?} must be HOST:PORT, [IPv6]:PORT or :PORT (e.g. \":10049\")"),
        );
    }
}

/// Reads a CA bundle and checks that it holds at least one PEM certificate.
pub fn check_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
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
    for p in &settings.projects {
        out.push_str(&format!(
            "project {} (region {}) endpoint {} auth {}: queues {}\n",
            p.project_id,
            p.region.as_deref().unwrap_or("-"),
            p.endpoint,
            p.credentials.kind().as_str(),
            p.queues.join(", ")
        ));
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

/// Project ids: 1 to 64 ASCII letters and digits (dli-api.md §1).
pub fn is_valid_project_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn is_valid_region(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 64
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The DLI endpoint of a region (dli-api.md §1: `eu-west-101` is the one `.eu` exception).
pub fn dli_endpoint_for(region: &str) -> String {
    format!("https://dli.{region}.{}", domain_for(region))
}

/// The default IAM endpoint of a region.
pub fn iam_endpoint_for(region: &str) -> String {
    format!("https://iam.{region}.{}", domain_for(region))
}

fn domain_for(region: &str) -> &'static str {
    if region == "eu-west-101" {
        "myhuaweicloud.eu"
    } else {
        "myhuaweicloud.com"
    }
}

/// Accepts `http(s)://host[:port]` with an optional trailing `/`; returns it without the slash.
fn normalize_endpoint(raw: &str) -> Result<String, &'static str> {
    let url = reqwest::Url::parse(raw)
        .map_err(|_| "is not a URL such as \"https://dli.cn-north-4.myhuaweicloud.com\"")?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err("must use https:// (or http:// for simulators and local proxies)");
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment");
    }
    if url.path() != "/" && !url.path().is_empty() {
        return Err("must not have a path (the API path is added by the client)");
    }
    Ok(raw.trim_end_matches('/').to_string())
}

/// Picks a secret from the config value, the `*_file` path, or an environment variable, in that
/// order; both a value and a file is an error, since it is unclear which one is meant.
fn resolve_secret(
    value: &Option<Secret>,
    file: &Option<PathBuf>,
    env_var: &str,
    key: &str,
    env: &Env,
    problem: &mut impl FnMut(&str, String),
) -> Option<Secret> {
    match (value, file) {
        (Some(_), Some(_)) => {
            problem(key, format!("set either {key} or {key}_file, not both"));
            None
        }
        (Some(v), None) if !v.is_empty() => Some(v.clone()),
        (Some(_), None) => {
            problem(key, "is empty".into());
            None
        }
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) => {
                let s = Secret::new(text);
                if s.is_empty() {
                    problem(
                        &format!("{key}_file"),
                        format!("{} is empty", path.display()),
                    );
                    None
                } else {
                    Some(s)
                }
            }
            Err(e) => {
                problem(
                    &format!("{key}_file"),
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        },
        (None, None) => env.get(env_var).map(Secret::new).filter(|s| !s.is_empty()),
    }
}

fn resolve_credentials(
    auth: &AuthConfig,
    key: &str,
    region: Option<&str>,
    env: &Env,
    problem: &mut impl FnMut(&str, String),
) -> Option<Credentials> {
    let k = |field: &str| format!("{key}.{field}");
    match auth.kind {
        AuthKind::Aksk => {
            for (set, field) in [
                (auth.iam_endpoint.is_some(), "iam_endpoint"),
                (auth.domain_name.is_some(), "domain_name"),
                (auth.user_name.is_some(), "user_name"),
                (
                    auth.password.is_some() || auth.password_file.is_some(),
                    "password",
                ),
            ] {
                if set {
                    problem(&k(field), "is only used with kind = \"token\"".into());
                }
            }
            let ak = resolve_secret(
                &auth.access_key,
                &auth.access_key_file,
                "HUAWEICLOUD_SDK_AK",
                &k("access_key"),
                env,
                problem,
            );
            let sk = resolve_secret(
                &auth.secret_key,
                &auth.secret_key_file,
                "HUAWEICLOUD_SDK_SK",
                &k("secret_key"),
                env,
                problem,
            );
            let token = resolve_secret(
                &auth.security_token,
                &auth.security_token_file,
                "HUAWEICLOUD_SDK_SECURITY_TOKEN",
                &k("security_token"),
                env,
                problem,
            );
            if ak.is_none() && auth.access_key.is_none() && auth.access_key_file.is_none() {
                problem(
                    &k("access_key"),
                    "missing: set access_key, access_key_file or HUAWEICLOUD_SDK_AK".into(),
                );
            }
            if sk.is_none() && auth.secret_key.is_none() && auth.secret_key_file.is_none() {
                problem(
                    &k("secret_key"),
                    "missing: set secret_key, secret_key_file or HUAWEICLOUD_SDK_SK".into(),
                );
            }
            Some(Credentials::AkSk {
                access_key: ak?,
                secret_key: sk?,
                security_token: token,
            })
        }
        AuthKind::Token => {
            for (set, field) in [
                (
                    auth.access_key.is_some() || auth.access_key_file.is_some(),
                    "access_key",
                ),
                (
                    auth.secret_key.is_some() || auth.secret_key_file.is_some(),
                    "secret_key",
                ),
                (
                    auth.security_token.is_some() || auth.security_token_file.is_some(),
                    "security_token",
                ),
            ] {
                if set {
                    problem(&k(field), "is only used with kind = \"aksk\"".into());
                }
            }
            let iam_endpoint = match (&auth.iam_endpoint, region) {
                (Some(e), _) => match normalize_endpoint(e) {
                    Ok(e) => Some(e),
                    Err(why) => {
                        problem(&k("iam_endpoint"), format!("{e:?} {why}"));
                        None
                    }
                },
                (None, Some(r)) if is_valid_region(r) => Some(iam_endpoint_for(r)),
                (None, _) => {
                    problem(
                        &k("iam_endpoint"),
                        "missing: set iam_endpoint or the project's region".into(),
                    );
                    None
                }
            };
            let mut required = |v: &Option<String>, field: &str| match v.as_deref().map(str::trim) {
                Some(s) if !s.is_empty() => Some(s.to_string()),
                _ => {
                    problem(&k(field), "missing: required with kind = \"token\"".into());
                    None
                }
            };
            let domain_name = required(&auth.domain_name, "domain_name");
            let user_name = required(&auth.user_name, "user_name");
            let password = resolve_secret(
                &auth.password,
                &auth.password_file,
                "HUAWEICLOUD_SDK_PASSWORD",
                &k("password"),
                env,
                problem,
            );
            if password.is_none() && auth.password.is_none() && auth.password_file.is_none() {
                problem(
                    &k("password"),
                    "missing: set password, password_file or HUAWEICLOUD_SDK_PASSWORD".into(),
                );
            }
            Some(Credentials::Token {
                iam_endpoint: iam_endpoint?,
                domain_name: domain_name?,
                user_name: user_name?,
                password: password?,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[poll]
interval = "30s"
timeout = "20s"

[auth]
access_key = "AKEXAMPLE"
secret_key = "SKEXAMPLE"

[[projects]]
project_id = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
region = "cn-north-4"
queues = ["default", "etl"]
"#;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn err_keys(text: &str, e: &Env) -> Vec<String> {
        match load_toml_str(text, e) {
            Ok(s) => panic!("expected an error, got {s:?}"),
            Err(err) => {
                let keys: Vec<String> = err.keys().iter().map(|k| k.to_string()).collect();
                assert!(!keys.is_empty(), "expected a validation error, got: {err}");
                for k in &keys {
                    assert!(
                        err.to_string().contains(k.as_str()),
                        "message names {k}: {err}"
                    );
                }
                keys
            }
        }
    }

    #[test]
    fn good_config_loads_with_defaults_and_derived_endpoint() {
        let s = load_toml_str(GOOD, &Env::new()).expect("valid");
        assert_eq!(s.poll.interval, Duration::from_secs(30));
        assert_eq!(s.poll.page_size, 100);
        assert_eq!(s.web.listen_address, "0.0.0.0:10049");
        assert_eq!(s.projects.len(), 1);
        assert_eq!(
            s.projects[0].endpoint,
            "https://dli.cn-north-4.myhuaweicloud.com"
        );
        assert_eq!(s.projects[0].queues, vec!["default", "etl"]);
        assert!(
            matches!(&s.projects[0].credentials, Credentials::AkSk { access_key, .. } if access_key.expose() == "AKEXAMPLE")
        );
    }

    #[test]
    fn eu_region_uses_eu_domain() {
        assert_eq!(
            dli_endpoint_for("eu-west-101"),
            "https://dli.eu-west-101.myhuaweicloud.eu"
        );
        assert_eq!(
            iam_endpoint_for("cn-north-4"),
            "https://iam.cn-north-4.myhuaweicloud.com"
        );
    }

    #[test]
    fn environment_overrides_file_values() {
        let e = env(&[
            ("DLI_EXPORTER__POLL__INTERVAL", "2m"),
            ("DLI_EXPORTER__POLL__PAGE_SIZE", "50"),
            ("DLI_EXPORTER__METRICS__OWNER_BREAKDOWN", "false"),
            ("DLI_EXPORTER__AUTH__SECRET_KEY", "12345"),
            ("UNRELATED", "x"),
        ]);
        let s = load_toml_str(GOOD, &e).expect("valid");
        assert_eq!(s.poll.interval, Duration::from_secs(120));
        assert_eq!(s.poll.page_size, 50);
        assert!(!s.metrics.owner_breakdown);
        assert!(
            matches!(&s.projects[0].credentials, Credentials::AkSk { secret_key, .. } if secret_key.expose() == "12345")
        );
    }

    #[test]
    fn secrets_fall_back_to_sdk_environment_variables() {
        let text = GOOD.replace(
            "access_key = \"AKEXAMPLE\"\nsecret_key = \"SKEXAMPLE\"\n",
            "",
        );
        let e = env(&[
            ("HUAWEICLOUD_SDK_AK", "envak"),
            ("HUAWEICLOUD_SDK_SK", "envsk"),
            ("HUAWEICLOUD_SDK_SECURITY_TOKEN", "envtok"),
        ]);
        let s = load_toml_str(&text, &e).expect("valid");
        match &s.projects[0].credentials {
            Credentials::AkSk {
                access_key,
                secret_key,
                security_token,
            } => {
                assert_eq!(access_key.expose(), "envak");
                assert_eq!(secret_key.expose(), "envsk");
                assert_eq!(security_token.as_ref().map(Secret::expose), Some("envtok"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn secrets_from_files_are_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ak = dir.path().join("ak");
        let sk = dir.path().join("sk");
        std::fs::write(&ak, "fileak\n").expect("write");
        std::fs::write(&sk, "filesk\n").expect("write");
        let text = GOOD.replace(
            "access_key = \"AKEXAMPLE\"\nsecret_key = \"SKEXAMPLE\"",
            &format!("access_key_file = {:?}\nsecret_key_file = {:?}", ak, sk),
        );
        let s = load_toml_str(&text, &Env::new()).expect("valid");
        assert!(
            matches!(&s.projects[0].credentials, Credentials::AkSk { access_key, secret_key, .. }
            if access_key.expose() == "fileak" && secret_key.expose() == "filesk")
        );
    }

    #[test]
    fn unreadable_secret_file_names_the_key() {
        let text = GOOD.replace(
            "access_key = \"AKEXAMPLE\"",
            "access_key_file = \"/nonexistent/ak\"",
        );
        assert_eq!(err_keys(&text, &Env::new()), vec!["auth.access_key_file"]);
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_position() {
        let text = GOOD.replace("timeout = \"20s\"", "timeout = \"20s\"\nintervall = \"1m\"");
        let err = load_toml_str(&text, &Env::new()).expect_err("unknown key");
        let msg = err.to_string();
        assert!(msg.contains("intervall") && msg.contains("line 5"), "{msg}");

        let text = GOOD.replace(
            "region = \"cn-north-4\"",
            "region = \"cn-north-4\"\nqueue = \"x\"",
        );
        let msg = load_toml_str(&text, &Env::new())
            .expect_err("unknown key")
            .to_string();
        assert!(msg.contains("`queue`"), "{msg}");
    }

    #[test]
    fn unknown_environment_override_is_rejected() {
        let e = env(&[("DLI_EXPORTER__POLL__INTERVALL", "1m")]);
        let msg = load_toml_str(GOOD, &e)
            .expect_err("unknown key")
            .to_string();
        assert!(msg.contains("intervall"), "{msg}");
    }

    #[test]
    fn empty_queue_list() {
        let text = GOOD.replace("queues = [\"default\", \"etl\"]", "queues = []");
        assert_eq!(err_keys(&text, &Env::new()), vec!["projects[0].queues"]);
    }

    #[test]
    fn no_projects() {
        let text = GOOD
            .split("[[projects]]")
            .next()
            .unwrap_or_default()
            .to_string();
        assert_eq!(err_keys(&text, &Env::new()), vec!["projects"]);
    }

    #[test]
    fn duplicate_project_queue_pairs() {
        let text = format!(
            "{GOOD}\n[[projects]]\nproject_id = \"0a1b2c3d4e5f60718293a4b5c6d7e8f9\"\nregion = \"cn-east-3\"\nqueues = [\"etl\"]\n"
        );
        assert_eq!(err_keys(&text, &Env::new()), vec!["projects[1].queues[0]"]);
        let text = GOOD.replace("[\"default\", \"etl\"]", "[\"etl\", \"etl\"]");
        assert_eq!(err_keys(&text, &Env::new()), vec!["projects[0].queues[1]"]);
    }

    #[test]
    fn timeout_not_below_interval() {
        let text = GOOD.replace("timeout = \"20s\"", "timeout = \"30s\"");
        assert_eq!(err_keys(&text, &Env::new()), vec!["poll.timeout"]);
    }

    #[test]
    fn zero_page_size_and_other_zeroes() {
        let text = GOOD.replace(
            "[poll]",
            "[poll]\npage_size = 0\nmax_pages = 0\nconcurrency = 0",
        );
        assert_eq!(
            err_keys(&text, &Env::new()),
            vec!["poll.page_size", "poll.max_pages", "poll.concurrency"]
        );
    }

    #[test]
    fn malformed_project_id() {
        for bad in ["", "0a1b-2c3d", "x".repeat(65).as_str(), "项目"] {
            let text = GOOD.replace("0a1b2c3d4e5f60718293a4b5c6d7e8f9", bad);
            assert_eq!(
                err_keys(&text, &Env::new()),
                vec!["projects[0].project_id"],
                "{bad:?}"
            );
        }
    }

    #[test]
    fn malformed_endpoint() {
        for bad in [
            "dli.example.com",
            "ftp://dli.example.com",
            "https://",
            "https://h/path",
            "https://h?x=1",
            "https://u:p@h",
        ] {
            let text = GOOD.replace("region = \"cn-north-4\"", &format!("endpoint = {bad:?}"));
            assert_eq!(
                err_keys(&text, &Env::new()),
                vec!["projects[0].endpoint"],
                "{bad:?}"
            );
        }
        let text = GOOD.replace(
            "region = \"cn-north-4\"",
            "endpoint = \"http://127.0.0.1:8080/\"",
        );
        let s = load_toml_str(&text, &Env::new()).expect("http endpoint allowed");
        assert_eq!(s.projects[0].endpoint, "http://127.0.0.1:8080");
    }

    #[test]
    fn missing_region_and_endpoint() {
        let text = GOOD.replace("region = \"cn-north-4\"\n", "");
        assert_eq!(err_keys(&text, &Env::new()), vec!["projects[0].region"]);
    }

    #[test]
    fn missing_credentials() {
        let text = GOOD.replace(
            "access_key = \"AKEXAMPLE\"\nsecret_key = \"SKEXAMPLE\"\n",
            "",
        );
        assert_eq!(
            err_keys(&text, &Env::new()),
            vec!["auth.access_key", "auth.secret_key"]
        );
    }

    #[test]
    fn token_auth_requires_its_fields() {
        let text = GOOD.replace(
            "access_key = \"AKEXAMPLE\"\nsecret_key = \"SKEXAMPLE\"",
            "kind = \"token\"",
        );
        assert_eq!(
            err_keys(&text, &Env::new()),
            vec!["auth.domain_name", "auth.user_name", "auth.password"]
        );
        let text = GOOD.replace(
            "access_key = \"AKEXAMPLE\"\nsecret_key = \"SKEXAMPLE\"",
            "kind = \"token\"\ndomain_name = \"acct\"\nuser_name = \"bob\"",
        );
        let s = load_toml_str(&text, &env(&[("HUAWEICLOUD_SDK_PASSWORD", "pw")])).expect("valid");
        assert!(
            matches!(&s.projects[0].credentials, Credentials::Token { iam_endpoint, .. }
            if iam_endpoint == "https://iam.cn-north-4.myhuaweicloud.com")
        );
    }

    #[test]
    fn project_auth_replaces_default_whole() {
        let text = format!(
            "{GOOD}\n[projects.auth]\nkind = \"token\"\ndomain_name = \"d\"\nuser_name = \"u\"\npassword = \"p\"\n"
        );
        let s = load_toml_str(&text, &Env::new()).expect("valid");
        assert_eq!(s.projects[0].credentials.kind(), AuthKind::Token);
    }

    #[test]
    fn keys_of_the_other_auth_kind_are_rejected() {
        let text = GOOD.replace("[auth]", "[auth]\nuser_name = \"bob\"");
        assert_eq!(err_keys(&text, &Env::new()), vec!["auth.user_name"]);
    }

    #[test]
    fn bad_listen_address_and_telemetry_path() {
        let text =
            format!("[web]\nlisten_address = \"10049\"\ntelemetry_path = \"metrics\"\n{GOOD}");
        assert_eq!(
            err_keys(&text, &Env::new()),
            vec!["web.listen_address", "web.telemetry_path"]
        );
        let text = format!("[web]\nlisten_address = \":10049\"\n{GOOD}");
        assert!(load_toml_str(&text, &Env::new()).is_ok());
    }

    #[test]
    fn bad_duration_names_the_key() {
        let text = GOOD.replace("interval = \"30s\"", "interval = \"often\"");
        let msg = load_toml_str(&text, &Env::new())
            .expect_err("bad")
            .to_string();
        assert!(msg.contains("interval"), "{msg}");
    }

    #[test]
    fn debug_never_shows_secrets() {
        let s = load_toml_str(GOOD, &Env::new()).expect("valid");
        let d = format!("{s:?}");
        assert!(!d.contains("AKEXAMPLE") && !d.contains("SKEXAMPLE"), "{d}");
    }

    #[test]
    fn yaml_by_extension() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "auth:\n  access_key: a\n  secret_key: b\nprojects:\n  - project_id: abc123\n    region: cn-north-4\n    queues: [q1]\n",
        )
        .expect("write");
        let s = load(&path, &Env::new()).expect("valid yaml");
        assert_eq!(s.projects[0].queues, vec!["q1"]);
        let bad = dir.path().join("c.ini");
        std::fs::write(&bad, "").expect("write");
        assert!(matches!(
            load(&bad, &Env::new()),
            Err(ConfigError::Format { .. })
        ));
    }

    #[test]
    fn yaml_unknown_keys_are_named_with_their_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.yml");
        let good = "auth:\n  access_key: a\n  secret_key: SKEXAMPLE\nprojects:\n  - project_id: abc123\n    region: cn-north-4\n    queues: [q1]\n";
        for (text, expect) in [
            (
                good.replace("  secret_key:", "  secret_kye:"),
                "line 3, column 3 (key auth.secret_kye)",
            ),
            (
                format!("{good}    colour: blue\n"),
                "line 8, column 5 (key projects[0].colour)",
            ),
            (
                format!("{good}pol:\n  interval: 1m\n"),
                "line 8, column 1 (key pol)",
            ),
        ] {
            std::fs::write(&path, &text).expect("write");
            let msg = load(&path, &Env::new())
                .expect_err("unknown key")
                .to_string();
            assert!(msg.contains(expect), "{msg}");
            assert!(msg.contains("c.yml"), "{msg}");
            assert!(!msg.contains("SKEXAMPLE"), "{msg}");
        }
        // An unknown key from the environment has no place in the file, and says where to look.
        std::fs::write(&path, good).expect("write");
        let env: Env = [(
            "DLI_EXPORTER__POLL__INTERVALL".to_string(),
            "1m".to_string(),
        )]
        .into_iter()
        .collect();
        let msg = load(&path, &env).expect_err("unknown key").to_string();
        assert!(
            msg.contains("intervall") && msg.contains("environment override"),
            "{msg}"
        );
    }

    #[test]
    fn toml_errors_never_quote_secret_values() {
        let text = GOOD.replace("secret_key = ", "secret_kye = ");
        let msg = load_toml_str(&text, &Env::new())
            .expect_err("unknown key")
            .to_string();
        assert!(
            msg.contains("secret_kye") && msg.contains("line 8"),
            "{msg}"
        );
        assert!(!msg.contains("SKEXAMPLE"), "{msg}");
        let text = GOOD.replace("secret_key = \"SKEXAMPLE\"", "secret_key = \"SKEXAMPLE");
        let msg = load_toml_str(&text, &Env::new())
            .expect_err("unterminated string")
            .to_string();
        assert!(!msg.contains("SKEXAMPLE"), "{msg}");
    }

    #[test]
    fn ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").expect("write");
        let missing = dir.path().join("missing.pem");
        for path in [&empty, &garbage, &missing] {
            let text = GOOD.replace(
                "queues = [\"default\", \"etl\"]",
                &format!("queues = [\"default\", \"etl\"]\nca_file = {path:?}"),
            );
            assert_eq!(err_keys(&text, &Env::new()), vec!["projects[0].ca_file"]);
            let msg = load_toml_str(&text, &Env::new())
                .expect_err("bad ca_file")
                .to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
        }
    }

    #[test]
    fn proxy_url_is_validated_without_echoing_credentials() {
        let with = |url: &str| {
            GOOD.replace(
                "queues = [\"default\", \"etl\"]",
                &format!("queues = [\"default\", \"etl\"]\nproxy_url = {url:?}"),
            )
        };
        let s = load_toml_str(&with("http://user:pr0xyPass@proxy.corp:3128"), &Env::new())
            .expect("valid proxy");
        let proxy = s.projects[0].proxy.as_ref().expect("proxy set");
        assert_eq!(proxy.redacted(), "http://<redacted>@proxy.corp:3128");
        assert!(!format!("{s:?}").contains("pr0xyPass"));
        assert!(!summary(&s).contains("pr0xyPass"));
        assert!(summary(&s).contains("proxy http://<redacted>@proxy.corp:3128"));
        for bad in [
            "proxy.corp:3128",
            "ftp://u:pr0xyPass@p",
            "http://u:pr0xyPass@p/x",
        ] {
            let text = with(bad);
            assert_eq!(err_keys(&text, &Env::new()), vec!["projects[0].proxy_url"]);
            let msg = load_toml_str(&text, &Env::new())
                .expect_err("bad")
                .to_string();
            assert!(!msg.contains("pr0xyPass"), "{msg}");
        }
        let s = load_toml_str(GOOD, &Env::new()).expect("valid");
        assert!(s.projects[0].proxy.is_none());
    }

    #[test]
    fn the_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let e = env(&[("HUAWEICLOUD_SDK_AK", "a"), ("HUAWEICLOUD_SDK_SK", "b")]);
        let s = load(&path, &e).unwrap_or_else(|err| panic!("{err}"));
        let defaults = PollConfig::default();
        assert_eq!(s.poll.interval, defaults.interval);
        assert_eq!(s.poll.page_size, defaults.page_size);
    }
}
