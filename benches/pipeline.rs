//! Criterion micro-benchmarks of the exporter's pipeline, on realistic data from the simulator's
//! generator (all 16 job fields, 10 log lines, a 1-2 KB `req_body` per job):
//!
//! - `decode/page_100`: one ListBatches page of 100 jobs, bytes -> `BatchPage`.
//! - `decode_aggregate/page_100`: the same plus folding every job into a `SnapshotBuilder`;
//!   `decode_aggregate/page_100_job_names` with `metrics.job_names = [".*"]` as well;
//!   `decode_aggregate/ten_pages[_job_names_evicting]`: ten different pages in turn, whose ~1,000
//!   names keep the job name cap (100) evicting.
//! - `render/series_3000`: the `/metrics` exposition of 3 queues x 200 owners x 5 states, rendered
//!   from scratch (`Metrics::render`), and as served by the render cache (plain and gzip).
//! - `scrape/loopback`: `GET /metrics` over a keep-alive loopback connection to the real server
//!   (a running exporter polling the simulator), plain and gzip.
//!
//! Run: `cargo bench --bench pipeline`. Under `cargo test --benches` (the smoke run) each
//! benchmark runs once. It measures and prints; it asserts only that the fixtures work.

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dli_exporter::app::App;
use dli_exporter::config::{self, JobNameFilter};
use dli_exporter::dli::model::decode_page;
use dli_exporter::metrics::{CollectorOptions, Metrics};
use dli_exporter::poll::aggregate::SnapshotBuilder;
use dli_exporter::sim::{SimConfig, Simulator, generate_jobs_seeded, page_body};
use dli_exporter::store::{QueueKey, SnapshotStore};

use common::{HttpConn, NOW_MS, PID, PollSettings};

const PAGE: usize = 100;

fn realistic_page() -> Vec<u8> {
    let jobs = generate_jobs_seeded(7, PAGE, "etl", true, NOW_MS);
    page_body(0, 100_000, &jobs)
}

fn decode(c: &mut Criterion) {
    let body = realistic_page();
    eprintln!(
        "page of {PAGE} realistic jobs: {} bytes ({} bytes/job)",
        body.len(),
        body.len() / PAGE
    );
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(PAGE as u64));
    g.bench_function("page_100", |b| {
        b.iter(|| {
            let page = decode_page(black_box(&body)).map(|p| p.sessions.len());
            assert_eq!(page.ok(), Some(PAGE));
        })
    });
    g.finish();

    let mut g = c.benchmark_group("decode_aggregate");
    g.throughput(Throughput::Elements(PAGE as u64));
    g.bench_function("page_100", |b| {
        let mut builder = SnapshotBuilder::new();
        b.iter(|| {
            if let Ok(page) = decode_page(black_box(&body)) {
                for job in &page.sessions {
                    builder.add(job);
                }
            }
        });
        black_box(builder.finish(200));
    });
    // The same with metrics.job_names selecting every name (`.*`): each job is a selected run.
    // On one page the names repeat from iteration to iteration, as recurring jobs' names do.
    let every_name = || match JobNameFilter::new(&[".*".to_string()], 100) {
        Ok(Some(f)) => Arc::new(f),
        other => panic!("job name filter: {other:?}"),
    };
    g.bench_function("page_100_job_names", |b| {
        let mut builder = SnapshotBuilder::with_job_names(every_name());
        b.iter(|| {
            if let Ok(page) = decode_page(black_box(&body)) {
                for job in &page.sessions {
                    builder.add(job);
                }
            }
        });
        let snapshot = builder.finish(200);
        assert!(snapshot.job_names.is_some_and(|n| !n.names.is_empty()));
    });
    // The worst case: ten pages of the same size taken in turn, whose names (`daily_orders_etl_57`,
    // ...) are mostly distinct, about 1,000 in all, so the per-queue cap of 100 keeps evicting;
    // and the same ten pages without job names, to compare with.
    let pages: Vec<Vec<u8>> = (0..10u64)
        .map(|seed| {
            let jobs = generate_jobs_seeded(7 + seed, PAGE, "etl", true, NOW_MS);
            page_body(0, 100_000, &jobs)
        })
        .collect();
    for names in [false, true] {
        let id = if names {
            "ten_pages_job_names_evicting"
        } else {
            "ten_pages"
        };
        g.bench_function(id, |b| {
            let mut builder = if names {
                SnapshotBuilder::with_job_names(every_name())
            } else {
                SnapshotBuilder::new()
            };
            let mut turn = 0;
            b.iter(|| {
                turn = (turn + 1) % pages.len();
                if let Ok(page) = decode_page(black_box(&pages[turn])) {
                    for job in &page.sessions {
                        builder.add(job);
                    }
                }
            });
            black_box(builder.finish(200));
        });
    }
    g.finish();
}

/// A store holding `queues` polled queues of `owners x 5` jobs each, and its metrics.
fn scrape_world_metrics(queues: usize, owners: usize) -> Metrics {
    let keys: Vec<QueueKey> = common::scrape_queues(queues)
        .into_iter()
        .map(|q| QueueKey::new(PID, q))
        .collect();
    let store = Arc::new(SnapshotStore::new(keys.clone()));
    for key in &keys {
        let mut b = SnapshotBuilder::new();
        for job in common::owner_state_jobs(&key.queue, owners) {
            b.add(&dli_exporter::dli::BatchJob::new(
                &job.id,
                &job.state,
                job.owner.as_deref(),
                Some(job.create_time),
            ));
        }
        store.record_success(key, b.finish(200), Duration::from_millis(120), 11);
    }
    match Metrics::new(
        store,
        CollectorOptions {
            owner_breakdown: true,
            stale_after: Duration::from_secs(600),
            queue_list_stale_after: Duration::from_secs(600),
        },
    ) {
        Ok(m) => m,
        Err(e) => panic!("metrics: {e}"),
    }
}

fn render(c: &mut Criterion) {
    let metrics = scrape_world_metrics(3, 200);
    let text = metrics.render();
    let series = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty() && l[0] != b'#')
        .count();
    eprintln!("exposition: {series} series, {} bytes", text.len());
    let mut g = c.benchmark_group("render");
    g.bench_function("series_3000_uncached", |b| {
        b.iter(|| black_box(metrics.render()))
    });
    g.bench_function("series_3000_cached_plain", |b| {
        b.iter(|| black_box(metrics.exposition(false)))
    });
    g.bench_function("series_3000_cached_gzip", |b| {
        b.iter(|| black_box(metrics.exposition(true)))
    });
    g.finish();
}

fn scrape(c: &mut Criterion) {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    let (app, _sim) = rt.block_on(async {
        let sim = Simulator::start(SimConfig::default())
            .await
            .unwrap_or_else(|e| panic!("simulator: {e}"));
        let queues = common::fill_scrape_world(&sim, 3, 200);
        let toml = common::exporter_toml(
            &sim.base_url(),
            &queues,
            "127.0.0.1:0",
            &PollSettings {
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(9),
                request_timeout: Duration::from_secs(5),
                page_size: 100,
                concurrency: 4,
            },
        );
        let settings = config::load_toml_str(&toml, &Default::default())
            .unwrap_or_else(|e| panic!("config: {e}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let app = App::start(&settings, listener).unwrap_or_else(|e| panic!("start: {e}"));
        let started = Instant::now();
        while app.store.attempted().0 < queues.len() && started.elapsed() < Duration::from_secs(30)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (app, sim)
    });
    let addr = app.addr;
    let mut g = c.benchmark_group("scrape");
    for gzip in [false, true] {
        let mut conn = rt
            .block_on(HttpConn::connect(addr, "/metrics", gzip))
            .unwrap_or_else(|e| panic!("connect: {e}"));
        let first = rt
            .block_on(conn.get())
            .unwrap_or_else(|e| panic!("scrape: {e}"));
        assert_eq!(first.status, 200);
        eprintln!(
            "scrape (gzip={gzip}): {} body bytes, gzip answered: {}",
            first.body_len, first.gzip
        );
        let name = if gzip {
            "loopback_gzip"
        } else {
            "loopback_plain"
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                let a = rt.block_on(conn.get());
                assert!(matches!(a, Ok(a) if a.status == 200));
            })
        });
    }
    g.finish();
    rt.block_on(app.shutdown());
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = decode, render, scrape
}
criterion_main!(benches);
