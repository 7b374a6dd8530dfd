//! Governing every MCP capability, end to end (`docs/cedar-model.md`, `policy.govern`): the
//! real sidecar, real JWTs from a real identity provider, in front of an MCP server built with
//! the official Python SDK (`tests/python/govern_server.py`, from the virtual environment
//! `tests/python/venv.sh` makes) that serves resources, a resource template, prompts,
//! completions, annotated tools, and tools that sample, elicit and ask for roots. The server
//! answers in event streams, then in JSON (its own requests then travel on the GET stream).
//!
//! Each governed capability is allowed and denied by policy; lists are filtered; a denied
//! server request never reaches the client and the server gets the sidecar's answer; tool
//! annotations decide calls; with `govern = ["tools"]` everything else passes as before.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use e2e::{Idp, Proc, Sidecar, Workspace, eventually, http};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// The tools' policies: annotation groups decide, interactive tools for signed-in users.
const TOOL_POLICIES: &str = r#"
@id("read_only_reports")
permit(principal, action in AgentCore::Action::"ReadOnlyTools", resource)
when { context.input has report_id && context.input.report_id != "" };

@id("idempotent_tags")
permit(principal, action in AgentCore::Action::"IdempotentTools", resource)
when { context.input has tag && context.input.tag != "secret" };

@id("no_destructive_reports")
forbid(principal, action in AgentCore::Action::"DestructiveTools", resource)
when { context.input has report_id };

@id("interactive_tools")
permit(principal is AgentCore::OAuthUser,
       action in [AgentCore::Action::"RefundTool___ask_llm",
                  AgentCore::Action::"RefundTool___confirm_action",
                  AgentCore::Action::"RefundTool___list_client_roots"],
       resource)
when { principal.hasTag("role") || principal.hasTag("team") };
"#;

/// The other capabilities' policies.
const CAPABILITY_POLICIES: &str = r#"
@id("public_docs")
permit(principal, action == AgentCore::Action::"ReadResource", resource)
when { context.uri like "docs://*" };

@id("no_secret_docs")
forbid(principal, action == AgentCore::Action::"ReadResource", resource)
when { context.uri == "docs://secret" };

@id("orders_for_support")
permit(principal is AgentCore::OAuthUser, action == AgentCore::Action::"ReadResource", resource)
when { context.uri like "orders://*" && principal.hasTag("role") && principal.getTag("role") == "support" };

@id("banned_read_nothing")
forbid(principal is AgentCore::OAuthUser, action == AgentCore::Action::"ReadResource", resource)
when { principal.hasTag("banned") };

@id("summaries")
permit(principal, action == AgentCore::Action::"GetPrompt", resource)
when { context.name == "summarize" && !(context.arguments has topic && context.arguments.topic == "secrets") };

@id("small_samples")
permit(principal, action == AgentCore::Action::"CreateMessage", resource)
when { context.maxTokens <= 100 };

@id("support_confirms")
permit(principal is AgentCore::OAuthUser, action == AgentCore::Action::"Elicit", resource)
when { context.mode == "form" && principal.hasTag("role") && principal.getTag("role") == "support" };

@id("roots_for_staff")
permit(principal is AgentCore::OAuthUser, action == AgentCore::Action::"ListRoots", resource)
when { principal.hasTag("role") };

@id("loopback_and_office")
permit(principal, action == AgentCore::Action::"InvokeGateway", resource)
when { context.sourceIp.isLoopback() || context.sourceIp.isInRange(ip("10.0.0.0/8")) };

@id("not_the_kiosk")
forbid(principal, action == AgentCore::Action::"InvokeGateway", resource)
when { context.sourceIp == ip("10.0.0.66") };
"#;

/// The workspace root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The Python with the official MCP SDK: `GOVERN_PYTHON`, else `.venv/interop`.
fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("GOVERN_PYTHON") {
        return PathBuf::from(python);
    }
    let python = root().join(".venv/interop/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run tests/python/venv.sh (scripts/test.sh does) or set GOVERN_PYTHON",
        python.display()
    );
    python
}

/// The Python SDK server.
struct PyServer {
    _proc: Proc,
    url: String,
    base: String,
}

impl PyServer {
    fn start(json_response: bool) -> Self {
        let mut command = Command::new(python());
        command.arg(root().join("tests/python/govern_server.py"));
        if json_response {
            command.arg("--json-response");
        }
        let mut proc = Proc::spawn(command);
        let url = proc
            .wait_line("listening on ")
            .trim_start_matches("listening on ")
            .trim()
            .to_owned();
        let base = url.trim_end_matches("/mcp").to_owned();
        Self {
            _proc: proc,
            url,
            base,
        }
    }

    /// What the server's own requests to the client got back.
    async fn received(&self) -> Vec<Value> {
        http()
            .get(format!("{}/received", self.base))
            .send()
            .await
            .expect("GET /received")
            .json()
            .await
            .expect("JSON")
    }
}

/// The answers a client gives the server's requests.
fn client_answer(request: &Value) -> Value {
    let result = match request["method"].as_str() {
        Some("sampling/createMessage") => {
            json!({"role": "assistant", "content": {"type": "text", "text": "42"}, "model": "test-model"})
        }
        Some("elicitation/create") => json!({"action": "accept", "content": {"confirm": true}}),
        Some("roots/list") => json!({"roots": [{"uri": "file:///work", "name": "work"}]}),
        _ => json!({}),
    };
    json!({"jsonrpc": "2.0", "id": request["id"], "result": result})
}

/// Splits event-stream text into the JSON-RPC messages of its complete events; the rest
/// stays in `buffer`.
fn take_events(buffer: &mut String) -> Vec<Value> {
    let mut out = Vec::new();
    *buffer = buffer.replace("\r\n", "\n");
    while let Some(end) = buffer.find("\n\n") {
        let event: String = buffer.drain(..end + 2).collect();
        let data: Vec<&str> = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .collect();
        if let Ok(message) = serde_json::from_str(&data.join("\n")) {
            out.push(message);
        }
    }
    out
}

/// An MCP client session through the sidecar: a bearer token, a session, a GET stream whose
/// server requests it answers, and what it saw of the server's requests.
struct Client {
    url: String,
    token: String,
    session: String,
    next_id: u64,
    /// The server's requests seen on the GET stream.
    stream_requests: mpsc::UnboundedReceiver<Value>,
}

impl Client {
    async fn connect(url: &str, token: String) -> Self {
        let http = http();
        let response = http
            .post(url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(
                json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {"sampling": {}, "elicitation": {"form": {}}, "roots": {}},
                    "clientInfo": {"name": "e2e-govern", "version": "1"}}})
                .to_string(),
            )
            .send()
            .await
            .expect("initialize");
        assert_eq!(response.status(), 200, "initialize");
        let session = response.headers()["mcp-session-id"]
            .to_str()
            .expect("session")
            .to_owned();
        let _ = response.text().await;
        let (tx, stream_requests) = mpsc::unbounded_channel();
        let client = Self {
            url: url.to_owned(),
            token,
            session,
            next_id: 1,
            stream_requests,
        };
        let note = client
            .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(note.status(), 202);
        client.open_stream(tx).await;
        client
    }

    fn request_builder(&self, method: reqwest::Method) -> reqwest::RequestBuilder {
        http()
            .request(method, &self.url)
            .bearer_auth(&self.token)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &self.session)
            .header("mcp-protocol-version", "2025-06-18")
    }

    async fn post(&self, body: &Value) -> reqwest::Response {
        self.request_builder(reqwest::Method::POST)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("POST")
    }

    /// Opens the session's GET stream; a task answers the server's requests on it and
    /// reports each one it saw.
    async fn open_stream(&self, seen: mpsc::UnboundedSender<Value>) {
        let mut response = self
            .request_builder(reqwest::Method::GET)
            .timeout(Duration::from_secs(300))
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 200, "GET stream");
        let (url, token, session) = (self.url.clone(), self.token.clone(), self.session.clone());
        tokio::spawn(async move {
            let mut buffer = String::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                for message in take_events(&mut buffer) {
                    if message.get("method").is_some() && message.get("id").is_some() {
                        let _ = http()
                            .post(&url)
                            .bearer_auth(&token)
                            .header("content-type", "application/json")
                            .header("accept", "application/json, text/event-stream")
                            .header("mcp-session-id", &session)
                            .header("mcp-protocol-version", "2025-06-18")
                            .body(client_answer(&message).to_string())
                            .send()
                            .await;
                        let _ = seen.send(message);
                    }
                }
            }
        });
    }

    /// A request: its answer, and the server's requests that came on its own stream (each
    /// answered as a client would).
    async fn request(&mut self, method: &str, params: Value) -> (Value, Vec<Value>) {
        let id = self.next_id;
        self.next_id += 1;
        let mut response = self
            .post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        let sse = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !sse {
            let status = response.status();
            let text = response.text().await.expect("body");
            let answer = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{method}: HTTP {status}, not JSON ({e}): {text}"));
            return (answer, Vec::new());
        }
        let mut buffer = String::new();
        let mut requests = Vec::new();
        while let Some(chunk) = response.chunk().await.expect("stream") {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            for message in take_events(&mut buffer) {
                if message["id"] == id && message.get("method").is_none() {
                    return (message, requests);
                }
                if message.get("method").is_some() && message.get("id").is_some() {
                    let answer = self.post(&client_answer(&message)).await;
                    assert_eq!(answer.status(), 202, "answering {message}");
                    requests.push(message);
                }
            }
        }
        panic!("{method}: the stream ended without the answer; requests seen: {requests:?}");
    }

    async fn answer(&mut self, method: &str, params: Value) -> Value {
        self.request(method, params).await.0
    }

    /// A tool call's result text, and the server's requests the client saw for it.
    async fn call(&mut self, tool: &str, arguments: Value) -> (Value, Vec<Value>) {
        self.request("tools/call", json!({"name": tool, "arguments": arguments}))
            .await
    }

    /// The server's requests seen on the GET stream so far.
    fn stream_requests(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(request) = self.stream_requests.try_recv() {
            out.push(request);
        }
        out
    }
}

fn text_of(answer: &Value) -> String {
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("not a tool result: {answer}"))
        .to_owned()
}

fn is_denied(answer: &Value) -> bool {
    answer["error"]["code"] == -32002
}

fn listed(answer: &Value, key: &str, item: &str) -> Vec<String> {
    let mut names: Vec<String> = answer["result"][key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key}: {answer}"))
        .iter()
        .filter_map(|i| i[item].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// A sidecar in front of `server` governing `govern`, with `policies`, its tokens from `idp`.
async fn sidecar(
    idp: &Idp,
    server: &PyServer,
    govern: &str,
    policies: &[&str],
) -> (Workspace, Sidecar) {
    let ws = Workspace::new();
    for (i, text) in policies.iter().enumerate() {
        ws.policy(&format!("p{i}.cedar"), text);
    }
    let config = ws.config(&server.url, &format!("govern = {govern}"));
    let mut env = idp.sidecar_env();
    env.push((
        "POLICY_SIDECAR_LISTEN_TRUSTED_PROXIES",
        "127.0.0.1".to_owned(),
    ));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let sidecar = Sidecar::start_ready(&config, &env).await;
    (ws, sidecar)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_governed_capability_is_decided_in_event_streams_and_json() {
    let idp = Idp::start().await;
    for json_response in [false, true] {
        let mode = if json_response { "json" } else { "sse" };
        let server = PyServer::start(json_response);
        let (_ws, sidecar) = sidecar(
            &idp,
            &server,
            r#"["tools", "resources", "prompts", "server_requests", "invoke"]"#,
            &[TOOL_POLICIES, CAPABILITY_POLICIES],
        )
        .await;
        let token = |sub: &str, claims: Value| idp.token(sub, &claims);
        let mut alice =
            Client::connect(&sidecar.url, token("alice", json!({"role": "support"}))).await;
        let mut bob = Client::connect(&sidecar.url, token("bob", json!({"team": "ops"}))).await;
        let mut mallory =
            Client::connect(&sidecar.url, token("mallory", json!({"banned": "yes"}))).await;

        // Lists keep what the caller could read, get or call.
        let resources = alice.answer("resources/list", json!({})).await;
        assert_eq!(
            listed(&resources, "resources", "uri"),
            ["docs://readme"],
            "{mode}"
        );
        let templates = alice.answer("resources/templates/list", json!({})).await;
        assert_eq!(
            listed(&templates, "resourceTemplates", "uriTemplate"),
            ["orders://{order_id}"],
            "{mode}"
        );
        let templates = mallory.answer("resources/templates/list", json!({})).await;
        assert!(
            listed(&templates, "resourceTemplates", "uriTemplate").is_empty(),
            "{mode}: every read by mallory is denied"
        );
        assert!(
            listed(
                &mallory.answer("resources/list", json!({})).await,
                "resources",
                "uri"
            )
            .is_empty()
        );
        let prompts = alice.answer("prompts/list", json!({})).await;
        assert_eq!(listed(&prompts, "prompts", "name"), ["summarize"], "{mode}");
        let tools = alice.answer("tools/list", json!({})).await;
        assert_eq!(
            listed(&tools, "tools", "name"),
            [
                "ask_llm",
                "confirm_action",
                "list_client_roots",
                "read_report",
                "tag_report"
            ],
            "{mode}: no permit names a group delete_report or plain_tool is in"
        );

        // Reads and prompts, by uri and name.
        let readme = alice
            .answer("resources/read", json!({"uri": "docs://readme"}))
            .await;
        assert_eq!(
            readme["result"]["contents"][0]["text"], "public readme",
            "{mode}"
        );
        let secret = alice
            .answer("resources/read", json!({"uri": "docs://secret"}))
            .await;
        assert!(is_denied(&secret), "{mode}: {secret}");
        assert!(
            secret["error"]["message"]
                .as_str()
                .is_some_and(|m| m.ends_with("[Policy evaluation denied due to no_secret_docs]"))
        );
        let order = alice
            .answer("resources/read", json!({"uri": "orders://7"}))
            .await;
        assert_eq!(
            order["result"]["contents"][0]["uri"], "orders://7",
            "{mode}"
        );
        assert!(
            is_denied(
                &bob.answer("resources/read", json!({"uri": "orders://7"}))
                    .await
            ),
            "{mode}"
        );
        let summary = alice
            .answer(
                "prompts/get",
                json!({"name": "summarize", "arguments": {"topic": "cedar"}}),
            )
            .await;
        assert_eq!(
            summary["result"]["messages"][0]["content"]["text"],
            "Summarize cedar in a short style."
        );
        assert!(is_denied(
            &alice
                .answer(
                    "prompts/get",
                    json!({"name": "summarize", "arguments": {"topic": "secrets"}})
                )
                .await
        ));
        assert!(
            is_denied(
                &alice
                    .answer("prompts/get", json!({"name": "leak_secrets"}))
                    .await
            ),
            "{mode}"
        );
        let completion = |name: &str| json!({"ref": {"type": "ref/prompt", "name": name}, "argument": {"name": "topic", "value": "ce"}});
        assert_eq!(
            alice
                .answer("completion/complete", completion("summarize"))
                .await["result"]["completion"]["values"][0],
            "ce-topic"
        );
        assert!(is_denied(
            &alice
                .answer("completion/complete", completion("leak_secrets"))
                .await
        ));

        // Tool calls decided by the annotation groups.
        let (read, _) = alice.call("read_report", json!({"report_id": "r1"})).await;
        assert_eq!(text_of(&read), "report r1", "{mode}");
        let (delete, _) = alice
            .call("delete_report", json!({"report_id": "r1"}))
            .await;
        assert!(
            is_denied(&delete)
                && delete["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("no_destructive_reports")),
            "{mode}: {delete}"
        );
        let (tag, _) = alice
            .call("tag_report", json!({"report_id": "r1", "tag": "q3"}))
            .await;
        assert_eq!(text_of(&tag), "tagged r1 q3");
        assert!(is_denied(
            &alice.call("plain_tool", json!({"text": "hi"})).await.0
        ));

        // The server's requests: allowed ones reach the client, denied ones are answered to
        // the server by the sidecar and never shown.
        let (small, seen) = alice
            .call("ask_llm", json!({"question": "6x7?", "max_tokens": 50}))
            .await;
        assert_eq!(text_of(&small), "model said: 42", "{mode}");
        let (big, seen_big) = alice
            .call(
                "ask_llm",
                json!({"question": "everything", "max_tokens": 500}),
            )
            .await;
        let refused = text_of(&big);
        assert!(
            refused.starts_with("sampling refused: Tool Execution Denied: Tool call not allowed due to policy enforcement"),
            "{mode}: {refused}"
        );
        assert!(seen_big.is_empty(), "{mode}: the client never saw it");
        let (confirmed, _) = alice
            .call("confirm_action", json!({"action": "ship"}))
            .await;
        assert_eq!(text_of(&confirmed), "user answered: accept", "{mode}");
        let (bob_confirm, bob_seen) = bob.call("confirm_action", json!({"action": "ship"})).await;
        assert!(
            text_of(&bob_confirm).starts_with("elicitation refused: "),
            "{mode}: {bob_confirm}"
        );
        assert!(bob_seen.is_empty());
        let (roots, _) = alice.call("list_client_roots", json!({})).await;
        assert_eq!(text_of(&roots), "roots: file:///work", "{mode}");
        let (bob_roots, _) = bob.call("list_client_roots", json!({})).await;
        assert!(
            text_of(&bob_roots).starts_with("roots refused: Tool Execution Denied"),
            "{mode}"
        );

        // Where the requests travelled: on the POST's stream (SSE) or the GET stream (JSON);
        // the denied ones nowhere the client reads.
        let alice_stream: Vec<String> = alice
            .stream_requests()
            .iter()
            .map(|r| r["method"].as_str().unwrap_or_default().to_owned())
            .collect();
        let bob_stream = bob.stream_requests();
        if json_response {
            assert_eq!(seen.len(), 0);
            assert_eq!(
                alice_stream,
                ["sampling/createMessage", "elicitation/create", "roots/list"],
                "{mode}"
            );
        } else {
            assert_eq!(
                seen.len(),
                1,
                "{mode}: the sampling request on the call's own stream"
            );
            assert_eq!(
                alice_stream,
                ["roots/list"],
                "{mode}: roots/list is never related to a request"
            );
        }
        assert!(
            bob_stream.is_empty(),
            "{mode}: bob was shown nothing: {bob_stream:?}"
        );
        let received = server.received().await;
        let errors: Vec<&Value> = received
            .iter()
            .filter(|r| r.get("error").is_some())
            .collect();
        assert_eq!(
            errors.len(),
            3,
            "{mode}: the server got the sidecar's three answers: {received:?}"
        );

        // Every decision is in the decision log, by method (written in batches: wait for it).
        let kinds = [
            "resources/read",
            "prompts/get",
            "completion/complete",
            "sampling/createMessage",
            "elicitation/create",
            "roots/list",
            "invoke",
            "resources/list",
            "prompts/list",
        ];
        eventually(
            &format!("{mode}: a decision-log line of every kind"),
            || async {
                let decisions = sidecar.decisions();
                kinds
                    .iter()
                    .all(|kind| decisions.iter().any(|d| d["kind"] == *kind))
            },
        )
        .await;
        let decisions = sidecar.decisions();
        assert!(
            decisions
                .iter()
                .any(|d| d["kind"] == "sampling/createMessage"
                    && d["decision"] == "DENY"
                    && d["action"] == "CreateMessage")
        );
    }
}

#[tokio::test]
async fn invoke_is_decided_by_the_address_a_trusted_proxy_forwards() {
    let idp = Idp::start().await;
    let server = PyServer::start(true);
    let (_ws, sidecar) = sidecar(
        &idp,
        &server,
        r#"["tools", "invoke"]"#,
        &[
            TOOL_POLICIES,
            r#"
@id("office")
permit(principal, action == AgentCore::Action::"InvokeGateway", resource)
when { context.sourceIp.isInRange(ip("10.0.0.0/8")) };
@id("not_the_kiosk")
forbid(principal, action == AgentCore::Action::"InvokeGateway", resource)
when { context.sourceIp == ip("10.0.0.66") };
"#,
        ],
    )
    .await;
    let token = idp.token("alice", &json!({"role": "support"}));
    let post = |forwarded: Option<&'static str>| {
        let mut request = http()
            .post(&sidecar.url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(
                json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "e2e", "version": "1"}}})
                .to_string(),
            );
        if let Some(address) = forwarded {
            request = request.header("x-forwarded-for", address);
        }
        request.send()
    };
    let direct = post(None).await.expect("POST");
    assert_eq!(direct.status(), 403, "loopback is not the office");
    let office = post(Some("10.1.2.3")).await.expect("POST");
    assert_eq!(
        office.status(),
        200,
        "the trusted proxy (loopback) says who calls"
    );
    let kiosk = post(Some("10.0.0.66")).await.expect("POST");
    assert_eq!(kiosk.status(), 403);
    let body: Value = kiosk.json().await.expect("JSON");
    assert_eq!(
        body["error"]["message"],
        "Gateway invocation not allowed due to policy enforcement [Policy evaluation denied due to not_the_kiosk]"
    );
    let invocations = sidecar.logged(3, |d| d["kind"] == "invoke").await;
    assert_eq!(invocations.len(), 3);
    assert_eq!(invocations[2]["decision"], "DENY");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tools_only_governed_everything_else_passes_as_before() {
    let idp = Idp::start().await;
    let server = PyServer::start(false);
    let (_ws, sidecar) = sidecar(&idp, &server, r#"["tools"]"#, &[TOOL_POLICIES]).await;
    let mut alice = Client::connect(
        &sidecar.url,
        idp.token("alice", &json!({"role": "support"})),
    )
    .await;
    let secret = alice
        .answer("resources/read", json!({"uri": "docs://secret"}))
        .await;
    assert_eq!(secret["result"]["contents"][0]["text"], "secret plans");
    let prompts = alice.answer("prompts/list", json!({})).await;
    assert_eq!(
        listed(&prompts, "prompts", "name"),
        ["leak_secrets", "summarize"]
    );
    let resources = alice.answer("resources/list", json!({})).await;
    assert_eq!(
        listed(&resources, "resources", "uri"),
        ["docs://readme", "docs://secret"]
    );
    let leak = alice
        .answer("prompts/get", json!({"name": "leak_secrets"}))
        .await;
    assert!(leak["result"]["messages"].is_array(), "{leak}");
    let (big, seen) = alice
        .call(
            "ask_llm",
            json!({"question": "everything", "max_tokens": 500}),
        )
        .await;
    assert_eq!(
        text_of(&big),
        "model said: 42",
        "sampling is the client's business"
    );
    assert_eq!(seen.len(), 1);
    // Tool annotations decide calls whatever is governed.
    assert_eq!(
        text_of(
            &alice
                .call("read_report", json!({"report_id": "r1"}))
                .await
                .0
        ),
        "report r1"
    );
    assert!(is_denied(
        &alice
            .call("delete_report", json!({"report_id": "r1"}))
            .await
            .0
    ));
    assert!(
        server
            .received()
            .await
            .iter()
            .all(|r| r.get("error").is_none())
    );
    let kinds: Vec<Value> = sidecar
        .decisions()
        .iter()
        .map(|d| d["kind"].clone())
        .collect();
    assert!(
        kinds.iter().all(|k| k == "tools/call" || k == "tools/list"),
        "{kinds:?}"
    );
}
