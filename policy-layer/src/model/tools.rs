//! The upstream's tools and the Cedar types of their inputs (`docs/cedar-model.md`, "Typing"),
//! the annotation groups of each tool, and the upstream's prompts with their declared
//! arguments (which type `context.arguments` of `GetPrompt`).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::actions::ToolGroups;

/// The Cedar type a JSON Schema node maps to.
#[derive(Debug, Clone, PartialEq)]
pub enum InputType {
    /// JSON Schema `string` -> Cedar `String`.
    String,
    /// JSON Schema `integer` -> Cedar `Long`.
    Long,
    /// JSON Schema `number` -> Cedar `decimal`.
    Decimal,
    /// JSON Schema `boolean` -> Cedar `Bool`.
    Bool,
    /// JSON Schema `object` -> Cedar record; `required` attributes must be present.
    Record(Arc<RecordType>),
    /// JSON Schema `array` -> Cedar `Set` of the item type.
    Set(Box<InputType>),
    /// No usable schema: JSON types map directly.
    Untyped,
}

/// A record's declared attributes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecordType {
    /// Declared attributes with their types and whether they are required.
    pub attributes: Vec<Attribute>,
}

/// One declared record attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    /// Attribute name.
    pub name: String,
    /// Its type.
    pub ty: InputType,
    /// Whether `required` lists it.
    pub required: bool,
}

impl RecordType {
    /// The declared attribute of that name.
    #[must_use]
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.name == name)
    }
}

/// One tool as the upstream describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSchema {
    /// The upstream's tool name.
    pub name: String,
    /// The Cedar type of `context.input`.
    pub input: InputType,
    /// The tool's JSON description, as listed (kept for schema generation).
    pub definition: Value,
    /// The annotation groups its `annotations` put it in (`ReadOnlyTools`, ...).
    pub groups: ToolGroups,
}

/// One prompt as the upstream describes it (`prompts/list`).
#[derive(Debug, Clone, PartialEq)]
pub struct PromptSchema {
    /// The prompt's name.
    pub name: String,
    /// Its declared arguments, in order.
    pub arguments: Vec<PromptArgument>,
    /// The Cedar type of `context.arguments`: a record of strings, the required ones
    /// required (MCP prompt arguments are strings).
    pub input: InputType,
}

/// One declared prompt argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptArgument {
    /// Its name.
    pub name: String,
    /// Whether `required` is `true`.
    pub required: bool,
}

/// The tools known from the upstream's `tools/list` (or a file), by name, and its prompts
/// (`prompts/list`, or the file's `prompts`).
#[derive(Debug, Clone, Default)]
pub struct ToolCatalog {
    tools: HashMap<String, ToolSchema>,
    prompts: HashMap<String, PromptSchema>,
}

impl ToolCatalog {
    /// A catalog from the `tools` array of a `tools/list` result (or the result itself).
    #[must_use]
    pub fn from_list(list: &Value) -> Self {
        let tools = list
            .get("tools")
            .unwrap_or(list)
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let tools = tools
            .iter()
            .filter_map(|tool| {
                let name = tool.get("name")?.as_str()?.to_owned();
                let input = tool
                    .get("inputSchema")
                    .map_or(InputType::Untyped, input_type);
                Some((
                    name.clone(),
                    ToolSchema {
                        name,
                        input,
                        groups: ToolGroups::of_annotations(tool.get("annotations")),
                        definition: tool.clone(),
                    },
                ))
            })
            .collect();
        Self {
            tools,
            prompts: HashMap::new(),
        }
    }

    /// Adds the prompts of the `prompts` array of a `prompts/list` result (or of the array
    /// itself); a prompt without a string name is skipped.
    #[must_use]
    pub fn with_prompts(mut self, list: &Value) -> Self {
        let prompts = list
            .get("prompts")
            .unwrap_or(list)
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        for prompt in prompts {
            let Some(name) = prompt.get("name").and_then(Value::as_str) else {
                continue;
            };
            let arguments: Vec<PromptArgument> = prompt
                .get("arguments")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|argument| {
                    Some(PromptArgument {
                        name: argument.get("name")?.as_str()?.to_owned(),
                        required: argument.get("required").and_then(Value::as_bool) == Some(true),
                    })
                })
                .collect();
            let input = InputType::Record(Arc::new(RecordType {
                attributes: arguments
                    .iter()
                    .map(|a| Attribute {
                        name: a.name.clone(),
                        ty: InputType::String,
                        required: a.required,
                    })
                    .collect(),
            }));
            self.prompts.insert(
                name.to_owned(),
                PromptSchema {
                    name: name.to_owned(),
                    arguments,
                    input,
                },
            );
        }
        self
    }

    /// Adds the tools and prompts of another list page (pagination) to this catalog.
    pub fn extend(&mut self, other: Self) {
        self.tools.extend(other.tools);
        self.prompts.extend(other.prompts);
    }

    /// The prompt of that name.
    #[must_use]
    pub fn prompt(&self, name: &str) -> Option<&PromptSchema> {
        self.prompts.get(name)
    }

    /// Every prompt, in no particular order.
    pub fn prompts(&self) -> impl Iterator<Item = &PromptSchema> {
        self.prompts.values()
    }

    /// The annotation groups of `tool`: from its annotations, or MCP's defaults for a tool
    /// the catalog does not know.
    #[must_use]
    pub fn groups(&self, tool: &str) -> ToolGroups {
        self.tools
            .get(tool)
            .map_or(ToolGroups::DEFAULTS, |t| t.groups)
    }

    /// The tool of that name.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&ToolSchema> {
        self.tools.get(name)
    }

    /// Every tool, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &ToolSchema> {
        self.tools.values()
    }

    /// A tool's definition as the upstream listed it.
    #[must_use]
    pub fn definition(&self, name: &str) -> Option<&Value> {
        self.tools.get(name).map(|tool| &tool.definition)
    }

    /// Every tool's name and definition.
    pub fn definitions(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.tools
            .iter()
            .map(|(name, tool)| (name.as_str(), &tool.definition))
    }

    /// Whether no tool and no prompt is known.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty() && self.prompts.is_empty()
    }

    /// How many tools are known.
    #[must_use]
    pub fn len(&self) -> usize {
        self.tools.len()
    }
}

/// Maps a JSON Schema node to the Cedar type of `docs/cedar-model.md`.
#[must_use]
pub fn input_type(schema: &Value) -> InputType {
    let Some(obj) = schema.as_object() else {
        return InputType::Untyped;
    };
    match schema_type(obj) {
        Some("string") => InputType::String,
        Some("integer") => InputType::Long,
        Some("number") => InputType::Decimal,
        Some("boolean") => InputType::Bool,
        Some("array") => InputType::Set(Box::new(
            obj.get("items").map_or(InputType::Untyped, input_type),
        )),
        Some("object") => {
            let required: Vec<&str> = obj
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let attributes = obj
                .get("properties")
                .and_then(Value::as_object)
                .map(|props| {
                    props
                        .iter()
                        .map(|(name, prop)| Attribute {
                            name: name.clone(),
                            ty: input_type(prop),
                            required: required.contains(&name.as_str()),
                        })
                        .collect()
                })
                .unwrap_or_default();
            InputType::Record(Arc::new(RecordType { attributes }))
        }
        _ => InputType::Untyped,
    }
}

/// The single non-null `type` of a schema node (`["number","null"]` counts as `number`).
fn schema_type(obj: &Map<String, Value>) -> Option<&str> {
    match obj.get("type")? {
        Value::String(t) => Some(t),
        Value::Array(types) => {
            let mut non_null = types
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null");
            let first = non_null.next()?;
            non_null.next().is_none().then_some(first)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_refund_schema_to_cedar_types() {
        let catalog = ToolCatalog::from_list(&json!({"tools": [{
            "name": "process_refund",
            "inputSchema": {"type": "object", "properties": {
                "amount": {"type": "number"}, "customer_id": {"type": "string"},
                "count": {"type": "integer"}, "urgent": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}}},
                "required": ["amount", "customer_id"]}
        }]}));
        let tool = catalog.get("process_refund").expect("tool");
        let InputType::Record(record) = &tool.input else {
            panic!("record expected")
        };
        let amount = record.attribute("amount").expect("amount");
        assert_eq!(amount.ty, InputType::Decimal);
        assert!(amount.required);
        assert_eq!(
            record.attribute("count").expect("count").ty,
            InputType::Long
        );
        assert!(!record.attribute("urgent").expect("urgent").required);
        assert_eq!(
            record.attribute("tags").expect("tags").ty,
            InputType::Set(Box::new(InputType::String))
        );
    }

    #[test]
    fn prompts_declare_string_arguments_and_tools_their_groups() {
        let catalog = ToolCatalog::from_list(&json!({"tools": [
            {"name": "read", "annotations": {"readOnlyHint": true}},
            {"name": "plain"}
        ]}))
        .with_prompts(&json!({"prompts": [
            {"name": "summarize", "arguments": [
                {"name": "topic", "required": true}, {"name": "style"}]},
            {"description": "no name"}
        ]}));
        let prompt = catalog.prompt("summarize").expect("prompt");
        let InputType::Record(record) = &prompt.input else {
            panic!("record expected")
        };
        let topic = record.attribute("topic").expect("topic");
        assert_eq!(
            (topic.ty.clone(), topic.required),
            (InputType::String, true)
        );
        assert!(!record.attribute("style").expect("style").required);
        assert_eq!(catalog.prompts().count(), 1);
        assert!(
            catalog
                .groups("read")
                .contains(super::super::actions::ToolGroup::ReadOnly)
        );
        assert_eq!(catalog.groups("plain"), ToolGroups::DEFAULTS);
        assert_eq!(catalog.groups("unknown"), ToolGroups::DEFAULTS);
    }

    #[test]
    fn nullable_type_maps_to_its_non_null_type() {
        assert_eq!(
            input_type(&json!({"type": ["number", "null"]})),
            InputType::Decimal
        );
        assert_eq!(
            input_type(&json!({"type": ["number", "string"]})),
            InputType::Untyped
        );
    }
}
