//! Everything `/metrics` shows: the job and poll metrics rendered from the [`SnapshotStore`] at
//! scrape time by [`JobsCollector`], the API self-metrics fed by the client's
//! [`RequestObserver`], build info and process metrics, in one private registry.
//!
//! Metric names, labels and HELP texts are the contract of design.md §5. This module never
//! calls DLI and never holds a secret.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{
    Encoder, Gauge as GaugeMetric, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::dli::{FailureReason, Operation, RequestObserver};
use crate::poll::aggregate::{ACTIVE_STATES, KNOWN_STATES};
use crate::poll::lifecycle::LifecycleEvents;
use crate::render_cache::{Exposition, Generation, RenderCache};
use crate::store::{QueueKey, SnapshotStore};

/// Version, git revision and rustc version, set by build.rs.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("DLI_EXPORTER_REVISION");
pub const RUSTC_VERSION: &str = env!("DLI_EXPORTER_RUSTC_VERSION");

/// Upper bounds of the API latency histogram, in seconds.
const API_LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Upper bounds of the job duration histogram: 30 s to 24 h.
pub const JOB_DURATION_BUCKETS: [f64; 13] = [
    30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 43200.0,
    86400.0,
];

/// Terminal states whose counters exist from a queue's first walk on (others appear when seen).
const COUNTED_STATES: [&str; 2] = ["success", "dead"];

/// Counters of jobs submitted and finished, and their run times, per queue.
pub struct LifecycleMetrics {
    finished: IntCounterVec,
    submitted: IntCounterVec,
    duration: HistogramVec,
    changes: Arc<Generation>,
}

impl LifecycleMetrics {
    /// Creates the queue's series at 0 (so `increase()` sees the first event).
    pub fn init_queue(&self, key: &QueueKey) {
        let (p, q) = (key.project_id.as_str(), key.queue.as_str());
        self.submitted.with_label_values(&[p, q]);
        for state in COUNTED_STATES {
            self.finished.with_label_values(&[p, q, state]);
            self.duration.with_label_values(&[p, q, state]);
        }
        self.changes.bump();
    }

    /// Adds what a committed walk saw.
    pub fn record(&self, key: &QueueKey, events: &LifecycleEvents) {
        if !events.counted {
            return;
        }
        let (p, q) = (key.project_id.as_str(), key.queue.as_str());
        self.submitted
            .with_label_values(&[p, q])
            .inc_by(events.submitted);
        for f in &events.finished {
            self.finished.with_label_values(&[p, q, f.state]).inc();
            if let Some(d) = f.duration_seconds {
                self.duration.with_label_values(&[p, q, f.state]).observe(d);
            }
        }
        self.changes.bump();
    }

    /// Drops every series of a queue that is no longer configured.
    pub fn remove_queue(&self, key: &QueueKey) {
        let (p, q) = (key.project_id.as_str(), key.queue.as_str());
        let _ = self.submitted.remove_label_values(&[p, q]);
        for state in crate::poll::lifecycle::TERMINAL_STATES {
            let _ = self.finished.remove_label_values(&[p, q, state]);
            let _ = self.duration.remove_label_values(&[p, q, state]);
        }
        self.changes.bump();
    }
}

/// Outcome of the last configuration (re)load.
pub struct ReloadMetrics {
    successful: IntGauge,
    success_timestamp: GaugeMetric,
    changes: Arc<Generation>,
}

impl ReloadMetrics {
    pub fn record(&self, ok: bool) {
        self.successful.set(i64::from(ok));
        if ok {
            self.success_timestamp.set(crate::store::unix_now());
        }
        self.changes.bump();
    }
}

/// What the job collector needs to know from the configuration (may change on reload).
#[derive(Debug, Clone)]
pub struct CollectorOptions {
    pub owner_breakdown: bool,
    pub stale_after: Duration,
}

/// Counters and latency of the HTTP requests sent to DLI and IAM.
pub struct ApiMetrics {
    requests: IntCounterVec,
    failures: IntCounterVec,
    duration: HistogramVec,
    held: IntCounterVec,
}

impl RequestObserver for ApiMetrics {
    fn observe(&self, operation: Operation, elapsed: Duration, failure: Option<FailureReason>) {
        let op = operation.as_str();
        self.requests.with_label_values(&[op]).inc();
        self.duration
            .with_label_values(&[op])
            .observe(elapsed.as_secs_f64());
        if let Some(reason) = failure {
            self.failures
                .with_label_values(&[op, reason.as_str()])
                .inc();
        }
    }

    fn held(&self, operation: Operation) {
        self.held.with_label_values(&[operation.as_str()]).inc();
    }
}

/// The registry behind `/metrics`.
pub struct Metrics {
    registry: Registry,
    api: Arc<ApiMetrics>,
    collector_options: Arc<RwLock<CollectorOptions>>,
    store: Arc<SnapshotStore>,
    /// Changes made through this registry (lifecycle counters, reloads, options); the store
    /// counts its own.
    changes: Arc<Generation>,
    cache: RenderCache,
    pub lifecycle: Arc<LifecycleMetrics>,
    pub reload: ReloadMetrics,
}

impl Metrics {
    pub fn new(
        store: Arc<SnapshotStore>,
        options: CollectorOptions,
    ) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "dli_api_requests_total",
                "HTTP requests sent to DLI or IAM, retries included.",
            ),
            &["operation"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "dli_api_request_failures_total",
                "HTTP requests to DLI or IAM that failed, by reason (timeout, connect, http_4xx, http_5xx, throttled, auth, decode).",
            ),
            &["operation", "reason"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "dli_api_request_duration_seconds",
                "Latency of each HTTP request to DLI or IAM.",
            )
            .buckets(API_LATENCY_BUCKETS.to_vec()),
            &["operation"],
        )?;
        let held = IntCounterVec::new(
            Opts::new(
                "dli_api_requests_held_total",
                "Requests not sent because DLI or IAM kept answering 429 and the exporter is holding off that endpoint.",
            ),
            &["operation"],
        )?;
        // Every series exists from the start, so rate() and absent() work before the first error.
        for op in [Operation::ListBatches, Operation::IamToken] {
            requests.with_label_values(&[op.as_str()]);
            held.with_label_values(&[op.as_str()]);
            duration.with_label_values(&[op.as_str()]);
            for reason in FailureReason::ALL {
                failures.with_label_values(&[op.as_str(), reason.as_str()]);
            }
        }
        let build_info = IntGaugeVec::new(
            Opts::new(
                "dli_exporter_build_info",
                "A metric with a constant '1' value labeled by version, revision and rustversion from which dli_exporter was built.",
            ),
            &["version", "revision", "rustversion"],
        )?;
        build_info
            .with_label_values(&[VERSION, REVISION, RUSTC_VERSION])
            .set(1);
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(held.clone()))?;
        registry.register(Box::new(build_info))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let finished = IntCounterVec::new(
            Opts::new(
                "dli_batch_jobs_finished_total",
                "Jobs seen entering a terminal state (success, dead, ...) since the exporter started; jobs created and finished between two polls included, jobs already finished at the first poll not.",
            ),
            &["project_id", "queue", "state"],
        )?;
        let submitted = IntCounterVec::new(
            Opts::new(
                "dli_batch_jobs_submitted_total",
                "New job ids seen since the exporter's first successful poll of the queue.",
            ),
            &["project_id", "queue"],
        )?;
        let job_duration = HistogramVec::new(
            HistogramOpts::new(
                "dli_batch_job_duration_seconds",
                "Run time (the API's duration) of the jobs counted in dli_batch_jobs_finished_total.",
            )
            .buckets(JOB_DURATION_BUCKETS.to_vec()),
            &["project_id", "queue", "state"],
        )?;
        let reload_ok = IntGauge::new(
            "dli_exporter_config_last_reload_successful",
            "1 if the last configuration reload succeeded, else 0.",
        )?;
        let reload_ts = GaugeMetric::new(
            "dli_exporter_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load.",
        )?;
        reload_ok.set(1);
        reload_ts.set(crate::store::unix_now());
        registry.register(Box::new(finished.clone()))?;
        registry.register(Box::new(submitted.clone()))?;
        registry.register(Box::new(job_duration.clone()))?;
        registry.register(Box::new(reload_ok.clone()))?;
        registry.register(Box::new(reload_ts.clone()))?;
        let collector_options = Arc::new(RwLock::new(options));
        registry.register(Box::new(JobsCollector::new(
            store.clone(),
            collector_options.clone(),
        )?))?;
        let changes = Arc::new(Generation::default());
        Ok(Metrics {
            registry,
            api: Arc::new(ApiMetrics {
                requests,
                failures,
                duration,
                held,
            }),
            collector_options,
            store,
            cache: RenderCache::new(),
            lifecycle: Arc::new(LifecycleMetrics {
                finished,
                submitted,
                duration: job_duration,
                changes: changes.clone(),
            }),
            reload: ReloadMetrics {
                successful: reload_ok,
                success_timestamp: reload_ts,
                changes: changes.clone(),
            },
            changes,
        })
    }

    /// The observer to hand to DLI clients.
    pub fn observer(&self) -> Arc<dyn RequestObserver> {
        self.api.clone()
    }

    pub fn set_options(&self, options: CollectorOptions) {
        if let Ok(mut o) = self.collector_options.write() {
            *o = options;
        }
        self.changes.bump();
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// What `/metrics` serves: the cached rendering while nothing changed (see
    /// [`crate::render_cache`] for the staleness rule), gzip-encoded when `gzip`.
    pub fn exposition(&self, gzip: bool) -> Exposition {
        // Both counters only grow, so their sum changes whenever either does.
        let generation = self.store.generation().wrapping_add(self.changes.get());
        self.cache.get(generation, gzip, || {
            let stale_after = self
                .collector_options
                .read()
                .map(|o| o.stale_after)
                .unwrap_or(Duration::from_secs(300));
            // Read before rendering: a queue going stale meanwhile makes the entry expire early.
            let until = self.store.next_stale_at(stale_after);
            (self.render(), until)
        })
    }

    /// The whole exposition in the text format 0.0.4, rendered now.
    pub fn render(&self) -> Vec<u8> {
        let families = self.registry.gather();
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// Renders the job and poll metrics from the store's current snapshots at every scrape, so
/// queues, states and owners that vanish also vanish from `/metrics`.
pub struct JobsCollector {
    store: Arc<SnapshotStore>,
    options: Arc<RwLock<CollectorOptions>>,
    descs: Vec<Desc>,
}

const JOBS: &str = "dli_batch_jobs";
const JOBS_BY_OWNER: &str = "dli_batch_jobs_by_owner";
const OLDEST: &str = "dli_batch_oldest_job_created_timestamp_seconds";
const POLL_SUCCESS: &str = "dli_poll_success";
const POLL_DURATION: &str = "dli_poll_duration_seconds";
const POLL_PAGES: &str = "dli_poll_pages";
const LAST_SUCCESS: &str = "dli_last_successful_poll_timestamp_seconds";
const UP: &str = "dli_up";

/// (name, help, labels) of every metric the collector renders.
const FAMILIES: [(&str, &str, &[&str]); 8] = [
    (
        JOBS,
        "Batch jobs listed by DLI in each state, as of the last successful poll of the queue.",
        &["project_id", "queue", "state"],
    ),
    (
        JOBS_BY_OWNER,
        "Batch jobs per state and owner, as of the last successful poll of the queue; owners beyond metrics.max_owners_per_queue are summed into owner=\"__other__\", a missing owner is \"__unknown__\".",
        &["owner", "project_id", "queue", "state"],
    ),
    (
        OLDEST,
        "Creation time (unix seconds) of the oldest job in each active state (starting, running, recovering), as of the last successful poll of the queue.",
        &["project_id", "queue", "state"],
    ),
    (
        POLL_SUCCESS,
        "1 if the last poll of the queue walked every page, else 0.",
        &["project_id", "queue"],
    ),
    (
        POLL_DURATION,
        "Wall time of the last poll of the queue, in seconds.",
        &["project_id", "queue"],
    ),
    (
        POLL_PAGES,
        "Pages fetched by the last poll of the queue (the final empty page included).",
        &["project_id", "queue"],
    ),
    (
        LAST_SUCCESS,
        "Unix time of the last successful poll of the queue.",
        &["project_id", "queue"],
    ),
    (
        UP,
        "1 if the last poll of at least one queue succeeded, else 0.",
        &[],
    ),
];

impl JobsCollector {
    fn new(
        store: Arc<SnapshotStore>,
        options: Arc<RwLock<CollectorOptions>>,
    ) -> Result<Self, prometheus::Error> {
        let descs = FAMILIES
            .iter()
            .map(|(name, help, labels)| {
                Desc::new(
                    name.to_string(),
                    help.to_string(),
                    labels.iter().map(|l| l.to_string()).collect(),
                    Default::default(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(JobsCollector {
            store,
            options,
            descs,
        })
    }
}

fn gauge(labels: &[(&str, &str)], value: f64) -> Metric {
    let pairs = labels
        .iter()
        .map(|(n, v)| {
            let mut p = LabelPair::default();
            p.set_name(n.to_string());
            p.set_value(v.to_string());
            p
        })
        .collect();
    let mut m = Metric::from_label(pairs);
    let mut g = Gauge::default();
    g.set_value(value);
    m.set_gauge(g);
    m
}

impl Collector for JobsCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let options = self
            .options
            .read()
            .map(|o| o.clone())
            .unwrap_or(CollectorOptions {
                owner_breakdown: true,
                stale_after: Duration::from_secs(300),
            });
        let now = Instant::now();
        let mut out: Vec<Vec<Metric>> = vec![Vec::new(); FAMILIES.len()];
        let mut up = false;
        for (key, status) in self.store.view() {
            let (p, q) = (key.project_id.as_str(), key.queue.as_str());
            if status.attempted {
                up |= status.last_success;
                out[3].push(gauge(
                    &[("project_id", p), ("queue", q)],
                    f64::from(u8::from(status.last_success)),
                ));
                out[4].push(gauge(
                    &[("project_id", p), ("queue", q)],
                    status.last_duration.as_secs_f64(),
                ));
                out[5].push(gauge(
                    &[("project_id", p), ("queue", q)],
                    f64::from(status.last_pages),
                ));
            }
            if let Some(t) = status.last_success_unix {
                out[6].push(gauge(&[("project_id", p), ("queue", q)], t));
            }
            let Some(snapshot) = status.fresh_snapshot(options.stale_after, now) else {
                continue;
            };
            for state in KNOWN_STATES {
                let n = snapshot.by_state.get(state).copied().unwrap_or(0);
                out[0].push(gauge(
                    &[("project_id", p), ("queue", q), ("state", state)],
                    n as f64,
                ));
            }
            for (state, n) in &snapshot.by_state {
                if !KNOWN_STATES.contains(&state.as_str()) {
                    out[0].push(gauge(
                        &[("project_id", p), ("queue", q), ("state", state)],
                        *n as f64,
                    ));
                }
            }
            if options.owner_breakdown {
                for ((state, owner), n) in &snapshot.by_state_owner {
                    out[1].push(gauge(
                        &[
                            ("owner", owner),
                            ("project_id", p),
                            ("queue", q),
                            ("state", state),
                        ],
                        *n as f64,
                    ));
                }
            }
            for state in ACTIVE_STATES {
                if let Some(t) = snapshot.oldest_active.get(state) {
                    out[2].push(gauge(
                        &[("project_id", p), ("queue", q), ("state", state)],
                        *t,
                    ));
                }
            }
        }
        out[7].push(gauge(&[], f64::from(u8::from(up))));
        FAMILIES
            .iter()
            .zip(out)
            .map(|((name, help, _), metrics)| {
                let mut mf = MetricFamily::default();
                mf.set_name(name.to_string());
                mf.set_help(help.to_string());
                mf.set_field_type(MetricType::GAUGE);
                mf.set_metric(metrics);
                mf
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poll::aggregate::SnapshotBuilder;
    use crate::store::QueueKey;

    fn text(m: &Metrics) -> String {
        String::from_utf8(m.render()).expect("utf8")
    }

    /// Metrics over a store of one queue, `p1`/`q1`, with the owner breakdown on.
    fn one_queue() -> (QueueKey, Arc<SnapshotStore>, Metrics) {
        let k = QueueKey::new("p1", "q1");
        let store = Arc::new(SnapshotStore::new([k.clone()]));
        let metrics = Metrics::new(
            store.clone(),
            CollectorOptions {
                owner_breakdown: true,
                stale_after: Duration::from_secs(60),
            },
        )
        .expect("metrics");
        (k, store, metrics)
    }

    #[test]
    fn zero_fills_states_and_escapes_label_values() {
        let (k, store, metrics) = one_queue();
        let t = text(&metrics);
        assert!(t.contains("dli_up 0"), "{t}");
        assert!(
            !t.contains("dli_batch_jobs{"),
            "no job series before a successful poll"
        );
        assert!(
            !t.contains("dli_poll_success{"),
            "no poll metrics before the first attempt"
        );

        let mut b = SnapshotBuilder::new();
        b.add(&crate::dli::BatchJob::new(
            "a",
            "running",
            Some("a\"b\\c\nd 张三"),
            Some(1_700_000_000_500),
        ));
        store.record_success(&k, b.finish(10), Duration::from_millis(1500), 2);
        let t = text(&metrics);
        for state in KNOWN_STATES {
            let v = if state == "running" { 1 } else { 0 };
            assert!(
                t.contains(&format!(
                    "dli_batch_jobs{{project_id=\"p1\",queue=\"q1\",state=\"{state}\"}} {v}\n"
                )),
                "{t}"
            );
        }
        assert!(t.contains(r#"dli_batch_jobs_by_owner{owner="a\"b\\c\nd 张三",project_id="p1",queue="q1",state="running"} 1"#), "{t}");
        assert!(t.contains("dli_batch_oldest_job_created_timestamp_seconds{project_id=\"p1\",queue=\"q1\",state=\"running\"} 1700000000.5"), "{t}");
        assert!(t.contains("dli_poll_success{project_id=\"p1\",queue=\"q1\"} 1"));
        assert!(t.contains("dli_poll_pages{project_id=\"p1\",queue=\"q1\"} 2"));
        assert!(t.contains("dli_poll_duration_seconds{project_id=\"p1\",queue=\"q1\"} 1.5"));
        assert!(t.contains("dli_up 1"));
        assert!(t.contains(
            "dli_api_request_failures_total{operation=\"list_batches\",reason=\"throttled\"} 0"
        ));
        assert!(t.contains("dli_exporter_build_info{"));

        metrics.set_options(CollectorOptions {
            owner_breakdown: false,
            stale_after: Duration::from_secs(60),
        });
        assert!(!text(&metrics).contains("dli_batch_jobs_by_owner{"));
    }

    #[test]
    fn the_cached_exposition_changes_with_every_poll_and_option_change() {
        let (k, store, metrics) = one_queue();
        let served = |gzip| {
            let e = metrics.exposition(gzip);
            assert_eq!(e.gzip, gzip);
            e.body
        };
        let before = served(false);
        assert_eq!(served(false), before, "nothing changed: the same bytes");
        assert!(!String::from_utf8_lossy(&before).contains("dli_poll_success{"));

        let mut b = SnapshotBuilder::new();
        b.add(&crate::dli::BatchJob::new("a", "running", Some("o"), None));
        store.record_success(&k, b.finish(10), Duration::from_millis(5), 1);
        let after = String::from_utf8_lossy(&served(false)).into_owned();
        assert!(after.contains("dli_poll_success{project_id=\"p1\",queue=\"q1\"} 1"));
        assert!(after.contains("dli_batch_jobs_by_owner{owner=\"o\""));

        store.record_failure(&k, Duration::from_millis(5), 1);
        let failed = String::from_utf8_lossy(&served(false)).into_owned();
        assert!(failed.contains("dli_poll_success{project_id=\"p1\",queue=\"q1\"} 0"));

        metrics.set_options(CollectorOptions {
            owner_breakdown: false,
            stale_after: Duration::from_secs(60),
        });
        let mut text = String::new();
        use std::io::Read;
        flate2::read::GzDecoder::new(&served(true)[..])
            .read_to_string(&mut text)
            .expect("gunzip");
        assert!(!text.contains("dli_batch_jobs_by_owner{"), "{text}");
    }
}
