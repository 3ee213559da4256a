//! Tests of the per-job-name aggregation: each rule on hand-made walks, eviction under a million
//! distinct names, and a proptest against a naive model that keeps every job.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::dli::states::KNOWN_STATES;

fn filter(patterns: &[&str], cap: u32) -> Arc<JobNameFilter> {
    let sources: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
    Arc::new(
        JobNameFilter::new(&sources, cap)
            .expect("valid patterns")
            .expect("not empty"),
    )
}

/// A run of `name` with `id`, `state`, created at `created` ms, ended `duration` ms later.
fn run(name: Option<&str>, id: &str, state: &str, created: i64, duration: Option<i64>) -> BatchJob {
    let mut job = BatchJob::new(id, state, Some("alice"), Some(created));
    job.name = name.map(str::to_string);
    job.duration = duration;
    job.update_time = duration.and_then(|d| created.checked_add(d));
    job
}

fn fold(filter: Arc<JobNameFilter>, jobs: &[BatchJob]) -> JobNames {
    let mut b = JobNamesBuilder::new(filter);
    for job in jobs {
        b.add(job);
    }
    b.finish()
}

#[test]
fn newest_run_decides_the_state_and_older_runs_the_success() {
    let jobs = [
        // daily_etl: succeeded at 1000 (ran 50 ms), then its newest run died.
        run(Some("daily_etl"), "a1", "success", 1_000, Some(50)),
        run(Some("daily_etl"), "a2", "dead", 2_000, Some(70)),
        // daily_load: a finished run, a success, then a run still going (seen first).
        run(Some("daily_load"), "b3", "running", 3_500, None),
        run(Some("daily_load"), "b1", "success", 1_500, Some(10)),
        run(Some("daily_load"), "b2", "dead", 2_500, Some(20)),
        // daily_new: never succeeded in what is retained, never finished.
        run(Some("daily_new"), "c1", "starting", 4_000, None),
    ];
    let out = fold(filter(&["daily_.*"], 100), &jobs);
    assert_eq!(out.dropped, 0);
    let etl = &out.names["daily_etl"];
    assert_eq!(etl.state, "dead");
    assert_eq!(etl.start, Some(2.0));
    assert_eq!(etl.last_success, Some(1.05));
    assert_eq!(etl.last_duration, Some(0.07));
    let load = &out.names["daily_load"];
    assert_eq!(load.state, "running");
    assert_eq!(load.start, Some(3.5));
    assert_eq!(load.last_success, Some(1.51));
    assert_eq!(load.last_duration, Some(0.02), "the newest finished run");
    let new = &out.names["daily_new"];
    assert_eq!((new.state.as_str(), new.start), ("starting", Some(4.0)));
    assert_eq!((new.last_success, new.last_duration), (None, None));
}

#[test]
fn names_the_patterns_do_not_match_whole_and_jobs_without_a_name_are_ignored() {
    let jobs = [
        run(Some("daily_etl"), "1", "success", 1_000, Some(5)),
        run(Some("my_daily_etl"), "2", "dead", 1_000, Some(5)),
        run(Some("daily_etl_tmp"), "3", "dead", 1_000, Some(5)),
        run(Some(""), "4", "dead", 1_000, Some(5)),
        run(None, "5", "dead", 1_000, Some(5)),
    ];
    let out = fold(filter(&["daily_etl", "weekly_.*"], 100), &jobs);
    assert_eq!(out.names.keys().collect::<Vec<_>>(), ["daily_etl"]);
    assert_eq!(out.dropped, 0);
}

#[test]
fn unknown_and_missing_states_are_kept_as_they_come() {
    let mut no_state = run(Some("b"), "2", "x", 2_000, None);
    no_state.state = None;
    let jobs = [
        run(Some("a"), "1", "QUEUED", 2_000, None),
        run(Some("a"), "0", "success", 1_000, Some(1)),
        no_state,
    ];
    let out = fold(filter(&[".*"], 100), &jobs);
    assert_eq!(out.names["a"].state, "queued");
    assert_eq!(out.names["a"].last_success, Some(1.001));
    assert_eq!(out.names["b"].state, UNKNOWN_STATE);
}

#[test]
fn the_cap_keeps_the_newest_names_ties_by_name_and_counts_the_rest() {
    let jobs = [
        run(Some("old"), "1", "success", 1_000, Some(1)),
        run(Some("old"), "2", "success", 9_000, Some(1)),
        run(Some("b"), "3", "dead", 5_000, Some(1)),
        run(Some("a"), "4", "dead", 5_000, Some(1)),
        run(Some("c"), "5", "dead", 4_000, Some(1)),
        run(Some("c"), "6", "dead", 3_000, Some(1)),
    ];
    let out = fold(filter(&[".*"], 2), &jobs);
    assert_eq!(out.names.keys().collect::<Vec<_>>(), ["a", "old"]);
    assert_eq!(out.dropped, 2, "b lost the tie to a by name; c is older");
    let out = fold(filter(&[".*"], 3), &jobs);
    assert_eq!(out.names.len(), 3);
    assert_eq!(out.dropped, 1);
}

#[test]
fn runs_created_in_the_same_millisecond_are_ordered_whatever_the_walk_order() {
    let a = run(Some("n"), "id-a", "success", 1_000, Some(1));
    let b = run(Some("n"), "id-b", "dead", 1_000, Some(2));
    let one = fold(filter(&["n"], 5), &[a.clone(), b.clone()]);
    let two = fold(filter(&["n"], 5), &[b, a]);
    assert_eq!(one, two);
}

#[test]
fn the_end_of_a_success_falls_back_to_create_time_plus_duration_without_overflow() {
    let mut no_update = run(Some("a"), "1", "success", 1_000, Some(250));
    no_update.update_time = None;
    let mut overflow = run(Some("b"), "2", "success", i64::MAX - 1, Some(5));
    overflow.update_time = None;
    let mut negative = run(Some("c"), "3", "dead", 1_000, Some(-5));
    negative.update_time = None;
    let out = fold(filter(&[".*"], 5), &[no_update, overflow, negative]);
    assert_eq!(out.names["a"].last_success, Some(1.25));
    assert_eq!(out.names["b"].last_success, None);
    assert_eq!(out.names["b"].last_duration, Some(0.005));
    assert_eq!(out.names["c"].last_duration, None);
}

#[test]
fn long_names_share_a_bounded_label_only_when_they_match() {
    let long = "d".repeat(10_000);
    let other = format!("{}x", "d".repeat(9_999));
    let out = fold(
        filter(&["d+"], 5),
        &[
            run(Some(&long), "1", "dead", 2_000, Some(1)),
            run(Some(&other), "2", "success", 3_000, Some(1)),
        ],
    );
    assert_eq!(out.names.len(), 1);
    let (label, runs) = out.names.iter().next().expect("one name");
    assert!(label.len() <= MAX_LABEL && label.ends_with('…'));
    assert_eq!(
        runs.state, "dead",
        "the name that does not match is not merged in"
    );
}

const MAX_LABEL: usize = crate::poll::aggregate::MAX_LABEL_BYTES;

#[test]
fn a_million_distinct_names_stay_bounded_and_are_all_counted() {
    let f = filter(&["etl_.*"], 10);
    let mut b = JobNamesBuilder::new(f);
    let n = 1_000_000;
    let mut most = 0;
    for i in 0..n {
        b.add(&run(Some(&format!("etl_{i}")), "x", "dead", i, Some(1)));
        most = most.max(b.kept.len());
    }
    assert!(most < 2 * b.retain, "{most} names held at once");
    let out = b.finish();
    assert_eq!(out.names.len(), 10);
    assert_eq!(out.dropped, (n - 10) as u64);
    assert!(out.names.contains_key(&format!("etl_{}", n - 1)));
}

#[test]
fn an_evicted_name_coming_back_is_counted_once() {
    let f = filter(&[".*"], 1);
    let mut b = JobNamesBuilder::with_retain(f, 1);
    // "a" is evicted by "b" and "c", then comes back with the newest run of all.
    b.add(&run(Some("a"), "1", "success", 1, Some(1)));
    b.add(&run(Some("b"), "2", "dead", 2, Some(1)));
    b.add(&run(Some("c"), "3", "dead", 3, Some(1)));
    b.add(&run(Some("a"), "4", "running", 10, None));
    let out = b.finish();
    assert_eq!(out.names.keys().collect::<Vec<_>>(), ["a"]);
    assert_eq!(out.names["a"].state, "running");
    assert_eq!(out.dropped, 2);
}

// ---- against a naive model ---------------------------------------------------------------

/// Every run of every selected name, then the rules applied to the whole list.
fn naive(jobs: &[BatchJob], f: &JobNameFilter) -> JobNames {
    let mut by_name: BTreeMap<String, Vec<&BatchJob>> = BTreeMap::new();
    for job in jobs {
        if let Some(name) = job.name.as_deref().filter(|n| !n.is_empty())
            && f.matches(name)
        {
            by_name
                .entry(bounded_label(name).into_owned())
                .or_default()
                .push(job);
        }
    }
    let newest = |runs: &[&BatchJob], pick: &dyn Fn(&BatchJob) -> bool| {
        runs.iter()
            .filter(|j| pick(j))
            .max_by_key(|j| RunKey::of(j))
            .map(|j| (*j).clone())
    };
    let mut ranked: Vec<(RunKey, String, LastRuns)> = by_name
        .iter()
        .map(|(name, runs)| {
            let last = newest(runs, &|_| true).expect("one run at least");
            let success = newest(runs, &|j| j.state.as_deref() == Some("success"));
            let finished = newest(runs, &|j| {
                j.state
                    .as_deref()
                    .is_some_and(|s| FINISHED_STATES.contains(&s))
            });
            let runs = LastRuns {
                state: state_label(&last),
                start: last.create_time.map(|t| t as f64 / 1000.0),
                last_success: success
                    .as_ref()
                    .and_then(run_end_ms)
                    .map(|t| t as f64 / 1000.0),
                last_duration: finished
                    .as_ref()
                    .and_then(run_duration_ms)
                    .map(|t| t as f64 / 1000.0),
            };
            (RunKey::of(&last), name.clone(), runs)
        })
        .collect();
    ranked.sort_by(|a, b| b.0.created.cmp(&a.0.created).then_with(|| a.1.cmp(&b.1)));
    let total = ranked.len();
    ranked.truncate(f.max_per_queue);
    JobNames {
        dropped: (total - ranked.len()) as u64,
        names: ranked.into_iter().map(|(_, n, r)| (n, r)).collect(),
    }
}

/// Name, state, create_time, update_time, duration.
type RawJob = (
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

fn arb_job() -> impl Strategy<Value = RawJob> {
    let name = prop_oneof![
        8 => (0..25u32).prop_map(|i| Some(format!("n{i}"))),
        1 => Just(Some(String::new())),
        1 => Just(None),
    ];
    let state = prop_oneof![
        6 => (0..KNOWN_STATES.len()).prop_map(|i| Some(KNOWN_STATES[i].to_string())),
        1 => Just(Some("queued".to_string())),
        1 => Just(None),
    ];
    (
        name,
        state,
        prop::option::weighted(0.9, 0..60i64),
        prop::option::weighted(0.7, 0..200i64),
        prop::option::weighted(0.8, -3..100i64),
    )
}

fn jobs_of(raw: Vec<RawJob>) -> Vec<BatchJob> {
    raw.into_iter()
        .enumerate()
        .map(|(i, (name, state, created, updated, duration))| {
            let mut job = BatchJob::new(&format!("job-{i}"), "", None, created);
            job.state = state;
            job.name = name;
            job.update_time = updated;
            job.duration = duration;
            job
        })
        .collect()
}

/// What must hold whatever evictions did: the kept names, their newest runs, the count.
fn selection(out: &JobNames) -> (Vec<(String, String, Option<f64>)>, u64) {
    (
        out.names
            .iter()
            .map(|(n, r)| (n.clone(), r.state.clone(), r.start))
            .collect(),
        out.dropped,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// With room for every name, the builder agrees with the naive model exactly.
    #[test]
    fn agrees_with_the_naive_model(raw in prop::collection::vec(arb_job(), 0..120), cap in 1u32..6) {
        let f = filter(&["n1?[0-9]"], cap);
        let jobs = jobs_of(raw);
        prop_assert_eq!(fold(f.clone(), &jobs), naive(&jobs, &f));
    }

    /// Evicting down to the cap: newest first (DLI's order), everything still agrees.
    #[test]
    fn evictions_lose_nothing_newest_first(raw in prop::collection::vec(arb_job(), 0..120), cap in 1u32..4) {
        let f = filter(&["n1?[0-9]"], cap);
        let mut jobs = jobs_of(raw);
        jobs.sort_by_key(|j| Reverse(RunKey::of(j)));
        let mut b = JobNamesBuilder::with_retain(f.clone(), 0);
        for job in &jobs {
            b.add(job);
        }
        prop_assert_eq!(b.finish(), naive(&jobs, &f));
    }

    /// Evicting down to the cap in any order: the kept names, their newest runs and the dropped
    /// count still agree.
    #[test]
    fn evictions_keep_the_selection_in_any_order(raw in prop::collection::vec(arb_job(), 0..120), cap in 1u32..4) {
        let f = filter(&["n1?[0-9]"], cap);
        let jobs = jobs_of(raw);
        let mut b = JobNamesBuilder::with_retain(f.clone(), 0);
        for job in &jobs {
            b.add(job);
        }
        prop_assert_eq!(selection(&b.finish()), selection(&naive(&jobs, &f)));
    }
}
