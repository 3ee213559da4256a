//! The real binary as a child process: `--check-config`, `--once`, the daemon and its signals,
//! `--demo`, `--help` and `--version` (docs/architecture.md, "Command line"; `--probe` has its own
//! file, tests/probe.rs).
//!
//! Every child runs with a cleared environment (no proxies, no stray `DLI_EXPORTER__*` or
//! `HUAWEICLOUD_SDK_*`), writes its output to files in a temporary directory, and is killed by
//! [`ChildGuard`] if the test fails or times out.

mod common;

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use common::child::{self, ChildGuard};
use common::*;
use dli_exporter::sim::{
    DEMO_ACCESS_KEY, DEMO_PROJECT_ID, DEMO_SECRET_KEY, Fault, FaultRule, SimConfig, SimJob,
    Simulator,
};

/// Starts the binary with `args` in a fresh temporary directory (its working directory), with
/// `files` written there first and a cleared environment plus `env`.
fn spawn(args: &[&str], files: &[(&str, &str)], env: &[(&str, &str)]) -> ChildGuard {
    child::spawn_in_tempdir(args, files, env)
}

/// Runs the binary to completion (at most `within`) and returns it exited.
async fn run(args: &[&str], files: &[(&str, &str)], within: Duration) -> (ExitStatus, ChildGuard) {
    let mut child = spawn(args, files, &[]);
    let status = child.wait_exit(within).await;
    (status, child)
}

/// `--once` with `config` as its file (at most 20 s).
async fn run_once(config: &str) -> (ExitStatus, ChildGuard) {
    run(
        &["--once", "--config.file", "c.toml"],
        &[("c.toml", config)],
        Duration::from_secs(20),
    )
    .await
}

/// `--check-config` of the file `name` (written from `files`, if there) (at most 10 s).
async fn check_config(name: &str, files: &[(&str, &str)]) -> (ExitStatus, ChildGuard) {
    run(
        &["--check-config", "--config.file", name],
        files,
        Duration::from_secs(10),
    )
    .await
}

/// The daemon with `config` as its file, on a free loopback port: the child and its
/// listen address.
fn spawn_daemon(config: &str) -> (ChildGuard, String) {
    let listen = child::free_listen_address();
    let child = spawn(
        &["--config.file", "c.toml", "--web.listen-address", &listen],
        &[("c.toml", config)],
        &[],
    );
    (child, listen)
}

fn poll_success_series(queue: &str) -> String {
    queue_series("dli_poll_success", queue)
}

const AK: &str = "AKCHECKCONFIG0000001";
const SK: &str = "SKcheckConfigTopSecret000000000000000000";

/// A config for `--check-config`: default credentials in `[auth]`, two queues.
fn check_config_toml(poll: &str, queues: &str) -> String {
    format!(
        r#"[poll]
{poll}

[auth]
kind = "aksk"
access_key = "{AK}"
secret_key = "{SK}"

[[projects]]
project_id = "{DEMO_PROJECT_ID}"
region = "cn-north-4"
queues = {queues}
"#
    )
}

const GOOD_POLL: &str = "interval = \"30s\"\ntimeout = \"20s\"\nrequest_timeout = \"5s\"";

#[tokio::test]
async fn check_config_accepts_a_good_file_without_printing_secrets() {
    let good = check_config_toml(GOOD_POLL, r#"["etl", "adhoc"]"#);
    let (status, child) = check_config("good.toml", &[("good.toml", &good)]).await;
    let (out, err) = (child.stdout(), child.stderr());
    assert_eq!(status.code(), Some(0), "{}", child.outputs());
    assert!(out.contains(DEMO_PROJECT_ID), "{out}");
    assert!(out.contains("etl, adhoc"), "queues listed: {out}");
    assert!(out.contains("aksk"), "auth kind shown: {out}");
    assert!(out.contains("configuration OK"), "{out}");
    for secret in [AK, SK] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "{secret} printed\n{}",
            child.outputs()
        );
    }

    // Secrets from the environment are not printed either.
    let from_env = good
        .replace(&format!("access_key = \"{AK}\"\n"), "")
        .replace(&format!("secret_key = \"{SK}\"\n"), "");
    let mut child = spawn(
        &["--check-config", "--config.file", "env.toml"],
        &[("env.toml", &from_env)],
        &[("HUAWEICLOUD_SDK_AK", AK), ("HUAWEICLOUD_SDK_SK", SK)],
    );
    let status = child.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", child.outputs());
    let all = child.outputs();
    assert!(all.contains("configuration OK"), "{all}");
    assert!(
        !all.contains(AK) && !all.contains(SK),
        "secret printed\n{all}"
    );
}

#[tokio::test]
async fn check_config_rejects_bad_files_naming_the_key() {
    let cases = [
        (
            "timeout not below interval",
            check_config_toml(
                "interval = \"30s\"\ntimeout = \"30s\"\nrequest_timeout = \"5s\"",
                r#"["etl"]"#,
            ),
            vec!["poll.timeout"],
        ),
        (
            "unknown key",
            check_config_toml(&format!("{GOOD_POLL}\nintervall = \"1m\""), r#"["etl"]"#),
            // The key, and where it stands: line 5 of the file.
            vec!["intervall", "line 5"],
        ),
        (
            "empty queue list",
            check_config_toml(GOOD_POLL, "[]"),
            vec!["projects[0].queues"],
        ),
    ];
    for (what, text, expected) in cases {
        let (status, child) = check_config("bad.toml", &[("bad.toml", &text)]).await;
        assert_eq!(status.code(), Some(1), "{what}\n{}", child.outputs());
        let err = child.stderr();
        for needle in expected {
            assert!(
                err.contains(needle),
                "{what}: stderr lacks {needle:?}\n{err}"
            );
        }
        assert!(
            !child.stdout().contains("configuration OK"),
            "{what}\n{}",
            child.outputs()
        );
        assert!(
            !child.outputs().contains(SK),
            "{what}: secret printed\n{}",
            child.outputs()
        );
    }

    // A missing file is named too.
    let (status, child) = check_config("missing.toml", &[]).await;
    assert_eq!(status.code(), Some(1), "{}", child.outputs());
    assert!(
        child.stderr().contains("missing.toml"),
        "{}",
        child.outputs()
    );
}

/// A quick poll schedule: every 2 s, one retry.
const QUICK_POLL: &str =
    "interval = \"2s\"\ntimeout = \"1500ms\"\nrequest_timeout = \"1s\"\nretries = 1";

/// A config that polls `sim` with the simulator's demo credentials (or another secret key).
fn sim_config(sim: &Simulator, queues: &[&str], secret_key: &str) -> String {
    sim_config_with_poll(sim, queues, secret_key, QUICK_POLL)
}

/// [`sim_config`] with its own `[poll]` lines.
fn sim_config_with_poll(sim: &Simulator, queues: &[&str], secret_key: &str, poll: &str) -> String {
    let queues: Vec<String> = queues.iter().map(|q| format!("{q:?}")).collect();
    format!(
        r#"[poll]
{poll}

[auth]
kind = "aksk"
access_key = "{DEMO_ACCESS_KEY}"
secret_key = "{secret_key}"

[[projects]]
project_id = "{PID}"
region = "cn-north-4"
endpoint = "{}"
queues = [{}]
"#,
        sim.base_url(),
        queues.join(", ")
    )
}

fn job(id: &str, state: &str, owner: Option<&str>) -> SimJob {
    SimJob::new(id, state, owner, T0_MS)
}

/// etl: 2 running, 1 success, 1 dead; adhoc: 1 starting; broken: 1 running.
async fn sim_with_jobs() -> Simulator {
    let sim = sim(SimConfig::default()).await;
    sim.set_jobs(
        PID,
        "etl",
        vec![
            job("e1", "running", Some("alice")),
            job("e2", "running", Some("bob")),
            job("e3", "success", Some("alice")),
            job("e4", "dead", None),
        ],
    );
    sim.set_jobs(PID, "adhoc", vec![job("h1", "starting", Some("carol"))]);
    sim.set_jobs(PID, "broken", vec![job("x1", "running", Some("dave"))]);
    sim
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_prints_the_exposition_and_exits_zero() {
    let sim = sim_with_jobs().await;
    let config = sim_config(&sim, &["etl", "adhoc"], DEMO_SECRET_KEY);
    let (status, child) = run_once(&config).await;
    assert_eq!(status.code(), Some(0), "{}", child.outputs());
    let out = child.stdout();
    for (queue, state, n) in [
        ("etl", "starting", 0.0),
        ("etl", "running", 2.0),
        ("etl", "recovering", 0.0),
        ("etl", "success", 1.0),
        ("etl", "dead", 1.0),
        ("adhoc", "starting", 1.0),
        ("adhoc", "running", 0.0),
    ] {
        assert_eq!(
            value(&out, &jobs_series(queue, state)),
            Some(n),
            "{queue}/{state}\n{out}"
        );
    }
    assert_eq!(
        value(
            &out,
            &format!(
                "dli_batch_jobs_by_owner{{owner=\"__unknown__\",project_id=\"{PID}\",queue=\"etl\",state=\"dead\"}}"
            )
        ),
        Some(1.0),
        "{out}"
    );
    assert_eq!(value(&out, &poll_success_series("etl")), Some(1.0));
    assert_eq!(value(&out, &poll_success_series("adhoc")), Some(1.0));
    assert_eq!(value(&out, "dli_up"), Some(1.0), "{out}");
    // stdout is the exposition and nothing else (logs go to stderr).
    assert!(
        out.lines().all(|l| l.starts_with("# HELP ")
            || l.starts_with("# TYPE ")
            || l.starts_with("dli_")
            || l.starts_with("process_")),
        "stdout is not a clean exposition\n{out}"
    );
    promtool_check(&out);
    assert!(
        !child.outputs().contains(DEMO_SECRET_KEY),
        "{}",
        child.outputs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_exits_one_naming_the_failing_queue() {
    let sim = sim_with_jobs().await;
    sim.add_fault(FaultRule::always(Fault::status(500, "DLI.0999", "boom")).queue("broken"));
    let config = sim_config(&sim, &["etl", "broken"], DEMO_SECRET_KEY);
    let (status, child) = run_once(&config).await;
    assert_eq!(status.code(), Some(1), "{}", child.outputs());
    let (out, err) = (child.stdout(), child.stderr());
    assert!(err.contains("broken"), "stderr names the queue\n{err}");
    assert!(
        err.contains("DLI.0999"),
        "stderr carries the DLI error\n{err}"
    );
    // The healthy queue is still exported.
    assert_eq!(
        value(&out, &jobs_series("etl", "running")),
        Some(2.0),
        "{out}"
    );
    assert_eq!(value(&out, &poll_success_series("etl")), Some(1.0), "{out}");
    assert_eq!(
        value(&out, &poll_success_series("broken")),
        Some(0.0),
        "{out}"
    );
    assert!(
        !out.contains("queue=\"broken\",state="),
        "no job series for the failed queue\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_exits_one_with_a_wrong_secret_key() {
    let sim = sim_with_jobs().await;
    let wrong = "wrongSecretKey00000000000000000000000000";
    let config = sim_config(&sim, &["etl"], wrong);
    let started = Instant::now();
    let (status, child) = run_once(&config).await;
    assert_eq!(status.code(), Some(1), "{}", child.outputs());
    let err = child.stderr();
    assert!(err.contains("etl"), "stderr names the queue\n{err}");
    assert!(
        err.contains("401"),
        "stderr shows the authentication failure\n{err}"
    );
    assert!(
        !child.outputs().contains(wrong),
        "secret printed\n{}",
        child.outputs()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "auth failures are not retried: took {:?}",
        started.elapsed()
    );
    assert!(sim.stats().auth_rejections >= 1);
}

/// Starts the daemon on a free port against `sim`, waits until both queues are exported, sends
/// `signal`, and expects exit code 0 within a few seconds.
async fn daemon_stops_on(signal: &str) {
    let sim = sim_with_jobs().await;
    let config = sim_config(&sim, &["etl", "adhoc"], DEMO_SECRET_KEY);
    let (mut child, listen) = spawn_daemon(&config);
    let url = format!("http://{listen}/metrics");
    let text = child
        .scrape_until(&url, "both queues exported", Duration::from_secs(10), |t| {
            value(t, &poll_success_series("etl")) == Some(1.0)
                && value(t, &poll_success_series("adhoc")) == Some(1.0)
        })
        .await;
    assert_eq!(
        value(&text, &jobs_series("etl", "running")),
        Some(2.0),
        "{text}"
    );
    assert_eq!(value(&text, "dli_up"), Some(1.0), "{text}");

    child.signal(signal);
    let status = child.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "SIG{signal}: {status}\n{}",
        child.outputs()
    );
    assert!(
        !child.outputs().contains(DEMO_SECRET_KEY),
        "secret logged\n{}",
        child.outputs()
    );
    assert!(
        std::net::TcpStream::connect(&listen).is_err(),
        "nothing listens on {listen} after the exit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_serves_metrics_and_exits_zero_on_sigterm() {
    daemon_stops_on("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_serves_metrics_and_exits_zero_on_sigint() {
    daemon_stops_on("INT").await;
}

/// A signal while a poll hangs inside a request (and before the exporter is ready) still ends
/// the process promptly with exit code 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_exits_zero_on_sigterm_while_a_poll_hangs() {
    let sim = sim_with_jobs().await;
    sim.add_fault(FaultRule::always(Fault::Hang).queue("adhoc"));
    // The hung request would only time out after 8 s: the exporter is not ready when signalled.
    let config = sim_config_with_poll(
        &sim,
        &["etl", "adhoc"],
        DEMO_SECRET_KEY,
        "interval = \"20s\"\ntimeout = \"10s\"\nrequest_timeout = \"8s\"",
    );
    let (mut child, listen) = spawn_daemon(&config);
    child
        .scrape_until(
            &format!("http://{listen}/metrics"),
            "the healthy queue exported",
            Duration::from_secs(10),
            |t| value(t, &poll_success_series("etl")) == Some(1.0),
        )
        .await;
    wait_until_hanging(&sim, "adhoc").await;
    let (ready, _) = get(&http(), &format!("http://{listen}/-/ready")).await;
    assert_eq!(ready, reqwest::StatusCode::SERVICE_UNAVAILABLE);
    child.signal("TERM");
    let status = child.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(0), "{status}\n{}", child.outputs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_mode_exports_both_queues() {
    let listen = child::free_listen_address();
    let mut child = spawn(&["--demo", "--web.listen-address", &listen], &[], &[]);
    let url = format!("http://{listen}/metrics");
    let complete = |t: &str| {
        ["etl", "adhoc"].iter().all(|q| {
            value(t, &poll_success_series(q)) == Some(1.0)
                && dli_exporter::sim::JOB_STATES
                    .iter()
                    .all(|s| value(t, &jobs_series(q, s)).is_some())
        }) && value(t, "dli_up") == Some(1.0)
    };
    let text = child
        .scrape_until(&url, "the demo queues", Duration::from_secs(10), complete)
        .await;
    for q in ["etl", "adhoc"] {
        let queue_label = format!("queue=\"{q}\"");
        assert!(
            text.lines().any(
                |l| l.starts_with("dli_batch_jobs_by_owner{owner=") && l.contains(&queue_label)
            ),
            "no owner breakdown for demo queue {q}\n{text}"
        );
        let total: f64 = dli_exporter::sim::JOB_STATES
            .iter()
            .filter_map(|s| value(&text, &jobs_series(q, s)))
            .sum();
        assert!(total > 0.0, "demo queue {q} has jobs\n{text}");
        // The recurring jobs (metrics.job_names) have their table, and only they do.
        let names: std::collections::BTreeSet<&str> = text
            .lines()
            .filter(|l| l.starts_with("dli_batch_job_last_run_start_timestamp_seconds{"))
            .filter(|l| l.contains(&queue_label))
            .filter_map(|l| l.split("job_name=\"").nth(1)?.split('"').next())
            .collect();
        assert!(
            !names.is_empty(),
            "no recurring job in demo queue {q}\n{text}"
        );
        assert!(
            names
                .iter()
                .all(|n| dli_exporter::sim::LIVELY_RECURRING_JOBS.contains(n)),
            "{names:?}"
        );
        assert_eq!(
            value(&text, &queue_series("dli_batch_job_names_dropped", q)),
            Some(0.0)
        );
    }

    // One more poll (every 5 s in the demo) moves the last-success timestamp.
    let series = queue_series("dli_last_successful_poll_timestamp_seconds", "etl");
    let first = value(&text, &series).expect("last success timestamp");
    child
        .scrape_until(&url, "a second demo poll", Duration::from_secs(8), |t| {
            value(t, &series).is_some_and(|v| v > first)
        })
        .await;

    child.signal("TERM");
    let status = child.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(0), "{status}\n{}", child.outputs());
}

#[tokio::test]
async fn help_lists_every_mode_and_the_modes_exclude_each_other() {
    let (status, child) = run(&["--help"], &[], Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", child.outputs());
    let help = child.stdout();
    for flag in [
        "--check-config",
        "--once",
        "--probe",
        "--demo",
        "--config.file",
    ] {
        assert!(help.contains(flag), "{flag} in --help:\n{help}");
    }
    assert!(help.contains("at most 50 read-only"), "{help}");
    for other in ["--once", "--check-config", "--demo"] {
        let (status, child) = run(&["--probe", other], &[], Duration::from_secs(10)).await;
        assert_eq!(
            status.code(),
            Some(2),
            "--probe {other}: {}",
            child.outputs()
        );
        assert!(
            child.stderr().contains("cannot be used with"),
            "{}",
            child.outputs()
        );
    }
}

#[tokio::test]
async fn version_shows_version_revision_and_rustc() {
    let (status, child) = run(&["--version"], &[], Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", child.outputs());
    let out = child.stdout();
    let line = out.trim();
    let rest = line
        .strip_prefix(&format!(
            "dli_exporter {} (revision ",
            env!("CARGO_PKG_VERSION")
        ))
        .unwrap_or_else(|| panic!("unexpected --version output {line:?}"));
    let (revision, rest) = rest.split_once(", rustc ").expect("rustc part");
    let rustc = rest.strip_suffix(')').expect("closing parenthesis");
    assert!(
        !revision.is_empty() && revision.chars().all(|c| c.is_ascii_alphanumeric()),
        "revision {revision:?}"
    );
    assert!(
        rustc.split('.').count() >= 3
            && rustc
                .split('.')
                .take(3)
                .all(|p| !p.is_empty() && p.chars().next().is_some_and(|c| c.is_ascii_digit())),
        "rustc version {rustc:?}"
    );
}

/// `dli_exporter_build_info` carries the same version, revision and rustc as `--version`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_info_matches_version() {
    let (_, version) = run(&["--version"], &[], Duration::from_secs(10)).await;
    let line = version.stdout();
    let sim = sim_with_jobs().await;
    let config = sim_config(&sim, &["adhoc"], DEMO_SECRET_KEY);
    let (status, child) = run_once(&config).await;
    assert_eq!(status.code(), Some(0), "{}", child.outputs());
    let out = child.stdout();
    let info = out
        .lines()
        .find(|l| l.starts_with("dli_exporter_build_info{"))
        .unwrap_or_else(|| panic!("no build info\n{out}"));
    // No label value here contains a quote or a comma.
    let labels = info
        .strip_prefix("dli_exporter_build_info{")
        .and_then(|r| r.split_once('}'))
        .expect("labels")
        .0;
    let label = |name: &str| {
        labels
            .split(',')
            .find_map(|pair| pair.strip_prefix(&format!("{name}=\"")))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_else(|| panic!("no {name} label in {info}"))
            .to_string()
    };
    assert!(info.ends_with(" 1"), "{info}");
    assert_eq!(
        line.trim(),
        format!(
            "dli_exporter {} (revision {}, rustc {})",
            label("version"),
            label("revision"),
            label("rustversion")
        )
    );
}
