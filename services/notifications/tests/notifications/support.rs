//! A running notifications service for one test, the bus that feeds it, its token issuer, and a
//! reader of its event stream.

use std::time::Duration;

use chrono::Utc;
use contracts::media::{ConversionFailed, Mp3Ready};
use kit::events::{EventBus, EventsConfig};
use kit::test_support::{client, eventually, fresh_db, Backend, Running, TestDb, TestIssuer};
use reqwest::StatusCode;
use serde_json::Value;

/// Generous, for a debug build on a busy machine.
pub const LONG: Duration = Duration::from_secs(30);

/// The service on a fresh database, and a connection to its bus to publish with.
pub struct TestNotifications {
    pub url: String,
    pub http: reqwest::Client,
    pub issuer: TestIssuer,
    pub bus: EventBus,
    _data: tempfile::TempDir,
    _service: Running,
    _db: TestDb,
}

impl TestNotifications {
    /// On `backend`, with the embedded bus and no e-mail.
    pub async fn start(backend: &Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// [`TestNotifications::start`] with a configuration changed by `change`.
    pub async fn start_with(backend: &Backend, change: impl FnOnce(&mut notifications::Config)) -> Self {
        let db = fresh_db(backend, "notifications").await;
        let data = tempfile::tempdir().unwrap();
        let issuer = TestIssuer::new();
        let mut config = notifications::Config::for_tests(&db.url, data.path(), issuer.key_source());
        change(&mut config);
        let bus = EventBus::connect(&config.events, contracts::TOPICS).await.unwrap();
        let service = notifications::testing::spawn_notifications(config).await;
        Self { url: service.url.clone(), http: client(), issuer, bus, _data: data, _service: service, _db: db }
    }

    pub fn token(&self, user: &str) -> String {
        self.issuer.token(user, &format!("user {user}"))
    }

    pub async fn get(&self, user: &str, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.url)).bearer_auth(self.token(user)).send().await.unwrap()
    }

    pub async fn post(&self, user: &str, path: &str) -> reqwest::Response {
        self.http.post(format!("{}{path}", self.url)).bearer_auth(self.token(user)).send().await.unwrap()
    }

    /// `GET path` as `user`, expecting 200; the body.
    pub async fn page(&self, user: &str, path: &str) -> Value {
        let resp = self.get(user, path).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        resp.json().await.unwrap()
    }

    /// Publishes "the mp3 of `file_name` is ready" for `owner`; the event's id.
    pub async fn publish_ready(&self, owner: &str, file_name: &str) -> String {
        let video_id = uuid::Uuid::now_v7().to_string();
        let ready = Mp3Ready {
            mp3_id: format!("mp3-of-{video_id}"),
            video_id: video_id.clone(),
            owner: owner.into(),
            file_name: file_name.into(),
            mp3_size: 48_000,
            duration_ms: 3_000,
            converted_at: Utc::now(),
        };
        self.bus.publish(&video_id, &ready).await.unwrap().to_string()
    }

    /// Publishes "`file_name` could not be converted: `reason`" for `owner`; the event's id.
    pub async fn publish_failed(&self, owner: &str, file_name: &str, reason: &str) -> String {
        let video_id = uuid::Uuid::now_v7().to_string();
        let failed = ConversionFailed {
            video_id: video_id.clone(),
            owner: owner.into(),
            file_name: file_name.into(),
            reason: reason.into(),
            failed_at: Utc::now(),
        };
        self.bus.publish(&video_id, &failed).await.unwrap().to_string()
    }

    /// Waits until `user` has the notification `id`; it, as listed.
    pub async fn stored(&self, user: &str, id: &str) -> Value {
        eventually("the notification to be stored", LONG, || async {
            let page = self.page(user, "/notifications?limit=100").await;
            page["notifications"].as_array().unwrap().iter().find(|n| n["id"] == id).cloned()
        })
        .await
    }

    /// Opens `user`'s stream, with `Last-Event-ID` if given.
    pub async fn stream(&self, user: &str, last_event_id: Option<&str>) -> EventStream {
        let mut request = self.http.get(format!("{}/notifications/stream", self.url)).bearer_auth(self.token(user));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        EventStream { response, buffer: String::new() }
    }
}

/// An open `text/event-stream` response, read one event at a time.
pub struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

/// One Server-Sent Event.
#[derive(Debug)]
pub struct SentEvent {
    pub id: String,
    pub data: Value,
}

impl EventStream {
    /// The next event (comments skipped); panics if none comes within [`LONG`].
    pub async fn next(&mut self) -> SentEvent {
        tokio::time::timeout(LONG, self.read()).await.expect("no event on the stream in time")
    }

    async fn read(&mut self) -> SentEvent {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut data) = (None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if let Some(id) = id {
                    return SentEvent { id, data: serde_json::from_str(&data).unwrap() };
                }
                continue;
            }
            let chunk = self.response.chunk().await.unwrap().expect("the stream ended");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// The configuration of a bus on RabbitMQ in a namespace of its own, if a broker is configured.
pub fn amqp_events() -> Option<(EventsConfig, String, String)> {
    let url = kit::test_support::amqp_url()?;
    let namespace = format!("notifications-test-{}", uuid::Uuid::new_v4().simple());
    Some((EventsConfig::new(url.clone()).with_namespace(&namespace), url, namespace))
}
