//! Shared helpers of the integration tests: a simulator with known jobs, settings and clients
//! that point the real code at it over loopback HTTP.
#![allow(dead_code)]

pub mod child;
pub mod exposition;
pub mod net;
pub mod web;

// Not every test binary reads the exposition.
#[allow(unused_imports)]
pub use exposition::{jobs_series, project_series, queue_series, state_series, value};

use std::sync::Arc;
use std::time::{Duration, Instant};

use dli_exporter::app::App;
use dli_exporter::config::{
    Credentials, DiscoveryConfig, MetricsConfig, PollConfig, Project, Settings, WebConfig,
};
use dli_exporter::dli::states::KNOWN_STATES;
use dli_exporter::dli::{
    BatchJob, ClientOptions, DliClient, NoopObserver, RetryPolicy, WalkError, WalkOptions,
    WalkStats, walk_queue,
};
use dli_exporter::secret::Secret;
use dli_exporter::sim::{
    DEMO_ACCESS_KEY, DEMO_DOMAIN, DEMO_PASSWORD, DEMO_PROJECT_ID, DEMO_SECRET_KEY, DEMO_USER,
    SimConfig, SimJob, Simulator,
};
use tokio::sync::Semaphore;

pub const PID: &str = DEMO_PROJECT_ID;

/// The collectors over `store` with the owner breakdown on, job series stale after
/// `stale_after` and the queue list after `queue_list_stale_after`.
pub fn metrics_for(
    store: Arc<dli_exporter::store::SnapshotStore>,
    stale_after: Duration,
    queue_list_stale_after: Duration,
) -> dli_exporter::metrics::Metrics {
    dli_exporter::metrics::Metrics::new(
        store,
        dli_exporter::metrics::CollectorOptions {
            owner_breakdown: true,
            stale_after,
            queue_list_stale_after,
        },
    )
    .expect("metrics")
}

/// A fixed base time so that exposition values are exact: 2025-01-15T08:30:00Z in ms.
pub const T0_MS: i64 = 1_736_929_800_000;

pub async fn sim(config: SimConfig) -> Simulator {
    Simulator::start(config).await.expect("simulator starts")
}

/// `n` jobs with ids `{prefix}-00000`…, newest first, cycling through the known states.
pub fn numbered_jobs(prefix: &str, n: usize) -> Vec<SimJob> {
    (0..n)
        .map(|i| {
            SimJob::new(
                format!("{prefix}-{i:05}"),
                KNOWN_STATES[i % KNOWN_STATES.len()],
                Some("alice"),
                T0_MS - i as i64 * 1000,
            )
        })
        .collect()
}

/// A config file polling `queues` of `sim` every 300 ms with the demo AK/SK: what a child process
/// or a reloadable exporter reads.
pub fn demo_config_toml(sim: &Simulator, queues: &[&str]) -> String {
    let queues: Vec<String> = queues.iter().map(|q| format!("{q:?}")).collect();
    format!(
        "[poll]\ninterval = \"300ms\"\ntimeout = \"250ms\"\nrequest_timeout = \"200ms\"\n\n\
         [auth]\naccess_key = \"{DEMO_ACCESS_KEY}\"\nsecret_key = \"{DEMO_SECRET_KEY}\"\n\n\
         [[projects]]\nproject_id = \"{PID}\"\nendpoint = \"{}\"\nqueues = [{}]\n",
        sim.base_url(),
        queues.join(", ")
    )
}

pub fn aksk() -> Credentials {
    Credentials::AkSk {
        access_key: Secret::new(DEMO_ACCESS_KEY),
        secret_key: Secret::new(DEMO_SECRET_KEY),
        security_token: None,
    }
}

pub fn token_auth(sim: &Simulator) -> Credentials {
    Credentials::Token {
        iam_endpoint: sim.base_url(),
        domain_name: DEMO_DOMAIN.into(),
        user_name: DEMO_USER.into(),
        password: Secret::new(DEMO_PASSWORD),
    }
}

pub fn project(sim: &Simulator, queues: &[&str], credentials: Credentials) -> Project {
    project_at(&sim.base_url(), queues, credentials)
}

/// The demo project with `queues`, its DLI and IAM at `endpoint` (a simulator or a fixture).
pub fn project_at(endpoint: &str, queues: &[&str], credentials: Credentials) -> Project {
    Project {
        project_id: PID.into(),
        project_id_from_region: false,
        region: Some("cn-north-4".into()),
        endpoint: endpoint.to_string(),
        iam_endpoint: Some(endpoint.to_string()),
        queues: queues.iter().map(|q| q.to_string()).collect(),
        discover: None,
        credentials,
        ca_file: None,
        proxy: None,
    }
}

/// Sub-second polling so no test waits for a real interval.
pub fn fast_poll() -> PollConfig {
    PollConfig {
        interval: Duration::from_millis(300),
        timeout: Duration::from_millis(250),
        request_timeout: Duration::from_millis(200),
        page_size: 100,
        max_pages: 2000,
        concurrency: 4,
        retries: 1,
        stale_after: Duration::from_secs(60),
        ..PollConfig::default()
    }
}

pub fn settings(projects: Vec<Project>, poll: PollConfig) -> Settings {
    Settings {
        web: WebConfig {
            listen_address: "127.0.0.1:0".into(),
            telemetry_path: "/metrics".into(),
        },
        poll,
        metrics: MetricsConfig::default(),
        discovery: DiscoveryConfig::default(),
        projects,
        source: None,
    }
}

pub fn client(project: &Project, request_timeout: Duration, concurrency: usize) -> DliClient {
    DliClient::new(
        project,
        &ClientOptions::new(request_timeout),
        Arc::new(Semaphore::new(concurrency)),
        Arc::new(NoopObserver),
    )
    .expect("client builds")
}

pub fn walk_options(page_size: u32, concurrency: usize, retries: u32) -> WalkOptions {
    WalkOptions {
        page_size,
        max_pages: 2000,
        concurrency,
        retry: RetryPolicy {
            retries,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(100),
        },
    }
}

/// Walks `queue` and returns the stats and every job handed to the sink.
pub async fn walk(
    client: &DliClient,
    queue: &str,
    options: &WalkOptions,
) -> Result<(WalkStats, Vec<BatchJob>), WalkError> {
    let mut jobs = Vec::new();
    let stats = walk_queue(
        client,
        queue,
        options,
        Instant::now() + Duration::from_secs(20),
        &mut |j| jobs.push(j),
    )
    .await?;
    Ok((stats, jobs))
}

/// Asserts that `jobs` holds every id of `expected` exactly once (and nothing twice).
pub fn assert_exactly_once(jobs: &[BatchJob], expected: &[SimJob]) {
    let mut seen = std::collections::HashMap::new();
    for j in jobs {
        *seen.entry(j.id.clone().expect("job id")).or_insert(0) += 1;
    }
    for (id, n) in &seen {
        assert_eq!(*n, 1, "job {id} handed over {n} times");
    }
    for e in expected {
        assert!(seen.contains_key(&e.id), "job {} lost", e.id);
    }
}

/// `promtool check metrics` over the exposition, when promtool is installed (CI installs it).
pub fn promtool_check(text: &str) {
    const PROMTOOL: &str = "/usr/bin/promtool";
    if !std::path::Path::new(PROMTOOL).exists() {
        eprintln!("note: {PROMTOOL} not found; skipping `promtool check metrics`");
        return;
    }
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A plain HTTP client for the exporter under test: no proxy from the environment, and a
/// timeout so a hung server fails the test instead of stalling it.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .expect("http client")
}

/// Waits until a request for `queue` has reached `sim` and is still unanswered (status 0 in
/// the request log): a poll hanging on a `Fault::Hang` (at most 5 s).
pub async fn wait_until_hanging(sim: &Simulator, queue: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sim
        .request_log()
        .iter()
        .any(|r| r.queue.as_deref() == Some(queue) && r.status == 0)
    {
        assert!(
            Instant::now() < deadline,
            "the {queue} poll never reached the simulator"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts the exporter in this process on a free loopback port.
pub async fn start(settings: &Settings) -> App {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    App::start(settings, listener).expect("exporter starts")
}

/// Shuts the exporter down, failing the test if that takes more than 5 s.
pub async fn shutdown(app: App) {
    tokio::time::timeout(Duration::from_secs(5), app.shutdown())
        .await
        .expect("shutdown within 5 s");
}

/// `http://{addr}{path}` of the app.
pub fn url(app: &App, path: &str) -> String {
    format!("http://{}{}", app.addr, path)
}

/// A GET that must be answered (any status): the status and the body.
pub async fn get(client: &reqwest::Client, url: &str) -> (reqwest::StatusCode, String) {
    let r = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status();
    (status, r.text().await.expect("body"))
}

/// Polls `/-/ready` until it answers 200 (at most 5 s); meanwhile it must answer 503.
pub async fn wait_ready(client: &reqwest::Client, app: &App) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = get(client, &url(app, "/-/ready")).await;
        if status == reqwest::StatusCode::OK {
            return;
        }
        assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(Instant::now() < deadline, "not ready after 5 s: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `method` to `url`, asserts a 405 with an `Allow` header, and returns that header.
pub async fn assert_method_not_allowed(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
) -> String {
    let r = client
        .request(method.clone(), url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    assert_eq!(
        r.status(),
        reqwest::StatusCode::METHOD_NOT_ALLOWED,
        "{method} {url}"
    );
    r.headers()
        .get("allow")
        .unwrap_or_else(|| panic!("{method} {url}: 405 without an Allow header"))
        .to_str()
        .unwrap_or_else(|e| panic!("{method} {url}: Allow is not ASCII: {e}"))
        .to_string()
}

/// Scrapes the app's `/metrics` and asserts a 200.
pub async fn scrape(client: &reqwest::Client, app: &App) -> String {
    let r = client
        .get(url(app, "/metrics"))
        .send()
        .await
        .expect("scrape");
    let status = r.status();
    let body = r.text().await.expect("body");
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    body
}

/// Scrapes until `pred` holds for the exposition (at most `within`), and returns that exposition.
pub async fn wait_for(
    client: &reqwest::Client,
    app: &App,
    what: &str,
    within: Duration,
    pred: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = scrape(client, app).await;
        if pred(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}; last exposition:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// [`wait_for`] with the usual bound of 5 s.
pub async fn eventually(
    client: &reqwest::Client,
    app: &App,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> String {
    wait_for(client, app, what, Duration::from_secs(5), pred).await
}
