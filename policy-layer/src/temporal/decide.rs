//! One session decided end to end, in memory: the reference for how the engine decides a call
//! with a session history and which events it records, used by the unit tests over
//! AgentCore's documented examples and by the differential test against Dogwood
//! (`difftest/`), whose test vectors [`Vector`] reads.
//!
//! A call is decided by Cedar over the rewritten policies, with `context.temporal` holding
//! the values of the conditions the tool's policies use. Events are recorded as AgentCore
//! records them: an allowed call's `request` at decision time, then its `response` (with the
//! tool's outputs) or `error` when it completes; a denied call's `error`.

use cedar_policy::{Authorizer, Decision, Entities, PolicySet, Request, RestrictedExpression};
use serde::Deserialize;
use serde_json::Value as Json;

use super::ast::EventKind;
use super::history::{Event, SessionId};
use super::value::Value;
use super::{TemporalPolicies, TemporalValues};
use crate::auth::{Identity, PrincipalKind};
use crate::engine::{Enforcement, LoadErrors, PolicySource};
use crate::model::tools::InputType;
use crate::model::{ActionModel, ModelConfig, ToolCatalog, TypedInput};

/// How a denied call is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeniedCall {
    /// As AgentCore records it: an `error` event only.
    Error,
    /// As Dogwood's reference interpreter records it: the `request` stays in the history
    /// (every decision event is), followed by the `error`.
    RequestThenError,
}

/// Why a call could not be decided (the caller fails closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    /// The arguments do not fit the tool's schema.
    #[error("invalid input: {0}")]
    Input(String),
    /// Cedar could not take the request.
    #[error("policy evaluation failed: {0}")]
    Engine(String),
}

/// A call of a session.
#[derive(Debug, Clone)]
pub struct Call {
    /// The caller's `sub`.
    pub principal: String,
    /// The upstream tool name.
    pub tool: String,
    /// The `tools/call` arguments.
    pub arguments: Json,
    /// The JSON-RPC id, as text.
    pub request_id: Option<String>,
}

/// A decided call.
#[derive(Debug, Clone)]
pub struct Decided {
    /// Whether it is allowed.
    pub allowed: bool,
    /// The policies that decided.
    pub determining: Vec<String>,
    /// The temporal conditions' values.
    pub values: TemporalValues,
}

/// A session, decided in memory.
pub struct SessionDecider {
    temporal: TemporalPolicies,
    active: PolicySet,
    model: ActionModel,
    catalog: ToolCatalog,
    history: Vec<Event>,
    session: SessionId,
}

impl SessionDecider {
    /// Loads `sources` for a gateway described by `model` with the tools of `catalog`.
    ///
    /// # Errors
    /// [`LoadErrors`] when the policies do not load.
    pub fn new(
        sources: &[PolicySource],
        model: ModelConfig,
        catalog: ToolCatalog,
    ) -> Result<Self, LoadErrors> {
        let loaded = super::load(sources)?;
        let model = ActionModel::new(model);
        let temporal = TemporalPolicies::new(&loaded, &model);
        let mut active = PolicySet::new();
        for p in &loaded.policies.policies {
            if p.enforcement == Enforcement::Enforce {
                // Ids are unique (checked at load).
                let _ = active.add(p.policy.clone());
            }
        }
        Ok(Self {
            temporal,
            active,
            model,
            catalog,
            history: Vec::new(),
            session: SessionId::parse(b"session").map_err(|e| {
                LoadErrors(vec![crate::engine::LoadError::Unsupported {
                    origin: String::new(),
                    id: String::new(),
                    message: e.to_string(),
                }])
            })?,
        })
    }

    /// The temporal conditions and their index.
    #[must_use]
    pub fn temporal(&self) -> &TemporalPolicies {
        &self.temporal
    }

    /// The session's events so far.
    #[must_use]
    pub fn history(&self) -> &[Event] {
        &self.history
    }

    fn input_type(&self, tool: &str) -> &InputType {
        self.catalog
            .get(tool)
            .map_or(&InputType::Untyped, |t| &t.input)
    }

    fn identity(principal: &str) -> Identity {
        Identity {
            kind: PrincipalKind::OAuthUser,
            subject: principal.to_owned(),
            tags: Vec::new(),
            expires_at: None,
        }
    }

    /// The event of `kind` for `call` at `time_ms`, its fields filled as the event schema says.
    #[must_use]
    pub fn event(
        &self,
        call: &Call,
        kind: EventKind,
        time_ms: i64,
        output: Option<&Json>,
    ) -> Event {
        super::call_event(
            &self.temporal,
            &self.model,
            &Self::identity(&call.principal),
            &call.tool,
            kind,
            time_ms,
            call.request_id.as_deref(),
            Value::from_json(&call.arguments, self.input_type(&call.tool)),
            output,
        )
    }

    /// Decides `call` at `now_ms` against the session's history. An allowed call's `request`
    /// event is recorded at once (a call in flight counts for `request` conditions); a denied
    /// call records nothing here: see [`SessionDecider::record_denied`].
    ///
    /// # Errors
    /// [`DecideError`] when the call cannot be decided.
    pub fn decide(&mut self, call: &Call, now_ms: i64) -> Result<Decided, DecideError> {
        let input_type = self.input_type(&call.tool).clone();
        let typed = TypedInput::new(Some(&call.arguments), &input_type)
            .map_err(|e| DecideError::Input(e.to_string()))?;
        let current = self.event(call, EventKind::Request, now_ms, None);
        let ids = self.temporal.for_tool(&call.tool);
        let values = if ids.is_empty() {
            TemporalValues::default()
        } else {
            let facts = super::request_facts(
                &self.model,
                &Self::identity(&call.principal),
                current.input.clone(),
                &self.session,
            );
            let horizon = now_ms.saturating_sub(self.temporal.max_window_ms());
            let from = self.history.partition_point(|e| e.time_ms < horizon);
            self.temporal
                .evaluate(ids, &self.history[from..], &current, &facts)
        };
        let mut context = typed.into_context();
        if !ids.is_empty() {
            let record =
                RestrictedExpression::new_record(values.results.iter().filter_map(|(id, r)| {
                    r.as_ref().ok().map(|b| {
                        (
                            super::rewrite::context_name(*id),
                            RestrictedExpression::new_bool(*b),
                        )
                    })
                }))
                .map_err(|e| DecideError::Engine(e.to_string()))?;
            context = context
                .merge([("temporal".to_owned(), record)])
                .map_err(|e| DecideError::Engine(e.to_string()))?;
        }
        let identity = Self::identity(&call.principal);
        let request = Request::new(
            self.model.principal_uid(&identity),
            self.model.action_uid(&call.tool),
            self.model.resource_uid(),
            context,
            None,
        )
        .map_err(|e| DecideError::Engine(e.to_string()))?;
        let mut entities = self.model.action_entities(&call.tool);
        entities.push(
            cedar_policy::Entity::new(
                self.model.principal_uid(&identity),
                [(
                    "id".to_owned(),
                    RestrictedExpression::new_string(call.principal.clone()),
                )]
                .into(),
                Default::default(),
            )
            .map_err(|e| DecideError::Engine(e.to_string()))?,
        );
        let entities = Entities::from_entities(entities, None)
            .map_err(|e| DecideError::Engine(e.to_string()))?;
        let response = Authorizer::new().is_authorized(&request, &self.active, &entities);
        let allowed = response.decision() == Decision::Allow;
        if allowed {
            self.record(current);
        }
        let mut determining: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|id| AsRef::<str>::as_ref(id).to_owned())
            .collect();
        determining.sort_unstable();
        Ok(Decided {
            allowed,
            determining,
            values,
        })
    }

    /// Records a denied call: an `error` event at `time_ms` (and, for
    /// [`DeniedCall::RequestThenError`], its `request` at `decided_ms` first).
    pub fn record_denied(&mut self, call: &Call, decided_ms: i64, time_ms: i64, mode: DeniedCall) {
        if mode == DeniedCall::RequestThenError {
            let request = self.event(call, EventKind::Request, decided_ms, None);
            self.record(request);
        }
        let error = self.event(call, EventKind::Error, time_ms, None);
        self.record(error);
    }

    /// Appends `event` when some condition can read it (`TemporalPolicies::records`).
    fn record(&mut self, event: Event) {
        if self.temporal.records(&event.action, event.kind) {
            self.history.push(event);
        }
    }

    /// Records the completion of an allowed call: its `response` with the tool's
    /// `structuredContent` when it succeeded, its `error` when it failed.
    pub fn record_completion(
        &mut self,
        call: &Call,
        time_ms: i64,
        output: Result<Option<&Json>, ()>,
    ) {
        let event = match output {
            Ok(structured) => self.event(call, EventKind::Response, time_ms, structured),
            Err(()) => self.event(call, EventKind::Error, time_ms, None),
        };
        self.record(event);
    }
}

/// A test vector shared with the differential test (`difftest/`): policies, the gateway's
/// tools and a session's calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vector {
    /// A name for reports.
    pub name: String,
    /// Where it comes from (an AgentCore documentation page, or a generator seed).
    #[serde(default)]
    pub source: String,
    /// The policy file (plain and temporal policies).
    pub policies: String,
    /// The target name (actions are `<target>___<tool>`).
    pub target: String,
    /// The gateway id.
    pub gateway: String,
    /// The tools, as `tools/list` lists them (`inputSchema`, `outputSchema`).
    pub tools: Vec<Json>,
    /// The calls, in time order.
    pub steps: Vec<Step>,
    /// The documented decisions (`"ALLOW"` / `"DENY"`), one per step, when documented.
    #[serde(default)]
    pub expect: Option<Vec<String>>,
}

/// One call of a vector's session.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// When it is decided, in whole seconds; its completion is recorded one second later.
    pub t: i64,
    /// The caller's `sub`.
    pub principal: String,
    /// The tool.
    pub tool: String,
    /// The arguments.
    #[serde(default)]
    pub input: Json,
    /// Whether the tool succeeds when called (default true).
    #[serde(default = "yes")]
    pub ok: bool,
    /// The tool's `structuredContent` when it succeeds.
    #[serde(default)]
    pub output: Option<Json>,
}

fn yes() -> bool {
    true
}

impl Vector {
    /// Replays the session: each step is decided at `t`, then completes (or its denial is
    /// recorded) at `t + 1`. Returns `"ALLOW"` / `"DENY"` per step.
    ///
    /// # Errors
    /// A message when the policies do not load or a call cannot be decided.
    pub fn replay(&self, denied: DeniedCall) -> Result<Vec<&'static str>, String> {
        Ok(self
            .replay_decided(denied)?
            .iter()
            .map(|d| if d.allowed { "ALLOW" } else { "DENY" })
            .collect())
    }

    /// [`Vector::replay`], with each step's determining policies and temporal values.
    ///
    /// # Errors
    /// A message when the policies do not load or a call cannot be decided.
    pub fn replay_decided(&self, denied: DeniedCall) -> Result<Vec<Decided>, String> {
        let model = ModelConfig {
            target: self.target.clone(),
            gateway_id: self.gateway.clone(),
            groups: Default::default(),
            govern: Default::default(),
        };
        let catalog = ToolCatalog::from_list(&serde_json::json!({ "tools": self.tools }));
        let sources = [PolicySource::new(
            format!("{}.cedar", self.name),
            self.policies.clone(),
        )];
        let mut session =
            SessionDecider::new(&sources, model, catalog).map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(self.steps.len());
        for (n, step) in self.steps.iter().enumerate() {
            let call = Call {
                principal: step.principal.clone(),
                tool: step.tool.clone(),
                arguments: if step.input.is_null() {
                    serde_json::json!({})
                } else {
                    step.input.clone()
                },
                request_id: Some(format!("r{n}")),
            };
            let t = step.t * 1000;
            let decided = session
                .decide(&call, t)
                .map_err(|e| format!("step {n}: {e}"))?;
            if decided.allowed {
                let output = if step.ok {
                    Ok(step.output.as_ref())
                } else {
                    Err(())
                };
                session.record_completion(&call, t + 1000, output);
            } else {
                session.record_denied(&call, t, t + 1000, denied);
            }
            out.push(decided);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AgentCore's documented examples (`docs/temporal.md`), as vectors shared with `difftest/`.
    const DOCUMENTED: &str = include_str!("testdata/documented.json");

    fn vectors() -> Vec<Vector> {
        serde_json::from_str(DOCUMENTED).expect("documented vectors parse")
    }

    fn decides_as_documented(name: &str) {
        let vector = vectors()
            .into_iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("no vector {name}"));
        let decided = vector.replay(DeniedCall::Error).expect("replays");
        let expected: Vec<&str> = vector
            .expect
            .as_ref()
            .expect("documented")
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(decided, expected, "{name} ({})", vector.source);
    }

    #[test]
    fn denies_disbursement_without_prior_approval() {
        decides_as_documented("insurance_integrity_no_approval");
    }

    #[test]
    fn allows_disbursement_for_the_claim_approved_earlier() {
        decides_as_documented("insurance_integrity_same_claim");
    }

    #[test]
    fn denies_disbursement_for_a_claim_other_than_the_approved_one() {
        decides_as_documented("insurance_integrity_other_claim");
    }

    #[test]
    fn allows_approval_after_an_attempted_status_lookup() {
        decides_as_documented("insurance_prerequisite_request");
    }

    #[test]
    fn allows_approval_only_within_five_minutes_of_a_completed_lookup() {
        decides_as_documented("insurance_freshness");
    }

    #[test]
    fn a_failed_lookup_is_not_a_completed_prerequisite() {
        decides_as_documented("insurance_freshness_failed_lookup");
    }

    #[test]
    fn denies_the_fourth_disbursement_in_five_minutes() {
        decides_as_documented("insurance_rate_limit");
    }

    #[test]
    fn denies_the_disbursement_that_reaches_the_running_total() {
        decides_as_documented("insurance_running_total");
    }

    #[test]
    fn each_approval_is_good_for_one_disbursement() {
        decides_as_documented("insurance_one_time_approval");
    }

    #[test]
    fn denies_a_repeat_within_a_minute_of_completion() {
        decides_as_documented("insurance_cool_down");
    }

    #[test]
    fn a_status_review_after_approval_withdraws_permission() {
        decides_as_documented("insurance_precondition_not_invalidated");
    }

    #[test]
    fn requires_lookup_then_approval_then_disbursement() {
        decides_as_documented("insurance_chain_in_order");
    }

    #[test]
    fn requires_both_prerequisites_in_any_order() {
        decides_as_documented("insurance_two_prerequisites_any_order");
    }

    #[test]
    fn a_disbursement_blocks_deletion_for_two_minutes() {
        decides_as_documented("insurance_mutex_disburse_first");
    }

    #[test]
    fn a_deletion_blocks_disbursement() {
        decides_as_documented("insurance_mutex_delete_first");
    }

    #[test]
    fn allows_deletion_after_two_disbursements_of_that_claim() {
        decides_as_documented("insurance_threshold_two_disbursements");
    }

    #[test]
    fn blocks_disbursement_for_three_minutes_after_a_denied_approval() {
        decides_as_documented("insurance_block_after_denial");
    }

    #[test]
    fn caps_claim_filings_at_three_a_day_beside_plain_conditions() {
        decides_as_documented("insurance_mixed_without_guardrail");
    }

    #[test]
    fn denies_transfer_without_a_lookup() {
        decides_as_documented("funds_integrity_no_lookup");
    }

    #[test]
    fn allows_transfer_to_the_account_a_lookup_returned() {
        decides_as_documented("funds_integrity_same_account");
    }

    #[test]
    fn denies_transfer_to_an_account_no_lookup_returned() {
        decides_as_documented("funds_integrity_other_account");
    }

    #[test]
    fn allows_balance_only_after_a_transfer_request() {
        decides_as_documented("funds_tool_sequencing");
    }

    #[test]
    fn allows_balance_only_within_five_minutes_of_a_completed_transfer() {
        decides_as_documented("funds_data_freshness");
    }

    #[test]
    fn denies_transfers_beyond_three_in_five_minutes() {
        decides_as_documented("funds_session_rate_limit");
    }

    #[test]
    fn each_balance_lookup_approves_one_transfer() {
        decides_as_documented("funds_one_time_approval");
    }

    #[test]
    fn denies_the_transfer_that_reaches_3000_in_five_minutes() {
        decides_as_documented("funds_cumulative_budget");
    }

    #[test]
    fn denies_a_transfer_within_a_minute_of_the_last_one() {
        decides_as_documented("funds_cool_down");
    }

    #[test]
    fn a_history_lookup_invalidates_the_balance_confirmation() {
        decides_as_documented("funds_continuous_precondition");
    }

    #[test]
    fn requires_balance_then_history_then_transfer() {
        decides_as_documented("funds_multi_hop_chain");
    }

    #[test]
    fn a_transfer_request_blocks_history() {
        decides_as_documented("funds_mutex_transfer_first");
    }

    #[test]
    fn a_history_request_blocks_transfer() {
        decides_as_documented("funds_mutex_history_first");
    }

    #[test]
    fn requires_transfer_and_history_completed_in_any_order() {
        decides_as_documented("funds_parallel_prerequisites");
    }

    #[test]
    fn allows_balance_after_two_transfers_to_that_customer() {
        decides_as_documented("funds_approval_threshold");
    }

    #[test]
    fn allows_transfer_with_no_prior_denial() {
        decides_as_documented("funds_no_prior_denial");
    }

    #[test]
    fn denies_transfer_after_a_denied_balance_lookup() {
        decides_as_documented("funds_block_after_prior_denial");
    }

    #[test]
    fn allows_a_sale_only_after_a_matching_approved_sale() {
        decides_as_documented("trading_sell_after_matching_approval");
    }

    #[test]
    fn a_denied_call_is_recorded_as_an_error_not_a_request() {
        decides_as_documented("denied_prerequisite_is_not_a_request");
    }

    #[test]
    fn every_documented_vector_has_a_test() {
        let source = include_str!("decide.rs");
        for v in vectors() {
            assert!(
                source.contains(&format!("decides_as_documented(\"{}\")", v.name)),
                "{}",
                v.name
            );
        }
    }

    #[test]
    fn documented_examples_fit_their_tools() {
        for v in vectors() {
            let model = ActionModel::new(ModelConfig {
                target: v.target.clone(),
                gateway_id: v.gateway.clone(),
                groups: Default::default(),
                ..ModelConfig::default()
            });
            let catalog = ToolCatalog::from_list(&serde_json::json!({ "tools": v.tools }));
            let loaded = crate::temporal::load(&[PolicySource::new("p.cedar", v.policies.clone())])
                .expect("loads");
            let findings = crate::temporal::validate::validate(&loaded, &model, &catalog);
            assert!(findings.is_empty(), "{}: {findings:?}", v.name);
        }
    }

    #[test]
    fn recording_a_denied_call_as_a_request_changes_request_conditions() {
        // Dogwood's reference interpreter keeps a denied call's `request` in the history;
        // AgentCore records only its `error`. The same session decides differently.
        let v = vectors()
            .into_iter()
            .find(|v| v.name == "denied_prerequisite_is_not_a_request")
            .expect("vector");
        assert_eq!(
            v.replay(DeniedCall::Error).expect("replays"),
            ["DENY", "DENY"]
        );
        assert_eq!(
            v.replay(DeniedCall::RequestThenError).expect("replays"),
            ["DENY", "ALLOW"]
        );
    }

    #[test]
    fn outputs_are_recorded_only_for_tools_a_condition_reads() {
        let v = vectors()
            .into_iter()
            .find(|v| v.name == "insurance_two_prerequisites_any_order")
            .expect("vector");
        let model = ModelConfig {
            target: v.target.clone(),
            gateway_id: v.gateway.clone(),
            groups: Default::default(),
            ..ModelConfig::default()
        };
        let catalog = ToolCatalog::from_list(&serde_json::json!({ "tools": v.tools }));
        let mut s = SessionDecider::new(
            &[PolicySource::new("p.cedar", v.policies.clone())],
            model,
            catalog,
        )
        .expect("loads");
        let call = Call {
            principal: "alice".into(),
            tool: "approve_claim".into(),
            arguments: serde_json::json!({ "claimId": "C-1" }),
            request_id: None,
        };
        assert!(s.decide(&call, 0).expect("decides").allowed);
        s.record_completion(&call, 1, Ok(Some(&serde_json::json!({ "claimId": "C-1" }))));
        assert_eq!(
            s.history().len(),
            1,
            "no condition reads approve_claim's requests"
        );
        let response = &s.history()[0];
        assert_eq!(response.kind, EventKind::Response);
        assert_eq!(
            response.output, None,
            "no condition reads approve_claim's outputs"
        );
        assert!(response.input.is_some());
    }

    #[test]
    fn a_tool_no_temporal_policy_touches_needs_no_conditions() {
        let v = vectors()
            .into_iter()
            .find(|v| v.name == "insurance_cool_down")
            .expect("vector");
        let model = ModelConfig {
            target: v.target.clone(),
            gateway_id: v.gateway.clone(),
            groups: Default::default(),
            ..ModelConfig::default()
        };
        let catalog = ToolCatalog::from_list(&serde_json::json!({ "tools": v.tools }));
        let s = SessionDecider::new(
            &[PolicySource::new("p.cedar", v.policies.clone())],
            model,
            catalog,
        )
        .expect("loads");
        assert_eq!(s.temporal().for_tool("disburse_payment"), [0]);
        assert!(s.temporal().for_tool("approve_claim").is_empty());
        assert!(s.temporal().for_tool("not_listed").is_empty());
    }
}
