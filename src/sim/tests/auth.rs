//! Signature checks, IAM token issue, use and expiry.

use serde_json::Value;
use time::OffsetDateTime;

use super::*;

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

pub(super) async fn login(sim: &Simulator, password: &str, scope: Value) -> reqwest::Response {
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
    // Long enough that a loaded machine still uses the token before it expires.
    let lifetime = Duration::from_secs(1);
    let config = SimConfig {
        token_lifetime: lifetime,
        ..SimConfig::default()
    };
    let (sim, _) = sim_with(config, 1).await;
    let issued = tokio::time::Instant::now();
    let resp = login(&sim, DEMO_PASSWORD, serde_json::json!({"id": PID})).await;
    let token = resp.headers()["x-subject-token"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(with_token(&sim, PID, &token).await, 200);
    tokio::time::sleep_until(issued + lifetime + Duration::from_millis(100)).await;
    assert_eq!(with_token(&sim, PID, &token).await, 401);
    sim.shutdown();
}
