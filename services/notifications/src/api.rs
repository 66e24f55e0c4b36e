//! The notifications service's REST API: `GET /notifications` (newest first, with the unread
//! count; `?unread=1` for unread ones only), `POST /notifications/{id}/read` and
//! `POST /notifications/read` (all), `GET /notifications/stream` (Server-Sent Events of new
//! ones, replaying those after `Last-Event-ID`), and the e-mail address they go to
//! (`GET`/`PUT`/`DELETE /notifications/email`). Every route needs a signed-in user and shows
//! that user's notifications only: another user's id is 404, as is an id that exists nowhere.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use futures::Stream;
use kit::auth::{CurrentUser, Verifier};
use kit::json_body::JsonBody;
use kit::openapi::PublicApi;
use kit::{Problem, Shutdown};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use utoipa::OpenApi;

use crate::domain::{self, EmailAddress, Kind};
use crate::store::{Notification, Store, StoreError};
use crate::subscriber::{Live, Pushed};

/// How often a stream sends a comment when it has nothing to say, so that proxies (the
/// gateway's idle timeout is 60 s) and browsers keep it open.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The most stored notifications a stream replays after `Last-Event-ID` (older ones are in
/// `GET /notifications`).
pub const MAX_REPLAY: u32 = 100;

/// What the handlers share.
pub struct AppState {
    /// Notifications and contacts.
    pub store: Store,
    /// This replica's live feed.
    pub live: Live,
    /// Checks tokens.
    pub verifier: Arc<Verifier>,
    /// Whether e-mail goes out (`SMTP_URL` is set).
    pub email_enabled: bool,
    /// Ends open streams when the service stops, so that it need not wait for them.
    pub shutdown: Shutdown,
}

/// The notifications service's errors, each a problem+json response.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No such notification (or someone else's).
    #[error("no such notification")]
    NotFound,
    /// A field breaks a rule.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match &self {
            ApiError::NotFound => Problem::not_found(self.to_string()),
            ApiError::Invalid { field, reason } => Problem::invalid_field(field, reason.clone()),
            ApiError::Store(err) => {
                tracing::error!(error = %err, "storage failure");
                Problem::internal()
            }
        };
        problem.into_response()
    }
}

/// A notification as its user sees it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NotificationView {
    /// Its id (the event's; a stream's `id:`).
    #[schema(format = Uuid)]
    pub id: String,
    /// What it tells.
    pub kind: Kind,
    /// What it is about: the video's id.
    pub about: String,
    /// One sentence to show.
    pub text: String,
    /// Where to go from it: a path on the site (`/download?fid=…`, `/media`).
    pub link: String,
    /// Whether its user marked it read.
    pub read: bool,
    /// When it happened.
    pub created_at: DateTime<Utc>,
}

impl From<&Notification> for NotificationView {
    fn from(n: &Notification) -> Self {
        Self {
            id: n.id.clone(),
            kind: n.kind,
            about: n.about.clone(),
            text: n.text.clone(),
            link: n.link.clone(),
            read: n.read_at.is_some(),
            created_at: n.created_at,
        }
    }
}

/// A page of notifications.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NotificationPage {
    /// Newest first.
    pub notifications: Vec<NotificationView>,
    /// How many of the user's notifications are unread (all of them, not only this page's).
    pub unread: u64,
    /// Pass as `cursor` for the next page; absent on the last.
    #[schema(format = Uuid)]
    pub next_cursor: Option<String>,
}

/// The unread count after marking.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UnreadCount {
    /// How many of the user's notifications are still unread.
    pub unread: u64,
}

/// `GET /notifications` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// `1` (or `true`) for unread notifications only.
    #[param(value_type = Option<String>, pattern = "^(0|1|true|false)$")]
    pub unread: Option<String>,
    /// Notifications per page (1–100, default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// Where the previous page ended (its `next_cursor`).
    #[param(value_type = Option<String>, format = Uuid)]
    pub cursor: Option<String>,
}

/// Where notifications are e-mailed.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EmailSetting {
    /// The address, if the user gave one.
    #[schema(format = Email)]
    pub email: Option<String>,
    /// Whether this service sends e-mail at all (it does when `SMTP_URL` is set).
    pub delivery: bool,
}

/// `PUT /notifications/email` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct EmailChange {
    /// The address to e-mail notifications to.
    #[schema(format = Email, min_length = 3, max_length = 254)]
    pub email: String,
}

fn invalid(field: &'static str) -> impl FnOnce(String) -> ApiError {
    move |reason| ApiError::Invalid { field, reason }
}

/// The caller's notifications, newest first, a page at a time, with their unread count.
#[utoipa::path(get, path = "/notifications", params(ListQuery), security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = NotificationPage),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "`unread`, `limit` or `cursor` is not one this API takes")))]
async fn list(
    State(state): State<Arc<AppState>>,
    user: CurrentUser,
    Query(q): Query<ListQuery>,
) -> Result<Json<NotificationPage>, ApiError> {
    let unread_only = domain::parse_flag(q.unread.as_deref()).map_err(invalid("unread"))?;
    let limit = domain::page_size(q.limit).map_err(invalid("limit"))?;
    let cursor = match q.cursor.as_deref() {
        Some(raw) => Some(domain::parse_id(raw).ok_or_else(|| invalid("cursor")("not a cursor from this API".into()))?),
        None => None,
    };
    let mut page = state.store.list(&user.id, unread_only, cursor.as_deref(), limit + 1).await?;
    let more = page.len() > limit as usize;
    page.truncate(limit as usize);
    let next_cursor = if more { page.last().map(|n| n.id.clone()) } else { None };
    let unread = state.store.unread_count(&user.id).await?;
    Ok(Json(NotificationPage { notifications: page.iter().map(NotificationView::from).collect(), unread, next_cursor }))
}

/// Marks one of the caller's notifications read.
#[utoipa::path(post, path = "/notifications/{id}/read", security(("bearer" = []), ("session" = [], "csrf" = [])),
    params(("id" = String, Path, format = Uuid, description = "The notification")),
    responses(
        (status = 200, body = UnreadCount),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "No such notification of the caller's")))]
async fn mark_read(
    State(state): State<Arc<AppState>>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<UnreadCount>, ApiError> {
    let id = domain::parse_id(&id).ok_or(ApiError::NotFound)?;
    if !state.store.mark_read(&user.id, &id).await? {
        return Err(ApiError::NotFound);
    }
    Ok(Json(UnreadCount { unread: state.store.unread_count(&user.id).await? }))
}

/// Marks all of the caller's notifications read.
#[utoipa::path(post, path = "/notifications/read", security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, body = UnreadCount),
        (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn mark_all_read(State(state): State<Arc<AppState>>, user: CurrentUser) -> Result<Json<UnreadCount>, ApiError> {
    let marked = state.store.mark_all_read(&user.id).await?;
    tracing::debug!(user = %user.id, marked, "notifications marked read");
    Ok(Json(UnreadCount { unread: state.store.unread_count(&user.id).await? }))
}

/// Headers of `GET /notifications/stream` (documentation).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct StreamHeaders {
    /// The `id:` of the last event received: the stored notifications after it are sent first
    /// (at most 100). Browsers send it when they reconnect.
    #[param(rename = "Last-Event-ID", value_type = Option<String>, format = Uuid)]
    last_event_id: Option<String>,
}

/// The caller's new notifications as Server-Sent Events, as they happen: each event's `id:` is
/// the notification's, its `data:` the notification (JSON); a comment every 15 s keeps it open.
#[utoipa::path(get, path = "/notifications/stream", params(StreamHeaders), security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "An endless stream of events, one per new notification",
            content_type = "text/event-stream", body = String),
        (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn stream(
    State(state): State<Arc<AppState>>,
    user: CurrentUser,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // Listening first: what is published while the replay is read comes after it, not never.
    let live = state.live.subscribe();
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(domain::parse_id);
    let replay = match last {
        Some(after) => state.store.newer_than(&user.id, &after, MAX_REPLAY).await?,
        None => Vec::new(),
    };
    let sent: HashSet<String> = replay.iter().map(|n| n.id.clone()).collect();
    metrics::gauge!("notifications_streams").increment(1.0);
    let open = OpenStream { user: user.id, replay: replay.into_iter(), sent, live, shutdown: state.shutdown.clone() };
    let events = futures::stream::unfold(open, |mut open| async move {
        let next = open.next().await?;
        Some((Ok(event_of(&next)), open))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")))
}

fn event_of(n: &Notification) -> Event {
    let view = NotificationView::from(n);
    let data = serde_json::to_string(&view).unwrap_or_else(|_| "{}".into());
    Event::default().id(n.id.clone()).data(data)
}

/// One client's stream: the replay, then its user's live notifications.
struct OpenStream {
    user: String,
    replay: std::vec::IntoIter<Notification>,
    sent: HashSet<String>,
    live: tokio::sync::broadcast::Receiver<Pushed>,
    shutdown: Shutdown,
}

impl OpenStream {
    /// The next notification to send; `None` ends the stream (the client reconnects).
    async fn next(&mut self) -> Option<Notification> {
        if let Some(n) = self.replay.next() {
            return Some(n);
        }
        loop {
            let pushed = tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                pushed = self.live.recv() => pushed,
            };
            match pushed {
                Ok(Pushed::Notification(n)) if n.user_id == self.user && !self.sent.contains(&n.id) => {
                    return Some((*n).clone())
                }
                Ok(Pushed::Notification(_)) => continue,
                // Behind: end it, so that the client reconnects with Last-Event-ID and the store fills the gap.
                Ok(Pushed::Resync) | Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return None,
            }
        }
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!("notifications_streams").decrement(1.0);
    }
}

/// Where the caller's notifications are e-mailed, if anywhere.
#[utoipa::path(get, path = "/notifications/email", security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = EmailSetting),
        (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn get_email(State(state): State<Arc<AppState>>, user: CurrentUser) -> Result<Json<EmailSetting>, ApiError> {
    let email = state.store.contact(&user.id).await?;
    Ok(Json(EmailSetting { email, delivery: state.email_enabled }))
}

/// E-mails the caller's notifications to this address from now on.
#[utoipa::path(put, path = "/notifications/email", request_body = EmailChange,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, body = EmailSetting),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "Not an e-mail address")))]
async fn put_email(
    State(state): State<Arc<AppState>>,
    user: CurrentUser,
    JsonBody(change): JsonBody<EmailChange>,
) -> Result<Json<EmailSetting>, ApiError> {
    let email = EmailAddress::parse(&change.email).map_err(invalid("email"))?;
    state.store.set_contact(&user.id, email.as_str()).await?;
    tracing::info!(user = %user.id, "notification e-mail address set");
    Ok(Json(EmailSetting { email: Some(email.as_str().to_string()), delivery: state.email_enabled }))
}

/// Stops e-mailing the caller's notifications (and forgets the address).
#[utoipa::path(delete, path = "/notifications/email", security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 204, description = "No address is kept (whether there was one or not)"),
        (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn delete_email(State(state): State<Arc<AppState>>, user: CurrentUser) -> Result<StatusCode, ApiError> {
    if state.store.delete_contact(&user.id).await? {
        tracing::info!(user = %user.id, "notification e-mail address removed");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The notifications service's OpenAPI description.
#[derive(OpenApi)]
#[openapi(
    info(title = "Agora notifications", description = "What happened to your things: listed, streamed live, e-mailed."),
    paths(list, mark_read, mark_all_read, stream, get_email, put_email, delete_email),
    components(schemas(NotificationView, NotificationPage, UnreadCount, Kind, EmailSetting, EmailChange, Problem)),
    modifiers(&PublicApi)
)]
pub struct ApiDoc;

/// The notifications service's routes.
pub fn router(state: Arc<AppState>) -> Router {
    let verifier = state.verifier.clone();
    Router::new()
        .route("/notifications", get(list))
        .route("/notifications/read", post(mark_all_read))
        .route("/notifications/{id}/read", post(mark_read))
        .route("/notifications/stream", get(stream))
        .route("/notifications/email", get(get_email).put(put_email).delete(delete_email))
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .layer(Extension(verifier))
        .with_state(state)
}
