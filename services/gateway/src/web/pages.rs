//! The web UI's pages (seed 000): home with a card per application and its live status, the
//! jokes, crowdfunding and classification pages, and the status page. (Media: [`super::media`].)

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use axum::{Extension, Json};
use minijinja::context;
use serde::{Deserialize, Serialize};

use crate::proxy::edge::Session;
use crate::proxy::upstreams::ServiceStatus;
use crate::web::page_data::{self, Missing};
use crate::web::templates::render_page;
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
        description: "Upload a video and get its soundtrack as an mp3: drop it on the page, follow its \
                      conversion, then play or download the mp3.",
        href: "/media",
        service: "media",
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
    /// Why the application cannot do its work although its service answers (the media card
    /// while no converter can convert).
    unavailable: Option<Conversion>,
}

/// `GET /conversion` of the media service: whether uploads are converted now.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Conversion {
    /// A converter that can convert has reported.
    pub available: bool,
    /// Why not, while not.
    pub reason: Option<String>,
    /// The command that installs ffmpeg.
    pub install: String,
}

/// What the media service says of conversion: `None` while it cannot be asked (no instance,
/// no answer), so that pages say nothing rather than guess.
pub async fn conversion(gw: &Gateway) -> Option<Conversion> {
    page_data::get_as::<Conversion>(gw, None, "media", "/conversion").await.ok()
}

/// `GET /`: the home page.
pub async fn home(State(gw): State<Arc<Gateway>>, Extension(session): Extension<Session>) -> Response {
    let media_unavailable = conversion(&gw).await.filter(|c| !c.available);
    let apps: Vec<AppCard> = APPS
        .iter()
        .map(|&app| {
            let status = if app.service.is_empty() {
                "unknown"
            } else {
                gw.upstreams.get(app.service).map(|u| u.status().status).unwrap_or("unknown")
            };
            let unavailable = if app.name == "media" { media_unavailable.clone() } else { None };
            AppCard { app, status, unavailable }
        })
        .collect();
    render_page("home.html", &session, context! { active => "home", apps => apps })
}

/// The query of `/jokes`: the category chosen in the form.
#[derive(Debug, Deserialize)]
pub struct JokeQuery {
    category: Option<String>,
}

/// `GET /joke/categories`.
#[derive(Debug, Deserialize)]
pub struct Categories {
    categories: Vec<String>,
}

/// `GET /joke`.
#[derive(Debug, Deserialize)]
pub struct Joke {
    joke: String,
}

/// `GET /jokes`: a joke (of the chosen category, if any) and the categories to choose from.
pub async fn jokes(
    State(gw): State<Arc<Gateway>>,
    Query(query): Query<JokeQuery>,
    Extension(session): Extension<Session>,
) -> Response {
    let category = query.category.filter(|c| !c.is_empty());
    let path = match &category {
        Some(c) => format!("/joke?category={}", url::form_urlencoded::byte_serialize(c.as_bytes()).collect::<String>()),
        None => "/joke".to_string(),
    };
    let (categories, joke) = tokio::join!(
        page_data::get::<Categories>(&gw, &session, "jokes", "/joke/categories"),
        page_data::get::<Joke>(&gw, &session, "jokes", &path),
    );
    jokes_page(&session, categories, joke, category)
}

fn jokes_page(
    session: &Session,
    categories: Result<Categories, Missing>,
    joke: Result<Joke, Missing>,
    category: Option<String>,
) -> Response {
    let categories = categories.map(|c| c.categories).unwrap_or_default();
    let (joke, notice) = match joke {
        Ok(joke) => (Some(joke.joke), None),
        Err(missing) => (None, Some(missing.notice())),
    };
    render_page("jokes.html", session, context! { active => "jokes", categories, category, joke, notice })
}

/// `GET /info` of the classifier.
#[derive(Debug, Deserialize, Serialize)]
pub struct ClassifierInfo {
    models: Vec<String>,
    images: Vec<String>,
}

/// `GET /classify`: the form to classify an image, with the classifier's models and sample images.
pub async fn classify(State(gw): State<Arc<Gateway>>, Extension(session): Extension<Session>) -> Response {
    let (info, notice) = match page_data::get::<ClassifierInfo>(&gw, &session, "classifier", "/info").await {
        Ok(info) => (Some(info), None),
        Err(missing) => (None, Some(missing.notice())),
    };
    render_page("classify.html", &session, context! { active => "classify", info, notice })
}

/// The JSON of `/api/status`.
#[derive(Serialize, utoipa::ToSchema)]
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

/// The services behind the gateway: their instances, health, circuit state and rates.
#[utoipa::path(get, path = "/api/status", tag = "status", responses((status = 200, body = StatusReport)))]
pub async fn api_status(State(gw): State<Arc<Gateway>>) -> Json<StatusReport> {
    Json(report(&gw))
}

/// `GET /status`: the same, as a page (with the media service's word on conversion).
pub async fn status(State(gw): State<Arc<Gateway>>, Extension(session): Extension<Session>) -> Response {
    let r = report(&gw);
    let conversion = conversion(&gw).await;
    render_page(
        "status.html",
        &session,
        context! { active => "status", services => r.services, generated_at => r.generated_at, conversion },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn visitor() -> Session {
        Session { user: None, csrf: "token".into(), return_to: None }
    }

    async fn html(resp: Response) -> (StatusCode, String) {
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("a page body");
        (status, String::from_utf8(bytes.to_vec()).expect("utf-8 html"))
    }

    fn categories() -> Result<Categories, Missing> {
        Ok(Categories { categories: vec!["programming".into(), "science".into()] })
    }

    #[tokio::test]
    async fn the_jokes_page_shows_a_joke_of_the_chosen_category() {
        let joke = Ok(Joke { joke: "Why do programmers prefer dark mode? Light attracts bugs.".into() });
        let (status, page) = html(jokes_page(&visitor(), categories(), joke, Some("science".into()))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page
            .contains("aria-live=\"polite\">Why do programmers prefer dark mode? Light attracts bugs.</blockquote>"));
        assert!(page.contains("<option value=\"science\" selected>Science</option>"), "{page}");
        assert!(page.contains("<option value=\"programming\">Programming</option>"), "{page}");
        assert!(!page.contains("needs JavaScript"));
    }

    #[tokio::test]
    async fn a_jokes_service_that_is_down_gives_the_page_with_a_notice() {
        let down = Missing::Unavailable { service: "jokes".into() };
        let (status, page) = html(jokes_page(&visitor(), Err(down.clone()), Err(down), None)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("The jokes service is unavailable right now."), "{page}");
        assert!(page.contains("aria-live=\"polite\"></blockquote>"), "{page}");
    }
}
