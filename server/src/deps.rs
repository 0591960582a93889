//! What the server's parts share: the configuration, the titles served,
//! storage, the journal, the clock, the profiler; built once at start
//! (`lib.rs`) and passed to sessions, replay and the admin API.

use std::sync::Arc;

use citadel_store::blob::BlobStore;
use citadel_store::world::WorldStore;

use crate::config::Config;
use crate::journal::Journal;
use crate::titles::Titles;

/// The injected clock: game time for the rules engine.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The real clock.
#[derive(Debug)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
    }
}

/// What sessions need from the rest of the server.
#[derive(Debug)]
pub struct Deps {
    pub config: Config,
    pub titles: Arc<Titles>,
    pub blobs: Arc<dyn BlobStore>,
    pub world: Arc<dyn WorldStore>,
    pub clock: Arc<dyn Clock>,
    pub journal: Arc<Journal>,
    /// Taking players over from servers that died holding them.
    pub recovery: Arc<crate::recovery::Recovery>,
    /// This server's identity as a lock owner (kept across restarts of the
    /// same data directory, so a restarted server takes its own locks back).
    pub server_id: String,
    pub profiler: Arc<crate::profile::Profiler>,
    /// Requests in flight and the slow ones.
    pub flights: Arc<crate::profile::Flights>,
    /// The message bus between servers (in-process when there is one server).
    pub bus: crate::bus::SharedBus,
    /// The players this server pushes to: their sockets, their next HTTP answer.
    pub connections: Arc<crate::connections::Connections>,
}
