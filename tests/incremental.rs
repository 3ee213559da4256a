//! Incremental polls against the simulator over loopback HTTP (docs/architecture.md,
//! "Incremental polls"): a queue driven through a day of churn (submissions, state changes,
//! deletions, retention), where every poll of an `auto` poller must expose the same job series
//! as a full walk of the same list at the same moment; and the fall back to full walks against
//! servers that do not honour `order`, `state` or `job-id`, with no wrong value on the way.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use dli_exporter::config::{JobNameFilter, PollMode};
use dli_exporter::dli::DliClient;
use dli_exporter::metrics::Metrics;
use dli_exporter::poll::incremental::QueueMemory;
use dli_exporter::poll::scheduler::{PollContext, poll_queue};
use dli_exporter::sim::{ListOrder, ParamHandling, QueueBehaviour, SimConfig, SimJob, Simulator};
use dli_exporter::store::{QueueKey, SnapshotStore};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const Q: &str = "churn";
const PAGE: u32 = 20;

/// One exporter's view of the queue: its own store, metrics and memory, the shared client.
struct Poller {
    ctx: PollContext,
    metrics: Arc<Metrics>,
    memory: QueueMemory,
}

impl Poller {
    fn new(mode: PollMode, key: &QueueKey, names: &Option<Arc<JobNameFilter>>) -> Poller {
        Poller::with_page(mode, key, names, PAGE)
    }

    fn with_page(
        mode: PollMode,
        key: &QueueKey,
        names: &Option<Arc<JobNameFilter>>,
        page: u32,
    ) -> Poller {
        let store = Arc::new(SnapshotStore::new([key.clone()]));
        let metrics = Arc::new(metrics_for(
            store.clone(),
            Duration::from_secs(3600),
            Duration::from_secs(3600),
        ));
        let mut poll = fast_poll();
        poll.page_size = page;
        poll.mode = mode;
        poll.full_walk_interval = Duration::from_secs(3600);
        let mut ctx = PollContext::new(store, &poll, 200);
        ctx.timeout = Duration::from_secs(10);
        ctx.lifecycle = Some(metrics.lifecycle.clone());
        ctx.job_names = names.clone();
        Poller {
            ctx,
            metrics,
            memory: QueueMemory::default(),
        }
    }

    async fn poll(&mut self, client: &DliClient, key: &QueueKey) -> bool {
        let outcome = poll_queue(client, key, &self.ctx, &mut self.memory).await;
        assert!(
            outcome.error.is_none() || !outcome.success,
            "{:?}",
            outcome.error
        );
        outcome.success
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.metrics.render()).into_owned()
    }

    /// Every job series of the queue: counts, owners, oldest, lifecycle, job names.
    fn job_series(&self) -> BTreeSet<String> {
        self.text()
            .lines()
            .filter(|l| l.starts_with("dli_batch_"))
            .map(str::to_string)
            .collect()
    }

    fn metric(&self, name: &str) -> f64 {
        value(&self.text(), &queue_series(name, Q)).unwrap_or(f64::NAN)
    }

    fn failures(&self, reason: &str) -> Option<f64> {
        value(
            &self.text(),
            &format!(
                "dli_poll_failures_total{{project_id=\"{PID}\",queue=\"{Q}\",reason=\"{reason}\"}}"
            ),
        )
    }

    fn listed(&self) -> f64 {
        let text = self.text();
        [
            "starting",
            "running",
            "recovering",
            "success",
            "dead",
            "idle",
        ]
        .iter()
        .filter_map(|s| value(&text, &jobs_series(Q, s)))
        .sum()
    }
}

/// The simulated queue and the churn that drives it.
struct World {
    sim: Simulator,
    rng: StdRng,
    next: u64,
    now_ms: i64,
}

const NAMES: [&str; 4] = ["etl_daily", "etl_hourly", "report", "adhoc"];
const OWNERS: [&str; 3] = ["alice", "bob", "carol"];

impl World {
    async fn new(seed: u64, initial: usize) -> World {
        let sim = sim(SimConfig::default()).await;
        let mut w = World {
            sim,
            rng: StdRng::seed_from_u64(seed),
            next: 0,
            now_ms: T0_MS,
        };
        let mut jobs: Vec<SimJob> = (0..initial)
            .map(|i| {
                let state = match i % 10 {
                    0 => "running",
                    1 => "starting",
                    2 => "dead",
                    _ => "success",
                };
                w.job(state)
            })
            .collect();
        jobs.reverse();
        w.sim.set_jobs(PID, Q, jobs);
        w
    }

    /// A new job, newer than every job before it. Most ids are UUIDs as DLI's; some are not.
    fn job(&mut self, state: &str) -> SimJob {
        self.next += 1;
        self.now_ms += 1_000 + self.rng.random_range(0..5_000);
        let id = if self.next.is_multiple_of(7) {
            format!("job-{}", self.next)
        } else {
            format!("{:08x}-0000-4000-8000-{:012x}", self.next, self.next * 31)
        };
        let owner = OWNERS[self.rng.random_range(0..OWNERS.len())];
        let mut job = SimJob::new(id, state, Some(owner), self.now_ms);
        job.name = Some(NAMES[self.rng.random_range(0..NAMES.len())].to_string());
        if self.rng.random_range(0..20) == 0 {
            job.owner = None;
        }
        job
    }

    /// One poll interval of churn: submissions and state changes (finishing jobs get a run
    /// time), now and then a job deleted while it runs or an undocumented state.
    fn step(&mut self) {
        let submits = self.rng.random_range(0..6);
        self.step_with(submits, 100);
    }

    /// [`World::step`] with `submits` new jobs and state changes `busy` % as likely.
    fn step_with(&mut self, submits: usize, busy: u32) {
        self.now_ms += 60_000;
        let submitted: Vec<SimJob> = (0..submits)
            .map(|_| {
                let state = if self.rng.random_range(0..8) == 0 {
                    "success"
                } else {
                    "starting"
                };
                self.job(state)
            })
            .collect();
        let mut submitted = submitted;
        submitted.reverse();
        self.sim.insert_front(PID, Q, submitted);
        let now = self.now_ms;
        for job in self.sim.jobs(PID, Q) {
            let roll = self.rng.random_range(0..100 * 100 / busy.max(1));
            let next = match (job.state.as_str(), roll) {
                ("starting", 0..50) => Some("running"),
                ("running", 0..20) => Some("success"),
                ("running", 20..25) => Some("dead"),
                ("running", 25..28) => Some("recovering"),
                ("running", 28..30) => Some("idle"),
                ("recovering" | "idle", 0..50) => Some("running"),
                _ => None,
            };
            if let Some(state) = next {
                self.sim.update_job(PID, Q, &job.id, |j| {
                    j.state = state.to_string();
                    j.update_time = now;
                    if matches!(state, "success" | "dead") {
                        j.duration = now - j.create_time;
                    }
                });
            }
            if job.state == "running" && roll == 99 {
                self.sim.remove_job(PID, Q, &job.id);
            }
        }
    }

    /// Retention: only the newest `keep` jobs stay. Returns how many finished jobs went (an
    /// unfinished one is looked up by id at the next poll, so only finished ones lag).
    fn retain(&self, keep: usize) -> usize {
        let mut jobs = self.sim.jobs(PID, Q);
        let gone = jobs
            .iter()
            .skip(keep)
            .filter(|j| matches!(j.state.as_str(), "success" | "dead"))
            .count();
        jobs.truncate(keep);
        self.sim.set_jobs(PID, Q, jobs);
        gone
    }
}

fn setup(sim: &Simulator) -> (DliClient, QueueKey, Option<Arc<JobNameFilter>>) {
    let client = client(&project(sim, &[Q], aksk()), Duration::from_secs(5), 4);
    let names = JobNameFilter::new(&["etl_.*".to_string(), "report".to_string()], 10)
        .expect("compiles")
        .map(Arc::new);
    (client, QueueKey::new(PID, Q), names)
}

/// The same series with the same values; sums of run times may differ in the last bits (the
/// order finished jobs are added in is the order their pages arrived).
fn assert_same(incremental: &Poller, full: &Poller, at: &str) {
    let split = |set: BTreeSet<String>| -> BTreeMap<String, f64> {
        set.into_iter()
            .map(|l| {
                let (series, v) = l.rsplit_once(' ').expect("a sample line");
                (series.to_string(), v.parse().expect("a number"))
            })
            .collect()
    };
    let (a, b) = (split(incremental.job_series()), split(full.job_series()));
    let same = |x: f64, y: f64| x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs());
    let only_a: Vec<_> = a
        .iter()
        .filter(|(k, v)| !b.get(*k).is_some_and(|w| same(**v, *w)))
        .collect();
    let only_b: Vec<_> = b
        .iter()
        .filter(|(k, v)| !a.get(*k).is_some_and(|w| same(**v, *w)))
        .collect();
    assert!(
        only_a.is_empty() && only_b.is_empty(),
        "{at}: incremental only {only_a:#?}\nfull walk only {only_b:#?}"
    );
    assert!(a.len() >= 10, "{at}: {} series", a.len());
}

#[tokio::test]
async fn a_day_of_churn_publishes_what_full_walks_publish() {
    let mut world = World::new(7, 240).await;
    let (client, key, names) = setup(&world.sim);
    let mut incremental = Poller::new(PollMode::Auto, &key, &names);
    let mut full = Poller::new(PollMode::Full, &key, &names);
    let mut removed_total = 0usize;
    let mut incremental_polls = 0;
    for hour in 0..24 {
        for minute in 0..6 {
            if hour + minute > 0 {
                world.step();
            }
            world.sim.reset_stats();
            assert!(
                incremental.poll(&client, &key).await,
                "hour {hour} minute {minute}"
            );
            let cost = world.sim.stats().list_batches_requests;
            assert!(full.poll(&client, &key).await);
            let was_incremental = incremental.metric("dli_poll_incremental") == 1.0;
            if was_incremental {
                incremental_polls += 1;
                // A handful of requests, not the ~15 pages of a full walk, plus lookups.
                assert!(cost < 40, "hour {hour} minute {minute}: {cost} requests");
            }
            assert_eq!(full.metric("dli_poll_incremental"), 0.0);
            assert_same(&incremental, &full, &format!("hour {hour} minute {minute}"));
        }
        // Retention at the end of the hour: only a full walk sees it. Until then the
        // incremental poller still counts the removed jobs (the one allowed lag)...
        let gone = world.retain(300);
        if gone > 0 {
            assert!(incremental.poll(&client, &key).await);
            assert!(full.poll(&client, &key).await);
            assert_eq!(incremental.metric("dli_poll_incremental"), 1.0);
            assert_eq!(
                incremental.listed(),
                full.listed() + gone as f64,
                "hour {hour}: the removed jobs lag until the full walk"
            );
        }
        // ...and the full walk catches up and counts them as drift.
        removed_total += gone;
        incremental.memory.incremental.request_full_walk();
        assert!(incremental.poll(&client, &key).await);
        assert!(full.poll(&client, &key).await);
        assert_eq!(incremental.metric("dli_poll_incremental"), 0.0);
        assert_same(&incremental, &full, &format!("hour {hour}, full walk"));
        assert_eq!(
            incremental.metric("dli_poll_incremental_drift_jobs_total"),
            removed_total as f64
        );
    }
    assert!(removed_total > 100, "retention removed {removed_total}");
    assert!(
        incremental_polls >= 24 * 5,
        "{incremental_polls} incremental polls"
    );
    assert!(
        full.metric("dli_batch_jobs_submitted_total") > 100.0,
        "the churn submitted jobs"
    );
}

/// Polls both pollers once and asserts the `auto` one walked fully and published the same.
async fn both_full(
    client: &DliClient,
    key: &QueueKey,
    auto: &mut Poller,
    full: &mut Poller,
    at: &str,
) {
    assert!(auto.poll(client, key).await, "{at}");
    assert!(full.poll(client, key).await, "{at}");
    assert_eq!(auto.metric("dli_poll_incremental"), 0.0, "{at}");
    assert_same(auto, full, at);
}

async fn falls_back_when(behaviour: QueueBehaviour) {
    let mut world = World::new(11, 200).await;
    let (client, key, names) = setup(&world.sim);
    world.sim.set_behaviour(PID, Q, behaviour);
    let mut auto = Poller::new(PollMode::Auto, &key, &names);
    let mut full = Poller::new(PollMode::Full, &key, &names);
    for round in 0..4 {
        if round > 0 {
            world.step();
        }
        both_full(
            &client,
            &key,
            &mut auto,
            &mut full,
            &format!("round {round}"),
        )
        .await;
    }
    assert_eq!(auto.failures("inconsistent"), Some(0.0));
}

#[tokio::test]
async fn auto_walks_fully_when_the_server_ignores_order() {
    falls_back_when(QueueBehaviour {
        list_order: ListOrder::OldestFirst,
        order_param: ParamHandling::Ignore,
        ..Default::default()
    })
    .await;
}

#[tokio::test]
async fn auto_walks_fully_when_the_server_ignores_or_rejects_state() {
    for state_filter in [ParamHandling::Ignore, ParamHandling::Reject] {
        falls_back_when(QueueBehaviour {
            state_filter,
            ..Default::default()
        })
        .await;
    }
}

#[tokio::test]
async fn auto_walks_fully_when_the_server_ignores_job_id() {
    falls_back_when(QueueBehaviour {
        job_id_filter: ParamHandling::Ignore,
        ..Default::default()
    })
    .await;
}

#[tokio::test]
async fn a_server_that_stops_honouring_state_fails_one_poll_then_full_walks() {
    let mut world = World::new(13, 200).await;
    let (client, key, names) = setup(&world.sim);
    let mut auto = Poller::new(PollMode::Auto, &key, &names);
    let mut full = Poller::new(PollMode::Full, &key, &names);
    for _ in 0..2 {
        world.step();
        assert!(auto.poll(&client, &key).await);
        assert!(full.poll(&client, &key).await);
        assert_same(&auto, &full, "before");
    }
    assert_eq!(auto.metric("dli_poll_incremental"), 1.0);
    let before = auto.job_series();
    world.sim.set_behaviour(
        PID,
        Q,
        QueueBehaviour {
            state_filter: ParamHandling::Ignore,
            ..Default::default()
        },
    );
    world.step();
    assert!(
        !auto.poll(&client, &key).await,
        "the incremental poll fails"
    );
    assert_eq!(auto.failures("inconsistent"), Some(1.0));
    assert_eq!(
        auto.job_series(),
        before,
        "nothing of the failed poll is published"
    );
    assert_eq!(auto.metric("dli_poll_success"), 0.0);
    for round in 0..3 {
        both_full(
            &client,
            &key,
            &mut auto,
            &mut full,
            &format!("after {round}"),
        )
        .await;
        world.step();
    }
}

#[tokio::test]
async fn forced_incremental_polls_fail_against_an_oldest_first_server_and_walk_fully_between() {
    let mut world = World::new(17, 200).await;
    let (client, key, names) = setup(&world.sim);
    world.sim.set_behaviour(
        PID,
        Q,
        QueueBehaviour {
            list_order: ListOrder::OldestFirst,
            order_param: ParamHandling::Ignore,
            ..Default::default()
        },
    );
    let mut forced = Poller::new(PollMode::Incremental, &key, &names);
    let mut full = Poller::new(PollMode::Full, &key, &names);
    for round in 0..3 {
        // A full walk (publishes what a full walk publishes)...
        both_full(
            &client,
            &key,
            &mut forced,
            &mut full,
            &format!("round {round}"),
        )
        .await;
        let good = forced.job_series();
        // ...then the forced incremental poll, which finds pages oldest first and fails.
        world.step();
        assert!(!forced.poll(&client, &key).await, "round {round}");
        assert_eq!(forced.metric("dli_poll_incremental"), 1.0);
        assert_eq!(
            forced.job_series(),
            good,
            "round {round}: nothing published"
        );
    }
}

#[tokio::test]
async fn forced_incremental_polls_fail_as_inconsistent_when_state_or_job_id_is_ignored() {
    for behaviour in [
        QueueBehaviour {
            state_filter: ParamHandling::Ignore,
            ..Default::default()
        },
        QueueBehaviour {
            job_id_filter: ParamHandling::Ignore,
            ..Default::default()
        },
    ] {
        let mut world = World::new(19, 120).await;
        let (client, key, names) = setup(&world.sim);
        world.sim.set_behaviour(PID, Q, behaviour.clone());
        let mut forced = Poller::new(PollMode::Incremental, &key, &names);
        assert!(
            forced.poll(&client, &key).await,
            "the first poll walks fully"
        );
        let good = forced.job_series();
        // Enough churn that some running job finishes unseen by the newest pages.
        for _ in 0..3 {
            world.step();
        }
        assert!(!forced.poll(&client, &key).await, "{behaviour:?}");
        assert_eq!(forced.failures("inconsistent"), Some(1.0), "{behaviour:?}");
        assert_eq!(
            forced.job_series(),
            good,
            "{behaviour:?}: nothing published"
        );
        assert!(forced.poll(&client, &key).await, "then a full walk");
        assert_eq!(forced.metric("dli_poll_incremental"), 0.0);
    }
}

#[tokio::test]
async fn an_unchanged_queue_costs_one_page_and_one_listing_per_unfinished_state() {
    let world = World::new(23, 200).await;
    let (client, key, names) = setup(&world.sim);
    let mut auto = Poller::new(PollMode::Auto, &key, &names);
    assert!(auto.poll(&client, &key).await);
    let states = ["starting", "running", "recovering"];
    let active: Vec<usize> = states
        .iter()
        .map(|s| {
            world
                .sim
                .jobs(PID, Q)
                .iter()
                .filter(|j| j.state == *s)
                .count()
        })
        .collect();
    world.sim.reset_stats();
    assert!(auto.poll(&client, &key).await);
    assert_eq!(auto.metric("dli_poll_incremental"), 1.0);
    // The newest page holds only known jobs; each state's list ends at its first short page
    // (the newest page was full, so the server does not cap `size`).
    let listings: usize = active.iter().map(|n| n / PAGE as usize + 1).sum();
    let expected = 1 + listings;
    assert_eq!(world.sim.stats().list_batches_requests, expected as u64);
    assert_eq!(auto.metric("dli_poll_pages"), expected as f64);
    let log = world.sim.request_log();
    assert!(
        log[0].query.contains("order=CREATE_TIME_DESC"),
        "{}",
        log[0].query
    );
    for s in states {
        assert!(
            log.iter().any(|r| r.query.contains(&format!("state={s}"))),
            "{s}"
        );
    }
    assert!(
        !log.iter().any(|r| r.query.contains("job-id")),
        "nothing to look up"
    );
}

#[tokio::test]
async fn deleting_the_newest_job_is_no_inconsistency() {
    let mut world = World::new(29, 200).await;
    let (client, key, names) = setup(&world.sim);
    let mut auto = Poller::new(PollMode::Auto, &key, &names);
    let mut full = Poller::new(PollMode::Full, &key, &names);
    let newest = world.job("starting");
    let id = newest.id.clone();
    world.sim.insert_front(PID, Q, vec![newest]);
    for _ in 0..2 {
        assert!(auto.poll(&client, &key).await);
        assert!(full.poll(&client, &key).await);
    }
    assert!(world.sim.remove_job(PID, Q, &id));
    assert!(
        auto.poll(&client, &key).await,
        "a sorted first page may start older"
    );
    assert!(full.poll(&client, &key).await);
    assert_eq!(auto.metric("dli_poll_incremental"), 1.0);
    assert_eq!(auto.failures("inconsistent"), Some(0.0));
    assert_same(&auto, &full, "after the deletion");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random churn (how many jobs, how busy, page size, retention, forced incremental or auto):
    /// after every poll the incremental poller publishes what the full walker does.
    #[test]
    fn random_churn_publishes_what_full_walks_publish(
        seed in any::<u64>(),
        initial in 0usize..150,
        page in 3u32..40,
        forced in any::<bool>(),
        steps in prop::collection::vec((0usize..12, 1u32..100, any::<bool>(), 0usize..200), 1..8),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let mut world = World::new(seed, initial).await;
            let (client, key, names) = setup(&world.sim);
            let mode = if forced { PollMode::Incremental } else { PollMode::Auto };
            let mut incremental = Poller::with_page(mode, &key, &names, page);
            let mut full = Poller::with_page(PollMode::Full, &key, &names, page);
            assert!(incremental.poll(&client, &key).await);
            assert!(full.poll(&client, &key).await);
            assert_same(&incremental, &full, "first poll");
            for (i, (submits, busy, retain, keep)) in steps.into_iter().enumerate() {
                world.step_with(submits, busy);
                let walk_fully = retain && world.retain(keep) > 0;
                if walk_fully {
                    // Only a full walk sees retention.
                    incremental.memory.incremental.request_full_walk();
                }
                assert!(incremental.poll(&client, &key).await, "step {i}");
                if forced {
                    let kind = incremental.metric("dli_poll_incremental");
                    assert_eq!(kind, if walk_fully { 0.0 } else { 1.0 }, "step {i}");
                }
                assert!(full.poll(&client, &key).await, "step {i}");
                assert_same(&incremental, &full, &format!("step {i}"));
            }
        });
    }
}
