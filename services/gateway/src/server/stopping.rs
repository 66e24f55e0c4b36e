//! Serving one connection, and stopping it gracefully. Told to stop, hyper ends an HTTP/1.1
//! connection at once when it is between two requests, even if the next request's head has
//! begun to arrive: a client that had sent half a head when the gateway began to stop would get
//! no response. So the gateway watches the connection's bytes and tells hyper to stop only when
//! no request is half read; until then the connection goes on (within the server's grace period).

use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use kit::Shutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::{Connection, Front};

/// Whether a connection's client has sent bytes that are not yet a whole request head.
#[derive(Debug, Default)]
pub(super) struct Reading {
    half_read: AtomicBool,
    /// HTTP/2 frames requests itself; a stop is sent as `GOAWAY` whenever it comes.
    multiplexed: AtomicBool,
}

impl Reading {
    /// hyper has read a request's head whole and hands it to the service.
    pub(super) fn head_read(&self, version: http::Version) {
        self.half_read.store(false, Ordering::Relaxed);
        if version == http::Version::HTTP_2 {
            self.multiplexed.store(true, Ordering::Relaxed);
        }
    }

    fn bytes_read(&self) {
        self.half_read.store(true, Ordering::Relaxed);
    }

    /// What was read before a response was written belonged to a request already begun.
    fn bytes_written(&self) {
        self.half_read.store(false, Ordering::Relaxed);
    }

    fn is_half_read(&self) -> bool {
        self.half_read.load(Ordering::Relaxed) && !self.multiplexed.load(Ordering::Relaxed)
    }
}

/// Serves the connection `tcp` until the client closes it, hyper ends it (an error, the header
/// read timeout), or `stop` trips and the requests begun are answered.
pub(super) async fn serve(
    tcp: TcpStream,
    conn: Arc<Connection>,
    http: Arc<auto::Builder<TokioExecutor>>,
    stop: Shutdown,
) {
    let client = conn.client.addr;
    let io = TokioIo::new(Watched { tcp, conn: conn.clone() });
    let mut connection = pin!(http.serve_connection_with_upgrades(io, Front(conn.clone())));
    let mut stopped = pin!(stop.cancelled());
    let mut state = State::Serving;
    let ended = poll_fn(|cx| loop {
        // The connection first: a request read in this very poll is then in progress for hyper.
        if let Poll::Ready(ended) = connection.as_mut().poll(cx) {
            return Poll::Ready(ended);
        }
        match state {
            State::Serving if stopped.as_mut().poll(cx).is_pending() => return Poll::Pending,
            State::Serving => state = State::Stopping,
            // Woken again when more bytes come, or the response is written.
            State::Stopping if conn.reading.is_half_read() => return Poll::Pending,
            State::Stopping => {
                connection.as_mut().graceful_shutdown();
                state = State::Told;
            }
            State::Told => return Poll::Pending,
        }
    })
    .await;
    if let Err(err) = ended {
        tracing::debug!(%client, error = %err, "connection ended with an error");
    }
}

enum State {
    Serving,
    /// The gateway is stopping; hyper has not been told yet.
    Stopping,
    /// hyper has been told to stop.
    Told,
}

/// The client's socket, telling the connection's [`Reading`] what passes through it.
struct Watched {
    tcp: TcpStream,
    conn: Arc<Connection>,
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.conn.reading.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.tcp).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.conn.reading.bytes_written();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.conn.reading.bytes_written();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}
