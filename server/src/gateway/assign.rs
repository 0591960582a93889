//! Picking a game server for a player: the server already holding the
//! player's lease if it is live; otherwise the least loaded live,
//! non-draining server serving the title, by the status each server
//! reports (`crate::status`) plus what this gateway sent it since.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use citadel_store::world::{ServerStatus, WorldStore};

use crate::deps::Clock;

/// How old a server's last heartbeat may be for it to get players: two
/// heartbeats (`status::HEARTBEAT_INTERVAL`, 5 s) and 2 s of slack. With
/// the list refreshed every [`LIST_REFRESH_MS`], a server that died gets
/// no player 13 s after its last heartbeat.
pub const LIVE_MS: i64 = 2 * crate::status::HEARTBEAT_INTERVAL.as_millis() as i64 + 2_000;

/// How often the gateway reads the server list: a login costs no world
/// store read for it, and a new or dead server is seen within a second.
pub const LIST_REFRESH_MS: i64 = 1_000;

/// How long a player sent to a server counts towards its load before its
/// heartbeats show them: two heartbeats. Counting them stops a burst of
/// logins between heartbeats from all going to the server that looked
/// emptiest; a player both reported and counted is counted on every
/// server alike, which keeps the comparison fair.
pub const SENT_COUNTS_MS: i64 = 2 * crate::status::HEARTBEAT_INTERVAL.as_millis() as i64;

/// How much a busy runtime weighs against a server: a server busy half
/// the time counts as twice as loaded.
const BUSY_WEIGHT: f64 = 2.0;

/// Where a player goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    pub id: String,
    pub address: String,
}

#[derive(Debug, Default)]
struct View {
    fetched_ms: Option<i64>,
    servers: Vec<ServerStatus>,
    /// Per server, when this gateway sent each recent player (ms).
    sent: HashMap<String, VecDeque<i64>>,
}

/// The server list as this gateway sees it.
#[derive(Debug)]
pub struct Assigner {
    world: Arc<dyn WorldStore>,
    clock: Arc<dyn Clock>,
    view: Mutex<View>,
    /// One refresh at a time; the others use the list they have.
    refreshing: tokio::sync::Mutex<()>,
}

impl Assigner {
    pub fn new(world: Arc<dyn WorldStore>, clock: Arc<dyn Clock>) -> Assigner {
        Assigner { world, clock, view: Mutex::new(View::default()), refreshing: tokio::sync::Mutex::new(()) }
    }

    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the list again when it is older than [`LIST_REFRESH_MS`].
    async fn refresh(&self, now: i64) -> Result<(), citadel_store::world::WorldError> {
        let due = |v: &View| v.fetched_ms.is_none_or(|at| now - at >= LIST_REFRESH_MS || at > now);
        if !due(&self.view()) {
            return Ok(());
        }
        let _one = self.refreshing.lock().await;
        if !due(&self.view()) {
            return Ok(());
        }
        let servers = self.world.servers(now, LIVE_MS).await?;
        let mut v = self.view();
        v.fetched_ms = Some(now);
        v.servers = servers;
        Ok(())
    }

    /// The server for `player` of `title`: `None` when no live,
    /// non-draining server serves the title.
    pub async fn pick(&self, title: &str, player: &str) -> Result<Option<Assigned>, citadel_store::world::WorldError> {
        let now = self.clock.now_ms();
        self.refresh(now).await?;
        let lock = crate::player_file::player_lock(title, player);
        let holder = self.world.holder(&lock, now).await?.map(|l| l.owner);
        let mut v = self.view();
        let serves = |s: &ServerStatus| s.titles.contains_key(title) && !s.draining && now - s.heartbeat_ms <= LIVE_MS;
        if let Some(s) = holder.and_then(|h| v.servers.iter().find(|s| s.id == h && serves(s))) {
            // Already live there: any other server would wait for its lock.
            return Ok(Some(Assigned { id: s.id.clone(), address: s.address.clone() }));
        }
        let View { servers, sent, .. } = &mut *v;
        for times in sent.values_mut() {
            // Oldest first: what expired is at the front.
            while times.front().is_some_and(|&t| now - t >= SENT_COUNTS_MS) {
                times.pop_front();
            }
        }
        let load = |s: &ServerStatus| {
            let recent = sent.get(&s.id).map_or(0, VecDeque::len) as f64;
            (s.players.max(0) as f64 + recent) * (1.0 + BUSY_WEIGHT * s.busy.clamp(0.0, 1.0))
        };
        let best = servers
            .iter()
            .filter(|s| serves(s))
            .min_by(|a, b| load(a).total_cmp(&load(b)).then_with(|| a.id.cmp(&b.id)))
            .map(|s| Assigned { id: s.id.clone(), address: s.address.clone() });
        if let Some(b) = &best {
            sent.entry(b.id.clone()).or_default().push_back(now);
        }
        Ok(best)
    }
}
