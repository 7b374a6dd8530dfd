//! The state store: what rate limits (and, next, session-aware policies) remember between calls,
//! in memory for one replica or in Redis for several.
//!
//! One interface, [`Store`], with two backends chosen by `[state] url`:
//!
//! - [`MemoryStore`] (`url = "memory"`, the default): sharded maps behind short mutexes, a cap on
//!   the number of keys, lazy expiry. Microseconds per operation, nothing shared between
//!   processes.
//! - `RedisStore` (`url = "redis://..."`, cargo feature `redis`): a small pool of multiplexed
//!   connections that reconnect by themselves, a timeout on every command, and Lua scripts that
//!   make each operation atomic and one round trip however many counters it touches.
//!
//! [`Store`] is an enum over the backends rather than a `dyn` trait: the memory backend then
//! answers without boxing a future or an indirect call (`benches/limit.rs` measures both).
//!
//! ## Operations
//!
//! [`Store::admit`] takes every counter one call must pass ([`Charge`]s: a window counter or an
//! in-flight count, each under its own key) and either charges all of them or none: a call
//! refused by one limit does not use up the others. In-flight charges return [`Permit`]s that
//! give the slot back when dropped. See `docs/rate-limits.md` for the semantics and the Redis
//! key layout.
//!
//! ## How session histories will fit
//!
//! Session-aware (temporal) policies need three more operations, added as methods of [`Store`]
//! beside `admit`, each with a memory and a Redis arm:
//!
//! - `append_event(session, event, max_len, ttl)`: in memory a bounded `VecDeque` per session in
//!   a third map of each shard (counted against the same key cap and expired the same lazy way);
//!   in Redis `RPUSH` + `LTRIM` + `PEXPIRE` on `<prefix>ev:<session>` in one script.
//! - `events(session, since)`: the events of a window, read under the shard lock or with one
//!   `LRANGE`.
//! - `invalidate(session)`: remove the entry, or `DEL`.
//!
//! Sessions are keyed like limits (an escaped, unambiguous string built by the caller), errors
//! are the same [`StoreError`] and the caller applies the same `on_error` rule.

mod config;
mod memory;
#[cfg(feature = "redis")]
mod redis;
mod session;

use std::fmt;
use std::time::Duration;

pub use config::{
    BackendSettings, DEFAULT_CONNECTION_LEASE, DEFAULT_KEY_PREFIX, DEFAULT_MAX_KEYS,
    DEFAULT_POOL_SIZE, DEFAULT_TIMEOUT, OnError, RedisUrl, StateConfig, StateConfigError,
    StateSettings,
};
pub use memory::{MemorySettings, MemoryStore};
#[cfg(feature = "redis")]
pub use redis::{RedisSettings, RedisStore};
pub use session::{
    DEFAULT_MAX_EVENTS, DEFAULT_MAX_SESSIONS, LOCK_LEASE, SESSION_IDLE, SessionBounds, SessionLock,
    SessionState,
};

/// How long a caller refused by an in-flight limit is told to wait: a slot frees whenever a
/// call ends, which nobody can predict.
pub const IN_FLIGHT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// One counter a call must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge<'a> {
    /// The counter's key (unique per limit and key values; the backend adds its namespace).
    pub key: &'a str,
    /// The most the counter may hold; at least 1 (a limit of 0 never reaches the store).
    pub limit: u32,
    /// What is counted.
    pub kind: ChargeKind,
}

/// What a [`Charge`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeKind {
    /// Calls in a fixed window of this length that starts with the key's first admitted call.
    Window(Duration),
    /// Calls in flight at once; an admitted charge holds a [`Permit`].
    InFlight,
}

/// The answer to [`Store::admit`].
#[derive(Debug)]
#[must_use]
pub enum Admission {
    /// Every charge passed and was counted; the permits of the in-flight charges, in order.
    Admitted(Vec<Permit>),
    /// A charge would exceed its limit; nothing was counted.
    Refused {
        /// Index of the first refusing charge in the slice given to `admit`.
        index: usize,
        /// When the charge can pass again: the rest of its window, or
        /// [`IN_FLIGHT_RETRY_AFTER`] for an in-flight count.
        retry_after: Duration,
    },
}

/// Why the store could not answer. A caller decides what a call gets then (`state.on_error`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The memory store holds its maximum number of live keys.
    #[error("the state store is full ({capacity} live keys)")]
    Full {
        /// The configured cap.
        capacity: usize,
    },
    /// The backend did not answer in time.
    #[error("the state store did not answer within {0:?}")]
    Timeout(Duration),
    /// The backend failed (connection refused or lost, server error).
    #[error("the state store failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The backend answered something this code does not understand.
    #[error("the state store answered unexpectedly: {0}")]
    UnexpectedReply(String),
    /// A Redis URL was configured but this build has no Redis support.
    #[error(
        "state.url names a Redis server but this build has no Redis support (cargo feature `redis`)"
    )]
    Unsupported,
    /// The Redis backend was created outside a Tokio runtime.
    #[error("the Redis state store must be created inside a Tokio runtime")]
    NoRuntime,
}

/// The state store; cheap to clone (an `Arc` inside each backend).
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    /// Session locks in this process, and the session histories of the memory backend.
    local: std::sync::Arc<session::Local>,
}

#[derive(Clone)]
enum Backend {
    Memory(MemoryStore),
    #[cfg(feature = "redis")]
    Redis(RedisStore),
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.backend {
            Backend::Memory(store) => store.fmt(f),
            #[cfg(feature = "redis")]
            Backend::Redis(store) => store.fmt(f),
        }
    }
}

impl Store {
    /// A memory store.
    #[must_use]
    pub fn memory(settings: MemorySettings) -> Self {
        Self {
            backend: Backend::Memory(MemoryStore::new(settings)),
            local: std::sync::Arc::default(),
        }
    }

    /// A Redis store. Connects lazily: it is created even when Redis is down, and every
    /// operation fails with [`StoreError`] until Redis answers (see [`Store::ping`]). Must be
    /// called inside a Tokio runtime (it spawns the permit renewal and release tasks).
    ///
    /// # Errors
    /// A URL the client rejects, or no Tokio runtime.
    #[cfg(feature = "redis")]
    pub fn redis(settings: RedisSettings) -> Result<Self, StoreError> {
        Ok(Self {
            backend: Backend::Redis(RedisStore::new(settings)?),
            local: std::sync::Arc::default(),
        })
    }

    /// The store `[state]` configures.
    ///
    /// # Errors
    /// A Redis URL in a build without the `redis` feature, or the errors of [`Store::redis`].
    pub fn from_settings(settings: &StateSettings) -> Result<Self, StoreError> {
        match &settings.backend {
            BackendSettings::Memory => Ok(Self::memory(MemorySettings {
                max_keys: settings.max_keys,
                ..MemorySettings::default()
            })),
            #[cfg(feature = "redis")]
            BackendSettings::Redis(url) => Self::redis(RedisSettings {
                url: url.clone(),
                pool_size: settings.pool_size,
                timeout: settings.timeout,
                key_prefix: settings.key_prefix.clone(),
                connection_lease: settings.connection_lease,
            }),
            #[cfg(not(feature = "redis"))]
            BackendSettings::Redis(_) => Err(StoreError::Unsupported),
        }
    }

    /// `memory` or `redis`: for metric labels and logs.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match &self.backend {
            Backend::Memory(_) => "memory",
            #[cfg(feature = "redis")]
            Backend::Redis(_) => "redis",
        }
    }

    /// Charges every counter of one call, or none of them (see the module doc). `charges` must
    /// have distinct keys; an empty slice is admitted without touching the backend.
    ///
    /// # Errors
    /// The backend could not answer: a caller applies `state.on_error`.
    pub async fn admit(&self, charges: &[Charge<'_>]) -> Result<Admission, StoreError> {
        if charges.is_empty() {
            return Ok(Admission::Admitted(Vec::new()));
        }
        match &self.backend {
            Backend::Memory(store) => store.admit(charges),
            #[cfg(feature = "redis")]
            Backend::Redis(store) => store.admit(charges).await,
        }
    }

    /// Whether the backend answers (for a readiness probe); the memory store always does.
    ///
    /// # Errors
    /// The backend could not answer.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Memory(_) => Ok(()),
            #[cfg(feature = "redis")]
            Backend::Redis(store) => store.ping().await,
        }
    }
}

impl From<MemoryStore> for Store {
    fn from(store: MemoryStore) -> Self {
        Self {
            backend: Backend::Memory(store),
            local: std::sync::Arc::default(),
        }
    }
}

#[cfg(feature = "redis")]
impl From<RedisStore> for Store {
    fn from(store: RedisStore) -> Self {
        Self {
            backend: Backend::Redis(store),
            local: std::sync::Arc::default(),
        }
    }
}

/// A slot of an in-flight limit; dropping it gives the slot back (at once in memory; in Redis
/// through a background task, and by lease expiry if this process dies first).
#[must_use = "dropping a permit releases its slot at once"]
pub struct Permit {
    inner: PermitInner,
}

enum PermitInner {
    Memory(memory::Held),
    #[cfg(feature = "redis")]
    Redis(redis::Held),
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (backend, key) = match &self.inner {
            PermitInner::Memory(held) => ("memory", held.key()),
            #[cfg(feature = "redis")]
            PermitInner::Redis(held) => ("redis", held.key()),
        };
        f.debug_struct("Permit")
            .field("backend", &backend)
            .field("key", &key)
            .finish()
    }
}
