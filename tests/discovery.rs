//! Queue discovery and the queue metrics against the simulator over loopback: type and name
//! filters, queues added and removed between discoveries, a failing queue list keeping the last
//! set, exact `dli_queue_*` values and labels, their stale rule, and the listed queues that are
//! polled whatever the list says.

mod common;

use std::time::Duration;

use common::*;
use dli_exporter::config::{
    DiscoveryConfig, PollConfig, Project, QueueFilter, QueuePattern, Settings,
};
use dli_exporter::sim::{Fault, FaultRule, SimConfig, SimQueue, Simulator};
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(10);

fn patterns(sources: &[&str]) -> Vec<QueuePattern> {
    sources
        .iter()
        .map(|s| QueuePattern::new(s).expect("valid regex"))
        .collect()
}

/// A project that discovers (with `include`/`exclude`) and lists `listed` by name.
fn discovering(sim: &Simulator, listed: &[&str], include: &[&str], exclude: &[&str]) -> Project {
    Project {
        discover: Some(QueueFilter {
            include: patterns(include),
            exclude: patterns(exclude),
        }),
        ..project(sim, listed, aksk())
    }
}

/// Settings with a 200 ms queue list interval (tests only: the file's minimum is 1 s).
fn settings_with(projects: Vec<Project>, poll: PollConfig) -> Settings {
    let mut s = settings(projects, poll);
    s.discovery = DiscoveryConfig {
        interval: Duration::from_millis(200),
        ..DiscoveryConfig::default()
    };
    s
}

fn poll_success(queue: &str) -> String {
    format!("dli_poll_success{{project_id=\"{PID}\",queue=\"{queue}\"}}")
}

fn polled(text: &str, queue: &str) -> bool {
    value(text, &poll_success(queue)).is_some()
}

fn series(name: &str, queue: &str) -> String {
    format!("{name}{{project_id=\"{PID}\",queue=\"{queue}\"}}")
}

fn project_series(name: &str) -> String {
    format!("{name}{{project_id=\"{PID}\"}}")
}

async fn sim_with_queues(queues: Vec<SimQueue>) -> Simulator {
    let s = sim(SimConfig::default()).await;
    for q in &queues {
        s.set_jobs(PID, &q.queue_name, numbered_jobs(&q.queue_name, 3));
    }
    s.set_queue_list(PID, queues);
    s
}

#[tokio::test]
async fn discovery_keeps_the_configured_types_then_whole_name_regexes() {
    let s = sim_with_queues(vec![
        SimQueue::new("etl", "general"),
        SimQueue::new("etl_tmp", "general"),
        SimQueue::new("adhoc", "all"),
        SimQueue::new("tmp_x", "general"),
        SimQueue::new("xtmp_x", "general"),
        SimQueue::new("default", "sql"),
        SimQueue {
            queue_type: None,
            ..SimQueue::new("untyped", "general")
        },
    ])
    .await;
    s.set_jobs(PID, "listed_only", numbered_jobs("l", 2));
    let p = discovering(
        &s,
        &["listed_only"],
        &["etl.*", "adhoc", "tmp_.*", "default", "untyped"],
        &[".*_tmp"],
    );
    let app = start(&settings_with(vec![p], fast_poll())).await;
    let c = http();
    let text = wait_for(
        &c,
        &app,
        "the discovered and listed queues polled",
        WITHIN,
        |t| {
            ["etl", "adhoc", "tmp_x", "listed_only"]
                .iter()
                .all(|q| polled(t, q))
        },
    )
    .await;
    for q in ["etl_tmp", "xtmp_x", "default", "untyped"] {
        assert!(!polled(&text, q), "{q} must not be polled:\n{text}");
    }
    assert_eq!(
        value(&text, &project_series("dli_discovered_queues")),
        Some(3.0)
    );
    assert_eq!(
        value(&text, &project_series("dli_discovery_success")),
        Some(1.0)
    );
    // The listed queue is polled although the list does not show it: no queue metrics for it.
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("dli_queue_info{") && l.contains("queue=\"listed_only\"")),
        "{text}"
    );
    assert!(
        value(&text, &series("dli_queue_cu", "listed_only")).is_none(),
        "{text}"
    );
    assert!(
        value(&text, "dli_api_requests_total{operation=\"list_queues\"}").unwrap_or(0.0) >= 1.0
    );
    let queries = s.queue_list_queries();
    assert!(!queries.is_empty());
    assert!(
        queries.iter().all(|q| q == "queue_type=all"),
        "every queue list asks for every type: {queries:?}"
    );
    let ready = c
        .get(format!("http://{}/-/ready", app.addr))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 200);
    app.shutdown().await;
    s.shutdown();
}

#[tokio::test]
async fn queues_added_and_removed_between_discoveries_start_and_stop_polling() {
    let s = sim_with_queues(vec![
        SimQueue::new("etl", "general"),
        SimQueue::new("adhoc", "general"),
    ])
    .await;
    let app = start(&settings_with(
        vec![discovering(&s, &[], &[], &[])],
        fast_poll(),
    ))
    .await;
    let c = http();
    wait_for(
        &c,
        &app,
        "etl and adhoc polled with lifecycle series",
        WITHIN,
        |t| {
            polled(t, "etl")
                && polled(t, "adhoc")
                && value(t, &series("dli_batch_jobs_submitted_total", "adhoc")).is_some()
        },
    )
    .await;

    s.set_jobs(PID, "fresh", numbered_jobs("f", 4));
    s.add_queue(PID, SimQueue::new("fresh", "general"));
    assert!(s.remove_queue(PID, "adhoc"));
    let text = wait_for(&c, &app, "fresh polled, adhoc gone", WITHIN, |t| {
        polled(t, "fresh") && !polled(t, "adhoc")
    })
    .await;
    assert!(
        !text.contains("queue=\"adhoc\""),
        "every adhoc series is gone:\n{text}"
    );
    assert_eq!(
        value(
            &text,
            &format!("dli_batch_jobs{{project_id=\"{PID}\",queue=\"fresh\",state=\"running\"}}")
        ),
        Some(1.0),
        "{text}"
    );
    assert!(polled(&text, "etl"), "etl keeps being polled");
    assert_eq!(
        value(&text, &project_series("dli_discovered_queues")),
        Some(2.0)
    );
    app.shutdown().await;
    s.shutdown();
}

#[tokio::test]
async fn a_failing_queue_list_keeps_the_last_discovered_set_and_is_visible() {
    let s = sim_with_queues(vec![
        SimQueue::new("etl", "general"),
        SimQueue::new("adhoc", "general"),
    ])
    .await;
    let app = start(&settings_with(
        vec![discovering(&s, &[], &[], &[])],
        fast_poll(),
    ))
    .await;
    let c = http();
    wait_for(&c, &app, "both queues polled", WITHIN, |t| {
        polled(t, "etl") && polled(t, "adhoc")
    })
    .await;
    s.add_fault(FaultRule::always(Fault::status(500, "DLI.0999", "internal error")).queue_list());
    assert!(s.remove_queue(PID, "adhoc"));
    let failing = wait_for(&c, &app, "discovery failure visible", WITHIN, |t| {
        value(t, &project_series("dli_discovery_success")) == Some(0.0)
    })
    .await;
    assert!(
        value(
            &failing,
            "dli_api_request_failures_total{operation=\"list_queues\",reason=\"http_5xx\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{failing}"
    );
    // The last set stays: adhoc keeps being polled (its last success moves on).
    let last = value(
        &failing,
        &series("dli_last_successful_poll_timestamp_seconds", "adhoc"),
    )
    .expect("adhoc polled");
    let later = wait_for(
        &c,
        &app,
        "adhoc polled again while discovery fails",
        WITHIN,
        |t| {
            value(
                t,
                &series("dli_last_successful_poll_timestamp_seconds", "adhoc"),
            )
            .is_some_and(|v| v > last)
        },
    )
    .await;
    assert_eq!(
        value(&later, &project_series("dli_discovery_success")),
        Some(0.0)
    );
    assert_eq!(
        value(&later, &project_series("dli_discovered_queues")),
        Some(2.0)
    );

    s.clear_faults();
    let text = wait_for(&c, &app, "the recovered list removes adhoc", WITHIN, |t| {
        value(t, &project_series("dli_discovery_success")) == Some(1.0) && !polled(t, "adhoc")
    })
    .await;
    assert!(polled(&text, "etl"));
    app.shutdown().await;
    s.shutdown();
}

#[tokio::test]
async fn a_failed_first_discovery_polls_the_listed_queues_until_one_succeeds() {
    let s = sim_with_queues(vec![
        SimQueue::new("etl", "general"),
        SimQueue::new("adhoc", "general"),
    ])
    .await;
    s.add_fault(FaultRule::always(Fault::Throttle { retry_after: None }).queue_list());
    let mut settings = settings_with(vec![discovering(&s, &["etl"], &[], &[])], fast_poll());
    // Discovery would wait 10 minutes; the retry before a first success follows poll.interval.
    settings.discovery.interval = Duration::from_secs(600);
    let app = start(&settings).await;
    let c = http();
    let text = wait_for(
        &c,
        &app,
        "etl polled after the failed discovery",
        WITHIN,
        |t| polled(t, "etl"),
    )
    .await;
    assert!(!polled(&text, "adhoc"), "{text}");
    assert_eq!(
        value(&text, &project_series("dli_discovery_success")),
        Some(0.0)
    );
    assert_eq!(
        value(&text, &project_series("dli_discovered_queues")),
        Some(0.0)
    );
    s.clear_faults();
    wait_for(&c, &app, "adhoc discovered by a retry", WITHIN, |t| {
        polled(t, "adhoc")
    })
    .await;
    app.shutdown().await;
    s.shutdown();
}

#[tokio::test]
async fn queue_metrics_carry_exact_values_and_labels_and_missing_fields_stay_absent() {
    let s = sim_with_queues(vec![
        SimQueue {
            cu_count: Some(64),
            used_cu: Some(12.5),
            cu_scale_out_limit: Some(128),
            cu_scale_in_limit: Some(32),
            resource_mode: Some(1),
            charging_mode: Some(2),
            elastic_resource_pool_name: Some("pool1".into()),
            ..SimQueue::new("etl", "general")
        },
        SimQueue::new("adhoc", "all"),
        SimQueue::new("default", "sql"),
    ])
    .await;
    // adhoc: a wrongly typed cu_count, no used_cu, and an unknown field.
    assert!(s.set_queue_field(PID, "adhoc", "cu_count", json!(true)));
    assert!(s.set_queue_field(PID, "adhoc", "used_cu", serde_json::Value::Null));
    assert!(s.set_queue_field(PID, "adhoc", "brand_new_field", json!({"x": [1]})));
    s.set_jobs(PID, "ghost", numbered_jobs("g", 1));
    let app = start(&settings_with(
        vec![discovering(&s, &["ghost"], &[], &[])],
        fast_poll(),
    ))
    .await;
    let c = http();
    let text = wait_for(&c, &app, "queue metrics", WITHIN, |t| {
        t.contains("dli_queue_info{") && polled(t, "ghost") && polled(t, "adhoc")
    })
    .await;
    promtool_check(&text);
    let info = |q: &str| {
        text.lines()
            .filter(|l| l.starts_with("dli_queue_info{") && l.contains(&format!("queue=\"{q}\"")))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        info("etl"),
        vec![format!(
            "dli_queue_info{{charging_mode=\"2\",elastic_resource_pool=\"pool1\",project_id=\"{PID}\",queue=\"etl\",queue_type=\"general\",resource_mode=\"dedicated\"}} 1"
        )]
    );
    assert_eq!(
        info("adhoc"),
        vec![format!(
            "dli_queue_info{{charging_mode=\"1\",elastic_resource_pool=\"\",project_id=\"{PID}\",queue=\"adhoc\",queue_type=\"all\",resource_mode=\"shared\"}} 1"
        )]
    );
    assert!(
        info("ghost").is_empty(),
        "a listed queue the list does not show"
    );
    assert!(info("default").is_empty(), "the sql queue is not polled");
    assert_eq!(value(&text, &series("dli_queue_cu", "etl")), Some(64.0));
    assert_eq!(
        value(&text, &series("dli_queue_cu_used", "etl")),
        Some(12.5)
    );
    assert_eq!(
        value(&text, &series("dli_queue_cu_scale_out_limit", "etl")),
        Some(128.0)
    );
    assert_eq!(
        value(&text, &series("dli_queue_cu_scale_in_limit", "etl")),
        Some(32.0)
    );
    for name in [
        "dli_queue_cu",
        "dli_queue_cu_used",
        "dli_queue_cu_scale_out_limit",
        "dli_queue_cu_scale_in_limit",
    ] {
        assert_eq!(
            value(&text, &series(name, "adhoc")),
            None,
            "{name}: absent, never 0"
        );
        assert_eq!(value(&text, &series(name, "ghost")), None);
    }
    // Values follow the list at the next discovery.
    assert!(s.set_queue_field(PID, "etl", "used_cu", json!(40)));
    wait_for(&c, &app, "used_cu refreshed", WITHIN, |t| {
        value(t, &series("dli_queue_cu_used", "etl")) == Some(40.0)
    })
    .await;
    app.shutdown().await;
    s.shutdown();
}

#[tokio::test]
async fn queue_metrics_of_listed_queues_go_stale_while_polling_goes_on() {
    let s = sim_with_queues(vec![SimQueue::new("etl", "general")]).await;
    let poll = PollConfig {
        stale_after: Duration::from_millis(800),
        ..fast_poll()
    };
    // An explicit-only project: the list is fetched for the queue metrics alone.
    let app = start(&settings_with(vec![project(&s, &["etl"], aksk())], poll)).await;
    let c = http();
    let text = wait_for(&c, &app, "queue metrics", WITHIN, |t| {
        value(t, &series("dli_queue_cu", "etl")) == Some(16.0)
    })
    .await;
    assert_eq!(
        value(&text, &project_series("dli_discovery_success")),
        Some(1.0)
    );
    assert_eq!(
        value(&text, &project_series("dli_discovered_queues")),
        None,
        "a project that does not discover has no discovered count"
    );
    s.add_fault(FaultRule::always(Fault::status(503, "DLI.0999", "busy")).queue_list());
    let failed_at = std::time::Instant::now();
    let text = wait_for(&c, &app, "queue metrics dropped as stale", WITHIN, |t| {
        !t.contains("dli_queue_info{") && value(t, &series("dli_queue_cu", "etl")).is_none()
    })
    .await;
    assert!(
        failed_at.elapsed() >= Duration::from_millis(500),
        "not dropped at the first failure"
    );
    assert_eq!(
        value(&text, &project_series("dli_discovery_success")),
        Some(0.0)
    );
    assert_eq!(
        value(&text, &poll_success("etl")),
        Some(1.0),
        "polling goes on"
    );
    assert!(
        value(
            &text,
            &format!("dli_batch_jobs{{project_id=\"{PID}\",queue=\"etl\",state=\"running\"}}")
        )
        .is_some(),
        "the job series are fresh"
    );
    s.clear_faults();
    wait_for(&c, &app, "queue metrics back", WITHIN, |t| {
        value(t, &series("dli_queue_cu", "etl")) == Some(16.0)
    })
    .await;
    app.shutdown().await;
    s.shutdown();
}

#[tokio::test]
async fn readiness_waits_for_the_first_discovery() {
    let s = sim_with_queues(vec![SimQueue::new("etl", "general")]).await;
    s.add_fault(FaultRule::once(Fault::Latency(Duration::from_millis(1500))).queue_list());
    let app = start(&settings_with(
        vec![discovering(&s, &[], &[], &[])],
        fast_poll(),
    ))
    .await;
    let c = http();
    let ready = c
        .get(format!("http://{}/-/ready", app.addr))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 503);
    let body = ready.text().await.expect("body");
    assert!(body.contains("discovery"), "{body}");
    wait_for(&c, &app, "etl polled", WITHIN, |t| polled(t, "etl")).await;
    let ready = c
        .get(format!("http://{}/-/ready", app.addr))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 200);
    app.shutdown().await;
    s.shutdown();
}
