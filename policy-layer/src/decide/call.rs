//! AuthorizeAction for one tools/call (`docs/request-flow.md`): decided by the engine; a call
//! that cannot be decided (no policies, bad arguments) is answered, never forwarded undecided.

use std::time::Instant;

use serde_json::Value;

use super::Verdict;
use crate::engine::{AuthorizeError, EngineError, Outcome};
use crate::exchange::Exchange;
use crate::jsonrpc::{INVALID_PARAMS, Message};
use crate::model::{ActionRef, Drift};
use crate::record::CallRecord;
use crate::{reply, telemetry};

/// AuthorizeAction for one tools/call.
pub(super) fn call(
    exchange: &Exchange,
    message: &Message,
    id: &Value,
    session: &mut super::temporal::Session,
) -> Verdict {
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
    let span = telemetry::authorize_action(settings, "tools/call", Some(tool));
    let _entered = span.enter();
    let snapshot = exchange.snapshot.as_deref();
    let identity = &*exchange.identity;
    let arguments = message.arguments();
    let now = exchange.now();
    let drift = snapshot.and_then(|s| s.pin_drift(tool));
    // The temporal conditions of the tool, evaluated over the session (`docs/temporal.md`);
    // not for a tool that does not match its pin, which is denied whatever they say.
    let temporal = drift
        .is_none()
        .then(|| session.values(identity, tool, id, arguments, now.unix_millis()))
        .flatten();
    let result = match (snapshot, &drift, &temporal) {
        (_, Some(drift), _) => Ok(unpinned(tool, drift)),
        (Some(snapshot), None, None) => {
            snapshot.authorize_json_at(&exchange.identity, tool, arguments, now)
        }
        (Some(snapshot), None, Some(evaluated)) => {
            for (c, error) in evaluated.values.errors() {
                tracing::warn!(condition = c, %error, "temporal condition could not be evaluated; its clause fails closed");
            }
            snapshot.authorize_temporal_at(
                &exchange.identity,
                tool,
                arguments,
                now,
                &evaluated.values,
            )
        }
        (None, None, _) => Err(AuthorizeError::Engine(EngineError::NoPolicySet)),
    };
    telemetry::record_decision(
        &span,
        snapshot,
        identity,
        ActionRef::Tool(tool),
        result.as_ref(),
    );
    telemetry::record_temporal(&span, snapshot, temporal.as_ref());
    let answer = match (&drift, &result) {
        // A tool that does not match its pin is refused in every mode: LOG_ONLY trials
        // policies, not tools.
        (Some(_), Ok(outcome)) => Some(reply::denied(
            id,
            outcome,
            settings.deny_style,
            settings.exception_level,
            exchange.marking(),
        )),
        _ => reply::for_call(id, result.as_ref(), settings, exchange.marking()),
    };
    session.decided(
        identity,
        tool,
        id,
        arguments,
        now.unix_millis(),
        answer.is_none(),
    );
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
            method: "tools/call",
            principal,
            tool,
            action,
            request_id: id,
            outcome: result.as_ref(),
            arguments,
            temporal: temporal.as_ref().map(|t| t.record(snapshot)),
            forwarded: answer.is_none(),
            latency: started.elapsed(),
        });
    }
    answer.map_or(Verdict::Forward, Verdict::Answer)
}

/// The id a `tools.lock` denial names as its determining policy.
pub(crate) const TOOLS_LOCK: &str = "tools.lock";

/// The deny of a tool that does not match its pin: `tools.lock` determines it, the drift is
/// its error (`docs/pinning.md`).
fn unpinned(tool: &str, drift: &Drift) -> Outcome {
    Outcome {
        decision: cedar_policy::Decision::Deny,
        determining: vec![TOOLS_LOCK.to_owned()],
        errors: vec![format!("{TOOLS_LOCK}: {tool}: {drift}")],
        shadow_matched: Vec::new(),
        shadow_flipping: Vec::new(),
    }
}
