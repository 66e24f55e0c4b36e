//! The gateway on the wire: what a client speaking HTTP/1.1 byte by byte gets, and one speaking
//! HTTP/2 without TLS (prior knowledge). Keep-alive and pipelined requests are answered in order,
//! each framed exactly; a request whose framing leaves anything to decide (both `Content-Length`
//! and `Transfer-Encoding`, conflicting lengths, folded headers) is decided once, by hyper's
//! rules, or refused — so no request can hide inside another; the gateway closes a connection
//! when asked and when it stops, after answering what it began.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{spawn_echo, spawn_gateway_with, spawn_registry, Running};

/// How long a test waits for the gateway to answer or close.
const PATIENCE: Duration = Duration::from_secs(10);

/// A registry, the echo service and a gateway routing `/echo` to it without needing a user.
struct Echoed {
    gateway: Running,
    _echo: Running,
    _registry: Running,
}

async fn echoed(body_limit: usize) -> Echoed {
    echoed_within(body_limit, Duration::from_secs(5)).await
}

/// [`echoed`], the echo service given `timeout` to answer.
async fn echoed_within(body_limit: usize, timeout: Duration) -> Echoed {
    let registry = spawn_registry().await;
    let echo = spawn_echo(&registry.as_url(), vec![]).await;
    let gateway = spawn_gateway_with(&registry.as_url(), &echo, |config| {
        let open = gateway::proxy::routes::Route::new("/echo", "echo").timeout(timeout);
        config.routes = Box::leak(vec![open].into_boxed_slice());
        config.body_limit = body_limit;
    })
    .await;
    Echoed { gateway, _echo: echo, _registry: registry }
}

/// One answer as it came off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// What the echo service saw.
    fn seen(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// A client connection that writes raw bytes and reads answers off the wire itself.
struct Wire {
    tcp: TcpStream,
    read: Vec<u8>,
}

impl Wire {
    async fn open(gateway: &Running) -> Self {
        let tcp = TcpStream::connect(gateway.url.trim_start_matches("http://")).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        Self { tcp, read: Vec::new() }
    }

    async fn send(&mut self, raw: &str) {
        self.tcp.write_all(raw.as_bytes()).await.unwrap();
    }

    /// Reads more bytes; `false` at the end of the stream.
    async fn more(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        let n =
            tokio::time::timeout(PATIENCE, self.tcp.read(&mut chunk)).await.expect("the gateway answers").unwrap_or(0);
        self.read.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The next answer (to a request that is not a `HEAD`).
    async fn answer(&mut self) -> Answer {
        let (status, headers, head_len) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut slots);
            if let httparse::Status::Complete(len) = parsed.parse(&self.read).expect("a well-formed answer") {
                let headers = parsed
                    .headers
                    .iter()
                    .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
                    .collect::<Vec<_>>();
                break (parsed.code.unwrap_or_default(), headers, len);
            }
            assert!(self.more().await, "the connection ended inside a head: {:?}", String::from_utf8_lossy(&self.read));
        };
        self.read.drain(..head_len);
        let mut answer = Answer { status, headers, body: Vec::new() };
        if let Some(length) = answer.header("content-length") {
            let length: usize = length.parse().unwrap();
            while self.read.len() < length {
                assert!(self.more().await, "the connection ended inside a body");
            }
            answer.body = self.read.drain(..length).collect();
        } else if answer.header("transfer-encoding") == Some("chunked") {
            answer.body = self.chunked().await;
        } else {
            // Delimited by the end of the connection.
            while self.more().await {}
            answer.body = std::mem::take(&mut self.read);
        }
        answer
    }

    async fn chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = self.read.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                assert!(self.more().await, "the connection ended inside a chunk");
            };
            let size = usize::from_str_radix(std::str::from_utf8(&self.read[..line_end]).unwrap(), 16).unwrap();
            while self.read.len() < line_end + 2 + size + 2 {
                assert!(self.more().await, "the connection ended inside a chunk");
            }
            body.extend_from_slice(&self.read[line_end + 2..line_end + 2 + size]);
            self.read.drain(..line_end + 2 + size + 2);
            if size == 0 {
                return body;
            }
        }
    }

    /// Whether the gateway closes the connection with nothing more to say.
    async fn closed(&mut self) -> bool {
        while self.more().await {}
        self.read.is_empty()
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: gateway\r\n\r\n")
}

#[tokio::test]
async fn keep_alive_requests_are_answered_on_one_connection_each_framed_exactly() {
    let sys = echoed(64 * 1024).await;
    let mut wire = Wire::open(&sys.gateway).await;
    for path in ["/echo/one?x=1", "/echo/two"] {
        wire.send(&get(path)).await;
        let answer = wire.answer().await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.seen()[":uri"], path);
        assert_eq!(answer.header("content-length"), Some(answer.body.len().to_string().as_str()));
        assert!(answer.header("date").is_some() && answer.header("x-request-id").is_some(), "{answer:?}");
        assert_eq!(answer.header("connection"), None);
    }
    // The gateway's own answers on this path are framed the same way.
    wire.send("DELETE /echo/gone HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
    assert_eq!(wire.answer().await.seen()[":method"], "DELETE");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_with_their_bodies() {
    let sys = echoed(64 * 1024).await;
    let mut wire = Wire::open(&sys.gateway).await;
    wire.send(&format!(
        "{}POST /echo/2 HTTP/1.1\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello{}",
        get("/echo/1"),
        get("/echo/3")
    ))
    .await;
    for (uri, body) in [("/echo/1", ""), ("/echo/2", "hello"), ("/echo/3", "")] {
        let seen = wire.answer().await.seen();
        assert_eq!((seen[":uri"].as_str(), seen[":body"].as_str()), (Some(uri), Some(body)), "{seen}");
    }
}

#[tokio::test]
async fn a_request_arriving_a_byte_at_a_time_is_answered() {
    let sys = echoed(64 * 1024).await;
    let mut wire = Wire::open(&sys.gateway).await;
    let request = "PUT /echo/slowly HTTP/1.1\r\nHost: gateway\r\nContent-Length: 11\r\n\r\nhello world";
    for byte in request.as_bytes() {
        wire.tcp.write_all(&[*byte]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let seen = wire.answer().await.seen();
    assert_eq!((seen[":method"].as_str(), seen[":body"].as_str()), (Some("PUT"), Some("hello world")), "{seen}");
}

#[tokio::test]
async fn requests_of_every_other_kind_are_served_on_the_same_connection() {
    let sys = echoed(1024 * 1024).await;
    let mut wire = Wire::open(&sys.gateway).await;
    wire.send(&get("/echo/first")).await;
    assert_eq!(wire.answer().await.status, 200);
    // A chunked body, then a large one.
    wire.send(
        "POST /echo/chunked HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    let seen = wire.answer().await.seen();
    assert_eq!((seen[":body"].as_str(), seen["transfer-encoding"].as_str()), (Some("hello world"), Some("chunked")));
    let large = "y".repeat(100 * 1024);
    wire.send(&format!("POST /echo/large HTTP/1.1\r\nContent-Length: {}\r\n\r\n{large}", large.len())).await;
    let seen = wire.answer().await.seen();
    assert_eq!(seen[":body"].as_str().map(str::len), Some(large.len()));
    // The gateway's own pages, and plain requests again.
    wire.send(&get("/healthz")).await;
    assert_eq!(wire.answer().await.status, 200);
    wire.send(&get("/echo/last")).await;
    assert_eq!(wire.answer().await.seen()[":uri"], "/echo/last");
}

#[tokio::test]
async fn a_request_with_both_lengths_is_read_as_chunked_and_ends_the_connection() {
    let sys = echoed(64 * 1024).await;
    let mut wire = Wire::open(&sys.gateway).await;
    // Read by its Content-Length, this body would be "0\r\n\r\nGET /echo/smuggled…"'s first 5 bytes
    // and the rest a request of its own; read as chunked (RFC 9112 §6.3), it is empty.
    wire.send(&format!(
        "POST /echo/outer HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{}",
        get("/echo/smuggled")
    ))
    .await;
    let answer = wire.answer().await;
    let seen = answer.seen();
    assert_eq!((seen[":uri"].as_str(), seen[":body"].as_str()), (Some("/echo/outer"), Some("")), "{seen}");
    assert!(seen["content-length"].is_null(), "{seen}");
    assert!(wire.closed().await, "the connection was not closed after an ambiguous request");
}

#[tokio::test]
async fn malformed_framing_is_refused_with_400_and_the_connection_closed() {
    let sys = echoed(64 * 1024).await;
    for raw in [
        "POST /echo/x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "POST /echo/x HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
        "POST /echo/x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nhello",
        "GET /echo/x HTTP/1.1\r\nX-Folded: a\r\n b\r\n\r\n",
        "GET /echo/x HTTP/1.1\r\nBad Name: a\r\n\r\n",
    ] {
        let mut wire = Wire::open(&sys.gateway).await;
        wire.send(&format!("{}{raw}", get("/echo/before"))).await;
        assert_eq!(wire.answer().await.status, 200, "the request before {raw:?}");
        assert_eq!(wire.answer().await.status, 400, "{raw:?}");
        assert!(wire.closed().await, "{raw:?}");
    }
}

#[tokio::test]
async fn the_connection_ends_when_the_client_asks_or_speaks_http_1_0() {
    let sys = echoed(64 * 1024).await;
    let mut wire = Wire::open(&sys.gateway).await;
    wire.send("GET /echo/bye HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    let answer = wire.answer().await;
    assert_eq!((answer.status, answer.header("connection")), (200, Some("close")));
    assert!(wire.closed().await);

    let mut wire = Wire::open(&sys.gateway).await;
    wire.send("GET /echo/old HTTP/1.0\r\n\r\n").await;
    let mut all = Vec::new();
    wire.tcp.read_to_end(&mut all).await.unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.0 200 OK\r\n") || text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("\"/echo/old\""), "{text}");
}

#[tokio::test]
async fn an_upstream_slower_than_its_routes_timeout_is_a_504_and_the_next_request_gets_the_full_time() {
    let sys = echoed_within(64 * 1024, Duration::from_millis(400)).await;
    let mut wire = Wire::open(&sys.gateway).await;
    for round in 0..2 {
        let started = std::time::Instant::now();
        wire.send("GET /echo/slow HTTP/1.1\r\nX-Echo-Delay-Ms: 3000\r\n\r\n").await;
        let answer = wire.answer().await;
        assert_eq!(answer.status, 504, "round {round}: {answer:?}");
        assert_eq!(answer.header("content-type"), Some("application/problem+json"));
        assert!(started.elapsed() < Duration::from_secs(2), "answered at the route's timeout, not the upstream's pace");
        // Within the time on the same connection: the deadline is per request, not per connection.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            wire.send("GET /echo/quick HTTP/1.1\r\nX-Echo-Delay-Ms: 250\r\n\r\n").await;
            assert_eq!(wire.answer().await.status, 200, "round {round}");
        }
    }
    // The same for a request with a chunked body.
    wire.send("POST /echo/slow HTTP/1.1\r\nX-Echo-Delay-Ms: 3000\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").await;
    assert_eq!(wire.answer().await.status, 504);
}

#[tokio::test]
async fn a_stopping_gateway_answers_the_request_in_progress_and_closes_idle_connections() {
    let sys = echoed(64 * 1024).await;
    let mut idle = Wire::open(&sys.gateway).await;
    idle.send(&get("/echo/earlier")).await;
    assert_eq!(idle.answer().await.status, 200);
    let mut busy = Wire::open(&sys.gateway).await;
    busy.send("GET /echo/slow HTTP/1.1\r\nX-Echo-Delay-Ms: 500\r\n\r\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let Echoed { gateway, _echo, _registry } = sys;
    drop(gateway);
    assert!(idle.closed().await, "an idle connection is closed at once");
    let answer = busy.answer().await;
    assert_eq!((answer.status, answer.header("connection")), (200, Some("close")));
    assert_eq!(answer.seen()[":uri"], "/echo/slow");
    assert!(busy.closed().await);
}

#[tokio::test]
async fn a_request_begun_before_the_gateway_stops_is_answered_with_or_without_a_body() {
    let sys = echoed(64 * 1024).await;
    // Half a head each: one without a body, one with a chunked body, and one on a connection
    // that has been answered before (idle between its requests).
    let mut fast = Wire::open(&sys.gateway).await;
    fast.send("GET /echo/fast HTTP/1.1\r\n").await;
    let mut handed = Wire::open(&sys.gateway).await;
    handed.send("POST /echo/handed HTTP/1.1\r\nTransfer-Encoding: chunked\r\n").await;
    let mut again = Wire::open(&sys.gateway).await;
    again.send(&get("/echo/first")).await;
    assert_eq!(again.answer().await.status, 200);
    again.send("GET /echo/again HTTP/1.1\r\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let Echoed { gateway, _echo, _registry } = sys;
    drop(gateway);
    // The rest arrives once the gateway is stopping.
    tokio::time::sleep(Duration::from_millis(300)).await;
    fast.send("\r\n").await;
    handed.send("\r\n0\r\n\r\n").await;
    again.send("\r\n").await;
    for (wire, uri) in [(&mut fast, "/echo/fast"), (&mut handed, "/echo/handed"), (&mut again, "/echo/again")] {
        let answer = wire.answer().await;
        assert_eq!((answer.status, answer.header("connection")), (200, Some("close")), "{uri}: {answer:?}");
        assert_eq!(answer.seen()[":uri"], uri);
        assert!(wire.closed().await, "{uri}");
    }
}

#[tokio::test]
async fn an_http2_client_with_prior_knowledge_is_proxied_and_answered() {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let sys = echoed(64 * 1024).await;
    let tcp = TcpStream::connect(sys.gateway.url.trim_start_matches("http://")).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.expect("an HTTP/2 server");
    tokio::spawn(connection);
    let send = |method: &str, path: &str, body: &'static str| {
        let mut sender = sender.clone();
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", sys.gateway.url))
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        async move {
            let response = tokio::time::timeout(PATIENCE, sender.send_request(request)).await.unwrap().unwrap();
            let (parts, body) = response.into_parts();
            (parts, body.collect().await.unwrap().to_bytes())
        }
    };
    // Two requests at once, on the one connection.
    let ((post, posted), (get, got)) =
        tokio::join!(send("POST", "/echo/h2?x=1", "hello"), send("GET", "/echo/other", ""));
    for (parts, body, uri) in [(&post, &posted, "/echo/h2?x=1"), (&get, &got, "/echo/other")] {
        assert_eq!((parts.version, parts.status.as_u16()), (hyper::Version::HTTP_2, 200), "{uri}");
        assert!(parts.headers.contains_key("x-request-id"), "{uri}");
        let seen: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(seen[":uri"], uri, "the upstream gets the origin form: {seen}");
    }
    let seen: serde_json::Value = serde_json::from_slice(&posted).unwrap();
    assert_eq!((seen[":method"].as_str(), seen[":body"].as_str()), (Some("POST"), Some("hello")), "{seen}");
    // The gateway's own pages too.
    let (health, _) = send("GET", "/healthz", "").await;
    assert_eq!(health.status.as_u16(), 200);
}

#[tokio::test]
async fn a_route_with_a_body_limit_of_its_own_takes_bodies_beyond_the_gateways() {
    let registry = spawn_registry().await;
    let echo = spawn_echo(&registry.as_url(), vec![]).await;
    let gateway = spawn_gateway_with(&registry.as_url(), &echo, |config| {
        let uploads = gateway::proxy::routes::Route::new("/echo", "echo").body_limit(256 * 1024);
        config.routes = Box::leak(vec![uploads].into_boxed_slice());
        config.body_limit = 1024;
    })
    .await;
    let client = reqwest::Client::new();
    let post = |size: usize| client.post(format!("{}/echo/upload", gateway.url)).body(vec![b'u'; size]).send();
    let taken = post(100 * 1024).await.unwrap();
    assert_eq!(taken.status(), 200, "over the gateway's 1 KiB, within the route's 256 KiB");
    let seen: serde_json::Value = taken.json().await.unwrap();
    assert_eq!(seen[":body"].as_str().map(str::len), Some(100 * 1024));
    assert_eq!(post(300 * 1024).await.unwrap().status(), 413, "over the route's limit");
}
