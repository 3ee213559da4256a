//! Keyless credentials in the simulator: the ECS/CCE metadata service (session token, agency
//! keys) and IAM's OIDC exchange (id token to unscoped token to temporary keys), issuing keys
//! with a short, configurable lifetime that the signature check then accepts until they expire.
//!
//! Owns the issued session tokens, unscoped tokens and temporary keys, the accepted id tokens,
//! and the outage switches. It answers with plain [`Answer`]s that `server.rs` turns into HTTP;
//! it must not log or echo any token or key.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{Inner, Simulator, auth, bump, lock};
use crate::secret::Secret;

/// The identity provider [`super::SimConfig::default`] accepts id tokens from.
pub const DEMO_IDP_ID: &str = "dli-exporter-cce";
/// An id token [`super::SimConfig::default`] accepts.
pub const DEMO_ID_TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImRlbW8ifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6bW9uaXRvcmluZzpkbGktZXhwb3J0ZXIifQ.ZGVtby1zaWduYXR1cmU";
/// The text of the metadata service's 401 for an instance without agency.
pub const NO_AGENCY_MESSAGE: &str =
    "Please configure Cloud Service Agency first, then the temporary credentials can be obtained";

/// What requests to an endpoint group get while it is down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outage {
    /// The connection is reset without an answer.
    Reset,
    /// An error answer with this status.
    Status(u16),
    /// No answer until the client gives up.
    Hang,
}

/// Which keyless endpoints an outage affects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Metadata,
    Oidc,
}

/// A keyless endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    SessionToken,
    SecurityKey,
    IdToken,
    SecurityTokens,
}

impl Endpoint {
    fn service(self) -> Service {
        match self {
            Endpoint::SessionToken | Endpoint::SecurityKey => Service::Metadata,
            Endpoint::IdToken | Endpoint::SecurityTokens => Service::Oidc,
        }
    }

    /// The one method the endpoint answers.
    pub(crate) fn method(self) -> &'static str {
        match self {
            Endpoint::SessionToken => "PUT",
            Endpoint::SecurityKey => "GET",
            Endpoint::IdToken | Endpoint::SecurityTokens => "POST",
        }
    }
}

/// The keyless endpoint at `path`, if it is one.
pub(crate) fn route(path: &str) -> Option<Endpoint> {
    match path {
        "/meta-data/latest/api/token" => Some(Endpoint::SessionToken),
        "/openstack/latest/securitykey" => Some(Endpoint::SecurityKey),
        "/v3.0/OS-AUTH/id-token/tokens" => Some(Endpoint::IdToken),
        "/v3.0/OS-CREDENTIAL/securitytokens" => Some(Endpoint::SecurityTokens),
        _ => None,
    }
}

/// What `server.rs` sends back: status, content type, body and an `X-Subject-Token` (the id
/// token exchange); or a reset connection, or no answer at all.
#[derive(Debug)]
pub(crate) enum Answer {
    Respond(u16, &'static str, Vec<u8>, Option<String>),
    Reset,
    Hang,
}

fn json_answer(status: u16, body: Value) -> Answer {
    Answer::Respond(
        status,
        "application/json",
        body.to_string().into_bytes(),
        None,
    )
}

fn iam_error(status: u16, code: &str, message: &str) -> Answer {
    json_answer(
        status,
        json!({"error": {"code": code, "message": message, "title": "Unauthorized"}}),
    )
}

/// Temporary keys the simulator issued.
#[derive(Debug)]
pub(crate) struct IssuedKeys {
    pub(crate) secret_key: Secret,
    pub(crate) security_token: Secret,
    pub(crate) expires: OffsetDateTime,
}

/// Everything the keyless endpoints remember.
#[derive(Default)]
pub(crate) struct KeylessState {
    /// Session token -> end of its lifetime.
    sessions: Mutex<HashMap<String, tokio::time::Instant>>,
    /// Unscoped token -> end of its lifetime.
    unscoped: Mutex<HashMap<String, tokio::time::Instant>>,
    /// Access key -> issued keys.
    pub(crate) keys: Mutex<HashMap<String, IssuedKeys>>,
    /// Accepted id tokens; `None`: [`DEMO_ID_TOKEN`] only.
    id_tokens: Mutex<Option<Vec<Secret>>>,
    /// Down until then, with that outage.
    metadata_down: Mutex<Option<(tokio::time::Instant, Outage)>>,
    oidc_down: Mutex<Option<(tokio::time::Instant, Outage)>>,
    pub(crate) counters: KeylessCounters,
}

#[derive(Default)]
pub(crate) struct KeylessCounters {
    pub(crate) session_token_requests: std::sync::atomic::AtomicU64,
    pub(crate) security_key_requests: std::sync::atomic::AtomicU64,
    pub(crate) oidc_requests: std::sync::atomic::AtomicU64,
    pub(crate) keys_issued: std::sync::atomic::AtomicU64,
    pub(crate) expired_key_rejections: std::sync::atomic::AtomicU64,
}

impl KeylessState {
    /// Takes `service` down for `duration` (`Duration::ZERO` brings it back up).
    pub(crate) fn set_outage(&self, service: Service, duration: Duration, outage: Outage) {
        let slot = match service {
            Service::Metadata => &self.metadata_down,
            Service::Oidc => &self.oidc_down,
        };
        *lock(slot) = Some((tokio::time::Instant::now() + duration, outage));
    }

    fn outage(&self, service: Service) -> Option<Outage> {
        let slot = match service {
            Service::Metadata => &self.metadata_down,
            Service::Oidc => &self.oidc_down,
        };
        lock(slot)
            .filter(|(until, _)| tokio::time::Instant::now() < *until)
            .map(|(_, outage)| outage)
    }

    pub(crate) fn accept_id_tokens(&self, tokens: Vec<Secret>) {
        *lock(&self.id_tokens) = Some(tokens);
    }

    fn id_token_accepted(&self, token: &str) -> bool {
        match &*lock(&self.id_tokens) {
            Some(list) => list.iter().fold(false, |ok, t| {
                ok | auth::ct_eq(t.expose().as_bytes(), token.as_bytes())
            }),
            None => auth::ct_eq(DEMO_ID_TOKEN.as_bytes(), token.as_bytes()),
        }
    }

    pub(crate) fn expire_sessions(&self) {
        lock(&self.sessions).clear();
    }

    pub(crate) fn revoke_keys(&self) {
        lock(&self.keys).clear();
    }

    /// Every secret issued so far: session tokens, unscoped tokens, access keys, secret keys,
    /// security tokens.
    pub(crate) fn issued_secrets(&self) -> Vec<Secret> {
        let mut out: Vec<Secret> = lock(&self.sessions).keys().map(Secret::new).collect();
        out.extend(lock(&self.unscoped).keys().map(Secret::new));
        for (ak, keys) in lock(&self.keys).iter() {
            out.push(Secret::new(ak.as_str()));
            out.push(keys.secret_key.clone());
            out.push(keys.security_token.clone());
        }
        out
    }
}

/// A random string of `len` URL-safe characters after `prefix`.
fn random_text(inner: &Inner, prefix: &str, len: usize) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = lock(&inner.misc_rng);
    let mut out = String::with_capacity(prefix.len() + len);
    out.push_str(prefix);
    for _ in 0..len {
        out.push(char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]));
    }
    out
}

/// Issues temporary keys valid for `lifetime`, in the metadata service's answer shape.
fn issue_keys(inner: &Inner, lifetime: Duration) -> Value {
    let access = random_text(inner, "TMP", 17)
        .to_ascii_uppercase()
        .replace(['-', '_'], "X");
    let secret = random_text(inner, "", 40);
    let token = random_text(inner, "gQ", 1024);
    let expires = OffsetDateTime::now_utc() + lifetime;
    let state = &inner.keyless;
    lock(&state.keys).insert(
        access.clone(),
        IssuedKeys {
            secret_key: Secret::new(secret.as_str()),
            security_token: Secret::new(token.as_str()),
            expires,
        },
    );
    bump(&state.counters.keys_issued, 1);
    json!({"credential": {
        "access": access,
        "secret": secret,
        "securitytoken": token,
        "expires_at": auth::iam_time(expires),
    }})
}

/// Answers one keyless request (the method was checked by `server.rs`).
pub(crate) fn handle(
    inner: &Inner,
    endpoint: Endpoint,
    headers: &hyper::HeaderMap,
    body: &[u8],
) -> Answer {
    let state = &inner.keyless;
    let counter = match endpoint {
        Endpoint::SessionToken => &state.counters.session_token_requests,
        Endpoint::SecurityKey => &state.counters.security_key_requests,
        Endpoint::IdToken | Endpoint::SecurityTokens => &state.counters.oidc_requests,
    };
    bump(counter, 1);
    match state.outage(endpoint.service()) {
        Some(Outage::Reset) => return Answer::Reset,
        Some(Outage::Hang) => return Answer::Hang,
        Some(Outage::Status(status)) => {
            return json_answer(status, json!({"message": "service unavailable"}));
        }
        None => {}
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let config = &inner.config;
    match endpoint {
        Endpoint::SessionToken => {
            if !config.metadata_session_tokens {
                return json_answer(404, json!({"message": "Not Found"}));
            }
            let ttl = header("x-metadata-token-ttl-seconds")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|ttl| (1..=21_600).contains(ttl));
            let Some(ttl) = ttl else {
                return json_answer(
                    400,
                    json!({"message": "X-Metadata-Token-Ttl-Seconds must be 1 to 21600"}),
                );
            };
            let token = random_text(inner, "mdt-", 48);
            lock(&state.sessions).insert(
                token.clone(),
                tokio::time::Instant::now() + Duration::from_secs(ttl),
            );
            Answer::Respond(200, "text/plain", token.into_bytes(), None)
        }
        Endpoint::SecurityKey => {
            match header("x-metadata-token") {
                Some(token) => {
                    let valid = lock(&state.sessions)
                        .get(token)
                        .is_some_and(|until| tokio::time::Instant::now() < *until);
                    if !valid {
                        return json_answer(
                            401,
                            json!({"message": "Unauthorized: the metadata token is invalid or expired"}),
                        );
                    }
                }
                None if config.metadata_session_tokens
                    && config.metadata_requires_session_token =>
                {
                    return json_answer(
                        401,
                        json!({"message": "Unauthorized: X-Metadata-Token is required"}),
                    );
                }
                None => {}
            }
            if !config.agency {
                return json_answer(401, json!({"message": NO_AGENCY_MESSAGE}));
            }
            json_answer(200, issue_keys(inner, config.temporary_key_lifetime))
        }
        Endpoint::IdToken => {
            let Ok(req) = serde_json::from_slice::<Value>(body) else {
                return iam_error(400, "IAM.0011", "The request body is not valid JSON.");
            };
            if header("x-idp-id") != Some(config.oidc_idp_id.as_str()) {
                return iam_error(404, "IAM.0003", "The identity provider does not exist.");
            }
            let Some(id_token) = req["auth"]["id_token"]["id"].as_str() else {
                return iam_error(400, "IAM.0011", "auth.id_token.id is required.");
            };
            if !state.id_token_accepted(id_token) {
                return iam_error(401, "IAM.0025", "The id token is invalid or expired.");
            }
            let unscoped = random_text(inner, "MII", 1536);
            let lifetime = Duration::from_secs(24 * 3600);
            lock(&state.unscoped).insert(unscoped.clone(), tokio::time::Instant::now() + lifetime);
            let expires = OffsetDateTime::now_utc() + lifetime;
            let body =
                json!({"token": {"expires_at": auth::iam_time(expires), "methods": ["mapped"]}});
            Answer::Respond(
                201,
                "application/json",
                body.to_string().into_bytes(),
                Some(unscoped),
            )
        }
        Endpoint::SecurityTokens => {
            let Ok(req) = serde_json::from_slice::<Value>(body) else {
                return iam_error(400, "IAM.0011", "The request body is not valid JSON.");
            };
            let identity = &req["auth"]["identity"];
            let token_method = identity["methods"]
                .as_array()
                .is_some_and(|m| m.iter().any(|x| x == "token"));
            let token = identity["token"]["id"].as_str().or(header("x-auth-token"));
            let (true, Some(token)) = (token_method, token) else {
                return iam_error(400, "IAM.0011", "A token identity is required.");
            };
            let valid = lock(&state.unscoped)
                .get(token)
                .is_some_and(|until| tokio::time::Instant::now() < *until);
            if !valid {
                return iam_error(401, "IAM.0026", "The token is invalid or expired.");
            }
            let asked = identity["token"]["duration_seconds"]
                .as_u64()
                .map_or(Duration::from_secs(900), Duration::from_secs);
            let lifetime = asked.min(config.temporary_key_lifetime);
            json_answer(201, issue_keys(inner, lifetime))
        }
    }
}

impl KeylessState {
    /// The secret key of issued temporary keys, checked against the request's security token:
    /// `None` when this access key was never issued, `Err` with an APIG-style message when the
    /// keys are expired or presented without their token.
    pub(crate) fn secret_for(
        &self,
        access_key: &str,
        security_token: Option<&str>,
    ) -> Option<Result<Secret, &'static str>> {
        let keys = lock(&self.keys);
        let issued = keys.get(access_key)?;
        let Some(token) = security_token else {
            return Some(Err(
                "Incorrect IAM authentication information: x-security-token not found in header",
            ));
        };
        if !auth::ct_eq(issued.security_token.expose().as_bytes(), token.as_bytes()) {
            return Some(Err(
                "Incorrect IAM authentication information: the security token does not match the access key",
            ));
        }
        if OffsetDateTime::now_utc() >= issued.expires {
            bump(&self.counters.expired_key_rejections, 1);
            return Some(Err(
                "Incorrect IAM authentication information: the security token has expired",
            ));
        }
        Some(Ok(issued.secret_key.clone()))
    }
}

/// The keyless knobs of the simulator.
impl Simulator {
    /// Takes the metadata service or the OIDC exchange down for `duration`: every request to it
    /// gets `outage` meanwhile (`Duration::ZERO` ends an outage at once).
    pub fn outage(&self, service: Service, duration: Duration, outage: Outage) {
        self.inner.keyless.set_outage(service, duration, outage);
    }

    /// The id tokens the OIDC exchange accepts from now on (instead of [`DEMO_ID_TOKEN`]).
    pub fn accept_id_tokens(&self, tokens: &[&str]) {
        self.inner
            .keyless
            .accept_id_tokens(tokens.iter().map(|t| Secret::new(*t)).collect());
    }

    /// Every temporary key pair issued so far is now unknown (401 `APIGW.0301`), as if revoked
    /// before its expiry.
    pub fn revoke_temporary_keys(&self) {
        self.inner.keyless.revoke_keys();
    }

    /// Every metadata session token issued so far is now rejected with 401, as if expired.
    pub fn expire_metadata_sessions(&self) {
        self.inner.keyless.expire_sessions();
    }

    /// Every secret the keyless endpoints issued: session tokens, unscoped tokens, temporary
    /// access keys, secret keys and security tokens (for tests that check none shows up in logs
    /// or metrics).
    pub fn issued_keyless_secrets(&self) -> Vec<Secret> {
        self.inner.keyless.issued_secrets()
    }
}
