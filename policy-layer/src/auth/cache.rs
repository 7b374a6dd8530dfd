//! Verified tokens, kept until they expire so a hot token costs no signature check.
//!
//! Keyed by the full token string: the map hashes it (fast, non-cryptographic hash) and
//! compares the full token on lookup, so two tokens can never share an entry. Bounded in size;
//! `quick_cache` evicts the least useful entries when full.

use std::sync::Arc;

use quick_cache::sync::Cache;

use super::Identity;

/// What a cached token proved, and what must still hold for it to be used again.
#[derive(Debug, Clone)]
pub(crate) struct CachedToken {
    pub(crate) identity: Arc<Identity>,
    /// `exp`, seconds since the epoch.
    pub(crate) expires_at: u64,
    /// Index of the issuer that verified it.
    pub(crate) issuer: usize,
    /// The key id it was verified with: once the key leaves the key set, the entry is dropped.
    pub(crate) kid: Option<Arc<str>>,
}

/// A bounded map from token to [`CachedToken`]; capacity 0 disables it.
pub(crate) struct TokenCache {
    entries: Option<Cache<Box<str>, CachedToken>>,
}

impl TokenCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: (capacity > 0).then(|| Cache::new(capacity)),
        }
    }

    pub(crate) fn get(&self, token: &str) -> Option<CachedToken> {
        self.entries.as_ref()?.get(token)
    }

    pub(crate) fn insert(&self, token: &str, entry: CachedToken) {
        if let Some(entries) = &self.entries {
            entries.insert(Box::from(token), entry);
        }
    }

    pub(crate) fn remove(&self, token: &str) {
        if let Some(entries) = &self.entries {
            entries.remove(token);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, Cache::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::PrincipalKind;

    fn entry(subject: &str) -> CachedToken {
        CachedToken {
            identity: Arc::new(Identity {
                kind: PrincipalKind::OAuthUser,
                subject: subject.into(),
                tags: Vec::new(),
                expires_at: Some(10),
            }),
            expires_at: 10,
            issuer: 0,
            kid: None,
        }
    }

    #[test]
    fn finds_only_the_exact_token() {
        let cache = TokenCache::new(10);
        cache.insert("a.b.c", entry("alice"));
        assert_eq!(
            cache
                .get("a.b.c")
                .map(|e| e.identity.subject.clone())
                .as_deref(),
            Some("alice")
        );
        assert!(cache.get("a.b.d").is_none());
        cache.remove("a.b.c");
        assert!(cache.get("a.b.c").is_none());
    }

    #[test]
    fn stays_within_capacity() {
        let cache = TokenCache::new(100);
        for i in 0..1_000 {
            cache.insert(&format!("token-{i}"), entry("x"));
        }
        assert!(cache.len() <= 100, "{}", cache.len());
    }

    #[test]
    fn capacity_zero_caches_nothing() {
        let cache = TokenCache::new(0);
        cache.insert("a.b.c", entry("alice"));
        assert!(cache.get("a.b.c").is_none());
    }
}
