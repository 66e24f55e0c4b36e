//! `GET /v1/services?index=N&wait=…`: a long poll answered as soon as the instances change.

use kit::test_support::Running;
use serde_json::{json, Value};

/// The longest wait the registry accepts: a watch that is not woken by a change answers only after
/// it, with the index it was given, which the assertions below then catch.
const LONG: &str = "5m";

async fn registry() -> Running {
    registry::testing::spawn(registry::Config::for_tests()).await
}

/// `GET /v1/services` with a query: its index header, its body.
async fn services(registry: &Running, query: &str) -> (u64, Value) {
    let resp = reqwest::get(format!("{}/v1/services{query}", registry.url)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let header: u64 = resp.headers()["x-registry-index"].to_str().unwrap().parse().unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["index"], header, "the body and the header give the same index: {body}");
    (header, body)
}

/// Starts a watch from `index` in the background.
fn watch(registry: &Running, index: u64, wait: &str) -> tokio::task::JoinHandle<(u64, Value)> {
    let url = format!("{}/v1/services?index={index}&wait={wait}", registry.url);
    tokio::spawn(async move {
        let resp = reqwest::get(url).await.unwrap();
        assert_eq!(resp.status(), 200);
        let header: u64 = resp.headers()["x-registry-index"].to_str().unwrap().parse().unwrap();
        (header, resp.json().await.unwrap())
    })
}

async fn register(registry: &Running, id: &str, ttl_secs: u64) {
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/instances", registry.url))
        .json(&json!({"service": "jokes", "instance_id": id, "address": "127.0.0.1:1000", "protocol": "http",
                      "ttl_secs": ttl_secs}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
}

fn jokes_count(body: &Value) -> u64 {
    body["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "jokes")
        .map_or(0, |s| s["instances"].as_u64().unwrap())
}

#[tokio::test]
async fn a_watch_is_answered_as_soon_as_an_instance_registers() {
    let registry = registry().await;
    let (index, body) = services(&registry, "").await;
    assert_eq!(jokes_count(&body), 0);
    let watching = watch(&registry, index, LONG);
    register(&registry, "jokes-1", 10).await;
    let (new, body) = watching.await.unwrap();
    assert_ne!(new, index, "the watch answered with a new index");
    assert_eq!(jokes_count(&body), 1, "{body}");
}

#[tokio::test]
async fn a_watch_is_answered_as_soon_as_an_instance_deregisters() {
    let registry = registry().await;
    register(&registry, "jokes-1", 10).await;
    let (index, body) = services(&registry, "").await;
    assert_eq!(jokes_count(&body), 1);
    let watching = watch(&registry, index, LONG);
    let resp = reqwest::Client::new().delete(format!("{}/v1/instances/jokes-1", registry.url)).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    let (new, body) = watching.await.unwrap();
    assert_ne!(new, index);
    assert_eq!(jokes_count(&body), 0, "{body}");
}

#[tokio::test]
async fn a_watch_is_answered_as_soon_as_a_silent_instance_is_evicted() {
    let registry = registry().await;
    // A one-second lease that is never renewed.
    register(&registry, "jokes-1", 1).await;
    let (index, body) = services(&registry, "").await;
    assert_eq!(jokes_count(&body), 1);
    let (new, body) = watch(&registry, index, LONG).await.unwrap();
    assert_ne!(new, index);
    assert_eq!(jokes_count(&body), 0, "{body}");
}

#[tokio::test]
async fn a_watch_that_sees_no_change_times_out_with_the_same_index_and_heartbeats_are_no_change() {
    let registry = registry().await;
    register(&registry, "jokes-1", 10).await;
    let (index, _) = services(&registry, "").await;
    let watching = watch(&registry, index, "300ms");
    let resp =
        reqwest::Client::new().put(format!("{}/v1/instances/jokes-1/heartbeat", registry.url)).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    let (same, body) = watching.await.unwrap();
    assert_eq!(same, index);
    assert_eq!(jokes_count(&body), 1);
}

#[tokio::test]
async fn an_index_that_is_not_the_current_one_is_answered_at_once_with_the_current_one() {
    let registry = registry().await;
    let (index, _) = services(&registry, "").await;
    // `0` is never an index: a first watch can start from it.
    let (now, _) = watch(&registry, 0, LONG).await.unwrap();
    assert_eq!(now, index);
    let (now, _) = watch(&registry, index + 1000, LONG).await.unwrap();
    assert_eq!(now, index, "an index from a registry that restarted since");
}

#[tokio::test]
async fn bad_watch_parameters_are_400_problems_naming_the_parameter() {
    let registry = registry().await;
    let cases = [
        ("?index=1&wait=30", "wait"),
        ("?index=1&wait=1h", "wait"),
        ("?index=1&wait=1.5s", "wait"),
        ("?index=9223372036854775808", "index"),
        ("?index=1&wait=-1s", "wait"),
        ("?index=1&wait=", "wait"),
        ("?index=soon", "index"),
        ("?index=-1&wait=1s", "index"),
        ("?index=", "index"),
    ];
    for (query, field) in cases {
        let resp = reqwest::get(format!("{}/v1/services{query}", registry.url)).await.unwrap();
        assert_eq!(resp.status(), 400, "{query}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json", "{query}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["field"], field, "{query}: {body}");
        assert_eq!(body["status"], 400);
    }
}

#[tokio::test]
async fn the_published_document_describes_the_watch() {
    let registry = registry().await;
    let doc: Value = reqwest::get(format!("{}/openapi.json", registry.url)).await.unwrap().json().await.unwrap();
    let list = &doc["paths"]["/v1/services"]["get"];
    let names: Vec<&str> = list["parameters"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["index", "wait"], "{list}");
    assert!(list["responses"]["200"]["headers"]["X-Registry-Index"].is_object(), "{list}");
    assert!(list["responses"]["400"]["content"]["application/problem+json"].is_object(), "{list}");
}
