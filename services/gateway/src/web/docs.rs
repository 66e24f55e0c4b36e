//! `GET /docs`: Swagger UI (its assets vendored into the binary) over every
//! service's `/openapi.json`, fetched through the gateway at `/openapi/{service}.json`.

use std::sync::{Arc, OnceLock};

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use kit::Problem;
use utoipa_swagger_ui::{Config, Url};

use crate::Gateway;

fn config() -> Arc<Config<'static>> {
    static CONFIG: OnceLock<Arc<Config<'static>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let urls: Vec<Url<'static>> = crate::proxy::routes::services()
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

/// `GET /openapi/{service}.json`: a service's OpenAPI document, fetched live.
pub async fn openapi(State(gw): State<Arc<Gateway>>, Path(file): Path<String>) -> Response {
    let Some(service) = file.strip_suffix(".json") else {
        return Problem::not_found("expected /openapi/{service}.json").into_response();
    };
    if !crate::proxy::routes::services().contains(&service) {
        return Problem::not_found(format!("no service named {service:?}")).into_response();
    }
    match crate::web::page_data::get_as::<serde_json::Value>(&gw, None, service, "/openapi.json").await {
        Ok(doc) => Json(doc).into_response(),
        Err(_) => Problem::unavailable(format!("{service} is not reachable; its API description is unavailable"))
            .into_response(),
    }
}
