//! The compiled, immutable [`Title`]: a title folder after it loaded and
//! validated without errors. Cheap to clone (one `Arc`); a running server
//! holds one per title version.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use citadel_dsl::{Expr, Sandbox, Script};

use crate::format::*;

/// A script function named by `module::function`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRef {
    pub module: String,
    pub function: String,
}

impl HookRef {
    pub fn parse(s: &str) -> Option<HookRef> {
        let (m, f) = s.split_once("::")?;
        Some(HookRef { module: m.to_string(), function: f.to_string() })
    }
}

impl std::fmt::Display for HookRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}::{}", self.module, self.function)
    }
}

#[derive(Debug)]
pub struct BuildingType {
    pub def: BuildingDef,
    /// Compiled `requires` of each level, parallel to `def.levels`.
    pub requires: Vec<Option<Expr>>,
}

#[derive(Debug)]
pub struct UnitType {
    pub def: UnitDef,
    pub requires: Option<Expr>,
}

#[derive(Debug)]
pub struct ResearchType {
    pub def: ResearchDef,
    pub requires: Vec<Option<Expr>>,
}

#[derive(Debug)]
pub struct Item {
    pub def: ItemDef,
    pub hook: Option<HookRef>,
}

#[derive(Debug)]
pub struct Offer {
    pub def: OfferDef,
    pub requires: Option<Expr>,
    /// The sale window in epoch milliseconds: `[start, end)`.
    pub window_ms: Option<(i64, i64)>,
}

/// A live-ops event with its window in epoch milliseconds: `[start, end)`.
#[derive(Debug)]
pub struct LiveEvent {
    pub def: EventDef,
    pub window_ms: (i64, i64),
}

impl LiveEvent {
    pub fn active(&self, now_ms: i64) -> bool {
        in_window(self.window_ms, now_ms)
    }
}

impl Offer {
    /// Whether the offer's window (if any) holds `now_ms`.
    pub fn on_sale(&self, now_ms: i64) -> bool {
        self.window_ms.is_none_or(|w| in_window(w, now_ms))
    }
}

/// Whether `[start, end)` holds `now_ms`.
fn in_window((start, end): (i64, i64), now_ms: i64) -> bool {
    start <= now_ms && now_ms < end
}

#[derive(Debug)]
pub struct Quest {
    pub def: QuestDef,
    pub requires: Option<Expr>,
    pub goal: Expr,
}

#[derive(Debug)]
pub struct Job {
    pub def: JobDef,
    pub requires: Option<Expr>,
}

#[derive(Debug)]
pub struct Action {
    pub def: CustomAction,
    pub requires: Option<Expr>,
    pub function: HookRef,
}

/// Everything a title defines, compiled and cross-checked.
#[derive(Debug)]
pub struct TitleData {
    pub manifest: TitleFile,
    /// Hash of every file of the title folder: the title's content version.
    pub content_version: String,
    pub resources: Vec<ResourceDef>,
    pub capacities: Vec<CapacityDef>,
    /// The images of `assets/` by path (`assets/buildings/farm.svg`), as bytes.
    pub assets: BTreeMap<String, Vec<u8>>,
    /// Whether any building level consumes inputs (production chains are
    /// then settled on every advance).
    pub chains: bool,
    pub buildings: Vec<BuildingType>,
    pub units: Vec<UnitType>,
    pub research: Vec<ResearchType>,
    pub items: Vec<Item>,
    pub offers: Vec<Offer>,
    /// What the title sells for real money (store.json `products`).
    pub products: Vec<crate::format::ProductDef>,
    pub quests: Vec<Quest>,
    pub loot: Vec<LootTableDef>,
    pub modifiers: Vec<ModifierDef>,
    pub jobs: Vec<Job>,
    pub achievements: Vec<AchievementDef>,
    pub events: Vec<LiveEvent>,
    /// `world.raids.lootable`, compiled: resource id and its formula.
    pub raid_lootable: Vec<(String, Expr)>,
    pub actions: BTreeMap<String, Action>,
    pub hooks: BTreeMap<String, HookRef>,
    pub scripts: BTreeMap<String, Script>,
    pub sandbox: Sandbox,
    pub(crate) index: Index,
}

/// Id -> position, for the index below. Keys are the title's own ids
/// (fixed at load; a player's input only looks them up, never adds one),
/// so a fast non-keyed hash is safe: every building of a state is looked
/// up each time its production is worked out, and SipHash was about 4% of
/// a login's CPU (docs/benchmarks.md).
pub(crate) type IdMap = HashMap<String, usize, rustc_hash::FxBuildHasher>;

/// Id -> position lookups, built once at load.
#[derive(Debug, Default)]
pub(crate) struct Index {
    pub(crate) resources: IdMap,
    pub(crate) capacities: IdMap,
    pub(crate) buildings: IdMap,
    pub(crate) units: IdMap,
    pub(crate) research: IdMap,
    pub(crate) items: IdMap,
    pub(crate) offers: IdMap,
    pub(crate) products: IdMap,
    pub(crate) quests: IdMap,
    pub(crate) loot: IdMap,
    pub(crate) modifiers: IdMap,
    pub(crate) jobs: IdMap,
    pub(crate) achievements: IdMap,
    pub(crate) events: IdMap,
}

/// A loaded title. Immutable; clone freely.
#[derive(Debug, Clone)]
pub struct Title(pub(crate) Arc<TitleData>);

impl std::ops::Deref for Title {
    type Target = TitleData;
    fn deref(&self) -> &TitleData {
        &self.0
    }
}

impl TitleData {
    pub fn id(&self) -> &str {
        &self.manifest.id
    }
    pub fn resource(&self, id: &str) -> Option<&ResourceDef> {
        self.index.resources.get(id).map(|&i| &self.resources[i])
    }
    pub fn capacity(&self, id: &str) -> Option<&CapacityDef> {
        self.index.capacities.get(id).map(|&i| &self.capacities[i])
    }
    pub fn building(&self, id: &str) -> Option<&BuildingType> {
        self.index.buildings.get(id).map(|&i| &self.buildings[i])
    }
    pub fn unit(&self, id: &str) -> Option<&UnitType> {
        self.index.units.get(id).map(|&i| &self.units[i])
    }
    pub fn research_type(&self, id: &str) -> Option<&ResearchType> {
        self.index.research.get(id).map(|&i| &self.research[i])
    }
    pub fn item(&self, id: &str) -> Option<&Item> {
        self.index.items.get(id).map(|&i| &self.items[i])
    }
    pub fn offer(&self, id: &str) -> Option<&Offer> {
        self.index.offers.get(id).map(|&i| &self.offers[i])
    }
    pub fn product(&self, id: &str) -> Option<&crate::format::ProductDef> {
        self.index.products.get(id).map(|&i| &self.products[i])
    }
    pub fn quest(&self, id: &str) -> Option<&Quest> {
        self.index.quests.get(id).map(|&i| &self.quests[i])
    }
    pub fn loot_table(&self, id: &str) -> Option<&LootTableDef> {
        self.index.loot.get(id).map(|&i| &self.loot[i])
    }
    pub fn modifier(&self, id: &str) -> Option<&ModifierDef> {
        self.index.modifiers.get(id).map(|&i| &self.modifiers[i])
    }
    pub fn achievement(&self, id: &str) -> Option<&AchievementDef> {
        self.index.achievements.get(id).map(|&i| &self.achievements[i])
    }
    pub fn job(&self, id: &str) -> Option<&Job> {
        self.index.jobs.get(id).map(|&i| &self.jobs[i])
    }
    pub fn event(&self, id: &str) -> Option<&LiveEvent> {
        self.index.events.get(id).map(|&i| &self.events[i])
    }
    /// The store discount on an offer at `now_ms`: the largest of the
    /// running events that discount it, in percent.
    pub fn discount_percent(&self, offer: &str, now_ms: i64) -> u32 {
        self.events
            .iter()
            .filter(|e| e.active(now_ms) && (e.def.offers.is_empty() || e.def.offers.iter().any(|o| o == offer)))
            .map(|e| e.def.store_discount_percent)
            .max()
            .unwrap_or(0)
    }
    pub fn headquarters(&self) -> &str {
        &self.manifest.headquarters
    }
    pub fn premium(&self) -> &str {
        &self.manifest.premium_resource
    }
    /// The script file and function a hook name is bound to.
    pub fn script_fn(&self, hook: &HookRef) -> Option<&Script> {
        self.scripts.get(&hook.module)
    }
    /// The player level for an amount of xp (1-based).
    pub fn player_level(&self, xp: i64) -> i64 {
        self.manifest.xp_levels.iter().filter(|&&t| t <= xp).count().max(1) as i64
    }
    /// Ids of every definition of one kind, for "did you mean" at run time.
    pub fn ids(&self, kind: citadel_dsl::IdKind) -> Vec<&str> {
        use citadel_dsl::IdKind as K;
        match kind {
            K::Building => self.buildings.iter().map(|b| b.def.id.as_str()).collect(),
            K::Resource => self.resources.iter().map(|r| r.id.as_str()).collect(),
            K::Research => self.research.iter().map(|r| r.def.id.as_str()).collect(),
            K::Unit => self.units.iter().map(|u| u.def.id.as_str()).collect(),
            K::Item => self.items.iter().map(|i| i.def.id.as_str()).collect(),
            K::Quest => self.quests.iter().map(|q| q.def.id.as_str()).collect(),
            K::Event => self.events.iter().map(|e| e.def.id.as_str()).collect(),
            K::Modifier => self.modifiers.iter().map(|m| m.id.as_str()).collect(),
            K::Capacity => self.capacities.iter().map(|c| c.id.as_str()).collect(),
        }
    }
}

/// The odds of one entry of a loot table, as players are shown them.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LootOdds {
    pub grants: Grants,
    pub weight: u32,
    /// The chance of this entry on one roll, in percent.
    pub percent: f64,
}

impl LootTableDef {
    /// Sum of the entries' weights (at least 1: the schema requires an
    /// entry and weights of 1 or more).
    pub fn total_weight(&self) -> u64 {
        self.entries.iter().map(|e| u64::from(e.weight)).sum::<u64>().max(1)
    }

    /// Every entry with its chance on one roll.
    pub fn odds(&self) -> Vec<LootOdds> {
        let total = self.total_weight() as f64;
        self.entries
            .iter()
            .map(|e| LootOdds {
                grants: e.grants.clone(),
                weight: e.weight,
                percent: f64::from(e.weight) * 100.0 / total,
            })
            .collect()
    }

    /// The entry a roll picks, given a uniformly random `r`: entry `i` for
    /// `r mod total` in its share of the weights.
    pub fn pick(&self, r: u64) -> &LootEntry {
        let mut left = r % self.total_weight();
        for e in &self.entries {
            if left < u64::from(e.weight) {
                return e;
            }
            left -= u64::from(e.weight);
        }
        // Unreachable: `left` is below the sum of the weights.
        &self.entries[self.entries.len() - 1]
    }
}
