//! [`ApiMetrics`]: counters and latency of the HTTP requests sent to DLI and IAM
//! (`dli_api_requests_total`, `dli_api_request_failures_total`,
//! `dli_api_request_duration_seconds`, `dli_api_requests_held_total`), fed by the client through
//! its [`RequestObserver`]. It never sees a request's content.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::dli::{FailureReason, Operation, RequestObserver};

/// Upper bounds of the API latency histogram, in seconds.
const API_LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Counters and latency of the HTTP requests sent to DLI and IAM.
pub struct ApiMetrics {
    requests: IntCounterVec,
    failures: IntCounterVec,
    duration: HistogramVec,
    held: IntCounterVec,
}

impl ApiMetrics {
    /// Creates the metrics in `registry`, every operation's series at 0 (so `rate()` and
    /// `absent()` work before the first error).
    pub(super) fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "dli_api_requests_total",
                "HTTP requests sent to DLI, IAM or the metadata service, retries included (operation list_batches, iam_token, list_queues, list_projects, metadata, oidc).",
            ),
            &["operation"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "dli_api_request_failures_total",
                "HTTP requests to DLI or IAM that failed, by reason (timeout, connect, http_4xx, http_5xx, throttled, auth, decode).",
            ),
            &["operation", "reason"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "dli_api_request_duration_seconds",
                "Latency of each HTTP request to DLI or IAM.",
            )
            .buckets(API_LATENCY_BUCKETS.to_vec()),
            &["operation"],
        )?;
        let held = IntCounterVec::new(
            Opts::new(
                "dli_api_requests_held_total",
                "Requests not sent because DLI or IAM kept answering 429 and the exporter is holding off that endpoint.",
            ),
            &["operation"],
        )?;
        for op in Operation::ALL {
            requests.with_label_values(&[op.as_str()]);
            held.with_label_values(&[op.as_str()]);
            duration.with_label_values(&[op.as_str()]);
            for reason in FailureReason::ALL {
                failures.with_label_values(&[op.as_str(), reason.as_str()]);
            }
        }
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(held.clone()))?;
        Ok(ApiMetrics {
            requests,
            failures,
            duration,
            held,
        })
    }
}

impl RequestObserver for ApiMetrics {
    fn observe(&self, operation: Operation, elapsed: Duration, failure: Option<FailureReason>) {
        let op = operation.as_str();
        self.requests.with_label_values(&[op]).inc();
        self.duration
            .with_label_values(&[op])
            .observe(elapsed.as_secs_f64());
        if let Some(reason) = failure {
            self.failures
                .with_label_values(&[op, reason.as_str()])
                .inc();
        }
    }

    fn held(&self, operation: Operation) {
        self.held.with_label_values(&[operation.as_str()]).inc();
    }
}
