//! The media service (issue 19, seed 001): a user uploads a video, a converter turns its
//! soundtrack into an mp3, and `GET /download?fid=…` returns it to that user only.
//!
//! Two roles share one database and one blob store:
//!
//! * the API ([`start`], `agora serve media`): uploads streamed to the blob store (checked for
//!   size and a video container's magic bytes as they arrive), listing, status, deletion,
//!   downloads; it never runs ffmpeg;
//! * the converter ([`run_converter`], `agora serve converter`): conversion jobs from the kit
//!   queue, ffprobe and ffmpeg as subprocesses (see [`converter`]).
//!
//! * [`domain`]: states, magic bytes, ffprobe's and ffmpeg's output, ranges, file names (no I/O);
//! * [`store`]: videos, blob reference counts, converter reports (SQLite or PostgreSQL);
//! * [`blobs`]: blob bytes, as files under `$DATA_DIR/media/blobs` or chunks in PostgreSQL;
//! * [`ffmpeg`]: the subprocesses; [`api`]: the routes and their OpenAPI description.

pub mod api;
pub mod blobs;
pub mod converter;
pub mod domain;
pub mod ffmpeg;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kit::auth::{AuthConfig, KeySource, Verifier};
use kit::config::{ConfigError, Env, ServiceConfig, Source};
use kit::db::{DatabaseConfig, DbError};
use kit::discovery::Discovery;
use kit::events::outbox::OutboxRelay;
use kit::events::{EventBus, EventsConfig, EventsError};
use kit::http::{readiness_of, service_router, RouterOptions, ServeError};
use kit::queue::{Queue, QueueError};
use kit::service::Started;
use kit::Shutdown;

use crate::blobs::BlobPlace;
use crate::store::{Store, StoreError};

/// Default port of `agora serve media`.
pub const DEFAULT_PORT: u16 = 8107;

/// The default upload limit: 1 GiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 1 << 30;

/// What both roles read from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Common service settings.
    pub service: ServiceConfig,
    /// The database (`DATABASE_URL`, default SQLite `media.db` under `DATA_DIR`), shared by both roles.
    pub database: DatabaseConfig,
    /// `DATA_DIR`: blob files and temp files go under `media/` in it.
    pub data_dir: PathBuf,
    /// Where blob bytes go (`MEDIA_BLOB_STORE=files|database`; default: the database when it
    /// is PostgreSQL, files otherwise).
    pub blobs: BlobPlace,
    /// `QUEUE_URL` (`redis://…`), or the embedded queue under `DATA_DIR`.
    pub queue_url: Option<String>,
    /// Queue tuning, with how a Redis outage is detected (`DB_OUTAGE_DETECT_MS`).
    pub queue: kit::queue::QueueOptions,
    /// Where "mp3 ready" and "conversion failed" go (`EVENTS_URL`).
    pub events: EventsConfig,
    /// What tokens must say (`AUTH_ISSUER`, `AUTH_AUDIENCE`).
    pub auth: AuthConfig,
    /// Where the token keys come from (`AUTH_JWKS_URL`, else the auth service via discovery).
    pub keys: KeySource,
    /// The largest upload (`MEDIA_MAX_UPLOAD_BYTES`, default 1 GiB).
    pub max_upload_bytes: u64,
    /// Attempts per conversion (`MEDIA_MAX_ATTEMPTS`, default 3).
    pub max_attempts: u32,
    /// A converter's lease on a job (`MEDIA_LEASE_SECS`, default 30): a job whose converter
    /// died goes to another after this.
    pub lease: Duration,
    /// A conversion's time limit (`MEDIA_JOB_TIMEOUT_SECS`, default 1800).
    pub job_timeout: Duration,
    /// Conversions at once per converter process (`MEDIA_CONVERTER_CONCURRENCY`, default 1).
    pub concurrency: usize,
    /// ffmpeg and ffprobe (`MEDIA_FFMPEG`, `MEDIA_FFPROBE`; default: on `PATH`).
    pub tools: ffmpeg::Tools,
    /// How long finished jobs stay in the queue (`MEDIA_JOB_RETENTION_SECS`, default a day).
    pub retention: Duration,
}

impl Config {
    /// Reads the environment; `name` is the role's (`media` or `converter`).
    pub fn from_env<S: Source>(env: &Env<S>, name: &str) -> Result<Self, ConfigError> {
        let service = ServiceConfig::from_env(env, name, DEFAULT_PORT)?;
        let keys = match env.url_opt("AUTH_JWKS_URL", &["http", "https"])? {
            Some(url) => KeySource::Url(url.to_string()),
            None => KeySource::Discovery(Discovery::from_config(&service)),
        };
        let data_dir = kit::config::data_dir(env);
        let database = DatabaseConfig::from_env(env, "media")?;
        let is_postgres = database.url.expose().starts_with("postgres");
        let blobs = match env.string("MEDIA_BLOB_STORE").as_deref().map(str::trim) {
            None | Some("") if is_postgres => BlobPlace::Database,
            None | Some("") | Some("files") => BlobPlace::Files(data_dir.join("media").join("blobs")),
            Some("database") => BlobPlace::Database,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "MEDIA_BLOB_STORE".into(),
                    value: other.to_string(),
                    reason: "must be files or database".into(),
                })
            }
        };
        let tools = ffmpeg::Tools {
            ffmpeg: env.string("MEDIA_FFMPEG").filter(|s| !s.is_empty()).unwrap_or_else(|| "ffmpeg".into()).into(),
            ffprobe: env.string("MEDIA_FFPROBE").filter(|s| !s.is_empty()).unwrap_or_else(|| "ffprobe".into()).into(),
        };
        Ok(Self {
            database,
            blobs,
            queue_url: env.url_opt("QUEUE_URL", &["redis", "rediss", "sqlite"])?.map(|u| u.to_string()),
            queue: kit::queue::QueueOptions::from_env(env)?,
            events: EventsConfig::from_env(env)?,
            auth: AuthConfig::from_env(env)?,
            keys,
            max_upload_bytes: env.parse_or("MEDIA_MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD_BYTES)?.max(1),
            max_attempts: env.parse_or("MEDIA_MAX_ATTEMPTS", 3u32)?.max(1),
            lease: env.secs_or("MEDIA_LEASE_SECS", Duration::from_secs(30))?.max(Duration::from_millis(300)),
            job_timeout: env.secs_or("MEDIA_JOB_TIMEOUT_SECS", Duration::from_secs(1800))?.max(Duration::from_secs(1)),
            concurrency: env.parse_or("MEDIA_CONVERTER_CONCURRENCY", 1usize)?.max(1),
            tools,
            retention: env.secs_or("MEDIA_JOB_RETENTION_SECS", Duration::from_secs(24 * 3600))?,
            data_dir,
            service,
        })
    }

    /// Port 0 on loopback, the database at `database_url`, everything else under `data_dir`
    /// (blobs as files, or in the database when it is PostgreSQL), tokens checked against
    /// `keys`, short leases: for tests.
    pub fn for_tests(database_url: &str, data_dir: &std::path::Path, keys: KeySource) -> Self {
        let blobs = if database_url.starts_with("postgres") {
            BlobPlace::Database
        } else {
            BlobPlace::Files(data_dir.join("media").join("blobs"))
        };
        Self {
            service: ServiceConfig::for_tests("media", None),
            database: DatabaseConfig::for_tests(database_url),
            data_dir: data_dir.to_path_buf(),
            blobs,
            queue_url: None,
            queue: kit::queue::QueueOptions::default(),
            events: EventsConfig::embedded_in(data_dir),
            auth: AuthConfig { issuer: "agora-auth".into(), audience: "agora".into() },
            keys,
            max_upload_bytes: 64 * 1024 * 1024,
            max_attempts: 3,
            lease: Duration::from_secs(2),
            job_timeout: Duration::from_secs(120),
            concurrency: 1,
            tools: ffmpeg::Tools::default(),
            retention: Duration::from_secs(3600),
        }
    }

    fn tmp_dir(&self) -> PathBuf {
        self.data_dir.join("media").join("tmp")
    }

    async fn open_store(&self) -> Result<(kit::db::Database, Store), StartError> {
        let db = self.database.open(store::MIGRATIONS).await?;
        let store = Store::new(db.clone(), self.blobs.clone(), self.tmp_dir())?;
        Ok((db, store))
    }
}

/// Why a role could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database is unreachable or its migrations failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The store cannot work with this configuration.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The queue is unreachable.
    #[error("job queue: {0}")]
    Queue(#[from] QueueError),
    /// The event bus is unreachable.
    #[error(transparent)]
    Events(#[from] EventsError),
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Starts the API; it stops when `shutdown` trips.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Started, StartError> {
    let (db, store) = config.open_store().await?;
    let queue = Queue::connect_with(config.queue_url.as_deref(), &config.data_dir, config.queue.clone()).await?;
    queue.spawn_maintenance(config.retention, shutdown.clone());
    let verifier = Arc::new(Verifier::new(config.auth.clone(), config.keys.clone()));
    let state = Arc::new(api::AppState {
        store: store.clone(),
        queue: queue.clone(),
        verifier,
        max_upload_bytes: config.max_upload_bytes,
        max_attempts: config.max_attempts,
    });
    let readiness = readiness_of((store, queue), |(store, queue)| async move {
        store.ping().await.map_err(|e| e.to_string())?;
        queue.ping().await
    });
    let app =
        service_router(api::router(state), RouterOptions { body_limit: 1024 * 1024, readiness, ..Default::default() });
    Ok(kit::service::with_database(db, kit::service::start_http(&config.service, app, shutdown)).await?)
}

/// Runs a converter process until `shutdown`: reports whether it can convert, converts while
/// it can, and stops its conversions (handing their jobs back) when stopped.
pub async fn run_converter(config: Config, shutdown: Shutdown) -> Result<(), StartError> {
    let (db, store) = config.open_store().await?;
    let queue = Queue::connect_with(config.queue_url.as_deref(), &config.data_dir, config.queue.clone()).await?;
    queue.spawn_maintenance(config.retention, shutdown.clone());
    let bus = EventBus::connect(&config.events, contracts::TOPICS).await?;
    let relay = OutboxRelay::start(db.clone(), bus, Duration::from_secs(1), shutdown.clone()).await?;
    let host = std::env::var("HOSTNAME").ok().filter(|h| !h.trim().is_empty()).unwrap_or_else(|| "local".into());
    let worker_id =
        format!("converter:{host}:{}:{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let options = converter::ConverterOptions {
        concurrency: config.concurrency,
        lease: config.lease,
        job_timeout: config.job_timeout,
        tools: config.tools.clone(),
        worker_id,
    };
    tracing::info!(backend = queue.backend(), concurrency = config.concurrency, "converter starting");
    converter::run(store, queue, relay, options, shutdown).await;
    db.close().await;
    Ok(())
}
