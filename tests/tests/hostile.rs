//! Hostile input through the real `policy-sidecar` in front of the real `demo-tool-server`.
//!
//! Between the two sits a tap: a small axum proxy that records every request the sidecar
//! forwards (method, headers, raw body) before passing it on to the demo server. Each case
//! asserts the status and JSON-RPC error code the client sees, that the sidecar still answers
//! `/livez`, and what reached the upstream: nothing for a request that was refused or denied,
//! exactly one copy of an allowed call.

use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use e2e::{
    AUDIENCE, DemoServer, McpClient, REFUND_POLICIES, Sidecar, Stack, Workspace, assert_streaming,
    eventually, host_of, http, jwks, message_in, now_secs, path_of, raw_exchange, serve, sign,
};
use serde_json::{Value, json};

/// [`REFUND_POLICIES`] and order updates by order agents.
static POLICIES: LazyLock<String> = LazyLock::new(|| {
    REFUND_POLICIES.to_owned()
        + r#"
@id("orders_update_by_agents")
permit(principal is AgentCore::OAuthUser, action == AgentCore::Action::"RefundTool___update_order", resource)
when { principal.hasTag("role") && principal.getTag("role") == "order-agent" };
"#
});

const DENIED: &str = "Tool Execution Denied: Tool call not allowed due to policy enforcement [Policy evaluation denied due to no determining policies]";

/// The body limit configured for these tests (small, so that the over-limit case is cheap).
const MAX_BODY: usize = 64 * 1024;
const MAX_BATCH: usize = 4;

// --- the tap ------------------------------------------------------------------------------

/// One request the sidecar sent upstream.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Clone)]
struct TapState {
    upstream: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    client: reqwest::Client,
}

/// A recording proxy in front of an upstream MCP endpoint (POST and DELETE; GET is 405).
struct Tap {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

const PASSED_HEADERS: [&str; 7] = [
    "content-type",
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "last-event-id",
];

async fn tap_handler(
    State(state): State<TapState>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.seen.lock().expect("lock").push(Seen {
        method: method.clone(),
        headers: headers.clone(),
        body: body.clone(),
    });
    if method == Method::GET {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let mut request = state.client.request(method, &state.upstream);
    for name in PASSED_HEADERS {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value);
        }
    }
    let Ok(answer) = request.body(body).send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut out = HeaderMap::new();
    for name in ["content-type", "mcp-session-id"] {
        if let Some(value) = answer.headers().get(name) {
            out.insert(name, value.clone());
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    (status, out, bytes).into_response()
}

impl Tap {
    async fn start(upstream: &str) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = TapState {
            upstream: upstream.to_owned(),
            seen: Arc::clone(&seen),
            client: http(),
        };
        let app = axum::Router::new()
            .route("/mcp", axum::routing::any(tap_handler))
            .with_state(state);
        Self {
            url: format!("{}/mcp", serve(app).await),
            seen,
        }
    }

    /// Everything recorded so far, and forgets it.
    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().expect("lock"))
    }
}

// --- setup --------------------------------------------------------------------------------

struct Setup {
    demo: DemoServer,
    tap: Tap,
    sidecar: Sidecar,
    client: McpClient,
    _ws: Workspace,
}

/// Demo server (JSON answers) <- tap <- sidecar (auth off, small limits), and an initialized
/// client session; the tap's record starts empty.
async fn setup(policy_extra: &str) -> Setup {
    let extra = format!("max_body_bytes = {MAX_BODY}\nmax_batch = {MAX_BATCH}\n{policy_extra}");
    let mut s = start_behind_tap(Workspace::new(), &extra, &[]).await;
    s.client.initialize().await;
    s.tap.take();
    s
}

/// Demo server (JSON answers) <- tap <- a ready sidecar with `POLICIES` in `ws`, `policy_extra`
/// and the extra environment `env`; the client is not initialized.
async fn start_behind_tap(ws: Workspace, policy_extra: &str, env: &[(&str, &str)]) -> Setup {
    let demo = DemoServer::start("127.0.0.1:0", true);
    let tap = Tap::start(&demo.url).await;
    ws.policy("refund.cedar", &POLICIES);
    let sidecar = Sidecar::start_ready(&ws.config(&tap.url, policy_extra), env).await;
    let client = McpClient::new(&sidecar.url);
    Setup {
        demo,
        tap,
        sidecar,
        client,
        _ws: ws,
    }
}

/// What the client got back for one raw POST.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    message: Value,
}

impl Setup {
    /// POSTs `body` as it is, with the session and the given headers.
    async fn post_raw(
        &self,
        content_type: &str,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> Reply {
        post_to(
            &self.sidecar.url,
            self.client.session.as_deref(),
            content_type,
            body,
            headers,
        )
        .await
    }

    /// POSTs the tools/call `call` in its 2026-07-28 form ([`meta_2026`]) with 2026-07-28
    /// headers that agree with it: `Mcp-Method: tools/call` and `Mcp-Name` its tool.
    async fn post_2026(&self, call: Value) -> Reply {
        let name = call["params"]["name"]
            .as_str()
            .expect("a tool name")
            .to_owned();
        self.post_raw(
            "application/json",
            meta_2026(call).to_string(),
            &[V2026, ("mcp-method", "tools/call"), ("mcp-name", &name)],
        )
        .await
    }

    async fn post_json(&self, body: &Value) -> Reply {
        self.post_raw("application/json", body.to_string(), &[])
            .await
    }

    /// The sidecar answers `/livez`, and the decision log is not in a panic.
    async fn assert_alive(&self, case: &str) {
        assert_eq!(
            self.sidecar.admin_get("/livez").await.0,
            200,
            "{case}: the sidecar is still alive; stderr: {:?}",
            self.sidecar.proc.stderr()
        );
        assert!(
            !self
                .sidecar
                .proc
                .stderr()
                .iter()
                .any(|l| l.contains("panicked")),
            "{case}: {:?}",
            self.sidecar.proc.stderr()
        );
    }

    /// Nothing at all reached the upstream since the last look.
    async fn assert_nothing_forwarded(&self, case: &str) {
        let seen = self.tap.take();
        assert!(
            seen.is_empty(),
            "{case}: the upstream received {:?}",
            seen.iter()
                .map(|s| String::from_utf8_lossy(&s.body).into_owned())
                .collect::<Vec<_>>()
        );
    }
}

async fn post_to(
    url: &str,
    session: Option<&str>,
    content_type: &str,
    body: impl Into<reqwest::Body>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = http()
        .post(url)
        .header("content-type", content_type)
        .header("accept", "application/json, text/event-stream");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("mcp-protocol-version"))
    {
        request = request.header("mcp-protocol-version", "2025-06-18");
    }
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.body(body).send().await.expect("POST");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.expect("body");
    let message = if content_type.starts_with("text/event-stream") {
        message_in(&content_type, &text)
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Reply {
        status,
        headers,
        message,
    }
}

fn call(id: Value, tool: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": arguments}})
}

fn refund(id: i64, amount: Value) -> Value {
    call(
        Value::from(id),
        "process_refund",
        json!({"amount": amount, "customer_id": "C001"}),
    )
}

/// The tools/call bodies the upstream received, as (tool, arguments).
fn forwarded_calls(seen: &[Seen]) -> Vec<(Value, Value)> {
    seen.iter()
        .filter(|s| s.method == Method::POST)
        .flat_map(|s| match s.json() {
            Value::Array(items) => items,
            one => vec![one],
        })
        .filter(|m| m["method"] == "tools/call")
        .map(|m| {
            (
                m["params"]["name"].clone(),
                m["params"]["arguments"].clone(),
            )
        })
        .collect()
}

// --- malformed and smuggling bodies -------------------------------------------------------

#[tokio::test]
async fn malformed_bodies_are_refused_and_never_forwarded() {
    let s = setup("").await;
    let nested = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"get_order","arguments":{{"order_id":{}"x"{}}}}}}}"#,
        "[".repeat(3000),
        "]".repeat(3000)
    );
    let cases: Vec<(&str, Vec<u8>, u16, i64)> = vec![
        ("truncated JSON", b"{\"jsonrpc\":".to_vec(), 400, -32700),
        ("trailing garbage", br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"} x"#.to_vec(), 400, -32700),
        ("empty body", Vec::new(), 400, -32700),
        (
            "invalid UTF-8 in the tool name",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"get_\xff\",\"arguments\":{}}}".to_vec(),
            400,
            -32700,
        ),
        ("deep nesting in arguments", nested.into_bytes(), 400, -32700),
        (
            "duplicate method",
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"delete_order","arguments":{"order_id":"1"}}}"#.to_vec(),
            400,
            -32600,
        ),
        (
            "duplicate tool name in params",
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_order","name":"delete_order","arguments":{"order_id":"1"}}}"#.to_vec(),
            400,
            -32600,
        ),
        (
            "duplicate params",
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_order","arguments":{"order_id":"1"}},"params":{"name":"delete_order","arguments":{"order_id":"1"}}}"#.to_vec(),
            400,
            -32600,
        ),
        (
            "duplicate argument",
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"process_refund","arguments":{"amount":1,"amount":5000,"customer_id":"C1"}}}"#.to_vec(),
            400,
            -32600,
        ),
        (
            "duplicate key in a nested argument object",
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_order","arguments":{"order_id":"1","extra":{"a":1,"a":2}}}}"#.to_vec(),
            400,
            -32600,
        ),
        ("not a JSON-RPC request", br#"{"hello":"world"}"#.to_vec(), 400, -32600),
        ("a bare string", br#""tools/call""#.to_vec(), 400, -32600),
        ("wrong jsonrpc version", br#"{"jsonrpc":"1.0","id":1,"method":"tools/list"}"#.to_vec(), 400, -32600),
        ("empty batch", b"[]".to_vec(), 400, -32600),
    ];
    for (case, body, status, code) in cases {
        let reply = s.post_raw("application/json", body, &[]).await;
        assert_eq!(reply.status, status, "{case}: {reply:?}");
        assert_eq!(reply.message["jsonrpc"], "2.0", "{case}: {reply:?}");
        assert_eq!(reply.message["error"]["code"], code, "{case}: {reply:?}");
        s.assert_alive(case).await;
        s.assert_nothing_forwarded(case).await;
    }
    assert!(s.demo.calls().await.is_empty());
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_and_never_forwarded() {
    let s = setup("").await;
    // A well-formed call whose arguments push it past the limit.
    let padding = "x".repeat(MAX_BODY);
    let body = call(
        json!(1),
        "get_order",
        json!({"order_id": "1", "padding": padding}),
    );
    let reply = s.post_json(&body).await;
    assert_eq!(reply.status, 413, "{reply:?}");
    assert_eq!(reply.message["error"]["code"], -32600, "{reply:?}");
    s.assert_alive("over the limit").await;
    s.assert_nothing_forwarded("over the limit").await;

    // The same, sent in chunks without a content length.
    let text = body.to_string();
    let half = text.len() / 2;
    let mut request = format!(
        "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\nmcp-session-id: {}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        path_of(&s.sidecar.url),
        host_of(&s.sidecar.url),
        s.client.session.as_deref().unwrap_or_default()
    );
    for part in [&text[..half], &text[half..]] {
        request.push_str(&format!("{:x}\r\n{part}\r\n", part.len()));
    }
    request.push_str("0\r\n\r\n");
    let answer = raw_exchange(&s.sidecar.url, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "chunked: {answer}");
    s.assert_alive("chunked over the limit").await;
    s.assert_nothing_forwarded("chunked over the limit").await;

    // Just under the limit is served.
    let small = call(
        json!(2),
        "get_order",
        json!({"order_id": "1", "padding": "x".repeat(MAX_BODY / 2)}),
    );
    let reply = s.post_json(&small).await;
    assert_eq!(reply.message["result"]["isError"], false, "{reply:?}");
    assert_eq!(forwarded_calls(&s.tap.take()).len(), 1);
}

// --- arguments, numbers, params and ids ---------------------------------------------------

/// The text of a tool-result answer (where a validation error is reported).
fn validation_text(reply: &Reply) -> String {
    reply.message["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn arguments_that_do_not_fit_are_validation_errors_and_never_forwarded() {
    let s = setup("").await;
    let raw_cases: Vec<(&str, &str)> = vec![
        (
            "fraction digits beyond 4",
            r#"{"amount":0.00001,"customer_id":"C1"}"#,
        ),
        (
            "amount beyond decimal range",
            r#"{"amount":1e20,"customer_id":"C1"}"#,
        ),
        (
            "integer beyond 64 bits",
            r#"{"amount":99999999999999999999,"customer_id":"C1"}"#,
        ),
        (
            "negative beyond decimal range",
            r#"{"amount":-922337203685478,"customer_id":"C1"}"#,
        ),
        (
            "amount as a string",
            r#"{"amount":"500","customer_id":"C1"}"#,
        ),
        (
            "amount as an object",
            r#"{"amount":{"value":500},"customer_id":"C1"}"#,
        ),
        ("required argument missing", r#"{"customer_id":"C1"}"#),
        (
            "customer id as a number",
            r#"{"amount":500,"customer_id":7}"#,
        ),
        ("arguments as an array", r"[500]"),
        ("arguments as a string", r#""amount=500""#),
        ("arguments as a number", r"500"),
    ];
    for (case, arguments) in raw_cases {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"process_refund","arguments":{arguments}}}}}"#
        );
        let reply = s.post_raw("application/json", body, &[]).await;
        assert_eq!(reply.status, 200, "{case}: {reply:?}");
        assert_eq!(reply.message["id"], 7, "{case}: {reply:?}");
        assert_eq!(
            reply.message["result"]["isError"], true,
            "{case}: {reply:?}"
        );
        let text = validation_text(&reply);
        assert!(
            text.starts_with("ValidationException - Parameter validation failed: "),
            "{case}: {text:?}"
        );
        s.assert_alive(case).await;
        s.assert_nothing_forwarded(case).await;
    }

    // A number JSON itself cannot hold is a parse error.
    let reply = s
        .post_raw(
            "application/json",
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"process_refund","arguments":{"amount":1e400,"customer_id":"C1"}}}"#,
            &[],
        )
        .await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(reply.message["error"]["code"], -32700, "{reply:?}");
    s.assert_nothing_forwarded("1e400").await;

    // Controls: 500 and 500.0 and 999.9999 are allowed and forwarded once each, as sent.
    for amount in ["500", "500.0", "999.9999"] {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{{"name":"process_refund","arguments":{{"amount":{amount},"customer_id":"C1"}}}}}}"#
        );
        let reply = s.post_raw("application/json", body.clone(), &[]).await;
        assert_eq!(
            reply.message["result"]["isError"], false,
            "{amount}: {reply:?}"
        );
        let seen = s.tap.take();
        assert_eq!(seen.len(), 1, "{amount}");
        assert_eq!(seen[0].body, body.as_bytes(), "forwarded byte for byte");
    }
    // 1000.0 is at the limit: denied.
    let reply = s.post_json(&refund(9, json!(1000.0))).await;
    assert_eq!(reply.message["error"]["message"], DENIED, "{reply:?}");
    s.assert_nothing_forwarded("refund at the limit").await;
}

#[tokio::test]
async fn missing_or_mistyped_params_are_invalid_params_and_never_forwarded() {
    let s = setup("").await;
    for params in [
        None,
        Some(json!(null)),
        Some(json!([])),
        Some(json!("delete_order")),
        Some(json!({"arguments": {"order_id": "1"}})),
        Some(json!({"name": 5, "arguments": {}})),
        Some(json!({"name": null, "arguments": {}})),
        Some(json!({"name": ["delete_order"], "arguments": {}})),
    ] {
        let mut body = json!({"jsonrpc": "2.0", "id": "p", "method": "tools/call"});
        if let Some(params) = &params {
            body["params"] = params.clone();
        }
        let reply = s.post_json(&body).await;
        let case = format!("params {params:?}");
        assert_eq!(reply.message["error"]["code"], -32602, "{case}: {reply:?}");
        assert_eq!(reply.message["id"], "p", "{case}: {reply:?}");
        s.assert_alive(&case).await;
        s.assert_nothing_forwarded(&case).await;
    }
}

#[tokio::test]
async fn an_escaped_tool_name_is_decided_as_the_name_it_decodes_to() {
    let s = setup("").await;
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete\u005forder","arguments":{"order_id":"1"}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\u0064\u0065\u006c\u0065\u0074\u0065_order","arguments":{"order_id":"1"}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools\/call","params":{"name":"delete_order","arguments":{"order_id":"1"}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"process_refund","arguments":{"\u0061mount":5000,"customer_id":"C1"}}}"#,
    ] {
        let reply = s.post_raw("application/json", body, &[]).await;
        assert_eq!(reply.status, 200, "{body}: {reply:?}");
        assert_eq!(
            reply.message,
            json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32002, "message": DENIED}}),
            "{body}"
        );
        s.assert_nothing_forwarded(body).await;
    }
    // Names that only look alike are other tools: not listed, no policy, denied.
    for name in [
        "delete_order ",
        "Delete_order",
        "delete_order\u{0}",
        "RefundTool___delete_order",
    ] {
        let reply = s
            .post_json(&call(json!(2), name, json!({"order_id": "1"})))
            .await;
        assert_eq!(
            reply.message["error"]["code"], -32002,
            "{name:?}: {reply:?}"
        );
        s.assert_nothing_forwarded(name).await;
    }
    assert!(s.demo.calls().await.is_empty());
}

#[tokio::test]
async fn request_ids_of_every_type_are_kept_in_errors() {
    let s = setup("").await;
    for id in [
        json!("req-1"),
        json!(""),
        json!("ü \" \\ \u{2028}"),
        json!(0),
        json!(-5),
        json!(1.5),
        json!(9_007_199_254_740_993_u64),
        json!(-9_223_372_036_854_775_808_i64),
    ] {
        // Denied by policy.
        let reply = s
            .post_json(&call(id.clone(), "delete_order", json!({"order_id": "1"})))
            .await;
        assert_eq!(reply.message["id"], id, "{reply:?}");
        assert_eq!(reply.message["error"]["code"], -32002, "{id}");
        // A validation error.
        let reply = s
            .post_json(&call(id.clone(), "process_refund", json!({"amount": "x"})))
            .await;
        assert_eq!(reply.message["id"], id, "{reply:?}");
        assert_eq!(reply.message["result"]["isError"], true, "{id}");
        // Invalid params.
        let reply = s
            .post_json(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call"}))
            .await;
        assert_eq!(reply.message["id"], id, "{reply:?}");
        assert_eq!(reply.message["error"]["code"], -32602, "{id}");
    }
    // The id is kept byte for byte: a big integer is not rounded through a float.
    let reply = s
        .post_raw(
            "application/json",
            r#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"tools/call","params":{"name":"delete_order","arguments":{"order_id":"1"}}}"#,
            &[],
        )
        .await;
    assert_eq!(reply.message["error"]["code"], -32002, "{reply:?}");
    s.assert_nothing_forwarded("ids").await;

    // Ids JSON-RPC does not allow: refused as invalid requests, never forwarded.
    for id in [json!(true), json!([1]), json!({"a": 1})] {
        let reply = s
            .post_json(&call(id.clone(), "get_order", json!({"order_id": "1"})))
            .await;
        assert_eq!(reply.status, 400, "{id}: {reply:?}");
        assert_eq!(reply.message["error"]["code"], -32600, "{id}: {reply:?}");
        s.assert_nothing_forwarded(&id.to_string()).await;
    }
}

#[tokio::test]
async fn a_tools_call_without_an_id_or_with_a_null_id_is_never_forwarded_when_denied() {
    let s = setup("").await;
    let notification = json!({"jsonrpc": "2.0", "method": "tools/call",
        "params": {"name": "delete_order", "arguments": {"order_id": "1"}}});
    let reply = s.post_json(&notification).await;
    assert!(reply.status < 500, "{reply:?}");
    s.assert_alive("tools/call notification").await;
    s.assert_nothing_forwarded("tools/call notification").await;

    let null_id = call(Value::Null, "delete_order", json!({"order_id": "1"}));
    let reply = s.post_json(&null_id).await;
    assert!(reply.status < 500, "{reply:?}");
    s.assert_nothing_forwarded("tools/call with a null id")
        .await;
    assert!(s.demo.calls().await.is_empty());
}

// --- batches, content types, protocol headers ---------------------------------------------

/// Two allowed and two denied calls. (500.5: fractional, so a decimal even without a schema.)
fn mixed_batch() -> Value {
    json!([
        refund(1, json!(500.5)),
        refund(2, json!(2000)),
        call(json!("g"), "get_order", json!({"order_id": "7"})),
        call(json!(4), "delete_order", json!({"order_id": "7"})),
    ])
}

#[tokio::test]
async fn a_batch_forwards_only_its_allowed_calls_once() {
    // The demo server (rmcp) does not take batches at all and says so; what matters here is
    // what it was sent.
    let s = setup("").await;
    let reply = s.post_json(&mixed_batch()).await;
    assert!(reply.status < 500, "{reply:?}");
    let seen = s.tap.take();
    assert_eq!(seen.len(), 1, "one forwarded request");
    assert_eq!(
        forwarded_calls(&seen),
        [
            (
                json!("process_refund"),
                json!({"amount": 500.5, "customer_id": "C001"})
            ),
            (json!("get_order"), json!({"order_id": "7"})),
        ],
        "only the allowed elements, once each"
    );
    s.assert_alive("mixed batch").await;
    assert!(
        s.demo.calls().await.is_empty(),
        "the demo refused the batch"
    );
}

/// An upstream that answers every request of a batch (or a single request) with a tool result
/// naming the tool, recording each body.
async fn batch_upstream() -> (String, Arc<Mutex<Vec<Value>>>) {
    use axum::routing::post;
    let received = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/mcp",
        post(move |body: String| {
            let record = Arc::clone(&record);
            async move {
                let request: Value = serde_json::from_str(&body).unwrap_or_default();
                record.lock().expect("lock").push(request.clone());
                let answer = |m: &Value| {
                    json!({"jsonrpc": "2.0", "id": m["id"], "result": {"isError": false,
                        "content": [{"type": "text", "text": m["params"]["name"]}]}})
                };
                let out = match &request {
                    Value::Array(items) => Value::Array(items.iter().map(answer).collect()),
                    one => answer(one),
                };
                ([("content-type", "application/json")], out.to_string())
            }
        }),
    );
    (format!("{}/mcp", serve(app).await), received)
}

#[tokio::test]
async fn a_mixed_batch_gets_one_merged_answer_with_every_id() {
    let (upstream, received) = batch_upstream().await;
    let ws = Workspace::new();
    ws.policy("refund.cedar", &POLICIES);
    let sidecar = Sidecar::start_ready(&ws.config(&upstream, "schema = \"none\""), &[]).await;
    let reply = post_to(
        &sidecar.url,
        None,
        "application/json",
        mixed_batch().to_string(),
        &[("mcp-protocol-version", "2025-03-26")],
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let messages = reply
        .message
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("a batch answer: {reply:?}"));
    assert_eq!(messages.len(), 4, "{messages:?}");
    let by_id = |id: Value| {
        messages
            .iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("no answer for {id}: {messages:?}"))
            .clone()
    };
    assert_eq!(
        by_id(json!(1))["result"]["content"][0]["text"],
        "process_refund",
        "{messages:?}"
    );
    assert_eq!(by_id(json!(2))["error"]["message"], DENIED);
    assert_eq!(
        by_id(json!("g"))["result"]["content"][0]["text"],
        "get_order"
    );
    assert_eq!(by_id(json!(4))["error"]["code"], -32002);
    let received = received.lock().expect("lock").clone();
    let calls: Vec<Value> = received
        .iter()
        .flat_map(|r| r.as_array().cloned().unwrap_or_else(|| vec![r.clone()]))
        .filter(|m| m["method"] == "tools/call")
        .map(|m| m["params"]["name"].clone())
        .collect();
    assert_eq!(calls, [json!("process_refund"), json!("get_order")]);

    // All denied: answered locally, nothing sent.
    let before = received.len();
    let reply = post_to(
        &sidecar.url,
        None,
        "application/json",
        json!([
            refund(5, json!(5000)),
            call(json!(6), "delete_order", json!({}))
        ])
        .to_string(),
        &[("mcp-protocol-version", "2025-03-26")],
    )
    .await;
    assert_eq!(reply.message.as_array().map(Vec::len), Some(2), "{reply:?}");
    assert_eq!(received.len(), before);
}

#[tokio::test]
async fn a_batch_over_the_limit_is_refused_whole() {
    let s = setup("").await;
    let batch: Vec<Value> = (0..=MAX_BATCH)
        .map(|i| call(json!(i), "get_order", json!({"order_id": "1"})))
        .collect();
    let reply = s.post_json(&Value::Array(batch)).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(reply.message["error"]["code"], -32600, "{reply:?}");
    s.assert_alive("batch over the limit").await;
    s.assert_nothing_forwarded("batch over the limit").await;

    // A batch hiding a denied call behind duplicate keys is refused whole too.
    let body = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_order","arguments":{"order_id":"1"}}},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_order","name":"delete_order","arguments":{"order_id":"1"}}}]"#;
    let reply = s.post_raw("application/json", body, &[]).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    s.assert_nothing_forwarded("batch with a duplicate key")
        .await;
}

#[tokio::test]
async fn a_wrong_content_type_is_415_and_never_forwarded() {
    let s = setup("").await;
    let body = call(json!(1), "get_order", json!({"order_id": "1"})).to_string();
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
    ] {
        let reply = s.post_raw(content_type, body.clone(), &[]).await;
        assert_eq!(reply.status, 415, "{content_type}: {reply:?}");
        s.assert_alive(content_type).await;
        s.assert_nothing_forwarded(content_type).await;
    }
    // Parameters on the right type are fine.
    let reply = s
        .post_raw("application/json; charset=utf-8", body, &[])
        .await;
    assert_eq!(reply.message["result"]["isError"], false, "{reply:?}");
    assert_eq!(forwarded_calls(&s.tap.take()).len(), 1);
}

/// The protocol version header of 2026-07-28.
const V2026: (&str, &str) = ("mcp-protocol-version", "2026-07-28");

fn meta_2026(mut body: Value) -> Value {
    body["params"]["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}
    });
    body
}

#[tokio::test]
async fn protocol_2026_headers_that_disagree_with_the_body_are_refused_before_forwarding() {
    let s = setup("").await;
    let allowed = call(json!(1), "get_order", json!({"order_id": "1"}));
    let body = meta_2026(allowed.clone()).to_string();
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "name names another tool",
            vec![
                V2026,
                ("mcp-method", "tools/call"),
                ("mcp-name", "delete_order"),
            ],
        ),
        (
            "method names another method",
            vec![
                V2026,
                ("mcp-method", "tools/list"),
                ("mcp-name", "get_order"),
            ],
        ),
        ("name missing", vec![V2026, ("mcp-method", "tools/call")]),
        ("both missing", vec![V2026]),
        (
            "name differs in case",
            vec![
                V2026,
                ("mcp-method", "tools/call"),
                ("mcp-name", "Get_order"),
            ],
        ),
    ];
    for (case, headers) in cases {
        let reply = s.post_raw("application/json", body.clone(), &headers).await;
        assert_eq!(reply.status, 400, "{case}: {reply:?}");
        assert_eq!(reply.message["error"]["code"], -32020, "{case}: {reply:?}");
        s.assert_alive(case).await;
        s.assert_nothing_forwarded(case).await;
    }
    // Headers that agree: decided and forwarded once, headers passed on.
    let reply = s.post_2026(allowed).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.message["result"]["isError"], false, "{reply:?}");
    let seen = s.tap.take();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers["mcp-name"], "get_order");
    assert_eq!(seen[0].headers["mcp-method"], "tools/call");

    // Two version headers, one of them 2026-07-28, and an Mcp-Name naming an allowed tool over a
    // body calling a denied one: whichever header is read, the denied call does not pass.
    let denied = meta_2026(call(json!(3), "delete_order", json!({"order_id": "1"}))).to_string();
    let reply = s
        .post_raw(
            "application/json",
            denied,
            &[
                ("mcp-protocol-version", "2025-06-18"),
                V2026,
                ("mcp-method", "tools/call"),
                ("mcp-name", "get_order"),
            ],
        )
        .await;
    assert!(
        reply.status == 400 || reply.message["error"]["code"] == -32002,
        "{reply:?}"
    );
    s.assert_nothing_forwarded("two version headers").await;

    // Agreeing headers do not make a denied call pass.
    let reply = s
        .post_2026(call(json!(2), "delete_order", json!({"order_id": "1"})))
        .await;
    assert_eq!(reply.message["error"]["code"], -32002, "{reply:?}");
    s.assert_nothing_forwarded("agreeing headers, denied call")
        .await;
}

/// In 2026-07-28 every result carries `resultType` (the upstream's results do); a denial the
/// sidecar answers itself as a tool result must too, or SDKs that speak 2026-07-28 (the Python
/// SDK 2.x in its default `auto` mode) cannot read it.
#[tokio::test]
async fn a_tool_result_denial_in_protocol_2026_carries_result_type() {
    let s = setup("deny_style = \"tool_result\"").await;
    let reply = s
        .post_2026(call(json!(1), "get_order", json!({"order_id": "1"})))
        .await;
    assert_eq!(
        reply.message["result"]["resultType"], "complete",
        "the upstream's own result: {reply:?}"
    );

    let reply = s
        .post_2026(call(json!(2), "delete_order", json!({"order_id": "1"})))
        .await;
    assert_eq!(reply.message["result"]["isError"], true, "{reply:?}");
    assert_eq!(
        reply.message["result"]["resultType"], "complete",
        "the sidecar's denial: {reply:?}"
    );

    let reply = s
        .post_2026(call(json!(3), "process_refund", json!({"amount": "x"})))
        .await;
    assert_eq!(
        reply.message["result"]["resultType"], "complete",
        "the sidecar's validation error: {reply:?}"
    );
}

// --- tokens -------------------------------------------------------------------------------

const ISSUER: &str = "https://issuer.test";

fn token_for(sub: &str) -> String {
    sign(
        &json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "exp": now_secs() + 600,
                 "role": "refund-agent"}),
    )
}

/// The demo server behind a sidecar with JWT auth (keys from a JWKS file).
async fn setup_jwt() -> Setup {
    let ws = Workspace::new();
    let jwks_file = ws.file("jwks.json", &jwks().to_string());
    let s = start_behind_tap(
        ws,
        "",
        &[
            ("POLICY_SIDECAR_AUTH_MODE", "jwt"),
            ("POLICY_SIDECAR_AUTH_ISSUER", ISSUER),
            (
                "POLICY_SIDECAR_AUTH_JWKS_FILE",
                jwks_file.to_str().expect("utf-8 path"),
            ),
            ("POLICY_SIDECAR_AUTH_AUDIENCES", "mcp-gateway"),
        ],
    )
    .await;
    s.tap.take();
    s
}

#[tokio::test]
async fn a_token_in_the_query_string_is_not_a_credential() {
    let s = setup_jwt().await;
    let token = token_for("alice");
    let body = call(json!(1), "get_order", json!({"order_id": "1"})).to_string();
    for query in [
        format!("access_token={token}"),
        format!("token={token}"),
        format!("authorization=Bearer%20{token}"),
    ] {
        let url = format!("{}?{query}", s.sidecar.url);
        let reply = post_to(&url, None, "application/json", body.clone(), &[]).await;
        assert_eq!(reply.status, 401, "{query}: {reply:?}");
        let challenge = reply.headers["www-authenticate"].to_str().expect("ascii");
        assert!(
            challenge.starts_with("Bearer ") && challenge.contains(r#"error="invalid_token""#),
            "{challenge}"
        );
        s.assert_alive("query token").await;
        s.assert_nothing_forwarded("query token").await;
    }

    // Other ways to fail: no header, a bare token, another scheme, an unsigned token, a token
    // for another audience, an expired one.
    let unsigned = {
        use base64::Engine as _;
        let part =
            |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.",
            part(json!({"alg": "none", "typ": "JWT"})),
            part(
                json!({"iss": ISSUER, "aud": "mcp-gateway", "sub": "mallory", "exp": now_secs() + 600})
            )
        )
    };
    let other_audience =
        sign(&json!({"iss": ISSUER, "aud": "other", "sub": "alice", "exp": now_secs() + 600}));
    let expired = sign(&json!({"iss": ISSUER, "aud": "mcp-gateway", "sub": "alice",
                               "exp": now_secs() - 3600}));
    for (case, authorization) in [
        ("no header", None),
        ("bare token", Some(token.clone())),
        ("basic scheme", Some(format!("Basic {token}"))),
        ("alg none", Some(format!("Bearer {unsigned}"))),
        ("other audience", Some(format!("Bearer {other_audience}"))),
        ("expired", Some(format!("Bearer {expired}"))),
        ("two tokens", Some(format!("Bearer {token} {token}"))),
    ] {
        let headers: Vec<(&str, &str)> = authorization
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        let reply = post_to(
            &s.sidecar.url,
            None,
            "application/json",
            body.clone(),
            &headers,
        )
        .await;
        assert_eq!(reply.status, 401, "{case}: {reply:?}");
        s.assert_nothing_forwarded(case).await;
    }

    // Control: the same token in the header is accepted, and the upstream does not get it.
    let bearer = format!("Bearer {token}");
    let mut client = McpClient::new(&s.sidecar.url);
    let reply = post_to(
        &s.sidecar.url,
        None,
        "application/json",
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "e2e", "version": "1"}}})
        .to_string(),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    client.session = reply
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let reply = post_to(
        &s.sidecar.url,
        client.session.as_deref(),
        "application/json",
        body,
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(reply.message["result"]["isError"], false, "{reply:?}");
    let seen = s.tap.take();
    assert_eq!(forwarded_calls(&seen).len(), 1);
    assert!(
        seen.iter()
            .all(|r| !r.headers.contains_key("authorization")),
        "the token is for the sidecar and is not forwarded"
    );
    assert_eq!(s.demo.calls().await.len(), 1);
}

// --- faults -------------------------------------------------------------------------------

#[tokio::test]
async fn upstream_killed_mid_run_then_restarted() {
    let Stack {
        mut demo,
        ws: _ws,
        sidecar,
        mut client,
    } = Stack::start(&POLICIES).await;
    let addr = demo.addr();
    assert_eq!(
        client
            .call("get_order", json!({"order_id": "1"}))
            .await
            .message["result"]["isError"],
        false
    );

    demo.proc.kill();
    // Denials and refusals need no upstream.
    let denied = client.call("delete_order", json!({"order_id": "1"})).await;
    assert_eq!(denied.message["error"]["message"], DENIED, "{denied:?}");
    let malformed = post_to(&sidecar.url, None, "application/json", "{", &[]).await;
    assert_eq!(malformed.message["error"]["code"], -32700);
    // An allowed call cannot be delivered: 502, and the sidecar stays up.
    for _ in 0..3 {
        let down = client
            .call("process_refund", json!({"amount": 10, "customer_id": "C1"}))
            .await;
        assert_eq!(down.status, 502, "{down:?}");
        assert_eq!(down.message["error"]["code"], -32603, "{down:?}");
    }
    assert_eq!(sidecar.admin_get("/livez").await.0, 200);

    let demo = DemoServer::start(&addr, false);
    let mut client = McpClient::initialized(&sidecar.url).await;
    let back = client
        .call("process_refund", json!({"amount": 10, "customer_id": "C1"}))
        .await;
    assert_eq!(back.message["result"]["isError"], false, "{back:?}");
    let denied = client
        .call(
            "process_refund",
            json!({"amount": 5000, "customer_id": "C1"}),
        )
        .await;
    assert_eq!(denied.message["error"]["code"], -32002, "{denied:?}");
    assert_eq!(
        demo.calls().await,
        [json!({"tool": "process_refund", "arguments": {"amount": 10, "customer_id": "C1"}})],
        "the restarted upstream got the allowed call once, nothing else"
    );
}

/// What the endless upstream saw: the bodies it received and how many of its streams ended
/// because nobody read them any more.
#[derive(Default)]
struct Endless {
    received: Mutex<Vec<String>>,
    streams_ended: std::sync::atomic::AtomicUsize,
}

/// An upstream whose tools/call answers are SSE streams of a progress event every 200 ms,
/// without end until the reader goes away.
async fn endless_upstream() -> (String, Arc<Endless>) {
    use axum::routing::post;
    let endless = Arc::new(Endless::default());
    let record = Arc::clone(&endless);
    let app = axum::Router::new().route(
        "/mcp",
        post(move |body: String| {
            let record = Arc::clone(&record);
            async move {
                record.received.lock().expect("lock").push(body.clone());
                let request: Value = serde_json::from_str(&body).unwrap_or_default();
                if request["method"] != "tools/call" {
                    let answer = json!({"jsonrpc": "2.0", "id": request["id"], "result": {}});
                    return ([("content-type", "application/json")], answer.to_string())
                        .into_response();
                }
                let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(1);
                tokio::spawn(async move {
                    let mut n = 0u64;
                    loop {
                        let event = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                            "params": {"progressToken": 1, "progress": n}});
                        if tx.send(Ok(format!("data: {event}\n\n"))).await.is_err() {
                            record
                                .streams_ended
                                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            break;
                        }
                        n += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                });
                let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|item| (item, rx))
                });
                (
                    [("content-type", "text/event-stream")],
                    axum::body::Body::from_stream(stream),
                )
                    .into_response()
            }
        }),
    );
    (format!("{}/mcp", serve(app).await), endless)
}

#[tokio::test]
async fn clients_that_go_away_mid_stream_leave_the_sidecar_serving() {
    let (upstream, endless) = endless_upstream().await;
    let ws = Workspace::new();
    ws.policy("all.cedar", "permit(principal, action, resource);");
    let sidecar = Sidecar::start_ready(&ws.config(&upstream, "schema = \"none\""), &[]).await;
    let body = call(json!(1), "slow", json!({})).to_string();

    // Read a few events of a streaming answer, then drop the connection; several times.
    for round in 0..5 {
        let mut response = post_without_session(&sidecar.url, body.clone()).await;
        assert_eq!(response.status().as_u16(), 200);
        assert_streaming(&mut response, &format!("round {round}")).await;
        drop(response);
    }
    // A request cut off in the middle of its body, and a connection closed before its headers end.
    let partial = format!(
        "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"jsonrpc\":\"2.0\",",
        path_of(&sidecar.url),
        host_of(&sidecar.url)
    );
    for request in [
        partial.as_str(),
        "POST /mcp HTTP/1.1\r\nhost: x\r\ncontent-le",
    ] {
        let mut stream = tokio::net::TcpStream::connect(host_of(&sidecar.url))
            .await
            .expect("connect");
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
            .await
            .expect("write");
        drop(stream);
    }

    // The upstream streams end when their readers are gone (the sidecar does not keep pulling).
    eventually("the upstream streams ended", || {
        std::future::ready(
            endless
                .streams_ended
                .load(std::sync::atomic::Ordering::SeqCst)
                == 5,
        )
    })
    .await;
    assert_eq!(sidecar.admin_get("/livez").await.0, 200);
    let calls = endless
        .received
        .lock()
        .expect("lock")
        .iter()
        .filter(|b| b.contains("tools/call"))
        .count();
    assert_eq!(calls, 5, "the cut-off request was not forwarded");

    // And it still serves a whole answer.
    let mut response = post_without_session(&sidecar.url, body).await;
    assert_eq!(response.status().as_u16(), 200);
    assert_streaming(&mut response, "after the cut-off requests").await;
}

/// POSTs the JSON `body` to `url` with only the content type and accept headers, and returns
/// the response unread.
async fn post_without_session(url: &str, body: String) -> reqwest::Response {
    http()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body)
        .send()
        .await
        .expect("POST")
}

#[tokio::test]
async fn a_get_event_stream_dropped_by_the_client_leaves_the_sidecar_serving() {
    let Stack {
        demo,
        ws: _ws,
        sidecar,
        mut client,
    } = Stack::start(&POLICIES).await;
    for round in 0..3 {
        let mut stream = client.get_event_stream(&[]).await;
        assert_eq!(stream.status().as_u16(), 200);
        assert_streaming(&mut stream, &format!("round {round}")).await;
        drop(stream);
    }
    assert_eq!(sidecar.admin_get("/livez").await.0, 200);
    let answer = client.call("get_order", json!({"order_id": "1"})).await;
    assert_eq!(answer.message["result"]["isError"], false, "{answer:?}");
    assert_eq!(demo.calls().await.len(), 1);
}
