//! Every player session of this server: one queue per player in memory
//! (bounded, with a per-player request rate), started on a player's first
//! request and forgotten when their task ends. Requests for a player go to
//! their task one at a time; different players run in parallel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use citadel_runtime::Title;

use super::{AdminOp, Key, Msg, Reply};
use crate::deps::Deps;
use crate::protocol::{Answer, ApiError, Code, Command};

/// A token bucket: `rate` per second, bursts up to twice that.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, rate: f64) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * rate).min(rate * 2.0);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Where a session's requests queue. Messages are boxed: the channel's
/// first block holds 32 of them per session whether or not they come, and
/// a message inline is 200-odd bytes.
type Queue = mpsc::Sender<Box<Msg>>;

pub(super) struct Entry {
    generation: u64,
    tx: Queue,
    bucket: Arc<Mutex<Bucket>>,
}

/// Every player session of this server.
pub struct Sessions {
    pub(super) deps: Arc<Deps>,
    live: Mutex<HashMap<Key, Entry>>,
    file_locks: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
    generation: AtomicU64,
    pub(super) closing: CancellationToken,
    tasks: TaskTracker,
    /// Set by an admin: no new sessions (players already here go on).
    draining: std::sync::atomic::AtomicBool,
    /// Turns for starting a session (see [`STARTS_AT_ONCE`]).
    pub(super) turns: tokio::sync::Semaphore,
}

/// Sessions that may be starting at the same moment (taking the player's
/// lock, reading and decoding the file, the world store's calls, and the
/// request that started the session, usually the login, whose answer
/// holds the whole state). When thousands of players log in together
/// (after a restart), the rest wait for a turn without running, so the
/// requests of players already playing queue behind at most this many
/// starts instead of behind every one of them, and the world store's
/// queue behind at most this many starts' calls (docs/benchmarks.md, the
/// login storm). A session waiting for a lock held elsewhere gives its
/// turn back while it waits. Enough to keep a core busy when storage
/// answers in a few milliseconds; with storage that takes 30 ms a read
/// (S3), it still allows some 2,000 logins a second.
pub(super) const STARTS_AT_ONCE: usize = 16;

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("live", &self.len()).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Critical sections here are single map operations that cannot leave
    // the map inconsistent, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sessions {
    pub fn new(deps: Arc<Deps>) -> Arc<Sessions> {
        Arc::new(Sessions {
            deps,
            live: Mutex::new(HashMap::new()),
            file_locks: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(1),
            closing: CancellationToken::new(),
            tasks: TaskTracker::new(),
            draining: std::sync::atomic::AtomicBool::new(false),
            turns: tokio::sync::Semaphore::new(STARTS_AT_ONCE),
        })
    }

    /// Players in memory now.
    pub fn len(&self) -> usize {
        lock(&self.live).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Logs a player in: loads (or creates) them, runs the login hook.
    pub async fn login(self: &Arc<Self>, title: &str, player: &str) -> Result<Answer, ApiError> {
        self.check_draining(title, player)?;
        let flight = self.deps.flights.begin(title, player, "login", self.deps.clock.now_ms());
        let inflight = flight.inflight.clone();
        self.send(title, player, move |reply| Msg::Login(reply, inflight), false).await
    }

    /// Runs one request for a player, after the requests before it.
    pub async fn request(self: &Arc<Self>, title: &str, player: &str, cmd: Command) -> Result<Answer, ApiError> {
        self.request_with_token(title, player, i64::MAX, None, cmd).await
    }

    /// Runs one request made with a session token issued at `issued_ms`
    /// (refused when support logged the player out after that), with the
    /// request's idempotency key if it has one.
    pub async fn request_with_token(
        self: &Arc<Self>,
        title: &str,
        player: &str,
        issued_ms: i64,
        key: Option<String>,
        cmd: Command,
    ) -> Result<Answer, ApiError> {
        self.check_draining(title, player)?;
        let flight = self.deps.flights.begin(title, player, command_name(&cmd), self.deps.clock.now_ms());
        let inflight = flight.inflight.clone();
        self.send(title, player, move |reply| Msg::Do(cmd, key, issued_ms, reply, inflight), true).await
    }

    /// Stops (or resumes) taking new players; the ones here go on.
    pub fn set_draining(&self, on: bool) {
        self.draining.store(on, Ordering::Relaxed);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    fn check_draining(&self, title: &str, player: &str) -> Result<(), ApiError> {
        if self.draining() && !self.is_live(title, player) {
            return Err(ApiError::new(Code::Draining, "this server takes no new players; log in on another server"));
        }
        Ok(())
    }

    /// Every player with a session here now.
    pub fn live_keys(&self) -> Vec<(String, String)> {
        lock(&self.live).iter().filter(|(_, e)| !e.tx.is_closed()).map(|(k, _)| k.clone()).collect()
    }

    /// Whether the player has a session on this server now.
    pub fn is_live(&self, title: &str, player: &str) -> bool {
        lock(&self.live).get(&(title.to_string(), player.to_string())).is_some_and(|e| !e.tx.is_closed())
    }

    /// Runs an admin operation in the player's session, starting one if
    /// needed (taking the player's lock, as a login does).
    pub async fn admin(self: &Arc<Self>, title: &str, player: &str, op: AdminOp) -> Result<Answer, ApiError> {
        let flight = self.deps.flights.begin(title, player, "admin", self.deps.clock.now_ms());
        let inflight = flight.inflight.clone();
        self.send(title, player, move |reply| Msg::Admin(op, reply, inflight), false).await
    }

    /// [`Sessions::admin`] only if the player has a session here now
    /// (`None` when not): for looking at a player or ending their session.
    pub async fn admin_if_live(
        self: &Arc<Self>,
        title: &str,
        player: &str,
        op: AdminOp,
    ) -> Option<Result<Answer, ApiError>> {
        if !self.is_live(title, player) {
            return None;
        }
        Some(self.admin(title, player, op).await)
    }

    async fn send(
        self: &Arc<Self>,
        title: &str,
        player: &str,
        make: impl FnOnce(Reply) -> Msg,
        limited: bool,
    ) -> Result<Answer, ApiError> {
        if self.closing.is_cancelled() {
            return Err(ApiError::new(Code::ShuttingDown, "the server is shutting down"));
        }
        let key = (title.to_string(), player.to_string());
        let (tx, rx) = oneshot::channel();
        let mut msg = Some(Box::new(make(tx)));
        // A session found closing is replaced by a new one; twice is enough
        // (the second is always fresh).
        for _ in 0..2 {
            let (sender, bucket) = self.entry(&key)?;
            if limited {
                let rate = f64::from(self.deps.config.limits.requests_per_second_max);
                if !lock(&bucket).take(rate) {
                    return Err(ApiError::new(Code::RateLimited, format!("more than {rate} requests per second")));
                }
            }
            match sender.try_send(msg.take().unwrap_or_else(|| unreachable!("message is put back on retry"))) {
                Ok(()) => {
                    return rx
                        .await
                        .unwrap_or_else(|_| Err(ApiError::new(Code::Internal, "the session ended before answering")));
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    return Err(ApiError::new(
                        Code::SessionQueueFull,
                        format!("more than {} requests are waiting", self.deps.config.limits.session_queue_max),
                    ));
                }
                Err(mpsc::error::TrySendError::Closed(m)) => {
                    msg = Some(m);
                    let mut live = lock(&self.live);
                    if live.get(&key).is_some_and(|e| e.tx.is_closed()) {
                        live.remove(&key);
                    }
                }
            }
        }
        Err(ApiError::new(Code::Internal, "could not reach the player's session"))
    }

    /// The live session for `key`, started if needed.
    fn entry(self: &Arc<Self>, key: &Key) -> Result<(Queue, Arc<Mutex<Bucket>>), ApiError> {
        let mut live = lock(&self.live);
        if let Some(e) = live.get(key) {
            if !e.tx.is_closed() {
                return Ok((e.tx.clone(), e.bucket.clone()));
            }
        }
        if live.len() >= self.deps.config.limits.sessions_max {
            return Err(ApiError::new(Code::ServerFull, "this server holds as many players as it may"));
        }
        let title = self
            .deps
            .titles
            .get(&key.0)
            .ok_or_else(|| ApiError::new(Code::UnknownTitle, format!("no title `{}`", key.0)))?;
        let (tx, rx) = mpsc::channel(self.deps.config.limits.session_queue_max);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let rate = f64::from(self.deps.config.limits.requests_per_second_max);
        let bucket = Arc::new(Mutex::new(Bucket { tokens: rate * 2.0, at: Instant::now() }));
        live.insert(key.clone(), Entry { generation, tx: tx.clone(), bucket: bucket.clone() });
        let file_lock = lock(&self.file_locks).entry(key.clone()).or_default().clone();
        let me = self.clone();
        let key = key.clone();
        self.tasks.spawn(async move { me.run(key, generation, title, rx, file_lock).await });
        Ok((tx, bucket))
    }

    /// Saves every player and ends every session; returns when all are saved.
    pub async fn shutdown(&self) {
        self.closing.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
    async fn run(
        self: Arc<Self>,
        key: Key,
        generation: u64,
        title: Title,
        rx: mpsc::Receiver<Box<Msg>>,
        file_lock: Arc<tokio::sync::Mutex<()>>,
    ) {
        self.clone().run_inner(key.clone(), generation, title, rx, file_lock.clone()).await;
        // Forget the player's file lock unless a newer session holds a
        // reference to it: without this the map would keep one entry for
        // every player ever seen.
        let mut locks = lock(&self.file_locks);
        if Arc::strong_count(&file_lock) == 2 && locks.get(&key).is_some_and(|l| Arc::ptr_eq(l, &file_lock)) {
            locks.remove(&key);
        }
    }

    /// Players whose file lock is tracked (live or finishing); for tests.
    pub fn tracked_players(&self) -> usize {
        lock(&self.file_locks).len()
    }

    pub(super) fn leave(&self, key: &Key, generation: u64) {
        let mut live = lock(&self.live);
        if live.get(key).is_some_and(|e| e.generation == generation) {
            live.remove(key);
            self.deps.connections.session_ended(&key.0, &key.1);
        }
    }
}

/// A request's name while in flight.
fn command_name(cmd: &Command) -> &'static str {
    match cmd {
        Command::GetState => "get_state",
        Command::Ping => "ping",
        Command::Rules(a) => a.name(),
        Command::World(_) => "world",
        Command::Clan(_) => "clan",
    }
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
