//! The layer's spans as an OpenTelemetry exporter sees them (`docs/telemetry.md`): a real axum MCP
//! server wrapped by `PolicyLayer`, called in process, with `tracing-opentelemetry` over the
//! SDK's in-memory exporter. Each test installs its own subscriber for its own thread.

mod common;

use axum::Router;
use axum::body::Body;
use common::{SESSION, call, refund_engine, upstream_router};
use http_body_util::BodyExt;
use opentelemetry::trace::{SpanId, SpanKind, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use policy_layer::{Mode, PolicyLayer, Settings};
use serde_json::{Value, json};
use tower::ServiceExt;
use tracing_subscriber::layer::SubscriberExt;

const POLICIES: &str = r#"
@id("refund_limit")
permit(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
when { ((context.input).amount).lessThan(decimal("1000.0")) };

@id("read_orders")
permit(principal, action == AgentCore::Action::"RefundTool___get_order", resource);

@id("agents_update_orders")
permit(principal is AgentCore::OAuthUser, action == AgentCore::Action::"RefundTool___update_order", resource)
when { principal.hasTag("role") && principal.getTag("role") == "order-agent" };

@id("everyone_deletes")
permit(principal, action == AgentCore::Action::"RefundTool___delete_order", resource);

@id("no_deletes")
forbid(principal, action == AgentCore::Action::"RefundTool___delete_order", resource);

@id("shadow_forbid_over_100") @enforcement("LOG_ONLY")
forbid(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
when { context.input.amount.greaterThan(decimal("100.0")) };
"#;

/// A subscriber exporting to memory, and the exporter to read the finished spans from.
struct Capture {
    exporter: InMemorySpanExporter,
    provider: SdkTracerProvider,
}

impl Capture {
    fn new() -> Self {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        Self { exporter, provider }
    }

    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + 'static {
        let tracer = self.provider.tracer("policy-layer-test");
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer))
    }

    fn spans(&self) -> Vec<SpanData> {
        self.provider.force_flush().expect("flush");
        self.exporter.get_finished_spans().expect("spans")
    }
}

fn app(mode: Mode, sse: bool) -> Router {
    let settings = Settings {
        mode,
        engine_name: "RefundPolicyEngine".into(),
        ..Settings::default()
    };
    let layer = PolicyLayer::new(refund_engine(POLICIES))
        .settings(settings)
        .unauthenticated();
    let (router, _recorder) = upstream_router(sse);
    router.layer(layer)
}

/// Sends `body` through the layer with the capture's subscriber installed, reads the whole
/// reply and drops it, so every span of the request has ended.
fn exchange(capture: &Capture, app: Router, body: &Value) -> String {
    exchange_with(capture, app, body, &[])
}

/// [`exchange`] with `extra` headers on the request.
fn exchange_with(capture: &Capture, app: Router, body: &Value, extra: &[(&str, &str)]) -> String {
    // The session is opened first, as a client does: the layer serves it only to its opener.
    let initialize = axum::http::Request::post("/mcp")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(Body::from(
            json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}}).to_string(),
        ))
        .expect("request");
    let mut request = axum::http::Request::post("/mcp")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", SESSION)
        .header("mcp-protocol-version", "2025-06-18");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let request = request.body(Body::from(body.to_string())).expect("request");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    tracing::subscriber::with_default(capture.subscriber(), || {
        runtime.block_on(async move {
            let opened = app.clone().oneshot(initialize).await.expect("infallible");
            assert_eq!(opened.headers()["mcp-session-id"], SESSION);
            let reply = app.oneshot(request).await.expect("infallible");
            let bytes = reply.into_body().collect().await.expect("body").to_bytes();
            String::from_utf8_lossy(&bytes).into_owned()
        })
    })
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

fn attr_is(span: &SpanData, key: &str, expected: &str) {
    assert_eq!(
        attr(span, key).as_deref(),
        Some(expected),
        "attribute {key} of span {}: {:?}",
        span.name,
        span.attributes
    );
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn only<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found = named(spans, name);
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
    assert_eq!(found.len(), 1, "one span {name} among {names:?}");
    found[0]
}

/// `child` is a child of `parent` in the same trace.
fn assert_parent(child: &SpanData, parent: &SpanData) {
    assert_eq!(
        child.span_context.trace_id(),
        parent.span_context.trace_id(),
        "{} is in the trace of {}",
        child.name,
        parent.name
    );
    assert_eq!(
        child.parent_span_id,
        parent.span_context.span_id(),
        "{} is a child of {}",
        child.name,
        parent.name
    );
}

fn refund(id: i64, amount: f64) -> Value {
    call(
        Value::from(id),
        "process_refund",
        json!({"amount": amount, "customer_id": "C001"}),
    )
}

#[test]
fn allowed_call_is_an_authorize_action_span_under_the_request_span() {
    let capture = Capture::new();
    let reply = exchange(&capture, app(Mode::Enforce, false), &refund(7, 50.0));
    assert!(reply.contains(r#""isError":false"#), "{reply}");

    let spans = capture.spans();
    let request = only(&spans, "tools/call process_refund");
    let authorize = only(&spans, "AuthorizeAction");
    assert_eq!(
        request.parent_span_id,
        SpanId::INVALID,
        "the request is a root"
    );
    assert_eq!(request.span_kind, SpanKind::Server);
    assert_parent(authorize, request);
    assert_eq!(authorize.span_kind, SpanKind::Internal);

    attr_is(request, "mcp.method.name", "tools/call");
    attr_is(request, "jsonrpc.request.id", "7");
    attr_is(request, "gen_ai.tool.name", "process_refund");
    attr_is(request, "mcp.session.id", "session-7");
    attr_is(request, "mcp.protocol.version", "2025-06-18");

    attr_is(authorize, "policy.engine", "RefundPolicyEngine");
    attr_is(authorize, "policy.mode", "ENFORCE");
    attr_is(authorize, "policy.decision", "ALLOW");
    attr_is(authorize, "policy.determining_policies", "refund_limit");
    attr_is(authorize, "gen_ai.tool.name", "process_refund");
    attr_is(authorize, "policy.action", "RefundTool___process_refund");
    assert_eq!(
        attr(authorize, "policy.reason"),
        None,
        "no reason on an allow"
    );
    assert_eq!(attr(authorize, "policy.log_only.matched_policies"), None);
}

#[test]
fn shadow_policy_that_would_flip_an_allow_is_on_the_span() {
    let capture = Capture::new();
    let reply = exchange(&capture, app(Mode::Enforce, false), &refund(1, 500.0));
    assert!(
        reply.contains(r#""isError":false"#),
        "a shadow forbid does not deny: {reply}"
    );

    let spans = capture.spans();
    let authorize = only(&spans, "AuthorizeAction");
    attr_is(authorize, "policy.decision", "ALLOW");
    attr_is(
        authorize,
        "policy.log_only.matched_policies",
        "shadow_forbid_over_100",
    );
    attr_is(
        authorize,
        "policy.log_only.flipping_policies",
        "shadow_forbid_over_100",
    );
}

#[test]
fn denied_calls_record_decision_reason_and_determining_policies() {
    let capture = Capture::new();
    let batch = json!([
        call(json!("del"), "delete_order", json!({"order_id": "O1"})),
        refund(2, 5000.0),
    ]);
    let reply = exchange(&capture, app(Mode::Enforce, false), &batch);
    assert!(reply.contains("-32002"), "{reply}");

    let spans = capture.spans();
    let request = only(&spans, "tools/call delete_order");
    attr_is(request, "jsonrpc.request.id", "\"del\"");
    let authorize = named(&spans, "AuthorizeAction");
    assert_eq!(authorize.len(), 2, "one AuthorizeAction per call");
    for span in &authorize {
        assert_parent(span, request);
        attr_is(span, "policy.decision", "DENY");
        attr_is(span, "policy.mode", "ENFORCE");
    }
    let by_tool = |tool: &str| {
        *authorize
            .iter()
            .find(|s| attr(s, "gen_ai.tool.name").as_deref() == Some(tool))
            .unwrap_or_else(|| panic!("an AuthorizeAction span for {tool}"))
    };
    let delete = by_tool("delete_order");
    attr_is(delete, "policy.action", "RefundTool___delete_order");
    attr_is(delete, "policy.determining_policies", "no_deletes");
    attr_is(
        delete,
        "policy.reason",
        "Policy evaluation denied due to no_deletes",
    );
    let refund = by_tool("process_refund");
    attr_is(
        refund,
        "policy.reason",
        "Policy evaluation denied due to no determining policies",
    );
    assert_eq!(attr(refund, "policy.determining_policies"), None);
}

#[test]
fn log_only_mode_records_the_deny_and_forwards() {
    let capture = Capture::new();
    let reply = exchange(&capture, app(Mode::LogOnly, false), &refund(3, 5000.0));
    assert!(reply.contains(r#""isError":false"#), "forwarded: {reply}");

    let spans = capture.spans();
    let authorize = only(&spans, "AuthorizeAction");
    attr_is(authorize, "policy.mode", "LOG_ONLY");
    attr_is(authorize, "policy.decision", "DENY");
    attr_is(
        authorize,
        "policy.reason",
        "Policy evaluation denied due to no determining policies",
    );
}

fn assert_list_spans(spans: &[SpanData], mode: &str) {
    let request = only(spans, "tools/list");
    attr_is(request, "mcp.method.name", "tools/list");
    attr_is(request, "jsonrpc.request.id", "9");
    let list = only(spans, "PartiallyAuthorizeActions");
    assert_parent(list, request);
    attr_is(list, "policy.engine", "RefundPolicyEngine");
    attr_is(list, "policy.mode", mode);
    attr_is(list, "policy.allowed_tools", "process_refund,get_order");
    attr_is(list, "policy.denied_tools", "update_order,delete_order");
    attr_is(list, "policy.allowed_tools.count", "2");
    attr_is(list, "policy.denied_tools.count", "2");
}

fn list() -> Value {
    json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list"})
}

#[test]
fn list_span_records_allowed_and_denied_tools_under_the_request_span() {
    let capture = Capture::new();
    let reply = exchange(&capture, app(Mode::Enforce, false), &list());
    assert!(!reply.contains("delete_order"), "{reply}");
    assert_list_spans(&capture.spans(), "ENFORCE");
}

#[test]
fn list_span_of_an_event_stream_reply_is_under_the_request_span() {
    let capture = Capture::new();
    let reply = exchange(&capture, app(Mode::Enforce, true), &list());
    assert!(
        reply.contains("get_order") && !reply.contains("delete_order"),
        "{reply}"
    );
    assert_list_spans(&capture.spans(), "ENFORCE");
}

#[test]
fn log_only_list_span_records_what_would_be_removed() {
    let capture = Capture::new();
    let reply = exchange(&capture, app(Mode::LogOnly, false), &list());
    assert!(reply.contains("delete_order"), "not filtered: {reply}");
    assert_list_spans(&capture.spans(), "LOG_ONLY");
}

#[test]
fn temporal_conditions_are_on_the_authorize_action_span() {
    let policies = format!(
        "{POLICIES}\n@id(\"no_refund_after_a_refund\")\nforbid(principal, action == AgentCore::Action::\"RefundTool___process_refund\", resource)\n\
         when temporal {{ formerly within 1m AgentCore::Action::\"RefundTool___process_refund\"::response{{ eventResource: resource }} }};"
    );
    let layer = PolicyLayer::new(refund_engine(&policies)).unauthenticated();
    let (router, _recorder) = upstream_router(false);
    let app = router.layer(layer);
    let capture = Capture::new();
    let header = [("x-amzn-bedrock-agentcore-policy-session-id", "s-1")];
    let reply = exchange_with(&capture, app, &refund(5, 50.0), &header);
    assert!(reply.contains(r#""isError":false"#), "allowed: {reply}");
    let spans = capture.spans();
    let authorize = only(&spans, "AuthorizeAction");
    attr_is(authorize, "policy.temporal.evaluation_invoked", "true");
    attr_is(authorize, "policy.temporal.session_id", "s-1");
    attr_is(
        authorize,
        "policy.temporal.conditions",
        "c0=false(no_refund_after_a_refund)",
    );
    assert!(attr(authorize, "policy.temporal.latency_ms").is_some());
    assert!(attr(authorize, "policy.temporal.event_timestamp_ns").is_some());
}
