//! Everything `/metrics` shows, in one private registry: the job and poll series rendered from
//! the [`SnapshotStore`] at scrape time (`jobs`), the API self-metrics fed by the client
//! (`api`), the per-job-name series (`job_names`), the job lifecycle counters fed by the pollers
//! (`lifecycle`), reload status, build
//! info and process metrics; and the render cache that serves them (`render_cache`).
//!
//! Metric names, labels and HELP texts are the contract (docs/architecture.md, "Metrics"). This
//! module never calls DLI, never imports the pollers or the web server, and never holds a secret.

mod api;
mod job_names;
mod jobs;
mod lifecycle;
mod queues;
mod render_cache;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus::{
    Encoder, Gauge as GaugeMetric, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub use api::ApiMetrics;

/// The descriptors of a collector's metric families: (name, help, label names).
pub(crate) fn family_descs<'a>(
    families: impl IntoIterator<Item = &'a (&'a str, &'a str, &'a [&'a str])>,
) -> Result<Vec<prometheus::core::Desc>, prometheus::Error> {
    families
        .into_iter()
        .map(|(name, help, labels)| {
            prometheus::core::Desc::new(
                name.to_string(),
                help.to_string(),
                labels.iter().map(|l| l.to_string()).collect(),
                Default::default(),
            )
        })
        .collect()
}
pub use job_names::JobNamesCollector;
pub use jobs::JobsCollector;
pub use lifecycle::{JOB_DURATION_BUCKETS, LifecycleMetrics};
pub use queues::QueueCollector;
pub use render_cache::{Exposition, RenderCache};

use crate::dli::RequestObserver;
use crate::store::{Generation, LifecycleSink, SnapshotStore, unix_now};
use crate::version::{REVISION, RUSTC_VERSION, VERSION};

/// Outcome of the last configuration (re)load.
pub struct ReloadMetrics {
    successful: IntGauge,
    success_timestamp: GaugeMetric,
    changes: Arc<Generation>,
}

impl ReloadMetrics {
    fn register(registry: &Registry, changes: Arc<Generation>) -> Result<Self, prometheus::Error> {
        let successful = IntGauge::new(
            "dli_exporter_config_last_reload_successful",
            "1 if the last configuration reload succeeded, else 0.",
        )?;
        let success_timestamp = GaugeMetric::new(
            "dli_exporter_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load.",
        )?;
        successful.set(1);
        success_timestamp.set(unix_now());
        registry.register(Box::new(successful.clone()))?;
        registry.register(Box::new(success_timestamp.clone()))?;
        Ok(ReloadMetrics {
            successful,
            success_timestamp,
            changes,
        })
    }

    pub fn record(&self, ok: bool) {
        self.successful.set(i64::from(ok));
        if ok {
            self.success_timestamp.set(unix_now());
        }
        self.changes.bump();
    }
}

/// What the job collector needs to know from the configuration (may change on reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorOptions {
    pub owner_breakdown: bool,
    pub stale_after: Duration,
    /// After this long without a successful queue list a project's `dli_queue_*` series are
    /// dropped (`discovery.interval + poll.stale_after`: a refresh overdue by `stale_after`).
    pub queue_list_stale_after: Duration,
}

/// The options as they are now (a poisoned lock still holds the last options written).
pub(crate) fn current_options(options: &RwLock<CollectorOptions>) -> CollectorOptions {
    options
        .read()
        .map(|o| o.clone())
        .unwrap_or_else(|e| e.into_inner().clone())
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
    shard_ordinal: IntGauge,
    total_shards: IntGauge,
    sharded: Arc<AtomicBool>,
}

impl Metrics {
    pub fn new(
        store: Arc<SnapshotStore>,
        options: CollectorOptions,
    ) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let changes = Arc::new(Generation::default());
        let api = Arc::new(ApiMetrics::register(&registry)?);
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
        registry.register(Box::new(build_info))?;
        // An exporter that is not sharded is the one shard of one.
        let shard_ordinal = IntGauge::new(
            "dli_exporter_shard_ordinal",
            "This exporter's shard number (--shard, from 0); 0 when not sharded.",
        )?;
        let total_shards = IntGauge::new(
            "dli_exporter_total_shards",
            "How many shards share the configured queues (--total-shards); 1 when not sharded.",
        )?;
        total_shards.set(1);
        registry.register(Box::new(shard_ordinal.clone()))?;
        registry.register(Box::new(total_shards.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let lifecycle = Arc::new(LifecycleMetrics::register(&registry, changes.clone())?);
        let reload = ReloadMetrics::register(&registry, changes.clone())?;
        let collector_options = Arc::new(RwLock::new(options));
        let sharded = Arc::new(AtomicBool::new(false));
        registry.register(Box::new(JobsCollector::new(
            store.clone(),
            collector_options.clone(),
            sharded.clone(),
        )?))?;
        registry.register(Box::new(QueueCollector::new(
            store.clone(),
            collector_options.clone(),
        )?))?;
        registry.register(Box::new(JobNamesCollector::new(
            store.clone(),
            collector_options.clone(),
        )?))?;
        Ok(Metrics {
            registry,
            api,
            collector_options,
            store,
            cache: RenderCache::new(),
            lifecycle,
            reload,
            changes,
            shard_ordinal,
            total_shards,
            sharded,
        })
    }

    /// This exporter is shard `ordinal` of `total` (`--shard`, `--total-shards`).
    pub fn set_shard(&self, ordinal: u32, total: u32) {
        self.shard_ordinal.set(i64::from(ordinal));
        self.total_shards.set(i64::from(total));
        self.sharded.store(true, Ordering::Relaxed);
        self.changes.bump();
    }

    /// The observer to hand to DLI clients.
    pub fn observer(&self) -> Arc<dyn RequestObserver> {
        self.api.clone()
    }

    /// The sink to hand to the pollers.
    pub fn lifecycle_sink(&self) -> Arc<dyn LifecycleSink> {
        self.lifecycle.clone()
    }

    pub fn set_options(&self, options: CollectorOptions) {
        match self.collector_options.write() {
            Ok(mut o) => *o = options,
            Err(poisoned) => *poisoned.into_inner() = options,
        }
        self.changes.bump();
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// What `/metrics` serves: the cached rendering while nothing changed (see
    /// [`render_cache`] for the staleness rule), gzip-encoded when `gzip`.
    pub fn exposition(&self, gzip: bool) -> Exposition {
        // Both counters only grow, so their sum changes whenever either does.
        let generation = self.store.generation().wrapping_add(self.changes.get());
        self.cache.get(generation, gzip, || {
            let (stale_after, list_stale_after) = match self.collector_options.read() {
                Ok(o) => (o.stale_after, o.queue_list_stale_after),
                Err(poisoned) => {
                    let o = poisoned.into_inner();
                    (o.stale_after, o.queue_list_stale_after)
                }
            };
            // Read before rendering: a queue going stale meanwhile makes the entry expire early.
            let until = [
                self.store.next_stale_at(stale_after),
                self.store.next_queue_list_stale_at(list_stale_after),
            ]
            .into_iter()
            .flatten()
            .min();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dli::states::KNOWN_STATES;
    use crate::store::{QueueKey, QueueSnapshot};

    /// A snapshot of one job in `state` owned by `owner`, created at `created` (unix seconds).
    fn one_job(state: &str, owner: &str, created: Option<f64>) -> QueueSnapshot {
        let mut s = QueueSnapshot {
            jobs: 1,
            ..Default::default()
        };
        s.by_state.insert(state.into(), 1);
        s.by_state_owner.insert((state.into(), owner.into()), 1);
        if let Some(t) = created {
            s.oldest_active.insert(state.into(), t);
        }
        s
    }

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
                queue_list_stale_after: Duration::from_secs(120),
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
        assert!(t.contains("# TYPE dli_poll_failures_total counter"), "{t}");
        for reason in crate::dli::POLL_FAILURE_REASONS {
            assert!(
                t.contains(&format!(
                    "dli_poll_failures_total{{project_id=\"p1\",queue=\"q1\",reason=\"{reason}\"}} 0\n"
                )),
                "every reason at 0 from the start: {t}"
            );
        }

        store.record_success(
            &k,
            one_job("running", "a\"b\\c\nd 张三", Some(1_700_000_000.5)),
            Duration::from_millis(1500),
            2,
        );
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
        assert!(t.contains("dli_exporter_shard_ordinal 0\n"), "{t}");
        assert!(t.contains("dli_exporter_total_shards 1\n"), "{t}");
        metrics.set_shard(2, 3);
        let t = text(&metrics);
        assert!(t.contains("dli_exporter_shard_ordinal 2\n"), "{t}");
        assert!(t.contains("dli_exporter_total_shards 3\n"), "{t}");

        metrics.set_options(CollectorOptions {
            owner_breakdown: false,
            stale_after: Duration::from_secs(60),
            queue_list_stale_after: Duration::from_secs(120),
        });
        assert!(!text(&metrics).contains("dli_batch_jobs_by_owner{"));
    }

    #[test]
    fn without_queues_only_a_shard_is_up() {
        let metrics = Metrics::new(
            Arc::new(SnapshotStore::new([])),
            CollectorOptions {
                owner_breakdown: true,
                stale_after: Duration::from_secs(60),
                queue_list_stale_after: Duration::from_secs(120),
            },
        )
        .expect("metrics");
        // Not sharded: nothing polled (nothing discovered yet) is not up.
        assert!(text(&metrics).contains("dli_up 0\n"));
        metrics.set_shard(1, 3);
        assert!(
            text(&metrics).contains("dli_up 1\n"),
            "a shard with no queue"
        );
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

        store.record_success(
            &k,
            one_job("running", "o", None),
            Duration::from_millis(5),
            1,
        );
        let after = String::from_utf8_lossy(&served(false)).into_owned();
        assert!(after.contains("dli_poll_success{project_id=\"p1\",queue=\"q1\"} 1"));
        assert!(after.contains("dli_batch_jobs_by_owner{owner=\"o\""));

        store.record_failure(&k, "inconsistent", Duration::from_millis(5), 1);
        let failed = String::from_utf8_lossy(&served(false)).into_owned();
        assert!(failed.contains("dli_poll_success{project_id=\"p1\",queue=\"q1\"} 0"));
        assert!(failed.contains(
            "dli_poll_failures_total{project_id=\"p1\",queue=\"q1\",reason=\"inconsistent\"} 1\n"
        ));

        metrics.set_options(CollectorOptions {
            owner_breakdown: false,
            stale_after: Duration::from_secs(60),
            queue_list_stale_after: Duration::from_secs(120),
        });
        let mut text = String::new();
        use std::io::Read;
        flate2::read::GzDecoder::new(&served(true)[..])
            .read_to_string(&mut text)
            .expect("gunzip");
        assert!(!text.contains("dli_batch_jobs_by_owner{"), "{text}");
    }
}
