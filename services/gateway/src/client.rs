//! The gateway's HTTP/1.1 client to upstream instances: keep-alive connections
//! pooled per serving thread and instance address.
//!
//! Why not hyper-util's pooled `Client`: it is built for any runtime, so every
//! request takes a lock on its shared pool, turns the path into an absolute URI
//! and back, and spawns a task to put the connection back once the response is
//! read. A gateway thread owns its connections outright (see `serving`), so
//! here the pool is a thread-local list, the request keeps its origin-form URI,
//! and a connection goes back to its list the moment its response body ends.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
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

struct Idle {
    sender: SendRequest<Body>,
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
    while let Some(mut sender) = checkout(&instance.address).await {
        match sender.try_send_request(req).await {
            Ok(response) => return Ok(pooled(response, instance, sender)),
            Err(mut failed) => match failed.take_message() {
                Some(unsent) => req = unsent,
                None => return Err(failed.into_error().into()),
            },
        }
    }
    let mut sender = connect(&instance.address).await?;
    let response = sender.send_request(req).await?;
    Ok(pooled(response, instance, sender))
}

/// The most recently used live connection to `address`, ready for a request.
async fn checkout(address: &str) -> Option<SendRequest<Body>> {
    loop {
        let idle = IDLE.with_borrow_mut(|pool| pool.get_mut(address).and_then(VecDeque::pop_back))?;
        if idle.since.elapsed() >= IDLE_TIMEOUT {
            // The rest of the list is older still.
            IDLE.with_borrow_mut(|pool| pool.remove(address));
            continue;
        }
        let mut sender = idle.sender;
        // Ready at once unless the connection task has not yet seen the previous answer's end.
        if !sender.is_closed() && sender.ready().await.is_ok() {
            return Some(sender);
        }
    }
}

fn checkin(address: &Arc<str>, sender: SendRequest<Body>) {
    if sender.is_closed() {
        return;
    }
    IDLE.with_borrow_mut(|pool| {
        let list = match pool.get_mut(&**address) {
            Some(list) => list,
            None => pool.entry(address.clone()).or_default(),
        };
        while list.front().is_some_and(|idle| idle.since.elapsed() >= IDLE_TIMEOUT) {
            list.pop_front();
        }
        if list.len() < MAX_IDLE_PER_INSTANCE {
            list.push_back(Idle { sender, since: Instant::now() });
        }
    });
}

async fn connect(address: &Arc<str>) -> Result<SendRequest<Body>, SendError> {
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&**address)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(source)) => return Err(SendError::Connect { address: address.clone(), source }),
        Err(_) => return Err(SendError::ConnectTimeout(address.clone())),
    };
    // Requests are written whole: no reason to let Nagle delay them.
    tcp.set_nodelay(true).map_err(|source| SendError::Connect { address: address.clone(), source })?;
    let (sender, connection) = http1::Builder::new().handshake(TokioIo::new(tcp)).await?;
    let address = address.clone();
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(%address, error = %err, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// The response, whose body puts the connection back in the pool once it has been read to the end.
fn pooled(response: Response<Incoming>, instance: &Instance, sender: SendRequest<Body>) -> Response<Body> {
    let (parts, body) = response.into_parts();
    let body = if body.is_end_stream() {
        checkin(&instance.address, sender);
        Body::new(body)
    } else {
        Body::new(Returning { body, home: Some((instance.address.clone(), sender)) })
    };
    Response::from_parts(parts, body)
}

/// A response body that returns its connection to the pool when it ends (a body dropped before its
/// end takes the connection with it: hyper then closes it).
struct Returning {
    body: Incoming,
    home: Option<(Arc<str>, SendRequest<Body>)>,
}

impl Returning {
    fn go_home(&mut self) {
        if let Some((address, sender)) = self.home.take() {
            checkin(&address, sender);
        }
    }
}

impl HttpBody for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        match &frame {
            None => self.go_home(),
            Some(Ok(_)) if self.body.is_end_stream() => self.go_home(),
            Some(Ok(_)) => {}
            Some(Err(_)) => self.home = None,
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
