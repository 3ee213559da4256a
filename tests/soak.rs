//! Soak: the real binary against the simulator, on loopback, for about two minutes, with
//! everything at once: DLI faults (5xx, 429 with Retry-After of a day and of u64::MAX, malformed
//! and truncated bodies, resets, hangs, latency, jobs inserted mid-walk), job churn, a reload
//! storm (POST /-/reload and SIGHUP, unchanged files, queues added and removed, broken files),
//! scrapes with basic auth, and clients that give up on wrong passwords. It asserts that the
//! steady queue keeps succeeding throughout, that no poll panicked, that the exporter answers
//! and recovers once the faults stop, and that its resident memory stays flat (the second half
//! of the run against the first).
//!
//! Ignored by plain `cargo test` for its length; CI runs it (`.ci/run`):
//! `cargo test --test soak -- --ignored --nocapture`. `DLI_EXPORTER_SOAK_SECS` changes the length.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::child::{self, ChildGuard};
use common::*;
use dli_exporter::sim::{
    DEMO_ACCESS_KEY, DEMO_DOMAIN, DEMO_PASSWORD, DEMO_SECRET_KEY, DEMO_USER, Fault, FaultRule,
    SimConfig, SimJob, Simulator,
};

const TOKEN_PID: &str = "50a450a450a450a450a450a450a450a4";
const USER: &str = "prometheus";
const PASSWORD: &str = "soak-password";

fn config(sim: &Simulator, with_churn: bool) -> String {
    let url = sim.base_url();
    let churn = if with_churn { ", \"churn\"" } else { "" };
    format!(
        "[poll]\ninterval = \"500ms\"\ntimeout = \"400ms\"\nrequest_timeout = \"300ms\"\n\
         page_size = 50\nretries = 1\nconcurrency = 4\nstale_after = \"30s\"\n\
         [auth]\naccess_key = \"{DEMO_ACCESS_KEY}\"\nsecret_key = \"{DEMO_SECRET_KEY}\"\n\
         [[projects]]\nproject_id = \"{PID}\"\nendpoint = \"{url}\"\n\
         queues = [\"steady\", \"flaky\"{churn}]\n\
         [[projects]]\nproject_id = \"{TOKEN_PID}\"\nendpoint = \"{url}\"\nqueues = [\"tok\"]\n\
         [projects.auth]\nkind = \"token\"\niam_endpoint = \"{url}\"\ndomain_name = \"{DEMO_DOMAIN}\"\n\
         user_name = \"{DEMO_USER}\"\npassword = \"{DEMO_PASSWORD}\"\n"
    )
}

/// VmRSS of `pid`, in bytes.
fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v[v.len() / 2]
}

/// `n` jobs named `{prefix}-…` in every state, created over the last hour.
fn jobs(prefix: &str, n: usize) -> Vec<SimJob> {
    const STATES: [&str; 5] = ["starting", "running", "recovering", "success", "dead"];
    let now = (dli_exporter::store::unix_now() * 1000.0) as i64;
    (0..n)
        .map(|i| {
            SimJob::new(
                format!("{prefix}-{i:05}"),
                STATES[i % 5],
                Some(["alice", "bob", "carol"][i % 3]),
                now - i as i64 * 7_000,
            )
        })
        .collect()
}

/// The faults the storm draws from, for queue `queue` (`None`: every queue of every project).
fn fault(i: u64, queue: Option<&str>) -> FaultRule {
    let action = match i % 10 {
        0 => Fault::status(503, "DLI.0999", "internal error\nwith a second line"),
        1 => Fault::Throttle {
            retry_after: Some(86_400),
        },
        2 => Fault::Throttle {
            retry_after: Some(u64::MAX),
        },
        3 => Fault::MalformedJson,
        4 => Fault::TruncatedJson,
        5 => Fault::ResetConnection,
        6 => Fault::Hang,
        7 => Fault::Latency(Duration::from_millis(150)),
        8 => Fault::InsertFront(3),
        _ => Fault::status(500, "APIGW.0101", &"x".repeat(5000)),
    };
    let rule = FaultRule::times(1 + (i % 3) as usize, action);
    match queue {
        Some(q) => rule.queue(q),
        None => rule,
    }
}

struct Exporter {
    base: String,
    child: ChildGuard,
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

async fn start(sim: &Simulator) -> Exporter {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("c.toml");
    std::fs::write(&config_path, config(sim, true)).expect("write");
    let hash = bcrypt::hash(PASSWORD, 4).expect("hash");
    std::fs::write(
        dir.path().join("web.yml"),
        format!("basic_auth_users:\n  {USER}: {hash}\n"),
    )
    .expect("write");
    let listen = child::free_listen_address();
    let child = child::spawn(
        dir.path(),
        "soak",
        &[
            "--config.file",
            "c.toml",
            "--web.config.file",
            "web.yml",
            "--web.listen-address",
            &listen,
            "--log.level",
            "warn",
        ],
        &[],
    );
    Exporter {
        base: format!("http://{listen}"),
        child,
        _dir: dir,
        config: config_path,
    }
}

/// A GET with the soak's basic-auth credentials; `None` when it got no answer.
async fn get_authed(client: &reqwest::Client, url: &str) -> Option<(u16, String)> {
    let r = client
        .get(url)
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak test, about two minutes; CI runs it with --ignored"]
async fn soak_faults_reload_storms_and_scrapes_keep_polls_succeeding_and_memory_flat() {
    let secs: u64 = std::env::var("DLI_EXPORTER_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(110);
    let run = Duration::from_secs(secs);
    let sim = Arc::new(sim(SimConfig::default()).await);
    sim.set_jobs(PID, "steady", jobs("s0", 300));
    sim.set_jobs(PID, "flaky", jobs("f0", 200));
    sim.set_jobs(PID, "churn", jobs("c0", 60));
    sim.set_jobs(TOKEN_PID, "tok", jobs("t0", 120));
    let mut exporter = start(&sim).await;
    let client = http();
    let metrics_url = format!("{}/metrics", exporter.base);

    // Ready first: every queue polled once.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        exporter.child.assert_running();
        if let Some((200, _)) = get_authed(&client, &format!("{}/-/ready", exporter.base)).await {
            break;
        }
        assert!(Instant::now() < deadline, "{}", exporter.child.outputs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new([
        AtomicU64::new(0), // scrapes answered 200
        AtomicU64::new(0), // scrapes failed
        AtomicU64::new(0), // reloads answered 200
        AtomicU64::new(0), // reloads answered 500
        AtomicU64::new(0), // faults added
    ]);
    let mut tasks = tokio::task::JoinSet::new();

    // Faults: one every 150 ms, mostly on the flaky and churning queues, now and then on all.
    {
        let (sim, stop, counters) = (sim.clone(), stop.clone(), counters.clone());
        tasks.spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let queue = match i % 7 {
                    0 => None,
                    1 | 2 => Some("churn"),
                    3 => Some("tok"),
                    _ => Some("flaky"),
                };
                sim.add_fault(fault(i, queue));
                counters[4].fetch_add(1, Ordering::Relaxed);
                i += 1;
                if i.is_multiple_of(40) {
                    // Keep the simulator's rule list short; used-up rules stay otherwise.
                    sim.clear_faults();
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        });
    }
    // Job churn: new ids, state changes, the queue size kept.
    {
        let (sim, stop) = (sim.clone(), stop.clone());
        tasks.spawn(async move {
            let mut round = 1u64;
            while !stop.load(Ordering::Relaxed) {
                sim.set_jobs(PID, "flaky", jobs(&format!("f{round}"), 200));
                sim.set_jobs(TOKEN_PID, "tok", jobs(&format!("t{round}"), 120));
                let mut steady = jobs(&format!("s{}", round / 5), 300);
                steady.rotate_left((round % 300) as usize);
                sim.set_jobs(PID, "steady", steady);
                round += 1;
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
        });
    }
    // Scrapers: plain and gzip, and the probes.
    for n in 0..3 {
        let (stop, counters, base) = (stop.clone(), counters.clone(), exporter.base.clone());
        tasks.spawn(async move {
            let client = http();
            while !stop.load(Ordering::Relaxed) {
                let mut request = client
                    .get(format!("{base}/metrics"))
                    .basic_auth(USER, Some(PASSWORD));
                if n == 1 {
                    request = request.header("Accept-Encoding", "gzip");
                }
                let ok = match request.send().await {
                    Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                counters[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
                for path in ["/-/healthy", "/-/ready", "/"] {
                    let _ = client
                        .get(format!("{base}{path}"))
                        .basic_auth(USER, Some(PASSWORD))
                        .send()
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        });
    }
    // Wrong passwords from clients that give up at once.
    {
        let (stop, base) = (stop.clone(), exporter.base.clone());
        tasks.spawn(async move {
            let client = http();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let request = client
                    .get(format!("{base}/metrics"))
                    .basic_auth(USER, Some(format!("wrong-{i}")))
                    .send();
                let _ = tokio::time::timeout(Duration::from_millis(2), request).await;
                i += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }
    // The reload storm: unchanged, queue added and removed, broken, by POST and by SIGHUP.
    {
        let (stop, counters, base) = (stop.clone(), counters.clone(), exporter.base.clone());
        let (path, sim) = (exporter.config.clone(), sim.clone());
        let pid = exporter.child.pid();
        tasks.spawn(async move {
            let client = http();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let text = match i % 6 {
                    0 | 1 => config(&sim, true),
                    2 | 3 => config(&sim, false),
                    4 => "[poll]\ninterval = 3.14\n".to_string(),
                    _ => config(&sim, true),
                };
                std::fs::write(&path, text).expect("write");
                if i % 4 == 3 {
                    let _ = std::process::Command::new("kill")
                        .args(["-HUP", &pid.to_string()])
                        .status();
                } else if let Ok(r) = client
                    .post(format!("{base}/-/reload"))
                    .basic_auth(USER, Some(PASSWORD))
                    .send()
                    .await
                {
                    let idx = if r.status() == 200 { 2 } else { 3 };
                    counters[idx].fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
    }

    // Watch: memory every second; the steady queue must keep succeeding.
    let started = Instant::now();
    let mut samples: Vec<(Duration, u64)> = Vec::new();
    let steady_ts = project_series("dli_last_successful_poll_timestamp_seconds", PID, "steady");
    let mut last_steady = 0.0;
    let mut last_advance = Instant::now();
    let mut longest_gap = Duration::ZERO;
    let mut panics_seen = 0.0;
    while started.elapsed() < run {
        exporter.child.assert_running();
        if let Some(bytes) = rss(exporter.child.pid()) {
            samples.push((started.elapsed(), bytes));
        }
        if let Some((200, text)) = get_authed(&client, &metrics_url).await {
            if let Some(t) = value(&text, &steady_ts)
                && t > last_steady
            {
                last_steady = t;
                longest_gap = longest_gap.max(last_advance.elapsed());
                last_advance = Instant::now();
            }
            panics_seen = text
                .lines()
                .filter(|l| l.starts_with("dli_exporter_poll_panics_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
        }
        longest_gap = longest_gap.max(last_advance.elapsed());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}

    // The storm is over: a good config, no faults; every queue succeeds again.
    sim.clear_faults();
    std::fs::write(&exporter.config, config(&sim, true)).expect("write");
    let (status, body) = match client
        .post(format!("{}/-/reload", exporter.base))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
    {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    };
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let text = loop {
        let text = get_authed(&client, &metrics_url)
            .await
            .map(|(_, t)| t)
            .unwrap_or_default();
        let all_ok = [
            (PID, "steady"),
            (PID, "flaky"),
            (PID, "churn"),
            (TOKEN_PID, "tok"),
        ]
        .iter()
        .all(|(p, q)| value(&text, &project_series("dli_poll_success", p, q)) == Some(1.0));
        if all_ok {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "not every queue recovered:\n{text}\n{}",
            exporter.child.outputs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(text.contains("dli_exporter_config_last_reload_successful 1"));

    let [ok, failed, reloaded, rejected, faults] = counters
        .as_ref()
        .each_ref()
        .map(|c| c.load(Ordering::Relaxed));
    // Memory: after a warm-up fifth, the second half of the run against the first.
    let warm: Vec<u64> = samples
        .iter()
        .filter(|(at, _)| *at >= run / 5)
        .map(|(_, b)| *b)
        .collect();
    assert!(warm.len() >= 10, "too few RSS samples: {}", warm.len());
    let (first, second) = warm.split_at(warm.len() / 2);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let (first_median, second_median) = (median(first), median(second));
    let (first_max, second_max) = (
        first.iter().copied().max().unwrap_or(0),
        second.iter().copied().max().unwrap_or(0),
    );
    println!(
        "soak {secs}s: scrapes {ok} ok / {failed} failed, reloads {reloaded} ok / {rejected} rejected \
         (plus SIGHUPs), {faults} faults, steady queue: longest gap between successes {longest_gap:?}, \
         panics {panics_seen}; RSS median {:.1} -> {:.1} MiB, max {:.1} -> {:.1} MiB",
        mib(first_median),
        mib(second_median),
        mib(first_max),
        mib(second_max)
    );
    assert_eq!(
        panics_seen,
        0.0,
        "a poll panicked\n{}",
        exporter.child.outputs()
    );
    assert!(
        longest_gap < Duration::from_secs(10),
        "the steady queue went {longest_gap:?} without a successful poll"
    );
    assert!(
        ok > 100 && failed * 20 < ok,
        "scrapes: {ok} ok, {failed} failed"
    );
    assert!(
        reloaded > 20 && rejected > 5,
        "reloads: {reloaded} ok, {rejected} rejected"
    );
    assert!(
        second_median <= first_median + first_median / 10 + 2 * 1024 * 1024,
        "RSS grew: median {:.1} -> {:.1} MiB",
        mib(first_median),
        mib(second_median)
    );
    assert!(
        second_max <= first_max + first_max / 5 + 4 * 1024 * 1024,
        "RSS grew: max {:.1} -> {:.1} MiB",
        mib(first_max),
        mib(second_max)
    );
    let status = exporter.child.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{}", exporter.child.outputs());
}
