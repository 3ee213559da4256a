//! Incremental polls of one queue (docs/architecture.md, "Incremental polls"): what a queue's
//! poller remembers between polls ([`QueueMemory`]: the lifecycle tracker and the job table),
//! the choice between a full walk and an incremental poll (`poll.mode`,
//! `poll.full_walk_interval`, and in `auto` the checks that the server honours `order`, `state`
//! and `job-id`), and the incremental poll itself: the changes fetched through
//! [`ChangeLister`], applied to the table, and the snapshot and lifecycle events rebuilt from the
//! whole table exactly as a full walk would build them.
//!
//! It owns the decision and the table's updates; the requests and their checks are the dli
//! layer's, the store writes the scheduler's. A failed poll changes nothing here but makes the
//! next poll a full walk.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use super::aggregate::SnapshotBuilder;
use super::context::PollContext;
use super::lifecycle::JobTracker;
use super::table::{Drift, JobTable, Refresh};
use crate::config::{JobNameFilter, PollMode};
use crate::dli::detect::{Order, ParamSupport, state_filter_support};
use crate::dli::walk::id_key;
use crate::dli::{BatchJob, ChangeLister, DliClient, WalkError, WalkProgress, WalkStats};
use crate::store::{LifecycleEvents, QueueKey, QueueSnapshot};

/// In `auto`, a queue whose full walk took at most this many pages is walked fully: an
/// incremental poll costs about as much (its newest page and one listing per active state).
pub const MIN_PAGES_FOR_INCREMENTAL: u32 = 5;

/// What a queue's poller keeps between polls; survives reloads that keep the queue.
#[derive(Debug, Default)]
pub struct QueueMemory {
    pub tracker: JobTracker,
    pub incremental: IncrementalState,
}

/// The job table and what the last full walk showed about the server.
#[derive(Debug, Default)]
pub struct IncrementalState {
    table: Option<JobTable>,
    /// Incremental polls changed the table since the full walk that built it.
    changed_since_full: bool,
    /// When the last full walk started (tokio's clock, so tests can pause time).
    last_full: Option<tokio::time::Instant>,
    /// In `auto`: the last full walk saw the server honour `order`, `state` and `job-id`.
    verified: bool,
    /// What the last check said, for the log line when it changes.
    verdict: Option<String>,
    /// The next poll walks fully (set while an incremental poll runs, cleared when it succeeds).
    force_full: bool,
}

/// What a full walk does with the job table while it streams.
pub enum WalkTable<'a> {
    /// `poll.mode = "full"`, or a one-shot poll: no table.
    Off,
    /// A new table (the first walk, or one whose job names or ids make the old one unusable).
    Fresh(Box<JobTable>),
    /// The table updated in place, so that only one is ever in memory.
    InPlace(&'a mut JobTable, Refresh),
}

impl WalkTable<'_> {
    pub fn add(&mut self, job: &BatchJob) {
        match self {
            WalkTable::Off => {}
            WalkTable::Fresh(table) => table.push(job),
            WalkTable::InPlace(table, refresh) => table.refresh(refresh, job),
        }
    }

    /// The walk succeeded: the fresh table, or the drift of the one updated in place.
    pub fn finish(self) -> WalkedTable {
        match self {
            WalkTable::Off => WalkedTable::Off,
            WalkTable::Fresh(mut table) => {
                table.seal();
                WalkedTable::Fresh(table)
            }
            WalkTable::InPlace(table, refresh) => {
                WalkedTable::Updated(table.finish_refresh(refresh))
            }
        }
    }
}

/// A finished [`WalkTable`].
pub enum WalkedTable {
    Off,
    Fresh(Box<JobTable>),
    Updated(Drift),
}

/// A successful poll, not yet published.
#[derive(Debug)]
pub struct Polled {
    pub snapshot: QueueSnapshot,
    pub events: Option<LifecycleEvents>,
    pub pages: u32,
    pub jobs: u64,
    pub duplicates: u64,
    /// Jobs the full walk found different from the incremental state.
    pub drift: u64,
}

fn same_filter(a: Option<&Arc<JobNameFilter>>, b: Option<&Arc<JobNameFilter>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

impl IncrementalState {
    /// The table, when a successful poll built one.
    pub fn table(&self) -> Option<&JobTable> {
        self.table.as_ref()
    }

    /// Whether the next poll of this queue may be incremental.
    pub fn wants_incremental(&self, ctx: &PollContext) -> bool {
        let mode_allows = match ctx.mode {
            PollMode::Full => false,
            PollMode::Incremental => true,
            PollMode::Auto => self.verified,
        };
        let Some(table) = &self.table else {
            return false;
        };
        let due = self
            .last_full
            .is_none_or(|at| at.elapsed() >= ctx.full_walk_interval);
        mode_allows
            && !self.force_full
            && !due
            && table.unfollowable().is_none()
            && same_filter(table.filter(), ctx.job_names.as_ref())
    }

    /// What a full walk starting now does with the table. Updating it in place makes it
    /// half-updated should the walk fail, so until the walk succeeds the next poll walks fully.
    pub fn begin_walk(&mut self, ctx: &PollContext) -> WalkTable<'_> {
        if ctx.mode == PollMode::Full {
            self.clear();
            return WalkTable::Off;
        }
        let usable = self.table.as_ref().is_some_and(|table| {
            same_filter(table.filter(), ctx.job_names.as_ref()) && table.unfollowable().is_none()
        });
        if !usable {
            self.table = None;
        }
        self.force_full = usable;
        match self.table.as_mut() {
            Some(table) => {
                let refresh = table.begin_refresh();
                WalkTable::InPlace(table, refresh)
            }
            None => WalkTable::Fresh(Box::new(JobTable::new(ctx.job_names.clone()))),
        }
    }

    /// A full walk that started `at` succeeded: its table is the incremental state now.
    /// Returns the drift, counted only when incremental polls had changed the table it replaces.
    pub fn end_walk(&mut self, walked: WalkedTable, at: tokio::time::Instant) -> u64 {
        let drift = match walked {
            WalkedTable::Off => return 0,
            WalkedTable::Fresh(table) => {
                let drift = match (&self.table, self.changed_since_full) {
                    (Some(before), true) => table.drift_from(before).total(),
                    _ => 0,
                };
                self.table = Some(*table);
                drift
            }
            WalkedTable::Updated(drift) if self.changed_since_full => drift.total(),
            WalkedTable::Updated(_) => 0,
        };
        self.changed_since_full = false;
        self.last_full = Some(at);
        self.force_full = false;
        drift
    }

    /// A full walk that started `at` built `table`: it replaces the incremental state. Returns
    /// the drift against the table it replaces when incremental polls had changed that one.
    pub fn install(&mut self, table: JobTable, at: tokio::time::Instant) -> u64 {
        self.end_walk(WalkedTable::Fresh(Box::new(table)), at)
    }

    /// Makes the next poll a full walk, whatever the schedule says.
    pub fn request_full_walk(&mut self) {
        self.force_full = true;
    }

    /// Forgets the table (a full walk that kept none, in `poll.mode = "full"`).
    pub fn clear(&mut self) {
        *self = IncrementalState::default();
    }

    /// Records the `auto` checks of the last full walk, with one log line when the verdict
    /// changes. `why_not`: why incremental polls cannot be used, `None` when they can.
    fn set_verdict(&mut self, key: &QueueKey, why_not: Option<String>) {
        self.verified = why_not.is_none();
        if self.verdict == why_not {
            return;
        }
        match &why_not {
            Some(why) => {
                tracing::warn!(project_id = %key.project_id, queue = %key.queue, reason = %why,
                "poll.mode = \"auto\": walking this queue fully at every poll (dli_poll_incremental 0)")
            }
            None if self.verdict.is_some() => {
                tracing::info!(project_id = %key.project_id, queue = %key.queue,
                "poll.mode = \"auto\": the server honours order, state and job-id again; polling incrementally")
            }
            None => {}
        }
        self.verdict = why_not;
    }

    /// In `auto`, after a successful full walk: whether the server honours `order` (the walk's
    /// pages were newest first), `state` (one page of an active state holds only that state)
    /// and `job-id` (the oldest known job asked by id comes back alone). Costs two requests;
    /// a check that fails only means full walks.
    pub async fn check_server(
        &mut self,
        client: &DliClient,
        key: &QueueKey,
        ctx: &PollContext,
        stats: &WalkStats,
        deadline: Instant,
    ) -> u32 {
        if ctx.mode != PollMode::Auto {
            return 0;
        }
        let Some(table) = self.table.take() else {
            return 0;
        };
        let pages = self
            .check_table(client, key, ctx, &table, stats, deadline)
            .await;
        self.table = Some(table);
        pages
    }

    async fn check_table(
        &mut self,
        client: &DliClient,
        key: &QueueKey,
        ctx: &PollContext,
        table: &JobTable,
        stats: &WalkStats,
        deadline: Instant,
    ) -> u32 {
        if stats.pages <= MIN_PAGES_FOR_INCREMENTAL {
            // Small enough that a full walk costs no more; no check, and nothing to log.
            self.verified = false;
            return 0;
        }
        if let Some(why) = table.unfollowable() {
            self.set_verdict(key, Some(why.into()));
            return 0;
        }
        if client.order_rejected() || stats.order != Some(Order::Desc) {
            self.set_verdict(
                key,
                Some("the pages asked with order=CREATE_TIME_DESC were not newest first".into()),
            );
            return 0;
        }
        // The walk's page count stays what it was if the checks overrun the poll's timeout.
        let progress = WalkProgress::default();
        let mut lister = ChangeLister::new(client, &key.queue, &ctx.walk, deadline, &progress);
        let verdict = check_filters(&mut lister, table).await;
        self.set_verdict(key, verdict);
        lister.pages
    }
}

/// The `state` and `job-id` checks; `None` when both are honoured.
async fn check_filters(lister: &mut ChangeLister<'_>, table: &JobTable) -> Option<String> {
    // The active state with the fewest jobs: a server that ignores the filter answers with
    // jobs of other states.
    let state = crate::dli::states::ACTIVE_STATES
        .iter()
        .min_by_key(|s| table.count_in(s).0)?;
    let (inside, others) = table.count_in(state);
    let support = match lister.probe_state(state).await {
        Ok(answer) => state_filter_support(state, answer.as_deref(), inside.max(1), others),
        Err(e) => return Some(format!("the check of the state filter failed: {e}")),
    };
    // An empty answer for a state no job was in is what an honouring server says.
    let honoured = match support {
        ParamSupport::Honoured => true,
        ParamSupport::Unknown => inside == 0 && others > 0,
        _ => false,
    };
    if !honoured {
        return Some(format!("the state filter looks {}", support.as_str()));
    }
    let id = table.oldest_id()?;
    match lister.probe_job_id(&id).await {
        Ok(Some(jobs)) if jobs.len() == 1 && jobs[0].id.as_deref() == Some(id.as_str()) => None,
        Ok(Some(_)) => Some("the job-id filter looks ignored".into()),
        Ok(None) => Some("the job-id filter is rejected".into()),
        Err(e) => Some(format!("the check of the job-id filter failed: {e}")),
    }
}

/// One incremental poll: new jobs, jobs in every unfinished state, and unfinished jobs seen in
/// neither by id; then the table is changed and the snapshot rebuilt from all of it.
pub async fn poll(
    client: &DliClient,
    key: &QueueKey,
    ctx: &PollContext,
    state: &mut IncrementalState,
    tracker: Option<&mut JobTracker>,
    deadline: Instant,
    progress: &WalkProgress,
) -> Result<Polled, WalkError> {
    // Until this poll succeeds, the next one walks fully.
    state.force_full = true;
    let Some(table) = state.table.as_ref() else {
        return Err(WalkError::Inconsistent {
            project_id: key.project_id.clone(),
            queue: key.queue.clone(),
            pages: 0,
            detail: "no job table to poll incrementally from".into(),
        });
    };
    let mut lister = ChangeLister::new(client, &key.queue, &ctx.walk, deadline, progress);
    // The latest answer about each job.
    let mut changed: HashMap<u128, BatchJob> = HashMap::new();
    let mut sink = |job: BatchJob| {
        if let Some(k) = job.id.as_deref().map(id_key) {
            changed.insert(k, job);
        }
    };
    let short_ends = lister
        .newest(|k| table.contains(k), table.newest(), &mut sink)
        .await?;
    for s in table.states_to_list() {
        lister.in_state(&s, short_ends, &mut sink).await?;
    }
    let missing: Vec<String> = table
        .unfinished()
        .into_iter()
        .filter(|(k, _)| !changed.contains_key(k))
        .map(|(_, id)| id)
        .collect();
    let mut removed = HashSet::new();
    for (id, job) in lister.lookup(&missing).await? {
        match job {
            Some(job) => {
                changed.insert(id_key(&id), job);
            }
            None => {
                removed.insert(id_key(&id));
            }
        }
    }
    let pages = lister.pages;
    // Every request succeeded: the table now says what the list says.
    let table = state.table.get_or_insert_with(JobTable::default);
    table.apply(changed.into_values(), &removed);
    let (snapshot, events) = rebuild(table, ctx, tracker);
    state.changed_since_full = true;
    state.force_full = false;
    Ok(Polled {
        snapshot,
        events,
        pages,
        jobs: table.len() as u64,
        duplicates: 0,
        drift: 0,
    })
}

/// The snapshot and lifecycle events a full walk listing exactly the table's jobs would give.
pub fn rebuild(
    table: &JobTable,
    ctx: &PollContext,
    tracker: Option<&mut JobTracker>,
) -> (QueueSnapshot, Option<LifecycleEvents>) {
    let mut builder = match &ctx.job_names {
        Some(filter) => SnapshotBuilder::with_job_names(filter.clone()),
        None => SnapshotBuilder::new(),
    };
    let mut staging = tracker.as_deref().map(JobTracker::begin);
    table.replay(|job| {
        builder.add(job);
        if let (Some(t), Some(s)) = (tracker.as_deref(), staging.as_mut()) {
            t.observe(s, job);
        }
    });
    let events = match (tracker, staging) {
        (Some(t), Some(s)) => Some(t.commit(s)),
        _ => None,
    };
    (builder.finish(ctx.max_owners), events)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::PollConfig;
    use crate::store::SnapshotStore;

    fn ctx(mode: PollMode, names: Option<Arc<JobNameFilter>>) -> PollContext {
        let poll = PollConfig {
            mode,
            full_walk_interval: Duration::from_secs(900),
            ..PollConfig::default()
        };
        let mut ctx = PollContext::new(Arc::new(SnapshotStore::new([])), &poll, 10);
        ctx.job_names = names;
        ctx
    }

    fn table(names: Option<Arc<JobNameFilter>>) -> JobTable {
        let mut t = JobTable::new(names);
        t.push(&BatchJob::new("a", "running", None, Some(1)));
        t.seal();
        t
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_walk_every_interval_after_a_failure_and_when_asked() {
        let incremental = ctx(PollMode::Incremental, None);
        let mut state = IncrementalState::default();
        assert!(!state.wants_incremental(&incremental), "no table yet");
        assert_eq!(state.install(table(None), tokio::time::Instant::now()), 0);
        assert!(state.wants_incremental(&incremental));
        assert!(!state.wants_incremental(&ctx(PollMode::Full, None)));
        assert!(
            !state.wants_incremental(&ctx(PollMode::Auto, None)),
            "auto needs the checks"
        );
        tokio::time::advance(Duration::from_secs(899)).await;
        assert!(state.wants_incremental(&incremental));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!state.wants_incremental(&incremental), "the interval is up");
        state.install(table(None), tokio::time::Instant::now());
        assert!(state.wants_incremental(&incremental));
        state.request_full_walk();
        assert!(!state.wants_incremental(&incremental));
        state.install(table(None), tokio::time::Instant::now());
        // A reload that changes the job names: the table kept other names.
        let names = JobNameFilter::new(&["x".to_string()], 5)
            .expect("compiles")
            .map(Arc::new);
        assert!(!state.wants_incremental(&ctx(PollMode::Incremental, names)));
    }

    #[test]
    fn drift_is_counted_only_when_incremental_polls_changed_the_table() {
        let mut state = IncrementalState::default();
        let at = tokio::time::Instant::now();
        state.install(table(None), at);
        // Full walk after full walk: the list's own changes are no drift.
        assert_eq!(state.install(JobTable::new(None), at), 0);
        state.install(table(None), at);
        state.changed_since_full = true;
        assert_eq!(state.install(JobTable::new(None), at), 1, "the job is gone");
    }
}
