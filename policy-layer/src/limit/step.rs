//! Rate limits as a step of the request (`docs/request-flow.md`, `docs/rate-limits.md`): after
//! authentication and before Cedar, every tools/call of a POST is checked against the limits
//! of its tool, in message order.
//!
//! - A single (non-batch) call that a limit refuses is answered with HTTP 429 (503 when the
//!   store could not answer and `on_error = "deny"`), `Retry-After` and the JSON-RPC error.
//! - In a batch, a refused call is answered by its JSON-RPC error inside the merged reply
//!   (HTTP 200, as a denied call is) and the other messages go on.
//! - A refused call is never decided by Cedar and never forwarded.
//! - The `connections` slots of the calls that go upstream are held by the reply body until it
//!   ends or is dropped; the slots of a call Cedar then denies are given back at once.
//!
//! Limits enforce whatever the engine mode: `LOG_ONLY` lets policy denials through to see what
//! the policies would do, but a limit protects the upstream, so a throttled call is refused in
//! both modes.

use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Response};

use super::{Admitted, Limits, Throttled};
use crate::body::PolicyBody;
use crate::exchange::Exchange;
use crate::jsonrpc::Envelope;
use crate::record::{LimitOutcome, LimitRecord};
use crate::telemetry;

/// What the limits said of each message of one request.
#[derive(Debug, Default)]
pub(crate) struct Checked {
    slots: Vec<Slot>,
    /// The permits of the calls that go upstream.
    held: Admitted,
}

#[derive(Debug)]
enum Slot {
    /// No limit checked it (not a tools/call, or no limit configured).
    Open,
    /// Admitted, holding these permits until it is forwarded or answered here.
    Admitted(Admitted),
    /// Refused: the JSON-RPC error that answers it.
    Refused(String),
}

impl Checked {
    /// The answer to message `i` when a limit refused it.
    pub(crate) fn refusal(&mut self, i: usize) -> Option<String> {
        match self.slots.get_mut(i) {
            Some(Slot::Refused(answer)) => Some(std::mem::take(answer)),
            _ => None,
        }
    }

    /// Message `i` goes upstream: its permits are held until the reply ends. (A message that
    /// is answered here instead simply never comes here: its permits go when this is dropped,
    /// at the latest with the request.)
    pub(crate) fn forwarded(&mut self, i: usize) {
        if let Some(slot) = self.slots.get_mut(i)
            && let Slot::Admitted(admitted) = std::mem::replace(slot, Slot::Open)
        {
            self.held.merge(admitted);
        }
    }

    /// The reply, holding the permits of every forwarded call until its body is finished or
    /// dropped.
    pub(crate) fn hold<B>(self, reply: Response<PolicyBody<B>>) -> Response<PolicyBody<B>> {
        if !self.held.holds_permits() {
            return reply;
        }
        let held = self.held;
        reply.map(|body| body.holding(held))
    }
}

/// Checks every tools/call of `envelope` against the layer's limits.
///
/// # Errors
/// The whole reply when the request is a single call that a limit refused (HTTP 429, or 503
/// when the store could not answer): nothing of it goes further.
pub(crate) async fn check<B: From<Bytes>>(
    exchange: &Exchange,
    headers: &HeaderMap,
    envelope: &Envelope,
) -> Result<Checked, Response<B>> {
    let Some(limits) = &exchange.shared.limits else {
        return Ok(Checked::default());
    };
    let mut checked = Checked {
        slots: Vec::with_capacity(envelope.messages.len()),
        held: Admitted::default(),
    };
    for message in &envelope.messages {
        let call = match (message.method(), message.id(), message.params()) {
            (Some("tools/call"), Some(id), Some(params)) => params.name.as_deref().map(|t| (id, t)),
            _ => None,
        };
        let Some((id, tool)) = call.filter(|(_, tool)| limits.applies_to(tool)) else {
            checked.slots.push(Slot::Open);
            continue;
        };
        match one(exchange, limits, headers, tool, id, message.arguments()).await {
            Ok(admitted) => checked.slots.push(Slot::Admitted(admitted)),
            Err(throttled) if !envelope.batch => return Err(throttled.response(id)),
            Err(throttled) => checked.slots.push(Slot::Refused(throttled.error_json(id))),
        }
    }
    Ok(checked)
}

/// Checks one call, with its span and its record.
async fn one(
    exchange: &Exchange,
    limits: &Limits,
    headers: &HeaderMap,
    tool: &str,
    id: &serde_json::Value,
    arguments: Option<&str>,
) -> Result<Admitted, Throttled> {
    let started = Instant::now();
    let span = telemetry::check_rate_limits(tool, limits.store().kind());
    let identity = &*exchange.identity;
    let result = {
        use tracing::Instrument;
        limits
            .check_json(identity, headers, tool, arguments)
            .instrument(span.clone())
            .await
    };
    telemetry::record_rate_limit(&span, result.as_ref());
    let outcome = match &result {
        Err(throttled) => {
            tracing::info!(
                parent: &span,
                limit = %throttled.limit,
                limit_key = %throttled.limit_key,
                cause = throttled.cause.as_str(),
                "tools/call refused by a rate limit"
            );
            Some(LimitOutcome::Throttled(throttled))
        }
        Ok(admitted) if admitted.degraded() => Some(LimitOutcome::Unchecked {
            limits: admitted.limits(),
        }),
        Ok(_) => None,
    };
    let observer = exchange.observer();
    if let Some(outcome) = outcome
        && observer.enabled()
    {
        let principal = match &exchange.snapshot {
            Some(snapshot) => snapshot.model().principal_uid(identity).to_string(),
            None => identity.subject.clone(),
        };
        observer.on_limit(&LimitRecord {
            engine: &exchange.settings().engine_name,
            mode: exchange.settings().mode,
            principal,
            tool,
            request_id: id,
            outcome,
            latency: started.elapsed(),
        });
    }
    result
}
