//! The simulator over real loopback HTTP: paging and filters, determinism (here), signatures
//! and IAM tokens (`auth`), every fault (`faults`), the queue and project lists (`queues`), the
//! metadata service and the OIDC exchange (`keyless`), per-queue list behaviour and page faults
//! (`listing`).

mod auth;
mod faults;
mod keyless;
mod listing;
mod queues;

use faults::raw_get;

use std::time::{Duration, Instant};

use serde_json::Value;
use time::OffsetDateTime;

use super::*;
use crate::dli::auth::aksk::{self, AkSkSigner};

const PID: &str = DEMO_PROJECT_ID;

pub(super) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client builds")
}

/// A GET of ListBatches signed with `ak`/`sk` at `date`; the sent query is the signed one.
pub(super) fn signed(
    sim: &Simulator,
    client: &reqwest::Client,
    pid: &str,
    pairs: &[(&str, &str)],
    sk: &str,
    date: OffsetDateTime,
) -> reqwest::RequestBuilder {
    let query = aksk::canonical_query(pairs);
    let path = format!("/v2.0/{pid}/batches");
    let signer = AkSkSigner::new(Secret::new(DEMO_ACCESS_KEY), Secret::new(sk), None);
    let headers = signer.sign(
        "GET",
        &sim.addr().to_string(),
        &path,
        &query,
        pid,
        &aksk::sdk_date(date),
    );
    let url = if query.is_empty() {
        format!("{}{path}", sim.base_url())
    } else {
        format!("{}{path}?{query}", sim.base_url())
    };
    let mut rb = client.get(url);
    for (name, value) in headers {
        // reqwest writes Host itself, with the same host:port value.
        if name != "Host" {
            rb = rb.header(name, value);
        }
    }
    rb
}

pub(super) async fn get(sim: &Simulator, pairs: &[(&str, &str)]) -> (u16, Value) {
    let resp = signed(
        sim,
        &client(),
        PID,
        pairs,
        DEMO_SECRET_KEY,
        OffsetDateTime::now_utc(),
    )
    .send()
    .await
    .expect("request answered");
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body)
}

pub(super) fn ids(body: &Value) -> Vec<String> {
    body["sessions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|j| j["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub(super) async fn sim_with(config: SimConfig, n: usize) -> (Simulator, Vec<SimJob>) {
    let sim = Simulator::start(config).await.expect("starts");
    let jobs = sim.generate_jobs(n, "etl", false);
    sim.set_jobs(PID, "etl", jobs.clone());
    (sim, jobs)
}

#[tokio::test]
async fn pages_with_from_and_size_and_full_total() {
    let (sim, jobs) = sim_with(SimConfig::default(), 250).await;
    let all_ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
    let mut seen = Vec::new();
    for from in [0, 100, 200] {
        let f = from.to_string();
        let (status, body) = get(
            &sim,
            &[("queue_name", "etl"), ("from", &f), ("size", "100")],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["from"], from);
        assert_eq!(body["total"], 250);
        assert!(body["create_time"].as_i64().is_some_and(|t| t > 0));
        seen.extend(ids(&body));
    }
    assert_eq!(seen, all_ids, "pages cover the queue in order");
    let (_, body) = get(&sim, &[("queue_name", "etl"), ("from", "300")]).await;
    assert_eq!(ids(&body).len(), 0);
    // Defaults: from 0, size 100; cluster_name is the queue filter's synonym.
    let (_, body) = get(&sim, &[("cluster_name", "etl")]).await;
    assert_eq!(ids(&body), all_ids[..100].to_vec());
    let log = sim.request_log();
    assert_eq!(log.len(), 5);
    assert_eq!(
        log.iter()
            .map(|r| (r.from, r.size, r.sessions))
            .collect::<Vec<_>>(),
        vec![
            (0, 100, 100),
            (100, 100, 100),
            (200, 100, 50),
            (300, 100, 0),
            (0, 100, 100)
        ]
    );
    assert!(
        log.iter()
            .all(|r| r.status == 200 && r.auth == "aksk" && r.project_id == PID)
    );
    assert_eq!(log[0].queue.as_deref(), Some("etl"));
    assert_eq!(sim.stats().list_batches_requests, 5);
    sim.reset_stats();
    assert_eq!(sim.stats(), SimStats::default());
    assert!(sim.request_log().is_empty());
    sim.shutdown();
}

#[tokio::test]
async fn total_modes_and_page_size_cap() {
    let config = SimConfig {
        total_mode: TotalMode::PageLength,
        max_page_size: Some(30),
        ..SimConfig::default()
    };
    let (sim, _) = sim_with(config, 75).await;
    let (_, body) = get(&sim, &[("queue_name", "etl"), ("size", "100")]).await;
    assert_eq!(ids(&body).len(), 30, "size capped silently");
    assert_eq!(body["total"], 30);
    let (_, body) = get(
        &sim,
        &[("queue_name", "etl"), ("from", "60"), ("size", "100")],
    )
    .await;
    assert_eq!((ids(&body).len(), body["total"].as_i64()), (15, Some(15)));
    assert_eq!(
        sim.request_log()[0].size,
        100,
        "the log keeps the size asked for"
    );
    sim.shutdown();

    let (sim, _) = sim_with(
        SimConfig {
            total_mode: TotalMode::Fixed(7),
            ..SimConfig::default()
        },
        20,
    )
    .await;
    let (_, body) = get(&sim, &[("queue_name", "etl"), ("size", "5")]).await;
    assert_eq!((ids(&body).len(), body["total"].as_i64()), (5, Some(7)));
    sim.shutdown();
}

#[tokio::test]
async fn filters_order_and_unknown_queue() {
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("starts");
    sim.set_jobs(
        PID,
        "etl",
        vec![
            SimJob::new("a", "running", Some("alice"), 3_000),
            SimJob::new("b", "success", Some("bob"), 2_000),
            SimJob::new("c", "running", None, 1_000),
        ],
    );
    sim.set_jobs(
        PID,
        "adhoc",
        vec![SimJob::new("d", "dead", Some("alice"), 4_000)],
    );
    let q = |pairs: &'static [(&'static str, &'static str)]| {
        let sim = sim.clone();
        async move { ids(&get(&sim, pairs).await.1) }
    };
    assert_eq!(
        q(&[("queue_name", "etl"), ("state", "running")]).await,
        ["a", "c"]
    );
    assert_eq!(q(&[("queue_name", "etl"), ("owner", "alice")]).await, ["a"]);
    assert_eq!(q(&[("queue_name", "etl"), ("job-id", "b")]).await, ["b"]);
    assert_eq!(
        q(&[("queue_name", "etl"), ("order", "CREATE_TIME_ASC")]).await,
        ["c", "b", "a"]
    );
    assert_eq!(
        q(&[("queue_name", "etl"), ("order", "whatever")]).await,
        ["a", "b", "c"]
    );
    assert_eq!(q(&[("queue_name", "nope")]).await, Vec::<String>::new());
    let (_, body) = get(&sim, &[("owner", "alice")]).await;
    assert_eq!(
        (ids(&body), body["total"].as_i64()),
        (vec!["d".to_string(), "a".to_string()], Some(2))
    );
    let (_, body) = get(&sim, &[("size", "2"), ("from", "1")]).await;
    assert_eq!(
        (ids(&body).len(), body["total"].as_i64()),
        (2, Some(4)),
        "no queue: whole project"
    );
    // The owner of "c" is absent from the JSON, not null.
    let (_, body) = get(&sim, &[("queue_name", "etl"), ("job-id", "c")]).await;
    assert!(body["sessions"][0].get("owner").is_none());
    assert!(sim.update_job(PID, "etl", "c", |j| j.state = "success".into()));
    assert!(!sim.update_job(PID, "etl", "zzz", |_| {}));
    assert_eq!(sim.jobs(PID, "etl")[2].state, "success");
    sim.insert_front(
        PID,
        "etl",
        vec![
            SimJob::new("n1", "starting", None, 9),
            SimJob::new("n2", "starting", None, 8),
        ],
    );
    assert_eq!(
        sim.jobs(PID, "etl")
            .iter()
            .map(|j| j.id.as_str())
            .collect::<Vec<_>>(),
        ["n1", "n2", "a", "b", "c"]
    );
    sim.shutdown();
}

#[tokio::test]
async fn bad_paging_parameters_are_dli_0001() {
    let (sim, _) = sim_with(SimConfig::default(), 3).await;
    for pairs in [
        [("from", "-1")],
        [("size", "abc")],
        [("size", "-5")],
        [("from", "1.5")],
    ] {
        let (status, body) = get(&sim, &pairs).await;
        assert_eq!(status, 400, "{pairs:?}");
        assert_eq!(body["error_code"], "DLI.0001");
        assert!(body["error_msg"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(
        sim.request_log()
            .iter()
            .map(|r| r.status)
            .collect::<Vec<_>>(),
        [400; 4]
    );
    assert_eq!(sim.request_log()[1].size, -1);
    sim.shutdown();
}

#[tokio::test]
async fn same_seed_same_data() {
    let a = Simulator::start(SimConfig {
        seed: 9,
        ..SimConfig::default()
    })
    .await
    .expect("starts");
    let b = Simulator::start(SimConfig {
        seed: 9,
        ..SimConfig::default()
    })
    .await
    .expect("starts");
    let c = Simulator::start(SimConfig {
        seed: 10,
        ..SimConfig::default()
    })
    .await
    .expect("starts");
    let t = 1_800_000_000_000;
    let ja = a.generate_jobs_at(200, "etl", true, t);
    assert_eq!(ja, b.generate_jobs_at(200, "etl", true, t));
    assert_ne!(ja, c.generate_jobs_at(200, "etl", true, t));
    // The wall-clock variant differs only by the clock: same ids, states and owners.
    let (x, y) = (
        a.generate_jobs(50, "q", false),
        b.generate_jobs(50, "q", false),
    );
    let key = |j: &SimJob| (j.id.clone(), j.state.clone(), j.owner.clone());
    assert_eq!(
        x.iter().map(key).collect::<Vec<_>>(),
        y.iter().map(key).collect::<Vec<_>>()
    );
    let states: std::collections::BTreeSet<_> = ja.iter().map(|j| j.state.as_str()).collect();
    assert_eq!(states.len(), 5, "{states:?}");
    let owners: std::collections::BTreeSet<_> = ja.iter().map(|j| j.owner.clone()).collect();
    assert!(owners.len() > 8 && owners.contains(&None), "{owners:?}");
    for s in [a, b, c] {
        s.shutdown();
    }
}

#[tokio::test]
async fn realistic_pages_are_served_without_copying_the_queue() {
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("starts");
    let jobs = sim.generate_jobs(5_000, "etl", true);
    sim.set_jobs(PID, "etl", jobs);
    let c = client();
    let started = Instant::now();
    for from in (0..5_000).step_by(100) {
        let f = from.to_string();
        let resp = raw_get(
            &sim,
            &c,
            &[("queue_name", "etl"), ("from", &f), ("size", "100")],
        )
        .await
        .expect("answered");
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.expect("json");
        assert_eq!(ids(&body).len(), 100);
    }
    // A generous bound for a debug build on a busy machine; a release walk is far faster.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    sim.shutdown();
}
