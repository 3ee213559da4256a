//! The daemon over real loopback HTTP: `App::start` against the simulator, scraped with reqwest.
//! Covers the exposition (golden text), failure isolation between queues, staleness, `dli_up`,
//! readiness, gzip, routing and shutdown (docs/architecture.md: "Metrics", "HTTP endpoints",
//! "Failures, retries and hold-off").

mod common;

use std::io::Read;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use dli_exporter::app::App;
use dli_exporter::config::PollConfig;
use dli_exporter::sim::{Fault, FaultRule, SimConfig, SimJob, Simulator};
use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

fn poll_success(queue: &str) -> String {
    queue_series("dli_poll_success", queue)
}

/// The job gauges: what a queue's last good snapshot shows, dropped when it goes stale. (The
/// lifecycle counters `dli_batch_jobs_finished_total` etc. are not snapshots and stay.)
const JOB_GAUGES: [&str; 3] = [
    "dli_batch_jobs",
    "dli_batch_jobs_by_owner",
    "dli_batch_oldest_job_created_timestamp_seconds",
];

/// The metric family a sample, HELP or TYPE line belongs to.
fn family(line: &str) -> &str {
    let rest = line
        .strip_prefix("# HELP ")
        .or_else(|| line.strip_prefix("# TYPE "))
        .unwrap_or(line);
    let end = rest.find(['{', ' ']).unwrap_or(rest.len());
    &rest[..end]
}

fn is_job_gauge_line(line: &str) -> bool {
    JOB_GAUGES.contains(&family(line))
}

fn has_job_series(text: &str, queue: &str) -> bool {
    let needle = format!("queue=\"{queue}\"");
    text.lines()
        .any(|l| !l.starts_with('#') && is_job_gauge_line(l) && l.contains(&needle))
}

/// Lines of the job gauge families (samples and their HELP/TYPE), in exposition order.
fn job_family_lines(text: &str) -> String {
    text.lines()
        .filter(|l| is_job_gauge_line(l))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The job gauge samples of `queue`, in exposition order.
fn job_lines(text: &str, queue: &str) -> Vec<String> {
    let needle = format!("queue=\"{queue}\"");
    text.lines()
        .filter(|l| is_job_gauge_line(l) && l.contains(&needle))
        .map(str::to_string)
        .collect()
}

/// The `content-type` header of an answer, if it is there and ASCII.
fn content_type(headers: &reqwest::header::HeaderMap) -> Option<&str> {
    headers.get("content-type").and_then(|v| v.to_str().ok())
}

/// Starts the exporter on `queues` of `sim` with `poll`, and a client for it.
async fn serve(sim: &Simulator, queues: &[&str], poll: PollConfig) -> (App, reqwest::Client) {
    let settings = settings(vec![project(sim, queues, aksk())], poll);
    (start(&settings).await, http())
}

/// A poll schedule relaxed enough for a loaded 2-core machine, still well below a second.
fn quick_poll() -> PollConfig {
    PollConfig {
        interval: Duration::from_millis(400),
        timeout: Duration::from_millis(350),
        request_timeout: Duration::from_millis(300),
        ..fast_poll()
    }
}

fn job(id: &str, state: &str, owner: Option<&str>, ago_ms: i64) -> SimJob {
    SimJob::new(id, state, owner, T0_MS - ago_ms)
}

const WEIRD_OWNER: &str = "we\"ird\\owner\nline";

/// Queue `alpha`: five owners (with `max_owners_per_queue = 2`), unknown owners in all three
/// shapes, a capitalised known state and an unknown state. Queue `beta`: only running jobs,
/// owners whose names need escaping.
fn golden_jobs(sim: &Simulator) {
    let mut null_owner = job("a06", "dead", None, 400_000);
    null_owner
        .extra
        .insert("owner".into(), serde_json::Value::Null);
    sim.set_jobs(
        PID,
        "alpha",
        vec![
            job("a01", "starting", Some("carol"), 0),
            job("a02", "running", Some("carol"), 60_000),
            job("a03", "Running", Some("carol"), 120_500),
            job("a04", "success", Some("carol"), 300_000),
            job("a05", "running", None, 10_000),
            null_owner,
            job("a07", "recovering", Some(""), 30_250),
            job("a08", "running", Some("dave"), 5_000),
            job("a09", "killed", Some("dave"), 500_000),
            job("a10", "success", Some("dave"), 600_000),
            job("a11", "starting", Some("bob"), 2_000),
            job("a12", "dead", Some("bob"), 700_000),
            job("a13", "KILLED", Some("alice"), 800_000),
        ],
    );
    sim.set_jobs(
        PID,
        "beta",
        vec![
            job("b1", "running", Some("张三"), 1_000),
            job("b2", "running", Some("张三"), 3_600_000),
            job("b3", "running", Some(WEIRD_OWNER), 42),
        ],
    );
}

/// Worked out by hand from `golden_jobs`:
/// - alpha owners by job count: carol 4, `__unknown__` 3 (missing, null, ""), dave 3, bob 2,
///   alice 1. The top two are carol and `__unknown__` (tie with dave broken by name, '_' < 'd');
///   dave, bob and alice are summed into `__other__`.
/// - "Running" counts as running, "killed" and "KILLED" as the unknown state killed.
/// - oldest: alpha starting a11 (T0-2 s), running a03 (T0-120.5 s), recovering a07
///   (T0-30.25 s); beta running b2 (T0-1 h); beta has no starting/recovering job, so none.
/// - series are sorted by label values (the owner label comes first in by_owner).
const GOLDEN: &str = r#"# HELP dli_batch_jobs Batch jobs listed by DLI in each state, as of the last successful poll of the queue.
# TYPE dli_batch_jobs gauge
dli_batch_jobs{project_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9",queue="alpha",state="dead"} 2
dli_batch_jobs{project_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9",queue="alpha",state="killed"} 2
dli_batch_jobs{project_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9",queue="alpha",state="recovering"} 1
dli_batch_jobs{project_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9",queue="alpha",state="running"} 4
dli_batch_jobs{project_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9",queue="alpha",state="starting"} 2
dli_batch_jobs{project_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9",queue="alpha",state="success"} 2
dli_batch_jobs{project_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9",queue="beta",state="dead"} 0
dli_batch_jobs{project_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9",queue="beta",state="recovering"} 0
dli_batch_jobs{project_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9",queue="beta",state="running"} 3
dli_batch_jobs{project_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9",queue="beta",state="starting"} 0
dli_batch_jobs{project_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9",queue="beta",state="success"} 0
# HELP dli_batch_jobs_by_owner Batch jobs per state and owner, as of the last successful poll of the queue; owners beyond metrics.max_owners_per_queue are summed into owner="__other__", a missing owner is "__unknown__".
# TYPE dli_batch_jobs_by_owner gauge
dli_batch_jobs_by_owner{owner="__other__",project_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9",queue="alpha",state="dead"} 1
dli_batch_jobs_by_owner{owner="__other__",project_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9",queue="alpha",state="killed"} 2
dli_batch_jobs_by_owner{owner="__other__",project_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9",queue="alpha",state="running"} 1
dli_batch_jobs_by_owner{owner="__other__",project_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9",queue="alpha",state="starting"} 1
dli_batch_jobs_by_owner{owner="__other__",project_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9",queue="alpha",state="success"} 1
dli_batch_jobs_by_owner{owner="__unknown__",project_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9",queue="alpha",state="dead"} 1
dli_batch_jobs_by_owner{owner="__unknown__",project_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9",queue="alpha",state="recovering"} 1
dli_batch_jobs_by_owner{owner="__unknown__",project_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9",queue="alpha",state="running"} 1
dli_batch_jobs_by_owner{owner="carol",project_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9",queue="alpha",state="running"} 2
dli_batch_jobs_by_owner{owner="carol",project_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9",queue="alpha",state="starting"} 1
dli_batch_jobs_by_owner{owner="carol",project_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9",queue="alpha",state="success"} 1
dli_batch_jobs_by_owner{owner="we\"ird\\owner\nline",project_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9",queue="beta",state="running"} 1
dli_batch_jobs_by_owner{owner="张三",project_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9",queue="beta",state="running"} 2
# HELP dli_batch_oldest_job_created_timestamp_seconds Creation time (unix seconds) of the oldest job in each active state (starting, running, recovering), as of the last successful poll of the queue.
# TYPE dli_batch_oldest_job_created_timestamp_seconds gauge
dli_batch_oldest_job_created_timestamp_seconds{project_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9",queue="alpha",state="recovering"} 1736929769.75
dli_batch_oldest_job_created_timestamp_seconds{project_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9",queue="alpha",state="running"} 1736929679.5
dli_batch_oldest_job_created_timestamp_seconds{project_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9",queue="alpha",state="starting"} 1736929798
dli_batch_oldest_job_created_timestamp_seconds{project_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9",queue="beta",state="running"} 1736926200
"#;

#[tokio::test]
async fn golden_exposition_of_job_metrics() {
    let sim = sim(SimConfig::default()).await;
    golden_jobs(&sim);
    let mut settings = settings(
        vec![project(&sim, &["alpha", "beta"], aksk())],
        quick_poll(),
    );
    settings.metrics.max_owners_per_queue = 2;
    let app = start(&settings).await;
    let client = http();
    wait_ready(&client, &app).await;
    // Readiness means one attempt per queue; a loaded machine may need a second for success.
    let text = eventually(&client, &app, "both queues polled successfully", |t| {
        value(t, &poll_success("alpha")) == Some(1.0)
            && value(t, &poll_success("beta")) == Some(1.0)
    })
    .await;
    let got = job_family_lines(&text);
    assert_eq!(
        got, GOLDEN,
        "job families differ from the golden text; whole exposition:\n{text}"
    );
    assert_eq!(value(&text, "dli_up"), Some(1.0));
    assert_eq!(
        value(&text, &queue_series("dli_poll_pages", "alpha")),
        Some(3.0),
        "one full page, the empty page after it, and the closing check of the first page"
    );
    promtool_check(&text);
    shutdown(app).await;
}

fn two_queue_jobs(sim: &Simulator) {
    sim.set_jobs(
        PID,
        "good",
        vec![
            job("g1", "running", Some("alice"), 1_000),
            job("g2", "running", Some("bob"), 2_000),
            job("g3", "success", Some("alice"), 3_000),
        ],
    );
    sim.set_jobs(
        PID,
        "bad",
        vec![
            job("x1", "starting", Some("carol"), 1_000),
            job("x2", "dead", Some("carol"), 2_000),
            job("x3", "dead", None, 3_000),
        ],
    );
}

fn both_succeeded(t: &str) -> bool {
    value(t, &poll_success("good")) == Some(1.0) && value(t, &poll_success("bad")) == Some(1.0)
}

fn bad_failed(t: &str) -> bool {
    value(t, &poll_success("bad")) == Some(0.0)
}

#[tokio::test]
async fn failing_queue_keeps_last_values_while_another_updates() {
    let sim = sim(SimConfig::default()).await;
    two_queue_jobs(&sim);
    let (app, client) = serve(&sim, &["good", "bad"], quick_poll()).await;
    wait_ready(&client, &app).await;
    let before = eventually(&client, &app, "both queues succeeded", both_succeeded).await;
    let bad_before = job_lines(&before, "bad");
    assert_eq!(
        value(&before, &jobs_series("bad", "dead")),
        Some(2.0),
        "{before}"
    );

    sim.add_fault(FaultRule::always(Fault::status(500, "DLI.0999", "boom")).queue("bad"));
    let failed = eventually(&client, &app, "the bad queue's poll to fail", bad_failed).await;
    let bad_after = job_lines(&failed, "bad");
    assert_eq!(
        bad_after, bad_before,
        "a failed poll must keep the last good values"
    );
    assert_eq!(value(&failed, &poll_success("good")), Some(1.0), "{failed}");
    assert_eq!(value(&failed, "dli_up"), Some(1.0), "{failed}");
    assert_eq!(
        value(&failed, &jobs_series("good", "running")),
        Some(2.0),
        "{failed}"
    );

    // The healthy queue keeps moving: g1 finishes.
    assert!(sim.update_job(PID, "good", "g1", |j| j.state = "success".into()));
    let moved = eventually(
        &client,
        &app,
        "the good queue to show the finished job",
        |t| value(t, &jobs_series("good", "success")) == Some(2.0),
    )
    .await;
    assert_eq!(
        value(&moved, &jobs_series("good", "running")),
        Some(1.0),
        "{moved}"
    );
    assert!(bad_failed(&moved), "{moved}");
    let bad_still = job_lines(&moved, "bad");
    assert_eq!(
        bad_still, bad_before,
        "the failing queue still shows its last good values"
    );
    assert_eq!(value(&moved, &poll_success("good")), Some(1.0));
    assert_eq!(value(&moved, "dli_up"), Some(1.0));
    // 500 is http_5xx for the failure counter.
    assert!(
        value(
            &moved,
            "dli_api_request_failures_total{operation=\"list_batches\",reason=\"http_5xx\"}"
        )
        .is_some_and(|v| v >= 1.0),
        "{moved}"
    );
    shutdown(app).await;
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

#[tokio::test]
async fn failing_queue_job_series_go_stale_but_poll_metrics_stay() {
    let sim = sim(SimConfig::default()).await;
    two_queue_jobs(&sim);
    let stale_after = Duration::from_millis(800);
    let poll = PollConfig {
        interval: Duration::from_millis(300),
        timeout: Duration::from_millis(250),
        request_timeout: Duration::from_millis(200),
        stale_after,
        ..fast_poll()
    };
    let (app, client) = serve(&sim, &["good", "bad"], poll).await;
    wait_ready(&client, &app).await;
    eventually(&client, &app, "both queues succeeded", both_succeeded).await;

    sim.add_fault(FaultRule::always(Fault::status(500, "DLI.0999", "boom")).queue("bad"));
    eventually(&client, &app, "the bad queue's poll to fail", bad_failed).await;
    let gone = eventually(
        &client,
        &app,
        "the bad queue's job series to go stale",
        |t| !has_job_series(t, "bad"),
    )
    .await;
    let observed_at = unix_now();
    let last_success = value(
        &gone,
        &queue_series("dli_last_successful_poll_timestamp_seconds", "bad"),
    )
    .expect("last successful poll timestamp stays");
    assert!(
        observed_at - last_success >= stale_after.as_secs_f64() - 0.05,
        "series dropped only {:.3} s after the last success (stale_after {stale_after:?})",
        observed_at - last_success
    );
    assert_eq!(value(&gone, &poll_success("bad")), Some(0.0), "{gone}");
    assert!(
        value(&gone, &queue_series("dli_poll_duration_seconds", "bad")).is_some(),
        "{gone}"
    );
    assert!(
        value(&gone, &queue_series("dli_poll_pages", "bad")).is_some(),
        "{gone}"
    );
    // The healthy queue is polled every 300 ms, so it never goes stale.
    assert!(has_job_series(&gone, "good"), "{gone}");
    assert_eq!(
        value(&gone, &jobs_series("good", "running")),
        Some(2.0),
        "{gone}"
    );
    assert_eq!(value(&gone, "dli_up"), Some(1.0), "{gone}");

    // Once the queue recovers its series come back.
    sim.clear_faults();
    let back = eventually(&client, &app, "the bad queue to recover", |t| {
        has_job_series(t, "bad")
    })
    .await;
    assert_eq!(
        value(&back, &jobs_series("bad", "dead")),
        Some(2.0),
        "{back}"
    );
    shutdown(app).await;
}

#[tokio::test]
async fn up_is_zero_when_every_queue_fails() {
    let sim = sim(SimConfig::default()).await;
    two_queue_jobs(&sim);
    sim.add_fault(FaultRule::always(Fault::status(500, "DLI.0999", "boom")));
    let (app, client) = serve(&sim, &["good", "bad"], quick_poll()).await;
    wait_ready(&client, &app).await;
    let text = scrape(&client, &app).await;
    assert_eq!(value(&text, "dli_up"), Some(0.0), "{text}");
    for q in ["good", "bad"] {
        assert_eq!(value(&text, &poll_success(q)), Some(0.0), "{text}");
        assert!(
            value(&text, &queue_series("dli_poll_duration_seconds", q)).is_some(),
            "{text}"
        );
        assert!(
            value(&text, &queue_series("dli_poll_pages", q)).is_some(),
            "{text}"
        );
        assert!(
            value(
                &text,
                &queue_series("dli_last_successful_poll_timestamp_seconds", q)
            )
            .is_none(),
            "never succeeded: no last-success timestamp\n{text}"
        );
    }
    assert!(
        !text.contains("dli_batch_jobs{"),
        "never polled successfully: no job series\n{text}"
    );
    promtool_check(&text);
    shutdown(app).await;
}

#[tokio::test]
async fn ready_only_after_the_first_poll_attempt() {
    let sim = sim(SimConfig::default()).await;
    two_queue_jobs(&sim);
    sim.add_fault(FaultRule::always(Fault::Latency(Duration::from_millis(
        500,
    ))));
    let poll = PollConfig {
        interval: Duration::from_secs(3),
        timeout: Duration::from_millis(2500),
        request_timeout: Duration::from_secs(1),
        ..fast_poll()
    };
    let settings = settings(vec![project(&sim, &["good", "bad"], aksk())], poll);
    let started = Instant::now();
    let app = start(&settings).await;
    let client = http();
    // The server listens before the first poll: it answers at once, healthy but not ready.
    let (status, body) = get(&client, &url(&app, "/-/healthy")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = get(&client, &url(&app, "/-/ready")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let text = scrape(&client, &app).await;
    assert_eq!(value(&text, "dli_up"), Some(0.0), "{text}");
    assert!(
        !text.contains("dli_poll_success{"),
        "no poll metrics before the first attempt\n{text}"
    );

    wait_ready(&client, &app).await;
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "ready after {:?}, before the first (500 ms) request could finish",
        started.elapsed()
    );
    let text = scrape(&client, &app).await;
    for q in ["good", "bad"] {
        assert_eq!(value(&text, &poll_success(q)), Some(1.0), "{text}");
    }
    assert_eq!(value(&text, "dli_up"), Some(1.0), "{text}");
    shutdown(app).await;
}

#[tokio::test]
async fn gzip_when_asked_plain_text_otherwise() {
    let sim = sim(SimConfig::default()).await;
    two_queue_jobs(&sim);
    let (app, client) = serve(&sim, &["good", "bad"], quick_poll()).await;
    wait_ready(&client, &app).await;
    let metrics = url(&app, "/metrics");

    let r = client
        .get(&metrics)
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .expect("gzip scrape");
    assert_eq!(r.status(), StatusCode::OK);
    let headers = r.headers().clone();
    assert_eq!(
        headers.get("content-encoding").map(|v| v.to_str().unwrap()),
        Some("gzip")
    );
    assert_eq!(content_type(&headers), Some(TEXT_FORMAT));
    let compressed = r.bytes().await.expect("body");
    assert_eq!(&compressed[..2], &[0x1f, 0x8b], "gzip magic");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut text)
        .expect("body gunzips to UTF-8");
    assert_valid_exposition(&text);
    assert!(text.contains(&jobs_series("good", "running")), "{text}");
    promtool_check(&text);

    for accept in [None, Some("identity"), Some("gzip;q=0"), Some("br")] {
        let mut req = client.get(&metrics);
        if let Some(a) = accept {
            req = req.header("Accept-Encoding", a);
        }
        let r = req.send().await.expect("plain scrape");
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            r.headers().get("content-encoding").is_none(),
            "Accept-Encoding {accept:?}: {:?}",
            r.headers()
        );
        assert_eq!(
            content_type(r.headers()),
            Some(TEXT_FORMAT),
            "Accept-Encoding {accept:?}"
        );
        let text = r.text().await.expect("body");
        assert_valid_exposition(&text);
    }
    shutdown(app).await;
}

/// A light structural check of the text format: HELP/TYPE comments, `name{labels} value` lines.
fn assert_valid_exposition(text: &str) {
    assert!(text.ends_with('\n'), "exposition ends with a newline");
    assert!(text.contains("# TYPE dli_up gauge\n"), "{text}");
    assert!(
        text.contains("# TYPE dli_exporter_build_info gauge\n"),
        "{text}"
    );
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        assert!(
            !line.is_empty() && !line.starts_with('#'),
            "unexpected line {line:?}"
        );
        let (series, v) = line.rsplit_once(' ').expect("sample line has a value");
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        assert!(
            name_end == series.len() || series.ends_with('}'),
            "bad labels in {line:?}"
        );
        assert!(
            v.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&v),
            "bad value in {line:?}"
        );
    }
}

#[tokio::test]
async fn routing_methods_and_landing_page() {
    let sim = sim(SimConfig::default()).await;
    two_queue_jobs(&sim);
    let (app, client) = serve(&sim, &["good"], quick_poll()).await;
    wait_ready(&client, &app).await;

    for path in ["/nope", "/metrics/", "/metricsx", "/-/", "/-/reloadx"] {
        let (status, _) = get(&client, &url(&app, path)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "GET {path}");
    }
    for path in ["/metrics", "/-/healthy", "/-/ready", "/"] {
        for method in [
            reqwest::Method::POST,
            reqwest::Method::PUT,
            reqwest::Method::DELETE,
        ] {
            let allow = assert_method_not_allowed(&client, method.clone(), &url(&app, path)).await;
            assert!(allow.contains("GET"), "{method} {path}: Allow {allow:?}");
        }
    }

    let r = client
        .head(url(&app, "/metrics"))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(content_type(r.headers()), Some(TEXT_FORMAT));
    assert!(
        r.bytes().await.expect("body").is_empty(),
        "HEAD has no body"
    );

    let (status, body) = get(&client, &url(&app, "/-/healthy")).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let r = client
        .get(url(&app, "/"))
        .send()
        .await
        .expect("landing page");
    assert_eq!(r.status(), StatusCode::OK);
    let ct = content_type(r.headers())
        .expect("the landing page has a content-type")
        .to_string();
    assert!(ct.starts_with("text/html"), "{ct}");
    let page = r.text().await.expect("body");
    assert!(page.contains("href=\"/metrics\""), "{page}");
    assert!(
        page.contains(env!("CARGO_PKG_VERSION")),
        "landing page shows the version\n{page}"
    );
    shutdown(app).await;
}

#[tokio::test]
async fn custom_telemetry_path() {
    let sim = sim(SimConfig::default()).await;
    two_queue_jobs(&sim);
    let mut settings = settings(vec![project(&sim, &["good"], aksk())], quick_poll());
    settings.web.telemetry_path = "/custom".into();
    let app = start(&settings).await;
    let client = http();
    wait_ready(&client, &app).await;
    let (status, text) = get(&client, &url(&app, "/custom")).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains(&jobs_series("good", "running")), "{text}");
    let (status, _) = get(&client, &url(&app, "/metrics")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "/metrics is not served with a custom path"
    );
    assert_method_not_allowed(&client, reqwest::Method::POST, &url(&app, "/custom")).await;
    let (status, page) = get(&client, &url(&app, "/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("href=\"/custom\""), "{page}");
    shutdown(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_prompt_with_scrapes_and_polls_in_flight() {
    let sim = sim(SimConfig::default()).await;
    two_queue_jobs(&sim);
    // Every poll of "bad" hangs inside a request that would only time out after 3 s.
    sim.add_fault(FaultRule::always(Fault::Hang).queue("bad"));
    let poll = PollConfig {
        interval: Duration::from_secs(5),
        timeout: Duration::from_secs(4),
        request_timeout: Duration::from_secs(3),
        ..fast_poll()
    };
    let (app, client) = serve(&sim, &["good", "bad"], poll).await;
    eventually(&client, &app, "the good queue's first poll", |t| {
        value(t, &poll_success("good")) == Some(1.0)
    })
    .await;
    wait_until_hanging(&sim, "bad").await;
    let metrics = url(&app, "/metrics");

    // A client that keeps scraping across the shutdown.
    let scraper = {
        let client = client.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut ok = 0u32;
            loop {
                match client.get(&metrics).send().await {
                    Ok(r) => {
                        assert_eq!(r.status(), StatusCode::OK);
                        // A response that started must arrive whole.
                        let body = r.text().await.expect("a started response is not cut off");
                        assert!(body.contains("dli_up "), "{body}");
                        ok += 1;
                    }
                    Err(_) => return ok,
                }
            }
        })
    };
    // An idle keep-alive connection, and a connected client that has sent nothing yet.
    let idle_client = http();
    let (status, _) = get(&idle_client, &metrics).await;
    assert_eq!(status, StatusCode::OK);
    let silent = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (ready, _) = get(&idle_client, &url(&app, "/-/ready")).await;
    assert_eq!(
        ready,
        StatusCode::SERVICE_UNAVAILABLE,
        "the bad queue's first poll is still hanging"
    );

    let addr = app.addr;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(3), app.shutdown())
        .await
        .unwrap_or_else(|_| panic!("shutdown still running after 3 s"));
    let took = started.elapsed();
    let scrapes = tokio::time::timeout(Duration::from_secs(5), scraper)
        .await
        .expect("scraper ends after shutdown")
        .expect("scraper did not panic");
    assert!(scrapes > 0, "the scraper got answers before the shutdown");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed after shutdown"
    );
    eprintln!("shutdown took {took:?} with {scrapes} scrapes served");
    drop(silent);
}

/// A client stuck in the middle of its request head holds the graceful shutdown at most for
/// the server's grace period (5 s), never until its own timeouts.
#[tokio::test]
async fn shutdown_is_bounded_with_a_stalled_request() {
    let sim = sim(SimConfig::default()).await;
    two_queue_jobs(&sim);
    let (app, client) = serve(&sim, &["good"], quick_poll()).await;
    wait_ready(&client, &app).await;
    let mut half = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write half a request");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(7), app.shutdown())
        .await
        .unwrap_or_else(|_| panic!("shutdown still running after 7 s"));
    eprintln!(
        "shutdown with a stalled request took {:?}",
        started.elapsed()
    );
    // Nothing is served after shutdown returned: finishing the request head gets no answer,
    // the connection is closed.
    use tokio::io::AsyncReadExt;
    let _ = half.write_all(b"\r\n").await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), half.read_to_end(&mut buf))
        .await
        .expect("the stalled connection is closed, not left open");
    assert!(
        buf.is_empty(),
        "served after shutdown ({read:?}): {}",
        String::from_utf8_lossy(&buf)
    );
}
