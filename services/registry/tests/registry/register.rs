//! `POST /v1/instances`: its body is read as its document's schema says.

use serde_json::{json, Value};

async fn register(ttl_secs: Value) -> reqwest::Response {
    let registry = registry::testing::spawn(registry::Config::for_tests()).await;
    reqwest::Client::new()
        .post(format!("{}/v1/instances", registry.url))
        .json(&json!({"service": "jokes", "address": "127.0.0.1:1000", "protocol": "http", "ttl_secs": ttl_secs}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_ttl_is_any_whole_number_in_range_as_json_schema_s_integer_means() {
    for ttl in [json!(10), json!(10.0), json!(3e2)] {
        let resp = register(ttl.clone()).await;
        assert_eq!(resp.status(), 201, "{ttl}");
        let body: Value = resp.json().await.unwrap();
        assert!(body["ttl_secs"].as_u64().is_some(), "{ttl}: {body}");
    }
    for ttl in [json!(10.5), json!(0), json!(301.0), json!(-1), json!("10")] {
        let resp = register(ttl.clone()).await;
        assert_eq!(resp.status(), 422, "{ttl}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json", "{ttl}");
    }
}
