//! The Cedar schema of a gateway, generated from the upstream's tools with
//! `cedar-policy-mcp-schema-generator` and AgentCore's type mapping (objects as records,
//! numbers as decimal), so that policies can be validated when they load (`docs/cedar-model.md`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::OnceLock;

use cedar_policy::{Schema, SchemaFragment};
use cedar_policy_mcp_schema_generator::{SchemaGenerator, SchemaGeneratorConfig};
use mcp_tools_sdk::description::ServerDescription;
use serde_json::{Value, json};

use super::actions::{McpAction, ToolGroup};
use super::entities::{ACTION_SEPARATOR, ModelConfig};
use super::tools::ToolCatalog;

/// A schema that could not be generated or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cedar schema: {0}")]
pub struct SchemaError(pub String);

fn schema_err(e: impl std::fmt::Display) -> SchemaError {
    SchemaError(e.to_string())
}

/// A Cedar schema with its text, for validation and for `policy-sidecar schema`.
#[derive(Debug, Clone)]
pub struct GatewaySchema {
    /// The schema policies are validated against.
    pub schema: Schema,
    /// The schema in Cedar schema syntax.
    pub text: String,
    /// Its cut per tool, made at first use (see [`ToolSchemas`]).
    cut: OnceLock<Result<ToolSchemas, SchemaError>>,
}

impl GatewaySchema {
    /// Reads a `.cedarschema` file's text.
    ///
    /// # Errors
    /// [`SchemaError`] when the text does not parse.
    pub fn from_cedarschema(text: &str) -> Result<Self, SchemaError> {
        let (schema, _warnings) = Schema::from_cedarschema_str(text).map_err(schema_err)?;
        Ok(Self {
            schema,
            text: text.to_owned(),
            cut: OnceLock::new(),
        })
    }

    /// Generates the schema of a gateway: the `AgentCore` principal and resource types, the
    /// action groups (`Mcp`, `CallTool`, the target, the annotation groups, extra groups), an
    /// action `<target>___<tool>` per tool, its `context.input` typed from the tool's
    /// inputSchema and its `context.system` the type `System = { now: datetime }` (the
    /// generator's `@mcp_context` annotation adds it to every action's context), and the
    /// actions of the other governed capabilities (`docs/cedar-model.md`).
    ///
    /// # Errors
    /// [`SchemaError`] when the generator rejects a tool description.
    pub fn generate(model: &ModelConfig, catalog: &ToolCatalog) -> Result<Self, SchemaError> {
        let mut tools: Vec<&super::tools::ToolSchema> = catalog.iter().collect();
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        let definitions: Vec<Value> = tools
            .iter()
            .map(|tool| {
                let mut definition = tool.definition.clone();
                if let Some(obj) = definition.as_object_mut() {
                    obj.insert(
                        "name".to_owned(),
                        Value::String(format!("{}{ACTION_SEPARATOR}{}", model.target, tool.name)),
                    );
                    // The generator's parser wants both; MCP makes only inputSchema required.
                    obj.entry("inputSchema")
                        .or_insert_with(|| json!({"type": "object"}));
                    obj.entry("description").or_insert_with(|| json!(""));
                }
                definition
            })
            .collect();
        let description = ServerDescription::from_json_str(&Value::Array(definitions).to_string())
            .map_err(schema_err)?;
        let config = SchemaGeneratorConfig::default()
            .objects_as_records(true)
            .encode_numbers_as_decimal(true);
        let mut generator = SchemaGenerator::from_cedarschema_str_with_config(&stub(model), config)
            .map_err(schema_err)?;
        generator
            .add_actions_from_server_description(&description)
            .map_err(schema_err)?;
        let text = generator.get_schema_as_str();
        // The generator puts each tool in the target only; add the extra group and annotation
        // group memberships, and the actions beyond tool calls.
        let (fragment, _warnings) =
            SchemaFragment::from_cedarschema_str(&text).map_err(schema_err)?;
        let mut json = fragment.to_json_value().map_err(schema_err)?;
        if let Some(actions) = json
            .get_mut("AgentCore")
            .and_then(|ns| ns.get_mut("actions"))
            .and_then(Value::as_object_mut)
        {
            for tool in &tools {
                let action = format!("{}{ACTION_SEPARATOR}{}", model.target, tool.name);
                let annotated: Vec<&str> = tool.groups.iter().map(ToolGroup::id).collect();
                let groups = model
                    .groups
                    .iter()
                    .filter(|(group, members)| {
                        **group != model.target && members.contains(&tool.name)
                    })
                    .map(|(group, _)| group.as_str())
                    .chain(annotated);
                if let Some(member_of) = actions
                    .get_mut(&action)
                    .and_then(|a| a.as_object_mut())
                    .map(|a| a.entry("memberOf").or_insert_with(|| json!([])))
                    .and_then(Value::as_array_mut)
                {
                    member_of.extend(groups.map(|group| json!({ "id": group })));
                }
            }
            for action in McpAction::ALL
                .into_iter()
                .filter(|a| model.govern.governs(a.capability()))
            {
                actions.insert(action.id().to_owned(), fixed_action(action, catalog));
            }
        }
        let schema = Schema::from_json_value(json.clone()).map_err(schema_err)?;
        let text = SchemaFragment::from_json_value(json)
            .ok()
            .and_then(|f| f.to_cedarschema().ok())
            .unwrap_or(text);
        Ok(Self {
            schema,
            text,
            cut: OnceLock::new(),
        })
    }

    /// The schema cut per tool of `target` (cut once, on first use).
    ///
    /// # Errors
    /// [`SchemaError`] when the schema cannot be cut.
    pub fn per_tool(&self, target: &str) -> Result<&ToolSchemas, SchemaError> {
        self.cut
            .get_or_init(|| ToolSchemas::new(self, target))
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// A gateway schema cut per tool: every entity type and action group, with one tool's action.
///
/// Cedar's validator and symbolic compiler take time in the size of the whole schema for each
/// policy they look at; with thousands of tools that is quadratic. A policy about one tool only
/// needs that tool's action, so each tool gets a schema of its own.
#[derive(Debug, Clone)]
pub struct ToolSchemas {
    /// The schema in JSON form without any tool's action or input types.
    common: Value,
    /// Action name -> (namespace, action JSON).
    actions: BTreeMap<String, (String, Value)>,
    /// The tools' own common types (`<target>___<tool>Input`, ...): name -> (namespace, JSON).
    types: BTreeMap<String, (String, Value)>,
}

impl ToolSchemas {
    /// Cuts `schema`: actions named `<target>___<tool>` are the tools.
    ///
    /// # Errors
    /// [`SchemaError`] when the schema text does not convert to JSON.
    pub fn new(schema: &GatewaySchema, target: &str) -> Result<Self, SchemaError> {
        let (fragment, _warnings) =
            SchemaFragment::from_cedarschema_str(&schema.text).map_err(schema_err)?;
        let mut common = fragment.to_json_value().map_err(schema_err)?;
        let prefix = format!("{target}{ACTION_SEPARATOR}");
        let (mut actions, mut types) = (BTreeMap::new(), BTreeMap::new());
        if let Some(namespaces) = common.as_object_mut() {
            for (namespace, body) in namespaces {
                for (section, out) in [("actions", &mut actions), ("commonTypes", &mut types)] {
                    if let Some(all) = body.get_mut(section).and_then(Value::as_object_mut) {
                        let tools: Vec<String> = all
                            .keys()
                            .filter(|name| name.starts_with(&prefix))
                            .cloned()
                            .collect();
                        for name in tools {
                            if let Some(item) = all.remove(&name) {
                                out.insert(name, (namespace.clone(), item));
                            }
                        }
                    }
                }
            }
        }
        Ok(Self {
            common,
            actions,
            types,
        })
    }

    /// The tools' action names, sorted.
    pub fn actions(&self) -> impl Iterator<Item = &str> {
        self.actions.keys().map(String::as_str)
    }

    /// The schema without any tool's action: the groups and the actions beyond tool calls.
    ///
    /// # Errors
    /// [`SchemaError`] when the cut schema does not build.
    pub fn without_tools(&self) -> Result<Schema, SchemaError> {
        Schema::from_json_value(self.common.clone()).map_err(schema_err)
    }

    /// The schema with only the action `name` among the tools.
    ///
    /// # Errors
    /// [`SchemaError`] when `name` is no tool's action, or the cut schema does not build.
    pub fn schema(&self, name: &str) -> Result<Schema, SchemaError> {
        let (namespace, action) = self
            .actions
            .get(name)
            .ok_or_else(|| SchemaError(format!("no action `{name}` in the schema")))?;
        let mut json = self.common.clone();
        insert(&mut json, namespace, "actions", name, action);
        // The types named after the action (its input record and what that nests).
        for (type_name, (namespace, ty)) in self
            .types
            .range(name.to_owned()..)
            .take_while(|(type_name, _)| type_name.starts_with(name))
        {
            insert(&mut json, namespace, "commonTypes", type_name, ty);
        }
        Schema::from_json_value(json).map_err(schema_err)
    }
}

/// Puts `item` as `name` into `section` of `namespace` in a JSON schema.
fn insert(json: &mut Value, namespace: &str, section: &str, name: &str, item: &Value) {
    if let Some(map) = json
        .get_mut(namespace)
        .and_then(Value::as_object_mut)
        .map(|ns| ns.entry(section).or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut)
    {
        map.insert(name.to_owned(), item.clone());
    }
}

/// A Cedar JSON schema type.
fn ty(name: &str) -> Value {
    match name {
        "decimal" | "ipaddr" => json!({ "type": "Extension", "name": name }),
        _ => json!({ "type": name }),
    }
}

/// A record type of `(name, type, required)` attributes.
fn record(attributes: &[(&str, Value, bool)]) -> Value {
    let attributes: serde_json::Map<String, Value> = attributes
        .iter()
        .map(|(name, ty, required)| {
            let mut ty = ty.clone();
            if let Some(obj) = ty.as_object_mut() {
                obj.insert("required".to_owned(), Value::Bool(*required));
            }
            ((*name).to_owned(), ty)
        })
        .collect();
    json!({ "type": "Record", "attributes": attributes })
}

/// The JSON schema of a fixed action: its group and its context (see `model/params.rs`).
/// `GetPrompt`'s arguments are every argument some prompt of the catalog declares, each an
/// optional `String` (which are required depends on the prompt).
fn fixed_action(action: McpAction, catalog: &ToolCatalog) -> Value {
    let context = match action {
        McpAction::ReadResource => record(&[("uri", ty("String"), true)]),
        McpAction::GetPrompt => {
            let mut names: Vec<&str> = catalog
                .prompts()
                .flat_map(|p| p.arguments.iter().map(|a| a.name.as_str()))
                .collect();
            names.sort_unstable();
            names.dedup();
            let arguments: Vec<(&str, Value, bool)> = names
                .into_iter()
                .map(|name| (name, ty("String"), false))
                .collect();
            record(&[
                ("name", ty("String"), true),
                ("arguments", record(&arguments), true),
            ])
        }
        McpAction::CreateMessage => record(&[
            ("maxTokens", ty("Long"), true),
            ("systemPrompt", ty("String"), false),
            ("includeContext", ty("String"), false),
            ("temperature", ty("decimal"), false),
            (
                "stopSequences",
                json!({ "type": "Set", "element": ty("String") }),
                false,
            ),
        ]),
        McpAction::Elicit => record(&[
            ("message", ty("String"), true),
            ("mode", ty("String"), true),
            ("url", ty("String"), false),
        ]),
        McpAction::ListRoots => record(&[]),
        McpAction::InvokeGateway => record(&[
            ("sourceIp", ty("ipaddr"), true),
            ("method", ty("String"), true),
        ]),
    };
    // Every request's context carries the time, as a tool call's does (`model/params.rs`).
    let mut context = context;
    if let Some(attributes) = context.get_mut("attributes").and_then(Value::as_object_mut) {
        attributes.insert(
            "system".to_owned(),
            json!({ "type": "EntityOrCommon", "name": "System", "required": true }),
        );
    }
    let mut out = json!({
        "appliesTo": {
            "principalTypes": ["OAuthUser", "UnauthenticatedUser"],
            "resourceTypes": ["Gateway"],
            "context": context,
        }
    });
    if action.in_mcp() {
        out["memberOf"] = json!([{ "id": "Mcp" }]);
    }
    out
}

/// The schema stub: principal and resource types and the action groups.
fn stub(model: &ModelConfig) -> String {
    let target = &model.target;
    let mut out = format!(
        r#"namespace AgentCore {{
  @mcp_principal("OAuthUser")
  entity OAuthUser = {{ "id": String }} tags String;
  @mcp_principal("UnauthenticatedUser")
  entity UnauthenticatedUser = {{ "id": String }};
  @mcp_resource("Gateway")
  entity Gateway;
  @mcp_context("system")
  type System = {{ "now": __cedar::datetime }};
  action "Mcp";
  action "CallTool" in [Action::"Mcp"];
  @mcp_action("{target}")
  action "{target}" in [Action::"CallTool"];
"#
    );
    for group in ToolGroup::ALL
        .iter()
        .map(|g| g.id())
        .chain(model.groups.keys().map(String::as_str))
        .filter(|g| *g != target)
    {
        let _ = writeln!(out, r#"  action "{group}" in [Action::"CallTool"];"#);
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> ToolCatalog {
        ToolCatalog::from_list(&json!({"tools": [
            {"name": "process_refund", "inputSchema": {"type": "object", "properties": {
                "amount": {"type": "number"}, "customer_id": {"type": "string"},
                "address": {"type": "object", "properties": {"zip": {"type": "string"}}}},
                "required": ["amount", "customer_id"]}},
            {"name": "get_order", "inputSchema": {"type": "object", "properties": {"order_id": {"type": "string"}}}}
        ]}))
    }

    #[test]
    fn a_schema_cut_per_tool_keeps_the_groups_and_one_action() {
        let model = ModelConfig {
            target: "RefundTool".into(),
            ..ModelConfig::default()
        };
        let schema = GatewaySchema::generate(&model, &catalog()).expect("schema");
        let cut = ToolSchemas::new(&schema, "RefundTool").expect("cut");
        assert_eq!(
            cut.actions().collect::<Vec<_>>(),
            ["RefundTool___get_order", "RefundTool___process_refund"]
        );
        let refund = cut.schema("RefundTool___process_refund").expect("schema");
        let actions: Vec<String> = refund
            .actions()
            .map(|a| a.id().unescaped().to_owned())
            .collect();
        assert!(actions.contains(&"RefundTool___process_refund".to_owned()));
        assert!(!actions.contains(&"RefundTool___get_order".to_owned()));
        assert!(actions.contains(&"CallTool".to_owned()), "{actions:?}");
        assert_eq!(
            refund.request_envs().count(),
            2,
            "OAuthUser and UnauthenticatedUser"
        );
        assert!(cut.schema("RefundTool___nope").is_err());
    }

    #[test]
    fn generates_agentcore_actions_with_decimal_numbers() {
        let model = ModelConfig {
            target: "RefundTool".into(),
            ..ModelConfig::default()
        };
        let schema = GatewaySchema::generate(&model, &catalog()).expect("schema");
        assert!(
            schema
                .text
                .contains(r#"action "RefundTool___process_refund""#),
            "{}",
            schema.text
        );
        assert!(schema.text.contains("decimal"), "{}", schema.text);
        assert!(
            schema.text.contains(
                r#""RefundTool___get_order" in [Action::"RefundTool", Action::"DestructiveTools", Action::"OpenWorldTools"]"#
            ),
            "in the target, and in the annotation groups of MCP's defaults: {}",
            schema.text
        );
    }

    #[test]
    fn governed_capabilities_and_annotation_groups_are_in_the_schema() {
        use crate::model::{Capability, Govern};
        let model = ModelConfig {
            target: "RefundTool".into(),
            govern: Govern::new([
                Capability::Resources,
                Capability::Prompts,
                Capability::Invoke,
            ]),
            ..ModelConfig::default()
        };
        let catalog = ToolCatalog::from_list(&json!({"tools": [
            {"name": "get_order", "annotations": {"readOnlyHint": true},
             "inputSchema": {"type": "object", "properties": {"order_id": {"type": "string"}}}}
        ]}))
        .with_prompts(
            &json!([{"name": "summarize", "arguments": [{"name": "topic", "required": true}]}]),
        );
        let schema = GatewaySchema::generate(&model, &catalog).expect("schema");
        let text = &schema.text;
        for expected in [
            r#"action "ReadResource""#,
            r#"action "GetPrompt""#,
            r#"action "InvokeGateway""#,
            r#"action "ReadOnlyTools""#,
            "ipaddr",
            "topic",
        ] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
        assert!(
            !text.contains("CreateMessage"),
            "server requests are not governed: {text}"
        );
        let policies: cedar_policy::PolicySet = r#"
            permit(principal, action == AgentCore::Action::"ReadResource", resource) when { context.uri like "docs://*" };
            permit(principal, action == AgentCore::Action::"GetPrompt", resource) when { context.arguments has topic && context.arguments.topic == "x" };
            permit(principal, action == AgentCore::Action::"InvokeGateway", resource) when { context.sourceIp.isInRange(ip("10.0.0.0/8")) };
            permit(principal, action in AgentCore::Action::"ReadOnlyTools", resource) when { context.input has order_id };
            permit(principal, action in AgentCore::Action::"Mcp", resource) when { principal has id };
        "#.parse().expect("policies");
        let result = cedar_policy::Validator::new(schema.schema.clone())
            .validate(&policies, cedar_policy::ValidationMode::Strict);
        assert!(result.validation_passed(), "{result:?}");
        let typo: cedar_policy::PolicySet =
            r#"permit(principal, action == AgentCore::Action::"ReadResource", resource) when { context.url == "x" };"#
                .parse()
                .expect("policy");
        assert!(
            !cedar_policy::Validator::new(schema.schema)
                .validate(&typo, cedar_policy::ValidationMode::Strict)
                .validation_passed()
        );
    }

    #[test]
    fn extra_groups_become_action_parents() {
        let model = ModelConfig {
            target: "RefundTool".into(),
            groups: [("ReadOnly".to_owned(), vec!["get_order".to_owned()])].into(),
            ..ModelConfig::default()
        };
        let schema = GatewaySchema::generate(&model, &catalog()).expect("schema");
        assert!(
            schema.text.contains(r#"Action::"ReadOnly""#),
            "{}",
            schema.text
        );
    }
}
