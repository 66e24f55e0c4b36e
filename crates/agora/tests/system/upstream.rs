//! What a client sees through the gateway when an instance answers in a way the gateway cannot
//! pass on as it is, or answers before it has read the whole request.

use std::time::Duration;

use kit::registry_client::{Protocol, RegisterRequest, RegistryClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::{expect_problem, spawn_registry};

/// What the instance answers to `/raw/upload`, having read the request's head only.
const REFUSED_UPLOAD: &[u8] =
    b"HTTP/1.1 413 Payload Too Large\r\ncontent-type: text/plain\r\ncontent-length: 19\r\n\r\nno uploads accepted";

/// An instance of the service `raw`, written on a bare socket. It reads a request's head, never
/// its body, and answers by path: `/raw/gzipped` with a body in the `gzip, chunked` transfer
/// codings, `/raw/upload` with a 413 after which it closes the connection, anything else (the
/// gateway's readiness probe, say) 200. Its address.
async fn spawn_raw_instance() -> String {
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
                let answer: &[u8] = if head.starts_with(b"GET /raw/gzipped ") {
                    // A gzip member holding nothing, then the chunked framing around it.
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: gzip, chunked\r\n\r\n\
                      14\r\n\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\r\n0\r\n\r\n"
                } else if head.starts_with(b"POST /raw/upload ") {
                    REFUSED_UPLOAD
                } else {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                };
                let _ = tcp.write_all(answer).await;
            });
        }
    });
    address
}

/// A registry, the raw instance registered with it, and a gateway routing `/raw` to it that
/// takes bodies up to 16 MiB: the gateway's URL, once it routes.
async fn gateway_to_raw_instance() -> (String, Vec<kit::test_support::Running>) {
    let registry = spawn_registry().await;
    let address = spawn_raw_instance().await;
    let registration = RegisterRequest {
        service: "raw".into(),
        instance_id: None,
        address,
        protocol: Protocol::Http,
        version: "1".into(),
        ttl_secs: Some(300),
    };
    RegistryClient::new(&registry.as_url()).register(&registration).await.expect("the raw instance registers");
    let mut config = gateway::Config::for_tests(registry.as_url());
    let route = gateway::proxy::routes::Route::new("/raw", "raw").timeout(Duration::from_secs(10));
    config.routes = Box::leak(Box::new([route]));
    config.body_limit = 16 << 20;
    let gw = gateway::testing::spawn(config).await;
    let url = gw.url.clone();
    let ready = format!("{url}/raw/ready");
    kit::test_support::eventually("the gateway to route /raw", Duration::from_secs(10), || {
        let ready = ready.clone();
        async move { reqwest::get(&ready).await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    (url, vec![registry, gw])
}

#[tokio::test]
async fn a_response_in_a_transfer_coding_other_than_chunked_is_a_502_problem() {
    let (gw, _running) = gateway_to_raw_instance().await;
    let resp = reqwest::get(format!("{gw}/raw/gzipped")).await.unwrap();
    let problem = expect_problem(resp, 502).await;
    assert_eq!(problem["title"], "Bad Gateway", "{problem}");
}

#[tokio::test]
async fn an_instance_that_refuses_a_large_body_before_reading_it_has_its_answer_passed_on() {
    let (gw, _running) = gateway_to_raw_instance().await;
    let body = vec![b'x'; 8 << 20];
    let resp = reqwest::Client::new().post(format!("{gw}/raw/upload")).body(body).send().await.unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(resp.text().await.unwrap(), "no uploads accepted", "the instance's own answer");
}
