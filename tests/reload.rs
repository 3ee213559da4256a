//! Reload as operators use it: an unchanged file changes nothing (no walk cancelled, no client
//! rebuilt, no new IAM login); a changed file restarts only the queues whose settings changed;
//! a broken web config applies nothing; a rejected reload never quotes a secret; and
//! `--web.enable-lifecycle=false` refuses `POST /-/reload` while SIGHUP still reloads.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::child;
use common::*;
use dli_exporter::app::{App, StartOptions};
use dli_exporter::config::Env;
use dli_exporter::sim::{
    DEMO_ACCESS_KEY, DEMO_DOMAIN, DEMO_PASSWORD, DEMO_SECRET_KEY, DEMO_USER, Fault, FaultRule,
    SimConfig, Simulator,
};
use dli_exporter::store::QueueKey;
use dli_exporter::web::WebConfigWatcher;
use tokio::net::TcpListener;

/// A second project, logging in with an IAM token (so a rebuilt client shows as a new login).
const TOKEN_PID: &str = "7070707070707070707070707070707a";

const SLOW_POLL: &str = "[poll]\ninterval = \"3s\"\ntimeout = \"2s\"\nrequest_timeout = \"1s\"\n";

/// The AK/SK project `PID` with `queues`, and the token project `TOKEN_PID` with queue `slow`
/// (plus `extra` lines in each project table).
fn config(sim: &Simulator, queues: &[&str], aksk_extra: &str, token_extra: &str) -> String {
    let url = sim.base_url();
    let queues: Vec<String> = queues.iter().map(|q| format!("\"{q}\"")).collect();
    format!(
        "{SLOW_POLL}[auth]\naccess_key = \"{DEMO_ACCESS_KEY}\"\nsecret_key = \"{DEMO_SECRET_KEY}\"\n\
         [[projects]]\nproject_id = \"{PID}\"\nendpoint = \"{url}\"\nqueues = [{}]\n{aksk_extra}\n\
         [[projects]]\nproject_id = \"{TOKEN_PID}\"\nendpoint = \"{url}\"\nqueues = [\"slow\"]\n{token_extra}\n\
         [projects.auth]\nkind = \"token\"\niam_endpoint = \"{url}\"\ndomain_name = \"{DEMO_DOMAIN}\"\n\
         user_name = \"{DEMO_USER}\"\npassword = \"{DEMO_PASSWORD}\"\n",
        queues.join(", ")
    )
}

/// ListBatches requests the simulator got for `project_id`.
fn requests(sim: &Simulator, project_id: &str) -> usize {
    sim.request_log()
        .iter()
        .filter(|r| r.project_id == project_id)
        .count()
}

/// Waits until `check` holds (state the exposition does not show: the store, the simulator).
async fn until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn succeeded(app: &App, project_id: &str, queue: &str) -> bool {
    let key = QueueKey::new(project_id, queue);
    app.store
        .view()
        .iter()
        .any(|(k, s)| *k == key && s.last_success)
}

async fn post_reload(app: &App) -> (u16, String) {
    let r = http()
        .post(format!("http://{}/-/reload", app.addr))
        .send()
        .await
        .expect("reload");
    let status = r.status().as_u16();
    (status, r.text().await.expect("body"))
}

async fn start_from(path: &Path, web: Option<&Path>) -> App {
    let settings = dli_exporter::config::load(path, &Env::new()).expect("valid config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    App::start_with(
        &settings,
        listener,
        StartOptions {
            source: Some((path.to_path_buf(), Env::new())),
            web: web.map(|w| WebConfigWatcher::load(w).expect("web config")),
            ..StartOptions::default()
        },
    )
    .expect("start")
}

/// The simulator: every `slow` request of the token project takes 700 ms.
async fn slow_sim() -> Simulator {
    let sim = sim(SimConfig::default()).await;
    sim.set_jobs(PID, "etl", numbered_jobs("e", 4));
    sim.set_jobs(PID, "adhoc", numbered_jobs("a", 4));
    sim.add_fault(FaultRule::always(Fault::Latency(Duration::from_millis(700))).queue("slow"));
    sim
}

#[tokio::test]
async fn reload_without_changes_keeps_walks_clients_and_tokens() {
    let sim = slow_sim().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config(&sim, &["etl"], "", "")).expect("write");
    let app = start_from(&path, None).await;
    // The slow queue's first walk (one request, the queue is empty) is in flight.
    until("the first slow request", Duration::from_secs(5), || {
        requests(&sim, TOKEN_PID) == 1
    })
    .await;
    let (status, body) = post_reload(&app).await;
    assert_eq!(status, 200, "{body}");
    app.reload().await.expect("reload");
    until("the slow walk's success", Duration::from_secs(5), || {
        succeeded(&app, TOKEN_PID, "slow")
    })
    .await;
    assert_eq!(
        requests(&sim, TOKEN_PID),
        1,
        "the walk in flight was cancelled and started again"
    );
    // The next interval polls with the same client and token: still one login.
    until("the second slow poll", Duration::from_secs(6), || {
        requests(&sim, TOKEN_PID) >= 2
    })
    .await;
    let (status, _) = post_reload(&app).await;
    assert_eq!(status, 200);
    assert_eq!(
        sim.stats().iam_token_requests,
        1,
        "a reload logged in again"
    );
    // Each project listed its queues once at start; the queue-list tasks were kept.
    assert_eq!(sim.stats().list_queues_requests, 2, "a reload listed again");
    assert!(succeeded(&app, PID, "etl"));
    shutdown(app).await;
}

#[tokio::test]
async fn reload_restarts_only_the_queues_whose_settings_changed() {
    let sim = slow_sim().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, common::net::test_pki(false).ca_pem).expect("write ca");
    let ca_line = format!("ca_file = \"{}\"", ca.display());
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config(&sim, &["etl"], "", "")).expect("write");
    let app = start_from(&path, None).await;
    until("the first slow request", Duration::from_secs(5), || {
        requests(&sim, TOKEN_PID) == 1
    })
    .await;

    // The AK/SK project gets a queue and a CA bundle (a new client); the token project is
    // untouched, so its walk goes on and its token stays.
    std::fs::write(&path, config(&sim, &["etl", "adhoc"], &ca_line, "")).expect("write");
    let (status, body) = post_reload(&app).await;
    assert_eq!(status, 200, "{body}");
    until("adhoc polled", Duration::from_secs(5), || {
        succeeded(&app, PID, "adhoc")
    })
    .await;
    until("the slow walk's success", Duration::from_secs(5), || {
        succeeded(&app, TOKEN_PID, "slow")
    })
    .await;
    assert_eq!(
        requests(&sim, TOKEN_PID),
        1,
        "the unchanged queue was restarted"
    );
    assert_eq!(sim.stats().iam_token_requests, 1);

    // The CA file's content changes under the same path: the token project's client is
    // rebuilt, which shows as a new login.
    std::fs::write(&path, config(&sim, &["etl", "adhoc"], &ca_line, &ca_line)).expect("write");
    assert_eq!(post_reload(&app).await.0, 200);
    until(
        "a login by the rebuilt client",
        Duration::from_secs(5),
        || sim.stats().iam_token_requests == 2,
    )
    .await;
    std::fs::write(&ca, common::net::test_pki(false).ca_pem).expect("rotate ca");
    assert_eq!(post_reload(&app).await.0, 200);
    until(
        "a login after the CA changed",
        Duration::from_secs(5),
        || sim.stats().iam_token_requests == 3,
    )
    .await;
    // Removing a queue removes only it.
    std::fs::write(&path, config(&sim, &["adhoc"], &ca_line, &ca_line)).expect("write");
    assert_eq!(post_reload(&app).await.0, 200);
    let keys: Vec<QueueKey> = app.store.view().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        vec![
            QueueKey::new(PID, "adhoc"),
            QueueKey::new(TOKEN_PID, "slow")
        ]
    );
    assert_eq!(sim.stats().iam_token_requests, 3);
    shutdown(app).await;
}

#[tokio::test]
async fn a_broken_web_config_fails_the_reload_and_applies_nothing() {
    let sim = slow_sim().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    let web = dir.path().join("web.yml");
    std::fs::write(&path, config(&sim, &["etl"], "", "")).expect("write");
    std::fs::write(&web, "{}\n").expect("write");
    let app = start_from(&path, Some(&web)).await;
    until("etl polled", Duration::from_secs(5), || {
        succeeded(&app, PID, "etl")
    })
    .await;

    std::fs::write(&path, config(&sim, &["etl", "adhoc"], "", "")).expect("write");
    std::fs::write(&web, "no_such_key: 1\n").expect("write");
    let (status, body) = post_reload(&app).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("no_such_key"), "{body}");
    let text = scrape(&http(), &app).await;
    assert!(text.contains("dli_exporter_config_last_reload_successful 0"));
    assert!(
        !app.store
            .view()
            .iter()
            .any(|(k, _)| *k == QueueKey::new(PID, "adhoc")),
        "the config file was applied although the reload failed"
    );

    // Both valid: both applied.
    std::fs::write(&web, "rate_limit:\n  interval: 1ms\n  burst: 1000\n").expect("write");
    let (status, body) = post_reload(&app).await;
    assert_eq!(status, 200, "{body}");
    until("adhoc polled", Duration::from_secs(5), || {
        succeeded(&app, PID, "adhoc")
    })
    .await;
    shutdown(app).await;
}

#[tokio::test]
async fn a_rejected_reload_never_quotes_a_secret() {
    let sim = slow_sim().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    let good = config(&sim, &["etl"], "", "");
    std::fs::write(&path, &good).expect("write");
    let app = start_from(&path, None).await;
    for (secret, shown) in [
        ("3.1415926535", "3.1415926535"),
        ("271828182845", "271828182845"),
        ("true", "= true"),
    ] {
        let broken = good.replace(&format!("\"{DEMO_SECRET_KEY}\""), secret);
        assert_ne!(broken, good);
        std::fs::write(&path, broken).expect("write");
        let (status, body) = post_reload(&app).await;
        assert_eq!(status, 500, "{secret}: {body}");
        assert!(body.contains("secret_key"), "{body}");
        assert!(!body.contains(shown), "{body}");
    }
    shutdown(app).await;
}

#[tokio::test]
async fn with_the_lifecycle_api_off_post_reload_is_refused_and_sighup_still_reloads() {
    let sim = slow_sim().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("c.toml"), config(&sim, &["etl"], "", "")).expect("write");
    let listen = child::free_listen_address();
    let mut daemon = child::spawn(
        dir.path(),
        "daemon",
        &[
            "--config.file",
            "c.toml",
            "--web.listen-address",
            &listen,
            "--web.enable-lifecycle=false",
        ],
        &[],
    );
    let base = format!("http://{listen}");
    let metrics_url = format!("{base}/metrics");
    daemon
        .scrape_until(&metrics_url, "etl polled", Duration::from_secs(10), |t| {
            t.contains("queue=\"etl\",state=\"running\"")
        })
        .await;
    std::fs::write(
        dir.path().join("c.toml"),
        config(&sim, &["etl", "adhoc"], "", ""),
    )
    .expect("write");
    let r = http()
        .post(format!("{base}/-/reload"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 403);
    let (_, text) = get(&http(), &metrics_url).await;
    assert!(
        !text.contains("queue=\"adhoc\""),
        "reloaded although refused"
    );
    daemon.signal("HUP");
    daemon
        .scrape_until(
            &metrics_url,
            "adhoc after SIGHUP",
            Duration::from_secs(10),
            |t| t.contains("queue=\"adhoc\",state=\"running\""),
        )
        .await;
    let status = daemon.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{}", daemon.outputs());
}
