//! The auth service (SPEC §3.4, seed 001): users sign up and log in (HTTP
//! Basic or JSON) for an EdDSA-signed JWT, which any service verifies against
//! `GET /.well-known/jwks.json`, or asks `POST /validate` about. Passwords are
//! argon2id hashes; failed logins are throttled per username and per client
//! address, with the counts in the database so that every replica shares them.

pub mod api;
pub mod domain;
pub mod passwords;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tokens;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kit::config::{ConfigError, Env, ServiceConfig, Source};
use kit::db::{DatabaseConfig, DbError};
use kit::http::{service_router, RouterOptions, ServeError};
use kit::service::Started;
use kit::Shutdown;

use crate::domain::ThrottleConfig;
use crate::passwords::{HashError, Hasher, PasswordConfig};
use crate::store::Store;
use crate::tokens::{KeyConfig, KeyError, SigningKeySource, TokenConfig, Tokens};

/// Default port of `agora serve auth`.
pub const DEFAULT_PORT: u16 = 8102;

/// The auth service's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Common service settings.
    pub service: ServiceConfig,
    /// Where embedded data lives (`DATA_DIR`, default `./data`).
    pub data_dir: PathBuf,
    /// The database (`DATABASE_URL`, default SQLite `auth.db` under `DATA_DIR`; `DB_CONNECT_RETRIES`, …).
    pub database: DatabaseConfig,
    /// Signing and previous keys (`AUTH_SIGNING_KEY[_FILE]`, `AUTH_PREVIOUS_KEYS_FILES`).
    pub keys: KeyConfig,
    /// Issuer, audience and lifetime of tokens (`AUTH_ISSUER`, `AUTH_AUDIENCE`, `AUTH_TOKEN_TTL_SECS`).
    pub tokens: TokenConfig,
    /// Argon2id cost (`AUTH_ARGON2_MEMORY_KIB`, `AUTH_ARGON2_ITERATIONS`, `AUTH_MAX_CONCURRENT_HASHES`).
    pub passwords: PasswordConfig,
    /// Failed-login throttling (`AUTH_MAX_FAILURES_PER_USER`, `AUTH_MAX_FAILURES_PER_IP`, `AUTH_FAILURE_WINDOW_SECS`).
    pub throttle: ThrottleConfig,
}

fn at_least_one(name: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::Invalid {
            name: name.into(),
            value: "0".into(),
            reason: "expected at least 1".into(),
        });
    }
    Ok(())
}

impl Config {
    /// Reads the environment.
    pub fn from_env<S: Source>(env: &Env<S>) -> Result<Self, ConfigError> {
        let data_dir = kit::config::data_dir(env);
        let d = ThrottleConfig::default();
        let throttle = ThrottleConfig {
            max_failures_per_user: env.parse_or("AUTH_MAX_FAILURES_PER_USER", d.max_failures_per_user)?,
            max_failures_per_ip: env.parse_or("AUTH_MAX_FAILURES_PER_IP", d.max_failures_per_ip)?,
            window: Duration::from_secs(env.parse_or("AUTH_FAILURE_WINDOW_SECS", d.window.as_secs())?),
        };
        at_least_one("AUTH_MAX_FAILURES_PER_USER", throttle.max_failures_per_user.into())?;
        at_least_one("AUTH_MAX_FAILURES_PER_IP", throttle.max_failures_per_ip.into())?;
        at_least_one("AUTH_FAILURE_WINDOW_SECS", throttle.window.as_secs())?;
        Ok(Self {
            service: ServiceConfig::from_env(env, "auth", DEFAULT_PORT)?,
            keys: KeyConfig::from_env(env, &data_dir)?,
            data_dir,
            database: DatabaseConfig::from_env(env, "auth")?,
            tokens: TokenConfig::from_env(env)?,
            passwords: PasswordConfig::from_env(env)?,
            throttle,
        })
    }

    /// Port 0 on loopback, no registry, cheap argon2, a key generated in
    /// memory, default throttling: for tests, against `database_url`.
    pub fn for_tests(database_url: impl Into<String>) -> Self {
        Self {
            service: ServiceConfig::for_tests("auth", None),
            data_dir: std::env::temp_dir(),
            database: DatabaseConfig::for_tests(database_url),
            keys: KeyConfig { signing: SigningKeySource::Ephemeral, previous: Vec::new() },
            tokens: TokenConfig::default(),
            passwords: PasswordConfig::cheap(),
            throttle: ThrottleConfig::default(),
        }
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database's directory could not be made, the database is unreachable or its migrations failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The signing keys could not be loaded or generated.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The password hasher could not be set up.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// The server could not listen.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Starts the service; it stops when `shutdown` trips.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Started, StartError> {
    let keys = config.keys.clone();
    let token_config = config.tokens.clone();
    let tokens = tokio::task::spawn_blocking(move || Tokens::load(&keys, token_config))
        .await
        .map_err(|e| KeyError::Interrupted(e.to_string()))??;
    tracing::info!(kid = tokens.current_kid(), published = tokens.jwks().keys.len(), "signing keys loaded");
    let db = config.database.open(store::MIGRATIONS).await?;
    let gate = db.gate(config.database.outage);
    let store = Store::new(db.clone(), gate.clone());
    let hasher = Hasher::new(config.passwords).await?;
    let state = api::AppState {
        store: store.clone(),
        tokens: Arc::new(tokens),
        hasher: Arc::new(hasher),
        throttle: config.throttle,
    };
    // The database's state is in `/readyz`'s body; its outage does not make the instance unready (SPEC §2).
    let app = service_router(
        api::router(state),
        RouterOptions { body_limit: 16 * 1024, dependencies: vec![gate], ..Default::default() },
    );
    let started =
        kit::service::with_database(db, kit::service::start_http(&config.service, app, shutdown.clone())).await?;
    tokio::spawn(prune_forever(store, config.throttle.window, shutdown));
    Ok(started)
}

/// Deletes failures that have left the throttling window, once a minute.
async fn prune_forever(store: Store, window: Duration, shutdown: Shutdown) {
    let every = Duration::from_secs(60).min(window);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let cutoff = chrono::Utc::now().timestamp_millis().saturating_sub(window_ms);
        match store.prune_failures(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(pruned = n, "old login failures pruned"),
            Err(e) => tracing::warn!(error = %e, "pruning login failures failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_spec() {
        let env = Env::new([("DATA_DIR", "/var/lib/agora")]);
        let config = Config::from_env(&env).unwrap();
        assert_eq!(config.service.listen.port(), DEFAULT_PORT);
        assert_eq!(config.database.url.expose(), "sqlite:///var/lib/agora/auth.db?mode=rwc");
        assert!(matches!(
            &config.keys.signing,
            SigningKeySource::Generated(p) if p == std::path::Path::new("/var/lib/agora/auth-signing-key.pem")
        ));
        assert_eq!(config.tokens.issuer, "agora-auth");
        assert_eq!(config.tokens.audience, "agora");
        assert_eq!(config.tokens.ttl, Duration::from_secs(3600));
        assert_eq!(config.passwords.memory_kib, 19_456);
        assert_eq!(config.passwords.iterations, 2);
        assert_eq!(config.throttle, ThrottleConfig::default());
    }

    #[test]
    fn secrets_stay_out_of_the_debug_output() {
        let env = Env::new([
            ("AUTH_SIGNING_KEY", "-----BEGIN PRIVATE KEY-----\nTOPSECRET\n-----END PRIVATE KEY-----"),
            ("DATABASE_URL", "postgres://auth:hunter2@db/auth"),
        ]);
        let shown = format!("{:?}", Config::from_env(&env).unwrap());
        assert!(!shown.contains("TOPSECRET"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("AUTH_MAX_FAILURES_PER_USER", "0"),
            ("AUTH_FAILURE_WINDOW_SECS", "soon"),
            ("AUTH_TOKEN_TTL_SECS", "0"),
            ("AUTH_ARGON2_ITERATIONS", "0"),
        ] {
            let err = Config::from_env(&Env::new([(name, value)])).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
        let both = Env::new([("AUTH_SIGNING_KEY", "x"), ("AUTH_SIGNING_KEY_FILE", "/k.pem")]);
        let err = Config::from_env(&both).unwrap_err().to_string();
        assert!(err.contains("AUTH_SIGNING_KEY_FILE"), "{err}");
    }
}
