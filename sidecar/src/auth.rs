//! Wiring `[auth]` into the policy layer.

use policy_layer::PolicyLayer;
use policy_layer::auth::{AuthConfig, Authenticator, protected_resource_metadata};
use serde::Deserialize;

use crate::config::AuthSettings;

/// Why authentication could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("auth: {0}")]
pub struct AuthSetupError(String);

/// The layer with the configured authentication, and the authenticator (for `/readyz`).
///
/// # Errors
/// [`AuthSetupError`] naming the key when `[auth]` cannot be used.
pub async fn apply(
    layer: PolicyLayer,
    auth: &AuthSettings,
    resource: &str,
) -> Result<(PolicyLayer, Option<Authenticator>), AuthSetupError> {
    match auth {
        AuthSettings::None => {
            tracing::warn!(
                "auth.mode = \"none\": every caller is AgentCore::UnauthenticatedUser::\"anonymous\"; for local development only"
            );
            Ok((layer.unauthenticated(), None))
        }
        AuthSettings::Jwt(table) => {
            let config = AuthConfig::deserialize(table.clone())
                .map_err(|e| AuthSetupError(e.to_string()))?;
            let metadata = protected_resource_metadata(&config, resource);
            let authenticator = Authenticator::start(config)
                .await
                .map_err(|e| AuthSetupError(e.to_string()))?;
            let layer = layer
                .authenticator(authenticator.clone())
                .resource_metadata(metadata);
            Ok((layer, Some(authenticator)))
        }
    }
}
