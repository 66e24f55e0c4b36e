//! One client connection. Plain requests for upstream routes are read and answered here, on the
//! fast path; the first request the fast path does not take (see [`request_head::parse`]) hands
//! the connection to hyper, with the bytes already read put back in front, and hyper serves it
//! from then on.
//!
//! The fast path does only what a plain keep-alive request needs; everything with a framing
//! question in it goes to hyper, so the fast path never has to get one right.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::{Buf, BytesMut};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use kit::Shutdown;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::request_head::{self, Parsed};
use super::rewind::Rewind;
use super::{response_writer, Connection, Front, HEADER_READ_TIMEOUT};
use crate::proxy;

/// How much room a read asks for.
const READ_CHUNK: usize = 8 * 1024;
/// The largest request body the fast path reads before sending a request on; a larger one (up
/// to the gateway's limit) goes through hyper, which streams it.
const MAX_BODY: usize = 64 * 1024;
/// The read deadline is moved at most this often (moving a timer costs; a second is nothing
/// next to [`HEADER_READ_TIMEOUT`]).
const REARM_AFTER: Duration = Duration::from_secs(1);

/// Serves the connection `tcp` until the client closes it, asks to, sends nothing for
/// [`HEADER_READ_TIMEOUT`], or `stop` trips (a request in progress is answered first).
pub(super) async fn serve(mut tcp: TcpStream, conn: Arc<Connection>, http: Arc<http1::Builder>, stop: Shutdown) {
    let mut read = BytesMut::with_capacity(READ_CHUNK);
    let mut write = Vec::with_capacity(1024);
    let mut waits = Waits::new(stop);
    let body_cap = conn.gw.config.body_limit.min(MAX_BODY);
    loop {
        waits.arm();
        let proxied = loop {
            if !read.is_empty() {
                match request_head::parse(&read, conn.gw.config.routes, body_cap) {
                    Parsed::Partial => {}
                    Parsed::Proxied(proxied) => break proxied,
                    Parsed::HandOff => return hand_off(tcp, read, conn, &http, waits).await,
                }
            }
            let idle = read.is_empty();
            if !fill(&mut tcp, &mut read, &mut waits, idle).await {
                return;
            }
        };
        read.advance(proxied.head_len);
        while read.len() < proxied.body_len {
            if !fill(&mut tcp, &mut read, &mut waits, false).await {
                return;
            }
        }
        let body = match proxied.body_len {
            0 => Body::empty(),
            n => Body::from(read.split_to(n).freeze()),
        };
        let request = proxied.request.map(|()| body);
        let timer = proxy::Timer::Reused(waits.upstream.as_mut());
        let response = proxy::serve(&conn.gw, &conn.client, proxied.route, request, timer).await;
        let close = proxied.close || waits.stopping();
        if let Err(err) = response_writer::write(&mut tcp, &mut write, response, close).await {
            tracing::debug!(client = %conn.client.addr, error = %err, "response not written whole; closing");
            return;
        }
        if close {
            return;
        }
    }
}

/// Reads more of the client's bytes into `buf`; `false` when there will be none: the client
/// closed the connection or failed, the read deadline passed, or (when `idle`: no request
/// begun) the gateway is stopping.
async fn fill(tcp: &mut TcpStream, buf: &mut BytesMut, waits: &mut Waits, idle: bool) -> bool {
    buf.reserve(READ_CHUNK);
    tokio::select! {
        biased;
        read = tcp.read_buf(buf) => matches!(read, Ok(n) if n > 0),
        () = waits.deadline.as_mut() => false,
        () = waits.stop.as_mut(), if idle => false,
    }
}

/// Gives the connection to hyper, `read` (bytes the fast path did not take) first.
async fn hand_off(tcp: TcpStream, read: BytesMut, conn: Arc<Connection>, http: &http1::Builder, mut waits: Waits) {
    let client = conn.client.addr;
    let io = TokioIo::new(Rewind::new(read.freeze(), tcp));
    let mut connection = std::pin::pin!(http.serve_connection(io, Front(conn)));
    let ended = tokio::select! {
        // The connection first: its first poll reads the request already here, so a stop that
        // comes at this very moment lets that request be answered (hyper closes a connection at
        // once when told to stop before it has begun a request).
        biased;
        ended = connection.as_mut() => ended,
        () = waits.stop.as_mut() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = ended {
        tracing::debug!(%client, error = %err, "connection ended with an error");
    }
}

/// What ends a wait for a client's bytes, other than the bytes: a deadline, and the gateway
/// stopping; and the timer of the upstream's deadline. All are made once per connection and
/// polled again and again.
struct Waits {
    /// Moved forward at each request (at most once per [`REARM_AFTER`]), so it is between
    /// `HEADER_READ_TIMEOUT - REARM_AFTER` and `HEADER_READ_TIMEOUT` after the request began.
    deadline: Pin<Box<Sleep>>,
    armed_at: Instant,
    stop: Pin<Box<WaitForCancellationFutureOwned>>,
    stopping: Shutdown,
    /// The timer of the upstream's deadline, reset for each request ([`proxy::Timer::Reused`]).
    upstream: Pin<Box<Sleep>>,
}

impl Waits {
    fn new(stop: Shutdown) -> Self {
        let now = Instant::now();
        Self {
            deadline: Box::pin(tokio::time::sleep_until(now + HEADER_READ_TIMEOUT)),
            armed_at: now,
            stop: Box::pin(stop.clone().cancelled_owned()),
            stopping: stop,
            upstream: Box::pin(tokio::time::sleep_until(now + HEADER_READ_TIMEOUT)),
        }
    }

    /// A request begins: the client has [`HEADER_READ_TIMEOUT`] to send it.
    fn arm(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.armed_at) >= REARM_AFTER {
            self.deadline.as_mut().reset(now + HEADER_READ_TIMEOUT);
            self.armed_at = now;
        }
    }

    fn stopping(&self) -> bool {
        self.stopping.is_cancelled()
    }
}
