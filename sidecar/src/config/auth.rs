//! `[auth]`: who may call. The section is the library's `AuthConfig`, read as it is; the
//! library checks it when the authenticator starts.

use std::path::Path;

use policy_layer::auth::AuthConfig;

use super::error::KeyError;

/// The words of `auth.mode`.
pub const MODES: &[&str] = &["jwt", "none"];

/// Checks an `auth.mode` word before the section is read, so that an unknown mode is named
/// like every other setting word (`auth.mode: expected one of jwt, none, got "x"`).
///
/// # Errors
/// The word is not one of [`MODES`].
pub fn check_mode(mode: &str) -> Result<(), KeyError> {
    if MODES.contains(&mode) {
        return Ok(());
    }
    Err(KeyError::new(
        "auth.mode",
        format!("expected one of {}, got \"{mode}\"", MODES.join(", ")),
    ))
}

/// The section with a relative `jwks_file` resolved against `base`, the config file's
/// folder (like `policy.paths`).
#[must_use]
pub fn settings(mut auth: AuthConfig, base: &Path) -> AuthConfig {
    auth.jwks_file = auth.jwks_file.map(|file| base.join(file));
    auth
}
