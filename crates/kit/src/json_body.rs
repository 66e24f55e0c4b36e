//! The JSON request body of the APIs, with one compatibility rule: besides `application/json`
//! (and `application/*+json`), a body sent with no Content-Type, or with curl's default
//! `application/x-www-form-urlencoded` (`curl -d '{…}'`), is read as JSON when it parses as
//! JSON. Any other type is 415, as is such a body that is not JSON. The API documents list only
//! `application/json`. Session cookies are no way around the gateway's CSRF check: it does not
//! look at the body's type.

use axum::extract::rejection::{JsonRejection, MissingJsonContentType};
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue};
use axum::Json;
use serde::de::DeserializeOwned;

/// A JSON request body, extracted like [`axum::Json`] (same rejections: 400 for malformed JSON,
/// 422 for JSON of the wrong shape, 415 for another type, which `kit::problem` turns into
/// problem+json) but with the compatibility rule of this module.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonBody<T>(pub T);

/// How the request's Content-Type says to read its body.
#[derive(Debug, PartialEq, Eq)]
enum Declared {
    /// `application/json` or `application/*+json`.
    Json,
    /// None, or curl's default form type: JSON if it parses as JSON.
    Maybe,
    /// Anything else.
    Other,
}

fn declared(content_type: Option<&HeaderValue>) -> Declared {
    let Some(value) = content_type else {
        return Declared::Maybe;
    };
    let Ok(value) = value.to_str() else {
        return Declared::Other;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match essence.split_once('/') {
        Some(("application", "json")) => Declared::Json,
        Some(("application", sub)) if sub.ends_with("+json") => Declared::Json,
        Some(("application", "x-www-form-urlencoded")) => Declared::Maybe,
        _ => Declared::Other,
    }
}

fn unsupported() -> JsonRejection {
    JsonRejection::MissingJsonContentType(MissingJsonContentType::default())
}

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = JsonRejection;

    async fn from_request(mut req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match declared(req.headers().get(header::CONTENT_TYPE)) {
            Declared::Json => Json::<T>::from_request(req, state).await.map(|Json(value)| JsonBody(value)),
            Declared::Other => Err(unsupported()),
            Declared::Maybe => {
                req.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                match Json::<T>::from_request(req, state).await {
                    Ok(Json(value)) => Ok(JsonBody(value)),
                    // Not JSON: a real form, or nothing; refused as it was before the rule.
                    Err(JsonRejection::JsonSyntaxError(_)) => Err(unsupported()),
                    Err(other) => Err(other),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(value: &'static str) -> Declared {
        declared(Some(&HeaderValue::from_static(value)))
    }

    #[test]
    fn json_types_are_json_and_curl_s_form_type_or_none_may_be() {
        assert_eq!(of("application/json"), Declared::Json);
        assert_eq!(of("Application/JSON; charset=utf-8"), Declared::Json);
        assert_eq!(of("application/merge-patch+json"), Declared::Json);
        assert_eq!(declared(None), Declared::Maybe);
        assert_eq!(of("application/x-www-form-urlencoded"), Declared::Maybe);
        assert_eq!(of("application/x-www-form-urlencoded; charset=utf-8"), Declared::Maybe);
        for other in ["text/plain", "text/json", "multipart/form-data; boundary=x", "application/xml", "json", ""] {
            assert_eq!(of(other), Declared::Other, "{other}");
        }
    }
}
