//! Tests of `registry.rs`: sessions starting, idling, saving slowly,
//! and starting in a storm.

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
    let sessions = Sessions::new(deps("idle", config, Arc::new(citadel_store::blob::FsBlobStore::new(&data))).await);
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
    until("as many sessions start as there are turns", || blobs.reading.load(Ordering::SeqCst) == STARTS_AT_ONCE).await;
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
