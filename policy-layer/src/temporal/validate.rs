//! Temporal conditions checked against the gateway's tools, as AgentCore checks them when a
//! policy is created: every predicate names a tool of the target, every field it mentions is
//! declared on that event (`output.*` only for tools with an `outputSchema`), every
//! `context.input.<name>` is an input of the tool the policy decides, and `sum` and ordering
//! comparisons read integers. Cedar's validator cannot see these conditions (they are
//! `context.temporal` values to it), so this is their schema check.

use std::collections::BTreeMap;
use std::sync::Arc;

use cedar_policy::ActionConstraint;

use super::ast::{Cond, EventKind, Expr, FieldPath, Predicate};
use super::eval::ACTION_TYPE;
use super::{Condition, Loaded};
use crate::engine::Position;
use crate::model::tools::{InputType, input_type};
use crate::model::{ActionModel, ToolCatalog};

/// A condition that does not fit the tools.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: policy `{policy_id}`: {message}")]
pub struct TemporalFinding {
    /// Where.
    pub at: Position,
    /// The policy.
    pub policy_id: String,
    /// What is wrong.
    pub message: String,
}

/// Checks every condition of `loaded` against `catalog` (nothing to check without tools).
#[must_use]
pub fn validate(
    loaded: &Loaded,
    model: &ActionModel,
    catalog: &ToolCatalog,
) -> Vec<TemporalFinding> {
    if catalog.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for c in &loaded.conditions {
        let scope_tool =
            loaded
                .policies
                .get(&c.policy_id)
                .and_then(|p| match p.policy.action_constraint() {
                    ActionConstraint::Eq(uid) => model
                        .tool_of_action(uid.id().unescaped())
                        .map(str::to_owned),
                    _ => None,
                });
        let mut v = Validator {
            condition: c,
            model,
            catalog,
            scope: scope_tool
                .as_deref()
                .and_then(|t| catalog.get(t))
                .map(|t| &t.input),
            types: BTreeMap::new(),
            out: &mut out,
        };
        v.cond(&c.cond);
    }
    out
}

struct Validator<'a> {
    condition: &'a Condition,
    model: &'a ActionModel,
    catalog: &'a ToolCatalog,
    /// The input type of the tool the policy decides, when it names one.
    scope: Option<&'a InputType>,
    /// Types of variables bound from event fields.
    types: BTreeMap<Arc<str>, InputType>,
    out: &'a mut Vec<TemporalFinding>,
}

impl Validator<'_> {
    fn finding(&mut self, offset: usize, message: String) {
        let c = self.condition;
        let at = Position::at(&c.at.origin, &c.source, offset);
        self.out.push(TemporalFinding {
            at,
            policy_id: c.policy_id.clone(),
            message,
        });
    }

    fn cond(&mut self, c: &Cond) {
        match c {
            Cond::And(parts) => parts.iter().for_each(|p| self.cond(p)),
            Cond::Not(x)
            | Cond::Formerly(_, x)
            | Cond::Previous(_, x)
            | Cond::Exists { body: x, .. } => {
                self.cond(x);
            }
            Cond::Since { left, right, .. } => {
                self.cond(right);
                self.cond(left);
            }
            Cond::Tp(_) => {}
            Cond::Pred(p) => self.predicate(p),
            Cond::Cmp {
                op,
                left,
                right,
                span,
            } => {
                for side in [left, right] {
                    self.expr(side, span.start);
                    if op.is_ordering() && self.is_not_integer(side) {
                        self.finding(
                            span.start,
                            "comparison requires numeric operands on both sides".to_owned(),
                        );
                    }
                }
            }
        }
    }

    fn expr(&mut self, e: &Expr, offset: usize) {
        match e {
            Expr::Agg(agg) => {
                self.cond(&agg.body);
                if let Some(v) = &agg.sum_of
                    && self
                        .types
                        .get(v)
                        .is_some_and(|t| *t != InputType::Long && *t != InputType::Untyped)
                {
                    self.finding(
                        agg.span.start,
                        format!("`sum` needs an integer summand: `{v}` is not an integer field"),
                    );
                }
            }
            Expr::Context(path) => {
                if let (Some(scope), Some(("input", rest))) =
                    (self.scope, path.split_first().map(|(h, r)| (h.as_str(), r)))
                    && field_type(scope, rest).is_none()
                {
                    self.finding(
                        offset,
                        format!(
                            "`context.{}` is not an input of the tool this policy decides",
                            path.join(".")
                        ),
                    );
                }
            }
            Expr::Arith(_, l, r) => {
                self.expr(l, offset);
                self.expr(r, offset);
            }
            Expr::Set(items) => items.iter().for_each(|i| self.expr(i, offset)),
            Expr::Lit(_) | Expr::Var(_) | Expr::Wildcard | Expr::Scope(..) => {}
        }
    }

    fn is_not_integer(&self, e: &Expr) -> bool {
        match e {
            Expr::Var(v) => self
                .types
                .get(v)
                .is_some_and(|t| *t != InputType::Long && *t != InputType::Untyped),
            Expr::Context(path) => match (self.scope, path.split_first()) {
                (Some(scope), Some((head, rest))) if head == "input" => field_type(scope, rest)
                    .is_some_and(|t| *t != InputType::Long && *t != InputType::Untyped),
                _ => false,
            },
            _ => false,
        }
    }

    fn predicate(&mut self, p: &Predicate) {
        let name = format!("{ACTION_TYPE}::\"{}\"::{}", p.action_id, p.kind);
        let Some(tool) = self.model.tool_of_action(&p.action_id) else {
            self.finding(
                p.span.start,
                format!(
                    "predicate `{name}` names no action of target `{}` (actions are `{}___<tool>`)",
                    self.model.config().target,
                    self.model.config().target
                ),
            );
            return;
        };
        let Some(schema) = self.catalog.get(tool) else {
            self.finding(
                p.span.start,
                format!("predicate `{name}` names an unknown tool `{tool}`"),
            );
            return;
        };
        let output = schema.definition.get("outputSchema").map(input_type);
        for (field, term) in &p.fields {
            let ty = match field {
                FieldPath::Input(path) => field_type(&schema.input, path),
                FieldPath::Output(path) => match (&output, p.kind) {
                    (Some(out), EventKind::Response) => field_type(out, path),
                    _ => None,
                },
                _ => Some(&InputType::Untyped),
            };
            let Some(ty) = ty else {
                let mut declared = vec!["eventPrincipal".to_owned(), "eventResource".to_owned()];
                declared.extend(fields_of(&schema.input, "input"));
                if p.kind == EventKind::Response
                    && let Some(out) = &output
                {
                    declared.extend(fields_of(out, "output"));
                }
                declared.push("requestId".to_owned());
                declared.push("sessionId".to_owned());
                declared.sort();
                self.finding(
                    p.span.start,
                    format!(
                        "predicate `{name}` mentions field `{field}`, which is not declared on that event (declared fields: {})",
                        declared.join(", ")
                    ),
                );
                continue;
            };
            match term {
                Expr::Var(v) => {
                    self.types.insert(Arc::clone(v), ty.clone());
                }
                other => self.expr(other, p.span.start),
            }
        }
    }
}

/// The type of a dotted path into a record type; `Untyped` below an untyped node.
fn field_type<'t>(ty: &'t InputType, path: &[String]) -> Option<&'t InputType> {
    let mut here = ty;
    for key in path {
        match here {
            InputType::Record(record) => here = &record.attribute(key)?.ty,
            InputType::Untyped => return Some(here),
            _ => return None,
        }
    }
    Some(here)
}

fn fields_of(ty: &InputType, group: &str) -> Vec<String> {
    match ty {
        InputType::Record(record) => record
            .attributes
            .iter()
            .map(|a| format!("{group}.{}", a.name))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::PolicySource;
    use crate::model::ModelConfig;
    use serde_json::json;

    fn findings(condition: &str) -> Vec<String> {
        let model = ActionModel::new(ModelConfig {
            target: "MyTarget".into(),
            gateway_id: "gw".into(),
            ..ModelConfig::default()
        });
        let catalog = ToolCatalog::from_list(&json!({ "tools": [
            { "name": "verify_purchase", "inputSchema": { "type": "object",
                "properties": { "orderId": { "type": "string" } }, "required": ["orderId"] } },
            { "name": "refund", "inputSchema": { "type": "object",
                "properties": { "orderId": { "type": "string" }, "amount": { "type": "number" }, "count": { "type": "integer" } } },
              "outputSchema": { "type": "object", "properties": { "refundId": { "type": "string" } } } }
        ]}));
        let text = format!(
            "permit (principal, action == AgentCore::Action::\"MyTarget___refund\", resource)\nwhen temporal {{ {condition} }};"
        );
        let loaded = crate::temporal::load(&[PolicySource::new("p.cedar", text)]).expect("loads");
        validate(&loaded, &model, &catalog)
            .into_iter()
            .map(|f| f.to_string())
            .collect()
    }

    #[test]
    fn names_the_declared_fields_when_a_field_is_not_on_the_event() {
        let f = findings(
            r#"formerly within 1h AgentCore::Action::"MyTarget___verify_purchase"::response{ eventResource: resource, output.orderId: context.input.orderId }"#,
        );
        assert_eq!(
            f,
            [
                "p.cedar:2:36: policy `p.0`: predicate `AgentCore::Action::\"MyTarget___verify_purchase\"::response` mentions field `output.orderId`, which is not declared on that event (declared fields: eventPrincipal, eventResource, input.orderId, requestId, sessionId)"
            ]
        );
    }

    #[test]
    fn accepts_declared_inputs_outputs_and_correlations() {
        assert_eq!(
            findings(
                r#"formerly within 1h AgentCore::Action::"MyTarget___refund"::response{ eventResource: resource, output.refundId: context.input.orderId, input.orderId: context.input.orderId }"#
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn rejects_unknown_tools_and_inputs_the_policy_tool_lacks() {
        let f = findings(
            r#"formerly within 1h AgentCore::Action::"MyTarget___nope"::request{ eventResource: resource } && formerly within 1h AgentCore::Action::"MyTarget___refund"::request{ eventResource: resource, input.orderId: context.input.order }"#,
        );
        assert!(f[0].contains("unknown tool `nope`"), "{f:?}");
        assert!(
            f[1].contains("`context.input.order` is not an input"),
            "{f:?}"
        );
    }

    #[test]
    fn sum_and_ordering_need_integer_fields() {
        let f = findings(
            r#"exists (total: Long). (sum a for (a: Long), (t: Timepoint). where (formerly within 1h (AgentCore::Action::"MyTarget___refund"::request{ eventResource: resource, input.amount: a } && tp(t)))) == total && total >= 3"#,
        );
        assert!(
            f.iter()
                .any(|m| m.contains("`sum` needs an integer summand")),
            "{f:?}"
        );
        let f = findings(
            r#"exists (c: Long). (formerly within 1h AgentCore::Action::"MyTarget___refund"::request{ eventResource: resource, input.count: c } && c > 2 && context.input.amount > 3)"#,
        );
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(
            f[0].contains("comparison requires numeric operands"),
            "{f:?}"
        );
    }
}
