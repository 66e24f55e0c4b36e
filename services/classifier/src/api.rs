//! The classifier's HTTP API (SPEC §3.6, seed 002's field names): `/info`,
//! `POST /classifications` (JSON with a sample id, or a multipart upload)
//! answering 202 at once, and `GET /classifications/{job_id}`. The web server
//! only checks and enqueues; workers do the inference.

use std::sync::Arc;

use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use kit::openapi::PublicApi;
use kit::queue::{EnqueueOptions, Job, JobId, JobState, Queue};
use kit::Problem;
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;

use crate::images::{self, UploadError, UploadLimits};
use crate::jobs::{ClassifyJob, ImageSource};
use crate::model::Models;

/// What the handlers share.
pub struct AppState {
    /// The models (only their ids are needed here; inference runs in workers).
    pub models: Models,
    /// The job queue.
    pub queue: Queue,
    /// Upload limits.
    pub limits: UploadLimits,
    /// Attempts per job before it is marked failed.
    pub max_attempts: u32,
}

/// The classifier's errors, each a problem+json response.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field is missing or wrong.
    #[error("{field}: {detail}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The upload is not acceptable.
    #[error(transparent)]
    Upload(#[from] UploadError),
    /// No such job.
    #[error("no classification job {0:?}")]
    UnknownJob(String),
    /// No sample image with that id.
    #[error("no sample image {0:?}")]
    UnknownSample(String),
    /// The queue failed.
    #[error("the job queue is unavailable")]
    Queue(#[source] kit::queue::QueueError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match &self {
            ApiError::Invalid { field, detail } => Problem::invalid_field(field, detail.clone()),
            ApiError::Upload(UploadError::TooLarge { .. }) => {
                Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", self.to_string())
            }
            ApiError::Upload(UploadError::UnsupportedFormat(_)) => {
                Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", self.to_string())
            }
            ApiError::Upload(UploadError::UnknownSample(_)) => Problem::invalid_field("image_id", self.to_string()),
            ApiError::Upload(_) => Problem::invalid_field("file", self.to_string()),
            ApiError::UnknownJob(_) | ApiError::UnknownSample(_) => Problem::not_found(self.to_string()),
            ApiError::Queue(kit::queue::QueueError::Outage(unavailable)) => unavailable.problem(),
            ApiError::Queue(err) => {
                tracing::error!(error = %err, "queue failure");
                Problem::unavailable("the job queue is unavailable; try again shortly")
                    .header(axum::http::header::RETRY_AFTER, "1")
            }
        };
        problem.into_response()
    }
}

/// `GET /info` answer (seed 002's shape).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Info {
    /// Model ids for `model_id`.
    pub models: Vec<String>,
    /// Sample image ids for `image_id`.
    pub images: Vec<String>,
}

/// The models and sample images that can be used.
#[utoipa::path(get, path = "/info", responses((status = 200, body = Info)))]
async fn info(State(state): State<Arc<AppState>>) -> Json<Info> {
    Json(Info {
        models: state.models.list().map(|m| m.id.to_string()).collect(),
        images: images::SAMPLES.iter().map(|s| s.id.to_string()).collect(),
    })
}

/// `POST /classifications` JSON body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({ "model_id": "efficientnet-lite0", "image_id": "cat" }))]
pub struct ClassifyRequest {
    /// One of `/info`'s models.
    #[schema(min_length = 1)]
    pub model_id: String,
    /// One of `/info`'s images.
    #[schema(min_length = 1)]
    pub image_id: String,
}

/// `202` answer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Accepted {
    /// The job's id (the seed's "ticket").
    pub job_id: String,
}

/// `GET /classifications/{job_id}` answer (seed 002's field names).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobStatus {
    /// `queued`, `started`, `finished` or `failed`.
    pub task_status: String,
    /// The top 5 `[label, score]`, once finished.
    #[schema(value_type = Option<Vec<Vec<serde_json::Value>>>)]
    pub data: Option<serde_json::Value>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn check_model(state: &AppState, model_id: &str) -> Result<(), ApiError> {
    match state.models.get(model_id) {
        Some(_) => Ok(()),
        None => Err(ApiError::Invalid {
            field: "model_id",
            detail: format!(
                "unknown model; known models: {}",
                state.models.list().map(|m| m.id).collect::<Vec<_>>().join(", ")
            ),
        }),
    }
}

async fn read_multipart(state: &AppState, mut form: Multipart) -> Result<ClassifyJob, ApiError> {
    let mut model_id = None;
    let mut image = None;
    while let Some(field) =
        form.next_field().await.map_err(|e| ApiError::Invalid { field: "file", detail: e.body_text() })?
    {
        match field.name() {
            Some("model_id") => {
                model_id = Some(
                    field.text().await.map_err(|e| ApiError::Invalid { field: "model_id", detail: e.body_text() })?,
                )
            }
            Some("image_id") => {
                let id =
                    field.text().await.map_err(|e| ApiError::Invalid { field: "image_id", detail: e.body_text() })?;
                images::sample(&id)?;
                image = Some(ImageSource::Sample { id });
            }
            Some("file") => {
                let bytes =
                    field.bytes().await.map_err(|e| ApiError::Invalid { field: "file", detail: e.body_text() })?;
                // Size, format and pixel count from the header, before anything is enqueued.
                images::inspect(&bytes, &state.limits)?;
                image = Some(ImageSource::Upload { data: base64::engine::general_purpose::STANDARD.encode(&bytes) });
            }
            _ => {}
        }
    }
    let model_id = model_id.ok_or(ApiError::Invalid { field: "model_id", detail: "is required".into() })?;
    let image = image.ok_or(ApiError::Invalid { field: "file", detail: "send a file or an image_id".into() })?;
    Ok(ClassifyJob { model_id, image })
}

/// Enqueues a classification and answers at once with the job id. Besides this JSON body, a
/// `multipart/form-data` upload is accepted: `model_id`, and a `file` (JPEG, PNG, WebP or GIF) or an
/// `image_id`; a file too large is 413, of another format 415, not an image 422.
#[utoipa::path(post, path = "/classifications", request_body = ClassifyRequest,
    responses(
        (status = 202, body = Accepted, headers(("Location" = String, description = "the job's status"))),
        (status = 413, body = Problem),
        (status = 415, body = Problem),
        (status = 422, description = "an unknown model or image; `field` names which", body = Problem),
        (status = 503, description = "the job queue is unavailable", body = Problem)))]
async fn classify(State(state): State<Arc<AppState>>, req: Request) -> Result<Response, ApiError> {
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let job = if content_type.starts_with("multipart/form-data") {
        let form = Multipart::from_request(req, &())
            .await
            .map_err(|e| ApiError::Invalid { field: "file", detail: e.body_text() })?;
        read_multipart(&state, form).await?
    } else {
        let Json(body) = Json::<ClassifyRequest>::from_request(req, &())
            .await
            .map_err(|e| ApiError::Invalid { field: "body", detail: e.body_text() })?;
        images::sample(&body.image_id)?;
        ClassifyJob { model_id: body.model_id, image: ImageSource::Sample { id: body.image_id } }
    };
    check_model(&state, &job.model_id)?;
    let id = state
        .queue
        .enqueue(ClassifyJob::QUEUE, &job, EnqueueOptions::attempts(state.max_attempts))
        .await
        .map_err(ApiError::Queue)?;
    let location = format!("/classifications/{id}");
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(Accepted { job_id: id.to_string() }))
        .into_response())
}

/// The state of a job, and its top 5 once finished.
#[utoipa::path(get, path = "/classifications/{job_id}", params(("job_id" = String, Path, description = "`job_id` of the 202")),
    responses(
        (status = 200, body = JobStatus),
        (status = 404, body = Problem),
        (status = 503, description = "the job queue is unavailable", body = Problem)))]
async fn status(State(state): State<Arc<AppState>>, Path(job_id): Path<String>) -> Result<Json<JobStatus>, ApiError> {
    let Ok(id) = job_id.parse::<JobId>() else { return Err(ApiError::UnknownJob(job_id)) };
    let view = state.queue.status(id).await.map_err(ApiError::Queue)?.ok_or(ApiError::UnknownJob(job_id))?;
    let task_status = match view.state {
        JobState::Queued | JobState::Retrying => "queued",
        JobState::Started => "started",
        JobState::Finished => "finished",
        JobState::Failed => "failed",
    };
    Ok(Json(JobStatus { task_status: task_status.into(), data: view.result, error: view.error }))
}

/// A sample image (JPEG), for previews.
#[utoipa::path(get, path = "/classifications/images/{id}", params(("id" = String, Path, description = "one of `/info`'s images")),
    responses(
        (status = 200, description = "the image", content_type = "image/jpeg", body = Vec<u8>,
            headers(("Cache-Control" = String))),
        (status = 404, body = Problem)))]
async fn sample_image(Path(id): Path<String>) -> Result<Response, ApiError> {
    let sample = images::sample(&id).map_err(|_| ApiError::UnknownSample(id))?;
    Ok((
        [(header::CONTENT_TYPE, images::Sample::MIME_TYPE), (header::CACHE_CONTROL, "public, max-age=86400")],
        sample.bytes,
    )
        .into_response())
}

/// The classifier's OpenAPI description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Agora image classification",
        description = "EfficientNet-Lite classification through an asynchronous job queue."
    ),
    paths(info, classify, status, sample_image),
    components(schemas(Info, ClassifyRequest, Accepted, JobStatus, Problem)),
    modifiers(&PublicApi)
)]
pub struct ApiDoc;

/// The document, with the ids `model_id` and `image_id` accept (this instance's models, the
/// bundled samples) as enumerations.
fn document(state: &AppState) -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let models: Vec<&str> = state.models.list().map(|m| m.id).collect();
    let samples: Vec<&str> = images::SAMPLES.iter().map(|s| s.id).collect();
    if let Some(props) = doc.pointer_mut("/components/schemas/ClassifyRequest/properties") {
        props["model_id"]["enum"] = serde_json::json!(models);
        props["image_id"]["enum"] = serde_json::json!(samples);
    }
    if let Some(params) = doc.pointer_mut("/paths/~1classifications~1images~1{id}/get/parameters/0/schema") {
        params["enum"] = serde_json::json!(samples);
    }
    doc
}

/// The classifier's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/info", get(info))
        .route("/classifications", post(classify))
        .route("/classifications/{job_id}", get(status))
        .route("/classifications/images/{id}", get(sample_image))
        .route("/openapi.json", get(|State(state): State<Arc<AppState>>| async move { Json(document(&state)) }))
        .with_state(state)
}
