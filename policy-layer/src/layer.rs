//! [`PolicyLayer`]: the configuration shared by every [`PolicyService`].

use std::fmt;
use std::sync::Arc;

use http::Uri;
use serde_json::Value;
use tower_layer::Layer;

use crate::auth::Authenticator;
use crate::auth::gate::{Gate, IdentitySource};
use crate::auth::metadata::ProtectedResource;
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::engine::PolicyEngine;
use crate::exchange::Shared;
use crate::limit::Limits;
use crate::protocol::origin::Origins;
use crate::protocol::session::{SessionLimits, Sessions};
use crate::protocol::{IpNet, TrustedProxies};
use crate::record::{DecisionObserver, NoObserver};
use crate::service::PolicyService;
use crate::state::{MemorySettings, Store};

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
    /// A layer deciding with `engine`, default settings, identities from request extensions,
    /// no browser origin allowed, and sessions bound within [`SessionLimits::default`].
    pub fn new(engine: PolicyEngine) -> Self {
        Self {
            shared: Arc::new(Shared {
                engine,
                settings: Arc::new(Settings::default()),
                observer: Arc::new(NoObserver),
                gate: Gate {
                    source: IdentitySource::Extension,
                    metadata: None,
                    public_url: None,
                    proxies: TrustedProxies::default(),
                },
                origins: Origins::default(),
                sessions: Arc::new(Sessions::new(SessionLimits::default())),
                clock: Arc::new(SystemClock),
                limits: None,
                session_store: Some(Store::memory(MemorySettings::default())),
            }),
        }
    }

    fn with(self, change: impl FnOnce(&mut Shared)) -> Self {
        let mut shared = Arc::try_unwrap(self.shared).unwrap_or_else(|shared| Shared {
            engine: shared.engine.clone(),
            settings: Arc::clone(&shared.settings),
            observer: Arc::clone(&shared.observer),
            gate: shared.gate.clone(),
            origins: shared.origins.clone(),
            sessions: Arc::clone(&shared.sessions),
            clock: Arc::clone(&shared.clock),
            limits: shared.limits.clone(),
            session_store: shared.session_store.clone(),
        });
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
        self.with(|s| s.gate.source = IdentitySource::Authenticator(authenticator))
    }

    /// Serves this RFC 9728 protected resource metadata document at
    /// `/.well-known/oauth-protected-resource` and below it, the URL that 401 replies point to
    /// (see [`crate::auth::protected_resource_metadata`]). The document's `resource` names the
    /// MCP endpoint: its path is kept; its scheme and host are those the client used, unless
    /// [`Self::public_url`] fixes them.
    pub fn resource_metadata(self, document: Value) -> Self {
        self.with(|s| {
            let mut metadata = ProtectedResource::new(document);
            if let Some(url) = &s.gate.public_url {
                metadata = metadata.with_public_url(url);
            }
            s.gate.metadata = Some(metadata);
        })
    }

    /// The URL clients reach the MCP endpoint at (behind a load balancer or an ingress): the
    /// resource the metadata names and the URL 401 replies point to.
    pub fn public_url(self, url: Uri) -> Self {
        self.with(|s| {
            s.gate.metadata = s.gate.metadata.take().map(|m| m.with_public_url(&url));
            s.gate.public_url = Some(url);
        })
    }

    /// Peers whose `Forwarded` / `X-Forwarded-*` headers are believed (the client's scheme,
    /// host and address); from any other peer they are ignored. The server must set each
    /// request's [`crate::protocol::PeerAddr`].
    pub fn trusted_proxies(self, nets: Vec<IpNet>) -> Self {
        self.with(|s| s.gate.proxies = TrustedProxies::new(nets))
    }

    /// The origins whose browser pages may call; a request with any other `Origin` is refused
    /// (403). By default no page may: a request with an `Origin` header is refused.
    pub fn allowed_origins(self, origins: Origins) -> Self {
        self.with(|s| s.origins = origins)
    }

    /// How many sessions are bound to their principals at once, and for how long unused.
    pub fn session_limits(self, limits: SessionLimits) -> Self {
        self.with(|s| s.sessions = Arc::new(Sessions::new(limits)))
    }

    /// Reads `context.system.now` from `clock` instead of the system clock (tests of
    /// time-based policies: a [`crate::ManualClock`]).
    pub fn clock(self, clock: Arc<dyn Clock>) -> Self {
        self.with(|s| s.clock = clock)
    }

    /// Keeps policy sessions (the histories temporal policies read, `docs/temporal.md`) in
    /// `store`: the rate limits' store, shared by replicas when it is Redis. By default a
    /// memory store of this layer.
    pub fn session_store(self, store: Store) -> Self {
        self.with(|s| s.session_store = Some(store))
    }

    /// Checks every tools/call against `limits` after authentication and before Cedar
    /// (`docs/rate-limits.md`): a throttled call is answered with HTTP 429 (inside a batch,
    /// with its JSON-RPC error) and never forwarded. Limits enforce whatever the engine mode:
    /// LOG_ONLY concerns policies only. Keep a clone to replace the limits on reload
    /// ([`Limits::replace`]).
    pub fn rate_limits(self, limits: Limits) -> Self {
        self.with(|s| s.limits = Some(limits))
    }

    /// Takes each caller's identity from an `Arc<Identity>` request extension set by an
    /// earlier layer; a request without one is refused with 401.
    pub fn identity_from_extension(self) -> Self {
        self.with(|s| s.gate.source = IdentitySource::Extension)
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
