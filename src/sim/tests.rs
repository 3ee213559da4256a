//! The simulator over real loopback HTTP: paging, auth, IAM tokens, every fault, determinism.

use std::time::{Duration, Instant};

use serde_json::Value;
use time::OffsetDateTime;

use super::*;
use crate::dli::auth::aksk::{self, AkSkSigner};

const PID: &str = DEMO_PROJECT_ID;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client builds")
}

/// A GET of ListBatches signed with `ak`/`sk` at `date`; the sent query is the signed one.
fn signed(
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

async fn get(sim: &Simulator, pairs: &[(&str, &str)]) -> (u16, Value) {
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

fn ids(body: &Value) -> Vec<String> {
    body["sessions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|j| j["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn sim_with(config: SimConfig, n: usize) -> (Simulator, Vec<SimJob>) {
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
async fn aksk_signatures_are_verified() {
    let (sim, _) = sim_with(SimConfig::default(), 3).await;
    let c = client();
    let now = OffsetDateTime::now_utc();
    let pairs = [("queue_name", "etl"), ("from", "0"), ("size", "10")];
    let ok = signed(&sim, &c, PID, &pairs, DEMO_SECRET_KEY, now)
        .send()
        .await
        .expect("answered");
    assert_eq!(ok.status(), 200);
    assert!(ok.headers().contains_key("x-request-id"));
    assert_eq!(ok.headers()["content-type"], "application/json");

    let expect_401 = |resp: reqwest::Response, code: &'static str| async move {
        assert_eq!(resp.status(), 401);
        let header_id = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body: Value = resp.json().await.expect("json error body");
        assert_eq!(body["error_code"], code, "{body}");
        assert_eq!(body["request_id"].as_str().map(str::to_string), header_id);
    };
    let wrong_sk = signed(&sim, &c, PID, &pairs, "not-the-secret", now)
        .send()
        .await
        .expect("answered");
    expect_401(wrong_sk, "APIGW.0301").await;
    // Signed for one query, sent with another.
    let tampered = signed(&sim, &c, PID, &pairs, DEMO_SECRET_KEY, now)
        .query(&[("owner", "x")])
        .send()
        .await
        .expect("answered");
    expect_401(tampered, "APIGW.0301").await;
    let unsigned = c
        .get(format!("{}/v2.0/{PID}/batches", sim.base_url()))
        .send()
        .await
        .expect("answered");
    expect_401(unsigned, "APIGW.0301").await;
    let garbage = c
        .get(format!("{}/v2.0/{PID}/batches", sim.base_url()))
        .header("Authorization", "SDK-HMAC-SHA256 nonsense")
        .send()
        .await
        .expect("answered");
    expect_401(garbage, "APIGW.0301").await;
    let skewed = signed(
        &sim,
        &c,
        PID,
        &pairs,
        DEMO_SECRET_KEY,
        now - Duration::from_secs(16 * 60),
    )
    .send()
    .await
    .expect("answered");
    expect_401(skewed, "APIGW.0303").await;
    let slightly = signed(
        &sim,
        &c,
        PID,
        &pairs,
        DEMO_SECRET_KEY,
        now + Duration::from_secs(14 * 60),
    )
    .send()
    .await
    .expect("answered");
    assert_eq!(slightly.status(), 200, "within the allowed skew");
    // Special characters in the query are decoded and re-canonicalised.
    let odd = signed(
        &sim,
        &c,
        PID,
        &[("job_name", "a b+c*/~"), ("queue_name", "etl")],
        DEMO_SECRET_KEY,
        now,
    )
    .send()
    .await
    .expect("answered");
    assert_eq!(odd.status(), 200);
    let stats = sim.stats();
    assert_eq!((stats.auth_rejections, stats.list_batches_requests), (5, 8));
    let auths: Vec<_> = sim
        .request_log()
        .iter()
        .map(|r| (r.auth, r.status))
        .collect();
    assert_eq!(auths[3], ("none", 401));
    sim.shutdown();
}

async fn login(sim: &Simulator, password: &str, scope: Value) -> reqwest::Response {
    let body = serde_json::json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": DEMO_USER, "password": password, "domain": {"name": DEMO_DOMAIN}}}},
        "scope": {"project": scope}}});
    client()
        .post(format!("{}/v3/auth/tokens", sim.base_url()))
        .json(&body)
        .send()
        .await
        .expect("answered")
}

async fn with_token(sim: &Simulator, pid: &str, token: &str) -> u16 {
    client()
        .get(format!(
            "{}/v2.0/{pid}/batches?queue_name=etl",
            sim.base_url()
        ))
        .header("X-Auth-Token", token)
        .send()
        .await
        .expect("answered")
        .status()
        .as_u16()
}

#[tokio::test]
async fn iam_tokens_issue_use_and_expire() {
    let (sim, _) = sim_with(SimConfig::default(), 3).await;
    let bad = login(&sim, "wrong", serde_json::json!({"id": PID})).await;
    assert_eq!(bad.status(), 401);
    let body: Value = bad.json().await.expect("json");
    assert_eq!(
        body["error"]["message"],
        "The username or password is wrong."
    );

    let good = login(&sim, DEMO_PASSWORD, serde_json::json!({"id": PID})).await;
    assert_eq!(good.status(), 201);
    let token = good.headers()["x-subject-token"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(token.len() > 1000);
    let body: Value = good.json().await.expect("json");
    let expires = body["token"]["expires_at"].as_str().expect("expires_at");
    let parsed = OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339)
        .expect("rfc3339");
    let lifetime = parsed - OffsetDateTime::now_utc();
    assert!(
        lifetime > Duration::from_secs(23 * 3600) && lifetime <= Duration::from_secs(24 * 3600)
    );
    assert!(expires.ends_with('Z') && expires.len() == 27, "{expires}");
    assert_eq!(body["token"]["project"]["id"], PID);

    assert_eq!(with_token(&sim, PID, &token).await, 200);
    assert_eq!(
        with_token(&sim, "ffffffffffffffffffffffffffffffff", &token).await,
        401,
        "other project"
    );
    assert_eq!(with_token(&sim, PID, "MIInot-issued").await, 401);
    sim.expire_tokens();
    assert_eq!(with_token(&sim, PID, &token).await, 401);
    assert_eq!(sim.request_log()[0].auth, "token");

    let by_name = login(
        &sim,
        DEMO_PASSWORD,
        serde_json::json!({"name": DEMO_REGION}),
    )
    .await;
    assert_eq!(by_name.status(), 201);
    let token2 = by_name.headers()["x-subject-token"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_ne!(token, token2);
    assert_eq!(with_token(&sim, PID, &token2).await, 200);
    let unknown = login(
        &sim,
        DEMO_PASSWORD,
        serde_json::json!({"name": "xx-nowhere-1"}),
    )
    .await;
    assert_eq!(unknown.status(), 400);

    let s = sim.stats();
    assert_eq!(
        (s.iam_token_requests, s.tokens_issued, s.auth_rejections),
        (4, 2, 3)
    );
    sim.shutdown();
}

#[tokio::test]
async fn tokens_expire_after_their_lifetime() {
    let config = SimConfig {
        token_lifetime: Duration::from_millis(100),
        ..SimConfig::default()
    };
    let (sim, _) = sim_with(config, 1).await;
    let resp = login(&sim, DEMO_PASSWORD, serde_json::json!({"id": PID})).await;
    let token = resp.headers()["x-subject-token"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(with_token(&sim, PID, &token).await, 200);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(with_token(&sim, PID, &token).await, 401);
    sim.shutdown();
}

async fn raw_get(
    sim: &Simulator,
    client: &reqwest::Client,
    pairs: &[(&str, &str)],
) -> reqwest::Result<reqwest::Response> {
    signed(
        sim,
        client,
        PID,
        pairs,
        DEMO_SECRET_KEY,
        OffsetDateTime::now_utc(),
    )
    .send()
    .await
}

#[tokio::test]
async fn error_faults_answer_as_dli_and_apig_do() {
    let (sim, _) = sim_with(SimConfig::default(), 10).await;
    let c = client();
    sim.add_fault(FaultRule::once(Fault::status(
        503,
        "DLI.0999",
        "backend busy",
    )));
    let resp = raw_get(&sim, &c, &[]).await.expect("answered");
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("x-request-id"));
    let body: Value = resp.json().await.expect("json");
    assert_eq!(
        body,
        serde_json::json!({"error_code": "DLI.0999", "error_msg": "backend busy"})
    );
    assert_eq!(
        raw_get(&sim, &c, &[]).await.expect("answered").status(),
        200,
        "once means once"
    );

    sim.add_fault(FaultRule::times(
        2,
        Fault::Throttle {
            retry_after: Some(3),
        },
    ));
    let resp = raw_get(&sim, &c, &[]).await.expect("answered");
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "3");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error_code"], "APIGW.0308");
    assert!(body["request_id"].is_string());
    sim.clear_faults();
    sim.add_fault(FaultRule::once(Fault::Throttle { retry_after: None }));
    let resp = raw_get(&sim, &c, &[]).await.expect("answered");
    assert_eq!(resp.status(), 429);
    assert!(!resp.headers().contains_key("retry-after"));
    assert_eq!(sim.stats().faults_injected, 3);
    sim.shutdown();
}

#[tokio::test]
async fn body_faults_break_decoding() {
    let (sim, _) = sim_with(SimConfig::default(), 50).await;
    let c = client();
    sim.add_fault(FaultRule::once(Fault::MalformedJson));
    let resp = raw_get(&sim, &c, &[]).await.expect("answered");
    assert_eq!(resp.status(), 200);
    assert!(serde_json::from_slice::<Value>(&resp.bytes().await.expect("body")).is_err());

    sim.add_fault(FaultRule::once(Fault::TruncatedJson));
    let resp = raw_get(&sim, &c, &[("queue_name", "etl")])
        .await
        .expect("answered");
    assert_eq!(resp.status(), 200);
    let length = resp.content_length();
    let bytes = resp.bytes().await.expect("whole body arrives");
    assert_eq!(length, Some(bytes.len() as u64));
    assert!(bytes.starts_with(br#"{"from":0,"total":50,"sessions":[{"#));
    assert!(serde_json::from_slice::<Value>(&bytes).is_err());

    sim.add_fault(FaultRule::once(Fault::Oversized(3 << 20)));
    let resp = raw_get(&sim, &c, &[]).await.expect("answered");
    let bytes = resp.bytes().await.expect("body");
    assert_eq!(bytes.len(), 3 << 20);
    assert!(bytes.starts_with(b"{\"from\""));

    sim.add_fault(FaultRule::once(Fault::WrongTotal(1)));
    let resp = raw_get(&sim, &c, &[("size", "10")])
        .await
        .expect("answered");
    let body: Value = resp.json().await.expect("json");
    assert_eq!((ids(&body).len(), body["total"].as_i64()), (10, Some(1)));
    sim.shutdown();
}

#[tokio::test]
async fn latency_and_insert_front_are_non_terminal() {
    let (sim, jobs) = sim_with(SimConfig::default(), 20).await;
    let c = client();
    sim.add_fault(FaultRule::once(Fault::Latency(Duration::from_millis(120))));
    sim.add_fault(FaultRule::once(Fault::InsertFront(3)).queue("etl").from(10));
    let started = Instant::now();
    let resp = raw_get(&sim, &c, &[("queue_name", "etl"), ("size", "10")])
        .await
        .expect("answered");
    assert!(started.elapsed() >= Duration::from_millis(120));
    assert_eq!(resp.status(), 200);
    // The second page of the walk sees three new jobs pushed in front: the last three of page one
    // again (duplicates, never a lost job).
    let body: Value = raw_get(
        &sim,
        &c,
        &[("queue_name", "etl"), ("from", "10"), ("size", "10")],
    )
    .await
    .expect("answered")
    .json()
    .await
    .expect("json");
    assert_eq!(body["total"], 23);
    let expected: Vec<String> = jobs[7..17].iter().map(|j| j.id.clone()).collect();
    assert_eq!(ids(&body), expected);
    let now = sim.jobs(PID, "etl");
    assert!(
        now[..3]
            .iter()
            .all(|j| j.state == "starting" && j.queue.as_deref() == Some("etl"))
    );
    assert_eq!(sim.stats().faults_injected, 2);
    sim.shutdown();
}

#[tokio::test]
async fn hang_and_reset_and_skip() {
    let (sim, _) = sim_with(SimConfig::default(), 5).await;
    sim.add_fault(FaultRule::once(Fault::Hang).skip(1));
    let quick = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(200))
        .build()
        .expect("client");
    assert_eq!(
        raw_get(&sim, &quick, &[])
            .await
            .expect("first passes")
            .status(),
        200
    );
    let err = raw_get(&sim, &quick, &[]).await.expect_err("hangs");
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(
        raw_get(&sim, &quick, &[])
            .await
            .expect("third passes")
            .status(),
        200
    );

    sim.add_fault(FaultRule::once(Fault::ResetConnection));
    let err = raw_get(&sim, &client(), &[]).await.expect_err("reset");
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    let mut was_reset = false;
    while let Some(e) = source {
        was_reset |= e
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionReset);
        source = e.source();
    }
    assert!(was_reset, "{err:?}");
    assert_eq!(
        raw_get(&sim, &client(), &[])
            .await
            .expect("next passes")
            .status(),
        200
    );
    let statuses: Vec<u16> = sim.request_log().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 0, 200, 0, 200]);

    // Shutdown ends a hung request and refuses new connections.
    sim.add_fault(FaultRule::always(Fault::Hang));
    let pending = tokio::spawn({
        let sim = sim.clone();
        async move { raw_get(&sim, &client(), &[]).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    sim.shutdown();
    let ended = tokio::time::timeout(Duration::from_secs(2), pending)
        .await
        .expect("ends promptly");
    assert!(ended.expect("task").is_err());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        tokio::net::TcpStream::connect(sim.addr()).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn iam_faults_apply_to_the_token_endpoint_only() {
    let (sim, _) = sim_with(SimConfig::default(), 1).await;
    sim.add_fault(FaultRule::once(Fault::status(500, "IAM.0001", "boom")).iam());
    let resp = login(&sim, DEMO_PASSWORD, serde_json::json!({"id": PID})).await;
    assert_eq!(resp.status(), 500);
    assert!(!resp.headers().contains_key("x-subject-token"));
    assert_eq!(get(&sim, &[]).await.0, 200, "ListBatches untouched");
    assert_eq!(
        login(&sim, DEMO_PASSWORD, serde_json::json!({"id": PID}))
            .await
            .status(),
        201
    );
    assert_eq!(sim.stats().tokens_issued, 1);
    sim.shutdown();
}

#[tokio::test]
async fn unknown_paths_methods_and_garbage() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (sim, _) = sim_with(SimConfig::default(), 1).await;
    let c = client();
    let resp = c
        .get(format!("{}/v2.0/{PID}/jobs", sim.base_url()))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 404);
    assert!(resp.headers().contains_key("x-request-id"));
    assert!(resp.json::<Value>().await.expect("json")["error_code"].is_string());
    let resp = c
        .delete(format!("{}/v2.0/{PID}/batches", sim.base_url()))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 405);
    let resp = c
        .get(format!("{}/v3/auth/tokens", sim.base_url()))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 405);
    let resp = c
        .post(format!("{}/v3/auth/tokens", sim.base_url()))
        .body("{not json")
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 400);

    let mut raw = tokio::net::TcpStream::connect(sim.addr())
        .await
        .expect("connects");
    raw.write_all(b"\x00\x01garbage\r\n\r\n")
        .await
        .expect("writes");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), raw.read_to_end(&mut buf)).await;
    assert!(
        buf.starts_with(b"HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
    assert_eq!(get(&sim, &[]).await.0, 200, "still serving");
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
