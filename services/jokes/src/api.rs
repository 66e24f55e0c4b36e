//! The jokes API (SPEC §3.3): `GET /joke[?category=]` and `GET /joke/categories`.

use axum::extract::Query;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kit::openapi::PublicApi;
use kit::Problem;
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;

use crate::domain::{Corpus, UnknownCategory};

/// `GET /joke` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct JokeQuery {
    /// One of the categories of `GET /joke/categories`; any category when absent.
    pub category: Option<String>,
}

/// A joke, as served.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JokeResponse {
    /// The joke's text.
    pub joke: String,
    /// Its category.
    pub category: String,
}

/// `GET /joke/categories` answer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Categories {
    /// Every category, sorted.
    pub categories: Vec<String>,
}

/// The jokes service's errors.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No such category.
    #[error(transparent)]
    UnknownCategory(#[from] UnknownCategory),
    /// The corpus is empty (a packaging bug).
    #[error("no jokes available")]
    Empty,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::UnknownCategory(e) => Problem::not_found(e.to_string())
                .titled("Unknown category")
                .with("known_categories", e.known.split(", ").collect::<Vec<_>>())
                .into_response(),
            ApiError::Empty => Problem::unavailable("no jokes available").into_response(),
        }
    }
}

/// A random joke, optionally from one category.
#[utoipa::path(get, path = "/joke", params(JokeQuery),
    responses(
        (status = 200, body = JokeResponse),
        (status = 404, description = "unknown category; `known_categories` lists the others", body = Problem)))]
async fn joke(Query(q): Query<JokeQuery>) -> Result<Json<JokeResponse>, ApiError> {
    let category = q.category.as_deref().filter(|c| !c.trim().is_empty());
    let joke = Corpus::bundled().random(category)?.ok_or(ApiError::Empty)?;
    Ok(Json(JokeResponse { joke: joke.joke.clone(), category: joke.category.clone() }))
}

/// The categories jokes can be asked for.
#[utoipa::path(get, path = "/joke/categories", responses((status = 200, body = Categories)))]
async fn categories() -> Json<Categories> {
    Json(Categories { categories: Corpus::bundled().categories().map(str::to_string).collect() })
}

/// The jokes service's OpenAPI description.
#[derive(OpenApi)]
#[openapi(
    info(title = "Agora jokes", description = "Random jokes from our own corpus."),
    paths(joke, categories),
    components(schemas(JokeResponse, Categories, Problem)),
    modifiers(&PublicApi)
)]
pub struct ApiDoc;

/// The jokes routes.
pub fn router() -> Router {
    Router::new()
        .route("/joke", get(joke))
        .route("/joke/categories", get(categories))
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
}
