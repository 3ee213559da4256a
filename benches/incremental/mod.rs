//! The incremental phase of the end-to-end benchmark: one queue of `--jobs` realistic jobs (500
//! of them active), polled by the real binary with `poll.mode = "auto"`; between two polls 100
//! jobs change (40 active jobs finish, 40 are submitted, 20 start running). For the first, full,
//! walk and for every incremental poll it prints the requests and bytes the simulator served,
//! `dli_poll_pages`, the poll's wall time, and whether the published `dli_batch_jobs` equal the
//! simulator's own counts. A last, scheduled full walk (`poll.full_walk_interval`) updates the
//! table in place while the lifecycle tracker holds its baseline; then the exporter's peak RSS,
//! which includes the job table.
//!
//! It owns this phase's data and measurements only; starting the exporter and reading `/proc`
//! are the bench's (`super`).

use std::time::{Duration, Instant};

use dli_exporter::dli::states::KNOWN_STATES;
use dli_exporter::sim::{Fault, FaultRule, SimConfig, SimJob, Simulator};

use super::common::exposition::{jobs_series, queue_series, value};
use super::common::{self, NOW_MS, PID, PollSettings};
use super::{Args, Res, RssSampler, mib, start_exporter, status_kib};

const ACTIVE: usize = 500;
const POLLS: usize = 5;
const STATES: [&str; 3] = ["starting", "running", "recovering"];

/// What the simulator served for one poll.
struct Cost {
    requests: u64,
    bytes: u64,
    pages: f64,
    seconds: f64,
    exact: bool,
    /// The exporter's peak RSS so far, MiB.
    peak: f64,
}

/// Waits for the next successful poll after `last_ts`; returns the exposition.
async fn next_poll(
    addr: std::net::SocketAddr,
    queue: &str,
    last_ts: &mut f64,
    within: Duration,
) -> Res<String> {
    let deadline = Instant::now() + within;
    loop {
        let (_, text) = common::get_text(addr, "/metrics")
            .await
            .map_err(|e| format!("scrape: {e}"))?;
        if value(&text, &queue_series("dli_poll_success", queue)) == Some(0.0) {
            return Err(format!("a poll failed:\n{}", super::poll_lines(&text)));
        }
        if let Some(ts) = value(
            &text,
            &queue_series("dli_last_successful_poll_timestamp_seconds", queue),
        ) && ts != *last_ts
        {
            *last_ts = ts;
            return Ok(text);
        }
        if Instant::now() > deadline {
            return Err("no poll finished in time".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The published `dli_batch_jobs` equal the simulator's counts.
fn exact(sim: &Simulator, queue: &str, text: &str) -> bool {
    let jobs = sim.jobs(PID, queue);
    KNOWN_STATES.iter().all(|s| {
        let n = jobs.iter().filter(|j| j.state == *s).count() as f64;
        value(text, &jobs_series(queue, s)) == Some(n)
    })
}

/// 100 changes: 40 active jobs finish, 40 are submitted, 20 start running.
fn churn(sim: &Simulator, queue: &str, round: usize, now_ms: i64) {
    let active: Vec<SimJob> = sim
        .jobs(PID, queue)
        .into_iter()
        .filter(|j| STATES.contains(&j.state.as_str()))
        .collect();
    for (i, job) in active.iter().rev().take(40).enumerate() {
        sim.update_job(PID, queue, &job.id, |j| {
            j.state = if i % 5 == 0 { "dead" } else { "success" }.to_string();
            j.update_time = now_ms;
            j.duration = now_ms - j.create_time;
        });
    }
    let mut moved = 0;
    for job in active.iter().take(active.len().saturating_sub(40)) {
        if moved == 20 {
            break;
        }
        if job.state == "starting" {
            sim.update_job(PID, queue, &job.id, |j| j.state = "running".to_string());
            moved += 1;
        }
    }
    let mut new = sim.generate_jobs_at(40, queue, true, now_ms);
    for (i, job) in new.iter_mut().enumerate() {
        job.id = format!("{:08x}-0000-4000-8000-{:012x}", round, i);
        job.state = "starting".to_string();
        job.create_time = now_ms - i as i64;
    }
    sim.insert_front(PID, queue, new);
}

pub async fn incremental_phase(args: &Args, bin: &str, dir: &std::path::Path) -> Res<()> {
    let queue = "retained".to_string();
    let sim = Simulator::start(SimConfig::default())
        .await
        .map_err(|e| format!("simulator: {e}"))?;
    let mut jobs = sim.generate_jobs_at(args.jobs, &queue, true, NOW_MS);
    for (i, job) in jobs.iter_mut().enumerate() {
        job.state = if i < 4 * ACTIVE && i % 4 == 0 {
            STATES[(i / 4) % 3]
        } else if i % 10 == 3 {
            "dead"
        } else {
            "success"
        }
        .to_string();
    }
    sim.set_jobs(PID, &queue, jobs);
    sim.add_fault(FaultRule::always(Fault::Latency(Duration::from_millis(
        args.latency_ms,
    ))));
    let pages = args.jobs.div_ceil(args.page_size as usize).max(1);
    let rounds = 1 + (pages - 1).div_ceil(args.concurrency as usize);
    let interval =
        (Duration::from_millis(args.latency_ms * rounds as u64) * 4).max(Duration::from_secs(3));
    println!(
        "\n== incremental phase: {} realistic jobs ({ACTIVE} active), page size {}, latency {} ms, poll.interval {:.1} s; 100 changes per poll (40 finish, 40 submitted, 20 start running)",
        args.jobs,
        args.page_size,
        args.latency_ms,
        interval.as_secs_f64()
    );
    let poll = PollSettings::every(interval, args.page_size, args.concurrency);
    // After POLLS incremental polls the next one is a scheduled full walk: it updates the table
    // in place while the lifecycle tracker holds its last baseline, the peak of a steady state.
    let full_walk_ms = (interval.as_millis() as u64) * (2 * POLLS as u64 + 1) / 2;
    let url = sim.base_url();
    let queues = [queue.clone()];
    sim.reset_stats();
    let (exporter, startup) = start_exporter(bin, dir, "incremental", |listen| {
        common::exporter_toml(&url, &queues, listen, &poll).replace(
            "mode = \"full\"\n",
            &format!("mode = \"auto\"\nfull_walk_interval = \"{full_walk_ms}ms\"\n"),
        )
    })
    .await?;
    let sampler = RssSampler::start(exporter.pid());
    println!(
        "startup to first served /metrics: {:.1} ms (RSS then {:.1} MiB)",
        startup.as_secs_f64() * 1000.0,
        mib(status_kib(exporter.pid(), "VmRSS:"))
    );
    let mut last_ts = 0.0;
    let mut costs: Vec<(bool, Cost)> = Vec::new();
    for round in 0..=POLLS + 1 {
        let text = next_poll(exporter.addr, &queue, &mut last_ts, interval * 4).await?;
        let stats = sim.stats();
        let incremental = value(&text, &queue_series("dli_poll_incremental", &queue)) == Some(1.0);
        costs.push((
            incremental,
            Cost {
                requests: stats.list_batches_requests,
                bytes: stats.list_batches_bytes,
                pages: value(&text, &queue_series("dli_poll_pages", &queue)).unwrap_or(0.0),
                seconds: value(&text, &queue_series("dli_poll_duration_seconds", &queue))
                    .unwrap_or(0.0),
                exact: exact(&sim, &queue, &text),
                peak: mib(status_kib(exporter.pid(), "VmHWM:")),
            },
        ));
        if round <= POLLS {
            churn(&sim, &queue, round, NOW_MS + 60_000 * (round as i64 + 1));
            sim.reset_stats();
        }
    }
    let peak = mib(status_kib(exporter.pid(), "VmHWM:"));
    let split = sampler.finish();
    drop(exporter);
    sim.shutdown();
    println!(
        "| poll | kind | requests | bytes | dli_poll_pages | wall time | dli_batch_jobs exact | peak RSS so far |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (i, (incremental, c)) in costs.iter().enumerate() {
        println!(
            "| {i} | {} | {} | {:.2} MB | {} | {:.3} s | {} | {:.1} MiB |",
            if *incremental { "incremental" } else { "full" },
            c.requests,
            c.bytes as f64 / 1e6,
            c.pages,
            c.seconds,
            if c.exact { "yes" } else { "NO" },
            c.peak
        );
    }
    let full = costs.iter().find(|(i, _)| !i).map(|(_, c)| c);
    let incr: Vec<&Cost> = costs.iter().filter(|(i, _)| *i).map(|(_, c)| c).collect();
    if let (Some(full), false) = (full, incr.is_empty()) {
        let n = incr.len() as f64;
        let requests = incr.iter().map(|c| c.requests as f64).sum::<f64>() / n;
        let bytes = incr.iter().map(|c| c.bytes as f64).sum::<f64>() / n;
        println!(
            "incremental summary: {:.1} requests per poll (full walk {}), {:.2} MB per poll = {:.2} % of a full walk's {:.1} MB; all exact: {}; peak RSS (VmHWM) {:.1} MiB",
            requests,
            full.requests,
            bytes / 1e6,
            100.0 * bytes / (full.bytes as f64).max(1.0),
            full.bytes as f64 / 1e6,
            costs.iter().all(|(_, c)| c.exact),
            peak
        );
        println!("{split}");
    } else {
        return Err("no incremental poll happened (dli_poll_incremental stayed 0)".into());
    }
    if !costs.iter().all(|(_, c)| c.exact) {
        return Err("an incremental poll published other counts than the simulator holds".into());
    }
    Ok(())
}
