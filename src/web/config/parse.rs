//! Parsing a web config file: the YAML walk, key by key, with errors that name the file and the
//! dotted key. Values are read as exporter-toolkit reads them (see `golang`): any scalar is a
//! string's text, YAML 1.1 booleans, Go durations. The TLS section is handed to `tls`. It does no
//! I/O besides reading the files the config names.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{HeaderMap, HeaderName, HeaderValue};

use super::golang::{self, DurationError};
use super::yaml::{self, Node};
use super::{ActiveWebConfig, WebConfigError};
use crate::secret::Secret;
use crate::web::basic_auth::{self, BasicAuth};
use crate::web::rate_limit::RateLimiter;

/// Headers the toolkit lets a web config set, with the values it allows (empty: any value).
const ALLOWED_HEADERS: [(&str, &[&str]); 5] = [
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// Parses `text` (the content of `file`) and reads the files it names. `watched` collects those
/// files even when loading fails, so the watcher notices when a missing one appears.
pub fn parse(
    file: &Path,
    text: &str,
    watched: &mut Vec<PathBuf>,
) -> Result<ActiveWebConfig, WebConfigError> {
    let cx = Cx {
        file,
        dir: file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    let root = yaml::load(text).map_err(|e| cx.err("", format!("invalid YAML: {e}")))?;
    let top = cx.map(&root, "")?;
    let mut config = ActiveWebConfig::plain();
    let mut tls_section = None;
    // The toolkit's default; `http2:` with no value is false there (go-yaml's zero value).
    let mut http2 = true;
    for (k, v) in top {
        let key = cx.key_name(k, "")?;
        match key.as_str() {
            "tls_server_config" => tls_section = Some(v),
            "http_server_config" => {
                for (k2, v2) in cx.map(v, "http_server_config")? {
                    let key2 = cx.key_name(k2, "http_server_config")?;
                    match key2.as_str() {
                        "http2" => http2 = cx.boolean(v2, "http_server_config.http2")?,
                        "headers" => config.headers = cx.headers(v2)?,
                        other => return Err(cx.unknown("http_server_config.", other)),
                    }
                }
            }
            "basic_auth_users" => {
                let mut users = HashMap::new();
                for (uk, uv) in cx.map(v, "basic_auth_users")? {
                    let user = cx.key_name(uk, "basic_auth_users")?;
                    let key = format!("basic_auth_users.{user}");
                    if user.contains(':') {
                        return Err(cx.err(&key, "a user name cannot contain ':'"));
                    }
                    let hash = cx.string(uv, &key)?;
                    if !basic_auth::is_bcrypt_hash(&hash) {
                        return Err(cx.err(&key, "not a bcrypt hash (make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)"));
                    }
                    users.insert(user, Secret::new(hash));
                }
                if !users.is_empty() {
                    config.auth = Some(Arc::new(BasicAuth::new(users)));
                }
            }
            "rate_limit" => {
                config.rate_limit = cx.rate_limit(v, &mut config.warnings)?.map(Arc::new)
            }
            other => return Err(cx.unknown("", other)),
        }
    }
    if let Some(tls) = tls_section {
        let (acceptor, client_auth) = cx.tls(tls, http2, watched, &mut config.warnings)?;
        config.http2 = http2 && acceptor.is_some();
        config.tls = acceptor;
        config.client_auth = client_auth;
    }
    Ok(config)
}

/// Reads and parses `file`; see [`parse`].
pub fn load(file: &Path, watched: &mut Vec<PathBuf>) -> Result<ActiveWebConfig, WebConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| WebConfigError {
        file: file.to_path_buf(),
        key: String::new(),
        message: format!("cannot read: {e}"),
    })?;
    parse(file, &text, watched)
}

pub(super) struct Cx<'a> {
    pub(super) file: &'a Path,
    pub(super) dir: PathBuf,
}

impl Cx<'_> {
    pub(super) fn err(&self, key: &str, message: impl Into<String>) -> WebConfigError {
        WebConfigError {
            file: self.file.to_path_buf(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    pub(super) fn unknown(&self, prefix: &str, key: &str) -> WebConfigError {
        self.err(&format!("{prefix}{key}"), "unknown key")
    }

    /// The entries of a mapping (`null` is an empty one).
    pub(super) fn map<'y>(
        &self,
        v: &'y Node,
        key: &str,
    ) -> Result<Vec<(&'y Node, &'y Node)>, WebConfigError> {
        match v {
            Node::Map(entries) => Ok(entries.iter().map(|(k, v)| (k, v)).collect()),
            Node::Null => Ok(Vec::new()),
            _ => Err(self.err(key, "expected a mapping")),
        }
    }

    pub(super) fn key_name(&self, k: &Node, parent: &str) -> Result<String, WebConfigError> {
        match k.text() {
            Some(s) => Ok(s.to_string()),
            None => Err(self.err(parent, "keys must be strings")),
        }
    }

    /// Any scalar as written (as go-yaml fills a Go string: `1` is `"1"`); null is empty.
    pub(super) fn string(&self, v: &Node, key: &str) -> Result<String, WebConfigError> {
        match v {
            Node::Scalar(s) => Ok(s.text.clone()),
            Node::Null => Ok(String::new()),
            _ => Err(self.err(key, "expected a string")),
        }
    }

    /// An unquoted YAML 1.1 boolean (`true`, `false`, `yes`, `no`, `on`, `off`, ...); null is
    /// false, as go-yaml leaves a Go bool at its zero value.
    pub(super) fn boolean(&self, v: &Node, key: &str) -> Result<bool, WebConfigError> {
        match v {
            Node::Null => Ok(false),
            Node::Scalar(s) if s.plain => golang::yaml_bool(&s.text)
                .ok_or_else(|| self.err(key, format!("expected true or false, got {:?}", s.text))),
            _ => Err(self.err(key, "expected true or false (unquoted)")),
        }
    }

    /// `rate_limit: {interval: <duration>, burst: <int>}`; `None` when it does not limit.
    pub(super) fn rate_limit(
        &self,
        v: &Node,
        warnings: &mut Vec<String>,
    ) -> Result<Option<RateLimiter>, WebConfigError> {
        let mut interval = Duration::ZERO;
        let mut burst = 0u32;
        for (k, val) in self.map(v, "rate_limit")? {
            let name = self.key_name(k, "rate_limit")?;
            match name.as_str() {
                "interval" => interval = self.duration(val, "rate_limit.interval")?,
                "burst" => {
                    burst = match val {
                        Node::Null => 0,
                        Node::Scalar(s) if s.plain => {
                            let n = golang::parse_int(&s.text).ok_or_else(|| {
                                self.err(
                                    "rate_limit.burst",
                                    format!("expected an integer, got {:?}", s.text),
                                )
                            })?;
                            u32::try_from(n).map_err(|_| {
                                self.err(
                                    "rate_limit.burst",
                                    format!("{n} is not a count of requests"),
                                )
                            })?
                        }
                        _ => return Err(self.err("rate_limit.burst", "expected an integer")),
                    }
                }
                other => return Err(self.unknown("rate_limit.", other)),
            }
        }
        let limiter = RateLimiter::new(interval, burst);
        if limiter.is_some() && burst == 0 {
            warnings.push(
                "rate_limit.burst: 0 answers every request with 429 (as in exporter-toolkit); \
                 set burst to 1 or more, or interval to 0 to turn the limit off"
                    .into(),
            );
        }
        Ok(limiter)
    }

    /// A Go duration (`1s`, `250ms`, `1m30s`, `1.5s`) or 0.
    pub(super) fn duration(&self, v: &Node, key: &str) -> Result<Duration, WebConfigError> {
        let text = match v {
            Node::Null => return Ok(Duration::ZERO),
            Node::Scalar(s) => s.text.trim(),
            _ => return Err(self.err(key, "expected a duration such as 1s or 250ms")),
        };
        if let Some(n) = golang::parse_int(text) {
            if n == 0 {
                return Ok(Duration::ZERO);
            }
            // go-yaml reads a bare number as nanoseconds, which nobody means.
            return Err(self.err(
                key,
                format!("{text} has no unit (exporter-toolkit would read nanoseconds); write e.g. {text}s"),
            ));
        }
        golang::parse_duration(text).map_err(|e| {
            self.err(
                key,
                match e {
                    DurationError::Invalid => {
                        format!("invalid duration {text:?} (expected e.g. 1s, 250ms, 1m30s)")
                    }
                    DurationError::Negative => format!("negative duration {text:?}"),
                    DurationError::TooLarge => format!("duration {text:?} is too large"),
                },
            )
        })
    }

    /// A list of strings; `None` when the key has no value (which differs from `[]`).
    pub(super) fn strings_opt(
        &self,
        v: &Node,
        key: &str,
    ) -> Result<Option<Vec<String>>, WebConfigError> {
        match v {
            Node::Seq(a) => a
                .iter()
                .enumerate()
                .map(|(i, x)| self.string(x, &format!("{key}[{i}]")))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Node::Null => Ok(None),
            _ => Err(self.err(key, "expected a list of strings")),
        }
    }

    pub(super) fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    pub(super) fn read_file(
        &self,
        key: &str,
        p: &str,
        watched: &mut Vec<PathBuf>,
    ) -> Result<Vec<u8>, WebConfigError> {
        let path = self.path(p);
        watched.push(path.clone());
        std::fs::read(&path)
            .map_err(|e| self.err(key, format!("cannot read {}: {e}", path.display())))
    }

    pub(super) fn headers(&self, v: &Node) -> Result<HeaderMap, WebConfigError> {
        let mut out = HeaderMap::new();
        for (k, val) in self.map(v, "http_server_config.headers")? {
            let name = self.key_name(k, "http_server_config.headers")?;
            let key = format!("http_server_config.headers.{name}");
            let Some((_, allowed)) = ALLOWED_HEADERS
                .iter()
                .find(|(h, _)| h.eq_ignore_ascii_case(&name))
            else {
                let names: Vec<&str> = ALLOWED_HEADERS.iter().map(|(h, _)| *h).collect();
                return Err(self.err(
                    &key,
                    format!(
                        "this header cannot be configured (allowed: {})",
                        names.join(", ")
                    ),
                ));
            };
            let value = self.string(val, &key)?;
            if !allowed.is_empty() && !allowed.iter().any(|a| a.eq_ignore_ascii_case(&value)) {
                return Err(self.err(
                    &key,
                    format!("invalid value {value:?}; expected one of {allowed:?}"),
                ));
            }
            if value.is_empty() {
                // The toolkit documents a blank value as "unset".
                continue;
            }
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| self.err(&key, format!("invalid header name: {e}")))?;
            let value = HeaderValue::from_str(&value)
                .map_err(|e| self.err(&key, format!("invalid header value: {e}")))?;
            out.insert(name, value);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<ActiveWebConfig, WebConfigError> {
        parse(Path::new("/etc/dli/web.yml"), text, &mut Vec::new())
    }

    fn err_of(text: &str) -> String {
        match parse_str(text) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    const HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

    #[test]
    fn node_exporter_style_file_without_tls_parses() {
        let c = parse_str(&format!(
            "# web-config.yml for node_exporter\n\
             http_server_config:\n  http2: true\n  headers:\n    X-Frame-Options: deny\n    \
             Strict-Transport-Security: max-age=31536000\n\
             basic_auth_users:\n  prometheus: {HASH}\n  'alice': \"{HASH}\"\n\
             tls_server_config: {{}}\n"
        ))
        .expect("parses");
        assert!(c.tls.is_none());
        assert_eq!(c.auth.as_ref().map(|a| a.user_count()), Some(2));
        assert_eq!(
            c.headers.get("x-frame-options").map(|v| v.as_bytes()),
            Some(&b"deny"[..])
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert!(!format!("{c:?}").contains("$2y$"), "hash in Debug");
        assert!(parse_str("").expect("empty file").auth.is_none());
    }

    #[test]
    fn each_bad_key_is_named() {
        let cases: &[(&str, &str)] = &[
            (
                "bogus: 1\n",
                "web config /etc/dli/web.yml: bogus: unknown key",
            ),
            (
                "tls_server_config:\n  cert_fil: a\n",
                "tls_server_config.cert_fil: unknown key",
            ),
            (
                "http_server_config:\n  header: {}\n",
                "http_server_config.header: unknown key",
            ),
            (
                "http_server_config:\n  http2: maybe\n",
                "http_server_config.http2: expected true or false",
            ),
            (
                "http_server_config:\n  headers:\n    Server: x\n",
                "http_server_config.headers.Server: this header cannot be configured",
            ),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                "http_server_config.headers.X-Frame-Options: invalid value",
            ),
            (
                "basic_auth_users:\n  bob: plain\n",
                "basic_auth_users.bob: not a bcrypt hash",
            ),
            (
                "basic_auth_users: [a]\n",
                "basic_auth_users: expected a mapping",
            ),
            (
                "tls_server_config:\n  cert_file: /nonexistent/a.pem\n  key_file: k.pem\n",
                "tls_server_config.cert_file: cannot read /nonexistent/a.pem:",
            ),
            (
                "tls_server_config:\n  key_file: k.pem\n",
                "tls_server_config: missing one of cert or cert_file",
            ),
            (
                "tls_server_config:\n  cert: x\n  key: y\n  client_auth_type: Sometimes\n",
                "tls_server_config.client_auth_type: invalid value \"Sometimes\"",
            ),
            (
                "tls_server_config:\n  cert: x\n  key: y\n",
                "tls_server_config.cert: no CERTIFICATE block found",
            ),
            ("a: [\n", "invalid YAML"),
        ];
        for (text, want) in cases {
            let got = err_of(text);
            assert!(got.contains(want), "{text:?}: got {got:?}, want {want:?}");
        }
        let got = err_of(&format!("basic_auth_users:\n  bob: {}x\n", &HASH[..20]));
        assert!(!got.contains(&HASH[..20]), "hash leaked into {got}");
    }

    #[test]
    fn scalars_are_read_as_the_toolkit_reads_them() {
        // Unquoted numbers and booleans are header values as written; YAML 1.1 booleans.
        let c = parse_str(
            "http_server_config:\n  http2: no\n  headers:\n    X-XSS-Protection: 1\n    \
             Strict-Transport-Security: 0x1F\n    Content-Security-Policy: true\n\
             rate_limit:\n  interval: 1m30s\n  burst: 0x10\n",
        )
        .expect("parses");
        let h = |n: &str| {
            c.headers
                .get(n)
                .map(|v| v.to_str().unwrap_or("?").to_string())
        };
        assert_eq!(h("x-xss-protection").as_deref(), Some("1"));
        assert_eq!(h("strict-transport-security").as_deref(), Some("0x1F"));
        assert_eq!(h("content-security-policy").as_deref(), Some("true"));
        assert_eq!(
            c.rate_limit.as_ref().map(|r| r.describe()),
            Some("1 request per 90s, bursts of 16".to_string())
        );
        // A blank header is unset, as the toolkit documents.
        let c = parse_str("http_server_config:\n  headers:\n    X-XSS-Protection: ''\n")
            .expect("parses");
        assert!(c.headers.is_empty());
        // burst 0 limits everything, with a warning.
        let c = parse_str("rate_limit:\n  interval: 1s\n  burst: 0\n").expect("parses");
        assert_eq!(
            c.rate_limit.as_ref().map(|r| r.describe()),
            Some("every request refused (burst 0)".to_string())
        );
        assert!(
            c.warnings.iter().any(|w| w.contains("429")),
            "{:?}",
            c.warnings
        );
        assert!(
            parse_str("rate_limit:\n  interval: 0\n  burst: 0\n")
                .expect("parses")
                .rate_limit
                .is_none()
        );
        for (text, want) in [
            (
                "rate_limit:\n  interval: 5\n",
                "rate_limit.interval: 5 has no unit",
            ),
            ("rate_limit:\n  interval: -1s\n", "negative duration"),
            (
                "rate_limit:\n  burst: 1.5\n",
                "rate_limit.burst: expected an integer",
            ),
            (
                "rate_limit:\n  burst: '3'\n",
                "rate_limit.burst: expected an integer",
            ),
            (
                "http_server_config:\n  http2: 'true'\n",
                "http2: expected true or false",
            ),
            ("a: 1\na: 2\n", "duplicate key"),
        ] {
            let got = err_of(text);
            assert!(got.contains(want), "{text:?}: got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let mut watched = Vec::new();
        let e = parse(
            Path::new("/etc/dli/web.yml"),
            "tls_server_config:\n  cert_file: tls/c.pem\n  key_file: tls/k.pem\n",
            &mut watched,
        )
        .expect_err("files do not exist");
        assert!(
            e.to_string().contains("cannot read /etc/dli/tls/c.pem"),
            "{e}"
        );
        assert_eq!(watched, vec![PathBuf::from("/etc/dli/tls/c.pem")]);
    }
}
