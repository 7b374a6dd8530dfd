//! `context.system.now`: time-based policies (AgentCore's business hours and date windows)
//! decided by the layer's clock, lists filtered with the time known, the generated schema that
//! declares it, and the semantic analysis of policies that read it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use common::{call, post, refund_engine, serve, upstream_router};
use policy_layer::config::Validation;
use policy_layer::engine::{Budget, SchemaSource, Solver, load};
use policy_layer::model::{ModelConfig, ToolCatalog};
use policy_layer::{ManualClock, PolicyEngine, PolicyLayer, PolicySource, Timestamp};
use serde_json::{Value, json};

const GATEWAY: &str = common::GATEWAY;

/// AgentCore's business-hours example, on the refund tool: 9:00 to 17:00 UTC.
const BUSINESS_HOURS: &str = r#"
@id("refunds_in_business_hours")
permit(principal, action == AgentCore::Action::"RefundTool___process_refund",
       resource == AgentCore::Gateway::"arn:aws:bedrock-agentcore:us-west-2:123456789012:gateway/refund-gateway")
when { duration("9h") <= context.system.now.toTime() && context.system.now.toTime() <= duration("17h") };

@id("orders_in_january_2025")
permit(principal, action == AgentCore::Action::"RefundTool___get_order", resource)
when { context.system.now >= datetime("2025-01-01T00:00:00Z") && context.system.now < datetime("2025-02-01T00:00:00Z")
       && context.input.order_id like "ORD-*" };
"#;

fn at(text: &str) -> Timestamp {
    text.parse().expect("RFC 3339")
}

async fn start(policies: &str, clock: &ManualClock) -> (std::net::SocketAddr, common::Recorder) {
    let (router, recorder) = upstream_router(false);
    let layer = PolicyLayer::new(refund_engine(policies))
        .unauthenticated()
        .clock(Arc::new(clock.clone()));
    let app: Router = router.layer(layer);
    (serve(app).await, recorder)
}

fn refund(id: i64) -> Value {
    call(
        json!(id),
        "process_refund",
        json!({"amount": 10, "customer_id": "C1"}),
    )
}

#[tokio::test]
async fn business_hours_are_decided_by_the_layer_clock() {
    let clock = ManualClock::new(at("2025-03-03T09:00:00Z"));
    let (addr, recorder) = start(BUSINESS_HOURS, &clock).await;
    let reply = post(addr, &refund(1)).await.json();
    assert_eq!(reply["result"]["isError"], false, "{reply}");

    clock.set(at("2025-03-03T17:00:00.001Z"));
    let reply = post(addr, &refund(2)).await.json();
    assert_eq!(
        reply["error"]["message"],
        "Tool Execution Denied: Tool call not allowed due to policy enforcement [Policy evaluation denied due to no determining policies]"
    );
    clock.set(at("2025-03-04T08:59:59.999Z"));
    assert_eq!(post(addr, &refund(3)).await.json()["error"]["code"], -32002);
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        post(addr, &refund(4)).await.json()["result"]["isError"],
        false
    );
    assert_eq!(
        recorder.calls().len(),
        2,
        "only the calls in business hours went upstream"
    );
}

#[tokio::test]
async fn a_date_window_opens_and_closes() {
    let clock = ManualClock::new(at("2024-12-31T23:59:59.999Z"));
    let (addr, _) = start(BUSINESS_HOURS, &clock).await;
    let order = |id: i64| call(json!(id), "get_order", json!({"order_id": "ORD-1"}));
    assert_eq!(post(addr, &order(1)).await.json()["error"]["code"], -32002);
    clock.set(at("2025-01-01T00:00:00Z"));
    assert_eq!(
        post(addr, &order(2)).await.json()["result"]["isError"],
        false
    );
    clock.set(at("2025-02-01T00:00:00Z"));
    assert_eq!(post(addr, &order(3)).await.json()["error"]["code"], -32002);
}

#[tokio::test]
async fn lists_are_filtered_with_the_time_known_and_the_input_unknown() {
    let clock = ManualClock::new(at("2025-01-15T12:00:00Z"));
    let (addr, _) = start(BUSINESS_HOURS, &clock).await;
    let names = |reply: Value| -> Vec<String> {
        reply["result"]["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .map(|t| t["name"].as_str().expect("name").to_owned())
            .collect()
    };
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    // Noon in January: refunds are allowed whatever the input; orders depend on it.
    assert_eq!(
        names(post(addr, &list).await.json()),
        ["process_refund", "get_order"]
    );
    // A night in March: no call of either can be allowed, whatever the input.
    clock.set(at("2025-03-03T23:00:00Z"));
    assert_eq!(names(post(addr, &list).await.json()), Vec::<String>::new());
    // A March noon: refunds again, orders never (the window is over).
    clock.set(at("2025-03-03T12:00:00Z"));
    assert_eq!(names(post(addr, &list).await.json()), ["process_refund"]);
}

fn validating_engine(solver: Solver) -> PolicyEngine {
    let engine = PolicyEngine::new(ModelConfig {
        target: "RefundTool".into(),
        gateway_id: GATEWAY.into(),
        ..ModelConfig::default()
    });
    engine.configure_validation(SchemaSource::FromTools, Validation::FailOnAnyFindings);
    engine.configure_analysis(solver, Budget::default());
    engine.set_catalog(ToolCatalog::from_list(&json!({"tools": common::tools()})));
    engine
}

#[test]
fn the_generated_schema_declares_system_now_as_a_datetime() {
    let engine = validating_engine(Solver::Disabled);
    let schema = engine.schema().expect("schema");
    assert!(schema.text.contains("type System"), "{}", schema.text);
    assert!(schema.text.contains("datetime"), "{}", schema.text);
    let report = engine
        .set_policies(load(&[PolicySource::new("time.cedar", BUSINESS_HOURS)]).expect("loads"))
        .expect("time-based policies validate");
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    let misspelt = BUSINESS_HOURS.replace(
        "context.system.now.toTime() <=",
        "context.system.nw.toTime() <=",
    );
    let refused = engine
        .set_policies(load(&[PolicySource::new("time.cedar", &misspelt)]).expect("loads"))
        .expect_err("strict validation knows the context");
    assert!(refused.to_string().contains("nw"), "{refused}");
}

#[test]
fn the_analysis_reads_time_conditions_without_false_findings() {
    let engine = validating_engine(Solver::Auto);
    let report = engine
        .set_policies(load(&[PolicySource::new("time.cedar", BUSINESS_HOURS)]).expect("loads"))
        .expect("no finding: each permit allows some requests and denies others");
    assert!(report.analysis.is_some(), "{report:?}");
    assert!(
        report
            .notes
            .iter()
            .all(|n| !n.contains("not analysed") && !n.contains("could not")),
        "{:?}",
        report.notes
    );
    // A window that closes before it opens allows nothing: the analysis proves it.
    let never = r#"
@id("never")
permit(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
when { context.system.now.toTime() < duration("1h") && context.system.now.toTime() > duration("2h") };
"#;
    let refused = engine
        .set_policies(load(&[PolicySource::new("never.cedar", never)]).expect("loads"))
        .expect_err("ineffective");
    assert!(refused.to_string().contains("never"), "{refused}");
}

#[test]
fn an_example_of_a_time_based_finding_carries_its_now() {
    let engine = validating_engine(Solver::Auto);
    // The forbid takes every business hour: the permit can match, yet nothing is allowed.
    let policies = r#"
@id("refunds_in_business_hours")
permit(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
when { duration("9h") <= context.system.now.toTime() && context.system.now.toTime() <= duration("17h") };

@id("no_refunds_by_day")
forbid(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
when { context.system.now.toTime() >= duration("8h") && context.system.now.toTime() <= duration("18h") };
"#;
    let refused = engine
        .set_policies(load(&[PolicySource::new("day.cedar", policies)]).expect("loads"))
        .expect_err("overly restrictive");
    let finding = refused
        .findings
        .iter()
        .find(|f| f.policy == "no_refunds_by_day")
        .unwrap_or_else(|| panic!("{refused}"));
    let example = finding
        .example
        .as_ref()
        .unwrap_or_else(|| panic!("{finding:?}"));
    let now: Timestamp = example["now"]
        .as_str()
        .expect("now")
        .parse()
        .expect("RFC 3339");
    let time_of_day = now.unix_millis().rem_euclid(86_400_000);
    assert!(
        (9 * 3_600_000..=17 * 3_600_000).contains(&time_of_day),
        "the example is a business hour: {example}"
    );
    assert_eq!(example["expect"], "DENY");
}
