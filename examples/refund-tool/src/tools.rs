//! The four tools of the refund scenario, served through rmcp's `ServerHandler`.
//!
//! The tool list is written out by hand (not derived with schemars) so that the `inputSchema`
//! each tool advertises is exactly the plain JSON Schema the policy layer types `context.input`
//! from: `number` for `amount`, no `format`, no nullable unions.

use std::sync::Arc;

use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
        JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig,
        Tool, ToolAnnotations,
    },
    service::RequestContext,
};
use serde_json::{Value, json};

use crate::calls::CallLog;

/// The demo tool server: every `tools/call` is recorded in the shared [`CallLog`], then run.
#[derive(Debug, Clone)]
pub struct RefundTools {
    calls: CallLog,
}

impl RefundTools {
    /// A server whose calls are appended to `calls` (shared by every session).
    pub fn new(calls: CallLog) -> Self {
        Self { calls }
    }
}

/// The tools this server offers, in the order `tools/list` returns them.
pub fn tools() -> Vec<Tool> {
    vec![
        Tool::new(
            "process_refund",
            "Refund an amount to a customer",
            schema(
                json!({
                    "amount": {"type": "number"},
                    "customer_id": {"type": "string"},
                    "reason": {"type": "string"},
                }),
                &["amount", "customer_id"],
            ),
        ),
        Tool::new(
            "get_order",
            "Look up an order",
            schema(json!({"order_id": {"type": "string"}}), &["order_id"]),
        )
        .with_annotations(ToolAnnotations::new().read_only(true)),
        Tool::new(
            "update_order",
            "Set the status of an order",
            schema(
                json!({"order_id": {"type": "string"}, "status": {"type": "string"}}),
                &["order_id", "status"],
            ),
        ),
        Tool::new(
            "delete_order",
            "Delete an order",
            schema(json!({"order_id": {"type": "string"}}), &["order_id"]),
        ),
    ]
}

fn schema(properties: Value, required: &[&str]) -> Arc<JsonObject> {
    let mut object = JsonObject::new();
    object.insert("type".into(), json!("object"));
    object.insert("properties".into(), properties);
    object.insert("required".into(), json!(required));
    Arc::new(object)
}

impl ServerHandler for RefundTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "demo-tool-server",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions("Demo refund and order tools for the mcp-policy sidecar.")
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools().into_iter().find(|tool| tool.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let arguments = request.arguments.unwrap_or_default();
        self.calls.record(&request.name, &arguments);
        let output = run(&request.name, &arguments)?;
        Ok(CallToolResult::success(vec![ContentBlock::text(output.to_string())]).into())
    }
}

/// Runs one tool. Orders are not stored: the answers are made up from the arguments.
fn run(tool: &str, args: &JsonObject) -> Result<Value, ErrorData> {
    match tool {
        "process_refund" => {
            let amount = args
                .get("amount")
                .and_then(Value::as_f64)
                .ok_or_else(|| invalid("amount must be a number"))?;
            let customer_id = string_arg(args, "customer_id")?;
            // Truncation towards zero is the documented refund id format.
            let whole = amount as i64;
            Ok(json!({
                "status": "approved",
                "refund_id": format!("REF-{customer_id}-{whole}"),
                "amount": args.get("amount"),
                "customer_id": customer_id,
            }))
        }
        "get_order" => {
            let order_id = string_arg(args, "order_id")?;
            Ok(json!({
                "order_id": order_id,
                "customer_id": "C001",
                "status": "shipped",
                "total": 129.99,
                "items": [{"sku": "SKU-1", "quantity": 1}],
            }))
        }
        "update_order" => Ok(json!({
            "order_id": string_arg(args, "order_id")?,
            "status": string_arg(args, "status")?,
            "updated": true,
        })),
        "delete_order" => Ok(json!({
            "order_id": string_arg(args, "order_id")?,
            "deleted": true,
        })),
        other => Err(invalid(format!("unknown tool: {other}"))),
    }
}

fn string_arg<'a>(args: &'a JsonObject, key: &str) -> Result<&'a str, ErrorData> {
    args.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{key} must be a string")))
}

fn invalid(message: impl Into<String>) -> ErrorData {
    ErrorData::invalid_params(message.into(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(value: Value) -> JsonObject {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn refund_id_uses_whole_amount() {
        let out = run(
            "process_refund",
            &args(json!({"amount": 500.75, "customer_id": "C001"})),
        )
        .expect("refund runs");
        assert_eq!(
            out,
            json!({"status": "approved", "refund_id": "REF-C001-500", "amount": 500.75, "customer_id": "C001"})
        );
    }

    #[test]
    fn refund_without_customer_is_invalid() {
        let err = run("process_refund", &args(json!({"amount": 5}))).expect_err("invalid");
        assert_eq!(err.message, "customer_id must be a string");
    }

    #[test]
    fn lists_four_tools_with_plain_schemas() {
        let tools = tools();
        let names: Vec<_> = tools.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(
            names,
            [
                "process_refund",
                "get_order",
                "update_order",
                "delete_order"
            ]
        );
        assert_eq!(
            Value::Object((*tools[0].input_schema).clone()),
            json!({
                "type": "object",
                "properties": {
                    "amount": {"type": "number"},
                    "customer_id": {"type": "string"},
                    "reason": {"type": "string"},
                },
                "required": ["amount", "customer_id"],
            })
        );
    }
}
