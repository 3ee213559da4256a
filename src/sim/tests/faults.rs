//! Every fault rule: error answers, broken bodies, latency, hangs and resets, IAM-only faults,
//! and what unknown paths and garbage get.

use serde_json::Value;
use time::OffsetDateTime;

use super::auth::login;
use super::*;

pub(super) async fn raw_get(
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
