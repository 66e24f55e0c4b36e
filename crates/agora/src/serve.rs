//! `agora serve <service>`: one service, configured from the environment,
//! stopped gracefully by SIGTERM or Ctrl-C.

use anyhow::Context;
use kit::config::Env;

/// Every service this binary can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServiceName {
    /// Service registry and discovery.
    Registry,
    /// API gateway and web UI.
    Gateway,
    /// Jokes API.
    Jokes,
    /// Accounts and tokens.
    Auth,
    /// Image classification API (enqueues jobs).
    Classifier,
    /// Image classification worker (runs the models on queued jobs).
    ClassifierWorker,
    /// Crowdfunding projects (REST).
    Projects,
    /// Threads and votes of crowdfunding projects (gRPC).
    Threads,
    /// Video uploads and their mp3s (REST).
    Media,
    /// Video-to-mp3 converter (runs ffmpeg on queued jobs).
    Converter,
    /// A user's notifications: listed, streamed live, e-mailed (REST, SSE).
    Notifications,
}

impl ServiceName {
    /// The name used in logs, the registry and `agora up`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registry => "registry",
            Self::Gateway => "gateway",
            Self::Jokes => "jokes",
            Self::Auth => "auth",
            Self::Classifier => "classifier",
            Self::ClassifierWorker => "classifier-worker",
            Self::Projects => "projects",
            Self::Threads => "threads",
            Self::Media => "media",
            Self::Converter => "converter",
            Self::Notifications => "notifications",
        }
    }
}

/// Threads of a service's async runtime: `ASYNC_THREADS`, 1 by default (a single-threaded runtime on
/// the main thread), whatever the service: none does CPU work on it. Raise it for a service that serves
/// much traffic from one process on a many-core machine; in `agora up` and on a cluster, replicas
/// scale a service instead.
pub fn async_threads<S: kit::config::Source>(env: &Env<S>) -> Result<usize, kit::config::ConfigError> {
    let threads: usize = env.parse_or("ASYNC_THREADS", 1)?;
    if !(1..=1024).contains(&threads) {
        return Err(kit::config::ConfigError::Invalid {
            name: "ASYNC_THREADS".into(),
            value: threads.to_string(),
            reason: "expected a number of threads between 1 and 1024".into(),
        });
    }
    Ok(threads)
}

/// Runs `service` until a shutdown signal.
pub async fn run(service: ServiceName) -> anyhow::Result<()> {
    kit::telemetry::init(service.as_str());
    kit::metrics::install();
    let env = Env::process();
    let shutdown = kit::shutdown::on_signal();
    let name = service.as_str();
    let started = match service {
        ServiceName::Registry => {
            registry::start(registry::Config::from_env(&env)?, shutdown).await.map_err(anyhow::Error::from)
        }
        ServiceName::Gateway => {
            gateway::start(gateway::Config::from_env(&env)?, shutdown).await.map_err(anyhow::Error::from)
        }
        ServiceName::Jokes => jokes::start(jokes::Config::from_env(&env)?, shutdown).await.map_err(anyhow::Error::from),
        ServiceName::Auth => auth::start(auth::Config::from_env(&env)?, shutdown).await.map_err(anyhow::Error::from),
        ServiceName::Classifier => {
            classifier::start(classifier::Config::from_env(&env, name)?, shutdown).await.map_err(anyhow::Error::from)
        }
        ServiceName::Projects => {
            projects::start(projects::Config::from_env(&env)?, shutdown).await.map_err(anyhow::Error::from)
        }
        ServiceName::Threads => {
            threads::start(threads::Config::from_env(&env)?, shutdown).await.map_err(anyhow::Error::from)
        }
        ServiceName::Media => {
            media::start(media::Config::from_env(&env, name)?, shutdown).await.map_err(anyhow::Error::from)
        }
        ServiceName::Notifications => {
            notifications::start(notifications::Config::from_env(&env)?, shutdown).await.map_err(anyhow::Error::from)
        }
        ServiceName::Converter => {
            let config = media::Config::from_env(&env, name)?;
            return media::run_converter(config, shutdown).await.with_context(|| format!("{name} failed"));
        }
        // A worker serves no HTTP: it runs until shutdown.
        ServiceName::ClassifierWorker => {
            let config = classifier::Config::from_env(&env, name)?;
            return classifier::run_worker(config, shutdown).await.with_context(|| format!("{name} failed"));
        }
    }
    .with_context(|| format!("{name} failed to start"))?;
    started.wait().await.with_context(|| format!("{} stopped with an error", service.as_str()))
}
