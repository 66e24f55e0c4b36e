//! How tests start the media service's roles (feature `testing`): shared by this crate's
//! tests and the system tests, so that a change to how they start is made once.

use kit::test_support::Running;
use kit::Shutdown;

use crate::Config;

/// Starts the API with `config` on the test's runtime; it stops when the handle is dropped.
pub async fn spawn(config: Config) -> Running {
    let shutdown = Shutdown::new();
    let started = crate::start(config, shutdown.clone())
        .await
        .unwrap_or_else(|e| panic!("the media service does not start: {e}"));
    Running::new(started, shutdown)
}

/// A converter running on the test's runtime.
pub struct RunningConverter {
    shutdown: Shutdown,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningConverter {
    /// Stops it gracefully and waits until it has (its conversions handed back).
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningConverter {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts a converter with `config`; it stops when the handle is dropped.
pub fn spawn_converter(config: Config) -> RunningConverter {
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = crate::run_converter(config, stop).await {
            panic!("the converter does not start: {e}");
        }
    });
    RunningConverter { shutdown, task: Some(task) }
}
