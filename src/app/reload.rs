//! Reload (`POST /-/reload`, SIGHUP): re-reads the config file and the web config, and replaces
//! the pollers only when everything loads; on any error the running configuration stays.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{ReloadError, build_clients, collector_options, queue_keys, shard};
use crate::config::{self, Env, Settings};
use crate::dli::ClientBuildError;
use crate::metrics::Metrics;
use crate::poll::scheduler::{self, PollContext, Trackers};
use crate::poll::shard::Shard;
use crate::store::{LifecycleSink, SnapshotStore};
use crate::web::WebConfigWatcher;

/// The parts a reload replaces, behind one lock so reloads never interleave.
pub(super) struct Running {
    pub(super) settings: Settings,
    pub(super) pollers: CancellationToken,
    pub(super) trackers: Trackers,
}

pub(super) struct Control {
    pub(super) store: Arc<SnapshotStore>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) tasks: TaskTracker,
    pub(super) shutdown: CancellationToken,
    pub(super) source: Option<(PathBuf, Env)>,
    pub(super) web: Option<Arc<WebConfigWatcher>>,
    /// This exporter's shard, for the life of the process (flags are not reloaded).
    pub(super) shard: Option<Shard>,
    pub(super) running: tokio::sync::Mutex<Running>,
}

impl Control {
    /// Replaces the pollers with ones for `settings`. Clients are built first, so a failure
    /// leaves everything as it was.
    pub(super) fn apply(
        &self,
        settings: Settings,
        running: &mut Running,
    ) -> Result<(), ClientBuildError> {
        let clients = build_clients(&settings, &self.metrics)?;
        let keys = queue_keys(&settings, self.shard.as_ref());
        for old in queue_keys(&running.settings, self.shard.as_ref()) {
            if !keys.contains(&old) {
                self.metrics.lifecycle.remove_queue(&old);
                running.trackers.remove(&old);
            }
        }
        for key in &keys {
            running.trackers.entry(key.clone()).or_default();
        }
        self.store.set_queues(keys);
        self.metrics.set_options(collector_options(&settings));

        running.pollers.cancel();
        running.pollers = self.shutdown.child_token();
        let mut context = PollContext::new(
            self.store.clone(),
            &settings.poll,
            settings.metrics.max_owners_per_queue,
        );
        context.lifecycle = Some(self.metrics.lifecycle_sink());
        let targets = scheduler::shard_targets(&settings, &clients, self.shard.as_ref());
        shard::log_assignment(self.shard.as_ref(), &settings, targets.len());
        scheduler::spawn_pollers(
            targets,
            context,
            settings.poll.interval,
            running.pollers.clone(),
            &self.tasks,
            &running.trackers,
        );
        running.settings = settings;
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
