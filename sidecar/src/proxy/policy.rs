//! The policy layer between the router and the upstream: the library's `PolicyLayer` with
//! the `[policy]` settings, the decision observer, the `[auth]` authentication, and what
//! `[listen]` says of the other end (origins, trusted proxies, public URL, sessions).

use std::net::SocketAddr;
use std::sync::Arc;

use policy_layer::auth::{AuthMode, Authenticator, protected_resource_metadata};
use policy_layer::{DecisionObserver, PolicyEngine, PolicyLayer};

use crate::config::Config;
use crate::config::KeyError;

/// Why the layer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LayerSetupError {
    /// `[auth]` cannot be used.
    #[error("auth: {0}")]
    Auth(#[source] policy_layer::auth::AuthStartError),
    /// A `[listen]` key cannot be used with the address bound.
    #[error("{}: {}", .0.key, .0.message)]
    Listen(KeyError),
}

/// The layer deciding with `engine` for the listener bound at `bound`, and the authenticator
/// (for `/readyz`; `None` without authentication).
///
/// # Errors
/// [`LayerSetupError`] naming the key.
pub async fn layer(
    config: &Config,
    engine: PolicyEngine,
    observer: Arc<dyn DecisionObserver>,
    bound: SocketAddr,
) -> Result<(PolicyLayer, Option<Authenticator>), LayerSetupError> {
    let listen = &config.listen;
    let mut layer = PolicyLayer::new(engine)
        .settings(config.policy.layer.clone())
        .observer(observer)
        .allowed_origins(listen.origins(bound).map_err(LayerSetupError::Listen)?)
        .trusted_proxies(listen.trusted_proxies.clone())
        .session_limits(listen.sessions);
    if let Some(url) = &listen.public_url {
        layer = layer.public_url(url.clone());
    }
    let auth = &config.auth;
    match auth.mode {
        AuthMode::None => {
            tracing::warn!(
                "auth.mode = \"none\": every caller is AgentCore::UnauthenticatedUser::\"anonymous\"; for local development only"
            );
            Ok((layer.unauthenticated(), None))
        }
        AuthMode::Jwt => {
            let resource = format!("http://{bound}{}", config.mcp_path());
            let metadata = protected_resource_metadata(auth, &resource);
            let authenticator = Authenticator::start(auth.clone())
                .await
                .map_err(LayerSetupError::Auth)?;
            let layer = layer
                .authenticator(authenticator.clone())
                .resource_metadata(metadata);
            Ok((layer, Some(authenticator)))
        }
    }
}
