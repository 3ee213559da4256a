//! Aggregation of one walk into a [`QueueSnapshot`]: counts by state and by state x owner (with
//! the owner cap and `__other__` overflow), the oldest `create_time` per active state, and, when
//! `metrics.job_names` is set, the selected job names' last runs (`super::job_names`).
//!
//! Memory grows with distinct states and owners (and kept job names), never with the number of
//! jobs: jobs are folded
//! in one at a time and dropped. It does no I/O and knows nothing of Prometheus.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::job_names::JobNamesBuilder;
use super::labels::bounded_label;
pub use super::labels::{MAX_LABEL_BYTES, UNKNOWN_STATE};
use crate::config::JobNameFilter;
use crate::dli::BatchJob;
use crate::dli::states::{ACTIVE_STATES, KNOWN_STATES};
use crate::store::QueueSnapshot;

/// Owner label of jobs that have no owner (missing, null or empty).
pub const UNKNOWN_OWNER: &str = "__unknown__";
/// Owner label of the jobs of every owner beyond `max_owners_per_queue`.
pub const OTHER_OWNER: &str = "__other__";
/// State label of jobs whose undocumented state came after [`MAX_EXTRA_STATES`] others.
pub const OTHER_STATE: &str = "__other__";
/// Undocumented states exported as they come, per queue and walk. Livy, which DLI is built on,
/// has six more than DLI documents; a server inventing a state per job must not create a series
/// per job, so the rest are counted under [`OTHER_STATE`].
pub const MAX_EXTRA_STATES: usize = 16;

/// Folds jobs into counts as a walk streams them.
#[derive(Debug, Default)]
pub struct SnapshotBuilder {
    by_state: HashMap<String, u64>,
    /// owner -> state -> count
    by_owner: HashMap<String, HashMap<String, u64>>,
    oldest_ms: HashMap<&'static str, i64>,
    /// Distinct states seen that DLI does not document (including [`UNKNOWN_STATE`]).
    extra_states: usize,
    jobs: u64,
    /// The selected job names; `None` when `metrics.job_names` is off.
    job_names: Option<JobNamesBuilder>,
}

impl SnapshotBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder that also folds the job names `filter` selects.
    pub fn with_job_names(filter: Arc<JobNameFilter>) -> Self {
        SnapshotBuilder {
            job_names: Some(JobNamesBuilder::new(filter)),
            ..Self::default()
        }
    }

    pub fn add(&mut self, job: &BatchJob) {
        self.jobs += 1;
        if let Some(names) = &mut self.job_names {
            names.add(job);
        }
        let state = match job.state.as_deref() {
            Some(s) if !s.is_empty() => bounded_label(s),
            _ => Cow::Borrowed(UNKNOWN_STATE),
        };
        let state: &str = if KNOWN_STATES.contains(&&*state) || self.by_state.contains_key(&*state)
        {
            &state
        } else if self.extra_states < MAX_EXTRA_STATES {
            self.extra_states += 1;
            &state
        } else {
            OTHER_STATE
        };
        bump(&mut self.by_state, state);
        let owner = match job.owner.as_deref() {
            Some(o) if !o.is_empty() => bounded_label(o),
            _ => Cow::Borrowed(UNKNOWN_OWNER),
        };
        let owner: &str = &owner;
        match self.by_owner.get_mut(owner) {
            Some(states) => bump(states, state),
            None => {
                let mut states = HashMap::with_capacity(2);
                states.insert(state.to_string(), 1);
                self.by_owner.insert(owner.to_string(), states);
            }
        }
        if let (Some(active), Some(created)) =
            (ACTIVE_STATES.iter().find(|s| **s == state), job.create_time)
        {
            let oldest = self.oldest_ms.entry(active).or_insert(created);
            if created < *oldest {
                *oldest = created;
            }
        }
    }

    /// The snapshot, keeping the top `max_owners` owners by job count (ties by name) and summing
    /// the rest into `__other__`.
    pub fn finish(self, max_owners: usize) -> QueueSnapshot {
        let mut owners: Vec<(String, HashMap<String, u64>, u64)> = self
            .by_owner
            .into_iter()
            .map(|(owner, states)| {
                let total = states.values().sum();
                (owner, states, total)
            })
            .collect();
        owners.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        let mut by_state_owner = BTreeMap::new();
        for (rank, (owner, states, _)) in owners.into_iter().enumerate() {
            let label = if rank < max_owners {
                owner
            } else {
                OTHER_OWNER.to_string()
            };
            for (state, n) in states {
                *by_state_owner.entry((state, label.clone())).or_insert(0) += n;
            }
        }
        QueueSnapshot {
            by_state: self.by_state.into_iter().collect(),
            by_state_owner,
            oldest_active: self
                .oldest_ms
                .into_iter()
                .map(|(s, ms)| (s.to_string(), ms as f64 / 1000.0))
                .collect(),
            jobs: self.jobs,
            job_names: self.job_names.map(JobNamesBuilder::finish),
        }
    }
}

fn bump(map: &mut HashMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.to_string(), 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: &str, owner: Option<&str>, created: Option<i64>) -> BatchJob {
        BatchJob::new("id", state, owner, created)
    }

    #[test]
    fn counts_by_state_and_owner_with_unknowns() {
        let mut b = SnapshotBuilder::new();
        b.add(&job("running", Some("alice"), Some(2_000)));
        b.add(&job("running", Some("alice"), Some(1_500)));
        b.add(&job("dead", None, None));
        b.add(&job("success", Some(""), Some(1)));
        b.add(&job("weird", Some("bob"), Some(5)));
        let mut no_state = job("x", Some("bob"), None);
        no_state.state = None;
        b.add(&no_state);
        let s = b.finish(10);
        assert_eq!(s.jobs, 6);
        assert_eq!(s.by_state.get("running"), Some(&2));
        assert_eq!(s.by_state.get("weird"), Some(&1));
        assert_eq!(s.by_state.get(UNKNOWN_STATE), Some(&1));
        assert_eq!(
            s.by_state_owner.get(&("dead".into(), UNKNOWN_OWNER.into())),
            Some(&1)
        );
        assert_eq!(
            s.by_state_owner
                .get(&("success".into(), UNKNOWN_OWNER.into())),
            Some(&1)
        );
        assert_eq!(s.oldest_active.get("running"), Some(&1.5));
        assert_eq!(s.oldest_active.get("dead"), None);
    }

    #[test]
    fn owners_beyond_the_cap_go_to_other_ranked_by_count_then_name() {
        let mut b = SnapshotBuilder::new();
        for (owner, n) in [("a", 1), ("b", 3), ("c", 3), ("d", 2)] {
            for _ in 0..n {
                b.add(&job("running", Some(owner), None));
            }
        }
        b.add(&job("dead", Some("a"), None));
        let s = b.finish(2);
        // b and c have 3 each (tie broken by name), d has 2, a has 2 -> a and d overflow.
        assert_eq!(
            s.by_state_owner.get(&("running".into(), "b".into())),
            Some(&3)
        );
        assert_eq!(
            s.by_state_owner.get(&("running".into(), "c".into())),
            Some(&3)
        );
        assert_eq!(
            s.by_state_owner
                .get(&("running".into(), OTHER_OWNER.into())),
            Some(&3)
        );
        assert_eq!(
            s.by_state_owner.get(&("dead".into(), OTHER_OWNER.into())),
            Some(&1)
        );
        let owners: std::collections::BTreeSet<_> =
            s.by_state_owner.keys().map(|(_, o)| o.clone()).collect();
        assert_eq!(owners.len(), 3);
    }

    #[test]
    fn undocumented_states_beyond_the_cap_are_counted_as_other() {
        let mut b = SnapshotBuilder::new();
        for i in 0..1000 {
            b.add(&job(&format!("made_up_{i}"), Some("alice"), None));
            b.add(&job("running", Some("alice"), None));
        }
        // An undocumented state seen before the cap keeps its own series.
        b.add(&job("made_up_0", Some("bob"), None));
        let s = b.finish(10);
        assert_eq!(s.jobs, 2001);
        assert_eq!(s.by_state.get("running"), Some(&1000));
        assert_eq!(s.by_state.get("made_up_0"), Some(&2));
        assert_eq!(s.by_state.get("made_up_15"), Some(&1));
        assert_eq!(s.by_state.get("made_up_16"), None);
        assert_eq!(
            s.by_state.get(OTHER_STATE),
            Some(&(1000 - MAX_EXTRA_STATES as u64))
        );
        // 5 documented (only running seen) + 16 extra + __other__.
        assert_eq!(s.by_state.len(), 1 + MAX_EXTRA_STATES + 1);
        assert_eq!(s.by_state.values().sum::<u64>(), 2001, "no job lost");
    }

    #[test]
    fn absurdly_long_labels_are_cut_at_a_character_boundary() {
        let mut b = SnapshotBuilder::new();
        let long_owner = "用户".repeat(10_000);
        let long_state = "x".repeat(1 << 20);
        b.add(&job(&long_state, Some(&long_owner), None));
        b.add(&job("running", Some(&long_owner), None));
        let s = b.finish(10);
        let (state, owner) = s
            .by_state_owner
            .keys()
            .find(|(st, _)| st != "running")
            .cloned()
            .expect("the long state");
        assert!(
            state.len() <= MAX_LABEL_BYTES && state.ends_with('…'),
            "{}",
            state.len()
        );
        assert!(
            owner.len() <= MAX_LABEL_BYTES && owner.ends_with('…'),
            "{}",
            owner.len()
        );
        assert!(owner.starts_with("用户用户"));
        assert_eq!(
            s.by_state_owner.get(&("running".into(), owner.clone())),
            Some(&1),
            "the same long owner maps to the same label"
        );
    }

    #[test]
    fn memory_is_bounded_by_owners_not_jobs() {
        let mut b = SnapshotBuilder::new();
        for i in 0..100_000 {
            b.add(&job(
                if i % 2 == 0 { "running" } else { "success" },
                Some(["x", "y"][i % 2]),
                Some(i as i64),
            ));
        }
        let s = b.finish(200);
        assert_eq!(s.jobs, 100_000);
        assert_eq!(s.by_state_owner.len(), 2);
        assert_eq!(s.oldest_active.get("running"), Some(&0.0));
    }
}
