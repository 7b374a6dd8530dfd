//! The action index: for each tool, and for each action beyond tool calls (`ReadResource`,
//! ...), only the policies whose action scope can match it.
//!
//! A policy's action scope (`action == A`, `action in [A, B]`, `action in Group`, or
//! unconstrained) names the entities it can match. A request for tool `t` can only be matched
//! by unconstrained policies, by policies naming `t`'s action, or by policies naming one of its
//! groups (target, extra groups, annotation groups, `CallTool`, `Mcp`); a request for a fixed
//! action by unconstrained policies, policies naming it, and policies naming `Mcp` (all but
//! `InvokeGateway`). Each known tool and each fixed action gets its policy sets built once per
//! snapshot; every tool no policy names shares one fallback set, so a request never evaluates
//! policies that cannot apply and never builds a set on the request path.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use cedar_policy::{ActionConstraint, Effect, EntityUid, PolicySet};

use super::policies::{Enforcement, LoadedPolicies};
use crate::model::values::Closed;
use crate::model::{ActionModel, ActionRef, McpAction, ToolCatalog};

/// The policy sets that can apply to one action (a tool's, or a fixed one), and the entities
/// its requests need.
#[derive(Debug, Clone, Default)]
pub struct ToolPolicies {
    /// The enforced policies (they decide).
    pub active: PolicySet,
    /// Shadow permits (`@enforcement("LOG_ONLY")`).
    pub shadow_permits: PolicySet,
    /// Shadow forbids.
    pub shadow_forbids: PolicySet,
    /// The action entity with its groups, and the resource, closed once.
    pub entities: Closed,
    /// How many policies can apply (active and shadow).
    pub candidates: usize,
    /// Whether an enforced permit can apply: without one, every request is denied.
    pub any_permit: bool,
    /// The tools whose enforced policies are the same ones, none of which reads `action` in
    /// its conditions, share a class: a list decides them alike (principal, resource and
    /// input are the same for all; each policy's action scope holds for each by the index).
    /// `None` when some condition reads `action`.
    pub class: Option<usize>,
    /// Whether an enforced policy may read `context` beyond `context.input` (the time,
    /// `context.system.now`): lists are then decided with the time known (`partial.rs`).
    pub reads_system: bool,
}

impl ToolPolicies {
    /// Whether there are shadow policies to evaluate beside the active set.
    #[must_use]
    pub fn has_shadow(&self) -> bool {
        !self.shadow_permits.is_empty() || !self.shadow_forbids.is_empty()
    }
}

/// Per-action policy sets for a policy snapshot.
#[derive(Debug, Default)]
pub struct PolicyIndex {
    by_tool: HashMap<String, Arc<ToolPolicies>>,
    fallback: Arc<ToolPolicies>,
    by_action: HashMap<McpAction, Arc<ToolPolicies>>,
}

/// Whether a policy's conditions read the `action` variable (its scope aside).
fn reads_action(policy: &cedar_policy::Policy) -> bool {
    use cedar_policy_core::ast::{ExprKind, Var};
    let core: &cedar_policy_core::ast::Policy = policy.as_ref();
    core.non_scope_constraints().is_some_and(|condition| {
        condition
            .subexpressions()
            .any(|e| matches!(e.expr_kind(), ExprKind::Var(Var::Action)))
    })
}

/// Where a policy's action scope points.
#[derive(Default)]
struct Buckets {
    any: Vec<usize>,
    tools: HashMap<String, Vec<usize>>,
    fixed: HashMap<McpAction, Vec<usize>>,
    groups: HashMap<String, Vec<usize>>,
}

impl PolicyIndex {
    /// Indexes `policies` for the tools of `catalog`, of the model's groups and of the
    /// policies themselves.
    #[must_use]
    pub fn build(policies: &LoadedPolicies, model: &ActionModel, catalog: &ToolCatalog) -> Self {
        let mut buckets = Buckets::default();
        for (i, loaded) in policies.policies.iter().enumerate() {
            let uids: Vec<EntityUid> = match loaded.policy.action_constraint() {
                ActionConstraint::Any => {
                    buckets.any.push(i);
                    continue;
                }
                ActionConstraint::Eq(uid) => vec![uid],
                ActionConstraint::In(uids) => uids,
            };
            for uid in uids.iter().filter(|u| model.is_action(u)) {
                let id = uid.id().unescaped();
                match (model.tool_of_action(id), McpAction::from_id(id)) {
                    (Some(tool), _) => buckets.tools.entry(tool.to_owned()).or_default().push(i),
                    (None, Some(action)) => buckets.fixed.entry(action).or_default().push(i),
                    (None, None) => buckets.groups.entry(id.to_owned()).or_default().push(i),
                }
            }
        }
        let mut tools: BTreeSet<&str> = catalog.iter().map(|t| t.name.as_str()).collect();
        tools.extend(buckets.tools.keys().map(String::as_str));
        tools.extend(model.config().groups.values().flatten().map(String::as_str));
        let by_tool = tools
            .into_iter()
            .map(|tool| {
                let sets = Self::sets_for(policies, model, &buckets, Some(ActionRef::Tool(tool)));
                (tool.to_owned(), Arc::new(sets))
            })
            .collect();
        let fallback = Arc::new(Self::sets_for(policies, model, &buckets, None));
        let by_action = McpAction::ALL
            .into_iter()
            .map(|action| {
                let sets = Self::sets_for(policies, model, &buckets, Some(ActionRef::Mcp(action)));
                (action, Arc::new(sets))
            })
            .collect();
        let mut index = Self {
            by_tool,
            fallback,
            by_action,
        };
        index.classify(policies);
        index
    }

    /// Gives each tool's sets its [`ToolPolicies::class`].
    fn classify(&mut self, policies: &LoadedPolicies) {
        let reads_action: Vec<bool> = policies
            .policies
            .iter()
            .map(|loaded| reads_action(&loaded.policy))
            .collect();
        let by_id: HashMap<&str, usize> = policies
            .policies
            .iter()
            .enumerate()
            .map(|(i, loaded)| (loaded.id(), i))
            .collect();
        let mut classes: HashMap<Vec<usize>, usize> = HashMap::new();
        let mut assign = |sets: &mut Arc<ToolPolicies>| {
            let members: Option<Vec<usize>> = sets
                .active
                .policies()
                .map(|p| by_id.get(AsRef::<str>::as_ref(p.id())).copied())
                .collect::<Option<Vec<usize>>>()
                .filter(|members| !members.iter().any(|i| reads_action[*i]));
            let class = members.map(|mut members| {
                members.sort_unstable();
                let next = classes.len();
                *classes.entry(members).or_insert(next)
            });
            if let Some(sets) = Arc::get_mut(sets) {
                sets.class = class;
            }
        };
        for sets in self.by_tool.values_mut() {
            assign(sets);
        }
        assign(&mut self.fallback);
    }

    /// The policies that can apply to a call of `tool`.
    #[must_use]
    pub fn for_tool(&self, tool: &str) -> &Arc<ToolPolicies> {
        self.by_tool.get(tool).unwrap_or(&self.fallback)
    }

    /// The policies that can apply to a request decided as `action`.
    #[must_use]
    pub fn for_action(&self, action: ActionRef<'_>) -> &Arc<ToolPolicies> {
        match action {
            ActionRef::Tool(tool) => self.for_tool(tool),
            ActionRef::Mcp(action) => self.by_action.get(&action).unwrap_or(&self.fallback),
        }
    }

    /// Whether `tool` is named by a policy, a group or the catalog.
    #[must_use]
    pub fn knows(&self, tool: &str) -> bool {
        self.by_tool.contains_key(tool)
    }

    /// The sets of `action`; `None`: of every tool no policy, group or catalog entry names
    /// (in the target, the annotation groups of MCP's defaults, `CallTool` and `Mcp` only),
    /// whose action entity is built per request (see `Snapshot::entities`).
    fn sets_for(
        policies: &LoadedPolicies,
        model: &ActionModel,
        buckets: &Buckets,
        action: Option<ActionRef<'_>>,
    ) -> ToolPolicies {
        let probe = action.unwrap_or(ActionRef::Tool(""));
        let mut candidates: BTreeSet<usize> = buckets.any.iter().copied().collect();
        match action {
            Some(ActionRef::Tool(tool)) => {
                candidates.extend(buckets.tools.get(tool).into_iter().flatten());
            }
            Some(ActionRef::Mcp(fixed)) => {
                candidates.extend(buckets.fixed.get(&fixed).into_iter().flatten());
            }
            None => {}
        }
        for group in model.ancestors_of(probe) {
            candidates.extend(
                buckets
                    .groups
                    .get(group.id().unescaped())
                    .into_iter()
                    .flatten(),
            );
        }
        let mut out = ToolPolicies {
            // The model's own entities always form a hierarchy.
            entities: match action {
                Some(action) => Closed::new(model.entities_of(action)).unwrap_or_default(),
                None => Closed::default(),
            },
            candidates: candidates.len(),
            ..ToolPolicies::default()
        };
        for i in candidates {
            let loaded = &policies.policies[i];
            let set = match (loaded.enforcement, loaded.policy.effect()) {
                (Enforcement::Enforce, _) => &mut out.active,
                (Enforcement::LogOnly, Effect::Permit) => &mut out.shadow_permits,
                (Enforcement::LogOnly, Effect::Forbid) => &mut out.shadow_forbids,
            };
            // Ids are unique (checked at load), so adding cannot fail.
            let _ = set.add(loaded.policy.clone());
        }
        out.any_permit = out.active.policies().any(|p| p.effect() == Effect::Permit);
        out.reads_system = out.active.policies().any(reads_system);
        out
    }
}

/// Whether `policy` may read `context` other than through `context.input` (`context.system`,
/// or the whole record): every use of `context` is counted, and those that name `input` (or
/// `temporal`, a temporal condition's value, unknown to a list) subtracted. Conservative: a policy that passes `context` whole counts as reading it.
fn reads_system(policy: &cedar_policy::Policy) -> bool {
    use cedar_policy_core::ast::{ExprKind, Var};
    let is_context =
        |e: &cedar_policy_core::ast::Expr| matches!(e.expr_kind(), ExprKind::Var(Var::Context));
    let condition = AsRef::<cedar_policy_core::ast::Policy>::as_ref(policy).condition();
    let (mut uses, mut input) = (0_usize, 0_usize);
    for e in condition.subexpressions() {
        match e.expr_kind() {
            ExprKind::Var(Var::Context) => uses += 1,
            ExprKind::GetAttr { expr, attr } | ExprKind::HasAttr { expr, attr }
                if is_context(expr) && (attr == "input" || attr == "temporal") =>
            {
                input += 1;
            }
            ExprKind::ExtHasAttr { expr, attrs }
                if is_context(expr) && attrs.first() == "input" =>
            {
                input += 1;
            }
            _ => {}
        }
    }
    uses > input
}
