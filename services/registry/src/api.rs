//! The registry's HTTP API (SPEC §3.2): register, heartbeat, deregister, discover.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use kit::json_body::JsonBody;
use kit::registry_client::{Instance, RegisterRequest, ServiceInstances};
use kit::Problem;
use serde::Serialize;
use utoipa::OpenApi;

use crate::domain::{valid_service_name, Registration, Table};

/// Shared state of the handlers: the instance table.
pub type SharedTable = Arc<RwLock<Table>>;

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
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match &self {
            ApiError::Invalid(e) => Problem::invalid_field(e.field, e.reason.clone()),
            ApiError::UnknownInstance(_) => Problem::not_found(self.to_string()),
            ApiError::BadServiceName(_) => Problem::bad_request(self.to_string()),
        };
        problem.into_response()
    }
}

fn read(table: &SharedTable) -> std::sync::RwLockReadGuard<'_, Table> {
    table.read().unwrap_or_else(|p| p.into_inner())
}

fn write(table: &SharedTable) -> std::sync::RwLockWriteGuard<'_, Table> {
    table.write().unwrap_or_else(|p| p.into_inner())
}

/// Registers an instance (or replaces one with the same id).
#[utoipa::path(post, path = "/v1/instances", request_body = RegisterRequest,
    responses((status = 201, body = Instance), (status = 422, body = Problem)))]
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
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServiceSummary {
    /// Service name.
    pub name: String,
    /// Live instances.
    pub instances: usize,
}

/// `GET /v1/services` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServiceList {
    /// Every service with at least one live instance.
    pub services: Vec<ServiceSummary>,
}

/// Lists services with live instances.
#[utoipa::path(get, path = "/v1/services", responses((status = 200, body = ServiceList)))]
async fn services(State(table): State<SharedTable>) -> Json<ServiceList> {
    let services = read(&table)
        .services(Instant::now())
        .into_iter()
        .map(|(name, instances)| ServiceSummary { name, instances })
        .collect();
    Json(ServiceList { services })
}

/// The healthy instances of one service (an empty list when it has none).
#[utoipa::path(get, path = "/v1/services/{name}", params(("name" = String, Path)),
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
    info(title = "Agora registry", description = "Service registry and discovery (SPEC §3.2)."),
    paths(register, heartbeat, deregister, services, service),
    components(schemas(RegisterRequest, Instance, ServiceInstances, ServiceList, ServiceSummary, Problem))
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
