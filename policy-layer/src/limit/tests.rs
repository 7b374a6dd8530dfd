use std::time::Duration;

use http::HeaderMap;
use serde_json::{Value, json};
use tokio::time::advance;

use super::*;
use crate::auth::PrincipalKind;
use crate::state::{MemorySettings, MemoryStore};

#[derive(serde::Deserialize)]
struct File {
    rate_limit: Vec<RateLimitConfig>,
}

fn set(toml_text: &str) -> LimitSet {
    let file: File = toml::from_str(toml_text).expect("toml");
    LimitSet::from_config(&file.rate_limit).expect("valid limits")
}

fn limits(toml_text: &str) -> (Limits, MemoryStore) {
    limits_in(toml_text, MemorySettings::default(), OnError::Deny)
}

fn limits_in(
    toml_text: &str,
    settings: MemorySettings,
    on_error: OnError,
) -> (Limits, MemoryStore) {
    let memory = MemoryStore::new(settings);
    let limits = Limits::new(set(toml_text), Store::from(memory.clone()), on_error);
    (limits, memory)
}

fn user(subject: &str) -> Identity {
    Identity {
        kind: PrincipalKind::OAuthUser,
        subject: subject.to_owned(),
        tags: vec![("tenant".to_owned(), "acme".to_owned())],
        expires_at: None,
    }
}

async fn call(
    limits: &Limits,
    who: &str,
    tool: &str,
    arguments: Value,
) -> Result<Admitted, Throttled> {
    limits
        .check(&user(who), &HeaderMap::new(), tool, Some(&arguments))
        .await
}

const REFUNDS: &str = r#"
[[rate_limit]]
id = "refunds-per-user"
tool = "process_refund"
key = ["jwt.sub"]
metric = "requests"
rate = 5
per = "minute"
"#;

#[tokio::test(start_paused = true)]
async fn throttles_the_sixth_call_in_a_minute_with_the_exact_reply() {
    let (limits, _) = limits(REFUNDS);
    for _ in 0..5 {
        let admitted = call(&limits, "alice", "process_refund", json!({}))
            .await
            .expect("admitted");
        assert_eq!(admitted.limits(), [Arc::from("refunds-per-user")]);
    }
    let throttled = call(&limits, "alice", "process_refund", json!({}))
        .await
        .expect_err("sixth call");
    assert_eq!(throttled.cause, ThrottleCause::Exceeded);
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        throttled.error_json(&json!(7)),
        r#"{"jsonrpc":"2.0","id":7,"error":{"code":-32003,"message":"Rate limit exceeded","data":{"limitKey":"refunds-per-user/alice","metric":"requests","retryAfter":60}}}"#
    );
    let response: Response<Bytes> = throttled.response(&json!("req-1"));
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()[header::RETRY_AFTER], "60");
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let body: Value = serde_json::from_slice(response.body()).expect("json");
    assert_eq!(body["id"], "req-1");
    drop(
        call(&limits, "bob", "process_refund", json!({}))
            .await
            .expect("bob has his own counter"),
    );
    assert_eq!(limits.stats().throttled, 1);
    assert_eq!(limits.stats().checked, 7);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_the_rest_of_the_window_rounded_up() {
    let (limits, _) = limits(REFUNDS);
    for _ in 0..5 {
        drop(
            call(&limits, "alice", "process_refund", json!({}))
                .await
                .expect("admitted"),
        );
    }
    advance(Duration::from_millis(45_500)).await;
    let throttled = call(&limits, "alice", "process_refund", json!({}))
        .await
        .expect_err("throttled");
    assert_eq!(throttled.retry_after, 15);
    advance(Duration::from_millis(14_500)).await;
    drop(
        call(&limits, "alice", "process_refund", json!({}))
            .await
            .expect("a new window"),
    );
}

#[tokio::test(start_paused = true)]
async fn echoes_request_ids_of_every_json_type() {
    let (limits, _) = limits("[[rate_limit]]\nid = \"off\"\nrate = 0\nper = \"second\"");
    let throttled = call(&limits, "alice", "any", json!({}))
        .await
        .expect_err("blocked");
    for (id, text) in [
        (json!("a-1"), r#""id":"a-1""#),
        (json!(12), r#""id":12"#),
        (json!(1.5), r#""id":1.5"#),
        (Value::Null, r#""id":null"#),
    ] {
        assert!(throttled.error_json(&id).contains(text), "{id}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_no_limit_matches_pays_nothing() {
    let (limits, memory) = limits(REFUNDS);
    let admitted = call(&limits, "alice", "lookup_order", json!({}))
        .await
        .expect("admitted");
    assert!(admitted.limits().is_empty());
    assert_eq!(limits.stats().checked, 0);
    assert!(memory.is_empty(), "the store was not touched");
    assert!(limits.matching("lookup_order").is_empty());
}

#[tokio::test(start_paused = true)]
async fn every_matching_limit_must_pass() {
    let (limits, _) = limits(
        r#"
[[rate_limit]]
id = "refunds"
tool = "process_refund"
key = ["jwt.sub"]
rate = 10
per = "minute"

[[rate_limit]]
id = "all-tools"
key = ["jwt.sub"]
rate = 2
per = "minute"
"#,
    );
    assert_eq!(
        limits.matching("process_refund"),
        [Arc::from("refunds"), Arc::from("all-tools")]
    );
    assert_eq!(limits.matching("lookup_order"), [Arc::from("all-tools")]);
    drop(
        call(&limits, "alice", "process_refund", json!({}))
            .await
            .expect("1"),
    );
    drop(
        call(&limits, "alice", "lookup_order", json!({}))
            .await
            .expect("2"),
    );
    let throttled = call(&limits, "alice", "process_refund", json!({}))
        .await
        .expect_err("the every-tool limit is spent");
    assert_eq!(&*throttled.limit, "all-tools");
    assert_eq!(throttled.limit_key, "all-tools/alice");
}

#[tokio::test(start_paused = true)]
async fn a_zero_rate_blocks_without_the_store() {
    let (limits, memory) = limits(
        r#"
[[rate_limit]]
id = "counted"
key = ["jwt.sub"]
rate = 5
per = "second"

[[rate_limit]]
id = "blocked-tenant"
key = ["jwt.tenant"]
rate = 0
per = "minute"
"#,
    );
    let throttled = call(&limits, "alice", "any", json!({}))
        .await
        .expect_err("blocked");
    assert_eq!(throttled.cause, ThrottleCause::Blocked);
    assert_eq!(throttled.limit_key, "blocked-tenant/acme");
    assert_eq!(throttled.retry_after, BLOCKED_RETRY_AFTER.as_secs());
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(memory.is_empty(), "no counter was charged");
}

#[tokio::test(start_paused = true)]
async fn connections_hold_a_slot_until_admitted_is_dropped() {
    let (limits, memory) = limits(
        "[[rate_limit]]\nid = \"in-flight\"\nkey = [\"jwt.sub\"]\nmetric = \"connections\"\nrate = 1",
    );
    let first = call(&limits, "alice", "slow_report", json!({}))
        .await
        .expect("admitted");
    assert!(first.holds_permits());
    let throttled = call(&limits, "alice", "slow_report", json!({}))
        .await
        .expect_err("one in flight already");
    assert_eq!(
        throttled.error_json(&json!(1)),
        r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32003,"message":"Rate limit exceeded","data":{"limitKey":"in-flight/alice","metric":"connections","retryAfter":1}}}"#
    );
    drop(
        call(&limits, "bob", "slow_report", json!({}))
            .await
            .expect("bob's own slot"),
    );
    drop(first);
    let again = call(&limits, "alice", "slow_report", json!({}))
        .await
        .expect("slot free");
    drop(again);
    assert!(memory.is_empty());
}

#[tokio::test(start_paused = true)]
async fn merged_admissions_release_together() {
    let (limits, memory) = limits(
        "[[rate_limit]]\nid = \"in-flight\"\nkey = [\"jwt.sub\"]\nmetric = \"connections\"\nrate = 2",
    );
    let mut batch = call(&limits, "alice", "a", json!({})).await.expect("1");
    batch.merge(call(&limits, "alice", "b", json!({})).await.expect("2"));
    call(&limits, "alice", "c", json!({}))
        .await
        .expect_err("both slots held by the batch");
    drop(batch);
    assert!(memory.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_missing_key_part_shares_one_counter_and_never_escapes_the_limit() {
    let (limits, _) = limits(
        r#"
[[rate_limit]]
id = "per-customer"
tool = "process_refund"
key = ["jwt.sub", "body.customer_id"]
rate = 1
per = "minute"
"#,
    );
    drop(
        call(&limits, "alice", "process_refund", json!({}))
            .await
            .expect("first"),
    );
    let throttled = call(
        &limits,
        "alice",
        "process_refund",
        json!({"customer_id": null}),
    )
    .await
    .expect_err("absent and null share the empty value");
    assert_eq!(throttled.limit_key, "per-customer/alice/");
    let no_arguments = limits
        .check(&user("alice"), &HeaderMap::new(), "process_refund", None)
        .await
        .expect_err("no arguments at all: the same counter");
    assert_eq!(no_arguments.limit_key, "per-customer/alice/");
    drop(
        call(
            &limits,
            "alice",
            "process_refund",
            json!({"customer_id": "C1"}),
        )
        .await
        .expect("a present value has its own counter"),
    );
}

#[tokio::test(start_paused = true)]
async fn a_header_part_splits_a_callers_counter() {
    let (limits, _) = limits(
        "[[rate_limit]]\nid = \"w\"\nkey = [\"jwt.sub\", \"header.x-workload\"]\nrate = 1\nper = \"second\"",
    );
    let mut batch = HeaderMap::new();
    batch.insert("x-workload", "batch".parse().expect("value"));
    let alice = user("alice");
    drop(
        limits
            .check(&alice, &batch, "t", None)
            .await
            .expect("batch"),
    );
    drop(
        limits
            .check(&alice, &HeaderMap::new(), "t", None)
            .await
            .expect("no header"),
    );
    let throttled = limits
        .check(&alice, &batch, "t", None)
        .await
        .expect_err("batch spent");
    assert_eq!(throttled.limit_key, "w/alice/batch");
}

#[tokio::test(start_paused = true)]
async fn a_reload_keeps_the_counts_of_a_kept_id() {
    let (limits, _) =
        limits("[[rate_limit]]\nid = \"r\"\nkey = [\"jwt.sub\"]\nrate = 2\nper = \"minute\"");
    drop(call(&limits, "alice", "t", json!({})).await.expect("1"));
    drop(call(&limits, "alice", "t", json!({})).await.expect("2"));
    call(&limits, "alice", "t", json!({}))
        .await
        .expect_err("3 > 2");
    limits.replace(
        set("[[rate_limit]]\nid = \"r\"\nkey = [\"jwt.sub\"]\nrate = 3\nper = \"minute\""),
        OnError::Deny,
    );
    drop(
        call(&limits, "alice", "t", json!({}))
            .await
            .expect("3 <= 3"),
    );
    call(&limits, "alice", "t", json!({}))
        .await
        .expect_err("4 > 3");
    limits.replace(LimitSet::default(), OnError::Deny);
    assert!(limits.is_empty());
    drop(
        call(&limits, "alice", "t", json!({}))
            .await
            .expect("no limits any more"),
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_store_follows_on_error() {
    // A memory store with room for one key: a second key is a store error (full).
    let settings = MemorySettings {
        max_keys: 1,
        shards: 1,
    };
    let (limits, _) = limits_in(REFUNDS, settings, OnError::Deny);
    drop(
        call(&limits, "alice", "process_refund", json!({}))
            .await
            .expect("alice's key fits"),
    );
    let denied = call(&limits, "bob", "process_refund", json!({}))
        .await
        .expect_err("deny: fail closed");
    assert_eq!(denied.cause, ThrottleCause::StoreUnavailable);
    assert_eq!(denied.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        denied.error_json(&json!(3)),
        r#"{"jsonrpc":"2.0","id":3,"error":{"code":-32603,"message":"Rate limit state unavailable","data":{"limitKey":"refunds-per-user/bob","metric":"requests","retryAfter":1}}}"#
    );
    limits.replace(set(REFUNDS), OnError::Allow);
    let allowed = call(&limits, "bob", "process_refund", json!({}))
        .await
        .expect("allow: let through");
    assert!(allowed.degraded());
    let stats = limits.stats();
    assert_eq!(
        (
            stats.store_errors,
            stats.denied_on_error,
            stats.allowed_on_error,
            stats.throttled
        ),
        (2, 1, 1, 0)
    );
}
