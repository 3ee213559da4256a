//! Reload (`POST /-/reload`, SIGHUP): re-reads the config file and the web config, checks both
//! (every client that must change is built) and only then applies both; on any error nothing
//! changes.
//!
//! What is applied is the difference (docs/architecture.md, "Reload"): a project whose
//! connection settings are unchanged keeps its client (its IAM token and throttle hold-off), a
//! queue whose settings are unchanged keeps its poller (and the walk it may be running); only
//! added, removed and changed queues are touched. An unchanged file changes nothing at all.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{ReloadError, collector_options, queue_keys};
use crate::config::{self, Env, PollConfig, Project, Settings, WebConfig};
use crate::dli::{ClientBuildError, ClientOptions, DliClient};
use crate::metrics::Metrics;
use crate::poll::scheduler::{self, PollContext, Trackers};
use crate::store::{LifecycleSink, QueueKey, SnapshotStore};
use crate::web::WebConfigWatcher;

/// What a project's client is built from: two equal identities make interchangeable clients.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ClientIdentity {
    /// The project without its queue list (endpoint, region, resolved credentials, CA path,
    /// proxy).
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

/// What a queue's poller runs with, besides its client: every poll setting but `stale_after`
/// (which only the metrics read), and the owner cap.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PollerIdentity {
    poll: PollConfig,
    max_owners: u32,
}

impl PollerIdentity {
    fn of(settings: &Settings) -> Self {
        PollerIdentity {
            poll: PollConfig {
                stale_after: Duration::ZERO,
                ..settings.poll.clone()
            },
            max_owners: settings.metrics.max_owners_per_queue,
        }
    }
}

struct BuiltClient {
    identity: ClientIdentity,
    client: Arc<DliClient>,
}

struct Poller {
    identity: PollerIdentity,
    client: Arc<DliClient>,
    cancel: CancellationToken,
}

/// The parts a reload replaces, behind one lock so reloads never interleave.
pub(super) struct Running {
    pub(super) settings: Settings,
    /// `[web]` as the config file had it (before flags), to tell a change that needs a restart.
    pub(super) file_web: WebConfig,
    /// The request limit every client shares (`poll.concurrency`).
    limit: Arc<Semaphore>,
    clients: HashMap<String, BuiltClient>,
    pollers: HashMap<QueueKey, Poller>,
    trackers: Trackers,
}

impl Running {
    /// Nothing running yet for `settings` (what the store and metrics were created with);
    /// [`Control::apply`] starts it.
    pub(super) fn new(settings: Settings, file_web: WebConfig) -> Self {
        Running {
            file_web,
            limit: Arc::new(Semaphore::new(settings.poll.concurrency as usize)),
            settings,
            clients: HashMap::new(),
            pollers: HashMap::new(),
            trackers: Trackers::new(),
        }
    }
}

/// A checked configuration: every client it needs exists.
pub(super) struct Plan {
    settings: Settings,
    limit: Arc<Semaphore>,
    clients: HashMap<String, BuiltClient>,
}

pub(super) struct Control {
    pub(super) store: Arc<SnapshotStore>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) tasks: TaskTracker,
    pub(super) shutdown: CancellationToken,
    pub(super) source: Option<(PathBuf, Env)>,
    pub(super) web: Option<Arc<WebConfigWatcher>>,
    pub(super) running: tokio::sync::Mutex<Running>,
}

impl Control {
    /// Builds the clients `settings` needs that `running` does not already have; changes
    /// nothing.
    pub(super) fn plan(
        &self,
        settings: Settings,
        running: &Running,
    ) -> Result<Plan, ClientBuildError> {
        let limit = if settings.poll.concurrency == running.settings.poll.concurrency {
            running.limit.clone()
        } else {
            Arc::new(Semaphore::new(settings.poll.concurrency as usize))
        };
        let options = ClientOptions::for_poll(&settings.poll);
        let mut clients = HashMap::new();
        for project in &settings.projects {
            let identity = ClientIdentity::of(project, &settings.poll);
            let client = match running.clients.get(&project.project_id) {
                Some(built) if built.identity == identity => built.client.clone(),
                _ => Arc::new(DliClient::new(
                    project,
                    &options,
                    limit.clone(),
                    self.metrics.observer(),
                )?),
            };
            clients.insert(project.project_id.clone(), BuiltClient { identity, client });
        }
        Ok(Plan {
            settings,
            limit,
            clients,
        })
    }

    /// Makes `running` what `plan` describes, touching only what differs. Cannot fail.
    pub(super) fn apply(&self, plan: Plan, running: &mut Running) {
        let Plan {
            settings,
            limit,
            clients,
        } = plan;
        let keys = queue_keys(&settings);
        // The store first: a walk of a removed queue that ends from now on finds its queue gone
        // and records nothing; then its series go (see SnapshotStore::commit_success).
        if keys != queue_keys(&running.settings) {
            self.store.set_queues(keys.clone());
        }
        let removed: Vec<QueueKey> = running
            .pollers
            .keys()
            .filter(|k| !keys.contains(k))
            .cloned()
            .collect();
        for key in &removed {
            if let Some(poller) = running.pollers.remove(key) {
                poller.cancel.cancel();
            }
            self.metrics.lifecycle.remove_queue(key);
            running.trackers.remove(key);
        }

        let identity = PollerIdentity::of(&settings);
        let mut ctx = PollContext::new(
            self.store.clone(),
            &settings.poll,
            settings.metrics.max_owners_per_queue,
        );
        ctx.lifecycle = Some(self.metrics.lifecycle_sink());
        let (mut started, mut restarted) = (Vec::new(), Vec::new());
        for key in keys {
            let Some(client) = clients.get(&key.project_id).map(|c| c.client.clone()) else {
                continue;
            };
            match running.pollers.get(&key) {
                Some(p) if p.identity == identity && Arc::ptr_eq(&p.client, &client) => continue,
                Some(p) => {
                    p.cancel.cancel();
                    restarted.push(key.to_string());
                }
                None => started.push(key.to_string()),
            }
            let tracker = running.trackers.entry(key.clone()).or_default().clone();
            let cancel = self.shutdown.child_token();
            scheduler::spawn_poller(
                key.clone(),
                client.clone(),
                ctx.clone(),
                settings.poll.interval,
                cancel.clone(),
                &self.tasks,
                tracker,
            );
            running.pollers.insert(
                key,
                Poller {
                    identity: identity.clone(),
                    client,
                    cancel,
                },
            );
        }
        let options = collector_options(&settings);
        if options != collector_options(&running.settings) {
            self.metrics.set_options(options);
        }
        if !(started.is_empty() && restarted.is_empty() && removed.is_empty()) {
            let removed: Vec<String> = removed.iter().map(QueueKey::to_string).collect();
            tracing::info!(started = ?started, restarted = ?restarted, removed = ?removed, "pollers updated");
        }
        running.settings = settings;
        running.limit = limit;
        running.clients = clients;
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
                let mut settings = config::load(path, env)?;
                let file_web = settings.web.clone();
                // The server keeps listening where it was started (flags included).
                settings.web = running.settings.web.clone();
                let plan = self.plan(settings, running)?;
                if file_web != running.file_web {
                    tracing::warn!("[web] changes take effect only after a restart");
                    running.file_web = file_web;
                }
                Some(plan)
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
