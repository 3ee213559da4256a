//! `dli_poll_failures_total{project_id,queue,reason}`: one increment per failed poll, under the
//! reason that ended it (a 5xx, an auth rejection, a request timeout, the whole-walk bound, a page
//! with more jobs than `size` asked for), seen both in the store after single polls and on the
//! running exporter's `/metrics`, and kept by a reload for the queues it keeps.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use dli_exporter::config::PollConfig;
use dli_exporter::dli::POLL_FAILURE_REASONS;
use dli_exporter::poll::scheduler::{self, PollContext};
use dli_exporter::sim::{Fault, FaultRule, SimConfig};
use dli_exporter::store::{QueueKey, SnapshotStore};

fn failures_series(queue: &str, reason: &str) -> String {
    format!("dli_poll_failures_total{{project_id=\"{PID}\",queue=\"{queue}\",reason=\"{reason}\"}}")
}

/// Polls `queue` `n` times in a row and returns the store's failure counts of the queue.
async fn failures_after(
    sim: &dli_exporter::sim::Simulator,
    queue: &str,
    poll: &PollConfig,
    n: usize,
) -> std::collections::BTreeMap<&'static str, u64> {
    let key = QueueKey::new(PID, queue);
    let store = Arc::new(SnapshotStore::new([key.clone()]));
    let ctx = PollContext::new(store.clone(), poll, 200);
    let cl = client(&project(sim, &[queue], aksk()), poll.request_timeout, 4);
    for _ in 0..n {
        let outcome = scheduler::poll_once(&cl, &key, &ctx, None).await;
        assert!(!outcome.success, "{queue}: the poll must fail");
    }
    let (_, status) = store.view().into_iter().next().expect("one queue");
    assert!(status.snapshot.is_none(), "{queue}: nothing published");
    status.failures
}

#[tokio::test]
async fn each_failed_poll_counts_once_under_its_reason() {
    let sim = sim(SimConfig::default()).await;
    for q in ["boom", "denied", "slow", "stuck", "fat"] {
        sim.set_jobs(PID, q, numbered_jobs(q, 500));
    }
    sim.add_fault(FaultRule::always(Fault::status(500, "DLI.0999", "boom")).queue("boom"));
    sim.add_fault(
        FaultRule::always(Fault::status(
            401,
            "APIGW.0301",
            "Incorrect IAM authentication",
        ))
        .queue("denied"),
    );
    // Every page slower than poll.request_timeout: the request times out.
    sim.add_fault(FaultRule::always(Fault::Latency(Duration::from_millis(300))).queue("slow"));
    // Every page faster than poll.request_timeout, but the walk needs more than one round of
    // pages, longer than poll.timeout: the whole-walk bound ends it.
    sim.add_fault(FaultRule::always(Fault::Latency(Duration::from_millis(200))).queue("stuck"));

    // A page with one job more than the size asked for: refused, the walk is inconsistent.
    sim.add_fault(
        FaultRule::always(Fault::ExtraJobs(1))
            .queue("fat")
            .from(100),
    );
    // Retries on: a 5xx poll sends several requests and still counts one failure.
    let poll = PollConfig {
        interval: Duration::from_secs(10),
        timeout: Duration::from_millis(300),
        request_timeout: Duration::from_millis(150),
        retries: 2,
        ..fast_poll()
    };
    let walk_bound = PollConfig {
        request_timeout: Duration::from_millis(900),
        retries: 0,
        ..poll.clone()
    };
    let cases = [
        ("boom", "http_5xx", &poll),
        ("denied", "auth", &poll),
        ("slow", "timeout", &poll),
        ("stuck", "timeout", &walk_bound),
        ("fat", "inconsistent", &walk_bound),
    ];
    for (queue, reason, poll) in cases {
        let before = sim.stats().list_batches_requests;
        let failures = failures_after(&sim, queue, poll, 3).await;
        assert_eq!(
            failures.get(reason),
            Some(&3),
            "{queue}: three failed polls under {reason}: {failures:?}"
        );
        assert_eq!(failures.len(), 1, "{queue}: no other reason: {failures:?}");
        let requests = sim.stats().list_batches_requests - before;
        println!("{queue}: 3 failed polls, {requests} requests, reason {reason}");
        if queue == "boom" {
            assert!(
                requests >= 6,
                "retried requests still count one failure per poll: {requests}"
            );
        }
    }
}

#[tokio::test]
async fn the_exporter_shows_failures_by_reason_from_zero() {
    let sim = sim(SimConfig::default()).await;
    for q in ["good", "boom", "denied"] {
        sim.set_jobs(PID, q, numbered_jobs(q, 120));
    }
    sim.add_fault(FaultRule::always(Fault::status(503, "DLI.0999", "down")).queue("boom"));
    sim.add_fault(
        FaultRule::always(Fault::status(403, "DLI.0013", "no permission")).queue("denied"),
    );
    let app = start(&settings(
        vec![project(&sim, &["good", "boom", "denied"], aksk())],
        fast_poll(),
    ))
    .await;
    let c = http();
    let t = eventually(&c, &app, "a failure of each failing queue", |t| {
        value(t, &failures_series("boom", "http_5xx")).is_some_and(|v| v >= 2.0)
            && value(t, &failures_series("denied", "auth")).is_some_and(|v| v >= 2.0)
            && value(t, &queue_series("dli_poll_success", "good")) == Some(1.0)
    })
    .await;
    assert!(t.contains("# TYPE dli_poll_failures_total counter"), "{t}");
    for queue in ["good", "boom", "denied"] {
        for reason in POLL_FAILURE_REASONS {
            let v = value(&t, &failures_series(queue, reason))
                .unwrap_or_else(|| panic!("{queue}/{reason} present from the start:\n{t}"));
            let failing = matches!((queue, reason), ("boom", "http_5xx") | ("denied", "auth"));
            if !failing {
                assert_eq!(v, 0.0, "{queue}/{reason}");
            }
        }
    }
    promtool_check(&t);
    shutdown(app).await;
}

#[tokio::test]
async fn a_reload_keeps_the_counts_of_queues_it_keeps() {
    let sim = sim(SimConfig::default()).await;
    for q in ["boom", "other"] {
        sim.set_jobs(PID, q, numbered_jobs(q, 20));
    }
    sim.add_fault(FaultRule::always(Fault::status(500, "DLI.0999", "boom")).queue("boom"));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, demo_config_toml(&sim, &["boom"])).expect("write");
    let env = dli_exporter::config::Env::new();
    let settings = dli_exporter::config::load(&path, &env).expect("valid config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let app =
        dli_exporter::app::App::start_reloadable(&settings, listener, Some((path.clone(), env)))
            .expect("starts");
    let c = http();
    let series = failures_series("boom", "http_5xx");
    let before = eventually(&c, &app, "two failures of boom", |t| {
        value(t, &series).is_some_and(|v| v >= 2.0)
    })
    .await;
    let counted = value(&before, &series).expect("counted");

    // A changed file that keeps boom: its count goes on; the new queue starts at 0.
    std::fs::write(&path, demo_config_toml(&sim, &["boom", "other"])).expect("write");
    app.reload().await.expect("reload");
    let after = scrape(&c, &app).await;
    assert!(
        value(&after, &series).is_some_and(|v| v >= counted),
        "kept across the reload: {counted} before\n{after}"
    );
    assert_eq!(
        value(&after, &failures_series("other", "http_5xx")),
        Some(0.0)
    );

    // Removed, then added again: a new queue, counted from 0.
    std::fs::write(&path, demo_config_toml(&sim, &["other"])).expect("write");
    app.reload().await.expect("reload");
    let removed = scrape(&c, &app).await;
    assert_eq!(value(&removed, &series), None, "{removed}");
    sim.clear_faults();
    std::fs::write(&path, demo_config_toml(&sim, &["boom", "other"])).expect("write");
    app.reload().await.expect("reload");
    let again = scrape(&c, &app).await;
    assert_eq!(value(&again, &series), Some(0.0), "{again}");
    shutdown(app).await;
}
