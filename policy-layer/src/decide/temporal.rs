//! Temporal policies on the request path (`docs/temporal.md`, "Wiring it into the request
//! path"): the session of a request, the values of its calls' temporal conditions, and the
//! events its calls leave.
//!
//! 1. [`session_id`], before the rate limits charge anything: with temporal policies loaded, a
//!    request with a tools/call needs the session header (absent: 400, malformed: 400). Then
//!    [`open`], before any message is decided: when a call of the request can read or leave
//!    events, the session (keyed by the caller's principal and the id) is locked, one decision
//!    at a time per session, and, when a call has conditions, read back as far as the largest
//!    window. A session recorded under other temporal policies, evicted or overflowed is
//!    refused with 409; a store that cannot answer with 503.
//! 2. For each tools/call ([`Session::values`], [`Session::decided`]): the conditions of its
//!    tool evaluated over the history and the call itself (a `request` event at the decision
//!    time); after the decision its `request` (forwarded: allowed, or LOG_ONLY) or its `error`
//!    (answered here) joins the history, so the next call of the batch sees it.
//! 3. [`Session::commit`], before anything is forwarded: the new events are appended to the
//!    store and the lock released. A store that cannot take them refuses the request (503):
//!    a call whose `request` is not recorded could let the next one through.
//! 4. The reply ([`Completions`], read by the reply filter as messages pass; an event
//!    stream is never held back, a JSON reply, which the filter reads whole anyway, is
//!    released once its completions are in the store): a result becomes the call's `response` (with its `structuredContent` when a
//!    condition reads the tool's outputs), a JSON-RPC error or `isError` result its `error`;
//!    a call the reply never answers (a broken stream, a 5xx) an `error` when the reply ends.
//!
//! Only the events some condition can read are recorded (`TemporalPolicies::records`); a
//! call that neither reads nor leaves events touches no session.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use http::HeaderMap;
use serde_json::Value as Json;

use crate::auth::Identity;
use crate::clock::Clock;
use crate::engine::Snapshot;
use crate::exchange::Exchange;
use crate::jsonrpc::Envelope;
use crate::model::tools::InputType;
use crate::reply::Refusal;
use crate::state::{SessionLock, SessionState, Store};
use crate::temporal::{
    self, Event, EventKind, SESSION_HEADER, SessionId, SessionKey, TemporalValues, Value,
};

/// The session of one request; [`Session::none`] when no call of it reads or leaves events.
#[derive(Debug, Default)]
pub(crate) struct Session {
    open: Option<Open>,
}

struct Open {
    snapshot: Arc<Snapshot>,
    store: Store,
    clock: Arc<dyn Clock>,
    key: String,
    id: SessionId,
    history: Vec<Event>,
    pending: Vec<(i64, String)>,
    completions: Vec<Completion>,
    lock: Option<SessionLock>,
}

impl std::fmt::Debug for Open {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Open")
            .field("history", &self.history.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// What the conditions of one call came to, for the span and the decision log.
#[derive(Debug, Clone, Default)]
pub(crate) struct Evaluated {
    /// The values handed to Cedar.
    pub values: TemporalValues,
    /// The decision time, the `request` event's time (ms since the epoch).
    pub event_ms: i64,
    /// Time spent reading nothing and evaluating the conditions.
    pub latency: Duration,
    /// The session id.
    pub session: String,
}

impl Evaluated {
    /// Each condition's value with its policy: `c0=true(policy-id),c1=error(policy-id)`.
    pub fn conditions(&self, snapshot: Option<&Snapshot>) -> String {
        let mut out = String::new();
        for (id, result) in &self.values.results {
            if !out.is_empty() {
                out.push(',');
            }
            let value = match result {
                Ok(true) => "true",
                Ok(false) => "false",
                Err(_) => "error",
            };
            let policy = snapshot
                .and_then(|s| s.temporal().conditions().get(*id))
                .map_or("", |c| c.policy_id.as_str());
            out.push_str(&format!("c{id}={value}({policy})"));
        }
        out
    }

    /// The decision log's part.
    pub(crate) fn record(&self, snapshot: Option<&Snapshot>) -> crate::record::TemporalRecord {
        crate::record::TemporalRecord {
            session: self.session.clone(),
            conditions: self.conditions(snapshot),
            latency: self.latency,
        }
    }
}

/// The tools/call messages of `envelope`: `(id, tool)`.
fn calls(envelope: &Envelope) -> impl Iterator<Item = (&Json, &str)> {
    envelope
        .messages
        .iter()
        .filter_map(|m| match (m.method(), m.id(), m.params()) {
            (Some("tools/call"), Some(id), Some(params)) => params.name.as_deref().map(|t| (id, t)),
            _ => None,
        })
}

/// Step 1, the header (see the module doc): the session a request names, `None` when it needs
/// none (no temporal policies, or no tools/call in it). Checked before the rate limits, so a
/// request refused for its header is not charged.
///
/// # Errors
/// The [`Refusal`] that answers the whole request: the header absent or malformed.
pub(crate) fn session_id(
    exchange: &Exchange,
    headers: &HeaderMap,
    envelope: &Envelope,
) -> Result<Option<SessionId>, Refusal> {
    let Some(snapshot) = exchange.snapshot.as_ref() else {
        return Ok(None);
    };
    if snapshot.temporal().is_empty() || calls(envelope).next().is_none() {
        return Ok(None);
    }
    let mut values = headers.get_all(SESSION_HEADER).iter();
    match (values.next(), values.next()) {
        (None, _) => Err(Refusal::PolicySessionRequired),
        (Some(_), Some(_)) => Err(Refusal::BadPolicySession),
        (Some(value), None) => SessionId::parse(value.as_bytes())
            .map(Some)
            .map_err(|_| Refusal::BadPolicySession),
    }
}

/// Step 1, the store (see the module doc): the session `id` (from [`session_id`]) opened for
/// the request's calls.
///
/// # Errors
/// The [`Refusal`] that answers the whole request.
pub(crate) async fn open(
    exchange: &Exchange,
    id: Option<SessionId>,
    envelope: &Envelope,
) -> Result<Session, Refusal> {
    let (Some(snapshot), Some(id)) = (exchange.snapshot.as_ref(), id) else {
        return Ok(Session::default());
    };
    let temporal = snapshot.temporal();
    let model = snapshot.model();
    let mut reads = false;
    let mut touches = false;
    for (_, tool) in calls(envelope) {
        let action = model.action_id(tool);
        reads |= !temporal.for_tool(tool).is_empty();
        touches |= [EventKind::Request, EventKind::Response, EventKind::Error]
            .into_iter()
            .any(|kind| temporal.records(&action, kind));
    }
    if !reads && !touches {
        return Ok(Session::default());
    }
    let Some(store) = exchange.shared.session_store.clone() else {
        return Err(Refusal::PolicySessionUnavailable);
    };
    let key = SessionKey {
        principal: Arc::from(model.principal_uid(&exchange.identity).to_string()),
        session: id.clone(),
    }
    .storage_key();
    let observer = exchange.observer();
    let unavailable = |e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, "policy session store failed; the request is refused");
        observer.on_policy_session_refused("store_unavailable");
        Refusal::PolicySessionUnavailable
    };
    let invalid = |label: &'static str, reason: &'static str| {
        tracing::info!(reason, "policy session refused with 409");
        observer.on_policy_session_refused(label);
        Refusal::PolicySessionInvalid(reason)
    };
    let lock = store
        .session_lock(&key)
        .await
        .map_err(|e| unavailable(&e))?;
    let mut history = Vec::new();
    if reads {
        let now = exchange.now().unix_millis();
        let since = now.saturating_sub(temporal.max_window_ms());
        let state = store
            .session_read(&key, temporal.fingerprint(), since, now)
            .await
            .map_err(|e| unavailable(&e))?;
        let events = match state {
            SessionState::New => Vec::new(),
            SessionState::Live(events) => events,
            SessionState::Changed => {
                return Err(invalid("changed", "the temporal policies changed"));
            }
            SessionState::Evicted => {
                return Err(invalid("evicted", "it was evicted from the session store"));
            }
            SessionState::Overflowed => {
                return Err(invalid(
                    "overflowed",
                    "it recorded more events than the store keeps",
                ));
            }
        };
        for text in events {
            let event = serde_json::from_str(&text)
                .map_err(|e| temporal::HistoryError::Malformed(e.to_string()))
                .and_then(|json| Event::from_json(&json))
                .map_err(|e| unavailable(&e))?;
            history.push(event);
        }
        // Completions may land after a later decision: read in time order.
        history.sort_by_key(|e| e.time_ms);
    }
    Ok(Session {
        open: Some(Open {
            snapshot: Arc::clone(snapshot),
            store,
            clock: Arc::clone(&exchange.shared.clock),
            key,
            id,
            history,
            pending: Vec::new(),
            completions: Vec::new(),
            lock: Some(lock),
        }),
    })
}

/// The call's arguments typed as its events hold them (`input.*`).
fn input(snapshot: &Snapshot, tool: &str, arguments: Option<&str>) -> Option<Value> {
    let ty = snapshot
        .catalog()
        .get(tool)
        .map_or(&InputType::Untyped, |t| &t.input);
    let json: Json = arguments
        .map_or_else(
            || Ok(Json::Object(serde_json::Map::new())),
            serde_json::from_str,
        )
        .ok()?;
    Value::from_json(&json, ty)
}

fn request_id(id: &Json) -> String {
    match id {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Session {
    /// Step 2: the values of the temporal conditions of a call of `tool` decided at `now_ms`;
    /// `None` when its tool has none (it is decided as a plain call).
    pub(crate) fn values(
        &self,
        identity: &Identity,
        tool: &str,
        id: &Json,
        arguments: Option<&str>,
        now_ms: i64,
    ) -> Option<Evaluated> {
        let open = self.open.as_ref()?;
        let temporal = open.snapshot.temporal();
        let ids = temporal.for_tool(tool);
        if ids.is_empty() {
            return None;
        }
        let started = Instant::now();
        let model = open.snapshot.model();
        let input = input(&open.snapshot, tool, arguments);
        let current = temporal::call_event(
            temporal,
            model,
            identity,
            tool,
            EventKind::Request,
            now_ms,
            Some(&request_id(id)),
            input.clone(),
            None,
        );
        let facts = temporal::request_facts(model, identity, input, &open.id);
        let horizon = now_ms.saturating_sub(temporal.max_window_ms());
        let from = open.history.partition_point(|e| e.time_ms < horizon);
        let values = temporal.evaluate(ids, &open.history[from..], &current, &facts);
        Some(Evaluated {
            values,
            event_ms: now_ms,
            latency: started.elapsed(),
            session: open.id.to_string(),
        })
    }

    /// Step 2, after the decision: a forwarded call's `request` (and, later, its completion)
    /// or an answered call's `error` is recorded, if a condition can read it.
    pub(crate) fn decided(
        &mut self,
        identity: &Identity,
        tool: &str,
        id: &Json,
        arguments: Option<&str>,
        now_ms: i64,
        forwarded: bool,
    ) {
        let Some(open) = self.open.as_mut() else {
            return;
        };
        let temporal = open.snapshot.temporal();
        let action = open.snapshot.model().action_id(tool);
        let kind = if forwarded {
            EventKind::Request
        } else {
            EventKind::Error
        };
        let records = |kind| temporal.records(&action, kind);
        let completes = forwarded && (records(EventKind::Response) || records(EventKind::Error));
        if !records(kind) && !completes {
            return;
        }
        let event = temporal::call_event(
            temporal,
            open.snapshot.model(),
            identity,
            tool,
            kind,
            now_ms,
            Some(&request_id(id)),
            input(&open.snapshot, tool, arguments),
            None,
        );
        if completes {
            open.completions.push(Completion {
                id: id.clone(),
                template: event.clone(),
                reads_outputs: temporal.reads_outputs(&action),
                records_response: records(EventKind::Response),
                records_error: records(EventKind::Error),
                store: open.store.clone(),
                clock: Arc::clone(&open.clock),
                key: open.key.clone(),
                fingerprint: temporal.fingerprint(),
                window_ms: temporal.max_window_ms(),
            });
        }
        if records(kind) {
            open.pending.push((now_ms, event.to_json().to_string()));
            open.history.push(event);
        }
    }

    /// Step 3: appends the request's events and ends the critical section; the completions
    /// to watch for in the reply.
    ///
    /// # Errors
    /// [`Refusal::PolicySessionUnavailable`] when the store cannot take the events.
    pub(crate) async fn commit(mut self) -> Result<Completions, Refusal> {
        let Some(open) = self.open.as_mut() else {
            return Ok(Completions::default());
        };
        let temporal = open.snapshot.temporal();
        let now = open.clock.now().unix_millis();
        let appended = open
            .store
            .session_append(
                &open.key,
                temporal.fingerprint(),
                &open.pending,
                now.saturating_sub(temporal.max_window_ms()),
                now,
            )
            .await;
        open.lock.take();
        if let Err(e) = appended {
            tracing::warn!(error = %e, "policy session store failed to record the request; refused");
            // The calls go nowhere: their completions must not be recorded either.
            for c in &mut open.completions {
                c.records_error = false;
                c.records_response = false;
            }
            return Err(Refusal::PolicySessionUnavailable);
        }
        Ok(Completions(
            std::mem::take(&mut open.completions),
            Vec::new(),
        ))
    }
}

/// A forwarded call whose completion is recorded.
struct Completion {
    id: Json,
    /// Its `request` event: the completion copies its fields.
    template: Event,
    reads_outputs: bool,
    records_response: bool,
    records_error: bool,
    store: Store,
    clock: Arc<dyn Clock>,
    key: String,
    fingerprint: u64,
    window_ms: i64,
}

impl Completion {
    /// Records the completion: `Some(output)` a success, `None` a failure. The memory store
    /// records at once; a Redis write runs in the background and its task is returned.
    fn record(self, output: Option<Option<&Json>>) -> Option<tokio::task::JoinHandle<()>> {
        let kind = if output.is_some() {
            EventKind::Response
        } else {
            EventKind::Error
        };
        let wanted = match kind {
            EventKind::Response => self.records_response,
            _ => self.records_error,
        };
        if !wanted {
            return None;
        }
        let now = self.clock.now().unix_millis();
        let mut event = self.template;
        event.kind = kind;
        event.time_ms = now;
        event.output = match output {
            Some(Some(o)) if self.reads_outputs => {
                Value::from_json(o, &crate::model::tools::InputType::Untyped)
            }
            _ => None,
        };
        let store = self.store;
        let key = self.key;
        let fingerprint = self.fingerprint;
        let horizon = now.saturating_sub(self.window_ms);
        let events = vec![(now, event.to_json().to_string())];
        let mut write = Box::pin(async move {
            if let Err(e) = store
                .session_append(&key, fingerprint, &events, horizon, now)
                .await
            {
                tracing::warn!(error = %e, "policy session store failed to record a call's completion");
            }
        });
        // The memory store answers at once; Redis in the background, never holding the reply.
        if write.as_mut().now_or_never().is_some() {
            return None;
        }
        tokio::runtime::Handle::try_current()
            .ok()
            .map(|runtime| runtime.spawn(write))
    }
}

/// The completions a reply is watched for (step 4); what is still pending when it is
/// dropped (the reply ended or was abandoned) is recorded as failed.
#[derive(Default)]
pub(crate) struct Completions(Vec<Completion>, Vec<tokio::task::JoinHandle<()>>);

impl std::fmt::Debug for Completions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Completions").field(&self.0.len()).finish()
    }
}

impl Completions {
    /// Whether no completion is awaited.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads one upstream message (or batch): a response to an awaited call completes it.
    pub(crate) fn observe(&mut self, message: &Json) {
        if self.0.is_empty() {
            return;
        }
        if let Json::Array(items) = message {
            for item in items {
                self.observe(item);
            }
            return;
        }
        if message.get("method").is_some()
            || (message.get("result").is_none() && message.get("error").is_none())
        {
            return;
        }
        let Some(id) = message.get("id") else {
            return;
        };
        let Some(pos) = self.0.iter().position(|c| &c.id == id) else {
            return;
        };
        let completion = self.0.swap_remove(pos);
        let result = message.get("result");
        let failed = message.get("error").is_some()
            || result
                .and_then(|r| r.get("isError"))
                .and_then(Json::as_bool)
                .unwrap_or(false);
        let write = if failed {
            completion.record(None)
        } else {
            completion.record(Some(result.and_then(|r| r.get("structuredContent"))))
        };
        self.1.extend(write);
    }

    /// Waits for the completions recorded in the background (a JSON reply, read whole
    /// already, is released once they are in the store, so that the client's next call,
    /// through any replica, sees them). An event stream never waits for this.
    pub(crate) async fn flush(&mut self) {
        for write in self.1.drain(..) {
            let _ = write.await;
        }
    }
}

impl Drop for Completions {
    fn drop(&mut self) {
        for completion in self.0.drain(..) {
            let _ = completion.record(None);
        }
    }
}
