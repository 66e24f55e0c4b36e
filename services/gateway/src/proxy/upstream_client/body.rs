//! A response body that is streamed rather than read whole: larger than the gateway keeps in
//! memory, chunked, or delimited by the instance closing the connection. It reads from the
//! connection as the client takes it, and puts the connection back in the pool at its end.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::head::BodyLength;
use super::{Conn, SendError, READ_CHUNK};

/// Longest chunk-size line accepted.
const MAX_LINE: usize = 4096;
/// Longest trailer section accepted.
const MAX_TRAILERS: usize = 16 * 1024;

/// A body's next non-empty piece of data, or `None` at its end; trailers, the only other kind of
/// frame, are not passed on (in either direction).
pub async fn next_data(body: &mut axum::body::Body) -> Result<Option<Bytes>, axum::Error> {
    use http_body_util::BodyExt;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if !data.is_empty() {
                return Ok(Some(data));
            }
        }
    }
    Ok(None)
}

/// A streamed response body; see the module's doc.
pub(super) struct Streaming {
    /// `None` once the body has ended or failed.
    conn: Option<Box<Conn>>,
    decoder: Decoder,
    keep_alive: bool,
}

impl Streaming {
    /// The body of `length` read from `conn` (bytes already read come first).
    pub(super) fn new(conn: Box<Conn>, length: BodyLength, keep_alive: bool) -> Self {
        let decoder = match length {
            BodyLength::Empty => Decoder::Length(0),
            BodyLength::Length(n) => Decoder::Length(n),
            BodyLength::Chunked => Decoder::Chunked(Chunk::Size),
            BodyLength::UntilClose => Decoder::UntilClose,
        };
        Self { conn: Some(conn), decoder, keep_alive }
    }
}

impl HttpBody for Streaming {
    type Data = Bytes;
    type Error = SendError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, SendError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else { return Poll::Ready(None) };
            match this.decoder.step(&mut conn.read) {
                Ok(Step::Data(bytes)) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Ok(Step::End) => {
                    if let Some(conn) = this.conn.take() {
                        conn.finish(this.keep_alive);
                    }
                    return Poll::Ready(None);
                }
                Ok(Step::More) => {}
                Err(reason) => {
                    let address = conn.address.clone();
                    this.conn = None;
                    return Poll::Ready(Some(Err(SendError::Malformed { address, reason })));
                }
            }
            let read = ready!(conn.poll_read(cx));
            match read {
                Ok(0) if this.decoder == Decoder::UntilClose => {
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    let address = conn.address.clone();
                    this.conn = None;
                    return Poll::Ready(Some(Err(SendError::Closed(address))));
                }
                Ok(_) => {}
                Err(source) => {
                    let address = conn.address.clone();
                    this.conn = None;
                    return Poll::Ready(Some(Err(SendError::Io { address, source })));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.decoder == Decoder::Length(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

/// Where in the body the bytes read so far end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decoder {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk with this many bytes to go.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines (dropped) up to a blank line.
    Trailers,
}

/// What the decoder made of the bytes read so far.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Body bytes to pass on.
    Data(Bytes),
    /// The body is complete; nothing of it is left in the buffer.
    End,
    /// More bytes must be read first.
    More,
}

impl Decoder {
    /// Takes what it can from `read`; `Err` says what is wrong with the body.
    pub(super) fn step(&mut self, read: &mut BytesMut) -> Result<Step, &'static str> {
        match self {
            Decoder::Length(0) => Ok(Step::End),
            Decoder::Length(left) => Ok(take(read, left)),
            Decoder::UntilClose if read.is_empty() => Ok(Step::More),
            Decoder::UntilClose => Ok(Step::Data(read.split().freeze())),
            Decoder::Chunked(chunk) => chunk.step(read),
        }
    }
}

impl Chunk {
    fn step(&mut self, read: &mut BytesMut) -> Result<Step, &'static str> {
        loop {
            match self {
                // `httparse` takes an empty size line for a 0 (the last chunk): the body would end early.
                Chunk::Size if read.first().is_some_and(|b| !b.is_ascii_hexdigit()) => {
                    return Err("malformed chunk size")
                }
                Chunk::Size => match httparse::parse_chunk_size(read) {
                    // `httparse` lets a bare LF through in a chunk extension: a line end to some readers.
                    Ok(httparse::Status::Complete((used, _))) if read[..used - 1].contains(&b'\n') => {
                        return Err("malformed chunk size")
                    }
                    Ok(httparse::Status::Complete((used, size))) => {
                        read.advance(used);
                        *self = if size == 0 { Chunk::Trailers } else { Chunk::Data(size) };
                    }
                    Ok(httparse::Status::Partial) if read.len() > MAX_LINE => return Err("chunk-size line too long"),
                    Ok(httparse::Status::Partial) => return Ok(Step::More),
                    Err(_) => return Err("malformed chunk size"),
                },
                Chunk::Data(left) => {
                    let step = take(read, left);
                    if *left == 0 {
                        *self = Chunk::DataEnd;
                    }
                    return Ok(step);
                }
                Chunk::DataEnd => {
                    if read.len() < 2 {
                        return Ok(Step::More);
                    }
                    if read[..2] != *b"\r\n" {
                        return Err("chunk data not followed by CRLF");
                    }
                    read.advance(2);
                    *self = Chunk::Size;
                }
                Chunk::Trailers => {
                    if read.starts_with(b"\r\n") {
                        read.advance(2);
                        return Ok(Step::End);
                    }
                    // Trailer fields (dropped) end at the first blank line; they must parse as fields.
                    let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") else {
                        if read.len() > MAX_TRAILERS {
                            return Err("trailer section too long");
                        }
                        return Ok(Step::More);
                    };
                    let mut fields = [httparse::EMPTY_HEADER; 16];
                    if !matches!(
                        httparse::parse_headers(&read[..end + 4], &mut fields),
                        Ok(httparse::Status::Complete(_))
                    ) {
                        return Err("malformed trailer");
                    }
                    read.advance(end + 4);
                    return Ok(Step::End);
                }
            }
        }
    }
}

/// Up to `left` bytes from `read`, counted off `left`.
fn take(read: &mut BytesMut, left: &mut u64) -> Step {
    if read.is_empty() {
        return Step::More;
    }
    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(read.len());
    *left -= n as u64;
    Step::Data(read.split_to(n).freeze())
}

impl Conn {
    /// Reads more of the response into `read`: the number of bytes read, 0 at the end of the stream.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        self.read.reserve(READ_CHUNK);
        loop {
            ready!(self.tcp.poll_read_ready(cx))?;
            match self.tcp.try_read_buf(&mut self.read) {
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
                done => return Poll::Ready(done),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` to a fresh decoder in pieces of `piece` bytes; the body it gives, and what
    /// is left over after its end.
    fn decode(mut decoder: Decoder, wire: &[u8], piece: usize) -> Result<(Vec<u8>, Vec<u8>), &'static str> {
        let mut read = BytesMut::new();
        let mut body = Vec::new();
        let mut pieces = wire.chunks(piece);
        loop {
            match decoder.step(&mut read)? {
                Step::Data(bytes) => body.extend_from_slice(&bytes),
                Step::End => return Ok((body, read.to_vec())),
                Step::More => match pieces.next() {
                    Some(next) => read.extend_from_slice(next),
                    None => return Err("the wire ended before the body"),
                },
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_however_the_bytes_arrive() {
        let wire = b"5;name=value\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: dropped\r\n\r\nNEXT";
        for piece in [1, 2, 3, 7, wire.len()] {
            let (body, rest) = decode(Decoder::Chunked(Chunk::Size), wire, piece).unwrap();
            assert_eq!(body, b"hello, world", "pieces of {piece}");
            assert!(b"NEXT".starts_with(&rest), "nothing after the body is taken (pieces of {piece})");
        }
    }

    #[test]
    fn length_delimited_bodies_stop_at_their_length() {
        let (body, rest) = decode(Decoder::Length(5), b"helloHTTP/1.1", 3).unwrap();
        assert_eq!(body, b"hello");
        assert_eq!(rest, b"H", "the byte read with the body's end is left for what follows");
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        assert_eq!(decode(Decoder::Chunked(Chunk::Size), b"zz\r\n", 64), Err("malformed chunk size"));
        // Found by the differential property test: httparse reads an empty size line as 0.
        assert_eq!(
            decode(Decoder::Chunked(Chunk::Size), b"1\r\na\r\n\r\n1\r\nb\r\n0\r\n\r\n", 64),
            Err("malformed chunk size")
        );
        assert_eq!(decode(Decoder::Chunked(Chunk::Size), b" 1\r\na\r\n0\r\n\r\n", 64), Err("malformed chunk size"));
        assert_eq!(
            decode(Decoder::Chunked(Chunk::Size), b"1;a\n1;b\r\nx\r\n0\r\n\r\n", 64),
            Err("malformed chunk size")
        );
        assert_eq!(decode(Decoder::Chunked(Chunk::Size), b"1\r\nx\r\n0\r\n\0\r\n\r\n", 64), Err("malformed trailer"));
        assert_eq!(decode(Decoder::Chunked(Chunk::Size), b"3\r\nabcX\r\n", 64), Err("chunk data not followed by CRLF"));
        let long = [&b"5;ext="[..], &[b'x'; MAX_LINE]].concat();
        assert_eq!(decode(Decoder::Chunked(Chunk::Size), &long, 64), Err("chunk-size line too long"));
        assert_eq!(decode(Decoder::Chunked(Chunk::Size), b"3\r\nab", 64), Err("the wire ended before the body"));
    }
}
