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
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use citadel_runtime::PlayerState;
    use citadel_store::blob::{BlobStore, Precondition};

    use super::*;
    use crate::config::Config;
    use crate::deps::SystemClock;
    use crate::journal::Journal;
    use crate::titles::Titles;

    async fn deps(name: &str, config: Config, blobs: Arc<dyn BlobStore>) -> Arc<Deps> {
        let world = citadel_store::world::SqliteWorld::open(&data_dir(name).join("world.sqlite3")).unwrap();
        deps_with(name, config, blobs, Arc::new(world)).await
    }

    async fn deps_with(
        name: &str,
        config: Config,
        blobs: Arc<dyn BlobStore>,
        world: Arc<dyn citadel_store::world::WorldStore>,
    ) -> Arc<Deps> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        let data = data_dir(name);
        Arc::new(Deps {
            config,
            titles: Arc::new(Titles::open(&root, None).await.unwrap()),
            blobs,
            world,
            clock: Arc::new(SystemClock),
            journal: Arc::new(Journal::disabled()),
            recovery: Arc::new(crate::recovery::Recovery::new("test", &data.join("server/journal"), None)),
            server_id: "test".into(),
            profiler: Arc::new(crate::profile::Profiler::new(true)),
            flights: crate::profile::Flights::new(Duration::from_millis(200)),
            bus: Arc::new(crate::bus::local::LocalBus::new()),
            connections: crate::connections::Connections::new(),
        })
    }

    /// Waits for `what` to hold (checked every 10 ms), failing after 10 s.
    async fn until(what: &str, mut holds: impl FnMut() -> bool) {
        let give_up = std::time::Instant::now() + Duration::from_secs(10);
        while !holds() {
            assert!(std::time::Instant::now() < give_up, "never happened: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn data_dir(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("citadel-session-{name}-{}", std::process::id()))
    }

    #[tokio::test]
    async fn idle_sessions_leave_no_trace_in_memory() {
        let data = data_dir("idle");
        let _ = std::fs::remove_dir_all(&data);
        let config = Config { idle_timeout_seconds: 1, ..Config::default() };
        let sessions =
            Sessions::new(deps("idle", config, Arc::new(citadel_store::blob::FsBlobStore::new(&data))).await);
        for p in ["a", "b", "c"] {
            sessions.login("mini", p).await.unwrap();
        }
        assert_eq!((sessions.len(), sessions.tracked_players()), (3, 3));
        let started = std::time::Instant::now();
        until("idle sessions and their file locks are gone", || (sessions.len(), sessions.tracked_players()) == (0, 0))
            .await;
        assert!(started.elapsed() >= Duration::from_millis(900), "not before the idle timeout");
        // And the players were saved on the way out.
        assert!(data.join("players/mini/a.json").is_file());
        sessions.shutdown().await;
    }

    /// Player files whose replacing writes (`saves`) or reads (`reads`)
    /// hang until the test lets them go; the reads under way at once.
    #[derive(Debug)]
    struct Stuck {
        inner: citadel_store::blob::FsBlobStore,
        saves_gate: tokio::sync::Semaphore,
        saves: AtomicUsize,
        reads_gate: tokio::sync::Semaphore,
        reading: AtomicUsize,
        most_reading: AtomicUsize,
    }

    impl Stuck {
        /// Saves hang; reads do not.
        fn saves(data: &std::path::Path) -> Stuck {
            Stuck::new(data, 0, tokio::sync::Semaphore::MAX_PERMITS)
        }
        /// Reads hang; saves do not.
        fn reads(data: &std::path::Path) -> Stuck {
            Stuck::new(data, tokio::sync::Semaphore::MAX_PERMITS, 0)
        }
        fn new(data: &std::path::Path, saves: usize, reads: usize) -> Stuck {
            Stuck {
                inner: citadel_store::blob::FsBlobStore::new(data),
                saves_gate: tokio::sync::Semaphore::new(saves),
                saves: AtomicUsize::new(0),
                reads_gate: tokio::sync::Semaphore::new(reads),
                reading: AtomicUsize::new(0),
                most_reading: AtomicUsize::new(0),
            }
        }
    }

    #[async_trait::async_trait]
    impl BlobStore for Stuck {
        async fn get(
            &self,
            key: &str,
        ) -> Result<Option<(Vec<u8>, citadel_store::blob::Etag)>, citadel_store::blob::BlobError> {
            let now = self.reading.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_reading.fetch_max(now, Ordering::SeqCst);
            let _pass = self.reads_gate.acquire().await;
            self.reading.fetch_sub(1, Ordering::SeqCst);
            self.inner.get(key).await
        }
        async fn put(
            &self,
            key: &str,
            bytes: Vec<u8>,
            cond: Precondition,
        ) -> Result<citadel_store::blob::Etag, citadel_store::blob::BlobError> {
            if matches!(cond, Precondition::Matches(_)) {
                self.saves.fetch_add(1, Ordering::SeqCst);
                let _pass = self.saves_gate.acquire().await;
            }
            self.inner.put(key, bytes, cond).await
        }
        async fn list(&self, dir: &str) -> Result<Vec<String>, citadel_store::blob::BlobError> {
            self.inner.list(dir).await
        }
        async fn delete(&self, key: &str) -> Result<(), citadel_store::blob::BlobError> {
            self.inner.delete(key).await
        }
    }

    #[tokio::test]
    async fn a_slow_save_does_not_hold_up_the_players_requests() {
        let data = data_dir("slow-save");
        let _ = std::fs::remove_dir_all(&data);
        let blobs = Arc::new(Stuck::saves(&data));
        let config = Config { save_interval_seconds: 1, ..Config::default() };
        let sessions = Sessions::new(deps("slow-save", config, blobs.clone()).await);
        sessions.login("mini", "a").await.unwrap();
        sessions.request("mini", "a", Command::GetState).await.unwrap();
        // The first periodic save falls within 1.5 save intervals.
        until("a save started", || blobs.saves.load(Ordering::SeqCst) > 0).await;
        assert_eq!(blobs.saves.load(Ordering::SeqCst), 1, "one save started and hangs");
        for _ in 0..3 {
            let answer = tokio::time::timeout(Duration::from_secs(1), sessions.request("mini", "a", Command::GetState));
            answer.await.expect("requests are answered while the save hangs").unwrap();
        }
        // Once storage comes back, shutdown saves everything.
        blobs.saves_gate.add_permits(100);
        sessions.shutdown().await;
        let bytes = std::fs::read(data.join("players/mini/a.json")).unwrap();
        assert_eq!(PlayerState::decode(&bytes).unwrap().0.seq, 5, "login, four get_state");
    }

    /// A world store with one connection that every call takes in turn
    /// (as the SQLite world store's), which the test can hold, counting
    /// the calls waiting for it by method.
    #[derive(Debug, Default)]
    struct OneConnection {
        connection: Arc<tokio::sync::Mutex<()>>,
        waiting: std::sync::Mutex<HashMap<&'static str, usize>>,
    }

    impl OneConnection {
        fn waiting(&self, method: &str) -> usize {
            lock(&self.waiting).get(method).copied().unwrap_or(0)
        }
    }

    #[derive(Debug)]
    struct Turns(Arc<OneConnection>);

    impl citadel_store::decorate::Around for Turns {
        fn around<'a, T: Send + 'a>(
            &'a self,
            method: &'static str,
            call: citadel_store::decorate::BoxFuture<'a, T>,
        ) -> citadel_store::decorate::BoxFuture<'a, T> {
            Box::pin(async move {
                *lock(&self.0.waiting).entry(method).or_default() += 1;
                let _turn = self.0.connection.lock().await;
                *lock(&self.0.waiting).entry(method).or_default() -= 1;
                call.await
            })
        }
    }

    /// The deadlock found at 10,000 players: a lease renewal queued for the
    /// world store's one connection, then the player's request queued
    /// behind it. When the connection frees up it goes to the renewal;
    /// were the renewal a future only the session's loop polls, it would
    /// never run (the loop waits inside the request) and neither would the
    /// request, nor any call after them. As a task of its own it runs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_renewal_waiting_for_the_world_store_never_blocks_the_request_behind_it() {
        let data = data_dir("one-connection");
        let _ = std::fs::remove_dir_all(&data);
        let store = Arc::new(OneConnection::default());
        let sqlite = citadel_store::world::SqliteWorld::open(&data.join("world.sqlite3")).unwrap();
        let inner: Arc<dyn citadel_store::world::WorldStore> = Arc::new(sqlite);
        let world = Arc::new(citadel_store::decorate::Decorated::new(inner, Turns(store.clone())));
        // A renewal every second (a third of the lease).
        let config = Config { lock_ttl_seconds: 3, ..Config::default() };
        let blobs = Arc::new(citadel_store::blob::FsBlobStore::new(&data));
        let sessions = Sessions::new(deps_with("one-connection", config, blobs, world).await);
        sessions.login("mini", "a").await.unwrap();

        let held = store.connection.clone().lock_owned().await;
        until("a lease renewal waits for the connection", || store.waiting("renew") == 1).await;
        let asking = sessions.clone();
        let request = tokio::spawn(async move {
            let info = Command::Clan(crate::protocol::ClanCommand::Info { clan: None });
            asking.request("mini", "a", info).await
        });
        until("the request waits behind it", || store.waiting("membership") == 1).await;
        drop(held);
        let answer = tokio::time::timeout(Duration::from_secs(5), request)
            .await
            .expect("the request is answered once the connection is free")
            .unwrap();
        assert_eq!(answer.unwrap_err().code, "not_in_clan");
        sessions.shutdown().await;
    }

    #[tokio::test]
    async fn a_login_storm_starts_a_bounded_number_of_sessions_at_once_and_every_player_gets_in() {
        let data = data_dir("storm");
        let _ = std::fs::remove_dir_all(&data);
        let blobs = Arc::new(Stuck::reads(&data));
        let sessions = Sessions::new(deps("storm", Config::default(), blobs.clone()).await);
        let players = 3 * STARTS_AT_ONCE;
        let logins: Vec<_> = (0..players)
            .map(|n| {
                let s = sessions.clone();
                tokio::spawn(async move { s.login("mini", &format!("p{n}")).await })
            })
            .collect();
        until("as many sessions start as there are turns", || blobs.reading.load(Ordering::SeqCst) == STARTS_AT_ONCE)
            .await;
        blobs.reads_gate.add_permits(players);
        for l in logins {
            l.await.unwrap().expect("every player of the storm logs in");
        }
        assert_eq!(sessions.len(), players);
        assert_eq!(blobs.most_reading.load(Ordering::SeqCst), STARTS_AT_ONCE, "never more sessions starting at once");
        sessions.shutdown().await;
    }

    #[tokio::test]
    async fn players_waiting_for_a_lock_held_elsewhere_do_not_keep_others_from_logging_in() {
        let data = data_dir("lock-wait");
        let _ = std::fs::remove_dir_all(&data);
        let world = Arc::new(citadel_store::world::SqliteWorld::open(&data.join("world.sqlite3")).unwrap());
        // More players than turns are held by another server, which keeps
        // them for longer than a login waits.
        use crate::deps::Clock;
        use citadel_store::world::Locks;
        let now = SystemClock.now_ms();
        let mut held = Vec::new();
        for n in 0..STARTS_AT_ONCE + 4 {
            let lock = crate::player_file::player_lock("mini", &format!("held{n}"));
            held.push(world.acquire(&lock, "elsewhere", 600_000, now).await.unwrap().expect("free"));
        }
        let config = Config { login_lock_wait_seconds: 30, ..Config::default() };
        let blobs = Arc::new(citadel_store::blob::FsBlobStore::new(&data));
        let sessions = Sessions::new(deps_with("lock-wait", config, blobs, world.clone()).await);
        let waiting: Vec<_> = (0..STARTS_AT_ONCE + 4)
            .map(|n| {
                let s = sessions.clone();
                tokio::spawn(async move { s.login("mini", &format!("held{n}")).await })
            })
            .collect();
        until("every held player waits for their lock", || {
            sessions.deps.flights.in_flight().iter().filter(|f| f.stage == crate::profile::Stage::Lock).count()
                == STARTS_AT_ONCE + 4
        })
        .await;
        // Well before the waiting players give up (30 s).
        let free = tokio::time::timeout(Duration::from_secs(10), sessions.login("mini", "free")).await;
        free.expect("a free player logs in while others wait for their locks").unwrap();
        // The other server lets them go: they get in too.
        for lease in held {
            world.release(&lease).await.unwrap();
        }
        for w in waiting {
            w.await.unwrap().expect("a player whose lock came free logs in");
        }
        sessions.shutdown().await;
    }
}
