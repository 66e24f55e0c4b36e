//! The projects service (SPEC §3.5, seed 003's "Projects Flow"): crowdfunding
//! projects proposed, listed and read over REST, with their problems,
//! solutions, replies and votes kept by the threads service, which it calls
//! over gRPC through the kit's resilient client. A proposal never half-exists:
//! its threads go through an outbox (see [`outbox`]).

pub mod api;
pub mod cache;
pub mod domain;
pub mod outbox;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod threads;

use std::sync::Arc;
use std::time::Duration;

use kit::auth::{AuthConfig, KeySource, Verifier};
use kit::backoff::Backoff;
use kit::config::{ConfigError, Env, ServiceConfig, Source};
use kit::db::{DatabaseConfig, DbError};
use kit::discovery::Discovery;
use kit::events::outbox::OutboxRelay;
use kit::events::{EventBus, EventsConfig, EventsError};
use kit::grpc::GrpcTls;
use kit::http::{service_router, RouterOptions, ServeError};
use kit::peer::CallPolicy;
use kit::service::Started;
use kit::Shutdown;

use crate::outbox::Relay;
use crate::threads::Threads;

/// Default port of `agora serve projects`.
pub const DEFAULT_PORT: u16 = 8103;

/// The projects service's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Common service settings (`PEERS=threads=…` fixes the threads instances when there is no registry).
    pub service: ServiceConfig,
    /// The database (`DATABASE_URL`, default SQLite `projects.db` under `DATA_DIR`; `DB_CONNECT_RETRIES`, …).
    pub database: DatabaseConfig,
    /// TLS towards the threads service (`GRPC_TLS_CA_FILE`, `GRPC_TLS_DOMAIN`).
    pub tls: GrpcTls,
    /// Deadline of one call to the threads service, retries included (`PROJECTS_THREADS_DEADLINE_MS`).
    pub threads_deadline: Duration,
    /// How often the outbox is checked for threads to deliver (`PROJECTS_OUTBOX_INTERVAL_MS`).
    pub outbox_interval: Duration,
    /// How long an anonymous reader's project page is kept (`PROJECTS_CACHE_TTL_MS`, 0 turns the cache off).
    pub cache_ttl: Duration,
    /// How much longer an anonymous reader's page is kept, to be served marked stale only while the
    /// database is unavailable (`PROJECTS_STALE_IF_ERROR_SECS`, default 300; 0: never stale).
    pub stale_if_error: Duration,
    /// How many project pages are kept at most (`PROJECTS_CACHE_CAPACITY`).
    pub cache_capacity: u64,
    /// What tokens must say (`AUTH_ISSUER`, `AUTH_AUDIENCE`).
    pub auth: AuthConfig,
    /// Where the token keys come from (`AUTH_JWKS_URL`, else the auth service via discovery).
    pub keys: KeySource,
    /// The event bus `project.*` events go to (`EVENTS_URL`, default `events.db` under `DATA_DIR`).
    pub events: EventsConfig,
}

impl Config {
    /// Reads the environment.
    pub fn from_env<S: Source>(env: &Env<S>) -> Result<Self, ConfigError> {
        let service = ServiceConfig::from_env(env, "projects", DEFAULT_PORT)?;
        let keys = match env.url_opt("AUTH_JWKS_URL", &["http", "https"])? {
            Some(url) => KeySource::Url(url.to_string()),
            None => KeySource::Discovery(Discovery::from_config(&service)),
        };
        Ok(Self {
            database: DatabaseConfig::from_env(env, "projects")?,
            tls: GrpcTls::from_env(env)?,
            threads_deadline: Duration::from_millis(env.parse_or("PROJECTS_THREADS_DEADLINE_MS", 3000)?),
            outbox_interval: Duration::from_millis(env.parse_or("PROJECTS_OUTBOX_INTERVAL_MS", 1000)?),
            cache_ttl: Duration::from_millis(env.parse_or("PROJECTS_CACHE_TTL_MS", 10_000)?),
            stale_if_error: env.secs_or("PROJECTS_STALE_IF_ERROR_SECS", Duration::from_secs(300))?,
            cache_capacity: env.parse_or("PROJECTS_CACHE_CAPACITY", 100_000)?,
            auth: AuthConfig::from_env(env)?,
            keys,
            events: EventsConfig::from_env(env)?,
            service,
        })
    }

    /// Port 0 on loopback, threads at `threads_url` (no registry), tokens checked against `keys`: for tests.
    pub fn for_tests(database_url: impl Into<String>, threads_url: &str, keys: KeySource) -> Self {
        let mut service = ServiceConfig::for_tests("projects", None);
        service.static_peers = vec![(threads::SERVICE.to_string(), threads_url.to_string())];
        Self {
            service,
            database: DatabaseConfig::for_tests(database_url),
            tls: GrpcTls::none(),
            threads_deadline: Duration::from_secs(10),
            outbox_interval: Duration::from_millis(100),
            cache_ttl: Duration::from_secs(5),
            stale_if_error: Duration::from_secs(300),
            cache_capacity: 10_000,
            auth: AuthConfig { issuer: "agora-auth".into(), audience: "agora".into() },
            keys,
            events: EventsConfig::embedded_in(
                &std::env::temp_dir().join(format!("agora-test-events-{}", uuid::Uuid::new_v4().simple())),
            ),
        }
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database's directory could not be made, the database is unreachable or its migrations failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The server could not listen.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The event bus is unreachable, or the outbox table could not be made.
    #[error(transparent)]
    Events(#[from] EventsError),
}

/// Starts the service; it stops when `shutdown` trips.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Started, StartError> {
    let db = config.database.open(store::MIGRATIONS).await?;
    let gate = db.gate(config.database.outage);
    let store = store::Store::new(db.clone(), gate.clone());
    // One attempt may take the whole deadline: a vote waits its turn on a busy thread's row lock, and
    // cutting it short would only retry into the same queue. Failed connections are still retried at once.
    let policy =
        CallPolicy { deadline: config.threads_deadline, per_try: config.threads_deadline, ..CallPolicy::default() };
    let threads = Arc::new(Threads::new(Discovery::from_config(&config.service), policy, config.tls.clone()));
    let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let relay = Arc::new(Relay::new(store.clone(), threads.clone(), config.outbox_interval, backoff));
    let bus = EventBus::connect(&config.events, contracts::TOPICS).await?;
    let events = OutboxRelay::start(db.clone(), bus, Duration::from_secs(1), shutdown.clone()).await?;
    let verifier = Arc::new(Verifier::new(config.auth.clone(), config.keys.clone()));
    let pages = cache::PageCache::new(config.cache_ttl, config.stale_if_error, config.cache_capacity);
    let state =
        Arc::new(api::AppState { store: store.clone(), threads, relay: relay.clone(), events, verifier, pages });
    // The database's state is in `/readyz`'s body; its outage does not make the instance unready (SPEC §2).
    let app = service_router(
        api::router(state),
        RouterOptions { body_limit: 2 * 1024 * 1024, dependencies: vec![gate], ..Default::default() },
    );
    let started =
        kit::service::with_database(db, kit::service::start_http(&config.service, app, shutdown.clone())).await?;
    tokio::spawn(relay.run(shutdown));
    Ok(started)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_spec() {
        let config = Config::from_env(&Env::new([("DATA_DIR", "/var/lib/agora")])).unwrap();
        assert_eq!(config.service.listen.port(), DEFAULT_PORT);
        assert_eq!(config.database.url.expose(), "sqlite:///var/lib/agora/projects.db?mode=rwc");
        assert_eq!(config.threads_deadline, Duration::from_secs(3));
        assert!(!config.tls.is_client_tls());
    }

    #[test]
    fn bad_values_name_their_variable_and_passwords_stay_hidden() {
        for (name, value) in [("PROJECTS_THREADS_DEADLINE_MS", "soon"), ("DB_CONNECT_RETRIES", "-1")] {
            let err = Config::from_env(&Env::new([(name, value)])).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
        let env = Env::new([("DATABASE_URL", "postgres://projects:hunter2@db/projects")]);
        let shown = format!("{:?}", Config::from_env(&env).unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
