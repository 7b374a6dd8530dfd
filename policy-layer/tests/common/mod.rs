//! A real MCP tool server (axum) for the layer's end-to-end tests: it answers `tools/list`
//! and `tools/call` in JSON or SSE and records every call it receives; and the policy engine
//! of the refund scenarios that the layer wraps around it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use policy_layer::limit::{LimitSet, Limits, RateLimitConfig};
use policy_layer::model::{ModelConfig, ToolCatalog};
use policy_layer::state::{MemorySettings, OnError, Store};
use policy_layer::{PolicyEngine, PolicySource};
use serde_json::{Value, json};

/// The gateway the refund tool is a target of.
/// The session the test upstream opens on `initialize`.
pub const SESSION: &str = "session-7";
pub const GATEWAY: &str = "arn:aws:bedrock-agentcore:us-west-2:123456789012:gateway/refund-gateway";

/// What the upstream received.
#[derive(Clone, Default)]
pub struct Recorder {
    pub calls: Arc<Mutex<Vec<Value>>>,
    pub bodies: Arc<Mutex<Vec<Value>>>,
}

impl Recorder {
    pub fn calls(&self) -> Vec<Value> {
        self.calls.lock().expect("lock").clone()
    }
}

#[derive(Clone)]
pub struct Upstream {
    pub recorder: Recorder,
    pub sse: bool,
}

pub fn tools() -> Value {
    json!([
        {"name": "process_refund", "description": "Process a customer refund",
         "inputSchema": {"type": "object", "properties": {
            "amount": {"type": "number"}, "customer_id": {"type": "string"}, "reason": {"type": "string"}},
            "required": ["amount", "customer_id"]}},
        {"name": "get_order", "inputSchema": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}},
        {"name": "update_order", "inputSchema": {"type": "object", "properties": {"order_id": {"type": "string"}, "status": {"type": "string"}}}},
        {"name": "delete_order", "inputSchema": {"type": "object", "properties": {"order_id": {"type": "string"}}}}
    ])
}

/// An engine for the `RefundTool` target of [`GATEWAY`] with `policies` as
/// `policies/refund.cedar`, and the catalog of [`tools`].
pub fn refund_engine(policies: &str) -> PolicyEngine {
    let model = ModelConfig {
        target: "RefundTool".into(),
        gateway_id: GATEWAY.into(),
        ..ModelConfig::default()
    };
    let engine = PolicyEngine::from_sources(
        model,
        &[PolicySource::new("policies/refund.cedar", policies)],
    )
    .expect("policies");
    engine.set_catalog(ToolCatalog::from_list(&json!({"tools": tools()})));
    engine
}

fn answer(message: &Value) -> Option<Value> {
    let id = message.get("id")?.clone();
    let method = message.get("method")?.as_str()?;
    let result = match method {
        "tools/list" => json!({"tools": tools(), "nextCursor": "page-2"}),
        "tools/call" => {
            let name = message["params"]["name"].as_str().unwrap_or_default();
            let text = format!("{name} done with {}", message["params"]["arguments"]);
            json!({"isError": false, "content": [{"type": "text", "text": text}]})
        }
        "initialize" => {
            json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "test", "version": "1"}})
        }
        _ => json!({}),
    };
    Some(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

async fn mcp(State(up): State<Upstream>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "upstream got bad json").into_response();
    };
    up.recorder.bodies.lock().expect("lock").push(value.clone());
    let messages = match &value {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    };
    for m in &messages {
        if m.get("method").and_then(Value::as_str) == Some("tools/call") {
            up.recorder
                .calls
                .lock()
                .expect("lock")
                .push(m["params"].clone());
        }
    }
    let answers: Vec<Value> = messages.iter().filter_map(answer).collect();
    if answers.is_empty() {
        return StatusCode::ACCEPTED.into_response();
    }
    let _ = headers;
    // An initialize opens a session, as a stateful MCP server does.
    let session = messages
        .iter()
        .any(|m| m.get("method").and_then(Value::as_str) == Some("initialize"))
        .then_some([(HeaderName::from_static("mcp-session-id"), SESSION)]);
    if up.sse {
        let mut text = String::from("id: prime\ndata:\n\n: a comment\n\n");
        for a in &answers {
            text.push_str(&format!("event: message\ndata: {a}\n\n"));
        }
        (session, [(header::CONTENT_TYPE, "text/event-stream")], text).into_response()
    } else {
        let body = if value.is_array() {
            Value::Array(answers)
        } else {
            answers[0].clone()
        };
        (
            session,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

pub fn upstream_router(sse: bool) -> (Router, Recorder) {
    let recorder = Recorder::default();
    let router = Router::new()
        .route("/mcp", routing::post(mcp))
        .with_state(Upstream {
            recorder: recorder.clone(),
            sse,
        });
    (router, recorder)
}

pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// The JSON-RPC messages of an SSE reply, in order.
    pub fn sse_messages(&self) -> Vec<Value> {
        self.text
            .split("\n\n")
            .filter_map(|event| {
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim)
                    .collect();
                let data = data.join("\n");
                (!data.is_empty()).then(|| serde_json::from_str(&data).expect("event data is JSON"))
            })
            .collect()
    }
}

pub async fn post_raw(
    addr: SocketAddr,
    content_type: &str,
    body: impl Into<Bytes>,
    extra: &[(&str, &str)],
) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let mut req = axum::http::Request::post(format!("http://{addr}/mcp"))
        .header(header::CONTENT_TYPE, content_type)
        .header(header::ACCEPT, "application/json, text/event-stream");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let res = client
        .request(req.body(Body::from(body.into())).expect("request"))
        .await
        .expect("response");
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    Reply {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub async fn post(addr: SocketAddr, body: &Value) -> Reply {
    post_raw(addr, "application/json", body.to_string(), &[]).await
}

pub fn call(id: Value, tool: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}})
}

/// The limits of `[[rate_limit]]` TOML.
pub fn limit_set(text: &str) -> LimitSet {
    #[derive(serde::Deserialize)]
    struct File {
        rate_limit: Vec<RateLimitConfig>,
    }
    let file: File = toml::from_str(text).expect("toml");
    LimitSet::from_config(&file.rate_limit).expect("valid limits")
}

/// Rate limits from `[[rate_limit]]` TOML, counted in memory.
pub fn limits(text: &str, store: MemorySettings, on_error: OnError) -> Limits {
    Limits::new(limit_set(text), Store::memory(store), on_error)
}
