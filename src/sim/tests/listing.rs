//! Per-queue list behaviour ([`QueueBehaviour`]) and the page faults: list order, `order`,
//! `state`, `start`/`end` and `job-id` honoured, ignored or rejected, a per-queue `size` cap,
//! every `total` mode, `from` ignored, short/empty and oversized pages at an offset, removals at
//! the oldest end mid-walk and latency at one offset.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

/// `n` jobs `j000`… stored newest first (`j000` newest), states cycling through the five.
fn numbered(n: usize) -> Vec<SimJob> {
    (0..n)
        .map(|i| {
            SimJob::new(
                format!("j{i:03}"),
                JOB_STATES[i % JOB_STATES.len()],
                Some("alice"),
                1_000_000 - i as i64 * 1000,
            )
        })
        .collect()
}

fn names(range: impl Iterator<Item = usize>) -> Vec<String> {
    range.map(|i| format!("j{i:03}")).collect()
}

async fn sim_of(n: usize, behaviour: QueueBehaviour) -> Simulator {
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("starts");
    sim.set_jobs(PID, "etl", numbered(n));
    sim.set_behaviour(PID, "etl", behaviour);
    sim
}

async fn page(sim: &Simulator, extra: &[(&str, &str)]) -> (u16, Value) {
    let mut pairs = vec![("queue_name", "etl")];
    pairs.extend_from_slice(extra);
    get(sim, &pairs).await
}

#[tokio::test]
async fn oldest_first_serves_the_stored_list_back_to_front() {
    let sim = sim_of(
        25,
        QueueBehaviour {
            list_order: ListOrder::OldestFirst,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(sim.behaviour(PID, "etl").list_order, ListOrder::OldestFirst);
    let (_, body) = page(&sim, &[("size", "10")]).await;
    assert_eq!(ids(&body), names((15..25).rev()));
    let (_, body) = page(&sim, &[("from", "20"), ("size", "10")]).await;
    assert_eq!(ids(&body), names((0..5).rev()));
    assert_eq!(body["total"], 25);
    // A filter takes the other path through the list: same order.
    let (_, body) = page(&sim, &[("state", "starting"), ("size", "2")]).await;
    assert_eq!(ids(&body), ["j020", "j015"]);
    // An honoured order param still sorts.
    let (_, body) = page(&sim, &[("order", "CREATE_TIME_DESC"), ("size", "3")]).await;
    assert_eq!(ids(&body), names(0..3));
    // New jobs land at the end of an oldest-first list.
    sim.insert_front(
        PID,
        "etl",
        vec![SimJob::new("new", "starting", None, 2_000_000)],
    );
    let (_, body) = page(&sim, &[("from", "25"), ("size", "10")]).await;
    assert_eq!(ids(&body), ["new"]);
    // Another queue keeps the default.
    sim.set_jobs(PID, "adhoc", numbered(3));
    let (_, body) = get(&sim, &[("queue_name", "adhoc")]).await;
    assert_eq!(ids(&body), names(0..3));
    sim.shutdown();
}

#[tokio::test]
async fn order_param_honoured_ignored_or_rejected() {
    let asc = [("order", "CREATE_TIME_ASC"), ("size", "3")];
    let sim = sim_of(10, QueueBehaviour::default()).await;
    assert_eq!(ids(&page(&sim, &asc).await.1), names((7..10).rev()));
    sim.set_behaviour(
        PID,
        "etl",
        QueueBehaviour {
            order_param: ParamHandling::Ignore,
            ..Default::default()
        },
    );
    assert_eq!(ids(&page(&sim, &asc).await.1), names(0..3));
    sim.set_behaviour(
        PID,
        "etl",
        QueueBehaviour {
            order_param: ParamHandling::Reject,
            ..Default::default()
        },
    );
    let (status, body) = page(&sim, &asc).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error_code"], "DLI.0001");
    assert!(
        body["error_msg"]
            .as_str()
            .is_some_and(|m| m.contains("order"))
    );
    // Without the parameter the queue answers as usual.
    assert_eq!(page(&sim, &[("size", "3")]).await.0, 200);
    sim.shutdown();
}

#[tokio::test]
async fn state_filter_honoured_ignored_or_rejected() {
    let running = [("state", "running"), ("size", "100")];
    let sim = sim_of(10, QueueBehaviour::default()).await;
    let (_, body) = page(&sim, &running).await;
    assert_eq!(ids(&body), ["j001", "j006"]);
    assert_eq!(body["total"], 2);
    sim.set_behaviour(
        PID,
        "etl",
        QueueBehaviour {
            state_filter: ParamHandling::Ignore,
            ..Default::default()
        },
    );
    let (_, body) = page(&sim, &running).await;
    assert_eq!(ids(&body), names(0..10));
    assert_eq!(body["total"], 10);
    sim.set_behaviour(
        PID,
        "etl",
        QueueBehaviour {
            state_filter: ParamHandling::Reject,
            ..Default::default()
        },
    );
    assert_eq!(page(&sim, &running).await.0, 400);
    sim.shutdown();
}

#[tokio::test]
async fn start_and_end_filter_on_create_time_or_not() {
    // j002..j004 were created at 998 000, 997 000 and 996 000 ms.
    let window = [("start", "996000"), ("end", "998000")];
    let sim = sim_of(10, QueueBehaviour::default()).await;
    assert_eq!(ids(&page(&sim, &window).await.1), names(2..5));
    assert_eq!(
        ids(&page(&sim, &[("start", "998500")]).await.1),
        names(0..2)
    );
    sim.set_behaviour(
        PID,
        "etl",
        QueueBehaviour {
            time_filter: ParamHandling::Ignore,
            ..Default::default()
        },
    );
    assert_eq!(ids(&page(&sim, &window).await.1), names(0..10));
    sim.set_behaviour(
        PID,
        "etl",
        QueueBehaviour {
            time_filter: ParamHandling::Reject,
            ..Default::default()
        },
    );
    assert_eq!(page(&sim, &[("end", "998000")]).await.0, 400);
    assert_eq!(page(&sim, &[("start", "1")]).await.0, 400);
    sim.shutdown();
}

#[tokio::test]
async fn job_id_filter_honoured_ignored_or_rejected() {
    let sim = sim_of(5, QueueBehaviour::default()).await;
    assert_eq!(ids(&page(&sim, &[("job-id", "j003")]).await.1), ["j003"]);
    sim.set_behaviour(
        PID,
        "etl",
        QueueBehaviour {
            job_id_filter: ParamHandling::Ignore,
            ..Default::default()
        },
    );
    assert_eq!(ids(&page(&sim, &[("job-id", "j003")]).await.1), names(0..5));
    sim.set_behaviour(
        PID,
        "etl",
        QueueBehaviour {
            job_id_filter: ParamHandling::Reject,
            ..Default::default()
        },
    );
    assert_eq!(page(&sim, &[("job-id", "j003")]).await.0, 400);
    sim.shutdown();
}

#[tokio::test]
async fn a_per_queue_size_cap_and_every_total_mode() {
    let sim = sim_of(
        50,
        QueueBehaviour {
            max_page_size: Some(20),
            ..Default::default()
        },
    )
    .await;
    let (_, body) = page(&sim, &[("size", "100")]).await;
    assert_eq!((ids(&body).len(), body["total"].as_i64()), (20, Some(50)));
    assert_eq!(
        ids(&page(&sim, &[("size", "5")]).await.1).len(),
        5,
        "below the cap"
    );
    for (mode, expected) in [
        (TotalMode::Full, Some(50)),
        (TotalMode::PageLength, Some(20)),
        (TotalMode::Fixed(7), Some(7)),
        (TotalMode::Absent, None),
    ] {
        sim.set_behaviour(
            PID,
            "etl",
            QueueBehaviour {
                max_page_size: Some(20),
                total_mode: Some(mode),
                ..Default::default()
            },
        );
        let (_, body) = page(&sim, &[("size", "100")]).await;
        assert_eq!(body["total"].as_i64(), expected, "{mode:?}: {body}");
        assert_eq!(
            body.get("total").is_some(),
            mode != TotalMode::Absent,
            "{mode:?}"
        );
    }
    sim.shutdown();
    // The smaller of the simulator-wide and the queue's cap wins.
    let sim = Simulator::start(SimConfig {
        max_page_size: Some(8),
        ..SimConfig::default()
    })
    .await
    .expect("starts");
    sim.set_jobs(PID, "etl", numbered(50));
    sim.set_behaviour(
        PID,
        "etl",
        QueueBehaviour {
            max_page_size: Some(20),
            ..Default::default()
        },
    );
    assert_eq!(ids(&page(&sim, &[("size", "100")]).await.1).len(), 8);
    sim.shutdown();
}

#[tokio::test]
async fn a_server_that_ignores_from_serves_page_zero_every_time() {
    let sim = sim_of(
        30,
        QueueBehaviour {
            ignore_from: true,
            ..Default::default()
        },
    )
    .await;
    for from in ["0", "10", "20"] {
        let (_, body) = page(&sim, &[("from", from), ("size", "10")]).await;
        assert_eq!(ids(&body), names(0..10), "from={from}");
        assert_eq!(body["from"].as_i64(), from.parse().ok(), "from is echoed");
    }
    sim.shutdown();
}

#[tokio::test]
async fn short_empty_and_oversized_pages_at_an_offset() {
    let sim = sim_of(30, QueueBehaviour::default()).await;
    sim.add_fault(FaultRule::always(Fault::ShortPage(0)).from(10));
    sim.add_fault(FaultRule::always(Fault::ShortPage(4)).from(20));
    let (_, body) = page(&sim, &[("from", "10"), ("size", "10")]).await;
    assert!(ids(&body).is_empty(), "an empty page in the middle");
    assert_eq!(body["total"], 30, "total as usual");
    let (_, body) = page(&sim, &[("from", "20"), ("size", "10")]).await;
    assert_eq!(ids(&body), names(20..24));
    let (_, body) = page(&sim, &[("from", "0"), ("size", "10")]).await;
    assert_eq!(ids(&body), names(0..10), "other offsets untouched");
    sim.clear_faults();

    sim.add_fault(FaultRule::once(Fault::ExtraJobs(3)).from(0));
    let (_, body) = page(&sim, &[("size", "10")]).await;
    assert_eq!(
        ids(&body),
        names(0..13),
        "three more than asked, from the list"
    );
    // Where the list ends, made-up jobs fill the page up.
    sim.add_fault(FaultRule::once(Fault::ExtraJobs(2)).from(25));
    let (_, body) = page(&sim, &[("from", "25"), ("size", "10")]).await;
    let got = ids(&body);
    assert_eq!(got.len(), 12, "{got:?}");
    assert_eq!(got[..5], names(25..30)[..]);
    assert!(
        got[5..].iter().all(|id| id.starts_with("extra-25-")),
        "{got:?}"
    );
    assert_eq!(sim.request_log().last().map(|r| r.sessions), Some(12));
    sim.shutdown();
}

#[tokio::test]
async fn removals_at_the_oldest_end_mid_walk() {
    let sim = sim_of(30, QueueBehaviour::default()).await;
    sim.add_fault(FaultRule::once(Fault::RemoveOldest(5)).from(10));
    let (_, body) = page(&sim, &[("from", "0"), ("size", "10")]).await;
    assert_eq!(body["total"], 30);
    let (_, body) = page(&sim, &[("from", "10"), ("size", "10")]).await;
    assert_eq!(body["total"], 25, "removed before the answer");
    assert_eq!(ids(&body), names(10..20));
    let (_, body) = page(&sim, &[("from", "20"), ("size", "10")]).await;
    assert_eq!(ids(&body), names(20..25));
    assert_eq!(sim.jobs(PID, "etl").len(), 25);

    // Oldest first: the oldest jobs are the front of the served list, so it shifts.
    let sim = sim_of(
        30,
        QueueBehaviour {
            list_order: ListOrder::OldestFirst,
            ..Default::default()
        },
    )
    .await;
    sim.add_fault(FaultRule::once(Fault::RemoveOldest(5)).from(10));
    let (_, body) = page(&sim, &[("from", "10"), ("size", "10")]).await;
    // Without the removal this page would be j019..j010: j019..j015 moved into page 0's range.
    assert_eq!(ids(&body), names((5..15).rev()), "five jobs shifted past");
    sim.shutdown();
}

#[tokio::test]
async fn latency_at_one_offset_only() {
    let sim = sim_of(30, QueueBehaviour::default()).await;
    sim.add_fault(FaultRule::always(Fault::Latency(Duration::from_millis(300))).from(10));
    let timed = |from: &'static str| {
        let sim = sim.clone();
        async move {
            let started = Instant::now();
            let (status, _) = page(&sim, &[("from", from), ("size", "10")]).await;
            assert_eq!(status, 200);
            started.elapsed()
        }
    };
    assert!(timed("10").await >= Duration::from_millis(300));
    assert!(timed("20").await < Duration::from_millis(300));
    sim.shutdown();
}
