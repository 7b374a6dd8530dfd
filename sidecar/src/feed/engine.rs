//! The policy engine: built from the `[policy]` settings, then fed policies and tool catalogs
//! in the order readiness needs.
//!
//! With `schema = "upstream"` the policies are held back until the first tool catalog has
//! arrived: until then the engine has no snapshot and every call fails closed, so no call is
//! ever decided with untyped input by mistake. `/readyz` turns 200 at the same moment.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use policy_layer::PolicyEngine;
use policy_layer::engine::{self, LoadedPolicies, Refused};
use policy_layer::model::ToolCatalog;
use policy_layer::model::schema::GatewaySchema;

use crate::config::{Config, SchemaSource};
use crate::observe::admin::Readiness;
use crate::observe::metrics::Metrics;

/// A `.cedarschema` file (`policy.schema`) that cannot be read or parsed.
#[derive(Debug, thiserror::Error)]
#[error("policy.schema: {path}: {message}")]
pub struct SchemaFileError {
    /// The file.
    path: String,
    /// Why.
    message: String,
}

/// A policy engine for `config`, validating against the configured schema source.
///
/// # Errors
/// [`SchemaFileError`] when `policy.schema` names a `.cedarschema` file that does not read
/// or parse.
pub fn build(config: &Config) -> Result<PolicyEngine, SchemaFileError> {
    let policy = &config.policy;
    let source = match &policy.schema {
        SchemaSource::Upstream | SchemaSource::File(_) => engine::SchemaSource::FromTools,
        SchemaSource::None => engine::SchemaSource::Disabled,
        SchemaSource::CedarSchema(path) => {
            let error = |message: String| SchemaFileError {
                path: path.display().to_string(),
                message,
            };
            let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
            let schema =
                GatewaySchema::from_cedarschema(&text).map_err(|e| error(e.to_string()))?;
            engine::SchemaSource::Fixed(Arc::new(schema))
        }
    };
    let engine = PolicyEngine::new(config.model());
    engine.configure_validation(source, policy.validation);
    engine.configure_analysis(policy.solver.clone(), policy.analysis_budget);
    Ok(engine)
}

/// The order of feeding; held while the engine validates (which may take seconds).
#[derive(Debug, Default)]
struct Feed {
    pending: Option<LoadedPolicies>,
}

/// Readiness, read by `/readyz` without waiting for a validation in progress.
#[derive(Debug, Default)]
struct Loaded {
    policies: AtomicBool,
    catalog: AtomicBool,
}

/// Feeds policies and tool catalogs to the engine in the order readiness needs.
#[derive(Debug, Clone)]
pub struct EngineFeed {
    engine: PolicyEngine,
    needs_catalog: bool,
    feed: Arc<Mutex<Feed>>,
    loaded: Arc<Loaded>,
    metrics: Arc<Metrics>,
}

impl EngineFeed {
    /// A feed for `engine`; `needs_catalog` when the schema comes from the upstream.
    #[must_use]
    pub fn new(engine: PolicyEngine, needs_catalog: bool, metrics: Arc<Metrics>) -> Self {
        Self {
            engine,
            needs_catalog,
            feed: Arc::new(Mutex::new(Feed::default())),
            loaded: Arc::new(Loaded::default()),
            metrics,
        }
    }

    /// The engine.
    #[must_use]
    pub fn engine(&self) -> &PolicyEngine {
        &self.engine
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Feed> {
        self.feed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Swaps in a new policy set (held back until the first catalog when one is needed).
    ///
    /// # Errors
    /// [`Refused`] when validation refuses the set: the last good set stays.
    pub fn set_policies(&self, policies: LoadedPolicies) -> Result<(), Refused> {
        let mut feed = self.lock();
        if self.needs_catalog && !self.loaded.catalog.load(Ordering::Acquire) {
            self.loaded.policies.store(true, Ordering::Release);
            feed.pending = Some(policies);
            return Ok(());
        }
        self.engine.set_policies(policies)?;
        self.loaded.policies.store(true, Ordering::Release);
        Ok(())
    }

    /// Swaps in a new tool catalog (and the held-back policies, the first time).
    pub fn set_catalog(&self, catalog: ToolCatalog) {
        let mut feed = self.lock();
        self.metrics.tools_known(catalog.len());
        let _findings = self.engine.set_catalog(catalog);
        let pending = feed.pending.take();
        if let Some(policies) = pending
            && let Err(refused) = self.engine.set_policies(policies)
        {
            // Validated only now that the upstream's schema is known: nothing is loaded and
            // every call fails closed until a valid edit arrives.
            self.loaded.policies.store(false, Ordering::Release);
            self.metrics.reload(None);
            for finding in &refused.findings {
                tracing::error!("policies refused by validation: {finding}");
            }
        }
        self.loaded.catalog.store(true, Ordering::Release);
        self.count_unpinned();
    }

    /// The tools of the catalog that do not match the enforced `tools.lock`, by name.
    #[must_use]
    pub fn unpinned(&self) -> Vec<String> {
        self.engine.snapshot().map_or_else(Vec::new, |snapshot| {
            snapshot.pins().map_or_else(Vec::new, |pins| {
                pins.lock().drift(snapshot.catalog()).into_keys().collect()
            })
        })
    }

    /// Sets the metric of tools that do not match `tools.lock`.
    pub fn count_unpinned(&self) {
        self.metrics.tools_unpinned(self.unpinned().len());
    }

    /// Whether policies (and the catalog, when needed) are loaded.
    #[cfg(test)]
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.waiting_for().is_none()
    }
}

/// Ready once the policies (and the catalog, when needed) are loaded.
impl Readiness for EngineFeed {
    fn waiting_for(&self) -> Option<&'static str> {
        match (
            self.loaded.policies.load(Ordering::Acquire),
            self.loaded.catalog.load(Ordering::Acquire) || !self.needs_catalog,
        ) {
            (false, _) => Some("policies"),
            (true, false) => Some("the upstream's tools"),
            (true, true) => None,
        }
    }

    fn detail(&self) -> Option<String> {
        let unpinned = self.unpinned();
        (!unpinned.is_empty()).then(|| {
            format!(
                "tools.lock: {} tool(s) do not match their pins and are denied: {}",
                unpinned.len(),
                unpinned.join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use policy_layer::PolicySource;
    use policy_layer::model::ModelConfig;

    use super::*;

    #[test]
    fn policies_wait_for_the_first_catalog() {
        let feed = EngineFeed::new(
            PolicyEngine::new(ModelConfig::default()),
            true,
            Arc::new(Metrics::new()),
        );
        let policies = policy_layer::engine::load(&[PolicySource::new(
            "p.cedar",
            "permit(principal, action, resource);",
        )])
        .expect("loads");
        feed.set_policies(policies)
            .expect("no schema yet, nothing to refuse");
        assert!(!feed.is_ready());
        assert!(
            feed.engine().snapshot().is_none(),
            "fail closed until typed"
        );
        feed.set_catalog(ToolCatalog::default());
        assert!(feed.is_ready());
        assert!(feed.engine().snapshot().is_some());
    }
}
