//! Token verification, end to end: real keys, real signed tokens, a real JWKS endpoint.

mod auth_common;

use std::sync::Arc;

use auth_common::*;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use policy_layer::auth::{
    AuthConfig, AuthError, Authenticator, Identity, IssuerConfig, PrincipalKind,
};
use serde_json::json;

const PRM: &str = "https://mcp.test/.well-known/oauth-protected-resource";

/// An authenticator for [`ISSUER`] over a JWKS server holding RSA, EC and Ed25519 keys.
async fn setup() -> (JwksServer, Authenticator) {
    setup_with(|config| config).await
}

async fn setup_with(adjust: impl FnOnce(AuthConfig) -> AuthConfig) -> (JwksServer, Authenticator) {
    let keys = [
        TestKey::rsa_a(),
        TestKey::ec256(),
        TestKey::ec384(),
        TestKey::ed25519(),
    ];
    let server = JwksServer::start(ISSUER, &keys.iter().collect::<Vec<_>>()).await;
    let config = AuthConfig::jwt(ISSUER)
        .with_jwks_url(server.jwks_url())
        .with_audience(AUDIENCE);
    let auth = Authenticator::start(adjust(config)).await.expect("start");
    (server, auth)
}

async fn auth_with(auth: &Authenticator, token: &str) -> Result<Arc<Identity>, AuthError> {
    auth.authenticate(&bearer(token)).await
}

fn assert_accepts(result: Result<Arc<Identity>, AuthError>) -> Arc<Identity> {
    match result {
        Ok(identity) => {
            assert_eq!(identity.kind, PrincipalKind::OAuthUser);
            assert_eq!(identity.subject, "alice");
            identity
        }
        Err(error) => panic!("token refused: {error}"),
    }
}

fn assert_401(result: Result<Arc<Identity>, AuthError>, expected: AuthError) {
    let error = result.expect_err("token accepted");
    assert_eq!(error, expected);
    assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        error.www_authenticate(PRM).to_str().ok(),
        Some(format!("Bearer error=\"invalid_token\", resource_metadata=\"{PRM}\"").as_str())
    );
}

#[tokio::test]
async fn accepts_rs256_token() {
    let (_server, auth) = setup().await;
    assert_accepts(auth_with(&auth, &TestKey::rsa_a().sign(&claims())).await);
}

#[tokio::test]
async fn accepts_ps256_token() {
    let (_server, auth) = setup().await;
    let key = TestKey::rsa_a().with_alg(Algorithm::PS256);
    assert_accepts(auth_with(&auth, &key.sign(&claims())).await);
}

#[tokio::test]
async fn accepts_rs512_and_ps384_tokens() {
    let (_server, auth) = setup().await;
    for alg in [
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS384,
        Algorithm::PS512,
    ] {
        let key = TestKey::rsa_a().with_alg(alg);
        assert_accepts(auth_with(&auth, &key.sign(&claims())).await);
    }
}

#[tokio::test]
async fn accepts_es256_token() {
    let (_server, auth) = setup().await;
    assert_accepts(auth_with(&auth, &TestKey::ec256().sign(&claims())).await);
}

#[tokio::test]
async fn accepts_es384_token() {
    let (_server, auth) = setup().await;
    assert_accepts(auth_with(&auth, &TestKey::ec384().sign(&claims())).await);
}

#[tokio::test]
async fn accepts_eddsa_token() {
    let (_server, auth) = setup().await;
    assert_accepts(auth_with(&auth, &TestKey::ed25519().sign(&claims())).await);
}

#[tokio::test]
async fn accepts_token_without_kid_when_a_key_fits() {
    let (_server, auth) = setup().await;
    let key = TestKey::ec256();
    let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims(), &key.encoding)
        .expect("sign");
    assert_accepts(auth_with(&auth, &token).await);
}

#[tokio::test]
async fn rejects_missing_token() {
    let (_server, auth) = setup().await;
    assert_401(
        auth.authenticate(&HeaderMap::new()).await,
        AuthError::MissingToken,
    );
}

#[tokio::test]
async fn rejects_token_in_other_scheme() {
    let (_server, auth) = setup().await;
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        "Basic YWxpY2U6cHc=".parse().expect("header"),
    );
    assert_401(auth.authenticate(&headers).await, AuthError::MissingToken);
}

#[tokio::test]
async fn rejects_malformed_token() {
    let (_server, auth) = setup().await;
    for token in ["not-a-jwt", "a.b", "a.b.c.d", "!!!.???.###"] {
        let error = auth_with(&auth, token).await.expect_err("accepted");
        assert_eq!(error.reason(), "malformed", "{token}");
        assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn rejects_expired_token() {
    let (_server, auth) = setup().await;
    let token = TestKey::rsa_a().sign(&with(claims(), "exp", json!(now() - 3600)));
    assert_401(auth_with(&auth, &token).await, AuthError::Expired);
}

#[tokio::test]
async fn accepts_token_expired_within_leeway() {
    let (_server, auth) = setup().await;
    let token = TestKey::rsa_a().sign(&with(claims(), "exp", json!(now() - 30)));
    assert_accepts(auth_with(&auth, &token).await);
}

#[tokio::test]
async fn rejects_token_not_yet_valid() {
    let (_server, auth) = setup().await;
    let token = TestKey::rsa_a().sign(&with(claims(), "nbf", json!(now() + 3600)));
    assert_401(auth_with(&auth, &token).await, AuthError::NotYetValid);
}

#[tokio::test]
async fn rejects_token_without_exp() {
    let (_server, auth) = setup().await;
    let token = TestKey::rsa_a().sign(&without(claims(), "exp"));
    assert_401(
        auth_with(&auth, &token).await,
        AuthError::Malformed("missing exp claim"),
    );
}

#[tokio::test]
async fn rejects_wrong_issuer() {
    let (_server, auth) = setup().await;
    let token = TestKey::rsa_a().sign(&claims_for("https://evil.test"));
    assert_401(auth_with(&auth, &token).await, AuthError::WrongIssuer);
    let token = TestKey::rsa_a().sign(&without(claims(), "iss"));
    assert_401(auth_with(&auth, &token).await, AuthError::WrongIssuer);
}

#[tokio::test]
async fn rejects_wrong_audience() {
    let (_server, auth) = setup().await;
    let token = TestKey::rsa_a().sign(&with(claims(), "aud", json!("another-service")));
    assert_401(auth_with(&auth, &token).await, AuthError::WrongAudience);
    let token = TestKey::rsa_a().sign(&without(claims(), "aud"));
    assert_401(auth_with(&auth, &token).await, AuthError::WrongAudience);
}

#[tokio::test]
async fn accepts_any_configured_audience_in_an_audience_list() {
    let (_server, auth) = setup_with(|c| c.with_audience("second")).await;
    let token = TestKey::rsa_a().sign(&with(claims(), "aud", json!(["other", "second"])));
    assert_accepts(auth_with(&auth, &token).await);
}

#[tokio::test]
async fn rejects_forged_signature() {
    let (_server, auth) = setup().await;
    // Signed by another RSA key while naming the published key's kid.
    let forger = TestKey::rsa("rsa-forger.pem", "rsa-a", Algorithm::RS256);
    assert_401(
        auth_with(&auth, &forger.sign(&claims())).await,
        AuthError::BadSignature,
    );
    // A valid token whose claims were swapped after signing.
    let token = TestKey::rsa_a().sign(&claims());
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(with(claims(), "sub", json!("mallory")).to_string());
    assert_401(
        auth_with(&auth, &parts.join(".")).await,
        AuthError::BadSignature,
    );
}

#[tokio::test]
async fn rejects_unknown_kid() {
    let (_server, auth) = setup().await;
    let token = TestKey::rsa_b().sign(&claims());
    assert_401(auth_with(&auth, &token).await, AuthError::UnknownKid);
}

#[tokio::test]
async fn rejects_alg_none() {
    let (_server, auth) = setup().await;
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT","kid":"rsa-a"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
    assert_401(
        auth_with(&auth, &format!("{header}.{payload}.")).await,
        AuthError::DisallowedAlgorithm,
    );
}

#[tokio::test]
async fn rejects_hs256_signed_with_the_public_key() {
    let (_server, auth) = setup().await;
    // The classic key-confusion attack: HMAC keyed with the RSA public key's bytes.
    let public_pem = std::fs::read(fixture("rsa-a.pub.pem")).expect("public key");
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-a".into());
    let token = jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(&public_pem))
        .expect("sign");
    assert_401(
        auth_with(&auth, &token).await,
        AuthError::DisallowedAlgorithm,
    );
}

#[tokio::test]
async fn rejects_token_whose_alg_does_not_fit_the_named_key() {
    let (_server, auth) = setup().await;
    // ES256 signature naming the RSA key's kid.
    let token = TestKey::ec256().sign_as("rsa-a", &claims());
    assert_401(
        auth_with(&auth, &token).await,
        AuthError::DisallowedAlgorithm,
    );
}

#[tokio::test]
async fn rejects_client_not_allowed() {
    let (_server, auth) = setup_with(|c| c.with_allowed_client("refund-agent")).await;
    let token = TestKey::rsa_a().sign(&with(claims(), "client_id", json!("other-app")));
    let error = auth_with(&auth, &token).await.expect_err("accepted");
    assert_eq!(error, AuthError::ClientNotAllowed);
    assert_eq!(error.status(), StatusCode::FORBIDDEN);
    assert!(
        error
            .www_authenticate(PRM)
            .to_str()
            .is_ok_and(|v| v.contains("error=\"insufficient_scope\""))
    );
    let token = TestKey::rsa_a().sign(&claims());
    assert_eq!(
        auth_with(&auth, &token).await.err(),
        Some(AuthError::ClientNotAllowed)
    );
}

#[tokio::test]
async fn accepts_allowed_client_by_client_id_or_azp() {
    let (_server, auth) = setup_with(|c| c.with_allowed_client("refund-agent")).await;
    let token = TestKey::rsa_a().sign(&with(claims(), "client_id", json!("refund-agent")));
    assert_accepts(auth_with(&auth, &token).await);
    let token = TestKey::rsa_a().sign(&with(claims(), "azp", json!("refund-agent")));
    assert_accepts(auth_with(&auth, &token).await);
}

#[tokio::test]
async fn rejects_token_missing_required_scope() {
    let (_server, auth) = setup_with(|c| {
        c.with_allowed_scope("tools:call")
            .with_allowed_scope("admin")
    })
    .await;
    let token = TestKey::rsa_a().sign(&with(claims(), "scope", json!("openid profile")));
    let error = auth_with(&auth, &token).await.expect_err("accepted");
    assert_eq!(error.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        error.www_authenticate(PRM).to_str().ok(),
        Some(format!("Bearer error=\"insufficient_scope\", scope=\"tools:call admin\", resource_metadata=\"{PRM}\"").as_str())
    );
    let token = TestKey::rsa_a().sign(&claims());
    assert_eq!(
        auth_with(&auth, &token).await.map_err(|e| e.reason()).err(),
        Some("insufficient_scope")
    );
}

#[tokio::test]
async fn accepts_token_with_one_allowed_scope() {
    let (_server, auth) = setup_with(|c| {
        c.with_allowed_scope("tools:call")
            .with_allowed_scope("admin")
    })
    .await;
    let token = TestKey::rsa_a().sign(&with(claims(), "scope", json!("openid tools:call")));
    assert_accepts(auth_with(&auth, &token).await);
}

#[tokio::test]
async fn tags_carry_every_claim_but_sub_as_strings() {
    let (_server, auth) = setup().await;
    let exp = now() + 600;
    let claims = json!({
        "iss": ISSUER, "sub": "alice", "aud": AUDIENCE, "exp": exp,
        "role": "refund-agent", "max_refund": 500, "ratio": 0.5, "admin": false,
        "groups": ["a", "b"], "address": { "country": "DE" }
    });
    let identity = assert_accepts(auth_with(&auth, &TestKey::rsa_a().sign(&claims)).await);
    assert_eq!(identity.expires_at, Some(exp));
    assert_eq!(identity.tag("role"), Some("refund-agent"));
    assert_eq!(identity.tag("max_refund"), Some("500"));
    assert_eq!(identity.tag("ratio"), Some("0.5"));
    assert_eq!(identity.tag("admin"), Some("false"));
    assert_eq!(identity.tag("groups"), Some(r#"["a","b"]"#));
    assert_eq!(identity.tag("address"), Some(r#"{"country":"DE"}"#));
    assert_eq!(identity.tag("sub"), None);
    let names: Vec<&str> = identity.tags.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "address",
            "admin",
            "aud",
            "exp",
            "groups",
            "iss",
            "max_refund",
            "ratio",
            "role"
        ]
    );
}

#[tokio::test]
async fn cached_token_skips_signature_check() {
    let (_server, auth) = setup().await;
    let token = TestKey::rsa_a().sign(&claims());
    let first = assert_accepts(auth_with(&auth, &token).await);
    assert_eq!(auth.stats().signature_checks, 1);
    let second = assert_accepts(auth_with(&auth, &token).await);
    assert_eq!(auth.stats().signature_checks, 1);
    assert_eq!(auth.stats().cache_hits, 1);
    assert!(Arc::ptr_eq(&first, &second));
}

#[tokio::test]
async fn similar_token_is_not_served_from_the_cache() {
    let (_server, auth) = setup().await;
    let token = TestKey::rsa_a().sign(&claims());
    assert_accepts(auth_with(&auth, &token).await);
    // Same header and claims, one signature character changed.
    let mut tampered = token.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    assert_eq!(
        auth_with(&auth, &tampered).await.err(),
        Some(AuthError::BadSignature)
    );
}

#[tokio::test]
async fn rejects_cached_token_once_expired() {
    let (_server, auth) = setup_with(|c| c.with_leeway_secs(0)).await;
    let token = TestKey::rsa_a().sign(&with(claims(), "exp", json!(now() + 1)));
    assert_accepts(auth_with(&auth, &token).await);
    // Wait until `exp` has passed (not a timing assertion: the outcome is fixed after this).
    while now() <= now_exp(&token) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_401(auth_with(&auth, &token).await, AuthError::Expired);
    assert_eq!(
        auth.stats().signature_checks,
        1,
        "the expired token was refused from the cache"
    );
}

fn now_exp(token: &str) -> u64 {
    let payload = token.split('.').nth(1).expect("payload");
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json");
    claims["exp"].as_u64().expect("exp")
}

#[tokio::test]
async fn mode_none_yields_anonymous() {
    let auth = Authenticator::start(AuthConfig::none())
        .await
        .expect("start");
    for headers in [HeaderMap::new(), bearer("garbage")] {
        let identity = auth.authenticate(&headers).await.expect("anonymous");
        assert_eq!(identity.kind, PrincipalKind::Unauthenticated);
        assert_eq!(identity.subject, "anonymous");
        assert!(identity.tags.is_empty());
    }
}

#[tokio::test]
async fn several_issuers_each_use_their_own_keys_and_audiences() {
    const OTHER: &str = "https://other-issuer.test";
    let first = JwksServer::start(ISSUER, &[&TestKey::rsa_a()]).await;
    let second = JwksServer::start(OTHER, &[&TestKey::ec256()]).await;
    let config = AuthConfig::jwt(ISSUER)
        .with_jwks_url(first.jwks_url())
        .with_audience(AUDIENCE)
        .with_issuer(IssuerConfig {
            issuer: OTHER.into(),
            discovery_url: Some(second.discovery_url()),
            audiences: vec!["other-audience".into()],
            ..IssuerConfig::default()
        });
    let auth = Authenticator::start(config).await.expect("start");
    assert_accepts(auth_with(&auth, &TestKey::rsa_a().sign(&claims())).await);
    let other_claims = with(claims_for(OTHER), "aud", json!("other-audience"));
    assert_accepts(auth_with(&auth, &TestKey::ec256().sign(&other_claims)).await);
    // Each issuer's own audience only.
    assert_eq!(
        auth_with(&auth, &TestKey::ec256().sign(&claims_for(OTHER)))
            .await
            .err(),
        Some(AuthError::WrongAudience)
    );
    // A key of the first issuer does not vouch for the second.
    let cross = TestKey::rsa_a().sign(&other_claims);
    assert_eq!(
        auth_with(&auth, &cross).await.err(),
        Some(AuthError::UnknownKid)
    );
}

#[tokio::test]
async fn jwks_file_provides_the_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(&[&TestKey::ed25519()]).to_string()).expect("write");
    let config = AuthConfig::jwt(ISSUER)
        .with_jwks_file(&path)
        .with_audience(AUDIENCE);
    let auth = Authenticator::start(config).await.expect("start");
    assert!(auth.is_ready());
    assert_accepts(auth_with(&auth, &TestKey::ed25519().sign(&claims())).await);
}

#[tokio::test]
async fn missing_jwks_file_fails_start() {
    let config = AuthConfig::jwt(ISSUER)
        .with_jwks_file("/nonexistent/jwks.json")
        .with_audience(AUDIENCE);
    let error = Authenticator::start(config).await.expect_err("started");
    assert_eq!(
        error.to_string(),
        format!("auth: cannot load the jwks of issuer {ISSUER}")
    );
}

#[tokio::test]
async fn invalid_config_fails_start_naming_the_key() {
    let config = AuthConfig::jwt(ISSUER)
        .with_jwks_url("http://issuer.test/jwks")
        .with_audience(AUDIENCE);
    let error = Authenticator::start(config).await.expect_err("started");
    assert_eq!(
        error.to_string(),
        "auth.jwks_url: must use https (http only for localhost)"
    );
}

#[tokio::test]
async fn error_messages_hold_no_token_material() {
    let (_server, auth) = setup().await;
    let key = TestKey::rsa_a();
    let tokens = [
        key.sign(&with(claims(), "exp", json!(now() - 3600))),
        key.sign_as("secret-kid-value", &claims()),
        key.sign(&claims_for("https://secret-issuer.test")),
        "secret.material.here".to_owned(),
    ];
    for token in tokens {
        let error = auth_with(&auth, &token).await.expect_err("accepted");
        let text = format!("{error} {error:?}");
        assert!(!text.contains("secret"), "{text}");
        for part in token.split('.').filter(|p| p.len() > 8) {
            assert!(!text.contains(part), "{text}");
        }
    }
}
