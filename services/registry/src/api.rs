//! The registry's HTTP API (SPEC §3.2): register, heartbeat, deregister, discover.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use kit::json_body::JsonBody;
use kit::openapi::InternalApi;
use kit::registry_client::{Instance, RegisterRequest, ServiceInstances};
use kit::{Problem, Shutdown};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use utoipa::OpenApi;

use crate::domain::{parse_index, parse_wait, valid_service_name, Registration, Table, DEFAULT_WAIT};

/// The header carrying the index of the instance table an answer of `GET /v1/services` shows.
pub const INDEX_HEADER: &str = "x-registry-index";

/// Shared state of the handlers: the instance table, and its index published to the watches.
pub type SharedTable = Arc<Shared>;

/// The instance table behind a lock, with every change of its index announced to waiting watches.
#[derive(Debug)]
pub struct Shared {
    table: RwLock<Table>,
    index: watch::Sender<u64>,
    stopping: Shutdown,
}

impl Shared {
    /// `table`, whose watches all end (with the current answer) when `stopping` trips.
    pub fn new(table: Table, stopping: Shutdown) -> Arc<Self> {
        let (index, _) = watch::channel(table.index());
        Arc::new(Self { table: RwLock::new(table), index, stopping })
    }

    /// Waits until the table's index is no longer `index`, for at most `wait` (or until the registry stops).
    async fn changed_since(&self, index: u64, wait: Duration) {
        let mut changes = self.index.subscribe();
        tokio::select! {
            _ = tokio::time::timeout(wait, changes.wait_for(|now| *now != index)) => {}
            () = self.stopping.cancelled() => {}
        }
    }
}

/// Write access to the table; dropping it announces a new index to the watches.
pub struct TableWriter<'a> {
    guard: RwLockWriteGuard<'a, Table>,
    index: &'a watch::Sender<u64>,
}

impl Deref for TableWriter<'_> {
    type Target = Table;
    fn deref(&self) -> &Table {
        &self.guard
    }
}

impl DerefMut for TableWriter<'_> {
    fn deref_mut(&mut self) -> &mut Table {
        &mut self.guard
    }
}

impl Drop for TableWriter<'_> {
    fn drop(&mut self) {
        // Only wakes the watches (they read the table once this writer's lock is released).
        let index = self.guard.index();
        self.index.send_if_modified(|published| std::mem::replace(published, index) != index);
    }
}

/// The registry's errors, each mapped to a problem+json response.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A registration broke a rule.
    #[error(transparent)]
    Invalid(#[from] crate::domain::Invalid),
    /// No instance with that id.
    #[error("no instance {0:?} is registered")]
    UnknownInstance(String),
    /// A path segment that cannot be a service name.
    #[error("{0:?} is not a valid service name")]
    BadServiceName(String),
    /// A query string that cannot be read.
    #[error("malformed query string: {0}")]
    BadQuery(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match &self {
            ApiError::UnknownInstance(_) => Problem::not_found(self.to_string()),
            ApiError::BadServiceName(_) | ApiError::BadQuery(_) => Problem::bad_request(self.to_string()),
            // A watch's bad `wait` or `index` is a 400 (a query, not a body), naming the parameter.
            ApiError::Invalid(e) if matches!(e.field, "wait" | "index") => Problem::bad_request(self.to_string())
                .with("field", e.field)
                .with("errors", serde_json::json!([{ "field": e.field, "detail": e.reason }])),
            ApiError::Invalid(e) => Problem::invalid_field(e.field, e.reason.clone()),
        };
        problem.into_response()
    }
}

/// Read access to the table.
pub fn read(table: &SharedTable) -> RwLockReadGuard<'_, Table> {
    table.table.read().unwrap_or_else(|p| p.into_inner())
}

/// Write access to the table; a change of its index reaches the watches when the writer is dropped.
pub fn write(table: &SharedTable) -> TableWriter<'_> {
    TableWriter { guard: table.table.write().unwrap_or_else(|p| p.into_inner()), index: &table.index }
}

/// Registers an instance (or replaces one with the same id).
#[utoipa::path(post, path = "/v1/instances", request_body = RegisterRequest,
    responses(
        (status = 201, body = Instance, headers(("Location" = String, description = "the instance"))),
        (status = 422, body = Problem)))]
async fn register(
    State(table): State<SharedTable>,
    JsonBody(req): JsonBody<RegisterRequest>,
) -> Result<Response, ApiError> {
    let reg = Registration::parse(req)?;
    let instance = write(&table).register(reg, Instant::now());
    tracing::info!(service = %instance.service, instance_id = %instance.instance_id, address = %instance.address, "instance registered");
    let location = format!("/v1/instances/{}", instance.instance_id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(instance)).into_response())
}

/// Renews an instance's lease; 404 tells it to register again.
#[utoipa::path(put, path = "/v1/instances/{id}/heartbeat", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
async fn heartbeat(State(table): State<SharedTable>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    if write(&table).heartbeat(&id, Instant::now()) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::UnknownInstance(id))
    }
}

/// Removes an instance at once (graceful stop).
#[utoipa::path(delete, path = "/v1/instances/{id}", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
async fn deregister(State(table): State<SharedTable>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    if write(&table).deregister(&id) {
        tracing::info!(instance_id = %id, "instance deregistered");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::UnknownInstance(id))
    }
}

/// A service and how many live instances it has.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceSummary {
    /// Service name.
    pub name: String,
    /// Live instances.
    pub instances: usize,
}

/// `GET /v1/services` answer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceList {
    /// Every service with at least one live instance.
    pub services: Vec<ServiceSummary>,
    /// The index of the instance table this answer shows (also the `X-Registry-Index` header): pass
    /// it back as `index` to wait for the next change.
    pub index: u64,
}

/// `GET /v1/services` query: without `index`, an answer at once; with it, a watch.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WatchQuery {
    /// The `index` of an earlier answer: the answer is held until the instances change (any
    /// registration, deregistration or eviction, of any service), or `wait` ran out, and then
    /// carries the new index (the same one after a timeout). An index other than the current one
    /// is answered at once.
    #[param(value_type = Option<u64>, minimum = 0, maximum = 9223372036854775807_u64)]
    pub index: Option<String>,
    /// How long to hold a watch at most: a whole number of `ms`, `s` or `m` (default `30s`); the
    /// registry holds a watch for `5m` at the longest.
    /// Ignored without `index`.
    #[param(value_type = Option<String>, pattern = "^[0-9]{1,9}(ms|s|m)$", example = "30s")]
    pub wait: Option<String>,
}

/// Lists services with live instances; with `index`, a long poll answered as soon as anything changes.
#[utoipa::path(get, path = "/v1/services", params(WatchQuery),
    responses(
        (status = 200, body = ServiceList,
            headers(("X-Registry-Index" = u64, description = "The index of the instance table this answer shows"))),
        (status = 400, description = "A malformed `index` or `wait`", body = Problem, content_type = "application/problem+json")))]
async fn services(
    State(table): State<SharedTable>,
    query: Result<Query<WatchQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(watch) = query.map_err(|rejection| ApiError::BadQuery(rejection.body_text()))?;
    let wait = watch.wait.as_deref().map(parse_wait).transpose()?.unwrap_or(DEFAULT_WAIT);
    if let Some(index) = watch.index.as_deref().map(parse_index).transpose()? {
        table.changed_since(index, wait).await;
    }
    let (index, services) = {
        let table = read(&table);
        (table.index(), table.services(Instant::now()))
    };
    let services = services.into_iter().map(|(name, instances)| ServiceSummary { name, instances }).collect();
    Ok(([(INDEX_HEADER, index.to_string())], Json(ServiceList { services, index })).into_response())
}

/// The healthy instances of one service (an empty list when it has none).
#[utoipa::path(get, path = "/v1/services/{name}",
    params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", description = "a service name")),
    responses((status = 200, body = ServiceInstances), (status = 400, body = Problem)))]
async fn service(
    State(table): State<SharedTable>,
    Path(name): Path<String>,
) -> Result<Json<ServiceInstances>, ApiError> {
    if !valid_service_name(&name) {
        return Err(ApiError::BadServiceName(name));
    }
    let instances = read(&table).instances(&name, Instant::now());
    Ok(Json(ServiceInstances { name, instances }))
}

/// The registry's OpenAPI description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Agora registry",
        description = "Service registry and discovery. Internal: reached on the registry's own port, never through the gateway."
    ),
    paths(register, heartbeat, deregister, services, service),
    components(schemas(RegisterRequest, Instance, ServiceInstances, ServiceList, ServiceSummary, Problem)),
    modifiers(&InternalApi)
)]
pub struct ApiDoc;

/// The registry's routes.
pub fn router(table: SharedTable) -> Router {
    Router::new()
        .route("/v1/instances", post(register))
        .route("/v1/instances/{id}/heartbeat", put(heartbeat))
        .route("/v1/instances/{id}", delete(deregister))
        .route("/v1/services", get(services))
        .route("/v1/services/{name}", get(service))
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .with_state(table)
}
