//! One HTTP exchange with DLI or IAM: the shared concurrency limit, the size-limited body read,
//! the mapping of transport failures to [`DliError`], the per-endpoint hold-off after throttling
//! ([`super::throttle`]), and the per-request observation that feeds the API metrics.
//!
//! It must not know about signing, tokens, paging or retries; callers build the request and
//! decide what to do with the answer.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::header::HeaderMap;
use tokio::sync::Semaphore;

use super::error::{
    DliError, FailureReason, MAX_REQUEST_ID, Operation, bounded_text, parse_error_body,
};
use super::throttle::{Throttle, ThrottlePolicy};

/// Told about every HTTP request sent to DLI or IAM, once it has ended.
pub trait RequestObserver: Send + Sync {
    fn observe(&self, operation: Operation, elapsed: Duration, failure: Option<FailureReason>);

    /// Told about every request not sent because its endpoint is held after a throttling streak.
    fn held(&self, _operation: Operation) {}
}

/// An observer that ignores everything (tools, tests).
pub struct NoopObserver;

impl RequestObserver for NoopObserver {
    fn observe(&self, _: Operation, _: Duration, _: Option<FailureReason>) {}
}

/// Default refusal size for a response body: far above any real page (100 jobs with logs and
/// request bodies are a few hundred KB), far below what could hurt the process.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// A response that arrived whole (any status).
pub struct RawResponse {
    pub status: u16,
    pub headers: HeaderMap,
    /// The body: the connection's own buffer when it arrived in one piece (no copy), else
    /// the pieces joined.
    pub body: Bytes,
}

impl RawResponse {
    pub fn request_id(&self) -> Option<String> {
        self.headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(|r| bounded_text(r, MAX_REQUEST_ID))
    }

    /// The error this response stands for when its status is not a success.
    pub fn error(&self, operation: Operation, url: &str) -> DliError {
        let retry_after = self
            .headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        DliError::Api {
            operation,
            url: url.to_string(),
            body: parse_error_body(self.status, &self.body, self.request_id()),
            retry_after,
        }
    }
}

/// A `Retry-After` value (RFC 9110, 10.2.3): `delay-seconds` (a number too large for a `u64`
/// saturates) or an HTTP-date in any of the three forms a recipient must accept (IMF-fixdate,
/// RFC 850, asctime), as the time left until then (zero when it is past). Anything else is
/// ignored. The value is not bounded here: whoever waits caps it (the walker by its deadline,
/// the hold-off by its policy), with saturating arithmetic.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX),
        ));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The HTTP machinery shared by the list client and the token source of one project.
#[derive(Clone)]
pub struct Transport {
    http: reqwest::Client,
    observer: Arc<dyn RequestObserver>,
    limit: Arc<Semaphore>,
    max_body_bytes: usize,
    request_timeout: Duration,
    /// One hold-off state per endpoint: ListBatches and ListQueues go to DLI; tokens, the project
    /// list and the OIDC exchange to IAM.
    throttles: Arc<[Throttle; 2]>,
}

impl Transport {
    pub fn new(
        http: reqwest::Client,
        observer: Arc<dyn RequestObserver>,
        limit: Arc<Semaphore>,
        max_body_bytes: usize,
        request_timeout: Duration,
    ) -> Self {
        Transport {
            http,
            observer,
            limit,
            max_body_bytes,
            request_timeout,
            throttles: Arc::new([
                Throttle::new(ThrottlePolicy::default()),
                Throttle::new(ThrottlePolicy::default()),
            ]),
        }
    }

    /// Replaces the hold-off policy (default: [`ThrottlePolicy::default`]).
    pub fn with_throttle(mut self, policy: ThrottlePolicy) -> Self {
        self.throttles = Arc::new([Throttle::new(policy), Throttle::new(policy)]);
        self
    }

    /// The hold-off state of the endpoint `operation` talks to.
    pub fn throttle(&self, operation: Operation) -> &Throttle {
        match operation {
            Operation::ListBatches | Operation::ListQueues => &self.throttles[0],
            // IAM, and the metadata service (which has a transport of its own).
            Operation::IamToken
            | Operation::ListProjects
            | Operation::Oidc
            | Operation::Metadata => &self.throttles[1],
        }
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends one request under the shared concurrency limit, reads the body (refusing one above
    /// the limit), hands the response to `parse`, and reports the outcome to the observer.
    ///
    /// While the endpoint is held after a throttling streak nothing is sent: the answer is
    /// [`DliError::HeldOff`] at once (not counted as a request), which the walker retries after
    /// the remaining hold if its deadline allows.
    pub async fn call<T>(
        &self,
        operation: Operation,
        url: &str,
        request: reqwest::RequestBuilder,
        parse: impl FnOnce(RawResponse) -> Result<T, DliError>,
    ) -> Result<T, DliError> {
        let throttle = self.throttle(operation);
        let held = |remaining: Duration| {
            self.observer.held(operation);
            DliError::HeldOff {
                operation,
                url: url.to_string(),
                // Whole milliseconds, so the message reads "1s 250ms", not nanoseconds.
                remaining: Duration::from_millis(
                    u64::try_from(remaining.as_millis().max(1)).unwrap_or(u64::MAX),
                ),
            }
        };
        if let Some(remaining) = throttle.held_for() {
            return Err(held(remaining));
        }
        let _permit = self.limit.acquire().await.map_err(|_| DliError::Request {
            operation,
            url: url.to_string(),
            message: "the client is shutting down".into(),
        })?;
        // A hold may have started while this request waited for its permit.
        if let Some(remaining) = throttle.held_for() {
            return Err(held(remaining));
        }
        let started = Instant::now();
        let outcome = match self.exchange(operation, url, request).await {
            Ok(raw) => parse(raw),
            Err(e) => Err(e),
        };
        match &outcome {
            Err(e) if e.reason() == FailureReason::Throttled => {
                if let Some(hold) = throttle.throttled(e.retry_after()) {
                    tracing::warn!(
                        operation = operation.as_str(),
                        url,
                        hold_ms = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX),
                        "endpoint keeps throttling; holding further requests to it"
                    );
                }
            }
            Ok(_) => throttle.answered(),
            Err(e) if e.status().is_some() => throttle.answered(),
            Err(_) => {}
        }
        self.observer.observe(
            operation,
            started.elapsed(),
            outcome.as_ref().err().map(DliError::reason),
        );
        outcome
    }

    async fn exchange(
        &self,
        operation: Operation,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<RawResponse, DliError> {
        let fail = |e: reqwest::Error| self.map_error(operation, url, e);
        // reqwest's own timeout covers connect, headers and body; this outer bound is a backstop
        // so that no request can outlive its budget whatever the transport does.
        let work = async {
            let mut response = request
                .timeout(self.request_timeout)
                .send()
                .await
                .map_err(fail)?;
            let status = response.status().as_u16();
            if let Some(len) = response.content_length()
                && len > self.max_body_bytes as u64
            {
                return Err(self.too_large(operation, url));
            }
            let expected = response
                .content_length()
                .map_or(16 * 1024, |l| l as usize)
                .min(self.max_body_bytes);
            let cut = |e: reqwest::Error| {
                if e.is_timeout() {
                    return self.map_error(operation, url, e);
                }
                DliError::Connect {
                    operation,
                    url: url.to_string(),
                    message: format!(
                        "the connection failed while the body of an HTTP {status} answer was read: {}",
                        error_chain(&e)
                    ),
                }
            };
            // A body that arrives in one piece is kept as that piece: a page then exists once
            // in memory, not also as a copy (several pages are in flight at once).
            let mut single: Option<Bytes> = None;
            let mut joined: Vec<u8> = Vec::new();
            let mut len = 0usize;
            while let Some(chunk) = response.chunk().await.map_err(cut)? {
                len = len.saturating_add(chunk.len());
                if len > self.max_body_bytes {
                    return Err(self.too_large(operation, url));
                }
                if single.is_none() && joined.is_empty() {
                    single = Some(chunk);
                    continue;
                }
                if let Some(first) = single.take() {
                    joined.reserve_exact(expected.max(len));
                    joined.extend_from_slice(&first);
                }
                joined.extend_from_slice(&chunk);
            }
            Ok(RawResponse {
                status,
                headers: std::mem::take(response.headers_mut()),
                body: single.unwrap_or_else(|| Bytes::from(joined)),
            })
        };
        let backstop = self
            .request_timeout
            .saturating_add(Duration::from_millis(250));
        match tokio::time::timeout(backstop, work).await {
            Ok(r) => r,
            Err(_) => Err(DliError::Timeout {
                operation,
                url: url.to_string(),
                after: self.request_timeout,
            }),
        }
    }

    fn too_large(&self, operation: Operation, url: &str) -> DliError {
        DliError::TooLarge {
            operation,
            url: url.to_string(),
            limit: self.max_body_bytes,
        }
    }

    fn map_error(&self, operation: Operation, url: &str, e: reqwest::Error) -> DliError {
        let url = url.to_string();
        if e.is_timeout() {
            DliError::Timeout {
                operation,
                url,
                after: self.request_timeout,
            }
        } else if e.is_builder() {
            DliError::Request {
                operation,
                url,
                message: error_chain(&e),
            }
        } else if e.is_decode() {
            DliError::Decode {
                operation,
                url,
                status: e.status().map_or(0, |s| s.as_u16()),
                message: error_chain(&e),
                request_id: None,
            }
        } else {
            // Refused, reset or closed connections, TLS failures, bodies cut off mid-way.
            DliError::Connect {
                operation,
                url,
                message: error_chain(&e),
            }
        }
    }
}

/// An error with its causes, `a: b: c`, so a TLS or DNS failure says what really went wrong.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn retry_after_in_seconds_and_in_each_http_date_form() {
        // Sun, 06 Nov 1994 08:49:37 GMT, less 10 s.
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777 - 10);
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(parse_retry_after("120", now), secs(120));
        assert_eq!(parse_retry_after(" 0 ", now), secs(0));
        assert_eq!(
            parse_retry_after("18446744073709551615", now),
            secs(u64::MAX)
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            secs(u64::MAX)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            secs(10)
        );
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now),
            secs(10)
        );
        assert_eq!(parse_retry_after("Sun Nov  6 08:49:37 1994", now), secs(10));
        // A date in the past: retry now.
        assert_eq!(
            parse_retry_after("Sat, 05 Nov 1994 08:49:37 GMT", now),
            secs(0)
        );
        for junk in ["", "-1", "1.5", "soon", "+5", "Sun, 06 Nov 1994"] {
            assert_eq!(parse_retry_after(junk, now), None, "{junk:?}");
        }
    }
}
