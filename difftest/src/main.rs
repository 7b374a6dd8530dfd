//! The reference side of the differential test, and the generator of its test vectors.
//!
//! ```text
//! difftest oracle VECTORS.json...      the reference's decisions, as JSON {name: [ALLOW|DENY...]}
//! difftest generate SEED COUNT         COUNT generated vectors, as JSON
//! ```
//!
//! A vector (the format `policy-layer`'s `temporal::decide::Vector` reads) is a policy file,
//! a gateway's tools and a session's calls. Each call is decided at its time `t` (seconds);
//! an allowed call then completes at `t + 1` with a `response` (the tool's outputs) or an
//! `error`; a denied call gets an `error` at `t + 1`. The reference keeps every decision event
//! in its history, so a denied call stays there as a `request` too: that is the one place
//! where AgentCore (and `policy-layer`) differ on purpose, and the comparison names it.

use std::collections::BTreeMap;
use std::process::ExitCode;

use dogwood_language::{
    Authorizer, Decision, Event, LoweredPolicySet, PolicySchema, ServiceSchema, Value,
};
use serde_json::{Value as Json, json};

/// AgentCore's temporal event schema (`policy-temporal-authoring`, "Event schema: fields you
/// can reference").
const AGENTCORE_EVENT_SCHEMA: &str = r#"
decision event <A>::request {
    ...inputs(A),
    eventPrincipal: principalType(A),
    eventResource:  resourceType(A),
    requestId:      String,
    pin sessionId:  String = context.sessionId,
}

event <A>::response {
    ...inputs(A),
    ...outputs(A),
    eventPrincipal: principalType(A),
    eventResource:  resourceType(A),
    requestId:      String,
    pin sessionId:  String = context.sessionId,
}

event <A>::error {
    ...inputs(A),
    eventPrincipal: principalType(A),
    eventResource:  resourceType(A),
    requestId:      String,
    pin sessionId:  String = context.sessionId,
}
"#;

const SESSION: &str = "session-1";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("oracle") if args.len() > 1 => {
            let mut out = BTreeMap::new();
            for path in &args[1..] {
                let text = match std::fs::read_to_string(path) {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("{path}: {e}");
                        return ExitCode::from(2);
                    }
                };
                let vectors: Vec<Json> = match serde_json::from_str(&text) {
                    Ok(v) => v,
                    Err(e) => {
                        eprintln!("{path}: {e}");
                        return ExitCode::from(2);
                    }
                };
                for v in &vectors {
                    let name = v["name"].as_str().unwrap_or("?").to_owned();
                    let result = match decide(v) {
                        Ok(decisions) => json!(decisions),
                        Err(e) => json!({ "error": e }),
                    };
                    out.insert(name, result);
                }
            }
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Some("generate") if args.len() == 3 => {
            let (Ok(seed), Ok(count)) = (args[1].parse::<u64>(), args[2].parse::<usize>()) else {
                eprintln!("usage: difftest generate SEED COUNT");
                return ExitCode::from(2);
            };
            // One vector per line: compact, and a regenerated file diffs vector by vector.
            let lines: Vec<String> = (0..count).map(|n| generate(seed, n).to_string()).collect();
            println!("[\n{}\n]", lines.join(",\n"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: difftest oracle VECTORS.json... | difftest generate SEED COUNT");
            ExitCode::from(2)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The reference side.

/// The reference's decisions for one vector.
fn decide(v: &Json) -> Result<Vec<&'static str>, String> {
    let target = v["target"].as_str().ok_or("no target")?;
    let gateway = v["gateway"].as_str().ok_or("no gateway")?;
    let tools = v["tools"].as_array().ok_or("no tools")?;
    let schema_text = cedar_schema(target, tools);
    let policy_schema = PolicySchema::from_cedarschema_str(&schema_text)
        .map_err(|e| format!("schema: {e}\n{schema_text}"))?;
    let service = ServiceSchema::builder()
        .event_schema_str(AGENTCORE_EVENT_SCHEMA)
        .build()
        .map_err(|e| format!("event schema: {e}"))?;
    let policies = LoweredPolicySet::from_str(
        v["policies"].as_str().ok_or("no policies")?,
        &service,
        &policy_schema,
    )
    .map_err(|e| format!("policies: {e}"))?;
    let mut authorizer = Authorizer::new(policies);
    let tool_schemas: BTreeMap<&str, &Json> = tools
        .iter()
        .filter_map(|t| Some((t["name"].as_str()?, t)))
        .collect();
    let mut out = Vec::new();
    for (n, step) in v["steps"].as_array().ok_or("no steps")?.iter().enumerate() {
        let t = step["t"].as_i64().ok_or("step without t")?;
        let who = step["principal"].as_str().ok_or("step without principal")?;
        let tool = step["tool"].as_str().ok_or("step without tool")?;
        let schema = tool_schemas
            .get(tool)
            .copied()
            .ok_or_else(|| format!("unknown tool {tool}"))?;
        let input = to_value(
            step.get("input").unwrap_or(&Json::Null),
            &schema["inputSchema"],
        );
        let ok = step.get("ok").and_then(Json::as_bool).unwrap_or(true);
        let action = format!("{target}___{tool}");
        let base = |kind: &str, ts: i64| {
            let mut b = Event::builder_for(&["AgentCore", "Action"], &action, kind)
                .timestamp(ts)
                .logged_field(
                    "eventPrincipal",
                    Value::Entity {
                        ty: "AgentCore::OAuthUser".into(),
                        id: who.into(),
                    },
                )
                .logged_field(
                    "eventResource",
                    Value::Entity {
                        ty: "AgentCore::Gateway".into(),
                        id: gateway.into(),
                    },
                )
                .logged_field("requestId", Value::String(format!("r{n}")))
                .logged_field("sessionId", Value::String(SESSION.into()));
            if let Value::Object(fields) = &input {
                for (k, val) in fields {
                    b = b.field("input", k, val.clone());
                }
            }
            b
        };
        let mut request = base("request", t)
            .principal_for("AgentCore::OAuthUser", who)
            .resource_for("AgentCore::Gateway", gateway)
            .entity_for(
                "AgentCore::OAuthUser",
                who,
                [("id", Value::String(who.into()))],
            )
            .request_context_field("sessionId", Value::String(SESSION.into()));
        if let Value::Object(fields) = &input {
            for (k, val) in fields {
                request = request.request_context("input", k, val.clone());
            }
        }
        let response = authorizer
            .is_authorized(&request.build())
            .ok_or_else(|| format!("step {n}: a request gave no decision"))?;
        let errors: Vec<&str> = response.diagnostics().errors().collect();
        if !errors.is_empty() {
            return Err(format!("step {n}: evaluation errors: {errors:?}"));
        }
        let allowed = response.decision() == Decision::Allow;
        out.push(if allowed { "ALLOW" } else { "DENY" });
        let completion = if allowed && ok {
            let mut b = base("response", t + 1);
            if let (Some(output), Some(out_schema)) =
                (step.get("output"), schema.get("outputSchema"))
                && let Value::Object(fields) = to_value(output, out_schema)
            {
                for (k, val) in fields {
                    b = b.field("output", &k, val);
                }
            }
            b
        } else {
            base("error", t + 1)
        };
        // History-only events give no decision.
        let _ = authorizer.is_authorized(&completion.build());
    }
    Ok(out)
}

/// A Dogwood value typed by a JSON Schema, as AgentCore types tool inputs and outputs.
fn to_value(json: &Json, schema: &Json) -> Value {
    let ty = schema.get("type").and_then(Json::as_str).unwrap_or("");
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) if ty == "number" => Value::Decimal(n.to_string()),
        Json::Number(n) => n
            .as_i64()
            .map_or_else(|| Value::Decimal(n.to_string()), Value::Int),
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => {
            let item = schema.get("items").unwrap_or(&Json::Null);
            Value::Array(items.iter().map(|i| to_value(i, item)).collect())
        }
        Json::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), to_value(v, &schema["properties"][k])))
                .collect(),
        ),
    }
}

/// The Cedar schema of a gateway with these tools, in AgentCore's model: actions
/// `<target>___<tool>` in the target's group, `context.input` (and `context.output` for tools
/// with an outputSchema) typed from the JSON Schemas.
fn cedar_schema(target: &str, tools: &[Json]) -> String {
    let mut s = String::from(
        "namespace AgentCore {\n  entity OAuthUser = { id: String } tags String;\n  entity Gateway;\n  action \"Mcp\";\n  action \"CallTool\" in [Action::\"Mcp\"];\n",
    );
    s.push_str(&format!(
        "  action \"{target}\" in [Action::\"CallTool\"];\n"
    ));
    for tool in tools {
        let name = tool["name"].as_str().unwrap_or("?");
        let mut context = format!("input: {}, sessionId: String", record(&tool["inputSchema"]));
        if let Some(out) = tool.get("outputSchema") {
            context.push_str(&format!(", output?: {}", record(out)));
        }
        s.push_str(&format!(
            "  action \"{target}___{name}\" in [Action::\"{target}\"] appliesTo {{ principal: [OAuthUser], resource: [Gateway], context: {{ {context} }} }};\n"
        ));
    }
    s.push_str("}\n");
    s
}

fn cedar_type(schema: &Json) -> String {
    match schema.get("type").and_then(Json::as_str) {
        Some("string") => "String".into(),
        Some("integer") => "Long".into(),
        Some("number") => "decimal".into(),
        Some("boolean") => "Bool".into(),
        Some("array") => format!("Set<{}>", cedar_type(&schema["items"])),
        _ => record(schema),
    }
}

fn record(schema: &Json) -> String {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Json::as_str).collect())
        .unwrap_or_default();
    let fields: Vec<String> = schema["properties"]
        .as_object()
        .map(|props| {
            props
                .iter()
                .map(|(k, v)| {
                    let opt = if required.contains(&k.as_str()) {
                        ""
                    } else {
                        "?"
                    };
                    format!("\"{k}\"{opt}: {}", cedar_type(v))
                })
                .collect()
        })
        .unwrap_or_default();
    format!("{{ {} }}", fields.join(", "))
}

// ---------------------------------------------------------------------------------------------
// The generator: seeded sessions over the documented policy shapes.

/// SplitMix64: a small, fixed PRNG, so that a seed names the same vectors on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const GEN_TARGET: &str = "Gen";
const GEN_GATEWAY: &str = "arn:aws:bedrock-agentcore:us-west-2:123456789012:gateway/gen";
const TOOLS: [&str; 3] = ["alpha", "beta", "gamma"];
/// Errors are rarer than requests and responses in a session, and so in conditions.
const KINDS: [&str; 5] = ["request", "response", "error", "request", "response"];
const WINDOWS: [(&str, i64); 5] = [
    ("30s", 30),
    ("1m", 60),
    ("2m", 120),
    ("5m", 300),
    ("1h", 3600),
];

fn gen_tools() -> Json {
    let io = json!({ "type": "object",
        "properties": { "key": { "type": "string" }, "amount": { "type": "integer" } },
        "required": ["key", "amount"] });
    json!([
        { "name": "alpha", "inputSchema": io, "outputSchema": io },
        { "name": "beta", "inputSchema": io, "outputSchema": io },
        { "name": "gamma", "inputSchema": { "type": "object", "properties": { "key": { "type": "string" } }, "required": ["key"] } }
    ])
}

fn action(tool: &str) -> String {
    format!("AgentCore::Action::\"{GEN_TARGET}___{tool}\"")
}

/// A predicate on `tool`'s events of `kind`, sometimes correlated with the current request.
fn predicate(rng: &mut Rng, tool: &str, kind: &str, current: &str) -> String {
    predicate_with(rng, tool, kind, current, true)
}

/// [`predicate`], leaving `input.key` free when `key` is false (the caller binds it).
fn predicate_with(rng: &mut Rng, tool: &str, kind: &str, current: &str, key: bool) -> String {
    let mut fields = vec!["eventResource: resource".to_owned()];
    let both_keyed = key && (tool != "gamma" || current != "gamma");
    if rng.chance(40) && both_keyed {
        // `gamma` has only `key`; the others have `key` and `amount`.
        fields.push("input.key: context.input.key".to_owned());
    } else if rng.chance(20) && key && kind == "response" && tool != "gamma" {
        fields.push("output.key: context.input.key".to_owned());
    } else if rng.chance(20) && key {
        fields.push(format!("input.key: \"{}\"", rng.pick(&["k1", "k2"])));
    }
    if rng.chance(15) {
        fields.push(format!(
            "eventPrincipal: AgentCore::OAuthUser::\"{}\"",
            rng.pick(&["alice", "bob"])
        ));
    }
    format!("{}::{kind}{{ {} }}", action(tool), fields.join(", "))
}

fn condition(rng: &mut Rng, current: &str) -> String {
    let (w, _) = *rng.pick(&WINDOWS);
    let tool = *rng.pick(&TOOLS);
    let kind = *rng.pick(&KINDS);
    match rng.below(10) {
        0 | 1 => format!(
            "formerly within {w} {}",
            predicate(rng, tool, kind, current)
        ),
        2 => {
            let op = rng.pick(&[">", ">=", "==", "<="]);
            let n = rng.below(4);
            format!(
                "exists (n: Long). (count for (t: Timepoint). where (formerly within {w} ({} && tp(t)))) == n && n {op} {n}",
                predicate(rng, tool, kind, current)
            )
        }
        3 => {
            let tool = *rng.pick(&["alpha", "beta"]);
            let cap = rng.pick(&[500, 1000, 1500, 3000]);
            format!(
                "exists (total: Long). (sum amt for (amt: Long), (t: Timepoint). where (formerly within {w} ({}{{ input.amount: amt }} && tp(t)))) == total && total >= {cap}",
                predicate(rng, tool, kind, current)
            )
        }
        4 => {
            let anchor_tool = *rng.pick(&TOOLS);
            let anchor_kind = *rng.pick(&KINDS);
            format!(
                "!{} since within {w} {}",
                predicate(rng, tool, kind, current),
                predicate(rng, anchor_tool, anchor_kind, current)
            )
        }
        5 => {
            let (w2, _) = *rng.pick(&WINDOWS);
            let tool2 = *rng.pick(&TOOLS);
            let kind2 = *rng.pick(&KINDS);
            format!(
                "formerly within {w} {} && formerly within {w2} {}",
                predicate(rng, tool, kind, current),
                predicate(rng, tool2, kind2, current)
            )
        }
        6 => {
            let tool = *rng.pick(&["alpha", "beta"]);
            format!(
                "exists (a: Long). (formerly within {w} {}{{ input.amount: a }} && a > {})",
                predicate(rng, tool, kind, current),
                rng.pick(&[100, 500])
            )
        }
        7 => format!(
            "previous within {w} {}",
            predicate(rng, tool, kind, current)
        ),
        8 => {
            // The same key in two events, whatever it is.
            let (w2, _) = *rng.pick(&WINDOWS);
            let tool2 = *rng.pick(&TOOLS);
            let kind2 = *rng.pick(&KINDS);
            format!(
                "exists (k: String). (formerly within {w} {}{{ input.key: k }} && formerly within {w2} {}{{ input.key: k }})",
                predicate_with(rng, tool, kind, current, false),
                predicate_with(rng, tool2, kind2, current, false)
            )
        }
        _ => {
            // Distinct values, not events: no timepoint in the domain.
            let n = rng.below(3) + 1;
            format!(
                "exists (n: Long). (count for (k: String). where formerly within {w} {}{{ input.key: k }}) == n && n >= {n}",
                predicate_with(rng, tool, kind, current, false)
            )
        }
    }
}

fn generate(seed: u64, n: usize) -> Json {
    let mut rng = Rng(seed ^ (n as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut policies = String::new();
    // Plain permits for most tools; a temporal policy or two on top.
    for tool in TOOLS {
        if rng.chance(90) {
            policies.push_str(&format!(
                "permit (principal, action == {}, resource);\n",
                action(tool)
            ));
        }
    }
    // Mallory is denied one tool, so that sessions contain denied calls.
    let denied = *rng.pick(&TOOLS);
    policies.push_str(&format!(
        "forbid (principal == AgentCore::OAuthUser::\"mallory\", action == {}, resource);\n",
        action(denied)
    ));
    // Most calls go to the tools the temporal policies are about (the tool they decide, and
    // then the tools their conditions read), so that the conditions are evaluated often and
    // see both outcomes.
    let mut focus: Vec<&str> = Vec::new();
    for _ in 0..1 + rng.below(2) {
        let effect = if rng.chance(50) { "permit" } else { "forbid" };
        let tool = *rng.pick(&TOOLS);
        let clause = if rng.chance(85) { "when" } else { "unless" };
        let cond = condition(&mut rng, tool);
        focus.push(tool);
        focus.extend(
            TOOLS
                .into_iter()
                .filter(|t| cond.contains(&format!("{GEN_TARGET}___{t}\""))),
        );
        policies.push_str(&format!(
            "{effect} (principal, action == {}, resource == AgentCore::Gateway::\"{GEN_GATEWAY}\")\n{clause} temporal {{ {cond} }};\n",
            action(tool),
        ));
    }
    let mut steps = Vec::new();
    let mut t: i64 = 0;
    for _ in 0..6 + rng.below(11) {
        let tool = if rng.chance(80) {
            *rng.pick(&focus)
        } else {
            *rng.pick(&TOOLS)
        };
        let key = *rng.pick(&["k1", "k2"]);
        let who = *rng.pick(&["alice", "alice", "bob", "mallory"]);
        let mut input = json!({ "key": key });
        let mut output = Json::Null;
        if tool != "gamma" {
            let amount = *rng.pick(&[100, 500, 1000]);
            input["amount"] = json!(amount);
            let out_key = if rng.chance(80) { key } else { "k3" };
            output = json!({ "key": out_key, "amount": amount });
        }
        let mut step = json!({ "t": t, "principal": who, "tool": tool, "input": input });
        if !output.is_null() {
            step["output"] = output;
        }
        if rng.chance(15) {
            step["ok"] = json!(false);
        }
        steps.push(step);
        // Gaps around the windows' edges as well as well inside them.
        let (_, w) = *rng.pick(&WINDOWS);
        t += *rng.pick(&[2, 3, 5, 10, 20, 2, 5, w - 1, w, w + 1]);
    }
    json!({
        "name": format!("gen_{seed}_{n:04}"),
        "source": format!("difftest generate {seed}"),
        "policies": policies,
        "target": GEN_TARGET,
        "gateway": GEN_GATEWAY,
        "tools": gen_tools(),
        "steps": steps,
    })
}
