//! Citadel's game server: a headless library (`main.rs` only parses the
//! command line). The only crate with wire types, HTTP and WebSockets.
//!
//! # Layout
//! - [`config`]: configuration (file, environment, flags) and limits.
//! - [`protocol`]: protocol v1 wire types and error codes.
//! - [`http`]: the router; HTTP and WebSocket share one dispatcher.
//! - [`session`]: per-player sessions, the injected clock.
//! - [`blob`]: player file storage (filesystem; S3 to come).
//! - [`auth`]: signed session tokens.
//! - [`titles`]: the titles served.
//! - [`world`]: data shared between servers (player locks).
//! - [`listener`]: the connection limit.
//! - [`docs`]: generated sections of the protocol and configuration docs.

pub mod auth;
pub mod blob;
pub mod config;
pub mod docs;
pub mod http;
pub mod listener;
pub mod protocol;
pub mod session;
pub mod titles;
pub mod world;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
pub use http::{app, AppState};
pub use session::{Clock, SystemClock};

/// The token secret: from the config, or kept in `data_dir/token-secret`
/// (created with 32 random bytes on first start).
fn token_secret(config: &Config) -> anyhow::Result<Vec<u8>> {
    if let Some(s) = &config.token_secret {
        return Ok(s.as_bytes().to_vec());
    }
    let path = config.data_dir.join("token-secret");
    if let Ok(s) = std::fs::read_to_string(&path) {
        anyhow::ensure!(s.trim().len() >= 32, "{} is shorter than 32 characters", path.display());
        return Ok(s.trim().as_bytes().to_vec());
    }
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).context("reading /dev/urandom")?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating {}", config.data_dir.display()))?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        // Readable by the server's user only: whoever reads it can forge tokens.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        f.write_all(hex.as_bytes())
            .and_then(|_| f.sync_all())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(hex.into_bytes())
}

/// A random id for this server process (lock owner).
fn process_nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    format!("{:016x}", h.finish())
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
    config.check()?;
    let titles = Arc::new(titles::Titles::load_dir(&config.titles)?);
    let signer = auth::Signer::new(&token_secret(&config)?);
    let blobs: Arc<dyn blob::BlobStore> = Arc::new(blob::FsBlobStore::new(&config.data_dir));
    let world: Arc<dyn world::WorldStore> = Arc::new(world::SqliteWorld::open(&config.data_dir.join("world.sqlite3"))?);
    let connections_max = config.limits.connections_max;
    let server_id = format!("{}-{}", std::process::id(), &process_nonce());
    let deps = Arc::new(session::Deps { config, titles, blobs, world, clock, server_id });
    let sessions = session::Sessions::new(deps.clone());
    let token = CancellationToken::new();
    let state =
        AppState { deps, sessions: sessions.clone(), signer, shutdown: token.clone(), sockets: TaskTracker::new() };
    let sockets = state.sockets.clone();
    let listener = listener::Limited::new(listener, connections_max);
    tracing::info!(addr = %listener.local_addr_string(), "listening");
    let stop = token.clone();
    tokio::spawn(async move {
        shutdown.await;
        stop.cancel();
    });
    let graceful = token.clone();
    axum::serve(listener, app(state)).with_graceful_shutdown(async move { graceful.cancelled().await }).await?;
    sockets.close();
    sockets.wait().await;
    sessions.shutdown().await;
    tracing::info!("shut down cleanly");
    Ok(())
}
