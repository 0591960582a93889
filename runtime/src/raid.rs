//! PvP raids as pure functions. The server locks an offline defender,
//! sends the attacker a snapshot of the base with its [`lootable`] amounts,
//! and later applies the submitted result to both players: [`attack`] to
//! the attacker (checked against the title's rules, all or nothing) and
//! [`defend`] to the defender (total: it cannot fail). Both are idempotent
//! per raid id, so a result delivered twice, or replayed from a journal,
//! is applied once.

use serde::{Deserialize, Serialize};

use crate::format::{Amounts, RaidsDef};
use crate::rules::{self, err, ActionError, ErrorCode, Event, Rng};
use crate::state::{BattleLogEntry, PlayerState, BATTLE_LOG_MAX};
use crate::title::Title;

/// The name under which `world.raids.check` is bound among the hooks.
pub const CHECK_HOOK: &str = "raid_check";

/// What the attacker's client reports at the end of a battle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaidResult {
    /// Whether the attacker won.
    pub victory: bool,
    /// Share of the defender's base destroyed, 0 to 100.
    pub destruction_percent: u32,
    /// Resources taken from the defender.
    #[serde(default)]
    pub loot: Amounts,
    /// Units the attacker sent into battle (they do not come back).
    #[serde(default)]
    pub units_used: Amounts,
    /// How long the battle lasted.
    pub seconds: i64,
    /// Units the attacker sent, when the server decided the battle
    /// (`resolve`): `units_used` are those of them lost.
    #[serde(default, skip_serializing_if = "Amounts::is_empty")]
    pub units_sent: Amounts,
    /// The battle as it went, for the client to play back (what the
    /// title's `resolve` script wrote), at most [`BATTLE_LOG_ENTRIES_MAX`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<serde_json::Value>,
}

/// The name under which `world.raids.resolve` is bound among the hooks.
pub const RESOLVE_HOOK: &str = "raid_resolve";

/// Entries of a battle log: enough to play a battle back blow by blow,
/// few enough for one answer and one raid record.
pub const BATTLE_LOG_ENTRIES_MAX: usize = 200;

/// Bytes of a battle log as JSON, for the same reasons.
pub const BATTLE_LOG_BYTES_MAX: usize = 16 * 1024;

/// A raid's result with what the server fixed at its start: everything
/// needed to apply it to either player, again, identically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    pub raid: String,
    pub attacker: String,
    pub defender: String,
    /// The defender's player level at the start.
    pub defender_level: i64,
    /// The most of each resource the attacker may take, as at the start.
    pub lootable: Amounts,
    pub result: RaidResult,
}

fn rules_of(title: &Title) -> Result<&RaidsDef, ActionError> {
    match &title.manifest.world.raids {
        Some(r) => Ok(r),
        None => err(ErrorCode::NotAvailable, format!("title `{}` has no raids", title.id())),
    }
}

/// Whether raids are on in this title.
pub fn enabled(title: &Title) -> bool {
    title.manifest.world.raids.is_some()
}

/// The most of each resource an attacker may take from `defender` now: the
/// title's formulas, clamped to what the defender holds. A formula that
/// fails counts as 0 (the defender keeps everything).
pub fn lootable(title: &Title, defender: &PlayerState, now_ms: i64) -> Amounts {
    let ctx = crate::view::ctx(title, defender, now_ms, 0);
    title
        .raid_lootable
        .iter()
        .map(|(r, formula)| {
            let held = defender.resources.get(r).copied().unwrap_or(0).max(0);
            let n = title.sandbox.eval_int(formula, &ctx).unwrap_or(0);
            (r.clone(), n.clamp(0, held))
        })
        .collect()
}

/// Why a defender cannot be raided now, if so: the end of their shield.
pub fn shielded_until(defender: &PlayerState, now_ms: i64) -> Option<i64> {
    (defender.shield_until_ms > now_ms).then_some(defender.shield_until_ms)
}

/// How long the defender stays locked for one raid: the longest battle and
/// a grace for the result to travel.
pub fn lock_ms(title: &Title) -> Option<i64> {
    title.manifest.world.raids.as_ref().map(|r| (r.duration_seconds + grace_seconds(r.duration_seconds)) * 1000)
}

/// Seconds after the longest battle within which its result is still
/// taken (a slow network, a client that resends once): a sixth of the
/// battle, from 1 to [`RESULT_GRACE_SECONDS_MAX`].
pub fn grace_seconds(duration_seconds: i64) -> i64 {
    (duration_seconds / 6).clamp(1, RESULT_GRACE_SECONDS_MAX)
}

/// The longest grace: past half a minute the attacker has gone.
pub const RESULT_GRACE_SECONDS_MAX: i64 = 30;

/// Checks a submitted result against the title's rules and the attacker's
/// state, without the title's check hook.
fn check(title: &Title, raids: &RaidsDef, s: &PlayerState, o: &Outcome) -> Result<(), ActionError> {
    let r = &o.result;
    let implausible = |m: String| err(ErrorCode::ImplausibleResult, m);
    if r.destruction_percent > 100 {
        return implausible(format!("destruction_percent {} is over 100", r.destruction_percent));
    }
    if r.seconds < 0 || r.seconds > raids.duration_seconds {
        return implausible(format!("a battle lasts 0 to {} seconds, not {}", raids.duration_seconds, r.seconds));
    }
    if !r.victory && r.loot.values().any(|&n| n > 0) {
        return implausible("a lost battle takes no loot".into());
    }
    for (res, &n) in &r.loot {
        let most = o.lootable.get(res).copied().unwrap_or(0);
        if n < 0 || n > most {
            return implausible(format!("loot of {n} {res}; the defender's lootable amount is {most}"));
        }
    }
    if r.log.len() > BATTLE_LOG_ENTRIES_MAX {
        return implausible(format!("a battle log of {} entries; at most {BATTLE_LOG_ENTRIES_MAX}", r.log.len()));
    }
    let log_bytes = serde_json::to_string(&r.log).map_or(usize::MAX, |t| t.len());
    if log_bytes > BATTLE_LOG_BYTES_MAX {
        return implausible(format!("a battle log of {log_bytes} bytes; at most {BATTLE_LOG_BYTES_MAX}"));
    }
    let army = if r.units_sent.is_empty() { &r.units_used } else { &r.units_sent };
    if army.values().all(|&n| n <= 0) {
        return implausible("a raid uses at least one unit".into());
    }
    for (unit, &n) in &r.units_sent {
        if title.unit(unit).is_none() {
            return implausible(format!("unknown unit `{unit}`"));
        }
        let owned = s.units.get(unit).copied().unwrap_or(0);
        if n < 0 || n > owned {
            return implausible(format!("{n} {unit} sent; the attacker owns {owned}"));
        }
    }
    if !r.units_sent.is_empty() {
        for (unit, &n) in &r.units_used {
            let sent = r.units_sent.get(unit).copied().unwrap_or(0);
            if n > sent {
                return implausible(format!("{n} {unit} lost; {sent} were sent"));
            }
        }
    }
    for (unit, &n) in &r.units_used {
        if title.unit(unit).is_none() {
            return implausible(format!("unknown unit `{unit}`"));
        }
        let owned = s.units.get(unit).copied().unwrap_or(0);
        if n < 0 || n > owned {
            return implausible(format!("{n} {unit} used; the attacker owns {owned}"));
        }
    }
    Ok(())
}

fn amounts_map(a: &Amounts) -> citadel_dsl::Dynamic {
    let mut m = citadel_dsl::Map::new();
    for (k, v) in a {
        m.insert(k.as_str().into(), (*v).into());
    }
    citadel_dsl::Dynamic::from_map(m)
}

/// Whether the title decides raids on the server (`world.raids.resolve`).
pub fn resolves(title: &Title) -> bool {
    title.hooks.contains_key(RESOLVE_HOOK)
}

/// A seed for a raid's battle from its id: the same raid always plays out
/// the same way (FNV-1a).
pub fn seed_of(raid: &str) -> u64 {
    raid.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn stats_map(title: &Title, s: &PlayerState, units: &Amounts) -> citadel_dsl::Dynamic {
    let mut m = citadel_dsl::Map::new();
    for unit in units.keys() {
        let mut stats = rules::unit_stats(title, s, unit);
        if let Some(u) = title.unit(unit) {
            stats.entry("attack".into()).or_insert(u.def.attack);
            stats.entry("hitpoints".into()).or_insert(u.def.hitpoints);
        }
        m.insert(unit.as_str().into(), amounts_map(&stats));
    }
    citadel_dsl::Dynamic::from_map(m)
}

/// Decides a raid on the server: the title's `resolve` script, called on
/// the attacker's state with both sides (the units `sent` and the
/// defender's base as it stands), seeded by the raid id so that the same
/// raid always ends the same way. Its answer becomes the raid's result,
/// which [`attack`] then checks like any other (units owned, loot within
/// `lootable`); a script that fails or answers nonsense is `script_error`.
pub fn resolve(
    title: &Title,
    attacker: &PlayerState,
    defender: &PlayerState,
    raid: &str,
    lootable: &Amounts,
    sent: &Amounts,
    now_ms: i64,
) -> Result<RaidResult, ActionError> {
    let raids = rules_of(title)?;
    let Some(hook) = title.hooks.get(RESOLVE_HOOK) else {
        return err(ErrorCode::NotAvailable, "this title's raids are not decided by the server".to_string());
    };
    let Some(script) = title.script_fn(hook) else {
        return err(ErrorCode::ScriptError, format!("no script `{}`", hook.module));
    };
    // The army first: only units the attacker has may go.
    if sent.values().all(|&n| n <= 0) {
        return err(ErrorCode::ImplausibleResult, "a raid sends at least one unit".to_string());
    }
    for (unit, &n) in sent {
        let owned = attacker.units.get(unit).copied().unwrap_or(0);
        if title.unit(unit).is_none() || n < 0 || n > owned {
            return err(ErrorCode::ImplausibleResult, format!("{n} {unit} sent; the attacker owns {owned}"));
        }
    }
    let buildings: citadel_dsl::Array = defender
        .buildings
        .iter()
        .filter(|b| b.level > 0)
        .map(|b| {
            let level = title.building(&b.building).and_then(|d| d.def.levels.get(b.level as usize - 1));
            let mut m = citadel_dsl::Map::new();
            m.insert("building".into(), b.building.as_str().into());
            m.insert("level".into(), i64::from(b.level).into());
            m.insert("hitpoints".into(), level.map_or(0, |l| l.hitpoints).into());
            m.insert("stats".into(), level.map_or_else(|| amounts_map(&Amounts::new()), |l| amounts_map(&l.stats)));
            citadel_dsl::Dynamic::from_map(m)
        })
        .collect();
    let side = |pairs: Vec<(&str, citadel_dsl::Dynamic)>| {
        let mut m = citadel_dsl::Map::new();
        for (k, v) in pairs {
            m.insert(k.into(), v);
        }
        citadel_dsl::Dynamic::from_map(m)
    };
    let arg = side(vec![
        ("raid", raid.to_string().into()),
        ("seconds_max", raids.duration_seconds.into()),
        ("lootable", amounts_map(lootable)),
        (
            "attacker",
            side(vec![
                ("units", amounts_map(sent)),
                ("stats", stats_map(title, attacker, sent)),
                ("level", title.player_level(attacker.xp).into()),
            ]),
        ),
        (
            "defender",
            side(vec![
                ("level", title.player_level(defender.xp).into()),
                ("units", amounts_map(&defender.units)),
                ("stats", stats_map(title, defender, &defender.units)),
                ("buildings", buildings.into()),
            ]),
        ),
    ]);
    let mut state = attacker.clone();
    let value = crate::timing::script(
        || hook.to_string(),
        || {
            crate::view::with_ctx(title, &mut state, now_ms, seed_of(raid), |ctx| {
                title.sandbox.call_value(script, &hook.function, arg, ctx)
            })
        },
    )
    .map_err(|e| ActionError { code: ErrorCode::ScriptError, message: format!("{hook}: {}", e.with_position()) })?;
    let bad = |m: String| ActionError { code: ErrorCode::ScriptError, message: format!("{hook} answered {m}") };
    let amounts = |key: &str| -> Result<Amounts, ActionError> {
        match value.get(key) {
            None | Some(serde_json::Value::Null) => Ok(Amounts::new()),
            Some(v) => {
                serde_json::from_value(v.clone()).map_err(|e| bad(format!("a `{key}` that is no map of amounts: {e}")))
            }
        }
    };
    let int = |key: &str| value.get(key).and_then(serde_json::Value::as_i64);
    let result = RaidResult {
        victory: value
            .get("victory")
            .and_then(serde_json::Value::as_bool)
            .ok_or_else(|| bad("no `victory` (true or false)".into()))?,
        destruction_percent: int("destruction_percent")
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| bad("no `destruction_percent` (0 to 100)".into()))?,
        loot: amounts("loot")?,
        units_used: amounts("units_lost")?,
        seconds: int("seconds").ok_or_else(|| bad("no `seconds`".into()))?,
        units_sent: sent.clone(),
        log: match value.get("log") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(a)) => a.clone(),
            Some(_) => return Err(bad("a `log` that is no array".into())),
        },
    };
    // The script's result is held to the same rules as a client's.
    check(
        title,
        raids,
        attacker,
        &Outcome {
            raid: raid.to_string(),
            attacker: String::new(),
            defender: String::new(),
            defender_level: 0,
            lootable: lootable.clone(),
            result: result.clone(),
        },
    )
    .map_err(|e| bad(format!("an impossible result: {}", e.message)))?;
    Ok(result)
}

/// Applies a raid's result to the attacker: advance to `now_ms`, check the
/// result (units owned, loot within the lootable amounts, the title's check
/// hook), then take away the units used, credit the loot (storage caps
/// apply), move the raid score and apply the hook's effects, all or none.
/// A raid already applied (`last_raid`) changes nothing.
pub fn attack(
    title: &Title,
    s: &mut PlayerState,
    o: &Outcome,
    now_ms: i64,
    rng: &mut Rng,
) -> Result<Vec<Event>, ActionError> {
    let mut events = rules::advance(title, s, now_ms, rng);
    if s.last_raid.as_deref() == Some(o.raid.as_str()) {
        return Ok(events);
    }
    let raids = rules_of(title)?;
    check(title, raids, s, o)?;
    let now = s.clock_ms;
    let mut next = s.clone();
    if let Some(hook) = title.hooks.get(CHECK_HOOK) {
        let r = &o.result;
        let arg = rules::event_map(&[
            ("victory", r.victory.into()),
            ("destruction_percent", i64::from(r.destruction_percent).into()),
            ("loot", amounts_map(&r.loot)),
            ("units_used", amounts_map(&r.units_used)),
            ("seconds", r.seconds.into()),
            ("defender", o.defender.clone().into()),
            ("defender_level", o.defender_level.into()),
        ]);
        let effects = rules::call_fn(title, &mut next, hook, arg, now, rng).map_err(|m| ActionError {
            code: ErrorCode::ImplausibleResult,
            message: format!("the raid check refused: {m}"),
        })?;
        rules::apply_effects(title, &mut next, &effects, now, &mut events)
            .map_err(|m| ActionError { code: ErrorCode::ScriptError, message: format!("raid check effects: {m}") })?;
    }
    for (unit, n) in &o.result.units_used {
        if let Some(v) = next.units.get_mut(unit) {
            *v -= n;
        }
    }
    next.units.retain(|_, n| *n > 0);
    for (res, &n) in &o.result.loot {
        rules::credit(title, &mut next, res, n);
    }
    if let Some(stat) = &raids.score {
        let delta = if o.result.victory { raids.win_score } else { -raids.loss_score };
        let v = next.scores.entry(stat.clone()).or_default();
        *v = (*v + delta).max(0);
    }
    next.last_raid = Some(o.raid.clone());
    *s = next;
    Ok(events)
}

/// Applies a raid's result to the defender: advance to `now_ms`, lose the
/// loot (never more than held), move the raid score, a shield after a
/// defeat, and an entry in the battle log. Total; a raid already in the
/// battle log changes nothing, so a defender never loses twice for one raid.
pub fn defend(title: &Title, s: &mut PlayerState, o: &Outcome, now_ms: i64, rng: &mut Rng) -> Vec<Event> {
    let events = rules::advance(title, s, now_ms, rng);
    if s.battle_log.iter().any(|b| b.raid == o.raid) {
        return events;
    }
    let now = s.clock_ms;
    let mut lost = Amounts::new();
    for (res, &n) in &o.result.loot {
        if let Some(v) = s.resources.get_mut(res) {
            let take = n.clamp(0, (*v).max(0));
            *v -= take;
            lost.insert(res.clone(), take);
        }
    }
    let mut score = 0;
    if let Some(raids) = &title.manifest.world.raids {
        if let Some(stat) = &raids.score {
            let v = s.scores.entry(stat.clone()).or_default();
            let before = *v;
            *v = if o.result.victory { (*v - raids.win_score).max(0) } else { *v + raids.loss_score };
            score = *v - before;
        }
        if o.result.victory {
            s.shield_until_ms = s.shield_until_ms.max(now + raids.shield_seconds * 1000);
        }
    }
    s.battle_log.push(BattleLogEntry {
        raid: o.raid.clone(),
        attacker: o.attacker.clone(),
        at_ms: now,
        victory: o.result.victory,
        destruction_percent: o.result.destruction_percent.min(100),
        loot: lost,
        score,
    });
    if s.battle_log.len() > BATTLE_LOG_MAX {
        let extra = s.battle_log.len() - BATTLE_LOG_MAX;
        s.battle_log.drain(..extra);
    }
    events
}

/// Pays for moving the base on the world map: advance, the cooldown since
/// the last move, the title's `relocate_cost`. The server moves the base in
/// the world store only if this succeeds.
pub fn relocate(title: &Title, s: &mut PlayerState, now_ms: i64, rng: &mut Rng) -> Result<Vec<Event>, ActionError> {
    let events = rules::advance(title, s, now_ms, rng);
    let Some(map) = &title.manifest.world.map else {
        return err(ErrorCode::NotAvailable, format!("title `{}` has no world map", title.id()));
    };
    let now = s.clock_ms;
    let ready = s.relocated_ms + map.relocate_cooldown_seconds * 1000;
    if s.relocated_ms > 0 && now < ready {
        return err(
            ErrorCode::NotAvailable,
            format!("the base moved recently; it can move again in {} s", (ready - now + 999) / 1000),
        );
    }
    rules::check_cost(title, s, &map.relocate_cost, 1)?;
    rules::pay(s, &map.relocate_cost, 1);
    s.relocated_ms = now;
    Ok(events)
}

/// The top score windows a score change at `now_ms` counts in: `all`, the
/// week (`week-YYYY-MM-DD`, weeks starting Monday 00:00 UTC) and, if the
/// title has seasons, `season-N` (from 1; none before the first starts).
pub fn score_windows(title: &Title, now_ms: i64) -> Vec<String> {
    let mut out = vec!["all".to_string(), week_of(now_ms)];
    if let Some(season) = &title.manifest.world.season {
        if let Some(start) = crate::time::parse_utc(&season.start) {
            let len = season.days.max(1) * 86_400_000;
            if now_ms >= start {
                out.push(format!("season-{}", (now_ms - start) / len + 1));
            }
        }
    }
    out
}

/// The week window holding `now_ms`: `week-` and the date of its Monday.
pub fn week_of(now_ms: i64) -> String {
    let day = now_ms.div_euclid(86_400_000);
    // 1970-01-01 was a Thursday: Monday is 3 days before it.
    let monday = day - (day + 3).rem_euclid(7);
    format!("week-{}", crate::time::format_date(monday))
}
