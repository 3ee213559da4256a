//! [`JobsCollector`]: the job and poll series (`dli_batch_jobs`, `dli_batch_jobs_by_owner`, the
//! oldest active job, `dli_poll_*` (incremental polls and their drift included), `dli_up`, `dli_poll_failures_total`,
//! `dli_exporter_poll_panics_total`), built fresh
//! from the store's snapshots at every scrape, so queues, states and owners that vanish also
//! vanish from `/metrics`.
//!
//! Names, labels and HELP texts are the contract (docs/architecture.md, "Metrics"). It reads
//! the store and never writes to it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

use super::CollectorOptions;
use crate::dli::POLL_FAILURE_REASONS;
use crate::dli::states::{ACTIVE_STATES, KNOWN_STATES};
use crate::store::SnapshotStore;

/// Renders the job and poll metrics from the store's current snapshots at every scrape, so
/// queues, states and owners that vanish also vanish from `/metrics`.
pub struct JobsCollector {
    store: Arc<SnapshotStore>,
    options: Arc<RwLock<CollectorOptions>>,
    /// This exporter is a shard: with no queue assigned it reports `dli_up` 1.
    sharded: Arc<AtomicBool>,
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
const POLL_PANICS: &str = "dli_exporter_poll_panics_total";
const POLL_PANICS_HELP: &str = "Polls of the queue that panicked and were caught (the queue is polled again at its next interval); since the queue was configured.";
const POLL_INCREMENTAL: &str = "dli_poll_incremental";
const POLL_DRIFT: &str = "dli_poll_incremental_drift_jobs_total";
const POLL_DRIFT_HELP: &str = "Jobs the periodic full walk of an incrementally polled queue found different from the incremental state (removed by retention, listed late, or with another owner or a changed final state), since the queue was configured.";
const POLL_FAILURES: &str = "dli_poll_failures_total";
const POLL_FAILURES_HELP: &str = "Failed polls of the queue by reason, one per failed poll, since the queue was configured: the request failure that ended the walk (timeout, connect, http_4xx, http_5xx, throttled, auth, decode), inconsistent (pages the walk cannot prove exact; nothing published), max_pages, or timeout (also the whole-walk bound poll.timeout).";

/// (name, help, labels) of every metric the collector renders.
const FAMILIES: [(&str, &str, &[&str]); 9] = [
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
        POLL_INCREMENTAL,
        "1 if the last poll of the queue was incremental (poll.mode), else 0 (a full walk).",
        &["project_id", "queue"],
    ),
    (
        UP,
        "1 if the last poll of at least one queue succeeded (or this shard has no queue assigned), else 0.",
        &[],
    ),
];

impl JobsCollector {
    pub(super) fn new(
        store: Arc<SnapshotStore>,
        options: Arc<RwLock<CollectorOptions>>,
        sharded: Arc<AtomicBool>,
    ) -> Result<Self, prometheus::Error> {
        let counters: [(&str, &str, &[&str]); 3] = [
            (POLL_PANICS, POLL_PANICS_HELP, &["project_id", "queue"]),
            (POLL_DRIFT, POLL_DRIFT_HELP, &["project_id", "queue"]),
            (
                POLL_FAILURES,
                POLL_FAILURES_HELP,
                &["project_id", "queue", "reason"],
            ),
        ];
        let descs = super::family_descs(FAMILIES.iter().chain(counters.iter()))?;
        Ok(JobsCollector {
            store,
            options,
            sharded,
            descs,
        })
    }
}

fn labelled(labels: &[(&str, &str)]) -> Metric {
    let pairs = labels
        .iter()
        .map(|(n, v)| {
            let mut p = LabelPair::default();
            p.set_name(n.to_string());
            p.set_value(v.to_string());
            p
        })
        .collect();
    Metric::from_label(pairs)
}

/// One gauge sample with these labels (names in alphabetical order).
pub(super) fn gauge(labels: &[(&str, &str)], value: f64) -> Metric {
    let mut m = labelled(labels);
    let mut g = Gauge::default();
    g.set_value(value);
    m.set_gauge(g);
    m
}

fn counter(labels: &[(&str, &str)], value: f64) -> Metric {
    let mut m = labelled(labels);
    let mut c = Counter::default();
    c.set_value(value);
    m.set_counter(c);
    m
}

impl Collector for JobsCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let options = super::current_options(&self.options);
        let now = Instant::now();
        let mut out: Vec<Vec<Metric>> = vec![Vec::new(); FAMILIES.len()];
        let mut panics = Vec::new();
        let mut drift = Vec::new();
        let mut failures = Vec::new();
        let view = self.store.view();
        // A shard with no queue assigned to it: nothing of its own failed. (Without shards an
        // empty set means discovery has found nothing yet, which is not "up".)
        let mut up = view.is_empty() && self.sharded.load(Ordering::Relaxed);
        for (key, status) in view {
            let (p, q) = (key.project_id.as_str(), key.queue.as_str());
            // Every configured queue has the counter from the start, so `increase()` sees the
            // first panic.
            panics.push(counter(
                &[("project_id", p), ("queue", q)],
                status.panics as f64,
            ));
            drift.push(counter(
                &[("project_id", p), ("queue", q)],
                status.drift_jobs as f64,
            ));
            // Every reason from the start too, so `increase()` sees a queue's first failure.
            let reasons = POLL_FAILURE_REASONS.iter().copied().chain(
                status
                    .failures
                    .keys()
                    .copied()
                    .filter(|r| !POLL_FAILURE_REASONS.contains(r)),
            );
            for reason in reasons {
                let n = status.failures.get(reason).copied().unwrap_or(0);
                failures.push(counter(
                    &[("project_id", p), ("queue", q), ("reason", reason)],
                    n as f64,
                ));
            }
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
                out[7].push(gauge(
                    &[("project_id", p), ("queue", q)],
                    f64::from(u8::from(status.last_incremental)),
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
        out[8].push(gauge(&[], f64::from(u8::from(up))));
        let family = |name: &str, help: &str, kind, metrics| {
            let mut mf = MetricFamily::default();
            mf.set_name(name.to_string());
            mf.set_help(help.to_string());
            mf.set_field_type(kind);
            mf.set_metric(metrics);
            mf
        };
        FAMILIES
            .iter()
            .zip(out)
            .map(|((name, help, _), metrics)| family(name, help, MetricType::GAUGE, metrics))
            .chain(std::iter::once(family(
                POLL_PANICS,
                POLL_PANICS_HELP,
                MetricType::COUNTER,
                panics,
            )))
            .chain(std::iter::once(family(
                POLL_DRIFT,
                POLL_DRIFT_HELP,
                MetricType::COUNTER,
                drift,
            )))
            .chain(std::iter::once(family(
                POLL_FAILURES,
                POLL_FAILURES_HELP,
                MetricType::COUNTER,
                failures,
            )))
            .collect()
    }
}
