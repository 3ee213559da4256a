//! The simulator's answers: a response with `X-Request-Id`, DLI/APIG-shaped error bodies, and
//! the scripted faults (non-terminal ones applied, a terminal one answered), shared by every
//! route.
//!
//! It must not panic on input; nothing from the network is `unwrap`ped.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::faults::{self, Fault, Target};
use super::listing::PageFaults;
use super::{Inner, bump, lock};

pub(crate) type Body = Full<Bytes>;

/// A response with the given status, content type, body and `X-Request-Id`.
pub(crate) fn respond(
    status: u16,
    content_type: &str,
    body: impl Into<Bytes>,
    request_id: &str,
) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if let Ok(v) = content_type.parse() {
        h.insert(hyper::header::CONTENT_TYPE, v);
    }
    if let Ok(v) = request_id.parse() {
        h.insert("x-request-id", v);
    }
    resp
}

/// A DLI/APIG error: `{"error_code","error_msg"}`, plus `request_id` for gateway (`APIG*`) codes.
pub(crate) fn error_response(
    status: u16,
    code: &str,
    msg: &str,
    request_id: &str,
) -> Response<Body> {
    let body = if code.starts_with("APIG") {
        json!({"error_code": code, "error_msg": msg, "request_id": request_id})
    } else {
        json!({"error_code": code, "error_msg": msg})
    };
    respond(status, "application/json", body.to_string(), request_id)
}

/// Non-terminal faults done, and the terminal one (if any) left to answer with.
pub(crate) struct Applied {
    pub(crate) total_override: Option<i64>,
    /// Short and oversized pages, for the page to apply.
    pub(crate) page: PageFaults,
    pub(crate) terminal: Option<Fault>,
}

/// A change to the request's job list that a non-terminal fault makes before the answer.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ListChange {
    /// [`Fault::InsertFront`].
    InsertFront(usize),
    /// [`Fault::RemoveOldest`].
    RemoveOldest(usize),
}

pub(crate) async fn apply_faults(
    inner: &Inner,
    target: Target<'_>,
    change: impl Fn(ListChange),
) -> Applied {
    let actions = faults::select(&mut lock(&inner.faults), target);
    bump(&inner.counters.faults_injected, actions.len() as u64);
    let mut applied = Applied {
        total_override: None,
        page: PageFaults::default(),
        terminal: None,
    };
    for action in actions {
        match action {
            Fault::Latency(d) => tokio::time::sleep(d).await,
            Fault::InsertFront(n) => change(ListChange::InsertFront(n)),
            Fault::RemoveOldest(n) => change(ListChange::RemoveOldest(n)),
            Fault::WrongTotal(t) => applied.total_override = Some(t),
            Fault::ShortPage(n) => {
                applied.page.short = Some(applied.page.short.map_or(n, |s| s.min(n)))
            }
            Fault::ExtraJobs(n) => applied.page.extra = applied.page.extra.saturating_add(n),
            terminal => applied.terminal = Some(terminal),
        }
    }
    applied
}

/// Answers with a terminal fault; `page` builds the normal body when the fault needs it.
pub(crate) async fn answer_fault(
    fault: Fault,
    request_id: &str,
    ok_status: u16,
    reset: &CancellationToken,
    page: impl FnOnce() -> Vec<u8>,
) -> Response<Body> {
    match fault {
        Fault::Status {
            status,
            error_code,
            error_msg,
        } => error_response(status, &error_code, &error_msg, request_id),
        Fault::Throttle { retry_after } => {
            let mut resp = error_response(
                429,
                "APIGW.0308",
                "The throttling threshold has been reached: policy user over ratelimit,limit:200,time:1 second",
                request_id,
            );
            if let Some(secs) = retry_after {
                resp.headers_mut()
                    .insert(hyper::header::RETRY_AFTER, secs.into());
            }
            resp
        }
        Fault::MalformedJson => respond(
            ok_status,
            "application/json",
            "<html><head><title>502 Bad Gateway</title></head><body>upstream error</body></html>",
            request_id,
        ),
        Fault::TruncatedJson => {
            let mut body = page();
            body.truncate(body.len() / 2);
            respond(ok_status, "application/json", body, request_id)
        }
        Fault::Oversized(n) => {
            let mut body = br#"{"from":0,"total":1,"sessions":[{"id":""#.to_vec();
            body.truncate(n);
            body.resize(n, b'x');
            respond(ok_status, "application/json", body, request_id)
        }
        Fault::ResetConnection => {
            reset.cancel();
            std::future::pending().await
        }
        // Hang, and the non-terminal faults that never get here: no answer until shutdown drops
        // the connection.
        Fault::Hang
        | Fault::Latency(_)
        | Fault::InsertFront(_)
        | Fault::WrongTotal(_)
        | Fault::RemoveOldest(_)
        | Fault::ShortPage(_)
        | Fault::ExtraJobs(_) => std::future::pending().await,
    }
}
