//! The memory store: counters in this process, for one replica.
//!
//! Keys are spread over shards by a keyed hash (`RandomState`: callers choose part of the keys,
//! so the spread must not be predictable); each shard is a mutex over two maps held for well
//! under a microsecond. An admission locks the shards of its charges in ascending order, so
//! charging several counters is atomic and two admissions cannot deadlock.
//!
//! Bounded: at most `max_keys` live keys in total (a share per shard). A window whose end has
//! passed is dead and is dropped when its key is next used, or in one sweep of its shard when
//! the shard is full and its earliest window end has passed. A shard full of live keys refuses
//! new keys with [`StoreError::Full`] rather than evicting a live counter (which would reset
//! someone's limit): the caller then applies `on_error`. A flood of distinct keys therefore
//! costs at most `max_keys` entries, and one sweep per shard per window length.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::config::DEFAULT_MAX_KEYS;
use super::{
    Admission, Charge, ChargeKind, IN_FLIGHT_RETRY_AFTER, Permit, PermitInner, StoreError,
};

/// Tuning of the memory store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemorySettings {
    /// Cap on live keys (window counters and in-flight counts together).
    pub max_keys: usize,
    /// Number of shards (rounded down to a power of two, and to at most `max_keys`).
    pub shards: usize,
}

impl Default for MemorySettings {
    fn default() -> Self {
        Self {
            max_keys: DEFAULT_MAX_KEYS,
            shards: 64,
        }
    }
}

/// Counters in this process; cheap to clone.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    shard_cap: usize,
    max_keys: usize,
}

#[derive(Default)]
struct Shard {
    windows: HashMap<Box<str>, Window>,
    in_flight: HashMap<Box<str>, u32>,
    /// The earliest end of the windows in this shard (a lower bound): a sweep before then
    /// would free nothing.
    earliest_end: Option<Instant>,
}

struct Window {
    count: u32,
    length: Duration,
    ends: Instant,
}

impl Window {
    /// Whether the window still counts at `now` for a charge of this length (a limit whose
    /// period changed on reload starts a fresh window).
    fn live(&self, now: Instant, length: Duration) -> bool {
        now < self.ends && self.length == length
    }
}

impl Shard {
    fn len(&self) -> usize {
        self.windows.len() + self.in_flight.len()
    }

    /// Drops dead windows, if any can have died since the last sweep.
    fn sweep(&mut self, now: Instant) {
        if self.earliest_end.is_none_or(|end| now < end) {
            return;
        }
        self.windows.retain(|_, w| now < w.ends);
        self.earliest_end = self.windows.values().map(|w| w.ends).min();
    }

    /// Whether charging `charge` needs a new entry in this shard (a dead window is replaced
    /// in place).
    fn needs_entry(&self, charge: &Charge<'_>) -> bool {
        match charge.kind {
            ChargeKind::Window(_) => !self.windows.contains_key(charge.key),
            ChargeKind::InFlight => !self.in_flight.contains_key(charge.key),
        }
    }

    /// When `charge` can pass again, if it cannot now.
    fn refusal(&self, charge: &Charge<'_>, now: Instant) -> Option<Duration> {
        match charge.kind {
            ChargeKind::Window(length) => self
                .windows
                .get(charge.key)
                .filter(|w| w.live(now, length) && w.count >= charge.limit)
                .map(|w| w.ends.saturating_duration_since(now)),
            ChargeKind::InFlight => self
                .in_flight
                .get(charge.key)
                .filter(|held| **held >= charge.limit)
                .map(|_| IN_FLIGHT_RETRY_AFTER),
        }
    }

    fn note_end(&mut self, ends: Instant) {
        self.earliest_end = Some(self.earliest_end.map_or(ends, |e| e.min(ends)));
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &self.inner.shards.len())
            .field("max_keys", &self.inner.max_keys)
            .finish_non_exhaustive()
    }
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic while holding a shard cannot leave a half-written counter (every update is one
    // assignment), so a poisoned shard is still sound.
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new(settings: MemorySettings) -> Self {
        let max_keys = settings.max_keys.max(1);
        // A power of two no larger than the cap, so every shard has room for a key and the
        // shares add up to at most the cap.
        let wanted = settings.shards.clamp(1, 1024).min(max_keys);
        let shards = 1_usize << wanted.ilog2();
        Self {
            inner: Arc::new(Inner {
                shards: (0..shards).map(|_| Mutex::default()).collect(),
                hasher: RandomState::new(),
                shard_cap: max_keys / shards,
                max_keys,
            }),
        }
    }

    /// Live keys (dead windows not yet swept included): for tests and metrics.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Whether the store holds no key.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard_of(&self, key: &str) -> usize {
        let hash = self.inner.hasher.hash_one(key);
        // The high bits: the maps inside the shard use the low ones of their own hash.
        (hash >> 40) as usize & (self.inner.shards.len() - 1)
    }

    pub(super) fn admit(&self, charges: &[Charge<'_>]) -> Result<Admission, StoreError> {
        let now = Instant::now();
        if let [charge] = charges {
            return self.admit_one(charge, now);
        }
        let mut order: Vec<(usize, usize)> = charges
            .iter()
            .enumerate()
            .map(|(i, c)| (self.shard_of(c.key), i))
            .collect();
        order.sort_unstable();
        // Lock each shard once, in ascending order.
        let mut guards: Vec<(usize, MutexGuard<'_, Shard>)> = Vec::with_capacity(order.len());
        // `slots[n]`: the guard of the shard of `order[n]`.
        let mut slots = Vec::with_capacity(order.len());
        for &(shard, _) in &order {
            if guards.last().is_none_or(|(s, _)| *s != shard) {
                guards.push((shard, lock(&self.inner.shards[shard])));
            }
            slots.push(guards.len() - 1);
        }

        // Check every charge (and room for the new keys) before counting any.
        for (&(_, index), &slot) in order.iter().zip(&slots) {
            if let Some(retry_after) = guards[slot].1.refusal(&charges[index], now) {
                return Ok(Admission::Refused { index, retry_after });
            }
        }
        for (shard_index, guard) in &mut guards {
            let needed = order
                .iter()
                .filter(|(s, i)| s == shard_index && guard.needs_entry(&charges[*i]))
                .count();
            self.make_room(guard, needed, now)?;
        }

        let mut permits = Vec::new();
        for (&(shard_index, index), &slot) in order.iter().zip(&slots) {
            let permit = self.count(&mut guards[slot].1, shard_index, &charges[index], now);
            permits.extend(permit.map(|p| (index, p)));
        }
        drop(guards);
        // Permits in the order of the charges.
        permits.sort_unstable_by_key(|(i, _)| *i);
        Ok(Admission::Admitted(
            permits.into_iter().map(|(_, p)| p).collect(),
        ))
    }

    /// The common case, one limit: one shard, no bookkeeping.
    fn admit_one(&self, charge: &Charge<'_>, now: Instant) -> Result<Admission, StoreError> {
        let shard_index = self.shard_of(charge.key);
        let mut shard = lock(&self.inner.shards[shard_index]);
        if let Some(retry_after) = shard.refusal(charge, now) {
            return Ok(Admission::Refused {
                index: 0,
                retry_after,
            });
        }
        let needed = usize::from(shard.needs_entry(charge));
        self.make_room(&mut shard, needed, now)?;
        let permit = self.count(&mut shard, shard_index, charge, now);
        drop(shard);
        Ok(Admission::Admitted(permit.into_iter().collect()))
    }

    /// Makes sure `shard` can take `needed` new keys: sweeps it if full, else refuses.
    fn make_room(&self, shard: &mut Shard, needed: usize, now: Instant) -> Result<(), StoreError> {
        if needed == 0 || shard.len() + needed <= self.inner.shard_cap {
            return Ok(());
        }
        shard.sweep(now);
        if shard.len() + needed <= self.inner.shard_cap {
            Ok(())
        } else {
            Err(StoreError::Full {
                capacity: self.inner.max_keys,
            })
        }
    }

    /// Counts an admitted charge; an in-flight one returns its permit.
    fn count(
        &self,
        shard: &mut Shard,
        shard_index: usize,
        charge: &Charge<'_>,
        now: Instant,
    ) -> Option<Permit> {
        match charge.kind {
            ChargeKind::Window(length) => {
                let fresh = Window {
                    count: 1,
                    length,
                    ends: now + length,
                };
                let ends = fresh.ends;
                let started = match shard.windows.get_mut(charge.key) {
                    Some(w) if w.live(now, length) => {
                        w.count += 1;
                        false
                    }
                    Some(w) => {
                        *w = fresh;
                        true
                    }
                    None => {
                        shard.windows.insert(charge.key.into(), fresh);
                        true
                    }
                };
                if started {
                    shard.note_end(ends);
                }
                None
            }
            ChargeKind::InFlight => {
                match shard.in_flight.get_mut(charge.key) {
                    Some(held) => *held += 1,
                    None => {
                        shard.in_flight.insert(charge.key.into(), 1);
                    }
                }
                Some(Permit {
                    inner: PermitInner::Memory(Held {
                        store: Arc::clone(&self.inner),
                        shard: shard_index,
                        key: charge.key.into(),
                    }),
                })
            }
        }
    }
}

/// An in-flight slot held in the memory store.
pub(super) struct Held {
    store: Arc<Inner>,
    shard: usize,
    key: Box<str>,
}

impl Held {
    pub(super) fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut shard = lock(&self.store.shards[self.shard]);
        if let Some(held) = shard.in_flight.get_mut(&*self.key) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                shard.in_flight.remove(&*self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    fn store(max_keys: usize, shards: usize) -> MemoryStore {
        MemoryStore::new(MemorySettings { max_keys, shards })
    }

    fn window(key: &str, limit: u32, secs: u64) -> Charge<'_> {
        Charge {
            key,
            limit,
            kind: ChargeKind::Window(Duration::from_secs(secs)),
        }
    }

    fn in_flight(key: &str, limit: u32) -> Charge<'_> {
        Charge {
            key,
            limit,
            kind: ChargeKind::InFlight,
        }
    }

    fn admitted(store: &MemoryStore, charges: &[Charge<'_>]) -> Vec<Permit> {
        match store.admit(charges).expect("store answers") {
            Admission::Admitted(permits) => permits,
            Admission::Refused { index, .. } => panic!("charge {index} refused"),
        }
    }

    fn refused(store: &MemoryStore, charges: &[Charge<'_>]) -> (usize, Duration) {
        match store.admit(charges).expect("store answers") {
            Admission::Admitted(_) => panic!("admitted"),
            Admission::Refused { index, retry_after } => (index, retry_after),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn counts_a_window_to_its_limit_then_refuses_until_it_ends() {
        let s = store(100, 4);
        let charge = [window("lim/alice", 2, 60)];
        admitted(&s, &charge);
        advance(Duration::from_secs(20)).await;
        admitted(&s, &charge);
        advance(Duration::from_millis(500)).await;
        assert_eq!(
            refused(&s, &charge),
            (0, Duration::from_millis(39_500)),
            "retry after the rest of the window that started with the first call"
        );
        advance(Duration::from_millis(39_500)).await;
        admitted(&s, &charge);
        admitted(&s, &charge);
        refused(&s, &charge);
    }

    #[tokio::test(start_paused = true)]
    async fn counters_are_separate_per_key() {
        let s = store(100, 4);
        admitted(&s, &[window("lim/alice", 1, 1)]);
        refused(&s, &[window("lim/alice", 1, 1)]);
        admitted(&s, &[window("lim/bob", 1, 1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn charges_all_or_nothing() {
        let s = store(100, 4);
        let both = [window("a", 5, 60), window("b", 1, 60)];
        admitted(&s, &both);
        assert_eq!(refused(&s, &both).0, 1);
        assert_eq!(refused(&s, &both).0, 1);
        // `a` was counted once, by the admitted call only: two more fit under a limit of 3.
        admitted(&s, &[window("a", 3, 60)]);
        admitted(&s, &[window("a", 3, 60)]);
        refused(&s, &[window("a", 3, 60)]);
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_permits_are_released_on_drop() {
        let s = store(100, 4);
        let charge = [in_flight("conn/alice", 2)];
        let first = admitted(&s, &charge);
        let second = admitted(&s, &charge);
        assert_eq!(first.len(), 1);
        assert_eq!(refused(&s, &charge), (0, IN_FLIGHT_RETRY_AFTER));
        drop(first);
        let third = admitted(&s, &charge);
        refused(&s, &charge);
        drop(second);
        drop(third);
        assert!(s.is_empty(), "a count back at zero leaves no key behind");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_mix_holds_no_permit() {
        let s = store(100, 4);
        let mix = [in_flight("c", 1), window("w", 1, 60)];
        let permits = admitted(&s, &mix);
        assert_eq!(permits.len(), 1);
        drop(permits);
        assert_eq!(refused(&s, &mix).0, 1);
        // The refused call took no slot: the slot is free again.
        let _held = admitted(&s, &[in_flight("c", 1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_period_starts_a_fresh_window() {
        let s = store(100, 4);
        admitted(&s, &[window("k", 1, 60)]);
        refused(&s, &[window("k", 1, 60)]);
        admitted(&s, &[window("k", 1, 1)]);
        assert_eq!(refused(&s, &[window("k", 1, 1)]).1, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_store_refuses_new_keys_and_serves_live_ones() {
        let s = store(4, 1);
        for key in ["a", "b", "c", "d"] {
            admitted(&s, &[window(key, 2, 60)]);
        }
        assert!(matches!(
            s.admit(&[window("e", 2, 60)]),
            Err(StoreError::Full { capacity: 4 })
        ));
        admitted(&s, &[window("a", 2, 60)]);
        assert_eq!(s.len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn dead_windows_make_room() {
        let s = store(4, 1);
        for key in ["a", "b", "c", "d"] {
            admitted(&s, &[window(key, 1, 1)]);
        }
        advance(Duration::from_secs(1)).await;
        admitted(&s, &[window("e", 1, 1)]);
        assert_eq!(s.len(), 1, "one sweep dropped the four dead windows");
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_distinct_keys_stays_within_the_cap() {
        let s = store(256, 16);
        let mut full = 0;
        for n in 0..20_000 {
            let key = format!("lim/caller-{n}");
            match s.admit(&[window(&key, 5, 60)]) {
                Ok(Admission::Admitted(_)) => {}
                Ok(Admission::Refused { .. }) => panic!("a fresh key is never over its limit"),
                Err(StoreError::Full { .. }) => full += 1,
                Err(e) => panic!("{e}"),
            }
            assert!(s.len() <= 256);
        }
        assert!(full >= 20_000 - 256, "{full} refusals");
        advance(Duration::from_secs(60)).await;
        admitted(&s, &[window("lim/after", 5, 60)]);
    }

    #[test]
    fn shards_never_add_up_to_more_than_the_cap() {
        let s = store(3, 64);
        assert_eq!(s.inner.shards.len(), 2);
        assert_eq!(s.inner.shard_cap * s.inner.shards.len(), 2);
    }
}
