//! The poll schedule: one task per project x queue, each walking its queue every
//! `poll.interval` (after a small random start offset), the walk bounded by `poll.timeout`, and
//! the outcome written to the [`SnapshotStore`].
//!
//! A walk that overruns delays the next one instead of overlapping it. All tasks share the
//! clients' one request concurrency limit. Each task is supervised: a poll that panics is
//! caught, logged, counted in the store and recorded as a failed attempt, and the queue polls
//! again at its next tick. It must not render metrics or serve HTTP.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use rand::Rng;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::aggregate::SnapshotBuilder;
pub use super::context::PollContext;
use super::incremental::{self, IncrementalState, Polled, QueueMemory, WalkTable};
use super::lifecycle::JobTracker;
use super::shard::{self, Shard};
use crate::config::Settings;
use crate::dli::{DliClient, WalkError, WalkProgress, walk_queue_with_progress};
use crate::store::QueueKey;

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

/// Walks one queue once, and publishes the snapshot (and the lifecycle counters, when a tracker
/// is given) only if every page was fetched and the queue is still configured as it was when the
/// poll started (see [`SnapshotStore::commit_success`]). Always a full walk: no job table is kept.
pub async fn poll_once(
    client: &DliClient,
    key: &QueueKey,
    ctx: &PollContext,
    tracker: Option<&mut JobTracker>,
) -> PollOutcome {
    let epoch = ctx.store.epoch(key);
    poll_at(
        client,
        key,
        ctx,
        tracker,
        None,
        epoch,
        &WalkProgress::default(),
    )
    .await
}

/// Polls one queue as its poller does: a full walk or, as `poll.mode` and what `memory` holds
/// allow, an incremental poll (docs/architecture.md, "Incremental polls").
pub async fn poll_queue(
    client: &DliClient,
    key: &QueueKey,
    ctx: &PollContext,
    memory: &mut QueueMemory,
) -> PollOutcome {
    let epoch = ctx.store.epoch(key);
    let QueueMemory {
        tracker,
        incremental,
    } = memory;
    poll_at(
        client,
        key,
        ctx,
        Some(tracker),
        Some(incremental),
        epoch,
        &WalkProgress::default(),
    )
    .await
}

/// [`poll_once`] for a poller that started with the queue's `epoch`, counting answered pages
/// into `progress`; incremental when `state` is given and allows it.
async fn poll_at(
    client: &DliClient,
    key: &QueueKey,
    ctx: &PollContext,
    tracker: Option<&mut JobTracker>,
    state: Option<&mut IncrementalState>,
    epoch: Option<u64>,
    progress: &WalkProgress,
) -> PollOutcome {
    let started = Instant::now();
    // The timeout is bounded by validation; a deadline that cannot be represented only means
    // that no retry waits.
    let deadline = started.checked_add(ctx.timeout).unwrap_or(started);
    let incremental = state.as_deref().is_some_and(|s| s.wants_incremental(ctx));
    let work = async {
        match state {
            Some(state) if incremental => {
                incremental::poll(client, key, ctx, state, tracker, deadline, progress).await
            }
            state => full_walk(client, key, ctx, tracker, state, deadline, progress).await,
        }
    };
    let result = tokio::time::timeout(ctx.timeout, work).await;
    let duration = started.elapsed();
    let kind = if incremental { "incremental" } else { "full" };
    match result {
        Ok(Ok(polled)) => {
            let jobs = polled.jobs;
            let pages = polled.pages;
            let events = polled.events;
            let report = || {
                if let (Some(events), Some(sink)) = (&events, &ctx.lifecycle) {
                    if !events.counted {
                        sink.init_queue(key);
                    }
                    sink.record(key, events);
                }
            };
            ctx.store
                .record_poll_kind(key, epoch, incremental, polled.drift);
            let committed =
                ctx.store
                    .commit_success(key, epoch, polled.snapshot, duration, pages, report);
            if !committed {
                tracing::debug!(project_id = %key.project_id, queue = %key.queue,
                    "poll finished after its queue was removed or re-added by a reload; not recorded");
            }
            tracing::debug!(project_id = %key.project_id, queue = %key.queue, kind, pages, jobs,
                duplicates = polled.duplicates, drift = polled.drift, duration_ms = millis(duration), "poll succeeded");
            PollOutcome {
                key: key.clone(),
                success: true,
                duration,
                pages,
                jobs,
                error: None,
            }
        }
        Ok(Err(e)) => {
            let reason = e.reason();
            tracing::warn!(project_id = %key.project_id, queue = %key.queue, kind, reason, error = %e, "poll failed; keeping the last good snapshot");
            ctx.store.record_poll_kind(key, epoch, incremental, 0);
            ctx.store
                .commit_failure(key, epoch, reason, duration, e.pages());
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
            // The walk was cut off: its pages still count (docs/architecture.md, "Snapshots and
            // staleness").
            let pages = progress.pages();
            let msg = format!(
                "project {} queue {:?}: walk exceeded poll.timeout = {} after {pages} pages",
                key.project_id,
                key.queue,
                humantime::format_duration(ctx.timeout)
            );
            tracing::warn!(project_id = %key.project_id, queue = %key.queue, kind, reason = "timeout", error = %msg, "poll failed; keeping the last good snapshot");
            ctx.store.record_poll_kind(key, epoch, incremental, 0);
            ctx.store
                .commit_failure(key, epoch, "timeout", duration, pages);
            PollOutcome {
                key: key.clone(),
                success: false,
                duration,
                pages,
                jobs: 0,
                error: Some(msg),
            }
        }
    }
}

/// A full walk folded into a snapshot, the lifecycle staging and, when `state` is given and
/// `poll.mode` is not `full`, a new job table (with the `auto` checks of the server).
async fn full_walk(
    client: &DliClient,
    key: &QueueKey,
    ctx: &PollContext,
    tracker: Option<&mut JobTracker>,
    state: Option<&mut IncrementalState>,
    deadline: Instant,
    progress: &WalkProgress,
) -> Result<Polled, WalkError> {
    let at = tokio::time::Instant::now();
    let mut builder = match &ctx.job_names {
        Some(filter) => SnapshotBuilder::with_job_names(filter.clone()),
        None => SnapshotBuilder::new(),
    };
    let mut state = state;
    let mut table = match state.as_deref_mut() {
        Some(state) => state.begin_walk(ctx),
        None => WalkTable::Off,
    };
    let mut staging = tracker.as_deref().map(JobTracker::begin);
    let stats = {
        let tracking = tracker.as_deref();
        let mut sink = |job: crate::dli::BatchJob| {
            builder.add(&job);
            table.add(&job);
            if let (Some(t), Some(s)) = (tracking, staging.as_mut()) {
                t.observe(s, &job);
            }
        };
        walk_queue_with_progress(client, &key.queue, &ctx.walk, deadline, progress, &mut sink)
            .await?
    };
    let walked = table.finish();
    let mut pages = stats.pages;
    let mut drift = 0;
    if let Some(state) = state {
        drift = state.end_walk(walked, at);
        let checks = state.check_server(client, key, ctx, &stats, deadline).await;
        pages = pages.saturating_add(checks);
    }
    let events = match (tracker, staging) {
        (Some(t), Some(s)) => Some(t.commit(s)),
        _ => None,
    };
    Ok(Polled {
        snapshot: builder.finish(ctx.max_owners),
        events,
        pages,
        jobs: stats.jobs,
        duplicates: stats.duplicates,
        drift,
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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

/// What each queue's poller keeps between polls (the lifecycle tracker and the job table), kept
/// across reloads so counters go on where they were.
pub type Trackers = HashMap<QueueKey, Arc<tokio::sync::Mutex<QueueMemory>>>;

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
        let tracker = trackers.get(&key).cloned().unwrap_or_default();
        spawn_poller(
            key,
            client,
            ctx.clone(),
            interval,
            cancel.clone(),
            tasks,
            tracker,
        );
    }
}

/// Starts the polling task of one queue on `tasks`; it stops when `cancel` fires.
///
/// The task is supervised: a panic inside a poll is caught, logged with the queue, counted in
/// the store (`dli_exporter_poll_panics_total`) and recorded as a failed attempt, and the queue
/// is polled again at its next tick. No other queue notices.
pub fn spawn_poller(
    key: QueueKey,
    client: Arc<DliClient>,
    ctx: PollContext,
    interval: Duration,
    cancel: CancellationToken,
    tasks: &TaskTracker,
    tracker: Arc<tokio::sync::Mutex<QueueMemory>>,
) {
    // A queue removed by a reload and added again is a new queue: this poller only ever commits
    // for the epoch the queue had when it started.
    let epoch = ctx.store.epoch(&key);
    // tokio refuses a zero period; validation never lets one through.
    let interval = interval.max(Duration::from_millis(1));
    tasks.spawn(async move {
        // Spread the queues so they do not all hit DLI at the same instant.
        let max_offset = (interval / 10).min(Duration::from_secs(5));
        let offset = rand::rng().random_range(Duration::ZERO..=max_offset);
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(offset) => {}
        }
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let mut tracked = tracker.lock().await;
            let QueueMemory {
                tracker: jobs,
                incremental,
            } = &mut *tracked;
            let started = Instant::now();
            let progress = WalkProgress::default();
            let poll = AssertUnwindSafe(poll_at(
                &client,
                &key,
                &ctx,
                Some(jobs),
                Some(incremental),
                epoch,
                &progress,
            ))
            .catch_unwind();
            let outcome = tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                outcome = poll => outcome,
            };
            if let Err(panic) = outcome {
                let message = panic_message(panic.as_ref());
                tracing::error!(project_id = %key.project_id, queue = %key.queue, panic = %message,
                    "poll panicked; counted in dli_exporter_poll_panics_total, the queue is polled again at its next interval");
                ctx.store
                    .record_panic(&key, epoch, started.elapsed(), progress.pages());
            }
        }
    });
}

/// The text of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}
