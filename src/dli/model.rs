//! Serde types of the ListBatches response and the query (docs/dli-api.md, "ListBatches request" and
//! "ListBatches response").
//!
//! Decoding is lenient by design: every field is optional, unknown fields are ignored, a field
//! of an unexpected type becomes `None` instead of failing the page, and the bulky `log`,
//! `req_body` and `appId` fields are skipped while parsing, never stored. Nothing here does I/O.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, Visitor};

/// One page of `GET /v2.0/{project_id}/batches`.
#[derive(Debug, Default, Deserialize)]
pub struct BatchPage {
    #[serde(default, deserialize_with = "lenient_i64")]
    pub from: Option<i64>,
    /// A hint only: the full count (Livy) or this page's length, depending on the server.
    #[serde(default, deserialize_with = "lenient_i64")]
    pub total: Option<i64>,
    #[serde(default, deserialize_with = "lenient_jobs")]
    pub sessions: Vec<BatchJob>,
    /// Present on failed v1-style bodies; ListBatches should never send `false` with a 200.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub is_success: Option<bool>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub message: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub error_code: Option<String>,
}

/// One batch job. Only what the exporter uses is kept (id, state, owner, name and the three
/// times); `log`, `req_body`, `appId` and every other field (`queue`, `cluster_name`, `sc_type`,
/// `kind`, `proxyUser`, `image`, ...) are skipped by the parser without allocating: a realistic
/// job is ~3.8 KB of JSON of which this keeps four short strings.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct BatchJob {
    #[serde(default, deserialize_with = "lenient_string")]
    pub id: Option<String>,
    /// Lowercased while decoding (the docs show `"Success"` in one example).
    #[serde(default, deserialize_with = "lowercase_string")]
    pub state: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub owner: Option<String>,
    /// The user-given name, the same for every run of a recurring job (DLI allows 128
    /// characters; the aggregation bounds what it exports like owners).
    #[serde(default, deserialize_with = "lenient_string")]
    pub name: Option<String>,
    /// Unix milliseconds.
    #[serde(default, deserialize_with = "lenient_i64")]
    pub create_time: Option<i64>,
    /// Unix milliseconds.
    #[serde(default, deserialize_with = "lenient_i64")]
    pub update_time: Option<i64>,
    /// Run time in milliseconds.
    #[serde(default, deserialize_with = "lenient_i64")]
    pub duration: Option<i64>,
    #[serde(default, rename = "log")]
    _log: IgnoredAny,
    #[serde(default, rename = "req_body")]
    _req_body: IgnoredAny,
    #[serde(default, rename = "appId")]
    _app_id: IgnoredAny,
}

impl BatchJob {
    /// A job with the fields the aggregation looks at; for tests and the simulator glue.
    pub fn new(id: &str, state: &str, owner: Option<&str>, create_time_ms: Option<i64>) -> Self {
        BatchJob {
            id: Some(id.to_string()),
            state: Some(state.to_lowercase()),
            owner: owner.map(str::to_string),
            create_time: create_time_ms,
            ..Default::default()
        }
    }
}

/// Decodes a page from a response body.
pub fn decode_page(body: &[u8]) -> Result<BatchPage, serde_json::Error> {
    // serde would accept a JSON array as a struct of defaults; a page is always an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(serde::de::Error::custom("expected a JSON object"));
    }
    serde_json::from_slice(body)
}

/// Query parameters of ListBatches (docs/dli-api.md, "ListBatches request"), with their wire names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListBatchesQuery {
    pub queue_name: Option<String>,
    /// Deprecated synonym of `queue_name`.
    pub cluster_name: Option<String>,
    pub job_name: Option<String>,
    /// Sent as `job-id` (hyphen on the wire).
    pub job_id: Option<String>,
    pub state: Option<String>,
    /// Documented but absent from the SDK model; passed through as-is.
    pub owner: Option<String>,
    pub from: Option<u64>,
    pub size: Option<u32>,
    /// Jobs started after this unix-ms time.
    pub start: Option<i64>,
    /// Jobs started before this unix-ms time.
    pub end: Option<i64>,
    /// `DURATION_DESC`, `DURATION_ASC`, `CREATE_TIME_DESC` or `CREATE_TIME_ASC`.
    pub order: Option<String>,
}

impl ListBatchesQuery {
    /// The (wire name, value) pairs, unsorted; the signer sorts and encodes them.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(11);
        let mut push = |k: &'static str, v: Option<String>| {
            if let Some(v) = v {
                out.push((k, v));
            }
        };
        push("queue_name", self.queue_name.clone());
        push("cluster_name", self.cluster_name.clone());
        push("job_name", self.job_name.clone());
        push("job-id", self.job_id.clone());
        push("state", self.state.clone());
        push("owner", self.owner.clone());
        push("from", self.from.map(|v| v.to_string()));
        push("size", self.size.map(|v| v.to_string()));
        push("start", self.start.map(|v| v.to_string()));
        push("end", self.end.map(|v| v.to_string()));
        push("order", self.order.clone());
        out
    }
}

// ---- lenient field decoders ------------------------------------------------------------------

/// Any JSON number (or a string of digits) that fits an i64 after truncation; otherwise `None`.
fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(i64::try_from(v).ok())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok((v.is_finite() && v.abs() < 9.0e18).then_some(v as i64))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(v.trim().parse().ok())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(self)
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            while a.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_map<A: de::MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(v.as_bool())
}

/// A string; numbers and booleans become their text; anything else (null, arrays, objects) `None`.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(self)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            while a.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_map<A: de::MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

fn lowercase_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(lenient_string(d)?.map(|s| {
        if s.bytes().any(|b| b.is_ascii_uppercase()) || !s.is_ascii() {
            s.to_lowercase()
        } else {
            s
        }
    }))
}

/// `sessions`: an array of job objects; elements that are not objects are skipped, and a
/// `sessions` that is not an array at all reads as empty.
fn lenient_jobs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<BatchJob>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<BatchJob>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of batch jobs")
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(a.size_hint().unwrap_or(0).min(1024));
            while let Some(job) = a.next_element::<MaybeJob>()? {
                if let MaybeJob(Some(job)) = job {
                    out.push(job);
                }
            }
            Ok(out)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(self)
        }
        fn visit_map<A: de::MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Vec::new())
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
    }
    d.deserialize_any(V)
}

/// A `sessions` element: a job when it is an object, nothing otherwise.
struct MaybeJob(Option<BatchJob>);

impl<'de> Deserialize<'de> for MaybeJob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaybeJob;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a batch job object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
                BatchJob::deserialize(de::value::MapAccessDeserializer::new(a))
                    .map(|j| MaybeJob(Some(j)))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MaybeJob(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(MaybeJob(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(MaybeJob(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(MaybeJob(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(MaybeJob(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(MaybeJob(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(MaybeJob(None))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_documented_page_and_skips_bulky_fields() {
        let body = br#"{"from":0,"total":2,"create_time":1,"sessions":[
            {"id":"a","state":"Success","owner":"ei_x","create_time":1700000000123,"update_time":1700000001000,
             "duration":877,"log":["l1","l2"],"req_body":"{\"file\":\"x\"}","appId":["arr"],"proxyUser":"p",
             "kind":"spark","queue":"q","cluster_name":"q","sc_type":"A","name":"n","image":"i","new_field":{"x":1}},
            {"id":"b"}]}"#;
        let page = decode_page(body).expect("decodes");
        assert_eq!(page.total, Some(2));
        assert_eq!(page.sessions.len(), 2);
        let a = &page.sessions[0];
        assert_eq!(a.state.as_deref(), Some("success"));
        assert_eq!(a.owner.as_deref(), Some("ei_x"));
        assert_eq!(a.create_time, Some(1_700_000_000_123));
        assert_eq!(a.name.as_deref(), Some("n"));
        assert_eq!(page.sessions[1].state, None);
        assert_eq!(page.sessions[1].name, None);
    }

    #[test]
    fn hostile_field_types_do_not_fail_the_page() {
        let body = br#"{"total":"7","sessions":[
            {"id":5,"state":null,"owner":["x"],"name":{"n":1},"create_time":1e300,"duration":-5,"update_time":18446744073709551615},
            42, "junk", null,
            {"id":"ok","create_time":"1700000000000","state":"RUNNING"}]}"#;
        let page = decode_page(body).expect("decodes");
        assert_eq!(page.total, Some(7));
        assert_eq!(page.sessions.len(), 2);
        assert_eq!(page.sessions[0].id.as_deref(), Some("5"));
        assert_eq!(page.sessions[0].owner, None);
        assert_eq!(page.sessions[0].name, None);
        assert_eq!(page.sessions[0].create_time, None);
        assert_eq!(page.sessions[0].duration, Some(-5));
        assert_eq!(page.sessions[0].update_time, None);
        assert_eq!(page.sessions[1].create_time, Some(1_700_000_000_000));
        assert_eq!(page.sessions[1].state.as_deref(), Some("running"));
    }

    #[test]
    fn missing_sessions_is_an_empty_page_and_garbage_is_an_error() {
        assert!(decode_page(b"{}").expect("decodes").sessions.is_empty());
        assert!(
            decode_page(b"{\"sessions\":{}}")
                .expect("decodes")
                .sessions
                .is_empty()
        );
        assert!(decode_page(b"not json").is_err());
        assert!(decode_page(b"{\"sessions\":[{\"id\":\"a\"").is_err());
        assert!(decode_page(b"[]").is_err());
    }

    #[test]
    fn query_pairs_use_wire_names() {
        let q = ListBatchesQuery {
            queue_name: Some("q".into()),
            job_id: Some("j".into()),
            from: Some(200),
            size: Some(50),
            ..Default::default()
        };
        let pairs = q.pairs();
        assert!(pairs.contains(&("job-id", "j".to_string())));
        assert!(pairs.contains(&("from", "200".to_string())));
        assert_eq!(pairs.len(), 4);
    }
}
