//! Polling: the per-queue schedule (`scheduler`) and the folding of a walk into a snapshot
//! (`aggregate`), and the job lifecycle between walks (`lifecycle`).

pub mod aggregate;
pub mod lifecycle;
pub mod scheduler;
pub mod shard;
