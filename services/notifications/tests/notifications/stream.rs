//! `GET /notifications/stream`: a user's new notifications as Server-Sent Events, live, and
//! the stored ones after `Last-Event-ID` first.

use kit::on_every_backend;
use kit::test_support::Backend;

use crate::support::TestNotifications;

on_every_backend!(
    a_stream_gets_its_users_new_notifications_and_no_one_elses,
    a_stream_opened_with_last_event_id_first_replays_what_came_after_it,
);

async fn a_stream_gets_its_users_new_notifications_and_no_one_elses(backend: Backend) {
    let service = TestNotifications::start(&backend).await;
    let mut alices = service.stream("alice", None).await;
    let mut bobs = service.stream("bob", None).await;

    // Bob's comes first: had it reached Alice's stream, it would be the first she read.
    let for_bob = service.publish_failed("bob", "b.mp4", "the file is not a video").await;
    let for_alice = service.publish_ready("alice", "a.mp4").await;

    let event = alices.next().await;
    assert_eq!(event.id, for_alice);
    assert_eq!(event.data["id"], for_alice.as_str());
    assert_eq!(event.data["text"], "a.mp3 is ready");
    assert_eq!(event.data["read"], false);
    let event = bobs.next().await;
    assert_eq!(event.id, for_bob);
    assert_eq!(event.data["text"], "b.mp4 could not be converted: the file is not a video");

    // What the stream said is what is stored, under the same id.
    let stored = service.stored("alice", &for_alice).await;
    assert_eq!(stored["text"], "a.mp3 is ready");
}

async fn a_stream_opened_with_last_event_id_first_replays_what_came_after_it(backend: Backend) {
    let service = TestNotifications::start(&backend).await;
    let first = service.publish_ready("carol", "1.mp4").await;
    let second = service.publish_ready("carol", "2.mp4").await;
    let third = service.publish_ready("carol", "3.mp4").await;
    service.publish_ready("dave", "theirs.mp4").await;
    service.stored("carol", &third).await;
    service.stored("carol", &second).await;

    let mut stream = service.stream("carol", Some(&first)).await;
    assert_eq!(stream.next().await.id, second);
    assert_eq!(stream.next().await.id, third);
    let fourth = service.publish_ready("carol", "4.mp4").await;
    let event = stream.next().await;
    assert_eq!(event.id, fourth, "after the replay, the live ones");
    assert_eq!(event.data["text"], "4.mp3 is ready");
}
