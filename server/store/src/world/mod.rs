//! The world store: the small amount of data shared between servers:
//! lease locks (a player is live on one server at a time; a raid holds its
//! defender), server status, the player info cache, top scores, positions
//! on the regional map, raids, clans, the audit log, players' inboxes and
//! accounts. The embedded backend is SQLite in WAL
//! mode ([`SqliteWorld`]), safe for several server processes on one
//! machine; [`MongoWorld`] serves fleets behind the same trait. One
//! conformance suite (`server/store/tests/world_conformance.rs`) runs against both.
//!
//! Every query is bounded: by an index and a limit (top scores, searches,
//! map queries take at most [`PAGE_MAX`] rows), never a scan of all players
//! per request.

use std::collections::BTreeMap;

use citadel_runtime::raid::RaidResult;
use serde::{Deserialize, Serialize};

mod mongo;
mod sqlite;

pub use mongo::{MongoConfig, MongoWorld};
pub use sqlite::SqliteWorld;

/// Most rows one query returns (top scores, name search, map queries): a
/// client screen shows a few dozen; more is a scrape.
pub const PAGE_MAX: usize = 100;

/// Deepest rank a top score page may start at: a page deeper than this
/// costs the index walk up to it on every request.
pub const TOP_OFFSET_MAX: usize = 10_000;

/// The all-time top score window (the others start each week or season).
pub const ALL_TIME: &str = "all";

/// A held lock. `token` is a fencing token: it grows with every grant of
/// any lock, so a later holder always has a larger token than an earlier one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub owner: String,
    pub token: i64,
    pub expires_ms: i64,
    /// Who may still hold work for the locked thing that is not in its
    /// stored state: the owner of a lease that expired without being
    /// released (a server that died holding a player, whose journal may
    /// hold acknowledged operations above the player file's `seq`). Kept
    /// on the lock until its holder calls [`WorldStore::recovered`], so
    /// that a holder that cannot recover gives the duty on with the lock.
    pub recover_from: Option<String>,
}

/// Where a server keeps its journal, so that another server taking one of
/// its players over after a crash can apply what it acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalHome {
    /// The server's id (a lock owner).
    pub server: String,
    /// The machine it ran on (its machine id or host name): a journal
    /// directory is only read by servers on the same machine.
    pub host: String,
    /// The journal directory, absolute.
    pub dir: String,
    /// When an operator declared this journal lost (0: never). Takeovers
    /// then go ahead without it; what it held is lost.
    #[serde(default)]
    pub lost_ms: i64,
    /// The admin who declared it lost.
    #[serde(default)]
    pub lost_by: String,
}

/// The duty to recover that a new grant of a lock takes over from the lock
/// as stored (owner, expiry, open duty): an open duty stays; otherwise an
/// expired lease was never released, and its owner may hold work.
fn duty_after(owner: String, expires_ms: i64, recover_from: Option<String>, now_ms: i64) -> Option<String> {
    recover_from.or_else(|| (expires_ms <= now_ms).then_some(owner))
}

#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error("world store error: {0}")]
    Db(String),
}

/// One game server, as it reports itself (the gateway picks servers from
/// these).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub id: String,
    /// Where clients reach it, e.g. `10.0.0.5:8080`.
    pub address: String,
    /// Title id to the content version served.
    pub titles: BTreeMap<String, String>,
    /// Players in memory.
    pub players: i64,
    /// Share of time the server's runtime was busy, 0 to 1.
    pub busy: f64,
    pub heartbeat_ms: i64,
    /// Draining: takes no new players (a gateway sends them elsewhere).
    #[serde(default)]
    pub draining: bool,
}

/// A base's spot on the regional map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub region: String,
    pub x: i32,
    pub y: i32,
}

/// A player's public profile, cached for other players to see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayerInfo {
    pub title: String,
    pub player: String,
    pub name: String,
    /// Player level (from xp).
    pub level: i64,
    /// Score stats by id.
    pub scores: BTreeMap<String, i64>,
    #[serde(default)]
    pub clan: Option<String>,
    #[serde(default)]
    pub position: Option<Position>,
    pub last_seen_ms: i64,
}

/// A base on the map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Base {
    pub player: String,
    pub position: Position,
}

/// One line of a top score list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoreRow {
    /// 1 for the best.
    pub rank: u64,
    pub player: String,
    pub value: i64,
}

/// Which top score list: a title's stat in a window (`all`,
/// `week-YYYY-MM-DD`, `season-N`; see `citadel_runtime::raid::score_windows`).
#[derive(Debug, Clone, Copy)]
pub struct Board<'a> {
    pub title: &'a str,
    pub stat: &'a str,
    pub window: &'a str,
}

/// A clan. Its id is its name in lowercase, so names are unique per title
/// by construction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clan {
    pub title: String,
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Anyone may join; otherwise by request or invitation.
    pub open: bool,
    /// Members now.
    pub members: i64,
    pub created_ms: i64,
}

/// A player's place in a clan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub clan: String,
    pub player: String,
    pub role: String,
    pub joined_ms: i64,
}

/// How a join (or a founding) went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    Joined,
    /// The clan is at its capacity.
    Full,
    /// The player is in a clan already.
    AlreadyInClan,
    /// No such clan (or, founding: the name is taken).
    NoClan,
}

/// A request to join a clan, or an invitation from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ask {
    Request,
    Invite,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClanAsk {
    pub player: String,
    pub kind: Ask,
    pub at_ms: i64,
}

/// One line of clan chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatLine {
    pub seq: i64,
    pub player: String,
    pub text: String,
    pub at_ms: i64,
}

/// Clan chat's limits, passed to [`WorldStore::post_chat`].
#[derive(Debug, Clone, Copy)]
pub struct ChatLimits {
    /// At most `rate_max` lines per player within `rate_window_ms`.
    pub rate_window_ms: i64,
    pub rate_max: i64,
    /// Lines kept per clan; older ones are dropped.
    pub history_max: i64,
}

/// Where a raid is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RaidStatus {
    /// The defender is locked and the attacker is fighting.
    Started,
    /// The result is in and final (the commit point); it is applied to
    /// the defender's file, if not yet, by whoever loads the defender next.
    Ended,
}

/// A raid as the world store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaidRecord {
    pub id: String,
    pub title: String,
    pub attacker: String,
    pub defender: String,
    /// The fencing token of the defender's lock taken for this raid.
    pub token: i64,
    pub started_ms: i64,
    /// When the defender's lock ends; no result is taken after it.
    pub expires_ms: i64,
    pub status: RaidStatus,
    /// The defender's level and lootable amounts at the start.
    pub defender_level: i64,
    pub lootable: BTreeMap<String, i64>,
    #[serde(default)]
    pub result: Option<RaidResult>,
    /// Whether the defender's player file holds the result.
    #[serde(default)]
    pub defender_applied: bool,
}

crate::decorate::decorated_traits! {
over WorldStore;

/// Lease locks: a player is live on one server at a time; a raid holds
/// its defender. Fencing tokens grow; an expired lease leaves a duty to
/// recover its owner's journal.
pub trait Locks {
    /// Takes `name` for `owner` until `now_ms + ttl_ms`, if it is free, expired
    /// or already `owner`'s. `None` when someone else holds it. The lease's
    /// `recover_from` is the lock's earlier duty if one is still open, else
    /// the owner of the expired lease it replaces (any owner, this one too),
    /// else `None`.
    async fn acquire(&self, name: &str, owner: &str, ttl_ms: i64, now_ms: i64) -> Result<Option<Lease>, WorldError>;
    /// Extends a lease still held; `None` if it was lost (expired and taken).
    async fn renew(&self, lease: &Lease, ttl_ms: i64, now_ms: i64) -> Result<Option<Lease>, WorldError>;
    /// Gives a lease up (no effect if it was already lost). A lease whose
    /// `recover_from` is still set is not deleted but left expired, so that
    /// the next holder inherits the duty to recover.
    async fn release(&self, lease: &Lease) -> Result<(), WorldError>;
    /// The holder has recovered what `lease.recover_from` held (or there
    /// was nothing): the lock's duty is cleared. `None` if the lease was lost.
    async fn recovered(&self, lease: &Lease) -> Result<Option<Lease>, WorldError>;
    /// Who holds `name` now, if anyone (for messages: it may change at once).
    async fn holder(&self, name: &str, now_ms: i64) -> Result<Option<Lease>, WorldError>;
}

/// Server status: heartbeats, the live server list, where journals are.
pub trait Servers {
    /// Registers or refreshes a server's status.
    async fn heartbeat(&self, status: &ServerStatus) -> Result<(), WorldError>;
    /// The servers whose last heartbeat is newer than `now_ms - stale_ms`
    /// (older entries are removed), by id.
    async fn servers(&self, now_ms: i64, stale_ms: i64) -> Result<Vec<ServerStatus>, WorldError>;
    /// Removes a server's entry (it is shutting down).
    async fn deregister(&self, id: &str) -> Result<(), WorldError>;
    /// Records where a server's journal is (replacing the entry before).
    async fn put_journal_home(&self, home: &JournalHome) -> Result<(), WorldError>;
    /// Where a server's journal is, if it ever said.
    async fn journal_home(&self, server: &str) -> Result<Option<JournalHome>, WorldError>;
}

/// Players: the public profile cache, name search, and what support set
/// on a player (bans, forced logouts).
pub trait Players {
    /// Writes a player's public profile.
    async fn put_info(&self, info: &PlayerInfo) -> Result<(), WorldError>;
    async fn info(&self, title: &str, player: &str) -> Result<Option<PlayerInfo>, WorldError>;
    /// Players whose name starts with `prefix` (case-insensitive), by name
    /// then id, after `after` (the last `(name, player)` of the previous
    /// page), at most `limit` (capped at [`PAGE_MAX`]).
    async fn search(
        &self,
        title: &str,
        prefix: &str,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<PlayerInfo>, WorldError>;
    /// The player's ban and forced logout, if support ever set either.
    async fn restriction(&self, title: &str, player: &str) -> Result<Option<Restriction>, WorldError>;
    /// Stores the player's restriction (replacing the one before).
    async fn put_restriction(&self, r: &Restriction) -> Result<(), WorldError>;
}

/// Top scores and the regional map.
pub trait Scores {
    /// Records that `player`'s stat went from `before` to `after` at a time
    /// in `windows`: the `all` window holds `after`; another window holds
    /// the gain since the player's first change in it. Setting the same
    /// `after` twice changes nothing.
    async fn set_score(
        &self,
        title: &str,
        stat: &str,
        player: &str,
        windows: &[String],
        before: i64,
        after: i64,
    ) -> Result<(), WorldError>;
    /// The list from rank `offset + 1`, at most `limit` rows (capped at
    /// [`PAGE_MAX`]; `offset` at [`TOP_OFFSET_MAX`]). Ties rank by player id.
    async fn top(&self, board: Board<'_>, offset: usize, limit: usize) -> Result<Vec<ScoreRow>, WorldError>;
    /// A player's row, if they scored in that window.
    async fn rank(&self, board: Board<'_>, player: &str) -> Result<Option<ScoreRow>, WorldError>;

    /// Puts (or moves) a player's base on a spot; `false` if the spot is taken.
    async fn place(&self, title: &str, player: &str, at: &Position) -> Result<bool, WorldError>;
    async fn position(&self, title: &str, player: &str) -> Result<Option<Position>, WorldError>;
    /// Bases in `region` within `radius` spots of `(x, y)` (a square), the
    /// nearest first, at most `limit` (capped at [`PAGE_MAX`]).
    async fn near(&self, title: &str, at: &Position, radius: i32, limit: usize) -> Result<Vec<Base>, WorldError>;
    /// Bases in each of `regions` of a title.
    async fn region_counts(&self, title: &str, regions: &[String]) -> Result<BTreeMap<String, i64>, WorldError>;
}

/// Raids: the record of each, its one result, defenses owed to defenders.
pub trait Raids {
    async fn insert_raid(&self, raid: &RaidRecord) -> Result<(), WorldError>;
    async fn raid(&self, id: &str) -> Result<Option<RaidRecord>, WorldError>;
    /// The attacker's most recent raid.
    async fn last_raid(&self, title: &str, attacker: &str) -> Result<Option<RaidRecord>, WorldError>;
    /// The commit point of a raid: stores the ended record if the raid is
    /// still `Started`. `false` if it was not (ended already): exactly one
    /// result is ever taken per raid.
    async fn end_raid(&self, raid: &RaidRecord) -> Result<bool, WorldError>;
    /// Ended raids on `defender` not yet in their player file, oldest first.
    async fn pending_defenses(&self, title: &str, defender: &str) -> Result<Vec<RaidRecord>, WorldError>;
    /// Notes that the defender's file holds the raid's result.
    async fn defense_applied(&self, id: &str) -> Result<(), WorldError>;
}

/// Clans: members, roles, requests and invitations, chat.
pub trait Clans {
    /// Founds `clan` with `founder` as its first member in `role`:
    /// `NoClan` when the name is taken, `AlreadyInClan` when the founder is
    /// in one. Nothing is written unless it is `Joined`.
    async fn create_clan(&self, clan: &Clan, founder: &str, role: &str) -> Result<Joined, WorldError>;
    async fn clan(&self, title: &str, id: &str) -> Result<Option<Clan>, WorldError>;
    /// Changes a clan's description and openness.
    async fn edit_clan(&self, title: &str, id: &str, description: &str, open: bool) -> Result<(), WorldError>;
    /// Clans whose name starts with `prefix` (case-insensitive), by id,
    /// after `after`, at most `limit` (capped at [`PAGE_MAX`]).
    async fn search_clans(
        &self,
        title: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Clan>, WorldError>;
    /// A clan's members (at most the title's capacity), by join time.
    async fn members(&self, title: &str, clan: &str) -> Result<Vec<Member>, WorldError>;
    /// The clan a player is in.
    async fn membership(&self, title: &str, player: &str) -> Result<Option<Member>, WorldError>;
    /// Adds a member unless the clan is full (`capacity`), gone, or the
    /// player is in a clan. Atomic: racing joins never overfill a clan.
    async fn join_clan(&self, title: &str, member: &Member, capacity: i64) -> Result<Joined, WorldError>;
    /// Removes a member; `false` if they were not in that clan.
    async fn leave_clan(&self, title: &str, clan: &str, player: &str) -> Result<bool, WorldError>;
    /// Changes a member's role; `false` if they are not in that clan.
    async fn set_role(&self, title: &str, clan: &str, player: &str, role: &str) -> Result<bool, WorldError>;
    /// Removes a clan with its members, requests and chat.
    async fn disband(&self, title: &str, clan: &str) -> Result<(), WorldError>;
    /// Records a join request or an invitation (again: refreshed).
    async fn put_ask(&self, title: &str, clan: &str, ask: &ClanAsk) -> Result<(), WorldError>;
    /// Removes a request or invitation; `true` if it existed.
    async fn take_ask(&self, title: &str, clan: &str, player: &str, kind: Ask) -> Result<bool, WorldError>;
    /// A clan's open requests and invitations, oldest first, at most [`PAGE_MAX`].
    async fn asks(&self, title: &str, clan: &str) -> Result<Vec<ClanAsk>, WorldError>;
    /// Adds a chat line unless the player is over the rate; keeps the
    /// clan's last `history_max` lines. `None` when rate limited.
    async fn post_chat(
        &self,
        title: &str,
        clan: &str,
        player: &str,
        text: &str,
        now_ms: i64,
        limits: ChatLimits,
    ) -> Result<Option<ChatLine>, WorldError>;
    /// Chat lines before `before_seq` (all when `None`), newest first, at
    /// most `limit` (capped at [`PAGE_MAX`]).
    async fn chat(
        &self,
        title: &str,
        clan: &str,
        before_seq: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ChatLine>, WorldError>;

}

/// The audit log of admin changes.
pub trait Audit {
    /// Appends one admin change to the audit log.
    async fn audit(&self, entry: &AuditEntry) -> Result<(), WorldError>;
    /// Audit entries newest first, optionally of one player only (`title`
    /// and `player` both given), at most `limit` (capped at [`PAGE_MAX`]).
    async fn audit_log(
        &self,
        player: Option<(&str, &str)>,
        before_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, WorldError>;
}

/// Each player's inbox: messages and grants for a player wherever they
/// are (offline, or live on another server), kept until they expire. The
/// inbox is the record; the bus only wakes the server holding the player.
pub trait Inbox {
    /// Adds `item` unless an item of that id is there already (`Exists`:
    /// sending twice is harmless) or the player has `cap` unclaimed
    /// items that have not expired (`Full`). Expired items of the player
    /// are deleted on the way.
    async fn put_inbox(&self, item: &InboxItem, cap: usize) -> Result<InboxPut, WorldError>;
    /// The player's items not expired at `now_ms`, claimed or not, newest
    /// first, at most `limit` (capped at [`PAGE_MAX`]).
    async fn inbox(&self, title: &str, player: &str, now_ms: i64, limit: usize) -> Result<Vec<InboxItem>, WorldError>;
    /// The player's unclaimed items not expired at `now_ms`, oldest first,
    /// at most `limit` (capped at [`PAGE_MAX`]).
    async fn unclaimed(
        &self,
        title: &str,
        player: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<InboxItem>, WorldError>;
    /// Marks an item claimed at `now_ms`; true for the one call that did
    /// (a second claim, from anywhere, gets false).
    async fn claim(&self, title: &str, player: &str, id: &str, now_ms: i64) -> Result<bool, WorldError>;
    /// Takes an item back (a refunded purchase): if no session claimed it
    /// yet, it is marked claimed and revoked at `now_ms`, so that none ever
    /// will (`Unclaimed`); `Claimed` when a session claimed it already
    /// (what it granted must be taken back in the player's state);
    /// `Missing` when there is no such item.
    async fn revoke_inbox(&self, title: &str, player: &str, id: &str, now_ms: i64) -> Result<InboxRevoke, WorldError>;
}

/// Purchases the gateway recorded from payment providers' notifications
/// (docs/gateway.md): each recorded once by its provider's payment id,
/// then delivered through the player's inbox, maybe revoked later.
pub trait Payments {
    /// Records `payment` unless one of that provider and id is there
    /// already (`false`: nothing is written).
    async fn record_payment(&self, payment: &Payment) -> Result<bool, WorldError>;
    async fn payment(&self, provider: &str, id: &str) -> Result<Option<Payment>, WorldError>;
    /// Moves a payment from `from` to `to` at `at_ms` (its `delivered_ms`
    /// or `revoked_ms`, with `reason` for a revocation); `false` when it
    /// is not in state `from` (another gateway moved it first).
    async fn payment_moved(
        &self,
        provider: &str,
        id: &str,
        from: PaymentState,
        to: PaymentState,
        at_ms: i64,
        reason: &str,
    ) -> Result<bool, WorldError>;
    /// Payments recorded and not yet delivered, oldest first, at most `limit`.
    async fn undelivered(&self, limit: usize) -> Result<Vec<Payment>, WorldError>;
    /// Payments newest first, of one account, or one player of a title, or
    /// all (customer support), created before `before_ms` when given, at
    /// most `limit` (capped at [`PAGE_MAX`]).
    async fn payments(
        &self,
        of: PaymentsOf<'_>,
        before_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Payment>, WorldError>;
}

/// Player accounts (docs/gateway.md): a person across titles and devices.
/// An account has identities to log in with (a guest device, a platform's
/// OpenID Connect identity), each linked to one account only, and one
/// player id per title.
pub trait Accounts {
    /// Makes `account` with its first identity. `false` when that identity
    /// is linked to an account already: nothing is written.
    async fn create_account(&self, account: &Account, identity: &Identity) -> Result<bool, WorldError>;
    async fn account(&self, id: &str) -> Result<Option<Account>, WorldError>;
    /// The identity `subject` at `provider`, with the account it belongs to.
    async fn identity(&self, provider: &str, subject: &str) -> Result<Option<Identity>, WorldError>;
    /// Links one more identity to its account. `false` when that identity
    /// is linked already (to this account or another): nothing changes.
    async fn link_identity(&self, identity: &Identity) -> Result<bool, WorldError>;
    /// The account's identities, oldest first.
    async fn identities(&self, account: &str) -> Result<Vec<Identity>, WorldError>;
    /// Records a login at `now_ms`.
    async fn account_login(&self, id: &str, now_ms: i64) -> Result<(), WorldError>;
    /// Flags the account (a refund or a chargeback), or clears the flag.
    async fn set_flagged(&self, id: &str, flagged: bool) -> Result<(), WorldError>;
    /// The account's player in `title`: the one stored, or else `player`,
    /// stored now. Two racing calls get the same answer.
    async fn title_player(&self, account: &str, title: &str, player: &str) -> Result<String, WorldError>;
    /// A login of `account` to `title` at `now_ms`, in one call (the
    /// gateway's every login): [`Accounts::account_login`], then the
    /// account's player as [`Accounts::title_player`] answers it.
    async fn enter(&self, account: &str, title: &str, player: &str, now_ms: i64) -> Result<String, WorldError>;
}
}

/// What [`Inbox::revoke_inbox`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxRevoke {
    Missing,
    Unclaimed,
    Claimed,
}

/// Whose payments [`Payments::payments`] lists.
#[derive(Debug, Clone, Copy)]
pub enum PaymentsOf<'a> {
    All,
    Account(&'a str),
    Player { title: &'a str, player: &'a str },
}

/// Where a payment is: recorded (its notification answered), delivered to
/// the player's inbox, or revoked (refunded, charged back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaymentState {
    Recorded,
    Delivered,
    Revoked,
}

impl PaymentState {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentState::Recorded => "recorded",
            PaymentState::Delivered => "delivered",
            PaymentState::Revoked => "revoked",
        }
    }
}

/// One purchase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// The provider's name (`[[gateway.payments]]`).
    pub provider: String,
    /// The provider's payment id.
    pub id: String,
    pub account: String,
    pub title: String,
    /// The account's player in the title.
    pub player: String,
    /// The product bought (the title's store.json `products`).
    pub product: String,
    /// What it grants, fixed when it was recorded.
    #[serde(default)]
    pub resources: BTreeMap<String, i64>,
    #[serde(default)]
    pub items: BTreeMap<String, i64>,
    /// The price paid, in the currency's smallest unit, as the provider said.
    #[serde(default)]
    pub amount: i64,
    #[serde(default)]
    pub currency: String,
    pub state: PaymentState,
    pub created_ms: i64,
    #[serde(default)]
    pub delivered_ms: Option<i64>,
    #[serde(default)]
    pub revoked_ms: Option<i64>,
    /// `refund` or `chargeback`.
    #[serde(default)]
    pub revoked_reason: String,
}

/// `p` moved to `to` at `at_ms` (for [`Payments::payment_moved`]).
pub(crate) fn moved(p: &mut Payment, to: PaymentState, at_ms: i64, reason: &str) {
    p.state = to;
    match to {
        PaymentState::Recorded => {}
        PaymentState::Delivered => p.delivered_ms = Some(at_ms),
        PaymentState::Revoked => {
            p.revoked_ms = Some(at_ms);
            p.revoked_reason = reason.to_string();
        }
    }
}

/// Everything servers share: every role of the world store. A backend
/// implements each role; decorators come with [`crate::decorate`].
pub trait WorldStore: Locks + Servers + Players + Scores + Raids + Clans + Audit + Inbox + Accounts + Payments {}

impl<T: Locks + Servers + Players + Scores + Raids + Clans + Audit + Inbox + Accounts + Payments + ?Sized> WorldStore
    for T
{
}

/// A player account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub created_ms: i64,
    pub last_login_ms: i64,
    /// Set by a refund or a chargeback, for customer support to look at.
    #[serde(default)]
    pub flagged: bool,
}

/// A way into an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// `guest`, or an OpenID Connect issuer (its URL).
    pub provider: String,
    /// The guest device's id, or the issuer's `sub`.
    pub subject: String,
    pub account: String,
    /// A guest device's secret, hashed (argon2id PHC string); empty for
    /// platform identities, whose tokens prove them.
    #[serde(default)]
    pub secret_hash: String,
    pub linked_ms: i64,
}

/// One message or grant in a player's inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxItem {
    /// Unique per player; the sender makes it from what it sends (a raid's
    /// id, a payment's id), so that sending again adds nothing.
    pub id: String,
    pub title: String,
    pub player: String,
    /// What it is: `raid_report`, `gift`, `purchase`, `grant`...
    pub kind: String,
    /// Who sent it: a player id, `support`, a payment provider.
    pub from: String,
    /// What the player reads (a battle log, a message).
    #[serde(default)]
    pub body: serde_json::Value,
    /// Resources granted when claimed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, i64>,
    /// Items granted when claimed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub items: BTreeMap<String, i64>,
    pub created_ms: i64,
    pub expires_ms: i64,
    /// When the player's session claimed it; `None` until then.
    #[serde(default)]
    pub claimed_ms: Option<i64>,
    /// When it was taken back before any session claimed it (a refunded
    /// purchase); it is then claimed too, and never applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_ms: Option<i64>,
}

/// What [`Inbox::put_inbox`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxPut {
    Added,
    Exists,
    Full,
}

/// What support set on a player: a ban (logins refused until a time) and
/// the last forced logout (session tokens issued before it are refused).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restriction {
    pub title: String,
    pub player: String,
    /// Logins are refused until then; 0 when not banned.
    pub banned_until_ms: i64,
    #[serde(default)]
    pub reason: String,
    /// Tokens issued at or before this time are refused; 0 when never.
    pub logged_out_ms: i64,
}

impl Restriction {
    /// Whether the player is banned at `now_ms`.
    pub fn banned(&self, now_ms: i64) -> bool {
        self.banned_until_ms > now_ms
    }
}

/// One admin change: who did what to whom, when, and the data before and after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Unique: time, server and a counter (`1764532800000-s1-7`).
    pub id: String,
    pub at_ms: i64,
    /// The admin user who made the change.
    pub admin: String,
    /// The server that made it.
    pub server: String,
    /// `grant`, `ban`, `unban`, `logout`, `restore`, `reload`, `rollback`, `push`, `broadcast`, `drain`, ...
    pub action: String,
    /// The title and player changed, empty for server-wide changes.
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub player: String,
    #[serde(default)]
    pub reason: String,
    pub before: serde_json::Value,
    pub after: serde_json::Value,
}

/// `limit` capped at [`PAGE_MAX`], at least 1.
pub(crate) fn page(limit: usize) -> usize {
    limit.clamp(1, PAGE_MAX)
}

/// The lowercase form names are searched by.
pub fn name_key(name: &str) -> String {
    name.to_lowercase()
}

/// The smallest string above every string starting with `prefix`.
pub(crate) fn prefix_end(prefix: &str) -> String {
    format!("{prefix}\u{10FFFF}")
}

pub(crate) fn status_name(s: RaidStatus) -> &'static str {
    match s {
        RaidStatus::Started => "started",
        RaidStatus::Ended => "ended",
    }
}

/// A document as the JSON text both backends store.
pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Result<String, WorldError> {
    serde_json::to_string(v).map_err(|e| WorldError::Db(format!("encoding: {e}")))
}

pub(crate) fn ask_name(a: Ask) -> &'static str {
    match a {
        Ask::Request => "request",
        Ask::Invite => "invite",
    }
}
