//! Discovery at run time: the project ids of regions ([`resolve_project_ids`], at start and on
//! reload), one queue-list task per project (every `discovery.interval`: the queue metrics, and
//! for `queues = ["*"]` the discovered set), and applying a project's new set of queues to the
//! running pollers without a reload (new queues start with the usual start offset, vanished ones
//! stop and lose their series as after a reload). Also [`discover_targets`], the same discovery
//! once, for the one-shot modes.
//!
//! It owns the rules of docs/architecture.md, "Queue discovery": a failed list keeps the last
//! discovered set; a project's listed queues start polling only after its first discovery
//! attempt; until one succeeds the discovered set is empty and the list is retried every
//! min(`discovery.interval`, `poll.interval`).

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::reload::{Control, Running};
use crate::config::{ConfigError, Project, Settings, project_id_problems};
use crate::dli::{ClientOptions, DliClient, LookupError, RequestObserver, RetryPolicy};
use crate::poll::discovery::{QueueListOutcome, refresh_queue_list};
use crate::poll::scheduler::Clients;
use crate::poll::shard::{Shard, assigned};
use crate::store::{LifecycleSink, QueueKey, SnapshotStore};

/// Why the project ids of `[[projects]]` entries without one could not be found.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("projects[{index}].project_id: {source}")]
    Lookup {
        index: usize,
        source: Box<LookupError>,
    },
    #[error(transparent)]
    Config(#[from] Box<ConfigError>),
}

/// Looks up the project id of every `[[projects]]` entry that has none, from its region, all at
/// once; then checks the project rules again with the ids known. Requests are reported to
/// `observer` (operation `list_projects`, or `iam_token` with token auth).
pub async fn resolve_project_ids(
    settings: &mut Settings,
    observer: Arc<dyn RequestObserver>,
) -> Result<(), ResolveError> {
    let todo: Vec<usize> = (0..settings.projects.len())
        .filter(|&i| settings.projects[i].project_id_from_region)
        .collect();
    if todo.is_empty() {
        return Ok(());
    }
    let limit = Arc::new(Semaphore::new(settings.poll.concurrency.max(1) as usize));
    let options = ClientOptions::new(settings.poll.request_timeout);
    let retry = RetryPolicy::new(settings.poll.retries);
    let now = Instant::now();
    let deadline = now.checked_add(settings.poll.timeout).unwrap_or(now);
    let lookups = todo.iter().map(|&i| {
        let project = &settings.projects[i];
        let (limit, observer) = (limit.clone(), observer.clone());
        let (options, retry) = (&options, &retry);
        async move {
            let id =
                crate::dli::lookup_project_id(project, options, limit, observer, retry, deadline)
                    .await;
            (i, id)
        }
    });
    for (index, result) in futures_util::future::join_all(lookups).await {
        let id = result.map_err(|source| ResolveError::Lookup {
            index,
            source: Box::new(source),
        })?;
        let project = &mut settings.projects[index];
        tracing::info!(index, region = project.region.as_deref().unwrap_or("-"), project_id = %id,
            "project id looked up from the region");
        project.project_id = id;
    }
    let problems = project_id_problems(&settings.projects);
    if !problems.is_empty() {
        return Err(Box::new(ConfigError::Invalid {
            path: settings.source.clone(),
            problems,
        })
        .into());
    }
    Ok(())
}

/// One discovery of every project, for the one-shot modes: records the queue lists in `store`
/// and returns every queue to poll (listed and discovered, each once, in project order; only
/// those assigned to `shard` when given) with its client, and the error of each failed list
/// (whose project's listed queues are still polled).
pub async fn discover_targets(
    settings: &Settings,
    clients: &Clients,
    store: &SnapshotStore,
    shard: Option<&Shard>,
) -> (Vec<(QueueKey, Arc<DliClient>)>, Vec<String>) {
    store.set_queue_list_projects(
        settings
            .projects
            .iter()
            .map(|p| (p.project_id.clone(), p.discover.is_some())),
    );
    let retry = RetryPolicy::new(settings.poll.retries);
    let lists = settings.projects.iter().filter_map(|project| {
        let client = clients.get(&project.project_id)?.clone();
        let retry = &retry;
        Some(async move {
            let outcome = refresh_queue_list(
                &client,
                project,
                &settings.discovery,
                store,
                retry,
                settings.poll.timeout,
            )
            .await;
            (project, client, outcome)
        })
    });
    let mut targets: Vec<(QueueKey, Arc<DliClient>)> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut errors = Vec::new();
    for (project, client, outcome) in futures_util::future::join_all(lists).await {
        if let Some(e) = &outcome.error {
            errors.push(format!("queue list: {e}"));
        }
        let discovered = outcome.discovered.unwrap_or_default();
        if project.discover.is_some() {
            store.record_discovered(&project.project_id, discovered.len());
        }
        for queue in wanted(project, &discovered, shard) {
            let key = QueueKey::new(&project.project_id, queue);
            if seen.insert(key.clone()) {
                targets.push((key, client.clone()));
            }
        }
    }
    store.set_queues(targets.iter().map(|(k, _)| k.clone()));
    (targets, errors)
}

/// The queues to poll for `project`: its listed ones, then the discovered ones; of those, only
/// the ones assigned to `shard` (docs/architecture.md, "Shards").
fn wanted(project: &Project, discovered: &BTreeSet<String>, shard: Option<&Shard>) -> Vec<String> {
    let mut out: Vec<String> = project.queues.clone();
    out.extend(
        discovered
            .iter()
            .filter(|q| !project.queues.contains(q))
            .cloned(),
    );
    out.retain(|q| assigned(&project.project_id, q, shard));
    out
}

/// How long to wait before the next queue list: `discovery.interval`, or sooner while a
/// discovering project has never had a successful list (so a failed first discovery is not
/// stuck for the whole interval).
fn next_wait(settings: &Settings, discovers: bool, ever_succeeded: bool) -> Duration {
    if discovers && !ever_succeeded {
        settings.discovery.interval.min(settings.poll.interval)
    } else {
        settings.discovery.interval
    }
}

impl Control {
    /// Spawns the queue-list task of `project` (child of `cancel`, the configuration's token).
    pub(super) fn spawn_queue_list(
        &self,
        settings: &Settings,
        project: &Project,
        client: Arc<DliClient>,
        cancel: CancellationToken,
    ) {
        let Some(control) = self.this.upgrade() else {
            return;
        };
        let settings = settings.clone();
        let project = project.clone();
        self.tasks.spawn(async move {
            let retry = RetryPolicy::new(settings.poll.retries);
            let discovers = project.discover.is_some();
            let mut ever_succeeded = false;
            loop {
                // Supervised like a poller: a panic is a failed list, the task goes on.
                let list = AssertUnwindSafe(refresh_queue_list(&client, &project,
                    &settings.discovery, &control.store, &retry, settings.poll.timeout))
                .catch_unwind();
                let outcome = tokio::select! {
                    _ = cancel.cancelled() => return,
                    o = list => o.unwrap_or_else(|_| {
                        tracing::error!(project_id = %project.project_id,
                            "queue list panicked; treated as a failed list, tried again at the next interval");
                        QueueListOutcome {
                            project_id: project.project_id.clone(),
                            discovered: None,
                            listed: 0,
                            error: Some("the queue list panicked".into()),
                        }
                    }),
                };
                ever_succeeded |= outcome.success();
                if discovers {
                    control.apply_discovered(&project, &outcome, &cancel).await;
                } else if let Some(e) = &outcome.error {
                    tracing::warn!(project_id = %outcome.project_id, error = %e,
                        "queue list failed; the queue metrics keep the last good list until it goes stale");
                }
                let wait = next_wait(&settings, discovers, ever_succeeded);
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        });
    }

    /// Applies one discovery outcome of `project`: a success replaces its discovered set, a
    /// failure keeps the last one (empty before the first success); the project's pollers then
    /// follow its listed plus discovered queues. Ignored once `cancel` fired (a reload replaced
    /// the task that ran it).
    async fn apply_discovered(
        &self,
        project: &Project,
        outcome: &QueueListOutcome,
        cancel: &CancellationToken,
    ) {
        let mut running = self.running.lock().await;
        if cancel.is_cancelled() {
            return;
        }
        let id = project.project_id.as_str();
        let first = !running.discovered.contains_key(id);
        let set = match (&outcome.discovered, &outcome.error) {
            (Some(set), _) => {
                tracing::debug!(
                    project_id = id,
                    listed = outcome.listed,
                    discovered = set.len(),
                    "queue discovery succeeded"
                );
                set.clone()
            }
            (None, error) => {
                let error = error.as_deref().unwrap_or("no queue list");
                let kept = running.discovered.get(id).cloned().unwrap_or_default();
                if first {
                    tracing::warn!(
                        project_id = id,
                        error,
                        listed_queues = project.queues.len(),
                        "first queue discovery failed: polling only the project's listed queues until a discovery succeeds"
                    );
                } else {
                    tracing::warn!(
                        project_id = id,
                        error,
                        kept = kept.len(),
                        "queue discovery failed; keeping the last discovered queues"
                    );
                }
                kept
            }
        };
        self.store.record_discovered(id, set.len());
        let wanted = wanted(project, &set, self.shard.as_ref());
        running.discovered.insert(id.to_string(), set);
        self.set_project_queues(&mut running, id, &wanted);
    }

    /// Makes `project_id`'s pollers exactly `queues`: the ones no longer wanted are stopped and
    /// their series and lifecycle tracker dropped (as a reload drops a removed queue); new ones
    /// start with the usual random start offset.
    pub(super) fn set_project_queues(
        &self,
        running: &mut Running,
        project_id: &str,
        queues: &[String],
    ) {
        let wanted: BTreeSet<QueueKey> = queues
            .iter()
            .map(|q| QueueKey::new(project_id, q.as_str()))
            .collect();
        let removed: Vec<QueueKey> = running
            .pollers_by_queue
            .keys()
            .filter(|k| k.project_id == project_id && !wanted.contains(*k))
            .cloned()
            .collect();
        let added: Vec<QueueKey> = wanted
            .iter()
            .filter(|k| !running.pollers_by_queue.contains_key(*k))
            .cloned()
            .collect();
        // The store first: a new poller's first result has its entry to land in, and a walk of
        // a removed queue that ends from now on records nothing (so its series, dropped next,
        // never come back). Other projects' queues (and every kept queue's snapshot) stay.
        let others: Vec<QueueKey> = self
            .store
            .keys()
            .into_iter()
            .filter(|k| k.project_id != project_id)
            .collect();
        self.store
            .set_queues(others.into_iter().chain(wanted.iter().cloned()));
        for key in &removed {
            if let Some(poller) = running.pollers_by_queue.remove(key) {
                poller.cancel.cancel();
            }
            self.metrics.lifecycle.remove_queue(key);
            running.trackers.remove(key);
        }
        if let Some(client) = running.clients.get(project_id).cloned() {
            for key in &added {
                self.start_poller(running, key.clone(), client.clone());
            }
        }
        if !added.is_empty() || !removed.is_empty() {
            let added: Vec<&str> = added.iter().map(|k| k.queue.as_str()).collect();
            let removed: Vec<&str> = removed.iter().map(|k| k.queue.as_str()).collect();
            tracing::info!(project_id, ?added, ?removed, "polled queues changed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_queues_come_first_and_once() {
        let toml = r#"
[auth]
access_key = "a"
secret_key = "b"
[[projects]]
project_id = "p1"
region = "cn-north-4"
queues = ["etl", "*"]
"#;
        let settings =
            crate::config::load_toml_str(toml, &crate::config::Env::new()).expect("valid");
        let project = &settings.projects[0];
        let discovered: BTreeSet<String> = ["adhoc", "etl"].iter().map(|s| s.to_string()).collect();
        assert_eq!(wanted(project, &discovered, None), vec!["etl", "adhoc"]);
        // A shard keeps exactly the queues the hash assigns to it, listed or discovered.
        for n in 0..2 {
            let shard = Shard::new(n, 2).expect("shard");
            let expected: Vec<&str> = ["etl", "adhoc"]
                .into_iter()
                .filter(|q| shard.owns("p1", q))
                .collect();
            assert_eq!(wanted(project, &discovered, Some(&shard)), expected);
        }
        assert_eq!(
            next_wait(&settings, true, false),
            settings.poll.interval.min(settings.discovery.interval)
        );
        assert_eq!(
            next_wait(&settings, true, true),
            settings.discovery.interval
        );
    }
}
