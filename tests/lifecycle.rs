//! Finished/submitted counters, job durations and hot reload, against the simulator over
//! loopback HTTP (issue: job lifecycle metrics and live operations).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use dli_exporter::app::App;
use dli_exporter::config::Env;
use dli_exporter::metrics::{CollectorOptions, Metrics};
use dli_exporter::poll::lifecycle::JobTracker;
use dli_exporter::poll::scheduler::{PollContext, poll_once};
use dli_exporter::sim::{
    DEMO_ACCESS_KEY, DEMO_SECRET_KEY, Fault, FaultRule, SimConfig, SimJob, Simulator,
};
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
        let metrics = Arc::new(
            Metrics::new(
                store.clone(),
                CollectorOptions {
                    owner_breakdown: true,
                    stale_after: Duration::from_secs(60),
                    queue_list_stale_after: Duration::from_secs(600),
                },
            )
            .expect("metrics"),
        );
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

    async fn poll(&mut self) -> bool {
        poll_once(&self.client, &self.key, &self.ctx, Some(&mut self.tracker))
            .await
            .success
    }

    fn metric(&self, line_prefix: &str) -> Option<f64> {
        metric_value(
            &String::from_utf8_lossy(&self.metrics.render()),
            line_prefix,
        )
    }

    fn finished(&self, state: &str) -> Option<f64> {
        self.metric(&format!(
            "dli_batch_jobs_finished_total{{project_id=\"{PID}\",queue=\"{Q}\",state=\"{state}\"}}"
        ))
    }

    fn submitted(&self) -> Option<f64> {
        self.metric(&format!(
            "dli_batch_jobs_submitted_total{{project_id=\"{PID}\",queue=\"{Q}\"}}"
        ))
    }

    fn set_state(&self, id: &str, state: &str, duration_ms: i64) {
        assert!(self.sim.update_job(PID, Q, id, |j| {
            j.state = state.to_string();
            j.duration = duration_ms;
        }));
    }
}

fn metric_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(prefix)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

fn now_ms() -> i64 {
    (dli_exporter::store::unix_now() * 1000.0) as i64
}

#[tokio::test]
async fn jobs_driven_through_their_states_are_counted_exactly() {
    let mut h = Harness::new().await;
    let old = now_ms() - 3_600_000;
    h.sim.set_jobs(
        PID,
        Q,
        vec![
            SimJob::new("a", "starting", Some("o"), old),
            SimJob::new("b", "running", Some("o"), old),
            SimJob::new("done-before", "success", Some("o"), old),
        ],
    );
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
        metric_value(
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
        metric_value(
            &text,
            &format!(
                "dli_batch_job_duration_seconds_sum{{project_id=\"{PID}\",queue=\"{Q}\",state=\"success\"}}"
            )
        ),
        Some(110.0)
    );
    assert_eq!(
        metric_value(
            &text,
            &format!(
                "dli_batch_job_duration_seconds_count{{project_id=\"{PID}\",queue=\"{Q}\",state=\"dead\"}}"
            )
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_failed_poll_counts_nothing_and_the_next_one_catches_up() {
    let mut h = Harness::new().await;
    let old = now_ms() - 3_600_000;
    h.sim
        .set_jobs(PID, Q, vec![SimJob::new("a", "running", Some("o"), old)]);
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
async fn an_exporter_restart_starts_counters_from_zero_without_recounting() {
    let mut h = Harness::new().await;
    let old = now_ms() - 3_600_000;
    h.sim.set_jobs(
        PID,
        Q,
        vec![
            SimJob::new("a", "running", Some("o"), old),
            SimJob::new("b", "success", Some("o"), old),
        ],
    );
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

fn config_text(sim: &Simulator, queues: &[&str]) -> String {
    format!(
        "[poll]\ninterval = \"300ms\"\ntimeout = \"250ms\"\nrequest_timeout = \"200ms\"\n\n\
         [auth]\naccess_key = \"{DEMO_ACCESS_KEY}\"\nsecret_key = \"{DEMO_SECRET_KEY}\"\n\n\
         [[projects]]\nproject_id = \"{PID}\"\nendpoint = \"{}\"\nqueues = [{}]\n",
        sim.base_url(),
        queues
            .iter()
            .map(|q| format!("\"{q}\""))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body")
}

async fn eventually(addr: std::net::SocketAddr, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(addr).await;
        if pred(&text) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn has_queue(text: &str, queue: &str) -> bool {
    text.contains(&format!(
        "dli_batch_jobs{{project_id=\"{PID}\",queue=\"{queue}\",state=\"running\"}}"
    ))
}

#[tokio::test]
async fn reload_adds_and_removes_queues_and_survives_a_broken_file() {
    let sim = sim(SimConfig::default()).await;
    for q in ["etl", "adhoc"] {
        sim.set_jobs(PID, q, numbered_jobs(q, 7));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dli_exporter.toml");
    std::fs::write(&path, config_text(&sim, &["etl"])).expect("write");
    let settings = dli_exporter::config::load(&path, &Env::new()).expect("valid");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let app = App::start_reloadable(&settings, listener, Some((path.clone(), Env::new())))
        .expect("start");
    let addr = app.addr;
    eventually(addr, "etl", |t| has_queue(t, "etl")).await;
    assert!(!has_queue(&scrape(addr).await, "adhoc"));

    // Add a queue through POST /-/reload.
    std::fs::write(&path, config_text(&sim, &["etl", "adhoc"])).expect("write");
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let r = http
        .post(format!("http://{addr}/-/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(r.status(), 200);
    eventually(addr, "adhoc after reload", |t| {
        has_queue(t, "adhoc") && has_queue(t, "etl")
    })
    .await;

    // Remove one: all its series go, the other's stay.
    std::fs::write(&path, config_text(&sim, &["adhoc"])).expect("write");
    app.reload().await.expect("reload");
    let text = eventually(addr, "etl gone", |t| !t.contains("queue=\"etl\"")).await;
    assert!(has_queue(&text, "adhoc"));
    assert!(text.contains("dli_exporter_config_last_reload_successful 1"));

    // A broken file keeps the running configuration and says why.
    std::fs::write(&path, "[poll]\nintervall = \"1s\"\n").expect("write");
    let r = http
        .post(format!("http://{addr}/-/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(r.status(), 500);
    let body = r.text().await.expect("body");
    assert!(body.contains("intervall"), "{body}");
    let text = scrape(addr).await;
    assert!(
        text.contains("dli_exporter_config_last_reload_successful 0"),
        "{text}"
    );
    assert!(has_queue(&text, "adhoc"), "old configuration still polled");
    // GET is not how a reload is asked for.
    let r = http
        .get(format!("http://{addr}/-/reload"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 405);
    app.shutdown().await;
}

#[tokio::test]
async fn changed_credentials_take_effect_after_reload() {
    let sim = sim(SimConfig::default()).await;
    sim.set_jobs(PID, Q, numbered_jobs("j", 3));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    let bad = config_text(&sim, &[Q]).replace(DEMO_SECRET_KEY, "wrong-secret");
    std::fs::write(&path, &bad).expect("write");
    let settings = dli_exporter::config::load(&path, &Env::new()).expect("valid");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let app = App::start_reloadable(&settings, listener, Some((path.clone(), Env::new())))
        .expect("start");
    eventually(app.addr, "auth failure", |t| {
        t.contains(&format!(
            "dli_poll_success{{project_id=\"{PID}\",queue=\"{Q}\"}} 0"
        ))
    })
    .await;
    std::fs::write(&path, config_text(&sim, &[Q])).expect("write");
    app.reload().await.expect("reload");
    eventually(app.addr, "success with the new key", |t| {
        t.contains(&format!(
            "dli_poll_success{{project_id=\"{PID}\",queue=\"{Q}\"}} 1"
        ))
    })
    .await;
    app.shutdown().await;
}
