//! Security at the edge: every way of presenting a bad token to a protected
//! route is refused with 401; identity headers from clients are never trusted;
//! session-cookie mutations need the CSRF token; rate limits hold under
//! concurrent connections. The upstream is an echo service that shows what
//! the gateway forwarded; tokens are signed by keys made here.

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kit::ratelimit::Quota;
use ring::signature::KeyPair;

use crate::support::{expect_problem, spawn_echo, spawn_gateway_with, spawn_registry};

/// An Ed25519 key pair with its `kid`, as the auth service would have.
struct TestKey {
    kid: String,
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

impl TestKey {
    fn new(kid: &str) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref().to_vec();
        let public = ring::signature::Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap().public_key().as_ref().to_vec();
        Self { kid: kid.into(), pkcs8, public }
    }

    fn jwk(&self) -> serde_json::Value {
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&self.public);
        serde_json::json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": self.kid, "x": x})
    }

    fn sign(&self, claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&self.pkcs8)).unwrap()
    }
}

/// The JSON body of the answer to `request` (for the echo service: the headers it received).
async fn json_of(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}

fn claims(exp_in_secs: i64) -> serde_json::Value {
    let now = chrono::Utc::now().timestamp();
    serde_json::json!({"sub": "42", "name": "ada", "iss": "agora-auth", "aud": "agora", "iat": now, "exp": now + exp_in_secs, "jti": uuid::Uuid::new_v4().to_string()})
}

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

/// Every kind of bad token we refuse, by name.
fn bad_tokens(key: &TestKey) -> Vec<(&'static str, String)> {
    let good = key.sign(&claims(600));
    let parts: Vec<&str> = good.split('.').collect();
    let mut tampered_claims = claims(600);
    tampered_claims["sub"] = "1".into();
    tampered_claims["name"] = "admin".into();
    let tampered = format!("{}.{}.{}", parts[0], b64(tampered_claims.to_string().as_bytes()), parts[2]);
    let other = TestKey::new(&key.kid); // same kid, different key
    let none_header = b64(serde_json::json!({"alg": "none", "typ": "JWT", "kid": key.kid}).to_string().as_bytes());
    let alg_none = format!("{none_header}.{}.", b64(claims(600).to_string().as_bytes()));
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(key.kid.clone());
    let hs256 = jsonwebtoken::encode(&hs, &claims(600), &EncodingKey::from_secret(&key.public)).unwrap();
    let mut wrong_aud = claims(600);
    wrong_aud["aud"] = "someone-else".into();
    vec![
        ("garbage", "not-a-token".to_string()),
        ("expired", key.sign(&claims(-3600))),
        ("tampered claims", tampered),
        ("signed by another key", other.sign(&claims(600))),
        ("alg none", alg_none),
        ("HS256 with the public key as secret", hs256),
        ("wrong audience", key.sign(&wrong_aud)),
    ]
}

/// A registry, an echo service publishing `key` as its JWKS, and a gateway in front.
struct Secured {
    key: TestKey,
    gateway: crate::support::Running,
    _registry: crate::support::Running,
    _echo: crate::support::Running,
}

async fn secured(adjust: impl FnOnce(&mut gateway::Config)) -> Secured {
    let key = TestKey::new("k1");
    let registry = spawn_registry().await;
    let echo = spawn_echo(&registry.as_url(), vec![key.jwk()]).await;
    let gateway = spawn_gateway_with(&registry.as_url(), &echo, adjust).await;
    Secured { key, gateway, _registry: registry, _echo: echo }
}

#[tokio::test]
async fn every_bad_token_on_a_protected_route_is_a_401() {
    let Secured { key, gateway, _registry, _echo } = secured(|_| {}).await;
    let c = reqwest::Client::new();
    let url = format!("{}/echo/things", gateway.url);

    let resp = c.post(&url).send().await.unwrap();
    assert!(resp.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    expect_problem(resp, 401).await;
    for (what, token) in bad_tokens(&key) {
        let resp = c.post(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{what} must be refused");
        assert!(resp.headers().contains_key("www-authenticate"), "{what}");
    }
    let ok = c.post(&url).bearer_auth(key.sign(&claims(600))).send().await.unwrap();
    assert_eq!(ok.status(), 200, "a good token passes");
    // Reads of a protected route need no token.
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn identity_headers_from_clients_are_replaced_by_the_verified_identity() {
    let Secured { key, gateway, _registry, _echo } = secured(|_| {}).await;
    let c = reqwest::Client::new();
    let url = format!("{}/echo/whoami", gateway.url);
    let seen: serde_json::Value = json_of(c.get(&url).header("x-user-id", "1").header("x-user-name", "admin")).await;
    assert!(
        seen["x-user-id"].is_null() && seen["x-user-name"].is_null(),
        "spoofed identity reached the service: {seen}"
    );
    let seen: serde_json::Value =
        json_of(c.post(&url).bearer_auth(key.sign(&claims(600))).header("x-user-id", "1")).await;
    assert_eq!(seen["x-user-id"], "42");
    assert_eq!(seen["x-user-name"], "ada");
}

#[tokio::test]
async fn the_service_gets_the_end_to_end_headers_and_the_request_context() {
    let Secured { key, gateway, _registry, _echo } = secured(|_| {}).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let seen: serde_json::Value = json_of(
        reqwest::Client::new()
            .get(format!("{}/echo/headers", gateway.url))
            .header("connection", "x-hop")
            .header("x-hop", "for the gateway only")
            .header("keep-alive", "timeout=5")
            .header("x-custom", "kept")
            .header("x-forwarded-for", "10.0.0.1")
            .header("x-forwarded-host", "spoofed.example")
            .header("x-request-id", "req-42")
            .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01")),
    )
    .await;
    assert_eq!(seen["x-custom"], "kept", "{seen}");
    assert_eq!(seen["x-forwarded-for"], "10.0.0.1, 127.0.0.1", "the gateway adds the client's address");
    assert_eq!(seen["x-request-id"], "req-42", "the request id carries on");
    let traceparent = seen["traceparent"].as_str().unwrap();
    assert!(traceparent.starts_with(&format!("00-{trace}-")), "same trace: {traceparent}");
    assert!(!traceparent.contains("00f067aa0ba902b7"), "the gateway's own span: {traceparent}");
    assert_eq!(seen["host"], _echo.url.trim_start_matches("http://"), "Host names the instance");
    for hop in ["x-hop", "keep-alive", "x-forwarded-host"] {
        assert!(seen[hop].is_null(), "{hop} reached the service: {seen}");
    }

    // A body of unknown length goes on chunked, within the gateway's limit; beyond it, 413.
    let chunks = |n: usize| {
        let kib = (0..n)
            .map(|_| Ok::<_, std::io::Error>(hyper::body::Frame::data(axum::body::Bytes::from_static(&[b'x'; 1024]))));
        reqwest::Body::wrap(http_body_util::StreamBody::new(futures::stream::iter(kib)))
    };
    let post = |body| {
        reqwest::Client::new()
            .post(format!("{}/echo/things", gateway.url))
            .bearer_auth(key.sign(&claims(600)))
            .body(body)
            .send()
    };
    let seen: serde_json::Value = post(chunks(4)).await.unwrap().json().await.unwrap();
    assert_eq!(seen["transfer-encoding"], "chunked", "{seen}");
    expect_problem(post(chunks(200)).await.unwrap(), 413).await;
}

#[tokio::test]
async fn a_session_cookie_works_only_with_the_csrf_token() {
    let Secured { key, gateway, _registry, _echo } = secured(|_| {}).await;
    let c = reqwest::Client::new();
    let url = format!("{}/echo/things", gateway.url);
    let token = key.sign(&claims(600));
    let cookie = format!("agora_session={token}; agora_csrf=abc123");
    let resp = c.post(&url).header("cookie", &cookie).send().await.unwrap();
    expect_problem(resp, 403).await;
    let resp = c.post(&url).header("cookie", &cookie).header("x-csrf-token", "wrong").send().await.unwrap();
    expect_problem(resp, 403).await;
    let seen: serde_json::Value =
        json_of(c.post(&url).header("cookie", &cookie).header("x-csrf-token", "abc123")).await;
    assert_eq!(seen["x-user-id"], "42");
    assert_eq!(seen["authorization"], format!("Bearer {token}"), "the service can verify the token itself");
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let Secured { key, gateway, _registry, _echo } = secured(|_| {}).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/echo/things", gateway.url))
        .bearer_auth(key.sign(&claims(600)))
        .body(vec![b'x'; 200 * 1024])
        .send()
        .await
        .unwrap();
    expect_problem(resp, 413).await;
}

#[tokio::test]
async fn the_rate_limit_holds_under_concurrent_connections() {
    let Secured { key, gateway, _registry, _echo } = secured(|config| {
        config.user_quota = Quota { burst: 20, per_second: 0.01 };
    })
    .await;
    let url = format!("{}/echo/x", gateway.url);
    let token = key.sign(&claims(600));
    // One user, one client per request: 100 separate connections, all at once.
    let requests = (0..100).map(|_| {
        let (url, token) = (url.clone(), token.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
            let resp = client.get(&url).bearer_auth(token).send().await.unwrap();
            (resp.status().as_u16(), resp.headers().get("retry-after").is_some())
        })
    });
    let results: Vec<(u16, bool)> = futures::future::join_all(requests).await.into_iter().map(Result::unwrap).collect();
    let allowed = results.iter().filter(|(s, _)| *s == 200).count();
    let limited: Vec<_> = results.iter().filter(|(s, _)| *s == 429).collect();
    assert_eq!(allowed, 20, "{results:?}");
    assert_eq!(limited.len(), 80);
    assert!(limited.iter().all(|(_, retry_after)| *retry_after), "every 429 says when to retry");
}

#[tokio::test]
async fn a_user_signed_up_through_the_gateway_can_write_to_a_protected_route() {
    let registry = spawn_registry().await;
    let (_auth, _db) = crate::support::spawn_auth(&registry.as_url()).await;
    let echo = spawn_echo(&registry.as_url(), vec![]).await;
    // The gateway finds the auth service's JWKS through the registry.
    let gateway = spawn_gateway_with(&registry.as_url(), &echo, |config| config.jwks_url = None).await;
    let c = reqwest::Client::new();
    let gw = &gateway.url;
    let name = "robert'); DROP TABLE users;--";
    let signup = kit::test_support::eventually("auth to be routed", std::time::Duration::from_secs(10), || async {
        let resp = c
            .post(format!("{gw}/signup"))
            .json(&serde_json::json!({"username": name, "password": "a long passphrase"}))
            .send()
            .await
            .ok()?;
        (resp.status() != 503).then_some(resp)
    })
    .await;
    assert_eq!(signup.status(), 201);
    let body: serde_json::Value = signup.json().await.unwrap();
    assert_eq!(body["username"], name, "stored literally");
    let login: serde_json::Value =
        json_of(c.post(format!("{gw}/login")).basic_auth(name, Some("a long passphrase"))).await;
    let token = login["access_token"].as_str().unwrap();
    assert_eq!(login["token_type"], "Bearer");
    let seen: serde_json::Value = json_of(c.post(format!("{gw}/echo/things")).bearer_auth(token)).await;
    assert_eq!(seen["x-user-name"], name);
    let claims: serde_json::Value = json_of(c.post(format!("{gw}/validate")).bearer_auth(token)).await;
    assert_eq!(claims["name"], name);
}

#[tokio::test]
#[cfg_attr(no_redis, ignore = "set AGORA_TEST_REDIS_URL to run it against Redis")]
async fn two_gateway_replicas_sharing_redis_enforce_one_limit() {
    let Some(redis) = kit::test_support::redis_url() else {
        return;
    };
    let key = TestKey::new("k1");
    let registry = spawn_registry().await;
    let echo = spawn_echo(&registry.as_url(), vec![key.jwk()]).await;
    let shared = |config: &mut gateway::Config| {
        config.redis_url = Some(redis.clone());
        config.user_quota = Quota { burst: 20, per_second: 0.01 };
    };
    let a = spawn_gateway_with(&registry.as_url(), &echo, shared).await;
    let b = spawn_gateway_with(&registry.as_url(), &echo, shared).await;
    let mut user = claims(600);
    user["sub"] = uuid::Uuid::new_v4().to_string().into(); // a user no earlier run has drained
    let token = key.sign(&user);
    let requests = (0..60).map(|i| {
        let url = format!("{}/echo/x", if i % 2 == 0 { &a.url } else { &b.url });
        let token = token.clone();
        tokio::spawn(async move {
            reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap().status().as_u16()
        })
    });
    let statuses: Vec<u16> = futures::future::join_all(requests).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 20, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_typed_json_body_with_the_session_cookie_still_needs_the_csrf_header() {
    use crate::system::{Service, System};
    let system = System::builder().with(Service::Auth).with(Service::Projects).start().await;
    let popee = system.sign_up("formpopee").await;
    let url = system.url("/projects/propose");
    let body = serde_json::json!({"project_name": "Sent as a form", "tags": ["curl"]}).to_string();
    let cookie = format!("agora_session={}; agora_csrf=abc123", popee.token);
    // What a cross-site HTML form can send: the form type, the browser's cookie, no header.
    let forged = system
        .http()
        .post(&url)
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.clone());
    let problem = expect_problem(forged.send().await.unwrap(), 403).await;
    assert!(problem["detail"].as_str().unwrap().contains("CSRF"), "{problem}");
    // The same request from the site's own script, with the header, is read as JSON.
    let own = system
        .http()
        .post(&url)
        .header("cookie", &cookie)
        .header("x-csrf-token", "abc123")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    assert_eq!(own.send().await.unwrap().status(), 201);
}
