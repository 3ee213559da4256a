//! End-to-end benchmark of the real `dli_exporter` binary against the embedded simulator over
//! loopback: the exporter is started as a child process with an ordinary config file (no hidden
//! flag), the simulator runs in this process.
//!
//! Walk phase: one queue of `--jobs` realistic jobs (default 100,000), `--latency-ms` per request
//! (default 20), page size `--page-size` (100), `poll.concurrency` `--concurrency` (8). For each
//! of `--walks` walks it prints the walk time and its ratio to the latency bound
//! `latency x (1 + ceil((pages - 1) / concurrency))`, requests the simulator received vs pages of
//! data, CPU seconds of the exporter, and at the end its peak RSS.
//!
//! Scrape phase: 3 queues x 200 owners x 5 states (~3,000 series); `/metrics` throughput and
//! latency percentiles from a built-in load generator (2 threads, 32 keep-alive connections,
//! `--load-secs` seconds, like `wrk -t2 -c32 -d10s`), plain and gzip, then `wrk` itself (plain and gzip)
//! when it is installed (not with `--quick`).
//!
//! Incremental phase (`benches/incremental/`): the same size of queue with 500 active jobs, polled
//! with `poll.mode = "auto"` while 100 jobs change between polls; requests and bytes per poll,
//! full walk versus incremental, and the peak RSS with the job table.
//!
//! `--phase walk|incremental|scrape` runs one phase (default: all). Both the walk and the scrape
//! phases report startup-to-first-served-`/metrics` time; the binary size is printed first.
//!
//! Run: `cargo bench --bench e2e` (release build); smoke: `cargo bench --bench e2e -- --quick`
//! or, in debug, `cargo test --bench e2e -- --quick`. Not part of `cargo test`.

mod common;
mod incremental;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dli_exporter::sim::{Fault, FaultRule, SimConfig, Simulator};

use common::exposition::{jobs_series, queue_series, value};
use common::{HttpConn, NOW_MS, PID, PollSettings};
use dli_exporter::dli::states::KNOWN_STATES;

#[derive(Debug, Clone)]
struct Args {
    jobs: usize,
    walks: usize,
    latency_ms: u64,
    page_size: u32,
    concurrency: u32,
    load_secs: f64,
    queues: usize,
    owners: usize,
    wrk: bool,
    /// `walk`, `scrape`, `incremental` or `all`.
    phase: String,
}

fn parse_args() -> Args {
    let mut a = Args {
        jobs: 100_000,
        walks: 3,
        latency_ms: 20,
        page_size: 100,
        concurrency: 8,
        load_secs: 10.0,
        queues: 3,
        owners: 200,
        wrk: true,
        phase: "all".to_string(),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = argv.get(i + 1).cloned().unwrap_or_default();
        let mut took = true;
        match argv[i].as_str() {
            "--jobs" => a.jobs = value.parse().unwrap_or(a.jobs),
            "--walks" => a.walks = value.parse().unwrap_or(a.walks),
            "--latency-ms" => a.latency_ms = value.parse().unwrap_or(a.latency_ms),
            "--page-size" => a.page_size = value.parse().unwrap_or(a.page_size),
            "--concurrency" => a.concurrency = value.parse().unwrap_or(a.concurrency),
            "--load-secs" => a.load_secs = value.parse().unwrap_or(a.load_secs),
            "--owners" => a.owners = value.parse().unwrap_or(a.owners),
            "--phase" => a.phase = value.clone(),
            "--quick" => {
                a.jobs = 2_000;
                a.walks = 1;
                a.load_secs = 1.0;
                a.wrk = false;
                took = false;
            }
            "--no-wrk" => {
                a.wrk = false;
                took = false;
            }
            // `--bench` from cargo, and anything else: ignored.
            _ => took = false,
        }
        i += if took { 2 } else { 1 };
    }
    a
}

fn main() {
    let args = parse_args();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("e2e: cannot build a runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(args)) {
        eprintln!("e2e: FAILED: {e}");
        std::process::exit(1);
    }
}

type Res<T> = Result<T, String>;

async fn run(args: Args) -> Res<()> {
    let bin = env!("CARGO_BIN_EXE_dli_exporter");
    let size = std::fs::metadata(bin).map(|m| m.len()).unwrap_or(0);
    println!("== e2e benchmark: {args:?}");
    println!("binary: {bin}");
    println!(
        "binary size: {size} bytes ({:.2} MiB)",
        size as f64 / 1048576.0
    );
    println!(
        "machine: {} cpus, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let run = |phase: &str| args.phase == "all" || args.phase == phase;
    if run("walk") {
        walk_phase(&args, bin, dir.path()).await?;
    }
    if run("incremental") {
        incremental::incremental_phase(&args, bin, dir.path()).await?;
    }
    if run("scrape") {
        scrape_phase(&args, bin, dir.path()).await?;
    }
    println!("== e2e done");
    Ok(())
}

/// Kills the exporter when dropped, whatever happened.
struct Exporter {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Exporter {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn free_port() -> Res<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    l.local_addr().map_err(|e| format!("addr: {e}"))
}

/// Starts the binary with `toml` and waits for the first 200 on `/metrics`; returns the
/// exporter and the time from spawn to that answer.
async fn start_exporter(
    bin: &str,
    dir: &std::path::Path,
    name: &str,
    toml_for: impl Fn(&str) -> String,
) -> Res<(Exporter, Duration)> {
    let addr = free_port()?;
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml_for(&addr.to_string())).map_err(|e| format!("write config: {e}"))?;
    let started = Instant::now();
    let child = Command::new(bin)
        .arg("--config.file")
        .arg(&path)
        .arg("--log.level")
        .arg("warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn {bin}: {e}"))?;
    let mut exporter = Exporter { child, addr };
    loop {
        if let Ok(Some(status)) = exporter.child.try_wait() {
            return Err(format!("the exporter exited at startup: {status}"));
        }
        if let Ok((200, _)) = common::get_text(addr, "/metrics").await {
            return Ok((exporter, started.elapsed()));
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err("the exporter did not serve /metrics within 10 s".into());
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into())
}

/// User + system CPU seconds of a process.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    // Fields after the command: state is field 3, utime 14, stime 15.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / clock_ticks()
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A `/proc/<pid>/status` field in KiB (VmRSS, VmHWM).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Samples `/proc/<pid>/smaps_rollup` every 5 ms on its own thread and keeps the sample with the
/// largest RSS, split into anonymous memory (heap, stacks: what the exporter allocates) and
/// file-backed pages (the binary's code and data, shared libraries), so a change in peak RSS can
/// be told apart from a change in how much of the binary the kernel maps.
struct RssSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<RssSample>>,
}

/// One reading, KiB.
#[derive(Clone, Copy, Default)]
struct RssSample {
    rss: u64,
    anon: u64,
}

impl RssSample {
    fn read(pid: u32) -> Option<RssSample> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
        let field = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        };
        Some(RssSample {
            rss: field("Rss:")?,
            anon: field("Anonymous:")?,
        })
    }
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = RssSample::default();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match RssSample::read(pid) {
                    Some(s) if s.rss > peak.rss => peak = s,
                    Some(_) => {}
                    None => break,
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        });
        RssSampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the line to print about the largest sample.
    fn finish(mut self) -> String {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        format!(
            "largest sampled RSS {:.1} MiB = {:.1} MiB anonymous (heap, stacks) + {:.1} MiB file-backed (binary, libraries)",
            mib(peak.rss),
            mib(peak.anon),
            mib(peak.rss.saturating_sub(peak.anon))
        )
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn walk_phase(args: &Args, bin: &str, dir: &std::path::Path) -> Res<()> {
    let queue = "big".to_string();
    let sim = Simulator::start(SimConfig::default())
        .await
        .map_err(|e| format!("simulator: {e}"))?;
    let generated = Instant::now();
    let jobs = sim.generate_jobs_at(args.jobs, &queue, true, NOW_MS);
    let json_bytes: usize = jobs
        .iter()
        .take(100)
        .map(|j| serde_json::to_vec(j).map_or(0, |v| v.len()))
        .sum();
    sim.set_jobs(PID, &queue, jobs);
    // The jobs are stored newest first already: the simulator serves them as stored instead of
    // checking their order on every page (a CPU cost of the bench process, not the exporter's).
    sim.set_behaviour(
        PID,
        &queue,
        dli_exporter::sim::QueueBehaviour {
            order_param: dli_exporter::sim::ParamHandling::Ignore,
            ..Default::default()
        },
    );
    sim.add_fault(FaultRule::always(Fault::Latency(Duration::from_millis(
        args.latency_ms,
    ))));
    let pages = args.jobs.div_ceil(args.page_size as usize).max(1);
    let rounds = 1 + (pages - 1).div_ceil(args.concurrency as usize);
    let bound = Duration::from_millis(args.latency_ms * rounds as u64);
    println!(
        "\n== walk phase: {} realistic jobs (~{} bytes/job in JSON, generated in {:.1} s), {} pages of {}, latency {} ms, concurrency {}",
        args.jobs,
        json_bytes / 100.min(args.jobs).max(1),
        generated.elapsed().as_secs_f64(),
        pages,
        args.page_size,
        args.latency_ms,
        args.concurrency
    );
    println!(
        "latency bound: {} ms x (1 + ceil(({pages} - 1) / {})) = {:.3} s; target walk <= 1.2 x bound = {:.3} s",
        args.latency_ms,
        args.concurrency,
        bound.as_secs_f64(),
        bound.as_secs_f64() * 1.2
    );
    // Room for a slow walk on a busy machine, and a gap between walks to read the counters in.
    let interval = (bound * 3).max(Duration::from_secs(2));
    let poll = PollSettings::every(interval, args.page_size, args.concurrency);
    let url = sim.base_url();
    let queues = [queue.clone()];
    let (exporter, startup) = start_exporter(bin, dir, "walk", |listen| {
        common::exporter_toml(&url, &queues, listen, &poll)
    })
    .await?;
    let pid = exporter.pid();
    let sampler = RssSampler::start(pid);
    println!(
        "startup to first served /metrics: {:.1} ms (RSS then {:.1} MiB)",
        startup.as_secs_f64() * 1000.0,
        mib(status_kib(pid, "VmRSS:"))
    );

    let mut last_ts = 0.0;
    let mut requests_before = sim.stats().list_batches_requests;
    let mut cpu_before = cpu_seconds(pid);
    let mut results = Vec::new();
    for walk in 1..=args.walks {
        let deadline = Instant::now() + interval * 3;
        let text = loop {
            let (_, text) = common::get_text(exporter.addr, "/metrics")
                .await
                .map_err(|e| format!("scrape: {e}"))?;
            let ts = value(
                &text,
                &queue_series("dli_last_successful_poll_timestamp_seconds", &queue),
            );
            let ok = value(&text, &queue_series("dli_poll_success", &queue));
            if ok == Some(0.0) {
                return Err(format!("walk {walk} failed:\n{}", poll_lines(&text)));
            }
            if let Some(ts) = ts
                && ts != last_ts
            {
                last_ts = ts;
                break text;
            }
            if Instant::now() > deadline {
                return Err(format!("walk {walk} did not finish in time"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let requests_now = sim.stats().list_batches_requests;
        let cpu_now = cpu_seconds(pid);
        let duration =
            value(&text, &queue_series("dli_poll_duration_seconds", &queue)).unwrap_or(0.0);
        let walk_pages = value(&text, &queue_series("dli_poll_pages", &queue)).unwrap_or(0.0);
        let listed: f64 = KNOWN_STATES
            .iter()
            .filter_map(|s| value(&text, &jobs_series(&queue, s)))
            .sum();
        let requests = requests_now - requests_before;
        let cpu = cpu_now - cpu_before;
        println!(
            "walk {walk}: {:.3} s = {:.3} x bound; requests {requests} (pages of data {pages}, dli_poll_pages {walk_pages}); jobs {listed}; CPU {:.2} s ({:.0} jobs per CPU-second)",
            duration,
            duration / bound.as_secs_f64(),
            cpu,
            listed / cpu.max(1e-9),
        );
        results.push((duration, requests, cpu));
        requests_before = requests_now;
        cpu_before = cpu_now;
    }
    let n = results.len().max(1) as f64;
    let mean = |f: fn(&(f64, u64, f64)) -> f64| results.iter().map(f).sum::<f64>() / n;
    let best = results.iter().map(|r| r.0).fold(f64::INFINITY, f64::min);
    println!(
        "walk summary: mean {:.3} s ({:.3} x bound), best {:.3} s ({:.3} x bound); requests per walk {:.1} for {pages} pages; CPU {:.2} s per walk",
        mean(|r| r.0),
        mean(|r| r.0) / bound.as_secs_f64(),
        best,
        best / bound.as_secs_f64(),
        mean(|r| r.1 as f64),
        mean(|r| r.2),
    );
    println!(
        "peak RSS (VmHWM) of the exporter: {:.1} MiB; RSS now {:.1} MiB",
        mib(status_kib(pid, "VmHWM:")),
        mib(status_kib(pid, "VmRSS:"))
    );
    println!("{}", sampler.finish());
    drop(exporter);
    sim.shutdown();
    Ok(())
}

fn poll_lines(text: &str) -> String {
    text.lines()
        .filter(|l| l.starts_with("dli_poll") || l.starts_with("dli_api_request_failures"))
        .filter(|l| !l.ends_with(" 0"))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn scrape_phase(args: &Args, bin: &str, dir: &std::path::Path) -> Res<()> {
    let sim = Simulator::start(SimConfig::default())
        .await
        .map_err(|e| format!("simulator: {e}"))?;
    let queues = common::fill_scrape_world(&sim, args.queues, args.owners);
    let poll = PollSettings {
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(9),
        request_timeout: Duration::from_secs(5),
        page_size: 100,
        concurrency: 4,
    };
    let url = sim.base_url();
    let (exporter, startup) = start_exporter(bin, dir, "scrape", |listen| {
        common::exporter_toml(&url, &queues, listen, &poll)
    })
    .await?;
    println!(
        "\n== scrape phase: {} queues x {} owners x 5 states",
        args.queues, args.owners
    );
    println!(
        "startup to first served /metrics: {:.1} ms",
        startup.as_secs_f64() * 1000.0
    );
    let started = Instant::now();
    let text = loop {
        let (_, text) = common::get_text(exporter.addr, "/metrics")
            .await
            .map_err(|e| format!("scrape: {e}"))?;
        let polled = queues
            .iter()
            .filter(|q| value(&text, &queue_series("dli_poll_success", q)) == Some(1.0))
            .count();
        if polled == queues.len() {
            break text;
        }
        if started.elapsed() > Duration::from_secs(20) {
            return Err("the scrape world was not polled within 20 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let series = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    let by_owner = text
        .lines()
        .filter(|l| l.starts_with("dli_batch_jobs_by_owner{"))
        .count();
    println!(
        "exposition: {series} series ({by_owner} dli_batch_jobs_by_owner), {} bytes",
        text.len()
    );
    for gzip in [false, true] {
        let r = load(
            exporter.addr,
            gzip,
            32,
            Duration::from_secs_f64(args.load_secs),
        )
        .await;
        println!(
            "load (built-in, 2 threads, 32 connections, {:.0} s, gzip={gzip}): {} scrapes, {:.0} scrapes/s, latency p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms, {} errors, {} bytes/answer",
            args.load_secs,
            r.count,
            r.count as f64 / r.elapsed.as_secs_f64(),
            ms(r.percentile(0.50)),
            ms(r.percentile(0.99)),
            ms(r.percentile(1.0)),
            r.errors,
            r.body_len,
        );
    }
    if args.wrk && std::path::Path::new("/usr/bin/wrk").exists() {
        for (name, header) in [("plain", None), ("gzip", Some("Accept-Encoding: gzip"))] {
            let mut wrk = Command::new("wrk");
            wrk.args(["-t2", "-c32", "-d10s", "--latency"]);
            if let Some(h) = header {
                wrk.args(["-H", h]);
            }
            let out = wrk
                .arg(format!("http://{}/metrics", exporter.addr))
                .output()
                .map_err(|e| format!("wrk: {e}"))?;
            println!(
                "wrk -t2 -c32 -d10s --latency ({name}):\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
    drop(exporter);
    sim.shutdown();
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct LoadResult {
    count: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    body_len: usize,
}

impl LoadResult {
    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[i - 1]
    }
}

/// `connections` keep-alive connections each sending GETs back to back for `duration`.
async fn load(addr: SocketAddr, gzip: bool, connections: usize, duration: Duration) -> LoadResult {
    let started = Instant::now();
    let end = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            let mut errors = 0;
            let mut body_len = 0;
            let Ok(mut conn) = HttpConn::connect(addr, "/metrics", gzip).await else {
                return (lat, 1, 0);
            };
            while Instant::now() < end {
                let t = Instant::now();
                match conn.get().await {
                    Ok(a) if a.status == 200 => {
                        lat.push(t.elapsed());
                        body_len = a.body_len;
                    }
                    _ => {
                        errors += 1;
                        match HttpConn::connect(addr, "/metrics", gzip).await {
                            Ok(c) => conn = c,
                            Err(_) => break,
                        }
                    }
                }
            }
            (lat, errors, body_len)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut body_len = 0;
    for t in tasks {
        if let Ok((lat, e, b)) = t.await {
            latencies.extend(lat);
            errors += e;
            body_len = body_len.max(b);
        } else {
            errors += 1;
        }
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    LoadResult {
        count: latencies.len(),
        errors,
        elapsed,
        latencies,
        body_len,
    }
}
