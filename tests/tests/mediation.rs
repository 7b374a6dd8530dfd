//! Complete mediation through the real sidecar (`docs/threat-model.md`), tried as an attacker
//! would: real signed tokens from a real identity provider (OIDC discovery, JWKS over HTTP),
//! the release of the same binary users run, and a tool server that accepts whatever it is sent
//! (any method, any encoding, any header) and records it. Each test asserts what the client
//! got and what reached the tool server.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use e2e::{Idp, Sidecar, Workspace, http, serve};
use serde_json::{Value, json};

/// What reached the tool server.
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

const LIST: &str = r#"{"tools":[{"name":"get_order","inputSchema":{"type":"object"}},{"name":"delete_order","inputSchema":{"type":"object"}}]}"#;

const POLICIES: &str = r#"
@id("orders_read")
permit(principal, action == AgentCore::Action::"RefundTool___get_order", resource)
when { context.input.order_id != "" };
@id("refunds_small")
permit(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
when { context.input.amount.lessThanOrEqual(decimal("1000.0")) };
"#;

const TOOLS: &str = r#"{"tools":[
 {"name":"get_order","inputSchema":{"type":"object","properties":{"order_id":{"type":"string"}},"required":["order_id"]}},
 {"name":"process_refund","inputSchema":{"type":"object","properties":{"amount":{"type":"number"}},"required":["amount"]}},
 {"name":"delete_order","inputSchema":{"type":"object","properties":{"order_id":{"type":"string"}}}}]}"#;

/// A tool server that accepts anything and answers as a careless (or hostile) one would.
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
        headers,
        body: body.clone(),
    });
    if method == Method::GET {
        // A resumed stream replays the answer to a list: for an id this GET never sent.
        let text = format!(
            "id: 5\ndata: {{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{LIST}}}\n\n: keepalive\n\n"
        );
        return ([("content-type", "text/event-stream")], text).into_response();
    }
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::OK, "accepted whatever it was").into_response();
    };
    let messages = match value {
        Value::Array(items) => items,
        other => vec![other],
    };
    let mut session = None;
    let mut answers = Vec::new();
    for m in &messages {
        let Some(id) = m.get("id") else { continue };
        let result = match (m["method"].as_str(), m["params"]["name"].as_str()) {
            (Some("initialize"), _) => {
                let mut n = up.sessions.lock().expect("lock");
                *n += 1;
                session = Some(format!("session-{n}"));
                json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "any", "version": "1"}})
            }
            (Some("tools/list"), _) => serde_json::from_str(LIST).expect("list"),
            (Some("tools/call"), Some("get_order")) => {
                // Its reply also carries an answer to a list the client may have pending.
                answers.push(json!({"jsonrpc": "2.0", "id": 99, "result": serde_json::from_str::<Value>(LIST).expect("list")}));
                json!({"content": [{"type": "text", "text": "order"}]})
            }
            _ => json!({"content": [{"type": "text", "text": "done"}]}),
        };
        answers.push(json!({"jsonrpc": "2.0", "id": id, "result": result}));
    }
    let body = if answers.len() == 1 {
        answers.remove(0)
    } else {
        Value::Array(answers)
    };
    let mut reply = ([("content-type", "application/json")], body.to_string()).into_response();
    if let Some(session) = session {
        reply
            .headers_mut()
            .insert("mcp-session-id", session.parse().expect("header"));
    }
    reply
}

struct Setup {
    idp: Idp,
    upstream: Upstream,
    sidecar: Sidecar,
    _ws: Workspace,
}

impl Setup {
    async fn start(env: &[(&str, &str)]) -> Self {
        let idp = Idp::start().await;
        let upstream = Upstream::default();
        let app = axum::Router::new()
            .route("/mcp", axum::routing::any(anything))
            .with_state(upstream.clone());
        let url = format!("{}/mcp", serve(app).await);
        let ws = Workspace::new();
        ws.policy("p.cedar", POLICIES);
        ws.file("tools.json", TOOLS);
        let config = ws.config(&url, "schema = \"tools.json\"");
        let mut all: Vec<(&str, String)> = idp.sidecar_env();
        all.extend(env.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let sidecar = Sidecar::start_ready(&config, &all).await;
        Self {
            idp,
            upstream,
            sidecar,
            _ws: ws,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.upstream.seen.lock().expect("lock").clone()
    }

    fn bearer(&self, sub: &str) -> String {
        format!("Bearer {}", self.idp.token(sub, &json!({})))
    }

    fn request(&self, method: &str, sub: &str) -> reqwest::RequestBuilder {
        http()
            .request(method.parse().expect("method"), &self.sidecar.url)
            .header("authorization", self.bearer(sub))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
    }

    /// Opens a session for `sub`: its id.
    async fn initialize(&self, sub: &str) -> String {
        let reply = self
            .request("POST", sub)
            .body(r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}"#)
            .send()
            .await
            .expect("initialize");
        assert_eq!(reply.status(), 200);
        reply.headers()["mcp-session-id"]
            .to_str()
            .expect("id")
            .to_owned()
    }
}

async fn text(reply: reqwest::Response) -> (u16, HeaderMap, String) {
    let status = reply.status().as_u16();
    let headers = reply.headers().clone();
    (status, headers, reply.text().await.expect("body"))
}

fn call(id: u64, tool: &str, arguments: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{arguments}}}}}"#
    )
}

fn names(list: &Value) -> Vec<&str> {
    list["result"]["tools"]
        .as_array()
        .map(|t| t.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_denied_call_never_reaches_the_tool_server_by_another_method() {
    let s = Setup::start(&[]).await;
    let denied = call(1, "delete_order", r#"{"order_id":"7"}"#);
    for method in ["PUT", "PATCH", "HEAD", "OPTIONS", "TRACE", "PROPFIND"] {
        let (status, headers, _) = text(
            s.request(method, "alice")
                .body(denied.clone())
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_eq!(status, 405, "{method}");
        assert_eq!(headers["allow"], "GET, POST, DELETE", "{method}");
    }
    for method in ["GET", "DELETE"] {
        let (status, _, body) = text(
            s.request(method, "alice")
                .body(denied.clone())
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_eq!(status, 400, "{method} with a body: {body}");
    }
    assert!(
        s.seen().is_empty(),
        "nothing reached the tool server: {:?}",
        s.seen()
    );
}

#[tokio::test]
async fn a_list_answer_leaves_filtered_on_every_stream() {
    let s = Setup::start(&[]).await;
    let session = s.initialize("alice").await;
    // The POST that asked.
    let (_, _, body) = text(
        s.request("POST", "alice")
            .header("mcp-session-id", &session)
            .body(r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#)
            .send()
            .await
            .expect("list"),
    )
    .await;
    let list: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(names(&list), ["get_order"], "{body}");
    // The reply to another request, carrying an answer for an id the client may have pending.
    let (_, _, body) = text(
        s.request("POST", "alice")
            .header("mcp-session-id", &session)
            .body(call(4, "get_order", r#"{"order_id":"1"}"#))
            .send()
            .await
            .expect("call"),
    )
    .await;
    assert!(
        body.contains("\"id\":99") && !body.contains("delete_order"),
        "{body}"
    );
    // A resumed GET stream replaying the answer.
    let (status, _, body) = text(
        s.request("GET", "alice")
            .header("mcp-session-id", &session)
            .header("accept", "text/event-stream")
            .header("last-event-id", "4")
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        body.contains("get_order") && !body.contains("delete_order"),
        "{body}"
    );
    assert!(body.contains(": keepalive"), "other events pass: {body}");
    let get = s.seen().pop().expect("the GET went on");
    assert_eq!(get.method, Method::GET);
    assert!(get.body.is_empty());
    // A batch reusing the list's id for another request.
    let batch = r#"[{"jsonrpc":"2.0","id":8,"method":"tools/list"},{"jsonrpc":"2.0","id":8,"method":"ping"}]"#;
    let before = s.seen().len();
    let (status, _, body) = text(
        s.request("POST", "alice")
            .header("mcp-session-id", &session)
            .body(batch)
            .send()
            .await
            .expect("batch"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(s.seen().len(), before, "the batch was not forwarded");
    // The tool server was asked for an uncompressed reply whatever the client accepts.
    let (_, _, _) = text(
        s.request("POST", "alice")
            .header("mcp-session-id", &session)
            .header("accept-encoding", "gzip, br")
            .body(r#"{"jsonrpc":"2.0","id":9,"method":"ping"}"#)
            .send()
            .await
            .expect("ping"),
    )
    .await;
    let last = s.seen().pop().expect("seen");
    assert_eq!(last.headers["accept-encoding"], "identity");
}

#[tokio::test]
async fn another_principal_cannot_use_a_session() {
    let s = Setup::start(&[]).await;
    let session = s.initialize("alice").await;
    let before = s.seen().len();
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let stolen = text(
        s.request("POST", "mallory")
            .header("mcp-session-id", &session)
            .body(ping)
            .send()
            .await
            .expect("post"),
    )
    .await;
    let unknown = text(
        s.request("POST", "mallory")
            .header("mcp-session-id", "session-404")
            .body(ping)
            .send()
            .await
            .expect("post"),
    )
    .await;
    assert_eq!(stolen.0, 404);
    assert_eq!(
        (stolen.0, &stolen.2),
        (unknown.0, &unknown.2),
        "read exactly as an unknown session"
    );
    let get = text(
        s.request("GET", "mallory")
            .header("mcp-session-id", &session)
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(get.0, 404);
    assert_eq!(s.seen().len(), before, "nothing forwarded");
    let own = text(
        s.request("POST", "alice")
            .header("mcp-session-id", &session)
            .body(ping)
            .send()
            .await
            .expect("post"),
    )
    .await;
    assert_eq!(own.0, 200);
    let ended = text(
        s.request("DELETE", "alice")
            .header("mcp-session-id", &session)
            .send()
            .await
            .expect("delete"),
    )
    .await;
    assert_eq!(ended.0, 200);
    let after = text(
        s.request("POST", "alice")
            .header("mcp-session-id", &session)
            .body(ping)
            .send()
            .await
            .expect("post"),
    )
    .await;
    assert_eq!(after.0, 404, "a deleted session is unknown");
}

#[tokio::test]
async fn a_page_of_another_origin_is_refused() {
    let s = Setup::start(&[]).await;
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let (status, _, _) = text(
        s.request("POST", "alice")
            .header("origin", "http://attacker.example")
            .body(ping)
            .send()
            .await
            .expect("post"),
    )
    .await;
    assert_eq!(status, 403);
    assert!(s.seen().is_empty());
    // The sidecar's own origin is allowed by default.
    let own = s.sidecar.url.trim_end_matches("/mcp").to_owned();
    let (status, _, _) = text(
        s.request("POST", "alice")
            .header("origin", own)
            .body(ping)
            .send()
            .await
            .expect("post"),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn routing_headers_and_versions_are_checked() {
    let s = Setup::start(&[]).await;
    let body = call(1, "get_order", r#"{"order_id":"1"}"#);
    let (status, _, text_) = text(
        s.request("POST", "alice")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "get_order")
            .header("mcp-name", "delete_order")
            .body(body.clone())
            .send()
            .await
            .expect("post"),
    )
    .await;
    assert_eq!(status, 400, "{text_}");
    let (status, _, _) = text(
        s.request("POST", "alice")
            .header("mcp-protocol-version", "2099-01-01")
            .body(body)
            .send()
            .await
            .expect("post"),
    )
    .await;
    assert_eq!(status, 400);
    assert!(s.seen().is_empty());
}

#[tokio::test]
async fn a_token_in_the_url_is_refused_in_any_spelling_and_never_travels_on() {
    let s = Setup::start(&[]).await;
    let token = s.idp.token("alice", &json!({}));
    for name in [
        "access_token",
        "%61ccess_token",
        "ACCESS_TOKEN",
        "%2561ccess%5Ftoken",
    ] {
        let url = format!("{}?{name}={token}", s.sidecar.url);
        let (status, _, _) = text(
            http()
                .post(url)
                .header("content-type", "application/json")
                .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
                .send()
                .await
                .expect("post"),
        )
        .await;
        assert_eq!(status, 401, "{name}");
    }
    assert!(
        s.seen()
            .iter()
            .all(|seen| !seen.uri.to_string().contains(&token))
    );
    assert!(s.seen().is_empty());
}

#[tokio::test]
async fn a_client_follows_the_401_to_the_metadata_and_on_to_the_issuer() {
    let s = Setup::start(&[]).await;
    let (status, headers, _) = text(
        http()
            .post(&s.sidecar.url)
            .header("content-type", "application/json")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
            .send()
            .await
            .expect("post"),
    )
    .await;
    assert_eq!(status, 401);
    let challenge = headers["www-authenticate"].to_str().expect("ascii");
    let url = challenge
        .split("resource_metadata=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("resource_metadata in the challenge");
    let origin = s.sidecar.url.trim_end_matches("/mcp");
    assert_eq!(
        url,
        format!("{origin}/.well-known/oauth-protected-resource/mcp")
    );
    let metadata: Value = http()
        .get(url)
        .send()
        .await
        .expect("metadata")
        .json()
        .await
        .expect("json");
    assert_eq!(metadata["resource"], s.sidecar.url);
    let issuer = metadata["authorization_servers"][0]
        .as_str()
        .expect("an authorization server");
    assert_eq!(issuer, s.idp.issuer);
    let discovery: Value = http()
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await
        .expect("discovery")
        .json()
        .await
        .expect("json");
    assert_eq!(discovery["issuer"], issuer);
    assert!(discovery["jwks_uri"].as_str().is_some());
    assert!(s.seen().is_empty());
}

#[tokio::test]
async fn forwarded_headers_count_only_from_trusted_proxies() {
    let s = Setup::start(&[("POLICY_SIDECAR_LISTEN_TRUSTED_PROXIES", "127.0.0.1")]).await;
    let challenge = |reply: &reqwest::Response| {
        reply.headers()["www-authenticate"]
            .to_str()
            .expect("ascii")
            .to_owned()
    };
    let reply = http()
        .post(&s.sidecar.url)
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "mcp.example.com")
        .send()
        .await
        .expect("post");
    assert!(challenge(&reply).contains(r#"resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp""#), "{}", challenge(&reply));
    let untrusted = Setup::start(&[]).await;
    let reply = http()
        .post(&untrusted.sidecar.url)
        .header("x-forwarded-host", "mcp.example.com")
        .send()
        .await
        .expect("post");
    assert!(
        !challenge(&reply).contains("mcp.example.com"),
        "{}",
        challenge(&reply)
    );
}

#[tokio::test]
async fn numbers_are_decided_as_the_client_wrote_them() {
    let s = Setup::start(&[]).await;
    let (_, _, body) = text(
        s.request("POST", "alice")
            .body(call(
                1,
                "process_refund",
                r#"{"amount":1000.00000000000000001}"#,
            ))
            .send()
            .await
            .expect("post"),
    )
    .await;
    assert!(
        body.contains("ValidationException - Parameter validation failed: input.amount"),
        "{body}"
    );
    assert!(s.seen().is_empty(), "never rounded and forwarded");
}

#[tokio::test]
async fn http_framing_tricks_are_refused_or_decided_on_their_own() {
    let s = Setup::start(&[]).await;
    let host = e2e::host_of(&s.sidecar.url).to_owned();
    let path = e2e::path_of(&s.sidecar.url).to_owned();
    let token = s.idp.token("alice", &json!({}));
    let denied = call(1, "delete_order", r#"{"order_id":"7"}"#);
    let head = |method: &str, extra: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\n{extra}"
        )
    };
    // A length and a chunked encoding both: the chunked body is the one read (RFC 9112), and it
    // is that body that is decided; the sidecar frames what it forwards itself.
    let both = format!(
        "{}content-length: 4\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{denied}\r\n0\r\n\r\n",
        head("POST", ""),
        denied.len()
    );
    let answer = e2e::raw_exchange(&s.sidecar.url, both.as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 400") || answer.contains("Tool Execution Denied"),
        "{answer}"
    );
    // Two lengths that disagree.
    let two = format!(
        "{}content-length: {}\r\ncontent-length: 2\r\n\r\n{denied}",
        head("POST", ""),
        denied.len()
    );
    assert!(
        e2e::raw_exchange(&s.sidecar.url, two.as_bytes())
            .await
            .starts_with("HTTP/1.1 400")
    );
    // A folded header line (obsolete line folding).
    let folded = format!(
        "{}x-note: a\r\n b\r\ncontent-length: {}\r\n\r\n{denied}",
        head("POST", ""),
        denied.len()
    );
    assert!(
        e2e::raw_exchange(&s.sidecar.url, folded.as_bytes())
            .await
            .starts_with("HTTP/1.1 400")
    );
    // A GET whose chunked body carries a call.
    let get = format!(
        "{}transfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{denied}\r\n0\r\n\r\n",
        head("GET", ""),
        denied.len()
    );
    assert!(
        e2e::raw_exchange(&s.sidecar.url, get.as_bytes())
            .await
            .starts_with("HTTP/1.1 400")
    );
    // A second request smuggled after the first body is a request of its own, and decided so.
    let ping = r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#;
    let pipelined = format!(
        "{}content-length: {}\r\n\r\n{ping}{}content-length: {}\r\nconnection: close\r\n\r\n{denied}",
        head("POST", ""),
        ping.len(),
        head("PUT", ""),
        denied.len()
    );
    let answer = e2e::raw_exchange(&s.sidecar.url, pipelined.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("HTTP/1.1 405"), "{answer}");
    let seen = s.seen();
    assert_eq!(seen.len(), 1, "only the ping went on: {seen:?}");
    assert_eq!(seen[0].body, ping.as_bytes());
}
