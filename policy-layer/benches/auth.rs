//! `Authenticator::authenticate` on the request path: a cached token, and uncached RS256,
//! ES256 and EdDSA tokens (signature check and claim validation every time).
//!
//! Run with: cargo bench -p policy-layer --bench auth

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt as _;
use http::HeaderMap;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use policy_layer::auth::{AuthConfig, AuthTuning, Authenticator};
use serde_json::json;

const ISSUER: &str = "https://issuer.bench";

struct Key {
    kid: &'static str,
    alg: Algorithm,
    encoding: EncodingKey,
}

fn key(file: &str, kid: &'static str, alg: Algorithm) -> Key {
    let pem = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(file),
    )
    .expect("fixture");
    let encoding = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        _ => EncodingKey::from_rsa_pem(&pem),
    }
    .expect("pem");
    Key { kid, alg, encoding }
}

fn token(key: &Key) -> HeaderMap {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = json!({
        "iss": ISSUER, "sub": "alice", "aud": "mcp-gateway", "iat": now, "exp": now + 3600,
        "role": "refund-agent", "scope": "tools:call", "groups": ["a", "b"],
    });
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.into());
    let token = jsonwebtoken::encode(&header, &claims, &key.encoding).expect("sign");
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header"),
    );
    headers
}

fn bench_authenticate(c: &mut Criterion) {
    let keys = [
        key("rsa-a.pem", "rsa-a", Algorithm::RS256),
        key("ec-p256.pem", "ec-256", Algorithm::ES256),
        key("ed25519.pem", "ed-1", Algorithm::EdDSA),
    ];
    let jwks: Vec<_> = keys
        .iter()
        .map(|k| {
            let mut jwk = Jwk::from_encoding_key(&k.encoding, k.alg).expect("jwk");
            jwk.common.key_id = Some(k.kid.into());
            jwk
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, json!({ "keys": jwks }).to_string()).expect("write jwks");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let start = |cache: usize| {
        let mut tuning = AuthTuning::default();
        tuning.token_cache_capacity = cache;
        let config = AuthConfig::jwt(ISSUER)
            .with_jwks_file(&path)
            .with_audience("mcp-gateway")
            .with_tuning(tuning);
        runtime
            .block_on(Authenticator::start(config))
            .expect("start")
    };
    let cached = start(10_000);
    let uncached = start(0);

    // Neither path awaits anything once the keys are loaded, so one poll completes it.
    let run = |auth: &Authenticator, headers: &HeaderMap| {
        auth.authenticate(headers)
            .now_or_never()
            .expect("ready")
            .expect("accepted")
    };

    let mut group = c.benchmark_group("authenticate");
    let rs256 = token(&keys[0]);
    run(&cached, &rs256);
    group.bench_function("cached", |b| b.iter(|| run(&cached, black_box(&rs256))));
    group.bench_function("uncached_rs256", |b| {
        b.iter(|| run(&uncached, black_box(&rs256)))
    });
    let es256 = token(&keys[1]);
    group.bench_function("uncached_es256", |b| {
        b.iter(|| run(&uncached, black_box(&es256)))
    });
    let eddsa = token(&keys[2]);
    group.bench_function("uncached_eddsa", |b| {
        b.iter(|| run(&uncached, black_box(&eddsa)))
    });
    group.finish();
}

criterion_group!(benches, bench_authenticate);
criterion_main!(benches);
