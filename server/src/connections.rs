//! The players this server reaches without being asked: their WebSocket
//! connections, and for a player with a live session but no socket (an
//! HTTP client) the pushes kept for their next answer. What an admin
//! reaches when forcing a player out (`kick`) or telling every player
//! something (`broadcast`), and where a session's timer completions, clan
//! chat and notifications go (`push`).
//!
//! A slow reader never holds anyone up: each socket has a bounded queue
//! and an HTTP player a bounded list of pending pushes; what does not fit
//! is dropped and counted (`dropped`, in `/metrics`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::protocol::Push;

/// Broadcast messages a slow connection may fall behind by before it
/// skips to the newest (they are rare, human-written notices).
const NOTICES_QUEUED_MAX: usize = 16;

/// The longest broadcast text: a notice on a game screen, not a document.
pub const NOTICE_BYTES_MAX: usize = 1024;

/// Pushes waiting to be written to one socket. A client that reads
/// nothing for this many (a stalled tab, a dead link not yet timed out)
/// loses the newest rather than grow the server's memory; a busy clan's
/// chat is a few lines a second.
pub const SOCKET_PUSHES_MAX: usize = 256;

/// Pushes kept for an HTTP player's next answer, oldest dropped first:
/// an HTTP client polls every few seconds at most, and what it missed
/// beyond this is on the state it reads anyway.
pub const PENDING_PUSHES_MAX: usize = 64;

type Key = (String, String);

/// Every player this server can push to.
#[derive(Debug)]
pub struct Connections {
    players: Mutex<HashMap<Key, Entry>>,
    /// Players who set a watch area (maybe since gone: skipped and dropped
    /// when met), so that a map change looks at watchers only, not at every
    /// connection. Locked after `players` when both are.
    watching: Mutex<std::collections::HashSet<Key>>,
    notices: broadcast::Sender<Arc<str>>,
    next_id: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Debug)]
struct Entry {
    /// Cancelled to close every socket of the player (then replaced).
    token: CancellationToken,
    /// Each open socket's queue, by connection id.
    sockets: Vec<(u64, mpsc::Sender<Arc<str>>)>,
    /// The player has a live session here: keep pushes for HTTP answers.
    session: bool,
    /// Pushes for the next HTTP answer (while there is no socket).
    pending: VecDeque<Arc<str>>,
    /// The map area the player watches (`map_watch`).
    watch: Option<Area>,
}

/// A square of the map a player watches: `region`, corners inclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Area {
    pub region: String,
    pub x0: i32,
    pub y0: i32,
    pub x1: i32,
    pub y1: i32,
}

impl Area {
    /// The square of `radius` spots around `(x, y)`.
    pub fn around(region: &str, x: i32, y: i32, radius: i32) -> Area {
        Area {
            region: region.to_string(),
            x0: x.saturating_sub(radius),
            y0: y.saturating_sub(radius),
            x1: x.saturating_add(radius),
            y1: y.saturating_add(radius),
        }
    }

    pub fn contains(&self, region: &str, x: i32, y: i32) -> bool {
        self.region == region && (self.x0..=self.x1).contains(&x) && (self.y0..=self.y1).contains(&y)
    }
}

impl Entry {
    fn unused(&self) -> bool {
        self.sockets.is_empty() && !self.session
    }
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
        let mut players = self.owner.lock();
        if let Some(e) = players.get_mut(&self.key) {
            e.sockets.retain(|(id, _)| *id != self.id);
            if e.unused() {
                players.remove(&self.key);
            }
        }
    }
}

/// Where a push went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Queued on this many sockets of the player.
    Sockets(usize),
    /// Kept for the player's next HTTP answer.
    Pending,
    /// The player is not on this server.
    NotHere,
}

impl Connections {
    pub fn new() -> Arc<Connections> {
        Arc::new(Connections {
            players: Mutex::new(HashMap::new()),
            watching: Mutex::new(std::collections::HashSet::new()),
            notices: broadcast::channel(NOTICES_QUEUED_MAX).0,
            next_id: AtomicU64::new(1),
            dropped: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        // Each critical section is one map operation that cannot leave the
        // map inconsistent, so a poisoned lock is still usable.
        self.players.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn entry<'a>(players: &'a mut HashMap<Key, Entry>, title: &str, player: &str) -> &'a mut Entry {
        players.entry((title.to_string(), player.to_string())).or_insert_with(|| Entry {
            token: CancellationToken::new(),
            sockets: Vec::new(),
            session: false,
            pending: VecDeque::new(),
            watch: None,
        })
    }

    /// Registers one socket of a player; its pushes arrive on the receiver.
    pub fn register(self: &Arc<Self>, title: &str, player: &str) -> (Registered, mpsc::Receiver<Arc<str>>) {
        let (tx, rx) = mpsc::channel(SOCKET_PUSHES_MAX);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut players = self.lock();
        let e = Self::entry(&mut players, title, player);
        e.sockets.push((id, tx));
        // What waited for an HTTP answer goes to the socket instead.
        for p in e.pending.drain(..) {
            let _ = e.sockets[e.sockets.len() - 1].1.try_send(p);
        }
        let key = (title.to_string(), player.to_string());
        (Registered { owner: self.clone(), key, token: e.token.clone(), id }, rx)
    }

    /// A session of the player started here: keep pushes for their HTTP answers.
    pub fn session_started(&self, title: &str, player: &str) {
        Self::entry(&mut self.lock(), title, player).session = true;
    }

    /// The player's session here ended: nothing more is kept for them.
    pub fn session_ended(&self, title: &str, player: &str) {
        let mut players = self.lock();
        let key = (title.to_string(), player.to_string());
        if let Some(e) = players.get_mut(&key) {
            e.session = false;
            e.pending.clear();
            if e.unused() {
                players.remove(&key);
            }
        }
    }

    /// Sends `push` to the player: to every socket they have here, else to
    /// their next HTTP answer if they have a session here.
    pub fn push(&self, title: &str, player: &str, push: &Push) -> Delivered {
        let text: Arc<str> = serde_json::to_string(push).unwrap_or_default().into();
        self.push_text(title, player, text)
    }

    fn push_text(&self, title: &str, player: &str, text: Arc<str>) -> Delivered {
        let mut players = self.lock();
        let Some(e) = players.get_mut(&(title.to_string(), player.to_string())) else {
            return Delivered::NotHere;
        };
        if !e.sockets.is_empty() {
            for (_, tx) in &e.sockets {
                if tx.try_send(text.clone()).is_err() {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            return Delivered::Sockets(e.sockets.len());
        }
        if !e.session {
            return Delivered::NotHere;
        }
        if e.pending.len() >= PENDING_PUSHES_MAX {
            e.pending.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        e.pending.push_back(text);
        Delivered::Pending
    }

    /// The pushes kept for the player's HTTP answer, oldest first.
    pub fn take_pending(&self, title: &str, player: &str) -> Vec<Arc<str>> {
        match self.lock().get_mut(&(title.to_string(), player.to_string())) {
            Some(e) => e.pending.drain(..).collect(),
            None => Vec::new(),
        }
    }

    /// Sets (or clears) the map area the player watches; kept while the
    /// player has a socket or a session here.
    pub fn set_watch(&self, title: &str, player: &str, area: Option<Area>) {
        let mut players = self.lock();
        let key = (title.to_string(), player.to_string());
        if let Some(e) = players.get_mut(&key) {
            let mut watching = self.watching.lock().unwrap_or_else(|p| p.into_inner());
            if area.is_some() {
                watching.insert(key);
            } else {
                watching.remove(&key);
            }
            e.watch = area;
        }
    }

    /// The players here watching a spot of `title`'s map.
    pub fn watchers(&self, title: &str, region: &str, x: i32, y: i32) -> Vec<String> {
        let players = self.lock();
        let mut watching = self.watching.lock().unwrap_or_else(|p| p.into_inner());
        // Those gone (or who stopped watching) leave the set here.
        watching.retain(|k| players.get(k).is_some_and(|e| e.watch.is_some()));
        watching
            .iter()
            .filter(|(t, p)| {
                t == title
                    && players
                        .get(&(t.clone(), p.clone()))
                        .and_then(|e| e.watch.as_ref())
                        .is_some_and(|a| a.contains(region, x, y))
            })
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Whether any player of `title` has a socket or a session here.
    pub fn any_in(&self, title: &str) -> bool {
        self.lock().keys().any(|(t, _)| t == title)
    }

    /// Whether the player has a socket open here.
    pub fn online(&self, title: &str, player: &str) -> bool {
        self.lock().get(&(title.to_string(), player.to_string())).is_some_and(|e| !e.sockets.is_empty())
    }

    /// Closes every socket of a player; returns how many there were.
    pub fn kick(&self, title: &str, player: &str) -> usize {
        let mut players = self.lock();
        match players.get_mut(&(title.to_string(), player.to_string())) {
            Some(e) => {
                e.token.cancel();
                e.token = CancellationToken::new();
                e.pending.clear();
                e.sockets.len()
            }
            None => 0,
        }
    }

    /// Players with at least one open socket.
    pub fn players(&self) -> usize {
        self.lock().values().filter(|e| !e.sockets.is_empty()).count()
    }

    /// Pushes dropped since start: a socket's queue was full, or an HTTP
    /// player's pending list overflowed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
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

    fn notice(n: usize) -> Push {
        Push::Notice { text: n.to_string() }
    }

    #[test]
    fn kicks_reach_every_connection_of_the_player_and_entries_go_away() {
        let c = Connections::new();
        let (a1, _r1) = c.register("mini", "ann");
        let (a2, _r2) = c.register("mini", "ann");
        let (b, _r3) = c.register("mini", "bob");
        assert_eq!(c.players(), 2);
        assert_eq!(c.kick("mini", "ann"), 2);
        assert!(a1.kicked().is_cancelled() && a2.kicked().is_cancelled());
        assert!(!b.kicked().is_cancelled());
        let (again, _r4) = c.register("mini", "ann");
        assert!(!again.kicked().is_cancelled(), "a new socket after a kick is not closed by it");
        drop((a1, a2));
        assert_eq!(c.players(), 2, "the old connections do not count down the new one");
        drop(again);
        drop(b);
        assert_eq!(c.players(), 0);
        assert_eq!(c.kick("mini", "ann"), 0);
        assert!(c.lock().is_empty(), "no entry is left behind");
    }

    #[test]
    fn pushes_go_to_every_socket_or_wait_for_an_http_answer_bounded() {
        let c = Connections::new();
        assert_eq!(c.push("mini", "ann", &notice(0)), Delivered::NotHere, "nobody here: nothing kept");
        c.session_started("mini", "ann");
        for n in 0..PENDING_PUSHES_MAX + 3 {
            assert_eq!(c.push("mini", "ann", &notice(n)), Delivered::Pending);
        }
        let pending = c.take_pending("mini", "ann");
        assert_eq!(pending.len(), PENDING_PUSHES_MAX);
        assert_eq!(&*pending[0], r#"{"event":"notice","text":"3"}"#, "the oldest were dropped");
        assert_eq!(c.dropped(), 3);
        assert!(c.take_pending("mini", "ann").is_empty(), "taken once");
        c.push("mini", "ann", &notice(100));
        let (s1, mut r1) = c.register("mini", "ann");
        let (_s2, mut r2) = c.register("mini", "ann");
        assert_eq!(
            &*r1.try_recv().unwrap(),
            r#"{"event":"notice","text":"100"}"#,
            "a pending push moves to the socket"
        );
        assert_eq!(c.push("mini", "ann", &notice(1)), Delivered::Sockets(2));
        assert!(r1.try_recv().is_ok() && r2.try_recv().is_ok());
        for n in 0..SOCKET_PUSHES_MAX + 1 {
            c.push("mini", "ann", &notice(n));
        }
        assert_eq!(c.dropped(), 3 + 2, "one too many for each socket nobody reads");
        drop(s1);
        c.session_ended("mini", "ann");
        assert_eq!(c.push("mini", "ann", &notice(2)), Delivered::Sockets(1), "the socket still open");
        drop(_s2);
        assert_eq!(c.push("mini", "ann", &notice(3)), Delivered::NotHere);
        assert!(c.lock().is_empty());
    }

    #[test]
    fn map_watchers_are_found_by_the_spot_and_forgotten_with_the_player() {
        let c = Connections::new();
        let (s, _r) = c.register("mini", "ann");
        c.set_watch("mini", "ann", Some(Area::around("north", 10, 10, 2)));
        c.set_watch("mini", "nobody", Some(Area::around("north", 10, 10, 2)));
        assert_eq!(c.watchers("mini", "north", 12, 8), vec!["ann".to_string()]);
        assert!(c.watchers("mini", "north", 13, 10).is_empty());
        assert!(c.watchers("mini", "south", 10, 10).is_empty());
        assert!(c.watchers("fort", "north", 10, 10).is_empty());
        c.set_watch("mini", "ann", None);
        assert!(c.watchers("mini", "north", 10, 10).is_empty());
        c.set_watch("mini", "ann", Some(Area::around("north", 0, 0, 1)));
        drop(s);
        assert!(c.watchers("mini", "north", 0, 0).is_empty(), "gone with the socket");
        assert_eq!(Area::around("r", i32::MAX, 0, 5).x1, i32::MAX, "no overflow");
    }
}
