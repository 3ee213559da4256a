//! The ECS/CCE metadata service (docs/dli-api.md, "Metadata credentials"): an optional session
//! token (`PUT /meta-data/latest/api/token`), then the agency's temporary keys
//! (`GET /openstack/latest/securitykey`).
//!
//! It owns the two requests, the session token's cache and its fallback (404, 405 or 503 to the
//! token request: no token support, go on without; a 401 to the keys request without the "no
//! agency" text: the session token expired, get a new one and retry once). It must not cache the
//! keys (that is `temporary`'s), go through a proxy, or show the session token or the keys.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::keys::{self, TemporaryKeys};
use crate::dli::error::{DliError, Operation};
use crate::dli::transport::{RawResponse, Transport};
use crate::secret::Secret;

/// Lifetime asked for a session token (the SDK's value).
pub const SESSION_TOKEN_TTL: Duration = Duration::from_secs(21_600);
/// A cached session token is replaced this long before its lifetime ends.
const SESSION_TOKEN_MARGIN: Duration = Duration::from_secs(300);
/// Connect and read timeouts of metadata requests (the SDK's).
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(3);
/// The text of a 401 that means the instance has no agency (not an expired session token).
const NO_AGENCY: &str = "Please configure Cloud Service Agency first";

/// The metadata service of one endpoint.
pub struct MetadataService {
    token_url: String,
    keys_url: String,
    transport: Transport,
    session: Mutex<Option<(Secret, Instant)>>,
}

impl std::fmt::Debug for MetadataService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataService")
            .field("keys_url", &self.keys_url)
            .finish_non_exhaustive()
    }
}

/// What the session token request found.
enum Session {
    Token(Secret),
    /// 404, 405 or 503: the service has no session tokens.
    Unsupported,
}

impl MetadataService {
    /// `endpoint` is the base URL (`http://169.254.169.254`); `transport` must not use a proxy
    /// and should bound requests by [`METADATA_TIMEOUT`].
    pub fn new(endpoint: &str, transport: Transport) -> Self {
        let base = endpoint.trim_end_matches('/');
        MetadataService {
            token_url: format!("{base}/meta-data/latest/api/token"),
            keys_url: format!("{base}/openstack/latest/securitykey"),
            transport,
            session: Mutex::new(None),
        }
    }

    /// Fetches the agency's temporary keys.
    pub async fn fetch(&self) -> Result<TemporaryKeys, DliError> {
        let mut token = self.session_token().await?;
        let mut retried = false;
        loop {
            match self.keys(token.as_ref()).await {
                Err(e) if token.is_some() && !retried && session_expired(&e) => {
                    // The session token expired early: a new one, once.
                    self.forget_session();
                    token = self.session_token().await?;
                    retried = true;
                }
                other => return other,
            }
        }
    }

    fn cached_session(&self) -> Option<Secret> {
        let guard = self.session.lock().ok()?;
        guard
            .as_ref()
            .filter(|(_, renew_at)| Instant::now() < *renew_at)
            .map(|(token, _)| token.clone())
    }

    fn forget_session(&self) {
        if let Ok(mut s) = self.session.lock() {
            *s = None;
        }
    }

    /// The cached session token, or a new one; `None` when the service has none.
    async fn session_token(&self) -> Result<Option<Secret>, DliError> {
        if let Some(token) = self.cached_session() {
            return Ok(Some(token));
        }
        let request = self.transport.http().put(&self.token_url).header(
            "X-Metadata-Token-Ttl-Seconds",
            SESSION_TOKEN_TTL.as_secs().to_string(),
        );
        let url = self.token_url.clone();
        let session = self
            .transport
            .call(Operation::Metadata, &self.token_url, request, |raw| {
                parse_session(raw, &url)
            })
            .await?;
        match session {
            Session::Token(token) => {
                let renew_at = Instant::now()
                    .checked_add(SESSION_TOKEN_TTL.saturating_sub(SESSION_TOKEN_MARGIN));
                if let (Ok(mut s), Some(renew_at)) = (self.session.lock(), renew_at) {
                    *s = Some((token.clone(), renew_at));
                }
                Ok(Some(token))
            }
            Session::Unsupported => Ok(None),
        }
    }

    async fn keys(&self, token: Option<&Secret>) -> Result<TemporaryKeys, DliError> {
        let mut request = self.transport.http().get(&self.keys_url);
        if let Some(token) = token {
            request = request.header("X-Metadata-Token", sensitive(token, &self.keys_url)?);
        }
        let url = self.keys_url.clone();
        self.transport
            .call(Operation::Metadata, &self.keys_url, request, |raw| {
                if !(200..300).contains(&raw.status) {
                    return Err(raw.error(Operation::Metadata, &url));
                }
                keys::parse_answer(&raw.body, time::OffsetDateTime::now_utc()).map_err(|message| {
                    DliError::Decode {
                        operation: Operation::Metadata,
                        url: url.clone(),
                        status: raw.status,
                        message,
                        request_id: raw.request_id(),
                    }
                })
            })
            .await
    }
}

/// A 401 that is not the "no agency" answer: the session token is no longer accepted.
fn session_expired(e: &DliError) -> bool {
    match e {
        DliError::Api { body, .. } => {
            body.status == 401
                && !body
                    .error_msg
                    .as_deref()
                    .is_some_and(|m| m.contains(NO_AGENCY))
        }
        _ => false,
    }
}

fn parse_session(raw: RawResponse, url: &str) -> Result<Session, DliError> {
    match raw.status {
        200..=299 => {
            let token = Secret::new(String::from_utf8_lossy(&raw.body));
            if token.is_empty() || !token.expose().bytes().all(|b| b.is_ascii_graphic()) {
                return Err(DliError::Decode {
                    operation: Operation::Metadata,
                    url: url.to_string(),
                    status: raw.status,
                    message: "the session token answer is empty or not a header value".into(),
                    request_id: raw.request_id(),
                });
            }
            Ok(Session::Token(token))
        }
        404 | 405 | 503 => Ok(Session::Unsupported),
        _ => Err(raw.error(Operation::Metadata, url)),
    }
}

fn sensitive(token: &Secret, url: &str) -> Result<reqwest::header::HeaderValue, DliError> {
    let mut value =
        reqwest::header::HeaderValue::from_str(token.expose()).map_err(|_| DliError::Request {
            operation: Operation::Metadata,
            url: url.to_string(),
            message: "the session token holds characters not allowed in a header".into(),
        })?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(status: u16, body: &str) -> RawResponse {
        RawResponse {
            status,
            headers: reqwest::header::HeaderMap::new(),
            body: bytes::Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    #[test]
    fn session_token_answers() {
        assert!(matches!(
            parse_session(raw(200, "  tok-123\n"), "u"),
            Ok(Session::Token(t)) if t.expose() == "tok-123"
        ));
        for status in [404, 405, 503] {
            assert!(
                matches!(
                    parse_session(raw(status, ""), "u"),
                    Ok(Session::Unsupported)
                ),
                "{status}"
            );
        }
        assert!(parse_session(raw(500, "boom"), "u").is_err());
        assert!(parse_session(raw(401, ""), "u").is_err());
        let e = parse_session(raw(200, ""), "u").err().expect("empty token");
        assert_eq!(e.reason(), crate::dli::FailureReason::Decode);
    }

    #[test]
    fn a_401_means_an_expired_session_unless_the_instance_has_no_agency() {
        let expired = raw(401, r#"{"message":"token expired"}"#).error(Operation::Metadata, "u");
        assert!(session_expired(&expired));
        let no_agency = raw(
            401,
            "Please configure Cloud Service Agency first, then try again",
        )
        .error(Operation::Metadata, "u");
        assert!(!session_expired(&no_agency));
        let other = raw(500, "").error(Operation::Metadata, "u");
        assert!(!session_expired(&other));
    }
}
