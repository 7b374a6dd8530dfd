//! End to end: a real axum MCP server wrapped by `PolicyLayer`, served on a local port and
//! called over HTTP, with the refund scenarios of the seeds.

mod common;

use std::sync::Arc;

use axum::Router;
use common::{call, post, post_raw, refund_engine, serve, upstream_router};
use policy_layer::auth::{Identity, PrincipalKind};
use policy_layer::{DenyStyle, Mode, PolicyLayer, Settings};
use serde_json::{Value, json};

const DENIED_NO_POLICY: &str = "Tool Execution Denied: Tool call not allowed due to policy enforcement [Policy evaluation denied due to no determining policies]";

const POLICIES: &str = r#"
@id("refund_limit")
permit(principal, action == AgentCore::Action::"RefundTool___process_refund",
       resource == AgentCore::Gateway::"arn:aws:bedrock-agentcore:us-west-2:123456789012:gateway/refund-gateway")
when { ((context.input).amount).lessThan(decimal("1000.0")) };

@id("read_orders")
permit(principal, action == AgentCore::Action::"RefundTool___get_order", resource);

@id("agents_update_orders")
permit(principal is AgentCore::OAuthUser, action == AgentCore::Action::"RefundTool___update_order", resource)
when { principal.hasTag("role") && principal.getTag("role") == "order-agent" };
"#;

struct Setup {
    addr: std::net::SocketAddr,
    recorder: common::Recorder,
}

async fn start_with(layer: PolicyLayer, sse: bool) -> Setup {
    let (router, recorder) = upstream_router(sse);
    let app: Router = router.layer(layer);
    Setup {
        addr: serve(app).await,
        recorder,
    }
}

async fn start(mode: Mode, style: DenyStyle, sse: bool) -> Setup {
    let settings = Settings {
        mode,
        deny_style: style,
        engine_name: "RefundPolicyEngine".into(),
        ..Settings::default()
    };
    start_with(
        PolicyLayer::new(refund_engine(POLICIES))
            .settings(settings)
            .unauthenticated(),
        sse,
    )
    .await
}

fn refund(id: i64, amount: Value) -> Value {
    call(
        Value::from(id),
        "process_refund",
        json!({"amount": amount, "customer_id": "C001", "reason": "test"}),
    )
}

#[tokio::test]
async fn enforce_decides_the_seed_refund_table() {
    let s = start(Mode::Enforce, DenyStyle::JsonRpcError, false).await;
    for (i, (amount, allowed)) in [
        (json!(500.0), true),
        (json!(2000.0), false),
        (json!(999.99), true),
        (json!(1000.0), false),
        (json!(0.01), true),
        (json!(-100.0), true),
        (json!(500), true),
    ]
    .into_iter()
    .enumerate()
    {
        let reply = post(s.addr, &refund(i as i64, amount.clone())).await;
        assert_eq!(reply.status, 200);
        let v = reply.json();
        assert_eq!(v["id"], i as i64);
        if allowed {
            assert_eq!(v["result"]["isError"], false, "{amount}: {v}");
        } else {
            assert_eq!(v["error"]["code"], -32002, "{amount}: {v}");
            assert_eq!(v["error"]["message"], DENIED_NO_POLICY);
        }
    }
    let amounts: Vec<Value> = s
        .recorder
        .calls()
        .iter()
        .map(|c| c["arguments"]["amount"].clone())
        .collect();
    assert_eq!(
        amounts,
        [
            json!(500.0),
            json!(999.99),
            json!(0.01),
            json!(-100.0),
            json!(500)
        ],
        "denied calls never reach the upstream"
    );
}

#[tokio::test]
async fn denied_reply_is_byte_exact() {
    let s = start(Mode::Enforce, DenyStyle::JsonRpcError, false).await;
    let reply = post(s.addr, &refund(1, json!(2000))).await;
    assert_eq!(
        reply.text,
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"error":{{"code":-32002,"message":"{DENIED_NO_POLICY}"}}}}"#
        )
    );
}

#[tokio::test]
async fn tool_result_style_carries_authorize_action_exception() {
    let s = start(Mode::Enforce, DenyStyle::ToolResult, false).await;
    let v = post(s.addr, &refund(2, json!(2000.0))).await.json();
    assert_eq!(v["result"]["isError"], true);
    assert_eq!(
        v["result"]["content"][0]["text"],
        format!("AuthorizeActionException - {DENIED_NO_POLICY}")
    );
    assert!(s.recorder.calls().is_empty());
}

#[tokio::test]
async fn log_only_forwards_denied_calls() {
    let s = start(Mode::LogOnly, DenyStyle::JsonRpcError, false).await;
    for (i, amount) in [500.0, 2000.0].into_iter().enumerate() {
        let v = post(s.addr, &refund(i as i64, json!(amount))).await.json();
        assert_eq!(v["result"]["isError"], false, "{v}");
    }
    assert_eq!(s.recorder.calls().len(), 2);
}

#[tokio::test]
async fn request_ids_of_every_type_are_kept() {
    let s = start(Mode::Enforce, DenyStyle::JsonRpcError, false).await;
    for id in [
        json!("req-1"),
        json!(0),
        json!(-5),
        json!(1.5),
        json!(9_007_199_254_740_993_u64),
    ] {
        let v = post(
            s.addr,
            &call(id.clone(), "delete_order", json!({"order_id": "1"})),
        )
        .await
        .json();
        assert_eq!(v["id"], id);
        assert_eq!(v["error"]["code"], -32002);
    }
}

#[tokio::test]
async fn tool_with_no_policy_is_denied() {
    let s = start(Mode::Enforce, DenyStyle::JsonRpcError, false).await;
    let v = post(
        s.addr,
        &call(json!(1), "delete_order", json!({"order_id": "1"})),
    )
    .await
    .json();
    assert_eq!(v["error"]["message"], DENIED_NO_POLICY);
    assert!(s.recorder.calls().is_empty());
}

#[tokio::test]
async fn role_tag_from_identity_decides() {
    let engine = refund_engine(POLICIES);
    let layer = PolicyLayer::new(engine).identity_from_extension();
    let (router, recorder) = upstream_router(false);
    let app = router.layer(layer).layer(axum::middleware::from_fn(
        |mut req: axum::extract::Request, next: axum::middleware::Next| async move {
            let role = req
                .headers()
                .get("x-test-role")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned();
            req.extensions_mut().insert(Arc::new(Identity {
                kind: PrincipalKind::OAuthUser,
                subject: "alice".into(),
                tags: vec![("role".into(), role)],
                expires_at: None,
            }));
            next.run(req).await
        },
    ));
    let addr = serve(app).await;
    let body = call(
        json!(1),
        "update_order",
        json!({"order_id": "1", "status": "shipped"}),
    )
    .to_string();
    let v = post_raw(
        addr,
        "application/json",
        body.clone(),
        &[("x-test-role", "order-agent")],
    )
    .await
    .json();
    assert_eq!(v["result"]["isError"], false, "{v}");
    let v = post_raw(addr, "application/json", body, &[("x-test-role", "viewer")])
        .await
        .json();
    assert_eq!(v["error"]["code"], -32002);
    assert_eq!(recorder.calls().len(), 1);
}

#[tokio::test]
async fn request_without_identity_is_refused() {
    let (router, recorder) = upstream_router(false);
    let addr =
        serve(router.layer(PolicyLayer::new(refund_engine(POLICIES)).identity_from_extension()))
            .await;
    let reply = post(addr, &refund(1, json!(1))).await;
    assert_eq!(reply.status, 401);
    assert!(recorder.calls().is_empty());
}

#[tokio::test]
async fn batch_forwards_only_allowed_calls_and_merges_replies() {
    for sse in [false, true] {
        let s = start(Mode::Enforce, DenyStyle::JsonRpcError, sse).await;
        let batch = json!([
            refund(1, json!(10)),
            refund(2, json!(5000)),
            call(json!("g"), "get_order", json!({"order_id": "7"})),
            call(json!(4), "delete_order", json!({}))
        ]);
        let reply = post(s.addr, &batch).await;
        let messages = if sse {
            reply.sse_messages()
        } else {
            reply.json().as_array().expect("array").clone()
        };
        let by_id = |id: Value| {
            messages
                .iter()
                .find(|m| m["id"] == id)
                .unwrap_or_else(|| panic!("no reply for {id}: {messages:?}"))
                .clone()
        };
        assert_eq!(by_id(json!(1))["result"]["isError"], false);
        assert_eq!(by_id(json!(2))["error"]["code"], -32002);
        assert_eq!(by_id(json!("g"))["result"]["isError"], false);
        assert_eq!(by_id(json!(4))["error"]["code"], -32002);
        assert_eq!(messages.len(), 4);
        let tools: Vec<Value> = s
            .recorder
            .calls()
            .iter()
            .map(|c| c["name"].clone())
            .collect();
        assert_eq!(
            tools,
            [json!("process_refund"), json!("get_order")],
            "sse={sse}"
        );
    }
}

#[tokio::test]
async fn all_denied_batch_is_answered_locally() {
    let s = start(Mode::Enforce, DenyStyle::JsonRpcError, false).await;
    let v = post(
        s.addr,
        &json!([refund(1, json!(5000)), refund(2, json!(6000))]),
    )
    .await
    .json();
    assert_eq!(v.as_array().map(Vec::len), Some(2));
    assert!(s.recorder.bodies.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn bad_arguments_are_validation_errors_not_forwarded() {
    let s = start(Mode::Enforce, DenyStyle::JsonRpcError, false).await;
    let v = post(
        s.addr,
        &call(
            json!(1),
            "process_refund",
            json!({"amount": "500", "customer_id": "C1"}),
        ),
    )
    .await
    .json();
    assert_eq!(v["result"]["isError"], true);
    assert_eq!(
        v["result"]["content"][0]["text"],
        "ValidationException - Parameter validation failed: input.amount: expected a number, got a string"
    );
    let v = post(
        s.addr,
        &call(
            json!(2),
            "process_refund",
            json!({"amount": 0.00001, "customer_id": "C1"}),
        ),
    )
    .await
    .json();
    assert!(
        v["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("fraction digits"),
        "{v}"
    );
    assert!(s.recorder.calls().is_empty());
}

#[tokio::test]
async fn hostile_bodies_get_clear_errors_and_nothing_is_forwarded() {
    let s = start(Mode::Enforce, DenyStyle::JsonRpcError, false).await;
    let cases: Vec<(&str, Vec<u8>, u16, i64)> = vec![
        ("malformed", b"{\"jsonrpc\":".to_vec(), 400, -32700),
        ("invalid utf-8", b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"\xff\"}}".to_vec(), 400, -32700),
        ("duplicate name", br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_order","name":"delete_order","arguments":{}}}"#.to_vec(), 400, -32600),
        ("duplicate argument", br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"process_refund","arguments":{"amount":1,"amount":5000,"customer_id":"c"}}}"#.to_vec(), 400, -32600),
        ("not a request", br#"{"hello":"world"}"#.to_vec(), 400, -32600),
        ("deep nesting", format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(), 400, -32700),
        ("too large", vec![b' '; 5 * 1024 * 1024], 413, -32600),
    ];
    for (name, body, status, code) in cases {
        let reply = post_raw(s.addr, "application/json", body, &[]).await;
        assert_eq!(reply.status.as_u16(), status, "{name}: {}", reply.text);
        assert_eq!(reply.json()["error"]["code"], code, "{name}");
    }
    let reply = post_raw(s.addr, "text/plain", refund(1, json!(1)).to_string(), &[]).await;
    assert_eq!(reply.status, 415);
    for params in [json!(null), json!({"arguments": {}}), json!({"name": 5})] {
        let v = post(
            s.addr,
            &json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": params}),
        )
        .await
        .json();
        assert_eq!(v["error"]["code"], -32602, "{params}");
        assert_eq!(v["id"], 9);
    }
    let v = post(s.addr, &json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "get_order", "arguments": [1]}})).await.json();
    assert_eq!(
        v["result"]["isError"], true,
        "arguments must be an object: {v}"
    );
    let v = post(s.addr, &json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "delete\u{005f}order", "arguments": {}}})).await.json();
    assert_eq!(v["error"]["code"], -32002);
    let escaped = br#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"delete\u005forder","arguments":{}}}"#;
    let v = post_raw(s.addr, "application/json", escaped.to_vec(), &[])
        .await
        .json();
    assert_eq!(
        v["error"]["code"], -32002,
        "an escaped name is decided as the name it decodes to"
    );
    assert!(
        s.recorder.bodies.lock().expect("lock").is_empty(),
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn stateless_headers_must_agree_with_the_body() {
    let s = start(Mode::Enforce, DenyStyle::JsonRpcError, false).await;
    let body = call(json!(1), "get_order", json!({"order_id": "1"})).to_string();
    let v2026 = ("mcp-protocol-version", "2026-07-28");
    let reply = post_raw(
        s.addr,
        "application/json",
        body.clone(),
        &[
            v2026,
            ("mcp-method", "tools/call"),
            ("mcp-name", "delete_order"),
        ],
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"]["code"], -32020);
    let reply = post_raw(
        s.addr,
        "application/json",
        body.clone(),
        &[
            v2026,
            ("mcp-method", "tools/list"),
            ("mcp-name", "get_order"),
        ],
    )
    .await;
    assert_eq!(reply.json()["error"]["code"], -32020);
    let reply = post_raw(s.addr, "application/json", body.clone(), &[v2026]).await;
    assert_eq!(
        reply.json()["error"]["code"],
        -32020,
        "headers are required in 2026-07-28"
    );
    assert!(s.recorder.calls().is_empty());
    let reply = post_raw(
        s.addr,
        "application/json",
        body,
        &[
            v2026,
            ("mcp-method", "tools/call"),
            ("mcp-name", "get_order"),
        ],
    )
    .await;
    assert_eq!(reply.json()["result"]["isError"], false);
}

#[tokio::test]
async fn no_policy_set_fails_closed() {
    let engine = refund_engine(POLICIES);
    engine.clear();
    let (router, recorder) = upstream_router(false);
    let addr = serve(router.layer(PolicyLayer::new(engine).unauthenticated())).await;
    let v = post(addr, &refund(1, json!(1))).await.json();
    assert_eq!(
        v["result"]["content"][0]["text"],
        "InternalServerException - Policy evaluation failed"
    );
    assert!(recorder.calls().is_empty());
}

#[tokio::test]
async fn other_methods_pass_through() {
    let s = start(Mode::Enforce, DenyStyle::JsonRpcError, false).await;
    let v = post(
        s.addr,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}),
    )
    .await
    .json();
    assert_eq!(v["result"]["serverInfo"]["name"], "test");
    let reply = post(
        s.addr,
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(reply.status, 202);
}

fn list(id: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": {}})
}

fn names(message: &Value) -> Vec<String> {
    message["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn tools_list_keeps_input_dependent_tools_and_drops_definite_denies() {
    for sse in [false, true] {
        let s = start(Mode::Enforce, DenyStyle::JsonRpcError, sse).await;
        let reply = post(s.addr, &list(json!(1))).await;
        let message = if sse {
            reply.sse_messages().remove(0)
        } else {
            reply.json()
        };
        // process_refund depends on the amount; get_order always allowed; update_order needs a
        // role tag the anonymous caller lacks; delete_order has no policy.
        assert_eq!(
            names(&message),
            ["process_refund", "get_order"],
            "sse={sse}"
        );
        assert_eq!(
            message["result"]["nextCursor"], "page-2",
            "other fields are kept"
        );
        assert_eq!(message["id"], 1);
    }
}

#[tokio::test]
async fn sse_events_other_than_the_list_pass_through_unchanged() {
    let s = start(Mode::Enforce, DenyStyle::JsonRpcError, true).await;
    let reply = post(s.addr, &list(json!("l"))).await;
    assert!(
        reply
            .text
            .starts_with("id: prime\ndata:\n\n: a comment\n\n"),
        "{}",
        reply.text
    );
    assert!(
        reply.text.contains("event: message\ndata: {"),
        "{}",
        reply.text
    );
}

#[tokio::test]
async fn log_only_leaves_the_list_whole() {
    let s = start(Mode::LogOnly, DenyStyle::JsonRpcError, false).await;
    let message = post(s.addr, &list(json!(1))).await.json();
    assert_eq!(names(&message).len(), 4);
}

#[tokio::test]
async fn list_without_policy_set_fails_closed() {
    let engine = refund_engine(POLICIES);
    engine.clear();
    let (router, _) = upstream_router(true);
    let addr = serve(router.layer(PolicyLayer::new(engine).unauthenticated())).await;
    let messages = post(addr, &list(json!(1))).await.sse_messages();
    assert_eq!(
        messages[0]["result"]["content"][0]["text"],
        "InternalServerException - Policy evaluation failed for list tools"
    );
}

#[tokio::test]
async fn upstream_error_reply_to_a_list_passes_through_without_a_policy_error() {
    let app = axum::Router::new()
        .route(
            "/mcp",
            axum::routing::post(|| async {
                (
                    axum::http::StatusCode::BAD_GATEWAY,
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"upstream unavailable"}}"#,
                )
            }),
        )
        .layer(PolicyLayer::new(refund_engine(POLICIES)).unauthenticated());
    let addr = serve(app).await;
    let reply = post(addr, &list(json!(1))).await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.json()["error"]["message"], "upstream unavailable");
}

#[tokio::test]
async fn a_token_in_the_query_string_is_refused_and_not_forwarded() {
    let (router, recorder) = upstream_router(false);
    let addr =
        serve(router.layer(PolicyLayer::new(refund_engine(POLICIES)).unauthenticated())).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<axum::body::Body>();
    let request = axum::http::Request::post(format!("http://{addr}/mcp?access_token=abc"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(refund(1, json!(1)).to_string()))
        .expect("request");
    let response = client.request(request).await.expect("response");
    assert_eq!(response.status(), 401);
    assert!(recorder.bodies.lock().expect("lock").is_empty());
}
