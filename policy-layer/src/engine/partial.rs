//! PartiallyAuthorizeActions: which listed tools a caller could ever be allowed to call.
//!
//! Each tool is evaluated with principal, action, resource and `context.system` (the time)
//! known and `context.input` unknown (Cedar partial evaluation). Only a definite Deny drops a
//! tool; a permit that depends on the input keeps it listed, and its calls are decided at call
//! time (`docs/request-flow.md`). A permit that only business hours allow drops the tool from
//! a list made at night.

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
    /// is built once.
    #[must_use]
    pub fn lister(&self, identity: &Identity) -> Lister<'_> {
        self.lister_at(identity, SystemClock.now())
    }

    /// [`lister`](Self::lister) with `context.system.now` at `now`.
    #[must_use]
    pub fn lister_at(&self, identity: &Identity, now: Timestamp) -> Lister<'_> {
        Lister {
            snapshot: self,
            principal: self.model.principal_uid(identity),
            principal_entity: self.model.principal_entity(identity),
            resource: self.model.resource_uid(),
            now,
        }
    }
}

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
    now: Timestamp,
}

impl Lister<'_> {
    /// Partially evaluates a call of `tool` with the input unknown and the time known.
    ///
    /// # Errors
    /// [`EngineError`] when Cedar cannot build or evaluate the request: the caller fails
    /// closed.
    pub fn listing(&self, tool: &str) -> Result<Listing, EngineError> {
        let snapshot = self.snapshot;
        let sets = snapshot.index.for_tool(tool);
        if !sets.any_permit {
            // No permit can apply: Cedar denies every request, whatever the input.
            return Ok(Listing::Denied);
        }
        let context = CONTEXT
            .as_ref()
            .map_err(|e| EngineError::Request(e.clone()))?;
        let request = Request::builder()
            .principal(self.principal.clone())
            .action(snapshot.model.action_uid(tool))
            .resource(self.resource.clone())
            .context(context.clone())
            .build();
        let entities = snapshot.entities(Arc::clone(&self.principal_entity), tool, sets)?;
        let authorizer = Authorizer::new();
        let first = authorizer.is_authorized_partial(&request, &sets.active, &entities);
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
            .reauthorize_with_bindings([(values::NOW_UNKNOWN, &now)], &authorizer, &entities)
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
