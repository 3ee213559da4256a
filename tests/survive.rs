//! Nothing kills a poller: hostile numbers from the server (`Retry-After` beyond any clock,
//! Retry-After asking for a day), a panic inside one queue's poll, a walk cut off by the timeout,
//! a walk that finishes after a reload removed its queue; and the config and web config inputs
//! that must be refused or kept apart. Everything runs against the simulator over loopback.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use dli_exporter::app::{App, StartOptions};
use dli_exporter::config::{Env, PollConfig, load_toml_str};
use dli_exporter::dli::{ClientOptions, DliClient, FailureReason, Operation, RequestObserver};
use dli_exporter::poll::lifecycle::JobTracker;
use dli_exporter::poll::scheduler::{self, PollContext, Trackers, poll_once};
use dli_exporter::sim::{DEMO_ACCESS_KEY, DEMO_SECRET_KEY, Fault, FaultRule, SimConfig};
use dli_exporter::store::{LifecycleEvents, LifecycleSink, QueueKey, SnapshotStore};
use dli_exporter::web::{ServerState, WebConfigWatcher};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Waits until the queue's last successful poll is later than `after` (unix seconds).
async fn success_after(app: &App, queue: &str, after: f64, within: Duration) -> f64 {
    let ts = project_series("dli_last_successful_poll_timestamp_seconds", PID, queue);
    let text = wait_for(&http(), app, "a newer successful poll", within, |t| {
        value(t, &ts).is_some_and(|v| v > after)
    })
    .await;
    value(&text, &ts).expect("timestamp")
}

#[tokio::test]
async fn retry_after_beyond_any_instant_does_not_end_the_poller() {
    let sim = sim(SimConfig::default()).await;
    sim.set_jobs(PID, "etl", numbered_jobs("e", 3));
    // u64::MAX seconds: `Instant + Duration` overflows, in the walker's retry decision and in
    // the hold-off after two 429s in a row.
    sim.add_fault(
        FaultRule::times(
            4,
            Fault::Throttle {
                retry_after: Some(u64::MAX),
            },
        )
        .queue("etl"),
    );
    let app = start(&settings(
        vec![project(&sim, &["etl"], aksk())],
        fast_poll(),
    ))
    .await;
    let success = project_series("dli_poll_success", PID, "etl");
    wait_for(
        &http(),
        &app,
        "a throttled poll",
        Duration::from_secs(5),
        |t| value(t, &success) == Some(0.0),
    )
    .await;
    // The poller lives on: it succeeds once the 429s stop, and again after that.
    let first = success_after(&app, "etl", 0.0, Duration::from_secs(10)).await;
    success_after(&app, "etl", first, Duration::from_secs(5)).await;
    let text = scrape(&http(), &app).await;
    assert_eq!(
        value(
            &text,
            "dli_api_request_failures_total{operation=\"list_batches\",reason=\"throttled\"}"
        ),
        Some(4.0),
        "{text}"
    );
    shutdown(app).await;
}

#[tokio::test]
async fn two_429s_asking_for_a_day_do_not_hold_the_project_for_a_day() {
    let sim = sim(SimConfig::default()).await;
    sim.set_jobs(PID, "etl", numbered_jobs("e", 3));
    sim.add_fault(
        FaultRule::times(
            2,
            Fault::Throttle {
                retry_after: Some(86_400),
            },
        )
        .queue("etl"),
    );
    // Interval 300 ms: no hold may outlast it, and Retry-After counts only up to the 250 ms
    // timeout.
    let app = start(&settings(
        vec![project(&sim, &["etl"], aksk())],
        fast_poll(),
    ))
    .await;
    success_after(&app, "etl", 0.0, Duration::from_secs(5)).await;
    assert_eq!(sim.stats().faults_injected, 2);
    shutdown(app).await;
}

/// A request observer that panics while armed: a panic deep inside one project's walk.
struct Panicky(AtomicBool);

impl RequestObserver for Panicky {
    fn observe(&self, _: Operation, _: Duration, _: Option<FailureReason>) {
        if self.0.load(Ordering::SeqCst) {
            panic!("injected panic inside a poll");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_poll_is_caught_counted_and_retried_while_other_queues_go_on() {
    const BOOM: &str = "b00b00b00b00b00b00b00b00b00b00b0";
    let sim = sim(SimConfig::default()).await;
    sim.set_jobs(PID, "etl", numbered_jobs("e", 5));
    sim.set_jobs(BOOM, "etl", numbered_jobs("b", 5));
    let (good, boom) = (QueueKey::new(PID, "etl"), QueueKey::new(BOOM, "etl"));
    let store = Arc::new(SnapshotStore::new([good.clone(), boom.clone()]));
    let metrics = Arc::new(metrics_for(
        store.clone(),
        Duration::from_secs(60),
        Duration::from_secs(600),
    ));
    let poll = fast_poll();
    let limit = Arc::new(Semaphore::new(4));
    let panicky = Arc::new(Panicky(AtomicBool::new(true)));
    let mut boom_project = project(&sim, &["etl"], aksk());
    boom_project.project_id = BOOM.into();
    let options = ClientOptions::new(poll.request_timeout);
    let boom_client =
        DliClient::new(&boom_project, &options, limit.clone(), panicky.clone()).expect("client");
    let good_client = DliClient::new(
        &project(&sim, &["etl"], aksk()),
        &options,
        limit,
        metrics.observer(),
    )
    .expect("client");
    let mut ctx = PollContext::new(store.clone(), &poll, 200);
    ctx.lifecycle = Some(metrics.lifecycle_sink());
    let (cancel, tasks) = (CancellationToken::new(), TaskTracker::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = Arc::new(ServerState::new(
        metrics.clone(),
        store.clone(),
        "/metrics".into(),
        None,
    ));
    tasks.spawn(dli_exporter::web::serve(listener, state, cancel.clone()));
    scheduler::spawn_pollers(
        vec![
            (good.clone(), Arc::new(good_client)),
            (boom.clone(), Arc::new(boom_client)),
        ],
        ctx,
        poll.interval,
        cancel.clone(),
        &tasks,
        &Trackers::new(),
    );

    let url = format!("http://{addr}/metrics");
    let panics = project_series("dli_exporter_poll_panics_total", BOOM, "etl");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (_, text) = get(&http(), &url).await;
        if value(&text, &panics).is_some_and(|n| n >= 3.0) {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "panics not counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Each panicked attempt is a failed attempt: readiness does not wait for the queue.
    assert_eq!(
        value(&text, &project_series("dli_poll_success", BOOM, "etl")),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            &project_series("dli_exporter_poll_panics_total", PID, "etl")
        ),
        Some(0.0)
    );
    assert_eq!(
        value(&text, &project_series("dli_poll_success", PID, "etl")),
        Some(1.0)
    );
    let (status, body) = get(&http(), &format!("http://{addr}/-/ready")).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert!(text.contains("# TYPE dli_exporter_poll_panics_total counter"));
    promtool_check(&text);
    let good_ts = project_series("dli_last_successful_poll_timestamp_seconds", PID, "etl");
    let before = value(&text, &good_ts).expect("good queue polled");

    // The panics stop: the same poller succeeds at a following interval, the other queue never
    // stopped.
    panicky.0.store(false, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (_, text) = get(&http(), &url).await;
        if value(&text, &project_series("dli_poll_success", BOOM, "etl")) == Some(1.0) {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the panicked queue never polled again:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(value(&text, &panics).is_some_and(|n| n >= 3.0), "{text}");
    assert!(value(&text, &good_ts).is_some_and(|t| t > before), "{text}");
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
}

#[tokio::test]
async fn a_walk_cut_off_by_the_timeout_reports_the_pages_it_got() {
    let sim = sim(SimConfig::default()).await;
    sim.set_jobs(PID, "etl", numbered_jobs("e", 250));
    sim.add_fault(FaultRule::always(Fault::Latency(Duration::from_millis(100))).from(0));
    sim.add_fault(FaultRule::always(Fault::Hang).from(200));
    let poll = PollConfig {
        interval: Duration::from_millis(400),
        timeout: Duration::from_millis(300),
        request_timeout: Duration::from_millis(300),
        retries: 0,
        ..fast_poll()
    };
    let p = project(&sim, &["etl"], aksk());
    let client = client(&p, poll.request_timeout, 4);
    let key = QueueKey::new(PID, "etl");
    let store = Arc::new(SnapshotStore::new([key.clone()]));
    let ctx = PollContext::new(store.clone(), &poll, 200);
    let outcome = poll_once(&client, &key, &ctx, None).await;
    assert!(!outcome.success);
    let error = outcome.error.unwrap_or_default();
    assert!(error.contains("poll.timeout"), "{error}");
    // from=0 and from=100 answered, from=200 hung.
    assert_eq!(outcome.pages, 2, "{error}");
    let (_, status) = store.view().into_iter().next().expect("queue");
    assert_eq!(status.last_pages, 2);
}

/// Lifecycle series by queue, as the metrics registry would hold them.
#[derive(Default)]
struct Series {
    live: Mutex<HashSet<QueueKey>>,
    finished: Mutex<Vec<&'static str>>,
}

impl LifecycleSink for Series {
    fn init_queue(&self, key: &QueueKey) {
        self.live.lock().expect("lock").insert(key.clone());
    }
    fn record(&self, key: &QueueKey, events: &LifecycleEvents) {
        self.live.lock().expect("lock").insert(key.clone());
        let mut finished = self.finished.lock().expect("lock");
        finished.extend(events.finished.iter().map(|f| f.state));
    }
    fn remove_queue(&self, key: &QueueKey) {
        self.live.lock().expect("lock").remove(key);
    }
}

#[tokio::test]
async fn a_walk_finishing_after_its_queue_was_removed_records_no_lifecycle_series() {
    let sim = sim(SimConfig::default()).await;
    sim.set_jobs(PID, "etl", numbered_jobs("e", 5));
    let poll = PollConfig {
        interval: Duration::from_secs(3),
        timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(1),
        ..fast_poll()
    };
    let p = project(&sim, &["etl"], aksk());
    let client = client(&p, poll.request_timeout, 4);
    let key = QueueKey::new(PID, "etl");
    let store = Arc::new(SnapshotStore::new([key.clone()]));
    let series = Arc::new(Series::default());
    let mut ctx = PollContext::new(store.clone(), &poll, 200);
    ctx.lifecycle = Some(series.clone());
    let mut tracker = JobTracker::new();
    assert!(
        poll_once(&client, &key, &ctx, Some(&mut tracker))
            .await
            .success
    );
    assert!(series.live.lock().expect("lock").contains(&key));

    // The next walk is slow; a reload removes the queue while it runs (the store first, then
    // the series, as the reload does).
    sim.add_fault(FaultRule::always(Fault::Latency(Duration::from_millis(
        300,
    ))));
    let walk = poll_once(&client, &key, &ctx, Some(&mut tracker));
    let reload = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        store.set_queues([]);
        series.remove_queue(&key);
    };
    let (outcome, ()) = tokio::join!(walk, reload);
    assert!(outcome.success, "{:?}", outcome.error);
    assert!(
        !series.live.lock().expect("lock").contains(&key),
        "the removed queue's lifecycle series came back"
    );
    assert_eq!(store.attempted(), (0, 0));
}

fn two_projects_toml(sim_url: &str, second_id: &str) -> String {
    format!(
        "[auth]\naccess_key = \"{DEMO_ACCESS_KEY}\"\nsecret_key = \"{DEMO_SECRET_KEY}\"\n\
         [[projects]]\nproject_id = \"{PID}\"\nendpoint = \"{sim_url}\"\nqueues = [\"etl\"]\n\
         [[projects]]\nproject_id = \"{second_id}\"\nendpoint = \"{sim_url}\"\nqueues = [\"adhoc\"]\n\
         [projects.auth]\naccess_key = \"OTHERAK\"\nsecret_key = \"other-secret-value\"\n"
    )
}

#[test]
fn a_second_projects_entry_with_the_same_project_id_is_rejected() {
    let e = load_toml_str(&two_projects_toml("http://127.0.0.1:1", PID), &Env::new())
        .expect_err("duplicate project id");
    let msg = e.to_string();
    assert!(e.keys().contains(&"projects[1].project_id"), "{msg}");
    assert!(msg.contains("projects[0]") && msg.contains(PID), "{msg}");
    assert!(!msg.contains("other-secret-value"), "{msg}");
    // Different ids are fine.
    load_toml_str(
        &two_projects_toml("http://127.0.0.1:1", "ffffffffffffffffffffffffffffffff"),
        &Env::new(),
    )
    .expect("distinct projects");
}

#[test]
fn durations_beyond_their_bounds_are_rejected_naming_the_key() {
    let base = format!(
        "[auth]\naccess_key = \"{DEMO_ACCESS_KEY}\"\nsecret_key = \"{DEMO_SECRET_KEY}\"\n\
         [[projects]]\nproject_id = \"{PID}\"\nregion = \"cn-north-4\"\nqueues = [\"etl\"]\n"
    );
    for (poll, key) in [
        ("interval = \"25h\"\ntimeout = \"1h\"", "poll.interval"),
        ("stale_after = \"8d\"", "poll.stale_after"),
        // Too large even to parse: a parse error naming the key.
        (
            "interval = \"584942417355years\"\ntimeout = \"1h\"",
            "(key interval)",
        ),
    ] {
        let text = format!("[poll]\n{poll}\n{base}");
        match load_toml_str(&text, &Env::new()) {
            Ok(_) => panic!("{poll} accepted"),
            Err(e) => assert!(
                e.keys().contains(&key) || e.to_string().contains(key),
                "{poll}: {e}"
            ),
        }
    }
    let text =
        format!("[poll]\ninterval = \"24h\"\ntimeout = \"23h\"\nstale_after = \"7d\"\n{base}");
    load_toml_str(&text, &Env::new()).expect("the bounds themselves are allowed");
}

#[tokio::test]
async fn the_rate_limit_does_not_apply_to_healthy() {
    let sim = sim(SimConfig::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let web = dir.path().join("web.yml");
    std::fs::write(&web, "rate_limit:\n  interval: 1h\n  burst: 1\n").expect("write");
    let watcher = WebConfigWatcher::load(&web).expect("web config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let app = App::start_with(
        &settings(vec![project(&sim, &["etl"], aksk())], fast_poll()),
        listener,
        StartOptions {
            web: Some(watcher),
            ..StartOptions::default()
        },
    )
    .expect("start");
    assert_eq!(
        get(&http(), &url(&app, "/metrics")).await.0.as_u16(),
        200,
        "the burst"
    );
    assert_eq!(
        get(&http(), &url(&app, "/metrics")).await.0.as_u16(),
        429,
        "the bucket is empty"
    );
    for _ in 0..5 {
        assert_eq!(
            get(&http(), &url(&app, "/-/healthy")).await.0.as_u16(),
            200,
            "liveness is never limited"
        );
    }
    assert_eq!(
        get(&http(), &url(&app, "/-/ready")).await.0.as_u16(),
        429,
        "other endpoints still are"
    );
    shutdown(app).await;
}

/// Records the failure reason of every request.
#[derive(Default)]
struct Reasons(Mutex<Vec<Option<FailureReason>>>);

impl RequestObserver for Reasons {
    fn observe(&self, _: Operation, _: Duration, failure: Option<FailureReason>) {
        self.0.lock().expect("lock").push(failure);
    }
}

#[tokio::test]
async fn a_body_cut_off_by_the_connection_is_connect_and_retried_a_short_complete_one_is_decode() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A server whose first answer announces 4000 bytes, sends 13 and closes; then the page
    // whole, the empty page after it and the page again (the walk's closing check); then a
    // complete answer whose JSON is cut
    // (Content-Length matches what is sent).
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let page = br#"{"total":1,"sessions":[{"id":"a","state":"running"}]}"#;
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut conn, _)) = listener.accept().await {
            n += 1;
            let mut buf = vec![0u8; 16 * 1024];
            let _ = conn.read(&mut buf).await;
            let answer: Vec<u8> = match n {
                1 => b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n{\"sessions\":[".to_vec(),
                2..=4 => {
                    // The page, the empty page that ends the list, the page again.
                    let body: &[u8] = if n == 3 { br#"{"sessions":[]}"# } else { page };
                    [
                        format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes(),
                        body.to_vec(),
                    ]
                    .concat()
                }
                _ => b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: 13\r\n\r\n{\"sessions\":[".to_vec(),
            };
            let _ = conn.write_all(&answer).await;
            let _ = conn.shutdown().await;
        }
    });
    let p = project_at(&format!("http://{addr}"), &["etl"], aksk());
    let reasons = Arc::new(Reasons::default());
    let client = DliClient::new(
        &p,
        &ClientOptions::new(Duration::from_secs(2)),
        Arc::new(Semaphore::new(1)),
        reasons.clone(),
    )
    .expect("client");
    let (stats, jobs) = walk(&client, "etl", &walk_options(100, 1, 2))
        .await
        .expect("the cut body is retried");
    assert_eq!((stats.requests, stats.pages, jobs.len()), (4, 3, 1));
    // The next walk meets the complete but truncated body: decode, not retried.
    let e = walk(&client, "etl", &walk_options(100, 1, 2))
        .await
        .expect_err("truncated JSON");
    let reason = e.request_error().map(|r| r.reason());
    assert_eq!(reason, Some(FailureReason::Decode), "{e}");
    assert_eq!(
        *reasons.0.lock().expect("lock"),
        vec![
            Some(FailureReason::Connect),
            None,
            None,
            None,
            Some(FailureReason::Decode)
        ]
    );
}

#[tokio::test]
async fn a_total_that_swings_from_i64_max_to_one_overflows_nothing() {
    // The first page claims i64::MAX jobs, every later one 1: the page layout's shift is almost
    // -i64::MAX, so offsets minus shifts overflow unless the arithmetic saturates.
    let sim = sim(SimConfig::default()).await;
    sim.set_jobs(PID, "etl", numbered_jobs("e", 250));
    sim.add_fault(FaultRule::always(Fault::WrongTotal(1)).queue("etl"));
    sim.add_fault(
        FaultRule::always(Fault::WrongTotal(i64::MAX))
            .queue("etl")
            .from(0),
    );
    let poll = PollConfig {
        timeout: Duration::from_secs(5),
        interval: Duration::from_secs(6),
        request_timeout: Duration::from_secs(2),
        ..fast_poll()
    };
    let p = project(&sim, &["etl"], aksk());
    let client = client(&p, poll.request_timeout, 4);
    let key = QueueKey::new(PID, "etl");
    let store = Arc::new(SnapshotStore::new([key.clone()]));
    let ctx = PollContext::new(store.clone(), &poll, 200);
    // Whether such a walk is trusted is the walker's business; it must end, and not by a panic.
    let outcome = poll_once(&client, &key, &ctx, None).await;
    assert_eq!(outcome.key, key);
    assert_eq!(store.attempted(), (1, 1));
    assert!(sim.stats().list_batches_requests >= 2);
}
