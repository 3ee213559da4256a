//! The simulated queue list (`GET /v1.0/{project_id}/queues`) and IAM project list
//! (`GET /v3/projects?name=`): [`SimQueue`], and the two handlers, authenticated like ListBatches
//! (the project list by signature only) and subject to [`super::FaultRule`]s.
//!
//! Like the real API, the queue list answers only `sql` queues when `queue_type` is absent.
//! Queues are kept as JSON objects so a test can serve any field of any type; [`SimQueue`] builds
//! the usual ones; the [`Simulator`] methods that change a project's list live here too. It must
//! not panic on input.

use hyper::{HeaderMap, Method, Response};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::faults::Target;
use super::respond::{Body, answer_fault, apply_faults, error_response, respond};
use super::{Inner, Simulator, auth, bump, lock};

/// A queue of the simulated queue list. Absent fields are not sent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimQueue {
    pub queue_name: String,
    /// `sql`, `general` or `all`.
    pub queue_type: Option<String>,
    pub cu_count: Option<i64>,
    pub used_cu: Option<f64>,
    pub cu_scale_out_limit: Option<i64>,
    pub cu_scale_in_limit: Option<i64>,
    /// 0 shared, 1 dedicated.
    pub resource_mode: Option<i64>,
    /// 1 per CU-hour, 2 yearly/monthly.
    pub charging_mode: Option<i64>,
    pub elastic_resource_pool_name: Option<String>,
}

impl SimQueue {
    /// A queue of this type with 16 CUs, 0 used, shared, charged per CU-hour, no elastic limits.
    pub fn new(name: &str, queue_type: &str) -> Self {
        SimQueue {
            queue_name: name.to_string(),
            queue_type: Some(queue_type.to_string()),
            cu_count: Some(16),
            used_cu: Some(0.0),
            resource_mode: Some(0),
            charging_mode: Some(1),
            ..SimQueue::default()
        }
    }

    /// The queue as the API writes it, with a few fields the exporter ignores.
    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("queue_name".into(), json!(self.queue_name));
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                o.insert(k.to_string(), v);
            }
        };
        put("queue_type", self.queue_type.as_ref().map(|v| json!(v)));
        put("cu_count", self.cu_count.map(|v| json!(v)));
        put("used_cu", self.used_cu.map(|v| json!(v)));
        put(
            "cu_scale_out_limit",
            self.cu_scale_out_limit.map(|v| json!(v)),
        );
        put(
            "cu_scale_in_limit",
            self.cu_scale_in_limit.map(|v| json!(v)),
        );
        put("resource_mode", self.resource_mode.map(|v| json!(v)));
        put("charging_mode", self.charging_mode.map(|v| json!(v)));
        put(
            "elastic_resource_pool_name",
            self.elastic_resource_pool_name.as_ref().map(|v| json!(v)),
        );
        put("owner", Some(json!("ei_dlics_demo")));
        put("create_time", Some(json!(1_700_000_000_000_i64)));
        put("is_restarting", Some(json!(false)));
        put("cu_spec", self.cu_count.map(|v| json!(v)));
        Value::Object(o)
    }
}

/// The `queue_type` of a queue object, when it is a string.
fn queue_type(q: &Value) -> Option<&str> {
    q.get("queue_type").and_then(Value::as_str)
}

/// The `queue_name` of a queue object, when it is a string.
pub(crate) fn queue_name(q: &Value) -> Option<&str> {
    q.get("queue_name").and_then(Value::as_str)
}

/// `GET /v1.0/{project_id}/queues`.
pub(crate) async fn queue_list(
    inner: &Inner,
    method: &Method,
    uri: &hyper::Uri,
    headers: &HeaderMap,
    body: &[u8],
    project_id: &str,
    reset: &CancellationToken,
) -> Response<Body> {
    bump(&inner.counters.list_queues_requests, 1);
    let raw_query = uri.query().unwrap_or("");
    {
        let mut log = lock(&inner.queue_list_queries);
        if log.len() >= super::REQUEST_LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(raw_query.to_string());
    }
    let pairs = auth::decode_query(raw_query);
    let applied = apply_faults(inner, Target::QueueList, |_| {}).await;
    let request_id = inner.request_id();
    let list = |wanted: &str| -> Vec<Value> {
        let lists = lock(&inner.queue_lists);
        lists
            .get(project_id)
            .map(|qs| {
                qs.iter()
                    .filter(|q| wanted == "all" || queue_type(q) == Some(wanted))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };
    let body_of = |queues: Vec<Value>| {
        json!({"is_success": true, "message": "", "queues": queues})
            .to_string()
            .into_bytes()
    };
    // The real API's default: only SQL queues.
    let wanted = pairs
        .iter()
        .find(|(k, _)| k == "queue_type")
        .map_or("sql", |(_, v)| v.as_str());
    if let Some(fault) = applied.terminal {
        return answer_fault(fault, &request_id, 200, reset, || body_of(list("all"))).await;
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
        return error_response(401, rejection.code, rejection.msg, &request_id);
    }
    if !matches!(wanted, "sql" | "general" | "all") {
        return error_response(
            400,
            "DLI.0001",
            "Parameter check failed: queue_type must be sql, general or all",
            &request_id,
        );
    }
    respond(200, "application/json", body_of(list(wanted)), &request_id)
}

/// `GET /v3/projects?name=`: the projects mapped to that name (all of them without `name`).
pub(crate) async fn project_list(
    inner: &Inner,
    method: &Method,
    uri: &hyper::Uri,
    headers: &HeaderMap,
    body: &[u8],
    reset: &CancellationToken,
) -> Response<Body> {
    bump(&inner.counters.list_projects_requests, 1);
    let pairs = auth::decode_query(uri.query().unwrap_or(""));
    let applied = apply_faults(inner, Target::ProjectList, |_| {}).await;
    let request_id = inner.request_id();
    let name = pairs
        .iter()
        .find(|(k, _)| k == "name")
        .map(|(_, v)| v.clone());
    let body_of = || {
        let projects: Vec<Value> = lock(&inner.project_names)
            .iter()
            .filter(|(n, _)| name.as_ref().is_none_or(|want| want == n))
            .map(|(n, id)| json!({"id": id, "name": n, "enabled": true, "domain_id": "d0", "is_domain": false}))
            .collect();
        json!({"projects": projects, "links": {"self": "http://sim/v3/projects", "next": null, "previous": null}})
            .to_string()
            .into_bytes()
    };
    if let Some(fault) = applied.terminal {
        return answer_fault(fault, &request_id, 200, reset, body_of).await;
    }
    // IAM takes signatures here; tokens are for DLI (the exporter never sends one to this path).
    if headers.contains_key("x-auth-token") {
        return error_response(
            401,
            "APIGW.0301",
            "Incorrect IAM authentication information: sign this request",
            &request_id,
        );
    }
    if let Err(rejection) = auth::verify(
        inner,
        method.as_str(),
        uri.path(),
        &pairs,
        headers,
        body,
        "",
    ) {
        bump(&inner.counters.auth_rejections, 1);
        return error_response(401, rejection.code, rejection.msg, &request_id);
    }
    respond(200, "application/json", body_of(), &request_id)
}

impl Simulator {
    /// Replaces a project's queue list.
    pub fn set_queue_list(&self, project_id: &str, queues: Vec<SimQueue>) {
        self.set_queue_list_raw(project_id, queues.iter().map(SimQueue::to_json).collect());
    }

    /// Replaces a project's queue list with these JSON values as they are (any field, any
    /// type: for tests of hostile answers).
    pub fn set_queue_list_raw(&self, project_id: &str, queues: Vec<serde_json::Value>) {
        lock(&self.inner.queue_lists).insert(project_id.to_string(), queues);
    }

    /// Adds a queue to a project's list, replacing one of the same name.
    pub fn add_queue(&self, project_id: &str, queue: SimQueue) {
        let mut lists = lock(&self.inner.queue_lists);
        let list = lists.entry(project_id.to_string()).or_default();
        list.retain(|q| queue_name(q) != Some(queue.queue_name.as_str()));
        list.push(queue.to_json());
    }

    /// Removes a queue from a project's list; false when it was not listed.
    pub fn remove_queue(&self, project_id: &str, name: &str) -> bool {
        let mut lists = lock(&self.inner.queue_lists);
        let Some(list) = lists.get_mut(project_id) else {
            return false;
        };
        let before = list.len();
        list.retain(|q| queue_name(q) != Some(name));
        list.len() != before
    }

    /// Sets one field of a listed queue to any JSON value (`Null` removes it); false when the
    /// queue is not listed.
    pub fn set_queue_field(
        &self,
        project_id: &str,
        name: &str,
        field: &str,
        value: serde_json::Value,
    ) -> bool {
        let mut lists = lock(&self.inner.queue_lists);
        let Some(q) = lists
            .get_mut(project_id)
            .and_then(|l| l.iter_mut().find(|q| queue_name(q) == Some(name)))
            .and_then(|q| q.as_object_mut())
        else {
            return false;
        };
        if value.is_null() {
            q.remove(field);
        } else {
            q.insert(field.to_string(), value);
        }
        true
    }

    /// A project's queue list as served with `queue_type=all`.
    pub fn queue_list(&self, project_id: &str) -> Vec<serde_json::Value> {
        lock(&self.inner.queue_lists)
            .get(project_id)
            .cloned()
            .unwrap_or_default()
    }

    /// The raw query strings of every queue list request so far, oldest first.
    pub fn queue_list_queries(&self) -> Vec<String> {
        lock(&self.inner.queue_list_queries)
            .iter()
            .cloned()
            .collect()
    }
}
