//! The Redis store: counters shared by every replica that points at the same Redis.
//!
//! - Connections: a small pool of `redis` connection managers, each one multiplexed connection
//!   that pipelines every concurrent caller's commands and reconnects by itself after an error;
//!   callers take them round robin. They connect lazily, so a replica starts while Redis is down.
//! - Every command runs under [`RedisSettings::timeout`]; past it the call gets
//!   [`StoreError::Timeout`] and `on_error` decides. The connection manager's own reconnect
//!   back-off therefore never holds a request longer than that.
//! - One admission is one `EVALSHA` of [`ADMIT`]: it checks every charge, then counts all of them
//!   or none, atomically (Redis runs a script alone) and in one round trip however many limits
//!   match. The script reads Redis' own clock (`TIME`), so replicas with skewed clocks agree.
//!
//! Key layout (`<prefix>` is `state.key_prefix`, `mcp-policy:` by default):
//!
//! - `<prefix>rl:<window ms>:<limit key>`: a window counter (string), created with
//!   `SET .. PX <window> NX` and counted with `INCR`, so it expires with its window.
//! - `<prefix>cc:<limit key>`: the calls in flight (sorted set); a member per call, scored with
//!   the time its lease ends. An admission first drops expired members, then counts the rest.
//!   This process renews the leases of the calls it still runs every third of the lease and
//!   removes a member when its [`Permit`](super::Permit) is dropped; a replica that dies stops
//!   renewing, and its calls stop counting when their leases end. The key itself expires one
//!   lease after its last admission or renewal.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::config::{
    DEFAULT_CONNECTION_LEASE, DEFAULT_KEY_PREFIX, DEFAULT_POOL_SIZE, DEFAULT_TIMEOUT, RedisUrl,
};
use super::{
    Admission, Charge, ChargeKind, IN_FLIGHT_RETRY_AFTER, Permit, PermitInner, StoreError,
};

/// Checks every charge, then counts all or none. KEYS: one counter per charge. ARGV[1]: the
/// in-flight lease (ms); ARGV[2]: the member naming this call in in-flight sets; then per
/// charge its limit and its window (ms; 0 for an in-flight count). Returns `{0, 0}` when
/// admitted, else `{index of the refusing charge (from 1), ms until its window ends, or -1}`.
static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local lease = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[1 + 2 * i])
  local window = tonumber(ARGV[2 + 2 * i])
  if window > 0 then
    local count = tonumber(redis.call('GET', key) or '0')
    if count >= limit then
      local ttl = redis.call('PTTL', key)
      if ttl < 0 then
        redis.call('PEXPIRE', key, window)
        ttl = window
      end
      return {i, ttl}
    end
  else
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    if redis.call('ZCARD', key) >= limit then
      return {i, -1}
    end
  end
end
for i, key in ipairs(KEYS) do
  local window = tonumber(ARGV[2 + 2 * i])
  if window > 0 then
    redis.call('SET', key, 0, 'PX', window, 'NX')
    redis.call('INCR', key)
  else
    redis.call('ZADD', key, now + lease, ARGV[2])
    redis.call('PEXPIRE', key, lease)
  end
end
return {0, 0}
",
    )
});

/// Extends the leases of calls still in flight. KEYS: in-flight sets; ARGV[1]: the lease (ms);
/// ARGV[1 + i]: the member of KEYS[i]. `XX`: a member already released stays released. The
/// set then lives one lease past its newest lease, however its members move.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local lease = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', now + lease, ARGV[1 + i])
  redis.call('PEXPIRE', key, lease)
end
return 0
",
    )
});

/// Leases renewed per script call.
const RENEW_BATCH: usize = 512;
/// Releases sent per pipeline.
const RELEASE_BATCH: usize = 256;

/// Settings of the Redis store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port/db`.
    pub url: RedisUrl,
    /// Number of multiplexed connections.
    pub pool_size: usize,
    /// Timeout of each command (and of each connection attempt).
    pub timeout: Duration,
    /// Namespace of every key.
    pub key_prefix: String,
    /// Lease of an in-flight slot.
    pub connection_lease: Duration,
}

impl RedisSettings {
    /// The defaults, for `url`.
    #[must_use]
    pub fn new(url: RedisUrl) -> Self {
        Self {
            url,
            pool_size: DEFAULT_POOL_SIZE,
            timeout: DEFAULT_TIMEOUT,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            connection_lease: DEFAULT_CONNECTION_LEASE,
        }
    }
}

/// Counters in Redis; cheap to clone. Dropping the last clone stops its background tasks.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Box<[ConnectionManager]>,
    next: AtomicUsize,
    timeout: Duration,
    prefix: String,
    lease: Duration,
    url: RedisUrl,
    /// Names this process in in-flight members.
    replica: String,
    sequence: AtomicU64,
    held: Arc<Registry>,
    tasks: [AbortHandle; 2],
}

/// An in-flight slot in Redis: its sorted set and its member.
type Slot = (Arc<str>, Arc<str>);

/// The in-flight slots this process holds, renewed until released.
struct Registry {
    live: Mutex<HashMap<u64, Slot>>,
    release: mpsc::UnboundedSender<Slot>,
}

impl Registry {
    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Slot>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.url)
            .field("pool_size", &self.inner.pool.len())
            .field("timeout", &self.inner.timeout)
            .field("key_prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

fn backend(error: redis::RedisError) -> StoreError {
    StoreError::Backend(Box::new(error))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn replica_id() -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    format!("{:016x}", hasher.finish())
}

impl RedisStore {
    /// A store for `settings.url`; see [`Store::redis`](super::Store::redis).
    ///
    /// # Errors
    /// A URL the client rejects, or no Tokio runtime.
    pub fn new(settings: RedisSettings) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StoreError::NoRuntime)?;
        let client = redis::Client::open(settings.url.expose()).map_err(backend)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(settings.timeout))
            .set_connection_timeout(Some(settings.timeout))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1))
            .set_number_of_retries(2);
        let pool = (0..settings.pool_size.max(1))
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), config.clone()))
            .collect::<Result<Box<[_]>, _>>()
            .map_err(backend)?;
        let (release, releases) = mpsc::unbounded_channel();
        let held = Arc::new(Registry {
            live: Mutex::default(),
            release,
        });
        let tasks = [
            runtime
                .spawn(renew(
                    Arc::clone(&held),
                    pool[0].clone(),
                    settings.connection_lease,
                    settings.timeout,
                ))
                .abort_handle(),
            runtime
                .spawn(release_all(releases, pool[0].clone(), settings.timeout))
                .abort_handle(),
        ];
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                next: AtomicUsize::new(0),
                timeout: settings.timeout,
                prefix: settings.key_prefix,
                lease: settings.connection_lease,
                url: settings.url,
                replica: replica_id(),
                sequence: AtomicU64::new(0),
                held,
                tasks,
            }),
        })
    }

    fn connection(&self) -> ConnectionManager {
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        self.inner.pool[n % self.inner.pool.len()].clone()
    }

    /// The Redis key of a charge.
    fn key(&self, charge: &Charge<'_>) -> String {
        match charge.kind {
            ChargeKind::Window(length) => {
                format!("{}rl:{}:{}", self.inner.prefix, millis(length), charge.key)
            }
            ChargeKind::InFlight => format!("{}cc:{}", self.inner.prefix, charge.key),
        }
    }

    pub(super) async fn admit(&self, charges: &[Charge<'_>]) -> Result<Admission, StoreError> {
        let in_flight = charges.iter().any(|c| c.kind == ChargeKind::InFlight);
        let token: Arc<str> = if in_flight {
            let n = self.inner.sequence.fetch_add(1, Ordering::Relaxed);
            format!("{}:{n}", self.inner.replica).into()
        } else {
            Arc::from("")
        };
        let keys: Vec<String> = charges.iter().map(|c| self.key(c)).collect();
        let mut invocation = ADMIT.prepare_invoke();
        invocation.arg(millis(self.inner.lease)).arg(&*token);
        for (charge, key) in charges.iter().zip(&keys) {
            let window = match charge.kind {
                ChargeKind::Window(length) => millis(length),
                ChargeKind::InFlight => 0,
            };
            invocation.key(key).arg(charge.limit).arg(window);
        }
        let mut connection = self.connection();
        let reply: Vec<i64> =
            tokio::time::timeout(self.inner.timeout, invocation.invoke_async(&mut connection))
                .await
                .map_err(|_| StoreError::Timeout(self.inner.timeout))?
                .map_err(backend)?;
        match reply[..] {
            [0, _] => {}
            [index, ttl]
                if index >= 1 && usize::try_from(index).is_ok_and(|i| i <= charges.len()) =>
            {
                let retry_after = u64::try_from(ttl)
                    .map(Duration::from_millis)
                    .unwrap_or(IN_FLIGHT_RETRY_AFTER);
                return Ok(Admission::Refused {
                    index: usize::try_from(index - 1).unwrap_or_default(),
                    retry_after,
                });
            }
            _ => return Err(StoreError::UnexpectedReply(format!("{reply:?}"))),
        }
        let mut permits = Vec::new();
        for (charge, key) in charges.iter().zip(keys) {
            if charge.kind != ChargeKind::InFlight {
                continue;
            }
            let id = self.inner.sequence.fetch_add(1, Ordering::Relaxed);
            let key: Arc<str> = key.into();
            self.inner
                .held
                .live()
                .insert(id, (Arc::clone(&key), Arc::clone(&token)));
            permits.push(Permit {
                inner: PermitInner::Redis(Held {
                    registry: Arc::clone(&self.inner.held),
                    id,
                    key,
                }),
            });
        }
        Ok(Admission::Admitted(permits))
    }

    /// Whether Redis answers `PING` within the timeout.
    ///
    /// # Errors
    /// Redis did not answer, or not in time.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection();
        let pong: String = tokio::time::timeout(
            self.inner.timeout,
            redis::cmd("PING").query_async(&mut connection),
        )
        .await
        .map_err(|_| StoreError::Timeout(self.inner.timeout))?
        .map_err(backend)?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StoreError::UnexpectedReply(pong))
        }
    }

    /// In-flight slots this process holds (for tests and metrics).
    #[must_use]
    pub fn held(&self) -> usize {
        self.inner.held.live().len()
    }
}

/// An in-flight slot held in Redis.
pub(super) struct Held {
    registry: Arc<Registry>,
    id: u64,
    key: Arc<str>,
}

impl Held {
    pub(super) fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Stop renewing first, then release; if the store is gone, the lease frees the slot.
        let entry = self.registry.live().remove(&self.id);
        if let Some(entry) = entry {
            let _ = self.registry.release.send(entry);
        }
    }
}

/// Renews the leases of the slots this process holds, every third of the lease.
async fn renew(
    registry: Arc<Registry>,
    mut connection: ConnectionManager,
    lease: Duration,
    timeout: Duration,
) {
    let mut ticks = tokio::time::interval(lease / 3);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let held: Vec<Slot> = registry.live().values().cloned().collect();
        for batch in held.chunks(RENEW_BATCH) {
            let mut invocation = RENEW.prepare_invoke();
            invocation.arg(millis(lease));
            for (key, token) in batch {
                invocation.key(&**key).arg(&**token);
            }
            match tokio::time::timeout(timeout, invocation.invoke_async::<i64>(&mut connection))
                .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, slots = batch.len(), "state store: renewing in-flight leases failed");
                    break;
                }
                Err(_) => {
                    tracing::warn!(
                        slots = batch.len(),
                        "state store: renewing in-flight leases timed out"
                    );
                    break;
                }
            }
        }
    }
}

/// Removes released slots from Redis, a pipeline per batch.
async fn release_all(
    mut releases: mpsc::UnboundedReceiver<Slot>,
    mut connection: ConnectionManager,
    timeout: Duration,
) {
    let mut batch = Vec::with_capacity(RELEASE_BATCH);
    while releases.recv_many(&mut batch, RELEASE_BATCH).await > 0 {
        let mut pipeline = redis::pipe();
        for (key, token) in batch.drain(..) {
            pipeline.cmd("ZREM").arg(&*key).arg(&*token).ignore();
        }
        match tokio::time::timeout(timeout, pipeline.exec_async(&mut connection)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "state store: releasing in-flight slots failed; their leases will expire");
            }
            Err(_) => {
                tracing::warn!(
                    "state store: releasing in-flight slots timed out; their leases will expire"
                );
            }
        }
    }
}

/// Reads a session. KEYS: its metadata hash, its events (sorted set). ARGV[1]: the
/// fingerprint; ARGV[2]: the earliest time read (ms). Returns `{status}` or `{"live", events...}`.
static SESSION_READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local fp = redis.call('HGET', KEYS[1], 'fp')
if not fp then
  if redis.call('EXISTS', KEYS[2]) == 1 then return {'evicted'} end
  return {'new'}
end
if redis.call('HGET', KEYS[1], 'over') == '1' then return {'overflowed'} end
if fp ~= ARGV[1] then return {'changed'} end
local out = {'live'}
for _, e in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[2], '+inf')) do
  out[#out + 1] = e
end
return out
",
    )
});

/// Appends events to a session. KEYS: metadata, events. ARGV: fingerprint, horizon (ms),
/// idle expiry (ms), most events, then per event its time and its text (stored as
/// `<sequence>|<text>` so equal events stay distinct). A session of another fingerprint, an
/// overflowed one, or one whose metadata vanished is left as it is.
static SESSION_APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local fp = redis.call('HGET', KEYS[1], 'fp')
if not fp then
  if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
  redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'seq', 0, 'over', 0)
elseif fp ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if redis.call('HGET', KEYS[1], 'over') == '1' then return 0 end
for i = 5, #ARGV, 2 do
  local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  redis.call('ZADD', KEYS[2], ARGV[i], seq .. '|' .. ARGV[i + 1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[2])
if redis.call('ZCARD', KEYS[2]) > tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[1], 'over', 1)
  redis.call('DEL', KEYS[2])
  return 0
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
",
    )
});

/// Releases a session lock if this caller still holds it. KEYS[1]: the lock; ARGV[1]: the token.
static SESSION_UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// A session's Redis lock; dropping it releases it (in the background; its lease frees it
/// if that fails).
pub(super) struct SessionLockKey {
    connection: ConnectionManager,
    key: String,
    token: String,
    timeout: Duration,
}

impl Drop for SessionLockKey {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut connection = self.connection.clone();
        let key = std::mem::take(&mut self.key);
        let token = std::mem::take(&mut self.token);
        let timeout = self.timeout;
        runtime.spawn(async move {
            let mut invocation = SESSION_UNLOCK.prepare_invoke();
            invocation.key(&key).arg(&token);
            if !matches!(
                tokio::time::timeout(timeout, invocation.invoke_async::<i64>(&mut connection))
                    .await,
                Ok(Ok(_))
            ) {
                tracing::warn!(
                    "state store: releasing a session lock failed; its lease will free it"
                );
            }
        });
    }
}

impl RedisStore {
    fn session_keys(&self, key: &str) -> (String, String) {
        (
            format!("{}ts:{{{key}}}:m", self.inner.prefix),
            format!("{}ts:{{{key}}}:e", self.inner.prefix),
        )
    }

    /// Takes session `key`'s lock (`SET NX PX`), retrying while another replica holds it, up
    /// to the lease (a holder that died frees it by then).
    pub(super) async fn session_lock(
        &self,
        key: &str,
        lease: Duration,
    ) -> Result<SessionLockKey, StoreError> {
        let lock_key = format!("{}ts:{{{key}}}:l", self.inner.prefix);
        let n = self.inner.sequence.fetch_add(1, Ordering::Relaxed);
        let token = format!("{}:{n}", self.inner.replica);
        let mut connection = self.connection();
        let deadline = tokio::time::Instant::now() + lease + self.inner.timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            let taken: Option<String> = tokio::time::timeout(
                self.inner.timeout,
                redis::cmd("SET")
                    .arg(&lock_key)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(lease))
                    .query_async(&mut connection),
            )
            .await
            .map_err(|_| StoreError::Timeout(self.inner.timeout))?
            .map_err(backend)?;
            if taken.is_some() {
                return Ok(SessionLockKey {
                    connection,
                    key: lock_key,
                    token,
                    timeout: self.inner.timeout,
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::Timeout(lease));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    pub(super) async fn session_read(
        &self,
        key: &str,
        fingerprint: u64,
        since_ms: i64,
    ) -> Result<super::SessionState, StoreError> {
        use super::SessionState;
        let (meta, events) = self.session_keys(key);
        let mut invocation = SESSION_READ.prepare_invoke();
        invocation
            .key(&meta)
            .key(&events)
            .arg(fingerprint.to_string())
            .arg(since_ms);
        let mut connection = self.connection();
        let reply: Vec<String> =
            tokio::time::timeout(self.inner.timeout, invocation.invoke_async(&mut connection))
                .await
                .map_err(|_| StoreError::Timeout(self.inner.timeout))?
                .map_err(backend)?;
        let mut items = reply.into_iter();
        match items.next().as_deref() {
            Some("new") => Ok(SessionState::New),
            Some("changed") => Ok(SessionState::Changed),
            Some("evicted") => Ok(SessionState::Evicted),
            Some("overflowed") => Ok(SessionState::Overflowed),
            Some("live") => items
                .map(|member| match member.split_once('|') {
                    Some((_, event)) => Ok(event.to_owned()),
                    None => Err(StoreError::UnexpectedReply(
                        "a session event without its sequence".to_owned(),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(SessionState::Live),
            other => Err(StoreError::UnexpectedReply(format!("{other:?}"))),
        }
    }

    pub(super) async fn session_append(
        &self,
        key: &str,
        fingerprint: u64,
        events: &[(i64, String)],
        horizon_ms: i64,
        bounds: super::SessionBounds,
    ) -> Result<(), StoreError> {
        let (meta, stored) = self.session_keys(key);
        let mut invocation = SESSION_APPEND.prepare_invoke();
        invocation
            .key(&meta)
            .key(&stored)
            .arg(fingerprint.to_string())
            .arg(horizon_ms)
            .arg(millis(bounds.idle))
            .arg(bounds.max_events);
        for (t, e) in events {
            invocation.arg(*t).arg(e);
        }
        let mut connection = self.connection();
        let _: i64 =
            tokio::time::timeout(self.inner.timeout, invocation.invoke_async(&mut connection))
                .await
                .map_err(|_| StoreError::Timeout(self.inner.timeout))?
                .map_err(backend)?;
        Ok(())
    }
}
