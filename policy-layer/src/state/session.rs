//! Session histories for temporal policies (`docs/temporal.md`, "Sessions"): each session's
//! recorded events (JSON text, written by `temporal::Event::to_json`), the fingerprint of the
//! temporal policies it was recorded under, and one decision at a time per session.
//!
//! - [`Store::session_lock`]: the session's critical section. In this process a mutex per
//!   session; on Redis also a lock key (`SET NX PX`, released by token), so replicas sharing
//!   a session decide one call at a time.
//! - [`Store::session_read`]: the events at or after a time, oldest first, or why the
//!   session cannot be read ([`SessionState`]): another fingerprint (the temporal policies
//!   changed), evicted, overflowed.
//! - [`Store::session_append`]: appends events, creating the session with the fingerprint;
//!   drops the events older than the largest window; past [`SessionBounds::max_events`] the
//!   session is marked overflowed rather than losing history; refreshes the idle expiry.
//!
//! Bounded: in memory at most [`SessionBounds::max_sessions`] sessions; past it the least
//! recently used are evicted and remembered as evicted (tombstones) until their idle expiry,
//! so their next call is refused (409) rather than decided over an empty history. A session
//! idle for [`SessionBounds::idle`] (24 hours, no window is longer) simply ends: nothing it
//! held could be read any more. On Redis the keys expire after the same idle time; Redis must
//! not evict them under memory pressure (`maxmemory-policy noeviction`), since a session
//! whose keys vanished would read as new. A session whose metadata vanished but whose events
//! remain reads as evicted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use super::{Backend, Store, StoreError};

/// How long a session lives after its last recorded event: AgentCore's 24 hours.
pub const SESSION_IDLE: Duration = Duration::from_secs(24 * 60 * 60);
/// Default cap on events kept per session (within the largest window).
pub const DEFAULT_MAX_EVENTS: usize = 10_000;
/// Default cap on sessions held in memory.
pub const DEFAULT_MAX_SESSIONS: usize = 100_000;
/// How long a replica may hold a session's Redis lock before it frees itself (a replica that
/// died while deciding).
pub const LOCK_LEASE: Duration = Duration::from_secs(5);

/// The bounds of session histories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionBounds {
    /// Events kept per session; one more marks it overflowed.
    pub max_events: usize,
    /// Sessions kept in memory.
    pub max_sessions: usize,
    /// Idle expiry.
    pub idle: Duration,
}

impl Default for SessionBounds {
    fn default() -> Self {
        Self {
            max_events: DEFAULT_MAX_EVENTS,
            max_sessions: DEFAULT_MAX_SESSIONS,
            idle: SESSION_IDLE,
        }
    }
}

/// What reading a session found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionState {
    /// No such session: its first call.
    New,
    /// The session's events in the window asked for, oldest first (JSON text each).
    Live(Vec<String>),
    /// Recorded under other temporal policies.
    Changed,
    /// Evicted from the store before its idle expiry.
    Evicted,
    /// More events than the store keeps per session.
    Overflowed,
}

/// A session's critical section; dropping it ends it.
#[must_use = "dropping the lock ends the session's critical section"]
pub struct SessionLock {
    _local: tokio::sync::OwnedMutexGuard<()>,
    #[cfg(feature = "redis")]
    _remote: Option<super::redis::SessionLockKey>,
}

impl std::fmt::Debug for SessionLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionLock").finish_non_exhaustive()
    }
}

/// The per-process parts of session state: a mutex per session (both backends), and the
/// histories themselves for the memory backend.
#[derive(Debug, Default)]
pub(super) struct Local {
    locks: Mutex<HashMap<Box<str>, Weak<tokio::sync::Mutex<()>>>>,
    table: Mutex<Table>,
    pub(super) bounds: SessionBounds,
}

#[derive(Debug, Default)]
struct Table {
    sessions: HashMap<Box<str>, Session>,
    /// Evicted sessions, until the idle expiry they would have had.
    tombstones: HashMap<Box<str>, i64>,
}

#[derive(Debug)]
struct Session {
    fingerprint: u64,
    /// `(time, event)`, in order of time.
    events: Vec<(i64, String)>,
    overflowed: bool,
    last_ms: i64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update of these maps is complete before the guard drops, so a poisoned one is
    // still sound.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Local {
    pub(super) fn new(bounds: SessionBounds) -> Self {
        Self {
            bounds,
            ..Self::default()
        }
    }

    fn mutex(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = lock(&self.locks);
        if let Some(m) = locks.get(key).and_then(Weak::upgrade) {
            return m;
        }
        let m = Arc::new(tokio::sync::Mutex::new(()));
        if locks.len() >= 1024 && locks.len().is_power_of_two() {
            locks.retain(|_, w| w.strong_count() > 0);
        }
        locks.insert(key.into(), Arc::downgrade(&m));
        m
    }

    fn read(&self, key: &str, fingerprint: u64, since_ms: i64, now_ms: i64) -> SessionState {
        let mut table = lock(&self.table);
        let idle = millis(self.bounds.idle);
        if let Some(&until) = table.tombstones.get(key) {
            if now_ms < until {
                return SessionState::Evicted;
            }
            table.tombstones.remove(key);
        }
        let Some(session) = table.sessions.get(key) else {
            return SessionState::New;
        };
        if now_ms.saturating_sub(session.last_ms) > idle {
            table.sessions.remove(key);
            return SessionState::New;
        }
        if session.overflowed {
            return SessionState::Overflowed;
        }
        if session.fingerprint != fingerprint {
            return SessionState::Changed;
        }
        let from = session.events.partition_point(|(t, _)| *t < since_ms);
        SessionState::Live(
            session.events[from..]
                .iter()
                .map(|(_, e)| e.clone())
                .collect(),
        )
    }

    fn append(
        &self,
        key: &str,
        fingerprint: u64,
        events: &[(i64, String)],
        horizon_ms: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut table = lock(&self.table);
        let idle = millis(self.bounds.idle);
        if table
            .tombstones
            .get(key)
            .is_some_and(|until| now_ms < *until)
        {
            return Ok(());
        }
        let expired = table
            .sessions
            .get(key)
            .is_some_and(|s| now_ms.saturating_sub(s.last_ms) > idle);
        if expired {
            table.sessions.remove(key);
        }
        if !table.sessions.contains_key(key) {
            self.make_room(&mut table, now_ms, idle);
            table.tombstones.remove(key);
            table.sessions.insert(
                key.into(),
                Session {
                    fingerprint,
                    events: Vec::new(),
                    overflowed: false,
                    last_ms: now_ms,
                },
            );
        }
        let max_events = self.bounds.max_events;
        let Some(session) = table.sessions.get_mut(key) else {
            return Ok(());
        };
        session.last_ms = session.last_ms.max(now_ms);
        if session.fingerprint != fingerprint || session.overflowed {
            return Ok(());
        }
        for (t, e) in events {
            // Events arrive nearly in order (a completion may land after a later decision):
            // insert in place.
            let at = session.events.partition_point(|(u, _)| u <= t);
            session.events.insert(at, (*t, e.clone()));
        }
        let old = session.events.partition_point(|(t, _)| *t < horizon_ms);
        session.events.drain(..old);
        if session.events.len() > max_events {
            session.overflowed = true;
            session.events = Vec::new();
        }
        Ok(())
    }

    /// Makes room for one more session: evicts the least recently used eighth when full,
    /// remembering them as evicted until their idle expiry.
    fn make_room(&self, table: &mut Table, now_ms: i64, idle: i64) {
        let cap = self.bounds.max_sessions.max(1);
        if table.sessions.len() < cap {
            return;
        }
        table
            .sessions
            .retain(|_, s| now_ms.saturating_sub(s.last_ms) <= idle);
        if table.sessions.len() < cap {
            return;
        }
        let mut by_age: Vec<(i64, Box<str>)> = table
            .sessions
            .iter()
            .map(|(k, s)| (s.last_ms, k.clone()))
            .collect();
        by_age.sort_unstable();
        let evict = (cap / 8).max(1);
        if table.tombstones.len() + evict > cap {
            table.tombstones.retain(|_, until| now_ms < *until);
        }
        for (last, key) in by_age.into_iter().take(evict) {
            table.sessions.remove(&key);
            if table.tombstones.len() < cap {
                table.tombstones.insert(key, last.saturating_add(idle));
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.table).sessions.len()
    }
}

impl Store {
    /// The bounds of session histories.
    #[must_use]
    pub fn session_bounds(&self) -> SessionBounds {
        self.local.bounds
    }

    /// This store with other session bounds (a fresh session table: call before use).
    #[must_use]
    pub fn with_session_bounds(mut self, bounds: SessionBounds) -> Self {
        self.local = Arc::new(Local::new(bounds));
        self
    }

    /// Enters the critical section of session `key`: one decision at a time per session, in
    /// this process and, on Redis, across the replicas sharing it.
    ///
    /// # Errors
    /// The backend could not answer, or the lock stayed taken past the store's timeout.
    pub async fn session_lock(&self, key: &str) -> Result<SessionLock, StoreError> {
        let local = self.local.mutex(key).lock_owned().await;
        match &self.backend {
            Backend::Memory(_) => Ok(SessionLock {
                _local: local,
                #[cfg(feature = "redis")]
                _remote: None,
            }),
            #[cfg(feature = "redis")]
            Backend::Redis(store) => {
                let remote = store.session_lock(key, LOCK_LEASE).await?;
                Ok(SessionLock {
                    _local: local,
                    _remote: Some(remote),
                })
            }
        }
    }

    /// The events of session `key` at or after `since_ms`, if it was recorded under
    /// `fingerprint` (see [`SessionState`]). `now_ms` is the time now, for idle expiry.
    ///
    /// # Errors
    /// The backend could not answer.
    pub async fn session_read(
        &self,
        key: &str,
        fingerprint: u64,
        since_ms: i64,
        now_ms: i64,
    ) -> Result<SessionState, StoreError> {
        match &self.backend {
            Backend::Memory(_) => Ok(self.local.read(key, fingerprint, since_ms, now_ms)),
            #[cfg(feature = "redis")]
            Backend::Redis(store) => store.session_read(key, fingerprint, since_ms).await,
        }
    }

    /// Appends `events` (`(time ms, JSON)`) to session `key`, creating it under
    /// `fingerprint`; drops its events older than `horizon_ms`. A session recorded under
    /// another fingerprint, evicted or overflowed is left as it is.
    ///
    /// # Errors
    /// The backend could not answer.
    pub async fn session_append(
        &self,
        key: &str,
        fingerprint: u64,
        events: &[(i64, String)],
        horizon_ms: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        match &self.backend {
            Backend::Memory(_) => self
                .local
                .append(key, fingerprint, events, horizon_ms, now_ms),
            #[cfg(feature = "redis")]
            Backend::Redis(store) => {
                store
                    .session_append(key, fingerprint, events, horizon_ms, self.local.bounds)
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: i64) -> (i64, String) {
        (t, format!("{{\"t\":{t}}}"))
    }

    fn live(state: SessionState) -> Vec<String> {
        match state {
            SessionState::Live(events) => events,
            other => panic!("live session expected, got {other:?}"),
        }
    }

    #[test]
    fn a_session_reads_its_events_in_time_order_from_a_time() {
        let local = Local::new(SessionBounds::default());
        assert_eq!(local.read("k", 1, 0, 0), SessionState::New);
        local
            .append("k", 1, &[ev(10), ev(30)], 0, 30)
            .expect("append");
        local.append("k", 1, &[ev(20)], 0, 31).expect("append");
        assert_eq!(live(local.read("k", 1, 0, 40)).len(), 3);
        assert_eq!(live(local.read("k", 1, 20, 40)), [ev(20).1, ev(30).1]);
    }

    #[test]
    fn another_fingerprint_reads_as_changed_and_is_not_written() {
        let local = Local::new(SessionBounds::default());
        local.append("k", 1, &[ev(10)], 0, 10).expect("append");
        assert_eq!(local.read("k", 2, 0, 11), SessionState::Changed);
        local.append("k", 2, &[ev(11)], 0, 11).expect("append");
        assert_eq!(live(local.read("k", 1, 0, 12)).len(), 1);
    }

    #[test]
    fn too_many_events_overflow_the_session_instead_of_dropping_history() {
        let local = Local::new(SessionBounds {
            max_events: 2,
            ..SessionBounds::default()
        });
        local.append("k", 1, &[ev(1), ev(2)], 0, 2).expect("append");
        local.append("k", 1, &[ev(3)], 0, 3).expect("append");
        assert_eq!(local.read("k", 1, 0, 4), SessionState::Overflowed);
    }

    #[test]
    fn events_older_than_the_horizon_are_dropped_and_do_not_count() {
        let local = Local::new(SessionBounds {
            max_events: 2,
            ..SessionBounds::default()
        });
        local.append("k", 1, &[ev(1), ev(2)], 0, 2).expect("append");
        local.append("k", 1, &[ev(3)], 2, 3).expect("append");
        assert_eq!(live(local.read("k", 1, 0, 4)).len(), 2);
    }

    #[test]
    fn evicted_sessions_read_as_evicted_until_their_idle_expiry() {
        let idle = Duration::from_secs(100);
        let local = Local::new(SessionBounds {
            max_sessions: 2,
            idle,
            ..SessionBounds::default()
        });
        local.append("a", 1, &[ev(1)], 0, 1).expect("append");
        local.append("b", 1, &[ev(2)], 0, 2).expect("append");
        local.append("c", 1, &[ev(3)], 0, 3).expect("append");
        assert_eq!(local.len(), 2);
        assert_eq!(local.read("a", 1, 0, 4), SessionState::Evicted);
        local.append("a", 1, &[ev(5)], 0, 5).expect("append");
        assert_eq!(local.read("a", 1, 0, 6), SessionState::Evicted);
        assert_eq!(local.read("a", 1, 0, 1 + 100_000), SessionState::New);
    }

    #[test]
    fn an_idle_session_ends_and_starts_afresh() {
        let local = Local::new(SessionBounds {
            idle: Duration::from_secs(1),
            ..SessionBounds::default()
        });
        local.append("k", 1, &[ev(0)], 0, 0).expect("append");
        assert_eq!(local.read("k", 2, 0, 2_000), SessionState::New);
    }

    #[tokio::test]
    async fn one_decision_at_a_time_per_session() {
        let store = Store::memory(super::super::MemorySettings::default());
        let held = store.session_lock("k").await.expect("lock");
        let other = store.session_lock("other").await.expect("other session");
        drop(other);
        use futures_util::FutureExt as _;
        assert!(
            store.session_lock("k").now_or_never().is_none(),
            "second lock entered while the first was held"
        );
        drop(held);
        let _again = store.session_lock("k").await.expect("lock after release");
    }
}
