//! The gateway as a user sees it: routing, errors, pages and docs.

use std::time::Duration;

use crate::support::{agora_serve, expect_problem, spawn_system, status_of, Proc};
use crate::system::{Service, System};

#[tokio::test]
async fn a_joke_comes_through_the_gateway_from_the_service_found_in_the_registry() {
    let sys = spawn_system().await;
    let resp = reqwest::get(format!("{}/joke", sys.gateway.url)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["joke"].as_str().is_some_and(|j| !j.is_empty()), "{body}");

    let body: serde_json::Value =
        reqwest::get(format!("{}/joke?category=science", sys.gateway.url)).await.unwrap().json().await.unwrap();
    assert_eq!(body["category"], "science");

    let services: serde_json::Value =
        reqwest::get(format!("{}/v1/services", sys.registry.url)).await.unwrap().json().await.unwrap();
    assert!(services["services"].as_array().unwrap().iter().any(|s| s["name"] == "jokes"), "{services}");
}

#[tokio::test]
async fn an_unknown_category_is_a_404_problem_listing_the_known_ones() {
    let sys = spawn_system().await;
    let resp = reqwest::get(format!("{}/joke?category=knock-knock", sys.gateway.url)).await.unwrap();
    let body = expect_problem(resp, 404).await;
    assert!(body["detail"].as_str().unwrap().contains("knock-knock"));
    assert!(body["known_categories"].as_array().unwrap().iter().any(|c| c == "programming"));
}

#[tokio::test]
async fn unknown_routes_wrong_methods_and_oversized_bodies_get_problems() {
    let sys = spawn_system().await;
    let c = reqwest::Client::new();
    let gw = &sys.gateway.url;
    expect_problem(c.get(format!("{gw}/no/such/thing")).send().await.unwrap(), 404).await;
    expect_problem(c.get(format!("{gw}/jokesx")).send().await.unwrap(), 404).await;
    let body = expect_problem(c.post(format!("{gw}/joke")).send().await.unwrap(), 405).await;
    assert!(body["detail"].as_str().unwrap().contains("POST"));
    let huge = vec![b'x'; 100 * 1024];
    expect_problem(c.post(format!("{gw}/joke")).body(huge).send().await.unwrap(), 413).await;
}

#[tokio::test]
async fn the_registry_refuses_bad_registrations_with_problems() {
    let sys = spawn_system().await;
    let c = reqwest::Client::new();
    let url = format!("{}/v1/instances", sys.registry.url);
    let body = expect_problem(
        c.post(&url)
            .json(&serde_json::json!({"service": "Bad Name!", "address": "127.0.0.1:1", "protocol": "http"}))
            .send()
            .await
            .unwrap(),
        422,
    )
    .await;
    assert_eq!(body["field"], "service");
    expect_problem(
        c.post(&url).header("content-type", "application/json").body("{not json").send().await.unwrap(),
        400,
    )
    .await;
    expect_problem(c.post(&url).body("service=x").send().await.unwrap(), 415).await;
    expect_problem(
        c.post(&url)
            .json(&serde_json::json!({"service": "jokes", "address": "x".repeat(20_000), "protocol": "http"}))
            .send()
            .await
            .unwrap(),
        413,
    )
    .await;
    expect_problem(c.put(format!("{}/v1/instances/nobody/heartbeat", sys.registry.url)).send().await.unwrap(), 404)
        .await;
}

#[tokio::test]
async fn pages_status_and_docs_are_served_by_the_gateway() {
    let sys = spawn_system().await;
    let gw = &sys.gateway.url;
    let home = reqwest::get(format!("{gw}/")).await.unwrap();
    assert!(home.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = home.text().await.unwrap();
    assert!(html.contains("href=\"/jokes\""), "the home page links the jokes app");
    assert!(html.contains("data-service-status=\"jokes\""), "with its live status");
    let jokes = reqwest::get(format!("{gw}/jokes")).await.unwrap().text().await.unwrap();
    assert!(jokes.contains("value=\"science\""), "categories come from the jokes service");
    assert_eq!(status_of(gw, "jokes").await["status"], "up");
    let status = reqwest::get(format!("{gw}/status")).await.unwrap().text().await.unwrap();
    assert!(status.contains("jokes"));
    // Every page's navigation links the jokes app: the status page must show its row and its instance.
    assert!(status.contains(r#"data-service-status="jokes">up</span>"#), "the jokes service is up:\n{status}");
    let jokes = sys.instances(Service::Jokes).next().unwrap();
    let address = jokes.url.trim_start_matches("http://");
    assert!(status.contains(address), "the jokes instance at {address} is listed:\n{status}");
    let css = reqwest::get(format!("{gw}/static/style.css")).await.unwrap();
    assert_eq!(css.status(), 200);
    let docs = reqwest::get(format!("{gw}/docs/")).await.unwrap().text().await.unwrap();
    assert!(docs.contains("swagger"), "Swagger UI is served");
    let init = reqwest::get(format!("{gw}/docs/swagger-initializer.js")).await.unwrap().text().await.unwrap();
    assert!(init.contains("/openapi/jokes.json"), "{init}");
    let spec: serde_json::Value = reqwest::get(format!("{gw}/openapi/jokes.json")).await.unwrap().json().await.unwrap();
    assert!(spec["paths"]["/joke"].is_object(), "{spec}");
}

#[tokio::test]
async fn the_whole_public_api_is_one_document_and_the_registry_is_not_in_it() {
    let sys = System::builder()
        .with(Service::Jokes)
        .with(Service::Auth)
        .with(Service::Classifier)
        .with(Service::Threads)
        .with(Service::Projects)
        .with(Service::Media)
        .with(Service::Notifications)
        .start()
        .await;
    let gw = &sys.gateway.url;
    let init = reqwest::get(format!("{gw}/docs/swagger-initializer.js")).await.unwrap().text().await.unwrap();
    for doc in ["gateway", "jokes", "auth", "classifier", "projects", "media", "notifications"] {
        assert!(init.contains(&format!("/openapi/{doc}.json")), "/docs lists {doc}: {init}");
    }
    assert!(!init.contains("registry"), "the registry's document is internal: {init}");
    let own: serde_json::Value =
        reqwest::get(format!("{gw}/openapi/gateway.json")).await.unwrap().json().await.unwrap();
    for path in ["/api/status", "/account/login", "/account/signup", "/account/logout"] {
        assert!(own["paths"][path].is_object(), "the gateway documents {path}");
    }
    let merged = kit::test_support::eventually("the merged document", Duration::from_secs(30), || async {
        let resp = reqwest::get(format!("{gw}/openapi.json")).await.ok()?;
        (resp.status() == 200).then_some(())?;
        resp.json::<serde_json::Value>().await.ok()
    })
    .await;
    for path in [
        "/api/status",
        "/joke",
        "/login",
        "/classifications",
        "/projects",
        "/threads/{thread_id}/vote",
        "/notifications/stream",
    ] {
        assert!(merged["paths"][path].is_object(), "the merged document has {path}");
    }
    assert!(merged["paths"].get("/v1/instances").is_none(), "nor the registry's API");
    // Errors are problem+json, the gateway's own answers included; no internal references.
    let vote = &merged["paths"]["/threads/{thread_id}/vote"]["post"]["responses"];
    for status in ["401", "422", "429", "502", "503", "504"] {
        assert!(vote[status]["content"]["application/problem+json"].is_object(), "{status}: {vote}");
    }
    assert!(vote["503"]["headers"]["Retry-After"].is_object(), "{vote}");
    assert!(!merged.to_string().contains("SPEC"), "public documents speak to users");
}

#[tokio::test]
async fn the_access_log_goes_to_its_own_file_when_one_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _gateway = Proc(agora_serve("gateway", port).env("ACCESS_LOG_FILE", &log).spawn().expect("the gateway starts"));
    let url = format!("http://127.0.0.1:{port}/joke?from=test");
    // No registry: the jokes route has no instance, and that answer is logged like any other.
    let status = kit::test_support::eventually("the gateway to answer", Duration::from_secs(30), || async {
        reqwest::get(&url).await.ok().map(|r| r.status().as_u16())
    })
    .await;
    let line = kit::test_support::eventually("the access line in the file", Duration::from_secs(10), || async {
        let text = std::fs::read_to_string(&log).ok()?;
        text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).find(|l| l["path"] == "/joke")
    })
    .await;
    assert_eq!(line["status"], status, "{line}");
    assert_eq!(line["route"], "/joke");
    assert_eq!(line["message"], "access");

    // A file that cannot be opened stops the gateway at start, naming the variable.
    let out = agora_serve("gateway", 0)
        .env("ACCESS_LOG_FILE", dir.path().join("no/such/dir/access.log"))
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ACCESS_LOG_FILE"), "{stderr}");
}

#[tokio::test]
async fn the_gateway_routes_to_a_new_instance_when_it_registers_without_waiting_for_a_poll() {
    let registry = registry::testing::spawn(registry::Config::for_tests()).await;
    let mut config = gateway::Config::for_tests(registry.as_url());
    // No refresh period ends within the test: only the registry's watch can tell the gateway.
    config.refresh = Duration::from_secs(3600);
    let gateway = gateway::testing::spawn(config).await;
    let http = kit::test_support::client();
    kit::test_support::eventually("the gateway to be ready", Duration::from_secs(30), || {
        let (http, url) = (http.clone(), format!("{}/readyz", gateway.url));
        async move { http.get(url).send().await.ok().filter(|r| r.status() == 200) }
    })
    .await;

    let jokes_config = kit::config::ServiceConfig::for_tests("jokes", Some(registry.as_url()));
    let _jokes = jokes::testing::spawn(jokes::Config { service: jokes_config }).await;
    kit::test_support::eventually("the gateway to route /joke to the new instance", Duration::from_secs(30), || {
        let (http, url) = (http.clone(), format!("{}/joke", gateway.url));
        async move { http.get(url).send().await.ok().filter(|r| r.status() == 200) }
    })
    .await;
}
