//! The project id looked up from the region (one, none, several matches; AK/SK and token auth;
//! at start, on reload, in `--once`), and the binary's modes with discovery: `--check-config`
//! (offline: it says what is discovered and what is looked up), `--once` and the daemon.

mod common;

use std::time::Duration;

use common::child::spawn_in_tempdir;
use common::*;
use dli_exporter::app::{App, StartError, StartOptions};
use dli_exporter::config::{Project, QueueFilter, Settings};
use dli_exporter::sim::{
    DEMO_ACCESS_KEY, DEMO_REGION, DEMO_SECRET_KEY, SimConfig, SimQueue, Simulator,
};

const WITHIN: Duration = Duration::from_secs(10);
const OTHER_ID: &str = "ffffffffffffffffffffffffffffffff";

/// A discovering project of `DEMO_REGION` without a project id.
fn by_region(sim: &Simulator, credentials: dli_exporter::config::Credentials) -> Project {
    Project {
        project_id: String::new(),
        project_id_from_region: true,
        discover: Some(QueueFilter::default()),
        ..project(sim, &[], credentials)
    }
}

async fn world() -> Simulator {
    let s = sim(SimConfig::default()).await;
    s.set_jobs(PID, "etl", numbered_jobs("e", 5));
    s.set_queue_list(PID, vec![SimQueue::new("etl", "general")]);
    s
}

async fn launch(settings: Settings) -> Result<App, StartError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    App::launch(settings, listener, StartOptions::default()).await
}

fn polled(text: &str, queue: &str) -> bool {
    value(
        text,
        &format!("dli_poll_success{{project_id=\"{PID}\",queue=\"{queue}\"}}"),
    ) == Some(1.0)
}

#[tokio::test]
async fn one_project_of_the_region_is_looked_up_and_polled() {
    let s = world().await;
    for token in [false, true] {
        s.reset_stats();
        let credentials = if token { token_auth(&s) } else { aksk() };
        let app = launch(settings(vec![by_region(&s, credentials)], fast_poll()))
            .await
            .unwrap_or_else(|e| panic!("starts (token: {token}): {e}"));
        let text = wait_for(&http(), &app, "etl polled", WITHIN, |t| polled(t, "etl")).await;
        let (projects, tokens) = (
            value(&text, "dli_api_requests_total{operation=\"list_projects\"}"),
            value(&text, "dli_api_requests_total{operation=\"iam_token\"}"),
        );
        if token {
            // Token auth: a login scoped by the region's name names the project.
            assert_eq!(projects, Some(0.0), "{text}");
            assert!(tokens.unwrap_or(0.0) >= 2.0, "{text}");
            assert_eq!(s.stats().list_projects_requests, 0);
        } else {
            assert_eq!(projects, Some(1.0), "{text}");
            assert_eq!(s.stats().list_projects_requests, 1);
        }
        app.shutdown().await;
    }
    s.shutdown();
}

#[tokio::test]
async fn no_or_several_projects_of_the_region_refuse_to_start() {
    let s = world().await;
    s.add_iam_project(DEMO_REGION, OTHER_ID);
    let e = launch(settings(vec![by_region(&s, aksk())], fast_poll()))
        .await
        .err()
        .expect("ambiguous region refused");
    let msg = e.to_string();
    assert!(
        msg.contains("projects[0].project_id")
            && msg.contains(DEMO_REGION)
            && msg.contains(PID)
            && msg.contains(OTHER_ID),
        "{msg}"
    );

    s.remove_iam_projects(DEMO_REGION);
    let e = launch(settings(vec![by_region(&s, aksk())], fast_poll()))
        .await
        .err()
        .expect("unknown region refused");
    let msg = e.to_string();
    assert!(
        msg.contains("projects[0].project_id")
            && msg.contains(DEMO_REGION)
            && msg.contains("no project"),
        "{msg}"
    );
    // Token auth: IAM refuses to scope a token to a project name it does not know.
    let e = launch(settings(vec![by_region(&s, token_auth(&s))], fast_poll()))
        .await
        .err()
        .expect("unknown region refused with token auth");
    assert!(e.to_string().contains(DEMO_REGION), "{e}");
    s.shutdown();
}

fn config_file(sim: &Simulator, project_id: Option<&str>, queues: &str) -> String {
    let id = project_id
        .map(|id| format!("project_id = \"{id}\"\n"))
        .unwrap_or_default();
    format!(
        r#"[poll]
interval = "1s"
timeout = "900ms"
request_timeout = "800ms"
retries = 0

[discovery]
interval = "1s"

[auth]
access_key = "{DEMO_ACCESS_KEY}"
secret_key = "{DEMO_SECRET_KEY}"
iam_endpoint = "{base}"

[[projects]]
{id}region = "{DEMO_REGION}"
endpoint = "{base}"
{queues}
"#,
        base = sim.base_url()
    )
}

#[tokio::test]
async fn a_reload_whose_lookup_fails_keeps_the_old_configuration() {
    let s = world().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dli.toml");
    std::fs::write(&path, config_file(&s, None, "queues = [\"*\"]")).expect("write");
    let env = dli_exporter::config::Env::new();
    let loaded = dli_exporter::config::load(&path, &env).expect("valid");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let app = App::launch(
        loaded,
        listener,
        StartOptions {
            source: Some((path.clone(), env)),
            ..StartOptions::default()
        },
    )
    .await
    .expect("starts");
    let c = http();
    wait_for(&c, &app, "etl polled", WITHIN, |t| polled(t, "etl")).await;

    s.add_iam_project(DEMO_REGION, OTHER_ID);
    let e = app
        .reload()
        .await
        .expect_err("ambiguous region fails the reload");
    assert!(e.to_string().contains(OTHER_ID), "{e}");
    let text = scrape(&c, &app).await;
    assert_eq!(
        value(&text, "dli_exporter_config_last_reload_successful"),
        Some(0.0)
    );
    let last = value(
        &text,
        &format!(
            "dli_last_successful_poll_timestamp_seconds{{project_id=\"{PID}\",queue=\"etl\"}}"
        ),
    )
    .expect("etl polled");
    wait_for(&c, &app, "etl still polled with the old configuration", WITHIN, |t| {
        value(
            t,
            &format!("dli_last_successful_poll_timestamp_seconds{{project_id=\"{PID}\",queue=\"etl\"}}"),
        )
        .is_some_and(|v| v > last)
    })
    .await;
    s.remove_iam_projects(DEMO_REGION);
    s.map_project_name(DEMO_REGION, PID);
    app.reload().await.expect("reload succeeds again");
    app.shutdown().await;
    s.shutdown();
}

#[tokio::test]
async fn check_config_is_offline_and_says_what_is_discovered_and_looked_up() {
    // No simulator runs behind these URLs: --check-config must not need one.
    let text = r#"
[auth]
access_key = "AKEXAMPLE"
secret_key = "SKEXAMPLE"

[[projects]]
region = "cn-north-4"
queues = ["etl", "*"]
include_queues = ["etl_.*", "adhoc"]
exclude_queues = [".*_tmp"]

[[projects]]
project_id = "0a1b2c3d4e5f60718293a4b5c6d7e8f0"
region = "cn-east-3"
queues = ["reporting"]
"#;
    let mut child = spawn_in_tempdir(
        &["--check-config", "--config.file", "c.toml"],
        &[("c.toml", text)],
        &[],
    );
    let status = child.wait_exit(WITHIN).await;
    let out = child.stdout();
    assert_eq!(status.code(), Some(0), "{}", child.outputs());
    assert!(
        out.contains("project_id resolved at start from region cn-north-4"),
        "{out}"
    );
    assert!(out.contains("queues etl"), "{out}");
    assert!(
        out.contains("discovered: the queues the queue list shows with queue_type general or all, matching \"etl_.*\", \"adhoc\", not matching \".*_tmp\""),
        "{out}"
    );
    assert!(out.contains("queues reporting"), "{out}");
    assert!(out.contains("discovered: none"), "{out}");
    assert!(!out.contains("SKEXAMPLE"), "{out}");
}

#[tokio::test]
async fn check_config_names_bad_regexes_and_filters_without_discovery() {
    let text = r#"
[auth]
access_key = "AKEXAMPLE"
secret_key = "SKEXAMPLE"

[[projects]]
project_id = "p1"
region = "cn-north-4"
include_queues = ["ok", "bad("]

[[projects]]
project_id = "p2"
region = "cn-north-4"
queues = ["etl"]
exclude_queues = ["tmp"]
"#;
    let mut child = spawn_in_tempdir(
        &["--check-config", "--config.file", "c.toml"],
        &[("c.toml", text)],
        &[],
    );
    let status = child.wait_exit(WITHIN).await;
    let err = child.stderr();
    assert_eq!(status.code(), Some(1), "{}", child.outputs());
    assert!(err.contains("projects[0].include_queues[1]"), "{err}");
    assert!(err.contains("projects[1].exclude_queues"), "{err}");
}

#[tokio::test]
async fn once_discovers_and_looks_up_then_polls() {
    let s = world().await;
    s.add_queue(PID, SimQueue::new("default", "sql"));
    let mut child = spawn_in_tempdir(
        &["--once", "--config.file", "c.toml"],
        &[("c.toml", &config_file(&s, None, ""))],
        &[],
    );
    let status = child.wait_exit(WITHIN).await;
    let out = child.stdout();
    assert_eq!(status.code(), Some(0), "{}", child.outputs());
    assert!(polled(&out, "etl"), "{out}");
    assert!(!out.contains("queue=\"default\""), "{out}");
    assert!(
        out.contains(&format!("dli_discovered_queues{{project_id=\"{PID}\"}} 1")),
        "{out}"
    );
    assert!(out.contains("dli_queue_info{"), "{out}");
    assert!(
        out.contains("dli_api_requests_total{operation=\"list_projects\"} 1"),
        "{out}"
    );

    // A failing lookup: exit 1 naming the region.
    s.remove_iam_projects(DEMO_REGION);
    let mut child = spawn_in_tempdir(
        &["--once", "--config.file", "c.toml"],
        &[("c.toml", &config_file(&s, None, ""))],
        &[],
    );
    let status = child.wait_exit(WITHIN).await;
    assert_eq!(status.code(), Some(1), "{}", child.outputs());
    assert!(child.stderr().contains(DEMO_REGION), "{}", child.outputs());
    s.shutdown();
}

#[tokio::test]
async fn the_daemon_refuses_to_start_when_the_region_is_ambiguous() {
    let s = world().await;
    s.add_iam_project(DEMO_REGION, OTHER_ID);
    let mut child = spawn_in_tempdir(
        &[
            "--config.file",
            "c.toml",
            "--web.listen-address",
            "127.0.0.1:0",
        ],
        &[("c.toml", &config_file(&s, None, "queues = [\"*\"]"))],
        &[],
    );
    let status = child.wait_exit(WITHIN).await;
    assert_eq!(status.code(), Some(1), "{}", child.outputs());
    let err = child.stderr();
    assert!(
        err.contains(PID) && err.contains(OTHER_ID) && err.contains(DEMO_REGION),
        "{err}"
    );
    s.shutdown();
}

#[tokio::test]
async fn a_reload_keeps_every_projects_snapshots_while_discovery_restarts() {
    let s = world().await;
    const P2: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f0";
    s.set_jobs(P2, "etl2", numbered_jobs("p2", 4));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dli.toml");
    let text = format!(
        "{}\n[[projects]]\nproject_id = \"{P2}\"\nregion = \"cn-east-3\"\nendpoint = \"{}\"\nqueues = [\"etl2\"]\n",
        config_file(&s, None, "queues = [\"*\"]"),
        s.base_url()
    );
    std::fs::write(&path, text).expect("write");
    let env = dli_exporter::config::Env::new();
    let loaded = dli_exporter::config::load(&path, &env).expect("valid");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let app = App::launch(
        loaded,
        listener,
        StartOptions {
            source: Some((path.clone(), env)),
            ..StartOptions::default()
        },
    )
    .await
    .expect("starts");
    let c = http();
    let p2_jobs = format!("dli_batch_jobs{{project_id=\"{P2}\",queue=\"etl2\",state=\"running\"}}");
    let etl_jobs =
        format!("dli_batch_jobs{{project_id=\"{PID}\",queue=\"etl\",state=\"running\"}}");
    wait_for(&c, &app, "both projects polled", WITHIN, |t| {
        value(t, &p2_jobs).is_some() && value(t, &etl_jobs).is_some()
    })
    .await;
    app.reload().await.expect("reload");
    let text = scrape(&c, &app).await;
    assert_eq!(value(&text, &p2_jobs), Some(1.0), "kept snapshot:\n{text}");
    assert_eq!(
        value(&text, &etl_jobs),
        Some(1.0),
        "kept discovered queue:\n{text}"
    );
    app.shutdown().await;
    s.shutdown();
}
