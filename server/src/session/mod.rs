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
//!
//! # Layout
//! - `registry`: every session of this server, the per-player request
//!   queue and rate limit, starting and ending sessions.
//! - `task`: one player's task: loading the player, the loop over
//!   requests, saves and renewals, applying a request and journaling it.
//! - `save`: the save, lock renewal and snapshot policy.
//! - `world`, `clan`: requests on the shared world and on clans.
//! - `inbox`: claiming the player's inbox, exactly once.
//! - `gifts`: delivering gifts to clan members' inboxes, exactly once.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use citadel_runtime::{PlayerState, Rng};
use tokio::sync::oneshot;

use crate::apply::Op;
use crate::profile::InFlight;
use crate::protocol::{Answer, ApiError, ClanCommand, Code, Command, WorldCommand};
use citadel_store::world::{Lease, Position};

mod clan;
mod gifts;
pub mod inbox;
mod raids;
mod registry;
mod save;
mod task;
pub(crate) use task::banned;
mod world;

pub use registry::Sessions;

type Key = (String, String);
/// A storage call running beside the session's requests, as a task of its
/// own. It must not be a future that only the session's loop polls: a
/// call granted a lock while the loop is busy elsewhere (the SQLite world
/// store's one connection, handed over in turn) would hold it unpolled
/// while the loop, inside a request, waits for that same lock, and every
/// session and store call behind them would wait forever (seen at 10,000
/// players: a lease renewal queued for the connection, then a request
/// needing it).
struct Background<T>(tokio::task::JoinHandle<T>);

impl<T: Send + 'static> Background<T> {
    fn spawn(call: impl Future<Output = T> + Send + 'static) -> Background<T> {
        Background(tokio::spawn(call))
    }
}

impl<T> Future for Background<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<T> {
        use std::task::Poll;
        match Pin::new(&mut self.0).poll(cx) {
            Poll::Ready(Ok(v)) => Poll::Ready(v),
            // As if the call had panicked in the session itself.
            Poll::Ready(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Cancelled only when the runtime shuts down, which ends the
            // session too.
            Poll::Ready(Err(_)) | Poll::Pending => Poll::Pending,
        }
    }
}
type Reply = oneshot::Sender<Result<Answer, ApiError>>;

enum Msg {
    Login(Reply, Arc<InFlight>),
    /// A request, with its idempotency key and the time its session token
    /// was issued.
    Do(Command, Option<String>, i64, Reply, Arc<InFlight>),
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
    /// Claim what arrived in the player's inbox (the bus said so).
    ClaimInbox,
}

/// What a session does with a request.
enum Work {
    /// An operation on the player's state, journaled.
    Op(Op),
    /// A request on the shared world (raids, the map, top scores).
    World(WorldCommand),
    /// A request on clans.
    Clan(ClanCommand),
}

/// What a world or clan request turns into: an answer now, or an operation
/// on the player's state that is journaled like an action.
enum Next {
    Answer(Result<Answer, ApiError>),
    Op(Op),
}

/// One player's state in memory.
struct Session {
    key: Key,
    state: PlayerState,
    /// Version of the player file this state was loaded from or last saved as.
    etag: citadel_store::blob::Etag,
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
    /// The answers to the last keyed requests that changed only the shared
    /// world (the player state remembers the others: `answered`).
    world_answers: std::collections::VecDeque<(String, Result<Answer, ApiError>)>,
    /// Gifts whose records are durable, to deliver.
    gifts_ready: Arc<gifts::Ready>,
}

/// The reply channel of a message.
fn answer_of(m: Msg) -> Reply {
    match m {
        Msg::Login(r, _) | Msg::Do(_, _, _, r, _) | Msg::Admin(_, r, _) => r,
    }
}

fn answer(m: Msg, r: Result<Answer, ApiError>) {
    // The requester may have gone away; nothing to do then.
    let _ = answer_of(m).send(r);
}

fn not_durable() -> ApiError {
    ApiError::new(Code::NotDurable, "the server could not make this action durable; it was not applied")
}
