//! Decision records: what each AuthorizeAction / PartiallyAuthorizeActions decided, handed to
//! an observer (the sidecar's metrics and decision log) besides the tracing spans.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::config::Mode;
use crate::engine::{AuthorizeError, Outcome};
use crate::limit::Throttled;

/// One AuthorizeAction: a tools/call, or a request of another governed capability.
#[derive(Debug)]
pub struct CallRecord<'a> {
    /// The policy engine name.
    pub engine: &'a str,
    /// ENFORCE or LOG_ONLY.
    pub mode: Mode,
    /// The MCP method decided: `tools/call`, `resources/read`, `prompts/get`,
    /// `completion/complete`, a server's `sampling/createMessage`, `elicitation/create` or
    /// `roots/list`, or `invoke` for `InvokeGateway`.
    pub method: &'a str,
    /// The principal, as a Cedar uid (`AgentCore::OAuthUser::"alice"`).
    pub principal: String,
    /// What the request names: the upstream tool name, a resource uri, a prompt name (empty
    /// for the server's requests and for invocations).
    pub tool: &'a str,
    /// The Cedar action id (`<Target>___<tool>`, `ReadResource`, ...).
    pub action: String,
    /// The request id (`null` for an invocation; the server's own id for its requests).
    pub request_id: &'a Value,
    /// The decision, or why none could be made.
    pub outcome: Result<&'a Outcome, &'a AuthorizeError>,
    /// The call's arguments (a prompt's arguments, a server request's params, an
    /// invocation's `{sourceIp, method}`) as written (JSON text; observers redact them
    /// unless told otherwise).
    pub arguments: Option<&'a str>,
    /// What the call's temporal conditions came to (`None`: its tool has none).
    pub temporal: Option<TemporalRecord>,
    /// Whether the call was forwarded upstream.
    pub forwarded: bool,
    /// Time spent deciding.
    pub latency: Duration,
}

/// The temporal part of a decided tools/call (`docs/temporal.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemporalRecord {
    /// The policy session id (`x-amzn-bedrock-agentcore-policy-session-id`).
    pub session: String,
    /// Each condition's value with its policy: `c0=true(policy-id),c1=error(policy-id)`.
    pub conditions: String,
    /// Time spent evaluating the conditions (AgentCore's `TemporalLatency`).
    pub latency: Duration,
}

impl CallRecord<'_> {
    /// `ALLOW`, `DENY` or `ERROR`.
    #[must_use]
    pub fn decision(&self) -> &'static str {
        match self.outcome {
            Ok(o) if o.allowed() => "ALLOW",
            Ok(_) => "DENY",
            Err(_) => "ERROR",
        }
    }
}

/// One list filtering (tools/list, or the list of another governed capability).
#[derive(Debug)]
pub struct ListRecord<'a> {
    /// The policy engine name.
    pub engine: &'a str,
    /// ENFORCE or LOG_ONLY.
    pub mode: Mode,
    /// The list method: `tools/list`, `resources/list`, `resources/templates/list`,
    /// `prompts/list`.
    pub method: &'a str,
    /// The principal uid.
    pub principal: String,
    /// Items kept (tool names, resource uris, uri templates, prompt names).
    pub allowed: Vec<String>,
    /// Items a definite deny removed (or would have, in LOG_ONLY).
    pub denied: Vec<String>,
    /// Why filtering failed, if it did (the list was then answered with an error).
    pub error: Option<String>,
    /// Time spent deciding.
    pub latency: Duration,
}

/// One tools/call that the rate limits refused, or let through unchecked because the state
/// store could not answer (`docs/rate-limits.md`). Calls the limits admitted are not recorded
/// here: they go on to Cedar and its [`CallRecord`].
#[derive(Debug)]
pub struct LimitRecord<'a> {
    /// The policy engine name.
    pub engine: &'a str,
    /// The engine mode (limits enforce in both).
    pub mode: Mode,
    /// The principal, as a Cedar uid.
    pub principal: String,
    /// The upstream tool name.
    pub tool: &'a str,
    /// The request id.
    pub request_id: &'a Value,
    /// What happened.
    pub outcome: LimitOutcome<'a>,
    /// Time spent checking (a store round trip with Redis).
    pub latency: Duration,
}

/// What the rate limits did with a call they recorded.
#[derive(Debug, Clone, Copy)]
pub enum LimitOutcome<'a> {
    /// Refused and answered here (never forwarded): which limit, its key, metric and cause
    /// (`exceeded`, `blocked`, or `store_unavailable` under `on_error = "deny"`).
    Throttled(&'a Throttled),
    /// The store could not answer and `on_error = "allow"` let the call through unchecked;
    /// these limits applied.
    Unchecked {
        /// The ids of the limits that applied.
        limits: &'a [Arc<str>],
    },
}

/// Receives every decision record; the sidecar implements it for metrics and its log.
pub trait DecisionObserver: Send + Sync + 'static {
    /// A request was decided (or failed to be).
    fn on_call(&self, record: &CallRecord<'_>);
    /// A list response was filtered.
    fn on_list(&self, record: &ListRecord<'_>) {
        let _ = record;
    }
    /// A call was refused by a rate limit, or let through unchecked by a store failure.
    fn on_limit(&self, record: &LimitRecord<'_>) {
        let _ = record;
    }
    /// A request was refused before any decision: authentication failed.
    fn on_auth_failure(&self, reason: &'static str) {
        let _ = reason;
    }
    /// A request was refused because its policy session cannot be decided (temporal
    /// policies, `docs/temporal.md`): `changed`, `evicted` or `overflowed` (HTTP 409), or
    /// `store_unavailable` (503).
    fn on_policy_session_refused(&self, reason: &'static str) {
        let _ = reason;
    }
    /// Whether records are wanted at all (when not, the layer does not build them).
    fn enabled(&self) -> bool {
        true
    }
}

/// An observer that ignores everything (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl DecisionObserver for NoObserver {
    fn on_call(&self, _: &CallRecord<'_>) {}

    fn enabled(&self) -> bool {
        false
    }
}
