//! Scrape load: 200 concurrent `/metrics` clients for about 3 s while polls run, every response
//! parsed (status 200, complete, well-formed, the expected families); and a restart under load:
//! the App is stopped and a new one started on the same port while the scrapers keep going.
//! Run with `--nocapture` to see the numbers RELIABILITY.md quotes.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use dli_exporter::app::App;
use dli_exporter::config::Settings;
use dli_exporter::sim::{SimConfig, Simulator};
use tokio::net::TcpListener;

const SCRAPERS: usize = 200;

/// Checks one exposition: complete, every line a comment or a well-formed sample, and the
/// families the exporter always serves present. Returns whether the job families are there too
/// (they are once the first poll succeeded; a freshly started exporter has none yet).
fn check_exposition(text: &str) -> Result<bool, String> {
    if !text.ends_with('\n') {
        return Err("does not end with a newline".into());
    }
    for family in [
        "# TYPE dli_up gauge",
        "# TYPE dli_exporter_build_info gauge",
        "dli_exporter_build_info{",
    ] {
        if !text.contains(family) {
            return Err(format!("missing {family:?}"));
        }
    }
    let has_jobs = [
        "# TYPE dli_batch_jobs gauge",
        "dli_batch_jobs{",
        "dli_poll_success{",
        "dli_api_requests_total{",
    ]
    .iter()
    .all(|f| text.contains(f));
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("no value: {line:?}"))?;
        let ok_value = matches!(value, "+Inf" | "-Inf" | "NaN") || value.parse::<f64>().is_ok();
        if !ok_value {
            return Err(format!("bad value: {line:?}"));
        }
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        let labels_ok = name_end == series.len()
            || (series.ends_with('}') && series[name_end..].matches('"').count() % 2 == 0);
        if !name_ok || !labels_ok {
            return Err(format!("bad series: {line:?}"));
        }
    }
    Ok(has_jobs)
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    /// Well-formed responses that also carried the job families.
    with_jobs: AtomicU64,
    /// Connection refused/reset or timed out: expected only while no server listens.
    transport_errors: AtomicU64,
    /// A response that was not 200 or not well-formed: never acceptable.
    bad: AtomicU64,
    bytes: AtomicU64,
}

/// `n` scrapers looping on `url` until `stop`, on their own thread and two-worker runtime (so
/// that they do not share the exporter's runtime). The handle yields how many tasks panicked.
fn spawn_scrapers(
    url: String,
    n: usize,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    first_bad: Arc<std::sync::Mutex<Option<String>>>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("scraper runtime");
        rt.block_on(async move {
            let client = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .pool_max_idle_per_host(n)
                .build()
                .expect("client");
            let tasks: Vec<_> = (0..n)
                .map(|_| {
                    tokio::spawn(scrape_loop(
                        client.clone(),
                        url.clone(),
                        stop.clone(),
                        tally.clone(),
                        first_bad.clone(),
                    ))
                })
                .collect();
            let mut panicked = 0;
            for t in tasks {
                panicked += usize::from(t.await.is_err());
            }
            panicked
        })
    })
}

async fn scrape_loop(
    client: reqwest::Client,
    url: String,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    first_bad: Arc<std::sync::Mutex<Option<String>>>,
) {
    let record_bad = |why: String| {
        tally.bad.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = first_bad.lock() {
            f.get_or_insert(why);
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let response = match client.get(&url).send().await {
            Ok(r) => r,
            Err(_) => {
                tally.transport_errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let status = response.status();
        match response.text().await {
            Ok(text) if status == reqwest::StatusCode::OK => match check_exposition(&text) {
                Ok(has_jobs) => {
                    tally.ok.fetch_add(1, Ordering::Relaxed);
                    if has_jobs {
                        tally.with_jobs.fetch_add(1, Ordering::Relaxed);
                    }
                    tally.bytes.fetch_add(text.len() as u64, Ordering::Relaxed);
                }
                Err(why) => record_bad(why),
            },
            Ok(text) => record_bad(format!("HTTP {status}: {text}")),
            // The body was cut: acceptable only while a server goes away.
            Err(_) => {
                tally.transport_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The simulator on its own thread and runtime, so that the load measures the exporter and
/// not a simulator starved by the scrapers sharing its runtime.
fn load_sim() -> Simulator {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("simulator runtime");
        rt.block_on(async move {
            let sim = sim(SimConfig::default()).await;
            for q in ["etl", "adhoc"] {
                sim.set_jobs(PID, q, numbered_jobs(q, 400));
            }
            let _ = tx.send(sim.clone());
            sim.stopped().await;
        });
    });
    rx.recv().expect("simulator started")
}

/// Polls every 500 ms. The timeouts leave room for a debug build on two shared cores that is
/// also rendering hundreds of scrapes a second (at 200 ms some requests time out under load).
fn load_settings(sim: &Simulator) -> Settings {
    let poll = dli_exporter::config::PollConfig {
        interval: Duration::from_millis(500),
        timeout: Duration::from_millis(450),
        request_timeout: Duration::from_millis(400),
        ..fast_poll()
    };
    settings(vec![project(sim, &["etl", "adhoc"], aksk())], poll)
}

/// Tells the scrapers to stop, waits for them, and asserts that none panicked.
async fn stop_scrapers(stop: &AtomicBool, scrapers: std::thread::JoinHandle<usize>) {
    stop.store(true, Ordering::Relaxed);
    let panicked = tokio::task::spawn_blocking(move || scrapers.join().expect("scraper thread"))
        .await
        .expect("join");
    assert_eq!(panicked, 0, "no scraper task panicked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_scrapers_while_polls_run() {
    let sim = load_sim();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let app = App::start(&load_settings(&sim), listener).expect("start");
    wait_ready(&http(), &app).await;
    let polls_before = sim.stats().list_batches_requests;

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let first_bad = Arc::new(std::sync::Mutex::new(None));
    let started = Instant::now();
    let scrapers = spawn_scrapers(
        format!("http://{}/metrics", app.addr),
        SCRAPERS,
        stop.clone(),
        tally.clone(),
        first_bad.clone(),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_scrapers(&stop, scrapers).await;
    let elapsed = started.elapsed();
    let polls = sim.stats().list_batches_requests - polls_before;
    let final_text = scrape(&http(), &app).await;
    let poll_lines: Vec<&str> = final_text
        .lines()
        .filter(|l| {
            l.starts_with("dli_poll_success{")
                || l.starts_with("dli_api_requests_total{")
                || (l.starts_with("dli_api_request_failures_total{") && !l.ends_with(" 0"))
        })
        .collect();
    let (ok, transport, bad) = (
        tally.ok.load(Ordering::Relaxed),
        tally.transport_errors.load(Ordering::Relaxed),
        tally.bad.load(Ordering::Relaxed),
    );
    println!(
        "scrape load: {SCRAPERS} concurrent clients for {elapsed:.2?}: {ok} responses served and parsed \
         ({:.0}/s, {} bytes), errors: {transport} transport + {bad} malformed; {polls} DLI requests by the pollers meanwhile",
        ok as f64 / elapsed.as_secs_f64(),
        tally.bytes.load(Ordering::Relaxed)
    );
    assert_eq!(bad, 0, "first malformed: {:?}", first_bad.lock().ok());
    println!("after the load: {poll_lines:?}");
    assert_eq!(transport, 0, "no scrape failed");
    assert_eq!(
        tally.with_jobs.load(Ordering::Relaxed),
        ok,
        "every response had the job families"
    );
    assert!(ok >= SCRAPERS as u64, "every client was served");
    assert!(polls > 0, "polls ran during the load");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_on_the_same_port_under_scrape_load() {
    let sim = load_sim();
    let settings = load_settings(&sim);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let app = App::start(&settings, listener).expect("start");
    let addr = app.addr;
    wait_ready(&http(), &app).await;

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let first_bad = Arc::new(std::sync::Mutex::new(None));
    let scrapers = spawn_scrapers(
        format!("http://{addr}/metrics"),
        SCRAPERS,
        stop.clone(),
        tally.clone(),
        first_bad.clone(),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = tally.ok.load(Ordering::Relaxed);

    // Stop the first App and start a second one on the same address.
    let stopping = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), app.shutdown())
        .await
        .expect("shutdown under load is bounded");
    let stopped_after = stopping.elapsed();
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) => {
                assert!(
                    stopping.elapsed() < Duration::from_secs(5),
                    "rebind {addr}: {e}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let app = App::start(&settings, listener).expect("restart");
    let gap = stopping.elapsed();
    let at_restart = tally.ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop_scrapers(&stop, scrapers).await;
    let (ok, transport, bad) = (
        tally.ok.load(Ordering::Relaxed),
        tally.transport_errors.load(Ordering::Relaxed),
        tally.bad.load(Ordering::Relaxed),
    );
    println!(
        "restart under load: {SCRAPERS} clients; {before} responses before the stop, shutdown took {stopped_after:.2?}, \
         new App serving {gap:.2?} after the stop began; {} responses after the restart; \
         {transport} scrapes refused/cut during the gap, {bad} malformed",
        ok - at_restart
    );
    assert_eq!(bad, 0, "first malformed: {:?}", first_bad.lock().ok());
    assert!(ok - at_restart >= SCRAPERS as u64, "scrapes resumed");
    let with_jobs_after = tally.with_jobs.load(Ordering::Relaxed);
    println!("restart under load: {with_jobs_after} responses carried job series in all");
    assert!(
        with_jobs_after > before,
        "job series came back after the first poll of the new App"
    );
    tokio::time::timeout(Duration::from_secs(10), app.shutdown())
        .await
        .expect("second shutdown");
}
