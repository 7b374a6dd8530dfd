//! Temporal (session-aware) policies through the real `policy-sidecar` binary, in front of a
//! real MCP upstream whose tools answer with `structuredContent`: AgentCore's documented
//! "transfer only to an account whose balance this session read" and "at most 3 transfers in
//! 5 minutes" decided over a session, with the test clock file moving time; and two replicas
//! sharing one session through a real `redis-server` deciding exactly as one replica does.
//!
//! The Redis test needs Debian's `redis-server` (`REDIS_SERVER`, else on `PATH`;
//! `scripts/test.sh` installs it): without it, it fails unless
//! `POLICY_LAYER_SKIP_REDIS_TESTS=1` says to skip.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use e2e::{Sidecar, Workspace, free_addr, http, serve};
use serde_json::{Value, json};

const HEADER: &str = "x-amzn-bedrock-agentcore-policy-session-id";

const TOOLS: &str = r#"{"tools": [
  {"name": "get_account_balance",
   "inputSchema": {"type": "object", "properties": {"customerId": {"type": "string"}}, "required": ["customerId"]},
   "outputSchema": {"type": "object", "properties": {"accountId": {"type": "string"}, "balance": {"type": "integer"}},
                    "required": ["accountId", "balance"]}},
  {"name": "transfer_funds",
   "inputSchema": {"type": "object", "properties": {"toAccount": {"type": "string"}, "amount": {"type": "integer"}},
                   "required": ["toAccount", "amount"]}}
]}"#;

/// AgentCore's examples (`policy-temporal-authoring`: output-to-input integrity, session-based
/// rate limiting) for this gateway's target, as written there otherwise.
const POLICIES: &str = r#"
@id("balances")
permit (principal, action == AgentCore::Action::"RefundTool___get_account_balance", resource);

@id("transfer-to-a-read-account")
permit (
    principal,
    action == AgentCore::Action::"RefundTool___transfer_funds",
    resource == AgentCore::Gateway::"arn:aws:bedrock-agentcore:us-west-2:123456789012:gateway/refund-gateway"
)
when temporal {
    formerly within 1h AgentCore::Action::"RefundTool___get_account_balance"::response{
        eventResource: resource,
        output.accountId: context.input.toAccount
    }
};

@id("at-most-3-transfers-in-5-minutes")
forbid (
    principal,
    action == AgentCore::Action::"RefundTool___transfer_funds",
    resource == AgentCore::Gateway::"arn:aws:bedrock-agentcore:us-west-2:123456789012:gateway/refund-gateway"
)
when temporal {
    exists (n: Long).
        (count for (t: Timepoint).
            where (formerly within 5m (AgentCore::Action::"RefundTool___transfer_funds"::request{ eventResource: resource } && tp(t)))) == n
        && n > 3
};
"#;

/// A real MCP upstream: a balance lookup answers the customer's account in
/// `structuredContent`; a transfer answers done.
async fn upstream() -> String {
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(|body: String| async move {
            let message: Value = serde_json::from_str(&body).unwrap_or_default();
            let arguments = &message["params"]["arguments"];
            let result = match message["params"]["name"].as_str() {
                Some("get_account_balance") => {
                    let account =
                        format!("ACC-{}", arguments["customerId"].as_str().unwrap_or("?"));
                    json!({"content": [{"type": "text", "text": "balance read"}],
                           "structuredContent": {"accountId": account, "balance": 500}})
                }
                _ => json!({"content": [{"type": "text", "text": "done"}]}),
            };
            (
                [("content-type", "application/json")],
                json!({"jsonrpc": "2.0", "id": message["id"], "result": result}).to_string(),
            )
        }),
    );
    format!("{}/mcp", serve(app).await)
}

fn workspace(upstream: &str, extra: &str) -> (Workspace, PathBuf, PathBuf) {
    let ws = Workspace::new();
    ws.policy("funds.cedar", POLICIES);
    ws.file("tools.json", TOOLS);
    let base = ws.config(
        upstream,
        "schema = \"tools.json\"\nvalidation = \"IGNORE_ALL_FINDINGS\"",
    );
    let text = std::fs::read_to_string(&base).expect("config");
    let config = ws.file("policy-sidecar.toml", &format!("{text}\n{extra}\n"));
    let clock = ws.file("now", "2026-08-01T10:00:00Z");
    (ws, config, clock)
}

/// The status and body of one tools/call in `session` (`None`: without the header).
async fn call(url: &str, session: Option<&str>, tool: &str, arguments: Value) -> (u16, Value) {
    let mut request = http()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18");
    if let Some(session) = session {
        request = request.header(HEADER, session);
    }
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": tool, "arguments": arguments}});
    let response = request.body(body.to_string()).send().await.expect("POST");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
    )
}

/// One step of the session: a call, or the clock moved on.
enum Step {
    Balance(&'static str),
    Transfer(&'static str),
    Clock(&'static str),
}

/// The session both tests run, and what AgentCore's documentation says each call gets.
const SESSION: &[(Step, &str)] = &[
    // No balance read in this session yet: the transfer's permit does not hold.
    (Step::Transfer("ACC-7"), "DENY"),
    (Step::Balance("7"), "ALLOW"),
    (Step::Transfer("ACC-7"), "ALLOW"),
    // An account whose balance was not read.
    (Step::Transfer("ACC-8"), "DENY"),
    (Step::Transfer("ACC-7"), "ALLOW"),
    (Step::Transfer("ACC-7"), "ALLOW"),
    // The fourth transfer in five minutes.
    (Step::Transfer("ACC-7"), "DENY"),
    (Step::Clock("2026-08-01T10:05:01Z"), ""),
    // The three transfers left the window; the balance read (within the hour) still counts.
    (Step::Transfer("ACC-7"), "ALLOW"),
];

/// Runs [`SESSION`] as `session`, call `i` through `urls[i % urls.len()]`; the decisions.
async fn run(urls: &[&str], clock: &Path, session: &str) -> Vec<String> {
    let mut decisions = Vec::new();
    for (i, (step, _)) in SESSION.iter().enumerate() {
        let url = urls[i % urls.len()];
        let (status, reply) = match step {
            Step::Clock(now) => {
                write_clock(clock, now);
                continue;
            }
            Step::Balance(customer) => {
                call(
                    url,
                    Some(session),
                    "get_account_balance",
                    json!({"customerId": customer}),
                )
                .await
            }
            Step::Transfer(to) => {
                call(
                    url,
                    Some(session),
                    "transfer_funds",
                    json!({"toAccount": to, "amount": 100}),
                )
                .await
            }
        };
        assert_eq!(status, 200, "{reply}");
        decisions.push(
            if reply.get("error").is_some() {
                "DENY"
            } else {
                "ALLOW"
            }
            .to_owned(),
        );
    }
    decisions
}

fn documented() -> Vec<String> {
    SESSION
        .iter()
        .filter(|(step, _)| !matches!(step, Step::Clock(_)))
        .map(|(_, d)| (*d).to_owned())
        .collect()
}

/// The test clock, written whole by rename as the sidecar expects.
fn write_clock(clock: &Path, now: &str) {
    let tmp = clock.with_extension("tmp");
    std::fs::write(&tmp, now).expect("write clock");
    std::fs::rename(&tmp, clock).expect("rename clock");
}

fn clock_env(clock: &Path) -> [(&'static str, &str); 1] {
    [(
        "MCP_POLICY_TEST_CLOCK_FILE",
        clock.to_str().expect("utf-8 path"),
    )]
}

#[tokio::test]
async fn agentcore_funds_examples_decide_over_a_session_through_the_sidecar() {
    let upstream = upstream().await;
    let (_ws, config, clock) = workspace(&upstream, "");
    let sidecar = Sidecar::start_ready(&config, &clock_env(&clock)).await;

    let (status, reply) = call(
        &sidecar.url,
        None,
        "transfer_funds",
        json!({"toAccount": "ACC-7", "amount": 1}),
    )
    .await;
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(HEADER)),
        "{reply}"
    );
    let (status, reply) = call(
        &sidecar.url,
        Some("not a valid id"),
        "transfer_funds",
        json!({}),
    )
    .await;
    assert_eq!(status, 400, "{reply}");

    assert_eq!(
        run(&[&sidecar.url], &clock, "session-1").await,
        documented()
    );
    let denied = call(
        &sidecar.url,
        Some("session-2"),
        "transfer_funds",
        json!({"toAccount": "ACC-7", "amount": 1}),
    )
    .await;
    assert!(
        denied.1["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Tool Execution Denied")),
        "{denied:?}"
    );
}

// --- Redis ---------------------------------------------------------------------------------

const SKIP_VAR: &str = "POLICY_LAYER_SKIP_REDIS_TESTS";

/// A `redis-server` child process on a free port, killed when dropped.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// Starts a server, or `None` when it is missing and skipping is explicitly allowed.
    fn start() -> Option<Self> {
        let binary = std::env::var_os("REDIS_SERVER")
            .map_or_else(|| PathBuf::from("redis-server"), PathBuf::from);
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
        let port: u16 = free_addr()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        let dir = tempfile::tempdir().expect("scratch dir");
        let child = Command::new(&binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .args(["--logfile", "redis.log"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let redis = Self {
            child,
            port,
            _dir: dir,
        };
        // A start-up deadline, not a timing assertion.
        for _ in 0..400 {
            if redis.ping() {
                return Some(redis);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server on port {port} did not answer");
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
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn two_replicas_sharing_a_session_through_redis_decide_as_one() {
    let Some(redis) = Redis::start() else { return };
    let upstream = upstream().await;
    let state = format!(
        "[state]\nurl = \"redis://127.0.0.1:{}/0\"\non_error = \"deny\"\n",
        redis.port
    );
    let (_ws, config, clock) = workspace(&upstream, &state);
    let env = clock_env(&clock);
    let (one, two) = (
        Sidecar::start_ready(&config, &env).await,
        Sidecar::start_ready(&config, &env).await,
    );

    let alone = run(&[&one.url], &clock, "alone").await;
    assert_eq!(alone, documented());
    write_clock(&clock, "2026-08-01T10:00:00Z");
    // The same session, each call through the other replica than the call before.
    let shared = run(&[&one.url, &two.url], &clock, "shared").await;
    assert_eq!(shared, alone);
}
