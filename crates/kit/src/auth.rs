//! Verification of the JWTs the auth service issues, for the gateway and for
//! every service (defence in depth): signature against the auth service's
//! JWKS (cached, refreshed when an unknown `kid` appears), expiry, issuer and
//! audience. Only EdDSA is accepted: `alg: none` and every symmetric
//! algorithm are refused, whatever the token's header says.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Env, Source};
use crate::discovery::Discovery;
use crate::Problem;

/// The claims of an Agora access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Claims {
    /// The user's id.
    pub sub: String,
    /// The user's name.
    pub name: String,
    /// Who issued it (`AUTH_ISSUER`).
    pub iss: String,
    /// Who it is for (`AUTH_AUDIENCE`).
    pub aud: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
}

/// Why a token was refused (the detail is safe to show the client).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials were sent.
    #[error("authentication required: send Authorization: Bearer <token>")]
    Missing,
    /// The token is not acceptable (malformed, bad signature, expired, wrong issuer or audience, refused algorithm).
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The keys could not be fetched from the auth service.
    #[error("cannot verify tokens right now: {0}")]
    KeysUnavailable(String),
}

impl AuthError {
    /// The 401 (or 503) problem for this error, with `WWW-Authenticate`.
    pub fn problem(&self) -> Problem {
        match self {
            AuthError::KeysUnavailable(_) => Problem::unavailable(self.to_string()),
            AuthError::Missing => Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", self.to_string())
                .header(header::WWW_AUTHENTICATE, "Bearer realm=\"agora\""),
            AuthError::Invalid(_) => Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", self.to_string())
                .header(header::WWW_AUTHENTICATE, "Bearer realm=\"agora\", error=\"invalid_token\""),
        }
    }
}

impl axum::response::IntoResponse for AuthError {
    fn into_response(self) -> axum::response::Response {
        self.problem().into_response()
    }
}

/// Where the verification keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A fixed JWKS URL (`AUTH_JWKS_URL`).
    Url(String),
    /// The `auth` service, found through discovery.
    Discovery(Discovery),
    /// A fixed key set (tests).
    Static(JwkSet),
}

/// What a token must say to be accepted.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Expected `iss` (`AUTH_ISSUER`, default `agora-auth`).
    pub issuer: String,
    /// Expected `aud` (`AUTH_AUDIENCE`, default `agora`).
    pub audience: String,
}

impl AuthConfig {
    /// Reads `AUTH_ISSUER` and `AUTH_AUDIENCE`.
    pub fn from_env<S: Source>(env: &Env<S>) -> Result<Self, ConfigError> {
        Ok(Self {
            issuer: env.string_or("AUTH_ISSUER", "agora-auth"),
            audience: env.string_or("AUTH_AUDIENCE", "agora"),
        })
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { issuer: "agora-auth".into(), audience: "agora".into() }
    }
}

/// Default shortest time between two JWKS fetches triggered by unknown `kid`s
/// (a flood of forged kids must not become a flood of fetches).
pub const MIN_REFRESH: Duration = Duration::from_secs(5);

/// Verifies tokens; share one per process (`Arc`).
pub struct Verifier {
    config: AuthConfig,
    source: KeySource,
    keys: RwLock<HashMap<String, DecodingKey>>,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    min_refresh: Duration,
    http: reqwest::Client,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.config.issuer)
            .field("audience", &self.config.audience)
            .finish()
    }
}

fn decoding_keys(set: &JwkSet) -> HashMap<String, DecodingKey> {
    set.keys
        .iter()
        .filter(|jwk| matches!(&jwk.algorithm, AlgorithmParameters::OctetKeyPair(p) if p.curve == jsonwebtoken::jwk::EllipticCurve::Ed25519))
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            DecodingKey::from_jwk(jwk).ok().map(|key| (kid, key))
        })
        .collect()
}

impl Verifier {
    /// A verifier for `config`, fetching keys from `source`.
    pub fn new(config: AuthConfig, source: KeySource) -> Self {
        let keys = match &source {
            KeySource::Static(set) => decoding_keys(set),
            _ => HashMap::new(),
        };
        let http = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().unwrap_or_default();
        Self {
            config,
            source,
            keys: RwLock::new(keys),
            last_fetch: tokio::sync::Mutex::new(None),
            min_refresh: MIN_REFRESH,
            http,
        }
    }

    /// Changes the shortest time between two refetches (tests use zero).
    pub fn with_min_refresh(mut self, min_refresh: Duration) -> Self {
        self.min_refresh = min_refresh;
        self
    }

    /// The verifier a service configures from its environment: `AUTH_JWKS_URL`
    /// if set, else the `auth` service found through `discovery`.
    pub fn from_env<S: Source>(env: &Env<S>, discovery: Discovery) -> Result<Self, ConfigError> {
        let config = AuthConfig::from_env(env)?;
        let source = match env.url_opt("AUTH_JWKS_URL", &["http", "https"])? {
            Some(url) => KeySource::Url(url.to_string()),
            None => KeySource::Discovery(discovery),
        };
        Ok(Self::new(config, source))
    }

    fn key(&self, kid: &str) -> Option<DecodingKey> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).get(kid).cloned()
    }

    async fn fetch(&self) -> Result<(), AuthError> {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.min_refresh) {
            return Ok(());
        }
        *last = Some(Instant::now());
        let urls: Vec<String> = match &self.source {
            KeySource::Static(_) => return Ok(()),
            KeySource::Url(url) => vec![url.clone()],
            KeySource::Discovery(d) => d
                .endpoints("auth")
                .await
                .map_err(|e| AuthError::KeysUnavailable(e.to_string()))?
                .into_iter()
                .map(|e| format!("{}/.well-known/jwks.json", e.base_url))
                .collect(),
        };
        let mut last_error = "no instance of the auth service is available".to_string();
        for url in urls {
            match self.http.get(&url).send().await.and_then(|r| r.error_for_status()) {
                Ok(resp) => match resp.json::<JwkSet>().await {
                    Ok(set) => {
                        let fresh = decoding_keys(&set);
                        tracing::debug!(keys = fresh.len(), "JWKS refreshed");
                        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = fresh;
                        return Ok(());
                    }
                    Err(e) => last_error = format!("malformed JWKS: {e}"),
                },
                Err(e) => last_error = e.to_string(),
            }
        }
        Err(AuthError::KeysUnavailable(last_error))
    }

    /// Checks a token and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid("malformed token".into()))?;
        if header.alg != Algorithm::EdDSA {
            return Err(AuthError::Invalid(format!("algorithm {:?} is not accepted", header.alg)));
        }
        let kid = header.kid.ok_or_else(|| AuthError::Invalid("the token names no key (kid)".into()))?;
        let key = match self.key(&kid) {
            Some(key) => key,
            None => {
                self.fetch().await?;
                self.key(&kid).ok_or_else(|| AuthError::Invalid("signed by an unknown key".into()))?
            }
        };
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.algorithms = vec![Algorithm::EdDSA];
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &key, &validation).map(|data| data.claims).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            let why = match e.kind() {
                ErrorKind::ExpiredSignature => "the token has expired",
                ErrorKind::InvalidIssuer => "wrong issuer",
                ErrorKind::InvalidAudience => "wrong audience",
                ErrorKind::InvalidSignature => "bad signature",
                ErrorKind::InvalidAlgorithm => "algorithm not accepted",
                _ => "malformed token",
            };
            AuthError::Invalid(why.into())
        })
    }
}

/// The bearer token of an `Authorization` header, if any.
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|t| !t.is_empty())
}

/// The authenticated user of a request; add `Extension(Arc<Verifier>)` to the router.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    /// The user's id (`sub`).
    pub id: String,
    /// The user's name.
    pub name: String,
}

impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let verifier = parts.extensions.get::<Arc<Verifier>>().cloned().ok_or_else(|| {
            tracing::error!("CurrentUser used on a router without a Verifier extension");
            Problem::internal()
        })?;
        let token = bearer(&parts.headers).ok_or(AuthError::Missing).map_err(|e| e.problem())?;
        let claims = verifier.verify(token).await.map_err(|e| e.problem())?;
        Ok(CurrentUser { id: claims.sub, name: claims.name })
    }
}
