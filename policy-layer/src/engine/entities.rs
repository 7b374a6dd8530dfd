//! The entities of a request: the principal, the action with its groups, the resource.
//!
//! The action's hierarchy is closed once per snapshot and tool (`index.rs`); the principal is
//! added per request. A caller the layer authenticated is one shared [`Identity`] for every
//! request of its token, so each thread keeps the complete entities of its recent callers and
//! tools, found by those two pointers: a hot caller's request builds no entity and copies no
//! map (`docs/performance.md`).

use std::cell::RefCell;
use std::sync::{Arc, Weak};

use cedar_policy::Entities;
use cedar_policy_core::ast;

use super::{EngineError, Snapshot, ToolPolicies};
use crate::auth::Identity;
use crate::model::ActionRef;
use crate::model::values::Closed;

/// Who a request is decided for.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    /// An identity made for this decision (a test case, a replayed line): its entities are
    /// built for it.
    Once(&'a Identity),
    /// The identity of a token, shared by its requests: its entities are kept per thread.
    Shared(&'a Arc<Identity>),
}

impl Caller<'_> {
    /// The identity.
    #[must_use]
    pub fn identity(&self) -> &Identity {
        match self {
            Self::Once(identity) => identity,
            Self::Shared(identity) => identity,
        }
    }
}

impl<'a> From<&'a Identity> for Caller<'a> {
    fn from(identity: &'a Identity) -> Self {
        Self::Once(identity)
    }
}

impl<'a> From<&'a Arc<Identity>> for Caller<'a> {
    fn from(identity: &'a Arc<Identity>) -> Self {
        Self::Shared(identity)
    }
}

/// How many (caller, tool) entity sets each thread keeps.
const KEPT: usize = 64;

/// One kept entity set. The weak references hold the two allocations (not their contents), so
/// neither address can be reused by another caller or another snapshot's tool while the entry
/// names it: equal pointers are the same caller and the same closed hierarchy.
struct Kept {
    identity: Weak<Identity>,
    sets: Weak<ToolPolicies>,
    entities: Arc<Entities>,
}

thread_local! {
    static KEPT_ENTITIES: RefCell<Vec<Option<Kept>>> = RefCell::new((0..KEPT).map(|_| None).collect());
}

impl Snapshot {
    /// The entities of a request of `caller` for `action`, whose policy sets are `sets`; kept
    /// per thread for a [`Caller::Shared`].
    pub(super) fn entities(
        &self,
        caller: Caller<'_>,
        action: ActionRef<'_>,
        sets: &Arc<ToolPolicies>,
    ) -> Result<Arc<Entities>, EngineError> {
        let identity = match caller {
            // A tool no policy names shares its sets with every such tool: nothing to key.
            Caller::Shared(identity) if !sets.entities.is_empty() => identity,
            _ => {
                let principal = self.model.principal_entity(caller.identity());
                return self.entities_with(principal, action, sets).map(Arc::new);
            }
        };
        let slot = slot(Arc::as_ptr(identity).addr(), Arc::as_ptr(sets).addr());
        let kept = KEPT_ENTITIES.with_borrow(|kept| {
            kept[slot]
                .as_ref()
                .filter(|k| {
                    std::ptr::eq(k.identity.as_ptr(), Arc::as_ptr(identity))
                        && std::ptr::eq(k.sets.as_ptr(), Arc::as_ptr(sets))
                })
                .map(|k| Arc::clone(&k.entities))
        });
        if let Some(entities) = kept {
            return Ok(entities);
        }
        let principal = self.model.principal_entity(identity);
        let entities = Arc::new(self.entities_with(principal, action, sets)?);
        KEPT_ENTITIES.with_borrow_mut(|kept| {
            kept[slot] = Some(Kept {
                identity: Arc::downgrade(identity),
                sets: Arc::downgrade(sets),
                entities: Arc::clone(&entities),
            });
        });
        Ok(entities)
    }

    /// The entities of a request for `action` by `principal`: its action's hierarchy, closed
    /// once per snapshot (`index.rs`), plus the principal.
    pub(super) fn entities_with(
        &self,
        principal: Arc<ast::Entity>,
        action: ActionRef<'_>,
        sets: &ToolPolicies,
    ) -> Result<Entities, EngineError> {
        let closed;
        let hierarchy = if sets.entities.is_empty() {
            // A tool no policy names (rare): close its hierarchy now.
            closed = Closed::new(self.model.entities_of(action)).map_err(EngineError::Entities)?;
            &closed
        } else {
            &sets.entities
        };
        hierarchy
            .with_leaf(principal)
            .map_err(EngineError::Entities)
    }
}

/// The slot of a (caller, sets) pair: both addresses mixed (Fibonacci hashing).
fn slot(identity: usize, sets: usize) -> usize {
    let mixed = (identity ^ sets.rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as usize);
    (mixed >> (usize::BITS - KEPT.trailing_zeros())) % KEPT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_stay_in_range_and_spread() {
        let mut used = std::collections::HashSet::new();
        for i in 0..256usize {
            let s = slot(0x7f00_0000_1000 + i * 64, 0x5500_0000_2000);
            assert!(s < KEPT);
            used.insert(s);
        }
        assert!(used.len() > KEPT / 2, "{} slots used", used.len());
    }
}
