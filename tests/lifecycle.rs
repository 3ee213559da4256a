//! Finished/submitted counters, job durations and hot reload, against the simulator over
//! loopback HTTP (issue: job lifecycle metrics and live operations).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use dli_exporter::app::App;
use dli_exporter::config::Env;
use dli_exporter::metrics::Metrics;
use dli_exporter::poll::lifecycle::JobTracker;
use dli_exporter::poll::scheduler::{PollContext, poll_once};
use dli_exporter::sim::{DEMO_SECRET_KEY, Fault, FaultRule, SimConfig, SimJob, Simulator};
use dli_exporter::store::{QueueKey, SnapshotStore};

const Q: &str = "etl";

/// A queue polled by hand: the real client, walker, tracker and metrics, no timer.
struct Harness {
    sim: Simulator,
    client: dli_exporter::dli::DliClient,
    ctx: PollContext,
    metrics: Arc<Metrics>,
    tracker: JobTracker,
    key: QueueKey,
}

impl Harness {
    async fn new() -> Self {
        let sim = sim(SimConfig::default()).await;
        let p = project(&sim, &[Q], aksk());
        let client = client(&p, Duration::from_secs(2), 4);
        let key = QueueKey::new(PID, Q);
        let store = Arc::new(SnapshotStore::new([key.clone()]));
        let metrics = Arc::new(metrics_for(
            store.clone(),
            Duration::from_secs(60),
            Duration::from_secs(600),
        ));
        let mut ctx = PollContext::new(store, &fast_poll(), 200);
        ctx.timeout = Duration::from_secs(5);
        ctx.lifecycle = Some(metrics.lifecycle.clone());
        Harness {
            sim,
            client,
            ctx,
            metrics,
            tracker: JobTracker::new(),
            key,
        }
    }

    /// A harness whose queue holds `jobs` (id, state), owned by "o" and created an hour ago.
    async fn with_old_jobs(jobs: &[(&str, &str)]) -> Self {
        let h = Self::new().await;
        let old = now_ms() - 3_600_000;
        let jobs = jobs
            .iter()
            .map(|(id, state)| SimJob::new(*id, state, Some("o"), old))
            .collect();
        h.sim.set_jobs(PID, Q, jobs);
        h
    }

    async fn poll(&mut self) -> bool {
        poll_once(&self.client, &self.key, &self.ctx, Some(&mut self.tracker))
            .await
            .success
    }

    fn metric(&self, series: &str) -> Option<f64> {
        value(&String::from_utf8_lossy(&self.metrics.render()), series)
    }

    fn finished(&self, state: &str) -> Option<f64> {
        self.metric(&state_series("dli_batch_jobs_finished_total", Q, state))
    }

    fn submitted(&self) -> Option<f64> {
        self.metric(&queue_series("dli_batch_jobs_submitted_total", Q))
    }

    fn set_state(&self, id: &str, state: &str, duration_ms: i64) {
        assert!(self.sim.update_job(PID, Q, id, |j| {
            j.state = state.to_string();
            j.duration = duration_ms;
        }));
    }
}

fn now_ms() -> i64 {
    (dli_exporter::store::unix_now() * 1000.0) as i64
}

#[tokio::test]
async fn jobs_driven_through_their_states_are_counted_exactly() {
    let mut h = Harness::with_old_jobs(&[
        ("a", "starting"),
        ("b", "running"),
        ("done-before", "success"),
    ])
    .await;
    assert!(h.poll().await);
    // The first walk is a baseline: counters exist at 0, the finished job is not counted.
    assert_eq!(h.finished("success"), Some(0.0));
    assert_eq!(h.finished("dead"), Some(0.0));
    assert_eq!(h.submitted(), Some(0.0));

    // starting -> running: nothing finished.
    h.set_state("a", "running", 0);
    assert!(h.poll().await);
    assert_eq!(h.finished("success"), Some(0.0));

    // a finishes between two polls (90 s), b dies (45 min).
    h.set_state("a", "success", 90_000);
    h.set_state("b", "dead", 2_700_000);
    assert!(h.poll().await);
    assert_eq!(h.finished("success"), Some(1.0));
    assert_eq!(h.finished("dead"), Some(1.0));

    // A job created and finished between two polls (20 s), and one still starting.
    let created = now_ms();
    h.sim.insert_front(
        PID,
        Q,
        vec![
            {
                let mut j = SimJob::new("flash", "success", Some("o"), created);
                j.duration = 20_000;
                j
            },
            SimJob::new("c", "starting", Some("o"), created),
        ],
    );
    assert!(h.poll().await);
    assert_eq!(h.finished("success"), Some(2.0));
    assert_eq!(h.submitted(), Some(2.0));

    // Nothing changes: nothing more is counted.
    assert!(h.poll().await);
    assert_eq!(h.finished("success"), Some(2.0));
    assert_eq!(h.finished("dead"), Some(1.0));

    // The histogram: success {90 s, 20 s}, dead {2700 s}.
    let text = String::from_utf8_lossy(&h.metrics.render()).to_string();
    let bucket = |state: &str, le: &str| {
        value(
            &text,
            &format!(
                "dli_batch_job_duration_seconds_bucket{{project_id=\"{PID}\",queue=\"{Q}\",state=\"{state}\",le=\"{le}\"}}"
            ),
        )
    };
    assert_eq!(bucket("success", "30"), Some(1.0));
    assert_eq!(bucket("success", "120"), Some(2.0));
    assert_eq!(bucket("dead", "1800"), Some(0.0));
    assert_eq!(bucket("dead", "3600"), Some(1.0));
    assert_eq!(
        value(
            &text,
            &state_series("dli_batch_job_duration_seconds_sum", Q, "success")
        ),
        Some(110.0)
    );
    assert_eq!(
        value(
            &text,
            &state_series("dli_batch_job_duration_seconds_count", Q, "dead")
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_failed_poll_counts_nothing_and_the_next_one_catches_up() {
    let mut h = Harness::with_old_jobs(&[("a", "running")]).await;
    assert!(h.poll().await);

    h.set_state("a", "dead", 1_000);
    h.sim
        .add_fault(FaultRule::always(Fault::status(500, "DLI.0999", "down")).queue(Q));
    assert!(!h.poll().await);
    assert_eq!(
        h.finished("dead"),
        Some(0.0),
        "a failed walk changes no counter"
    );

    let mut n = SimJob::new("new", "success", Some("o"), now_ms());
    n.duration = 5_000;
    h.sim.insert_front(PID, Q, vec![n]);
    h.sim.clear_faults();
    assert!(h.poll().await);
    assert_eq!(h.finished("dead"), Some(1.0));
    assert_eq!(h.finished("success"), Some(1.0));
    assert_eq!(h.submitted(), Some(1.0));
}

#[tokio::test]
async fn a_job_new_since_the_last_poll_counts_as_finished_whatever_its_create_time_says() {
    // DLI's clock runs behind ours: a job submitted and finished between two polls carries a
    // create_time before our previous poll started. The list is walked exactly, so an id that
    // was not there at the previous walk is a job that ran since.
    let mut h = Harness::new().await;
    let old = now_ms() - 3_600_000;
    h.sim
        .set_jobs(PID, Q, vec![SimJob::new("a", "running", Some("o"), old)]);
    assert!(h.poll().await);
    let behind = now_ms() - 30_000;
    let mut late = SimJob::new("late", "success", Some("o"), behind);
    late.duration = 4_000;
    h.sim.insert_front(
        PID,
        Q,
        vec![late, SimJob::new("late-dead", "dead", Some("o"), behind)],
    );
    assert!(h.poll().await);
    assert_eq!(h.finished("success"), Some(1.0));
    assert_eq!(h.finished("dead"), Some(1.0));
    assert_eq!(h.submitted(), Some(2.0));
    // Counted once.
    assert!(h.poll().await);
    assert_eq!(h.finished("success"), Some(1.0));
}

#[tokio::test]
async fn an_exporter_restart_starts_counters_from_zero_without_recounting() {
    let mut h = Harness::with_old_jobs(&[("a", "running"), ("b", "success")]).await;
    assert!(h.poll().await);
    h.set_state("a", "success", 1_000);
    assert!(h.poll().await);
    assert_eq!(h.finished("success"), Some(1.0));

    // A restart: fresh metrics and tracker against the same DLI.
    let mut restarted = Harness::new().await;
    restarted.sim.set_jobs(PID, Q, h.sim.jobs(PID, Q));
    assert!(restarted.poll().await);
    assert_eq!(
        restarted.finished("success"),
        Some(0.0),
        "jobs finished before the restart are not counted"
    );
    assert!(restarted.poll().await);
    assert_eq!(restarted.finished("success"), Some(0.0));
}

// ---- hot reload ----------------------------------------------------------------------------

/// Writes `config` to a file in a fresh directory and starts a reloadable exporter on it: the
/// directory (kept as long as the test needs the file), the file and the exporter.
async fn start_reloadable(config: &str) -> (tempfile::TempDir, std::path::PathBuf, App) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dli_exporter.toml");
    std::fs::write(&path, config).expect("write");
    let settings = dli_exporter::config::load(&path, &Env::new()).expect("valid");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let app = App::start_reloadable(&settings, listener, Some((path.clone(), Env::new())))
        .expect("start");
    (dir, path, app)
}

fn has_queue(text: &str, queue: &str) -> bool {
    text.contains(&jobs_series(queue, "running"))
}

#[tokio::test]
async fn reload_adds_and_removes_queues_and_survives_a_broken_file() {
    let sim = sim(SimConfig::default()).await;
    for q in ["etl", "adhoc"] {
        sim.set_jobs(PID, q, numbered_jobs(q, 7));
    }
    let (_dir, path, app) = start_reloadable(&demo_config_toml(&sim, &["etl"])).await;
    let client = http();
    eventually(&client, &app, "etl", |t| has_queue(t, "etl")).await;
    assert!(!has_queue(&scrape(&client, &app).await, "adhoc"));

    // Add a queue through POST /-/reload.
    std::fs::write(&path, demo_config_toml(&sim, &["etl", "adhoc"])).expect("write");
    let r = client
        .post(url(&app, "/-/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(r.status(), 200);
    eventually(&client, &app, "adhoc after reload", |t| {
        has_queue(t, "adhoc") && has_queue(t, "etl")
    })
    .await;

    // Remove one: all its series go, the other's stay.
    std::fs::write(&path, demo_config_toml(&sim, &["adhoc"])).expect("write");
    app.reload().await.expect("reload");
    let text = eventually(&client, &app, "etl gone", |t| !t.contains("queue=\"etl\"")).await;
    assert!(has_queue(&text, "adhoc"));
    assert!(text.contains("dli_exporter_config_last_reload_successful 1"));

    // A broken file keeps the running configuration and says why.
    std::fs::write(&path, "[poll]\nintervall = \"1s\"\n").expect("write");
    let r = client
        .post(url(&app, "/-/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(r.status(), 500);
    let body = r.text().await.expect("body");
    assert!(body.contains("intervall"), "{body}");
    let text = scrape(&client, &app).await;
    assert!(
        text.contains("dli_exporter_config_last_reload_successful 0"),
        "{text}"
    );
    assert!(has_queue(&text, "adhoc"), "old configuration still polled");
    // GET is not how a reload is asked for.
    assert_method_not_allowed(&client, reqwest::Method::GET, &url(&app, "/-/reload")).await;
    app.shutdown().await;
}

#[tokio::test]
async fn changed_credentials_take_effect_after_reload() {
    let sim = sim(SimConfig::default()).await;
    sim.set_jobs(PID, Q, numbered_jobs("j", 3));
    let bad = demo_config_toml(&sim, &[Q]).replace(DEMO_SECRET_KEY, "wrong-secret");
    let (_dir, path, app) = start_reloadable(&bad).await;
    let client = http();
    let success = queue_series("dli_poll_success", Q);
    eventually(&client, &app, "auth failure", |t| {
        value(t, &success) == Some(0.0)
    })
    .await;
    std::fs::write(&path, demo_config_toml(&sim, &[Q])).expect("write");
    app.reload().await.expect("reload");
    eventually(&client, &app, "success with the new key", |t| {
        value(t, &success) == Some(1.0)
    })
    .await;
    app.shutdown().await;
}
