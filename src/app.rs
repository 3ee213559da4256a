//! Wiring of the daemon: builds the store, metrics, clients and pollers from [`Settings`],
//! serves HTTP on an already bound listener, and stops everything on shutdown. Also the
//! one-shot poll behind `--once`.
//!
//! It owns start-up order (listen first, then poll) and shutdown order (stop accepting, let
//! scrapes finish, cancel polls). Flags, config files and logging belong to `main`/`cli`.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::dli::client::ClientBuildError;
use crate::dli::{ClientOptions, DliClient};
use crate::metrics::{CollectorOptions, Metrics};
use crate::poll::scheduler::{self, Clients, PollContext, PollOutcome};
use crate::server::{self, ServerState};
use crate::store::{QueueKey, SnapshotStore};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Client(#[from] ClientBuildError),
    #[error("cannot create metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot read the listening address: {0}")]
    Listener(#[from] std::io::Error),
}

/// The parts of a running exporter that tests and `main` look at.
pub struct Core {
    pub store: Arc<SnapshotStore>,
    pub metrics: Arc<Metrics>,
    pub clients: Clients,
    pub context: PollContext,
}

/// Builds store, metrics and one client per project; all clients share one request limit.
pub fn build_core(settings: &Settings) -> Result<Core, StartError> {
    let keys = settings.projects.iter().flat_map(|p| {
        p.queues
            .iter()
            .map(move |q| QueueKey::new(&p.project_id, q))
    });
    let store = Arc::new(SnapshotStore::new(keys));
    let metrics = Arc::new(Metrics::new(
        store.clone(),
        CollectorOptions {
            owner_breakdown: settings.metrics.owner_breakdown,
            stale_after: settings.poll.stale_after,
        },
    )?);
    let limit = Arc::new(Semaphore::new(settings.poll.concurrency as usize));
    let options = ClientOptions::new(settings.poll.request_timeout);
    let mut clients = Clients::new();
    for project in &settings.projects {
        if clients.contains_key(&project.project_id) {
            continue;
        }
        let client = DliClient::new(project, &options, limit.clone(), metrics.observer())?;
        clients.insert(project.project_id.clone(), Arc::new(client));
    }
    let context = PollContext::new(
        store.clone(),
        &settings.poll,
        settings.metrics.max_owners_per_queue,
    );
    Ok(Core {
        store,
        metrics,
        clients,
        context,
    })
}

/// A running exporter: HTTP server plus pollers.
pub struct App {
    pub addr: SocketAddr,
    pub store: Arc<SnapshotStore>,
    pub metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl App {
    /// Starts serving on `listener` (already bound, so the port is open before the first poll)
    /// and starts polling every queue.
    pub fn start(settings: &Settings, listener: TcpListener) -> Result<App, StartError> {
        let core = build_core(settings)?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let state = Arc::new(ServerState {
            metrics: core.metrics.clone(),
            store: core.store.clone(),
            telemetry_path: settings.web.telemetry_path.clone(),
        });
        tracker.spawn(server::serve(listener, state, shutdown.clone()));
        let targets = scheduler::queue_targets(settings, &core.clients);
        scheduler::spawn_pollers(
            targets,
            core.context,
            settings.poll.interval,
            shutdown.child_token(),
            &tracker,
        );
        tracker.close();
        Ok(App {
            addr,
            store: core.store,
            metrics: core.metrics,
            shutdown,
            tracker,
        })
    }

    /// A token that stops the exporter when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, lets in-flight scrapes finish, cancels polls, and waits for all of it.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tracker.wait().await;
    }

    /// Waits until something cancels the shutdown token, then shuts down.
    pub async fn run_until_cancelled(self) {
        self.shutdown.cancelled().await;
        self.shutdown().await;
    }
}

/// `--once`: polls every queue one time and returns the exposition and each queue's outcome.
pub async fn poll_once(settings: &Settings) -> Result<(Vec<u8>, Vec<PollOutcome>), StartError> {
    let core = build_core(settings)?;
    let targets = scheduler::queue_targets(settings, &core.clients);
    let outcomes = scheduler::poll_all_once(&targets, &core.context).await;
    Ok((core.metrics.render(), outcomes))
}
