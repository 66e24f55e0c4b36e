//! The projects service over real sockets, on SQLite and on PostgreSQL when
//! configured, with the threads service down: proposals, listing, tags,
//! validation and degradation. (Flows through a live threads service are in
//! the system tests, `crates/agora/tests/system/projects.rs`.)

use contracts::projects::{ProjectChanged, ProjectProposed};
use kit::events::{EventBus, EventsConfig, Heard, Listener};
use kit::on_every_backend;
use kit::test_support::{client, fresh_db, Backend, Running, TestDb, TestIssuer};
use reqwest::StatusCode;
use serde_json::{json, Value};

mod outage;

/// A running projects service whose threads service is unreachable.
struct TestProjects {
    url: String,
    http: reqwest::Client,
    issuer: TestIssuer,
    /// The event bus the service publishes to.
    events: EventsConfig,
    _service: Running,
    _db: Option<TestDb>,
}

/// A loopback URL where nothing listens.
fn nowhere() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

async fn spawn_projects(backend: &Backend) -> TestProjects {
    let db = fresh_db(backend, "projects").await;
    let mut svc = spawn_projects_on(&db.url).await;
    svc._db = Some(db);
    svc
}

/// A projects service on the database at `database_url`.
async fn spawn_projects_on(database_url: &str) -> TestProjects {
    let issuer = TestIssuer::new();
    let config = projects::Config::for_tests(database_url, &nowhere(), issuer.key_source());
    let events = config.events.clone();
    let service = projects::testing::spawn(config).await;
    TestProjects { url: service.url.clone(), http: client(), issuer, events, _service: service, _db: None }
}

fn popee() -> Value {
    json!({
        "project_name": "Popee the Performer",
        "tagline": "an apprentice clown in Wolf Circus",
        "problems": ["short temper", "self centered"],
        "solutions": ["play the drums"],
        "tags": ["clown", "circus"]
    })
}

impl TestProjects {
    fn token(&self, user: &str) -> String {
        self.issuer.token(user, &format!("user {user}"))
    }

    async fn propose_as(&self, user: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/projects/propose", self.url))
            .bearer_auth(self.token(user))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn propose(&self, name: &str) -> i64 {
        let mut body = popee();
        body["project_name"] = json!(name);
        let resp = self.propose_as("alice", &body).await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        resp.json::<Value>().await.unwrap()["project_id"].as_i64().unwrap()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.url)).send().await.unwrap()
    }

    async fn put_tags(&self, user: &str, body: Value) -> reqwest::Response {
        self.http
            .put(format!("{}/projects/tags", self.url))
            .bearer_auth(self.token(user))
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

async fn problem(resp: reqwest::Response) -> Value {
    assert_eq!(resp.headers()["content-type"], "application/problem+json", "{resp:?}");
    resp.json().await.unwrap()
}

on_every_backend!(
    the_seed_proposal_is_stored_and_its_threads_wait_in_the_outbox_while_threads_is_down,
    projects_are_listed_newest_first_a_page_at_a_time,
    tag_changes_are_atomic_and_only_for_the_author,
    proposals_and_tag_changes_are_announced_on_the_event_bus,
);

/// The next event a listener hears.
async fn next_event(heard: &mut Listener) -> std::sync::Arc<kit::events::Envelope> {
    match tokio::time::timeout(std::time::Duration::from_secs(20), heard.next()).await {
        Ok(Some(Heard::Event(envelope))) => envelope,
        other => panic!("no event: {other:?}"),
    }
}

async fn proposals_and_tag_changes_are_announced_on_the_event_bus(backend: Backend) {
    let svc = spawn_projects(&backend).await;
    let bus = EventBus::connect(&svc.events, contracts::TOPICS).await.unwrap();
    let mut heard = bus.listen("project.*").await.unwrap();

    let id = svc.propose("Popee").await;
    let proposed = next_event(&mut heard).await;
    assert_eq!((proposed.topic.as_str(), proposed.key.clone()), ("project.proposed", id.to_string()));
    let proposed: ProjectProposed = proposed.decode().unwrap();
    assert_eq!((proposed.project_id, proposed.project_name.as_str()), (id, "Popee"));
    assert_eq!(proposed.tags, ["clown", "circus"]);
    assert_eq!((proposed.author.as_str(), proposed.author_name.as_str()), ("alice", "user alice"));

    let resp = svc.put_tags("alice", json!({"project_id": id, "add": ["drums"], "remove": ["circus"]})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let changed: ProjectChanged = next_event(&mut heard).await.decode().unwrap();
    assert_eq!((changed.project_id, changed.tags), (id, vec!["clown".to_string(), "drums".to_string()]));

    // A change that is refused announces nothing: the next event is the next proposal.
    let resp = svc.put_tags("mallory", json!({"project_id": id, "add": ["spam"]})).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let other = svc.propose("Other").await;
    let proposed: ProjectProposed = next_event(&mut heard).await.decode().unwrap();
    assert_eq!(proposed.project_id, other);
}

async fn the_seed_proposal_is_stored_and_its_threads_wait_in_the_outbox_while_threads_is_down(backend: Backend) {
    let svc = spawn_projects(&backend).await;
    let resp = svc.propose_as("alice", &popee()).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    let id = body["project_id"].as_i64().unwrap();
    assert_eq!(location, format!("/projects/{id}"));
    assert_eq!(body["threads"], "pending");

    // Degradation: the project is still served, without threads, saying why.
    let resp = svc.get(&location).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let detail: Value = resp.json().await.unwrap();
    assert_eq!(detail["project_name"], "Popee the Performer");
    assert_eq!(detail["tags"], json!(["clown", "circus"]));
    assert_eq!(detail["threads"], Value::Null);
    assert_eq!(detail["threads_pending"], 3);
    assert_eq!(detail["threads_problem"]["status"], 503);
    assert!(detail["threads_problem"]["detail"].as_str().unwrap().contains("threads"), "{detail}");

    // The listing does not need the threads service at all.
    let page: Value = svc.get("/projects").await.json().await.unwrap();
    assert_eq!(page["projects"][0]["project_id"], id);
    assert!(page["projects"][0].get("threads").is_none());
}

async fn projects_are_listed_newest_first_a_page_at_a_time(backend: Backend) {
    let svc = spawn_projects(&backend).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(svc.propose(&format!("project {i}")).await);
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut path = "/projects?limit=2".to_string();
    loop {
        let page: Value = svc.get(&path).await.json().await.unwrap();
        seen.extend(page["projects"].as_array().unwrap().iter().map(|p| p["project_id"].as_i64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/projects?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    for bad in ["/projects?limit=0", "/projects?limit=1000", "/projects?cursor=abc", "/projects?cursor="] {
        let resp = svc.get(bad).await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        let field = problem(resp).await["field"].clone();
        assert!(field == "limit" || field == "cursor", "{bad}: {field}");
    }
    let resp = svc.get("/projects?limit=many").await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(problem(resp).await["detail"].as_str().unwrap().contains("limit"));
}

async fn tag_changes_are_atomic_and_only_for_the_author(backend: Backend) {
    let svc = spawn_projects(&backend).await;
    let id = svc.propose("tagged").await;
    let resp = svc.put_tags("alice", json!({"project_id": id, "add": ["drums", "clown"], "remove": ["circus"]})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["tags"], json!(["clown", "drums"]));

    // Over the limit, or one bad tag: nothing of the change is applied.
    let many: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
    let resp = svc.put_tags("alice", json!({"project_id": id, "add": many, "remove": ["clown"]})).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem(resp).await["field"], "add");
    let resp = svc.put_tags("alice", json!({"project_id": id, "add": ["ok", " "], "remove": ["drums"]})).await;
    assert_eq!(problem(resp).await["field"], "add[1]");
    let detail: Value = svc.get(&format!("/projects/{id}")).await.json().await.unwrap();
    assert_eq!(detail["tags"], json!(["clown", "drums"]));

    let resp = svc.put_tags("mallory", json!({"project_id": id, "add": ["spam"]})).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = svc.put_tags("alice", json!({"project_id": 999_999, "add": ["x"]})).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    problem(resp).await;
}

#[tokio::test]
async fn every_bad_proposal_is_a_problem_naming_its_field() {
    let svc = spawn_projects(&Backend::Sqlite).await;
    let cases = [
        (json!({"project_name": "   "}), "project_name"),
        (json!({"project_name": "x".repeat(201)}), "project_name"),
        (json!({"project_name": "ok", "tagline": "x".repeat(501)}), "tagline"),
        (json!({"project_name": "ok", "tags": vec!["t"; 21]}), "tags"),
        (json!({"project_name": "ok", "tags": ["fine", "x".repeat(51)]}), "tags[1]"),
        (json!({"project_name": "ok", "problems": vec!["p"; 101]}), "problems"),
        (json!({"project_name": "ok", "solutions": ["x".repeat(10_001)]}), "solutions[0]"),
    ];
    for (body, field) in cases {
        let resp = svc.propose_as("alice", &body).await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{field}");
        assert_eq!(problem(resp).await["field"], field);
    }
    // Shapes serde refuses name the field too.
    for (body, field) in
        [(json!({"tagline": "no name"}), "project_name"), (json!({"project_name": "ok", "tags": "clown"}), "tags")]
    {
        let resp = svc.propose_as("alice", &body).await;
        assert!(resp.status().is_client_error());
        let detail = problem(resp).await["detail"].as_str().unwrap().to_string();
        assert!(detail.contains(field), "{detail}");
    }
    let resp = svc
        .http
        .post(format!("{}/projects/propose", svc.url))
        .bearer_auth(svc.token("alice"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    problem(resp).await;
    // Nothing of the refused proposals was stored.
    let page: Value = svc.get("/projects").await.json().await.unwrap();
    assert_eq!(page["projects"], json!([]));
}

#[tokio::test]
async fn a_json_proposal_sent_as_curl_sends_it_is_accepted_and_other_types_are_415() {
    let svc = spawn_projects(&Backend::Sqlite).await;
    let send = |content_type: Option<&str>, body: String| {
        let mut req = svc.http.post(format!("{}/projects/propose", svc.url)).bearer_auth(svc.token("alice")).body(body);
        if let Some(content_type) = content_type {
            req = req.header("content-type", content_type);
        }
        req.send()
    };
    // `curl -X POST -d '{…}'`: the form type curl sends by default, or no type at all.
    for (i, content_type) in [Some("application/x-www-form-urlencoded"), None].into_iter().enumerate() {
        let mut body = popee();
        body["project_name"] = json!(format!("curl proposal {i}"));
        let resp = send(content_type, body.to_string()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED, "{content_type:?}");
    }
    // The rule is for JSON only: a real form, or any other type, is refused as before.
    let form = send(Some("application/x-www-form-urlencoded"), "project_name=x".into()).await.unwrap();
    assert_eq!(form.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(problem(form).await["type"].as_str().unwrap().rsplit('/').next(), Some("unsupported-media-type"));
    let text = send(Some("text/plain"), popee().to_string()).await.unwrap();
    assert_eq!(text.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    problem(text).await;
    // Form-typed JSON of the wrong shape is the same 422 as with the JSON type.
    let wrong = send(Some("application/x-www-form-urlencoded"), json!({"tagline": "no name"}).to_string()).await;
    assert_eq!(wrong.unwrap().status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page: Value = svc.get("/projects").await.json().await.unwrap();
    assert_eq!(page["projects"].as_array().unwrap().len(), 2, "{page}");
}

#[tokio::test]
async fn writes_need_a_valid_token() {
    let svc = spawn_projects(&Backend::Sqlite).await;
    let resp = svc.http.post(format!("{}/projects/propose", svc.url)).json(&popee()).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    problem(resp).await;
    let other = TestIssuer::new().token("alice", "alice");
    for (method, path) in [("POST", "/projects/propose"), ("POST", "/projects/1/threads"), ("POST", "/threads/1/vote")]
    {
        let resp = svc
            .http
            .request(method.parse().unwrap(), format!("{}{path}", svc.url))
            .bearer_auth(&other)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
}

#[tokio::test]
async fn unknown_projects_are_404_and_new_threads_on_them_too() {
    let svc = spawn_projects(&Backend::Sqlite).await;
    let resp = svc.get("/projects/424242").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    problem(resp).await;
    let resp = svc
        .http
        .post(format!("{}/projects/424242/threads", svc.url))
        .bearer_auth(svc.token("bob"))
        .json(&json!({"thread_type": "COMMENT", "message": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = svc
        .http
        .post(format!("{}/projects/1/threads", svc.url))
        .bearer_auth(svc.token("bob"))
        .json(&json!({"thread_type": "COMMENT", "message": " "}))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(resp).await["field"], "message");
    let resp = svc
        .http
        .post(format!("{}/threads/1/vote", svc.url))
        .bearer_auth(svc.token("bob"))
        .json(&json!({"direction": "sideways"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem(resp).await["detail"].as_str().unwrap().contains("direction"));
}
