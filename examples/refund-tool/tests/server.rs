//! Starts the real `demo-tool-server` binary on port 0 and talks to it over HTTP: with rmcp's
//! Streamable HTTP client in each answer mode, and with plain requests where the wire format
//! itself is what is checked.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ClientConfig, JsonObject};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

/// The running binary; killed when dropped.
struct Server {
    child: Child,
    mcp_url: String,
}

impl Server {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_demo-tool-server"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start demo-tool-server");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the first line");
        let mcp_url = line
            .trim_end()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        assert!(mcp_url.starts_with("http://127.0.0.1:") && mcp_url.ends_with("/mcp"));
        Self { child, mcp_url }
    }

    fn calls_url(&self) -> String {
        format!("{}/calls", self.mcp_url.trim_end_matches("/mcp"))
    }

    async fn calls(&self) -> Value {
        reqwest::get(self.calls_url())
            .await
            .expect("GET /calls")
            .json()
            .await
            .expect("calls are JSON")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// initialize, tools/list, tools/call process_refund with a real MCP client, then `/calls`.
async fn client_round_trip(args: &[&str]) {
    let server = Server::start(args);
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(server.mcp_url.clone()),
    );
    let client = ClientConfig::default()
        .serve(transport)
        .await
        .expect("initialize");
    let info = client.peer_info().expect("server info after initialize");
    assert_eq!(
        info.server_info.as_ref().map(|s| s.name.as_str()),
        Some("demo-tool-server")
    );

    let tools = client.list_all_tools().await.expect("tools/list");
    let names: Vec<_> = tools.iter().map(|tool| tool.name.as_ref()).collect();
    assert_eq!(
        names,
        [
            "process_refund",
            "get_order",
            "update_order",
            "delete_order"
        ]
    );

    let arguments = json!({"amount": 500.0, "customer_id": "C001", "reason": "damaged"});
    let result = client
        .call_tool(
            CallToolRequestParams::new("process_refund").with_arguments(object(arguments.clone())),
        )
        .await
        .expect("tools/call");
    assert_eq!(result.is_error, Some(false));
    let text = &result.content[0].as_text().expect("text content").text;
    let output: Value = serde_json::from_str(text).expect("tool output is JSON");
    assert_eq!(
        output,
        json!({"status": "approved", "refund_id": "REF-C001-500", "amount": 500.0, "customer_id": "C001"})
    );

    assert_eq!(
        server.calls().await,
        json!([{"tool": "process_refund", "arguments": arguments}])
    );
    client.cancel().await.expect("close the client");
}

#[tokio::test]
async fn mcp_client_round_trip_over_sse_sessions() {
    client_round_trip(&[]).await;
}

#[tokio::test]
async fn mcp_client_round_trip_with_json_responses() {
    client_round_trip(&["--json-response"]).await;
}

#[tokio::test]
async fn mcp_client_round_trip_stateless() {
    client_round_trip(&["--stateless"]).await;
}

#[tokio::test]
async fn mcp_client_round_trip_stateless_json() {
    client_round_trip(&["--stateless", "--json-response"]).await;
}

const ACCEPT: &str = "application/json, text/event-stream";

async fn post(url: &str, session: Option<&str>, body: Value) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("accept", ACCEPT)
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "2025-06-18")
        .body(body.to_string());
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    request.send().await.expect("POST /mcp")
}

fn content_type(response: &reqwest::Response) -> &str {
    response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test]
async fn json_response_mode_keeps_sessions_and_answers_in_json() {
    let server = Server::start(&["--json-response"]);
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"}}});
    let response = post(&server.mcp_url, None, init).await;
    assert_eq!(response.status(), 200);
    assert_eq!(content_type(&response), "application/json");
    let session = response
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .expect("a session id")
        .to_owned();
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["result"]["serverInfo"]["name"], "demo-tool-server");

    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let response = post(&server.mcp_url, Some(&session), initialized).await;
    assert_eq!(response.status(), 202);

    let call = json!({"jsonrpc": "2.0", "id": "call-1", "method": "tools/call", "params": {
        "name": "delete_order", "arguments": {"order_id": "ORD-7"}}});
    let response = post(&server.mcp_url, Some(&session), call).await;
    assert_eq!(content_type(&response), "application/json");
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["id"], "call-1");
    let text = body["result"]["content"][0]["text"].as_str().expect("text");
    assert_eq!(
        serde_json::from_str::<Value>(text).expect("JSON text"),
        json!({"order_id": "ORD-7", "deleted": true})
    );
}

#[tokio::test]
async fn sse_mode_answers_posts_with_event_stream() {
    let server = Server::start(&[]);
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"}}});
    let response = post(&server.mcp_url, None, init).await;
    assert_eq!(content_type(&response), "text/event-stream");
    assert!(response.headers().contains_key("mcp-session-id"));
}

#[tokio::test]
async fn calls_can_be_cleared() {
    let server = Server::start(&["--stateless", "--json-response"]);
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "get_order", "arguments": {"order_id": "ORD-1"}}});
    let response = post(&server.mcp_url, None, call).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        server.calls().await,
        json!([{"tool": "get_order", "arguments": {"order_id": "ORD-1"}}])
    );
    let response = reqwest::Client::new()
        .delete(server.calls_url())
        .send()
        .await
        .expect("DELETE /calls");
    assert_eq!(response.status(), 204);
    assert_eq!(server.calls().await, json!([]));
}

#[cfg(unix)]
#[tokio::test]
async fn exits_cleanly_on_sigterm() {
    let mut server = Server::start(&[]);
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let exit = server.child.wait().expect("wait for the server");
    assert!(exit.success(), "exit status: {exit}");
}
