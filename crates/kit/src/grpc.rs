//! gRPC serving (tonic) with the same guarantees as HTTP: graceful shutdown,
//! registration, `grpc.health.v1`, and the request context carried across hops.

use std::task::{Context, Poll};

use tonic::metadata::MetadataValue;

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
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let ctx = RequestContext::from_headers(req.headers());
        let span = tracing::info_span!("grpc", request_id = %ctx.request_id, trace_id = %ctx.trace_id, path = %req.uri().path());
        let fut = self.inner.call(req);
        Box::pin(tracing::Instrument::instrument(ctx.scope(fut), span))
    }
}

/// Client interceptor: sends the current request id and `traceparent` to the peer.
pub fn propagate_context(mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    if let Some(ctx) = RequestContext::current() {
        if let Ok(v) = MetadataValue::try_from(ctx.request_id.as_ref()) {
            req.metadata_mut().insert("x-request-id", v);
        }
        if let Ok(v) = MetadataValue::try_from(ctx.traceparent().as_str()) {
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
