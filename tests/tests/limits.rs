//! Time conditions and rate limits through the real `policy-sidecar` binary: business hours
//! and a date window decided by the test clock file; per-user and per-tool limits throttling
//! with the exact error and `Retry-After`; the connections limit with a tool that holds calls
//! in flight; limits re-read when the config file changes; two replicas sharing one user's
//! limit through a real `redis-server`; Redis stopped mid-run (deny, allow) and started again.
//!
//! The Redis tests need Debian's `redis-server` (`REDIS_SERVER`, else on `PATH`; `scripts/test.sh`
//! installs it): without it they fail, unless `POLICY_LAYER_SKIP_REDIS_TESTS=1` says to skip.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e::{Idp, Sidecar, Workspace, eventually, free_addr, http, serve};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

/// The tools of the test upstream (`schema = "tools.json"`).
const TOOLS: &str = r#"{"tools": [
  {"name": "process_refund", "inputSchema": {"type": "object", "properties": {
     "amount": {"type": "number"}, "customer_id": {"type": "string"}}, "required": ["amount"]}},
  {"name": "get_order", "inputSchema": {"type": "object", "properties": {"order_id": {"type": "string"}}}},
  {"name": "slow_tool", "inputSchema": {"type": "object", "properties": {}}}
]}"#;

/// Every tool allowed (the limits are under test, not the policies).
const ALLOW_ALL: &str = r#"
@id("refunds") permit(principal, action == AgentCore::Action::"RefundTool___process_refund", resource);
@id("orders") permit(principal, action == AgentCore::Action::"RefundTool___get_order", resource);
@id("slow") permit(principal, action == AgentCore::Action::"RefundTool___slow_tool", resource);
"#;

/// A real MCP upstream (axum): answers every tools/call, records it, and holds `slow_tool`
/// calls until the test releases them.
#[derive(Clone)]
struct Upstream {
    url: String,
    calls: Arc<Mutex<Vec<Value>>>,
    release: Arc<Notify>,
}

impl Upstream {
    /// Starts it; `arrived` hears of every `slow_tool` call as it arrives.
    async fn start(arrived: Option<mpsc::UnboundedSender<Value>>) -> Self {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let release = Arc::new(Notify::new());
        let (recorded, held) = (Arc::clone(&calls), Arc::clone(&release));
        let app = axum::Router::new().route(
            "/mcp",
            axum::routing::post(move |body: String| {
                let (calls, release, arrived) =
                    (Arc::clone(&recorded), Arc::clone(&held), arrived.clone());
                async move {
                    let body: Value = serde_json::from_str(&body).unwrap_or_default();
                    let batch = body.is_array();
                    let messages = match body {
                        Value::Array(items) => items,
                        one => vec![one],
                    };
                    let mut answers = Vec::new();
                    for message in messages {
                        let result = match message["method"].as_str() {
                            Some("tools/call") => {
                                let name = message["params"]["name"].clone();
                                calls.lock().expect("lock").push(name.clone());
                                if name == "slow_tool" {
                                    if let Some(arrived) = &arrived {
                                        let _ = arrived.send(message.clone());
                                    }
                                    release.notified().await;
                                }
                                let text = format!("{} done", name.as_str().unwrap_or_default());
                                json!({"isError": false, "content": [{"type": "text", "text": text}]})
                            }
                            Some("tools/list") => {
                                serde_json::from_str::<Value>(TOOLS).expect("tools")
                            }
                            _ => json!({}),
                        };
                        if message.get("id").is_some() {
                            answers.push(json!({"jsonrpc": "2.0", "id": message["id"], "result": result}));
                        }
                    }
                    let answer = if batch {
                        Value::Array(answers)
                    } else {
                        answers.pop().unwrap_or(Value::Null)
                    };
                    ([("content-type", "application/json")], answer.to_string())
                }
            }),
        );
        Self {
            url: format!("{}/mcp", serve(app).await),
            calls,
            release,
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls
            .lock()
            .expect("lock")
            .iter()
            .map(|name| name.as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

/// A workspace for `upstream` with `policies` and `extra` config appended (rate limits,
/// state), findings ignored (the policies here are deliberately broad).
fn workspace(upstream: &str, policies: &str, extra: &str) -> (Workspace, PathBuf) {
    let ws = Workspace::new();
    ws.policy("p.cedar", policies);
    ws.file("tools.json", TOOLS);
    let config = write_config(&ws, upstream, extra);
    (ws, config)
}

fn write_config(ws: &Workspace, upstream: &str, extra: &str) -> PathBuf {
    let base = ws.config(
        upstream,
        "schema = \"tools.json\"\nvalidation = \"IGNORE_ALL_FINDINGS\"",
    );
    let text = std::fs::read_to_string(&base).expect("config");
    ws.file("policy-sidecar.toml", &format!("{text}\n{extra}\n"))
}

/// What the sidecar answered one POST.
#[derive(Debug)]
struct Reply {
    status: u16,
    retry_after: Option<String>,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

/// POSTs `body` to `url` with `bearer` (if any), as an MCP client of the stateless protocol.
async fn post(url: &str, bearer: Option<&str>, body: &Value) -> Reply {
    let mut request = http()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18");
    if let Some(token) = bearer {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = request.body(body.to_string()).send().await.expect("POST");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("ascii").to_owned());
    Reply {
        status,
        retry_after,
        text: response.text().await.expect("body"),
    }
}

fn call(id: i64, tool: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": arguments}})
}

fn refund(id: i64) -> Value {
    call(
        id,
        "process_refund",
        json!({"amount": 10, "customer_id": "C1"}),
    )
}

/// The exact throttled reply for request `id`, limit key `key` and metric, with the
/// `retryAfter` the reply's `Retry-After` header carries.
fn assert_throttled(reply: &Reply, id: i64, key: &str, metric: &str) {
    assert_eq!(reply.status, 429, "{}", reply.text);
    let retry_after = reply.retry_after.as_deref().expect("Retry-After");
    let seconds: u64 = retry_after.parse().expect("whole seconds");
    assert!((1..=60).contains(&seconds), "Retry-After {seconds}");
    assert_eq!(
        reply.text,
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":-32003,"message":"Rate limit exceeded","data":{{"limitKey":"{key}","metric":"{metric}","retryAfter":{seconds}}}}}}}"#
        )
    );
}

fn tool_names(reply: &Reply) -> Vec<String> {
    reply.json()["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("a tools/list result: {}", reply.text))
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_owned())
        .collect()
}

/// Sets the test clock (written whole, by rename, as the sidecar expects).
fn set_clock(ws: &Workspace, now: &str) -> PathBuf {
    ws.file("now", now)
}

const TIME_POLICIES: &str = r#"
// AgentCore's business-hours example: 9:00 to 17:00 UTC.
@id("refunds_in_business_hours")
permit(principal, action == AgentCore::Action::"RefundTool___process_refund",
       resource == AgentCore::Gateway::"arn:aws:bedrock-agentcore:us-west-2:123456789012:gateway/refund-gateway")
when { duration("9h") <= context.system.now.toTime() && context.system.now.toTime() <= duration("17h") };

// AgentCore's promotional-period example: January 2025.
@id("orders_in_january")
permit(principal, action == AgentCore::Action::"RefundTool___get_order", resource)
when { context.system.now >= datetime("2025-01-01T00:00:00Z") && context.system.now < datetime("2025-02-01T00:00:00Z") };
"#;

#[tokio::test]
async fn business_hours_and_a_date_window_follow_the_test_clock() {
    let upstream = Upstream::start(None).await;
    let (ws, config) = workspace(&upstream.url, TIME_POLICIES, "");
    let clock = set_clock(&ws, "2025-01-15T10:00:00Z");
    let clock_env = clock.to_str().expect("utf-8 path");
    let sidecar = Sidecar::start_ready(&config, &[("MCP_POLICY_TEST_CLOCK_FILE", clock_env)]).await;
    let url = &sidecar.url;
    let denied = "Tool Execution Denied: Tool call not allowed due to policy enforcement [Policy evaluation denied due to no determining policies]";
    let list = json!({"jsonrpc": "2.0", "id": 100, "method": "tools/list"});

    // A January morning: refunds in business hours, orders in the window.
    assert_eq!(
        post(url, None, &refund(1)).await.json()["result"]["isError"],
        false
    );
    let order = call(2, "get_order", json!({"order_id": "ORD-1"}));
    assert_eq!(
        post(url, None, &order).await.json()["result"]["isError"],
        false
    );
    assert_eq!(
        tool_names(&post(url, None, &list).await),
        ["process_refund", "get_order"]
    );

    // The same day at 20:00: no refunds, and the list says so before anyone calls.
    set_clock(&ws, "2025-01-15T20:00:00Z");
    let reply = post(url, None, &refund(3)).await.json();
    assert_eq!(reply["error"]["code"], -32002, "{reply}");
    assert_eq!(reply["error"]["message"], denied);
    assert_eq!(tool_names(&post(url, None, &list).await), ["get_order"]);

    // February: the window has closed; 9:00 is in business hours again (an offset is
    // accepted; the policy reads UTC).
    set_clock(&ws, "2025-02-03T10:00:00+01:00");
    assert_eq!(
        post(url, None, &order).await.json()["error"]["message"],
        denied
    );
    assert_eq!(
        post(url, None, &refund(4)).await.json()["result"]["isError"],
        false
    );
    assert_eq!(
        tool_names(&post(url, None, &list).await),
        ["process_refund"]
    );

    assert_eq!(
        upstream.calls(),
        ["process_refund", "get_order", "process_refund"],
        "what the time denied never went upstream"
    );
    sidecar.assert_metrics(&["mcp_policy_test_clock 1"]).await;
    let stderr = sidecar.proc.stderr().join("\n");
    assert!(
        stderr.contains("MCP_POLICY_TEST_CLOCK_FILE is set"),
        "the test clock is announced: {stderr}"
    );
}

#[test]
fn a_test_clock_file_that_is_not_a_time_stops_the_sidecar_with_64() {
    let ws = Workspace::new();
    ws.policy("p.cedar", ALLOW_ALL);
    ws.file("tools.json", TOOLS);
    let config = write_config(&ws, "http://127.0.0.1:9/mcp", "");
    let clock = set_clock(&ws, "half past nine");
    let output = Command::new(e2e::bin("policy-sidecar"))
        .args(["run", "--config"])
        .arg(&config)
        .env("MCP_POLICY_TEST_CLOCK_FILE", &clock)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("MCP_POLICY_TEST_CLOCK_FILE") && stderr.contains("not an RFC 3339"),
        "{stderr}"
    );
}

const PER_USER_AND_PER_TOOL: &str = r#"
[[rate_limit]]
id = "refunds-per-user"
tool = "process_refund"
key = ["jwt.sub"]
rate = 2
per = "minute"

[[rate_limit]]
id = "orders-total"
tool = "get_order"
rate = 3
per = "minute"
"#;

#[tokio::test]
async fn per_user_and_per_tool_limits_throttle_with_the_exact_error() {
    let idp = Idp::start().await;
    let upstream = Upstream::start(None).await;
    let (_ws, config) = workspace(&upstream.url, ALLOW_ALL, PER_USER_AND_PER_TOOL);
    let env = idp.sidecar_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let sidecar = Sidecar::start_ready(&config, &env).await;
    let url = &sidecar.url;
    let (alice, bob) = (idp.token("alice", &json!({})), idp.token("bob", &json!({})));

    // Two refunds each; alice's third is throttled, bob's own counter is untouched.
    for id in 1..=2 {
        assert_eq!(post(url, Some(&alice), &refund(id)).await.status, 200);
    }
    assert_throttled(
        &post(url, Some(&alice), &refund(3)).await,
        3,
        "refunds-per-user/alice",
        "requests",
    );
    for id in 4..=5 {
        assert_eq!(post(url, Some(&bob), &refund(id)).await.status, 200);
    }
    assert_throttled(
        &post(url, Some(&bob), &refund(6)).await,
        6,
        "refunds-per-user/bob",
        "requests",
    );

    // Orders: three calls in total, whoever makes them.
    let order = |id| call(id, "get_order", json!({"order_id": "ORD-1"}));
    assert_eq!(post(url, Some(&alice), &order(7)).await.status, 200);
    assert_eq!(post(url, Some(&bob), &order(8)).await.status, 200);
    assert_eq!(post(url, Some(&bob), &order(9)).await.status, 200);
    assert_throttled(
        &post(url, Some(&alice), &order(10)).await,
        10,
        "orders-total",
        "requests",
    );

    // In a batch, the throttled call is answered in place and the rest goes on.
    let batch = json!([refund(11), {"jsonrpc": "2.0", "id": 12, "method": "tools/list"}]);
    let reply = post(url, Some(&alice), &batch).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let answers = reply.json();
    let throttled = answers
        .as_array()
        .and_then(|a| a.iter().find(|m| m["id"] == 11))
        .unwrap_or_else(|| panic!("{answers}"));
    assert_eq!(throttled["error"]["code"], -32003);
    assert_eq!(
        throttled["error"]["data"]["limitKey"],
        "refunds-per-user/alice"
    );

    assert_eq!(
        upstream.calls(),
        [
            "process_refund",
            "process_refund",
            "process_refund",
            "process_refund",
            "get_order",
            "get_order",
            "get_order"
        ],
        "no throttled call went upstream"
    );
    sidecar
        .assert_metrics(&[
            r#"mcp_policy_rate_limited_calls_total{limit="refunds-per-user",cause="exceeded"} 3"#,
            r#"mcp_policy_rate_limited_calls_total{limit="orders-total",cause="exceeded"} 1"#,
            "mcp_policy_rate_limits_loaded 2",
        ])
        .await;
    let throttled = sidecar.logged(4, |d| d["decision"] == "THROTTLED").await;
    assert_eq!(throttled.len(), 4, "{throttled:?}");
    assert_eq!(
        throttled[0]["principal"],
        r#"AgentCore::OAuthUser::"alice""#
    );
    assert_eq!(throttled[0]["forwarded"], false);
    assert_eq!(
        throttled[0]["rate_limit"]["key"], "refunds-per-user/alice",
        "{}",
        throttled[0]
    );
}

#[tokio::test]
async fn the_connections_limit_holds_a_slot_while_a_call_is_in_flight() {
    let (arrived, mut arrivals) = mpsc::unbounded_channel();
    let upstream = Upstream::start(Some(arrived)).await;
    let limit = r#"
[[rate_limit]]
id = "slow-in-flight"
tool = "slow_tool"
metric = "connections"
rate = 1
"#;
    let (_ws, config) = workspace(&upstream.url, ALLOW_ALL, limit);
    let sidecar = Sidecar::start_ready(&config, &[]).await;
    let url = sidecar.url.clone();

    let first = tokio::spawn({
        let url = url.clone();
        async move { post(&url, None, &call(1, "slow_tool", json!({}))).await }
    });
    let seen = tokio::time::timeout(e2e::STARTUP, arrivals.recv())
        .await
        .expect("the first call reaches the upstream in time")
        .expect("arrived");
    assert_eq!(seen["id"], 1);
    // The first call is in flight: the second is refused at once.
    let second = post(&url, None, &call(2, "slow_tool", json!({}))).await;
    assert_throttled(&second, 2, "slow-in-flight", "connections");
    assert_eq!(second.retry_after.as_deref(), Some("1"));
    // Other tools are not limited meanwhile.
    assert_eq!(post(&url, None, &refund(3)).await.status, 200);

    upstream.release.notify_one();
    let first = first.await.expect("join");
    assert_eq!(first.status, 200);
    assert!(first.text.contains("slow_tool done"), "{}", first.text);
    // The slot is free again.
    let third = tokio::spawn({
        let url = url.clone();
        async move { post(&url, None, &call(4, "slow_tool", json!({}))).await }
    });
    let seen = tokio::time::timeout(e2e::STARTUP, arrivals.recv())
        .await
        .expect("the third call reaches the upstream in time")
        .expect("arrived");
    assert_eq!(seen["id"], 4);
    upstream.release.notify_one();
    assert_eq!(third.await.expect("join").status, 200);
    assert_eq!(
        upstream.calls(),
        ["slow_tool", "process_refund", "slow_tool"]
    );
}

#[tokio::test]
async fn rate_limits_are_reloaded_with_the_config_file_and_a_broken_edit_keeps_them() {
    let upstream = Upstream::start(None).await;
    let (ws, config) = workspace(&upstream.url, ALLOW_ALL, "");
    let sidecar = Sidecar::start_ready(&config, &[]).await;
    let url = &sidecar.url;
    assert_eq!(post(url, None, &refund(1)).await.status, 200);

    // Refunds are switched off by a limit of rate 0.
    write_config(
        &ws,
        &upstream.url,
        "[[rate_limit]]\nid = \"refunds-off\"\ntool = \"process_refund\"\nrate = 0\nper = \"minute\"\n",
    );
    sidecar
        .wait_metric("the limit is loaded", "mcp_policy_rate_limits_loaded 1")
        .await;
    let reply = post(url, None, &refund(2)).await;
    assert_throttled(&reply, 2, "refunds-off", "requests");
    assert_eq!(reply.retry_after.as_deref(), Some("60"));

    // A broken edit is refused, counted, and the limit stays.
    write_config(
        &ws,
        &upstream.url,
        "[[rate_limit]]\nid = \"refunds/off\"\nrate = 0\nper = \"minute\"\n",
    );
    sidecar
        .wait_metric(
            "the broken edit is counted",
            r#"mcp_policy_rate_limit_reloads_total{result="failure"} 1"#,
        )
        .await;
    assert_eq!(post(url, None, &refund(3)).await.status, 429);

    // A change to another key is logged as needing a restart; the limit goes with the edit.
    let without_limits = write_config(&ws, &upstream.url, "");
    let text = std::fs::read_to_string(&without_limits).expect("config");
    ws.file(
        "policy-sidecar.toml",
        &text.replace("shutdown_grace_ms = 5000", "shutdown_grace_ms = 4000"),
    );
    sidecar
        .wait_metric("the limit is gone", "mcp_policy_rate_limits_loaded 0")
        .await;
    assert_eq!(post(url, None, &refund(4)).await.status, 200);
    eventually("the restart warning", || async {
        sidecar
            .proc
            .stderr()
            .iter()
            .any(|l| l.contains("apply at the next restart"))
    })
    .await;
    assert_eq!(
        sidecar
            .metrics()
            .await
            .lines()
            .find(|l| l.starts_with("mcp_policy_rate_limited_calls_total")),
        Some(r#"mcp_policy_rate_limited_calls_total{limit="refunds-off",cause="blocked"} 2"#)
    );
}

// --- Redis ---------------------------------------------------------------------------------

const SKIP_VAR: &str = "POLICY_LAYER_SKIP_REDIS_TESTS";

/// A `redis-server` child process on a fixed port, killed when dropped.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts a server, or `None` when it is missing and skipping is explicitly allowed.
    fn start() -> Option<Self> {
        let binary = redis_binary();
        if Command::new(&binary).arg("--version").output().is_err() {
            assert!(
                std::env::var(SKIP_VAR).is_ok_and(|v| v == "1"),
                "{} not found: install Debian's redis-server (scripts/test.sh does), point \
                 REDIS_SERVER at it, or set {SKIP_VAR}=1 to skip the Redis tests",
                binary.display()
            );
            eprintln!("skipped: {} not found and {SKIP_VAR}=1", binary.display());
            return None;
        }
        let port = free_addr()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        let mut redis = Self {
            child: None,
            port,
            dir: tempfile::tempdir().expect("scratch dir"),
        };
        redis.run();
        Some(redis)
    }

    /// Starts (or starts again) the server on its port, and waits until it answers.
    fn run(&mut self) {
        let child = Command::new(redis_binary())
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--logfile", "redis.log"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        // A start-up deadline, not a timing assertion.
        for _ in 0..400 {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        panic!("redis-server on port {} did not answer:\n{log}", self.port);
    }

    fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        if stream.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
            return false;
        }
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).is_ok() && line.trim_end() == "+PONG"
    }

    /// Kills the server, as a crash would.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn redis_binary() -> PathBuf {
    std::env::var_os("REDIS_SERVER").map_or_else(|| PathBuf::from("redis-server"), PathBuf::from)
}

fn state(redis: &Redis, on_error: &str) -> String {
    format!(
        "[state]\nurl = \"{}\"\non_error = \"{on_error}\"\ntimeout_ms = 200\n",
        redis.url()
    )
}

/// Starts a sidecar replica on `config` with the identity provider's environment.
async fn replica(config: &Path, idp: &Idp) -> Sidecar {
    let env = idp.sidecar_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Sidecar::start_ready(config, &env).await
}

const THREE_PER_USER: &str = r#"
[[rate_limit]]
id = "refunds-per-user"
tool = "process_refund"
key = ["jwt.sub"]
rate = 3
per = "minute"
"#;

#[tokio::test]
async fn two_replicas_share_one_users_limit_through_redis() {
    let Some(redis) = Redis::start() else { return };
    let idp = Idp::start().await;
    let upstream = Upstream::start(None).await;
    let extra = format!("{THREE_PER_USER}\n{}", state(&redis, "deny"));
    let (_ws, config) = workspace(&upstream.url, ALLOW_ALL, &extra);
    let (one, two) = (replica(&config, &idp).await, replica(&config, &idp).await);
    let (alice, bob) = (idp.token("alice", &json!({})), idp.token("bob", &json!({})));

    // Alice's three calls spread over both replicas use up her one limit.
    assert_eq!(post(&one.url, Some(&alice), &refund(1)).await.status, 200);
    assert_eq!(post(&two.url, Some(&alice), &refund(2)).await.status, 200);
    assert_eq!(post(&one.url, Some(&alice), &refund(3)).await.status, 200);
    assert_throttled(
        &post(&two.url, Some(&alice), &refund(4)).await,
        4,
        "refunds-per-user/alice",
        "requests",
    );
    assert_throttled(
        &post(&one.url, Some(&alice), &refund(5)).await,
        5,
        "refunds-per-user/alice",
        "requests",
    );
    // Bob has his own.
    assert_eq!(post(&two.url, Some(&bob), &refund(6)).await.status, 200);
    assert_eq!(upstream.calls().len(), 4);
    let (_, ready) = one.admin_get("/readyz").await;
    assert_eq!(ready, "ready\n", "the store answers");
    one.assert_metrics(&["mcp_policy_state_store_up 1"]).await;
}

#[tokio::test]
async fn redis_stopped_mid_run_denies_or_allows_by_on_error_and_counts_again_when_back() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let idp = Idp::start().await;
    let upstream = Upstream::start(None).await;
    let deny = format!("{THREE_PER_USER}\n{}", state(&redis, "deny"));
    let allow = format!("{THREE_PER_USER}\n{}", state(&redis, "allow"));
    let (_deny_ws, deny_config) = workspace(&upstream.url, ALLOW_ALL, &deny);
    let (_allow_ws, allow_config) = workspace(&upstream.url, ALLOW_ALL, &allow);
    let (closed, open) = (
        replica(&deny_config, &idp).await,
        replica(&allow_config, &idp).await,
    );
    let alice = idp.token("alice", &json!({}));
    assert_eq!(
        post(&closed.url, Some(&alice), &refund(1)).await.status,
        200
    );
    assert_eq!(post(&open.url, Some(&alice), &refund(2)).await.status, 200);

    redis.stop();
    // Fail closed: 503, the store's error, nothing forwarded.
    let reply = post(&closed.url, Some(&alice), &refund(3)).await;
    assert_eq!(reply.status, 503, "{}", reply.text);
    assert_eq!(reply.retry_after.as_deref(), Some("1"));
    assert_eq!(
        reply.text,
        r#"{"jsonrpc":"2.0","id":3,"error":{"code":-32603,"message":"Rate limit state unavailable","data":{"limitKey":"refunds-per-user/alice","metric":"requests","retryAfter":1}}}"#
    );
    // Fail open: through, unchecked, as many as asked.
    for id in 4..=7 {
        let reply = post(&open.url, Some(&alice), &refund(id)).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    assert_eq!(upstream.calls().len(), 6);
    closed
        .wait_metric(
            "the deny replica counts the store error",
            r#"mcp_policy_rate_limit_store_errors_total{on_error="deny"} 1"#,
        )
        .await;
    open.wait_metric(
        "the allow replica counts the store errors",
        r#"mcp_policy_rate_limit_store_errors_total{on_error="allow"} 4"#,
    )
    .await;
    eventually("/readyz says the store does not answer", || async {
        let (status, text) = closed.admin_get("/readyz").await;
        status == 200
            && text.contains("state store (redis) does not answer")
            && text.contains("refused (503)")
    })
    .await;
    closed
        .wait_metric("the health check sees it", "mcp_policy_state_store_up 0")
        .await;

    // Redis is back (empty: it kept nothing): the deny replica counts again from zero...
    redis.run();
    eventually("the deny replica admits again", || async {
        post(&closed.url, Some(&alice), &refund(8)).await.status == 200
    })
    .await;
    for id in 9..=10 {
        assert_eq!(
            post(&closed.url, Some(&alice), &refund(id)).await.status,
            200
        );
    }
    assert_throttled(
        &post(&closed.url, Some(&alice), &refund(11)).await,
        11,
        "refunds-per-user/alice",
        "requests",
    );
    // ...and so does the allow replica, in the same counter, once it has reconnected.
    eventually("the allow replica counts in Redis again", || async {
        post(&open.url, Some(&alice), &refund(12)).await.status == 429
    })
    .await;
    eventually("/readyz is plain again", || async {
        closed.admin_get("/readyz").await.1 == "ready\n"
    })
    .await;
}
