//! Retries of a single request (not a page walk: that is [`super::paging`]'s): the same backoff
//! as the walker's ([`RetryPolicy`]), only for retryable failures, never past a deadline.

use std::future::Future;
use std::time::Instant;

use super::error::DliError;
use super::paging::RetryPolicy;

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
        if !error.is_retryable() || attempt >= policy.retries || Instant::now() + wait >= deadline {
            return Err(error);
        }
        tracing::debug!(operation = error.operation().as_str(), attempt,
            wait_ms = wait.as_millis() as u64, error = %error, "retrying request");
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}
