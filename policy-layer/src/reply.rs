//! What the client receives when the layer answers itself: the exact strings of
//! `docs/replies.md`, always with the request's own id, and the HTTP replies of requests
//! refused before any message in them is decided ([`Refusal`]).
//!
//! Answers are written as JSON text directly (fields in the documented order), so they are
//! byte-for-byte what AgentCore clients expect and cost one allocation each. This is the one
//! place that writes JSON-RPC errors.

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use serde_json::Value;

use crate::auth::AuthError;
use crate::config::{DenyStyle, ExceptionLevel, Mode, Settings};
use crate::engine::{AuthorizeError, Outcome};
use crate::jsonrpc::{self, ParseError};
use crate::protocol::ResultMarking;

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
/// JSON-RPC error code of a request refused by authentication, and of an unknown session.
pub const UNAUTHORIZED_CODE: i64 = -32001;
/// The message of an unknown session (what MCP servers answer with HTTP 404).
pub const SESSION_NOT_FOUND: &str = "Session not found";
/// JSON-RPC internal error: an upstream answer the layer cannot read.
pub const INTERNAL_ERROR: i64 = -32603;

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

/// The answer to one tools/call from its decision: `None` forwards the call (allowed, or
/// LOG_ONLY), `Some` is the reply made in its place (a denial, invalid arguments, or no
/// decision at all: fail closed).
#[must_use]
pub fn for_call(
    id: &Value,
    result: Result<&Outcome, &AuthorizeError>,
    settings: &Settings,
    marking: ResultMarking,
) -> Option<String> {
    if settings.mode == Mode::LogOnly {
        return None;
    }
    match result {
        Ok(outcome) if outcome.allowed() => None,
        Ok(outcome) => Some(denied(
            id,
            outcome,
            settings.deny_style,
            settings.exception_level,
            marking,
        )),
        Err(AuthorizeError::Input(e)) => Some(validation_failed(id, &e.to_string(), marking)),
        Err(AuthorizeError::Engine(e)) => Some(evaluation_failed(
            id,
            &e.to_string(),
            settings.exception_level,
            marking,
        )),
    }
}

/// The answer to a request of another governed capability (a resources/read, a prompts/get,
/// a completion, or a server's request answered in the client's place) from its decision:
/// `None` forwards it. A denial is the JSON-RPC error of a denied call (-32002, whatever the
/// deny style: only a tool call has a result that can say "error"); no decision is -32603
/// with the text of a failed call; params that do not fit are -32602 with the validation
/// text (`docs/replies.md`).
#[must_use]
pub fn for_request(
    id: &Value,
    result: Result<&Outcome, &AuthorizeError>,
    settings: &Settings,
    marking: ResultMarking,
) -> Option<String> {
    if settings.mode == Mode::LogOnly {
        return None;
    }
    match result {
        Ok(outcome) if outcome.allowed() => None,
        Ok(outcome) => Some(denied(
            id,
            outcome,
            DenyStyle::JsonRpcError,
            settings.exception_level,
            marking,
        )),
        Err(AuthorizeError::Input(e)) => Some(jsonrpc_error(
            id,
            jsonrpc::INVALID_PARAMS,
            &format!("{VALIDATION_FAILED}: {e}"),
        )),
        Err(AuthorizeError::Engine(_)) => {
            Some(jsonrpc_error(id, INTERNAL_ERROR, EVALUATION_FAILED))
        }
    }
}

/// A denied call, in the configured style.
#[must_use]
pub fn denied(
    id: &Value,
    outcome: &Outcome,
    style: DenyStyle,
    level: ExceptionLevel,
    marking: ResultMarking,
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
            marking,
        ),
    }
}

/// A tool result with `isError: true` and one text item (`_meta` carries debug details).
#[must_use]
pub fn tool_error(id: &Value, text: &str, meta: Option<&Value>, marking: ResultMarking) -> String {
    let mut meta = meta
        .map(|m| format!(",\"_meta\":{}", json(m)))
        .unwrap_or_default();
    if marking == ResultMarking::Complete {
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
pub fn evaluation_failed(
    id: &Value,
    detail: &str,
    level: ExceptionLevel,
    marking: ResultMarking,
) -> String {
    let meta = (level == ExceptionLevel::Debug).then(|| serde_json::json!({ "errors": [detail] }));
    tool_error(id, EVALUATION_FAILED, meta.as_ref(), marking)
}

/// No decision could be made for a list: fail closed.
#[must_use]
pub fn list_failed(id: &Value, marking: ResultMarking) -> String {
    tool_error(id, LIST_EVALUATION_FAILED, None, marking)
}

/// Arguments that do not fit the tool's schema.
#[must_use]
pub fn validation_failed(id: &Value, detail: &str, marking: ResultMarking) -> String {
    tool_error(id, &format!("{VALIDATION_FAILED}: {detail}"), None, marking)
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

/// Why a request was refused before any of its messages was decided; nothing of it was
/// forwarded. Each becomes one HTTP reply with a JSON-RPC error (id `null`: it concerns the
/// whole request), by [`Refusal::into_response`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// An HTTP method MCP does not use (405, with `Allow`).
    #[error("method {0} not allowed: MCP uses POST, GET and DELETE")]
    MethodNotAllowed(Method),
    /// A GET or DELETE with a body (400).
    #[error("a {0} request carries no body")]
    BodyNotAllowed(Method),
    /// A header that may appear once appeared more often (400).
    #[error("header {0} appears more than once")]
    RepeatedHeader(&'static str),
    /// A header that is not visible ASCII text (400).
    #[error("header {0} is not visible ASCII text")]
    UnreadableHeader(&'static str),
    /// `MCP-Protocol-Version` names a version the layer does not know (400).
    #[error(
        "unsupported protocol version `{0}` (supported: 2025-03-26, 2025-06-18, 2025-11-25, 2026-07-28)"
    )]
    UnsupportedVersion(String),
    /// `Origin` is present and not allowed: a page of another site (403, DNS rebinding).
    #[error("origin `{0}` is not allowed")]
    OriginNotAllowed(String),
    /// A POST whose body is not JSON (415).
    #[error("unsupported content type: expected application/json")]
    UnsupportedMediaType,
    /// A body over the limit (413).
    #[error("request body exceeds {0} bytes")]
    TooLarge(usize),
    /// A body that could not be read (400).
    #[error("request body could not be read")]
    Unreadable,
    /// Not JSON-RPC (400, -32700 or -32600).
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// `Mcp-Method` / `Mcp-Name` disagree with the body (400, -32020).
    #[error("{0}")]
    HeaderMismatch(String),
    /// Authentication failed (401, or 403 for scope and client), with where the protected
    /// resource metadata is.
    #[error("unauthorized: {error}")]
    Unauthorized {
        /// Why.
        error: AuthError,
        /// The RFC 9728 metadata URL advertised in `WWW-Authenticate`, when one is served.
        metadata_url: Option<String>,
    },
    /// An `Mcp-Session-Id` the caller did not open (404, as an unknown session).
    #[error("{SESSION_NOT_FOUND}")]
    UnknownSession,
    /// The upstream answered in a form the filter cannot read (502).
    #[error("upstream reply with content-encoding `{0}` cannot be checked by the policy")]
    UnreadableUpstream(String),
    /// The upstream answered with a message larger than the filter reads (502).
    #[error("upstream reply exceeds {0} bytes, more than the policy checks")]
    UpstreamTooLarge(usize),
    /// A request body in a content encoding (415): what was decided must be what the
    /// upstream reads.
    #[error("unsupported content encoding `{0}`: send the body uncompressed")]
    UnsupportedEncoding(String),
    /// `InvokeGateway` denied the request, could not decide it, or the client's address is
    /// unknown (403, -32002): the message says which.
    #[error("{0}")]
    InvocationRefused(String),
    /// A tools/call without `x-amzn-bedrock-agentcore-policy-session-id` while temporal
    /// policies are loaded (400; AgentCore's validation error).
    #[error(
        "ValidationException - x-amzn-bedrock-agentcore-policy-session-id is required: session-aware (temporal) policies are in force"
    )]
    PolicySessionRequired,
    /// A session header that is not 1 to 128 of `[A-Za-z0-9-]`, or sent twice (400; the
    /// value is never echoed).
    #[error(
        "ValidationException - x-amzn-bedrock-agentcore-policy-session-id must be 1 to 128 characters of A-Z, a-z, 0-9 and -"
    )]
    BadPolicySession,
    /// The policy session can no longer be decided (409, AgentCore's `ConflictException`):
    /// the client starts a new session.
    #[error("ConflictException - the policy session is no longer valid ({0}); start a new session")]
    PolicySessionInvalid(&'static str),
    /// The session store could not answer (503): a temporal decision cannot be made.
    #[error("the policy session store is unavailable; try again")]
    PolicySessionUnavailable,
}

impl Refusal {
    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::OriginNotAllowed(_) | Self::InvocationRefused(_) => StatusCode::FORBIDDEN,
            Self::UnsupportedMediaType | Self::UnsupportedEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized { error, .. } => error.status(),
            Self::UnknownSession => StatusCode::NOT_FOUND,
            Self::UnreadableUpstream(_) | Self::UpstreamTooLarge(_) => StatusCode::BAD_GATEWAY,
            Self::PolicySessionInvalid(_) => StatusCode::CONFLICT,
            Self::PolicySessionUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::PolicySessionRequired | Self::BadPolicySession => StatusCode::BAD_REQUEST,
            Self::BodyNotAllowed(_)
            | Self::RepeatedHeader(_)
            | Self::UnreadableHeader(_)
            | Self::UnsupportedVersion(_)
            | Self::Unreadable
            | Self::Parse(_)
            | Self::HeaderMismatch(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The JSON-RPC error code.
    #[must_use]
    pub fn code(&self) -> i64 {
        match self {
            Self::Unreadable => jsonrpc::PARSE_ERROR,
            Self::Parse(e) => e.code(),
            Self::HeaderMismatch(_) => jsonrpc::HEADER_MISMATCH,
            Self::Unauthorized { .. } | Self::UnknownSession => UNAUTHORIZED_CODE,
            Self::UnreadableUpstream(_)
            | Self::UpstreamTooLarge(_)
            | Self::PolicySessionUnavailable => INTERNAL_ERROR,
            Self::InvocationRefused(_) => DENIED_CODE,
            _ => jsonrpc::INVALID_REQUEST,
        }
    }

    /// The HTTP reply.
    #[must_use]
    pub fn into_response<B: From<Bytes>>(self) -> Response<B> {
        let body = jsonrpc_error(&Value::Null, self.code(), &self.to_string());
        let mut response = http_json::<B>(self.status(), Bytes::from(body));
        let headers = response.headers_mut();
        match &self {
            Self::MethodNotAllowed(_) => {
                headers.insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
            }
            Self::Unauthorized {
                error,
                metadata_url,
            } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    error.challenge(metadata_url.as_deref()),
                );
            }
            _ => {}
        }
        response
    }
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
                ResultMarking::Unmarked
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
                ResultMarking::Unmarked
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
            ResultMarking::Unmarked,
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
            ResultMarking::Unmarked,
        ))
        .expect("json");
        assert_eq!(v["result"]["content"][0]["text"], EVALUATION_FAILED);
        assert_eq!(v["result"]["isError"], true);
    }

    #[test]
    fn protocol_2026_results_are_marked_complete() {
        let text = validation_failed(
            &Value::from(4),
            "input.amount: bad",
            ResultMarking::Complete,
        );
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["result"]["resultType"], "complete");
        let text = denied(
            &Value::from(5),
            &deny(&[]),
            DenyStyle::ToolResult,
            ExceptionLevel::None,
            ResultMarking::Unmarked,
        );
        assert!(
            !text.contains("resultType"),
            "older protocols keep the exact AgentCore text"
        );
    }

    #[test]
    fn refusals_carry_status_code_and_headers() {
        let reply: Response<Bytes> = Refusal::MethodNotAllowed(Method::PUT).into_response();
        assert_eq!(reply.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(reply.headers()[header::ALLOW], "GET, POST, DELETE");
        assert_eq!(
            reply.body().as_ref(),
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"method PUT not allowed: MCP uses POST, GET and DELETE"}}"#
        );
        let reply: Response<Bytes> = Refusal::Unauthorized {
            error: AuthError::MissingToken,
            metadata_url: Some("http://h/.well-known/oauth-protected-resource".into()),
        }
        .into_response();
        assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);
        assert!(
            reply.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .expect("ascii")
                .ends_with(r#"resource_metadata="http://h/.well-known/oauth-protected-resource""#)
        );
        assert_eq!(Refusal::UnknownSession.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            Refusal::Parse(ParseError::Json("x".into())).code(),
            jsonrpc::PARSE_ERROR
        );
    }

    #[test]
    fn other_requests_are_answered_with_json_rpc_errors_in_any_style() {
        let mut settings = Settings {
            deny_style: DenyStyle::ToolResult,
            ..Settings::default()
        };
        let id = Value::from("r-1");
        let denial =
            for_request(&id, Ok(&deny(&[])), &settings, ResultMarking::Unmarked).expect("answer");
        assert_eq!(
            denial,
            r#"{"jsonrpc":"2.0","id":"r-1","error":{"code":-32002,"message":"Tool Execution Denied: Tool call not allowed due to policy enforcement [Policy evaluation denied due to no determining policies]"}}"#
        );
        let failed = AuthorizeError::Engine(crate::engine::EngineError::NoPolicySet);
        assert_eq!(
            for_request(&id, Err(&failed), &settings, ResultMarking::Unmarked).expect("answer"),
            r#"{"jsonrpc":"2.0","id":"r-1","error":{"code":-32603,"message":"InternalServerException - Policy evaluation failed"}}"#
        );
        settings.mode = Mode::LogOnly;
        assert!(for_request(&id, Ok(&deny(&[])), &settings, ResultMarking::Unmarked).is_none());
        let reply: Response<Bytes> =
            Refusal::InvocationRefused("Gateway invocation not allowed: x".into()).into_response();
        assert_eq!(reply.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            reply.body().as_ref(),
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32002,"message":"Gateway invocation not allowed: x"}}"#
        );
    }

    #[test]
    fn log_only_forwards_every_call_and_enforce_answers_denials() {
        let outcome = deny(&[]);
        let mut settings = Settings::default();
        let id = Value::from(1);
        assert!(for_call(&id, Ok(&outcome), &settings, ResultMarking::Unmarked).is_some());
        settings.mode = Mode::LogOnly;
        assert!(for_call(&id, Ok(&outcome), &settings, ResultMarking::Unmarked).is_none());
        settings.mode = Mode::Enforce;
        let failed = AuthorizeError::Engine(crate::engine::EngineError::NoPolicySet);
        let text = for_call(&id, Err(&failed), &settings, ResultMarking::Unmarked).expect("answer");
        assert!(text.contains(EVALUATION_FAILED), "{text}");
    }
}
