//! The title format v1 as typed data, exactly as the files in a title folder
//! are written. These types mirror `schemas/*.schema.json`; a file is
//! deserialized only after it passed its schema, and the `schema_agrees`
//! tests keep the two in step.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Resources, items or units by id with an amount.
pub type Amounts = BTreeMap<String, i64>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    pub width: i32,
    pub height: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartBuilding {
    pub building: String,
    #[serde(default = "one")]
    pub level: u32,
    pub x: i32,
    pub y: i32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Start {
    pub resources: Amounts,
    pub buildings: Vec<StartBuilding>,
    #[serde(default)]
    pub units: Amounts,
    #[serde(default)]
    pub items: Amounts,
    #[serde(default)]
    pub flags: Vec<String>,
    /// Research levels a new player has already finished, by research id.
    #[serde(default)]
    pub research: BTreeMap<String, u32>,
    /// Experience a new player starts with.
    #[serde(default)]
    pub xp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomAction {
    pub function: String,
    #[serde(default)]
    pub requires: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// What players see the action called (the id, in words, without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The arguments the action takes, by name: checked (and defaults filled
    /// in) before the function is called, so a script sees only these. An
    /// action without `args` takes none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, ArgDef>,
}

/// One argument of a custom action: its type, its bounds, and how a client
/// asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ArgDef {
    /// A whole number from `min` to `max`.
    Integer {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
        min: i64,
        max: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        default: Option<i64>,
    },
    /// Yes or no.
    Boolean {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        default: Option<bool>,
    },
    /// One of a list of strings.
    Choice {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
        one_of: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        default: Option<String>,
    },
}

/// `title.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TitleFile {
    #[serde(rename = "$schema", default, skip_serializing)]
    pub schema: Option<String>,
    pub format_version: u32,
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub grid: Grid,
    pub premium_resource: String,
    pub headquarters: String,
    pub builders: u32,
    #[serde(default = "default_training_queue")]
    pub training_queue: u32,
    /// How buildings share research and training.
    #[serde(default)]
    pub work: WorkDef,
    /// Daily login rewards.
    #[serde(default)]
    pub daily: Option<DailyDef>,
    #[serde(default = "default_refund")]
    pub cancel_refund_percent: u32,
    #[serde(default = "default_speed_up")]
    pub speed_up_seconds_per_premium: i64,
    pub xp_levels: Vec<i64>,
    #[serde(default)]
    pub scores: Vec<String>,
    pub start: Start,
    #[serde(default)]
    pub hooks: BTreeMap<String, String>,
    #[serde(default)]
    pub actions: BTreeMap<String, CustomAction>,
    /// Ids renamed since earlier versions, old id to new, per kind.
    #[serde(default)]
    pub renamed: Renamed,
    /// Live-ops events: time windows that start and stop on their own.
    #[serde(default)]
    pub events: Vec<EventDef>,
    /// The shared world: map, raids, top score seasons.
    #[serde(default)]
    pub world: WorldDef,
}

/// `title.json` `work`: how buildings share research and training.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkDef {
    #[serde(default)]
    pub research: ResearchSlots,
    #[serde(default)]
    pub training: TrainingQueues,
    #[serde(default = "yes")]
    pub while_upgrading: bool,
}

fn yes() -> bool {
    true
}

impl Default for WorkDef {
    /// Absent from title.json: today's behaviour for every title written
    /// before `work` existed.
    fn default() -> Self {
        WorkDef { research: ResearchSlots::default(), training: TrainingQueues::default(), while_upgrading: true }
    }
}

/// How many research may run at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResearchSlots {
    /// One in the whole base.
    #[default]
    OneAtATime,
    /// One in each finished building of the research's building type.
    PerBuilding,
}

/// How training queues are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainingQueues {
    /// One queue per building type.
    #[default]
    PerBuildingType,
    /// One queue in each finished building, all training at once.
    PerBuilding,
}

/// `title.json` `world`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorldDef {
    #[serde(default)]
    pub map: Option<MapDef>,
    #[serde(default)]
    pub raids: Option<RaidsDef>,
    #[serde(default)]
    pub clans: Option<ClansDef>,
    #[serde(default)]
    pub season: Option<SeasonDef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClansDef {
    pub capacity: i64,
    #[serde(default)]
    pub create_cost: Amounts,
    /// Highest first.
    pub roles: Vec<RoleDef>,
    /// Gifts of resources between members; none without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gifts: Option<GiftsDef>,
}

/// What members of one clan may give each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GiftsDef {
    /// The resources that may be given, each with the most one gift carries.
    pub resources: Amounts,
    /// Gifts a player may send per day (UTC).
    pub per_day: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleDef {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub can: Vec<ClanPermission>,
}

/// What a clan role may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClanPermission {
    Invite,
    Accept,
    Kick,
    Promote,
    Demote,
    Edit,
    Disband,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapDef {
    pub regions: Vec<RegionDef>,
    #[serde(default)]
    pub relocate_cost: Amounts,
    #[serde(default)]
    pub relocate_cooldown_seconds: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionDef {
    pub id: String,
    pub name: String,
    pub width: i32,
    pub height: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaidsDef {
    pub duration_seconds: i64,
    pub shield_seconds: i64,
    /// Resource id to an integer expression over the defender's state.
    pub lootable: BTreeMap<String, String>,
    #[serde(default)]
    pub score: Option<String>,
    #[serde(default)]
    pub win_score: i64,
    #[serde(default)]
    pub loss_score: i64,
    #[serde(default)]
    pub check: Option<String>,
    /// A script function that decides the battle on the server from both
    /// sides (docs/title-format.md, Raids decided by the server).
    #[serde(default)]
    pub resolve: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeasonDef {
    pub start: String,
    pub days: i64,
}

/// A live-ops event (a sale, a weekend event): a time window that scripts
/// and requirements can test with `event_active`, and that may discount
/// store offers while it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventDef {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub window: Window,
    /// Percent off store prices while the event runs.
    #[serde(default)]
    pub store_discount_percent: u32,
    /// The offers discounted; all of them when empty.
    #[serde(default)]
    pub offers: Vec<String>,
}

/// Ids renamed since earlier versions of a title (old id to new id): a
/// player's state is carried over to the new ids when they next play.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Renamed {
    #[serde(default)]
    pub resources: BTreeMap<String, String>,
    #[serde(default)]
    pub buildings: BTreeMap<String, String>,
    #[serde(default)]
    pub units: BTreeMap<String, String>,
    #[serde(default)]
    pub research: BTreeMap<String, String>,
    #[serde(default)]
    pub items: BTreeMap<String, String>,
    #[serde(default)]
    pub offers: BTreeMap<String, String>,
    #[serde(default)]
    pub quests: BTreeMap<String, String>,
}

fn default_training_queue() -> u32 {
    20
}
fn default_refund() -> u32 {
    50
}
fn default_speed_up() -> i64 {
    60
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceDef {
    pub id: String,
    pub name: String,
    /// An image of the title's assets/ folder.
    #[serde(default)]
    pub icon: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub cap: Option<i64>,
}

/// `resources.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesFile {
    #[serde(rename = "$schema", default, skip_serializing)]
    pub schema: Option<String>,
    pub format_version: u32,
    pub resources: Vec<ResourceDef>,
    #[serde(default)]
    pub capacities: Vec<CapacityDef>,
}

/// A quantity buildings provide and draw (power, oxygen).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityDef {
    pub id: String,
    pub name: String,
    /// An image of the title's assets/ folder.
    #[serde(default)]
    pub icon: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub shortfall: Shortfall,
}

/// What a capacity's shortfall does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shortfall {
    #[serde(default)]
    pub production: ShortfallProduction,
    /// Action names refused during a shortfall.
    #[serde(default)]
    pub blocks: Vec<String>,
}

/// What a shortfall does to the producers that draw the capacity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShortfallProduction {
    /// Each makes provided/drawn of its rate.
    #[default]
    Proportional,
    /// They make nothing.
    Stop,
    /// No effect.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Size {
    pub w: i32,
    pub h: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Production {
    pub resource: String,
    pub per_hour: i64,
    pub capacity: i64,
    /// Inputs drawn from the player's stock while producing, per hour.
    #[serde(default)]
    pub consumes: Amounts,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildingLevel {
    pub cost: Amounts,
    pub build_seconds: i64,
    #[serde(default)]
    pub requires: Option<String>,
    #[serde(default)]
    pub xp: i64,
    #[serde(default)]
    pub production: Option<Production>,
    #[serde(default)]
    pub storage: Amounts,
    #[serde(default)]
    pub housing: i64,
    #[serde(default)]
    pub builders: u32,
    #[serde(default)]
    pub hitpoints: i64,
    /// Capacity provided while this level stands finished.
    #[serde(default)]
    pub provides: Amounts,
    /// Capacity drawn while this level stands finished.
    #[serde(default)]
    pub draws: Amounts,
    /// Whether, and at what price, this level's construction can be sped up.
    #[serde(default)]
    pub speed_up: SpeedUpRule,
    /// Named numbers for clients (repair time, slots) that the engine
    /// carries without reading them.
    #[serde(default)]
    pub stats: Amounts,
}

/// How the remaining time of a level's construction or research may be
/// skipped with premium currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SpeedUpRule {
    /// `true`: at the title's `speed_up_seconds_per_premium`; `false`: never.
    Allowed(bool),
    /// At a price of its own.
    Priced { seconds_per_premium: i64 },
}

impl Default for SpeedUpRule {
    fn default() -> Self {
        SpeedUpRule::Allowed(true)
    }
}

impl SpeedUpRule {
    /// Seconds one unit of premium currency skips, or `None` if this
    /// cannot be sped up; `title_default` is the title's price.
    pub fn seconds_per_premium(self, title_default: i64) -> Option<i64> {
        match self {
            SpeedUpRule::Allowed(true) => Some(title_default),
            SpeedUpRule::Allowed(false) => None,
            SpeedUpRule::Priced { seconds_per_premium } => Some(seconds_per_premium),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildingDef {
    pub id: String,
    pub name: String,
    /// An image of the title's assets/ folder.
    #[serde(default)]
    pub icon: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub size: Size,
    pub max_count: Vec<u32>,
    pub levels: Vec<BuildingLevel>,
}

/// `buildings.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildingsFile {
    #[serde(rename = "$schema", default, skip_serializing)]
    pub schema: Option<String>,
    pub format_version: u32,
    pub buildings: Vec<BuildingDef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitDef {
    pub id: String,
    pub name: String,
    /// An image of the title's assets/ folder.
    #[serde(default)]
    pub icon: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub building: String,
    pub cost: Amounts,
    pub train_seconds: i64,
    pub housing: i64,
    #[serde(default)]
    pub requires: Option<String>,
    #[serde(default)]
    pub attack: i64,
    #[serde(default = "one_i64")]
    pub hitpoints: i64,
    /// Named numbers for clients that the engine carries without reading them.
    #[serde(default)]
    pub stats: Amounts,
    /// Stats that grow with a research level.
    #[serde(default)]
    pub stats_by: Option<StatsBy>,
}

/// Stats by the level of a research: `levels[i]` applies from level i+1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsBy {
    pub research: String,
    pub levels: Vec<Amounts>,
}

fn one_i64() -> i64 {
    1
}

/// `units.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitsFile {
    #[serde(rename = "$schema", default, skip_serializing)]
    pub schema: Option<String>,
    pub format_version: u32,
    pub units: Vec<UnitDef>,
}

/// Lasting effects research grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResearchEffectKind {
    ProductionPercent,
    StoragePercent,
    BuildTimePercent,
    TrainTimePercent,
    UnitAttackPercent,
    UnitHitpointsPercent,
}

impl ResearchEffectKind {
    /// The kind of id `target` must name, if any.
    pub fn target_kind(self) -> Option<citadel_dsl::IdKind> {
        use citadel_dsl::IdKind;
        match self {
            Self::ProductionPercent | Self::StoragePercent => Some(IdKind::Resource),
            Self::UnitAttackPercent | Self::UnitHitpointsPercent => Some(IdKind::Unit),
            Self::BuildTimePercent | Self::TrainTimePercent => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResearchEffect {
    pub kind: ResearchEffectKind,
    #[serde(default)]
    pub target: Option<String>,
    pub value: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResearchLevel {
    pub cost: Amounts,
    pub research_seconds: i64,
    #[serde(default)]
    pub requires: Option<String>,
    #[serde(default)]
    pub effects: Vec<ResearchEffect>,
    /// Whether, and at what price, this level's research can be sped up.
    #[serde(default)]
    pub speed_up: SpeedUpRule,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResearchDef {
    pub id: String,
    pub name: String,
    /// An image of the title's assets/ folder.
    #[serde(default)]
    pub icon: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub building: String,
    pub levels: Vec<ResearchLevel>,
}

/// `research.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResearchFile {
    #[serde(rename = "$schema", default, skip_serializing)]
    pub schema: Option<String>,
    pub format_version: u32,
    pub research: Vec<ResearchDef>,
}

/// What a quest reward, a store offer or an item use gives.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    #[serde(default)]
    pub resources: Amounts,
    #[serde(default)]
    pub items: Amounts,
    #[serde(default)]
    pub units: Amounts,
    #[serde(default)]
    pub xp: i64,
    /// Loot tables rolled after the fixed grants.
    #[serde(default)]
    pub loot: Vec<String>,
    /// Timed modifiers granted.
    #[serde(default)]
    pub modifiers: Vec<String>,
}

/// What granting a timed modifier again while it is active does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stacking {
    /// Its time starts over.
    #[default]
    Refresh,
    /// Its duration is added to the time left.
    Extend,
    /// One more stack, up to `max_stacks`; its time starts over.
    Stack,
    /// Nothing.
    Keep,
}

/// One timed modifier of `modifiers.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModifierDef {
    pub id: String,
    pub name: String,
    /// An image of the title's assets/ folder.
    #[serde(default)]
    pub icon: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub duration_seconds: i64,
    #[serde(default)]
    pub stacking: Stacking,
    #[serde(default = "one")]
    pub max_stacks: u32,
    /// Per stack.
    pub effects: Vec<ResearchEffect>,
}

/// One job of `jobs.json`: a timed piece of work a building runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobDef {
    pub id: String,
    pub name: String,
    /// An image of the title's assets/ folder.
    #[serde(default)]
    pub icon: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub building: String,
    pub seconds: i64,
    #[serde(default)]
    pub requires: Option<String>,
    #[serde(default)]
    pub inputs: JobInputs,
    pub outputs: Grants,
    #[serde(default)]
    pub speed_up: SpeedUpRule,
}

/// What starting a job takes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobInputs {
    #[serde(default)]
    pub resources: Amounts,
    #[serde(default)]
    pub items: Amounts,
    /// Sent away with the job and back when it ends.
    #[serde(default)]
    pub units: Amounts,
}

/// `jobs.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsFile {
    #[serde(rename = "$schema", default, skip_serializing)]
    pub schema: Option<String>,
    pub format_version: u32,
    pub jobs: Vec<JobDef>,
}

/// `title.json` `daily`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DailyDef {
    /// Day 1 first.
    pub rewards: Vec<Grants>,
    #[serde(default)]
    pub after_last: AfterLast,
}

/// What a streak longer than the daily rewards list gives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterLast {
    #[default]
    RepeatLast,
    Restart,
}

/// One achievement of `achievements.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AchievementDef {
    pub id: String,
    pub name: String,
    /// An image of the title's assets/ folder.
    #[serde(default)]
    pub icon: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub counter: String,
    pub tiers: Vec<Tier>,
}

/// One tier of an achievement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub at: i64,
    pub rewards: Grants,
}

/// `achievements.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AchievementsFile {
    #[serde(rename = "$schema", default, skip_serializing)]
    pub schema: Option<String>,
    pub format_version: u32,
    pub achievements: Vec<AchievementDef>,
}

/// `modifiers.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModifiersFile {
    #[serde(rename = "$schema", default, skip_serializing)]
    pub schema: Option<String>,
    pub format_version: u32,
    pub modifiers: Vec<ModifierDef>,
}

/// One loot table of `loot.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LootTableDef {
    pub id: String,
    pub name: String,
    /// An image of the title's assets/ folder.
    #[serde(default)]
    pub icon: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default = "one")]
    pub rolls: u32,
    pub entries: Vec<LootEntry>,
}

/// One possible outcome of a roll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LootEntry {
    pub weight: u32,
    pub grants: Grants,
}

/// `loot.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LootFile {
    #[serde(rename = "$schema", default, skip_serializing)]
    pub schema: Option<String>,
    pub format_version: u32,
    pub loot: Vec<LootTableDef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemDef {
    pub id: String,
    pub name: String,
    /// An image of the title's assets/ folder.
    #[serde(default)]
    pub icon: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default, rename = "use")]
    pub use_grants: Option<Grants>,
    #[serde(default)]
    pub hook: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub start: String,
    pub end: String,
}

impl Window {
    /// `[start, end)` in epoch milliseconds, if both are real dates.
    pub fn epoch_ms(&self) -> Option<(i64, i64)> {
        Some((crate::time::parse_utc(&self.start)?, crate::time::parse_utc(&self.end)?))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferDef {
    pub id: String,
    pub name: String,
    /// An image of the title's assets/ folder.
    #[serde(default)]
    pub icon: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub price: Amounts,
    pub grants: Grants,
    #[serde(default)]
    pub limit: Option<u32>,
    #[serde(default)]
    pub window: Option<Window>,
    #[serde(default)]
    pub requires: Option<String>,
}

/// Something sold for real money through a payment platform: the gateway
/// grants it once per payment (docs/gateway.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductDef {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub icon: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub grants: ProductGrants,
}

/// What one purchase of a product grants: resources (not capped by
/// storage: paid for in full) and items.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductGrants {
    #[serde(default)]
    pub resources: Amounts,
    #[serde(default)]
    pub items: Amounts,
}

/// `store.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    #[serde(rename = "$schema", default, skip_serializing)]
    pub schema: Option<String>,
    pub format_version: u32,
    #[serde(default)]
    pub items: Vec<ItemDef>,
    #[serde(default)]
    pub offers: Vec<OfferDef>,
    #[serde(default)]
    pub products: Vec<ProductDef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuestDef {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub requires: Option<String>,
    pub goal: String,
    pub rewards: Grants,
}

/// `quests.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuestsFile {
    #[serde(rename = "$schema", default, skip_serializing)]
    pub schema: Option<String>,
    pub format_version: u32,
    pub quests: Vec<QuestDef>,
}
