//! The job lifecycle hand-over: what a committed walk adds to the submitted / finished counters
//! ([`LifecycleEvents`]), and the [`LifecycleSink`] the pollers report it to. The metrics
//! implement the sink; the pollers only know this trait, so neither imports the other.

use super::QueueKey;

/// A job counted as finished by a walk.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub state: &'static str,
    /// Run time in seconds, when the API told it.
    pub duration_seconds: Option<f64>,
}

/// What a committed walk adds to the counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LifecycleEvents {
    /// False for the first walk, which only sets the baseline.
    pub counted: bool,
    pub submitted: u64,
    pub finished: Vec<Finished>,
}

/// Where the pollers report lifecycle events (the metrics registry in the daemon).
pub trait LifecycleSink: Send + Sync {
    /// Creates the queue's counters at 0, so `increase()` sees the first event.
    fn init_queue(&self, key: &QueueKey);
    /// Adds what a committed walk saw.
    fn record(&self, key: &QueueKey, events: &LifecycleEvents);
    /// Drops every series of a queue that is no longer polled.
    fn remove_queue(&self, key: &QueueKey);
}
