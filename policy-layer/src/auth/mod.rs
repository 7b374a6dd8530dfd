//! JWT authentication (`docs/authentication.md`): who the caller is, proved by a bearer
//! token; [`metadata`] serves the RFC 9728 document that a 401 points to.
//!
//! [`Authenticator::authenticate`] takes the token from `Authorization: Bearer`, picks the
//! issuer by the token's `iss`, verifies the signature with that issuer's JWKS (RS256/384/512,
//! PS256/384/512, ES256/384, EdDSA; never `none` or HMAC), checks `exp`/`nbf` with leeway,
//! `aud`, `client_id`/`azp` and `scope`, and yields an [`Identity`] for the Cedar principal.
//!
//! Off the request path: each issuer's key set is fetched at start and refreshed by a
//! background task on its TTL (`Cache-Control: max-age`, else 5 minutes). On the request path:
//! the key set is read with one atomic load; verified tokens are cached until they expire; a
//! token with an unknown `kid` triggers at most one refetch per 10 s, shared by concurrent
//! requests.
//!
//! Start-up choice: if a JWKS URL or discovery URL cannot be reached at start,
//! [`Authenticator::start`] still succeeds (logging a warning) and the background task keeps
//! retrying; until keys arrive every request for that issuer fails closed with
//! [`AuthError::NoKeys`] (401) and [`Authenticator::is_ready`] is false, so a readiness probe can
//! wait for it. A local `jwks_file` that cannot be loaded is a configuration error and fails
//! `start`.

mod cache;
mod config;
mod error;
pub(crate) mod gate;
mod jwks;
pub mod metadata;
mod token;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::Guard;
use http::HeaderMap;
use serde_json::{Value, json};
use tokio::task::AbortHandle;

pub use config::{
    AuthConfig, AuthMode, AuthTuning, ConfigError, DEFAULT_HTTP_TIMEOUT, DEFAULT_JWKS_TTL,
    DEFAULT_LEEWAY_SECS, DEFAULT_MIN_JWKS_REFRESH_INTERVAL, DEFAULT_TOKEN_CACHE_CAPACITY,
    DEFAULT_UNKNOWN_KID_REFETCH_INTERVAL, IssuerConfig, JwksSource, MAX_JWKS_TTL, MAX_LEEWAY_SECS,
};
pub use error::{AuthError, AuthStartError};
pub use jwks::{JwksError, MAX_JWKS_DOCUMENT_BYTES};
pub use metadata::{ProtectedResource, RESOURCE_METADATA_PATH};
pub use token::MAX_TOKEN_BYTES;

use cache::{CachedToken, TokenCache};
use config::Settings;
use jwks::{IssuerKeys, KeySet};
use token::{Checks, Unverified};

/// The subject of an unauthenticated caller (`AgentCore::UnauthenticatedUser::"anonymous"`).
pub const ANONYMOUS_SUBJECT: &str = "anonymous";

/// Which Cedar principal type the caller maps to (`docs/cedar-model.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrincipalKind {
    /// `AgentCore::OAuthUser::"<sub>"`: a verified token.
    OAuthUser,
    /// `AgentCore::UnauthenticatedUser::"anonymous"`: `auth.mode = "none"`.
    Unauthenticated,
}

/// Who the caller is, as proved by its token (or anonymous when `auth.mode = "none"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The principal type.
    pub kind: PrincipalKind,
    /// JWT `sub` (`"anonymous"` when unauthenticated).
    pub subject: String,
    /// Every claim other than `sub`, as a string per `docs/cedar-model.md`: strings as they are,
    /// numbers, booleans, arrays and objects as compact JSON text; sorted by claim name.
    pub tags: Vec<(String, String)>,
    /// `exp`, seconds since the epoch.
    pub expires_at: Option<u64>,
}

impl Identity {
    /// The identity of every caller when authentication is off.
    #[must_use]
    pub fn anonymous() -> Self {
        Self {
            kind: PrincipalKind::Unauthenticated,
            subject: ANONYMOUS_SUBJECT.to_owned(),
            tags: Vec::new(),
            expires_at: None,
        }
    }

    /// The tag (claim) named `name`, if the token carried it.
    #[must_use]
    pub fn tag(&self, name: &str) -> Option<&str> {
        self.tags
            .binary_search_by(|(key, _)| key.as_str().cmp(name))
            .ok()
            .and_then(|index| self.tags.get(index))
            .map(|(_, value)| value.as_str())
    }
}

/// Counters of the authenticator's work, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthStats {
    /// Signature verifications performed (tokens not answered from the cache).
    pub signature_checks: u64,
    /// Requests answered from the verified-token cache.
    pub cache_hits: u64,
}

/// Authenticates requests; cheap to clone (an `Arc` inside). Dropping the last clone stops the
/// background JWKS refresh.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

enum Inner {
    Anonymous(Arc<Identity>),
    Jwt(JwtAuthenticator),
}

struct JwtAuthenticator {
    issuers: Vec<IssuerState>,
    leeway_secs: u64,
    cache: TokenCache,
    signature_checks: AtomicU64,
    cache_hits: AtomicU64,
    refresh_tasks: Vec<AbortHandle>,
}

struct IssuerState {
    checks: Checks,
    keys: Arc<IssuerKeys>,
}

impl Drop for JwtAuthenticator {
    fn drop(&mut self) {
        for task in &self.refresh_tasks {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.inner {
            Inner::Anonymous(_) => f
                .debug_struct("Authenticator")
                .field("mode", &AuthMode::None)
                .finish(),
            Inner::Jwt(jwt) => f
                .debug_struct("Authenticator")
                .field("mode", &AuthMode::Jwt)
                .field(
                    "issuers",
                    &jwt.issuers.iter().map(|i| &i.keys).collect::<Vec<_>>(),
                )
                .finish_non_exhaustive(),
        }
    }
}

/// Makes `jsonwebtoken` use aws-lc-rs, whatever features other crates enable.
fn install_crypto_provider() {
    // An error only means a provider is installed already, which is fine.
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

impl Authenticator {
    /// Validates `config`, fetches every issuer's key set once and spawns the background
    /// refresh (needs a tokio runtime). `mode = "none"` logs a warning and authenticates
    /// everyone as anonymous.
    ///
    /// A key URL that is down at start does not fail this call: see the module docs.
    ///
    /// # Errors
    /// Invalid configuration, an HTTP client that cannot be built, or an unreadable `jwks_file`.
    pub async fn start(config: AuthConfig) -> Result<Self, AuthStartError> {
        let settings = match config.settings()? {
            Settings::Anonymous => {
                tracing::warn!(
                    "auth.mode = \"none\": every caller is AgentCore::UnauthenticatedUser::\"anonymous\"; use only for local development"
                );
                return Ok(Self::none());
            }
            Settings::Jwt(settings) => settings,
        };
        install_crypto_provider();
        let timeout = settings.tuning.http_timeout;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("mcp-policy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(AuthStartError::HttpClient)?;
        let issuers: Vec<IssuerState> = settings
            .issuers
            .into_iter()
            .map(|issuer| IssuerState {
                keys: Arc::new(IssuerKeys::new(
                    issuer.issuer.clone(),
                    issuer.source.clone(),
                    client.clone(),
                    settings.tuning.clone(),
                )),
                checks: Checks::new(issuer, settings.leeway_secs),
            })
            .collect();
        let loads = futures_util::future::join_all(issuers.iter().map(|i| i.keys.refresh())).await;
        let mut first_delays = Vec::with_capacity(issuers.len());
        for (issuer, load) in issuers.iter().zip(loads) {
            match load {
                Ok(ttl) => first_delays.push(ttl),
                Err(source) if issuer.keys.is_file() => {
                    return Err(AuthStartError::Jwks {
                        issuer: issuer.keys.issuer().to_owned(),
                        source,
                    });
                }
                Err(error) => {
                    tracing::warn!(
                        issuer = %issuer.keys.issuer(),
                        error = %jwks::error_chain(&error),
                        "jwks unavailable at start; requests for this issuer fail closed until keys arrive"
                    );
                    first_delays.push(jwks::retry_delay(1));
                }
            }
        }
        let refresh_tasks = issuers
            .iter()
            .zip(first_delays)
            .map(|(issuer, delay)| jwks::spawn_refresh(Arc::clone(&issuer.keys), delay))
            .collect();
        Ok(Self {
            inner: Arc::new(Inner::Jwt(JwtAuthenticator {
                issuers,
                leeway_secs: settings.leeway_secs,
                cache: TokenCache::new(settings.tuning.token_cache_capacity),
                signature_checks: AtomicU64::new(0),
                cache_hits: AtomicU64::new(0),
                refresh_tasks,
            })),
        })
    }

    /// Authenticates everyone as `anonymous`, for tests and local development.
    #[must_use]
    pub fn none() -> Self {
        Self {
            inner: Arc::new(Inner::Anonymous(Arc::new(Identity::anonymous()))),
        }
    }

    /// Proves who sent `headers`: the identity of a valid bearer token, or why not.
    ///
    /// # Errors
    /// An [`AuthError`] whose [`status`](AuthError::status) and
    /// [`www_authenticate`](AuthError::www_authenticate) form the HTTP answer.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Identity>, AuthError> {
        match &*self.inner {
            Inner::Anonymous(identity) => Ok(Arc::clone(identity)),
            Inner::Jwt(jwt) => {
                let result = jwt.authenticate(headers).await;
                if let Err(error) = &result {
                    tracing::debug!(reason = error.reason(), "bearer token refused");
                }
                result
            }
        }
    }

    /// Whether every issuer has a key set (always true when authentication is off): for a
    /// readiness probe.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        match &*self.inner {
            Inner::Anonymous(_) => true,
            Inner::Jwt(jwt) => jwt.issuers.iter().all(|i| !i.keys.current().is_empty()),
        }
    }

    /// Whether authentication is off (`mode = "none"`).
    #[must_use]
    pub fn is_anonymous(&self) -> bool {
        matches!(&*self.inner, Inner::Anonymous(_))
    }

    /// Counters of signature checks and cache hits so far.
    #[must_use]
    pub fn stats(&self) -> AuthStats {
        match &*self.inner {
            Inner::Anonymous(_) => AuthStats::default(),
            Inner::Jwt(jwt) => AuthStats {
                signature_checks: jwt.signature_checks.load(Ordering::Relaxed),
                cache_hits: jwt.cache_hits.load(Ordering::Relaxed),
            },
        }
    }
}

impl JwtAuthenticator {
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Identity>, AuthError> {
        let token = token::bearer_token(headers)?;
        if let Some(hit) = self.cache.get(token) {
            if now_secs() > hit.expires_at.saturating_add(self.leeway_secs) {
                self.cache.remove(token);
                return Err(AuthError::Expired);
            }
            let key_still_published = self
                .issuers
                .get(hit.issuer)
                .is_some_and(|issuer| issuer.keys.current().contains(hit.kid.as_deref()));
            if key_still_published {
                self.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(hit.identity);
            }
            self.cache.remove(token);
        }
        let unverified = token::inspect(token)?;
        let (index, issuer) = self
            .issuers
            .iter()
            .enumerate()
            .find(|(_, issuer)| {
                unverified.iss.as_deref() == Some(issuer.checks.settings.issuer.as_str())
            })
            .ok_or(AuthError::WrongIssuer)?;
        let identity = Arc::new(self.verify(token, &unverified, issuer).await?);
        if let Some(expires_at) = identity.expires_at {
            let entry = CachedToken {
                identity: Arc::clone(&identity),
                expires_at,
                issuer: index,
                kid: unverified.kid.map(Arc::from),
            };
            self.cache.insert(token, entry);
        }
        Ok(identity)
    }

    /// Verifies with the current keys; on an unknown `kid` (or no keys at all) refetches once,
    /// within the rate limit, and tries again.
    async fn verify(
        &self,
        token: &str,
        unverified: &Unverified,
        issuer: &IssuerState,
    ) -> Result<Identity, AuthError> {
        let keys = issuer.keys.current();
        match self.verify_with(&keys, token, unverified, issuer) {
            Err(AuthError::UnknownKid) => {}
            decided => return decided,
        }
        let seen = Guard::into_inner(keys);
        issuer.keys.refetch_for_unknown_kid(&seen).await;
        let keys = issuer.keys.current();
        if keys.is_empty() {
            return Err(AuthError::NoKeys);
        }
        self.verify_with(&keys, token, unverified, issuer)
    }

    fn verify_with(
        &self,
        keys: &KeySet,
        token: &str,
        unverified: &Unverified,
        issuer: &IssuerState,
    ) -> Result<Identity, AuthError> {
        let mut outcome = Err(AuthError::UnknownKid);
        for key in keys.candidates(unverified.kid.as_deref(), unverified.alg)? {
            self.signature_checks.fetch_add(1, Ordering::Relaxed);
            outcome = issuer.checks.verify(token, unverified.alg, &key.key);
            if !matches!(outcome, Err(AuthError::BadSignature)) {
                break; // decided; a bad signature tries the next candidate key
            }
        }
        outcome
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The RFC 9728 protected resource metadata document for `resource` (the MCP endpoint's URL),
/// served at `/.well-known/oauth-protected-resource`.
///
/// `scopes_supported` is present only when some issuer lists `allowed_scopes`.
#[must_use]
pub fn protected_resource_metadata(config: &AuthConfig, resource: &str) -> Value {
    let mut scopes: Vec<&str> = Vec::new();
    if config.mode == AuthMode::Jwt {
        let all = config
            .allowed_scopes
            .iter()
            .chain(config.issuers.iter().flat_map(|i| &i.allowed_scopes));
        for scope in all {
            if !scopes.contains(&scope.as_str()) {
                scopes.push(scope);
            }
        }
    }
    let mut document = json!({
        "resource": resource,
        "authorization_servers": config.issuer_names(),
        "bearer_methods_supported": ["header"],
    });
    if !scopes.is_empty() {
        document["scopes_supported"] = json!(scopes);
    }
    document
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_identity_is_unauthenticated() {
        let id = Identity::anonymous();
        assert_eq!(id.kind, PrincipalKind::Unauthenticated);
        assert_eq!(id.subject, "anonymous");
        assert!(id.tags.is_empty() && id.expires_at.is_none());
    }

    #[test]
    fn tag_finds_a_claim_by_name() {
        let id = Identity {
            kind: PrincipalKind::OAuthUser,
            subject: "s".into(),
            tags: vec![("a".into(), "1".into()), ("role".into(), "admin".into())],
            expires_at: None,
        };
        assert_eq!(id.tag("role"), Some("admin"));
        assert_eq!(id.tag("b"), None);
    }

    #[test]
    fn metadata_lists_issuers_and_scopes() {
        let config = AuthConfig::jwt("https://a.example")
            .with_jwks_url("https://a.example/jwks")
            .with_audience("mcp")
            .with_allowed_scope("tools:call")
            .with_issuer(IssuerConfig {
                issuer: "https://b.example".into(),
                jwks_url: Some("https://b.example/jwks".into()),
                audiences: vec!["mcp".into()],
                allowed_scopes: vec!["tools:call".into(), "admin".into()],
                ..IssuerConfig::default()
            });
        assert_eq!(
            protected_resource_metadata(&config, "https://mcp.example/mcp"),
            json!({
                "resource": "https://mcp.example/mcp",
                "authorization_servers": ["https://a.example", "https://b.example"],
                "bearer_methods_supported": ["header"],
                "scopes_supported": ["tools:call", "admin"],
            })
        );
    }

    #[test]
    fn metadata_without_scopes_omits_scopes_supported() {
        let config = AuthConfig::jwt("https://a.example")
            .with_jwks_url("https://a.example/jwks")
            .with_audience("mcp");
        let document = protected_resource_metadata(&config, "https://mcp.example/mcp");
        assert!(document.get("scopes_supported").is_none());
        assert_eq!(
            document["authorization_servers"],
            json!(["https://a.example"])
        );
    }

    #[tokio::test]
    async fn none_mode_yields_anonymous() {
        let auth = Authenticator::none();
        let id = auth.authenticate(&HeaderMap::new()).await;
        assert!(id.is_ok_and(|id| *id == Identity::anonymous()));
        assert!(auth.is_ready() && auth.is_anonymous());
    }
}
