//! The layer's cost per MCP request, in process: AuthorizeAction through the whole
//! `PolicyService` (parse, type, decide, forward) with 1, 100, 1,000 and 10,000 policies, and
//! with one rate limit in the memory store, and with one temporal policy (a session in the
//! memory store); tools/list filtering of 1,000 tools under 100
//! policies (with a permit that depends on the input, and on the input and the time); context
//! typing alone, and the `context.system.now` value alone.

use std::convert::Infallible;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use policy_layer::limit::{KeyPart, LimitSet, Limits, Metric, Per, RateLimit};
use policy_layer::model::tools::input_type;
use policy_layer::model::{ModelConfig, ToolCatalog, TypedInput, values};
use policy_layer::state::{MemorySettings, OnError, Store};
use policy_layer::{PolicyEngine, PolicyLayer, PolicySource, Timestamp};
use serde_json::{Value, json};
use tower::{Layer, Service, ServiceExt, service_fn};

fn refund_tool() -> Value {
    json!({"name": "process_refund", "inputSchema": {"type": "object", "properties": {
        "amount": {"type": "number"}, "customer_id": {"type": "string"}, "reason": {"type": "string"}},
        "required": ["amount", "customer_id"]}})
}

/// `n` policies: the refund limit, plus `n - 1` policies each about a tool of its own (with a
/// condition on the input and on a tag), as a large multi-tool deployment has.
fn policies(n: usize) -> String {
    let mut text = String::from(
        r#"@id("refund_limit") permit(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
           when { context.input.amount.lessThan(decimal("1000.0")) };"#,
    );
    for i in 1..n {
        let effect = if i % 5 == 0 { "forbid" } else { "permit" };
        text.push_str(&format!(
            "\n{effect}(principal, action == AgentCore::Action::\"RefundTool___tool_{i}\", resource) when {{ principal.hasTag(\"role\") && principal.getTag(\"role\") == \"r{i}\" && context.input.amount < {i} }};"
        ));
    }
    text
}

fn engine(n: usize, tools: usize) -> PolicyEngine {
    engine_with(n, tools, "")
}

/// [`engine`] with `extra` policies after the `n`.
fn engine_with(n: usize, tools: usize, extra: &str) -> PolicyEngine {
    let model = ModelConfig {
        target: "RefundTool".into(),
        ..ModelConfig::default()
    };
    let text = policies(n) + extra;
    let engine = PolicyEngine::from_sources(model, &[PolicySource::new("bench.cedar", text)])
        .expect("policies load");
    let mut list = vec![refund_tool()];
    for i in 1..tools {
        list.push(json!({"name": format!("tool_{i}"), "inputSchema": {"type": "object", "properties": {"amount": {"type": "integer"}}}}));
    }
    engine.set_catalog(ToolCatalog::from_list(&json!({ "tools": list })));
    engine
}

fn call_body(amount: f64) -> Bytes {
    Bytes::from(
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "process_refund",
            "arguments": {"amount": amount, "customer_id": "C001", "reason": "damaged"}}})
        .to_string(),
    )
}

fn bench_authorize(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let upstream = service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
        ))))
    });
    let mut group = c.benchmark_group("layer/tools_call");
    for n in [1, 100, 1_000, 10_000] {
        let service = PolicyLayer::new(engine(n, n.min(1_000)))
            .unauthenticated()
            .layer(upstream);
        for (label, amount) in [("allow", 500.0), ("deny", 2000.0)] {
            group.bench_with_input(BenchmarkId::new(label, n), &n, |b, _| {
                b.iter(|| {
                    let req = Request::post("/mcp")
                        .header("content-type", "application/json")
                        .body(Full::new(call_body(amount)))
                        .expect("request");
                    let mut svc = service.clone();
                    rt.block_on(async {
                        let svc = svc.ready().await.expect("ready");
                        let res = svc.call(req).await.expect("response");
                        black_box(res.into_body().collect().await.expect("body"));
                    });
                });
            });
        }
    }
    // One limit that every call passes (a rate no run reaches), counted in memory.
    let limited = PolicyLayer::new(engine(1, 1))
        .unauthenticated()
        .rate_limits(one_memory_limit())
        .layer(upstream);
    group.bench_with_input(BenchmarkId::new("allow_1_rate_limit", 1), &1, |b, _| {
        b.iter(|| {
            let req = Request::post("/mcp")
                .header("content-type", "application/json")
                .body(Full::new(call_body(500.0)))
                .expect("request");
            let mut svc = limited.clone();
            rt.block_on(async {
                let svc = svc.ready().await.expect("ready");
                let res = svc.call(req).await.expect("response");
                black_box(res.into_body().collect().await.expect("body"));
            });
        });
    });
    // One temporal policy on the tool ("no refund within an hour of an order deletion"): the
    // session header read, the session locked and read (memory store), the condition
    // evaluated over an empty history and handed to Cedar. Nothing is recorded (no condition
    // reads a refund's events), so every iteration sees the same session.
    let temporal = PolicyLayer::new(engine_with(
        1,
        1,
        r#"
        @id("no_refund_after_a_deletion") forbid(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
        when temporal { formerly within 1h AgentCore::Action::"RefundTool___delete_order"::response{ eventResource: resource } };"#,
    ))
    .unauthenticated()
    .layer(upstream);
    group.bench_with_input(
        BenchmarkId::new("allow_1_temporal_policy", 1),
        &1,
        |b, _| {
            b.iter(|| {
                let req = Request::post("/mcp")
                    .header("content-type", "application/json")
                    .header(
                        "x-amzn-bedrock-agentcore-policy-session-id",
                        "bench-session-1",
                    )
                    .body(Full::new(call_body(500.0)))
                    .expect("request");
                let mut svc = temporal.clone();
                rt.block_on(async {
                    let svc = svc.ready().await.expect("ready");
                    let res = svc.call(req).await.expect("response");
                    assert_eq!(res.status(), 200);
                    black_box(res.into_body().collect().await.expect("body"));
                });
            });
        },
    );
    group.finish();
}

fn one_memory_limit() -> Limits {
    let limit = RateLimit {
        id: "refunds".into(),
        tool: Some("process_refund".into()),
        key: vec![KeyPart::Subject].into(),
        metric: Metric::Requests(Per::Second),
        rate: u32::MAX,
    };
    Limits::new(
        LimitSet::from(vec![limit]),
        Store::memory(MemorySettings::default()),
        OnError::Deny,
    )
}

fn bench_snapshot(c: &mut Criterion) {
    let identity = policy_layer::auth::Identity::anonymous();
    let args = json!({"amount": 500.0, "customer_id": "C001"});
    let mut group = c.benchmark_group("engine/authorize");
    for n in [1, 1_000, 10_000] {
        let snapshot = engine(n, n.min(1_000)).snapshot().expect("snapshot");
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                black_box(
                    snapshot
                        .authorize(&identity, "process_refund", Some(&args))
                        .expect("decides"),
                )
            });
        });
    }
    // A principal from a JWT with the claims an OAuth token carries (eight tags).
    let claims = policy_layer::auth::Identity {
        kind: policy_layer::auth::PrincipalKind::OAuthUser,
        subject: "alice".into(),
        tags: [
            ("aud", "mcp-gateway"),
            ("client_id", "refund-agent"),
            ("email", "alice@example.com"),
            ("iss", "https://issuer.example"),
            ("role", "refund-agent"),
            ("scope", "mcp:tools"),
            ("tenant", "eu-1"),
            ("username", "alice"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect(),
        expires_at: None,
    };
    let snapshot = engine(1, 1).snapshot().expect("snapshot");
    group.bench_function("1_policy_8_claims", |b| {
        b.iter(|| {
            black_box(
                snapshot
                    .authorize(&claims, "process_refund", Some(&args))
                    .expect("decides"),
            )
        });
    });
    group.finish();
}

fn bench_list(c: &mut Criterion) {
    let identity = policy_layer::auth::Identity::anonymous();
    let names: Vec<String> = std::iter::once("process_refund".to_owned())
        .chain((1..1_000).map(|i| format!("tool_{i}")))
        .collect();
    let mut group = c.benchmark_group("engine/partially_authorize");
    group.throughput(Throughput::Elements(names.len() as u64));
    // Most tools named by no policy (answered from the index), and every tool under a
    // permit on a group whose condition needs the input (each one partially evaluated).
    let group_permit = r#"
        permit(principal, action in AgentCore::Action::"CallTool", resource)
        when { context.input has amount && context.input.amount < 10 };"#;
    // The same, also during business hours only: each tool is evaluated again with the time.
    let time_permit = r#"
        permit(principal, action in AgentCore::Action::"CallTool", resource)
        when { context.input has amount && context.input.amount < 10
               && duration("9h") <= context.system.now.toTime() && context.system.now.toTime() <= duration("17h") };"#;
    for (label, extra) in [
        ("1000_tools_100_policies", ""),
        ("1000_tools_100_policies_group_permit", group_permit),
        ("1000_tools_100_policies_group_permit_on_time", time_permit),
    ] {
        let snapshot = engine_with(100, 1_000, extra).snapshot().expect("snapshot");
        group.bench_function(label, |b| {
            b.iter(|| {
                let mut lister = snapshot.lister(&identity);
                for name in &names {
                    black_box(lister.listing(name).expect("decides"));
                }
            });
        });
    }
    group.finish();
}

fn bench_typing(c: &mut Criterion) {
    let ty = input_type(&refund_tool()["inputSchema"]);
    let args = json!({"amount": 999.99, "customer_id": "C001", "reason": "damaged"});
    c.bench_function("model/context_typing", |b| {
        b.iter(|| {
            black_box(
                TypedInput::new(Some(&args), &ty)
                    .expect("typed")
                    .into_context(),
            )
        });
    });
}

fn bench_system_now(c: &mut Criterion) {
    let now = Timestamp::from_unix_millis(1_764_500_000_000);
    c.bench_function("model/system_now", |b| {
        b.iter(|| black_box(values::system(black_box(now)).expect("datetime")));
    });
}

criterion_group!(
    benches,
    bench_authorize,
    bench_snapshot,
    bench_list,
    bench_typing,
    bench_system_now
);
criterion_main!(benches);
