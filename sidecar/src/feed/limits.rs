//! Rate limit hot reload: the config file is watched (file notifications, and a read every
//! `policy.reload_poll_ms` as a fallback) and, when it changes, read and validated again
//! whole. A file that validates replaces the `[[rate_limit]]` tables and `state.on_error`
//! atomically (`Limits::replace`: counters and held slots carry over by limit id); one that
//! does not is logged and counted, and the current limits stay.
//!
//! Every other key is read at start only: a change to one of them is logged as needing a
//! restart, and not applied.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use policy_layer::limit::Limits;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::reload::{DEBOUNCE, watch};
use crate::config::Config;
use crate::observe::metrics::Metrics;

/// Watches the config file and replaces the rate limits when it changes, until `shutdown`.
pub struct LimitsReloader {
    file: PathBuf,
    limits: Limits,
    metrics: Arc<Metrics>,
    poll: Duration,
    /// The text last read, and its keys that need a restart.
    last: Option<(String, toml::Table)>,
}

impl LimitsReloader {
    /// A reloader of `file` (the config the sidecar started with) for `limits`.
    #[must_use]
    pub fn new(file: PathBuf, limits: Limits, metrics: Arc<Metrics>, poll: Duration) -> Self {
        let last = std::fs::read_to_string(&file).ok().map(|text| {
            let keys = restart_keys(&text);
            (text, keys)
        });
        Self {
            file,
            limits,
            metrics,
            poll,
            last,
        }
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let changed = Arc::new(Notify::new());
        let _watcher = watch(std::slice::from_ref(&self.file), Arc::clone(&changed));
        let mut poll = tokio::time::interval(self.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = changed.notified() => tokio::time::sleep(DEBOUNCE).await,
                _ = poll.tick() => {}
            }
            let file = self.file.clone();
            let Ok(read) = tokio::task::spawn_blocking(move || std::fs::read_to_string(file)).await
            else {
                continue;
            };
            match read {
                Ok(text) => self.reload(text),
                Err(e) => {
                    tracing::debug!(error = %e, file = %self.file.display(), "config file not readable; keeping the rate limits")
                }
            }
        }
    }

    /// Applies `text`, the config file's new content, if it changed.
    fn reload(&mut self, text: String) {
        if self.last.as_ref().is_some_and(|(last, _)| *last == text) {
            return;
        }
        match Config::from_text(&self.file, &text, std::env::vars()) {
            Ok(config) => {
                let count = config.rate_limits.limits().len();
                self.limits
                    .replace(config.rate_limits, config.state.on_error);
                self.metrics.limits_reload(Some(count));
                tracing::info!(
                    rate_limits = count,
                    on_error = config.state.on_error.as_str(),
                    "rate limits reloaded"
                );
                let keys = restart_keys(&text);
                if self.last.as_ref().is_some_and(|(_, last)| *last != keys) {
                    tracing::warn!(
                        file = %self.file.display(),
                        "the config file changed beyond [[rate_limit]] and state.on_error: those changes apply at the next restart"
                    );
                }
                self.last = Some((text, keys));
            }
            Err(e) => {
                self.metrics.limits_reload(None);
                tracing::error!("config reload failed, keeping the current rate limits: {e}");
                let keys = self
                    .last
                    .take()
                    .map_or_else(toml::Table::new, |(_, keys)| keys);
                self.last = Some((text, keys));
            }
        }
    }
}

/// The keys of a config text that apply only at start: all but `[[rate_limit]]` and
/// `state.on_error` (empty when the text does not parse).
fn restart_keys(text: &str) -> toml::Table {
    let mut table: toml::Table = text.parse().unwrap_or_default();
    table.remove("rate_limit");
    if let Some(toml::Value::Table(state)) = table.get_mut("state") {
        state.remove("on_error");
        if state.is_empty() {
            table.remove("state");
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use policy_layer::limit::LimitSet;
    use policy_layer::state::{MemorySettings, OnError, Store};

    use super::*;

    const BASE: &str = r#"
[upstream]
url = "http://127.0.0.1:3000/mcp"
[gateway]
id = "gw"
target = "RefundTool"
[auth]
mode = "none"
"#;

    fn reloader(dir: &tempfile::TempDir, text: &str) -> LimitsReloader {
        let file = dir.path().join("policy-sidecar.toml");
        std::fs::write(&file, text).expect("write");
        let limits = Limits::new(
            LimitSet::default(),
            Store::memory(MemorySettings::default()),
            OnError::Deny,
        );
        LimitsReloader::new(
            file,
            limits,
            Arc::new(Metrics::new()),
            Duration::from_secs(1),
        )
    }

    #[test]
    fn a_valid_edit_replaces_the_limits_and_a_broken_one_keeps_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut reloader = reloader(&dir, BASE);
        assert!(reloader.limits.is_empty());
        reloader.reload(format!(
            "{BASE}\n[[rate_limit]]\nid = \"refunds\"\ntool = \"process_refund\"\nrate = 1\nper = \"second\"\n"
        ));
        assert_eq!(reloader.limits.matching("process_refund").len(), 1);
        reloader.reload(format!(
            "{BASE}\n[[rate_limit]]\nid = \"bad/id\"\nrate = 1\nper = \"second\"\n"
        ));
        assert_eq!(
            reloader.limits.matching("process_refund").len(),
            1,
            "a broken edit keeps the last good limits"
        );
        let metrics = reloader.metrics.encode();
        assert!(
            metrics.contains(r#"mcp_policy_rate_limit_reloads_total{result="failure"} 1"#),
            "{metrics}"
        );
        reloader.reload(format!("{BASE}\n[state]\non_error = \"allow\"\n"));
        assert!(
            reloader.limits.is_empty(),
            "limits removed from the file are gone"
        );
        assert_eq!(reloader.limits.on_error(), OnError::Allow);
    }

    #[test]
    fn only_rate_limits_and_on_error_apply_without_a_restart() {
        let a = restart_keys(&format!(
            "{BASE}\n[state]\non_error = \"allow\"\n[[rate_limit]]\nid = \"x\"\nrate = 1\nper = \"second\"\n"
        ));
        assert_eq!(a, restart_keys(BASE));
        let b = restart_keys(&format!(
            "{BASE}\n[state]\nurl = \"redis://127.0.0.1:1/0\"\n"
        ));
        assert_ne!(b, restart_keys(BASE));
    }
}
