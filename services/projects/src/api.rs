//! The projects service's REST API (SPEC §3.5, seed 003's names): propose,
//! list and read projects, change tags, and the thin façades over the threads
//! service for new threads and votes. Writes need a signed-in user, who is the
//! author or voter.

use std::sync::Arc;

use agora_proto::threads::v1 as pb;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use kit::auth::{CurrentUser, Verifier};
use kit::json_body::JsonBody;
use kit::openapi::PublicApi;
use kit::Problem;
use serde::{Deserialize, Serialize};
use tonic_types::StatusExt;
use utoipa::OpenApi;

use crate::cache::PageCache;
use crate::domain::{self, Direction, Invalid, Proposal, ThreadType};
use crate::outbox::Relay;
use crate::store::{Project, Store, StoreError};
use crate::threads::{direction_from_wire, type_from_wire, wire_direction, wire_type, Threads, ThreadsError};
use kit::events::outbox::OutboxRelay;

/// What the handlers share.
pub struct AppState {
    /// Projects, tags and the outbox.
    pub store: Store,
    /// The threads service.
    pub threads: Arc<Threads>,
    /// Delivers proposals' threads.
    pub relay: Arc<Relay>,
    /// Publishes the `project.*` events staged with each change.
    pub events: Arc<OutboxRelay>,
    /// Checks tokens (also for reads, to mark the reader's own votes).
    pub verifier: Arc<Verifier>,
    /// Project pages as anonymous readers see them.
    pub pages: PageCache,
}

/// The projects service's errors, each a problem+json response.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field breaks a rule.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// No such project or thread.
    #[error("{0}")]
    NotFound(String),
    /// The user may not change this.
    #[error("{0}")]
    Forbidden(String),
    /// The threads service refused or failed.
    #[error(transparent)]
    Threads(#[from] ThreadsError),
    /// The database is down, or cannot take this write now.
    #[error(transparent)]
    Unavailable(kit::outage::Unavailable),
    /// The database failed.
    #[error(transparent)]
    Store(StoreError),
    /// An answer could not be serialised.
    #[error("cannot encode the answer: {0}")]
    Encode(String),
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(id) => Self::NotFound(format!("no project {id}")),
            StoreError::Invalid(invalid) => Self::Invalid(invalid),
            StoreError::NotAuthor(_) => Self::Forbidden(err.to_string()),
            StoreError::Unavailable(unavailable) => Self::Unavailable(unavailable),
            other => Self::Store(other),
        }
    }
}

/// A field the threads service names, in this API's words: the last part of its path
/// (`threads[0].parent_thread_id` is the `parent_thread_id` of the one thread a request here makes).
fn our_field(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

/// The 422 for the threads service's `INVALID_ARGUMENT`, naming the fields of the
/// `google.rpc.BadRequest` in its details (its message is for people, not for parsing).
fn invalid_argument(status: &tonic::Status) -> Problem {
    let violations = status.get_details_bad_request().map(|bad| bad.field_violations).unwrap_or_default();
    let Some(first) = violations.first() else {
        return Problem::invalid_field("request", status.message().to_string());
    };
    let errors: Vec<serde_json::Value> = violations
        .iter()
        .map(|v| serde_json::json!({ "field": our_field(&v.field), "detail": v.description }))
        .collect();
    Problem::invalid_field(our_field(&first.field), first.description.clone()).with("errors", errors)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match &self {
            ApiError::Invalid(invalid) => Problem::invalid_field(&invalid.field, invalid.reason.clone()),
            ApiError::NotFound(what) => Problem::not_found(what.clone()),
            ApiError::Forbidden(why) => Problem::new(StatusCode::FORBIDDEN, "forbidden", why.clone()),
            ApiError::Threads(ThreadsError::Answered(status)) => match status.code() {
                tonic::Code::InvalidArgument => invalid_argument(status),
                tonic::Code::NotFound => Problem::not_found(status.message().to_string()),
                tonic::Code::PermissionDenied => {
                    Problem::new(StatusCode::FORBIDDEN, "forbidden", status.message().to_string())
                }
                // The threads service refused this request for now, nothing stored (from `Vote`: too many
                // votes already waiting on that thread).
                tonic::Code::ResourceExhausted => {
                    Problem::unavailable(status.message().to_string()).header(header::RETRY_AFTER, "1")
                }
                _ => {
                    tracing::error!(code = ?status.code(), message = status.message(), "threads service error");
                    Problem::new(StatusCode::BAD_GATEWAY, "bad-gateway", "the threads service failed")
                }
            },
            ApiError::Threads(ThreadsError::Unavailable(why)) => {
                tracing::warn!(error = %why, "threads service unavailable");
                Problem::unavailable(format!("the threads service is unavailable: {why}"))
                    .header(header::RETRY_AFTER, "1")
            }
            ApiError::Unavailable(unavailable) => unavailable.problem(),
            ApiError::Store(err) => {
                tracing::error!(error = %err, "database failure");
                Problem::internal()
            }
            ApiError::Encode(err) => {
                tracing::error!(error = %err, "answer not encodable");
                Problem::internal()
            }
        };
        problem.into_response()
    }
}

/// `POST /projects/propose` answer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Proposed {
    /// The new project's id.
    pub project_id: i64,
    /// `created` when its problems and solutions are threads already, `pending`
    /// when the threads service was unavailable and they wait in the outbox.
    pub threads: String,
}

/// A project in the listing (no threads).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProjectSummary {
    /// Its id.
    pub project_id: i64,
    /// Its name.
    pub project_name: String,
    /// Its tagline.
    pub tagline: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Who proposed it (display name).
    pub author_name: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl From<Project> for ProjectSummary {
    fn from(p: Project) -> Self {
        Self {
            project_id: p.project_id,
            project_name: p.project_name,
            tagline: p.tagline,
            tags: p.tags,
            author_name: p.author_name,
            created_at: p.created_at,
        }
    }
}

/// `GET /projects` answer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProjectPage {
    /// Newest first.
    pub projects: Vec<ProjectSummary>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// `GET /projects` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PageQuery {
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<i64>, minimum = 1)]
    pub cursor: Option<String>,
}

/// A thread as the REST API shows it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ThreadView {
    /// Its id.
    pub thread_id: i64,
    /// Its project.
    pub project_id: i64,
    /// The thread it replies to.
    pub parent_thread_id: Option<i64>,
    /// PROBLEM, SOLUTION or COMMENT.
    pub thread_type: ThreadType,
    /// Its text.
    pub message: String,
    /// Up votes.
    pub up_vote: i64,
    /// Down votes.
    pub down_vote: i64,
    /// The author's user id.
    pub author: String,
    /// The author's name.
    pub author_name: String,
    /// When (RFC 3339).
    pub created_at: String,
    /// The reader's own vote (`none` when not signed in).
    pub my_vote: Direction,
}

impl ThreadView {
    fn from_pb(t: pb::Thread) -> Self {
        let thread_type = type_from_wire(t.thread_type);
        Self {
            thread_id: t.thread_id,
            project_id: t.project_id,
            parent_thread_id: t.parent_thread_id,
            thread_type,
            message: t.message,
            up_vote: t.up_vote,
            down_vote: t.down_vote,
            author: t.author,
            author_name: t.author_name,
            created_at: t.created_at,
            my_vote: direction_from_wire(t.my_vote),
        }
    }
}

/// `GET /projects/{project_id}` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProjectDetail {
    /// The project.
    #[serde(flatten)]
    pub project: ProjectSummary,
    /// Its threads, oldest first; `null` when the threads service could not be asked.
    pub threads: Option<Vec<ThreadView>>,
    /// Problems and solutions of the proposal still waiting to become threads.
    pub threads_pending: i64,
    /// Why `threads` is `null`, as a problem document.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub threads_problem: Option<Problem>,
    /// Present, and `true`, on a page served from the cache past its freshness because the
    /// database is unavailable (stale-if-error); its `Age` header says how old it is, in seconds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
}

/// `PUT /projects/tags` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({ "project_id": 1, "add": ["drums"], "remove": ["circus"] }))]
pub struct TagChange {
    /// The project.
    #[serde(deserialize_with = "kit::json_body::integer")]
    #[schema(minimum = 1)]
    pub project_id: i64,
    /// Tags to add.
    #[serde(default)]
    #[schema(schema_with = domain::schema::tag_change)]
    pub add: Vec<String>,
    /// Tags to remove.
    #[serde(default)]
    #[schema(schema_with = domain::schema::tag_change)]
    pub remove: Vec<String>,
}

/// `PUT /projects/tags` answer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TagList {
    /// The project.
    pub project_id: i64,
    /// Its tags after the change.
    pub tags: Vec<String>,
}

/// `POST /projects/{project_id}/threads` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({ "thread_type": "COMMENT", "message": "What about juggling?" }))]
pub struct NewThread {
    /// PROBLEM, SOLUTION or COMMENT.
    pub thread_type: ThreadType,
    /// 1–10 000 characters.
    #[schema(schema_with = domain::schema::message)]
    pub message: String,
    /// The thread this one replies to (of the same project).
    #[serde(default, deserialize_with = "kit::json_body::optional_integer")]
    #[schema(minimum = 1)]
    pub parent_thread_id: Option<i64>,
}

/// `POST /threads/{thread_id}/vote` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({ "direction": "up" }))]
pub struct VoteBody {
    /// `up`, `down`, or `none` to withdraw.
    pub direction: Direction,
}

/// `POST /threads/{thread_id}/vote` answer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VoteCounts {
    /// The thread.
    pub thread_id: i64,
    /// Up votes now.
    pub up_vote: i64,
    /// Down votes now.
    pub down_vote: i64,
    /// The voter's vote now.
    pub direction: Direction,
}

/// Proposes a project: stored with its tags at once; its problems and solutions become threads.
#[utoipa::path(post, path = "/projects/propose", request_body = Proposal, security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 201, body = Proposed, headers(("Location" = String, description = "the new project"))),
        (status = 401, body = Problem),
        (status = 422, body = Problem),
        (status = 503, description = "the database is unavailable", body = Problem)))]
async fn propose(
    State(state): State<Arc<AppState>>,
    user: CurrentUser,
    JsonBody(proposal): JsonBody<Proposal>,
) -> Result<Response, ApiError> {
    let valid = proposal.validate()?;
    let (project, outbox) = state.store.propose(valid, (user.id, user.name), Utc::now()).await?;
    state.events.staged();
    let delivered = state.relay.deliver(&outbox).await;
    tracing::info!(project_id = project.project_id, threads = outbox.len(), delivered, "project proposed");
    let location = format!("/projects/{}", project.project_id);
    let body =
        Proposed { project_id: project.project_id, threads: if delivered { "created" } else { "pending" }.to_string() };
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(body)).into_response())
}

/// Lists projects, newest first, a page at a time.
#[utoipa::path(get, path = "/projects", params(PageQuery),
    responses(
        (status = 200, body = ProjectPage),
        (status = 422, description = "`limit` or `cursor` out of range", body = Problem),
        (status = 503, description = "the database is unavailable", body = Problem)))]
async fn list(State(state): State<Arc<AppState>>, Query(q): Query<PageQuery>) -> Result<Json<ProjectPage>, ApiError> {
    let limit = domain::page_size(q.limit)?;
    let before = domain::cursor(q.cursor.as_deref())?;
    let mut projects = state.store.list(limit + 1, before).await?;
    let more = projects.len() > limit as usize;
    projects.truncate(limit as usize);
    let next_cursor = if more { projects.last().map(|p| p.project_id.to_string()) } else { None };
    Ok(Json(ProjectPage { projects: projects.into_iter().map(ProjectSummary::from).collect(), next_cursor }))
}

/// The signed-in reader, if any (a read works without a token; a bad one is ignored).
async fn reader(verifier: &Verifier, headers: &HeaderMap) -> Option<String> {
    let token = kit::auth::bearer(headers)?;
    verifier.verify(token).await.ok().map(|claims| claims.sub)
}

/// One project with its threads; still answers, with `threads: null`, when the threads service is down.
#[utoipa::path(get, path = "/projects/{project_id}", security((), ("bearer" = []), ("session" = [])),
    params(("project_id" = i64, Path, minimum = 1, description = "the project's id")),
    responses(
        (status = 200, body = ProjectDetail),
        (status = 404, body = Problem),
        (status = 503, description = "the database is unavailable", body = Problem)))]
async fn detail(
    State(state): State<Arc<AppState>>,
    Path(project_id): Path<i64>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let voter = reader(&state.verifier, &headers).await;
    if voter.is_none() {
        if let Some((page, age)) = state.pages.page(project_id) {
            return Ok(cached_page(page, age));
        }
    }
    let stamp = state.pages.stamp(project_id);
    let project = match state.store.get(project_id).await {
        Ok(Some(project)) => project,
        Ok(None) => return Err(ApiError::NotFound(format!("no project {project_id}"))),
        // The database is down: an anonymous reader gets the last page read, marked stale, while one is kept.
        Err(StoreError::Unavailable(unavailable)) => {
            return match state.pages.stale_page(project_id).filter(|_| voter.is_none()) {
                Some((page, age)) => Ok(stale_page(&page, age)),
                None => Err(ApiError::Unavailable(unavailable)),
            };
        }
        Err(other) => return Err(other.into()),
    };
    let threads_pending = project.pending_threads;
    let (threads, threads_problem) = match state.threads.of_project(project_id, voter.as_deref()).await {
        Ok(threads) => (Some(threads.into_iter().map(ThreadView::from_pb).collect::<Vec<_>>()), None),
        Err(err) => {
            tracing::warn!(project_id, error = %err, "project served without its threads");
            let problem = Problem::unavailable(format!("the project's threads cannot be shown right now: {err}"))
                .titled("Threads unavailable");
            (None, Some(problem))
        }
    };
    // A complete page (threads read, none still in the outbox) is the same for every anonymous reader.
    let cacheable = voter.is_none() && threads.is_some() && threads_pending == 0;
    let detail = ProjectDetail { project: project.into(), threads, threads_pending, threads_problem, stale: false };
    if !cacheable {
        return Ok(Json(detail).into_response());
    }
    let page = Bytes::from(serde_json::to_vec(&detail).map_err(|e| ApiError::Encode(e.to_string()))?);
    let thread_ids = detail.threads.iter().flatten().map(|t| t.thread_id);
    state.pages.keep(project_id, stamp, thread_ids, page.clone());
    Ok(([(header::CONTENT_TYPE, "application/json")], page).into_response())
}

/// A page from the cache, fresh: with its `Age`, in seconds since it was read from the databases.
fn cached_page(page: Bytes, age: std::time::Duration) -> Response {
    let age = age.as_secs().to_string();
    ([(header::CONTENT_TYPE, "application/json"), (header::AGE, age.as_str())], page).into_response()
}

/// A page from the cache past its freshness (the database is unavailable), marked `"stale": true`.
fn stale_page(page: &[u8], age: std::time::Duration) -> Response {
    // The page is a serialised `ProjectDetail`, a non-empty JSON object: the member goes first.
    let mut marked = Vec::with_capacity(page.len() + 16);
    marked.extend_from_slice(b"{\"stale\":true,");
    marked.extend_from_slice(page.get(1..).unwrap_or_default());
    metrics::counter!("projects_stale_pages_total").increment(1);
    cached_page(Bytes::from(marked), age)
}

/// Adds and removes tags of a project, atomically: all of the change or none of it.
#[utoipa::path(put, path = "/projects/tags", request_body = TagChange, security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, body = TagList),
        (status = 401, body = Problem),
        (status = 403, description = "only the project's author may change its tags", body = Problem),
        (status = 404, body = Problem),
        (status = 422, description = "a bad tag, or more than 20 tags after the change", body = Problem),
        (status = 503, description = "the database is unavailable", body = Problem)))]
async fn update_tags(
    State(state): State<Arc<AppState>>,
    user: CurrentUser,
    JsonBody(change): JsonBody<TagChange>,
) -> Result<Json<TagList>, ApiError> {
    let project_id = change.project_id;
    let tags = state.store.update_tags(project_id, user.id.clone(), change.add, change.remove).await?;
    state.events.staged();
    state.pages.forget(project_id);
    tracing::info!(project_id, user = %user.id, tags = tags.len(), "tags changed");
    Ok(Json(TagList { project_id, tags }))
}

/// Starts a thread on a project, or replies to one of its threads.
#[utoipa::path(post, path = "/projects/{project_id}/threads", request_body = NewThread,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    params(
        ("project_id" = i64, Path, minimum = 1, description = "the project's id"),
        ("Idempotency-Key" = Option<String>, Header,
            description = "makes retries safe: the same key (1–200 characters) from the same user makes one thread")),
    responses(
        (status = 201, body = ThreadView, headers(("Location" = String, description = "the new thread"))),
        (status = 401, body = Problem),
        (status = 404, description = "no such project, or no such parent thread", body = Problem),
        (status = 422, description = "a bad message, or a parent thread of another project", body = Problem),
        (status = 502, description = "the threads service failed", body = Problem),
        (status = 503, description = "the database or the threads service is unavailable", body = Problem)))]
async fn new_thread(
    State(state): State<Arc<AppState>>,
    Path(project_id): Path<i64>,
    user: CurrentUser,
    headers: HeaderMap,
    JsonBody(body): JsonBody<NewThread>,
) -> Result<Response, ApiError> {
    let message = domain::message("message", &body.message)?;
    if state.store.get(project_id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no project {project_id}")));
    }
    // A client's Idempotency-Key makes its retries safe; without one each request is a new thread.
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 200)
        .map(|k| format!("client-{}-{k}", user.id))
        .unwrap_or_else(|| format!("request-{}", uuid::Uuid::new_v4()));
    let thread = pb::Thread {
        project_id,
        parent_thread_id: body.parent_thread_id,
        thread_type: wire_type(body.thread_type).into(),
        message,
        author: user.id.clone(),
        author_name: user.name.clone(),
        idempotency_key: key,
        ..Default::default()
    };
    let created = state.threads.create(vec![thread]).await;
    state.pages.forget(project_id);
    let created = created?;
    let thread = created
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::Threads(ThreadsError::Unavailable("the threads service returned no thread".into())))?;
    let location = format!("/projects/{project_id}#thread-{}", thread.thread_id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(ThreadView::from_pb(thread))).into_response())
}

/// Votes on a thread: one vote per user, which voting again changes or withdraws.
#[utoipa::path(post, path = "/threads/{thread_id}/vote", request_body = VoteBody,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    params(("thread_id" = i64, Path, minimum = 1, description = "the thread's id")),
    responses(
        (status = 200, body = VoteCounts),
        (status = 401, body = Problem),
        (status = 404, body = Problem),
        (status = 502, description = "the threads service failed", body = Problem),
        (status = 503, description = "the threads service is unavailable, or too many votes wait on this thread", body = Problem)))]
async fn vote(
    State(state): State<Arc<AppState>>,
    Path(thread_id): Path<i64>,
    user: CurrentUser,
    JsonBody(body): JsonBody<VoteBody>,
) -> Result<Json<VoteCounts>, ApiError> {
    let direction = wire_direction(body.direction);
    let counts = state.threads.vote(thread_id, &user.id, direction).await;
    // Even a failed call may have counted the vote: the page is dropped either way.
    state.pages.forget_thread(thread_id);
    let counts = counts?;
    Ok(Json(VoteCounts {
        thread_id: counts.thread_id,
        up_vote: counts.up_vote,
        down_vote: counts.down_vote,
        direction: direction_from_wire(counts.direction),
    }))
}

/// The projects service's OpenAPI description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Agora crowdfunding projects",
        description = "Projects (REST) with problems, solutions and votes kept by the threads service (gRPC)."
    ),
    paths(propose, list, detail, update_tags, new_thread, vote),
    components(schemas(
        Proposal,
        Proposed,
        ProjectSummary,
        ProjectPage,
        ProjectDetail,
        ThreadView,
        TagChange,
        TagList,
        NewThread,
        VoteBody,
        VoteCounts,
        ThreadType,
        Direction,
        Problem
    )),
    modifiers(&PublicApi)
)]
pub struct ApiDoc;

/// The projects service's routes.
pub fn router(state: Arc<AppState>) -> Router {
    let verifier = state.verifier.clone();
    Router::new()
        .route("/projects", get(list))
        .route("/projects/propose", post(propose))
        .route("/projects/tags", put(update_tags))
        .route("/projects/{project_id}", get(detail))
        .route("/projects/{project_id}/threads", post(new_thread))
        .route("/threads/{thread_id}/vote", post(vote))
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .layer(Extension(verifier))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The problem+json the user sees for the threads service's `INVALID_ARGUMENT` with `violations`.
    async fn refusal(message: &str, violations: &[(&str, &str)]) -> serde_json::Value {
        let details = tonic_types::ErrorDetails::with_bad_request(
            violations.iter().map(|(field, why)| tonic_types::FieldViolation::new(*field, *why)).collect::<Vec<_>>(),
        );
        let status = tonic::Status::with_error_details(tonic::Code::InvalidArgument, message, details);
        let response = ApiError::Threads(ThreadsError::Answered(status)).into_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    #[tokio::test]
    async fn the_fields_the_threads_service_names_in_its_details_become_our_field_names() {
        let problem = refusal("unparsable text", &[("threads[0].parent_thread_id", "thread 9 is elsewhere")]).await;
        assert_eq!(problem["field"], "parent_thread_id");
        assert_eq!(problem["detail"], "parent_thread_id: thread 9 is elsewhere");
        assert_eq!(refusal("", &[("threads[0].message", "must not be blank")]).await["field"], "message");
        assert_eq!(refusal("", &[("voter", "is required")]).await["field"], "voter");
        let both = refusal("", &[("threads[0].message", "too long"), ("threads[1].author", "is required")]).await;
        assert_eq!(both["errors"][1], serde_json::json!({ "field": "author", "detail": "is required" }));
    }

    #[tokio::test]
    async fn a_refusal_without_details_names_the_request_and_keeps_the_message() {
        let problem = refusal("something odd", &[]).await;
        assert_eq!(
            (problem["field"].as_str(), problem["detail"].as_str()),
            (Some("request"), Some("request: something odd"))
        );
    }

    #[test]
    fn a_vote_refused_for_a_full_queue_is_a_503_to_retry_shortly() {
        let status = tonic::Status::resource_exhausted("too many votes are waiting on thread 7; try again shortly");
        let response = ApiError::Threads(ThreadsError::Answered(status)).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("1"));
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
            Some("application/problem+json")
        );
    }
}
