//! `[state]`: where rate limits are counted (in this process, or in a Redis shared by every
//! replica) and what a call gets when that store cannot answer (`docs/rate-limits.md`). The
//! section is the library's `StateConfig`, read as it is and validated by it.

use policy_layer::state::{StateConfig, StateSettings};

use super::error::KeyError;

/// The section as written.
pub type StateSection = StateConfig;

/// Validates the section.
///
/// # Errors
/// A [`KeyError`] naming the key (`state.on_error: expected one of deny, allow, got "x"`).
pub fn settings(section: &StateSection) -> Result<StateSettings, KeyError> {
    section.validate().map_err(|e| {
        let key = e.key();
        let message = e.to_string();
        let message = message
            .strip_prefix(&format!("state.{key}: "))
            .unwrap_or(&message)
            .to_owned();
        KeyError::new(state_key(key), message)
    })
}

/// `state.<key>` as a static string (a [`KeyError`] names its key so).
fn state_key(key: &'static str) -> &'static str {
    match key {
        "url" => "state.url",
        "on_error" => "state.on_error",
        "timeout_ms" => "state.timeout_ms",
        "pool_size" => "state.pool_size",
        "max_keys" => "state.max_keys",
        "key_prefix" => "state.key_prefix",
        "connection_lease_secs" => "state.connection_lease_secs",
        _ => "state",
    }
}
