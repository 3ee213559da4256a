//! Faults, with the simulator's fault rules and sub-second intervals: DLI down for whole
//! intervals then back, every page slow (walk finishes, or times out cleanly), one queue failing
//! forever beside fresh ones, and 429 storms, where the client-side hold-off must bring the
//! request rate down. Run with `--nocapture` to see the numbers RELIABILITY.md quotes.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use dli_exporter::config::PollConfig;
use dli_exporter::dli::{ClientOptions, DliClient, NoopObserver, ThrottlePolicy};
use dli_exporter::poll::scheduler::{self, Clients, PollContext, PollOutcome, Trackers};
use dli_exporter::sim::{Fault, FaultRule, SimConfig, Simulator};
use dli_exporter::store::{QueueKey, SnapshotStore};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn dli_down_for_whole_intervals_keeps_last_values_then_recovers() {
    let sim = sim(SimConfig::default()).await;
    sim.set_jobs(PID, "etl", numbered_jobs("a", 150));
    let poll = fast_poll(); // interval 300 ms
    let app = start(&settings(
        vec![project(&sim, &["etl"], aksk())],
        poll.clone(),
    ))
    .await;
    let c = http();
    let before = eventually(&c, &app, "first success", |t| {
        value(t, &queue_series("dli_poll_success", "etl")) == Some(1.0)
    })
    .await;
    let running_before = value(&before, &jobs_series("etl", "running")).expect("running");
    let last_ok_before = value(
        &before,
        &queue_series("dli_last_successful_poll_timestamp_seconds", "etl"),
    )
    .expect("ts");

    // DLI goes down: every connection is reset, for more than three intervals.
    sim.add_fault(FaultRule::always(Fault::ResetConnection));
    let down_at = Instant::now();
    let down = eventually(&c, &app, "poll_success 0", |t| {
        value(t, &queue_series("dli_poll_success", "etl")) == Some(0.0)
    })
    .await;
    let detected = down_at.elapsed();
    tokio::time::sleep(poll.interval * 3).await;
    let still_down = scrape(&c, &app).await;
    for t in [&down, &still_down] {
        assert_eq!(
            value(t, &queue_series("dli_poll_success", "etl")),
            Some(0.0)
        );
        assert_eq!(value(t, "dli_up"), Some(0.0));
        assert_eq!(
            value(t, &jobs_series("etl", "running")),
            Some(running_before),
            "last good values kept"
        );
        assert_eq!(
            value(
                t,
                &queue_series("dli_last_successful_poll_timestamp_seconds", "etl")
            ),
            Some(last_ok_before)
        );
    }
    let connect_failures = value(
        &still_down,
        "dli_api_request_failures_total{operation=\"list_batches\",reason=\"connect\"}",
    )
    .unwrap_or(0.0);
    assert!(connect_failures >= 3.0, "{still_down}");

    // DLI is back, with 50 more jobs: fresh values again.
    sim.set_jobs(PID, "etl", numbered_jobs("b", 200));
    sim.clear_faults();
    let back_at = Instant::now();
    let after = eventually(&c, &app, "fresh values", |t| {
        value(t, &queue_series("dli_poll_success", "etl")) == Some(1.0)
            && value(t, &jobs_series("etl", "running")) == Some(40.0)
    })
    .await;
    let recovered = back_at.elapsed();
    assert_eq!(value(&after, "dli_up"), Some(1.0));
    assert!(
        value(
            &after,
            &queue_series("dli_last_successful_poll_timestamp_seconds", "etl")
        )
        .is_some_and(|t| t > last_ok_before)
    );
    println!(
        "DLI down: poll_success 0 after {detected:?}; down {:?} with {connect_failures} connect failures, \
         values kept (running = {running_before}); fresh again {recovered:?} after DLI came back (interval {:?})",
        down_at.elapsed() - recovered,
        poll.interval
    );
    assert!(recovered < Duration::from_secs(2), "{recovered:?}");
    app.shutdown().await;
}

fn slow_poll(timeout_ms: u64, request_timeout_ms: u64) -> PollConfig {
    PollConfig {
        interval: Duration::from_secs(10),
        timeout: Duration::from_millis(timeout_ms),
        request_timeout: Duration::from_millis(request_timeout_ms),
        retries: 0,
        ..fast_poll()
    }
}

/// Polls `etl` of `sim` once with `poll`, through a client whose requests time out after
/// `request_timeout`: the outcome, how long it took, and the store it published into.
async fn timed_poll(
    sim: &Simulator,
    poll: &PollConfig,
    request_timeout: Duration,
) -> (PollOutcome, Duration, Arc<SnapshotStore>) {
    let key = QueueKey::new(PID, "etl");
    let store = Arc::new(SnapshotStore::new([key.clone()]));
    let ctx = PollContext::new(store.clone(), poll, 200);
    let cl = client(&project(sim, &["etl"], aksk()), request_timeout, 4);
    let started = Instant::now();
    let outcome = scheduler::poll_once(&cl, &key, &ctx, None).await;
    (outcome, started.elapsed(), store)
}

#[tokio::test]
async fn every_page_slow_completes_within_the_timeout_or_fails_cleanly() {
    let sim = sim(SimConfig::default()).await;
    sim.set_jobs(PID, "etl", numbered_jobs("s", 1000));
    sim.add_fault(FaultRule::always(Fault::Latency(Duration::from_millis(80))));

    // 10 pages at 80 ms each, 4 at a time: well inside a 2 s walk timeout.
    let poll = slow_poll(2000, 1000);
    let (ok, _, _) = timed_poll(&sim, &poll, poll.request_timeout).await;
    assert!(ok.success, "{:?}", ok.error);
    assert_eq!(ok.jobs, 1000);
    println!(
        "every page +80 ms: {} pages, walk {:?} (poll.timeout 2s)",
        ok.pages, ok.duration
    );

    // Pages of 300 ms under a 250 ms poll.timeout: the whole walk would need 1.2 s (a first page,
    // then three rounds of four); it fails as a timeout, on time, nothing published. The bound
    // below leaves room for a loaded machine and still tells a timeout from a finished walk.
    sim.clear_faults();
    sim.add_fault(FaultRule::always(Fault::Latency(Duration::from_millis(
        300,
    ))));
    let (failed, took, store) =
        timed_poll(&sim, &slow_poll(250, 200), Duration::from_millis(1000)).await;
    assert!(!failed.success);
    let msg = failed.error.clone().unwrap_or_default();
    assert!(msg.contains("exceeded poll.timeout = 250ms"), "{msg}");
    assert!(
        took < Duration::from_millis(900),
        "bounded by poll.timeout: {took:?}"
    );
    assert!(store.view()[0].1.snapshot.is_none(), "nothing published");
    println!("every page +300 ms, poll.timeout 250ms: failed after {took:?}: {msg}");

    // Pages slower than poll.request_timeout: each request times out (class timeout).
    sim.clear_faults();
    sim.add_fault(FaultRule::always(Fault::Latency(Duration::from_millis(
        400,
    ))));
    let (failed, took, _) =
        timed_poll(&sim, &slow_poll(1500, 150), Duration::from_millis(150)).await;
    let msg = failed.error.unwrap_or_default();
    assert!(msg.contains("timed out after 150ms"), "{msg}");
    assert!(took < Duration::from_millis(500), "{took:?}");
    println!("every page +400 ms, request_timeout 150ms: failed after {took:?}: {msg}");
}

#[tokio::test]
async fn one_queue_failing_forever_while_the_others_stay_fresh() {
    let sim = sim(SimConfig::default()).await;
    for q in ["a", "b", "bad"] {
        sim.set_jobs(PID, q, numbered_jobs(q, 120));
    }
    sim.add_fault(FaultRule::always(Fault::status(500, "DLI.0999", "boom")).queue("bad"));
    let poll = fast_poll();
    let app = start(&settings(
        vec![project(&sim, &["a", "b", "bad"], aksk())],
        poll.clone(),
    ))
    .await;
    let c = http();
    let started = Instant::now();
    eventually(&c, &app, "good queues up", |t| {
        value(t, &queue_series("dli_poll_success", "a")) == Some(1.0)
            && value(t, &queue_series("dli_poll_success", "b")) == Some(1.0)
    })
    .await;
    tokio::time::sleep(poll.interval * 5).await;
    let t = scrape(&c, &app).await;
    let now = unix_now();
    for q in ["a", "b"] {
        assert_eq!(value(&t, &queue_series("dli_poll_success", q)), Some(1.0));
        let last = value(
            &t,
            &queue_series("dli_last_successful_poll_timestamp_seconds", q),
        )
        .expect("timestamp");
        assert!(
            now - last < 3.0 * poll.interval.as_secs_f64() + 0.5,
            "queue {q} fresh: {:.3}s old",
            now - last
        );
        assert_eq!(value(&t, &jobs_series(q, "running")), Some(24.0));
    }
    assert_eq!(
        value(&t, &queue_series("dli_poll_success", "bad")),
        Some(0.0)
    );
    assert!(
        !t.contains(&jobs_series("bad", "running")),
        "a queue that never succeeded has no job series"
    );
    assert_eq!(value(&t, "dli_up"), Some(1.0));
    let http5xx = value(
        &t,
        "dli_api_request_failures_total{operation=\"list_batches\",reason=\"http_5xx\"}",
    )
    .unwrap_or(0.0);
    println!(
        "one queue failing for {:?}: good queues fresh, bad queue poll_success 0, {http5xx} http_5xx failures",
        started.elapsed()
    );
    app.shutdown().await;
}

/// Runs pollers for four queues of one project against a simulator that answers every request
/// 429, for `run`, and returns ListBatches requests per second.
async fn storm_rate(throttle: ThrottlePolicy, retry_after: Option<u64>, run: Duration) -> f64 {
    let sim: Simulator = sim(SimConfig::default()).await;
    let queues = ["q1", "q2", "q3", "q4"];
    for q in queues {
        sim.set_jobs(PID, q, numbered_jobs(q, 50));
    }
    sim.add_fault(FaultRule::always(Fault::Throttle { retry_after }));
    let poll = PollConfig {
        interval: Duration::from_millis(200),
        timeout: Duration::from_millis(180),
        request_timeout: Duration::from_millis(150),
        retries: 3,
        ..fast_poll()
    };
    let settings = settings(vec![project(&sim, &queues, aksk())], poll.clone());
    let mut options = ClientOptions::new(poll.request_timeout);
    options.throttle = throttle;
    let client = DliClient::new(
        &settings.projects[0],
        &options,
        Arc::new(Semaphore::new(4)),
        Arc::new(NoopObserver),
    )
    .expect("client");
    let mut clients = Clients::new();
    clients.insert(PID.to_string(), Arc::new(client));
    let keys: Vec<QueueKey> = queues.iter().map(|q| QueueKey::new(PID, *q)).collect();
    let store = Arc::new(SnapshotStore::new(keys));
    let mut ctx = PollContext::new(store, &poll, 200);
    // The walker's own retry backoff as in production (200 ms base).
    ctx.walk.retry = dli_exporter::dli::RetryPolicy::new(poll.retries);
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let targets = scheduler::queue_targets(&settings, &clients);
    scheduler::spawn_pollers(
        targets,
        ctx,
        poll.interval,
        cancel.clone(),
        &tasks,
        &Trackers::new(),
    );
    tokio::time::sleep(run).await;
    let requests = sim.stats().list_batches_requests;
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
    requests as f64 / run.as_secs_f64()
}

#[tokio::test]
async fn a_429_storm_is_met_with_a_falling_request_rate() {
    let run = Duration::from_secs(3);
    let hold = ThrottlePolicy {
        hold_after: 2,
        base: Duration::from_millis(500),
        cap: Duration::from_secs(2),
        ..ThrottlePolicy::default()
    };
    let (without, with, with_retry_after) = tokio::join!(
        storm_rate(ThrottlePolicy::disabled(), None, run),
        storm_rate(hold, None, run),
        storm_rate(hold, Some(1), run),
    );
    println!(
        "429 storm, 4 queues polled every 200ms for {run:?}: {without:.1} req/s without hold-off, \
         {with:.1} req/s with hold-off (2 in a row, 0.5s doubling to 2s), {with_retry_after:.1} req/s with hold-off and Retry-After: 1"
    );
    assert!(
        with < without / 3.0,
        "hold-off lowers the rate: {with:.1} vs {without:.1}"
    );
    assert!(with_retry_after < without / 3.0);
}

#[tokio::test]
async fn after_a_429_storm_polls_recover_once_the_hold_ends() {
    let sim = sim(SimConfig::default()).await;
    sim.set_jobs(PID, "etl", numbered_jobs("r", 120));
    sim.add_fault(FaultRule::always(Fault::Throttle { retry_after: None }));
    let poll = PollConfig {
        interval: Duration::from_millis(200),
        timeout: Duration::from_millis(180),
        request_timeout: Duration::from_millis(150),
        retries: 2,
        ..fast_poll()
    };
    let mut options = ClientOptions::new(poll.request_timeout);
    options.throttle = ThrottlePolicy {
        hold_after: 2,
        base: Duration::from_millis(300),
        cap: Duration::from_millis(600),
        ..ThrottlePolicy::default()
    };
    let key = QueueKey::new(PID, "etl");
    let store = Arc::new(SnapshotStore::new([key.clone()]));
    let metrics = metrics_for(
        store.clone(),
        Duration::from_secs(60),
        Duration::from_secs(600),
    );
    let cl = DliClient::new(
        &project(&sim, &["etl"], aksk()),
        &options,
        Arc::new(Semaphore::new(4)),
        metrics.observer(),
    )
    .expect("client");
    let ctx = PollContext::new(store, &poll, 200);
    // Storm: two 429s in a row start a hold; requests during it are not sent at all.
    let query = dli_exporter::dli::ListBatchesQuery {
        queue_name: Some("etl".into()),
        ..Default::default()
    };
    for _ in 0..2 {
        let e = cl.list_batches(&query).await.expect_err("429");
        assert_eq!(e.error_code(), Some("APIGW.0308"), "{e}");
    }
    let mut held_calls = 0;
    for _ in 0..5 {
        let e = cl.list_batches(&query).await.expect_err("held");
        assert_eq!(e.reason(), dli_exporter::dli::FailureReason::Throttled);
        assert!(e.to_string().contains("requests held"), "{e}");
        assert!(
            e.retry_after().is_some(),
            "the walker waits the rest of the hold"
        );
        held_calls += 1;
    }
    let sent_during_storm = sim.stats().list_batches_requests;
    assert_eq!(sent_during_storm, 2, "held calls sent nothing");
    // The hold is visible on /metrics: held calls are counted apart from requests sent.
    let text = String::from_utf8(metrics.render()).expect("utf8");
    assert_eq!(
        value(
            &text,
            r#"dli_api_requests_held_total{operation="list_batches"}"#
        ),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        value(&text, r#"dli_api_requests_total{operation="list_batches"}"#),
        Some(2.0)
    );
    let held_polls = held_calls;
    sim.clear_faults();
    let back = Instant::now();
    loop {
        let o = scheduler::poll_once(&cl, &key, &ctx, None).await;
        if o.success {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(3), "{:?}", o.error);
        tokio::time::sleep(poll.interval).await;
    }
    println!(
        "429 storm: 2 throttled requests started a hold; {held_polls} further calls were held without sending \
         ({sent_during_storm} requests in all); a poll succeeded again {:?} after the storm ended",
        back.elapsed()
    );
}
