//! The whole `PolicyService` in front of a recording inner service that accepts anything and
//! answers like a hostile tool server, both driven by the fuzzer.
//!
//! Input: byte 0 picks the HTTP method, byte 1 a set of headers, byte 2 how the inner service
//! answers (JSON or an event stream; with a tools/list answer for an id nobody asked, a `tools`
//! key hidden behind an escape, a compressed body); the rest is the request body.
//! Invariants (`docs/threat-model.md`):
//! - the inner service only ever receives POST, GET or DELETE, and GET and DELETE without a
//!   body;
//! - every tools/call it receives is one the engine allows for that caller, decided from the
//!   exact text it receives (so a number rounded on the way would be caught);
//! - no reply the client receives, read as a lenient client reads JSON or an event stream,
//!   carries a tools/list answer that lists the denied tool `secret`.

#![no_main]

use std::sync::{Arc, LazyLock, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use policy_layer::auth::Identity;
use policy_layer::engine::Snapshot;
use policy_layer::model::{ModelConfig, ToolCatalog};
use policy_layer::{PolicyEngine, PolicyLayer, PolicySource};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tower::{Layer, ServiceExt};

const POLICIES: &str = r#"
permit(principal, action == AgentCore::Action::"T___ok", resource);
permit(principal, action == AgentCore::Action::"T___amount", resource)
when { context.input has amount && context.input.amount.lessThanOrEqual(decimal("1000.0")) };
forbid(principal, action == AgentCore::Action::"T___secret", resource);
"#;

const METHODS: [&str; 9] = [
    "POST", "POST", "POST", "GET", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS",
];

static ENGINE: LazyLock<PolicyEngine> = LazyLock::new(|| {
    let model = ModelConfig {
        target: "T".into(),
        gateway_id: "g".into(),
        ..ModelConfig::default()
    };
    let engine = PolicyEngine::from_sources(model, &[PolicySource::new("p.cedar", POLICIES)])
        .expect("the fixed policies load");
    engine.set_catalog(ToolCatalog::from_list(&json!({"tools": [
        {"name": "ok", "inputSchema": {"type": "object"}},
        {"name": "amount", "inputSchema": {"type": "object", "properties": {"amount": {"type": "number"}}}},
        {"name": "secret", "inputSchema": {"type": "object"}}]})));
    engine
});

static SNAPSHOT: LazyLock<Arc<Snapshot>> =
    LazyLock::new(|| ENGINE.snapshot().expect("a snapshot"));

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
});

/// What the inner service received.
#[derive(Debug)]
struct Received {
    method: Method,
    body: Bytes,
}

#[derive(Deserialize)]
struct Shape<'a> {
    method: Option<String>,
    #[serde(borrow)]
    params: Option<ParamsShape<'a>>,
}

#[derive(Deserialize)]
struct ParamsShape<'a> {
    name: Option<String>,
    #[serde(borrow)]
    arguments: Option<&'a RawValue>,
}

const LIST: &str = r#"{"tools":[{"name":"ok"},{"name":"amount"},{"name":"secret"},{"name":"s\u0065cret"}]}"#;

/// The answers of a hostile tool server to what it received, in the form `mode` picks.
fn answer(mode: u8, body: &[u8]) -> Response<Full<Bytes>> {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let messages = match value {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        other => vec![other],
    };
    let mut answers: Vec<String> = messages
        .iter()
        .filter_map(|m| {
            let id = m.get("id")?;
            let method = m.get("method")?.as_str()?;
            Some(if method == "tools/list" {
                format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{LIST}}}"#)
            } else {
                format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#)
            })
        })
        .collect();
    match mode % 4 {
        // A list answer nobody asked for, on whatever reply.
        1 => answers.push(format!(r#"{{"jsonrpc":"2.0","id":99,"result":{LIST}}}"#)),
        // The `tools` key behind an escape.
        2 => answers.push(format!(
            r#"{{"jsonrpc":"2.0","id":98,"result":{}}}"#,
            LIST.replace("\"tools\"", "\"tool\\u0073\"")
        )),
        _ => {}
    }
    let sse = mode & 0x10 != 0;
    let mut builder = Response::builder().status(if mode & 0x40 != 0 { 202 } else { 200 });
    if mode & 0x20 != 0 {
        builder = builder.header("content-encoding", "gzip");
    }
    let text = if sse {
        builder = builder.header("content-type", "text/event-stream");
        answers
            .iter()
            .map(|a| format!("event: message\ndata: {a}\n\n"))
            .collect::<String>()
    } else {
        builder = builder.header("content-type", "application/json");
        match answers.len() {
            0 => String::new(),
            1 => answers.remove(0),
            _ => format!("[{}]", answers.join(",")),
        }
    };
    builder.body(Full::new(Bytes::from(text))).expect("a response")
}

fuzz_target!(|data: &[u8]| {
    let [method, flags, mode, body @ ..] = data else {
        return;
    };
    let method = METHODS[usize::from(*method) % METHODS.len()];
    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let recorder = Arc::clone(&received);
    let mode = *mode;
    let inner = tower::service_fn(move |request: Request<Full<Bytes>>| {
        let recorder = Arc::clone(&recorder);
        async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let reply = answer(mode, &body);
            recorder.lock().expect("lock").push(Received {
                method: parts.method,
                body,
            });
            Ok::<_, std::convert::Infallible>(reply)
        }
    });
    let service = PolicyLayer::new(ENGINE.clone())
        .unauthenticated()
        .layer(inner);

    let mut request = Request::builder().method(method).uri(if flags & 0x80 != 0 {
        "/mcp?%61ccess_token=x"
    } else {
        "/mcp"
    });
    if flags & 0x01 != 0 {
        request = request.header("content-type", "application/json");
    }
    if flags & 0x02 != 0 {
        let version = if flags & 0x04 != 0 { "2026-07-28" } else { "2025-06-18" };
        request = request.header("mcp-protocol-version", version);
    }
    if flags & 0x08 != 0 {
        request = request.header("mcp-method", "tools/call");
    }
    if flags & 0x10 != 0 {
        request = request.header("mcp-name", "ok").header("mcp-name", "secret");
    }
    if flags & 0x20 != 0 {
        request = request.header("origin", "http://evil.example");
    }
    if flags & 0x40 != 0 {
        request = request.header("mcp-session-id", "s-1");
    }
    let Ok(request) = request.body(Full::new(Bytes::copy_from_slice(body))) else {
        return;
    };
    let (status, content_type, reply) = RUNTIME.block_on(async move {
        let reply = service.oneshot(request).await.expect("infallible");
        let status = reply.status();
        let content_type = reply
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = reply.into_body().collect().await.map(|b| b.to_bytes());
        (status, content_type, bytes.unwrap_or_default())
    });

    for seen in received.lock().expect("lock").iter() {
        assert!(
            [Method::POST, Method::GET, Method::DELETE].contains(&seen.method),
            "the inner service received a {} request",
            seen.method
        );
        if seen.method != Method::POST {
            assert!(seen.body.is_empty(), "a {} with a body went on", seen.method);
            continue;
        }
        check_calls(&seen.body);
    }
    let _ = status;
    check_reply(&content_type, &reply);
});

/// Every tools/call the inner service received is allowed, decided from its exact text.
fn check_calls(body: &[u8]) {
    let texts: Vec<&RawValue> = match serde_json::from_slice::<Vec<&RawValue>>(body) {
        Ok(items) => items,
        Err(_) => match serde_json::from_slice::<&RawValue>(body) {
            Ok(one) => vec![one],
            Err(e) => panic!("the inner service received a body that is not JSON: {e}"),
        },
    };
    for text in texts {
        let Ok(shape) = serde_json::from_str::<Shape<'_>>(text.get()) else {
            continue;
        };
        if shape.method.as_deref() != Some("tools/call") {
            continue;
        }
        let params = shape.params.expect("a forwarded call has params");
        let name = params.name.expect("a forwarded call names its tool");
        let outcome = SNAPSHOT
            .authorize_json(
                &Identity::anonymous(),
                &name,
                params.arguments.map(RawValue::get),
            )
            .unwrap_or_else(|e| panic!("a call that cannot be decided went on: {e}: {text}"));
        assert!(outcome.allowed(), "a denied call went on: {text}");
    }
}

/// No list answer the client can read lists `secret`.
fn check_reply(content_type: &str, reply: &[u8]) {
    let text = String::from_utf8_lossy(reply);
    let datas: Vec<String> = if content_type.starts_with("text/event-stream") {
        events(&text)
    } else {
        vec![text.into_owned()]
    };
    for data in datas {
        let Ok(value) = serde_json::from_str::<Value>(&data) else {
            continue;
        };
        let messages = match value {
            Value::Array(items) => items,
            other => vec![other],
        };
        for message in messages {
            let Some(tools) = message.pointer("/result/tools").and_then(Value::as_array) else {
                continue;
            };
            for tool in tools {
                assert_ne!(
                    tool.get("name").and_then(Value::as_str),
                    Some("secret"),
                    "a list answer reached the client unfiltered: {message}"
                );
            }
        }
    }
}

/// The data of every event, read leniently: a last event without its blank line counts too.
fn events(stream: &str) -> Vec<String> {
    let mut events = Vec::new();
    let mut data = String::new();
    for line in stream.split(['\n', '\r']) {
        if line.is_empty() {
            if !data.is_empty() {
                events.push(std::mem::take(&mut data));
            }
            continue;
        }
        if let Some(value) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(value.strip_prefix(' ').unwrap_or(value));
        }
    }
    if !data.is_empty() {
        events.push(data);
    }
    events
}
