//! HTTP serving for every service: the standard router (health, readiness,
//! metrics, problem+json fallbacks, body limit), the observation middleware
//! (request context, metrics, access log) and a server with graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Instrument;

use crate::context::{RequestContext, REQUEST_ID};
use crate::problem::{self, Problem};
use crate::shutdown::Shutdown;

/// A readiness check: `Ok` when the service can do useful work, else why not.
pub type Readiness = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Readiness for services that depend on nothing.
pub fn always_ready() -> Readiness {
    Arc::new(|| Box::pin(async { Ok(()) }))
}

/// Readiness that asks `dependency` (a store, a queue) each time: `check` gets a clone of it.
pub fn readiness_of<T, F, Fut>(dependency: T, check: F) -> Readiness
where
    T: Clone + Send + Sync + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(move || Box::pin(check(dependency.clone())))
}

/// The label a handler can attach to its response when it has no route template.
#[derive(Debug, Clone, Copy)]
pub struct RouteLabel(pub &'static str);

/// How the observation middleware behaves.
#[derive(Debug, Clone, Copy)]
pub struct Observe {
    /// Where each request's access-log line goes.
    pub access_log: AccessLog,
}

/// Where a request's access-log line goes.
#[derive(Debug, Clone, Copy)]
pub enum AccessLog {
    /// The log, at debug level: a service's callers log the request already.
    Debug,
    /// A writer of the server's own, given the line and the request's context (the gateway's
    /// access log, at info level, written in batches).
    Write(fn(&AccessLine<'_>, &RequestContext)),
}

/// Options of [`service_router`].
#[derive(Clone)]
pub struct RouterOptions {
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// What `/readyz` checks: whether this instance can take traffic at all. A backend that is down
    /// belongs in `dependencies` instead, so that its outage does not take the instance out of rotation.
    pub readiness: Readiness,
    /// The gates of the backends the service uses (database, queue): their states are in `/readyz`'s
    /// body, which says `degraded` while one is down, still with a 200.
    pub dependencies: Vec<crate::outage::Gate>,
    /// The event bus this process consumes from, if any: `/readyz`'s body lists its durable
    /// subscriptions with their lag as last sampled (see [`crate::events::EventBus::consumed`]),
    /// which the gateway's `/status` shows.
    #[cfg(feature = "events")]
    pub events: Option<crate::events::EventBus>,
    /// Access-log behaviour.
    pub observe: Observe,
    /// Whether `app` brings its own fallback (the gateway's); otherwise unknown paths get a 404 problem.
    pub own_fallback: bool,
}

impl Default for RouterOptions {
    fn default() -> Self {
        Self {
            body_limit: 1024 * 1024,
            readiness: always_ready(),
            dependencies: Vec::new(),
            #[cfg(feature = "events")]
            events: None,
            observe: Observe { access_log: AccessLog::Debug },
            own_fallback: false,
        }
    }
}

/// Wraps a service's routes with everything every service serves the same way.
pub fn service_router(app: Router, options: RouterOptions) -> Router {
    let report = Arc::new(ReadinessReport::of(&options));
    let app = if options.own_fallback { app } else { app.fallback(problem::not_found) };
    app.route("/healthz", get(|| async { Json(serde_json::json!({ "status": "ok" })) }))
        .route(
            "/readyz",
            get(move || {
                let report = report.clone();
                async move { report.answer().await }
            }),
        )
        .route("/metrics", get(crate::metrics::render))
        .layer(DefaultBodyLimit::max(options.body_limit))
        .layer(middleware::from_fn(problem::problem_for_rejections))
        .layer(CatchPanicLayer::custom(problem::panic_response))
        .layer(middleware::from_fn_with_state(options.observe, observe))
}

/// What `/readyz` answers: 503 while the instance cannot take traffic; otherwise 200 with the
/// state of each backend (`degraded` while one is down) and, in a process that consumes events,
/// its durable subscriptions and their lag.
struct ReadinessReport {
    readiness: Readiness,
    dependencies: Vec<crate::outage::Gate>,
    #[cfg(feature = "events")]
    events: Option<crate::events::EventBus>,
}

impl ReadinessReport {
    fn of(options: &RouterOptions) -> Self {
        Self {
            readiness: options.readiness.clone(),
            dependencies: options.dependencies.clone(),
            #[cfg(feature = "events")]
            events: options.events.clone(),
        }
    }

    async fn answer(&self) -> Response {
        if let Err(why) = (self.readiness)().await {
            return Problem::unavailable(format!("not ready: {why}")).into_response();
        }
        let states: Vec<_> = self.dependencies.iter().map(crate::outage::Gate::health).collect();
        let status = if states.iter().all(|d| d.status == "up") { "ready" } else { "degraded" };
        #[allow(unused_mut)]
        let mut body = serde_json::json!({ "status": status, "dependencies": states });
        #[cfg(feature = "events")]
        if let Some(bus) = &self.events {
            body["subscriptions"] = serde_json::json!(bus.consumed());
        }
        (StatusCode::OK, Json(body)).into_response()
    }
}

/// Middleware: sets up the request context, then records metrics and the access log (see [`Observation`]).
pub async fn observe(State(opts): State<Observe>, req: Request, next: Next) -> Response {
    let observation = Observation::begin(&req);
    let ctx = observation.context().clone();
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let span = tracing::info_span!("request", request_id = ctx.request_id(), trace_id = ctx.trace_id());
    let mut response = ctx.scope(next.run(req)).instrument(span.clone()).await;
    let route = match &matched {
        Some(matched) => matched.as_str(),
        None => response.extensions().get::<RouteLabel>().map_or("unmatched", |l| l.0),
    };
    // A service's own handlers forward nowhere.
    span.in_scope(|| observation.end(&mut response, route, "-", opts.access_log));
    response
}

/// One request observed from its head to its response: the request context (taken from the
/// request's headers, or new), counted in the metrics and written as an access-log line when
/// it ends. [`observe`] does this around a router; a server that answers some requests without
/// one (the gateway's proxy) does the same with it.
#[derive(Debug)]
pub struct Observation {
    start: Instant,
    ctx: RequestContext,
    method: http::Method,
    uri: http::Uri,
}

impl Observation {
    /// Begins observing `req`, now.
    pub fn begin<B>(req: &http::Request<B>) -> Self {
        Self {
            start: Instant::now(),
            ctx: RequestContext::from_headers(req.headers()),
            method: req.method().clone(),
            uri: req.uri().clone(),
        }
    }

    /// The request's context: run its handling in [`RequestContext::scope`] so calls it makes carry it.
    pub fn context(&self) -> &RequestContext {
        &self.ctx
    }

    /// Ends with `response`: counts it in the metrics under `route` (a route template or prefix),
    /// gives it the `x-request-id` header, and writes its access line, naming the instance that
    /// answered (`upstream`, `host:port`, or `-`).
    pub fn end<B>(self, response: &mut http::Response<B>, route: &str, upstream: &str, access_log: AccessLog) {
        let elapsed = self.start.elapsed();
        let status = response.status().as_u16();
        record(&self.method, route, status, elapsed);
        response.headers_mut().insert(REQUEST_ID, self.ctx.request_id_header().clone());
        let line = AccessLine { method: &self.method, path: self.uri.path(), route, upstream, status, elapsed };
        match access_log {
            AccessLog::Debug => line.debug(),
            AccessLog::Write(write) => write(&line, &self.ctx),
        }
    }
}

/// One access-log line: what was asked, where it went, how it ended.
#[derive(Debug, Clone, Copy)]
pub struct AccessLine<'a> {
    /// Request method.
    pub method: &'a http::Method,
    /// Request path (no query: it may carry secrets).
    pub path: &'a str,
    /// Route template or prefix (the metrics label).
    pub route: &'a str,
    /// `host:port` of the instance that answered, or `-`.
    pub upstream: &'a str,
    /// Response status.
    pub status: u16,
    /// Time to the response head.
    pub elapsed: Duration,
}

impl AccessLine<'_> {
    /// Logs the line at info level (target `kit::http`), with the request's ids as fields.
    pub fn info(&self, ctx: &RequestContext) {
        let (method, path, route, upstream, status) =
            (self.method.as_str(), self.path, self.route, self.upstream, self.status);
        let latency_ms = self.elapsed.as_secs_f64() * 1000.0;
        let (request_id, trace_id) = (ctx.request_id(), ctx.trace_id());
        tracing::info!(request_id, trace_id, method, path, route, upstream, status, latency_ms, "access");
    }

    /// Logs the line at debug level (services, whose callers log it already).
    pub fn debug(&self) {
        let (method, path, route, status) = (self.method.as_str(), self.path, self.route, self.status);
        let latency_ms = self.elapsed.as_secs_f64() * 1000.0;
        tracing::debug!(method, path, route, status, latency_ms, "access");
    }
}

/// The metric handles of one (method, route, status): looked up in the recorder once per thread, then
/// reused, so a request costs two atomic updates instead of building label strings and hashing them.
#[derive(Clone)]
struct RequestMetrics {
    method: http::Method,
    status: u16,
    count: metrics::Counter,
    duration: metrics::Histogram,
    errors: Option<metrics::Counter>,
}

thread_local! {
    static REQUEST_METRICS: std::cell::RefCell<foldhash::HashMap<Box<str>, Vec<RequestMetrics>>> =
        std::cell::RefCell::default();
}

/// Counts one request in `http_requests_total` (and `http_errors_total` when it is a 5xx) and its latency
/// in `http_request_duration_seconds`, labelled by method, route template and status.
pub fn record(method: &http::Method, route: &str, status: u16, elapsed: Duration) {
    if !crate::metrics::installed() {
        // Handles taken now would stay no-ops after the recorder arrives: cache nothing yet.
        RequestMetrics::new(method, route, status).record(elapsed);
        return;
    }
    REQUEST_METRICS.with(|cache| {
        let mut cache = cache.borrow_mut();
        let handles = match cache.get_mut(route) {
            Some(handles) => handles,
            None => cache.entry(route.into()).or_default(),
        };
        match handles.iter().find(|h| h.status == status && h.method == *method) {
            Some(metrics) => metrics.record(elapsed),
            None => {
                let metrics = RequestMetrics::new(method, route, status);
                metrics.record(elapsed);
                handles.push(metrics);
            }
        }
    });
}

impl RequestMetrics {
    /// Looks the handles up in the recorder (label strings built and hashed: the slow part).
    fn new(method: &http::Method, route: &str, status: u16) -> Self {
        let labels =
            [("method", method.as_str().to_string()), ("route", route.to_string()), ("status", status.to_string())];
        Self {
            method: method.clone(),
            status,
            count: metrics::counter!("http_requests_total", &labels),
            duration: metrics::histogram!("http_request_duration_seconds", &labels),
            errors: (status >= 500).then(|| metrics::counter!("http_errors_total", &labels)),
        }
    }

    fn record(&self, elapsed: Duration) {
        self.count.increment(1);
        self.duration.record(elapsed.as_secs_f64());
        if let Some(errors) = &self.errors {
            errors.increment(1);
        }
    }
}

/// Errors starting or running a server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// A bound listener; binding first lets tests use port 0 and read the real port.
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr) -> Result<Self, ServeError> {
        let listener = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?;
        let addr = listener.local_addr()?;
        Ok(Self { listener, addr })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` trips, then lets in-flight requests finish for up to `grace`.
    pub async fn serve(self, app: Router, shutdown: Shutdown, grace: Duration) -> Result<(), ServeError> {
        let make = app.into_make_service_with_connect_info::<SocketAddr>();
        let server = axum::serve(self.listener, make).with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let deadline = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            result = server => Ok(result?),
            () = deadline => {
                tracing::warn!(?grace, "in-flight requests did not finish within the shutdown deadline");
                Ok(())
            }
        }
    }
}
