//! Policy hot reload: file notifications (`notify`) plus a poll of sizes and modification
//! times every `reload_poll_ms` as a fallback (network file systems, missed events).
//!
//! On a change every file is read and loaded again; a set that loads is swapped in
//! atomically, a set that does not is logged with its positions and counted, and the last good
//! set stays active.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use policy_layer::PolicySource;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::engine::EngineFeed;
use super::pins;
use super::policy_files::{self, PolicyFilesError};
use crate::observe::metrics::Metrics;

/// Quiet time after a file event before reloading, so an editor's burst of writes is read once.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Watches the policy paths and reloads on change until `shutdown`.
pub struct Reloader {
    paths: Vec<PathBuf>,
    feed: EngineFeed,
    metrics: Arc<Metrics>,
    poll: Duration,
    last_sources: Vec<PolicySource>,
    /// `policy.tools_lock`, re-read when its stamp changes.
    lock: Option<PathBuf>,
    lock_stamp: Option<(u64, Option<std::time::SystemTime>)>,
}

impl Reloader {
    /// A reloader whose current set was loaded from `sources`.
    #[must_use]
    pub fn new(
        paths: Vec<PathBuf>,
        feed: EngineFeed,
        metrics: Arc<Metrics>,
        poll: Duration,
        sources: Vec<PolicySource>,
    ) -> Self {
        Self {
            paths,
            feed,
            metrics,
            poll,
            last_sources: sources,
            lock: None,
            lock_stamp: None,
        }
    }

    /// Also re-reads `tools.lock` at `path` when it changes (it was read at start).
    #[must_use]
    pub fn with_lock(mut self, path: Option<PathBuf>) -> Self {
        self.lock_stamp = path.as_deref().and_then(pins::stamp);
        self.lock = path;
        self
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let changed = Arc::new(Notify::new());
        // Kept alive for the life of the loop; `None` when notifications are unavailable.
        let watched: Vec<PathBuf> = self.paths.iter().chain(&self.lock).cloned().collect();
        let _watcher = watch(&watched, Arc::clone(&changed));
        let mut fingerprint = policy_files::fingerprint(&self.paths);
        let mut poll = tokio::time::interval(self.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = changed.notified() => {
                    tokio::time::sleep(DEBOUNCE).await;
                }
                _ = poll.tick() => {
                    let paths = self.paths.clone();
                    let now = tokio::task::spawn_blocking(move || policy_files::fingerprint(&paths))
                        .await
                        .unwrap_or_default();
                    let lock = self.lock.as_deref().and_then(pins::stamp);
                    if now == fingerprint && lock == self.lock_stamp {
                        continue;
                    }
                }
            }
            fingerprint = policy_files::fingerprint(&self.paths);
            self.reload().await;
        }
    }

    async fn reload(&mut self) {
        self.reload_lock();
        let paths = self.paths.clone();
        let read = tokio::task::spawn_blocking(move || {
            policy_files::discover(&paths, false)
                .and_then(|files| policy_files::read_sources(&files))
        })
        .await;
        let sources = match read {
            Ok(Ok(sources)) => sources,
            Ok(Err(e)) => return self.failed(&e),
            Err(e) => {
                tracing::error!(error = %e, "policy reload task failed");
                return;
            }
        };
        if sources == self.last_sources {
            return;
        }
        match policy_layer::engine::load(&sources) {
            Ok(loaded) => {
                let count = loaded.policies.len();
                // Validation (and the semantic analysis) may take seconds: off the runtime.
                let feed = self.feed.clone();
                let set = tokio::task::spawn_blocking(move || feed.set_policies(loaded)).await;
                let Ok(set) = set else {
                    tracing::error!("policy validation task failed; keeping the last good set");
                    return;
                };
                if let Err(refused) = set {
                    self.failed(&PolicyFilesError::Refused(refused));
                    self.last_sources = sources;
                    return;
                }
                self.metrics.reload(Some(count));
                if count == 0 {
                    tracing::warn!("policies reloaded: the set is empty, every call is denied");
                } else {
                    tracing::info!(policies = count, files = sources.len(), "policies reloaded");
                }
            }
            Err(e) => self.failed(&PolicyFilesError::Load(e)),
        }
        self.last_sources = sources;
    }

    /// Re-reads `tools.lock` if it changed; one that does not read keeps the last good lock
    /// enforced.
    fn reload_lock(&mut self) {
        let Some(path) = &self.lock else {
            return;
        };
        let stamp = pins::stamp(path);
        if stamp == self.lock_stamp {
            return;
        }
        self.lock_stamp = stamp;
        match pins::read_lock(path) {
            Ok(lock) => {
                tracing::info!(pinned = lock.len(), "tools.lock reloaded");
                self.feed.engine().set_tools_lock(Some(lock));
                self.feed.count_unpinned();
                let count = self
                    .feed
                    .engine()
                    .snapshot()
                    .map_or(0, |s| s.policies().policies.len());
                self.metrics.reload(Some(count));
            }
            Err(e) => {
                self.metrics.reload(None);
                tracing::error!("tools.lock reload failed, keeping the last good lock: {e}");
            }
        }
    }

    fn failed(&self, error: &PolicyFilesError) {
        self.metrics.reload(None);
        match error {
            PolicyFilesError::Load(errors) => {
                for e in &errors.0 {
                    tracing::error!("policy reload failed, keeping the last good set: {e}");
                }
            }
            PolicyFilesError::Refused(refused) => {
                for finding in &refused.findings {
                    tracing::error!(
                        "policy reload refused by validation, keeping the last good set: {finding}"
                    );
                }
            }
            PolicyFilesError::Io { .. } => {
                tracing::error!("policy reload failed, keeping the last good set: {error}");
            }
        }
    }
}

/// Starts file notifications for `paths`: folders recursively, files through their parent
/// folder (editors and ConfigMap updates replace files rather than write them in place).
pub(crate) fn watch(paths: &[PathBuf], changed: Arc<Notify>) -> Option<RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            changed.notify_one();
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "file notifications unavailable; polling only"))
    .ok()?;
    for path in paths {
        let (target, mode) = if path.is_dir() {
            (path.as_path(), RecursiveMode::Recursive)
        } else {
            (
                path.parent().unwrap_or(Path::new(".")),
                RecursiveMode::NonRecursive,
            )
        };
        if let Err(e) = watcher.watch(target, mode) {
            tracing::warn!(path = %target.display(), error = %e, "cannot watch; polling only");
        }
    }
    Some(watcher)
}
