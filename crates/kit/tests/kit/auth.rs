//! Services verify tokens themselves (defence in depth): the `CurrentUser`
//! extractor against a JWKS, with a refetch when a new key (rotation) appears.

use std::sync::{Arc, Mutex};

use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kit::auth::{AuthConfig, CurrentUser, KeySource, Verifier};
use kit::config::ServiceConfig;
use kit::http::{service_router, RouterOptions};
use kit::service::start_http;
use kit::Shutdown;
use ring::signature::KeyPair;

struct Key {
    kid: String,
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

impl Key {
    fn new(kid: &str) -> Self {
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .unwrap()
            .as_ref()
            .to_vec();
        let public = ring::signature::Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap().public_key().as_ref().to_vec();
        Self { kid: kid.into(), pkcs8, public }
    }
    fn jwk(&self) -> serde_json::Value {
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&self.public);
        serde_json::json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": self.kid, "x": x})
    }
    fn token(&self, name: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({"sub": "7", "name": name, "iss": "agora-auth", "aud": "agora", "iat": now, "exp": now + 60, "jti": "j"});
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&self.pkcs8)).unwrap()
    }
}

/// A JWKS server whose key set the test can change (a rotation).
async fn jwks_server(keys: Arc<Mutex<Vec<serde_json::Value>>>) -> String {
    let app = Router::new().route(
        "/jwks.json",
        get(move || {
            let keys = keys.lock().unwrap().clone();
            async move { Json(serde_json::json!({ "keys": keys })) }
        }),
    );
    let started = start_http(&ServiceConfig::for_tests("jwks", None), app, Shutdown::new()).await.unwrap();
    format!("{}/jwks.json", started.url())
}

/// A service with one write route that needs a user.
async fn service(verifier: Verifier) -> String {
    let app = Router::new()
        .route("/notes", post(|user: CurrentUser| async move { Json(serde_json::json!({ "author": user.name })) }))
        .layer(Extension(Arc::new(verifier)));
    let started = start_http(
        &ServiceConfig::for_tests("notes", None),
        service_router(app, RouterOptions::default()),
        Shutdown::new(),
    )
    .await
    .unwrap();
    started.url()
}

#[tokio::test]
async fn a_service_refuses_writes_without_a_valid_token_and_names_the_author_otherwise() {
    let key = Key::new("k1");
    let keys = Arc::new(Mutex::new(vec![key.jwk()]));
    let url = service(Verifier::new(AuthConfig::default(), KeySource::Url(jwks_server(keys).await))).await;
    let c = reqwest::Client::new();
    let resp = c.post(format!("{url}/notes")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer realm=\"agora\"");
    let forged = Key::new("k1").token("mallory");
    assert_eq!(c.post(format!("{url}/notes")).bearer_auth(forged).send().await.unwrap().status(), 401);
    let hs = jsonwebtoken::encode(
        &Header { kid: Some("k1".into()), ..Header::new(Algorithm::HS256) },
        &serde_json::json!({"sub": "7", "name": "x", "iss": "agora-auth", "aud": "agora", "iat": 0, "exp": 9_999_999_999i64}),
        &EncodingKey::from_secret(&key.public),
    )
    .unwrap();
    assert_eq!(c.post(format!("{url}/notes")).bearer_auth(hs).send().await.unwrap().status(), 401);
    let body: serde_json::Value =
        c.post(format!("{url}/notes")).bearer_auth(key.token("ada")).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["author"], "ada");
}

#[tokio::test]
async fn a_token_signed_with_a_newly_published_key_is_accepted_after_a_refetch() {
    let old = Key::new("old");
    let keys = Arc::new(Mutex::new(vec![old.jwk()]));
    let verifier = Verifier::new(AuthConfig::default(), KeySource::Url(jwks_server(keys.clone()).await))
        .with_min_refresh(std::time::Duration::ZERO);
    assert_eq!(verifier.verify(&old.token("ada")).await.unwrap().name, "ada");
    // The auth service rotates: a new key is published beside the old one.
    let new = Key::new("new");
    keys.lock().unwrap().insert(0, new.jwk());
    // The unknown kid triggers a refetch; tokens of both keys are accepted.
    assert_eq!(verifier.verify(&new.token("grace")).await.unwrap().name, "grace");
    assert_eq!(verifier.verify(&old.token("ada")).await.unwrap().name, "ada");
    // A kid nobody published stays refused.
    assert!(verifier.verify(&Key::new("forged").token("eve")).await.is_err());
}
