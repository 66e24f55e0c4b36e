//! The route table: which path prefix goes to which service, and how its requests are bounded.
//! Prefixes match whole path segments, so `/joke` serves `/joke` and
//! `/joke/categories` but not `/jokes` (the jokes web page).
//!
//! A route is built with const methods, so a table is a `const` and a new kind of route (large
//! uploads, protected downloads, event streams) is a line here, not a change to the proxy:
//! `Route::new("/upload", "media").upload_body_limit().user_for_every_method()`.

use std::time::Duration;

/// Who must be signed in to use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserNeeded {
    /// Anyone may call it.
    Never,
    /// Mutating requests (POST, PUT, PATCH, DELETE) need an authenticated user; reads do not.
    ForWrites,
    /// Every request needs an authenticated user, reads included.
    ForEveryMethod,
}

/// A route's request body limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLimit {
    /// The gateway's (`GATEWAY_BODY_LIMIT_BYTES`).
    Gateway,
    /// Its own, in bytes.
    Bytes(usize),
    /// The upload limit (`MEDIA_MAX_UPLOAD_BYTES`, default 1 GiB), for routes that take large files.
    Uploads,
}

/// One upstream route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The path prefix (also the metrics label of every request it serves).
    pub prefix: &'static str,
    /// The service it forwards to, as named in the registry.
    pub service: &'static str,
    /// How long the upstream gets to answer: until its response's head has come.
    pub timeout: Duration,
    /// How long a response body may go without a byte once its head has come (a live event
    /// stream must send something, a comment at least, this often).
    pub idle_timeout: Duration,
    /// The largest request body forwarded.
    pub body_limit: BodyLimit,
    /// Whether WebSocket upgrades pass through (see `upgrade`); on other routes a request's
    /// `Upgrade` header is ignored, as RFC 9110 §7.8 allows, and it is served as a plain request.
    pub upgrades: bool,
    /// Who must be signed in.
    pub user: UserNeeded,
}

impl Route {
    /// The default time an upstream gets to answer.
    pub const TIMEOUT: Duration = Duration::from_secs(5);
    /// The default time a response body may be silent.
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

    /// `prefix` served by `service`, open to anyone, with the default timeouts and the gateway's
    /// body limit, without upgrades.
    pub const fn new(prefix: &'static str, service: &'static str) -> Self {
        Self {
            prefix,
            service,
            timeout: Self::TIMEOUT,
            idle_timeout: Self::IDLE_TIMEOUT,
            body_limit: BodyLimit::Gateway,
            upgrades: false,
            user: UserNeeded::Never,
        }
    }

    /// With `timeout` for the upstream to answer.
    pub const fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// With `idle_timeout` for a response body's silences.
    pub const fn idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.idle_timeout = idle_timeout;
        self
    }

    /// With its own request body limit, in bytes, instead of the gateway's.
    pub const fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = BodyLimit::Bytes(bytes);
        self
    }

    /// With the gateway's upload limit (`MEDIA_MAX_UPLOAD_BYTES`) instead of its body limit.
    pub const fn upload_body_limit(mut self) -> Self {
        self.body_limit = BodyLimit::Uploads;
        self
    }

    /// Letting WebSocket upgrades through.
    pub const fn upgrades(mut self) -> Self {
        self.upgrades = true;
        self
    }

    /// Its writes need a signed-in user.
    pub const fn user_for_writes(mut self) -> Self {
        self.user = UserNeeded::ForWrites;
        self
    }

    /// Every request needs a signed-in user, reads included.
    pub const fn user_for_every_method(mut self) -> Self {
        self.user = UserNeeded::ForEveryMethod;
        self
    }

    /// Whether a request with `method` needs a signed-in user here.
    pub fn needs_user(&self, method: &http::Method) -> bool {
        match self.user {
            UserNeeded::Never => false,
            UserNeeded::ForWrites => is_mutating(method),
            UserNeeded::ForEveryMethod => true,
        }
    }
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Every upstream route, most specific first.
pub const ROUTES: &[Route] = &[
    Route::new("/joke", "jokes"),
    Route::new("/signup", "auth").timeout(secs(10)),
    Route::new("/login", "auth").timeout(secs(10)),
    Route::new("/validate", "auth"),
    Route::new("/.well-known/jwks.json", "auth"),
    Route::new("/info", "classifier"),
    Route::new("/classifications", "classifier").timeout(secs(30)),
    Route::new("/projects", "projects").timeout(secs(10)).user_for_writes(),
    Route::new("/threads", "projects").timeout(secs(10)).user_for_writes(),
    // Uploads stream through (the body limit is MEDIA_MAX_UPLOAD_BYTES, see `BodyLimit::Uploads`);
    // the answer comes once the whole file is stored, hence the long timeout.
    Route::new("/upload", "media").timeout(secs(30 * 60)).upload_body_limit().user_for_every_method(),
    Route::new("/videos", "media").timeout(secs(10)).user_for_every_method(),
    Route::new("/download", "media").timeout(secs(10)).user_for_every_method(),
    // Whether uploads are converted now (no converter with ffmpeg: why, and how to install it).
    Route::new("/conversion", "media"),
    // Includes the Server-Sent Events of `/notifications/stream`: a keep-alive comment every 15 s
    // keeps it well inside the idle timeout.
    Route::new("/notifications", "notifications").timeout(secs(10)).idle_timeout(secs(60)).user_for_every_method(),
];

/// Whether a method changes state (and so needs a user on routes whose writes need one).
pub fn is_mutating(method: &http::Method) -> bool {
    !matches!(*method, http::Method::GET | http::Method::HEAD | http::Method::OPTIONS)
}

/// The route serving `path` in `table`, if any.
pub fn find_in(table: &'static [Route], path: &str) -> Option<&'static Route> {
    table.iter().find(|r| path.strip_prefix(r.prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
}

/// The route serving `path` in the standard table, if any.
pub fn find(path: &str) -> Option<&'static Route> {
    find_in(ROUTES, path)
}

/// Every service that has at least one route in `table`, once each, in table order.
pub fn services_in(table: &[Route]) -> Vec<&'static str> {
    let mut seen: Vec<&'static str> = Vec::new();
    for r in table {
        if !seen.contains(&r.service) {
            seen.push(r.service);
        }
    }
    seen
}

/// Every service of the standard table.
pub fn services() -> Vec<&'static str> {
    services_in(ROUTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_segments_only() {
        assert_eq!(find("/joke").map(|r| r.service), Some("jokes"));
        assert_eq!(find("/joke/categories").map(|r| r.service), Some("jokes"));
        assert_eq!(find("/jokes"), None);
        assert_eq!(find("/"), None);
    }

    #[test]
    fn a_route_says_which_methods_need_a_user() {
        let (get, post) = (http::Method::GET, http::Method::POST);
        let open = Route::new("/open", "s");
        assert!(!open.needs_user(&get) && !open.needs_user(&post));
        let writes = open.user_for_writes();
        assert!(!writes.needs_user(&get) && writes.needs_user(&post));
        let every = open.user_for_every_method();
        assert!(every.needs_user(&get) && every.needs_user(&post));
    }
}
