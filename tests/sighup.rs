//! SIGHUP reloads the configuration of the real binary, like `POST /-/reload`, and never
//! stops the process.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use dli_exporter::sim::{DEMO_ACCESS_KEY, DEMO_SECRET_KEY, SimConfig};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(endpoint: &str, queues: &str) -> String {
    format!(
        "[poll]\ninterval = \"300ms\"\ntimeout = \"250ms\"\nrequest_timeout = \"200ms\"\n\
         [auth]\naccess_key = \"{DEMO_ACCESS_KEY}\"\nsecret_key = \"{DEMO_SECRET_KEY}\"\n\
         [[projects]]\nproject_id = \"{PID}\"\nendpoint = \"{endpoint}\"\nqueues = [{queues}]\n"
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn wait_for(url: &str, pred: impl Fn(&str) -> bool) -> String {
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = http.get(url).send().await
            && let Ok(text) = r.text().await
            && pred(&text)
        {
            return text;
        }
        assert!(Instant::now() < deadline, "timed out waiting on {url}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[tokio::test]
async fn sighup_reloads_and_sigterm_exits_zero() {
    let sim = sim(SimConfig::default()).await;
    sim.set_jobs(PID, "etl", numbered_jobs("e", 4));
    sim.set_jobs(PID, "adhoc", numbered_jobs("a", 6));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config(&sim.base_url(), "\"etl\"")).expect("write");
    let port = free_port();
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_dli_exporter"))
            .arg("--config.file")
            .arg(&path)
            .arg("--web.listen-address")
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("binary starts"),
    );
    let url = format!("http://127.0.0.1:{port}/metrics");
    wait_for(&url, |t| t.contains("queue=\"etl\",state=\"running\"")).await;

    std::fs::write(&path, config(&sim.base_url(), "\"etl\", \"adhoc\"")).expect("write");
    signal(&child.0, "HUP");
    let text = wait_for(&url, |t| t.contains("queue=\"adhoc\",state=\"running\"")).await;
    assert!(text.contains("dli_exporter_config_last_reload_successful 1"));
    assert!(
        child.0.try_wait().expect("status").is_none(),
        "SIGHUP must not stop the exporter"
    );

    // A broken file on SIGHUP: the process keeps running the old configuration.
    std::fs::write(&path, "not toml [").expect("write");
    signal(&child.0, "HUP");
    wait_for(&url, |t| {
        t.contains("dli_exporter_config_last_reload_successful 0")
    })
    .await;
    assert!(child.0.try_wait().expect("status").is_none());

    signal(&child.0, "TERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = child.0.try_wait().expect("status") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "SIGTERM did not stop the exporter"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0));
}
