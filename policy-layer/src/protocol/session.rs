//! Sessions belong to the principal that opened them.
//!
//! The layer learns each `Mcp-Session-Id` from the reply that handed it out (the upstream's
//! answer to `initialize`) and binds it to the caller of that request. A request presenting a
//! session of another principal, or a session the layer never saw handed out (an id guessed,
//! stolen, or from before a restart), gets exactly the answer of an unknown session (404), so
//! nobody learns whether it exists and nothing is forwarded. A binding ends with the session's
//! DELETE or after `idle` without a request; the map is bounded (`max_sessions`), evicting the
//! least useful bindings first, so a flood of sessions costs memory only up to the bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::HeaderMap;
use quick_cache::sync::Cache;

use super::headers::MCP_SESSION_ID;
use crate::auth::{Identity, PrincipalKind};
use crate::reply::Refusal;

/// Default bound on the sessions tracked at once.
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;
/// Default time a session binding lives without a request.
pub const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(24 * 60 * 60);

/// How many sessions are tracked and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Bindings kept at once; beyond, the least useful are evicted.
    pub max_sessions: usize,
    /// A binding unused for this long ends.
    pub idle: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_sessions: DEFAULT_MAX_SESSIONS,
            idle: DEFAULT_SESSION_IDLE,
        }
    }
}

#[derive(Debug)]
struct Binding {
    owner: Arc<str>,
    /// Milliseconds since [`Sessions::epoch`] of the last request in the session.
    last_used: AtomicU64,
}

/// The session bindings of one layer.
pub struct Sessions {
    bindings: Cache<Arc<str>, Arc<Binding>>,
    idle: Duration,
    epoch: Instant,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("tracked", &self.bindings.len())
            .field("idle", &self.idle)
            .finish()
    }
}

/// Who owns a session: the principal type, the issuer and the subject.
fn owner(identity: &Identity) -> String {
    let kind = match identity.kind {
        PrincipalKind::OAuthUser => "user",
        PrincipalKind::Unauthenticated => "anonymous",
    };
    let issuer = identity.tag("iss").unwrap_or_default();
    format!("{kind}\0{issuer}\0{}", identity.subject)
}

/// The request's `Mcp-Session-Id`, if any (unreadable bytes read as an id nobody owns).
#[must_use]
pub fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(MCP_SESSION_ID)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"))
}

impl Sessions {
    /// Bindings within `limits`.
    #[must_use]
    pub fn new(limits: SessionLimits) -> Self {
        Self {
            bindings: Cache::new(limits.max_sessions.max(1)),
            idle: limits.idle,
            epoch: Instant::now(),
        }
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Checks that the session the request presents, if any, is `identity`'s; returns it.
    ///
    /// # Errors
    /// [`Refusal::UnknownSession`] for a session of another principal, one never handed out
    /// through this layer, or one idle for too long.
    pub fn check<'h>(
        &self,
        headers: &'h HeaderMap,
        identity: &Identity,
    ) -> Result<Option<&'h str>, Refusal> {
        self.check_at(headers, identity, Instant::now())
    }

    fn check_at<'h>(
        &self,
        headers: &'h HeaderMap,
        identity: &Identity,
        now: Instant,
    ) -> Result<Option<&'h str>, Refusal> {
        let Some(id) = session_id(headers) else {
            return Ok(None);
        };
        let Some(binding) = self.bindings.get(id) else {
            return Err(Refusal::UnknownSession);
        };
        let now = self.millis(now);
        let idle = u64::try_from(self.idle.as_millis()).unwrap_or(u64::MAX);
        if now.saturating_sub(binding.last_used.load(Ordering::Relaxed)) > idle {
            self.bindings.remove(id);
            return Err(Refusal::UnknownSession);
        }
        if *binding.owner != *owner(identity) {
            return Err(Refusal::UnknownSession);
        }
        binding.last_used.store(now, Ordering::Relaxed);
        Ok(Some(id))
    }

    /// Binds the session a reply hands out to the caller it was handed to. A session already
    /// bound keeps its owner.
    pub fn bind(&self, id: &str, identity: &Identity) {
        self.bind_at(id, identity, Instant::now());
    }

    fn bind_at(&self, id: &str, identity: &Identity, now: Instant) {
        let owner = owner(identity);
        if let Some(existing) = self.bindings.get(id) {
            if *existing.owner != *owner {
                tracing::warn!("the upstream handed out a session bound to another principal");
            }
            return;
        }
        let binding = Binding {
            owner: Arc::from(owner),
            last_used: AtomicU64::new(self.millis(now)),
        };
        self.bindings.insert(Arc::from(id), Arc::new(binding));
    }

    /// Ends a session (its DELETE succeeded).
    pub fn end(&self, id: &str) {
        self.bindings.remove(id);
    }

    /// How many sessions are tracked.
    #[must_use]
    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    /// Whether no session is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn user(sub: &str) -> Identity {
        Identity {
            kind: PrincipalKind::OAuthUser,
            subject: sub.to_owned(),
            tags: vec![("iss".to_owned(), "https://issuer".to_owned())],
            expires_at: None,
        }
    }

    fn presenting(id: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(MCP_SESSION_ID, HeaderValue::from_static(id));
        headers
    }

    #[test]
    fn a_session_serves_only_the_principal_that_opened_it() {
        let sessions = Sessions::new(SessionLimits::default());
        sessions.bind("s-1", &user("alice"));
        assert_eq!(
            sessions.check(&presenting("s-1"), &user("alice")),
            Ok(Some("s-1"))
        );
        assert_eq!(
            sessions.check(&presenting("s-1"), &user("mallory")),
            Err(Refusal::UnknownSession)
        );
        // Rebinding by another caller never changes the owner.
        sessions.bind("s-1", &user("mallory"));
        assert!(
            sessions
                .check(&presenting("s-1"), &user("mallory"))
                .is_err()
        );
    }

    #[test]
    fn a_session_never_handed_out_is_unknown() {
        let sessions = Sessions::new(SessionLimits::default());
        assert_eq!(
            sessions.check(&presenting("guessed"), &user("alice")),
            Err(Refusal::UnknownSession)
        );
        assert_eq!(sessions.check(&HeaderMap::new(), &user("alice")), Ok(None));
    }

    #[test]
    fn the_same_subject_of_another_issuer_is_another_principal() {
        let sessions = Sessions::new(SessionLimits::default());
        sessions.bind("s", &user("alice"));
        let mut other = user("alice");
        other.tags = vec![("iss".to_owned(), "https://other".to_owned())];
        assert!(sessions.check(&presenting("s"), &other).is_err());
    }

    #[test]
    fn a_binding_ends_with_delete_or_idleness() {
        let limits = SessionLimits {
            max_sessions: 10,
            idle: Duration::from_secs(60),
        };
        let sessions = Sessions::new(limits);
        let start = Instant::now();
        sessions.bind_at("s", &user("alice"), start);
        let later = start + Duration::from_secs(59);
        assert!(
            sessions
                .check_at(&presenting("s"), &user("alice"), later)
                .is_ok()
        );
        let idle = later + Duration::from_secs(61);
        assert_eq!(
            sessions.check_at(&presenting("s"), &user("alice"), idle),
            Err(Refusal::UnknownSession)
        );
        sessions.bind("t", &user("alice"));
        sessions.end("t");
        assert!(sessions.check(&presenting("t"), &user("alice")).is_err());
    }

    #[test]
    fn a_flood_of_sessions_stays_within_the_bound() {
        let sessions = Sessions::new(SessionLimits {
            max_sessions: 100,
            idle: DEFAULT_SESSION_IDLE,
        });
        for i in 0..10_000 {
            sessions.bind(&format!("flood-{i}"), &user("mallory"));
        }
        assert!(sessions.len() <= 100, "{}", sessions.len());
    }
}
