//! Effects: what hooks and custom actions return instead of writing state.
//!
//! A script builds effects with constructor functions (`grant("gold", 100)`)
//! and returns one effect, an array of them, or `()` for none. The runtime
//! checks every effect against the title and the player's state and applies
//! all of them or none.

/// One change a script asks the runtime to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Add an amount of a resource (clamped to its storage cap).
    Grant { resource: String, amount: i64 },
    /// Remove an amount of a resource; fails the hook if the player has less.
    Spend { resource: String, amount: i64 },
    /// Add items to the inventory.
    GrantItem { item: String, count: i64 },
    /// Add trained units (housing permitting).
    GrantUnit { unit: String, count: i64 },
    /// Set a named flag.
    SetFlag { flag: String },
    /// Clear a named flag.
    ClearFlag { flag: String },
    /// Start (or restart) a named timer; `on_timer` runs when it ends.
    StartTimer { name: String, seconds: i64 },
    /// Add to a score stat (top scores read these).
    AwardScore { stat: String, amount: i64 },
    /// Add experience points.
    GrantXp { amount: i64 },
    /// Send a notification to the player.
    Notify { text: String },
    /// Start a timed modifier (or stack, refresh or extend it).
    ApplyModifier { modifier: String },
    /// End a timed modifier now.
    RemoveModifier { modifier: String },
    /// Add to a named counter (achievements read counters).
    Count { counter: String, amount: i64 },
}

impl Effect {
    /// The name of the constructor that builds this effect, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Effect::Grant { .. } => "grant",
            Effect::Spend { .. } => "spend",
            Effect::GrantItem { .. } => "grant_item",
            Effect::GrantUnit { .. } => "grant_unit",
            Effect::SetFlag { .. } => "set_flag",
            Effect::ClearFlag { .. } => "clear_flag",
            Effect::StartTimer { .. } => "start_timer",
            Effect::AwardScore { .. } => "award_score",
            Effect::GrantXp { .. } => "grant_xp",
            Effect::Notify { .. } => "notify",
            Effect::ApplyModifier { .. } => "apply_modifier",
            Effect::RemoveModifier { .. } => "remove_modifier",
            Effect::Count { .. } => "count_up",
        }
    }
}
