//! The page walker against the simulator over real loopback HTTP (issue: DLI client).
//! Every test asserts exact job counts and the requests the simulator saw.

mod common;

use std::time::{Duration, Instant};

use common::*;
use dli_exporter::dli::{ClientOptions, DliClient, FailureReason, NoopObserver, WalkError};
use dli_exporter::secret::Secret;
use dli_exporter::sim::{DEMO_ACCESS_KEY, Fault, FaultRule, SimConfig, TotalMode};

const Q: &str = "etl";

async fn sim_with(
    config: SimConfig,
    n: usize,
) -> (dli_exporter::sim::Simulator, Vec<dli_exporter::sim::SimJob>) {
    let sim = sim(config).await;
    let jobs = numbered_jobs("job", n);
    sim.set_jobs(PID, Q, jobs.clone());
    (sim, jobs)
}

fn list_requests(sim: &dli_exporter::sim::Simulator) -> Vec<dli_exporter::sim::LoggedRequest> {
    sim.request_log()
        .into_iter()
        .filter(|r| r.queue.as_deref() == Some(Q))
        .collect()
}

#[tokio::test]
async fn multi_page_queue_with_full_count_total() {
    let (sim, expected) = sim_with(SimConfig::default(), 250).await;
    let c = client(&project(&sim, &[Q], aksk()), Duration::from_secs(2), 4);
    let (stats, jobs) = walk(&c, Q, &walk_options(100, 4, 0)).await.expect("walk");
    assert_eq!(jobs.len(), 250);
    assert_exactly_once(&jobs, &expected);
    // Three pages of data, one look past the short last page (a short page ends the list only
    // if nothing follows it), and the closing check of the first page, which proves that the
    // list did not move while the pages were read: pages + 2.
    assert_eq!(stats.pages, 5);
    assert_eq!(stats.requests, 5);
    assert_eq!(stats.checks, 1);
    let log = list_requests(&sim);
    assert_eq!(
        log.len(),
        5,
        "one request per page, the look past the end, the closing check"
    );
    let mut froms: Vec<i64> = log.iter().map(|r| r.from).collect();
    froms.sort();
    assert_eq!(froms, vec![0, 0, 100, 200, 250]);
    assert!(
        log.iter()
            .all(|r| r.query.contains("order=CREATE_TIME_DESC")),
        "the walk asks for newest first"
    );
    assert!(
        log.iter()
            .all(|r| r.size == 100 && r.auth == "aksk" && r.status == 200)
    );
}

#[tokio::test]
async fn exact_multiple_of_the_page_size() {
    let (sim, expected) = sim_with(SimConfig::default(), 300).await;
    let c = client(&project(&sim, &[Q], aksk()), Duration::from_secs(2), 4);
    let (stats, jobs) = walk(&c, Q, &walk_options(100, 4, 0)).await.expect("walk");
    assert_eq!(jobs.len(), 300);
    assert_exactly_once(&jobs, &expected);
    // `total` could be constant and wrong, so the empty page after the last full one is
    // fetched; with the closing check that is the cost bound: pages of data + 2.
    assert_eq!(stats.pages, 5);
    assert_eq!(stats.requests, 5);
    assert_eq!(list_requests(&sim).len(), 5, "pages + 2");
}

#[tokio::test]
async fn a_full_last_page_past_a_changed_or_short_total_is_still_followed() {
    // total undercounts by 100 (a multiple of the page) on the first page only: the later
    // pages disagree, so the walk probes past the last full page and finds every job.
    let (sim, expected) = sim_with(SimConfig::default(), 300).await;
    sim.add_fault(FaultRule::once(Fault::WrongTotal(200)).queue(Q).from(0));
    let c = client(&project(&sim, &[Q], aksk()), Duration::from_secs(2), 4);
    let (_, jobs) = walk(&c, Q, &walk_options(100, 4, 0)).await.expect("walk");
    assert_eq!(jobs.len(), 300);
    assert_exactly_once(&jobs, &expected);
}

#[tokio::test]
async fn server_caps_size_below_the_requested_page_size() {
    let config = SimConfig {
        max_page_size: Some(30),
        ..SimConfig::default()
    };
    let (sim, expected) = sim_with(config, 250).await;
    let c = client(&project(&sim, &[Q], aksk()), Duration::from_secs(2), 4);
    let (stats, jobs) = walk(&c, Q, &walk_options(100, 4, 0)).await.expect("walk");
    assert_eq!(jobs.len(), 250);
    assert_exactly_once(&jobs, &expected);
    assert_eq!(
        stats.pages, 11,
        "offsets step by the 30 jobs really returned (9 pages), the look past the end, the closing check"
    );
    assert!(
        list_requests(&sim).iter().all(|r| r.size == 100),
        "size always asks for poll.page_size"
    );
}

#[tokio::test]
async fn total_meaning_the_page_length() {
    for (n, cap, pages) in [
        // The second request starts at the first page's last job: it links to the first page.
        // 250: 0, 100, 200 (50, the end), 250 (the look past the end), closing check.
        (250, None, 5),
        // 200: 0, 100, 200 (empty; no `total` counts the list, so 300 is looked at), closing.
        (200, None, 5),
        // Fewer jobs than asked for: the next request starts at the first page's last job.
        // 30 a page: 0, 29, 59, 89 (11, the end), 100 (empty), closing check.
        (100, Some(30), 6),
        // The page at 4 holds only the fifth job: it ends the list and links to the first
        // page, so nothing moved unseen and no closing check is needed; 5 is looked at.
        (5, None, 3),
        (0, None, 1),
    ] {
        let config = SimConfig {
            total_mode: TotalMode::PageLength,
            max_page_size: cap,
            ..SimConfig::default()
        };
        let (sim, expected) = sim_with(config, n).await;
        let c = client(&project(&sim, &[Q], aksk()), Duration::from_secs(2), 4);
        let (stats, jobs) = walk(&c, Q, &walk_options(100, 4, 0)).await.expect("walk");
        assert_eq!(jobs.len(), n, "{n} jobs, cap {cap:?}");
        assert_exactly_once(&jobs, &expected);
        assert_eq!(stats.pages, pages, "{n} jobs, cap {cap:?}");
    }
}

#[tokio::test]
async fn wrong_total_neither_loses_nor_invents_jobs() {
    for fixed in [150, 1000, 7] {
        let config = SimConfig {
            total_mode: TotalMode::Fixed(fixed),
            ..SimConfig::default()
        };
        let (sim, expected) = sim_with(config, 250).await;
        let c = client(&project(&sim, &[Q], aksk()), Duration::from_secs(2), 4);
        let (_, jobs) = walk(&c, Q, &walk_options(100, 4, 0)).await.expect("walk");
        assert_eq!(jobs.len(), 250, "total fixed at {fixed}");
        assert_exactly_once(&jobs, &expected);
    }
}

#[tokio::test]
async fn jobs_inserted_at_the_front_mid_walk_are_neither_lost_nor_double_counted() {
    for concurrency in [1, 4] {
        let (sim, expected) = sim_with(SimConfig::default(), 250).await;
        // Page 100 is answered last (page 200 overtakes it) and after 7 new jobs arrived.
        sim.add_fault(
            FaultRule::once(Fault::Latency(Duration::from_millis(200)))
                .queue(Q)
                .from(100),
        );
        sim.add_fault(FaultRule::once(Fault::InsertFront(7)).queue(Q).from(100));
        let c = client(
            &project(&sim, &[Q], aksk()),
            Duration::from_secs(2),
            concurrency,
        );
        let (stats, jobs) = walk(&c, Q, &walk_options(100, concurrency, 0))
            .await
            .expect("walk");
        assert_exactly_once(&jobs, &expected);
        let new = jobs.len() - 250;
        assert!(new <= 7, "at most the 7 inserted jobs on top: {new}");
        assert!(
            stats.duplicates > 0,
            "shifted pages repeat jobs, and those are skipped"
        );
    }
}

#[tokio::test]
async fn transient_500_and_429_are_retried() {
    let (sim, expected) = sim_with(SimConfig::default(), 250).await;
    sim.add_fault(
        FaultRule::times(2, Fault::status(500, "DLI.0999", "internal"))
            .queue(Q)
            .from(100),
    );
    sim.add_fault(
        FaultRule::once(Fault::Throttle {
            retry_after: Some(1),
        })
        .queue(Q)
        .from(200),
    );
    let c = client(&project(&sim, &[Q], aksk()), Duration::from_secs(2), 4);
    let started = Instant::now();
    let (stats, jobs) = walk(&c, Q, &walk_options(100, 4, 3))
        .await
        .expect("walk recovers");
    assert_exactly_once(&jobs, &expected);
    assert_eq!(jobs.len(), 250);
    assert_eq!(stats.pages, 5);
    assert_eq!(
        stats.requests, 8,
        "3 pages + the look past the end + the closing check + 2 retries after 500 + 1 after 429"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
    let statuses: Vec<u16> = list_requests(&sim).iter().map(|r| r.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 500).count(), 2);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 1);
}

#[tokio::test]
async fn persistent_failure_fails_the_whole_walk() {
    let (sim, _) = sim_with(SimConfig::default(), 250).await;
    sim.add_fault(
        FaultRule::always(Fault::status(503, "DLI.0999", "down"))
            .queue(Q)
            .from(200),
    );
    let c = client(&project(&sim, &[Q], aksk()), Duration::from_secs(2), 4);
    let mut handed = 0;
    let result = dli_exporter::dli::walk_queue(
        &c,
        Q,
        &walk_options(100, 4, 2),
        Instant::now() + Duration::from_secs(10),
        &mut |_| handed += 1,
    )
    .await;
    match result {
        Err(WalkError::Page { from, source, .. }) => {
            assert_eq!(from, 200);
            assert_eq!(source.reason(), FailureReason::Http5xx);
            assert_eq!(source.status(), Some(503));
            assert_eq!(source.error_code(), Some("DLI.0999"));
            assert!(source.to_string().contains("DLI.0999"), "{source}");
        }
        other => panic!("expected a page error, got {other:?}"),
    }
    let at_200 = list_requests(&sim).iter().filter(|r| r.from == 200).count();
    assert_eq!(at_200, 3, "first try + 2 retries");
}

#[tokio::test]
async fn errors_that_retrying_cannot_fix_are_not_retried() {
    for (fault, reason) in [
        (Fault::MalformedJson, FailureReason::Decode),
        (Fault::TruncatedJson, FailureReason::Decode),
        (
            Fault::status(400, "DLI.0001", "bad param"),
            FailureReason::Http4xx,
        ),
    ] {
        let (sim, _) = sim_with(SimConfig::default(), 50).await;
        sim.add_fault(FaultRule::always(fault.clone()).queue(Q));
        let c = client(&project(&sim, &[Q], aksk()), Duration::from_secs(2), 4);
        let err = walk(&c, Q, &walk_options(100, 4, 3))
            .await
            .expect_err("fails");
        assert_eq!(
            err.request_error().map(|e| e.reason()),
            Some(reason),
            "{fault:?}: {err}"
        );
        let log = list_requests(&sim);
        if reason == FailureReason::Http4xx {
            // A plain 4xx may be the server refusing `order`: asked once more without it.
            assert_eq!(
                log.len(),
                2,
                "{fault:?} is asked again only without `order`"
            );
            assert!(!log[1].query.contains("order="), "{:?}", log[1].query);
        } else {
            assert_eq!(log.len(), 1, "{fault:?} is not retried");
        }
    }
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let (sim, _) = sim_with(SimConfig::default(), 10).await;
    sim.add_fault(FaultRule::always(Fault::Oversized(2 * 1024 * 1024)).queue(Q));
    let p = project(&sim, &[Q], aksk());
    let mut options = ClientOptions::new(Duration::from_secs(2));
    options.max_body_bytes = 1024 * 1024;
    let c = DliClient::new(
        &p,
        &options,
        std::sync::Arc::new(tokio::sync::Semaphore::new(4)),
        std::sync::Arc::new(NoopObserver),
    )
    .expect("client");
    let err = walk(&c, Q, &walk_options(100, 4, 0))
        .await
        .expect_err("refused");
    assert_eq!(
        err.request_error().map(|e| e.reason()),
        Some(FailureReason::Decode)
    );
    assert!(err.to_string().contains("limit"), "{err}");
}

#[tokio::test]
async fn a_hung_connection_ends_in_a_timeout_not_a_stuck_walk() {
    let (sim, expected) = sim_with(SimConfig::default(), 150).await;
    sim.add_fault(FaultRule::once(Fault::Hang).queue(Q).from(100));
    let c = client(&project(&sim, &[Q], aksk()), Duration::from_millis(300), 4);
    let started = Instant::now();
    let err = walk(&c, Q, &walk_options(100, 4, 0))
        .await
        .expect_err("times out");
    assert_eq!(
        err.request_error().map(|e| e.reason()),
        Some(FailureReason::Timeout)
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // With a retry, the next attempt is answered and the walk completes.
    sim.add_fault(FaultRule::once(Fault::Hang).queue(Q).from(100));
    let (_, jobs) = walk(&c, Q, &walk_options(100, 4, 1))
        .await
        .expect("retried");
    assert_exactly_once(&jobs, &expected);
    sim.shutdown();
}

#[tokio::test]
async fn connection_reset_is_a_connect_failure_and_retried() {
    let (sim, expected) = sim_with(SimConfig::default(), 150).await;
    sim.add_fault(FaultRule::once(Fault::ResetConnection).queue(Q).from(100));
    let c = client(&project(&sim, &[Q], aksk()), Duration::from_secs(2), 4);
    let err = walk(&c, Q, &walk_options(100, 4, 0))
        .await
        .expect_err("reset");
    assert_eq!(
        err.request_error().map(|e| e.reason()),
        Some(FailureReason::Connect),
        "{err}"
    );
    sim.add_fault(FaultRule::once(Fault::ResetConnection).queue(Q).from(100));
    let (_, jobs) = walk(&c, Q, &walk_options(100, 4, 1))
        .await
        .expect("retried");
    assert_exactly_once(&jobs, &expected);
}

#[tokio::test]
async fn max_pages_is_enforced() {
    let (sim, _) = sim_with(SimConfig::default(), 250).await;
    let c = client(&project(&sim, &[Q], aksk()), Duration::from_secs(2), 4);
    let mut options = walk_options(10, 4, 0);
    options.max_pages = 5;
    let err = walk(&c, Q, &options).await.expect_err("too many pages");
    assert!(
        matches!(err, WalkError::TooManyPages { max_pages: 5, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("poll.max_pages"), "{err}");
    assert!(list_requests(&sim).len() <= 5);
}

#[tokio::test]
async fn a_wrong_secret_key_is_rejected_by_the_verifier() {
    let (sim, _) = sim_with(SimConfig::default(), 10).await;
    let creds = dli_exporter::config::Credentials::AkSk {
        access_key: Secret::new(DEMO_ACCESS_KEY),
        secret_key: Secret::new("not-the-secret"),
        security_token: None,
    };
    let c = client(&project(&sim, &[Q], creds), Duration::from_secs(2), 4);
    let err = walk(&c, Q, &walk_options(100, 4, 3))
        .await
        .expect_err("rejected");
    let source = err.request_error().expect("request error");
    assert_eq!(source.reason(), FailureReason::Auth);
    assert_eq!(source.status(), Some(401));
    assert_eq!(source.error_code(), Some("APIGW.0301"));
    assert!(!err.to_string().contains("not-the-secret"));
    assert_eq!(
        sim.stats().auth_rejections,
        1,
        "auth failures are not retried"
    );
}

#[tokio::test]
async fn token_expiry_causes_exactly_one_refresh() {
    let (sim, expected) = sim_with(SimConfig::default(), 250).await;
    let c = std::sync::Arc::new(client(
        &project(&sim, &[Q], token_auth(&sim)),
        Duration::from_secs(2),
        4,
    ));
    // Several walks at once share one login.
    let walks = (0..4).map(|_| {
        let c = c.clone();
        async move { walk(&c, Q, &walk_options(100, 4, 0)).await }
    });
    for r in futures_util::future::join_all(walks).await {
        assert_exactly_once(&r.expect("walk").1, &expected);
    }
    assert_eq!(sim.stats().tokens_issued, 1);
    assert_eq!(c.tokens_fetched(), 1);
    assert!(list_requests(&sim).iter().all(|r| r.auth == "token"));

    sim.expire_tokens();
    let (_, jobs) = walk(&c, Q, &walk_options(100, 4, 0))
        .await
        .expect("walk after expiry");
    assert_exactly_once(&jobs, &expected);
    assert_eq!(sim.stats().tokens_issued, 2, "one refresh after the 401");
    assert_eq!(c.tokens_fetched(), 2);
    assert_eq!(
        sim.stats().auth_rejections,
        1,
        "only the first request saw the expired token"
    );
}

#[tokio::test]
async fn tokens_are_refreshed_before_they_expire() {
    let config = SimConfig {
        token_lifetime: Duration::from_secs(2),
        ..SimConfig::default()
    };
    let (sim, _) = sim_with(config, 10).await;
    let c = client(
        &project(&sim, &[Q], token_auth(&sim)),
        Duration::from_secs(2),
        4,
    );
    walk(&c, Q, &walk_options(100, 4, 0)).await.expect("walk");
    // Lifetime 2 s, margin 10% = 200 ms: after 1.9 s the cached token is due for refresh.
    tokio::time::sleep(Duration::from_millis(1900)).await;
    walk(&c, Q, &walk_options(100, 4, 0)).await.expect("walk");
    assert_eq!(sim.stats().tokens_issued, 2);
    assert_eq!(
        sim.stats().auth_rejections,
        0,
        "refreshed before DLI had to reject it"
    );
}

#[tokio::test]
async fn a_wrong_password_is_an_auth_failure() {
    let (sim, _) = sim_with(SimConfig::default(), 10).await;
    let creds = dli_exporter::config::Credentials::Token {
        iam_endpoint: sim.base_url(),
        domain_name: dli_exporter::sim::DEMO_DOMAIN.into(),
        user_name: dli_exporter::sim::DEMO_USER.into(),
        password: Secret::new("wrong-password"),
    };
    let c = client(&project(&sim, &[Q], creds), Duration::from_secs(2), 4);
    let err = walk(&c, Q, &walk_options(100, 4, 2))
        .await
        .expect_err("rejected");
    let source = err.request_error().expect("request error");
    assert_eq!(source.reason(), FailureReason::Auth);
    assert_eq!(source.operation(), dli_exporter::dli::Operation::IamToken);
    assert!(!err.to_string().contains("wrong-password"));
    assert_eq!(
        list_requests(&sim).len(),
        0,
        "no ListBatches without a token"
    );
}

#[tokio::test]
async fn query_parameters_are_sent_as_signed() {
    let (sim, _) = sim_with(SimConfig::default(), 3).await;
    let c = client(&project(&sim, &[Q], aksk()), Duration::from_secs(2), 4);
    let q = dli_exporter::dli::ListBatchesQuery {
        queue_name: Some(Q.into()),
        job_name: Some("etl 日报+v2/x*".into()),
        job_id: Some("job-00001".into()),
        state: Some("running".into()),
        from: Some(0),
        size: Some(10),
        ..Default::default()
    };
    c.list_batches(&q)
        .await
        .expect("signature verified by the simulator");
    let log = list_requests(&sim);
    let query = &log.last().expect("logged").query;
    assert!(query.contains("job-id=job-00001"), "{query}");
    assert!(
        query.contains("job_name=etl%20%E6%97%A5%E6%8A%A5%2Bv2%2Fx%2A"),
        "{query}"
    );
    assert_eq!(sim.stats().auth_rejections, 0);
}
