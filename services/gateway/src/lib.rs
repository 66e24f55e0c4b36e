//! The API gateway (SPEC §3.1): the single entry point. It serves the web UI and the API docs
//! itself (`web`) and forwards everything else, by path prefix, to the services it finds in the
//! registry (`proxy`), with a circuit breaker per upstream, per-route timeouts, a body limit and
//! an access-log line per request.
//!
//! - client: whoever sends the gateway a request (a browser, a script), over one connection.
//! - upstream: a service the gateway forwards to, by its registry name (`jokes`, `auth`, …).
//! - instance: one running process of an upstream, at a `host:port` the registry gave.
//! - route: a path prefix, the upstream serving it, and its limits (timeouts, body limit,
//!   upgrades, who must be signed in).
//! - response: what the gateway sends the client: an instance's, or one the gateway makes.

pub mod access_log;
pub mod proxy;
pub mod server;
#[cfg(feature = "testing")]
pub mod testing;
pub mod web;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use kit::auth::{AuthConfig, KeySource, Verifier};
use kit::backoff::Backoff;
use kit::circuit_breaker::BreakerConfig;
use kit::config::{ConfigError, Env, ServiceConfig, Source};
use kit::discovery::Discovery;
use kit::http::{service_router, Observe, RouterOptions};
use kit::ratelimit::{Limiter, Quota};
use kit::service::Started;
use kit::Shutdown;

/// Default port of the gateway.
pub const DEFAULT_PORT: u16 = 8080;

/// The gateway's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Common service settings (`PORT`, `REGISTRY_URL` or `PEERS`, …).
    pub service: ServiceConfig,
    /// Largest request body forwarded on routes without their own (`GATEWAY_BODY_LIMIT_BYTES`).
    pub body_limit: usize,
    /// Largest upload forwarded on upload routes (`MEDIA_MAX_UPLOAD_BYTES`, default 1 GiB).
    pub upload_limit: usize,
    /// Breaker per upstream (`BREAKER_FAILURES`, `BREAKER_COOLDOWN_SECS`).
    pub breaker: BreakerConfig,
    /// How often instances and readiness are refreshed (`DISCOVERY_REFRESH_SECS`).
    pub refresh: Duration,
    /// The route table (the standard one outside tests).
    pub routes: &'static [proxy::routes::Route],
    /// Token bucket per anonymous client IP (`RATE_LIMIT_ANON_BURST`, `RATE_LIMIT_ANON_PER_SEC`).
    pub anon_quota: Quota,
    /// Token bucket per authenticated user (`RATE_LIMIT_USER_BURST`, `RATE_LIMIT_USER_PER_SEC`).
    pub user_quota: Quota,
    /// Where rate-limit buckets live: Redis (`REDIS_URL`, or `QUEUE_URL` when it is Redis) or this process.
    pub redis_url: Option<String>,
    /// Mark cookies `Secure` (`COOKIE_SECURE`; set it whenever the site is served over HTTPS).
    pub secure_cookies: bool,
    /// Serving threads, each with its own runtime and listener (`GATEWAY_THREADS`, default: one per core).
    pub threads: usize,
    /// What tokens must say (`AUTH_ISSUER`, `AUTH_AUDIENCE`).
    pub auth: AuthConfig,
    /// A fixed JWKS URL (`AUTH_JWKS_URL`) instead of the discovered auth service.
    pub jwks_url: Option<String>,
    /// A file for the access log (`ACCESS_LOG_FILE`) instead of the log (as nginx's `access_log`).
    pub access_log_file: Option<std::path::PathBuf>,
}

fn quota<S: Source>(env: &Env<S>, prefix: &str, burst: u32, per_second: f64) -> Result<Quota, ConfigError> {
    let burst = env.parse_or(&format!("{prefix}_BURST"), burst)?;
    let rate_var = format!("{prefix}_PER_SEC");
    let per_second: f64 = env.parse_or(&rate_var, per_second)?;
    if !(per_second > 0.0 && per_second.is_finite()) || burst == 0 {
        return Err(ConfigError::Invalid {
            name: rate_var,
            value: per_second.to_string(),
            reason: "rate and burst must be positive".into(),
        });
    }
    Ok(Quota { burst, per_second })
}

impl Config {
    /// Reads the environment.
    pub fn from_env<S: Source>(env: &Env<S>) -> Result<Self, ConfigError> {
        let service = ServiceConfig::from_env(env, "gateway", DEFAULT_PORT)?;
        let cooldown = env.secs_or("BREAKER_COOLDOWN_SECS", Duration::from_secs(1))?;
        Ok(Self {
            service,
            body_limit: env.parse_or("GATEWAY_BODY_LIMIT_BYTES", 10 * 1024 * 1024)?,
            // The media service's own limit is the file's; a multipart body adds its part headers.
            upload_limit: env.parse_or("MEDIA_MAX_UPLOAD_BYTES", 1usize << 30)?.saturating_add(64 * 1024),
            breaker: BreakerConfig {
                failure_threshold: env.parse_or("BREAKER_FAILURES", 5u32)?.max(1),
                open_backoff: Backoff::new(cooldown, Duration::from_secs(30).max(cooldown)),
            },
            refresh: env.secs_or("DISCOVERY_REFRESH_SECS", Duration::from_secs(1))?,
            routes: proxy::routes::ROUTES,
            anon_quota: quota(env, "RATE_LIMIT_ANON", 120, 20.0)?,
            user_quota: quota(env, "RATE_LIMIT_USER", 300, 50.0)?,
            redis_url: env
                .url_opt("REDIS_URL", &["redis", "rediss"])?
                .or(env.url_opt("QUEUE_URL", &[])?.filter(|u| u.scheme().starts_with("redis")))
                .map(|u| u.to_string()),
            secure_cookies: env.bool_or("COOKIE_SECURE", false)?,
            threads: env
                .parse_or("GATEWAY_THREADS", std::thread::available_parallelism().map_or(1, |n| n.get()))?
                .max(1),
            auth: AuthConfig::from_env(env)?,
            jwks_url: env.url_opt("AUTH_JWKS_URL", &["http", "https"])?.map(|u| u.to_string()),
            access_log_file: env.string("ACCESS_LOG_FILE").filter(|path| !path.is_empty()).map(Into::into),
        })
    }

    /// Port 0, fast refresh and a quick breaker: for tests.
    pub fn for_tests(registry: url::Url) -> Self {
        Self {
            service: ServiceConfig::for_tests("gateway", Some(registry)),
            body_limit: 64 * 1024,
            upload_limit: (1 << 30) + 64 * 1024,
            breaker: BreakerConfig {
                failure_threshold: 3,
                open_backoff: Backoff::new(Duration::from_millis(300), Duration::from_secs(2)).without_jitter(),
            },
            refresh: Duration::from_millis(100),
            routes: proxy::routes::ROUTES,
            anon_quota: Quota { burst: 10_000, per_second: 10_000.0 },
            user_quota: Quota { burst: 10_000, per_second: 10_000.0 },
            redis_url: None,
            secure_cookies: false,
            threads: 2,
            auth: AuthConfig::default(),
            jwks_url: None,
            access_log_file: None,
        }
    }
}

/// Everything the handlers share.
pub struct Gateway {
    /// The configuration.
    pub config: Config,
    /// Every upstream service.
    pub upstreams: Arc<proxy::upstreams::Upstreams>,
    /// Client for the gateway's own small calls (docs, page data, probes).
    pub side: reqwest::Client,
    /// Verifies bearer tokens and session cookies.
    pub verifier: Arc<Verifier>,
    /// Token buckets, shared by every connection of this gateway (and by replicas, in Redis).
    pub limiter: Limiter,
    ready: AtomicBool,
}

#[cfg(test)]
impl Gateway {
    /// A gateway that serves nothing and asks no registry, for unit tests of what it decides;
    /// tokens are verified against `keys`.
    pub(crate) fn unstarted(config: Config, keys: KeySource) -> Self {
        let upstreams =
            Arc::new(proxy::upstreams::Upstreams::new(&proxy::routes::services_in(config.routes), config.breaker));
        Self {
            verifier: Arc::new(Verifier::new(config.auth.clone(), keys)),
            config,
            upstreams,
            side: reqwest::Client::new(),
            limiter: Limiter::memory(),
            ready: AtomicBool::new(false),
        }
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The rate limiter's Redis could not be reached.
    #[error("cannot connect to Redis at {url} for rate limiting: {source}")]
    Redis {
        /// The URL, password removed.
        url: String,
        /// What went wrong.
        source: redis::RedisError,
    },
    /// The access-log file (`ACCESS_LOG_FILE`) could not be opened.
    #[error("cannot open the access log file {} (ACCESS_LOG_FILE): {source}", path.display())]
    AccessLog {
        /// The file.
        path: std::path::PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] kit::http::ServeError),
}

/// Every this many refresh periods the instances are looked up even though the registry's watch said
/// nothing changed: a safety net, and it keeps the heartbeat ages on `/status` fresh.
const RESYNC_ROUNDS: u32 = 10;

/// Starts the gateway; it stops when `shutdown` trips.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Started, StartError> {
    if let Some(path) = &config.access_log_file {
        access_log::to_file(path).map_err(|source| StartError::AccessLog { path: path.clone(), source })?;
    }
    let limiter = match &config.redis_url {
        Some(url) => Limiter::redis(url, "agora:ratelimit")
            .await
            .map_err(|source| StartError::Redis { url: kit::config::redact_url(url), source })?,
        None => Limiter::memory(),
    };
    let side = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap_or_default();
    let upstreams =
        Arc::new(proxy::upstreams::Upstreams::new(&proxy::routes::services_in(config.routes), config.breaker));
    let discovery = Discovery::from_config(&config.service);
    let keys = match &config.jwks_url {
        Some(url) => KeySource::Url(url.clone()),
        None => KeySource::Discovery(discovery.clone()),
    };
    let verifier = Arc::new(Verifier::new(config.auth.clone(), keys));
    let gw = Arc::new(Gateway {
        config: config.clone(),
        upstreams: upstreams.clone(),
        side: side.clone(),
        verifier,
        limiter,
        ready: AtomicBool::new(false),
    });

    // Instances are looked up when the registry's watch says they changed (at once, so a new instance
    // gets traffic without waiting for a period), and otherwise only every `RESYNC_ROUNDS` periods, or
    // every period while the watch is down; readiness is probed every period.
    let refresher = gw.clone();
    let stop = shutdown.clone();
    let changes = discovery.watch(shutdown.clone());
    tokio::spawn(async move {
        let mut lookup = true;
        let mut rounds = 0u32;
        loop {
            refresher.upstreams.refresh_once(&discovery, lookup, &refresher.side).await;
            refresher.ready.store(true, Ordering::Relaxed);
            rounds = rounds.wrapping_add(1);
            lookup = tokio::select! {
                () = stop.cancelled() => return,
                () = changes.changed() => true,
                () = tokio::time::sleep(refresher.config.refresh) => !changes.is_live() || rounds.is_multiple_of(RESYNC_ROUNDS),
            };
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
        .route("/", get(web::pages::home))
        .route("/jokes", get(web::pages::jokes))
        .route("/classify", get(web::pages::classify))
        .route("/media", get(web::media::page))
        .route("/crowdfunding", get(web::crowdfunding::list))
        .route("/crowdfunding/{project_id}", get(web::crowdfunding::project))
        .route("/status", get(web::pages::status))
        .route("/api/status", get(web::pages::api_status))
        .route("/static/{*file}", get(web::assets::serve))
        .route("/docs", get(web::docs::docs_root))
        .route("/docs/", get(web::docs::docs_file))
        .route("/docs/{*path}", get(web::docs::docs_file))
        .route("/openapi/{file}", get(web::docs::openapi))
        .route("/openapi.json", get(web::docs::merged))
        .route("/account/login", get(web::account::login_page).post(web::account::login))
        .route("/account/signup", get(web::account::signup_page).post(web::account::signup))
        .route("/account/logout", post(web::account::logout))
        .fallback(web::not_found)
        .layer(axum::middleware::from_fn_with_state(gw.clone(), proxy::edge::edge))
        .with_state(gw.clone());
    let app = service_router(
        app,
        RouterOptions {
            body_limit: config.body_limit,
            readiness,
            observe: Observe { access_log: proxy::ACCESS_LOG },
            own_fallback: true,
            ..RouterOptions::default()
        },
    );
    Ok(server::start(&config.service, gw, app, config.threads, shutdown).await?)
}
