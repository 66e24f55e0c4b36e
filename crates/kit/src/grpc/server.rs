//! Serving: [`start_grpc`] runs the services given to it, plus health and
//! reflection, behind the [`super::layers`], until shutdown.

use std::convert::Infallible;
use std::time::Duration;

use tokio_stream::StreamExt;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;

use super::layers::{ContextLayer, MetricsLayer};
use super::tls::GrpcTls;
use crate::config::ServiceConfig;
use crate::http::{Readiness, ServeError};
use crate::registry_client::Protocol;
use crate::service::{spawn_registration, Started};
use crate::shutdown::Shutdown;

/// Binds a listener for a gRPC server; returns it with its incoming stream adapter.
pub async fn bind(
    addr: std::net::SocketAddr,
) -> Result<(tokio_stream::wrappers::TcpListenerStream, std::net::SocketAddr), ServeError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener.local_addr()?;
    Ok((tokio_stream::wrappers::TcpListenerStream::new(listener), local))
}

/// How often a server's readiness check runs (see [`GrpcServices::ready_when`]); also how long
/// one check may take.
const READINESS_INTERVAL: Duration = Duration::from_secs(2);

/// The gRPC services one server serves, with their names, so that health can
/// report each of them and reflection can list exactly them (a tonic
/// [`Routes`] alone does not say what it holds).
#[derive(Default, Clone)]
pub struct GrpcServices {
    routes: Routes,
    names: Vec<&'static str>,
    readiness: Option<Readiness>,
}

impl std::fmt::Debug for GrpcServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcServices")
            .field("names", &self.names)
            .field("readiness", &self.readiness.is_some())
            .finish_non_exhaustive()
    }
}

impl GrpcServices {
    /// No services yet (health and reflection are added by [`start_grpc`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a generated tonic server (`ThreadsServer::new(api)`).
    pub fn with<S>(mut self, service: S) -> Self
    where
        S: tower::Service<http::Request<tonic::body::Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.routes = self.routes.add_service(service);
        self.names.push(S::NAME);
        self
    }

    /// What the services depend on (their database): while `readiness` fails, the health service
    /// reports them (and the server, `""`) `NOT_SERVING`, and `SERVING` again once it passes. It
    /// runs every 2 s; without it, health says `SERVING` for as long as the server runs.
    pub fn ready_when(mut self, readiness: Readiness) -> Self {
        self.readiness = Some(readiness);
        self
    }

    /// The fully qualified names of the services added (`agora.threads.v1.Threads`).
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }
}

fn name_of<S: NamedService>(_: &S) -> &'static str {
    S::NAME
}

fn serve_error(what: &str, e: impl std::fmt::Display) -> ServeError {
    ServeError::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what}: {e}")))
}

/// Binds `config.listen`, registers with the registry as `grpc`, and serves
/// `services` plus `grpc.health.v1` and server reflection (v1 and v1alpha,
/// from the encoded descriptor set `reflection`), over TLS when `tls` has a
/// server identity, until `shutdown`. Every RPC continues the caller's request
/// context and is counted in `/metrics`-style Prometheus metrics
/// (`grpc_requests_total`, `grpc_request_duration_seconds`, `grpc_errors_total`
/// by method and status). On shutdown, health turns `NOT_SERVING`, the
/// instance deregisters, then in-flight RPCs get `config.shutdown_timeout` to finish.
pub async fn start_grpc(
    config: &ServiceConfig,
    services: GrpcServices,
    tls: &GrpcTls,
    reflection: &'static [u8],
    shutdown: Shutdown,
) -> Result<Started, ServeError> {
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    if let Some((cert, key)) = &tls.identity {
        let config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key)).timeout(Duration::from_secs(10));
        builder = builder.tls_config(config).map_err(|e| serve_error("gRPC TLS identity", e))?;
    }

    let (reporter, health) = tonic_health::server::health_reporter();
    for name in &services.names {
        reporter.set_service_status(name, ServingStatus::Serving).await;
    }
    let mut advertised: Vec<&str> = services.names.clone();
    advertised.extend([
        name_of(&health),
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]);
    let reflection_builder = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(reflection)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        for name in &advertised {
            b = b.with_service_name(*name);
        }
        b
    };
    let reflection_v1 = reflection_builder().build_v1().map_err(|e| serve_error("gRPC reflection descriptors", e))?;
    let reflection_v1alpha =
        reflection_builder().build_v1alpha().map_err(|e| serve_error("gRPC reflection descriptors", e))?;
    let names = services.names;
    let readiness_watch = services.readiness.map(|readiness| {
        tokio::spawn(report_readiness(readiness, reporter.clone(), names.clone(), shutdown.child_token()))
    });
    let routes = services.routes.add_service(health).add_service(reflection_v1).add_service(reflection_v1alpha);

    let (incoming, addr) = bind(config.listen).await?;
    // `serve_with_incoming` ignores the builder's TCP settings, so Nagle is turned off here.
    let incoming = incoming.map(|conn| {
        conn.inspect(|stream| {
            let _ = stream.set_nodelay(true);
        })
    });
    let serving = shutdown.child_token();
    let heartbeat = spawn_registration(config, addr, Protocol::Grpc, shutdown.clone());
    let grace = config.shutdown_timeout;
    let service = config.name.clone();
    let secure = tls.is_server_tls();
    tracing::info!(%service, %addr, tls = secure, services = ?names, "gRPC listening");
    let router = builder.layer(ContextLayer).layer(MetricsLayer).add_routes(routes);
    let task = tokio::spawn(async move {
        // Deregister before draining, so callers stop picking this instance.
        let stop = Shutdown::new();
        let trigger = stop.clone();
        let watcher = tokio::spawn(async move {
            serving.cancelled().await;
            reporter.set_service_status("", ServingStatus::NotServing).await;
            for name in &names {
                reporter.set_service_status(name, ServingStatus::NotServing).await;
            }
            if let Some(h) = heartbeat {
                let _ = h.await;
            }
            trigger.cancel();
        });
        let server = router.serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned());
        let deadline = async {
            stop.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        let result = tokio::select! {
            result = server => result.map_err(|e| ServeError::Io(std::io::Error::other(e))),
            () = deadline => {
                tracing::warn!(?grace, "in-flight RPCs did not finish within the shutdown deadline");
                Ok(())
            }
        };
        watcher.abort();
        if let Some(watch) = readiness_watch {
            watch.abort();
        }
        tracing::info!(%service, "gRPC stopped");
        result
    });
    Ok(Started { addr, task })
}

/// Runs `readiness` every [`READINESS_INTERVAL`] until `stop`, and turns the health of `names`
/// (and of the server) to `NOT_SERVING` when it starts failing, `SERVING` when it passes again.
async fn report_readiness(
    readiness: Readiness,
    reporter: tonic_health::server::HealthReporter,
    names: Vec<&'static str>,
    stop: Shutdown,
) {
    let mut serving = true;
    let mut tick = tokio::time::interval(READINESS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let outcome = match tokio::time::timeout(READINESS_INTERVAL, readiness()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("the readiness check took longer than {READINESS_INTERVAL:?}")),
        };
        if outcome.is_ok() == serving || stop.is_cancelled() {
            continue;
        }
        serving = outcome.is_ok();
        let status = match outcome {
            Ok(()) => {
                tracing::info!("ready again: gRPC health reports SERVING");
                ServingStatus::Serving
            }
            Err(why) => {
                tracing::warn!(%why, "not ready: gRPC health reports NOT_SERVING");
                ServingStatus::NotServing
            }
        };
        reporter.set_service_status("", status).await;
        for name in &names {
            reporter.set_service_status(name, status).await;
        }
    }
}
