//! [`PollContext`]: everything one poll needs besides the queue (the store, walk options,
//! timeout, owner cap, job names, the lifecycle sink, `poll.mode`), made from the settings. Plain
//! data shared by the scheduler and the incremental polls; it does nothing itself.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{JobNameFilter, PollConfig, PollMode, Settings};
use crate::dli::{RetryPolicy, WalkOptions};
use crate::store::{LifecycleSink, SnapshotStore};

/// Everything one poll needs besides the queue.
#[derive(Clone)]
pub struct PollContext {
    pub store: Arc<SnapshotStore>,
    pub walk: WalkOptions,
    pub timeout: Duration,
    pub max_owners: usize,
    /// The job names to summarise (`metrics.job_names`); `None` when off.
    pub job_names: Option<Arc<JobNameFilter>>,
    /// Where submitted/finished counters go; `None` for one-shot polls.
    pub lifecycle: Option<Arc<dyn LifecycleSink>>,
    /// `poll.mode`: full walks, incremental polls, or incremental where the server allows.
    pub mode: PollMode,
    /// `poll.full_walk_interval`: the longest time between two full walks of a queue.
    pub full_walk_interval: Duration,
}

impl PollContext {
    pub fn new(store: Arc<SnapshotStore>, poll: &PollConfig, max_owners: u32) -> Self {
        PollContext {
            store,
            walk: WalkOptions {
                page_size: poll.page_size,
                max_pages: poll.max_pages,
                concurrency: poll.concurrency as usize,
                retry: RetryPolicy::new(poll.retries),
            },
            timeout: poll.timeout,
            max_owners: max_owners as usize,
            job_names: None,
            lifecycle: None,
            mode: poll.mode,
            full_walk_interval: poll.full_walk_interval,
        }
    }
}

impl PollContext {
    /// The context `settings` ask for: poll settings, owner cap and job names.
    pub fn from_settings(store: Arc<SnapshotStore>, settings: &Settings) -> Self {
        let mut context =
            PollContext::new(store, &settings.poll, settings.metrics.max_owners_per_queue);
        context.job_names = settings.metrics.job_name_filter().map(Arc::new);
        context
    }
}
