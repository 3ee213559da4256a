//! The simulated queue list and IAM project list over loopback: the `sql` default of
//! `queue_type`, type filtering, authentication, and the project list by name.

use serde_json::Value;
use time::OffsetDateTime;

use super::*;

/// A signed GET of `path` with `pairs`; `project_id` adds `X-Project-Id` as the client does.
async fn signed_get(
    sim: &Simulator,
    path: &str,
    pairs: &[(&str, &str)],
    project_id: Option<&str>,
) -> (u16, Value) {
    let query = aksk::canonical_query(pairs);
    let signer = AkSkSigner::new(
        Secret::new(DEMO_ACCESS_KEY),
        Secret::new(DEMO_SECRET_KEY),
        None,
    );
    let headers = signer.sign_for(
        "GET",
        &sim.addr().to_string(),
        path,
        &query,
        project_id,
        &aksk::sdk_date(OffsetDateTime::now_utc()),
    );
    let url = if query.is_empty() {
        format!("{}{path}", sim.base_url())
    } else {
        format!("{}{path}?{query}", sim.base_url())
    };
    let mut rb = client().get(url);
    for (name, value) in headers {
        if name != "Host" {
            rb = rb.header(name, value);
        }
    }
    let resp = rb.send().await.expect("answered");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn names(body: &Value) -> Vec<String> {
    body["queues"]
        .as_array()
        .map(|qs| {
            qs.iter()
                .filter_map(|q| q["queue_name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn queue_type_defaults_to_sql_like_the_real_api() {
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("starts");
    sim.set_queue_list(
        PID,
        vec![
            SimQueue::new("etl", "general"),
            SimQueue::new("adhoc", "all"),
            SimQueue::new("default", "sql"),
        ],
    );
    let path = format!("/v1.0/{PID}/queues");
    let (status, body) = signed_get(&sim, &path, &[], Some(PID)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["is_success"], Value::Bool(true));
    assert_eq!(body["message"], Value::String(String::new()));
    assert_eq!(names(&body), vec!["default"]);
    let (_, body) = signed_get(&sim, &path, &[("queue_type", "all")], Some(PID)).await;
    assert_eq!(names(&body), vec!["etl", "adhoc", "default"]);
    let (_, body) = signed_get(&sim, &path, &[("queue_type", "general")], Some(PID)).await;
    assert_eq!(names(&body), vec!["etl"]);
    let (status, body) = signed_get(&sim, &path, &[("queue_type", "spark")], Some(PID)).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (400, Some("DLI.0001"))
    );
    // Unsigned: refused like ListBatches.
    let resp = client()
        .get(format!("{}{path}?queue_type=all", sim.base_url()))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status().as_u16(), 401);
    assert!(sim.remove_queue(PID, "etl"));
    assert!(!sim.remove_queue(PID, "etl"));
    assert!(sim.set_queue_field(PID, "adhoc", "cu_count", serde_json::json!("x")));
    let (_, body) = signed_get(&sim, &path, &[("queue_type", "all")], Some(PID)).await;
    assert_eq!(body["queues"][0]["cu_count"], Value::String("x".into()));
    assert_eq!(sim.stats().list_queues_requests, 6);
    assert_eq!(
        sim.queue_list_queries().first().map(String::as_str),
        Some("")
    );
    sim.shutdown();
}

#[tokio::test]
async fn the_project_list_answers_by_name_and_needs_a_signature() {
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("starts");
    sim.add_iam_project("cn-north-4", "ffff");
    sim.map_project_name("eu-west-101", "eeee");
    let ids = |body: &Value| -> Vec<String> {
        body["projects"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| p["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (status, body) = signed_get(&sim, "/v3/projects", &[("name", "cn-north-4")], None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), vec![PID, "ffff"]);
    let (_, body) = signed_get(&sim, "/v3/projects", &[("name", "eu-west-101")], None).await;
    assert_eq!(ids(&body), vec!["eeee"]);
    let (_, body) = signed_get(&sim, "/v3/projects", &[("name", "nowhere")], None).await;
    assert!(ids(&body).is_empty());
    let resp = client()
        .get(format!("{}/v3/projects?name=cn-north-4", sim.base_url()))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status().as_u16(), 401);
    sim.add_fault(FaultRule::once(Fault::status(500, "IAM.0001", "down")).project_list());
    let (status, _) = signed_get(&sim, "/v3/projects", &[], None).await;
    assert_eq!(status, 500);
    assert_eq!(sim.stats().list_projects_requests, 5);
    sim.shutdown();
}
