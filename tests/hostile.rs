//! Hostile upstream data: whatever DLI (or something in its place) sends, the exporter must not
//! panic, must keep its memory bounded by the owner cap rather than by the job count, and must
//! refuse oversized bodies. Property tests (proptest, modest case counts) drive the ListBatches
//! decoder, the aggregation and the rendering with arbitrary JSON, wrong types in every field,
//! huge and negative numbers, long, control-character and binary-ish strings; deterministic tests
//! cover 100k owners through a real walk and the body size limit.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use dli_exporter::config::{JobNameFilter, Settings};
use dli_exporter::dli::model::decode_page;
use dli_exporter::dli::{BatchJob, ClientOptions, DliClient, FailureReason, NoopObserver};
use dli_exporter::poll::aggregate::{OTHER_OWNER, SnapshotBuilder};
use dli_exporter::poll::scheduler::{self, PollContext};
use dli_exporter::sim::{Fault, FaultRule, SimConfig, SimJob};
use dli_exporter::store::QueueSnapshot;
use dli_exporter::store::{QueueKey, SnapshotStore};
use proptest::prelude::*;
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

const JOB_FIELDS: [&str; 16] = [
    "id",
    "state",
    "owner",
    "name",
    "queue",
    "cluster_name",
    "sc_type",
    "kind",
    "proxyUser",
    "image",
    "create_time",
    "update_time",
    "duration",
    "log",
    "req_body",
    "appId",
];

/// Strings a hostile server might send: any Unicode, control characters, lone-surrogate-looking
/// escapes once serialized, very long ones.
fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => ".{0,24}",
        2 => "[\\x00-\\x1f\\x7f\"\\\\{}\\n\\r\\t=,]{0,16}",
        1 => (0usize..150_000).prop_map(|n| "\u{fffd}x".repeat(n / 2)),
        1 => Just(String::new()),
        1 => Just("Running".to_string()),
        1 => Just("__other__".to_string()),
    ]
}

fn hostile_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        Just(Value::from(i64::MIN)),
        Just(Value::from(u64::MAX)),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        Just(serde_json::json!(1e308)),
        Just(serde_json::json!(-1e308)),
        (-10_000i64..10_000).prop_map(Value::from),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        hostile_number(),
        hostile_string().prop_map(Value::String),
    ]
}

fn any_json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((field_name(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(JOB_FIELDS.to_vec()).prop_map(str::to_string),
        1 => prop::sample::select(vec!["total", "from", "sessions", "is_success", "message", "error_code"])
            .prop_map(str::to_string),
        1 => ".{0,8}",
    ]
}

/// A job object whose every field holds anything at all (or is missing).
fn hostile_job() -> impl Strategy<Value = Value> {
    prop::collection::vec(prop::option::of(any_json()), JOB_FIELDS.len()).prop_map(|values| {
        let mut m = Map::new();
        for (name, v) in JOB_FIELDS.iter().zip(values) {
            if let Some(v) = v {
                m.insert(name.to_string(), v);
            }
        }
        Value::Object(m)
    })
}

fn hostile_page() -> impl Strategy<Value = (Value, usize)> {
    (
        prop::collection::vec(hostile_job(), 0..12),
        prop::option::of(any_json()),
        prop::option::of(any_json()),
    )
        .prop_map(|(jobs, total, from)| {
            let n = jobs.len();
            let mut m = Map::new();
            m.insert("sessions".into(), Value::Array(jobs));
            if let Some(t) = total {
                m.insert("total".into(), t);
            }
            if let Some(f) = from {
                m.insert("from".into(), f);
            }
            (Value::Object(m), n)
        })
}

/// Aggregates and renders `jobs` like a poll would, and checks the invariants of the result.
fn aggregate_and_render(jobs: &[BatchJob], max_owners: usize) -> QueueSnapshot {
    // Every job name selected, so that hostile names and times reach the exposition too.
    let names_cap = max_owners.max(1);
    let filter = JobNameFilter::new(&[".*".to_string()], names_cap as u32)
        .expect("valid")
        .expect("on");
    let mut b = SnapshotBuilder::with_job_names(Arc::new(filter));
    for j in jobs {
        b.add(j);
    }
    let snap = b.finish(max_owners);
    let names = snap.job_names.as_ref().expect("job names on");
    assert!(names.names.len() <= names_cap);
    for runs in names.names.values() {
        for t in [runs.start, runs.last_success, runs.last_duration]
            .into_iter()
            .flatten()
        {
            assert!(t.is_finite(), "job name time {t}");
        }
    }
    assert_eq!(snap.jobs, jobs.len() as u64);
    assert_eq!(snap.by_state.values().sum::<u64>(), snap.jobs);
    assert_eq!(snap.by_state_owner.values().sum::<u64>(), snap.jobs);
    let owners: std::collections::BTreeSet<&str> = snap
        .by_state_owner
        .keys()
        .map(|(_, o)| o.as_str())
        .collect();
    assert!(
        owners.len() <= max_owners + 1,
        "{} owners with a cap of {max_owners}",
        owners.len()
    );
    for t in snap.oldest_active.values() {
        assert!(t.is_finite(), "oldest timestamp {t}");
    }

    let text = exposition_of("q", snap.clone());
    assert!(text.ends_with('\n'));
    for line in text.lines() {
        // Every sample line is `name{labels} value` with escaped label values: one line each.
        if !line.starts_with('#') && !line.is_empty() {
            assert!(
                line.starts_with("dli_") || line.starts_with("process_"),
                "{line}"
            );
        }
    }
    snap
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_json_value_decodes_or_errors_without_panicking(v in any_json()) {
        let body = serde_json::to_vec(&v).expect("serialize");
        if let Ok(page) = decode_page(&body) {
            aggregate_and_render(&page.sessions, 3);
        }
    }

    #[test]
    fn wrong_types_in_every_field_never_fail_the_page((page, n) in hostile_page(), cap in 0usize..5) {
        let body = serde_json::to_vec(&page).expect("serialize");
        let decoded = decode_page(&body);
        prop_assert!(decoded.is_ok(), "lenient decoding refused {}: {:?}", String::from_utf8_lossy(&body), decoded.err());
        let decoded = decoded.expect("checked");
        prop_assert_eq!(decoded.sessions.len(), n, "every job object is kept");
        aggregate_and_render(&decoded.sessions, cap);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode_page(&bytes);
        let mut with_prefix = b"{\"sessions\":[{\"owner\":\"".to_vec();
        with_prefix.extend_from_slice(&bytes);
        let _ = decode_page(&with_prefix);
    }

    #[test]
    fn the_owner_cap_bounds_the_snapshot(owners in 0usize..3000, cap in 0usize..60, per_owner in 1usize..3) {
        let jobs: Vec<BatchJob> = (0..owners * per_owner)
            .map(|i| BatchJob::new(&format!("j{i}"), ["running", "dead", "Weird"][i % 3], Some(&format!("o{}", i % owners.max(1))), Some(i as i64)))
            .collect();
        let snap = aggregate_and_render(&jobs, cap);
        let distinct: std::collections::BTreeSet<&str> = snap.by_state_owner.keys().map(|(_, o)| o.as_str()).collect();
        prop_assert!(distinct.len() <= cap + 1);
        if owners > cap {
            prop_assert!(distinct.contains(OTHER_OWNER));
        }
        // Entries grow with cap x states, never with the job count.
        prop_assert!(snap.by_state_owner.len() <= (cap + 1) * 3);
    }
}

#[test]
fn extreme_numbers_and_strings_in_one_page() {
    let long_owner = "o".repeat(1 << 20);
    let page = serde_json::json!({
        "total": u64::MAX,
        "from": -1,
        "sessions": [
            {"id": "a", "state": "RUNNING", "owner": long_owner, "create_time": 1e308},
            {"id": "b", "state": "running", "owner": "\u{0}\u{1b}[31m\n\"}", "create_time": i64::MIN},
            {"id": "c", "state": "starting", "owner": null, "create_time": -5},
            {"id": "d", "state": 42, "owner": ["x"], "create_time": "12"},
            {"id": {"nested": true}, "state": "", "owner": "", "create_time": u64::MAX},
            7, "x", null, [],
        ]
    });
    let body = serde_json::to_vec(&page).expect("serialize");
    let decoded = decode_page(&body).expect("lenient");
    assert_eq!(decoded.sessions.len(), 5, "non-object entries are skipped");
    assert_eq!(
        decoded.total, None,
        "u64::MAX does not fit an i64 and is ignored"
    );
    let snap = aggregate_and_render(&decoded.sessions, 2);
    assert_eq!(snap.by_state.get("running"), Some(&2), "{snap:?}");
    assert_eq!(
        snap.oldest_active.get("running"),
        Some(&(i64::MIN as f64 / 1000.0))
    );
    assert_eq!(snap.oldest_active.get("starting"), Some(&-0.005));
}

/// 100k distinct owners in one page set (five decoded pages of 20k jobs): the snapshot and
/// the exposition keep at most `max_owners_per_queue + 1` owners.
#[test]
fn a_hundred_thousand_owners_stay_within_the_owner_cap() {
    const N: usize = 100_000;
    let started = Instant::now();
    let mut b = SnapshotBuilder::new();
    for page in 0..5 {
        let sessions: Vec<Value> = (page * N / 5..(page + 1) * N / 5)
            .map(|i| {
                let state = ["running", "success", "dead"][i % 3];
                serde_json::json!({"id": format!("j{i:06}"), "state": state,
                    "owner": format!("owner-{i:06}"), "create_time": T0_MS - i as i64})
            })
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({"total": N, "sessions": sessions}))
            .expect("serialize");
        let decoded = decode_page(&body).expect("decode");
        for j in &decoded.sessions {
            b.add(j);
        }
    }
    let snap = b.finish(200);
    assert_eq!(snap.jobs, N as u64);
    let owners: std::collections::BTreeSet<&str> = snap
        .by_state_owner
        .keys()
        .map(|(_, o)| o.as_str())
        .collect();
    assert_eq!(owners.len(), 201, "200 owners and __other__");
    assert!(snap.by_state_owner.len() <= 201 * 3);
    assert_eq!(snap.by_state_owner.values().sum::<u64>(), N as u64);
    let text = exposition_of("big", snap);
    let by_owner_series = text
        .lines()
        .filter(|l| l.starts_with("dli_batch_jobs_by_owner{"))
        .count();
    println!(
        "100k owners: decode + aggregation + render {:?}, {} by-owner series, exposition {} bytes",
        started.elapsed(),
        by_owner_series,
        text.len()
    );
    assert!(by_owner_series <= 201 * 3);
    assert!(text.len() < 200_000, "exposition {} bytes", text.len());
}

/// The same through a real walk and poll (20k owners, to stay fast in debug builds).
#[tokio::test]
async fn many_owners_through_a_real_poll_stay_within_the_owner_cap() {
    const N: usize = 20_000;
    let sim = sim(SimConfig::default()).await;
    let jobs: Vec<SimJob> = (0..N)
        .map(|i| {
            SimJob::new(
                format!("j{i:06}"),
                ["running", "success", "dead"][i % 3],
                Some(&format!("owner-{i:06}")),
                T0_MS - i as i64,
            )
        })
        .collect();
    sim.set_jobs(PID, "big", jobs);
    let mut poll = fast_poll();
    poll.page_size = 5000;
    poll.timeout = Duration::from_secs(30);
    poll.request_timeout = Duration::from_secs(10);
    poll.interval = Duration::from_secs(60);
    let settings: Settings = settings(vec![project(&sim, &["big"], aksk())], poll);
    let client = client(&settings.projects[0], Duration::from_secs(10), 4);
    let key = QueueKey::new(PID, "big");
    let store = Arc::new(SnapshotStore::new([key.clone()]));
    let ctx = PollContext::new(store.clone(), &settings.poll, 50);
    let outcome = scheduler::poll_once(&client, &key, &ctx, None).await;
    assert!(outcome.success, "{:?}", outcome.error);
    assert_eq!(outcome.jobs, N as u64);
    let view = store.view();
    let snap = view[0].1.snapshot.clone().expect("snapshot");
    let owners: std::collections::BTreeSet<&str> = snap
        .by_state_owner
        .keys()
        .map(|(_, o)| o.as_str())
        .collect();
    assert_eq!(owners.len(), 51, "50 owners and __other__");
}

#[tokio::test]
async fn wrong_totals_neither_hang_nor_lose_jobs() {
    for total in [i64::MAX, -5, 0, 1] {
        let sim = sim(SimConfig::default()).await;
        sim.set_jobs(PID, "q", numbered_jobs("t", 230));
        sim.add_fault(FaultRule::always(Fault::WrongTotal(total)));
        let c = client(&project(&sim, &["q"], aksk()), Duration::from_secs(2), 4);
        let mut options = walk_options(100, 4, 0);
        options.max_pages = 50;
        let started = Instant::now();
        let (stats, jobs) = walk(&c, "q", &options)
            .await
            .unwrap_or_else(|e| panic!("total {total}: {e}"));
        assert_eq!(stats.jobs, 230, "total {total}");
        assert_exactly_once(&jobs, &sim.jobs(PID, "q"));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

fn small_limit_client(endpoint: String, limit: usize) -> DliClient {
    let sim_project = dli_exporter::config::Project {
        project_id: PID.into(),
        project_id_from_region: false,
        region: None,
        endpoint,
        iam_endpoint: None,
        queues: vec!["q".into()],
        discover: None,
        credentials: aksk(),
        ca_file: None,
        proxy: None,
    };
    let mut options = ClientOptions::new(Duration::from_secs(3));
    options.max_body_bytes = limit;
    DliClient::new(
        &sim_project,
        &options,
        Arc::new(Semaphore::new(4)),
        Arc::new(NoopObserver),
    )
    .expect("client")
}

#[tokio::test]
async fn an_oversized_body_is_refused_by_its_content_length() {
    let sim = sim(SimConfig::default()).await;
    sim.set_jobs(PID, "q", numbered_jobs("o", 10));
    sim.add_fault(FaultRule::always(Fault::Oversized(2 << 20)));
    let c = small_limit_client(sim.base_url(), 1 << 20);
    let err = walk(&c, "q", &walk_options(100, 4, 2))
        .await
        .expect_err("2 MiB body over a 1 MiB limit");
    let msg = err.to_string();
    println!("oversized (Content-Length): {msg}");
    assert!(msg.contains("exceeds the 1048576-byte limit"), "{msg}");
    assert!(msg.contains(&sim.base_url()), "names the URL: {msg}");
    let source = err.request_error().expect("request error");
    assert_eq!(source.reason(), FailureReason::Decode);
    assert_eq!(
        sim.stats().list_batches_requests,
        1,
        "a refused body is not retried"
    );
}

#[tokio::test]
async fn an_endless_chunked_body_is_cut_at_the_limit() {
    // A server that answers 200 with a chunked body that never ends.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
                while s.write_all(chunk.as_bytes()).await.is_ok() {
                    counter.fetch_add(64 * 1024, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    let c = small_limit_client(format!("http://{addr}"), 1 << 20);
    let started = Instant::now();
    let err = walk(&c, "q", &walk_options(100, 4, 0))
        .await
        .expect_err("endless body");
    let msg = err.to_string();
    println!(
        "endless chunked body: refused after {:?} ({} bytes written by the server): {msg}",
        started.elapsed(),
        sent.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert!(msg.contains("exceeds the 1048576-byte limit"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// `/metrics` as it renders once `snap` is queue `queue`'s last successful poll.
fn exposition_of(queue: &str, snap: QueueSnapshot) -> String {
    let key = QueueKey::new(PID, queue);
    let store = Arc::new(SnapshotStore::new([key.clone()]));
    store.record_success(&key, snap, Duration::from_millis(5), 1);
    let metrics = metrics_for(store, Duration::from_secs(300), Duration::from_secs(600));
    String::from_utf8(metrics.render()).expect("exposition is UTF-8")
}

#[tokio::test]
async fn a_body_that_arrives_in_many_small_pieces_is_read_whole() {
    // Pages sent as chunked bodies of 300-byte chunks, each written on its own after a pause:
    // the client receives every page in many pieces and must join them in order.
    const JOBS: usize = 250;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&pending[..end]).to_string();
                    pending.drain(..end + 4);
                    let param = |name: &str| {
                        head.split(['?', '&', ' '])
                            .find_map(|p| p.strip_prefix(name))
                            .and_then(|v| v.parse::<usize>().ok())
                    };
                    let from = param("from=").unwrap_or(0).min(JOBS);
                    let size = param("size=").unwrap_or(100);
                    let sessions: Vec<Value> = (from..JOBS.min(from.saturating_add(size)))
                        .map(|i| {
                            serde_json::json!({
                                "id": format!("{i:08x}-0000-4000-8000-000000000000"),
                                "state": "success",
                                "owner": "o",
                                "create_time": 1_800_000_000_000i64 - i as i64,
                                "req_body": "x".repeat(200),
                            })
                        })
                        .collect();
                    let body = serde_json::json!({
                        "is_success": true, "message": "", "from": from, "total": JOBS,
                        "sessions": sessions,
                    })
                    .to_string();
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                    if s.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    for piece in body.as_bytes().chunks(300) {
                        let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
                        chunk.extend_from_slice(piece);
                        chunk.extend_from_slice(b"\r\n");
                        if s.write_all(&chunk).await.is_err() || s.flush().await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_micros(200)).await;
                    }
                    if s.write_all(b"0\r\n\r\n").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let c = small_limit_client(format!("http://{addr}"), 1 << 20);
    let (stats, jobs) = walk(&c, "q", &walk_options(100, 2, 0))
        .await
        .expect("a page in pieces is still a page");
    assert_eq!(jobs.len(), JOBS, "{stats:?}");
    let mut ids: Vec<String> = jobs.iter().filter_map(|j| j.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), JOBS);
}
