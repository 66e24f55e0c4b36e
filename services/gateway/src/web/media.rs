//! The media page (`/media`, issue 19), rendered from the media service's API: a signed-in
//! user's videos with their state, a player and a download link for each mp3, and the upload
//! form; a visitor is asked to log in (and comes back here). `media.js` adds drag-and-drop
//! uploads with their progress, follows conversions and deletes videos.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use minijinja::context;
use serde::{Deserialize, Serialize};

use crate::proxy::edge::Session;
use crate::web::page_data::{self, Missing};
use crate::web::pages::{conversion, Conversion};
use crate::web::templates::render_page;
use crate::Gateway;

/// Videos shown on the page: the newest.
const PAGE_SIZE: u32 = 50;

/// One video as `GET /videos` lists it (the fields the page shows).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Video {
    video_id: String,
    file_name: String,
    /// `queued`, `converting`, `done` or `failed`.
    status: String,
    progress: u8,
    duration_ms: Option<u64>,
    video_size: u64,
    mp3_id: Option<String>,
    mp3_size: Option<u64>,
    error: Option<String>,
    /// RFC 3339.
    created_at: String,
}

/// `GET /videos`.
#[derive(Debug, Deserialize)]
pub struct VideoPage {
    videos: Vec<Video>,
    next_cursor: Option<String>,
}

/// A video with what the page writes of it.
#[derive(Debug, Serialize)]
struct VideoRow {
    #[serde(flatten)]
    video: Video,
    /// The badge's colour for its state.
    badge: &'static str,
    /// Its size, e.g. `1.4 MB`.
    size: String,
    /// Its length, e.g. `1:05`, once probed.
    length: Option<String>,
}

/// The badge colour of a video state (`media.js` has the same table).
fn badge(status: &str) -> &'static str {
    match status {
        "done" => "up",
        "failed" => "down",
        "converting" => "info",
        _ => "unknown",
    }
}

/// `1536` → `1.5 kB` (`media.js` writes sizes the same way).
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `65_400` ms → `1:05`.
fn length(ms: u64) -> String {
    let secs = ms.saturating_add(500) / 1000;
    format!("{}:{:02}", secs / 60, secs % 60)
}

impl From<Video> for VideoRow {
    fn from(video: Video) -> Self {
        Self {
            badge: badge(&video.status),
            size: human_size(video.video_size),
            length: video.duration_ms.map(length),
            video,
        }
    }
}

/// `GET /media`: the user's videos and the upload form, or the way to log in.
pub async fn page(State(gw): State<Arc<Gateway>>, Extension(session): Extension<Session>) -> Response {
    let path = format!("/videos?limit={PAGE_SIZE}");
    let (conversion, videos) = tokio::join!(conversion(&gw), async {
        match session.user {
            Some(_) => Some(page_data::get::<VideoPage>(&gw, &session, "media", &path).await),
            None => None,
        }
    });
    media_page(&session, conversion, videos)
}

/// The page for what the media service answered: `videos` is `None` for a visitor.
fn media_page(
    session: &Session,
    conversion: Option<Conversion>,
    videos: Option<Result<VideoPage, Missing>>,
) -> Response {
    let (videos, more, notice) = match videos {
        None => (None, false, None),
        Some(Ok(page)) => {
            let rows: Vec<VideoRow> = page.videos.into_iter().map(VideoRow::from).collect();
            (Some(rows), page.next_cursor.is_some(), None)
        }
        Some(Err(missing)) => (None, false, Some(missing.notice())),
    };
    let unavailable = conversion.filter(|c| !c.available);
    render_page(
        "media.html",
        session,
        context! { active => "media", videos, more, notice, unavailable, page_size => PAGE_SIZE },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::edge::Identity;
    use axum::http::StatusCode;

    fn visitor() -> Session {
        Session { user: None, csrf: "token".into(), return_to: Some("/media".into()) }
    }

    fn signed_in() -> Session {
        let claims = kit::auth::Claims {
            sub: "u-1".into(),
            name: "ada".into(),
            iss: "agora".into(),
            aud: "agora".into(),
            iat: 0,
            exp: i64::MAX,
            jti: "j".into(),
        };
        Session {
            user: Some(Identity { claims, token: "t".into(), via_cookie: true }),
            csrf: "token".into(),
            return_to: Some("/media".into()),
        }
    }

    async fn html(resp: Response) -> (StatusCode, String) {
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("a page body");
        (status, String::from_utf8(bytes.to_vec()).expect("utf-8 html"))
    }

    fn video(id: &str, status: &str) -> Video {
        Video {
            video_id: id.into(),
            file_name: format!("{id}.mp4"),
            status: status.into(),
            progress: if status == "done" { 100 } else { 40 },
            duration_ms: Some(65_400),
            video_size: 1_536_000,
            mp3_id: (status == "done").then(|| format!("mp3-{id}")),
            mp3_size: (status == "done").then_some(1000),
            error: (status == "failed").then(|| "the file has no audio track".into()),
            created_at: "2026-12-02T04:30:00Z".into(),
        }
    }

    fn missing_ffmpeg() -> Conversion {
        Conversion {
            available: false,
            reason: Some("video conversion is unavailable: ffmpeg: it is not installed".into()),
            install: "apt-get install -y --no-install-recommends ffmpeg".into(),
        }
    }

    #[tokio::test]
    async fn a_visitor_is_asked_to_log_in_and_comes_back_to_the_page() {
        let (status, page) = html(media_page(&visitor(), None, None)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            page.contains("id=\"media-login\"") && page.contains("href=\"/account/login?next=%2Fmedia\""),
            "{page}"
        );
        assert!(!page.contains("id=\"upload-form\"") && !page.contains("id=\"video-list\""), "{page}");
        assert!(page.contains("<a href=\"/media\" class=\"active\" aria-current=\"page\">Media</a>"), "{page}");
    }

    #[tokio::test]
    async fn a_user_sees_the_upload_form_and_each_video_with_its_state() {
        let videos = VideoPage {
            videos: vec![video("a", "done"), video("b", "converting"), video("c", "failed")],
            next_cursor: None,
        };
        let (status, page) = html(media_page(&signed_in(), None, Some(Ok(videos)))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("id=\"upload-form\"") && page.contains(&crate::web::assets::url("media.js").unwrap()));
        let done = &page[page.find("id=\"video-a\"").unwrap()..page.find("id=\"video-b\"").unwrap()];
        assert!(done.contains("data-status=\"done\"") && done.contains("badge-up"), "{done}");
        assert!(done.contains("<audio controls preload=\"none\" src=\"/download?fid=mp3-a\""), "{done}");
        assert!(done.contains("href=\"/download?fid=mp3-a\""), "{done}");
        assert!(done.contains("1.5 MB") && done.contains("1:05"), "{done}");
        let converting = &page[page.find("id=\"video-b\"").unwrap()..page.find("id=\"video-c\"").unwrap()];
        assert!(converting.contains("<progress") && converting.contains("value=\"40\""), "{converting}");
        assert!(!converting.contains("<audio"), "{converting}");
        assert!(page.contains("the file has no audio track"), "{page}");
        assert!(!page.contains("id=\"conversion-unavailable\""));
    }

    #[tokio::test]
    async fn without_a_converter_that_can_convert_the_page_says_how_to_install_ffmpeg() {
        let empty = VideoPage { videos: vec![], next_cursor: None };
        let (_, page) = html(media_page(&signed_in(), Some(missing_ffmpeg()), Some(Ok(empty)))).await;
        let notice = &page[page.find("id=\"conversion-unavailable\"").unwrap()..];
        assert!(notice.contains("ffmpeg: it is not installed"), "{notice}");
        assert!(notice.contains("<code>apt-get install -y --no-install-recommends ffmpeg</code>"), "{notice}");
        assert!(page.contains("No videos yet."), "{page}");
    }

    #[tokio::test]
    async fn a_media_service_that_is_down_gives_the_page_with_a_notice() {
        let down = Missing::Unavailable { service: "media".into() };
        let (status, page) = html(media_page(&signed_in(), None, Some(Err(down)))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("The media service is unavailable right now."), "{page}");
    }

    #[test]
    fn sizes_and_lengths_read_as_people_write_them() {
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1_536), "1.5 kB");
        assert_eq!(human_size(1_073_741_824), "1.1 GB");
        assert_eq!(length(0), "0:00");
        assert_eq!(length(65_400), "1:05");
        assert_eq!(length(1_999), "0:02");
        assert_eq!(length(3_600_000), "60:00");
    }
}
