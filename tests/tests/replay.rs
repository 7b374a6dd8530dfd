//! `policy-sidecar replay` on real traffic: the real sidecar, with real signed tokens, records
//! the calls and lists it decides (`log.record_arguments_to`); after it stops, the recording is
//! replayed under a candidate policy set, and the report and the exit code say what the
//! candidate would change.

use std::time::Duration;

use e2e::{
    DemoServer, Idp, McpClient, Sidecar, Workspace, is_denied, is_tool_result,
    sidecar_command_async,
};
use serde_json::{Value, json};

/// Refund agents refund under 1000; anyone reads an order.
const CURRENT: &str = r#"
@id("refund_agents")
permit(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
when { principal.hasTag("role") && principal.getTag("role") == "refund-agent"
       && context.input.amount.lessThan(decimal("1000.0")) };

@id("orders_read")
permit(principal, action == AgentCore::Action::"RefundTool___get_order", resource)
when { context.input.order_id != "" };
"#;

/// The candidate: refund agents only under 600, viewers under 200, and admins may delete
/// orders (nobody in the traffic is an admin).
const CANDIDATE: &str = r#"
@id("refund_agents_capped")
permit(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
when { principal.hasTag("role") && principal.getTag("role") == "refund-agent"
       && context.input.amount.lessThan(decimal("600.0")) };

@id("viewers_small")
permit(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
when { principal.hasTag("role") && principal.getTag("role") == "viewer"
       && context.input.amount.lessThan(decimal("200.0")) };

@id("orders_read")
permit(principal, action == AgentCore::Action::"RefundTool___get_order", resource)
when { context.input.order_id != "" };

@id("admins_delete")
permit(principal, action == AgentCore::Action::"RefundTool___delete_order", resource)
when { principal.hasTag("role") && principal.getTag("role") == "admin" };
"#;

fn refund(amount: f64) -> Value {
    json!({"amount": amount, "customer_id": "C001"})
}

async fn client(url: &str, idp: &Idp, sub: &str, role: &str) -> McpClient {
    let mut client = McpClient::with_bearer(url, &idp.token(sub, &json!({"role": role})));
    client.initialize().await;
    client
}

#[tokio::test]
async fn a_recording_replayed_under_a_candidate_reports_flips_coverage_and_dead_policies() {
    let idp = Idp::start().await;
    let demo = DemoServer::start("127.0.0.1:0", false);
    let ws = Workspace::new();
    ws.policy("refund.cedar", CURRENT);
    ws.file("candidate.cedar", CANDIDATE);
    let config = ws.config(&demo.url, "");
    let recording = ws.dir.path().join("recording.jsonl");
    let mut env = idp.sidecar_env();
    env.push((
        "POLICY_SIDECAR_LOG_RECORD_ARGUMENTS_TO",
        recording.display().to_string(),
    ));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let sidecar = Sidecar::start_ready(&config, &env).await;

    let mut alice = client(&sidecar.url, &idp, "alice", "refund-agent").await;
    let mut bob = client(&sidecar.url, &idp, "bob", "viewer").await;
    let mut listed = alice.tool_names().await;
    listed.sort();
    assert_eq!(listed, ["get_order", "process_refund"]);
    assert_eq!(bob.tool_names().await, ["get_order"]);
    assert!(is_tool_result(
        &alice.call("process_refund", refund(500.0)).await
    ));
    assert!(is_tool_result(
        &alice.call("process_refund", refund(800.0)).await
    ));
    assert!(is_tool_result(
        &alice.call("process_refund", refund(800.0)).await
    ));
    assert!(is_denied(
        &alice.call("process_refund", refund(5000.0)).await
    ));
    assert!(is_denied(&bob.call("process_refund", refund(100.0)).await));
    assert!(is_tool_result(
        &bob.call("get_order", json!({"order_id": "O1"})).await
    ));

    sidecar.proc.terminate();
    let mut proc = sidecar.proc;
    let (status, decision_log) = tokio::task::spawn_blocking(move || {
        let status = proc.wait_exit(Duration::from_secs(20));
        (status, proc.stdout())
    })
    .await
    .expect("join");
    assert!(status.success());

    // The recording holds the claims and arguments; the decision log holds neither.
    let recorded = std::fs::read_to_string(&recording).expect("recording written");
    let lines: Vec<Value> = recorded
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 8, "{recorded}");
    let first_call = lines
        .iter()
        .find(|l| l["kind"] == "tools/call")
        .expect("a call");
    assert_eq!(first_call["identity"]["tags"]["role"], "refund-agent");
    assert_eq!(first_call["arguments"], refund(500.0));
    assert!(
        decision_log
            .iter()
            .all(|l| !l.contains("refund-agent") && !l.contains("C001")),
        "{decision_log:?}"
    );

    // The candidate: alice's two refunds of 800 now denied, bob's refund of 100 now allowed,
    // and process_refund now listed for bob.
    let config = config.display().to_string();
    let candidate = ws.dir.path().join("candidate.cedar").display().to_string();
    let recording = recording.display().to_string();
    let args = [
        "replay",
        "--config",
        &config,
        "--policies",
        &candidate,
        &recording,
    ];
    let (code, out, err) = sidecar_command_async(&args).await;
    assert_eq!(
        code, 1,
        "flips fail the run\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(err.contains("4 decision(s) flip"), "{err}\n{out}");
    assert!(
        out.contains("replayed 6 call(s) and 2 list(s) under 4 candidate policies"),
        "{out}"
    );
    assert!(
        out.contains(
            "  process_refund\n    ALLOW→DENY 2: no policy applies (default deny)\n      e.g. "
        ),
        "{out}"
    );
    assert!(
        out.contains("AgentCore::OAuthUser::\"alice\" request 4 (was decided by refund_agents)"),
        "{out}"
    );
    assert!(
        out.contains("    DENY→ALLOW 1: now decided by viewers_small\n"),
        "{out}"
    );
    assert!(out.contains("  process_refund hidden→listed 1\n"), "{out}");
    assert!(
        out.contains("  get_order (1 calls): orders_read 1\n"),
        "{out}"
    );
    assert!(
        out.contains("  process_refund (5 calls): (no policy: default deny) 3, refund_agents_capped 1, viewers_small 1\n"),
        "{out}"
    );
    assert!(
        out.contains("dead policies (decided no replayed call): 1 (admins_delete)"),
        "{out}"
    );
    assert!(
        !out.contains("C001") && !out.contains("refund-agent"),
        "{out}"
    );

    // Accepted flips: the same report, exit 0.
    let mut accepting = args.to_vec();
    accepting.insert(1, "--allow-flips");
    let (code, accepted, err) = sidecar_command_async(&accepting).await;
    assert_eq!((code, accepted.as_str()), (0, out.as_str()), "{err}");

    // The current set against its own traffic: nothing flips.
    let current = ws.dir.path().join("policies").display().to_string();
    let (code, out, err) = sidecar_command_async(&[
        "replay",
        "--config",
        &config,
        "--policies",
        &current,
        &recording,
    ])
    .await;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("flips: 0 call(s)") && out.contains("list flips: 0"),
        "{out}"
    );

    // The decision log alone cannot be decided again: its lines are counted, not guessed.
    let log_file = ws.file("decisions.jsonl", &decision_log.join("\n"));
    let log_file = log_file.display().to_string();
    let (code, out, err) = sidecar_command_async(&[
        "replay",
        "--config",
        &config,
        "--policies",
        &candidate,
        &log_file,
    ])
    .await;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("replayed 0 call(s) and 0 list(s)"), "{out}");
    assert!(
        out.contains("skipped 2 line(s): no caller identity"),
        "{out}"
    );
    assert!(
        out.contains("skipped 6 line(s): arguments redacted"),
        "{out}"
    );
}

#[test]
fn the_worked_example_replays_unchanged_and_its_candidate_flips_two_refunds() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies");
    let path = |p: &str| example.join(p).display().to_string();
    let (config, recording) = (path("policy-sidecar.toml"), path("recording.jsonl"));
    let (code, out, err) = e2e::sidecar_command(&[
        "replay",
        "--config",
        &config,
        "--policies",
        &path("policies"),
        &recording,
    ]);
    assert_eq!(code, 0, "the recording matches the policies: {out}{err}");
    assert!(
        out.contains("replayed 13 call(s) and 2 list(s) under 9 candidate policies\n\nflips: 0 call(s)\n\nlist flips: 0 tool listing(s)\n"),
        "{out}"
    );
    assert!(
        out.contains("dead policies (decided no replayed call): 2 (no_negative_refunds, discounts_in_promotion_hours)"),
        "{out}"
    );

    let candidate = [
        path("policies/orders.cedar"),
        path("policies/time.cedar"),
        path("candidate/refunds.cedar"),
    ]
    .join(",");
    let (code, out, err) = e2e::sidecar_command(&[
        "replay",
        "--config",
        &config,
        "--policies",
        &candidate,
        &recording,
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("flips: 2 call(s)\n  process_refund\n    ALLOW→DENY 2: now decided by trial_refund_cap_500\n"),
        "{out}"
    );
    assert!(
        out.contains("recording.jsonl:15 AgentCore::OAuthUser::\"carol\" request 13 (was decided by refund_limit)"),
        "{out}"
    );
}
