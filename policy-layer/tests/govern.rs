//! Governing every MCP capability through the layer (`docs/cedar-model.md`, `policy.govern`):
//! an upstream that serves resources, resource templates, prompts and completions, and sends
//! the client its own requests (sampling, elicitation, roots) on the POST's event stream and
//! on the GET stream, recording everything it receives. Each governed capability is decided
//! by policy; with tools only governed, everything else passes exactly as before.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use policy_layer::auth::{Identity, PrincipalKind};
use policy_layer::model::{Capability, Govern, ModelConfig, ToolCatalog};
use policy_layer::{PeerAddr, PolicyEngine, PolicyLayer, PolicySource};
use serde_json::{Value, json};
use tower::ServiceExt;

const POLICIES: &str = r#"
@id("ask")
permit(principal, action in [AgentCore::Action::"T___ask", AgentCore::Action::"T___ask_small",
                             AgentCore::Action::"T___ask_2026", AgentCore::Action::"T___flood"], resource);
@id("docs")
permit(principal, action == AgentCore::Action::"ReadResource", resource) when { context.uri like "docs://*" };
@id("orders")
permit(principal, action == AgentCore::Action::"ReadResource", resource) when { context.uri like "orders://*" };
@id("no_secret_docs")
forbid(principal, action == AgentCore::Action::"ReadResource", resource) when { context.uri == "docs://secret" };
@id("no_resources_for_mallory")
forbid(principal == AgentCore::OAuthUser::"mallory", action == AgentCore::Action::"ReadResource", resource);
@id("summaries")
permit(principal, action == AgentCore::Action::"GetPrompt", resource)
when { context.name == "summarize" && context.arguments has topic && context.arguments.topic != "secrets" };
@id("small_samples")
permit(principal, action == AgentCore::Action::"CreateMessage", resource)
when { context.maxTokens <= 100 && !(context has includeContext && context.includeContext == "allServers") };
@id("form_elicitation")
permit(principal, action == AgentCore::Action::"Elicit", resource) when { context.mode == "form" };
@id("roots_for_alice")
permit(principal == AgentCore::OAuthUser::"alice", action == AgentCore::Action::"ListRoots", resource);
@id("office")
permit(principal, action == AgentCore::Action::"InvokeGateway", resource)
when { context.sourceIp.isInRange(ip("10.0.0.0/8")) };
@id("not_the_printer")
forbid(principal, action == AgentCore::Action::"InvokeGateway", resource)
when { context.sourceIp == ip("10.0.0.99") };
"#;

/// What reached the upstream.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    headers: HeaderMap,
    body: Value,
}

#[derive(Clone, Default)]
struct Upstream {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// The JSON-RPC messages POSTed that carry `method` (or, for `"response"`, that answer
    /// something).
    fn posted(&self, method: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == Method::POST)
            .filter(|s| match method {
                "response" => s.body.get("method").is_none(),
                m => s.body["method"] == m,
            })
            .collect()
    }
}

const SAMPLE_BIG: &str = r#"{"jsonrpc":"2.0","id":"s-1","method":"sampling/createMessage","params":{"maxTokens":4000,"messages":[{"role":"user","content":{"type":"text","text":"everything"}}]}}"#;
const SAMPLE_SMALL: &str = r#"{"jsonrpc":"2.0","id":"s-2","method":"sampling/createMessage","params":{"maxTokens":50,"messages":[{"role":"user","content":{"type":"text","text":"hi"}}]}}"#;

fn result_for(method: &str, params: &Value) -> Value {
    match method {
        "initialize" => {
            json!({"protocolVersion": "2025-06-18", "capabilities": {}, "serverInfo": {"name": "u", "version": "1"}})
        }
        "resources/list" => json!({"resources": [
            {"uri": "docs://readme", "name": "readme"},
            {"uri": "docs://secret", "name": "secret"},
            {"name": "no uri"}], "nextCursor": "c-2"}),
        "resources/templates/list" => json!({"resourceTemplates": [
            {"uriTemplate": "orders://{id}", "name": "order"}]}),
        "prompts/list" => json!({"prompts": [
            {"name": "summarize", "arguments": [{"name": "topic", "required": true}]},
            {"name": "leak_secrets"}]}),
        "resources/read" => json!({"contents": [{"uri": params["uri"], "text": "content"}]}),
        "prompts/get" => json!({"messages": []}),
        "completion/complete" => json!({"completion": {"values": ["x"]}}),
        "tools/list" => json!({"tools": [{"name": "ask"}]}),
        _ => json!({"content": []}),
    }
}

/// Answers by what it was sent: JSON, or an event stream when `x-test-sse` is set; a tools/call
/// of `ask` streams the server's sampling requests before its result, as a tool that samples
/// does.
async fn mcp(
    State(up): State<Upstream>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    up.seen.lock().expect("lock").push(Seen {
        method: method.clone(),
        headers: headers.clone(),
        body: value.clone(),
    });
    let sse = |events: Vec<String>| {
        let text: String = events
            .iter()
            .map(|e| format!("event: message\ndata: {e}\n\n"))
            .collect();
        ([("content-type", "text/event-stream")], text).into_response()
    };
    if method == Method::GET {
        let roots = r#"{"jsonrpc":"2.0","id":7,"method":"roots/list"}"#;
        let form = r#"{"jsonrpc":"2.0","id":8,"method":"elicitation/create","params":{"message":"name?","requestedSchema":{"type":"object"}}}"#;
        let url = r#"{"jsonrpc":"2.0","id":9,"method":"elicitation/create","params":{"mode":"url","message":"pay","url":"https://evil.example/pay","elicitationId":"e1"}}"#;
        return sse(vec![roots.into(), form.into(), url.into()]);
    }
    if method == Method::DELETE {
        return StatusCode::OK.into_response();
    }
    let Some(rpc_method) = value.get("method").and_then(Value::as_str) else {
        // A response to one of the server's requests (the sidecar's, or the client's).
        return StatusCode::ACCEPTED.into_response();
    };
    let Some(id) = value.get("id").cloned() else {
        return StatusCode::ACCEPTED.into_response();
    };
    let answer = |result: Value| json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
    let params = value.get("params").cloned().unwrap_or(Value::Null);
    if rpc_method == "tools/call" {
        let progress =
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}"#;
        let events = match params["name"].as_str() {
            Some("ask") => vec![
                SAMPLE_BIG.to_owned(),
                progress.to_owned(),
                answer(json!({"content": []})),
            ],
            Some("ask_small") => vec![SAMPLE_SMALL.to_owned(), answer(json!({"content": []}))],
            Some("ask_2026") => vec![answer(
                json!({"resultType": "input_required", "inputRequests": {
                "a": {"method": "elicitation/create", "params": {"message": "ok?"}},
                "b": {"method": "sampling/createMessage", "params": {"maxTokens": 9999}}}}),
            )],
            Some("flood") => (0..200)
                .map(|i| SAMPLE_BIG.replace("\"s-1\"", &format!("\"f-{i}\"")))
                .chain([answer(json!({"content": []}))])
                .collect(),
            _ => vec![answer(json!({"content": []}))],
        };
        return sse(events);
    }
    let result = result_for(rpc_method, &params);
    let mut response = if headers.contains_key("x-test-sse") {
        sse(vec![answer(result)])
    } else {
        ([("content-type", "application/json")], answer(result)).into_response()
    };
    if rpc_method == "initialize" {
        // A session per caller (the test names the caller in a header the upstream sees).
        let user = headers
            .get("x-test-user")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("alice");
        response.headers_mut().insert(
            "mcp-session-id",
            format!("s-{user}").parse().expect("value"),
        );
    }
    response
}

fn user(name: &str) -> Arc<Identity> {
    Arc::new(Identity {
        kind: PrincipalKind::OAuthUser,
        subject: name.to_owned(),
        tags: Vec::new(),
        expires_at: None,
    })
}

/// The app: the layer governing `govern`, each request's identity from `x-test-user`
/// (alice by default) and its peer from `x-test-peer` (none when absent).
fn app(govern: Govern, layer: impl FnOnce(PolicyLayer) -> PolicyLayer) -> (Router, Upstream) {
    let upstream = Upstream::default();
    let engine = PolicyEngine::from_sources(
        ModelConfig {
            target: "T".into(),
            gateway_id: "g".into(),
            govern,
            ..ModelConfig::default()
        },
        &[PolicySource::new("p.cedar", POLICIES)],
    )
    .expect("policies");
    engine.set_catalog(
        ToolCatalog::from_list(&json!({"tools": [{"name": "ask"}, {"name": "ask_small"}]}))
            .with_prompts(
                &json!([{"name": "summarize", "arguments": [{"name": "topic", "required": true}]}]),
            ),
    );
    let layer = layer(PolicyLayer::new(engine).identity_from_extension());
    let app = Router::new()
        .route("/mcp", axum::routing::any(mcp))
        .with_state(upstream.clone())
        .layer(layer)
        .layer(tower::util::MapRequestLayer::new(
            |mut request: Request<Body>| {
                let header = |name: &str| {
                    request
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let name = header("x-test-user").unwrap_or_else(|| "alice".to_owned());
                let peer = header("x-test-peer").and_then(|p| p.parse::<SocketAddr>().ok());
                request.extensions_mut().insert(user(&name));
                if let Some(peer) = peer {
                    request.extensions_mut().insert(PeerAddr(peer));
                }
                request
            },
        ));
    (app, upstream)
}

fn governed() -> Govern {
    Govern::new([
        Capability::Resources,
        Capability::Prompts,
        Capability::ServerRequests,
    ])
}

/// [`app`], with a session initialized through the layer for alice, bob and mallory.
async fn ready(govern: Govern) -> (Router, Upstream) {
    let (app, upstream) = app(govern, |l| l);
    for user in ["alice", "bob", "mallory"] {
        let body = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
        let request = Request::post("/mcp")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("x-test-user", user)
            .body(Body::from(body.to_string()))
            .expect("request");
        assert_eq!(send(&app, request).await.status, StatusCode::OK);
    }
    upstream.seen.lock().expect("lock").clear();
    (app, upstream)
}

struct Reply {
    status: StatusCode,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }

    /// The JSON-RPC messages of an event stream, in order.
    fn events(&self) -> Vec<Value> {
        self.text
            .split("\n\n")
            .filter_map(|event| {
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim)
                    .collect();
                (!data.is_empty()).then(|| serde_json::from_str(&data.join("\n")).expect("JSON"))
            })
            .collect()
    }

    /// The one message of a JSON reply or an event stream's message with an id.
    fn message(&self) -> Value {
        if self.text.trim_start().starts_with('{') {
            return self.json();
        }
        self.events()
            .into_iter()
            .find(|m| m.get("id").is_some())
            .unwrap_or(Value::Null)
    }
}

async fn send(app: &Router, request: Request<Body>) -> Reply {
    let reply = app.clone().oneshot(request).await.expect("infallible");
    let status = reply.status();
    let bytes = reply.into_body().collect().await.expect("body").to_bytes();
    Reply {
        status,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// A request in the caller's session (`x-test-user` among `headers`, else alice).
async fn rpc(
    app: &Router,
    headers: &[(&str, &str)],
    id: u64,
    method: &str,
    params: Value,
) -> Reply {
    let user = headers
        .iter()
        .find(|(name, _)| *name == "x-test-user")
        .map_or("alice", |(_, value)| *value);
    let mut request = Request::post("/mcp")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .header("mcp-session-id", format!("s-{user}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    send(
        app,
        request.body(Body::from(body.to_string())).expect("request"),
    )
    .await
}

fn denied(reply: &Reply, id: u64) -> bool {
    let message = reply.message();
    message["id"] == id && message["error"]["code"] == -32002
}

fn names(message: &Value, key: &str, item: &str) -> Vec<String> {
    message["result"][key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {message}"))
        .iter()
        .filter_map(|i| i[item].as_str().map(str::to_owned))
        .collect()
}

/// Waits (bounded) until the upstream received `count` POSTed responses.
async fn responses(upstream: &Upstream, count: usize) -> Vec<Seen> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = upstream.posted("response");
        if seen.len() >= count || Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn reads_and_prompts_are_decided_by_uri_and_name_and_default_deny() {
    let (app, upstream) = ready(governed()).await;
    let read = |id, uri: &str| rpc(&app, &[], id, "resources/read", json!({"uri": uri}));
    assert_eq!(
        read(1, "docs://readme").await.message()["result"]["contents"][0]["uri"],
        "docs://readme"
    );
    let secret = read(2, "docs://secret").await;
    assert!(denied(&secret, 2), "{}", secret.text);
    assert_eq!(
        secret.message()["error"]["message"],
        "Tool Execution Denied: Tool call not allowed due to policy enforcement [Policy evaluation denied due to no_secret_docs]"
    );
    assert!(
        denied(&read(3, "vault://key").await, 3),
        "a uri no permit names: default deny"
    );
    let get = |id, arguments: Value, name: &str| {
        rpc(
            &app,
            &[],
            id,
            "prompts/get",
            json!({"name": name, "arguments": arguments}),
        )
    };
    assert_eq!(
        get(4, json!({"topic": "cedar"}), "summarize")
            .await
            .message()["result"],
        json!({"messages": []})
    );
    assert!(denied(
        &get(5, json!({"topic": "secrets"}), "summarize").await,
        5
    ));
    assert!(denied(&get(6, json!({}), "leak_secrets").await, 6));
    let invalid = get(7, json!({}), "summarize").await.message();
    assert_eq!(invalid["error"]["code"], -32602, "{invalid}");
    assert_eq!(
        invalid["error"]["message"],
        "ValidationException - Parameter validation failed: params.arguments: missing required attribute `topic`"
    );
    let complete = |id, reference: Value| {
        rpc(
            &app,
            &[],
            id,
            "completion/complete",
            json!({"ref": reference, "argument": {"name": "a", "value": "b"}}),
        )
    };
    assert!(denied(
        &complete(8, json!({"type": "ref/prompt", "name": "leak_secrets"})).await,
        8
    ));
    assert!(
        complete(9, json!({"type": "ref/resource", "uri": "orders://{id}"}))
            .await
            .message()["result"]
            .is_object(),
        "a template of readable uris completes"
    );
    assert_eq!(
        complete(10, json!({"type": "ref/other"})).await.message()["error"]["code"],
        -32602
    );
    let forwarded: Vec<String> = upstream
        .seen()
        .iter()
        .filter_map(|s| s.body["id"].as_u64().map(|id| id.to_string()))
        .collect();
    assert_eq!(
        forwarded,
        ["1", "4", "9"],
        "only allowed requests reached the upstream"
    );
    // A read without an id is never forwarded undecided.
    let notification = send(
        &app,
        Request::post("/mcp")
            .header("content-type", "application/json")
            .body(Body::from(
                r#"{"jsonrpc":"2.0","method":"resources/read","params":{"uri":"docs://secret"}}"#,
            ))
            .expect("request"),
    )
    .await;
    assert_eq!(notification.json()["error"]["code"], -32600);
    assert_eq!(upstream.seen().len(), 3);
}

#[tokio::test]
async fn lists_keep_what_could_be_read_or_got_in_json_and_sse() {
    let (app, _) = ready(governed()).await;
    for sse in [&[][..], &[("x-test-sse", "1")][..]] {
        let resources = rpc(&app, sse, 1, "resources/list", json!({}))
            .await
            .message();
        assert_eq!(
            names(&resources, "resources", "uri"),
            ["docs://readme"],
            "{resources}"
        );
        assert_eq!(resources["result"]["nextCursor"], "c-2");
        let prompts = rpc(&app, sse, 2, "prompts/list", json!({})).await.message();
        assert_eq!(names(&prompts, "prompts", "name"), ["summarize"]);
        let templates = rpc(&app, sse, 3, "resources/templates/list", json!({}))
            .await
            .message();
        assert_eq!(
            names(&templates, "resourceTemplates", "uriTemplate"),
            ["orders://{id}"]
        );
        let mut mallory = sse.to_vec();
        mallory.push(("x-test-user", "mallory"));
        let templates = rpc(&app, &mallory, 4, "resources/templates/list", json!({}))
            .await
            .message();
        assert!(
            names(&templates, "resourceTemplates", "uriTemplate").is_empty(),
            "every read by mallory is a definite deny: {templates}"
        );
    }
}

#[tokio::test]
async fn a_denied_server_request_is_answered_to_the_server_and_never_shown_to_the_client() {
    let (app, upstream) = ready(governed()).await;
    let reply = rpc(
        &app,
        &[],
        1,
        "tools/call",
        json!({"name": "ask", "arguments": {}}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        !reply.text.contains("sampling/createMessage"),
        "{}",
        reply.text
    );
    let methods: Vec<Value> = reply.events().iter().map(|e| e["method"].clone()).collect();
    assert_eq!(
        methods,
        [json!("notifications/progress"), Value::Null],
        "{}",
        reply.text
    );
    let answers = responses(&upstream, 1).await;
    assert_eq!(answers.len(), 1, "one answer, in the client's place");
    let answer = &answers[0];
    assert_eq!(answer.body["id"], "s-1");
    assert_eq!(answer.body["error"]["code"], -32002);
    assert_eq!(
        answer.headers["mcp-session-id"], "s-alice",
        "in the stream's session"
    );
    assert_eq!(answer.headers["mcp-protocol-version"], "2025-06-18");

    let allowed = rpc(
        &app,
        &[],
        2,
        "tools/call",
        json!({"name": "ask_small", "arguments": {}}),
    )
    .await;
    assert_eq!(
        allowed.events()[0],
        serde_json::from_str::<Value>(SAMPLE_SMALL).expect("json")
    );
    assert_eq!(
        upstream.posted("response").len(),
        1,
        "nothing answered for an allowed request"
    );
}

#[tokio::test]
async fn server_requests_on_the_get_stream_are_decided_by_the_streams_principal() {
    let (app, upstream) = ready(governed()).await;
    let get = |user: &'static str| {
        send(
            &app,
            Request::get("/mcp")
                .header("accept", "text/event-stream")
                .header("mcp-session-id", format!("s-{user}"))
                .header("x-test-user", user)
                .body(Body::empty())
                .expect("request"),
        )
    };
    let alice = get("alice").await;
    let ids: Vec<Value> = alice.events().iter().map(|e| e["id"].clone()).collect();
    assert_eq!(
        ids,
        [json!(7), json!(8)],
        "the URL elicitation is denied: {}",
        alice.text
    );
    let answers = responses(&upstream, 1).await;
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].body["id"], 9);
    let bob = get("bob").await;
    let ids: Vec<Value> = bob.events().iter().map(|e| e["id"].clone()).collect();
    assert_eq!(ids, [json!(8)], "roots are alice's: {}", bob.text);
    let answered: Vec<Value> = responses(&upstream, 3)
        .await
        .iter()
        .map(|s| s.body["id"].clone())
        .collect();
    assert_eq!(answered, [json!(9), json!(7), json!(9)]);
}

#[tokio::test]
async fn input_required_results_with_a_denied_request_become_the_denial() {
    let (app, upstream) = ready(governed()).await;
    let reply = rpc(
        &app,
        &[],
        5,
        "tools/call",
        json!({"name": "ask_2026", "arguments": {}}),
    )
    .await;
    let message = reply.message();
    assert_eq!(
        upstream.posted("tools/call").len(),
        1,
        "the call itself was allowed"
    );
    assert!(
        denied(&reply, 5),
        "the sampling it requires is not: {message}"
    );
    assert!(!reply.text.contains("inputRequests"), "{}", reply.text);
}

#[tokio::test]
async fn a_flood_of_denied_server_requests_never_reaches_the_client() {
    let (app, upstream) = ready(governed()).await;
    let reply = rpc(
        &app,
        &[],
        1,
        "tools/call",
        json!({"name": "flood", "arguments": {}}),
    )
    .await;
    assert!(!reply.text.contains("sampling"), "{}", reply.text);
    assert_eq!(
        reply.events().len(),
        1,
        "only the tool's result: {}",
        reply.text
    );
    // The answers are bounded (`filter/server_request.rs` tests the bound); each one sent
    // answers one request.
    let answered = responses(&upstream, 1).await;
    assert!(!answered.is_empty() && answered.len() <= 200);
    for answer in &answered {
        assert!(
            answer.body["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("f-"))
        );
    }
}

#[tokio::test]
async fn invoke_decides_every_request_by_its_source_address() {
    let govern = Govern::new([Capability::Invoke]);
    let (app, upstream) = app(govern, |l| {
        l.trusted_proxies(vec!["127.0.0.1".parse().expect("net")])
    });
    let request = |method: Method, peer: Option<&str>, forwarded: Option<&str>| {
        let mut builder = Request::builder()
            .method(method)
            .uri("/mcp")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        if let Some(peer) = peer {
            builder = builder.header("x-test-peer", peer);
        }
        if let Some(forwarded) = forwarded {
            builder = builder.header("x-forwarded-for", forwarded);
        }
        let body = if builder.method_ref() == Some(&Method::POST) {
            Body::from(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        } else {
            Body::empty()
        };
        builder.body(body).expect("request")
    };
    let office = send(&app, request(Method::POST, Some("10.1.2.3:4000"), None)).await;
    assert_eq!(office.status, StatusCode::OK, "{}", office.text);
    let outside = send(&app, request(Method::POST, Some("192.0.2.1:4000"), None)).await;
    assert_eq!(outside.status, StatusCode::FORBIDDEN);
    assert_eq!(
        outside.json()["error"]["message"],
        "Gateway invocation not allowed due to policy enforcement [Policy evaluation denied due to no determining policies]"
    );
    let printer = send(&app, request(Method::GET, Some("10.0.0.99:1"), None)).await;
    assert_eq!(printer.status, StatusCode::FORBIDDEN, "explicit deny wins");
    assert!(printer.text.contains("not_the_printer"), "{}", printer.text);
    let unknown = send(&app, request(Method::POST, None, None)).await;
    assert_eq!(unknown.status, StatusCode::FORBIDDEN);
    assert_eq!(
        unknown.json()["error"]["message"],
        "Gateway invocation not allowed: the client's address is unknown"
    );
    let via_proxy = send(
        &app,
        request(Method::POST, Some("127.0.0.1:9"), Some("10.7.7.7")),
    )
    .await;
    assert_eq!(
        via_proxy.status,
        StatusCode::OK,
        "a trusted proxy says who calls"
    );
    let spoofed = send(
        &app,
        request(Method::POST, Some("192.0.2.1:9"), Some("10.7.7.7")),
    )
    .await;
    assert_eq!(
        spoofed.status,
        StatusCode::FORBIDDEN,
        "only trusted proxies are believed"
    );
    assert_eq!(
        upstream.seen().len(),
        2,
        "refused requests never reach the upstream"
    );
}

#[tokio::test]
async fn with_tools_only_governed_everything_else_passes_as_before() {
    let (app, upstream) = ready(Govern::TOOLS).await;
    let secret = rpc(
        &app,
        &[],
        1,
        "resources/read",
        json!({"uri": "docs://secret"}),
    )
    .await;
    assert_eq!(
        secret.message()["result"]["contents"][0]["uri"],
        "docs://secret"
    );
    let prompt = rpc(&app, &[], 2, "prompts/get", json!({"name": "leak_secrets"})).await;
    assert!(prompt.message()["result"].is_object());
    let resources = rpc(&app, &[], 3, "resources/list", json!({})).await;
    assert_eq!(
        resources.text,
        json!({"jsonrpc": "2.0", "id": 3, "result": result_for("resources/list", &Value::Null)})
            .to_string(),
        "byte for byte"
    );
    let prompts = rpc(&app, &[("x-test-sse", "1")], 4, "prompts/list", json!({})).await;
    assert_eq!(
        names(&prompts.message(), "prompts", "name"),
        ["summarize", "leak_secrets"]
    );
    let ask = rpc(
        &app,
        &[],
        5,
        "tools/call",
        json!({"name": "ask", "arguments": {}}),
    )
    .await;
    assert!(ask.text.contains("sampling/createMessage"), "{}", ask.text);
    let no_peer = rpc(&app, &[], 6, "resources/read", json!({"uri": "x://y"})).await;
    assert_eq!(no_peer.status, StatusCode::OK, "invoke is not governed");
    assert!(
        upstream.posted("response").is_empty(),
        "nothing answered in the client's place"
    );
}
