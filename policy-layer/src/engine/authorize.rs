//! AuthorizeAction: one request (a tools/call, or a request of another governed capability)
//! against the policies that can apply to its action.

use cedar_policy::{Authorizer, Context, Decision, PolicySet, Request, Response};
use cedar_policy_core::ast::RestrictedExpr;
use serde_json::Value;

use super::Snapshot;
use super::entities::Caller;
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::model::{ActionRef, InputError, McpAction, RequestContext, TypedInput, params, values};

/// The record of one AuthorizeAction: what was decided and why (`docs/cedar-model.md`, `docs/telemetry.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Allow or deny, by the enforced policies.
    pub decision: Decision,
    /// The policies that decided: satisfied forbids on a deny, satisfied permits on an allow.
    pub determining: Vec<String>,
    /// Evaluation errors (such a policy does not apply), as `<policy id>: <error>`.
    pub errors: Vec<String>,
    /// Shadow policies that matched this request.
    pub shadow_matched: Vec<String>,
    /// Shadow policies that would have flipped the decision had they been enforced.
    pub shadow_flipping: Vec<String>,
}

impl Outcome {
    /// Whether the call is allowed.
    #[must_use]
    pub fn allowed(&self) -> bool {
        self.decision == Decision::Allow
    }

    /// The reason of a deny, as AgentCore words it (`docs/replies.md`).
    #[must_use]
    pub fn deny_reason(&self) -> String {
        if self.determining.is_empty() {
            "Policy evaluation denied due to no determining policies".to_owned()
        } else {
            format!(
                "Policy evaluation denied due to {}",
                self.determining.join(", ")
            )
        }
    }
}

/// Why no decision could be made for a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizeError {
    /// The arguments do not fit the tool's input schema.
    #[error("{0}")]
    Input(#[from] InputError),
    /// The engine could not evaluate the request.
    #[error("policy evaluation failed: {0}")]
    Engine(#[from] EngineError),
}

/// Why the engine could not evaluate a request at all (the caller then fails closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// No policy set has loaded: nothing can be decided.
    #[error("no usable policy set")]
    NoPolicySet,
    /// Cedar refused the request (principal, action, resource or context).
    #[error("{0}")]
    Request(String),
    /// The request's entities (principal and action hierarchy) could not be built.
    #[error("{0}")]
    Entities(String),
}

impl Snapshot {
    /// Decides a call of `tool` with `arguments` (a parsed value: test cases, tools) by
    /// `identity`, now by the system clock; the same as
    /// [`authorize_json`](Self::authorize_json) of its JSON text.
    ///
    /// # Errors
    /// As [`authorize_json`](Self::authorize_json).
    pub fn authorize<'a>(
        &self,
        identity: impl Into<Caller<'a>>,
        tool: &str,
        arguments: Option<&Value>,
    ) -> Result<Outcome, AuthorizeError> {
        self.authorize_at(identity, tool, arguments, SystemClock.now())
    }

    /// [`authorize`](Self::authorize) with `context.system.now` at `now`.
    ///
    /// # Errors
    /// As [`authorize_json`](Self::authorize_json).
    pub fn authorize_at<'a>(
        &self,
        identity: impl Into<Caller<'a>>,
        tool: &str,
        arguments: Option<&Value>,
        now: Timestamp,
    ) -> Result<Outcome, AuthorizeError> {
        let text = arguments.map(Value::to_string);
        self.authorize_json_at(identity, tool, text.as_deref(), now)
    }

    /// Decides a call of `tool` by `identity` with `arguments` as the client wrote them (JSON
    /// text, so numbers are typed exactly as written), now by the system clock.
    ///
    /// # Errors
    /// [`AuthorizeError::Input`] when the arguments do not fit the tool's schema,
    /// [`AuthorizeError::Engine`] when Cedar cannot evaluate the request.
    pub fn authorize_json<'a>(
        &self,
        identity: impl Into<Caller<'a>>,
        tool: &str,
        arguments: Option<&str>,
    ) -> Result<Outcome, AuthorizeError> {
        self.authorize_json_at(identity, tool, arguments, SystemClock.now())
    }

    /// [`authorize_json`](Self::authorize_json) with `context.system.now` at `now` (the
    /// layer reads its [`Clock`] once per call).
    ///
    /// # Errors
    /// As [`authorize_json`](Self::authorize_json).
    pub fn authorize_json_at<'a>(
        &self,
        identity: impl Into<Caller<'a>>,
        tool: &str,
        arguments: Option<&str>,
        now: Timestamp,
    ) -> Result<Outcome, AuthorizeError> {
        let input_type = self.input_type(tool);
        let system = values::system(now).map_err(EngineError::Request)?;
        let context =
            TypedInput::from_json(arguments, input_type)?.into_context_with_system(system);
        Ok(self.decide(identity, ActionRef::Tool(tool), context)?)
    }

    /// [`authorize_json_at`](Self::authorize_json_at) with the values of the call's temporal
    /// conditions as `context.temporal` (`docs/temporal.md`): a condition without a value is
    /// absent, and its rewritten clause fails closed.
    ///
    /// # Errors
    /// As [`authorize_json`](Self::authorize_json).
    pub fn authorize_temporal_at<'a>(
        &self,
        identity: impl Into<Caller<'a>>,
        tool: &str,
        arguments: Option<&str>,
        now: Timestamp,
        temporal: &crate::temporal::TemporalValues,
    ) -> Result<Outcome, AuthorizeError> {
        let input_type = self.input_type(tool);
        let system = values::system(now).map_err(EngineError::Request)?;
        let input = TypedInput::from_json(arguments, input_type)?.into_value();
        let context = values::context_with_temporal(input, system, temporal.to_cedar());
        Ok(self.decide(identity, ActionRef::Tool(tool), context)?)
    }

    /// Decides a request of another governed capability (`ReadResource`, ...) by `identity`
    /// with its context (`model/params.rs`).
    ///
    /// # Errors
    /// [`EngineError`] when Cedar cannot evaluate the request.
    pub fn authorize_mcp<'a>(
        &self,
        identity: impl Into<Caller<'a>>,
        action: McpAction,
        context: RequestContext,
    ) -> Result<Outcome, EngineError> {
        self.authorize_mcp_at(identity, action, context, SystemClock.now())
    }

    /// [`authorize_mcp`](Self::authorize_mcp) with `context.system.now` at `now`.
    ///
    /// # Errors
    /// As [`authorize_mcp`](Self::authorize_mcp).
    pub fn authorize_mcp_at<'a>(
        &self,
        identity: impl Into<Caller<'a>>,
        action: McpAction,
        context: RequestContext,
        now: Timestamp,
    ) -> Result<Outcome, EngineError> {
        let system = values::system(now).map_err(EngineError::Request)?;
        let context = context
            .with_system(RestrictedExpr::from(system))
            .map_err(EngineError::Request)?;
        self.decide(identity, ActionRef::Mcp(action), context)
    }

    /// Decides `action` with its params given as a value (policy test cases, solver
    /// examples), the context built as the layer builds it from the same params.
    ///
    /// # Errors
    /// [`AuthorizeError::Input`] when the params do not fit, [`AuthorizeError::Engine`] when
    /// Cedar cannot evaluate the request.
    pub fn authorize_params<'a>(
        &self,
        identity: impl Into<Caller<'a>>,
        action: McpAction,
        params: Option<&Value>,
    ) -> Result<Outcome, AuthorizeError> {
        self.authorize_params_at(identity, action, params, SystemClock.now())
    }

    /// [`authorize_params`](Self::authorize_params) with `context.system.now` at `now`.
    ///
    /// # Errors
    /// As [`authorize_params`](Self::authorize_params).
    pub fn authorize_params_at<'a>(
        &self,
        identity: impl Into<Caller<'a>>,
        action: McpAction,
        params: Option<&Value>,
        now: Timestamp,
    ) -> Result<Outcome, AuthorizeError> {
        let context = params::from_params(action, params, &self.catalog)?;
        Ok(self.authorize_mcp_at(identity, action, context, now)?)
    }

    /// One AuthorizeAction: the enforced policies that can apply decide, the shadow ones
    /// are evaluated beside them.
    fn decide<'a>(
        &self,
        caller: impl Into<Caller<'a>>,
        action: ActionRef<'_>,
        context: Context,
    ) -> Result<Outcome, EngineError> {
        let caller = caller.into();
        let sets = self.index.for_action(action);
        let model = &self.model;
        let request = Request::new(
            model.principal_uid(caller.identity()),
            model.uid_of(action),
            model.resource_uid(),
            context,
            None,
        )
        .map_err(|e| EngineError::Request(e.to_string()))?;
        let entities = self.entities(caller, action, sets)?;

        let authorizer = Authorizer::new();
        let response = authorizer.is_authorized(&request, &sets.active, &entities);
        let decision = response.decision();
        let mut outcome = Outcome {
            decision,
            determining: policy_ids(&response),
            errors: errors(&response),
            shadow_matched: Vec::new(),
            shadow_flipping: Vec::new(),
        };
        if sets.has_shadow() {
            let eval = |set: &PolicySet| authorizer.is_authorized(&request, set, &entities);
            let forbids = eval(&sets.shadow_forbids);
            let permits = eval(&sets.shadow_permits);
            let matched_forbids = policy_ids(&forbids);
            let matched_permits = if permits.decision() == Decision::Allow {
                policy_ids(&permits)
            } else {
                Vec::new()
            };
            // A shadow forbid flips an allow; a shadow permit flips a deny that no forbid made.
            outcome.shadow_flipping = match decision {
                Decision::Allow => matched_forbids.clone(),
                Decision::Deny if outcome.determining.is_empty() => matched_permits.clone(),
                Decision::Deny => Vec::new(),
            };
            outcome.shadow_matched = matched_forbids;
            outcome.shadow_matched.extend(matched_permits);
            outcome.errors.extend(errors(&forbids));
            outcome.errors.extend(errors(&permits));
        }
        Ok(outcome)
    }
}

fn policy_ids(response: &Response) -> Vec<String> {
    let mut ids: Vec<String> = response
        .diagnostics()
        .reason()
        .map(|id| AsRef::<str>::as_ref(id).to_owned())
        .collect();
    ids.sort_unstable();
    ids
}

fn errors(response: &Response) -> Vec<String> {
    response
        .diagnostics()
        .errors()
        .map(ToString::to_string)
        .collect()
}
