//! The web pages as a browser without JavaScript sees them: each page's content is in the HTML
//! the gateway sends, fetched from the services over the network; a service that is down gives
//! the page with a notice instead of an error.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kit::test_support::eventually;
use serde_json::{json, Value};

use crate::support::spawn_registry;
use crate::system::{Service, System};

/// `agora up` on a free port with a throw-away data directory; SIGTERM when dropped, so its
/// children stop with it.
struct Up {
    child: Child,
    url: String,
    _data: tempfile::TempDir,
}

impl Drop for Up {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// The whole system, once every route a page uses answers through the gateway.
async fn agora_up() -> Up {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let data = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_agora"))
        .args(["up", "--port", &port.to_string(), "--data-dir"])
        .arg(data.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("agora up starts");
    let up = Up { child, url: format!("http://127.0.0.1:{port}"), _data: data };
    for route in ["/joke", "/joke/categories", "/info", "/projects", "/.well-known/jwks.json"] {
        let url = format!("{}{route}", up.url);
        eventually(&format!("{route} through the gateway"), Duration::from_secs(90), || {
            let url = url.clone();
            async move { reqwest::get(&url).await.ok().filter(|r| r.status() == 200) }
        })
        .await;
    }
    up
}

async fn page(url: &str) -> (u16, String) {
    let resp = kit::test_support::client().get(url).header("accept", "text/html").send().await.unwrap();
    let status = resp.status().as_u16();
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/html"), "{url}");
    (status, resp.text().await.unwrap())
}

/// The text between `start` and the next `end` after it.
fn between<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
    let from = html.find(start).unwrap_or_else(|| panic!("no {start:?} in {html}")) + start.len();
    let to = html[from..].find(end).unwrap_or_else(|| panic!("no {end:?} after {start:?}")) + from;
    &html[from..to]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_shows_its_content_in_the_html_the_server_sends() {
    let up = agora_up().await;
    let gw = &up.url;
    let http = kit::test_support::client();

    // Jokes: a joke is in the page, and a category chosen in the form gives one of that category.
    let (status, html) = page(&format!("{gw}/jokes")).await;
    assert_eq!(status, 200);
    let joke = between(&html, "<blockquote id=\"joke\" class=\"joke\" aria-live=\"polite\">", "</blockquote>");
    assert!(!joke.trim().is_empty(), "{html}");
    assert!(!html.contains("needs JavaScript"));
    let (_, html) = page(&format!("{gw}/jokes?category=science")).await;
    assert!(html.contains("<option value=\"science\" selected>"), "{html}");
    assert!(!between(&html, "aria-live=\"polite\">", "</blockquote>").trim().is_empty(), "{html}");
    let (status, html) = page(&format!("{gw}/jokes?category=knock-knock")).await;
    assert_eq!(status, 200);
    assert!(html.contains("knock-knock"), "the page says why there is no joke: {html}");

    // Classification: the models and sample images are in the form.
    let (status, html) = page(&format!("{gw}/classify")).await;
    assert_eq!(status, 200);
    assert!(html.contains("<option value=\"efficientnet-lite0\">"), "{html}");
    assert!(html.contains("<option value=\"cat\">"), "{html}");

    // Crowdfunding: a proposed project is listed by name, and its page shows its threads.
    let creds = json!({"username": "popee", "password": "correct horse battery staple"});
    assert_eq!(http.post(format!("{gw}/signup")).json(&creds).send().await.unwrap().status(), 201);
    let login: Value = http.post(format!("{gw}/login")).json(&creds).send().await.unwrap().json().await.unwrap();
    let token = login["access_token"].as_str().unwrap();
    let proposal = json!({
        "project_name": "Popee the Performer",
        "tagline": "an apprentice clown in Wolf Circus",
        "problems": ["short temper", "self centered"],
        "solutions": ["play the drums"],
        "tags": ["clown", "circus"]
    });
    let resp = http.post(format!("{gw}/projects/propose")).bearer_auth(token).json(&proposal).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    let id = resp.json::<Value>().await.unwrap()["project_id"].as_i64().unwrap();

    let (status, html) = page(&format!("{gw}/crowdfunding")).await;
    assert_eq!(status, 200);
    let list = between(&html, "<ol class=\"project-list\" id=\"project-list\" aria-live=\"polite\">", "</ol>");
    assert!(list.contains(&format!("<a href=\"/crowdfunding/{id}\">Popee the Performer</a>")), "{list}");
    assert!(list.contains("an apprentice clown in Wolf Circus") && list.contains("<strong>popee</strong>"), "{list}");

    let project = eventually("the proposal's threads on its page", Duration::from_secs(10), || async {
        let (status, html) = page(&format!("{gw}/crowdfunding/{id}")).await;
        (status == 200 && html.contains("play the drums")).then_some(html)
    })
    .await;
    assert!(project.contains("<h1 id=\"project-name\">Popee the Performer</h1>"), "{project}");
    let problems = between(&project, "id=\"problems\" data-thread-type=\"PROBLEM\">", "data-empty-for=\"problems\"");
    assert!(problems.contains("short temper") && problems.contains("self centered"), "{problems}");
    let solutions = between(&project, "id=\"solutions\" data-thread-type=\"SOLUTION\">", "data-empty-for");
    assert!(solutions.contains("play the drums") && !solutions.contains("short temper"), "{solutions}");

    let (status, html) = page(&format!("{gw}/crowdfunding/{}", id + 1000)).await;
    assert_eq!(status, 404);
    assert!(html.contains(&format!("There is no project {}.", id + 1000)), "{html}");
}

#[tokio::test]
async fn a_page_whose_service_is_down_says_so_instead_of_failing() {
    let registry = spawn_registry().await;
    let gateway = gateway::testing::spawn(gateway::Config::for_tests(registry.as_url())).await;
    let gw = &gateway.url;
    for (path, notice) in [
        ("/jokes", "The jokes service is unavailable right now."),
        ("/classify", "The classifier service is unavailable right now."),
        ("/crowdfunding", "The projects service is unavailable right now."),
        ("/crowdfunding/1", "The projects service is unavailable right now."),
    ] {
        let (status, html) = page(&format!("{gw}{path}")).await;
        assert_eq!(status, 200, "{path}");
        assert!(html.contains(notice), "{path}: {html}");
        assert!(html.contains("<nav"), "{path} is the whole page");
    }
}

/// The form body of `fields`, as a browser sends it.
fn form(fields: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish()
}

/// Where a redirection sends the browser.
fn location(resp: &reqwest::Response) -> &str {
    resp.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default()
}

#[tokio::test]
async fn logging_in_returns_to_the_page_the_user_came_from_and_never_to_another_site() {
    let registry = spawn_registry().await;
    let (_auth, _db) = crate::support::spawn_auth(&registry.as_url()).await;
    let gateway = gateway::testing::spawn(gateway::Config::for_tests(registry.as_url())).await;
    let gw = &gateway.url;
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    // The navigation lists every application; the "Log in" link says where the user is.
    let (_, html) = page(&format!("{gw}/crowdfunding/7")).await;
    let nav = between(&html, "<nav", "</nav>");
    assert!(nav.contains("<a href=\"/crowdfunding\" class=\"active\" aria-current=\"page\">Crowdfunding</a>"), "{nav}");
    assert!(nav.contains("<a href=\"/classify\">Image classification</a>"), "{nav}");
    assert!(
        html.contains("<a href=\"/account/login?next=%2Fcrowdfunding%2F7\" id=\"login-link\">Log in</a>"),
        "{html}"
    );

    // The log-in page keeps it in its form, with the CSRF token of this browser's cookie.
    let resp = browser.get(format!("{gw}/account/login?next=%2Fcrowdfunding%2F7")).send().await.unwrap();
    let set_cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    let csrf = between(&set_cookie, "agora_csrf=", ";").to_string();
    let html = resp.text().await.unwrap();
    assert!(html.contains("<input type=\"hidden\" name=\"next\" value=\"&#x2f;crowdfunding&#x2f;7\">"), "{html}");
    assert!(html.contains("href=\"/account/signup?next=%2Fcrowdfunding%2F7\""), "{html}");
    let cookie = format!("agora_csrf={csrf}");
    let post = |path: &str, fields: &[(&str, &str)]| {
        browser
            .post(format!("{gw}{path}"))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(fields))
    };

    // Signing up from there goes back there, logged in.
    let user = [("username", "returner"), ("password", "a long passphrase"), ("csrf", &csrf)];
    let signed_up = kit::test_support::eventually("auth to be routed", Duration::from_secs(10), || async {
        let fields = [&user[..], &[("next", "/crowdfunding/7")]].concat();
        let resp = post("/account/signup", &fields).send().await.ok()?;
        (resp.status() != 503).then_some(resp)
    })
    .await;
    assert_eq!(signed_up.status(), 303);
    assert_eq!(location(&signed_up), "/crowdfunding/7");
    assert!(signed_up
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|c| c.to_str().unwrap().starts_with("agora_session=")));

    let logged_in = post("/account/login", &[&user[..], &[("next", "/jokes?category=science")]].concat()).send().await;
    let logged_in = logged_in.unwrap();
    assert_eq!(logged_in.status(), 303);
    assert_eq!(location(&logged_in), "/jokes?category=science");

    // Anywhere else is home.
    for elsewhere in
        ["https://evil.example", "//evil.example", "/\\evil.example", "javascript:alert(1)", "/\t/evil.example", ""]
    {
        let resp = post("/account/login", &[&user[..], &[("next", elsewhere)]].concat()).send().await.unwrap();
        assert_eq!(resp.status(), 303, "{elsewhere:?}");
        assert_eq!(location(&resp), "/", "{elsewhere:?}");
        let (_, html) = page(&format!("{gw}/account/login?{}", form(&[("next", elsewhere)]))).await;
        assert!(html.contains("<input type=\"hidden\" name=\"next\" value=\"&#x2f;\">"), "{elsewhere:?}: {html}");
        assert!(!html.contains("evil"), "{elsewhere:?}: {html}");
    }

    // A refused log-in keeps the way back in the form it shows again.
    let wrong = [("username", "returner"), ("password", "not the passphrase"), ("csrf", &csrf), ("next", "/classify")];
    let resp = post("/account/login", &wrong).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.text().await.unwrap().contains("name=\"next\" value=\"&#x2f;classify\">"));
}

/// The page at `url` as the holder of `token` sees it.
async fn page_as(url: &str, token: &str) -> (u16, String) {
    let resp =
        kit::test_support::client().get(url).header("accept", "text/html").bearer_auth(token).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_media_page_asks_a_visitor_to_log_in_and_every_page_says_when_conversion_is_unavailable() {
    // The media service without a converter: what a machine without ffmpeg looks like.
    let system = System::builder().with(Service::Auth).with(Service::Media).start().await;
    let install = "<code>apt-get install -y --no-install-recommends ffmpeg</code>";

    let (status, html) = page(&system.url("/media")).await;
    assert_eq!(status, 200);
    let login = between(&html, "id=\"media-login\">", "</div>");
    assert!(login.contains("href=\"/account/login?next=%2Fmedia\""), "{login}");
    assert!(!html.contains("id=\"upload-form\""), "a visitor gets no upload form: {html}");
    let nav = between(&html, "<nav", "</nav>");
    assert!(nav.contains("<a href=\"/media\" class=\"active\" aria-current=\"page\">Media</a>"), "{nav}");

    let user = system.sign_up("media-fan").await;
    let (status, html) = page_as(&system.url("/media"), &user.token).await;
    assert_eq!(status, 200);
    assert!(html.contains("id=\"upload-form\"") && html.contains("No videos yet."), "{html}");
    let notice = between(&html, "id=\"conversion-unavailable\">", "</div>");
    assert!(notice.contains("no converter is running") && notice.contains(install), "{notice}");

    let (_, home) = page(&system.url("/")).await;
    let card = between(&home, ">Media conversion</a>", "</li>");
    assert!(home.contains("<a href=\"&#x2f;media\">Media conversion</a>"), "the card leads to /media: {home}");
    assert!(card.contains("Conversion is unavailable") && card.contains(install), "{card}");
    assert!(!card.contains("Coming soon"), "{card}");

    let (_, status_page) = page(&system.url("/status")).await;
    let notice = between(&status_page, "id=\"conversion-unavailable\">", "</div>");
    assert!(notice.contains("no converter is running") && notice.contains(install), "{notice}");

    // Through the gateway, anyone may ask.
    let conversion: Value = system.http().get(system.url("/conversion")).send().await.unwrap().json().await.unwrap();
    assert_eq!(conversion["available"], false, "{conversion}");
}
