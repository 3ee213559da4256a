//! SIGHUP reloads the configuration of the real binary, like `POST /-/reload`, and never
//! stops the process.

mod common;

use std::time::Duration;

use common::child;
use common::*;
use dli_exporter::sim::SimConfig;

#[tokio::test]
async fn sighup_reloads_and_sigterm_exits_zero() {
    let sim = sim(SimConfig::default()).await;
    sim.set_jobs(PID, "etl", numbered_jobs("e", 4));
    sim.set_jobs(PID, "adhoc", numbered_jobs("a", 6));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, demo_config_toml(&sim, &["etl"])).expect("write");
    let listen = child::free_listen_address();
    let mut child = child::spawn(
        dir.path(),
        "sighup",
        &["--config.file", "c.toml", "--web.listen-address", &listen],
        &[],
    );
    let url = format!("http://{listen}/metrics");
    let within = Duration::from_secs(10);
    child
        .scrape_until(&url, "etl exported", within, |t| {
            t.contains("queue=\"etl\",state=\"running\"")
        })
        .await;

    std::fs::write(&path, demo_config_toml(&sim, &["etl", "adhoc"])).expect("write");
    child.signal("HUP");
    let text = child
        .scrape_until(&url, "adhoc exported after SIGHUP", within, |t| {
            t.contains("queue=\"adhoc\",state=\"running\"")
        })
        .await;
    assert!(text.contains("dli_exporter_config_last_reload_successful 1"));
    // SIGHUP must not stop the exporter.
    child.assert_running();

    // A broken file on SIGHUP: the process keeps running the old configuration.
    std::fs::write(&path, "not toml [").expect("write");
    child.signal("HUP");
    child
        .scrape_until(&url, "the failed reload reported", within, |t| {
            t.contains("dli_exporter_config_last_reload_successful 0")
        })
        .await;
    child.assert_running();

    let status = child.terminate(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(0), "{}", child.outputs());
}
