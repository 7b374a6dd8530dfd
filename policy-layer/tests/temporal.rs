//! Temporal (session-aware) policies through the layer: a real axum MCP server wrapped by
//! `PolicyLayer`, called over HTTP with the policy session header. Calls allowed and denied by
//! the session's history (requests, responses, errors of denied calls), the header missing or
//! malformed, 409 when the temporal policies change or the session was evicted, LOG_ONLY.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Recorder, call, limits, post_raw, refund_engine, serve, upstream_router};
use policy_layer::limit::Limits;
use policy_layer::state::{MemorySettings, OnError, SessionBounds, Store};
use policy_layer::{
    CallRecord, DecisionObserver, ManualClock, Mode, PolicyEngine, PolicyLayer, PolicySource,
    Settings, Timestamp,
};
use serde_json::{Value, json};

const HEADER: &str = "x-amzn-bedrock-agentcore-policy-session-id";

const POLICIES: &str = r#"
@id("refunds")
permit(principal, action == AgentCore::Action::"RefundTool___process_refund", resource);
@id("orders")
permit(principal, action in [AgentCore::Action::"RefundTool___get_order", AgentCore::Action::"RefundTool___update_order"], resource);
@id("big-refunds")
forbid(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
when { context.input.amount.greaterThan(decimal("1000.0")) };
@id("at-most-two-refunds")
forbid(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
when temporal {
    exists (n: Long).
        (count for (t: Timepoint).
            where (formerly within 5m (AgentCore::Action::"RefundTool___process_refund"::request{ eventResource: resource } && tp(t)))) == n
        && n > 2
};
@id("no-update-for-a-minute-after-a-refund")
forbid(principal, action == AgentCore::Action::"RefundTool___update_order", resource)
when temporal {
    formerly within 1m AgentCore::Action::"RefundTool___process_refund"::response{ eventResource: resource }
};
@id("no-lookup-after-a-denied-refund")
forbid(principal, action == AgentCore::Action::"RefundTool___get_order", resource)
when temporal {
    formerly within 3m AgentCore::Action::"RefundTool___process_refund"::error{ eventResource: resource }
};
"#;

/// What the observer heard: `tool decision forwarded conditions`.
#[derive(Default)]
struct Heard(Mutex<Vec<String>>);

impl DecisionObserver for Heard {
    fn on_call(&self, record: &CallRecord<'_>) {
        let conditions = record
            .temporal
            .as_ref()
            .map(|t| format!("{}:{}", t.session, t.conditions))
            .unwrap_or_default();
        self.0.lock().expect("lock").push(format!(
            "{} {} {} {conditions}",
            record.tool,
            record.decision(),
            record.forwarded
        ));
    }

    fn on_policy_session_refused(&self, reason: &'static str) {
        self.0
            .lock()
            .expect("lock")
            .push(format!("refused {reason}"));
    }
}

struct Gateway {
    addr: SocketAddr,
    clock: ManualClock,
    engine: PolicyEngine,
    heard: Arc<Heard>,
}

async fn gateway(mode: Mode, store: Store) -> Gateway {
    gateway_limited(mode, store, None).await.0
}

/// A gateway whose layer also checks `limits`, and what its upstream received.
async fn gateway_limited(mode: Mode, store: Store, limits: Option<Limits>) -> (Gateway, Recorder) {
    let (router, recorder) = upstream_router(false);
    let engine = refund_engine(POLICIES);
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_800_000_000_000));
    let heard = Arc::new(Heard::default());
    let layer = PolicyLayer::new(engine.clone())
        .settings(Settings {
            mode,
            ..Settings::default()
        })
        .unauthenticated()
        .observer(Arc::clone(&heard) as Arc<dyn DecisionObserver>)
        .clock(Arc::new(clock.clone()))
        .session_store(store);
    let layer = match limits {
        Some(limits) => layer.rate_limits(limits),
        None => layer,
    };
    let gateway = Gateway {
        addr: serve(router.layer(layer)).await,
        clock,
        engine,
        heard,
    };
    (gateway, recorder)
}

fn memory() -> Store {
    Store::memory(MemorySettings::default())
}

impl Gateway {
    async fn send(&self, session: Option<&str>, tool: &str, arguments: Value) -> common::Reply {
        let body = call(json!(1), tool, arguments).to_string();
        let headers: Vec<(&str, &str)> = session.map(|s| (HEADER, s)).into_iter().collect();
        post_raw(self.addr, "application/json", body, &headers).await
    }

    /// `ALLOW` or `DENY` for a call in `session`.
    async fn decide(&self, session: &str, tool: &str, arguments: Value) -> &'static str {
        let reply = self.send(Some(session), tool, arguments).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        if reply.json().get("error").is_some() {
            "DENY"
        } else {
            "ALLOW"
        }
    }

    fn advance(&self, seconds: u64) {
        self.clock.advance(Duration::from_secs(seconds));
    }
}

fn refund(amount: f64) -> Value {
    json!({"amount": amount, "customer_id": "c-1"})
}

fn order() -> Value {
    json!({"order_id": "o-1"})
}

#[tokio::test]
async fn the_third_refund_in_five_minutes_is_denied_until_the_first_leaves_the_window() {
    let g = gateway(Mode::Enforce, memory()).await;
    assert_eq!(
        g.decide("s-1", "process_refund", refund(10.0)).await,
        "ALLOW"
    );
    g.advance(60);
    assert_eq!(
        g.decide("s-1", "process_refund", refund(10.0)).await,
        "ALLOW"
    );
    g.advance(60);
    assert_eq!(
        g.decide("s-1", "process_refund", refund(10.0)).await,
        "DENY"
    );
    // Another session has its own history.
    assert_eq!(
        g.decide("s-2", "process_refund", refund(10.0)).await,
        "ALLOW"
    );
    // Five minutes after the first refund, one refund of the window is left.
    g.advance(181);
    assert_eq!(
        g.decide("s-1", "process_refund", refund(10.0)).await,
        "ALLOW"
    );
    let heard = g.heard.0.lock().expect("lock").clone();
    assert!(
        heard[2].starts_with("process_refund DENY false s-1:c0=true(at-most-two-refunds)"),
        "{heard:?}"
    );
}

#[tokio::test]
async fn a_refund_response_blocks_order_updates_for_a_minute() {
    let g = gateway(Mode::Enforce, memory()).await;
    assert_eq!(g.decide("s-1", "update_order", order()).await, "ALLOW");
    assert_eq!(
        g.decide("s-1", "process_refund", refund(10.0)).await,
        "ALLOW"
    );
    assert_eq!(g.decide("s-1", "update_order", order()).await, "DENY");
    g.advance(61);
    assert_eq!(g.decide("s-1", "update_order", order()).await, "ALLOW");
}

#[tokio::test]
async fn a_denied_call_is_recorded_as_an_error_event() {
    let g = gateway(Mode::Enforce, memory()).await;
    assert_eq!(g.decide("s-1", "get_order", order()).await, "ALLOW");
    assert_eq!(
        g.decide("s-1", "process_refund", refund(5000.0)).await,
        "DENY"
    );
    assert_eq!(g.decide("s-1", "get_order", order()).await, "DENY");
    // A denied call is not a request: two more refunds are still allowed.
    assert_eq!(
        g.decide("s-1", "process_refund", refund(10.0)).await,
        "ALLOW"
    );
    assert_eq!(
        g.decide("s-1", "process_refund", refund(10.0)).await,
        "ALLOW"
    );
    g.advance(181);
    assert_eq!(g.decide("s-1", "get_order", order()).await, "ALLOW");
}

#[tokio::test]
async fn a_call_without_the_session_header_is_refused_and_a_malformed_one_is_not_echoed() {
    let g = gateway(Mode::Enforce, memory()).await;
    let missing = g.send(None, "get_order", order()).await;
    assert_eq!(missing.status, 400, "{}", missing.text);
    assert_eq!(missing.json()["error"]["code"], -32600);
    assert!(
        missing.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(HEADER)),
        "{}",
        missing.text
    );
    for bad in ["has space", "under_score", &"a".repeat(129)] {
        let reply = g.send(Some(bad), "get_order", order()).await;
        assert_eq!(reply.status, 400, "{}", reply.text);
        assert!(!reply.text.contains(bad), "{}", reply.text);
    }
    assert_eq!(
        g.decide(&"a".repeat(128), "get_order", order()).await,
        "ALLOW"
    );
}

/// A call refused for its session header is not charged by the rate limits: the limit of one
/// refund a minute still lets the next, well-formed call through, and only the one after it
/// is throttled.
#[tokio::test]
async fn a_call_refused_for_its_session_header_is_not_charged_by_the_rate_limits() {
    const ONE_REFUND: &str = r#"
        [[rate_limit]]
        id = "one-refund"
        tool = "process_refund"
        rate = 1
        per = "minute"
        "#;
    let limits = limits(ONE_REFUND, MemorySettings::default(), OnError::Deny);
    let (g, recorder) = gateway_limited(Mode::Enforce, memory(), Some(limits)).await;
    let refund = || json!({"amount": 10, "customer_id": "C1"});
    for session in [None, Some("has space")] {
        let refused = g.send(session, "process_refund", refund()).await;
        assert_eq!(refused.status, 400, "{}", refused.text);
    }
    let first = g.send(Some("s-1"), "process_refund", refund()).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.json()["result"]["isError"], false, "{}", first.text);
    let second = g.send(Some("s-1"), "process_refund", refund()).await;
    assert_eq!(second.status, 429, "{}", second.text);
    assert_eq!(
        recorder.calls().len(),
        1,
        "only the first well-formed call went upstream"
    );
}

#[tokio::test]
async fn the_header_is_not_needed_without_temporal_policies() {
    let (router, _) = upstream_router(false);
    let layer = PolicyLayer::new(refund_engine(
        r#"permit(principal, action == AgentCore::Action::"RefundTool___get_order", resource);"#,
    ))
    .unauthenticated();
    let addr = serve(router.layer(layer)).await;
    let body = call(json!(1), "get_order", order()).to_string();
    let reply = post_raw(addr, "application/json", body, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(reply.json().get("result").is_some(), "{}", reply.text);
}

#[tokio::test]
async fn changed_temporal_policies_invalidate_open_sessions_with_409() {
    let g = gateway(Mode::Enforce, memory()).await;
    assert_eq!(
        g.decide("s-1", "process_refund", refund(10.0)).await,
        "ALLOW"
    );
    let changed = POLICIES.replace("n > 2", "n > 3");
    g.engine.replace_policies(
        policy_layer::engine::load(&[PolicySource::new("policies/refund.cedar", changed)])
            .expect("loads"),
    );
    let reply = g.send(Some("s-1"), "process_refund", refund(10.0)).await;
    assert_eq!(reply.status, 409, "{}", reply.text);
    assert!(reply.text.contains("ConflictException"), "{}", reply.text);
    assert_eq!(
        g.decide("s-new", "process_refund", refund(10.0)).await,
        "ALLOW"
    );
}

#[tokio::test]
async fn an_evicted_session_is_answered_409_rather_than_with_an_empty_history() {
    let store = memory().with_session_bounds(SessionBounds {
        max_sessions: 1,
        ..SessionBounds::default()
    });
    let g = gateway(Mode::Enforce, store).await;
    assert_eq!(
        g.decide("s-1", "process_refund", refund(10.0)).await,
        "ALLOW"
    );
    assert_eq!(
        g.decide("s-2", "process_refund", refund(10.0)).await,
        "ALLOW"
    );
    let reply = g.send(Some("s-1"), "process_refund", refund(10.0)).await;
    assert_eq!(reply.status, 409, "{}", reply.text);
    assert!(reply.text.contains("evicted"), "{}", reply.text);
    assert!(
        g.heard
            .0
            .lock()
            .expect("lock")
            .contains(&"refused evicted".to_owned())
    );
}

#[tokio::test]
async fn log_only_forwards_what_a_temporal_policy_would_deny_and_records_it_as_a_request() {
    let g = gateway(Mode::LogOnly, memory()).await;
    for _ in 0..3 {
        assert_eq!(
            g.decide("s-1", "process_refund", refund(10.0)).await,
            "ALLOW"
        );
    }
    let heard = g.heard.0.lock().expect("lock").clone();
    assert!(
        heard[2].starts_with("process_refund DENY true s-1:c0=true(at-most-two-refunds)"),
        "{heard:?}"
    );
    // The fourth also counts the third, which ran.
    assert_eq!(
        g.decide("s-1", "process_refund", refund(10.0)).await,
        "ALLOW"
    );
    let heard = g.heard.0.lock().expect("lock").clone();
    assert!(heard[3].contains("DENY true"), "{heard:?}");
}

#[tokio::test]
async fn a_tool_that_only_a_temporal_permit_allows_is_listed_without_a_session() {
    let (router, _) = upstream_router(false);
    let layer = PolicyLayer::new(refund_engine(
        r#"permit(principal, action == AgentCore::Action::"RefundTool___get_order", resource)
           when temporal { formerly within 1h AgentCore::Action::"RefundTool___process_refund"::response{ eventResource: resource } };"#,
    ))
    .unauthenticated();
    let addr = serve(router.layer(layer)).await;
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string();
    let reply = post_raw(addr, "application/json", list, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = reply.json();
    let names: Vec<&str> = body["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["get_order"], "{}", reply.text);
}
