//! Reload (`POST /-/reload`, SIGHUP): re-reads the config file and the web config (and looks up
//! project ids from regions again), and replaces the pollers only when everything loads; on any
//! error the running configuration stays.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Weak};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{ReloadError, build_clients, collector_options, resolve_project_ids, shard};
use crate::config::{self, Env, Settings};
use crate::dli::ClientBuildError;
use crate::metrics::Metrics;
use crate::poll::scheduler::{Clients, PollContext, Trackers};
use crate::poll::shard::{Shard, assigned};
use crate::store::{LifecycleSink, QueueKey, SnapshotStore};
use crate::web::WebConfigWatcher;

/// The parts a reload replaces, behind one lock so reloads and discoveries never interleave.
pub(super) struct Running {
    pub(super) settings: Settings,
    /// Parent of every task of this configuration (pollers and queue-list tasks).
    pub(super) pollers: CancellationToken,
    pub(super) trackers: Trackers,
    /// The running pollers, each with its own token (a child of `pollers`).
    pub(super) pollers_by_queue: BTreeMap<QueueKey, CancellationToken>,
    /// Each discovering project's discovered queues, once its first discovery attempt ended.
    pub(super) discovered: HashMap<String, BTreeSet<String>>,
    pub(super) clients: Clients,
    /// What a new poller of this configuration runs with.
    pub(super) context: Option<PollContext>,
}

impl Running {
    pub(super) fn new(settings: Settings, pollers: CancellationToken) -> Self {
        Running {
            settings,
            pollers,
            trackers: Trackers::new(),
            pollers_by_queue: BTreeMap::new(),
            discovered: HashMap::new(),
            clients: Clients::new(),
            context: None,
        }
    }
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
    /// Replaces the pollers and queue-list tasks with ones for `settings` (ids already looked
    /// up). Clients are built first, so a failure leaves everything as it was. A discovering
    /// project keeps the queues it had discovered (those the new filters still keep) until its
    /// next discovery, which runs at once; a project discovering for the first time polls
    /// nothing until its first discovery attempt has ended.
    pub(super) fn apply(
        &self,
        settings: Settings,
        running: &mut Running,
    ) -> Result<(), ClientBuildError> {
        let clients = build_clients(&settings, &self.metrics)?;
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

        running.pollers.cancel();
        running.pollers = self.shutdown.child_token();
        running.pollers_by_queue.clear();
        running.discovered = discovered;
        let mut context = PollContext::new(
            self.store.clone(),
            &settings.poll,
            settings.metrics.max_owners_per_queue,
        );
        context.lifecycle = Some(self.metrics.lifecycle_sink());
        running.context = Some(context);
        running.clients = clients;
        self.store.set_queue_list_projects(
            settings
                .projects
                .iter()
                .map(|p| (p.project_id.clone(), p.discover.is_some())),
        );
        self.metrics.set_options(collector_options(&settings));

        // Every project's pollers: listed queues, plus the kept discovered ones; nothing yet for
        // a project whose first discovery is still to come.
        let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for project in &settings.projects {
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
        shard::log_assignment(self.shard.as_ref(), &settings, &wanted);
        let old_keys: Vec<QueueKey> = self.store.keys();
        let new_keys: BTreeSet<QueueKey> = wanted
            .iter()
            .flat_map(|(p, qs)| {
                qs.iter()
                    .map(move |q| QueueKey::new(p.as_str(), q.as_str()))
            })
            .collect();
        for old in old_keys.iter().filter(|k| !new_keys.contains(*k)) {
            self.metrics.lifecycle.remove_queue(old);
            running.trackers.remove(old);
        }
        self.store.set_queues(new_keys);
        running.settings = settings;
        for (project_id, queues) in &wanted {
            if let Some(set) = running.discovered.get(project_id) {
                self.store.record_discovered(project_id, set.len());
            }
            self.set_project_queues(running, project_id, queues);
        }
        let settings = running.settings.clone();
        let mut listed = BTreeSet::new();
        for project in &settings.projects {
            // One queue list per project, even when several entries name it.
            if !listed.insert(project.project_id.as_str()) {
                continue;
            }
            if let Some(client) = running.clients.get(&project.project_id) {
                self.spawn_queue_list(
                    &settings,
                    project,
                    client.clone(),
                    running.pollers.child_token(),
                );
            }
        }
        Ok(())
    }

    pub(super) async fn reload(&self) -> Result<(), ReloadError> {
        // The web config is re-read too (it is also watched); its failure fails the reload.
        let web = match &self.web {
            Some(w) => w
                .check_and_log()
                .await
                .map(|_| ())
                .map_err(ReloadError::from),
            None => Ok(()),
        };
        let result = if self.source.is_none() && self.web.is_some() {
            web
        } else {
            self.try_reload().await.and(web)
        };
        self.metrics.reload.record(result.is_ok());
        match &result {
            Ok(()) => tracing::info!("configuration reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "reload failed; the previous configuration keeps running")
            }
        }
        result
    }

    async fn try_reload(&self) -> Result<(), ReloadError> {
        let (path, env) = self.source.as_ref().ok_or(ReloadError::NoConfigFile)?;
        let mut settings = config::load(path, env)?;
        resolve_project_ids(&mut settings, self.metrics.observer()).await?;
        let mut running = self.running.lock().await;
        if settings.web.listen_address != running.settings.web.listen_address
            || settings.web.telemetry_path != running.settings.web.telemetry_path
        {
            tracing::warn!("[web] changes take effect only after a restart");
        }
        // The server keeps listening where it was started (flags included).
        settings.web = running.settings.web.clone();
        self.apply(settings, &mut running)?;
        Ok(())
    }
}
