//! Uploads, conversions, downloads, failures and ownership, as a user sees them over HTTP.

use std::time::Duration;

use contracts::media::{ConversionFailed, Mp3Ready};
use kit::events::{EventBus, Heard};
use kit::on_every_backend;
use kit::queue::{Job, JobState, Queue};
use kit::test_support::{eventually, Backend};
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{probe_mp3, temp_files, test_video, TestMedia, LONG};

on_every_backend!(ffmpeg:
    a_video_converts_to_an_mp3_its_owner_alone_can_download,
    a_video_without_sound_and_a_file_that_is_not_a_video_fail_once_with_their_reason,
    uploads_that_are_not_videos_or_too_large_are_refused_and_leave_no_temp_file,
    an_upload_form_has_one_part_named_file_and_anything_else_is_refused,
    the_same_bytes_uploaded_twice_share_a_blob_until_both_are_deleted,
    deleting_a_video_while_it_converts_cancels_its_job,
    a_converter_stopped_gracefully_hands_its_job_back_to_another,
    videos_are_listed_newest_first_a_page_at_a_time_each_user_their_own,
    fifty_uploads_by_five_users_at_once_all_convert_and_each_user_sees_only_their_own,
    uploads_are_accepted_once_a_converter_that_can_convert_has_reported,
);

on_every_backend!(uploads_get_503_saying_why_while_no_converter_can_convert,);

async fn problem(resp: reqwest::Response) -> Value {
    assert_eq!(resp.headers()["content-type"], "application/problem+json", "{resp:?}");
    resp.json().await.unwrap()
}

async fn a_video_converts_to_an_mp3_its_owner_alone_can_download(backend: Backend) {
    let media = TestMedia::start(&backend).await;
    let bus = EventBus::connect(&media.events(), contracts::TOPICS).await.unwrap();
    let mut heard = bus.listen("media.#").await.unwrap();
    let video = test_video(media.data.path(), 3, true);
    let id = media.upload_ok("alice", "holiday clip.mp4", video.clone()).await;

    let done = media.settled("alice", &id).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["progress"], 100);
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["file_name"], "holiday clip.mp4");
    assert_eq!(done["video_size"], video.len());
    let duration = done["duration_ms"].as_u64().unwrap();
    assert!((2800..=3300).contains(&duration), "{done}");
    let fid = done["mp3_id"].as_str().unwrap().to_string();

    let event = match tokio::time::timeout(LONG, heard.next()).await {
        Ok(Some(Heard::Event(envelope))) => envelope,
        other => panic!("no event: {other:?}"),
    };
    let ready: Mp3Ready = event.decode().unwrap();
    assert_eq!(
        (ready.video_id.as_str(), ready.mp3_id.as_str(), ready.owner.as_str()),
        (id.as_str(), fid.as_str(), "alice")
    );

    let resp = media.get("alice", &format!("/download?fid={fid}")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "audio/mpeg");
    assert_eq!(resp.headers()["accept-ranges"], "bytes");
    let disposition = resp.headers()["content-disposition"].to_str().unwrap().to_string();
    assert!(disposition.contains("filename=\"holiday clip.mp3\""), "{disposition}");
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    let mp3 = resp.bytes().await.unwrap();
    assert_eq!(Some(mp3.len() as u64), done["mp3_size"].as_u64());
    let (codec, seconds) = probe_mp3(&mp3);
    assert_eq!(codec, "mp3");
    assert!((seconds - 3.0).abs() < 0.3, "the mp3 lasts {seconds} s");

    let part = media
        .http
        .get(format!("{}/download?fid={fid}", media.url))
        .bearer_auth(media.token("alice"))
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.headers()["content-range"], format!("bytes 10-19/{}", mp3.len()).as_str());
    assert_eq!(part.bytes().await.unwrap(), mp3.slice(10..20));
    let beyond = media
        .http
        .get(format!("{}/download?fid={fid}", media.url))
        .bearer_auth(media.token("alice"))
        .header("range", format!("bytes={}-", mp3.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let cached = media
        .http
        .get(format!("{}/download?fid={fid}", media.url))
        .bearer_auth(media.token("alice"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);

    // Someone else's video and mp3 do not exist for them; nobody's without a token.
    assert_eq!(media.get("mallory", &format!("/download?fid={fid}")).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(media.get("mallory", &format!("/videos/{id}")).await.status(), StatusCode::NOT_FOUND);
    let listed: Value = media.get("mallory", "/videos").await.json().await.unwrap();
    assert_eq!(listed["videos"], serde_json::json!([]));
    let anonymous = media.http.get(format!("{}/download?fid={fid}", media.url)).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let resp = media.http.delete(format!("{}/videos/{id}", media.url)).bearer_auth(media.token("mallory")).send();
    assert_eq!(resp.await.unwrap().status(), StatusCode::NOT_FOUND);

    let resp = media.http.delete(format!("{}/videos/{id}", media.url)).bearer_auth(media.token("alice")).send();
    assert_eq!(resp.await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(media.get("alice", &format!("/download?fid={fid}")).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(media.get("alice", &format!("/videos/{id}")).await.status(), StatusCode::NOT_FOUND);
    assert!(temp_files(media.data.path()).is_empty(), "{:?}", temp_files(media.data.path()));
}

async fn a_video_without_sound_and_a_file_that_is_not_a_video_fail_once_with_their_reason(backend: Backend) {
    let media = TestMedia::start(&backend).await;
    let bus = EventBus::connect(&media.events(), contracts::TOPICS).await.unwrap();
    let mut heard = bus.listen("media.conversion.failed").await.unwrap();
    let silent = media.upload_ok("bob", "silent.mp4", test_video(media.data.path(), 2, false)).await;
    // The right magic bytes, then nothing ffprobe can read.
    let mut fake = vec![0, 0, 0, 0x18];
    fake.extend_from_slice(b"ftypisom");
    fake.extend(std::iter::repeat_n(b'x', 4000));
    let bogus = media.upload_ok("bob", "bogus.mp4", fake).await;

    let silent = media.settled("bob", &silent).await;
    assert_eq!((silent["status"].as_str(), silent["attempts"].as_u64()), (Some("failed"), Some(1)), "{silent}");
    assert!(silent["error"].as_str().unwrap().contains("no audio track"), "{silent}");
    assert_eq!(silent["mp3_id"], Value::Null);
    let bogus = media.settled("bob", &bogus).await;
    assert_eq!((bogus["status"].as_str(), bogus["attempts"].as_u64()), (Some("failed"), Some(1)), "{bogus}");
    assert!(bogus["error"].as_str().unwrap().contains("not a video"), "{bogus}");

    let mut reasons = Vec::new();
    for _ in 0..2 {
        match tokio::time::timeout(LONG, heard.next()).await {
            Ok(Some(Heard::Event(envelope))) => {
                let failed: ConversionFailed = envelope.decode().unwrap();
                assert_eq!(failed.owner, "bob");
                reasons.push(failed.reason);
            }
            other => panic!("no event: {other:?}"),
        }
    }
    reasons.sort();
    assert!(reasons[0].contains("no audio track") || reasons[1].contains("no audio track"), "{reasons:?}");
    // Never retried: still one attempt each a while later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let queue = Queue::connect(None, media.data.path()).await.unwrap();
    assert_eq!(queue.depth(media::converter::ConvertJob::QUEUE).await.unwrap(), 0);
}

async fn uploads_that_are_not_videos_or_too_large_are_refused_and_leave_no_temp_file(backend: Backend) {
    let media = TestMedia::start_with(&backend, |config| config.max_upload_bytes = 100_000).await;
    let text = media.upload_when_ready("carol", "notes.mp4", b"these are my notes, not a video".repeat(20)).await;
    assert_eq!(text.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(problem(text).await["detail"].as_str().unwrap().contains("not a video container"));

    let mut big = vec![0, 0, 0, 0x18];
    big.extend_from_slice(b"ftypisom");
    big.resize(150_000, 7);
    let too_large = media.upload("carol", "big.mp4", big).await;
    assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(problem(too_large).await["status"], 413);
    assert!(temp_files(media.data.path()).is_empty(), "{:?}", temp_files(media.data.path()));
    let listed: Value = media.get("carol", "/videos").await.json().await.unwrap();
    assert_eq!(listed["videos"], serde_json::json!([]), "nothing is kept");
    assert_eq!(media.store().await.blob_counts().await.unwrap(), (0, 0));
}

async fn an_upload_form_has_one_part_named_file_and_anything_else_is_refused(backend: Backend) {
    use reqwest::multipart::{Form, Part};
    let media = TestMedia::start(&backend).await;
    let video = test_video(media.data.path(), 1, true);
    media.upload_ok("kate", "first.mp4", video.clone()).await;

    let with_note = Form::new().part("file", Part::bytes(video.clone()).file_name("a.mp4")).text("note", "hi");
    let resp = media.upload_form("kate", with_note).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem(resp).await["detail"].as_str().unwrap().contains("unexpected part \"note\""));

    let note_first = Form::new().text("note", "hi").part("file", Part::bytes(video.clone()).file_name("a.mp4"));
    assert_eq!(media.upload_form("kate", note_first).await.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let two_files = Form::new()
        .part("file", Part::bytes(video.clone()).file_name("a.mp4"))
        .part("file", Part::bytes(video.clone()).file_name("b.mp4"));
    let resp = media.upload_form("kate", two_files).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem(resp).await["detail"].as_str().unwrap().contains("one file per upload"));

    let other_name = Form::new().part("video", Part::bytes(video.clone()).file_name("a.mp4"));
    assert_eq!(media.upload_form("kate", other_name).await.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // A part header with a control character in it is no HTTP header: the body is malformed.
    let mut raw = b"--xyz\r\nContent-Disposition: form-data; name=\"a\x7fb\"\r\n\r\nhi\r\n".to_vec();
    raw.extend_from_slice(b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp4\"\r\n\r\n");
    raw.extend_from_slice(&video);
    raw.extend_from_slice(b"\r\n--xyz--\r\n");
    let resp = media.upload_raw("kate", "xyz", raw).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(problem(resp).await["detail"].as_str().unwrap().contains("malformed"));

    // The one part, `file`, without a file name: the video is named `video`.
    let unnamed = media.upload_form("kate", Form::new().part("file", Part::bytes(video))).await;
    assert_eq!(unnamed.status(), StatusCode::ACCEPTED);
    let id = unnamed.json::<Value>().await.unwrap()["video_id"].as_str().unwrap().to_string();
    let shown: Value = media.get("kate", &format!("/videos/{id}")).await.json().await.unwrap();
    assert_eq!(shown["file_name"], "video");

    let listed: Value = media.get("kate", "/videos").await.json().await.unwrap();
    assert_eq!(listed["videos"].as_array().unwrap().len(), 2, "only the two good uploads are kept: {listed}");
    // A temp file goes with the task that wrote it, which may end just after the answer.
    eventually("no temp file is left", Duration::from_secs(10), || async {
        temp_files(media.data.path()).is_empty().then_some(())
    })
    .await;
}

async fn the_same_bytes_uploaded_twice_share_a_blob_until_both_are_deleted(backend: Backend) {
    let media = TestMedia::start(&backend).await;
    let video = test_video(media.data.path(), 2, true);
    let first = media.upload_ok("dave", "a.mp4", video.clone()).await;
    let second = media.upload_ok("erin", "b.mp4", video).await;
    let (first_v, second_v) = (media.settled("dave", &first).await, media.settled("erin", &second).await);
    assert_eq!((first_v["status"].as_str(), second_v["status"].as_str()), (Some("done"), Some("done")));

    let store = media.store().await;
    // One video blob and one mp3 blob (the same sound twice), each referenced twice.
    assert_eq!(store.blob_counts().await.unwrap(), (2, 4));

    let resp = media.http.delete(format!("{}/videos/{first}", media.url)).bearer_auth(media.token("dave")).send();
    assert_eq!(resp.await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(store.blob_counts().await.unwrap(), (2, 2));
    let fid = second_v["mp3_id"].as_str().unwrap();
    let resp = media.get("erin", &format!("/download?fid={fid}")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(probe_mp3(&resp.bytes().await.unwrap()).0, "mp3");

    let resp = media.http.delete(format!("{}/videos/{second}", media.url)).bearer_auth(media.token("erin")).send();
    assert_eq!(resp.await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(store.blob_counts().await.unwrap(), (0, 0));
    if let media::blobs::BlobPlace::Files(dir) = &media.config.blobs {
        let left: Vec<_> = walk(dir);
        assert!(left.is_empty(), "blob files left: {left:?}");
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(|e| e.ok())
        .flat_map(|e| if e.path().is_dir() { walk(&e.path()) } else { vec![e.path()] })
        .collect()
}

async fn deleting_a_video_while_it_converts_cancels_its_job(backend: Backend) {
    let media = TestMedia::start(&backend).await;
    let id = media.upload_ok("frank", "long.mp4", test_video(media.data.path(), 1200, true)).await;
    let store = media.store().await;
    eventually("the conversion to start", LONG, || async {
        (media.video("frank", &id).await["status"] == "converting").then_some(())
    })
    .await;
    let job = store.get_any(&id).await.unwrap().unwrap().job_id.unwrap().parse().unwrap();
    let resp = media.http.delete(format!("{}/videos/{id}", media.url)).bearer_auth(media.token("frank")).send();
    assert_eq!(resp.await.unwrap().status(), StatusCode::NO_CONTENT);

    let queue = Queue::connect(None, media.data.path()).await.unwrap();
    let cancelled = queue.status(job).await.unwrap().expect("the job");
    assert_eq!((cancelled.state, cancelled.cancelled), (JobState::Failed, true));
    // The converter learns of it, kills ffmpeg and keeps nothing: no mp3, no temp file.
    eventually("the converter to drop its conversion", LONG, || async {
        (temp_files(media.data.path()).is_empty() && store.blob_counts().await.unwrap() == (0, 0)).then_some(())
    })
    .await;
    assert_eq!(media.get("frank", &format!("/videos/{id}")).await.status(), StatusCode::NOT_FOUND);
}

async fn a_converter_stopped_gracefully_hands_its_job_back_to_another(backend: Backend) {
    let media = TestMedia::start(&backend).await;
    let id = media.upload_ok("gina", "stop.mp4", test_video(media.data.path(), 1200, true)).await;
    eventually("the conversion to start", LONG, || async {
        (media.video("gina", &id).await["status"] == "converting").then_some(())
    })
    .await;
    let mut media = media;
    let first = media.converters.remove(0);
    first.stop().await;
    let handed_back = media.video("gina", &id).await;
    assert_eq!(handed_back["status"], "queued", "{handed_back}");
    let config = media.config.clone();
    let media = media.with_converter(config).await;
    let done = media.settled("gina", &id).await;
    assert_eq!((done["status"].as_str(), done["attempts"].as_u64()), (Some("done"), Some(2)), "{done}");
    let fid = done["mp3_id"].as_str().unwrap();
    let mp3 = media.get("gina", &format!("/download?fid={fid}")).await.bytes().await.unwrap();
    let (codec, seconds) = probe_mp3(&mp3);
    assert_eq!(codec, "mp3");
    assert!((seconds - 1200.0).abs() < 2.0, "{seconds}");
}

async fn videos_are_listed_newest_first_a_page_at_a_time_each_user_their_own(backend: Backend) {
    let media = TestMedia::start(&backend).await;
    let video = test_video(media.data.path(), 1, true);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(media.upload_ok("hank", &format!("v{i}.mp4"), video.clone()).await);
    }
    media.upload_ok("ivy", "mine.mp4", video).await;
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page: Value = media.get("hank", &format!("/videos?limit=2{cursor}")).await.json().await.unwrap();
        seen.extend(page["videos"].as_array().unwrap().iter().map(|v| v["video_id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids);
    let bad = media.get("hank", "/videos?limit=0").await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let ivy: Value = media.get("ivy", "/videos").await.json().await.unwrap();
    assert_eq!(ivy["videos"].as_array().unwrap().len(), 1);
    for id in &ids {
        media.settled("hank", id).await;
    }
}

async fn uploads_get_503_saying_why_while_no_converter_can_convert(backend: Backend) {
    let media = TestMedia::without_converter(&backend).await;
    let mp4 = {
        let mut head = vec![0, 0, 0, 0x18];
        head.extend_from_slice(b"ftypisom");
        head.resize(1000, 0);
        head
    };
    let resp = media.upload("judy", "v.mp4", mp4.clone()).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(problem(resp).await["detail"].as_str().unwrap().contains("no converter is running"));
    // Anyone may ask why, as the web pages do.
    let resp = media.http.get(format!("{}/conversion", media.url)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let conversion: Value = resp.json().await.unwrap();
    assert_eq!(conversion["available"], false, "{conversion}");
    assert!(conversion["reason"].as_str().unwrap().contains("no converter is running"), "{conversion}");
    assert_eq!(conversion["install"], "apt-get install -y --no-install-recommends ffmpeg");

    let mut broken = media.config.clone();
    broken.tools =
        media::ffmpeg::Tools { ffmpeg: "/nonexistent/ffmpeg".into(), ffprobe: "/nonexistent/ffprobe".into() };
    let media = media.with_converter(broken).await;
    let detail = eventually("the converter's report", LONG, || async {
        let resp = media.upload("judy", "v.mp4", mp4.clone()).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let detail = problem(resp).await["detail"].as_str().unwrap().to_string();
        detail.contains("not installed").then_some(detail)
    })
    .await;
    assert!(detail.contains("apt-get install -y --no-install-recommends ffmpeg"), "{detail}");
    let conversion: Value = media.get("judy", "/conversion").await.json().await.unwrap();
    assert_eq!((&conversion["available"], &conversion["reason"]), (&Value::Bool(false), &Value::from(detail)));
    let listed: Value = media.get("judy", "/videos").await.json().await.unwrap();
    assert_eq!(listed["videos"], serde_json::json!([]));
}

async fn uploads_are_accepted_once_a_converter_that_can_convert_has_reported(backend: Backend) {
    let media = TestMedia::without_converter(&backend).await;
    let video = test_video(media.data.path(), 1, true);
    let resp = media.upload("kate", "v.mp4", video.clone()).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);

    let config = media.config.clone();
    let media = media.with_converter(config).await;
    eventually("the converter's report", LONG, || async {
        let conversion: Value = media.get("kate", "/conversion").await.json().await.unwrap();
        (conversion["available"] == true && conversion["reason"].is_null()).then_some(())
    })
    .await;
    let resp = media.upload("kate", "v.mp4", video).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "{:?}", resp.text().await);
}

async fn fifty_uploads_by_five_users_at_once_all_convert_and_each_user_sees_only_their_own(backend: Backend) {
    let media = TestMedia::start_with(&backend, |config| config.concurrency = 2).await;
    let video = test_video(media.data.path(), 1, true);
    let users: Vec<String> = (0..5).map(|i| format!("user{i}")).collect();
    let uploads = users.iter().flat_map(|user| (0..10).map(move |n| (user.clone(), n))).map(|(user, n)| {
        let (media, video) = (&media, video.clone());
        async move {
            let id = media.upload_ok(&user, &format!("{user}-{n}.mp4"), video).await;
            (user, id)
        }
    });
    let uploaded = futures::future::join_all(uploads).await;
    assert_eq!(uploaded.len(), 50);
    for (user, id) in &uploaded {
        let video = media.settled(user, id).await;
        assert_eq!(video["status"], "done", "{video}");
    }
    for user in &users {
        let page: Value = media.get(user, "/videos?limit=100").await.json().await.unwrap();
        let mut listed: Vec<String> =
            page["videos"].as_array().unwrap().iter().map(|v| v["video_id"].as_str().unwrap().to_string()).collect();
        let mut own: Vec<String> = uploaded.iter().filter(|(u, _)| u == user).map(|(_, id)| id.clone()).collect();
        listed.sort();
        own.sort();
        assert_eq!(listed, own, "{user} sees exactly their own videos");
    }
}
