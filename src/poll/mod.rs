//! Polling: the per-queue schedule (`scheduler`) and the folding of a walk into a snapshot
//! (`aggregate`).

pub mod aggregate;
pub mod scheduler;
