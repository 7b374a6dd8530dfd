//! The policy engine: loaded policies, indexed per tool, held in a snapshot that is swapped
//! atomically (hot reload) and read by each request through one atomic load.

pub mod analyze;
pub mod authorize;
pub mod entities;
pub mod index;
pub mod partial;
pub mod policies;
pub mod validate;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;

pub use authorize::{AuthorizeError, EngineError, Outcome};
pub use entities::Caller;
pub use index::{PolicyIndex, ToolPolicies};
pub use partial::{Lister, Listing};
pub use policies::{
    Enforcement, LoadError, LoadErrors, LoadedPolicies, LoadedPolicy, PolicySource, Position,
};

/// Parses every source (plain Cedar and temporal policies, `docs/temporal.md`), gives each
/// policy its stable id and checks ids are unique. A temporal block is rewritten into a plain
/// clause reading `context.temporal.c<N>`, its condition kept in
/// [`LoadedPolicies::temporal`]; a file without one loads exactly as plain Cedar.
///
/// # Errors
/// [`LoadErrors`] listing every parse error (with the original file, line and column),
/// duplicate id and unsupported policy found.
pub fn load(sources: &[PolicySource]) -> Result<LoadedPolicies, LoadErrors> {
    crate::temporal::load(sources).map(crate::temporal::Loaded::into_policies)
}

pub use analyze::{Budget, Solver};
pub use validate::{Finding, FindingKind, Refused, Report};

use crate::config::Validation;
use crate::model::schema::GatewaySchema;
use crate::model::tools::InputType;
use crate::model::{ActionModel, Drift, Govern, ModelConfig, Pins, ToolCatalog, ToolsLock};

/// Where the Cedar schema that policies are validated against comes from.
#[derive(Debug, Clone, Default)]
pub enum SchemaSource {
    /// Generated from the tool catalog (the upstream's `tools/list`, or a tools file).
    #[default]
    FromTools,
    /// A schema given as it is (a `.cedarschema` file).
    Fixed(Arc<GatewaySchema>),
    /// No schema: policies are not validated.
    Disabled,
}

/// One consistent view of policies, tools and model: what a request is decided against.
#[derive(Debug)]
pub struct Snapshot {
    model: ActionModel,
    catalog: Arc<ToolCatalog>,
    policies: Arc<LoadedPolicies>,
    index: PolicyIndex,
    /// The temporal conditions, indexed by tool (empty without temporal policies).
    temporal: crate::temporal::TemporalPolicies,
    generation: u64,
    /// Each recent caller's list answers by index class (`partial.rs`); a new snapshot
    /// starts empty, so nothing outlives the policies it was decided by.
    listings: quick_cache::sync::Cache<Arc<str>, partial::ClassListings>,
    /// `tools.lock` checked against the catalog, when one is enforced.
    pins: Option<Arc<Pins>>,
}

/// Callers whose list answers a snapshot keeps.
const LISTING_CALLERS: usize = 4096;

impl Snapshot {
    /// Builds and indexes a snapshot.
    #[must_use]
    pub fn new(
        model: ActionModel,
        policies: Arc<LoadedPolicies>,
        catalog: Arc<ToolCatalog>,
        generation: u64,
    ) -> Self {
        let index = PolicyIndex::build(&policies, &model, &catalog);
        let temporal = crate::temporal::TemporalPolicies::of(&policies, &model);
        Self {
            model,
            catalog,
            policies,
            index,
            temporal,
            generation,
            listings: quick_cache::sync::Cache::new(LISTING_CALLERS),
            pins: None,
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

    /// The enforced `tools.lock`, checked against the catalog (`None` when none is enforced).
    #[must_use]
    pub fn pins(&self) -> Option<&Pins> {
        self.pins.as_deref()
    }

    /// Why a call of `tool` is refused by the enforced `tools.lock`, if it is.
    #[must_use]
    pub fn pin_drift(&self, tool: &str) -> Option<Drift> {
        self.pins.as_ref()?.call_drift(tool, &self.catalog)
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

    /// The temporal conditions of the policies, indexed by tool.
    #[must_use]
    pub fn temporal(&self) -> &crate::temporal::TemporalPolicies {
        &self.temporal
    }

    /// A number that grows with every swap, for logs and metrics.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn input_type(&self, tool: &str) -> &InputType {
        self.catalog
            .get(tool)
            .map_or(&InputType::Untyped, |t| &t.input)
    }
}

/// What the engine is built from; kept so that a change of either rebuilds the snapshot.
#[derive(Debug)]
struct Inputs {
    model: ModelConfig,
    /// The enforced `tools.lock`, and its check against the catalog (kept across policy
    /// reloads, so what lists showed still counts; rebuilt when the lock or catalog changes).
    tools_lock: Option<ToolsLock>,
    pins: Option<Arc<Pins>>,
    policies: Option<Arc<LoadedPolicies>>,
    catalog: Arc<ToolCatalog>,
    source: SchemaSource,
    validation: Validation,
    schema: Option<Arc<GatewaySchema>>,
    solver: Solver,
    budget: Budget,
}

impl Inputs {
    fn refresh_pins(&mut self) {
        self.pins = self
            .tools_lock
            .clone()
            .map(|lock| Arc::new(Pins::new(lock, &self.catalog)));
    }

    /// The schema for the current catalog and source (`None` when there is none to check).
    fn refresh_schema(&mut self) {
        self.schema = match &self.source {
            SchemaSource::Fixed(schema) => Some(Arc::clone(schema)),
            SchemaSource::Disabled => None,
            SchemaSource::FromTools if self.catalog.is_empty() => None,
            SchemaSource::FromTools => match GatewaySchema::generate(&self.model, &self.catalog) {
                Ok(schema) => Some(Arc::new(schema)),
                Err(e) => {
                    tracing::warn!(error = %e, "no Cedar schema could be generated from the tools; policies are not validated");
                    None
                }
            },
        };
    }

    fn findings(&self, policies: &LoadedPolicies) -> Vec<Finding> {
        self.schema
            .as_ref()
            .map(|s| {
                let model = ActionModel::with_catalog(self.model.clone(), &self.catalog);
                let (schema, mut findings) = with_temporal(s, policies, &model, &self.catalog);
                findings.extend(validate::validate(policies, &schema, &model).findings);
                findings
            })
            .unwrap_or_default()
    }
}

/// The schema `policies` are validated against, and the findings of their temporal
/// conditions: with temporal conditions, every action's context declares
/// `context.temporal` (else the strict validator takes the rewritten clauses for
/// impossible), and the conditions are checked against the tools (`temporal/validate.rs`).
fn with_temporal(
    schema: &Arc<GatewaySchema>,
    policies: &LoadedPolicies,
    model: &ActionModel,
    catalog: &ToolCatalog,
) -> (Arc<GatewaySchema>, Vec<Finding>) {
    if policies.temporal.is_empty() {
        return (Arc::clone(schema), Vec::new());
    }
    let extended = match crate::temporal::schema::extend(schema, policies.temporal.len()) {
        Ok(extended) => Arc::new(extended),
        Err(e) => {
            tracing::warn!(error = %e, "the schema could not declare context.temporal; temporal policies are validated without it");
            Arc::clone(schema)
        }
    };
    let loaded = crate::temporal::Loaded {
        policies: policies.clone(),
        conditions: policies.temporal.to_vec(),
    };
    let findings = crate::temporal::validate::validate(&loaded, model, catalog)
        .into_iter()
        .map(|f| Finding {
            kind: FindingKind::Schema,
            policy: f.policy_id,
            at: Some(f.at),
            message: f.message,
            example: None,
        })
        .collect();
    (extended, findings)
}

/// What checking a policy set needs, taken out of the lock (the analysis may take seconds).
struct Check {
    schema: Option<Arc<GatewaySchema>>,
    catalog: Arc<ToolCatalog>,
    model: ModelConfig,
    validation: Validation,
    solver: Solver,
    budget: Budget,
}

impl Check {
    /// Schema findings always; the semantic analysis too under `FAIL_ON_ANY_FINDINGS`
    /// (AgentCore's `IGNORE_ALL_FINDINGS` runs the schema checks only), once the policies fit
    /// the schema.
    fn run(&self, policies: &LoadedPolicies) -> Report {
        let Some(schema) = &self.schema else {
            return Report::default();
        };
        let model = ActionModel::with_catalog(self.model.clone(), &self.catalog);
        let (schema, mut findings) = with_temporal(schema, policies, &model, &self.catalog);
        let validated = validate::validate(policies, &schema, &model);
        findings.extend(validated.findings);
        if !findings.is_empty() || self.validation != Validation::FailOnAnyFindings {
            return Report {
                findings,
                ..Report::default()
            };
        }
        let analysis = analyze::analyze(
            policies,
            &schema,
            &validated.impossible,
            &model,
            &self.catalog,
            &self.solver,
            self.budget,
        );
        Report {
            findings: analysis.findings,
            notes: analysis.notes,
            analysis: Some(analysis.summary),
        }
    }
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
    /// The capabilities decided (fixed with the model), read without a snapshot: a governed
    /// capability fails closed while no policy set is usable.
    govern: Govern,
}

impl PolicyEngine {
    /// An engine with no policies yet: every decision fails closed until policies are set.
    #[must_use]
    pub fn new(model: ModelConfig) -> Self {
        Self {
            inner: Arc::new(EngineInner {
                govern: model.govern,
                current: ArcSwapOption::empty(),
                inputs: Mutex::new(Inputs {
                    model,
                    tools_lock: None,
                    pins: None,
                    policies: None,
                    catalog: Arc::new(ToolCatalog::default()),
                    source: SchemaSource::default(),
                    validation: Validation::default(),
                    schema: None,
                    solver: Solver::default(),
                    budget: Budget::default(),
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
        engine.replace_policies(load(sources)?);
        Ok(engine)
    }

    /// The capabilities the policy decides (`docs/cedar-model.md`).
    #[must_use]
    pub fn govern(&self) -> Govern {
        self.inner.govern
    }

    /// Sets where the validation schema comes from and what findings do.
    pub fn configure_validation(&self, source: SchemaSource, validation: Validation) {
        let mut inputs = self.lock();
        inputs.source = source;
        inputs.validation = validation;
        inputs.refresh_schema();
    }

    /// Sets the SMT solver and the time budget of the semantic analysis.
    pub fn configure_analysis(&self, solver: Solver, budget: Budget) {
        let mut inputs = self.lock();
        inputs.solver = solver;
        inputs.budget = budget;
    }

    /// The schema policies are validated against, if any.
    #[must_use]
    pub fn schema(&self) -> Option<Arc<GatewaySchema>> {
        self.lock().schema.clone()
    }

    /// Validates `policies` and, unless findings refuse them, makes them the policy set.
    /// Requests already running finish on the set they started with. Under
    /// `FAIL_ON_ANY_FINDINGS` this runs the semantic analysis, which blocks for as long as the
    /// solver takes (within the configured budget).
    ///
    /// # Errors
    /// [`Refused`] with every finding under `FAIL_ON_ANY_FINDINGS`; the last good set stays.
    pub fn set_policies(&self, policies: LoadedPolicies) -> Result<Report, Refused> {
        let check = {
            let inputs = self.lock();
            Check {
                schema: inputs.schema.clone(),
                catalog: Arc::clone(&inputs.catalog),
                model: inputs.model.clone(),
                validation: inputs.validation,
                solver: inputs.solver.clone(),
                budget: inputs.budget,
            }
        };
        let report = check.run(&policies);
        for note in &report.notes {
            tracing::warn!("policy analysis: {note}");
        }
        if !report.findings.is_empty() && check.validation == Validation::FailOnAnyFindings {
            return Err(report.into());
        }
        for finding in &report.findings {
            tracing::warn!(%finding, "policy validation finding (ignored by configuration)");
        }
        self.replace_policies(policies);
        Ok(report)
    }

    /// The current snapshot: `None` while no policy set is usable (fail closed).
    #[must_use]
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.inner.current.load_full()
    }

    /// Replaces the policies without validating them.
    pub fn replace_policies(&self, policies: LoadedPolicies) {
        self.update(|inputs| inputs.policies = Some(Arc::new(policies)));
    }

    /// Replaces the tool catalog (the upstream's tools changed): input typing and the
    /// generated schema follow it. Returns what validating the current policies against the
    /// new schema finds; those are logged, the policies stay (a tool that went away simply
    /// matches nothing).
    pub fn set_catalog(&self, catalog: ToolCatalog) -> Vec<Finding> {
        let mut findings = Vec::new();
        self.update(|inputs| {
            inputs.catalog = Arc::new(catalog);
            inputs.refresh_pins();
            inputs.refresh_schema();
            if let Some(policies) = &inputs.policies {
                findings = inputs.findings(policies);
            }
        });
        for finding in &findings {
            tracing::warn!(%finding, "policy validation finding after the tools changed");
        }
        findings
    }

    /// Enforces `lock` (or none): a tool that does not match its pin is denied and dropped
    /// from lists (`docs/pinning.md`).
    pub fn set_tools_lock(&self, lock: Option<ToolsLock>) {
        self.update(|inputs| {
            inputs.tools_lock = lock;
            inputs.refresh_pins();
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inputs> {
        self.inner
            .inputs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Drops the policy set: every decision fails closed from now on.
    pub fn clear(&self) {
        self.update(|inputs| inputs.policies = None);
    }

    fn update(&self, change: impl FnOnce(&mut Inputs)) {
        let mut inputs = self.lock();
        change(&mut inputs);
        let snapshot = inputs.policies.as_ref().map(|policies| {
            let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
            let mut snapshot = Snapshot::new(
                ActionModel::with_catalog(inputs.model.clone(), &inputs.catalog),
                Arc::clone(policies),
                Arc::clone(&inputs.catalog),
                generation,
            );
            snapshot.pins.clone_from(&inputs.pins);
            Arc::new(snapshot)
        });
        self.inner.current.store(snapshot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ActionRef;
    use cedar_policy::Decision;
    use serde_json::{Value, json};

    use crate::auth::{Identity, PrincipalKind};

    const GATEWAY: &str = "arn:aws:bedrock-agentcore:us-west-2:123456789012:gateway/refund-gateway";

    fn model() -> ModelConfig {
        ModelConfig {
            target: "RefundTool".into(),
            gateway_id: GATEWAY.into(),
            ..ModelConfig::default()
        }
    }

    fn user(tags: &[(&str, &str)]) -> Identity {
        Identity {
            kind: PrincipalKind::OAuthUser,
            subject: "alice".into(),
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            expires_at: None,
        }
    }

    fn refund_catalog(amount_type: &str) -> ToolCatalog {
        ToolCatalog::from_list(&json!({"tools": [{
            "name": "process_refund",
            "inputSchema": {"type": "object", "properties": {
                "amount": {"type": amount_type}, "customer_id": {"type": "string"}},
                "required": ["amount"]}
        }, {"name": "get_order", "inputSchema": {"type": "object", "properties": {"order_id": {"type": "string"}}}}]}))
    }

    fn engine(policies: &str, catalog: ToolCatalog) -> PolicyEngine {
        let engine = PolicyEngine::from_sources(
            model(),
            &[PolicySource::new("policies/refund.cedar", policies)],
        )
        .expect("policies load");
        engine.set_catalog(catalog);
        engine
    }

    fn decide(
        engine: &PolicyEngine,
        identity: &Identity,
        tool: &str,
        args: Value,
    ) -> Result<Outcome, AuthorizeError> {
        engine
            .snapshot()
            .expect("snapshot")
            .authorize(identity, tool, Some(&args))
    }

    /// Shared callers' entities are kept per thread (`entities.rs`): each caller is still
    /// decided by its own claims, a caller made where another was freed (the same address,
    /// quite likely) by its own, and every request by the current policies after a reload.
    #[test]
    fn kept_entities_follow_the_caller_and_the_policies() {
        let policies = |role: &str| {
            format!(
                r#"@id("by_role") permit(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
                when {{ principal.hasTag("role") && principal.getTag("role") == "{role}" }};"#
            )
        };
        let engine = engine(&policies("admin"), refund_catalog("number"));
        let args = json!({"amount": 5, "customer_id": "C001"});
        let allowed = |identity: &Arc<Identity>| {
            engine
                .snapshot()
                .expect("snapshot")
                .authorize(identity, "process_refund", Some(&args))
                .expect("decides")
                .allowed()
        };
        for round in 0..200 {
            let (first, second) = if round % 2 == 0 {
                ("admin", "guest")
            } else {
                ("guest", "admin")
            };
            let a = Arc::new(user(&[("role", first)]));
            let b = Arc::new(user(&[("role", second)]));
            for _ in 0..2 {
                assert_eq!(allowed(&a), first == "admin", "round {round}");
                assert_eq!(allowed(&b), second == "admin", "round {round}");
            }
        }
        let admin = Arc::new(user(&[("role", "admin")]));
        let guest = Arc::new(user(&[("role", "guest")]));
        assert!(allowed(&admin) && !allowed(&guest));
        engine.replace_policies(
            load(&[PolicySource::new("p.cedar", policies("guest"))]).expect("loads"),
        );
        assert!(!allowed(&admin) && allowed(&guest));
    }

    fn allowed(engine: &PolicyEngine, amount: Value) -> bool {
        decide(
            engine,
            &user(&[]),
            "process_refund",
            json!({"amount": amount, "customer_id": "C001"}),
        )
        .expect("decides")
        .allowed()
    }

    const LIMIT_1000: &str = r#"
        permit(principal, action == AgentCore::Action::"RefundTool___process_refund",
               resource == AgentCore::Gateway::"arn:aws:bedrock-agentcore:us-west-2:123456789012:gateway/refund-gateway")
        when { ((context.input).amount).lessThan(decimal("1000.0")) };"#;

    #[test]
    fn decides_refund_limit_table_of_the_seed() {
        let engine = engine(LIMIT_1000, refund_catalog("number"));
        for (amount, expected) in [
            (json!(500.0), true),
            (json!(2000.0), false),
            (json!(999.99), true),
            (json!(1000.0), false),
            (json!(0.01), true),
            (json!(-100.0), true),
        ] {
            assert_eq!(
                allowed(&engine, amount.clone()),
                expected,
                "amount {amount}"
            );
        }
    }

    #[test]
    fn number_field_accepts_integer_json_unlike_agentcore() {
        let engine = engine(LIMIT_1000, refund_catalog("number"));
        assert!(allowed(&engine, json!(500)));
        assert!(!allowed(&engine, json!(1000)));
        let err = decide(
            &engine,
            &user(&[]),
            "process_refund",
            json!({"amount": "500", "customer_id": "C1"}),
        )
        .expect_err("a string is not a number");
        assert_eq!(
            err.to_string(),
            "input.amount: expected a number, got a string"
        );
    }

    #[test]
    fn integer_schema_with_long_comparison_works_for_both_json_forms() {
        let policy = r#"permit(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
                        when { context.input.amount < 1000 };"#;
        let engine = engine(policy, refund_catalog("integer"));
        assert!(allowed(&engine, json!(500)));
        assert!(allowed(&engine, json!(500.0)));
        assert!(!allowed(&engine, json!(2000)));
        assert!(
            decide(
                &engine,
                &user(&[]),
                "process_refund",
                json!({"amount": 500.5})
            )
            .is_err()
        );
    }

    #[test]
    fn forbid_wins_over_permit_and_is_named() {
        let policies = format!(
            r#"{LIMIT_1000}
            @id("forbid_large")
            forbid(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
            when {{ context.input.amount.greaterThanOrEqual(decimal("500.0")) }};"#
        );
        let engine = engine(&policies, refund_catalog("number"));
        for (amount, expected) in [
            (100.0, true),
            (499.99, true),
            (500.0, false),
            (750.0, false),
            (1000.0, false),
        ] {
            assert_eq!(allowed(&engine, json!(amount)), expected, "amount {amount}");
        }
        let outcome = decide(
            &engine,
            &user(&[]),
            "process_refund",
            json!({"amount": 750.0}),
        )
        .expect("decides");
        assert_eq!(outcome.determining, ["forbid_large"]);
        assert_eq!(
            outcome.deny_reason(),
            "Policy evaluation denied due to forbid_large"
        );
        let outcome = decide(
            &engine,
            &user(&[]),
            "process_refund",
            json!({"amount": 100.0}),
        )
        .expect("decides");
        assert_eq!(outcome.determining, ["refund.0"]);
    }

    #[test]
    fn role_tag_from_claims_decides() {
        let policy = r#"permit(principal is AgentCore::OAuthUser,
                action == AgentCore::Action::"RefundTool___process_refund", resource)
            when { principal.hasTag("role") && principal.getTag("role") == "refund-agent" && context.input.amount.lessThan(decimal("200.0")) };"#;
        let engine = engine(policy, refund_catalog("number"));
        let agent = user(&[("role", "refund-agent")]);
        let args = json!({"amount": 150, "customer_id": "C1"});
        assert!(
            decide(&engine, &agent, "process_refund", args.clone())
                .expect("decides")
                .allowed()
        );
        assert!(
            !decide(
                &engine,
                &user(&[("role", "viewer")]),
                "process_refund",
                args.clone()
            )
            .expect("decides")
            .allowed()
        );
        assert!(
            !decide(&engine, &user(&[]), "process_refund", args)
                .expect("decides")
                .allowed()
        );
    }

    #[test]
    fn tool_without_policy_is_denied_by_default() {
        let engine = engine(LIMIT_1000, refund_catalog("number"));
        let outcome = decide(
            &engine,
            &user(&[]),
            "delete_order",
            json!({"order_id": "1"}),
        )
        .expect("decides");
        assert_eq!(outcome.decision, Decision::Deny);
        assert_eq!(
            outcome.deny_reason(),
            "Policy evaluation denied due to no determining policies"
        );
    }

    #[test]
    fn target_group_and_call_tool_groups_cover_every_tool() {
        let policy = r#"permit(principal, action in AgentCore::Action::"RefundTool", resource);
                        forbid(principal, action in [AgentCore::Action::"RefundTool___delete_order"], resource);"#;
        let engine = engine(policy, refund_catalog("number"));
        assert!(
            decide(&engine, &user(&[]), "get_order", json!({}))
                .expect("decides")
                .allowed()
        );
        assert!(
            decide(&engine, &user(&[]), "never_listed", json!({}))
                .expect("decides")
                .allowed()
        );
        assert!(
            !decide(&engine, &user(&[]), "delete_order", json!({}))
                .expect("decides")
                .allowed()
        );
        let engine = super::PolicyEngine::from_sources(
            model(),
            &[PolicySource::new("p.cedar", r#"permit(principal, action in AgentCore::Action::"CallTool", resource is AgentCore::Gateway);"#)],
        )
        .expect("loads");
        assert!(
            decide(&engine, &user(&[]), "anything", json!({}))
                .expect("decides")
                .allowed()
        );
    }

    #[test]
    fn extra_groups_from_config_are_action_groups() {
        let mut config = model();
        config
            .groups
            .insert("ReadOnly".into(), vec!["get_order".into()]);
        let engine = PolicyEngine::from_sources(
            config,
            &[PolicySource::new(
                "p.cedar",
                r#"permit(principal, action in AgentCore::Action::"ReadOnly", resource);"#,
            )],
        )
        .expect("loads");
        assert!(
            decide(&engine, &user(&[]), "get_order", json!({}))
                .expect("decides")
                .allowed()
        );
        assert!(
            !decide(&engine, &user(&[]), "update_order", json!({}))
                .expect("decides")
                .allowed()
        );
    }

    #[test]
    fn shadow_policies_never_decide_and_report_flips() {
        let policies = format!(
            r#"{LIMIT_1000}
            @id("shadow_forbid_over_100") @enforcement("LOG_ONLY")
            forbid(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
            when {{ context.input.amount.greaterThan(decimal("100.0")) }};
            @id("shadow_permit_all") @enforcement("LOG_ONLY")
            permit(principal, action, resource);"#
        );
        let engine = engine(&policies, refund_catalog("number"));
        let outcome = decide(
            &engine,
            &user(&[]),
            "process_refund",
            json!({"amount": 500}),
        )
        .expect("decides");
        assert!(outcome.allowed(), "a shadow forbid does not deny");
        assert_eq!(
            outcome.shadow_matched,
            ["shadow_forbid_over_100", "shadow_permit_all"]
        );
        assert_eq!(outcome.shadow_flipping, ["shadow_forbid_over_100"]);
        let outcome = decide(
            &engine,
            &user(&[]),
            "process_refund",
            json!({"amount": 5000}),
        )
        .expect("decides");
        assert!(!outcome.allowed(), "a shadow permit does not allow");
        assert_eq!(outcome.shadow_flipping, ["shadow_permit_all"]);
    }

    #[test]
    fn evaluation_error_makes_the_policy_not_apply_and_is_reported() {
        let policy = r#"permit(principal, action, resource) when { context.input.missing == 1 };"#;
        let engine = engine(policy, refund_catalog("number"));
        let outcome = decide(&engine, &user(&[]), "get_order", json!({})).expect("decides");
        assert!(!outcome.allowed());
        assert_eq!(outcome.errors.len(), 1, "{:?}", outcome.errors);
    }

    #[test]
    fn no_policy_set_means_no_snapshot() {
        let engine = PolicyEngine::new(model());
        assert!(engine.snapshot().is_none());
        engine
            .set_policies(load(&[PolicySource::new("p.cedar", LIMIT_1000)]).expect("loads"))
            .expect("no schema, no findings");
        assert!(engine.snapshot().is_some());
        engine.clear();
        assert!(engine.snapshot().is_none());
    }

    #[test]
    fn partial_evaluation_keeps_input_dependent_tools_and_drops_definite_denies() {
        let policies = r#"
            permit(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
            when { context.input.amount < decimal("1000.0") };
            permit(principal, action == AgentCore::Action::"RefundTool___get_order", resource);
            forbid(principal, action == AgentCore::Action::"RefundTool___get_order", resource)
            when { principal.hasTag("blocked") };
            permit(principal, action == AgentCore::Action::"RefundTool___update_order", resource)
            when { principal.hasTag("role") && principal.getTag("role") == "admin" };"#;
        let engine = engine(policies, refund_catalog("number"));
        let snapshot = engine.snapshot().expect("snapshot");
        let alice = user(&[]);
        assert_eq!(
            snapshot.partially_authorize(&alice, "process_refund"),
            Ok(Listing::Depends)
        );
        assert_eq!(
            snapshot.partially_authorize(&alice, "get_order"),
            Ok(Listing::Allowed)
        );
        assert_eq!(
            snapshot.partially_authorize(&user(&[("blocked", "true")]), "get_order"),
            Ok(Listing::Denied)
        );
        assert_eq!(
            snapshot.partially_authorize(&alice, "update_order"),
            Ok(Listing::Denied)
        );
        assert_eq!(
            snapshot.partially_authorize(&user(&[("role", "admin")]), "update_order"),
            Ok(Listing::Allowed)
        );
        assert_eq!(
            snapshot.partially_authorize(&alice, "delete_order"),
            Ok(Listing::Denied)
        );
    }

    #[test]
    fn annotation_groups_decide_calls_and_follow_the_catalog() {
        let policy = r#"permit(principal, action in AgentCore::Action::"ReadOnlyTools", resource);
            forbid(principal, action in AgentCore::Action::"DestructiveTools", resource) when { principal.hasTag("intern") };"#;
        let engine = PolicyEngine::from_sources(model(), &[PolicySource::new("p.cedar", policy)])
            .expect("loads");
        let annotated = |read_only: bool| {
            ToolCatalog::from_list(
                &json!([{"name": "get_order", "annotations": {"readOnlyHint": read_only}}]),
            )
        };
        let _ = engine.set_catalog(annotated(true));
        assert!(
            decide(&engine, &user(&[]), "get_order", json!({}))
                .expect("decides")
                .allowed()
        );
        assert!(
            !decide(&engine, &user(&[]), "process_refund", json!({}))
                .expect("decides")
                .allowed(),
            "a tool the catalog does not know is not read-only"
        );
        let intern = user(&[("intern", "yes")]);
        let denied = decide(&engine, &intern, "never_listed", json!({})).expect("decides");
        assert!(
            !denied.allowed() && denied.determining == ["p.1"],
            "an unknown tool is destructive, as MCP's defaults say: {denied:?}"
        );
        let _ = engine.set_catalog(annotated(false));
        assert!(
            !decide(&engine, &user(&[]), "get_order", json!({}))
                .expect("decides")
                .allowed(),
            "re-derived when the tools change"
        );
    }

    #[test]
    fn fixed_actions_are_default_deny_and_decided_by_their_context() {
        use crate::model::{Capability, McpAction};
        let mut config = model();
        config.govern = Govern::new([Capability::Resources, Capability::Invoke]);
        let policies = r#"
            @id("public_docs")
            permit(principal, action == AgentCore::Action::"ReadResource", resource) when { context.uri like "docs://*" };
            @id("no_secrets")
            forbid(principal, action in AgentCore::Action::"Mcp", resource) when { context has uri && context.uri == "docs://secret" };
            @id("office")
            permit(principal, action == AgentCore::Action::"InvokeGateway", resource) when { context.sourceIp.isInRange(ip("10.0.0.0/8")) };"#;
        let engine = PolicyEngine::from_sources(config, &[PolicySource::new("p.cedar", policies)])
            .expect("loads");
        let snapshot = engine.snapshot().expect("snapshot");
        let read = |uri: &str| {
            snapshot
                .authorize_params(
                    &user(&[]),
                    McpAction::ReadResource,
                    Some(&json!({"uri": uri})),
                )
                .expect("decides")
        };
        assert!(read("docs://readme").allowed());
        assert_eq!(read("docs://secret").determining, ["no_secrets"]);
        assert_eq!(
            read("orders://1").deny_reason(),
            "Policy evaluation denied due to no determining policies"
        );
        let invoke = |ip: &str| {
            snapshot
                .authorize_params(
                    &user(&[]),
                    McpAction::InvokeGateway,
                    Some(&json!({"sourceIp": ip, "method": "POST"})),
                )
                .expect("decides")
                .allowed()
        };
        assert!(invoke("10.9.8.7") && !invoke("203.0.113.1"));
        assert!(
            !snapshot
                .authorize_params(
                    &user(&[]),
                    McpAction::GetPrompt,
                    Some(&json!({"name": "p"}))
                )
                .expect("decides")
                .allowed(),
            "no permit names prompts: default deny"
        );
        assert_eq!(
            engine.govern(),
            Govern::new([Capability::Resources, Capability::Invoke])
        );
    }

    fn validating_engine(validation: Validation) -> PolicyEngine {
        let engine = PolicyEngine::new(model());
        engine.configure_validation(SchemaSource::FromTools, validation);
        let _ = engine.set_catalog(refund_catalog("number"));
        engine
    }

    #[test]
    fn validation_names_policy_file_line_and_column_of_a_misspelt_action() {
        let engine = validating_engine(Validation::FailOnAnyFindings);
        let text = "permit(principal, action, resource) when { true };\n@id(\"typo\")\npermit(principal, action == AgentCore::Action::\"RefundTool___proces_refund\", resource);";
        let refused = engine
            .set_policies(
                load(&[PolicySource::new("policies/refund.cedar", text)]).expect("parses"),
            )
            .expect_err("an unknown action is a finding");
        let finding = &refused.findings[0];
        assert_eq!(finding.policy, "typo");
        let at = finding.at.as_ref().expect("position");
        assert_eq!((at.origin.as_str(), at.line), ("policies/refund.cedar", 3));
        assert!(
            finding.message.contains("RefundTool___proces_refund"),
            "{finding}"
        );
        assert!(
            engine.snapshot().is_none(),
            "a refused set is not installed"
        );
    }

    #[test]
    fn validation_finds_a_misspelt_input_attribute() {
        let engine = validating_engine(Validation::FailOnAnyFindings);
        let text = r#"permit(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
when { context.input.amout.lessThan(decimal("1000.0")) };"#;
        let refused = engine
            .set_policies(load(&[PolicySource::new("refund.cedar", text)]).expect("parses"))
            .expect_err("a missing attribute is a finding");
        let finding = refused.to_string();
        assert!(finding.starts_with("refund.cedar:2:"), "{finding}");
        assert!(finding.contains("amout"), "{finding}");
    }

    #[test]
    fn ignore_all_findings_loads_the_set_and_returns_findings() {
        let engine = validating_engine(Validation::IgnoreAllFindings);
        let text = r#"permit(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
when { context.input.amout.lessThan(decimal("1000.0")) };"#;
        let report = engine
            .set_policies(load(&[PolicySource::new("refund.cedar", text)]).expect("parses"))
            .expect("loads under IGNORE_ALL_FINDINGS");
        assert_eq!(report.findings.len(), 1);
        assert!(engine.snapshot().is_some());
    }

    #[test]
    fn seed_policies_validate_against_the_generated_schema() {
        let engine = validating_engine(Validation::FailOnAnyFindings);
        let report = engine
            .set_policies(load(&[PolicySource::new("refund.cedar", LIMIT_1000)]).expect("parses"))
            .expect("the seed's policy is valid");
        assert!(report.findings.is_empty());
        let role = r#"permit(principal is AgentCore::OAuthUser, action == AgentCore::Action::"RefundTool___process_refund", resource)
            when { principal.hasTag("role") && principal.getTag("role") == "refund-agent" };"#;
        assert!(
            engine
                .set_policies(load(&[PolicySource::new("role.cedar", role)]).expect("parses"))
                .is_ok()
        );
    }

    /// Semantic analysis with the real cvc5 (`scripts/test.sh` installs it).
    mod analysis {
        use super::*;
        use crate::engine::{Budget, Finding, FindingKind, Report, Solver};

        const REFUND: &str = r#"AgentCore::Action::"RefundTool___process_refund""#;
        const GET_ORDER: &str = r#"AgentCore::Action::"RefundTool___get_order""#;

        fn analysed(validation: Validation, solver: Solver, text: &str) -> Result<Report, Refused> {
            let engine = validating_engine(validation);
            engine.configure_analysis(solver, Budget::default());
            let text = text
                .replace("REFUND", REFUND)
                .replace("GET_ORDER", GET_ORDER);
            engine.set_policies(load(&[PolicySource::new("p.cedar", text)]).expect("parses"))
        }

        /// The environments of an analysis's summary: (all, answered by earlier analyses).
        fn environments(report: &Report) -> (usize, usize) {
            let summary = report.analysis.as_deref().expect("the analysis ran");
            let number = |after: &str| -> usize {
                let start = summary.find(after).expect(after) + after.len();
                summary[start..]
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("a number")
            };
            (number(" over "), number(" environments ("))
        }

        #[test]
        fn a_reload_asks_the_solver_again_only_where_the_edited_policy_applies() {
            let set = |team: &str| {
                format!(
                    r#"permit(principal, action == REFUND, resource) when {{ principal.hasTag("team") && principal.getTag("team") == "{team}" }};
                       permit(principal, action == GET_ORDER, resource) when {{ principal.hasTag("team") && principal.getTag("team") == "cache-probe-orders" }};"#
                )
            };
            let first = analysed(
                Validation::FailOnAnyFindings,
                Solver::Auto,
                &set("cache-probe-a"),
            )
            .expect("no findings");
            assert!(
                first.notes.is_empty(),
                "is cvc5 installed? {:?}",
                first.notes
            );
            let (all, _) = environments(&first);
            let again = analysed(
                Validation::FailOnAnyFindings,
                Solver::Auto,
                &set("cache-probe-a"),
            )
            .expect("no findings");
            assert_eq!(
                environments(&again),
                (all, all),
                "the same set: every answer reused"
            );
            let edited = analysed(
                Validation::FailOnAnyFindings,
                Solver::Auto,
                &set("cache-probe-b"),
            )
            .expect("no findings");
            assert_eq!(
                environments(&edited),
                (all, all - 2),
                "only the edited permit's environments (its tool, for each principal type) are asked again"
            );
        }

        fn refused_with_solver(text: &str) -> Vec<Finding> {
            let refused = analysed(Validation::FailOnAnyFindings, Solver::Auto, text)
                .expect_err("the analysis finds something");
            assert!(
                refused.notes.is_empty(),
                "the analysis ran incomplete (is cvc5 installed?): {:?}",
                refused.notes
            );
            refused.findings
        }

        /// Replays a solver's example case through a non-validating engine.
        fn replay(text: &str, example: &Value) -> Outcome {
            let engine = validating_engine(Validation::IgnoreAllFindings);
            let text = text
                .replace("REFUND", REFUND)
                .replace("GET_ORDER", GET_ORDER);
            engine
                .set_policies(load(&[PolicySource::new("p.cedar", text)]).expect("parses"))
                .expect("loads");
            let identity = match example.get("claims").and_then(Value::as_object) {
                Some(claims) => Identity {
                    kind: PrincipalKind::OAuthUser,
                    subject: claims["sub"].as_str().expect("sub").into(),
                    tags: claims
                        .iter()
                        .filter(|(k, _)| *k != "sub")
                        .map(|(k, v)| (k.clone(), v.as_str().expect("string tag").into()))
                        .collect(),
                    expires_at: None,
                },
                None => Identity::anonymous(),
            };
            let tool = example["tool"].as_str().expect("tool");
            decide(&engine, &identity, tool, example["input"].clone()).expect("decides")
        }

        #[test]
        fn a_permit_without_conditions_is_overly_permissive_with_an_allowed_example() {
            let text = r#"@id("open_orders")
permit(principal is AgentCore::OAuthUser, action == GET_ORDER, resource);"#;
            let findings = refused_with_solver(text);
            assert_eq!(findings.len(), 1, "{findings:?}");
            let finding = &findings[0];
            assert_eq!(
                (finding.kind, finding.policy.as_str()),
                (FindingKind::OverlyPermissive, "open_orders")
            );
            assert_eq!(finding.at.as_ref().map(|at| at.line), Some(1));
            assert!(
                finding.message.contains("RefundTool___get_order"),
                "{finding}"
            );
            let example = finding.example.as_ref().expect("an allowed request");
            assert_eq!(example["expect"], "ALLOW");
            assert!(replay(text, example).allowed(), "{example}");
        }

        #[test]
        fn an_unconditional_permit_is_one_finding_naming_every_environment_it_opens() {
            let text = r#"@id("open_everything")
permit(principal, action, resource);"#;
            let findings = refused_with_solver(text);
            assert_eq!(findings.len(), 1, "{findings:#?}");
            let finding = &findings[0];
            assert_eq!(
                (finding.kind, finding.policy.as_str()),
                (FindingKind::OverlyPermissive, "open_everything")
            );
            for scope in [
                "AgentCore::OAuthUser calling AgentCore::Action::\"RefundTool___get_order\"",
                "AgentCore::UnauthenticatedUser calling AgentCore::Action::\"RefundTool___process_refund\"",
            ] {
                assert!(finding.message.contains(scope), "{scope} in {finding}");
            }
            assert!(finding.example.is_some(), "one example: {finding}");
        }

        #[test]
        fn a_forbid_that_takes_every_permitted_request_is_overly_restrictive() {
            let text = r#"@id("small_refunds")
permit(principal, action == REFUND, resource)
when { context.input.amount.lessThan(decimal("1000.0")) };
@id("no_refunds_under_5000")
forbid(principal, action == REFUND, resource)
when { context.input.amount.lessThan(decimal("5000.0")) };"#;
            let findings = refused_with_solver(text);
            assert!(!findings.is_empty());
            for finding in &findings {
                assert_eq!(
                    (finding.kind, finding.policy.as_str()),
                    (FindingKind::OverlyRestrictive, "no_refunds_under_5000"),
                    "{finding}"
                );
                let example = finding.example.as_ref().expect("a denied request");
                assert_eq!(example["expect"], "DENY");
                let amount = example["input"]["amount"].as_f64().expect("a number");
                assert!(amount < 1000.0, "the permit matches it: {example}");
                let outcome = replay(text, example);
                assert!(!outcome.allowed());
                assert_eq!(
                    outcome.determining,
                    vec!["no_refunds_under_5000".to_owned()]
                );
            }
        }

        #[test]
        fn a_permit_and_a_forbid_that_match_nothing_are_ineffective() {
            let text = r#"@id("negative_and_large")
permit(principal, action == REFUND, resource)
when { context.input.amount.lessThan(decimal("0.0")) && context.input.amount.greaterThan(decimal("10.0")) };
@id("two_ids_at_once")
@enforcement("LOG_ONLY")
forbid(principal, action == GET_ORDER, resource)
when { context.input has order_id && context.input.order_id == "a" && context.input.order_id == "b" };
@id("orders_with_an_id")
permit(principal, action == GET_ORDER, resource) when { context.input has order_id };"#;
            let findings = refused_with_solver(text);
            let found: Vec<(FindingKind, &str)> = findings
                .iter()
                .map(|f| (f.kind, f.policy.as_str()))
                .collect();
            assert_eq!(
                found,
                vec![
                    (FindingKind::Ineffective, "negative_and_large"),
                    (FindingKind::Ineffective, "two_ids_at_once"),
                ],
                "{findings:?}"
            );
            assert!(findings.iter().all(|f| f.example.is_none()));
            assert!(findings[0].to_string().contains("can allow no request"));
            assert!(findings[1].to_string().contains("can deny no request"));
        }

        #[test]
        fn a_set_without_findings_loads_under_fail_on_any_findings() {
            let text = r#"permit(principal is AgentCore::OAuthUser, action == REFUND, resource)
when { principal.hasTag("role") && principal.getTag("role") == "refund-agent" &&
       context.input.amount.lessThan(decimal("1000.0")) };
forbid(principal, action == REFUND, resource) when { context.input.amount.lessThan(decimal("0.0")) };
forbid(principal, action == GET_ORDER, resource);"#;
            let report =
                analysed(Validation::FailOnAnyFindings, Solver::Auto, text).expect("no findings");
            assert!(
                report.findings.is_empty() && report.notes.is_empty(),
                "{report:?}"
            );
            let summary = report.analysis.expect("the analysis ran");
            assert!(
                summary.contains("cvc5 over 4 request environments"),
                "{summary}"
            );
        }

        #[test]
        fn the_time_conditions_other_capabilities_as_it_does_tool_calls() {
            use crate::clock::Timestamp;
            use crate::model::{Capability, McpAction, params};
            let mut config = model();
            config.govern = Govern::new([Capability::Resources]);
            let engine = PolicyEngine::new(config);
            engine.configure_validation(SchemaSource::FromTools, Validation::IgnoreAllFindings);
            let _ = engine.set_catalog(refund_catalog("number"));
            let text = r#"@id("docs_by_day")
permit(principal, action == AgentCore::Action::"ReadResource", resource)
when { context.uri like "docs://*" && context.system.now.toTime() < duration("12h") };"#;
            let report = engine
                .set_policies(load(&[PolicySource::new("p.cedar", text)]).expect("parses"))
                .expect("validates against the schema: ReadResource's context has system");
            assert!(report.findings.is_empty(), "{:?}", report.findings);
            let snapshot = engine.snapshot().expect("snapshot");
            let (morning, evening): (Timestamp, Timestamp) = (
                "2026-11-30T10:00:00Z".parse().expect("time"),
                "2026-11-30T18:00:00Z".parse().expect("time"),
            );
            let alice = Identity::anonymous();
            let read = |now| {
                snapshot
                    .authorize_mcp_at(
                        &alice,
                        McpAction::ReadResource,
                        params::read_resource("docs://a"),
                        now,
                    )
                    .expect("decides")
                    .decision
            };
            assert_eq!(read(morning), Decision::Allow);
            assert_eq!(read(evening), Decision::Deny);
            let listed = |now| {
                snapshot
                    .lister_at(&alice, now)
                    .listing_of(
                        ActionRef::Mcp(McpAction::ReadResource),
                        Some(params::read_resource("docs://a")),
                    )
                    .expect("lists")
            };
            assert_eq!(listed(morning), Listing::Allowed);
            assert_eq!(listed(evening), Listing::Denied, "delisted out of hours");
        }

        #[test]
        fn fixed_actions_are_validated_and_analysed_with_replayed_examples() {
            use crate::model::{Capability, McpAction};
            let mut config = model();
            config.govern = Govern::new([Capability::Resources, Capability::Invoke]);
            let engine = PolicyEngine::new(config);
            engine.configure_validation(SchemaSource::FromTools, Validation::FailOnAnyFindings);
            let _ = engine.set_catalog(refund_catalog("number"));
            let text = r#"@id("all_docs")
permit(principal is AgentCore::OAuthUser, action == AgentCore::Action::"ReadResource", resource);
@id("office")
permit(principal, action == AgentCore::Action::"InvokeGateway", resource)
when { context.sourceIp.isInRange(ip("10.0.0.0/8")) };
@id("never_from_office")
forbid(principal, action == AgentCore::Action::"InvokeGateway", resource)
when { context.sourceIp.isInRange(ip("10.0.0.0/8")) };"#;
            let refused = engine
                .set_policies(load(&[PolicySource::new("p.cedar", text)]).expect("parses"))
                .expect_err("findings");
            assert!(refused.notes.is_empty(), "{:?}", refused.notes);
            let found: Vec<(FindingKind, &str)> = refused
                .findings
                .iter()
                .map(|f| (f.kind, f.policy.as_str()))
                .collect();
            assert!(
                found.contains(&(FindingKind::OverlyPermissive, "all_docs"))
                    && found.contains(&(FindingKind::OverlyRestrictive, "never_from_office")),
                "{:?}",
                refused.findings
            );
            let permissive = refused
                .findings
                .iter()
                .find(|f| f.policy == "all_docs")
                .expect("finding");
            let example = permissive.example.as_ref().expect("an allowed request");
            assert_eq!(example["method"], "resources/read", "{example}");
            let restrictive = refused
                .findings
                .iter()
                .find(|f| f.policy == "never_from_office")
                .expect("finding");
            let example = restrictive.example.as_ref().expect("a denied request");
            assert_eq!(example["method"], "invoke", "{example}");
            let ip: std::net::IpAddr = example["input"]["sourceIp"]
                .as_str()
                .expect("an address")
                .parse()
                .expect("parses");
            assert!(ip.to_string().starts_with("10."), "{example}");
            let typo = r#"permit(principal, action == AgentCore::Action::"ReadResource", resource) when { context.url == "x" };"#;
            let refused = engine
                .set_policies(load(&[PolicySource::new("typo.cedar", typo)]).expect("parses"))
                .expect_err("no attribute url");
            assert_eq!(refused.findings[0].kind, FindingKind::Schema);
            let prompts = r#"permit(principal, action == AgentCore::Action::"GetPrompt", resource) when { context.name == "x" };"#;
            assert!(
                engine
                    .set_policies(load(&[PolicySource::new("p.cedar", prompts)]).expect("parses"))
                    .is_err(),
                "prompts are not governed: GetPrompt is no action of the schema"
            );
            let _ = McpAction::ALL;
        }

        #[test]
        fn ignore_all_findings_loads_what_the_analysis_would_refuse() {
            let text = "permit(principal is AgentCore::OAuthUser, action == GET_ORDER, resource);";
            let report = analysed(Validation::IgnoreAllFindings, Solver::Auto, text)
                .expect("IGNORE_ALL_FINDINGS runs the schema checks only");
            assert!(report.findings.is_empty());
        }

        #[test]
        fn without_a_solver_the_checks_that_need_none_still_run() {
            let text = r#"@id("open_orders")
permit(principal, action == GET_ORDER, resource);
@id("refunds") permit(principal, action == REFUND, resource);
@id("no_refunds") forbid(principal, action == REFUND, resource);
@id("never") permit(principal, action == GET_ORDER, resource) when { false };"#;
            for solver in [Solver::Disabled, Solver::Path("/nonexistent/cvc5".into())] {
                let refused = analysed(Validation::FailOnAnyFindings, solver, text)
                    .expect_err("findings without a solver");
                assert_eq!(refused.notes.len(), 1);
                assert!(
                    refused.notes[0].starts_with("no SMT solver"),
                    "{:?}",
                    refused.notes
                );
                let mut found: Vec<(FindingKind, &str)> = refused
                    .findings
                    .iter()
                    .map(|f| (f.kind, f.policy.as_str()))
                    .collect();
                found.dedup();
                assert_eq!(
                    found,
                    vec![
                        (FindingKind::OverlyPermissive, "open_orders"),
                        (FindingKind::OverlyRestrictive, "no_refunds"),
                        (FindingKind::Ineffective, "never"),
                    ],
                    "{:?}",
                    refused.findings
                );
            }
        }
    }

    mod index_equivalence {
        use super::*;
        use crate::model::{McpAction, RequestContext, params};
        use cedar_policy::{Authorizer, Decision, PolicySet, Request};
        use proptest::prelude::*;

        const TOOLS: [&str; 4] = ["process_refund", "get_order", "update_order", "unlisted"];
        const FIXED: [McpAction; 6] = McpAction::ALL;
        const GROUPS: [&str; 9] = [
            "RefundTool",
            "ReadOnly",
            "CallTool",
            "Mcp",
            "Other",
            "ReadOnlyTools",
            "DestructiveTools",
            "IdempotentTools",
            "OpenWorldTools",
        ];

        /// What a generated request decides: a tool's call, or a fixed action.
        #[derive(Debug, Clone, Copy)]
        enum Target {
            Tool(&'static str),
            Mcp(McpAction),
        }

        impl Target {
            fn action(self) -> ActionRef<'static> {
                match self {
                    Self::Tool(tool) => ActionRef::Tool(tool),
                    Self::Mcp(action) => ActionRef::Mcp(action),
                }
            }
        }

        fn target() -> impl Strategy<Value = Target> {
            prop_oneof![
                prop::sample::select(TOOLS.to_vec()).prop_map(Target::Tool),
                prop::sample::select(FIXED.to_vec()).prop_map(Target::Mcp),
            ]
        }

        fn action_uid() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::sample::select(TOOLS.to_vec())
                    .prop_map(|t| format!(r#"AgentCore::Action::"RefundTool___{t}""#)),
                prop::sample::select(FIXED.to_vec())
                    .prop_map(|a| format!(r#"AgentCore::Action::"{}""#, a.id())),
            ]
        }

        fn action_scope() -> impl Strategy<Value = String> {
            let group = prop::sample::select(GROUPS.to_vec())
                .prop_map(|g| format!(r#"AgentCore::Action::"{g}""#));
            prop_oneof![
                Just("action".to_owned()),
                action_uid().prop_map(|a| format!("action == {a}")),
                group.clone().prop_map(|a| format!("action == {a}")),
                group.prop_map(|a| format!("action in {a}")),
                prop::collection::vec(action_uid(), 1..3)
                    .prop_map(|v| format!("action in [{}]", v.join(", "))),
            ]
        }

        fn condition() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec![
                "true",
                r#"context.input.amount.lessThan(decimal("1000.0"))"#,
                r#"principal.hasTag("role") && principal.getTag("role") == "admin""#,
                "context.input.missing == 1",
                // Conditions on `action` keep a tool out of the list classes (`index.rs`).
                r#"action == AgentCore::Action::"RefundTool___get_order""#,
                r#"action in AgentCore::Action::"RefundTool" && context.input.amount.lessThan(decimal("5.0"))"#,
                r#"context.uri like "docs://*""#,
                r#"context.sourceIp.isInRange(ip("10.0.0.0/8"))"#,
                r#"context.arguments.topic == "cedar""#,
            ])
        }

        fn policy() -> impl Strategy<Value = String> {
            (prop::bool::ANY, action_scope(), condition()).prop_map(|(permit, scope, cond)| {
                let effect = if permit { "permit" } else { "forbid" };
                format!("{effect}(principal, {scope}, resource) when {{ {cond} }};")
            })
        }

        /// The tools, one of them annotated read-only, and a prompt.
        fn catalog() -> ToolCatalog {
            ToolCatalog::from_list(&json!({"tools": [{
                "name": "process_refund",
                "inputSchema": {"type": "object", "properties": {
                    "amount": {"type": "number"}, "customer_id": {"type": "string"}},
                    "required": ["amount"]}
            }, {"name": "get_order", "annotations": {"readOnlyHint": true, "openWorldHint": false},
                "inputSchema": {"type": "object", "properties": {"order_id": {"type": "string"}}}}]}))
            .with_prompts(&json!([{"name": "summarize", "arguments": [{"name": "topic", "required": true}]}]))
        }

        /// The context of a generated request: the refund arguments for a tool, params for
        /// a fixed action (`inside` picks the values the conditions test for).
        fn context(
            target: Target,
            amount: i64,
            inside: bool,
            catalog: &ToolCatalog,
        ) -> RequestContext {
            let action = match target {
                Target::Tool(tool) => {
                    let args = json!({"amount": amount, "customer_id": "C1"});
                    let snapshot_type = catalog.get(tool).map_or(&InputType::Untyped, |t| &t.input);
                    let context = crate::model::TypedInput::new(Some(&args), snapshot_type)
                        .expect("typed")
                        .into_context();
                    return RequestContext(context);
                }
                Target::Mcp(action) => action,
            };
            let params = match action {
                McpAction::ReadResource => {
                    json!({"uri": if inside { "docs://a" } else { "other://b" }})
                }
                McpAction::GetPrompt => {
                    json!({"name": "summarize", "arguments": {"topic": if inside { "cedar" } else { "rust" }}})
                }
                McpAction::CreateMessage => json!({"maxTokens": amount}),
                McpAction::Elicit => json!({"message": "ok?"}),
                McpAction::ListRoots => json!({}),
                McpAction::InvokeGateway => {
                    json!({"sourceIp": if inside { "10.1.2.3" } else { "192.0.2.1" }, "method": "POST"})
                }
            };
            params::from_params(action, Some(&params), catalog).expect("context")
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]
            #[test]
            fn indexed_decisions_equal_whole_set_decisions(
                policies in prop::collection::vec(policy(), 0..12),
                target in target(),
                amount in -2000i64..3000,
                admin in prop::bool::ANY,
                inside in prop::bool::ANY,
            ) {
                let mut config = model();
                config.groups.insert("ReadOnly".into(), vec!["get_order".into()]);
                config.govern = Govern::all();
                let text = policies.join("\n");
                let engine = PolicyEngine::from_sources(config, &[PolicySource::new("p.cedar", text)]).expect("loads");
                let catalog = catalog();
                let _ = engine.set_catalog(catalog.clone());
                let snapshot = engine.snapshot().expect("snapshot");
                let identity = if admin { user(&[("role", "admin")]) } else { user(&[]) };
                let action = target.action();
                let context = context(target, amount, inside, &catalog);
                let indexed = match target {
                    Target::Tool(tool) => {
                        let args = json!({"amount": amount, "customer_id": "C1"});
                        snapshot.authorize(&identity, tool, Some(&args)).expect("decides")
                    }
                    Target::Mcp(fixed) => snapshot.authorize_mcp(&identity, fixed, context.clone()).expect("decides"),
                };

                let mut whole = PolicySet::new();
                for p in &snapshot.policies().policies {
                    whole.add(p.policy.clone()).expect("unique ids");
                }
                let model = snapshot.model();
                let request = Request::new(model.principal_uid(&identity), model.uid_of(action), model.resource_uid(), context.into_context(), None).expect("request");
                let entities = crate::model::values::Closed::new(model.entities_of(action)).expect("closed")
                    .with_leaf(model.principal_entity(&identity)).expect("entities");
                let response = Authorizer::new().is_authorized(&request, &whole, &entities);
                let mut determining: Vec<String> = response.diagnostics().reason().map(|id| AsRef::<str>::as_ref(id).to_owned()).collect();
                determining.sort_unstable();
                prop_assert_eq!(indexed.decision, response.decision());
                prop_assert_eq!(&indexed.determining, &determining);
                prop_assert_eq!(indexed.allowed(), response.decision() == Decision::Allow);

                // The listing (input unknown) too, including the shortcut for no permit.
                let partial = Request::builder()
                    .principal(model.principal_uid(&identity))
                    .action(model.uid_of(action))
                    .resource(model.resource_uid())
                    .build();
                let expected = match Authorizer::new().is_authorized_partial(&partial, &whole, &entities).decision() {
                    Some(Decision::Allow) => Listing::Allowed,
                    Some(Decision::Deny) => Listing::Denied,
                    None => Listing::Depends,
                };
                prop_assert_eq!(snapshot.lister(&identity).listing_of(action, None), Ok(expected));
            }
        }
    }
}
