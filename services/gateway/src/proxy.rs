//! The reverse proxy: requests for an upstream route (see `routes`) pass the edge's checks
//! (`edge`), go to an instance of the route's upstream (`upstreams` picks it, `forward` sends
//! it with `upstream_client`), and come back with the instance's response.

pub mod edge;
pub mod forward;
pub mod http1;
pub mod idle;
pub mod routes;
pub mod upgrade;
pub mod upstream_client;
pub mod upstreams;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use kit::http::{AccessLog, Observation};
use kit::Problem;

use crate::Gateway;

/// How the gateway writes its access lines: batched, per server thread (see `access_log`).
pub const ACCESS_LOG: AccessLog = AccessLog::Write(crate::access_log::write);

/// Serves one request for an upstream route, start to finish: observed as `kit::http::observe`
/// observes the router's requests (context, metrics, `x-request-id`, access line), checked at
/// the edge, then forwarded. Called straight from the connection's service rather than through
/// the router: a request for an upstream route needs none of the router's layers.
pub async fn serve(gw: &Gateway, client: &edge::Client, route: &'static routes::Route, mut req: Request) -> Response {
    let observation = Observation::begin(&req);
    let ctx = observation.context();
    // The instance that answered, for the access line.
    let mut upstream = None;
    // Boxed at once: the wrappers below (context scope, panic catcher) and hyper's connection
    // task each move the future they hold, and this one is kilobytes; a box moves as a pointer.
    let handled = Box::pin(async {
        match edge::admit(gw, client, Some(route), &mut req).await {
            Ok(_) => forward::forward(gw, route, client, ctx, req, &mut upstream).await,
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
    let upstream = upstream.as_ref().map_or("-", |instance| &*instance.address);
    observation.end(&mut response, route.prefix, upstream, ACCESS_LOG);
    response
}
