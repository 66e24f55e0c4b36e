//! Sign-up, log-in and log-out pages. The gateway calls the auth service's API
//! and keeps the returned token in an HttpOnly, SameSite cookie; every form
//! carries the CSRF token, checked against the CSRF cookie (double submit). Log-in and sign-up
//! return to the page the user came from (`?next=`, kept in the form), when that is a path of
//! this site.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use minijinja::context;
use serde::Deserialize;

use kit::Problem;

use crate::proxy::edge::{Client, Session, CSRF_COOKIE, SESSION_COOKIE};
use crate::web::templates::{render_page, user_name};
use crate::Gateway;

/// The log-in and sign-up forms.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = AccountForm, example = json!({
    "username": "ada", "password": "correct horse battery staple",
    "csrf": "0123456789abcdef0123456789abcdef", "next": "/crowdfunding"
}))]
pub struct Credentials {
    /// The username.
    #[schema(schema_with = kit::openapi::account::username)]
    username: String,
    /// The password.
    #[schema(schema_with = kit::openapi::account::password)]
    password: String,
    /// The value of the `agora_csrf` cookie, which the gateway mints (the page's form carries it).
    #[serde(default)]
    #[schema(required = true, pattern = "^[0-9a-f]{32}$")]
    csrf: String,
    /// Where to go once logged in: a path of this site (anything else means `/`).
    #[serde(default)]
    next: String,
}

/// The query of the log-in and sign-up pages.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NextQuery {
    /// Where to go once logged in: a path of this site (anything else means `/`).
    #[serde(default)]
    next: String,
}

/// The log-out form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({ "csrf": "0123456789abcdef0123456789abcdef" }))]
pub struct LogoutForm {
    /// The value of the `agora_csrf` cookie, which the gateway mints (the page's form carries it).
    #[serde(default)]
    #[schema(required = true, pattern = "^[0-9a-f]{32}$")]
    csrf: String,
}

/// `next` if it is a path of this site, else `/`: no scheme or host (`https://evil.example`,
/// `//evil.example`, and `/\evil.example`, which browsers read as `//`), and only visible ASCII,
/// since browsers drop tabs and new lines (`/\t/evil.example`) and a header cannot hold the rest.
/// Links made by this site percent-encode anything else.
pub fn local_path(next: &str) -> &str {
    let local = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && next.len() <= 2048
        && next.bytes().all(|b| b.is_ascii_graphic());
    if local {
        next
    } else {
        "/"
    }
}

/// `?next=…` to append to a link to the log-in or sign-up page, or nothing when `next` is `/`
/// or not a path of this site.
pub fn next_query(next: &str) -> String {
    match local_path(next) {
        "/" => String::new(),
        path => format!("?next={}", url::form_urlencoded::byte_serialize(path.as_bytes()).collect::<String>()),
    }
}

/// The session, with log-in returning to `next`.
fn returning_to(session: &Session, next: &str) -> Session {
    Session { return_to: Some(local_path(next).to_string()), ..session.clone() }
}

fn csrf_ok(session: &Session, sent: &str) -> bool {
    !sent.is_empty() && sent == session.csrf
}

fn forbidden() -> Response {
    crate::web::templates::error_page(
        StatusCode::FORBIDDEN,
        "This form has expired or was not sent by this site. Reload the page and try again.",
    )
}

/// The log-in page (HTML).
#[utoipa::path(get, path = "/account/login", params(NextQuery), tag = "account",
    responses((status = 200, description = "the log-in form", content_type = "text/html", body = String)))]
pub async fn login_page(Extension(session): Extension<Session>, Query(query): Query<NextQuery>) -> Response {
    render_page("login.html", &returning_to(&session, &query.next), context! { active => "login" })
}

/// The sign-up page (HTML).
#[utoipa::path(get, path = "/account/signup", params(NextQuery), tag = "account",
    responses((status = 200, description = "the sign-up form", content_type = "text/html", body = String)))]
pub async fn signup_page(Extension(session): Extension<Session>, Query(query): Query<NextQuery>) -> Response {
    render_page("signup.html", &returning_to(&session, &query.next), context! { active => "signup" })
}

struct AuthCall {
    status: u16,
    body: serde_json::Value,
    retry_after: Option<String>,
}

async fn call_auth(gw: &Gateway, path: &str, client: &Client, creds: &Credentials) -> Option<AuthCall> {
    let instance = gw.upstreams.get("auth")?.pick(None)?;
    let mut headers = reqwest::header::HeaderMap::new();
    kit::context::inject_current(&mut headers);
    headers.insert("x-forwarded-for", client.forwarded_for.clone());
    let resp = gw
        .side
        .post(format!("http://{}{path}", instance.address))
        .headers(headers)
        .json(&serde_json::json!({ "username": creds.username, "password": creds.password }))
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    let retry_after = resp.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = resp.json().await.unwrap_or_default();
    Some(AuthCall { status, body, retry_after })
}

fn session_cookie(gw: &Gateway, token: &str, max_age: i64) -> Option<HeaderValue> {
    let secure = if gw.config.secure_cookies { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .ok()
}

/// The session cookie, and a redirection (303) to `next`.
fn logged_in(gw: &Gateway, call: &AuthCall, next: &str) -> Option<Response> {
    let token = call.body.get("access_token")?.as_str()?;
    let max_age = call.body.get("expires_in").and_then(|v| v.as_i64()).unwrap_or(3600);
    let mut resp = Redirect::to(local_path(next)).into_response();
    resp.headers_mut().append(header::SET_COOKIE, session_cookie(gw, token, max_age)?);
    // A new CSRF token per session: a token seen before log-in is not reused after it.
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{CSRF_COOKIE}={}; Path=/; SameSite=Strict",
        crate::proxy::edge::new_csrf_token()
    )) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    Some(resp)
}

/// The form again, with `message`, keeping the username and where to return to.
fn form_error(template: &str, session: &Session, status: StatusCode, creds: &Credentials, message: &str) -> Response {
    let session = returning_to(session, &creds.next);
    let mut page = render_page(template, &session, context! { error => message, username => creds.username });
    *page.status_mut() = status;
    page
}

fn detail(call: &AuthCall) -> String {
    call.body.get("detail").and_then(|d| d.as_str()).unwrap_or("the request was refused").to_string()
}

/// Logs in: the session cookie is set and the browser goes to `next` (HTML form; the answers
/// that are not a redirection are the form again, with what went wrong).
#[utoipa::path(post, path = "/account/login", tag = "account",
    request_body(content = Credentials, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "logged in: to `next`", headers(
            ("Location" = String, description = "`next`, or `/`"),
            ("Set-Cookie" = String, description = "the session cookie `agora_session` and a new `agora_csrf`"))),
        (status = 401, description = "wrong username or password", content_type = "text/html", body = String),
        (status = 403, description = "the form's `csrf` is not the `agora_csrf` cookie", content_type = "text/html", body = String),
        (status = 429, description = "too many failed logins, or too many requests", content(
            (String = "text/html"), (Problem = "application/problem+json")),
            headers(("Retry-After" = u64, description = "seconds to wait"))),
        (status = 502, description = "the sign-in service failed", content_type = "text/html", body = String),
        (status = 503, description = "the sign-in service is unavailable", content_type = "text/html", body = String)))]
pub async fn login(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(client): ConnectInfo<Arc<Client>>,
    Extension(session): Extension<Session>,
    Form(creds): Form<Credentials>,
) -> Response {
    if !csrf_ok(&session, &creds.csrf) {
        return forbidden();
    }
    let Some(call) = call_auth(&gw, "/login", &client, &creds).await else {
        return form_error(
            "login.html",
            &session,
            StatusCode::SERVICE_UNAVAILABLE,
            &creds,
            "The sign-in service is unavailable. Try again in a moment.",
        );
    };
    match call.status {
        200 => logged_in(&gw, &call, &creds.next).unwrap_or_else(|| {
            crate::web::templates::error_page(StatusCode::BAD_GATEWAY, "The sign-in service answered strangely.")
        }),
        429 => {
            let wait = call.retry_after.clone().unwrap_or_else(|| "a few".into());
            form_error(
                "login.html",
                &session,
                StatusCode::TOO_MANY_REQUESTS,
                &creds,
                &format!("Too many failed attempts. Try again in {wait} seconds."),
            )
        }
        401 | 400 | 422 => {
            form_error("login.html", &session, StatusCode::UNAUTHORIZED, &creds, "Wrong username or password.")
        }
        _ => form_error("login.html", &session, StatusCode::BAD_GATEWAY, &creds, &detail(&call)),
    }
}

/// Signs up, then logs in: the session cookie is set and the browser goes to `next` (HTML form;
/// the answers that are not a redirection are the form again, with what went wrong).
#[utoipa::path(post, path = "/account/signup", tag = "account",
    request_body(content = Credentials, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "signed up: to `next` (logged in), or to the log-in page", headers(
            ("Location" = String, description = "`next`, `/`, or the log-in page"),
            ("Set-Cookie" = String, description = "the session cookie `agora_session` and a new `agora_csrf`"))),
        (status = 403, description = "the form's `csrf` is not the `agora_csrf` cookie", content_type = "text/html", body = String),
        (status = 409, description = "the username is taken", content_type = "text/html", body = String),
        (status = 422, description = "a bad username or a weak password, or a form that lacks a field", content(
            (String = "text/html"), (Problem = "application/problem+json"))),
        (status = 503, description = "the sign-up service is unavailable", content(
            (String = "text/html"), (Problem = "application/problem+json")),
            headers(("Retry-After" = u64, description = "seconds to wait")))))]
pub async fn signup(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(client): ConnectInfo<Arc<Client>>,
    Extension(session): Extension<Session>,
    Form(creds): Form<Credentials>,
) -> Response {
    if !csrf_ok(&session, &creds.csrf) {
        return forbidden();
    }
    let Some(call) = call_auth(&gw, "/signup", &client, &creds).await else {
        return form_error(
            "signup.html",
            &session,
            StatusCode::SERVICE_UNAVAILABLE,
            &creds,
            "The sign-up service is unavailable. Try again in a moment.",
        );
    };
    if call.status != 201 {
        let status = StatusCode::from_u16(call.status).unwrap_or(StatusCode::BAD_GATEWAY);
        return form_error("signup.html", &session, status, &creds, &detail(&call));
    }
    let login_page = || Redirect::to(&format!("/account/login{}", next_query(&creds.next))).into_response();
    match call_auth(&gw, "/login", &client, &creds).await {
        Some(call) if call.status == 200 => logged_in(&gw, &call, &creds.next).unwrap_or_else(login_page),
        _ => login_page(),
    }
}

/// Logs out: forgets the session cookie (HTML form).
#[utoipa::path(post, path = "/account/logout", tag = "account",
    request_body(content = LogoutForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "logged out: to `/`", headers(
            ("Location" = String, description = "`/`"),
            ("Set-Cookie" = String, description = "the session cookie, emptied"))),
        (status = 403, description = "the form's `csrf` is not the `agora_csrf` cookie", content_type = "text/html", body = String)))]
pub async fn logout(
    State(gw): State<Arc<Gateway>>,
    Extension(session): Extension<Session>,
    Form(form): Form<LogoutForm>,
) -> Response {
    if !csrf_ok(&session, &form.csrf) {
        return forbidden();
    }
    tracing::info!(user = user_name(&session).unwrap_or_default(), "logged out");
    let mut resp = Redirect::to("/").into_response();
    if let Some(v) = session_cookie(&gw, "", 0) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::local_path;

    #[test]
    fn log_in_returns_only_to_a_path_of_this_site() {
        for next in ["/", "/crowdfunding/7", "/jokes?category=science", "/crowdfunding?cursor=abc%2B%3D&x=1"] {
            assert_eq!(local_path(next), next);
        }
        for next in [
            "",
            "https://evil.example",
            "http://evil.example/",
            "//evil.example",
            "//evil.example/crowdfunding",
            "/\\evil.example",
            "\\\\evil.example",
            "/crowdfunding\\..\\",
            "javascript:alert(1)",
            "JavaScript:alert(document.cookie)",
            "data:text/html,<script>alert(1)</script>",
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r\nSet-Cookie: a=b",
            "/ /evil.example",
            "/caf\u{e9}",
            "crowdfunding",
            "evil.example",
        ] {
            assert_eq!(local_path(next), "/", "{next:?}");
        }
        assert_eq!(local_path(&format!("/{}", "a".repeat(4096))), "/", "too long for a header");
    }
}
