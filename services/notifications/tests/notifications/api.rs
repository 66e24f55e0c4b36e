//! Events become notifications for their user, who lists them, pages through them and marks
//! them read; nobody else sees them.

use kit::on_every_backend;
use kit::test_support::{eventually, Backend};
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{amqp_events, TestNotifications, LONG};

on_every_backend!(
    an_mp3_ready_event_becomes_a_notification_for_its_owner_only,
    a_failed_conversion_says_why_and_links_the_media_page,
    a_notification_is_marked_read_by_its_user_and_is_404_for_anyone_else,
    notifications_are_listed_newest_first_a_page_at_a_time,
    bad_parameters_are_422_and_no_token_is_401,
);

async fn problem(resp: reqwest::Response) -> Value {
    assert_eq!(resp.headers()["content-type"], "application/problem+json", "{resp:?}");
    resp.json().await.unwrap()
}

async fn an_mp3_ready_event_becomes_a_notification_for_its_owner_only(backend: Backend) {
    let service = TestNotifications::start(&backend).await;
    let id = service.publish_ready("alice", "holiday clip.mp4").await;

    let stored = service.stored("alice", &id).await;
    assert_eq!(stored["text"], "holiday clip.mp3 is ready");
    assert_eq!(stored["kind"], "mp3_ready");
    assert!(stored["link"].as_str().unwrap().starts_with("/download?fid=mp3-of-"), "{stored}");
    assert_eq!(stored["read"], false);
    let page = service.page("alice", "/notifications").await;
    assert_eq!(page["unread"], 1);
    assert_eq!(page["next_cursor"], Value::Null);

    let theirs = service.page("bob", "/notifications").await;
    assert_eq!(theirs["notifications"], serde_json::json!([]));
    assert_eq!(theirs["unread"], 0);

    // Its readiness lists the subscription it consumes (the gateway's /status shows its lag).
    let ready: Value = service.http.get(format!("{}/readyz", service.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["subscriptions"][0]["subscription"], "notifications", "{ready}");
}

async fn a_failed_conversion_says_why_and_links_the_media_page(backend: Backend) {
    let service = TestNotifications::start(&backend).await;
    let id = service.publish_failed("bob", "notes.mp4", "the file has no audio track").await;
    let stored = service.stored("bob", &id).await;
    assert_eq!(stored["text"], "notes.mp4 could not be converted: the file has no audio track");
    assert_eq!(stored["kind"], "conversion_failed");
    assert_eq!(stored["link"], "/media");
}

async fn a_notification_is_marked_read_by_its_user_and_is_404_for_anyone_else(backend: Backend) {
    let service = TestNotifications::start(&backend).await;
    let first = service.publish_ready("alice", "a.mp4").await;
    let second = service.publish_ready("alice", "b.mp4").await;
    let third = service.publish_ready("alice", "c.mp4").await;
    service.stored("alice", &third).await;
    service.stored("alice", &first).await;

    // Someone else's notification does not exist for them, and stays unread.
    let resp = service.post("mallory", &format!("/notifications/{first}/read")).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(problem(resp).await["status"], 404);
    let resp = service.post("alice", &format!("/notifications/{}/read", uuid::Uuid::now_v7())).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = service.post("alice", "/notifications/not-an-id/read").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    let resp = service.post("alice", &format!("/notifications/{first}/read")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["unread"], 2);
    // Marking it again changes nothing.
    let resp = service.post("alice", &format!("/notifications/{first}/read")).await;
    assert_eq!(resp.json::<Value>().await.unwrap()["unread"], 2);

    let unread = service.page("alice", "/notifications?unread=1").await;
    let ids: Vec<&str> =
        unread["notifications"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [third.as_str(), second.as_str()]);
    assert_eq!(unread["unread"], 2);
    let all = service.page("alice", "/notifications").await;
    assert_eq!(all["notifications"][2]["id"], first.as_str());
    assert_eq!(all["notifications"][2]["read"], true);

    let resp = service.post("alice", "/notifications/read").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["unread"], 0);
    let unread = service.page("alice", "/notifications?unread=true").await;
    assert_eq!(unread["notifications"], serde_json::json!([]));
    assert_eq!(service.page("alice", "/notifications").await["notifications"].as_array().unwrap().len(), 3);
}

async fn notifications_are_listed_newest_first_a_page_at_a_time(backend: Backend) {
    let service = TestNotifications::start(&backend).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(service.publish_ready("carol", &format!("clip {i}.mp4")).await);
    }
    service.publish_ready("dave", "other.mp4").await;
    eventually("all five to be stored", LONG, || async {
        (service.page("carol", "/notifications").await["unread"] == 5).then_some(())
    })
    .await;

    let mut seen = Vec::new();
    let mut path = "/notifications?limit=2".to_string();
    loop {
        let page = service.page("carol", &path).await;
        let items = page["notifications"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|n| n["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/notifications?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, each once, only carol's");
}

async fn bad_parameters_are_422_and_no_token_is_401(backend: Backend) {
    let service = TestNotifications::start(&backend).await;
    for query in ["unread=maybe", "unread=", "limit=0", "limit=101", "cursor=nonsense"] {
        let resp = service.get("alice", &format!("/notifications?{query}")).await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        problem(resp).await;
    }
    for (method, path) in [
        (reqwest::Method::GET, "/notifications"),
        (reqwest::Method::GET, "/notifications/stream"),
        (reqwest::Method::POST, "/notifications/read"),
        (reqwest::Method::GET, "/notifications/email"),
    ] {
        let resp = service.http.request(method.clone(), format!("{}{path}", service.url)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        problem(resp).await;
    }
    let forged = kit::test_support::TestIssuer::new().token("alice", "alice");
    let resp = service.http.get(format!("{}/notifications", service.url)).bearer_auth(forged).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

/// The same on RabbitMQ: replicas share the events, agree on the ids, and store a redelivered event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_amqp, ignore = "set AGORA_TEST_AMQP_URL to run it against RabbitMQ")]
async fn amqp_events_on_rabbitmq_become_notifications_once_across_two_replicas_and_redeliveries() {
    let Some((events, url, namespace)) = amqp_events() else { return };
    // Two replicas on one database and one broker.
    let shared = tempfile::tempdir().unwrap();
    let db_url = kit::db::sqlite_url_in(shared.path(), "notifications");
    let replica = |events: kit::events::EventsConfig| {
        let db_url = db_url.clone();
        move |c: &mut notifications::Config| {
            c.events = events;
            c.database = kit::db::DatabaseConfig::for_tests(&db_url);
        }
    };
    let first = TestNotifications::start_with(&Backend::Sqlite, replica(events.clone())).await;
    let second = TestNotifications::start_with(&Backend::Sqlite, replica(events)).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(first.publish_ready("erin", &format!("{i}.mp4")).await);
    }
    eventually("all six to be stored", LONG, || async {
        (second.page("erin", "/notifications").await["unread"] == 6).then_some(())
    })
    .await;
    // RabbitMQ delivers an envelope published twice twice (at least once): still one notification.
    let ready = contracts::media::Mp3Ready {
        video_id: "v-twice".into(),
        mp3_id: "m-twice".into(),
        owner: "erin".into(),
        file_name: "twice.mp4".into(),
        mp3_size: 1,
        duration_ms: 1,
        converted_at: chrono::Utc::now(),
    };
    let envelope = kit::events::Envelope::new("v-twice", &ready).unwrap();
    first.bus.publish_envelope(&envelope).await.unwrap();
    first.bus.publish_envelope(&envelope).await.unwrap();
    ids.push(envelope.event_id.to_string());
    eventually("both copies to be handled", LONG, || async {
        let lag = first.bus.lag(notifications::subscriber::SUBSCRIPTION).await.ok()?;
        (lag == 0 && first.page("erin", "/notifications").await["unread"] == 7).then_some(())
    })
    .await;
    let listed = first.page("erin", "/notifications").await;
    let mut stored: Vec<String> =
        listed["notifications"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap().to_string()).collect();
    stored.sort();
    ids.sort();
    assert_eq!(stored, ids);
    drop((first, second));
    kit::test_support::delete_amqp_namespace(&url, &namespace, &[notifications::subscriber::SUBSCRIPTION]).await;
}
