//! HTTP basic authentication against bcrypt hashes (`basic_auth_users` of the web config).
//!
//! It owns the check of one `Authorization` header: decoding, the bcrypt verification (on the
//! blocking pool, one at a time, so a flood of wrong passwords cannot take every core) and the
//! cache of verified credentials (so a scrape with known-good credentials costs a hash, not a
//! bcrypt run). The slot is held until the bcrypt run itself ends, also when the client went
//! away meanwhile, and at most [`MAX_BCRYPT_WAITERS`] checks wait for it. It must never log or
//! print a password or a hash, and its `Debug` shows only user names.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use hyper::header::HeaderValue;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::secret::Secret;

/// The `WWW-Authenticate` value of a 401 (realm `dli_exporter`).
pub const CHALLENGE: &str = "Basic realm=\"dli_exporter\"";

/// Requests that may wait for the bcrypt slot; further unverified credentials are refused at once
/// (cached, good credentials never wait), so a flood of wrong passwords holds few connections.
pub const MAX_BCRYPT_WAITERS: usize = 32;

/// Salt and digest of the decoy hash (a valid bcrypt hash that no password is known for); its
/// cost is that of the configured hashes, so an unknown user name costs the same bcrypt run as
/// a known one and response times do not tell which user names exist.
const DECOY_SALT_AND_HASH: &str = "QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";
/// Cost of the decoy when no hash tells otherwise.
const DEFAULT_COST: u32 = 10;

/// The decoy hash with the highest cost among `hashes` (the slowest a known user can be).
fn decoy_hash<'a>(hashes: impl Iterator<Item = &'a str>) -> Secret {
    let cost = hashes
        .filter_map(|h| h.parse::<bcrypt::HashParts>().ok())
        .map(|p| p.get_cost())
        .max()
        .unwrap_or(DEFAULT_COST);
    Secret::new(format!("$2y${cost:02}${DECOY_SALT_AND_HASH}"))
}

/// Users and their bcrypt hashes, with a cache of credentials that verified.
pub struct BasicAuth {
    /// User name -> bcrypt hash.
    users: HashMap<String, Secret>,
    /// User name -> SHA-256 of (salt, user, password) that bcrypt accepted.
    verified: Mutex<HashMap<String, [u8; 32]>>,
    /// Random per process, so cached digests are useless outside it.
    salt: [u8; 32],
    /// One bcrypt run at a time.
    bcrypt_slot: Arc<Semaphore>,
    /// Checks waiting for `bcrypt_slot`, and bcrypt runs holding it (also those whose client
    /// has gone).
    bcrypt_waiters: Arc<AtomicUsize>,
    /// What an unknown user name is checked against.
    decoy: Secret,
}

/// Decrements the waiter count when dropped: when the check ends, or, once its bcrypt run has
/// started, when that run ends.
struct Waiter(Arc<AtomicUsize>);

impl Drop for Waiter {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.users.keys().collect();
        names.sort();
        f.debug_struct("BasicAuth")
            .field("users", &names)
            .field("hashes", &"<redacted>")
            .finish()
    }
}

impl BasicAuth {
    /// `users` maps user names to bcrypt hashes (validated by the web config loader).
    pub fn new(users: HashMap<String, Secret>) -> Self {
        let decoy = decoy_hash(users.values().map(Secret::expose));
        BasicAuth {
            users,
            verified: Mutex::new(HashMap::new()),
            salt: rand::random(),
            bcrypt_slot: Arc::new(Semaphore::new(1)),
            bcrypt_waiters: Arc::new(AtomicUsize::new(0)),
            decoy,
        }
    }

    /// Number of configured users.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    fn digest(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(user.as_bytes());
        h.update([0u8]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// True when `authorization` carries the credentials of a configured user.
    pub async fn check(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return false;
        };
        let digest = self.digest(&user, password.expose());
        let known = self.users.get(&user);
        let cached = self
            .verified
            .lock()
            .ok()
            .and_then(|m| m.get(&user).copied())
            .unwrap_or([0u8; 32]);
        let hit: bool = cached.ct_eq(&digest).into();
        if hit && known.is_some() {
            return true;
        }
        let waiter = Waiter(self.bcrypt_waiters.clone());
        if self.bcrypt_waiters.fetch_add(1, Ordering::AcqRel) >= MAX_BCRYPT_WAITERS {
            tracing::debug!("too many basic auth verifications waiting; refusing without one");
            return false;
        }
        let hash = known.unwrap_or(&self.decoy).clone();
        let Ok(slot) = self.bcrypt_slot.clone().acquire_owned().await else {
            return false;
        };
        // The slot and the waiter count go into the blocking task: a client that disconnects
        // drops this future, not the bcrypt run, which keeps both until it ends. Otherwise a
        // loop of wrong passwords and disconnects would start one run per request.
        let ok = tokio::task::spawn_blocking(move || {
            let ok = bcrypt::verify(password.expose(), hash.expose()).unwrap_or(false);
            drop(slot);
            drop(waiter);
            ok
        })
        .await
        .unwrap_or(false);
        let ok = ok && known.is_some();
        if ok && let Ok(mut m) = self.verified.lock() {
            m.insert(user, digest);
        }
        ok
    }
}

/// `Basic base64(user:password)`; `None` when absent or malformed.
fn parse_basic(value: &HeaderValue) -> Option<(String, Secret)> {
    let v = value.to_str().ok()?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), Secret::new(password)))
}

/// Whether `hash` parses as a bcrypt hash (without revealing it in errors).
pub fn is_bcrypt_hash(hash: &str) -> bool {
    hash.parse::<bcrypt::HashParts>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> HeaderValue {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {token}")).expect("header")
    }

    #[tokio::test]
    async fn verifies_caches_and_rejects() {
        let hash = bcrypt::hash("s3cret", 4).expect("hash");
        let auth = BasicAuth::new(HashMap::from([("alice".to_string(), Secret::new(hash))]));
        assert!(auth.check(Some(&header("alice", "s3cret"))).await);
        // Second time from the cache.
        assert!(auth.check(Some(&header("alice", "s3cret"))).await);
        assert!(!auth.check(Some(&header("alice", "wrong"))).await);
        assert!(!auth.check(Some(&header("bob", "s3cret"))).await);
        assert!(!auth.check(None).await);
        assert!(
            !auth
                .check(Some(&HeaderValue::from_static("Bearer x")))
                .await
        );
        assert!(
            !auth
                .check(Some(&HeaderValue::from_static("Basic !!!")))
                .await
        );
        let debug = format!("{auth:?}");
        assert!(debug.contains("alice") && !debug.contains("$2"), "{debug}");
    }

    #[test]
    fn decoy_is_a_bcrypt_hash_with_the_configured_cost() {
        let cost = |h: &Secret| {
            h.expose()
                .parse::<bcrypt::HashParts>()
                .expect("a bcrypt hash")
                .get_cost()
        };
        assert_eq!(cost(&decoy_hash(std::iter::empty())), DEFAULT_COST);
        let cheap = bcrypt::hash("x", 4).expect("hash");
        let dear = bcrypt::hash("y", 6).expect("hash");
        assert_eq!(cost(&decoy_hash([cheap.as_str()].into_iter())), 4);
        assert_eq!(
            cost(&decoy_hash([cheap.as_str(), dear.as_str()].into_iter())),
            6
        );
        let auth = BasicAuth::new(HashMap::from([("a".to_string(), Secret::new(cheap))]));
        assert_eq!(cost(&auth.decoy), 4);
        assert!(!is_bcrypt_hash("plain"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_gives_up_does_not_free_the_slot_before_its_bcrypt_ends() {
        // Cost 12: a run takes long enough (hundreds of ms) to look at it while it runs.
        let hash = bcrypt::hash("right", 12).expect("hash");
        let auth = Arc::new(BasicAuth::new(HashMap::from([(
            "alice".to_string(),
            Secret::new(hash),
        )])));
        // The client sends a wrong password and disconnects: the check's future is dropped.
        let wrong = header("alice", "wrong");
        let check = auth.check(Some(&wrong));
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(30), check)
                .await
                .is_err(),
            "a cost-12 bcrypt run ended within 30 ms"
        );
        assert_eq!(
            auth.bcrypt_slot.available_permits(),
            0,
            "the slot was freed while the abandoned bcrypt run goes on"
        );
        assert_eq!(auth.bcrypt_waiters.load(Ordering::Acquire), 1);
        // Once the run ends, the slot is free again.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while auth.bcrypt_slot.available_permits() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the slot never came back"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(auth.bcrypt_waiters.load(Ordering::Acquire), 0);
    }
}
