//! CCE workload identity (docs/dli-api.md, "OIDC workload identity"): the id token file
//! (re-read at every exchange: the kubelet rotates it) is exchanged at IAM for an unscoped token
//! (`POST /v3.0/OS-AUTH/id-token/tokens`, `X-Idp-Id`), and that for temporary keys
//! (`POST /v3.0/OS-CREDENTIAL/securitytokens`).
//!
//! It owns the two requests and their bodies. It must not cache anything (that is
//! `temporary`'s), and neither the id token nor the unscoped token may reach a message: request
//! bodies holding them are zeroed when sent, error bodies are scrubbed of them.

use std::path::PathBuf;

use serde::Serialize;

use super::keys::{self, TemporaryKeys};
use crate::dli::error::{DliError, Operation};
use crate::dli::transport::{RawResponse, Transport};
use crate::secret::Secret;

/// Lifetime asked for the temporary keys (the SDK's value).
pub const DURATION_SECONDS: u64 = 21_600;
/// Largest id token file read (a projected service account token is about 1 KB).
pub const MAX_ID_TOKEN_BYTES: u64 = 64 * 1024;

/// Where and as whom to exchange.
pub struct OidcExchange {
    id_token_file: PathBuf,
    idp_id: String,
    id_token_url: String,
    keys_url: String,
    transport: Transport,
}

impl std::fmt::Debug for OidcExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcExchange")
            .field("idp_id", &self.idp_id)
            .field("id_token_file", &self.id_token_file)
            .field("id_token_url", &self.id_token_url)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct IdTokenBody<'a> {
    auth: IdTokenAuth<'a>,
}
#[derive(Serialize)]
struct IdTokenAuth<'a> {
    id_token: IdOf<'a>,
}
#[derive(Serialize)]
struct IdOf<'a> {
    id: &'a str,
}

#[derive(Serialize)]
struct KeysBody<'a> {
    auth: KeysAuth<'a>,
}
#[derive(Serialize)]
struct KeysAuth<'a> {
    identity: Identity<'a>,
}
#[derive(Serialize)]
struct Identity<'a> {
    methods: [&'static str; 1],
    token: TokenOf<'a>,
}
#[derive(Serialize)]
struct TokenOf<'a> {
    id: &'a str,
    duration_seconds: u64,
}

impl OidcExchange {
    pub fn new(
        iam_endpoint: &str,
        idp_id: &str,
        id_token_file: PathBuf,
        transport: Transport,
    ) -> Self {
        let base = iam_endpoint.trim_end_matches('/');
        OidcExchange {
            id_token_file,
            idp_id: idp_id.to_string(),
            id_token_url: format!("{base}/v3.0/OS-AUTH/id-token/tokens"),
            keys_url: format!("{base}/v3.0/OS-CREDENTIAL/securitytokens"),
            transport,
        }
    }

    /// Reads the id token file and exchanges its content for temporary keys.
    pub async fn fetch(&self) -> Result<TemporaryKeys, DliError> {
        let id_token = self.read_id_token().await?;
        let unscoped = self.unscoped_token(&id_token).await?;
        self.temporary_keys(&unscoped, &id_token).await
    }

    async fn read_id_token(&self) -> Result<Secret, DliError> {
        let shown = self.id_token_file.display().to_string();
        let error = |message: String| DliError::Request {
            operation: Operation::Oidc,
            url: format!("id_token_file {shown}"),
            message,
        };
        let size = tokio::fs::metadata(&self.id_token_file)
            .await
            .map_err(|e| error(format!("cannot read: {e}")))?
            .len();
        if size > MAX_ID_TOKEN_BYTES {
            return Err(error(format!(
                "holds {size} bytes, more than the {MAX_ID_TOKEN_BYTES} an id token can take"
            )));
        }
        let bytes = tokio::fs::read(&self.id_token_file)
            .await
            .map_err(|e| error(format!("cannot read: {e}")))?;
        let token = match String::from_utf8(bytes) {
            Ok(text) => Secret::new(text),
            Err(e) => {
                let mut bytes = e.into_bytes();
                zeroize::Zeroize::zeroize(&mut bytes);
                return Err(error("is not UTF-8 text".into()));
            }
        };
        if token.is_empty() {
            return Err(error("is empty".into()));
        }
        Ok(token)
    }

    async fn unscoped_token(&self, id_token: &Secret) -> Result<Secret, DliError> {
        let body = IdTokenBody {
            auth: IdTokenAuth {
                id_token: IdOf {
                    id: id_token.expose(),
                },
            },
        };
        let request = self
            .transport
            .http()
            .post(&self.id_token_url)
            .header("X-Idp-Id", &self.idp_id)
            .header("Content-Type", "application/json;charset=UTF-8")
            .body(zeroized_json(
                &body,
                id_token.expose().len(),
                &self.id_token_url,
            )?);
        let url = self.id_token_url.clone();
        self.transport
            .call(Operation::Oidc, &self.id_token_url, request, |raw| {
                if !(200..300).contains(&raw.status) {
                    return Err(scrubbed(raw.error(Operation::Oidc, &url), &[id_token]));
                }
                unscoped_from(&raw, &url)
            })
            .await
    }

    async fn temporary_keys(
        &self,
        unscoped: &Secret,
        id_token: &Secret,
    ) -> Result<TemporaryKeys, DliError> {
        let body = KeysBody {
            auth: KeysAuth {
                identity: Identity {
                    methods: ["token"],
                    token: TokenOf {
                        id: unscoped.expose(),
                        duration_seconds: DURATION_SECONDS,
                    },
                },
            },
        };
        let mut auth_header =
            reqwest::header::HeaderValue::from_str(unscoped.expose()).map_err(|_| {
                DliError::Request {
                    operation: Operation::Oidc,
                    url: self.keys_url.clone(),
                    message: "the unscoped token holds characters not allowed in a header".into(),
                }
            })?;
        auth_header.set_sensitive(true);
        // The token goes in the body (as the SDK sends it) and in X-Auth-Token (as IAM's API
        // reference asks for it).
        let request = self
            .transport
            .http()
            .post(&self.keys_url)
            .header("Content-Type", "application/json;charset=UTF-8")
            .header("X-Auth-Token", auth_header)
            .body(zeroized_json(
                &body,
                unscoped.expose().len(),
                &self.keys_url,
            )?);
        let url = self.keys_url.clone();
        self.transport
            .call(Operation::Oidc, &self.keys_url, request, |raw| {
                if !(200..300).contains(&raw.status) {
                    return Err(scrubbed(
                        raw.error(Operation::Oidc, &url),
                        &[id_token, unscoped],
                    ));
                }
                keys::parse_answer(&raw.body, time::OffsetDateTime::now_utc()).map_err(|message| {
                    DliError::Decode {
                        operation: Operation::Oidc,
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

fn unscoped_from(raw: &RawResponse, url: &str) -> Result<Secret, DliError> {
    raw.headers
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .map(Secret::new)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| DliError::Decode {
            operation: Operation::Oidc,
            url: url.to_string(),
            status: raw.status,
            message: "no X-Subject-Token header in the IAM answer".into(),
            request_id: raw.request_id(),
        })
}

/// A JSON body in a buffer that is zeroed when the HTTP client drops it. `secret_len` is the
/// length of the secret inside: with JSON escaping at most 6 bytes each, the buffer is sized up
/// front and never reallocates (a reallocation would free an unzeroed copy).
fn zeroized_json(
    body: &impl Serialize,
    secret_len: usize,
    url: &str,
) -> Result<reqwest::Body, DliError> {
    let capacity = secret_len.saturating_mul(6).saturating_add(512);
    let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(capacity));
    serde_json::to_writer(&mut *buf, body).map_err(|e| DliError::Request {
        operation: Operation::Oidc,
        url: url.to_string(),
        message: format!("cannot encode the request body: {e}"),
    })?;
    Ok(reqwest::Body::from(bytes::Bytes::from_owner(buf)))
}

/// The error with any of `secrets` in its message replaced, should IAM echo one back.
fn scrubbed(mut e: DliError, secrets: &[&Secret]) -> DliError {
    if let DliError::Api { body, .. } = &mut e
        && let Some(message) = &mut body.error_msg
    {
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            if message.contains(secret.expose()) {
                *message = message.replace(secret.expose(), "<redacted>");
            }
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_what_iam_expects() {
        let token = "eyJhbGciOiJSUzI1NiJ9.payload\"quoted\".sig";
        let body = IdTokenBody {
            auth: IdTokenAuth {
                id_token: IdOf { id: token },
            },
        };
        let sent = zeroized_json(&body, token.len(), "u").expect("encodes");
        let json: serde_json::Value =
            serde_json::from_slice(sent.as_bytes().expect("in memory")).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"auth": {"id_token": {"id": token}}})
        );

        let body = KeysBody {
            auth: KeysAuth {
                identity: Identity {
                    methods: ["token"],
                    token: TokenOf {
                        id: "MIIunscoped",
                        duration_seconds: DURATION_SECONDS,
                    },
                },
            },
        };
        let sent = zeroized_json(&body, 11, "u").expect("encodes");
        let json: serde_json::Value =
            serde_json::from_slice(sent.as_bytes().expect("in memory")).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"auth": {"identity": {"methods": ["token"],
                "token": {"id": "MIIunscoped", "duration_seconds": 21600}}}})
        );
    }

    #[test]
    fn error_messages_are_scrubbed_of_tokens() {
        let id_token = Secret::new("IDTOKEN-abcdef-123456");
        let raw = RawResponse {
            status: 400,
            headers: reqwest::header::HeaderMap::new(),
            body: bytes::Bytes::from_static(
                br#"{"error":{"code":"IAM.0001","message":"bad token IDTOKEN-abcdef-123456"}}"#,
            ),
        };
        let e = scrubbed(raw.error(Operation::Oidc, "u"), &[&id_token]);
        let shown = e.to_string();
        assert!(!shown.contains("IDTOKEN-abcdef-123456"), "{shown}");
        assert!(
            shown.contains("<redacted>") && shown.contains("IAM.0001"),
            "{shown}"
        );
    }

    #[test]
    fn the_unscoped_token_is_the_subject_token_header() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("x-subject-token", "MIIunscoped".parse().expect("value"));
        let raw = RawResponse {
            status: 201,
            headers,
            body: bytes::Bytes::new(),
        };
        assert_eq!(
            unscoped_from(&raw, "u").expect("token").expose(),
            "MIIunscoped"
        );
        let raw = RawResponse {
            status: 201,
            headers: reqwest::header::HeaderMap::new(),
            body: bytes::Bytes::new(),
        };
        assert_eq!(
            unscoped_from(&raw, "u").expect_err("none").reason(),
            crate::dli::FailureReason::Decode
        );
    }
}
