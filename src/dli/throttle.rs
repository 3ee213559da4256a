//! Client-side hold-off after throttling: when an endpoint (DLI or IAM of one project) has
//! answered `hold_after` requests in a row with 429 / APIGW.0308, further requests to it are
//! held for a growing, capped, jittered period that is never shorter than the server's
//! `Retry-After` (itself honoured up to `retry_after_limit`, `poll.timeout`), and never longer
//! than `max_hold` (`poll.interval`): a server asking for a day does not silence a project for
//! a day. Any non-throttled answer ends the streak.
//!
//! It owns only that bookkeeping: the [`super::transport::Transport`] asks it before sending and
//! tells it every answer. It must not sleep, send requests or decide about retries (the page
//! walker does, and treats a held request like a throttled one with a `Retry-After`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;

/// When and how long to hold requests to a throttling endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Consecutive throttled answers before requests are held; 0 disables the hold-off.
    pub hold_after: u32,
    /// The first hold; doubled for every further throttled answer.
    pub base: Duration,
    /// Upper bound of a computed hold (a longer `Retry-After` still wins, up to the limits below).
    pub cap: Duration,
    /// Longest `Retry-After` honoured (`poll.timeout`): a longer one counts as this long.
    pub retry_after_limit: Duration,
    /// No hold ever lasts longer than this (`poll.interval`), whatever the server asked for.
    pub max_hold: Duration,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        ThrottlePolicy {
            hold_after: 2,
            base: Duration::from_secs(2),
            cap: Duration::from_secs(60),
            // The defaults of poll.timeout and poll.interval.
            retry_after_limit: Duration::from_secs(45),
            max_hold: Duration::from_secs(60),
        }
    }
}

impl ThrottlePolicy {
    /// No hold-off at all (benchmarks, and the "before" side of the 429-storm test).
    pub fn disabled() -> Self {
        ThrottlePolicy {
            hold_after: 0,
            ..Self::default()
        }
    }

    /// Bounds the hold-off by the poll settings: `Retry-After` honoured up to `timeout`, no hold
    /// longer than `interval`.
    pub fn bounded_by(mut self, timeout: Duration, interval: Duration) -> Self {
        self.retry_after_limit = timeout;
        self.max_hold = interval;
        self
    }

    /// The hold after `streak` consecutive throttled answers (`streak >= hold_after`), before
    /// `Retry-After` is taken into account: `base * 2^(streak - hold_after)`, capped, with equal
    /// jitter (between half and all of it) so that clients do not come back in lockstep.
    pub fn hold_for(&self, streak: u32) -> Duration {
        let doublings = streak.saturating_sub(self.hold_after).min(20);
        let full = self.base.saturating_mul(1u32 << doublings).min(self.cap);
        let half = full / 2;
        half.saturating_add(rand::rng().random_range(Duration::ZERO..=half))
    }

    /// The hold to start after `streak` throttled answers when the last one asked for
    /// `retry_after`: the computed hold or the (bounded) `Retry-After`, whichever is longer,
    /// never longer than `max_hold`.
    pub fn hold_with(&self, streak: u32, retry_after: Option<Duration>) -> Duration {
        let asked = retry_after
            .unwrap_or(Duration::ZERO)
            .min(self.retry_after_limit);
        self.hold_for(streak).max(asked).min(self.max_hold)
    }
}

#[derive(Debug, Default)]
struct State {
    /// Throttled answers in a row.
    streak: u32,
    /// Requests wait until then.
    until: Option<Instant>,
    /// Holds started so far (for tests and logs).
    holds: u64,
}

/// The hold-off state of one endpoint.
#[derive(Debug)]
pub struct Throttle {
    policy: ThrottlePolicy,
    state: Mutex<State>,
}

impl Throttle {
    pub fn new(policy: ThrottlePolicy) -> Self {
        Throttle {
            policy,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long a request must still wait, if the endpoint is held.
    pub fn held_for(&self) -> Option<Duration> {
        let now = Instant::now();
        self.state()
            .until
            .and_then(|until| until.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// Records a throttled answer; returns the hold it started, if it started one.
    pub fn throttled(&self, retry_after: Option<Duration>) -> Option<Duration> {
        if self.policy.hold_after == 0 {
            return None;
        }
        let mut s = self.state();
        s.streak = s.streak.saturating_add(1);
        if s.streak < self.policy.hold_after {
            return None;
        }
        let hold = self.policy.hold_with(s.streak, retry_after);
        let now = Instant::now();
        // `max_hold` comes from a validated config, but a hold must never be able to panic.
        s.until = Some(now.checked_add(hold).unwrap_or(now));
        s.holds += 1;
        Some(hold)
    }

    /// Records an answer that was not throttling: the streak ends.
    pub fn answered(&self) {
        let mut s = self.state();
        s.streak = 0;
    }

    /// Holds started since this throttle was created.
    #[cfg(test)]
    fn holds(&self) -> u64 {
        self.state().holds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ThrottlePolicy {
        ThrottlePolicy {
            hold_after: 2,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(400),
            ..ThrottlePolicy::default()
        }
    }

    #[test]
    fn holds_after_the_streak_and_grows_to_the_cap() {
        let t = Throttle::new(policy());
        assert_eq!(t.throttled(None), None, "one 429 is not a storm");
        assert_eq!(t.held_for(), None);
        let first = t.throttled(None).expect("second 429 starts a hold");
        assert!((Duration::from_millis(50)..=Duration::from_millis(100)).contains(&first));
        assert!(t.held_for().is_some());
        let second = t.throttled(None).expect("hold");
        assert!((Duration::from_millis(100)..=Duration::from_millis(200)).contains(&second));
        for _ in 0..30 {
            let h = t.throttled(None).expect("hold");
            assert!(h <= Duration::from_millis(400), "capped: {h:?}");
            assert!(
                h >= Duration::from_millis(200),
                "half the cap at least: {h:?}"
            );
        }
        assert_eq!(t.holds(), 32);
    }

    #[test]
    fn retry_after_wins_over_a_shorter_hold() {
        let t = Throttle::new(policy());
        t.throttled(None);
        let h = t.throttled(Some(Duration::from_secs(3))).expect("hold");
        assert_eq!(h, Duration::from_secs(3));
        assert!(t.held_for().is_some_and(|d| d > Duration::from_secs(2)));
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_timeout_and_no_hold_outlasts_the_interval() {
        let t = Throttle::new(policy().bounded_by(Duration::from_secs(4), Duration::from_secs(5)));
        t.throttled(Some(Duration::from_secs(86_400)));
        let h = t
            .throttled(Some(Duration::from_secs(86_400)))
            .expect("hold");
        assert_eq!(
            h,
            Duration::from_secs(4),
            "Retry-After honoured up to poll.timeout"
        );
        // The largest Retry-After a header can carry: no overflow, no panic.
        let h = t
            .throttled(Some(Duration::from_secs(u64::MAX)))
            .expect("hold");
        assert_eq!(h, Duration::from_secs(4));
        assert!(t.held_for().is_some_and(|d| d <= Duration::from_secs(4)));
        // A computed hold beyond the interval is cut to it.
        let slow = ThrottlePolicy {
            base: Duration::from_secs(3600),
            cap: Duration::from_secs(7200),
            ..ThrottlePolicy::default()
        }
        .bounded_by(Duration::from_secs(1), Duration::from_secs(2));
        for streak in 2..40 {
            assert!(slow.hold_with(streak, Some(Duration::MAX)) <= Duration::from_secs(2));
        }
    }

    #[test]
    fn an_answer_ends_the_streak() {
        let t = Throttle::new(policy());
        t.throttled(None);
        t.answered();
        assert_eq!(t.throttled(None), None, "streak restarted");
    }

    #[test]
    fn disabled_policy_never_holds() {
        let t = Throttle::new(ThrottlePolicy::disabled());
        for _ in 0..10 {
            assert_eq!(t.throttled(Some(Duration::from_secs(1))), None);
        }
        assert_eq!(t.held_for(), None);
    }
}
