//! The lively world behind `--demo`: [`DEMO_PROJECT_ID`]'s queues [`DEMO_QUEUES`] filled
//! with jobs that move through states over time, and its queue list: those two Spark queues
//! (types `general` and `all`, their CUs in use following their running jobs) and two `sql`
//! queues ([`DEMO_SQL_QUEUES`]) that discovery leaves out by default.
//!
//! Owns the world's evolution: every tick jobs start, finish, fail or recover, new jobs are
//! submitted at the front (about a third of them runs of the recurring jobs
//! [`LIVELY_RECURRING_JOBS`]), and old finished ones are pruned. Invariants after every step, for
//! each queue: all five states are present, at least one job has no owner, the list is at most
//! [`LIVELY_MAX_JOBS`] long and newest-first by `create_time`. It must not use randomness other than
//! its own generator seeded from [`SimConfig::seed`], nor outlive [`Simulator::shutdown`].

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::jobs::{self, JOB_STATES, SimJob};
use super::queues::SimQueue;
use super::{DEMO_PROJECT_ID, DEMO_QUEUES, QueueJobs, SimConfig, Simulator, lock, now_ms};

/// The demo project's SQL queues: listed, never polled by default (`discovery.queue_types`).
pub const DEMO_SQL_QUEUES: [&str; 2] = ["default", "bi_sql"];

/// The demo project's queue list, CUs in use at 0.
pub fn demo_queue_list() -> Vec<SimQueue> {
    let etl = SimQueue {
        cu_count: Some(64),
        cu_scale_out_limit: Some(128),
        cu_scale_in_limit: Some(32),
        resource_mode: Some(1),
        charging_mode: Some(2),
        elastic_resource_pool_name: Some("demo_pool".into()),
        ..SimQueue::new(DEMO_QUEUES[0], "general")
    };
    let adhoc = SimQueue {
        cu_count: Some(32),
        cu_scale_out_limit: Some(48),
        cu_scale_in_limit: Some(16),
        ..SimQueue::new(DEMO_QUEUES[1], "all")
    };
    let mut list = vec![etl, adhoc];
    list.extend(DEMO_SQL_QUEUES.iter().map(|q| SimQueue::new(q, "sql")));
    list
}

/// CUs a demo queue uses: 4 per running or recovering job, at most its CUs.
fn used_cu(q: &QueueJobs, cu_count: i64) -> f64 {
    let active = q
        .iter()
        .filter(|j| j.state == "running" || j.state == "recovering")
        .count();
    (active as f64 * 4.0).min(cu_count as f64)
}

/// The owners the demo world's jobs belong to (one job at least has no owner at all).
pub const LIVELY_OWNERS: [&str; 8] = jobs::OWNERS;

/// Recurring job names of the demo world: about one job in three is a run of one of them. Their
/// runs succeed, except those of [`LIVELY_FLAKY_JOB`], which die now and then.
pub const LIVELY_RECURRING_JOBS: [&str; 4] = [
    "daily_orders_etl",
    "hourly_metrics_rollup",
    "user_profile_agg",
    LIVELY_FLAKY_JOB,
];

/// The recurring job of the demo world whose runs sometimes die.
pub const LIVELY_FLAKY_JOB: &str = "fraud_features";

/// The demo world never keeps more jobs than this per queue.
pub const LIVELY_MAX_JOBS: usize = 80;

const LIVELY_SALT: u64 = 0x5eed_de70_0000_0001;

/// Starts a simulator with [`SimConfig::default`] and the demo world, which moves every `tick`.
/// Poll it at [`Simulator::base_url`] for project [`DEMO_PROJECT_ID`] with
/// `DEMO_ACCESS_KEY`/`DEMO_SECRET_KEY` (or an IAM token for `DEMO_DOMAIN`/`DEMO_USER`/`DEMO_PASSWORD`).
/// The world stops moving on [`Simulator::shutdown`].
pub async fn start_lively(tick: Duration) -> std::io::Result<Simulator> {
    start_lively_with(SimConfig::default(), tick).await
}

/// [`start_lively`] with a given configuration (the world is seeded from `config.seed`).
pub async fn start_lively_with(config: SimConfig, tick: Duration) -> std::io::Result<Simulator> {
    let sim = Simulator::start(config).await?;
    let mut world = LivelyWorld::new(sim.config().seed);
    world.populate(&sim, now_ms());
    let handle = sim.clone();
    let tick = tick.max(Duration::from_millis(1));
    tokio::spawn(async move {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = handle.stopped() => break,
                _ = interval.tick() => world.step(&handle, now_ms()),
            }
        }
    });
    Ok(sim)
}

/// The demo world's generator and rules. [`start_lively`] drives one; tests can step one by hand.
#[derive(Debug)]
pub struct LivelyWorld {
    rng: StdRng,
}

fn state_index(state: &str) -> Option<usize> {
    JOB_STATES.iter().position(|s| *s == state)
}

fn counts(q: &QueueJobs) -> [usize; 5] {
    let mut c = [0; 5];
    for j in q {
        if let Some(i) = state_index(&j.state) {
            c[i] += 1;
        }
    }
    c
}

/// A run of a recurring job that does not die: every one of them but [`LIVELY_FLAKY_JOB`].
fn reliable(job: &SimJob) -> bool {
    job.name
        .as_deref()
        .is_some_and(|n| n != LIVELY_FLAKY_JOB && LIVELY_RECURRING_JOBS.contains(&n))
}

const STARTING: usize = 0;
const RUNNING: usize = 1;
const RECOVERING: usize = 2;

impl LivelyWorld {
    pub fn new(seed: u64) -> Self {
        LivelyWorld {
            rng: StdRng::seed_from_u64(seed ^ LIVELY_SALT),
        }
    }

    /// An owner skewed towards the first names, so that owners have visibly different counts.
    fn owner(&mut self) -> Option<String> {
        let a = self.rng.random_range(0..LIVELY_OWNERS.len());
        let b = self.rng.random_range(0..LIVELY_OWNERS.len());
        Some(LIVELY_OWNERS[a.min(b)].to_string())
    }

    fn job(&mut self, queue: &str, state: &str, created: i64, now: i64) -> SimJob {
        let owner = self.owner();
        let mut job = jobs::make_job(&mut self.rng, queue, state, owner, created, now, false);
        if self.rng.random_range(0..3) == 0 {
            let name = if state == "dead" {
                LIVELY_FLAKY_JOB
            } else {
                LIVELY_RECURRING_JOBS[self.rng.random_range(0..LIVELY_RECURRING_JOBS.len())]
            };
            job.name = Some(name.to_string());
        }
        job
    }

    /// Fills every demo queue with 40–80 jobs in all five states, newest first.
    pub fn populate(&mut self, sim: &Simulator, now: i64) {
        for queue in DEMO_QUEUES {
            let n = self.rng.random_range(40..=LIVELY_MAX_JOBS);
            let starting = self.rng.random_range(2..=5);
            let mut rest: Vec<&str> = Vec::with_capacity(n);
            rest.extend(std::iter::repeat_n(
                "running",
                self.rng.random_range(5..=12),
            ));
            rest.extend(std::iter::repeat_n(
                "recovering",
                self.rng.random_range(1..=3),
            ));
            rest.extend(std::iter::repeat_n("dead", self.rng.random_range(4..=10)));
            while rest.len() + starting < n {
                rest.push("success");
            }
            rest.shuffle(&mut self.rng);
            let mut created = now - self.rng.random_range(1_000..20_000);
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                let state = if i < starting {
                    "starting"
                } else {
                    rest[i - starting]
                };
                out.push(self.job(queue, state, created, now));
                created -= self.rng.random_range(30_000..600_000);
            }
            if let Some(last) = out.last_mut() {
                last.owner = None;
            }
            sim.set_jobs(DEMO_PROJECT_ID, queue, out);
        }
        sim.set_queue_list(DEMO_PROJECT_ID, demo_queue_list());
        self.update_used_cu(sim);
    }

    /// Sets the CUs in use of the demo's Spark queues from their active jobs.
    fn update_used_cu(&self, sim: &Simulator) {
        let used: Vec<(String, f64)> = {
            let projects = lock(&sim.inner.projects);
            let Some(project) = projects.get(DEMO_PROJECT_ID) else {
                return;
            };
            demo_queue_list()
                .into_iter()
                .filter_map(|q| {
                    let jobs = project.get(&q.queue_name)?;
                    Some((q.queue_name.clone(), used_cu(jobs, q.cu_count.unwrap_or(0))))
                })
                .collect()
        };
        for (queue, cu) in used {
            sim.set_queue_field(DEMO_PROJECT_ID, &queue, "used_cu", serde_json::json!(cu));
        }
    }

    /// One tick of life at wall-clock `now` (unix ms).
    pub fn step(&mut self, sim: &Simulator, now: i64) {
        {
            let mut projects = lock(&sim.inner.projects);
            let project = projects.entry(DEMO_PROJECT_ID.to_string()).or_default();
            for queue in DEMO_QUEUES {
                let q = project.entry(queue.to_string()).or_default();
                self.step_queue(queue, q, now);
            }
        }
        self.update_used_cu(sim);
    }

    fn step_queue(&mut self, queue: &str, q: &mut QueueJobs, now: i64) {
        let mut c = counts(q);
        // A job leaves a state only when another job stays in it.
        for job in q.iter_mut() {
            let Some(from) = state_index(&job.state) else {
                continue;
            };
            let roll: f64 = self.rng.random();
            let to = match from {
                STARTING if roll < 0.4 => Some("running"),
                RUNNING if roll < 0.08 => Some("success"),
                // Runs of the reliable recurring jobs succeed instead of dying.
                RUNNING if roll < 0.11 && reliable(job) => Some("success"),
                RUNNING if roll < 0.11 => Some("dead"),
                RUNNING if roll < 0.13 => Some("recovering"),
                RECOVERING if roll < 0.4 => Some("running"),
                _ => None,
            };
            match to {
                Some(to) if c[from] > 1 => {
                    c[from] -= 1;
                    if let Some(i) = state_index(to) {
                        c[i] += 1;
                    }
                    let j = Arc::make_mut(job);
                    j.state = to.to_string();
                    j.update_time = now;
                    j.duration = (now - j.create_time).max(0);
                    if j.app_id.is_none() {
                        j.app_id = Some(format!("batch-session-{}:0", j.id));
                    }
                }
                // Active jobs keep running: their duration grows (finished ones are frozen).
                _ if matches!(from, RUNNING | RECOVERING) => {
                    let j = Arc::make_mut(job);
                    j.duration = (now - j.create_time).max(0);
                }
                _ => {}
            }
        }

        // New submissions, newest at the front; more when few jobs are starting.
        let mut submit = self.rng.random_range(0..=2);
        if c[STARTING] < 2 {
            submit += 1;
        }
        let newest = q.front().map_or(i64::MIN, |j| j.create_time);
        for i in 0..submit {
            let created = (now - (submit - i) as i64).max(newest.saturating_add(1));
            let mut job = self.job(queue, "starting", created, now.max(created));
            if self.rng.random_range(0..25) == 0 {
                job.owner = None;
            }
            q.push_front(Arc::new(job));
            c[STARTING] += 1;
        }

        // Prune the oldest finished jobs, keeping every state and one ownerless job.
        let mut idx = q.len();
        while q.len() > LIVELY_MAX_JOBS && idx > 0 {
            idx -= 1;
            let Some(j) = q.get(idx) else { break };
            let Some(s) = state_index(&j.state) else {
                continue;
            };
            let finished = s > RECOVERING;
            let last_ownerless =
                j.owner.is_none() && q.iter().filter(|x| x.owner.is_none()).count() == 1;
            if finished && c[s] > 1 && !last_ownerless {
                c[s] -= 1;
                q.remove(idx);
            }
        }

        if !q.iter().any(|j| j.owner.is_none())
            && let Some(front) = q.front_mut()
        {
            Arc::make_mut(front).owner = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_invariants(sim: &Simulator) {
        for queue in DEMO_QUEUES {
            let jobs = sim.jobs(DEMO_PROJECT_ID, queue);
            for state in JOB_STATES {
                assert!(
                    jobs.iter().any(|j| j.state == state),
                    "{queue} lacks {state}"
                );
            }
            assert!(
                jobs.iter().any(|j| j.owner.is_none()),
                "{queue} has no ownerless job"
            );
            assert!(
                jobs.len() <= LIVELY_MAX_JOBS + 3,
                "{queue} has {} jobs",
                jobs.len()
            );
            assert!(
                jobs.windows(2)
                    .all(|w| w[0].create_time >= w[1].create_time),
                "{queue} order"
            );
            for j in &jobs {
                assert!(j.duration >= 0 && j.update_time >= j.create_time, "{j:?}");
                assert!(!(reliable(j) && j.state == "dead"), "{j:?}");
            }
            assert!(
                jobs.iter().any(|j| j
                    .name
                    .as_deref()
                    .is_some_and(|n| LIVELY_RECURRING_JOBS.contains(&n))),
                "{queue} has no recurring job"
            );
        }
    }

    #[tokio::test]
    async fn stepping_keeps_every_state_and_is_deterministic() {
        let a = Simulator::start(SimConfig::default())
            .await
            .expect("starts");
        let b = Simulator::start(SimConfig::default())
            .await
            .expect("starts");
        let (mut wa, mut wb) = (LivelyWorld::new(42), LivelyWorld::new(42));
        let t0 = 1_800_000_000_000;
        wa.populate(&a, t0);
        wb.populate(&b, t0);
        let initial = a.jobs(DEMO_PROJECT_ID, "etl");
        assert!((40..=LIVELY_MAX_JOBS).contains(&initial.len()));
        let owners: std::collections::BTreeSet<_> =
            initial.iter().filter_map(|j| j.owner.clone()).collect();
        assert!(owners.len() >= 5, "{owners:?}");
        check_invariants(&a);
        for i in 1..=300 {
            let now = t0 + i * 5_000;
            wa.step(&a, now);
            wb.step(&b, now);
            check_invariants(&a);
        }
        for queue in DEMO_QUEUES {
            assert_eq!(
                a.jobs(DEMO_PROJECT_ID, queue),
                b.jobs(DEMO_PROJECT_ID, queue)
            );
        }
        let later = a.jobs(DEMO_PROJECT_ID, "etl");
        assert!(
            later.iter().all(|j| !initial
                .iter()
                .any(|i| i.id == j.id && i.state == "starting" && j.state == "starting")),
            "every starting job moved on within 300 ticks"
        );
        a.shutdown();
        b.shutdown();
    }

    #[tokio::test]
    async fn demo_moves_over_ticks_and_serves() {
        let sim = start_lively(Duration::from_millis(10))
            .await
            .expect("starts");
        let before = sim.jobs(DEMO_PROJECT_ID, "adhoc");
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(15)).await;
            check_invariants(&sim);
        }
        assert_ne!(
            before,
            sim.jobs(DEMO_PROJECT_ID, "adhoc"),
            "the world changed"
        );
        sim.shutdown();
    }
}
