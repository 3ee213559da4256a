//! The snapshot store: the latest poll outcome and the last good [`QueueSnapshot`] of every
//! polled project x queue, and the last queue list of every project (`queues`).
//!
//! Pollers write into it (a successful walk replaces the snapshot whole, a failed one only marks
//! the poll failed, a panicked one is counted); the metrics collector and the readiness check
//! read it. It never calls DLI and never renders anything.
//!
//! Each configured queue carries an epoch, new every time the queue is (re-)added: a poller
//! commits only while the queue still has the epoch it started with, so a walk that finishes
//! after a reload removed its queue leaves no trace (docs/architecture.md, "Reload").

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod generation;
mod lifecycle;
mod queues;
mod snapshot;

pub use generation::Generation;
pub use lifecycle::{Finished, LifecycleEvents, LifecycleSink};
pub use queues::{QueueInfo, QueueListStatus};
pub use snapshot::{JobNames, LastRuns, QueueSnapshot};

/// A project x queue pair.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueKey {
    pub project_id: String,
    pub queue: String,
}

impl QueueKey {
    pub fn new(project_id: impl Into<String>, queue: impl Into<String>) -> Self {
        QueueKey {
            project_id: project_id.into(),
            queue: queue.into(),
        }
    }
}

impl std::fmt::Display for QueueKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.project_id, self.queue)
    }
}

/// What is known about one queue.
#[derive(Debug, Clone, Default)]
pub struct QueueStatus {
    /// The last poll ended (successfully or not).
    pub attempted: bool,
    pub last_success: bool,
    pub last_duration: Duration,
    pub last_pages: u32,
    /// Unix seconds of the last successful poll.
    pub last_success_unix: Option<f64>,
    /// Monotonic time of the last successful poll, for staleness.
    pub last_success_at: Option<Instant>,
    /// The last good snapshot; `None` until a poll succeeds.
    pub snapshot: Option<Arc<QueueSnapshot>>,
    /// Polls of this queue that panicked (caught by the scheduler).
    pub panics: u64,
    /// Failed polls of this queue by reason (`dli_poll_failures_total`), since it was configured.
    pub failures: BTreeMap<&'static str, u64>,
    /// Set when the queue was added; a poller commits only with the epoch it started with.
    pub epoch: u64,
    /// The last poll was incremental (`dli_poll_incremental`).
    pub last_incremental: bool,
    /// Jobs the periodic full walks found different from the incremental state
    /// (`dli_poll_incremental_drift_jobs_total`), since the queue was configured.
    pub drift_jobs: u64,
}

impl QueueStatus {
    /// Books an attempt that published nothing.
    fn failed_attempt(&mut self, duration: Duration, pages: u32) {
        self.attempted = true;
        self.last_success = false;
        self.last_duration = duration;
        self.last_pages = pages;
    }

    /// The snapshot, unless it is older than `stale_after`.
    pub fn fresh_snapshot(
        &self,
        stale_after: Duration,
        now: Instant,
    ) -> Option<&Arc<QueueSnapshot>> {
        let at = self.last_success_at?;
        if now.saturating_duration_since(at) > stale_after {
            return None;
        }
        self.snapshot.as_ref()
    }
}

/// Every configured queue's status, behind one lock held only for map operations.
#[derive(Debug, Default)]
pub struct SnapshotStore {
    queues: RwLock<BTreeMap<QueueKey, QueueStatus>>,
    /// The queue list of each project, by project id.
    lists: RwLock<BTreeMap<String, QueueListStatus>>,
    /// Bumped on every write, so `/metrics` knows its cached rendering is out of date.
    generation: Generation,
    /// The last epoch handed to a queue.
    epochs: AtomicU64,
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl SnapshotStore {
    pub fn new(keys: impl IntoIterator<Item = QueueKey>) -> Self {
        let store = SnapshotStore::default();
        store.set_queues(keys);
        store
    }

    /// The map for reading. A panic elsewhere while the lock was held (the scheduler catches
    /// panics of polls) leaves every entry whole, so a poisoned lock is used as it is.
    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<QueueKey, QueueStatus>> {
        self.queues.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<QueueKey, QueueStatus>> {
        self.queues.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the configured set exactly `keys`: new queues start empty with a new epoch,
    /// removed ones vanish, kept ones keep their state and epoch.
    pub fn set_queues(&self, keys: impl IntoIterator<Item = QueueKey>) {
        let keys: std::collections::BTreeSet<QueueKey> = keys.into_iter().collect();
        {
            let mut q = self.write();
            q.retain(|k, _| keys.contains(k));
            for k in keys {
                q.entry(k).or_insert_with(|| QueueStatus {
                    epoch: self.epochs.fetch_add(1, Ordering::Relaxed) + 1,
                    ..QueueStatus::default()
                });
            }
        }
        self.generation.bump();
    }

    /// The queue's current epoch; `None` when it is not configured.
    pub fn epoch(&self, key: &QueueKey) -> Option<u64> {
        self.read().get(key).map(|s| s.epoch)
    }

    /// Changes with every write to the store.
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    fn bump(&self) {
        self.generation.bump();
    }

    /// The queues polled now, in order.
    pub fn keys(&self) -> Vec<QueueKey> {
        self.read().keys().cloned().collect()
    }

    /// The next moment a queue's snapshot goes stale after `stale_after` (job series vanish
    /// then without any write), if one will.
    pub fn next_stale_at(&self, stale_after: Duration) -> Option<Instant> {
        let now = Instant::now();
        let q = self.read();
        q.values()
            .filter(|s| s.snapshot.is_some())
            .filter_map(|s| s.last_success_at)
            .filter_map(|at| at.checked_add(stale_after))
            .filter(|t| *t > now)
            .min()
    }

    /// Runs `change` on the queue's status if it is configured with `epoch` (any epoch when
    /// `None`), under the write lock; returns whether it ran.
    fn update(
        &self,
        key: &QueueKey,
        epoch: Option<u64>,
        change: impl FnOnce(&mut QueueStatus),
    ) -> bool {
        let done = {
            let mut q = self.write();
            match q.get_mut(key) {
                Some(status) if epoch.is_none_or(|e| e == status.epoch) => {
                    change(status);
                    true
                }
                _ => false,
            }
        };
        self.generation.bump();
        done
    }

    /// A successful walk: the snapshot replaces the previous one in a single swap.
    pub fn record_success(
        &self,
        key: &QueueKey,
        snapshot: QueueSnapshot,
        duration: Duration,
        pages: u32,
    ) {
        self.commit_success(key, None, snapshot, duration, pages, || {});
    }

    /// A successful walk of a poller that started with `epoch`: the snapshot replaces the
    /// previous one in a single swap, and `then` (the lifecycle report) runs under the same
    /// lock, so that a reload removing the queue happens either before (nothing is recorded) or
    /// after (and removes what was recorded). Returns false, running nothing, when the queue is
    /// no longer configured with that epoch.
    pub fn commit_success(
        &self,
        key: &QueueKey,
        epoch: Option<u64>,
        snapshot: QueueSnapshot,
        duration: Duration,
        pages: u32,
        then: impl FnOnce(),
    ) -> bool {
        let snapshot = Arc::new(snapshot);
        self.update(key, epoch, |status| {
            status.attempted = true;
            status.last_success = true;
            status.last_duration = duration;
            status.last_pages = pages;
            status.last_success_unix = Some(unix_now());
            status.last_success_at = Some(Instant::now());
            status.snapshot = Some(snapshot);
            then();
        })
    }

    /// A failed walk, counted under `reason`: the last good snapshot stays until it goes stale.
    pub fn record_failure(
        &self,
        key: &QueueKey,
        reason: &'static str,
        duration: Duration,
        pages: u32,
    ) {
        self.commit_failure(key, None, reason, duration, pages);
    }

    /// [`SnapshotStore::record_failure`] of a poller that started with `epoch`.
    pub fn commit_failure(
        &self,
        key: &QueueKey,
        epoch: Option<u64>,
        reason: &'static str,
        duration: Duration,
        pages: u32,
    ) -> bool {
        self.update(key, epoch, |status| {
            status.failed_attempt(duration, pages);
            let count = status.failures.entry(reason).or_default();
            *count = count.saturating_add(1);
        })
    }

    /// A poll that panicked: a failed attempt (so readiness does not wait for it), counted.
    pub fn record_panic(
        &self,
        key: &QueueKey,
        epoch: Option<u64>,
        duration: Duration,
        pages: u32,
    ) -> bool {
        self.update(key, epoch, |status| {
            status.failed_attempt(duration, pages);
            status.panics = status.panics.saturating_add(1);
        })
    }

    /// What kind of poll the poller of `epoch` is about to record: incremental or not, and the
    /// jobs a full walk found different from the incremental state (added to the drift count).
    pub fn record_poll_kind(
        &self,
        key: &QueueKey,
        epoch: Option<u64>,
        incremental: bool,
        drift_jobs: u64,
    ) -> bool {
        self.update(key, epoch, |status| {
            status.last_incremental = incremental;
            status.drift_jobs = status.drift_jobs.saturating_add(drift_jobs);
        })
    }

    /// A consistent copy of every queue's status (snapshots are shared, not copied).
    pub fn view(&self) -> Vec<(QueueKey, QueueStatus)> {
        self.read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Queues that have finished at least one poll attempt, and the number configured.
    pub fn attempted(&self) -> (usize, usize) {
        let q = self.read();
        (q.values().filter(|s| s.attempted).count(), q.len())
    }

    /// The last poll of at least one queue succeeded (`dli_up`, with the shard rule of the
    /// collector on top).
    pub fn up(&self) -> bool {
        self.read().values().any(|s| s.last_success)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_keeps_the_last_good_snapshot_until_stale() {
        let k = QueueKey::new("p", "q");
        let store = SnapshotStore::new([k.clone()]);
        assert_eq!(store.attempted(), (0, 1));
        let snap = QueueSnapshot {
            jobs: 3,
            ..Default::default()
        };
        store.record_success(&k, snap.clone(), Duration::from_millis(5), 2);
        store.record_failure(&k, "http_5xx", Duration::from_millis(7), 1);
        let (_, st) = store.view().into_iter().next().expect("one queue");
        assert!(!st.last_success && st.attempted);
        assert_eq!(st.last_pages, 1);
        let now = Instant::now();
        assert_eq!(
            st.fresh_snapshot(Duration::from_secs(60), now)
                .map(|s| s.jobs),
            Some(3)
        );
        assert!(
            st.fresh_snapshot(Duration::from_secs(60), now + Duration::from_secs(61))
                .is_none()
        );
        assert!(!store.up());
    }

    #[test]
    fn a_commit_with_a_stale_epoch_records_nothing() {
        let k = QueueKey::new("p", "q");
        let store = SnapshotStore::new([k.clone()]);
        let first = store.epoch(&k).expect("configured");
        store.set_queues([]);
        store.set_queues([k.clone()]);
        let second = store.epoch(&k).expect("configured again");
        assert_ne!(first, second, "a re-added queue gets a new epoch");
        let mut ran = false;
        let snap = QueueSnapshot::default();
        assert!(
            !store.commit_success(&k, Some(first), snap.clone(), Duration::ZERO, 1, || ran =
                true)
        );
        assert!(!ran, "the lifecycle report of a stale poller must not run");
        assert!(!store.commit_failure(&k, Some(first), "auth", Duration::ZERO, 1));
        assert_eq!(store.attempted(), (0, 1));
        assert!(store.commit_success(&k, Some(second), snap, Duration::ZERO, 1, || ran = true));
        assert!(ran);
        assert!(store.record_panic(&k, Some(second), Duration::ZERO, 0));
        assert!(!store.record_poll_kind(&k, Some(first), true, 5));
        assert!(store.record_poll_kind(&k, Some(second), true, 5));
        assert!(store.record_poll_kind(&k, Some(second), false, 2));
        let (_, st) = store.view().into_iter().next().expect("one queue");
        assert_eq!(st.panics, 1);
        assert!(!st.last_incremental);
        assert_eq!(
            st.drift_jobs, 7,
            "drift adds up, a stale poller's not counted"
        );
        assert!(st.attempted && !st.last_success);
        assert!(
            st.failures.is_empty(),
            "a stale poller's failure is not counted"
        );
    }

    #[test]
    fn failures_are_counted_by_reason_and_kept_while_the_queue_stays() {
        let (a, b) = (QueueKey::new("p", "a"), QueueKey::new("p", "b"));
        let store = SnapshotStore::new([a.clone(), b.clone()]);
        store.record_failure(&a, "inconsistent", Duration::ZERO, 2);
        store.record_failure(&a, "inconsistent", Duration::ZERO, 2);
        store.record_failure(&a, "timeout", Duration::ZERO, 0);
        store.record_success(&a, QueueSnapshot::default(), Duration::ZERO, 1);
        let failures = |store: &SnapshotStore, k: &QueueKey| {
            store
                .view()
                .into_iter()
                .find(|(key, _)| key == k)
                .map(|(_, s)| s.failures)
        };
        let counted = failures(&store, &a).expect("configured");
        assert_eq!(counted.get("inconsistent"), Some(&2));
        assert_eq!(counted.get("timeout"), Some(&1));
        assert_eq!(counted.len(), 2, "a success counts nothing");
        // A reload keeping `a` keeps its counts; removing and re-adding it starts again.
        store.set_queues([a.clone()]);
        assert_eq!(failures(&store, &a), Some(counted));
        store.set_queues([b.clone()]);
        store.set_queues([a.clone(), b]);
        assert_eq!(failures(&store, &a), Some(BTreeMap::new()));
    }

    #[test]
    fn set_queues_adds_and_removes() {
        let (a, b) = (QueueKey::new("p", "a"), QueueKey::new("p", "b"));
        let store = SnapshotStore::new([a.clone()]);
        store.record_success(&a, QueueSnapshot::default(), Duration::ZERO, 1);
        store.set_queues([a.clone(), b.clone()]);
        assert_eq!(store.attempted(), (1, 2));
        store.set_queues([b]);
        assert_eq!(store.attempted(), (0, 1));
    }
}
