//! The auth API (SPEC §3.4, seed 001): `POST /signup`, `POST /login` (HTTP
//! Basic or JSON), `POST /validate`, `GET /.well-known/jwks.json` and
//! `GET /users/{id}`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, SubsecRound, Utc};
use kit::auth::{AuthError, Claims};
use kit::json_body::JsonBody;
use kit::openapi::PublicApi;
use kit::Problem;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;

use crate::domain::{self, Invalid, Secret, ThrottleConfig, Username};
use crate::passwords::Hasher;
use crate::store::{Store, StoreError, User};
use crate::tokens::{Jwk, Jwks, Tokens};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Users and failed logins.
    pub store: Store,
    /// Signing and verification keys.
    pub tokens: Arc<Tokens>,
    /// Password hashing.
    pub hasher: Arc<Hasher>,
    /// Failed-login throttling.
    pub throttle: ThrottleConfig,
}

/// `POST /signup` and JSON `POST /login` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({ "username": "ada", "password": "correct horse battery staple" }))]
pub struct Credentials {
    /// 1–64 characters, not blank, no control characters (stored trimmed); unique case-insensitively.
    #[serde(default)]
    #[schema(schema_with = username_schema, required = true)]
    pub username: String,
    /// 8–256 characters, not one character repeated, not the username, not a common password.
    #[serde(default)]
    #[schema(schema_with = password_schema, required = true)]
    pub password: Secret<String>,
}

/// `username` as signup checks it.
fn username_schema() -> utoipa::openapi::Object {
    kit::openapi::account::username()
}

/// `password` as signup checks it.
fn password_schema() -> utoipa::openapi::Object {
    kit::openapi::account::password()
}

/// A user, as shown (never the password hash).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserResponse {
    /// The user's id (`sub` of their tokens).
    pub id: uuid::Uuid,
    /// The name as the user wrote it.
    pub username: String,
    /// When the user signed up.
    pub created_at: DateTime<Utc>,
}

impl From<&User> for UserResponse {
    fn from(user: &User) -> Self {
        Self { id: user.id, username: user.username.clone(), created_at: user.created_at }
    }
}

/// `POST /login` answer.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// The JWT to send as `Authorization: Bearer …`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"[redacted]")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// The auth service's errors, each mapped to a problem+json response.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A signup broke a rule.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The name is taken.
    #[error("the username is already taken")]
    Taken,
    /// `POST /login` came with neither Basic credentials nor a JSON body.
    #[error("send credentials with HTTP Basic authentication or as a JSON body {{\"username\",\"password\"}}")]
    MissingCredentials,
    /// The body is not the expected JSON.
    #[error("the body is not valid JSON of the form {{\"username\",\"password\"}}: {0}")]
    MalformedBody(String),
    /// Wrong name or password, deliberately without saying which.
    #[error("invalid username or password")]
    BadCredentials,
    /// Too many failed logins for this name or from this address.
    #[error("too many failed logins; try again in {} seconds", .0.as_secs())]
    Throttled(Duration),
    /// A bearer token was refused.
    #[error(transparent)]
    Token(#[from] AuthError),
    /// No user with that id.
    #[error("no user with id {0}")]
    UnknownUser(String),
    /// The database is down, or cannot take this write now.
    #[error(transparent)]
    Unavailable(kit::outage::Unavailable),
    /// Anything else: logged with its cause, answered with a bare 500.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Taken => ApiError::Taken,
            StoreError::Unavailable(unavailable) => ApiError::Unavailable(unavailable),
            other => ApiError::Unexpected(other.into()),
        }
    }
}

const BASIC_CHALLENGE: &str = "Basic realm=\"agora\", charset=\"UTF-8\"";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match &self {
            ApiError::Invalid(e) => Problem::invalid_field(e.field, e.reason.clone()),
            ApiError::Taken => {
                Problem::new(StatusCode::CONFLICT, "username-taken", self.to_string()).with("field", "username")
            }
            ApiError::MissingCredentials | ApiError::BadCredentials => {
                Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", self.to_string())
                    .header(header::WWW_AUTHENTICATE, BASIC_CHALLENGE)
            }
            ApiError::MalformedBody(_) => Problem::bad_request(self.to_string()),
            ApiError::Throttled(wait) => {
                let secs = wait.as_secs().to_string();
                Problem::new(StatusCode::TOO_MANY_REQUESTS, "too-many-failed-logins", self.to_string())
                    .with("retry_after", wait.as_secs())
                    .header(header::RETRY_AFTER, &secs)
            }
            ApiError::Token(e) => e.problem(),
            ApiError::UnknownUser(_) => Problem::not_found(self.to_string()),
            ApiError::Unavailable(unavailable) => unavailable.problem(),
            ApiError::Unexpected(e) => {
                tracing::error!(error = format!("{e:#}"), "request failed");
                Problem::internal()
            }
        };
        problem.into_response()
    }
}

/// The client's address: the last `X-Forwarded-For` entry (the one the
/// gateway appended: the peer it saw), else the TCP peer.
///
/// Earlier entries are the client's own claims and are ignored. Reached
/// directly, not through the gateway, a client could name any address there;
/// per-user throttling does not depend on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIp(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|v| !v.is_empty())
            .and_then(parse_ip);
        let peer = || parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip().to_string());
        Ok(ClientIp(forwarded.or_else(peer).unwrap_or_else(|| "unknown".to_string())))
    }
}

/// An address as written in `X-Forwarded-For` (bare, or with a port).
fn parse_ip(raw: &str) -> Option<String> {
    raw.parse::<std::net::IpAddr>()
        .map(|ip| ip.to_string())
        .or_else(|_| raw.parse::<SocketAddr>().map(|a| a.ip().to_string()))
        .ok()
}

/// Creates a user.
#[utoipa::path(post, path = "/signup", request_body = Credentials,
    responses(
        (status = 201, body = UserResponse, headers(("Location" = String, description = "the new user"))),
        (status = 409, description = "the name is taken (case-insensitively)", body = Problem),
        (status = 422, description = "a bad username or a weak password; `field` names which", body = Problem),
        (status = 503, description = "the database is unavailable", body = Problem)))]
async fn signup(State(state): State<AppState>, JsonBody(creds): JsonBody<Credentials>) -> Result<Response, ApiError> {
    let username = Username::parse(&creds.username)?;
    domain::check_password(creds.password.expose(), &username)?;
    let key = username.key();
    // Cheap pre-check so a taken name does not cost a hash; the unique index decides races.
    if state.store.user_by_key(&key).await?.is_some() {
        return Err(ApiError::Taken);
    }
    let password_hash = state.hasher.hash(creds.password).await.map_err(anyhow::Error::from)?;
    let user = User {
        id: uuid::Uuid::now_v7(),
        username: username.as_str().to_string(),
        password_hash,
        // Microseconds: what PostgreSQL keeps, so the 201 matches every later read.
        created_at: Utc::now().trunc_subsecs(6),
    };
    state.store.create_user(user.clone(), key).await?;
    tracing::info!(user_id = %user.id, "user signed up");
    Ok((StatusCode::CREATED, [(header::LOCATION, format!("/users/{}", user.id))], Json(UserResponse::from(&user)))
        .into_response())
}

/// The credentials of a login: HTTP Basic first, else a JSON body.
fn login_credentials(headers: &HeaderMap, body: &Bytes) -> Result<(String, Secret<String>), ApiError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, encoded)| encoded.trim());
    if let Some(encoded) = basic {
        let decoded = STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or(ApiError::MissingCredentials)?;
        let (user, password) = decoded.split_once(':').ok_or(ApiError::MissingCredentials)?;
        return Ok((user.to_string(), Secret::new(password.to_string())));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::MissingCredentials);
    }
    let creds: Credentials = serde_json::from_slice(body).map_err(|e| {
        // serde's message may quote the input; keep only where it went wrong.
        ApiError::MalformedBody(format!("line {} column {}", e.line(), e.column()))
    })?;
    Ok((creds.username, creds.password))
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Whether `subject` has too many recent failures; how long to wait if so.
async fn throttled(
    store: &Store,
    subject: &str,
    max: u32,
    window: Duration,
    now: i64,
) -> Result<Option<Duration>, StoreError> {
    let since = now.saturating_sub(i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
    let recent = store.recent_failures(subject, since, max).await?;
    Ok(domain::throttled_for(&recent, max, window, now))
}

/// Exchanges credentials (HTTP Basic, or a JSON body) for an access token.
#[utoipa::path(post, path = "/login", request_body(content = Credentials, description = "or HTTP Basic credentials instead"),
    security(("basic" = []), ()),
    responses(
        (status = 200, body = TokenResponse),
        (status = 401, description = "bad credentials (which part is never said)", body = Problem,
            headers(("WWW-Authenticate" = String, description = "the Basic challenge"))),
        (status = 429, description = "too many failed logins, or too many requests; see Retry-After", body = Problem,
            headers(("Retry-After" = u64, description = "seconds to wait"))),
        (status = 503, description = "the database is unavailable", body = Problem)))]
async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<TokenResponse>, ApiError> {
    let (raw_name, password) = login_credentials(&headers, &body)?;
    let key = domain::username_key(&raw_name);
    let user_subject = domain::user_subject(&key);
    let ip_subject = domain::ip_subject(&ip);
    let t = state.throttle;
    let now = now_ms();
    // Throttle before any password is checked: a throttled guess proves nothing.
    let waits = [
        throttled(&state.store, &user_subject, t.max_failures_per_user, t.window, now).await?,
        throttled(&state.store, &ip_subject, t.max_failures_per_ip, t.window, now).await?,
    ];
    if let Some(wait) = waits.into_iter().flatten().max() {
        tracing::warn!(%ip, retry_after_secs = wait.as_secs(), "login throttled");
        return Err(ApiError::Throttled(wait));
    }
    let user = match Username::parse(&raw_name) {
        Ok(_) => state.store.user_by_key(&key).await?,
        Err(_) => None,
    };
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let ok = state.hasher.verify(password, stored).await.map_err(anyhow::Error::from)?;
    let Some(user) = user.filter(|_| ok) else {
        // Its transaction runs detached: a client that hangs up must not cut it short (`kit::db::detached`).
        state.store.record_failure(vec![user_subject, ip_subject], now_ms()).await?;
        tracing::info!(%ip, "login failed");
        return Err(ApiError::BadCredentials);
    };
    state.store.clear_failures(&user_subject).await?;
    let issued = state
        .tokens
        .issue(&user.id.to_string(), &user.username, Utc::now())
        .map_err(|e| anyhow::anyhow!("signing a token failed: {e}"))?;
    tracing::info!(user_id = %user.id, jti = %issued.claims.jti, "login succeeded");
    Ok(Json(TokenResponse {
        access_token: issued.token.into_inner(),
        token_type: "Bearer".into(),
        expires_in: issued.expires_in,
    }))
}

/// Checks a bearer token and returns its claims.
#[utoipa::path(post, path = "/validate", security(("bearer" = [])),
    responses(
        (status = 200, body = Claims),
        (status = 401, description = "missing, malformed, expired, tampered or foreign token", body = Problem)))]
async fn validate(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Claims>, ApiError> {
    let token = kit::auth::bearer(&headers).ok_or(AuthError::Missing)?;
    Ok(Json(state.tokens.verify(token)?))
}

/// The public keys that verify Agora tokens, current first.
#[utoipa::path(get, path = "/.well-known/jwks.json", responses((status = 200, body = Jwks)))]
async fn jwks(State(state): State<AppState>) -> Response {
    ([(header::CACHE_CONTROL, "public, max-age=300")], Json(state.tokens.jwks().clone())).into_response()
}

/// A user's public profile.
#[utoipa::path(get, path = "/users/{id}", params(("id" = String, Path, description = "the user's id")),
    responses(
        (status = 200, body = UserResponse),
        (status = 404, body = Problem),
        (status = 503, description = "the database is unavailable", body = Problem)))]
async fn user(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<UserResponse>, ApiError> {
    let parsed = uuid::Uuid::parse_str(&id).map_err(|_| ApiError::UnknownUser(id.clone()))?;
    let user = state.store.user_by_id(parsed).await?.ok_or(ApiError::UnknownUser(id))?;
    Ok(Json(UserResponse::from(&user)))
}

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

/// The auth service's OpenAPI description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Agora auth",
        description = "Users, logins and EdDSA-signed access tokens."
    ),
    paths(signup, login, validate, jwks, user),
    components(schemas(Credentials, UserResponse, TokenResponse, Claims, Jwks, Jwk, Problem)),
    modifiers(&SecuritySchemes, &PublicApi)
)]
pub struct ApiDoc;

/// The auth routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/signup", post(signup))
        .route("/login", post(login))
        .route("/validate", post(validate))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/users/{id}", get(user))
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_limits_are_the_checked_ones() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let props = &doc["components"]["schemas"]["Credentials"]["properties"];
        assert_eq!(props["username"]["maxLength"], domain::USERNAME_MAX_CHARS);
        assert_eq!(props["password"]["minLength"], domain::PASSWORD_MIN_CHARS);
        assert_eq!(props["password"]["maxLength"], domain::PASSWORD_MAX_CHARS);
        assert_eq!(props["username"]["pattern"], kit::openapi::account::USERNAME_PATTERN);
    }

    #[test]
    fn the_client_ip_is_the_last_forwarded_entry() {
        assert_eq!(parse_ip(" 10.0.0.1"), None);
        assert_eq!(parse_ip("10.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(parse_ip("[::1]:8080").as_deref(), Some("::1"));
        assert_eq!(parse_ip("unknown"), None);
    }

    #[test]
    fn basic_credentials_win_over_the_body_and_bad_ones_are_missing_ones() {
        let mut headers = HeaderMap::new();
        let encoded = STANDARD.encode("alice:pa:ss");
        headers.insert(header::AUTHORIZATION, format!("Basic {encoded}").parse().unwrap());
        let (user, pw) = login_credentials(&headers, &Bytes::from_static(b"{}")).unwrap();
        assert_eq!((user.as_str(), pw.expose().as_str()), ("alice", "pa:ss"));
        headers.insert(header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert!(matches!(login_credentials(&headers, &Bytes::new()), Err(ApiError::MissingCredentials)));
        let err = login_credentials(&HeaderMap::new(), &Bytes::from_static(b"{\"password\": \"hunter2\""))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
