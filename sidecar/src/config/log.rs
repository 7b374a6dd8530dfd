//! `[log]`: the decision log on stdout and the sidecar's own log on stderr.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default tracing filter of the sidecar's own (non-decision) log on stderr.
pub const DEFAULT_FILTER: &str = "warn,policy_sidecar=info";

/// The section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    decisions: Option<bool>,
    log_arguments: Option<bool>,
    record_arguments_to: Option<PathBuf>,
    filter: Option<String>,
}

/// The logs' settings.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// Whether decisions are logged as JSON lines on stdout.
    pub decisions: bool,
    /// Whether the decision log carries the call arguments.
    pub arguments: bool,
    /// The recording file for `policy-sidecar replay` (`docs/replay.md`): every decided call
    /// with its caller's claims and arguments; `None`: no recording.
    pub record_arguments_to: Option<PathBuf>,
    /// Tracing filter of the sidecar's own log.
    pub filter: String,
}

impl LogSection {
    /// The section with its defaults (every value is usable); a relative recording path
    /// resolves against `base`, the config file's folder.
    #[must_use]
    pub fn settings(self, base: &Path) -> LogSettings {
        LogSettings {
            decisions: self.decisions.unwrap_or(true),
            arguments: self.log_arguments.unwrap_or(false),
            record_arguments_to: self.record_arguments_to.map(|path| base.join(path)),
            filter: self.filter.unwrap_or_else(|| DEFAULT_FILTER.to_owned()),
        }
    }
}
