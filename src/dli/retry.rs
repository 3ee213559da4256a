//! Retries of a single request (not a page walk: that is [`super::walk`]'s): the same backoff
//! policy as the walker's ([`RetryPolicy`]), only for retryable failures, never past a deadline.

use std::future::Future;
use std::time::{Duration, Instant};

use rand::Rng;

use super::error::DliError;

/// Calls `call` until it succeeds, fails for a reason that is not worth another try, runs out of
/// retries, or the next wait would end after `deadline`; returns the last outcome.
pub async fn with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    deadline: Instant,
    mut call: F,
) -> Result<T, DliError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, DliError>>,
{
    let mut attempt = 0;
    loop {
        let error = match call().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let wait = match error.retry_after() {
            Some(asked) => asked.max(policy.backoff(attempt)),
            None => policy.backoff(attempt),
        };
        // A wait past the deadline, or too large for a clock (any Retry-After), ends it.
        let fits = matches!(Instant::now().checked_add(wait), Some(at) if at < deadline);
        if !error.is_retryable() || attempt >= policy.retries || !fits {
            return Err(error);
        }
        tracing::debug!(operation = error.operation().as_str(), attempt,
            wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), error = %error, "retrying request");
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

/// Retries of one request: exponential backoff with jitter, `Retry-After` honoured.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Further attempts after the first one.
    pub retries: u32,
    /// Backoff before the first retry; doubled each time.
    pub base: Duration,
    /// Upper bound on one computed backoff (a `Retry-After` may ask for more).
    pub cap: Duration,
}

impl RetryPolicy {
    pub fn new(retries: u32) -> Self {
        RetryPolicy {
            retries,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(10),
        }
    }

    /// The wait before retry number `attempt` (0-based): equal jitter over `base * 2^attempt`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let full = self
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.cap);
        let half = full / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let p = RetryPolicy {
            retries: 5,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(500),
        };
        for _ in 0..50 {
            let b0 = p.backoff(0);
            assert!(
                b0 >= Duration::from_millis(50) && b0 <= Duration::from_millis(100),
                "{b0:?}"
            );
            let b2 = p.backoff(2);
            assert!(
                b2 >= Duration::from_millis(200) && b2 <= Duration::from_millis(400),
                "{b2:?}"
            );
            assert!(p.backoff(30) <= Duration::from_millis(500));
        }
    }
}
