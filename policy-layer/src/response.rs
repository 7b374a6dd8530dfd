//! What the client receives when the layer answers itself: the exact strings of SPEC
//! section 7, always with the request's own id.
//!
//! Answers are written as JSON text directly (fields in the documented order), so they are
//! byte-for-byte what AgentCore clients expect and cost one allocation each.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::Value;

use crate::config::{DenyStyle, ExceptionLevel};
use crate::engine::Outcome;

/// JSON-RPC error code of a policy denial.
pub const DENIED_CODE: i64 = -32002;
/// The fixed part of a denial message.
pub const DENIED_MESSAGE: &str =
    "Tool Execution Denied: Tool call not allowed due to policy enforcement";
/// Tool-result text when no decision could be made for a call.
pub const EVALUATION_FAILED: &str = "InternalServerException - Policy evaluation failed";
/// Tool-result text when no decision could be made for a list.
pub const LIST_EVALUATION_FAILED: &str =
    "InternalServerException - Policy evaluation failed for list tools";
/// Prefix of the tool-result text for arguments that do not fit the schema.
pub const VALIDATION_FAILED: &str = "ValidationException - Parameter validation failed";

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

/// A denied call, in the configured style. `marked`: the request's protocol (2026-07-28 and
/// later) wants `"resultType":"complete"` on results.
#[must_use]
pub fn denied(
    id: &Value,
    outcome: &Outcome,
    style: DenyStyle,
    level: ExceptionLevel,
    marked: bool,
) -> String {
    let message = format!("{DENIED_MESSAGE} [{}]", outcome.deny_reason());
    let debug = (level == ExceptionLevel::Debug).then(|| {
        serde_json::json!({
            "determiningPolicies": outcome.determining,
            "errors": outcome.errors,
        })
    });
    match style {
        DenyStyle::JsonRpcError => {
            let data = debug
                .map(|d| format!(",\"data\":{}", json(&d)))
                .unwrap_or_default();
            format!(
                r#"{{"jsonrpc":"2.0","id":{},"error":{{"code":{DENIED_CODE},"message":{}{data}}}}}"#,
                json(id),
                json(&message)
            )
        }
        DenyStyle::ToolResult => tool_error(
            id,
            &format!("AuthorizeActionException - {message}"),
            debug.as_ref(),
            marked,
        ),
    }
}

/// A tool result with `isError: true` and one text item (`_meta` carries debug details);
/// `marked` adds the `"resultType":"complete"` that protocol 2026-07-28 results carry.
#[must_use]
pub fn tool_error(id: &Value, text: &str, meta: Option<&Value>, marked: bool) -> String {
    let mut meta = meta
        .map(|m| format!(",\"_meta\":{}", json(m)))
        .unwrap_or_default();
    if marked {
        meta.push_str(r#","resultType":"complete""#);
    }
    format!(
        r#"{{"jsonrpc":"2.0","id":{},"result":{{"isError":true,"content":[{{"type":"text","text":{}}}]{meta}}}}}"#,
        json(id),
        json(&text)
    )
}

/// No decision could be made for a call: fail closed.
#[must_use]
pub fn evaluation_failed(id: &Value, detail: &str, level: ExceptionLevel, marked: bool) -> String {
    let meta = (level == ExceptionLevel::Debug).then(|| serde_json::json!({ "errors": [detail] }));
    tool_error(id, EVALUATION_FAILED, meta.as_ref(), marked)
}

/// Arguments that do not fit the tool's schema.
#[must_use]
pub fn validation_failed(id: &Value, detail: &str, marked: bool) -> String {
    tool_error(id, &format!("{VALIDATION_FAILED}: {detail}"), None, marked)
}

/// A JSON-RPC error response.
#[must_use]
pub fn jsonrpc_error(id: &Value, code: i64, message: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{},"error":{{"code":{code},"message":{}}}}}"#,
        json(id),
        json(&message)
    )
}

/// Joins answers into the body of a reply: the answer itself, or a batch array.
#[must_use]
pub fn join(answers: &[String], batch: bool) -> Bytes {
    if !batch && answers.len() == 1 {
        return Bytes::from(answers[0].clone());
    }
    let mut out = String::with_capacity(answers.iter().map(|a| a.len() + 1).sum::<usize>() + 2);
    out.push('[');
    for (i, a) in answers.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(a);
    }
    out.push(']');
    Bytes::from(out)
}

/// An HTTP response with a JSON body.
#[must_use]
pub fn http_json<B: From<Bytes>>(status: StatusCode, body: Bytes) -> Response<B> {
    let mut response = Response::new(B::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use cedar_policy::Decision;

    fn deny(determining: &[&str]) -> Outcome {
        Outcome {
            decision: Decision::Deny,
            determining: determining.iter().map(|s| (*s).to_owned()).collect(),
            errors: Vec::new(),
            shadow_matched: Vec::new(),
            shadow_flipping: Vec::new(),
        }
    }

    #[test]
    fn jsonrpc_error_denial_is_exact() {
        assert_eq!(
            denied(
                &Value::from(1),
                &deny(&[]),
                DenyStyle::JsonRpcError,
                ExceptionLevel::None,
                false
            ),
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32002,"message":"Tool Execution Denied: Tool call not allowed due to policy enforcement [Policy evaluation denied due to no determining policies]"}}"#
        );
    }

    #[test]
    fn tool_result_denial_is_exact_and_names_forbids() {
        assert_eq!(
            denied(
                &Value::from("a-1"),
                &deny(&["big", "other"]),
                DenyStyle::ToolResult,
                ExceptionLevel::None,
                false
            ),
            r#"{"jsonrpc":"2.0","id":"a-1","result":{"isError":true,"content":[{"type":"text","text":"AuthorizeActionException - Tool Execution Denied: Tool call not allowed due to policy enforcement [Policy evaluation denied due to big, other]"}]}}"#
        );
    }

    #[test]
    fn debug_level_adds_data() {
        let text = denied(
            &Value::from(2),
            &deny(&["big"]),
            DenyStyle::JsonRpcError,
            ExceptionLevel::Debug,
            false,
        );
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["error"]["data"]["determiningPolicies"][0], "big");
    }

    #[test]
    fn failures_are_tool_errors() {
        let v: Value = serde_json::from_str(&evaluation_failed(
            &Value::from(3),
            "x",
            ExceptionLevel::None,
            false,
        ))
        .expect("json");
        assert_eq!(v["result"]["content"][0]["text"], EVALUATION_FAILED);
        assert_eq!(v["result"]["isError"], true);
    }

    #[test]
    fn protocol_2026_results_are_marked_complete() {
        let text = validation_failed(&Value::from(4), "input.amount: bad", true);
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["result"]["resultType"], "complete");
        let text = denied(
            &Value::from(5),
            &deny(&[]),
            DenyStyle::ToolResult,
            ExceptionLevel::None,
            false,
        );
        assert!(
            !text.contains("resultType"),
            "older protocols keep the exact AgentCore text"
        );
    }
}
