//! The real `policy-sidecar` exporting its spans over OTLP/HTTP to a receiver written here
//! (`docs/telemetry.md`): the client's W3C trace continues through the sidecar to the upstream, and
//! a collector that is down changes nothing for the client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use e2e::{McpClient, Sidecar, Workspace, eventually, free_addr, is_denied, is_tool_result, serve};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::{Value, json};

/// The `traceparent` every `McpClient` request carries.
const CLIENT_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN_ID: &str = "00f067aa0ba902b7";

const POLICIES: &str = r#"
@id("orders_read")
permit(principal, action == AgentCore::Action::"RefundTool___get_order", resource);

@id("everyone_deletes")
permit(principal, action == AgentCore::Action::"RefundTool___delete_order", resource);

@id("no_deletes")
forbid(principal, action == AgentCore::Action::"RefundTool___delete_order", resource);
"#;

/// A span as the receiver got it, ids in hex.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&AnyValue>) -> String {
    match value {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attributes(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
            (kv.key.clone(), text(value))
        })
        .collect()
}

type Spans = Arc<Mutex<Vec<Received>>>;

/// `POST /v1/traces`: decodes `ExportTraceServiceRequest` and keeps every span.
async fn receive(
    State(spans): State<Spans>,
    body: Bytes,
) -> ([(&'static str, &'static str); 1], Vec<u8>) {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
    let mut out = spans.lock().expect("lock");
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                out.push(Received {
                    service: service.clone(),
                    name: span.name.clone(),
                    kind: span.kind,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: attributes(&span.attributes),
                });
            }
        }
    }
    (
        [("content-type", "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

/// A local OTLP/HTTP receiver: its base URL and the spans it got.
async fn otlp_receiver() -> (String, Spans) {
    let spans = Spans::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(receive))
        .with_state(Arc::clone(&spans));
    (serve(app).await, spans)
}

type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// An MCP upstream that answers tools/call and records each call's tool and `traceparent`.
async fn recording_upstream() -> (String, Seen) {
    let seen = Seen::default();
    let app = axum::Router::new()
        .route(
            "/mcp",
            post(
                |State(seen): State<Seen>, headers: HeaderMap, body: String| async move {
                    let request: Value = serde_json::from_str(&body).unwrap_or_default();
                    let tool = request["params"]["name"].as_str().unwrap_or_default();
                    let traceparent = headers
                        .get("traceparent")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    seen.lock()
                        .expect("lock")
                        .push((tool.to_owned(), traceparent));
                    let answer = json!({"jsonrpc": "2.0", "id": request["id"],
                        "result": {"isError": false, "content": [{"type": "text", "text": "done"}]}});
                    ([("content-type", "application/json")], answer.to_string())
                },
            ),
        )
        .with_state(Arc::clone(&seen));
    (format!("{}/mcp", serve(app).await), seen)
}

/// A ready sidecar with `POLICIES` in front of `upstream`, exporting its spans to `collector`,
/// with the extra environment `env`; and the workspace of its config, to keep while it runs.
async fn start_sidecar(
    upstream: &str,
    collector: &str,
    env: &[(&str, &str)],
) -> (Workspace, Sidecar) {
    let ws = Workspace::new();
    ws.policy("orders.cedar", POLICIES);
    let mut all = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", collector)];
    all.extend_from_slice(env);
    let sidecar = Sidecar::start_ready(&ws.config(upstream, "schema = \"none\""), &all).await;
    (ws, sidecar)
}

/// A ready sidecar in front of a recording upstream, exporting its spans to a local receiver.
struct Exporting {
    /// The spans the receiver got.
    spans: Spans,
    /// What the upstream got.
    seen: Seen,
    /// The sidecar.
    sidecar: Sidecar,
    /// Its config and policies.
    _ws: Workspace,
}

impl Exporting {
    /// Starts the receiver, the upstream and the sidecar, run with the extra environment `env`.
    async fn start(env: &[(&str, &str)]) -> Self {
        let (collector, spans) = otlp_receiver().await;
        let (upstream, seen) = recording_upstream().await;
        let (ws, sidecar) = start_sidecar(&upstream, &collector, env).await;
        Self {
            spans,
            seen,
            sidecar,
            _ws: ws,
        }
    }
}

fn order() -> Value {
    json!({"order_id": "O1"})
}

fn spans_named(spans: &Spans, name: &str) -> Vec<Received> {
    spans
        .lock()
        .expect("lock")
        .iter()
        .filter(|s| s.name == name)
        .cloned()
        .collect()
}

/// Checks what the receiver got for an allowed `get_order` and a denied `delete_order` call
/// made with the client's `traceparent`, and what the upstream got.
fn assert_trace(spans: &Spans, seen: &Seen) {
    let authorize = spans_named(spans, "AuthorizeAction");
    assert_eq!(authorize.len(), 2, "{authorize:#?}");
    let by_tool = |tool: &str| {
        authorize
            .iter()
            .find(|s| s.attributes.get("gen_ai.tool.name").map(String::as_str) == Some(tool))
            .unwrap_or_else(|| panic!("an AuthorizeAction span for {tool}: {authorize:#?}"))
            .clone()
    };
    let allowed = by_tool("get_order");
    let denied = by_tool("delete_order");
    assert_eq!(allowed.attributes["policy.decision"], "ALLOW");
    assert_eq!(
        allowed.attributes["policy.determining_policies"],
        "orders_read"
    );
    assert_eq!(denied.attributes["policy.decision"], "DENY");
    assert_eq!(
        denied.attributes["policy.reason"],
        "Policy evaluation denied due to no_deletes"
    );
    assert_eq!(
        denied.attributes["policy.action"],
        "RefundTool___delete_order"
    );
    assert_eq!(denied.attributes["policy.engine"], "RefundPolicyEngine");
    assert_eq!(denied.attributes["policy.mode"], "ENFORCE");

    for (tool, span) in [("get_order", &allowed), ("delete_order", &denied)] {
        assert_eq!(span.service, "policy-sidecar");
        assert_eq!(span.trace_id, CLIENT_TRACE_ID, "{tool}: the client's trace");
        let requests = spans_named(spans, &format!("tools/call {tool}"));
        let [request] = requests.as_slice() else {
            panic!("one request span for {tool}: {requests:#?}");
        };
        assert_eq!(
            span.parent_span_id, request.span_id,
            "{tool}: child of the request span"
        );
        assert_eq!(request.trace_id, CLIENT_TRACE_ID);
        assert_eq!(
            request.parent_span_id, CLIENT_SPAN_ID,
            "{tool}: child of the client's span"
        );
        assert_eq!(request.kind, SpanKind::Server as i32);
        assert_eq!(request.attributes["mcp.method.name"], "tools/call");
    }

    // Only the allowed call reached the upstream, carrying the trace with the request span as
    // its parent.
    let request_span = &spans_named(spans, "tools/call get_order")[0];
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(
        seen,
        [(
            "get_order".to_owned(),
            Some(format!("00-{CLIENT_TRACE_ID}-{}-01", request_span.span_id))
        )]
    );
}

#[tokio::test]
async fn exports_policy_spans_in_the_clients_trace_and_propagates_it_upstream() {
    let run = Exporting::start(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;

    let mut client = McpClient::new(&run.sidecar.url);
    let allowed = client.call("get_order", order()).await;
    assert!(is_tool_result(&allowed), "{allowed:?}");
    let denied = client.call("delete_order", order()).await;
    assert!(is_denied(&denied), "{denied:?}");

    eventually(
        "both AuthorizeAction spans and their request spans exported",
        || {
            let names: Vec<String> = run
                .spans
                .lock()
                .expect("lock")
                .iter()
                .map(|s| s.name.clone())
                .collect();
            let count = |n: &str| names.iter().filter(|x| *x == n).count();
            std::future::ready(
                count("AuthorizeAction") >= 2
                    && count("tools/call get_order") >= 1
                    && count("tools/call delete_order") >= 1,
            )
        },
    )
    .await;
    assert_trace(&run.spans, &run.seen);
}

#[tokio::test]
async fn sigterm_flushes_the_spans_still_queued() {
    let run = Exporting::start(&[
        // Nothing is exported before shutdown by the schedule.
        ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
    ])
    .await;
    let mut client = McpClient::new(&run.sidecar.url);
    assert!(is_tool_result(&client.call("get_order", order()).await));
    assert!(is_denied(&client.call("delete_order", order()).await));

    run.sidecar.proc.terminate();
    let status = run.sidecar.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0));
    assert_trace(&run.spans, &run.seen);
}

async fn calls_succeed_with_a_dead_collector(protocol: &str) {
    let (upstream, seen) = recording_upstream().await;
    let collector = format!("http://{}", free_addr());
    let (_ws, mut sidecar) = start_sidecar(
        &upstream,
        &collector,
        &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("OTEL_BSP_SCHEDULE_DELAY", "10"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "16"),
        ],
    )
    .await;

    let mut client = McpClient::new(&sidecar.url);
    // More spans than the queue holds, while exports keep failing.
    for round in 0..30 {
        let allowed = client.call("get_order", order()).await;
        assert!(is_tool_result(&allowed), "round {round}: {allowed:?}");
        let denied = client.call("delete_order", order()).await;
        assert!(is_denied(&denied), "round {round}: {denied:?}");
    }
    assert_eq!(seen.lock().expect("lock").len(), 30);
    assert!(sidecar.proc.is_running(), "{:?}", sidecar.proc.stderr());
    assert_eq!(sidecar.admin_get("/readyz").await.0, 200);
    let last = client.call("get_order", order()).await;
    assert!(is_tool_result(&last), "{last:?}");
}

#[tokio::test]
async fn dead_http_collector_leaves_calls_succeeding() {
    calls_succeed_with_a_dead_collector("http/protobuf").await;
}

#[tokio::test]
async fn dead_grpc_collector_leaves_calls_succeeding() {
    calls_succeed_with_a_dead_collector("grpc").await;
}

#[tokio::test]
async fn unsupported_otlp_protocol_is_a_config_error() {
    let ws = Workspace::new();
    ws.policy("orders.cedar", POLICIES);
    let config = ws.config("http://127.0.0.1:9/mcp", "schema = \"none\"");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(e2e::bin("policy-sidecar"))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "zipkin")
            .output()
            .expect("run policy-sidecar")
    })
    .await
    .expect("join");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL: unsupported protocol `zipkin`"),
        "{stderr}"
    );
}
