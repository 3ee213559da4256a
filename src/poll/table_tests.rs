//! Tests of the job table: its size per job, replay in newest-first order with the ids as
//! listed, changes applied by incremental polls, and the drift a full walk finds.

use super::*;

fn uuid(i: u64) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", i, i)
}

fn job(id: &str, state: &str, owner: Option<&str>, created: i64) -> BatchJob {
    let mut j = BatchJob::new(id, state, owner, Some(created));
    j.name = Some(format!("name-{}", created % 3));
    j.update_time = Some(created + 5);
    j.duration = Some(5);
    j
}

fn replayed(t: &JobTable) -> Vec<BatchJob> {
    let mut out = Vec::new();
    t.replay(|j| out.push(j.clone()));
    out
}

fn table(jobs: &[BatchJob], filter: Option<Arc<JobNameFilter>>) -> JobTable {
    let mut t = JobTable::new(filter);
    for j in jobs {
        t.push(j);
    }
    t.seal();
    t
}

#[test]
fn a_job_is_forty_eight_bytes() {
    assert_eq!(std::mem::size_of::<Entry>(), 48);
    let jobs: Vec<BatchJob> = (0..100_000)
        .map(|i| job(&uuid(i), "success", Some("o"), i as i64))
        .collect();
    let t = table(&jobs, None);
    assert_eq!(t.len(), 100_000);
    assert!(t.heap_bytes() < 5_000_000, "{}", t.heap_bytes());
    assert!(t.odd_ids.is_empty(), "canonical UUIDs keep no text");
}

#[test]
fn replay_is_newest_first_with_the_ids_and_fields_as_listed() {
    let filter = JobNameFilter::new(&["name-1".to_string()], 10)
        .expect("compiles")
        .map(Arc::new);
    let mut no_time = BatchJob::new("odd id", "running", None, None);
    no_time.owner = None;
    let jobs = vec![
        job(&uuid(7), "running", Some("a"), 10),
        job("job-B", "success", Some("b"), 30),
        no_time,
        job(&uuid(9).to_uppercase(), "dead", None, 20),
    ];
    let t = table(&jobs, filter);
    let out = replayed(&t);
    let ids: Vec<_> = out
        .iter()
        .map(|j| j.id.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        ids,
        vec![
            "job-B".to_string(),
            uuid(9).to_uppercase(),
            uuid(7),
            "odd id".to_string()
        ]
    );
    let b = &out[0];
    assert_eq!(b.state.as_deref(), Some("success"));
    assert_eq!(b.owner.as_deref(), Some("b"));
    assert_eq!(
        (b.create_time, b.update_time, b.duration),
        (Some(30), Some(35), Some(5))
    );
    assert_eq!(b.name, None, "name-0 is not selected");
    assert_eq!(out[2].name.as_deref(), Some("name-1"));
    assert_eq!(out[3].create_time, None);
    assert_eq!(out[3].owner, None);
    assert_eq!(out[3].duration, None);
}

#[test]
fn changes_apply_and_unfinished_jobs_are_listed() {
    let mut t = table(
        &[
            job(&uuid(1), "running", Some("a"), 1),
            job(&uuid(2), "starting", Some("a"), 2),
            job(&uuid(3), "success", Some("a"), 3),
            job("x", "idle", Some("a"), 4),
        ],
        None,
    );
    assert_eq!(
        t.states_to_list(),
        ["starting", "running", "recovering", "idle"]
    );
    assert_eq!(t.count_in("running"), (1, 3));
    assert_eq!(t.oldest_id(), Some(uuid(1)));
    let mut unfinished: Vec<String> = t.unfinished().into_iter().map(|(_, id)| id).collect();
    unfinished.sort();
    assert_eq!(unfinished, vec![uuid(1), uuid(2), "x".to_string()]);
    let removed: HashSet<u128> = [id_key("x")].into_iter().collect();
    t.apply(
        [
            job(&uuid(1), "success", Some("a"), 1),
            job(&uuid(5), "starting", Some("c"), 5),
        ],
        &removed,
    );
    assert_eq!(t.len(), 4);
    assert_eq!(t.newest(), Some(5));
    let out = replayed(&t);
    let states: Vec<_> = out
        .iter()
        .map(|j| j.state.clone().unwrap_or_default())
        .collect();
    assert_eq!(states, ["starting", "success", "starting", "success"]);
    assert!(!t.contains(id_key("x")) && t.contains(id_key(&uuid(5))));
}

#[test]
fn drift_counts_removals_late_jobs_and_impossible_changes_only() {
    let before = table(
        &[
            job(&uuid(1), "running", Some("a"), 10),
            job(&uuid(2), "success", Some("a"), 20),
            job(&uuid(3), "success", Some("a"), 30),
            job(&uuid(4), "dead", Some("a"), 40),
        ],
        None,
    );
    let after = table(
        &[
            // 1: gone (retention). 2: its owner changed. 3: its final state changed.
            job(&uuid(2), "success", Some("b"), 20),
            job(&uuid(3), "dead", Some("a"), 30),
            job(&uuid(4), "dead", Some("a"), 40),
            // Listed late: older than the newest known job.
            job(&uuid(5), "success", Some("a"), 35),
            // Submitted since: not drift.
            job(&uuid(6), "running", Some("a"), 50),
        ],
        None,
    );
    let d = after.drift_from(&before);
    assert_eq!(
        d,
        Drift {
            removed: 1,
            added: 1,
            changed: 2
        }
    );
    assert_eq!(d.total(), 4);
    assert_eq!(before.drift_from(&before).total(), 0);
}

#[test]
fn a_refresh_in_place_ends_as_a_fresh_table_and_counts_the_same_drift() {
    let before_jobs = [
        job(&uuid(1), "running", Some("a"), 10),
        job(&uuid(2), "success", Some("a"), 20),
        job(&uuid(3), "success", Some("a"), 30),
        job("odd-4", "dead", Some("a"), 40),
    ];
    let walk = [
        job(&uuid(2), "success", Some("b"), 20),
        job(&uuid(3), "dead", Some("a"), 30),
        job("odd-4", "dead", Some("a"), 40),
        job(&uuid(5), "success", Some("a"), 35),
        job("odd-6", "running", Some("a"), 50),
    ];
    let before = table(&before_jobs, None);
    let fresh = table(&walk, None);
    let mut t = before.clone();
    let mut r = t.begin_refresh();
    for j in &walk {
        t.refresh(&mut r, j);
    }
    let drift = t.finish_refresh(r);
    assert_eq!(drift, fresh.drift_from(&before));
    assert_eq!(drift.total(), 4);
    let ids =
        |t: &JobTable| -> Vec<Option<String>> { replayed(t).into_iter().map(|j| j.id).collect() };
    assert_eq!(ids(&t), ids(&fresh));
    let states = |t: &JobTable| -> Vec<Option<String>> {
        replayed(t).into_iter().map(|j| j.state).collect()
    };
    assert_eq!(states(&t), states(&fresh));
    assert!(!t.odd_ids.contains_key(&id_key("x")));
    assert_eq!(t.odd_ids.len(), 2, "odd-4 and odd-6");
}

#[test]
fn a_job_without_an_id_marks_the_table() {
    let mut anonymous = BatchJob::new("x", "running", None, Some(1));
    anonymous.id = None;
    let t = table(&[anonymous], None);
    assert!(t.has_anonymous_jobs() && t.is_empty());
}

#[test]
fn canonical_text_round_trips_through_the_key() {
    let mut s = String::new();
    for id in [
        uuid(0),
        uuid(u64::from(u32::MAX)),
        "03923a72-5ace-466a-a573-e8c7b08b8cf3".into(),
    ] {
        uuid_text(id_key(&id), &mut s);
        assert_eq!(s, id);
    }
}

#[test]
fn durations_that_do_not_fit_32_bits_replay_exactly_and_leave_with_their_job() {
    let durations = [
        Some(0),
        Some(5),
        Some(i64::from(u32::MAX)),
        Some(i64::from(u32::MAX) + 1),
        Some(-1),
        Some(i64::MIN),
        Some(i64::MAX),
        None,
    ];
    let jobs: Vec<BatchJob> = durations
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut j = job(&uuid(i as u64), "success", Some("o"), i as i64);
            j.duration = *d;
            j
        })
        .collect();
    let mut t = table(&jobs, None);
    let mut out = replayed(&t);
    out.sort_by_key(|j| j.create_time);
    assert_eq!(
        out.iter().map(|j| j.duration).collect::<Vec<_>>(),
        durations.to_vec()
    );
    assert_eq!(t.wide_durations.len(), 4, "only the four that do not fit");
    // A wide duration that becomes narrow, and a job that leaves, take their side entry along.
    let mut narrowed = jobs[4].clone();
    narrowed.duration = Some(7);
    let removed: HashSet<u128> = [id_key(&uuid(5))].into_iter().collect();
    t.apply([narrowed], &removed);
    assert_eq!(t.wide_durations.len(), 2);
    let out = replayed(&t);
    let of = |i: u64| out.iter().find(|j| j.id.as_deref() == Some(&uuid(i)));
    assert_eq!(of(4).and_then(|j| j.duration), Some(7));
    assert!(of(5).is_none());
    assert_eq!(of(6).and_then(|j| j.duration), Some(i64::MAX));
}

#[test]
fn more_states_than_an_entry_numbers_make_the_table_unfollowable() {
    let jobs: Vec<BatchJob> = (0..65_536u64)
        .map(|i| job(&uuid(i), &format!("state-{i}"), None, i as i64))
        .collect();
    let t = table(&jobs, None);
    assert_eq!(
        t.unfollowable(),
        Some("more than 65,534 distinct job states")
    );
    let t = table(&jobs[..1000], None);
    assert_eq!(t.unfollowable(), None);
}
