//! The jokes service (SPEC §3.3, seed 000): a random joke from our own corpus.

pub mod api;
pub mod domain;
#[cfg(feature = "testing")]
pub mod testing;

use kit::config::{ConfigError, Env, ServiceConfig, Source};
use kit::http::{service_router, RouterOptions};
use kit::service::Started;
use kit::Shutdown;

/// Default port of `agora serve jokes`.
pub const DEFAULT_PORT: u16 = 8101;

/// The jokes service's configuration (only the common settings).
#[derive(Debug, Clone)]
pub struct Config {
    /// Common service settings.
    pub service: ServiceConfig,
}

impl Config {
    /// Reads the environment.
    pub fn from_env<S: Source>(env: &Env<S>) -> Result<Self, ConfigError> {
        Ok(Self { service: ServiceConfig::from_env(env, "jokes", DEFAULT_PORT)? })
    }
}

/// Starts the service; it stops when `shutdown` trips.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Started, kit::http::ServeError> {
    let corpus = domain::Corpus::bundled();
    tracing::info!(jokes = corpus.len(), categories = corpus.categories().count(), "corpus loaded");
    let app = service_router(api::router(), RouterOptions { body_limit: 16 * 1024, ..Default::default() });
    kit::service::start_http(&config.service, app, shutdown).await
}
