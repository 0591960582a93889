//! Player sessions: one task per player in memory, applying that player's
//! requests one at a time, in order; different players run in parallel.
//!
//! A session loads the player file when it starts (creating it for a new
//! player), saves it while dirty every `save_interval_seconds`, and saves
//! and ends after `idle_timeout_seconds` without a request or at shutdown.
//! A per-player file lock is held for a session's whole life, so a new
//! session for the same player never loads the file before the old one
//! finished saving.
//!
//! Every operation that changes the player is numbered and journaled, and
//! answered only once its journal record is durable (see [`crate::journal`]).
//! Answers leave in request order: one that needs no record waits behind
//! the records still being written.
//!
//! Storage calls never hold up a player's requests: a periodic save
//! serializes the state, then writes it in the background while the
//! session goes on applying requests (on S3 a write takes tens of
//! milliseconds); lock renewals run beside requests the same way.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use citadel_runtime::{rules, PlayerState, Rng, Title};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::blob::{BlobStore, Precondition};
use crate::config::Config;
use crate::journal::{Journal, Op, Record, JOURNAL_FORMAT_VERSION};
use crate::profile::{InFlight, Stage};
use crate::protocol::{answer as serialize, Answer, ApiError, Code, Command};
use crate::titles::Titles;
use crate::world::{Lease, Position, WorldStore};

mod clan;
mod world;
use world::Next;
pub(crate) use world::{player_lock, read_player};

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
}

/// A request runs only while the player's lease has at least this part of
/// its lifetime left (a sixth: 10 s of the default 60): a request, its
/// journal commit and a slow world store fit in it many times over, so
/// nothing is acknowledged by a server whose lease may have run out.
const LEASE_MARGIN_DIVISOR: i64 = 6;

/// First pause before trying a held player lock again; doubles up to
/// [`LOCK_RETRY_MAX`] (a world store query per try, so not too often).
const LOCK_RETRY_FIRST: Duration = Duration::from_millis(20);
const LOCK_RETRY_MAX: Duration = Duration::from_millis(500);

type Key = (String, String);
/// A storage call running beside the session's requests.
type Background<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Reply = oneshot::Sender<Result<Answer, ApiError>>;

enum Msg {
    Login(Reply, Arc<InFlight>),
    /// A request, with the time its session token was issued.
    Do(Command, i64, Reply, Arc<InFlight>),
    Admin(AdminOp, Reply, Arc<InFlight>),
}

/// What customer support asks of a player's session (see `admin/support.rs`).
#[derive(Debug)]
pub enum AdminOp {
    /// The player's state as the session holds it, advanced to now (not journaled).
    View,
    /// Grant or revoke resources and items (journaled like any action).
    Adjust(citadel_runtime::support::Adjustment),
    /// Put back an earlier saved state (journaled with the whole state).
    Restore { state: Box<PlayerState>, snapshot: String },
    /// End the session now: save, release the player's lock.
    Logout,
}

/// Where a player's snapshots live: one folder per player, one blob per
/// snapshot named `<time ms, 13 digits>-<seq, 10 digits>.json`, so names
/// sort by time.
pub(crate) fn snapshot_dir(title: &str, player: &str) -> String {
    format!("snapshots/{title}/{player}")
}

/// Snapshots kept per player (the oldest beyond this are deleted): a
/// month of daily sessions, for support to go back to.
pub const SNAPSHOTS_KEPT: usize = 30;

/// A player's file is snapshotted when saved if the last snapshot (the
/// file's `snapshot_ms`) is older than this: at most one extra write per
/// player per hour, however many sessions they play.
const SNAPSHOT_INTERVAL_MS: i64 = 60 * 60 * 1000;

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

struct Entry {
    generation: u64,
    tx: mpsc::Sender<Msg>,
    bucket: Arc<Mutex<Bucket>>,
}

/// Every player session of this server.
pub struct Sessions {
    deps: Arc<Deps>,
    live: Mutex<HashMap<Key, Entry>>,
    file_locks: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
    generation: AtomicU64,
    closing: CancellationToken,
    tasks: TaskTracker,
    /// Set by an admin: no new sessions (players already here go on).
    draining: std::sync::atomic::AtomicBool,
}

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
        self.request_with_token(title, player, i64::MAX, cmd).await
    }

    /// Runs one request made with a session token issued at `issued_ms`
    /// (refused when support logged the player out after that).
    pub async fn request_with_token(
        self: &Arc<Self>,
        title: &str,
        player: &str,
        issued_ms: i64,
        cmd: Command,
    ) -> Result<Answer, ApiError> {
        self.check_draining(title, player)?;
        let flight = self.deps.flights.begin(title, player, command_name(&cmd), self.deps.clock.now_ms());
        let inflight = flight.inflight.clone();
        self.send(title, player, move |reply| Msg::Do(cmd, issued_ms, reply, inflight), true).await
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
        let mut msg = Some(make(tx));
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
    fn entry(self: &Arc<Self>, key: &Key) -> Result<(mpsc::Sender<Msg>, Arc<Mutex<Bucket>>), ApiError> {
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

    /// One player's session. Order of operations: take the player's file
    /// lock; load the file (or create a new player); then loop over
    /// requests, periodic saves, lock renewals and the idle deadline (an
    /// idle session whose save fails stays, and tries again); on the way
    /// out leave the live map, answer every request still queued, save,
    /// release the player lock if the save succeeded, and release the file
    /// lock.
    async fn run_inner(
        self: Arc<Self>,
        key: Key,
        generation: u64,
        title: Title,
        mut rx: mpsc::Receiver<Msg>,
        file_lock: Arc<tokio::sync::Mutex<()>>,
    ) {
        let _file = file_lock.lock_owned().await;
        let deps = self.deps.clone();
        let blob_key = blob_key(&key.0, &key.1);
        let mut session = match Session::load(&deps, &title, &key, &blob_key).await {
            Ok(s) => s,
            Err(e) => {
                // Refusals the player or an operator expects (locked
                // elsewhere, banned, full) are not server errors.
                if e.code == Code::Internal.as_str() {
                    tracing::error!(title = %key.0, player = %key.1, error = %e.message, "cannot load player");
                } else if e.code == Code::PlayerRecovering.as_str() {
                    tracing::warn!(title = %key.0, player = %key.1, error = %e.message, "cannot load player yet");
                } else {
                    tracing::info!(title = %key.0, player = %key.1, code = %e.code, "player not loaded");
                }
                self.leave(&key, generation);
                rx.close();
                while let Some(m) = rx.recv().await {
                    answer(m, Err(e.clone()));
                }
                return;
            }
        };
        let save_every = Duration::from_secs(deps.config.save_interval_seconds);
        let idle = Duration::from_secs(deps.config.idle_timeout_seconds);
        let renew_every = Duration::from_millis(deps.config.lock_ttl_seconds * 1000 / 3);
        // Each session's first save and renewal fall at a random point of
        // the first period: players who logged in together (after a
        // restart, say) must not all save and renew in the same instant,
        // while their requests wait behind the storage calls.
        let jitter = |period: Duration| period.mul_f64(0.5 + (session.rng.clone().next_u64() % 1000) as f64 / 1000.0);
        let mut save_tick = tokio::time::interval_at(tokio::time::Instant::now() + jitter(save_every), save_every);
        let mut renew_tick = tokio::time::interval_at(tokio::time::Instant::now() + jitter(renew_every), renew_every);
        // A tick missed while the previous call still ran comes one period
        // later, not at once.
        save_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renew_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut deadline = tokio::time::Instant::now() + idle;
        let mut saving: Option<Background<SaveOutcome>> = None;
        let mut renewing: Option<Background<RenewOutcome>> = None;
        loop {
            tokio::select! {
                biased;
                msg = rx.recv() => match msg {
                    Some(m) => {
                        session.handle(&deps, &title, m).await;
                        deadline = tokio::time::Instant::now() + idle;
                        if session.ending {
                            break;
                        }
                    }
                    None => break,
                },
                _ = self.closing.cancelled() => break,
                out = background(&mut saving) => {
                    saving = None;
                    session.saved(&deps, out).await;
                }
                out = background(&mut renewing) => {
                    renewing = None;
                    session.renewed(out);
                }
                _ = save_tick.tick(), if saving.is_none() => saving = session.start_save(&deps, &blob_key).await,
                _ = renew_tick.tick(), if renewing.is_none() => renewing = session.start_renew(&deps),
                _ = tokio::time::sleep_until(deadline) => {
                    session.save_now(&deps, &blob_key, saving.take()).await;
                    if !session.unsaved(&deps) {
                        break;
                    }
                    // The save failed (storage down): stay, keep the lock,
                    // and try again, so nobody loads an older file.
                    deadline = tokio::time::Instant::now() + save_every;
                }
            }
        }
        self.leave(&key, generation);
        rx.close();
        while let Some(m) = rx.recv().await {
            session.handle(&deps, &title, m).await;
        }
        if let Some(r) = renewing.take() {
            session.renewed(r.await);
        }
        session.save_now(&deps, &blob_key, saving.take()).await;
        // The profile's last seen time is when the player left.
        let current = deps.titles.get(&key.0).unwrap_or_else(|| title.clone());
        session.publish(&deps, &current, true).await;
        if session.unsaved(&deps) {
            // Keep the lock until it expires: another server must not load
            // the older file; this server's journal replays the player at
            // its next start.
            tracing::error!(title = %key.0, player = %key.1, "ending a session with unsaved operations; the journal keeps them");
            deps.recovery.note_unsaved(key.clone());
        } else {
            session.release(&deps).await;
        }
    }

    async fn run(
        self: Arc<Self>,
        key: Key,
        generation: u64,
        title: Title,
        rx: mpsc::Receiver<Msg>,
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

    fn leave(&self, key: &Key, generation: u64) {
        let mut live = lock(&self.live);
        if live.get(key).is_some_and(|e| e.generation == generation) {
            live.remove(key);
        }
    }
}

/// Waits for a background call, or forever when there is none (a
/// `select!` branch that never fires).
async fn background<T>(call: &mut Option<Background<T>>) -> T {
    match call {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// How a background save ended.
enum SaveOutcome {
    /// The file now holds every operation up to `seq`.
    Saved { etag: crate::blob::Etag, seq: u64 },
    /// The stored file moved on: another server wrote it.
    Fenced,
    /// The journal failed before the state's records were durable, so the
    /// state must not reach the file.
    NotDurable,
    /// Storage failed; the next save tries again.
    Failed(String),
}

type RenewOutcome = Result<Option<Lease>, crate::world::WorldError>;

/// Writes one snapshot of a player and deletes the oldest beyond
/// [`SNAPSHOTS_KEPT`]. A failure is logged, never passed on: a snapshot is
/// a convenience for support, the player file is what counts.
async fn write_snapshot(deps: &Deps, title: &str, player: &str, bytes: Vec<u8>, now: i64, seq: u64) {
    let dir = snapshot_dir(title, player);
    let key = format!("{dir}/{now:013}-{seq:010}.json");
    match deps.blobs.put(&key, bytes, Precondition::Absent).await {
        // The same name twice: written in the same millisecond at the same
        // seq, so it holds the same state.
        Ok(_) | Err(crate::blob::BlobError::PreconditionFailed) => {}
        Err(e) => {
            tracing::warn!(key = %key, error = %e, "writing a player snapshot failed");
            return;
        }
    }
    match deps.blobs.list(&dir).await {
        Ok(keys) if keys.len() > SNAPSHOTS_KEPT => {
            for old in &keys[..keys.len() - SNAPSHOTS_KEPT] {
                if let Err(e) = deps.blobs.delete(old).await {
                    tracing::warn!(key = %old, error = %e, "deleting an old player snapshot failed");
                }
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(dir = %dir, error = %e, "listing player snapshots failed"),
    }
}

/// The reply channel of a message.
fn answer_of(m: Msg) -> Reply {
    match m {
        Msg::Login(r, _) | Msg::Do(_, _, r, _) | Msg::Admin(_, r, _) => r,
    }
}

/// The answer to a banned player.
fn banned(r: &crate::world::Restriction) -> ApiError {
    ApiError::new(Code::Banned, format!("this player is banned: {}", r.reason))
        .details(json!({ "until_ms": r.banned_until_ms, "reason": r.reason }))
}

fn not_durable() -> ApiError {
    ApiError::new(Code::NotDurable, "the server could not make this action durable; it was not applied")
}

/// Where a player's file lives in the blob store.
pub(crate) fn blob_key(title: &str, player: &str) -> String {
    format!("players/{title}/{player}.json")
}

/// The result of an operation that returns the player's state.
#[derive(serde::Serialize)]
struct WithState<'a> {
    events: &'a [rules::Event],
    state: &'a PlayerState,
}

/// The result of a rules action.
#[derive(serde::Serialize)]
struct Events<'a> {
    events: &'a [rules::Event],
}

/// Runs one operation on a player: the single place where sessions and
/// journal replay change player state.
pub(crate) fn execute(
    title: &Title,
    state: &mut PlayerState,
    op: &Op,
    now: i64,
    rng: &mut Rng,
) -> Result<Answer, ApiError> {
    let result = run_op(title, state, op, now, rng);
    if result.is_ok() && !matches!(op, Op::Advance) {
        citadel_runtime::support::remember(state, &op_name(title, op), now);
    }
    result
}

fn run_op(title: &Title, state: &mut PlayerState, op: &Op, now: i64, rng: &mut Rng) -> Result<Answer, ApiError> {
    match op {
        Op::Login => {
            let events = rules::login(title, state, now, rng);
            serialize(&WithState { events: &events, state })
        }
        Op::Advance => {
            let events = rules::advance(title, state, now, rng);
            serialize(&WithState { events: &events, state })
        }
        Op::Act { action } => match rules::apply(title, state, action, now, rng) {
            Ok(events) => serialize(&Events { events: &events }),
            Err(e) => Err(ApiError::rules(e)),
        },
        Op::Raid { outcome } => match citadel_runtime::raid::attack(title, state, outcome, now, rng) {
            Ok(events) => serialize(&json!({ "events": events, "raid": outcome.raid, "result": outcome.result })),
            Err(e) => Err(ApiError::rules(e)),
        },
        Op::Relocate => match citadel_runtime::raid::relocate(title, state, now, rng) {
            Ok(events) => serialize(&Events { events: &events }),
            Err(e) => Err(ApiError::rules(e)),
        },
        Op::ClanFounded { clan } => match citadel_runtime::clan::pay_founding(title, state, now, rng) {
            Ok(events) => serialize(&json!({ "events": events, "clan": clan })),
            Err(e) => Err(ApiError::rules(e)),
        },
        Op::Adjust { change } => match citadel_runtime::support::adjust(title, state, change, now, rng) {
            Ok(events) => {
                let (before, after) = citadel_runtime::support::amounts_changed(state, change);
                serialize(&json!({ "events": events, "before": before, "after": after }))
            }
            Err(e) => Err(ApiError::rules(e)),
        },
        Op::Restore { state: earlier, snapshot } => match citadel_runtime::support::restore(state, earlier) {
            Ok(events) => serialize(&json!({ "events": events, "snapshot": snapshot })),
            Err(e) => Err(ApiError::rules(e)),
        },
    }
}

/// An operation's name in the profile: the action, `custom:<name>` for a
/// title's custom action (names the title does not define are
/// `custom:unknown`: a client must not grow the table).
fn op_name(title: &Title, op: &Op) -> String {
    let name = match op {
        Op::Login => "login",
        Op::Advance => "get_state",
        Op::Raid { .. } => "raid_end",
        Op::Relocate => "relocate",
        Op::ClanFounded { .. } => "clan_create",
        Op::Adjust { .. } => "admin_adjust",
        Op::Restore { .. } => "admin_restore",
        Op::Act { action: citadel_runtime::Action::Custom { name, .. } } if title.actions.contains_key(name) => {
            return format!("custom:{name}")
        }
        Op::Act { action: citadel_runtime::Action::Custom { .. } } => "custom:unknown",
        Op::Act { action } => action_name(action),
    };
    name.to_string()
}

/// A request's name while in flight.
fn command_name(cmd: &Command) -> &'static str {
    match cmd {
        Command::GetState => "get_state",
        Command::Ping => "ping",
        Command::Rules(a) => action_name(a),
        Command::World(_) => "world",
        Command::Clan(_) => "clan",
    }
}

/// A rules action's name (custom actions are `custom`).
fn action_name(a: &citadel_runtime::Action) -> &'static str {
    use citadel_runtime::Action as A;
    match a {
        A::Build { .. } => "build",
        A::Upgrade { .. } => "upgrade",
        A::Cancel { .. } => "cancel",
        A::SpeedUp { .. } => "speed_up",
        A::SpeedUpResearch {} => "speed_up_research",
        A::SpeedUpTraining { .. } => "speed_up_training",
        A::Move { .. } => "move",
        A::Collect { .. } => "collect",
        A::CollectAll {} => "collect_all",
        A::Train { .. } => "train",
        A::Research { .. } => "research",
        A::Buy { .. } => "buy",
        A::UseItem { .. } => "use_item",
        A::ClaimQuest { .. } => "claim_quest",
        A::Custom { .. } => "custom",
    }
}

fn answer(m: Msg, r: Result<Answer, ApiError>) {
    // The requester may have gone away; nothing to do then.
    let _ = answer_of(m).send(r);
}

/// One player's state in memory.
struct Session {
    key: Key,
    state: PlayerState,
    /// Version of the player file this state was loaded from or last saved as.
    etag: crate::blob::Etag,
    /// The `seq` of the stored file: operations above it are in memory
    /// (and in the journal) only.
    saved_seq: u64,
    /// Set when the stored file moved on under us: this server must not
    /// write the player again.
    fenced: bool,
    rng: Rng,
    /// This server's lock on the player.
    lease: Lease,
    /// Journal records appended and not yet answered.
    in_flight: Arc<AtomicUsize>,
    /// The base's spot on the world map, if the title has one.
    position: Option<Position>,
    /// The player's display name (the player id until they set one).
    name: String,
    /// The level, scores and map position last written to the world store.
    published: Option<(i64, std::collections::BTreeMap<String, i64>, Option<Position>)>,
    /// The scores when the session started (what the world store had).
    loaded_scores: std::collections::BTreeMap<String, i64>,
    /// Session tokens issued at or before this time are refused (support logged
    /// the player out then).
    logged_out_ms: i64,
    /// Set by an admin logout: the session ends after this request.
    ending: bool,
}

impl Session {
    async fn load(deps: &Deps, title: &Title, key: &Key, blob_key: &str) -> Result<Session, ApiError> {
        let seed = {
            use std::hash::{BuildHasher, Hash, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            blob_key.hash(&mut h);
            deps.clock.now_ms().hash(&mut h);
            h.finish()
        };
        // The lock first: only its holder may read the file as current.
        // A lock held elsewhere is waited for a while: during a binary
        // upgrade the old process saves and releases its players moments
        // after their clients reconnect here.
        let ttl = deps.config.lock_ttl_seconds as i64 * 1000;
        let give_up = Instant::now() + Duration::from_secs(deps.config.login_lock_wait_seconds);
        let mut pause = LOCK_RETRY_FIRST;
        let mut waited = false;
        let lease = loop {
            let got = deps.world.acquire(&player_lock(&key.0, &key.1), &deps.server_id, ttl, deps.clock.now_ms()).await;
            let wait = matches!(got, Ok(None) if Instant::now() + pause < give_up);
            if wait != waited {
                // The player's requests show in the `lock` stage meanwhile.
                deps.flights.waiting_for_lock(&key.0, &key.1, wait);
                waited = wait;
            }
            match got.map_err(|e| ApiError::new(Code::Internal, e.to_string()))? {
                Some(lease) => break lease,
                None if wait => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(LOCK_RETRY_MAX);
                }
                None => return Err(ApiError::new(Code::PlayerLocked, "the player is logged in on another server")),
            }
        };
        // A lease that expired unreleased: its server's acknowledged work
        // goes into the file before anyone reads it as current.
        let loaded = match crate::recovery::take_over(deps, key, lease.clone()).await {
            Ok(lease) => {
                Session::load_locked(deps, title, key, blob_key, seed, lease.clone()).await.map_err(|e| (e, lease))
            }
            Err(e) => Err((e, lease)),
        };
        match loaded {
            Ok(session) => Ok(session),
            Err((e, lease)) => {
                // A banned player, a broken file or an unreachable store
                // must not keep the player locked; an unfinished recovery
                // stays on the lock for the next holder.
                let _ = deps.world.release(&lease).await;
                Err(e)
            }
        }
    }

    /// The rest of [`Session::load`], once the player's lock is held.
    async fn load_locked(
        deps: &Deps,
        title: &Title,
        key: &Key,
        blob_key: &str,
        seed: u64,
        lease: Lease,
    ) -> Result<Session, ApiError> {
        let restriction = deps
            .world
            .restriction(&key.0, &key.1)
            .await
            .map_err(|e| ApiError::new(Code::Internal, e.to_string()))?
            .unwrap_or_default();
        if restriction.banned(deps.clock.now_ms()) {
            return Err(banned(&restriction));
        }
        let (state, etag) = match world::read_player(deps, &key.0, &key.1).await? {
            Some(found) => found,
            // A new player's file is written before their first operation,
            // so that every journal record applies to a stored file.
            None => {
                let mut state = rules::new_player(title, deps.clock.now_ms());
                // Nothing to restore of a player who has not played yet.
                state.snapshot_ms = deps.clock.now_ms();
                let etag = deps
                    .blobs
                    .put(blob_key, state.to_json().into_bytes(), Precondition::Absent)
                    .await
                    .map_err(|e| ApiError::new(Code::Internal, format!("creating the player file: {e}")))?;
                (state, etag)
            }
        };
        let mut session = Session {
            key: key.clone(),
            saved_seq: state.seq,
            loaded_scores: state.scores.clone(),
            state,
            etag,
            fenced: false,
            rng: Rng::new(seed),
            lease,
            in_flight: Arc::new(AtomicUsize::new(0)),
            position: None,
            name: key.1.clone(),
            published: None,
            logged_out_ms: restriction.logged_out_ms,
            ending: false,
        };
        session.join_world(deps, title).await?;
        Ok(session)
    }

    /// Applies one request and journals it; the answer leaves once the
    /// record is durable. Order of operations: take the title version
    /// served now (the whole request runs on it; hot reload swaps versions
    /// between requests; `started_on` stands in only if the title were
    /// ever unloaded); refuse if fenced or the journal failed; run the
    /// operation; number it; append its record with the answer attached.
    async fn handle(&mut self, deps: &Deps, started_on: &Title, m: Msg) {
        let title = &deps.titles.get(&self.key.0).unwrap_or_else(|| started_on.clone());
        let now = deps.clock.now_ms();
        if let Msg::Do(_, issued, _, _) = &m {
            if self.logged_out_ms > 0 && *issued <= self.logged_out_ms {
                let e = ApiError::new(Code::LoggedOut, "support ended this player's sessions; log in again");
                return self.answer_in_order(deps, answer_of(m), Err(e)).await;
            }
        }
        let (reply, op, flight) = match m {
            Msg::Login(reply, f) => (reply, Ok(Op::Login), f),
            Msg::Do(Command::Ping, _, reply, _) => {
                return self.answer_in_order(deps, reply, serialize(&json!({ "pong": now }))).await
            }
            Msg::Do(Command::GetState, _, reply, f) => (reply, Ok(Op::Advance), f),
            Msg::Do(Command::Rules(action), _, reply, f) => (reply, Ok(Op::Act { action }), f),
            Msg::Do(Command::World(cmd), _, reply, f) => (reply, Err(Ok(cmd)), f),
            Msg::Do(Command::Clan(cmd), _, reply, f) => (reply, Err(Err(cmd)), f),
            Msg::Admin(AdminOp::View, reply, _) => {
                let mut state = self.state.clone();
                rules::advance(title, &mut state, now, &mut self.rng.clone());
                let r = serialize(&json!({ "state": state }));
                return self.answer_in_order(deps, reply, r).await;
            }
            Msg::Admin(AdminOp::Logout, reply, _) => {
                self.ending = true;
                return self.answer_in_order(deps, reply, serialize(&json!({ "logged_out": true }))).await;
            }
            Msg::Admin(AdminOp::Adjust(change), reply, f) => (reply, Ok(Op::Adjust { change }), f),
            Msg::Admin(AdminOp::Restore { state, snapshot }, reply, f) => {
                // The state as it is now becomes a snapshot first, so that a
                // restore can itself be undone.
                self.snapshot(deps, now).await;
                (reply, Ok(Op::Restore { state, snapshot }), f)
            }
        };
        if self.fenced {
            let e = ApiError::new(Code::Internal, "this player's file was changed by another server; log in again");
            return self.answer_in_order(deps, reply, Err(e)).await;
        }
        if deps.journal.failed() {
            return self.answer_in_order(deps, reply, Err(not_durable())).await;
        }
        if let Err(e) = self.hold_lease(deps, now).await {
            return self.answer_in_order(deps, reply, Err(e)).await;
        }
        let op = match op {
            Ok(op) => op,
            Err(cmd) => {
                flight.enter(Stage::World);
                let next = match cmd {
                    Ok(world) => self.world(deps, title, world, now).await,
                    Err(clan) => self.clan(deps, title, clan, now).await,
                };
                match next {
                    Next::Op(op) => op,
                    Next::Answer(r) => return self.answer_in_order(deps, reply, r).await,
                }
            }
        };
        let rng = self.rng.state();
        flight.enter(Stage::Rules);
        let started = Instant::now();
        let result = if deps.profiler.enabled() {
            let scripts = crate::profile::ScriptTimes::new(flight.clone());
            let result = citadel_runtime::timing::observed(scripts.clone(), || {
                execute(title, &mut self.state, &op, now, &mut self.rng)
            });
            scripts.record(&deps.profiler, &self.key.0);
            result
        } else {
            execute(title, &mut self.state, &op, now, &mut self.rng)
        };
        flight.enter(Stage::Journal);
        if deps.profiler.enabled() {
            deps.profiler.record(crate::profile::Kind::Action, &op_name(title, &op), &self.key.0, started.elapsed());
        }
        self.state.seq += 1;
        let record = Record {
            format_version: JOURNAL_FORMAT_VERSION,
            title: self.key.0.clone(),
            player: self.key.1.clone(),
            seq: self.state.seq,
            now_ms: now,
            rng,
            content_version: title.content_version.clone(),
            op,
        };
        let in_flight = self.in_flight.clone();
        in_flight.fetch_add(1, Ordering::AcqRel);
        let done = Box::new(move |durable: Result<(), crate::journal::JournalFailed>| {
            in_flight.fetch_sub(1, Ordering::AcqRel);
            let _ = reply.send(durable.map_err(|_| not_durable()).and(result));
        });
        deps.journal.append(&record, done).await;
        self.publish(deps, title, false).await;
    }

    /// Sends an answer that needs no journal record, after the answers
    /// still waiting for theirs.
    async fn answer_in_order(&self, deps: &Deps, reply: Reply, result: Result<Answer, ApiError>) {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let _ = reply.send(result);
        } else {
            deps.journal
                .barrier(Box::new(move |_| {
                    let _ = reply.send(result);
                }))
                .await;
        }
    }

    /// True while the player has operations that are in memory only and
    /// this session may still save.
    fn unsaved(&self, deps: &Deps) -> bool {
        self.state.seq > self.saved_seq && !self.fenced && !deps.journal.failed()
    }

    /// Starts extending the player's lock, unless the session is fenced
    /// (it will not write the player again, so it must not keep them locked).
    fn start_renew(&self, deps: &Arc<Deps>) -> Option<Background<RenewOutcome>> {
        if self.fenced {
            return None;
        }
        let (deps, lease) = (deps.clone(), self.lease.clone());
        Some(Box::pin(async move {
            let ttl = deps.config.lock_ttl_seconds as i64 * 1000;
            deps.world.renew(&lease, ttl, deps.clock.now_ms()).await
        }))
    }

    /// Makes sure the player's lease outlives this request by a margin,
    /// renewing it now if not: once it expires another server may take
    /// the player over, and what this one acknowledged after that would
    /// be missing from that server's recovery. Renewals in the background
    /// keep this from ever waiting while the world store answers.
    async fn hold_lease(&mut self, deps: &Deps, now: i64) -> Result<(), ApiError> {
        let ttl = deps.config.lock_ttl_seconds as i64 * 1000;
        if self.lease.expires_ms - now >= ttl / LEASE_MARGIN_DIVISOR {
            return Ok(());
        }
        let renewed = deps.world.renew(&self.lease, ttl, now).await;
        self.renewed(renewed);
        if self.fenced {
            return Err(ApiError::new(Code::Internal, "this player's lock was lost; log in again"));
        }
        if self.lease.expires_ms - now < ttl / LEASE_MARGIN_DIVISOR {
            return Err(ApiError::new(
                Code::Internal,
                "this player's lock could not be renewed; the action was not applied",
            ));
        }
        Ok(())
    }

    /// A lost lock fences the session.
    fn renewed(&mut self, out: RenewOutcome) {
        match out {
            Ok(Some(lease)) => self.lease = lease,
            Ok(None) => {
                tracing::error!(lock = %self.lease.name, "player lock lost; this session will not write the player again");
                self.fenced = true;
            }
            // A transient store error: the lease is still valid until it
            // expires, and the next tick tries again.
            Err(e) => tracing::warn!(lock = %self.lease.name, error = %e, "renewing the player lock failed"),
        }
    }

    async fn release(&self, deps: &Deps) {
        if let Err(e) = deps.world.release(&self.lease).await {
            tracing::warn!(lock = %self.lease.name, error = %e, "releasing the player lock failed; it expires by itself");
        }
    }

    /// Starts saving the state as it is now, if it has unsaved operations.
    /// The state is serialized here; the write runs in the background,
    /// after the journal holds every operation the state contains (one
    /// whose record failed was answered `not_durable` and must not appear
    /// in the file later). Only one save runs at a time, so each write is
    /// conditional on the version the previous one wrote.
    async fn start_save(&mut self, deps: &Arc<Deps>, blob_key: &str) -> Option<Background<SaveOutcome>> {
        if !self.unsaved(deps) {
            return None;
        }
        let now = deps.clock.now_ms();
        // The file saved records the snapshot taken with it (a snapshot
        // that then fails to write is logged, and the next is an hour on).
        let due = now - self.state.snapshot_ms >= SNAPSHOT_INTERVAL_MS;
        if due {
            self.state.snapshot_ms = now;
        }
        let bytes = self.state.to_json().into_bytes();
        let snapshot = due.then(|| (self.key.clone(), bytes.clone()));
        let seq = self.state.seq;
        let durable = if self.in_flight.load(Ordering::Acquire) > 0 { Some(deps.journal.mark().await) } else { None };
        let (deps, blob_key, cond) = (deps.clone(), blob_key.to_string(), Precondition::Matches(self.etag.clone()));
        Some(Box::pin(async move {
            if let Some(durable) = durable {
                if durable.await.is_err() {
                    return SaveOutcome::NotDurable;
                }
            }
            if deps.journal.failed() {
                return SaveOutcome::NotDurable;
            }
            match deps.blobs.put(&blob_key, bytes, cond).await {
                Ok(etag) => {
                    if let Some(((title, player), copy)) = snapshot {
                        write_snapshot(&deps, &title, &player, copy, now, seq).await;
                    }
                    SaveOutcome::Saved { etag, seq }
                }
                Err(crate::blob::BlobError::PreconditionFailed) => SaveOutcome::Fenced,
                Err(e) => SaveOutcome::Failed(e.to_string()),
            }
        }))
    }

    /// Takes in the end of a save.
    async fn saved(&mut self, deps: &Deps, out: SaveOutcome) {
        match out {
            SaveOutcome::Saved { etag, seq } => {
                self.etag = etag;
                self.saved_seq = seq;
                deps.journal.saved(self.key.clone(), seq).await;
            }
            SaveOutcome::Fenced => {
                tracing::error!(
                    key = %blob_key(&self.key.0, &self.key.1),
                    "player file changed by another writer; this session will not write it again"
                );
                self.fenced = true;
            }
            SaveOutcome::NotDurable => {}
            // Kept unsaved: the next tick or the final save tries again.
            SaveOutcome::Failed(e) => {
                tracing::error!(key = %blob_key(&self.key.0, &self.key.1), error = %e, "saving the player failed")
            }
        }
    }

    /// Writes a snapshot of the state as it is in memory now (before an
    /// admin change, so that it can be undone).
    async fn snapshot(&mut self, deps: &Deps, now: i64) {
        self.state.snapshot_ms = now;
        let bytes = self.state.to_json().into_bytes();
        write_snapshot(deps, &self.key.0, &self.key.1, bytes, now, self.state.seq).await;
    }

    /// Lets a save already running finish, then saves what is left, and
    /// waits for both.
    async fn save_now(&mut self, deps: &Arc<Deps>, blob_key: &str, running: Option<Background<SaveOutcome>>) {
        if let Some(f) = running {
            self.saved(deps, f.await).await;
        }
        if let Some(f) = self.start_save(deps, blob_key).await {
            self.saved(deps, f.await).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps(name: &str, config: Config, blobs: Arc<dyn BlobStore>) -> Arc<Deps> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        let data = data_dir(name);
        Arc::new(Deps {
            config,
            titles: Arc::new(Titles::load_dir(&root).unwrap()),
            blobs,
            world: Arc::new(crate::world::SqliteWorld::open(&data.join("world.sqlite3")).unwrap()),
            clock: Arc::new(SystemClock),
            journal: Arc::new(Journal::disabled()),
            recovery: Arc::new(crate::recovery::Recovery::new("test", &data.join("server/journal"))),
            server_id: "test".into(),
            profiler: Arc::new(crate::profile::Profiler::new(true)),
            flights: crate::profile::Flights::new(Duration::from_millis(200)),
        })
    }

    fn data_dir(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("citadel-session-{name}-{}", std::process::id()))
    }

    #[tokio::test]
    async fn idle_sessions_leave_no_trace_in_memory() {
        let data = data_dir("idle");
        let _ = std::fs::remove_dir_all(&data);
        let config = Config { idle_timeout_seconds: 1, ..Config::default() };
        let sessions = Sessions::new(deps("idle", config, Arc::new(crate::blob::FsBlobStore::new(&data))));
        for p in ["a", "b", "c"] {
            sessions.login("mini", p).await.unwrap();
        }
        assert_eq!((sessions.len(), sessions.tracked_players()), (3, 3));
        tokio::time::sleep(Duration::from_millis(1600)).await;
        assert_eq!((sessions.len(), sessions.tracked_players()), (0, 0), "idle sessions and their file locks are gone");
        // And the players were saved on the way out.
        assert!(data.join("players/mini/a.json").is_file());
        sessions.shutdown().await;
    }

    /// Player files whose replacing writes hang until the test lets them go.
    #[derive(Debug)]
    struct StuckSaves {
        inner: crate::blob::FsBlobStore,
        gate: tokio::sync::Semaphore,
        saves: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl BlobStore for StuckSaves {
        async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, crate::blob::Etag)>, crate::blob::BlobError> {
            self.inner.get(key).await
        }
        async fn put(
            &self,
            key: &str,
            bytes: Vec<u8>,
            cond: Precondition,
        ) -> Result<crate::blob::Etag, crate::blob::BlobError> {
            if matches!(cond, Precondition::Matches(_)) {
                self.saves.fetch_add(1, Ordering::SeqCst);
                let _pass = self.gate.acquire().await;
            }
            self.inner.put(key, bytes, cond).await
        }
        async fn list(&self, dir: &str) -> Result<Vec<String>, crate::blob::BlobError> {
            self.inner.list(dir).await
        }
        async fn delete(&self, key: &str) -> Result<(), crate::blob::BlobError> {
            self.inner.delete(key).await
        }
    }

    #[tokio::test]
    async fn a_slow_save_does_not_hold_up_the_players_requests() {
        let data = data_dir("slow-save");
        let _ = std::fs::remove_dir_all(&data);
        let blobs = Arc::new(StuckSaves {
            inner: crate::blob::FsBlobStore::new(&data),
            gate: tokio::sync::Semaphore::new(0),
            saves: AtomicUsize::new(0),
        });
        let config = Config { save_interval_seconds: 1, ..Config::default() };
        let sessions = Sessions::new(deps("slow-save", config, blobs.clone()));
        sessions.login("mini", "a").await.unwrap();
        sessions.request("mini", "a", Command::GetState).await.unwrap();
        // The first periodic save falls within 1.5 save intervals.
        tokio::time::sleep(Duration::from_millis(1700)).await;
        assert_eq!(blobs.saves.load(Ordering::SeqCst), 1, "a save started and hangs");
        for _ in 0..3 {
            let answer = tokio::time::timeout(Duration::from_secs(1), sessions.request("mini", "a", Command::GetState));
            answer.await.expect("requests are answered while the save hangs").unwrap();
        }
        // Once storage comes back, shutdown saves everything.
        blobs.gate.add_permits(100);
        sessions.shutdown().await;
        let text = std::fs::read_to_string(data.join("players/mini/a.json")).unwrap();
        assert_eq!(PlayerState::from_json(&text).unwrap().seq, 5, "login, four get_state");
    }
}
