//! Parsing a web config file: the YAML walk, key by key, with errors that name the file and the
//! dotted key. The TLS section is handed to `tls`. It does no I/O besides reading the files the
//! config names.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use yaml_rust2::{Yaml, YamlLoader};

use super::{ActiveWebConfig, Watched, WebConfigError};
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

/// Parses `text` (the content of `file`) and reads the files it names. `watched` records those
/// files, with what was read from them, even when loading fails, so the watcher notices when a
/// missing one appears or one changes after it was read.
pub fn parse(
    file: &Path,
    text: &str,
    watched: &mut Watched,
) -> Result<ActiveWebConfig, WebConfigError> {
    let cx = Cx {
        file,
        dir: file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    let docs =
        YamlLoader::load_from_str(text).map_err(|e| cx.err("", format!("invalid YAML: {e}")))?;
    if docs.len() > 1 {
        return Err(cx.err("", "more than one YAML document"));
    }
    let root = docs.into_iter().next().unwrap_or(Yaml::Null);
    let top = cx.map(&root, "")?;
    let mut config = ActiveWebConfig::plain();
    let mut tls_section = None;
    for (k, v) in top {
        let key = cx.key_name(k, "")?;
        match key.as_str() {
            "tls_server_config" => tls_section = Some(v),
            "http_server_config" => {
                for (k2, v2) in cx.map(v, "http_server_config")? {
                    let key2 = cx.key_name(k2, "http_server_config")?;
                    match key2.as_str() {
                        "http2" => {
                            if cx.boolean(v2, "http_server_config.http2")? {
                                config.warnings.push(
                                    "http_server_config.http2: ignored; the exporter serves HTTP/1.1 only".into(),
                                );
                            }
                        }
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
            "rate_limit" => config.rate_limit = cx.rate_limit(v)?.map(Arc::new),
            other => return Err(cx.unknown("", other)),
        }
    }
    if let Some(tls) = tls_section {
        let (acceptor, client_auth) = cx.tls(tls, watched, &mut config.warnings)?;
        config.tls = acceptor;
        config.client_auth = client_auth;
    }
    Ok(config)
}

/// Reads and parses `file`; see [`parse`]. `file` itself is recorded in `watched` too.
pub fn load(file: &Path, watched: &mut Watched) -> Result<ActiveWebConfig, WebConfigError> {
    let err = |message: String| WebConfigError {
        file: file.to_path_buf(),
        key: String::new(),
        message,
    };
    let bytes = watched
        .read(file)
        .map_err(|e| err(format!("cannot read: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|_| err("cannot read: not UTF-8 text".into()))?;
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
        v: &'y Yaml,
        key: &str,
    ) -> Result<Vec<(&'y Yaml, &'y Yaml)>, WebConfigError> {
        match v {
            Yaml::Hash(h) => Ok(h.iter().collect()),
            Yaml::Null => Ok(Vec::new()),
            _ => Err(self.err(key, "expected a mapping")),
        }
    }

    pub(super) fn key_name(&self, k: &Yaml, parent: &str) -> Result<String, WebConfigError> {
        match k {
            Yaml::String(s) => Ok(s.clone()),
            Yaml::Integer(i) => Ok(i.to_string()),
            Yaml::Boolean(b) => Ok(b.to_string()),
            _ => Err(self.err(parent, "keys must be strings")),
        }
    }

    pub(super) fn string(&self, v: &Yaml, key: &str) -> Result<String, WebConfigError> {
        match v {
            Yaml::String(s) => Ok(s.clone()),
            Yaml::Null => Ok(String::new()),
            _ => Err(self.err(key, "expected a string")),
        }
    }

    pub(super) fn boolean(&self, v: &Yaml, key: &str) -> Result<bool, WebConfigError> {
        match v {
            Yaml::Boolean(b) => Ok(*b),
            Yaml::Null => Ok(false),
            _ => Err(self.err(key, "expected true or false")),
        }
    }

    /// `rate_limit: {interval: <duration>, burst: <int>}`; `None` when it does not limit.
    pub(super) fn rate_limit(&self, v: &Yaml) -> Result<Option<RateLimiter>, WebConfigError> {
        let mut interval = Duration::ZERO;
        let mut burst = 0u32;
        for (k, val) in self.map(v, "rate_limit")? {
            let name = self.key_name(k, "rate_limit")?;
            match name.as_str() {
                "interval" => interval = self.duration(val, "rate_limit.interval")?,
                "burst" => {
                    burst = match val {
                        Yaml::Integer(n) => u32::try_from(*n).map_err(|_| {
                            self.err(
                                "rate_limit.burst",
                                format!("{n} is not a count of requests"),
                            )
                        })?,
                        Yaml::Null => 0,
                        _ => return Err(self.err("rate_limit.burst", "expected an integer")),
                    }
                }
                other => return Err(self.unknown("rate_limit.", other)),
            }
        }
        Ok(RateLimiter::new(interval, burst))
    }

    /// A Go-style duration (`1s`, `250ms`, `1m30s`) or 0.
    pub(super) fn duration(&self, v: &Yaml, key: &str) -> Result<Duration, WebConfigError> {
        match v {
            Yaml::Integer(0) | Yaml::Null => Ok(Duration::ZERO),
            Yaml::String(s) if s.trim() == "0" => Ok(Duration::ZERO),
            Yaml::String(s) => humantime::parse_duration(s.trim())
                .map_err(|e| self.err(key, format!("invalid duration {s:?}: {e}"))),
            _ => Err(self.err(key, "expected a duration such as 1s or 250ms")),
        }
    }

    pub(super) fn strings(&self, v: &Yaml, key: &str) -> Result<Vec<String>, WebConfigError> {
        match v {
            Yaml::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, x)| self.string(x, &format!("{key}[{i}]")))
                .collect(),
            Yaml::Null => Ok(Vec::new()),
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
        watched: &mut Watched,
    ) -> Result<Vec<u8>, WebConfigError> {
        let path = self.path(p);
        watched
            .read(&path)
            .map_err(|e| self.err(key, format!("cannot read {}: {e}", path.display())))
    }

    pub(super) fn headers(&self, v: &Yaml) -> Result<HeaderMap, WebConfigError> {
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
        parse(Path::new("/etc/dli/web.yml"), text, &mut Watched::default())
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
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
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
    fn relative_paths_resolve_against_the_file() {
        let mut watched = Watched::default();
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
        assert_eq!(
            watched.paths().collect::<Vec<_>>(),
            vec![Path::new("/etc/dli/tls/c.pem")]
        );
    }
}
