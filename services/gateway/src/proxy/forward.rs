//! Forwarding a request to an instance of its route's upstream: refused at once when the
//! upstream's circuit is open or the body declares more than the limit; otherwise sent with the
//! route's deadline and the request's context, and sent once more, to another instance, when
//! it is idempotent, has no body and its connection failed (nothing else is safe to repeat).
//! A response's body then streams through as the instance sends it, within the route's idle
//! timeout (`idle`); a WebSocket upgrade goes its own way once the instance agrees (`upgrade`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::uri::PathAndQuery;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use kit::context::RequestContext;
use kit::Problem;

use crate::proxy::edge::Client;
use crate::proxy::http1::{is_hop_by_hop, parse_length, tokens};
use crate::proxy::idle;
use crate::proxy::routes::{BodyLimit, Route};
use crate::proxy::upgrade::{self, Upgrade};
use crate::proxy::upstream_client::{self, Framing, RequestHead, SendError};
use crate::proxy::upstreams::Instance;
use crate::Gateway;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// The target of a request whose URI has no path (the authority form): the instance's root.
static ROOT: PathAndQuery = PathAndQuery::from_static("/");

fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Forwards `req` (admitted by the edge) on `route`, from `client`; `responded_by` is set to the
/// instance whose response it is, if any.
pub async fn forward(
    gw: &Gateway,
    route: &'static Route,
    client: &Client,
    ctx: &RequestContext,
    mut req: Request,
    responded_by: &mut Option<Arc<Instance>>,
) -> Response {
    let client_upgrade = match upgrade::requested(route, &mut req) {
        Ok(client_upgrade) => client_upgrade,
        Err(unsupported) => return unsupported.into_response(),
    };
    let Some(upstream) = gw.upstreams.get(route.service) else {
        return Problem::not_found("no such upstream").into_response();
    };
    let body_limit = match route.body_limit {
        BodyLimit::Gateway => gw.config.body_limit,
        BodyLimit::Bytes(bytes) => bytes,
        BodyLimit::Uploads => gw.config.upload_limit,
    };
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| parse_length(v.as_bytes()));
    if declared.is_some_and(|n| n > body_limit as u64) {
        upstream.count(false);
        return too_large(body_limit);
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
    let (parts, body) = req.into_parts();
    let framing = if parts.headers.contains_key(header::TRANSFER_ENCODING) {
        Framing::Chunked
    } else {
        declared.map_or(Framing::None, Framing::Length)
    };
    let retryable = is_idempotent(&parts.method) && matches!(framing, Framing::None | Framing::Length(0));
    // One snapshot of the instances for this request (one read of the shared list).
    let instances = upstream.instances();
    // A second attempt goes to another instance: with only one, there is nothing to retry on.
    let attempts = if retryable && instances.len() > 1 { 2 } else { 1 };
    let head = request_head(&parts, client, ctx);
    let mut upgrade = client_upgrade.map(|client_upgrade| {
        let mut headers = http::HeaderMap::new();
        forwarded_headers(&parts, client, ctx, |name, value| {
            headers.append(name.clone(), value.clone());
        });
        Upgrade::new(client_upgrade, target(&parts).clone(), headers)
    });
    let body = if retryable { Body::empty() } else { Body::new(http_body_util::Limited::new(body, body_limit)) };
    let mut body = Some(body);
    let mut avoid: Option<String> = None;
    for attempt in 0..attempts {
        let Some(instance) = upstream.pick_from(&instances, avoid.as_deref()) else {
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
        let outgoing = body.take().unwrap_or_default();
        let sent = async {
            match &upgrade {
                // Boxed: only upgrades pay for its future's size.
                Some(upgrade) => Box::pin(upgrade.send(&instance.address)).await,
                None => upstream_client::send(&instance.address, &head, framing, outgoing).await,
            }
        };
        let sent = tokio::time::timeout(route.timeout, sent).await;
        match sent {
            Ok(Ok(response)) => {
                let status = response.status();
                match health_of(&response) {
                    Answer::Healthy => permit.success(),
                    Answer::Shedding => permit.neutral(),
                    Answer::Failing => permit.failure(),
                }
                upstream.count(status.is_server_error());
                *responded_by = Some(instance);
                return match &mut upgrade {
                    Some(upgrade) => upgrade.answer(response),
                    None => response.map(|body| idle::limit(body, route.idle_timeout)),
                };
            }
            // Only bodiless idempotent requests get here with attempts left: safe to send again.
            Ok(Err(err)) if attempt + 1 < attempts => {
                tracing::warn!(service = route.service, instance = %instance.id, error = %err, "upstream failed; retrying on another instance");
                upstream.eject(&instance, Duration::from_secs(2));
                avoid = Some(instance.id.clone());
                body = Some(Body::empty());
            }
            Ok(Err(err)) => {
                if is_body_too_large(&err) {
                    permit.neutral();
                    upstream.count(false);
                    return too_large(body_limit);
                }
                upstream.eject(&instance, Duration::from_secs(2));
                permit.failure();
                upstream.count(true);
                tracing::warn!(service = route.service, instance = %instance.id, error = %err, "upstream request failed");
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

/// What an instance's response says about the instance, for its upstream's circuit.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// It answered (any status but the ones below, 4xx and 500 included: those are about the request).
    Healthy,
    /// A 503 with `Retry-After`: a live instance shedding load while one of its own backends is
    /// down (or it is busy). It is passed on and not held against the circuit, which would hide the
    /// instance's quick answers (and stale pages) behind the gateway's own 503s.
    Shedding,
    /// 502, 504, or a 503 without `Retry-After`: the instance, or what is behind it, is failing.
    Failing,
}

fn health_of<B>(response: &http::Response<B>) -> Answer {
    match response.status() {
        StatusCode::SERVICE_UNAVAILABLE if response.headers().contains_key(header::RETRY_AFTER) => Answer::Shedding,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => Answer::Failing,
        _ => Answer::Healthy,
    }
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

fn is_body_too_large(err: &SendError) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// The head sent upstream: the client's method, origin-form target and the headers of
/// [`forwarded_headers`].
fn request_head(parts: &Parts, client: &Client, ctx: &RequestContext) -> RequestHead {
    let mut head = RequestHead::new(&parts.method, target(parts));
    forwarded_headers(parts, client, ctx, |name, value| head.header(name, value));
    head
}

/// The request's target in origin form: a client may send the absolute form (RFC 9112 §3.2.2).
fn target(parts: &Parts) -> &PathAndQuery {
    parts.uri.path_and_query().unwrap_or(&ROOT)
}

/// Each header sent upstream, to `put`: the client's end-to-end headers, plus where the request
/// came from (`X-Forwarded-For`) and its context (`x-request-id`, `traceparent`).
fn forwarded_headers(
    parts: &Parts,
    client: &Client,
    ctx: &RequestContext,
    mut put: impl FnMut(&HeaderName, &HeaderValue),
) {
    let headers = &parts.headers;
    // The request's context goes on in the gateway's own headers, not the client's.
    let context = ctx.propagated();
    // Headers named in `Connection` are for this hop only. Most requests have none, so the
    // names are looked for only when there is one (one pass over the headers, no hashing).
    let listed: Vec<HeaderName> = if headers.keys().any(|name| name == header::CONNECTION) {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| tokens(v.as_bytes()))
            .filter_map(|name| HeaderName::from_bytes(name).ok())
            .collect()
    } else {
        Vec::new()
    };
    let mut prior_forwarded_for = None;
    for (name, value) in headers {
        if *name == X_FORWARDED_FOR {
            prior_forwarded_for = prior_forwarded_for.or(Some(value));
            continue;
        }
        let set_here = matches!(
            name.as_str(),
            // `Host` and the framing are the client's to write; `Expect` is answered by this
            // server, which reads the body before sending it on.
            "host" | "content-length" | "expect" | "x-forwarded-host" | "x-forwarded-proto"
        ) || context.iter().any(|(propagated, _)| propagated == name);
        if !set_here && !is_hop_by_hop(name.as_str()) && !listed.contains(name) {
            put(name, value);
        }
    }
    let forwarded_for = match prior_forwarded_for.and_then(|v| v.to_str().ok()) {
        Some(prior) => {
            let ip = client.forwarded_for.to_str().unwrap_or("unknown");
            HeaderValue::from_str(&format!("{prior}, {ip}")).unwrap_or_else(|_| client.forwarded_for.clone())
        }
        None => client.forwarded_for.clone(),
    };
    put(&X_FORWARDED_FOR, &forwarded_for);
    for (name, value) in &context {
        put(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, retry_after: Option<&str>) -> http::Response<()> {
        let mut builder = http::Response::builder().status(status);
        if let Some(secs) = retry_after {
            builder = builder.header(header::RETRY_AFTER, secs);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn a_503_with_retry_after_is_load_shedding_and_not_held_against_the_circuit() {
        assert_eq!(health_of(&response(503, Some("1"))), Answer::Shedding);
        assert_eq!(health_of(&response(503, None)), Answer::Failing);
        assert_eq!(health_of(&response(502, Some("1"))), Answer::Failing, "only a 503 sheds load");
        assert_eq!(health_of(&response(504, None)), Answer::Failing);
        assert_eq!(health_of(&response(500, None)), Answer::Healthy, "an error about the request");
        assert_eq!(health_of(&response(200, None)), Answer::Healthy);
    }
}
