//! Serde types of the ListBatches response and the query (docs/dli-api.md, "ListBatches request" and
//! "ListBatches response").
//!
//! Decoding is lenient by design: every field is optional, unknown fields are ignored, a field
//! of an unexpected type becomes `None` instead of failing the page, and the bulky `log`,
//! `req_body` and `appId` fields are skipped while parsing, never stored. It is strict about one
//! thing: a page decoded for a request that asked for `size` jobs stops at the first `sessions`
//! element beyond `size` ([`PageError::TooManyJobs`]), so memory stays bounded by what was asked
//! whatever the body holds. Nothing here does I/O.

use std::cell::Cell;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

/// One page of `GET /v2.0/{project_id}/batches`.
#[derive(Debug, Default)]
pub struct BatchPage {
    pub from: Option<i64>,
    /// A hint only: the full count (Livy) or this page's length, depending on the server.
    pub total: Option<i64>,
    /// Every object element of `sessions`, `{}` included (a job with no field at all).
    pub sessions: Vec<BatchJob>,
    /// Present on failed v1-style bodies; ListBatches should never send `false` with a 200.
    pub is_success: Option<bool>,
    pub message: Option<String>,
    pub error_code: Option<String>,
}

impl<'de> Deserialize<'de> for BatchPage {
    /// A page without a bound on its jobs (see [`decode_page_at_most`] for the bounded one).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let over = Cell::new(false);
        PageSeed {
            max_jobs: None,
            over: &over,
        }
        .deserialize(d)
    }
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

/// Decodes a page from a response body, without a bound on its jobs.
pub fn decode_page(body: &[u8]) -> Result<BatchPage, serde_json::Error> {
    decode_page_at_most(body, None).map_err(|e| match e {
        PageError::Json(e) => e,
        // Unreachable without a bound; kept as an error rather than a panic.
        PageError::TooManyJobs { asked } => {
            de::Error::custom(format!("more than {asked} jobs on one page"))
        }
    })
}

/// Why a page body was refused.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// Not the expected JSON (malformed, truncated, not an object).
    #[error("{0}")]
    Json(serde_json::Error),
    /// `sessions` held more elements than the `size` the request asked for; decoding stopped at
    /// the first one too many.
    #[error("the page holds more than the {asked} jobs the request asked for (size={asked})")]
    TooManyJobs { asked: u32 },
}

/// Decodes a page from a response body, refusing one whose `sessions` array holds more than
/// `max_jobs` elements (any element counts, `{}` and non-objects alike): decoding stops at the
/// first element too many, so neither time nor memory grows with the rest of the body.
pub fn decode_page_at_most(body: &[u8], max_jobs: Option<u32>) -> Result<BatchPage, PageError> {
    // serde would accept a JSON array as a struct of defaults; a page is always an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(PageError::Json(de::Error::custom("expected a JSON object")));
    }
    let over = Cell::new(false);
    let seed = PageSeed {
        max_jobs: max_jobs.map(|m| usize::try_from(m).unwrap_or(usize::MAX)),
        over: &over,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let page = seed.deserialize(&mut de).and_then(|page| {
        de.end()?;
        Ok(page)
    });
    match (page, over.get(), max_jobs) {
        (_, true, Some(asked)) => Err(PageError::TooManyJobs { asked }),
        (Ok(page), _, _) => Ok(page),
        (Err(e), _, _) => Err(PageError::Json(e)),
    }
}

/// Decodes the top-level page object, handing `sessions` its bound; `over` is set when the
/// bound was crossed (the decode then fails at once).
struct PageSeed<'a> {
    max_jobs: Option<usize>,
    over: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for PageSeed<'_> {
    type Value = BatchPage;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<BatchPage, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PageSeed<'_> {
    type Value = BatchPage;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a ListBatches page object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<BatchPage, A::Error> {
        let mut page = BatchPage::default();
        let mut seen: Vec<String> = Vec::new();
        while let Some(key) = a.next_key::<std::borrow::Cow<'de, str>>()? {
            let known = matches!(
                key.as_ref(),
                "from" | "total" | "sessions" | "is_success" | "message" | "error_code"
            );
            if known {
                if seen.iter().any(|k| k == key.as_ref()) {
                    return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
                }
                seen.push(key.to_string());
            }
            match key.as_ref() {
                "from" => page.from = a.next_value::<LenientI64>()?.0,
                "total" => page.total = a.next_value::<LenientI64>()?.0,
                "sessions" => {
                    page.sessions = a.next_value_seed(JobsSeed {
                        max_jobs: self.max_jobs,
                        over: self.over,
                    })?
                }
                "is_success" => page.is_success = a.next_value::<LenientBool>()?.0,
                "message" => page.message = a.next_value::<LenientString>()?.0,
                "error_code" => page.error_code = a.next_value::<LenientString>()?.0,
                _ => {
                    a.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(page)
    }
}

#[derive(Deserialize)]
#[serde(transparent)]
struct LenientI64(#[serde(deserialize_with = "lenient_i64")] Option<i64>);

#[derive(Deserialize)]
#[serde(transparent)]
struct LenientBool(#[serde(deserialize_with = "lenient_bool")] Option<bool>);

#[derive(Deserialize)]
#[serde(transparent)]
struct LenientString(#[serde(deserialize_with = "lenient_string")] Option<String>);

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
    /// The page of `size` jobs at `from` of queue `queue`, nothing else asked.
    pub fn page(queue: &str, from: u64, size: u32) -> Self {
        ListBatchesQuery {
            queue_name: Some(queue.to_string()),
            from: Some(from),
            size: Some(size),
            ..Default::default()
        }
    }

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
/// `sessions` that is not an array at all reads as empty. Every element counts toward
/// `max_jobs`; the first one beyond it sets `over` and fails the decode at once.
struct JobsSeed<'a> {
    max_jobs: Option<usize>,
    over: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for JobsSeed<'_> {
    type Value = Vec<BatchJob>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JobsSeed<'_> {
    type Value = Vec<BatchJob>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of batch jobs")
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let cap = a.size_hint().unwrap_or(0).min(1024);
        let mut out = Vec::with_capacity(self.max_jobs.map_or(cap, |m| cap.min(m)));
        let mut elements = 0usize;
        while let Some(job) = a.next_element::<MaybeJob>()? {
            elements = elements.saturating_add(1);
            if self.max_jobs.is_some_and(|m| elements > m) {
                self.over.set(true);
                return Err(de::Error::custom("more jobs than the page size asked for"));
            }
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
    fn a_page_may_not_hold_more_jobs_than_asked() {
        // 32 MiB of empty objects: about 11 million jobs if decoded whole.
        let mut body = String::with_capacity(32 << 20);
        body.push_str("{\"total\":1,\"sessions\":[{}");
        while body.len() < (32 << 20) - 4 {
            body.push_str(",{}");
        }
        body.push_str("]}");
        let started = std::time::Instant::now();
        let e = decode_page_at_most(body.as_bytes(), Some(100)).expect_err("oversized");
        let took = started.elapsed();
        assert!(matches!(e, PageError::TooManyJobs { asked: 100 }), "{e:?}");
        assert!(e.to_string().contains("size=100"), "{e}");
        // It stopped at the 101st element, long before the end of the body.
        assert!(took < std::time::Duration::from_millis(200), "{took:?}");

        // Exactly `size` elements is fine; `{}` and junk elements all count.
        let page = decode_page_at_most(b"{\"sessions\":[{},{},{}]}", Some(3)).expect("3 of 3");
        assert_eq!(page.sessions.len(), 3, "empty objects are jobs");
        assert!(matches!(
            decode_page_at_most(b"{\"sessions\":[{},{},{},{}]}", Some(3)),
            Err(PageError::TooManyJobs { asked: 3 })
        ));
        assert!(matches!(
            decode_page_at_most(b"{\"sessions\":[{},1,\"x\",null]}", Some(3)),
            Err(PageError::TooManyJobs { asked: 3 })
        ));
        // Without a bound the same body decodes (the size limit of the transport applies).
        assert_eq!(
            decode_page(b"{\"sessions\":[{},{},{},{}]}")
                .expect("unbounded")
                .sessions
                .len(),
            4
        );
        // Malformed JSON is still a JSON error, also with a bound.
        assert!(matches!(
            decode_page_at_most(b"{\"sessions\":[{}", Some(3)),
            Err(PageError::Json(_))
        ));
        assert!(matches!(
            decode_page_at_most(b"{\"total\":1,\"total\":2}", Some(3)),
            Err(PageError::Json(_))
        ));
        assert!(matches!(
            decode_page_at_most(b"{} trailing", Some(3)),
            Err(PageError::Json(_))
        ));
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
