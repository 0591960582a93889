//! The runtime's implementation of the DSL's [`StateView`]: what builder
//! functions like `level("barracks")` read.
//!
//! To avoid copying the player's state for every evaluation, the state is
//! moved into an `Arc` for the duration of the evaluation and moved back
//! out afterwards ([`with_ctx`]); a move is a few hundred bytes of memcpy.

use std::sync::Arc;

use citadel_dsl::{Ctx, StateView};

use crate::state::PlayerState;
use crate::title::Title;

struct View {
    title: Title,
    state: Arc<PlayerState>,
    now_ms: i64,
}

impl StateView for View {
    fn level(&self, b: &str) -> Option<i64> {
        self.title.building(b)?;
        Some(self.state.buildings.iter().filter(|x| x.building == b).map(|x| i64::from(x.level)).max().unwrap_or(0))
    }
    fn count(&self, b: &str) -> Option<i64> {
        self.title.building(b)?;
        Some(self.state.buildings.iter().filter(|x| x.building == b).count() as i64)
    }
    fn count_at_least(&self, b: &str, level: i64) -> Option<i64> {
        self.title.building(b)?;
        Some(self.state.buildings.iter().filter(|x| x.building == b && i64::from(x.level) >= level).count() as i64)
    }
    fn resource(&self, r: &str) -> Option<i64> {
        self.title.resource(r)?;
        Some(self.state.resources.get(r).copied().unwrap_or(0))
    }
    fn cap(&self, r: &str) -> Option<i64> {
        self.title.resource(r)?;
        Some(crate::rules::cap(&self.title, &self.state, r))
    }
    fn research_level(&self, r: &str) -> Option<i64> {
        self.title.research_type(r)?;
        Some(i64::from(self.state.research.get(r).copied().unwrap_or(0)))
    }
    fn unit_count(&self, u: &str) -> Option<i64> {
        self.title.unit(u)?;
        Some(self.state.units.get(u).copied().unwrap_or(0))
    }
    fn item_count(&self, i: &str) -> Option<i64> {
        self.title.item(i)?;
        Some(self.state.items.get(i).copied().unwrap_or(0))
    }
    fn quest_claimed(&self, q: &str) -> Option<bool> {
        self.title.quest(q)?;
        Some(self.state.quests_claimed.contains(q))
    }
    fn player_level(&self) -> i64 {
        self.title.player_level(self.state.xp)
    }
    fn xp(&self) -> i64 {
        self.state.xp
    }
    fn flag(&self, f: &str) -> bool {
        self.state.flags.contains(f)
    }
    fn score(&self, s: &str) -> i64 {
        self.state.scores.get(s).copied().unwrap_or(0)
    }
    fn now_ms(&self) -> i64 {
        self.now_ms
    }
    fn event_active(&self, e: &str) -> Option<bool> {
        Some(self.title.event(e)?.active(self.now_ms))
    }
    fn modifier_stacks(&self, m: &str) -> Option<i64> {
        self.title.modifier(m)?;
        Some(self.state.modifiers.get(m).map_or(0, |a| i64::from(a.stacks)))
    }
    fn modifier_seconds_left(&self, m: &str) -> Option<i64> {
        self.title.modifier(m)?;
        let left = self.state.modifiers.get(m).map_or(0, |a| (a.ends_ms - self.now_ms).max(0));
        Some((left + 999) / 1000)
    }
    fn capacity(&self, c: &str) -> Option<(i64, i64)> {
        self.title.capacity(c)?;
        Some(crate::rules::capacity(&self.title, &self.state, c))
    }
    fn counter(&self, c: &str) -> i64 {
        self.state.counters.get(c).copied().unwrap_or(0)
    }
    fn daily_streak(&self) -> i64 {
        crate::rules::daily_streak(&self.state, self.now_ms)
    }
}

/// A context over a copy of `state` (for one-off evaluations such as the
/// loader's trial run, where the state is not owned).
pub(crate) fn ctx(title: &Title, state: &PlayerState, now_ms: i64, seed: u64) -> Ctx {
    Ctx::new(Arc::new(View { title: title.clone(), state: Arc::new(state.clone()), now_ms }), seed)
}

/// Runs `f` with a context over `state` without copying it: the state is
/// moved into the view and moved back when `f` returns.
pub(crate) fn with_ctx<R>(
    title: &Title,
    state: &mut PlayerState,
    now_ms: i64,
    seed: u64,
    f: impl FnOnce(&Ctx) -> R,
) -> R {
    let shared = Arc::new(std::mem::take(state));
    let ctx = Ctx::new(Arc::new(View { title: title.clone(), state: shared.clone(), now_ms }), seed);
    let out = f(&ctx);
    drop(ctx);
    // Scripts cannot keep the context alive past the call (it lives only in
    // the evaluation's tag), so this is the last reference; the clone is a
    // fallback that keeps the state intact should that ever change.
    *state = Arc::try_unwrap(shared).unwrap_or_else(|a| (*a).clone());
    out
}
