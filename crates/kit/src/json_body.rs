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

/// An integer field of a JSON body as JSON Schema's `integer` means it: any number without a
/// fractional part, `153.0` as well as `153` (serde's integers refuse the first). For
/// `#[serde(deserialize_with = "kit::json_body::integer")]`; anything else, or a number out of the
/// type's range, is the usual 422.
pub fn integer<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i128>,
{
    let number = <serde_json::Number as serde::Deserialize>::deserialize(deserializer)?;
    whole(&number).and_then(|n| T::try_from(n).ok()).ok_or_else(|| {
        serde::de::Error::invalid_value(serde::de::Unexpected::Other(&number.to_string()), &"an integer in range")
    })
}

/// [`integer`] for an optional field (which then needs `#[serde(default)]` too).
pub fn optional_integer<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i128>,
{
    #[derive(serde::Deserialize)]
    struct Whole<T: TryFrom<i128>>(#[serde(deserialize_with = "integer")] T);
    Ok(<Option<Whole<T>> as serde::Deserialize>::deserialize(deserializer)?.map(|Whole(n)| n))
}

/// The number's value if it has no fractional part (and fits an `i128`, as any `i64` or `u64` does).
fn whole(number: &serde_json::Number) -> Option<i128> {
    if let Some(n) = number.as_i64() {
        return Some(n.into());
    }
    if let Some(n) = number.as_u64() {
        return Some(n.into());
    }
    let f = number.as_f64()?;
    // 2^127: every whole f64 below it converts exactly.
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 1.7e38).then_some(f as i128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Body {
        #[serde(deserialize_with = "integer")]
        id: i64,
        #[serde(default, deserialize_with = "optional_integer")]
        ttl: Option<u8>,
    }

    fn body(json: &str) -> Result<Body, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn integers_are_whole_numbers_however_they_are_written() {
        let b = body(r#"{"id": 153.0, "ttl": 2e1}"#).unwrap();
        assert_eq!((b.id, b.ttl), (153, Some(20)));
        let b = body(r#"{"id": -7}"#).unwrap();
        assert_eq!((b.id, b.ttl), (-7, None));
        assert_eq!(body(r#"{"id": 1, "ttl": null}"#).unwrap().ttl, None);
        for bad in [
            r#"{"id": 1.5}"#,
            r#"{"id": "1"}"#,
            r#"{"id": 1e300}"#,
            r#"{"id": 18446744073709551615}"#,
            r#"{"id": 1, "ttl": 256}"#,
            r#"{"id": 1, "ttl": -1.0}"#,
        ] {
            assert!(body(bad).is_err(), "{bad}");
        }
    }

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
