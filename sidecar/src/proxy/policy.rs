//! The policy layer between the router and the upstream: the library's `PolicyLayer` with
//! the `[policy]` settings, the decision observer, the `[auth]` authentication, what
//! `[listen]` says of the other end (origins, trusted proxies, public URL, sessions), the
//! rate limits (`[[rate_limit]]`, `[state]`) and the clock.

use std::net::SocketAddr;
use std::sync::Arc;

use policy_layer::auth::{AuthMode, Authenticator, protected_resource_metadata};
use policy_layer::limit::Limits;
use policy_layer::{Clock, DecisionObserver, PolicyEngine, PolicyLayer};

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

/// What the layer decides with besides the config: the engine, the observer of its
/// decisions, the rate limits (always set, so that limits added by a reload apply) and the
/// clock.
pub struct Parts {
    /// The policy engine.
    pub engine: PolicyEngine,
    /// The metrics and the decision log.
    pub observer: Arc<dyn DecisionObserver>,
    /// The rate limits and their store.
    pub limits: Limits,
    /// Where `context.system.now` comes from.
    pub clock: Arc<dyn Clock>,
}

/// The layer for the listener bound at `bound`, and the authenticator (for `/readyz`; `None`
/// without authentication).
///
/// # Errors
/// [`LayerSetupError`] naming the key.
pub async fn layer(
    config: &Config,
    parts: Parts,
    bound: SocketAddr,
) -> Result<(PolicyLayer, Option<Authenticator>), LayerSetupError> {
    let listen = &config.listen;
    let mut layer = PolicyLayer::new(parts.engine)
        .settings(config.policy.layer.clone())
        .observer(parts.observer)
        .session_store(parts.limits.store().clone())
        .rate_limits(parts.limits)
        .clock(parts.clock)
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
