//! Streams and upgrades through the gateway: Server-Sent Events pass through as the upstream
//! writes them (not when a buffer fills), live beyond their route's timeout, are cut after the
//! route's idle timeout and when their client leaves; WebSocket upgrades pass through on routes
//! that allow them, for the users the route admits, and not over HTTP/2.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, Stream, StreamExt};
use gateway::proxy::routes::Route;
use kit::test_support::{eventually, TestIssuer};
use kit::Shutdown;
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::support::{spawn_echo, spawn_gateway_with, spawn_registry, Running};

/// How long a test waits for the gateway to pass something on.
const PATIENCE: Duration = Duration::from_secs(10);

/// What the test upstream `streams` shares with the test driving it.
struct Upstream {
    /// Acknowledgements of lock-step events: the next event is written only after one.
    acks: Semaphore,
    /// Streams begun.
    opened: AtomicUsize,
    /// Streams ended, by their end or because the gateway let go of them.
    closed: AtomicUsize,
    /// Held streams write their one event once this is true.
    go: watch::Sender<bool>,
}

/// Counts its stream as closed when dropped: by its end, or by hyper when the gateway closed the connection.
struct Open(Arc<Upstream>);

impl Open {
    fn new(upstream: &Arc<Upstream>) -> Self {
        upstream.opened.fetch_add(1, Ordering::SeqCst);
        Self(upstream.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.closed.fetch_add(1, Ordering::SeqCst);
    }
}

type Events = Sse<std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>>>;

fn events(stream: impl Stream<Item = Event> + Send + 'static) -> Events {
    Sse::new(Box::pin(stream.map(Ok)))
}

#[derive(serde::Deserialize)]
struct Pace {
    gap_ms: u64,
    count: usize,
}

/// The test upstream, registered as `streams`: event streams under `/stream/…` and `/held/…`,
/// a WebSocket echo under `/ws/…` and `/plain/…`.
async fn spawn_streams(registry: &url::Url) -> (Running, Arc<Upstream>) {
    use axum::routing::get;
    let upstream = Arc::new(Upstream {
        acks: Semaphore::new(0),
        opened: AtomicUsize::new(0),
        closed: AtomicUsize::new(0),
        go: watch::Sender::new(false),
    });
    let app = axum::Router::new()
        .route("/{prefix}/ready", get(|| async { "ready" }))
        .route("/stream/lockstep", get(lockstep))
        .route("/stream/paced", get(paced))
        .route("/stream/silent", get(silent))
        .route("/held/one", get(held))
        .route("/{prefix}/echo", get(websocket_echo))
        .with_state(upstream.clone());
    let app = kit::http::service_router(app, kit::http::RouterOptions::default());
    let shutdown = Shutdown::new();
    let mut config = kit::config::ServiceConfig::for_tests("streams", Some(registry.clone()));
    config.heartbeat = Duration::from_millis(200);
    let started = kit::service::start_http(&config, app, shutdown.clone()).await.expect("streams starts");
    (Running::new(started, shutdown), upstream)
}

/// 100 events, each after the client has acknowledged the one before.
async fn lockstep(State(upstream): State<Arc<Upstream>>) -> Events {
    let open = Open::new(&upstream);
    events(futures::stream::unfold((0, open), |(n, open)| async move {
        if n == 100 {
            return None;
        }
        if n > 0 {
            open.0.acks.acquire().await.expect("never closed").forget();
        }
        Some((Event::default().data(format!("event {n}")), (n + 1, open)))
    }))
}

/// `count` events, `gap_ms` apart.
async fn paced(State(upstream): State<Arc<Upstream>>, Query(pace): Query<Pace>) -> Events {
    let open = Open::new(&upstream);
    events(futures::stream::unfold((0, open), move |(n, open)| async move {
        if n == pace.count {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(pace.gap_ms)).await;
        Some((Event::default().data(format!("event {n}")), (n + 1, open)))
    }))
}

/// One event, then silence, forever.
async fn silent(State(upstream): State<Arc<Upstream>>) -> Events {
    let open = Open::new(&upstream);
    let first = futures::stream::iter([Event::default().data("event 0")]);
    events(first.chain(futures::stream::unfold(open, |open| async move {
        futures::future::pending::<()>().await;
        Some((Event::default(), open))
    })))
}

/// One event once the test says go, then silence.
async fn held(State(upstream): State<Arc<Upstream>>) -> Events {
    let open = Open::new(&upstream);
    let go = upstream.go.subscribe();
    events(futures::stream::unfold((Some(go), open), |(go, open)| async move {
        let Some(mut go) = go else {
            futures::future::pending::<()>().await;
            return None;
        };
        let _ = go.wait_for(|go| *go).await;
        Some((Event::default().data("held"), (None, open)))
    }))
}

/// A WebSocket that sends back every text and binary message; the switch says which user the
/// gateway said it was for (`x-seen-user`). A request that is no upgrade gets a 400.
async fn websocket_echo(mut req: Request) -> Response {
    use hyper_util::rt::TokioIo;
    use tokio_tungstenite::WebSocketStream;
    let Some(key) = req.headers().get("sec-websocket-key").filter(|_| req.headers().contains_key(header::UPGRADE))
    else {
        return (StatusCode::BAD_REQUEST, "not an upgrade").into_response();
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let user = req.headers().get("x-user-id").cloned().unwrap_or(header::HeaderValue::from_static("-"));
    let switching = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = switching.await else { return };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), tungstenite::protocol::Role::Server, None).await;
        while let Some(Ok(message)) = ws.next().await {
            if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header("sec-websocket-accept", accept)
        .header("x-seen-user", user)
        .body(axum::body::Body::empty())
        .unwrap()
}

/// A registry, the echo service (for its JWKS), the `streams` upstream and a gateway routing to it:
/// `/stream` with a 1 s timeout and a 2 s idle timeout, `/held` with the defaults, `/ws` with
/// upgrades for signed-in users, `/plain` without upgrades.
struct Streamed {
    gateway: Running,
    upstream: Arc<Upstream>,
    issuer: TestIssuer,
    _streams: Running,
    _echo: Running,
    _registry: Running,
}

async fn streamed() -> Streamed {
    let issuer = TestIssuer::new();
    let keys = serde_json::to_value(issuer.jwks()).unwrap()["keys"].as_array().cloned().unwrap_or_default();
    let registry = spawn_registry().await;
    let echo = spawn_echo(&registry.as_url(), keys).await;
    let (streams, upstream) = spawn_streams(&registry.as_url()).await;
    let gateway = spawn_gateway_with(&registry.as_url(), &echo, |config| {
        let table = vec![
            Route::new("/echo", "echo"),
            Route::new("/stream", "streams").timeout(Duration::from_secs(1)).idle_timeout(Duration::from_secs(2)),
            Route::new("/held", "streams"),
            Route::new("/ws", "streams").upgrades().user_for_every_method(),
            Route::new("/plain", "streams"),
        ];
        config.routes = Box::leak(table.into_boxed_slice());
    })
    .await;
    let ready = format!("{}/stream/ready", gateway.url);
    eventually("the gateway to route /stream", PATIENCE, || {
        let ready = ready.clone();
        async move { reqwest::get(&ready).await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    Streamed { gateway, upstream, issuer, _streams: streams, _echo: echo, _registry: registry }
}

/// An event stream as a client reads it.
struct Reader {
    response: reqwest::Response,
    read: String,
}

impl Reader {
    async fn open(client: &reqwest::Client, url: &str) -> Self {
        let response = client.get(url).send().await.expect("the gateway answers");
        if response.status() != 200 {
            panic!("{url}: {} {}", response.status(), response.text().await.unwrap_or_default());
        }
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/event-stream", "{url}");
        Self { response, read: String::new() }
    }

    /// The next event's data; `Ok(None)` when the stream has ended properly, `Err` when it broke.
    async fn next(&mut self) -> Result<Option<String>, String> {
        loop {
            if let Some(end) = self.read.find("\n\n") {
                let event: String = self.read.drain(..end + 2).collect();
                let data = event.lines().filter_map(|line| line.strip_prefix("data:")).map(str::trim).collect();
                return Ok(Some(data));
            }
            let more =
                tokio::time::timeout(PATIENCE, self.response.chunk()).await.expect("the gateway passes the stream on");
            match more {
                Ok(Some(bytes)) => self.read.push_str(std::str::from_utf8(&bytes).unwrap()),
                Ok(None) => return Ok(None),
                Err(err) => return Err(err.to_string()),
            }
        }
    }
}

#[tokio::test]
async fn an_event_stream_passes_through_event_by_event_without_buffering() {
    let sys = streamed().await;
    let client = reqwest::Client::new();
    let mut stream = Reader::open(&client, &format!("{}/stream/lockstep", sys.gateway.url)).await;
    // The upstream writes each event only once the one before has come out of the gateway: a
    // gateway that held events back until it had more would wait forever (and the reader panic).
    for n in 0..100 {
        assert_eq!(stream.next().await, Ok(Some(format!("event {n}"))));
        sys.upstream.acks.add_permits(1);
    }
    assert_eq!(stream.next().await, Ok(None), "the stream ends when the upstream's does");
}

#[tokio::test]
async fn a_live_stream_outlives_its_routes_timeout() {
    let sys = streamed().await;
    let client = reqwest::Client::new();
    // Ten events 300 ms apart: three seconds, against the route's one-second timeout.
    let mut stream = Reader::open(&client, &format!("{}/stream/paced?gap_ms=300&count=10", sys.gateway.url)).await;
    for n in 0..10 {
        assert_eq!(stream.next().await, Ok(Some(format!("event {n}"))));
    }
    assert_eq!(stream.next().await, Ok(None));
}

#[tokio::test]
async fn a_stream_silent_for_longer_than_its_idle_timeout_is_cut_and_its_upstream_closed() {
    let sys = streamed().await;
    let client = reqwest::Client::new();
    let mut stream = Reader::open(&client, &format!("{}/stream/silent", sys.gateway.url)).await;
    assert_eq!(stream.next().await, Ok(Some("event 0".into())));
    assert!(stream.next().await.is_err(), "the client sees the stream broken off, not ended");
    closed_upstream_streams(&sys.upstream, 1).await;
}

#[tokio::test]
async fn a_client_that_leaves_closes_its_upstream_stream() {
    let sys = streamed().await;
    let client = reqwest::Client::new();
    let mut stream = Reader::open(&client, &format!("{}/stream/paced?gap_ms=100&count=100000", sys.gateway.url)).await;
    assert_eq!(stream.next().await, Ok(Some("event 0".into())));
    drop(stream);
    closed_upstream_streams(&sys.upstream, 1).await;
    assert_eq!(sys.upstream.opened.load(Ordering::SeqCst), 1);
}

/// Waits until the upstream has seen `n` of its streams closed.
async fn closed_upstream_streams(upstream: &Upstream, n: usize) {
    eventually("the upstream to see its stream closed", PATIENCE, || async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        (upstream.closed.load(Ordering::SeqCst) == n).then_some(())
    })
    .await;
}

fn ws_request(gateway: &Running, path: &str, token: Option<&str>) -> tungstenite::handshake::client::Request {
    use tungstenite::client::IntoClientRequest;
    let url = format!("{}{path}", gateway.url.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().unwrap();
    if let Some(token) = token {
        request.headers_mut().insert(header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
    }
    request
}

#[tokio::test]
async fn a_websocket_echo_goes_through_an_upgrade_route_for_a_signed_in_user() {
    let sys = streamed().await;
    let refused = tokio_tungstenite::connect_async(ws_request(&sys.gateway, "/ws/echo", None)).await;
    match refused {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("an anonymous upgrade was not refused with 401: {other:?}"),
    }

    let token = sys.issuer.token("u-7", "ada");
    let (mut ws, switched) =
        tokio_tungstenite::connect_async(ws_request(&sys.gateway, "/ws/echo", Some(&token))).await.unwrap();
    assert_eq!(switched.status(), 101);
    assert_eq!(switched.headers()["x-seen-user"], "u-7", "the upstream got the verified identity");
    for message in [Message::text("hello"), Message::binary(vec![0u8, 1, 2, 255])] {
        ws.send(message.clone()).await.unwrap();
        let echoed = tokio::time::timeout(PATIENCE, ws.next()).await.expect("an echo").unwrap().unwrap();
        assert_eq!(echoed, message);
    }
    ws.close(None).await.unwrap();
    let closing = tokio::time::timeout(PATIENCE, ws.next()).await.expect("the close is answered");
    assert!(matches!(closing, Some(Ok(Message::Close(_))) | None), "{closing:?}");
}

#[tokio::test]
async fn an_upgrade_on_a_route_without_upgrades_is_served_as_a_plain_request() {
    let sys = streamed().await;
    let ignored = tokio_tungstenite::connect_async(ws_request(&sys.gateway, "/plain/echo", None)).await;
    match ignored {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 400, "the upstream saw no upgrade asked");
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned();
            assert!(body.contains("not an upgrade"), "{body}");
        }
        other => panic!("the upgrade went through: {other:?}"),
    }
}

#[tokio::test]
async fn a_websocket_over_http2_is_refused_with_a_400_problem() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let sys = streamed().await;
    let tcp = tokio::net::TcpStream::connect(sys.gateway.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.expect("an HTTP/2 server");
    tokio::spawn(connection);
    // A first exchange, so the server's settings (extended CONNECT allowed) have come.
    let health =
        hyper::Request::get(format!("{}/healthz", sys.gateway.url)).body(Empty::<axum::body::Bytes>::new()).unwrap();
    assert_eq!(sender.send_request(health).await.unwrap().status(), 200);

    let token = sys.issuer.token("u-7", "ada");
    let mut connect = hyper::Request::connect(format!("{}/ws/echo", sys.gateway.url))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header("sec-websocket-version", "13")
        .body(Empty::<axum::body::Bytes>::new())
        .unwrap();
    connect.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
    let response = tokio::time::timeout(PATIENCE, sender.send_request(connect)).await.unwrap().unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
    let problem: serde_json::Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("HTTP/1.1"), "{problem}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_each_hold_a_stream_of_their_own_and_get_its_event() {
    const CLIENTS: usize = 1000;
    let sys = streamed().await;
    let client = reqwest::Client::new();
    let url = format!("{}/held/one", sys.gateway.url);
    // They come in waves of 100 (a thousand connections opened in the same instant would overflow
    // the test upstream's accept queue, and the gateway's 2 s connect timeout would run out).
    let mut readers = Vec::new();
    for _ in 0..CLIENTS / 100 {
        readers.extend(futures::future::join_all((0..100).map(|_| Reader::open(&client, &url))).await);
    }
    // Every client's stream is open at the upstream at once, each on its own.
    eventually("every stream to be open at the upstream", PATIENCE, || async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        (sys.upstream.opened.load(Ordering::SeqCst) == CLIENTS).then_some(())
    })
    .await;
    assert_eq!(sys.upstream.closed.load(Ordering::SeqCst), 0);
    sys.upstream.go.send_replace(true);
    let events =
        futures::future::join_all(readers.into_iter().map(|mut reader| async move { reader.next().await })).await;
    assert!(
        events.iter().all(|event| *event == Ok(Some("held".into()))),
        "{:?}",
        events.iter().find(|e| **e != Ok(Some("held".into())))
    );
}
