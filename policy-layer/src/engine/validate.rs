//! Policy validation against the gateway's Cedar schema (strict mode): a policy that names an
//! unknown action or a missing or ill-typed `context.input` attribute is a finding, with the
//! policy id, file, line and column.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

use cedar_policy::{
    PolicySet, ResourceConstraint, Schema, ValidationMode, ValidationWarning, Validator,
};
use miette::Diagnostic;

use super::index::PolicyIndex;
use super::policies::{LoadedPolicies, LoadedPolicy, Position};
use crate::model::schema::GatewaySchema;
use crate::model::{ActionModel, ToolCatalog};

/// What kind of finding: a schema error, or one of AgentCore's semantic findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FindingKind {
    /// The policy does not fit the schema (unknown action, missing or ill-typed attribute).
    Schema,
    /// The policy set allows every request of a principal type, tool and resource.
    OverlyPermissive,
    /// The policy set denies every request of a principal type, tool and resource.
    OverlyRestrictive,
    /// A permit that allows nothing, a forbid that denies nothing.
    Ineffective,
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Schema => "schema",
            Self::OverlyPermissive => "overly permissive",
            Self::OverlyRestrictive => "overly restrictive",
            Self::Ineffective => "ineffective",
        })
    }
}

/// One validation finding about one policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What kind of finding.
    pub kind: FindingKind,
    /// The policy's id.
    pub policy: String,
    /// Where in its file, when Cedar says.
    pub at: Option<Position>,
    /// What is wrong.
    pub message: String,
    /// A request that shows it, as a `cases.yaml` case (semantic findings, where one exists).
    pub example: Option<serde_json::Value>,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(at) = &self.at {
            write!(f, "{at}: ")?;
        }
        write!(f, "policy `{}`: ", self.policy)?;
        if self.kind != FindingKind::Schema {
            write!(f, "{}: ", self.kind)?;
        }
        f.write_str(&self.message)?;
        if let Some(example) = &self.example {
            write!(f, "\n    example: {example}")?;
        }
        Ok(())
    }
}

/// What checking a policy set found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Every finding (schema and semantic).
    pub findings: Vec<Finding>,
    /// What the analysis could not check, and why.
    pub notes: Vec<String>,
    /// What the semantic analysis ran with (`None`: it did not run).
    pub analysis: Option<String>,
}

/// Findings that made a policy set be refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Refused {
    /// Every finding.
    pub findings: Vec<Finding>,
    /// What the analysis could not check (shown beside the findings).
    pub notes: Vec<String>,
}

impl From<Report> for Refused {
    fn from(report: Report) -> Self {
        Self {
            findings: report.findings,
            notes: report.notes,
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        super::policies::write_lines(f, &self.findings)
    }
}

/// What Cedar's validator says of a policy set.
#[derive(Debug, Clone, Default)]
pub struct Validated {
    /// Schema findings, sorted.
    pub findings: Vec<Finding>,
    /// Policies the type checker finds impossible (they can match nothing).
    pub impossible: BTreeSet<String>,
}

/// Validates every policy (enforced and shadow) against the gateway's schema in strict mode.
///
/// Cedar's validator takes time in the size of the schema for every policy, so with thousands
/// of tools it is quadratic. Each tool's policies are therefore checked against that tool's cut
/// of the schema (`ToolSchemas`); whatever a cut flags, and whatever names no tool, is checked
/// again against the whole schema, which alone decides the findings.
///
/// A policy whose scope names another gateway than this one is a finding too (it can never
/// apply), named with the configured `gateway.id`.
#[must_use]
pub fn validate(
    policies: &LoadedPolicies,
    gateway: &GatewaySchema,
    model: &ActionModel,
) -> Validated {
    let mut validated = against_schema(policies, gateway, model);
    let found: HashSet<String> = validated
        .findings
        .iter()
        .map(|f| f.policy.clone())
        .collect();
    let elsewhere: Vec<Finding> = other_gateway(policies, model)
        .into_iter()
        .filter(|f| !found.contains(&f.policy))
        .collect();
    validated
        .impossible
        .retain(|id| !elsewhere.iter().any(|f| &f.policy == id));
    validated.findings.extend(elsewhere);
    validated.findings.sort_by_key(ToString::to_string);
    validated
}

/// Cedar's strict validation, per tool where it can (see [`validate`]).
fn against_schema(
    policies: &LoadedPolicies,
    gateway: &GatewaySchema,
    model: &ActionModel,
) -> Validated {
    let Ok(cut) = gateway.per_tool(&model.config().target) else {
        return whole(policies, &gateway.schema, policies.policies.iter());
    };
    let index = PolicyIndex::build(policies, model, &ToolCatalog::default());
    let by_id: HashMap<&str, &LoadedPolicy> =
        policies.policies.iter().map(|p| (p.id(), p)).collect();
    let id_of = |id: &cedar_policy::PolicyId| by_id.get(AsRef::<str>::as_ref(id)).map(|p| p.id());
    let mut clean: HashSet<&str> = HashSet::new();
    let mut flagged: HashSet<&str> = HashSet::new();
    // Per policy: in how many cuts it was checked, and in how many it was impossible.
    let mut impossible: HashMap<&str, (usize, usize)> = HashMap::new();
    for action in cut.actions() {
        let Some(tool) = model.tool_of_action(action) else {
            continue;
        };
        let sets = index.for_tool(tool);
        let mut set = PolicySet::new();
        for policy in [&sets.active, &sets.shadow_permits, &sets.shadow_forbids]
            .into_iter()
            .flat_map(PolicySet::policies)
        {
            let _ = set.add(policy.clone());
        }
        if set.is_empty() {
            continue;
        }
        let Ok(schema) = cut.schema(action) else {
            return whole(policies, &gateway.schema, policies.policies.iter());
        };
        let result = Validator::new(schema).validate(&set, ValidationMode::Strict);
        for error in result.validation_errors() {
            if let Some(id) = id_of(error.policy_id()) {
                flagged.insert(id);
            }
        }
        for policy in set.policies() {
            if let Some(id) = id_of(policy.id()) {
                clean.insert(id);
                impossible.entry(id).or_default().0 += 1;
            }
        }
        for warning in result.validation_warnings() {
            if let ValidationWarning::ImpossiblePolicy(w) = warning
                && let Some(id) = id_of(w.policy_id())
            {
                impossible.entry(id).or_default().1 += 1;
            }
        }
    }
    let again = policies
        .policies
        .iter()
        .filter(|p| flagged.contains(p.id()) || !clean.contains(p.id()));
    let mut validated = whole(policies, &gateway.schema, again);
    validated.impossible.extend(
        impossible
            .into_iter()
            .filter(|(id, (checked, never))| checked == never && !flagged.contains(id))
            .map(|(id, _)| id.to_owned()),
    );
    // A policy that does not fit the schema is a finding already, not also an impossible one.
    let found: HashSet<&str> = validated
        .findings
        .iter()
        .map(|f| f.policy.as_str())
        .collect();
    validated
        .impossible
        .retain(|id| !found.contains(id.as_str()));
    validated
}

/// Policies whose scope names a gateway other than this one (`resource ==` or `resource in`
/// another `AgentCore::Gateway`, as a copied ARN does): the gateway is the only resource there
/// is, so they can never apply. Cedar's validator cannot see it (any gateway id type-checks).
fn other_gateway(policies: &LoadedPolicies, model: &ActionModel) -> Vec<Finding> {
    let ours = model.resource_uid();
    policies
        .policies
        .iter()
        .filter_map(|loaded| {
            let named = match loaded.policy.resource_constraint() {
                ResourceConstraint::Eq(uid)
                | ResourceConstraint::In(uid)
                | ResourceConstraint::IsIn(_, uid) => uid,
                ResourceConstraint::Any | ResourceConstraint::Is(_) => return None,
            };
            (named.type_name() == ours.type_name() && named != ours).then(|| Finding {
                kind: FindingKind::Ineffective,
                policy: loaded.id().to_owned(),
                at: Some(loaded.position()),
                message: format!(
                    "its resource is {named}, but this gateway is {ours} (gateway.id = {:?}): it can never apply",
                    model.config().gateway_id
                ),
                example: None,
            })
        })
        .collect()
}

/// What Cedar says when `<`, `<=`, `>` or `>=` meets a decimal (a JSON number of the input
/// is a decimal: `docs/cedar-model.md`).
const DECIMAL_OPERAND: &str = "but saw decimal";

/// Cedar's message, with the way out where a newcomer needs one: decimals are compared with
/// methods, not operators.
fn hint(message: String) -> String {
    if message.contains(DECIMAL_OPERAND) && message.contains("Long") {
        format!(
            "{message}; a decimal is compared with its methods: .lessThan(), .lessThanOrEqual(), .greaterThan(), .greaterThanOrEqual() (`context.input.amount.lessThan(decimal(\"1000.0\"))`)"
        )
    } else {
        message
    }
}

/// Validates `which` of `policies` against the whole `schema`.
fn whole<'p>(
    policies: &LoadedPolicies,
    schema: &Schema,
    which: impl Iterator<Item = &'p LoadedPolicy>,
) -> Validated {
    let mut set = PolicySet::new();
    for loaded in which {
        // Ids are unique (checked at load).
        let _ = set.add(loaded.policy.clone());
    }
    if set.is_empty() {
        return Validated::default();
    }
    let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
    let mut findings: Vec<Finding> = result
        .validation_errors()
        .map(|error| {
            let policy = AsRef::<str>::as_ref(error.policy_id()).to_owned();
            let at = policies.get(&policy).and_then(|loaded| {
                let offset = error.labels()?.next()?.offset();
                Some(Position::at(&loaded.origin, &loaded.source, offset))
            });
            Finding {
                kind: FindingKind::Schema,
                policy,
                at,
                message: hint(error.to_string()),
                example: None,
            }
        })
        .collect();
    findings.sort_by_key(ToString::to_string);
    let impossible = result
        .validation_warnings()
        .filter_map(|warning| match warning {
            ValidationWarning::ImpossiblePolicy(w) => {
                Some(AsRef::<str>::as_ref(w.policy_id()).to_owned())
            }
            _ => None,
        })
        .collect();
    Validated {
        findings,
        impossible,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::engine::policies::{PolicySource, load};
    use crate::model::ModelConfig;

    #[test]
    fn checking_per_tool_finds_what_the_whole_schema_finds() {
        let model = ActionModel::new(ModelConfig {
            target: "RefundTool".into(),
            ..ModelConfig::default()
        });
        let catalog = ToolCatalog::from_list(&json!({"tools": [
            {"name": "process_refund", "inputSchema": {"type": "object", "properties": {
                "amount": {"type": "number"}}, "required": ["amount"]}},
            {"name": "get_order", "inputSchema": {"type": "object", "properties": {
                "order_id": {"type": "string"}}, "required": ["order_id"]}},
            {"name": "update_order", "inputSchema": {"type": "object", "properties": {
                "order_id": {"type": "string"}}, "required": ["order_id"]}}
        ]}));
        let gateway = GatewaySchema::generate(model.config(), &catalog).expect("schema");
        let text = r#"
@id("two_tools")
permit(principal, action in [AgentCore::Action::"RefundTool___get_order", AgentCore::Action::"RefundTool___update_order"], resource)
when { context.input.order_id like "ORD-*" };
@id("group_reads_amount")
permit(principal, action in AgentCore::Action::"RefundTool", resource)
when { context.input.amount.lessThan(decimal("10.0")) };
@id("typo")
permit(principal, action == AgentCore::Action::"RefundTool___get_ordr", resource);
@id("never")
forbid(principal, action == AgentCore::Action::"RefundTool___get_order", resource) when { false };
@id("fine")
permit(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
when { context.input.amount.lessThan(decimal("10.0")) };
"#;
        let policies = load(&[PolicySource::new("p.cedar", text)]).expect("parses");
        let cut = against_schema(&policies, &gateway, &model);
        let all = whole(&policies, &gateway.schema, policies.policies.iter());
        assert_eq!(cut.findings, all.findings);
        let flagged: BTreeSet<&str> = cut.findings.iter().map(|f| f.policy.as_str()).collect();
        assert_eq!(flagged, BTreeSet::from(["group_reads_amount", "typo"]));
        // `typo` is impossible too, but it is reported as the schema finding it is.
        assert_eq!(cut.impossible, BTreeSet::from(["never".to_owned()]));
        assert!(all.impossible.contains("never"));
    }

    #[test]
    fn a_policy_for_another_gateway_is_a_finding_naming_the_configured_id() {
        let model = ActionModel::new(ModelConfig {
            target: "RefundTool".into(),
            gateway_id: "arn:aws:bedrock-agentcore:us-west-2:123456789012:gateway/refund-gateway"
                .into(),
            ..ModelConfig::default()
        });
        let catalog = ToolCatalog::from_list(&json!([{"name": "get_order",
            "inputSchema": {"type": "object", "properties": {"order_id": {"type": "string"}}}}]));
        let gateway = GatewaySchema::generate(model.config(), &catalog).expect("schema");
        let text = r#"
@id("copied")
permit(principal, action == AgentCore::Action::"RefundTool___get_order",
       resource == AgentCore::Gateway::"arn:aws:bedrock-agentcore:us-east-1:999999999999:gateway/other")
when { context.input has order_id };
@id("ours")
permit(principal, action == AgentCore::Action::"RefundTool___get_order",
       resource == AgentCore::Gateway::"arn:aws:bedrock-agentcore:us-west-2:123456789012:gateway/refund-gateway")
when { context.input has order_id };
@id("any_gateway")
permit(principal, action == AgentCore::Action::"RefundTool___get_order", resource is AgentCore::Gateway)
when { context.input has order_id };
"#;
        let policies = load(&[PolicySource::new("p.cedar", text)]).expect("parses");
        let validated = validate(&policies, &gateway, &model);
        assert_eq!(validated.findings.len(), 1, "{:?}", validated.findings);
        let finding = &validated.findings[0];
        assert_eq!(
            (finding.kind, finding.policy.as_str()),
            (FindingKind::Ineffective, "copied")
        );
        assert_eq!(finding.at.as_ref().map(|at| at.line), Some(2));
        let text = finding.to_string();
        assert!(
            text.contains("gateway.id = \"arn:aws:bedrock-agentcore:us-west-2:123456789012:gateway/refund-gateway\"")
                && text.contains("can never apply"),
            "{text}"
        );
    }

    #[test]
    fn comparing_a_decimal_with_an_operator_hints_at_its_method() {
        let model = ActionModel::new(ModelConfig {
            target: "RefundTool".into(),
            ..ModelConfig::default()
        });
        let catalog = ToolCatalog::from_list(&json!([{"name": "process_refund",
            "inputSchema": {"type": "object", "properties": {"amount": {"type": "number"}},
                            "required": ["amount"]}}]));
        let gateway = GatewaySchema::generate(model.config(), &catalog).expect("schema");
        let text = r#"
@id("small")
permit(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
when { context.input.amount < decimal("1000.0") };
@id("small_long")
permit(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
when { context.input.amount >= 1000 };
"#;
        let policies = load(&[PolicySource::new("p.cedar", text)]).expect("parses");
        let validated = validate(&policies, &gateway, &model);
        assert_eq!(validated.findings.len(), 3, "{:#?}", validated.findings);
        for finding in &validated.findings {
            assert!(
                finding.message.contains("but saw decimal; a decimal is compared with its methods: .lessThan(), .lessThanOrEqual(), .greaterThan(), .greaterThanOrEqual() (`context.input.amount.lessThan(decimal(\"1000.0\"))`)"),
                "{finding}"
            );
        }
    }

    #[test]
    fn other_type_errors_get_no_decimal_hint() {
        assert_eq!(
            hint("expected Long but saw String".to_owned()),
            "expected Long but saw String"
        );
    }
}
