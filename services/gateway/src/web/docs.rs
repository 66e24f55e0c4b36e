//! `GET /docs`: Swagger UI (its assets vendored into the binary) over every public OpenAPI
//! document: the gateway's own (`/openapi/gateway.json`: the status API and the account forms)
//! and every routed service's `/openapi.json`, fetched through the gateway at
//! `/openapi/{service}.json`. `GET /openapi.json` is all of them merged: the whole public API.
//! The registry's document is internal and is never served here.

use std::sync::{Arc, OnceLock};

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use kit::openapi::EdgeApi;
use kit::Problem;
use utoipa::OpenApi;
use utoipa_swagger_ui::{Config, Url};

use crate::Gateway;

/// The name of the gateway's own document among the public ones.
pub const GATEWAY_DOC: &str = "gateway";

/// The gateway's own API: what it serves itself rather than forwards.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Agora gateway",
        description = "What the gateway serves itself: the status of the services behind it, and the web UI's \
            account forms (HTML; the session they open is a cookie, and every form carries the CSRF token \
            of the `agora_csrf` cookie)."
    ),
    paths(
        crate::web::pages::api_status,
        crate::web::account::login_page,
        crate::web::account::login,
        crate::web::account::signup_page,
        crate::web::account::signup,
        crate::web::account::logout
    ),
    components(schemas(
        crate::web::pages::StatusReport,
        crate::proxy::upstreams::ServiceStatus,
        crate::proxy::upstreams::InstanceStatus,
        crate::proxy::upstreams::SubscriptionLag,
        crate::web::account::Credentials,
        crate::web::account::LogoutForm,
        Problem
    )),
    modifiers(&EdgeApi)
)]
pub struct ApiDoc;

/// Every public document: the gateway's, then each routed service's.
pub fn documents() -> Vec<&'static str> {
    std::iter::once(GATEWAY_DOC).chain(crate::proxy::routes::services()).collect()
}

fn config() -> Arc<Config<'static>> {
    static CONFIG: OnceLock<Arc<Config<'static>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let urls: Vec<Url<'static>> = documents()
                .into_iter()
                .map(|s| Url::new(s, Box::leak(format!("/openapi/{s}.json").into_boxed_str())))
                .collect();
            Arc::new(Config::new(urls).try_it_out_enabled(true).display_request_duration(true))
        })
        .clone()
}

/// `GET /docs` → `/docs/`.
pub async fn docs_root() -> Redirect {
    Redirect::permanent("/docs/")
}

/// `GET /docs/` and its assets.
pub async fn docs_file(path: Option<Path<String>>) -> Response {
    let tail = path.map(|Path(p)| p).unwrap_or_default();
    match utoipa_swagger_ui::serve(&tail, config()) {
        Ok(Some(file)) => ([(header::CONTENT_TYPE, file.content_type)], file.bytes.into_owned()).into_response(),
        Ok(None) => Problem::not_found(format!("no docs asset named {tail:?}")).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "swagger ui asset failed");
            Problem::internal().into_response()
        }
    }
}

/// One public document: the gateway's own, or a service's fetched live.
async fn document(gw: &Gateway, name: &str) -> Result<serde_json::Value, Problem> {
    if name == GATEWAY_DOC {
        return serde_json::to_value(ApiDoc::openapi()).map_err(|err| {
            tracing::error!(error = %err, "the gateway's OpenAPI document does not serialise");
            Problem::internal()
        });
    }
    crate::web::page_data::get_as::<serde_json::Value>(gw, None, name, "/openapi.json").await.map_err(|_| {
        Problem::unavailable(format!("{name} is not reachable; its API description is unavailable"))
            .header(header::RETRY_AFTER, "1")
    })
}

/// `GET /openapi/{name}.json`: a public document (the gateway's, or a service's, fetched live).
pub async fn openapi(State(gw): State<Arc<Gateway>>, Path(file): Path<String>) -> Response {
    let Some(name) = file.strip_suffix(".json") else {
        return Problem::not_found("expected /openapi/{name}.json").into_response();
    };
    if !documents().contains(&name) {
        return Problem::not_found(format!("no API document named {name:?}")).into_response();
    }
    match document(&gw, name).await {
        Ok(doc) => Json(doc).into_response(),
        Err(problem) => problem.into_response(),
    }
}

/// `GET /openapi.json`: the whole public API in one document (every public document merged);
/// 503 while a service's part cannot be fetched.
pub async fn merged(State(gw): State<Arc<Gateway>>) -> Response {
    let names = documents();
    let parts = futures::future::join_all(names.iter().map(|name| document(&gw, name))).await;
    let parts: Result<Vec<serde_json::Value>, Problem> = parts.into_iter().collect();
    match parts {
        Ok(parts) => {
            let info = serde_json::json!({
                "title": "Agora",
                "description": "The whole public API of Agora, as served by its gateway.",
                "version": env!("CARGO_PKG_VERSION"),
            });
            Json(kit::openapi::merge(info, &parts)).into_response()
        }
        Err(problem) => problem.into_response(),
    }
}
