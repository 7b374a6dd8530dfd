//! The real `policy-sidecar` binary in front of the real `demo-tool-server`, driven over HTTP
//! as an MCP client would. Nothing is mocked; ports are picked by the OS.

use std::time::Duration;

use e2e::{
    DemoServer, McpClient, REFUND_POLICIES, Sidecar, Stack, Workspace, assert_streaming,
    eventually, free_addr, http, is_denied, is_tool_result, serve, sidecar_command,
    sidecar_command_async,
};
use serde_json::{Value, json};

fn refund(amount: f64) -> Value {
    json!({"amount": amount, "customer_id": "C001"})
}

async fn allowed_and_denied_calls(json_response: bool) {
    let Stack {
        demo,
        ws: _ws,
        sidecar,
        mut client,
    } = Stack::start_with(REFUND_POLICIES, json_response, &[]).await;

    let mut tools = client.tool_names().await;
    tools.sort();
    assert_eq!(
        tools,
        ["get_order", "process_refund"],
        "definitely denied tools are not listed"
    );

    let allowed = client.call("process_refund", refund(500.0)).await;
    assert_eq!(allowed.status, 200);
    assert!(is_tool_result(&allowed), "{allowed:?}");
    let expected_type = if json_response {
        "application/json"
    } else {
        "text/event-stream"
    };
    assert!(
        allowed.content_type.starts_with(expected_type),
        "{}",
        allowed.content_type
    );

    let denied = client.call("process_refund", refund(5000.0)).await;
    assert_eq!(denied.status, 200);
    assert_eq!(
        denied.message,
        json!({"jsonrpc": "2.0", "id": 3, "error": {"code": -32002, "message":
            "Tool Execution Denied: Tool call not allowed due to policy enforcement [Policy evaluation denied due to no determining policies]"}})
    );
    let not_listed = client.call("delete_order", json!({"order_id": "O1"})).await;
    assert!(is_denied(&not_listed), "{not_listed:?}");

    // Only the allowed call reached the tool server.
    let calls = demo.calls().await;
    assert_eq!(
        calls,
        [json!({"tool": "process_refund", "arguments": {"amount": 500.0, "customer_id": "C001"}})]
    );

    // Metrics and the decision log saw both decisions.
    sidecar
        .assert_metrics(&[
            r#"mcp_policy_decisions_total{decision="ALLOW",mode="ENFORCE",tool="process_refund"} 1"#,
            r#"mcp_policy_decisions_total{decision="DENY",mode="ENFORCE",tool="process_refund"} 1"#,
            r#"mcp_policy_list_filtered_tools_total{result="denied"} 2"#,
            "mcp_policy_evaluation_seconds_count 3",
        ])
        .await;
    let denial = sidecar
        .logged(1, |d| {
            d["kind"] == "tools/call" && d["decision"] == "DENY" && d["tool"] == "process_refund"
        })
        .await
        .remove(0);
    assert_eq!(
        denial["principal"],
        r#"AgentCore::UnauthenticatedUser::"anonymous""#
    );
    assert_eq!(denial["arguments"], "[redacted]");
    assert_eq!(denial["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(denial["mode"], "ENFORCE");
    assert!(denial["latency_us"].is_u64());
}

#[tokio::test]
async fn allows_permitted_call_and_denied_call_never_reaches_upstream_sse() {
    allowed_and_denied_calls(false).await;
}

#[tokio::test]
async fn allows_permitted_call_and_denied_call_never_reaches_upstream_json() {
    allowed_and_denied_calls(true).await;
}

#[tokio::test]
async fn get_event_stream_and_delete_pass_through() {
    let Stack {
        demo,
        ws: _ws,
        sidecar,
        mut client,
    } = Stack::start(REFUND_POLICIES).await;
    let session = client.session.clone().expect("session id");

    let mut stream = client
        .get_event_stream(&[("mcp-protocol-version", "2025-06-18")])
        .await;
    assert_eq!(stream.status().as_u16(), 200);
    let content_type = stream.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    // The stream is open and streaming: its first event arrives without the stream ending.
    assert_streaming(&mut stream, "the event stream").await;

    let deleted = http()
        .delete(&sidecar.url)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .expect("DELETE");
    assert!(deleted.status().is_success(), "{}", deleted.status());
    // The upstream forgot the session: its answer (404) comes back through the sidecar.
    let after = client.call("get_order", json!({"order_id": "O1"})).await;
    assert_eq!(after.status, 404, "{after:?}");
    assert!(demo.calls().await.is_empty());
}

#[tokio::test]
async fn hot_reload_adds_a_forbid_and_a_broken_edit_keeps_the_last_good_set() {
    let Stack {
        demo: _demo,
        ws,
        sidecar,
        mut client,
    } = Stack::start(REFUND_POLICIES).await;
    assert!(is_tool_result(
        &client.call("process_refund", refund(600.0)).await
    ));

    ws.policy(
        "limits.cedar",
        r#"@id("forbid_over_500")
forbid(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
when { context.input.amount.greaterThan(decimal("500.0")) };
"#,
    );
    let mut last = None;
    for _ in 0..100 {
        let answer = client.call("process_refund", refund(600.0)).await;
        if is_denied(&answer) {
            last = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let denied = last.expect("the added forbid applies within 10 s");
    assert!(
        denied.message["error"]["message"]
            .as_str()
            .expect("message")
            .ends_with("[Policy evaluation denied due to forbid_over_500]"),
        "{denied:?}"
    );

    // A broken edit: counted, logged with its position, and the last good set stays.
    let broken = ws.policy(
        "limits.cedar",
        "@id(\"forbid_over_500\")\nforbid(principal, action,\n",
    );
    sidecar
        .wait_metric(
            "the failed reload is counted",
            r#"mcp_policy_reloads_total{result="failure"} 1"#,
        )
        .await;
    assert!(
        is_denied(&client.call("process_refund", refund(600.0)).await),
        "forbid still active"
    );
    assert!(
        is_tool_result(&client.call("process_refund", refund(100.0)).await),
        "permit still active"
    );
    let position = format!("{}:2:", broken.display());
    eventually("the error is logged with file and line", || {
        std::future::ready(sidecar.proc.stderr().iter().any(|l| l.contains(&position)))
    })
    .await;

    // Deleting the file reloads without it.
    std::fs::remove_file(&broken).expect("remove");
    let mut allowed_again = false;
    for _ in 0..100 {
        if is_tool_result(&client.call("process_refund", refund(600.0)).await) {
            allowed_again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(allowed_again, "the deleted forbid no longer applies");
    sidecar
        .assert_metrics(&[r#"mcp_policy_reloads_total{result="success"} 3"#])
        .await;
}

#[tokio::test]
async fn upstream_down_is_a_502_and_the_sidecar_recovers_when_it_is_back() {
    let Stack {
        mut demo,
        ws: _ws,
        sidecar,
        mut client,
    } = Stack::start(REFUND_POLICIES).await;
    let addr = demo.addr();
    assert!(is_tool_result(
        &client.call("get_order", json!({"order_id": "O1"})).await
    ));

    demo.proc.kill();
    let down = client.call("get_order", json!({"order_id": "O1"})).await;
    assert_eq!(down.status, 502, "{down:?}");
    assert_eq!(down.message["jsonrpc"], "2.0");
    assert_eq!(down.message["id"], Value::Null);
    assert_eq!(down.message["error"]["code"], -32603);
    let message = down.message["error"]["message"].as_str().expect("message");
    assert!(message.starts_with("upstream unavailable: "), "{message}");
    assert_eq!(
        sidecar.admin_get("/livez").await.0,
        200,
        "the sidecar keeps serving"
    );
    sidecar
        .assert_metrics(&[r#"mcp_policy_upstream_responses_total{status="error"}"#])
        .await;

    let demo = DemoServer::start(&addr, false);
    let mut client = McpClient::initialized(&sidecar.url).await;
    assert!(is_tool_result(
        &client.call("get_order", json!({"order_id": "O2"})).await
    ));
    assert_eq!(demo.calls().await.len(), 1);
}

#[tokio::test]
async fn readyz_is_503_until_the_upstream_tools_are_loaded() {
    // A free port for the upstream, which starts later.
    let addr = free_addr();
    let ws = Workspace::new();
    ws.policy("refund.cedar", REFUND_POLICIES);
    let sidecar = Sidecar::start(&ws.config(&format!("http://{addr}/mcp"), ""));
    let (status, body) = sidecar.admin_get("/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready: waiting for the upstream's tools\n")
    );
    assert_eq!(sidecar.admin_get("/livez").await.0, 200);

    let _demo = DemoServer::start(&addr, false);
    sidecar.wait_ready().await;
    let mut client = McpClient::initialized(&sidecar.url).await;
    // Typed by the fetched schema: `number` accepts an integer JSON value.
    assert!(is_tool_result(
        &client
            .call(
                "process_refund",
                json!({"amount": 500, "customer_id": "C1"})
            )
            .await
    ));
}

/// An upstream that answers tools/call only after a delay, to have a request in flight.
async fn slow_upstream(delay: Duration) -> (String, tokio::sync::mpsc::UnboundedReceiver<()>) {
    use axum::routing::post;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/mcp",
        post(move |body: String| {
            let tx = tx.clone();
            async move {
                let request: Value = serde_json::from_str(&body).unwrap_or_default();
                let _ = tx.send(());
                tokio::time::sleep(delay).await;
                let answer = json!({"jsonrpc": "2.0", "id": request["id"],
                    "result": {"isError": false, "content": [{"type": "text", "text": "slow done"}]}});
                ([("content-type", "application/json")], answer.to_string())
            }
        }),
    );
    (format!("{}/mcp", serve(app).await), rx)
}

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish_then_exits_0() {
    let (upstream, mut received) = slow_upstream(Duration::from_millis(1500)).await;
    let ws = Workspace::new();
    ws.policy("all.cedar", "permit(principal, action, resource);");
    let sidecar = Sidecar::start_ready(&ws.config(&upstream, "schema = \"none\""), &[]).await;

    let client = McpClient::new(&sidecar.url);
    let in_flight = tokio::spawn(async move {
        client
            .post(&json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                          "params": {"name": "slow", "arguments": {}}}))
            .await
    });
    tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .expect("the call reached the upstream");
    sidecar.proc.terminate();

    let answer = in_flight.await.expect("join");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.message["result"]["content"][0]["text"], "slow done");
    let status = sidecar.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn log_only_mode_from_the_environment_forwards_and_records_denials() {
    let Stack {
        demo,
        ws: _ws,
        sidecar,
        mut client,
    } = Stack::start_with(
        REFUND_POLICIES,
        false,
        &[("POLICY_SIDECAR_POLICY_MODE", "LOG_ONLY")],
    )
    .await;
    assert_eq!(
        client.tool_names().await.len(),
        4,
        "LOG_ONLY does not filter the list"
    );
    assert!(is_tool_result(
        &client.call("process_refund", refund(5000.0)).await
    ));
    assert_eq!(demo.calls().await.len(), 1, "the denied call was forwarded");
    sidecar
        .assert_metrics(&[
            r#"mcp_policy_decisions_total{decision="DENY",mode="LOG_ONLY",tool="process_refund"} 1"#,
        ])
        .await;
}

#[tokio::test]
async fn sigterm_ends_open_event_streams_and_exits_without_waiting_the_grace_period() {
    // A grace period far longer than the test may take: the exit must not wait for it.
    let Stack {
        demo: _demo,
        ws: _ws,
        sidecar,
        client,
    } = Stack::start_with(
        REFUND_POLICIES,
        false,
        &[("POLICY_SIDECAR_LISTEN_SHUTDOWN_GRACE_MS", "60000")],
    )
    .await;
    let mut stream = client.get_event_stream(&[]).await;
    assert_eq!(stream.status().as_u16(), 200);
    sidecar.proc.terminate();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the event stream ended at shutdown");
    let status = sidecar.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0));
}

#[test]
fn validate_reports_file_line_and_column_with_exit_codes() {
    let ws = Workspace::new();
    ws.policy("refund.cedar", REFUND_POLICIES);
    let config = ws.config("http://127.0.0.1:9/mcp", "");
    let config = config.to_str().expect("utf8");
    // Nobody listens at the upstream: only what needs no schema is checked, when asked.
    let (code, out, _) = sidecar_command(&["validate", "--without-schema", "--config", config]);
    assert_eq!(code, 0, "{out}");
    assert!(out.trim().ends_with("ok: 2 policies in 1 files"), "{out}");

    let bad = ws.policy("bad.cedar", "permit(principal, action, resource);\nforbid(principal, action, resource) when { context. };\n");
    let (code, out, err) = sidecar_command(&["validate", "--without-schema", "--config", config]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.starts_with(&format!("{}:2:", bad.display())), "{out}");
}

#[test]
fn bad_config_or_policies_at_start_exit_64_naming_the_place() {
    let ws = Workspace::new();
    ws.policy("refund.cedar", REFUND_POLICIES);
    let config = ws.config("http://127.0.0.1:9/mcp", "colour = \"blue\"");
    let (code, _, err) = sidecar_command(&["run", "--config", config.to_str().expect("utf8")]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains(&format!(
            "{}:21:1: unknown field `colour`",
            config.display()
        )),
        "{err}"
    );

    let config = ws.config("http://127.0.0.1:9/mcp", "mode = \"SOMETIMES\"");
    let (code, _, err) = sidecar_command(&["validate", "--config", config.to_str().expect("utf8")]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("policy.mode: expected one of ENFORCE, LOG_ONLY"),
        "{err}"
    );

    let config = ws.config("http://127.0.0.1:9/mcp", "");
    let bad = ws.policy(
        "bad.cedar",
        "permit(principal, action, resource)\n  when { ; };\n",
    );
    let (code, _, err) = sidecar_command(&["run", "--config", config.to_str().expect("utf8")]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains(&format!("{}:2:", bad.display())), "{err}");
}

const TOOLS: &str = r#"{"tools": [{"name": "process_refund", "inputSchema": {"type": "object",
  "properties": {"amount": {"type": "number"}, "customer_id": {"type": "string"}},
  "required": ["amount", "customer_id"]}}]}"#;

const CASES: &str = r"
- name: small refund is allowed
  claims: { sub: alice, role: refund-agent }
  tool: process_refund
  input: { amount: 500, customer_id: C001 }
  expect: ALLOW
  determining: [refund_small]
- name: large refund is denied
  claims: { sub: alice }
  tool: process_refund
  input: { amount: 5000, customer_id: C001 }
  expect: DENY
";

#[test]
fn test_subcommand_passes_good_cases_and_fails_a_wrong_expectation() {
    let ws = Workspace::new();
    ws.policy("refund.cedar", REFUND_POLICIES);
    // Both tools the policies name: `test` refuses a set that does not validate.
    let mut tools: serde_json::Value = serde_json::from_str(TOOLS).expect("tools");
    tools["tools"].as_array_mut().expect("a list").push(
        json!({"name": "get_order", "inputSchema": {"type": "object",
            "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}),
    );
    ws.file("tools.json", &tools.to_string());
    let config = ws.config("http://127.0.0.1:9/mcp", "schema = \"tools.json\"");
    let config = config.to_str().expect("utf8");
    let cases = ws.file("cases.yaml", CASES);
    let (code, out, err) =
        sidecar_command(&["test", "--config", config, cases.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        "PASS small refund is allowed\nPASS large refund is denied\n2 passed, 0 failed\n"
    );

    let wrong = ws.file(
        "wrong.yaml",
        &CASES.replace("expect: DENY", "expect: ALLOW"),
    );
    let (code, out, _) =
        sidecar_command(&["test", "--config", config, wrong.to_str().expect("utf8")]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL large refund is denied: expected ALLOW, got DENY (determining none)\n"),
        "{out}"
    );
    assert!(out.ends_with("1 passed, 1 failed\n"), "{out}");
}

#[tokio::test]
async fn schema_subcommand_prints_the_cedar_schema_of_the_upstream_tools() {
    let demo = DemoServer::start("127.0.0.1:0", true);
    let ws = Workspace::new();
    ws.policy("refund.cedar", REFUND_POLICIES);
    let config = ws.config(&demo.url, "");
    let (code, out, err) =
        sidecar_command_async(&["schema", "--config", config.to_str().expect("utf8")]).await;
    assert_eq!(code, 0, "{err}");
    for tool in [
        "delete_order",
        "get_order",
        "process_refund",
        "update_order",
    ] {
        assert!(
            out.contains(&format!("action \"RefundTool___{tool}\"")),
            "{tool} in:\n{out}"
        );
    }
    assert!(out.contains("namespace AgentCore"), "{out}");
    assert!(out.contains("decimal"), "numbers are decimals:\n{out}");
}

#[tokio::test]
async fn validate_finds_a_misspelt_action_against_the_upstream_schema() {
    let demo = DemoServer::start("127.0.0.1:0", true);
    let ws = Workspace::new();
    ws.policy(
        "typo.cedar",
        "@id(\"typo\")\npermit(principal,\n  action == AgentCore::Action::\"RefundTool___proces_refund\", resource);\n",
    );
    let config = ws.config(&demo.url, "");
    let (code, out, err) =
        sidecar_command_async(&["validate", "--config", config.to_str().expect("utf8")]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("typo.cedar:3:"), "file and line: {out}");
    assert!(out.contains("policy `typo`"), "{out}");
    assert!(out.contains("RefundTool___proces_refund"), "{out}");
}

/// Every request of the refund tool is allowed: overly permissive; the forbid is ineffective.
const PERMISSIVE: &str = r#"
@id("open_refunds")
permit(principal, action == AgentCore::Action::"RefundTool___process_refund", resource);
@id("never")
forbid(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
when { context.input.amount.lessThan(decimal("0.0")) && context.input.amount.greaterThan(decimal("0.0")) };
"#;

/// The forbid takes every refund the permit allows: overly restrictive.
const RESTRICTIVE: &str = r#"
@id("refund_small")
permit(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
when { context.input.amount.lessThan(decimal("1000.0")) };
@id("no_refunds_under_5000")
forbid(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
when { context.input.amount.lessThan(decimal("5000.0")) };
"#;

/// The solver's examples in `validate`'s output, as a cases file.
fn examples_as_cases(out: &str) -> String {
    out.lines()
        .filter_map(|line| line.trim().strip_prefix("example: "))
        .map(|case| format!("- {case}\n"))
        .collect()
}

/// Runs `validate` (which must refuse the set, with the solver) and then `test` on the examples
/// it printed, which must `expect` that decision and pass; returns `validate`'s output.
fn refused_with_replayable_examples(ws: &Workspace, config: &str, expect: &str) -> String {
    let (code, out, err) = sidecar_command(&["validate", "--config", config]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(!out.contains("no SMT solver"), "cvc5 is installed: {out}");
    let cases = examples_as_cases(&out);
    assert!(cases.contains(&format!(r#""expect":"{expect}""#)), "{out}");
    let cases_file = ws.file("examples.yaml", &cases);
    // The set is refused: its cases run only when asked to test it unvalidated.
    let (code, tested, err) = sidecar_command(&[
        "test",
        "--unvalidated",
        "--config",
        config,
        cases_file.to_str().expect("utf8"),
    ]);
    assert_eq!(
        code, 0,
        "the solver's examples are real requests: {tested}{err}\n{cases}"
    );
    out
}

#[test]
fn validate_proves_semantic_findings_and_their_examples_replay_as_cases() {
    let ws = Workspace::new();
    ws.file("tools.json", TOOLS);
    let file = ws.policy("refund.cedar", PERMISSIVE);
    let config = ws.config("http://127.0.0.1:9/mcp", "schema = \"tools.json\"");
    let config = config.to_str().expect("utf8");

    let out = refused_with_replayable_examples(&ws, config, "ALLOW");
    assert!(
        out.contains(&format!(
            "{}:2:1: policy `open_refunds`: overly permissive: the policies allow every request of AgentCore::",
            file.display()
        )),
        "{out}"
    );
    assert!(
        out.contains("policy `never`: ineffective: this forbid can deny no request"),
        "{out}"
    );

    ws.policy("refund.cedar", RESTRICTIVE);
    let out = refused_with_replayable_examples(&ws, config, "DENY");
    assert!(
        out.contains("policy `no_refunds_under_5000`: overly restrictive: the policies deny every request of AgentCore::"),
        "{out}"
    );

    // IGNORE_ALL_FINDINGS runs the schema checks only, as in AgentCore.
    let ignore = ws.config(
        "http://127.0.0.1:9/mcp",
        "schema = \"tools.json\"\nvalidation = \"IGNORE_ALL_FINDINGS\"",
    );
    let (code, out, err) =
        sidecar_command(&["validate", "--config", ignore.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.trim().ends_with("ok: 2 policies in 1 files"), "{out}");
}

#[tokio::test]
async fn a_set_with_findings_is_refused_at_start_and_on_reload() {
    let demo = DemoServer::start("127.0.0.1:0", false);
    let ws = Workspace::new();
    ws.file("tools.json", TOOLS);
    let permissive = ws.policy("refund.cedar", PERMISSIVE);
    let config = ws.config(&demo.url, "schema = \"tools.json\"");
    let (code, _, err) =
        sidecar_command_async(&["run", "--config", config.to_str().expect("utf8")]).await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("overly permissive"), "{err}");
    std::fs::remove_file(permissive).expect("remove");

    ws.policy(
        "refund.cedar",
        r#"permit(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
when { context.input.amount.lessThan(decimal("1000.0")) };"#,
    );
    let sidecar = Sidecar::start_ready(&config, &[]).await;
    let mut client = McpClient::initialized(&sidecar.url).await;
    assert!(is_denied(
        &client.call("process_refund", refund(5000.0)).await
    ));

    ws.policy(
        "open.cedar",
        "permit(principal, action == AgentCore::Action::\"RefundTool___process_refund\", resource);",
    );
    sidecar
        .wait_metric(
            "the refused reload is counted",
            r#"mcp_policy_reloads_total{result="failure"} 1"#,
        )
        .await;
    assert!(
        sidecar
            .proc
            .stderr()
            .iter()
            .any(|l| l.contains("refused by validation") && l.contains("overly permissive")),
        "{:?}",
        sidecar.proc.stderr()
    );
    assert!(
        is_denied(&client.call("process_refund", refund(5000.0)).await),
        "the last good set stays"
    );
    assert!(
        demo.calls().await.is_empty(),
        "nothing denied was forwarded"
    );
}

#[test]
fn test_subcommand_with_promoted_shadow_policies_shows_what_would_change() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies");
    let config = example.join("policy-sidecar.toml");
    let cases = example.join("cases.yaml");
    let (config, cases) = (
        config.to_str().expect("utf8"),
        cases.to_str().expect("utf8"),
    );
    let (code, out, err) = sidecar_command(&["test", "--config", config, cases]);
    assert_eq!(code, 0, "the worked example passes as written: {out}{err}");
    let (code, out, err) =
        sidecar_command(&["test", "--config", config, "--promote-shadow", cases]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("promoting shadow policy `trial_refund_cap_500`"),
        "{err}"
    );
    assert!(
        out.contains("FAIL a refund agent refunds 500: expected ALLOW (determining refund_limit), got DENY (determining trial_refund_cap_500)"),
        "{out}"
    );
    assert!(out.contains("PASS nobody deletes an order"), "{out}");
}
