//! Complete mediation through the layer (`docs/threat-model.md`): an upstream that accepts any
//! method, header and body, and records what reaches it, behind `PolicyLayer`. Every path
//! around the policy an attacker could try is refused before the upstream sees it, and every
//! tools/list answer leaves filtered, wherever it comes from.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use policy_layer::auth::{Identity, PrincipalKind};
use policy_layer::model::{ModelConfig, ToolCatalog};
use policy_layer::protocol::origin::Origins;
use policy_layer::{PolicyEngine, PolicyLayer, PolicySource};
use serde_json::{Value, json};
use tower::ServiceExt;

const POLICIES: &str = r#"
permit(principal, action == AgentCore::Action::"T___refund", resource)
when { context.input.amount.lessThanOrEqual(decimal("1000.0")) };
permit(principal, action in [AgentCore::Action::"T___leak", AgentCore::Action::"T___gzip"], resource);
"#;

/// What reached the upstream.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone, Default)]
struct Upstream {
    seen: Arc<Mutex<Vec<Seen>>>,
    sessions: Arc<Mutex<u32>>,
}

impl Upstream {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

const SECRET_LIST: &str = r#"{"tools":[{"name":"refund","inputSchema":{"type":"object"}},{"name":"secret","inputSchema":{"type":"object"}}]}"#;

/// Accepts anything; answers by what it was sent.
async fn anything(
    State(up): State<Upstream>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    up.seen.lock().expect("lock").push(Seen {
        method: method.clone(),
        uri,
        headers: headers.clone(),
        body: body.clone(),
    });
    if method == Method::GET {
        // The standalone stream, or a resumed one: the upstream replays a list answer on it.
        let text = format!(
            "id: 1\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{{}}}}\n\nid: 2\ndata: {{\"jsonrpc\":\"2.0\",\"id\":42,\"result\":{SECRET_LIST}}}\n\n"
        );
        return ([("content-type", "text/event-stream")], text).into_response();
    }
    if method == Method::DELETE {
        return StatusCode::OK.into_response();
    }
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not json").into_response();
    };
    let id = value.get("id").cloned().unwrap_or(Value::Null);
    let method = value
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = value.pointer("/params/name").and_then(Value::as_str);
    let result = match (method, name) {
        ("initialize", _) => {
            let mut n = up.sessions.lock().expect("lock");
            *n += 1;
            let body = json!({"jsonrpc": "2.0", "id": id, "result": {"protocolVersion": "2025-06-18", "capabilities": {}, "serverInfo": {"name": "u", "version": "1"}}});
            return (
                [
                    ("content-type", "application/json"),
                    ("mcp-session-id", &format!("s-{n}")),
                ],
                body.to_string(),
            )
                .into_response();
        }
        ("tools/list", _) => serde_json::from_str(SECRET_LIST).expect("list"),
        // A tool whose reply is shaped like a list answer, for an id the client may have
        // pending from an earlier request.
        ("tools/call", Some("leak")) => {
            let list: Value = serde_json::from_str(SECRET_LIST).expect("list");
            let body = json!([{"jsonrpc": "2.0", "id": id, "result": {"content": []}}, {"jsonrpc": "2.0", "id": 7, "result": list}]);
            return ([("content-type", "application/json")], body.to_string()).into_response();
        }
        ("tools/call", Some("gzip")) => {
            return (
                [
                    ("content-type", "application/json"),
                    ("content-encoding", "gzip"),
                ],
                vec![0x1f, 0x8b, 0, 0],
            )
                .into_response();
        }
        _ => json!({"content": []}),
    };
    let body = json!({"jsonrpc": "2.0", "id": id, "result": result});
    ([("content-type", "application/json")], body.to_string()).into_response()
}

fn user(name: &str) -> Arc<Identity> {
    Arc::new(Identity {
        kind: PrincipalKind::OAuthUser,
        subject: name.to_owned(),
        tags: vec![("iss".to_owned(), "https://issuer".to_owned())],
        expires_at: None,
    })
}

fn app_with(layer: impl FnOnce(PolicyLayer) -> PolicyLayer) -> (Router, Upstream) {
    let upstream = Upstream::default();
    let engine = PolicyEngine::from_sources(
        ModelConfig {
            target: "T".into(),
            gateway_id: "g".into(),
            ..ModelConfig::default()
        },
        &[PolicySource::new("p.cedar", POLICIES)],
    )
    .expect("policies");
    engine.set_catalog(ToolCatalog::from_list(&json!({"tools": [
        {"name": "refund", "inputSchema": {"type": "object", "properties": {"amount": {"type": "number"}}, "required": ["amount"]}},
        {"name": "secret", "inputSchema": {"type": "object"}},
        {"name": "leak", "inputSchema": {"type": "object"}},
        {"name": "gzip", "inputSchema": {"type": "object"}}]})));
    let layer = layer(PolicyLayer::new(engine).identity_from_extension());
    let app = Router::new()
        .route("/mcp", axum::routing::any(anything))
        .with_state(upstream.clone())
        .layer(layer)
        // Outermost: the caller's identity, as an authentication layer in front would set it.
        .layer(tower::util::MapRequestLayer::new(
            |mut request: Request<Body>| {
                let name = request
                    .headers()
                    .get("x-test-user")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("alice")
                    .to_owned();
                request.extensions_mut().insert(user(&name));
                request
            },
        ));
    (app, upstream)
}

fn app() -> (Router, Upstream) {
    app_with(|layer| layer)
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }
}

async fn send(app: &Router, request: Request<Body>) -> Reply {
    let reply = app.clone().oneshot(request).await.expect("infallible");
    let status = reply.status();
    let headers = reply.headers().clone();
    let bytes = reply.into_body().collect().await.expect("body").to_bytes();
    Reply {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn post(body: &str) -> axum::http::request::Builder {
    let _ = body;
    Request::post("/mcp")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
}

fn call(id: u64, tool: &str, arguments: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{arguments}}}}}"#
    )
}

async fn post_body(app: &Router, body: &str) -> Reply {
    send(
        app,
        post(body)
            .body(Body::from(body.to_owned()))
            .expect("request"),
    )
    .await
}

fn listed(message: &Value) -> Vec<String> {
    message["result"]["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| t["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn methods_other_than_post_get_and_delete_are_refused_with_allow() {
    let (app, upstream) = app();
    let denied = call(1, "secret", "{}");
    for method in ["PUT", "PATCH", "HEAD", "OPTIONS", "TRACE", "PROPFIND"] {
        let request = Request::builder()
            .method(method)
            .uri("/mcp")
            .header("content-type", "application/json")
            .body(Body::from(denied.clone()))
            .expect("request");
        let reply = send(&app, request).await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(reply.headers["allow"], "GET, POST, DELETE", "{method}");
    }
    assert!(upstream.seen().is_empty(), "nothing reached the upstream");
}

#[tokio::test]
async fn get_and_delete_carry_no_body() {
    let (app, upstream) = app();
    for method in [Method::GET, Method::DELETE] {
        let request = Request::builder()
            .method(method.clone())
            .uri("/mcp")
            .header("content-type", "application/json")
            .body(Body::from(call(1, "secret", "{}")))
            .expect("request");
        let reply = send(&app, request).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{method}");
        assert_eq!(reply.json()["error"]["code"], -32600);
    }
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn a_list_answer_on_the_get_stream_is_filtered() {
    let (app, upstream) = app();
    let request = Request::get("/mcp")
        .header("accept", "text/event-stream")
        .header("last-event-id", "0")
        .body(Body::empty())
        .expect("request");
    let reply = send(&app, request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.text.contains("notifications/message"),
        "{}",
        reply.text
    );
    assert!(reply.text.contains(r#""name":"refund""#), "{}", reply.text);
    assert!(!reply.text.contains("secret"), "{}", reply.text);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, Method::GET);
    assert_eq!(seen[0].uri.path(), "/mcp");
    assert!(seen[0].body.is_empty());
    assert_eq!(seen[0].headers["last-event-id"], "0");
}

#[tokio::test]
async fn a_list_answer_in_the_reply_to_another_request_is_filtered() {
    let (app, _upstream) = app();
    let reply = post_body(&app, &call(1, "leak", "{}")).await;
    let messages = reply.json();
    let list = &messages[1];
    assert_eq!(list["id"], 7);
    assert_eq!(listed(list), ["refund"], "{}", reply.text);
}

#[tokio::test]
async fn a_batch_reusing_an_id_is_refused_before_anything_is_forwarded() {
    let (app, upstream) = app();
    let body = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":1,"method":"ping"}]"#;
    let reply = post_body(&app, body).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"]["code"], -32600);
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn a_foreign_origin_is_refused() {
    let origins = Origins::new(["http://127.0.0.1:8080"]).expect("origins");
    let (app, upstream) = app_with(|layer| layer.allowed_origins(origins));
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let from = |origin: &'static str| {
        post(body)
            .header("origin", origin)
            .body(Body::from(body))
            .expect("request")
    };
    let reply = send(&app, from("http://attacker.example")).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(upstream.seen().is_empty());
    let reply = send(&app, from("http://127.0.0.1:8080")).await;
    assert_eq!(reply.status, StatusCode::OK);
    // Without a list, no page may call.
    let (default, _) = self::app();
    assert_eq!(
        send(&default, from("http://127.0.0.1:8080")).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn routing_headers_appear_once_and_versions_are_known() {
    let (app, upstream) = app();
    let body = call(1, "refund", r#"{"amount":1}"#);
    let request = post(&body)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "refund")
        .header("mcp-name", "secret")
        .body(Body::from(body.clone()))
        .expect("request");
    let reply = send(&app, request).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.text.contains("mcp-name appears more than once"),
        "{}",
        reply.text
    );
    for version in ["2099-01-01", "2025-13-01", "2026-07-28x"] {
        let request = post(&body)
            .header("mcp-protocol-version", version)
            .body(Body::from(body.clone()))
            .expect("request");
        let reply = send(&app, request).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{version}");
        assert!(
            reply.text.contains("unsupported protocol version"),
            "{}",
            reply.text
        );
    }
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn a_session_serves_only_the_principal_that_opened_it() {
    let (app, upstream) = app();
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#;
    let opened = send(
        &app,
        post(init)
            .header("x-test-user", "alice")
            .body(Body::from(init))
            .expect("request"),
    )
    .await;
    let session = opened.headers["mcp-session-id"]
        .to_str()
        .expect("id")
        .to_owned();
    let ping = r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#;
    let as_user = |user: &'static str, id: &str| {
        post(ping)
            .header("x-test-user", user)
            .header("mcp-session-id", id)
            .body(Body::from(ping))
            .expect("request")
    };
    let before = upstream.seen().len();
    let stolen = send(&app, as_user("mallory", &session)).await;
    let unknown = send(&app, as_user("mallory", "s-unknown")).await;
    assert_eq!(stolen.status, StatusCode::NOT_FOUND);
    assert_eq!(
        (stolen.status, stolen.text.as_str()),
        (unknown.status, unknown.text.as_str()),
        "another principal's session reads exactly as an unknown one"
    );
    assert_eq!(upstream.seen().len(), before, "nothing forwarded");
    assert_eq!(
        send(&app, as_user("alice", &session)).await.status,
        StatusCode::OK
    );
    // The owner ends it; then it is unknown to everyone.
    let delete = Request::delete("/mcp")
        .header("x-test-user", "alice")
        .header("mcp-session-id", session.as_str())
        .body(Body::empty())
        .expect("request");
    assert_eq!(send(&app, delete).await.status, StatusCode::OK);
    assert_eq!(
        send(&app, as_user("alice", &session)).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_token_in_the_query_is_refused_in_any_spelling_and_never_forwarded() {
    let (app, upstream) = app();
    let body = call(1, "refund", r#"{"amount":1}"#);
    for query in [
        "access_token=x",
        "%61ccess_token=x",
        "ACCESS_TOKEN=x",
        "a=1&%2561ccess%5ftoken=x",
    ] {
        let request = Request::post(format!("/mcp?{query}"))
            .header("content-type", "application/json")
            .body(Body::from(body.clone()))
            .expect("request");
        let reply = send(&app, request).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{query}");
    }
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn a_compressed_upstream_reply_never_leaves_unread() {
    let (app, upstream) = app();
    let reply = post_body(&app, &call(1, "gzip", "{}")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert!(
        reply.text.contains("content-encoding `gzip`"),
        "{}",
        reply.text
    );
    assert_eq!(upstream.seen()[0].headers["accept-encoding"], "identity");
    // Nor does a compressed request body pass as if it were the JSON decided.
    let body = call(2, "refund", r#"{"amount":1}"#);
    let request = post(&body)
        .header("content-encoding", "deflate")
        .body(Body::from(body.clone()))
        .expect("request");
    assert_eq!(
        send(&app, request).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(upstream.seen().len(), 1);
}

#[tokio::test]
async fn numbers_are_typed_as_the_client_wrote_them() {
    let (app, upstream) = app();
    let reply = post_body(
        &app,
        &call(1, "refund", r#"{"amount":1000.00000000000000001}"#),
    )
    .await;
    let text = reply.json()["result"]["content"][0]["text"].clone();
    assert!(
        text.as_str()
            .is_some_and(|t| t
                .starts_with("ValidationException - Parameter validation failed: input.amount")),
        "{}",
        reply.text
    );
    assert!(
        upstream.seen().is_empty(),
        "a value Cedar cannot hold is never rounded and forwarded"
    );
    let exact = call(2, "refund", r#"{"amount":1000.0000}"#);
    let reply = post_body(&app, &exact).await;
    assert!(reply.json()["result"]["content"].is_array());
    assert_eq!(
        upstream.seen()[0].body,
        exact.as_bytes(),
        "forwarded as sent"
    );
}
