//! Rate limits counted in a real Redis (Debian's `redis-server`, started here on a free port
//! with a scratch directory): two stores stand for two replicas sharing one limit; Redis is
//! stopped mid-run and started again.
//!
//! Needs the `redis` feature (the workspace build enables it through the sidecar) and the
//! `redis-server` binary (`REDIS_SERVER`, else on `PATH`; `scripts/test.sh` installs it). When the
//! binary is missing the tests fail, unless `POLICY_LAYER_SKIP_REDIS_TESTS=1` says to skip them.
#![cfg(feature = "redis")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use policy_layer::auth::{Identity, PrincipalKind};
use policy_layer::limit::{Admitted, Limits, ThrottleCause, Throttled};
use policy_layer::state::{
    OnError, RedisSettings, RedisUrl, SessionBounds, SessionState, StateConfig, Store,
};
use serde_json::json;

const SKIP_VAR: &str = "POLICY_LAYER_SKIP_REDIS_TESTS";

/// A `redis-server` child process, killed when dropped.
struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

fn redis_binary() -> PathBuf {
    std::env::var_os("REDIS_SERVER").map_or_else(|| PathBuf::from("redis-server"), PathBuf::from)
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local address").port()
}

impl RedisServer {
    /// Starts a server, or `None` when it is missing and skipping is explicitly allowed.
    fn start() -> Option<Self> {
        Self::start_on(free_port())
    }

    fn start_on(port: u16) -> Option<Self> {
        let binary = redis_binary();
        if Command::new(&binary).arg("--version").output().is_err() {
            assert!(
                std::env::var(SKIP_VAR).is_ok_and(|v| v == "1"),
                "{} not found: install Debian's redis-server (scripts/test.sh does), point \
                 REDIS_SERVER at it, or set {SKIP_VAR}=1 to skip the Redis tests",
                binary.display()
            );
            eprintln!("skipped: {} not found and {SKIP_VAR}=1", binary.display());
            return None;
        }
        let mut server = Self {
            child: None,
            port,
            dir: tempfile::tempdir().expect("scratch dir"),
        };
        server.run();
        Some(server)
    }

    fn run(&mut self) {
        let child = Command::new(redis_binary())
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--logfile", "redis.log"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        // Wait until it answers (a start-up deadline, not a timing assertion).
        for _ in 0..400 {
            if self.command(&["PING"]).is_some_and(|reply| reply == "PONG") {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        panic!("redis-server on port {} did not answer:\n{log}", self.port);
    }

    /// Kills the server (as a crash would).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> RedisUrl {
        url_for(self.port)
    }

    /// One command over a fresh connection, answered as text (simple or bulk string, integer;
    /// `None` for a nil or when nothing answers).
    fn command(&self, args: &[&str]) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).ok()?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        match line.split_at(1) {
            ("+" | ":", rest) => Some(rest.to_owned()),
            ("$", "-1") => None,
            ("$", len) => {
                let len: usize = len.parse().ok()?;
                let mut bulk = vec![0; len + 2];
                reader.read_exact(&mut bulk).ok()?;
                bulk.truncate(len);
                String::from_utf8(bulk).ok()
            }
            _ => panic!("redis answered {line}"),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn url_for(port: u16) -> RedisUrl {
    let config = StateConfig {
        url: Some(format!("redis://127.0.0.1:{port}/0")),
        ..StateConfig::default()
    };
    match config.validate().expect("valid url").backend {
        policy_layer::state::BackendSettings::Redis(url) => url,
        policy_layer::state::BackendSettings::Memory => unreachable!(),
    }
}

/// A replica's store: its own connections and background tasks.
fn replica(url: RedisUrl, lease: Duration) -> Store {
    let mut settings = RedisSettings::new(url);
    settings.timeout = Duration::from_millis(300);
    settings.connection_lease = lease;
    Store::redis(settings).expect("redis store")
}

fn limits(toml_text: &str, store: Store, on_error: OnError) -> Limits {
    Limits::new(common::limit_set(toml_text), store, on_error)
}

fn user(subject: &str) -> Identity {
    Identity {
        kind: PrincipalKind::OAuthUser,
        subject: subject.to_owned(),
        tags: Vec::new(),
        expires_at: None,
    }
}

async fn call(limits: &Limits, who: &str) -> Result<Admitted, Throttled> {
    limits
        .check(
            &user(who),
            &HeaderMap::new(),
            "process_refund",
            Some(&json!({})),
        )
        .await
}

/// Calls until one is admitted: a released or expired slot frees asynchronously.
async fn until_admitted(limits: &Limits, who: &str, what: &str) -> Admitted {
    for _ in 0..300 {
        if let Ok(admitted) = call(limits, who).await {
            return admitted;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never admitted: {what}");
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

const IN_FLIGHT: &str = r#"
[[rate_limit]]
id = "in-flight"
key = ["jwt.sub"]
metric = "connections"
rate = 1
"#;

const LEASE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn two_replicas_share_one_users_limit() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let a = limits(REFUNDS, replica(server.url(), LEASE), OnError::Deny);
    let b = limits(REFUNDS, replica(server.url(), LEASE), OnError::Deny);
    for replica in [&a, &b, &a, &b, &a] {
        drop(call(replica, "alice").await.expect("within the limit"));
    }
    let throttled = call(&b, "alice")
        .await
        .expect_err("the sixth call, on the other replica");
    assert_eq!(throttled.cause, ThrottleCause::Exceeded);
    assert_eq!(throttled.limit_key, "refunds-per-user/alice");
    assert!(
        (1..=60).contains(&throttled.retry_after),
        "{}",
        throttled.retry_after
    );
    let reply = throttled.error_json(&json!(9));
    assert!(
        reply.starts_with(r#"{"jsonrpc":"2.0","id":9,"error":{"code":-32003,"message":"Rate limit exceeded","data":{"limitKey":"refunds-per-user/alice","metric":"requests","retryAfter":"#),
        "{reply}"
    );
    call(&a, "alice")
        .await
        .expect_err("and on the first replica");
    drop(call(&a, "bob").await.expect("bob counts apart"));
    // The counter lives under the documented key and expires with its window.
    assert_eq!(
        server
            .command(&["GET", "mcp-policy:rl:60000:refunds-per-user/alice"])
            .as_deref(),
        Some("5")
    );
    let ttl: i64 = server
        .command(&["PTTL", "mcp-policy:rl:60000:refunds-per-user/alice"])
        .expect("ttl")
        .parse()
        .expect("integer");
    assert!((1..=60_000).contains(&ttl), "{ttl}");
}

#[tokio::test]
async fn several_limits_are_charged_all_or_nothing_in_one_admission() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let limits = limits(
        r#"
[[rate_limit]]
id = "wide"
key = ["jwt.sub"]
rate = 3
per = "minute"

[[rate_limit]]
id = "narrow"
tool = "process_refund"
key = ["jwt.sub"]
rate = 1
per = "second"
"#,
        replica(server.url(), LEASE),
        OnError::Deny,
    );
    drop(call(&limits, "alice").await.expect("first"));
    let throttled = call(&limits, "alice").await.expect_err("narrow is spent");
    assert_eq!(&*throttled.limit, "narrow");
    assert_eq!(
        server
            .command(&["GET", "mcp-policy:rl:60000:wide/alice"])
            .as_deref(),
        Some("1"),
        "the refused call did not use up the wide limit"
    );
    assert_eq!(
        server
            .command(&["GET", "mcp-policy:rl:1000:narrow/alice"])
            .as_deref(),
        Some("1")
    );
}

#[tokio::test]
async fn connection_slots_are_shared_and_released() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store_a = replica(server.url(), LEASE);
    let a = limits(IN_FLIGHT, store_a, OnError::Deny);
    let b = limits(IN_FLIGHT, replica(server.url(), LEASE), OnError::Deny);
    let held = call(&a, "alice").await.expect("first slot");
    assert!(held.holds_permits());
    let throttled = call(&b, "alice")
        .await
        .expect_err("the slot is taken on replica a");
    assert_eq!(throttled.metric.as_str(), "connections");
    assert_eq!(throttled.retry_after, 1);
    drop(call(&b, "bob").await.expect("bob's own slot"));
    drop(held);
    let again = until_admitted(&b, "alice", "the slot released on replica a").await;
    drop(again);
    // Both replicas released everything they held.
    for _ in 0..300 {
        if server
            .command(&["ZCARD", "mcp-policy:cc:in-flight/alice"])
            .as_deref()
            == Some("0")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("slots left in redis");
}

#[tokio::test]
async fn a_running_call_keeps_its_slot_past_the_lease_and_a_dead_replicas_slot_expires() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let lease = Duration::from_secs(2);
    let a = limits(IN_FLIGHT, replica(server.url(), lease), OnError::Deny);
    let b = limits(IN_FLIGHT, replica(server.url(), lease), OnError::Deny);
    let held = call(&a, "alice").await.expect("slot");
    // Renewed every third of the lease while held: still taken well past one lease.
    tokio::time::sleep(lease * 2 + lease / 2).await;
    call(&b, "alice")
        .await
        .expect_err("replica a still runs the call");
    // Replica a dies: its tasks stop and it never releases the slot.
    std::mem::forget(held);
    drop(a);
    call(&b, "alice")
        .await
        .expect_err("the slot outlives its replica until the lease ends");
    drop(until_admitted(&b, "alice", "the dead replica's lease ended").await);
}

#[tokio::test]
async fn redis_stopped_mid_run_follows_on_error_and_the_store_recovers() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let deny = limits(REFUNDS, replica(server.url(), LEASE), OnError::Deny);
    let allow = limits(REFUNDS, replica(server.url(), LEASE), OnError::Allow);
    drop(call(&deny, "alice").await.expect("redis up"));
    assert!(!call(&allow, "alice").await.expect("redis up").degraded());
    deny.store().ping().await.expect("redis answers");

    server.stop();
    let refused = call(&deny, "alice").await.expect_err("deny: fail closed");
    assert_eq!(refused.cause, ThrottleCause::StoreUnavailable);
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.limit_key, "refunds-per-user/alice");
    let let_through = call(&allow, "alice").await.expect("allow: let through");
    assert!(let_through.degraded());
    deny.store().ping().await.expect_err("redis is down");
    assert_eq!(deny.stats().denied_on_error, 1);
    assert_eq!(allow.stats().allowed_on_error, 1);
    assert!(deny.stats().store_errors >= 1);

    server.run();
    drop(until_admitted(&deny, "alice", "redis is back").await);
    for _ in 0..300 {
        if !call(&allow, "alice").await.expect("allow").degraded() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the allow replica never counted in redis again");
}

#[tokio::test]
async fn a_store_created_while_redis_is_down_starts_and_connects_later() {
    let port = free_port();
    let deny = limits(REFUNDS, replica(url_for(port), LEASE), OnError::Deny);
    let refused = call(&deny, "alice").await.expect_err("nothing listens yet");
    assert_eq!(refused.cause, ThrottleCause::StoreUnavailable);
    let Some(_server) = RedisServer::start_on(port) else {
        return;
    };
    drop(until_admitted(&deny, "alice", "redis started").await);
}

// --- Policy sessions (temporal policies) ----------------------------------------------------

fn events(times: &[i64]) -> Vec<(i64, String)> {
    times
        .iter()
        .map(|t| (*t, format!("{{\"t\":{t}}}")))
        .collect()
}

fn live(state: SessionState) -> Vec<String> {
    match state {
        SessionState::Live(events) => events,
        other => panic!("a live session expected, got {other:?}"),
    }
}

#[tokio::test]
async fn policy_sessions_are_shared_windowed_bounded_and_invalidated() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let bounds = SessionBounds {
        max_events: 3,
        ..SessionBounds::default()
    };
    let a = replica(server.url(), Duration::from_secs(30)).with_session_bounds(bounds);
    let b = replica(server.url(), Duration::from_secs(30)).with_session_bounds(bounds);

    assert_eq!(
        a.session_read("k", 1, 0, 0).await.expect("read"),
        SessionState::New
    );
    a.session_append("k", 1, &events(&[10, 20]), 0, 20)
        .await
        .expect("append");
    // The other replica reads them, from a time on.
    assert_eq!(
        live(b.session_read("k", 1, 0, 30).await.expect("read")).len(),
        2
    );
    assert_eq!(
        live(b.session_read("k", 1, 15, 30).await.expect("read")),
        ["{\"t\":20}"]
    );
    // Other temporal policies: 409 material, and never written over.
    assert_eq!(
        b.session_read("k", 2, 0, 30).await.expect("read"),
        SessionState::Changed
    );
    b.session_append("k", 2, &events(&[25]), 0, 25)
        .await
        .expect("append");
    assert_eq!(
        live(a.session_read("k", 1, 0, 30).await.expect("read")).len(),
        2
    );
    // Events older than the horizon go; past the cap the session overflows.
    a.session_append("k", 1, &events(&[30]), 15, 30)
        .await
        .expect("append");
    assert_eq!(
        live(a.session_read("k", 1, 0, 30).await.expect("read")).len(),
        2
    );
    a.session_append("k", 1, &events(&[40, 50]), 15, 50)
        .await
        .expect("append");
    assert_eq!(
        a.session_read("k", 1, 0, 50).await.expect("read"),
        SessionState::Overflowed
    );
    // Keys that expire with the idle time.
    let ttl: i64 = server
        .command(&["PTTL", "mcp-policy:ts:{k}:m"])
        .and_then(|t| t.parse().ok())
        .expect("ttl");
    assert!(ttl > 23 * 3_600_000, "{ttl}");
    // A session whose metadata vanished while its events stayed reads as evicted.
    a.session_append("e", 1, &events(&[10]), 0, 10)
        .await
        .expect("append");
    server.command(&["DEL", "mcp-policy:ts:{e}:m"]);
    assert_eq!(
        a.session_read("e", 1, 0, 20).await.expect("read"),
        SessionState::Evicted
    );
}

#[tokio::test]
async fn one_decision_at_a_time_per_policy_session_across_replicas() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let a = replica(server.url(), Duration::from_secs(30));
    let b = replica(server.url(), Duration::from_secs(30));
    let held = a.session_lock("k").await.expect("lock");
    assert!(server.command(&["GET", "mcp-policy:ts:{k}:l"]).is_some());
    let waiting = tokio::spawn(async move { b.session_lock("k").await.map(|_| ()) });
    for _ in 0..20 {
        let _ = a.session_read("other", 1, 0, 0).await.expect("read");
    }
    assert!(
        !waiting.is_finished(),
        "the second replica entered a held session"
    );
    drop(held);
    waiting.await.expect("task").expect("lock once released");
}
