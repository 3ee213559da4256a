//! Discovery and the queue metrics' source: fetching a project's queue list
//! ([`refresh_queue_list`]), keeping it in the store, and choosing the discovered queues
//! ([`select_queues`]: the types of `discovery.queue_types`, then the project's
//! `include_queues`/`exclude_queues`).
//!
//! It does not decide when to run or start and stop pollers: the daemon (`app`) runs it every
//! `discovery.interval` and applies the discovered set; `--once` runs it once. It must not render
//! metrics or serve HTTP.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::config::{DiscoveryConfig, Project, QueueFilter};
use crate::dli::{DliClient, QueueList, RetryPolicy, with_retries};
use crate::store::{QueueInfo, SnapshotStore};

/// The `queue_type` asked for: every type, since the API's default (`sql`) hides Spark queues;
/// the types to keep are chosen here.
pub const LIST_QUEUE_TYPE: &str = "all";

/// The outcome of one queue list of one project.
#[derive(Debug)]
pub struct QueueListOutcome {
    pub project_id: String,
    /// The discovered set, when the list succeeded and the project discovers.
    pub discovered: Option<BTreeSet<String>>,
    /// Queues in the answer (after dropping unusable entries).
    pub listed: usize,
    /// Why the list failed (names the project, URL and HTTP details); `None` on success.
    pub error: Option<String>,
}

impl QueueListOutcome {
    pub fn success(&self) -> bool {
        self.error.is_none()
    }
}

/// The queues of `list` that discovery keeps: a `queue_type` among `discovery.queue_types`, then
/// `filter`'s name rules. A queue without a `queue_type` is not kept (its type cannot be told).
pub fn select_queues(
    list: &QueueList,
    discovery: &DiscoveryConfig,
    filter: &QueueFilter,
) -> BTreeSet<String> {
    list.queues
        .iter()
        .filter(|q| {
            q.queue_type
                .as_deref()
                .is_some_and(|t| discovery.keeps_type(t))
        })
        .filter(|q| filter.keeps(&q.queue_name))
        .map(|q| q.queue_name.clone())
        .collect()
}

fn infos(list: &QueueList) -> BTreeMap<String, QueueInfo> {
    list.queues
        .iter()
        .map(|q| {
            (
                q.queue_name.clone(),
                QueueInfo {
                    queue_type: q.queue_type.clone(),
                    resource_mode: q.resource_mode,
                    charging_mode: q.charging_mode,
                    elastic_resource_pool: q.elastic_resource_pool_name.clone(),
                    cu_count: q.cu_count,
                    used_cu: q.used_cu,
                    cu_scale_out_limit: q.cu_scale_out_limit,
                    cu_scale_in_limit: q.cu_scale_in_limit,
                },
            )
        })
        .collect()
}

/// Fetches `project`'s queue list once (retrying as `retry` allows within `timeout`), records it
/// in `store` (a failure keeps the last good list), and returns the discovered set when the
/// project discovers. The discovered count in the store is the caller's to set: a failed list
/// keeps the previous set.
pub async fn refresh_queue_list(
    client: &DliClient,
    project: &Project,
    discovery: &DiscoveryConfig,
    store: &SnapshotStore,
    retry: &RetryPolicy,
    timeout: Duration,
) -> QueueListOutcome {
    let project_id = client.project_id().to_string();
    let deadline = Instant::now() + timeout;
    let call = with_retries(retry, deadline, || client.list_queues(LIST_QUEUE_TYPE));
    let result = match tokio::time::timeout(timeout, call).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "project {project_id}: the queue list took longer than {}",
            humantime::format_duration(timeout)
        )),
    };
    match result {
        Ok(list) => {
            if list.skipped > 0 {
                tracing::warn!(
                    project_id,
                    skipped = list.skipped,
                    "queue list: entries without a usable queue_name, or repeating one, were ignored"
                );
            }
            store.record_queue_list(&project_id, infos(&list));
            let discovered = project
                .discover
                .as_ref()
                .map(|filter| select_queues(&list, discovery, filter));
            QueueListOutcome {
                project_id,
                discovered,
                listed: list.queues.len(),
                error: None,
            }
        }
        Err(error) => {
            store.record_queue_list_failure(&project_id);
            QueueListOutcome {
                project_id,
                discovered: None,
                listed: 0,
                error: Some(error),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QueuePattern;
    use crate::dli::decode_queue_list;

    fn list() -> QueueList {
        decode_queue_list(
            br#"{"queues":[
                {"queue_name":"etl","queue_type":"general"},
                {"queue_name":"etl_tmp","queue_type":"general"},
                {"queue_name":"adhoc","queue_type":"ALL"},
                {"queue_name":"default","queue_type":"sql"},
                {"queue_name":"untyped"},
                {"queue_name":"tmp_x","queue_type":"general"}]}"#,
        )
        .expect("decodes")
    }

    fn patterns(sources: &[&str]) -> Vec<QueuePattern> {
        sources
            .iter()
            .map(|s| QueuePattern::new(s).expect("valid"))
            .collect()
    }

    #[test]
    fn types_then_whole_name_include_and_exclude() {
        let d = DiscoveryConfig::default();
        let all = select_queues(&list(), &d, &QueueFilter::default());
        assert_eq!(
            all.into_iter().collect::<Vec<_>>(),
            vec!["adhoc", "etl", "etl_tmp", "tmp_x"]
        );
        // Whole-name matching: "etl" does not match "etl_tmp"; "tmp" does not match "tmp_x".
        let f = QueueFilter {
            include: patterns(&["etl", "tmp_.*", "adhoc"]),
            exclude: patterns(&["tmp"]),
        };
        assert_eq!(
            select_queues(&list(), &d, &f)
                .into_iter()
                .collect::<Vec<_>>(),
            vec!["adhoc", "etl", "tmp_x"]
        );
        let f = QueueFilter {
            include: Vec::new(),
            exclude: patterns(&[".*_tmp|tmp_.*"]),
        };
        assert_eq!(
            select_queues(&list(), &d, &f)
                .into_iter()
                .collect::<Vec<_>>(),
            vec!["adhoc", "etl"]
        );
        let sql_only = DiscoveryConfig {
            queue_types: vec!["sql".into()],
            ..DiscoveryConfig::default()
        };
        assert_eq!(
            select_queues(&list(), &sql_only, &QueueFilter::default())
                .into_iter()
                .collect::<Vec<_>>(),
            vec!["default"]
        );
    }
}
