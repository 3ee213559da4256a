//! Validation: every rule about what a valid configuration is, each problem named by its key,
//! all problems collected before failing; endpoints derived from regions.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use super::endpoints::{
    dli_endpoint_for, is_valid_project_id, is_valid_region, normalize_endpoint,
};
use super::model::{
    Config, DISCOVER_ALL, MAX_JOB_NAMES_PER_QUEUE, MIN_DISCOVERY_INTERVAL, Project, QueueFilter,
    QueuePattern, Settings,
};
use super::secrets::{resolve_credentials, resolve_iam_endpoint};
use super::{ConfigError, Env, Problem};
use crate::secret::SecretUrl;

/// Longest `poll.interval` (and so `poll.timeout` and `poll.request_timeout`, which must stay
/// below it): one day.
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Longest `poll.full_walk_interval`: one day (removals by retention show up no later).
pub const MAX_FULL_WALK_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Longest `poll.stale_after`: seven days.
pub const MAX_STALE_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// Checks every rule and resolves secrets; collects all problems instead of stopping at the first.
pub fn validate(config: Config, env: &Env, path: Option<&Path>) -> Result<Settings, ConfigError> {
    let mut problems = Vec::new();
    let mut problem = |key: &str, message: String| {
        problems.push(Problem {
            key: key.to_string(),
            message,
        })
    };

    let listen_address = normalize_listen_address(&config.web.listen_address);
    if listen_address.is_none() {
        problem(
            "web.listen_address",
            format!("{:?} {LISTEN_ADDRESS_RULE}", config.web.listen_address),
        );
    }
    let tp = &config.web.telemetry_path;
    if !is_valid_telemetry_path(tp) {
        problem(
            "web.telemetry_path",
            format!("{tp:?} {TELEMETRY_PATH_RULE}"),
        );
    }

    let p = &config.poll;
    for (key, value) in [
        ("poll.interval", p.interval),
        ("poll.timeout", p.timeout),
        ("poll.request_timeout", p.request_timeout),
        ("poll.stale_after", p.stale_after),
        ("poll.full_walk_interval", p.full_walk_interval),
    ] {
        if value.is_zero() {
            problem(key, "must be greater than 0".into());
        }
    }
    // Upper bounds keep every deadline and timer the durations feed far from overflowing, and
    // catch typos ("60m" meant as seconds is still allowed; "60d" is not).
    for (key, value, max) in [
        ("poll.interval", p.interval, MAX_POLL_INTERVAL),
        ("poll.stale_after", p.stale_after, MAX_STALE_AFTER),
        (
            "poll.full_walk_interval",
            p.full_walk_interval,
            MAX_FULL_WALK_INTERVAL,
        ),
    ] {
        if value > max {
            problem(
                key,
                format!(
                    "{} is longer than the maximum of {}",
                    humantime::format_duration(value),
                    humantime::format_duration(max)
                ),
            );
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

    let m = &config.metrics;
    for (j, source) in m.job_names.iter().enumerate() {
        if let Err(why) = QueuePattern::new(source) {
            problem(
                &format!("metrics.job_names[{j}]"),
                format!("{source:?} is not a valid regex: {why}"),
            );
        }
    }
    if !(1..=MAX_JOB_NAMES_PER_QUEUE).contains(&m.max_job_names_per_queue) {
        problem(
            "metrics.max_job_names_per_queue",
            format!(
                "{} must be between 1 and {MAX_JOB_NAMES_PER_QUEUE}",
                m.max_job_names_per_queue
            ),
        );
    }

    let d = &config.discovery;
    if d.interval < MIN_DISCOVERY_INTERVAL {
        problem(
            "discovery.interval",
            format!(
                "{} must be at least {}",
                humantime::format_duration(d.interval),
                humantime::format_duration(MIN_DISCOVERY_INTERVAL)
            ),
        );
    }
    if d.queue_types.is_empty() {
        problem(
            "discovery.queue_types",
            "must name at least one queue type (\"general\", \"all\", \"sql\")".into(),
        );
    }
    for (j, t) in d.queue_types.iter().enumerate() {
        if t.trim().is_empty() {
            problem(
                &format!("discovery.queue_types[{j}]"),
                "must not be empty".into(),
            );
        }
    }

    if config.projects.is_empty() {
        problem(
            "projects",
            "at least one [[projects]] entry with a project_id (or region) is required".into(),
        );
    }

    let mut seen: HashSet<(String, String)> = HashSet::new();
    // project_id -> the first entry that configured it.
    let mut first_entry: HashMap<&str, usize> = HashMap::new();
    let mut projects = Vec::with_capacity(config.projects.len());
    for (i, pc) in config.projects.iter().enumerate() {
        let key = |field: &str| format!("projects[{i}].{field}");
        let mut ok = true;
        let duplicate = match &pc.project_id {
            Some(id) => match first_entry.get(id.as_str()) {
                Some(first) => {
                    // Two entries would mean two sets of credentials, endpoints, CAs or
                    // discovery rules for one project: which applies must not be left to chance.
                    problem(
                        &key("project_id"),
                        format!(
                            "{id:?} is already configured by projects[{first}]: list all its queues in one [[projects]] entry"
                        ),
                    );
                    ok = false;
                    true
                }
                None => {
                    first_entry.insert(id, i);
                    false
                }
            },
            None => false,
        };
        let project_id = pc.project_id.clone().unwrap_or_default();
        match &pc.project_id {
            Some(id) if !is_valid_project_id(id) => {
                problem(
                    &key("project_id"),
                    format!(
                        "{id:?} must be 1 to 64 ASCII letters and digits (usually 32 lowercase hex)"
                    ),
                );
                ok = false;
            }
            Some(_) => {}
            None if pc.region.is_none() => {
                problem(
                    &key("project_id"),
                    "missing: set project_id, or region to look the project id up from it".into(),
                );
                ok = false;
            }
            None => {}
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
        // No `queues` key discovers every queue; an explicit empty list is a mistake.
        let listed = pc
            .queues
            .clone()
            .unwrap_or_else(|| vec![DISCOVER_ALL.to_string()]);
        if listed.is_empty() {
            problem(
                &key("queues"),
                "must list at least one queue, or \"*\" to discover them".into(),
            );
            ok = false;
        }
        let mut discovers = false;
        let mut queues = Vec::with_capacity(listed.len());
        // Unresolved project ids cannot collide yet: checked again once resolved.
        let id_key = pc
            .project_id
            .clone()
            .unwrap_or_else(|| format!("(region {})", pc.region.as_deref().unwrap_or("")));
        for (j, q) in listed.iter().enumerate() {
            let qkey = format!("projects[{i}].queues[{j}]");
            if q == DISCOVER_ALL {
                if discovers {
                    problem(&qkey, "\"*\" is listed twice".into());
                    ok = false;
                }
                discovers = true;
            } else if q.trim().is_empty() {
                problem(&qkey, "queue name must not be empty".into());
                ok = false;
            } else if !duplicate && !seen.insert((id_key.clone(), q.clone())) {
                problem(
                    &qkey,
                    format!(
                        "duplicate queue {q:?} for project {id_key}: each project x queue pair may appear once"
                    ),
                );
                ok = false;
            } else {
                queues.push(q.clone());
            }
        }
        let mut patterns = |field: &str, sources: &[String]| -> Vec<QueuePattern> {
            let mut out = Vec::with_capacity(sources.len());
            for (j, source) in sources.iter().enumerate() {
                match QueuePattern::new(source) {
                    Ok(p) => out.push(p),
                    Err(why) => {
                        problem(
                            &format!("projects[{i}].{field}[{j}]"),
                            format!("{source:?} is not a valid regex: {why}"),
                        );
                        ok = false;
                    }
                }
            }
            if !sources.is_empty() && !discovers {
                problem(
                    &format!("projects[{i}].{field}"),
                    "filters discovered queues only: add \"*\" to queues (or remove the queues key)"
                        .into(),
                );
                ok = false;
            }
            out
        };
        let include = patterns("include_queues", &pc.include_queues);
        let exclude = patterns("exclude_queues", &pc.exclude_queues);
        let discover = discovers.then_some(QueueFilter { include, exclude });
        let (auth, auth_key) = match &pc.auth {
            Some(a) => (a, key("auth")),
            None => (&config.auth, "auth".to_string()),
        };
        let iam_endpoint =
            resolve_iam_endpoint(auth, &auth_key, pc.region.as_deref(), &mut problem);
        let credentials =
            resolve_credentials(auth, &auth_key, iam_endpoint.as_deref(), env, &mut problem);
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
                project_id,
                project_id_from_region: pc.project_id.is_none(),
                region: pc.region.clone(),
                endpoint,
                iam_endpoint,
                queues,
                discover,
                credentials,
                ca_file: pc.ca_file.clone(),
                proxy,
            });
        }
    }

    problems.extend(project_id_problems(&projects));
    if !problems.is_empty() {
        return Err(ConfigError::Invalid {
            path: path.map(Path::to_path_buf),
            problems,
        });
    }
    let mut web = config.web;
    if let Some(address) = listen_address {
        web.listen_address = address;
    }
    Ok(Settings {
        web,
        poll: config.poll,
        metrics: config.metrics,
        discovery: config.discovery,
        projects,
        source: path.map(Path::to_path_buf),
    })
}

/// Rules about project ids across `[[projects]]` entries that need the ids looked up from regions:
/// checked at validation and again once they are known. A project is configured in one entry
/// only (two entries would mean two sets of credentials or queue rules for it); entries with
/// given ids are checked, with their indices, by [`validate`] itself.
pub fn project_id_problems(projects: &[Project]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, p) in projects.iter().enumerate() {
        if !p.has_project_id() {
            continue;
        }
        let later = projects
            .iter()
            .enumerate()
            .filter(|(j, o)| *j > i && o.has_project_id() && o.project_id == p.project_id)
            .filter(|(_, o)| p.project_id_from_region || o.project_id_from_region);
        for (j, o) in later {
            let region = o.region.as_deref().or(p.region.as_deref()).unwrap_or("-");
            problems.push(Problem {
                key: format!("projects[{j}].project_id"),
                message: format!(
                    "project {} (looked up from region {region}) is already configured by projects[{i}]: list all its queues in one [[projects]] entry",
                    p.project_id
                ),
            });
        }
    }
    problems
}

/// What [`normalize_listen_address`] accepts, as said in errors.
pub const LISTEN_ADDRESS_RULE: &str = "must be HOST:PORT, [IPv6]:PORT or :PORT (e.g. \":10049\")";

/// `HOST:PORT` and `[v6]:PORT` as given; `:PORT` means every IPv4 interface, as with other
/// exporters. `None` for anything else. The one rule for the key and for `--web.listen-address`.
pub fn normalize_listen_address(addr: &str) -> Option<String> {
    let (host, port) = addr.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    if host.contains(char::is_whitespace)
        || (host.contains(':') && !(host.starts_with('[') && host.ends_with(']')))
    {
        return None;
    }
    if host.is_empty() {
        return Some(format!("0.0.0.0:{port}"));
    }
    Some(addr.to_string())
}

/// What [`is_valid_telemetry_path`] accepts, as said in errors.
pub const TELEMETRY_PATH_RULE: &str = "must be a path such as \"/metrics\" (starting with '/', not '/' itself nor under '/-/', without '?', '#' or spaces)";

/// A path `/metrics` can be served at: the one rule for the key and for `--web.telemetry-path`.
pub fn is_valid_telemetry_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() >= 2
        && !path.starts_with("/-/")
        && !path.contains(['?', '#', ' '])
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
