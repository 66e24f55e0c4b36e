//! Sign-up, log-in and log-out pages. The gateway calls the auth service's API
//! and keeps the returned token in an HttpOnly, SameSite cookie; every form
//! carries the CSRF token, checked against the CSRF cookie (double submit).

use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use minijinja::context;
use serde::Deserialize;

use crate::proxy::edge::{Client, Session, CSRF_COOKIE, SESSION_COOKIE};
use crate::web::templates::{render_page, user_name};
use crate::Gateway;

/// The log-in and sign-up forms.
#[derive(Debug, Deserialize)]
pub struct Credentials {
    username: String,
    password: String,
    #[serde(default)]
    csrf: String,
}

/// The log-out form.
#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
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

/// `GET /account/login`.
pub async fn login_page(Extension(session): Extension<Session>) -> Response {
    render_page("login.html", &session, context! { active => "login" })
}

/// `GET /account/signup`.
pub async fn signup_page(Extension(session): Extension<Session>) -> Response {
    render_page("signup.html", &session, context! { active => "signup" })
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

fn logged_in(gw: &Gateway, call: &AuthCall) -> Option<Response> {
    let token = call.body.get("access_token")?.as_str()?;
    let max_age = call.body.get("expires_in").and_then(|v| v.as_i64()).unwrap_or(3600);
    let mut resp = Redirect::to("/").into_response();
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

fn form_error(template: &str, session: &Session, status: StatusCode, username: &str, message: &str) -> Response {
    let mut page = render_page(template, session, context! { error => message, username => username });
    *page.status_mut() = status;
    page
}

fn detail(call: &AuthCall) -> String {
    call.body.get("detail").and_then(|d| d.as_str()).unwrap_or("the request was refused").to_string()
}

/// `POST /account/login`.
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
            &creds.username,
            "The sign-in service is unavailable. Try again in a moment.",
        );
    };
    match call.status {
        200 => logged_in(&gw, &call).unwrap_or_else(|| {
            crate::web::templates::error_page(StatusCode::BAD_GATEWAY, "The sign-in service answered strangely.")
        }),
        429 => {
            let wait = call.retry_after.clone().unwrap_or_else(|| "a few".into());
            form_error(
                "login.html",
                &session,
                StatusCode::TOO_MANY_REQUESTS,
                &creds.username,
                &format!("Too many failed attempts. Try again in {wait} seconds."),
            )
        }
        401 | 400 | 422 => {
            form_error("login.html", &session, StatusCode::UNAUTHORIZED, &creds.username, "Wrong username or password.")
        }
        _ => form_error("login.html", &session, StatusCode::BAD_GATEWAY, &creds.username, &detail(&call)),
    }
}

/// `POST /account/signup`: creates the account, then logs in.
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
            &creds.username,
            "The sign-up service is unavailable. Try again in a moment.",
        );
    };
    if call.status != 201 {
        let status = StatusCode::from_u16(call.status).unwrap_or(StatusCode::BAD_GATEWAY);
        return form_error("signup.html", &session, status, &creds.username, &detail(&call));
    }
    match call_auth(&gw, "/login", &client, &creds).await {
        Some(call) if call.status == 200 => {
            logged_in(&gw, &call).unwrap_or_else(|| Redirect::to("/account/login").into_response())
        }
        _ => Redirect::to("/account/login").into_response(),
    }
}

/// `POST /account/logout`: forgets the session cookie.
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
