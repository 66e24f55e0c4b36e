//! Security at the edge, run before every request: identity headers sent by
//! clients are stripped; the user is identified by a bearer token or the web
//! UI's session cookie (cookie-authenticated mutations must carry the CSRF
//! token); every client gets a token bucket (per IP when anonymous, per user
//! when authenticated); a route says which of its requests need a user (its writes, or all).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kit::auth::{bearer, AuthError, Claims};
use kit::ratelimit::Decision;
use kit::Problem;

use crate::proxy::routes;
use crate::Gateway;

/// Cookie holding the session's access token (HttpOnly).
pub const SESSION_COOKIE: &str = "agora_session";
/// Cookie holding the CSRF token (readable by our scripts, double-submitted).
pub const CSRF_COOKIE: &str = "agora_csrf";
/// Header carrying the CSRF token on script-made mutations.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Identity headers the gateway sets after verifying a token (never trusted from clients).
pub const USER_ID: HeaderName = HeaderName::from_static("x-user-id");
/// See [`USER_ID`].
pub const USER_NAME: HeaderName = HeaderName::from_static("x-user-name");

/// Who is calling, as established at the edge.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Verified claims.
    pub claims: Claims,
    /// The token itself (forwarded as a bearer token for services to verify again).
    pub token: String,
    /// Whether it came from the session cookie (then CSRF rules apply).
    pub via_cookie: bool,
}

/// The per-request session facts pages need: the user (if any), the CSRF token, and where
/// logging in from this page returns to.
#[derive(Debug, Clone)]
pub struct Session {
    /// The logged-in user.
    pub user: Option<Identity>,
    /// This browser's CSRF token.
    pub csrf: String,
    /// The page's own path and query for a `GET` (none for a form's answer, which cannot be
    /// fetched again); the log-in page sets it to its `next`. Checked by
    /// [`crate::web::account::local_path`] before it is used.
    pub return_to: Option<String>,
}

/// The far end of a connection, with what the edge derives from it computed once per connection
/// rather than on every request.
#[derive(Debug, Clone)]
pub struct Client {
    /// Its address.
    pub addr: SocketAddr,
    /// Its IP as an `X-Forwarded-For` value.
    pub forwarded_for: HeaderValue,
    /// `ip:<address>`: its rate-limit key while anonymous.
    limit_key: Arc<str>,
}

impl Client {
    /// The client at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        let ip = addr.ip().to_string();
        Self {
            addr,
            forwarded_for: HeaderValue::from_str(&ip).unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            limit_key: format!("ip:{ip}").into(),
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

fn strip_identity_headers(headers: &mut HeaderMap) {
    let spoofable: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-user-") || k.as_str().starts_with("x-auth-") || *k == "x-forwarded-user")
        .cloned()
        .collect();
    for name in spoofable {
        headers.remove(name);
    }
}

async fn identify(gw: &Gateway, headers: &HeaderMap) -> Result<Option<Identity>, AuthError> {
    let (token, via_cookie) = match bearer(headers) {
        Some(token) => (token.to_string(), false),
        None => match cookie(headers, SESSION_COOKIE) {
            Some(token) => (token.to_string(), true),
            None => return Ok(None),
        },
    };
    // Boxed: only requests carrying a token pay for the verifier's (large) future.
    let claims = Box::pin(gw.verifier.verify(&token)).await?;
    Ok(Some(Identity { claims, token, via_cookie }))
}

fn exempt_from_limits(path: &str) -> bool {
    path.starts_with("/static/") || matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// A fresh random CSRF token.
pub fn new_csrf_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// What [`admit`] established about an admitted request.
#[derive(Debug)]
pub struct Admitted {
    /// A CSRF token minted for this browser, to be set as a cookie on the response (pages only).
    pub new_csrf: Option<String>,
}

/// The edge's checks for one request, before it is served: strips spoofable identity headers,
/// identifies the caller, applies the rate limit, requires a user where the route says so and a
/// CSRF token for cookie-authenticated API mutations, then states the identity for upstreams and
/// leaves the [`Session`] in the request's extensions. `route` is the upstream route serving it, if any.
pub async fn admit(
    gw: &Gateway,
    client: &Client,
    route: Option<&'static routes::Route>,
    req: &mut Request,
) -> Result<Admitted, Response> {
    strip_identity_headers(req.headers_mut());
    let identity = identify(gw, req.headers()).await;

    if !exempt_from_limits(req.uri().path()) {
        let user_key;
        let (key, quota) = match &identity {
            Ok(Some(id)) => {
                user_key = format!("user:{}", id.claims.sub);
                (user_key.as_str(), gw.config.user_quota)
            }
            _ => (&*client.limit_key, gw.config.anon_quota),
        };
        if let Decision::Deny { retry_after } = gw.limiter.check(key, quota).await {
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            metrics::counter!("gateway_rate_limited_total").increment(1);
            return Err(Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                format!("too many requests; retry in {secs} s"),
            )
            .titled("Too Many Requests")
            .header(header::RETRY_AFTER, &secs.to_string())
            .into_response());
        }
    }

    let mutating = routes::is_mutating(req.method());
    if let Some(route) = route.filter(|r| r.needs_user(req.method())) {
        match &identity {
            Ok(Some(_)) => {}
            Ok(None) => return Err(AuthError::Missing.into_response()),
            Err(err) => return Err(err.clone().into_response()),
        }
        tracing::debug!(route = route.prefix, "authenticated request");
    }
    let identity = identity.ok().flatten();
    if let Some(id) = identity.as_ref().filter(|id| id.via_cookie && mutating) {
        let sent = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        let expected = cookie(req.headers(), CSRF_COOKIE);
        // Page forms check their own form field; API calls made with the cookie must send the header.
        if route.is_some() && (sent.is_none() || sent != expected) {
            tracing::warn!(user = %id.claims.name, "cookie-authenticated mutation without a valid CSRF token");
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "missing or wrong CSRF token: send the agora_csrf cookie's value in X-CSRF-Token",
            )
            .titled("Forbidden")
            .into_response());
        }
    }
    if let Some(id) = &identity {
        let headers = req.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&id.claims.sub) {
            headers.insert(USER_ID, v);
        }
        if let Ok(v) = HeaderValue::from_str(&id.claims.name) {
            headers.insert(USER_NAME, v);
        }
        if id.via_cookie {
            if let Ok(v) = HeaderValue::from_str(&format!("Bearer {}", id.token)) {
                headers.insert(header::AUTHORIZATION, v);
            }
        }
    }
    if route.is_some() {
        // Proxied: upstreams get the identity in headers; no page reads the session.
        return Ok(Admitted { new_csrf: None });
    }
    let (csrf, new_csrf) = match cookie(req.headers(), CSRF_COOKIE) {
        Some(existing) => (existing.to_string(), None),
        None => {
            let minted = new_csrf_token();
            (minted.clone(), Some(minted))
        }
    };
    let return_to =
        (req.method() == Method::GET).then(|| req.uri().path_and_query().map_or("/", |p| p.as_str()).into());
    req.extensions_mut().insert(Session { user: identity, csrf, return_to });
    Ok(Admitted { new_csrf })
}

/// The middleware in front of the gateway's own pages. Upstream routes never reach it: the
/// connection's front service sends them to `proxy::serve`, which calls [`admit`] itself.
pub async fn edge(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(client): ConnectInfo<Arc<Client>>,
    mut req: Request,
    next: Next,
) -> Response {
    let admitted = match admit(&gw, &client, None, &mut req).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let mut response = next.run(req).await;
    if let Some(csrf) = admitted.new_csrf {
        let secure = if gw.config.secure_cookies { "; Secure" } else { "" };
        if let Ok(v) = HeaderValue::from_str(&format!("{CSRF_COOKIE}={csrf}; Path=/; SameSite=Strict{secure}")) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use axum::body::Body;
    use kit::ratelimit::Quota;
    use kit::test_support::TestIssuer;

    use super::*;
    use crate::Config;

    /// A gateway whose tokens come from `issuer`, its configuration adjusted.
    fn gateway(issuer: &TestIssuer, adjust: impl FnOnce(&mut Config)) -> Gateway {
        let mut config = Config::for_tests("http://127.0.0.1:1".parse().unwrap());
        adjust(&mut config);
        Gateway::unstarted(config, issuer.key_source())
    }

    fn client(last: u8) -> Client {
        Client::new(SocketAddr::from((Ipv4Addr::new(10, 0, 0, last), 40_000)))
    }

    fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Request {
        let mut req = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.body(Body::empty()).unwrap()
    }

    /// The protected route of the standard table.
    fn projects() -> Option<&'static routes::Route> {
        routes::find("/projects")
    }

    /// The status `admit` refuses the request with, or 200 when it admits it.
    async fn status(gw: &Gateway, client: &Client, route: Option<&'static routes::Route>, req: &mut Request) -> u16 {
        match admit(gw, client, route, req).await {
            Ok(_) => 200,
            Err(refused) => refused.status().as_u16(),
        }
    }

    #[tokio::test]
    async fn identity_headers_sent_by_a_client_never_reach_an_upstream() {
        let issuer = TestIssuer::new();
        let gw = gateway(&issuer, |_| {});
        let spoofed =
            [("x-user-id", "admin"), ("x-user-name", "Admin"), ("x-auth-role", "root"), ("x-forwarded-user", "a")];
        let mut req = request("GET", "/projects", &spoofed);
        assert_eq!(status(&gw, &client(1), projects(), &mut req).await, 200);
        for (name, _) in spoofed {
            assert!(req.headers().get(name).is_none(), "{name} was passed on");
        }
        // With a token, the gateway's own statement replaces the client's.
        let bearer = format!("Bearer {}", issuer.token("u-1", "ada"));
        let mut req = request("GET", "/projects", &[("authorization", &bearer), ("x-user-id", "admin")]);
        assert_eq!(status(&gw, &client(1), projects(), &mut req).await, 200);
        assert_eq!(req.headers().get_all(USER_ID).iter().collect::<Vec<_>>(), ["u-1"]);
        assert_eq!(req.headers()[USER_NAME], "ada");
    }

    #[tokio::test]
    async fn a_write_to_a_protected_route_needs_a_valid_token_and_a_read_does_not() {
        let issuer = TestIssuer::new();
        let gw = gateway(&issuer, |_| {});
        let c = client(1);
        assert_eq!(status(&gw, &c, projects(), &mut request("GET", "/projects", &[])).await, 200);
        assert_eq!(status(&gw, &c, projects(), &mut request("POST", "/projects", &[])).await, 401);
        let forged = format!("Bearer {}", TestIssuer::new().token("u-1", "ada"));
        assert_eq!(
            status(&gw, &c, projects(), &mut request("DELETE", "/projects/1", &[("authorization", &forged)])).await,
            401
        );
        let bearer = format!("Bearer {}", issuer.token("u-1", "ada"));
        assert_eq!(
            status(&gw, &c, projects(), &mut request("POST", "/projects", &[("authorization", &bearer)])).await,
            200
        );
        // An unprotected route takes writes from anyone.
        assert_eq!(status(&gw, &c, routes::find("/login"), &mut request("POST", "/login", &[])).await, 200);
    }

    #[tokio::test]
    async fn a_route_for_users_only_needs_a_token_for_reads_too() {
        static PRIVATE: routes::Route = routes::Route::new("/private", "projects").user_for_every_method();
        let issuer = TestIssuer::new();
        let gw = gateway(&issuer, |_| {});
        let c = client(1);
        assert_eq!(status(&gw, &c, Some(&PRIVATE), &mut request("GET", "/private", &[])).await, 401);
        let bearer = format!("Bearer {}", issuer.token("u-1", "ada"));
        let auth = [("authorization", bearer.as_str())];
        assert_eq!(status(&gw, &c, Some(&PRIVATE), &mut request("GET", "/private", &auth)).await, 200);
    }

    #[tokio::test]
    async fn a_cookie_authenticated_api_write_needs_the_csrf_header_matching_its_cookie() {
        let issuer = TestIssuer::new();
        let gw = gateway(&issuer, |_| {});
        let token = issuer.token("u-1", "ada");
        let cookies = format!("{SESSION_COOKIE}={token}; {CSRF_COOKIE}=abc");
        let write = |csrf: Option<&str>| {
            let mut headers = vec![("cookie", cookies.as_str())];
            headers.extend(csrf.map(|value| (CSRF_HEADER, value)));
            request("POST", "/projects", &headers)
        };
        assert_eq!(status(&gw, &client(1), projects(), &mut write(None)).await, 403);
        assert_eq!(status(&gw, &client(1), projects(), &mut write(Some("abd"))).await, 403);
        let mut req = write(Some("abc"));
        assert_eq!(status(&gw, &client(1), projects(), &mut req).await, 200);
        assert_eq!(
            req.headers()[header::AUTHORIZATION],
            format!("Bearer {token}").as_str(),
            "upstreams verify it again"
        );
        // A read needs no CSRF token.
        let mut read = request("GET", "/projects", &[("cookie", cookies.as_str())]);
        assert_eq!(status(&gw, &client(1), projects(), &mut read).await, 200);
    }

    #[tokio::test]
    async fn anonymous_clients_are_limited_per_address_and_users_per_user() {
        let issuer = TestIssuer::new();
        let slow = Quota { burst: 2, per_second: 0.01 };
        let gw = gateway(&issuer, |config| {
            config.anon_quota = slow;
            config.user_quota = slow;
        });
        let joke = routes::find("/joke");
        let (a, b) = (client(1), client(2));
        for _ in 0..2 {
            assert_eq!(status(&gw, &a, joke, &mut request("GET", "/joke", &[])).await, 200);
        }
        let refused = admit(&gw, &a, joke, &mut request("GET", "/joke", &[])).await.err().unwrap();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.headers()[header::RETRY_AFTER].to_str().unwrap().parse::<u64>().unwrap() >= 1);
        assert_eq!(status(&gw, &b, joke, &mut request("GET", "/joke", &[])).await, 200, "another address has its own");
        assert_eq!(status(&gw, &a, None, &mut request("GET", "/healthz", &[])).await, 200, "health is not limited");
        assert_eq!(status(&gw, &a, None, &mut request("GET", "/static/style.css", &[])).await, 200);
        // A user is counted as the user, from any address.
        let bearer = format!("Bearer {}", issuer.token("u-1", "ada"));
        let auth = [("authorization", bearer.as_str())];
        assert_eq!(status(&gw, &a, joke, &mut request("GET", "/joke", &auth)).await, 200, "not the address's bucket");
        assert_eq!(status(&gw, &b, joke, &mut request("GET", "/joke", &auth)).await, 200);
        assert_eq!(status(&gw, &client(3), joke, &mut request("GET", "/joke", &auth)).await, 429);
    }

    #[tokio::test]
    async fn a_page_request_gets_its_session_and_a_csrf_token_when_it_has_none() {
        let issuer = TestIssuer::new();
        let gw = gateway(&issuer, |_| {});
        let mut req = request("GET", "/", &[]);
        let minted = admit(&gw, &client(1), None, &mut req).await.unwrap().new_csrf.unwrap();
        assert_eq!(minted.len(), 32);
        let session = req.extensions().get::<Session>().unwrap();
        assert_eq!((session.csrf.as_str(), session.user.is_none()), (minted.as_str(), true));

        let cookies = format!("{SESSION_COOKIE}={}; {CSRF_COOKIE}=xyz", issuer.token("u-1", "ada"));
        let mut req = request("GET", "/", &[("cookie", cookies.as_str())]);
        assert!(admit(&gw, &client(1), None, &mut req).await.unwrap().new_csrf.is_none(), "it has one");
        let session = req.extensions().get::<Session>().unwrap();
        assert_eq!(session.csrf, "xyz");
        assert_eq!(session.user.as_ref().map(|u| u.claims.name.as_str()), Some("ada"));

        // Requests for upstream routes carry no session: upstreams get headers.
        let mut req = request("GET", "/joke", &[]);
        assert!(admit(&gw, &client(1), routes::find("/joke"), &mut req).await.unwrap().new_csrf.is_none());
        assert!(req.extensions().get::<Session>().is_none());
    }
}
