//! The gateway's HTTP/1.1 client to upstream instances: keep-alive connections pooled per
//! server thread and instance address, and the exchange written directly on them.
//!
//! A server thread owns its connections outright (see `server`), so the pool is a thread-local
//! list, and a connection goes back to its list the moment its response has been read to the
//! end. A request goes out as one buffer written once ([`RequestHead`] plus `Host` and the
//! framing); the response's head is parsed with `httparse` (the parser hyper itself uses), a
//! small response with a `Content-Length` is read whole and handed on as one buffer, and larger,
//! chunked or close-delimited bodies are streamed (`body::Streaming`).
//!
//! An instance may answer before it has read the whole request (a 413 for a body it will not
//! take): while a body is written, whatever the instance sends is read, and once a response's
//! head is there (or the instance closed its side, or reset the connection) the rest of the body
//! is not sent, the response is passed on, and the connection is not reused.
//!
//! Nothing an instance sends is trusted: a malformed or oversized head, conflicting lengths or a
//! broken chunked body end the exchange with an error (the proxy responds 502) and the
//! connection is closed, never reused.

mod body;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod head;
#[cfg(test)]
mod properties;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::{Buf, Bytes, BytesMut};
use http::Response;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

pub use body::next_data;
pub use head::{Framing, RequestHead};

use crate::proxy::http1::push_chunk;

/// A pooled connection unused for this long is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// At most this many idle connections are kept per thread and instance.
const MAX_IDLE_PER_INSTANCE: usize = 512;
/// How long opening a connection to an instance may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// An response with a `Content-Length` up to this is read whole before it is passed on.
const WHOLE_BODY_LIMIT: u64 = 64 * 1024;
/// How much room a read asks for.
const READ_CHUNK: usize = 8 * 1024;
/// A request body is written in pieces of about this size.
const WRITE_CHUNK: usize = 64 * 1024;

/// Why a request could not be sent or its response not received.
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
    /// Reading from or writing to the instance failed (a reset connection, say).
    #[error("talking to {address}: {source}")]
    Io {
        /// `host:port` of the instance.
        address: Arc<str>,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The instance closed the connection before its response was complete.
    #[error("{0} closed the connection before its response was complete")]
    Closed(Arc<str>),
    /// The instance's response is not valid HTTP/1.1.
    #[error("{address} sent a malformed response: {reason}")]
    Malformed {
        /// `host:port` of the instance.
        address: Arc<str>,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Reading the client's request body failed (it broke off, or is over the gateway's limit).
    #[error("reading the request body: {0}")]
    RequestBody(#[source] axum::Error),
    /// The request body's length differs from its `Content-Length`.
    #[error("the request body has {sent} bytes, its Content-Length says {declared}")]
    BodyLength {
        /// The `Content-Length`.
        declared: u64,
        /// What the body held.
        sent: u64,
    },
}

/// Sends a request (`head`, and `body` framed as `framing` says) to the instance at `address`
/// (`host:port`, also sent as the `Host` header: it must be a valid header value) on a pooled
/// connection, or a new one; the response, its body still to be read for large ones.
///
/// A pooled connection is checked before it is used: one the instance has closed while it sat
/// idle is dropped. If one is found closed only once the request is written (the instance closed
/// it meanwhile), a request without a body is sent again on another connection when that is safe:
/// nothing of the response arrived, and either the request could not be written or it is idempotent.
pub async fn send(
    address: &Arc<str>,
    head: &RequestHead,
    framing: Framing,
    body: Body,
) -> Result<Response<Body>, SendError> {
    let mut body = Some(body);
    while let Some(conn) = checkout(address) {
        if conn.is_closed() {
            continue;
        }
        match conn.exchange(head, framing, body.take().unwrap_or_default()).await {
            Ok(response) => return Ok(response),
            Err(Failed::Stale(err)) => {
                tracing::debug!(error = %err, "pooled upstream connection was closed; trying another")
            }
            Err(Failed::Fatal(err)) => return Err(err),
        }
    }
    // Boxed: opening a connection is rare, and its future would make every request's future larger.
    let conn = Box::pin(connect(address)).await?;
    conn.exchange(head, framing, body.take().unwrap_or_default()).await.map_err(Failed::into_error)
}

/// How an exchange failed.
enum Failed {
    /// On a reused connection the instance had closed, in a way that makes sending the request
    /// again on another connection safe (see [`send`]).
    Stale(SendError),
    /// Anything else: the request is not sent again.
    Fatal(SendError),
}

impl Failed {
    fn into_error(self) -> SendError {
        match self {
            Failed::Stale(err) | Failed::Fatal(err) => err,
        }
    }
}

/// How much of a request went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    /// All of it.
    Whole,
    /// Part of it: the instance answered (or closed its side) first, and the rest is not sent.
    Answered,
}

/// One keep-alive connection to an instance.
struct Conn {
    /// The instance's address: the `Host` header, and the pool this connection goes back to.
    address: Arc<str>,
    tcp: TcpStream,
    /// Bytes read from the instance and not yet used (part of the response being read).
    read: BytesMut,
    /// The request being written: head and body gathered, to go out in as few writes as possible.
    write: Vec<u8>,
    /// Whether an response has been read on it before (the instance may have closed it since).
    reused: bool,
}

impl Conn {
    /// Whether the instance closed this idle connection (or sent something unasked on it). Asks
    /// only the runtime's readiness, which the close has set: no system call.
    fn is_closed(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        !matches!(self.tcp.poll_read_ready(&mut cx), Poll::Pending)
    }

    /// Writes the request and reads the response's head (and a small body whole).
    async fn exchange(
        mut self: Box<Self>,
        head: &RequestHead,
        framing: Framing,
        body: Body,
    ) -> Result<Response<Body>, Failed> {
        let reused = self.reused;
        let bodiless = matches!(framing, Framing::None | Framing::Length(0));
        // Set when the request did not go out whole: the instance answered early, or broke off
        // (that error is the outcome unless an answer can still be read).
        let mut cut_short = None;
        match self.write_request(head, framing, body).await {
            Ok(Written::Whole) => {}
            Ok(Written::Answered) => cut_short = Some(None),
            // A body cut off by the instance: it may have answered before it stopped reading.
            Err(err @ SendError::Io { .. }) if !bodiless => cut_short = Some(Some(err)),
            Err(err) => {
                // Nothing of the response has come: a bodiless request on a reused connection can go again.
                let stale = reused && bodiless && matches!(err, SendError::Io { .. });
                return Err(if stale { Failed::Stale(err) } else { Failed::Fatal(err) });
            }
        }
        let mut parsed = match self.read_head(head).await {
            Ok(parsed) => parsed,
            Err((err, nothing_came)) => {
                if let Some(Some(write_err)) = cut_short {
                    // No answer to pass on: the body's failure is what happened.
                    tracing::debug!(error = %err, "no answer after the request body was cut off");
                    return Err(Failed::Fatal(write_err));
                }
                let stale = reused && bodiless && nothing_came && head.method().is_idempotent();
                return Err(if stale { Failed::Stale(err) } else { Failed::Fatal(err) });
            }
        };
        // What is left of the request would be taken for the next one: the connection ends with this response.
        parsed.keep_alive &= cut_short.is_none();
        self.reused = true;
        let mut rest = parsed.rest;
        let body = match parsed.body {
            // Usually the whole body came with the head: it is passed on as the slice it is.
            head::BodyLength::Length(n) if n <= rest.len() as u64 => {
                let body = rest.split_to(n as usize);
                // Bytes beyond the response were never asked for: such a connection is not trusted again.
                self.finish(parsed.keep_alive && rest.is_empty());
                Body::from(body)
            }
            head::BodyLength::Empty => {
                self.finish(parsed.keep_alive && rest.is_empty());
                Body::empty()
            }
            head::BodyLength::Length(n) if n <= WHOLE_BODY_LIMIT => {
                self.read.extend_from_slice(&rest);
                let bytes = self.read_whole(n as usize).await.map_err(Failed::Fatal)?;
                self.finish(parsed.keep_alive);
                Body::from(bytes)
            }
            length => {
                self.read.extend_from_slice(&rest);
                Body::new(body::Streaming::new(self, length, parsed.keep_alive))
            }
        };
        let mut response = Response::new(body);
        *response.status_mut() = parsed.status;
        *response.headers_mut() = parsed.headers;
        Ok(response)
    }

    /// Writes the request: whole, or until the instance answers (or closes its side) first.
    async fn write_request(&mut self, head: &RequestHead, framing: Framing, body: Body) -> Result<Written, SendError> {
        let mut out = std::mem::take(&mut self.write);
        out.clear();
        out.extend_from_slice(head.bytes());
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(self.address.as_bytes());
        match framing {
            Framing::None => out.extend_from_slice(b"\r\n\r\n"),
            Framing::Length(n) => {
                out.extend_from_slice(b"\r\ncontent-length: ");
                out.extend_from_slice(n.to_string().as_bytes());
                out.extend_from_slice(b"\r\n\r\n");
            }
            Framing::Chunked => out.extend_from_slice(b"\r\ntransfer-encoding: chunked\r\n\r\n"),
        }
        let result = match framing {
            Framing::None => Ok(Written::Whole),
            _ => self.write_body(&mut out, framing, body).await,
        };
        let result = match result {
            Ok(Written::Whole) => self.write_unless_answered(&out).await,
            other => other,
        };
        // The buffer is kept for the next request, unless a large body made it large.
        if out.capacity() <= 2 * WRITE_CHUNK {
            self.write = out;
        }
        result
    }

    /// Appends `body` to `out` (chunk-encoded for [`Framing::Chunked`]), writing it out whenever
    /// it holds [`WRITE_CHUNK`] bytes or more; stops early if the instance answers meanwhile.
    async fn write_body(&mut self, out: &mut Vec<u8>, framing: Framing, mut body: Body) -> Result<Written, SendError> {
        let mut sent = 0u64;
        while let Some(data) = next_data(&mut body).await.map_err(SendError::RequestBody)? {
            sent += data.len() as u64;
            if framing == Framing::Chunked {
                push_chunk(out, &data);
            } else {
                out.extend_from_slice(&data);
            }
            if out.len() >= WRITE_CHUNK {
                if self.write_unless_answered(out).await? == Written::Answered {
                    return Ok(Written::Answered);
                }
                out.clear();
            }
        }
        match framing {
            Framing::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
            Framing::Length(declared) if declared != sent => return Err(SendError::BodyLength { declared, sent }),
            _ => {}
        }
        Ok(Written::Whole)
    }

    /// Writes `bytes` whole, unless the instance sends a final response's head (or closes its
    /// side) while the socket is full: an instance may answer before it has read the whole
    /// request (a 413, say) and stop reading, and that answer is the one to pass on. What it sent
    /// is left in `read`.
    async fn write_unless_answered(&mut self, bytes: &[u8]) -> Result<Written, SendError> {
        let mut written = 0;
        loop {
            // Usually the socket takes everything at once, and nothing is waited for.
            match self.tcp.try_write(&bytes[written..]) {
                Ok(n) => written += n,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(source) => return Err(self.io_error(source)),
            }
            if written == bytes.len() {
                return Ok(Written::Whole);
            }
            let readable = tokio::select! {
                biased;
                ready = self.tcp.readable() => ready.map(|()| true),
                ready = self.tcp.writable() => ready.map(|()| false),
            };
            match readable {
                Ok(true) if self.answered()? => return Ok(Written::Answered),
                Ok(_) => {}
                Err(source) => return Err(self.io_error(source)),
            }
        }
    }

    /// Reads what the instance sent while the request was being written: whether it is a final
    /// response's head (malformed or not: `read_head` says which), or the end of the stream.
    fn answered(&mut self) -> Result<bool, SendError> {
        self.read.reserve(READ_CHUNK);
        match self.tcp.try_read_buf(&mut self.read) {
            Ok(0) => return Ok(true),
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
            Err(source) => return Err(self.io_error(source)),
        }
        loop {
            // The method only decides the body's length, not whether the head is complete.
            match head::parse_response(&self.read, &http::Method::GET) {
                Ok(head::Parsed::Interim(len)) => self.read.advance(len),
                Ok(head::Parsed::Partial) => return Ok(self.read.len() >= MAX_HEAD),
                Ok(head::Parsed::Complete(_)) | Err(_) => return Ok(true),
            }
        }
    }

    /// Reads until a final response's head is complete. On failure, also whether nothing at all
    /// had come from the instance.
    async fn read_head(&mut self, request: &RequestHead) -> Result<head::ResponseHead, (SendError, bool)> {
        let mut received = false;
        loop {
            if !self.read.is_empty() {
                match head::parse_response(&self.read, request.method()) {
                    Ok(head::Parsed::Complete(parsed)) => {
                        // All of it is in the response's head and `rest` now.
                        self.read.clear();
                        return Ok(parsed);
                    }
                    Ok(head::Parsed::Interim(len)) => {
                        self.read.advance(len);
                        continue;
                    }
                    Ok(head::Parsed::Partial) if self.read.len() >= MAX_HEAD => {
                        return Err((self.malformed("head too large"), false));
                    }
                    Ok(head::Parsed::Partial) => {}
                    Err(reason) => return Err((self.malformed(reason), false)),
                }
            }
            self.read.reserve(READ_CHUNK);
            match self.tcp.read_buf(&mut self.read).await {
                Ok(0) => return Err((SendError::Closed(self.address.clone()), !received)),
                Ok(_) => received = true,
                Err(source) => return Err((self.io_error(source), !received)),
            }
        }
    }

    /// The next `n` bytes of the response, read whole.
    async fn read_whole(&mut self, n: usize) -> Result<Bytes, SendError> {
        while self.read.len() < n {
            self.read.reserve(n - self.read.len());
            match self.tcp.read_buf(&mut self.read).await {
                Ok(0) => return Err(SendError::Closed(self.address.clone())),
                Ok(_) => {}
                Err(source) => return Err(self.io_error(source)),
            }
        }
        // Copied out, so the read buffer stays this connection's own and is reused, not reallocated.
        let bytes = Bytes::copy_from_slice(&self.read[..n]);
        self.read.advance(n);
        Ok(bytes)
    }

    /// The response has been read to its end: back to the pool if it may carry another request.
    fn finish(self: Box<Self>, keep_alive: bool) {
        // Bytes beyond the response were never asked for: such a connection is not trusted again.
        if keep_alive && self.read.is_empty() {
            checkin(self);
        }
    }

    fn io_error(&self, source: std::io::Error) -> SendError {
        SendError::Io { address: self.address.clone(), source }
    }

    fn malformed(&self, reason: &'static str) -> SendError {
        SendError::Malformed { address: self.address.clone(), reason }
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

/// Closes this thread's pooled connections that have been idle too long or that their instance
/// has closed, every `period`, forever: spawn it on each serving thread. Idle connections are not
/// driven, so one the instance closed is let go of here (or when a request next takes it), not
/// left half-closed.
pub async fn sweep_every(period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        sweep(IDLE_TIMEOUT);
    }
}

/// Closes this thread's pooled connections idle for `max_idle` or longer, and those the instance closed.
fn sweep(max_idle: Duration) {
    IDLE.with_borrow_mut(|pool| {
        pool.retain(|_, list| {
            list.retain(|idle| idle.since.elapsed() < max_idle && !idle.conn.is_closed());
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

/// A new connection to `address`.
async fn connect(address: &Arc<str>) -> Result<Box<Conn>, SendError> {
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&**address)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(source)) => return Err(SendError::Connect { address: address.clone(), source }),
        Err(_) => return Err(SendError::ConnectTimeout(address.clone())),
    };
    // Requests are written whole: no reason to let Nagle delay them.
    tcp.set_nodelay(true).map_err(|source| SendError::Connect { address: address.clone(), source })?;
    Ok(Box::new(Conn {
        address: address.clone(),
        tcp,
        read: BytesMut::with_capacity(READ_CHUNK),
        write: Vec::with_capacity(1024),
        reused: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, Method, StatusCode};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    /// What the test instance saw: a connection opened (`Opened`), a request's raw bytes, or a
    /// connection closed by the gateway (`Closed`).
    #[derive(Debug, PartialEq)]
    enum Seen {
        Opened,
        Request(String),
        Closed,
    }

    /// An instance that reads each request whole and responses it with `response` (raw bytes); with
    /// `close_after`, it closes the connection after each response.
    async fn start_instance(response: &'static [u8], close_after: bool) -> (Arc<str>, mpsc::UnboundedReceiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (events, seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let events = events.clone();
                let _ = events.send(Seen::Opened);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while let Some(request) = read_request(&mut tcp, &mut buf).await {
                        let _ = events.send(Seen::Request(request));
                        if tcp.write_all(response).await.is_err() || close_after {
                            break;
                        }
                    }
                    let _ = events.send(Seen::Closed);
                });
            }
        });
        (address.into(), seen)
    }

    /// Reads one request (head, and a Content-Length or chunked body) off `tcp`.
    async fn read_request(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
        loop {
            let mut slots = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut slots);
            if let Ok(httparse::Status::Complete(head)) = req.parse(buf) {
                let header =
                    |name: &str| req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
                let end = if header("transfer-encoding").is_some() {
                    buf.windows(5).position(|w| w == b"0\r\n\r\n").map(|at| at + 5)
                } else {
                    let length =
                        header("content-length").map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap());
                    (buf.len() >= head + length).then_some(head + length)
                };
                if let Some(end) = end {
                    let request = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end);
                    return Some(request);
                }
            }
            let mut more = [0u8; 4096];
            match tcp.read(&mut more).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&more[..n]),
            }
        }
    }

    /// How many connections the instance has seen opened so far (the events up to now are used up).
    fn connections_opened(seen: &mut mpsc::UnboundedReceiver<Seen>) -> usize {
        std::iter::from_fn(|| seen.try_recv().ok()).filter(|event| *event == Seen::Opened).count()
    }

    fn head(method: Method, target: &'static str) -> RequestHead {
        RequestHead::new(&method, &http::uri::PathAndQuery::from_static(target))
    }

    async fn get(instance: &Arc<str>) -> Result<(StatusCode, String), SendError> {
        let response = send(instance, &head(Method::GET, "/joke"), Framing::None, Body::empty()).await?;
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.map_err(SendError::RequestBody)?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    #[tokio::test]
    async fn a_connection_is_reused_until_the_sweep_closes_it_for_idling() {
        let (instance, mut seen) = start_instance(OK, false).await;
        assert_eq!(get(&instance).await.unwrap().1, "ok");
        assert_eq!(get(&instance).await.unwrap().1, "ok");
        assert_eq!(seen.recv().await, Some(Seen::Opened));
        let request = |seen: Option<Seen>| matches!(seen, Some(Seen::Request(r)) if r.starts_with("GET /joke HTTP/1.1\r\nhost: 127.0.0.1:"));
        assert!(request(seen.recv().await));
        assert!(request(seen.recv().await), "the second request reused the first connection");

        // Not idle long enough: kept.
        sweep(Duration::from_secs(3600));
        assert_eq!(get(&instance).await.unwrap().1, "ok");
        assert!(request(seen.recv().await), "still one connection");

        // Idle for at least zero seconds: closed, and the instance sees it go.
        sweep(Duration::ZERO);
        let closed = tokio::time::timeout(Duration::from_secs(5), seen.recv()).await;
        assert_eq!(closed.ok().flatten(), Some(Seen::Closed), "the swept connection is closed");
        assert_eq!(get(&instance).await.unwrap().1, "ok");
        assert_eq!(seen.recv().await, Some(Seen::Opened), "the next request opens a new connection");
    }

    #[tokio::test]
    async fn the_sweep_lets_go_of_a_connection_the_instance_closed() {
        let (instance, mut seen) = start_instance(OK, true).await;
        assert_eq!(get(&instance).await.unwrap().1, "ok");
        let idle = || IDLE.with_borrow(|pool| pool.get(&instance).map_or(0, VecDeque::len));
        assert_eq!(idle(), 1, "responded with keep-alive: pooled");
        // The instance closes it; once the runtime has seen that, a sweep drops it, idle or not.
        let closed =
            tokio::time::timeout(Duration::from_secs(5), async { while seen.recv().await != Some(Seen::Closed) {} });
        closed.await.expect("the instance closes its side");
        kit::test_support::eventually("the sweep to drop the closed connection", Duration::from_secs(5), || async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            sweep(Duration::from_secs(3600));
            (idle() == 0).then_some(())
        })
        .await;
    }

    #[tokio::test]
    async fn an_instance_that_closes_its_connections_still_answers_every_request() {
        let (instance, mut seen) = start_instance(OK, true).await;
        for _ in 0..5 {
            assert_eq!(get(&instance).await.unwrap(), (StatusCode::OK, "ok".to_string()));
        }
        assert_eq!(connections_opened(&mut seen), 5, "a closed connection is never used for a request");
    }

    #[tokio::test]
    async fn request_bodies_go_out_with_their_framing() {
        let (instance, mut seen) = start_instance(OK, false).await;
        let mut post = head(Method::POST, "/projects?x=1");
        post.header(&http::header::CONTENT_TYPE, &HeaderValue::from_static("text/plain"));
        let response = send(&instance, &post, Framing::Length(5), Body::from("hello")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-length"], "2");
        assert_eq!(seen.recv().await, Some(Seen::Opened));
        let Some(Seen::Request(sent)) = seen.recv().await else { panic!("no request") };
        assert!(
            sent.starts_with("POST /projects?x=1 HTTP/1.1\r\ncontent-type: text/plain\r\nhost: 127.0.0.1:"),
            "{sent}"
        );
        assert!(sent.ends_with("\r\ncontent-length: 5\r\n\r\nhello"), "{sent}");

        let pieces = futures::stream::iter(["hello", ", world"].map(|s| Ok::<_, std::io::Error>(Bytes::from(s))));
        axum::body::to_bytes(
            send(&instance, &post, Framing::Chunked, Body::from_stream(pieces)).await.unwrap().into_body(),
            64,
        )
        .await
        .unwrap();
        let Some(Seen::Request(sent)) = seen.recv().await else { panic!("no request") };
        assert!(
            sent.ends_with("\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"),
            "{sent}"
        );

        let short = send(&instance, &post, Framing::Length(9), Body::from("hello")).await;
        assert!(matches!(short, Err(SendError::BodyLength { declared: 9, sent: 5 })), "{short:?}");
    }

    /// An instance that reads a request's head, none of its body, answers with `response`, and
    /// then closes the connection (`close`) or keeps it open reading nothing more.
    async fn start_early_answering_instance(response: &'static [u8], close: bool) -> Arc<str> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    while !head.ends_with(b"\r\n\r\n") {
                        match tcp.read_u8().await {
                            Ok(byte) => head.push(byte),
                            Err(_) => return,
                        }
                    }
                    let _ = tcp.write_all(response).await;
                    if !close {
                        std::future::pending::<()>().await;
                    }
                });
            }
        });
        address.into()
    }

    #[tokio::test]
    async fn an_answer_sent_before_the_request_body_was_read_is_passed_on() {
        const TOO_LARGE: &[u8] = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 9\r\n\r\ntoo large";
        for close in [true, false] {
            let instance = start_early_answering_instance(TOO_LARGE, close).await;
            // Far more than the sockets' buffers hold while the instance reads nothing.
            let body = Bytes::from(vec![b'x'; 8 << 20]);
            let framing = Framing::Length(body.len() as u64);
            let sent = send(&instance, &head(Method::POST, "/upload"), framing, Body::from(body)).await;
            let response = sent.unwrap_or_else(|err| panic!("closing: {close}: {err}"));
            assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "closing: {close}");
            let body = axum::body::to_bytes(response.into_body(), 64).await.unwrap();
            assert_eq!(body, "too large");
            let idle = IDLE.with_borrow(|pool| pool.get(&instance).map_or(0, VecDeque::len));
            assert_eq!(idle, 0, "the rest of the request is still due on that connection: not reused");
        }
    }

    #[tokio::test]
    async fn chunked_responses_are_decoded_and_their_connection_reused() {
        const CHUNKED: &[u8] =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n";
        let (instance, mut seen) = start_instance(CHUNKED, false).await;
        assert_eq!(get(&instance).await.unwrap().1, "hello, world");
        assert_eq!(get(&instance).await.unwrap().1, "hello, world");
        assert_eq!(connections_opened(&mut seen), 1);
    }

    #[tokio::test]
    async fn large_and_close_delimited_responses_are_streamed_whole() {
        let content: String = (0..300_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        let big = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{content}", content.len());
        let (instance, _seen) = start_instance(big.into_bytes().leak(), false).await;
        let (_, body) = get(&instance).await.unwrap();
        assert_eq!(body.len(), content.len());
        assert!(body == content, "the body came through byte for byte");

        let (instance, mut seen) =
            start_instance(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end", true).await;
        assert_eq!(get(&instance).await.unwrap().1, "until the end");
        assert_eq!(get(&instance).await.unwrap().1, "until the end");
        assert_eq!(connections_opened(&mut seen), 2, "a close-delimited response's connection is not reused");
    }

    #[tokio::test]
    async fn malformed_responses_are_errors_and_their_connection_is_dropped() {
        let (instance, mut seen) =
            start_instance(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok", false).await;
        let failed = get(&instance).await;
        assert!(
            matches!(&failed, Err(SendError::Malformed { reason: "conflicting Content-Length headers", .. })),
            "{failed:?}"
        );
        assert_eq!(seen.recv().await, Some(Seen::Opened));
        assert!(matches!(seen.recv().await, Some(Seen::Request(_))));
        let closed = tokio::time::timeout(Duration::from_secs(5), seen.recv()).await;
        assert_eq!(closed.ok().flatten(), Some(Seen::Closed));

        let (instance, _seen) = start_instance(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", true).await;
        assert!(matches!(get(&instance).await, Err(SendError::Closed(_))));
    }
}
