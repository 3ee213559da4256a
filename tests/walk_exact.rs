//! The walk invariant against the simulator over loopback (docs/architecture.md, "The page
//! walk"): lists that move while pages complete out of order are published exactly, and servers
//! whose pages contradict each other fail the poll as `inconsistent`, with nothing published.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use dli_exporter::dli::{BatchJob, WalkError};
use dli_exporter::poll::scheduler::{self, PollContext};
use dli_exporter::sim::{
    Fault, FaultRule, ListOrder, ParamHandling, QueueBehaviour, SimConfig, SimJob, Simulator,
    TotalMode,
};
use dli_exporter::store::{QueueKey, SnapshotStore};

const Q: &str = "etl";

async fn sim_with(n: usize, behaviour: QueueBehaviour) -> (Simulator, Vec<SimJob>) {
    let sim = sim(SimConfig::default()).await;
    let jobs = numbered_jobs("job", n);
    sim.set_jobs(PID, Q, jobs.clone());
    sim.set_behaviour(PID, Q, behaviour);
    (sim, jobs)
}

/// Every job of `stayed` counted once, nothing counted twice, nothing that never existed.
fn assert_invariant(counted: &[BatchJob], stayed: &[SimJob], ever: &HashSet<String>) {
    let mut once = HashSet::new();
    for job in counted {
        let id = job.id.clone().unwrap_or_default();
        assert!(ever.contains(&id), "{id} was never in the list");
        assert!(once.insert(id.clone()), "{id} counted twice");
    }
    let missing: Vec<&str> = stayed
        .iter()
        .map(|j| j.id.as_str())
        .filter(|id| !once.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "jobs present throughout not counted: {missing:?}"
    );
}

fn ids(jobs: &[SimJob]) -> HashSet<String> {
    jobs.iter().map(|j| j.id.clone()).collect()
}

#[tokio::test]
async fn inserts_and_expiries_at_once_with_pages_out_of_order_are_exact() {
    // The review's case: 5 new jobs at the front while the 5 oldest expire, `total` unchanged,
    // page 100 answered after page 200 and after the change.
    for concurrency in [2, 4, 8] {
        let (sim, initial) = sim_with(300, QueueBehaviour::default()).await;
        sim.add_fault(
            FaultRule::once(Fault::Latency(Duration::from_millis(150)))
                .queue(Q)
                .from(100),
        );
        sim.add_fault(FaultRule::once(Fault::InsertFront(5)).queue(Q).from(200));
        sim.add_fault(FaultRule::once(Fault::RemoveOldest(5)).queue(Q).from(200));
        let c = client(&project(&sim, &[Q], aksk()), Duration::from_secs(2), 8);
        let (stats, jobs) = walk(&c, Q, &walk_options(100, concurrency, 0))
            .await
            .expect("a moving list is repaired and published");
        let stayed = &initial[..295];
        let mut ever = ids(&initial);
        ever.extend(ids(&sim.jobs(PID, Q)));
        assert_invariant(&jobs, stayed, &ever);
        assert!(
            stats.checks >= 1,
            "the closing check saw the move: {stats:?}"
        );
    }
}

#[tokio::test]
async fn an_oldest_first_list_losing_its_oldest_mid_walk_is_exact() {
    // Livy's order: oldest first; the server ignores `order`. 7 of the oldest expire after the
    // first page, so every later page slides towards offset 0.
    for total_mode in [None, Some(TotalMode::PageLength)] {
        let behaviour = QueueBehaviour {
            list_order: ListOrder::OldestFirst,
            order_param: ParamHandling::Ignore,
            total_mode,
            ..QueueBehaviour::default()
        };
        let (sim, initial) = sim_with(300, behaviour).await;
        sim.add_fault(FaultRule::once(Fault::RemoveOldest(7)).queue(Q).from(100));
        let c = client(&project(&sim, &[Q], aksk()), Duration::from_secs(2), 1);
        let (_, jobs) = walk(&c, Q, &walk_options(100, 1, 0))
            .await
            .unwrap_or_else(|e| panic!("{total_mode:?}: {e}"));
        // Stored newest first: the oldest are at the end.
        let stayed = &initial[..293];
        assert_invariant(&jobs, stayed, &ids(&initial));
    }
}

#[tokio::test]
async fn capped_pages_page_length_totals_and_inserts_are_exact() {
    let behaviour = QueueBehaviour {
        max_page_size: Some(30),
        total_mode: Some(TotalMode::PageLength),
        ..QueueBehaviour::default()
    };
    let (sim, initial) = sim_with(250, behaviour).await;
    sim.add_fault(FaultRule::once(Fault::InsertFront(4)).queue(Q).skip(3));
    let c = client(&project(&sim, &[Q], aksk()), Duration::from_secs(2), 4);
    let (_, jobs) = walk(&c, Q, &walk_options(100, 4, 0))
        .await
        .expect("published");
    let mut ever = ids(&initial);
    ever.extend(ids(&sim.jobs(PID, Q)));
    assert_invariant(&jobs, &initial, &ever);
}

#[tokio::test]
async fn a_constant_wrong_total_hides_nothing() {
    for fixed in [200, 300, 50, 100_000] {
        let behaviour = QueueBehaviour {
            total_mode: Some(TotalMode::Fixed(fixed)),
            ..QueueBehaviour::default()
        };
        let (sim, initial) = sim_with(300, behaviour).await;
        let c = client(&project(&sim, &[Q], aksk()), Duration::from_secs(2), 8);
        let mut options = walk_options(100, 8, 0);
        options.max_pages = 2_000;
        let (_, jobs) = walk(&c, Q, &options)
            .await
            .unwrap_or_else(|e| panic!("total {fixed}: {e}"));
        assert_eq!(jobs.len(), 300, "total {fixed}");
        assert_invariant(&jobs, &initial, &ids(&initial));
    }
}

async fn expect_inconsistent(sim: &Simulator, what: &str) -> String {
    let c = client(&project(sim, &[Q], aksk()), Duration::from_secs(2), 4);
    match walk(&c, Q, &walk_options(100, 4, 0)).await {
        Err(e @ WalkError::Inconsistent { .. }) => e.to_string(),
        Err(e) if e.reason() == "inconsistent" => e.to_string(),
        Err(e) => panic!("{what}: expected inconsistent, got {e}"),
        Ok((_, jobs)) => panic!("{what}: published {} jobs", jobs.len()),
    }
}

#[tokio::test]
async fn a_server_that_ignores_from_fails_as_inconsistent() {
    for total_mode in [None, Some(TotalMode::PageLength)] {
        let behaviour = QueueBehaviour {
            ignore_from: true,
            total_mode,
            ..QueueBehaviour::default()
        };
        let (sim, _) = sim_with(300, behaviour).await;
        let e = expect_inconsistent(&sim, "ignores from").await;
        assert!(e.contains("from="), "{e}");
    }
}

#[tokio::test]
async fn an_empty_or_short_page_followed_by_more_jobs_fails_as_inconsistent() {
    for (cut, total_mode) in [
        (0, None),
        (30, None),
        (0, Some(TotalMode::PageLength)),
        (30, Some(TotalMode::PageLength)),
    ] {
        let behaviour = QueueBehaviour {
            total_mode,
            ..QueueBehaviour::default()
        };
        let (sim, _) = sim_with(400, behaviour).await;
        sim.add_fault(FaultRule::always(Fault::ShortPage(cut)).queue(Q).from(100));
        let e = expect_inconsistent(&sim, &format!("page 100 cut to {cut}, {total_mode:?}")).await;
        assert!(e.contains("from=100"), "{e}");
    }
}

#[tokio::test]
async fn a_page_larger_than_asked_fails_as_inconsistent() {
    let (sim, _) = sim_with(300, QueueBehaviour::default()).await;
    sim.add_fault(FaultRule::always(Fault::ExtraJobs(1)).queue(Q).from(100));
    expect_inconsistent(&sim, "101 jobs on a page of 100").await;
}

#[tokio::test]
async fn an_inconsistent_poll_is_counted_and_publishes_nothing() {
    let behaviour = QueueBehaviour {
        ignore_from: true,
        ..QueueBehaviour::default()
    };
    let (sim, _) = sim_with(300, behaviour).await;
    let key = QueueKey::new(PID, Q);
    let store = Arc::new(SnapshotStore::new([key.clone()]));
    let poll = fast_poll();
    let ctx = PollContext::new(store.clone(), &poll, 200);
    let cl = client(&project(&sim, &[Q], aksk()), poll.request_timeout, 4);
    for _ in 0..2 {
        let outcome = scheduler::poll_once(&cl, &key, &ctx, None).await;
        assert!(!outcome.success);
    }
    let (_, status) = store.view().into_iter().next().expect("one queue");
    assert!(status.snapshot.is_none(), "nothing published");
    assert_eq!(
        status.failures.get("inconsistent"),
        Some(&2),
        "{:?}",
        status.failures
    );
}
