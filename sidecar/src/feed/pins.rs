//! `tools.lock` (`policy.tools_lock`): read at start and re-read with the policy files; the
//! engine enforces it (`docs/pinning.md`).

use std::path::Path;

use policy_layer::model::ToolsLock;

/// Reads and parses the lock at `path`.
///
/// # Errors
/// The path and what is wrong (unreadable, not a lock).
pub fn read_lock(path: &Path) -> Result<ToolsLock, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("policy.tools_lock: {}: {e}", path.display()))?;
    ToolsLock::parse(&text).map_err(|e| format!("policy.tools_lock: {}: {e}", path.display()))
}

/// The lock's size and modification time: a change of either re-reads it.
#[must_use]
pub fn stamp(path: &Path) -> Option<(u64, Option<std::time::SystemTime>)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()))
}
