//! Helpers of the end-to-end tests: start the real `demo-tool-server` and `policy-sidecar`
//! binaries on ports the OS picks, and speak MCP to them over HTTP.
//!
//! Finding the binaries: a test executable lives in `<target>/<profile>/deps/`, the workspace
//! binaries in `<target>/<profile>/`. Cargo builds only the package under test before running
//! it (a test cannot depend on another package's binary on stable Rust), so the first use of
//! [`bin`] in a test process runs `cargo build -p refund-tool -p policy-sidecar` with the same
//! cargo, target folder and profile: a no-op when they are up to date, and never a stale binary.
//! Set `E2E_BIN_DIR` to use prebuilt binaries from another folder instead (no build then).

#![allow(clippy::missing_panics_doc)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long a process gets to print its address, and a bounded wait gets in general.
pub const STARTUP: Duration = Duration::from_secs(20);

/// Refunds under 1000 through the refund gateway, and reading any order: the policies most
/// tests run with.
pub const REFUND_POLICIES: &str = r#"
@id("refund_small")
permit(principal, action == AgentCore::Action::"RefundTool___process_refund",
       resource == AgentCore::Gateway::"arn:aws:bedrock-agentcore:us-west-2:123456789012:gateway/refund-gateway")
when { context.input.amount.lessThan(decimal("1000.0")) };

// Any non-empty order id (a permit without conditions is refused as overly permissive).
@id("orders_read")
permit(principal, action == AgentCore::Action::"RefundTool___get_order", resource)
when { context.input.order_id != "" };
"#;

/// The folder holding the workspace binaries.
#[must_use]
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("E2E_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // <target>/<profile>/deps/e2e-<hash> -> <target>/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable in <target>/<profile>/deps")
        .to_path_buf()
}

/// Builds the binaries the tests run, once per test process (see the module doc).
fn build_binaries() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        if std::env::var_os("E2E_BIN_DIR").is_some() {
            return;
        }
        let dir = bin_dir();
        let profile = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("debug")
            .to_owned();
        let target = dir.parent().expect("target folder");
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        let mut command = Command::new(cargo);
        command
            .current_dir(workspace)
            .args([
                "build",
                "--quiet",
                "-p",
                "refund-tool",
                "-p",
                "policy-sidecar",
            ])
            .arg("--target-dir")
            .arg(target);
        match profile.as_str() {
            "debug" => {}
            "release" => {
                command.arg("--release");
            }
            other => {
                command.args(["--profile", other]);
            }
        }
        let status = command.status().expect("run cargo build");
        assert!(
            status.success(),
            "cargo build -p refund-tool -p policy-sidecar failed"
        );
    });
}

/// The path of a workspace binary, built if need be.
#[must_use]
pub fn bin(name: &str) -> PathBuf {
    build_binaries();
    let path = bin_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p refund-tool -p policy-sidecar` before `cargo test -p e2e` \
         (or set E2E_BIN_DIR)",
        path.display()
    );
    path
}

/// A running child process whose output lines are collected.
pub struct Proc {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    lines: Receiver<String>,
}

fn collect(
    stream: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
    tx: Option<std::sync::mpsc::Sender<String>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Some(tx) = &tx {
                let _ = tx.send(line.clone());
            }
            into.lock().expect("lock").push(line);
        }
    });
}

impl Proc {
    /// Starts `command` with its output piped and collected.
    #[must_use]
    pub fn spawn(mut command: Command) -> Self {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = channel();
        collect(
            child.stdout.take().expect("stdout"),
            Arc::clone(&stdout),
            Some(tx),
        );
        collect(
            child.stderr.take().expect("stderr"),
            Arc::clone(&stderr),
            None,
        );
        Self {
            child,
            stdout,
            stderr,
            lines,
        }
    }

    /// The first stdout line starting with `prefix`, waiting up to [`STARTUP`].
    pub fn wait_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + STARTUP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "no line starting with {prefix:?}; stdout: {:?}; stderr: {:?}",
                    self.stdout(),
                    self.stderr()
                ),
            }
        }
    }

    /// Every stdout line so far.
    #[must_use]
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().expect("lock").clone()
    }

    /// Every stderr line so far.
    #[must_use]
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().expect("lock").clone()
    }

    /// The process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Kills the process at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process still running after {limit:?}; stderr: {:?}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The real demo MCP tool server.
pub struct DemoServer {
    /// The process.
    pub proc: Proc,
    /// `http://ADDR/mcp`.
    pub url: String,
    /// `http://ADDR`.
    pub base: String,
}

impl DemoServer {
    /// Starts `demo-tool-server` on `listen` (`127.0.0.1:0` for any port).
    #[must_use]
    pub fn start(listen: &str, json_response: bool) -> Self {
        let mut command = Command::new(bin("demo-tool-server"));
        command.args(["--listen", listen]);
        if json_response {
            command.arg("--json-response");
        }
        let mut proc = Proc::spawn(command);
        let line = proc.wait_line("listening on ");
        let url = line.trim_start_matches("listening on ").trim().to_owned();
        let base = url.trim_end_matches("/mcp").to_owned();
        Self { proc, url, base }
    }

    /// `host:port`.
    #[must_use]
    pub fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    /// The tool calls the server executed (`GET /calls`).
    pub async fn calls(&self) -> Vec<Value> {
        http()
            .get(format!("{}/calls", self.base))
            .send()
            .await
            .expect("GET /calls")
            .json()
            .await
            .expect("calls JSON")
    }
}

/// A config file and policy folder in a temporary directory.
pub struct Workspace {
    /// The temporary directory (removed on drop).
    pub dir: tempfile::TempDir,
}

impl Workspace {
    /// An empty workspace with a `policies/` folder.
    #[must_use]
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("policies")).expect("mkdir");
        Self { dir }
    }

    /// Writes `text` to `policies/<name>`, atomically (write then rename), as editors and
    /// ConfigMap updates do.
    pub fn policy(&self, name: &str, text: &str) -> PathBuf {
        self.file(&format!("policies/{name}"), text)
    }

    /// Writes `text` to `<name>` in the workspace, atomically.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let tmp = self
            .dir
            .path()
            .join(format!(".tmp-{}", name.replace('/', "_")));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
        path
    }

    /// Writes the sidecar config for `upstream` with extra TOML appended to `[policy]`.
    pub fn config(&self, upstream: &str, policy_extra: &str) -> PathBuf {
        let text = format!(
            r#"[listen]
address = "127.0.0.1:0"
shutdown_grace_ms = 5000

[upstream]
url = "{upstream}"
timeout_ms = 5000
connect_timeout_ms = 1000

[admin]
address = "127.0.0.1:0"

[gateway]
id = "arn:aws:bedrock-agentcore:us-west-2:123456789012:gateway/refund-gateway"
target = "RefundTool"

[policy]
engine = "RefundPolicyEngine"
paths = ["policies"]
reload_poll_ms = 300
{policy_extra}

[auth]
mode = "none"
"#
        );
        self.file("policy-sidecar.toml", &text)
    }
}

impl Default for Workspace {
    fn default() -> Self {
        Self::new()
    }
}

/// The real policy sidecar.
pub struct Sidecar {
    /// The process.
    pub proc: Proc,
    /// `http://ADDR/mcp`.
    pub url: String,
    /// `http://ADDR` of the admin listener.
    pub admin: String,
}

impl Sidecar {
    /// Runs `policy-sidecar run --config <config>` and reads both addresses.
    #[must_use]
    pub fn start(config: &Path) -> Self {
        Self::start_with_env(config, &[])
    }

    /// [`Sidecar::start`] with extra environment variables.
    #[must_use]
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(bin("policy-sidecar"));
        command.arg("run").arg("--config").arg(config);
        command.env("RUST_LOG", "warn,policy_sidecar=info");
        command.envs(env.iter().copied());
        let mut proc = Proc::spawn(command);
        let url = proc
            .wait_line("policy-sidecar listening on ")
            .trim_start_matches("policy-sidecar listening on ")
            .to_owned();
        let admin = proc
            .wait_line("admin listening on ")
            .trim_start_matches("admin listening on ")
            .to_owned();
        Self { proc, url, admin }
    }

    /// [`Sidecar::start_with_env`], then waits until `/readyz` answers 200.
    pub async fn start_ready(config: &Path, env: &[(&str, &str)]) -> Self {
        let sidecar = Self::start_with_env(config, env);
        sidecar.wait_ready().await;
        sidecar
    }

    /// GET on the admin listener: status and body.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let response = http()
            .get(format!("{}{path}", self.admin))
            .send()
            .await
            .expect("admin GET");
        let status = response.status().as_u16();
        (status, response.text().await.expect("admin body"))
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        eventually("sidecar ready", || async {
            self.admin_get("/readyz").await.0 == 200
        })
        .await;
    }

    /// The text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.admin_get("/metrics").await.1
    }

    /// Asserts that `/metrics`, read once, holds each of `lines`.
    pub async fn assert_metrics(&self, lines: &[&str]) {
        let metrics = self.metrics().await;
        for line in lines {
            assert!(metrics.contains(line), "{line} in:\n{metrics}");
        }
    }

    /// Waits until `/metrics` holds `line`; fails after [`STARTUP`].
    pub async fn wait_metric(&self, what: &str, line: &str) {
        eventually(what, || async { self.metrics().await.contains(line) }).await;
    }

    /// [`Proc::wait_exit`] on a blocking thread, so that the runtime goes on meanwhile.
    pub async fn wait_exit(mut self, limit: Duration) -> ExitStatus {
        tokio::task::spawn_blocking(move || self.proc.wait_exit(limit))
            .await
            .expect("join")
    }

    /// The decision-log lines so far, parsed.
    #[must_use]
    pub fn decisions(&self) -> Vec<Value> {
        self.proc
            .stdout()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    }

    /// The decision-log lines that `keep` selects, once there are at least `count` of them: the
    /// log is written in batches (every 50 ms), so a line may trail the answer it records.
    pub async fn logged(&self, count: usize, keep: impl Fn(&Value) -> bool) -> Vec<Value> {
        let selected =
            || -> Vec<Value> { self.decisions().into_iter().filter(|d| keep(d)).collect() };
        eventually(&format!("{count} matching decision-log lines"), || async {
            selected().len() >= count
        })
        .await;
        selected()
    }
}

/// Runs `policy-sidecar <args>` to completion: exit code, stdout, stderr.
#[must_use]
pub fn sidecar_command(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(bin("policy-sidecar"))
        .args(args)
        .output()
        .expect("run policy-sidecar");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// [`sidecar_command`] on a blocking thread, so that the runtime goes on meanwhile.
pub async fn sidecar_command_async(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|&arg| arg.to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        sidecar_command(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .expect("join")
}

/// The demo server, a workspace holding `policies/refund.cedar`, a ready sidecar in front of the
/// demo server, and a client with a session initialized through the sidecar.
pub struct Stack {
    /// The demo server.
    pub demo: DemoServer,
    /// The sidecar's config and policies.
    pub ws: Workspace,
    /// The sidecar.
    pub sidecar: Sidecar,
    /// The client, its session initialized.
    pub client: McpClient,
}

impl Stack {
    /// A stack with `policies`, the demo server answering in SSE.
    pub async fn start(policies: &str) -> Self {
        Self::start_with(policies, false, &[]).await
    }

    /// A stack with `policies`, the demo server answering in JSON if `json_response`, and the
    /// sidecar run with the extra environment variables `env`.
    pub async fn start_with(policies: &str, json_response: bool, env: &[(&str, &str)]) -> Self {
        let demo = DemoServer::start("127.0.0.1:0", json_response);
        let ws = Workspace::new();
        ws.policy("refund.cedar", policies);
        let sidecar = Sidecar::start_ready(&ws.config(&demo.url, ""), env).await;
        let client = McpClient::initialized(&sidecar.url).await;
        Self {
            demo,
            ws,
            sidecar,
            client,
        }
    }
}

/// `127.0.0.1:PORT` with a port nobody listens on: bound, read and closed again.
#[must_use]
pub fn free_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .to_string()
}

/// Serves `app` on a port the OS picks, in a background task: `http://ADDR`.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// Asserts that a first chunk of `response`'s body arrives within 5 s without the body ending:
/// the stream is open and streaming.
pub async fn assert_streaming(response: &mut reqwest::Response, what: &str) {
    let first = tokio::time::timeout(Duration::from_secs(5), response.chunk()).await;
    assert!(matches!(first, Ok(Ok(Some(_)))), "{what}: {first:?}");
}

/// A shared HTTP client with a request timeout.
#[must_use]
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client")
}

/// Polls `check` every 100 ms until it holds; fails after [`STARTUP`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + STARTUP;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A minimal MCP client over HTTP (Streamable HTTP, legacy sessions).
pub struct McpClient {
    http: reqwest::Client,
    /// The MCP endpoint.
    pub url: String,
    /// The session id from `initialize`.
    pub session: Option<String>,
    next_id: u64,
}

/// One HTTP answer to a POST: status, content type and the JSON-RPC message carried (found in
/// an SSE stream if need be).
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Content type.
    pub content_type: String,
    /// The JSON-RPC message (or `Null` for an empty body).
    pub message: Value,
}

/// The JSON-RPC message in `body` (JSON, or the data of an SSE event).
#[must_use]
pub fn message_in(content_type: &str, body: &str) -> Value {
    if content_type.starts_with("text/event-stream") {
        body.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .find(|v| v.get("id").is_some())
            .unwrap_or(Value::Null)
    } else if body.trim().is_empty() {
        Value::Null
    } else {
        // Not JSON (a plain-text error from the upstream): the text itself.
        serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()))
    }
}

impl McpClient {
    /// A client of `url`, not yet initialized.
    #[must_use]
    pub fn new(url: &str) -> Self {
        Self {
            http: http(),
            url: url.to_owned(),
            session: None,
            next_id: 1,
        }
    }

    /// A client of `url` sending `Authorization: Bearer <token>` on every request, not yet
    /// initialized.
    #[must_use]
    pub fn with_bearer(url: &str, token: &str) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        let value = format!("Bearer {token}").parse().expect("token header");
        headers.insert(reqwest::header::AUTHORIZATION, value);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .default_headers(headers)
            .build()
            .expect("client");
        Self {
            http,
            ..Self::new(url)
        }
    }

    /// A client of `url` with an initialized session.
    pub async fn initialized(url: &str) -> Self {
        let mut client = Self::new(url);
        client.initialize().await;
        client
    }

    /// A GET of the session's event stream (`accept: text/event-stream` and the session id),
    /// with the extra `headers`.
    pub async fn get_event_stream(&self, headers: &[(&str, &str)]) -> reqwest::Response {
        let session = self.session.as_deref().expect("session id");
        let mut request = self
            .http
            .get(&self.url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", session);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("GET")
    }

    /// A POST of `body` with the MCP headers.
    pub async fn post(&self, body: &Value) -> Answer {
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            );
        if let Some(session) = &self.session {
            request = request.header("mcp-session-id", session);
        }
        let response = request.body(body.to_string()).send().await.expect("POST");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = response.text().await.expect("body");
        Answer {
            status,
            message: message_in(&content_type, &text),
            content_type,
        }
    }

    /// A request with a fresh id.
    pub async fn request(&mut self, method: &str, params: Value) -> Answer {
        let id = self.next_id;
        self.next_id += 1;
        self.post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await
    }

    /// `initialize` then `notifications/initialized`.
    pub async fn initialize(&mut self) {
        let response = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(
                json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                    "protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": {"name": "e2e", "version": "1"}}})
                .to_string(),
            )
            .send()
            .await
            .expect("initialize");
        assert_eq!(response.status().as_u16(), 200, "initialize");
        self.session = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let answer = self
            .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(answer.status, 202, "notifications/initialized");
    }

    /// `tools/list`: the tool names listed.
    pub async fn tool_names(&mut self) -> Vec<String> {
        let answer = self.request("tools/list", json!({})).await;
        answer.message["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("tools/list answer: {answer:?}"))
            .iter()
            .filter_map(|t| t["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// `tools/call`.
    pub async fn call(&mut self, tool: &str, arguments: Value) -> Answer {
        self.request("tools/call", json!({"name": tool, "arguments": arguments}))
            .await
    }
}

/// Whether a tools/call answer is a policy denial.
#[must_use]
pub fn is_denied(answer: &Answer) -> bool {
    answer.message["error"]["code"] == json!(-32002)
}

/// Whether a tools/call answer is a successful tool result.
#[must_use]
pub fn is_tool_result(answer: &Answer) -> bool {
    answer.message["result"]["isError"] == json!(false)
}

/// A test-only Ed25519 key (the same as `policy-layer/tests/fixtures/ed25519.pem`).
pub const ED25519_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIMhbUIjTT0pMLnXz/XAy+iSOkZGKNlQG23QGmmjqohof
-----END PRIVATE KEY-----
";
/// Its public half as a JWK `x`.
pub const ED25519_X: &str = "3BxEVLhPA8ouyX0a7sS7Tqk6pvlorH-LrhNNgd9nzAk";
/// The audience the test tokens are for.
pub const AUDIENCE: &str = "mcp-gateway";

/// Signs `claims` with [`ED25519_PEM`] (key id `ed-1`).
#[must_use]
pub fn sign(claims: &Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_ed_pem(ED25519_PEM.as_bytes()).expect("key");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some("ed-1".into());
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

/// Seconds since the epoch.
#[must_use]
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// The JWKS holding [`ED25519_X`].
#[must_use]
pub fn jwks() -> Value {
    json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": ED25519_X, "kid": "ed-1",
                     "alg": "EdDSA", "use": "sig"}]})
}

/// A real identity provider on a local port: OIDC discovery and the JWKS over HTTP; its issuer
/// is its own URL, as an authorization server's is.
pub struct Idp {
    /// `http://ADDR`: the issuer.
    pub issuer: String,
}

impl Idp {
    /// Serves discovery and keys.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let issuer = format!("http://{}", listener.local_addr().expect("addr"));
        let discovery = json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/jwks.json"),
            "authorization_endpoint": format!("{issuer}/authorize"),
            "token_endpoint": format!("{issuer}/token"),
            "response_types_supported": ["code"],
        });
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || async move { axum::Json(discovery) }),
            )
            .route(
                "/jwks.json",
                axum::routing::get(|| async { axum::Json(jwks()) }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { issuer }
    }

    /// A token for `sub` with `extra` claims, valid for ten minutes.
    #[must_use]
    pub fn token(&self, sub: &str, extra: &Value) -> String {
        let mut claims = json!({"iss": self.issuer, "aud": AUDIENCE, "sub": sub,
                                "exp": now_secs() + 600});
        if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
            claims.extend(extra.clone());
        }
        sign(&claims)
    }

    /// The environment that points a sidecar at this issuer (OIDC discovery).
    #[must_use]
    pub fn sidecar_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("POLICY_SIDECAR_AUTH_MODE", "jwt".to_owned()),
            ("POLICY_SIDECAR_AUTH_ISSUER", self.issuer.clone()),
            (
                "POLICY_SIDECAR_AUTH_DISCOVERY_URL",
                format!("{}/.well-known/openid-configuration", self.issuer),
            ),
            ("POLICY_SIDECAR_AUTH_AUDIENCES", AUDIENCE.to_owned()),
        ]
    }
}

/// `host:port` of an `http://host:port/path` URL.
#[must_use]
pub fn host_of(url: &str) -> &str {
    let rest = url.trim_start_matches("http://");
    rest.split('/').next().unwrap_or(rest)
}

/// The path of an `http://host:port/path` URL.
#[must_use]
pub fn path_of(url: &str) -> &str {
    let rest = url.trim_start_matches("http://");
    rest.find('/').map_or("/", |i| &rest[i..])
}

/// Writes `request` on a fresh connection to the host of `url` and reads until the peer closes
/// (at most 10 s): the raw HTTP answer.
pub async fn raw_exchange(url: &str, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(host_of(url))
        .await
        .expect("connect");
    // The server may answer and close before it read everything: a failed write is fine.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}
