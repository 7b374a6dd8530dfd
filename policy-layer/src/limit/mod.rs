//! Rate limits (`[[rate_limit]]`): how many calls a caller may make, per tool or overall,
//! checked after authentication and before Cedar. `docs/rate-limits.md` describes the semantics.
//!
//! [`LimitSet::from_config`] validates the config tables; [`Limits`] holds the current set
//! (swapped whole on reload, read with one atomic load) and the [`Store`] that counts.
//! [`Limits::check`] answers one `tools/call`:
//!
//! - the limits that apply are found with one lookup by tool (each tool's list already holds
//!   the every-tool limits), so a call that no limit matches costs that lookup and nothing more;
//! - a matching limit of rate 0 refuses at once, without the store;
//! - otherwise every matching limit becomes a [`Charge`] under its limit key
//!   (`<id>/<value>/...`, escaped; a missing part is the empty value, so leaving a value out
//!   never escapes a limit) and the store counts all of them or none, in one operation (one
//!   round trip with Redis);
//! - `requests` limits count in fixed windows of `per` that start with a key's first admitted
//!   call; `connections` limits hold a [`Permit`] per call in [`Admitted`], given back when it
//!   is dropped (the layer keeps it until the response body is finished or dropped);
//! - when the store cannot answer, `state.on_error` decides: deny (the default) answers 503
//!   with `Retry-After`, allow lets the call through; both are counted and logged (at most once
//!   per 10 s, with the number of errors in between).

mod config;
mod key;
pub(crate) mod step;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use serde_json::Value;

pub use config::{
    KeyPart, LimitConfigError, LimitSet, MAX_ID_BYTES, MAX_KEY_PARTS, MAX_RATE, Metric, Per,
    RateLimit, RateLimitConfig,
};
pub use key::MAX_VALUE_BYTES;

use crate::auth::Identity;
use crate::state::{Admission, Charge, ChargeKind, OnError, Permit, Store, StoreError};

/// JSON-RPC error code of a throttled call (AgentCore's).
pub const THROTTLED_CODE: i64 = -32003;
/// JSON-RPC error message of a throttled call.
pub const THROTTLED_MESSAGE: &str = "Rate limit exceeded";
/// JSON-RPC error code when the state store could not answer and `on_error = "deny"`.
pub const UNAVAILABLE_CODE: i64 = -32603;
/// JSON-RPC error message when the state store could not answer and `on_error = "deny"`.
pub const UNAVAILABLE_MESSAGE: &str = "Rate limit state unavailable";
/// `Retry-After` of a limit with rate 0: nothing will pass, so the longest period there is.
pub const BLOCKED_RETRY_AFTER: Duration = Duration::from_secs(60);
/// `Retry-After` when the state store could not answer.
pub const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Least time between two log lines about store errors.
pub const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThrottleCause {
    /// The limit's counter is full.
    Exceeded,
    /// The limit's rate is 0.
    Blocked,
    /// The store could not answer and `on_error = "deny"`.
    StoreUnavailable,
}

impl ThrottleCause {
    /// `exceeded`, `blocked` or `store_unavailable`: for metric labels and logs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exceeded => "exceeded",
            Self::Blocked => "blocked",
            Self::StoreUnavailable => "store_unavailable",
        }
    }
}

/// A refused call: which limit, its key, and how to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttled {
    /// The limit's id.
    pub limit: Arc<str>,
    /// `<id>/<key values>`, as in the reply's `data.limitKey`.
    pub limit_key: String,
    /// The limit's metric.
    pub metric: Metric,
    /// Whole seconds until a retry can pass (at least 1).
    pub retry_after: u64,
    /// Why.
    pub cause: ThrottleCause,
}

impl Throttled {
    /// 429, or 503 when the store could not answer.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self.cause {
            ThrottleCause::Exceeded | ThrottleCause::Blocked => StatusCode::TOO_MANY_REQUESTS,
            ThrottleCause::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The JSON-RPC error answering the request `id` (of whatever JSON type):
    /// `{"jsonrpc":"2.0","id":..,"error":{"code":-32003,"message":"Rate limit exceeded",
    /// "data":{"limitKey":..,"metric":..,"retryAfter":..}}}`.
    #[must_use]
    pub fn error_json(&self, id: &Value) -> String {
        let (code, message) = match self.cause {
            ThrottleCause::Exceeded | ThrottleCause::Blocked => (THROTTLED_CODE, THROTTLED_MESSAGE),
            ThrottleCause::StoreUnavailable => (UNAVAILABLE_CODE, UNAVAILABLE_MESSAGE),
        };
        format!(
            r#"{{"jsonrpc":"2.0","id":{},"error":{{"code":{code},"message":"{message}","data":{{"limitKey":{},"metric":"{}","retryAfter":{}}}}}}}"#,
            json(id),
            json(&self.limit_key),
            self.metric.as_str(),
            self.retry_after
        )
    }

    /// The `Retry-After` header value.
    #[must_use]
    pub fn retry_after_header(&self) -> HeaderValue {
        HeaderValue::from(self.retry_after)
    }

    /// The whole HTTP reply to a single (non-batch) request: status, `Retry-After` and the
    /// JSON-RPC error.
    #[must_use]
    pub fn response<B: From<Bytes>>(&self, id: &Value) -> Response<B> {
        let mut response = Response::new(B::from(Bytes::from(self.error_json(id))));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::RETRY_AFTER, self.retry_after_header());
        response
    }
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

/// A call the limits let through. Holds its `connections` permits: keep it until the
/// response is finished (or dropped); dropping it gives the slots back.
#[derive(Debug, Default)]
#[must_use = "dropping Admitted releases its connection slots at once"]
pub struct Admitted {
    permits: Vec<Permit>,
    limits: Vec<Arc<str>>,
    degraded: bool,
}

impl Admitted {
    /// The ids of the limits that matched and passed (for spans and the decision log).
    #[must_use]
    pub fn limits(&self) -> &[Arc<str>] {
        &self.limits
    }

    /// Whether the store could not answer and `on_error = "allow"` let the call through
    /// unchecked.
    #[must_use]
    pub fn degraded(&self) -> bool {
        self.degraded
    }

    /// Whether this call holds `connections` slots.
    #[must_use]
    pub fn holds_permits(&self) -> bool {
        !self.permits.is_empty()
    }

    /// Takes over `other`'s permits (the calls of one batch share one response).
    pub fn merge(&mut self, other: Admitted) {
        self.permits.extend(other.permits);
        self.limits.extend(other.limits);
        self.degraded |= other.degraded;
    }
}

/// Counters of the limits' work, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimitStats {
    /// Calls that at least one limit matched.
    pub checked: u64,
    /// Calls refused by a limit (exceeded or rate 0).
    pub throttled: u64,
    /// Store operations that failed.
    pub store_errors: u64,
    /// Calls let through unchecked because the store failed (`on_error = "allow"`).
    pub allowed_on_error: u64,
    /// Calls refused because the store failed (`on_error = "deny"`).
    pub denied_on_error: u64,
}

/// The current rate limits and their store; cheap to clone.
#[derive(Clone)]
pub struct Limits {
    inner: Arc<Inner>,
}

struct Inner {
    index: ArcSwap<Index>,
    store: Store,
    checked: AtomicU64,
    throttled: AtomicU64,
    store_errors: AtomicU64,
    allowed_on_error: AtomicU64,
    denied_on_error: AtomicU64,
    error_log: Mutex<ErrorLog>,
}

#[derive(Default)]
struct ErrorLog {
    last: Option<Instant>,
    suppressed: u64,
}

struct Index {
    limits: Box<[RateLimit]>,
    /// Per tool: its own limits and the every-tool ones, in config order.
    by_tool: HashMap<Box<str>, Box<[usize]>>,
    every_tool: Box<[usize]>,
    on_error: OnError,
}

impl Index {
    fn new(set: LimitSet, on_error: OnError) -> Self {
        let limits: Box<[RateLimit]> = set.limits().into();
        let every_tool: Vec<usize> = (0..limits.len())
            .filter(|&i| limits[i].tool.is_none())
            .collect();
        let mut by_tool: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        for (i, limit) in limits.iter().enumerate() {
            if let Some(tool) = &limit.tool {
                by_tool.entry((**tool).into()).or_default().push(i);
            }
        }
        let by_tool = by_tool
            .into_iter()
            .map(|(tool, mut own)| {
                own.extend(&every_tool);
                own.sort_unstable();
                (tool, own.into())
            })
            .collect();
        Self {
            limits,
            by_tool,
            every_tool: every_tool.into(),
            on_error,
        }
    }

    fn matching(&self, tool: &str) -> &[usize] {
        if self.by_tool.is_empty() {
            return &self.every_tool;
        }
        self.by_tool.get(tool).map_or(&self.every_tool, |own| own)
    }
}

impl fmt::Debug for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let index = self.inner.index.load();
        f.debug_struct("Limits")
            .field("limits", &index.limits.len())
            .field("on_error", &index.on_error)
            .field("store", &self.inner.store)
            .finish()
    }
}

impl Limits {
    /// Limits counted in `store`.
    #[must_use]
    pub fn new(set: LimitSet, store: Store, on_error: OnError) -> Self {
        Self {
            inner: Arc::new(Inner {
                index: ArcSwap::from_pointee(Index::new(set, on_error)),
                store,
                checked: AtomicU64::new(0),
                throttled: AtomicU64::new(0),
                store_errors: AtomicU64::new(0),
                allowed_on_error: AtomicU64::new(0),
                denied_on_error: AtomicU64::new(0),
                error_log: Mutex::default(),
            }),
        }
    }

    /// Replaces the limits (hot reload). Counters live in the store under the limit keys, so a
    /// limit that keeps its id keeps its counts; permits already held stay valid.
    pub fn replace(&self, set: LimitSet, on_error: OnError) {
        self.inner.index.store(Arc::new(Index::new(set, on_error)));
    }

    /// What a call gets when the store cannot answer (it follows reloads).
    #[must_use]
    pub fn on_error(&self) -> OnError {
        self.inner.index.load().on_error
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Whether no limit is configured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.inner.index.load().limits.is_empty()
    }

    /// The ids of the limits that apply to calls of `tool`.
    #[must_use]
    pub fn matching(&self, tool: &str) -> Vec<Arc<str>> {
        let index = self.inner.index.load();
        index
            .matching(tool)
            .iter()
            .map(|&i| Arc::clone(&index.limits[i].id))
            .collect()
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> LimitStats {
        let inner = &self.inner;
        LimitStats {
            checked: inner.checked.load(Ordering::Relaxed),
            throttled: inner.throttled.load(Ordering::Relaxed),
            store_errors: inner.store_errors.load(Ordering::Relaxed),
            allowed_on_error: inner.allowed_on_error.load(Ordering::Relaxed),
            denied_on_error: inner.denied_on_error.load(Ordering::Relaxed),
        }
    }

    /// Checks one `tools/call` of `tool` by `identity` against every limit that applies, and
    /// counts it if all pass.
    ///
    /// # Errors
    /// [`Throttled`]: the call must not be forwarded; answer it with
    /// [`Throttled::response`] (or [`Throttled::error_json`] inside a batch).
    pub async fn check(
        &self,
        identity: &Identity,
        headers: &HeaderMap,
        tool: &str,
        arguments: Option<&Value>,
    ) -> Result<Admitted, Throttled> {
        self.check_with(identity, headers, tool, || arguments.map(Cow::Borrowed))
            .await
    }

    /// [`check`](Self::check) with the call's `arguments` as the client wrote them (JSON
    /// text): they are parsed only when a limit that applies has a `body.<path>` key part.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub async fn check_json(
        &self,
        identity: &Identity,
        headers: &HeaderMap,
        tool: &str,
        arguments: Option<&str>,
    ) -> Result<Admitted, Throttled> {
        self.check_with(identity, headers, tool, || {
            arguments
                .and_then(|text| serde_json::from_str::<Value>(text).ok())
                .map(Cow::Owned)
        })
        .await
    }

    /// Whether any limit applies to calls of `tool` (one lookup).
    #[must_use]
    pub fn applies_to(&self, tool: &str) -> bool {
        !self.inner.index.load().matching(tool).is_empty()
    }

    async fn check_with<'a>(
        &self,
        identity: &Identity,
        headers: &HeaderMap,
        tool: &str,
        arguments: impl FnOnce() -> Option<Cow<'a, Value>>,
    ) -> Result<Admitted, Throttled> {
        let index = self.inner.index.load();
        if index.matching(tool).is_empty() {
            return Ok(Admitted::default());
        }
        let index = Guard::into_inner(index);
        let matching = index.matching(tool);
        self.inner.checked.fetch_add(1, Ordering::Relaxed);
        let reads_body = matching.iter().any(|&i| {
            index.limits[i]
                .key
                .iter()
                .any(|part| matches!(part, KeyPart::Body(_)))
        });
        let parsed = if reads_body { arguments() } else { None };
        let arguments = parsed.as_deref();
        let throttled = |i: usize, limit_key: String, retry_after: Duration, cause| {
            let limit: &RateLimit = &index.limits[i];
            Throttled {
                limit: Arc::clone(&limit.id),
                limit_key,
                metric: limit.metric,
                retry_after: whole_seconds(retry_after),
                cause,
            }
        };
        if let Some(&blocked) = matching.iter().find(|&&i| index.limits[i].rate == 0) {
            self.inner.throttled.fetch_add(1, Ordering::Relaxed);
            let limit_key = key::limit_key(&index.limits[blocked], identity, headers, arguments);
            return Err(throttled(
                blocked,
                limit_key,
                BLOCKED_RETRY_AFTER,
                ThrottleCause::Blocked,
            ));
        }
        let keys: Vec<String> = matching
            .iter()
            .map(|&i| key::limit_key(&index.limits[i], identity, headers, arguments))
            .collect();
        let charges: Vec<Charge<'_>> = matching
            .iter()
            .zip(&keys)
            .map(|(&i, key)| {
                let limit = &index.limits[i];
                Charge {
                    key,
                    limit: limit.rate,
                    kind: match limit.metric {
                        Metric::Requests(per) => ChargeKind::Window(per.duration()),
                        Metric::Connections => ChargeKind::InFlight,
                    },
                }
            })
            .collect();
        let limits = || {
            matching
                .iter()
                .map(|&i| Arc::clone(&index.limits[i].id))
                .collect()
        };
        match self.inner.store.admit(&charges).await {
            Ok(Admission::Admitted(permits)) => Ok(Admitted {
                permits,
                limits: limits(),
                degraded: false,
            }),
            Ok(Admission::Refused {
                index: refused,
                retry_after,
            }) => {
                self.inner.throttled.fetch_add(1, Ordering::Relaxed);
                let limit_key = keys.into_iter().nth(refused).unwrap_or_default();
                Err(throttled(
                    matching[refused],
                    limit_key,
                    retry_after,
                    ThrottleCause::Exceeded,
                ))
            }
            Err(error) => {
                self.inner.store_errors.fetch_add(1, Ordering::Relaxed);
                self.log_store_error(&error, index.on_error);
                match index.on_error {
                    OnError::Allow => {
                        self.inner.allowed_on_error.fetch_add(1, Ordering::Relaxed);
                        Ok(Admitted {
                            permits: Vec::new(),
                            limits: limits(),
                            degraded: true,
                        })
                    }
                    OnError::Deny => {
                        self.inner.denied_on_error.fetch_add(1, Ordering::Relaxed);
                        let limit_key = keys.into_iter().next().unwrap_or_default();
                        Err(throttled(
                            matching[0],
                            limit_key,
                            UNAVAILABLE_RETRY_AFTER,
                            ThrottleCause::StoreUnavailable,
                        ))
                    }
                }
            }
        }
    }

    /// Logs a store error, at most once per [`ERROR_LOG_INTERVAL`] with the count in between.
    fn log_store_error(&self, error: &StoreError, on_error: OnError) {
        let suppressed = {
            let mut log = self
                .inner
                .error_log
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            if log
                .last
                .is_some_and(|last| now.duration_since(last) < ERROR_LOG_INTERVAL)
            {
                log.suppressed += 1;
                return;
            }
            log.last = Some(now);
            std::mem::take(&mut log.suppressed)
        };
        let mut message = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        tracing::warn!(
            error = %message,
            store = self.inner.store.kind(),
            on_error = on_error.as_str(),
            errors_since_last_report = suppressed,
            "rate limits: the state store could not answer; calls are {}",
            match on_error {
                OnError::Deny => "refused (on_error = deny)",
                OnError::Allow => "let through unchecked (on_error = allow)",
            }
        );
    }
}

/// Whole seconds, rounded up, at least 1 (`Retry-After: 0` would invite an immediate retry
/// that fails again).
fn whole_seconds(duration: Duration) -> u64 {
    let secs = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests;
