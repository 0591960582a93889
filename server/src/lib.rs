//! Citadel's game server: a headless library (`main.rs` only parses the
//! command line). The only crate with wire types, HTTP and WebSockets.
//!
//! # Layout
//! - [`config`]: configuration (file, environment, flags) and limits.
//! - [`protocol`]: protocol v1 wire types and error codes.
//! - [`http`]: the router; HTTP and WebSocket share one dispatcher.
//! - [`state`]: what every handler shares.
//! - [`deps`]: what the server's parts share, and the injected clock.
//! - [`session`]: per-player sessions: the registry, each player's task,
//!   the save policy, world and clan requests.
//! - [`apply`]: the operation interpreter (live requests, replay, takeovers).
//! - [`journal`]: the write-ahead journal: acknowledged means durable.
//! - [`replay`]: re-running journaled operations (at start, at takeovers).
//! - [`player_file`]: where a player's file, snapshots and lock are.
//! - [`auth`]: signed session tokens.
//! - [`titles`]: the titles served, their versions, the reload gate.
//! - [`watch`]: hot reload triggers (the titles folder watcher, SIGHUP).
//! - [`admin`]: the admin API.
//! - [`status`]: this server's heartbeat in the world store's server list.
//! - [`profile`]: latency of every entry point; `/metrics`.
//! - [`listener`]: accepting and serving connections under limits and deadlines.
//! - [`cluster`]: `citadel cluster`, a local cluster in one command.
//! - [`bus`]: the message bus between servers (in-process or NATS).
//! - [`connections`]: the players this server pushes to.
//! - [`relay`]: what servers tell each other's players over the bus.
//! - [`recovery`]: taking players over from a server that died holding them.
//! - [`handoff`]: passing the listening socket to a new process (binary upgrades).
//! - [`docs`]: generated sections of the protocol and configuration docs.
//!
//! Storage (player files, the world store) is the `citadel-store` crate in
//! `server/store/`.

pub mod admin;
pub mod apply;
pub mod auth;
pub mod bus;
pub mod cluster;
pub mod config;
pub mod connections;
pub mod deps;
pub mod docs;
pub mod gateway;
pub mod handoff;
pub mod http;
pub mod journal;
pub mod listener;
pub mod play;
pub mod player_file;
pub mod profile;
pub mod protocol;
pub mod recovery;
pub mod relay;
pub mod replay;
pub mod session;
pub mod state;
pub mod status;
pub mod titles;
pub mod watch;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use citadel_store::decorate::Decorated;
use citadel_store::{blob, s3, world};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
pub use deps::{Clock, SystemClock};
pub use http::{app, AppState};

/// The contents of `data_dir/name`, created on first start with `bytes`
/// random bytes in hex, readable by the server's user only. Servers that
/// share a data folder and start together agree on one: the file appears
/// whole (written aside, then linked in place), and the first one wins.
fn kept_random(data_dir: &std::path::Path, name: &str, bytes: usize) -> anyhow::Result<String> {
    let path = data_dir.join(name);
    let read = |path: &std::path::Path| -> Option<anyhow::Result<String>> {
        let s = std::fs::read_to_string(path).ok()?;
        if s.trim().len() < bytes * 2 {
            return Some(Err(anyhow::anyhow!("{} is shorter than {} characters", path.display(), bytes * 2)));
        }
        Some(Ok(s.trim().to_string()))
    };
    if let Some(found) = read(&path) {
        return found;
    }
    use std::io::Read;
    let mut random = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut random)).context("reading /dev/urandom")?;
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let aside = data_dir.join(format!(".{name}.{}-{}", std::process::id(), &hex[..8]));
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&aside)
            .with_context(|| format!("creating {}", aside.display()))?;
        f.write_all(hex.as_bytes())
            .and_then(|_| f.sync_all())
            .with_context(|| format!("writing {}", aside.display()))?;
    }
    let linked = std::fs::hard_link(&aside, &path);
    let _ = std::fs::remove_file(&aside);
    match linked {
        Ok(()) => Ok(hex),
        // Another server sharing the folder made it first: theirs it is.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read(&path).unwrap_or_else(|| Err(anyhow::anyhow!("{} vanished", path.display())))
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// Takes `dir/LOCK` for this process's life: two processes writing one
/// journal would corrupt it. The lock goes with the process, even on a crash.
fn lock_server_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            anyhow::bail!("another server process uses {}; give each server its own server_dir", dir.display())
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

/// The token secret: from the config, or kept in `data_dir/token-secret`
/// (whoever reads it can forge tokens).
fn token_secret(config: &Config) -> anyhow::Result<Vec<u8>> {
    match &config.token_secret {
        Some(s) => Ok(s.as_bytes().to_vec()),
        None => Ok(kept_random(&config.data_dir, "token-secret", 32)?.into_bytes()),
    }
}

/// Signs and checks session and game tokens: with `token_secret`, and
/// `token_secret_previous` during a rotation.
fn signer(config: &Config) -> anyhow::Result<auth::Signer> {
    let signer = auth::Signer::new(&token_secret(config)?);
    Ok(match &config.token_secret_previous {
        Some(previous) => signer.also_accepting(previous.as_bytes()),
        None => signer,
    })
}

/// The world store: MongoDB when configured, else `data_dir/world.sqlite3`.
async fn open_world(config: &Config) -> anyhow::Result<Arc<dyn world::WorldStore>> {
    Ok(match &config.mongodb {
        Some(m) => Arc::new(world::MongoWorld::connect(m).await.context("connecting to the MongoDB world store")?),
        None => Arc::new(world::SqliteWorld::open(&config.data_dir.join("world.sqlite3"))?),
    })
}

/// The admin API token: from the config, or kept in `data_dir/admin-token`.
fn admin_token(config: &Config) -> anyhow::Result<String> {
    match &config.admin_token {
        Some(t) => Ok(t.clone()),
        None => kept_random(&config.data_dir, "admin-token", 24),
    }
}

/// Serves until `shutdown` completes, then shuts down gracefully: stop
/// accepting, let in-flight HTTP requests finish, push `server_shutdown`
/// and close every WebSocket with 1001, save every player, return.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with_clock(config, listener, shutdown, Arc::new(SystemClock)).await
}

/// [`run`] with an injected clock (tests move time by hand).
pub async fn run_with_clock(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<()> {
    serve(config, listener, shutdown, clock, None).await
}

/// [`run`] on a listening socket taken over from a running server
/// ([`handoff::take_over`]): once this server accepts connections, the old
/// one is told to drain.
pub async fn run_taking_over(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    old: std::os::unix::net::UnixStream,
) -> anyhow::Result<()> {
    serve(config, listener, shutdown, Arc::new(SystemClock), Some(old)).await
}

async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    clock: Arc<dyn Clock>,
    old: Option<std::os::unix::net::UnixStream>,
) -> anyhow::Result<()> {
    config.check()?;
    let signer = signer(&config)?;
    let profiler = Arc::new(profile::Profiler::new(config.profiling));
    let blobs: Arc<dyn blob::BlobStore> = match &config.s3 {
        Some(s3) => Arc::new(s3::S3BlobStore::new(s3, |k| std::env::var(k).ok())?),
        None => Arc::new(blob::FsBlobStore::new(&config.data_dir)),
    };
    // Title versions live beside the player files: every server of a
    // cluster reads the versions the others served.
    let titles = Arc::new(titles::Titles::open(&config.titles, Some(blobs.clone())).await?);
    let blobs: Arc<dyn blob::BlobStore> = if config.profiling {
        Arc::new(Decorated::new(blobs, profile::Timing { profiler: profiler.clone(), kind: profile::Kind::Blob }))
    } else {
        blobs
    };
    let world = open_world(&config).await?;
    let world: Arc<dyn world::WorldStore> = if config.profiling {
        Arc::new(Decorated::new(world, profile::Timing { profiler: profiler.clone(), kind: profile::Kind::World }))
    } else {
        world
    };
    let conn_limits = listener::ConnLimits::of(&config.limits);
    // The same data directory is the same server: after a crash it takes
    // its own player locks back at once instead of waiting for them to expire.
    let server_dir = config.server_dir();
    let _only_process = lock_server_dir(&server_dir)?;
    let server_id = format!("server-{}", kept_random(&server_dir, "server-id", 8)?);
    let stream = match (&config.journal_store, &config.nats) {
        (config::JournalStore::Jetstream, Some(nats)) => Some(
            journal::jetstream::JournalStream::open(nats, &server_id, &format!("citadel journal {server_id}"))
                .await
                .context("opening the journal on NATS JetStream")?,
        ),
        _ => None,
    };
    let recovery = Arc::new(recovery::Recovery::new(&server_id, &server_dir.join("journal"), stream.clone()));
    recovery.register(&*world).await.context("recording where this server's journal is")?;
    let journal =
        open_journal(&config, &titles, &*blobs, &*world, &recovery, stream, clock.now_ms(), &profiler).await?;
    let bus = bus::connect(&config, &profiler).await?;
    let flights = profile::Flights::new(std::time::Duration::from_millis(config.slow_request_ms));
    let deps = Arc::new(deps::Deps {
        config,
        titles,
        blobs,
        world,
        clock,
        journal: journal.clone(),
        recovery,
        server_id,
        profiler,
        flights,
        bus,
        connections: connections::Connections::new(),
    });
    let sessions = session::Sessions::new(deps.clone());
    let token = CancellationToken::new();
    if deps.config.watch_titles {
        watch::spawn(deps.titles.clone(), &deps.config.titles, token.clone())?;
    }
    watch::on_sighup(deps.titles.clone(), token.clone())?;
    relay::spawn(deps.clone(), sessions.clone(), token.clone()).await?;
    let admin = Arc::new(admin::auth::AdminAuth::new(admin_token(&deps.config)?, &deps.config.admin_users));
    let state = AppState {
        deps,
        sessions: sessions.clone(),
        signer,
        shutdown: token.clone(),
        sockets: TaskTracker::new(),
        admin,
        closes: Arc::new(listener::Closes::default()),
    };
    let sockets = state.sockets.clone();
    // A successor takes a copy of the listening socket; it then tells this
    // server to drain, which is the graceful shutdown.
    let handoff_path = handoff::socket_path(&state.deps.config.server_dir());
    {
        use std::os::fd::AsFd;
        let copy = listener.as_fd().try_clone_to_owned().context("copying the listening socket")?;
        // Serving goes on without it (a Unix socket path is limited to 107
        // bytes, for one): only take-overs are unavailable.
        if let Err(e) = handoff::serve(handoff_path.clone(), copy, token.clone()) {
            tracing::warn!(error = %format!("{e:#}"), "binary upgrades by take-over are unavailable");
        }
    }
    let addr = listener.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string());
    tracing::info!(%addr, "listening");
    let public = state.deps.config.public_address.clone().unwrap_or_else(|| format!("http://{addr}"));
    status::spawn(state.deps.clone(), sessions.clone(), public, token.clone());
    let stop = token.clone();
    tokio::spawn(async move {
        shutdown.await;
        stop.cancel();
    });
    let graceful = token.clone();
    if let Some(old) = old {
        // The socket already listens; connections wait in its queue until
        // they are accepted just below.
        handoff::ready(old)?;
    }
    let closes = state.closes.clone();
    listener::serve(listener, conn_limits, closes, app(state), graceful).await;
    handoff::stop(&handoff_path);
    sockets.close();
    sockets.wait().await;
    sessions.shutdown().await;
    journal.close().await;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Replays what the journal folder, or this server's JetStream stream,
/// holds from an earlier run into the player files, then starts a fresh
/// journal: in the folder, or on the JetStream `stream` (a server switched
/// from files to JetStream replays its files here first).
#[allow(clippy::too_many_arguments)]
async fn open_journal(
    config: &Config,
    titles: &titles::Titles,
    blobs: &dyn blob::BlobStore,
    world: &dyn world::WorldStore,
    recovery: &recovery::Recovery,
    stream: Option<journal::jetstream::JournalStream>,
    now_ms: i64,
    profiler: &Arc<profile::Profiler>,
) -> anyhow::Result<Arc<journal::Journal>> {
    let dir = config.server_dir().join("journal");
    let mut found = journal::read_dir(&dir)?;
    let mut leftovers = match &stream {
        Some(s) => s.take_leftovers().await.context("reading what the last run left in the journal stream")?,
        None => Default::default(),
    };
    found.records.extend(std::mem::take(&mut leftovers.records));
    let mut kept = 0;
    if !found.records.is_empty() {
        let deps = replay::ReplayDeps {
            titles,
            blobs,
            world,
            recovery,
            server_id: recovery.server_id(),
            lock_ttl_ms: config.lock_ttl_seconds as i64 * 1000,
            lock_wait: std::time::Duration::from_secs(config.login_lock_wait_seconds),
            now_ms,
            data_dir: &config.data_dir,
            format: config.player_file_format,
        };
        let done = replay::replay(&deps, found.records).await.context("replaying the journal")?;
        tracing::info!(?done, dropped = found.bad_lines, "journal replayed");
        kept = done.kept;
    }
    if let Some(s) = &stream {
        // The players replay could not apply yet keep their records in the
        // kept stream; the others' copies go.
        for (key, through) in &leftovers.kept {
            if !recovery.is_unsaved(key) {
                if let Err(e) = s.forget_kept(key, *through).await {
                    tracing::warn!(title = %key.0, player = %key.1, error = %format!("{e:#}"), "removing replayed records from the kept stream failed; a later takeover skips them");
                }
            }
        }
        s.drop_leftovers(&leftovers).await.context("emptying the journal stream after replay")?;
    }
    if kept == 0 {
        // Every record is now in a player file (or with the orphans).
        for path in &found.segments {
            std::fs::remove_file(path).with_context(|| format!("deleting {}", path.display()))?;
        }
    } else {
        // Records that may still apply stay where the next start and other
        // servers' takeovers read them; new segments follow them.
        tracing::warn!(
            kept,
            segments = found.segments.len(),
            "journal segments kept: some records could not apply yet"
        );
    }
    Ok(Arc::new(if let (true, Some(stream)) = (config.journal, stream) {
        journal::jetstream::open(stream, config.profiling.then(|| profiler.clone()))
    } else if config.journal {
        journal::Journal::open(&dir, found.next_id, config.profiling.then(|| profiler.clone()))?
    } else {
        journal::Journal::disabled()
    }))
}
