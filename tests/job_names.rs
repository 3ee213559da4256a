//! Per-job-name metrics end to end: the exporter's server and pollers against the simulator over
//! loopback, with recurring job names (docs/architecture.md, "Job names"). Covers a newest run
//! that died after a success, a newest run still running, a name with no successful run
//! retained, names the regexes leave out, the per-queue cap and its dropped count, an
//! undocumented state, and the update when a new run finishes.

mod common;

use std::time::Duration;

use common::*;
use dli_exporter::config::PollConfig;
use dli_exporter::dli::states::KNOWN_STATES;
use dli_exporter::sim::{SimConfig, SimJob, Simulator};

const HOUR: i64 = 3_600_000;
const MINUTE: i64 = 60_000;

/// A run of `name` created `ago_ms` before `T0_MS`; finished runs last one minute
/// (`SimJob::new`).
fn run(id: &str, name: Option<&str>, state: &str, ago_ms: i64) -> SimJob {
    let mut job = SimJob::new(id, state, Some("scheduler"), T0_MS - ago_ms);
    job.name = name.map(str::to_string);
    job
}

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

fn name_series(metric: &str, queue: &str, job_name: &str) -> String {
    format!("{metric}{{job_name=\"{job_name}\",project_id=\"{PID}\",queue=\"{queue}\"}}")
}

fn state_of(queue: &str, job_name: &str, state: &str) -> String {
    format!(
        "dli_batch_job_last_run_state{{job_name=\"{job_name}\",project_id=\"{PID}\",queue=\"{queue}\",state=\"{state}\"}}"
    )
}

fn start_of(queue: &str, job_name: &str) -> String {
    name_series(
        "dli_batch_job_last_run_start_timestamp_seconds",
        queue,
        job_name,
    )
}

fn success_of(queue: &str, job_name: &str) -> String {
    name_series(
        "dli_batch_job_last_success_timestamp_seconds",
        queue,
        job_name,
    )
}

fn duration_of(queue: &str, job_name: &str) -> String {
    name_series("dli_batch_job_last_run_duration_seconds", queue, job_name)
}

fn dropped(queue: &str) -> String {
    queue_series("dli_batch_job_names_dropped", queue)
}

/// The one state whose `dli_batch_job_last_run_state` is 1, after checking that every known
/// state has a series and no other state is 1.
fn last_state(text: &str, queue: &str, job_name: &str) -> Option<String> {
    let prefix = format!(
        "dli_batch_job_last_run_state{{job_name=\"{job_name}\",project_id=\"{PID}\",queue=\"{queue}\",state=\""
    );
    let mut ones = Vec::new();
    let mut states = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else {
            continue;
        };
        let (state, value) = rest.split_once("\"} ").expect("a sample");
        states.push(state.to_string());
        if value == "1" {
            ones.push(state.to_string());
        }
    }
    if states.is_empty() {
        return None;
    }
    for known in KNOWN_STATES {
        assert!(
            states.iter().any(|s| s == known),
            "{job_name}: {known} missing"
        );
    }
    assert_eq!(ones.len(), 1, "{job_name}: one state at 1: {ones:?}");
    ones.pop()
}

fn etl_jobs() -> Vec<SimJob> {
    vec![
        // Newest first, as DLI lists them.
        run("n2", Some("daily_new"), "starting", 5 * MINUTE),
        run("l3", Some("daily_load"), "running", 10 * MINUTE),
        run("o1", Some("daily_odd"), "queued", 20 * MINUTE),
        run("n1", Some("daily_new"), "dead", 30 * MINUTE),
        run("x1", Some("adhoc_query"), "success", 40 * MINUTE),
        run("x2", Some("my_daily_etl"), "success", 45 * MINUTE),
        run("x3", None, "dead", 50 * MINUTE),
        run("e2", Some("daily_etl"), "dead", HOUR),
        run("l2", Some("daily_load"), "dead", 90 * MINUTE),
        run("l1", Some("daily_load"), "success", 2 * HOUR),
        run("e1", Some("daily_etl"), "success", 3 * HOUR),
    ]
}

/// Eight names of one run each; `daily_n4` and `daily_n5` were created in the same millisecond.
fn many_jobs() -> Vec<SimJob> {
    let ago = [1, 2, 3, 4, 5, 5, 7, 8];
    ago.iter()
        .enumerate()
        .map(|(i, m)| {
            run(
                &format!("m{i}"),
                Some(&format!("daily_n{i}")),
                "success",
                m * MINUTE,
            )
        })
        .collect()
}

fn quick_poll() -> PollConfig {
    PollConfig {
        interval: Duration::from_millis(400),
        timeout: Duration::from_millis(350),
        request_timeout: Duration::from_millis(300),
        ..fast_poll()
    }
}

async fn world() -> Simulator {
    let sim = sim(SimConfig::default()).await;
    sim.set_jobs(PID, "etl", etl_jobs());
    sim.set_jobs(PID, "many", many_jobs());
    sim
}

fn polled(t: &str) -> bool {
    value(t, &queue_series("dli_poll_success", "etl")) == Some(1.0)
        && value(t, &queue_series("dli_poll_success", "many")) == Some(1.0)
}

#[tokio::test]
async fn recurring_names_report_their_last_runs_and_follow_new_runs() {
    let sim = world().await;
    let mut settings = settings(vec![project(&sim, &["etl", "many"], aksk())], quick_poll());
    settings.metrics.job_names = vec!["daily_.*".into(), "weekly_report".into()];
    settings.metrics.max_job_names_per_queue = 5;
    let app = start(&settings).await;
    let client = http();
    wait_ready(&client, &app).await;
    let t = eventually(&client, &app, "both queues polled", polled).await;
    promtool_check(&t);

    // The newest run died after a success.
    assert_eq!(last_state(&t, "etl", "daily_etl").as_deref(), Some("dead"));
    assert_eq!(
        value(&t, &start_of("etl", "daily_etl")),
        Some(secs(T0_MS - HOUR))
    );
    assert_eq!(
        value(&t, &success_of("etl", "daily_etl")),
        Some(secs(T0_MS - 3 * HOUR + MINUTE)),
        "the success's update_time"
    );
    assert_eq!(value(&t, &duration_of("etl", "daily_etl")), Some(60.0));

    // The newest run is still running: the last finished run (dead) gives the duration.
    assert_eq!(
        last_state(&t, "etl", "daily_load").as_deref(),
        Some("running")
    );
    assert_eq!(
        value(&t, &start_of("etl", "daily_load")),
        Some(secs(T0_MS - 10 * MINUTE))
    );
    assert_eq!(
        value(&t, &success_of("etl", "daily_load")),
        Some(secs(T0_MS - 2 * HOUR + MINUTE))
    );
    assert_eq!(value(&t, &duration_of("etl", "daily_load")), Some(60.0));

    // No successful run retained: no last success, a duration from the dead run.
    assert_eq!(
        last_state(&t, "etl", "daily_new").as_deref(),
        Some("starting")
    );
    assert_eq!(value(&t, &success_of("etl", "daily_new")), None);
    assert_eq!(value(&t, &duration_of("etl", "daily_new")), Some(60.0));

    // An undocumented state: itself at 1, every known state at 0; nothing finished.
    assert_eq!(
        last_state(&t, "etl", "daily_odd").as_deref(),
        Some("queued")
    );
    assert_eq!(
        value(&t, &state_of("etl", "daily_odd", "queued")),
        Some(1.0)
    );
    assert_eq!(value(&t, &duration_of("etl", "daily_odd")), None);

    // Names the regexes do not match whole, and jobs without a name, have no series.
    for name in ["adhoc_query", "my_daily_etl", "weekly_report", ""] {
        assert!(
            !t.contains(&format!("job_name=\"{name}\"")),
            "{name:?} must not be exported:\n{t}"
        );
    }
    assert_eq!(value(&t, &dropped("etl")), Some(0.0));

    // The cap: the five names whose newest run is newest; n4 beats n5 (same time) by name.
    for i in 0..8 {
        let kept = [0, 1, 2, 3, 4].contains(&i);
        assert_eq!(
            last_state(&t, "many", &format!("daily_n{i}")).is_some(),
            kept,
            "daily_n{i}"
        );
    }
    assert_eq!(value(&t, &dropped("many")), Some(3.0));

    // A new run of daily_etl is submitted, and daily_load's running run finishes.
    sim.insert_front(
        PID,
        "etl",
        vec![run("e3", Some("daily_etl"), "starting", MINUTE)],
    );
    let load_end = T0_MS - 2 * MINUTE;
    assert!(sim.update_job(PID, "etl", "l3", |j| {
        j.state = "success".into();
        j.update_time = load_end;
        j.duration = 8 * MINUTE;
    }));
    let t = eventually(&client, &app, "the new runs to show", |t| {
        value(t, &state_of("etl", "daily_load", "success")) == Some(1.0)
            && value(t, &state_of("etl", "daily_etl", "starting")) == Some(1.0)
    })
    .await;
    assert_eq!(
        last_state(&t, "etl", "daily_load").as_deref(),
        Some("success")
    );
    assert_eq!(
        value(&t, &success_of("etl", "daily_load")),
        Some(secs(load_end))
    );
    assert_eq!(value(&t, &duration_of("etl", "daily_load")), Some(480.0));
    assert_eq!(
        value(&t, &start_of("etl", "daily_etl")),
        Some(secs(T0_MS - MINUTE))
    );
    assert_eq!(
        value(&t, &success_of("etl", "daily_etl")),
        Some(secs(T0_MS - 3 * HOUR + MINUTE)),
        "a run in progress does not move the last success"
    );
    shutdown(app).await;
    sim.shutdown();
}

#[tokio::test]
async fn without_job_names_there_are_no_job_name_series() {
    let sim = world().await;
    let settings = settings(vec![project(&sim, &["etl", "many"], aksk())], quick_poll());
    let app = start(&settings).await;
    let client = http();
    wait_ready(&client, &app).await;
    let t = eventually(&client, &app, "both queues polled", polled).await;
    assert!(value(&t, &jobs_series("etl", "dead")).is_some(), "{t}");
    assert!(!t.contains("dli_batch_job_last_"), "{t}");
    assert!(!t.contains("dli_batch_job_names_dropped"), "{t}");
    shutdown(app).await;
    sim.shutdown();
}
