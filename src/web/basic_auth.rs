//! HTTP basic authentication against bcrypt hashes (`basic_auth_users` of the web config).
//!
//! It owns the check of one `Authorization` header: decoding, the bcrypt verification (on the
//! blocking pool, one at a time, so a flood of wrong passwords cannot take every core) and the
//! cache of verified credentials (so a scrape with known-good credentials costs a hash, not a
//! bcrypt run). It must never log or print a password or a hash, and its `Debug` shows only
//! user names.

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

/// A valid cost-10 bcrypt hash that no password is known for: an unknown user name costs the
/// same bcrypt run as a known one, so response times do not tell which user names exist.
const DECOY_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

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
    /// Requests waiting for or holding `bcrypt_slot`.
    bcrypt_waiters: AtomicUsize,
}

/// Decrements the waiter count however the check ends.
struct Waiter<'a>(&'a AtomicUsize);

impl Drop for Waiter<'_> {
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
        BasicAuth {
            users,
            verified: Mutex::new(HashMap::new()),
            salt: rand::random(),
            bcrypt_slot: Arc::new(Semaphore::new(1)),
            bcrypt_waiters: AtomicUsize::new(0),
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
        let waiter = Waiter(&self.bcrypt_waiters);
        if self.bcrypt_waiters.fetch_add(1, Ordering::AcqRel) >= MAX_BCRYPT_WAITERS {
            tracing::debug!("too many basic auth verifications waiting; refusing without one");
            return false;
        }
        let hash = Secret::new(known.map(|h| h.expose()).unwrap_or(DECOY_HASH));
        let Ok(_slot) = self.bcrypt_slot.clone().acquire_owned().await else {
            return false;
        };
        let ok = tokio::task::spawn_blocking(move || {
            bcrypt::verify(password.expose(), hash.expose()).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        drop(waiter);
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
    fn decoy_is_a_bcrypt_hash() {
        assert!(is_bcrypt_hash(DECOY_HASH));
        assert!(!is_bcrypt_hash("plain"));
    }
}
