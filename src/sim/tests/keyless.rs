//! The metadata service and the OIDC exchange: what they answer, and the signature check of the
//! temporary keys they hand out (accepted with their security token until they expire, refused
//! after, APIG-style).

use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

use super::*;

/// `expires_at` as the simulator writes it (`…T10:00:00.000000Z`, which is RFC 3339).
fn expiry(value: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(value, &Rfc3339).ok()
}

/// Temporary keys from `GET /openstack/latest/securitykey` (no session token).
async fn metadata_keys(sim: &Simulator) -> (String, String, String) {
    let resp = client()
        .get(format!("{}/openstack/latest/securitykey", sim.base_url()))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    let c = &body["credential"];
    let field = |k: &str| c[k].as_str().expect(k).to_string();
    assert!(expiry(&field("expires_at")).is_some(), "{body}");
    (field("access"), field("secret"), field("securitytoken"))
}

/// ListBatches signed with temporary keys; `token` is sent (and signed) when given.
async fn list_with(sim: &Simulator, ak: &str, sk: &str, token: Option<&str>) -> (u16, Value) {
    let path = format!("/v2.0/{PID}/batches");
    let signer = AkSkSigner::new(Secret::new(ak), Secret::new(sk), token.map(Secret::new));
    let headers = signer.sign(
        "GET",
        &sim.addr().to_string(),
        &path,
        "",
        PID,
        &aksk::sdk_date(OffsetDateTime::now_utc()),
    );
    let mut rb = client().get(format!("{}{path}", sim.base_url()));
    for (name, value) in headers {
        if name != "Host" {
            rb = rb.header(name, value);
        }
    }
    let resp = rb.send().await.expect("answered");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn temporary_keys_work_with_their_token_until_they_expire() {
    let (sim, _) = sim_with(
        SimConfig {
            temporary_key_lifetime: Duration::from_millis(1200),
            ..SimConfig::default()
        },
        3,
    )
    .await;
    let (ak, sk, token) = metadata_keys(&sim).await;
    let (status, body) = list_with(&sim, &ak, &sk, Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = list_with(&sim, &ak, &sk, None).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (401, Some("APIGW.0301"))
    );
    let (_, _, other_token) = metadata_keys(&sim).await;
    let (status, _) = list_with(&sim, &ak, &sk, Some(&other_token)).await;
    assert_eq!(status, 401, "another key pair's token");
    let (status, _) = list_with(&sim, &ak, "wrong-secret", Some(&token)).await;
    assert_eq!(status, 401);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (status, body) = list_with(&sim, &ak, &sk, Some(&token)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error_code"], "APIGW.0301");
    assert!(
        body["error_msg"]
            .as_str()
            .is_some_and(|m| m.contains("expired")),
        "{body}"
    );
    assert_eq!(sim.stats().expired_key_rejections, 1);
    assert_eq!(sim.stats().temporary_keys_issued, 2);
}

#[tokio::test]
async fn metadata_session_tokens_on_off_and_required() {
    let url = |sim: &Simulator, path: &str| format!("{}{path}", sim.base_url());
    let sim = Simulator::start(SimConfig {
        metadata_requires_session_token: true,
        ..SimConfig::default()
    })
    .await
    .expect("starts");
    let c = client();
    let keys = url(&sim, "/openstack/latest/securitykey");
    let token_url = url(&sim, "/meta-data/latest/api/token");
    assert_eq!(c.get(&keys).send().await.expect("answered").status(), 401);
    let bad_ttl = c.put(&token_url).send().await.expect("answered");
    assert_eq!(bad_ttl.status(), 400, "the TTL header is required");
    let resp = c
        .put(&token_url)
        .header("X-Metadata-Token-Ttl-Seconds", "21600")
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 200);
    let token = resp.text().await.expect("token");
    let ok = c
        .get(&keys)
        .header("X-Metadata-Token", &token)
        .send()
        .await
        .expect("answered");
    assert_eq!(ok.status(), 200);
    sim.expire_metadata_sessions();
    let expired = c
        .get(&keys)
        .header("X-Metadata-Token", &token)
        .send()
        .await
        .expect("answered");
    assert_eq!(expired.status(), 401);
    let get_token = c.get(&token_url).send().await.expect("answered");
    assert_eq!(get_token.status(), 405, "PUT only");

    let off = Simulator::start(SimConfig {
        metadata_session_tokens: false,
        agency: false,
        ..SimConfig::default()
    })
    .await
    .expect("starts");
    let resp = c
        .put(url(&off, "/meta-data/latest/api/token"))
        .header("X-Metadata-Token-Ttl-Seconds", "21600")
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 404);
    let resp = c
        .get(url(&off, "/openstack/latest/securitykey"))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 401);
    assert!(resp.text().await.expect("body").contains(NO_AGENCY_MESSAGE));
}

#[tokio::test]
async fn oidc_exchange_checks_the_idp_and_the_id_token() {
    let sim = Simulator::start(SimConfig {
        temporary_key_lifetime: Duration::from_secs(60),
        ..SimConfig::default()
    })
    .await
    .expect("starts");
    let c = client();
    let id_url = format!("{}/v3.0/OS-AUTH/id-token/tokens", sim.base_url());
    let keys_url = format!("{}/v3.0/OS-CREDENTIAL/securitytokens", sim.base_url());
    let exchange = |idp: &'static str, token: &'static str| {
        c.post(&id_url)
            .header("X-Idp-Id", idp)
            .json(&json!({"auth": {"id_token": {"id": token}}}))
            .send()
    };
    assert_eq!(
        exchange("other-idp", DEMO_ID_TOKEN)
            .await
            .expect("answered")
            .status(),
        404
    );
    assert_eq!(
        exchange(DEMO_IDP_ID, "forged")
            .await
            .expect("answered")
            .status(),
        401
    );
    let resp = exchange(DEMO_IDP_ID, DEMO_ID_TOKEN)
        .await
        .expect("answered");
    assert_eq!(resp.status(), 201);
    let unscoped = resp.headers()["x-subject-token"]
        .to_str()
        .expect("ascii")
        .to_string();
    let resp = c
        .post(&keys_url)
        .json(&json!({"auth": {"identity": {"methods": ["token"],
            "token": {"id": unscoped, "duration_seconds": 21600}}}}))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.expect("json");
    let expires = expiry(
        body["credential"]["expires_at"]
            .as_str()
            .expect("expires_at"),
    )
    .expect("parses");
    let lifetime = expires - OffsetDateTime::now_utc();
    assert!(
        lifetime <= time::Duration::seconds(60),
        "capped: {lifetime}"
    );
    let resp = c
        .post(&keys_url)
        .json(&json!({"auth": {"identity": {"methods": ["token"], "token": {"id": "MIIforged"}}}}))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 401);
    sim.accept_id_tokens(&["rotated"]);
    assert_eq!(
        exchange(DEMO_IDP_ID, DEMO_ID_TOKEN)
            .await
            .expect("answered")
            .status(),
        401,
        "the old token is no longer accepted"
    );
    assert_eq!(sim.stats().oidc_requests, 6);
}

#[tokio::test]
async fn outages_reset_hang_or_answer_with_a_status_and_end() {
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("starts");
    let c = client();
    let keys = format!("{}/openstack/latest/securitykey", sim.base_url());
    sim.outage(
        Service::Metadata,
        Duration::from_secs(60),
        Outage::Status(503),
    );
    assert_eq!(c.get(&keys).send().await.expect("answered").status(), 503);
    sim.outage(Service::Metadata, Duration::from_secs(60), Outage::Reset);
    assert!(c.get(&keys).send().await.is_err(), "reset");
    sim.outage(Service::Metadata, Duration::from_secs(60), Outage::Hang);
    let hung = tokio::time::timeout(Duration::from_millis(300), c.get(&keys).send()).await;
    assert!(hung.is_err(), "no answer");
    sim.outage(Service::Metadata, Duration::ZERO, Outage::Hang);
    assert_eq!(c.get(&keys).send().await.expect("answered").status(), 200);
    // An OIDC outage leaves the metadata service alone.
    sim.outage(Service::Oidc, Duration::from_secs(60), Outage::Status(500));
    assert_eq!(c.get(&keys).send().await.expect("answered").status(), 200);
}
