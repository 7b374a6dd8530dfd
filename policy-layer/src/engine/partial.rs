//! PartiallyAuthorizeActions: which listed tools a caller could ever be allowed to call, and
//! which listed resources, resource templates and prompts it could read or get.
//!
//! Each tool is evaluated with principal, action, resource and `context.system` (the time)
//! known and `context.input` unknown (Cedar partial evaluation). Only a definite Deny drops a
//! tool; a permit that depends on the input keeps it listed, and its calls are decided at call
//! time (`docs/request-flow.md`). A permit that only business hours allow drops the tool from
//! a list made at night. A listed resource is decided with its `uri` known, a prompt with its
//! `name` known and its `arguments` unknown, a resource template with the whole context
//! unknown (the `uri` it expands to is not known yet).
//!
//! Tools of one index class (the same enforced policies, none reading `action`) are decided
//! alike, so a list evaluates each class once; and when no policy of the class reads the
//! time, a caller's answers per class are kept with the snapshot, so the caller's next list
//! under the same policies costs lookups only.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use cedar_policy::{
    Authorizer, Context, Decision, Effect, EntityUid, PartialResponse, Request,
    RestrictedExpression,
};
use cedar_policy_core::ast::RestrictedExpr;

use super::{EngineError, Snapshot};
use crate::auth::Identity;
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::model::values;
use crate::model::{ActionRef, RequestContext};

/// What partial evaluation says of one tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// Every call would be allowed.
    Allowed,
    /// Some call may be allowed, depending on the input.
    Depends,
    /// No call can be allowed: the tool is dropped from the list.
    Denied,
}

impl Listing {
    /// Whether the tool stays in the list.
    #[must_use]
    pub fn listed(self) -> bool {
        self != Self::Denied
    }
}

impl Snapshot {
    /// Partially evaluates a call of `tool` by `identity` with the input unknown, now by
    /// the system clock.
    ///
    /// # Errors
    /// [`EngineError`] when Cedar cannot build or evaluate the request: the caller fails
    /// closed.
    pub fn partially_authorize(
        &self,
        identity: &Identity,
        tool: &str,
    ) -> Result<Listing, EngineError> {
        self.lister(identity).listing(tool)
    }

    /// Lists tools for one caller, now by the system clock: what does not depend on the tool
    /// is built once, and what this caller's earlier lists under this snapshot found is reused.
    #[must_use]
    pub fn lister(&self, identity: &Identity) -> Lister<'_> {
        self.lister_at(identity, SystemClock.now())
    }

    /// [`lister`](Self::lister) with `context.system.now` at `now`.
    #[must_use]
    pub fn lister_at(&self, identity: &Identity, now: Timestamp) -> Lister<'_> {
        let key: Arc<str> = Arc::from(caller_key(identity));
        let known = self.listings.get(&*key).unwrap_or_default();
        Lister {
            snapshot: self,
            principal: self.model.principal_uid(identity),
            principal_entity: self.model.principal_entity(identity),
            resource: self.model.resource_uid(),
            key,
            known,
            found: HashMap::new(),
            timed: HashMap::new(),
            now,
        }
    }
}

/// What a caller is to the policies: its principal type, id and every tag.
fn caller_key(identity: &Identity) -> String {
    let mut key = format!("{:?}\0{}", identity.kind, identity.subject);
    for (name, value) in &identity.tags {
        key.push('\0');
        key.push_str(name);
        key.push('=');
        key.push_str(value);
    }
    key
}

/// A caller's listings by index class, kept with the snapshot.
pub(crate) type ClassListings = Arc<HashMap<usize, Listing>>;

/// The context of a list: `{ input: unknown("input"), system: { now: unknown("now") } }`.
///
/// Both are unknowns because Cedar's partial evaluator reads a field of a context record only
/// when the record holds nothing but literals and unknowns, and a `datetime` is an extension
/// value (a function call): with the time in the record, `context.system.now` would stay
/// unknown. So the first pass leaves the time out, and a residual that reads it is
/// evaluated again with `now` bound (see [`Lister::listing`]).
static CONTEXT: LazyLock<Result<Context, String>> =
    LazyLock::new(|| values::partial_context(values::unknown_system()));

/// [`Snapshot::partially_authorize`] for many tools and one caller.
#[derive(Debug)]
pub struct Lister<'a> {
    snapshot: &'a Snapshot,
    principal: EntityUid,
    principal_entity: Arc<cedar_policy_core::ast::Entity>,
    resource: EntityUid,
    /// The caller's key in the snapshot's listings.
    key: Arc<str>,
    /// What earlier lists found, by class.
    known: ClassListings,
    /// What this list found that they had not (classes whose policies ignore the time).
    found: HashMap<usize, Listing>,
    /// What this list found for classes whose policies read the time: kept for this list only.
    timed: HashMap<usize, Listing>,
    now: Timestamp,
}

impl Lister<'_> {
    /// Partially evaluates a call of `tool` with the input unknown and the time known.
    ///
    /// # Errors
    /// [`EngineError`] when Cedar cannot build or evaluate the request: the caller fails
    /// closed.
    pub fn listing(&mut self, tool: &str) -> Result<Listing, EngineError> {
        let sets = self.snapshot.index.for_tool(tool);
        if !sets.any_permit {
            // No permit can apply: Cedar denies every request, whatever the input.
            return Ok(Listing::Denied);
        }
        let Some(class) = sets.class else {
            return self.evaluate(tool, sets);
        };
        let timeless = !sets.reads_system;
        let remembered = if timeless {
            self.known.get(&class).or_else(|| self.found.get(&class))
        } else {
            self.timed.get(&class)
        };
        if let Some(listing) = remembered {
            return Ok(*listing);
        }
        let listing = self.evaluate(tool, sets)?;
        if timeless {
            self.found.insert(class, listing);
        } else {
            self.timed.insert(class, listing);
        }
        Ok(listing)
    }

    /// Partially evaluates a request decided as `action` (beyond tool calls) with `context`
    /// (with unknowns), or with the context unknown altogether.
    ///
    /// # Errors
    /// [`EngineError`] when Cedar cannot build or evaluate the request: the caller fails
    /// closed.
    pub fn listing_of(
        &self,
        action: ActionRef<'_>,
        context: Option<RequestContext>,
    ) -> Result<Listing, EngineError> {
        let snapshot = self.snapshot;
        let sets = snapshot.index.for_action(action);
        if !sets.any_permit {
            return Ok(Listing::Denied);
        }
        let mut builder = Request::builder()
            .principal(self.principal.clone())
            .action(snapshot.model.uid_of(action))
            .resource(self.resource.clone());
        if let Some(context) = context {
            // The time unknown in the first pass, as for tools (see [`CONTEXT`]).
            let context = context
                .with_system(values::unknown_system())
                .map_err(EngineError::Request)?;
            builder = builder.context(context);
        }
        let entities = snapshot.entities_with(Arc::clone(&self.principal_entity), action, sets)?;
        self.settle(&builder.build(), sets, &entities)
    }

    fn evaluate(
        &self,
        tool: &str,
        sets: &crate::engine::ToolPolicies,
    ) -> Result<Listing, EngineError> {
        let snapshot = self.snapshot;
        let context = CONTEXT
            .as_ref()
            .map_err(|e| EngineError::Request(e.clone()))?;
        let action = ActionRef::Tool(tool);
        let request = Request::builder()
            .principal(self.principal.clone())
            .action(snapshot.model.uid_of(action))
            .resource(self.resource.clone())
            .context(context.clone())
            .build();
        let entities = snapshot.entities_with(Arc::clone(&self.principal_entity), action, sets)?;
        self.settle(&request, sets, &entities)
    }

    /// Partially evaluates `request`; when the answer depends on a residual that may read
    /// the time, evaluates the residuals again with `now` bound.
    fn settle(
        &self,
        request: &Request,
        sets: &crate::engine::ToolPolicies,
        entities: &cedar_policy::Entities,
    ) -> Result<Listing, EngineError> {
        let authorizer = Authorizer::new();
        let first = authorizer.is_authorized_partial(request, &sets.active, entities);
        if let Some(decision) = first.decision() {
            return Ok(decided(decision));
        }
        if !sets.reads_system {
            return Ok(Listing::Depends);
        }
        // Some residual may read the time: evaluate the residuals again with `now` bound.
        let now = values::datetime(self.now)
            .map(|v| RestrictedExpression::from(RestrictedExpr::from(v)))
            .map_err(EngineError::Request)?;
        let second = first
            .reauthorize_with_bindings([(values::NOW_UNKNOWN, &now)], &authorizer, entities)
            .map_err(|e| EngineError::Request(e.to_string()))?;
        Ok(merged(&first, &second))
    }
}

fn decided(decision: Decision) -> Listing {
    match decision {
        Decision::Allow => Listing::Allowed,
        Decision::Deny => Listing::Denied,
    }
}

/// The listing of the first pass (time unknown) and the second (its residuals, time known),
/// by Cedar's rule: a satisfied forbid denies; no permit that is or may be satisfied denies;
/// a forbid that may be satisfied leaves it open; a satisfied permit allows.
fn merged(first: &PartialResponse, second: &PartialResponse) -> Listing {
    let satisfied =
        |r: &PartialResponse, effect| r.definitely_satisfied().any(|p| p.effect() == effect);
    let residual = |effect| second.nontrivial_residuals().any(|p| p.effect() == effect);
    let permit = satisfied(first, Effect::Permit) || satisfied(second, Effect::Permit);
    if satisfied(second, Effect::Forbid) || (!permit && !residual(Effect::Permit)) {
        Listing::Denied
    } else if residual(Effect::Forbid) || !permit {
        Listing::Depends
    } else {
        Listing::Allowed
    }
}

impl Drop for Lister<'_> {
    /// Keeps what this list found for the caller's next list under the same snapshot.
    fn drop(&mut self) {
        if self.found.is_empty() {
            return;
        }
        let mut all: HashMap<usize, Listing> = (*self.known).clone();
        all.extend(self.found.drain());
        self.snapshot
            .listings
            .insert(Arc::clone(&self.key), Arc::new(all));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{PolicyEngine, PolicySource};
    use crate::model::{ModelConfig, ToolCatalog};
    use serde_json::json;

    fn snapshot(policies: &str) -> Arc<Snapshot> {
        let model = ModelConfig {
            target: "T".into(),
            gateway_id: "g".into(),
            ..ModelConfig::default()
        };
        let engine = PolicyEngine::from_sources(model, &[PolicySource::new("p.cedar", policies)])
            .expect("policies");
        let tools: Vec<_> = (0..50).map(|i| json!({"name": format!("t{i}")})).collect();
        engine.set_catalog(ToolCatalog::from_list(&json!({ "tools": tools })));
        engine.snapshot().expect("snapshot")
    }

    #[test]
    fn tools_of_one_class_are_evaluated_once_and_remembered_for_the_caller() {
        let snapshot = snapshot(
            r#"permit(principal, action in AgentCore::Action::"T", resource)
               when { context.input.amount.lessThan(decimal("10.0")) };"#,
        );
        let alice = Identity::anonymous();
        let mut lister = snapshot.lister(&alice);
        for i in 0..50 {
            assert_eq!(lister.listing(&format!("t{i}")), Ok(Listing::Depends));
        }
        assert_eq!(
            lister.found.len(),
            1,
            "fifty tools, one class, one evaluation"
        );
        drop(lister);
        let again = snapshot.lister(&alice);
        assert_eq!(
            again.known.len(),
            1,
            "the caller's next list starts from what was found"
        );
    }

    #[test]
    fn a_condition_on_the_action_is_decided_tool_by_tool() {
        let snapshot = snapshot(
            r#"permit(principal, action in AgentCore::Action::"T", resource)
               when { action == AgentCore::Action::"T___t3" };"#,
        );
        let mut lister = snapshot.lister(&Identity::anonymous());
        assert_eq!(lister.listing("t3"), Ok(Listing::Allowed));
        assert_eq!(lister.listing("t4"), Ok(Listing::Denied));
        assert!(
            lister.found.is_empty(),
            "no class for a set that reads the action"
        );
    }
}
