//! The queue list of each project as the store keeps it: [`QueueInfo`] (what the last successful
//! list said about a queue) and [`QueueListStatus`] (the outcome of the last list, the size of the
//! discovered set, whether the first discovery is still pending). Written by discovery, read by
//! the queue metrics and the readiness check. Plain data; nothing here knows about DLI or
//! Prometheus.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::SnapshotStore;

/// What the queue list said about one queue; `None` where the list omitted a field or gave it
/// a value of the wrong type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueInfo {
    pub queue_type: Option<String>,
    /// 0 shared, 1 dedicated.
    pub resource_mode: Option<i64>,
    pub charging_mode: Option<i64>,
    pub elastic_resource_pool: Option<String>,
    pub cu_count: Option<f64>,
    pub used_cu: Option<f64>,
    pub cu_scale_out_limit: Option<f64>,
    pub cu_scale_in_limit: Option<f64>,
}

/// The queue list of one project.
#[derive(Debug, Clone, Default)]
pub struct QueueListStatus {
    /// A list request has ended (successfully or not).
    pub attempted: bool,
    pub last_success: bool,
    /// Monotonic time of the last successful list, for staleness.
    pub last_success_at: Option<Instant>,
    /// Every queue of the last successful list, by name.
    pub infos: Arc<BTreeMap<String, QueueInfo>>,
    /// The project discovers its queues.
    pub discovers: bool,
    /// Queues in the discovered set (after the type and name filters); `None` until the first
    /// discovery attempt ended, and for projects that do not discover.
    pub discovered: Option<usize>,
}

impl QueueListStatus {
    /// The infos of the last successful list, unless it is older than `stale_after`.
    pub fn fresh_infos(
        &self,
        stale_after: Duration,
        now: Instant,
    ) -> Option<&Arc<BTreeMap<String, QueueInfo>>> {
        let at = self.last_success_at?;
        (now.saturating_duration_since(at) <= stale_after).then_some(&self.infos)
    }

    /// The first discovery of a discovering project has not ended yet.
    pub fn pending(&self) -> bool {
        self.discovers && self.discovered.is_none()
    }
}

impl SnapshotStore {
    /// Makes the set of projects with a queue list exactly `projects` (id, discovers): new ones
    /// start empty, removed ones vanish, kept ones keep their list and discovered count.
    pub fn set_queue_list_projects(&self, projects: impl IntoIterator<Item = (String, bool)>) {
        let projects: BTreeMap<String, bool> = projects.into_iter().collect();
        if let Ok(mut lists) = self.lists.write() {
            lists.retain(|id, _| projects.contains_key(id));
            for (id, discovers) in projects {
                let status = lists.entry(id).or_default();
                if status.discovers != discovers {
                    status.discovers = discovers;
                    status.discovered = None;
                }
            }
        }
        self.bump();
    }

    /// A successful queue list of `project_id`: its infos replace the previous ones whole.
    pub fn record_queue_list(&self, project_id: &str, infos: BTreeMap<String, QueueInfo>) {
        if let Ok(mut lists) = self.lists.write()
            && let Some(status) = lists.get_mut(project_id)
        {
            status.attempted = true;
            status.last_success = true;
            status.last_success_at = Some(Instant::now());
            status.infos = Arc::new(infos);
        }
        self.bump();
    }

    /// A failed queue list: the last good infos stay until they go stale.
    pub fn record_queue_list_failure(&self, project_id: &str) {
        if let Ok(mut lists) = self.lists.write()
            && let Some(status) = lists.get_mut(project_id)
        {
            status.attempted = true;
            status.last_success = false;
        }
        self.bump();
    }

    /// The size of `project_id`'s discovered set after a discovery attempt (successful or not).
    pub fn record_discovered(&self, project_id: &str, queues: usize) {
        if let Ok(mut lists) = self.lists.write()
            && let Some(status) = lists.get_mut(project_id)
        {
            status.discovered = Some(queues);
        }
        self.bump();
    }

    /// A copy of every project's queue list status (infos are shared, not copied).
    pub fn queue_lists(&self) -> Vec<(String, QueueListStatus)> {
        match self.lists.read() {
            Ok(l) => l.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Projects whose first discovery has not ended: `/-/ready` waits for them.
    pub fn pending_discoveries(&self) -> usize {
        self.lists
            .read()
            .map(|l| l.values().filter(|s| s.pending()).count())
            .unwrap_or(0)
    }

    /// The next moment a project's queue list goes stale after `stale_after`, if one will.
    pub fn next_queue_list_stale_at(&self, stale_after: Duration) -> Option<Instant> {
        let now = Instant::now();
        let lists = self.lists.read().ok()?;
        lists
            .values()
            .filter_map(|s| s.last_success_at)
            .map(|at| at + stale_after)
            .filter(|t| *t > now)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_kept_on_failure_until_stale_and_pending_until_discovered() {
        let store = SnapshotStore::new([]);
        store.set_queue_list_projects([("p".to_string(), true), ("x".to_string(), false)]);
        assert_eq!(store.pending_discoveries(), 1);
        let info = QueueInfo {
            cu_count: Some(16.0),
            ..Default::default()
        };
        store.record_queue_list("p", BTreeMap::from([("q".to_string(), info.clone())]));
        store.record_discovered("p", 1);
        assert_eq!(store.pending_discoveries(), 0);
        store.record_queue_list_failure("p");
        let (_, p) = store
            .queue_lists()
            .into_iter()
            .find(|(id, _)| id == "p")
            .expect("p");
        assert!(p.attempted && !p.last_success);
        let now = Instant::now();
        assert_eq!(
            p.fresh_infos(Duration::from_secs(60), now)
                .and_then(|i| i.get("q").cloned()),
            Some(info)
        );
        assert!(
            p.fresh_infos(Duration::from_secs(60), now + Duration::from_secs(61))
                .is_none()
        );
        // Kept projects keep their state; a project that stops discovering loses its count.
        store.set_queue_list_projects([("p".to_string(), false)]);
        let lists = store.queue_lists();
        assert_eq!(lists.len(), 1);
        assert_eq!(lists[0].1.discovered, None);
        assert_eq!(lists[0].1.infos.len(), 1);
    }
}
