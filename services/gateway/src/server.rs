//! The gateway's server: every client connection is served by hyper (HTTP/1.1, and HTTP/2 with
//! prior knowledge: `h2c`; HTTP/1.1 connections may be upgraded, see `proxy::upgrade`) through one
//! service, [`Front`]: requests for an upstream route go to
//! [`proxy::serve`], everything else (pages, docs, health) to the router with the kit's
//! standard layers.
//!
//! Thread-per-core: a proxy spends its time handing requests between sockets, and on a
//! multi-threaded runtime every hand-off can wake another thread. So each OS thread runs its own
//! single-threaded runtime with its own listener (`SO_REUSEPORT`: the kernel spreads
//! connections) and its own upstream connection pool, and a request is served start to finish on
//! one thread. Shared state (routes, breakers, limiter, instance lists) is the same
//! `Arc<Gateway>` for all threads.

mod stopping;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::Response;
use axum::Router;
use futures::future::BoxFuture;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use kit::http::ServeError;
use kit::registry_client::Protocol;
use kit::service::Started;
use kit::Shutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::proxy::edge::Client;
use crate::proxy::{self, routes, upstream_client};
use crate::{access_log, Gateway};

/// How long an access-log line may wait in its thread's buffer.
const ACCESS_LOG_FLUSH: Duration = Duration::from_millis(100);
/// How often a thread closes its upstream connections that have been idle too long.
const POOL_SWEEP: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's head (also how long an idle keep-alive
/// connection is kept): a slow or silent client cannot hold a connection forever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// One connection's service: the proxy for upstream routes, the router for the rest.
///
/// A request's future holds this connection's own reference (`Arc<Connection>`), not one to the
/// gateway: both server threads would otherwise bump the gateway's shared reference count on
/// every request, and that counter's cache line would bounce between the cores.
#[derive(Clone)]
struct Front(Arc<Connection>);

/// What the requests of one connection share.
struct Connection {
    gw: Arc<Gateway>,
    router: Router,
    /// Also handed to the gateway's pages as `ConnectInfo<Arc<Client>>`.
    client: Arc<Client>,
    /// Whether the client has sent part of a request's head (see `stopping`).
    reading: stopping::Reading,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let conn = &self.0;
        conn.reading.head_read(req.version());
        let mut req = req.map(Body::new);
        if let Some(route) = routes::find_in(conn.gw.config.routes, req.uri().path()) {
            let conn = conn.clone();
            return Box::pin(async move { Ok(proxy::serve(&conn.gw, &conn.client, route, req).await) });
        }
        req.extensions_mut().insert(ConnectInfo(conn.client.clone()));
        Box::pin(conn.router.clone().oneshot(req))
    }
}

/// Accepts connections on `listener` and serves each until `stop` trips, then waits for the open
/// connections to finish their requests.
async fn accept_loop(listener: TcpListener, gw: Arc<Gateway>, router: Router, stop: Shutdown) {
    let mut http = auto::Builder::new(TokioExecutor::new());
    // Heads and bodies are small: copied into one buffer and written with one `write` (hyper's
    // default queues them for `writev`, which costs more per response here).
    http.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).writev(false);
    // Extended CONNECT is enabled so that a WebSocket over HTTP/2 reaches the proxy and is
    // refused with a problem (see `proxy::upgrade`), not reset as a malformed stream.
    http.http2().timer(TokioTimer::new()).enable_connect_protocol();
    let http = Arc::new(http);
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    wait_after_accept_error(err).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        // Responses are written whole: no reason to let Nagle delay them.
        let _ = tcp.set_nodelay(true);
        let conn = Arc::new(Connection {
            gw: gw.clone(),
            router: router.clone(),
            client: Arc::new(Client::new(addr)),
            reading: stopping::Reading::default(),
        });
        connections.spawn(stopping::serve(tcp, conn, http.clone(), stop.clone()));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// After a failed `accept`: a connection that died in the backlog is nothing; anything else
/// (out of file descriptors, say) is logged and retried after a pause instead of spinning.
async fn wait_after_accept_error(err: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if !matches!(err.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        tracing::error!(error = %err, "accepting a connection failed; retrying in 1 s");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}
/// Binds `threads` listeners on one address and serves the gateway on each from its own thread
/// (`app`: its own pages; upstream routes are proxied without going through it).
pub async fn start(
    config: &kit::config::ServiceConfig,
    gw: Arc<Gateway>,
    app: Router,
    threads: usize,
    shutdown: Shutdown,
) -> Result<Started, ServeError> {
    let bind_err = |source| ServeError::Bind { addr: config.listen, source };
    let first = reuseport_listener(config.listen).map_err(bind_err)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..threads.max(1) {
        listeners.push(reuseport_listener(addr).map_err(|source| ServeError::Bind { addr, source })?);
    }
    let heartbeat = kit::service::spawn_registration(config, addr, Protocol::Http, shutdown.clone());
    let serving = Shutdown::new();
    let grace = config.shutdown_timeout;
    let mut handles = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        // A token per thread: its connections wait on it, and a token's waiters share a lock.
        let (gw, router, stop) = (gw.clone(), app.clone(), serving.child_token());
        let handle =
            std::thread::Builder::new().name(format!("gateway-{i}")).spawn(move || -> Result<(), ServeError> {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener)?;
                    let server = accept_loop(listener, gw, router, stop.clone());
                    let deadline = async {
                        stop.cancelled().await;
                        tokio::time::sleep(grace).await;
                    };
                    // This thread's access-log lines are written in batches: at least every 100 ms.
                    let flusher = tokio::spawn(access_log::flush_every(ACCESS_LOG_FLUSH));
                    let sweeper = tokio::spawn(upstream_client::sweep_every(POOL_SWEEP));
                    let result = tokio::select! {
                        () = server => Ok(()),
                        () = deadline => Ok(()),
                    };
                    flusher.abort();
                    sweeper.abort();
                    access_log::flush();
                    result
                })
            })?;
        handles.push(handle);
    }
    tracing::info!(service = %config.name, %addr, threads = handles.len(), "listening");
    let task = tokio::spawn(async move {
        shutdown.cancelled().await;
        // Deregister first so no new traffic is routed here, then drain every thread.
        if let Some(h) = heartbeat {
            let _ = h.await;
        }
        serving.cancel();
        let joined = tokio::task::spawn_blocking(move || {
            handles.into_iter().map(|h| h.join().unwrap_or(Ok(()))).collect::<Result<Vec<()>, ServeError>>()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        match joined {
            Ok(result) => result.map(|_| ()),
            Err(join) => Err(ServeError::Io(std::io::Error::other(join.to_string()))),
        }
    });
    Ok(Started { addr, task })
}
