//! The route table: which path prefix goes to which service, with its timeout.
//! Prefixes match whole path segments, so `/joke` serves `/joke` and
//! `/joke/categories` but not `/jokes` (the jokes web page).

use std::time::Duration;

/// One upstream route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The path prefix (also the metrics label of every request it serves).
    pub prefix: &'static str,
    /// The service it forwards to, as named in the registry.
    pub service: &'static str,
    /// How long the upstream gets to answer.
    pub timeout: Duration,
    /// Whether mutating requests (POST, PUT, PATCH, DELETE) need an authenticated user.
    pub protected: bool,
}

const fn route(prefix: &'static str, service: &'static str, timeout_secs: u64) -> Route {
    Route { prefix, service, timeout: Duration::from_secs(timeout_secs), protected: false }
}

/// A route whose writes need a logged-in user.
pub const fn protected(prefix: &'static str, service: &'static str, timeout_secs: u64) -> Route {
    Route { prefix, service, timeout: Duration::from_secs(timeout_secs), protected: true }
}

/// Every upstream route, most specific first.
pub const ROUTES: &[Route] = &[
    route("/joke", "jokes", 5),
    route("/signup", "auth", 10),
    route("/login", "auth", 10),
    route("/validate", "auth", 5),
    route("/.well-known/jwks.json", "auth", 5),
    route("/info", "classifier", 5),
    route("/classifications", "classifier", 30),
    protected("/projects", "projects", 10),
    protected("/threads", "projects", 10),
];

/// Whether a method changes state (and so needs a user on protected routes).
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
}
