//! How tests start the notifications service (feature `testing`): shared by this crate's tests
//! and the system tests, so that a change to how it starts is made once.

use kit::test_support::Running;
use kit::Shutdown;

use crate::Config;

/// Starts the service with `config` on the test's runtime; it stops when the handle is dropped.
pub async fn spawn_notifications(config: Config) -> Running {
    let shutdown = Shutdown::new();
    let started = crate::start(config, shutdown.clone())
        .await
        .unwrap_or_else(|e| panic!("the notifications service does not start: {e}"));
    Running::new(started, shutdown)
}
