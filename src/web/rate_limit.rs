//! The web config's `rate_limit` (exporter-toolkit format): one token bucket in front of every
//! request, refilled one token per `interval` up to `burst`. A request without a token gets 429.
//!
//! It owns the bucket arithmetic only; parsing belongs to `web_config`, answering to `server`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket shared by every connection.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    burst: u32,
    /// Tokens left and when they were counted.
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// `None` when the toolkit would not limit: an `interval` of 0 (its documented "off"). A
    /// `burst` of 0 refuses every request, as Go's `rate.NewLimiter(every, 0)` does there.
    pub fn new(interval: Duration, burst: u32) -> Option<Self> {
        if interval.is_zero() {
            return None;
        }
        Some(RateLimiter {
            interval,
            burst,
            state: Mutex::new((f64::from(burst), Instant::now())),
        })
    }

    /// Takes a token if one is there.
    pub fn allow(&self) -> bool {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> bool {
        // A poisoned lock only means another request panicked mid-update; the count is still a
        // number, so keep limiting with it.
        let mut state = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (tokens, since) = *state;
        let refill =
            now.saturating_duration_since(since).as_secs_f64() / self.interval.as_secs_f64();
        let tokens = (tokens + refill).min(f64::from(self.burst));
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            true
        } else {
            *state = (tokens, now);
            false
        }
    }

    /// Seconds a refused client should wait for the next token (at least 1, for `Retry-After`);
    /// `None` when no token ever comes (`burst: 0`).
    pub fn retry_after_secs(&self) -> Option<u64> {
        if self.burst == 0 {
            return None;
        }
        Some(self.interval.as_secs_f64().ceil().max(1.0) as u64)
    }

    /// For `--check-config` and the start-up log.
    pub fn describe(&self) -> String {
        if self.burst == 0 {
            return "every request refused (burst 0)".into();
        }
        format!(
            "1 request per {:?}, bursts of {}",
            self.interval, self.burst
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_interval_means_no_limit_and_zero_burst_refuses_everything() {
        assert!(RateLimiter::new(Duration::ZERO, 10).is_none());
        assert!(RateLimiter::new(Duration::ZERO, 0).is_none());
        let none = RateLimiter::new(Duration::from_secs(1), 0).expect("a limiter");
        let t0 = Instant::now();
        for s in [0, 1, 60, 3600] {
            assert!(
                !none.allow_at(t0 + Duration::from_secs(s)),
                "allowed after {s} s"
            );
        }
        assert_eq!(none.retry_after_secs(), None);
        assert_eq!(none.describe(), "every request refused (burst 0)");
    }

    #[test]
    fn a_burst_then_one_per_interval() {
        let rl = RateLimiter::new(Duration::from_millis(100), 3).expect("limiter");
        let t0 = Instant::now();
        assert!(rl.allow_at(t0));
        assert!(rl.allow_at(t0));
        assert!(rl.allow_at(t0));
        assert!(!rl.allow_at(t0), "burst spent");
        assert!(!rl.allow_at(t0 + Duration::from_millis(50)), "half a token");
        assert!(
            rl.allow_at(t0 + Duration::from_millis(100)),
            "one token back"
        );
        assert!(!rl.allow_at(t0 + Duration::from_millis(110)));
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(rl.allow_at(later));
        }
        assert!(!rl.allow_at(later));
        assert_eq!(rl.retry_after_secs(), Some(1));
    }
}
