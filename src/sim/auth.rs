//! Credential checks for ListBatches (SDK-HMAC-SHA256 signatures with the configured keys or
//! unexpired temporary keys this simulator issued, `X-Auth-Token`s it issued) and the fake IAM
//! `POST /v3/auth/tokens`.
//!
//! Owns verification only: the signing primitives are `crate::dli::auth::aksk`'s, rebuilt here from
//! what was received. It must not log or echo a secret, token or signature.

use hyper::HeaderMap;
use rand::Rng;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::macros::format_description;

use super::{Inner, bump, lock};
use crate::dli::auth::aksk;

/// An IAM token this simulator issued.
#[derive(Debug)]
pub(crate) struct IssuedToken {
    pub(crate) project_id: String,
    pub(crate) expires: tokio::time::Instant,
}

/// Why a ListBatches request was refused: an APIG error code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub(crate) code: &'static str,
    pub(crate) msg: &'static str,
}

const BAD_AUTH: &str = "APIGW.0301";
const BAD_DATE: &str = "APIGW.0303";

fn reject(code: &'static str, msg: &'static str) -> Rejection {
    Rejection { code, msg }
}

/// Equal-length byte strings compared without an early exit.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The kind of credentials a request presents: `"token"`, `"aksk"` or `"none"`.
pub(crate) fn auth_kind(headers: &HeaderMap) -> &'static str {
    if headers.contains_key("x-auth-token") {
        "token"
    } else if headers.contains_key(hyper::header::AUTHORIZATION) {
        "aksk"
    } else {
        "none"
    }
}

/// The query string as decoded (key, value) pairs: split on `&` and the first `=`, each side
/// percent-decoded (`+` stays a `+`: the SDK encodes a space as `%20`). A key without `=` gets an
/// empty value; empty pieces are skipped.
pub(crate) fn decode_query(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| match piece.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(piece), String::new()),
        })
        .collect()
}

/// Checks a ListBatches request's credentials for `project_id`.
pub(crate) fn verify(
    inner: &Inner,
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &HeaderMap,
    body: &[u8],
    project_id: &str,
) -> Result<(), Rejection> {
    if let Some(token) = headers.get("x-auth-token") {
        let token = token
            .to_str()
            .map_err(|_| reject(BAD_AUTH, "Incorrect token"))?;
        return verify_token(inner, token, project_id);
    }
    let Some(authorization) = header(headers, "authorization") else {
        return Err(reject(
            BAD_AUTH,
            "Incorrect IAM authentication information: Authorization not found in header",
        ));
    };
    verify_signature(inner, method, path, query, headers, body, authorization)
}

fn verify_token(inner: &Inner, token: &str, project_id: &str) -> Result<(), Rejection> {
    let tokens = lock(&inner.tokens);
    let Some(issued) = tokens.get(token) else {
        return Err(reject(
            BAD_AUTH,
            "Incorrect IAM authentication information: token invalid",
        ));
    };
    if tokio::time::Instant::now() >= issued.expires {
        return Err(reject(
            BAD_AUTH,
            "Incorrect IAM authentication information: token expired",
        ));
    }
    if issued.project_id != project_id {
        return Err(reject(
            BAD_AUTH,
            "Incorrect IAM authentication information: token project does not match the request",
        ));
    }
    Ok(())
}

fn verify_signature(
    inner: &Inner,
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &HeaderMap,
    body: &[u8],
    authorization: &str,
) -> Result<(), Rejection> {
    let bad_format = reject(
        BAD_AUTH,
        "Incorrect IAM authentication information: Authorization format incorrect",
    );
    let parsed = aksk::parse_authorization(authorization).ok_or(bad_format.clone())?;
    let signed_has = |name: &str| parsed.signed_headers.iter().any(|h| h == name);
    if !signed_has("host") || !signed_has("x-sdk-date") {
        return Err(bad_format);
    }
    let date_str = header(headers, "x-sdk-date").ok_or(reject(
        BAD_AUTH,
        "Incorrect IAM authentication information: x-sdk-date not found in header",
    ))?;
    let date = aksk::parse_sdk_date(date_str).ok_or(reject(
        BAD_AUTH,
        "Incorrect IAM authentication information: x-sdk-date format incorrect",
    ))?;
    let skew = (OffsetDateTime::now_utc() - date).abs();
    if skew > inner.config.max_clock_skew {
        return Err(reject(
            BAD_DATE,
            "Incorrect app authentication information: the request time is too far from the server time",
        ));
    }
    let configured = inner
        .config
        .credentials
        .iter()
        .find(|(ak, _)| ct_eq(ak.as_bytes(), parsed.access_key.as_bytes()))
        .map(|(_, sk)| sk.clone());
    let secret_key = match configured {
        Some(sk) => sk,
        // Temporary keys this simulator issued: only with their (signed) security token, and
        // only until they expire.
        None => match inner
            .keyless
            .secret_for(&parsed.access_key, header(headers, "x-security-token"))
        {
            Some(Ok(_)) if !signed_has("x-security-token") => {
                return Err(reject(
                    BAD_AUTH,
                    "Incorrect IAM authentication information: x-security-token must be signed",
                ));
            }
            Some(Ok(sk)) => sk,
            Some(Err(msg)) => return Err(reject(BAD_AUTH, msg)),
            None => {
                return Err(reject(
                    BAD_AUTH,
                    "Incorrect IAM authentication information: AK access failed to reach the limit,forbidden",
                ));
            }
        },
    };
    let mut signed: Vec<(&str, &str)> = Vec::with_capacity(parsed.signed_headers.len());
    for name in &parsed.signed_headers {
        let value = header(headers, name).ok_or(reject(
            BAD_AUTH,
            "Incorrect IAM authentication information: a signed header is missing",
        ))?;
        signed.push((name.as_str(), value));
    }
    let payload_hash = if header(headers, "x-sdk-content-sha256") == Some("UNSIGNED-PAYLOAD") {
        "UNSIGNED-PAYLOAD".to_string()
    } else if body.is_empty() {
        aksk::EMPTY_PAYLOAD_SHA256.to_string()
    } else {
        hex::encode(Sha256::digest(body))
    };
    let canonical_query = aksk::canonical_query(query);
    let canonical = aksk::canonical_request(method, path, &canonical_query, &signed, &payload_hash);
    let expected = aksk::signature(
        &secret_key,
        &aksk::string_to_sign(date_str, &canonical.request),
    );
    if ct_eq(expected.as_bytes(), parsed.signature.as_bytes()) {
        Ok(())
    } else {
        Err(reject(
            BAD_AUTH,
            "Incorrect IAM authentication information: verify aksk signature fail",
        ))
    }
}

/// RFC 3339 with microseconds and `Z`, as IAM writes `expires_at`.
pub(crate) fn iam_time(t: OffsetDateTime) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    t.to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00.000000Z"))
}

/// What the IAM token endpoint answers: status, body and, on success, the token.
#[derive(Debug)]
pub(crate) struct IamAnswer {
    pub(crate) status: u16,
    pub(crate) body: Value,
    pub(crate) token: Option<String>,
}

fn iam_error(status: u16, title: &str, message: &str) -> IamAnswer {
    IamAnswer {
        status,
        body: json!({"error": {"code": status, "title": title, "message": message}}),
        token: None,
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, key| v.get(key))?.as_str()
}

/// Handles a `POST /v3/auth/tokens` body: a password login scoped to a project by id or name.
pub(crate) fn issue_token(inner: &Inner, body: &[u8]) -> IamAnswer {
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return iam_error(400, "Bad Request", "The request body is not valid JSON.");
    };
    let identity = &req["auth"]["identity"];
    let password_method = identity["methods"]
        .as_array()
        .is_some_and(|m| m.iter().any(|x| x == "password"));
    let user = str_at(identity, &["password", "user", "name"]);
    let password = str_at(identity, &["password", "user", "password"]);
    let domain = str_at(identity, &["password", "user", "domain", "name"]);
    let (Some(user), Some(password), Some(domain), true) =
        (user, password, domain, password_method)
    else {
        return iam_error(
            400,
            "Bad Request",
            "The request you have made requires a password identity.",
        );
    };
    let scope = &req["auth"]["scope"]["project"];
    let project_id = if let Some(id) = scope["id"].as_str() {
        id.to_string()
    } else if let Some(name) = scope["name"].as_str() {
        let names = lock(&inner.project_names);
        let mut ids = names.iter().filter(|(n, _)| n == name).map(|(_, id)| id);
        match (ids.next(), ids.next()) {
            (Some(id), None) => id.clone(),
            (None, _) => return iam_error(400, "Bad Request", "The project does not exist."),
            (Some(_), Some(_)) => {
                return iam_error(400, "Bad Request", "The project name is ambiguous.");
            }
        }
    } else {
        return iam_error(
            400,
            "Bad Request",
            "A project scope (id or name) is required.",
        );
    };
    let known = inner.config.iam_users.iter().any(|u| {
        // Evaluate every comparison: no early exit on the first mismatch.
        let d = ct_eq(u.domain.as_bytes(), domain.as_bytes());
        let n = ct_eq(u.user.as_bytes(), user.as_bytes());
        let p = ct_eq(u.password.expose().as_bytes(), password.as_bytes());
        d & n & p
    });
    if !known {
        return iam_error(401, "Unauthorized", "The username or password is wrong.");
    }

    let token = new_token(inner);
    let lifetime = inner.config.token_lifetime;
    let issued_at = OffsetDateTime::now_utc();
    let expires_at = issued_at + lifetime;
    lock(&inner.tokens).insert(
        token.clone(),
        IssuedToken {
            project_id: project_id.clone(),
            expires: tokio::time::Instant::now() + lifetime,
        },
    );
    bump(&inner.counters.tokens_issued, 1);
    let project_name = lock(&inner.project_names)
        .iter()
        .find(|(_, id)| *id == project_id)
        .map(|(name, _)| name.clone())
        .unwrap_or_else(|| project_id.clone());
    let domain_id = hex::encode(Sha256::digest(domain.as_bytes()))[..32].to_string();
    let user_id =
        hex::encode(Sha256::digest(format!("{domain}/{user}").as_bytes()))[..32].to_string();
    let body = json!({
        "token": {
            "expires_at": iam_time(expires_at),
            "issued_at": iam_time(issued_at),
            "methods": ["password"],
            "project": {
                "id": project_id,
                "name": project_name,
                "domain": {"id": domain_id, "name": domain},
            },
            "user": {
                "id": user_id,
                "name": user,
                "domain": {"id": domain_id, "name": domain},
                "password_expires_at": "",
            },
            "roles": [{"id": "0", "name": "te_admin"}],
            "catalog": [],
        }
    });
    IamAnswer {
        status: 201,
        body,
        token: Some(token),
    }
}

/// A token shaped like IAM's: `MII` then about 1.5 KB of URL-safe base64 characters.
fn new_token(inner: &Inner) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = lock(&inner.misc_rng);
    let mut token = String::with_capacity(1600);
    token.push_str("MII");
    for _ in 0..1536 {
        token.push(char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]));
    }
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn query_decoding() {
        assert_eq!(
            decode_query("a=1&&b=x%20y&c&d=p+q&e=%2B"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), "".into()),
                ("d".into(), "p+q".into()),
                ("e".into(), "+".into()),
            ]
        );
        assert!(decode_query("").is_empty());
    }

    #[test]
    fn iam_time_format() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_795_926_470_123_000_000)
            .expect("valid time");
        assert_eq!(iam_time(t), "2026-11-29T04:27:50.123000Z");
    }
}
