//! The web UI's pages (seed 000): home with a card per application and its live status, the
//! jokes, crowdfunding and classification pages, and the status page.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};
use minijinja::context;
use serde::Serialize;

use crate::proxy::edge::Session;
use crate::proxy::upstreams::ServiceStatus;
use crate::web::templates::{error_page, render_page};
use crate::Gateway;

/// One application card on the home page.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct App {
    /// Short id.
    pub name: &'static str,
    /// Card title.
    pub title: &'static str,
    /// One sentence on what it does.
    pub description: &'static str,
    /// Its page; empty while it is not built yet.
    pub href: &'static str,
    /// The service whose status the card shows.
    pub service: &'static str,
}

/// The applications, in the order of the home page.
pub const APPS: &[App] = &[
    App {
        name: "jokes",
        title: "Jokes",
        description: "A random joke from our own corpus, by category. The hello-world of Agora.",
        href: "/jokes",
        service: "jokes",
    },
    App {
        name: "crowdfunding",
        title: "Crowdfunding",
        description: "Propose projects, discuss problems and solutions in threads, vote them up or down.",
        href: "/crowdfunding",
        service: "projects",
    },
    App {
        name: "classification",
        title: "Image classification",
        description: "Classify an image with EfficientNet through an asynchronous job queue and scalable workers.",
        href: "/classify",
        service: "classifier",
    },
    App {
        name: "media",
        title: "Media conversion",
        description: "Upload a video and get its soundtrack as an mp3 when the converter is done.",
        href: "",
        service: "",
    },
    App {
        name: "shop",
        title: "Shop",
        description: "Product pages assembled from pricing, inventory, reviews and recommendations.",
        href: "",
        service: "",
    },
    App {
        name: "drones",
        title: "Drone delivery",
        description: "Schedule a pickup and follow the drone live with a continuously updated ETA.",
        href: "",
        service: "",
    },
];

#[derive(Serialize)]
struct AppCard {
    #[serde(flatten)]
    app: App,
    status: &'static str,
}

/// `GET /`: the home page.
pub async fn home(State(gw): State<Arc<Gateway>>, Extension(session): Extension<Session>) -> Response {
    let apps: Vec<AppCard> = APPS
        .iter()
        .map(|&app| {
            let status = if app.service.is_empty() {
                "unknown"
            } else {
                gw.upstreams.get(app.service).map(|u| u.status().status).unwrap_or("unknown")
            };
            AppCard { app, status }
        })
        .collect();
    render_page("home.html", &session, context! { active => "home", apps => apps })
}

/// `GET /jokes`: the jokes page (categories asked of the jokes service).
pub async fn jokes(State(gw): State<Arc<Gateway>>, Extension(session): Extension<Session>) -> Response {
    let categories: Vec<String> = match gw.side_get("jokes", "/joke/categories").await {
        Some(v) => v.get("categories").and_then(|c| serde_json::from_value(c.clone()).ok()).unwrap_or_default(),
        None => Vec::new(),
    };
    render_page("jokes.html", &session, context! { active => "jokes", categories => categories })
}

/// `GET /classify`: the image-classification page (data comes from the classifier's API).
pub async fn classify(Extension(session): Extension<Session>) -> Response {
    render_page("classify.html", &session, context! { active => "classify" })
}

/// `GET /crowdfunding`: the projects, newest first, and the form to propose one (data from the projects API).
pub async fn crowdfunding(Extension(session): Extension<Session>) -> Response {
    render_page("crowdfunding.html", &session, context! { active => "crowdfunding" })
}

/// `GET /crowdfunding/{project_id}`: one project's problems, solutions and comments, with votes.
pub async fn project(Path(project_id): Path<String>, Extension(session): Extension<Session>) -> Response {
    // The page asks the API for the project itself; only a malformed id is refused here.
    let digits = !project_id.is_empty() && project_id.bytes().all(|b| b.is_ascii_digit());
    match project_id.parse::<i64>() {
        Ok(id) if digits && id > 0 => {
            render_page("project.html", &session, context! { active => "crowdfunding", project_id => id })
        }
        _ => error_page(StatusCode::NOT_FOUND, "A project id is a positive whole number."),
    }
}

/// The JSON of `/api/status`.
#[derive(Serialize)]
pub struct StatusReport {
    /// Every upstream service.
    pub services: Vec<ServiceStatus>,
    /// When this was produced (RFC 3339).
    pub generated_at: String,
}

fn report(gw: &Gateway) -> StatusReport {
    StatusReport {
        services: gw.upstreams.all().map(|u| u.status()).collect(),
        generated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }
}

/// `GET /api/status`: services, instances, health, circuit state, rates.
pub async fn api_status(State(gw): State<Arc<Gateway>>) -> Json<StatusReport> {
    Json(report(&gw))
}

/// `GET /status`: the same, as a page.
pub async fn status(State(gw): State<Arc<Gateway>>, Extension(session): Extension<Session>) -> Response {
    let r = report(&gw);
    render_page(
        "status.html",
        &session,
        context! { active => "status", services => r.services, generated_at => r.generated_at },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::edge::Identity;

    fn visitor() -> Session {
        Session { user: None, csrf: "token".into() }
    }

    fn signed_in(name: &str) -> Session {
        let claims = kit::auth::Claims {
            sub: "u-1".into(),
            name: name.into(),
            iss: "agora".into(),
            aud: "agora".into(),
            iat: 0,
            exp: i64::MAX,
            jti: "j".into(),
        };
        Session { user: Some(Identity { claims, token: "t".into(), via_cookie: true }), csrf: "token".into() }
    }

    async fn html(resp: Response) -> (StatusCode, String) {
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("a page body");
        (status, String::from_utf8(bytes.to_vec()).expect("utf-8 html"))
    }

    #[tokio::test]
    async fn the_crowdfunding_page_offers_the_proposal_form_to_a_signed_in_user_only() {
        let (status, page) = html(crowdfunding(Extension(signed_in("ada"))).await).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("id=\"project-list\"") && page.contains("id=\"propose-form\""), "{page}");
        assert!(page.contains(&crate::web::assets::url("crowdfunding.js").unwrap()));
        let (status, page) = html(crowdfunding(Extension(visitor())).await).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!page.contains("id=\"propose-form\""), "a visitor gets no form");
        assert!(page.contains("href=\"/account/login\"") && page.contains("id=\"propose-login\""));
    }

    #[tokio::test]
    async fn a_project_page_carries_its_id_and_a_malformed_id_is_a_404_page() {
        let (status, page) = html(project(Path("42".into()), Extension(visitor())).await).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("data-project-id=\"42\""), "{page}");
        for bad in ["abc", "0", "-3", "+4", "1.5", "99999999999999999999"] {
            let (status, page) = html(project(Path(bad.into()), Extension(visitor())).await).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{bad}");
            assert!(page.contains("error-page"), "{bad} gets the HTML error page");
        }
    }
}
