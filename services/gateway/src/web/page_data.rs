//! What a page asks the services for before it renders: a GET through the gateway's own
//! upstream choice (the instances discovery found), never a service's crate. A page whose
//! service cannot answer renders anyway, with a notice where the content would be.

use serde::de::DeserializeOwned;

use crate::proxy::edge::Session;
use crate::Gateway;

/// Why a page has no data from a service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Missing {
    /// The service has no instance, did not answer, failed, or answered something unreadable.
    #[error("the {service} service is unavailable right now")]
    Unavailable {
        /// The upstream's registry name.
        service: String,
    },
    /// The service answered 4xx: the page asked for something that does not exist (or is refused).
    #[error("{detail}")]
    Refused {
        /// The service's status code.
        status: u16,
        /// The `detail` of its problem+json, or its status text.
        detail: String,
    },
}

impl Missing {
    /// The sentence a page shows in place of the content.
    pub fn notice(&self) -> String {
        match self {
            Missing::Unavailable { service } => {
                format!("The {service} service is unavailable right now. Reload the page in a moment.")
            }
            Missing::Refused { detail, .. } => detail.clone(),
        }
    }
}

/// GETs `path_and_query` from one instance of `service` as the page's user (their token, so
/// answers such as "my vote" are theirs) and reads its JSON as `T`.
pub async fn get<T: DeserializeOwned>(
    gw: &Gateway,
    session: &Session,
    service: &str,
    path_and_query: &str,
) -> Result<T, Missing> {
    get_as(gw, session.user.as_ref().map(|user| user.token.as_str()), service, path_and_query).await
}

/// [`get`] with a bearer `token` of the caller's choosing, or none (the API docs' OpenAPI
/// documents, which belong to no user).
pub async fn get_as<T: DeserializeOwned>(
    gw: &Gateway,
    token: Option<&str>,
    service: &str,
    path_and_query: &str,
) -> Result<T, Missing> {
    let unavailable = || Missing::Unavailable { service: service.to_string() };
    let instance = gw.upstreams.get(service).and_then(|upstream| upstream.pick(None)).ok_or_else(unavailable)?;
    let mut headers = reqwest::header::HeaderMap::new();
    kit::context::inject_current(&mut headers);
    let mut request = gw.side.get(format!("http://{}{path_and_query}", instance.address)).headers(headers);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|err| {
        tracing::warn!(service, path = path_and_query, error = %err, "page data unavailable");
        unavailable()
    })?;
    let status = response.status();
    if status.is_client_error() {
        let problem: serde_json::Value = response.json().await.unwrap_or_default();
        let detail = problem.get("detail").and_then(|d| d.as_str()).map(str::to_string);
        return Err(Missing::Refused {
            status: status.as_u16(),
            detail: detail.unwrap_or_else(|| status.canonical_reason().unwrap_or("refused").to_string()),
        });
    }
    if !status.is_success() {
        tracing::warn!(service, path = path_and_query, status = status.as_u16(), "page data unavailable");
        return Err(unavailable());
    }
    response.json().await.map_err(|err| {
        tracing::warn!(service, path = path_and_query, error = %err, "page data unreadable");
        unavailable()
    })
}
