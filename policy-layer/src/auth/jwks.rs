//! The JWKS cache of one issuer: fetch (URL, OIDC discovery or file), parse into verification
//! keys, refresh in the background on the key set's TTL, and refetch on an unknown `kid` at most
//! once per interval. The request path reads the current key set with one atomic load.

use std::error::Error as StdError;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{ACCEPT, CACHE_CONTROL};
use jsonwebtoken::{Algorithm, DecodingKey};
use reqwest::Url;
use serde_json::Value;
use tokio::task::AbortHandle;

use super::config::{AuthTuning, DEFAULT_JWKS_TTL, JwksSource, MAX_JWKS_TTL, check_url_scheme};
use super::error::AuthError;

/// Largest JWKS or discovery document accepted, in bytes.
pub const MAX_JWKS_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Smallest RSA modulus accepted, in bytes (2048 bits).
const MIN_RSA_MODULUS_BYTES: usize = 256;
/// Longest wait between retries while the key source is failing.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// Why a key set could not be fetched or used. The last good key set stays in use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// The request failed (connection, timeout, TLS).
    #[error("jwks request failed")]
    Http(#[source] reqwest::Error),
    /// The server answered with a non-success status.
    #[error("{url} answered http status {status}")]
    Status {
        /// The URL requested.
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// The document exceeded [`MAX_JWKS_DOCUMENT_BYTES`].
    #[error("document larger than {MAX_JWKS_DOCUMENT_BYTES} bytes")]
    TooLarge,
    /// The document is not JSON of the expected shape.
    #[error("not a valid {what} document")]
    Json {
        /// `"jwks"` or `"discovery"`.
        what: &'static str,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The discovery document has no usable `jwks_uri`.
    #[error("discovery document has no usable jwks_uri: {0}")]
    Discovery(&'static str),
    /// The local JWKS file could not be read.
    #[error("cannot read {}", path.display())]
    File {
        /// The configured path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The key set holds no key this layer can verify with.
    #[error("key set holds no usable signing key")]
    NoUsableKeys,
}

/// The key type and curve of a JWK: decides which `alg` it may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

/// One verification key from a JWKS.
#[derive(Debug)]
pub(crate) struct VerifyKey {
    kid: Option<Box<str>>,
    kind: KeyKind,
    /// The JWK's own `alg`, if it names one: then only that algorithm may use the key.
    alg: Option<Algorithm>,
    pub(crate) key: DecodingKey,
}

impl VerifyKey {
    /// Whether a token signed with `alg` may be checked with this key (no key confusion).
    fn fits(&self, alg: Algorithm) -> bool {
        use Algorithm::{ES256, ES384, EdDSA, PS256, PS384, PS512, RS256, RS384, RS512};
        if self.alg.is_some_and(|own| own != alg) {
            return false;
        }
        matches!(
            (self.kind, alg),
            (KeyKind::Rsa, RS256 | RS384 | RS512 | PS256 | PS384 | PS512)
                | (KeyKind::P256, ES256)
                | (KeyKind::P384, ES384)
                | (KeyKind::Ed25519, EdDSA)
        )
    }

    /// Builds a key from one JWK, or says why it is skipped.
    fn from_jwk(jwk: &Value) -> Result<Self, &'static str> {
        let field = |name: &str| jwk.get(name).and_then(Value::as_str);
        if field("use").is_some_and(|u| u != "sig") {
            return Err("not a signature key (use)");
        }
        if let Some(ops) = jwk.get("key_ops").and_then(Value::as_array)
            && !ops.iter().any(|op| op.as_str() == Some("verify"))
        {
            return Err("not a verification key (key_ops)");
        }
        let alg = match field("alg") {
            Some(name) => Some(parse_alg(name).map_err(|_| "algorithm not allowed")?),
            None => None,
        };
        let (kind, key) = match field("kty") {
            Some("RSA") => {
                let (n, e) = (
                    field("n").ok_or("rsa key without n")?,
                    field("e").ok_or("rsa key without e")?,
                );
                let modulus = b64(n)?;
                let significant = modulus.iter().skip_while(|b| **b == 0).count();
                if significant < MIN_RSA_MODULUS_BYTES {
                    return Err("rsa key shorter than 2048 bits");
                }
                b64(e)?;
                let key = DecodingKey::from_rsa_components(n, e).map_err(|_| "bad rsa key")?;
                (KeyKind::Rsa, key)
            }
            Some("EC") => {
                let (kind, size) = match field("crv") {
                    Some("P-256") => (KeyKind::P256, 32),
                    Some("P-384") => (KeyKind::P384, 48),
                    _ => return Err("unsupported curve"),
                };
                let (x, y) = (
                    field("x").ok_or("ec key without x")?,
                    field("y").ok_or("ec key without y")?,
                );
                if b64(x)?.len() != size || b64(y)?.len() != size {
                    return Err("ec coordinates of the wrong size");
                }
                let key = DecodingKey::from_ec_components(x, y).map_err(|_| "bad ec key")?;
                (kind, key)
            }
            Some("OKP") => {
                if field("crv") != Some("Ed25519") {
                    return Err("unsupported curve");
                }
                let x = field("x").ok_or("okp key without x")?;
                if b64(x)?.len() != 32 {
                    return Err("ed25519 key of the wrong size");
                }
                let key = DecodingKey::from_ed_components(x).map_err(|_| "bad ed25519 key")?;
                (KeyKind::Ed25519, key)
            }
            Some("oct") => return Err("symmetric keys are never used"),
            _ => return Err("unsupported key type"),
        };
        let verify_key = Self {
            kid: field("kid").map(Box::from),
            kind,
            alg,
            key,
        };
        if verify_key.alg.is_some_and(|alg| !verify_key.fits(alg)) {
            return Err("alg does not fit the key type");
        }
        Ok(verify_key)
    }
}

fn b64(text: &str) -> Result<Vec<u8>, &'static str> {
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| "bad base64url")
}

/// Maps an `alg` name to an allowed asymmetric algorithm; `none`, HMAC and unknown names fail.
pub(crate) fn parse_alg(name: &str) -> Result<Algorithm, AuthError> {
    Ok(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return Err(AuthError::DisallowedAlgorithm),
    })
}

/// An issuer's current verification keys. Immutable; replaced as a whole on refresh.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    keys: Vec<VerifyKey>,
}

impl KeySet {
    /// Parses a JWKS document, skipping keys this layer cannot or must not use.
    pub(crate) fn parse(document: &[u8]) -> Result<Self, JwksError> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<Value>,
        }
        let document: Document =
            serde_json::from_slice(document).map_err(|source| JwksError::Json {
                what: "jwks",
                source,
            })?;
        let mut keys = Vec::with_capacity(document.keys.len());
        for jwk in &document.keys {
            match VerifyKey::from_jwk(jwk) {
                Ok(key) => keys.push(key),
                Err(why) => {
                    let kid = jwk.get("kid").and_then(Value::as_str).unwrap_or("");
                    tracing::debug!(kid, why, "skipping jwk");
                }
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKeys);
        }
        Ok(Self { keys })
    }

    /// Whether no key was ever loaded.
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether a key with this `kid` (or, for tokens without `kid`, any key) is still present.
    pub(crate) fn contains(&self, kid: Option<&str>) -> bool {
        match kid {
            Some(kid) => self.keys.iter().any(|k| k.kid.as_deref() == Some(kid)),
            None => !self.keys.is_empty(),
        }
    }

    /// The keys that may verify a token with this `kid` and `alg`.
    ///
    /// A token without `kid` may be verified by any key that fits its `alg`.
    pub(crate) fn candidates(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<impl Iterator<Item = &VerifyKey>, AuthError> {
        let named = move |k: &&VerifyKey| kid.is_none_or(|kid| k.kid.as_deref() == Some(kid));
        let mut fitting = self
            .keys
            .iter()
            .filter(named)
            .filter(move |k| k.fits(alg))
            .peekable();
        if fitting.peek().is_some() {
            return Ok(fitting);
        }
        if kid.is_some() && self.keys.iter().any(|k| named(&k)) {
            // The named key exists but is of another type: a key-confusion attempt.
            return Err(AuthError::DisallowedAlgorithm);
        }
        Err(AuthError::UnknownKid)
    }
}

/// One issuer's key source and current key set.
pub(crate) struct IssuerKeys {
    issuer: String,
    source: JwksSource,
    /// The `jwks_uri` found in the discovery document, once known.
    discovered: ArcSwapOption<Url>,
    client: reqwest::Client,
    current: ArcSwap<KeySet>,
    tuning: AuthTuning,
    /// Held while an unknown-kid refetch runs, so concurrent requests share it.
    refetch_gate: tokio::sync::Mutex<()>,
    last_refetch: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerKeys")
            .field("issuer", &self.issuer)
            .field("source", &self.source)
            .field("keys", &self.current.load().keys.len())
            .finish_non_exhaustive()
    }
}

impl IssuerKeys {
    /// A key cache with no keys yet; call [`IssuerKeys::refresh`] to fill it.
    pub(crate) fn new(
        issuer: String,
        source: JwksSource,
        client: reqwest::Client,
        tuning: AuthTuning,
    ) -> Self {
        Self {
            issuer,
            source,
            discovered: ArcSwapOption::empty(),
            client,
            current: ArcSwap::from_pointee(KeySet::default()),
            tuning,
            refetch_gate: tokio::sync::Mutex::new(()),
            last_refetch: Mutex::new(None),
        }
    }

    /// The issuer these keys belong to.
    pub(crate) fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The current key set: one atomic load.
    pub(crate) fn current(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.current.load()
    }

    /// Whether the source is a local file (whose failure at start is a configuration error).
    pub(crate) fn is_file(&self) -> bool {
        matches!(self.source, JwksSource::File(_))
    }

    /// Fetches the key set and swaps it in; on error the last good set stays.
    /// Returns how long the new set may be used.
    pub(crate) async fn refresh(&self) -> Result<Duration, JwksError> {
        let (set, ttl) = self.fetch().await?;
        tracing::debug!(issuer = %self.issuer, keys = set.keys.len(), ttl_secs = ttl.as_secs(), "jwks loaded");
        self.current.store(Arc::new(set));
        Ok(ttl)
    }

    /// Called when a token names a key that `seen` lacks: refetches unless one ran within
    /// the configured interval. Every caller passes the gate, so concurrent callers wait for
    /// the one fetch in flight, also those that arrive after it started (else a token signed
    /// with the rotated key could be refused while the fetch that brings the key is under way).
    pub(crate) async fn refetch_for_unknown_kid(&self, seen: &Arc<KeySet>) {
        let _gate = self.refetch_gate.lock().await;
        if !Arc::ptr_eq(&self.current.load(), seen) {
            return; // the keys changed while we waited: look again
        }
        if !self.refetch_allowed() {
            return; // one ran within the interval and found nothing new
        }
        *self
            .last_refetch
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        tracing::debug!(issuer = %self.issuer, "unknown kid: refetching jwks");
        if let Err(error) = self.refresh().await {
            tracing::warn!(issuer = %self.issuer, error = %error_chain(&error), "jwks refetch failed; keeping the last good keys");
        }
    }

    fn refetch_allowed(&self) -> bool {
        let last = *self
            .last_refetch
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        last.is_none_or(|at| at.elapsed() >= self.tuning.unknown_kid_refetch_interval)
    }

    async fn fetch(&self) -> Result<(KeySet, Duration), JwksError> {
        match &self.source {
            JwksSource::File(path) => {
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|source| JwksError::File {
                        path: path.clone(),
                        source,
                    })?;
                Ok((KeySet::parse(&bytes)?, self.ttl(None)))
            }
            JwksSource::Url(url) => self.fetch_jwks(url).await,
            JwksSource::Discovery(url) => {
                let jwks_uri = match self.discovered.load_full() {
                    Some(uri) => uri,
                    None => {
                        let uri = Arc::new(self.discover(url).await?);
                        self.discovered.store(Some(Arc::clone(&uri)));
                        uri
                    }
                };
                let result = self.fetch_jwks(&jwks_uri).await;
                if result.is_err() {
                    // The issuer may have moved its keys: rediscover next time.
                    self.discovered.store(None);
                }
                result
            }
        }
    }

    async fn discover(&self, url: &Url) -> Result<Url, JwksError> {
        #[derive(serde::Deserialize)]
        struct Discovery {
            issuer: Option<String>,
            jwks_uri: Option<String>,
        }
        let (body, _) = self.get(url).await?;
        let doc: Discovery = serde_json::from_slice(&body).map_err(|source| JwksError::Json {
            what: "discovery",
            source,
        })?;
        if doc.issuer.as_deref().is_some_and(|iss| iss != self.issuer) {
            tracing::warn!(issuer = %self.issuer, "discovery document names another issuer; tokens must still carry the configured one");
        }
        let uri = doc.jwks_uri.ok_or(JwksError::Discovery("missing"))?;
        let uri = Url::parse(&uri).map_err(|_| JwksError::Discovery("not a url"))?;
        check_url_scheme(&uri)
            .map_err(|_| JwksError::Discovery("must use https (http only for localhost)"))?;
        Ok(uri)
    }

    async fn fetch_jwks(&self, url: &Url) -> Result<(KeySet, Duration), JwksError> {
        let (body, max_age) = self.get(url).await?;
        Ok((KeySet::parse(&body)?, self.ttl(max_age)))
    }

    /// GETs a JSON document of bounded size; returns it with its `Cache-Control: max-age`.
    async fn get(&self, url: &Url) -> Result<(Vec<u8>, Option<Duration>), JwksError> {
        let mut response = self
            .client
            .get(url.clone())
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(JwksError::Http)?;
        let status = response.status();
        if !status.is_success() {
            return Err(JwksError::Status {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        let max_age = max_age(response.headers());
        if response
            .content_length()
            .is_some_and(|len| len > MAX_JWKS_DOCUMENT_BYTES as u64)
        {
            return Err(JwksError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(JwksError::Http)? {
            if body.len() + chunk.len() > MAX_JWKS_DOCUMENT_BYTES {
                return Err(JwksError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, max_age))
    }

    /// How long a fetched key set is used: `max-age` within bounds, else the default.
    fn ttl(&self, max_age: Option<Duration>) -> Duration {
        let floor = self.tuning.min_jwks_refresh_interval;
        max_age
            .unwrap_or(DEFAULT_JWKS_TTL)
            .min(MAX_JWKS_TTL)
            .max(floor)
    }
}

/// Reads `max-age` from `Cache-Control`; `no-cache` and `no-store` count as zero.
fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    let mut found = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',').map(str::trim) {
            let lower = directive.to_ascii_lowercase();
            if lower == "no-cache" || lower == "no-store" {
                return Some(Duration::ZERO);
            }
            if let Some(secs) = lower.strip_prefix("max-age=") {
                found = secs
                    .trim_matches('"')
                    .parse::<u64>()
                    .ok()
                    .map(Duration::from_secs);
            }
        }
    }
    found
}

/// Spawns the background task that refreshes `keys` on their TTL, retrying with backoff while
/// the source fails. The task ends when the returned handle is aborted.
pub(crate) fn spawn_refresh(keys: Arc<IssuerKeys>, first_delay: Duration) -> AbortHandle {
    tokio::spawn(async move {
        let mut delay = first_delay;
        let mut failures = 0u32;
        loop {
            tokio::time::sleep(delay).await;
            match keys.refresh().await {
                Ok(ttl) => {
                    failures = 0;
                    delay = ttl;
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    delay = retry_delay(failures);
                    let keys_kept = !keys.current().is_empty();
                    tracing::warn!(
                        issuer = %keys.issuer,
                        error = %error_chain(&error),
                        keys_kept,
                        retry_in_secs = delay.as_secs(),
                        "jwks refresh failed"
                    );
                }
            }
        }
    })
    .abort_handle()
}

/// 1 s, 2 s, 4 s, ... up to [`MAX_RETRY_DELAY`].
pub(crate) fn retry_delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(6);
    Duration::from_secs(1u64 << exponent).min(MAX_RETRY_DELAY)
}

/// An error with its sources, `: `-separated, for one log line.
pub(crate) fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const N_2048: &str = "0vx7agoebGcQSuuPiLJXZptN9nkndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";

    fn set(keys: serde_json::Value) -> Result<KeySet, JwksError> {
        KeySet::parse(json!({ "keys": keys }).to_string().as_bytes())
    }

    #[test]
    fn rejects_none_and_hmac_algorithms() {
        for name in ["none", "HS256", "HS384", "HS512", "RS1", "", "rs256"] {
            assert_eq!(
                parse_alg(name).err(),
                Some(AuthError::DisallowedAlgorithm),
                "{name}"
            );
        }
        assert_eq!(parse_alg("EdDSA").ok(), Some(Algorithm::EdDSA));
    }

    #[test]
    fn skips_symmetric_encryption_and_short_keys() {
        let result = set(json!([
            { "kty": "oct", "k": "c2VjcmV0", "kid": "h" },
            { "kty": "RSA", "use": "enc", "n": N_2048, "e": "AQAB", "kid": "enc" },
            { "kty": "RSA", "n": "sXch", "e": "AQAB", "kid": "short" },
            { "kty": "RSA", "alg": "HS256", "n": N_2048, "e": "AQAB", "kid": "hs" },
        ]));
        assert!(matches!(result, Err(JwksError::NoUsableKeys)));
    }

    #[test]
    fn rsa_key_fits_rs_and_ps_but_not_ec() {
        let keys = match set(json!([{ "kty": "RSA", "n": N_2048, "e": "AQAB", "kid": "r" }])) {
            Ok(keys) => keys,
            Err(e) => panic!("{e}"),
        };
        assert!(keys.candidates(Some("r"), Algorithm::RS256).is_ok());
        assert!(keys.candidates(Some("r"), Algorithm::PS512).is_ok());
        assert_eq!(
            keys.candidates(Some("r"), Algorithm::ES256).err(),
            Some(AuthError::DisallowedAlgorithm)
        );
        assert_eq!(
            keys.candidates(Some("x"), Algorithm::RS256).err(),
            Some(AuthError::UnknownKid)
        );
        assert!(keys.candidates(None, Algorithm::RS256).is_ok());
        assert_eq!(
            keys.candidates(None, Algorithm::EdDSA).err(),
            Some(AuthError::UnknownKid)
        );
    }

    #[test]
    fn key_alg_pins_the_token_alg() {
        let keys = match set(
            json!([{ "kty": "RSA", "alg": "PS256", "n": N_2048, "e": "AQAB", "kid": "r" }]),
        ) {
            Ok(keys) => keys,
            Err(e) => panic!("{e}"),
        };
        assert!(keys.candidates(Some("r"), Algorithm::PS256).is_ok());
        assert_eq!(
            keys.candidates(Some("r"), Algorithm::RS256).err(),
            Some(AuthError::DisallowedAlgorithm)
        );
    }

    #[test]
    fn reads_max_age_from_cache_control() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(max_age(&headers), None);
        headers.insert(
            CACHE_CONTROL,
            http::HeaderValue::from_static("public, max-age=3600, must-revalidate"),
        );
        assert_eq!(max_age(&headers), Some(Duration::from_secs(3600)));
        headers.insert(CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
        assert_eq!(max_age(&headers), Some(Duration::ZERO));
    }

    #[test]
    fn ttl_is_bounded() {
        let keys = IssuerKeys::new(
            "i".into(),
            JwksSource::File("x".into()),
            reqwest::Client::new(),
            AuthTuning::default(),
        );
        assert_eq!(keys.ttl(None), DEFAULT_JWKS_TTL);
        assert_eq!(keys.ttl(Some(Duration::ZERO)), Duration::from_secs(30));
        assert_eq!(
            keys.ttl(Some(Duration::from_secs(900))),
            Duration::from_secs(900)
        );
        assert_eq!(
            keys.ttl(Some(Duration::from_secs(u64::MAX / 4))),
            MAX_JWKS_TTL
        );
    }

    #[test]
    fn retries_back_off_to_a_minute() {
        assert_eq!(retry_delay(1), Duration::from_secs(1));
        assert_eq!(retry_delay(3), Duration::from_secs(4));
        assert_eq!(retry_delay(40), MAX_RETRY_DELAY);
    }
}
