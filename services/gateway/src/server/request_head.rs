//! Reading a client's request head for the fast path: which requests it takes, and the
//! `http::Request` they become. Everything it does not take is left to hyper, untouched.

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};

use crate::proxy::http1;
use crate::proxy::routes::{self, Route};

/// Most headers a request may carry on the fast path (hyper's own limit; beyond it hyper answers 431).
const MAX_HEADERS: usize = 100;
/// A head still incomplete after this many bytes is left to hyper, which has its own limits.
const MAX_HEAD: usize = 64 * 1024;

/// What the bytes read so far from a connection hold.
// Returned once per request and taken apart at once: boxing the large variant would only add an
// allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(super) enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A request the fast path serves.
    Proxied(Proxied),
    /// Anything else: hyper serves the connection from here on, starting with these bytes.
    HandOff,
}

/// A request for an upstream route, ready but for its body.
#[derive(Debug)]
pub(super) struct Proxied {
    /// Method, target and headers.
    pub request: Request<()>,
    /// The route its path falls under.
    pub route: &'static Route,
    /// How many bytes of the buffer its head took.
    pub head_len: usize,
    /// Its body's length (`Content-Length`; 0 without one), all of which is read before it is sent on.
    pub body_len: usize,
    /// The client asked to close the connection after this request (`Connection: close`).
    pub close: bool,
}

/// Parses the request at the start of `buf`. The fast path takes only the plainest requests: an
/// HTTP/1.1 `GET`, `POST`, `PUT`, `PATCH` or `DELETE` in origin form for one of `routes`, whose
/// body, if any, has one `Content-Length` of at most `body_cap` bytes. Any other request — another
/// version or method, `Transfer-Encoding`, several or odd `Content-Length`s, `Expect`, `Upgrade`,
/// a head the parser refuses — and anything for the gateway's own pages is handed to hyper, which
/// answers it (with a 400, say) exactly as it would have without the fast path. So the fast path
/// never decides how a message is framed when there is anything to decide.
pub(super) fn parse(buf: &[u8], routes: &'static [Route], body_cap: usize) -> Parsed {
    // Left uninitialised: the parser writes the slots it uses.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let head_len =
        match httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut parsed, buf, &mut slots) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Parsed::Partial,
            _ => return Parsed::HandOff,
        };
    match proxied(&parsed, buf, head_len, routes, body_cap) {
        Some(proxied) => Parsed::Proxied(proxied),
        None => Parsed::HandOff,
    }
}

fn proxied(
    parsed: &httparse::Request<'_, '_>,
    buf: &[u8],
    head_len: usize,
    routes: &'static [Route],
    body_cap: usize,
) -> Option<Proxied> {
    if parsed.version != Some(1) {
        return None;
    }
    let method = match parsed.method? {
        "GET" => Method::GET,
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "PATCH" => Method::PATCH,
        "DELETE" => Method::DELETE,
        _ => return None,
    };
    // One copy of the head; the target and header values become slices of it.
    let head = Bytes::copy_from_slice(&buf[..head_len]);
    let slice = |part: &[u8]| {
        let start = part.as_ptr() as usize - buf.as_ptr() as usize;
        head.slice(start..start + part.len())
    };
    let target = parsed.path?;
    if !target.starts_with('/') {
        return None;
    }
    let uri = Uri::from_maybe_shared(slice(target.as_bytes())).ok()?;
    let route = routes::find_in(routes, uri.path())?;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    let mut length: Option<u64> = None;
    let mut close = false;
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes()).ok()?;
        if name == header::CONTENT_LENGTH {
            if length.is_some() {
                return None;
            }
            length = Some(http1::parse_length(field.value)?);
        } else if name == header::CONNECTION {
            for token in http1::tokens(field.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return None;
                }
            }
        } else if name == header::TRANSFER_ENCODING || name == header::EXPECT || name == header::UPGRADE {
            return None;
        }
        headers.append(name, HeaderValue::from_maybe_shared(slice(field.value)).ok()?);
    }
    let body_len = usize::try_from(length.unwrap_or(0)).ok().filter(|n| *n <= body_cap)?;
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Some(Proxied { request, route, head_len, body_len, close })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &[Route] = routes::ROUTES;

    fn parse_one(raw: &str) -> Parsed {
        parse(raw.as_bytes(), ROUTES, 1024)
    }

    fn proxied(raw: &str) -> Proxied {
        match parse_one(raw) {
            Parsed::Proxied(p) => p,
            other => panic!("not taken by the fast path: {other:?} for {raw:?}"),
        }
    }

    fn handed_off(raw: &str) -> bool {
        matches!(parse_one(raw), Parsed::HandOff)
    }

    #[test]
    fn a_plain_request_for_an_upstream_route_becomes_a_request() {
        let p = proxied("GET /joke?category=pun HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nX-A: 1\r\nX-A: 2\r\n\r\n");
        assert_eq!(p.request.method(), Method::GET);
        assert_eq!(p.request.uri().path(), "/joke");
        assert_eq!(p.request.uri().query(), Some("category=pun"));
        assert_eq!(p.route.service, "jokes");
        assert_eq!(p.request.headers()["accept"], "*/*");
        let repeated: Vec<_> = p.request.headers().get_all("x-a").iter().collect();
        assert_eq!(repeated, ["1", "2"], "repeated headers are kept in order");
        assert_eq!((p.body_len, p.close), (0, false));
        assert_eq!(
            p.head_len,
            "GET /joke?category=pun HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nX-A: 1\r\nX-A: 2\r\n\r\n".len()
        );
    }

    #[test]
    fn only_the_first_of_pipelined_requests_is_read() {
        let first = "POST /login HTTP/1.1\r\nContent-Length: 5\r\n\r\n";
        let p = proxied(&format!("{first}hello GET /joke HTTP/1.1\r\n\r\n"));
        assert_eq!((p.head_len, p.body_len), (first.len(), 5));
    }

    #[test]
    fn connection_close_is_noticed_among_other_tokens() {
        assert!(proxied("GET /joke HTTP/1.1\r\nConnection: x-hop, Close\r\n\r\n").close);
    }

    #[test]
    fn an_incomplete_head_waits_for_more_bytes() {
        assert!(matches!(parse_one("GET /joke HTTP/1.1\r\nHost: x\r\n"), Parsed::Partial));
        assert!(matches!(parse_one("GET /jo"), Parsed::Partial));
    }

    #[test]
    fn anything_but_the_plainest_request_is_left_to_hyper() {
        for raw in [
            // Another version, method or target form.
            "GET /joke HTTP/1.0\r\n\r\n",
            "HEAD /joke HTTP/1.1\r\n\r\n",
            "OPTIONS /joke HTTP/1.1\r\n\r\n",
            "CONNECT jokes:80 HTTP/1.1\r\n\r\n",
            "GET http://x/joke HTTP/1.1\r\n\r\n",
            // Not an upstream route: the gateway's own pages.
            "GET / HTTP/1.1\r\n\r\n",
            "GET /jokes-and-more HTTP/1.1\r\n\r\n",
            // Framing with anything to decide.
            "POST /joke HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /joke HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /joke HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            "POST /joke HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n",
            "POST /joke HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
            "POST /joke HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "POST /joke HTTP/1.1\r\nContent-Length: 2048\r\n\r\n",
            "POST /joke HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            "GET /joke HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            // What the parser refuses: hyper answers it with a 400.
            "GET /joke HTTP/1.1\r\nX-Folded: a\r\n b\r\n\r\n",
            "GET /joke HTTP/1.1\r\nBad Name: a\r\n\r\n",
            "GET /jo ke HTTP/1.1\r\n\r\n",
            "GET /joke HTTP/1.1\nX: \x01\r\n\r\n",
        ] {
            assert!(handed_off(raw), "fast path took {raw:?}");
        }
    }

    #[test]
    fn a_head_too_long_to_wait_for_is_left_to_hyper() {
        let long = format!("GET /joke HTTP/1.1\r\nX-Long: {}", "a".repeat(MAX_HEAD));
        assert!(handed_off(&long));
    }
}
