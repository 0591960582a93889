//! The builder-game API registered into the sandbox: read-only state queries
//! for expressions and scripts, and effect constructors for scripts only.

use rhai::{Engine, EvalAltResult, NativeCallContext, Position};

use crate::effect::Effect;
use crate::limits::{EFFECT_AMOUNT_MAX, TIMER_SECONDS_MAX};
use crate::view::{Ctx, StateView};

type Res<T> = Result<T, Box<EvalAltResult>>;

/// Names of the read functions whose first argument is an id, with the kind
/// of id. The title loader uses this to check literal ids in expressions.
pub const ID_FUNCTIONS: &[(&str, IdKind)] = &[
    ("level", IdKind::Building),
    ("count", IdKind::Building),
    ("count_at_least", IdKind::Building),
    ("resource", IdKind::Resource),
    ("cap", IdKind::Resource),
    ("has_research", IdKind::Research),
    ("research_level", IdKind::Research),
    ("unit_count", IdKind::Unit),
    ("item_count", IdKind::Item),
    ("quest_claimed", IdKind::Quest),
    ("event_active", IdKind::Event),
    ("modifier_stacks", IdKind::Modifier),
    ("capacity_provided", IdKind::Capacity),
    ("capacity_drawn", IdKind::Capacity),
    ("modifier_seconds_left", IdKind::Modifier),
    ("grant", IdKind::Resource),
    ("spend", IdKind::Resource),
    ("grant_item", IdKind::Item),
    ("grant_unit", IdKind::Unit),
    ("apply_modifier", IdKind::Modifier),
    ("remove_modifier", IdKind::Modifier),
];

/// The kinds of ids a title defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdKind {
    Building,
    Resource,
    Research,
    Unit,
    Item,
    Quest,
    /// A live-ops event of `title.json` `events`.
    Event,
    /// A timed modifier of `modifiers.json`.
    Modifier,
    /// A capacity of `resources.json` `capacities`.
    Capacity,
}

impl IdKind {
    /// The word designers see in messages.
    pub fn noun(self) -> &'static str {
        match self {
            IdKind::Building => "building",
            IdKind::Resource => "resource",
            IdKind::Research => "research",
            IdKind::Unit => "unit",
            IdKind::Item => "item",
            IdKind::Quest => "quest",
            IdKind::Event => "event",
            IdKind::Modifier => "modifier",
            IdKind::Capacity => "capacity",
        }
    }
}

fn runtime_err<T>(msg: String, pos: Position) -> Res<T> {
    Err(Box::new(EvalAltResult::ErrorRuntime(msg.into(), pos)))
}

/// Runs `f` on the state view carried in the evaluation's tag.
fn with_ctx<T>(nc: &NativeCallContext, f: impl FnOnce(&Ctx) -> Res<T>) -> Res<T> {
    match nc.tag().and_then(|tag| tag.read_lock::<Ctx>()) {
        Some(ctx) => f(&ctx),
        // Only reachable if a caller evaluates outside `Sandbox`, which the
        // crate does not allow; still an error, not a panic.
        None => runtime_err("no player state in this context".into(), nc.call_position()),
    }
}

fn known<T>(nc: &NativeCallContext, value: Option<T>, kind: IdKind, id: &str) -> Res<T> {
    match value {
        Some(v) => Ok(v),
        None => runtime_err(format!("unknown {} `{id}`", kind.noun()), nc.call_position()),
    }
}

macro_rules! id_query {
    ($engine:ident, $name:literal, $kind:expr, $ret:ty, |$v:ident, $id:ident| $body:expr) => {
        $engine.register_fn($name, |nc: NativeCallContext, $id: &str| -> Res<$ret> {
            with_ctx(&nc, |c| {
                let $v: &dyn StateView = &*c.view;
                known(&nc, $body, $kind, $id)
            })
        });
    };
}

/// Registers the read-only queries (used by both expressions and scripts).
pub(crate) fn register_queries(engine: &mut Engine) {
    id_query!(engine, "level", IdKind::Building, i64, |v, id| v.level(id));
    id_query!(engine, "count", IdKind::Building, i64, |v, id| v.count(id));
    id_query!(engine, "resource", IdKind::Resource, i64, |v, id| v.resource(id));
    id_query!(engine, "cap", IdKind::Resource, i64, |v, id| v.cap(id));
    id_query!(engine, "research_level", IdKind::Research, i64, |v, id| v.research_level(id));
    id_query!(engine, "unit_count", IdKind::Unit, i64, |v, id| v.unit_count(id));
    id_query!(engine, "item_count", IdKind::Item, i64, |v, id| v.item_count(id));
    id_query!(engine, "quest_claimed", IdKind::Quest, bool, |v, id| v.quest_claimed(id));
    id_query!(engine, "event_active", IdKind::Event, bool, |v, id| v.event_active(id));
    id_query!(engine, "modifier_stacks", IdKind::Modifier, i64, |v, id| v.modifier_stacks(id));
    id_query!(engine, "modifier_seconds_left", IdKind::Modifier, i64, |v, id| v.modifier_seconds_left(id));
    id_query!(engine, "capacity_provided", IdKind::Capacity, i64, |v, id| v.capacity(id).map(|c| c.0));
    id_query!(engine, "capacity_drawn", IdKind::Capacity, i64, |v, id| v.capacity(id).map(|c| c.1));
    engine.register_fn("count_at_least", |nc: NativeCallContext, id: &str, level: i64| -> Res<i64> {
        with_ctx(&nc, |c| known(&nc, c.view.count_at_least(id, level), IdKind::Building, id))
    });
    engine.register_fn("has_research", |nc: NativeCallContext, id: &str, level: i64| -> Res<bool> {
        with_ctx(&nc, |c| known(&nc, c.view.research_level(id), IdKind::Research, id).map(|l| l >= level))
    });
    engine.register_fn("player_level", |nc: NativeCallContext| -> Res<i64> {
        with_ctx(&nc, |c| Ok(c.view.player_level()))
    });
    engine.register_fn("xp", |nc: NativeCallContext| -> Res<i64> { with_ctx(&nc, |c| Ok(c.view.xp())) });
    engine.register_fn("counter", |nc: NativeCallContext, name: &str| -> Res<i64> {
        with_ctx(&nc, |c| Ok(c.view.counter(name)))
    });
    engine.register_fn("daily_streak", |nc: NativeCallContext| -> Res<i64> {
        with_ctx(&nc, |c| Ok(c.view.daily_streak()))
    });
    engine.register_fn("flag", |nc: NativeCallContext, f: &str| -> Res<bool> { with_ctx(&nc, |c| Ok(c.view.flag(f))) });
    engine
        .register_fn("score", |nc: NativeCallContext, s: &str| -> Res<i64> { with_ctx(&nc, |c| Ok(c.view.score(s))) });
    // Seconds, not milliseconds: designers write `now() - x > 3600`.
    engine.register_fn("now", |nc: NativeCallContext| -> Res<i64> {
        with_ctx(&nc, |c| Ok(c.view.now_ms().div_euclid(1000)))
    });
}

fn amount(nc: &NativeCallContext, what: &str, n: i64) -> Res<i64> {
    if n <= 0 || n > EFFECT_AMOUNT_MAX {
        return runtime_err(format!("{what} must be between 1 and {EFFECT_AMOUNT_MAX}, got {n}"), nc.call_position());
    }
    Ok(n)
}

/// Registers effect constructors and `random` (scripts only: requirements
/// must give the same answer every time they are asked).
pub(crate) fn register_effects(engine: &mut Engine) {
    engine.register_type_with_name::<Effect>("Effect");
    engine.register_fn("to_string", |e: &mut Effect| format!("{e:?}"));
    engine.register_fn("to_debug", |e: &mut Effect| format!("{e:?}"));
    engine.register_fn("grant", |nc: NativeCallContext, r: &str, n: i64| -> Res<Effect> {
        Ok(Effect::Grant { resource: r.into(), amount: amount(&nc, "grant amount", n)? })
    });
    engine.register_fn("spend", |nc: NativeCallContext, r: &str, n: i64| -> Res<Effect> {
        Ok(Effect::Spend { resource: r.into(), amount: amount(&nc, "spend amount", n)? })
    });
    engine.register_fn("grant_item", |nc: NativeCallContext, i: &str, n: i64| -> Res<Effect> {
        Ok(Effect::GrantItem { item: i.into(), count: amount(&nc, "item count", n)? })
    });
    engine.register_fn("grant_unit", |nc: NativeCallContext, u: &str, n: i64| -> Res<Effect> {
        Ok(Effect::GrantUnit { unit: u.into(), count: amount(&nc, "unit count", n)? })
    });
    engine.register_fn("set_flag", |f: &str| Effect::SetFlag { flag: f.into() });
    engine.register_fn("clear_flag", |f: &str| Effect::ClearFlag { flag: f.into() });
    engine.register_fn("start_timer", |nc: NativeCallContext, name: &str, s: i64| -> Res<Effect> {
        if !(1..=TIMER_SECONDS_MAX).contains(&s) {
            return runtime_err(
                format!("timer seconds must be between 1 and {TIMER_SECONDS_MAX}, got {s}"),
                nc.call_position(),
            );
        }
        Ok(Effect::StartTimer { name: name.into(), seconds: s })
    });
    engine.register_fn("award_score", |nc: NativeCallContext, stat: &str, n: i64| -> Res<Effect> {
        Ok(Effect::AwardScore { stat: stat.into(), amount: amount(&nc, "score amount", n)? })
    });
    engine.register_fn("grant_xp", |nc: NativeCallContext, n: i64| -> Res<Effect> {
        Ok(Effect::GrantXp { amount: amount(&nc, "xp amount", n)? })
    });
    engine.register_fn("notify", |text: &str| Effect::Notify { text: text.into() });
    engine.register_fn("apply_modifier", |m: &str| Effect::ApplyModifier { modifier: m.into() });
    engine.register_fn("remove_modifier", |m: &str| Effect::RemoveModifier { modifier: m.into() });
    engine.register_fn("count_up", |nc: NativeCallContext, name: &str, n: i64| -> Res<Effect> {
        Ok(Effect::Count { counter: name.into(), amount: amount(&nc, "count amount", n)? })
    });
    // Inclusive on both ends, like a die: random(1, 6).
    engine.register_fn("random", |nc: NativeCallContext, lo: i64, hi: i64| -> Res<i64> {
        if lo > hi {
            return runtime_err(format!("random({lo}, {hi}): low end is above high end"), nc.call_position());
        }
        with_ctx(&nc, |c| {
            let span = (hi as i128 - lo as i128 + 1) as u128;
            let mut rng = c.rng.lock().unwrap_or_else(|p| p.into_inner());
            let draw = (rng.next_u64() as u128 % span) as i128;
            Ok((lo as i128 + draw) as i64)
        })
    });
}

/// The read-only queries, as designers call them, with what they return.
/// `docs/title-format.md` is generated from this list and a test calls
/// every entry, so the docs and the engine cannot drift apart.
pub const QUERY_DOCS: &[(&str, &str)] = &[
    ("level(building)", "highest completed level of any building of that type (0 if none)"),
    ("count(building)", "number of buildings of that type, including ones under construction"),
    ("count_at_least(building, level)", "number of buildings of that type at that level or higher"),
    ("resource(resource)", "amount of a resource held"),
    ("cap(resource)", "storage cap of a resource (a huge number if uncapped)"),
    ("has_research(research, level)", "true if that research is at that level or higher"),
    ("research_level(research)", "completed level of a research (0 if never researched)"),
    ("unit_count(unit)", "trained units of that type"),
    ("item_count(item)", "items of that type in the inventory"),
    ("quest_claimed(quest)", "true if the quest's rewards were claimed"),
    ("player_level()", "the player's level, from xp and the title's xp_levels"),
    ("xp()", "the player's experience points"),
    ("flag(name)", "true if the flag is set"),
    ("score(stat)", "a score stat (0 if never awarded)"),
    ("now()", "the current time in seconds since 1970-01-01 UTC"),
    (
        "event_active(event)",
        "whether a live-ops event of title.json `events` is running now (its window holds the current time)",
    ),
    ("modifier_stacks(modifier)", "stacks of a timed modifier the player has now (0 when it is not active)"),
    ("modifier_seconds_left(modifier)", "seconds until a timed modifier ends, rounded up (0 when it is not active)"),
    ("capacity_provided(capacity)", "how much of a capacity (power, oxygen) the player's finished buildings provide"),
    ("capacity_drawn(capacity)", "how much of a capacity the player's finished buildings draw"),
    (
        "counter(name)",
        "a counter: built:<building>, trained:<unit>, collected:<resource>, jobs:<job>, researched, quests, logins, or one scripts count (0 if never counted)",
    ),
    ("daily_streak()", "days in a row the daily reward was claimed, up to today or yesterday (0 once a day is missed)"),
];

/// The effect constructors (scripts only), with what they ask for.
pub const EFFECT_DOCS: &[(&str, &str)] = &[
    ("grant(resource, amount)", "add a resource, clamped to its storage cap"),
    ("spend(resource, amount)", "remove a resource; the whole hook fails if the player has less"),
    ("grant_item(item, count)", "add items to the inventory"),
    ("grant_unit(unit, count)", "add trained units; fails if housing is short"),
    ("set_flag(name)", "set a flag (at most 256 per player, names up to 64 bytes)"),
    ("clear_flag(name)", "clear a flag"),
    (
        "start_timer(name, seconds)",
        "start or restart a named timer; the on_timer hook runs when it ends (at most 32 running)",
    ),
    ("award_score(stat, amount)", "add to a score stat listed in title.json scores"),
    ("grant_xp(amount)", "add experience points"),
    ("notify(text)", "send the player a message (up to 500 bytes)"),
    (
        "apply_modifier(modifier)",
        "start a timed modifier of modifiers.json (or add a stack, refresh or extend it, by its stacking rule)",
    ),
    ("remove_modifier(modifier)", "end a timed modifier now, every stack of it (nothing if it is not active)"),
    (
        "count_up(name, amount)",
        "add to a counter of the script's own (achievements read counters; names up to 64 bytes)",
    ),
    (
        "random(low, high)",
        "a random whole number from low to high inclusive, the same on every replay (not an effect; scripts only)",
    ),
];
