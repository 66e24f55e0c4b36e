//! The service registry (SPEC §3.2, seed 001): instances register, heartbeat
//! and deregister; peers and the gateway discover healthy instances. State is
//! in memory on purpose: it is rebuilt within one heartbeat period after a
//! restart, because every instance re-registers when its heartbeat is refused.

pub mod api;
pub mod domain;
#[cfg(feature = "testing")]
pub mod testing;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kit::config::{ConfigError, Env, ServiceConfig, Source};
use kit::http::{service_router, RouterOptions};
use kit::service::Started;
use kit::Shutdown;

/// The registry's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Common service settings (the registry never registers itself).
    pub service: ServiceConfig,
    /// How often expired instances are swept (`EVICTION_INTERVAL_SECS`).
    pub eviction_interval: Duration,
}

/// Default port of `agora serve registry`.
pub const DEFAULT_PORT: u16 = 8091;

impl Config {
    /// Reads the environment.
    pub fn from_env<S: Source>(env: &Env<S>) -> Result<Self, ConfigError> {
        let mut service = ServiceConfig::from_env(env, "registry", DEFAULT_PORT)?;
        service.registry_url = None;
        Ok(Self { service, eviction_interval: env.secs_or("EVICTION_INTERVAL_SECS", Duration::from_millis(500))? })
    }

    /// Port 0 on loopback, fast eviction: for tests.
    pub fn for_tests() -> Self {
        Self { service: ServiceConfig::for_tests("registry", None), eviction_interval: Duration::from_millis(100) }
    }
}

/// Starts the registry; it stops when `shutdown` trips.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Started, kit::http::ServeError> {
    // The index starts at the start time: a restarted registry never repeats an index a watcher holds.
    let first_index = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |since| since.as_millis() as u64);
    let table = api::Shared::new(domain::Table::new(first_index), shutdown.clone());
    tokio::spawn(evict_forever(table.clone(), config.eviction_interval, shutdown.clone()));
    let app = service_router(api::router(table), RouterOptions { body_limit: 16 * 1024, ..Default::default() });
    kit::service::start_http(&config.service, app, shutdown).await
}

async fn evict_forever(table: api::SharedTable, every: Duration, shutdown: Shutdown) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let evicted = api::write(&table).evict_expired(Instant::now());
        for gone in evicted {
            tracing::warn!(service = %gone.service, instance_id = %gone.instance_id, silent_ms = gone.last_heartbeat_ms_ago, "instance evicted: missed its heartbeats");
        }
        metrics::gauge!("registry_instances")
            .set(api::read(&table).services(Instant::now()).iter().map(|(_, n)| *n as f64).sum::<f64>());
    }
}
