//! [`PolicyLayer`]: the configuration shared by every [`PolicyService`].

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use serde_json::Value;

use crate::auth::Authenticator;
use crate::config::Settings;
use crate::engine::PolicyEngine;
use crate::record::{DecisionObserver, NoObserver};
use crate::service::PolicyService;

/// Where a request's identity comes from.
#[derive(Clone)]
pub(crate) enum IdentitySource {
    /// An `Arc<Identity>` request extension set by an earlier layer; none -> 401.
    Extension,
    /// Bearer tokens verified by the authenticator (or anonymous when it is `none`).
    Authenticator(Authenticator),
}

pub(crate) struct Shared {
    pub(crate) engine: PolicyEngine,
    pub(crate) settings: Arc<Settings>,
    pub(crate) observer: Arc<dyn DecisionObserver>,
    pub(crate) identity: IdentitySource,
    pub(crate) resource_metadata: Option<Arc<Value>>,
}

/// A tower layer that enforces Cedar policies on the MCP messages of an HTTP service.
///
/// ```
/// use policy_layer::{PolicyEngine, PolicyLayer, model::ModelConfig};
/// let engine = PolicyEngine::new(ModelConfig::default());
/// let layer = PolicyLayer::new(engine).unauthenticated();
/// # let _ = layer;
/// ```
#[derive(Clone)]
#[must_use]
pub struct PolicyLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for PolicyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyLayer")
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

impl PolicyLayer {
    /// A layer deciding with `engine`, default settings, identities from request extensions.
    pub fn new(engine: PolicyEngine) -> Self {
        Self {
            shared: Arc::new(Shared {
                engine,
                settings: Arc::new(Settings::default()),
                observer: Arc::new(NoObserver),
                identity: IdentitySource::Extension,
                resource_metadata: None,
            }),
        }
    }

    fn with(self, change: impl FnOnce(&mut Shared)) -> Self {
        let shared = Arc::try_unwrap(self.shared).unwrap_or_else(|shared| Shared {
            engine: shared.engine.clone(),
            settings: Arc::clone(&shared.settings),
            observer: Arc::clone(&shared.observer),
            identity: shared.identity.clone(),
            resource_metadata: shared.resource_metadata.clone(),
        });
        let mut shared = shared;
        change(&mut shared);
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Sets mode, deny style, exception level and limits.
    pub fn settings(self, settings: Settings) -> Self {
        self.with(|s| s.settings = Arc::new(settings))
    }

    /// Hands every decision record to `observer` (metrics, decision log).
    pub fn observer(self, observer: Arc<dyn DecisionObserver>) -> Self {
        self.with(|s| s.observer = observer)
    }

    /// Treats every caller as `AgentCore::UnauthenticatedUser::"anonymous"`: for local
    /// development only.
    pub fn unauthenticated(self) -> Self {
        self.authenticator(Authenticator::none())
    }

    /// Verifies each request's bearer token with `authenticator` before anything else;
    /// a missing or bad token is refused (401/403) and nothing is forwarded.
    pub fn authenticator(self, authenticator: Authenticator) -> Self {
        self.with(|s| s.identity = IdentitySource::Authenticator(authenticator))
    }

    /// Serves this RFC 9728 protected resource metadata document at
    /// `/.well-known/oauth-protected-resource` (and below it), the URL that 401 replies point
    /// to (see [`crate::auth::protected_resource_metadata`]).
    pub fn resource_metadata(self, document: Value) -> Self {
        self.with(|s| s.resource_metadata = Some(Arc::new(document)))
    }

    /// Takes each caller's identity from an `Arc<Identity>` request extension set by an
    /// earlier layer; a request without one is refused with 401.
    pub fn identity_from_extension(self) -> Self {
        self.with(|s| s.identity = IdentitySource::Extension)
    }

    /// The engine this layer decides with.
    #[must_use]
    pub fn engine(&self) -> &PolicyEngine {
        &self.shared.engine
    }
}

impl<S> Layer<S> for PolicyLayer {
    type Service = PolicyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PolicyService::new(inner, Arc::clone(&self.shared))
    }
}
