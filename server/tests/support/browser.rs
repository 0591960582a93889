//! A real browser for tests: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, which `scripts/test` installs and names in
//! `CITADEL_TEST_CHROMIUM` and `CITADEL_TEST_CHROMEDRIVER`) driven over the
//! W3C WebDriver protocol. One driver process and one browser session per
//! test binary: starting Chromium is the slow part.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long to wait for the page to show something.
pub const WAIT: Duration = Duration::from_secs(15);

/// A chromedriver process and one browser session on it.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    _driver: super::Killed,
    _profile: PathBuf,
}

impl Browser {
    pub async fn start(chromedriver: &str) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let driver = super::Killed(child);
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
        let profile = super::temp("chromium-profile");
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
            "goog:loggingPrefs": { "browser": "ALL" },
        } } });
        let r: Value = http.post(format!("{root}/session")).json(&caps).send().await.unwrap().json().await.unwrap();
        let id = r["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no browser session: {r}"));
        Browser { http, base: format!("{root}/session/{id}"), _driver: driver, _profile: profile }
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut rb = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let v: Value = rb.send().await.unwrap().json().await.unwrap();
        v["value"].clone()
    }

    pub async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    pub async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None).await.as_str().unwrap_or_default().to_string()
    }

    /// The first element matching `css`, waiting for it to appear.
    pub async fn find(&self, css: &str) -> String {
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

    pub async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        let v = self.call(reqwest::Method::GET, &format!("/element/{id}/text"), None).await;
        v.as_str().unwrap_or_default().to_string()
    }

    /// Waits until the text of `css` contains `want`.
    pub async fn wait_text(&self, css: &str, want: &str) -> String {
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

    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{id}/clear"), Some(json!({}))).await;
        self.call(reqwest::Method::POST, &format!("/element/{id}/value"), Some(json!({ "text": text }))).await;
    }

    /// Clicks the element matching `css`; if the page replaced it between
    /// finding and clicking (a stale element), finds it again.
    pub async fn click(&self, css: &str) {
        let started = Instant::now();
        loop {
            let id = self.find(css).await;
            let v = self.call(reqwest::Method::POST, &format!("/element/{id}/click"), Some(json!({}))).await;
            let Some(error) = v["error"].as_str() else { return };
            assert!(error == "stale element reference" && started.elapsed() < WAIT, "clicking `{css}`: {v}");
        }
    }

    /// Saves a screenshot as `target/{folder}/{name}.png`.
    pub async fn screenshot(&self, folder: &str, name: &str) {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let dir = super::root().join("target").join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

impl Browser {
    /// Runs `script` (a function body; `arguments` holds `args`) in the
    /// page and returns what it returns.
    pub async fn run(&self, script: &str, args: Value) -> Value {
        self.call(reqwest::Method::POST, "/execute/sync", Some(json!({ "script": script, "args": args }))).await
    }

    /// Runs `script` as an asynchronous function: it ends by calling
    /// `arguments[arguments.length - 1]` with its result.
    pub async fn run_async(&self, script: &str, args: Value) -> Value {
        self.call(reqwest::Method::POST, "/execute/async", Some(json!({ "script": script, "args": args }))).await
    }

    /// Waits until `script` returns something truthy, and returns it.
    pub async fn wait_for(&self, what: &str, script: &str) -> Value {
        let started = Instant::now();
        loop {
            let v = self.run(script, json!([])).await;
            if !(v.is_null() || v == false || v == "" || v == 0) {
                return v;
            }
            assert!(started.elapsed() < WAIT, "waited {WAIT:?} for {what}; the page shows {}", self.text("body").await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types `keys` (WebDriver key codes for special keys: Enter is
    /// `\u{E007}`, the arrows `\u{E012}` to `\u{E015}`) into whatever
    /// has the focus.
    pub async fn keys(&self, keys: &str) {
        let active = self.call(reqwest::Method::GET, "/element/active", None).await;
        let id = active[ELEMENT].as_str().expect("a focused element").to_string();
        let v = self.call(reqwest::Method::POST, &format!("/element/{id}/value"), Some(json!({ "text": keys }))).await;
        assert!(v.get("error").is_none(), "typing into the focused element: {v}");
    }

    /// Sets the window's size in CSS pixels.
    pub async fn resize(&self, width: u32, height: u32) {
        self.call(reqwest::Method::POST, "/window/rect", Some(json!({ "width": width, "height": height }))).await;
    }

    /// Opens another window (its own page, sharing nothing but cookies
    /// and local storage) and returns its handle.
    pub async fn new_window(&self) -> String {
        let v = self.call(reqwest::Method::POST, "/window/new", Some(json!({ "type": "window" }))).await;
        v["handle"].as_str().unwrap().to_string()
    }

    pub async fn window(&self) -> String {
        self.call(reqwest::Method::GET, "/window", None).await.as_str().unwrap().to_string()
    }

    pub async fn switch_to(&self, handle: &str) {
        self.call(reqwest::Method::POST, "/window", Some(json!({ "handle": handle }))).await;
    }

    /// The browser console's messages since the last call (level, text).
    pub async fn console(&self) -> Vec<(String, String)> {
        let v = self.call(reqwest::Method::POST, "/se/log", Some(json!({ "type": "browser" }))).await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        (e["level"].as_str().unwrap_or("").to_string(), e["message"].as_str().unwrap_or("").to_string())
                    })
                    .collect()
            })
            .unwrap_or_default()
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
