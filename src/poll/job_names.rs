//! Per-job-name aggregation of one walk ([`JobNamesBuilder`]): for each name selected by
//! `metrics.job_names`, its newest run (state and `create_time`), the end of its newest
//! successful run and the duration of its newest finished run; then the per-queue cap.
//!
//! Jobs are folded in one at a time as the walk streams them and dropped; no job list is kept.
//! The working set is bounded by a multiple of the cap (see [`JobNamesBuilder`]). It does no
//! I/O and knows nothing of Prometheus.

use std::borrow::Cow;
use std::cell::Cell;
use std::cmp::{Ordering, Reverse};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::labels::{UNKNOWN_STATE, bounded_label};
use crate::config::JobNameFilter;
use crate::dli::BatchJob;
use crate::dli::states::FINISHED_STATES;
use crate::store::{JobNames, LastRuns};

/// The order of the runs of one name: `create_time` (a run without one is older than any run
/// with one), then a hash of the job id, so that runs created in the same millisecond are
/// ordered the same way whatever order the walk delivers them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RunKey {
    pub created: Option<i64>,
    pub tie: u64,
}

impl RunKey {
    pub fn of(job: &BatchJob) -> Self {
        RunKey {
            created: job.create_time,
            tie: fnv1a(job.id.as_deref().unwrap_or("").as_bytes()),
        }
    }
}

/// A run being folded in: its [`RunKey`], with the hash of its id computed only when a
/// comparison needs it (most runs of a name differ in `create_time`).
struct Run<'a> {
    created: Option<i64>,
    id: &'a str,
    tie: Cell<Option<u64>>,
}

impl<'a> Run<'a> {
    fn of(job: &'a BatchJob) -> Self {
        Run {
            created: job.create_time,
            id: job.id.as_deref().unwrap_or(""),
            tie: Cell::new(None),
        }
    }

    fn tie(&self) -> u64 {
        match self.tie.get() {
            Some(t) => t,
            None => {
                let t = fnv1a(self.id.as_bytes());
                self.tie.set(Some(t));
                t
            }
        }
    }

    fn key(&self) -> RunKey {
        RunKey {
            created: self.created,
            tie: self.tie(),
        }
    }

    /// `self.key() > than`, hashing the id only on a tie of `create_time`.
    fn newer_than(&self, than: RunKey) -> bool {
        match self.created.cmp(&than.created) {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => self.tie() > than.tie,
        }
    }
}

/// FNV-1a, 64 bits: a fixed function, so ties and evicted names hash the same in every process.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// End of a successful run, unix ms: `update_time`, else `create_time + duration`.
pub fn run_end_ms(job: &BatchJob) -> Option<i64> {
    job.update_time.or_else(|| {
        job.create_time
            .zip(job.duration.filter(|d| *d >= 0))
            .and_then(|(c, d)| c.checked_add(d))
    })
}

/// Duration of a finished run, ms; a negative duration is no duration.
pub fn run_duration_ms(job: &BatchJob) -> Option<i64> {
    job.duration.filter(|d| *d >= 0)
}

/// The state label of a run: lowercased by the decoder, bounded like the other state labels,
/// [`UNKNOWN_STATE`] when missing or empty.
pub fn state_label(job: &BatchJob) -> String {
    match job.state.as_deref() {
        Some(s) if !s.is_empty() => bounded_label(s).into_owned(),
        _ => UNKNOWN_STATE.to_string(),
    }
}

/// What the runs of one name seen so far say.
#[derive(Debug, Clone)]
struct NameRuns {
    newest: RunKey,
    /// State label of the newest run.
    state: String,
    /// The newest successful run and its end (unix ms, when known).
    success: Option<(RunKey, Option<i64>)>,
    /// The newest finished run and its duration (ms, when known).
    finished: Option<(RunKey, Option<i64>)>,
    /// The name had been evicted before this entry was made: it is already counted, and runs
    /// seen before the eviction are missing from `success` and `finished`.
    reentered: bool,
}

impl NameRuns {
    fn first(run: &Run<'_>, job: &BatchJob, reentered: bool) -> Self {
        let mut runs = NameRuns {
            newest: run.key(),
            state: state_label(job),
            success: None,
            finished: None,
            reentered,
        };
        runs.observe_finished(run, job);
        runs
    }

    fn observe(&mut self, run: &Run<'_>, job: &BatchJob) {
        if run.newer_than(self.newest) {
            self.newest = run.key();
            self.state = state_label(job);
        }
        self.observe_finished(run, job);
    }

    fn observe_finished(&mut self, run: &Run<'_>, job: &BatchJob) {
        let Some(state) = job.state.as_deref() else {
            return;
        };
        if !FINISHED_STATES.contains(&state) {
            return;
        }
        if self.finished.is_none_or(|(k, _)| run.newer_than(k)) {
            self.finished = Some((run.key(), run_duration_ms(job)));
        }
        if state == "success" && self.success.is_none_or(|(k, _)| run.newer_than(k)) {
            self.success = Some((run.key(), run_end_ms(job)));
        }
    }

    fn into_last_runs(self) -> LastRuns {
        let secs = |ms: i64| ms as f64 / 1000.0;
        LastRuns {
            state: self.state,
            start: self.newest.created.map(secs),
            last_success: self.success.and_then(|(_, end)| end).map(secs),
            last_duration: self.finished.and_then(|(_, d)| d).map(secs),
        }
    }
}

/// Folds the jobs of the selected names as a walk streams them.
///
/// Memory: the working map holds at most `2 × retain` names (`retain` = twice the cap, at least
/// the cap + 32). When it fills up, the names ranked below the `retain` best (latest
/// `create_time` of their newest run first, ties by name) are evicted and only a 64-bit hash of each is remembered, so that a
/// queue with a million distinct names costs 8 bytes per dropped name (what the walk's job id
/// set costs per job) and the dropped count stays exact (up to hash collisions).
///
/// A name that is finally among the cap best is never missing its newest run: when a name is
/// evicted, at least `retain` names have newer runs, and that can only stop being true if the
/// name's newest run comes later. Such a name comes back with the runs seen after its
/// eviction, so its last success and last duration may then miss older runs; with a newest-first
/// walk (DLI's order) that only happens when more than `retain` names' runs arrive out of order.
#[derive(Debug)]
pub struct JobNamesBuilder {
    filter: Arc<JobNameFilter>,
    kept: HashMap<String, NameRuns>,
    /// Hashes of evicted names.
    evicted: HashSet<u64>,
    retain: usize,
}

impl JobNamesBuilder {
    pub fn new(filter: Arc<JobNameFilter>) -> Self {
        let cap = filter.max_per_queue.max(1);
        let retain = cap.saturating_mul(2).max(cap.saturating_add(32));
        Self::with_retain(filter, retain)
    }

    /// A builder that keeps `retain` names (at least the cap) when its map fills up; tests use
    /// a small one to exercise eviction.
    pub fn with_retain(filter: Arc<JobNameFilter>, retain: usize) -> Self {
        let retain = retain.max(filter.max_per_queue.max(1));
        JobNamesBuilder {
            filter,
            kept: HashMap::new(),
            evicted: HashSet::new(),
            retain,
        }
    }

    pub fn add(&mut self, job: &BatchJob) {
        let Some(name) = job.name.as_deref().filter(|n| !n.is_empty()) else {
            return;
        };
        let label = bounded_label(name);
        let run = Run::of(job);
        // A name short enough to be its own label has matched already if it is kept; a long
        // one shares its label with other names, which may not match.
        let own_label = matches!(label, Cow::Borrowed(_));
        if !own_label && !self.filter.matches(name) {
            return;
        }
        if let Some(runs) = self.kept.get_mut(&*label) {
            runs.observe(&run, job);
            return;
        }
        if own_label && !self.filter.matches(name) {
            return;
        }
        let reentered = !self.evicted.is_empty() && self.evicted.contains(&fnv1a(label.as_bytes()));
        self.kept
            .insert(label.into_owned(), NameRuns::first(&run, job, reentered));
        if self.kept.len() >= self.retain.saturating_mul(2) {
            self.prune();
        }
    }

    /// Keeps the `retain` best names and remembers the hashes of the others.
    fn prune(&mut self) {
        if self.kept.len() <= self.retain {
            return;
        }
        let cutoff = {
            let mut ranks: Vec<(Reverse<Option<i64>>, &str)> = self
                .kept
                .iter()
                .map(|(name, runs)| (Reverse(runs.newest.created), name.as_str()))
                .collect();
            let (_, nth, _) = ranks.select_nth_unstable(self.retain - 1);
            (nth.0, nth.1.to_string())
        };
        let evicted = &mut self.evicted;
        self.kept.retain(|name, runs| {
            let keep =
                (Reverse(runs.newest.created), name.as_str()) <= (cutoff.0, cutoff.1.as_str());
            if !keep {
                evicted.insert(fnv1a(name.as_bytes()));
            }
            keep
        });
    }

    /// The names whose newest run is newest (by `create_time`; ties by name), at most the cap,
    /// and how many selected names were left out.
    pub fn finish(self) -> JobNames {
        let distinct = self
            .evicted
            .len()
            .saturating_add(self.kept.values().filter(|r| !r.reentered).count());
        let mut ranked: Vec<(String, NameRuns)> = self.kept.into_iter().collect();
        ranked.sort_unstable_by(|a, b| {
            (b.1.newest.created)
                .cmp(&a.1.newest.created)
                .then_with(|| a.0.cmp(&b.0))
        });
        ranked.truncate(self.filter.max_per_queue.max(1));
        let dropped = distinct.saturating_sub(ranked.len()) as u64;
        JobNames {
            names: ranked
                .into_iter()
                .map(|(name, runs)| (name, runs.into_last_runs()))
                .collect(),
            dropped,
        }
    }
}

#[cfg(test)]
#[path = "job_names_tests.rs"]
mod tests;
