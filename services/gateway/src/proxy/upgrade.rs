//! WebSocket upgrades (RFC 6455 §4, over HTTP/1.1): on a route that allows them, a request asking
//! to switch to `websocket` is sent to the instance on a connection of its own (never a pooled
//! one: once switched, it is no longer HTTP), by hyper's client; when the instance answers
//! `101 Switching Protocols`, the client gets that answer and both connections are joined,
//! bytes copied each way until either side closes. Any other answer is passed on as it is.
//!
//! On a route without upgrades, the `Upgrade` header is ignored (RFC 9110 §7.8 lets a server)
//! and the request is served as a plain one, as it was before routes had upgrades; only a
//! WebSocket over HTTP/2 (an extended `CONNECT`, RFC 8441) is refused, on every route: it
//! cannot be served as a plain request, and the gateway does not tunnel it.
//!
//! A tunnel is not an HTTP exchange: it ends when either side closes, or when the gateway stops
//! (its server thread's tasks end with it).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode, Version};
use axum::response::IntoResponse;
use bytes::Bytes;
use http_body_util::Empty;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use kit::Problem;
use tokio::net::TcpStream;

use crate::proxy::http1::{is_hop_by_hop, tokens};
use crate::proxy::routes::Route;
use crate::proxy::upstream_client::SendError;

/// How long opening a connection to an instance may take (as for pooled ones).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A protocol switch the gateway does not make: a WebSocket over HTTP/2 (RFC 8441). Answered
/// with a `400` problem.
#[derive(Debug)]
pub struct Unsupported;

impl IntoResponse for Unsupported {
    fn into_response(self) -> axum::response::Response {
        Problem::bad_request(
            "WebSocket over HTTP/2 (extended CONNECT, RFC 8441) is not supported: connect over HTTP/1.1",
        )
        .into_response()
    }
}

/// What `req` asks for beyond a plain exchange: a WebSocket upgrade the route allows (the client
/// side of the upgrade, taken out of the request), nothing (`None`), or a switch the gateway
/// does not make.
pub fn requested(route: &Route, req: &mut Request) -> Result<Option<OnUpgrade>, Unsupported> {
    if req.method() == Method::CONNECT && req.extensions().get::<hyper::ext::Protocol>().is_some() {
        return Err(Unsupported);
    }
    if !route.upgrades || req.version() != Version::HTTP_11 || !is_websocket_upgrade(req.headers()) {
        return Ok(None);
    }
    // An upgrade request has no body; one that declares one is served as a plain request.
    let headers = req.headers();
    if headers.contains_key(header::TRANSFER_ENCODING)
        || headers.get(header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0")
    {
        return Ok(None);
    }
    Ok(req.extensions_mut().remove::<OnUpgrade>())
}

/// Whether `headers` ask to switch to WebSocket: `Connection: upgrade` and `Upgrade: websocket`.
fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let lists = |name| headers.get_all(name).into_iter().flat_map(|v| tokens(v.as_bytes()));
    lists(header::CONNECTION).any(|t| t.eq_ignore_ascii_case(b"upgrade"))
        && lists(header::UPGRADE).any(|t| t.eq_ignore_ascii_case(b"websocket"))
}

/// A WebSocket upgrade being forwarded: the request to send (any number of times, to one
/// instance after another) and the client's side of the upgrade.
pub struct Upgrade {
    client: Option<OnUpgrade>,
    target: http::uri::PathAndQuery,
    /// The end-to-end headers to send, without `Host`.
    headers: HeaderMap,
}

impl Upgrade {
    /// The upgrade of `client` to `target`, sending `headers` (end-to-end ones, as for any
    /// forwarded request) and the upgrade's own.
    pub fn new(client: OnUpgrade, target: http::uri::PathAndQuery, mut headers: HeaderMap) -> Self {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        Self { client: Some(client), target, headers }
    }

    /// Sends the upgrade request to the instance at `address` on a new connection; its response.
    pub async fn send(&self, address: &Arc<str>) -> Result<Response<Body>, SendError> {
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&**address)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(source)) => return Err(SendError::Connect { address: address.clone(), source }),
            Err(_) => return Err(SendError::ConnectTimeout(address.clone())),
        };
        let _ = tcp.set_nodelay(true);
        let failed = |err: hyper::Error| SendError::Io { address: address.clone(), source: std::io::Error::other(err) };
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tcp)).await.map_err(failed)?;
        tokio::spawn(async move {
            if let Err(err) = connection.with_upgrades().await {
                tracing::debug!(error = %err, "upstream upgrade connection ended with an error");
            }
        });
        let mut request = http::Request::new(Empty::new());
        *request.uri_mut() = self.target.clone().into();
        *request.headers_mut() = self.headers.clone();
        let host = HeaderValue::from_str(address).map_err(|_| SendError::Malformed {
            address: address.clone(),
            reason: "instance address is not a valid Host",
        })?;
        request.headers_mut().insert(header::HOST, host);
        let response = sender.send_request(request).await.map_err(failed)?;
        Ok(response.map(Body::new))
    }

    /// Passes on the instance's `response`: with `101 Switching Protocols`, joins the two
    /// connections once both have switched; either way, keeps only end-to-end headers (and, for
    /// a switch, the upgrade's).
    pub fn answer(&mut self, mut response: Response<Body>) -> Response<Body> {
        let switched = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        let upgrade = response.headers().get(header::UPGRADE).cloned();
        let headers = response.headers_mut();
        let hop_by_hop: Vec<_> = headers.keys().filter(|name| is_hop_by_hop(name.as_str())).cloned().collect();
        for name in hop_by_hop {
            headers.remove(name);
        }
        if !switched {
            return response;
        }
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(upgrade) = upgrade {
            headers.insert(header::UPGRADE, upgrade);
        }
        let (Some(client), Some(upstream)) = (self.client.take(), response.extensions_mut().remove::<OnUpgrade>())
        else {
            return Problem::internal().into_response();
        };
        tokio::spawn(tunnel(client, upstream));
        response
    }
}

/// Copies bytes both ways between the client and the instance until either side closes.
async fn tunnel(client: OnUpgrade, upstream: OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(err) => {
            tracing::debug!(error = %err, "an upgrade did not complete");
            return;
        }
    };
    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((up, down)) => tracing::debug!(up, down, "upgraded connection closed"),
        Err(err) => tracing::debug!(error = %err, "upgraded connection broke"),
    }
}
