//! Helpers shared by every service's tests: real backends when configured,
//! fresh databases per test, polling without sleeps-as-assertions.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use crate::http::ServeError;
use crate::service::Started;
use crate::Shutdown;

/// A service a test started in its own runtime: where it listens, and a guard that stops it
/// (gracefully, without waiting) when dropped. Each service's `testing::spawn` returns one.
pub struct Running {
    /// The bound address (the real port of a service configured with port 0).
    pub addr: SocketAddr,
    /// `http://addr`.
    pub url: String,
    shutdown: Shutdown,
    task: Option<tokio::task::JoinHandle<Result<(), ServeError>>>,
}

impl Running {
    /// Takes charge of a service started with `shutdown`.
    pub fn new(started: Started, shutdown: Shutdown) -> Self {
        Self { addr: started.addr, url: started.url(), shutdown, task: Some(started.task) }
    }

    /// The URL as a registry or peer list wants it.
    pub fn as_url(&self) -> url::Url {
        url::Url::parse(&self.url).unwrap_or_else(|e| panic!("bad service URL {}: {e}", self.url))
    }

    /// Stops gracefully and waits until the server is gone; panics if it stopped with an error.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("{} stopped with an error: {e}", self.url),
                Err(e) => panic!("{} panicked: {e}", self.url),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

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

/// The RabbitMQ broker for tests (`AGORA_TEST_AMQP_URL`), if configured.
pub fn amqp_url() -> Option<String> {
    backend_url("AGORA_TEST_AMQP_URL")
}

/// Deletes the RabbitMQ exchanges of the event bus in `namespace`, and the queues (with
/// their dead letters) of the named subscriptions: a test's clean-up, best effort.
#[cfg(feature = "events")]
pub async fn delete_amqp_namespace(url: &str, namespace: &str, subscriptions: &[&str]) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let Ok(connection) = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await else {
        return;
    };
    let Ok(channel) = connection.create_channel().await else { return };
    for name in subscriptions {
        for queue in [format!("{namespace}.events.{name}"), format!("{namespace}.events.{name}.dead")] {
            let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
        }
    }
    for exchange in [format!("{namespace}.events"), format!("{namespace}.events.dead")] {
        let _ = channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await;
    }
    let _ = connection.close(200, "clean".into()).await;
}

#[cfg(feature = "db")]
/// A connection to the PostgreSQL server for creating and changing test databases.
async fn admin_connection(server_url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(server_url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {}: {e}", crate::config::redact_url(server_url)))
}

#[cfg(feature = "db")]
/// Creates a fresh, empty PostgreSQL database named `agora_test_<random>` and returns its URL.
pub async fn fresh_postgres_database(server_url: &str) -> String {
    let name = format!("agora_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = admin_connection(server_url).await;
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("cannot create test database: {e}"));
    let mut url = url::Url::parse(server_url).unwrap_or_else(|e| panic!("bad AGORA_TEST_POSTGRES_URL: {e}"));
    url.set_path(&name);
    url.to_string()
}

#[cfg(feature = "db")]
/// Makes the PostgreSQL database at `database_url` unreachable (`reachable: false`: its open
/// connections are ended and new ones refused, its data kept) or reachable again: a database
/// outage, for tests of what a service does meanwhile. `server_url` is the admin connection.
pub async fn set_postgres_database_reachable(server_url: &str, database_url: &str, reachable: bool) {
    let url = url::Url::parse(database_url).unwrap_or_else(|e| panic!("bad database URL: {e}"));
    let name = url.path().trim_start_matches('/').to_string();
    let mut admin = admin_connection(server_url).await;
    sqlx::query(&format!("ALTER DATABASE \"{name}\" WITH ALLOW_CONNECTIONS {reachable}"))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("cannot change database {name}: {e}"));
    if !reachable {
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(&name)
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot end the connections to {name}: {e}"));
    }
}

#[cfg(feature = "db")]
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

#[cfg(feature = "auth")]
/// A token issuer for tests: an Ed25519 key of its own, the JWKS that
/// publishes it, and tokens for any user, as the auth service would sign them.
pub struct TestIssuer {
    kid: String,
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

#[cfg(feature = "auth")]
impl Default for TestIssuer {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "auth")]
impl TestIssuer {
    /// A fresh key.
    pub fn new() -> Self {
        use ring::signature::KeyPair;
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
            .unwrap_or_else(|e| panic!("cannot generate a key: {e}"))
            .as_ref()
            .to_vec();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap_or_else(|e| panic!("bad key: {e}"));
        let public = pair.public_key().as_ref().to_vec();
        Self { kid: format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]), pkcs8, public }
    }

    /// The key set a service verifies against (`KeySource::Static`).
    pub fn jwks(&self) -> jsonwebtoken::jwk::JwkSet {
        use base64::Engine;
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&self.public);
        let set = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": self.kid, "x": x}]});
        serde_json::from_value(set).unwrap_or_else(|e| panic!("bad JWKS: {e}"))
    }

    /// `KeySource::Static` over [`Self::jwks`].
    pub fn key_source(&self) -> crate::auth::KeySource {
        crate::auth::KeySource::Static(self.jwks())
    }

    /// A valid token (one hour) for user `sub` named `name`, with the default issuer and audience.
    pub fn token(&self, sub: &str, name: &str) -> String {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs());
        let claims = serde_json::json!({
            "sub": sub, "name": name, "iss": "agora-auth", "aud": "agora",
            "iat": now, "exp": now + 3600, "jti": uuid::Uuid::new_v4().to_string(),
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_ed_der(&self.pkcs8))
            .unwrap_or_else(|e| panic!("cannot sign a token: {e}"))
    }
}

#[cfg(feature = "db")]
/// The database engine a test runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on this PostgreSQL server (`AGORA_TEST_POSTGRES_URL`).
    Postgres(String),
}

#[cfg(feature = "db")]
/// A fresh, empty database for one test (the guard keeps a SQLite file's directory alive).
pub struct TestDb {
    /// Its URL, for a service's `DATABASE_URL`.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

#[cfg(feature = "db")]
/// Creates a fresh database named after `service` on `backend`.
pub async fn fresh_db(backend: &Backend, service: &str) -> TestDb {
    match backend {
        Backend::Sqlite => {
            let (dir, url) = temp_sqlite_url(service);
            TestDb { url, _dir: Some(dir) }
        }
        Backend::Postgres(server) => TestDb { url: fresh_postgres_database(server).await, _dir: None },
    }
}

#[cfg(feature = "db")]
/// Runs each `async fn(Backend)` of the calling module on SQLite (`sqlite::<name>`), and on
/// PostgreSQL (`postgres::<name>`) when `AGORA_TEST_POSTGRES_URL` is set: without it the
/// PostgreSQL tests show as ignored, and fail when `AGORA_REQUIRE_BACKENDS=1`. The calling crate's
/// build script calls `test_backends::declare()`, which sets the `no_postgres` cfg.
///
/// `on_every_backend!(ffmpeg: …)` does the same for tests that also need ffmpeg, in a module
/// `ffmpeg` (so CI's filters can find them): ignored without it (the build script calls
/// `test_backends::declare_ffmpeg()`, which sets `no_ffmpeg`).
#[macro_export]
macro_rules! on_every_backend {
    (ffmpeg: $($test:ident),* $(,)?) => {
        mod ffmpeg {
            mod sqlite {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    #[cfg_attr(no_ffmpeg, ignore = "install ffmpeg to run it")]
                    async fn $test() {
                        super::super::$test($crate::test_support::Backend::Sqlite).await;
                    }
                )*
            }
            mod postgres {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    #[cfg_attr(any(no_ffmpeg, no_postgres), ignore = "needs ffmpeg and AGORA_TEST_POSTGRES_URL")]
                    async fn $test() {
                        if let Some(url) = $crate::test_support::postgres_url() {
                            super::super::$test($crate::test_support::Backend::Postgres(url)).await;
                        }
                    }
                )*
            }
        }
    };
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::test_support::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(no_postgres, ignore = "set AGORA_TEST_POSTGRES_URL to run it against PostgreSQL")]
                async fn $test() {
                    if let Some(url) = $crate::test_support::postgres_url() {
                        super::$test($crate::test_support::Backend::Postgres(url)).await;
                    }
                }
            )*
        }
    };
}

/// A certificate authority and a server certificate for `localhost` signed by
/// it, generated at test time (PEM), for TLS between services in tests.
#[derive(Debug, Clone)]
pub struct TestCertificates {
    /// The CA certificate clients trust.
    pub ca_pem: String,
    /// The server's certificate.
    pub cert_pem: String,
    /// The server's private key.
    pub key_pem: String,
}

impl TestCertificates {
    /// Generates a fresh CA and a `localhost` server certificate.
    pub fn localhost() -> Self {
        let fail = |e: rcgen::Error| -> ! { panic!("cannot generate test certificates: {e}") };
        let ca_key = rcgen::KeyPair::generate().unwrap_or_else(|e| fail(e));
        let mut ca_params = rcgen::CertificateParams::new(Vec::new()).unwrap_or_else(|e| fail(e));
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap_or_else(|e| fail(e));
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| fail(e));
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .and_then(|p| p.signed_by(&key, &issuer))
            .unwrap_or_else(|e| fail(e));
        Self { ca_pem: ca.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }
}

/// What a [`FaultProxy`] does to connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Passes bytes both ways: no fault.
    Pass,
    /// Refuses new connections (nothing listens on the port) and resets the open ones: a server that
    /// is down.
    Refuse,
    /// Accepts connections and resets them at once, and resets the open ones: a server that crashes
    /// on every connection, or a firewall answering with RSTs.
    Reset,
    /// Accepts connections and passes nothing, on new and open ones alike, until the fault ends
    /// (then the held bytes go on): a network partition, where connects and queries hang.
    BlackHole,
}

/// A TCP forwarder between a service and a backend (PostgreSQL, Redis) that can refuse, reset or
/// black-hole connections: an outage of the backend for one test, without stopping the shared
/// server. Point the service at [`FaultProxy::url`], then [`FaultProxy::set`] a [`Fault`].
pub struct FaultProxy {
    addr: SocketAddr,
    fault: std::sync::Arc<tokio::sync::watch::Sender<Fault>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts forwarding a loopback port to `backend` (`host:port`).
    pub async fn start(backend: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("the fault proxy cannot listen: {e}"));
        Self::serve(listener, backend.to_string())
    }

    /// Starts forwarding `listen` (a free address, e.g. `127.0.0.1:15432`) to `backend`.
    pub async fn start_on(listen: SocketAddr, backend: &str) -> std::io::Result<Self> {
        let listener = bind_reusable(listen)?;
        Ok(Self::serve(listener, backend.to_string()))
    }

    fn serve(listener: tokio::net::TcpListener, backend: String) -> Self {
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("the fault proxy has no address: {e}"));
        let (fault, _) = tokio::sync::watch::channel(Fault::Pass);
        let fault = std::sync::Arc::new(fault);
        let task = tokio::spawn(accept_loop(listener, addr, backend, fault.clone()));
        Self { addr, fault, task }
    }

    /// Starts forwarding a loopback port to the server of `url` (`postgres://…`, `redis://…`).
    pub async fn in_front_of(url: &str) -> Self {
        let parsed = url::Url::parse(url).unwrap_or_else(|e| panic!("bad backend URL: {e}"));
        let host = parsed.host_str().unwrap_or("127.0.0.1");
        let port = parsed.port_or_known_default().or_else(|| match parsed.scheme() {
            "postgres" | "postgresql" => Some(5432),
            "redis" => Some(6379),
            _ => None,
        });
        let port = port.unwrap_or_else(|| panic!("no port in the backend URL"));
        Self::start(&format!("{host}:{port}")).await
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `url` (of the backend) with its host and port replaced by the proxy's.
    pub fn url(&self, url: &str) -> String {
        let mut parsed = url::Url::parse(url).unwrap_or_else(|e| panic!("bad backend URL: {e}"));
        parsed.set_host(Some("127.0.0.1")).unwrap_or_else(|e| panic!("cannot set the proxy's host: {e}"));
        parsed.set_port(Some(self.addr.port())).unwrap_or_else(|()| panic!("cannot set the proxy's port"));
        parsed.to_string()
    }

    /// Starts (or ends, with [`Fault::Pass`]) a fault.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        // The connections end with their tasks' fault watch: reset them all.
        self.fault.send_replace(Fault::Reset);
    }
}

fn bind_reusable(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    backend: String,
    fault: std::sync::Arc<tokio::sync::watch::Sender<Fault>>,
) {
    let mut listener = Some(listener);
    let mut changes = fault.subscribe();
    loop {
        let current = *changes.borrow_and_update();
        match (current, listener.is_some()) {
            (Fault::Refuse, true) => listener = None,
            (Fault::Refuse, false) => {}
            (_, false) => match bind_reusable(addr) {
                Ok(again) => listener = Some(again),
                Err(e) => {
                    eprintln!("fault proxy: cannot listen on {addr} again: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            (_, true) => {}
        }
        let Some(bound) = &listener else {
            if changes.changed().await.is_err() {
                return;
            }
            continue;
        };
        tokio::select! {
            accepted = bound.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let _ = client.set_nodelay(true);
                if *fault.borrow() == Fault::Reset {
                    let _ = client.set_zero_linger();
                    drop(client);
                    continue;
                }
                tokio::spawn(forward(client, backend.clone(), fault.subscribe()));
            }
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}

/// Waits while the fault holds bytes back; `false` when the connection is to be reset.
async fn passing(fault: &mut tokio::sync::watch::Receiver<Fault>) -> bool {
    loop {
        match *fault.borrow_and_update() {
            Fault::Pass => return true,
            Fault::Refuse | Fault::Reset => return false,
            Fault::BlackHole => {}
        }
        if fault.changed().await.is_err() {
            return false;
        }
    }
}

async fn forward(client: tokio::net::TcpStream, backend: String, mut fault: tokio::sync::watch::Receiver<Fault>) {
    if !passing(&mut fault).await {
        let _ = client.set_zero_linger();
        return;
    }
    let Ok(server) = tokio::net::TcpStream::connect(&backend).await else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Each direction ends on its own: at the end of its stream, or reset by the fault.
    tokio::join!(pipe(client_read, server_write, fault.clone()), pipe(server_read, client_write, fault));
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut fault: tokio::sync::watch::Receiver<Fault>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Nothing is even read while black-holed, so the sender's writes fill the buffers and stall.
        if !passing(&mut fault).await {
            let _ = from.as_ref().set_zero_linger();
            let _ = to.as_ref().set_zero_linger();
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read { Ok(0) | Err(_) => { let _ = to.shutdown().await; return; } Ok(n) => n },
            changed = fault.changed() => { if changed.is_err() { return } continue; }
        };
        if !passing(&mut fault).await {
            let _ = from.as_ref().set_zero_linger();
            let _ = to.as_ref().set_zero_linger();
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
