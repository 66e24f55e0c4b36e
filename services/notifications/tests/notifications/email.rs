//! E-mail, when `SMTP_URL` is set: each notification goes to the address its user gave, sent
//! from the durable subscription; a refused send is retried and never loses the notification.

use kit::on_every_backend;
use kit::test_support::{eventually, Backend};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::smtp::TestSmtp;
use crate::support::{TestNotifications, LONG};

on_every_backend!(
    a_notification_is_emailed_to_the_address_its_user_gave,
    an_address_is_checked_kept_per_user_and_removed,
);

async fn with_smtp(backend: &Backend, smtp: &TestSmtp) -> TestNotifications {
    let url = smtp.url.clone();
    TestNotifications::start_with(backend, move |config| {
        config.mail = Some(notifications::mail::MailConfig {
            url: kit::db::SecretUrl::new(url),
            from: notifications::DEFAULT_FROM.into(),
            public_url: "http://agora.test".into(),
        })
    })
    .await
}

async fn put_email(service: &TestNotifications, user: &str, body: Value) -> reqwest::Response {
    let url = format!("{}/notifications/email", service.url);
    service.http.put(url).bearer_auth(service.token(user)).json(&body).send().await.unwrap()
}

async fn a_notification_is_emailed_to_the_address_its_user_gave(backend: Backend) {
    let smtp = TestSmtp::start().await;
    let service = with_smtp(&backend, &smtp).await;
    let resp = put_email(&service, "alice", json!({"email": "alice@example.com"})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"email": "alice@example.com", "delivery": true}));

    // The server refuses the first try: the bus retries, and the notification is kept meanwhile.
    smtp.refuse_next(1);
    let id = service.publish_ready("alice", "song.mp4").await;
    // Bob gave no address: his notification is stored, and mailed to nobody.
    let bobs = service.publish_ready("bob", "other.mp4").await;
    service.stored("alice", &id).await;
    service.stored("bob", &bobs).await;

    let mails = eventually("the e-mail to arrive", LONG, || async {
        let mails = smtp.mails();
        (!mails.is_empty()).then_some(mails)
    })
    .await;
    let mail = &mails[0];
    assert_eq!(mail.to.len(), 1);
    assert!(mail.to[0].contains("alice@example.com"), "{:?}", mail.to);
    assert!(mail.data.contains("Subject: Your mp3 is ready: song.mp3"), "{}", mail.data);
    assert!(mail.data.contains("To: alice@example.com"), "{}", mail.data);
    assert!(mail.data.contains("song.mp3 is ready"), "{}", mail.data);
    assert!(mail.data.contains("http://agora.test/download?fid="), "{}", mail.data);

    // One notification, one e-mail, whatever the retries.
    let page = service.page("alice", "/notifications").await;
    assert_eq!(page["notifications"].as_array().unwrap().len(), 1);
    let second = service.publish_failed("alice", "x.mp4", "the file has no audio track").await;
    service.stored("alice", &second).await;
    let mails = eventually("the second e-mail", LONG, || async {
        let mails = smtp.mails();
        (mails.len() >= 2).then_some(mails)
    })
    .await;
    assert_eq!(mails.len(), 2, "{mails:?}");
    assert!(mails[1].data.contains("Subject: x.mp4 could not be converted"), "{}", mails[1].data);
}

async fn an_address_is_checked_kept_per_user_and_removed(backend: Backend) {
    let service = TestNotifications::start(&backend).await;
    let email = service.page("alice", "/notifications/email").await;
    assert_eq!(email, json!({"email": null, "delivery": false}));

    for bad in [json!({"email": "not an address"}), json!({"email": "alice@"}), json!({"email": ""})] {
        let resp = put_email(&service, "alice", bad.clone()).await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
    }
    let resp = put_email(&service, "alice", json!({"mail": "alice@example.com"})).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let resp = put_email(&service, "alice", json!({"email": " alice@example.com "})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(service.page("alice", "/notifications/email").await["email"], "alice@example.com");
    assert_eq!(service.page("bob", "/notifications/email").await["email"], Value::Null);

    let url = format!("{}/notifications/email", service.url);
    let resp = service.http.delete(&url).bearer_auth(service.token("alice")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(service.page("alice", "/notifications/email").await["email"], Value::Null);
    let resp = service.http.delete(&url).bearer_auth(service.token("alice")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
}
