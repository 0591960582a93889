//! The WebSocket connections of this server, by player: what an admin
//! reaches when forcing a player out (`kick`) or telling every player
//! something (`broadcast`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Broadcast messages a slow connection may fall behind by before it
/// skips to the newest (they are rare, human-written notices).
const NOTICES_QUEUED_MAX: usize = 16;

/// The longest broadcast text: a notice on a game screen, not a document.
pub const NOTICE_BYTES_MAX: usize = 1024;

type Key = (String, String);

/// Every open player connection.
#[derive(Debug)]
pub struct Connections {
    /// One token per player with open connections, cancelled to close them
    /// all, and how many connections share it.
    players: Mutex<HashMap<Key, Entry>>,
    notices: broadcast::Sender<Arc<str>>,
    next_id: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct Entry {
    token: CancellationToken,
    connections: usize,
    /// Tells this entry from a later one of the same player.
    id: u64,
}

/// A connection's registration; dropping it unregisters the connection.
#[derive(Debug)]
pub struct Registered {
    owner: Arc<Connections>,
    key: Key,
    token: CancellationToken,
    id: u64,
}

impl Registered {
    /// Cancelled when an admin forces the player out.
    pub fn kicked(&self) -> &CancellationToken {
        &self.token
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut players = self.owner.players.lock().unwrap_or_else(|p| p.into_inner());
        // A kicked player's entry was removed already; a newer one is not
        // ours to count down.
        if let Some(e) = players.get_mut(&self.key).filter(|e| e.id == self.id) {
            e.connections -= 1;
            if e.connections == 0 {
                players.remove(&self.key);
            }
        }
    }
}

impl Connections {
    pub fn new() -> Arc<Connections> {
        Arc::new(Connections {
            players: Mutex::new(HashMap::new()),
            notices: broadcast::channel(NOTICES_QUEUED_MAX).0,
            next_id: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// Registers one connection of a player.
    pub fn register(self: &Arc<Self>, title: &str, player: &str) -> Registered {
        let key = (title.to_string(), player.to_string());
        let mut players = self.players.lock().unwrap_or_else(|p| p.into_inner());
        let e = players.entry(key.clone()).or_insert_with(|| Entry {
            token: CancellationToken::new(),
            connections: 0,
            id: self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        });
        e.connections += 1;
        Registered { owner: self.clone(), key, token: e.token.clone(), id: e.id }
    }

    /// Closes every connection of a player; returns how many there were.
    pub fn kick(&self, title: &str, player: &str) -> usize {
        let mut players = self.players.lock().unwrap_or_else(|p| p.into_inner());
        match players.remove(&(title.to_string(), player.to_string())) {
            Some(e) => {
                e.token.cancel();
                e.connections
            }
            None => 0,
        }
    }

    /// Players with at least one open connection.
    pub fn players(&self) -> usize {
        self.players.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Sends `text` to every open connection; returns how many listen.
    pub fn broadcast(&self, text: &str) -> usize {
        self.notices.send(text.into()).unwrap_or(0)
    }

    pub fn notices(&self) -> broadcast::Receiver<Arc<str>> {
        self.notices.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kicks_reach_every_connection_of_the_player_and_entries_go_away() {
        let c = Connections::new();
        let a1 = c.register("mini", "ann");
        let a2 = c.register("mini", "ann");
        let b = c.register("mini", "bob");
        assert_eq!(c.players(), 2);
        assert_eq!(c.kick("mini", "ann"), 2);
        assert!(a1.kicked().is_cancelled() && a2.kicked().is_cancelled());
        assert!(!b.kicked().is_cancelled());
        let again = c.register("mini", "ann");
        drop((a1, a2));
        assert_eq!(c.players(), 2, "the old connections do not count down the new one");
        drop(again);
        drop(b);
        assert_eq!(c.players(), 0);
        assert_eq!(c.kick("mini", "ann"), 0);
    }
}
