//! IAM token auth (docs/dli-api.md, "IAM tokens"): a password login scoped to one project, the token taken
//! from `X-Subject-Token`, cached and refreshed before it expires.
//!
//! It owns the cache and the refresh rule (docs/architecture.md, "Failures, retries and hold-off": refresh when less than
//! min(5 minutes, 10% of the lifetime) remains; drop on a 401). Concurrent callers share one
//! refresh. It must never log the password or a token.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::dli::error::{DliError, Operation, bounded_text};
use crate::dli::transport::{RawResponse, Transport};
use crate::secret::Secret;
use zeroize::Zeroize;

/// The project a token is scoped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenScope {
    /// By id: the usual case.
    ProjectId(String),
    /// By name (a region id): how the project id of a region is found with token auth, since
    /// IAM's answer names the project it scoped the token to.
    ProjectName(String),
}

/// Where and as whom to log in.
pub struct TokenLogin {
    /// Base URL of IAM, e.g. `https://iam.cn-north-4.myhuaweicloud.com`.
    pub iam_endpoint: String,
    pub domain_name: String,
    pub user_name: String,
    pub password: Secret,
    pub scope: TokenScope,
}

struct Cached {
    token: Secret,
    refresh_at: Instant,
}

/// A project-scoped IAM token, fetched on demand and shared by all requests of the project.
pub struct TokenSource {
    login: TokenLogin,
    url: String,
    transport: Transport,
    cached: Mutex<Option<Cached>>,
    refresh: tokio::sync::Mutex<()>,
    fetched: AtomicU64,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("url", &self.url)
            .field("user_name", &self.login.user_name)
            .field("domain_name", &self.login.domain_name)
            .field("password", &self.login.password)
            .finish()
    }
}

/// Where the password sits in the login body.
const PASSWORD_POINTER: &str = "/auth/identity/password/user/password";

/// The login body as bytes that are zeroed when the HTTP client drops them, with the password
/// copy inside `body` zeroed at once: no plaintext copy of the password outlives the request.
/// `field_bytes` is the length of the strings in it: with JSON escaping at most 6 bytes each, it
/// gives room for the whole body up front, so the buffer never reallocates (a reallocation would
/// free an unzeroed copy).
fn zeroized_json(
    mut body: serde_json::Value,
    field_bytes: usize,
) -> Result<reqwest::Body, DliError> {
    let size_hint = 1024 + 6 * field_bytes;
    let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(size_hint));
    let written = serde_json::to_writer(&mut *buf, &body);
    if let Some(serde_json::Value::String(password)) = body.pointer_mut(PASSWORD_POINTER) {
        password.zeroize();
    }
    written.map_err(|e| DliError::Request {
        operation: Operation::IamToken,
        url: String::new(),
        message: format!("cannot encode the IAM login body: {e}"),
    })?;
    Ok(reqwest::Body::from(bytes::Bytes::from_owner(buf)))
}

impl TokenSource {
    pub fn new(login: TokenLogin, transport: Transport) -> Self {
        let url = format!(
            "{}/v3/auth/tokens",
            login.iam_endpoint.trim_end_matches('/')
        );
        TokenSource {
            login,
            url,
            transport,
            cached: Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
            fetched: AtomicU64::new(0),
        }
    }

    /// How many tokens this source has obtained from IAM.
    pub fn tokens_fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    /// A valid token: the cached one, or a new one when it is missing or due for refresh.
    pub async fn token(&self) -> Result<Secret, DliError> {
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        let _refreshing = self.refresh.lock().await;
        // Another caller may have refreshed while this one waited.
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        let (token, lifetime, _) = self.fetch().await?;
        let now = Instant::now();
        // IAM says when the token expires; a date centuries ahead must not overflow the clock
        // (the token is then refreshed only when DLI rejects it).
        let refresh_at = now
            .checked_add(lifetime.saturating_sub(refresh_margin(lifetime)))
            .unwrap_or(now + Duration::from_secs(24 * 3600));
        self.fetched.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut c) = self.cached.lock() {
            *c = Some(Cached {
                token: token.clone(),
                refresh_at,
            });
        }
        Ok(token)
    }

    /// Drops the cached token if it is still `rejected` (DLI answered 401 with it).
    pub fn invalidate(&self, rejected: &Secret) {
        if let Ok(mut c) = self.cached.lock()
            && c.as_ref().is_some_and(|cached| &cached.token == rejected)
        {
            *c = None;
        }
    }

    fn fresh(&self) -> Option<Secret> {
        let c = self.cached.lock().ok()?;
        c.as_ref()
            .filter(|cached| Instant::now() < cached.refresh_at)
            .map(|cached| cached.token.clone())
    }

    /// Logs in once and returns the id of the project IAM scoped the token to (`token.project.id`
    /// of the answer): with [`TokenScope::ProjectName`] this is the project id of that name.
    pub async fn scoped_project_id(&self) -> Result<String, DliError> {
        let (_, _, project_id) = self.fetch().await?;
        project_id.ok_or_else(|| DliError::Decode {
            operation: Operation::IamToken,
            url: self.url.clone(),
            status: 0,
            message: "the token answer names no token.project.id".into(),
            request_id: None,
        })
    }

    async fn fetch(&self) -> Result<(Secret, Duration, Option<String>), DliError> {
        let (scope, scope_value) = match &self.login.scope {
            TokenScope::ProjectId(id) => ("id", id.as_str()),
            TokenScope::ProjectName(name) => ("name", name.as_str()),
        };
        let field_bytes = self.login.user_name.len()
            + self.login.password.expose().len()
            + self.login.domain_name.len()
            + scope_value.len();
        let body = serde_json::json!({
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {
                        "name": self.login.user_name,
                        "password": self.login.password.expose(),
                        "domain": {"name": self.login.domain_name},
                    }},
                },
                "scope": {"project": {scope: scope_value}},
            }
        });
        let request = self
            .transport
            .http()
            .post(&self.url)
            .header("Content-Type", "application/json;charset=utf8")
            .body(zeroized_json(body, field_bytes)?);
        let url = self.url.clone();
        self.transport
            .call(Operation::IamToken, &self.url, request, |raw| {
                let project_id = token_project_id(&raw.body);
                parse_token_response(raw, &url).map(|(t, life)| (t, life, project_id))
            })
            .await
    }
}

/// `token.project.id` of a token answer, when it is a string.
fn token_project_id(body: &[u8]) -> Option<String> {
    let body: serde_json::Value = serde_json::from_slice(body).ok()?;
    body.pointer("/token/project/id")?
        .as_str()
        .map(str::to_string)
}

/// Refresh this long before expiry: min(5 minutes, 10% of the lifetime).
pub fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(300))
}

fn parse_token_response(raw: RawResponse, url: &str) -> Result<(Secret, Duration), DliError> {
    if !(200..300).contains(&raw.status) {
        return Err(raw.error(Operation::IamToken, url));
    }
    let decode = |message: String| DliError::Decode {
        operation: Operation::IamToken,
        url: url.to_string(),
        status: raw.status,
        message,
        request_id: raw.request_id(),
    };
    let token = raw
        .headers
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .map(Secret::new)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| decode("no X-Subject-Token header in the IAM answer".into()))?;
    let body: serde_json::Value = serde_json::from_slice(&raw.body)
        .map_err(|e| decode(format!("token body is not JSON: {e}")))?;
    let expires_at = body
        .pointer("/token/expires_at")
        .and_then(|v| v.as_str())
        .ok_or_else(|| decode("token.expires_at missing".into()))?;
    // The value comes from the server: shown bounded and without control characters.
    let shown = bounded_text(expires_at, 64);
    let expires = OffsetDateTime::parse(expires_at, &Rfc3339)
        .map_err(|e| decode(format!("token.expires_at {shown:?} is not RFC 3339: {e}")))?;
    let remaining = expires - OffsetDateTime::now_utc();
    let lifetime = Duration::try_from(remaining).unwrap_or(Duration::ZERO);
    if lifetime.is_zero() {
        return Err(decode(format!(
            "token.expires_at {shown} is already past (is the local clock right?)"
        )));
    }
    Ok((token, lifetime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_body_is_sent_byte_for_byte_with_escapes() {
        let password = "p\"w\u{1}".repeat(500);
        let body = serde_json::json!({
            "auth": {"identity": {"password": {"user": {"name": "u", "password": password}}}}
        });
        let expected = body.to_string();
        let sent = zeroized_json(body, 1 + password.len()).expect("encodes");
        let bytes = sent.as_bytes().expect("an in-memory body");
        assert_eq!(bytes, expected.as_bytes());
        let parsed: serde_json::Value = serde_json::from_slice(bytes).expect("json");
        assert_eq!(
            parsed.pointer(PASSWORD_POINTER).and_then(|v| v.as_str()),
            Some(password.as_str())
        );
    }

    #[test]
    fn margin_is_the_smaller_of_five_minutes_and_a_tenth() {
        assert_eq!(
            refresh_margin(Duration::from_secs(24 * 3600)),
            Duration::from_secs(300)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(600)),
            Duration::from_secs(60)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(2)),
            Duration::from_millis(200)
        );
    }

    fn raw(status: u16, token: Option<&str>, body: &str) -> RawResponse {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = token {
            headers.insert("x-subject-token", t.parse().expect("header value"));
        }
        RawResponse {
            status,
            headers,
            body: bytes::Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    #[test]
    fn parses_a_token_answer() {
        let exp = (OffsetDateTime::now_utc() + time::Duration::hours(24))
            .format(&Rfc3339)
            .expect("format");
        let (t, life) = parse_token_response(
            raw(
                201,
                Some("TOKENVALUE"),
                &format!(r#"{{"token":{{"expires_at":"{exp}"}}}}"#),
            ),
            "u",
        )
        .expect("parses");
        assert_eq!(t.expose(), "TOKENVALUE");
        assert!(life > Duration::from_secs(23 * 3600));
    }

    #[test]
    fn rejects_answers_without_token_or_expiry() {
        assert!(
            parse_token_response(
                raw(
                    201,
                    None,
                    r#"{"token":{"expires_at":"2099-01-01T00:00:00Z"}}"#
                ),
                "u"
            )
            .is_err()
        );
        assert!(parse_token_response(raw(201, Some("t"), r#"{"token":{}}"#), "u").is_err());
        assert!(
            parse_token_response(
                raw(
                    201,
                    Some("t"),
                    r#"{"token":{"expires_at":"2001-01-01T00:00:00Z"}}"#
                ),
                "u"
            )
            .is_err()
        );
        let e = parse_token_response(
            raw(401, None, r#"{"error":{"code":401,"message":"wrong"}}"#),
            "u",
        )
        .expect_err("error");
        assert_eq!(e.reason(), crate::dli::error::FailureReason::Auth);
    }
}
