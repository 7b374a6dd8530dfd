//! AuthorizeAction as a step of the request: each message is forwarded or answered here. A
//! tools/call is decided by the engine (`docs/request-flow.md`); a call that cannot be decided
//! (no policies, bad arguments) is answered, never forwarded undecided.

use std::time::Instant;

use serde_json::Value;

use crate::engine::{AuthorizeError, EngineError};
use crate::exchange::Exchange;
use crate::jsonrpc::{INVALID_PARAMS, INVALID_REQUEST, Message};
use crate::record::CallRecord;
use crate::{reply, telemetry};

/// What happens to one message of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It goes on to the inner service.
    Forward,
    /// It is answered here with this JSON-RPC message; the inner service never sees it.
    Answer(String),
}

/// Decides one message.
pub(crate) fn decide(exchange: &Exchange, message: &Message) -> Verdict {
    match (message.method(), message.id()) {
        (Some("tools/call"), Some(id)) => call(exchange, message, id),
        // A call nobody can be answered about is never forwarded undecided.
        (Some("tools/call"), None) => Verdict::Answer(reply::jsonrpc_error(
            &Value::Null,
            INVALID_REQUEST,
            "invalid request: tools/call must be a request with an id",
        )),
        _ => Verdict::Forward,
    }
}

/// AuthorizeAction for one tools/call.
fn call(exchange: &Exchange, message: &Message, id: &Value) -> Verdict {
    let Some(params) = message.params() else {
        return Verdict::Answer(reply::jsonrpc_error(
            id,
            INVALID_PARAMS,
            "invalid params: `params` must be an object",
        ));
    };
    let Some(tool) = params.name.as_deref() else {
        return Verdict::Answer(reply::jsonrpc_error(
            id,
            INVALID_PARAMS,
            "invalid params: `params.name` must be a string",
        ));
    };
    let settings = exchange.settings();
    let started = Instant::now();
    let span = telemetry::authorize_action(settings, tool);
    let _entered = span.enter();
    let snapshot = exchange.snapshot.as_deref();
    let identity = &*exchange.identity;
    let arguments = message.arguments();
    let result = match snapshot {
        Some(snapshot) => snapshot.authorize_json_at(identity, tool, arguments, exchange.now()),
        None => Err(AuthorizeError::Engine(EngineError::NoPolicySet)),
    };
    telemetry::record_decision(&span, snapshot, identity, tool, result.as_ref());
    let answer = reply::for_call(id, result.as_ref(), settings, exchange.marking());
    let observer = exchange.observer();
    if observer.enabled() {
        let (principal, action) = match snapshot {
            Some(s) => (
                s.model().principal_uid(identity).to_string(),
                s.model().action_id(tool),
            ),
            None => (identity.subject.clone(), tool.to_owned()),
        };
        observer.on_call(&CallRecord {
            engine: &settings.engine_name,
            mode: settings.mode,
            principal,
            tool,
            action,
            request_id: id,
            outcome: result.as_ref(),
            arguments,
            forwarded: answer.is_none(),
            latency: started.elapsed(),
        });
    }
    answer.map_or(Verdict::Forward, Verdict::Answer)
}
