//! Temporary credentials of one project (`auth.kind = "metadata"` or `"oidc"`): fetched on first
//! use, shared by every request of the project, refreshed ahead of their expiry
//! (docs/architecture.md, "Temporary credentials").
//!
//! It owns the refresh rule (40 minutes before `expires_at`, or half-way through a lifetime
//! shorter than 80 minutes), the single flight (one fetch at a time, whoever asks), and what a
//! failed refresh does: the current keys stay in use until shortly before they expire, the
//! failure is logged and retried with backoff. Requests are never held up by a refresh while the
//! current keys are usable: it runs in the background. It must never log a key or token.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::Rng;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::aksk::AkSkSigner;
use super::keys::{MAX_ANSWER_BYTES, TemporaryKeys};
use super::metadata::{METADATA_TIMEOUT, MetadataService};
use super::oidc::OidcExchange;
use crate::config::Credentials;
use crate::dli::error::{DliError, Operation};
use crate::dli::http::{self, ClientBuildError, ClientOptions};
use crate::dli::transport::{RequestObserver, Transport};

/// Keys living at least this long are refreshed this long before they expire (the SDK's rule).
pub const REFRESH_AHEAD: Duration = Duration::from_secs(40 * 60);
/// Keys living less than this (as seen when fetched) are refreshed half-way through instead.
pub const SHORT_LIFETIME: Duration = Duration::from_secs(80 * 60);
/// A longer lifetime is not believed: keys are treated as living this long (no arithmetic on an
/// absurd `expires_at`).
pub const MAX_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// Keys are not used during the last min(this, a tenth of their lifetime), so that a request
/// signed just before the expiry does not arrive after it.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(60);
/// First and longest wait after a failed fetch.
pub const RETRY_BASE: Duration = Duration::from_secs(1);
pub const RETRY_CAP: Duration = Duration::from_secs(60);
/// Keys DLI rejected are replaced at once only when they are at least this old, or a quarter of
/// their usable time for short-lived keys (a rejection of fresh keys is not about their age, and
/// fetching again at every request would not help).
pub const MIN_AGE_TO_REPLACE: Duration = Duration::from_secs(30);

/// When keys living `lifetime` (as seen when fetched) are due for refresh, and for how long they
/// may be used, both counted from the fetch.
pub fn schedule(lifetime: Duration) -> (Duration, Duration) {
    let lifetime = lifetime.min(MAX_LIFETIME);
    let refresh_after = if lifetime >= SHORT_LIFETIME {
        lifetime.saturating_sub(REFRESH_AHEAD)
    } else {
        lifetime / 2
    };
    let usable_for = lifetime.saturating_sub((lifetime / 10).min(EXPIRY_MARGIN));
    (refresh_after, usable_for)
}

/// The wait before another fetch after `failures` failed ones in a row: doubling from
/// [`RETRY_BASE`] up to [`RETRY_CAP`], with equal jitter; while keys are still usable for `left`,
/// at most half of that (so the retry comes before they run out).
pub fn retry_delay(failures: u32, left: Option<Duration>) -> Duration {
    let doubling = 1u32
        .checked_shl(failures.saturating_sub(1))
        .unwrap_or(u32::MAX);
    let full = RETRY_BASE.saturating_mul(doubling).min(RETRY_CAP);
    let half = full / 2;
    let jitter = rand::rng().random_range(Duration::ZERO..=half);
    let delay = half + jitter;
    match left {
        Some(left) => delay.min((left / 2).max(Duration::from_millis(100))),
        None => delay,
    }
}

/// Where the keys come from.
pub enum Fetcher {
    Metadata(MetadataService),
    Oidc(OidcExchange),
}

impl Fetcher {
    /// The fetcher of keyless `credentials` (`None` for the kinds with stored secrets). The OIDC
    /// exchange goes through `transport` (the project's: its proxy and CA apply to IAM); the
    /// metadata service gets a client of its own (no proxy, 3 s timeouts).
    pub fn for_credentials(
        credentials: &Credentials,
        project_id: &str,
        options: &ClientOptions,
        transport: &Transport,
        observer: Arc<dyn RequestObserver>,
    ) -> Result<Option<Fetcher>, ClientBuildError> {
        Ok(match credentials {
            Credentials::Metadata { endpoint } => {
                let client = http::build_metadata(project_id, options, METADATA_TIMEOUT)?;
                let transport = Transport::new(
                    client,
                    observer,
                    Arc::new(tokio::sync::Semaphore::new(1)),
                    MAX_ANSWER_BYTES,
                    METADATA_TIMEOUT.saturating_mul(2),
                );
                Some(Fetcher::Metadata(MetadataService::new(endpoint, transport)))
            }
            Credentials::Oidc {
                iam_endpoint,
                idp_id,
                id_token_file,
            } => Some(Fetcher::Oidc(OidcExchange::new(
                iam_endpoint,
                idp_id,
                id_token_file.clone(),
                transport.clone(),
            ))),
            Credentials::AkSk { .. } | Credentials::Token { .. } => None,
        })
    }

    fn operation(&self) -> Operation {
        match self {
            Fetcher::Metadata(_) => Operation::Metadata,
            Fetcher::Oidc(_) => Operation::Oidc,
        }
    }

    /// One fetch of keys, uncached (for a one-off use such as the project id lookup; requests
    /// go through a [`KeySource`]).
    pub async fn fetch(&self) -> Result<TemporaryKeys, DliError> {
        match self {
            Fetcher::Metadata(m) => m.fetch().await,
            Fetcher::Oidc(o) => o.fetch().await,
        }
    }
}

/// Keys in use.
struct Current {
    signer: Arc<AkSkSigner>,
    /// From then on a rejection by DLI drops these keys.
    replaceable_at: Instant,
    refresh_at: Instant,
    usable_until: Instant,
}

#[derive(Default)]
struct State {
    current: Option<Current>,
    /// Fetches ended so far (successful or not): a waiter that sees it change knows another
    /// caller's fetch has answered for it.
    attempts: u64,
    /// Failed fetches in a row.
    failures: u32,
    /// No fetch before this after a failure.
    retry_at: Option<Instant>,
    last_error: Option<DliError>,
    /// A background refresh is under way.
    background: bool,
}

/// The temporary keys of one project.
pub struct KeySource {
    fetcher: Fetcher,
    project_id: String,
    state: Mutex<State>,
    /// Held by the one fetch under way.
    flight: tokio::sync::Mutex<()>,
    fetched: AtomicU64,
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySource")
            .field("operation", &self.fetcher.operation())
            .field("project_id", &self.project_id)
            .finish_non_exhaustive()
    }
}

impl KeySource {
    pub fn new(fetcher: Fetcher, project_id: &str) -> Self {
        KeySource {
            fetcher,
            project_id: project_id.to_string(),
            state: Mutex::new(State::default()),
            flight: tokio::sync::Mutex::new(()),
            fetched: AtomicU64::new(0),
        }
    }

    /// How many keys were obtained so far.
    pub fn keys_fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A signer with usable keys. Keys due for refresh are still handed out while a background
    /// refresh runs; only when none are usable does the caller wait for a fetch (one for all
    /// callers), and right after a failed one it gets that failure at once.
    pub async fn signer(self: &Arc<Self>) -> Result<Arc<AkSkSigner>, DliError> {
        let seen = {
            let mut state = self.lock();
            let now = Instant::now();
            if let Some(current) = state.current.as_ref().filter(|c| now < c.usable_until) {
                let signer = current.signer.clone();
                let due = now >= current.refresh_at;
                if due && !state.background && state.retry_at.is_none_or(|at| now >= at) {
                    state.background = true;
                    let this = Arc::clone(self);
                    tokio::spawn(async move {
                        let _ = this.refresh(None).await;
                    });
                }
                return Ok(signer);
            }
            if let (Some(at), Some(e)) = (state.retry_at, &state.last_error)
                && now < at
            {
                return Err(e.clone());
            }
            state.attempts
        };
        self.refresh(Some(seen)).await
    }

    /// DLI rejected a request signed by `signer` (401): true when the caller should send it once
    /// more, with the keys [`KeySource::signer`] gives next. Those keys are dropped when they are
    /// still the current ones and old enough that new ones may help; keys already replaced (by a
    /// refresh, or another request's rejection) mean a retry with the new ones.
    pub fn rejected(&self, signer: &Arc<AkSkSigner>) -> bool {
        let mut state = self.lock();
        let Some(current) = state.current.as_ref() else {
            return true;
        };
        if !Arc::ptr_eq(&current.signer, signer) {
            return true;
        }
        if Instant::now() < current.replaceable_at {
            return false;
        }
        state.current = None;
        state.retry_at = None;
        tracing::warn!(project_id = %self.project_id, operation = self.fetcher.operation().as_str(),
            "DLI rejected the temporary credentials before their expiry; fetching new ones");
        true
    }

    /// One fetch (waiting for any other under way). `seen`: the attempt count when a foreground
    /// caller found no usable keys; if a fetch ended meanwhile, its outcome is the answer.
    async fn refresh(&self, seen: Option<u64>) -> Result<Arc<AkSkSigner>, DliError> {
        let _flight = self.flight.lock().await;
        if let Some(seen) = seen {
            let state = self.lock();
            if state.attempts != seen {
                let now = Instant::now();
                if let Some(c) = state.current.as_ref().filter(|c| now < c.usable_until) {
                    return Ok(c.signer.clone());
                }
                if let Some(e) = &state.last_error {
                    return Err(e.clone());
                }
            }
        }
        let result = self.fetcher.fetch().await;
        let now = Instant::now();
        let mut state = self.lock();
        state.attempts = state.attempts.wrapping_add(1);
        if seen.is_none() {
            state.background = false;
        }
        let operation = self.fetcher.operation().as_str();
        match result {
            Ok(keys) => {
                let lifetime = Duration::try_from(keys.expires_at - OffsetDateTime::now_utc())
                    .unwrap_or(Duration::ZERO);
                let (refresh_after, usable_for) = schedule(lifetime);
                let signer = Arc::new(AkSkSigner::new(
                    keys.access_key,
                    keys.secret_key,
                    Some(keys.security_token),
                ));
                // Both sums are bounded by MAX_LIFETIME; saturate rather than panic regardless.
                let usable_until = now.checked_add(usable_for).unwrap_or(now);
                let refresh_at = now.checked_add(refresh_after).unwrap_or(now);
                let replaceable_at = now
                    .checked_add(MIN_AGE_TO_REPLACE.min(usable_for / 4))
                    .unwrap_or(now);
                let first = state.current.is_none();
                state.current = Some(Current {
                    signer: signer.clone(),
                    replaceable_at,
                    refresh_at,
                    usable_until,
                });
                state.failures = 0;
                state.retry_at = None;
                state.last_error = None;
                self.fetched.fetch_add(1, Ordering::Relaxed);
                let expires_at = keys.expires_at.format(&Rfc3339).unwrap_or_default();
                if first {
                    tracing::info!(project_id = %self.project_id, operation, %expires_at,
                        refresh_in_s = refresh_after.as_secs(), "temporary credentials obtained");
                } else {
                    tracing::debug!(project_id = %self.project_id, operation, %expires_at,
                        refresh_in_s = refresh_after.as_secs(), "temporary credentials refreshed");
                }
                Ok(signer)
            }
            Err(e) => {
                state.failures = state.failures.saturating_add(1);
                let left = state
                    .current
                    .as_ref()
                    .and_then(|c| c.usable_until.checked_duration_since(now))
                    .filter(|left| !left.is_zero());
                let delay = retry_delay(state.failures, left);
                state.retry_at = now.checked_add(delay);
                state.last_error = Some(e.clone());
                match left {
                    Some(left) => tracing::warn!(project_id = %self.project_id, operation,
                        error = %e, failures = state.failures, usable_for_s = left.as_secs(),
                        retry_in_ms = delay.as_millis() as u64,
                        "refreshing the temporary credentials failed; the current ones stay in use until they expire"),
                    None => tracing::warn!(project_id = %self.project_id, operation,
                        error = %e, failures = state.failures,
                        retry_in_ms = delay.as_millis() as u64,
                        "cannot obtain temporary credentials"),
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn long_lifetimes_refresh_forty_minutes_ahead() {
        let (refresh, usable) = schedule(24 * 60 * MIN);
        assert_eq!(refresh, 24 * 60 * MIN - 40 * MIN);
        assert_eq!(usable, 24 * 60 * MIN - MIN);
        let (refresh, _) = schedule(80 * MIN);
        assert_eq!(refresh, 40 * MIN);
    }

    #[test]
    fn short_lifetimes_refresh_half_way() {
        let (refresh, usable) = schedule(79 * MIN);
        assert_eq!(refresh, 79 * MIN / 2);
        assert_eq!(usable, 78 * MIN);
        let (refresh, usable) = schedule(Duration::from_secs(4));
        assert_eq!(refresh, Duration::from_secs(2));
        assert_eq!(usable, Duration::from_millis(3600));
        assert_eq!(schedule(Duration::ZERO), (Duration::ZERO, Duration::ZERO));
    }

    #[test]
    fn absurd_lifetimes_are_capped_without_overflow() {
        let (refresh, usable) = schedule(Duration::MAX);
        assert_eq!(refresh, MAX_LIFETIME - REFRESH_AHEAD);
        assert_eq!(usable, MAX_LIFETIME - EXPIRY_MARGIN);
        let now = Instant::now();
        assert!(now.checked_add(usable).is_some());
    }

    #[test]
    fn retries_back_off_and_come_before_the_keys_run_out() {
        for failures in 0..40 {
            let d = retry_delay(failures, None);
            let full = RETRY_BASE
                .saturating_mul(
                    1u32.checked_shl(failures.saturating_sub(1))
                        .unwrap_or(u32::MAX),
                )
                .min(RETRY_CAP);
            assert!(d >= full / 2 && d <= full, "{failures}: {d:?}");
        }
        assert!(retry_delay(u32::MAX, None) <= RETRY_CAP);
        assert!(retry_delay(10, Some(Duration::from_secs(4))) <= Duration::from_secs(2));
        assert_eq!(
            retry_delay(10, Some(Duration::from_millis(10))),
            Duration::from_millis(100)
        );
    }
}
