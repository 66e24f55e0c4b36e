//! Message heads on the upstream side: the request's, written once in wire form and sent on
//! whichever connection takes it, and the response's, parsed with `httparse` (the parser hyper
//! itself uses) into an `http::HeaderMap` whose values share one copy of the bytes read.
//!
//! Transfer codings (RFC 9112 §6.1): the only one understood is `chunked`, alone. A response
//! with a body whose `Transfer-Encoding` is anything else (`gzip, chunked`, `gzip`, `chunked`
//! twice, an empty value) is refused, so the proxy answers 502, as nginx does ("upstream sent
//! unknown Transfer-Encoding"). Such codings belong to the hop, not to the content: the
//! gateway's server frames its own response, so passing the body on without the coding would
//! hand the client, say, gzip bytes it was never told about, and the gateway does not decode
//! them. `Transfer-Encoding` in an HTTP/1.0 response is refused too (§6.1: the framing is
//! faulty). For a bodiless response (to `HEAD`, 204, 304) the header frames nothing and is
//! only dropped, like every hop-by-hop header.

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use crate::proxy::http1::{is_hop_by_hop, parse_length, tokens};

/// Most headers a response may carry.
const MAX_HEADERS: usize = 100;

/// How a request's body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body, and no framing header (a `GET`, say).
    None,
    /// `Content-Length: n`, then exactly `n` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`: the length is not known up front.
    Chunked,
}

/// A request's head in wire form, without `Host` and the framing header: [`super::send`] adds
/// those for the instance it picks, so a retry on another instance sends the same head.
#[derive(Debug, Clone)]
pub struct RequestHead {
    bytes: Vec<u8>,
    method: Method,
}

impl RequestHead {
    /// The request line `METHOD target HTTP/1.1`, `target` in origin form (path and query).
    pub fn new(method: &Method, target: &PathAndQuery) -> Self {
        let mut bytes = Vec::with_capacity(512);
        bytes.extend_from_slice(method.as_str().as_bytes());
        bytes.push(b' ');
        bytes.extend_from_slice(target.as_str().as_bytes());
        bytes.extend_from_slice(b" HTTP/1.1\r\n");
        Self { bytes, method: method.clone() }
    }

    /// Adds the header `name: value`. Both are `http` types, which cannot hold a CR or LF, so
    /// nothing a client sent can end the head early or add a header of its own.
    pub fn header(&mut self, name: &HeaderName, value: &HeaderValue) {
        self.bytes.extend_from_slice(name.as_str().as_bytes());
        self.bytes.extend_from_slice(b": ");
        self.bytes.extend_from_slice(value.as_bytes());
        self.bytes.extend_from_slice(b"\r\n");
    }

    /// The request's method (a `HEAD` is responseed without a body, whatever the headers say).
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The request line and headers written so far.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// How an response's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyLength {
    /// No body: a `HEAD`'s response, 204, 304, or `Content-Length: 0`.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the instance closes the connection.
    UntilClose,
}

/// A response's head, ready to be passed on.
#[derive(Debug)]
pub(super) struct ResponseHead {
    pub status: StatusCode,
    /// Its headers, less the hop-by-hop ones.
    pub headers: HeaderMap,
    pub body: BodyLength,
    /// Whether the connection may carry another request once this response is read.
    pub keep_alive: bool,
    /// The bytes read after the head: the start of the body (usually all of it).
    pub rest: Bytes,
}

/// What the bytes read so far hold.
#[derive(Debug)]
pub(super) enum Parsed {
    /// A final response's head; every byte read is in it or in its `rest`.
    Complete(ResponseHead),
    /// An interim (1xx) response's head, `usize` bytes long, to be skipped.
    Interim(usize),
    /// Not a whole head yet.
    Partial,
}

/// Parses the response to a `method` request at the start of `buf`; `Err` says what is wrong with it.
///
/// `buf` is copied once: the header values and the start of the body (usually all of it) are
/// slices of that copy.
pub(super) fn parse_response(buf: &[u8], method: &Method) -> Result<Parsed, &'static str> {
    // Left uninitialised: the parser writes the slots it uses (zeroing all of them would cost
    // more than parsing a small head).
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut response, buf, &mut slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err("too many headers"),
        Err(_) => return Err("malformed head"),
    };
    let status = response.code.and_then(|code| StatusCode::from_u16(code).ok()).ok_or("bad status code")?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err("switched protocols unasked");
    }
    if status.is_informational() {
        return Ok(Parsed::Interim(len));
    }
    let http10 = response.version == Some(0);
    let fields = &*response.headers;
    // `Connection` first: it decides reuse and may name more headers to leave out.
    let mut keep_alive = !http10;
    let mut has_connection = false;
    for field in fields.iter().filter(|f| f.name.eq_ignore_ascii_case("connection")) {
        has_connection = true;
        for token in tokens(field.value) {
            if token.eq_ignore_ascii_case(b"close") {
                keep_alive = false;
            } else if http10 && token.eq_ignore_ascii_case(b"keep-alive") {
                keep_alive = true;
            }
        }
    }
    let read = Bytes::copy_from_slice(buf);
    let slice = |part: &[u8]| {
        let start = part.as_ptr() as usize - buf.as_ptr() as usize;
        read.slice(start..start + part.len())
    };
    let mut headers = HeaderMap::with_capacity(fields.len());
    let mut length = None;
    // `Some(true)` when `Transfer-Encoding` is one field saying `chunked`, `Some(false)` for any other.
    let mut transfer_encoding = None;
    for field in fields {
        // `httparse` accepts only tokens as names, and values `http` accepts too.
        let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| "malformed head")?;
        if name == header::CONTENT_LENGTH {
            let n = parse_length(field.value).ok_or("bad Content-Length")?;
            if length.is_some_and(|m| m != n) {
                return Err("conflicting Content-Length headers");
            }
            // Kept once: a `HEAD`'s or 304's length is the client's to know.
            if length.replace(n).is_some() {
                continue;
            }
        } else if name == header::TRANSFER_ENCODING {
            // A second field, even another `chunked`, adds a coding: not understood.
            let only_chunked = transfer_encoding.is_none() && field.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
            transfer_encoding = Some(only_chunked);
            continue;
        } else if is_hop_by_hop(name.as_str()) || (has_connection && listed_in_connection(fields, name.as_str())) {
            continue;
        }
        let value = HeaderValue::from_maybe_shared(slice(field.value)).map_err(|_| "malformed head")?;
        headers.append(name, value);
    }
    let bodiless = *method == Method::HEAD || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let body = if bodiless {
        BodyLength::Empty
    } else if let Some(only_chunked) = transfer_encoding {
        if http10 {
            return Err("Transfer-Encoding in an HTTP/1.0 response");
        }
        if !only_chunked {
            return Err("unsupported Transfer-Encoding");
        }
        // Transfer-Encoding overrides Content-Length; a message with both is not trusted for reuse.
        if length.is_some() {
            headers.remove(header::CONTENT_LENGTH);
            keep_alive = false;
        }
        BodyLength::Chunked
    } else {
        match length {
            Some(0) => BodyLength::Empty,
            Some(n) => BodyLength::Length(n),
            None => {
                keep_alive = false;
                BodyLength::UntilClose
            }
        }
    };
    Ok(Parsed::Complete(ResponseHead { status, headers, body, keep_alive, rest: read.slice(len..) }))
}

fn listed_in_connection(fields: &[httparse::Header<'_>], name: &str) -> bool {
    fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("connection"))
        .any(|f| tokens(f.value).any(|token| token.eq_ignore_ascii_case(name.as_bytes())))
}

#[cfg(test)]
mod tests {
    use http::header;

    use super::*;

    fn complete(raw: &str, method: Method) -> ResponseHead {
        match parse_response(raw.as_bytes(), &method) {
            Ok(Parsed::Complete(head)) => {
                let len = raw.find("\r\n\r\n").unwrap() + 4;
                assert_eq!(head.rest, &raw.as_bytes()[len..], "the head ends after the blank line");
                head
            }
            other => panic!("not a complete head: {other:?}"),
        }
    }

    #[test]
    fn the_request_head_is_the_request_line_and_the_headers_given() {
        let mut head = RequestHead::new(&Method::POST, &PathAndQuery::from_static("/projects?page=2"));
        head.header(&header::CONTENT_TYPE, &HeaderValue::from_static("application/json"));
        assert_eq!(head.bytes(), b"POST /projects?page=2 HTTP/1.1\r\ncontent-type: application/json\r\n");
        assert_eq!(head.method(), Method::POST);
    }

    #[test]
    fn a_length_delimited_response_keeps_its_headers_and_the_connection() {
        let head =
            complete("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello", Method::GET);
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.body, BodyLength::Length(5));
        assert!(head.keep_alive);
        assert_eq!(head.headers.get("content-type"), Some(&HeaderValue::from_static("text/plain")));
        assert_eq!(head.headers.get("content-length").unwrap(), "5");
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_left_out() {
        let head = complete(
            "HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\nKeep-Alive: timeout=5\r\nX-Secret: 1\r\nX-Kept: 2\r\nContent-Length: 0\r\n\r\n",
            Method::GET,
        );
        assert!(!head.keep_alive, "Connection: close");
        assert_eq!(head.body, BodyLength::Empty);
        assert!(head.headers.get("connection").is_none());
        assert!(head.headers.get("keep-alive").is_none());
        assert!(head.headers.get("x-secret").is_none(), "named by Connection");
        assert_eq!(head.headers.get("x-kept").unwrap(), "2");
    }

    #[test]
    fn the_body_length_follows_rfc_9112() {
        let chunked = complete("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n", Method::GET);
        assert_eq!(chunked.body, BodyLength::Chunked);
        assert!(chunked.keep_alive);
        assert!(chunked.headers.get("transfer-encoding").is_none(), "the gateway's server frames its own response");

        let both = complete("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", Method::GET);
        assert_eq!(both.body, BodyLength::Chunked, "Transfer-Encoding overrides Content-Length");
        assert!(both.headers.get("content-length").is_none());
        assert!(!both.keep_alive, "a message with both is not trusted for reuse");

        let unframed = complete("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", Method::GET);
        assert_eq!(unframed.body, BodyLength::UntilClose);
        assert!(!unframed.keep_alive);

        let head = complete("HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n", Method::HEAD);
        assert_eq!(head.body, BodyLength::Empty, "HEAD");
        assert_eq!(head.headers.get("content-length").unwrap(), "42", "kept for the client");
        assert!(head.keep_alive);
        for status in [204, 304] {
            let head = complete(&format!("HTTP/1.1 {status} X\r\n\r\n"), Method::GET);
            assert_eq!(head.body, BodyLength::Empty, "{status}");
            assert!(head.keep_alive, "{status}");
        }

        let old = complete("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", Method::GET);
        assert!(!old.keep_alive, "HTTP/1.0 closes unless it says keep-alive");
        let old = complete("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n", Method::GET);
        assert!(old.keep_alive);
    }

    #[test]
    fn a_transfer_coding_other_than_chunked_alone_is_refused() {
        let refused = |raw: &str| parse_response(raw.as_bytes(), &Method::GET).err();
        for codings in ["gzip, chunked", "gzip", "chunked, chunked", "chunked;q=1", ""] {
            let raw = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {codings}\r\n\r\n");
            assert_eq!(refused(&raw), Some("unsupported Transfer-Encoding"), "{codings:?}");
        }
        let split = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(refused(split), Some("unsupported Transfer-Encoding"), "two fields make one list");
        let twice = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(refused(twice), Some("unsupported Transfer-Encoding"));
        assert_eq!(
            refused("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Some("Transfer-Encoding in an HTTP/1.0 response")
        );
        // Without a body the header frames nothing: it is dropped like any hop-by-hop header.
        let head = complete("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Method::HEAD);
        assert_eq!(head.body, BodyLength::Empty);
        assert!(head.headers.get("transfer-encoding").is_none());
    }

    #[test]
    fn interim_responses_are_skipped_and_partial_heads_wait_for_more() {
        assert!(matches!(
            parse_response(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200", &Method::POST),
            Ok(Parsed::Interim(25))
        ));
        assert!(matches!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Le", &Method::GET), Ok(Parsed::Partial)));
    }

    #[test]
    fn malformed_responses_are_refused_with_the_reason() {
        let refused = |raw: &str| match parse_response(raw.as_bytes(), &Method::GET) {
            Err(reason) => reason,
            Ok(parsed) => panic!("accepted {raw:?}: {parsed:?}"),
        };
        assert_eq!(
            refused("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            "conflicting Content-Length headers"
        );
        assert_eq!(refused("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"), "bad Content-Length");
        assert_eq!(refused("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n"), "bad Content-Length");
        assert_eq!(
            refused("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"),
            "switched protocols unasked"
        );
        assert_eq!(refused("HTTP/1.1 999999 Huh\r\n\r\n"), "malformed head");
        assert_eq!(refused("SMTP ready\r\n\r\n"), "malformed head");
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
        assert_eq!(refused(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")), "too many headers");
    }
}
