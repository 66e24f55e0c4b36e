//! The CSS and JS under `assets/`, compiled into the binary (see `build.rs`). Pages link each
//! asset by a URL that carries its content hash (`/static/app.3f2a1c0d9e8b.js`), served as
//! immutable: a browser keeps it for a year and a new build changes the URL. The plain URL
//! (`/static/app.js`) is still served, briefly cached, for pages rendered by an older build.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use kit::Problem;

use super::files::ASSETS;

/// Where assets are served.
pub const PREFIX: &str = "/static/";

/// `Cache-Control` of a hashed URL: its content never changes.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// `Cache-Control` of a plain URL: it shows the next build's file within minutes.
pub const SHORT: &str = "public, max-age=300";

/// The URL pages link `name` (a path under `assets/`) by: its hashed one; `None` if there is no such asset.
pub fn url(name: &str) -> Option<String> {
    ASSETS.iter().find(|(plain, _, _)| *plain == name).map(|(_, hashed, _)| format!("{PREFIX}{hashed}"))
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map_or("", |(_, ext)| ext) {
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// `GET /static/{*file}`: an asset by its hashed name (cached for good) or its plain name (cached briefly).
pub async fn serve(Path(file): Path<String>) -> Response {
    let found = ASSETS.iter().find_map(|&(plain, hashed, body)| {
        if file == hashed {
            Some((plain, body, IMMUTABLE))
        } else if file == plain {
            Some((plain, body, SHORT))
        } else {
            None
        }
    });
    match found {
        Some((name, body, cache)) => {
            ([(header::CONTENT_TYPE, content_type(name)), (header::CACHE_CONTROL, cache)], body).into_response()
        }
        None => Problem::not_found(format!("no asset named {file:?}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    async fn get(file: &str) -> (StatusCode, String, String, Vec<u8>) {
        let resp = serve(Path(file.trim_start_matches(PREFIX).to_string())).await;
        let header = |name| resp.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let (content_type, cache) = (header(header::CONTENT_TYPE), header(header::CACHE_CONTROL));
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec();
        (status, content_type, cache, body)
    }

    #[test]
    fn every_file_under_assets_is_registered_with_a_hash_in_its_name() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let url = url(&name).unwrap_or_else(|| panic!("{name} is not registered"));
            let (stem, ext) = name.split_once('.').unwrap();
            let hash =
                url.strip_prefix(&format!("{PREFIX}{stem}.")).and_then(|rest| rest.strip_suffix(&format!(".{ext}")));
            assert!(hash.is_some_and(|h| h.len() == 12 && h.bytes().all(|b| b.is_ascii_hexdigit())), "{url}");
        }
        assert_eq!(url("no-such.js"), None);
    }

    #[tokio::test]
    async fn a_hashed_url_is_served_immutable_and_the_plain_url_briefly_cached() {
        let hashed = url("crowdfunding.js").unwrap();
        let (status, content_type, cache, body) = get(&hashed).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "text/javascript; charset=utf-8");
        assert_eq!(cache, "public, max-age=31536000, immutable");
        assert_eq!(body, include_bytes!("../../assets/crowdfunding.js"));

        let (status, _, cache, plain_body) = get("/static/crowdfunding.js").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(cache, "public, max-age=300");
        assert_eq!(plain_body, body);
    }

    #[tokio::test]
    async fn a_hash_that_does_not_match_the_content_is_not_found() {
        let (status, content_type, _, _) = get("/static/app.000000000000.js").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(content_type, "application/problem+json");
        let (status, content_type, _, _) = get("/static/style.css").await;
        assert_eq!((status, content_type.as_str()), (StatusCode::OK, "text/css; charset=utf-8"));
    }
}
