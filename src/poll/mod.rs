//! Polling: the per-queue schedule (`scheduler`) and the folding of a walk into a snapshot
//! (`aggregate`, with the per-job-name summary in `job_names` and label bounds in `labels`), the job lifecycle between walks (`lifecycle`), incremental polls and their job table
//! (`incremental`, `table`), and the queue list that
//! discovery and the queue metrics come from (`discovery`).

pub mod aggregate;
mod context;
pub mod discovery;
pub mod incremental;
pub mod job_names;
mod labels;
pub mod lifecycle;
mod merge;
pub mod scheduler;
pub mod shard;
pub mod table;
