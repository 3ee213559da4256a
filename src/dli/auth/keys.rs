//! Temporary credentials (AK, SK, security token and their expiry) as the metadata service and
//! IAM's OIDC exchange answer them (docs/dli-api.md, "Metadata credentials"), and the parsing of
//! that answer.
//!
//! It owns the answer's accepted spellings and the `expires_at` format. It must not fetch
//! anything, and no message it produces repeats a key or token: a value that does not parse is
//! described, never quoted.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use crate::secret::Secret;

/// Temporary AK/SK with their security token, valid until `expires_at` (UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemporaryKeys {
    pub access_key: Secret,
    pub secret_key: Secret,
    pub security_token: Secret,
    pub expires_at: OffsetDateTime,
}

/// Longest an answer of credentials may be (a real one is a few KB: the security token is long).
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// The credential object's names for each field: the documented one first, then the spellings
/// the SDK also accepts.
const ACCESS: [&str; 2] = ["access", "accessKeyId"];
const SECRET: [&str; 2] = ["secret", "secretAccessKey"];
const TOKEN: [&str; 2] = ["securitytoken", "securityToken"];
const EXPIRES: [&str; 2] = ["expires_at", "expiration"];

/// Parses `{"credential": {"access", "secret", "securitytoken", "expires_at"}}` (or
/// `credentials`, `accessKeyId`, `secretAccessKey`, `securityToken`, `expiration`); keys that
/// have expired by `now` are refused. The error says what is missing or malformed without
/// quoting any value but the expiry.
pub fn parse_answer(body: &[u8], now: OffsetDateTime) -> Result<TemporaryKeys, String> {
    let json: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "the answer is not JSON (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    let object = ["credential", "credentials"]
        .iter()
        .find_map(|k| json.get(k).filter(|v| v.is_object()))
        .ok_or("the answer has no \"credential\" object")?;
    let field = |names: [&str; 2]| -> Result<Secret, String> {
        let value = names.iter().find_map(|n| object.get(n));
        match value {
            Some(serde_json::Value::String(s)) => {
                let s = Secret::new(s.as_str());
                if s.is_empty() {
                    Err(format!("credential.{} is empty", names[0]))
                } else {
                    Ok(s)
                }
            }
            Some(_) => Err(format!("credential.{} is not a string", names[0])),
            None => Err(format!("credential.{} is missing", names[0])),
        }
    };
    let access_key = field(ACCESS)?;
    let secret_key = field(SECRET)?;
    let security_token = field(TOKEN)?;
    let expires = EXPIRES
        .iter()
        .find_map(|n| object.get(n))
        .ok_or("credential.expires_at is missing")?;
    let expires = expires
        .as_str()
        .ok_or("credential.expires_at is not a string")?;
    let expires_at = parse_expires_at(expires).ok_or_else(|| {
        format!(
            "credential.expires_at {:?} is not a UTC time such as \"2026-12-02T10:00:00.000000Z\"",
            shorten(expires)
        )
    })?;
    if expires_at <= now {
        return Err(format!(
            "credential.expires_at {expires} is not in the future (is the local clock right?)"
        ));
    }
    for (name, value) in [("access", &access_key), ("secret", &secret_key)] {
        if !value.expose().bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "credential.{name} holds characters that cannot be signed"
            ));
        }
    }
    if !security_token
        .expose()
        .bytes()
        .all(|b| b.is_ascii_graphic())
    {
        return Err("credential.securitytoken holds characters not allowed in a header".into());
    }
    Ok(TemporaryKeys {
        access_key,
        secret_key,
        security_token,
        expires_at,
    })
}

/// `%Y-%m-%dT%H:%M:%S.%fZ` as the SDK writes and reads it, read as UTC (the SDK reads it as local
/// time); also without the fraction, and any RFC 3339 time with an offset.
pub fn parse_expires_at(value: &str) -> Option<OffsetDateTime> {
    let value = value.trim();
    let naive = format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]Z"
    );
    if let Ok(t) = time::PrimitiveDateTime::parse(value, &naive) {
        return Some(t.assume_utc());
    }
    OffsetDateTime::parse(value, &Rfc3339)
        .ok()
        .map(|t| t.to_offset(time::UtcOffset::UTC))
}

/// At most 40 characters of an untrusted value for a message.
fn shorten(value: &str) -> String {
    let mut out: String = value.chars().take(40).filter(|c| !c.is_control()).collect();
    if value.chars().count() > 40 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const AK: &str = "TMPAKVALUE000001";
    const SK: &str = "TmpSecretValue0001";
    const TOKEN: &str = "gQpjbi1ub3J0aC00SecurityTokenValue";

    /// A moment before every expiry the tests use.
    fn before() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_790_000_000).expect("valid time")
    }

    #[test]
    fn expired_keys_are_refused() {
        let body = format!(
            r#"{{"credential": {{"access": "{AK}", "secret": "{SK}", "securitytoken": "{TOKEN}", "expires_at": "2026-12-02T10:00:00Z"}}}}"#
        );
        let after = OffsetDateTime::from_unix_timestamp(1_796_205_600).expect("valid time");
        let e = parse_answer(body.as_bytes(), after).expect_err("expired");
        assert!(e.contains("not in the future"), "{e}");
    }

    #[test]
    fn parses_the_documented_answer_as_utc() {
        let body = format!(
            r#"{{"credential": {{"access": "{AK}", "secret": "{SK}", "securitytoken": "{TOKEN}", "expires_at": "2026-12-02T10:00:00.123456Z"}}}}"#
        );
        let keys = parse_answer(body.as_bytes(), before()).expect("parses");
        assert_eq!(keys.access_key.expose(), AK);
        assert_eq!(keys.secret_key.expose(), SK);
        assert_eq!(keys.security_token.expose(), TOKEN);
        assert_eq!(keys.expires_at.unix_timestamp(), 1_796_205_600);
        assert_eq!(keys.expires_at.microsecond(), 123_456);
        let shown = format!("{keys:?}");
        for secret in [AK, SK, TOKEN] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn accepts_the_other_spellings() {
        let body = format!(
            r#"{{"credentials": {{"accessKeyId": "{AK}", "secretAccessKey": "{SK}", "securityToken": "{TOKEN}", "expiration": "2026-12-02T10:00:00Z"}}}}"#
        );
        let keys = parse_answer(body.as_bytes(), before()).expect("parses");
        assert_eq!(keys.access_key.expose(), AK);
        assert_eq!(keys.expires_at.unix_timestamp(), 1_796_205_600);
    }

    #[test]
    fn expiry_formats() {
        let t = |s| parse_expires_at(s).map(|t| t.unix_timestamp());
        assert_eq!(t("2026-12-02T10:00:00.000000Z"), Some(1_796_205_600));
        assert_eq!(t("2026-12-02T10:00:00.5Z"), Some(1_796_205_600));
        assert_eq!(t("2026-12-02T10:00:00Z"), Some(1_796_205_600));
        assert_eq!(t("2026-12-02T18:00:00+08:00"), Some(1_796_205_600));
        assert_eq!(t("9999-12-31T23:59:59.999999Z"), Some(253_402_300_799));
        for bad in [
            "",
            "2026-12-02",
            "tomorrow",
            "2026-13-02T10:00:00Z",
            "+99999-01-01T00:00:00Z",
        ] {
            assert_eq!(t(bad), None, "{bad}");
        }
    }

    #[test]
    fn errors_name_the_field_and_never_a_secret() {
        let cases = [
            ("[]".to_string(), "no \"credential\""),
            ("not json".to_string(), "not JSON"),
            (
                format!(
                    r#"{{"credential": {{"secret": "{SK}", "securitytoken": "{TOKEN}", "expires_at": "2026-12-02T10:00:00Z"}}}}"#
                ),
                "credential.access is missing",
            ),
            (
                format!(
                    r#"{{"credential": {{"access": "{AK}", "secret": "{SK}", "expires_at": "2026-12-02T10:00:00Z"}}}}"#
                ),
                "credential.securitytoken is missing",
            ),
            (
                format!(
                    r#"{{"credential": {{"access": "{AK}", "secret": 7, "securitytoken": "{TOKEN}", "expires_at": "x"}}}}"#
                ),
                "credential.secret is not a string",
            ),
            (
                format!(
                    r#"{{"credential": {{"access": "{AK}", "secret": "{SK}", "securitytoken": "{TOKEN}", "expires_at": "soon"}}}}"#
                ),
                "credential.expires_at \"soon\"",
            ),
            (
                format!(
                    r#"{{"credential": {{"access": "{AK}", "secret": "", "securitytoken": "{TOKEN}", "expires_at": "2026-12-02T10:00:00Z"}}}}"#
                ),
                "credential.secret is empty",
            ),
            (
                format!(
                    r#"{{"credential": {{"access": "{AK}", "secret": "{SK}", "securitytoken": "a\nb", "expires_at": "2026-12-02T10:00:00Z"}}}}"#
                ),
                "not allowed in a header",
            ),
        ];
        for (body, want) in cases {
            let e = parse_answer(body.as_bytes(), before()).expect_err(want);
            assert!(e.contains(want), "{e} should say {want}");
            for secret in [AK, SK, TOKEN] {
                assert!(!e.contains(secret), "{e}");
            }
        }
    }
}
