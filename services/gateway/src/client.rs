//! The gateway's HTTP/1.1 client to upstream instances: keep-alive connections
//! pooled per serving thread and instance address.
//!
//! Why not hyper-util's pooled `Client`: it is built for any runtime, so every
//! request takes a lock on its shared pool, turns the path into an absolute URI
//! and back, and spawns a task to put the connection back once the response is
//! read. A gateway thread owns its connections outright (see `serving`), so
//! here the pool is a thread-local list, the request keeps its origin-form URI,
//! and a connection goes back to its list the moment its response body ends.
//! A connection has no task of its own either: the request using it drives its
//! I/O (and the response body, while it is read), so a request is served
//! without a hand-off between tasks.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::TrySendError;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A pooled connection unused for this long is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// At most this many idle connections are kept per thread and instance.
const MAX_IDLE_PER_INSTANCE: usize = 512;
/// How long opening a connection to an instance may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a request could not be sent or its answer not received.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The instance refused or dropped the connection attempt.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// `host:port` of the instance.
        address: Arc<str>,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The instance did not accept the connection in time.
    #[error("connecting to {0} timed out")]
    ConnectTimeout(Arc<str>),
    /// The exchange itself failed (connection reset, malformed answer, request body error).
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// One instance to send to: its address and the `Host` header naming it.
#[derive(Debug, Clone)]
pub struct Instance {
    /// `host:port`; also the key of its connection pool.
    pub address: Arc<str>,
    /// `address` as a header value, computed once.
    pub host: HeaderValue,
}

impl Instance {
    /// An instance at `address`, or `None` if the address cannot be a `Host` header.
    pub fn new(address: &str) -> Option<Self> {
        Some(Self { host: HeaderValue::from_str(address).ok()?, address: address.into() })
    }
}

/// One keep-alive connection: the handle requests are sent through and the connection's
/// I/O state machine, which the request's own task drives (no task per connection).
struct Conn {
    /// The instance's address: the pool this connection goes back to.
    address: Arc<str>,
    sender: SendRequest<Body>,
    /// `None` once the connection has ended (closed or failed). It is dropped then, not kept:
    /// dropping it is what hands a request still queued on it back to its sender.
    io: Option<http1::Connection<TokioIo<TcpStream>, Body>>,
}

impl Conn {
    /// Lets the connection read and write what it can, registering `cx` for more.
    fn drive(&mut self, cx: &mut Context<'_>) {
        let Some(io) = &mut self.io else { return };
        if let Poll::Ready(ended) = Pin::new(io).poll(cx) {
            self.io = None;
            if let Err(err) = ended {
                tracing::debug!(error = %err, "upstream connection ended with an error");
            }
        }
    }

    /// Waits until a request can be sent; `false` if the instance closed the connection.
    async fn ready(&mut self) -> bool {
        poll_fn(|cx| {
            // A connection put back idle is usually ready at once: no need to drive it first.
            if let Poll::Ready(ready) = self.sender.poll_ready(cx) {
                return Poll::Ready(ready);
            }
            self.drive(cx);
            self.sender.poll_ready(cx)
        })
        .await
        .is_ok()
    }

    /// Sends `req` and waits for the response head, driving the connection meanwhile.
    async fn exchange(&mut self, req: Request<Body>) -> Result<Response<Incoming>, TrySendError<Request<Body>>> {
        let mut sent = pin!(self.sender.try_send_request(req));
        poll_fn(|cx| {
            self.drive(cx);
            sent.as_mut().poll(cx)
        })
        .await
    }
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

thread_local! {
    /// This thread's idle connections, per instance address, most recently used last.
    static IDLE: RefCell<foldhash::HashMap<Arc<str>, VecDeque<Idle>>> = RefCell::default();
}

/// Sends `req` (origin-form URI) to `instance` on a pooled connection, or a new one.
///
/// A pooled connection the instance closed while it sat idle is noticed before the request is
/// written; the request then goes on a fresh connection, whatever its method.
pub async fn send(instance: &Instance, mut req: Request<Body>) -> Result<Response<Body>, SendError> {
    req.headers_mut().insert(header::HOST, instance.host.clone());
    while let Some(mut conn) = checkout(&instance.address) {
        if !conn.ready().await {
            continue;
        }
        match conn.exchange(req).await {
            Ok(response) => return Ok(pooled(response, conn)),
            Err(mut failed) => match failed.take_message() {
                Some(unsent) => req = unsent,
                None => return Err(failed.into_error().into()),
            },
        }
    }
    // Boxed: opening a connection is rare, and its future would make every request's future larger.
    let mut conn = Box::pin(connect(&instance.address)).await?;
    let response = conn.exchange(req).await.map_err(TrySendError::into_error)?;
    Ok(pooled(response, conn))
}

/// Closes this thread's pooled connections that have been idle too long, every `period`, forever:
/// spawn it on each serving thread. Idle connections are not driven, so one the instance closed
/// (or to an instance that is gone and never asked again) is only let go of here.
pub async fn sweep_every(period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        sweep(IDLE_TIMEOUT);
    }
}

/// Closes this thread's pooled connections idle for `max_idle` or longer.
fn sweep(max_idle: Duration) {
    IDLE.with_borrow_mut(|pool| {
        pool.retain(|_, list| {
            list.retain(|idle| idle.since.elapsed() < max_idle);
            !list.is_empty()
        });
    });
}

/// The most recently used connection to `address` that has not been idle too long.
fn checkout(address: &str) -> Option<Box<Conn>> {
    IDLE.with_borrow_mut(|pool| {
        let list = pool.get_mut(address)?;
        let idle = list.pop_back()?;
        if idle.since.elapsed() >= IDLE_TIMEOUT {
            // The rest of the list is older still.
            pool.remove(address);
            return None;
        }
        Some(idle.conn)
    })
}

fn checkin(conn: Box<Conn>) {
    if conn.io.is_none() || conn.sender.is_closed() {
        return;
    }
    IDLE.with_borrow_mut(|pool| {
        let list = match pool.get_mut(&*conn.address) {
            Some(list) => list,
            None => pool.entry(conn.address.clone()).or_default(),
        };
        // Connections idle too long are closed by `sweep_every`, not here on every request.
        if list.len() < MAX_IDLE_PER_INSTANCE {
            list.push_back(Idle { conn, since: Instant::now() });
        }
    });
}

/// A new connection to `address`, boxed: the connection's state is large and moves between the
/// pool, the request and the response body.
async fn connect(address: &Arc<str>) -> Result<Box<Conn>, SendError> {
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&**address)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(source)) => return Err(SendError::Connect { address: address.clone(), source }),
        Err(_) => return Err(SendError::ConnectTimeout(address.clone())),
    };
    // Requests are written whole: no reason to let Nagle delay them.
    tcp.set_nodelay(true).map_err(|source| SendError::Connect { address: address.clone(), source })?;
    // One `write` per request, as for responses (see `serving`).
    let (sender, io) = http1::Builder::new().writev(false).handshake(TokioIo::new(tcp)).await?;
    Ok(Box::new(Conn { address: address.clone(), sender, io: Some(io) }))
}

/// The response, whose body drives its connection while it is read and puts the connection
/// back in the pool once it has been read to the end.
fn pooled(response: Response<Incoming>, conn: Box<Conn>) -> Response<Body> {
    let (parts, body) = response.into_parts();
    let body = if body.is_end_stream() {
        checkin(conn);
        Body::new(body)
    } else {
        Body::new(Returning { body, home: Some(conn) })
    };
    Response::from_parts(parts, body)
}

/// A response body that drives its connection (the body's bytes arrive through it) and returns
/// the connection to the pool when the body ends (a body dropped before its end takes the
/// connection with it: it is then closed).
struct Returning {
    body: Incoming,
    home: Option<Box<Conn>>,
}

impl HttpBody for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut polled = Pin::new(&mut self.body).poll_frame(cx);
        if polled.is_pending() {
            // The bytes have not been read off the connection yet: drive it, then look again.
            if let Some(conn) = &mut self.home {
                conn.drive(cx);
                polled = Pin::new(&mut self.body).poll_frame(cx);
            }
        }
        let frame = ready!(polled);
        let ended = match &frame {
            None => true,
            Some(Ok(_)) => self.body.is_end_stream(),
            Some(Err(_)) => {
                self.home = None;
                false
            }
        };
        if ended {
            if let Some(conn) = self.home.take() {
                // If the connection has not yet taken in the end of the exchange, the next
                // request's `ready` drives it there.
                checkin(conn);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    /// An instance that answers every request on a connection with `200 ok`, and reports each
    /// connection it accepts (`true`) and each the gateway closes (`false`).
    async fn instance() -> (Instance, mpsc::UnboundedReceiver<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (events, seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let events = events.clone();
                let _ = events.send(true);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    // Each read is one small request (the client waits for each answer).
                    while let Ok(n) = tcp.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if tcp.write_all(answer).await.is_err() {
                            break;
                        }
                    }
                    let _ = events.send(false);
                });
            }
        });
        (Instance::new(&address).unwrap(), seen)
    }

    async fn get(instance: &Instance) -> String {
        let req = Request::builder().uri("/joke").body(Body::empty()).unwrap();
        let response = send(instance, req).await.unwrap();
        let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
        String::from_utf8_lossy(&body).into_owned()
    }

    #[tokio::test]
    async fn a_connection_is_reused_until_the_sweep_closes_it_for_idling() {
        let (instance, mut seen) = instance().await;
        assert_eq!(get(&instance).await, "ok");
        assert_eq!(get(&instance).await, "ok");
        assert_eq!(seen.recv().await, Some(true));
        assert!(seen.try_recv().is_err(), "the second request reused the first connection");

        // Not idle long enough: kept.
        sweep(Duration::from_secs(3600));
        assert_eq!(get(&instance).await, "ok");
        assert!(seen.try_recv().is_err(), "still one connection");

        // Idle for at least zero seconds: closed, and the instance sees it go.
        sweep(Duration::ZERO);
        let closed = tokio::time::timeout(Duration::from_secs(5), seen.recv()).await;
        assert_eq!(closed.ok().flatten(), Some(false), "the swept connection is closed");
        assert_eq!(get(&instance).await, "ok");
        assert_eq!(seen.recv().await, Some(true), "the next request opens a new connection");
    }
}
