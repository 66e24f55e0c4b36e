//! Writing a response on the fast path: the status line, the headers, the framing
//! chosen here from the body (`Content-Length` when its size is known, chunked otherwise), a
//! `Date` when there is none, and `Connection: close` when the connection ends after it. A small
//! body goes out in the same `write` as the head.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{header, StatusCode};
use hyper::body::Body as _;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use axum::body::Body;
use http::Response;

use crate::proxy::http1::push_chunk;
use crate::proxy::upstream_client::next_data;

/// A body of known size up to this is gathered and written with its head in one `write`.
const WHOLE_BODY: u64 = 64 * 1024;

/// Why a response could not be written whole: the connection must be closed, since the client
/// cannot tell where this response ends.
#[derive(Debug, thiserror::Error)]
pub(super) enum WriteError {
    /// Writing to the client failed.
    #[error("writing to the client: {0}")]
    Io(#[from] std::io::Error),
    /// The body broke off (its upstream failed mid-answer, say).
    #[error("the response body failed: {0}")]
    Body(#[from] axum::Error),
    /// The body's length differs from the size it declared.
    #[error("the response body has a different length than it declared ({0})")]
    Length(u64),
}

/// Writes `response` to `out`; `close` says the connection ends after it. `buf` is the
/// connection's write buffer, reused from one response to the next.
pub(super) async fn write<W: AsyncWrite + Unpin>(
    out: &mut W,
    buf: &mut Vec<u8>,
    response: Response<Body>,
    close: bool,
) -> Result<(), WriteError> {
    let (parts, mut body) = response.into_parts();
    let status = parts.status;
    buf.clear();
    buf.extend_from_slice(b"HTTP/1.1 ");
    buf.extend_from_slice(status.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    buf.extend_from_slice(b"\r\n");
    // 204 and 304 have no body; a 304's Content-Length describes the resource, so it stays.
    let bodiless = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let mut dated = false;
    for (name, value) in &parts.headers {
        if (name == header::CONTENT_LENGTH && status != StatusCode::NOT_MODIFIED)
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
        {
            continue;
        }
        dated |= name == header::DATE;
        buf.extend_from_slice(name.as_str().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(value.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    if !dated {
        buf.extend_from_slice(b"date: ");
        with_date(|date| buf.extend_from_slice(date));
        buf.extend_from_slice(b"\r\n");
    }
    if close {
        buf.extend_from_slice(b"connection: close\r\n");
    }
    if bodiless {
        buf.extend_from_slice(b"\r\n");
        out.write_all(buf).await?;
        return Ok(());
    }
    match body.size_hint().exact() {
        Some(length) => {
            buf.extend_from_slice(b"content-length: ");
            buf.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
            buf.extend_from_slice(b"\r\n\r\n");
            if length <= WHOLE_BODY {
                // Gathered behind the head: one write for the whole response.
                let head_len = buf.len() as u64;
                while let Some(data) = next_data(&mut body).await? {
                    if buf.len() as u64 - head_len + data.len() as u64 > length {
                        return Err(WriteError::Length(length));
                    }
                    buf.extend_from_slice(&data);
                }
                if buf.len() as u64 - head_len != length {
                    return Err(WriteError::Length(length));
                }
                out.write_all(buf).await?;
            } else {
                out.write_all(buf).await?;
                let mut sent = 0u64;
                while let Some(data) = next_data(&mut body).await? {
                    sent += data.len() as u64;
                    if sent > length {
                        return Err(WriteError::Length(length));
                    }
                    out.write_all(&data).await?;
                }
                if sent != length {
                    return Err(WriteError::Length(length));
                }
            }
        }
        None => {
            buf.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
            out.write_all(buf).await?;
            while let Some(data) = next_data(&mut body).await? {
                buf.clear();
                push_chunk(buf, &data);
                out.write_all(buf).await?;
            }
            out.write_all(b"0\r\n\r\n").await?;
        }
    }
    Ok(())
}

thread_local! {
    /// The current second and its `Date` value: formatted once a second per thread, as hyper does.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

fn with_date(write: impl FnOnce(&[u8])) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(cached, date)| {
        if *cached != second {
            *cached = second;
            *date = httpdate::fmt_http_date(now);
        }
        write(date.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse;
    use bytes::Bytes;
    use futures::stream;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    use super::*;

    async fn written(response: Response<Body>, close: bool) -> Result<String, WriteError> {
        let mut out = Vec::new();
        write(&mut out, &mut Vec::new(), response, close).await?;
        Ok(String::from_utf8(out).unwrap())
    }

    fn streamed(pieces: &[&'static str]) -> Body {
        let frames = pieces.iter().map(|p| Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(p.as_bytes()))));
        Body::new(StreamBody::new(stream::iter(frames.collect::<Vec<_>>())))
    }

    fn without_date(text: &str) -> String {
        text.lines().filter(|l| !l.starts_with("date: ")).collect::<Vec<_>>().join("\n")
    }

    #[tokio::test]
    async fn a_known_length_is_sent_as_content_length_with_the_body_behind_the_head() {
        let mut response = (StatusCode::CREATED, [("x-a", "1")], "hello").into_response();
        response.headers_mut().insert(header::CONTENT_LENGTH, "999".parse().unwrap());
        response.headers_mut().insert(header::CONNECTION, "keep-alive".parse().unwrap());
        let text = written(response, false).await.unwrap();
        assert_eq!(
            without_date(&text),
            "HTTP/1.1 201 Created\ncontent-type: text/plain; charset=utf-8\nx-a: 1\ncontent-length: 5\n\nhello"
        );
        assert!(text.contains("\r\ndate: "), "a Date is added: {text}");
    }

    #[tokio::test]
    async fn an_unknown_length_is_sent_chunked_and_close_is_announced() {
        let text = written(Response::new(streamed(&["ab", "", "cde"])), true).await.unwrap();
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert!(text.ends_with("transfer-encoding: chunked\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"), "{text}");
    }

    #[tokio::test]
    async fn no_content_and_not_modified_have_no_body() {
        let text = written(StatusCode::NO_CONTENT.into_response(), false).await.unwrap();
        assert!(text.starts_with("HTTP/1.1 204 No Content\r\n") && text.ends_with("\r\n\r\n"), "{text}");
        assert!(!text.contains("content-length"), "{text}");
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response.headers_mut().insert(header::CONTENT_LENGTH, "42".parse().unwrap());
        let text = written(response, false).await.unwrap();
        assert!(text.contains("content-length: 42\r\n") && text.ends_with("\r\n\r\n"), "{text}");
    }

    #[tokio::test]
    async fn the_upstreams_date_is_kept() {
        let response = ([(header::DATE, "Tue, 01 Dec 2026 10:00:00 GMT")], "x").into_response();
        let text = written(response, false).await.unwrap();
        assert_eq!(text.matches("date: ").count(), 1, "{text}");
        assert!(text.contains("date: Tue, 01 Dec 2026 10:00:00 GMT\r\n"));
    }

    #[tokio::test]
    async fn a_body_shorter_or_longer_than_declared_is_an_error() {
        struct Lying(Body, u64);
        impl hyper::body::Body for Lying {
            type Data = Bytes;
            type Error = axum::Error;
            fn poll_frame(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
                std::pin::Pin::new(&mut self.0).poll_frame(cx)
            }
            fn size_hint(&self) -> hyper::body::SizeHint {
                hyper::body::SizeHint::with_exact(self.1)
            }
        }
        for (declared, pieces) in [(4, &["ab"][..]), (4, &["ab", "cde"][..]), (100_000, &["ab"][..])] {
            let response = Response::new(Body::new(Lying(streamed(pieces), declared)));
            assert!(matches!(written(response, false).await, Err(WriteError::Length(n)) if n == declared));
        }
    }
}
