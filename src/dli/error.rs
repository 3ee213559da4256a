//! The one error type of the DLI and IAM client, and its classification into the failure
//! reasons of docs/architecture.md ("Failures, retries and hold-off") (`timeout, connect, http_4xx, http_5xx, throttled, auth, decode`).
//!
//! It owns parsing of DLI/APIG/IAM error bodies (docs/dli-api.md, "Errors"). It never holds a secret: URLs
//! carry no credentials and bodies of failed token requests are not kept.

use std::fmt;
use std::time::Duration;

/// Which API call a request belongs to; the `operation` label of the API metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    ListBatches,
    IamToken,
    /// The ECS/CCE metadata service: session token and temporary keys (`auth.kind = "metadata"`).
    Metadata,
    /// The OIDC exchange with IAM: id token to unscoped token to temporary keys
    /// (`auth.kind = "oidc"`).
    Oidc,
    /// `GET /v1.0/{project_id}/queues` (discovery and the queue metrics).
    ListQueues,
    /// `GET {iam}/v3/projects?name={region}` (the project id of a region).
    ListProjects,
}

impl Operation {
    /// Every operation, for metrics that exist at 0 from the start.
    pub const ALL: [Operation; 6] = [
        Operation::ListBatches,
        Operation::IamToken,
        Operation::Metadata,
        Operation::Oidc,
        Operation::ListQueues,
        Operation::ListProjects,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::ListBatches => "list_batches",
            Operation::IamToken => "iam_token",
            Operation::Metadata => "metadata",
            Operation::Oidc => "oidc",
            Operation::ListQueues => "list_queues",
            Operation::ListProjects => "list_projects",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `reason` label of `dli_api_request_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    Timeout,
    Connect,
    Http4xx,
    Http5xx,
    Throttled,
    Auth,
    Decode,
}

impl FailureReason {
    pub const ALL: [FailureReason; 7] = [
        FailureReason::Timeout,
        FailureReason::Connect,
        FailureReason::Http4xx,
        FailureReason::Http5xx,
        FailureReason::Throttled,
        FailureReason::Auth,
        FailureReason::Decode,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Timeout => "timeout",
            FailureReason::Connect => "connect",
            FailureReason::Http4xx => "http_4xx",
            FailureReason::Http5xx => "http_5xx",
            FailureReason::Throttled => "throttled",
            FailureReason::Auth => "auth",
            FailureReason::Decode => "decode",
        }
    }

    /// Timeouts, connection failures, 5xx and throttling are worth another try; the rest are not.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            FailureReason::Timeout
                | FailureReason::Connect
                | FailureReason::Http5xx
                | FailureReason::Throttled
        )
    }
}

/// Every `reason` of `dli_poll_failures_total`: the request failure that ended the walk (the
/// [`FailureReason`]s), `inconsistent` (pages the walker cannot prove exact), `max_pages`, and
/// `timeout`, which also stands for the whole-walk bound (`poll.timeout`).
pub const POLL_FAILURE_REASONS: [&str; 9] = [
    "timeout",
    "connect",
    "http_4xx",
    "http_5xx",
    "throttled",
    "auth",
    "decode",
    "inconsistent",
    "max_pages",
];

/// An error answer from DLI, APIG or IAM, with everything the body and headers told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiErrorBody {
    pub status: u16,
    pub error_code: Option<String>,
    pub error_msg: Option<String>,
    pub request_id: Option<String>,
}

/// A failed DLI or IAM request (or a failed walk built from them). `Clone` so that one failed
/// credential refresh can answer every caller that waited for it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DliError {
    #[error("{operation} {url}: timed out after {}", humantime::format_duration(*.after))]
    Timeout {
        operation: Operation,
        url: String,
        after: Duration,
    },
    #[error("{operation} {url}: connection failed: {message}")]
    Connect {
        operation: Operation,
        url: String,
        message: String,
    },
    #[error("{operation} {url}: HTTP {}{}{}{}", .body.status,
        .body.error_code.as_deref().map(|c| format!(" {c}")).unwrap_or_default(),
        .body.error_msg.as_deref().map(|m| format!(": {m}")).unwrap_or_default(),
        .body.request_id.as_deref().map(|r| format!(" (X-Request-Id {r})")).unwrap_or_default())]
    Api {
        operation: Operation,
        url: String,
        body: ApiErrorBody,
        /// The `Retry-After` of a 429, if any.
        retry_after: Option<Duration>,
    },
    #[error("{operation} {url}: cannot decode the response (HTTP {status}): {message}{}",
        .request_id.as_deref().map(|r| format!(" (X-Request-Id {r})")).unwrap_or_default())]
    Decode {
        operation: Operation,
        url: String,
        status: u16,
        message: String,
        request_id: Option<String>,
    },
    #[error("{operation} {url}: response body exceeds the {limit}-byte limit; refused")]
    TooLarge {
        operation: Operation,
        url: String,
        limit: usize,
    },
    /// Not sent: the endpoint answered 429/APIGW.0308 repeatedly and the client holds further
    /// requests for a while (see `dli::throttle`). Classified as `throttled`.
    #[error("{operation} {url}: not sent: the endpoint throttled repeated requests (HTTP 429 / APIGW.0308); requests held for another {}", humantime::format_duration(*.remaining))]
    HeldOff {
        operation: Operation,
        url: String,
        remaining: Duration,
    },
    #[error("{operation} {url}: cannot build the request: {message}")]
    Request {
        operation: Operation,
        url: String,
        message: String,
    },
    /// A page whose `sessions` held more jobs than the `size` the request asked for: refused
    /// while decoding, at the first job too many. A request-level `decode` failure (not retried)
    /// and, for the walk, an inconsistent page ([`DliError::is_inconsistent`]).
    #[error("{operation} {url}: the page holds more than the {asked} jobs the request asked for (size={asked}); refused (HTTP {status}){}",
        .request_id.as_deref().map(|r| format!(" (X-Request-Id {r})")).unwrap_or_default())]
    OversizedPage {
        operation: Operation,
        url: String,
        asked: u32,
        status: u16,
        request_id: Option<String>,
    },
}

impl DliError {
    /// The failure reason for metrics and retry decisions.
    pub fn reason(&self) -> FailureReason {
        match self {
            DliError::Timeout { .. } => FailureReason::Timeout,
            DliError::Connect { .. } => FailureReason::Connect,
            DliError::Api { body, .. } => classify(body.status, body.error_code.as_deref()),
            DliError::HeldOff { .. } => FailureReason::Throttled,
            DliError::Decode { .. }
            | DliError::TooLarge { .. }
            | DliError::Request { .. }
            | DliError::OversizedPage { .. } => FailureReason::Decode,
        }
    }

    /// The answer contradicts the request in a way a walk must not build on (a page with more
    /// jobs than `size` asked for): the walk fails as `inconsistent`, not as `decode`.
    pub fn is_inconsistent(&self) -> bool {
        matches!(self, DliError::OversizedPage { .. })
    }

    pub fn is_retryable(&self) -> bool {
        self.reason().is_retryable()
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DliError::Api { retry_after, .. } => *retry_after,
            DliError::HeldOff { remaining, .. } => Some(*remaining),
            _ => None,
        }
    }

    /// The HTTP status, when there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            DliError::Api { body, .. } => Some(body.status),
            DliError::Decode { status, .. } | DliError::OversizedPage { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }

    /// The DLI/APIG error code, when the body carried one.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            DliError::Api { body, .. } => body.error_code.as_deref(),
            _ => None,
        }
    }

    pub fn operation(&self) -> Operation {
        match self {
            DliError::Timeout { operation, .. }
            | DliError::Connect { operation, .. }
            | DliError::Api { operation, .. }
            | DliError::Decode { operation, .. }
            | DliError::TooLarge { operation, .. }
            | DliError::HeldOff { operation, .. }
            | DliError::Request { operation, .. }
            | DliError::OversizedPage { operation, .. } => *operation,
        }
    }
}

/// Classification of an error answer (docs/architecture.md, "Failures, retries and hold-off"): throttling first, then authentication,
/// then the status class.
pub fn classify(status: u16, error_code: Option<&str>) -> FailureReason {
    let code = error_code.unwrap_or("");
    if status == 429 || code == "APIGW.0308" || code == "APIG.0308" {
        FailureReason::Throttled
    } else if status == 401
        || status == 403
        || matches!(
            code,
            "APIGW.0301" | "APIGW.0303" | "APIG.0301" | "APIG.0303" | "DLI.0013" | "DLI.0014"
        )
    {
        FailureReason::Auth
    } else if status >= 500 {
        FailureReason::Http5xx
    } else {
        FailureReason::Http4xx
    }
}

/// Longest error message kept from a body, so a huge HTML error page does not flood the logs.
pub const MAX_ERROR_MSG: usize = 512;
/// Longest error code kept (real ones look like `APIGW.0308`, `DLI.0001`).
pub const MAX_ERROR_CODE: usize = 64;
/// Longest request id kept (real ones are 32 hex digits).
pub const MAX_REQUEST_ID: usize = 128;

/// Server-supplied text made safe for logs and error messages: control characters (newlines,
/// escape sequences, NUL) are shown escaped (`\n`, `\u{1b}`) so an answer cannot forge or
/// garble log lines, and the result is at most `max` bytes, cut at a character boundary and
/// ending in `…` when cut.
pub fn bounded_text(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        let piece: String = if c.is_control() {
            c.escape_default().collect()
        } else {
            c.to_string()
        };
        if out.len().saturating_add(piece.len()) > max {
            while out.len() > max.saturating_sub('…'.len_utf8()) {
                out.pop();
            }
            out.push('…');
            return out;
        }
        out.push_str(&piece);
    }
    out
}

/// Reads `error_code`/`error_msg` from an error body the way the SDK does: the first of the
/// pairs `error_code`+`error_msg`, `errorCode`+`errorMsg`, `code`+`message`, looking into nested
/// objects; the raw body (shortened) is the message when none matches. `request_id` comes from the
/// `X-Request-Id` header, else from the body.
pub fn parse_error_body(
    status: u16,
    body: &[u8],
    header_request_id: Option<String>,
) -> ApiErrorBody {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let (mut code, mut msg) = (None, None);
    let mut body_request_id = None;
    if let Some(v) = &json {
        for (ck, mk) in [
            ("error_code", "error_msg"),
            ("errorCode", "errorMsg"),
            ("code", "message"),
        ] {
            if let Some((c, m)) = find_pair(v, ck, mk, 0) {
                code = Some(c);
                msg = Some(m);
                break;
            }
        }
        body_request_id = v
            .get("request_id")
            .and_then(|r| r.as_str())
            .map(str::to_string);
    }
    if msg.is_none() && !body.is_empty() {
        msg = Some(String::from_utf8_lossy(body).trim().to_string());
    }
    ApiErrorBody {
        status,
        error_code: code.map(|c| bounded_text(&c, MAX_ERROR_CODE)),
        error_msg: msg.map(|m| bounded_text(&m, MAX_ERROR_MSG)),
        request_id: header_request_id
            .or(body_request_id)
            .map(|r| bounded_text(&r, MAX_REQUEST_ID)),
    }
}

fn find_pair(v: &serde_json::Value, ck: &str, mk: &str, depth: usize) -> Option<(String, String)> {
    let obj = v.as_object()?;
    if let (Some(c), Some(m)) = (obj.get(ck), obj.get(mk)) {
        let text = |x: &serde_json::Value| match x {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        return Some((text(c), text(m)));
    }
    if depth >= 4 {
        return None;
    }
    obj.values()
        .find_map(|child| find_pair(child, ck, mk, depth + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dli_error_bodies() {
        let b = parse_error_body(
            400,
            br#"{"error_code":"DLI.0001","error_msg":"param check failed"}"#,
            Some("rid".into()),
        );
        assert_eq!(b.error_code.as_deref(), Some("DLI.0001"));
        assert_eq!(b.error_msg.as_deref(), Some("param check failed"));
        assert_eq!(b.request_id.as_deref(), Some("rid"));
        assert_eq!(classify(400, Some("DLI.0001")), FailureReason::Http4xx);
        assert_eq!(classify(400, Some("DLI.0999")), FailureReason::Http4xx);
        assert_eq!(classify(404, Some("DLI.0023")), FailureReason::Http4xx);
        assert_eq!(classify(401, Some("DLI.0013")), FailureReason::Auth);
        assert_eq!(classify(400, Some("DLI.0014")), FailureReason::Auth);
        assert_eq!(classify(500, None), FailureReason::Http5xx);
        assert_eq!(classify(503, Some("DLI.0999")), FailureReason::Http5xx);
    }

    #[test]
    fn apig_error_bodies() {
        let b = parse_error_body(
            429,
            br#"{"error_msg":"The throttling threshold has been reached","error_code":"APIGW.0308","request_id":"body-rid"}"#,
            None,
        );
        assert_eq!(b.error_code.as_deref(), Some("APIGW.0308"));
        assert_eq!(b.request_id.as_deref(), Some("body-rid"));
        assert_eq!(classify(429, None), FailureReason::Throttled);
        assert_eq!(classify(200, Some("APIGW.0308")), FailureReason::Throttled);
        assert_eq!(classify(400, Some("APIG.0308")), FailureReason::Throttled);
        assert_eq!(classify(401, Some("APIGW.0301")), FailureReason::Auth);
        assert_eq!(classify(400, Some("APIGW.0303")), FailureReason::Auth);
        assert_eq!(classify(403, None), FailureReason::Auth);
    }

    #[test]
    fn other_body_shapes_and_fallbacks() {
        let b = parse_error_body(400, br#"{"errorCode":"X.1","errorMsg":"camel"}"#, None);
        assert_eq!(
            (b.error_code.as_deref(), b.error_msg.as_deref()),
            (Some("X.1"), Some("camel"))
        );
        let b = parse_error_body(401, br#"{"error":{"code":401,"title":"Unauthorized","message":"The username or password is wrong."}}"#, None);
        assert_eq!(b.error_code.as_deref(), Some("401"));
        assert_eq!(
            b.error_msg.as_deref(),
            Some("The username or password is wrong.")
        );
        let b = parse_error_body(502, b"<html>Bad gateway</html>", None);
        assert_eq!(b.error_code, None);
        assert_eq!(b.error_msg.as_deref(), Some("<html>Bad gateway</html>"));
        let long = "x".repeat(5000);
        let b = parse_error_body(500, long.as_bytes(), None);
        assert!(b.error_msg.as_deref().is_some_and(|m| m.len() < 600));
    }

    #[test]
    fn codes_messages_and_request_ids_are_bounded_and_control_free() {
        let huge = "A".repeat(100_000);
        let body = serde_json::json!({
            "error_code": format!("DLI.\u{1b}[31m{huge}"),
            "error_msg": format!("line one\nlevel=error msg=forged\r\u{0}{huge}"),
        })
        .to_string();
        let b = parse_error_body(400, body.as_bytes(), Some(format!("rid\t{huge}")));
        let code = b.error_code.expect("code");
        let msg = b.error_msg.expect("message");
        let rid = b.request_id.expect("request id");
        assert!(
            code.len() <= MAX_ERROR_CODE && code.ends_with('…'),
            "{code}"
        );
        assert!(
            msg.len() <= MAX_ERROR_MSG && msg.ends_with('…'),
            "{}",
            msg.len()
        );
        assert!(rid.len() <= MAX_REQUEST_ID, "{}", rid.len());
        for text in [&code, &msg, &rid] {
            assert!(!text.chars().any(char::is_control), "{text:?}");
        }
        assert!(msg.starts_with("line one\\nlevel=error"), "{msg}");
        assert!(code.starts_with("DLI.\\u{1b}[31m"), "{code}");
        // Multi-byte text is cut at a character boundary.
        let cut = bounded_text(&"用户".repeat(1000), 100);
        assert!(cut.len() <= 100 && cut.ends_with('…'));
        assert_eq!(bounded_text("short", 100), "short");
    }

    #[test]
    fn poll_failure_reasons_hold_every_request_reason() {
        for r in FailureReason::ALL {
            assert!(POLL_FAILURE_REASONS.contains(&r.as_str()), "{r:?}");
        }
        assert!(POLL_FAILURE_REASONS.contains(&"inconsistent"));
        assert!(POLL_FAILURE_REASONS.contains(&"max_pages"));
    }

    #[test]
    fn an_oversized_page_is_a_decode_failure_and_inconsistent() {
        let e = DliError::OversizedPage {
            operation: Operation::ListBatches,
            url: "http://h/v2.0/p/batches?from=0&size=100".into(),
            asked: 100,
            status: 200,
            request_id: Some("r9".into()),
        };
        assert_eq!(e.reason(), FailureReason::Decode);
        assert!(!e.is_retryable());
        assert!(e.is_inconsistent());
        assert_eq!(e.status(), Some(200));
        let s = e.to_string();
        assert!(s.contains("size=100") && s.contains("r9"), "{s}");
        let other = DliError::Decode {
            operation: Operation::ListBatches,
            url: "u".into(),
            status: 200,
            message: "m".into(),
            request_id: None,
        };
        assert!(!other.is_inconsistent());
    }

    #[test]
    fn retryable_reasons() {
        for r in FailureReason::ALL {
            let expected = matches!(
                r,
                FailureReason::Timeout
                    | FailureReason::Connect
                    | FailureReason::Http5xx
                    | FailureReason::Throttled
            );
            assert_eq!(r.is_retryable(), expected, "{r:?}");
        }
    }

    #[test]
    fn display_names_status_code_and_request_id() {
        let e = DliError::Api {
            operation: Operation::ListBatches,
            url: "http://h/v2.0/p/batches?from=0".into(),
            body: parse_error_body(
                400,
                br#"{"error_code":"DLI.0001","error_msg":"bad"}"#,
                Some("r1".into()),
            ),
            retry_after: None,
        };
        let s = e.to_string();
        assert!(
            s.contains("HTTP 400")
                && s.contains("DLI.0001")
                && s.contains("bad")
                && s.contains("r1"),
            "{s}"
        );
        assert_eq!(e.reason(), FailureReason::Http4xx);
    }
}
