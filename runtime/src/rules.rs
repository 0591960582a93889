//! The rules engine: pure functions of (title, state, action, now, rng).
//!
//! Time is lazy: nothing ticks. [`advance`] brings a state to `now` by
//! completing every timer that ended in between, in time order, and
//! [`apply`] advances and then performs one [`Action`]. An action either
//! succeeds completely or fails with an [`ActionError`] and leaves the
//! (advanced) state exactly as it was: simple actions check everything
//! before they change anything; actions that apply lists of effects
//! (purchases, items, quests, custom script actions) work on a copy that
//! replaces the state only on success.

use std::collections::BTreeMap;

use citadel_dsl::{Dynamic, Effect, Expr, IdKind};
use serde::{Deserialize, Serialize};

use crate::diagnostic::did_you_mean;
use crate::format::{
    Amounts, Grants, ResearchEffectKind, ResearchSlots, ShortfallProduction, SpeedUpRule, Stacking, TrainingQueues,
};
use crate::state::*;
use crate::title::{HookRef, Title};
use crate::view::with_ctx;

/// Units one `train` action may queue; bigger batches are a client bug.
pub const TRAIN_COUNT_MAX: i64 = 100;
/// Flags one player may have set; flags are for scripted progress, not data.
pub const FLAGS_MAX: usize = 256;
/// Length of one flag or timer name.
pub const NAME_BYTES_MAX: usize = 64;
/// Script timers one player may have running.
pub const TIMERS_MAX: usize = 32;
/// Script timers fired in one advance. A timer that restarts itself every
/// second would otherwise fire millions of times after a month offline;
/// timers beyond this fire at the next advance instead.
pub const TIMER_FIRINGS_PER_ADVANCE_MAX: usize = 1000;
/// Length of a notification text.
pub const NOTIFY_BYTES_MAX: usize = 500;
/// Most of one item kind a player may hold.
pub const ITEM_COUNT_MAX: i64 = 1_000_000_000;
/// Counters one player may have: the engine's (one per building type,
/// unit, resource and job a title defines, well under this) and scripts'.
pub const COUNTERS_MAX: usize = 512;
/// Milliseconds in a UTC day (daily rewards count days since 1970-01-01).
const DAY_MS: i64 = 86_400_000;

/// The deterministic random source injected into the rules. Hooks draw
/// their seeds from it, so a replay with the same seed gives the same result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// The whole generator state: `Rng::new(r.state())` continues exactly
    /// where `r` is (the server journals it to replay an operation).
    pub fn state(&self) -> u64 {
        self.0
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

// Each list of names the wire carries (actions, error codes, events) is
// declared once, below, through these macros: the enum, each variant's JSON
// name and its meaning, from which the docs are generated. A test checks
// each name against serde's own.

/// Declares [`Action`], [`ACTION_NAMES`] and [`ACTION_DOCS`].
macro_rules! actions {
    ($( $(#[doc = $doc:literal])* $variant:ident $fields:tt => $name:literal; )*) => {
        /// What a player asks for. The JSON form is what clients send:
        /// `{"action": "build", "building": "farm", "x": 3, "y": 4}`.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
        pub enum Action { $( $(#[doc = $doc])* $variant $fields, )* }

        impl Action {
            /// The action's name as clients send it.
            pub fn name(&self) -> &'static str {
                match self { $( Action::$variant { .. } => $name, )* }
            }
        }

        /// Every action name as clients send it (`{"action": "<name>", ...}`).
        pub const ACTION_NAMES: &[&str] = &[$($name),*];

        /// Every action with what it does (the protocol docs are generated from it).
        pub const ACTION_DOCS: &[(&str, &str)] = &[$( ($name, concat!($($doc),*)) ),*];
    };
}

/// Declares [`ErrorCode`] and [`ERROR_CODE_DOCS`].
macro_rules! error_codes {
    ($( $variant:ident => $name:literal, $meaning:literal; )*) => {
        /// Stable error codes; clients and scenario tests match on them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode { $( #[doc = $meaning] $variant, )* }

        impl ErrorCode {
            /// The code as in JSON (`insufficient_resources`).
            pub fn as_str(self) -> &'static str {
                match self { $( ErrorCode::$variant => $name, )* }
            }
        }

        /// Every error code as in JSON, with its meaning (the protocol docs
        /// and the title format docs are generated from this).
        pub const ERROR_CODE_DOCS: &[(&str, &str)] = &[$( ($name, $meaning) ),*];
    };
}

/// Declares [`Event`], [`EVENT_NAMES`] and [`EVENT_DOCS`].
macro_rules! events {
    ($( $(#[doc = $doc:literal])* $variant:ident $fields:tt => $name:literal; )*) => {
        /// Something that happened, for the client to show.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(tag = "event", rename_all = "snake_case")]
        pub enum Event { $( $(#[doc = $doc])* $variant $fields, )* }

        impl Event {
            /// The event's name as in JSON (`{"event": "<name>", ...}`).
            pub fn name(&self) -> &'static str {
                match self { $( Event::$variant { .. } => $name, )* }
            }
        }

        /// Every event name as in JSON.
        pub const EVENT_NAMES: &[&str] = &[$($name),*];

        /// Every event with what it means (the protocol docs are generated from it).
        pub const EVENT_DOCS: &[(&str, &str)] = &[$( ($name, concat!($($doc),*)) ),*];
    };
}

actions! {
    /// Place a new building and start its construction.
    Build { building: String, x: i32, y: i32 } => "build";
    /// Start upgrading a building to its next level.
    Upgrade { id: u32 } => "upgrade";
    /// Cancel a construction or upgrade; refunds `cancel_refund_percent` of its cost.
    Cancel { id: u32 } => "cancel";
    /// Finish a construction or upgrade now, paying premium currency.
    SpeedUp { id: u32 } => "speed_up";
    /// Finish a running research now, paying premium currency; `research`
    /// names it, and may be left out while only one runs.
    SpeedUpResearch {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        research: Option<String>,
    } => "speed_up_research";
    /// Cancel the running research (named, to be sure it is the one meant);
    /// refunds `cancel_refund_percent` of its cost.
    CancelResearch { research: String } => "cancel_research";
    /// Finish a building type's training now, paying premium currency: every
    /// queue of the type, or only the queue of building `building_id` (when
    /// the title keeps a queue per building).
    SpeedUpTraining {
        building: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        building_id: Option<u32>,
    } => "speed_up_training";
    /// Move a building to another free spot.
    Move { id: u32, x: i32, y: i32 } => "move";
    /// Collect a producer's output into storage.
    Collect { id: u32 } => "collect";
    /// Collect every producer.
    CollectAll {} => "collect_all";
    /// Queue units for training, in building `building_id` or (left out)
    /// in the free building of the unit's type whose queue ends first.
    Train {
        unit: String,
        count: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        building_id: Option<u32>,
    } => "train";
    /// Start the next level of a research, in building `building_id` or
    /// (left out) in the first free building of the research's type.
    Research {
        research: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        building_id: Option<u32>,
    } => "research";
    /// Buy a store offer once.
    Buy { offer: String } => "buy";
    /// Use one item from the inventory.
    UseItem { item: String } => "use_item";
    /// Claim a finished quest's rewards.
    ClaimQuest { quest: String } => "claim_quest";
    /// Claim the next tier of an achievement whose counter has reached it.
    ClaimAchievement { achievement: String } => "claim_achievement";
    /// Claim today's daily reward (once per UTC day; the streak goes on
    /// from yesterday's claim, or starts again).
    ClaimDaily {} => "claim_daily";
    /// Start a job (jobs.json) in building `building_id` or (left out) the
    /// first free building of the job's type: its inputs are taken now.
    StartJob {
        job: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        building_id: Option<u32>,
    } => "start_job";
    /// Cancel the job building `building_id` runs: its units come back,
    /// `cancel_refund_percent` of its resources and items too.
    CancelJob { building_id: u32 } => "cancel_job";
    /// Finish the job building `building_id` runs now, paying premium currency.
    SpeedUpJob { building_id: u32 } => "speed_up_job";
    /// A title-defined action handled by a script.
    Custom {
        name: String,
        #[serde(default)]
        args: serde_json::Value,
    } => "custom";
}

error_codes! {
    UnknownId => "unknown_id", "the action names a building type, unit, research, item, offer, quest or custom action the title does not define";
    NotFound => "not_found", "no building with that instance id";
    InvalidArgument => "invalid_argument", "an argument is out of range, or the target cannot do that (collect from a non-producer, use a keepsake item)";
    InsufficientResources => "insufficient_resources", "the player cannot pay the cost";
    RequirementNotMet => "requirement_not_met", "a requires expression is false, or the needed building is missing";
    NoFreeBuilder => "no_free_builder", "every builder is busy";
    LimitReached => "limit_reached", "max_count for this building at the current headquarters level is reached, or the day's gifts to clan members (world.clans.gifts.per_day) are sent";
    MaxLevel => "max_level", "already at the highest level";
    Busy => "busy", "that building is already under construction, the research is already running, every building that could take the work is busy, a building with work cannot upgrade (work.while_upgrading false), or too many gifts are still on their way";
    NotBusy => "not_busy", "nothing in progress to cancel or speed up";
    NoSpeedUp => "no_speed_up", "this level's construction or research cannot be sped up (its speed_up is false)";
    OutOfBounds => "out_of_bounds", "the building would stick out of the grid";
    Collision => "collision", "the building would overlap another";
    QueueFull => "queue_full", "the training queue is full";
    HousingFull => "housing_full", "not enough housing for the units";
    NotAvailable => "not_available", "the offer is outside its window or over its purchase limit, the player holds none of that item, or the title has no such feature (clans, gifts)";
    AlreadyClaimed => "already_claimed", "the quest was already claimed";
    GoalNotMet => "goal_not_met", "the quest's goal is not reached yet";
    NothingToCollect => "nothing_to_collect", "nothing has been produced yet (or storage is full, for collect_all)";
    StorageFull => "storage_full", "the resource's storage is full";
    CapacityShort => "capacity_short", "a capacity (power, oxygen) is short, and the title's shortfall rule blocks this action until more is provided";
    ScriptError => "script_error", "a script failed (endless loop, error, limit) or returned an invalid effect; nothing was applied";
    ImplausibleResult => "implausible_result", "a raid result the title's rules reject: units the attacker does not own, more loot than the defender's lootable amount, a battle longer than allowed, or the title's raid check refused it; nothing was applied";
}

/// Every error code, as in JSON.
pub fn error_codes() -> impl Iterator<Item = &'static str> {
    ERROR_CODE_DOCS.iter().map(|(code, _)| *code)
}

/// Why an action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ActionError {
    pub code: ErrorCode,
    pub message: String,
}

pub(crate) fn err<T>(code: ErrorCode, message: impl Into<String>) -> Result<T, ActionError> {
    Err(ActionError { code, message: message.into() })
}

events! {
    /// A building finished its construction or an upgrade (`level` is the new level).
    BuildingCompleted { id: u32, building: String, level: u32 } => "building_completed";
    /// A research level finished.
    ResearchCompleted { research: String, level: u32 } => "research_completed";
    /// One unit finished training.
    UnitTrained { unit: String, building: String } => "unit_trained";
    /// A job ended and gave its outputs (loot rolls follow as `looted`).
    JobCompleted { job: String, building_id: u32 } => "job_completed";
    /// A timer a script started ended.
    TimerEnded { name: String } => "timer_ended";
    /// Production was collected into storage.
    Collected { resource: String, amount: i64 } => "collected";
    /// A loot table was rolled (a store offer, an item, a quest reward):
    /// `grants` is what this roll gave.
    Looted { table: String, grants: Grants } => "looted";
    /// A timed modifier started, or was stacked, refreshed or extended:
    /// `stacks` and `ends_ms` are what it has now.
    ModifierApplied { modifier: String, stacks: u32, ends_ms: i64 } => "modifier_applied";
    /// A timed modifier ended (its time ran out, or a script removed it).
    ModifierEnded { modifier: String } => "modifier_ended";
    /// Resources were given back (a cancelled construction, upgrade or training).
    Refunded { resources: Amounts } => "refunded";
    /// A message from the title's scripts for the player.
    Notify { text: String } => "notify";
    /// The title's data changed since the player last played: the state was
    /// brought to the new version (docs/title-format.md, Player migration);
    /// `changes` counts what the policy changed.
    Migrated { from: String, to: String, changes: u32 } => "migrated";
    /// A hook failed; its effects were not applied, the game went on.
    HookFailed { hook: String, message: String } => "hook_failed";
    /// Customer support changed the player's resources or items (signed amounts).
    Adjusted { resources: Amounts, items: Amounts } => "adjusted";
    /// The player gave clan member `to` these resources (taken from the
    /// player now; `gift` names the gift until it reaches `to`'s inbox).
    GiftSent { gift: String, to: String, resources: Amounts } => "gift_sent";
    /// A gift reached `to`'s inbox.
    GiftDelivered { gift: String, to: String } => "gift_delivered";
    /// A gift could not be delivered (`to`'s inbox is full): its resources
    /// came back to the player.
    GiftReturned { gift: String, to: String, resources: Amounts } => "gift_returned";
    /// Customer support put back the player's state as saved at `clock_ms`.
    Restored { clock_ms: i64 } => "restored";
}

pub(crate) fn unknown(title: &Title, kind: IdKind, id: &str) -> ActionError {
    let help = did_you_mean(id, title.ids(kind)).map(|h| format!("; {h}")).unwrap_or_default();
    ActionError { code: ErrorCode::UnknownId, message: format!("unknown {} `{id}`{help}", kind.noun()) }
}

/// A new player's state at `now_ms`.
pub fn new_player(title: &Title, now_ms: i64) -> PlayerState {
    let start = &title.manifest.start;
    let mut s = PlayerState {
        format_version: STATE_FORMAT_VERSION,
        title: title.id().to_string(),
        content_version: title.content_version.clone(),
        created_ms: now_ms,
        clock_ms: now_ms,
        ..PlayerState::default()
    };
    for r in &title.resources {
        s.resources.insert(r.id.clone(), start.resources.get(&r.id).copied().unwrap_or(0));
    }
    for (i, b) in start.buildings.iter().enumerate() {
        s.buildings.push(Building::completed(i as u32 + 1, &b.building, b.level, b.x, b.y, now_ms));
    }
    s.next_building_id = s.buildings.len() as u32 + 1;
    s.units = start.units.clone();
    s.items = start.items.clone();
    s.flags = start.flags.iter().cloned().collect();
    s.research = start.research.clone();
    s.xp = start.xp;
    s
}

// ---------------------------------------------------------------- derived stats

fn level_stats<'t>(title: &'t Title, b: &Building) -> Option<&'t crate::format::BuildingLevel> {
    if b.level == 0 {
        return None;
    }
    title.building(&b.building)?.def.levels.get(b.level as usize - 1)
}

/// Sum of an effect over every completed research level and every stack
/// of every active timed modifier.
pub fn research_bonus(title: &Title, s: &PlayerState, kind: ResearchEffectKind, target: Option<&str>) -> i64 {
    let matching = |e: &&crate::format::ResearchEffect| e.kind == kind && e.target.as_deref() == target;
    let mut total = 0i64;
    for (id, &lvl) in &s.research {
        let Some(r) = title.research_type(id) else { continue };
        for level in r.def.levels.iter().take(lvl as usize) {
            total = total.saturating_add(level.effects.iter().filter(matching).map(|e| e.value).sum::<i64>());
        }
    }
    for (id, active) in &s.modifiers {
        let Some(m) = title.modifier(id) else { continue };
        let per_stack: i64 = m.effects.iter().filter(matching).map(|e| e.value).sum();
        total = total.saturating_add(per_stack.saturating_mul(i64::from(active.stacks)));
    }
    total
}

/// Storage cap of a resource: its base cap plus storage buildings, scaled
/// by storage research. `i64::MAX` for uncapped resources.
pub fn cap(title: &Title, s: &PlayerState, r: &str) -> i64 {
    let Some(base) = title.resource(r).and_then(|d| d.cap) else { return i64::MAX };
    let built: i64 = s.buildings.iter().filter_map(|b| level_stats(title, b)).filter_map(|l| l.storage.get(r)).sum();
    let pct = 100 + research_bonus(title, s, ResearchEffectKind::StoragePercent, Some(r));
    (base + built).saturating_mul(pct.max(0)) / 100
}

fn hq_level(title: &Title, s: &PlayerState) -> u32 {
    s.buildings.iter().filter(|b| b.building == title.headquarters()).map(|b| b.level).max().unwrap_or(0)
}

fn builders_total(title: &Title, s: &PlayerState) -> u32 {
    title.manifest.builders + s.buildings.iter().filter_map(|b| level_stats(title, b)).map(|l| l.builders).sum::<u32>()
}

fn builders_busy(s: &PlayerState) -> u32 {
    s.buildings.iter().filter(|b| b.upgrade.is_some()).count() as u32
}

fn housing_total(title: &Title, s: &PlayerState) -> i64 {
    s.buildings.iter().filter_map(|b| level_stats(title, b)).map(|l| l.housing).sum()
}

/// Housing taken: units at home, in training, away on jobs, and what
/// running jobs may bring back (kept free for them from their start).
fn housing_used(title: &Title, s: &PlayerState) -> i64 {
    let of = |u: &str| title.unit(u).map_or(0, |t| t.def.housing);
    let jobs: i64 = s
        .jobs
        .iter()
        .map(|r| {
            let away: i64 = r.units.iter().map(|(u, n)| of(u) * n).sum();
            away + title.job(&r.job).map_or(0, |j| grants_housing(title, &j.def.outputs))
        })
        .sum();
    s.units.iter().map(|(u, n)| of(u) * n).sum::<i64>() + s.training.iter().map(|o| of(&o.unit)).sum::<i64>() + jobs
}

/// The most housing a grants block can need: its units, plus each loot
/// table's largest unit entry on every roll.
fn grants_housing(title: &Title, g: &Grants) -> i64 {
    let housing_of = |units: &Amounts| -> i64 {
        units.iter().map(|(u, n)| title.unit(u).map_or(0, |t| t.def.housing).saturating_mul(*n)).sum()
    };
    let mut need = housing_of(&g.units);
    for t in g.loot.iter().filter_map(|id| title.loot_table(id)) {
        let most = t.entries.iter().map(|e| housing_of(&e.grants.units)).max().unwrap_or(0);
        need = need.saturating_add(most.saturating_mul(i64::from(t.rolls)));
    }
    need
}

/// `(provided, drawn)` of every capacity of the title, in its order, over
/// the finished buildings; empty for a title without capacities.
fn capacity_totals(title: &Title, s: &PlayerState) -> Vec<(i64, i64)> {
    if title.capacities.is_empty() {
        return Vec::new();
    }
    let mut totals = vec![(0i64, 0i64); title.capacities.len()];
    for l in s.buildings.iter().filter_map(|b| level_stats(title, b)) {
        for (t, c) in totals.iter_mut().zip(&title.capacities) {
            t.0 = t.0.saturating_add(l.provides.get(&c.id).copied().unwrap_or(0));
            t.1 = t.1.saturating_add(l.draws.get(&c.id).copied().unwrap_or(0));
        }
    }
    totals
}

/// `(provided, drawn)` of one capacity; `(0, 0)` for an unknown one.
pub fn capacity(title: &Title, s: &PlayerState, id: &str) -> (i64, i64) {
    let i = title.capacities.iter().position(|c| c.id == id);
    i.map_or((0, 0), |i| capacity_totals(title, s)[i])
}

/// Percent of its rate a producer at level `l` makes: 100, less for each
/// capacity it draws that is short, by that capacity's shortfall rule.
fn supplied_percent(title: &Title, l: &crate::format::BuildingLevel, totals: &[(i64, i64)]) -> i64 {
    let mut pct = 100;
    for (c, &(provided, drawn)) in title.capacities.iter().zip(totals) {
        if drawn <= provided || !l.draws.contains_key(&c.id) {
            continue;
        }
        pct = match c.shortfall.production {
            ShortfallProduction::Proportional => pct * provided.max(0) / drawn,
            ShortfallProduction::Stop => 0,
            ShortfallProduction::None => pct,
        };
    }
    pct
}

/// Refuses `action` while a capacity whose shortfall blocks it is short.
fn capacity_allows(title: &Title, s: &PlayerState, action: &str) -> Result<(), ActionError> {
    if !title.capacities.iter().any(|c| c.shortfall.blocks.iter().any(|a| a == action)) {
        return Ok(());
    }
    for (c, (provided, drawn)) in title.capacities.iter().zip(capacity_totals(title, s)) {
        if drawn > provided && c.shortfall.blocks.iter().any(|a| a == action) {
            return err(
                ErrorCode::CapacityShort,
                format!(
                    "not enough {}: {provided} provided, {drawn} drawn; {action} waits until more is provided",
                    c.name
                ),
            );
        }
    }
    Ok(())
}

/// `(resource, per_hour, capacity)` of a building's current level, with
/// research, timed modifiers and capacity shortfalls (`totals`, from
/// [`capacity_totals`]) applied.
fn production(title: &Title, s: &PlayerState, b: &Building, totals: &[(i64, i64)]) -> Option<(String, i64, i64)> {
    let l = level_stats(title, b)?;
    let p = l.production.as_ref()?;
    let pct = 100 + research_bonus(title, s, ResearchEffectKind::ProductionPercent, Some(&p.resource));
    let supplied = supplied_percent(title, l, totals);
    Some((p.resource.clone(), p.per_hour * pct.max(0) / 100 * supplied / 100, p.capacity))
}

/// Production waiting in a building at `now`: nothing accrues while it upgrades.
fn accrued(title: &Title, s: &PlayerState, b: &Building, now: i64, totals: &[(i64, i64)]) -> i64 {
    match production(title, s, b, totals) {
        Some((_, rate, capacity)) if b.upgrade.is_none() => {
            let elapsed = (now - b.since_ms).max(0) as i128;
            let made = (rate as i128 * elapsed / 3_600_000) as i64;
            b.stored.saturating_add(made).min(capacity)
        }
        _ => b.stored,
    }
}

/// Folds what building `i` made until `now` into its `stored` (a building
/// that produces nothing only has its production clock moved).
fn bank(title: &Title, s: &mut PlayerState, i: usize, now: i64) {
    if level_stats(title, &s.buildings[i]).is_some_and(|l| l.production.is_some()) {
        let a = accrued(title, s, &s.buildings[i], now, &capacity_totals(title, s));
        s.buildings[i].stored = a;
    }
    s.buildings[i].since_ms = now;
}

/// The production of a building's current level if it consumes inputs (a
/// production chain).
fn chain<'t>(title: &'t Title, b: &Building) -> Option<&'t crate::format::Production> {
    level_stats(title, b)?.production.as_ref().filter(|p| !p.consumes.is_empty())
}

/// Steps one settling of the production chains may take. Each step ends
/// where something changes (a producer fills up, an input runs out, a
/// producer starts), so sane data needs a few per producer; past this, the
/// last step runs to the end with the producers as they are.
pub const CHAIN_STEPS_MAX: usize = 256;

/// Milliseconds in an hour: rates are per hour.
const HOUR_MS: i128 = 3_600_000;

/// Runs the production chains from each consumer's `since_ms` to `now`:
/// consumers draw their inputs from the player's stock while they produce,
/// and stall (drawing nothing) while an input is empty, while they are full
/// or while they upgrade. Time is cut where any of that changes, so the
/// result is what ticking every millisecond would give (to whole units).
fn settle_chains(title: &Title, s: &mut PlayerState, now: i64) {
    // Nothing to settle when every consumer is settled up to now (the
    // common case: several actions at the same moment).
    if !s.buildings.iter().any(|b| b.since_ms < now && chain(title, b).is_some()) {
        return;
    }
    let totals = &capacity_totals(title, s);
    struct Run {
        i: usize,
        rate: i64,
        cap: i64,
        inputs: Vec<(String, i64)>,
    }
    let runs: Vec<Run> = (0..s.buildings.len())
        .filter_map(|i| {
            let b = &s.buildings[i];
            let p = chain(title, b)?;
            let (_, rate, cap) = production(title, s, b, totals)?;
            let supplied = level_stats(title, b).map_or(100, |l| supplied_percent(title, l, totals));
            let inputs = p.consumes.iter().map(|(r, n)| (r.clone(), n * supplied / 100)).collect();
            Some(Run { i, rate, cap, inputs })
        })
        .collect();
    let Some(mut t) = runs.iter().map(|r| s.buildings[r.i].since_ms).min() else { return };
    let mut steps = 0;
    while t < now {
        steps += 1;
        let running: Vec<&Run> = runs
            .iter()
            .filter(|r| {
                let b = &s.buildings[r.i];
                b.since_ms <= t
                    && b.upgrade.is_none()
                    && b.stored < r.cap
                    && r.rate > 0
                    && r.inputs.iter().all(|(res, n)| *n <= 0 || s.resources.get(res).copied().unwrap_or(0) > 0)
            })
            .collect();
        let mut draw: BTreeMap<&str, i64> = BTreeMap::new();
        for r in &running {
            for (res, n) in r.inputs.iter().filter(|(_, n)| *n > 0) {
                *draw.entry(res.as_str()).or_default() += n;
            }
        }
        // The next change: a producer full, an input empty, a producer starting.
        let mut next = now;
        if steps < CHAIN_STEPS_MAX {
            for r in &running {
                let left = i128::from(r.cap - s.buildings[r.i].stored);
                let full = (left * HOUR_MS + i128::from(r.rate) - 1) / i128::from(r.rate);
                next = next.min(t.saturating_add(full as i64));
            }
            for (res, per_hour) in &draw {
                let stock = i128::from(s.resources.get(*res).copied().unwrap_or(0));
                next = next.min(t.saturating_add((stock * HOUR_MS / i128::from(*per_hour)) as i64));
            }
            for r in &runs {
                let since = s.buildings[r.i].since_ms;
                if since > t {
                    next = next.min(since);
                }
            }
        }
        let next = next.max(t + 1).min(now);
        let dt = i128::from(next - t);
        for r in &running {
            let made = (i128::from(r.rate) * dt / HOUR_MS) as i64;
            let b = &mut s.buildings[r.i];
            b.stored = b.stored.saturating_add(made).min(r.cap);
        }
        for (res, per_hour) in draw {
            let used = ((i128::from(per_hour) * dt + HOUR_MS - 1) / HOUR_MS) as i64;
            if let Some(stock) = s.resources.get_mut(res) {
                *stock -= used.min(*stock);
            }
        }
        t = next;
    }
    for r in &runs {
        let b = &mut s.buildings[r.i];
        b.since_ms = b.since_ms.max(now);
    }
}

/// Folds accrued production into `stored` as of `now` for every producer,
/// before anything changes production rates.
fn settle_all(title: &Title, s: &mut PlayerState, now: i64) {
    if title.chains {
        settle_chains(title, s, now);
    }
    // Chains draw stock, never capacity: the totals are the same after them.
    let totals = capacity_totals(title, s);
    for i in 0..s.buildings.len() {
        let a = accrued(title, s, &s.buildings[i], now, &totals);
        let b = &mut s.buildings[i];
        b.stored = a;
        b.since_ms = now;
    }
}

/// What clients show beside the state and the rules derive from it: the
/// storage cap of each capped resource, housing and builders used and in
/// all, and each capacity's draw against what is provided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Derived {
    pub caps: BTreeMap<String, i64>,
    pub housing: Used,
    pub builders: Used,
    pub capacities: BTreeMap<String, Used>,
    /// Producers of a chain that make nothing now because an input's stock
    /// is empty (building ids).
    pub stalled: Vec<u32>,
    /// Each unit's stats with its `stats_by` research level applied.
    pub unit_stats: BTreeMap<String, Amounts>,
    /// Each producer's output now (building id to resource, rate and the
    /// most it holds), with research, modifiers and capacity shortfalls
    /// applied; nothing for a building being upgraded. What waits in it at
    /// a later time is `stored` plus `per_hour` over the time since
    /// `since_ms`, up to `capacity` (a chain may stall sooner: `stalled`).
    pub producing: BTreeMap<u32, Producing>,
    /// Each resource's production per hour, summed over its producers.
    pub rates: BTreeMap<String, i64>,
}

/// What the player may claim or run now, for clients to show: quests not
/// yet claimed whose requirement and goal hold, and custom actions whose
/// requirement holds (an action's script may still refuse).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Ready {
    pub quests: Vec<String>,
    pub actions: Vec<String>,
}

/// [`Ready`] at `now`. Evaluates expressions only (no script, no effect),
/// with a fixed seed, so it changes nothing and needs no random generator;
/// an expression that fails counts as not ready.
pub fn ready(title: &Title, s: &mut PlayerState, now: i64) -> Ready {
    let claimed = s.quests_claimed.clone();
    with_ctx(title, s, now, 0, |ctx| {
        let holds = |e: Option<&Expr>| e.is_none_or(|e| title.sandbox.eval_bool(e, ctx).unwrap_or(false));
        Ready {
            quests: title
                .quests
                .iter()
                .filter(|q| !claimed.contains(&q.def.id) && holds(q.requires.as_ref()) && holds(Some(&q.goal)))
                .map(|q| q.def.id.clone())
                .collect(),
            actions: title
                .actions
                .iter()
                .filter(|(_, a)| holds(a.requires.as_ref()))
                .map(|(id, _)| id.clone())
                .collect(),
        }
    })
}

/// A producer's output (see [`Derived::producing`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Producing {
    pub resource: String,
    pub per_hour: i64,
    pub capacity: i64,
}

/// An amount in use out of a total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Used {
    pub used: i64,
    pub total: i64,
}

/// A unit's stats: its `stats`, with the entry of its `stats_by` research's
/// current level laid over them.
pub fn unit_stats(title: &Title, s: &PlayerState, unit: &str) -> Amounts {
    let Some(u) = title.unit(unit) else { return Amounts::new() };
    let mut stats = u.def.stats.clone();
    if let Some(by) = &u.def.stats_by {
        let level = s.research.get(&by.research).copied().unwrap_or(0) as usize;
        if let Some(entry) = level.checked_sub(1).and_then(|i| by.levels.get(i.min(by.levels.len().saturating_sub(1))))
        {
            stats.extend(entry.iter().map(|(k, v)| (k.clone(), *v)));
        }
    }
    stats
}

/// The [`Derived`] figures of a state.
pub fn derived(title: &Title, s: &PlayerState) -> Derived {
    let caps =
        title.resources.iter().filter(|r| r.cap.is_some()).map(|r| (r.id.clone(), cap(title, s, &r.id))).collect();
    let totals = capacity_totals(title, s);
    let capacities = title
        .capacities
        .iter()
        .zip(totals.iter().copied())
        .map(|(c, (provided, drawn))| (c.id.clone(), Used { used: drawn, total: provided }))
        .collect();
    let stalled = s
        .buildings
        .iter()
        .filter(|b| b.upgrade.is_none())
        .filter(|b| {
            chain(title, b).is_some_and(|p| {
                b.stored < p.capacity && p.consumes.keys().any(|r| s.resources.get(r).copied().unwrap_or(0) <= 0)
            })
        })
        .map(|b| b.id)
        .collect();
    let unit_stats = title.units.iter().map(|u| (u.def.id.clone(), unit_stats(title, s, &u.def.id))).collect();
    let producing: BTreeMap<u32, Producing> = s
        .buildings
        .iter()
        .filter(|b| b.upgrade.is_none())
        .filter_map(|b| {
            let (resource, per_hour, capacity) = production(title, s, b, &totals)?;
            Some((b.id, Producing { resource, per_hour, capacity }))
        })
        .collect();
    let mut rates = BTreeMap::new();
    for p in producing.values() {
        *rates.entry(p.resource.clone()).or_insert(0) += p.per_hour;
    }
    Derived {
        producing,
        rates,
        unit_stats,
        stalled,
        caps,
        housing: Used { used: housing_used(title, s), total: housing_total(title, s) },
        builders: Used { used: i64::from(builders_busy(s)), total: i64::from(builders_total(title, s)) },
        capacities,
    }
}

fn scaled_seconds(secs: i64, percent: i64) -> i64 {
    // Research can make things faster, but never below a tenth of the time.
    secs * (100 + percent).max(10) / 100
}

/// Adds an amount to a resource, clamped to its cap (what does not fit is
/// lost, as in every builder game); never lowers an amount already above the cap.
pub(crate) fn credit(title: &Title, s: &mut PlayerState, r: &str, amount: i64) {
    let cap = cap(title, s, r);
    let have = s.resources.get(r).copied().unwrap_or(0);
    let new = if have >= cap { have } else { have.saturating_add(amount).min(cap) };
    s.resources.insert(r.to_string(), new);
}

pub(crate) fn check_cost(title: &Title, s: &PlayerState, cost: &Amounts, times: i64) -> Result<(), ActionError> {
    for (r, &amount) in cost {
        let need = amount.checked_mul(times).unwrap_or(i64::MAX);
        let have = s.resources.get(r).copied().unwrap_or(0);
        if have < need {
            let name = title.resource(r).map_or(r.as_str(), |d| d.name.as_str());
            return err(ErrorCode::InsufficientResources, format!("needs {need} {name}, has {have}"));
        }
    }
    Ok(())
}

pub(crate) fn pay(s: &mut PlayerState, cost: &Amounts, times: i64) {
    for (r, &amount) in cost {
        if let Some(v) = s.resources.get_mut(r) {
            *v -= amount * times;
        }
    }
}

fn require(
    title: &Title,
    s: &mut PlayerState,
    expr: Option<&Expr>,
    now: i64,
    rng: &mut Rng,
) -> Result<(), ActionError> {
    let Some(expr) = expr else { return Ok(()) };
    let seed = rng.next_u64();
    match with_ctx(title, s, now, seed, |ctx| title.sandbox.eval_bool(expr, ctx)) {
        Ok(true) => Ok(()),
        Ok(false) => err(ErrorCode::RequirementNotMet, format!("requirement not met: {}", expr.source())),
        Err(e) => err(ErrorCode::ScriptError, format!("requirement `{}` failed: {}", expr.source(), e.with_position())),
    }
}

fn fits(
    title: &Title,
    s: &PlayerState,
    building: &str,
    x: i32,
    y: i32,
    ignore: Option<u32>,
) -> Result<(), ActionError> {
    let Some(def) = title.building(building) else { return Err(unknown(title, IdKind::Building, building)) };
    let (w, h) = (def.def.size.w, def.def.size.h);
    let grid = &title.manifest.grid;
    if x < 0 || y < 0 || x + w > grid.width || y + h > grid.height {
        return err(
            ErrorCode::OutOfBounds,
            format!("a {w}x{h} building at ({x}, {y}) does not fit the {}x{} grid", grid.width, grid.height),
        );
    }
    for b in s.buildings.iter().filter(|b| Some(b.id) != ignore) {
        let Some(o) = title.building(&b.building) else { continue };
        if x < b.x + o.def.size.w && b.x < x + w && y < b.y + o.def.size.h && b.y < y + h {
            return err(
                ErrorCode::Collision,
                format!("overlaps building {} ({}) at ({}, {})", b.id, b.building, b.x, b.y),
            );
        }
    }
    Ok(())
}

fn building_index(s: &PlayerState, id: u32) -> Result<usize, ActionError> {
    s.buildings
        .iter()
        .position(|b| b.id == id)
        .map_or_else(|| err(ErrorCode::NotFound, format!("no building with id {id}")), Ok)
}

/// Why building `b` cannot take research or training now, if it cannot:
/// it is unfinished, or upgrading in a title whose buildings stop working
/// while they upgrade (`work.while_upgrading`).
fn cannot_work(title: &Title, b: &Building) -> Option<ActionError> {
    if b.level == 0 {
        return Some(ActionError {
            code: ErrorCode::RequirementNotMet,
            message: format!("building {} ({}) is not finished yet", b.id, b.building),
        });
    }
    if b.upgrade.is_some() && !title.manifest.work.while_upgrading {
        return Some(ActionError {
            code: ErrorCode::Busy,
            message: format!("building {} ({}) is upgrading and takes no work until it is done", b.id, b.building),
        });
    }
    None
}

/// The work that keeps building `b` from upgrading when buildings stop
/// working while they upgrade: a research running in it, or units queued
/// in it (or for its type, in a title with one queue per building type).
fn work_in(title: &Title, s: &PlayerState, b: &Building) -> Option<String> {
    if let Some(r) = s.research_running.iter().find(|r| r.building_id == Some(b.id)) {
        return Some(format!("researching {}", r.research));
    }
    if let Some(j) = s.jobs.iter().find(|j| j.building_id == b.id) {
        return Some(format!("running {}", j.job));
    }
    let queued = |o: &&TrainingOrder| match title.manifest.work.training {
        TrainingQueues::PerBuilding => o.building_id == Some(b.id),
        TrainingQueues::PerBuildingType => o.building_id.is_none() && o.building == b.building,
    };
    let n = s.training.iter().filter(queued).count();
    (n > 0).then(|| format!("training {n} unit(s)"))
}

/// The buildings of type `kind` that can take a piece of work: building
/// `id` alone when the player named one, otherwise every building of the
/// type, in id order, less those that cannot work now or that `refuse`
/// turns down (a busy lab, a full queue). Refuses with the reason the first
/// candidate gave when none is left; `what` names the work's subject for
/// "needs a finished ..." (`Knight`, `Masonry`).
fn workplaces(
    title: &Title,
    s: &PlayerState,
    kind: &str,
    id: Option<u32>,
    what: &str,
    refuse: impl Fn(&Building) -> Option<ActionError>,
) -> Result<Vec<usize>, ActionError> {
    let candidates: Vec<usize> = match id {
        Some(id) => {
            let i = building_index(s, id)?;
            if s.buildings[i].building != kind {
                let name = title.building(kind).map_or(kind, |d| d.def.name.as_str());
                return err(
                    ErrorCode::InvalidArgument,
                    format!("building {id} is a {}, not a {name}", s.buildings[i].building),
                );
            }
            vec![i]
        }
        None => (0..s.buildings.len()).filter(|&i| s.buildings[i].building == kind).collect(),
    };
    let candidates = if id.is_none() {
        let finished: Vec<usize> = candidates.into_iter().filter(|&i| s.buildings[i].level >= 1).collect();
        if finished.is_empty() {
            return err(ErrorCode::RequirementNotMet, format!("{what} needs a finished {kind}"));
        }
        finished
    } else {
        candidates
    };
    let mut first_refusal = None;
    let mut free = Vec::new();
    for i in candidates {
        let b = &s.buildings[i];
        match cannot_work(title, b).or_else(|| refuse(b)) {
            None => free.push(i),
            Some(e) => {
                first_refusal.get_or_insert(e);
            }
        }
    }
    match first_refusal {
        Some(e) if free.is_empty() => Err(e),
        _ => Ok(free),
    }
}

/// The index of the running research `named`, or of the only one running
/// when the player named none.
fn running_research(title: &Title, s: &PlayerState, named: Option<&str>) -> Result<usize, ActionError> {
    match named {
        Some(id) => {
            let r = title.research_type(id).ok_or_else(|| unknown(title, IdKind::Research, id))?;
            s.research_running
                .iter()
                .position(|o| o.research == id)
                .map_or_else(|| err(ErrorCode::NotBusy, format!("{} is not being researched", r.def.name)), Ok)
        }
        None => match s.research_running.len() {
            0 => err(ErrorCode::NotBusy, "no research is running"),
            1 => Ok(0),
            _ => {
                let names: Vec<&str> = s.research_running.iter().map(|o| o.research.as_str()).collect();
                err(
                    ErrorCode::InvalidArgument,
                    format!("several research are running: name one of {}", names.join(", ")),
                )
            }
        },
    }
}

fn speed_up_cost(seconds_per_premium: i64, remaining_ms: i64) -> i64 {
    let per = seconds_per_premium.max(1) * 1000;
    ((remaining_ms.max(0) + per - 1) / per).max(1)
}

/// Pays for finishing `remaining_ms` of work now, in premium currency, at
/// `rule`'s price (the title's unless the level sets its own), or refuses
/// (changing nothing) when the level cannot be sped up or the player
/// cannot pay; `what` names the work for the refusal.
fn pay_speed_up(
    title: &Title,
    s: &mut PlayerState,
    rule: SpeedUpRule,
    what: &str,
    remaining_ms: i64,
) -> Result<(), ActionError> {
    let Some(per) = rule.seconds_per_premium(title.manifest.speed_up_seconds_per_premium) else {
        return err(ErrorCode::NoSpeedUp, format!("{what} cannot be sped up"));
    };
    let cost = speed_up_cost(per, remaining_ms);
    check_cost(title, s, &Amounts::from([(title.premium().to_string(), cost)]), 1)?;
    s.resources.entry(title.premium().to_string()).and_modify(|v| *v -= cost);
    Ok(())
}

// ---------------------------------------------------------------- hooks and effects

pub(crate) fn event_map(pairs: &[(&str, Dynamic)]) -> Dynamic {
    let mut map = citadel_dsl::Map::new();
    for (k, v) in pairs {
        map.insert((*k).into(), v.clone());
    }
    Dynamic::from_map(map)
}

/// Calls a script function and returns its effects, or a message.
pub(crate) fn call_fn(
    title: &Title,
    s: &mut PlayerState,
    f: &HookRef,
    arg: Dynamic,
    now: i64,
    rng: &mut Rng,
) -> Result<Vec<Effect>, String> {
    let Some(script) = title.script_fn(f) else { return Err(format!("no script `{}`", f.module)) };
    let seed = rng.next_u64();
    crate::timing::script(
        || f.to_string(),
        || with_ctx(title, s, now, seed, |ctx| title.sandbox.call(script, &f.function, arg, ctx)),
    )
    .map_err(|e| format!("{f}: {}", e.with_position()))
}

/// Applies effects to `s` all together or not at all.
pub(crate) fn apply_effects(
    title: &Title,
    s: &mut PlayerState,
    effects: &[Effect],
    now: i64,
    events: &mut Vec<Event>,
) -> Result<(), String> {
    if effects.is_empty() {
        return Ok(());
    }
    let mut undo = Undo::of(s);
    let mut out = Vec::new();
    for (i, e) in effects.iter().enumerate() {
        let settles = matches!(e, Effect::ApplyModifier { .. } | Effect::RemoveModifier { .. });
        if settles && undo.production.is_none() {
            undo.production = Some(s.buildings.iter().map(|b| (b.stored, b.since_ms)).collect());
        }
        if let Err(m) = apply_effect(title, s, e, now, &mut out) {
            undo.restore(s);
            return Err(format!("effect {i} ({}): {m}", e.kind()));
        }
    }
    events.extend(out);
    Ok(())
}

/// Every part of a player's state that an effect may write, kept to put
/// back when a later effect of the same batch fails. Effects never touch
/// buildings, training or research, which make up most of a large base,
/// so this is far cheaper than copying the whole state (a login hook on a
/// 600-building base spent most of its time in that copy). A new effect
/// that writes another field must add it here.
struct Undo {
    /// Each building's `(stored, since_ms)`, taken before the first effect
    /// that settles production (a modifier changes production rates).
    production: Option<Vec<(i64, i64)>>,
    counters: BTreeMap<String, i64>,
    modifiers: BTreeMap<String, ActiveModifier>,
    resources: BTreeMap<String, i64>,
    items: BTreeMap<String, i64>,
    units: BTreeMap<String, i64>,
    flags: std::collections::BTreeSet<String>,
    timers: BTreeMap<String, i64>,
    scores: BTreeMap<String, i64>,
    xp: i64,
}

impl Undo {
    fn of(s: &PlayerState) -> Undo {
        Undo {
            counters: s.counters.clone(),
            production: None,
            modifiers: s.modifiers.clone(),
            resources: s.resources.clone(),
            items: s.items.clone(),
            units: s.units.clone(),
            flags: s.flags.clone(),
            timers: s.timers.clone(),
            scores: s.scores.clone(),
            xp: s.xp,
        }
    }

    fn restore(self, s: &mut PlayerState) {
        if let Some(production) = self.production {
            for (b, (stored, since)) in s.buildings.iter_mut().zip(production) {
                b.stored = stored;
                b.since_ms = since;
            }
        }
        s.modifiers = self.modifiers;
        s.counters = self.counters;
        s.resources = self.resources;
        s.items = self.items;
        s.units = self.units;
        s.flags = self.flags;
        s.timers = self.timers;
        s.scores = self.scores;
        s.xp = self.xp;
    }
}

fn name_ok(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > NAME_BYTES_MAX {
        return Err(format!("name must be 1 to {NAME_BYTES_MAX} bytes"));
    }
    Ok(())
}

fn apply_effect(
    title: &Title,
    s: &mut PlayerState,
    e: &Effect,
    now: i64,
    events: &mut Vec<Event>,
) -> Result<(), String> {
    let unknown = |kind: IdKind, id: &str| unknown(title, kind, id).message;
    match e {
        Effect::Grant { resource, amount } => {
            title.resource(resource).ok_or_else(|| unknown(IdKind::Resource, resource))?;
            credit(title, s, resource, *amount);
        }
        Effect::Spend { resource, amount } => {
            title.resource(resource).ok_or_else(|| unknown(IdKind::Resource, resource))?;
            let have = s.resources.get(resource).copied().unwrap_or(0);
            if have < *amount {
                return Err(format!("needs {amount} {resource}, has {have}"));
            }
            s.resources.insert(resource.clone(), have - amount);
        }
        Effect::GrantItem { item, count } => {
            title.item(item).ok_or_else(|| unknown(IdKind::Item, item))?;
            let n = s.items.entry(item.clone()).or_default();
            *n = n.saturating_add(*count).min(ITEM_COUNT_MAX);
        }
        Effect::GrantUnit { unit, count } => {
            let u = title.unit(unit).ok_or_else(|| unknown(IdKind::Unit, unit))?;
            let need = u.def.housing.saturating_mul(*count);
            let (used, total) = (housing_used(title, s), housing_total(title, s));
            if used + need > total {
                return Err(format!("not enough housing: {count} {unit} need {need}, {} free", total - used));
            }
            *s.units.entry(unit.clone()).or_default() += count;
        }
        Effect::SetFlag { flag } => {
            name_ok(flag)?;
            if !s.flags.contains(flag) && s.flags.len() >= FLAGS_MAX {
                return Err(format!("a player may have at most {FLAGS_MAX} flags"));
            }
            s.flags.insert(flag.clone());
        }
        Effect::ClearFlag { flag } => {
            s.flags.remove(flag);
        }
        Effect::StartTimer { name, seconds } => {
            name_ok(name)?;
            if !s.timers.contains_key(name) && s.timers.len() >= TIMERS_MAX {
                return Err(format!("a player may have at most {TIMERS_MAX} timers"));
            }
            s.timers.insert(name.clone(), now + seconds * 1000);
        }
        Effect::AwardScore { stat, amount } => {
            if !title.manifest.scores.contains(stat) {
                let help = did_you_mean(stat, title.manifest.scores.iter().map(String::as_str))
                    .map(|h| format!("; {h}"))
                    .unwrap_or_default();
                return Err(format!("unknown score `{stat}`: not listed in title.json scores{help}"));
            }
            let v = s.scores.entry(stat.clone()).or_default();
            *v = v.saturating_add(*amount);
        }
        Effect::GrantXp { amount } => s.xp = s.xp.saturating_add(*amount),
        Effect::Notify { text } => {
            if text.len() > NOTIFY_BYTES_MAX {
                return Err(format!("notification longer than {NOTIFY_BYTES_MAX} bytes"));
            }
            events.push(Event::Notify { text: text.clone() });
        }
        Effect::ApplyModifier { modifier } => {
            title.modifier(modifier).ok_or_else(|| unknown(IdKind::Modifier, modifier))?;
            apply_modifier(title, s, modifier, now, events);
        }
        Effect::Count { counter, amount } => {
            name_ok(counter)?;
            if !count(s, counter, *amount) {
                return Err(format!("a player may have at most {COUNTERS_MAX} counters"));
            }
        }
        Effect::RemoveModifier { modifier } => {
            title.modifier(modifier).ok_or_else(|| unknown(IdKind::Modifier, modifier))?;
            if s.modifiers.contains_key(modifier) {
                settle_all(title, s, now);
                s.modifiers.remove(modifier);
                events.push(Event::ModifierEnded { modifier: modifier.clone() });
            }
        }
    }
    Ok(())
}

/// Adds to a counter; false (nothing changed) when it is a new counter and
/// the player already has [`COUNTERS_MAX`].
pub(crate) fn count(s: &mut PlayerState, counter: &str, amount: i64) -> bool {
    if let Some(v) = s.counters.get_mut(counter) {
        *v = v.saturating_add(amount);
        return true;
    }
    if s.counters.len() >= COUNTERS_MAX {
        return false;
    }
    s.counters.insert(counter.to_string(), amount);
    true
}

/// Days in a row the daily reward was claimed, if the last claim was today
/// or yesterday; 0 otherwise.
pub fn daily_streak(s: &PlayerState, now_ms: i64) -> i64 {
    let today = now_ms.div_euclid(DAY_MS);
    match s.daily.last_day {
        Some(d) if d >= today - 1 => i64::from(s.daily.streak),
        _ => 0,
    }
}

/// Longest a timed modifier may be extended into the future: granting an
/// `extend` modifier in a loop must not push its end past any sane date.
pub const MODIFIER_SECONDS_MAX: i64 = 365 * 24 * 3600;

/// Grants timed modifier `id` (a known one) at `now` by its stacking rule,
/// first banking production at the old rates.
fn apply_modifier(title: &Title, s: &mut PlayerState, id: &str, now: i64, events: &mut Vec<Event>) {
    let Some(def) = title.modifier(id) else { return };
    let duration = def.duration_seconds * 1000;
    let next = match s.modifiers.get(id) {
        None => ActiveModifier { stacks: 1, ends_ms: now + duration },
        Some(a) => match def.stacking {
            Stacking::Refresh => ActiveModifier { stacks: a.stacks, ends_ms: now + duration },
            Stacking::Extend => ActiveModifier {
                stacks: a.stacks,
                ends_ms: (a.ends_ms.max(now) + duration).min(now + MODIFIER_SECONDS_MAX * 1000),
            },
            Stacking::Stack => {
                ActiveModifier { stacks: (a.stacks + 1).min(def.max_stacks.max(1)), ends_ms: now + duration }
            }
            Stacking::Keep => a.clone(),
        },
    };
    settle_all(title, s, now);
    events.push(Event::ModifierApplied { modifier: id.to_string(), stacks: next.stacks, ends_ms: next.ends_ms });
    s.modifiers.insert(id.to_string(), next);
}

/// Runs a bound hook, applying its effects if they are all valid; a failure
/// becomes a [`Event::HookFailed`] and changes nothing.
pub(crate) fn run_hook(
    title: &Title,
    s: &mut PlayerState,
    hook: &str,
    arg: Dynamic,
    now: i64,
    rng: &mut Rng,
    events: &mut Vec<Event>,
) {
    let Some(f) = title.hooks.get(hook).cloned() else { return };
    let result = call_fn(title, s, &f, arg, now, rng).and_then(|fx| apply_effects(title, s, &fx, now, events));
    if let Err(message) = result {
        events.push(Event::HookFailed { hook: hook.to_string(), message });
    }
}

/// Gives a grants block: its fixed part, then a roll of each loot table it
/// names (each roll reported as [`Event::Looted`]). Refuses, changing
/// nothing, when the units it could bring do not fit the free housing: the
/// fixed units plus, for each table, its largest unit entry on every roll.
fn apply_grants(
    title: &Title,
    s: &mut PlayerState,
    g: &Grants,
    now: i64,
    rng: &mut Rng,
    events: &mut Vec<Event>,
) -> Result<(), ActionError> {
    let need = grants_housing(title, g);
    let (used, total) = (housing_used(title, s), housing_total(title, s));
    if need > 0 && used + need > total {
        return err(ErrorCode::HousingFull, format!("not enough housing: needs {need}, {} free", total - used));
    }
    grant(title, s, g, now, events);
    for t in g.loot.iter().filter_map(|id| title.loot_table(id)) {
        for _ in 0..t.rolls {
            let entry = t.pick(rng.next_u64());
            events.push(Event::Looted { table: t.id.clone(), grants: entry.grants.clone() });
            grant(title, s, &entry.grants, now, events);
        }
    }
    Ok(())
}

/// Adds a grants block's resources (to their caps), items, units, xp and
/// timed modifiers; the caller has checked housing.
fn grant(title: &Title, s: &mut PlayerState, g: &Grants, now: i64, events: &mut Vec<Event>) {
    for m in &g.modifiers {
        apply_modifier(title, s, m, now, events);
    }
    for (u, n) in &g.units {
        *s.units.entry(u.clone()).or_default() += n;
    }
    for (i, n) in &g.items {
        let v = s.items.entry(i.clone()).or_default();
        *v = v.saturating_add(*n).min(ITEM_COUNT_MAX);
    }
    for (r, n) in &g.resources {
        credit(title, s, r, *n);
    }
    s.xp = s.xp.saturating_add(g.xp);
}

// ---------------------------------------------------------------- time

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Building(u32),
    Research(usize),
    Training(usize),
    Modifier(String),
    Job(usize),
    Timer(String),
}

fn next_due(s: &PlayerState, now: i64) -> Option<(i64, Due)> {
    let mut best: Option<(i64, Due)> = None;
    let mut offer = |t: i64, d: Due| {
        if t <= now && best.as_ref().is_none_or(|(bt, bd)| (t, &d) < (*bt, bd)) {
            best = Some((t, d));
        }
    };
    for b in &s.buildings {
        if let Some(u) = &b.upgrade {
            offer(u.ends_ms, Due::Building(b.id));
        }
    }
    for (i, r) in s.research_running.iter().enumerate() {
        offer(r.ends_ms, Due::Research(i));
    }
    for (i, o) in s.training.iter().enumerate() {
        offer(o.ends_ms, Due::Training(i));
    }
    for (id, m) in &s.modifiers {
        offer(m.ends_ms, Due::Modifier(id.clone()));
    }
    for (i, j) in s.jobs.iter().enumerate() {
        offer(j.ends_ms, Due::Job(i));
    }
    for (name, &t) in &s.timers {
        offer(t, Due::Timer(name.clone()));
    }
    best
}

/// When the earliest timer of `s` ends (a building, research, training,
/// modifier, job or script timer), already ended or not: the moment a
/// server wakes the player's session to complete it and tell the player.
pub fn next_end_ms(s: &PlayerState) -> Option<i64> {
    next_due(s, i64::MAX).map(|(t, _)| t)
}

/// Brings `s` to `now_ms`, completing every timer that ended by then, in
/// time order, each at its own end time (so hooks see the right `now()`).
/// A clock behind the state's is treated as the state's (time never runs back).
pub fn advance(title: &Title, s: &mut PlayerState, now_ms: i64, rng: &mut Rng) -> Vec<Event> {
    let now = now_ms.max(s.clock_ms);
    // First make the state valid for this version of the title's data.
    let mut events = crate::reconcile::reconcile(title, s, now, rng);
    let mut timer_firings = 0;
    // Order of operations per step: pick the earliest due completion, apply
    // it at its time, run its hook, repeat; then set the clock.
    while let Some((t, due)) = next_due(s, now) {
        match due {
            Due::Building(id) => {
                if !title.capacities.is_empty() || title.chains {
                    // A new level may provide or draw capacity, which changes
                    // other producers' rates: bank what was made until now.
                    settle_all(title, s, t);
                }
                let Some(b) = s.building_mut(id) else { break };
                let Some(up) = b.upgrade.take() else { break };
                b.level = up.to_level;
                b.since_ms = t;
                let (building, level) = (b.building.to_string(), b.level);
                let xp =
                    title.building(&building).and_then(|d| d.def.levels.get(level as usize - 1)).map_or(0, |l| l.xp);
                s.xp = s.xp.saturating_add(xp);
                events.push(Event::BuildingCompleted { id, building: building.clone(), level });
                count(s, &format!("built:{building}"), 1);
                let arg = event_map(&[
                    ("id", (id as i64).into()),
                    ("building", building.into()),
                    ("level", (level as i64).into()),
                ]);
                run_hook(title, s, "on_build_complete", arg, t, rng, &mut events);
            }
            Due::Research(i) => {
                let r = s.research_running.remove(i);
                // Research may change production rates: bank what was made at the old rate.
                settle_all(title, s, t);
                s.research.insert(r.research.clone(), r.level);
                events.push(Event::ResearchCompleted { research: r.research.clone(), level: r.level });
                count(s, "researched", 1);
                let arg = event_map(&[("research", r.research.into()), ("level", (r.level as i64).into())]);
                run_hook(title, s, "on_research_complete", arg, t, rng, &mut events);
            }
            Due::Training(i) => {
                let o = s.training.remove(i);
                *s.units.entry(o.unit.clone()).or_default() += 1;
                events.push(Event::UnitTrained { unit: o.unit.clone(), building: o.building.clone() });
                count(s, &format!("trained:{}", o.unit), 1);
                let arg = event_map(&[("unit", o.unit.into()), ("building", o.building.into())]);
                run_hook(title, s, "on_unit_trained", arg, t, rng, &mut events);
            }
            Due::Modifier(id) => {
                // Its bonus ends: bank what was made at the old rates.
                settle_all(title, s, t);
                s.modifiers.remove(&id);
                events.push(Event::ModifierEnded { modifier: id });
            }
            Due::Job(i) => {
                let run = s.jobs.remove(i);
                for (u, n) in &run.units {
                    *s.units.entry(u.clone()).or_default() += n;
                }
                events.push(Event::JobCompleted { job: run.job.clone(), building_id: run.building_id });
                count(s, &format!("jobs:{}", run.job), 1);
                if let Some(j) = title.job(&run.job) {
                    // Housing was kept free for the outputs from the start;
                    // should the base have lost housing since (a data
                    // change), the outputs still come: a job never fails
                    // at its end.
                    if apply_grants(title, s, &j.def.outputs, t, rng, &mut events).is_err() {
                        grant(title, s, &j.def.outputs, t, &mut events);
                    }
                }
                let arg = event_map(&[("job", run.job.into()), ("building_id", i64::from(run.building_id).into())]);
                run_hook(title, s, "on_job_complete", arg, t, rng, &mut events);
            }
            Due::Timer(name) => {
                timer_firings += 1;
                if timer_firings > TIMER_FIRINGS_PER_ADVANCE_MAX {
                    // Postpone every due timer to now; they fire next time.
                    for v in s.timers.values_mut() {
                        *v = (*v).max(now + 1);
                    }
                    continue;
                }
                s.timers.remove(&name);
                events.push(Event::TimerEnded { name: name.clone() });
                run_hook(title, s, "on_timer", event_map(&[("name", name.into())]), t, rng, &mut events);
            }
        }
        s.clock_ms = s.clock_ms.max(t);
    }
    if title.chains {
        // Inputs drawn until now, so that actions see the stock as it is.
        settle_chains(title, s, now);
    }
    s.clock_ms = now;
    events
}

/// A player logs in: advance, then run the `on_login` hook.
pub fn login(title: &Title, s: &mut PlayerState, now_ms: i64, rng: &mut Rng) -> Vec<Event> {
    let mut events = advance(title, s, now_ms, rng);
    let now = s.clock_ms;
    let first = s.last_login_ms.is_none();
    let away = s.last_login_ms.map_or(0, |t| (now - t) / 1000);
    s.last_login_ms = Some(now);
    count(s, "logins", 1);
    let arg = event_map(&[("first", first.into()), ("away_seconds", away.into())]);
    run_hook(title, s, "on_login", arg, now, rng, &mut events);
    events
}

/// Advances `s` to `now_ms` and performs `action`. On error the state is
/// exactly as [`advance`] left it.
pub fn apply(
    title: &Title,
    s: &mut PlayerState,
    action: &Action,
    now_ms: i64,
    rng: &mut Rng,
) -> Result<Vec<Event>, ActionError> {
    let mut events = advance(title, s, now_ms, rng);
    let now = s.clock_ms;
    act(title, s, action, now, rng, &mut events)?;
    // Actions with zero-time results (instant builds, speed-ups) complete now.
    events.extend(advance(title, s, now, rng));
    Ok(events)
}

fn act(
    title: &Title,
    s: &mut PlayerState,
    action: &Action,
    now: i64,
    rng: &mut Rng,
    events: &mut Vec<Event>,
) -> Result<(), ActionError> {
    capacity_allows(title, s, action.name())?;
    match action {
        Action::Build { building, x, y } => {
            let def = title.building(building).ok_or_else(|| unknown(title, IdKind::Building, building))?;
            let hq = hq_level(title, s);
            let max = def.def.max_count.get(hq.max(1) as usize - 1).copied().unwrap_or(0);
            let count = s.buildings.iter().filter(|b| b.building == building).count() as u32;
            if count >= max {
                return err(
                    ErrorCode::LimitReached,
                    format!("you may have {max} {} at headquarters level {hq}", def.def.name),
                );
            }
            fits(title, s, building, *x, *y, None)?;
            let lv = &def.def.levels[0];
            if lv.build_seconds > 0 && builders_busy(s) >= builders_total(title, s) {
                return err(ErrorCode::NoFreeBuilder, "every builder is busy");
            }
            require(title, s, def.requires[0].as_ref(), now, rng)?;
            check_cost(title, s, &lv.cost, 1)?;
            pay(s, &lv.cost, 1);
            let secs =
                scaled_seconds(lv.build_seconds, research_bonus(title, s, ResearchEffectKind::BuildTimePercent, None));
            let id = s.next_building_id;
            s.next_building_id += 1;
            s.buildings.push(Building {
                id,
                building: building.as_str().into(),
                level: 0,
                x: *x,
                y: *y,
                upgrade: Some(Upgrade { to_level: 1, started_ms: now, ends_ms: now + secs * 1000 }),
                stored: 0,
                since_ms: now,
            });
        }
        Action::Upgrade { id } => {
            let i = building_index(s, *id)?;
            let b = &s.buildings[i];
            let def = title.building(&b.building).ok_or_else(|| unknown(title, IdKind::Building, &b.building))?;
            if b.upgrade.is_some() {
                return err(ErrorCode::Busy, format!("building {id} is already under construction"));
            }
            if !title.manifest.work.while_upgrading {
                if let Some(work) = work_in(title, s, b) {
                    return err(
                        ErrorCode::Busy,
                        format!("building {id} is {work}: a building with work cannot upgrade until it is done"),
                    );
                }
            }
            let to = b.level + 1;
            let Some(lv) = def.def.levels.get(to as usize - 1) else {
                return err(ErrorCode::MaxLevel, format!("{} is at its highest level ({})", def.def.name, b.level));
            };
            if lv.build_seconds > 0 && builders_busy(s) >= builders_total(title, s) {
                return err(ErrorCode::NoFreeBuilder, "every builder is busy");
            }
            require(title, s, def.requires[to as usize - 1].as_ref(), now, rng)?;
            check_cost(title, s, &lv.cost, 1)?;
            pay(s, &lv.cost, 1);
            let secs =
                scaled_seconds(lv.build_seconds, research_bonus(title, s, ResearchEffectKind::BuildTimePercent, None));
            bank(title, s, i, now);
            let b = &mut s.buildings[i];
            b.upgrade = Some(Upgrade { to_level: to, started_ms: now, ends_ms: now + secs * 1000 });
        }
        Action::Cancel { id } => {
            let i = building_index(s, *id)?;
            let Some(up) = s.buildings[i].upgrade.clone() else {
                return err(ErrorCode::NotBusy, format!("building {id} is not under construction"));
            };
            let def = title
                .building(&s.buildings[i].building)
                .ok_or_else(|| unknown(title, IdKind::Building, &s.buildings[i].building))?;
            let pct = i64::from(title.manifest.cancel_refund_percent);
            let refund: Amounts = def.def.levels[up.to_level as usize - 1]
                .cost
                .iter()
                .map(|(r, n)| (r.clone(), n * pct / 100))
                .filter(|(_, n)| *n > 0)
                .collect();
            if s.buildings[i].level == 0 {
                s.buildings.remove(i);
            } else {
                s.buildings[i].upgrade = None;
                s.buildings[i].since_ms = now;
            }
            for (r, n) in &refund {
                credit(title, s, r, *n);
            }
            events.push(Event::Refunded { resources: refund });
        }
        Action::SpeedUp { id } => {
            let i = building_index(s, *id)?;
            let Some(up) = &s.buildings[i].upgrade else {
                return err(ErrorCode::NotBusy, format!("building {id} is not under construction"));
            };
            let (remaining, to) = (up.ends_ms - now, up.to_level);
            let def = title
                .building(&s.buildings[i].building)
                .ok_or_else(|| unknown(title, IdKind::Building, &s.buildings[i].building))?;
            let rule = def.def.levels.get(to as usize - 1).map_or_else(SpeedUpRule::default, |l| l.speed_up);
            pay_speed_up(title, s, rule, &format!("{} level {to}", def.def.name), remaining)?;
            if let Some(up) = &mut s.buildings[i].upgrade {
                up.ends_ms = now;
            }
        }
        Action::SpeedUpResearch { research } => {
            let i = running_research(title, s, research.as_deref())?;
            let r = &s.research_running[i];
            let remaining = r.ends_ms - now;
            let def = title.research_type(&r.research).ok_or_else(|| unknown(title, IdKind::Research, &r.research))?;
            let rule = def.def.levels.get(r.level as usize - 1).map_or_else(SpeedUpRule::default, |l| l.speed_up);
            let what = format!("{} level {}", def.def.name, r.level);
            pay_speed_up(title, s, rule, &what, remaining)?;
            s.research_running[i].ends_ms = now;
        }
        Action::SpeedUpTraining { building, building_id } => {
            title.building(building).ok_or_else(|| unknown(title, IdKind::Building, building))?;
            if let Some(id) = building_id {
                building_index(s, *id)?;
            }
            let picked =
                |o: &TrainingOrder| &o.building == building && building_id.is_none_or(|id| o.building_id == Some(id));
            // Each queue trains at the same time as the others: the price is
            // the sum of what is left in each queue picked.
            let mut last: BTreeMap<Option<u32>, i64> = BTreeMap::new();
            for o in s.training.iter().filter(|o| picked(o)) {
                let t = last.entry(o.building_id).or_insert(o.ends_ms);
                *t = (*t).max(o.ends_ms);
            }
            if last.is_empty() {
                let place = building_id.map_or_else(|| building.clone(), |id| format!("building {id}"));
                return err(ErrorCode::NotBusy, format!("nothing is training in {place}"));
            }
            let remaining = last.values().map(|t| (t - now).max(0)).sum();
            pay_speed_up(title, s, SpeedUpRule::default(), "training", remaining)?;
            for o in s.training.iter_mut().filter(|o| picked(o)) {
                o.ends_ms = now;
            }
        }
        Action::Move { id, x, y } => {
            let i = building_index(s, *id)?;
            let kind = s.buildings[i].building.clone();
            fits(title, s, &kind, *x, *y, Some(*id))?;
            s.buildings[i].x = *x;
            s.buildings[i].y = *y;
        }
        Action::Collect { id } => {
            let i = building_index(s, *id)?;
            let Some((r, _, _)) = production(title, s, &s.buildings[i], &[]) else {
                return err(ErrorCode::InvalidArgument, format!("building {id} produces nothing"));
            };
            let amount = collect_one(title, s, i, &r, now, &capacity_totals(title, s))?;
            count(s, &format!("collected:{r}"), amount);
            events.push(Event::Collected { resource: r, amount });
        }
        Action::CollectAll {} => {
            let mut total: BTreeMap<String, i64> = BTreeMap::new();
            let totals = capacity_totals(title, s);
            for i in 0..s.buildings.len() {
                if let Some((r, _, _)) = production(title, s, &s.buildings[i], &[]) {
                    if let Ok(n) = collect_one(title, s, i, &r, now, &totals) {
                        *total.entry(r).or_default() += n;
                    }
                }
            }
            if total.is_empty() {
                return err(ErrorCode::NothingToCollect, "nothing to collect, or storage is full");
            }
            for (r, n) in &total {
                count(s, &format!("collected:{r}"), *n);
            }
            events.extend(total.into_iter().map(|(resource, amount)| Event::Collected { resource, amount }));
        }
        Action::Train { unit, count, building_id } => {
            let u = title.unit(unit).ok_or_else(|| unknown(title, IdKind::Unit, unit))?;
            if !(1..=TRAIN_COUNT_MAX).contains(count) {
                return err(ErrorCode::InvalidArgument, format!("count must be between 1 and {TRAIN_COUNT_MAX}"));
            }
            let limit = i64::from(title.manifest.training_queue);
            let per_building = title.manifest.work.training == TrainingQueues::PerBuilding;
            let queued_in = |id: u32| s.training.iter().filter(|o| o.building_id == Some(id)).count() as i64;
            let places = workplaces(title, s, &u.def.building, *building_id, &u.def.name, |b| {
                (per_building && queued_in(b.id) + count > limit).then(|| ActionError {
                    code: ErrorCode::QueueFull,
                    message: format!("the training queue of building {} holds {limit} units", b.id),
                })
            })?;
            if !per_building && s.training.len() as i64 + count > limit {
                return err(ErrorCode::QueueFull, format!("training queue holds {limit} units"));
            }
            let (used, total) = (housing_used(title, s), housing_total(title, s));
            if used + u.def.housing * count > total {
                return err(
                    ErrorCode::HousingFull,
                    format!("not enough housing: needs {}, {} free", u.def.housing * count, total - used),
                );
            }
            require(title, s, u.requires.as_ref(), now, rng)?;
            check_cost(title, s, &u.def.cost, *count)?;
            pay(s, &u.def.cost, *count);
            let secs = scaled_seconds(
                u.def.train_seconds,
                research_bonus(title, s, ResearchEffectKind::TrainTimePercent, None),
            );
            // A queue of its own per building: the one that is free first
            // takes the units (ties to the lowest id). One queue per type:
            // the units wait behind that type's queue.
            let queue_end = |id: Option<u32>| {
                s.training
                    .iter()
                    .filter(|o| o.building == u.def.building && o.building_id == id)
                    .map(|o| o.ends_ms)
                    .max()
                    .unwrap_or(now)
                    .max(now)
            };
            let queue = if per_building {
                places.iter().map(|&i| Some(s.buildings[i].id)).min_by_key(|&id| (queue_end(id), id))
            } else {
                None
            }
            .flatten();
            let mut t = queue_end(queue);
            for _ in 0..*count {
                t += secs * 1000;
                s.training.push(TrainingOrder {
                    unit: unit.clone(),
                    building: u.def.building.clone(),
                    building_id: queue,
                    ends_ms: t,
                });
            }
        }
        Action::Research { research, building_id } => {
            let r = title.research_type(research).ok_or_else(|| unknown(title, IdKind::Research, research))?;
            if s.research_running.iter().any(|o| &o.research == research) {
                return err(ErrorCode::Busy, format!("{} is already being researched", r.def.name));
            }
            if title.manifest.work.research == ResearchSlots::OneAtATime && !s.research_running.is_empty() {
                return err(ErrorCode::Busy, "a research is already running");
            }
            let level = s.research.get(research).copied().unwrap_or(0) + 1;
            let Some(lv) = r.def.levels.get(level as usize - 1) else {
                return err(ErrorCode::MaxLevel, format!("{} is fully researched", r.def.name));
            };
            let places = workplaces(title, s, &r.def.building, *building_id, &r.def.name, |b| {
                let running = s.research_running.iter().find(|o| o.building_id == Some(b.id))?;
                Some(ActionError {
                    code: ErrorCode::Busy,
                    message: format!("building {} ({}) is already researching {}", b.id, b.building, running.research),
                })
            })?;
            let lab = s.buildings[places[0]].id;
            require(title, s, r.requires[level as usize - 1].as_ref(), now, rng)?;
            check_cost(title, s, &lv.cost, 1)?;
            pay(s, &lv.cost, 1);
            s.research_running.push(ResearchOrder {
                research: research.clone(),
                level,
                building_id: Some(lab),
                started_ms: now,
                ends_ms: now + lv.research_seconds * 1000,
            });
        }
        Action::CancelResearch { research } => {
            let r = title.research_type(research).ok_or_else(|| unknown(title, IdKind::Research, research))?;
            let Some(i) = s.research_running.iter().position(|o| &o.research == research) else {
                return err(ErrorCode::NotBusy, format!("{} is not being researched", r.def.name));
            };
            let order = s.research_running.remove(i);
            let pct = i64::from(title.manifest.cancel_refund_percent);
            let refund: Amounts = r
                .def
                .levels
                .get(order.level as usize - 1)
                .map(|lv| lv.cost.iter().map(|(k, n)| (k.clone(), n * pct / 100)).filter(|(_, n)| *n > 0).collect())
                .unwrap_or_default();
            for (k, n) in &refund {
                credit(title, s, k, *n);
            }
            events.push(Event::Refunded { resources: refund });
        }
        Action::ClaimAchievement { achievement } => {
            let Some(a) = title.achievement(achievement) else {
                let help = did_you_mean(achievement, title.achievements.iter().map(|a| a.id.as_str()))
                    .map(|h| format!("; {h}"))
                    .unwrap_or_default();
                return err(ErrorCode::UnknownId, format!("unknown achievement `{achievement}`{help}"));
            };
            let claimed = s.achievements.get(achievement).copied().unwrap_or(0);
            let Some(tier) = a.tiers.get(claimed as usize) else {
                return err(ErrorCode::AlreadyClaimed, format!("every tier of {} is claimed", a.name));
            };
            let have = s.counters.get(&a.counter).copied().unwrap_or(0);
            if have < tier.at {
                return err(
                    ErrorCode::GoalNotMet,
                    format!("{} tier {} needs {} {}, has {have}", a.name, claimed + 1, tier.at, a.counter),
                );
            }
            let mut next = s.clone();
            apply_grants(title, &mut next, &tier.rewards, now, rng, events)?;
            next.achievements.insert(achievement.clone(), claimed + 1);
            *s = next;
        }
        Action::ClaimDaily {} => {
            let Some(daily) = &title.manifest.daily else {
                return err(ErrorCode::NotAvailable, "this title has no daily rewards");
            };
            let today = now.div_euclid(DAY_MS);
            if s.daily.last_day == Some(today) {
                return err(ErrorCode::AlreadyClaimed, "today's daily reward was already claimed");
            }
            let streak = if s.daily.last_day == Some(today - 1) { s.daily.streak.saturating_add(1) } else { 1 };
            let n = daily.rewards.len().max(1);
            let day = match daily.after_last {
                crate::format::AfterLast::RepeatLast => (streak as usize - 1).min(n - 1),
                crate::format::AfterLast::Restart => (streak as usize - 1) % n,
            };
            let mut next = s.clone();
            if let Some(g) = daily.rewards.get(day) {
                apply_grants(title, &mut next, g, now, rng, events)?;
            }
            next.daily = Daily { last_day: Some(today), streak };
            *s = next;
        }
        Action::StartJob { job, building_id } => {
            let Some(j) = title.job(job) else {
                let help = did_you_mean(job, title.jobs.iter().map(|j| j.def.id.as_str()))
                    .map(|h| format!("; {h}"))
                    .unwrap_or_default();
                return err(ErrorCode::UnknownId, format!("unknown job `{job}`{help}"));
            };
            let places = workplaces(title, s, &j.def.building, *building_id, &j.def.name, |b| {
                let running = s.jobs.iter().find(|r| r.building_id == b.id)?;
                Some(ActionError {
                    code: ErrorCode::Busy,
                    message: format!("building {} ({}) is already running {}", b.id, b.building, running.job),
                })
            })?;
            let at = s.buildings[places[0]].id;
            require(title, s, j.requires.as_ref(), now, rng)?;
            check_cost(title, s, &j.def.inputs.resources, 1)?;
            for (kind, held, need) in [("item", &s.items, &j.def.inputs.items), ("unit", &s.units, &j.def.inputs.units)]
            {
                for (id, &n) in need {
                    let have = held.get(id).copied().unwrap_or(0);
                    if have < n {
                        return err(
                            ErrorCode::InsufficientResources,
                            format!("{} needs {n} {kind} `{id}`, has {have}", j.def.name),
                        );
                    }
                }
            }
            let need = grants_housing(title, &j.def.outputs);
            let (used, total) = (housing_used(title, s), housing_total(title, s));
            if need > 0 && used + need > total {
                return err(
                    ErrorCode::HousingFull,
                    format!("{} may bring back units needing {need} housing, {} free", j.def.name, total - used),
                );
            }
            pay(s, &j.def.inputs.resources, 1);
            for (id, n) in &j.def.inputs.items {
                if let Some(v) = s.items.get_mut(id) {
                    *v -= n;
                }
            }
            for (id, n) in &j.def.inputs.units {
                if let Some(v) = s.units.get_mut(id) {
                    *v -= n;
                }
            }
            s.jobs.push(JobRun {
                job: job.clone(),
                building_id: at,
                units: j.def.inputs.units.clone(),
                started_ms: now,
                ends_ms: now + j.def.seconds * 1000,
            });
        }
        Action::CancelJob { building_id } => {
            building_index(s, *building_id)?;
            let Some(i) = s.jobs.iter().position(|r| r.building_id == *building_id) else {
                return err(ErrorCode::NotBusy, format!("building {building_id} runs no job"));
            };
            let run = s.jobs.remove(i);
            for (u, n) in &run.units {
                *s.units.entry(u.clone()).or_default() += n;
            }
            let pct = i64::from(title.manifest.cancel_refund_percent);
            let back = |m: &Amounts| -> Amounts {
                m.iter().map(|(k, n)| (k.clone(), n * pct / 100)).filter(|(_, n)| *n > 0).collect()
            };
            let (refund, items) = title
                .job(&run.job)
                .map(|j| (back(&j.def.inputs.resources), back(&j.def.inputs.items)))
                .unwrap_or_default();
            for (k, n) in &refund {
                credit(title, s, k, *n);
            }
            for (k, n) in &items {
                let v = s.items.entry(k.clone()).or_default();
                *v = v.saturating_add(*n).min(ITEM_COUNT_MAX);
            }
            events.push(Event::Refunded { resources: refund });
        }
        Action::SpeedUpJob { building_id } => {
            building_index(s, *building_id)?;
            let Some(i) = s.jobs.iter().position(|r| r.building_id == *building_id) else {
                return err(ErrorCode::NotBusy, format!("building {building_id} runs no job"));
            };
            let run = &s.jobs[i];
            let (rule, name) = title
                .job(&run.job)
                .map_or((SpeedUpRule::default(), run.job.clone()), |j| (j.def.speed_up, j.def.name.clone()));
            pay_speed_up(title, s, rule, &name, run.ends_ms - now)?;
            s.jobs[i].ends_ms = now;
        }
        Action::Buy { offer } => {
            let o = title.offer(offer).ok_or_else(|| ActionError {
                code: ErrorCode::UnknownId,
                message: format!("unknown offer `{offer}`"),
            })?;
            if !o.on_sale(now) {
                return err(ErrorCode::NotAvailable, format!("{} is not on sale now", o.def.name));
            }
            let bought = s.purchases.get(offer).copied().unwrap_or(0);
            if o.def.limit.is_some_and(|l| bought >= l) {
                return err(
                    ErrorCode::NotAvailable,
                    format!("{} can be bought {} time(s)", o.def.name, o.def.limit.unwrap_or(0)),
                );
            }
            require(title, s, o.requires.as_ref(), now, rng)?;
            // A running live-ops event may discount it; prices round up.
            let off = i64::from(title.discount_percent(offer, now));
            let price: Amounts = o.def.price.iter().map(|(r, &p)| (r.clone(), (p * (100 - off) + 99) / 100)).collect();
            check_cost(title, s, &price, 1)?;
            let mut next = s.clone();
            pay(&mut next, &price, 1);
            apply_grants(title, &mut next, &o.def.grants, now, rng, events)?;
            *next.purchases.entry(offer.clone()).or_default() += 1;
            *s = next;
            run_hook(title, s, "on_purchase", event_map(&[("offer", offer.as_str().into())]), now, rng, events);
        }
        Action::UseItem { item } => {
            let it = title.item(item).ok_or_else(|| unknown(title, IdKind::Item, item))?;
            if s.items.get(item).copied().unwrap_or(0) < 1 {
                return err(ErrorCode::NotAvailable, format!("you have no {}", it.def.name));
            }
            if it.def.use_grants.is_none() && it.hook.is_none() {
                return err(ErrorCode::InvalidArgument, format!("{} cannot be used", it.def.name));
            }
            let mut next = s.clone();
            if let Some(n) = next.items.get_mut(item) {
                *n -= 1;
            }
            if let Some(g) = &it.def.use_grants {
                apply_grants(title, &mut next, g, now, rng, events)?;
            }
            if let Some(h) = &it.hook {
                let fx = call_fn(title, &mut next, h, event_map(&[("item", item.as_str().into())]), now, rng)
                    .map_err(|m| ActionError { code: ErrorCode::ScriptError, message: m })?;
                apply_effects(title, &mut next, &fx, now, events)
                    .map_err(|m| ActionError { code: ErrorCode::ScriptError, message: m })?;
            }
            *s = next;
        }
        Action::ClaimQuest { quest } => {
            let q = title.quest(quest).ok_or_else(|| unknown(title, IdKind::Quest, quest))?;
            if s.quests_claimed.contains(quest) {
                return err(ErrorCode::AlreadyClaimed, format!("{} was already claimed", q.def.name));
            }
            require(title, s, q.requires.as_ref(), now, rng)?;
            if let Err(e) = require(title, s, Some(&q.goal), now, rng) {
                let code = if e.code == ErrorCode::RequirementNotMet { ErrorCode::GoalNotMet } else { e.code };
                return err(code, format!("{} is not done yet: {}", q.def.name, q.goal.source()));
            }
            let mut next = s.clone();
            apply_grants(title, &mut next, &q.def.rewards, now, rng, events)?;
            next.quests_claimed.insert(quest.clone());
            count(&mut next, "quests", 1);
            *s = next;
            run_hook(title, s, "on_quest_claimed", event_map(&[("quest", quest.as_str().into())]), now, rng, events);
        }
        Action::Custom { name, args } => {
            let Some(a) = title.actions.get(name) else {
                let help = did_you_mean(name, title.actions.keys().map(String::as_str))
                    .map(|h| format!("; {h}"))
                    .unwrap_or_default();
                return err(ErrorCode::UnknownId, format!("unknown custom action `{name}`{help}"));
            };
            let args = crate::args::check(name, &a.def.args, args)
                .map_err(|m| ActionError { code: ErrorCode::InvalidArgument, message: m })?;
            require(title, s, a.requires.as_ref(), now, rng)?;
            let arg = citadel_dsl::json_to_dynamic(&args)
                .map_err(|m| ActionError { code: ErrorCode::InvalidArgument, message: format!("args: {m}") })?;
            let fx = call_fn(title, s, &a.function, arg, now, rng)
                .map_err(|m| ActionError { code: ErrorCode::ScriptError, message: m })?;
            apply_effects(title, s, &fx, now, events)
                .map_err(|m| ActionError { code: ErrorCode::ScriptError, message: m })?;
        }
    }
    Ok(())
}

/// Collects building `i`'s `r`; `totals` from [`capacity_totals`] (which
/// collecting does not change, so a collect of every building adds them up once).
fn collect_one(
    title: &Title,
    s: &mut PlayerState,
    i: usize,
    r: &str,
    now: i64,
    totals: &[(i64, i64)],
) -> Result<i64, ActionError> {
    let a = accrued(title, s, &s.buildings[i], now, totals);
    if a <= 0 {
        return err(ErrorCode::NothingToCollect, "nothing to collect yet");
    }
    let have = s.resources.get(r).copied().unwrap_or(0);
    let free = cap(title, s, r).saturating_sub(have).max(0);
    if free == 0 {
        return err(ErrorCode::StorageFull, format!("{r} storage is full"));
    }
    let taken = a.min(free);
    s.resources.insert(r.to_string(), have + taken);
    let b = &mut s.buildings[i];
    b.stored = a - taken;
    b.since_ms = now;
    Ok(taken)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name serde knows for an enum, from the error it gives for
    /// `unknown` (serde lists every variant when it meets an unknown one).
    fn serde_names<T: serde::de::DeserializeOwned + std::fmt::Debug>(unknown: serde_json::Value) -> Vec<String> {
        let err = serde_json::from_value::<T>(unknown).expect_err("zzz is no variant").to_string();
        err.split('`').skip(3).step_by(2).map(String::from).collect()
    }

    #[test]
    fn action_names_are_every_variant() {
        assert_eq!(serde_names::<Action>(serde_json::json!({ "action": "zzz" })), ACTION_NAMES);
    }

    #[test]
    fn event_names_are_every_variant() {
        assert_eq!(serde_names::<Event>(serde_json::json!({ "event": "zzz" })), EVENT_NAMES);
        let e = Event::Restored { clock_ms: 1 };
        assert_eq!(serde_json::to_value(&e).unwrap()["event"], e.name());
    }

    #[test]
    fn error_code_names_are_serdes() {
        let documented: Vec<&str> = ERROR_CODE_DOCS.iter().map(|(c, _)| *c).collect();
        assert_eq!(serde_names::<ErrorCode>(serde_json::json!("zzz")), documented);
        for code in &documented {
            let parsed: ErrorCode = serde_json::from_value(serde_json::json!(code)).unwrap();
            assert_eq!(parsed.as_str(), *code);
        }
    }
}
