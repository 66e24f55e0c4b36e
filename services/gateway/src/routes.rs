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
}

const fn route(prefix: &'static str, service: &'static str, timeout_secs: u64) -> Route {
    Route {
        prefix,
        service,
        timeout: Duration::from_secs(timeout_secs),
    }
}

/// Every upstream route, most specific first.
pub const ROUTES: &[Route] = &[route("/joke", "jokes", 5)];

/// The route serving `path`, if any.
pub fn find(path: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| {
        path.strip_prefix(r.prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// Every service that has at least one route, once each, in table order.
pub fn services() -> Vec<&'static str> {
    let mut seen: Vec<&'static str> = Vec::new();
    for r in ROUTES {
        if !seen.contains(&r.service) {
            seen.push(r.service);
        }
    }
    seen
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
