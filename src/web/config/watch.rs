//! [`WebConfigWatcher`]: the web config in force, re-read when the file or any file it names
//! changes; broken new files keep the previous settings.
//!
//! What was loaded is fingerprinted from the very bytes that were read ([`Watched`]), never by
//! reading the files a second time: a certificate replaced between loading and fingerprinting
//! would otherwise look already seen, and the change would be missed for good. A reload can
//! check the files without putting them in force ([`WebConfigWatcher::prepare`]) and install
//! them only when the rest of the reload succeeded ([`WebConfigWatcher::install`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::{ActiveWebConfig, WebConfigError, load};

/// The files a load attempt read, each with a digest of exactly what was read (or of why it
/// could not be read).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Watched(Vec<(PathBuf, [u8; 32])>);

/// A digest of one read's outcome: the bytes, or the kind of error.
fn digest_of(read: &std::io::Result<Vec<u8>>) -> [u8; 32] {
    let mut h = Sha256::new();
    match read {
        Ok(bytes) => {
            h.update([1u8]);
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        }
        Err(e) => {
            h.update([0u8]);
            h.update(e.kind().to_string().as_bytes());
        }
    }
    h.finalize().into()
}

impl Watched {
    /// Reads `path` and records what was read.
    pub fn read(&mut self, path: &Path) -> std::io::Result<Vec<u8>> {
        let read = std::fs::read(path);
        self.0.push((path.to_path_buf(), digest_of(&read)));
        read
    }

    /// The files read, in order.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.0.iter().map(|(p, _)| p.as_path())
    }

    /// A digest of everything that was read.
    fn fingerprint(&self) -> [u8; 32] {
        combine(self.0.iter().map(|(p, d)| (p.as_path(), *d)))
    }

    /// The same digest over the files as they are now: it differs from
    /// [`Watched::fingerprint`] as soon as any of them changed since it was read.
    fn fingerprint_now(&self) -> [u8; 32] {
        combine(
            self.0
                .iter()
                .map(|(p, _)| (p.as_path(), digest_of(&std::fs::read(p)))),
        )
    }
}

fn combine<'a>(files: impl Iterator<Item = (&'a Path, [u8; 32])>) -> [u8; 32] {
    let mut h = Sha256::new();
    for (path, digest) in files {
        h.update(path.as_os_str().as_encoded_bytes());
        h.update([0u8]);
        h.update(digest);
    }
    h.finalize().into()
}

struct WatchState {
    /// The web config file and every file its last load attempt named, with what was read.
    watched: Watched,
    /// Why that attempt failed, if it did (the previous settings are still in force).
    failed: Option<WebConfigError>,
}

/// A web config read from its files and valid, not yet in force.
pub struct PreparedWebConfig {
    config: ActiveWebConfig,
    watched: Watched,
}

impl fmt::Debug for PreparedWebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedWebConfig")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
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
        let mut watched = Watched::default();
        let config = load(path, &mut watched)?;
        for w in &config.warnings {
            tracing::warn!(web_config = %path.display(), "{w}");
        }
        Ok(Arc::new(WebConfigWatcher {
            path: path.to_path_buf(),
            current: ArcSwap::from_pointee(config),
            state: Mutex::new(WatchState {
                watched,
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

    fn state(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Re-reads the files when any of them changed since the last attempt. `Ok(true)`: new
    /// settings are in force; `Ok(false)`: nothing changed; `Err`: the files are broken and the
    /// previous settings stay (also when they were already broken at the last attempt, so a
    /// reload reports it). Blocking file I/O.
    pub fn check(&self) -> Result<bool, WebConfigError> {
        self.refresh(true)
    }

    /// Reads the files, if any changed since they were last read, and checks them without
    /// putting them in force: `Ok(Some)` to [`install`](Self::install), `Ok(None)` when nothing
    /// changed (and the settings in force are those of the files), `Err` when they are broken
    /// (also when unchanged since they were found broken). A broken attempt is remembered, so the
    /// periodic check logs it once. Blocking file I/O.
    pub fn prepare(&self) -> Result<Option<PreparedWebConfig>, WebConfigError> {
        self.prepare_inner(true)
    }

    fn prepare_inner(
        &self,
        report_stale: bool,
    ) -> Result<Option<PreparedWebConfig>, WebConfigError> {
        let (unchanged, failed) = {
            let state = self.state();
            (
                state.watched.fingerprint_now() == state.watched.fingerprint(),
                state.failed.clone(),
            )
        };
        if unchanged {
            return match (failed, report_stale) {
                (Some(e), true) => Err(e),
                _ => Ok(None),
            };
        }
        let mut watched = Watched::default();
        match load(&self.path, &mut watched) {
            Ok(config) => Ok(Some(PreparedWebConfig { config, watched })),
            Err(e) => {
                let mut state = self.state();
                state.watched = watched;
                state.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Puts a prepared web config in force for new connections and requests.
    pub fn install(&self, prepared: PreparedWebConfig) {
        let PreparedWebConfig { config, watched } = prepared;
        for w in &config.warnings {
            tracing::warn!(web_config = %self.path.display(), "{w}");
        }
        tracing::info!(web_config = %self.path.display(), settings = %config.summary(), "web config reloaded");
        let mut state = self.state();
        state.watched = watched;
        state.failed = None;
        self.current.store(Arc::new(config));
    }

    /// `report_stale`: return the error of an unchanged broken file again.
    fn refresh(&self, report_stale: bool) -> Result<bool, WebConfigError> {
        match self.prepare_inner(report_stale)? {
            Some(prepared) => {
                self.install(prepared);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// [`WebConfigWatcher::check`] on the blocking pool, logging a failure.
    pub async fn check_and_log(self: &Arc<Self>) -> Result<bool, WebConfigError> {
        self.refresh_and_log(true).await
    }

    fn task_failed(&self, e: tokio::task::JoinError) -> WebConfigError {
        WebConfigError {
            file: self.path.clone(),
            key: String::new(),
            message: format!("reload task failed: {e}"),
        }
    }

    async fn refresh_and_log(self: &Arc<Self>, report_stale: bool) -> Result<bool, WebConfigError> {
        let me = self.clone();
        let result = match tokio::task::spawn_blocking(move || me.refresh(report_stale)).await {
            Ok(r) => r,
            Err(e) => Err(self.task_failed(e)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_was_read_is_what_is_fingerprinted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("web.yml");
        std::fs::write(&file, "rate_limit:\n  interval: 1s\n  burst: 1\n").expect("write");
        let mut watched = Watched::default();
        let bytes = watched.read(&file).expect("read");
        // The file is replaced after it was read (and before anything else looks at it): the
        // record still stands for the old bytes, so the change is seen.
        std::fs::write(&file, "rate_limit:\n  interval: 2s\n  burst: 1\n").expect("write");
        assert_ne!(watched.fingerprint(), watched.fingerprint_now());
        assert_eq!(watched.paths().collect::<Vec<_>>(), vec![file.as_path()]);
        // Reading the new bytes again records them: now nothing changed.
        let mut again = Watched::default();
        assert_ne!(again.read(&file).expect("read"), bytes);
        assert_eq!(again.fingerprint(), again.fingerprint_now());
    }

    #[test]
    fn a_missing_file_counts_as_its_error_and_its_arrival_is_seen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("cert.pem");
        let mut watched = Watched::default();
        assert!(watched.read(&file).is_err());
        assert_eq!(watched.fingerprint(), watched.fingerprint_now());
        std::fs::write(&file, "x").expect("write");
        assert_ne!(watched.fingerprint(), watched.fingerprint_now());
    }

    #[test]
    fn prepare_does_not_put_anything_in_force() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("web.yml");
        std::fs::write(&file, "{}\n").expect("write");
        let w = WebConfigWatcher::load(&file).expect("loads");
        assert!(w.prepare().expect("fine").is_none(), "nothing changed");
        std::fs::write(&file, "rate_limit:\n  interval: 1s\n  burst: 3\n").expect("write");
        let prepared = w.prepare().expect("valid").expect("changed");
        assert!(
            w.current().rate_limit.is_none(),
            "not in force before install"
        );
        // Not installed: still a change for the next look.
        assert!(w.prepare().expect("valid").is_some());
        w.install(prepared);
        assert!(w.current().rate_limit.is_some());
        assert!(w.prepare().expect("fine").is_none());
        std::fs::write(&file, "nope: 1\n").expect("write");
        assert!(w.prepare().is_err());
        assert!(w.check().is_err(), "a broken file stays reported");
        assert!(
            w.current().rate_limit.is_some(),
            "the previous settings stay"
        );
    }
}
