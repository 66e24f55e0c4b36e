//! Issue 19 through the gateway: a user uploads a video, a converter (a child `agora serve
//! converter` process that the test can SIGKILL) turns its soundtrack into an mp3, and the user
//! downloads it; every media route needs a user; uploads have their own body limit. On SQLite
//! and on PostgreSQL (blobs in the database there). Tests that run ffmpeg are under `ffmpeg::`
//! and are ignored without it (a failure under `AGORA_REQUIRE_BACKENDS=1`).

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kit::test_support::{eventually, Backend};
use serde_json::Value;

use crate::support::expect_problem;
use crate::system::{Service, System, User};

const LONG: Duration = Duration::from_secs(120);

kit::on_every_backend!(ffmpeg: a_converter_killed_mid_conversion_hands_its_job_on_and_the_mp3_is_whole);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(no_ffmpeg, ignore = "install ffmpeg to run it")]
async fn ffmpeg_media_routes_need_a_user_and_uploads_have_their_own_limit_at_the_gateway() {
    let system = System::builder()
        .upload_limit(1024 * 1024)
        .with(Service::Auth)
        .with(Service::Media)
        .with(Service::Converter)
        .start()
        .await;
    for (method, path) in [("GET", "/videos"), ("GET", "/download?fid=x"), ("POST", "/upload"), ("DELETE", "/videos/x")]
    {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = system.http().request(method.clone(), system.url(path)).send().await.unwrap();
        expect_problem(resp, 401).await;
    }
    let user = system.sign_up("uma").await;
    // A small video goes through, once the converter has said it can convert.
    let id = upload(&system, &user, "small.mp4", test_video(system.data_dir(), 2)).await;
    let done = settled(&system, &user, &id).await;
    assert_eq!(done["status"], "done", "{done}");

    let gateway = system.gateway.url.trim_start_matches("http://").to_string();
    // Declared too large: refused before the body is read.
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {gateway}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: {}\r\n\r\n",
        user.token,
        2 * 1024 * 1024
    );
    assert_eq!(raw_status(&gateway, head.as_bytes(), &[]), 413);
    // Undeclared (chunked): refused when the count passes the limit, and nothing is kept.
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {gateway}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: multipart/form-data; boundary=xyz\r\nTransfer-Encoding: chunked\r\n\r\n",
        user.token
    );
    let mut body = b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.mp4\"\r\n\
        Content-Type: video/mp4\r\n\r\n\0\0\0\x18ftypisom"
        .to_vec();
    body.resize(3 * 1024 * 1024, 7);
    assert_eq!(raw_status(&gateway, head.as_bytes(), &body), 413);
    let tmp = system.data_dir().join("media").join("media").join("tmp");
    eventually("the partial upload to be deleted", LONG, || async {
        let left: Vec<_> = std::fs::read_dir(&tmp).map(|d| d.filter_map(|e| e.ok()).collect()).unwrap_or_default();
        left.is_empty().then_some(())
    })
    .await;
    let listed: Value = get(&system, &user, "/videos").await.json().await.unwrap();
    assert_eq!(listed["videos"].as_array().unwrap().len(), 1, "only the small video: {listed}");
}

/// Issue 19's notification service through the gateway: the converted video's "mp3 ready" reaches
/// its owner live on the stream (the one the media page listens to) and in the badge's count.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(no_ffmpeg, ignore = "install ffmpeg to run it")]
async fn ffmpeg_a_converted_videos_notification_reaches_its_owner_through_the_gateway() {
    let system = System::builder()
        .with(Service::Auth)
        .with(Service::Media)
        .with(Service::Converter)
        .with(Service::Notifications)
        .start()
        .await;
    for (method, path) in [("GET", "/notifications"), ("GET", "/notifications/stream"), ("POST", "/notifications/read")]
    {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = system.http().request(method.clone(), system.url(path)).send().await.unwrap();
        expect_problem(resp, 401).await;
    }
    let owner = system.sign_up("nell").await;
    let other = system.sign_up("otto").await;
    let mut stream =
        system.http().get(system.url("/notifications/stream")).bearer_auth(&owner.token).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");

    let id = upload(&system, &owner, "beach.mp4", test_video(system.data_dir(), 2)).await;
    let done = settled(&system, &owner, &id).await;
    assert_eq!(done["status"], "done", "{done}");
    let fid = done["mp3_id"].as_str().unwrap();

    let mut received = String::new();
    let event = tokio::time::timeout(LONG, async {
        loop {
            if let Some(end) = received.find("\n\n").filter(|_| received.contains("data:")) {
                return received[..end].to_string();
            }
            let chunk = stream.chunk().await.unwrap().expect("the stream ended");
            received.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("no notification on the stream");
    assert!(event.contains("beach.mp3 is ready"), "{event}");
    assert!(event.contains(&format!("/download?fid={fid}")), "{event}");

    let unread: Value = get(&system, &owner, "/notifications?unread=1").await.json().await.unwrap();
    assert_eq!(unread["unread"], 1, "{unread}");
    assert_eq!(unread["notifications"][0]["text"], "beach.mp3 is ready");
    let theirs: Value = get(&system, &other, "/notifications").await.json().await.unwrap();
    assert_eq!(theirs["unread"], 0, "{theirs}");
}

async fn a_converter_killed_mid_conversion_hands_its_job_on_and_the_mp3_is_whole(backend: Backend) {
    let mut system =
        System::builder().on(backend).with(Service::Auth).with(Service::Media).child(Service::Converter).start().await;
    let user = system.sign_up("kim").await;
    // Long enough to convert for several seconds.
    let id = upload(&system, &user, "long.mp4", test_video(system.data_dir(), 1200)).await;
    let converting = eventually("the conversion to get going", LONG, || async {
        let video: Value = get(&system, &user, &format!("/videos/{id}")).await.json().await.ok()?;
        let progress = video["progress"].as_u64().unwrap_or(0);
        (video["status"] == "converting" && progress > 0).then_some(video)
    })
    .await;
    system.kill(Service::Converter);
    assert!(converting["progress"].as_u64().unwrap() < 100, "{converting}");
    assert_eq!(converting["mp3_id"], Value::Null, "no mp3 before the conversion ends: {converting}");

    system.add(Service::Converter).await;
    let done = settled(&system, &user, &id).await;
    assert_eq!((done["status"].as_str(), done["attempts"].as_u64()), (Some("done"), Some(2)), "{done}");
    let fid = done["mp3_id"].as_str().unwrap();
    let resp = get(&system, &user, &format!("/download?fid={fid}")).await;
    assert_eq!(resp.status(), 200);
    let mp3 = resp.bytes().await.unwrap();
    let (codec, seconds) = probe(&mp3);
    assert_eq!(codec, "mp3");
    assert!((seconds - 1200.0).abs() < 2.0, "the mp3 lasts {seconds} s");
    let other = system.sign_up("lee").await;
    assert_eq!(get(&system, &other, &format!("/download?fid={fid}")).await.status(), 404);
}

async fn get(system: &System, user: &User, path: &str) -> reqwest::Response {
    system.http().get(system.url(path)).bearer_auth(&user.token).send().await.unwrap()
}

/// Uploads through the gateway (waiting while no converter has reported it can convert); the video id.
async fn upload(system: &System, user: &User, name: &str, bytes: Vec<u8>) -> String {
    let resp = eventually("a converter to accept uploads", LONG, || {
        let bytes = bytes.clone();
        async move {
            let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_string());
            let form = reqwest::multipart::Form::new().part("file", part);
            let resp =
                system.http().post(system.url("/upload")).bearer_auth(&user.token).multipart(form).send().await.ok()?;
            (resp.status() != 503).then_some(resp)
        }
    })
    .await;
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    body["video_id"].as_str().unwrap().to_string()
}

async fn settled(system: &System, user: &User, id: &str) -> Value {
    eventually("the video to settle", LONG, || async {
        let video: Value = get(system, user, &format!("/videos/{id}")).await.json().await.ok()?;
        matches!(video["status"].as_str(), Some("done" | "failed")).then_some(video)
    })
    .await
}

/// Sends a raw request (head, then `body` in chunked encoding if non-empty) and reads the status.
fn raw_status(addr: &str, head: &[u8], body: &[u8]) -> u16 {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream.write_all(head).unwrap();
    for chunk in body.chunks(64 * 1024) {
        // The gateway may answer and close before it has read everything: stop sending then.
        if stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).is_err()
            || stream.write_all(chunk).is_err()
            || stream.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    if !body.is_empty() {
        let _ = stream.write_all(b"0\r\n\r\n");
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {text:?}"))
}

/// A test video of `seconds` (tiny frames, one a second, mono MP2 sound): cheap to make.
fn test_video(dir: &Path, seconds: u32) -> Vec<u8> {
    let out = dir.join(format!("test-{seconds}.mp4"));
    let video = format!("testsrc=duration={seconds}:size=64x48:rate=1");
    let audio = format!("sine=frequency=440:duration={seconds}:sample_rate=22050");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", &video, "-f", "lavfi", "-i", &audio])
        .args(["-c:v", "mpeg4", "-c:a", "mp2", "-b:a", "32k", "-ac", "1", "-shortest"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "ffmpeg could not make a test video");
    std::fs::read(&out).unwrap()
}

/// An mp3's codec and duration, as ffprobe reads them.
fn probe(bytes: &[u8]) -> (String, f64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.mp3");
    std::fs::write(&path, bytes).unwrap();
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-print_format", "json", "-show_format", "-show_streams"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "ffprobe refused the mp3: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let codec = report["streams"][0]["codec_name"].as_str().unwrap_or_default().to_string();
    let duration = report["format"]["duration"].as_str().and_then(|d| d.parse().ok()).unwrap_or(0.0);
    (codec, duration)
}
