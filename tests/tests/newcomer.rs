//! What a new user migrating AgentCore policies ran into, as the real binary now answers it:
//! a policy copied with another gateway's ARN, `validate` with the upstream down, `test` on a
//! set that `validate` and `run` refuse, `<` on a decimal.

use e2e::{Workspace, free_addr, sidecar_command};

const TOOLS: &str = r#"{"tools": [{"name": "process_refund", "inputSchema": {"type": "object",
  "properties": {"amount": {"type": "number"}, "customer_id": {"type": "string"}},
  "required": ["amount", "customer_id"]}}]}"#;

/// This gateway's id (the workspace config's `gateway.id`).
const GATEWAY: &str = "arn:aws:bedrock-agentcore:us-west-2:123456789012:gateway/refund-gateway";

/// A refund policy copied from another account's gateway.
const COPIED: &str = r#"
@id("refund_small")
permit(principal, action == AgentCore::Action::"RefundTool___process_refund",
       resource == AgentCore::Gateway::"arn:aws:bedrock-agentcore:us-east-1:999999999999:gateway/other")
when { context.input.amount.lessThan(decimal("1000.0")) };
"#;

const CASES: &str = r"
- name: small refund is allowed
  tool: process_refund
  input: { amount: 500, customer_id: C001 }
  expect: ALLOW
";

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("utf8")
}

#[test]
fn a_policy_for_another_gateway_is_refused_naming_the_configured_id_and_test_says_so() {
    let ws = Workspace::new();
    ws.policy("refund.cedar", COPIED);
    ws.file("tools.json", TOOLS);
    let config = ws.config("http://127.0.0.1:9/mcp", "schema = \"tools.json\"");
    let cases = ws.file("cases.yaml", CASES);

    let (code, out, err) = sidecar_command(&["validate", "--config", path(&config)]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!(
            "policy `refund_small`: ineffective: its resource is AgentCore::Gateway::\"arn:aws:bedrock-agentcore:us-east-1:999999999999:gateway/other\", but this gateway is AgentCore::Gateway::\"{GATEWAY}\" (gateway.id = \"{GATEWAY}\"): it can never apply"
        )),
        "{out}"
    );

    // `test` does not pass a set that cannot be deployed...
    let (code, out, err) = sidecar_command(&["test", "--config", path(&config), path(&cases)]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(
            "the policies are refused by validation (policy.validation = FAIL_ON_ANY_FINDINGS)"
        ) && err.contains("no case was run (--unvalidated to run them anyway)")
            && err.contains("can never apply"),
        "{err}"
    );
    assert!(!out.contains("PASS"), "{out}");

    // ...unless asked to: then the case shows what the user saw live, a deny.
    let (code, out, err) = sidecar_command(&[
        "test",
        "--unvalidated",
        "--config",
        path(&config),
        path(&cases),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("FAIL small refund is allowed: expected ALLOW, got DENY (determining none)"),
        "{out}"
    );
    assert!(
        err.contains("warning: ") && err.contains("can never apply"),
        "{err}"
    );
}

#[test]
fn validate_with_the_upstream_down_fails_unless_asked_to_go_on_without_a_schema() {
    let ws = Workspace::new();
    ws.policy(
        "refund.cedar",
        &COPIED.replace(
            "arn:aws:bedrock-agentcore:us-east-1:999999999999:gateway/other",
            GATEWAY,
        ),
    );
    // Nobody listens there: the tools cannot be fetched.
    let config = ws.config(&format!("http://{}/mcp", free_addr()), "");

    let (code, out, err) = sidecar_command(&["validate", "--config", path(&config)]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("fetching the tools from")
            && err.contains("--without-schema to check only what needs none"),
        "{err}"
    );
    assert!(!out.contains("ok:"), "{out}");

    let (code, out, err) =
        sidecar_command(&["validate", "--without-schema", "--config", path(&config)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("policies are checked without the upstream's schema")
            && out.contains("ok: 1 policies in 1 files"),
        "{out}"
    );
}

#[test]
fn a_decimal_compared_with_an_operator_is_told_to_use_its_method() {
    let ws = Workspace::new();
    ws.policy(
        "refund.cedar",
        r#"@id("refund_small")
permit(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
when { context.input.amount < 1000 };"#,
    );
    ws.file("tools.json", TOOLS);
    let config = ws.config("http://127.0.0.1:9/mcp", "schema = \"tools.json\"");
    let (code, out, err) = sidecar_command(&["validate", "--config", path(&config)]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(
            "expected Long but saw decimal; a decimal is compared with its methods: .lessThan()"
        ),
        "{out}"
    );
}

/// Runs `scripts/demo-token.sh <args>` with its key kept in `keys`: exit code, stdout, stderr.
fn demo_token(keys: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/demo-token.sh");
    let output = std::process::Command::new(script)
        .args(args)
        .env("DEMO_KEYS_DIR", keys)
        .output()
        .expect("run scripts/demo-token.sh (needs openssl and perl)");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_demo_token_takes_claims_and_verifies_with_its_jwks() {
    let keys = tempfile::tempdir().expect("tempdir");
    let (code, token, err) = demo_token(
        keys.path(),
        &[
            "token",
            "bob",
            "600",
            "--claim",
            "role=viewer",
            "--claim",
            r#"team=a "quoted" \ team"#,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, jwks, err) = demo_token(keys.path(), &["jwks"]);
    assert_eq!(code, 0, "{err}");
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&jwks).expect("a JWKS");
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwks.keys[0]).expect("an RSA key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&["mcp-gateway"]);
    validation.set_issuer(&["https://issuer.mcp-policy.example"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation)
        .expect("signed by the JWKS key")
        .claims;
    assert_eq!(claims["sub"], "bob");
    assert_eq!(
        claims["role"], "viewer",
        "--claim replaces the default role"
    );
    assert_eq!(claims["team"], r#"a "quoted" \ team"#);
    assert_eq!(claims["scope"], "refunds orders:read");
    assert_eq!(
        claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat"),
        600
    );

    let (code, _, err) = demo_token(keys.path(), &["token", "bob", "--claim", "role"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--claim needs name=value"), "{err}");
    let (code, _, err) = demo_token(keys.path(), &["token", "--claim", "exp=1"]);
    assert_eq!(code, 64, "{err}");
}
