//! `--probe` (docs/architecture.md, "--probe"): the real binary against the simulator, each queue
//! served like a different server (`total` as full count, page length or a wrong constant; a
//! `size` cap below and above `poll.page_size`; newest- or oldest-first lists; `order`, `state`
//! and `start`/`end` honoured, ignored or rejected; too few jobs to tell; a queue larger than the
//! request budget; `from` ignored; empty and short pages mid-list), asserting each queue's `probe …` line, at most 50 ListBatches requests per
//! queue, and the exit code (1 when a probe cannot complete).

mod common;

use std::collections::BTreeMap;
use std::process::ExitStatus;
use std::time::Duration;

use common::child::{self, ChildGuard};
use common::*;
use dli_exporter::sim::{
    DEMO_ACCESS_KEY, DEMO_SECRET_KEY, Fault, FaultRule, ListOrder, ParamHandling, QueueBehaviour,
    SimConfig, SimQueue, Simulator, TotalMode,
};

/// A config for `sim` with `page_size = 20` and these queues (or `"*"`).
fn config(sim: &Simulator, queues: &[&str], secret_key: &str) -> String {
    let queues: Vec<String> = queues.iter().map(|q| format!("{q:?}")).collect();
    format!(
        "[poll]\npage_size = 20\nrequest_timeout = \"2s\"\nretries = 0\n\n\
         [auth]\naccess_key = \"{DEMO_ACCESS_KEY}\"\nsecret_key = \"{secret_key}\"\n\n\
         [[projects]]\nproject_id = \"{PID}\"\nendpoint = \"{}\"\nqueues = [{}]\n",
        sim.base_url(),
        queues.join(", ")
    )
}

async fn run_probe(config: &str) -> (ExitStatus, ChildGuard) {
    let mut child = child::spawn_in_tempdir(
        &["--probe", "--config.file", "c.toml"],
        &[("c.toml", config)],
        &[],
    );
    let status = child.wait_exit(Duration::from_secs(60)).await;
    (status, child)
}

/// Each queue's `probe` line as key -> value, by queue name; every line must have exactly the
/// contract's keys in the contract's order.
fn probe_lines(stdout: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    const KEYS: [&str; 11] = [
        "project_id",
        "queue",
        "jobs",
        "total",
        "size_cap",
        "default_order",
        "order_param",
        "state_filter",
        "time_filter",
        "p50_ms",
        "p99_ms",
    ];
    let mut out = BTreeMap::new();
    for line in stdout.lines().filter(|l| l.starts_with("probe ")) {
        let pairs: Vec<(String, String)> = line["probe ".len()..]
            .split(' ')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("{line}"));
                (k.to_string(), v.to_string())
            })
            .collect();
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, KEYS, "{line}");
        let map: BTreeMap<String, String> = pairs.into_iter().collect();
        let queue = map["queue"].clone();
        assert!(
            out.insert(queue, map).is_none(),
            "one line per queue: {stdout}"
        );
    }
    out
}

/// ListBatches requests per queue, from the simulator's log.
fn requests_per_queue(sim: &Simulator) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in sim.request_log() {
        *out.entry(r.queue.unwrap_or_default()).or_insert(0) += 1;
    }
    out
}

fn assert_line(
    lines: &BTreeMap<String, BTreeMap<String, String>>,
    queue: &str,
    want: &[(&str, &str)],
) {
    let line = lines
        .get(queue)
        .unwrap_or_else(|| panic!("no probe line for {queue}: {lines:?}"));
    for (k, v) in want {
        assert_eq!(line[*k], *v, "{queue}: {k} in {line:?}");
    }
    assert_eq!(line["project_id"], PID);
    for k in ["p50_ms", "p99_ms"] {
        assert!(line[k].parse::<u64>().is_ok(), "{queue}: {k} in {line:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_tells_each_simulated_server_apart() {
    let sim = sim(SimConfig::default()).await;
    let queue = |name: &str, n: usize, behaviour: QueueBehaviour| {
        sim.set_jobs(PID, name, numbered_jobs(name, n));
        sim.set_behaviour(PID, name, behaviour);
    };
    // Livy-like: total is the count, no cap, newest first, every parameter honoured.
    queue("plain", 70, QueueBehaviour::default());
    // total is the page length, size capped below page_size, oldest first, parameters ignored.
    queue(
        "legacy",
        70,
        QueueBehaviour {
            list_order: ListOrder::OldestFirst,
            order_param: ParamHandling::Ignore,
            state_filter: ParamHandling::Ignore,
            time_filter: ParamHandling::Ignore,
            max_page_size: Some(15),
            total_mode: Some(TotalMode::PageLength),
            ..Default::default()
        },
    );
    // Every optional parameter refused with a 400.
    queue(
        "strict",
        30,
        QueueBehaviour {
            order_param: ParamHandling::Reject,
            state_filter: ParamHandling::Reject,
            time_filter: ParamHandling::Reject,
            ..Default::default()
        },
    );
    // A cap above page_size shows only when asked for more.
    queue(
        "bigcap",
        120,
        QueueBehaviour {
            max_page_size: Some(50),
            ..Default::default()
        },
    );
    // total constant and wrong.
    queue(
        "fixed",
        70,
        QueueBehaviour {
            total_mode: Some(TotalMode::Fixed(7)),
            ..Default::default()
        },
    );
    // One job: almost nothing can be told.
    queue("tiny", 1, QueueBehaviour::default());
    // More pages than the request budget.
    queue("huge", 3000, QueueBehaviour::default());
    // Page 0 served whatever `from` asks.
    queue(
        "nofrom",
        50,
        QueueBehaviour {
            ignore_from: true,
            ..Default::default()
        },
    );
    // An empty page at from=20 and a short one at from=40, with jobs after both.
    queue("gappy", 100, QueueBehaviour::default());
    sim.add_fault(
        FaultRule::always(Fault::ShortPage(0))
            .queue("gappy")
            .from(20),
    );
    sim.add_fault(
        FaultRule::always(Fault::ShortPage(5))
            .queue("gappy")
            .from(40),
    );
    let queues = [
        "plain", "legacy", "strict", "bigcap", "fixed", "tiny", "huge", "nofrom", "gappy",
    ];

    let (status, child) = run_probe(&config(&sim, &queues, DEMO_SECRET_KEY)).await;
    let out = child.stdout();
    assert!(status.success(), "{status}\n{}", child.outputs());
    let lines = probe_lines(&out);
    assert_eq!(lines.len(), queues.len(), "{out}");
    assert_line(
        &lines,
        "plain",
        &[
            ("jobs", "70"),
            ("total", "full"),
            ("size_cap", "none"),
            ("default_order", "create_time_desc"),
            ("order_param", "honoured"),
            ("state_filter", "honoured"),
            ("time_filter", "create_time"),
        ],
    );
    assert_line(
        &lines,
        "legacy",
        &[
            ("jobs", "70"),
            ("total", "page"),
            ("size_cap", "15"),
            ("default_order", "create_time_asc"),
            ("order_param", "ignored"),
            ("state_filter", "ignored"),
            ("time_filter", "ignored"),
        ],
    );
    assert_line(
        &lines,
        "strict",
        &[
            ("jobs", "30"),
            ("total", "full"),
            ("size_cap", "none"),
            ("order_param", "rejected"),
            ("state_filter", "rejected"),
            ("time_filter", "rejected"),
        ],
    );
    assert_line(&lines, "bigcap", &[("jobs", "120"), ("size_cap", "50")]);
    assert_line(
        &lines,
        "fixed",
        &[("total", "unknown"), ("order_param", "honoured")],
    );
    assert_line(
        &lines,
        "tiny",
        &[
            ("jobs", "1"),
            ("size_cap", "unknown"),
            ("default_order", "unknown"),
            ("order_param", "unknown"),
            ("state_filter", "unknown"),
            ("time_filter", "unknown"),
        ],
    );
    assert_line(
        &lines,
        "huge",
        &[
            ("total", "full"),
            ("size_cap", "none"),
            ("default_order", "create_time_desc"),
            ("order_param", "honoured"),
            ("state_filter", "honoured"),
            ("time_filter", "create_time"),
        ],
    );
    assert_line(
        &lines,
        "nofrom",
        &[("total", "full"), ("default_order", "create_time_desc")],
    );
    // The gaps cost jobs 20..40 and 45..60 of the plain walk; a short page is no cap.
    assert_line(&lines, "gappy", &[("size_cap", "none"), ("total", "full")]);
    let gappy_jobs: usize = lines["gappy"]["jobs"].parse().expect("a number");
    assert!((65..=100).contains(&gappy_jobs), "{gappy_jobs}");
    let section = |queue: &str| {
        let start = out
            .find(&format!("queue {queue}: probe"))
            .unwrap_or_else(|| panic!("no report for {queue}: {out}"));
        let end = out[start..]
            .find("\nprobe ")
            .map_or(out.len(), |e| start + e);
        out[start..end].to_string()
    };
    assert!(
        section("nofrom").contains("seems to ignore `from`"),
        "{out}"
    );
    let gappy = section("gappy");
    assert!(
        gappy.contains("an empty page at from=20 was followed by"),
        "{gappy}"
    );
    assert!(
        gappy.contains("a short page was followed by more jobs at from=45"),
        "{gappy}"
    );
    let huge_jobs: usize = lines["huge"]["jobs"].parse().expect("a number");
    assert!(
        (800..3000).contains(&huge_jobs),
        "jobs seen within the budget: {huge_jobs}"
    );

    // The budget, per queue; the readable text says why things are unknown.
    let requests = requests_per_queue(&sim);
    for q in queues {
        let n = requests.get(q).copied().unwrap_or(0);
        assert!((1..=50).contains(&n), "{q}: {n} requests");
    }
    assert_eq!(
        requests["huge"], 50,
        "the large queue spends the whole budget"
    );
    assert!(out.contains("probe completed"), "{out}");
    assert!(out.contains("not to its end"), "{out}");
    assert!(out.contains("fewer jobs (1) than a page of 20"), "{out}");
    assert!(
        out.contains("neither its length nor the job count"),
        "{out}"
    );
    assert!(!out.contains(DEMO_SECRET_KEY) && !child.stderr().contains(DEMO_SECRET_KEY));
    // Only read-only ListBatches requests; logs stay on stderr.
    assert!(sim.request_log().iter().all(|r| r.auth == "aksk"));
    assert!(!out.contains("level="), "{out}");
    sim.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_signature_fails_the_probe_with_exit_1() {
    let sim = sim(SimConfig::default()).await;
    sim.set_jobs(PID, "etl", numbered_jobs("e", 30));
    let wrong = "wrong-secret-key-0000000000000000000000";
    let (status, child) = run_probe(&config(&sim, &["etl"], wrong)).await;
    assert_eq!(status.code(), Some(1), "{}", child.outputs());
    let out = child.stdout();
    assert!(out.contains("probe DID NOT complete"), "{out}");
    assert!(out.contains("HTTP 401"), "{out}");
    assert!(
        child.stderr().contains("queue etl did not complete"),
        "{}",
        child.outputs()
    );
    let lines = probe_lines(&out);
    assert_eq!(lines["etl"]["total"], "unknown");
    assert_eq!(lines["etl"]["jobs"], "0");
    assert!(sim.request_log().len() <= 50);
    for text in [out, child.stderr()] {
        assert!(!text.contains(wrong), "{text}");
    }
    sim.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_queues_are_probed_and_the_list_does_not_count() {
    let sim = sim(SimConfig::default()).await;
    sim.set_queue_list(
        PID,
        vec![
            SimQueue::new("etl", "general"),
            SimQueue::new("adhoc", "all"),
            SimQueue::new("bi", "sql"),
        ],
    );
    sim.set_jobs(PID, "etl", numbered_jobs("e", 45));
    sim.set_jobs(PID, "adhoc", numbered_jobs("a", 5));
    let (status, child) = run_probe(&config(&sim, &["*"], DEMO_SECRET_KEY)).await;
    assert!(status.success(), "{}", child.outputs());
    let lines = probe_lines(&child.stdout());
    assert_eq!(
        lines.keys().map(String::as_str).collect::<Vec<_>>(),
        ["adhoc", "etl"],
        "general and all queues, not sql"
    );
    assert_line(&lines, "etl", &[("jobs", "45"), ("total", "full")]);
    assert_line(&lines, "adhoc", &[("jobs", "5")]);
    assert!(sim.stats().list_queues_requests >= 1);
    let requests = requests_per_queue(&sim);
    assert!(requests.values().all(|n| *n <= 50), "{requests:?}");

    // A queue list that fails: exit 1, nothing discovered to probe.
    sim.add_fault(FaultRule::always(Fault::status(500, "DLI.0999", "down")).queue_list());
    let (status, child) = run_probe(&config(&sim, &["*"], DEMO_SECRET_KEY)).await;
    assert_eq!(status.code(), Some(1), "{}", child.outputs());
    assert!(child.stdout().contains("queue list"), "{}", child.outputs());
    sim.shutdown();
}
