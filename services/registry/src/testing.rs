//! How tests start the registry (feature `testing`): the one `spawn` its own tests and the system
//! tests share, so that a change to how it starts is made once.

use kit::test_support::Running;
use kit::Shutdown;

use crate::Config;

/// Starts the registry with `config` on the test's runtime; it stops when the handle is dropped.
pub async fn spawn(config: Config) -> Running {
    let shutdown = Shutdown::new();
    let started =
        crate::start(config, shutdown.clone()).await.unwrap_or_else(|e| panic!("the registry does not start: {e}"));
    Running::new(started, shutdown)
}
