//! Properties of the client's hand-written protocol code, each checked on at least 1 000
//! generated or mutated inputs: the response-head parser and the chunk decoder never panic on
//! anything; the client agrees with hyper's on which responses it accepts and on the body it
//! delivers; the chunk decoder gives back any body however it was chunked and read; the request
//! writer writes what `httparse` reads back. Inputs that once failed are kept by proptest in
//! `proptest-regressions/` (committed) and tried first on every run.
//!
//! The corpus, `tests/corpus/responses/*.http`, holds whole responses as they came off a raw
//! socket: `nginx-*` from nginx 1.22.1 (static files, gzip in chunks, redirects, errors, ranges,
//! HEAD, 304, 413 to an oversized body, HTTP/1.0); `jokes-*`, `auth-*`, `projects-*` and
//! `gateway-*` from our services (hyper and axum, through `kit`), started in process as the
//! system tests start them. A response to `HEAD` has `head-` in its name.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Method};
use proptest::prelude::*;
use proptest::test_runner::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::fuzzing::{decode_chunked, parse_all};
use super::{send, sweep, Framing, RequestHead};
use crate::proxy::http1::parse_length;

/// Cases per property, at least: `PROPTEST_CASES` may ask for more (for a longer search).
const CASES: u32 = 1000;

fn config() -> Config {
    Config::with_cases(Config::default().cases.max(CASES))
}

/// The recorded responses, by file name.
static CORPUS: LazyLock<Vec<(String, Vec<u8>)>> = LazyLock::new(|| {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/responses");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus at {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    assert!(files.len() >= 15, "the corpus is there");
    files
});

/// The method a recorded response answered: `HEAD` for the `*head*` files.
fn method_of(name: &str) -> Method {
    if name.contains("head-") {
        Method::HEAD
    } else {
        Method::GET
    }
}

/// One change to a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        bit: u8,
    },
    Insert {
        at: usize,
        byte: u8,
    },
    Remove {
        at: usize,
        len: usize,
    },
    Truncate {
        at: usize,
    },
    /// A copy of a piece of the input put elsewhere (repeated headers, lines, chunks).
    Splice {
        from: usize,
        len: usize,
        to: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Bytes that matter to HTTP syntax come up more often than the rest.
    let byte = prop_oneof![any::<u8>(), prop::sample::select(&b"\r\n :;,0123456789abcdefABCDEF\t\"\x00\x7f\x80"[..])];
    prop_oneof![
        (any::<usize>(), 0..8u8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), byte).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        (any::<usize>(), 1..16usize).prop_map(|(at, len)| Mutation::Remove { at, len }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), 1..64usize, any::<usize>()).prop_map(|(from, len, to)| Mutation::Splice { from, len, to }),
    ]
}

fn mutate(input: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut out = input.to_vec();
    for mutation in mutations {
        let n = out.len().max(1);
        match *mutation {
            Mutation::Flip { at, bit } => {
                if let Some(byte) = out.get_mut(at % n) {
                    *byte ^= 1 << bit;
                }
            }
            Mutation::Insert { at, byte } => out.insert(at % (out.len() + 1), byte),
            Mutation::Remove { at, len } => {
                let start = at % n;
                let end = (start + len).min(out.len());
                out.drain(start.min(end)..end);
            }
            Mutation::Truncate { at } => out.truncate(at % n),
            Mutation::Splice { from, len, to } => {
                let start = from % n;
                let piece: Vec<u8> = out.iter().skip(start).take(len).copied().collect();
                let at = to % (out.len() + 1);
                out.splice(at..at, piece);
            }
        }
    }
    out
}

/// A recorded response and some changes to it.
fn mutated_corpus() -> impl Strategy<Value = (String, Vec<u8>)> {
    (0..CORPUS.len(), prop::collection::vec(mutation(), 1..6)).prop_map(|(i, mutations)| {
        let (name, bytes) = &CORPUS[i];
        (name.clone(), mutate(bytes, &mutations))
    })
}

/// A chunk extension: `;name` or `;name=value`, either a token or a quoted string.
fn chunk_extension() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z]{1,8}".prop_map(|name| format!(";{name}")),
        ("[a-z]{1,8}", "[a-zA-Z0-9]{0,8}").prop_map(|(name, value)| format!(";{name}={value}")),
        ("[a-z]{1,8}", "[a-zA-Z0-9 ]{0,8}").prop_map(|(name, value)| format!(";{name}=\"{value}\"")),
    ]
}

/// `body` chunk-encoded: cut where `cuts` say, each chunk with an extension from `extensions`,
/// the size in lower or upper case hex, and the given trailer lines.
fn encode_chunked(body: &[u8], cuts: &[usize], extensions: &[String], upper: bool, trailers: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut i = 0;
    while !rest.is_empty() {
        let len = (cuts.get(i).copied().unwrap_or(rest.len()) % rest.len()).max(1);
        let (chunk, after) = rest.split_at(len);
        let size = if upper { format!("{len:X}") } else { format!("{len:x}") };
        let extension = extensions.get(i % extensions.len().max(1)).map_or("", String::as_str);
        out.extend_from_slice(format!("{size}{extension}\r\n").as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
        rest = after;
        i += 1;
    }
    out.extend_from_slice(b"0\r\n");
    for trailer in trailers {
        out.extend_from_slice(format!("{trailer}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_head_parser_never_panics_on_arbitrary_bytes(wire in prop::collection::vec(any::<u8>(), 0..512)) {
        parse_all(&wire, &Method::GET);
        let with_status_line = [&b"HTTP/1.1 200 OK\r\n"[..], &wire].concat();
        parse_all(&with_status_line, &Method::GET);
    }

    #[test]
    fn the_head_parser_never_panics_on_mutated_recorded_responses((name, wire) in mutated_corpus()) {
        parse_all(&wire, &method_of(&name));
        parse_all(&wire, &Method::HEAD);
    }

    #[test]
    fn any_body_chunked_any_way_and_read_in_any_pieces_decodes_back(
        body in prop::collection::vec(any::<u8>(), 0..2048),
        cuts in prop::collection::vec(any::<usize>(), 0..16),
        extensions in prop::collection::vec(chunk_extension(), 1..4),
        upper in any::<bool>(),
        trailers in prop::collection::vec("[a-z]{1,8}: [a-z0-9 ]{0,16}", 0..3),
        pieces in prop::collection::vec(1..300usize, 1..8),
        next in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let wire = encode_chunked(&body, &cuts, &extensions, upper, &trailers);
        let followed = [&wire[..], &next].concat();
        let (decoded, rest) = decode_chunked(&followed, &pieces).map_err(TestCaseError::fail)?;
        prop_assert_eq!(decoded, body);
        prop_assert!(next.starts_with(&rest), "only what follows the body is left: {:?}", rest);
    }

    #[test]
    fn a_mutated_chunked_body_never_panics_nor_gives_more_bytes_than_it_has(
        body in prop::collection::vec(any::<u8>(), 0..512),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        extensions in prop::collection::vec(chunk_extension(), 1..3),
        mutations in prop::collection::vec(mutation(), 1..6),
        pieces in prop::collection::vec(1..64usize, 1..4),
    ) {
        let wire = mutate(&encode_chunked(&body, &cuts, &extensions, false, &[]), &mutations);
        if let Ok((decoded, rest)) = decode_chunked(&wire, &pieces) {
            prop_assert!(decoded.len() + rest.len() <= wire.len());
        }
    }

    #[test]
    fn the_request_head_written_reads_back_the_same_with_httparse(
        method in prop_oneof![
            prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]).prop_map(String::from),
            "[A-Z][A-Z!#$%&'*+.^_`|~0-9-]{0,11}",
        ],
        target in "/[a-zA-Z0-9/._~%!$&'()*+,;=:@-]{0,40}(\\?[a-zA-Z0-9/._~%!$&'()*+,;=:@?-]{0,40})?",
        headers in prop::collection::vec(
            ("[a-z0-9!#$%&'*+.^_`|~-]{1,20}", "[!-~]([ \t!-~]{0,30}[!-~])?"),
            0..20,
        ),
    ) {
        let method = Method::from_bytes(method.as_bytes()).map_err(|e| TestCaseError::reject(e.to_string()))?;
        let target = PathAndQuery::from_maybe_shared(target).map_err(|e| TestCaseError::reject(e.to_string()))?;
        let mut head = RequestHead::new(&method, &target);
        for (name, value) in &headers {
            head.header(&HeaderName::from_bytes(name.as_bytes()).unwrap(), &HeaderValue::from_str(value).unwrap());
        }
        let wire = [head.bytes(), b"host: 127.0.0.1:1\r\n\r\n"].concat();
        let mut slots = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut slots);
        prop_assert_eq!(parsed.parse(&wire), Ok(httparse::Status::Complete(wire.len())));
        prop_assert_eq!(parsed.method, Some(method.as_str()));
        prop_assert_eq!(parsed.path, Some(target.as_str()));
        prop_assert_eq!(parsed.version, Some(1));
        let read: Vec<(String, Vec<u8>)> =
            parsed.headers.iter().map(|h| (h.name.to_string(), h.value.to_vec())).collect();
        let mut written: Vec<(String, Vec<u8>)> =
            headers.iter().map(|(name, value)| (name.clone(), value.as_bytes().to_vec())).collect();
        written.push(("host".into(), b"127.0.0.1:1".to_vec()));
        prop_assert_eq!(read, written);
    }
}

// The differential test: the same bytes served to this client and to hyper's, over loopback.

/// What a client made of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// It passed the response on, with this status and body.
    Answered { status: u16, body: Vec<u8> },
    /// It refused it (head or body).
    Refused,
}

/// A response to generate: its parts, and how they differ from a plain well-formed one.
#[derive(Debug, Clone)]
struct Spec {
    method: Method,
    /// An interim `100 Continue` first.
    interim: bool,
    version: u8,
    status: u16,
    /// Headers other than the framing, in order.
    headers: Vec<(String, String)>,
    /// `Content-Length` values, each its own field.
    lengths: Vec<String>,
    /// `Transfer-Encoding` values, each its own field.
    codings: Vec<String>,
    body: Vec<u8>,
    /// How the body goes on the wire: chunk-encoded, or as it is.
    chunked: bool,
    cuts: Vec<usize>,
    extensions: Vec<String>,
    /// Bytes after the body (another response, or junk), the connection then closed.
    after: Vec<u8>,
}

impl Spec {
    fn wire(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.interim {
            out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        out.extend_from_slice(format!("HTTP/1.{} {} Reason\r\n", self.version, self.status).as_bytes());
        let lengths = self.lengths.iter().map(|v| ("Content-Length", v));
        let codings = self.codings.iter().map(|v| ("Transfer-Encoding", v));
        let others = self.headers.iter().map(|(n, v)| (n.as_str(), v));
        for (name, value) in others.chain(lengths).chain(codings) {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        if self.chunked {
            out.extend_from_slice(&encode_chunked(&self.body, &self.cuts, &self.extensions, false, &[]));
        } else {
            out.extend_from_slice(&self.body);
        }
        out.extend_from_slice(&self.after);
        out
    }
}

/// Where this client is meant to differ from hyper's, refusing a response (`wire`, answering a
/// `method` request) that hyper's client takes: why, or `None` where they must agree.
fn refused_on_purpose(wire: &[u8], method: &Method) -> Option<&'static str> {
    // The head as both clients parse it (with `httparse`), interim responses skipped.
    let mut at = 0;
    let mut slots = [httparse::EMPTY_HEADER; 100];
    let (status, version, fields) = loop {
        let mut response = httparse::Response::new(&mut slots);
        match response.parse(&wire[at..]) {
            Ok(httparse::Status::Complete(len)) if response.code.is_some_and(|c| c != 101 && c < 200) => at += len,
            Ok(httparse::Status::Complete(_)) => {
                let fields: Vec<(String, Vec<u8>)> =
                    response.headers.iter().map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec())).collect();
                break (response.code.unwrap_or_default(), response.version.unwrap_or_default(), fields);
            }
            // Refused by both, or never complete: both must say so.
            _ => return None,
        }
    };
    if status == 101 {
        return Some("101 Switching Protocols, never asked for");
    }
    let values = |name: &'static str| fields.iter().filter(move |(n, _)| n == name).map(|(_, v)| v.as_slice());
    // hyper takes a list (`5, 5`) whose values agree, and looks at no Content-Length when the
    // response has no body or a Transfer-Encoding; this client takes only one plain number
    // (RFC 9110 §8.6 lets a recipient refuse the rest), whatever the response.
    let mut lengths = values("content-length").map(parse_length);
    if let Some(first) = lengths.next() {
        if first.is_none() || lengths.any(|n| n != first) {
            return Some("a Content-Length that is not one plain number");
        }
    }
    let bodiless = *method == Method::HEAD || matches!(status, 204 | 304);
    // hyper takes `gzip, chunked` as chunked and passes on gzip bytes nobody asked for, and
    // `gzip` alone as close-delimited; this client refuses any coding but `chunked` alone
    // (see `head`), as nginx does. (Both refuse a Transfer-Encoding in HTTP/1.0.)
    let codings: Vec<&[u8]> = values("transfer-encoding").collect();
    let only_chunked = codings.len() == 1 && codings[0].trim_ascii().eq_ignore_ascii_case(b"chunked");
    if !bodiless && !codings.is_empty() && !only_chunked && version == 1 {
        return Some("a transfer coding other than chunked alone");
    }
    // A field value with a byte `http` does not take in a header (an obs-text byte is taken).
    if fields.iter().any(|(_, v)| HeaderValue::from_bytes(v).is_err()) {
        return Some("a header value http::HeaderValue refuses");
    }
    None
}

fn spec() -> impl Strategy<Value = Spec> {
    let header = prop_oneof![
        Just(("Content-Type".to_string(), "text/plain".to_string())),
        Just(("Connection".to_string(), "close".to_string())),
        Just(("Connection".to_string(), "keep-alive".to_string())),
        Just(("Content-Encoding".to_string(), "gzip".to_string())),
        ("x-[a-z]{1,8}", "[a-zA-Z0-9 ,;=]{0,16}"),
    ];
    let length = prop_oneof![
        4 => Just(None),
        1 => "[0-9]{1,3}".prop_map(Some),
        1 => Just(Some("+1".to_string())),
        1 => Just(Some("".to_string())),
    ];
    let codings = prop_oneof![
        6 => Just(vec![]),
        3 => Just(vec!["chunked".to_string()]),
        1 => Just(vec!["Chunked".to_string()]),
        1 => Just(vec!["gzip, chunked".to_string()]),
        1 => Just(vec!["gzip".to_string()]),
        1 => Just(vec!["gzip".to_string(), "chunked".to_string()]),
        1 => Just(vec!["chunked".to_string(), "chunked".to_string()]),
    ];
    (
        (
            prop::sample::select(vec![Method::GET, Method::HEAD]),
            any::<bool>(),
            prop::sample::select(vec![1u8, 1, 1, 0]),
        ),
        prop::sample::select(vec![200u16, 200, 201, 204, 206, 301, 304, 400, 404, 413, 500, 502, 599]),
        prop::collection::vec(header, 0..5),
        (length, 0..3usize, any::<bool>()),
        codings,
        prop::collection::vec(any::<u8>(), 0..300),
        (any::<bool>(), prop::collection::vec(any::<usize>(), 0..6), prop::collection::vec(chunk_extension(), 1..3)),
        prop_oneof![Just(vec![]), prop::collection::vec(any::<u8>(), 0..20)],
    )
        .prop_map(
            |(
                (method, interim, version),
                status,
                headers,
                (length, copies, honest),
                codings,
                body,
                (chunked, cuts, extensions),
                after,
            )| {
                // The declared length: the body's true one (`honest`), or the one generated.
                let value = if honest { Some(body.len().to_string()) } else { length };
                let mut lengths: Vec<String> = value.into_iter().collect();
                if copies == 2 {
                    lengths = lengths.iter().map(|v| format!("{v}, {v}")).collect();
                } else if copies == 1 {
                    lengths.extend(lengths.clone());
                }
                let chunked = chunked || codings.iter().any(|c| c.ends_with("chunked") || c.ends_with("Chunked"));
                Spec {
                    method,
                    interim,
                    version,
                    status,
                    headers,
                    lengths,
                    codings,
                    body,
                    chunked,
                    cuts,
                    extensions,
                    after,
                }
            },
        )
}

/// A one-connection instance at the returned address: it reads a request's head, sends `wire`,
/// closes its side and waits for the client to close its own.
async fn serve_once(wire: Vec<u8>) -> Arc<str> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let Ok((mut tcp, _)) = listener.accept().await else { return };
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            match tcp.read_u8().await {
                Ok(byte) => head.push(byte),
                Err(_) => return,
            }
        }
        let _ = tcp.write_all(&wire).await;
        let _ = tcp.shutdown().await;
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest)).await;
    });
    address.into()
}

async fn ours(wire: Vec<u8>, method: &Method) -> Outcome {
    let address = serve_once(wire).await;
    let head = RequestHead::new(method, &PathAndQuery::from_static("/"));
    let outcome = match send(&address, &head, Framing::None, Body::empty()).await {
        Err(_) => Outcome::Refused,
        Ok(response) => {
            let status = response.status().as_u16();
            match axum::body::to_bytes(response.into_body(), usize::MAX).await {
                Ok(body) => Outcome::Answered { status, body: body.to_vec() },
                Err(_) => Outcome::Refused,
            }
        }
    };
    // No pooled connection outlives its case (a later case's instance may get the same port).
    sweep(Duration::ZERO);
    outcome
}

async fn hypers(wire: Vec<u8>, method: &Method) -> Outcome {
    use http_body_util::BodyExt;
    let address = serve_once(wire).await;
    let tcp = TcpStream::connect(&*address).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let request = http::Request::builder()
        .method(method)
        .uri("/")
        .header(http::header::HOST, &*address)
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    match sender.send_request(request).await {
        Err(_) => Outcome::Refused,
        Ok(response) => {
            let status = response.status().as_u16();
            match response.into_body().collect().await {
                Ok(body) => Outcome::Answered { status, body: body.to_bytes().to_vec() },
                Err(_) => Outcome::Refused,
            }
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Both clients' outcomes for `wire`, answering a `method` request.
fn both(runtime: &tokio::runtime::Runtime, wire: &[u8], method: &Method) -> (Outcome, Outcome) {
    runtime.block_on(async { (ours(wire.to_vec(), method).await, hypers(wire.to_vec(), method).await) })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_client_accepts_what_hypers_does_and_delivers_the_same_body(spec in spec()) {
        agree(&spec.wire(), &spec.method)?;
    }

    #[test]
    fn the_client_and_hypers_agree_on_mutated_chunked_bodies(
        spec in spec(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        // A plain chunked response, its head left whole and its body changed.
        let spec = Spec {
            method: Method::GET,
            interim: false,
            version: 1,
            status: 200,
            lengths: vec![],
            codings: vec!["chunked".into()],
            chunked: true,
            after: vec![],
            ..spec
        };
        let wire = spec.wire();
        let head = wire.windows(4).position(|w| w == b"\r\n\r\n").map_or(0, |at| at + 4);
        let wire = [&wire[..head], &mutate(&wire[head..], &mutations)].concat();
        agree(&wire, &spec.method)?;
    }

    #[test]
    fn the_client_and_hypers_agree_on_mutated_recorded_responses((name, wire) in mutated_corpus()) {
        agree(&wire, &method_of(&name))?;
    }
}

/// Serves `wire` to both clients: they agree, or this one refuses where it is meant to.
fn agree(wire: &[u8], method: &Method) -> Result<(), TestCaseError> {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = runtime();
    }
    let (ours, hypers) = RUNTIME.with(|runtime| both(runtime, wire, method));
    match refused_on_purpose(wire, method) {
        Some(why) => prop_assert_eq!(ours, Outcome::Refused, "{} in {:?}", why, String::from_utf8_lossy(wire)),
        None => prop_assert_eq!(ours, hypers, "{:?}", String::from_utf8_lossy(wire)),
    }
    Ok(())
}

#[test]
fn the_client_and_hypers_agree_on_every_recorded_response() {
    let runtime = runtime();
    for (name, wire) in CORPUS.iter() {
        let (ours, hypers) = both(&runtime, wire, &method_of(name));
        assert!(matches!(ours, Outcome::Answered { .. }), "{name}: {ours:?}");
        assert_eq!(ours, hypers, "{name}");
    }
}
