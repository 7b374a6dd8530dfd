//! `Limits::check` on the request path: a call no limit matches, one and three limits in the
//! memory store, a `connections` slot taken and given back, the store called through a boxed
//! `dyn` future instead of the enum (what the enum saves), and, when
//! `POLICY_LAYER_BENCH_REDIS_URL` names a Redis server (`redis://127.0.0.1:6379/0`), one and
//! three limits in Redis (one round trip each).
//!
//! Run with: cargo bench -p policy-layer --features redis --bench limit

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use http::HeaderMap;
use policy_layer::auth::{Identity, PrincipalKind};
use policy_layer::limit::{LimitSet, Limits, RateLimitConfig};
use policy_layer::state::{
    Admission, Charge, ChargeKind, MemorySettings, OnError, Store, StoreError,
};
use serde_json::{Value, json};

fn set(tables: &str) -> LimitSet {
    #[derive(serde::Deserialize)]
    struct File {
        rate_limit: Vec<RateLimitConfig>,
    }
    let file: File = toml::from_str(tables).expect("toml");
    LimitSet::from_config(&file.rate_limit).expect("limits")
}

/// Rates no bench run reaches, so every call is admitted and counted.
const ONE: &str = r#"
[[rate_limit]]
id = "refunds-per-user"
tool = "process_refund"
key = ["jwt.sub"]
rate = 1000000000
per = "second"
"#;

const THREE: &str = r#"
[[rate_limit]]
id = "refunds-per-user"
tool = "process_refund"
key = ["jwt.sub"]
rate = 1000000000
per = "second"

[[rate_limit]]
id = "per-customer"
tool = "process_refund"
key = ["jwt.sub", "body.customer_id"]
rate = 1000000000
per = "minute"

[[rate_limit]]
id = "per-tenant"
key = ["jwt.tenant"]
rate = 1000000000
per = "second"
"#;

const CONNECTIONS: &str = r#"
[[rate_limit]]
id = "in-flight"
key = ["jwt.sub"]
metric = "connections"
rate = 1000
"#;

fn alice() -> Identity {
    Identity {
        kind: PrincipalKind::OAuthUser,
        subject: "alice".to_owned(),
        tags: vec![
            ("role".to_owned(), "refund-agent".to_owned()),
            ("tenant".to_owned(), "acme".to_owned()),
        ],
        expires_at: None,
    }
}

fn memory(tables: &str) -> Limits {
    Limits::new(
        set(tables),
        Store::memory(MemorySettings::default()),
        OnError::Deny,
    )
}

/// The store behind a boxed `dyn` future: the alternative to the enum.
trait DynStore: Send + Sync {
    fn admit<'a>(
        &'a self,
        charges: &'a [Charge<'a>],
    ) -> BoxFuture<'a, Result<Admission, StoreError>>;
}

impl DynStore for Store {
    fn admit<'a>(
        &'a self,
        charges: &'a [Charge<'a>],
    ) -> BoxFuture<'a, Result<Admission, StoreError>> {
        Box::pin(Store::admit(self, charges))
    }
}

fn bench(c: &mut Criterion) {
    let identity = alice();
    let headers = HeaderMap::new();
    let arguments = json!({"amount": 500, "customer_id": "C001"});
    let mut group = c.benchmark_group("limit");

    let check = |limits: &Limits, tool: &str, arguments: &Value| {
        limits
            .check(&identity, &headers, tool, Some(arguments))
            .now_or_never()
            .expect("the memory store answers at once")
            .expect("admitted")
    };

    let limits = memory(ONE);
    group.bench_function("no limit matches", |b| {
        b.iter(|| drop(black_box(check(&limits, "lookup_order", &arguments))));
    });
    group.bench_function("1 memory limit", |b| {
        b.iter(|| drop(black_box(check(&limits, "process_refund", &arguments))));
    });
    let limits = memory(THREE);
    group.bench_function("3 memory limits", |b| {
        b.iter(|| drop(black_box(check(&limits, "process_refund", &arguments))));
    });
    let limits = memory(CONNECTIONS);
    group.bench_function("1 memory connections slot, taken and released", |b| {
        b.iter(|| drop(black_box(check(&limits, "process_refund", &arguments))));
    });

    let store = Store::memory(MemorySettings::default());
    let charges = [Charge {
        key: "refunds-per-user/alice",
        limit: 1_000_000_000,
        kind: ChargeKind::Window(std::time::Duration::from_secs(1)),
    }];
    group.bench_function("store admit, enum dispatch", |b| {
        b.iter(|| {
            black_box(
                store
                    .admit(black_box(&charges))
                    .now_or_never()
                    .expect("at once"),
            )
        });
    });
    let boxed: Box<dyn DynStore> = Box::new(store.clone());
    group.bench_function("store admit, dyn trait (boxed future)", |b| {
        b.iter(|| {
            black_box(
                boxed
                    .admit(black_box(&charges))
                    .now_or_never()
                    .expect("at once"),
            )
        });
    });

    if let Ok(url) = std::env::var("POLICY_LAYER_BENCH_REDIS_URL") {
        bench_redis(&mut group, &url, &identity, &headers, &arguments);
    }
    group.finish();
}

#[cfg(feature = "redis")]
fn bench_redis(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    url: &str,
    identity: &Identity,
    headers: &HeaderMap,
    arguments: &Value,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let config = policy_layer::state::StateConfig {
        url: Some(url.to_owned()),
        ..policy_layer::state::StateConfig::default()
    };
    let settings = config.validate().expect("redis url");
    let store = runtime.block_on(async { Store::from_settings(&settings).expect("redis store") });
    runtime
        .block_on(store.ping())
        .expect("redis answers at POLICY_LAYER_BENCH_REDIS_URL");
    for (name, tables) in [("1 redis limit", ONE), ("3 redis limits", THREE)] {
        let limits = Limits::new(set(tables), store.clone(), OnError::Deny);
        group.bench_function(name, |b| {
            b.iter(|| {
                let admitted = runtime
                    .block_on(limits.check(identity, headers, "process_refund", Some(arguments)))
                    .expect("admitted");
                drop(black_box(admitted));
            });
        });
    }
}

#[cfg(not(feature = "redis"))]
fn bench_redis(
    _: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    _: &str,
    _: &Identity,
    _: &HeaderMap,
    _: &Value,
) {
    eprintln!(
        "POLICY_LAYER_BENCH_REDIS_URL is set but the bench was built without --features redis"
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
