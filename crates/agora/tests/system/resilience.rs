//! Discovery, eviction, balancing and the gateway's circuit breaker, with
//! instances that stop abruptly, as a crashed process would.

use std::time::Duration;

use kit::test_support::eventually;

use crate::support::{spawn_system, status_of};
use crate::system::{Service, System};

async fn instance_count(registry: &str) -> usize {
    let v: serde_json::Value =
        reqwest::get(format!("{registry}/v1/services/jokes")).await.unwrap().json().await.unwrap();
    v["instances"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn a_killed_instance_is_evicted_once_it_stops_heartbeating() {
    let mut sys = System::builder().child(Service::Jokes).start().await;
    let registry = sys.registry.url.clone();
    eventually("jokes to register", Duration::from_secs(5), || async {
        (instance_count(&registry).await == 1).then_some(())
    })
    .await;
    sys.kill(Service::Jokes);
    eventually("the registry to evict the silent instance", Duration::from_secs(10), || async {
        (instance_count(&registry).await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn requests_keep_flowing_when_one_of_two_instances_dies() {
    let mut sys = System::builder().with(Service::Jokes).child(Service::Jokes).start().await;
    eventually("the gateway to see both instances", Duration::from_secs(5), || async {
        (status_of(&sys.gateway.url, "jokes").await["instances"].as_array().map_or(0, Vec::len) == 2).then_some(())
    })
    .await;
    sys.kill(Service::Jokes);
    // GETs are idempotent: a refused connection is retried on the other instance.
    for _ in 0..20 {
        let resp = reqwest::get(format!("{}/joke", sys.gateway.url)).await.unwrap();
        assert_eq!(resp.status(), 200);
    }
}

#[tokio::test]
async fn the_breaker_opens_on_a_dead_upstream_and_closes_when_it_is_back() {
    let mut sys = System::builder().child(Service::Jokes).start().await;
    let url = sys.url("/joke");
    eventually("a joke through the gateway", Duration::from_secs(10), || async {
        reqwest::get(&url).await.ok().filter(|r| r.status() == 200)
    })
    .await;
    sys.kill(Service::Jokes);
    let gateway = &sys.gateway;

    // Failures trip the breaker; from then on the gateway answers 503 at once.
    let open = eventually("the circuit to open", Duration::from_secs(5), || async {
        let resp = reqwest::get(&url).await.unwrap();
        let status = resp.status();
        let retry_after = resp.headers().get("retry-after").cloned();
        let body: serde_json::Value = resp.json().await.unwrap();
        (status == 503 && body["detail"].as_str().unwrap_or("").contains("circuit is open")).then_some(retry_after)
    })
    .await;
    assert!(open.is_some(), "a 503 from an open circuit says when to retry");
    assert_eq!(status_of(&gateway.url, "jokes").await["circuit"], "open");

    // The service comes back (a new instance registers); a half-open probe closes the circuit.
    let _back = crate::support::spawn_jokes(&sys.registry.as_url()).await;
    eventually("the circuit to close again", Duration::from_secs(15), || async {
        let ok = reqwest::get(&url).await.unwrap().status() == 200;
        (ok && status_of(&gateway.url, "jokes").await["circuit"] == "closed").then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_instance_the_registry_forgot_registers_again() {
    let sys = spawn_system().await;
    let c = reqwest::Client::new();
    let v: serde_json::Value =
        reqwest::get(format!("{}/v1/services/jokes", sys.registry.url)).await.unwrap().json().await.unwrap();
    let id = v["instances"][0]["instance_id"].as_str().unwrap().to_string();
    assert_eq!(c.delete(format!("{}/v1/instances/{id}", sys.registry.url)).send().await.unwrap().status(), 204);
    eventually("the instance to re-register", Duration::from_secs(5), || async {
        (instance_count(&sys.registry.url).await == 1).then_some(())
    })
    .await;
}
