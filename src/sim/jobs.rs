//! [`SimJob`] (one DLI batch job as the API serialises it) and seeded job generation.
//!
//! Owns the shape of a job on the wire (docs/dli-api.md, "ListBatches response") and the choice of plausible values. It
//! must not take randomness from anywhere but the generator it is handed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rand::Rng;
use rand::rngs::StdRng;
use serde::Serialize;

/// The five DLI batch states, in the order the exporter lists them.
pub const JOB_STATES: [&str; 5] = crate::dli::states::KNOWN_STATES;

/// The main owners generated jobs belong to (most jobs); see [`generate`].
pub(crate) const OWNERS: [&str; 8] = [
    "ei_dlics_d00352431",
    "zhang_wei",
    "li_na",
    "etl_service",
    "wang_fang",
    "chen_jie",
    "data_platform",
    "liu_yang",
];

const NAMES: [&str; 10] = [
    "daily_orders_etl",
    "user_profile_agg",
    "clickstream_sessionize",
    "inventory_snapshot",
    "fraud_features",
    "ads_attribution",
    "dim_customer_merge",
    "hourly_metrics_rollup",
    "log_compaction",
    "ml_training_prep",
];

const SC_TYPES: [&str; 4] = ["A", "B", "C", "CUSTOMIZED"];

/// One batch job with every field of docs/dli-api.md ("ListBatches response") under its JSON key. `None` fields are left
/// out of the JSON; `extra` is flattened into the object (unknown fields, or `"owner": null`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimJob {
    pub id: String,
    pub state: String,
    #[serde(rename = "appId", skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    pub log: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sc_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    pub create_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(rename = "proxyUser", skip_serializing_if = "Option::is_none")]
    pub proxy_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub req_body: Option<String>,
    pub update_time: i64,
    pub duration: i64,
    /// Extra keys written into the job object as they are (e.g. `"owner": null` with
    /// `owner: None`, or fields DLI might add). Must not repeat a key written above.
    #[serde(flatten, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl SimJob {
    /// A job with the given id, state, owner and creation time; the other fields are filled
    /// deterministically: finished jobs (`success`, `dead`) ran for one minute, active ones have
    /// `update_time == create_time` and duration 0. `cluster_name` and `queue` are left empty
    /// (the queue a job is stored in decides where it is served).
    pub fn new(
        id: impl Into<String>,
        state: &str,
        owner: Option<&str>,
        create_time_ms: i64,
    ) -> SimJob {
        let id = id.into();
        let finished = matches!(state, "success" | "dead");
        let duration = if finished { 60_000 } else { 0 };
        SimJob {
            app_id: Some(format!("batch-session-{id}:0")),
            log: Vec::new(),
            sc_type: Some("A".to_string()),
            cluster_name: None,
            create_time: create_time_ms,
            name: Some(format!("job-{}", id.chars().take(8).collect::<String>())),
            owner: owner.map(str::to_string),
            proxy_user: Some("dli_proxy".to_string()),
            kind: Some("spark".to_string()),
            queue: None,
            image: None,
            req_body: None,
            update_time: create_time_ms.saturating_add(duration),
            duration,
            state: state.to_string(),
            id,
            extra: BTreeMap::new(),
        }
    }
}

/// A UUID-shaped (version 4 layout) id from the generator.
pub(crate) fn uuid(rng: &mut StdRng) -> String {
    let mut b: [u8; 16] = rng.random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// An owner: 80% one of [`OWNERS`], 17% one of fifty `dli_user_NN`, 3% none.
pub(crate) fn random_owner(rng: &mut StdRng) -> Option<String> {
    let roll = rng.random_range(0..100u32);
    if roll < 3 {
        None
    } else if roll < 20 {
        Some(format!("dli_user_{:02}", rng.random_range(0..50u32)))
    } else {
        Some(OWNERS[rng.random_range(0..OWNERS.len())].to_string())
    }
}

/// A state with realistic weights: mostly finished jobs, some active.
pub(crate) fn random_state(rng: &mut StdRng) -> &'static str {
    match rng.random_range(0..100u32) {
        0..5 => "starting",
        5..20 => "running",
        20..23 => "recovering",
        23..83 => "success",
        _ => "dead",
    }
}

/// `n` jobs for `queue`, newest first, created over the time before `now_ms`.
pub(crate) fn generate(
    rng: &mut StdRng,
    n: usize,
    queue: &str,
    realistic: bool,
    now_ms: i64,
) -> Vec<SimJob> {
    let mut out = Vec::with_capacity(n);
    let mut created = now_ms - rng.random_range(0..5_000i64);
    for _ in 0..n {
        let state = random_state(rng);
        let owner = random_owner(rng);
        out.push(make_job(
            rng, queue, state, owner, created, now_ms, realistic,
        ));
        created -= rng.random_range(1_000..120_000i64);
    }
    out
}

/// One job of `queue` in `state`, created at `created_ms`, with update time and duration that fit
/// the state as of `now_ms`.
pub(crate) fn make_job(
    rng: &mut StdRng,
    queue: &str,
    state: &str,
    owner: Option<String>,
    created_ms: i64,
    now_ms: i64,
    realistic: bool,
) -> SimJob {
    let id = uuid(rng);
    let age = (now_ms - created_ms).max(0);
    let (update_time, duration) = match state {
        "starting" => (created_ms, 0),
        "success" | "dead" => {
            let d = rng.random_range(30_000..7_200_000i64).min(age);
            (created_ms + d, d)
        }
        _ => {
            let since_update = rng.random_range(0..=age.min(60_000));
            (now_ms - since_update, age)
        }
    };
    let name = format!(
        "{}_{}",
        NAMES[rng.random_range(0..NAMES.len())],
        rng.random_range(1..1000u32)
    );
    let sc_type = SC_TYPES[rng.random_range(0..SC_TYPES.len())];
    let app_seq = rng.random_range(0..8u32);
    let app_id = if realistic || state != "starting" {
        Some(format!("batch-session-{id}:{app_seq}"))
    } else {
        None
    };
    let (log, image, req_body) = if realistic {
        let image = format!(
            "dli-images/spark-custom:3.3.1-{}",
            rng.random_range(1..20u32)
        );
        (
            log_lines(rng, &id, state, created_ms),
            Some(image),
            Some(req_body(rng, queue, &name, sc_type)),
        )
    } else {
        (Vec::new(), None, None)
    };
    SimJob {
        id,
        state: state.to_string(),
        app_id,
        log,
        sc_type: Some(sc_type.to_string()),
        cluster_name: Some(queue.to_string()),
        create_time: created_ms,
        name: Some(name),
        owner,
        proxy_user: Some(format!("dli_proxy_{:03}", rng.random_range(0..100u32))),
        kind: Some("spark".to_string()),
        queue: Some(queue.to_string()),
        image,
        req_body,
        update_time,
        duration,
        extra: BTreeMap::new(),
    }
}

/// Ten Spark-driver-looking log lines.
fn log_lines(rng: &mut StdRng, id: &str, state: &str, created_ms: i64) -> Vec<String> {
    const CLASSES: [&str; 5] = [
        "org.apache.spark.deploy.yarn.Client",
        "org.apache.spark.scheduler.DAGScheduler",
        "org.apache.spark.SparkContext",
        "org.apache.spark.storage.BlockManagerMaster",
        "com.huawei.dli.batch.BatchSession",
    ];
    let secs = created_ms / 1000;
    (0..10)
        .map(|i| {
            let class = CLASSES[rng.random_range(0..CLASSES.len())];
            format!(
                "{secs}.{:03} INFO [driver-{i}] {class}: batch {id} stage {} of session reports state {} ({} tasks)",
                rng.random_range(0..1000u32),
                rng.random_range(0..40u32),
                state.to_ascii_uppercase(),
                rng.random_range(1..4000u32),
            )
        })
        .collect()
}

/// A 1–2 KB JSON string shaped like the original submit request.
fn req_body(rng: &mut StdRng, queue: &str, name: &str, sc_type: &str) -> String {
    let target = rng.random_range(1024..2048usize);
    let mut s = String::with_capacity(target + 128);
    let _ = write!(
        s,
        "{{\"file\":\"obs://dli-jobs-{n}/jars/{name}.jar\",\"className\":\"com.example.jobs.{name}.Main\",\
         \"name\":\"{name}\",\"queue\":\"{queue}\",\"sc_type\":\"{sc_type}\",\"executorCores\":{c},\
         \"executorMemory\":\"{m}G\",\"numExecutors\":{e},\"driverCores\":1,\"driverMemory\":\"4G\",\
         \"args\":[\"--date\",\"2026-11-{d:02}\",\"--mode\",\"incremental\"],\"conf\":{{",
        n = rng.random_range(1..100u32),
        c = rng.random_range(1..8u32),
        m = rng.random_range(2..32u32),
        e = rng.random_range(1..64u32),
        d = rng.random_range(1..29u32),
    );
    let mut i = 0u32;
    while s.len() < target.saturating_sub(2) {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            "\"spark.dli.job.option.{i:03}\":\"value-{:08x}\"",
            rng.random::<u32>()
        );
        i += 1;
    }
    s.push_str("}}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn same_seed_same_jobs_and_realistic_fields() {
        let a = generate(
            &mut StdRng::seed_from_u64(7),
            50,
            "q",
            true,
            1_800_000_000_000,
        );
        let b = generate(
            &mut StdRng::seed_from_u64(7),
            50,
            "q",
            true,
            1_800_000_000_000,
        );
        let c = generate(
            &mut StdRng::seed_from_u64(8),
            50,
            "q",
            true,
            1_800_000_000_000,
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
        for j in &a {
            assert_eq!(j.id.len(), 36, "{}", j.id);
            assert_eq!(j.log.len(), 10);
            let body = j.req_body.as_deref().unwrap_or("");
            assert!(
                (1024..=2100).contains(&body.len()),
                "req_body {}",
                body.len()
            );
            let v: serde_json::Value = serde_json::from_str(body).expect("req_body is JSON");
            assert_eq!(v["queue"], "q");
            let json = serde_json::to_value(j).expect("serialises");
            let keys = json.as_object().map_or(0, |o| o.len()) + usize::from(j.owner.is_none());
            assert_eq!(keys, 16, "{json}");
            assert!(j.update_time >= j.create_time && j.duration >= 0);
        }
        assert!(
            a.windows(2).all(|w| w[0].create_time > w[1].create_time),
            "newest first"
        );
    }

    #[test]
    fn new_fills_plausibly_and_missing_owner_is_absent() {
        let j = SimJob::new("id-1", "success", None, 1000);
        let v = serde_json::to_value(&j).expect("serialises");
        assert!(v.get("owner").is_none());
        assert_eq!(v["appId"], "batch-session-id-1:0");
        assert_eq!(v["update_time"], 61_000);
        let mut j = SimJob::new("id-2", "running", Some("bob"), 1000);
        j.owner = None;
        j.extra.insert("owner".into(), serde_json::Value::Null);
        let v = serde_json::to_value(&j).expect("serialises");
        assert!(v["owner"].is_null() && v.get("owner").is_some());
    }
}
