//! The threads service (SPEC §3.5, seed 003): the problems, solutions and
//! comments of crowdfunding projects, replies to them, and per-voter votes
//! whose counts stay exact under any concurrency. Served over gRPC
//! (`agora.threads.v1.Threads`, with health, reflection and optional TLS) by
//! `agora serve threads`; the projects service is its caller, so that threads
//! scale independently of projects.

pub mod api;
pub mod domain;
pub mod error;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod votes;

use std::num::NonZeroUsize;

use kit::config::{ConfigError, Env, ServiceConfig, Source};
use kit::db::{DatabaseConfig, DbError};
use kit::grpc::{GrpcServices, GrpcTls};
use kit::http::ServeError;
use kit::service::Started;
use kit::Shutdown;

/// Default port of `agora serve threads`.
pub const DEFAULT_PORT: u16 = 8104;

/// The threads service's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Common service settings (`HOST`, `PORT`, `REGISTRY_URL`, …).
    pub service: ServiceConfig,
    /// The database (`DATABASE_URL`, default SQLite `threads.db` under `DATA_DIR`; `DB_CONNECT_RETRIES`, …).
    pub database: DatabaseConfig,
    /// gRPC TLS (`GRPC_TLS_CERT_FILE`, `GRPC_TLS_KEY_FILE`, `GRPC_TLS_CA_FILE`, `GRPC_TLS_DOMAIN`).
    pub tls: GrpcTls,
    /// How many votes may wait for one thread's next transaction before more are refused
    /// (`VOTE_QUEUE_LIMIT`, default [`votes::DEFAULT_QUEUE_LIMIT`]).
    pub vote_queue_limit: NonZeroUsize,
}

impl Config {
    /// Reads the environment; a bad value is an error naming its variable.
    pub fn from_env<S: Source>(env: &Env<S>) -> Result<Self, ConfigError> {
        Ok(Self {
            service: ServiceConfig::from_env(env, "threads", DEFAULT_PORT)?,
            database: DatabaseConfig::from_env(env, "threads")?,
            tls: GrpcTls::from_env(env)?,
            vote_queue_limit: env.parse_or("VOTE_QUEUE_LIMIT", votes::DEFAULT_QUEUE_LIMIT)?,
        })
    }

    /// Port 0 on loopback, no registry, plaintext gRPC: for tests, against `database_url`.
    pub fn for_tests(database_url: impl Into<String>) -> Self {
        Self {
            service: ServiceConfig::for_tests("threads", None),
            database: DatabaseConfig::for_tests(database_url),
            tls: GrpcTls::none(),
            vote_queue_limit: votes::DEFAULT_QUEUE_LIMIT,
        }
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database's directory could not be made, the database is unreachable or its migrations failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The server could not listen (or its TLS identity was refused).
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Connects to (and migrates) the database, then serves gRPC until `shutdown`.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Started, StartError> {
    let db = config.database.open(store::MIGRATIONS).await?;
    tracing::info!(engine = db.engine(), "threads store ready");
    let gate = db.gate(config.database.outage);
    let store = store::Store::new(db.clone(), gate);
    let api = api::ThreadsApi::new(store.clone(), config.vote_queue_limit);
    // While the database is down, gRPC health says NOT_SERVING (callers may go elsewhere). The ping
    // goes through the gate, so a health check never hangs on a partitioned database.
    let readiness =
        kit::http::readiness_of(store, |store| async move { store.ping().await.map_err(|e| e.to_string()) });
    let services = GrpcServices::new().with(api.into_server()).ready_when(readiness);
    let serving =
        kit::grpc::start_grpc(&config.service, services, &config.tls, agora_proto::FILE_DESCRIPTOR_SET, shutdown);
    Ok(kit::service::with_database(db, serving).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_spec() {
        let config = Config::from_env(&Env::new([("DATA_DIR", "/var/lib/agora")])).unwrap();
        assert_eq!(config.service.name, "threads");
        assert_eq!(config.service.listen.port(), DEFAULT_PORT);
        assert_eq!(config.database.url.expose(), "sqlite:///var/lib/agora/threads.db?mode=rwc");
        assert!(!config.tls.is_server_tls() && !config.tls.is_client_tls());
        assert_eq!(config.vote_queue_limit, votes::DEFAULT_QUEUE_LIMIT);
    }

    #[test]
    fn the_database_password_stays_out_of_the_debug_output() {
        let env = Env::new([("DATABASE_URL", "postgres://threads:hunter2@db/threads")]);
        let shown = format!("{:?}", Config::from_env(&env).unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://threads:***@db/threads"), "{shown}");
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("PORT", "eighty"),
            ("DB_CONNECT_RETRIES", "many"),
            ("DB_MAX_CONNECTIONS", "-1"),
            ("GRPC_TLS_CA_FILE", "/no/such/ca.pem"),
            ("GRPC_TLS_CERT_FILE", "/no/such/cert.pem"),
            ("VOTE_QUEUE_LIMIT", "0"),
            ("VOTE_QUEUE_LIMIT", "lots"),
        ] {
            let err = Config::from_env(&Env::new([(name, value)])).unwrap_err().to_string();
            assert!(err.contains(name) || name == "GRPC_TLS_CERT_FILE" && err.contains("GRPC_TLS_KEY_FILE"), "{err}");
        }
    }
}
