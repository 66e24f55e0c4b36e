//! The gateway's own web UI: server-rendered pages, the account forms and the API docs.
//! Templates and assets are registered by directory (`build.rs`).

pub mod account;
pub mod assets;
pub mod crowdfunding;
pub mod docs;
pub mod media;
pub mod page_data;
pub mod pages;
pub mod templates;

/// What `build.rs` found under `templates/` and `assets/`.
mod files {
    include!(concat!(env!("OUT_DIR"), "/web_files.rs"));
}

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use kit::Problem;

/// The fallback handler: a path that is neither a gateway page nor an upstream route
/// (those never reach the router: see [`serve`]).
pub async fn not_found(req: Request) -> Response {
    let wants_html = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if wants_html {
        // A person in a browser gets a page; API clients get problem+json.
        return templates::error_page(StatusCode::NOT_FOUND, "There is no page at this address.");
    }
    Problem::not_found(format!("no route for {} {}", req.method(), req.uri().path()))
        .titled("Not Found")
        .into_response()
}
