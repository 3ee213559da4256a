//! The `Secret` type: holds credentials (AK, SK, security token, password, IAM token), and
//! [`SecretUrl`], a URL that may carry `user:password@` (a proxy URL).
//!
//! It owns redaction and zeroing; it must never hand out its value except through the
//! explicit `expose` calls at the point where a request is signed, sent or a client is built.

use std::fmt;
use zeroize::Zeroize;

/// A string that never prints itself: `Debug` and `Display` show `<redacted>`, and the
/// memory is zeroed when the value is dropped.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value; leading and trailing whitespace (a newline at the end of a secret file)
    /// is not part of a credential and is removed.
    pub fn new(value: impl Into<String>) -> Self {
        let mut value: String = value.into();
        let trimmed = value.trim();
        if trimmed.len() != value.len() {
            let owned = trimmed.to_string();
            value.zeroize();
            return Secret(owned);
        }
        Secret(value)
    }

    /// The raw value, for signing or sending. Never log what this returns.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Secret {
    /// Overwrites the value's bytes (the whole allocation) with zeros and empties it.
    fn wipe(&mut self) {
        self.0.zeroize();
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    /// Only a string is a secret. Anything else (an unquoted number or boolean in a file) is an
    /// error that does not repeat the value: the default serde message would
    /// (`invalid type: floating point `3.14``). Environment overrides of secret keys are always
    /// strings (see `config::load`).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        const NOT_A_STRING: &str =
            "a secret must be a quoted string (the value given is not shown)";
        struct SecretVisitor;
        impl<'de> serde::de::Visitor<'de> for SecretVisitor {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::new(v))
            }
            fn visit_string<E: Error>(self, v: String) -> Result<Secret, E> {
                Ok(Secret::new(v))
            }
            fn visit_bool<E: Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_i64<E: Error>(self, _: i64) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_i128<E: Error>(self, _: i128) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_u64<E: Error>(self, _: u64) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_u128<E: Error>(self, _: u128) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_f64<E: Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_char<E: Error>(self, _: char) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_bytes<E: Error>(self, _: &[u8]) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_unit<E: Error>(self) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_none<E: Error>(self) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
                Err(A::Error::custom(NOT_A_STRING))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
                Err(A::Error::custom(NOT_A_STRING))
            }
        }
        d.deserialize_any(SecretVisitor)
    }
}

/// A URL whose userinfo (`user:password@`) is a credential, such as a proxy URL. `Debug` and
/// `Display` show it with the userinfo replaced by `<redacted>`; the whole URL is a [`Secret`].
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl {
    full: Secret,
    shown: String,
}

impl SecretUrl {
    /// Parses an `http://` or `https://` URL with a host and no path, query or fragment (a proxy
    /// address). The error never repeats the input, which may hold a password.
    pub fn parse_proxy(raw: &str) -> Result<SecretUrl, &'static str> {
        let full = Secret::new(raw);
        let url = reqwest::Url::parse(full.expose())
            .map_err(|_| "is not a URL such as \"http://proxy.example.com:3128\"")?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err("must use http:// or https:// (the scheme of the proxy itself)");
        }
        let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
            return Err("has no host");
        };
        if url.path() != "/" && !url.path().is_empty() {
            return Err("must not have a path");
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("must not have a query or fragment");
        }
        let userinfo = if url.username().is_empty() && url.password().is_none() {
            ""
        } else {
            "<redacted>@"
        };
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        let shown = format!("{}://{userinfo}{host}{port}", url.scheme());
        Ok(SecretUrl { full, shown })
    }

    /// The URL with its credentials, for building the HTTP client. Never log what this returns.
    pub fn expose(&self) -> &str {
        self.full.expose()
    }

    /// The URL with any userinfo replaced by `<redacted>`: safe for logs and messages.
    pub fn redacted(&self) -> &str {
        &self.shown
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.shown)
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_containers_is_redacted() {
        let s = Some(Secret::new("tok-123"));
        assert_eq!(format!("{s:?}"), "Some(<redacted>)");
        let v = vec![Secret::new("a-secret")];
        assert!(!format!("{v:?}").contains("a-secret"));
        assert!(!format!("{:#?}", Secret::new("pretty-secret")).contains("pretty-secret"));
    }

    #[test]
    fn equal_values_compare_equal_and_empty_is_empty() {
        assert_eq!(Secret::new("x"), Secret::new(" x\n"));
        assert!(Secret::new(" \n").is_empty());
        assert!(Secret::default().is_empty());
    }

    #[test]
    fn only_strings_are_secrets_and_errors_never_show_the_value() {
        let s: Secret = serde_json::from_str("\"sk \"").expect("string");
        assert_eq!(s.expose(), "sk");
        // Environment overrides of secret keys arrive as strings (config::load keeps them so);
        // a number or boolean in a file is an error that does not repeat it.
        for value in ["12345", "3.1415926", "true", "[1]", "{\"a\":1}", "null"] {
            let e = serde_json::from_str::<Secret>(value).expect_err(value);
            let msg = e.to_string();
            assert!(msg.contains("quoted string"), "{value}: {msg}");
            for shown in ["12345", "3.1415926", "true"] {
                assert!(!msg.contains(shown), "{value}: {msg}");
            }
        }
    }

    #[test]
    fn drop_zeroes_the_bytes() {
        // `Drop` calls `wipe`; check the allocation right after it, while it is still alive.
        let mut s = Secret::new("zero-me-please");
        let ptr = s.0.as_ptr();
        let len = s.0.len();
        s.wipe();
        assert!(s.0.is_empty());
        // SAFETY: `wipe` zeroes and truncates but keeps the allocation (the `String` is alive
        // and has not reallocated), so `len` initialized bytes at `ptr` are readable.
        let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
        assert!(bytes.iter().all(|b| *b == 0), "{bytes:?}");
    }

    #[test]
    fn proxy_urls_hide_their_credentials() {
        let u = SecretUrl::parse_proxy("http://bob:hunter2@proxy.example:3128").expect("valid");
        assert_eq!(u.redacted(), "http://<redacted>@proxy.example:3128");
        assert_eq!(format!("{u}"), "http://<redacted>@proxy.example:3128");
        assert!(!format!("{u:?}").contains("hunter2"));
        assert!(u.expose().contains("hunter2"));
        let u = SecretUrl::parse_proxy("https://proxy.example/").expect("valid");
        assert_eq!(u.redacted(), "https://proxy.example");
        for bad in [
            "proxy.example:3128",
            "socks5://proxy:1080",
            "http://u:hunter2@proxy/path",
            "http://",
            "http://proxy?x=1",
        ] {
            let e = SecretUrl::parse_proxy(bad).expect_err(bad);
            assert!(!e.contains("hunter2"));
        }
    }

    #[test]
    fn debug_and_display_are_redacted() {
        let s = Secret::new("SKexample/Secret+Key");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(s.expose(), "SKexample/Secret+Key");
    }

    #[test]
    fn trims_file_newlines() {
        assert_eq!(Secret::new("  ak\n").expose(), "ak");
    }
}
