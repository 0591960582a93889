//! The admin console in a real browser: headless Chromium driven over the
//! WebDriver protocol (Debian's `chromium` and `chromium-driver`, which
//! `scripts/test` installs and names in `CITADEL_TEST_CHROMEDRIVER`).
//! Support staff log in, find a player, grant resources, and the player's
//! next request sees them; without a login the console shows nothing but
//! the login page. Screenshots of the main pages are written to
//! `target/console-screenshots/`.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use support::server::*;

/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long to wait for the page to show something.
const WAIT: Duration = Duration::from_secs(15);

/// A chromedriver process and one browser session on it.
struct Browser {
    http: reqwest::Client,
    base: String,
    _driver: support::Killed,
    _profile: PathBuf,
}

impl Browser {
    async fn start(chromedriver: &str) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let driver = support::Killed(child);
        let http = reqwest::Client::new();
        let root = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            let ready = http.get(format!("{root}/status")).send().await;
            if let Ok(r) = ready {
                let v: Value = r.json().await.unwrap_or_default();
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(started.elapsed() < WAIT, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = support::temp("chromium-profile");
        let chromium = std::env::var("CITADEL_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        // Flags for a closed machine: no sandbox (root), no background
        // connections to Google, a fresh profile.
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,1000",
            &format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
        } } });
        let r: Value = http.post(format!("{root}/session")).json(&caps).send().await.unwrap().json().await.unwrap();
        let id = r["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no browser session: {r}"));
        Browser { http, base: format!("{root}/session/{id}"), _driver: driver, _profile: profile }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut rb = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let v: Value = rb.send().await.unwrap().json().await.unwrap();
        v["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None).await.as_str().unwrap_or_default().to_string()
    }

    /// The first element matching `css`, waiting for it to appear.
    async fn find(&self, css: &str) -> String {
        let started = Instant::now();
        loop {
            let v = self
                .call(reqwest::Method::POST, "/element", Some(json!({ "using": "css selector", "value": css })))
                .await;
            if let Some(id) = v[ELEMENT].as_str() {
                return id.to_string();
            }
            assert!(started.elapsed() < WAIT, "no `{css}` on {} after {WAIT:?}", self.url().await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        let v = self.call(reqwest::Method::GET, &format!("/element/{id}/text"), None).await;
        v.as_str().unwrap_or_default().to_string()
    }

    /// Waits until the text of `css` contains `want`.
    async fn wait_text(&self, css: &str, want: &str) -> String {
        let started = Instant::now();
        loop {
            let t = self.text(css).await;
            if t.contains(want) {
                return t;
            }
            assert!(started.elapsed() < WAIT, "`{css}` says {t:?}, not {want:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{id}/clear"), Some(json!({}))).await;
        self.call(reqwest::Method::POST, &format!("/element/{id}/value"), Some(json!({ "text": text }))).await;
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{id}/click"), Some(json!({}))).await;
    }

    async fn screenshot(&self, name: &str) {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let dir = support::root().join("target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the browser; the driver process is killed after.
        let (http, base) = (self.http.clone(), self.base.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async { http.delete(base).send().await.ok() });
        })
        .join();
    }
}

async fn gold(s: &Server, token: &str) -> i64 {
    let (_, r) = s.act("mini", token, "get_state", json!({})).await;
    r["result"]["state"]["resources"]["gold"].as_i64().unwrap_or_else(|| panic!("{r}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_staff_find_a_player_and_grant_resources_in_the_console() {
    let Some(chromedriver) = support::service(
        "CITADEL_TEST_CHROMEDRIVER",
        "the admin console in a browser",
        "Chromium and ChromeDriver (Debian chromium, chromium-driver)",
    ) else {
        return;
    };
    let hash = citadel_server::admin::auth::PasswordHash::make("support staff password").unwrap();
    let s = start(fresh_data("console"), |c| {
        c.admin_users = vec![citadel_server::config::AdminUser { name: "ops".into(), password_hash: hash }];
    })
    .await;
    let (tok, _) = s.login("mini", "annika").await;
    let (_, r) = s.act("mini", &tok, "build", json!({ "building": "mine", "x": 1, "y": 1 })).await;
    assert_eq!(r["ok"], true, "{r}");
    let g0 = gold(&s, &tok).await;

    let b = Browser::start(&chromedriver).await;
    // Without a login, the console is the login page and nothing else.
    b.go(&s.url("/admin/")).await;
    b.find("#login").await;
    assert!(b.url().await.ends_with("/admin/login"), "{}", b.url().await);
    b.go(&s.url("/admin/api/players/mini/annika")).await;
    assert!(b.text("body").await.contains("unauthorized"), "the API refuses the browser before a login");
    b.go(&s.url("/admin/login")).await;
    b.screenshot("login").await;
    b.type_into("#name", "ops").await;
    b.type_into("#password", "a wrong guess").await;
    b.click("#submit").await;
    b.wait_text("#message", "Wrong name or password").await;

    b.type_into("#name", "ops").await;
    b.type_into("#password", "support staff password").await;
    b.click("#submit").await;
    b.find("#servers tbody tr").await;
    b.wait_text("#titles", "mini").await;
    b.screenshot("servers").await;

    b.click("#nav-latency").await;
    b.wait_text("#latency-start", "build").await;
    b.screenshot("latency").await;
    b.click("#nav-requests").await;
    b.find("#inflight").await;
    b.screenshot("requests").await;

    // Find the player, grant 250 gold.
    b.click("#nav-players").await;
    b.type_into("#search-q", "anni").await;
    b.click("#search-go").await;
    b.click("a.player-link").await;
    b.wait_text("#history", "build").await;
    b.type_into("#adjust-id", "gold").await;
    b.type_into("#adjust-amount", "250").await;
    b.type_into("#adjust-reason", "lost gold in the outage").await;
    b.click("#adjust-go").await;
    b.wait_text("#flash", "adjust: done").await;
    b.wait_text("#resources", &(g0 + 250).to_string()).await;
    b.screenshot("player").await;
    assert_eq!(gold(&s, &tok).await, g0 + 250, "the player's next request sees the grant");

    b.click("#nav-audit").await;
    let audit = b.wait_text("#audit", "lost gold in the outage").await;
    assert!(audit.contains("ops") && audit.contains("adjust"), "{audit}");
    b.screenshot("audit").await;

    // Logging out closes the console again.
    b.click("#logout").await;
    b.find("#login").await;
    b.go(&s.url("/admin/")).await;
    b.find("#login").await;
    drop(b);
    s.stop().await;
}
