//! The page templates under `templates/` (minijinja), compiled into the binary (see `build.rs`),
//! and how a page is rendered. Templates link assets with `{{ asset("app.js") }}`, which gives
//! the asset's hashed URL and fails the render for a name that is not under `assets/`.

use std::sync::OnceLock;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use minijinja::{context, Environment, ErrorKind, Value};

use super::files::TEMPLATES;
use crate::proxy::edge::Session;
use crate::web::account::{local_path, next_query};

fn asset(name: &str) -> Result<Value, minijinja::Error> {
    // Safe: a URL made of our own file names, which the escaper would only mangle (`/` → `&#x2f;`).
    super::assets::url(name)
        .map(Value::from_safe_string)
        .ok_or_else(|| minijinja::Error::new(ErrorKind::InvalidOperation, format!("no asset named {name:?}")))
}

/// `2026-12-02T04:30:00Z` → `2 Dec 2026, 04:30 UTC` (the page's script turns it into "5 minutes ago").
fn when(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.with_timezone(&chrono::Utc).format("%-d %b %Y, %H:%M UTC").to_string())
        .unwrap_or_else(|_| rfc3339.to_string())
}

/// What templates may call beyond minijinja's built-ins.
fn add_helpers(env: &mut Environment<'static>) {
    env.add_function("asset", asset);
    env.add_filter("when", when);
}

/// Every template, and the helpers. A template that does not compile is logged and left out,
/// so only its pages fail (the unit tests keep that from shipping).
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    add_helpers(&mut env);
    for &(name, source) in TEMPLATES {
        if let Err(err) = env.add_template(name, source) {
            tracing::error!(template = name, error = %err, "template does not compile");
        }
    }
    env
}

fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(environment)
}

/// Renders template `name`; a failure is logged and answered with a bare 500 page.
pub fn render(name: &str, ctx: minijinja::Value) -> Response {
    match templates().get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => Html(html).into_response(),
        Err(err) => {
            tracing::error!(template = name, error = %err, "page rendering failed");
            (StatusCode::INTERNAL_SERVER_ERROR, Html("<h1>Something went wrong</h1>".to_string())).into_response()
        }
    }
}

/// The logged-in user's name, if any.
pub fn user_name(session: &Session) -> Option<String> {
    session.user.as_ref().map(|u| u.claims.name.clone())
}

/// Renders a page with the session facts every page shows: user, CSRF token for forms, and where
/// logging in returns to (`return_to`, and `account_query` to append to the log-in and sign-up links).
pub fn render_page(name: &str, session: &Session, ctx: minijinja::Value) -> Response {
    let return_to = session.return_to.as_deref().map_or("/", local_path);
    let base = context! {
        user => user_name(session),
        csrf => session.csrf.clone(),
        return_to => return_to,
        // Safe: percent-encoded, so nothing in it is special to HTML.
        account_query => Value::from_safe_string(next_query(return_to)),
    };
    render(name, context! { ..base, ..ctx })
}

/// An HTML error page (for browsers; APIs get problem+json).
pub fn error_page(status: StatusCode, detail: &str) -> Response {
    let mut page = render(
        "error.html",
        context! { status => status.as_u16(), title => status.canonical_reason().unwrap_or("Error"), detail => detail },
    );
    *page.status_mut() = status;
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles_and_renders_with_only_the_session_facts() {
        let mut env = Environment::new();
        add_helpers(&mut env);
        for &(name, source) in TEMPLATES {
            env.add_template(name, source).unwrap_or_else(|e| panic!("{name} does not compile: {e:#}"));
        }
        let minimal = context! { user => None::<String>, csrf => "token" };
        for &(name, _) in TEMPLATES {
            let html = env.get_template(name).and_then(|t| t.render(&minimal));
            html.unwrap_or_else(|e| panic!("{name} does not render: {e:#}"));
        }
    }

    #[test]
    fn every_file_under_templates_is_registered() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let mut on_disk: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        on_disk.sort();
        let registered: Vec<String> = TEMPLATES.iter().map(|(name, _)| name.to_string()).collect();
        assert_eq!(registered, on_disk);
    }

    #[test]
    fn pages_link_assets_by_their_hashed_urls_and_list_the_pages_in_the_navigation() {
        let html = templates()
            .get_template("home.html")
            .and_then(|t| t.render(context! { user => None::<String>, csrf => "t", active => "jokes" }))
            .unwrap();
        for asset in ["style.css", "lib.js", "app.js"] {
            let url = super::super::assets::url(asset).unwrap();
            assert!(html.contains(&format!("\"{url}\"")), "{asset} at {url}: {html}");
        }
        assert!(!html.contains("/static/app.js\""), "the plain URL is for old pages only");
        let nav = &html[html.find("<nav").unwrap()..html.find("</nav>").unwrap()];
        for href in ["/", "/jokes", "/crowdfunding", "/classify", "/media", "/status", "/docs"] {
            assert!(nav.contains(&format!("href=\"{href}\"")), "{href} in {nav}");
        }
        assert_eq!(nav.matches("aria-current=\"page\"").count(), 1, "{nav}");
        assert!(nav.contains("<a href=\"/jokes\" class=\"active\" aria-current=\"page\">Jokes</a>"), "{nav}");
    }

    #[test]
    fn the_crowdfunding_and_classification_pages_are_marked_current_in_the_navigation() {
        for (active, link) in [
            ("crowdfunding", "<a href=\"/crowdfunding\" class=\"active\" aria-current=\"page\">Crowdfunding</a>"),
            ("classify", "<a href=\"/classify\" class=\"active\" aria-current=\"page\">Image classification</a>"),
        ] {
            let html = templates()
                .get_template("home.html")
                .and_then(|t| t.render(context! { user => None::<String>, csrf => "t", active => active }))
                .unwrap();
            let nav = &html[html.find("<nav").unwrap()..html.find("</nav>").unwrap()];
            assert!(nav.contains(link), "{nav}");
            assert_eq!(nav.matches("aria-current=\"page\"").count(), 1, "{nav}");
        }
    }

    async fn page_for(return_to: Option<&str>) -> String {
        let session = Session { user: None, csrf: "t".into(), return_to: return_to.map(str::to_string) };
        let resp = render_page("home.html", &session, context! { active => "home" });
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn the_log_in_and_sign_up_links_carry_the_page_they_are_on() {
        let html = page_for(Some("/jokes?category=science")).await;
        assert!(html.contains("href=\"/account/login?next=%2Fjokes%3Fcategory%3Dscience\""), "{html}");
        assert!(html.contains("href=\"/account/signup?next=%2Fjokes%3Fcategory%3Dscience\""), "{html}");
        for plain in [None, Some("/"), Some("//evil.example"), Some("https://evil.example")] {
            let html = page_for(plain).await;
            assert!(html.contains("href=\"/account/login\""), "{plain:?}: {html}");
            assert!(!html.contains("evil"), "{plain:?}: {html}");
        }
    }

    #[test]
    fn only_a_signed_in_user_has_the_unread_notifications_badge_in_the_navigation() {
        for (user, badge) in [(None, false), (Some("ann"), true)] {
            let html = templates()
                .get_template("home.html")
                .and_then(|t| t.render(context! { user => user, csrf => "t", active => "home" }))
                .unwrap();
            let nav = &html[html.find("<nav").unwrap()..html.find("</nav>").unwrap()];
            assert_eq!(nav.contains("data-notifications"), badge, "{user:?}: {nav}");
            assert_eq!(nav.contains("<span class=\"unread-count\" data-unread hidden></span>"), badge, "{nav}");
        }
    }

    #[test]
    fn times_are_shown_in_utc_and_anything_else_as_it_came() {
        assert_eq!(when("2026-12-02T05:30:00+01:00"), "2 Dec 2026, 04:30 UTC");
        assert_eq!(when("yesterday"), "yesterday");
    }

    #[test]
    fn a_template_naming_an_asset_that_does_not_exist_fails_to_render() {
        let mut env = Environment::new();
        env.add_function("asset", asset);
        env.add_template("t.html", "{{ asset(\"nope.js\") }}").unwrap();
        assert!(env.get_template("t.html").and_then(|t| t.render(())).is_err());
    }
}
