//! An in-process game server on 127.0.0.1 with an injected clock, and
//! requests to it over HTTP (the end-to-end and world tests share it).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use citadel_server::{Clock, Config};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::root;

pub const START: i64 = 1_767_225_600_000;

#[derive(Debug)]
pub struct ManualClock(pub AtomicI64);

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

pub struct Server {
    pub addr: std::net::SocketAddr,
    pub stop: Option<oneshot::Sender<()>>,
    pub done: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub clock: Arc<ManualClock>,
    pub data: PathBuf,
}

/// A titles folder with the first title and the small fixture title.
/// Made once per test process: tests running in parallel must not see
/// a half-copied folder.
pub fn titles_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("citadel-e2e-titles-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        copy_dir(&root().join("tests/fixtures/fort"), &dir.join("fort"));
        copy_dir(&root().join("tests/fixtures/mini"), &dir.join("mini"));
        dir
    })
    .clone()
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

pub fn fresh_data(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("citadel-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

pub async fn start(data: PathBuf, tweak: impl FnOnce(&mut Config)) -> Server {
    start_at(data, Arc::new(ManualClock(AtomicI64::new(START))), tweak).await
}

pub async fn start_at(data: PathBuf, clock: Arc<ManualClock>, tweak: impl FnOnce(&mut Config)) -> Server {
    start_on("127.0.0.1:0".parse().unwrap(), data, clock, tweak).await
}

/// [`start`] on the real clock (pushes at a timer's end, which the
/// session sleeps for). `clock` is then unused.
pub async fn start_real_time(data: PathBuf, tweak: impl FnOnce(&mut Config)) -> Server {
    start_with(
        "127.0.0.1:0".parse().unwrap(),
        data,
        Arc::new(ManualClock(AtomicI64::new(START))),
        Arc::new(citadel_server::SystemClock),
        tweak,
    )
    .await
}

/// [`start_at`] on a given address (a restart on the same port, where
/// clients reconnect).
pub async fn start_on(
    addr: std::net::SocketAddr,
    data: PathBuf,
    clock: Arc<ManualClock>,
    tweak: impl FnOnce(&mut Config),
) -> Server {
    let c: Arc<dyn Clock> = clock.clone();
    start_with(addr, data, clock, c, tweak).await
}

async fn start_with(
    addr: std::net::SocketAddr,
    data: PathBuf,
    clock: Arc<ManualClock>,
    c: Arc<dyn Clock>,
    tweak: impl FnOnce(&mut Config),
) -> Server {
    let mut config = Config { data_dir: data.clone(), titles: titles_dir(), ..Config::default() };
    config.token_secret = Some("an e2e test secret of at least 32 chars".into());
    // Refusals of a locked player come at once here (the wait is for
    // upgrades: tests/upgrade.rs).
    config.login_lock_wait_seconds = 0;
    tweak(&mut config);
    // The port of a server just stopped may take a moment to be free.
    let mut tries = 0;
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) if tries < 100 && addr.port() != 0 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("binding {addr}: {e}"),
        }
    };
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        let stopped = async move {
            let _ = stopped.await;
        };
        let r = citadel_server::run_with_clock(config, listener, stopped, c).await;
        if let Err(e) = &r {
            // A test then fails on a refused connection; say why here.
            eprintln!("the server on {addr} stopped with an error: {e:#}");
        }
        r
    });
    Server { addr, stop: Some(stop), done, clock, data }
}

/// Another server sharing `data` (player files, world store), with its
/// own journal and identity.
pub fn second_server(data: &Path) -> impl FnOnce(&mut Config) {
    let dir = data.join("server-b");
    move |c| c.server_dir = Some(dir)
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// GET of the admin API (or `/metrics`) with the token the server keeps
    /// in its data folder; the answer's body as text.
    pub async fn admin_get(&self, path: &str) -> String {
        let token = std::fs::read_to_string(self.data.join("admin-token")).expect("the server wrote its admin token");
        let r = reqwest::Client::new()
            .get(self.url(path))
            .header("authorization", format!("Bearer {}", token.trim()))
            .send()
            .await
            .unwrap();
        r.text().await.unwrap()
    }

    /// The admin token the server keeps in its data folder.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data.join("admin-token")).expect("the server wrote its admin token").trim().into()
    }

    /// POST of JSON to the admin API with the admin token: status and answer.
    pub async fn admin_post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(self.url(path))
            .header("authorization", format!("Bearer {}", self.admin_token()))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// [`Server::admin_get`] of a JSON answer.
    pub async fn admin_json(&self, path: &str) -> Value {
        serde_json::from_str(&self.admin_get(path).await).expect("the admin API answers JSON")
    }

    pub async fn login(&self, title: &str, player: &str) -> (String, Value) {
        let r = reqwest::Client::new()
            .post(self.url(&format!("/v1/{title}/login")))
            .json(&json!({ "player": player }))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert_eq!(status, 200, "logging {player} in to {title}: {v}");
        (v["token"].as_str().unwrap().to_string(), v)
    }

    pub async fn post(&self, title: &str, token: Option<&str>, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let mut rb = reqwest::Client::new().post(self.url(&format!("/v1/{title}/request"))).body(body);
        if let Some(t) = token {
            rb = rb.header("authorization", format!("Bearer {t}"));
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn act(&self, title: &str, token: &str, action: &str, args: Value) -> (u16, Value) {
        self.post(title, Some(token), json!({ "id": 7, "action": action, "args": args }).to_string()).await
    }

    pub fn advance(&self, seconds: i64) {
        self.clock.0.fetch_add(seconds * 1000, Ordering::SeqCst);
    }

    pub async fn stop(mut self) -> PathBuf {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.done)
            .await
            .expect("shutdown in time")
            .unwrap()
            .expect("clean exit");
        self.data
    }
}

pub fn saved(data: &Path, title: &str, player: &str) -> Value {
    super::state_file(&data.join(format!("players/{title}/{player}.json")))
}

/// An in-process gateway (`citadel gateway`) on 127.0.0.1 sharing `data`
/// (the world store) with the test's game servers, on an injected clock.
pub struct Gateway {
    pub addr: std::net::SocketAddr,
    pub stop: Option<oneshot::Sender<()>>,
    pub done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// The configuration a test gateway starts from (the game servers' secret).
pub fn gateway_config(data: &Path) -> Config {
    let mut config = Config { data_dir: data.to_path_buf(), titles: titles_dir(), ..Config::default() };
    config.token_secret = Some("an e2e test secret of at least 32 chars".into());
    config
}

pub async fn start_gateway(config: Config, clock: Arc<ManualClock>) -> Gateway {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        let stopped = async move {
            let _ = stopped.await;
        };
        let r = citadel_server::gateway::run_with_clock(config, listener, stopped, clock).await;
        if let Err(e) = &r {
            eprintln!("the gateway on {addr} stopped with an error: {e:#}");
        }
        r
    });
    Gateway { addr, stop: Some(stop), done }
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs `body` (JSON) and returns the status and the answer.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = reqwest::Client::new().post(self.url(path)).json(&body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.done)
            .await
            .expect("shutdown in time")
            .unwrap()
            .expect("clean exit");
    }
}

/// Logs in at a game server with a gateway's game token; the answer.
pub async fn login_with_token(server: &str, title: &str, token: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{server}/v1/{title}/login"))
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}
