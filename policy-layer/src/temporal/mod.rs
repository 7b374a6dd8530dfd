//! Session-aware (temporal) policies as AgentCore writes them: Dogwood's `when temporal { ... }`
//! blocks, whose conditions look back over the session's earlier events
//! (`docs/temporal.md` describes the language, the event model and this design).
//!
//! Design: each temporal block is parsed into a typed condition ([`ast::Cond`]) and replaced
//! in the policy text by a plain Cedar clause that reads the condition's value from
//! `context.temporal.c<N>` ([`rewrite`]). The rewritten policies are ordinary Cedar, so they
//! keep the per-tool index, validation and analysis of plain policies. At a call, the engine
//! looks up which conditions the tool's policies use ([`TemporalPolicies::for_tool`]: one
//! hash lookup, an empty slice for a tool no temporal policy touches), evaluates them over the
//! session's events ([`TemporalPolicies::evaluate`]) and hands the values to Cedar in the
//! context ([`TemporalValues::to_cedar`]). A value that could not be computed is left out,
//! and the rewritten clause then fails closed.

pub mod ast;
pub mod check;
pub mod decide;
pub mod eval;
pub mod history;
pub mod parse;
pub mod rewrite;
pub mod schema;
pub mod validate;
pub mod value;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use cedar_policy::ActionConstraint;
use smol_str::SmolStr;

use crate::auth::Identity;
use crate::engine::{LoadError, LoadErrors, LoadedPolicies, PolicySource, Position};
use crate::model::ActionModel;

pub use ast::{Cond, EventKind, Window};
pub use eval::{EvalError, RequestFacts};
pub use history::{BadSessionId, Event, HistoryError, SESSION_HEADER, SessionId, SessionKey};
pub use rewrite::{Clause, Effect};
pub use value::Value;

/// One temporal condition of the loaded policy set.
#[derive(Debug, Clone)]
pub struct Condition {
    /// Its number: the context attribute is `context.temporal.c<id>`.
    pub id: usize,
    /// The id of the policy it belongs to.
    pub policy_id: String,
    /// The policy's effect.
    pub effect: Effect,
    /// `when temporal` or `unless temporal`.
    pub clause: Clause,
    /// The condition.
    pub cond: Cond,
    /// Where the clause is written.
    pub at: Position,
    /// The condition as written, for logs.
    pub text: String,
    /// The whole original text of its source (positions of its predicates are offsets into it).
    pub source: Arc<str>,
}

/// Policy files with temporal blocks, loaded: the plain Cedar policies and the conditions.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The policies, with temporal clauses rewritten to read `context.temporal`.
    pub policies: LoadedPolicies,
    /// The conditions, indexed by id.
    pub conditions: Vec<Condition>,
}

/// Parses `sources` (plain and temporal policies), rewrites the temporal blocks and loads the
/// result as the engine's loader does (ids, `@enforcement`, duplicate checks).
///
/// # Errors
/// [`LoadErrors`] with every problem found, each naming the original file, line and column.
pub fn load(sources: &[PolicySource]) -> Result<Loaded, LoadErrors> {
    let mut errors = Vec::new();
    let mut rewritten = Vec::with_capacity(sources.len());
    let mut found = Vec::new();
    let mut next_id = 0;
    for source in sources {
        match rewrite::rewrite(&source.text, next_id) {
            Ok(r) => {
                next_id += r.conditions.len();
                found.push(r.conditions.clone());
                rewritten.push((
                    PolicySource {
                        origin: source.origin.clone(),
                        stem: source.stem.clone(),
                        text: r.text.clone(),
                    },
                    r,
                ));
            }
            Err(es) => errors.extend(es.into_iter().map(|e| LoadError::Parse {
                at: Position::at(&source.origin, &source.text, e.offset),
                message: e.message,
            })),
        }
    }
    if !errors.is_empty() {
        return Err(LoadErrors(errors));
    }
    let plain: Vec<PolicySource> = rewritten.iter().map(|(s, _)| s.clone()).collect();
    let policies = crate::engine::policies::load(&plain).map_err(|LoadErrors(es)| {
        LoadErrors(
            es.into_iter()
                .map(|e| remap(e, sources, &rewritten))
                .collect(),
        )
    })?;
    // The loader keeps source order: statement `k` of source `s` is the policy after the
    // policies of the sources before it.
    let mut conditions = Vec::with_capacity(next_id);
    let mut first = 0;
    for ((plain, r), original) in rewritten.iter().zip(sources) {
        let text: Arc<str> = Arc::from(original.text.as_str());
        let count = policies
            .policies
            .iter()
            .filter(|p| p.origin == plain.origin)
            .count();
        if count != r.statements && !r.conditions.is_empty() {
            // The scanner and Cedar disagree on where policies end: refuse rather than attach
            // a condition to the wrong policy.
            return Err(LoadErrors(vec![LoadError::Unsupported {
                origin: original.origin.clone(),
                id: String::new(),
                message: format!(
                    "found {} policies around the temporal blocks where Cedar found {count}",
                    r.statements
                ),
            }]));
        }
        for c in &r.conditions {
            let policy_id = policies
                .policies
                .get(first + c.statement)
                .map(|p| p.id().to_owned())
                .unwrap_or_default();
            conditions.push(Condition {
                id: conditions.len(),
                policy_id,
                effect: c.effect,
                clause: c.clause,
                cond: c.cond.clone(),
                at: Position::at(&original.origin, &original.text, c.offset),
                text: c.text.clone(),
                source: Arc::clone(&text),
            });
        }
        first += count;
    }
    Ok(Loaded {
        policies,
        conditions,
    })
}

impl Loaded {
    /// The policies with their conditions, as the engine holds them.
    #[must_use]
    pub fn into_policies(self) -> LoadedPolicies {
        let mut policies = self.policies;
        policies.temporal = Arc::from(self.conditions);
        policies
    }
}

/// A Cedar parse error of the rewritten text, pointed at the original text.
fn remap(
    e: LoadError,
    sources: &[PolicySource],
    rewritten: &[(PolicySource, rewrite::Rewritten)],
) -> LoadError {
    let LoadError::Parse { at, message } = e else {
        return e;
    };
    let Some(((plain, r), original)) = rewritten
        .iter()
        .zip(sources)
        .find(|((p, _), _)| p.origin == at.origin)
    else {
        return LoadError::Parse { at, message };
    };
    let offset = offset_of(&plain.text, at.line, at.column);
    LoadError::Parse {
        at: Position::at(&original.origin, &original.text, r.offsets.original(offset)),
        message,
    }
}

fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let mut offset = 0;
    for (n, l) in text.split_inclusive('\n').enumerate() {
        if n + 1 == line {
            return offset
                + l.char_indices()
                    .nth(column.saturating_sub(1))
                    .map_or(l.len(), |(i, _)| i);
        }
        offset += l.len();
    }
    text.len()
}

/// The conditions of a policy snapshot, indexed by the tools whose calls can read them.
#[derive(Debug, Default)]
pub struct TemporalPolicies {
    conditions: Vec<Condition>,
    by_tool: HashMap<String, Arc<[usize]>>,
    fallback: Arc<[usize]>,
    output_actions: BTreeSet<String>,
    recorded: BTreeSet<(String, EventKind)>,
    every_event: bool,
    max_window: i64,
    fingerprint: u64,
}

impl TemporalPolicies {
    /// Indexes `conditions` for the tools of `model`: a tool gets the conditions of the
    /// policies whose action scope can match it.
    #[must_use]
    pub fn new(loaded: &Loaded, model: &ActionModel) -> Self {
        Self::build(&loaded.policies, &loaded.conditions, model)
    }

    /// The conditions a loaded policy set carries ([`LoadedPolicies::temporal`]), indexed for
    /// the tools of `model`; empty (and free) when there are none.
    #[must_use]
    pub fn of(policies: &LoadedPolicies, model: &ActionModel) -> Self {
        if policies.temporal.is_empty() {
            return Self::default();
        }
        Self::build(policies, &policies.temporal, model)
    }

    fn build(policies: &LoadedPolicies, conditions: &[Condition], model: &ActionModel) -> Self {
        let conditions = conditions.to_vec();
        let by_policy: BTreeMap<&str, Vec<usize>> =
            conditions.iter().fold(BTreeMap::new(), |mut m, c| {
                m.entry(c.policy_id.as_str()).or_default().push(c.id);
                m
            });
        let mut any: BTreeSet<usize> = BTreeSet::new();
        let mut tools: HashMap<String, BTreeSet<usize>> = HashMap::new();
        let mut groups: HashMap<String, BTreeSet<usize>> = HashMap::new();
        for policy in &policies.policies {
            let Some(ids) = by_policy.get(policy.id()) else {
                continue;
            };
            let uids = match policy.policy.action_constraint() {
                ActionConstraint::Any => {
                    any.extend(ids);
                    continue;
                }
                ActionConstraint::Eq(uid) => vec![uid],
                ActionConstraint::In(uids) => uids,
            };
            for uid in uids.iter().filter(|u| model.is_action(u)) {
                let id = uid.id().unescaped();
                match model.tool_of_action(id) {
                    Some(tool) => tools.entry(tool.to_owned()).or_default().extend(ids),
                    None => groups.entry(id.to_owned()).or_default().extend(ids),
                }
            }
        }
        let with_groups = |tool: &str, base: &BTreeSet<usize>| -> Arc<[usize]> {
            let mut all = base.clone();
            all.extend(&any);
            for group in model.ancestors(tool) {
                if let Some(ids) = groups.get(group.id().unescaped()) {
                    all.extend(ids);
                }
            }
            all.into_iter().collect()
        };
        let mut named: BTreeSet<String> = tools.keys().cloned().collect();
        named.extend(model.config().groups.values().flatten().cloned());
        let by_tool = named
            .into_iter()
            .map(|tool| {
                let base = tools.get(&tool).cloned().unwrap_or_default();
                let ids = with_groups(&tool, &base);
                (tool, ids)
            })
            .collect();
        // A tool named by no policy is in the target, `CallTool` and `Mcp` only.
        let fallback = with_groups("", &BTreeSet::new());
        let mut output_actions = BTreeSet::new();
        let mut recorded = BTreeSet::new();
        let mut every_event = false;
        let mut max_window = 0;
        let mut text = String::new();
        for c in &conditions {
            let mut preds = Vec::new();
            c.cond.predicates(&mut preds);
            for p in preds {
                if p.fields
                    .iter()
                    .any(|(f, _)| matches!(f, ast::FieldPath::Output(_)))
                {
                    output_actions.insert(p.action_id.clone());
                }
                recorded.insert((p.action_id.clone(), p.kind));
            }
            every_event |= c.cond.reads_every_event();
            max_window = max_window.max(c.cond.max_window().0);
            text.push_str(&format!(
                "{}|{:?}|{:?}|{}\n",
                c.policy_id, c.effect, c.clause, c.text
            ));
        }
        Self {
            conditions,
            by_tool,
            fallback,
            output_actions,
            recorded,
            every_event,
            max_window,
            fingerprint: fnv1a(text.as_bytes()),
        }
    }

    /// Whether there are no temporal conditions at all (no session is needed).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    /// Every condition, indexed by id.
    #[must_use]
    pub fn conditions(&self) -> &[Condition] {
        &self.conditions
    }

    /// The conditions a call of `tool` needs: one lookup; empty when no temporal policy can
    /// apply to it.
    #[must_use]
    pub fn for_tool(&self, tool: &str) -> &[usize] {
        self.by_tool.get(tool).unwrap_or(&self.fallback)
    }

    /// Whether some condition reads the outputs of `action` (`<target>___<tool>`): only then
    /// is the tool's `structuredContent` copied into its `response` event.
    #[must_use]
    pub fn reads_outputs(&self, action: &str) -> bool {
        self.output_actions.contains(action)
    }

    /// Whether events of `kind` for `action` must be recorded: only when some predicate can
    /// match them, unless a condition reads every event (`previous`, or a `since` whose left
    /// side must hold at every event). A call whose tool has no conditions and whose events
    /// no condition reads costs nothing beyond the lookups.
    #[must_use]
    pub fn records(&self, action: &str, kind: EventKind) -> bool {
        self.every_event || self.recorded.contains(&(action.to_owned(), kind))
    }

    /// How far back any condition looks, in milliseconds: older events can be dropped.
    #[must_use]
    pub fn max_window_ms(&self) -> i64 {
        self.max_window
    }

    /// A fingerprint of the temporal policies: a session recorded under another fingerprint
    /// is invalid (HTTP 409), as AgentCore invalidates sessions when temporal policies change.
    /// Stable across processes, so replicas sharing a store agree.
    #[must_use]
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Evaluates conditions `ids` for the current request (`current`, a `request` event at
    /// the decision time) over `history` (the session's earlier events, oldest first).
    #[must_use]
    pub fn evaluate(
        &self,
        ids: &[usize],
        history: &[Event],
        current: &Event,
        facts: &RequestFacts,
    ) -> TemporalValues {
        let mut evaluator = eval::Evaluator::new(history, current, facts);
        let results = ids
            .iter()
            .filter_map(|id| self.conditions.get(*id))
            .map(|c| (c.id, evaluator.holds(&c.cond)))
            .collect();
        TemporalValues { results }
    }
}

/// The facts of the current call that conditions read (`principal`, `resource`,
/// `context.input`, the session).
#[must_use]
pub fn request_facts(
    model: &ActionModel,
    identity: &Identity,
    input: Option<Value>,
    session: &SessionId,
) -> RequestFacts {
    let principal = model.principal_uid(identity);
    RequestFacts {
        principal: Value::entity(
            &principal.type_name().to_string(),
            principal.id().unescaped(),
        ),
        principal_attrs: Value::Record(BTreeMap::from([(
            Arc::from("id"),
            Value::str(&identity.subject),
        )])),
        resource: Value::entity("AgentCore::Gateway", &model.config().gateway_id),
        input: input.unwrap_or_else(|| Value::Record(BTreeMap::new())),
        session: Value::str(session.as_str()),
    }
}

/// The event of `kind` for a call of `tool` by `identity` at `time_ms`, with the fields of
/// AgentCore's event schema. `output` (the tool's `structuredContent`) is kept on a `response`
/// only, and only when some condition reads that tool's outputs.
#[allow(clippy::too_many_arguments)]
#[must_use]
pub fn call_event(
    temporal: &TemporalPolicies,
    model: &ActionModel,
    identity: &Identity,
    tool: &str,
    kind: EventKind,
    time_ms: i64,
    request_id: Option<&str>,
    input: Option<Value>,
    output: Option<&serde_json::Value>,
) -> Event {
    let action = model.action_id(tool);
    let principal = model.principal_uid(identity);
    let mut e = Event::new(time_ms, &action, kind);
    e.principal = Some(Value::entity(
        &principal.type_name().to_string(),
        principal.id().unescaped(),
    ));
    e.resource = Some(Value::entity(
        "AgentCore::Gateway",
        &model.config().gateway_id,
    ));
    e.request_id = request_id.map(Arc::from);
    e.input = input;
    if kind == EventKind::Response && temporal.reads_outputs(&action) {
        e.output =
            output.and_then(|o| Value::from_json(o, &crate::model::tools::InputType::Untyped));
    }
    e
}

/// The values of a call's temporal conditions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TemporalValues {
    /// Each condition's value, or why it has none.
    pub results: Vec<(usize, Result<bool, EvalError>)>,
}

impl TemporalValues {
    /// The `context.temporal` record: one `Bool` per condition that has a value. A condition
    /// that failed is left out, so its clause takes its fail-closed default.
    #[must_use]
    pub fn to_cedar(&self) -> cedar_policy_core::ast::Value {
        let fields: BTreeMap<SmolStr, cedar_policy_core::ast::Value> = self
            .results
            .iter()
            .filter_map(|(id, r)| {
                r.as_ref().ok().map(|b| {
                    (
                        SmolStr::new(rewrite::context_name(*id)),
                        crate::model::values::boolean(*b),
                    )
                })
            })
            .collect();
        crate::model::values::record(fields)
    }

    /// The evaluation errors, for spans and logs.
    pub fn errors(&self) -> impl Iterator<Item = (usize, &EvalError)> {
        self.results
            .iter()
            .filter_map(|(id, r)| r.as_ref().err().map(|e| (*id, e)))
    }
}

/// FNV-1a, 64 bits: a fingerprint that every process computes alike.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;

    const T: &str = r#"when temporal { formerly within 5m AgentCore::Action::"Funds___get_balance"::response{ eventResource: resource } }"#;

    fn model() -> ActionModel {
        ActionModel::new(ModelConfig {
            target: "Funds".into(),
            gateway_id: "gw".into(),
            groups: [("Writes".to_owned(), vec!["transfer".to_owned()])].into(),
            ..ModelConfig::default()
        })
    }

    fn load_text(text: &str) -> Result<Loaded, LoadErrors> {
        load(&[PolicySource::new("policies/funds.cedar", text)])
    }

    #[test]
    fn cedar_errors_after_a_temporal_block_name_the_original_line_and_column() {
        let text = format!(
            "permit (principal, action, resource)\n{T};\npermit (principal, action, resource) when {{ context.input.amount < }};"
        );
        let err = load_text(&text).expect_err("bad cedar");
        let LoadError::Parse { at, .. } = &err.0[0] else {
            panic!("parse error expected: {err}")
        };
        assert_eq!((at.origin.as_str(), at.line), ("policies/funds.cedar", 3));
        let original_col = text.lines().nth(2).expect("line").find('}').expect("brace") + 1;
        assert!(
            at.column >= original_col - 2 && at.column <= original_col,
            "{at}"
        );
    }

    #[test]
    fn temporal_errors_name_file_line_and_column() {
        let err = load_text(
            "permit (principal, action, resource)\nwhen temporal {\n    formerly within 5q AgentCore::Action::\"Funds___x\"::request{ eventResource: resource }\n};",
        )
        .expect_err("bad unit");
        assert_eq!(
            err.to_string(),
            "policies/funds.cedar:3:22: unknown time unit `q` (use s, m, h or d)"
        );
    }

    #[test]
    fn conditions_know_their_policy_and_position() {
        let loaded = load_text(&format!(
            "permit (principal, action, resource);\n@id(\"after-balance\")\npermit (principal, action == AgentCore::Action::\"Funds___transfer\", resource)\n{T};"
        ))
        .expect("loads");
        assert_eq!(loaded.conditions.len(), 1);
        let c = &loaded.conditions[0];
        assert_eq!(c.policy_id, "after-balance");
        assert_eq!(c.at.to_string(), "policies/funds.cedar:4:1");
        assert_eq!((c.effect, c.clause), (Effect::Permit, Clause::When));
    }

    #[test]
    fn index_gives_each_tool_the_conditions_its_policies_can_read() {
        let loaded = load_text(&format!(
            "permit (principal, action == AgentCore::Action::\"Funds___transfer\", resource) {T};\n\
             forbid (principal, action in AgentCore::Action::\"Writes\", resource) {T};\n\
             forbid (principal, action in [AgentCore::Action::\"Funds\"], resource) {T};\n\
             permit (principal, action == AgentCore::Action::\"Funds___get_balance\", resource);"
        ))
        .expect("loads");
        let set = TemporalPolicies::new(&loaded, &model());
        assert_eq!(set.for_tool("transfer"), [0, 1, 2]);
        assert_eq!(set.for_tool("get_balance"), [2]);
        assert_eq!(set.for_tool("never_named"), [2]);
        assert!(!set.reads_outputs("Funds___get_balance"));
    }

    #[test]
    fn an_unconstrained_temporal_policy_reaches_every_tool() {
        let loaded =
            load_text(&format!("forbid (principal, action, resource) {T};")).expect("loads");
        let set = TemporalPolicies::new(&loaded, &model());
        assert_eq!(set.for_tool("anything"), [0]);
        assert_eq!(set.max_window_ms(), 300_000);
    }

    #[test]
    fn records_only_events_a_condition_can_read_unless_one_reads_every_event() {
        let set = |text: &str| TemporalPolicies::new(&load_text(text).expect("loads"), &model());
        let formerly = set(&format!("permit (principal, action, resource) {T};"));
        assert!(formerly.records("Funds___get_balance", EventKind::Response));
        assert!(!formerly.records("Funds___get_balance", EventKind::Request));
        assert!(!formerly.records("Funds___transfer", EventKind::Response));
        let previous = set(
            "permit (principal, action, resource) when temporal { previous within 1m AgentCore::Action::\"Funds___a\"::request{ eventResource: resource } };",
        );
        assert!(previous.records("Funds___transfer", EventKind::Error));
        let negated_since = set(
            "permit (principal, action, resource) when temporal { !AgentCore::Action::\"Funds___a\"::response{ eventResource: resource } since within 1m AgentCore::Action::\"Funds___b\"::response{ eventResource: resource } };",
        );
        assert!(!negated_since.records("Funds___transfer", EventKind::Request));
        let positive_since = set(
            "permit (principal, action, resource) when temporal { AgentCore::Action::\"Funds___a\"::response{ eventResource: resource } since within 1m AgentCore::Action::\"Funds___b\"::response{ eventResource: resource } };",
        );
        assert!(positive_since.records("Funds___transfer", EventKind::Request));
    }

    #[test]
    fn fingerprint_changes_with_temporal_policies_only() {
        let fp = |text: &str| {
            TemporalPolicies::new(&load_text(text).expect("loads"), &model()).fingerprint()
        };
        let base = format!("permit (principal, action, resource) {T};");
        let plain_added = format!(
            "{base}\nforbid (principal, action == AgentCore::Action::\"Funds___x\", resource);"
        );
        let temporal_changed = base.replace("5m", "6m");
        assert_eq!(fp(&base), fp(&plain_added));
        assert_ne!(fp(&base), fp(&temporal_changed));
    }

    #[test]
    fn failed_conditions_are_left_out_of_the_context() {
        let values = TemporalValues {
            results: vec![
                (0, Ok(true)),
                (1, Err(EvalError::Budget(1))),
                (2, Ok(false)),
            ],
        };
        assert_eq!(values.to_cedar().to_string(), "{c0: true, c2: false}");
        assert_eq!(values.errors().map(|(id, _)| id).collect::<Vec<_>>(), [1]);
    }
}
