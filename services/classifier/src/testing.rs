//! How tests start the classifier (feature `testing`): the one `spawn` its own tests and the system
//! tests share, so that a change to how it starts is made once.

use kit::test_support::Running;
use kit::Shutdown;

use crate::Config;

/// Starts the classifier's web service with `config` and one worker beside it, sharing its queue;
/// both stop when the handle is dropped.
pub async fn spawn(config: Config) -> Running {
    let shutdown = Shutdown::new();
    let started = crate::start(config.clone(), shutdown.clone())
        .await
        .unwrap_or_else(|e| panic!("the classifier does not start: {e}"));
    tokio::spawn(crate::run_worker(config, shutdown.clone()));
    Running::new(started, shutdown)
}
