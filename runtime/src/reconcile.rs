//! Bringing a player saved under one version of a title to another.
//!
//! Title data changes while players are away (and while they play: hot
//! reload). The next time the rules run on a player whose `content_version`
//! is not the title's, [`reconcile`] makes the state valid for the new data,
//! by a fixed policy, then calls the title's optional `on_migrate` hook:
//!
//! 1. **Renames** declared in `title.json` `renamed` move everything held
//!    under an old id to its new id (amounts are added; levels keep the
//!    higher).
//! 2. **Removed ids** are dropped: resources, units, items, buildings (with
//!    any upgrade running on them), research levels, training orders for a
//!    removed unit or building type, running research whose type is
//!    gone, timed modifiers no longer defined, jobs whose definition or
//!    building is gone (their units come home), purchase counts of removed
//!    offers, claimed removed quests, and
//!    scores no longer listed.
//! 3. **Fewer levels**: a building or research above the new highest level
//!    comes down to it; an upgrade or research towards a level that no
//!    longer exists is cancelled (the new data no longer says what it cost,
//!    so nothing is refunded by the engine: the hook sees every
//!    cancellation and may compensate).
//! 4. **New resources** start at 0.
//! 5. The `on_migrate` hook runs with `#{from, to, changes}`, where
//!    `changes` lists what the policy did (each a map with `kind` and the
//!    ids involved). Its effects apply all together or not at all; a
//!    failing hook is reported as `hook_failed` and the policy's result
//!    stands.
//!
//! Reconciliation is a total function: it never fails, so a login never
//! fails because data changed. It is deterministic (same title, state, time
//! and random state give the same result), so journal replay repeats it
//! exactly.

use std::collections::BTreeMap;

use citadel_dsl::Dynamic;

use crate::rules::{event_map as change, run_hook, Event, Rng};
use crate::state::PlayerState;
use crate::title::Title;

fn text(s: &str) -> Dynamic {
    Dynamic::from(s.to_string())
}

/// Moves every key of `map` that `renamed` names to its new id, merging.
fn rename_keys<V: Copy>(
    map: &mut BTreeMap<String, V>,
    renamed: &BTreeMap<String, String>,
    merge: impl Fn(V, V) -> V,
    kind: &str,
    changes: &mut Vec<Dynamic>,
) {
    for (old, new) in renamed {
        if let Some(v) = map.remove(old) {
            let merged = match map.get(new) {
                Some(&have) => merge(have, v),
                None => v,
            };
            map.insert(new.clone(), merged);
            changes.push(change(&[
                ("kind", text("renamed")),
                ("of", text(kind)),
                ("from", text(old)),
                ("to", text(new)),
            ]));
        }
    }
}

/// Drops every key of `map` for which `known` is false.
fn drop_unknown<V>(
    map: &mut BTreeMap<String, V>,
    known: impl Fn(&str) -> bool,
    kind: &str,
    changes: &mut Vec<Dynamic>,
) {
    let gone: Vec<String> = map.keys().filter(|k| !known(k)).cloned().collect();
    for k in gone {
        map.remove(&k);
        changes.push(change(&[("kind", text("removed")), ("of", text(kind)), ("id", text(&k))]));
    }
}

/// Brings `s` to `title`'s content version; see the module docs. Does
/// nothing when the state is already on it.
pub fn reconcile(title: &Title, s: &mut PlayerState, now: i64, rng: &mut Rng) -> Vec<Event> {
    if s.content_version == title.content_version {
        return Vec::new();
    }
    let from = std::mem::replace(&mut s.content_version, title.content_version.clone());
    let to = title.content_version.clone();
    let renamed = &title.manifest.renamed;
    let mut changes = Vec::new();

    // 1. Renames.
    let add = |a: i64, b: i64| a.saturating_add(b);
    rename_keys(&mut s.resources, &renamed.resources, add, "resource", &mut changes);
    rename_keys(&mut s.units, &renamed.units, add, "unit", &mut changes);
    rename_keys(&mut s.items, &renamed.items, add, "item", &mut changes);
    rename_keys(&mut s.research, &renamed.research, u32::max, "research", &mut changes);
    rename_keys(&mut s.purchases, &renamed.offers, |a: u32, b| a.saturating_add(b), "offer", &mut changes);
    for b in &mut s.buildings {
        if let Some(new) = renamed.buildings.get(b.building.as_str()) {
            changes.push(change(&[
                ("kind", text("renamed")),
                ("of", text("building")),
                ("from", text(&b.building)),
                ("to", text(new)),
                ("id", Dynamic::from(i64::from(b.id))),
            ]));
            b.building = new.into();
        }
    }
    for o in &mut s.training {
        if let Some(new) = renamed.units.get(&o.unit) {
            o.unit.clone_from(new);
        }
        if let Some(new) = renamed.buildings.get(&o.building) {
            o.building.clone_from(new);
        }
    }
    for r in &mut s.research_running {
        if let Some(new) = renamed.research.get(&r.research) {
            r.research.clone_from(new);
        }
    }
    let quests: Vec<String> = s.quests_claimed.iter().filter(|q| renamed.quests.contains_key(*q)).cloned().collect();
    for q in quests {
        s.quests_claimed.remove(&q);
        s.quests_claimed.insert(renamed.quests[&q].clone());
    }

    // 2. Removed ids.
    drop_unknown(&mut s.resources, |r| title.resource(r).is_some(), "resource", &mut changes);
    drop_unknown(&mut s.units, |u| title.unit(u).is_some(), "unit", &mut changes);
    drop_unknown(&mut s.items, |i| title.item(i).is_some(), "item", &mut changes);
    drop_unknown(&mut s.research, |r| title.research_type(r).is_some(), "research", &mut changes);
    drop_unknown(&mut s.purchases, |o| title.offer(o).is_some(), "offer", &mut changes);
    drop_unknown(&mut s.modifiers, |m| title.modifier(m).is_some(), "modifier", &mut changes);
    drop_unknown(&mut s.achievements, |a| title.achievement(a).is_some(), "achievement", &mut changes);
    let scores = &title.manifest.scores;
    drop_unknown(&mut s.scores, |k| scores.iter().any(|x| x == k), "score", &mut changes);
    let gone: Vec<String> = s.quests_claimed.iter().filter(|q| title.quest(q).is_none()).cloned().collect();
    for q in gone {
        s.quests_claimed.remove(&q);
        changes.push(change(&[("kind", text("removed")), ("of", text("quest")), ("id", text(&q))]));
    }
    s.buildings.retain(|b| {
        let keep = title.building(&b.building).is_some();
        if !keep {
            changes.push(change(&[
                ("kind", text("removed")),
                ("of", text("building")),
                ("id", Dynamic::from(i64::from(b.id))),
                ("building", text(&b.building)),
                ("level", Dynamic::from(i64::from(b.level))),
            ]));
        }
        keep
    });
    s.training.retain(|o| {
        let keep = title.unit(&o.unit).is_some() && title.building(&o.building).is_some();
        if !keep {
            changes.push(change(&[
                ("kind", text("training_cancelled")),
                ("unit", text(&o.unit)),
                ("building", text(&o.building)),
            ]));
        }
        keep
    });

    // A job whose definition or building is gone ends; its units come home.
    let jobs = std::mem::take(&mut s.jobs);
    for run in jobs {
        if title.job(&run.job).is_some() && s.building(run.building_id).is_some() {
            s.jobs.push(run);
            continue;
        }
        for (u, n) in &run.units {
            if title.unit(u).is_some() {
                *s.units.entry(u.clone()).or_default() += n;
            }
        }
        changes.push(change(&[
            ("kind", text("job_cancelled")),
            ("job", text(&run.job)),
            ("id", Dynamic::from(i64::from(run.building_id))),
        ]));
    }

    // 3. Fewer levels.
    for b in &mut s.buildings {
        let Some(def) = title.building(&b.building) else { continue };
        let max = def.def.levels.len() as u32;
        if b.level > max {
            changes.push(change(&[
                ("kind", text("level_lowered")),
                ("of", text("building")),
                ("id", Dynamic::from(i64::from(b.id))),
                ("building", text(&b.building)),
                ("from", Dynamic::from(i64::from(b.level))),
                ("to", Dynamic::from(i64::from(max))),
            ]));
            b.level = max;
        }
        if b.upgrade.as_ref().is_some_and(|u| u.to_level > max) {
            let u = b.upgrade.take().map_or(0, |u| u.to_level);
            b.since_ms = now;
            changes.push(change(&[
                ("kind", text("upgrade_cancelled")),
                ("id", Dynamic::from(i64::from(b.id))),
                ("building", text(&b.building)),
                ("level", Dynamic::from(i64::from(u))),
            ]));
        }
    }
    // A building whose first construction was cancelled has no level to stand at.
    s.buildings.retain(|b| b.level > 0 || b.upgrade.is_some());
    for (id, level) in &mut s.research {
        let Some(def) = title.research_type(id) else { continue };
        let max = def.def.levels.len() as u32;
        if *level > max {
            changes.push(change(&[
                ("kind", text("level_lowered")),
                ("of", text("research")),
                ("research", text(id)),
                ("from", Dynamic::from(i64::from(*level))),
                ("to", Dynamic::from(i64::from(max))),
            ]));
            *level = max;
        }
    }
    s.research_running.retain(|r| {
        let valid = title.research_type(&r.research).is_some_and(|d| r.level as usize <= d.def.levels.len());
        if !valid {
            changes.push(change(&[
                ("kind", text("research_cancelled")),
                ("research", text(&r.research)),
                ("level", Dynamic::from(i64::from(r.level))),
            ]));
        }
        valid
    });

    // 4. New resources.
    for r in &title.resources {
        s.resources.entry(r.id.clone()).or_insert(0);
    }

    let mut events = vec![Event::Migrated { from: from.clone(), to: to.clone(), changes: changes.len() as u32 }];
    // 5. The title's own reconciliation.
    let arg =
        change(&[("from", Dynamic::from(from)), ("to", Dynamic::from(to)), ("changes", Dynamic::from_array(changes))]);
    run_hook(title, s, "on_migrate", arg, now, rng, &mut events);
    events
}
