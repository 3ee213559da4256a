//! [`WebConfigWatcher`]: the web config in force, re-read when the file or any file it names
//! changes; broken new files keep the previous settings.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::{ActiveWebConfig, WebConfigError, load};

/// A digest of the contents of `paths` (a missing file counts as its error).
fn fingerprint(paths: &[PathBuf]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in paths {
        h.update(p.as_os_str().as_encoded_bytes());
        match std::fs::read(p) {
            Ok(bytes) => {
                h.update([1u8]);
                h.update((bytes.len() as u64).to_le_bytes());
                h.update(&bytes);
            }
            Err(e) => {
                h.update([0u8]);
                h.update(e.kind().to_string().as_bytes());
            }
        }
    }
    h.finalize().into()
}

struct WatchState {
    /// The web config file and every file its last load attempt named.
    watched: Vec<PathBuf>,
    /// Their fingerprint at that attempt.
    seen: [u8; 32],
    /// Why that attempt failed, if it did (the previous settings are still in force).
    failed: Option<WebConfigError>,
}

/// The web config in force, re-read when its files change.
pub struct WebConfigWatcher {
    path: PathBuf,
    current: ArcSwap<ActiveWebConfig>,
    state: Mutex<WatchState>,
}

impl fmt::Debug for WebConfigWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfigWatcher")
            .field("path", &self.path)
            .field("current", &*self.current.load())
            .finish()
    }
}

impl WebConfigWatcher {
    /// Loads `path`; an error here should stop start-up.
    pub fn load(path: &Path) -> Result<Arc<WebConfigWatcher>, WebConfigError> {
        let mut watched = vec![path.to_path_buf()];
        let config = load(path, &mut watched)?;
        let seen = fingerprint(&watched);
        for w in &config.warnings {
            tracing::warn!(web_config = %path.display(), "{w}");
        }
        Ok(Arc::new(WebConfigWatcher {
            path: path.to_path_buf(),
            current: ArcSwap::from_pointee(config),
            state: Mutex::new(WatchState {
                watched,
                seen,
                failed: None,
            }),
        }))
    }

    /// The web config file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The settings in force.
    pub fn current(&self) -> Arc<ActiveWebConfig> {
        self.current.load_full()
    }

    /// Re-reads the files when any of them changed since the last attempt. `Ok(true)`: new
    /// settings are in force; `Ok(false)`: nothing changed; `Err`: the files are broken and the
    /// previous settings stay (also when they were already broken at the last attempt, so a
    /// reload reports it). Blocking file I/O.
    pub fn check(&self) -> Result<bool, WebConfigError> {
        self.refresh(true)
    }

    /// `report_stale`: return the error of an unchanged broken file again.
    fn refresh(&self, report_stale: bool) -> Result<bool, WebConfigError> {
        let mut state = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = fingerprint(&state.watched);
        if now == state.seen {
            return match (&state.failed, report_stale) {
                (Some(e), true) => Err(e.clone()),
                _ => Ok(false),
            };
        }
        let mut watched = vec![self.path.clone()];
        let result = load(&self.path, &mut watched);
        state.seen = fingerprint(&watched);
        state.watched = watched;
        state.failed = result.as_ref().err().cloned();
        let config = result?;
        for w in &config.warnings {
            tracing::warn!(web_config = %self.path.display(), "{w}");
        }
        tracing::info!(web_config = %self.path.display(), settings = %config.summary(), "web config reloaded");
        self.current.store(Arc::new(config));
        Ok(true)
    }

    /// [`WebConfigWatcher::check`] on the blocking pool, logging a failure.
    pub async fn check_and_log(self: &Arc<Self>) -> Result<bool, WebConfigError> {
        self.refresh_and_log(true).await
    }

    async fn refresh_and_log(self: &Arc<Self>, report_stale: bool) -> Result<bool, WebConfigError> {
        let me = self.clone();
        let result = match tokio::task::spawn_blocking(move || me.refresh(report_stale)).await {
            Ok(r) => r,
            Err(e) => Err(WebConfigError {
                file: self.path.clone(),
                key: String::new(),
                message: format!("reload task failed: {e}"),
            }),
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, "web config not reloaded; the previous settings stay in force");
        }
        result
    }

    /// Checks for changes every `interval` until `stop` fires.
    pub async fn watch(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            // A broken file is logged once per change, not every interval.
            let _ = self.refresh_and_log(false).await;
        }
    }
}
