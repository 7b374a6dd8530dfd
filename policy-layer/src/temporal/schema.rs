//! The context schema extension that lets Cedar's strict validator accept rewritten temporal
//! policies: every action's context gets an optional `temporal` record with one optional
//! `Bool` per condition (`temporal?: { c0?: Bool, c1?: Bool, ... }`). Optional, because a call
//! carries only the values its tool's policies read (none at all for most tools); the
//! rewritten clauses test `has` before they read, which the validator checks.

use serde_json::{Map, Value, json};

use crate::model::schema::{GatewaySchema, SchemaError};

/// The type of `context.temporal` for conditions `0..count`, in Cedar's JSON schema format.
#[must_use]
pub fn temporal_record(count: usize) -> Value {
    let attributes: Map<String, Value> = (0..count)
        .map(|id| {
            (
                super::rewrite::context_name(id),
                json!({ "type": "Boolean", "required": false }),
            )
        })
        .collect();
    json!({ "type": "Record", "attributes": attributes, "required": false })
}

/// Adds `temporal` to the context of every action of a Cedar JSON schema (all namespaces).
/// A context given by a common type is extended where the type is declared.
pub fn extend_json(schema: &mut Value, count: usize) {
    let Some(namespaces) = schema.as_object_mut() else {
        return;
    };
    for ns in namespaces.values_mut() {
        let mut common_to_extend = Vec::new();
        if let Some(actions) = ns.get_mut("actions").and_then(Value::as_object_mut) {
            for action in actions.values_mut() {
                let Some(applies) = action.get_mut("appliesTo").and_then(Value::as_object_mut)
                else {
                    continue;
                };
                let context = applies
                    .entry("context")
                    .or_insert_with(|| json!({ "type": "Record", "attributes": {} }));
                match context.get("type").and_then(Value::as_str) {
                    Some("Record") => add_attribute(context, count),
                    Some("EntityOrCommon") => {
                        if let Some(name) = context.get("name").and_then(Value::as_str) {
                            common_to_extend.push(name.to_owned());
                        }
                    }
                    Some(name) => common_to_extend.push(name.to_owned()),
                    None => {}
                }
            }
        }
        if let Some(common) = ns.get_mut("commonTypes").and_then(Value::as_object_mut) {
            for name in common_to_extend {
                let local = name.rsplit("::").next().unwrap_or(&name).to_owned();
                if let Some(ty) = common.get_mut(&local)
                    && ty.get("type").and_then(Value::as_str) == Some("Record")
                {
                    add_attribute(ty, count);
                }
            }
        }
    }
}

fn add_attribute(record: &mut Value, count: usize) {
    if let Some(obj) = record.as_object_mut() {
        let attrs = obj.entry("attributes").or_insert_with(|| json!({}));
        if let Some(attrs) = attrs.as_object_mut() {
            attrs.insert("temporal".to_owned(), temporal_record(count));
        }
    }
}

/// `schema` with `context.temporal` declared on every action, for `count` conditions.
///
/// # Errors
/// [`SchemaError`] when the schema cannot be converted (it was valid, so this is a bug).
pub fn extend(schema: &GatewaySchema, count: usize) -> Result<GatewaySchema, SchemaError> {
    let err = |e: &dyn std::fmt::Display| SchemaError(e.to_string());
    let (fragment, _warnings) =
        cedar_policy::SchemaFragment::from_cedarschema_str(&schema.text).map_err(|e| err(&e))?;
    let mut json = fragment.to_json_value().map_err(|e| err(&e))?;
    extend_json(&mut json, count);
    let fragment = cedar_policy::SchemaFragment::from_json_value(json).map_err(|e| err(&e))?;
    let text = fragment.to_cedarschema().map_err(|e| err(&e))?;
    GatewaySchema::from_cedarschema(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::PolicySource;
    use crate::model::{ModelConfig, ToolCatalog};
    use cedar_policy::{ValidationMode, Validator};

    #[test]
    fn strict_validation_accepts_rewritten_temporal_policies() {
        let model = ModelConfig {
            target: "FundsTarget".into(),
            gateway_id: "gw".into(),
            ..ModelConfig::default()
        };
        let catalog = ToolCatalog::from_list(&json!({ "tools": [
            { "name": "transfer_funds", "inputSchema": { "type": "object",
                "properties": { "toAccount": { "type": "string" }, "amount": { "type": "integer" } },
                "required": ["toAccount", "amount"] } },
            { "name": "get_account_balance", "inputSchema": { "type": "object",
                "properties": { "customerId": { "type": "string" } }, "required": ["customerId"] } }
        ]}));
        let base = GatewaySchema::generate(&model, &catalog).expect("schema");
        let loaded = crate::temporal::load(&[PolicySource::new(
            "p.cedar",
            r#"permit (principal, action == AgentCore::Action::"FundsTarget___transfer_funds", resource == AgentCore::Gateway::"gw")
               when temporal { formerly within 1h AgentCore::Action::"FundsTarget___get_account_balance"::response{ eventResource: resource, output.accountId: context.input.toAccount } }
               when { context.input.amount <= 10000 };
               forbid (principal, action == AgentCore::Action::"FundsTarget___transfer_funds", resource == AgentCore::Gateway::"gw")
               when temporal { exists (n: Long). (count for (t: Timepoint). where (formerly within 5m (AgentCore::Action::"FundsTarget___transfer_funds"::request{ eventResource: resource } && tp(t)))) == n && n > 3 };"#,
        )])
        .expect("loads");
        let mut set = cedar_policy::PolicySet::new();
        for p in &loaded.policies.policies {
            set.add(p.policy.clone()).expect("add");
        }
        // Without the extension `context has temporal` is always false: the temporal permit
        // could never apply, and the validator says so.
        let plain = Validator::new(base.schema.clone()).validate(&set, ValidationMode::Strict);
        let warnings: Vec<String> = plain
            .validation_warnings()
            .map(ToString::to_string)
            .collect();
        assert!(
            warnings.iter().any(|w| w.contains("impossible")),
            "{warnings:?}"
        );
        let extended = extend(&base, loaded.conditions.len()).expect("extends");
        let result = Validator::new(extended.schema).validate(&set, ValidationMode::Strict);
        let errors: Vec<String> = result
            .validation_errors()
            .map(ToString::to_string)
            .chain(result.validation_warnings().map(ToString::to_string))
            .collect();
        assert!(
            result.validation_passed() && errors.is_empty(),
            "{errors:?}"
        );
    }
}
