//! gRPC serving (tonic) with the same guarantees as HTTP: graceful shutdown,
//! registration, `grpc.health.v1`, server reflection, per-RPC metrics, the
//! request context carried across hops, and TLS (rustls) between services.
//! Also the client side: channels to discovered instances, and how a
//! [`tonic::Status`] counts for the resilient [`crate::peer::Peer`].

use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio_stream::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};
use tonic::Code;
use tonic_health::ServingStatus;

use crate::config::{ConfigError, Env, ServiceConfig, Source};
use crate::context::RequestContext;
use crate::http::{Readiness, ServeError};
use crate::peer::AttemptError;
use crate::registry_client::Protocol;
use crate::service::{spawn_registration, Started};
use crate::shutdown::Shutdown;

/// Tower layer for gRPC servers: continues the caller's trace and request id.
#[derive(Debug, Clone, Copy, Default)]
pub struct ContextLayer;

impl<S> tower::Layer<S> for ContextLayer {
    type Service = ContextService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ContextService { inner }
    }
}

/// The service made by [`ContextLayer`].
#[derive(Debug, Clone)]
pub struct ContextService<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for ContextService<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let ctx = RequestContext::from_headers(req.headers());
        let span = tracing::info_span!("grpc", request_id = ctx.request_id(), trace_id = ctx.trace_id(), path = %req.uri().path());
        let fut = self.inner.call(req);
        Box::pin(tracing::Instrument::instrument(ctx.scope(fut), span))
    }
}

/// Client interceptor: sends the current request id and `traceparent` to the peer.
pub fn propagate_context(mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    if let Some(ctx) = RequestContext::current() {
        if let Ok(v) = MetadataValue::try_from(ctx.request_id()) {
            req.metadata_mut().insert("x-request-id", v);
        }
        if let Ok(v) = MetadataValue::try_from(ctx.traceparent().as_bytes()) {
            req.metadata_mut().insert("traceparent", v);
        }
    }
    Ok(req)
}

/// Binds a listener for a gRPC server; returns it with its incoming stream adapter.
pub async fn bind(
    addr: std::net::SocketAddr,
) -> Result<(tokio_stream::wrappers::TcpListenerStream, std::net::SocketAddr), crate::http::ServeError> {
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|source| crate::http::ServeError::Bind { addr, source })?;
    let local = listener.local_addr()?;
    Ok((tokio_stream::wrappers::TcpListenerStream::new(listener), local))
}

// ---------------------------------------------------------------------------
// TLS

/// The name clients verify in the server's certificate when `GRPC_TLS_DOMAIN` is unset.
pub const DEFAULT_TLS_DOMAIN: &str = "localhost";

/// TLS for gRPC between services (rustls): the identity a server presents, and
/// the CA a client trusts. Either side may be off; with neither, gRPC runs in
/// plaintext, which is what `agora up` on one machine uses.
#[derive(Clone, Default)]
pub struct GrpcTls {
    /// The server's certificate chain and private key (PEM).
    identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The CA clients trust (PEM), and the name they verify.
    client: Option<(Vec<u8>, String)>,
}

impl std::fmt::Debug for GrpcTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcTls")
            .field("server_identity", &self.identity.as_ref().map(|_| "[set; key redacted]"))
            .field("client_domain", &self.client.as_ref().map(|(_, domain)| domain.as_str()))
            .finish()
    }
}

/// Where a PEM file was supposed to be read from, for error messages.
fn read_pem(variable: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(Path::new(path)).map_err(|e| ConfigError::Invalid {
        name: variable.to_string(),
        value: path.to_string(),
        reason: format!("cannot read the file: {e}"),
    })
}

fn require_pem(variable: &str, path: &str, pem: &[u8], marker: &str) -> Result<(), ConfigError> {
    let text = String::from_utf8_lossy(pem);
    if text.contains("-----BEGIN") && text.contains(marker) {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            name: variable.to_string(),
            value: path.to_string(),
            reason: format!("expected a PEM file containing a {}", marker.trim_matches('-')),
        })
    }
}

impl GrpcTls {
    /// Reads `GRPC_TLS_CERT_FILE` + `GRPC_TLS_KEY_FILE` (the server's identity,
    /// both or neither), `GRPC_TLS_CA_FILE` (the CA clients trust; when set,
    /// clients speak TLS) and `GRPC_TLS_DOMAIN` (the name clients verify,
    /// default `localhost`). Files are read and checked now, so a bad one stops
    /// the start with the variable's name instead of failing the first call.
    pub fn from_env<S: Source>(env: &Env<S>) -> Result<Self, ConfigError> {
        let cert = env.string("GRPC_TLS_CERT_FILE");
        let key = env.string("GRPC_TLS_KEY_FILE");
        let identity = match (cert, key) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::Missing {
                    name: "GRPC_TLS_KEY_FILE".into(),
                    hint: "GRPC_TLS_CERT_FILE is set, so the server also needs its private key (PEM file)".into(),
                })
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing {
                    name: "GRPC_TLS_CERT_FILE".into(),
                    hint: "GRPC_TLS_KEY_FILE is set, so the server also needs its certificate (PEM file)".into(),
                })
            }
            (Some(cert_path), Some(key_path)) => {
                let cert = read_pem("GRPC_TLS_CERT_FILE", &cert_path)?;
                require_pem("GRPC_TLS_CERT_FILE", &cert_path, &cert, "CERTIFICATE-----")?;
                let key = read_pem("GRPC_TLS_KEY_FILE", &key_path)?;
                require_pem("GRPC_TLS_KEY_FILE", &key_path, &key, "PRIVATE KEY-----")?;
                // rustls checks the pair (parsable, key matching the certificate) when building the acceptor.
                let config = ServerTlsConfig::new().identity(Identity::from_pem(&cert, &key));
                if let Err(e) = Server::builder().tls_config(config) {
                    return Err(ConfigError::Invalid {
                        name: "GRPC_TLS_KEY_FILE".into(),
                        value: key_path,
                        reason: format!("not usable with the certificate of GRPC_TLS_CERT_FILE={cert_path}: {e}"),
                    });
                }
                Some((cert, key))
            }
        };
        let domain = env.string_or("GRPC_TLS_DOMAIN", DEFAULT_TLS_DOMAIN).trim().to_string();
        let client = match env.string("GRPC_TLS_CA_FILE") {
            None => None,
            Some(ca_path) => {
                let ca = read_pem("GRPC_TLS_CA_FILE", &ca_path)?;
                require_pem("GRPC_TLS_CA_FILE", &ca_path, &ca, "CERTIFICATE-----")?;
                if let Err(e) = client_endpoint("https://localhost", &ca, &domain) {
                    return Err(ConfigError::Invalid {
                        name: "GRPC_TLS_CA_FILE".into(),
                        value: ca_path,
                        reason: e.to_string(),
                    });
                }
                Some((ca, domain))
            }
        };
        Ok(Self { identity, client })
    }

    /// Plaintext both ways.
    pub fn none() -> Self {
        Self::default()
    }

    /// A server presenting this certificate chain and private key (PEM); its
    /// clients stay plaintext unless [`GrpcTls::with_client`] is added.
    pub fn server(cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        Self { identity: Some((cert_pem.into(), key_pem.into())), client: None }
    }

    /// Clients that connect over TLS, trusting `ca_pem` and verifying `domain`.
    pub fn client(ca_pem: impl Into<Vec<u8>>, domain: impl Into<String>) -> Self {
        Self::none().with_client(ca_pem, domain)
    }

    /// Adds the client side to these settings (a service that both serves and calls).
    pub fn with_client(mut self, ca_pem: impl Into<Vec<u8>>, domain: impl Into<String>) -> Self {
        self.client = Some((ca_pem.into(), domain.into()));
        self
    }

    /// Whether servers present a certificate.
    pub fn is_server_tls(&self) -> bool {
        self.identity.is_some()
    }

    /// Whether clients connect with `https` and verify the server against the CA.
    pub fn is_client_tls(&self) -> bool {
        self.client.is_some()
    }
}

// ---------------------------------------------------------------------------
// Serving

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

// ---------------------------------------------------------------------------
// Metrics

/// Tower layer recording one counter and one latency sample per RPC, labelled
/// by method path and gRPC status, like `http_requests_total` for HTTP.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsLayer;

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MetricsService { inner }
    }
}

/// The service made by [`MetricsLayer`].
#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    inner: S,
}

impl<S, B, ResBody> tower::Service<http::Request<B>> for MetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let mut observation = Observation { method: Arc::from(req.uri().path()), start: Instant::now(), done: false };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let response = fut.await?;
            // A "trailers-only" answer (every error tonic returns) carries its status in the headers.
            if let Some(code) = grpc_status(response.headers()) {
                observation.finish(code);
            }
            Ok(response.map(|inner| ObservedBody { inner, observation }))
        })
    }
}

/// One RPC being measured; recorded once, when its status is known.
#[derive(Debug)]
struct Observation {
    method: Arc<str>,
    start: Instant,
    done: bool,
}

impl Observation {
    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let elapsed = self.start.elapsed();
        // Unknown paths are answered UNIMPLEMENTED; labelling them by path would let callers grow the label set.
        let method = if code == Code::Unimplemented { "unmatched" } else { &self.method };
        let status = code_name(code);
        let labels = [("method", method.to_string()), ("status", status.to_string())];
        metrics::counter!("grpc_requests_total", &labels).increment(1);
        metrics::histogram!("grpc_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
        if is_server_failure(code) {
            metrics::counter!("grpc_errors_total", &labels).increment(1);
        }
        tracing::debug!(method = %self.method, status, latency_ms = elapsed.as_secs_f64() * 1000.0, "rpc");
    }
}

impl Drop for Observation {
    fn drop(&mut self) {
        // The body went away before its trailers: the caller cancelled (or the connection died).
        self.finish(Code::Cancelled);
    }
}

/// A response body that records its RPC when the trailers (with the status) go out.
#[derive(Debug)]
pub struct ObservedBody<B> {
    inner: B,
    observation: Observation,
}

impl<B> HttpBody for ObservedBody<B>
where
    B: HttpBody + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.observation.finish(grpc_status(trailers).unwrap_or(Code::Unknown));
                }
            }
            Poll::Ready(Some(Err(_))) => this.observation.finish(Code::Internal),
            Poll::Ready(None) => this.observation.finish(Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    let raw = headers.get("grpc-status")?.to_str().ok()?;
    Some(Code::from_i32(raw.trim().parse().ok()?))
}

/// The status names of the gRPC specification, used as the `status` label.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The statuses that mean the server failed (HTTP's 5xx), counted in `grpc_errors_total`.
fn is_server_failure(code: Code) -> bool {
    matches!(code, Code::Unknown | Code::Internal | Code::Unavailable | Code::DataLoss | Code::DeadlineExceeded)
}

// ---------------------------------------------------------------------------
// Client side

/// Why a channel to a peer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// The instance's base URL is not `http://host:port` (or `https://`).
    #[error("invalid gRPC endpoint {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The client TLS settings were refused (a CA that does not parse, say).
    #[error("gRPC client TLS for {url}: {reason}")]
    Tls {
        /// The URL the channel was for.
        url: String,
        /// What rustls or tonic said.
        reason: String,
    },
}

fn client_endpoint(url: &str, ca_pem: &[u8], domain: &str) -> Result<Endpoint, GrpcError> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| GrpcError::InvalidUrl { url: url.to_string(), reason: e.to_string() })?;
    let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)).domain_name(domain);
    endpoint.tls_config(config).map_err(|e| GrpcError::Tls { url: url.to_string(), reason: e.to_string() })
}

/// A lazily connecting channel to one instance, whose registry `base_url` is
/// `http://host:port`: it becomes `https://` with the CA and domain of `tls`
/// when client TLS is configured. Cheap to clone; callers keep one per instance
/// (it multiplexes every call over one HTTP/2 connection and reconnects by itself).
pub fn channel(base_url: &str, tls: &GrpcTls) -> Result<tonic::transport::Channel, GrpcError> {
    let invalid = |reason: &str| GrpcError::InvalidUrl { url: base_url.to_string(), reason: reason.to_string() };
    let trimmed = base_url.trim().trim_end_matches('/');
    let (scheme, rest) = trimmed.split_once("://").ok_or_else(|| invalid("expected http://host:port"))?;
    if !matches!(scheme, "http" | "https") {
        return Err(invalid("expected an http:// or https:// URL"));
    }
    if rest.is_empty() || rest.contains('/') {
        return Err(invalid("expected http://host:port, without a path"));
    }
    let endpoint = match &tls.client {
        Some((ca, domain)) => client_endpoint(&format!("https://{rest}"), ca, domain)?,
        None if scheme == "https" => {
            return Err(invalid("https needs client TLS settings (GRPC_TLS_CA_FILE)"));
        }
        None => Endpoint::from_shared(format!("http://{rest}")).map_err(|e| invalid(&e.to_string()))?,
    };
    Ok(endpoint
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(false)
        .connect_lazy())
}

/// How a failed call counts for [`crate::peer::Peer`]: statuses that say the
/// instance could not do the work (unavailable, timed out, broken)
/// count against its breaker and may be retried elsewhere; statuses that are
/// the server's considered answer about the request (invalid, not found,
/// denied, …) go back to the caller as they are. `RESOURCE_EXHAUSTED` is such an
/// answer: a quota, a limit on what one request may use (tonic's decompressed
/// size), or one key's backlog (the threads service's votes on a hot thread),
/// not the instance failing; sent
/// elsewhere it would meet the same limit, and counted against the breaker one
/// busy key would cut every caller off.
pub fn attempt_error(status: tonic::Status) -> AttemptError<tonic::Status> {
    match status.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Internal
        | Code::Unknown
        | Code::Aborted
        // The call's stream or connection went away under it (an instance stopping, a reset):
        // the instance failed, not the request.
        | Code::Cancelled => AttemptError::Unhealthy(status),
        _ => AttemptError::Answered(status),
    }
}
