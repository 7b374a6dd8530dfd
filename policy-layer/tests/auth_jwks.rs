//! The JWKS cache, end to end: rotation, unknown-kid storms, an endpoint that goes down,
//! discovery and background refresh, against a real JWKS server that counts its fetches.

mod auth_common;

use std::time::Duration;

use auth_common::*;
use policy_layer::auth::{
    AuthConfig, AuthError, AuthTuning, Authenticator, DEFAULT_UNKNOWN_KID_REFETCH_INTERVAL,
};

fn config(server: &JwksServer) -> AuthConfig {
    AuthConfig::jwt(ISSUER)
        .with_jwks_url(server.jwks_url())
        .with_audience(AUDIENCE)
}

fn tuning(adjust: impl FnOnce(&mut AuthTuning)) -> AuthTuning {
    let mut tuning = AuthTuning::default();
    adjust(&mut tuning);
    tuning
}

#[tokio::test]
async fn fetches_jwks_once_at_start() {
    let server = JwksServer::start(ISSUER, &[&TestKey::rsa_a()]).await;
    let auth = Authenticator::start(config(&server)).await.expect("start");
    assert!(auth.is_ready());
    assert_eq!(server.jwks_fetches(), 1);
    for _ in 0..5 {
        auth.authenticate(&bearer(&TestKey::rsa_a().sign(&claims())))
            .await
            .expect("accepted");
    }
    assert_eq!(
        server.jwks_fetches(),
        1,
        "known keys are never fetched on the request path"
    );
}

#[tokio::test]
async fn accepts_rotated_key_after_one_refetch() {
    let server = JwksServer::start(ISSUER, &[&TestKey::rsa_a()]).await;
    let auth = Authenticator::start(config(&server)).await.expect("start");
    server.set_keys(&[&TestKey::rsa_a(), &TestKey::rsa_b()]);
    let token = TestKey::rsa_b().sign(&claims());
    auth.authenticate(&bearer(&token))
        .await
        .expect("rotated key accepted");
    assert_eq!(server.jwks_fetches(), 2);
    // Old and new keys both work now, with no further fetch.
    auth.authenticate(&bearer(&TestKey::rsa_a().sign(&claims())))
        .await
        .expect("old key");
    auth.authenticate(&bearer(&TestKey::rsa_b().sign(&with(
        claims(),
        "jti",
        "2".into(),
    ))))
    .await
    .expect("new key");
    assert_eq!(server.jwks_fetches(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_of_unknown_kids_fetches_at_most_once_per_interval() {
    let server = JwksServer::start(ISSUER, &[&TestKey::rsa_a()]).await;
    let auth = Authenticator::start(config(&server)).await.expect("start"); // default tuning: 10 s
    let key = TestKey::rsa_a();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let auth = auth.clone();
            let token = key.sign_as(&format!("unknown-{i}"), &claims());
            tokio::spawn(async move { auth.authenticate(&bearer(&token)).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task").err(), Some(AuthError::UnknownKid));
    }
    assert_eq!(
        server.jwks_fetches(),
        2,
        "one fetch at start, one for the whole storm"
    );
    // Still within the interval: no more fetches.
    let token = key.sign_as("unknown-again", &claims());
    assert_eq!(
        auth.authenticate(&bearer(&token)).await.err(),
        Some(AuthError::UnknownKid)
    );
    assert_eq!(server.jwks_fetches(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_refetch_for_a_rotated_key() {
    let server = JwksServer::start(ISSUER, &[&TestKey::rsa_a()]).await;
    let auth = Authenticator::start(config(&server)).await.expect("start");
    server.set_keys(&[&TestKey::rsa_b()]);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let auth = auth.clone();
            let token = TestKey::rsa_b().sign(&with(claims(), "jti", i.into()));
            tokio::spawn(async move { auth.authenticate(&bearer(&token)).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("rotated key accepted");
    }
    assert_eq!(server.jwks_fetches(), 2);
}

#[tokio::test]
async fn unknown_kid_refetch_interval_is_configurable() {
    assert_eq!(
        DEFAULT_UNKNOWN_KID_REFETCH_INTERVAL,
        Duration::from_secs(10)
    );
    let server = JwksServer::start(ISSUER, &[&TestKey::rsa_a()]).await;
    let no_limit = tuning(|t| t.unknown_kid_refetch_interval = Duration::ZERO);
    let auth = Authenticator::start(config(&server).with_tuning(no_limit))
        .await
        .expect("start");
    for i in 0..3 {
        let token = TestKey::rsa_a().sign_as(&format!("unknown-{i}"), &claims());
        assert_eq!(
            auth.authenticate(&bearer(&token)).await.err(),
            Some(AuthError::UnknownKid)
        );
    }
    assert_eq!(server.jwks_fetches(), 4);
}

#[tokio::test]
async fn keeps_last_good_keys_when_endpoint_goes_down() {
    let server = JwksServer::start(ISSUER, &[&TestKey::rsa_a()]).await;
    let auth = Authenticator::start(config(&server)).await.expect("start");
    server.set_down(true);
    // An unknown kid makes it refetch; the fetch fails.
    let unknown = TestKey::rsa_b().sign(&claims());
    assert_eq!(
        auth.authenticate(&bearer(&unknown)).await.err(),
        Some(AuthError::UnknownKid)
    );
    assert_eq!(server.jwks_fetches(), 2);
    // The cached key set still verifies tokens.
    auth.authenticate(&bearer(&TestKey::rsa_a().sign(&claims())))
        .await
        .expect("last good keys used");
    assert!(auth.is_ready());
}

#[tokio::test]
async fn fails_closed_when_no_keys_ever_arrive() {
    let config = AuthConfig::jwt(ISSUER)
        .with_jwks_url(closed_port_url())
        .with_audience(AUDIENCE);
    let auth = Authenticator::start(config)
        .await
        .expect("start does not fail on a down endpoint");
    assert!(!auth.is_ready());
    let token = TestKey::rsa_a().sign(&claims());
    let error = auth
        .authenticate(&bearer(&token))
        .await
        .expect_err("accepted without keys");
    assert_eq!(error, AuthError::NoKeys);
    assert_eq!(error.status(), http::StatusCode::UNAUTHORIZED);
    assert_eq!(error.reason(), "no_keys");
}

#[tokio::test]
async fn fails_closed_while_endpoint_is_down_at_start_then_recovers() {
    let server = JwksServer::start(ISSUER, &[&TestKey::rsa_a()]).await;
    server.set_down(true);
    let no_limit = tuning(|t| t.unknown_kid_refetch_interval = Duration::ZERO);
    let auth = Authenticator::start(config(&server).with_tuning(no_limit))
        .await
        .expect("start");
    let token = TestKey::rsa_a().sign(&claims());
    assert_eq!(
        auth.authenticate(&bearer(&token)).await.err(),
        Some(AuthError::NoKeys)
    );
    server.set_down(false);
    auth.authenticate(&bearer(&token))
        .await
        .expect("keys arrived");
    assert!(auth.is_ready());
}

#[tokio::test]
async fn discovery_url_leads_to_the_jwks() {
    let server = JwksServer::start(ISSUER, &[&TestKey::ec256()]).await;
    let config = AuthConfig::jwt(ISSUER)
        .with_discovery_url(server.discovery_url())
        .with_audience(AUDIENCE);
    let auth = Authenticator::start(config).await.expect("start");
    assert_eq!((server.discovery_fetches(), server.jwks_fetches()), (1, 1));
    auth.authenticate(&bearer(&TestKey::ec256().sign(&claims())))
        .await
        .expect("accepted");
    // A rotation refetches the JWKS without asking discovery again.
    server.set_keys(&[&TestKey::ec256(), &TestKey::ed25519()]);
    auth.authenticate(&bearer(&TestKey::ed25519().sign(&claims())))
        .await
        .expect("rotated");
    assert_eq!((server.discovery_fetches(), server.jwks_fetches()), (1, 2));
}

#[tokio::test]
async fn refreshes_keys_in_background_on_max_age() {
    let server = JwksServer::start(ISSUER, &[&TestKey::rsa_a()]).await;
    server.set_cache_control("max-age=0");
    let quick = tuning(|t| {
        t.min_jwks_refresh_interval = Duration::from_millis(50);
        t.unknown_kid_refetch_interval = Duration::from_secs(3600);
    });
    let auth = Authenticator::start(config(&server).with_tuning(quick))
        .await
        .expect("start");
    // Use up the one unknown-kid refetch allowed per hour, so only the background task can
    // bring the new key.
    let unknown = TestKey::ec256().sign(&claims());
    assert_eq!(
        auth.authenticate(&bearer(&unknown)).await.err(),
        Some(AuthError::UnknownKid)
    );
    server.set_keys(&[&TestKey::rsa_a(), &TestKey::rsa_b()]);
    let token = TestKey::rsa_b().sign(&claims());
    let mut accepted = false;
    for _ in 0..200 {
        if auth.authenticate(&bearer(&token)).await.is_ok() {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(accepted, "background refresh never brought the rotated key");
    assert!(server.jwks_fetches() >= 3);
}

#[tokio::test]
async fn cached_token_is_dropped_when_its_key_is_retired() {
    let server = JwksServer::start(ISSUER, &[&TestKey::rsa_a(), &TestKey::ec256()]).await;
    let auth = Authenticator::start(config(&server)).await.expect("start");
    let token = TestKey::rsa_a().sign(&claims());
    auth.authenticate(&bearer(&token)).await.expect("accepted");
    // The issuer retires rsa-a; an unknown kid makes us notice.
    server.set_keys(&[&TestKey::ec256(), &TestKey::rsa_b()]);
    auth.authenticate(&bearer(&TestKey::rsa_b().sign(&claims())))
        .await
        .expect("new key");
    assert_eq!(
        auth.authenticate(&bearer(&token)).await.err(),
        Some(AuthError::UnknownKid)
    );
}

#[tokio::test]
async fn stops_background_refresh_when_dropped() {
    let server = JwksServer::start(ISSUER, &[&TestKey::rsa_a()]).await;
    server.set_cache_control("max-age=0");
    let quick = tuning(|t| t.min_jwks_refresh_interval = Duration::from_millis(20));
    let auth = Authenticator::start(config(&server).with_tuning(quick))
        .await
        .expect("start");
    drop(auth);
    tokio::time::sleep(Duration::from_millis(50)).await; // let an in-flight refresh finish
    let after_drop = server.jwks_fetches();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.jwks_fetches(), after_drop);
}
