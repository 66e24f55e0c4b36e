//! The classification API as a client sees it: 202 at once, a job that moves
//! to finished with the top 5, and clear 4xx for everything that cannot be
//! classified — checked before anything is enqueued. Runs on the embedded
//! queue, and on Redis when `AGORA_TEST_REDIS_URL` is set.

use std::time::Duration;

use classifier::jobs::ClassifyJob;
use classifier::Config;
use kit::queue::{EnqueueOptions, Job, Queue};
use kit::test_support::{eventually, redis_url, Running};

struct Classifier {
    url: String,
    queue: Queue,
    // Stops the service before its directory goes.
    _service: Running,
    _dir: tempfile::TempDir,
}

/// The web service and one in-process worker sharing a fresh queue.
async fn spawn_classifier(redis: Option<String>, adjust: impl FnOnce(&mut Config)) -> Classifier {
    let dir = tempfile::tempdir().unwrap();
    // A fresh key space per test on Redis.
    let queue_url = redis.map(|url| format!("{}/{}", url.trim_end_matches('/'), 1 + rand_db()));
    let mut config = Config::for_tests(dir.path(), queue_url.clone());
    adjust(&mut config);
    let service = classifier::testing::spawn(config).await;
    let queue = Queue::connect(queue_url.as_deref(), dir.path()).await.unwrap();
    Classifier { url: service.url.clone(), queue, _dir: dir, _service: service }
}

fn rand_db() -> u32 {
    // Redis has databases 0–15; tests share them but use unique job ids, and depth checks use their own queue.
    (uuid::Uuid::new_v4().as_u128() % 15) as u32
}

async fn finished(url: &str, location: &str) -> serde_json::Value {
    eventually("the job to finish", Duration::from_secs(60), || async {
        let body: serde_json::Value = reqwest::get(format!("{url}{location}")).await.ok()?.json().await.ok()?;
        matches!(body["task_status"].as_str(), Some("finished" | "failed")).then_some(body)
    })
    .await
}

async fn a_sample_is_classified_through_the_queue(redis: Option<String>) {
    let app = spawn_classifier(redis, |_| {}).await;
    let info: serde_json::Value = reqwest::get(format!("{}/info", app.url)).await.unwrap().json().await.unwrap();
    assert_eq!(info["models"], serde_json::json!(["efficientnet-lite0", "efficientnet-lite1"]));
    assert!(info["images"].as_array().unwrap().iter().any(|i| i == "cat"));

    let resp = reqwest::Client::new()
        .post(format!("{}/classifications", app.url))
        .json(&serde_json::json!({"model_id": "efficientnet-lite0", "image_id": "cat"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(location, format!("/classifications/{}", body["job_id"].as_str().unwrap()));
    let done = finished(&app.url, &location).await;
    assert_eq!(done["task_status"], "finished", "{done}");
    let top5 = done["data"].as_array().unwrap();
    assert_eq!(top5.len(), 5);
    assert!(top5[0][0].as_str().unwrap().contains("cat"), "{done}");
    assert!(top5[0][1].as_f64().unwrap() >= top5[1][1].as_f64().unwrap());
}

#[tokio::test]
async fn a_sample_is_classified_through_the_embedded_queue() {
    a_sample_is_classified_through_the_queue(None).await;
}

#[tokio::test]
#[cfg_attr(no_redis, ignore = "set AGORA_TEST_REDIS_URL to run it against Redis")]
async fn a_sample_is_classified_through_redis() {
    let Some(url) = redis_url() else { return };
    a_sample_is_classified_through_the_queue(Some(url)).await;
}

#[tokio::test]
async fn an_uploaded_image_is_classified() {
    let app = spawn_classifier(None, |_| {}).await;
    let form = reqwest::multipart::Form::new().text("model_id", "efficientnet-lite1").part(
        "file",
        reqwest::multipart::Part::bytes(include_bytes!("../../assets/coffee.jpg").to_vec()).file_name("coffee.jpg"),
    );
    let resp =
        reqwest::Client::new().post(format!("{}/classifications", app.url)).multipart(form).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let done = finished(&app.url, &location).await;
    assert_eq!(done["data"][0][0], "espresso", "{done}");
}

async fn problem(resp: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    resp.json().await.unwrap()
}

#[tokio::test]
async fn what_cannot_be_classified_is_refused_before_anything_is_enqueued() {
    let app = spawn_classifier(None, |c| c.limits.max_bytes = 50 * 1024).await;
    let c = reqwest::Client::new();
    let url = format!("{}/classifications", app.url);
    let body = problem(
        c.post(&url).json(&serde_json::json!({"model_id": "resnet-9000", "image_id": "cat"})).send().await.unwrap(),
        422,
    )
    .await;
    assert_eq!(body["field"], "model_id");
    let body = problem(
        c.post(&url)
            .json(&serde_json::json!({"model_id": "efficientnet-lite0", "image_id": "../../etc/passwd"}))
            .send()
            .await
            .unwrap(),
        422,
    )
    .await;
    assert_eq!(body["field"], "image_id");
    problem(c.post(&url).json(&serde_json::json!({"model_id": "efficientnet-lite0"})).send().await.unwrap(), 422).await;
    let upload = |name: &str, bytes: Vec<u8>| {
        reqwest::multipart::Form::new()
            .text("model_id", "efficientnet-lite0")
            .part("file", reqwest::multipart::Part::bytes(bytes).file_name(name.to_string()))
    };
    let body = problem(
        c.post(&url).multipart(upload("notes.txt", b"hello, not an image".to_vec())).send().await.unwrap(),
        422,
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("not an image"));
    let coffee = include_bytes!("../../assets/coffee.jpg").to_vec(); // 71 KB, over the 50 KB limit
    problem(c.post(&url).multipart(upload("coffee.jpg", coffee)).send().await.unwrap(), 413).await;
    let bmp = [b"BM".as_slice(), &[0u8; 64]].concat();
    problem(c.post(&url).multipart(upload("x.bmp", bmp)).send().await.unwrap(), 415).await;
    assert_eq!(app.queue.depth(ClassifyJob::QUEUE).await.unwrap(), 0, "nothing was enqueued");
}

#[tokio::test]
async fn a_sample_image_is_served_and_an_unknown_one_is_a_404_problem() {
    let app = spawn_classifier(None, |_| {}).await;
    let cat = reqwest::get(format!("{}/classifications/images/cat", app.url)).await.unwrap();
    assert_eq!(cat.status(), 200);
    assert_eq!(cat.headers()["content-type"], "image/jpeg");
    let body = problem(reqwest::get(format!("{}/classifications/images/dog", app.url)).await.unwrap(), 404).await;
    assert!(body["detail"].as_str().unwrap().contains("dog"));
}

#[tokio::test]
async fn the_document_lists_the_ids_that_are_accepted() {
    let app = spawn_classifier(None, |_| {}).await;
    let doc: serde_json::Value = reqwest::get(format!("{}/openapi.json", app.url)).await.unwrap().json().await.unwrap();
    let info: serde_json::Value = reqwest::get(format!("{}/info", app.url)).await.unwrap().json().await.unwrap();
    let request = &doc["components"]["schemas"]["ClassifyRequest"]["properties"];
    assert_eq!(request["model_id"]["enum"], info["models"]);
    assert_eq!(request["image_id"]["enum"], info["images"]);
}

#[tokio::test]
async fn an_unknown_job_is_a_404_problem() {
    let app = spawn_classifier(None, |_| {}).await;
    for id in ["01a20255-ece4-773d-8d79-ad5d8c3f675a", "not-a-job"] {
        let body = problem(reqwest::get(format!("{}/classifications/{id}", app.url)).await.unwrap(), 404).await;
        assert!(body["detail"].as_str().unwrap().contains(id));
    }
}

#[tokio::test]
async fn a_job_stored_as_plain_json_is_classified_and_one_that_is_no_classification_fails_at_once() {
    let app = spawn_classifier(None, |_| {}).await;
    // As the web server stored jobs before they were typed: the same JSON, keys in another order.
    let image = serde_json::json!({"image": {"id": "cat", "kind": "sample"}, "model_id": "efficientnet-lite0"});
    let stored = app.queue.enqueue("classifications", image, EnqueueOptions::attempts(3)).await.unwrap();
    let garbled = serde_json::json!({"model": "efficientnet-lite0", "image_id": "cat"});
    let garbled = app.queue.enqueue("classifications", garbled, EnqueueOptions::attempts(3)).await.unwrap();

    let done = finished(&app.url, &format!("/classifications/{stored}")).await;
    assert_eq!(done["task_status"], "finished", "{done}");
    assert!(done["data"][0][0].as_str().unwrap().contains("cat"), "{done}");
    let done = finished(&app.url, &format!("/classifications/{garbled}")).await;
    assert_eq!(done["task_status"], "failed", "{done}");
    assert!(done["error"].as_str().unwrap().contains("missing field `model_id`"), "{done}");
    let job = app.queue.status(garbled).await.unwrap().expect("the job");
    assert_eq!(job.attempts, 1, "a payload that cannot parse is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_redis, ignore = "set AGORA_TEST_REDIS_URL to run it against Redis")]
async fn while_redis_is_unreachable_classifications_are_503s_and_no_job_is_lost() {
    use kit::test_support::{Fault, FaultProxy};
    let Some(server) = redis_url() else { return };
    let proxy = FaultProxy::in_front_of(&server).await;
    let app = spawn_classifier(Some(proxy.url(&server)), |_| {}).await;
    let http = reqwest::Client::new();
    let classify = || {
        http.post(format!("{}/classifications", app.url))
            .json(&serde_json::json!({"model_id": "efficientnet-lite0", "image_id": "cat"}))
            .send()
    };
    let resp = classify().await.unwrap();
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_string();

    proxy.set(Fault::Refuse);
    for _ in 0..3 {
        let resp = classify().await.unwrap();
        assert!(resp.headers().contains_key("retry-after"), "{resp:?}");
        assert_eq!(problem(resp, 503).await["dependency"], "queue");
    }
    let ready: serde_json::Value = reqwest::get(format!("{}/readyz", app.url)).await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");

    proxy.set(Fault::Pass);
    let done = finished(&app.url, &location).await;
    assert_eq!(done["task_status"], "finished", "the job enqueued before the outage is done: {done}");
    let resp = classify().await.unwrap();
    assert_eq!(resp.status(), 202, "enqueueing works again");
}
