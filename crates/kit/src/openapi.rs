//! OpenAPI documents that say exactly what an API answers, written once for every service.
//!
//! A service describes its own operations with `utoipa` (its successes, and the errors its
//! handlers choose) and adds [`PublicApi`] (or [`InternalApi`]) as a modifier, which adds, to every
//! operation, the answers that come from the platform rather than from the handler, so that no
//! service repeats them:
//!
//! - every error is `application/problem+json` with the [`Problem`](crate::Problem) schema;
//! - a JSON body can be malformed (400), too large (413), of another type (415) or of the wrong
//!   shape (422); a parameter can fail to parse (400);
//! - an operation whose security is required answers 401 without valid credentials, and 403 to
//!   a cookie-authenticated call without its CSRF header;
//! - through the gateway, every operation can be rate limited (429, `Retry-After`), find its
//!   service unreachable (502), unavailable or shedding load while its database or queue is down
//!   (503, `Retry-After`), or too slow (504).
//!
//! The security schemes an operation names are [`BEARER`], [`SESSION`] and [`CSRF`]:
//! `security(("bearer" = []), ("session" = [], "csrf" = []))` for a write that needs a user,
//! `security((), ("bearer" = []), ("session" = []))` for a read that a user may make.
//!
//! The document is edited as JSON: utoipa's `SecurityRequirement` does not show which schemes it
//! names, and the same walk serves documents fetched from other services (see [`merge`]).

use serde_json::{json, Map, Value};

/// Security scheme: `Authorization: Bearer <token>`, the token from the auth service's `/login`.
pub const BEARER: &str = "bearer";
/// Security scheme: the web UI's session cookie (`agora_session`), which the gateway turns into a
/// bearer token.
pub const SESSION: &str = "session";
/// Security scheme: the `X-CSRF-Token` header, the value of the `agora_csrf` cookie; a write
/// authenticated by the session cookie needs it.
pub const CSRF: &str = "csrf";

/// A JSON-schema pattern that a text which is not blank matches: a character that
/// `char::is_whitespace` (what `str::trim` removes) is not. Spelled out rather than `\S`,
/// whose meaning differs between regex engines.
pub const NOT_BLANK: &str =
    "[^\t\n\u{b}\u{c}\r \u{85}\u{a0}\u{1680}\u{2000}-\u{200a}\u{2028}\u{2029}\u{202f}\u{205f}\u{3000}]";

/// The schema of a text field that must not be blank and has at most `max_chars` characters
/// (as the services check it: counted in characters as sent, white space at either end included,
/// then stored trimmed).
pub fn text(max_chars: usize, description: &str) -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .min_length(Some(1))
        .max_length(Some(max_chars))
        .pattern(Some(NOT_BLANK))
        .description(Some(description))
        .build()
}

/// The schema of a list of at most `max_items` texts as [`text`] checks them.
pub fn texts(max_items: usize, max_chars: usize, description: &str) -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(text(max_chars, "not blank"))
        .max_items(Some(max_items))
        .description(Some(description))
        .build()
}

/// The fields of an account (the auth service's signup, the gateway's sign-up form), as the
/// auth service checks them.
pub mod account {
    use utoipa::openapi::schema::Type;
    use utoipa::openapi::{KnownFormat, Object, ObjectBuilder, SchemaFormat};

    /// No control character (Unicode category Cc) anywhere, and one character that is neither a
    /// control character nor white space (see [`super::NOT_BLANK`]).
    pub const USERNAME_PATTERN: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*\
        [^\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]\
        [^\\u0000-\\u001f\\u007f-\\u009f]*$";

    /// A username: 1–64 characters as sent, not blank, no control characters (stored trimmed).
    pub fn username() -> Object {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(64))
            .pattern(Some(USERNAME_PATTERN))
            .description(Some(
                "1–64 characters, not blank, no control characters (stored trimmed); unique case-insensitively.",
            ))
            .build()
    }

    /// A new password (what the schema cannot say is in its description).
    pub fn password() -> Object {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Password)))
            .min_length(Some(8))
            .max_length(Some(256))
            // Not one character repeated (`[\s\S]`: any character, line breaks included).
            .pattern(Some("^(?!([\\s\\S])\\1*$)"))
            .description(Some(
                "8–256 characters, not one character repeated, not the username, not one of the most common passwords.",
            ))
            .build()
    }
}

/// The media type of error bodies.
pub const PROBLEM_JSON: &str = crate::problem::PROBLEM_JSON;

/// How clients reach the operations of a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Through the gateway: the public API, rate limited, with the gateway's own errors.
    Gateway,
    /// Served by the gateway itself (its pages and forms): rate limited.
    Edge,
    /// On the service's own port (internal APIs such as the registry's).
    Direct,
}

/// Completes a document with the platform's answers for operations reached as `reach` says
/// (see the module). [`PublicApi`], [`InternalApi`] and [`EdgeApi`] apply it as `utoipa`
/// modifiers: `modifiers(&PublicApi)`.
pub fn complete(doc: &mut Value, reach: Reach) {
    let Some(root) = doc.as_object_mut() else { return };
    add_components(root);
    let Some(paths) = root.get_mut("paths").and_then(Value::as_object_mut) else { return };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        let shared_params = item.get("parameters").and_then(Value::as_array).is_some_and(|p| !p.is_empty());
        for method in ["get", "put", "post", "delete", "patch", "head", "options"] {
            if let Some(op) = item.get_mut(method).and_then(Value::as_object_mut) {
                complete_operation(op, shared_params, reach);
            }
        }
    }
}

fn modify(openapi: &mut utoipa::openapi::OpenApi, reach: Reach) {
    let Ok(mut doc) = serde_json::to_value(&*openapi) else { return };
    complete(&mut doc, reach);
    match serde_json::from_value(doc) {
        Ok(done) => *openapi = done,
        Err(err) => tracing::error!(error = %err, "the completed OpenAPI document does not parse"),
    }
}

/// The modifier of a public document: its operations are reached through the gateway.
#[derive(Debug, Clone, Copy)]
pub struct PublicApi;

impl utoipa::Modify for PublicApi {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        modify(openapi, Reach::Gateway);
    }
}

/// The modifier of an internal document: its operations are reached on the service's own port.
#[derive(Debug, Clone, Copy)]
pub struct InternalApi;

impl utoipa::Modify for InternalApi {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        modify(openapi, Reach::Direct);
    }
}

/// The modifier of the gateway's own document.
#[derive(Debug, Clone, Copy)]
pub struct EdgeApi;

impl utoipa::Modify for EdgeApi {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        modify(openapi, Reach::Edge);
    }
}

fn problem_ref() -> Value {
    json!({ "$ref": "#/components/schemas/Problem" })
}

/// A problem response.
fn problem(description: &str) -> Value {
    json!({ "description": description, "content": { PROBLEM_JSON: { "schema": problem_ref() } } })
}

/// A problem response with a `Retry-After` header.
fn problem_retry(description: &str) -> Value {
    let mut response = problem(description);
    response["headers"] = json!({ "Retry-After": retry_after() });
    response
}

fn retry_after() -> Value {
    json!({
        "description": "Seconds to wait before trying again.",
        "schema": { "type": "integer", "minimum": 0 }
    })
}

/// The `Problem` schema (what `kit::Problem` serialises) and the security schemes.
fn add_components(root: &mut Map<String, Value>) {
    let components = root.entry("components").or_insert_with(|| json!({}));
    let Some(components) = components.as_object_mut() else { return };
    let schemas = components.entry("schemas").or_insert_with(|| json!({}));
    if let Some(schemas) = schemas.as_object_mut() {
        schemas.insert("Problem".into(), problem_schema());
    }
    let schemes = components.entry("securitySchemes").or_insert_with(|| json!({}));
    if let Some(schemes) = schemes.as_object_mut() {
        schemes.insert(
            BEARER.into(),
            json!({
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "An access token from `POST /login`."
            }),
        );
        schemes.insert(
            SESSION.into(),
            json!({
                "type": "apiKey", "in": "cookie", "name": "agora_session",
                "description": "The web UI's session cookie, set by `POST /account/login`."
            }),
        );
        schemes.insert(
            CSRF.into(),
            json!({
                "type": "apiKey", "in": "header", "name": "X-CSRF-Token",
                "description": "The value of the `agora_csrf` cookie; required on writes authenticated by the session cookie."
            }),
        );
    }
}

/// The JSON schema of [`crate::Problem`] (RFC 9457), written out: extension members
/// (`errors`, `field`, `retry_after`, …) are allowed.
pub fn problem_schema() -> Value {
    json!({
        "type": "object",
        "description": "An RFC 9457 problem document.",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": { "type": "string", "description": "A URI naming the kind of problem." },
            "title": { "type": "string", "description": "A short summary of the kind of problem." },
            "status": { "type": "integer", "minimum": 100, "maximum": 599, "description": "The HTTP status code." },
            "detail": { "type": "string", "description": "What went wrong this time." },
            "request_id": { "type": "string", "description": "The request id, to find the matching log lines." },
            "field": { "type": "string", "description": "The request field at fault (validation problems)." },
            "errors": {
                "type": "array",
                "description": "Every field at fault (validation problems).",
                "items": {
                    "type": "object",
                    "properties": { "field": { "type": "string" }, "detail": { "type": "string" } }
                }
            }
        },
        "additionalProperties": true
    })
}

fn security_requirements(op: &Map<String, Value>) -> Vec<Vec<String>> {
    op.get("security")
        .and_then(Value::as_array)
        .map(|reqs| {
            reqs.iter().filter_map(Value::as_object).map(|req| req.keys().cloned().collect::<Vec<_>>()).collect()
        })
        .unwrap_or_default()
}

fn complete_operation(op: &mut Map<String, Value>, shared_params: bool, reach: Reach) {
    let has_body = op.get("requestBody").is_some();
    let has_params = shared_params || op.get("parameters").and_then(Value::as_array).is_some_and(|p| !p.is_empty());
    let security = security_requirements(op);
    let required_auth = !security.is_empty() && security.iter().all(|req| !req.is_empty());
    let csrf = security.iter().any(|req| req.iter().any(|s| s == CSRF));

    let responses = op.entry("responses").or_insert_with(|| json!({}));
    let Some(responses) = responses.as_object_mut() else { return };
    // Errors the handlers document: problem+json, whatever utoipa wrote for `body = Problem`.
    for (status, response) in responses.iter_mut() {
        if !(status.starts_with('4') || status.starts_with('5')) {
            continue;
        }
        if let Some(content) = response.get_mut("content").and_then(Value::as_object_mut) {
            if let Some(json) = content.remove("application/json") {
                content.entry(PROBLEM_JSON).or_insert(json);
            }
        } else if let Some(response) = response.as_object_mut() {
            response.insert("content".into(), json!({ PROBLEM_JSON: { "schema": problem_ref() } }));
        }
    }
    let mut add = |status: &str, response: Value| {
        responses.entry(status).or_insert(response);
    };
    if has_body || has_params {
        add("400", problem("The request is malformed: a parameter that does not parse, or a body that is not JSON."));
    }
    if has_body {
        add("413", problem("The request body is too large."));
        add("415", problem("The request body is not of a type this operation reads."));
        add("422", problem("The request body does not have the expected shape, or breaks a rule; `field` names it."));
    }
    if required_auth {
        add("401", problem("No valid credentials: send `Authorization: Bearer <token>` (see `WWW-Authenticate`)."));
    }
    if csrf {
        add("403", problem("A write authenticated by the session cookie without its `X-CSRF-Token` header."));
    }
    if matches!(reach, Reach::Gateway | Reach::Edge) {
        add("429", problem_retry("Too many requests from this client; retry after `Retry-After` seconds."));
    }
    if reach == Reach::Gateway {
        add("502", problem("The service behind the gateway could not be reached."));
        add(
            "503",
            problem_retry(
                "The service, or a database or queue it needs, is unavailable for now; retry after `Retry-After` seconds.",
            ),
        );
        add("504", problem("The service did not answer in time."));
    }
    // A 503 that a handler documents (a database or queue outage) carries `Retry-After` too.
    if let Some(unavailable) = responses.get_mut("503").and_then(Value::as_object_mut) {
        let headers = unavailable.entry("headers").or_insert_with(|| json!({}));
        if let Some(headers) = headers.as_object_mut() {
            headers.entry("Retry-After").or_insert_with(retry_after);
        }
    }
}

/// One document of the whole public API: `parts` merged in order (paths, schemas, security
/// schemes); a schema name two parts define differently keeps the first part's definition and is
/// logged. `info` is the merged document's.
pub fn merge(info: Value, parts: &[Value]) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    let mut schemes = Map::new();
    for part in parts {
        if let Some(p) = part.get("paths").and_then(Value::as_object) {
            for (path, item) in p {
                paths.entry(path.clone()).or_insert_with(|| item.clone());
            }
        }
        let components = part.get("components");
        for (target, key) in [(&mut schemas, "schemas"), (&mut schemes, "securitySchemes")] {
            if let Some(defs) = components.and_then(|c| c.get(key)).and_then(Value::as_object) {
                for (name, def) in defs {
                    match target.get(name) {
                        None => {
                            target.insert(name.clone(), def.clone());
                        }
                        Some(existing) if existing != def => {
                            tracing::warn!(name, "two OpenAPI documents define {name} differently; keeping the first")
                        }
                        Some(_) => {}
                    }
                }
            }
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": info,
        "paths": paths,
        "components": { "schemas": schemas, "securitySchemes": schemes }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(op: Value) -> Value {
        json!({ "openapi": "3.1.0", "info": { "title": "t", "version": "1" }, "paths": { "/x": { "post": op } } })
    }

    #[test]
    fn a_public_write_gets_every_platform_answer_as_problem_json() {
        let mut d = doc(json!({
            "requestBody": { "content": { "application/json": { "schema": { "type": "object" } } } },
            "security": [{ "bearer": [] }, { "session": [], "csrf": [] }],
            "responses": {
                "201": { "description": "made" },
                "404": { "description": "none", "content": { "application/json": { "schema": problem_ref() } } }
            }
        }));
        complete(&mut d, Reach::Gateway);
        let responses = d["paths"]["/x"]["post"]["responses"].as_object().unwrap();
        let mut statuses: Vec<&str> = responses.keys().map(String::as_str).collect();
        statuses.sort_unstable();
        assert_eq!(statuses, ["201", "400", "401", "403", "404", "413", "415", "422", "429", "502", "503", "504"]);
        for (status, response) in responses.iter().filter(|(s, _)| *s != "201") {
            assert!(response["content"].get(PROBLEM_JSON).is_some(), "{status}");
            assert!(response["content"].get("application/json").is_none(), "{status}");
        }
        assert!(responses["429"]["headers"].get("Retry-After").is_some());
        assert!(responses["503"]["headers"].get("Retry-After").is_some());
        assert_eq!(d["components"]["securitySchemes"]["session"]["in"], "cookie");
    }

    #[test]
    fn an_internal_read_without_parameters_gets_nothing_it_cannot_answer() {
        let mut d = doc(json!({ "security": [{}, { "bearer": [] }], "responses": { "200": { "description": "ok" } } }));
        complete(&mut d, Reach::Direct);
        let statuses: Vec<&String> = d["paths"]["/x"]["post"]["responses"].as_object().unwrap().keys().collect();
        assert_eq!(statuses, ["200"], "optional auth is no 401");
    }

    #[test]
    fn merged_documents_keep_every_path_and_the_first_of_two_schemas() {
        let a = json!({ "paths": { "/a": {} }, "components": { "schemas": { "S": { "type": "string" } } } });
        let b = json!({ "paths": { "/b": {} }, "components": { "schemas": { "S": { "type": "integer" }, "T": {} } } });
        let merged = merge(json!({ "title": "all", "version": "1" }), &[a, b]);
        assert_eq!(merged["paths"].as_object().unwrap().len(), 2);
        assert_eq!(merged["components"]["schemas"]["S"]["type"], "string");
        assert!(merged["components"]["schemas"].get("T").is_some());
    }
}
