//! One player's task: takes the player's lock and loads their file, then
//! applies their requests one at a time, in order, between periodic saves
//! and lock renewals, until the player is idle, logged out or the server
//! stops. A request's operation runs through [`crate::apply`], is numbered
//! and journaled, and is answered once its record is durable.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use citadel_runtime::{rules, Rng, Title};
use serde_json::json;
use tokio::sync::mpsc;

use super::registry::Sessions;
use super::save::{RenewOutcome, SaveOutcome};
use super::{answer, answer_of, not_durable, AdminOp, Background, Key, Msg, Next, Reply, Session, Work};
use crate::apply::{execute, op_name, Op};
use crate::deps::Deps;
use crate::journal::{Record, JOURNAL_FORMAT_VERSION};
use crate::player_file::{blob_key, player_lock, read_player};
use crate::profile::Stage;
use crate::protocol::{answer as serialize, Answer, ApiError, Code, Command};
use citadel_store::blob::Precondition;
use citadel_store::world::Lease;

/// First pause before trying a held player lock again; doubles up to
/// [`LOCK_RETRY_MAX`] (a world store query per try, so not too often).
const LOCK_RETRY_FIRST: Duration = Duration::from_millis(20);
const LOCK_RETRY_MAX: Duration = Duration::from_millis(500);

/// The longest a session sleeps before looking at its next timer again
/// (the injected clock may not run at the runtime's pace: a test's).
const WAKE_WAIT_MAX_MS: i64 = 60 * 60 * 1000;

/// After a wake-up that could not complete the timer (the player's lease
/// or the journal is unavailable, the clock is held back): the pause
/// before trying again, so that a session never spins.
const WAKE_RETRY: Duration = Duration::from_secs(1);

impl Sessions {
    /// One player's session. Order of operations: take the player's file
    /// lock; load the file (or create a new player); then loop over
    /// requests, periodic saves, lock renewals and the idle deadline (an
    /// idle session whose save fails stays, and tries again); on the way
    /// out leave the live map, answer every request still queued, save,
    /// release the player lock if the save succeeded, and release the file
    /// lock.
    /// The task's future holds the session between requests, so what only
    /// a request, a save or a wake-up needs is boxed for its duration:
    /// inline, those made every idle session's task 14.6 KB
    /// (docs/benchmarks.md, Memory per player).
    pub(super) async fn run_inner(
        self: Arc<Self>,
        key: Key,
        generation: u64,
        title: Title,
        mut rx: mpsc::Receiver<Box<Msg>>,
        file_lock: Arc<tokio::sync::Mutex<()>>,
    ) {
        let _file = file_lock.lock_owned().await;
        let deps = self.deps.clone();
        let blob_key = blob_key(&key.0, &key.1);
        // Starting a session takes a turn (see `STARTS_AT_ONCE`) until the
        // request that started it is answered.
        let mut turn = self.turns.acquire().await.ok();
        let mut session = match Box::pin(Session::load(&deps, &self.turns, &mut turn, &title, &key, &blob_key)).await {
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
                    answer(*m, Err(e.clone()));
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
        deps.connections.session_started(&key.0, &key.1);
        Box::pin(session.claim_inbox(&deps, &title)).await;
        Box::pin(session.deliver_gifts(&deps, &title)).await;
        let gifts_ready = session.gifts_ready.clone();
        let mut wake_not_before = tokio::time::Instant::now();
        if let Ok(m) = rx.try_recv() {
            Box::pin(session.handle(&deps, &title, *m)).await;
        }
        drop(turn);
        loop {
            if session.ending {
                break;
            }
            let wake = session.next_wake(&deps).map(|w| w.max(wake_not_before));
            tokio::select! {
                biased;
                msg = rx.recv() => match msg {
                    Some(m) => {
                        Box::pin(session.handle(&deps, &title, *m)).await;
                        deadline = tokio::time::Instant::now() + idle;
                    }
                    None => break,
                },
                _ = self.closing.cancelled() => break,
                out = background(&mut saving) => {
                    saving = None;
                    Box::pin(session.saved(&deps, out)).await;
                }
                out = background(&mut renewing) => {
                    renewing = None;
                    session.renewed(out);
                }
                _ = save_tick.tick(), if saving.is_none() => saving = Box::pin(session.start_save(&deps, &blob_key)).await,
                _ = renew_tick.tick(), if renewing.is_none() => renewing = session.start_renew(&deps),
                _ = gifts_ready.notify.notified() => Box::pin(session.deliver_gifts(&deps, &title)).await,
                _ = sleep_until(wake), if wake.is_some() => {
                    if !Box::pin(session.wake(&deps, &title)).await {
                        wake_not_before = tokio::time::Instant::now() + WAKE_RETRY;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if deps.connections.online(&key.0, &key.1) {
                        // A player with a socket open is online: the session
                        // stays (saving as it goes) to push to them.
                        deadline = tokio::time::Instant::now() + idle;
                        continue;
                    }
                    Box::pin(session.save_now(&deps, &blob_key, saving.take())).await;
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
            Box::pin(session.handle(&deps, &title, *m)).await;
        }
        if let Some(r) = renewing.take() {
            session.renewed(r.await);
        }
        Box::pin(session.save_now(&deps, &blob_key, saving.take())).await;
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
        // Records no save covered (a save failed, or the lock was lost and
        // whoever takes the player over reads them) must outlive the
        // journal's own clean-up; after a save that covered every one this
        // does nothing.
        deps.journal.keep(key.clone()).await;
    }
}

/// Sleeps until `at`, or forever when there is nothing to wake for.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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

/// The answer to a banned player: `until_ms` is null for a ban with no end
/// (stored as `i64::MAX`, which no JSON client can read as a time).
pub(crate) fn banned(r: &citadel_store::world::Restriction) -> ApiError {
    let until = (r.banned_until_ms != i64::MAX).then_some(r.banned_until_ms);
    ApiError::new(Code::Banned, format!("this player is banned: {}", r.reason))
        .details(json!({ "until_ms": until, "reason": r.reason }))
}

impl Session {
    pub(super) async fn load<'t>(
        deps: &Deps,
        turns: &'t tokio::sync::Semaphore,
        turn: &mut Option<tokio::sync::SemaphorePermit<'t>>,
        title: &Title,
        key: &Key,
        blob_key: &str,
    ) -> Result<Session, ApiError> {
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
                    // No turn while waiting: others start meanwhile.
                    *turn = None;
                    tokio::time::sleep(pause).await;
                    *turn = turns.acquire().await.ok();
                    pause = (pause * 2).min(LOCK_RETRY_MAX);
                }
                None => return Err(ApiError::new(Code::PlayerLocked, "the player is logged in on another server")),
            }
        };
        // A lease that expired unreleased: its server's acknowledged work
        // goes into the file before anyone reads it as current.
        let loaded = match crate::replay::take_over(deps, key, lease.clone()).await {
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
        let (state, etag) = match read_player(&*deps.blobs, &key.0, &key.1).await? {
            Some(found) => found,
            // A new player's file is written before their first operation,
            // so that every journal record applies to a stored file.
            None => {
                let mut state = rules::new_player(title, deps.clock.now_ms());
                // Nothing to restore of a player who has not played yet.
                state.snapshot_ms = deps.clock.now_ms();
                let etag = deps
                    .blobs
                    .put(blob_key, state.encode(deps.config.player_file_format), Precondition::Absent)
                    .await
                    .map_err(|e| ApiError::new(Code::Internal, format!("creating the player file: {e}")))?;
                (state, etag)
            }
        };
        let gifts_ready = super::gifts::Ready::of(&state);
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
            world_answers: std::collections::VecDeque::new(),
            gifts_ready,
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
    async fn handle(&mut self, deps: &Deps, started_on: &Title, mut m: Msg) {
        let title = &deps.titles.get(&self.key.0).unwrap_or_else(|| started_on.clone());
        let now = deps.clock.now_ms();
        let mut key = None;
        if let Msg::Do(_, k, issued, _, _) = &mut m {
            if self.logged_out_ms > 0 && *issued <= self.logged_out_ms {
                let e = ApiError::new(Code::LoggedOut, "support ended this player's sessions; log in again");
                return self.answer_in_order(deps, answer_of(m), Err(e)).await;
            }
            key = k.take();
        }
        if let Some(k) = &key {
            let earlier = match self.state.answered(k) {
                Some(a) => Some(ApiError::repeated(a)),
                None => self.world_answers.iter().find(|(w, _)| w == k).map(|(_, r)| r.clone()),
            };
            if let Some(r) = earlier {
                return self.answer_in_order(deps, answer_of(m), r).await;
            }
        }
        let (reply, work, flight) = match m {
            Msg::Login(reply, f) => (reply, Work::Op(Op::Login), f),
            Msg::Do(Command::Ping, _, _, reply, _) => {
                return self.answer_in_order(deps, reply, serialize(&json!({ "pong": now }))).await
            }
            Msg::Do(Command::GetState, _, _, reply, f) => (reply, Work::Op(Op::Advance), f),
            Msg::Do(Command::Rules(action), _, _, reply, f) => (reply, Work::Op(Op::Act { action }), f),
            Msg::Do(Command::World(cmd), _, _, reply, f) => (reply, Work::World(cmd), f),
            Msg::Do(Command::Clan(cmd), _, _, reply, f) => (reply, Work::Clan(cmd), f),
            Msg::Admin(AdminOp::View, reply, _) => {
                let mut state = self.state.clone();
                rules::advance(title, &mut state, now, &mut self.rng.clone());
                let r = serialize(&json!({ "state": state }));
                return self.answer_in_order(deps, reply, r).await;
            }
            Msg::Admin(AdminOp::ClaimInbox, reply, _) => {
                self.claim_inbox(deps, title).await;
                return self.answer_in_order(deps, reply, serialize(&json!({ "claimed": true }))).await;
            }
            Msg::Admin(AdminOp::Logout, reply, _) => {
                self.ending = true;
                return self.answer_in_order(deps, reply, serialize(&json!({ "logged_out": true }))).await;
            }
            Msg::Admin(AdminOp::Adjust(change), reply, f) => (reply, Work::Op(Op::Adjust { change }), f),
            Msg::Admin(AdminOp::Restore { state, snapshot }, reply, f) => {
                // The state as it is now becomes a snapshot first, so that a
                // restore can itself be undone.
                self.snapshot(deps, now).await;
                (reply, Work::Op(Op::Restore { state, snapshot }), f)
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
        let next = match work {
            Work::Op(op) => Next::Op(op),
            Work::World(cmd) => {
                flight.enter(Stage::World);
                self.world(deps, title, cmd, now).await
            }
            Work::Clan(cmd) => {
                flight.enter(Stage::World);
                self.clan(deps, title, cmd, now).await
            }
        };
        let op = match next {
            Next::Op(op) => op,
            Next::Answer(r) => {
                if let Some(k) = key {
                    // Shared-world answers that change no player state
                    // (chat lines, clan moves) are remembered for the
                    // session's life: enough for a resend after a dropped
                    // socket; the world store refuses most repeats itself.
                    if self.world_answers.len() >= citadel_runtime::state::ANSWERED_MAX {
                        self.world_answers.pop_front();
                    }
                    self.world_answers.push_back((k, r.clone()));
                }
                return self.answer_in_order(deps, reply, r).await;
            }
        };
        let gift = match &op {
            Op::GiftSent { gift, .. } => Some((gift.clone(), self.gifts_ready.clone())),
            _ => None,
        };
        let done = Box::new(move |r: Result<Answer, ApiError>| {
            if let (Some((id, ready)), true) = (gift, r.is_ok()) {
                ready.durable(id);
            }
            let _ = reply.send(r);
        });
        self.run(deps, title, op, key, now, Some(&flight), done).await;
    }

    /// Runs one operation on the player, numbers it and journals it;
    /// `done` gets its result once the record is durable.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn run(
        &mut self,
        deps: &Deps,
        title: &Title,
        op: Op,
        key: Option<String>,
        now: i64,
        flight: Option<&Arc<crate::profile::InFlight>>,
        done: Box<dyn FnOnce(Result<Answer, ApiError>) + Send>,
    ) {
        let rng = self.rng.state();
        if let Some(f) = flight {
            f.enter(Stage::Rules);
        }
        let started = Instant::now();
        let result = if let (true, Some(flight)) = (deps.profiler.enabled(), flight) {
            let scripts = crate::profile::ScriptTimes::new(flight.clone());
            let result = citadel_runtime::timing::observed(scripts.clone(), || {
                execute(title, &mut self.state, &op, now, &mut self.rng)
            });
            scripts.record(&deps.profiler, &self.key.0);
            result
        } else {
            execute(title, &mut self.state, &op, now, &mut self.rng)
        };
        if let Some(f) = flight {
            f.enter(Stage::Journal);
        }
        if deps.profiler.enabled() {
            deps.profiler.record(crate::profile::Kind::Action, &op_name(title, &op), &self.key.0, started.elapsed());
        }
        self.state.seq += 1;
        crate::apply::remember_key(&mut self.state, key.as_deref(), &result);
        let record = Record {
            format_version: JOURNAL_FORMAT_VERSION,
            title: self.key.0.clone(),
            player: self.key.1.clone(),
            seq: self.state.seq,
            now_ms: now,
            rng,
            content_version: title.content_version.clone(),
            op,
            key,
        };
        let in_flight = self.in_flight.clone();
        in_flight.fetch_add(1, Ordering::AcqRel);
        let durable = Box::new(move |durable: Result<(), crate::journal::JournalFailed>| {
            in_flight.fetch_sub(1, Ordering::AcqRel);
            done(durable.map_err(|_| not_durable()).and(result));
        });
        deps.journal.append(&record, durable).await;
        self.publish(deps, title, false).await;
    }

    /// When the session should wake to complete the player's next timer:
    /// its end on the injected clock, as a time of the runtime's timer.
    fn next_wake(&self, deps: &Deps) -> Option<tokio::time::Instant> {
        let end = rules::next_end_ms(&self.state)?;
        // A timer that ends in a week wakes nobody for a week; the sleep is
        // measured again after every request anyway.
        let wait = (end - deps.clock.now_ms()).clamp(0, WAKE_WAIT_MAX_MS) as u64;
        Some(tokio::time::Instant::now() + Duration::from_millis(wait))
    }

    /// A timer ended: complete it (journaled like a request) and push what
    /// happened to the player once it is durable. Skipped when the session
    /// may not change the player (fenced, journal down, lease lost): the
    /// player's next request completes it instead. Returns whether the
    /// next timer now ends later than now (else wait before trying again).
    async fn wake(&mut self, deps: &Deps, started_on: &Title) -> bool {
        let title = &deps.titles.get(&self.key.0).unwrap_or_else(|| started_on.clone());
        let now = deps.clock.now_ms();
        if rules::next_end_ms(&self.state).is_none_or(|end| end > now) {
            // The injected clock has not reached the end yet (tests move it by hand).
            return false;
        }
        if self.fenced || deps.journal.failed() || self.hold_lease(deps, now).await.is_err() {
            return false;
        }
        let done = self.push_events(deps, now);
        self.run(deps, title, Op::Wake, None, now, None, done).await;
        rules::next_end_ms(&self.state).is_none_or(|end| end > now)
    }

    /// The `done` of an operation the session runs on its own (no request
    /// waits for it): once durable, its events, if any, are pushed to the
    /// player as `game_events` at `now`.
    pub(super) fn push_events(&self, deps: &Deps, now: i64) -> Box<dyn FnOnce(Result<Answer, ApiError>) + Send> {
        let connections = deps.connections.clone();
        let (t, p) = self.key.clone();
        Box::new(move |r: Result<Answer, ApiError>| {
            #[derive(serde::Deserialize)]
            struct Events {
                events: Vec<serde_json::Value>,
            }
            let Ok(answer) = r else { return };
            match serde_json::from_str::<Events>(answer.get()) {
                Ok(e) if !e.events.is_empty() => {
                    connections.push(&t, &p, &crate::protocol::Push::GameEvents { events: e.events, at_ms: now });
                }
                _ => {}
            }
        })
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
}
