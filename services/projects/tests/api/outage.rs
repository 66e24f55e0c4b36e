//! The projects service while its database is down: every request that needs it is a quick 503
//! problem with `Retry-After`, `/readyz` stays 200 and says the database is down, and once the
//! database is back the service answers again by itself, with every write it acknowledged before.
//! PostgreSQL's outages are made by a fault proxy between the service and the shared server
//! (refusing, resetting or black-holing connections); SQLite's by another process's lock.

use std::time::{Duration, Instant};

use kit::test_support::{eventually, fresh_db, fresh_postgres_database, postgres_url, Backend, Fault, FaultProxy};
use reqwest::StatusCode;
use serde_json::Value;

use super::{problem, TestProjects};

/// Asserts a 503 problem with `Retry-After`, naming the database.
async fn unavailable(resp: reqwest::Response, what: &str) {
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
    let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    assert!(retry_after.is_some_and(|s| s.parse::<u64>().is_ok_and(|secs| secs >= 1)), "{what}: Retry-After");
    let body = problem(resp).await;
    assert_eq!(body["type"], "https://agora.dev/problems/unavailable", "{what}: {body}");
    assert_eq!(body["dependency"], "database", "{what}: {body}");
}

async fn readiness(svc: &TestProjects) -> Value {
    let resp = svc.get("/readyz").await;
    assert_eq!(resp.status(), StatusCode::OK, "an outage of the database does not make the instance unready");
    resp.json().await.unwrap()
}

/// The service on PostgreSQL behind a fault proxy: `fault` makes the outage.
async fn an_outage_of_postgres(fault: Fault) {
    let Some(server) = postgres_url() else { return };
    let database = fresh_postgres_database(&server).await;
    let proxy = FaultProxy::in_front_of(&database).await;
    let svc = super::spawn_projects_on(&proxy.url(&database)).await;
    let acknowledged = svc.propose("acknowledged just before the outage").await;

    proxy.set(fault);
    // The first request finds the outage (it may wait, for at most DB_OUTAGE_DETECT_MS); then the gate is shut.
    unavailable(svc.get("/projects").await, "the first listing").await;
    eventually("the readiness body to say the database is down", Duration::from_secs(10), || async {
        let ready = readiness(&svc).await;
        (ready["status"] == "degraded").then_some(ready)
    })
    .await;
    for round in 0..3 {
        let started = Instant::now();
        unavailable(svc.get("/projects").await, "the listing").await;
        unavailable(svc.get(&format!("/projects/{acknowledged}")).await, "a project").await;
        unavailable(svc.propose_as("alice", &super::popee()).await, "a proposal").await;
        let tags = serde_json::json!({"project_id": acknowledged, "add": ["outage"]});
        unavailable(svc.put_tags("alice", tags).await, "a tag change").await;
        // Generous: the pool's acquire timeout alone was 3 s per request before.
        assert!(started.elapsed() < Duration::from_secs(1), "round {round} took {:?}", started.elapsed());
    }
    let ready = readiness(&svc).await;
    assert_eq!(ready["dependencies"][0]["name"], "database");
    assert_eq!(ready["dependencies"][0]["status"], "down");

    proxy.set(Fault::Pass);
    let page: Value = eventually("the service to answer again, not restarted", Duration::from_secs(20), || async {
        let resp = svc.get("/projects").await;
        if resp.status() == StatusCode::OK {
            resp.json().await.ok()
        } else {
            None
        }
    })
    .await;
    let ids: Vec<i64> = page["projects"].as_array().unwrap().iter().filter_map(|p| p["project_id"].as_i64()).collect();
    assert!(ids.contains(&acknowledged), "the write acknowledged before the outage is there: {page}");
    let after = eventually("a write to go through again", Duration::from_secs(20), || async {
        let resp = svc.propose_as("alice", &super::popee()).await;
        if resp.status() == StatusCode::CREATED {
            resp.json::<Value>().await.ok()
        } else {
            None
        }
    })
    .await;
    assert!(after["project_id"].as_i64().unwrap() > acknowledged);
    assert_eq!(readiness(&svc).await["status"], "ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_postgres, ignore = "set AGORA_TEST_POSTGRES_URL to run it against PostgreSQL")]
async fn postgres_refusing_connections_is_a_quick_503_and_the_service_recovers_by_itself() {
    an_outage_of_postgres(Fault::Refuse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_postgres, ignore = "set AGORA_TEST_POSTGRES_URL to run it against PostgreSQL")]
async fn postgres_resetting_connections_is_a_quick_503_and_the_service_recovers_by_itself() {
    an_outage_of_postgres(Fault::Reset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_postgres, ignore = "set AGORA_TEST_POSTGRES_URL to run it against PostgreSQL")]
async fn postgres_black_holed_is_a_quick_503_after_the_first_wait_and_the_service_recovers_by_itself() {
    an_outage_of_postgres(Fault::BlackHole).await;
}

/// The SQLite file of a service, from its URL.
fn sqlite_file(url: &str) -> String {
    let rest = url.strip_prefix("sqlite://").unwrap();
    rest.split('?').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_file_locked_by_another_process_refuses_writes_with_a_503_while_reads_go_on() {
    let db = fresh_db(&Backend::Sqlite, "projects").await;
    let svc = super::spawn_projects_on(&db.url).await;
    let id = svc.propose("written before the lock").await;

    // Another process (here: another connection of its own) holds the write lock.
    let file = sqlite_file(&db.url);
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&file);
    let mut other = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.unwrap();

    unavailable(svc.propose_as("alice", &super::popee()).await, "a proposal while the file is locked").await;
    let tags = serde_json::json!({"project_id": id, "add": ["locked"]});
    unavailable(svc.put_tags("alice", tags).await, "a tag change while the file is locked").await;
    let resp = svc.get(&format!("/projects/{id}")).await;
    assert_eq!(resp.status(), StatusCode::OK, "reads go on");
    let resp = svc.get("/projects").await;
    assert_eq!(resp.status(), StatusCode::OK, "reads go on");
    assert_eq!(readiness(&svc).await["status"], "ready", "a lock is not an outage");

    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    let after = svc.propose("written after the lock").await;
    assert!(after > id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_sqlite_file_refuses_writes_with_a_503_while_reads_go_on() {
    let db = fresh_db(&Backend::Sqlite, "projects").await;
    let id = {
        let svc = super::spawn_projects_on(&db.url).await;
        svc.propose("written while the file was writable").await
    };
    // The same file opened read-only, as on a file system remounted read-only.
    let read_only = format!("sqlite://{}?mode=ro", sqlite_file(&db.url));
    let svc = super::spawn_projects_on(&read_only).await;

    let resp = svc.get(&format!("/projects/{id}")).await;
    assert_eq!(resp.status(), StatusCode::OK, "reads go on");
    let resp = svc.get("/projects").await;
    assert_eq!(resp.status(), StatusCode::OK, "reads go on");
    unavailable(svc.propose_as("alice", &super::popee()).await, "a proposal to a read-only file").await;
    let tags = serde_json::json!({"project_id": id, "add": ["read-only"]});
    unavailable(svc.put_tags("alice", tags).await, "a tag change to a read-only file").await;
    assert_eq!(readiness(&svc).await["status"], "ready", "a read-only file is not an outage");
}
