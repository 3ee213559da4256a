//! [`LifecycleMetrics`]: `dli_batch_jobs_submitted_total`, `dli_batch_jobs_finished_total` and
//! `dli_batch_job_duration_seconds`, per queue. The pollers report to it through
//! [`LifecycleSink`]; it never looks at a job itself.

use std::sync::Arc;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::dli::states::{FINISHED_STATES, TERMINAL_STATES};
use crate::store::{Generation, LifecycleEvents, LifecycleSink, QueueKey};

/// Upper bounds of the job duration histogram: 30 s to 24 h.
pub const JOB_DURATION_BUCKETS: [f64; 13] = [
    30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 43200.0,
    86400.0,
];

/// Counters of jobs submitted and finished, and their run times, per queue.
pub struct LifecycleMetrics {
    finished: IntCounterVec,
    submitted: IntCounterVec,
    duration: HistogramVec,
    changes: Arc<Generation>,
}

impl LifecycleMetrics {
    /// Creates the metrics in `registry`; every change bumps `changes`.
    pub(super) fn register(
        registry: &Registry,
        changes: Arc<Generation>,
    ) -> Result<Self, prometheus::Error> {
        let finished = IntCounterVec::new(
            Opts::new(
                "dli_batch_jobs_finished_total",
                "Jobs seen entering a terminal state (success, dead, ...) since the exporter started; jobs that appeared and finished between two polls included, jobs already finished at the first poll not.",
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
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "dli_batch_job_duration_seconds",
                "Run time (the API's duration) of the jobs counted in dli_batch_jobs_finished_total.",
            )
            .buckets(JOB_DURATION_BUCKETS.to_vec()),
            &["project_id", "queue", "state"],
        )?;
        registry.register(Box::new(finished.clone()))?;
        registry.register(Box::new(submitted.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(LifecycleMetrics {
            finished,
            submitted,
            duration,
            changes,
        })
    }
}

impl LifecycleSink for LifecycleMetrics {
    /// The documented terminal states' counters exist from a queue's first walk on; others
    /// appear when seen.
    fn init_queue(&self, key: &QueueKey) {
        let (p, q) = (key.project_id.as_str(), key.queue.as_str());
        self.submitted.with_label_values(&[p, q]);
        for state in FINISHED_STATES {
            self.finished.with_label_values(&[p, q, state]);
            self.duration.with_label_values(&[p, q, state]);
        }
        self.changes.bump();
    }

    fn record(&self, key: &QueueKey, events: &LifecycleEvents) {
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

    fn remove_queue(&self, key: &QueueKey) {
        let (p, q) = (key.project_id.as_str(), key.queue.as_str());
        let _ = self.submitted.remove_label_values(&[p, q]);
        for state in TERMINAL_STATES {
            let _ = self.finished.remove_label_values(&[p, q, state]);
            let _ = self.duration.remove_label_values(&[p, q, state]);
        }
        self.changes.bump();
    }
}
