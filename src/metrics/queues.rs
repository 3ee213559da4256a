//! [`QueueCollector`]: what the queue list says about each polled queue (`dli_queue_info`,
//! `dli_queue_cu`, `dli_queue_cu_used`, `dli_queue_cu_scale_out_limit`,
//! `dli_queue_cu_scale_in_limit`) and how discovery went (`dli_discovery_success`,
//! `dli_discovered_queues`), built from the store at every scrape.
//!
//! A queue's series exist only while it is polled and the project's last good queue list, which
//! names it, is fresh; a field the list omitted (or gave the wrong type) has no series, never a
//! made-up 0. Names, labels and HELP texts are the contract (docs/architecture.md, "Metrics").

use std::sync::{Arc, RwLock};
use std::time::Instant;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{MetricFamily, MetricType};

use super::CollectorOptions;
use super::jobs::gauge;
use crate::store::{QueueInfo, SnapshotStore};

/// Renders the queue and discovery metrics from the store at every scrape.
pub struct QueueCollector {
    store: Arc<SnapshotStore>,
    options: Arc<RwLock<CollectorOptions>>,
    descs: Vec<Desc>,
}

const QUEUE: [&str; 2] = ["project_id", "queue"];
const INFO_LABELS: [&str; 6] = [
    "charging_mode",
    "elastic_resource_pool",
    "project_id",
    "queue",
    "queue_type",
    "resource_mode",
];

/// (name, help, labels) of every metric the collector renders, in rendering order.
const FAMILIES: [(&str, &str, &[&str]); 7] = [
    (
        "dli_queue_info",
        "Always 1 for each polled queue the last successful queue list of its project names: its queue_type, resource_mode (shared or dedicated), charging_mode (the API's number) and elastic_resource_pool (empty when none).",
        &INFO_LABELS,
    ),
    (
        "dli_queue_cu",
        "CUs of the queue (cu_count), as of the last successful queue list of its project.",
        &QUEUE,
    ),
    (
        "dli_queue_cu_used",
        "CUs in use in the queue (used_cu), as of the last successful queue list of its project.",
        &QUEUE,
    ),
    (
        "dli_queue_cu_scale_out_limit",
        "Upper CU limit of the queue's elastic scaling (cu_scale_out_limit), as of the last successful queue list; absent when the list does not say.",
        &QUEUE,
    ),
    (
        "dli_queue_cu_scale_in_limit",
        "Lower CU limit of the queue's elastic scaling (cu_scale_in_limit), as of the last successful queue list; absent when the list does not say.",
        &QUEUE,
    ),
    (
        "dli_discovery_success",
        "1 if the last queue list of the project succeeded, else 0 (a failed discovery keeps the last discovered queues).",
        &["project_id"],
    ),
    (
        "dli_discovered_queues",
        "Queues of the project found by discovery (after discovery.queue_types, include_queues and exclude_queues) and polled.",
        &["project_id"],
    ),
];

impl QueueCollector {
    pub(super) fn new(
        store: Arc<SnapshotStore>,
        options: Arc<RwLock<CollectorOptions>>,
    ) -> Result<Self, prometheus::Error> {
        let descs = super::family_descs(&FAMILIES)?;
        Ok(QueueCollector {
            store,
            options,
            descs,
        })
    }
}

/// `resource_mode` as a label: the documented codes by name, anything else as the number.
fn resource_mode(mode: Option<i64>) -> String {
    match mode {
        Some(0) => "shared".into(),
        Some(1) => "dedicated".into(),
        Some(n) => n.to_string(),
        None => String::new(),
    }
}

fn info_labels(info: &QueueInfo) -> [String; 4] {
    [
        info.charging_mode
            .map(|n| n.to_string())
            .unwrap_or_default(),
        info.elastic_resource_pool.clone().unwrap_or_default(),
        info.queue_type.clone().unwrap_or_default(),
        resource_mode(info.resource_mode),
    ]
}

impl Collector for QueueCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let stale_after = super::current_options(&self.options).queue_list_stale_after;
        let now = Instant::now();
        let mut out: Vec<Vec<prometheus::proto::Metric>> = vec![Vec::new(); FAMILIES.len()];
        let lists = self.store.queue_lists();
        for (project_id, status) in &lists {
            let p = project_id.as_str();
            if status.attempted {
                out[5].push(gauge(
                    &[("project_id", p)],
                    f64::from(u8::from(status.last_success)),
                ));
            }
            if let (true, Some(n)) = (status.discovers, status.discovered) {
                out[6].push(gauge(&[("project_id", p)], n as f64));
            }
        }
        let fresh: std::collections::HashMap<&str, &QueueInfoMap> = lists
            .iter()
            .filter_map(|(id, s)| Some((id.as_str(), &**s.fresh_infos(stale_after, now)?)))
            .collect();
        for key in self.store.keys() {
            let p = key.project_id.as_str();
            let infos = fresh.get(p);
            let Some(info) = infos.and_then(|i| i.get(&key.queue)) else {
                continue;
            };
            let q = key.queue.as_str();
            let [charging, pool, queue_type, mode] = info_labels(info);
            out[0].push(gauge(
                &[
                    ("charging_mode", &charging),
                    ("elastic_resource_pool", &pool),
                    ("project_id", p),
                    ("queue", q),
                    ("queue_type", &queue_type),
                    ("resource_mode", &mode),
                ],
                1.0,
            ));
            for (i, value) in [
                info.cu_count,
                info.used_cu,
                info.cu_scale_out_limit,
                info.cu_scale_in_limit,
            ]
            .into_iter()
            .enumerate()
            {
                if let Some(v) = value {
                    out[i + 1].push(gauge(&[("project_id", p), ("queue", q)], v));
                }
            }
        }
        FAMILIES
            .iter()
            .zip(out)
            .map(|((name, help, _), metrics)| {
                let mut mf = MetricFamily::default();
                mf.set_name(name.to_string());
                mf.set_help(help.to_string());
                mf.set_field_type(MetricType::GAUGE);
                mf.set_metric(metrics);
                mf
            })
            .collect()
    }
}

type QueueInfoMap = std::collections::BTreeMap<String, QueueInfo>;
