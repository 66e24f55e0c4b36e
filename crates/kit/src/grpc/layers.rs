//! The tower layers every gRPC server runs: the caller's request context
//! continued, and one metric sample per RPC.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tonic::Code;

use crate::context::RequestContext;

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
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

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
