//! Rate limits through the layer: a real axum MCP server wrapped by `PolicyLayer` with
//! `rate_limits`, called over HTTP. The replies of throttled calls (alone and in a batch), what
//! reaches the upstream and Cedar, the connection slots held by the reply body until it ends,
//! LOG_ONLY, and the store failing (`on_error`).

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use common::{call, limit_set, limits, post, refund_engine, serve, upstream_router};
use policy_layer::limit::Limits;
use policy_layer::state::{MemorySettings, OnError};
use policy_layer::{
    CallRecord, DecisionObserver, LimitOutcome, LimitRecord, Mode, PolicyLayer, Settings,
};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

const POLICIES: &str = r#"
@id("refunds")
permit(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
when { context.input.amount.lessThan(decimal("1000.0")) };
@id("orders")
permit(principal, action == AgentCore::Action::"RefundTool___get_order", resource);
@id("slow")
permit(principal, action == AgentCore::Action::"RefundTool___slow_tool", resource);
"#;

const TWO_REFUNDS: &str = r#"
[[rate_limit]]
id = "refunds-per-user"
tool = "process_refund"
key = ["jwt.sub"]
rate = 2
per = "minute"
"#;

/// What the observer heard: tools Cedar decided, and the limit records.
#[derive(Default)]
struct Heard {
    decided: Mutex<Vec<String>>,
    limited: Mutex<Vec<String>>,
}

impl DecisionObserver for Heard {
    fn on_call(&self, record: &CallRecord<'_>) {
        self.decided
            .lock()
            .expect("lock")
            .push(record.tool.to_owned());
    }

    fn on_limit(&self, record: &LimitRecord<'_>) {
        let line = match record.outcome {
            LimitOutcome::Throttled(t) => format!(
                "{} {} {} {} {}",
                record.tool,
                t.limit,
                t.limit_key,
                t.metric.as_str(),
                t.cause.as_str()
            ),
            LimitOutcome::Unchecked { limits } => format!("{} unchecked {limits:?}", record.tool),
        };
        self.limited.lock().expect("lock").push(line);
    }
}

fn layer(limits: Limits, mode: Mode, heard: &Arc<Heard>) -> PolicyLayer {
    PolicyLayer::new(refund_engine(POLICIES))
        .settings(Settings {
            mode,
            ..Settings::default()
        })
        .unauthenticated()
        .observer(Arc::clone(heard) as Arc<dyn DecisionObserver>)
        .rate_limits(limits)
}

fn refund(id: Value, customer: &str) -> Value {
    call(
        id,
        "process_refund",
        json!({"amount": 10, "customer_id": customer}),
    )
}

#[tokio::test]
async fn a_single_throttled_call_is_answered_429_and_never_forwarded() {
    let heard = Arc::new(Heard::default());
    let (router, recorder) = upstream_router(false);
    let limits = limits(TWO_REFUNDS, MemorySettings::default(), OnError::Deny);
    let addr = serve(router.layer(layer(limits, Mode::Enforce, &heard))).await;
    for id in 1..=2 {
        let reply = post(addr, &refund(json!(id), "C1")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["result"]["isError"], false);
    }
    let reply = post(addr, &refund(json!("third"), "C1")).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.headers[header::CONTENT_TYPE], "application/json");
    let retry_after: u64 = reply.headers[header::RETRY_AFTER]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        reply.text,
        format!(
            r#"{{"jsonrpc":"2.0","id":"third","error":{{"code":-32003,"message":"Rate limit exceeded","data":{{"limitKey":"refunds-per-user/anonymous","metric":"requests","retryAfter":{retry_after}}}}}}}"#
        )
    );
    assert_eq!(
        recorder.calls().len(),
        2,
        "the throttled call never went upstream"
    );
    assert_eq!(
        *heard.decided.lock().expect("lock"),
        ["process_refund", "process_refund"],
        "nor was it decided by Cedar"
    );
    assert_eq!(
        *heard.limited.lock().expect("lock"),
        ["process_refund refunds-per-user refunds-per-user/anonymous requests exceeded"]
    );
    // Other tools are not limited.
    let order = call(json!(4), "get_order", json!({"order_id": "1"}));
    assert_eq!(post(addr, &order).await.status, 200);
}

#[tokio::test]
async fn a_throttled_call_in_a_batch_is_answered_in_the_batch_and_the_rest_goes_on() {
    let heard = Arc::new(Heard::default());
    let (router, recorder) = upstream_router(false);
    let limits = limits(TWO_REFUNDS, MemorySettings::default(), OnError::Deny);
    let addr = serve(router.layer(layer(limits, Mode::Enforce, &heard))).await;
    let batch = json!([
        refund(json!(1), "C1"),
        refund(json!(2), "C1"),
        refund(json!(3), "C1"),
        call(json!(4), "get_order", json!({"order_id": "1"})),
    ]);
    let reply = post(addr, &batch).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let answers = reply.json();
    let answers = answers.as_array().expect("batch");
    assert_eq!(answers.len(), 4, "{answers:?}");
    let by_id = |id: i64| {
        answers
            .iter()
            .find(|a| a["id"] == id)
            .unwrap_or_else(|| panic!("no answer {id}: {answers:?}"))
    };
    assert_eq!(by_id(1)["result"]["isError"], false);
    assert_eq!(by_id(2)["result"]["isError"], false);
    assert_eq!(by_id(3)["error"]["code"], -32003);
    assert_eq!(
        by_id(3)["error"]["data"]["limitKey"],
        "refunds-per-user/anonymous"
    );
    assert_eq!(by_id(4)["result"]["isError"], false);
    let forwarded: Vec<String> = recorder
        .calls()
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(forwarded, ["process_refund", "process_refund", "get_order"]);
}

#[tokio::test]
async fn log_only_lets_denials_through_but_limits_still_throttle() {
    let heard = Arc::new(Heard::default());
    let (router, recorder) = upstream_router(false);
    let limits = limits(TWO_REFUNDS, MemorySettings::default(), OnError::Deny);
    let addr = serve(router.layer(layer(limits, Mode::LogOnly, &heard))).await;
    let big = |id: i64| {
        call(
            json!(id),
            "process_refund",
            json!({"amount": 5000, "customer_id": "C1"}),
        )
    };
    assert_eq!(
        post(addr, &big(1)).await.status,
        200,
        "denied by policy, forwarded in LOG_ONLY"
    );
    assert_eq!(post(addr, &big(2)).await.status, 200);
    assert_eq!(post(addr, &big(3)).await.status, 429);
    assert_eq!(recorder.calls().len(), 2);
}

const ONE_IN_FLIGHT: &str = r#"
[[rate_limit]]
id = "slow-in-flight"
tool = "slow_tool"
metric = "connections"
rate = 1
"#;

/// An upstream whose `slow_tool` answers in an event stream that stays open until the test
/// releases it; every call it receives is announced on `arrived`.
fn slow_upstream(release: Arc<Notify>, arrived: mpsc::UnboundedSender<Value>) -> Router {
    let handler = move |body: Bytes| {
        let release = Arc::clone(&release);
        let arrived = arrived.clone();
        async move {
            let message: Value = serde_json::from_slice(&body).expect("JSON");
            let id = message["id"].clone();
            let _ = arrived.send(message);
            let result = json!({"jsonrpc": "2.0", "id": id,
                "result": {"isError": false, "content": [{"type": "text", "text": "slow done"}]}});
            let event = format!("event: message\ndata: {result}\n\n");
            let stream = futures_util::stream::once(async move {
                release.notified().await;
                Ok::<_, Infallible>(Bytes::from(event))
            });
            Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .body(Body::from_stream(stream))
                .expect("response")
                .into_response()
        }
    };
    Router::new().route("/mcp", axum::routing::post(handler))
}

async fn post_slow(addr: SocketAddr, id: i64) -> (u16, String) {
    let reply = post(addr, &call(json!(id), "slow_tool", json!({}))).await;
    (reply.status.as_u16(), reply.text)
}

/// Posts a `slow_tool` call and returns once the reply's head has arrived, its body unread.
async fn head_of_slow(addr: SocketAddr, id: i64) -> axum::http::Response<hyper::body::Incoming> {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let request = axum::http::Request::post(format!("http://{addr}/mcp"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json, text/event-stream")
        .body(Body::from(
            call(json!(id), "slow_tool", json!({})).to_string(),
        ))
        .expect("request");
    client.request(request).await.expect("response head")
}

#[tokio::test]
async fn a_connection_slot_is_held_until_the_reply_body_ends() {
    let heard = Arc::new(Heard::default());
    let release = Arc::new(Notify::new());
    let (arrived, mut arrivals) = mpsc::unbounded_channel();
    let limits = limits(ONE_IN_FLIGHT, MemorySettings::default(), OnError::Deny);
    let app =
        slow_upstream(Arc::clone(&release), arrived).layer(layer(limits, Mode::Enforce, &heard));
    let addr = serve(app).await;

    let first = head_of_slow(addr, 1).await;
    assert_eq!(first.status(), 200);
    assert_eq!(
        arrivals.recv().await.expect("the first call went upstream")["id"],
        1
    );
    // The first reply's head is here, its body is not finished: the slot is still taken,
    // and the second call is answered at once (were it admitted, it would wait upstream).
    let (status, text) = tokio::time::timeout(Duration::from_secs(10), post_slow(addr, 2))
        .await
        .expect("the second call is refused, not held upstream");
    assert_eq!(status, 429, "{text}");
    assert_eq!(
        text,
        r#"{"jsonrpc":"2.0","id":2,"error":{"code":-32003,"message":"Rate limit exceeded","data":{"limitKey":"slow-in-flight","metric":"connections","retryAfter":1}}}"#
    );
    release.notify_one();
    let body = http_body_util::BodyExt::collect(first.into_body())
        .await
        .expect("body")
        .to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("slow done"));
    // The body ended, and with it the slot.
    let third = tokio::spawn(post_slow(addr, 3));
    assert_eq!(
        arrivals.recv().await.expect("the third call is admitted")["id"],
        3
    );
    release.notify_one();
    assert_eq!(third.await.expect("join").0, 200);
    assert!(
        arrivals.try_recv().is_err(),
        "the second call never reached the upstream"
    );
}

#[tokio::test]
async fn a_store_that_cannot_answer_denies_with_503_or_lets_calls_through_by_on_error() {
    // One key fits in the store: a second customer's counter cannot be made.
    let per_customer = r#"
[[rate_limit]]
id = "per-customer"
key = ["jwt.sub", "body.customer_id"]
rate = 100
per = "minute"
"#;
    let tiny = MemorySettings {
        max_keys: 1,
        shards: 1,
    };
    for (on_error, status) in [(OnError::Deny, 503), (OnError::Allow, 200)] {
        let heard = Arc::new(Heard::default());
        let (router, recorder) = upstream_router(false);
        let limits = limits(per_customer, tiny, on_error);
        let addr = serve(router.layer(layer(limits, Mode::Enforce, &heard))).await;
        assert_eq!(post(addr, &refund(json!(1), "C1")).await.status, 200);
        let reply = post(addr, &refund(json!(2), "C2")).await;
        assert_eq!(reply.status, status, "{on_error:?}: {}", reply.text);
        if on_error == OnError::Deny {
            assert_eq!(reply.headers[header::RETRY_AFTER], "1");
            assert_eq!(
                reply.text,
                r#"{"jsonrpc":"2.0","id":2,"error":{"code":-32603,"message":"Rate limit state unavailable","data":{"limitKey":"per-customer/anonymous/C2","metric":"requests","retryAfter":1}}}"#
            );
            assert_eq!(recorder.calls().len(), 1);
            assert_eq!(
                *heard.limited.lock().expect("lock"),
                [
                    "process_refund per-customer per-customer/anonymous/C2 requests store_unavailable"
                ]
            );
        } else {
            assert_eq!(recorder.calls().len(), 2);
            assert_eq!(
                *heard.limited.lock().expect("lock"),
                [r#"process_refund unchecked ["per-customer"]"#]
            );
        }
    }
}

#[tokio::test]
async fn limits_replaced_on_reload_apply_to_the_next_call() {
    let heard = Arc::new(Heard::default());
    let (router, _) = upstream_router(false);
    let limits = limits(TWO_REFUNDS, MemorySettings::default(), OnError::Deny);
    let addr = serve(router.layer(layer(limits.clone(), Mode::Enforce, &heard))).await;
    let blocked = r#"
[[rate_limit]]
id = "refunds-off"
tool = "process_refund"
rate = 0
per = "second"
"#;
    limits.replace(limit_set(blocked), OnError::Deny);
    let reply = post(addr, &refund(json!(1), "C1")).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.headers[header::RETRY_AFTER], "60");
    assert_eq!(reply.json()["error"]["data"]["limitKey"], "refunds-off");
}
