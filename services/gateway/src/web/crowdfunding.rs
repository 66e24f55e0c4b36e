//! The crowdfunding pages, rendered from the projects service's API: the project list with the
//! proposal form (`/crowdfunding`) and one project's problems, solutions and comments as
//! threads with nested replies (`/crowdfunding/{project_id}`). `crowdfunding.js` adds voting,
//! replying, proposing and live counts on top.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use minijinja::context;
use serde::{Deserialize, Serialize};

use crate::proxy::edge::Session;
use crate::web::page_data::{self, Missing};
use crate::web::templates::{error_page, render_page};
use crate::Gateway;

/// Projects per page, as `crowdfunding.js` asks for more.
const PAGE_SIZE: u32 = 20;

/// Replies nest this deep on the page; deeper ones are listed flat under the deepest.
const MAX_DEPTH: usize = 32;

/// One project as `GET /projects` lists it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ProjectSummary {
    project_id: i64,
    project_name: String,
    #[serde(default)]
    tagline: String,
    #[serde(default)]
    tags: Vec<String>,
    author_name: String,
    /// RFC 3339.
    created_at: String,
}

/// `GET /projects`.
#[derive(Debug, Deserialize)]
pub struct ProjectPage {
    projects: Vec<ProjectSummary>,
    next_cursor: Option<String>,
}

/// `GET /projects/{project_id}`: the project and its threads (or why they are missing).
#[derive(Debug, Deserialize)]
pub struct ProjectDetail {
    #[serde(flatten)]
    project: ProjectSummary,
    threads: Option<Vec<Thread>>,
    #[serde(default)]
    threads_pending: i64,
    threads_problem: Option<serde_json::Value>,
}

/// One thread of a project, as the projects service shows it to the page's user.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Thread {
    thread_id: i64,
    parent_thread_id: Option<i64>,
    /// `PROBLEM`, `SOLUTION` or `COMMENT`.
    thread_type: String,
    message: String,
    up_vote: i64,
    down_vote: i64,
    author_name: String,
    /// RFC 3339.
    created_at: String,
    /// `up`, `down` or `none`: the page's user's vote.
    #[serde(default = "no_vote")]
    my_vote: String,
}

fn no_vote() -> String {
    "none".into()
}

/// A thread with its replies, for the page.
#[derive(Debug, Serialize)]
struct Node {
    #[serde(flatten)]
    thread: Thread,
    replies: Vec<Node>,
}

/// The top-level threads of each section of a project page.
#[derive(Debug, Default, Serialize)]
struct Sections {
    problems: Vec<Node>,
    solutions: Vec<Node>,
    comments: Vec<Node>,
}

/// Nests replies under their parents, in the service's order. A thread whose parent is not
/// in the list goes to its own type's section, as `crowdfunding.js` places it.
fn sections(threads: Vec<Thread>) -> Sections {
    let ids: HashSet<i64> = threads.iter().map(|t| t.thread_id).collect();
    let mut children: HashMap<i64, Vec<Thread>> = HashMap::new();
    let mut roots = Vec::new();
    for thread in threads {
        match thread.parent_thread_id.filter(|p| ids.contains(p) && *p != thread.thread_id) {
            Some(parent) => children.entry(parent).or_default().push(thread),
            None => roots.push(thread),
        }
    }
    let mut out = Sections::default();
    for root in roots {
        let node = nest(root, &mut children, 0);
        match node.thread.thread_type.as_str() {
            "PROBLEM" => out.problems.push(node),
            "SOLUTION" => out.solutions.push(node),
            _ => out.comments.push(node),
        }
    }
    out
}

fn nest(thread: Thread, children: &mut HashMap<i64, Vec<Thread>>, depth: usize) -> Node {
    let kids = children.remove(&thread.thread_id).unwrap_or_default();
    let replies = if depth + 1 < MAX_DEPTH {
        kids.into_iter().map(|kid| nest(kid, children, depth + 1)).collect()
    } else {
        // Past the deepest level every descendant is listed flat, in the order met.
        let mut flat = Vec::new();
        let mut pending: Vec<Thread> = kids.into_iter().rev().collect();
        while let Some(kid) = pending.pop() {
            pending.extend(children.remove(&kid.thread_id).unwrap_or_default().into_iter().rev());
            flat.push(Node { thread: kid, replies: Vec::new() });
        }
        flat
    };
    Node { thread, replies }
}

/// The query of `/crowdfunding`: where the list continues (the no-script "More projects" link).
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    cursor: Option<String>,
}

/// `GET /crowdfunding`: the projects, newest first, and the form to propose one.
pub async fn list(
    State(gw): State<Arc<Gateway>>,
    Query(query): Query<ListQuery>,
    Extension(session): Extension<Session>,
) -> Response {
    let mut path = format!("/projects?limit={PAGE_SIZE}");
    if let Some(cursor) = query.cursor.filter(|c| !c.is_empty()) {
        path.push_str("&cursor=");
        path.extend(url::form_urlencoded::byte_serialize(cursor.as_bytes()));
    }
    list_page(&session, page_data::get(&gw, &session, "projects", &path).await)
}

/// The list page for what the projects service answered.
fn list_page(session: &Session, fetched: Result<ProjectPage, Missing>) -> Response {
    let (projects, next_cursor, notice) = match fetched {
        Ok(page) => (Some(page.projects), page.next_cursor, None),
        Err(missing) => (None, None, Some(missing.notice())),
    };
    // The no-script "More projects" link (minijinja's urlencode filter is a feature we do not build).
    let next_query: Option<String> =
        next_cursor.as_deref().map(|c| url::form_urlencoded::byte_serialize(c.as_bytes()).collect());
    render_page(
        "crowdfunding.html",
        session,
        context! { active => "crowdfunding", projects, next_cursor, next_query, notice },
    )
}

/// A project id is a positive whole number, in plain digits.
fn project_id(raw: &str) -> Option<i64> {
    let digits = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit());
    raw.parse::<i64>().ok().filter(|id| digits && *id > 0)
}

/// `GET /crowdfunding/{project_id}`: one project's problems, solutions and comments, with votes.
pub async fn project(
    State(gw): State<Arc<Gateway>>,
    Path(raw): Path<String>,
    Extension(session): Extension<Session>,
) -> Response {
    let Some(id) = project_id(&raw) else {
        return error_page(StatusCode::NOT_FOUND, "A project id is a positive whole number.");
    };
    project_page(&session, id, page_data::get(&gw, &session, "projects", &format!("/projects/{id}")).await)
}

/// The project page for what the projects service answered.
fn project_page(session: &Session, id: i64, fetched: Result<ProjectDetail, Missing>) -> Response {
    let detail = match fetched {
        Ok(detail) => detail,
        Err(Missing::Refused { status: 404, .. }) => {
            return error_page(StatusCode::NOT_FOUND, &format!("There is no project {id}."));
        }
        Err(missing) => {
            let notice = missing.notice();
            return render_page(
                "project.html",
                session,
                context! { active => "crowdfunding", project_id => id, notice },
            );
        }
    };
    let threads_notice = match &detail.threads {
        None => {
            let why = detail.threads_problem.as_ref().and_then(|p| p.get("detail").or(p.get("title")));
            let why = why.and_then(|w| w.as_str()).map(|w| format!(" ({w})")).unwrap_or_default();
            Some(format!(
                "Threads are unavailable right now{why}. The problems, solutions and votes will appear here as soon as they are back."
            ))
        }
        Some(_) if detail.threads_pending > 0 => Some(format!(
            "This proposal's {} still being created; they will appear here in a moment.",
            if detail.threads_pending == 1 {
                "1 problem or solution is".to_string()
            } else {
                format!("{} problems and solutions are", detail.threads_pending)
            }
        )),
        Some(_) => None,
    };
    let threads_known = detail.threads.is_some();
    let sections = sections(detail.threads.unwrap_or_default());
    render_page(
        "project.html",
        session,
        context! {
            active => "crowdfunding",
            project_id => id,
            project => detail.project,
            threads_known,
            threads_notice,
            sections,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::edge::Identity;

    fn visitor() -> Session {
        Session { user: None, csrf: "token".into(), return_to: None }
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
        Session {
            user: Some(Identity { claims, token: "t".into(), via_cookie: true }),
            csrf: "token".into(),
            return_to: None,
        }
    }

    async fn html(resp: Response) -> (StatusCode, String) {
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("a page body");
        (status, String::from_utf8(bytes.to_vec()).expect("utf-8 html"))
    }

    fn unavailable() -> Missing {
        Missing::Unavailable { service: "projects".into() }
    }

    fn popee() -> ProjectSummary {
        ProjectSummary {
            project_id: 7,
            project_name: "Popee the Performer".into(),
            tagline: "an apprentice clown in Wolf Circus".into(),
            tags: vec!["clown".into(), "circus".into()],
            author_name: "kedamono".into(),
            created_at: "2026-12-02T04:30:00Z".into(),
        }
    }

    fn thread(id: i64, parent: Option<i64>, kind: &str, message: &str) -> Thread {
        Thread {
            thread_id: id,
            parent_thread_id: parent,
            thread_type: kind.into(),
            message: message.into(),
            up_vote: id,
            down_vote: 0,
            author_name: "ada".into(),
            created_at: "2026-12-02T04:31:00Z".into(),
            my_vote: "none".into(),
        }
    }

    #[tokio::test]
    async fn the_crowdfunding_page_offers_the_proposal_form_to_a_signed_in_user_only() {
        let (status, page) = html(list_page(&signed_in("ada"), Err(unavailable()))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("id=\"project-list\"") && page.contains("id=\"propose-form\""), "{page}");
        assert!(page.contains(&crate::web::assets::url("crowdfunding.js").unwrap()));
        let (status, page) = html(list_page(&visitor(), Err(unavailable()))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!page.contains("id=\"propose-form\""), "a visitor gets no form");
        assert!(page.contains("href=\"/account/login\"") && page.contains("id=\"propose-login\""));
    }

    #[tokio::test]
    async fn the_list_shows_each_project_and_a_link_to_the_next_page() {
        let page = ProjectPage { projects: vec![popee()], next_cursor: Some("abc+=".into()) };
        let (status, page) = html(list_page(&visitor(), Ok(page))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("<a href=\"/crowdfunding/7\">Popee the Performer</a>"), "{page}");
        assert!(page.contains("an apprentice clown in Wolf Circus") && page.contains("<li class=\"tag\">circus</li>"));
        assert!(page.contains("href=\"/crowdfunding?cursor=abc%2B%3D\""), "{page}");
        assert!(!page.contains("needs JavaScript"));
        let (_, empty) = html(list_page(&visitor(), Ok(ProjectPage { projects: vec![], next_cursor: None }))).await;
        assert!(
            empty.contains("No projects yet.") && !empty.contains("id=\"list-empty\" class=\"empty-state\" hidden")
        );
    }

    #[tokio::test]
    async fn a_list_the_service_cannot_give_is_a_notice_not_an_error() {
        let (status, page) = html(list_page(&visitor(), Err(unavailable()))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("The projects service is unavailable right now."), "{page}");
    }

    #[tokio::test]
    async fn a_project_page_carries_its_id_and_a_malformed_id_is_a_404_page() {
        let (status, page) = html(project_page(&visitor(), 42, Err(unavailable()))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("data-project-id=\"42\""), "{page}");
        assert!(page.contains("The projects service is unavailable right now."), "{page}");
        for bad in ["abc", "0", "-3", "+4", "1.5", "99999999999999999999"] {
            assert_eq!(project_id(bad), None, "{bad}");
        }
        assert_eq!(project_id("42"), Some(42));
        let missing = Missing::Refused { status: 404, detail: "no project 42".into() };
        let (status, page) = html(project_page(&visitor(), 42, Err(missing))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(page.contains("error-page") && page.contains("There is no project 42."), "{page}");
    }

    #[tokio::test]
    async fn a_project_page_shows_its_threads_with_replies_nested_under_their_parents() {
        let threads = vec![
            thread(1, None, "PROBLEM", "short temper"),
            thread(2, None, "SOLUTION", "play the drums"),
            thread(3, Some(1), "COMMENT", "he is working on it"),
            thread(4, Some(99), "COMMENT", "an orphan"),
        ];
        let detail =
            ProjectDetail { project: popee(), threads: Some(threads), threads_pending: 0, threads_problem: None };
        let (status, page) = html(project_page(&signed_in("ada"), 7, Ok(detail))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("<h1 id=\"project-name\">Popee the Performer</h1>"), "{page}");
        let problems = &page[page.find("id=\"problems\"").unwrap()..page.find("id=\"solutions\"").unwrap()];
        assert!(problems.contains("short temper") && problems.contains("he is working on it"), "{problems}");
        assert!(problems.find("short temper") < problems.find("class=\"replies\""));
        assert!(page.contains("id=\"thread-4\""), "a reply whose parent is gone is still shown");
        assert!(page.contains("<span class=\"count-pill\" id=\"problems-count\">1</span>"), "{page}");
        assert!(page.contains("<span class=\"count-pill\" id=\"comments-count\">1</span>"), "{page}");
        assert!(page.contains("aria-controls=\"reply-host-1\""), "a signed-in user can reply");
    }

    #[test]
    fn replies_deeper_than_the_page_nests_are_listed_flat_under_the_deepest() {
        let mut threads = vec![thread(1, None, "COMMENT", "root")];
        threads.extend((2..=100).map(|id| thread(id, Some(id - 1), "COMMENT", "deeper")));
        let out = sections(threads);
        let mut node = &out.comments[0];
        let mut depth = 0;
        while node.replies.len() == 1 {
            node = &node.replies[0];
            depth += 1;
        }
        assert_eq!(depth, MAX_DEPTH - 1);
        assert_eq!(node.replies.len(), 100 - MAX_DEPTH);
    }
}
