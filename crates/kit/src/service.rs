//! The life of a service process: bind, register, serve, and on shutdown
//! deregister first (so no new traffic arrives), then drain in-flight requests.

use std::net::SocketAddr;

use axum::Router;
use tokio::task::JoinHandle;

use crate::config::ServiceConfig;
use crate::http::{ServeError, Server};
use crate::registry_client::{Protocol, RegisterRequest, RegistryClient};
use crate::shutdown::Shutdown;

/// A running service: where it listens and the task that ends when it has stopped.
pub struct Started {
    /// The bound address (the real port when configured with port 0).
    pub addr: SocketAddr,
    /// Resolves once the server stopped and the instance deregistered.
    pub task: JoinHandle<Result<(), ServeError>>,
}

impl Started {
    /// `http://addr`, handy in tests.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits for the service to stop.
    pub async fn wait(self) -> Result<(), ServeError> {
        match self.task.await {
            Ok(result) => result,
            Err(join) => Err(ServeError::Io(std::io::Error::other(join.to_string()))),
        }
    }
}

/// What to register for an instance listening on `addr`.
pub fn registration(config: &ServiceConfig, addr: SocketAddr, protocol: Protocol) -> RegisterRequest {
    let address = config.advertise.clone().unwrap_or_else(|| addr.to_string());
    RegisterRequest {
        service: config.name.clone(),
        instance_id: Some(config.instance_id.clone()),
        address,
        protocol,
        version: env!("CARGO_PKG_VERSION").to_string(),
        ttl_secs: Some((config.heartbeat.as_secs() * 3).max(3)),
    }
}

/// Binds, registers (when a registry is configured) and serves `app` until `shutdown`.
pub async fn start_http(config: &ServiceConfig, app: Router, shutdown: Shutdown) -> Result<Started, ServeError> {
    let server = Server::bind(config.listen).await?;
    let addr = server.local_addr();
    let serving = shutdown.child_token();
    let heartbeat = spawn_registration(config, addr, Protocol::Http, shutdown.clone());
    let grace = config.shutdown_timeout;
    let name = config.name.clone();
    tracing::info!(service = %name, %addr, "listening");
    let task = tokio::spawn(async move {
        // Deregister before draining, so the gateway stops sending new requests.
        let stop = Shutdown::new();
        let trigger = stop.clone();
        let watcher = tokio::spawn(async move {
            serving.cancelled().await;
            if let Some(h) = heartbeat {
                let _ = h.await;
            }
            trigger.cancel();
        });
        let result = server.serve(app, stop, grace).await;
        watcher.abort();
        tracing::info!(service = %name, "stopped");
        result
    });
    Ok(Started { addr, task })
}

/// Starts the heartbeat loop if a registry is configured; it deregisters when `shutdown` trips.
pub fn spawn_registration(
    config: &ServiceConfig,
    addr: SocketAddr,
    protocol: Protocol,
    shutdown: Shutdown,
) -> Option<JoinHandle<()>> {
    let url = config.registry_url.as_ref()?;
    let client = RegistryClient::new(url);
    let reg = registration(config, addr, protocol);
    Some(tokio::spawn(client.keep_registered(reg, config.heartbeat, shutdown)))
}

/// Waits for `starting` (a server being started) and closes `db` once that
/// server has stopped and drained — not before, so in-flight requests keep
/// their connections — or at once if it could not start. Every service with a
/// database ends its `start` with this.
#[cfg(feature = "db")]
pub async fn with_database<F>(db: crate::db::Database, starting: F) -> Result<Started, ServeError>
where
    F: std::future::Future<Output = Result<Started, ServeError>>,
{
    let started = match starting.await {
        Ok(started) => started,
        Err(e) => {
            db.close().await;
            return Err(e);
        }
    };
    let serving = started.task;
    let task = tokio::spawn(async move {
        let result = match serving.await {
            Ok(result) => result,
            Err(join) => Err(ServeError::Io(std::io::Error::other(join.to_string()))),
        };
        db.close().await;
        result
    });
    Ok(Started { addr: started.addr, task })
}
