//! [`Generation`]: a counter bumped on every change that `/metrics` must show at once, so the
//! render cache knows when its rendering is out of date.

use std::sync::atomic::{AtomicU64, Ordering};

/// A counter of changes; cheap to bump from anywhere that changes what `/metrics` shows.
#[derive(Debug, Default)]
pub struct Generation(AtomicU64);

impl Generation {
    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::Release);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}
