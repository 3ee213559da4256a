//! [`WalkProgress`]: the pages a walk has answered so far, shared with whoever runs the walk.
//!
//! It only counts; the walker (`walk`) writes it and the scheduler reads it, also after it
//! dropped a walk that overran `poll.timeout`, so `dli_poll_pages` reports what such a walk got.

use std::sync::atomic::{AtomicU32, Ordering};

/// Pages answered so far by a walk, readable while it runs and after its future was dropped.
#[derive(Debug, Default)]
pub struct WalkProgress(AtomicU32);

impl WalkProgress {
    pub fn pages(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    pub(crate) fn set(&self, pages: u32) {
        self.0.store(pages, Ordering::Relaxed);
    }
}
