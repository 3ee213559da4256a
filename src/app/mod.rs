//! The running exporter: builds the store, metrics, clients and pollers from [`Settings`],
//! serves HTTP on an already bound listener, reloads the configuration on request (`reload`),
//! turns signals into shutdown and reload (`signals`), and stops everything on shutdown. Also
//! one function per mode of the binary (`run`: `--check-config`, `--once`, `--probe`, serve), the
//! `--probe` run over every queue (`probe`) and the `--demo` settings (`demo`).
//!
//! It owns start-up order (listen first, then poll), reload (a broken file keeps the old
//! configuration running) and shutdown order (stop accepting, let scrapes finish, cancel polls).
//! It is the one module that may import every other; flag parsing and logging setup are `cli`'s.

mod demo;
mod discovery;
mod probe;
mod reload;
mod run;
mod shard;
mod signals;

pub use discovery::{ResolveError, discover_targets, resolve_project_ids};
pub use probe::{ProbeRun, probe_all};
pub use run::{RunError, check_config, once, probe, serve};
pub use shard::{os_hostname, resolve_shard};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use reload::{Control, Running};

use crate::config::{ConfigError, Env, Settings, WebConfig};
use crate::dli::ClientBuildError;
use crate::dli::{ClientOptions, DliClient};
use crate::metrics::{CollectorOptions, Metrics};
use crate::poll::scheduler::{self, Clients, PollContext, PollOutcome};
use crate::poll::shard::{Shard, assigned};
use crate::store::{QueueKey, SnapshotStore};
use crate::web::config::{WEB_CONFIG_POLL_INTERVAL, WebConfigError, WebConfigWatcher};
use crate::web::server::{self, Limits, ReloadFn, ServerState};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Client(#[from] ClientBuildError),
    #[error("cannot create metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot read the listening address: {0}")]
    Listener(#[from] std::io::Error),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
}

/// Why a reload did not take effect: nothing was changed, the previous configuration (and web
/// configuration) keep running. Shown to whoever asked for the reload: never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(
        "nothing to reload: the exporter was not started from a config file (--demo or embedded use)"
    )]
    NoConfigFile,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Client(#[from] ClientBuildError),
    #[error(transparent)]
    WebConfig(#[from] WebConfigError),
    #[error("reading the web config failed: {0}")]
    Task(String),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
}

/// How the daemon serves, beyond [`Settings`]: what `main` takes from flags, and what tests tune.
#[derive(Clone)]
pub struct StartOptions {
    /// The config file (and environment) a reload re-reads; `None`: reload has no file.
    pub source: Option<(PathBuf, Env)>,
    /// `--web.config.file`, already loaded; `None` serves plain HTTP without auth.
    pub web: Option<Arc<WebConfigWatcher>>,
    /// How often the web config files are checked for changes.
    pub web_config_poll: std::time::Duration,
    /// Server limits (sizes, timeouts, concurrency).
    pub limits: Limits,
    /// `--web.enable-lifecycle`: `POST /-/reload` reloads (on) or answers 403 (off; SIGHUP
    /// still reloads).
    pub enable_lifecycle: bool,
    /// `[web]` of the config file before flags were applied, so a reload can tell a change
    /// that needs a restart; `None`: the settings' own `[web]`.
    pub file_web: Option<WebConfig>,
    /// `--shard`/`--total-shards`: poll only the queues assigned to this shard (`None`: all).
    pub shard: Option<Shard>,
}

impl std::fmt::Debug for StartOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The environment may hold credentials: only the file name is shown.
        f.debug_struct("StartOptions")
            .field("source", &self.source.as_ref().map(|(path, _)| path))
            .field("web", &self.web)
            .field("web_config_poll", &self.web_config_poll)
            .field("limits", &self.limits)
            .field("enable_lifecycle", &self.enable_lifecycle)
            .field("file_web", &self.file_web)
            .field("shard", &self.shard)
            .finish()
    }
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            source: None,
            web: None,
            web_config_poll: WEB_CONFIG_POLL_INTERVAL,
            limits: Limits::default(),
            enable_lifecycle: true,
            file_web: None,
            shard: None,
        }
    }
}

/// The queues this exporter polls: every configured one, or those assigned to `shard`.
fn queue_keys(settings: &Settings, shard: Option<&Shard>) -> Vec<QueueKey> {
    settings
        .queue_pairs()
        .filter(|(p, q)| assigned(&p.project_id, q, shard))
        .map(|(p, q)| QueueKey::new(&p.project_id, q))
        .collect()
}

/// One client per project; all share one request limit (`poll.concurrency`).
pub fn build_clients(settings: &Settings, metrics: &Metrics) -> Result<Clients, ClientBuildError> {
    let limit = Arc::new(Semaphore::new(settings.poll.concurrency as usize));
    let options = ClientOptions::for_poll(&settings.poll);
    let mut clients = Clients::new();
    for project in &settings.projects {
        let client = DliClient::new(project, &options, limit.clone(), metrics.observer())?;
        clients.insert(project.project_id.clone(), Arc::new(client));
    }
    Ok(clients)
}

fn collector_options(settings: &Settings) -> CollectorOptions {
    CollectorOptions {
        owner_breakdown: settings.metrics.owner_breakdown,
        stale_after: settings.poll.stale_after,
        queue_list_stale_after: settings
            .discovery
            .interval
            .saturating_add(settings.poll.stale_after),
    }
}

/// A running exporter: HTTP server plus pollers.
pub struct App {
    pub addr: SocketAddr,
    pub store: Arc<SnapshotStore>,
    pub metrics: Arc<Metrics>,
    control: Arc<Control>,
    reload: ReloadFn,
}

impl App {
    /// Starts serving on `listener` (already bound, so the port is open before the first poll)
    /// and starts polling every queue. Reload is unavailable without a config file.
    pub fn start(settings: &Settings, listener: TcpListener) -> Result<App, StartError> {
        Self::start_reloadable(settings, listener, None)
    }

    /// Like [`App::start`]; `source` is the config file (and environment) a reload re-reads.
    pub fn start_reloadable(
        settings: &Settings,
        listener: TcpListener,
        source: Option<(PathBuf, Env)>,
    ) -> Result<App, StartError> {
        Self::start_with(
            settings,
            listener,
            StartOptions {
                source,
                ..StartOptions::default()
            },
        )
    }

    /// Like [`App::start`], with a web config (watched for changes), tuned server limits and
    /// the reload source. Every project id must be known: see [`App::launch`] for settings with
    /// ids still to be looked up from regions.
    pub fn start_with(
        settings: &Settings,
        listener: TcpListener,
        options: StartOptions,
    ) -> Result<App, StartError> {
        let store = Arc::new(SnapshotStore::new(queue_keys(
            settings,
            options.shard.as_ref(),
        )));
        let metrics = Arc::new(Metrics::new(store.clone(), collector_options(settings))?);
        Self::assemble(
            settings,
            settings.clone(),
            listener,
            options,
            store,
            metrics,
        )
    }

    /// Looks up the project ids of entries that give only a region (the requests counted in the
    /// exporter's own API metrics), then starts as [`App::start_with`]. A failed lookup is a
    /// start-up error naming the entry and the region.
    pub async fn launch(
        mut settings: Settings,
        listener: TcpListener,
        options: StartOptions,
    ) -> Result<App, StartError> {
        let store = Arc::new(SnapshotStore::new([]));
        let metrics = Arc::new(Metrics::new(store.clone(), collector_options(&settings))?);
        let loaded = settings.clone();
        resolve_project_ids(&mut settings, metrics.observer()).await?;
        Self::assemble(&settings, loaded, listener, options, store, metrics)
    }

    /// `loaded`: `settings` as the file gave them, before project ids were looked up.
    fn assemble(
        settings: &Settings,
        loaded: Settings,
        listener: TcpListener,
        options: StartOptions,
        store: Arc<SnapshotStore>,
        metrics: Arc<Metrics>,
    ) -> Result<App, StartError> {
        let StartOptions {
            source,
            web,
            web_config_poll,
            limits,
            enable_lifecycle,
            file_web,
            shard,
        } = options;
        if let Some(s) = &shard {
            metrics.set_shard(s.ordinal(), s.total());
        }
        let addr = listener.local_addr()?;
        // Readiness waits for the first discoveries from the first request on.
        store.set_queue_list_projects(
            settings
                .projects
                .iter()
                .map(|p| (p.project_id.clone(), p.discover.is_some())),
        );
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let control = Arc::new_cyclic(|this| Control {
            this: this.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            tasks: tasks.clone(),
            shutdown: shutdown.clone(),
            source,
            web: web.clone(),
            shard,
            running: tokio::sync::Mutex::new(Running::new(
                settings.clone(),
                file_web.unwrap_or_else(|| settings.web.clone()),
            )),
        });
        let reload: ReloadFn = {
            let control = Arc::downgrade(&control);
            Arc::new(move || {
                let control = control.clone();
                Box::pin(async move {
                    match control.upgrade() {
                        Some(c) => c.reload().await.map_err(|e| e.to_string()),
                        None => Err("the exporter is shutting down".to_string()),
                    }
                })
            })
        };
        let mut state = ServerState::with_options(
            metrics.clone(),
            store.clone(),
            settings.web.telemetry_path.clone(),
            Some(reload.clone()),
            web.clone(),
            limits,
        );
        state.lifecycle_api = enable_lifecycle;
        let state = Arc::new(state);
        // The queues are set before the first request is served (the port is bound already, so
        // early connections wait): /-/ready must not see an empty set and answer 200.
        {
            let mut running = control
                .running
                .try_lock()
                .map_err(|_| std::io::Error::other("reload state busy at start"))?;
            let plan = control.plan(settings.clone(), loaded, &running)?;
            control.apply(plan, &mut running);
        }
        tasks.spawn(server::serve(listener, state, shutdown.clone()));
        if let Some(web) = web {
            tasks.spawn(web.watch(web_config_poll, shutdown.clone()));
        }
        Ok(App {
            addr,
            store,
            metrics,
            control,
            reload,
        })
    }

    /// Re-reads the config file; on any error the running configuration stays as it was.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        self.control.reload().await
    }

    /// A handle that triggers a reload (for SIGHUP); it does nothing once the app is gone.
    pub fn reload_handle(&self) -> ReloadFn {
        self.reload.clone()
    }

    /// A token that stops the exporter when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.control.shutdown.clone()
    }

    /// Stops accepting, lets in-flight scrapes finish, cancels polls, and waits for all of it.
    pub async fn shutdown(self) {
        self.control.shutdown.cancel();
        self.control.tasks.close();
        self.control.tasks.wait().await;
    }

    /// Waits until something cancels the shutdown token, then shuts down.
    pub async fn run_until_cancelled(self) {
        self.control.shutdown.cancelled().await;
        self.shutdown().await;
    }
}

/// What `--once` did: the exposition, each queue's poll, and the error of each failed queue
/// list (discovery and the queue metrics).
pub struct OnceReport {
    pub exposition: Vec<u8>,
    pub polls: Vec<PollOutcome>,
    pub list_errors: Vec<String>,
}

/// `--once`: looks up project ids, discovers queues, polls every queue (of `shard`, when given)
/// once and returns the exposition and each outcome.
pub async fn poll_once(
    settings: &Settings,
    shard: Option<&Shard>,
) -> Result<OnceReport, StartError> {
    let mut settings = settings.clone();
    let store = Arc::new(SnapshotStore::new([]));
    let metrics = Metrics::new(store.clone(), collector_options(&settings))?;
    if let Some(s) = shard {
        metrics.set_shard(s.ordinal(), s.total());
    }
    resolve_project_ids(&mut settings, metrics.observer()).await?;
    let clients = build_clients(&settings, &metrics)?;
    let (targets, list_errors) = discover_targets(&settings, &clients, &store, shard).await;
    let context = PollContext::from_settings(store, &settings);
    let polls = scheduler::poll_all_once(&targets, &context).await;
    Ok(OnceReport {
        exposition: metrics.render(),
        polls,
        list_errors,
    })
}
