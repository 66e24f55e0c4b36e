//! A running media service (API and converter) for one test, its token issuer and test videos.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kit::events::EventsConfig;
use kit::test_support::{client, eventually, fresh_db, Backend, Running, TestDb, TestIssuer};
use media::testing::RunningConverter;
use reqwest::StatusCode;
use serde_json::Value;

/// Generous: a conversion in a debug build on a busy machine.
pub const LONG: Duration = Duration::from_secs(90);

/// The media API and (optionally) a converter on a fresh database.
pub struct TestMedia {
    pub url: String,
    pub http: reqwest::Client,
    pub issuer: TestIssuer,
    pub config: media::Config,
    pub data: tempfile::TempDir,
    _service: Running,
    pub converters: Vec<RunningConverter>,
    _db: TestDb,
}

/// A configuration for `backend`, with its own data directory.
pub async fn config_for(backend: &Backend) -> (media::Config, TestIssuer, tempfile::TempDir, TestDb) {
    let db = fresh_db(backend, "media").await;
    let data = tempfile::tempdir().unwrap();
    let issuer = TestIssuer::new();
    let config = media::Config::for_tests(&db.url, data.path(), issuer.key_source());
    (config, issuer, data, db)
}

impl TestMedia {
    /// The API with one converter that can convert.
    pub async fn start(backend: &Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// [`TestMedia::start`] with a configuration changed by `change`.
    pub async fn start_with(backend: &Backend, change: impl FnOnce(&mut media::Config)) -> Self {
        let media = Self::without_converter_with(backend, change).await;
        let config = media.config.clone();
        media.with_converter(config).await
    }

    /// The API alone.
    pub async fn without_converter(backend: &Backend) -> Self {
        Self::without_converter_with(backend, |_| {}).await
    }

    async fn without_converter_with(backend: &Backend, change: impl FnOnce(&mut media::Config)) -> Self {
        let (mut config, issuer, data, db) = config_for(backend).await;
        change(&mut config);
        let service = media::testing::spawn(config.clone()).await;
        TestMedia {
            url: service.url.clone(),
            http: client(),
            issuer,
            config,
            data,
            _service: service,
            converters: Vec::new(),
            _db: db,
        }
    }

    /// Adds a converter with `config`, once it has reported.
    pub async fn with_converter(mut self, config: media::Config) -> Self {
        self.converters.push(media::testing::spawn_converter(config));
        self
    }

    /// The store the service uses, opened beside it.
    pub async fn store(&self) -> media::store::Store {
        let url = self.config.database.url.expose().to_string();
        let db = kit::db::connect(&url, media::store::MIGRATIONS, Default::default()).await.unwrap();
        media::store::Store::new(db, self.config.blobs.clone(), self.data.path().join("media").join("tmp")).unwrap()
    }

    pub fn events(&self) -> EventsConfig {
        self.config.events.clone()
    }

    pub fn token(&self, user: &str) -> String {
        self.issuer.token(user, &format!("user {user}"))
    }

    /// Uploads `bytes` as `name` for `user`.
    pub async fn upload(&self, user: &str, name: &str, bytes: Vec<u8>) -> reqwest::Response {
        let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_string());
        self.upload_form(user, reqwest::multipart::Form::new().part("file", part)).await
    }

    /// Sends `form` to `POST /upload` for `user`.
    pub async fn upload_form(&self, user: &str, form: reqwest::multipart::Form) -> reqwest::Response {
        let url = format!("{}/upload", self.url);
        self.http.post(url).bearer_auth(self.token(user)).multipart(form).send().await.unwrap()
    }

    /// Sends `body`, a multipart body with the boundary `boundary` as written, to `POST /upload`.
    pub async fn upload_raw(&self, user: &str, boundary: &str, body: Vec<u8>) -> reqwest::Response {
        let url = format!("{}/upload", self.url);
        let content_type = format!("multipart/form-data; boundary={boundary}");
        let request = self.http.post(url).bearer_auth(self.token(user)).header("content-type", content_type);
        request.body(body).send().await.unwrap()
    }

    /// Uploads, waiting while no converter has reported yet (uploads are refused until one
    /// has, moments after it starts).
    pub async fn upload_when_ready(&self, user: &str, name: &str, bytes: Vec<u8>) -> reqwest::Response {
        let mut tries = 0;
        loop {
            let resp = self.upload(user, name, bytes.clone()).await;
            if resp.status() == StatusCode::SERVICE_UNAVAILABLE && tries < 200 {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            return resp;
        }
    }

    /// Uploads and expects 202; the video id.
    pub async fn upload_ok(&self, user: &str, name: &str, bytes: Vec<u8>) -> String {
        let resp = self.upload_when_ready(user, name, bytes).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "{:?}", resp.text().await);
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["status"], "queued");
        let id = body["video_id"].as_str().unwrap().to_string();
        assert_eq!(location, format!("/videos/{id}"));
        id
    }

    pub async fn get(&self, user: &str, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.url)).bearer_auth(self.token(user)).send().await.unwrap()
    }

    pub async fn video(&self, user: &str, id: &str) -> Value {
        let resp = self.get(user, &format!("/videos/{id}")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json().await.unwrap()
    }

    /// Waits until the video is `done` or `failed`.
    pub async fn settled(&self, user: &str, id: &str) -> Value {
        eventually("the video to settle", LONG, || async {
            let video = self.video(user, id).await;
            matches!(video["status"].as_str(), Some("done" | "failed")).then_some(video)
        })
        .await
    }
}

/// Runs ffmpeg with `args`, panicking with its output if it fails.
pub fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg").args(["-hide_banner", "-loglevel", "error", "-y"]).args(args).output().unwrap();
    assert!(out.status.success(), "ffmpeg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A test video (colour bars and a tone) of `seconds`, as MP4 bytes: small and cheap to make
/// (tiny frames, one a second, mono MP2 sound), so that a long one converts for a while.
pub fn test_video(dir: &Path, seconds: u32, with_audio: bool) -> Vec<u8> {
    let out = dir.join(format!("test-{seconds}-{with_audio}.mp4"));
    let video = format!("testsrc=duration={seconds}:size=64x48:rate=1");
    let audio = format!("sine=frequency=440:duration={seconds}:sample_rate=22050");
    let out_s = out.to_str().unwrap();
    let mut args = vec!["-f", "lavfi", "-i", &video];
    if with_audio {
        args.extend(["-f", "lavfi", "-i", &audio, "-c:a", "mp2", "-b:a", "32k", "-ac", "1", "-shortest"]);
    } else {
        args.push("-an");
    }
    args.extend(["-c:v", "mpeg4", out_s]);
    ffmpeg(&args);
    std::fs::read(&out).unwrap()
}

/// An mp3's codec and duration in seconds, as ffprobe reads them.
pub fn probe_mp3(bytes: &[u8]) -> (String, f64) {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("out.mp3");
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

/// Files left in the temp directory of uploads.
pub fn temp_files(data: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(data.join("media").join("tmp")) {
        Ok(dir) => dir.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    }
}
