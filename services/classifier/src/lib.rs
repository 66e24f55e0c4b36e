//! Agora's image-classification service (SPEC §3.6): which objects are in a picture, by two
//! EfficientNet-Lite ImageNet models run in-process with tract (or ONNX Runtime, with the `ort` feature).
//!
//! The crate reads top-down like the other services:
//!
//! * [`images`]: what may be classified. Uploads are checked (format, bytes, pixels from the header
//!   before decoding) before anything is enqueued; samples are looked up by id in a fixed table.
//! * [`preprocess`]: an image → the `[1, 3, 224, 224]` tensor the models were converted with.
//! * [`model`]: the embedded models, each loaded once, when first needed ([`Models::lazy`]) or all at
//!   start ([`Models::load`]), and shared (`Models` is a cheap `Arc` clone); [`Models::classify`] returns
//!   the top 5 classes with softmax scores.
//! * [`engine`]: which library runs them (`CLASSIFIER_ENGINE`): tract, pure Rust, by default; ONNX Runtime,
//!   ~5× faster, loaded at run time from `ORT_DYLIB_PATH` in a build with the `ort` cargo feature.
//!
//! Inference is CPU-bound (~20 ms per image on one core in release): async code calls it in
//! `tokio::task::spawn_blocking`. The HTTP API (`api`) and the job worker on the kit's queue are
//! added beside these modules, with the configuration and `start` in this file.
//!
//! ```no_run
//! use classifier::{images, Models};
//!
//! let models = Models::load()?;
//! let upload = images::decode(images::sample("cat")?.bytes, &images::UploadLimits::default())?;
//! for prediction in models.classify("efficientnet-lite0", &upload.image)? {
//!     println!("{:5.1} % {}", prediction.score * 100.0, prediction.label);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod engine;
pub mod images;
pub mod model;
pub mod preprocess;

pub use engine::Engine;
pub use images::{DecodedImage, Format, ImageInfo, Sample, UploadError, UploadLimits, SAMPLES};
pub use model::{ModelError, ModelInfo, Models, Prediction, DEFAULT_MODEL};

pub mod api;
pub mod jobs;
#[cfg(feature = "testing")]
pub mod testing;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kit::config::{ConfigError, Env, ServiceConfig, Source};
use kit::http::{service_router, RouterOptions};
use kit::queue::Queue;
use kit::service::Started;
use kit::Shutdown;

/// Default port of `agora serve classifier`.
pub const DEFAULT_PORT: u16 = 8105;

/// What both the web service and the workers read from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Common service settings.
    pub service: ServiceConfig,
    /// Where the embedded queue keeps its SQLite file (`DATA_DIR`).
    pub data_dir: PathBuf,
    /// `QUEUE_URL` (`redis://…`), or the embedded queue when unset.
    pub queue_url: Option<String>,
    /// Queue tuning, with how a Redis outage is detected (`DB_OUTAGE_DETECT_MS`).
    pub queue: kit::queue::QueueOptions,
    /// Upload limits (`CLASSIFIER_MAX_UPLOAD_BYTES`).
    pub limits: UploadLimits,
    /// Attempts per job (`CLASSIFIER_MAX_ATTEMPTS`).
    pub max_attempts: u32,
    /// How long finished jobs are kept (`CLASSIFIER_RESULT_TTL_SECS`).
    pub retention: Duration,
    /// Jobs one worker process runs at once (`CLASSIFIER_WORKER_CONCURRENCY`).
    pub concurrency: usize,
    /// A worker's lease on a job (`CLASSIFIER_LEASE_SECS`): a job whose worker died goes to another after this.
    pub lease: Duration,
    /// What runs the models in a worker (`CLASSIFIER_ENGINE`, `ORT_DYLIB_PATH`, `CLASSIFIER_ORT_THREADS`).
    pub engine: Engine,
    /// Whether a worker loads every model before taking jobs (`CLASSIFIER_PRELOAD`, default off: each
    /// model is loaded by the first job that needs it).
    pub preload: bool,
}

impl Config {
    /// Reads the environment.
    pub fn from_env<S: Source>(env: &Env<S>, name: &str) -> Result<Self, ConfigError> {
        let limits = UploadLimits {
            max_bytes: env.parse_or("CLASSIFIER_MAX_UPLOAD_BYTES", images::DEFAULT_MAX_BYTES)?,
            ..UploadLimits::default()
        };
        Ok(Self {
            service: ServiceConfig::from_env(env, name, DEFAULT_PORT)?,
            data_dir: kit::config::data_dir(env),
            queue_url: env.url_opt("QUEUE_URL", &["redis", "rediss", "sqlite"])?.map(|u| u.to_string()),
            queue: kit::queue::QueueOptions::from_env(env)?,
            limits,
            max_attempts: env.parse_or("CLASSIFIER_MAX_ATTEMPTS", 3u32)?.max(1),
            retention: env.secs_or("CLASSIFIER_RESULT_TTL_SECS", Duration::from_secs(24 * 3600))?,
            concurrency: env.parse_or("CLASSIFIER_WORKER_CONCURRENCY", 1usize)?.max(1),
            lease: env.secs_or("CLASSIFIER_LEASE_SECS", Duration::from_secs(30))?.max(Duration::from_millis(300)),
            engine: Engine::from_env(env)?,
            preload: env.bool_or("CLASSIFIER_PRELOAD", false)?,
        })
    }
}

impl Config {
    /// Port 0, no registry, a queue under `data_dir` (or `queue_url`), short leases: for tests.
    pub fn for_tests(data_dir: &std::path::Path, queue_url: Option<String>) -> Self {
        Self {
            service: ServiceConfig::for_tests("classifier", None),
            data_dir: data_dir.to_path_buf(),
            queue_url,
            queue: kit::queue::QueueOptions::default(),
            limits: UploadLimits::default(),
            max_attempts: 3,
            retention: Duration::from_secs(3600),
            concurrency: 1,
            lease: Duration::from_secs(2),
            engine: Engine::Tract,
            preload: false,
        }
    }
}

/// Why the classifier could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The embedded models are unusable.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The task loading the models (`CLASSIFIER_PRELOAD`) panicked.
    #[error("loading the models failed")]
    Preload(#[source] tokio::task::JoinError),
    /// The queue is unreachable.
    #[error("job queue: {0}")]
    Queue(#[from] kit::queue::QueueError),
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] kit::http::ServeError),
}

/// Starts the web service: it checks requests and enqueues jobs; it never loads or runs a model.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Started, StartError> {
    // Only the model ids are used here: nothing classifies, so no model is ever loaded (tens of MB each).
    let models = Models::lazy(&Engine::Tract)?;
    let queue = Queue::connect_with(config.queue_url.as_deref(), &config.data_dir, config.queue.clone()).await?;
    queue.spawn_maintenance(config.retention, shutdown.clone());
    let (readiness, dependencies) = match queue.gate() {
        // Redis's state is in `/readyz`'s body; its outage does not make the instance unready (SPEC §2).
        Some(gate) => (kit::http::always_ready(), vec![gate]),
        None => (kit::http::readiness_of(queue.clone(), |queue| async move { queue.ping().await }), Vec::new()),
    };
    let state = Arc::new(api::AppState { models, queue, limits: config.limits, max_attempts: config.max_attempts });
    let body_limit = config.limits.max_bytes + 64 * 1024;
    let app =
        service_router(api::router(state), RouterOptions { body_limit, readiness, dependencies, ..Default::default() });
    Ok(kit::service::start_http(&config.service, app, shutdown).await?)
}

/// Runs a worker process until shutdown: takes classification jobs in FIFO
/// order, holds a renewed lease while the model runs, and finishes its current
/// job before stopping.
pub async fn run_worker(config: Config, shutdown: Shutdown) -> Result<(), StartError> {
    let models = Models::lazy(&config.engine)?;
    if config.preload {
        // Parsing and optimising a graph is CPU work: off the async threads, like inference.
        let loading = models.clone();
        match tokio::task::spawn_blocking(move || loading.load_all()).await {
            Ok(loaded) => loaded?,
            Err(join) => return Err(StartError::Preload(join)),
        }
    }
    let queue = Queue::connect_with(config.queue_url.as_deref(), &config.data_dir, config.queue.clone()).await?;
    queue.spawn_maintenance(config.retention, shutdown.clone());
    tracing::info!(
        backend = queue.backend(),
        concurrency = config.concurrency,
        engine = models.engine(),
        preloaded = ?models.loaded(),
        "classifier worker ready"
    );
    let limits = config.limits;
    let options =
        kit::queue::WorkerOptions { lease: config.lease, ..kit::queue::WorkerOptions::new(config.concurrency) };
    kit::queue::run_worker_with(queue, options, move |job| jobs::run(models.clone(), limits, job), shutdown).await;
    tracing::info!("classifier worker stopped");
    Ok(())
}
