//! The poll schedule: one task per project x queue, each walking its queue every
//! `poll.interval` (after a small random start offset), the walk bounded by `poll.timeout`, and
//! the outcome written to the [`SnapshotStore`].
//!
//! A walk that overruns delays the next one instead of overlapping it. All tasks share the
//! clients' one request concurrency limit. It must not render metrics or serve HTTP.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::aggregate::SnapshotBuilder;
use super::lifecycle::JobTracker;
use super::shard::{self, Shard};
use crate::config::{PollConfig, Settings};
use crate::dli::{DliClient, RetryPolicy, WalkOptions, walk_queue};
use crate::store::{LifecycleSink, QueueKey, SnapshotStore, unix_now};

/// The outcome of one poll of one queue.
#[derive(Debug)]
pub struct PollOutcome {
    pub key: QueueKey,
    pub success: bool,
    pub duration: Duration,
    pub pages: u32,
    pub jobs: u64,
    /// The error, for logs and `--once`; it names project, queue, page and HTTP details.
    pub error: Option<String>,
}

/// Everything one poll needs besides the queue.
#[derive(Clone)]
pub struct PollContext {
    pub store: Arc<SnapshotStore>,
    pub walk: WalkOptions,
    pub timeout: Duration,
    pub max_owners: usize,
    /// Where submitted/finished counters go; `None` for one-shot polls.
    pub lifecycle: Option<Arc<dyn LifecycleSink>>,
}

impl PollContext {
    pub fn new(store: Arc<SnapshotStore>, poll: &PollConfig, max_owners: u32) -> Self {
        PollContext {
            store,
            walk: WalkOptions {
                page_size: poll.page_size,
                max_pages: poll.max_pages,
                concurrency: poll.concurrency as usize,
                retry: RetryPolicy::new(poll.retries),
            },
            timeout: poll.timeout,
            max_owners: max_owners as usize,
            lifecycle: None,
        }
    }
}

/// Walks one queue once, and publishes the snapshot (and the lifecycle counters, when a tracker
/// is given) only if every page was fetched.
pub async fn poll_once(
    client: &DliClient,
    key: &QueueKey,
    ctx: &PollContext,
    tracker: Option<&mut JobTracker>,
) -> PollOutcome {
    let started = Instant::now();
    let deadline = started + ctx.timeout;
    let mut builder = SnapshotBuilder::new();
    let mut staging = tracker
        .as_deref()
        .map(|t| t.begin((unix_now() * 1000.0) as i64));
    let result = {
        let tracking = tracker.as_deref();
        let mut sink = |job: crate::dli::BatchJob| {
            builder.add(&job);
            if let (Some(t), Some(s)) = (tracking, staging.as_mut()) {
                t.observe(s, &job);
            }
        };
        let walk = walk_queue(client, &key.queue, &ctx.walk, deadline, &mut sink);
        tokio::time::timeout(ctx.timeout, walk).await
    };
    let duration = started.elapsed();
    match result {
        Ok(Ok(stats)) => {
            let jobs = stats.jobs;
            ctx.store
                .record_success(key, builder.finish(ctx.max_owners), duration, stats.pages);
            if let (Some(t), Some(s)) = (tracker, staging) {
                let events = t.commit(s);
                if let Some(metrics) = &ctx.lifecycle {
                    if !events.counted {
                        metrics.init_queue(key);
                    }
                    metrics.record(key, &events);
                }
            }
            tracing::debug!(project_id = %key.project_id, queue = %key.queue, pages = stats.pages, jobs,
                duplicates = stats.duplicates, duration_ms = duration.as_millis() as u64, "poll succeeded");
            PollOutcome {
                key: key.clone(),
                success: true,
                duration,
                pages: stats.pages,
                jobs,
                error: None,
            }
        }
        Ok(Err(e)) => {
            let reason = e
                .request_error()
                .map(|r| r.reason().as_str())
                .unwrap_or("max_pages");
            tracing::warn!(project_id = %key.project_id, queue = %key.queue, reason, error = %e, "poll failed; keeping the last good snapshot");
            ctx.store.record_failure(key, duration, e.pages());
            PollOutcome {
                key: key.clone(),
                success: false,
                duration,
                pages: e.pages(),
                jobs: 0,
                error: Some(e.to_string()),
            }
        }
        Err(_) => {
            let msg = format!(
                "project {} queue {:?}: walk exceeded poll.timeout = {}",
                key.project_id,
                key.queue,
                humantime::format_duration(ctx.timeout)
            );
            tracing::warn!(project_id = %key.project_id, queue = %key.queue, reason = "timeout", error = %msg, "poll failed; keeping the last good snapshot");
            ctx.store.record_failure(key, duration, 0);
            PollOutcome {
                key: key.clone(),
                success: false,
                duration,
                pages: 0,
                jobs: 0,
                error: Some(msg),
            }
        }
    }
}

/// The clients of every configured project, by project id.
pub type Clients = HashMap<String, Arc<DliClient>>;

/// Every configured queue with its project's client.
pub fn queue_targets(settings: &Settings, clients: &Clients) -> Vec<(QueueKey, Arc<DliClient>)> {
    shard_targets(settings, clients, None)
}

/// The configured queues `shard` polls (all of them when `None`), with their project's client.
pub fn shard_targets(
    settings: &Settings,
    clients: &Clients,
    shard: Option<&Shard>,
) -> Vec<(QueueKey, Arc<DliClient>)> {
    settings
        .queue_pairs()
        .filter(|(project, queue)| shard::assigned(&project.project_id, queue, shard))
        .filter_map(|(project, queue)| {
            let client = clients.get(&project.project_id)?;
            Some((QueueKey::new(&project.project_id, queue), client.clone()))
        })
        .collect()
}

/// Polls every queue once, concurrently (the clients' shared limit still applies).
pub async fn poll_all_once(
    targets: &[(QueueKey, Arc<DliClient>)],
    ctx: &PollContext,
) -> Vec<PollOutcome> {
    let polls = targets
        .iter()
        .map(|(key, client)| poll_once(client, key, ctx, None));
    futures_util::future::join_all(polls).await
}

/// The lifecycle tracker of each queue, kept across reloads so counters go on where they were.
pub type Trackers = HashMap<QueueKey, Arc<tokio::sync::Mutex<JobTracker>>>;

/// Starts one polling task per queue on `tasks`; they stop when `cancel` fires.
pub fn spawn_pollers(
    targets: Vec<(QueueKey, Arc<DliClient>)>,
    ctx: PollContext,
    interval: Duration,
    cancel: CancellationToken,
    tasks: &TaskTracker,
    trackers: &Trackers,
) {
    for (key, client) in targets {
        let ctx = ctx.clone();
        let cancel = cancel.clone();
        let job_tracker = trackers.get(&key).cloned().unwrap_or_default();
        tasks.spawn(async move {
            // Spread the queues so they do not all hit DLI at the same instant.
            let max_offset = (interval / 10).min(Duration::from_secs(5));
            let offset = rand::rng().random_range(Duration::ZERO..=max_offset);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(offset) => {}
            }
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                let mut tracked = job_tracker.lock().await;
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = poll_once(&client, &key, &ctx, Some(&mut tracked)) => {}
                }
            }
        });
    }
}
