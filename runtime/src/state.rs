//! The player's saved state: typed, serde round-trippable, versioned.
//!
//! Every saved player file carries `format_version`. Loading goes through
//! [`PlayerState::from_json`], which runs the migration chain from the file's
//! version to [`STATE_FORMAT_VERSION`]. Each migration step is a total
//! function on JSON values (it fills defaults, renames keys), so migrating
//! cannot fail; only a file that is not a player file at all is refused.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The current player file format.
pub const STATE_FORMAT_VERSION: u32 = 7;

/// A construction or upgrade in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upgrade {
    /// The level being built.
    pub to_level: u32,
    pub started_ms: i64,
    pub ends_ms: i64,
}

/// One building on the player's grid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Building {
    /// Unique within the player, never reused.
    pub id: u32,
    /// The building type's id: inline, not on the heap (ids of up to 24
    /// bytes), as a base of hundreds of buildings is decoded, cloned and
    /// dropped at every login and save.
    pub building: compact_str::CompactString,
    /// Completed level; 0 while the first construction runs.
    pub level: u32,
    pub x: i32,
    pub y: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<Upgrade>,
    /// Production accrued and not yet collected, as of `since_ms`.
    #[serde(default)]
    pub stored: i64,
    /// When production was last settled into `stored`.
    #[serde(default)]
    pub since_ms: i64,
}

impl Building {
    /// A finished building (no construction running), producing from `now_ms`.
    pub fn completed(id: u32, building: &str, level: u32, x: i32, y: i32, now_ms: i64) -> Building {
        Building { id, building: building.into(), level, x, y, upgrade: None, stored: 0, since_ms: now_ms }
    }
}

/// One unit waiting in (or at the head of) a training queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingOrder {
    pub unit: String,
    /// The building type that trains it.
    pub building: String,
    /// The building (instance id) whose own queue holds it, when the title
    /// keeps a queue per building (`work.training`); `None` in a queue
    /// per building type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub building_id: Option<u32>,
    pub ends_ms: i64,
}

/// A research in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResearchOrder {
    pub research: String,
    pub level: u32,
    /// The building (instance id) it runs in; `None` for a research started
    /// before research was tied to a building (a version 4 file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub building_id: Option<u32>,
    pub started_ms: i64,
    pub ends_ms: i64,
}

/// A timed modifier the player has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveModifier {
    pub stacks: u32,
    pub ends_ms: i64,
}

/// The daily reward streak: the UTC day (days since 1970-01-01) of the last
/// claim, and how many days in a row it reached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Daily {
    /// `None` before the first claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_day: Option<i64>,
    pub streak: u32,
}

/// A job a building is running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRun {
    pub job: String,
    /// The building (instance id) running it.
    pub building_id: u32,
    /// Units sent with it, back when it ends or is cancelled.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub units: BTreeMap<String, i64>,
    pub started_ms: i64,
    pub ends_ms: i64,
}

/// Everything the server saves about one player of one title.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlayerState {
    pub format_version: u32,
    pub title: String,
    /// The title content version this state was last advanced under.
    pub content_version: String,
    pub created_ms: i64,
    /// The time the state has been advanced to.
    pub clock_ms: i64,
    pub resources: BTreeMap<String, i64>,
    pub buildings: Vec<Building>,
    pub next_building_id: u32,
    pub units: BTreeMap<String, i64>,
    pub training: Vec<TrainingOrder>,
    pub research: BTreeMap<String, u32>,
    /// Research in progress, in the order started: at most one, or one per
    /// building of the research's type (`work.research`).
    #[serde(default)]
    pub research_running: Vec<ResearchOrder>,
    pub items: BTreeMap<String, i64>,
    /// Purchases per offer id.
    pub purchases: BTreeMap<String, u32>,
    pub quests_claimed: BTreeSet<String>,
    pub flags: BTreeSet<String>,
    /// Script timers by name, with the time they end.
    pub timers: BTreeMap<String, i64>,
    /// Timed modifiers active now, by id.
    #[serde(default)]
    pub modifiers: BTreeMap<String, ActiveModifier>,
    /// Jobs running (crafting, expeditions), in the order started.
    #[serde(default)]
    pub jobs: Vec<JobRun>,
    /// Counters of what the player did (built:<building>, trained:<unit>,
    /// collected:<resource>, jobs:<job>, researched, quests, logins) and
    /// what scripts count; achievements read them.
    #[serde(default)]
    pub counters: BTreeMap<String, i64>,
    /// Tiers claimed of each achievement.
    #[serde(default)]
    pub achievements: BTreeMap<String, u32>,
    /// The daily reward streak.
    #[serde(default)]
    pub daily: Daily,
    pub scores: BTreeMap<String, i64>,
    pub xp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_login_ms: Option<i64>,
    /// How many journaled operations this state has absorbed. The server
    /// numbers each operation it applies; after a crash it replays from its
    /// journal exactly the operations numbered above the saved `seq`, so
    /// nothing acknowledged is lost and nothing is applied twice.
    pub seq: u64,
    /// No raid may start on this player before this time (set after a
    /// lost defense).
    #[serde(default)]
    pub shield_until_ms: i64,
    /// The last raids on this player, oldest first, at most
    /// [`BATTLE_LOG_MAX`].
    #[serde(default)]
    pub battle_log: Vec<BattleLogEntry>,
    /// The last raid this player finished as the attacker, so that a result
    /// delivered twice is applied once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_raid: Option<String>,
    /// When the base last moved on the world map (relocation cooldown).
    #[serde(default)]
    pub relocated_ms: i64,
    /// The last operations that changed this player, oldest first, at most
    /// [`HISTORY_MAX`] (for customer support).
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    /// When the server last kept a snapshot of this file (for support to
    /// restore); server bookkeeping, never read by the rules.
    #[serde(default)]
    pub snapshot_ms: i64,
    /// The last requests that carried an idempotency `key`, oldest first,
    /// at most [`ANSWERED_MAX`]: a request sent again with the same key
    /// (a client resending after a dropped connection) is answered from
    /// here instead of being applied twice. Server bookkeeping, never read
    /// by the rules.
    #[serde(default)]
    pub answered: Vec<Answered>,
    /// Gifts to clan members: how many were sent today, and those not yet
    /// in their receiver's inbox.
    #[serde(default)]
    pub gifts: Gifts,
}

/// Gifts a player sent (`world.clans.gifts`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gifts {
    /// The UTC day (days since 1970) `sent_today` counts.
    pub day: i64,
    pub sent_today: u32,
    /// Taken from this player and not yet in the receiver's inbox, oldest
    /// first; the server delivers each and then removes it, so a gift
    /// outlives a crash of the server between the two.
    pub outgoing: Vec<OutgoingGift>,
}

/// A gift on its way to a clan member's inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutgoingGift {
    /// Unique among the player's gifts; the receiver's inbox item id.
    pub id: String,
    pub to: String,
    /// The clan both were in when it was sent.
    pub clan: String,
    pub resources: BTreeMap<String, i64>,
    pub sent_ms: i64,
}

/// Gifts a player may have on their way at once: each is delivered within
/// moments unless the world store is down, and a title allows at most 100
/// a day.
pub const OUTGOING_GIFTS_MAX: usize = 100;

/// Keyed requests remembered per player. A client keeps at most this many
/// keyed requests unanswered (docs/protocol.md), so every one it may send
/// again after a reconnect is still here; 32 short keys weigh about 2 KB.
pub const ANSWERED_MAX: usize = 32;

/// A request that carried an idempotency key, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answered {
    /// The client's key.
    pub key: String,
    /// The operation's number (the state's `seq` once it was applied).
    pub seq: u64,
    /// The error code it was refused with; `None` when it was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Operations kept in a player's history: enough for support to see what
/// a player did in their last sessions, small enough (a few kilobytes) not
/// to weigh on every save.
pub const HISTORY_MAX: usize = 30;

/// One operation in a player's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryEntry {
    /// The operation's number (the state's `seq` once it was applied).
    pub seq: u64,
    pub at_ms: i64,
    /// What it was: an action (`build`, `custom:feast`), `login`,
    /// `raid_end`, `admin_adjust`, `admin_restore`, ...
    pub op: String,
}

/// Raids kept in a player's battle log: what a defender wants to look back
/// on after a weekend away, and a bound on the file's size.
pub const BATTLE_LOG_MAX: usize = 20;

/// One raid on a player, as the defender sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BattleLogEntry {
    pub raid: String,
    pub attacker: String,
    pub at_ms: i64,
    /// Whether the attacker won.
    pub victory: bool,
    pub destruction_percent: u32,
    /// What the defender lost.
    pub loot: BTreeMap<String, i64>,
    /// The change to the defender's raid score.
    pub score: i64,
}

/// Why a player file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("player file is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("player file has format_version {0}, newer than this server understands ({STATE_FORMAT_VERSION})")]
    TooNew(u64),
    #[error("player file has no format_version")]
    NoVersion,
    #[error("player file is not UTF-8 text where its format says JSON")]
    NotUtf8,
    #[error("not a player file: it starts with neither `{{` (JSON) nor `CITADEL-PLAYER ` (a header)")]
    NotAPlayerFile,
    #[error("player file header: {0}")]
    Header(String),
    #[error("player file is truncated or overwritten: its header says {header} bytes follow it, {actual} do")]
    Length { header: u64, actual: u64 },
    #[error("player file is corrupted: its bytes have checksum crc32={actual:08x}, its header says {header:08x}")]
    Checksum { header: u32, actual: u32 },
    #[error("player file header says format_version {header}, the state inside says {content}")]
    VersionMismatch { header: u64, content: u64 },
    #[error("player file's MessagePack does not decode: {0}")]
    Msgpack(String),
    #[error("player file's LZ4 data does not decompress: {0}")]
    Decompress(String),
    #[error("player file would decompress to {0} bytes, more than the {max} a state may have", max = crate::state_file::STATE_BYTES_MAX)]
    TooBig(usize),
}

/// One migration step: from the version in its index + 1 to the next.
type Migration = fn(&mut serde_json::Map<String, serde_json::Value>);

/// The chain of migrations; `MIGRATIONS[i]` turns version `i + 1` into
/// `i + 2`.
const MIGRATIONS: &[Migration] = &[v1_to_v2, v2_to_v3, v3_to_v4, v4_to_v5, v5_to_v6, v6_to_v7];

/// Version 2 counts journaled operations in `seq`; a version 1 file was
/// written before any were counted.
fn v1_to_v2(obj: &mut serde_json::Map<String, serde_json::Value>) {
    obj.entry("seq").or_insert(0.into());
}

/// Version 3 adds the raid fields (shield, battle log, last raid) and the
/// relocation time, all empty for a player who never met a raid.
fn v2_to_v3(obj: &mut serde_json::Map<String, serde_json::Value>) {
    obj.entry("shield_until_ms").or_insert(0.into());
    obj.entry("battle_log").or_insert(serde_json::Value::Array(Vec::new()));
    obj.entry("relocated_ms").or_insert(0.into());
}

/// Version 4 keeps a short history of operations, empty for older files,
/// and the time of the last snapshot (never, for older files).
fn v3_to_v4(obj: &mut serde_json::Map<String, serde_json::Value>) {
    obj.entry("history").or_insert(serde_json::Value::Array(Vec::new()));
    obj.entry("snapshot_ms").or_insert(0.into());
}

/// Version 5 keeps the research in progress as a list (several labs may
/// research at once): a running `research_active` becomes its one entry.
/// It also keeps timed modifiers, running jobs, counters, achievements and
/// the daily streak, all empty for older files.
fn v4_to_v5(obj: &mut serde_json::Map<String, serde_json::Value>) {
    let running = match obj.remove("research_active") {
        Some(order @ serde_json::Value::Object(_)) => vec![order],
        _ => Vec::new(),
    };
    obj.entry("research_running").or_insert(serde_json::Value::Array(running));
    obj.entry("modifiers").or_insert(serde_json::Value::Object(serde_json::Map::new()));
    obj.entry("jobs").or_insert(serde_json::Value::Array(Vec::new()));
    obj.entry("counters").or_insert(serde_json::Value::Object(serde_json::Map::new()));
    obj.entry("achievements").or_insert(serde_json::Value::Object(serde_json::Map::new()));
    obj.entry("daily").or_insert(serde_json::json!({ "streak": 0 }));
}

/// Version 6 remembers the last requests sent with an idempotency key;
/// an older file has answered none.
fn v5_to_v6(obj: &mut serde_json::Map<String, serde_json::Value>) {
    obj.entry("answered").or_insert(serde_json::Value::Array(Vec::new()));
}

/// Version 7 keeps the gifts a player sent to clan members; an older file
/// has sent none.
fn v6_to_v7(obj: &mut serde_json::Map<String, serde_json::Value>) {
    obj.entry("gifts").or_insert(serde_json::json!({ "day": 0, "sent_today": 0, "outgoing": [] }));
}

impl PlayerState {
    /// How the request with this idempotency key ended, if it is one of
    /// the last [`ANSWERED_MAX`] keyed requests.
    pub fn answered(&self, key: &str) -> Option<&Answered> {
        self.answered.iter().rev().find(|a| a.key == key)
    }

    /// Remembers a keyed request, applied (`error` None) or refused, as
    /// operation `seq`; the oldest is forgotten beyond [`ANSWERED_MAX`].
    pub fn remember_answer(&mut self, key: &str, seq: u64, error: Option<&str>) {
        if self.answered.len() >= ANSWERED_MAX {
            self.answered.remove(0);
        }
        self.answered.push(Answered { key: key.to_string(), seq, error: error.map(str::to_string) });
    }

    /// The building with this instance id.
    pub fn building(&self, id: u32) -> Option<&Building> {
        self.buildings.iter().find(|b| b.id == id)
    }

    pub(crate) fn building_mut(&mut self, id: u32) -> Option<&mut Building> {
        self.buildings.iter_mut().find(|b| b.id == id)
    }

    /// Serializes to the saved JSON form.
    pub fn to_json(&self) -> String {
        // Serializing plain maps, vectors and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a player file of any known version, migrating it to the current one.
    pub fn from_json(text: &str) -> Result<PlayerState, StateError> {
        // Fast path: a file of the current version parses straight into the
        // typed state (no intermediate JSON tree); anything else goes
        // through the migration chain.
        if let Ok(state) = serde_json::from_str::<PlayerState>(text) {
            if state.format_version == STATE_FORMAT_VERSION {
                return Ok(state);
            }
        }
        PlayerState::from_value(serde_json::from_str(text)?)
    }

    /// A player state of any known version as a JSON tree, migrated to the
    /// current one.
    pub fn from_value(mut value: serde_json::Value) -> Result<PlayerState, StateError> {
        let obj = value.as_object_mut().ok_or(StateError::NoVersion)?;
        let version = obj.get("format_version").and_then(|v| v.as_u64()).ok_or(StateError::NoVersion)?;
        if version > u64::from(STATE_FORMAT_VERSION) {
            return Err(StateError::TooNew(version));
        }
        for step in MIGRATIONS.iter().skip(version.saturating_sub(1) as usize) {
            step(obj);
        }
        obj.insert("format_version".into(), STATE_FORMAT_VERSION.into());
        Ok(serde_json::from_value(value)?)
    }
}
