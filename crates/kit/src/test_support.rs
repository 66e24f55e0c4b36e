//! Helpers shared by every service's tests: real backends when configured,
//! fresh databases per test, polling without sleeps-as-assertions.

use std::future::Future;
use std::time::Duration;

/// Whether CI demands the real backends (`AGORA_REQUIRE_BACKENDS=1`): then a
/// missing URL fails the test instead of skipping it.
pub fn backends_required() -> bool {
    std::env::var("AGORA_REQUIRE_BACKENDS").is_ok_and(|v| v == "1")
}

fn backend_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if backends_required() => panic!("{var} must be set when AGORA_REQUIRE_BACKENDS=1"),
        _ => {
            eprintln!("skipped: set {var} to run this test against the real backend");
            None
        }
    }
}

/// The PostgreSQL server for tests (`AGORA_TEST_POSTGRES_URL`), if configured.
pub fn postgres_url() -> Option<String> {
    backend_url("AGORA_TEST_POSTGRES_URL")
}

/// The Redis server for tests (`AGORA_TEST_REDIS_URL`), if configured.
pub fn redis_url() -> Option<String> {
    backend_url("AGORA_TEST_REDIS_URL")
}

/// Creates a fresh, empty PostgreSQL database named `agora_test_<random>` and returns its URL.
pub async fn fresh_postgres_database(server_url: &str) -> String {
    use sqlx::Connection;
    let name = format!("agora_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(server_url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {}: {e}", crate::db::redact_url(server_url)));
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("cannot create test database: {e}"));
    let mut url = url::Url::parse(server_url).unwrap_or_else(|e| panic!("bad AGORA_TEST_POSTGRES_URL: {e}"));
    url.set_path(&name);
    url.to_string()
}

/// A SQLite URL in a fresh temporary directory (kept alive by the returned guard).
pub fn temp_sqlite_url(name: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
    let url = crate::db::sqlite_url_in(dir.path(), name);
    (dir, url)
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plain HTTP client for tests (no connection reuse surprises across restarts).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_else(|e| panic!("cannot build an HTTP client: {e}"))
}
