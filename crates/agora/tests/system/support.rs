//! One `spawn_*` helper per service: each starts the real service on port 0,
//! wired to a real registry, and hands back its URL.

use std::time::Duration;

use kit::config::ServiceConfig;
use kit::Shutdown;

pub use kit::test_support::Running;

use crate::system::{Service, System};

/// A child process that is killed when the test ends, however it ends.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port that is free now and that no outgoing connection will take before the
/// caller binds it (or points a service at it): it is drawn from below the kernel's ephemeral
/// range (32768 and up), where a port picked by binding to 0 could be reused for another
/// test's connection in the meantime.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = rand::random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000");
}

/// `agora serve <service>` on `port`, as a process of its own: no registry, warnings only on
/// stderr, stdout dropped. Add what the test needs, then spawn it.
pub fn agora_serve(service: &str, port: u16) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_agora"));
    command
        .args(["serve", service])
        .env("PORT", port.to_string())
        .env("RUST_LOG", "warn")
        .env_remove("REGISTRY_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit());
    command
}

/// A registry on port 0 that evicts quickly.
pub async fn spawn_registry() -> Running {
    registry::testing::spawn(registry::Config::for_tests()).await
}

fn jokes_config(registry: &url::Url) -> jokes::Config {
    let mut service = ServiceConfig::for_tests("jokes", Some(registry.clone()));
    // Short heartbeats: the registry evicts a silent instance after 3 s.
    service.heartbeat = Duration::from_millis(200);
    jokes::Config { service }
}

/// A jokes instance registered with `registry`.
pub async fn spawn_jokes(registry: &url::Url) -> Running {
    jokes::testing::spawn(jokes_config(registry)).await
}

/// Registry + one jokes instance + gateway, with the gateway already routing to jokes.
pub async fn spawn_system() -> System {
    System::builder().with(Service::Jokes).start().await
}

/// The gateway's `/api/status` entry for `service`.
pub async fn status_of(gateway: &str, service: &str) -> serde_json::Value {
    let report: serde_json::Value = reqwest::get(format!("{gateway}/api/status")).await.unwrap().json().await.unwrap();
    report["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == service).cloned())
        .unwrap_or(serde_json::Value::Null)
}

/// Asserts a problem+json response and returns its body.
pub async fn expect_problem(resp: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(resp.status(), status, "unexpected status for {}", resp.url());
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{body}");
    body
}

/// A test upstream named `echo`: `/echo/*` answers with the headers it
/// received (what the gateway forwarded) and, under names no header can have,
/// the request's `:method`, `:uri` and `:body`; it waits `x-echo-delay-ms`
/// before answering, and it publishes `keys` as a JWKS.
pub async fn spawn_echo(registry: &url::Url, keys: Vec<serde_json::Value>) -> Running {
    use axum::routing::{any, get};
    let jwks = serde_json::json!({ "keys": keys });
    let app = axum::Router::new()
        .route(
            "/echo/{*rest}",
            any(|method: axum::http::Method, uri: axum::http::Uri, headers: axum::http::HeaderMap, body: String| async move {
                let delay = headers.get("x-echo-delay-ms").and_then(|v| v.to_str().ok()?.parse().ok());
                if let Some(ms) = delay {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                let mut seen: serde_json::Map<String, serde_json::Value> = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), serde_json::Value::from(v.to_str().unwrap_or_default())))
                    .collect();
                seen.insert(":method".into(), method.as_str().into());
                seen.insert(":uri".into(), uri.to_string().into());
                seen.insert(":body".into(), body.into());
                axum::Json(seen)
            }),
        )
        .route("/.well-known/jwks.json", get(move || async move { axum::Json(jwks) }));
    let app = kit::http::service_router(app, kit::http::RouterOptions::default());
    let shutdown = Shutdown::new();
    let mut config = ServiceConfig::for_tests("echo", Some(registry.clone()));
    config.heartbeat = Duration::from_millis(200);
    let started = kit::service::start_http(&config, app, shutdown.clone()).await.expect("echo starts");
    Running::new(started, shutdown)
}

/// A gateway that also routes `/echo` (writes protected) to the echo service,
/// trusts the echo service's JWKS, and lets the test adjust its configuration.
pub async fn spawn_gateway_with(
    registry: &url::Url,
    echo: &Running,
    adjust: impl FnOnce(&mut gateway::Config),
) -> Running {
    let mut config = gateway::Config::for_tests(registry.clone());
    let mut table = vec![gateway::proxy::routes::Route::new("/echo", "echo").user_for_writes()];
    table.extend_from_slice(gateway::proxy::routes::ROUTES);
    config.routes = Box::leak(table.into_boxed_slice());
    config.jwks_url = Some(format!("{}/.well-known/jwks.json", echo.url));
    adjust(&mut config);
    let gw = gateway::testing::spawn(config).await;
    let url = format!("{}/echo/ready", gw.url);
    kit::test_support::eventually("the gateway to route /echo", Duration::from_secs(10), || {
        let url = url.clone();
        async move { reqwest::get(&url).await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    gw
}

/// An auth service with a fresh SQLite database and cheap password hashing, registered with `registry`.
pub async fn spawn_auth(registry: &url::Url) -> (Running, tempfile::TempDir) {
    let (dir, url) = kit::test_support::temp_sqlite_url("auth");
    let mut config = auth::Config::for_tests(url);
    config.service = ServiceConfig::for_tests("auth", Some(registry.clone()));
    (auth::testing::spawn(config).await, dir)
}
