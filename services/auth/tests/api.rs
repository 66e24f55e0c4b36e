//! The auth service over real sockets. Everything touching storage runs on
//! SQLite, and on PostgreSQL too when `AGORA_TEST_POSTGRES_URL` is set.

use std::time::Duration;

use auth::domain::ThrottleConfig;
use auth::tokens::{generate_pem, SigningKeySource};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kit::test_support::{client, fresh_db, fresh_postgres_database, postgres_url, Backend, Running, TestDb};
use kit::Shutdown;
use reqwest::StatusCode;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// spawn_auth and its helpers

/// A running auth service and a client that speaks its API.
struct TestAuth {
    service: Running,
    http: reqwest::Client,
}

/// Starts the auth service with `config` on port 0.
async fn spawn_auth(config: auth::Config) -> TestAuth {
    TestAuth { service: auth::testing::spawn(config).await, http: client() }
}

/// Starts the auth service on a fresh database of `backend`.
async fn spawn_auth_on(backend: &Backend) -> (TestAuth, TestDb) {
    let db = fresh_db(backend, "auth").await;
    (spawn_auth(auth::Config::for_tests(&db.url)).await, db)
}

const PASSWORD: &str = "correct horse battery staple";

impl TestAuth {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.service.url)
    }

    async fn signup(&self, username: &str, password: &str) -> reqwest::Response {
        self.http
            .post(self.url("/signup"))
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
            .unwrap()
    }

    async fn login_basic(&self, username: &str, password: &str) -> reqwest::Response {
        self.http.post(self.url("/login")).basic_auth(username, Some(password)).send().await.unwrap()
    }

    async fn login_json(&self, username: &str, password: &str) -> reqwest::Response {
        self.http
            .post(self.url("/login"))
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
            .unwrap()
    }

    async fn login_from(&self, ip_chain: &str, username: &str, password: &str) -> reqwest::Response {
        self.http
            .post(self.url("/login"))
            .header("x-forwarded-for", ip_chain)
            .basic_auth(username, Some(password))
            .send()
            .await
            .unwrap()
    }

    async fn validate(&self, token: &str) -> reqwest::Response {
        self.http.post(self.url("/validate")).bearer_auth(token).send().await.unwrap()
    }

    async fn jwks(&self) -> Value {
        self.http.get(self.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap()
    }

    /// Logs in (the user must exist) and returns the access token.
    async fn token(&self, username: &str, password: &str) -> String {
        let resp = self.login_basic(username, password).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_string()
    }

    /// Signs up and logs in; returns the access token.
    async fn new_user_token(&self, username: &str) -> String {
        assert_eq!(self.signup(username, PASSWORD).await.status(), StatusCode::CREATED);
        self.token(username, PASSWORD).await
    }

    /// Stops gracefully and waits until the server is gone.
    async fn stop(self) {
        self.service.stop().await;
    }
}

async fn problem(resp: reqwest::Response) -> Value {
    assert_eq!(resp.headers()["content-type"], "application/problem+json", "{resp:?}");
    resp.json().await.unwrap()
}

kit::on_every_backend!(
    a_user_signs_up_logs_in_both_ways_and_the_token_validates,
    a_taken_name_is_a_conflict_whatever_its_case,
    twenty_concurrent_signups_of_one_name_make_exactly_one_user,
    an_sql_injection_username_is_stored_literally_and_can_log_in,
    bad_credentials_get_the_same_401_whether_or_not_the_user_exists,
    repeated_failures_are_throttled_even_for_the_right_password,
    failures_from_one_address_are_throttled_across_usernames,
    a_successful_login_forgets_the_earlier_failures,
    users_and_tokens_survive_a_restart,
);

// ---------------------------------------------------------------------------
// Signup and login

async fn a_user_signs_up_logs_in_both_ways_and_the_token_validates(backend: Backend) {
    let (auth, _db) = spawn_auth_on(&backend).await;

    let resp = auth.signup("  Alice ", PASSWORD).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let user: Value = resp.json().await.unwrap();
    assert_eq!(user["username"], "Alice");
    let id = user["id"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/users/{id}"));
    assert!(user["created_at"].is_string());
    assert!(user.get("password").is_none() && user.get("password_hash").is_none());
    let shown: Value = auth.http.get(auth.url(&location)).send().await.unwrap().json().await.unwrap();
    assert_eq!(shown, user);

    for resp in [auth.login_basic("Alice", PASSWORD).await, auth.login_json("alice", PASSWORD).await] {
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3600);
        let token = body["access_token"].as_str().unwrap();

        let resp = auth.validate(token).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let claims: Value = resp.json().await.unwrap();
        let mut keys: Vec<&str> = claims.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["aud", "exp", "iat", "iss", "jti", "name", "sub"]);
        assert_eq!(claims["sub"], id.as_str());
        assert_eq!(claims["name"], "Alice");
        assert_eq!(claims["iss"], "agora-auth");
        assert_eq!(claims["aud"], "agora");
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3600);
        let header = jsonwebtoken::decode_header(token).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.kid.as_deref(), auth.jwks().await["keys"][0]["kid"].as_str());
    }
}

async fn a_taken_name_is_a_conflict_whatever_its_case(backend: Backend) {
    let (auth, _db) = spawn_auth_on(&backend).await;
    assert_eq!(auth.signup("Zoë", PASSWORD).await.status(), StatusCode::CREATED);
    for again in ["Zoë", "zoë", "ZOË", " zoË "] {
        let resp = auth.signup(again, "another fine passphrase").await;
        assert_eq!(resp.status(), StatusCode::CONFLICT, "{again:?}");
        let body = problem(resp).await;
        assert!(body["detail"].as_str().unwrap().contains("taken"), "{body}");
    }
    // The first owner keeps the name and the password.
    assert_eq!(auth.login_basic("ZOË", PASSWORD).await.status(), StatusCode::OK);
}

async fn twenty_concurrent_signups_of_one_name_make_exactly_one_user(backend: Backend) {
    let (auth, _db) = spawn_auth_on(&backend).await;
    let attempts = (0..20).map(|i| {
        let name = if i % 2 == 0 { "racer" } else { "RACER" };
        let password = format!("racing passphrase {i}");
        let auth = &auth;
        async move { auth.signup(name, &password).await.status() }
    });
    let statuses = futures::future::join_all(attempts).await;
    let created = statuses.iter().filter(|s| **s == StatusCode::CREATED).count();
    let conflicts = statuses.iter().filter(|s| **s == StatusCode::CONFLICT).count();
    assert_eq!((created, conflicts), (1, 19), "{statuses:?}");
}

#[tokio::test]
async fn weak_passwords_and_bad_usernames_are_refused_naming_the_field() {
    let (auth, _db) = spawn_auth_on(&Backend::Sqlite).await;
    for (username, password, field) in [
        ("bob", "", "password"),
        ("bob", "short", "password"),
        ("bob", "password123", "password"),
        ("bob", "QWERTYUIOP", "password"),
        ("bob", "zzzzzzzzzzzz", "password"),
        ("bob-the-builder", "Bob-The-Builder", "password"),
        ("", PASSWORD, "username"),
        ("   ", PASSWORD, "username"),
        ("bell\u{7}", PASSWORD, "username"),
        (&"n".repeat(65), PASSWORD, "username"),
    ] {
        let resp = auth.signup(username, password).await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{username:?}/{password:?}");
        let body = problem(resp).await;
        assert_eq!(body["field"], field, "{body}");
        assert!(body["detail"].as_str().unwrap().starts_with(field), "{body}");
    }
    // A body without the fields names the first missing one, too.
    let resp = auth.http.post(auth.url("/signup")).json(&json!({})).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem(resp).await["field"], "username");
    // Nothing was created along the way.
    assert_eq!(auth.signup("bob", PASSWORD).await.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn malformed_login_requests_get_problems_not_crashes() {
    let (auth, _db) = spawn_auth_on(&Backend::Sqlite).await;
    let resp = auth.http.post(auth.url("/login")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic realm=\"agora\""));
    let resp = auth.http.post(auth.url("/login")).header("authorization", "Basic not-base64!").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = auth.http.post(auth.url("/login")).body("{\"username\": ").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    problem(resp).await;
    let resp =
        auth.http.post(auth.url("/login")).json(&json!({ "username": 42, "password": ["x"] })).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

async fn an_sql_injection_username_is_stored_literally_and_can_log_in(backend: Backend) {
    let (auth, _db) = spawn_auth_on(&backend).await;
    let names = [
        "robert'); DROP TABLE users;--",
        "' OR '1'='1",
        "admin'--",
        "\"; DELETE FROM login_failures; --",
        "💥 ünïcødé \\ %_",
    ];
    for name in names {
        let resp = auth.signup(name, PASSWORD).await;
        assert_eq!(resp.status(), StatusCode::CREATED, "{name:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["username"], name);
    }
    for name in names {
        let token = auth.token(name, PASSWORD).await;
        let claims: Value = auth.validate(&token).await.json().await.unwrap();
        assert_eq!(claims["name"], name);
    }
    // The LIKE wildcards and quotes matched nobody else.
    assert_eq!(auth.login_basic("' OR '1'='1", "wrong password!").await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(auth.login_basic("%", PASSWORD).await.status(), StatusCode::UNAUTHORIZED);
}

async fn bad_credentials_get_the_same_401_whether_or_not_the_user_exists(backend: Backend) {
    let (auth, _db) = spawn_auth_on(&backend).await;
    assert_eq!(auth.signup("carol", PASSWORD).await.status(), StatusCode::CREATED);
    let attempt = |username: &'static str| {
        auth.http
            .post(auth.url("/login"))
            .header("x-request-id", "same-request-id")
            .basic_auth(username, Some("not her password"))
            .send()
    };
    let mut seen = Vec::new();
    for username in ["carol", "nobody-by-that-name"] {
        let resp = attempt(username).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.headers()["www-authenticate"], "Basic realm=\"agora\", charset=\"UTF-8\"");
        seen.push(resp.bytes().await.unwrap());
    }
    assert_eq!(seen[0], seen[1], "the bodies tell the two cases apart");
    let body: Value = serde_json::from_slice(&seen[0]).unwrap();
    assert_eq!(body["detail"], "invalid username or password");
}

fn retry_after(resp: &reqwest::Response) -> u64 {
    resp.headers()["retry-after"].to_str().unwrap().parse().unwrap()
}

async fn repeated_failures_are_throttled_even_for_the_right_password(backend: Backend) {
    let db = fresh_db(&backend, "auth").await;
    let auth = spawn_auth(auth::Config::for_tests(&db.url)).await;
    assert_eq!(auth.signup("dave", PASSWORD).await.status(), StatusCode::CREATED);
    for _ in 0..5 {
        assert_eq!(auth.login_basic("dave", "guess guess guess").await.status(), StatusCode::UNAUTHORIZED);
    }
    for name in ["dave", "DAVE"] {
        let resp = auth.login_basic(name, PASSWORD).await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        let wait = retry_after(&resp);
        assert!((890..=900).contains(&wait), "Retry-After: {wait}");
        let body = problem(resp).await;
        assert_eq!(body["retry_after"], wait);
    }
    // Other users are not affected, and the counts are in the database: a
    // second replica on the same database refuses too.
    assert_eq!(auth.signup("erin", PASSWORD).await.status(), StatusCode::CREATED);
    assert_eq!(auth.login_json("erin", PASSWORD).await.status(), StatusCode::OK);
    let replica = spawn_auth(auth::Config::for_tests(&db.url)).await;
    assert_eq!(replica.login_json("dave", PASSWORD).await.status(), StatusCode::TOO_MANY_REQUESTS);
}

async fn failures_from_one_address_are_throttled_across_usernames(backend: Backend) {
    let db = fresh_db(&backend, "auth").await;
    let mut config = auth::Config::for_tests(&db.url);
    config.throttle =
        ThrottleConfig { max_failures_per_user: 5, max_failures_per_ip: 3, window: Duration::from_secs(60) };
    let auth = spawn_auth(config).await;
    assert_eq!(auth.signup("frank", PASSWORD).await.status(), StatusCode::CREATED);
    // The gateway appends the peer it saw; what the client put before is ignored.
    for (i, chain) in ["1.1.1.1, 203.0.113.7", "2.2.2.2, 203.0.113.7", "203.0.113.7"].iter().enumerate() {
        let resp = auth.login_from(chain, &format!("sprayed-{i}"), "spray spray spray").await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let resp = auth.login_from("9.9.9.9, 203.0.113.7", "frank", PASSWORD).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!((1..=60).contains(&retry_after(&resp)));
    // Another address is not throttled, even claiming the first one earlier in the chain.
    let resp = auth.login_from("203.0.113.7, 198.51.100.1", "frank", PASSWORD).await;
    assert_eq!(resp.status(), StatusCode::OK);
    // Without the header, the TCP peer (127.0.0.1 here) is the address.
    assert_eq!(auth.login_basic("frank", PASSWORD).await.status(), StatusCode::OK);
}

async fn a_successful_login_forgets_the_earlier_failures(backend: Backend) {
    let db = fresh_db(&backend, "auth").await;
    let mut config = auth::Config::for_tests(&db.url);
    config.throttle.max_failures_per_user = 3;
    let auth = spawn_auth(config).await;
    assert_eq!(auth.signup("grace", PASSWORD).await.status(), StatusCode::CREATED);
    for round in 0..3 {
        for _ in 0..2 {
            assert_eq!(
                auth.login_basic("grace", "not it at all").await.status(),
                StatusCode::UNAUTHORIZED,
                "round {round}"
            );
        }
        assert_eq!(auth.login_basic("grace", PASSWORD).await.status(), StatusCode::OK, "round {round}");
    }
}

async fn users_and_tokens_survive_a_restart(backend: Backend) {
    let db = fresh_db(&backend, "auth").await;
    let keys = tempfile::tempdir().unwrap();
    let config = {
        let mut c = auth::Config::for_tests(&db.url);
        c.keys.signing = SigningKeySource::Generated(keys.path().join("auth-signing-key.pem"));
        c
    };
    let first = spawn_auth(config.clone()).await;
    let token = first.new_user_token("heidi").await;
    let kid_before = first.jwks().await["keys"][0]["kid"].clone();
    first.stop().await;

    let second = spawn_auth(config).await;
    assert_eq!(second.jwks().await["keys"][0]["kid"], kid_before);
    assert_eq!(second.validate(&token).await.status(), StatusCode::OK);
    assert_eq!(second.login_json("heidi", PASSWORD).await.status(), StatusCode::OK);
    assert_eq!(second.signup("HEIDI", PASSWORD).await.status(), StatusCode::CONFLICT);
}

// ---------------------------------------------------------------------------
// Tokens and keys

/// A service signing with a key the test knows, so it can forge "valid" tokens.
async fn spawn_with_known_key() -> (TestAuth, TestDb, EncodingKey, String) {
    let db = fresh_db(&Backend::Sqlite, "auth").await;
    let pem = generate_pem().unwrap();
    let mut config = auth::Config::for_tests(&db.url);
    config.keys.signing = SigningKeySource::Pem(pem.clone());
    let auth = spawn_auth(config).await;
    let key = EncodingKey::from_ed_pem(pem.expose().as_bytes()).unwrap();
    let kid = auth.jwks().await["keys"][0]["kid"].as_str().unwrap().to_string();
    (auth, db, key, kid)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims(exp: i64) -> Value {
    json!({
        "sub": "00000000-0000-7000-8000-000000000000", "name": "mallory",
        "iss": "agora-auth", "aud": "agora", "iat": now() - 10, "exp": exp,
        "jti": "6a0f9d52-5f3b-4a4e-9a51-3f1c1c9a0b6e",
    })
}

fn sign(claims: &Value, key: &EncodingKey, kid: &str) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

async fn assert_refused(auth: &TestAuth, token: &str, what: &str) {
    let resp = auth.validate(token).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{what}");
    assert!(resp.headers()["www-authenticate"].to_str().unwrap().contains("error=\"invalid_token\""), "{what}");
    problem(resp).await;
}

#[tokio::test]
async fn forged_expired_and_foreign_tokens_are_refused() {
    let (auth, _db, key, kid) = spawn_with_known_key().await;

    // The test's own signing works, so every refusal below is for its stated reason.
    let good = sign(&claims(now() + 600), &key, &kid);
    assert_eq!(auth.validate(&good).await.status(), StatusCode::OK);

    assert_refused(&auth, "garbage", "garbage").await;
    assert_refused(&auth, "a.b.c", "three garbage segments").await;
    assert_refused(&auth, &sign(&claims(now() - 120), &key, &kid), "expired").await;
    let mut wrong_iss = claims(now() + 600);
    wrong_iss["iss"] = json!("evil-auth");
    assert_refused(&auth, &sign(&wrong_iss, &key, &kid), "wrong issuer").await;
    let mut wrong_aud = claims(now() + 600);
    wrong_aud["aud"] = json!("elsewhere");
    assert_refused(&auth, &sign(&wrong_aud, &key, &kid), "wrong audience").await;
    assert_refused(&auth, &sign(&claims(now() + 600), &key, "0123456789abcdef"), "unknown kid").await;
    let mut no_kid = Header::new(Algorithm::EdDSA);
    no_kid.kid = None;
    let token = jsonwebtoken::encode(&no_kid, &claims(now() + 600), &key).unwrap();
    assert_refused(&auth, &token, "no kid").await;

    // Tampered: the payload re-encoded with more power, the signature kept.
    let parts: Vec<&str> = good.split('.').collect();
    let mut payload: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    payload["name"] = json!("admin");
    let tampered = format!("{}.{}.{}", parts[0], b64(&payload), parts[2]);
    assert_refused(&auth, &tampered, "tampered claims").await;

    // Signed by another Ed25519 key, claiming ours and its own kid.
    let other = generate_pem().unwrap();
    let other = EncodingKey::from_ed_pem(other.expose().as_bytes()).unwrap();
    assert_refused(&auth, &sign(&claims(now() + 600), &other, &kid), "another key, our kid").await;
    assert_refused(&auth, &sign(&claims(now() + 600), &other, "fedcba9876543210"), "another key").await;

    // alg: none, with and without a signature.
    let none = json!({ "alg": "none", "typ": "JWT", "kid": kid });
    let unsigned = format!("{}.{}.", b64(&none), b64(&claims(now() + 600)));
    assert_refused(&auth, &unsigned, "alg none").await;
    assert_refused(&auth, &format!("{unsigned}{}", parts[2]), "alg none with a signature").await;

    // HS256 keyed with the public key (the classic algorithm confusion).
    let x = auth.jwks().await["keys"][0]["x"].as_str().unwrap().to_string();
    let public = URL_SAFE_NO_PAD.decode(&x).unwrap();
    for secret in [public.as_slice(), x.as_bytes()] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.clone());
        let token = jsonwebtoken::encode(&header, &claims(now() + 600), &EncodingKey::from_secret(secret)).unwrap();
        assert_refused(&auth, &token, "HS256 with the public key").await;
    }

    // No token at all.
    let resp = auth.http.post(auth.url("/validate")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().contains_key("www-authenticate"));
}

#[tokio::test]
async fn the_jwks_publishes_current_and_previous_keys_and_old_tokens_still_validate() {
    let db = fresh_db(&Backend::Sqlite, "auth").await;
    let keys = tempfile::tempdir().unwrap();
    let old_pem = generate_pem().unwrap();
    let old_path = keys.path().join("old.pem");
    std::fs::write(&old_path, old_pem.expose()).unwrap();

    // Before the rotation: the old key signs.
    let mut before = auth::Config::for_tests(&db.url);
    before.keys.signing = SigningKeySource::File(old_path.clone());
    let service = spawn_auth(before).await;
    let old_token = service.new_user_token("ivan").await;
    let old_kid = service.jwks().await["keys"][0]["kid"].clone();
    service.stop().await;

    // After: a new key signs, the old one is only published.
    let mut after = auth::Config::for_tests(&db.url);
    after.keys.signing = SigningKeySource::Pem(generate_pem().unwrap());
    after.keys.previous = vec![old_path];
    let service = spawn_auth(after).await;
    let resp = service.http.get(service.url("/.well-known/jwks.json")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["cache-control"], "public, max-age=300");
    let jwks: Value = resp.json().await.unwrap();
    let published = jwks["keys"].as_array().unwrap();
    assert_eq!(published.len(), 2);
    for key in published {
        assert_eq!(key["kty"], "OKP");
        assert_eq!(key["crv"], "Ed25519");
        assert_eq!(key["alg"], "EdDSA");
        assert_eq!(key["use"], "sig");
        assert_eq!(key["kid"].as_str().unwrap().len(), 16);
        let x = URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap();
        assert_eq!(x.len(), 32);
        assert_eq!(key.as_object().unwrap().len(), 6, "{key}");
        assert!(key.get("d").is_none(), "private part published: {key}");
    }
    assert_eq!(published[1]["kid"], old_kid);
    assert_ne!(published[0]["kid"], old_kid);

    assert_eq!(service.validate(&old_token).await.status(), StatusCode::OK);
    let new_token = service.token("ivan", PASSWORD).await;
    let header = jsonwebtoken::decode_header(&new_token).unwrap();
    assert_eq!(header.kid.as_deref(), published[0]["kid"].as_str());
    // The kit's verifier, as every other service uses it, accepts it from this JWKS.
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let verifier = kit::auth::Verifier::new(kit::auth::AuthConfig::default(), kit::auth::KeySource::Static(set));
    assert_eq!(verifier.verify(&new_token).await.unwrap().name, "ivan");
    assert_eq!(verifier.verify(&old_token).await.unwrap().name, "ivan");
}

#[cfg(unix)]
#[tokio::test]
async fn the_generated_key_is_private_reused_and_refused_once_readable_by_others() {
    use std::os::unix::fs::PermissionsExt;

    let db = fresh_db(&Backend::Sqlite, "auth").await;
    let data = tempfile::tempdir().unwrap();
    let path = data.path().join("nested").join("auth-signing-key.pem");
    let mut config = auth::Config::for_tests(&db.url);
    config.keys.signing = SigningKeySource::Generated(path.clone());

    let first = spawn_auth(config.clone()).await;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
    let pem = std::fs::read_to_string(&path).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let token = first.new_user_token("judy").await;
    first.stop().await;

    let second = spawn_auth(config.clone()).await;
    assert_eq!(std::fs::read_to_string(&path).unwrap(), pem, "the key was replaced");
    assert_eq!(second.validate(&token).await.status(), StatusCode::OK);
    second.stop().await;

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = auth::start(config, Shutdown::new()).await.err().unwrap();
    let message = err.to_string();
    assert!(matches!(err, auth::StartError::Key(_)), "{message}");
    assert!(message.contains("chmod 600"), "{message}");
    assert!(!message.contains(pem.lines().nth(1).unwrap()), "{message}");
}

#[tokio::test]
async fn a_malformed_configured_key_stops_the_start_with_a_clear_error() {
    let db = fresh_db(&Backend::Sqlite, "auth").await;
    let mut config = auth::Config::for_tests(&db.url);
    config.keys.signing = SigningKeySource::Pem(auth::domain::Secret::new(format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        STANDARD.encode(b"definitely not a key")
    )));
    let err = auth::start(config, Shutdown::new()).await.err().unwrap();
    assert!(err.to_string().contains("AUTH_SIGNING_KEY"), "{err}");
}

// ---------------------------------------------------------------------------
// Platform routes

#[tokio::test]
async fn readiness_and_the_openapi_description_are_served() {
    let (auth, _db) = spawn_auth_on(&Backend::Sqlite).await;
    let ready = auth.http.get(auth.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let doc: Value = auth.http.get(auth.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    for path in ["/signup", "/login", "/validate", "/.well-known/jwks.json"] {
        assert!(doc["paths"].get(path).is_some(), "{path} undocumented");
    }
    let resp = auth.http.get(auth.url("/users/not-a-uuid")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    problem(resp).await;
}

#[tokio::test]
#[cfg_attr(no_postgres, ignore = "set AGORA_TEST_POSTGRES_URL to run it against PostgreSQL")]
async fn postgres_is_used_when_configured() {
    // A guard that the PostgreSQL variants above really ran when CI asked for them.
    if let Some(server) = postgres_url() {
        let url = fresh_postgres_database(&server).await;
        let auth = spawn_auth(auth::Config::for_tests(&url)).await;
        auth.new_user_token("pg-user").await;
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(&pool).await.unwrap();
        assert_eq!(count, 1);
    }
}

// ---------------------------------------------------------------------------
// Outages of the database

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_postgres, ignore = "set AGORA_TEST_POSTGRES_URL to run it against PostgreSQL")]
async fn signup_and_login_are_quick_503s_while_postgres_is_unreachable_and_work_again_after() {
    use kit::test_support::{eventually, Fault, FaultProxy};
    let Some(server) = postgres_url() else { return };
    let database = fresh_postgres_database(&server).await;
    let proxy = FaultProxy::in_front_of(&database).await;
    let auth = spawn_auth(auth::Config::for_tests(proxy.url(&database))).await;
    assert_eq!(auth.signup("before", PASSWORD).await.status(), StatusCode::CREATED);

    proxy.set(Fault::Refuse);
    for _ in 0..3 {
        for resp in [auth.signup("during", PASSWORD).await, auth.login_json("before", PASSWORD).await] {
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert!(resp.headers().contains_key("retry-after"), "{resp:?}");
            assert_eq!(problem(resp).await["dependency"], "database");
        }
    }
    let ready: Value = auth.http.get(auth.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "degraded", "still ready, its database down: {ready}");
    // What needs no database still answers.
    assert_eq!(auth.http.get(auth.url("/.well-known/jwks.json")).send().await.unwrap().status(), StatusCode::OK);

    proxy.set(Fault::Pass);
    eventually("logins to work again, nothing restarted", Duration::from_secs(20), || async {
        (auth.login_json("before", PASSWORD).await.status() == StatusCode::OK).then_some(())
    })
    .await;
    assert_eq!(auth.signup("after", PASSWORD).await.status(), StatusCode::CREATED);
}
