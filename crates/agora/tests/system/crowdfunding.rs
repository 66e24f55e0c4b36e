//! Crowdfunding (SPEC §3.5): the projects service (REST) and the threads
//! service (gRPC) together, through the gateway as a user sees them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kit::config::ServiceConfig;
use kit::grpc::GrpcTls;
use kit::on_every_backend;
use kit::test_support::{eventually, fresh_db, Backend, TestDb, TestIssuer};

use projects::domain::{Direction, ThreadType};
use serde_json::{json, Value};

use crate::support::{expect_problem, spawn_registry, Running};
use crate::system::{Proposal, Service, System};

/// A loopback address where nothing listens yet.
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A threads instance on `listen` (port 0 for any), registered with `registry` if given.
async fn spawn_threads(db: &TestDb, registry: Option<&url::Url>, listen: SocketAddr, tls: GrpcTls) -> Running {
    let mut config = threads::Config::for_tests(&db.url);
    config.service = ServiceConfig::for_tests("threads", registry.cloned());
    config.service.listen = listen;
    config.tls = tls;
    config.database.outage.detect = PATIENT_OUTAGE_DETECTION;
    threads::testing::spawn(config).await
}

/// These tests load a 2-core machine that other tests load too (a thousand voters at once): with
/// the default 500 ms, a database probe starved of CPU can read as an outage. Outage detection
/// has its own tests (`outage`), with the default.
const PATIENT_OUTAGE_DETECTION: std::time::Duration = std::time::Duration::from_secs(3);

/// A projects instance calling threads at `threads_url` (or through `registry`), trusting `issuer`'s tokens.
async fn spawn_projects(
    db: &TestDb,
    threads_url: &str,
    registry: Option<&url::Url>,
    keys: kit::auth::KeySource,
    tls: GrpcTls,
) -> Running {
    let mut config = projects::Config::for_tests(&db.url, threads_url, keys);
    if let Some(registry) = registry {
        config.service = ServiceConfig::for_tests("projects", Some(registry.clone()));
    }
    config.tls = tls;
    config.database.outage.detect = PATIENT_OUTAGE_DETECTION;
    projects::testing::spawn(config).await
}

fn seed_proposal() -> Value {
    json!({
        "project_name": "Popee the Performer",
        "tagline": "an apprentice clown in Wolf Circus",
        "problems": ["short temper", "self centered"],
        "solutions": ["play the drums"],
        "tags": ["clown", "circus"]
    })
}

async fn propose(http: &reqwest::Client, base: &str, token: &str) -> (i64, Value) {
    let resp =
        http.post(format!("{base}/projects/propose")).bearer_auth(token).json(&seed_proposal()).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    (body["project_id"].as_i64().unwrap(), body)
}

async fn detail(http: &reqwest::Client, base: &str, id: i64, token: Option<&str>) -> Value {
    let mut req = http.get(format!("{base}/projects/{id}"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

fn types_of(threads: &Value) -> Vec<(String, String)> {
    threads
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["thread_type"].as_str().unwrap().to_string(), t["message"].as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_curl_works_through_the_gateway_with_a_bearer_token() {
    // Started returns once the gateway routes to auth and projects.
    let system = System::builder().with(Service::Auth).with(Service::Threads).with(Service::Projects).start().await;
    let (gw, http) = (system.gateway.url.clone(), system.http().clone());

    // A user signs up and logs in for a token.
    let popee = system.sign_up("popee").await;
    let token = popee.token.clone();

    // Without a token the gateway refuses the write.
    let resp = http.post(format!("{gw}/projects/propose")).json(&seed_proposal()).send().await.unwrap();
    expect_problem(resp, 401).await;

    // Seed 003's request, with the token: 201 and the id; its problems and solutions became threads.
    let proposed = system.propose(&popee, &Proposal::seed()).await;
    let id = proposed.project_id;
    assert_eq!(proposed.threads, "created");
    let project = system.project(id, Some(&popee)).await;
    assert_eq!(project.project_name, "Popee the Performer");
    assert_eq!(project.tags, ["clown", "circus"]);
    assert_eq!(project.threads_pending, 0);
    let threads = project.threads.unwrap();
    let kinds: Vec<_> = threads.iter().map(|t| (t.thread_type, t.message.as_str())).collect();
    assert_eq!(
        kinds,
        [
            (ThreadType::Problem, "short temper"),
            (ThreadType::Problem, "self centered"),
            (ThreadType::Solution, "play the drums")
        ]
    );
    let problem_id = threads[0].thread_id;
    // An anonymous reader's page (the one the projects service caches).
    let anonymous = system.project(id, None).await.threads.unwrap();
    assert_eq!(anonymous[0].my_vote, Direction::None);
    assert_eq!(anonymous.len(), 3);

    // A reply, and votes: counted once per voter, changed, withdrawn.
    let resp = http
        .post(format!("{gw}/projects/{id}/threads"))
        .bearer_auth(&token)
        .json(&json!({"thread_type": "COMMENT", "message": "count to ten first", "parent_thread_id": problem_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let reply: Value = resp.json().await.unwrap();
    assert_eq!(reply["parent_thread_id"], problem_id);
    assert_eq!(reply["author_name"], "popee");
    let vote = |direction: &'static str| {
        let (http, token, url) = (http.clone(), token.clone(), format!("{gw}/threads/{problem_id}/vote"));
        async move {
            let resp = http.post(url).bearer_auth(token).json(&json!({ "direction": direction })).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let counts: Value = resp.json().await.unwrap();
            (counts["up_vote"].as_i64().unwrap(), counts["down_vote"].as_i64().unwrap())
        }
    };
    assert_eq!(vote("up").await, (1, 0));
    assert_eq!(vote("up").await, (1, 0));
    assert_eq!(vote("down").await, (0, 1));
    let project = detail(&http, &gw, id, Some(&token)).await;
    assert_eq!(project["threads"][0]["my_vote"], "down");
    assert_eq!(project["threads"].as_array().unwrap().len(), 4);
    // Anonymous readers see the reply and the vote at once: the cached page was dropped.
    let anonymous = detail(&http, &gw, id, None).await;
    assert_eq!(anonymous["threads"].as_array().unwrap().len(), 4);
    assert_eq!(
        (anonymous["threads"][0]["up_vote"].as_i64(), anonymous["threads"][0]["down_vote"].as_i64()),
        (Some(0), Some(1))
    );
    assert_eq!(vote("none").await, (0, 0));
    let resp = http
        .put(format!("{gw}/projects/tags"))
        .bearer_auth(&token)
        .json(&json!({"project_id": id, "add": ["drums"], "remove": ["circus"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let anonymous = detail(&http, &gw, id, None).await;
    assert_eq!(anonymous["tags"], json!(["clown", "drums"]));
    assert_eq!(anonymous["threads"][0]["down_vote"], 0);

    // Unknown thread and a reply to a thread of another project are refused.
    let resp = http
        .post(format!("{gw}/threads/987654/vote"))
        .bearer_auth(&token)
        .json(&json!({"direction": "up"}))
        .send()
        .await
        .unwrap();
    expect_problem(resp, 404).await;
    let (other, _) = propose(&http, &gw, &token).await;
    let resp = http
        .post(format!("{gw}/projects/{other}/threads"))
        .bearer_auth(&token)
        .json(&json!({"thread_type": "COMMENT", "message": "wrong project", "parent_thread_id": problem_id}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_client_error(), "{}", resp.status());
    // The threads service names the field in its status's details, and projects passes it on.
    let refused = expect_problem(resp, 422).await;
    assert_eq!(refused["field"], "parent_thread_id", "{refused}");
    let resp = http
        .post(format!("{gw}/projects/{id}/threads"))
        .bearer_auth(&token)
        .json(&json!({"thread_type": "COMMENT", "message": "x".repeat(10_001)}))
        .send()
        .await
        .unwrap();
    assert_eq!(expect_problem(resp, 422).await["field"], "message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_made_while_threads_is_down_is_completed_from_the_outbox_exactly_once() {
    let issuer = TestIssuer::new();
    let token = issuer.token("u1", "alice");
    let threads_addr = free_addr();
    let projects_db = fresh_db(&Backend::Sqlite, "projects").await;
    let projects =
        spawn_projects(&projects_db, &format!("http://{threads_addr}"), None, issuer.key_source(), GrpcTls::none())
            .await;
    let http = kit::test_support::client();

    let (id, body) = propose(&http, &projects.url, &token).await;
    assert_eq!(body["threads"], "pending");
    let project = detail(&http, &projects.url, id, None).await;
    assert_eq!(project["threads"], Value::Null);
    assert_eq!(project["threads_pending"], 3);
    assert_eq!(project["threads_problem"]["status"], 503);
    let listing: Value = http.get(format!("{}/projects", projects.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(listing["projects"][0]["project_id"], id);

    // The threads service comes up: the relay delivers the proposal's threads, once.
    let threads_db = fresh_db(&Backend::Sqlite, "threads").await;
    let _threads = spawn_threads(&threads_db, None, threads_addr, GrpcTls::none()).await;
    let project = eventually("the outbox to be delivered", Duration::from_secs(60), || {
        let (http, url) = (http.clone(), projects.url.clone());
        async move {
            let project = detail(&http, &url, id, None).await;
            (project["threads_pending"] == 0 && project["threads"].is_array()).then_some(project)
        }
    })
    .await;
    assert_eq!(types_of(&project["threads"]).len(), 3);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = detail(&http, &projects.url, id, None).await;
    assert_eq!(types_of(&again["threads"]).len(), 3, "no thread was created twice");
}

on_every_backend!(a_thousand_concurrent_voters_are_counted_exactly);

async fn a_thousand_concurrent_voters_are_counted_exactly(backend: Backend) {
    let issuer = TestIssuer::new();
    let threads_db = fresh_db(&backend, "threads").await;
    let threads = spawn_threads(&threads_db, None, free_addr(), GrpcTls::none()).await;
    let projects_db = fresh_db(&backend, "projects").await;
    let projects = spawn_projects(&projects_db, &threads.url, None, issuer.key_source(), GrpcTls::none()).await;
    let http = reqwest::Client::new();
    let (id, _) = propose(&http, &projects.url, &issuer.token("author", "author")).await;
    let thread_id = detail(&http, &projects.url, id, None).await["threads"][0]["thread_id"].as_i64().unwrap();
    let tokens: Arc<Vec<String>> = Arc::new((0..1000).map(|i| issuer.token(&format!("voter-{i}"), "voter")).collect());

    let cast = |who: std::ops::Range<usize>, direction: &'static str| {
        let tasks: Vec<_> = who
            .map(|i| {
                let (http, tokens) = (http.clone(), tokens.clone());
                let url = format!("{}/threads/{thread_id}/vote", projects.url);
                tokio::spawn(async move {
                    let resp =
                        http.post(url).bearer_auth(&tokens[i]).json(&json!({ "direction": direction })).send().await;
                    resp.map(|r| r.status().as_u16()).unwrap_or(0)
                })
            })
            .collect();
        async move {
            let statuses = futures_join(tasks).await;
            assert!(
                statuses.iter().all(|s| *s == 200),
                "some votes failed: {:?}",
                statuses.iter().filter(|s| **s != 200).take(5).collect::<Vec<_>>()
            );
        }
    };
    cast(0..1000, "up").await;
    let counts =
        |project: &Value| (project["threads"][0]["up_vote"].as_i64(), project["threads"][0]["down_vote"].as_i64());
    assert_eq!(counts(&detail(&http, &projects.url, id, None).await), (Some(1000), Some(0)));
    // 400 change their mind and 100 withdraw, all at once; 100 vote up again (no change).
    let (a, b, c) = (cast(0..400, "down"), cast(400..500, "none"), cast(500..600, "up"));
    tokio::join!(a, b, c);
    assert_eq!(counts(&detail(&http, &projects.url, id, None).await), (Some(500), Some(400)));
    let mine = detail(&http, &projects.url, id, Some(&tokens[10])).await;
    assert_eq!(mine["threads"][0]["my_vote"], "down");
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<u16>>) -> Vec<u16> {
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.unwrap_or(0));
    }
    out
}

/// A TCP relay counting the bytes it forwards: shows which instance a call reached.
struct CountingProxy {
    addr: SocketAddr,
    bytes: Arc<AtomicU64>,
}

async fn counting_proxy(target: SocketAddr) -> CountingProxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let bytes = Arc::new(AtomicU64::new(0));
    let counter = bytes.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = tokio::net::TcpStream::connect(target).await else { continue };
            let (in_read, in_write) = inbound.into_split();
            let (out_read, out_write) = outbound.into_split();
            tokio::spawn(pump(in_read, out_write, counter.clone()));
            tokio::spawn(pump(out_read, in_write, counter.clone()));
        }
    });
    CountingProxy { addr, bytes }
}

/// Copies one direction, counting as it goes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counter: Arc<AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_spread_calls_across_two_threads_instances_and_survive_losing_one() {
    let registry = spawn_registry().await;
    let reg = registry.as_url();
    let issuer = TestIssuer::new();
    let threads_db = fresh_db(&Backend::Sqlite, "threads").await;
    // Each instance advertises a counting relay in front of it, so the test sees where calls go.
    let mut instances = Vec::new();
    for _ in 0..2 {
        let listen = free_addr();
        let proxy = counting_proxy(listen).await;
        let mut config = threads::Config::for_tests(&threads_db.url);
        config.service = ServiceConfig::for_tests("threads", Some(reg.clone()));
        config.service.listen = listen;
        config.service.advertise = Some(proxy.addr.to_string());
        instances.push((threads::testing::spawn(config).await, proxy));
    }
    let projects_db = fresh_db(&Backend::Sqlite, "projects").await;
    let projects = spawn_projects(&projects_db, "", Some(&reg), issuer.key_source(), GrpcTls::none()).await;
    let http = kit::test_support::client();
    let (id, _) = propose(&http, &projects.url, &issuer.token("u", "u")).await;
    // A signed-in reader: their own votes are marked, so every read asks the threads service (no page cache).
    let reader = issuer.token("reader", "reader");
    for _ in 0..40 {
        assert!(detail(&http, &projects.url, id, Some(&reader)).await["threads"].is_array());
    }
    let served: Vec<u64> = instances.iter().map(|(_, p)| p.bytes.load(Ordering::Relaxed)).collect();
    assert!(served.iter().all(|b| *b > 1_000), "both instances serve calls: {served:?} bytes");
    // With one instance gone, every read still gets its threads from the other.
    let (first, _) = instances.remove(0);
    drop(first);
    for _ in 0..20 {
        let project = detail(&http, &projects.url, id, Some(&reader)).await;
        assert!(project["threads"].is_array(), "{project}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_reach_threads_over_tls_when_certificates_are_configured() {
    let certs = kit::test_support::TestCertificates::localhost();
    let issuer = TestIssuer::new();
    let threads_db = fresh_db(&Backend::Sqlite, "threads").await;
    let threads =
        spawn_threads(&threads_db, None, free_addr(), GrpcTls::server(certs.cert_pem.clone(), certs.key_pem.clone()))
            .await;
    let http = kit::test_support::client();
    let token = issuer.token("u", "u");

    // Trusting the CA, projects speak TLS to threads: the proposal's threads are created.
    let db = fresh_db(&Backend::Sqlite, "projects").await;
    let tls = GrpcTls::client(certs.ca_pem.clone(), "localhost");
    let projects = spawn_projects(&db, &threads.url, None, issuer.key_source(), tls).await;
    let (id, body) = propose(&http, &projects.url, &token).await;
    assert_eq!(body["threads"], "created");
    assert_eq!(types_of(&detail(&http, &projects.url, id, None).await["threads"]).len(), 3);

    // Plaintext to a TLS-only server fails: the proposal waits in the outbox instead.
    let db = fresh_db(&Backend::Sqlite, "projects").await;
    let plain = spawn_projects(&db, &threads.url, None, issuer.key_source(), GrpcTls::none()).await;
    let (id, body) = propose(&http, &plain.url, &token).await;
    assert_eq!(body["threads"], "pending");
    assert_eq!(detail(&http, &plain.url, id, None).await["threads"], Value::Null);

    // A client that does not trust the server's CA fails as well.
    let db = fresh_db(&Backend::Sqlite, "projects").await;
    let stranger = kit::test_support::TestCertificates::localhost();
    let untrusting =
        spawn_projects(&db, &threads.url, None, issuer.key_source(), GrpcTls::client(stranger.ca_pem, "localhost"))
            .await;
    let (_, body) = propose(&http, &untrusting.url, &token).await;
    assert_eq!(body["threads"], "pending");
}
