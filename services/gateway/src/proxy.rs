//! The reverse proxy: requests for an upstream route (see `routes`) pass the edge's checks
//! (`edge`), go to an instance of the route's upstream (`upstreams` picks it, `forward` sends
//! it with `upstream_client`), and come back with the instance's response.

pub mod edge;
pub mod forward;
pub mod http1;
pub mod routes;
pub mod upstream_client;
pub mod upstreams;

use std::time::Instant;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use kit::context::{RequestContext, REQUEST_ID};
use kit::http::AccessLine;
use kit::Problem;

pub use forward::Timer;

use crate::Gateway;

/// Serves one request for an upstream route, start to finish: request context, the edge's checks,
/// forwarding, then metrics, the `x-request-id` header and the access-log line. This is the gateway's
/// hot path, so it is one function rather than a stack of middleware layers (each of which would box
/// the request's future again and clone the router); what it does matches `kit::http::observe` around
/// the edge middleware, which still serve the gateway's own pages.
pub async fn serve(
    gw: &Gateway,
    client: &edge::Client,
    route: &'static routes::Route,
    mut req: Request,
    timer: Timer<'_>,
) -> Response {
    let start = Instant::now();
    let ctx = RequestContext::from_headers(req.headers());
    let method = req.method().clone();
    let uri = req.uri().clone();
    // The instance that answered, for the access line.
    let mut upstream = None;
    // Boxed at once: the wrappers below (context scope, panic catcher) and hyper's connection
    // task each move the future they hold, and this one is kilobytes; a box moves as a pointer.
    let handled = Box::pin(async {
        match edge::admit(gw, client, Some(route), &mut req).await {
            Ok(_) => forward::forward(gw, route, client, &ctx, req, &mut upstream, timer).await,
            Err(refused) => refused,
        }
    });
    let mut response = match std::panic::AssertUnwindSafe(ctx.clone().scope(handled)).catch_unwind().await {
        Ok(response) => response,
        Err(_) => {
            tracing::error!(request_id = ctx.request_id(), route = route.prefix, "request handler panicked");
            Problem::internal().into_response()
        }
    };
    let elapsed = start.elapsed();
    let status = response.status().as_u16();
    kit::http::record(&method, route.prefix, status, elapsed);
    response.headers_mut().insert(REQUEST_ID, ctx.request_id_header().clone());
    let upstream = upstream.as_ref().map_or("-", |instance| &*instance.address);
    let line = AccessLine { method: &method, path: uri.path(), route: route.prefix, upstream, status, elapsed };
    kit::access_log::write(&line, &ctx);
    response
}
