//! [`JobNamesCollector`]: the per-job-name series (`dli_batch_job_last_run_state`,
//! `dli_batch_job_last_run_start_timestamp_seconds`,
//! `dli_batch_job_last_success_timestamp_seconds`, `dli_batch_job_last_run_duration_seconds`,
//! `dli_batch_job_names_dropped`), built from the store's snapshots at every scrape.
//!
//! They follow the job series: present only while the queue's last good snapshot is fresh (see
//! `poll.stale_after`), and only for snapshots made with `metrics.job_names` set. Names, labels
//! and HELP texts are the contract (docs/architecture.md, "Metrics"). It reads the store and
//! never writes to it.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Metric, MetricFamily, MetricType};

use super::CollectorOptions;
use super::jobs::gauge;
use crate::dli::states::KNOWN_STATES;
use crate::store::SnapshotStore;

/// Renders the per-job-name series from the store at every scrape.
pub struct JobNamesCollector {
    store: Arc<SnapshotStore>,
    options: Arc<RwLock<CollectorOptions>>,
    descs: Vec<Desc>,
}

const NAME: [&str; 3] = ["job_name", "project_id", "queue"];

/// (name, help, labels) of every metric the collector renders, in rendering order.
const FAMILIES: [(&str, &str, &[&str]); 5] = [
    (
        "dli_batch_job_last_run_state",
        "1 for the state of the newest retained run (largest create_time) of each job name selected by metrics.job_names, 0 for the other known states; a state DLI does not document appears as itself.",
        &["job_name", "project_id", "queue", "state"],
    ),
    (
        "dli_batch_job_last_run_start_timestamp_seconds",
        "Creation time (unix seconds) of the newest retained run of the job name.",
        &NAME,
    ),
    (
        "dli_batch_job_last_success_timestamp_seconds",
        "End (unix seconds) of the newest retained successful run of the job name (update_time, else create_time + duration); absent when no successful run is retained.",
        &NAME,
    ),
    (
        "dli_batch_job_last_run_duration_seconds",
        "Duration in seconds of the newest retained finished (success or dead) run of the job name; absent when none is retained.",
        &NAME,
    ),
    (
        "dli_batch_job_names_dropped",
        "Job names selected by metrics.job_names beyond metrics.max_job_names_per_queue (those whose newest run is oldest), left out of the dli_batch_job_last_* series.",
        &["project_id", "queue"],
    ),
];

impl JobNamesCollector {
    pub(super) fn new(
        store: Arc<SnapshotStore>,
        options: Arc<RwLock<CollectorOptions>>,
    ) -> Result<Self, prometheus::Error> {
        let descs = super::family_descs(&FAMILIES)?;
        Ok(JobNamesCollector {
            store,
            options,
            descs,
        })
    }
}

impl Collector for JobNamesCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let stale_after = super::current_options(&self.options).stale_after;
        let now = Instant::now();
        let mut out: Vec<Vec<Metric>> = vec![Vec::new(); FAMILIES.len()];
        for (key, status) in self.store.view() {
            let Some(names) = status
                .fresh_snapshot(stale_after, now)
                .and_then(|s| s.job_names.as_ref())
            else {
                continue;
            };
            let (p, q) = (key.project_id.as_str(), key.queue.as_str());
            for (name, runs) in &names.names {
                let n = name.as_str();
                for state in KNOWN_STATES {
                    out[0].push(gauge(
                        &[
                            ("job_name", n),
                            ("project_id", p),
                            ("queue", q),
                            ("state", state),
                        ],
                        f64::from(u8::from(runs.state == state)),
                    ));
                }
                if !KNOWN_STATES.contains(&runs.state.as_str()) {
                    out[0].push(gauge(
                        &[
                            ("job_name", n),
                            ("project_id", p),
                            ("queue", q),
                            ("state", &runs.state),
                        ],
                        1.0,
                    ));
                }
                for (i, value) in [runs.start, runs.last_success, runs.last_duration]
                    .into_iter()
                    .enumerate()
                {
                    if let Some(v) = value {
                        out[i + 1].push(gauge(
                            &[("job_name", n), ("project_id", p), ("queue", q)],
                            v,
                        ));
                    }
                }
            }
            out[4].push(gauge(
                &[("project_id", p), ("queue", q)],
                names.dropped as f64,
            ));
        }
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
    use std::time::Duration;

    use super::*;
    use crate::metrics::Metrics;
    use crate::store::{JobNames, LastRuns, QueueKey, QueueSnapshot};

    fn options(stale_after: Duration) -> CollectorOptions {
        CollectorOptions {
            owner_breakdown: true,
            stale_after,
            queue_list_stale_after: Duration::from_secs(120),
        }
    }

    fn snapshot(job_names: Option<JobNames>) -> QueueSnapshot {
        let mut s = QueueSnapshot {
            jobs: 1,
            job_names,
            ..Default::default()
        };
        s.by_state.insert("dead".into(), 1);
        s
    }

    fn names() -> JobNames {
        let mut n = JobNames {
            dropped: 3,
            ..Default::default()
        };
        n.names.insert(
            "daily_etl".into(),
            LastRuns {
                state: "dead".into(),
                start: Some(1_700_000_000.125),
                last_success: Some(1_699_990_000.5),
                last_duration: Some(61.25),
            },
        );
        n.names.insert(
            "new \"job\"".into(),
            LastRuns {
                state: "queued".into(),
                start: None,
                last_success: None,
                last_duration: None,
            },
        );
        n
    }

    fn text(m: &Metrics) -> String {
        String::from_utf8(m.render()).expect("utf8")
    }

    #[test]
    fn renders_one_hot_states_times_and_the_dropped_count() {
        let k = QueueKey::new("p1", "q1");
        let store = Arc::new(SnapshotStore::new([k.clone()]));
        let metrics = Metrics::new(store.clone(), options(Duration::from_secs(60))).expect("ok");
        store.record_success(&k, snapshot(Some(names())), Duration::from_millis(5), 1);
        let t = text(&metrics);
        let series = |name: &str, job: &str, extra: &str| {
            format!("{name}{{job_name=\"{job}\",project_id=\"p1\",queue=\"q1\"{extra}}}")
        };
        for state in KNOWN_STATES {
            let v = u8::from(state == "dead");
            let s = series(
                "dli_batch_job_last_run_state",
                "daily_etl",
                &format!(",state=\"{state}\""),
            );
            assert!(t.contains(&format!("{s} {v}\n")), "{s}\n{t}");
            let s = series(
                "dli_batch_job_last_run_state",
                r#"new \"job\""#,
                &format!(",state=\"{state}\""),
            );
            assert!(t.contains(&format!("{s} 0\n")), "{s}\n{t}");
        }
        let s = series(
            "dli_batch_job_last_run_state",
            r#"new \"job\""#,
            ",state=\"queued\"",
        );
        assert!(t.contains(&format!("{s} 1\n")), "{t}");
        for (name, v) in [
            (
                "dli_batch_job_last_run_start_timestamp_seconds",
                "1700000000.125",
            ),
            (
                "dli_batch_job_last_success_timestamp_seconds",
                "1699990000.5",
            ),
            ("dli_batch_job_last_run_duration_seconds", "61.25"),
        ] {
            assert!(
                t.contains(&format!("{} {v}\n", series(name, "daily_etl", ""))),
                "{name}\n{t}"
            );
            assert!(
                !t.contains(&series(name, r#"new \"job\""#, "")),
                "{name} absent"
            );
        }
        assert!(t.contains("dli_batch_job_names_dropped{project_id=\"p1\",queue=\"q1\"} 3\n"));
    }

    #[test]
    fn nothing_without_job_names_and_everything_goes_stale_with_the_job_series() {
        let k = QueueKey::new("p1", "q1");
        let store = Arc::new(SnapshotStore::new([k.clone()]));
        let metrics = Metrics::new(store.clone(), options(Duration::from_secs(60))).expect("ok");
        store.record_success(&k, snapshot(None), Duration::from_millis(5), 1);
        let t = text(&metrics);
        assert!(t.contains("dli_batch_jobs{"), "{t}");
        assert!(!t.contains("dli_batch_job_"), "{t}");
        assert!(!t.contains("dli_batch_job_names_dropped"), "{t}");

        store.record_success(
            &k,
            snapshot(Some(JobNames::default())),
            Duration::from_millis(5),
            1,
        );
        let t = text(&metrics);
        assert!(t.contains("dli_batch_job_names_dropped{project_id=\"p1\",queue=\"q1\"} 0\n"));

        store.record_success(&k, snapshot(Some(names())), Duration::from_millis(5), 1);
        metrics.set_options(options(Duration::from_millis(1)));
        std::thread::sleep(Duration::from_millis(5));
        let t = text(&metrics);
        assert!(!t.contains("dli_batch_jobs{"), "{t}");
        assert!(!t.contains("dli_batch_job_"), "{t}");
        assert!(
            t.contains("dli_poll_success{project_id=\"p1\",queue=\"q1\"} 1"),
            "{t}"
        );
    }
}
