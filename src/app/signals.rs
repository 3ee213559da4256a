//! Unix signals of the daemon: SIGTERM/SIGINT end it, SIGHUP reloads the configuration.
//!
//! It only turns signals into calls; what shutdown and reload do belongs to `app`.

use crate::web::server::ReloadFn;

/// Resolves on the first SIGINT or SIGTERM (SIGINT only where SIGTERM cannot be watched).
pub async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the exporter");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Calls `reload` on every SIGHUP, for as long as the runtime runs. The outcome is logged and
/// exported by the reload itself.
pub fn reload_on_sighup(reload: ReloadFn) {
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the configuration");
                    let _ = reload().await;
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot watch SIGHUP; use POST /-/reload"),
    }
    #[cfg(not(unix))]
    drop(reload);
}
