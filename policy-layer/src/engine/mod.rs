//! The policy engine: loaded policies, indexed per tool, held in a snapshot that is swapped
//! atomically (hot reload) and read by each request through one atomic load.

pub mod authorize;
pub mod index;
pub mod partial;
pub mod policies;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use cedar_policy::Entities;

pub use authorize::{AuthorizeError, Outcome};
pub use index::{PolicyIndex, ToolPolicies};
pub use partial::Listing;
pub use policies::{
    Enforcement, LoadError, LoadErrors, LoadedPolicies, LoadedPolicy, PolicySource, Position, load,
};

use crate::auth::Identity;
use crate::model::tools::InputType;
use crate::model::{ActionModel, ModelConfig, ToolCatalog};

/// One consistent view of policies, tools and model: what a request is decided against.
#[derive(Debug)]
pub struct Snapshot {
    model: ActionModel,
    catalog: Arc<ToolCatalog>,
    policies: Arc<LoadedPolicies>,
    index: PolicyIndex,
    generation: u64,
}

impl Snapshot {
    /// Builds and indexes a snapshot.
    #[must_use]
    pub fn new(model: ActionModel, policies: Arc<LoadedPolicies>, catalog: Arc<ToolCatalog>, generation: u64) -> Self {
        let index = PolicyIndex::build(&policies, &model, &catalog);
        Self {
            model,
            catalog,
            policies,
            index,
            generation,
        }
    }

    /// The Cedar model (target, gateway, groups).
    #[must_use]
    pub fn model(&self) -> &ActionModel {
        &self.model
    }

    /// The tools the input typing follows.
    #[must_use]
    pub fn catalog(&self) -> &Arc<ToolCatalog> {
        &self.catalog
    }

    /// The loaded policies.
    #[must_use]
    pub fn policies(&self) -> &Arc<LoadedPolicies> {
        &self.policies
    }

    /// The per-tool index.
    #[must_use]
    pub fn index(&self) -> &PolicyIndex {
        &self.index
    }

    /// A number that grows with every swap, for logs and metrics.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn input_type(&self, tool: &str) -> &InputType {
        self.catalog.get(tool).map_or(&InputType::Untyped, |t| &t.input)
    }

    /// The entities of a request: principal, action with its groups, resource.
    fn entities(&self, identity: &Identity, tool: &str, sets: &ToolPolicies) -> Result<Entities, String> {
        let mut entities = Vec::with_capacity(sets.entities.len() + 1);
        entities.push(self.model.principal_entity(identity));
        if sets.entities.is_empty() {
            entities.extend(self.model.action_entities(tool));
        } else {
            entities.extend(sets.entities.iter().cloned());
        }
        Entities::from_entities(entities, None).map_err(|e| e.to_string())
    }
}

/// What the engine is built from; kept so that a change of either rebuilds the snapshot.
#[derive(Debug)]
struct Inputs {
    model: ModelConfig,
    policies: Option<Arc<LoadedPolicies>>,
    catalog: Arc<ToolCatalog>,
}

/// The policy engine handle: cheap to clone, shared by every request.
#[derive(Debug, Clone)]
pub struct PolicyEngine {
    inner: Arc<EngineInner>,
}

#[derive(Debug)]
struct EngineInner {
    current: ArcSwapOption<Snapshot>,
    inputs: Mutex<Inputs>,
    generation: AtomicU64,
}

impl PolicyEngine {
    /// An engine with no policies yet: every decision fails closed until policies are set.
    #[must_use]
    pub fn new(model: ModelConfig) -> Self {
        Self {
            inner: Arc::new(EngineInner {
                current: ArcSwapOption::empty(),
                inputs: Mutex::new(Inputs {
                    model,
                    policies: None,
                    catalog: Arc::new(ToolCatalog::default()),
                }),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// An engine loaded from policy sources.
    ///
    /// # Errors
    /// [`LoadErrors`] when the sources do not load.
    pub fn from_sources(model: ModelConfig, sources: &[PolicySource]) -> Result<Self, LoadErrors> {
        let engine = Self::new(model);
        engine.set_policies(load(sources)?);
        Ok(engine)
    }

    /// The current snapshot: `None` while no policy set is usable (fail closed).
    #[must_use]
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.inner.current.load_full()
    }

    /// Replaces the policies; requests already running finish on the set they started with.
    pub fn set_policies(&self, policies: LoadedPolicies) {
        self.update(|inputs| inputs.policies = Some(Arc::new(policies)));
    }

    /// Replaces the tool catalog (the upstream's tools changed).
    pub fn set_catalog(&self, catalog: ToolCatalog) {
        self.update(|inputs| inputs.catalog = Arc::new(catalog));
    }

    /// Drops the policy set: every decision fails closed from now on.
    pub fn clear(&self) {
        self.update(|inputs| inputs.policies = None);
    }

    fn update(&self, change: impl FnOnce(&mut Inputs)) {
        let mut inputs = self
            .inner
            .inputs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(&mut inputs);
        let snapshot = inputs.policies.as_ref().map(|policies| {
            let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
            Arc::new(Snapshot::new(
                ActionModel::new(inputs.model.clone()),
                Arc::clone(policies),
                Arc::clone(&inputs.catalog),
                generation,
            ))
        });
        self.inner.current.store(snapshot);
    }
}
