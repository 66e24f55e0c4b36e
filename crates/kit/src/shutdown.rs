//! One cancellation token per process, tripped by SIGTERM or Ctrl-C, that
//! every server, heartbeat and worker loop watches.

pub use tokio_util::sync::CancellationToken as Shutdown;

/// A token that is cancelled on the first SIGTERM or SIGINT.
pub fn on_signal() -> Shutdown {
    let token = Shutdown::new();
    let trip = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received; finishing in-flight work");
        trip.cancel();
    });
    token
}

/// Resolves on SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
