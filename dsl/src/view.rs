//! The read-only view of one player's state that the builder API reads.
//!
//! The `dsl` crate does not know the runtime's `PlayerState`; the runtime
//! implements [`StateView`] and hands it to each evaluation inside a [`Ctx`].
//! Scripts therefore cannot write state: the only way out of a script is the
//! value it returns.

use std::sync::{Arc, Mutex};

/// What builder functions such as `level("barracks")` read.
///
/// Methods that take an id return `None` when the id is unknown to the title,
/// which the builder API turns into a script error naming the id.
pub trait StateView: Send + Sync {
    /// Highest completed level of any building of this type (0 if none).
    fn level(&self, building: &str) -> Option<i64>;
    /// Number of buildings of this type, including ones under construction.
    fn count(&self, building: &str) -> Option<i64>;
    /// Number of buildings of this type at `level` or higher.
    fn count_at_least(&self, building: &str, level: i64) -> Option<i64>;
    /// Amount of a resource held.
    fn resource(&self, resource: &str) -> Option<i64>;
    /// Storage cap of a resource (`i64::MAX` when uncapped).
    fn cap(&self, resource: &str) -> Option<i64>;
    /// Completed level of a research (0 if never researched).
    fn research_level(&self, research: &str) -> Option<i64>;
    /// Trained units of this type.
    fn unit_count(&self, unit: &str) -> Option<i64>;
    /// Items of this type in the inventory.
    fn item_count(&self, item: &str) -> Option<i64>;
    /// Whether a quest's reward has been claimed.
    fn quest_claimed(&self, quest: &str) -> Option<bool>;
    /// The player's level.
    fn player_level(&self) -> i64;
    /// The player's experience points.
    fn xp(&self) -> i64;
    /// Whether a flag is set.
    fn flag(&self, flag: &str) -> bool;
    /// A score stat (0 if never awarded).
    fn score(&self, stat: &str) -> i64;
    /// The injected clock, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
    /// Whether a live-ops event is running now.
    fn event_active(&self, event: &str) -> Option<bool>;
    /// Stacks of a timed modifier the player has now (0 when not active).
    fn modifier_stacks(&self, modifier: &str) -> Option<i64>;
    /// Seconds until a timed modifier ends, rounded up (0 when not active).
    fn modifier_seconds_left(&self, modifier: &str) -> Option<i64>;
    /// `(provided, drawn)` of a capacity over the finished buildings.
    fn capacity(&self, capacity: &str) -> Option<(i64, i64)>;
    /// A counter's value (0 if never counted).
    fn counter(&self, counter: &str) -> i64;
    /// Days in a row the daily reward was claimed, up to today or yesterday
    /// (0 once a day is missed).
    fn daily_streak(&self) -> i64;
}

/// The per-evaluation context: the state view plus a deterministic random
/// source seeded by the caller. Cloning is cheap (two `Arc`s).
#[derive(Clone)]
pub struct Ctx {
    pub(crate) view: Arc<dyn StateView>,
    pub(crate) rng: Arc<Mutex<SplitMix64>>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").finish_non_exhaustive()
    }
}

impl Ctx {
    /// A context over `view`, with `random(..)` drawing from a generator
    /// seeded with `seed` (the runtime derives it from its injected RNG).
    pub fn new(view: Arc<dyn StateView>, seed: u64) -> Self {
        Ctx { view, rng: Arc::new(Mutex::new(SplitMix64(seed))) }
    }
}

/// SplitMix64: tiny, fast, and the same sequence on every platform, which is
/// what deterministic replays need.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
