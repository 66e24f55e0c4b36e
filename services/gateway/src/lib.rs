//! The API gateway (SPEC §3.1): the single entry point. It serves the web UI
//! and the API docs itself and forwards everything else, by path prefix, to
//! the services it finds in the registry — with a circuit breaker per
//! upstream, per-route timeouts, a body limit and an access log line per request.

pub mod docs;
pub mod pages;
pub mod proxy;
pub mod routes;
pub mod upstreams;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use kit::backoff::Backoff;
use kit::circuit_breaker::BreakerConfig;
use kit::config::{ConfigError, Env, ServiceConfig, Source};
use kit::discovery::Discovery;
use kit::http::{service_router, Observe, RouterOptions};
use kit::service::Started;
use kit::Shutdown;

/// Default port of the gateway.
pub const DEFAULT_PORT: u16 = 8080;

/// The gateway's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Common service settings (`PORT`, `REGISTRY_URL` or `PEERS`, …).
    pub service: ServiceConfig,
    /// Largest request body forwarded (`GATEWAY_BODY_LIMIT_BYTES`).
    pub body_limit: usize,
    /// Breaker per upstream (`BREAKER_FAILURES`, `BREAKER_COOLDOWN_SECS`).
    pub breaker: BreakerConfig,
    /// How often instances and readiness are refreshed (`DISCOVERY_REFRESH_SECS`).
    pub refresh: Duration,
}

impl Config {
    /// Reads the environment.
    pub fn from_env<S: Source>(env: &Env<S>) -> Result<Self, ConfigError> {
        let service = ServiceConfig::from_env(env, "gateway", DEFAULT_PORT)?;
        let cooldown = env.secs_or("BREAKER_COOLDOWN_SECS", Duration::from_secs(1))?;
        Ok(Self {
            service,
            body_limit: env.parse_or("GATEWAY_BODY_LIMIT_BYTES", 10 * 1024 * 1024)?,
            breaker: BreakerConfig {
                failure_threshold: env.parse_or("BREAKER_FAILURES", 5u32)?.max(1),
                open_backoff: Backoff::new(cooldown, Duration::from_secs(30).max(cooldown)),
            },
            refresh: env.secs_or("DISCOVERY_REFRESH_SECS", Duration::from_secs(1))?,
        })
    }

    /// Port 0, fast refresh and a quick breaker: for tests.
    pub fn for_tests(registry: url::Url) -> Self {
        Self {
            service: ServiceConfig::for_tests("gateway", Some(registry)),
            body_limit: 64 * 1024,
            breaker: BreakerConfig {
                failure_threshold: 3,
                open_backoff: Backoff::new(Duration::from_millis(300), Duration::from_secs(2))
                    .without_jitter(),
            },
            refresh: Duration::from_millis(100),
        }
    }
}

/// Everything the handlers share.
pub struct Gateway {
    /// The configuration.
    pub config: Config,
    /// Every upstream service.
    pub upstreams: Arc<upstreams::Upstreams>,
    /// Pooled client for proxied requests.
    pub client: proxy::UpstreamClient,
    /// Client for the gateway's own small calls (docs, page data, probes).
    pub side: reqwest::Client,
    ready: AtomicBool,
}

impl Gateway {
    /// GETs JSON from one instance of `service` (for pages and docs); `None` if it cannot.
    pub async fn side_get(&self, service: &str, path: &str) -> Option<serde_json::Value> {
        let target = self.upstreams.get(service)?.pick(None)?;
        let mut headers = reqwest::header::HeaderMap::new();
        kit::context::inject_current(&mut headers);
        let resp = self
            .side
            .get(format!("http://{}{path}", target.address))
            .headers(headers)
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().await.ok()
    }
}

/// Starts the gateway; it stops when `shutdown` trips.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Started, kit::http::ServeError> {
    let side = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap_or_default();
    let upstreams = Arc::new(upstreams::Upstreams::new(
        &routes::services(),
        config.breaker,
    ));
    let gw = Arc::new(Gateway {
        config: config.clone(),
        upstreams: upstreams.clone(),
        client: proxy::client(),
        side: side.clone(),
        ready: AtomicBool::new(false),
    });

    let discovery = Discovery::from_config(&config.service);
    let refresher = gw.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            refresher
                .upstreams
                .refresh_once(&discovery, &refresher.side)
                .await;
            refresher.ready.store(true, Ordering::Relaxed);
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(refresher.config.refresh) => {}
            }
        }
    });

    let ready_gw = gw.clone();
    let readiness: kit::http::Readiness = Arc::new(move || {
        let ready = ready_gw.ready.load(Ordering::Relaxed);
        Box::pin(async move {
            if ready {
                Ok(())
            } else {
                Err("discovery has not answered yet".to_string())
            }
        })
    });
    let app = Router::new()
        .route("/", get(pages::home))
        .route("/jokes", get(pages::jokes))
        .route("/status", get(pages::status))
        .route("/api/status", get(pages::api_status))
        .route("/static/{file}", get(pages::asset))
        .route("/docs", get(docs::docs_root))
        .route("/docs/", get(docs::docs_file))
        .route("/docs/{*path}", get(docs::docs_file))
        .route("/openapi/{file}", get(docs::openapi))
        .fallback(proxy::proxy)
        .with_state(gw);
    let app = service_router(
        app,
        RouterOptions {
            body_limit: config.body_limit,
            readiness,
            observe: Observe { access_log: true },
            own_fallback: true,
        },
    );
    kit::service::start_http(&config.service, app, shutdown).await
}
