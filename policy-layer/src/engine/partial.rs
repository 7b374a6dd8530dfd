//! PartiallyAuthorizeActions: which listed tools a caller could ever be allowed to call, and
//! which listed resources, resource templates and prompts it could read or get.
//!
//! Each tool is evaluated with principal, action and resource known and `context` unknown
//! (Cedar partial evaluation). Only a definite Deny drops a tool; a permit that depends on
//! the input keeps it listed, and its calls are decided at call time (`docs/request-flow.md`).
//! A listed resource is decided with its `uri` known, a prompt with its `name` known and its
//! `arguments` unknown, a resource template with the whole context unknown (the `uri` it
//! expands to is not known yet).

use std::sync::Arc;

use cedar_policy::{Authorizer, Decision, EntityUid, Request};

use super::{EngineError, Snapshot};
use crate::auth::Identity;
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
    /// Partially evaluates a call of `tool` by `identity` with the input unknown.
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

    /// Lists tools for one caller: what does not depend on the tool is built once.
    #[must_use]
    pub fn lister(&self, identity: &Identity) -> Lister<'_> {
        Lister {
            snapshot: self,
            principal: self.model.principal_uid(identity),
            principal_entity: self.model.principal_entity(identity),
            resource: self.model.resource_uid(),
        }
    }
}

/// [`Snapshot::partially_authorize`] for many tools and one caller.
#[derive(Debug)]
pub struct Lister<'a> {
    snapshot: &'a Snapshot,
    principal: EntityUid,
    principal_entity: Arc<cedar_policy_core::ast::Entity>,
    resource: EntityUid,
}

impl Lister<'_> {
    /// Partially evaluates a call of `tool` with the input unknown.
    ///
    /// # Errors
    /// [`EngineError`] when Cedar cannot build or evaluate the request: the caller fails
    /// closed.
    pub fn listing(&self, tool: &str) -> Result<Listing, EngineError> {
        self.listing_of(ActionRef::Tool(tool), None)
    }

    /// Partially evaluates a request decided as `action` with `context` (with unknowns), or
    /// with the context unknown altogether.
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
            // No permit can apply: Cedar denies every request, whatever the input.
            return Ok(Listing::Denied);
        }
        let mut builder = Request::builder()
            .principal(self.principal.clone())
            .action(snapshot.model.uid_of(action))
            .resource(self.resource.clone());
        if let Some(context) = context {
            builder = builder.context(context.into_context());
        }
        let request = builder.build();
        let entities = snapshot.entities(Arc::clone(&self.principal_entity), action, sets)?;
        let response = Authorizer::new().is_authorized_partial(&request, &sets.active, &entities);
        Ok(match response.decision() {
            Some(Decision::Allow) => Listing::Allowed,
            Some(Decision::Deny) => Listing::Denied,
            None => Listing::Depends,
        })
    }
}
