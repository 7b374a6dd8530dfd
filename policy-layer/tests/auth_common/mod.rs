//! Shared parts of the auth tests: real keys (fixtures made by `fixtures/gen-keys.sh`), real
//! signed tokens, and a real JWKS + OIDC discovery server on 127.0.0.1:0 that counts fetches.

#![allow(dead_code)] // each test crate uses a different subset

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap as AxumHeaders, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::HeaderMap;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "mcp-gateway";

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("fixture readable")
}

/// A private key with the kid and algorithm it signs with.
#[derive(Clone)]
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    pub encoding: EncodingKey,
}

impl TestKey {
    pub fn rsa(file: &str, kid: &str, alg: Algorithm) -> Self {
        let encoding = EncodingKey::from_rsa_pem(&read(file)).expect("rsa pem");
        Self {
            kid: kid.into(),
            alg,
            encoding,
        }
    }
    pub fn rsa_a() -> Self {
        Self::rsa("rsa-a.pem", "rsa-a", Algorithm::RS256)
    }
    pub fn rsa_b() -> Self {
        Self::rsa("rsa-b.pem", "rsa-b", Algorithm::RS256)
    }
    pub fn ec256() -> Self {
        let encoding = EncodingKey::from_ec_pem(&read("ec-p256.pem")).expect("ec pem");
        Self {
            kid: "ec-256".into(),
            alg: Algorithm::ES256,
            encoding,
        }
    }
    pub fn ec384() -> Self {
        let encoding = EncodingKey::from_ec_pem(&read("ec-p384.pem")).expect("ec pem");
        Self {
            kid: "ec-384".into(),
            alg: Algorithm::ES384,
            encoding,
        }
    }
    pub fn ed25519() -> Self {
        let encoding = EncodingKey::from_ed_pem(&read("ed25519.pem")).expect("ed pem");
        Self {
            kid: "ed-1".into(),
            alg: Algorithm::EdDSA,
            encoding,
        }
    }
    /// The same key, used with another algorithm of its family (RS256 -> PS256).
    pub fn with_alg(mut self, alg: Algorithm) -> Self {
        self.alg = alg;
        self
    }

    /// The public JWK, without `alg` (so an RSA key serves RS* and PS*).
    pub fn jwk(&self) -> Value {
        let jwk = Jwk::from_encoding_key(&self.encoding, self.alg).expect("public jwk");
        let mut value = serde_json::to_value(jwk).expect("jwk json");
        if let Some(map) = value.as_object_mut() {
            map.remove("alg");
            map.insert("kid".into(), json!(self.kid));
            map.insert("use".into(), json!("sig"));
        }
        value
    }

    /// Signs `claims` with this key's kid and algorithm.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }

    /// Signs `claims` naming another kid in the header.
    pub fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }
}

pub fn jwks(keys: &[&TestKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() })
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Valid claims for [`ISSUER`] and [`AUDIENCE`], expiring in ten minutes.
pub fn claims() -> Value {
    claims_for(ISSUER)
}

pub fn claims_for(issuer: &str) -> Value {
    json!({
        "iss": issuer,
        "sub": "alice",
        "aud": AUDIENCE,
        "iat": now(),
        "exp": now() + 600,
    })
}

pub fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

pub fn without(mut claims: Value, key: &str) -> Value {
    if let Some(map) = claims.as_object_mut() {
        map.remove(key);
    }
    claims
}

pub fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header"),
    );
    headers
}

struct ServerState {
    issuer: String,
    jwks: Mutex<Value>,
    cache_control: Mutex<Option<String>>,
    down: AtomicBool,
    jwks_fetches: AtomicUsize,
    discovery_fetches: AtomicUsize,
    base: String,
}

/// A real JWKS and discovery endpoint on 127.0.0.1:0.
#[derive(Clone)]
pub struct JwksServer {
    state: Arc<ServerState>,
    pub addr: SocketAddr,
}

impl JwksServer {
    pub async fn start(issuer: &str, keys: &[&TestKey]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(ServerState {
            issuer: issuer.into(),
            jwks: Mutex::new(jwks(keys)),
            cache_control: Mutex::new(None),
            down: AtomicBool::new(false),
            jwks_fetches: AtomicUsize::new(0),
            discovery_fetches: AtomicUsize::new(0),
            base: format!("http://{addr}"),
        });
        let app = axum::Router::new()
            .route("/jwks.json", get(serve_jwks))
            .route("/.well-known/openid-configuration", get(serve_discovery))
            .with_state(Arc::clone(&state));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { state, addr }
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/jwks.json", self.state.base)
    }
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.state.base)
    }
    pub fn set_keys(&self, keys: &[&TestKey]) {
        *self.state.jwks.lock().expect("lock") = jwks(keys);
    }
    pub fn set_cache_control(&self, value: &str) {
        *self.state.cache_control.lock().expect("lock") = Some(value.into());
    }
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }
    pub fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }
    pub fn discovery_fetches(&self) -> usize {
        self.state.discovery_fetches.load(Ordering::SeqCst)
    }
}

async fn serve_jwks(State(state): State<Arc<ServerState>>) -> Response {
    state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    if state.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let body = state.jwks.lock().expect("lock").to_string();
    let mut headers = AxumHeaders::new();
    headers.insert(
        header::CONTENT_TYPE,
        "application/json".parse().expect("ct"),
    );
    if let Some(cc) = state.cache_control.lock().expect("lock").clone() {
        headers.insert(header::CACHE_CONTROL, cc.parse().expect("cc"));
    }
    (headers, body).into_response()
}

async fn serve_discovery(State(state): State<Arc<ServerState>>) -> Response {
    state.discovery_fetches.fetch_add(1, Ordering::SeqCst);
    if state.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    axum::Json(json!({
        "issuer": state.issuer,
        "jwks_uri": format!("{}/jwks.json", state.base),
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    }))
    .into_response()
}

/// A 127.0.0.1 URL on which nothing listens.
pub fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}/jwks.json")
}
