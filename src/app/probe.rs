//! `--probe` across the configuration: looks up project ids, lists the queues of discovering
//! projects (those requests do not count toward a queue's probe budget), then probes every
//! configured queue with [`crate::dli::probe::probe_queue`], a few queues at a time (at most
//! `poll.concurrency`), each queue's requests one after another so their latency is the API's.
//!
//! It owns the order of the reports (the configuration's) and what counts as a failed probe run;
//! printing is `run`'s.

use std::sync::Arc;

use futures_util::StreamExt;

use super::{StartError, build_clients, collector_options, discover_targets, resolve_project_ids};
use crate::config::Settings;
use crate::dli::probe::{ProbeOptions, ProbeReport, probe_queue};
use crate::metrics::Metrics;
use crate::store::SnapshotStore;

/// What `--probe` found: one report per queue, in configuration order, and the error of each
/// queue list that failed (whose discovered queues could not be probed).
pub struct ProbeRun {
    pub reports: Vec<ProbeReport>,
    pub list_errors: Vec<String>,
}

impl ProbeRun {
    /// Every queue list answered and every probe completed.
    pub fn completed(&self) -> bool {
        self.list_errors.is_empty() && self.reports.iter().all(ProbeReport::completed)
    }
}

/// Probes every configured queue (listed ones, and those discovered for `queues = ["*"]`).
pub async fn probe_all(settings: &Settings) -> Result<ProbeRun, StartError> {
    let mut settings = settings.clone();
    let store = Arc::new(SnapshotStore::new([]));
    let metrics = Metrics::new(store.clone(), collector_options(&settings))?;
    resolve_project_ids(&mut settings, metrics.observer()).await?;
    let clients = build_clients(&settings, &metrics)?;
    let (targets, list_errors) = discover_targets(&settings, &clients, &store, None).await;
    let options = ProbeOptions::new(settings.poll.page_size, settings.poll.retries);
    let options = &options;
    let reports = futures_util::stream::iter(targets.iter())
        .map(|(key, client)| async move { probe_queue(client, &key.queue, options).await })
        .buffered(settings.poll.concurrency.max(1) as usize)
        .collect()
        .await;
    Ok(ProbeRun {
        reports,
        list_errors,
    })
}
