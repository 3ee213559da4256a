//! [`QueueSnapshot`]: what one successful walk of a queue found, as the store keeps it and the
//! metrics render it, with the per-job-name summary ([`JobNames`]). Plain data; it knows
//! nothing of DLI requests or Prometheus.

use std::collections::BTreeMap;

/// What one successful walk of a queue found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueSnapshot {
    /// Jobs per state (lowercased; unknown states as they came).
    pub by_state: BTreeMap<String, u64>,
    /// Jobs per (state, owner) after the owner cap.
    pub by_state_owner: BTreeMap<(String, String), u64>,
    /// Oldest `create_time` (unix seconds, millisecond precision) per active state.
    pub oldest_active: BTreeMap<String, f64>,
    /// Distinct jobs seen.
    pub jobs: u64,
    /// The selected job names' last runs; `None` when `metrics.job_names` is off.
    pub job_names: Option<JobNames>,
}

/// The selected job names of one queue after the per-queue cap (docs/architecture.md, "Job
/// names").
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobNames {
    /// Label value of the name (bounded like owners) -> its runs.
    pub names: BTreeMap<String, LastRuns>,
    /// Selected names beyond `metrics.max_job_names_per_queue`, left out.
    pub dropped: u64,
}

/// What the retained runs of one job name say. Times are unix seconds (millisecond precision),
/// durations seconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LastRuns {
    /// State of the newest run (largest `create_time`), lowercased and bounded like state labels.
    pub state: String,
    /// `create_time` of the newest run; `None` when that run has none.
    pub start: Option<f64>,
    /// End of the newest successful run; `None` when no successful run with a known end is
    /// retained.
    pub last_success: Option<f64>,
    /// Duration of the newest finished run; `None` when no finished run with a known duration
    /// is retained.
    pub last_duration: Option<f64>,
}
