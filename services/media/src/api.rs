//! The media service's REST API (seed 001's names kept): `POST /upload` a video (multipart, one
//! file, streamed to the blob store) → 202 and a conversion job; `GET /videos`, `GET /videos/{id}`,
//! `DELETE /videos/{id}`; `GET /download?fid=<mp3 id>` the mp3 (ranges, ETag); `GET /conversion`
//! whether uploads are converted now. Every route but that one needs a signed-in user, and another
//! user's video or mp3 is 404, not 403: no existence oracle.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use kit::auth::{CurrentUser, Verifier};
use kit::openapi::PublicApi;
use kit::queue::{EnqueueOptions, Job, Queue};
use kit::Problem;
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;

use crate::blobs::{BlobError, TempWriter};
use crate::converter::{ConvertJob, REPORT_EVERY};
use crate::domain::{self, ByteRange, VideoStatus, SNIFF_BYTES};
use crate::ffmpeg::INSTALL_HINT;
use crate::store::{Capability, Store, StoreError, Video};

/// Room for a multipart body's boundaries and part headers beyond the file itself.
const MULTIPART_OVERHEAD: u64 = 64 * 1024;

/// What the handlers share.
pub struct AppState {
    /// Videos and blobs.
    pub store: Store,
    /// Conversion jobs.
    pub queue: Queue,
    /// Checks tokens.
    pub verifier: Arc<Verifier>,
    /// The largest upload, in bytes.
    pub max_upload_bytes: u64,
    /// Attempts per conversion.
    pub max_attempts: u32,
}

/// The media service's errors, each a problem+json response.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No such video or mp3 (or someone else's).
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// A field breaks a rule.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
    /// The upload is larger than allowed.
    #[error("the upload exceeds the {0}-byte limit")]
    TooLarge(u64),
    /// The upload is not a video container.
    #[error("{0}")]
    UnsupportedType(String),
    /// Conversion is unavailable (no converter can convert), or the queue is down.
    #[error("{0}")]
    Unavailable(String),
    /// The range starts past the end.
    #[error("range not satisfiable")]
    RangeNotSatisfiable(u64),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Receiving the upload's bytes failed on our side.
    #[error(transparent)]
    Blob(#[from] BlobError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match &self {
            ApiError::NotFound(what) => Problem::not_found(what.clone()),
            ApiError::BadRequest(why) => Problem::bad_request(why.clone()),
            ApiError::Invalid { field, reason } => Problem::invalid_field(field, reason.clone()),
            ApiError::TooLarge(_) => Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", self.to_string())
                .titled("Payload Too Large"),
            ApiError::UnsupportedType(why) => {
                Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", why.clone())
            }
            ApiError::Unavailable(why) => Problem::unavailable(why.clone()).header(header::RETRY_AFTER, "5"),
            ApiError::RangeNotSatisfiable(size) => {
                Problem::new(StatusCode::RANGE_NOT_SATISFIABLE, "range-not-satisfiable", self.to_string())
                    .header(header::CONTENT_RANGE, &format!("bytes */{size}"))
            }
            ApiError::Store(err) => {
                tracing::error!(error = %err, "storage failure");
                Problem::internal()
            }
            ApiError::Blob(err) => {
                tracing::error!(error = %err, "blob storage failure");
                Problem::internal()
            }
        };
        problem.into_response()
    }
}

/// `POST /upload` answer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Uploaded {
    /// The new video's id.
    pub video_id: String,
    /// `queued`.
    pub status: VideoStatus,
}

/// A video as its owner sees it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VideoView {
    /// Its id.
    pub video_id: String,
    /// The uploaded file's name.
    pub file_name: String,
    /// Where its conversion is.
    pub status: VideoStatus,
    /// How far the conversion got, 0–100.
    pub progress: u8,
    /// Its length in milliseconds, once probed.
    pub duration_ms: Option<u64>,
    /// The upload's size in bytes.
    pub video_size: u64,
    /// The mp3's id (`GET /download?fid=`), once converted.
    pub mp3_id: Option<String>,
    /// The mp3's size in bytes.
    pub mp3_size: Option<u64>,
    /// Why it failed (or why the last attempt did, while queued for another).
    pub error: Option<String>,
    /// Conversion attempts started.
    pub attempts: u32,
    /// When it was uploaded.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<Video> for VideoView {
    fn from(v: Video) -> Self {
        Self {
            video_id: v.video_id,
            file_name: v.file_name,
            status: v.status,
            progress: v.progress,
            duration_ms: v.duration_ms,
            video_size: v.video_size,
            mp3_id: v.mp3_id,
            mp3_size: v.mp3_size,
            error: v.error,
            attempts: v.attempts,
            created_at: v.created_at,
            updated_at: v.updated_at,
        }
    }
}

/// A page of videos.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VideoPage {
    /// Newest first.
    pub videos: Vec<VideoView>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// `GET /videos` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PageQuery {
    /// Videos per page (1–100, default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// Where the previous page ended (its `next_cursor`).
    #[param(value_type = Option<String>, format = Uuid)]
    pub cursor: Option<String>,
}

/// `GET /download` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct DownloadQuery {
    /// The mp3's id (a video's `mp3_id`).
    pub fid: String,
}

/// `POST /upload` body (documentation only: it is read as a stream). Its one part is `file`;
/// any other part is refused (422), as is a second `file`.
#[derive(utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct UploadForm {
    /// The video: one file (its `filename` names it; a part without one is named `video`).
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// The name of the form's one part, the video.
const FILE_PART: &str = "file";

/// The 422 for a part of the upload form that is not its one `file`.
fn unexpected_part(name: Option<&str>) -> ApiError {
    let reason = match name {
        Some(FILE_PART) => "one file per upload".to_string(),
        Some(name) => {
            let shown: String = name.chars().take(64).collect();
            format!("unexpected part {shown:?}: an upload has one part, `{FILE_PART}`")
        }
        None => format!("a part without a name: an upload has one part, `{FILE_PART}`"),
    };
    ApiError::Invalid { field: FILE_PART.into(), reason }
}

/// `GET /conversion` answer: whether uploads are converted now.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({
    "available": false,
    "reason": "video conversion is unavailable: ffmpeg: it is not installed (apt-get install -y --no-install-recommends ffmpeg)",
    "install": "apt-get install -y --no-install-recommends ffmpeg"
}))]
pub struct Conversion {
    /// At least one converter reported recently that it can convert (ffmpeg with libmp3lame);
    /// while none has, uploads are refused with 503.
    pub available: bool,
    /// Why conversion is unavailable (absent while it is available).
    pub reason: Option<String>,
    /// The command that installs what converters need (Debian's ffmpeg).
    pub install: String,
}

/// Whether conversion is possible now, from the converters' latest reports.
async fn conversion_state(store: &Store) -> Result<Conversion, ApiError> {
    let reason = match store.capability(REPORT_EVERY * 3).await? {
        Capability::Available => None,
        Capability::Unavailable(why) => Some(format!("video conversion is unavailable: {why}")),
        Capability::NoConverter => Some(format!(
            "video conversion is unavailable: no converter is running (start `agora serve converter`; it needs \
             ffmpeg: {INSTALL_HINT})"
        )),
    };
    Ok(Conversion { available: reason.is_none(), reason, install: INSTALL_HINT.to_string() })
}

/// Whether conversion is possible now; the 503 saying why when it is not.
async fn check_capability(store: &Store) -> Result<(), ApiError> {
    match conversion_state(store).await?.reason {
        None => Ok(()),
        Some(why) => Err(ApiError::Unavailable(why)),
    }
}

/// Whether uploads are converted now, and if not why and how to install ffmpeg (what the
/// web pages show). Anyone may ask.
#[utoipa::path(get, path = "/conversion", responses((status = 200, body = Conversion)))]
async fn conversion(State(state): State<Arc<AppState>>) -> Result<Json<Conversion>, ApiError> {
    Ok(Json(conversion_state(&state.store).await?))
}

fn multipart_error(err: axum::extract::multipart::MultipartError, limit: u64) -> ApiError {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge(limit)
    } else {
        ApiError::BadRequest(format!("the multipart body is malformed: {}", err.body_text()))
    }
}

/// Uploads a video (multipart, one file): stored, then queued for conversion.
#[utoipa::path(post, path = "/upload", security(("bearer" = []), ("session" = [], "csrf" = [])),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 202, body = Uploaded, description = "Queued for conversion; `Location` is the video",
            headers(("Location" = String, description = "`/videos/{video_id}`"))),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "The multipart body is malformed (e.g. a part header with a control character)"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json",
            description = "The file is not a video container this service reads (told by its first bytes)"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "No `file` part, a second one, or a part other than `file`"),
        (status = 503, body = Problem, content_type = "application/problem+json",
            description = "Conversion is unavailable: no converter can convert (ffmpeg with libmp3lame is \
                missing; `detail` says why, with the install command \
                `apt-get install -y --no-install-recommends ffmpeg`; see `GET /conversion`), or the queue is down")))]
async fn upload(
    State(state): State<Arc<AppState>>,
    user: CurrentUser,
    headers: HeaderMap,
    mut multipart: Multipart,
) -> Result<Response, ApiError> {
    let limit = state.max_upload_bytes;
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit + MULTIPART_OVERHEAD) {
        return Err(ApiError::TooLarge(limit));
    }
    check_capability(&state.store).await?;
    let mut field = match multipart.next_field().await.map_err(|e| multipart_error(e, limit))? {
        Some(field) if field.name() == Some(FILE_PART) => field,
        Some(other) => return Err(unexpected_part(other.name())),
        None => return Err(ApiError::Invalid { field: FILE_PART.into(), reason: "no file in the upload".into() }),
    };
    let file_name = domain::upload_file_name(field.file_name());
    // Dropped (and its temp file deleted) on every early return.
    let mut writer = TempWriter::create(state.store.tmp_dir()).await?;
    let mut sniffed = false;
    while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, limit))? {
        if writer.size() + chunk.len() as u64 > limit {
            return Err(ApiError::TooLarge(limit));
        }
        writer.write(&chunk).await?;
        if !sniffed && writer.head().len() >= SNIFF_BYTES {
            check_container(writer.head())?;
            sniffed = true;
        }
    }
    if !sniffed {
        check_container(writer.head())?;
    }
    drop(field);
    if let Some(extra) = multipart.next_field().await.map_err(|e| multipart_error(e, limit))? {
        return Err(unexpected_part(extra.name()));
    }
    let received = writer.finish().await?;
    let size = received.size;
    let video = state.store.create_video(&user.id, &file_name, received).await?;
    let job = ConvertJob { video_id: video.video_id.clone() };
    let options = EnqueueOptions::attempts(state.max_attempts);
    match state.queue.enqueue(ConvertJob::QUEUE, &job, options).await {
        Ok(job_id) => state.store.set_job(&video.video_id, &job_id.to_string()).await?,
        Err(err) => {
            tracing::error!(error = %err, "cannot queue a conversion; the upload is dropped");
            state.store.delete(&user.id, &video.video_id).await?;
            return Err(ApiError::Unavailable("the conversion queue is unavailable; try again shortly".into()));
        }
    }
    tracing::info!(video = %video.video_id, user = %user.id, size, "video uploaded");
    metrics::counter!("media_uploads_total").increment(1);
    let location = format!("/videos/{}", video.video_id);
    let body = Uploaded { video_id: video.video_id, status: VideoStatus::Queued };
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(body)).into_response())
}

fn check_container(head: &[u8]) -> Result<(), ApiError> {
    match domain::sniff_container(head) {
        Some(_) => Ok(()),
        None => Err(ApiError::UnsupportedType(
            "the file is not a video container this service reads (MP4/MOV, Matroska/WebM, AVI, MPEG-TS/PS, FLV, \
             Ogg, ASF)"
                .into(),
        )),
    }
}

/// The caller's videos, newest first, a page at a time.
#[utoipa::path(get, path = "/videos", params(PageQuery), security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = VideoPage),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn list(
    State(state): State<Arc<AppState>>,
    user: CurrentUser,
    Query(q): Query<PageQuery>,
) -> Result<Json<VideoPage>, ApiError> {
    let limit = domain::page_size(q.limit).map_err(|reason| ApiError::Invalid { field: "limit".into(), reason })?;
    let cursor = match q.cursor.as_deref() {
        Some(c) => Some(
            uuid::Uuid::parse_str(c)
                .map_err(|_| ApiError::Invalid { field: "cursor".into(), reason: "not a cursor from this API".into() })?
                .to_string(),
        ),
        None => None,
    };
    let mut videos = state.store.list(&user.id, limit + 1, cursor.as_deref()).await?;
    let more = videos.len() > limit as usize;
    videos.truncate(limit as usize);
    let next_cursor = if more { videos.last().map(|v| v.video_id.clone()) } else { None };
    Ok(Json(VideoPage { videos: videos.into_iter().map(VideoView::from).collect(), next_cursor }))
}

fn not_found_video() -> ApiError {
    ApiError::NotFound("no such video".into())
}

/// One of the caller's videos: its status, progress, sizes and mp3.
#[utoipa::path(get, path = "/videos/{video_id}", security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = VideoView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn detail(
    State(state): State<Arc<AppState>>,
    user: CurrentUser,
    Path(video_id): Path<String>,
) -> Result<Json<VideoView>, ApiError> {
    let video = state.store.get(&user.id, &video_id).await?.ok_or_else(not_found_video)?;
    Ok(Json(video.into()))
}

/// Deletes one of the caller's videos and its mp3 (a conversion under way is cancelled).
#[utoipa::path(delete, path = "/videos/{video_id}", security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn delete(
    State(state): State<Arc<AppState>>,
    user: CurrentUser,
    Path(video_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let video = state.store.delete(&user.id, &video_id).await?.ok_or_else(not_found_video)?;
    if let Some(job) = video.job_id.as_deref().and_then(|j| j.parse().ok()) {
        if video.status.is_pending() {
            if let Err(err) = state.queue.cancel(job).await {
                // The converter finds the video gone when it finishes and keeps nothing.
                tracing::warn!(video = %video.video_id, error = %err, "could not cancel the conversion");
            }
        }
    }
    tracing::info!(video = %video.video_id, user = %user.id, "video deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Downloads one of the caller's mp3s: `Range` requests, `ETag` and `If-None-Match`.
#[utoipa::path(get, path = "/download", params(DownloadQuery), security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "The mp3", content_type = "audio/mpeg", body = Vec<u8>),
        (status = 206, description = "Part of the mp3", content_type = "audio/mpeg", body = Vec<u8>),
        (status = 304, description = "Not modified"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 416, body = Problem, content_type = "application/problem+json")))]
async fn download(
    State(state): State<Arc<AppState>>,
    user: CurrentUser,
    headers: HeaderMap,
    Query(q): Query<DownloadQuery>,
) -> Result<Response, ApiError> {
    let video =
        state.store.by_mp3(&user.id, q.fid.trim()).await?.ok_or_else(|| ApiError::NotFound("no such mp3".into()))?;
    let (Some(blob), Some(size)) = (video.mp3_blob.clone(), video.mp3_size) else {
        return Err(ApiError::NotFound("no such mp3".into()));
    };
    let etag = format!("\"{blob}\"");
    let if_none_match = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok());
    if if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*")) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    // A range only applies to the representation the client has (`If-Range` with our ETag).
    let if_range_ok = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()).is_none_or(|v| v.trim() == etag);
    let range = if if_range_ok { domain::parse_range(range, size) } else { ByteRange::Full };
    let (status, start, len) = match range {
        ByteRange::Full => (StatusCode::OK, 0, size),
        ByteRange::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        ByteRange::Unsatisfiable => return Err(ApiError::RangeNotSatisfiable(size)),
    };
    let stream = state.store.read_blob(&blob, start, len).await?;
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/mpeg"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&domain::content_disposition(&domain::mp3_file_name(&video.file_name))) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", start + len - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(response)
}

/// The media service's OpenAPI description.
#[derive(OpenApi)]
#[openapi(
    info(title = "Agora media", description = "Upload a video, get its soundtrack as an mp3."),
    paths(upload, list, detail, delete, download, conversion),
    components(schemas(Uploaded, VideoView, VideoPage, VideoStatus, UploadForm, Conversion, Problem)),
    modifiers(&PublicApi)
)]
pub struct ApiDoc;

/// The media service's routes; uploads get their own body limit.
pub fn router(state: Arc<AppState>) -> Router {
    let verifier = state.verifier.clone();
    let upload_limit = usize::try_from(state.max_upload_bytes + MULTIPART_OVERHEAD).unwrap_or(usize::MAX);
    Router::new()
        .route("/upload", post(upload).layer(DefaultBodyLimit::max(upload_limit)))
        .route("/videos", get(list))
        .route("/videos/{video_id}", get(detail).delete(delete))
        .route("/download", get(download))
        .route("/conversion", get(conversion))
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .layer(Extension(verifier))
        .with_state(state)
}
