//! The snapshot store: the latest poll outcome and the last good [`QueueSnapshot`] of every
//! polled project x queue, and the last queue list of every project (`queues`).
//!
//! Pollers write into it (a successful walk replaces the snapshot whole, a failed one only marks
//! the poll failed); the metrics collector and the readiness check read it. It never calls DLI
//! and never renders anything.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod generation;
mod lifecycle;
mod queues;
mod snapshot;

pub use generation::Generation;
pub use lifecycle::{Finished, LifecycleEvents, LifecycleSink};
pub use queues::{QueueInfo, QueueListStatus};
pub use snapshot::QueueSnapshot;

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
}

impl QueueStatus {
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

    /// Makes the configured set exactly `keys`: new queues start empty, removed ones vanish,
    /// kept ones keep their state.
    pub fn set_queues(&self, keys: impl IntoIterator<Item = QueueKey>) {
        let keys: std::collections::BTreeSet<QueueKey> = keys.into_iter().collect();
        if let Ok(mut q) = self.queues.write() {
            q.retain(|k, _| keys.contains(k));
            for k in keys {
                q.entry(k).or_default();
            }
        }
        self.generation.bump();
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
        match self.queues.read() {
            Ok(q) => q.keys().cloned().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The next moment a queue's snapshot goes stale after `stale_after` (job series vanish
    /// then without any write), if one will.
    pub fn next_stale_at(&self, stale_after: Duration) -> Option<Instant> {
        let now = Instant::now();
        let q = self.queues.read().ok()?;
        q.values()
            .filter(|s| s.snapshot.is_some())
            .filter_map(|s| s.last_success_at)
            .map(|at| at + stale_after)
            .filter(|t| *t > now)
            .min()
    }

    /// A successful walk: the snapshot replaces the previous one in a single swap.
    pub fn record_success(
        &self,
        key: &QueueKey,
        snapshot: QueueSnapshot,
        duration: Duration,
        pages: u32,
    ) {
        let snapshot = Arc::new(snapshot);
        if let Ok(mut q) = self.queues.write()
            && let Some(status) = q.get_mut(key)
        {
            status.attempted = true;
            status.last_success = true;
            status.last_duration = duration;
            status.last_pages = pages;
            status.last_success_unix = Some(unix_now());
            status.last_success_at = Some(Instant::now());
            status.snapshot = Some(snapshot);
        }
        self.generation.bump();
    }

    /// A failed walk: the last good snapshot stays until it goes stale.
    pub fn record_failure(&self, key: &QueueKey, duration: Duration, pages: u32) {
        if let Ok(mut q) = self.queues.write()
            && let Some(status) = q.get_mut(key)
        {
            status.attempted = true;
            status.last_success = false;
            status.last_duration = duration;
            status.last_pages = pages;
        }
        self.generation.bump();
    }

    /// A consistent copy of every queue's status (snapshots are shared, not copied).
    pub fn view(&self) -> Vec<(QueueKey, QueueStatus)> {
        match self.queues.read() {
            Ok(q) => q.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Queues that have finished at least one poll attempt, and the number configured.
    pub fn attempted(&self) -> (usize, usize) {
        match self.queues.read() {
            Ok(q) => (q.values().filter(|s| s.attempted).count(), q.len()),
            Err(_) => (0, 0),
        }
    }

    /// The last poll of at least one queue succeeded (`dli_up`, with the shard rule of the
    /// collector on top).
    pub fn up(&self) -> bool {
        self.queues
            .read()
            .map(|q| q.values().any(|s| s.last_success))
            .unwrap_or(false)
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
        store.record_failure(&k, Duration::from_millis(7), 1);
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
