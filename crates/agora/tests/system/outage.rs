//! A database outage as users see it through the gateway (SPEC §2): requests that need the database
//! are quick 503 problems with `Retry-After`, which the gateway passes on without opening the
//! service's circuit; anonymous readers keep getting project pages, marked stale once past their
//! freshness; `/api/status` shows the service degraded, not down; and once the database is back
//! everything answers again, nothing restarted, nothing acknowledged lost.

use std::time::Duration;

use kit::test_support::{eventually, postgres_url, Backend, Fault};
use serde_json::Value;

use crate::support::{expect_problem, status_of};
use crate::system::{Proposal, Service, System};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_postgres, ignore = "set AGORA_TEST_POSTGRES_URL to run it against PostgreSQL")]
async fn a_postgres_outage_of_projects_serves_stale_pages_and_quick_503s_through_the_gateway_until_it_ends() {
    let Some(server) = postgres_url() else { return };
    let system = System::builder()
        .on(Backend::Postgres(server))
        .with(Service::Auth)
        .with(Service::Threads)
        .with(Service::Projects)
        .database_through_fault_proxy(Service::Projects)
        .start()
        .await;
    let popee = system.sign_up("popee").await;
    let proposed = system.propose(&popee, &Proposal::seed()).await;
    let id = proposed.project_id;
    // The page is complete (its threads created) and so kept for anonymous readers.
    eventually("the project's threads to be created", Duration::from_secs(20), || async {
        let page = system.project(id, None).await;
        (page.threads_pending == 0 && page.threads.is_some()).then_some(())
    })
    .await;
    let page_url = system.url(&format!("/projects/{id}"));

    system.fault(Service::Projects, Fault::Refuse);
    // Every anonymous read of the page answers 200 through the outage: fresh from the cache first,
    // then, past its TTL, the same page marked stale with its age.
    let stale: Value = eventually("the page to be served stale", Duration::from_secs(30), || async {
        let resp = system.http().get(&page_url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "an anonymous reader keeps the page through the outage");
        let age = resp.headers().get("age").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        assert!(age.is_some(), "a cached page says its Age");
        let body: Value = resp.json().await.unwrap();
        (body["stale"] == true).then_some(body)
    })
    .await;
    assert_eq!(stale["project_name"], "Popee the Performer");
    assert_eq!(stale["threads"].as_array().map(Vec::len), Some(3));

    // What needs the database is a 503 with Retry-After, many times over: load shedding, which
    // the gateway passes on and does not count against the circuit.
    for _ in 0..12 {
        let resp = system.http().get(system.url("/projects")).send().await.unwrap();
        assert!(resp.headers().contains_key("retry-after"), "{resp:?}");
        let problem = expect_problem(resp, 503).await;
        assert_eq!(problem["dependency"], "database");
        let resp = system
            .http()
            .post(system.url("/projects/propose"))
            .bearer_auth(&popee.token)
            .json(&Proposal::seed())
            .send()
            .await
            .unwrap();
        assert!(resp.headers().contains_key("retry-after"));
        expect_problem(resp, 503).await;
    }
    let status = eventually("the gateway to show projects degraded", Duration::from_secs(20), || async {
        let status = status_of(&system.gateway.url, "projects").await;
        (status["status"] == "degraded").then_some(status)
    })
    .await;
    assert_eq!(status["circuit"], "closed", "load shedding does not open the circuit: {status}");
    let signed_in = system.http().get(&page_url).bearer_auth(&popee.token).send().await.unwrap();
    expect_problem(signed_in, 503).await;

    system.fault(Service::Projects, Fault::Pass);
    eventually("projects to answer again, not restarted", Duration::from_secs(20), || async {
        let resp = system.http().get(system.url("/projects")).send().await.unwrap();
        (resp.status() == 200).then_some(())
    })
    .await;
    let page = system.project(id, None).await;
    assert_eq!(page.project_name, "Popee the Performer", "the proposal acknowledged before the outage is there");
    eventually("the page to be read from the database again", Duration::from_secs(20), || async {
        let page: Value = system.http().get(&page_url).send().await.ok()?.json().await.ok()?;
        page.get("stale").is_none().then_some(())
    })
    .await;
    system.propose(&popee, &Proposal::seed()).await;
    eventually("the gateway to show projects up", Duration::from_secs(20), || async {
        (status_of(&system.gateway.url, "projects").await["status"] == "up").then_some(())
    })
    .await;
}
