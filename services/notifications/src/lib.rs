//! The notifications service (issue 19): tells a user what happened to their things — an mp3
//! ready, a conversion failed — from the events the media converters publish.
//!
//! * [`subscriber`]: the durable subscription that stores one notification per event (and
//!   e-mails it, when `SMTP_URL` is set and the user gave an address), and the ephemeral
//!   listener that feeds this replica's live streams;
//! * [`api`]: the routes (list, mark read, the Server-Sent Events stream, the e-mail setting)
//!   and their OpenAPI description;
//! * [`domain`]: what an event says to its user, e-mail addresses, pages (no I/O);
//! * [`store`]: notifications and contacts (SQLite or PostgreSQL); [`mail`]: SMTP.

pub mod api;
pub mod domain;
pub mod mail;
pub mod store;
pub mod subscriber;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;

use kit::auth::{AuthConfig, KeySource, Verifier};
use kit::config::{ConfigError, Env, ServiceConfig, Source};
use kit::db::{DatabaseConfig, DbError, SecretUrl};
use kit::discovery::Discovery;
use kit::events::{EventBus, EventsConfig, EventsError};
use kit::http::{readiness_of, service_router, RouterOptions, ServeError};
use kit::service::Started;
use kit::Shutdown;

use crate::mail::{MailConfig, MailError, Mailer};
use crate::store::Store;
use crate::subscriber::Live;

/// Default port of `agora serve notifications`.
pub const DEFAULT_PORT: u16 = 8108;

/// The sender of e-mail when `SMTP_FROM` is not set.
pub const DEFAULT_FROM: &str = "Agora <agora@localhost>";

/// What the service reads from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Common service settings.
    pub service: ServiceConfig,
    /// The database (`DATABASE_URL`, default SQLite `notifications.db` under `DATA_DIR`).
    pub database: DatabaseConfig,
    /// Where the events come from (`EVENTS_URL`).
    pub events: EventsConfig,
    /// What tokens must say (`AUTH_ISSUER`, `AUTH_AUDIENCE`).
    pub auth: AuthConfig,
    /// Where the token keys come from (`AUTH_JWKS_URL`, else the auth service via discovery).
    pub keys: KeySource,
    /// E-mail (`SMTP_URL`, `SMTP_FROM`, `PUBLIC_URL`); `None`: no e-mail is sent.
    pub mail: Option<MailConfig>,
}

impl Config {
    /// Reads the environment.
    pub fn from_env<S: Source>(env: &Env<S>) -> Result<Self, ConfigError> {
        let service = ServiceConfig::from_env(env, "notifications", DEFAULT_PORT)?;
        let keys = match env.url_opt("AUTH_JWKS_URL", &["http", "https"])? {
            Some(url) => KeySource::Url(url.to_string()),
            None => KeySource::Discovery(Discovery::from_config(&service)),
        };
        let mail = match env.url_opt("SMTP_URL", &["smtp", "smtps"])? {
            Some(url) => Some(MailConfig {
                url: SecretUrl::new(url.to_string()),
                from: env.string("SMTP_FROM").filter(|s| !s.trim().is_empty()).unwrap_or_else(|| DEFAULT_FROM.into()),
                public_url: env
                    .url_opt("PUBLIC_URL", &["http", "https"])?
                    .map_or_else(|| "http://localhost:8080".into(), |u| u.to_string()),
            }),
            None => None,
        };
        Ok(Self {
            database: DatabaseConfig::from_env(env, "notifications")?,
            events: EventsConfig::from_env(env)?,
            auth: AuthConfig::from_env(env)?,
            keys,
            mail,
            service,
        })
    }

    /// Port 0 on loopback, the database at `database_url`, the embedded bus under `data_dir`,
    /// tokens checked against `keys`, no e-mail: for tests.
    pub fn for_tests(database_url: &str, data_dir: &std::path::Path, keys: KeySource) -> Self {
        Self {
            service: ServiceConfig::for_tests("notifications", None),
            database: DatabaseConfig::for_tests(database_url),
            events: EventsConfig::embedded_in(data_dir),
            auth: AuthConfig { issuer: "agora-auth".into(), audience: "agora".into() },
            keys,
            mail: None,
        }
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database is unreachable or its migrations failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The event bus is unreachable, or refused the subscription.
    #[error(transparent)]
    Events(#[from] EventsError),
    /// The e-mail settings cannot work.
    #[error(transparent)]
    Mail(#[from] MailError),
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Starts the service: the durable subscription, the live listener and the API; it stops when
/// `shutdown` trips.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Started, StartError> {
    let mailer = config.mail.as_ref().map(Mailer::new).transpose()?;
    let db = config.database.open(store::MIGRATIONS).await?;
    let store = Store::new(db.clone());
    let bus = match EventBus::connect(&config.events, contracts::TOPICS).await {
        Ok(bus) => bus,
        Err(err) => {
            db.close().await;
            return Err(err.into());
        }
    };
    // Consumers stop before the database closes: `with_database` closes it once serving ends,
    // and the subscription ends with the same shutdown.
    let background = shutdown.child_token();
    let subscribing = subscriber::subscribe(&bus, store.clone(), mailer.clone(), background.clone()).await;
    let live = Live::start(bus.clone(), background.clone()).await;
    let (live, _consuming) = match (live, subscribing) {
        (Ok(live), Ok(consuming)) => (live, consuming),
        (Err(err), _) | (_, Err(err)) => {
            background.cancel();
            db.close().await;
            return Err(err.into());
        }
    };
    tracing::info!(email = mailer.is_some(), subscription = subscriber::SUBSCRIPTION, "notifications starting");
    let verifier = Arc::new(Verifier::new(config.auth.clone(), config.keys.clone()));
    let state = Arc::new(api::AppState {
        store: store.clone(),
        live,
        verifier,
        email_enabled: mailer.is_some(),
        shutdown: shutdown.clone(),
    });
    let readiness = readiness_of(store, |store| async move { store.ping().await.map_err(|e| e.to_string()) });
    // `/readyz` lists the subscription and its lag, which the gateway's `/status` shows.
    let options = RouterOptions { body_limit: 64 * 1024, readiness, events: Some(bus), ..Default::default() };
    let app = service_router(api::router(state), options);
    Ok(kit::service::with_database(db, kit::service::start_http(&config.service, app, shutdown)).await?)
}
