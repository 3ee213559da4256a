//! Keyless credentials over loopback against the simulator (docs/architecture.md, "Temporary
//! credentials"): metadata keys rotating during polling, with and without the session-token
//! step, through outages shorter than their lifetime; the OIDC exchange with the id token file
//! rewritten mid-run; what a failed fetch does when no keys are usable.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use dli_exporter::app::App;
use dli_exporter::config::{Credentials, PollConfig};
use dli_exporter::sim::{DEMO_IDP_ID, Outage, Service, SimConfig, Simulator};

const QUEUES: [&str; 2] = ["etl", "adhoc"];

/// Polls every 500 ms: short, with room for a loaded machine.
fn poll() -> PollConfig {
    PollConfig {
        interval: Duration::from_millis(500),
        timeout: Duration::from_millis(450),
        request_timeout: Duration::from_millis(400),
        ..fast_poll()
    }
}

async fn keyless_sim(config: SimConfig) -> Simulator {
    let s = sim(config).await;
    for q in QUEUES {
        s.set_jobs(PID, q, numbered_jobs(q, 120));
    }
    s
}

fn metadata(sim: &Simulator) -> Credentials {
    Credentials::Metadata {
        endpoint: sim.base_url(),
    }
}

fn oidc(sim: &Simulator, file: &Path) -> Credentials {
    Credentials::Oidc {
        iam_endpoint: sim.base_url(),
        idp_id: DEMO_IDP_ID.into(),
        id_token_file: file.to_path_buf(),
    }
}

fn success(queue: &str) -> String {
    format!("dli_poll_success{{project_id=\"{PID}\",queue=\"{queue}\"}}")
}

fn api(metric: &str, operation: &str) -> String {
    format!("{metric}{{operation=\"{operation}\"}}")
}

fn failures(text: &str, operation: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(&format!(
                "dli_api_request_failures_total{{operation=\"{operation}\""
            ))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Scrapes every 25 ms until `until` holds (at most `within`), failing at the first scrape where
/// a queue's last poll failed. Returns the last exposition.
async fn watch_without_failed_polls(
    app: &App,
    sim: &Simulator,
    within: Duration,
    until: impl Fn(&str, &Simulator) -> bool,
) -> String {
    let client = http();
    let deadline = Instant::now() + within;
    loop {
        let text = scrape(&client, app).await;
        for q in QUEUES {
            assert_ne!(
                value(&text, &success(q)),
                Some(0.0),
                "a poll of {q} failed; stats {:?}\n{text}",
                sim.stats()
            );
        }
        if until(&text, sim) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "not reached within {within:?}; stats {:?}\n{text}",
            sim.stats()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Every ListBatches request the simulator saw was answered 200.
fn assert_every_request_succeeded(sim: &Simulator) {
    let log = sim.request_log();
    assert!(!log.is_empty());
    for r in &log {
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.auth, "aksk", "{r:?}");
    }
    assert_eq!(sim.stats().auth_rejections, 0);
    assert_eq!(sim.stats().expired_key_rejections, 0);
}

/// Both queues polled successfully at least `n` times (ListBatches requests answered 200 per
/// queue, one request per poll here).
fn polled(sim: &Simulator, n: usize) -> bool {
    QUEUES.iter().all(|q| {
        sim.request_log()
            .iter()
            .filter(|r| r.queue.as_deref() == Some(q) && r.status == 200)
            .count()
            >= n
    })
}

#[tokio::test]
async fn metadata_keys_rotate_several_times_without_a_failed_poll() {
    // Keys live 2 s: refreshed half-way, so about every second.
    let sim = keyless_sim(SimConfig {
        temporary_key_lifetime: Duration::from_secs(2),
        metadata_requires_session_token: true,
        ..SimConfig::default()
    })
    .await;
    let app = start(&settings(
        vec![project(&sim, &QUEUES, metadata(&sim))],
        poll(),
    ))
    .await;
    watch_without_failed_polls(&app, &sim, Duration::from_secs(20), |_, sim| {
        sim.stats().temporary_keys_issued >= 5 && polled(sim, 8)
    })
    .await;
    assert_every_request_succeeded(&sim);
    let stats = sim.stats();
    // The session token (asked for 6 hours) is fetched once and reused for every refresh; the
    // simulator refuses keys requests without it, so every refresh went through it.
    assert_eq!(stats.metadata_token_requests, 1, "{stats:?}");
    assert_eq!(stats.metadata_key_requests, stats.temporary_keys_issued);
    let text = wait_for(
        &http(),
        &app,
        "the metadata requests",
        Duration::from_secs(3),
        |t| value(t, &api("dli_api_requests_total", "metadata")).unwrap_or(0.0) >= 6.0,
    )
    .await;
    assert_eq!(failures(&text, "metadata"), 0.0, "{text}");
    assert_eq!(failures(&text, "list_batches"), 0.0, "{text}");
    shutdown(app).await;
}

#[tokio::test]
async fn without_session_tokens_the_keys_are_fetched_directly() {
    let sim = keyless_sim(SimConfig {
        temporary_key_lifetime: Duration::from_secs(2),
        metadata_session_tokens: false,
        ..SimConfig::default()
    })
    .await;
    let app = start(&settings(
        vec![project(&sim, &QUEUES, metadata(&sim))],
        poll(),
    ))
    .await;
    let text = watch_without_failed_polls(&app, &sim, Duration::from_secs(20), |_, sim| {
        sim.stats().temporary_keys_issued >= 3 && polled(sim, 4)
    })
    .await;
    assert_every_request_succeeded(&sim);
    let stats = sim.stats();
    // Each fetch asks for a session token, gets 404 (no support) and goes on without.
    assert!(stats.metadata_token_requests >= 3, "{stats:?}");
    assert_eq!(stats.metadata_key_requests, stats.temporary_keys_issued);
    // A 404 to the token request is the documented fallback, not a failure.
    assert_eq!(failures(&text, "metadata"), 0.0, "{text}");
    shutdown(app).await;
}

#[tokio::test]
async fn an_expired_session_token_is_replaced_and_the_keys_request_retried_once() {
    let sim = keyless_sim(SimConfig {
        temporary_key_lifetime: Duration::from_secs(2),
        ..SimConfig::default()
    })
    .await;
    let app = start(&settings(
        vec![project(&sim, &QUEUES, metadata(&sim))],
        poll(),
    ))
    .await;
    watch_without_failed_polls(&app, &sim, Duration::from_secs(10), |_, sim| {
        sim.stats().temporary_keys_issued >= 1 && polled(sim, 1)
    })
    .await;
    sim.expire_metadata_sessions();
    let text = watch_without_failed_polls(&app, &sim, Duration::from_secs(10), |_, sim| {
        sim.stats().temporary_keys_issued >= 3
    })
    .await;
    assert_every_request_succeeded(&sim);
    assert_eq!(sim.stats().metadata_token_requests, 2, "{:?}", sim.stats());
    // The one 401 to the keys request with the expired session token.
    assert_eq!(
        value(
            &text,
            "dli_api_request_failures_total{operation=\"metadata\",reason=\"auth\"}"
        ),
        Some(1.0),
        "{text}"
    );
    shutdown(app).await;
}

/// A metadata outage of `outage` starting 1 s after the first keys (which live 8 s, due for
/// refresh at 4 s): polls go on with the current keys, the refresh is retried with backoff and
/// succeeds once the service is back, well before the keys expire.
async fn outage_shorter_than_the_lifetime(outage: Outage, reason: &str) {
    let sim = keyless_sim(SimConfig {
        temporary_key_lifetime: Duration::from_secs(8),
        ..SimConfig::default()
    })
    .await;
    let app = start(&settings(
        vec![project(&sim, &QUEUES, metadata(&sim))],
        poll(),
    ))
    .await;
    watch_without_failed_polls(&app, &sim, Duration::from_secs(10), |_, sim| {
        sim.stats().temporary_keys_issued == 1 && polled(sim, 1)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Down from about 1 s to about 5 s of the keys' life: the refresh due at 4 s fails.
    sim.outage(Service::Metadata, Duration::from_secs(4), outage);
    let text = watch_without_failed_polls(&app, &sim, Duration::from_secs(20), |text, sim| {
        sim.stats().temporary_keys_issued >= 2 && failures(text, "metadata") >= 1.0
    })
    .await;
    assert_every_request_succeeded(&sim);
    assert!(
        value(
            &text,
            &format!(
                "dli_api_request_failures_total{{operation=\"metadata\",reason=\"{reason}\"}}"
            )
        )
        .is_some_and(|v| v >= 1.0),
        "the failed refresh is counted as {reason}:\n{text}"
    );
    // Polls went on through the outage.
    assert!(polled(&sim, 12), "{:?}", sim.stats());
    shutdown(app).await;
}

#[tokio::test]
async fn a_metadata_outage_shorter_than_the_key_lifetime_fails_no_poll() {
    outage_shorter_than_the_lifetime(Outage::Reset, "connect").await;
}

#[tokio::test]
async fn a_hung_metadata_service_does_not_hold_up_polls() {
    // Each attempt waits out the 3 s read timeout in the background.
    outage_shorter_than_the_lifetime(Outage::Hang, "timeout").await;
}

#[tokio::test]
async fn without_usable_keys_polls_fail_with_the_metadata_error_and_fetches_back_off() {
    let sim = keyless_sim(SimConfig {
        agency: false,
        ..SimConfig::default()
    })
    .await;
    let app = start(&settings(
        vec![project(&sim, &QUEUES, metadata(&sim))],
        poll(),
    ))
    .await;
    let client = http();
    let text = wait_for(
        &client,
        &app,
        "failed polls",
        Duration::from_secs(10),
        |t| QUEUES.iter().all(|q| value(t, &success(q)) == Some(0.0)),
    )
    .await;
    assert!(
        value(
            &text,
            "dli_api_request_failures_total{operation=\"metadata\",reason=\"auth\"}"
        )
        .is_some_and(|v| v >= 1.0),
        "{text}"
    );
    assert_eq!(
        sim.stats().list_batches_requests,
        0,
        "nothing sent unsigned"
    );
    // Both queues failed on one fetch (single flight), and the backoff keeps the metadata
    // service from being asked at every poll.
    let asked = sim.stats().metadata_key_requests;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = sim.stats().metadata_key_requests;
    assert!(later - asked <= 2, "{asked} then {later}");
    shutdown(app).await;
}

#[tokio::test]
async fn oidc_exchange_follows_the_rewritten_token_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("token");
    let first = "eyJhbGciOiJSUzI1NiJ9.first-projected-token.c2ln";
    let second = "eyJhbGciOiJSUzI1NiJ9.second-projected-token.c2ln";
    std::fs::write(&file, format!("{first}\n")).expect("write token");
    let sim = keyless_sim(SimConfig {
        temporary_key_lifetime: Duration::from_secs(2),
        ..SimConfig::default()
    })
    .await;
    sim.accept_id_tokens(&[first]);
    let app = start(&settings(
        vec![project(&sim, &QUEUES, oidc(&sim, &file))],
        poll(),
    ))
    .await;
    watch_without_failed_polls(&app, &sim, Duration::from_secs(10), |_, sim| {
        sim.stats().temporary_keys_issued >= 2 && polled(sim, 2)
    })
    .await;
    // The kubelet rotates the token: the file changes, the old token stops being accepted.
    let tmp = dir.path().join("token.new");
    std::fs::write(&tmp, second).expect("write token");
    std::fs::rename(&tmp, &file).expect("replace token");
    sim.accept_id_tokens(&[second]);
    let issued = sim.stats().temporary_keys_issued;
    let text = watch_without_failed_polls(&app, &sim, Duration::from_secs(15), |_, sim| {
        sim.stats().temporary_keys_issued >= issued + 3
    })
    .await;
    assert_every_request_succeeded(&sim);
    // Two IAM requests per exchange, none failed: every exchange after the rewrite used the
    // new token. (The API counters in the exposition may lag up to a second.)
    assert_eq!(failures(&text, "oidc"), 0.0, "{text}");
    let text = wait_for(
        &http(),
        &app,
        "the oidc requests",
        Duration::from_secs(3),
        |t| value(t, &api("dli_api_requests_total", "oidc")).unwrap_or(0.0) >= 10.0,
    )
    .await;
    assert_eq!(failures(&text, "oidc"), 0.0, "{text}");
    assert_eq!(sim.stats().metadata_key_requests, 0);
    shutdown(app).await;
}

#[tokio::test]
async fn a_rejected_id_token_fails_polls_as_auth_without_showing_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("token");
    let token = "eyJhbGciOiJSUzI1NiJ9.not-accepted-token.c2ln";
    std::fs::write(&file, token).expect("write token");
    let sim = keyless_sim(SimConfig::default()).await;
    let settings = settings(vec![project(&sim, &QUEUES, oidc(&sim, &file))], poll());
    let report = dli_exporter::app::poll_once(&settings, None)
        .await
        .expect("runs");
    let outcomes = report.polls;
    let text = String::from_utf8(report.exposition).expect("utf8");
    assert!(
        value(
            &text,
            "dli_api_request_failures_total{operation=\"oidc\",reason=\"auth\"}"
        )
        .is_some_and(|v| v >= 1.0),
        "{text}"
    );
    for o in &outcomes {
        assert!(!o.success);
        let e = o.error.as_deref().expect("an error");
        assert!(e.contains("oidc") && e.contains("401"), "{e}");
        assert!(!e.contains("not-accepted-token"), "{e}");
    }
    assert_eq!(sim.stats().list_batches_requests, 0);
}

#[tokio::test]
async fn an_unreadable_or_oversized_token_file_fails_the_exchange_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("token");
    std::fs::write(&file, "x".repeat(100 * 1024)).expect("write token");
    let sim = keyless_sim(SimConfig::default()).await;
    let settings = settings(vec![project(&sim, &QUEUES, oidc(&sim, &file))], poll());
    let outcomes = dli_exporter::app::poll_once(&settings, None)
        .await
        .expect("runs")
        .polls;
    for o in &outcomes {
        let e = o.error.as_deref().expect("an error");
        assert!(e.contains("id_token_file") && e.contains("bytes"), "{e}");
    }
    // Removed after the start (the kubelet's volume gone): named, and nothing sent to IAM.
    std::fs::remove_file(&file).expect("remove");
    let outcomes = dli_exporter::app::poll_once(&settings, None)
        .await
        .expect("runs")
        .polls;
    for o in &outcomes {
        let e = o.error.as_deref().expect("an error");
        assert!(
            e.contains("id_token_file") && e.contains("cannot read"),
            "{e}"
        );
    }
    assert_eq!(sim.stats().oidc_requests, 0);
}

#[tokio::test]
async fn keys_revoked_before_their_expiry_are_replaced_on_the_first_rejection() {
    // Keys live 8 s: due for refresh at 4 s, replaceable after a rejection from 1.8 s.
    let sim = keyless_sim(SimConfig {
        temporary_key_lifetime: Duration::from_secs(8),
        ..SimConfig::default()
    })
    .await;
    let app = start(&settings(
        vec![project(&sim, &QUEUES, metadata(&sim))],
        poll(),
    ))
    .await;
    watch_without_failed_polls(&app, &sim, Duration::from_secs(10), |_, sim| {
        sim.stats().temporary_keys_issued == 1 && polled(sim, 1)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    sim.revoke_temporary_keys();
    let before = sim.request_log().len();
    watch_without_failed_polls(&app, &sim, Duration::from_secs(10), |_, sim| {
        let log = sim.request_log();
        // Both queues polled successfully after the revocation.
        QUEUES.iter().all(|q| {
            log[before..]
                .iter()
                .any(|r| r.queue.as_deref() == Some(q) && r.status == 200)
        })
    })
    .await;
    let stats = sim.stats();
    assert_eq!(stats.temporary_keys_issued, 2, "one replacement: {stats:?}");
    // The rejected requests (one per queue at most, both with the revoked keys) were retried at
    // once with the new keys, so no poll failed.
    let rejected = sim.request_log()[before..]
        .iter()
        .filter(|r| r.status == 401)
        .count();
    assert!((1..=2).contains(&rejected), "{rejected} rejections");
    shutdown(app).await;
}
