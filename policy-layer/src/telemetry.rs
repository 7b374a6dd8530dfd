//! The span contract, in one place (`docs/telemetry.md`): the request span, named per the
//! OpenTelemetry MCP semantic conventions (`{mcp.method.name} {tool}`), and under it one
//! `AuthorizeAction` span per decided request (a tools/call, and the requests of the other
//! governed capabilities, `mcp.method.name` saying which) and one `PartiallyAuthorizeActions`
//! span per list answer filtered. Their attributes mirror AgentCore's `aws.agentcore.policy.*`
//! one to one. A tools/call that rate limits apply to gets a `CheckRateLimits` span first.
//! The library only emits `tracing` spans; exporters are the application's.

use http::{HeaderMap, Method};
use tracing::{Span, field};

use crate::auth::Identity;
use crate::config::Settings;
use crate::engine::{AuthorizeError, Outcome, Snapshot};
use crate::jsonrpc::{Envelope, Message};
use crate::limit::{Admitted, Throttled};
use crate::model::ActionRef;
use crate::protocol::{MCP_PROTOCOL_VERSION, MCP_SESSION_ID};

/// The request span of a POST: `{method} {tool}` for a tools/call, else the method.
#[must_use]
pub fn request_span(envelope: &Envelope, headers: &HeaderMap) -> Span {
    let first = envelope.messages.first();
    let method = first.and_then(Message::method).unwrap_or("response");
    let tool = first
        .filter(|_| method == "tools/call")
        .and_then(Message::params)
        .and_then(|p| p.name.as_deref());
    let span = tracing::info_span!(
        "mcp.request",
        otel.name = field::Empty,
        otel.kind = "server",
        mcp.method.name = method,
        gen_ai.tool.name = tool,
        jsonrpc.request.id = first
            .and_then(Message::id)
            .map(|id| field::display(id.to_string())),
        mcp.session.id = header(headers, MCP_SESSION_ID),
        mcp.protocol.version = header(headers, MCP_PROTOCOL_VERSION),
        mcp.batch.size = envelope.messages.len(),
    );
    // The name is formatted only for a span someone records.
    if !span.is_disabled() {
        match tool {
            Some(tool) => span.record("otel.name", format!("{method} {tool}")),
            None => span.record("otel.name", method),
        };
    }
    span
}

/// The request span of a GET (the server's event stream) or a DELETE (the end of a session).
#[must_use]
pub fn stream_span(method: &Method, headers: &HeaderMap) -> Span {
    tracing::info_span!(
        "mcp.request",
        otel.name = method.as_str(),
        otel.kind = "server",
        http.request.method = method.as_str(),
        mcp.session.id = header(headers, MCP_SESSION_ID),
        mcp.protocol.version = header(headers, MCP_PROTOCOL_VERSION),
    )
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// The `AuthorizeAction` span of one request decided as an action (`method` is the MCP
/// method: `tools/call`, `resources/read`, ..., or `invoke`); entered while it is decided.
#[must_use]
pub fn authorize_action(settings: &Settings, method: &str, tool: Option<&str>) -> Span {
    authorize_action_in(&Span::current(), settings, method, tool)
}

/// [`authorize_action`] as a child of `parent`: for decisions made while a reply is read (a
/// server's request on a stream), and made before the request span exists (`invoke`).
#[must_use]
pub fn authorize_action_in(
    parent: &Span,
    settings: &Settings,
    method: &str,
    tool: Option<&str>,
) -> Span {
    tracing::info_span!(
        parent: parent,
        "AuthorizeAction",
        otel.kind = "internal",
        mcp.method.name = method,
        policy.engine = %settings.engine_name,
        policy.mode = settings.mode.as_str(),
        policy.action = field::Empty,
        gen_ai.tool.name = tool,
        enduser.id = field::Empty,
        policy.decision = field::Empty,
        policy.reason = field::Empty,
        policy.determining_policies = field::Empty,
        policy.errors = field::Empty,
        policy.log_only.matched_policies = field::Empty,
        policy.log_only.flipping_policies = field::Empty,
        policy.temporal.evaluation_invoked = field::Empty,
        policy.temporal.latency_ms = field::Empty,
        policy.temporal.event_timestamp_ns = field::Empty,
        policy.temporal.session_id = field::Empty,
        policy.temporal.conditions = field::Empty,
        policy.temporal.errors = field::Empty,
    )
}

/// Records on an `AuthorizeAction` span who called and what was decided.
pub fn record_decision(
    span: &Span,
    snapshot: Option<&Snapshot>,
    identity: &Identity,
    action: ActionRef<'_>,
    result: Result<&Outcome, &AuthorizeError>,
) {
    if span.is_disabled() {
        return;
    }
    if let Some(snapshot) = snapshot {
        let model = snapshot.model();
        span.record("policy.action", action.id(model).as_str());
        span.record("enduser.id", field::display(model.principal_uid(identity)));
    }
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) => {
            span.record("policy.decision", "ERROR");
            match e {
                AuthorizeError::Engine(engine) => {
                    span.record("policy.errors", field::display(engine))
                }
                AuthorizeError::Input(input) => span.record("policy.errors", field::display(input)),
            };
            return;
        }
    };
    span.record(
        "policy.decision",
        if outcome.allowed() { "ALLOW" } else { "DENY" },
    );
    if !outcome.allowed() {
        span.record("policy.reason", outcome.deny_reason().as_str());
    }
    if !outcome.determining.is_empty() {
        span.record(
            "policy.determining_policies",
            outcome.determining.join(",").as_str(),
        );
    }
    if !outcome.errors.is_empty() {
        span.record("policy.errors", outcome.errors.join("; ").as_str());
    }
    if !outcome.shadow_matched.is_empty() {
        span.record(
            "policy.log_only.matched_policies",
            outcome.shadow_matched.join(",").as_str(),
        );
        span.record(
            "policy.log_only.flipping_policies",
            outcome.shadow_flipping.join(",").as_str(),
        );
    }
}

/// Records on an `AuthorizeAction` span of a tools/call what its temporal conditions came to
/// (`docs/telemetry.md`): whether any was evaluated, how long that took, the decision time
/// of the call's `request` event, the session, each condition's value (`c<id>=<value>` with
/// its policy) and the conditions that could not be evaluated (they fail closed).
pub(crate) fn record_temporal(
    span: &Span,
    snapshot: Option<&Snapshot>,
    evaluated: Option<&crate::decide::temporal::Evaluated>,
) {
    if span.is_disabled() {
        return;
    }
    let Some(evaluated) = evaluated else {
        if snapshot.is_some_and(|s| !s.temporal().is_empty()) {
            span.record("policy.temporal.evaluation_invoked", false);
        }
        return;
    };
    span.record("policy.temporal.evaluation_invoked", true);
    span.record(
        "policy.temporal.latency_ms",
        evaluated.latency.as_secs_f64() * 1000.0,
    );
    span.record(
        "policy.temporal.event_timestamp_ns",
        i128::from(evaluated.event_ms) * 1_000_000,
    );
    span.record("policy.temporal.session_id", evaluated.session.as_str());
    span.record(
        "policy.temporal.conditions",
        evaluated.conditions(snapshot).as_str(),
    );
    let errors: Vec<String> = evaluated
        .values
        .errors()
        .map(|(id, e)| format!("c{id}: {e}"))
        .collect();
    if !errors.is_empty() {
        span.record("policy.temporal.errors", errors.join("; ").as_str());
    }
}

/// The `PartiallyAuthorizeActions` span of one list answer (`method`: `tools/list`, or the
/// list method of another governed capability), a child of the request span (it runs after
/// the upstream answered, possibly while its event stream is read).
#[must_use]
pub fn partially_authorize_actions(parent: &Span, settings: &Settings, method: &str) -> Span {
    tracing::info_span!(
        parent: parent,
        "PartiallyAuthorizeActions",
        otel.kind = "internal",
        mcp.method.name = method,
        policy.engine = %settings.engine_name,
        policy.mode = settings.mode.as_str(),
        enduser.id = field::Empty,
        policy.allowed_tools = field::Empty,
        policy.denied_tools = field::Empty,
        policy.allowed_tools.count = field::Empty,
        policy.denied_tools.count = field::Empty,
        policy.allowed_items = field::Empty,
        policy.denied_items = field::Empty,
        policy.allowed_items.count = field::Empty,
        policy.denied_items.count = field::Empty,
        policy.errors = field::Empty,
    )
}

/// Records on a `PartiallyAuthorizeActions` span what was kept and what was dropped: tool
/// names in `policy.*_tools`, the items of other lists (uris, uri templates, prompt names)
/// in `policy.*_items`.
pub fn record_listing(span: &Span, tools: bool, allowed: &[String], denied: &[String]) {
    let (allowed_key, denied_key, allowed_count, denied_count) = if tools {
        (
            "policy.allowed_tools",
            "policy.denied_tools",
            "policy.allowed_tools.count",
            "policy.denied_tools.count",
        )
    } else {
        (
            "policy.allowed_items",
            "policy.denied_items",
            "policy.allowed_items.count",
            "policy.denied_items.count",
        )
    };
    span.record(allowed_key, allowed.join(",").as_str());
    span.record(denied_key, denied.join(",").as_str());
    span.record(allowed_count, allowed.len());
    span.record(denied_count, denied.len());
}

/// The `CheckRateLimits` span of one tools/call that rate limits apply to, a child of the
/// request span; it lasts as long as the store takes to count the call.
#[must_use]
pub fn check_rate_limits(tool: &str, store: &'static str) -> Span {
    tracing::info_span!(
        "CheckRateLimits",
        otel.kind = "internal",
        gen_ai.tool.name = tool,
        rate_limit.store = store,
        rate_limit.decision = field::Empty,
        rate_limit.limits = field::Empty,
        rate_limit.id = field::Empty,
        rate_limit.key = field::Empty,
        rate_limit.metric = field::Empty,
        rate_limit.cause = field::Empty,
        rate_limit.retry_after = field::Empty,
        rate_limit.unchecked = field::Empty,
    )
}

/// Records on a `CheckRateLimits` span what the limits said: `ADMITTED` with the limits that
/// applied (and `rate_limit.unchecked` when a store failure let the call through), or
/// `THROTTLED` with the limit, its key, metric, cause and `Retry-After`.
pub fn record_rate_limit(span: &Span, result: Result<&Admitted, &Throttled>) {
    if span.is_disabled() {
        return;
    }
    match result {
        Ok(admitted) => {
            span.record("rate_limit.decision", "ADMITTED");
            let ids: Vec<&str> = admitted.limits().iter().map(|id| &**id).collect();
            span.record("rate_limit.limits", ids.join(",").as_str());
            if admitted.degraded() {
                span.record("rate_limit.unchecked", true);
            }
        }
        Err(throttled) => {
            span.record("rate_limit.decision", "THROTTLED");
            span.record("rate_limit.id", &*throttled.limit);
            span.record("rate_limit.key", throttled.limit_key.as_str());
            span.record("rate_limit.metric", throttled.metric.as_str());
            span.record("rate_limit.cause", throttled.cause.as_str());
            span.record("rate_limit.retry_after", throttled.retry_after);
        }
    }
}
