//! Wiring `[auth]` into the policy layer.

use policy_layer::PolicyLayer;

use crate::config::AuthSettings;

/// Why authentication could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("auth.mode: {0}")]
pub struct AuthSetupError(String);

/// The layer with the configured authentication.
///
/// # Errors
/// [`AuthSetupError`] naming the key when `[auth]` cannot be used.
#[allow(clippy::unused_async)] // JWT start-up is async (JWKS fetch)
pub async fn apply(layer: PolicyLayer, auth: &AuthSettings) -> Result<PolicyLayer, AuthSetupError> {
    match auth {
        AuthSettings::None => {
            tracing::warn!(
                "auth.mode = \"none\": every caller is AgentCore::UnauthenticatedUser::\"anonymous\"; for local development only"
            );
            Ok(layer.unauthenticated())
        }
        AuthSettings::Jwt(_table) => {
            // The one place to change once `policy_layer::auth::{AuthConfig, Authenticator}`
            // are in this build:
            //   let config = AuthConfig::deserialize(_table.clone()).map_err(|e| AuthSetupError(e.to_string()))?;
            //   let authenticator = Authenticator::start(config).await.map_err(|e| AuthSetupError(e.to_string()))?;
            //   Ok(layer.authenticator(authenticator))
            Err(AuthSetupError(
                "jwt auth not available in this build".to_owned(),
            ))
        }
    }
}
