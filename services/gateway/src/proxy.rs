//! The reverse proxy: route by prefix, refuse fast when the upstream's circuit
//! is open, forward with a deadline and the request context, retry idempotent
//! requests once on another instance when a connection fails.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kit::context::{RequestContext, REQUEST_ID};
use kit::http::{AccessLine, Upstream as UpstreamLabel};
use kit::Problem;

use crate::upstreams::Target;
use crate::Gateway;
use crate::{edge, routes};

/// The pooled HTTP/1.1 client to upstreams (keep-alive, no Nagle).
pub type UpstreamClient = Client<HttpConnector, Body>;

thread_local! {
    /// One pool per serving thread: a pooled connection's driver task lives on
    /// the runtime that opened it, which is the thread that uses it.
    static CLIENT: UpstreamClient = client();
}

/// Builds the upstream client.
pub fn client() -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(512)
        .build(connector)
}

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(listed.iter()) {
        headers.remove(name);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The fallback handler: a path that is neither a gateway page nor an upstream route
/// (those never reach the router: see [`serve`]).
pub async fn not_found(req: Request) -> Response {
    let wants_html = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if wants_html {
        // A person in a browser gets a page; API clients get problem+json.
        return crate::pages::error_page(StatusCode::NOT_FOUND, "There is no page at this address.");
    }
    Problem::not_found(format!("no route for {} {}", req.method(), req.uri().path()))
        .titled("Not Found")
        .into_response()
}

/// Serves one request for an upstream route, start to finish: request context, the edge's checks,
/// forwarding, then metrics, the `x-request-id` header and the access-log line. This is the gateway's
/// hot path, so it is one function rather than a stack of middleware layers (each of which would box
/// the request's future again and clone the router); what it does matches `kit::http::observe` around
/// the edge middleware, which still serve the gateway's own pages.
pub async fn serve(gw: Arc<Gateway>, peer: SocketAddr, route: &'static routes::Route, mut req: Request) -> Response {
    let start = Instant::now();
    let ctx = RequestContext::from_headers(req.headers());
    let method = req.method().clone();
    let uri = req.uri().clone();
    let handled = async {
        match edge::admit(&gw, peer, Some(route), &mut req).await {
            // Boxed, so that this future stays small: hyper moves it whole into its connection task.
            Ok(_) => Box::pin(forward(&gw, route, peer, &ctx, req)).await,
            Err(refused) => refused,
        }
    };
    let mut response = match std::panic::AssertUnwindSafe(ctx.clone().scope(handled)).catch_unwind().await {
        Ok(response) => response,
        Err(_) => {
            tracing::error!(request_id = %ctx.request_id, route = route.prefix, "request handler panicked");
            Problem::internal().into_response()
        }
    };
    let elapsed = start.elapsed();
    let status = response.status().as_u16();
    kit::http::record(&method, route.prefix, status, elapsed);
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    let upstream = response.extensions().get::<UpstreamLabel>().map_or("-", |u| u.0.as_str());
    let line = AccessLine { method: &method, path: uri.path(), route: route.prefix, upstream, status, elapsed };
    kit::access_log::write(&line, &ctx);
    response
}

async fn forward(
    gw: &Gateway,
    route: &'static routes::Route,
    client: SocketAddr,
    ctx: &RequestContext,
    req: Request,
) -> Response {
    let Some(upstream) = gw.upstreams.get(route.service) else {
        return Problem::not_found("no such upstream").into_response();
    };
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > gw.config.body_limit as u64) {
        upstream.count(false);
        return too_large(gw.config.body_limit);
    }
    let permit = match upstream.breaker.try_acquire() {
        Ok(permit) => permit,
        Err(rejected) => {
            upstream.count(true);
            let secs = rejected.retry_in.as_secs().max(1).to_string();
            return Problem::unavailable(format!(
                "{} is failing and its circuit is open; try again shortly",
                route.service
            ))
            .titled("Service Unavailable")
            .header(header::RETRY_AFTER, &secs)
            .into_response();
        }
    };
    let (mut parts, body) = req.into_parts();
    let retryable = is_idempotent(&parts.method)
        && declared.unwrap_or(0) == 0
        && !parts.headers.contains_key(header::TRANSFER_ENCODING);
    prepare_headers(&mut parts.headers, client, ctx);
    let body =
        if retryable { Body::empty() } else { Body::new(http_body_util::Limited::new(body, gw.config.body_limit)) };
    let mut body = Some(body);
    let mut avoid: Option<String> = None;
    let attempts = if retryable { 2 } else { 1 };
    for attempt in 0..attempts {
        let Some(target) = upstream.pick(avoid.as_deref()) else {
            if attempt > 0 {
                // The only instance refused the connection: that is the upstream failing.
                break;
            }
            permit.neutral();
            upstream.count(true);
            return Problem::unavailable(format!("no instance of {} is available", route.service))
                .titled("Service Unavailable")
                .header(header::RETRY_AFTER, "1")
                .into_response();
        };
        let Some(outgoing) =
            build_request(&parts.method, &parts.uri, &parts.headers, &target, body.take().unwrap_or_default())
        else {
            permit.neutral();
            return Problem::bad_request("the request path cannot be forwarded").into_response();
        };
        match tokio::time::timeout(route.timeout, CLIENT.with(Clone::clone).request(outgoing)).await {
            Ok(Ok(resp)) => {
                let status = resp.status();
                let unhealthy = matches!(
                    status,
                    StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
                );
                if unhealthy {
                    permit.failure();
                } else {
                    permit.success();
                }
                upstream.count(status.is_server_error());
                return respond(resp, &target);
            }
            // Only bodiless idempotent requests get here with attempts left: safe to send again.
            Ok(Err(err)) if attempt + 1 < attempts => {
                tracing::warn!(service = route.service, instance = %target.id, error = %err, "upstream failed; retrying on another instance");
                upstream.eject(&target, Duration::from_secs(2));
                avoid = Some(target.id.clone());
                body = Some(Body::empty());
            }
            Ok(Err(err)) => {
                if is_body_too_large(&err) {
                    permit.neutral();
                    upstream.count(false);
                    return too_large(gw.config.body_limit);
                }
                upstream.eject(&target, Duration::from_secs(2));
                permit.failure();
                upstream.count(true);
                tracing::warn!(service = route.service, instance = %target.id, error = %err, "upstream request failed");
                return Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "bad-gateway",
                    format!("{} could not be reached", route.service),
                )
                .titled("Bad Gateway")
                .into_response();
            }
            Err(_) => {
                permit.failure();
                upstream.count(true);
                return Problem::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "gateway-timeout",
                    format!("{} did not answer within {} s", route.service, route.timeout.as_secs_f64()),
                )
                .titled("Gateway Timeout")
                .into_response();
            }
        }
    }
    // Every attempt failed to connect.
    permit.failure();
    upstream.count(true);
    Problem::new(StatusCode::BAD_GATEWAY, "bad-gateway", format!("{} could not be reached", route.service))
        .titled("Bad Gateway")
        .into_response()
}

fn too_large(limit: usize) -> Response {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
        format!("the request body exceeds the {limit}-byte limit"),
    )
    .titled("Payload Too Large")
    .into_response()
}

fn is_body_too_large(err: &hyper_util::client::legacy::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

fn prepare_headers(headers: &mut HeaderMap, client: SocketAddr, ctx: &RequestContext) {
    strip_hop_by_hop(headers);
    if let Some(host) = headers.remove(header::HOST) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {}", client.ip()),
        None => client.ip().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    headers.insert(HeaderName::from_static("x-forwarded-proto"), HeaderValue::from_static("http"));
    ctx.inject(headers);
}

fn build_request(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    target: &Target,
    body: Body,
) -> Option<axum::http::Request<Body>> {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let uri: Uri = format!("http://{}{}", target.address, path).parse().ok()?;
    let mut req = axum::http::Request::builder().method(method.clone()).uri(uri);
    if let Some(h) = req.headers_mut() {
        h.clone_from(headers);
    }
    req.body(body).ok()
}

fn respond(resp: hyper::Response<hyper::body::Incoming>, target: &Target) -> Response {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let mut response = Response::from_parts(parts, Body::new(body.map_err(axum::Error::new)));
    response.extensions_mut().insert(UpstreamLabel(target.address.clone()));
    response
}
