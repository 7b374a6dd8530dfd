//! AuthorizeAction as a step of the request: each message is forwarded or answered here
//! (`docs/request-flow.md`), dispatched by method: a tools/call ([`call`]) always; a
//! resources/read ([`resource`]), a prompts/get ([`prompt`]) and a completion of either when
//! their capability is governed (`policy.govern`). [`invoke`] decides the HTTP request itself
//! (`InvokeGateway`) before any of its messages is read. Anything else is forwarded.
//!
//! A request that cannot be decided (no policies, params that do not fit) is answered, never
//! forwarded undecided.

mod call;
pub(crate) mod invoke;
mod prompt;
mod resource;
pub(crate) mod temporal;

use std::time::Instant;

use serde_json::Value;

use crate::engine::{AuthorizeError, EngineError, Outcome};
use crate::exchange::Exchange;
use crate::jsonrpc::{INVALID_PARAMS, INVALID_REQUEST, Message};
use crate::model::{ActionRef, Capability, InputError, McpAction, RequestContext};
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

/// Decides one message; a tools/call with the request's policy `session` (its temporal
/// conditions and events).
pub(crate) fn decide(
    exchange: &Exchange,
    message: &Message,
    session: &mut temporal::Session,
) -> Verdict {
    let Some(method) = message.method() else {
        // A response to one of the server's requests: the server asked for it.
        return Verdict::Forward;
    };
    let govern = exchange.shared.engine.govern();
    let governed = match method {
        "tools/call" => true,
        "resources/read" => govern.governs(Capability::Resources),
        "prompts/get" => govern.governs(Capability::Prompts),
        "completion/complete" => {
            govern.governs(Capability::Resources) || govern.governs(Capability::Prompts)
        }
        _ => false,
    };
    if !governed {
        return Verdict::Forward;
    }
    let Some(id) = message.id() else {
        // A request nobody can be answered about is never forwarded undecided.
        return Verdict::Answer(reply::jsonrpc_error(
            &Value::Null,
            INVALID_REQUEST,
            &format!("invalid request: {method} must be a request with an id"),
        ));
    };
    match method {
        "tools/call" => call::call(exchange, message, id, session),
        "resources/read" => resource::read(exchange, message, id),
        "prompts/get" => prompt::get(exchange, message, id),
        _ => complete(exchange, message, id),
    }
}

/// `completion/complete` is decided as the prompt or resource it completes: a prompt
/// reference as `GetPrompt` (the arguments already resolved, none required), a resource
/// template reference as `ReadResource` of the template's uri as written. A reference to a
/// capability that is not governed passes; one that cannot be read is invalid params.
fn complete(exchange: &Exchange, message: &Message, id: &Value) -> Verdict {
    let govern = exchange.shared.engine.govern();
    // The request passed the strict parse: read again, it is the value the client sent.
    let params = serde_json::from_slice::<Value>(message.raw())
        .ok()
        .and_then(|m| m.get("params").cloned());
    let reference = params.as_ref().and_then(|p| p.get("ref"));
    let kind = reference
        .and_then(|r| r.get("type"))
        .and_then(Value::as_str);
    let invalid = |what: &str| {
        Verdict::Answer(reply::jsonrpc_error(
            id,
            INVALID_PARAMS,
            &format!("invalid params: {what}"),
        ))
    };
    match kind {
        Some("ref/prompt") if govern.governs(Capability::Prompts) => {
            let Some(name) = reference
                .and_then(|r| r.get("name"))
                .and_then(Value::as_str)
            else {
                return invalid("`params.ref.name` must be a string");
            };
            let arguments = params
                .as_ref()
                .and_then(|p| p.pointer("/context/arguments"))
                .filter(|a| !a.is_null())
                .map(Value::to_string);
            prompt::decide(
                exchange,
                id,
                "completion/complete",
                name,
                arguments.as_deref(),
                true,
            )
        }
        Some("ref/resource") if govern.governs(Capability::Resources) => {
            let Some(uri) = reference.and_then(|r| r.get("uri")).and_then(Value::as_str) else {
                return invalid("`params.ref.uri` must be a string");
            };
            resource::decide(exchange, id, "completion/complete", uri)
        }
        Some("ref/prompt" | "ref/resource") => Verdict::Forward,
        _ => invalid("`params.ref.type` must be \"ref/prompt\" or \"ref/resource\""),
    }
}

/// AuthorizeAction for a request decided as a fixed action: span, decision, record. `name`
/// is what the request names (a resource uri, a prompt name; empty for the others), `params`
/// its params as JSON text for the decision log.
pub(crate) fn authorize_fixed(
    exchange: &Exchange,
    action: McpAction,
    method: &str,
    request_id: &Value,
    name: &str,
    params: Option<&str>,
    context: Result<RequestContext, InputError>,
) -> Result<Outcome, AuthorizeError> {
    let settings = exchange.settings();
    let started = Instant::now();
    let span = telemetry::authorize_action_in(&exchange.span, settings, method, None);
    let _entered = span.enter();
    let snapshot = exchange.snapshot.as_deref();
    let identity = &*exchange.identity;
    let result = match (snapshot, context) {
        (_, Err(input)) => Err(AuthorizeError::Input(input)),
        (None, Ok(_)) => Err(AuthorizeError::Engine(EngineError::NoPolicySet)),
        (Some(snapshot), Ok(context)) => snapshot
            .authorize_mcp_at(&exchange.identity, action, context, exchange.now())
            .map_err(AuthorizeError::Engine),
    };
    telemetry::record_decision(
        &span,
        snapshot,
        identity,
        ActionRef::Mcp(action),
        result.as_ref(),
    );
    let observer = exchange.observer();
    if observer.enabled() {
        let principal = match snapshot {
            Some(s) => s.model().principal_uid(identity).to_string(),
            None => identity.subject.clone(),
        };
        let forwarded = settings.mode == crate::config::Mode::LogOnly
            || result.as_ref().is_ok_and(Outcome::allowed);
        observer.on_call(&CallRecord {
            engine: &settings.engine_name,
            mode: settings.mode,
            method,
            principal,
            tool: name,
            action: action.id().to_owned(),
            request_id,
            outcome: result.as_ref(),
            arguments: params,
            temporal: None,
            forwarded,
            latency: started.elapsed(),
        });
    }
    result
}
