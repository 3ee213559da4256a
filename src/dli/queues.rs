//! The ListQueues answer (`GET /v1.0/{project_id}/queues`, docs/dli-api.md, "Queue list"): what
//! discovery and the `dli_queue_*` metrics need of each queue, decoded leniently.
//!
//! Like the batch model, decoding never fails on a field: unknown fields are ignored, a field of
//! an unexpected type reads as absent (so its metric is absent, never a made-up 0), numbers may
//! come as numeric strings. Only a body that is not a JSON object, or one without a `queues`
//! array, is an error: reading it as "no queues" would make every discovered queue vanish on a
//! glitch. Nothing here does I/O.

use std::collections::HashSet;

use serde_json::{Map, Value};

/// One queue of the list, with only the fields the exporter uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueRecord {
    /// Never empty: entries without a usable name are dropped while decoding.
    pub queue_name: String,
    /// `sql`, `general` or `all`.
    pub queue_type: Option<String>,
    pub cu_count: Option<f64>,
    pub used_cu: Option<f64>,
    pub cu_scale_out_limit: Option<f64>,
    pub cu_scale_in_limit: Option<f64>,
    /// 0 shared, 1 dedicated.
    pub resource_mode: Option<i64>,
    /// 1 per CU-hour, 2 yearly/monthly (passed on as the API's number).
    pub charging_mode: Option<i64>,
    pub elastic_resource_pool_name: Option<String>,
}

/// A decoded ListQueues answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueList {
    /// `false` (with a 200) means the call failed; see `message`/`error_code`.
    pub is_success: Option<bool>,
    pub message: Option<String>,
    pub error_code: Option<String>,
    /// In the order of the answer, each name once (the first entry of a repeated name wins).
    pub queues: Vec<QueueRecord>,
    /// Entries dropped: not an object, no usable `queue_name`, or a name seen before.
    pub skipped: usize,
}

/// Queue names longer than this are dropped (DLI allows 128 characters): the name goes into
/// label values and request parameters as it is, so it cannot be shortened.
pub const MAX_QUEUE_NAME_BYTES: usize = 256;

/// Decodes a ListQueues body; the error says why the body is unusable.
pub fn decode_queue_list(body: &[u8]) -> Result<QueueList, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the queue list is not JSON: {e}"))?;
    let Value::Object(top) = value else {
        return Err("the queue list is not a JSON object".into());
    };
    let mut list = QueueList {
        is_success: top.get("is_success").and_then(Value::as_bool),
        message: top.get("message").and_then(text),
        error_code: top.get("error_code").and_then(text),
        ..QueueList::default()
    };
    let entries = match top.get("queues") {
        Some(Value::Array(entries)) => entries,
        // A failure answer need not carry a list; the caller reports it as such.
        _ if list.is_success == Some(false) => return Ok(list),
        Some(_) => return Err("the queue list's \"queues\" is not an array".into()),
        None => return Err("the queue list has no \"queues\" array".into()),
    };
    let mut seen = HashSet::with_capacity(entries.len());
    for entry in entries {
        match entry.as_object().and_then(record) {
            Some(r) if seen.insert(r.queue_name.clone()) => list.queues.push(r),
            _ => list.skipped += 1,
        }
    }
    Ok(list)
}

fn record(o: &Map<String, Value>) -> Option<QueueRecord> {
    let queue_name = o.get("queue_name").and_then(text)?;
    if queue_name.is_empty()
        || queue_name.len() > MAX_QUEUE_NAME_BYTES
        || queue_name.chars().any(char::is_control)
    {
        return None;
    }
    let num = |k: &str| o.get(k).and_then(number);
    let int = |k: &str| o.get(k).and_then(integer);
    let string = |k: &str| o.get(k).and_then(text);
    Some(QueueRecord {
        queue_type: string("queue_type"),
        cu_count: num("cu_count"),
        used_cu: num("used_cu"),
        cu_scale_out_limit: num("cu_scale_out_limit"),
        cu_scale_in_limit: num("cu_scale_in_limit"),
        resource_mode: int("resource_mode"),
        charging_mode: int("charging_mode"),
        elastic_resource_pool_name: string("elastic_resource_pool_name").filter(|s| !s.is_empty()),
        queue_name,
    })
}

/// A string as it is; a number as its text; anything else is absent.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A finite number, or a string holding one; anything else is absent.
fn number(v: &Value) -> Option<f64> {
    let n = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    n.is_finite().then_some(n)
}

/// A whole number (also `2.0` or `"2"`) that fits an i64; anything else is absent.
fn integer(v: &Value) -> Option<i64> {
    if let Value::Number(n) = v
        && let Some(i) = n.as_i64()
    {
        return Some(i);
    }
    let f = number(v)?;
    (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_documented_answer_and_ignores_unknown_fields() {
        let body = br#"{"is_success":true,"message":"","queues":[
            {"queue_name":"etl","queue_type":"general","cu_count":16,"used_cu":4.5,
             "cu_scale_out_limit":64,"cu_scale_in_limit":16,"resource_mode":1,"charging_mode":2,
             "elastic_resource_pool_name":"pool1","owner":"x","labels":"a=b","new":{"deep":[1]}},
            {"queue_name":"default","queue_type":"sql","cu_count":"8"}]}"#;
        let list = decode_queue_list(body).expect("decodes");
        assert_eq!(list.is_success, Some(true));
        assert_eq!(list.queues.len(), 2);
        let etl = &list.queues[0];
        assert_eq!(etl.queue_name, "etl");
        assert_eq!(etl.queue_type.as_deref(), Some("general"));
        assert_eq!(
            (
                etl.cu_count,
                etl.used_cu,
                etl.cu_scale_out_limit,
                etl.cu_scale_in_limit
            ),
            (Some(16.0), Some(4.5), Some(64.0), Some(16.0))
        );
        assert_eq!((etl.resource_mode, etl.charging_mode), (Some(1), Some(2)));
        assert_eq!(etl.elastic_resource_pool_name.as_deref(), Some("pool1"));
        assert_eq!(list.queues[1].cu_count, Some(8.0));
        assert_eq!(list.queues[1].cu_scale_out_limit, None);
    }

    #[test]
    fn wrongly_typed_fields_are_absent_and_bad_entries_skipped() {
        let body = br#"{"queues":[
            {"queue_name":"a","cu_count":true,"used_cu":null,"cu_scale_out_limit":[1],
             "cu_scale_in_limit":{"x":1},"resource_mode":"x","charging_mode":1.5,
             "elastic_resource_pool_name":"","queue_type":["general"]},
            {"queue_name":""}, {"queue_type":"general"}, 5, "q", null,
            {"queue_name":"a","cu_count":99},
            {"queue_name":7,"charging_mode":2.0}]}"#;
        let list = decode_queue_list(body).expect("decodes");
        assert_eq!(list.queues.len(), 2, "{list:?}");
        assert_eq!(list.skipped, 6);
        let a = &list.queues[0];
        assert_eq!(a.cu_count, None, "a repeated name keeps its first entry");
        assert_eq!(
            (a.used_cu, a.cu_scale_out_limit, a.cu_scale_in_limit),
            (None, None, None)
        );
        assert_eq!((a.resource_mode, a.charging_mode), (None, None));
        assert_eq!(
            (
                a.queue_type.as_deref(),
                a.elastic_resource_pool_name.as_deref()
            ),
            (None, None)
        );
        assert_eq!(list.queues[1].queue_name, "7");
        assert_eq!(list.queues[1].charging_mode, Some(2));
    }

    #[test]
    fn unusable_bodies_are_errors_not_empty_lists() {
        assert!(decode_queue_list(b"{}").is_err());
        assert!(decode_queue_list(br#"{"queues":null}"#).is_err());
        assert!(decode_queue_list(br#"{"queues":{}}"#).is_err());
        assert!(decode_queue_list(b"[]").is_err());
        assert!(decode_queue_list(b"<html>").is_err());
        assert!(decode_queue_list(br#"{"queues":[{"queue_name":"a""#).is_err());
        let failed = decode_queue_list(
            br#"{"is_success":false,"message":"no right","error_code":"DLI.0013"}"#,
        )
        .expect("a failure answer decodes");
        assert_eq!(failed.is_success, Some(false));
        assert_eq!(failed.error_code.as_deref(), Some("DLI.0013"));
        let empty = decode_queue_list(br#"{"is_success":true,"queues":[]}"#).expect("decodes");
        assert!(empty.queues.is_empty());
    }

    #[test]
    fn long_and_control_character_names_are_dropped() {
        let long = "q".repeat(MAX_QUEUE_NAME_BYTES + 1);
        let body = format!(
            r#"{{"queues":[{{"queue_name":"{long}"}},{{"queue_name":"a\nb"}},{{"queue_name":"ok"}}]}}"#
        );
        let list = decode_queue_list(body.as_bytes()).expect("decodes");
        assert_eq!(list.queues.len(), 1);
        assert_eq!(list.skipped, 2);
    }
}
