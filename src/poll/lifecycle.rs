//! Job lifecycle tracking between walks of one queue: which job ids are new (submitted) and
//! which entered a terminal state (finished), for the `dli_batch_jobs_finished_total`,
//! `dli_batch_jobs_submitted_total` and `dli_batch_job_duration_seconds` metrics.
//!
//! It keeps 17 bytes per listed job (a 128-bit id and a one-byte state, packed, in a sorted
//! vector) and nothing else. A walk is staged in a [`WalkTracking`] (a bit per tracked job, the
//! state changes and the new jobs: not a second list of every job) and only a successful walk is
//! committed, in place, so a failed walk changes no counter and the next successful one catches
//! up. It does no I/O.

use crate::dli::BatchJob;
use crate::dli::states::TERMINAL_STATES;
use crate::dli::walk::id_key;
use crate::store::{Finished, LifecycleEvents};

/// One tracked job: its id key (big-endian, so byte order is numeric order) and a state code;
/// 17 bytes with no padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    key: [u8; 16],
    state: u8,
}

/// A state code of 0 means "not terminal" (any state outside [`TERMINAL_STATES`], undocumented
/// ones included); codes 1.. index [`TERMINAL_STATES`].
fn state_code(state: Option<&str>) -> u8 {
    match state {
        Some(s) => TERMINAL_STATES
            .iter()
            .position(|t| *t == s)
            .map_or(0, |i| i as u8 + 1),
        None => 0,
    }
}

/// The job states of one queue as of its last successful walk.
#[derive(Debug, Default)]
pub struct JobTracker {
    /// Sorted by (hi, lo).
    jobs: Vec<Entry>,
    /// A successful walk has been committed: later walks count against it.
    has_baseline: bool,
}

impl JobTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Jobs tracked.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Heap bytes held between walks.
    pub fn heap_bytes(&self) -> usize {
        self.jobs.capacity() * std::mem::size_of::<Entry>()
    }

    /// Starts staging a walk.
    pub fn begin(&self) -> WalkTracking {
        WalkTracking {
            baseline: !self.has_baseline,
            seen: if self.has_baseline {
                vec![0; self.jobs.len().div_ceil(64)]
            } else {
                Vec::new()
            },
            changed: Vec::new(),
            added: Vec::new(),
            events: LifecycleEvents {
                counted: self.has_baseline,
                ..Default::default()
            },
        }
    }

    /// Looks at one job of the walk being staged.
    pub fn observe(&self, walk: &mut WalkTracking, job: &BatchJob) {
        let Some(id) = job.id.as_deref() else {
            return;
        };
        let key = id_key(id).to_be_bytes();
        let code = state_code(job.state.as_deref());
        if walk.baseline {
            walk.added.push(Entry { key, state: code });
            return;
        }
        let found = self.jobs.binary_search_by(|e| e.key.cmp(&key)).ok();
        let previous = found.and_then(|i| self.jobs.get(i)).map(|e| e.state);
        match found {
            Some(i) => {
                if let Some(word) = walk.seen.get_mut(i / 64) {
                    *word |= 1 << (i % 64);
                }
                if previous != Some(code) {
                    walk.changed.push((i, code));
                }
            }
            None => walk.added.push(Entry { key, state: code }),
        }
        let finished_now = code != 0;
        let counts = match previous {
            // Known job: counted when it moves from an active state to a terminal one.
            Some(prev) => prev == 0 && finished_now,
            // New job: submitted, and finished if it already ended. After the baseline the walk
            // is exact, so an id new since the last successful walk is a job that started since
            // then, whatever its `create_time` says: no clock is compared (DLI's may be behind
            // ours).
            None => {
                walk.events.submitted = walk.events.submitted.saturating_add(1);
                finished_now
            }
        };
        if counts {
            walk.events.finished.push(Finished {
                state: TERMINAL_STATES[(code - 1) as usize],
                duration_seconds: duration_seconds(job),
            });
        }
    }

    /// Makes a successful walk the new baseline and returns what it adds to the counters. The
    /// baseline is changed in place (a bit per job was staged, not a second list): states
    /// updated, jobs the walk did not list dropped, new ones merged in.
    pub fn commit(&mut self, walk: WalkTracking) -> LifecycleEvents {
        let WalkTracking {
            baseline,
            seen,
            changed,
            mut added,
            events,
        } = walk;
        added.sort_unstable_by_key(|e| e.key);
        added.dedup_by(|a, b| a.key == b.key);
        if baseline {
            added.shrink_to_fit();
            self.jobs = added;
            self.has_baseline = true;
            return events;
        }
        for (i, code) in changed {
            if let Some(e) = self.jobs.get_mut(i) {
                e.state = code;
            }
        }
        let mut i = 0usize;
        self.jobs.retain(|_| {
            let listed = seen.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0);
            i += 1;
            listed
        });
        // (Sorted and distinct above; none of them was found among the tracked jobs.)
        super::merge::merge_sorted(&mut self.jobs, &added, |e| e.key);
        events
    }
}

/// A walk being staged: dropped unused when the walk fails.
#[derive(Debug)]
pub struct WalkTracking {
    /// No successful walk was committed yet: this one only records.
    baseline: bool,
    /// One bit per tracked job: this walk listed it.
    seen: Vec<u64>,
    /// Tracked jobs whose state code this walk saw change, by index.
    changed: Vec<(usize, u8)>,
    /// Jobs not tracked yet (every job, for the baseline).
    added: Vec<Entry>,
    events: LifecycleEvents,
}

/// The run time: the API's `duration` (ms), else `update_time - create_time`. Values that make
/// no sense (negative, or a difference that overflows) leave it unknown.
fn duration_seconds(job: &BatchJob) -> Option<f64> {
    match job.duration {
        Some(ms) if ms >= 0 => Some(ms as f64 / 1000.0),
        _ => match (job.create_time, job.update_time) {
            (Some(c), Some(u)) if u >= c => u.checked_sub(c).map(|d| d as f64 / 1000.0),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, state: &str, created: i64, duration_ms: i64) -> BatchJob {
        let mut j = BatchJob::new(id, state, Some("o"), Some(created));
        j.duration = Some(duration_ms);
        j
    }

    fn walk(t: &mut JobTracker, _at: i64, jobs: &[BatchJob]) -> LifecycleEvents {
        let mut w = t.begin();
        for j in jobs {
            t.observe(&mut w, j);
        }
        t.commit(w)
    }

    #[test]
    fn first_walk_is_a_baseline() {
        let mut t = JobTracker::new();
        let e = walk(
            &mut t,
            1_000,
            &[job("a", "success", 10, 5), job("b", "running", 10, 0)],
        );
        assert!(!e.counted);
        assert_eq!(e.submitted, 0);
        assert!(e.finished.is_empty());
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn transitions_new_jobs_and_jobs_created_and_finished_between_polls() {
        let mut t = JobTracker::new();
        walk(
            &mut t,
            1_000,
            &[
                job("a", "running", 10, 0),
                job("b", "starting", 20, 0),
                job("old", "dead", 5, 1),
            ],
        );
        let e = walk(
            &mut t,
            2_000,
            &[
                job("a", "success", 10, 90_000), // finished between polls
                job("b", "running", 20, 0),      // still active
                job("old", "dead", 5, 1),        // already finished before: not again
                job("c", "starting", 1_500, 0),  // new, active
                job("d", "dead", 1_200, 30_000), // new, created and finished between polls
            ],
        );
        assert!(e.counted);
        assert_eq!(e.submitted, 2);
        assert_eq!(
            e.finished,
            vec![
                Finished {
                    state: "success",
                    duration_seconds: Some(90.0)
                },
                Finished {
                    state: "dead",
                    duration_seconds: Some(30.0)
                },
            ]
        );
    }

    #[test]
    fn a_new_finished_job_counts_whatever_its_create_time_says() {
        // DLI's clock a few seconds behind ours: a job that ran between two polls carries a
        // create_time before our previous walk started. It is new to the exact list, so it
        // ran since then.
        let mut t = JobTracker::new();
        walk(&mut t, 10_000, &[job("a", "running", 10, 0)]);
        let e = walk(
            &mut t,
            20_000,
            &[
                job("a", "running", 10, 0),
                job("late", "success", 9_000, 500),
                job("skewed", "dead", i64::MIN, 0),
            ],
        );
        assert_eq!(e.submitted, 2);
        assert_eq!(
            e.finished.iter().map(|f| f.state).collect::<Vec<_>>(),
            vec!["success", "dead"]
        );
    }

    #[test]
    fn durations_that_overflow_are_unknown() {
        let mut j = BatchJob::new("x", "success", None, Some(i64::MIN));
        j.update_time = Some(i64::MAX);
        assert_eq!(duration_seconds(&j), None);
        j.duration = Some(-1);
        assert_eq!(duration_seconds(&j), None);
        j.duration = Some(i64::MAX);
        assert!(duration_seconds(&j).is_some_and(|d| d > 0.0));
    }

    #[test]
    fn a_failed_walk_changes_nothing_and_the_next_catches_up() {
        let mut t = JobTracker::new();
        walk(&mut t, 1_000, &[job("a", "running", 10, 0)]);
        // A failed walk: staged, then dropped.
        let mut w = t.begin();
        t.observe(&mut w, &job("a", "success", 10, 5_000));
        drop(w);
        let e = walk(
            &mut t,
            3_000,
            &[job("a", "success", 10, 5_000), job("n", "dead", 2_500, 1)],
        );
        assert_eq!(
            e.finished.len(),
            2,
            "both finished jobs counted once recovered"
        );
        assert_eq!(e.submitted, 1);
    }

    #[test]
    fn terminal_to_terminal_is_not_counted_twice() {
        let mut t = JobTracker::new();
        walk(&mut t, 1_000, &[job("a", "running", 10, 0)]);
        assert_eq!(
            walk(&mut t, 2_000, &[job("a", "success", 10, 1)])
                .finished
                .len(),
            1
        );
        assert_eq!(
            walk(&mut t, 3_000, &[job("a", "dead", 10, 1)])
                .finished
                .len(),
            0
        );
    }

    proptest::proptest! {
        /// Committing in place (bits, changes, merged new jobs) leaves the tracker and the
        /// events exactly as a tracker rebuilt from each walk's whole list would: the jobs of
        /// the last walk with their last states, a job counted as submitted when its id is new
        /// and as finished when it moves from an active to a terminal state.
        #[test]
        fn commits_in_place_like_a_rebuilt_list(
            walks in proptest::collection::vec(
                proptest::collection::vec((0u8..40, 0usize..4), 0..30),
                1..6,
            ),
            failed in proptest::collection::vec(proptest::bool::ANY, 6),
        ) {
            const STATES: [&str; 4] = ["running", "success", "dead", "starting"];
            let mut t = JobTracker::new();
            let mut model: std::collections::BTreeMap<u8, usize> = Default::default();
            let mut has_baseline = false;
            for (n, list) in walks.iter().enumerate() {
                let mut ids = std::collections::BTreeSet::new();
                let jobs: Vec<BatchJob> = list
                    .iter()
                    .filter(|(id, _)| ids.insert(*id))
                    .map(|(id, s)| job(&format!("job-{id}"), STATES[*s], 1, 1))
                    .collect();
                let mut w = t.begin();
                for j in &jobs {
                    t.observe(&mut w, j);
                }
                if failed[n] {
                    drop(w);
                    continue;
                }
                let e = t.commit(w);
                let mut submitted = 0u64;
                let mut finished = 0usize;
                for (id, s) in list.iter().filter(|(id, _)| ids.remove(id)) {
                    let terminal = *s == 1 || *s == 2;
                    match model.get(id) {
                        Some(prev) => finished += usize::from(
                            !(*prev == 1 || *prev == 2) && terminal,
                        ),
                        None => {
                            submitted += 1;
                            finished += usize::from(terminal);
                        }
                    }
                }
                let next: std::collections::BTreeMap<u8, usize> = list
                    .iter()
                    .rev()
                    .map(|(id, s)| (*id, *s))
                    .collect::<std::collections::BTreeMap<_, _>>();
                proptest::prop_assert_eq!(e.counted, has_baseline);
                if has_baseline {
                    proptest::prop_assert_eq!(e.submitted, submitted);
                    proptest::prop_assert_eq!(e.finished.len(), finished);
                } else {
                    proptest::prop_assert_eq!(e.submitted, 0);
                    proptest::prop_assert!(e.finished.is_empty());
                }
                model = next;
                has_baseline = true;
                proptest::prop_assert_eq!(t.len(), model.len());
                let codes: Vec<u8> = t.jobs.iter().map(|e| e.state).collect();
                let mut want: Vec<([u8; 16], u8)> = model
                    .iter()
                    .map(|(id, s)| {
                        let key = id_key(&format!("job-{id}")).to_be_bytes();
                        (key, state_code(Some(STATES[*s])))
                    })
                    .collect();
                want.sort();
                proptest::prop_assert_eq!(
                    t.jobs.iter().map(|e| e.key).collect::<Vec<_>>(),
                    want.iter().map(|w| w.0).collect::<Vec<_>>()
                );
                proptest::prop_assert_eq!(codes, want.iter().map(|w| w.1).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn hundred_thousand_jobs_fit_in_four_mebibytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 17);
        let mut t = JobTracker::new();
        let jobs: Vec<BatchJob> = (0..100_000)
            .map(|i| {
                job(
                    &format!("{:08x}-0000-4000-8000-{:012x}", i, i),
                    "running",
                    1,
                    0,
                )
            })
            .collect();
        walk(&mut t, 1, &jobs);
        assert_eq!(t.len(), 100_000);
        assert!(t.heap_bytes() < 4 * 1024 * 1024, "{} bytes", t.heap_bytes());
    }
}
