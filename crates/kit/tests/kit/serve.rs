//! Serving: graceful shutdown lets in-flight requests finish; the standard
//! routes and problem+json for axum's own rejections.

use std::time::Duration;

use axum::routing::{get, post};
use axum::{Json, Router};
use kit::config::ServiceConfig;
use kit::http::{service_router, RouterOptions};
use kit::service::start_http;
use kit::test_support::client;
use kit::Shutdown;

#[derive(serde::Deserialize)]
struct Greeting {
    #[allow(dead_code)]
    name: String,
}

async fn boom() -> &'static str {
    panic!("boom")
}

fn app() -> Router {
    let routes = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(600)).await;
                "done"
            }),
        )
        .route("/greet", post(|Json(_g): Json<Greeting>| async { "hi" }))
        .route("/panic", get(boom))
        .route(
            "/page",
            get(|| async { (axum::http::StatusCode::UNAUTHORIZED, axum::response::Html("<p>log in</p>")) }),
        );
    service_router(routes, RouterOptions { body_limit: 1024, ..Default::default() })
}

#[tokio::test]
async fn shutdown_finishes_the_in_flight_request_then_refuses_new_ones() {
    let shutdown = Shutdown::new();
    let started = start_http(&ServiceConfig::for_tests("slow", None), app(), shutdown.clone()).await.unwrap();
    let url = started.url();
    let in_flight = tokio::spawn(async move { client().get(format!("{url}/slow")).send().await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    shutdown.cancel();
    let response = in_flight.await.unwrap().expect("the in-flight request gets its answer");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "done");
    started.task.await.unwrap().expect("server stopped cleanly");
    let url = format!("http://{}/healthz", started.addr);
    assert!(client().get(url).send().await.is_err(), "a stopped server accepts nothing");
}

async fn problem(resp: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert!(resp.headers().contains_key("x-request-id"));
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["type"].as_str().unwrap().starts_with("https://agora.dev/problems/"));
    assert!(body["request_id"].is_string(), "{body}");
    body
}

#[tokio::test]
async fn axum_rejections_come_out_as_problem_json() {
    let started = start_http(&ServiceConfig::for_tests("t", None), app(), Shutdown::new()).await.unwrap();
    let base = started.url();
    let c = client();
    let body = problem(c.get(format!("{base}/nope")).send().await.unwrap(), 404).await;
    assert!(body["detail"].as_str().unwrap().contains("/nope"));
    let body = problem(c.delete(format!("{base}/greet")).send().await.unwrap(), 405).await;
    assert!(body["detail"].as_str().unwrap().contains("DELETE"));
    let bad_json = c
        .post(format!("{base}/greet"))
        .header("content-type", "application/json")
        .body("{\"name\":")
        .send()
        .await
        .unwrap();
    problem(bad_json, 400).await;
    let wrong_type =
        c.post(format!("{base}/greet")).header("content-type", "text/plain").body("hi").send().await.unwrap();
    problem(wrong_type, 415).await;
    let missing_field = c.post(format!("{base}/greet")).json(&serde_json::json!({"nom": "x"})).send().await.unwrap();
    let body = problem(missing_field, 422).await;
    assert!(body["detail"].as_str().unwrap().contains("name"), "{body}");
    let huge = serde_json::json!({ "name": "x".repeat(4096) });
    problem(c.post(format!("{base}/greet")).json(&huge).send().await.unwrap(), 413).await;
    let page = c.get(format!("{base}/page")).send().await.unwrap();
    assert_eq!(page.status(), 401);
    assert_eq!(page.text().await.unwrap(), "<p>log in</p>", "an HTML error page is a page, not a rejection");
    let body = problem(c.get(format!("{base}/panic")).send().await.unwrap(), 500).await;
    assert!(!body["detail"].as_str().unwrap().contains("boom"), "internals never leak");
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let started = start_http(&ServiceConfig::for_tests("t", None), app(), Shutdown::new()).await.unwrap();
    kit::metrics::install();
    let base = started.url();
    let c = client();
    assert_eq!(c.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(format!("{base}/readyz")).send().await.unwrap().status(), 200);
    c.get(format!("{base}/greet")).send().await.unwrap();
    let metrics = c.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("http_requests_total"), "{metrics}");
    assert!(metrics.contains("route=\"/greet\""), "labelled by route template: {metrics}");
    assert!(metrics.contains("http_request_duration_seconds_bucket"), "{metrics}");
}
