//! Test services: S3 served by `s3s-fs` in this process, and the moto
//! server that `scripts/test` provisions (`CITADEL_TEST_MOTO_ENDPOINT`);
//! and `citadel serve` as a real process, with a title whose actions are
//! easy to count.
//!
//! A suite whose service is missing says so on the terminal (past the test
//! harness's output capture) and passes; with `CITADEL_TEST_REQUIRE_SERVICES=1`
//! (set by `scripts/test`) a missing service fails the suite instead.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use citadel_server::s3::S3Config;

pub mod server;

pub const ACCESS_KEY: &str = "citadel-test";
pub const SECRET_KEY: &str = "citadel-test-secret";

/// A unique name for this process and call (bucket names, folders).
pub fn unique(what: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{what}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Serves S3 from a temporary folder on 127.0.0.1 for as long as the
/// test's runtime lives; returns a config for a fresh, empty bucket.
pub async fn s3s_fs() -> S3Config {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let root = std::env::temp_dir().join(unique("citadel-s3s"));
    let bucket = unique("players");
    // s3s-fs keeps each bucket as a folder.
    std::fs::create_dir_all(root.join(&bucket)).unwrap();
    let service = {
        let mut b = s3s::service::S3ServiceBuilder::new(s3s_fs::FileSystem::new(&root).unwrap());
        b.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        b.build()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        while let Ok((socket, _)) = listener.accept().await {
            let conn = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    });
    config(&format!("http://{addr}"), &bucket)
}

/// A fresh bucket on the moto server, or `None` (announced) when no moto
/// server was provisioned.
pub async fn moto(suite: &str) -> Option<S3Config> {
    let endpoint = service("CITADEL_TEST_MOTO_ENDPOINT", suite, "the moto S3 server")?;
    let cfg = config(&endpoint, &unique("players"));
    let store = citadel_server::s3::S3BlobStore::new(&cfg, |_| None).unwrap();
    store.client().create_bucket().bucket(&cfg.bucket).send().await.expect("creating a bucket on moto");
    Some(cfg)
}

/// The service address in `var`, or `None` after saying loudly that
/// `suite` was skipped (or failing, when services are required).
pub fn service(var: &str, suite: &str, what: &str) -> Option<String> {
    if let Ok(v) = std::env::var(var) {
        return Some(v);
    }
    let msg = format!("SKIPPED: {suite}: needs {what} ({var} is not set); `scripts/test` provisions it");
    assert!(std::env::var_os("CITADEL_TEST_REQUIRE_SERVICES").is_none(), "{msg}");
    // Straight to the terminal: the harness captures `eprintln!` of passing tests.
    let _ = writeln!(std::io::stderr().lock(), "\n*** {msg} ***\n");
    None
}

fn config(endpoint: &str, bucket: &str) -> S3Config {
    S3Config {
        endpoint: Some(endpoint.to_string()),
        path_style: true,
        access_key_id: Some(ACCESS_KEY.into()),
        secret_access_key: Some(SECRET_KEY.into()),
        ..S3Config::new(bucket)
    }
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A fresh, empty temporary folder for this process.
pub fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("citadel-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Gems a new player of the counting title starts with.
pub const START_GEMS: i64 = 10;

/// The mini fixture title, with its `tithe` action changed to grant one
/// gem and cost nothing, so it always succeeds and is easy to count.
pub fn counting_title(dir: &Path) {
    let from = root().join("tests/fixtures/mini");
    let to = dir.join("mini");
    for sub in ["", "scripts"] {
        std::fs::create_dir_all(to.join(sub)).unwrap();
        for e in std::fs::read_dir(from.join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                std::fs::copy(&p, to.join(sub).join(p.file_name().unwrap())).unwrap();
            }
        }
    }
    let hooks = to.join("scripts/hooks.rhai");
    let text = std::fs::read_to_string(&hooks).unwrap();
    let counted = text.replace("[spend(\"gold\", 10), grant(\"gems\", 1)]", "[grant(\"gems\", 1)]");
    assert_ne!(text, counted, "the fixture's tithe changed; update this test");
    std::fs::write(hooks, counted).unwrap();
}

/// A server process, killed with SIGKILL when dropped (also when a failed
/// assertion unwinds, so no server outlives the test).
pub struct Killed(pub Child);

impl Killed {
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `citadel serve` with `args` (after `serve --log-json`) and
/// returns it with the address it listens on.
pub fn citadel(args: &[&std::ffi::OsStr]) -> (Killed, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_citadel"))
        .args(["serve", "--log-json"])
        .args(args)
        .env("CITADEL_TOKEN_SECRET", "a process test secret of at least 32 chars")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("citadel starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("the server logs before it exits").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or(serde_json::Value::Null);
        if v["fields"]["message"] == "listening" {
            break v["fields"]["addr"].as_str().unwrap().to_string();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (Killed(child), addr)
}
