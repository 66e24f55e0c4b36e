//! Thread-per-core serving for the gateway. A proxy spends its time handing
//! requests between sockets; on a multi-threaded runtime every hand-off can
//! wake another thread. Here each OS thread runs its own single-threaded
//! runtime with its own listener (`SO_REUSEPORT`: the kernel spreads
//! connections) and its own upstream connection pool, so a request is served
//! start to finish on one thread. Shared state (routes, breakers, limiter,
//! instance lists) is the same `Arc<Gateway>` for all threads.
//!
//! Each connection is served by a [`Front`]: requests for an upstream route go
//! straight to [`proxy::serve`], everything else (pages, docs, health) to the
//! router with the kit's standard layers.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use axum::Router;
use futures::future::BoxFuture;
use kit::http::ServeError;
use kit::registry_client::Protocol;
use kit::service::Started;
use kit::Shutdown;
use tower::{Service, ServiceExt};

use crate::{proxy, routes, Gateway};

/// How long an access-log line may wait in its thread's buffer.
const ACCESS_LOG_FLUSH: Duration = Duration::from_millis(100);

/// One connection's service: the proxy's hot path for upstream routes, the router for the rest.
#[derive(Clone)]
struct Front {
    gw: Arc<Gateway>,
    router: Router,
    peer: SocketAddr,
}

impl Service<Request> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        if let Some(route) = routes::find_in(self.gw.config.routes, req.uri().path()) {
            let (gw, peer) = (self.gw.clone(), self.peer);
            return Box::pin(async move { Ok(proxy::serve(gw, peer, route, req).await) });
        }
        req.extensions_mut().insert(ConnectInfo(self.peer));
        Box::pin(self.router.clone().oneshot(req))
    }
}

/// Makes a [`Front`] for every accepted connection.
#[derive(Clone)]
struct MakeFront {
    gw: Arc<Gateway>,
    router: Router,
}

impl<'a, L: Listener<Addr = SocketAddr>> Service<IncomingStream<'a, L>> for MakeFront {
    type Response = Front;
    type Error = Infallible;
    type Future = Ready<Result<Front, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, incoming: IncomingStream<'a, L>) -> Self::Future {
        ready(Ok(Front { gw: self.gw.clone(), router: self.router.clone(), peer: *incoming.remote_addr() }))
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
        let (make, stop) = (MakeFront { gw: gw.clone(), router: app.clone() }, serving.clone());
        let handle =
            std::thread::Builder::new().name(format!("gateway-{i}")).spawn(move || -> Result<(), ServeError> {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(async move {
                    use axum::serve::ListenerExt;
                    // Responses are written whole: no reason to let Nagle delay them.
                    let listener = tokio::net::TcpListener::from_std(listener)?.tap_io(|tcp| {
                        let _ = tcp.set_nodelay(true);
                    });
                    let server = axum::serve(listener, make).with_graceful_shutdown(stop.clone().cancelled_owned());
                    let deadline = async {
                        stop.cancelled().await;
                        tokio::time::sleep(grace).await;
                    };
                    // This thread's access-log lines are written in batches: at least every 100 ms.
                    let flusher = tokio::spawn(kit::access_log::flush_every(ACCESS_LOG_FLUSH));
                    let result = tokio::select! {
                        result = server => result.map_err(ServeError::from),
                        () = deadline => Ok(()),
                    };
                    flusher.abort();
                    kit::access_log::flush();
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
