//! RFC 9457 `application/problem+json` errors, for our own errors and for
//! axum's rejections (bad JSON, wrong content type, 404, 405, 413) alike.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::context::RequestContext;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One problem document; services build these from their own error enums.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A stable URI naming the kind of problem (`https://agora.dev/problems/not-found`).
    #[serde(rename = "type")]
    pub kind: String,
    /// A short, human summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong this time, for a human.
    pub detail: String,
    /// The request id, to find the matching log lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Extra members (e.g. `errors` per field, `retry_after`).
    #[serde(flatten, skip_serializing_if = "serde_json::Map::is_empty")]
    #[schema(value_type = Object)]
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// Headers to add to the response (`WWW-Authenticate`, `Retry-After`).
    #[serde(skip)]
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl Problem {
    /// A problem of the given status; `slug` becomes the stable `type`.
    pub fn new(status: StatusCode, slug: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("https://agora.dev/problems/{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            request_id: RequestContext::current().map(|c| c.request_id().to_string()),
            extra: serde_json::Map::new(),
            headers: Vec::new(),
        }
    }

    /// 400 with a detail.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    /// 404 with a detail.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    /// 422 naming the field at fault.
    pub fn invalid_field(field: &str, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", format!("{field}: {detail}"))
            .with("field", field)
            .with("errors", serde_json::json!([{ "field": field, "detail": detail }]))
    }

    /// 500 that says nothing about internals (log the cause where you build it).
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "something went wrong on our side; the request id identifies it in our logs",
        )
    }

    /// 503 for a dependency that is down.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
    }

    /// Overrides the title.
    pub fn titled(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    /// Adds an extension member.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    /// Adds a response header (values that are not valid header text are dropped).
    pub fn header(mut self, name: header::HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }

    /// The status as a `StatusCode`.
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.title, self.detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (self.status_code(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        for (name, value) in self.headers {
            headers.append(name, value);
        }
        response
    }
}

/// Fallback for routes that do not exist: a 404 problem naming the path.
pub async fn not_found(req: Request) -> Problem {
    Problem::not_found(format!("no route for {} {}", req.method(), req.uri().path())).titled("Not Found")
}

/// Middleware: any error response that is not JSON already (axum's text
/// rejections, bare 405s) is rewritten as problem+json, keeping its status and
/// using its text as the detail.
pub async fn problem_for_rejections(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    // Only bare rejections are rewritten: no body type, or axum's plain text.
    // JSON (already a problem or an upstream's answer) and HTML pages are left alone.
    let bare = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|ct| ct.starts_with("text/plain"));
    if !bare {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, 4096).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let (slug, default_detail) = match status {
        StatusCode::NOT_FOUND => ("not-found", format!("no route for {method} {path}")),
        StatusCode::METHOD_NOT_ALLOWED => ("method-not-allowed", format!("{method} is not allowed on {path}")),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload-too-large", "the request body is too large".to_string()),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("unsupported-media-type", "expected a request with Content-Type: application/json".to_string())
        }
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => {
            ("bad-request", "the request is malformed".to_string())
        }
        s if s.is_server_error() => ("internal", "something went wrong on our side".to_string()),
        _ => ("error", status.canonical_reason().unwrap_or("error").to_string()),
    };
    let detail = if text.is_empty() || status.is_server_error() { default_detail } else { text };
    let mut problem = Problem::new(status, slug, detail);
    for name in [header::ALLOW, header::WWW_AUTHENTICATE, header::RETRY_AFTER] {
        if let Some(v) = parts.headers.get(&name) {
            problem.headers.push((name, v.clone()));
        }
    }
    let mut rewritten = problem.into_response();
    *rewritten.status_mut() = status;
    rewritten
}

/// Turns a panic inside a handler into a 500 problem instead of a dropped connection.
pub fn panic_response(_err: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    tracing::error!("handler panicked");
    Problem::internal().into_response()
}
