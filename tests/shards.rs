//! Shards with the real binary over loopback (docs/architecture.md, "Shards"): three exporters
//! over one config poll disjoint sets of queues whose union is every queue, the same sets after a
//! restart; `--shard auto` from the host name; a shard with no queue; bad flag values rejected
//! naming the flag.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::child::{self, ChildGuard};
use common::*;
use dli_exporter::poll::shard::Shard;
use dli_exporter::sim::{DEMO_ACCESS_KEY, DEMO_SECRET_KEY, SimConfig, SimQueue, Simulator};

const QUEUE_COUNT: usize = 24;

fn queue_names() -> Vec<String> {
    (0..QUEUE_COUNT).map(|i| format!("queue_{i:02}")).collect()
}

async fn shard_sim(queues: &[String]) -> Simulator {
    let s = sim(SimConfig::default()).await;
    for q in queues {
        s.set_jobs(PID, q, numbered_jobs(q, 3));
    }
    s
}

fn config(sim: &Simulator, queues: &[String]) -> String {
    let list = queues
        .iter()
        .map(|q| format!("{q:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"[poll]
interval = "500ms"
timeout = "400ms"
request_timeout = "300ms"

[auth]
access_key = "{DEMO_ACCESS_KEY}"
secret_key = "{DEMO_SECRET_KEY}"

[[projects]]
project_id = "{PID}"
endpoint = "{}"
queues = [{list}]
"#,
        sim.base_url()
    )
}

/// An exporter started in `dir` with `args` after the config and listen flags.
fn exporter(dir: &Path, name: &str, args: &[&str]) -> (ChildGuard, String) {
    let listen = child::free_listen_address();
    let mut all = vec![
        "--config.file",
        "config.toml",
        "--web.listen-address",
        &listen,
        "--log.level",
        "debug",
    ];
    all.extend_from_slice(args);
    let child = child::spawn(dir, name, &all, &[]);
    (child, format!("http://{listen}/metrics"))
}

/// The queues with poll metrics in an exposition, once every one of them polled successfully.
fn polled_queues(text: &str) -> BTreeSet<String> {
    let prefix = format!("dli_poll_success{{project_id=\"{PID}\",queue=\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| rest.split_once("\"} "))
        .map(|(q, _)| q.to_string())
        .collect()
}

/// Waits until the exporter is ready (every assigned queue polled once) and returns its queues,
/// checking that each of them was polled successfully and that the shard gauges say `shard`.
async fn queues_of(child: &mut ChildGuard, url: &str, shard: Shard) -> BTreeSet<String> {
    let ready = url.replace("/metrics", "/-/ready");
    child
        .scrape_until(&ready, "ready", Duration::from_secs(15), |_| true)
        .await;
    let text = child
        .scrape_until(url, "every poll successful", Duration::from_secs(10), |t| {
            t.lines()
                .filter(|l| l.starts_with("dli_poll_success{"))
                .all(|l| l.ends_with(" 1"))
        })
        .await;
    for line in text.lines().filter(|l| l.starts_with("dli_poll_success{")) {
        assert!(line.ends_with(" 1"), "{line}\n{}", child.outputs());
    }
    assert_eq!(
        value(&text, "dli_exporter_shard_ordinal"),
        Some(f64::from(shard.ordinal())),
        "{text}"
    );
    assert_eq!(
        value(&text, "dli_exporter_total_shards"),
        Some(f64::from(shard.total())),
        "{text}"
    );
    assert_eq!(value(&text, "dli_up"), Some(1.0), "{text}");
    polled_queues(&text)
}

#[tokio::test]
async fn three_shards_split_the_queues_without_overlap_or_gap_and_keep_them_across_restarts() {
    let queues = queue_names();
    let sim = shard_sim(&queues).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("config.toml"), config(&sim, &queues)).expect("config");

    let mut sets = Vec::new();
    let mut children = Vec::new();
    for n in 0..3u32 {
        let ordinal = n.to_string();
        let (child, url) = exporter(
            dir.path(),
            &format!("shard{n}"),
            &["--shard", &ordinal, "--total-shards", "3"],
        );
        children.push((child, url));
    }
    for (n, (child, url)) in children.iter_mut().enumerate() {
        let shard = Shard::new(n as u32, 3).expect("shard");
        sets.push(queues_of(child, url, shard).await);
    }
    let mut union = BTreeSet::new();
    for (i, set) in sets.iter().enumerate() {
        assert!(!set.is_empty(), "shard {i} polls nothing: {sets:?}");
        for other in &sets[i + 1..] {
            assert!(set.is_disjoint(other), "{sets:?}");
        }
        union.extend(set.iter().cloned());
    }
    let all: BTreeSet<String> = queues.iter().cloned().collect();
    assert_eq!(union, all);
    // The simulator saw each queue asked for by one exporter only: the shards split the API
    // load (every queue polled at least once in total).
    let asked: BTreeSet<String> = sim
        .request_log()
        .into_iter()
        .filter_map(|r| r.queue)
        .collect();
    assert_eq!(asked, all);
    // The assignment is the documented hash, not an accident of this run.
    for (n, set) in sets.iter().enumerate() {
        let shard = Shard::new(n as u32, 3).expect("shard");
        let expected: BTreeSet<String> = queues
            .iter()
            .filter(|q| shard.owns(PID, q))
            .cloned()
            .collect();
        assert_eq!(set, &expected, "shard {n}");
    }
    let logs = children[1].0.outputs();
    assert!(
        logs.contains("polling the queues assigned to this shard"),
        "{logs}"
    );

    // A restart of shard 1 polls exactly the same queues.
    let (mut first, _) = children.remove(1);
    assert!(first.terminate(Duration::from_secs(10)).await.success());
    let (mut again, url) = exporter(
        dir.path(),
        "shard1-again",
        &["--shard", "1", "--total-shards", "3"],
    );
    let shard = Shard::new(1, 3).expect("shard");
    assert_eq!(queues_of(&mut again, &url, shard).await, sets[1]);
}

#[tokio::test]
async fn a_shard_without_queues_says_so_and_is_up() {
    let sim = shard_sim(&["only".to_string()]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("config.toml"),
        config(&sim, &["only".to_string()]),
    )
    .expect("config");
    let owner = (0..3).find(|n| Shard::new(*n, 3).is_ok_and(|s| s.owns(PID, "only")));
    let idle = (0..3u32)
        .find(|n| Some(*n) != owner)
        .expect("an idle shard");
    let ordinal = idle.to_string();
    let (mut child, url) = exporter(
        dir.path(),
        "idle",
        &["--shard", &ordinal, "--total-shards", "3"],
    );
    let queues = queues_of(&mut child, &url, Shard::new(idle, 3).expect("shard")).await;
    assert!(queues.is_empty(), "{queues:?}");
    assert!(
        child
            .outputs()
            .contains("no queue is assigned to this shard"),
        "{}",
        child.outputs()
    );
    assert_eq!(sim.stats().list_batches_requests, 0);
}

/// Runs `BIN args` with the host name set to `hostname` in a UTS namespace of its own, when this
/// machine allows it (root with `unshare`); `None` otherwise.
fn with_hostname(dir: &Path, name: &str, hostname: &str, args: &[&str]) -> Option<ChildGuard> {
    let probe = Command::new("unshare")
        .args(["--uts", "sh", "-c", "hostname probe-0"])
        .output()
        .ok()?;
    if !probe.status.success() {
        eprintln!("note: cannot set a host name here (unshare --uts failed); skipping");
        return None;
    }
    let mut script_args = vec![
        "--uts",
        "sh",
        "-c",
        "hostname \"$0\" && exec \"$@\"",
        hostname,
        child::BIN,
    ];
    script_args.extend_from_slice(args);
    let stdout = std::fs::File::create(dir.join(format!("{name}.stdout"))).ok()?;
    let stderr = std::fs::File::create(dir.join(format!("{name}.stderr"))).ok()?;
    let child = Command::new("unshare")
        .args(&script_args)
        .current_dir(dir)
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .ok()?;
    Some(ChildGuard::adopt(child, dir, name))
}

#[tokio::test]
async fn shard_auto_takes_the_number_at_the_end_of_the_host_name() {
    let queues = queue_names();
    let sim = shard_sim(&queues).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("config.toml"), config(&sim, &queues)).expect("config");
    let listen = child::free_listen_address();
    let args = [
        "--config.file",
        "config.toml",
        "--web.listen-address",
        &listen,
        "--shard",
        "auto",
        "--total-shards",
        "3",
    ];
    let Some(mut child) = with_hostname(dir.path(), "auto", "dli-exporter-2", &args) else {
        return;
    };
    let shard = Shard::new(2, 3).expect("shard");
    let set = queues_of(&mut child, &format!("http://{listen}/metrics"), shard).await;
    let expected: BTreeSet<String> = queues
        .iter()
        .filter(|q| shard.owns(PID, q))
        .cloned()
        .collect();
    assert_eq!(set, expected);

    // A host name without a number is refused, naming the flag and the name.
    let Some(mut bad) = with_hostname(dir.path(), "nonumber", "dli-exporter", &args) else {
        return;
    };
    let status = bad.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(1), "{}", bad.outputs());
    let out = bad.outputs();
    assert!(
        out.contains("--shard auto") && out.contains("dli-exporter") && out.contains("-<number>"),
        "{out}"
    );
}

#[tokio::test]
async fn bad_shard_values_are_rejected_naming_the_flag() {
    let sim = shard_sim(&["q".to_string()]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("config.toml"),
        config(&sim, &["q".to_string()]),
    )
    .expect("config");
    for (name, args, code, says) in [
        (
            "equal",
            &["--shard", "3", "--total-shards", "3"][..],
            1,
            "--shard 3 must be below --total-shards 3",
        ),
        (
            "zero",
            &["--shard", "0", "--total-shards", "0"][..],
            1,
            "--total-shards 0",
        ),
        ("alone", &["--shard", "1"][..], 2, "--total-shards"),
        ("total_alone", &["--total-shards", "2"][..], 2, "--shard"),
        (
            "word",
            &["--shard", "two", "--total-shards", "3"][..],
            2,
            "--shard",
        ),
        (
            "negative",
            &["--shard", "-1", "--total-shards", "3"][..],
            2,
            "--shard",
        ),
    ] {
        for mode in [&[][..], &["--once"][..], &["--check-config"][..]] {
            let mut all = vec!["--config.file", "config.toml"];
            all.extend_from_slice(mode);
            all.extend_from_slice(args);
            let (status, out) =
                child::run(dir.path(), name, &all, &[], Duration::from_secs(10)).await;
            assert_eq!(
                status.code(),
                Some(code),
                "{name} {mode:?}: {}",
                out.outputs()
            );
            assert!(
                out.outputs().contains(says),
                "{name} {mode:?} should say {says}: {}",
                out.outputs()
            );
        }
    }
    assert_eq!(
        sim.stats().list_batches_requests,
        0,
        "nothing polled with bad flags"
    );
}

#[tokio::test]
async fn once_and_check_config_follow_the_shard() {
    let queues = queue_names();
    let sim = shard_sim(&queues).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("config.toml"), config(&sim, &queues)).expect("config");
    let shard = Shard::new(0, 2).expect("shard");
    let expected: BTreeSet<String> = queues
        .iter()
        .filter(|q| shard.owns(PID, q))
        .cloned()
        .collect();
    let (status, out) = child::run(
        dir.path(),
        "once",
        &[
            "--config.file",
            "config.toml",
            "--once",
            "--shard",
            "0",
            "--total-shards",
            "2",
        ],
        &[],
        Duration::from_secs(20),
    )
    .await;
    assert!(status.success(), "{}", out.outputs());
    assert_eq!(polled_queues(&out.stdout()), expected);
    let (status, out) = child::run(
        dir.path(),
        "check",
        &[
            "--config.file",
            "config.toml",
            "--check-config",
            "--shard",
            "0",
            "--total-shards",
            "2",
        ],
        &[],
        Duration::from_secs(10),
    )
    .await;
    assert!(status.success(), "{}", out.outputs());
    let line = format!(
        "shard 0 of 2: polls {} of the {QUEUE_COUNT} listed queues",
        expected.len()
    );
    assert!(out.stdout().contains(&line), "{}", out.outputs());
}

#[tokio::test]
async fn discovered_queues_are_split_between_shards_too() {
    let queues = queue_names();
    let sim = shard_sim(&queues).await;
    sim.set_queue_list(
        PID,
        queues.iter().map(|q| SimQueue::new(q, "general")).collect(),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let discovering = config(&sim, &queues)
        .replace(
            &format!(
                "queues = [{}]",
                queues
                    .iter()
                    .map(|q| format!("{q:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "queues = [\"*\"]",
        )
        .replace("[auth]", "[discovery]\ninterval = \"1s\"\n\n[auth]");
    assert!(discovering.contains("queues = [\"*\"]"));
    std::fs::write(dir.path().join("config.toml"), discovering).expect("config");
    let mut children = Vec::new();
    for n in 0..3u32 {
        let ordinal = n.to_string();
        children.push(exporter(
            dir.path(),
            &format!("shard{n}"),
            &["--shard", &ordinal, "--total-shards", "3"],
        ));
    }
    let mut union = BTreeSet::new();
    for (n, (child, url)) in children.iter_mut().enumerate() {
        let shard = Shard::new(n as u32, 3).expect("shard");
        let set = queues_of(child, url, shard).await;
        let expected: BTreeSet<String> = queues
            .iter()
            .filter(|q| shard.owns(PID, q))
            .cloned()
            .collect();
        assert_eq!(set, expected, "shard {n}");
        assert!(union.is_disjoint(&set));
        union.extend(set);
    }
    assert_eq!(union, queues.iter().cloned().collect::<BTreeSet<_>>());

    // A queue created later is polled by its shard only, once discovery finds it.
    let new = "queue_new";
    sim.set_jobs(PID, new, numbered_jobs(new, 2));
    sim.add_queue(PID, SimQueue::new(new, "general"));
    let owner = (0..3u32)
        .find(|n| Shard::new(*n, 3).is_ok_and(|s| s.owns(PID, new)))
        .expect("an owner") as usize;
    let series = format!("dli_poll_success{{project_id=\"{PID}\",queue=\"{new}\"}} 1");
    let (child, url) = &mut children[owner];
    child
        .scrape_until(url, "the new queue polled", Duration::from_secs(15), |t| {
            t.contains(&series)
        })
        .await;
    for (n, (child, url)) in children.iter_mut().enumerate() {
        if n != owner {
            let text = child
                .scrape_until(url, "a scrape", Duration::from_secs(5), |_| true)
                .await;
            assert!(
                !text.contains(&format!("queue=\"{new}\"")),
                "shard {n}:\n{text}"
            );
        }
    }
}
