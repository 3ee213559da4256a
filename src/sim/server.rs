//! Hyper plumbing and routing: the accept loop, one HTTP/1 connection task per client, and the
//! handlers for `GET /v2.0/{project_id}/batches` and `POST /v3/auth/tokens`; the keyless
//! endpoints are answered by `keyless.rs` and sent from here.
//!
//! Owns turning requests into responses, including faults. It must not panic on input: anything
//! malformed gets a 4xx, and nothing from the network is `unwrap`ped.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::faults::{Fault, Target};
use super::jobs::{self, SimJob};
use super::keyless::{self, Answer, Endpoint};
use super::listing::{self, PageQuery};
use super::queues;
use super::respond::{Body, ListChange, answer_fault, apply_faults, error_response, respond};
use super::{Inner, LoggedRequest, auth, bump, lock, now_ms};

/// Request bodies larger than this are refused (413).
const MAX_BODY: usize = 1 << 20;

pub(crate) fn spawn(listener: TcpListener, inner: Arc<Inner>) {
    tokio::spawn(accept_loop(listener, inner));
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    let cancel = inner.cancel.clone();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(stream, inner.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::debug!(error = %e, "simulator accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    // The listener is dropped here: new connections are refused from now on.
}

async fn serve_connection(stream: TcpStream, inner: Arc<Inner>) {
    // Cancelled by a handler that wants this connection reset without a response.
    let reset = CancellationToken::new();
    let svc_inner = inner.clone();
    let svc_reset = reset.clone();
    let service = service_fn(move |req| {
        let inner = svc_inner.clone();
        let reset = svc_reset.clone();
        async move { Ok::<_, Infallible>(handle(inner, req, reset).await) }
    });
    let mut conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    let reset_now = tokio::select! {
        r = &mut conn => {
            if let Err(e) = r {
                tracing::trace!(error = %e, "simulator connection ended with an error");
            }
            false
        }
        _ = inner.cancel.cancelled() => false,
        _ = reset.cancelled() => true,
    };
    if reset_now {
        // SO_LINGER 0 turns the close into a TCP RST: the client sees "connection reset".
        let stream = conn.into_parts().io.into_inner();
        let _ = stream.set_zero_linger();
        drop(stream);
    }
}

enum Route {
    Batches(String),
    Queues(String),
    Tokens,
    Keyless(Endpoint),
    Projects,
    NotFound,
}

fn route(path: &str) -> Route {
    if path == "/v3/auth/tokens" {
        return Route::Tokens;
    }
    if let Some(endpoint) = keyless::route(path) {
        return Route::Keyless(endpoint);
    }
    if path == "/v3/projects" {
        return Route::Projects;
    }
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let mut segments = trimmed.split('/');
    match (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) {
        (Some(""), Some("v2.0"), Some(pid), Some("batches"), None) if !pid.is_empty() => {
            let pid = percent_encoding::percent_decode_str(pid)
                .decode_utf8_lossy()
                .into_owned();
            Route::Batches(pid)
        }
        (Some(""), Some("v1.0"), Some(pid), Some("queues"), None) if !pid.is_empty() => {
            let pid = percent_encoding::percent_decode_str(pid)
                .decode_utf8_lossy()
                .into_owned();
            Route::Queues(pid)
        }
        _ => Route::NotFound,
    }
}

async fn handle(
    inner: Arc<Inner>,
    req: Request<Incoming>,
    reset: CancellationToken,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let route = route(parts.uri.path());
    let allow = match route {
        Route::Batches(_) | Route::Queues(_) | Route::Projects => Some("GET"),
        Route::Tokens => Some("POST"),
        Route::Keyless(endpoint) => Some(endpoint.method()),
        Route::NotFound => None,
    };
    if let Some(allow) = allow.filter(|a| parts.method.as_str() != *a) {
        let request_id = inner.request_id();
        let mut resp = error_response(405, "APIGW.0105", "Method not allowed", &request_id);
        resp.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static(allow),
        );
        return resp;
    }
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            let request_id = inner.request_id();
            return error_response(
                413,
                "DLI.0001",
                "Request body too large or unreadable",
                &request_id,
            );
        }
    };
    match route {
        Route::Batches(project_id) => {
            batches(
                &inner,
                &parts.method,
                &parts.uri,
                &parts.headers,
                &body,
                &project_id,
                &reset,
            )
            .await
        }
        Route::Queues(project_id) => {
            queues::queue_list(
                &inner,
                &parts.method,
                &parts.uri,
                &parts.headers,
                &body,
                &project_id,
                &reset,
            )
            .await
        }
        Route::Projects => {
            queues::project_list(
                &inner,
                &parts.method,
                &parts.uri,
                &parts.headers,
                &body,
                &reset,
            )
            .await
        }
        Route::Tokens => tokens(&inner, &body, &reset).await,
        Route::Keyless(endpoint) => {
            let request_id = inner.request_id();
            let fault = match keyless::handle(&inner, endpoint, &parts.headers, &body) {
                Answer::Respond(status, content_type, body, subject_token) => {
                    let mut resp = respond(status, content_type, body, &request_id);
                    if let Some(v) = subject_token.and_then(|t| t.parse().ok()) {
                        resp.headers_mut().insert("x-subject-token", v);
                    }
                    return resp;
                }
                Answer::Reset => Fault::ResetConnection,
                Answer::Hang => Fault::Hang,
            };
            answer_fault(fault, &request_id, 200, &reset, Vec::new).await
        }
        Route::NotFound => {
            let request_id = inner.request_id();
            error_response(
                404,
                "APIGW.0101",
                "The API does not exist or has not been published in the environment",
                &request_id,
            )
        }
    }
}

/// Parses an optional integer query value: absent => default, not an integer => Err.
fn int_param(value: Option<&str>, default: i64) -> Result<i64, ()> {
    match value {
        None => Ok(default),
        Some(v) => v.trim().parse::<i64>().map_err(|_| ()),
    }
}

#[derive(Serialize)]
struct PageBody<'a> {
    from: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    total: Option<i64>,
    sessions: Vec<&'a SimJob>,
    create_time: i64,
}

/// A ListBatches body; `total` is left out when `None` ([`TotalMode::Absent`]).
pub(crate) fn page_json(from: i64, total: Option<i64>, page: &[Arc<SimJob>]) -> Vec<u8> {
    let body = PageBody {
        from,
        total,
        sessions: page.iter().map(|j| &**j).collect(),
        create_time: now_ms(),
    };
    serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec())
}

/// Puts `n` generated `starting` jobs at the front of a queue (InsertFront).
fn insert_generated(inner: &Inner, project_id: &str, queue: Option<&str>, n: usize) {
    let now = now_ms();
    let mut projects = lock(&inner.projects);
    let project = projects.entry(project_id.to_string()).or_default();
    let name = queue
        .map(str::to_string)
        .or_else(|| project.keys().next().cloned())
        .unwrap_or_else(|| "default".to_string());
    let q = project.entry(name.clone()).or_default();
    let realistic = q.front().is_some_and(|j| j.req_body.is_some());
    let mut rng = lock(&inner.job_rng);
    let new: Vec<SimJob> = (0..n)
        .map(|i| {
            let owner = jobs::random_owner(&mut rng);
            jobs::make_job(
                &mut rng,
                &name,
                "starting",
                owner,
                now - i as i64,
                now,
                realistic,
            )
        })
        .collect();
    for job in new.into_iter().rev() {
        q.push_front(Arc::new(job));
    }
}

#[allow(clippy::too_many_arguments)]
async fn batches(
    inner: &Inner,
    method: &Method,
    uri: &hyper::Uri,
    headers: &HeaderMap,
    body: &[u8],
    project_id: &str,
    reset: &CancellationToken,
) -> Response<Body> {
    bump(&inner.counters.list_batches_requests, 1);
    let raw_query = uri.query().unwrap_or("");
    let pairs = auth::decode_query(raw_query);
    let get = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let queue = get("queue_name")
        .filter(|q| !q.is_empty())
        .or_else(|| get("cluster_name").filter(|q| !q.is_empty()));
    let from = int_param(get("from"), 0);
    let size = int_param(get("size"), 100);
    let mut entry = LoggedRequest {
        project_id: project_id.to_string(),
        queue: queue.map(str::to_string),
        from: from.unwrap_or(-1),
        size: size.unwrap_or(-1),
        status: 0,
        auth: auth::auth_kind(headers),
        sessions: 0,
        query: raw_query.to_string(),
    };

    let applied = apply_faults(
        inner,
        Target::Batches {
            queue,
            from: entry.from,
        },
        |change| match change {
            ListChange::InsertFront(n) => insert_generated(inner, project_id, queue, n),
            ListChange::RemoveOldest(n) => listing::remove_oldest(inner, project_id, queue, n),
        },
    )
    .await;
    let behaviour = listing::behaviour_of(inner, project_id, queue);
    let request_id = inner.request_id();

    let start = int_param(get("start"), 0)
        .ok()
        .filter(|_| get("start").is_some());
    let end = int_param(get("end"), 0)
        .ok()
        .filter(|_| get("end").is_some());
    let window = |from: i64, size: i64| {
        let size = usize::try_from(size.max(0)).unwrap_or(usize::MAX);
        PageQuery {
            queue,
            state: get("state").filter(|s| !s.is_empty()),
            job_name: get("job_name").filter(|s| !s.is_empty()),
            job_id: get("job-id")
                .or_else(|| get("job_id"))
                .filter(|s| !s.is_empty()),
            owner: get("owner").filter(|s| !s.is_empty()),
            start,
            end,
            order: get("order"),
            from: usize::try_from(from.max(0)).unwrap_or(usize::MAX),
            size,
        }
    };
    let serve = |from: i64, size: i64| {
        let page = listing::select_page(
            inner,
            project_id,
            &window(from, size),
            &behaviour,
            applied.page,
        );
        let total = applied.total_override.or(page.total());
        (page.jobs, total)
    };

    if let Some(fault) = applied.terminal {
        entry.status = match &fault {
            Fault::Status { status, .. } => *status,
            Fault::Throttle { .. } => 429,
            Fault::Hang | Fault::ResetConnection => 0,
            _ => 200,
        };
        inner.log_request(entry);
        let f = from.unwrap_or(0).max(0);
        let s = size.unwrap_or(100).max(0);
        return answer_fault(fault, &request_id, 200, reset, || {
            let (page, total) = serve(f, s);
            page_json(f, total, &page)
        })
        .await;
    }

    if let Err(rejection) = auth::verify(
        inner,
        method.as_str(),
        uri.path(),
        &pairs,
        headers,
        body,
        project_id,
    ) {
        bump(&inner.counters.auth_rejections, 1);
        entry.status = 401;
        inner.log_request(entry);
        return error_response(401, rejection.code, rejection.msg, &request_id);
    }

    let bad = |what: &str| format!("Parameter check failed: {what} must be a non-negative integer");
    let (from, size) = match (from, size) {
        (Ok(f), Ok(s)) if f >= 0 && s >= 0 => (f, s),
        (Ok(f), _) if f >= 0 => return reject_params(inner, entry, &bad("size"), &request_id),
        _ => return reject_params(inner, entry, &bad("from"), &request_id),
    };
    if get("start").is_some() && start.is_none() || get("end").is_some() && end.is_none() {
        return reject_params(inner, entry, &bad("start/end"), &request_id);
    }
    if let Some(name) = behaviour.rejected(|name| get(name).is_some()) {
        let msg = format!("Parameter check failed: {name} is not supported");
        return reject_params(inner, entry, &msg, &request_id);
    }

    let (page, total) = serve(from, size);
    let body = page_json(from, total, &page);
    bump(&inner.counters.list_batches_bytes, body.len() as u64);
    entry.status = 200;
    entry.sessions = page.len();
    inner.log_request(entry);
    respond(200, "application/json", body, &request_id)
}

fn reject_params(
    inner: &Inner,
    mut entry: LoggedRequest,
    msg: &str,
    request_id: &str,
) -> Response<Body> {
    entry.status = 400;
    inner.log_request(entry);
    error_response(400, "DLI.0001", msg, request_id)
}

async fn tokens(inner: &Inner, body: &[u8], reset: &CancellationToken) -> Response<Body> {
    bump(&inner.counters.iam_token_requests, 1);
    let applied = apply_faults(inner, Target::Iam, |_| {}).await;
    let request_id = inner.request_id();
    let with_trace = |mut resp: Response<Body>| {
        if let Ok(v) = request_id.parse() {
            resp.headers_mut().insert("x-iam-trace-id", v);
        }
        resp
    };
    if let Some(fault) = applied.terminal {
        // No token is issued when a fault answers instead.
        let resp = answer_fault(fault, &request_id, 201, reset, || {
            json!({"token": {"expires_at": auth::iam_time(time::OffsetDateTime::now_utc()), "methods": ["password"]}})
                .to_string()
                .into_bytes()
        })
        .await;
        return with_trace(resp);
    }
    let answer = auth::issue_token(inner, body);
    let mut resp = respond(
        answer.status,
        "application/json",
        answer.body.to_string(),
        &request_id,
    );
    if let Some(token) = answer.token
        && let Ok(v) = token.parse()
    {
        resp.headers_mut().insert("x-subject-token", v);
    }
    with_trace(resp)
}
