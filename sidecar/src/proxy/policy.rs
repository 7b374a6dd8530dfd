//! The policy layer between the router and the upstream: the library's `PolicyLayer` with
//! the `[policy]` settings, the decision observer, and the `[auth]` authentication.

use std::sync::Arc;

use policy_layer::auth::{AuthConfig, AuthMode, Authenticator, protected_resource_metadata};
use policy_layer::{DecisionObserver, PolicyEngine, PolicyLayer, Settings};

/// Why authentication could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("auth: {0}")]
pub struct AuthSetupError(#[source] policy_layer::auth::AuthStartError);

/// The layer deciding with `engine`, and the authenticator (for `/readyz`; `None` without
/// authentication). `resource` is the protected resource's URL for the RFC 9728 metadata.
///
/// # Errors
/// [`AuthSetupError`] naming the key when `[auth]` cannot be used.
pub async fn layer(
    engine: PolicyEngine,
    settings: Settings,
    observer: Arc<dyn DecisionObserver>,
    auth: &AuthConfig,
    resource: &str,
) -> Result<(PolicyLayer, Option<Authenticator>), AuthSetupError> {
    let layer = PolicyLayer::new(engine)
        .settings(settings)
        .observer(observer);
    match auth.mode {
        AuthMode::None => {
            tracing::warn!(
                "auth.mode = \"none\": every caller is AgentCore::UnauthenticatedUser::\"anonymous\"; for local development only"
            );
            Ok((layer.unauthenticated(), None))
        }
        AuthMode::Jwt => {
            let metadata = protected_resource_metadata(auth, resource);
            let authenticator = Authenticator::start(auth.clone())
                .await
                .map_err(AuthSetupError)?;
            let layer = layer
                .authenticator(authenticator.clone())
                .resource_metadata(metadata);
            Ok((layer, Some(authenticator)))
        }
    }
}
