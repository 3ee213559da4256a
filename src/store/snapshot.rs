//! [`QueueSnapshot`]: what one successful walk of a queue found, as the store keeps it and the
//! metrics render it. Plain data; it knows nothing of DLI requests or Prometheus.

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
}
