//! SDK-HMAC-SHA256 request signing (docs/dli-api.md, "Signing"), the default scheme of Huawei's SDKs.
//!
//! Owns the canonical query, canonical URI, canonical request, string to sign and the
//! `Authorization` header, for the client (signing) and the simulator (verifying). It must not
//! send anything or read credentials from anywhere: callers pass them in.

use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::macros::format_description;

use crate::secret::Secret;

/// The algorithm name that starts the string to sign and the `Authorization` header.
pub const ALGORITHM: &str = "SDK-HMAC-SHA256";
/// SHA-256 of the empty body: every GET signs this payload hash.
pub const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// RFC 3986 unreserved characters stay literal; everything else is `%XX` (uppercase hex).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes one query key, value or path segment the way the signer does.
pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

/// The canonical query string: raw (key, value) pairs sorted by code point (key, then value),
/// each written `enc(key)=enc(value)`, joined by `&`. The client sends exactly this string, so what
/// is signed is what is sent.
pub fn canonical_query<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> String {
    let mut sorted: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    sorted.sort_unstable();
    let mut out = String::new();
    for (i, (k, v)) in sorted.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&encode(k));
        out.push('=');
        out.push_str(&encode(v));
    }
    out
}

/// The canonical URI: each path segment decoded then re-encoded, with a trailing `/` appended
/// when the path does not end in one (the request itself is sent without it).
pub fn canonical_uri(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 1);
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let decoded = percent_decode_str(segment).decode_utf8_lossy();
        out.push_str(&encode(&decoded));
    }
    if !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// A canonical request and the `SignedHeaders` list that goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical {
    pub request: String,
    pub signed_headers: String,
}

/// Builds the canonical request. `headers` are the (name, value) pairs to sign; names with an
/// underscore are skipped as the SDK does, names are lowercased and sorted, values trimmed.
pub fn canonical_request(
    method: &str,
    path: &str,
    canonical_query: &str,
    headers: &[(&str, &str)],
    payload_sha256: &str,
) -> Canonical {
    let mut hs: Vec<(String, &str)> = headers
        .iter()
        .filter(|(name, _)| !name.contains('_'))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim()))
        .collect();
    hs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut canonical_headers = String::new();
    for (name, value) in &hs {
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(value);
        canonical_headers.push('\n');
    }
    let signed_headers = hs
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let request = format!(
        "{method}\n{uri}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{payload_sha256}",
        uri = canonical_uri(path),
    );
    Canonical {
        request,
        signed_headers,
    }
}

/// `SDK-HMAC-SHA256\n{X-Sdk-Date}\n{hex(sha256(canonical_request))}`.
pub fn string_to_sign(sdk_date: &str, canonical_request: &str) -> String {
    let digest = Sha256::digest(canonical_request.as_bytes());
    format!("{ALGORITHM}\n{sdk_date}\n{}", hex::encode(digest))
}

/// Lowercase hex HMAC-SHA256 of the string to sign, keyed with the secret key's UTF-8 bytes.
pub fn signature(secret_key: &Secret, string_to_sign: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail; an empty key is still a key.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret_key.expose().as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(string_to_sign.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// `SDK-HMAC-SHA256 Access={AK}, SignedHeaders={list}, Signature={hex}`.
pub fn authorization(access_key: &str, signed_headers: &str, signature: &str) -> String {
    format!(
        "{ALGORITHM} Access={access_key}, SignedHeaders={signed_headers}, Signature={signature}"
    )
}

/// Formats a time as `X-Sdk-Date` (`%Y%m%dT%H%M%SZ`, UTC).
pub fn sdk_date(now: OffsetDateTime) -> String {
    let fmt = format_description!("[year][month][day]T[hour][minute][second]Z");
    now.to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_else(|_| String::from("19700101T000000Z"))
}

/// Parses an `X-Sdk-Date` value; `None` when it is not of the signer's form.
pub fn parse_sdk_date(value: &str) -> Option<OffsetDateTime> {
    let fmt = format_description!("[year][month][day]T[hour][minute][second]Z");
    time::PrimitiveDateTime::parse(value, &fmt)
        .ok()
        .map(|t| t.assume_utc())
}

/// The parts of an `Authorization` header, as the simulator's verifier needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedAuthorization {
    pub access_key: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

/// Parses `SDK-HMAC-SHA256 Access=…, SignedHeaders=…, Signature=…`; `None` if malformed.
pub fn parse_authorization(header: &str) -> Option<ParsedAuthorization> {
    let rest = header.strip_prefix(ALGORITHM)?.strip_prefix(' ')?;
    let (mut access, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "Access" => access = Some(v.to_string()),
            "SignedHeaders" => signed = Some(v.split(';').map(str::to_string).collect()),
            "Signature" => sig = Some(v.to_string()),
            _ => return None,
        }
    }
    Some(ParsedAuthorization {
        access_key: access?,
        signed_headers: signed?,
        signature: sig?,
    })
}

/// AK/SK credentials and the one operation they are for: signing a request.
#[derive(Clone)]
pub struct AkSkSigner {
    access_key: Secret,
    secret_key: Secret,
    security_token: Option<Secret>,
}

impl std::fmt::Debug for AkSkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AkSkSigner")
            .field("access_key", &self.access_key)
            .field("secret_key", &self.secret_key)
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The headers a signed request carries, in the order they are added.
pub type SignedHeaders = Vec<(&'static str, String)>;

impl AkSkSigner {
    pub fn new(access_key: Secret, secret_key: Secret, security_token: Option<Secret>) -> Self {
        AkSkSigner {
            access_key,
            secret_key,
            security_token,
        }
    }

    /// Signs a bodiless request and returns every header to send: `Content-Type`, `Host`,
    /// `X-Project-Id`, `X-Sdk-Date`, optional `X-Security-Token`, and `Authorization`.
    /// `host` is the URL's netloc (host[:port]); `canonical_query` must be what is sent.
    pub fn sign(
        &self,
        method: &str,
        host: &str,
        path: &str,
        canonical_query: &str,
        project_id: &str,
        sdk_date: &str,
    ) -> SignedHeaders {
        self.sign_for(
            method,
            host,
            path,
            canonical_query,
            Some(project_id),
            sdk_date,
        )
    }

    /// [`AkSkSigner::sign`] for a request that belongs to no project yet (`None`: no
    /// `X-Project-Id`, as the SDK sends the IAM project lookup).
    pub fn sign_for(
        &self,
        method: &str,
        host: &str,
        path: &str,
        canonical_query: &str,
        project_id: Option<&str>,
        sdk_date: &str,
    ) -> SignedHeaders {
        let mut headers: SignedHeaders = vec![
            ("Content-Type", "application/json".to_string()),
            ("Host", host.to_string()),
        ];
        if let Some(project_id) = project_id {
            headers.push(("X-Project-Id", project_id.to_string()));
        }
        headers.push(("X-Sdk-Date", sdk_date.to_string()));
        if let Some(token) = &self.security_token {
            headers.push(("X-Security-Token", token.expose().to_string()));
        }
        let pairs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let canonical =
            canonical_request(method, path, canonical_query, &pairs, EMPTY_PAYLOAD_SHA256);
        let sts = string_to_sign(sdk_date, &canonical.request);
        let sig = signature(&self.secret_key, &sts);
        headers.push((
            "Authorization",
            authorization(self.access_key.expose(), &canonical.signed_headers, &sig),
        ));
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct VectorFile {
        algorithm: String,
        access_key: String,
        secret_key: String,
        project_id: String,
        x_sdk_date: String,
        security_token: Option<String>,
        vectors: Vec<Vector>,
    }

    #[derive(Deserialize)]
    struct Vector {
        name: String,
        method: String,
        url: String,
        path: String,
        query_pairs: Vec<(String, String)>,
        headers: std::collections::BTreeMap<String, String>,
        canonical_request: String,
        string_to_sign: String,
        authorization: String,
    }

    /// The signature vectors produced by Huawei's official SDK signer (docs/dli-api.md,
    /// "Signing"), kept in the repository byte for byte as they were delivered.
    fn vectors_path() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/sdk-hmac-sha256.json")
    }

    /// The SHA-256 of the vectors file as delivered: an edit to it (by hand or by a formatter)
    /// would make the signer "pass" against something that is no longer the SDK's output.
    const VECTORS_SHA256: &str = "7692ca5c7c9946042bd48df39238456cbd038b62a5099e21464b663d7a44902d";

    #[test]
    fn the_vectors_file_is_the_one_delivered() {
        let path = vectors_path();
        let bytes =
            std::fs::read(&path).unwrap_or_else(|e| panic!("vectors at {}: {e}", path.display()));
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            VECTORS_SHA256,
            "{} changed: restore the file as the SDK produced it",
            path.display()
        );
    }

    fn vectors() -> VectorFile {
        let path = vectors_path();
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("official vectors at {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
    }

    #[test]
    fn reproduces_every_official_vector_byte_for_byte() {
        let file = vectors();
        assert_eq!(file.algorithm, ALGORITHM);
        assert!(file.vectors.len() >= 6, "expected the six official vectors");
        let signer = AkSkSigner::new(
            Secret::new(file.access_key.clone()),
            Secret::new(file.secret_key.clone()),
            file.security_token.clone().map(Secret::new),
        );
        for v in &file.vectors {
            let query = canonical_query(&v.query_pairs);
            let headers: Vec<(&str, &str)> = v
                .headers
                .iter()
                .map(|(k, val)| (k.as_str(), val.as_str()))
                .collect();
            let canonical =
                canonical_request(&v.method, &v.path, &query, &headers, EMPTY_PAYLOAD_SHA256);
            assert_eq!(
                canonical.request, v.canonical_request,
                "canonical request of {}",
                v.name
            );
            let sts = string_to_sign(&file.x_sdk_date, &canonical.request);
            assert_eq!(sts, v.string_to_sign, "string to sign of {}", v.name);
            let auth = authorization(
                &file.access_key,
                &canonical.signed_headers,
                &signature(&Secret::new(file.secret_key.clone()), &sts),
            );
            assert_eq!(auth, v.authorization, "authorization of {}", v.name);

            // The sent URL carries exactly the signed query string.
            let host = &v.headers["Host"];
            let sent = if query.is_empty() {
                format!("https://{host}{}", v.path)
            } else {
                format!("https://{host}{}?{query}", v.path)
            };
            assert_eq!(sent, v.url, "sent URL of {}", v.name);

            // The signer used by the client produces the same Authorization header.
            let signed = signer.sign(
                &v.method,
                host,
                &v.path,
                &query,
                &file.project_id,
                &file.x_sdk_date,
            );
            let got = signed
                .iter()
                .find(|(n, _)| *n == "Authorization")
                .map(|(_, v)| v.as_str());
            assert_eq!(
                got,
                Some(v.authorization.as_str()),
                "client signer on {}",
                v.name
            );
        }
    }

    #[test]
    fn security_token_is_signed_when_present() {
        let signer = AkSkSigner::new(
            Secret::new("ak"),
            Secret::new("sk"),
            Some(Secret::new("tok")),
        );
        let h = signer.sign("GET", "h", "/p", "", "pid", "20250115T083000Z");
        let auth = &h
            .iter()
            .find(|(n, _)| *n == "Authorization")
            .expect("auth header")
            .1;
        assert!(
            auth.contains(
                "SignedHeaders=content-type;host;x-project-id;x-sdk-date;x-security-token"
            )
        );
    }

    #[test]
    fn encoding_rules() {
        assert_eq!(encode("a b+c*d/e~f"), "a%20b%2Bc%2Ad%2Fe~f");
        assert_eq!(canonical_uri("/v2.0/p/batches"), "/v2.0/p/batches/");
        assert_eq!(canonical_uri("/a%20b/"), "/a%20b/");
        assert_eq!(canonical_query::<&str, &str>(&[]), "");
        assert_eq!(canonical_query(&[("k", "")]), "k=");
    }

    #[test]
    fn sdk_date_round_trips() {
        let t = parse_sdk_date("20250115T083000Z").expect("parses");
        assert_eq!(sdk_date(t), "20250115T083000Z");
        assert!(parse_sdk_date("2025-01-15").is_none());
    }

    #[test]
    fn parses_authorization() {
        let p = parse_authorization(
            "SDK-HMAC-SHA256 Access=AK, SignedHeaders=host;x-sdk-date, Signature=ab",
        )
        .expect("parses");
        assert_eq!(p.access_key, "AK");
        assert_eq!(p.signed_headers, vec!["host", "x-sdk-date"]);
        assert_eq!(p.signature, "ab");
        assert!(parse_authorization("Bearer x").is_none());
    }

    #[test]
    fn debug_redacts() {
        let s = AkSkSigner::new(
            Secret::new("AKVALUE"),
            Secret::new("SKVALUE"),
            Some(Secret::new("TOKV")),
        );
        let d = format!("{s:?}");
        assert!(
            !d.contains("AKVALUE") && !d.contains("SKVALUE") && !d.contains("TOKV"),
            "{d}"
        );
    }
}
