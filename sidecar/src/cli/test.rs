//! `policy-sidecar test`: policy unit tests from a YAML file of cases.
//!
//! ```yaml
//! - name: small refund by a refund agent is allowed
//!   claims: { sub: alice, role: refund-agent }   # omitted: the anonymous unauthenticated user
//!   tool: process_refund
//!   input: { amount: 500, customer_id: C001 }
//!   expect: ALLOW                                # ALLOW, DENY (or ERROR: input rejected)
//!   determining: [refund.0]                      # optional: the determining policy ids
//!   now: 2025-01-15T10:00:00Z                    # optional: context.system.now (RFC 3339)
//! - name: the fourth transfer in five minutes is denied
//!   tool: transfer_funds
//!   input: { toAccount: ACC-1, amount: 100 }
//!   events:                                      # optional: the policy session's prior events
//!     - { tool: transfer_funds, kind: request, ago: 4m, input: { toAccount: ACC-1, amount: 100 } }
//!     - { tool: get_account_balance, kind: response, ago: 10m,
//!         input: { customerId: C1 }, output: { accountId: ACC-1 } }
//!   expect: DENY
//! - name: the readme is public
//!   method: resources/read                       # instead of `tool`: a governed capability
//!   input: { uri: "docs://readme" }              # the request's params
//!   expect: ALLOW
//! ```
//!
//! `events` are the case's policy session so far, for temporal policies (`docs/temporal.md`):
//! each names its tool, its kind (`request`, `response` or `error`), how long before the case
//! it happened (`ago`: `30s`, `5m`, `1h`; default `0s`), its input and, for a response, the
//! tool's `structuredContent` (`output`). They are the caller's own events; the case itself is
//! the current request.
//!
//! A case without `now` is decided at the current time; when the policies of its tool read
//! `context.system`, a warning says the case depends on when it runs.
//!
//! Claims become the principal as a verified JWT's claims do: `sub` is the id, every other
//! claim a tag (strings as they are, anything else as compact JSON text). `method` is one of
//! `tools/call` (with `tool`; the default), `resources/read`, `prompts/get`,
//! `sampling/createMessage`, `elicitation/create`, `roots/list`, or `invoke` (input
//! `{ sourceIp, method }`); its capability must be governed (`policy.govern`).

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use policy_layer::auth::{Identity, PrincipalKind};
use policy_layer::config::Validation;
use policy_layer::engine::{Enforcement, Snapshot};
use policy_layer::model::tools::InputType;
use policy_layer::model::{Govern, McpAction};
use policy_layer::temporal::{self, EventKind, SessionId, TemporalValues};
use policy_layer::{Clock, SystemClock, Timestamp};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::args::TestArgs;
use super::exit::Exit;
use crate::config::Config;
use crate::feed::{engine, policy_files, tools};

/// Runs the cases of `args` against the configured policies (the shadow ones enforced with
/// `--promote-shadow`), printing a line per case and the totals.
///
/// # Errors
/// Exit 64 for a configuration or policies that cannot be used; exit 1 when the tools or the
/// cases cannot be read, or a case fails.
pub async fn test(args: &TestArgs) -> Result<(), Exit> {
    let mut config = Config::load(&args.config.config)?;
    let (_, mut policies) = policy_files::load(&config.policy.paths, true).map_err(Exit::config)?;
    if args.promote_shadow {
        for policy in &mut policies.policies {
            if policy.enforcement == Enforcement::LogOnly {
                eprintln!("promoting shadow policy `{}`", policy.policy.id());
                policy.enforcement = Enforcement::Enforce;
            }
        }
    }
    let tools = tools::tools_for(&config, args.tools.as_deref())
        .await
        .map_err(|e| {
            Exit::failed(format!(
                "{e} (pass --tools FILE to test without the upstream)"
            ))
        })?;
    let cases = read_cases(&args.cases).map_err(Exit::failed)?;
    if let Some(error) = cases
        .iter()
        .find_map(|case| case.called(config.policy.govern).err())
    {
        return Err(Exit::failed(format!("{}: {error}", args.cases.display())));
    }
    // A set `run` would refuse is not tested as if it could be deployed, unless asked.
    let validation = config.policy.validation;
    if args.unvalidated {
        config.policy.validation = Validation::IgnoreAllFindings;
    }
    let engine = engine::build(&config).map_err(Exit::config)?;
    if let Some(tools) = tools {
        let _ = engine.set_catalog(tools.catalog());
    }
    let report = engine.set_policies(policies).map_err(|refused| {
        Exit::failed(format!(
            "the policies are refused by validation (policy.validation = {validation}), as `validate` and `run` refuse them; no case was run (--unvalidated to run them anyway):\n{refused}"
        ))
    })?;
    for finding in &report.findings {
        eprintln!("warning: {finding}");
    }
    let snapshot = engine
        .snapshot()
        .ok_or_else(|| Exit::failed("no policy snapshot"))?;
    let mut out = std::io::stdout().lock();
    let (_, failed) = run(&snapshot, &cases, &mut out)
        .map_err(|e| Exit::failed(format!("writing to stdout: {e}")))?;
    if failed > 0 {
        return Err(Exit::reported());
    }
    Ok(())
}

/// The cases file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct CasesError {
    /// The cases file.
    pub file: String,
    /// What is wrong (with line and column where known).
    pub message: String,
}

/// The decision a case expects (or got).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Expect {
    /// Permitted.
    Allow,
    /// Denied.
    Deny,
    /// No decision: the input does not fit the tool's schema (or evaluation failed).
    Error,
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allow => "ALLOW",
            Self::Deny => "DENY",
            Self::Error => "ERROR",
        })
    }
}

/// One test case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Shown in the report.
    pub name: String,
    /// JWT claims; none: the anonymous unauthenticated user.
    #[serde(default)]
    pub claims: Option<Map<String, Value>>,
    /// The upstream tool name, for a tools/call.
    #[serde(default)]
    pub tool: Option<String>,
    /// The MCP method (`tools/call` when absent), or `invoke`.
    #[serde(default)]
    pub method: Option<String>,
    /// The call's arguments, or the request's params for another method.
    #[serde(default)]
    pub input: Option<Value>,
    /// The expected decision.
    pub expect: Expect,
    /// The expected determining policies, in any order.
    #[serde(default)]
    pub determining: Option<Vec<String>>,
    /// `context.system.now`, RFC 3339; absent: the current time.
    #[serde(default, deserialize_with = "timestamp")]
    pub now: Option<Timestamp>,
    /// The policy session's earlier events (temporal policies).
    #[serde(default)]
    pub events: Vec<PriorEvent>,
}

/// One earlier event of a case's policy session.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorEvent {
    /// The tool called.
    pub tool: String,
    /// `request`, `response` or `error`.
    #[serde(deserialize_with = "event_kind")]
    pub kind: EventKind,
    /// How long before the case: `30s`, `5m`, `1h`, `1d` (default: at the same time).
    #[serde(default, deserialize_with = "ago")]
    pub ago: Duration,
    /// The call's arguments.
    #[serde(default)]
    pub input: Option<Value>,
    /// The tool's `structuredContent` (a response).
    #[serde(default)]
    pub output: Option<Value>,
}

fn event_kind<'de, D: serde::Deserializer<'de>>(d: D) -> Result<EventKind, D::Error> {
    let text = String::deserialize(d)?;
    EventKind::parse(&text).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "event kind `{text}`: use request, response or error"
        ))
    })
}

fn ago<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    let bad = || {
        serde::de::Error::custom(format!(
            "ago `{text}`: write a whole number and s, m, h or d (`30s`, `5m`)"
        ))
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(bad)
}

fn timestamp<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

/// What a case decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Called<'a> {
    /// A call of this tool.
    Tool(&'a str),
    /// A request decided as this action.
    Mcp(McpAction),
}

impl Case {
    /// What the case decides, if its `tool` and `method` say it and `govern` decides it.
    ///
    /// # Errors
    /// What is wrong with the case, naming it.
    pub fn called(&self, govern: Govern) -> Result<Called<'_>, String> {
        let name = &self.name;
        match (self.method.as_deref(), self.tool.as_deref()) {
            (None | Some("tools/call"), Some(tool)) => Ok(Called::Tool(tool)),
            (None | Some("tools/call"), None) => Err(format!("case `{name}`: `tool` is missing")),
            (Some(method), tool) => {
                let action = McpAction::for_method(method).ok_or_else(|| {
                    format!(
                        "case `{name}`: method `{method}` is not one of tools/call, resources/read, prompts/get, sampling/createMessage, elicitation/create, roots/list, invoke"
                    )
                })?;
                if tool.is_some() {
                    return Err(format!("case `{name}`: `tool` is for tools/call only"));
                }
                if !govern.governs(action.capability()) {
                    return Err(format!(
                        "case `{name}`: {} is not governed (policy.govern): {method} is forwarded undecided",
                        action.capability()
                    ));
                }
                Ok(Called::Mcp(action))
            }
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesDoc {
    cases: Vec<Case>,
}

/// Reads the cases: a YAML list, or a mapping with a `cases` list.
///
/// # Errors
/// [`CasesError`] with the position of the problem.
pub fn read_cases(file: &Path) -> Result<Vec<Case>, CasesError> {
    let error = |message: String| CasesError {
        file: file.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(file).map_err(|e| error(e.to_string()))?;
    let shape: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).map_err(|e| error(e.to_string()))?;
    let cases = if shape.is_mapping() {
        serde_yaml_ng::from_str::<CasesDoc>(&text).map(|doc| doc.cases)
    } else {
        serde_yaml_ng::from_str::<Vec<Case>>(&text)
    };
    cases.map_err(|e| error(e.to_string()))
}

/// The principal a case's claims stand for.
#[must_use]
pub fn identity(claims: Option<&Map<String, Value>>) -> Identity {
    let Some(claims) = claims else {
        return Identity {
            kind: PrincipalKind::Unauthenticated,
            subject: "anonymous".to_owned(),
            tags: Vec::new(),
            expires_at: None,
        };
    };
    let subject = match claims.get("sub") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let mut tags: Vec<(String, String)> = claims
        .iter()
        .filter(|(key, _)| key.as_str() != "sub")
        .map(|(key, value)| {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (key.clone(), text)
        })
        .collect();
    tags.sort_by(|a, b| a.0.cmp(&b.0));
    Identity {
        kind: PrincipalKind::OAuthUser,
        subject,
        tags,
        expires_at: claims.get("exp").and_then(Value::as_u64),
    }
}

/// What a case got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    /// The decision.
    pub decision: Expect,
    /// Determining policies, sorted.
    pub determining: Vec<String>,
    /// The error, for [`Expect::Error`].
    pub error: Option<String>,
}

/// Decides one case against `snapshot` (a case that names nothing decidable is an error).
#[must_use]
pub fn decide(snapshot: &Snapshot, case: &Case) -> Got {
    let identity = identity(case.claims.as_ref());
    let now = case.now.unwrap_or_else(|| SystemClock.now());
    let decided = match case.called(Govern::all()) {
        Ok(Called::Tool(tool)) => match session_values(snapshot, case, &identity, tool, now) {
            Some(values) => {
                let text = case.input.as_ref().map(Value::to_string);
                snapshot.authorize_temporal_at(&identity, tool, text.as_deref(), now, &values)
            }
            None => snapshot.authorize_at(&identity, tool, case.input.as_ref(), now),
        },
        Ok(Called::Mcp(action)) => {
            snapshot.authorize_params_at(&identity, action, case.input.as_ref(), now)
        }
        Err(error) => {
            return Got {
                decision: Expect::Error,
                determining: Vec::new(),
                error: Some(error),
            };
        }
    };
    match decided {
        Ok(outcome) => {
            let mut determining = outcome.determining.clone();
            determining.sort();
            Got {
                decision: if outcome.allowed() {
                    Expect::Allow
                } else {
                    Expect::Deny
                },
                determining,
                error: None,
            }
        }
        Err(e) => Got {
            decision: Expect::Error,
            determining: Vec::new(),
            error: Some(e.to_string()),
        },
    }
}

/// The values of the temporal conditions of a call of `tool` over the case's `events`, as
/// the layer computes them over a session's history; `None` when no temporal policy of the
/// tool has conditions.
fn session_values(
    snapshot: &Snapshot,
    case: &Case,
    identity: &Identity,
    tool: &str,
    now: Timestamp,
) -> Option<TemporalValues> {
    let conditions = snapshot.temporal();
    let ids = conditions.for_tool(tool);
    if ids.is_empty() {
        return None;
    }
    let model = snapshot.model();
    let typed = |tool: &str, input: Option<&Value>| {
        let ty = snapshot
            .catalog()
            .get(tool)
            .map_or(&InputType::Untyped, |t| &t.input);
        let empty = Value::Object(Map::new());
        temporal::Value::from_json(input.unwrap_or(&empty), ty)
    };
    let now_ms = now.unix_millis();
    let mut history: Vec<temporal::Event> = case
        .events
        .iter()
        .map(|e| {
            let ago = i64::try_from(e.ago.as_millis()).unwrap_or(i64::MAX);
            temporal::call_event(
                conditions,
                model,
                identity,
                &e.tool,
                e.kind,
                now_ms.saturating_sub(ago),
                None,
                typed(&e.tool, e.input.as_ref()),
                e.output.as_ref(),
            )
        })
        .collect();
    history.sort_by_key(|e| e.time_ms);
    let current = temporal::call_event(
        conditions,
        model,
        identity,
        tool,
        EventKind::Request,
        now_ms,
        None,
        typed(tool, case.input.as_ref()),
        None,
    );
    let session = SessionId::parse(b"policy-sidecar-test").ok()?;
    let facts = temporal::request_facts(model, identity, current.input.clone(), &session);
    let horizon = now_ms.saturating_sub(conditions.max_window_ms());
    let from = history.partition_point(|e| e.time_ms < horizon);
    Some(conditions.evaluate(ids, &history[from..], &current, &facts))
}

/// Whether `got` is what `case` expects; `Err` holds the report line's explanation.
fn check(case: &Case, got: &Got) -> Result<(), String> {
    let mut want = case.determining.clone();
    if let Some(want) = want.as_mut() {
        want.sort();
    }
    let determining_ok = want.as_ref().is_none_or(|w| *w == got.determining);
    if got.decision == case.expect && determining_ok {
        return Ok(());
    }
    let expected = match &want {
        Some(w) => format!("{} (determining {})", case.expect, list(w)),
        None => case.expect.to_string(),
    };
    let actual = match &got.error {
        Some(e) => format!("ERROR ({e})"),
        None => format!("{} (determining {})", got.decision, list(&got.determining)),
    };
    Err(format!("expected {expected}, got {actual}"))
}

fn list(ids: &[String]) -> String {
    if ids.is_empty() {
        "none".to_owned()
    } else {
        ids.join(", ")
    }
}

/// Runs every case, writing one line each and the totals; returns (passed, failed).
///
/// # Errors
/// Only when `out` cannot be written.
pub fn run(
    snapshot: &Snapshot,
    cases: &[Case],
    out: &mut impl Write,
) -> std::io::Result<(usize, usize)> {
    let (mut passed, mut failed) = (0, 0);
    for case in cases {
        if let (None, Some(tool)) = (case.now, case.tool.as_deref())
            && snapshot.index().for_tool(tool).reads_system
        {
            eprintln!(
                "warning: case `{}` has no `now:` and the policies of `{tool}` read context.system: it is decided at the current time",
                case.name
            );
        }
        match check(case, &decide(snapshot, case)) {
            Ok(()) => {
                passed += 1;
                writeln!(out, "PASS {}", case.name)?;
            }
            Err(why) => {
                failed += 1;
                writeln!(out, "FAIL {}: {why}", case.name)?;
            }
        }
    }
    writeln!(out, "{passed} passed, {failed} failed")?;
    Ok((passed, failed))
}

#[cfg(test)]
mod tests {
    use policy_layer::model::{ModelConfig, ToolCatalog};
    use policy_layer::{PolicyEngine, PolicySource};
    use serde_json::json;

    use super::*;

    const POLICIES: &str = r#"
        @id("agents_refund_small")
        permit(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
        when { principal.hasTag("role") && principal.getTag("role") == "refund-agent"
               && context.input.amount.lessThan(decimal("1000.0")) };"#;

    fn snapshot() -> std::sync::Arc<Snapshot> {
        let engine = PolicyEngine::from_sources(
            ModelConfig {
                target: "RefundTool".into(),
                ..ModelConfig::default()
            },
            &[PolicySource::new("refund.cedar", POLICIES)],
        )
        .expect("loads");
        engine.set_catalog(ToolCatalog::from_list(&json!([{"name": "process_refund", "inputSchema":
            {"type": "object", "properties": {"amount": {"type": "number"}}, "required": ["amount"]}}])));
        engine.snapshot().expect("snapshot")
    }

    fn cases(yaml: &str) -> Vec<Case> {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("cases.yaml");
        std::fs::write(&file, yaml).expect("write");
        read_cases(&file).expect("cases")
    }

    #[test]
    fn claims_become_sub_and_string_tags() {
        let claims = json!({"sub": "alice", "role": "agent", "level": 3, "groups": ["a", "b"]});
        let id = identity(claims.as_object());
        assert_eq!(id.subject, "alice");
        assert_eq!(
            id.tags,
            [
                ("groups".into(), r#"["a","b"]"#.into()),
                ("level".into(), "3".into()),
                ("role".into(), "agent".into())
            ]
        );
    }

    #[test]
    fn reports_pass_and_fail_lines_with_totals() {
        let cases = cases(
            r"
- name: agent small refund
  claims: { sub: alice, role: refund-agent }
  tool: process_refund
  input: { amount: 500 }
  expect: ALLOW
  determining: [agents_refund_small]
- name: wrong expectation
  claims: { sub: bob }
  tool: process_refund
  input: { amount: 500 }
  expect: ALLOW
- name: string amount is rejected
  tool: process_refund
  input: { amount: '500' }
  expect: ERROR
",
        );
        let mut out = Vec::new();
        let (passed, failed) = run(&snapshot(), &cases, &mut out).expect("runs");
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!((passed, failed), (2, 1), "{text}");
        assert_eq!(
            text,
            "PASS agent small refund\n\
             FAIL wrong expectation: expected ALLOW, got DENY (determining none)\n\
             PASS string amount is rejected\n\
             2 passed, 1 failed\n"
        );
    }

    #[test]
    fn a_case_is_decided_at_its_now() {
        let engine = PolicyEngine::from_sources(
            ModelConfig {
                target: "RefundTool".into(),
                ..ModelConfig::default()
            },
            &[PolicySource::new(
                "hours.cedar",
                r#"@id("business_hours")
                permit(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
                when { duration("9h") <= context.system.now.toTime() && context.system.now.toTime() <= duration("17h") };"#,
            )],
        )
        .expect("loads");
        let snapshot = engine.snapshot().expect("snapshot");
        let cases = cases(
            r"
- name: at ten
  tool: process_refund
  now: 2025-01-15T10:00:00Z
  expect: ALLOW
  determining: [business_hours]
- name: at eight in New York is one in the afternoon UTC
  tool: process_refund
  now: 2025-01-15T08:00:00-05:00
  expect: ALLOW
- name: at night
  tool: process_refund
  now: 2025-01-15T23:00:00Z
  expect: DENY
",
        );
        let mut out = Vec::new();
        let (passed, failed) = run(&snapshot, &cases, &mut out).expect("runs");
        assert_eq!(
            (passed, failed),
            (3, 0),
            "{}",
            String::from_utf8_lossy(&out)
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bad.yaml");
        std::fs::write(&file, "- {name: a, tool: t, expect: DENY, now: tomorrow}\n")
            .expect("write");
        let err = read_cases(&file).expect_err("bad now").to_string();
        assert!(err.contains("not an RFC 3339 date and time"), "{err}");
    }

    #[test]
    fn cases_name_other_methods_and_their_params() {
        use policy_layer::model::{Capability, ModelConfig};
        let engine = PolicyEngine::from_sources(
            ModelConfig {
                govern: Govern::new([Capability::Resources, Capability::Invoke]),
                ..ModelConfig::default()
            },
            &[PolicySource::new(
                "docs.cedar",
                r#"@id("docs") permit(principal, action == AgentCore::Action::"ReadResource", resource) when { context.uri like "docs://*" };
                   @id("office") permit(principal, action == AgentCore::Action::"InvokeGateway", resource) when { context.sourceIp.isInRange(ip("10.0.0.0/8")) };"#,
            )],
        )
        .expect("loads");
        let cases = cases(
            r#"
- name: readme
  method: resources/read
  input: { uri: "docs://readme" }
  expect: ALLOW
  determining: [docs]
- name: secrets
  method: resources/read
  input: { uri: "vault://key" }
  expect: DENY
- name: from the office
  method: invoke
  input: { sourceIp: 10.2.3.4, method: POST }
  expect: ALLOW
- name: no uri
  method: resources/read
  input: {}
  expect: ERROR
"#,
        );
        let mut out = Vec::new();
        let (passed, failed) =
            run(&engine.snapshot().expect("snapshot"), &cases, &mut out).expect("runs");
        assert_eq!(
            (passed, failed),
            (4, 0),
            "{}",
            String::from_utf8_lossy(&out)
        );
        let govern = Govern::new([Capability::Resources]);
        let prompt = cases_one("- {name: p, method: prompts/get, input: {name: x}, expect: DENY}");
        assert_eq!(
            prompt.called(govern).expect_err("not governed"),
            "case `p`: prompts is not governed (policy.govern): prompts/get is forwarded undecided"
        );
        let typo = cases_one("- {name: t, method: resources/raed, expect: DENY}");
        assert!(
            typo.called(govern)
                .expect_err("unknown")
                .contains("`resources/raed`")
        );
        let both = cases_one("- {name: b, method: resources/read, tool: x, expect: DENY}");
        assert!(both.called(govern).is_err());
        let none = cases_one("- {name: n, expect: DENY}");
        assert_eq!(
            none.called(govern).expect_err("no tool"),
            "case `n`: `tool` is missing"
        );
    }

    fn cases_one(yaml: &str) -> Case {
        cases(yaml).remove(0)
    }

    #[test]
    fn cases_may_sit_under_a_cases_key_and_errors_have_positions() {
        assert_eq!(
            cases("cases:\n  - {name: a, tool: t, expect: DENY}\n").len(),
            1
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bad.yaml");
        std::fs::write(&file, "- name: a\n  tool: t\n  expect: MAYBE\n").expect("write");
        let err = read_cases(&file).expect_err("bad").to_string();
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn events_give_a_case_its_policy_session() {
        let engine = PolicyEngine::from_sources(
            ModelConfig {
                target: "RefundTool".into(),
                ..ModelConfig::default()
            },
            &[PolicySource::new(
                "refund.cedar",
                r#"@id("refunds") permit(principal, action == AgentCore::Action::"RefundTool___process_refund", resource);
                   @id("one-refund-a-minute") forbid(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
                   when temporal { formerly within 1m AgentCore::Action::"RefundTool___process_refund"::response{ eventResource: resource } };"#,
            )],
        )
        .expect("loads");
        let snapshot = engine.snapshot().expect("snapshot");
        let decided = |events: &str| {
            let case = cases_one(&format!(
                "- {{name: a, tool: process_refund, input: {{amount: 5}}, expect: ALLOW, events: [{events}]}}"
            ));
            decide(&snapshot, &case).decision
        };
        assert_eq!(decided(""), Expect::Allow);
        assert_eq!(
            decided("{tool: process_refund, kind: response, ago: 30s, input: {amount: 5}}"),
            Expect::Deny
        );
        assert_eq!(
            decided("{tool: process_refund, kind: response, ago: 2m}"),
            Expect::Allow
        );
        // A request alone is not a response.
        assert_eq!(
            decided("{tool: process_refund, kind: request, ago: 30s}"),
            Expect::Allow
        );
    }

    #[test]
    fn event_kinds_and_ages_are_checked_when_cases_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bad.yaml");
        for (bad, says) in [
            ("{tool: t, kind: reply}", "use request, response or error"),
            (
                "{tool: t, kind: request, ago: 5 minutes}",
                "ago `5 minutes`",
            ),
            ("{tool: t, kind: request, ago: 5}", "ago `5`"),
        ] {
            std::fs::write(
                &file,
                format!("- {{name: a, tool: t, expect: DENY, events: [{bad}]}}\n"),
            )
            .expect("write");
            let err = read_cases(&file).expect_err("bad").to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
