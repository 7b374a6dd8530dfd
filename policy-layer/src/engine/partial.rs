//! PartiallyAuthorizeActions: which listed tools a caller could ever be allowed to call.
//!
//! Each tool is evaluated with principal, action and resource known and `context` unknown
//! (Cedar partial evaluation). Only a definite Deny drops a tool; a permit that depends on
//! the input keeps it listed, and its calls are decided at call time (SPEC section 5).

use cedar_policy::{Authorizer, Decision, Request};

use super::Snapshot;
use crate::auth::Identity;

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
    /// A message when Cedar cannot build or evaluate the request: the caller fails closed.
    pub fn partially_authorize(&self, identity: &Identity, tool: &str) -> Result<Listing, String> {
        let model = &self.model;
        let sets = self.index.for_tool(tool);
        let request = Request::builder()
            .principal(model.principal_uid(identity))
            .action(model.action_uid(tool))
            .resource(model.resource_uid())
            .build();
        let entities = self.entities(identity, tool, sets)?;
        let response = Authorizer::new().is_authorized_partial(&request, &sets.active, &entities);
        Ok(match response.decision() {
            Some(Decision::Allow) => Listing::Allowed,
            Some(Decision::Deny) => Listing::Denied,
            None => Listing::Depends,
        })
    }
}
