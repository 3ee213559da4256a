//! Reload (`POST /-/reload`, SIGHUP): re-reads the config file and the web config (and looks up
//! project ids from regions again), checks both (every client that must change is built) and
//! only then applies both; on any error nothing changes.
//!
//! What is applied is the difference (docs/architecture.md, "Reload"): a project whose
//! connection settings are unchanged keeps its client (its IAM token and throttle hold-off) and
//! its queue-list task; a queue whose settings are unchanged keeps its poller (and the walk it
//! may be running); only added, removed and changed queues are touched. A file that did not
//! change changes nothing at all, not even a project id lookup.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{ReloadError, collector_options, resolve_project_ids, shard};
use crate::config::{
    self, DiscoveryConfig, Env, JobNameFilter, PollConfig, Project, Settings, WebConfig,
};
use crate::dli::{ClientBuildError, ClientOptions, DliClient};
use crate::metrics::Metrics;
use crate::poll::scheduler::{self, Clients, PollContext, Trackers};
use crate::poll::shard::{Shard, assigned};
use crate::store::{LifecycleSink, QueueKey, SnapshotStore};
use crate::web::WebConfigWatcher;

/// What a project's client is built from: two equal identities make interchangeable clients.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ClientIdentity {
    /// The project without its queue lists (endpoint, region, resolved credentials, CA path,
    /// proxy, IAM endpoint).
    project: Project,
    /// SHA-256 of the CA bundle: a file replaced under the same path is a change.
    ca_digest: Option<[u8; 32]>,
    request_timeout: Duration,
    /// The hold-off bounds (`poll.timeout`, `poll.interval`).
    timeout: Duration,
    interval: Duration,
    /// The request limit all clients share.
    concurrency: u32,
}

impl ClientIdentity {
    fn of(project: &Project, poll: &PollConfig) -> Self {
        ClientIdentity {
            project: Project {
                queues: Vec::new(),
                discover: None,
                ..project.clone()
            },
            ca_digest: project.ca_file.as_deref().and_then(file_digest),
            request_timeout: poll.request_timeout,
            timeout: poll.timeout,
            interval: poll.interval,
            concurrency: poll.concurrency,
        }
    }
}

/// SHA-256 of a file's content; `None` when it cannot be read (then the client is rebuilt and
/// building it reports the file).
fn file_digest(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|b| Sha256::digest(&b).into())
}

/// The digests of every project's CA bundle, in order.
fn ca_digests(settings: &Settings) -> Vec<Option<[u8; 32]>> {
    settings
        .projects
        .iter()
        .map(|p| p.ca_file.as_deref().and_then(file_digest))
        .collect()
}

/// `settings` as a reload compares them: `[web]` needs a restart and is ignored.
fn without_web(settings: &Settings) -> Settings {
    Settings {
        web: WebConfig::default(),
        ..settings.clone()
    }
}

/// What a queue's poller runs with, besides its client: every poll setting but `stale_after`
/// (which only the metrics read), the owner cap and the job name selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PollerIdentity {
    poll: PollConfig,
    max_owners: u32,
    job_names: Option<JobNameFilter>,
}

impl PollerIdentity {
    pub(super) fn of(settings: &Settings) -> Self {
        PollerIdentity {
            poll: PollConfig {
                stale_after: Duration::ZERO,
                ..settings.poll.clone()
            },
            max_owners: settings.metrics.max_owners_per_queue,
            job_names: settings.metrics.job_name_filter(),
        }
    }
}

/// What a project's queue-list task runs with, besides its client.
#[derive(Debug, Clone, PartialEq)]
struct ListIdentity {
    /// The whole entry: its listed queues and discovery rules decide what discovery applies.
    project: Project,
    discovery: DiscoveryConfig,
    poll: PollConfig,
}

/// A running poller and what it was started with.
pub(super) struct Poller {
    pub(super) identity: PollerIdentity,
    pub(super) client: Arc<DliClient>,
    pub(super) cancel: CancellationToken,
}

struct QueueListTask {
    identity: ListIdentity,
    client: Arc<DliClient>,
    cancel: CancellationToken,
}

/// The parts a reload replaces, behind one lock so reloads and discoveries never interleave.
pub(super) struct Running {
    pub(super) settings: Settings,
    /// The configuration as the file gave it (before project ids were looked up), with the
    /// digests of its CA bundles: reloading the same is a no-op.
    loaded: Option<(Settings, Vec<Option<[u8; 32]>>)>,
    /// `[web]` as the config file had it (before flags), to tell a change that needs a restart.
    file_web: WebConfig,
    /// The request limit every client shares (`poll.concurrency`).
    limit: Arc<Semaphore>,
    client_ids: HashMap<String, ClientIdentity>,
    pub(super) clients: Clients,
    pub(super) trackers: Trackers,
    /// The running pollers, each with its own token (a child of the shutdown token).
    pub(super) pollers_by_queue: BTreeMap<QueueKey, Poller>,
    lists: HashMap<String, QueueListTask>,
    /// Each discovering project's discovered queues, once its first discovery attempt ended.
    pub(super) discovered: HashMap<String, BTreeSet<String>>,
    /// What a new poller of this configuration runs with.
    pub(super) context: Option<PollContext>,
}

impl Running {
    /// Nothing running yet for `settings` (what the store and metrics were created with);
    /// [`Control::apply`] starts it.
    pub(super) fn new(settings: Settings, file_web: WebConfig) -> Self {
        Running {
            limit: Arc::new(Semaphore::new(settings.poll.concurrency as usize)),
            settings,
            loaded: None,
            file_web,
            client_ids: HashMap::new(),
            clients: Clients::new(),
            trackers: Trackers::new(),
            pollers_by_queue: BTreeMap::new(),
            lists: HashMap::new(),
            discovered: HashMap::new(),
            context: None,
        }
    }
}

/// A checked configuration: every client it needs exists.
pub(super) struct Plan {
    settings: Settings,
    loaded: Option<(Settings, Vec<Option<[u8; 32]>>)>,
    limit: Arc<Semaphore>,
    clients: Clients,
    client_ids: HashMap<String, ClientIdentity>,
}

pub(super) struct Control {
    /// This control itself, for the tasks it spawns.
    pub(super) this: Weak<Control>,
    pub(super) store: Arc<SnapshotStore>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) tasks: TaskTracker,
    pub(super) shutdown: CancellationToken,
    pub(super) source: Option<(PathBuf, Env)>,
    pub(super) web: Option<Arc<WebConfigWatcher>>,
    /// This exporter's shard, for the life of the process (flags are not reloaded): only the
    /// queues assigned to it are polled, listed or discovered.
    pub(super) shard: Option<Shard>,
    pub(super) running: tokio::sync::Mutex<Running>,
}

impl Control {
    /// Builds the clients `settings` (project ids known) needs that `running` does not already
    /// have; changes nothing. `loaded` is the file's configuration before the id lookup.
    pub(super) fn plan(
        &self,
        settings: Settings,
        loaded: Settings,
        running: &Running,
    ) -> Result<Plan, ClientBuildError> {
        let limit = if settings.poll.concurrency == running.settings.poll.concurrency {
            running.limit.clone()
        } else {
            Arc::new(Semaphore::new(settings.poll.concurrency as usize))
        };
        let options = ClientOptions::for_poll(&settings.poll);
        let (mut clients, mut client_ids) = (Clients::new(), HashMap::new());
        for project in &settings.projects {
            let identity = ClientIdentity::of(project, &settings.poll);
            let kept = running
                .clients
                .get(&project.project_id)
                .filter(|_| running.client_ids.get(&project.project_id) == Some(&identity));
            let client = match kept {
                Some(client) => client.clone(),
                None => Arc::new(DliClient::new(
                    project,
                    &options,
                    limit.clone(),
                    self.metrics.observer(),
                )?),
            };
            clients.insert(project.project_id.clone(), client);
            client_ids.insert(project.project_id.clone(), identity);
        }
        let digests = ca_digests(&loaded);
        Ok(Plan {
            settings,
            loaded: Some((loaded, digests)),
            limit,
            clients,
            client_ids,
        })
    }

    /// Makes `running` what `plan` describes, touching only what differs. Cannot fail.
    ///
    /// A discovering project keeps the queues it had discovered (those the new filters still
    /// keep) until its next discovery; a project discovering for the first time polls nothing
    /// until its first discovery attempt has ended.
    pub(super) fn apply(&self, plan: Plan, running: &mut Running) {
        let Plan {
            settings,
            loaded,
            limit,
            clients,
            client_ids,
        } = plan;
        let lists = self.store.queue_lists();
        let mut discovered = HashMap::new();
        for project in &settings.projects {
            let (Some(filter), Some(old)) = (
                &project.discover,
                running.discovered.get(&project.project_id),
            ) else {
                continue;
            };
            let infos = lists
                .iter()
                .find(|(id, _)| *id == project.project_id)
                .map(|(_, s)| s.infos.clone());
            let kept: BTreeSet<String> = old
                .iter()
                .filter(|q| filter.keeps(q))
                .filter(|q| {
                    let queue_type = infos
                        .as_ref()
                        .and_then(|i| i.get(*q))
                        .and_then(|info| info.queue_type.as_deref());
                    queue_type.is_some_and(|t| settings.discovery.keeps_type(t))
                })
                .cloned()
                .collect();
            discovered.insert(project.project_id.clone(), kept);
        }
        running.discovered = discovered;
        let mut context = PollContext::from_settings(self.store.clone(), &settings);
        context.lifecycle = Some(self.metrics.lifecycle_sink());
        running.context = Some(context);
        running.clients = clients;
        running.client_ids = client_ids;
        running.limit = limit;
        running.loaded = loaded;
        self.store.set_queue_list_projects(
            settings
                .projects
                .iter()
                .map(|p| (p.project_id.clone(), p.discover.is_some())),
        );
        let options = collector_options(&settings);
        if options != collector_options(&running.settings) {
            self.metrics.set_options(options);
        }
        running.settings = settings;

        // Every project's queues: listed ones, plus the kept discovered ones; nothing yet for a
        // project whose first discovery is still to come.
        let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for project in &running.settings.projects {
            let entry = wanted.entry(project.project_id.clone()).or_default();
            match (
                &project.discover,
                running.discovered.get(&project.project_id),
            ) {
                (Some(_), None) => {}
                (_, kept) => {
                    for q in project.queues.iter().chain(kept.into_iter().flatten()) {
                        if !entry.contains(q)
                            && assigned(&project.project_id, q, self.shard.as_ref())
                        {
                            entry.push(q.clone());
                        }
                    }
                }
            }
        }
        shard::log_assignment(self.shard.as_ref(), &running.settings, &wanted);
        let keys: BTreeSet<QueueKey> = wanted
            .iter()
            .flat_map(|(p, qs)| {
                qs.iter()
                    .map(move |q| QueueKey::new(p.as_str(), q.as_str()))
            })
            .collect();
        // The store first: a walk of a removed queue that ends from now on finds its queue gone
        // and records nothing; then its series go (see SnapshotStore::commit_success).
        if self.store.keys().into_iter().collect::<BTreeSet<_>>() != keys {
            self.store.set_queues(keys.iter().cloned());
        }
        let removed: Vec<QueueKey> = running
            .pollers_by_queue
            .keys()
            .filter(|k| !keys.contains(*k))
            .cloned()
            .collect();
        for key in &removed {
            if let Some(poller) = running.pollers_by_queue.remove(key) {
                poller.cancel.cancel();
            }
            self.metrics.lifecycle.remove_queue(key);
            running.trackers.remove(key);
        }
        let identity = PollerIdentity::of(&running.settings);
        let (mut started, mut restarted) = (Vec::new(), Vec::new());
        for key in keys {
            let Some(client) = running.clients.get(&key.project_id).cloned() else {
                continue;
            };
            match running.pollers_by_queue.get(&key) {
                Some(p) if p.identity == identity && Arc::ptr_eq(&p.client, &client) => continue,
                Some(p) => {
                    p.cancel.cancel();
                    restarted.push(key.to_string());
                }
                None => started.push(key.to_string()),
            }
            self.start_poller(running, key, client);
        }
        for (project_id, set) in &running.discovered {
            self.store.record_discovered(project_id, set.len());
        }
        self.update_queue_lists(running);
        if !(started.is_empty() && restarted.is_empty() && removed.is_empty()) {
            let removed: Vec<String> = removed.iter().map(QueueKey::to_string).collect();
            tracing::info!(started = ?started, restarted = ?restarted, removed = ?removed, "pollers updated");
        }
    }

    /// Starts (or replaces) the poller of `key` with `client`, in the running configuration.
    pub(super) fn start_poller(
        &self,
        running: &mut Running,
        key: QueueKey,
        client: Arc<DliClient>,
    ) {
        let Some(context) = running.context.clone() else {
            return;
        };
        let tracker = running.trackers.entry(key.clone()).or_default().clone();
        let cancel = self.shutdown.child_token();
        scheduler::spawn_poller(
            key.clone(),
            client.clone(),
            context,
            running.settings.poll.interval,
            cancel.clone(),
            &self.tasks,
            tracker,
        );
        let identity = PollerIdentity::of(&running.settings);
        running.pollers_by_queue.insert(
            key,
            Poller {
                identity,
                client,
                cancel,
            },
        );
    }

    /// One queue-list task per project: kept when its client and its entry, `[discovery]` and
    /// `[poll]` are unchanged; otherwise replaced (the new one lists at once).
    fn update_queue_lists(&self, running: &mut Running) {
        let settings = running.settings.clone();
        let mut wanted = BTreeSet::new();
        for project in &settings.projects {
            // One queue list per project.
            if !wanted.insert(project.project_id.clone()) {
                continue;
            }
            let Some(client) = running.clients.get(&project.project_id).cloned() else {
                continue;
            };
            let identity = ListIdentity {
                project: project.clone(),
                discovery: settings.discovery.clone(),
                poll: settings.poll.clone(),
            };
            if let Some(task) = running.lists.get(&project.project_id) {
                if task.identity == identity && Arc::ptr_eq(&task.client, &client) {
                    continue;
                }
                task.cancel.cancel();
            }
            let cancel = self.shutdown.child_token();
            self.spawn_queue_list(&settings, project, client.clone(), cancel.clone());
            running.lists.insert(
                project.project_id.clone(),
                QueueListTask {
                    identity,
                    client,
                    cancel,
                },
            );
        }
        running.lists.retain(|id, task| {
            let keep = wanted.contains(id);
            if !keep {
                task.cancel.cancel();
            }
            keep
        });
    }

    pub(super) async fn reload(&self) -> Result<(), ReloadError> {
        let mut running = self.running.lock().await;
        let result = self.try_reload(&mut running).await;
        self.metrics.reload.record(result.is_ok());
        match &result {
            Ok(()) => tracing::info!("configuration reloaded"),
            Err(e) => tracing::error!(error = %e,
                "reload failed; nothing was changed, the previous configuration keeps running"),
        }
        result
    }

    /// Checks the web config and the config file, then applies both, or neither.
    async fn try_reload(&self, running: &mut Running) -> Result<(), ReloadError> {
        if self.source.is_none() && self.web.is_none() {
            return Err(ReloadError::NoConfigFile);
        }
        let web = match &self.web {
            Some(w) => {
                let w = w.clone();
                tokio::task::spawn_blocking(move || w.prepare())
                    .await
                    .map_err(|e| ReloadError::Task(e.to_string()))??
            }
            None => None,
        };
        let plan = match &self.source {
            Some((path, env)) => {
                let loaded = config::load(path, env)?;
                let file_web_changed = loaded.web != running.file_web;
                let unchanged = running.loaded.as_ref().is_some_and(|(before, digests)| {
                    without_web(before) == without_web(&loaded) && *digests == ca_digests(&loaded)
                });
                let plan = if unchanged {
                    None
                } else {
                    let mut settings = loaded.clone();
                    resolve_project_ids(&mut settings, self.metrics.observer()).await?;
                    // The server keeps listening where it was started (flags included).
                    settings.web = running.settings.web.clone();
                    Some(self.plan(settings, loaded.clone(), running)?)
                };
                if file_web_changed {
                    tracing::warn!("[web] changes take effect only after a restart");
                    running.file_web = loaded.web;
                }
                plan
            }
            None => None,
        };
        if let (Some(watcher), Some(prepared)) = (&self.web, web) {
            watcher.install(prepared);
        }
        if let Some(plan) = plan {
            self.apply(plan, running);
        }
        Ok(())
    }
}
